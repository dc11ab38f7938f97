// SPDX-License-Identifier: GPL-2.0-only

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
    kernel_ext::mm::{
        flags, BorrowedPage, FaultResult, VmArea, VmFault, VmOperations, VmOpsTable, VmaNew,
    },
    segment::{MAY_READ, MAY_WRITE},
    version::Version,
};
use core::sync::atomic::Ordering;
use kernel::{error::code::*, page::PAGE_SIZE, prelude::*};

/// The VMA type. Its callbacks may run at once for different VMAs of one version (a fork
/// in one process, a munmap in another, faults on every CPU); they only touch the version's
/// atomic mapping count and its page map, which is immutable after BIND, and look pages up
/// in the segment's file (RCU, no dsu lock).
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
        let page = version
            .map
            .file_page(vmf.pgoff() as u64)
            .and_then(|i| version.segment.file_page(i));
        match page {
            // `vm_insert_page` takes its own reference; ours is dropped after it.
            Some(page) => vmf.insert_page(&page),
            None => FaultResult::SigBus,
        }
    }
}

/// Inserts every page of the version at mmap, one page table (512 pages) per
/// `vm_insert_pages` call. Each batch's pages are borrowed from the segment's page array
/// under its mutex (`mmap_lock` → segment mutex, the documented order), which is released
/// before the insert; the segment, which the version holds, keeps the pages alive.
fn prefault(vma: &VmaNew, version: &Version) -> Result {
    const BATCH: usize = 512;
    let mut batch: KVVec<BorrowedPage<'_>> = KVVec::with_capacity(BATCH, GFP_KERNEL)?;
    let mut addr = vma.start();
    for run in version.map.runs() {
        let mut seg = run.seg;
        let end = run.seg + run.count;
        while seg < end {
            let n = (BATCH as u64).min(end - seg) as usize;
            // SAFETY: Shrinking only; `BorrowedPage` is `Copy`, so forgetting the previous
            // batch drops nothing.
            unsafe { batch.set_len(0) };
            version.segment.page_ptrs(seg, n, &mut batch)?;
            vma.insert_pages(addr, &batch)?;
            addr += n * PAGE_SIZE;
            seg += n as u64;
        }
    }
    Ok(())
}

/// `mmap` of a handle.
pub fn mmap(handle: &Handle, vma: &VmaNew) -> Result {
    let version = handle.version()?;
    // Copy-on-write would silently break sharing.
    if vma.flags() & flags::SHARED == 0 {
        return Err(EINVAL);
    }
    if vma.pgoff() != 0 || (vma.len() / PAGE_SIZE) as u64 != version.map.pages() {
        return Err(EINVAL);
    }
    version.segment.check_access(MAY_READ | MAY_WRITE)?;

    vma.set_dontexpand();
    vma.set_dontdump();
    vma.set_mixedmap();
    // Recognisable as ours before any page goes in.
    // SAFETY: The version is owned by the handle, which the VMA's file owns, so it outlives
    // the VMA and every copy of it.
    unsafe { vma.set_ops::<Mapping>(&version) };
    if version.prefault {
        prefault(vma, &version)?;
    }
    // The initial mmap does not call `open`; count it here, once nothing can fail.
    version.mappings.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
