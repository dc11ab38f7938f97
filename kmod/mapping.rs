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
//!
//! Every `/dev/dsu` file maps through the module's own address space (`DeviceMappings`),
//! in which each segment has a window of offsets ([`window`]): a version's VMA is moved to
//! the window's start, a view's to the window's second half, so that a snapshot unmaps
//! every PTE of one segment with one `unmap_mapping_range`. Faults subtract the window.
//! Both VMA types have a `page_mkwrite` (`snapshot.rs`): pages are mapped read-only until
//! their first write, which a snapshot may make copy the page first.
//!
//! Two more kinds of mapping live at fixed offsets of an Attached or Bound handle:
//! - the segment's heap window, at `DSU_HEAP_MMAP_OFFSET`: the VMA becomes a mapping of the
//!   heap's shmem file (`ShmemFile::map_over`), whose faults are shmem's; each such VMA
//!   holds a reference to the handle's file, and so the segment, the heap and this module;
//! - a view of segment pages, at `DSU_VIEW_MMAP_OFFSET + first_page` pages: like a version's
//!   mapping, over a version-less page map ([`View`]) that each VMA holds a reference to.

use crate::{
    handle::Handle,
    kernel_ext::{
        file::File,
        mm::{
            flags, BorrowedPage, FaultResult, LockedForWrite, MkwriteRetry, PageRef, VmArea,
            VmFault, VmOperations, VmOpsTable, VmaNew,
        },
        shmem::OwnerMkwrite,
    },
    segment::{Segment, ViewPages, MAY_READ, MAY_WRITE},
    snapshot,
    uapi::{DSU_HEAP_MMAP_OFFSET, DSU_VIEW_MMAP_OFFSET},
    version::{PageMap, Version},
};
use core::sync::atomic::Ordering;
use kernel::{error::code::*, page::PAGE_SIZE, prelude::*, sync::Arc};

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
        match (vmf.pgoff() as u64).checked_sub(window(&version.segment).0) {
            Some(page) => fault_in(&version.map, &version.segment, page, vmf),
            None => FaultResult::SigBus,
        }
    }

    fn page_mkwrite(version: &Version, vmf: &VmFault) -> Result<LockedForWrite, MkwriteRetry> {
        let seg = &version.segment;
        let page = (vmf.pgoff() as u64)
            .checked_sub(window(seg).0)
            .and_then(|p| version.map.segment_page(p));
        match page {
            Some(p) => snapshot::page_before_write(seg, vmf.page(), p, vmf.pgoff() as u64),
            None => Err(MkwriteRetry),
        }
    }
}

/// Pages of a segment's window in the module's address space.
const WINDOW_PAGES: u64 = 1 << 24;
/// Where views start in a window (a version's map and a view's range are both at most
/// `max_segment_pages`, whose cap is 2^22).
const VIEW_START: u64 = WINDOW_PAGES / 2;

/// The segment's window of offsets (first page, pages) in the module's address space.
pub fn window(seg: &Segment) -> (u64, u64) {
    (seg.id.saturating_mul(WINDOW_PAGES), WINDOW_PAGES)
}

/// The window (first page, pages) that page offset `pgoff` of the module's address space
/// lies in.
pub fn window_of(pgoff: u64) -> (u64, u64) {
    (pgoff & !(WINDOW_PAGES - 1), WINDOW_PAGES)
}

/// Installs page `page` of `map` (a page of `seg`'s file) at the faulting address.
fn fault_in(map: &PageMap, seg: &Segment, page: u64, vmf: &VmFault) -> FaultResult {
    match map.file_page(page).and_then(|i| seg.file_page(i)) {
        // `vm_insert_page` takes its own reference; ours is dropped after it.
        Some(page) => vmf.insert_page(&page),
        None => FaultResult::SigBus,
    }
}

/// A view: segment pages mapped without a version (`DSU_VIEW_MMAP_OFFSET`). Each VMA over
/// it holds one reference (taken at mmap and by `open`, dropped by `close`), so it lives as
/// long as the last of them; it holds the segment, which keeps the pages.
pub struct View {
    /// The mmap offset in pages of the view's first page (faults subtract it).
    pgoff: u64,
    /// The pages, held from GC and abort removal while the view lives.
    pages: ViewPages,
}

/// The view VMA type: faults as a version's, with no count of mappings.
pub struct ViewMapping;

static VIEW_OPS: VmOpsTable<ViewMapping> = VmOpsTable::new();

impl VmOperations for ViewMapping {
    type Data = View;

    fn table() -> &'static VmOpsTable<Self> {
        &VIEW_OPS
    }

    fn open(view: &View, _vma: &VmArea) {
        // SAFETY: `view` came from `Arc::into_raw` in `mmap_view` and the VMA this one was
        // copied from holds a reference, so the count is at least one.
        let arc: Arc<View> = unsafe { kernel::sync::ArcBorrow::from_raw(view) }.into();
        // The new VMA's reference, dropped by its `close`.
        let _ = Arc::into_raw(arc);
    }

    fn close(view: &View, _vma: &VmArea) {
        // SAFETY: This VMA holds one reference (`mmap_view` or `open`), given up here. The
        // handle's file outlives the VMA and holds the segment, so this never drops it.
        drop(unsafe { Arc::from_raw(view as *const View) });
    }

    fn fault(view: &View, vmf: &VmFault) -> FaultResult {
        match (vmf.pgoff() as u64).checked_sub(view.pgoff) {
            Some(page) => fault_in(&view.pages.map, &view.pages.segment, page, vmf),
            None => FaultResult::SigBus,
        }
    }

    fn page_mkwrite(view: &View, vmf: &VmFault) -> Result<LockedForWrite, MkwriteRetry> {
        let seg = &view.pages.segment;
        let page = (vmf.pgoff() as u64)
            .checked_sub(view.pgoff)
            .and_then(|p| view.pages.map.segment_page(p));
        match page {
            Some(p) => snapshot::page_before_write(seg, vmf.page(), p, vmf.pgoff() as u64),
            None => Err(MkwriteRetry),
        }
    }
}

/// The heap window's `page_mkwrite` (its VMAs hold the `/dev/dsu` file that was mapped).
pub struct HeapMkwrite;

impl OwnerMkwrite for HeapMkwrite {
    fn page_mkwrite(owner: &File, vmf: &VmFault) -> Result<LockedForWrite, MkwriteRetry> {
        // SAFETY: `owner` is a `/dev/dsu` file (only `mmap_heap` maps heaps, with the
        // handle's file), whose `private_data` is its `Arc<Handle>` until its release,
        // which comes after this VMA's close.
        let handle = unsafe { owner.private::<Handle>() };
        match handle.segment() {
            Ok(seg) => snapshot::heap_before_write(&seg, vmf.page(), vmf.pgoff() as u64),
            Err(_) => Err(MkwriteRetry),
        }
    }
}

/// The heap window's mmap offset, in pages.
const HEAP_PGOFF: u64 = DSU_HEAP_MMAP_OFFSET / PAGE_SIZE as u64;
/// The first view's mmap offset, in pages.
const VIEW_PGOFF: u64 = DSU_VIEW_MMAP_OFFSET / PAGE_SIZE as u64;

/// `mmap` of the heap window: shared, at exactly its base and length (`EINVAL`), on an
/// Attached or Bound handle (`ebadfd()`) of a segment with a heap (`ENOENT`), with read and
/// write permission (`EACCES`).
fn mmap_heap(handle: &Handle, file: &File, vma: &VmaNew) -> Result {
    let seg = handle.segment()?;
    if vma.flags() & flags::SHARED == 0 {
        return Err(EINVAL);
    }
    let heap = seg.heap().ok_or(ENOENT)?;
    if vma.start() as u64 != heap.base || vma.len() as u64 != heap.reserve {
        return Err(EINVAL);
    }
    seg.check_access(MAY_READ | MAY_WRITE)?;
    // The VMA's reference to `file` keeps the handle, so the segment and the heap.
    heap.file().map_over::<HeapMkwrite>(vma, file)
}

/// `mmap` of a view: shared, of segment pages inside the segment (`EINVAL`), on an Attached
/// or Bound handle (`ebadfd()`), with read and write permission (`EACCES`).
fn mmap_view(handle: &Handle, vma: &VmaNew) -> Result {
    let seg = handle.segment()?;
    if vma.flags() & flags::SHARED == 0 {
        return Err(EINVAL);
    }
    seg.check_access(MAY_READ | MAY_WRITE)?;
    let first = vma.pgoff() as u64 - VIEW_PGOFF;
    let pages = Segment::view_map(&seg, first, (vma.len() / PAGE_SIZE) as u64)?;
    // In the segment's window (`first` is inside the segment, below 2^22).
    let pgoff = window(&seg).0 + VIEW_START + first;
    // On failure the view is dropped, and with it the mapper counts `view_map` took.
    let view = Arc::new(
        View { pgoff, pages },
        crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL,
    )?;
    // VM_DONTEXPAND and VM_MIXEDMAP are VM_SPECIAL: the mm core never merges the new VMA
    // into a neighbour (which would free it without `close`, leaking its reference).
    vma.set_dontexpand();
    vma.set_dontdump();
    vma.set_mixedmap();
    vma.set_pgoff(pgoff as usize);
    let view = Arc::into_raw(view);
    // SAFETY: The VMA now holds the reference `into_raw` gave up; its `close` (and each
    // copy's, after `open` took one more) drops it, so `view` outlives every VMA using it.
    // Nothing fails after this: the mm core would free the VMA without `close`.
    unsafe { vma.set_ops::<ViewMapping>(&*view) };
    Ok(())
}

/// Inserts every page of the version at mmap, one page table (512 pages) per
/// `vm_insert_pages` call. Each batch's pages are looked up in the segment's file (RCU, no
/// dsu lock) with references of our own, dropped after the insert (which takes its own).
fn prefault(vma: &VmaNew, version: &Version) -> Result {
    const BATCH: usize = 512;
    let mut addr = vma.start();
    for run in version.map.runs() {
        let mut file = run.file;
        let end = run.file + run.count;
        while file < end {
            let n = (BATCH as u64).min(end - file) as usize;
            let mut refs: KVVec<PageRef> = KVVec::with_capacity(n, GFP_KERNEL)?;
            for i in 0..n as u64 {
                let page = version.segment.file_page(file + i).ok_or(EFAULT)?;
                refs.push(page, GFP_KERNEL)?;
            }
            let mut batch: KVVec<BorrowedPage<'_>> = KVVec::with_capacity(n, GFP_KERNEL)?;
            for page in refs.iter() {
                batch.push(page.borrow(), GFP_KERNEL)?;
            }
            vma.insert_pages(addr, &batch)?;
            addr += n * PAGE_SIZE;
            file += n as u64;
        }
    }
    Ok(())
}

/// `mmap` of a handle: the heap window, a view, or (offset 0) the handle's version.
pub fn mmap(handle: &Handle, file: &File, vma: &VmaNew) -> Result {
    match vma.pgoff() as u64 {
        HEAP_PGOFF => return mmap_heap(handle, file, vma),
        p if p >= VIEW_PGOFF => return mmap_view(handle, vma),
        _ => {}
    }
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
    vma.set_pgoff(window(&version.segment).0 as usize);
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
