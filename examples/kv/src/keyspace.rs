//! The keyspace: Redis's five data types in containers of any size, generic over the
//! allocator they live in ([`KvAlloc`]).
//!
//! Keys map to [`Value`]s in [`STRIPES`] independent hash maps ([`Db`], with a second map
//! of expiry times), each behind its own process-shared, robust [`dsu::sync::Mutex`]; a
//! key's hash picks its stripe. The containers are `allocator-api2`'s `Vec` and `Box` and
//! `hashbrown`'s maps and sets, all with the allocator `A`, and every map hashes with
//! foldhash's fixed-seed [`FixedState`] ([`HASH_SEED`]), so a map built by one process (or
//! one version of the server) is found the same way by another.
//!
//! Lock order: one stripe at a time, except multi-key writes (MSET), which take their
//! stripes in increasing index order. Every allocation that a client's request causes is
//! fallible (`try_reserve`, `try_new_in`): an allocator at its limit makes the request fail
//! with [`Oom`], never the process.

use crate::alloc::KvAlloc;
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use foldhash::fast::FixedState;
use std::hash::BuildHasher;

/// The seed of every map's hasher. Fixed: maps are shared by processes and versions.
pub const HASH_SEED: u64 = 0x6473_755f_6b76_0001;
/// Number of stripes (independent maps, one lock each).
pub const STRIPES: usize = 64;

/// The hasher state every map stores.
pub const fn hasher() -> FixedState {
    FixedState::with_seed(HASH_SEED)
}

/// A byte string in `A` (a string value, a list element, a hash field's value).
pub type Bytes<A> = Vec<u8, A>;
/// A fixed byte string in `A` (a key, a set member, a hash field, a sorted-set member):
/// two words instead of three.
pub type Key<A> = Box<[u8], A>;
/// A hash map in `A` with the fixed hasher.
pub type Map<K, V, A> = hashbrown::HashMap<K, V, FixedState, A>;
/// A hash set in `A` with the fixed hasher.
pub type Set<T, A> = hashbrown::HashSet<T, FixedState, A>;

/// An allocation failed: the allocator is at its limit. The reply is Redis's `-OOM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oom;

impl From<allocator_api2::collections::TryReserveError> for Oom {
    fn from(_: allocator_api2::collections::TryReserveError) -> Self {
        Oom
    }
}

impl From<hashbrown::TryReserveError> for Oom {
    fn from(_: hashbrown::TryReserveError) -> Self {
        Oom
    }
}

impl From<allocator_api2::alloc::AllocError> for Oom {
    fn from(_: allocator_api2::alloc::AllocError) -> Self {
        Oom
    }
}

/// Copies `b` into a new [`Bytes`] of exactly its length.
pub fn bytes_in<A: KvAlloc>(b: &[u8]) -> Result<Bytes<A>, Oom> {
    let mut v = Vec::new_in(A::HANDLE);
    v.try_reserve_exact(b.len())?;
    v.extend_from_slice(b);
    Ok(v)
}

/// Copies `b` into a new [`Key`].
pub fn key_in<A: KvAlloc>(b: &[u8]) -> Result<Key<A>, Oom> {
    // Exact capacity: into_boxed_slice does not reallocate.
    Ok(bytes_in::<A>(b)?.into_boxed_slice())
}

/// A new empty map with the fixed hasher.
pub const fn new_map<K, V, A: KvAlloc>() -> Map<K, V, A> {
    Map::with_hasher_in(hasher(), A::HANDLE)
}

/// A new empty set with the fixed hasher.
pub const fn new_set<T, A: KvAlloc>() -> Set<T, A> {
    Set::with_hasher_in(hasher(), A::HANDLE)
}

/// A list: two stacks back to back. `front` holds the head of the list in reverse order
/// (its last element is the list's first), `back` the rest in order, so both ends push
/// and pop in O(1) (amortised: popping an empty side moves half of the other one over)
/// and an index is O(1). `allocator-api2` has no `VecDeque`; this is the smallest deque
/// that keeps elements in plain `Vec`s.
pub struct List<A: KvAlloc> {
    front: Vec<Bytes<A>, A>,
    back: Vec<Bytes<A>, A>,
}

impl<A: KvAlloc> List<A> {
    /// An empty list.
    pub const fn new() -> Self {
        List {
            front: Vec::new_in(A::HANDLE),
            back: Vec::new_in(A::HANDLE),
        }
    }

    /// Elements in the list.
    pub fn len(&self) -> usize {
        self.front.len() + self.back.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element at `i` (0 is the head).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let f = self.front.len();
        if i < f {
            Some(&self.front[f - 1 - i])
        } else {
            self.back.get(i - f).map(|v| &v[..])
        }
    }

    /// Pushes `v` at the head (`left`) or the tail.
    pub fn push(&mut self, left: bool, v: &[u8]) -> Result<(), Oom> {
        let side = if left {
            &mut self.front
        } else {
            &mut self.back
        };
        side.try_reserve(1)?;
        side.push(bytes_in(v)?);
        Ok(())
    }

    /// Moves half of `from` (the half nearest `to`'s end of the list) over to `to`, which
    /// is empty. Allocates `to`'s array: may fail.
    fn rebalance(from: &mut Vec<Bytes<A>, A>, to: &mut Vec<Bytes<A>, A>) -> Result<(), Oom> {
        // `from`'s first elements are the ones nearest `to`; they go over reversed.
        let n = from.len().div_ceil(2);
        to.try_reserve(n)?;
        to.extend(from.drain(..n).rev());
        Ok(())
    }

    /// Pops from the head (`left`) or the tail.
    pub fn pop(&mut self, left: bool) -> Option<Bytes<A>> {
        let (near, far) = if left {
            (&mut self.front, &mut self.back)
        } else {
            (&mut self.back, &mut self.front)
        };
        // One element, or no memory to rebalance: take it from the far side's start
        // (O(n), allocation-free).
        if near.is_empty() && (far.len() <= 1 || Self::rebalance(far, near).is_err()) {
            return (!far.is_empty()).then(|| far.remove(0));
        }
        near.pop()
    }

    /// The elements from `start` to `stop` inclusive (both in range).
    pub fn range(&self, start: usize, stop: usize) -> impl Iterator<Item = &[u8]> {
        (start..=stop).map(|i| self.get(i).unwrap_or_default())
    }
}

impl<A: KvAlloc> Default for List<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// A sorted set: scores by member, and (score, member) pairs in order.
pub struct ZSet<A: KvAlloc> {
    scores: Map<Key<A>, f64, A>,
    order: Vec<(f64, Key<A>), A>,
}

/// Where a (score, member) pair sorts: by score, then by member bytes.
fn zcmp(a: (f64, &[u8]), b: (f64, &[u8])) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1))
}

impl<A: KvAlloc> ZSet<A> {
    /// An empty sorted set.
    pub const fn new() -> Self {
        ZSet {
            scores: new_map(),
            order: Vec::new_in(A::HANDLE),
        }
    }

    /// Members in the set.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The score of `member`.
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    fn position(&self, score: f64, member: &[u8]) -> Result<usize, usize> {
        self.order
            .binary_search_by(|(s, m)| zcmp((*s, m), (score, member)))
    }

    /// Sets `member`'s score (adding it when new). A score of -0 is stored as 0, as
    /// Redis's small sorted sets (listpacks) store it.
    pub fn insert(&mut self, member: &[u8], score: f64) -> Result<(), Oom> {
        let score = score + 0.0;
        if let Some(old) = self.score(member) {
            let i = self.position(old, member).expect("indexed member");
            let (_, key) = self.order.remove(i);
            let j = self.position(score, member).unwrap_err();
            self.order.insert(j, (score, key));
            *self.scores.get_mut(member).expect("indexed member") = score;
            return Ok(());
        }
        self.order.try_reserve(1)?;
        self.scores.try_reserve(1)?;
        let j = self.position(score, member).unwrap_err();
        self.order.insert(j, (score, key_in(member)?));
        self.scores.insert(key_in(member)?, score);
        Ok(())
    }

    /// Removes and returns the member with the lowest score.
    pub fn pop_min(&mut self) -> Option<(f64, Key<A>)> {
        if self.order.is_empty() {
            return None;
        }
        let (score, member) = self.order.remove(0);
        self.scores.remove(&member[..]);
        Some((score, member))
    }

    /// The pair at rank `i` (0 the lowest).
    pub fn at(&self, i: usize) -> Option<(f64, &[u8])> {
        self.order.get(i).map(|(s, m)| (*s, &m[..]))
    }
}

impl<A: KvAlloc> Default for ZSet<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// A key's value: one of Redis's types. Strings are a boxed slice and the containers are
/// boxed, so a value is two words and a tag whatever its type.
pub enum Value<A: KvAlloc> {
    /// A string (also the integers of INCR).
    Str(Key<A>),
    /// A list.
    List(Box<List<A>, A>),
    /// A set.
    Set(Box<Set<Key<A>, A>, A>),
    /// A hash.
    Hash(Box<Map<Key<A>, Bytes<A>, A>, A>),
    /// A sorted set.
    ZSet(Box<ZSet<A>, A>),
}

impl<A: KvAlloc> Value<A> {
    /// TYPE's answer.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::Hash(_) => "hash",
            Value::ZSet(_) => "zset",
        }
    }

    /// A string value holding a copy of `b`.
    pub fn str(b: &[u8]) -> Result<Self, Oom> {
        Ok(Value::Str(key_in(b)?))
    }
}

/// One stripe of the keyspace: a map from keys to values, and, as in Redis, a second map
/// from the keys that have an expiry to that time (milliseconds since the Unix epoch,
/// wall clock, so that every process agrees). Keeping expiries apart keeps a key's bucket
/// at four words.
pub struct Db<A: KvAlloc> {
    map: Map<Key<A>, Value<A>, A>,
    expires: Map<Key<A>, u64, A>,
}

/// The current wall-clock time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<A: KvAlloc> Db<A> {
    /// An empty stripe.
    pub const fn new() -> Self {
        Db {
            map: new_map(),
            expires: new_map(),
        }
    }

    /// Keys in the stripe (expired ones not yet removed included, as Redis's DBSIZE).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the stripe holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Keys with an expiry.
    pub fn expires(&self) -> usize {
        self.expires.len()
    }

    /// When `key` expires (Unix milliseconds); 0 for never (or no such key).
    pub fn expiry(&self, key: &[u8]) -> u64 {
        if self.expires.is_empty() {
            return 0;
        }
        self.expires.get(key).copied().unwrap_or(0)
    }

    /// The live value of `key`: an expired key is removed first.
    pub fn get(&mut self, key: &[u8]) -> Option<&mut Value<A>> {
        let at = self.expiry(key);
        if at != 0 && at <= now_ms() {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    /// Inserts or replaces `key`'s value, with expiry `expire_at` (0: none).
    pub fn set(&mut self, key: &[u8], value: Value<A>, expire_at: u64) -> Result<(), Oom> {
        if let Some(old) = self.map.get_mut(key) {
            *old = value;
        } else {
            self.map.try_reserve(1)?;
            self.map.insert(key_in(key)?, value);
        }
        self.set_expiry(key, expire_at)
    }

    /// Sets (`at` > 0) or clears the expiry of an existing `key`.
    pub fn set_expiry(&mut self, key: &[u8], at: u64) -> Result<(), Oom> {
        if at == 0 {
            if !self.expires.is_empty() {
                self.expires.remove(key);
            }
        } else if let Some(e) = self.expires.get_mut(key) {
            *e = at;
        } else if self.map.contains_key(key) {
            self.expires.try_reserve(1)?;
            self.expires.insert(key_in(key)?, at);
        }
        Ok(())
    }

    /// Removes `key` (expired or not); whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        if !self.expires.is_empty() {
            self.expires.remove(key);
        }
        self.map.remove(key).is_some()
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        self.map = new_map();
        self.expires = new_map();
    }

    /// Makes the stripe consistent after a process died holding its lock: drops expiries
    /// of keys that are gone. (hashbrown leaves a map valid between its own steps; a
    /// value being written may be incomplete.) Returns whether anything changed.
    pub fn repair(&mut self) -> bool {
        let before = self.expires.len();
        let map = &self.map;
        self.expires.retain(|k, _| map.contains_key(&k[..]));
        before != self.expires.len()
    }
}

impl<A: KvAlloc> Default for Db<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// The keyspace: [`STRIPES`] stripes, each a [`Db`] behind its own shared robust mutex.
pub struct Keyspace<A: KvAlloc> {
    stripes: [crate::sync::Mutex<Db<A>>; STRIPES],
}

/// The stripe of a key.
pub fn stripe_of(key: &[u8]) -> usize {
    (hasher().hash_one(key) >> 58) as usize % STRIPES
}

impl<A: KvAlloc> Keyspace<A> {
    /// An empty keyspace (the initialiser of a static).
    pub const fn new() -> Self {
        Keyspace {
            stripes: [const { crate::sync::Mutex::new(Db::new()) }; STRIPES],
        }
    }

    /// Locks stripe `i`; a stripe whose previous holder died is repaired first.
    pub fn lock(&'static self, i: usize) -> crate::sync::MutexGuard<'static, Db<A>> {
        crate::sync::lock_repair(&self.stripes[i], Db::repair)
    }

    /// Locks the stripe of `key`.
    pub fn lock_key(&'static self, key: &[u8]) -> crate::sync::MutexGuard<'static, Db<A>> {
        self.lock(stripe_of(key))
    }

    /// Keys in the keyspace, and keys with an expiry (stripes counted one after the
    /// other).
    pub fn counts(&'static self) -> (usize, usize) {
        (0..STRIPES).fold((0, 0), |(n, e), i| {
            let g = self.lock(i);
            (n + g.len(), e + g.expires())
        })
    }
}

impl<A: KvAlloc> Default for Keyspace<A> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::Counted;

    #[test]
    fn list_is_a_deque() {
        let mut l: List<Counted> = List::new();
        let mut model = std::collections::VecDeque::new();
        let mut x: u64 = 7;
        for i in 0..20_000u32 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let v = i.to_le_bytes();
            match (x >> 60) % 4 {
                0 => {
                    l.push(true, &v).unwrap();
                    model.push_front(v.to_vec());
                }
                1 => {
                    l.push(false, &v).unwrap();
                    model.push_back(v.to_vec());
                }
                2 => assert_eq!(
                    l.pop(true).map(|b| b.to_vec()),
                    model.pop_front(),
                    "step {i}"
                ),
                _ => assert_eq!(l.pop(false).map(|b| b.to_vec()), model.pop_back()),
            }
            assert_eq!(l.len(), model.len());
            if i % 97 == 0 {
                for (j, m) in model.iter().enumerate() {
                    assert_eq!(l.get(j), Some(&m[..]));
                }
            }
        }
    }

    #[test]
    fn zset_orders_by_score_then_member() {
        let mut z: ZSet<Counted> = ZSet::new();
        z.insert(b"b", 1.0).unwrap();
        z.insert(b"a", 1.0).unwrap();
        z.insert(b"c", 0.5).unwrap();
        z.insert(b"b", -1.0).unwrap();
        let order: std::vec::Vec<_> = (0..z.len()).map(|i| z.at(i).unwrap()).collect();
        assert_eq!(order, [(-1.0, &b"b"[..]), (0.5, b"c"), (1.0, b"a")]);
        assert_eq!(z.score(b"b"), Some(-1.0));
        assert_eq!(
            z.pop_min().map(|(s, m)| (s, m.to_vec())),
            Some((-1.0, b"b".to_vec()))
        );
        assert_eq!(z.score(b"b"), None);
        assert_eq!(z.len(), 2);
    }

    #[test]
    fn db_expiry_and_removal() {
        let mut db: Db<Counted> = Db::new();
        let v = || Value::str(b"v").unwrap();
        db.set(b"k", v(), 0).unwrap();
        db.set(b"old", v(), 1).unwrap();
        assert_eq!(db.expires(), 1);
        assert!(db.get(b"k").is_some());
        assert!(db.get(b"old").is_none(), "expired in 1970");
        assert_eq!((db.len(), db.expires()), (1, 0));
        db.set_expiry(b"k", u64::MAX).unwrap();
        db.set_expiry(b"missing", u64::MAX).unwrap();
        assert_eq!(db.expires(), 1);
        assert_eq!(db.expiry(b"k"), u64::MAX);
        db.set(b"k", v(), 0).unwrap();
        assert_eq!(db.expiry(b"k"), 0, "SET clears the expiry");
        db.set_expiry(b"k", u64::MAX).unwrap();
        db.map.remove(&b"k"[..]);
        assert!(db.repair(), "an expiry without its key is dropped");
        assert_eq!(db.expires(), 0);
        db.set(b"k", v(), u64::MAX).unwrap();
        assert!(db.remove(b"k"));
        assert_eq!((db.len(), db.expires()), (0, 0));
    }
}
