//! [`RawHeap`]: the shared heap's allocator, a crash-consistent TLSF over a [`HeapRegion`].
//!
//! # Layout
//!
//! The region starts with a [`Header`] (magic, the robust lock, the TLSF free-list
//! heads and bitmaps, counters, the undo log). Blocks tile `[FIRST_BLOCK, managed_end)`,
//! ending with a 16-byte *sentinel* header of size 0. A block at offset `b` has a 16-byte
//! header (`prev_size`, then `size | flags`) and its payload at `b + 16`; a free block
//! keeps its free-list links (`next`, `prev`, region offsets, 0 = none) in the first 16
//! bytes of its payload. `prev_size` is valid only while the previous block is free
//! (`PREV_FREE`). Two free blocks are never adjacent.
//!
//! # Segregated fits
//!
//! Two-level segregated fits (TLSF, Masmano et al.), as in the `rlsf` crate: free blocks
//! are kept in 16 classes per power of two (exact 16-byte classes below 256 bytes), a
//! first-level bitmap says which powers of two hold free blocks and a second-level bitmap
//! per power which classes do, so that malloc and free are O(1). We took from rlsf the
//! class mapping, the rounding-up search that makes the first block of a class a good fit,
//! and the over-allocate-and-split handling of large alignments. rlsf could not be used as
//! is: its metadata stores are not logged (a process killed inside them leaves a broken
//! heap), it keeps pointers to its own control block (not shared between processes), and it
//! has no notion of a region another process grows.
//!
//! Freed blocks of at most 256 bytes wait unmerged on *fast lists* of their exact size (as
//! glibc's fastbins), so that the common small free and reuse log a handful of words
//! instead of a split or a merge; they return to the segregated lists before the region
//! grows, and in [`RawHeap::trim`].
//!
//! # Crash consistency
//!
//! Every operation runs under one robust process-shared lock
//! ([`sync::Mutex`](crate::sync::Mutex) in the header; the kernel releases it, marked
//! owner-died, when its holder dies). Every metadata word it changes is first recorded in
//! an *undo log* in the header (offset and old value; the entry is written before the log's
//! length is bumped, and the length before the word is changed), and the log is cleared
//! (committed) at the end. The next user that finds the lock's owner dead, or the log not
//! empty (a panic unwound through the lock), rolls the log back in reverse order: the heap
//! is exactly as before the interrupted operation. Rolling back is idempotent, so a death
//! during recovery is recovered again. This follows PMDK's allocator (libpmemobj), which
//! logs its metadata changes (a redo log there, applied after a crash); an undo log suits
//! us better since a killed process's stores are never lost (no power failure to survive),
//! so only the interrupted operation's partial stores need undoing.
//!
//! Only one kind of change is not logged: growth asks the region for memory (a
//! system call) before the logged update that adds the span, and gives pages back after
//! the commit. A span the region has but the heap does not manage yet (`managed_end <
//! size()`, a grower killed in between) is added by the next growth or recovery.
//!
//! # Returning memory
//!
//! A free block may be marked `ZERO`: it then records (in the two words after its links)
//! a page-aligned range of its payload that reads as zero (given back to the system, or
//! never used). After a free, when a block holds at least [`DISCARD_MIN`] bytes of whole
//! pages outside its zero range ("dirty"), those pages are given back
//! ([`HeapRegion::discard`]) and the range grows to all its whole pages; below that
//! threshold a freed block merges with a zero neighbour without a system call (the
//! neighbour's range is kept), so small frees next to a large free span cost nothing and
//! at most `DISCARD_MIN` bytes per free block stay resident. Splitting keeps the range on
//! the free remainder (it only shrinks), and [`RawHeap::allocate_zeroed`] skips the
//! `memset` of the pages it knows to be zero.

use super::region::HeapRegion;
use crate::sync::{Mutex, MutexGuard};
use core::mem::offset_of;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering, compiler_fence};

/// The header's magic: "dsuheap" and a format number.
const MAGIC: u64 = u64::from_le_bytes(*b"dsuheap1");
/// Allocation granularity and payload alignment.
pub const GRANULE: usize = 16;
/// A block's header bytes.
const HDR: u64 = 16;
/// The smallest block: a header and the two free-list links.
const MIN_BLOCK: u64 = 32;
/// Second-level classes per power of two (log2).
const SL_LOG: u32 = 4;
const SL_COUNT: usize = 1 << SL_LOG;
/// Sizes below this have exact 16-byte classes (first level 0).
const SMALL: u64 = (GRANULE * SL_COUNT) as u64;
/// First-level classes: 0 for small sizes, then one per power of two from 2^8 to 2^47.
const FL_COUNT: usize = 41;
/// Undo-log capacity: the longest operation (a reallocation that moves, or a free that
/// merges with both neighbours) logs fewer than 40 words.
const LOG_CAP: usize = 96;
/// A free block's whole pages go back to the system once at least this many bytes of
/// them are not known to be zero already.
pub const DISCARD_MIN: usize = 1 << 20;
/// The first growth step, and the largest: growth doubles the managed size up to this.
const GROW_MIN: u64 = 256 << 10;
const GROW_MAX: u64 = 64 << 20;
const PAGE: u64 = 4096;

/// Flags in the low bits of a block's size word.
const FREE: u64 = 1;
const PREV_FREE: u64 = 2;
/// A free block whose words at `b + 32` and `b + 40` hold a page-aligned range of its
/// payload (region offsets) that reads as zero (discarded or never used).
const ZERO: u64 = 4;
/// A small block freed to its class's fast list: neither allocated nor merged.
const FAST: u64 = 8;
/// The largest block size kept on fast lists (exact classes of 16 bytes).
const FAST_MAX: u64 = 256;
const FAST_CLASSES: usize = (FAST_MAX / 16) as usize + 1;
/// A free block's header, links and zero range.
const FREE_HDR: u64 = 48;
const FLAGS: u64 = 15;

/// The heap's header at the region's base. Every field but `magic`, `lock`, `log_len` and
/// `log` is metadata changed only through the log.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// `size_of::<Header>()` when formatted: a heap of another layout is refused.
    header_size: u64,
    _pad: [u64; 6],
    lock: Mutex<()>,
    managed_end: u64,
    fl_bitmap: u64,
    sl_bitmap: [u64; FL_COUNT],
    heads: [[u64; SL_COUNT]; FL_COUNT],
    allocated_bytes: u64,
    allocated_blocks: u64,
    /// Heads of the fast lists, by block size / 16 (next links at `b + 16`).
    fast: [u64; FAST_CLASSES],
    log_len: u64,
    log: [[u64; 2]; LOG_CAP],
}

/// The offset of the first block: after the header, cache-line aligned.
const FIRST_BLOCK: u64 = (size_of::<Header>() as u64).next_multiple_of(64);
/// The smallest region a heap needs: header, sentinel and a first block.
const MIN_REGION: u64 = FIRST_BLOCK + 4096;

/// Counters of a heap, from [`RawHeap::stats`] or [`RawHeap::check`].
///
/// Block sizes include their 16-byte headers.
///
/// ```
/// let s = dsu::heap::HeapStats::default();
/// assert_eq!(s.allocated_bytes + s.free_bytes, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// The heap's address (the same in every process).
    pub base: usize,
    /// Bytes the region backs now.
    pub size: usize,
    /// Bytes the allocator manages (`size` less any span not yet added).
    pub managed: usize,
    /// Bytes in allocated blocks.
    pub allocated_bytes: usize,
    /// Allocated blocks.
    pub allocated_blocks: usize,
    /// Bytes in free blocks.
    pub free_bytes: usize,
    /// Free blocks.
    pub free_blocks: usize,
    /// The largest free block's size (what one allocation can get without growing).
    pub largest_free: usize,
}

/// What [`RawHeap::check`] found wrong: the offset (from the heap's base) and a
/// description.
///
/// ```
/// let c = dsu::heap::HeapCorruption { offset: 64, what: "overlap".into() };
/// assert!(c.to_string().contains("offset 0x40"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shared heap corrupt at offset {offset:#x}: {what}")]
pub struct HeapCorruption {
    /// Where, from the heap's base.
    pub offset: u64,
    /// What.
    pub what: String,
}

/// One allocated block, from [`RawHeap::allocations`].
///
/// ```
/// let a = dsu::heap::Allocation { ptr: 0x1000, usable: 48 };
/// assert_eq!(a.ptr + a.usable, 0x1030);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Allocation {
    /// The payload's address (what allocate returned).
    pub ptr: usize,
    /// Usable bytes from `ptr`.
    pub usable: usize,
}

/// The shared heap's allocator: a process-local handle on the heap that lives in a
/// [`HeapRegion`] (its header in the region's first pages).
///
/// Any number of processes and threads may use the same heap at once; every address it
/// returns is an ordinary pointer, valid in every process that maps the region (at the
/// same address). A process killed (even by `SIGKILL`) inside any call leaves a heap the
/// next call recovers; at most the block that killed call was allocating or freeing is
/// lost. Not async-signal-safe: do not call it from a signal handler that may interrupt
/// a call on the same thread (the lock would be taken recursively, which panics).
///
/// ```
/// use dsu::heap::{MemfdRegion, RawHeap};
/// let region = MemfdRegion::new(1 << 30).unwrap().leak();
/// let heap = RawHeap::open(region).unwrap();
/// let p = heap.allocate(100, 8).unwrap();
/// // SAFETY: 100 bytes were allocated.
/// unsafe { p.as_ptr().write_bytes(7, 100) };
/// assert_eq!(heap.stats().allocated_blocks, 1);
/// // SAFETY: p came from this heap and is not used after.
/// unsafe { heap.deallocate(p) };
/// heap.check().unwrap();
/// ```
pub struct RawHeap {
    region: &'static dyn HeapRegion,
    base: *mut u8,
}

// SAFETY: the handle holds a 'static region (Send + Sync) and its base; all shared state
// is in the region, behind the lock.
unsafe impl Send for RawHeap {}
// SAFETY: as above.
unsafe impl Sync for RawHeap {}

impl std::fmt::Debug for RawHeap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawHeap")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// First- and second-level class of a block size (a multiple of 16).
#[inline]
fn mapping(size: u64) -> (usize, usize) {
    if size < SMALL {
        (0, (size / GRANULE as u64) as usize)
    } else {
        let l = 63 - size.leading_zeros();
        (
            (l - 7) as usize,
            ((size >> (l - SL_LOG)) as usize) - SL_COUNT,
        )
    }
}

/// The dirty bytes (whole pages not known to be zero) a free block must hold before they
/// go back to the system: [`DISCARD_MIN`], or 1/64 of the managed span in a larger heap
/// (so that a growing table's freed predecessors are not given back and faulted in again
/// at every doubling; at most 1/64 of the heap per free block stays resident).
#[inline]
fn discard_threshold(managed: u64) -> u64 {
    (DISCARD_MIN as u64).max(managed / 64)
}

/// The whole pages of a free block at `b` of `size` past its header, links and zero
/// range words: the most a zero range can cover (empty: `(0, 0)`).
#[inline]
fn interior(b: u64, size: u64) -> (u64, u64) {
    let lo = (b + FREE_HDR).next_multiple_of(PAGE);
    let hi = (b + size) / PAGE * PAGE;
    if lo < hi { (lo, hi) } else { (0, 0) }
}

/// `r` clipped to `[lo, hi)` (empty: `(0, 0)`).
#[inline]
fn clip(r: (u64, u64), (lo, hi): (u64, u64)) -> (u64, u64) {
    let (a, b) = (r.0.max(lo), r.1.min(hi));
    if a < b { (a, b) } else { (0, 0) }
}

/// The block size serving `size` bytes.
#[inline]
fn block_size(size: usize) -> Option<u64> {
    let s = (size as u64).checked_add(HDR + GRANULE as u64 - 1)? & !(GRANULE as u64 - 1);
    Some(s.max(MIN_BLOCK))
}

/// The lock held, and the operation in progress (its undo log).
struct Locked<'h> {
    heap: &'h RawHeap,
    /// `None` while formatting (the opener holds the guard).
    _guard: Option<MutexGuard<'static, ()>>,
    /// The undo log's length, as stored in the header: kept here too so that appending
    /// never waits for a load of the length just stored.
    log_len: core::cell::Cell<u64>,
}

impl RawHeap {
    /// Opens the heap in `region`, formatting it if it holds none yet (a region whose first
    /// bytes are zero). Any process may open it first; concurrent openers agree (the
    /// format runs under the heap's lock).
    ///
    /// # Errors
    ///
    /// [`Error::Heap`](crate::Error::Heap) if the region holds something else (another
    /// format) or is too small; the region's error if it cannot grow to hold the header.
    ///
    /// ```
    /// use dsu::heap::{MemfdRegion, RawHeap};
    /// let region = MemfdRegion::new(64 << 20).unwrap().leak();
    /// let a = RawHeap::open(region).unwrap();
    /// let b = RawHeap::open(region).unwrap(); // the same heap
    /// let p = a.allocate(10, 1).unwrap();
    /// // SAFETY: allocated by a, the same heap as b.
    /// unsafe { b.deallocate(p) };
    /// ```
    pub fn open(region: &'static dyn HeapRegion) -> crate::Result<RawHeap> {
        let base = region.base();
        if (base as usize) % PAGE as usize != 0 || region.reserve() < MIN_REGION as usize {
            return Err(crate::Error::Heap(format!(
                "the heap region at {base:p} ({} bytes) is not page-aligned or smaller than {MIN_REGION} bytes",
                region.reserve()
            )));
        }
        if region.size() < MIN_REGION as usize {
            region.grow(MIN_REGION as usize)?;
        }
        let heap = RawHeap { region, base };
        let header = heap.header();
        // SAFETY: the header's pages are backed.
        let magic = unsafe { &(*header).magic };
        let found = magic.load(Ordering::Acquire);
        if found != MAGIC && found != 0 {
            return Err(crate::Error::Heap(format!(
                "the region at {base:p} holds something other than a dsu heap (magic {found:#x})"
            )));
        }
        if found != MAGIC {
            // SAFETY: the header's pages are backed; a zeroed Mutex is an unlocked one.
            let lock: &'static Mutex<()> = unsafe { &*core::ptr::addr_of!((*header).lock) };
            let guard = lock.lock().unwrap_or_else(|died| died.into_inner());
            if magic.load(Ordering::Acquire) != MAGIC {
                heap.format()?;
            }
            drop(guard);
        }
        if heap.word(offset_of!(Header, header_size) as u64) != size_of::<Header>() as u64 {
            return Err(crate::Error::Heap(format!(
                "the heap at {base:p} was formatted by another version of the dsu library (header of {} bytes, this one has {})",
                heap.word(offset_of!(Header, header_size) as u64),
                size_of::<Header>()
            )));
        }
        Ok(heap)
    }

    /// Writes an empty heap (lock held, magic not set): header, sentinel, then the
    /// region's backed bytes as one free block. Idempotent: a formatter killed half-way
    /// leaves no magic, and the next opener formats again.
    fn format(&self) -> crate::Result<()> {
        let h = self.header_mut();
        // A formatter killed inside its first extension leaves its log: undo it, so that
        // the pages past the new managed end read as zero again (the extension claims so).
        Locked {
            heap: self,
            _guard: None,
            log_len: core::cell::Cell::new(0),
        }
        .rollback();
        // SAFETY: the header's pages are backed and nobody uses the heap before the magic.
        unsafe {
            (*h).header_size = size_of::<Header>() as u64;
            (*h).managed_end = FIRST_BLOCK + HDR;
            (*h).fl_bitmap = 0;
            (*h).sl_bitmap = [0; FL_COUNT];
            (*h).heads = [[0; SL_COUNT]; FL_COUNT];
            (*h).allocated_bytes = 0;
            (*h).allocated_blocks = 0;
            (*h).fast = [0; FAST_CLASSES];
            (*h).log_len = 0;
        }
        self.set_word(FIRST_BLOCK, 0);
        self.set_word(FIRST_BLOCK + 8, 0);
        let l = Locked {
            heap: self,
            _guard: None,
            log_len: core::cell::Cell::new(0),
        };
        l.reclaim();
        l.commit();
        // SAFETY: as above.
        unsafe { (*h).magic.store(MAGIC, Ordering::Release) };
        Ok(())
    }

    /// The region this heap lives in.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let region = MemfdRegion::new(64 << 20).unwrap().leak();
    /// let heap = RawHeap::open(region).unwrap();
    /// assert_eq!(heap.region().base(), heap.base());
    /// ```
    pub fn region(&self) -> &'static dyn HeapRegion {
        self.region
    }

    /// The heap's address: every pointer it returns lies in `[base, base + reserve)`.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let p = heap.allocate(1, 1).unwrap();
    /// assert!(heap.contains(p.as_ptr()));
    /// assert!(p.as_ptr() as usize > heap.base() as usize);
    /// ```
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Whether `ptr` lies in the heap's reserved window.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// assert!(!heap.contains(&0u8 as *const u8));
    /// ```
    pub fn contains(&self, ptr: *const u8) -> bool {
        let a = ptr as usize;
        a >= self.base as usize && a < self.base as usize + self.region.reserve()
    }

    fn header(&self) -> *const Header {
        self.base.cast()
    }

    fn header_mut(&self) -> *mut Header {
        self.base.cast()
    }

    /// The metadata word at region offset `off`.
    #[inline(always)]
    fn word(&self, off: u64) -> u64 {
        // SAFETY: callers pass offsets of header fields or block headers in the managed,
        // backed part of the region, 8-aligned.
        unsafe { self.base.add(off as usize).cast::<u64>().read() }
    }

    #[inline(always)]
    fn set_word(&self, off: u64, v: u64) {
        // SAFETY: as in `word`; the lock is held.
        unsafe { self.base.add(off as usize).cast::<u64>().write(v) }
    }

    /// Takes the lock, recovering from a holder that died or an operation that unwound.
    fn lock(&self) -> Locked<'_> {
        // SAFETY: the header lives as long as the region ('static) and a zeroed Mutex is
        // an unlocked one.
        let lock: &'static Mutex<()> = unsafe { &*core::ptr::addr_of!((*self.header()).lock) };
        let (guard, died) = match lock.lock() {
            Ok(g) => (g, false),
            Err(d) => (d.into_inner(), true),
        };
        let l = Locked {
            heap: self,
            _guard: Some(guard),
            log_len: core::cell::Cell::new(self.word(LOG_LEN)),
        };
        if died || self.word(LOG_LEN) != 0 {
            l.recover();
        }
        l
    }

    /// Allocates `size` bytes aligned to `align` (a power of two), growing the region if
    /// needed. `None` when the region cannot grow enough (or `align` is not a power of two).
    /// The memory is uninitialised.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let p = heap.allocate(10, 4096).unwrap();
    /// assert_eq!(p.as_ptr() as usize % 4096, 0);
    /// assert!(heap.allocate(1 << 40, 8).is_none());
    /// ```
    #[must_use = "the block leaks if the pointer is dropped"]
    pub fn allocate(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let l = self.lock();
        let (b, _) = l.malloc(size, align)?;
        l.commit();
        Some(self.payload(b))
    }

    /// As [`allocate`](Self::allocate), but the memory reads as zero. Pages the heap knows
    /// to be zero (given back to the system since their last use) are not written.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let p = heap.allocate_zeroed(1000, 8).unwrap();
    /// // SAFETY: 1000 initialised bytes.
    /// assert!(unsafe { std::slice::from_raw_parts(p.as_ptr(), 1000) }.iter().all(|&b| b == 0));
    /// ```
    #[must_use = "the block leaks if the pointer is dropped"]
    pub fn allocate_zeroed(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let l = self.lock();
        let (b, (zlo, zhi)) = l.malloc(size, align)?;
        l.commit();
        drop(l);
        let p = b + HDR;
        let end = p + size as u64;
        let (zlo, zhi) = (zlo.clamp(p, end), zhi.clamp(p, end));
        // SAFETY: [p, end) is the new block's payload; the ranges outside the known-zero
        // one are cleared.
        unsafe {
            if zlo < zhi {
                self.base.add(p as usize).write_bytes(0, (zlo - p) as usize);
                self.base
                    .add(zhi as usize)
                    .write_bytes(0, (end - zhi) as usize);
            } else {
                self.base.add(p as usize).write_bytes(0, size);
            }
        }
        Some(self.payload(b))
    }

    /// Frees a block.
    ///
    /// # Safety
    ///
    /// `ptr` was returned by this heap (in any process) and not freed since, and nothing
    /// uses the block after.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let p = heap.allocate(10, 1).unwrap();
    /// // SAFETY: allocated above, not used after.
    /// unsafe { heap.deallocate(p) };
    /// assert_eq!(heap.stats().allocated_blocks, 0);
    /// ```
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>) {
        let b = self.block_of(ptr);
        let l = self.lock();
        if l.free_fast(b) {
            l.commit();
            return;
        }
        let merged = l.free(b);
        l.commit();
        l.give_back(merged);
    }

    /// Resizes a block to `new_size` bytes, in place if it can, else by moving it (to an
    /// address aligned to `align`). `None` if no memory: the block is left as it was.
    ///
    /// # Safety
    ///
    /// `ptr` was returned by this heap with an alignment of at most `align`, and is not
    /// freed; on success it must no longer be used (use the result).
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let p = heap.allocate(4, 1).unwrap();
    /// // SAFETY: 4 bytes allocated.
    /// unsafe { p.as_ptr().copy_from(b"abcd".as_ptr(), 4) };
    /// // SAFETY: p is live and aligned to 1.
    /// let q = unsafe { heap.reallocate(p, 10_000, 1) }.unwrap();
    /// // SAFETY: the first 4 bytes were kept.
    /// assert_eq!(unsafe { std::slice::from_raw_parts(q.as_ptr(), 4) }, b"abcd");
    /// ```
    #[must_use = "the old pointer is invalid after a successful call"]
    pub unsafe fn reallocate(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        let b = self.block_of(ptr);
        let need = block_size(new_size)?;
        let l = self.lock();
        if let Some(merged) = l.resize_in_place(b, need) {
            l.commit();
            l.give_back(merged);
            return Some(ptr);
        }
        // Moves: allocate and commit, copy, then free and commit. A death in between
        // loses the new block only (the call's own block).
        let (nb, _) = l.malloc(new_size, align)?;
        l.commit();
        let old_usable = (l.size_of(b) - HDR) as usize;
        // SAFETY: two distinct live blocks; the copy stays within both payloads.
        unsafe {
            self.base
                .add((nb + HDR) as usize)
                .copy_from_nonoverlapping(ptr.as_ptr(), old_usable.min(new_size))
        };
        let merged = l.free(b);
        l.commit();
        l.give_back(merged);
        Some(self.payload(nb))
    }

    /// The usable size of a block (at least what was asked for).
    ///
    /// # Safety
    ///
    /// `ptr` was returned by this heap and is not freed.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let p = heap.allocate(10, 1).unwrap();
    /// // SAFETY: live block.
    /// assert!(unsafe { heap.usable_size(p) } >= 10);
    /// ```
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        // An allocated block's size word changes only under the owner's own calls.
        (self.word(self.block_of(ptr) + 8) & !FLAGS) as usize - HDR as usize
    }

    fn block_of(&self, ptr: NonNull<u8>) -> u64 {
        (ptr.as_ptr() as usize - self.base as usize) as u64 - HDR
    }

    fn payload(&self, b: u64) -> NonNull<u8> {
        // SAFETY: b + HDR is inside the region, whose base is not null.
        unsafe { NonNull::new_unchecked(self.base.add((b + HDR) as usize)) }
    }

    /// The heap's counters, taken under the lock (O(free blocks): it walks the free
    /// lists for `free_blocks` and `largest_free`). Small blocks waiting on fast lists
    /// count as free.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let s = heap.stats();
    /// assert_eq!(s.allocated_bytes, 0);
    /// assert!(s.largest_free > 0 && s.largest_free <= s.free_bytes);
    /// ```
    pub fn stats(&self) -> HeapStats {
        let _l = self.lock();
        let mut read = |off: u64| Some(self.word(off));
        walk_stats(&mut read, self.base as usize, self.region.size(), u64::MAX)
            .expect("a locked, consistent heap's counters")
    }

    /// Bytes in allocated blocks (headers included), read without the lock: O(1), for a
    /// caller that checks a memory limit on every request (a server's `maxmemory`), where
    /// [`stats`](Self::stats)'s walk would be too slow. Exact when no call is under way;
    /// during one, the value before or after it.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let p = heap.allocate(1000, 16).unwrap();
    /// assert_eq!(heap.allocated_bytes(), heap.stats().allocated_bytes);
    /// assert!(heap.allocated_bytes() >= 1000);
    /// ```
    pub fn allocated_bytes(&self) -> usize {
        // SAFETY: the header's field, 8-aligned, in the region's first page (always
        // backed); a relaxed atomic load, since other threads and processes write it.
        let word = unsafe { &*(&raw const (*self.header()).allocated_bytes).cast::<AtomicU64>() };
        word.load(Ordering::Relaxed) as usize
    }

    /// Returns the small blocks waiting on fast lists to the segregated lists, merging
    /// them with their free neighbours (and giving back the pages of large merged blocks),
    /// as `malloc_trim` does. Allocation does it by itself before growing the region.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let p = heap.allocate(24, 8).unwrap();
    /// // SAFETY: live block.
    /// unsafe { heap.deallocate(p) };
    /// heap.trim();
    /// assert_eq!(heap.stats().free_blocks, 1);
    /// ```
    pub fn trim(&self) {
        let l = self.lock();
        l.consolidate();
    }

    /// Checks the whole heap under its lock (after recovering it if its last user died):
    /// the blocks tile the managed span, no two free blocks are adjacent, every flag and
    /// `prev_size` matches its neighbour, every free block is in exactly the list of its
    /// class and every listed block is free, the bitmaps match the lists, and the counters
    /// match the blocks. O(blocks).
    ///
    /// # Errors
    ///
    /// The first inconsistency found.
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let _p = heap.allocate(100, 8).unwrap();
    /// let stats = heap.check().unwrap();
    /// assert_eq!(stats.allocated_blocks, 1);
    /// ```
    pub fn check(&self) -> Result<HeapStats, HeapCorruption> {
        let l = self.lock();
        l.check(&mut |_, _| {})
    }

    /// Every allocated block, in address order (checked as [`check`](Self::check) does).
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check).
    ///
    /// ```
    /// # use dsu::heap::{MemfdRegion, RawHeap};
    /// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    /// let p = heap.allocate(100, 8).unwrap();
    /// let all = heap.allocations().unwrap();
    /// assert_eq!(all.len(), 1);
    /// assert_eq!(all[0].ptr, p.as_ptr() as usize);
    /// ```
    pub fn allocations(&self) -> Result<Vec<Allocation>, HeapCorruption> {
        let l = self.lock();
        let mut out = Vec::new();
        let base = self.base as usize;
        l.check(&mut |b, size| {
            out.push(Allocation {
                ptr: base + (b + HDR) as usize,
                usable: (size - HDR) as usize,
            })
        })?;
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) fn test_mapping(size: u64) -> (usize, usize) {
    mapping(size)
}

#[cfg(any(test, feature = "heap-testing"))]
impl RawHeap {
    /// Reads every free block's zero range: all bytes must be zero (this faults the
    /// discarded pages back in: for tests only).
    pub fn check_zero_ranges(&self) -> Result<(), HeapCorruption> {
        let _l = self.lock();
        let end = self.word(MANAGED_END);
        let mut b = FIRST_BLOCK;
        while b + HDR < end {
            let sw = self.word(b + 8);
            if sw & (FREE | ZERO) == FREE | ZERO {
                let (lo, hi) = (self.word(b + 32), self.word(b + 40));
                // SAFETY: inside a free block of the managed span.
                let bytes = unsafe {
                    std::slice::from_raw_parts(self.base.add(lo as usize), (hi - lo) as usize)
                };
                if let Some(i) = bytes.iter().position(|&x| x != 0) {
                    return Err(HeapCorruption {
                        offset: lo + i as u64,
                        what: format!("non-zero byte in the zero range of free block {b:#x}"),
                    });
                }
            }
            b += sw & !FLAGS;
        }
        Ok(())
    }

    /// The undo log's length, read without the lock (after a kill, before recovery).
    pub fn pending_log_len(&self) -> u64 {
        self.word(LOG_LEN)
    }
}

/// Counters of the heap whose words `read` returns (by region offset; `None`: cannot be
/// read): [`RawHeap::stats`] under the lock, and [`stats_from_bytes`] on a copy. `limit`
/// bounds the offsets and the free-list lengths, so that a torn or corrupt copy gives
/// `None` instead of a wrong walk or an endless one.
fn walk_stats(
    read: &mut dyn FnMut(u64) -> Option<u64>,
    base: usize,
    size: usize,
    limit: u64,
) -> Option<HeapStats> {
    let (mut largest, mut free_blocks) = (0u64, 0u64);
    let block = |b: u64| (b % GRANULE as u64 == 0 && b >= FIRST_BLOCK && b < limit).then_some(b);
    let fl_map = read(FL_BITMAP)?;
    for fl in 0..FL_COUNT {
        if fl_map >> fl & 1 == 0 {
            continue;
        }
        let sl_map = read(sl_bitmap(fl))?;
        for sl in 0..SL_COUNT {
            if sl_map >> sl & 1 == 0 {
                continue;
            }
            let mut b = read(head(fl, sl))?;
            while b != 0 {
                let b_ok = block(b)?;
                largest = largest.max(read(b_ok + 8)? & !FLAGS);
                free_blocks += 1;
                if free_blocks > limit / MIN_BLOCK {
                    return None;
                }
                b = read(b_ok + 16)?;
            }
        }
    }
    for class in 0..FAST_CLASSES as u64 {
        let mut b = read(fast_head(class))?;
        while b != 0 {
            free_blocks += 1;
            if free_blocks > limit / MIN_BLOCK {
                return None;
            }
            b = read(block(b)? + 16)?;
        }
    }
    let managed = read(MANAGED_END)?;
    let allocated = read(ALLOCATED_BYTES)?;
    Some(HeapStats {
        base,
        size,
        managed: managed as usize,
        allocated_bytes: allocated as usize,
        allocated_blocks: read(ALLOCATED_BLOCKS)? as usize,
        // The blocks tile [FIRST_BLOCK, managed - HDR).
        free_bytes: managed.checked_sub(HDR + FIRST_BLOCK + allocated)? as usize,
        free_blocks: free_blocks as usize,
        largest_free: largest as usize,
    })
}

/// The counters of a heap read from outside, without its lock (e.g. `dsuctl show`, which
/// reads a segment's heap with `DSU_IOC_READ_HEAP`): `read(offset, buf)` fills `buf` with
/// the heap's bytes at `offset` (from its base) and returns whether it could; `base` and
/// `size` are the heap's address and backed bytes. The walk is [`RawHeap::stats`]'s own.
///
/// Since no lock is held, a heap that another process changes meanwhile may give a torn
/// copy: the counters are then approximate, and a walk that leaves the heap or loops
/// gives `None` (read again). `None` too if the bytes are not a dsu heap of this format.
///
/// ```
/// use dsu::heap::{MemfdRegion, RawHeap, stats_from_bytes};
/// let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
/// let _p = heap.allocate(100, 8).unwrap();
/// let base = heap.base();
/// let size = heap.stats().size;
/// let copy = stats_from_bytes(base as usize, size, |off, buf| {
///     // SAFETY: the backed part of the heap, read as bytes (a test; no other user).
///     let src = unsafe { std::slice::from_raw_parts(base.add(off as usize), buf.len()) };
///     buf.copy_from_slice(src);
///     true
/// })
/// .unwrap();
/// assert_eq!(copy, heap.stats());
/// ```
pub fn stats_from_bytes(
    base: usize,
    size: usize,
    mut read: impl FnMut(u64, &mut [u8]) -> bool,
) -> Option<HeapStats> {
    let limit = size as u64;
    let mut word = |off: u64| {
        if off % 8 != 0 || off.checked_add(8)? > limit {
            return None;
        }
        let mut b = [0u8; 8];
        read(off, &mut b).then(|| u64::from_ne_bytes(b))
    };
    if word(offset_of!(Header, magic) as u64)? != MAGIC
        || word(offset_of!(Header, header_size) as u64)? != size_of::<Header>() as u64
    {
        return None;
    }
    walk_stats(&mut word, base, size, limit)
}

const MANAGED_END: u64 = offset_of!(Header, managed_end) as u64;
const FL_BITMAP: u64 = offset_of!(Header, fl_bitmap) as u64;
const ALLOCATED_BYTES: u64 = offset_of!(Header, allocated_bytes) as u64;
const ALLOCATED_BLOCKS: u64 = offset_of!(Header, allocated_blocks) as u64;
const LOG_LEN: u64 = offset_of!(Header, log_len) as u64;
const LOG: u64 = offset_of!(Header, log) as u64;

#[inline(always)]
fn sl_bitmap(fl: usize) -> u64 {
    offset_of!(Header, sl_bitmap) as u64 + 8 * fl as u64
}

#[inline(always)]
fn fast_head(class: u64) -> u64 {
    offset_of!(Header, fast) as u64 + 8 * class
}

#[inline(always)]
fn head(fl: usize, sl: usize) -> u64 {
    offset_of!(Header, heads) as u64 + 8 * (fl * SL_COUNT + sl) as u64
}

/// A free block made by a free (after merging), with the known-zero ranges of the free
/// neighbours it absorbed, for [`Locked::give_back`].
#[derive(Clone, Copy, Default)]
struct Merged {
    block: u64,
    size: u64,
    zero: [(u64, u64); 2],
}

impl Locked<'_> {
    #[inline(always)]
    fn w(&self, off: u64) -> u64 {
        self.heap.word(off)
    }

    #[inline(always)]
    fn size_of(&self, b: u64) -> u64 {
        self.w(b + 8) & !FLAGS
    }

    /// Records the old value of the word at `off` in the undo log, then stores `v`.
    #[inline(always)]
    fn set(&self, off: u64, v: u64) {
        let old = self.w(off);
        if old == v {
            return;
        }
        self.log_and_store(off, old, v);
    }

    /// As [`set`](Self::set) for a word of a free block's payload that is no metadata
    /// before this operation (past the block's header, links and zero range): its old
    /// value does not matter, except inside a zero range, where it is 0. So 0 is logged
    /// without reading the word (a cache miss, often a page never touched).
    #[inline(always)]
    fn set_fresh(&self, off: u64, v: u64) {
        self.log_and_store(off, 0, v);
    }

    #[inline(always)]
    fn log_and_store(&self, off: u64, old: u64, v: u64) {
        let n = self.log_len.get();
        assert!(
            (n as usize) < LOG_CAP,
            "dsu heap: undo log overflow (a bug in dsu::heap)"
        );
        let e = self
            .heap
            .base
            .wrapping_add((LOG + 16 * n) as usize)
            .cast::<u64>();
        let len = self.heap.base.wrapping_add(LOG_LEN as usize).cast::<u64>();
        let word = self.heap.base.wrapping_add(off as usize).cast::<u64>();
        // SAFETY: the log entry, its length and the word are in the header or the
        // managed blocks; the lock is held. Volatile stores with compiler fences keep
        // program order: entry, then length, then the word, so a death between any two
        // leaves a log that undoes exactly what was stored.
        unsafe {
            e.write_volatile(off);
            e.add(1).write_volatile(old);
            compiler_fence(Ordering::SeqCst);
            len.write_volatile(n + 1);
            self.log_len.set(n + 1);
            compiler_fence(Ordering::SeqCst);
            word.write_volatile(v);
        }
    }

    /// Ends the operation: its changes stay.
    #[inline(always)]
    fn commit(&self) {
        compiler_fence(Ordering::SeqCst);
        let len = self.heap.base.wrapping_add(LOG_LEN as usize).cast::<u64>();
        // SAFETY: the header's log length; the lock is held.
        unsafe { len.write_volatile(0) };
        self.log_len.set(0);
        compiler_fence(Ordering::SeqCst);
    }

    /// Undoes the interrupted operation (in reverse order), then adds any span the region
    /// has but the heap does not manage yet.
    #[cold]
    fn recover(&self) {
        self.rollback();
        self.reclaim();
        self.commit();
    }

    /// Undoes the logged stores of an interrupted operation, newest first.
    #[cold]
    fn rollback(&self) {
        let n = (self.w(LOG_LEN) as usize).min(LOG_CAP);
        let reserve = self.heap.region.reserve() as u64;
        for i in (0..n as u64).rev() {
            let off = self.w(LOG + 16 * i);
            let old = self.w(LOG + 16 * i + 8);
            // Our own log: a bad offset means the header was overwritten by someone else.
            if off % 8 == 0 && off + 8 <= reserve {
                self.heap.set_word(off, old);
            }
        }
        self.commit();
    }

    /// Adds `[managed_end, size())` to the heap if the region holds such a span (a grower
    /// that died after growing the region).
    fn reclaim(&self) {
        let size = (self.heap.region.size().min(self.heap.region.reserve()) as u64)
            & !(GRANULE as u64 - 1);
        if size >= self.w(MANAGED_END) + MIN_BLOCK {
            self.extend(size);
        }
    }

    /// The zero range of free block `b` whose size word is `sw` (`(0, 0)` if none).
    #[inline(always)]
    fn zero_of(&self, b: u64, sw: u64) -> (u64, u64) {
        if sw & ZERO != 0 {
            (self.w(b + 32), self.w(b + 40))
        } else {
            (0, 0)
        }
    }

    /// Records `range`, clipped to the block's interior, as free block `b`'s zero range;
    /// returns the flag for its size word (0 if nothing is left of the range).
    #[inline(always)]
    fn set_zero(&self, b: u64, size: u64, range: (u64, u64)) -> u64 {
        self.set_zero_as(b, size, range, false)
    }

    /// [`set_zero`](Self::set_zero), with [`set_fresh`](Self::set_fresh) stores if
    /// `fresh` (a new block's words that were no metadata before).
    #[inline(always)]
    fn set_zero_as(&self, b: u64, size: u64, range: (u64, u64), fresh: bool) -> u64 {
        let (lo, hi) = clip(range, interior(b, size));
        if lo == hi {
            return 0;
        }
        if fresh {
            self.set_fresh(b + 32, lo);
            self.set_fresh(b + 40, hi);
        } else {
            self.set(b + 32, lo);
            self.set(b + 40, hi);
        }
        ZERO
    }

    /// Makes `[managed_end, new_end)` a free block (merged with a free last block) and
    /// moves the sentinel to the new end.
    fn extend(&self, new_end: u64) {
        let end = self.w(MANAGED_END);
        let s = end - HDR;
        let (mut m, mut msize) = (s, new_end - end);
        // Pages past the managed end were never used (a rolled-back extension restored
        // the few words it wrote to zero): they read as zero. Merged with a free last
        // block, the larger of the two ranges is kept (the old sentinel lies between).
        let mut zero = (end.next_multiple_of(PAGE), new_end);
        if self.w(s + 8) & PREV_FREE != 0 {
            let p = s - self.w(s);
            let psw = self.w(p + 8);
            let psize = psw & !FLAGS;
            let pz = self.zero_of(p, psw);
            if pz.1 - pz.0 > zero.1.saturating_sub(zero.0) {
                zero = pz;
            }
            self.remove(p, psize);
            m = p;
            msize += psize;
        }
        let flag = self.set_zero(m, msize, zero);
        self.set(m + 8, msize | FREE | flag);
        let sentinel = new_end - HDR;
        self.set(sentinel, msize);
        self.set(sentinel + 8, PREV_FREE);
        self.set(MANAGED_END, new_end);
        self.insert(m, msize);
    }

    /// Grows the region so that a block of `need` bytes fits.
    #[cold]
    fn grow(&self, need: u64) -> Option<()> {
        self.reclaim();
        if self.find(need).is_some() {
            return Some(());
        }
        // `find` rounds a request up to the next class boundary: the new block must
        // reach it (and may merge with a free last block, which only helps).
        let need = if need >= SMALL {
            need.checked_add(1 << (63 - need.leading_zeros() - SL_LOG))?
        } else {
            need
        };
        let end = self.w(MANAGED_END);
        let reserve = self.heap.region.reserve() as u64 & !(PAGE - 1);
        if need >= reserve {
            return None;
        }
        let least = (end + need + HDR).next_multiple_of(PAGE);
        if least > reserve {
            return None;
        }
        let step = end.clamp(GROW_MIN, GROW_MAX);
        let target = (end + step).next_multiple_of(PAGE).clamp(least, reserve);
        let got = match self.heap.region.grow(target as usize) {
            Ok(got) => got as u64,
            // The amortised step may pass a limit the request itself does not.
            Err(_) if target > least => self.heap.region.grow(least as usize).ok()? as u64,
            Err(_) => return None,
        };
        let new_end = got.min(reserve) & !(GRANULE as u64 - 1);
        if new_end < end + MIN_BLOCK {
            return None;
        }
        self.extend(new_end);
        Some(())
    }

    /// Links a free block (size word already written) into its class's list.
    #[inline(always)]
    fn insert(&self, b: u64, size: u64) {
        self.insert_as(b, size, false)
    }

    /// [`insert`](Self::insert), with fresh link stores if `fresh`.
    #[inline(always)]
    fn insert_as(&self, b: u64, size: u64, fresh: bool) {
        let (fl, sl) = mapping(size);
        let h = head(fl, sl);
        let first = self.w(h);
        if fresh {
            self.set_fresh(b + 16, first);
            self.set_fresh(b + 24, 0);
        } else {
            self.set(b + 16, first);
            self.set(b + 24, 0);
        }
        if first != 0 {
            self.set(first + 24, b);
        }
        self.set(h, b);
        self.set(FL_BITMAP, self.w(FL_BITMAP) | 1 << fl);
        self.set(sl_bitmap(fl), self.w(sl_bitmap(fl)) | 1 << sl);
    }

    /// Unlinks a free block from its class's list.
    #[inline(always)]
    fn remove(&self, b: u64, size: u64) {
        let (fl, sl) = mapping(size);
        let next = self.w(b + 16);
        let prev = self.w(b + 24);
        if next != 0 {
            self.set(next + 24, prev);
        }
        if prev != 0 {
            self.set(prev + 16, next);
        } else {
            self.set(head(fl, sl), next);
            if next == 0 {
                let slm = self.w(sl_bitmap(fl)) & !(1 << sl);
                self.set(sl_bitmap(fl), slm);
                if slm == 0 {
                    self.set(FL_BITMAP, self.w(FL_BITMAP) & !(1 << fl));
                }
            }
        }
    }

    /// A free block of at least `size` bytes: the first of the first non-empty class whose
    /// every block fits (sizes rounded up to the next class boundary, as TLSF does).
    #[inline(always)]
    fn find(&self, size: u64) -> Option<u64> {
        let (mut fl, sl) = if size >= SMALL {
            if size >= 1 << 47 {
                return None;
            }
            let l = 63 - size.leading_zeros();
            mapping(size + (1 << (l - SL_LOG)) - 1)
        } else {
            mapping(size)
        };
        if fl >= FL_COUNT {
            return None;
        }
        let mut sl_map = self.w(sl_bitmap(fl)) & (!0u64 << sl);
        if sl_map == 0 {
            let fl_map = self.w(FL_BITMAP) & (!0u64).checked_shl(fl as u32 + 1).unwrap_or(0);
            if fl_map == 0 {
                return None;
            }
            fl = fl_map.trailing_zeros() as usize;
            sl_map = self.w(sl_bitmap(fl));
        }
        Some(self.w(head(fl, sl_map.trailing_zeros() as usize)))
    }

    /// Allocates a block for `size` bytes at `align`, growing if needed. Returns the
    /// block and the region-offset range of its payload known to read as zero.
    fn malloc(&self, size: usize, align: usize) -> Option<(u64, (u64, u64))> {
        if !align.is_power_of_two() {
            return None;
        }
        let need = block_size(size)?;
        let align = align.max(GRANULE) as u64;
        if need <= FAST_MAX && align == GRANULE as u64 {
            let h = fast_head(need / 16);
            let b = self.w(h);
            if b != 0 {
                self.set(h, self.w(b + 16));
                self.set(b + 8, self.w(b + 8) & !FAST);
                self.set(ALLOCATED_BYTES, self.w(ALLOCATED_BYTES) + need);
                self.set(ALLOCATED_BLOCKS, self.w(ALLOCATED_BLOCKS) + 1);
                return Some((b, (0, 0)));
            }
        }
        let search = if align > GRANULE as u64 {
            need.checked_add(align + MIN_BLOCK)?
        } else {
            need
        };
        let mut b = match self.find(search) {
            Some(b) => b,
            // Nothing is logged yet: the fast lists go back first, each block in an
            // operation of its own, then the region grows if that was not enough.
            None => match self.consolidate().then(|| self.find(search)).flatten() {
                Some(b) => b,
                None => {
                    self.grow(search)?;
                    self.find(search)?
                }
            },
        };
        let sw = self.w(b + 8);
        let mut bsize = sw & !FLAGS;
        let zero = self.zero_of(b, sw);
        self.remove(b, bsize);
        let b0 = b;
        let mut prev_free = sw & PREV_FREE;
        let base = self.heap.base as u64;
        if (base + b + HDR) % align != 0 {
            // Leave a free block in front so that the payload is aligned.
            let nb = (base + b + HDR + MIN_BLOCK).next_multiple_of(align) - base - HDR;
            let front = nb - b;
            let flag = self.set_zero(b, front, zero);
            self.set(b + 8, front | FREE | flag);
            self.insert(b, front);
            self.set(nb, front);
            prev_free = PREV_FREE;
            b = nb;
            bsize -= front;
        }
        let next = b + bsize;
        if bsize - need >= MIN_BLOCK {
            let r = b + need;
            let rsize = bsize - need;
            // The remainder's words lie in the taken block's payload; past its header,
            // links and zero range they were no metadata.
            let fresh = r + 8 >= b0 + FREE_HDR;
            let flag = self.set_zero_as(r, rsize, zero, fresh);
            if fresh {
                self.set_fresh(r + 8, rsize | FREE | flag);
            } else {
                self.set(r + 8, rsize | FREE | flag);
            }
            self.set(next, rsize);
            self.insert_as(r, rsize, fresh);
            bsize = need;
        } else {
            self.set(next + 8, self.w(next + 8) & !PREV_FREE);
        }
        self.set(b + 8, bsize | prev_free);
        self.set(ALLOCATED_BYTES, self.w(ALLOCATED_BYTES) + bsize);
        self.set(ALLOCATED_BLOCKS, self.w(ALLOCATED_BLOCKS) + 1);
        // The payload's part of the old zero range: the words written above (headers,
        // links, ranges) all lie outside the payload.
        Some((b, clip(zero, (b + HDR, b + bsize))))
    }

    /// Frees a small block onto its class's fast list (no merging: five logged words).
    /// `false` for a larger block.
    #[inline(always)]
    fn free_fast(&self, b: u64) -> bool {
        let sw = self.w(b + 8);
        let bsize = sw & !FLAGS;
        if bsize > FAST_MAX {
            return false;
        }
        assert!(
            sw & (FREE | FAST) == 0 && bsize >= MIN_BLOCK,
            "dsu heap: free of a block that is not allocated (double free or a foreign pointer)"
        );
        let h = fast_head(bsize / 16);
        self.set(b + 8, sw | FAST);
        // The link lies in the payload of the block being freed: its old bytes are the
        // caller's, whom an undo gives the block back to.
        self.set_fresh(b + 16, self.w(h));
        self.set(h, b);
        self.set(ALLOCATED_BYTES, self.w(ALLOCATED_BYTES) - bsize);
        self.set(ALLOCATED_BLOCKS, self.w(ALLOCATED_BLOCKS) - 1);
        true
    }

    /// Returns every fast-list block to the segregated lists (merging), one logged
    /// operation per block. Whether there were any. Called with the log empty.
    #[cold]
    fn consolidate(&self) -> bool {
        let mut any = false;
        for class in 2..FAST_CLASSES as u64 {
            let h = fast_head(class);
            loop {
                let b = self.w(h);
                if b == 0 {
                    break;
                }
                any = true;
                let sw = self.w(b + 8);
                self.set(h, self.w(b + 16));
                self.set(b + 8, sw & !FAST);
                self.set(ALLOCATED_BYTES, self.w(ALLOCATED_BYTES) + (sw & !FLAGS));
                self.set(ALLOCATED_BLOCKS, self.w(ALLOCATED_BLOCKS) + 1);
                let merged = self.free(b);
                self.commit();
                self.give_back(merged);
            }
        }
        any
    }

    /// Frees block `b`, merging it with free neighbours. The merged block keeps the
    /// larger of its neighbours' zero ranges.
    fn free(&self, b: u64) -> Merged {
        let sw = self.w(b + 8);
        assert!(
            sw & (FREE | FAST) == 0 && sw & !FLAGS >= MIN_BLOCK,
            "dsu heap: free of a block that is not allocated (double free or a foreign pointer)"
        );
        let bsize = sw & !FLAGS;
        self.set(ALLOCATED_BYTES, self.w(ALLOCATED_BYTES) - bsize);
        self.set(ALLOCATED_BLOCKS, self.w(ALLOCATED_BLOCKS) - 1);
        let mut merged = Merged {
            block: b,
            size: bsize,
            zero: [(0, 0); 2],
        };
        let next = b + bsize;
        let nsw = self.w(next + 8);
        if nsw & FREE != 0 {
            let nsize = nsw & !FLAGS;
            merged.zero[0] = self.zero_of(next, nsw);
            self.remove(next, nsize);
            merged.size += nsize;
        }
        if sw & PREV_FREE != 0 {
            let p = b - self.w(b);
            let psw = self.w(p + 8);
            let psize = psw & !FLAGS;
            merged.zero[1] = self.zero_of(p, psw);
            self.remove(p, psize);
            merged.block = p;
            merged.size += psize;
        }
        self.settle(merged);
        merged
    }

    /// Writes the header of a new free block (made of merged parts), its successor's
    /// `prev_size` and `PREV_FREE`, its zero range (the larger known one), and lists it.
    fn settle(&self, m: Merged) {
        let [a, b] = m.zero;
        let keep = if a.1 - a.0 >= b.1 - b.0 { a } else { b };
        let after = m.block + m.size;
        self.set(after, m.size);
        self.set(after + 8, self.w(after + 8) | PREV_FREE);
        let flag = self.set_zero(m.block, m.size, keep);
        self.set(m.block + 8, m.size | FREE | flag);
        self.insert(m.block, m.size);
    }

    /// Resizes `b` to `need` bytes without moving it: shrinking frees the tail, growing
    /// takes from a free next block. `None` if it cannot grow in place.
    fn resize_in_place(&self, b: u64, need: u64) -> Option<Merged> {
        let sw = self.w(b + 8);
        assert!(
            sw & (FREE | FAST) == 0,
            "dsu heap: realloc of a block that is not allocated"
        );
        let bsize = sw & !FLAGS;
        let next = b + bsize;
        let nsw = self.w(next + 8);
        let nsize = if nsw & FREE != 0 { nsw & !FLAGS } else { 0 };
        let nzero = self.zero_of(next, nsw);
        if need <= bsize {
            let tail = bsize - need;
            if tail == 0 || tail + nsize < MIN_BLOCK {
                return Some(Merged::default());
            }
            if nsize != 0 {
                self.remove(next, nsize);
            }
            self.set(b + 8, need | (sw & PREV_FREE));
            self.set(ALLOCATED_BYTES, self.w(ALLOCATED_BYTES) - tail);
            let merged = Merged {
                block: b + need,
                size: tail + nsize,
                zero: [nzero, (0, 0)],
            };
            self.settle(merged);
            return Some(merged);
        }
        if bsize + nsize < need {
            return None;
        }
        self.remove(next, nsize);
        let total = bsize + nsize;
        let mut newsize = total;
        if total - need >= MIN_BLOCK {
            let r = b + need;
            let rsize = total - need;
            let flag = self.set_zero(r, rsize, nzero);
            self.set(r + 8, rsize | FREE | flag);
            self.set(b + total, rsize);
            self.insert(r, rsize);
            newsize = need;
        } else {
            let after = b + total;
            self.set(after + 8, self.w(after + 8) & !PREV_FREE);
        }
        self.set(b + 8, newsize | (sw & PREV_FREE));
        self.set(ALLOCATED_BYTES, self.w(ALLOCATED_BYTES) + newsize - bsize);
        Some(Merged::default())
    }

    /// After the commit, if free block `m` holds at least [`DISCARD_MIN`] bytes of whole
    /// pages not known to be zero, gives them back to the system (skipping the known-zero
    /// ranges of the parts it was merged from) and records all its whole pages as its
    /// zero range, in a second small operation.
    fn give_back(&self, m: Merged) {
        let (lo, hi) = interior(m.block, m.size);
        if m.size == 0 || hi - lo < DISCARD_MIN as u64 {
            return;
        }
        let sw = self.w(m.block + 8);
        let kept = self.zero_of(m.block, sw);
        if (hi - lo) - (kept.1 - kept.0) < discard_threshold(self.w(MANAGED_END)) {
            return;
        }
        let mut known = [m.zero[0], m.zero[1], kept].map(|r| clip(r, (lo, hi)));
        known.sort_unstable();
        let mut cur = lo;
        for (zl, zh) in known {
            if zl == zh {
                continue;
            }
            if zl > cur && self.discard(cur, zl).is_err() {
                return;
            }
            cur = cur.max(zh);
        }
        if cur < hi && self.discard(cur, hi).is_err() {
            return;
        }
        let flag = self.set_zero(m.block, m.size, (lo, hi));
        self.set(m.block + 8, sw | flag);
        self.commit();
    }

    fn discard(&self, lo: u64, hi: u64) -> crate::Result<()> {
        self.heap.region.discard(lo as usize, (hi - lo) as usize)
    }

    /// The consistency check of [`RawHeap::check`]; calls `allocated(block, size)` for
    /// every allocated block.
    fn check(&self, allocated: &mut dyn FnMut(u64, u64)) -> Result<HeapStats, HeapCorruption> {
        let bad = |offset: u64, what: String| Err(HeapCorruption { offset, what });
        if self.w(LOG_LEN) != 0 {
            return bad(LOG_LEN, "the undo log is not empty".into());
        }
        let end = self.w(MANAGED_END);
        let size = self.heap.region.size() as u64;
        if end > size || end < FIRST_BLOCK + HDR || end % GRANULE as u64 != 0 {
            return bad(
                MANAGED_END,
                format!("managed end {end:#x} outside the backed {size:#x} bytes"),
            );
        }
        let mut free = std::collections::HashSet::new();
        let mut fast = std::collections::HashSet::new();
        let mut stats = HeapStats {
            base: self.heap.base as usize,
            size: size as usize,
            managed: end as usize,
            ..HeapStats::default()
        };
        let (mut b, mut prev_free, mut prev_size) = (FIRST_BLOCK, false, 0);
        loop {
            if b + HDR > end {
                return bad(b, format!("block header past the managed end {end:#x}"));
            }
            let sw = self.w(b + 8);
            let s = sw & !FLAGS;
            if (sw & PREV_FREE != 0) != prev_free {
                return bad(
                    b,
                    format!("PREV_FREE flag {sw:#x} but previous free: {prev_free}"),
                );
            }
            if prev_free && self.w(b) != prev_size {
                return bad(
                    b,
                    format!("prev_size {} but previous block has {prev_size}", self.w(b)),
                );
            }
            if s == 0 {
                if b + HDR != end || sw & (FREE | ZERO) != 0 {
                    return bad(
                        b,
                        format!("size 0 (sentinel, {sw:#x}) before the managed end {end:#x}"),
                    );
                }
                break;
            }
            if s % GRANULE as u64 != 0 || s < MIN_BLOCK || b + s > end - HDR {
                return bad(
                    b,
                    format!("block size {s:#x} is invalid or overlaps the end"),
                );
            }
            if sw & FREE != 0 {
                if prev_free {
                    return bad(b, "two adjacent free blocks".into());
                }
                if sw & ZERO != 0 {
                    let (lo, hi) = (self.w(b + 32), self.w(b + 40));
                    let (ilo, ihi) = interior(b, s);
                    if lo % PAGE != 0 || hi % PAGE != 0 || lo >= hi || lo < ilo || hi > ihi {
                        return bad(b, format!("zero range {lo:#x}..{hi:#x} outside the block"));
                    }
                }
                free.insert(b);
                stats.free_bytes += s as usize;
                stats.free_blocks += 1;
                stats.largest_free = stats.largest_free.max(s as usize);
            } else if sw & FAST != 0 {
                if s > FAST_MAX || sw & ZERO != 0 {
                    return bad(
                        b,
                        format!("fast-list block {sw:#x} too large or marked ZERO"),
                    );
                }
                fast.insert(b);
                stats.free_bytes += s as usize;
                stats.free_blocks += 1;
            } else {
                if sw & ZERO != 0 {
                    return bad(b, "allocated block marked ZERO".into());
                }
                allocated(b, s);
                stats.allocated_bytes += s as usize;
                stats.allocated_blocks += 1;
            }
            prev_free = sw & FREE != 0;
            prev_size = s;
            b += s;
        }
        let fl_map = self.w(FL_BITMAP);
        for fl in 0..FL_COUNT {
            let sl_map = self.w(sl_bitmap(fl));
            if (fl_map >> fl & 1 != 0) != (sl_map != 0) {
                return bad(
                    sl_bitmap(fl),
                    format!("first-level bit {fl} disagrees with {sl_map:#x}"),
                );
            }
            for sl in 0..SL_COUNT {
                let mut x = self.w(head(fl, sl));
                if (sl_map >> sl & 1 != 0) != (x != 0) {
                    return bad(
                        head(fl, sl),
                        format!("bitmap bit ({fl}, {sl}) disagrees with the list"),
                    );
                }
                let mut prev = 0;
                while x != 0 {
                    if !free.remove(&x) {
                        return bad(
                            x,
                            format!(
                                "listed in class ({fl}, {sl}) but not a free block (or listed twice)"
                            ),
                        );
                    }
                    if mapping(self.size_of(x)) != (fl, sl) {
                        return bad(
                            x,
                            format!(
                                "free block of {} bytes in class ({fl}, {sl})",
                                self.size_of(x)
                            ),
                        );
                    }
                    if self.w(x + 24) != prev {
                        return bad(x, "free-list prev link broken".into());
                    }
                    prev = x;
                    x = self.w(x + 16);
                }
            }
        }
        if let Some(&x) = free.iter().next() {
            return bad(x, "free block in no free list".into());
        }
        for class in 0..FAST_CLASSES as u64 {
            let mut x = self.w(fast_head(class));
            while x != 0 {
                if !fast.remove(&x) || self.size_of(x) != class * 16 {
                    return bad(
                        x,
                        format!(
                            "in fast list {class} but not a fast block of {} bytes (or listed twice)",
                            class * 16
                        ),
                    );
                }
                x = self.w(x + 16);
            }
        }
        if let Some(&x) = fast.iter().next() {
            return bad(x, "fast block in no fast list".into());
        }
        let counted = [
            (ALLOCATED_BYTES, stats.allocated_bytes),
            (ALLOCATED_BLOCKS, stats.allocated_blocks),
        ];
        for (off, n) in counted {
            if self.w(off) != n as u64 {
                return bad(
                    off,
                    format!("counter says {} but the blocks give {n}", self.w(off)),
                );
            }
        }
        Ok(stats)
    }
}
