//! The shared heap: memory that every version of a program maps at the same address, with
//! a crash-consistent allocator ([`RawHeap`]) and containers ([`Box`], [`Vec`],
//! [`String`], [`HashMap`]) whose pointers are valid in every version.
//!
//! A segment's heap is a [`HeapRegion`]: a window reserved at the same address in every
//! process, backed up to its current size and grown on demand. [`install`] makes a region
//! the process's heap (attach does it for a segment's heap; tests and programs that share
//! a heap only with their forked children can install a [`MemfdRegion`]). [`SharedHeap`]
//! is the [`allocator_api2`] allocator of the installed heap; the containers use it.
//!
//! # What may live in the heap
//!
//! A heap object must never point to a global (globals sit at per-version addresses) or
//! to a version's private memory. So a container's elements are [`HeapData`]: the
//! pointer-free [`Shared`](crate::Shared) types, or heap containers of them. std's `Box`,
//! `Vec`, `&T` and raw pointers are not `HeapData`, so such a pointer cannot be stored.
//!
//! # Sharing a container between versions
//!
//! A global holds heap containers inside a [`heap::Mutex`](Mutex), never bare: every
//! version may read and change them, so every access is under the lock. A holder killed
//! half-way through a change (a `push` that had freed the old buffer but not yet stored
//! the new pointer) would leave a container that is not safe to use, so the lock is then
//! *poisoned* for good: [`Mutex::lock`] fails, and [`Mutex::reset`] replaces the
//! contents (leaking the old ones, which is safe) to start again.
//!
//! A container owned by a process's private variable (not reachable from a global) is that
//! process's alone; if the process dies, its blocks stay allocated (leaked, as with any
//! shared memory), which is safe.
//!
//! # Before install, and across fork
//!
//! Allocating before a heap is installed fails ([`SharedHeap`] returns `AllocError`;
//! the containers then abort through `handle_alloc_error`, which is sound). A child of
//! `fork` inherits the installed heap and, since the heap is shared memory, shares it with
//! its parent: a container the parent built is readable in the child through the same
//! pointers. A container the child changes is changed for the parent too, so parent and
//! child must use a [`Mutex`] exactly as two versions do.
//!
//! ```
//! use dsu::heap::{self, MemfdRegion};
//! heap::install(MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
//! let mut v: heap::Vec<u64> = heap::Vec::new();
//! v.push(7);
//! let mut m: heap::HashMap<u64, heap::String> = heap::HashMap::new();
//! m.insert(1, heap::String::from("one"));
//! assert_eq!(m[&1].as_str(), "one");
//! ```

mod alloc;
mod containers;
mod memfd;
mod raw;
pub(crate) mod region;
#[cfg(any(test, feature = "heap-testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use alloc::SharedHeap;
pub use containers::{
    Box, HashMap, HeapData, HeapHasher, Mutex, MutexGuard, Poisoned, String, Vec,
};
pub use memfd::MemfdRegion;
pub use raw::{
    Allocation, DISCARD_MIN, GRANULE, HeapCorruption, HeapStats, RawHeap, stats_from_bytes,
};
pub use region::{DEFAULT_RESERVE, HeapRegion, SegmentHeap, region};

use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

static INSTALLED: OnceLock<RawHeap> = OnceLock::new();
/// `INSTALLED`'s value once set, for a one-load check on every allocation.
static FAST: AtomicPtr<RawHeap> = AtomicPtr::new(core::ptr::null_mut());

/// Makes `region` the process's shared heap (formatting it if new) and returns its
/// allocator. Installing the same region again returns the same heap.
///
/// # Errors
///
/// [`Error::Heap`](crate::Error::Heap) if another region is installed already, or the
/// region holds something else; the region's error if it cannot hold the heap's header.
///
/// ```
/// use dsu::heap::{self, MemfdRegion};
/// let region = MemfdRegion::new(1 << 30).unwrap().leak();
/// let heap = heap::install(region).unwrap();
/// assert!(std::ptr::eq(heap, heap::install(region).unwrap()));
/// assert!(heap::install(MemfdRegion::new(1 << 20).unwrap().leak()).is_err());
/// ```
pub fn install(region: &'static dyn HeapRegion) -> crate::Result<&'static RawHeap> {
    let mut opened = None;
    if INSTALLED.get().is_none() {
        opened = Some(RawHeap::open(region)?);
    }
    let heap = INSTALLED.get_or_init(|| opened.take().expect("opened above"));
    if heap.base() != region.base() {
        return Err(crate::Error::Heap(format!(
            "a heap is installed already at {:p}; a process has one shared heap",
            heap.base()
        )));
    }
    FAST.store(heap as *const RawHeap as *mut RawHeap, Ordering::Release);
    Ok(heap)
}

/// The process's installed heap, if any.
///
/// ```
/// let _ = dsu::heap::installed(); // None until install (or attach of a segment with a heap)
/// ```
#[inline]
pub fn installed() -> Option<&'static RawHeap> {
    let p = FAST.load(Ordering::Acquire);
    // SAFETY: null, or the OnceLock's value, which lives for the program.
    unsafe { p.as_ref() }
}
