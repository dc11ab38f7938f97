//! Where the keyspace's memory comes from: any [`Allocator`] that also reports how much it
//! has handed out and how much it may hand out ([`KvAlloc`]).
//!
//! The keyspace ([`crate::keyspace::Keyspace`]) is generic over its allocator, so that the
//! same code runs on the host with [`Counted`] (the process's own heap, with a byte count
//! and an optional limit) and, in the dsu server, on the segment's shared heap, whose
//! objects every version of the server sees at the same addresses. Both are zero-sized
//! handles: a container carries no allocator state of its own.
//!
//! The limit is what Redis calls `maxmemory`: past it, commands that may grow the keyspace
//! get `-OOM command not allowed when used memory > 'maxmemory'.`, and an allocation that
//! would cross it fails (the command that asked replies `-OOM` and nothing is lost).

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The allocator of a keyspace in the process's own heap (`kv_local`, and `kv_vN
/// --no-dsu`).
pub type ServerAlloc = Counted;

/// An allocator the keyspace can live in: a zero-sized, copyable handle with a byte count
/// and a limit.
pub trait KvAlloc: Allocator + Copy + Send + Sync + 'static {
    /// The handle (allocators are zero-sized, so there is only one).
    const HANDLE: Self;
    /// Bytes allocated now (INFO `used_memory`).
    fn used_bytes(&self) -> usize;
    /// The most bytes that may be allocated (INFO `maxmemory`; `usize::MAX`: none).
    fn limit_bytes(&self) -> usize;
}

/// The process's own heap ([`Global`]) with a count of the bytes it holds for the keyspace
/// and a limit set by [`Counted::set_limit`] (`--maxmemory`).
///
/// ```
/// use allocator_api2::vec::Vec;
/// use dsu_kv::alloc::{Counted, KvAlloc};
/// let before = Counted.used_bytes();
/// let v: Vec<u8, Counted> = Vec::with_capacity_in(1000, Counted);
/// assert!(Counted.used_bytes() >= before + 1000);
/// drop(v);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Counted;

static COUNTED_USED: AtomicUsize = AtomicUsize::new(0);
static COUNTED_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

impl Counted {
    /// Sets the limit in bytes (`usize::MAX`: none). Allocations already made stay.
    pub fn set_limit(bytes: usize) {
        COUNTED_LIMIT.store(bytes, Relaxed);
    }

    fn reserve(size: usize) -> Result<(), AllocError> {
        let limit = COUNTED_LIMIT.load(Relaxed);
        COUNTED_USED
            .fetch_update(Relaxed, Relaxed, |used| {
                used.checked_add(size).filter(|&n| n <= limit)
            })
            .map(drop)
            .map_err(|_| AllocError)
    }
}

// SAFETY: every method forwards to `Global`, which upholds the `Allocator` contract; the
// count is bookkeeping only (reserved before, released after, by the layout's size).
unsafe impl Allocator for Counted {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        Self::reserve(layout.size())?;
        Global.allocate(layout).inspect_err(|_| {
            COUNTED_USED.fetch_sub(layout.size(), Relaxed);
        })
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract is Global's: ptr came from this allocator (that
        // is, from Global) with this layout.
        unsafe { Global.deallocate(ptr, layout) };
        COUNTED_USED.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        Self::reserve(new.size() - old.size())?;
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { Global.grow(ptr, old, new) }.inspect_err(|_| {
            COUNTED_USED.fetch_sub(new.size() - old.size(), Relaxed);
        })
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded with the caller's guarantees.
        let r = unsafe { Global.shrink(ptr, old, new) }?;
        COUNTED_USED.fetch_sub(old.size() - new.size(), Relaxed);
        Ok(r)
    }
}

impl KvAlloc for Counted {
    const HANDLE: Self = Counted;

    fn used_bytes(&self) -> usize {
        COUNTED_USED.load(Relaxed)
    }

    fn limit_bytes(&self) -> usize {
        COUNTED_LIMIT.load(Relaxed)
    }
}

/// The segment's shared heap ([`dsu::heap`]): the allocator of `kv_v1`..`kv_v3`'s
/// keyspace, installed by `dsu::attach` (`Attach::heap`). Its bytes in use are the heap's
/// allocated blocks (headers included, read in O(1) with
/// [`RawHeap::allocated_bytes`](dsu::heap::RawHeap::allocated_bytes)), its limit the
/// region's reservation (`--maxmemory`); 0 while no heap is installed (every allocation
/// then fails and writes answer `-OOM`).
impl KvAlloc for dsu::heap::SharedHeap {
    const HANDLE: Self = dsu::heap::SharedHeap;

    fn used_bytes(&self) -> usize {
        dsu::heap::installed().map_or(0, |h| h.allocated_bytes())
    }

    fn limit_bytes(&self) -> usize {
        dsu::heap::installed().map_or(0, |h| h.region().reserve())
    }
}
