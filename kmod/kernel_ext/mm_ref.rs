// SPDX-License-Identifier: GPL-2.0-only

//! Other processes' address spaces, held without keeping them alive: [`MmRef`] (an
//! `mm_count` reference, as `mmgrab` takes) and [`SharedRegion`] (the shared file pages
//! behind an address of the caller). Together they answer "does that process still map
//! this memory?" for `lock_owner.rs`.
//!
//! No dsu lock is held by any function here: they take `mmap_lock` (the caller's, or
//! another process's for reading) and may sleep.

use kernel::{error::code::*, prelude::*};

/// `struct mm_struct`, opaque: the helpers are the only ones to look inside (the generated
/// struct embeds types that are not FFI-safe under `improper_ctypes`).
type RawMm = core::ffi::c_void;
/// `struct address_space`, opaque here too: only compared by address.
type RawMapping = core::ffi::c_void;

extern "C" {
    fn dsu_current_mm_grab() -> *mut RawMm;
    fn dsu_mmgrab(mm: *mut RawMm);
    fn dsu_mmdrop(mm: *mut RawMm);
    fn dsu_mm_alive(mm: *mut RawMm) -> bool;
    fn dsu_current_shared_region(
        addr: usize,
        mapping: *mut *mut RawMapping,
        pgoff: *mut usize,
    ) -> core::ffi::c_int;
    fn dsu_mm_maps_shared(
        mm: *mut RawMm,
        mapping: *mut RawMapping,
        first: usize,
        end: usize,
    ) -> core::ffi::c_int;
}

/// An address space, kept allocated (not alive) while this lives: its process may exit or
/// exec meanwhile, and the pointer is never reused for another mm until this is dropped.
///
/// # Invariants
///
/// `mm` is valid and this holds one `mm_count` reference to it.
pub struct MmRef {
    mm: core::ptr::NonNull<RawMm>,
}

// SAFETY: An `mm_count` reference may be dropped from any thread.
unsafe impl Send for MmRef {}
// SAFETY: `&MmRef` only reads `mm_users` and takes `mmap_lock`, from any thread.
unsafe impl Sync for MmRef {}

impl MmRef {
    /// The caller's address space (`None` in a kernel thread).
    pub fn current() -> Option<Self> {
        // SAFETY: Takes a reference on the caller's own mm, which is live.
        let mm = unsafe { dsu_current_mm_grab() };
        core::ptr::NonNull::new(mm).map(|mm| Self { mm })
    }

    /// Whether both are the same address space.
    pub fn same(&self, other: &MmRef) -> bool {
        self.mm == other.mm
    }

    /// Another reference to the same address space.
    pub fn clone_ref(&self) -> Self {
        // SAFETY: `self.mm` is valid (invariant); mmgrab on a referenced mm only counts.
        unsafe { dsu_mmgrab(self.mm.as_ptr()) };
        Self { mm: self.mm }
    }

    /// Whether its process still uses it (false once it exited or execed: for good).
    pub fn alive(&self) -> bool {
        // SAFETY: `self.mm` is valid (invariant).
        unsafe { dsu_mm_alive(self.mm.as_ptr()) }
    }

    /// Whether it maps, `MAP_SHARED`, any page of `region`'s file in
    /// `[first, first + pages)`. `ESRCH` if its process exited or execed, `EINTR` if the
    /// caller was killed while waiting for its `mmap_lock`.
    pub fn maps(&self, region: &SharedRegion, first: u64, pages: u64) -> Result<bool> {
        let first = usize::try_from(first).map_err(|_| EINVAL)?;
        let end = first.saturating_add(usize::try_from(pages).unwrap_or(usize::MAX));
        // SAFETY: `self.mm` is valid (invariant); the mapping is only compared by address.
        let r = unsafe { dsu_mm_maps_shared(self.mm.as_ptr(), region.mapping, first, end) };
        match r {
            0 => Ok(false),
            1 => Ok(true),
            e => Err(Error::from_errno(e)),
        }
    }
}

impl Drop for MmRef {
    fn drop(&mut self) {
        // SAFETY: Ours (invariant); may free the mm_struct, after its process is gone.
        unsafe { dsu_mmdrop(self.mm.as_ptr()) };
    }
}

/// The `MAP_SHARED` file mapping behind an address of the caller: which file's pages
/// (its `address_space`, for comparison only: never dereferenced) and the page offset of
/// the address in that file.
pub struct SharedRegion {
    mapping: *mut RawMapping,
    /// The address's page in the file.
    pub pgoff: u64,
}

impl SharedRegion {
    /// The shared file mapping at `addr` in the caller's address space: `EFAULT` if the
    /// address is unmapped, or privately or anonymously mapped.
    pub fn of_current(addr: u64) -> Result<Self> {
        let addr = usize::try_from(addr).map_err(|_| EFAULT)?;
        let mut mapping = core::ptr::null_mut();
        let mut pgoff = 0usize;
        // SAFETY: The out pointers are valid locals; the helper takes the caller's
        // mmap_lock for reading.
        let r = unsafe { dsu_current_shared_region(addr, &mut mapping, &mut pgoff) };
        if r != 0 {
            return Err(Error::from_errno(r));
        }
        Ok(Self {
            mapping,
            pgoff: pgoff as u64,
        })
    }

    /// Whether the file is `mapping` (an address space's address, as
    /// `DeviceMappings::is_module_mapping` takes it).
    pub fn mapping_addr(&self) -> usize {
        self.mapping as usize
    }
}
