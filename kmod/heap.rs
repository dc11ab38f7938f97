// SPDX-License-Identifier: GPL-2.0-only

//! Shared heaps: per segment, a window of user address space that every process maps at
//! the same address, backed by a shmem file of its own that only grows.
//!
//! The creator chooses the window (`base`, `reserve`); the backed size is the file's size,
//! which GROW extends with `fallocate` (pages allocated and charged to the caller's memcg
//! at growth, the size set only once all are: a failure changes nothing) after charging
//! the new pages to the caller's uid (`accounting.rs`). DISCARD punches a hole: pages go
//! back to the system and read as zeros in every mapping, the per-user charges stay with
//! the heap (its size is still promised). The window is mapped by `mapping.rs`, which
//! gives the VMA this file (`ShmemFile::map_over`), so faults are shmem's: SIGBUS at or
//! past the size. A heap lives as long as its segment.
//!
//! Lock order: heap growth mutex → accounting mutex, and → the shmem inode's locks inside
//! `fallocate`. The segment mutex only guards the segment's `Arc` of its heap and is never
//! held with the growth mutex. No user memory is touched with the growth mutex held.

use crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL;
use crate::{
    accounting::{Accounting, HeldPages},
    kernel_ext::{
        cred,
        shmem::{task_size, ShmemFile},
    },
    limits,
};
use kernel::{
    c_str,
    error::code::*,
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, Mutex},
};

/// The page size, as the `u64` the uapi's byte counts are.
const PAGE: u64 = PAGE_SIZE as u64;

/// A segment's heap.
#[pin_data]
pub struct Heap {
    /// The window's first address (page-aligned, the same in every process).
    pub base: u64,
    /// The window's length in bytes (a page multiple).
    pub reserve: u64,
    /// The pages; its size is the heap's backed size.
    file: ShmemFile,
    /// Serialises growth; holds the per-user charges of the backed pages.
    #[pin]
    grow: Mutex<HeldPages>,
    /// Where growth is charged (the registry's).
    accounting: Arc<Accounting>,
}

impl Heap {
    /// Validates a window for a new heap: page-aligned, non-zero, inside the caller's user
    /// address space (`EINVAL`), at most
    /// `max_heap_pages` pages (`E2BIG`).
    pub fn check_window(base: u64, reserve: u64) -> Result {
        if base == 0 || reserve == 0 || base % PAGE != 0 || reserve % PAGE != 0 {
            return Err(EINVAL);
        }
        let end = base.checked_add(reserve).ok_or(EINVAL)?;
        if end > task_size() {
            return Err(EINVAL);
        }
        if reserve / PAGE > limits::max_heap_pages() as u64 {
            return Err(E2BIG);
        }
        Ok(())
    }

    /// A heap with nothing backed, its window checked by [`Heap::check_window`].
    pub fn new(base: u64, reserve: u64, accounting: &Arc<Accounting>) -> Result<Arc<Self>> {
        let file = ShmemFile::new(c_str!("dsu-heap"), 0)?;
        Arc::pin_init(
            pin_init!(Self {
                base,
                reserve,
                file,
                grow <- new_mutex!(HeldPages::new(accounting), "dsu_heap_grow"),
                accounting: accounting.clone(),
            }),
            GFP_ACCOUNT_MAYFAIL,
        )
    }

    /// Holds the size as it is (growth waits) until the guard is dropped. Lock order:
    /// segment mutex → this.
    pub fn hold_size(&self) -> impl Drop + '_ {
        self.grow.lock()
    }

    /// Bytes backed now.
    pub fn size(&self) -> u64 {
        self.file.size()
    }

    /// The backing file (for mapping and reading).
    pub fn file(&self) -> &ShmemFile {
        &self.file
    }

    /// Backs at least `min_size` bytes (rounded up to pages) and returns the size. Asking
    /// for less than the size changes nothing. `ENOMEM` past the reserve, `max_heap_pages`,
    /// the caller's per-user page limit or `RLIMIT_MEMLOCK`, or its memory cgroup's limit;
    /// then nothing changed. `EINTR` if a signal is pending during the allocation (shmem's
    /// `fallocate` checks for any), with nothing changed.
    pub fn grow(&self, min_size: u64) -> Result<u64> {
        let want = min_size.div_ceil(PAGE);
        let mut held = self.grow.lock();
        let have = self.file.size() / PAGE;
        if want <= have {
            return Ok(have * PAGE);
        }
        if want > self.reserve / PAGE || want > limits::max_heap_pages() as u64 {
            return Err(ENOMEM);
        }
        // shmem's `fallocate` refuses a size past the caller's RLIMIT_FSIZE with EFBIG and a
        // SIGXFSZ that kills by default: refuse first, as an allocator's out of memory.
        if want * PAGE > cred::fsize_limit() {
            return Err(ENOMEM);
        }
        let add = usize::try_from(want - have).map_err(|_| ENOMEM)?;
        // The heap's growth answers every limit with ENOMEM (an allocator's out of
        // memory); the per-user page limit says ENOSPC elsewhere.
        let charge =
            self.accounting
                .charge_pages(add)
                .map_err(|e| if e == ENOSPC { ENOMEM } else { e })?;
        held.reserve(charge.uid)?;
        self.file.allocate(have * PAGE, add as u64 * PAGE)?;
        held.record(charge, add)?;
        Ok(want * PAGE)
    }

    /// RESTORE_HEAP (`restore.rs`): copies `len` user bytes at `src` into the heap at
    /// `offset`, page by page with no lock held (this faults on user memory). `EINVAL`
    /// unless `len >= 1` and the range is inside the size. The pages exist (GROW allocated
    /// them): this allocates nothing; shmem zeroes a page on its first use, before the copy.
    pub fn write(&self, offset: u64, len: u64, src: u64) -> Result {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if len == 0 || end > self.file.size() {
            return Err(EINVAL);
        }
        let len = usize::try_from(len).map_err(|_| EINVAL)?;
        let mut src = crate::uapi::user_range(src, len)?;
        let (mut at, mut left) = (offset, len);
        while left > 0 {
            let skip = (at % PAGE) as usize;
            let n = left.min(PAGE_SIZE - skip);
            self.file
                .page(at / PAGE)?
                .borrow()
                .copy_from_user(src, skip, n)?;
            src += n;
            at += n as u64;
            left -= n;
        }
        Ok(())
    }

    /// Returns the pages of `[offset, offset + len)` to the system: page-aligned, non-empty
    /// and inside the size, else `EINVAL`. Every mapping reads zeros there afterwards.
    pub fn discard(&self, offset: u64, len: u64) -> Result {
        if len == 0 || offset % PAGE != 0 || len % PAGE != 0 {
            return Err(EINVAL);
        }
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        // The size only grows: a range inside it now stays inside.
        if end > self.file.size() {
            return Err(EINVAL);
        }
        self.file.punch_hole(offset, len)
    }
}
