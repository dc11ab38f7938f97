//! The keyspace: Redis's five data types in containers of any size, generic over the
//! allocator they live in ([`KvAlloc`]).
//!
//! Keys map to [`Value`]s in [`STRIPES`] independent hash maps ([`Db`], with a second map
//! of expiry times), each behind its own process-shared, robust [`dsu::heap::Mutex`]; a
//! key's hash picks its stripe. In `kv_v1`..`kv_v3` the whole [`Keyspace`] is a
//! `dsu::global!` and every container is in the segment's shared heap
//! ([`dsu::heap::SharedHeap`]), so every version sees the same keys at the same addresses.
//! How lists are kept is a type parameter ([`ListRepr`]): v1 and v2 keep [`List`], v3
//! [`RingList`] (the migration is in `src/migrate.rs`). The containers are `allocator-api2`'s `Vec` and `Box` and
//! `hashbrown`'s maps and sets, all with the allocator `A`, and every map hashes with
//! foldhash's fixed-seed [`FixedState`] ([`HASH_SEED`]), so a map built by one process (or
//! one version of the server) is found the same way by another.
//!
//! Lock order: one stripe at a time, except multi-key writes (MSET, DEL, FLUSHALL, and
//! v2's two-key commands), which take their stripes in increasing index order. Every allocation that a client's request causes is
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

/// How a list is kept in the heap: the operations the commands use. v1 and v2 keep
/// [`List`], v3 [`RingList`]; the keyspace's type (and so its dsu fingerprint) names the
/// representation, so that a version of the other one migrates instead of misreading it.
pub trait ListRepr<A: KvAlloc>: Sized + Send + 'static {
    /// A popped element.
    type Elem: std::ops::Deref<Target = [u8]>;
    /// Names the representation in the keyspace's fingerprint.
    const NAME: &'static str;
    /// An empty list.
    fn new() -> Self;
    /// Elements in the list.
    fn len(&self) -> usize;
    /// Whether the list is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The element at `i` (0 is the head).
    fn get(&self, i: usize) -> Option<&[u8]>;
    /// Pushes `v` at the head (`left`) or the tail.
    fn push(&mut self, left: bool, v: &[u8]) -> Result<(), Oom>;
    /// Pops from the head (`left`) or the tail.
    fn pop(&mut self, left: bool) -> Option<Self::Elem>;
    /// The elements from `start` to `stop` inclusive (both in range).
    fn range(&self, start: usize, stop: usize) -> impl Iterator<Item = &[u8]> {
        (start..=stop).map(|i| self.get(i).unwrap_or_default())
    }
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

    /// The elements from head to tail (for a migration to read them in order).
    pub fn iter(&self) -> impl Iterator<Item = &Bytes<A>> {
        self.front.iter().rev().chain(self.back.iter())
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
}

impl<A: KvAlloc> ListRepr<A> for List<A> {
    type Elem = Bytes<A>;
    const NAME: &'static str = "two stacks of Vec<u8>";

    fn new() -> Self {
        List::new()
    }

    fn len(&self) -> usize {
        self.front.len() + self.back.len()
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let f = self.front.len();
        if i < f {
            Some(&self.front[f - 1 - i])
        } else {
            self.back.get(i - f).map(|v| &v[..])
        }
    }

    fn push(&mut self, left: bool, v: &[u8]) -> Result<(), Oom> {
        let side = if left {
            &mut self.front
        } else {
            &mut self.back
        };
        side.try_reserve(1)?;
        side.push(bytes_in(v)?);
        Ok(())
    }

    fn pop(&mut self, left: bool) -> Option<Bytes<A>> {
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
}

impl<A: KvAlloc> Default for List<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// v3's list: one ring buffer of exact-size boxed elements. An element is two words
/// instead of [`List`]'s three (`Box<[u8]>` rather than `Vec<u8>`), the list one array
/// instead of two, and popping never moves half the list (no rebalancing). Capacity is a
/// power of two (or 0); the ring doubles when full and halves when a quarter full.
pub struct RingList<A: KvAlloc> {
    slots: Vec<Option<Key<A>>, A>,
    head: usize,
    len: usize,
}

impl<A: KvAlloc> RingList<A> {
    /// An empty list.
    pub const fn new() -> Self {
        RingList {
            slots: Vec::new_in(A::HANDLE),
            head: 0,
            len: 0,
        }
    }

    fn slot(&self, i: usize) -> usize {
        (self.head + i) & (self.slots.len() - 1)
    }

    /// Moves the elements, in order, into a new ring of `cap` slots (a power of two, at
    /// least `len`). Allocates: may fail, leaving the list as it was.
    fn resize(&mut self, cap: usize) -> Result<(), Oom> {
        let mut slots: Vec<Option<Key<A>>, A> = Vec::new_in(A::HANDLE);
        slots.try_reserve_exact(cap)?;
        for i in 0..self.len {
            let j = self.slot(i);
            slots.push(self.slots[j].take());
        }
        slots.resize_with(cap, || None);
        self.slots = slots;
        self.head = 0;
        Ok(())
    }

    /// Appends `v` (already in the heap) at the head or the tail.
    pub fn push_key(&mut self, left: bool, v: Key<A>) -> Result<(), Oom> {
        if self.len == self.slots.len() {
            self.resize((self.slots.len() * 2).max(4))?;
        }
        let cap = self.slots.len();
        let at = if left {
            self.head = (self.head + cap - 1) & (cap - 1);
            self.head
        } else {
            self.slot(self.len)
        };
        self.slots[at] = Some(v);
        self.len += 1;
        Ok(())
    }
}

impl<A: KvAlloc> ListRepr<A> for RingList<A> {
    type Elem = Key<A>;
    const NAME: &'static str = "ring of Box<[u8]>";

    fn new() -> Self {
        RingList::new()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        (i < self.len).then(|| self.slots[self.slot(i)].as_deref().unwrap_or_default())
    }

    fn push(&mut self, left: bool, v: &[u8]) -> Result<(), Oom> {
        if self.len == self.slots.len() {
            self.resize((self.slots.len() * 2).max(4))?;
        }
        self.push_key(left, key_in(v)?)
    }

    fn pop(&mut self, left: bool) -> Option<Key<A>> {
        if self.len == 0 {
            return None;
        }
        let at = if left {
            let at = self.head;
            self.head = self.slot(1);
            at
        } else {
            self.slot(self.len - 1)
        };
        self.len -= 1;
        let v = self.slots[at].take();
        let cap = self.slots.len();
        if cap > 16 && self.len <= cap / 4 {
            // Giving memory back is best effort: no memory to shrink is no error.
            let _ = self.resize(cap / 2);
        }
        v
    }
}

impl<A: KvAlloc> Default for RingList<A> {
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

/// A string value: one block of the allocator holding its length (4 bytes: values are at
/// most 512 MiB) and then its bytes, reached through one thin pointer. A [`Value`] is then
/// two words (tag and pointer) rather than three, a stripe's bucket four words rather than
/// five: about 17 bytes less per key at the tables' usual load.
pub struct Str<A: KvAlloc> {
    block: std::ptr::NonNull<u8>,
    _alloc: std::marker::PhantomData<A>,
}

// SAFETY: a Str owns its block, as a Box<[u8], A> would; A is Send + Sync.
unsafe impl<A: KvAlloc> Send for Str<A> {}
// SAFETY: as above; shared access only reads.
unsafe impl<A: KvAlloc> Sync for Str<A> {}

impl<A: KvAlloc> Str<A> {
    const HEADER: usize = size_of::<u32>();

    fn layout(len: usize) -> Result<allocator_api2::alloc::Layout, Oom> {
        if len > u32::MAX as usize {
            return Err(Oom);
        }
        allocator_api2::alloc::Layout::from_size_align(Self::HEADER + len, align_of::<u32>())
            .map_err(|_| Oom)
    }

    /// A string of the bytes of `parts`, one after the other.
    pub fn concat(parts: &[&[u8]]) -> Result<Self, Oom> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let block = A::HANDLE.allocate(Self::layout(len)?)?.cast::<u8>();
        // SAFETY: the block has HEADER + len bytes, aligned for u32; the parts are copied
        // into it one after the other, none overlapping it (they are other memory).
        unsafe {
            block.cast::<u32>().write(len as u32);
            let mut at = block.as_ptr().add(Self::HEADER);
            for p in parts {
                std::ptr::copy_nonoverlapping(p.as_ptr(), at, p.len());
                at = at.add(p.len());
            }
        }
        Ok(Str {
            block,
            _alloc: std::marker::PhantomData,
        })
    }

    /// A copy of `b`.
    pub fn new(b: &[u8]) -> Result<Self, Oom> {
        Self::concat(&[b])
    }
}

impl<A: KvAlloc> std::ops::Deref for Str<A> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the block holds its length and then that many initialised bytes, and
        // lives as long as self.
        unsafe {
            let len = self.block.cast::<u32>().read() as usize;
            std::slice::from_raw_parts(self.block.as_ptr().add(Self::HEADER), len)
        }
    }
}

impl<A: KvAlloc> Drop for Str<A> {
    fn drop(&mut self) {
        let layout = Self::layout(self.len()).expect("the layout it was made with");
        // SAFETY: allocated by A::HANDLE (any handle frees any block) with this layout.
        unsafe { A::HANDLE.deallocate(self.block, layout) };
    }
}

/// A key's value: one of Redis's types. Strings are a boxed slice and the containers are
/// boxed, so a value is two words and a tag whatever its type. `L` is how lists are kept.
pub enum Value<A: KvAlloc, L: ListRepr<A> = List<A>> {
    /// A string (also the integers of INCR).
    Str(Str<A>),
    /// A list.
    List(Box<L, A>),
    /// A set.
    Set(Box<Set<Key<A>, A>, A>),
    /// A hash.
    Hash(Box<Map<Key<A>, Bytes<A>, A>, A>),
    /// A sorted set.
    ZSet(Box<ZSet<A>, A>),
}

impl<A: KvAlloc, L: ListRepr<A>> Value<A, L> {
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
        Ok(Value::Str(Str::new(b)?))
    }
}

/// Where a stripe's keys are served: here, or, once a newer version took the keyspace
/// over by migrating it (v3's list representation), by that version.
///
/// The migration (running in the newer version's attach, under every stripe's lock) sets
/// `port` to the newer version's forwarding port: from then on this version serves
/// nothing from the stripe and forwards each request that needs it ([`Moved`]). After
/// the newer version is ready, and before it serves anything, it sets `committed`; until
/// then the old stripe is still the truth (the migration took no ownership of anything),
/// so if the newer version dies before, the older one clears `port` and serves on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Handover {
    /// The newer version's forwarding port on 127.0.0.1 (0: this stripe is served here).
    pub port: u32,
    /// Non-zero once the newer version serves the stripe: this copy is stale for good.
    pub committed: u32,
}

/// A request needs a stripe that a newer version took over: the request goes to `port`
/// (the payload of the unwinding that [`Keyspace::lock`] starts, caught by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The newer version's forwarding port on 127.0.0.1.
    pub port: u16,
    /// The stripe.
    pub stripe: usize,
}

/// One stripe of the keyspace: a map from keys to values, and, as in Redis, a second map
/// from the keys that have an expiry to that time (milliseconds since the Unix epoch,
/// wall clock, so that every process agrees). Keeping expiries apart keeps a key's bucket
/// at four words.
pub struct Db<A: KvAlloc, L: ListRepr<A> = List<A>> {
    map: Map<Key<A>, Value<A, L>, A>,
    expires: Map<Key<A>, u64, A>,
    /// Whether a newer version took the stripe over.
    pub handover: Handover,
}

/// The current wall-clock time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<A: KvAlloc, L: ListRepr<A>> Db<A, L> {
    /// An empty stripe.
    pub const fn new() -> Self {
        Db {
            map: new_map(),
            expires: new_map(),
            handover: Handover {
                port: 0,
                committed: 0,
            },
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
    pub fn get(&mut self, key: &[u8]) -> Option<&mut Value<A, L>> {
        let at = self.expiry(key);
        if at != 0 && at <= now_ms() {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    /// Inserts or replaces `key`'s value, with expiry `expire_at` (0: none).
    pub fn set(&mut self, key: &[u8], value: Value<A, L>, expire_at: u64) -> Result<(), Oom> {
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

    /// Takes `key`'s value out of the stripe (with its expiry, 0 for none).
    pub fn take(&mut self, key: &[u8]) -> Option<(Value<A, L>, u64)> {
        let at = self.expiry(key);
        if !self.expires.is_empty() {
            self.expires.remove(key);
        }
        self.map.remove(key).map(|v| (v, at))
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        self.map = new_map();
        self.expires = new_map();
    }

    /// Every key with its value and expiry (0: none), for a migration to read.
    pub fn entries(&self) -> impl Iterator<Item = (&Key<A>, &Value<A, L>, u64)> {
        self.map.iter().map(|(k, v)| (k, v, self.expiry(k)))
    }

    /// Makes an empty map's table this process's: hashbrown's empty map points at a
    /// static group of control bytes in the binary that made it, an address that means
    /// nothing in another version's binary. A map with a table points into the heap.
    fn own_empty_tables(&mut self) {
        if self.map.capacity() == 0 {
            self.map = new_map();
        }
        if self.expires.capacity() == 0 {
            self.expires = new_map();
        }
    }
}

impl<A: KvAlloc, L: ListRepr<A>> Default for Db<A, L> {
    fn default() -> Self {
        Self::new()
    }
}

/// The keyspace: [`STRIPES`] stripes, each a [`Db`] behind its own process-shared,
/// robust [`dsu::heap::Mutex`].
#[repr(transparent)]
pub struct Keyspace<A: KvAlloc, L: ListRepr<A> = List<A>> {
    stripes: [dsu::heap::Mutex<Db<A, L>>; STRIPES],
}

/// A locked stripe.
pub type Guard<A, L> = dsu::heap::MutexGuard<'static, Db<A, L>>;

/// The stripe of a key.
pub fn stripe_of(key: &[u8]) -> usize {
    (hasher().hash_one(key) >> 58) as usize % STRIPES
}

impl<A: KvAlloc, L: ListRepr<A>> Keyspace<A, L> {
    /// An empty keyspace (the initialiser of a static).
    pub const fn new() -> Self {
        Keyspace {
            stripes: [const { dsu::heap::Mutex::new(Db::new()) }; STRIPES],
        }
    }

    /// Locks stripe `i` whatever its handover state (a migration reads it).
    ///
    /// A stripe whose holder died while holding it is poisoned (its containers may be
    /// half-changed, which no safe code may read): it starts again empty, its keys
    /// leaked, and the server says so on stderr.
    pub fn lock_any(&'static self, i: usize) -> Guard<A, L> {
        let m = &self.stripes[i];
        let mut g = m.lock().unwrap_or_else(|e| {
            eprintln!("dsu-kv: stripe {i}: {e}; the stripe starts again empty");
            m.reset(Db::new())
        });
        g.own_empty_tables();
        g
    }

    /// Locks stripe `i` to serve a request. If a newer version took the stripe over, the
    /// lock is released and the request unwinds with a [`Moved`] payload, which the server
    /// catches and forwards the request with (commands take all their stripes before
    /// changing anything, so an unwound request has changed nothing).
    pub fn lock(&'static self, i: usize) -> Guard<A, L> {
        let g = self.lock_any(i);
        if g.handover.port != 0 {
            let port = g.handover.port as u16;
            drop(g);
            std::panic::resume_unwind(std::boxed::Box::new(Moved { port, stripe: i }));
        }
        g
    }

    /// Locks the stripe of `key`.
    pub fn lock_key(&'static self, key: &[u8]) -> Guard<A, L> {
        self.lock(stripe_of(key))
    }

    /// Locks the stripes of `keys` (each once, in index order, the lock order) and
    /// returns them with their indexes, for a command that changes several keys at once.
    pub fn lock_keys<'k>(
        &'static self,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> (std::vec::Vec<usize>, std::vec::Vec<Guard<A, L>>) {
        let mut stripes: std::vec::Vec<usize> = keys.map(stripe_of).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let guards = stripes.iter().map(|&i| self.lock(i)).collect();
        (stripes, guards)
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

impl<A: KvAlloc, L: ListRepr<A>> Default for Keyspace<A, L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: KvAlloc> Db<A, RingList<A>> {
    /// A stripe with `old`'s keys and values, lists converted to rings, sharing every
    /// block of `old` but its index: keys, strings, sets, hashes, sorted sets and list
    /// elements are the same blocks (an element whose `Vec` has spare capacity is copied,
    /// since a `Box<[u8]>` must own exactly its length). `Err` (nothing of `old` used) when
    /// the allocator has no room for the new table or rings.
    ///
    /// # Safety
    ///
    /// The result and `old` share blocks: from then on at most one of the two may be used
    /// or dropped; the other must be forgotten (never dropped, never read again).
    pub unsafe fn alias_lists_as_rings(old: &Db<A, List<A>>) -> Result<Self, Oom> {
        // Forgotten on error: its entries share old's blocks.
        let mut new = std::mem::ManuallyDrop::new(Db::new());
        new.map.try_reserve(old.map.len())?;
        new.expires.try_reserve(old.expires.len())?;
        for (k, v) in old.map.iter() {
            // SAFETY: the reads give each block a second owner, which the caller's
            // contract keeps from being used alongside the first; `from_raw_in` takes an
            // element's block, allocated by `A` with exactly `len` bytes (capacity ==
            // length).
            let v = unsafe {
                match v {
                    Value::Str(s) => Value::Str(std::ptr::read(s)),
                    Value::Set(s) => Value::Set(std::ptr::read(s)),
                    Value::Hash(h) => Value::Hash(std::ptr::read(h)),
                    Value::ZSet(z) => Value::ZSet(std::ptr::read(z)),
                    Value::List(l) => {
                        let mut ring = std::mem::ManuallyDrop::new(Box::try_new_in(
                            RingList::new(),
                            A::HANDLE,
                        )?);
                        for e in l.iter() {
                            let e = if e.capacity() == e.len() {
                                Box::from_raw_in(
                                    std::ptr::slice_from_raw_parts_mut(
                                        e.as_ptr().cast_mut(),
                                        e.len(),
                                    ),
                                    A::HANDLE,
                                )
                            } else {
                                key_in(e)?
                            };
                            ring.push_key(false, e)?;
                        }
                        Value::List(std::mem::ManuallyDrop::into_inner(ring))
                    }
                }
            };
            // SAFETY: as above.
            new.map.insert(unsafe { std::ptr::read(k) }, v);
        }
        for (k, at) in old.expires.iter() {
            // SAFETY: as above.
            new.expires.insert(unsafe { std::ptr::read(k) }, *at);
        }
        Ok(std::mem::ManuallyDrop::into_inner(new))
    }
}

impl<A: KvAlloc, L: ListRepr<A>> Keyspace<A, L> {
    /// A keyspace of the given stripes (exactly [`STRIPES`]; a migration's result).
    pub fn from_dbs(dbs: std::vec::Vec<Db<A, L>>) -> Self {
        assert_eq!(dbs.len(), STRIPES, "one Db per stripe");
        let mut dbs = dbs.into_iter();
        Keyspace {
            stripes: std::array::from_fn(|_| dsu::heap::Mutex::new(dbs.next().expect("counted"))),
        }
    }
}

/// The fingerprint of the crates whose layouts a stripe exposes (as `dsu::heap`'s own
/// containers name theirs): a version built with other releases gets another type.
const LAYOUT_CRATES: &str = "allocator-api2 0.2; hashbrown 0.17 + foldhash 0.2 fast::FixedState";

// SAFETY: a stripe holds only containers of the shared heap (allocator `SharedHeap`, a
// zero-sized handle the same in every version) of pointer-free data, and pointers to
// hashbrown's static empty group, which `lock_any` replaces with this process's before
// any use; its layout is fixed by this source, the representation `L` and the crate
// releases, all in the fingerprint.
unsafe impl<L: ListRepr<dsu::heap::SharedHeap>> dsu::heap::HeapData
    for Db<dsu::heap::SharedHeap, L>
{
    const FINGERPRINT: u64 = {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let parts: [&[u8]; 3] = [
            b"dsu-kv::keyspace::Db",
            L::NAME.as_bytes(),
            LAYOUT_CRATES.as_bytes(),
        ];
        let mut p = 0;
        while p < parts.len() {
            let mut i = 0;
            while i < parts[p].len() {
                h = (h ^ parts[p][i] as u64).wrapping_mul(0x100_0000_01b3);
                i += 1;
            }
            h = (h ^ 0xff).wrapping_mul(0x100_0000_01b3);
            p += 1;
        }
        (h ^ size_of::<Self>() as u64).wrapping_mul(0x100_0000_01b3)
    };
}

// SAFETY: repr(transparent) over an array of heap::Mutex, a Shared type; the fingerprint
// is the array's.
unsafe impl<L: ListRepr<dsu::heap::SharedHeap>> dsu::Shared for Keyspace<dsu::heap::SharedHeap, L> {
    const FINGERPRINT: u64 =
        <[dsu::heap::Mutex<Db<dsu::heap::SharedHeap, L>>; STRIPES] as dsu::Shared>::FINGERPRINT;
    const OWNS_HEAP: bool = true;
}

// SAFETY: every byte is a heap::Mutex's (SharedCell).
unsafe impl<L: ListRepr<dsu::heap::SharedHeap>> dsu::SharedCell
    for Keyspace<dsu::heap::SharedHeap, L>
{
}

/// The keyspace of `kv_v1` and `kv_v2` in the shared heap.
pub type HeapKeyspaceV1 = Keyspace<dsu::heap::SharedHeap, List<dsu::heap::SharedHeap>>;
/// The keyspace of `kv_v3` in the shared heap (lists are rings).
pub type HeapKeyspaceV3 = Keyspace<dsu::heap::SharedHeap, RingList<dsu::heap::SharedHeap>>;

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
        db.set(b"k", v(), u64::MAX).unwrap();
        assert!(db.remove(b"k"));
        assert_eq!((db.len(), db.expires()), (0, 0));
    }
    #[test]
    fn ring_list_is_a_deque() {
        let mut l: RingList<Counted> = RingList::new();
        let mut model = std::collections::VecDeque::new();
        let mut x: u64 = 11;
        for i in 0..20_000u32 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let v = i.to_le_bytes();
            // Pushes win early, pops later: the ring grows, then shrinks.
            let push = (x >> 61) < if i < 10_000 { 5 } else { 3 };
            let left = (x >> 33) & 1 == 0;
            if push {
                l.push(left, &v).unwrap();
                if left {
                    model.push_front(v.to_vec());
                } else {
                    model.push_back(v.to_vec());
                }
            } else if left {
                assert_eq!(
                    l.pop(true).map(|b| b.to_vec()),
                    model.pop_front(),
                    "step {i}"
                );
            } else {
                assert_eq!(
                    l.pop(false).map(|b| b.to_vec()),
                    model.pop_back(),
                    "step {i}"
                );
            }
            assert_eq!(l.len(), model.len());
            if i % 97 == 0 {
                for (j, m) in model.iter().enumerate() {
                    assert_eq!(l.get(j), Some(&m[..]));
                }
                assert_eq!(l.get(model.len()), None);
            }
        }
    }

    #[test]
    fn lists_become_rings_sharing_every_block() {
        let mut old: Db<Counted> = Db::new();
        let mut list: List<Counted> = List::new();
        for i in 0..100u32 {
            list.push(i % 3 == 0, &i.to_le_bytes()).unwrap();
        }
        list.pop(false);
        let expect: std::vec::Vec<std::vec::Vec<u8>> = list.iter().map(|e| e.to_vec()).collect();
        old.set(b"l", Value::List(Box::new_in(list, Counted)), 0)
            .unwrap();
        old.set(b"s", Value::str(b"string").unwrap(), u64::MAX)
            .unwrap();
        let mut set = new_set();
        set.insert(key_in::<Counted>(b"m").unwrap());
        old.set(b"set", Value::Set(Box::new_in(set, Counted)), 0)
            .unwrap();
        // SAFETY: `old` is forgotten below, never used again.
        let mut new = unsafe { Db::alias_lists_as_rings(&old) }.unwrap();
        let str_ptr = |db: &mut Db<Counted, _>| match db.get(b"s") {
            Some(Value::Str(s)) => s.as_ptr(),
            _ => panic!(),
        };
        let old_ptr = match old.get(b"s") {
            Some(Value::Str(s)) => s.as_ptr(),
            _ => panic!(),
        };
        assert_eq!(str_ptr(&mut new), old_ptr, "the string is the same block");
        std::mem::forget(old);
        let Some(Value::List(ring)) = new.get(b"l") else {
            panic!()
        };
        let got: std::vec::Vec<std::vec::Vec<u8>> = (0..ring.len())
            .map(|i| ring.get(i).unwrap().to_vec())
            .collect();
        assert_eq!(got, expect);
        assert_eq!(new.expiry(b"s"), u64::MAX);
        assert_eq!(new.len(), 3);
    }
}
