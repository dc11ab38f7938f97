// SPDX-License-Identifier: GPL-2.0

//! Mappings: VMAs over a version's page map.
//!
//! `mmap` of a bound handle (MAP_SHARED, offset 0, exactly the map's length) makes the
//! VMA ours: `vm_ops` is [`MAPPING_OPS`] and `vm_private_data` points to the version. The
//! version outlives the VMA: the VMA holds the file, the file the handle, the handle the
//! version. PTEs are installed on fault by default, or all at mmap with `DSU_BIND_PREFAULT`
//! (`vm_insert_pages` in batches); see kmod/README.md for why.
//!
//! VMA open/close count live VMAs in `Version::mappings`: the initial mmap counts one, each
//! copy (fork, split by a partial munmap or mprotect, mremap) opens one more, each unmap
//! closes one. The fault path takes no dsu lock.

use crate::{
    handle::Handle,
    kernel_ext::mm::{flags, FaultResult, VmArea, VmFault, VmOperations, VmOpsTable, VmaNew},
    segment::{MAY_READ, MAY_WRITE},
    version::Version,
};
use core::sync::atomic::Ordering;
use kernel::{error::code::*, page::PAGE_SIZE, prelude::*};

/// The VMA type. Its callbacks may run at once for different VMAs of one version (a fork
/// in one process, a munmap in another, faults on every CPU); they only touch the version's
/// atomic mapping count and its page map, which is immutable after BIND.
pub struct Mapping;

/// Our `vm_operations_struct`; its address marks our VMAs.
static MAPPING_OPS: VmOpsTable<Mapping> = VmOpsTable::new();

impl VmOperations for Mapping {
    type Data = Version;

    fn table() -> &'static VmOpsTable<Self> {
        &MAPPING_OPS
    }

    fn open(version: &Version, _vma: &VmArea) {
        version.mappings.fetch_add(1, Ordering::Relaxed);
    }

    fn close(version: &Version, _vma: &VmArea) {
        version.mappings.fetch_sub(1, Ordering::Relaxed);
    }

    fn fault(version: &Version, vmf: &VmFault) -> FaultResult {
        match version.pages.get(vmf.pgoff()) {
            Some(page) => vmf.insert_page(*page),
            None => FaultResult::SigBus,
        }
    }
}

/// `mmap` of a handle.
pub fn mmap(handle: &Handle, vma: &VmaNew) -> Result {
    let version = handle.version()?;
    // Copy-on-write would silently break sharing.
    if vma.flags() & flags::SHARED == 0 {
        return Err(EINVAL);
    }
    if vma.pgoff() != 0 || vma.len() != version.pages.len() * PAGE_SIZE {
        return Err(EINVAL);
    }
    version.segment.check_access(MAY_READ | MAY_WRITE)?;

    vma.set_flags(flags::DONTEXPAND | flags::DONTDUMP | flags::MIXEDMAP);
    if version.prefault {
        vma.insert_pages(vma.start(), &version.pages)?;
    }
    // SAFETY: The version is owned by the handle, which the VMA's file owns, so it outlives
    // the VMA and every copy of it.
    unsafe { vma.set_ops::<Mapping>(&version) };
    // The initial mmap does not call `open`; count it here, once nothing can fail.
    version.mappings.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
