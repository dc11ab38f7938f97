//! [`SharedHeap`]: the `allocator_api2` allocator of the process's installed heap.

use super::installed;
use allocator_api2::alloc::{AllocError, Allocator, Layout};
use core::ptr::NonNull;

/// The allocator of the process's shared heap ([`install`](super::install)): a zero-sized
/// handle, the same value in every version, so containers that store it are valid
/// everywhere. Allocation fails (`AllocError`) while no heap is installed, and when the
/// heap cannot grow.
///
/// ```
/// use allocator_api2::alloc::{Allocator, Layout};
/// use dsu::heap::{self, MemfdRegion, SharedHeap};
/// heap::install(MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
/// let layout = Layout::new::<[u64; 4]>();
/// let p = SharedHeap.allocate(layout).unwrap();
/// // SAFETY: allocated above with this layout.
/// unsafe { SharedHeap.deallocate(p.cast(), layout) };
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SharedHeap;

fn dangling(layout: Layout) -> NonNull<[u8]> {
    // SAFETY: an alignment is a non-zero power of two.
    let p = unsafe { NonNull::new_unchecked(layout.align() as *mut u8) };
    NonNull::slice_from_raw_parts(p, 0)
}

// SAFETY: blocks come from the installed heap, which lives for the program and keeps them
// valid until freed; zero-sized requests get dangling aligned pointers that are never
// passed to the heap. Clones are the same ZST, so any clone frees any block.
unsafe impl Allocator for SharedHeap {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let heap = installed().ok_or(AllocError)?;
        let p = heap
            .allocate(layout.size(), layout.align())
            .ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let heap = installed().ok_or(AllocError)?;
        let p = heap
            .allocate_zeroed(layout.size(), layout.align())
            .ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let heap = installed().expect("dsu::heap: a heap block freed with no heap installed");
        // SAFETY: the caller's contract: ptr is a live block of this allocator.
        unsafe { heap.deallocate(ptr) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract (ptr live with `old`, new.size() >= old.size()).
        unsafe { self.resize(ptr, old, new) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: as in grow.
        unsafe { self.resize(ptr, old, new) }
    }
}

impl SharedHeap {
    /// Grows or shrinks through the heap's reallocate (in place when it can).
    ///
    /// # Safety
    /// `ptr` is a live block with layout `old`.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() == 0 || new.size() == 0 || new.align() > old.align().max(super::GRANULE) {
            let n = self.allocate(new)?;
            // SAFETY: both live; copy the smaller size.
            unsafe {
                n.cast::<u8>()
                    .as_ptr()
                    .copy_from_nonoverlapping(ptr.as_ptr(), old.size().min(new.size()));
                self.deallocate(ptr, old);
            }
            return Ok(n);
        }
        let heap = installed().ok_or(AllocError)?;
        // SAFETY: ptr is a live heap block aligned to old.align() >= new.align() (or to
        // the granule, which the heap always gives).
        let p = unsafe { heap.reallocate(ptr, new.size(), new.align()) }.ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, new.size()))
    }
}
