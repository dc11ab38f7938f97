//! The keyspace: a fixed-capacity open-addressing hash table of fixed-size slots, made of
//! [`STRIPES`] independent stripes, each guarded by its own process-shared, robust
//! [`dsu::sync::Mutex`]. The whole table is one `#[repr(C)]` [`dsu::Shared`] value, so it
//! lives in a dsu shared global and every version of the server maps the same pages.
//!
//! Sizes: keys up to [`KEY_MAX`] (64) bytes, values up to [`VAL_MAX`] (184) bytes, one
//! 256-byte [`Slot`] per key; [`STRIPES`] (64) stripes of [`STRIPE_SLOTS`] (1280) slots,
//! [`CAPACITY`] = 81,920 slots in all (about 21 MiB). A key's hash picks its stripe (top 6
//! bits) and its home slot in the stripe; collisions probe linearly within the stripe. At
//! 64k keys a stripe holds 1024 ± 32 keys on average, 80% of its slots, so the table holds at
//! least 64k keys; a stripe that is full answers `-OOM`.
//!
//! Each slot has a 32-bit tag beside it in the stripe's `tags` array (0 empty, 1 tombstone,
//! else high hash bits with the top bit set), so probing reads 4 bytes per slot and compares
//! keys only on a tag match. DEL leaves a tombstone unless the next slot is empty; a stripe
//! whose empty slots run low is rebuilt in place, which clears its tombstones.

use crate::sync::Mutex;

/// Longest key in bytes.
pub const KEY_MAX: usize = 64;
/// Longest value in bytes.
pub const VAL_MAX: usize = 184;
/// Number of stripes (independent sub-tables, one lock each).
pub const STRIPES: usize = 64;
/// Slots per stripe.
pub const STRIPE_SLOTS: usize = 1280;
/// Slots in the whole table.
pub const CAPACITY: usize = STRIPES * STRIPE_SLOTS;

const EMPTY: u32 = 0;
const TOMBSTONE: u32 = 1;

/// One key and its value, 256 bytes.
#[derive(dsu::Shared, Clone, Copy)]
#[repr(C)]
pub struct Slot {
    klen: u16,
    vlen: u16,
    reserved: u32,
    key: [u8; KEY_MAX],
    val: [u8; VAL_MAX],
}

impl Slot {
    /// An unused slot.
    pub const EMPTY: Slot = Slot {
        klen: 0,
        vlen: 0,
        reserved: 0,
        key: [0; KEY_MAX],
        val: [0; VAL_MAX],
    };

    fn key(&self) -> &[u8] {
        &self.key[..(self.klen as usize).min(KEY_MAX)]
    }

    fn val(&self) -> &[u8] {
        &self.val[..(self.vlen as usize).min(VAL_MAX)]
    }

    fn set_val(&mut self, v: &[u8]) {
        self.val[..v.len()].copy_from_slice(v);
        self.vlen = v.len() as u16;
    }
}

/// Why a table operation failed. `Display` gives the Redis error reply text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// The key is longer than [`KEY_MAX`].
    KeyTooLong,
    /// The value (or the result of APPEND) is longer than [`VAL_MAX`].
    ValueTooLong,
    /// The key's stripe has no free slot.
    Full,
    /// INCR on a value that is not a decimal `i64`.
    NotInteger,
    /// INCR would overflow `i64`.
    Overflow,
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableError::KeyTooLong => write!(f, "ERR key is longer than {KEY_MAX} bytes"),
            TableError::ValueTooLong => write!(f, "ERR value is longer than {VAL_MAX} bytes"),
            TableError::Full => write!(f, "OOM the key's table stripe is full"),
            TableError::NotInteger => write!(f, "ERR value is not an integer or out of range"),
            TableError::Overflow => write!(f, "ERR increment or decrement would overflow"),
        }
    }
}

impl std::error::Error for TableError {}

/// SET's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCond {
    /// Always set.
    Always,
    /// Only if the key does not exist (`NX`).
    IfAbsent,
    /// Only if the key exists (`XX`).
    IfPresent,
}

/// The 64-bit hash of a key: FNV-1a finished with the murmur3 mixer, so that every bit
/// depends on every byte.
///
/// ```
/// assert_ne!(dsu_kv::table::hash(b"a"), dsu_kv::table::hash(b"b"));
/// ```
pub fn hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn stripe_of(h: u64) -> usize {
    (h >> 58) as usize % STRIPES
}

fn home_of(h: u64) -> usize {
    (h as u32 as usize) % STRIPE_SLOTS
}

fn tag_of(h: u64) -> u32 {
    ((h >> 26) as u32) | 0x8000_0000
}

enum Probe {
    Found(usize),
    Vacant(usize),
    Full,
}

/// One stripe: an open-addressing table with linear probing. Its methods take the key's
/// [`hash`] and assume the caller holds the stripe's lock (they take `&mut self`).
#[derive(dsu::Shared)]
#[repr(C)]
pub struct Stripe {
    len: u32,
    tombstones: u32,
    tags: [u32; STRIPE_SLOTS],
    slots: [Slot; STRIPE_SLOTS],
}

impl Stripe {
    /// An empty stripe.
    pub const EMPTY: Stripe = Stripe {
        len: 0,
        tombstones: 0,
        tags: [EMPTY; STRIPE_SLOTS],
        slots: [Slot::EMPTY; STRIPE_SLOTS],
    };

    /// Keys in the stripe.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the stripe holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn probe(&self, h: u64, key: &[u8]) -> Probe {
        let tag = tag_of(h);
        let mut i = home_of(h);
        let mut tomb = None;
        for _ in 0..STRIPE_SLOTS {
            match self.tags[i] {
                EMPTY => return Probe::Vacant(tomb.unwrap_or(i)),
                TOMBSTONE => {
                    tomb.get_or_insert(i);
                }
                t if t == tag && self.slots[i].key() == key => return Probe::Found(i),
                _ => {}
            }
            i = if i + 1 == STRIPE_SLOTS { 0 } else { i + 1 };
        }
        tomb.map_or(Probe::Full, Probe::Vacant)
    }

    /// Finds `key` or the slot where it would go; rebuilds the stripe first when few
    /// empty slots are left and tombstones can be reclaimed.
    fn probe_for_insert(&mut self, h: u64, key: &[u8]) -> Probe {
        let empty = STRIPE_SLOTS - self.len as usize - self.tombstones as usize;
        if empty < STRIPE_SLOTS / 8 && self.tombstones > 0 {
            self.rebuild();
        }
        self.probe(h, key)
    }

    fn insert_at(&mut self, i: usize, h: u64, key: &[u8], val: &[u8]) {
        if self.tags[i] == TOMBSTONE {
            self.tombstones -= 1;
        }
        let slot = &mut self.slots[i];
        slot.key[..key.len()].copy_from_slice(key);
        slot.klen = key.len() as u16;
        slot.set_val(val);
        // The tag last: a half-written slot is never found.
        self.tags[i] = tag_of(h);
        self.len += 1;
    }

    /// The value of `key`.
    pub fn get(&self, h: u64, key: &[u8]) -> Option<&[u8]> {
        match self.probe(h, key) {
            Probe::Found(i) => Some(self.slots[i].val()),
            _ => None,
        }
    }

    /// Sets `key` to `val` under `cond`; `Ok(false)` when the condition did not hold.
    pub fn set(
        &mut self,
        h: u64,
        key: &[u8],
        val: &[u8],
        cond: SetCond,
    ) -> Result<bool, TableError> {
        check(key, val)?;
        match self.probe_for_insert(h, key) {
            Probe::Found(i) => {
                if cond == SetCond::IfAbsent {
                    return Ok(false);
                }
                self.slots[i].set_val(val);
                Ok(true)
            }
            Probe::Vacant(i) => {
                if cond == SetCond::IfPresent {
                    return Ok(false);
                }
                self.insert_at(i, h, key, val);
                Ok(true)
            }
            Probe::Full => Err(TableError::Full),
        }
    }

    /// Deletes `key`; whether it existed.
    pub fn del(&mut self, h: u64, key: &[u8]) -> bool {
        let Probe::Found(i) = self.probe(h, key) else {
            return false;
        };
        self.len -= 1;
        let next = if i + 1 == STRIPE_SLOTS { 0 } else { i + 1 };
        if self.tags[next] != EMPTY {
            self.tags[i] = TOMBSTONE;
            self.tombstones += 1;
            return true;
        }
        // Nothing probes past an empty slot: this slot and the tombstones before it can
        // become empty.
        self.tags[i] = EMPTY;
        let mut j = i;
        loop {
            j = if j == 0 { STRIPE_SLOTS - 1 } else { j - 1 };
            if self.tags[j] != TOMBSTONE {
                break;
            }
            self.tags[j] = EMPTY;
            self.tombstones -= 1;
        }
        true
    }

    /// Adds `delta` to the integer value of `key` (0 when missing) and returns the result.
    pub fn incr_by(&mut self, h: u64, key: &[u8], delta: i64) -> Result<i64, TableError> {
        check(key, b"")?;
        match self.probe_for_insert(h, key) {
            Probe::Found(i) => {
                let old =
                    crate::resp::parse_int(self.slots[i].val()).ok_or(TableError::NotInteger)?;
                let new = old.checked_add(delta).ok_or(TableError::Overflow)?;
                self.slots[i].set_val(new.to_string().as_bytes());
                Ok(new)
            }
            Probe::Vacant(i) => {
                self.insert_at(i, h, key, delta.to_string().as_bytes());
                Ok(delta)
            }
            Probe::Full => Err(TableError::Full),
        }
    }

    /// Appends `suffix` to the value of `key` (created empty when missing) and returns the
    /// new length.
    pub fn append(&mut self, h: u64, key: &[u8], suffix: &[u8]) -> Result<usize, TableError> {
        check(key, suffix)?;
        match self.probe_for_insert(h, key) {
            Probe::Found(i) => {
                let slot = &mut self.slots[i];
                let old = slot.vlen as usize;
                let new = old + suffix.len();
                if new > VAL_MAX {
                    return Err(TableError::ValueTooLong);
                }
                slot.val[old..new].copy_from_slice(suffix);
                slot.vlen = new as u16;
                Ok(new)
            }
            Probe::Vacant(i) => {
                self.insert_at(i, h, key, suffix);
                Ok(suffix.len())
            }
            Probe::Full => Err(TableError::Full),
        }
    }

    /// Re-inserts every live key, which clears all tombstones.
    fn rebuild(&mut self) {
        let live: Vec<(u32, Slot)> = (0..STRIPE_SLOTS)
            .filter(|&i| self.tags[i] > TOMBSTONE)
            .map(|i| (self.tags[i], self.slots[i]))
            .collect();
        self.tags = [EMPTY; STRIPE_SLOTS];
        self.tombstones = 0;
        for (tag, slot) in live {
            let mut i = home_of(hash(slot.key()));
            while self.tags[i] != EMPTY {
                i = if i + 1 == STRIPE_SLOTS { 0 } else { i + 1 };
            }
            self.tags[i] = tag;
            self.slots[i] = slot;
        }
    }

    /// Makes the stripe consistent after a version died while holding its lock: recounts
    /// keys and tombstones from the tags and bounds every length. A value being written at
    /// the time may be torn; no other key is affected. Returns whether anything changed.
    pub fn repair(&mut self) -> bool {
        let mut changed = false;
        let (mut len, mut tombs) = (0, 0);
        for i in 0..STRIPE_SLOTS {
            match self.tags[i] {
                EMPTY => {}
                TOMBSTONE => tombs += 1,
                _ => {
                    len += 1;
                    let s = &mut self.slots[i];
                    if s.klen as usize > KEY_MAX || s.vlen as usize > VAL_MAX {
                        s.klen = s.klen.min(KEY_MAX as u16);
                        s.vlen = s.vlen.min(VAL_MAX as u16);
                        changed = true;
                    }
                }
            }
        }
        changed |= self.len != len || self.tombstones != tombs;
        self.len = len;
        self.tombstones = tombs;
        changed
    }
}

fn check(key: &[u8], val: &[u8]) -> Result<(), TableError> {
    if key.len() > KEY_MAX {
        return Err(TableError::KeyTooLong);
    }
    if val.len() > VAL_MAX {
        return Err(TableError::ValueTooLong);
    }
    Ok(())
}

/// The keyspace: [`STRIPES`] stripes, each behind its own shared robust mutex. Every method
/// takes one stripe lock (DBSIZE takes them one after the other).
#[derive(dsu::Shared)]
#[repr(C)]
pub struct Table {
    stripes: [Mutex<Stripe>; STRIPES],
}

impl Table {
    /// An empty table (the initialiser of the shared global).
    pub const fn new() -> Self {
        Table {
            stripes: [const { Mutex::new(Stripe::EMPTY) }; STRIPES],
        }
    }

    /// An empty table on the heap, for tests and tools (the server's table is a shared
    /// global). It is leaked: a [`Mutex`] is locked through a `&'static` reference, since
    /// a held lock is linked into the thread's robust list and must never move or be freed.
    ///
    /// ```
    /// let t = dsu_kv::table::Table::new_leaked();
    /// assert!(t.is_empty());
    /// ```
    pub fn new_leaked() -> &'static Table {
        let layout = std::alloc::Layout::new::<Table>();
        // SAFETY: the layout is not zero-sized; all-zero bytes are a valid empty table
        // (unlocked mutexes, empty tags, zero lengths), so the Box owns an initialised Table.
        unsafe {
            let p = std::alloc::alloc_zeroed(layout).cast::<Table>();
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::leak(Box::from_raw(p))
        }
    }

    /// Runs `f` on the stripe of `key` with its lock held. If the previous holder died with
    /// the lock, the stripe is repaired first.
    fn with<R>(&'static self, key: &[u8], f: impl FnOnce(&mut Stripe, u64) -> R) -> R {
        let h = hash(key);
        let mut guard = crate::sync::lock_repair(&self.stripes[stripe_of(h)], Stripe::repair);
        f(&mut guard, h)
    }

    /// The value of `key`, appended to `out`; whether it exists.
    pub fn get_into(&'static self, key: &[u8], out: &mut Vec<u8>) -> bool {
        self.with(key, |s, h| {
            s.get(h, key).map(|v| out.extend_from_slice(v)).is_some()
        })
    }

    /// The value of `key`.
    pub fn get(&'static self, key: &[u8]) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        self.get_into(key, &mut v).then_some(v)
    }

    /// Whether `key` exists.
    pub fn exists(&'static self, key: &[u8]) -> bool {
        self.with(key, |s, h| s.get(h, key).is_some())
    }

    /// Sets `key` to `val` under `cond`; `Ok(false)` when the condition did not hold.
    pub fn set(&'static self, key: &[u8], val: &[u8], cond: SetCond) -> Result<bool, TableError> {
        self.with(key, |s, h| s.set(h, key, val, cond))
    }

    /// Deletes `key`; whether it existed.
    pub fn del(&'static self, key: &[u8]) -> bool {
        self.with(key, |s, h| s.del(h, key))
    }

    /// Adds `delta` to the integer at `key` and returns the result.
    pub fn incr_by(&'static self, key: &[u8], delta: i64) -> Result<i64, TableError> {
        self.with(key, |s, h| s.incr_by(h, key, delta))
    }

    /// Appends to the value at `key` and returns the new length.
    pub fn append(&'static self, key: &[u8], suffix: &[u8]) -> Result<usize, TableError> {
        self.with(key, |s, h| s.append(h, key, suffix))
    }

    /// Keys in the table (each stripe counted under its lock, one after the other).
    pub fn len(&'static self) -> usize {
        self.stripes
            .iter()
            .map(|m| crate::sync::lock_repair(m, Stripe::repair).len())
            .sum()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&'static self) -> bool {
        self.len() == 0
    }
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn stripe() -> Box<Stripe> {
        // Too large for a test thread's stack: build it on the heap.
        let mut b: Box<std::mem::MaybeUninit<Stripe>> = Box::new_uninit();
        // SAFETY: all-zero bytes are a valid, empty Stripe (EMPTY tags, zero lengths).
        unsafe {
            std::ptr::write_bytes(b.as_mut_ptr(), 0, 1);
            b.assume_init()
        }
    }

    /// Keys that all land in one stripe, so that tests fill it.
    fn same_stripe_keys(n: usize) -> Vec<Vec<u8>> {
        (0..)
            .map(|i| format!("key:{i}").into_bytes())
            .filter(|k| stripe_of(hash(k)) == 0)
            .take(n)
            .collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(size_of::<Slot>(), 256);
        assert!(size_of::<Table>() < 22 << 20, "{}", size_of::<Table>());
        const { assert!(CAPACITY >= 65536) };
    }

    #[test]
    fn set_get_del() {
        let mut s = stripe();
        let h = hash(b"a");
        assert_eq!(s.get(h, b"a"), None);
        assert_eq!(s.set(h, b"a", b"1", SetCond::Always), Ok(true));
        assert_eq!(s.get(h, b"a"), Some(&b"1"[..]));
        assert_eq!(s.set(h, b"a", b"22", SetCond::IfAbsent), Ok(false));
        assert_eq!(s.set(h, b"a", b"22", SetCond::IfPresent), Ok(true));
        assert_eq!(s.get(h, b"a"), Some(&b"22"[..]));
        assert_eq!(s.len(), 1);
        assert!(s.del(h, b"a"));
        assert!(!s.del(h, b"a"));
        assert_eq!(s.get(h, b"a"), None);
        assert_eq!(s.set(h, b"a", b"x", SetCond::IfPresent), Ok(false));
        assert!(s.is_empty());
        assert_eq!(
            s.set(h, b"", b"", SetCond::Always),
            Ok(true),
            "empty key and value"
        );
    }

    #[test]
    fn limits() {
        let mut s = stripe();
        let k = [b'k'; KEY_MAX];
        let v = [b'v'; VAL_MAX];
        assert_eq!(s.set(hash(&k), &k, &v, SetCond::Always), Ok(true));
        assert_eq!(s.get(hash(&k), &k), Some(&v[..]));
        let long = [b'k'; KEY_MAX + 1];
        assert_eq!(
            s.set(hash(&long), &long, b"", SetCond::Always),
            Err(TableError::KeyTooLong)
        );
        assert_eq!(
            s.set(hash(b"x"), b"x", &[0; VAL_MAX + 1], SetCond::Always),
            Err(TableError::ValueTooLong)
        );
        assert_eq!(s.append(hash(&k), &k, b"x"), Err(TableError::ValueTooLong));
    }

    #[test]
    fn incr_and_append() {
        let mut s = stripe();
        let h = hash(b"n");
        assert_eq!(s.incr_by(h, b"n", 1), Ok(1));
        assert_eq!(s.incr_by(h, b"n", 41), Ok(42));
        assert_eq!(s.incr_by(h, b"n", -50), Ok(-8));
        assert_eq!(s.get(h, b"n"), Some(&b"-8"[..]));
        s.set(h, b"n", b"9223372036854775807", SetCond::Always)
            .unwrap();
        assert_eq!(s.incr_by(h, b"n", 1), Err(TableError::Overflow));
        s.set(h, b"n", b"12a", SetCond::Always).unwrap();
        assert_eq!(s.incr_by(h, b"n", 1), Err(TableError::NotInteger));
        let h = hash(b"s");
        assert_eq!(s.append(h, b"s", b"ab"), Ok(2));
        assert_eq!(s.append(h, b"s", b"cd"), Ok(4));
        assert_eq!(s.get(h, b"s"), Some(&b"abcd"[..]));
    }

    /// Fills a stripe, deletes and reinserts many times against a HashMap model.
    #[test]
    fn model_with_tombstones_and_full_stripe() {
        let mut s = stripe();
        let keys = same_stripe_keys(STRIPE_SLOTS + 10);
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for (n, k) in keys.iter().enumerate() {
            let r = s.set(hash(k), k, format!("v{n}").as_bytes(), SetCond::Always);
            if n < STRIPE_SLOTS {
                assert_eq!(r, Ok(true));
                model.insert(k.clone(), format!("v{n}").into_bytes());
            } else {
                assert_eq!(r, Err(TableError::Full));
            }
        }
        assert_eq!(s.len(), STRIPE_SLOTS);
        // Churn: pseudo-random deletes and inserts.
        let mut x: u64 = 1;
        for round in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = &keys[(x >> 33) as usize % keys.len()];
            if (x >> 20).is_multiple_of(3) {
                assert_eq!(
                    s.del(hash(k), k),
                    model.remove(k).is_some(),
                    "round {round}"
                );
            } else if model.len() < STRIPE_SLOTS - 1 || model.contains_key(k) {
                let v = format!("r{round}").into_bytes();
                assert_eq!(
                    s.set(hash(k), k, &v, SetCond::Always),
                    Ok(true),
                    "round {round}"
                );
                model.insert(k.clone(), v);
            }
            assert_eq!(s.len(), model.len());
        }
        for k in &keys {
            assert_eq!(s.get(hash(k), k), model.get(k).map(|v| &v[..]));
        }
        let (len, tombs) = (s.len, s.tombstones);
        assert!(!s.repair(), "consistent stripe needs no repair");
        assert_eq!((s.len, s.tombstones), (len, tombs));
    }

    #[test]
    fn repair_recounts() {
        let mut s = stripe();
        for k in same_stripe_keys(100) {
            s.set(hash(&k), &k, b"v", SetCond::Always).unwrap();
        }
        s.len = 7;
        s.slots.iter_mut().for_each(|sl| sl.vlen = sl.vlen.max(1));
        let i = s.tags.iter().position(|&t| t > TOMBSTONE).unwrap();
        s.slots[i].vlen = 9999;
        assert!(s.repair());
        assert_eq!(s.len(), 100);
        assert_eq!(s.slots[i].val().len(), VAL_MAX);
    }

    #[test]
    fn keys_spread_over_stripes() {
        let mut per = [0usize; STRIPES];
        for i in 0..65536 {
            per[stripe_of(hash(format!("key:{i:012}").as_bytes()))] += 1;
        }
        let max = *per.iter().max().unwrap();
        assert!(
            max < STRIPE_SLOTS * 9 / 10,
            "fullest stripe has {max} of 64k keys"
        );
    }
}
