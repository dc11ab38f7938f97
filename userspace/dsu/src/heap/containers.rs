//! Heap containers ([`Box`], [`Vec`], [`String`], [`HashMap`]) over [`SharedHeap`], the
//! [`HeapData`] trait of what they may hold, and [`Mutex`], which lets a global hold them.
//!
//! The containers are `allocator_api2` and `hashbrown` containers with the [`SharedHeap`]
//! allocator, wrapped in `repr(transparent)` newtypes (so that the types, not a caller,
//! decide what may be stored) that dereference to them for the whole of their API.

use super::SharedHeap;
use crate::fingerprint::Fnv;
use crate::{Shared, SharedCell};
use core::cell::UnsafeCell;
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};

/// The versions of the crates whose layouts the containers expose, in their fingerprints:
/// a version that links another (incompatible) release gets another fingerprint.
const ALLOCATOR_API2: &str = "allocator-api2 0.2";
const HASHBROWN: &str = "hashbrown 0.17 + foldhash 0.2 fast::FixedState";

/// A type that may be stored in the shared heap: pointer-free [`Shared`] data, or heap
/// containers of `HeapData`. Never a pointer into a global or a version's private memory:
/// `&T`, raw pointers and std's `Box`, `Vec` and `String` are not `HeapData`.
///
/// ```
/// fn in_heap<T: dsu::heap::HeapData>() {}
/// in_heap::<u64>();
/// in_heap::<[u8; 16]>();
/// in_heap::<dsu::heap::Vec<dsu::heap::String>>();
/// ```
///
/// ```compile_fail
/// fn in_heap<T: dsu::heap::HeapData>() {}
/// in_heap::<std::vec::Vec<u8>>(); // a pointer to private memory
/// ```
///
/// # Safety
///
/// Implementors are `Shared` types, or hold pointers only to blocks of the shared heap
/// ([`SharedHeap`]) that they own, with a layout that does not depend on the build;
/// `FINGERPRINT` changes whenever the layout or meaning does.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in the dsu shared heap",
    note = "the heap holds Shared (pointer-free) data and dsu::heap containers of it; \
            std's Box/Vec/String and references point into one version's private memory"
)]
pub unsafe trait HeapData: Sized + Send {
    /// The layout fingerprint (as [`Shared::FINGERPRINT`]).
    ///
    /// ```
    /// use dsu::heap::HeapData;
    /// assert_ne!(<dsu::heap::Vec<u8> as HeapData>::FINGERPRINT, <dsu::heap::Vec<i8> as HeapData>::FINGERPRINT);
    /// ```
    const FINGERPRINT: u64;
}

// SAFETY: a Shared type holds no pointer at all.
unsafe impl<T: Shared + Send> HeapData for T {
    const FINGERPRINT: u64 = <T as Shared>::FINGERPRINT;
}

/// A value in the shared heap: `allocator_api2`'s `Box` with [`SharedHeap`].
///
/// ```
/// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
/// let b = dsu::heap::Box::new([1u32; 4]);
/// assert_eq!(b[3], 1);
/// ```
#[repr(transparent)]
pub struct Box<T: HeapData>(allocator_api2::boxed::Box<T, SharedHeap>);

impl<T: HeapData> Box<T> {
    /// Moves `value` into the heap.
    ///
    /// # Panics
    ///
    /// Aborts (`handle_alloc_error`) if no heap is installed or it cannot grow.
    ///
    /// ```
    /// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
    /// assert_eq!(*dsu::heap::Box::new(5u8), 5);
    /// ```
    pub fn new(value: T) -> Self {
        Box(allocator_api2::boxed::Box::new_in(value, SharedHeap))
    }

    /// The value, moved out of the heap.
    ///
    /// ```
    /// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
    /// assert_eq!(dsu::heap::Box::new(5u8).into_inner(), 5);
    /// ```
    pub fn into_inner(self) -> T {
        allocator_api2::boxed::Box::into_inner(self.0)
    }

    /// Leaks the box: the value stays in the heap for good (for a
    /// [`Mutex`] that must be `'static` to lock).
    ///
    /// ```
    /// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
    /// let m: &'static dsu::heap::Mutex<u64> = dsu::heap::Box::new(dsu::heap::Mutex::new(1)).leak();
    /// assert_eq!(*m.lock().unwrap(), 1);
    /// ```
    pub fn leak(self) -> &'static mut T {
        allocator_api2::boxed::Box::leak(self.0)
    }
}

impl<T: HeapData> Deref for Box<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: HeapData> DerefMut for Box<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: HeapData + fmt::Debug> fmt::Debug for Box<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: HeapData + Clone> Clone for Box<T> {
    fn clone(&self) -> Self {
        Box::new((**self).clone())
    }
}

// SAFETY: a pointer to an owned heap block holding a HeapData T.
unsafe impl<T: HeapData> HeapData for Box<T> {
    const FINGERPRINT: u64 = Fnv::new()
        .str("dsu::heap::Box")
        .str(ALLOCATOR_API2)
        .u64(size_of::<Self>() as u64)
        .u64(T::FINGERPRINT)
        .finish();
}

// SAFETY: null (None) or an owned heap block: the niche of Box's non-null pointer.
unsafe impl<T: HeapData> HeapData for Option<Box<T>> {
    const FINGERPRINT: u64 = Fnv::new()
        .str("Option")
        .u64(<Box<T> as HeapData>::FINGERPRINT)
        .finish();
}

/// A growable array in the shared heap: `allocator_api2`'s `Vec` with [`SharedHeap`]
/// (its whole API through `Deref`).
///
/// ```
/// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
/// let mut v = dsu::heap::Vec::new();
/// v.extend([1u64, 2, 3]);
/// assert_eq!(v.iter().sum::<u64>(), 6);
/// ```
#[repr(transparent)]
pub struct Vec<T: HeapData>(allocator_api2::vec::Vec<T, SharedHeap>);

impl<T: HeapData> Vec<T> {
    /// An empty vector (no allocation); `const`, for [`global!`](crate::global)
    /// initialisers.
    ///
    /// ```
    /// static EMPTY: dsu::heap::Mutex<dsu::heap::Vec<u32>> = dsu::heap::Mutex::new(dsu::heap::Vec::new());
    /// ```
    pub const fn new() -> Self {
        Vec(allocator_api2::vec::Vec::new_in(SharedHeap))
    }

    /// An empty vector with room for `n` elements.
    ///
    /// ```
    /// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
    /// assert!(dsu::heap::Vec::<u8>::with_capacity(100).capacity() >= 100);
    /// ```
    pub fn with_capacity(n: usize) -> Self {
        Vec(allocator_api2::vec::Vec::with_capacity_in(n, SharedHeap))
    }
}

impl<T: HeapData> Default for Vec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: HeapData> Deref for Vec<T> {
    type Target = allocator_api2::vec::Vec<T, SharedHeap>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T: HeapData> DerefMut for Vec<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<T: HeapData + fmt::Debug> fmt::Debug for Vec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: HeapData + Clone> Clone for Vec<T> {
    fn clone(&self) -> Self {
        Vec(self.0.clone())
    }
}

impl<T: HeapData + PartialEq> PartialEq for Vec<T> {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl<T: HeapData + Eq> Eq for Vec<T> {}

impl<T: HeapData> FromIterator<T> for Vec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v = Vec::new();
        v.extend(iter);
        v
    }
}

// SAFETY: a pointer to an owned heap buffer of HeapData elements, a capacity and a length.
unsafe impl<T: HeapData> HeapData for Vec<T> {
    const FINGERPRINT: u64 = Fnv::new()
        .str("dsu::heap::Vec")
        .str(ALLOCATOR_API2)
        .u64(size_of::<Self>() as u64)
        .u64(T::FINGERPRINT)
        .finish();
}

/// A UTF-8 string in the shared heap (a [`Vec<u8>`] that holds UTF-8; `allocator_api2`
/// has no `String`). Dereferences to `str`.
///
/// ```
/// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
/// let mut s = dsu::heap::String::from("hello");
/// s.push_str(", world");
/// assert_eq!(&*s, "hello, world");
/// ```
#[repr(transparent)]
#[derive(Clone, Default, PartialEq, Eq)]
pub struct String(Vec<u8>);

impl String {
    /// An empty string (no allocation); `const`.
    ///
    /// ```
    /// const S: dsu::heap::String = dsu::heap::String::new();
    /// ```
    pub const fn new() -> Self {
        String(Vec::new())
    }

    /// Appends a string.
    ///
    /// ```
    /// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
    /// let mut s = dsu::heap::String::new();
    /// s.push_str("ab");
    /// assert_eq!(s.len(), 2);
    /// ```
    pub fn push_str(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    /// Appends a character.
    ///
    /// ```
    /// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
    /// let mut s = dsu::heap::String::new();
    /// s.push('é');
    /// assert_eq!(s.as_str(), "é");
    /// ```
    pub fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    /// The string.
    ///
    /// ```
    /// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
    /// assert_eq!(dsu::heap::String::from("x").as_str(), "x");
    /// ```
    pub fn as_str(&self) -> &str {
        // SAFETY: only whole `str`s are appended, and the bytes are never exposed mutably.
        unsafe { core::str::from_utf8_unchecked(&self.0) }
    }

    /// Empties the string (keeps its buffer).
    ///
    /// ```
    /// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
    /// let mut s = dsu::heap::String::from("x");
    /// s.clear();
    /// assert!(s.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

impl From<&str> for String {
    fn from(s: &str) -> Self {
        let mut out = String(Vec::with_capacity(s.len()));
        out.push_str(s);
        out
    }
}

impl Deref for String {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl core::borrow::Borrow<str> for String {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for String {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        // As str, so that a map keyed by String is searched by &str.
        self.as_str().hash(state)
    }
}

impl fmt::Debug for String {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for String {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

// SAFETY: a heap::Vec<u8> holding UTF-8.
unsafe impl HeapData for String {
    const FINGERPRINT: u64 = Fnv::new()
        .str("dsu::heap::String")
        .u64(<Vec<u8> as HeapData>::FINGERPRINT)
        .finish();
}

/// The hasher every [`HashMap`] stores: foldhash's fixed-seed state, so that every
/// version hashes a key alike (a random per-process seed would not find the other
/// version's entries).
pub type HeapHasher = foldhash::fast::FixedState;

/// The seed of [`HashMap::new`]: fixed, so the same in every version. Maps exposed to
/// keys an attacker chooses should pick their own with [`HashMap::with_seed`].
const DEFAULT_SEED: u64 = 0x6473_755f_6865_6170; // "dsu_heap"

/// A hash map in the shared heap: `hashbrown`'s `HashMap` with [`SharedHeap`] and a
/// [`HeapHasher`] stored in the map (its whole API through `Deref`).
///
/// ```
/// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
/// let mut m = dsu::heap::HashMap::new();
/// m.insert(dsu::heap::String::from("k"), 1u64);
/// assert_eq!(m.get("k"), Some(&1));
/// ```
#[repr(transparent)]
pub struct HashMap<K: HeapData, V: HeapData>(hashbrown::HashMap<K, V, HeapHasher, SharedHeap>);

impl<K: HeapData, V: HeapData> HashMap<K, V> {
    /// An empty map with the default fixed seed (no allocation); `const`.
    ///
    /// ```
    /// static M: dsu::heap::Mutex<dsu::heap::HashMap<u64, u64>> = dsu::heap::Mutex::new(dsu::heap::HashMap::new());
    /// ```
    pub const fn new() -> Self {
        Self::with_seed(DEFAULT_SEED)
    }

    /// An empty map whose hasher uses `seed` (stored in the map); `const`.
    ///
    /// ```
    /// # dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
    /// let mut m = dsu::heap::HashMap::<u64, u64>::with_seed(42);
    /// m.insert(1, 2);
    /// ```
    pub const fn with_seed(seed: u64) -> Self {
        HashMap(hashbrown::HashMap::with_hasher_in(
            foldhash::fast::FixedState::with_seed(seed),
            SharedHeap,
        ))
    }
}

impl<K: HeapData, V: HeapData> Default for HashMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: HeapData, V: HeapData> Deref for HashMap<K, V> {
    type Target = hashbrown::HashMap<K, V, HeapHasher, SharedHeap>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<K: HeapData, V: HeapData> DerefMut for HashMap<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<K: HeapData + fmt::Debug, V: HeapData + fmt::Debug> fmt::Debug for HashMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: HeapData + Eq + Hash, V: HeapData> FromIterator<(K, V)> for HashMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = HashMap::new();
        m.extend(iter);
        m
    }
}

// SAFETY: hashbrown's table (a pointer to an owned heap allocation of (K, V) buckets and
// control bytes, and counts) and a FixedState (one u64 seed).
unsafe impl<K: HeapData, V: HeapData> HeapData for HashMap<K, V> {
    const FINGERPRINT: u64 = Fnv::new()
        .str("dsu::heap::HashMap")
        .str(HASHBROWN)
        .str(ALLOCATOR_API2)
        .u64(size_of::<Self>() as u64)
        .u64(K::FINGERPRINT)
        .u64(V::FINGERPRINT)
        .finish();
}

// Keep BuildHasher in use for the docs' sake: HashMap's hasher builds deterministic hashers.
const _: fn(&HeapHasher) -> u64 = |h| h.hash_one(0u64);

/// A lock for heap data shared through a [`global!`](crate::global): a robust,
/// process-shared [`sync::Mutex`](crate::sync::Mutex) whose data is a heap container
/// (or any [`HeapData`]).
///
/// A holder killed while holding it may have left the data half-changed (a `Vec` whose
/// old buffer is freed but whose pointer still names it), which safe code must never see:
/// the lock is then **poisoned** for every version, for good. [`lock`](Self::lock) returns
/// [`Poisoned`]; [`reset`](Self::reset) replaces the data with a fresh value, leaking the
/// old one (its heap blocks stay allocated; leaking is safe, reading them is not).
///
/// Dropping a `Mutex` does not drop its data (a global is never dropped, and a copy of a
/// global's bytes must not free what the global still owns).
///
/// ```
/// use dsu::heap;
/// dsu::global! {
///     static NAMES: heap::Mutex<heap::Vec<heap::String>> = heap::Mutex::new(heap::Vec::new());
/// }
/// heap::install(heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
/// NAMES.lock().unwrap().push(heap::String::from("alice"));
/// assert_eq!(NAMES.lock().unwrap()[0].as_str(), "alice");
/// ```
#[repr(C)]
pub struct Mutex<T> {
    /// The lock, holding the poison flag (0: usable).
    lock: crate::sync::Mutex<u32>,
    data: UnsafeCell<ManuallyDrop<T>>,
}

// SAFETY: the lock serialises access to `data` across threads and processes.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Mutex<T> {}

// SAFETY: repr(C) of a sync::Mutex<u32> and a HeapData value, whose fingerprint covers
// its layout. This is the one Shared type holding pointers, all into the shared heap
// (valid in every version); its bytes are changed only under the lock by this type's
// code, and a holder that died half-way poisons it, so no other bytes are ever read as a
// T. Migrations refuse it (OWNS_HEAP), since a snapshot would be a second owner.
unsafe impl<T: HeapData> Shared for Mutex<T> {
    const FINGERPRINT: u64 = Fnv::new()
        .str("dsu::heap::Mutex")
        .u64(<crate::sync::Mutex<u32> as Shared>::FINGERPRINT)
        .u64(T::FINGERPRINT)
        .finish();
    const OWNS_HEAP: bool = true;
}

// SAFETY: the lock word and flag are atomics/behind the lock; `data` is only reached
// through the lock.
unsafe impl<T: HeapData> SharedCell for Mutex<T> {}

/// The error of [`Mutex::lock`] on a poisoned lock: a holder died while holding it.
///
/// ```
/// let e = dsu::heap::Poisoned { dead_owner: 12 };
/// assert!(e.to_string().contains("reset"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a holder of this dsu::heap::Mutex (thread {dead_owner}, or one before it) died while holding it: its data may be half-changed; call reset() to start again with a new value"
)]
pub struct Poisoned {
    /// The thread id of the holder that died (as its pid namespace numbered it; 0 if the
    /// lock was poisoned earlier).
    pub dead_owner: u32,
}

/// Access to a [`Mutex`]'s data; unlocks on drop.
///
/// ```
/// static M: dsu::heap::Mutex<u64> = dsu::heap::Mutex::new(1);
/// let g: dsu::heap::MutexGuard<'_, u64> = M.lock().unwrap();
/// assert_eq!(*g, 1);
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T> {
    _lock: crate::sync::MutexGuard<'a, u32>,
    data: &'a UnsafeCell<ManuallyDrop<T>>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex; `const`, for [`global!`](crate::global).
    ///
    /// ```
    /// static M: dsu::heap::Mutex<dsu::heap::HashMap<u64, u64>> = dsu::heap::Mutex::new(dsu::heap::HashMap::new());
    /// ```
    pub const fn new(value: T) -> Self {
        Mutex {
            lock: crate::sync::Mutex::new(0),
            data: UnsafeCell::new(ManuallyDrop::new(value)),
        }
    }

    /// Locks (see [`sync::Mutex::lock`](crate::sync::Mutex::lock)).
    ///
    /// # Errors
    ///
    /// [`Poisoned`] if a holder died while holding it, now or before.
    ///
    /// ```
    /// static M: dsu::heap::Mutex<u64> = dsu::heap::Mutex::new(1);
    /// *M.lock().unwrap() += 1;
    /// ```
    pub fn lock(&'static self) -> Result<MutexGuard<'static, T>, Poisoned> {
        let mut g = match self.lock.lock() {
            Ok(g) => g,
            Err(died) => {
                let dead_owner = died.dead_owner();
                let mut g = died.into_inner();
                *g = 1;
                return Err(Poisoned { dead_owner });
            }
        };
        if *g != 0 {
            *g = 1;
            return Err(Poisoned { dead_owner: 0 });
        }
        Ok(MutexGuard {
            _lock: g,
            data: &self.data,
        })
    }

    /// Replaces the data with `value`, whatever its state, and clears the poison. The old
    /// data is leaked, not dropped (it may be half-changed): its heap blocks stay
    /// allocated.
    ///
    /// ```
    /// static M: dsu::heap::Mutex<u64> = dsu::heap::Mutex::new(1);
    /// M.reset(5);
    /// assert_eq!(*M.lock().unwrap(), 5);
    /// ```
    pub fn reset(&'static self, value: T) -> MutexGuard<'static, T> {
        let mut g = self.lock.lock().unwrap_or_else(|died| died.into_inner());
        // SAFETY: the lock is held; the old value is overwritten without being read or
        // dropped.
        unsafe { self.data.get().write(ManuallyDrop::new(value)) };
        *g = 0;
        MutexGuard {
            _lock: g,
            data: &self.data,
        }
    }

    /// Whether the lock is poisoned (racy; for diagnostics).
    ///
    /// ```
    /// static M: dsu::heap::Mutex<u64> = dsu::heap::Mutex::new(1);
    /// assert!(!M.is_poisoned());
    /// ```
    pub fn is_poisoned(&'static self) -> bool {
        match self.lock.try_lock() {
            Some(Ok(g)) => *g != 0,
            Some(Err(died)) => {
                *died.into_inner() = 1;
                true
            }
            None => false,
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock and the data is not poisoned.
        unsafe { &*self.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above.
        unsafe { &mut *self.data.get() }
    }
}

impl<T> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("heap::Mutex")
            .field("owner", &self.lock.owner())
            .finish_non_exhaustive()
    }
}
