// SPDX-License-Identifier: GPL-2.0-only

//! Internal tmpfs (shmem) files, used as the backing store of segment pages.
//! Segment pages live in a kernel-internal, unlinked shmem file (access control is dsu's
//! own) so that they are ordinary page-cache pages with a `mapping` and an `index`.
//! That is what lets a *shared* futex on a segment page work: the futex key of a page-cache
//! page is `(inode, index)`, the same in every process whatever address maps it. Pages are
//! zeroed by shmem and charged to the memory cgroup of the task that allocates them. The
//! mapping is made unevictable (like `SHM_LOCK`): dsu holds a reference to every page and
//! maps them with `vm_insert_page(s)`, which rmap cannot see through the shmem inode, so
//! they must never be swapped out or truncated behind dsu's back.
//!
//! The files live on a private tmpfs mount with `huge=never` ([`ShmemMount`], as drm's
//! gemfs does), not on the kernel's internal `shm_mnt`: that one follows
//! `/sys/kernel/mm/transparent_hugepage/shmem_enabled`, and with `always` or `within_size`
//! every allocation would be a 2 MiB folio, pinning up to 512 times the memory asked for.
//! Only `shmem_enabled=force` (a testing knob that overrides every mount) still makes huge
//! folios: [`ShmemFile::page`] checks every page and refuses one of a large folio with
//! `ENOMEM`, so nothing ever assumes order 0 silently.
//!
//! A file may also be mapped into userspace in place of the device file
//! ([`ShmemFile::map_over`], as SysV shm and `dma_buf_mmap` do): the VMA's file becomes the
//! shmem file, so shmem's own fault handler serves it (SIGBUS past the file's size, page
//! cache lookups), and `fallocate` punching a hole zaps every process's page-table entries
//! through the file's reverse map. The VMA's operations are a copy of shmem's with `open`
//! and `close` holding a reference to the device file that was mapped, so the device
//! object behind it, and this module, live as long as any such VMA.

use super::{
    file::File,
    mm::{mkwrite_result, BorrowedPage, LockedForWrite, MkwriteRetry, PageRef, VmFault, VmaNew},
};
use core::{
    cell::UnsafeCell,
    ptr::NonNull,
    sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering},
};
use kernel::{
    bindings,
    error::{code::*, from_err_ptr, to_result},
    prelude::*,
    str::CStr,
};

// C helpers (`helpers.c`) for inlines of headers the Rust bindings lack. As below, the
// types contain a zero-sized placeholder struct deep inside, although only pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn dsu_get_file(file: *mut bindings::file) -> *mut bindings::file;
    fn dsu_i_size_read(inode: *const bindings::inode) -> bindings::loff_t;
    fn dsu_task_size() -> kernel::ffi::c_ulong;
    fn dsu_shmem_sb_set_class(mnt: *mut bindings::vfsmount);
    fn dsu_shmem_file_set_class(file: *mut bindings::file);
    fn dsu_lock_barrier(
        mapping: *mut bindings::address_space,
        start: kernel::ffi::c_ulong,
        end: kernel::ffi::c_ulong,
        pinned: unsafe extern "C" fn(*mut c_void, kernel::ffi::c_ulong, *mut bindings::page),
        ctx: *mut c_void,
    );
}

use core::ffi::c_void;

/// What a VMA mapped with [`ShmemFile::map_over`] does on the first write through each of
/// its (read-only) PTEs: `owner` is the device file that was mapped.
pub trait OwnerMkwrite {
    /// As [`super::mm::VmOperations::page_mkwrite`]; `vmf.page()` is a page of the file,
    /// at index `vmf.pgoff()`.
    fn page_mkwrite(owner: &File, vmf: &VmFault) -> Result<LockedForWrite, MkwriteRetry>;
}

/// `FALLOC_FL_KEEP_SIZE` and `FALLOC_FL_PUNCH_HOLE` (`include/uapi/linux/falloc.h`, not in
/// the 6.12 bindings).
const FALLOC_FL_KEEP_SIZE: kernel::ffi::c_int = 0x01;
const FALLOC_FL_PUNCH_HOLE: kernel::ffi::c_int = 0x02;

/// One past the highest user address of the current task (`TASK_SIZE`).
pub fn task_size() -> u64 {
    // SAFETY: Reads the current task's address-space limit; always valid in process context.
    unsafe { dsu_task_size() as u64 }
}

/// `AS_UNEVICTABLE` of `enum mapping_flags` (`include/linux/pagemap.h`, not in the 6.12
/// bindings).
const AS_UNEVICTABLE: usize = 3;

const fn bit(b: u32) -> u32 {
    1 << b
}

/// Allocation flags for segment pages: `GFP_HIGHUSER` (not movable: dsu pins every page for
/// the segment's life), silent, and allowed to fail (`__GFP_RETRY_MAYFAIL`), so that a memory
/// cgroup charge past `memory.max` returns `ENOMEM` instead of invoking the OOM killer.
const PAGE_GFP: bindings::gfp_t = bit(bindings::___GFP_HIGHMEM_BIT)
    | bit(bindings::___GFP_DIRECT_RECLAIM_BIT)
    | bit(bindings::___GFP_KSWAPD_RECLAIM_BIT)
    | bit(bindings::___GFP_IO_BIT)
    | bit(bindings::___GFP_FS_BIT)
    | bit(bindings::___GFP_HARDWALL_BIT)
    | bit(bindings::___GFP_NOWARN_BIT)
    | bit(bindings::___GFP_RETRY_MAYFAIL_BIT);

// `include/linux/shmem_fs.h` is not in the 6.12 bindings' headers, so these exported
// functions are declared here. The types contain a zero-sized placeholder struct deep
// inside (`sched_statistics`), which trips `improper_ctypes` although only pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn shmem_file_setup_with_mnt(
        mnt: *mut bindings::vfsmount,
        name: *const kernel::ffi::c_char,
        size: bindings::loff_t,
        flags: kernel::ffi::c_ulong,
    ) -> *mut bindings::file;
    fn shmem_read_mapping_page_gfp(
        mapping: *mut bindings::address_space,
        index: kernel::ffi::c_ulong,
        gfp: bindings::gfp_t,
    ) -> *mut bindings::page;
    fn pagecache_get_page(
        mapping: *mut bindings::address_space,
        index: kernel::ffi::c_ulong,
        fgp_flags: kernel::ffi::c_uint,
        gfp: bindings::gfp_t,
    ) -> *mut bindings::page;
    fn shmem_truncate_range(
        inode: *mut bindings::inode,
        start: bindings::loff_t,
        end: bindings::loff_t,
    );
}

/// `SB_KERNMOUNT` (`include/linux/fs.h`): a kernel-internal mount, with no size or inode
/// limits (as `shm_mnt`).
const SB_KERNMOUNT: kernel::ffi::c_int = 1 << 22;

/// The mount [`ShmemFile::new`] creates files on while a [`ShmemMount`] lives; null
/// otherwise.
static MOUNT: AtomicPtr<bindings::vfsmount> = AtomicPtr::new(core::ptr::null_mut());

/// The module's private tmpfs mount (`huge=never`), unmounted on drop.
///
/// Create one at module init and keep it until exit, after every [`ShmemFile`] is gone;
/// files made meanwhile use it (a file also holds its own reference to the mount).
///
/// # Invariants
///
/// `mnt` is a mount from `vfs_kern_mount`, published in `MOUNT` until drop.
pub struct ShmemMount {
    mnt: NonNull<bindings::vfsmount>,
}

// SAFETY: The mount is only used through `MOUNT` and unmounted by `drop`, from any thread.
unsafe impl Send for ShmemMount {}
// SAFETY: `&ShmemMount` allows nothing.
unsafe impl Sync for ShmemMount {}

impl ShmemMount {
    /// Mounts a private tmpfs with huge pages off and makes [`ShmemFile::new`] use it.
    /// `EBUSY` if one is mounted already.
    pub fn new() -> Result<Self> {
        // SAFETY: The name is NUL-terminated. tmpfs is built in (SHMEM), so the reference
        // this takes on its module is a no-op, as in drm's gemfs.
        let fs = unsafe { bindings::get_fs_type(kernel::c_str!("tmpfs").as_char_ptr()) };
        if fs.is_null() {
            return Err(ENODEV);
        }
        // Writable: mount option parsing splits the string in place.
        let mut options = *b"huge=never\0";
        // SAFETY: `fs` is a registered filesystem type with a static name; `options` is a
        // NUL-terminated, writable string that is only used during the call.
        let mnt = from_err_ptr(unsafe {
            bindings::vfs_kern_mount(fs, SB_KERNMOUNT, (*fs).name, options.as_mut_ptr().cast())
        })?;
        let mnt = NonNull::new(mnt).ok_or(ENOMEM)?;
        // SAFETY: A fresh mount that nobody else uses yet (see the helper for why).
        unsafe { dsu_shmem_sb_set_class(mnt.as_ptr()) };
        if MOUNT
            .compare_exchange(
                core::ptr::null_mut(),
                mnt.as_ptr(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: Mounted above and published nowhere.
            unsafe { bindings::kern_unmount(mnt.as_ptr()) };
            return Err(EBUSY);
        }
        // INVARIANT: Mounted and published above.
        Ok(Self { mnt })
    }
}

impl Drop for ShmemMount {
    fn drop(&mut self) {
        MOUNT.store(core::ptr::null_mut(), Ordering::Release);
        // SAFETY: Mounted in `new` (type invariant). Files still open on it hold their own
        // mount references, so it goes away with the last of them.
        unsafe { bindings::kern_unmount(self.mnt.as_ptr()) };
    }
}

/// An unlinked, kernel-internal shmem file on the private mount, released on drop.
///
/// # Invariants
///
/// `file` is a valid file from `shmem_file_setup_with_mnt` that this object holds a
/// reference to, with an unevictable mapping.
pub struct ShmemFile {
    file: NonNull<bindings::file>,
}

// SAFETY: The file reference may be used and dropped from any thread.
unsafe impl Send for ShmemFile {}
// SAFETY: Shared access only calls shmem functions that do their own locking.
unsafe impl Sync for ShmemFile {}

impl ShmemFile {
    /// Creates a file able to hold `pages` pages (nothing is allocated or reserved yet), on
    /// the [`ShmemMount`]: `ENODEV` if there is none.
    pub fn new(name: &CStr, pages: u64) -> Result<Self> {
        let size = pages
            .checked_mul(kernel::page::PAGE_SIZE as u64)
            .and_then(|s| bindings::loff_t::try_from(s).ok())
            .ok_or(EINVAL)?;
        let mnt = MOUNT.load(Ordering::Acquire);
        if mnt.is_null() {
            return Err(ENODEV);
        }
        // SAFETY: `mnt` is the published mount, which lives while the module serves files
        // (a `ShmemMount` is kept from init to exit, and every caller runs in between); the
        // new file takes its own mount reference. `name` is NUL-terminated; VM_NORESERVE
        // defers accounting to allocation.
        let file = from_err_ptr(unsafe {
            shmem_file_setup_with_mnt(mnt, name.as_char_ptr(), size, bindings::VM_NORESERVE as _)
        })?;
        // INVARIANT: A successful setup returns a valid file with a reference for us.
        let this = Self {
            file: NonNull::new(file).ok_or(ENOMEM)?,
        };
        // SAFETY: A new, unshared file whose inode's lock nobody holds.
        unsafe { dsu_shmem_file_set_class(this.file.as_ptr()) };
        let mapping = this.mapping();
        // SAFETY: The mapping of a new, unshared file is valid. `flags` is only changed with
        // atomic bit operations (`set_bit` in C), which this mirrors; `gfp_mask` is a plain
        // field nobody else writes for an internal file.
        unsafe {
            AtomicUsize::from_ptr((&raw mut (*mapping).flags).cast())
                .fetch_or(1 << AS_UNEVICTABLE, Ordering::Relaxed);
            (*mapping).gfp_mask = PAGE_GFP;
        }
        Ok(this)
    }

    fn mapping(&self) -> *mut bindings::address_space {
        // SAFETY: The file is valid by the type invariant.
        unsafe { (*self.file.as_ptr()).f_mapping }
    }

    /// The zeroed (or previously written) page at `index`, allocated if needed and charged
    /// to the caller's memory cgroup. `ENOMEM` if that fails, or if shmem made it part of a
    /// large folio (only with `shmem_enabled=force`): dsu pins and maps single pages.
    pub fn page(&self, index: u64) -> Result<PageRef> {
        let index = kernel::ffi::c_ulong::try_from(index).map_err(|_| EINVAL)?;
        // SAFETY: The mapping is valid by the type invariant.
        let page = unsafe { shmem_read_mapping_page_gfp(self.mapping(), index, PAGE_GFP) };
        match from_err_ptr(page) {
            Ok(page) => {
                // SAFETY: shmem returns the page with a reference, which `PageRef` now owns.
                let page = unsafe { PageRef::from_raw(NonNull::new(page).ok_or(ENOMEM)?) };
                if page.is_compound() {
                    return Err(ENOMEM);
                }
                Ok(page)
            }
            // Out of tmpfs or overcommit room: to the caller, memory ran out.
            Err(e) if e == ENOSPC => Err(ENOMEM),
            Err(e) => Err(e),
        }
    }

    /// The page at `index` if it is in the file, with a reference. A lock-free (RCU) lookup
    /// in the page cache that allocates nothing and never sleeps, for the fault path.
    pub fn lookup(&self, index: u64) -> Option<PageRef> {
        let index = kernel::ffi::c_ulong::try_from(index).ok()?;
        // SAFETY: The mapping is valid by the type invariant. With no `FGP_*` flags this is
        // `find_get_page`: an RCU walk of the page cache that takes a reference on the folio
        // found and returns its page at `index` (or NULL), with no lock and no allocation.
        let page = unsafe { pagecache_get_page(self.mapping(), index, 0, 0) };
        // SAFETY: A non-NULL page comes with a folio reference, which `PageRef` now owns
        // (`release_pages` drops it through the page's folio).
        let page = NonNull::new(page).map(|p| unsafe { PageRef::from_raw(p) })?;
        // Every page was checked when allocated; never map part of a large folio anyway.
        (!page.is_compound()).then_some(page)
    }

    /// Frees pages `[first, first + count)` from the file. References held elsewhere keep
    /// their pages alive until dropped.
    pub fn truncate(&self, first: u64, count: u64) {
        let page = kernel::page::PAGE_SIZE as u64;
        let (Some(start), Some(end)) = (
            first.checked_mul(page),
            first.checked_add(count).and_then(|e| e.checked_mul(page)),
        ) else {
            return;
        };
        if count == 0 {
            return;
        }
        // SAFETY: The file (and so its inode) is valid by the type invariant; the range is
        // page-aligned and inclusive at its end, as shmem expects.
        unsafe {
            shmem_truncate_range(
                (*self.file.as_ptr()).f_inode,
                start as bindings::loff_t,
                (end - 1) as bindings::loff_t,
            )
        };
    }
}

impl ShmemFile {
    fn inode(&self) -> *mut bindings::inode {
        // SAFETY: The file is valid by the type invariant; its inode never changes.
        unsafe { (*self.file.as_ptr()).f_inode }
    }

    /// The file's size in bytes (`i_size`).
    pub fn size(&self) -> u64 {
        // SAFETY: The inode is valid while the file is; `i_size_read` is the kernel's
        // lock-free read of the size.
        unsafe { dsu_i_size_read(self.inode()) as u64 }
    }

    /// `vfs_fallocate` over `[offset, offset + len)` (both fit `loff_t`, else `EINVAL`).
    fn fallocate(&self, mode: kernel::ffi::c_int, offset: u64, len: u64) -> Result {
        let off = bindings::loff_t::try_from(offset).map_err(|_| EINVAL)?;
        let len = bindings::loff_t::try_from(len).map_err(|_| EINVAL)?;
        // SAFETY: The file is valid (type invariant) and opened read-write by shmem.
        to_result(unsafe { bindings::vfs_fallocate(self.file.as_ptr(), mode, off, len) })
    }

    /// Allocates the pages of `[offset, offset + len)` now (zeroed when first used, charged
    /// to the caller's memory cgroup with the mapping's may-fail flags) and extends the size
    /// to `offset + len` once they all are: shmem's `fallocate`, which frees what it
    /// allocated and leaves the size alone if any page fails. `ENOMEM` when memory runs out
    /// (shmem's `ENOSPC` included), `EINTR` when a signal is pending.
    pub fn allocate(&self, offset: u64, len: u64) -> Result {
        match self.fallocate(0, offset, len) {
            Err(e) if e == ENOSPC => Err(ENOMEM),
            r => r,
        }
    }

    /// Frees the pages of `[offset, offset + len)` (page-aligned), keeping the size: every
    /// mapping of the range loses its page-table entries first, so it reads as zeros after,
    /// in every process (shmem's `FALLOC_FL_PUNCH_HOLE`, as `MADV_REMOVE`).
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result {
        self.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len)
    }

    /// The page at `index` if it is in the file and up to date, with a reference (no lock,
    /// no allocation). A page that `allocate` made but nobody used yet holds stale bytes
    /// until shmem zeroes it on first use: it is `None`, like a hole (both read as zeros).
    pub fn lookup_uptodate(&self, index: u64) -> Option<PageRef> {
        self.lookup(index).filter(PageRef::is_uptodate)
    }

    /// Unmaps pages `[first, first + count)` from every mapping of the file (every process's
    /// PTEs go, TLBs flushed): the next access faults. `count` 0: to the end.
    pub fn zap(&self, first: u64, count: u64) {
        zap_mapping(self.mapping(), first, count);
    }

    /// Locks and unlocks every page of the file in `[first, last]`, so that any fault that
    /// held one locked (a `page_mkwrite` until its PTE is installed) has finished; calls
    /// `pinned` with each page that may be pinned for DMA, locked, and its index.
    pub fn lock_barrier<F: FnMut(u64, BorrowedPage<'_>)>(
        &self,
        first: u64,
        last: u64,
        mut pinned: F,
    ) {
        /// # Safety
        ///
        /// `ctx` is the `&mut F` below, `page` a locked, referenced page.
        unsafe extern "C" fn trampoline<F: FnMut(u64, BorrowedPage<'_>)>(
            ctx: *mut c_void,
            index: kernel::ffi::c_ulong,
            page: *mut bindings::page,
        ) {
            // SAFETY: The helper holds a reference to the page (its folio batch) for the call.
            let page = unsafe { PageRef::from_raw(NonNull::new_unchecked(page)) };
            // SAFETY: As above: the batch's reference outlives the borrow.
            let borrowed = unsafe { page.borrow_for() };
            // The batch's reference, not ours: do not drop it.
            let _ = page.into_raw();
            // SAFETY: `ctx` is the closure (caller of `dsu_lock_barrier` below).
            unsafe { (*ctx.cast::<F>())(index as u64, borrowed) };
        }
        let (Ok(first), Ok(last)) = (
            kernel::ffi::c_ulong::try_from(first),
            kernel::ffi::c_ulong::try_from(last),
        ) else {
            return;
        };
        // SAFETY: The mapping is valid (type invariant); the callback and its context live
        // for the call.
        unsafe {
            dsu_lock_barrier(
                self.mapping(),
                first,
                last,
                trampoline::<F>,
                (&raw mut pinned).cast(),
            )
        };
    }

    /// Makes the VMA that a device file's `mmap` is setting up a shared mapping of this file
    /// from offset 0 instead: its file becomes this one (`vma_set_file`), shmem's `mmap`
    /// installs shmem's operations, and those are replaced by a copy whose `open`/`close`
    /// hold a reference to `owner` (the device file, which the caller's objects and this
    /// module live as long as) per VMA, and whose `mremap` refuses to move it.
    ///
    /// The caller has checked everything else: after the file is swapped nothing else may
    /// fail in its `mmap` (the mm core then releases the new file, not the old one).
    pub fn map_over<M: OwnerMkwrite>(&self, vma: &VmaNew, owner: &File) -> Result {
        let raw = vma.as_raw();
        let shm = self.file.as_ptr();
        // SAFETY: A shmem file's `f_op` is shmem's static table.
        let mmap = unsafe { (*(*shm).f_op).mmap }.ok_or(ENODEV)?;
        // Refuse mremap growth. VM_DONTEXPAND is also VM_SPECIAL, so the mm core never
        // merges the VMA with a neighbour (which would drop it without `close`).
        vma.set_dontexpand();
        // SAFETY: The VMA is being set up under the mmap write lock and is not visible yet
        // (`VmaNew`). `vma_set_file` takes a reference to `shm` and drops the VMA's reference
        // to the device file (the mm core holds its own until `mmap` returns). shmem's
        // `mmap` only marks the file accessed and sets `vm_ops`.
        unsafe {
            bindings::vma_set_file(raw, shm);
            (*raw).vm_pgoff = 0;
            to_result(mmap(shm, raw))?;
            let ops = OWNED_SHMEM_OPS.get((*raw).vm_ops, owner_page_mkwrite::<M>)?;
            (*raw).vm_private_data = dsu_get_file(owner.as_ptr()).cast();
            (*raw).vm_ops = ops;
        }
        Ok(())
    }
}

/// shmem's VMA operations with `open`/`close` that hold a reference to the VMA's
/// `vm_private_data`, a file, and an `mremap` that refuses to move the VMA: filled once, at
/// the first [`ShmemFile::map_over`], from the table shmem's `mmap` installed (shmem's
/// tables are static and not exported, so they can only be read from a VMA).
struct OwnedShmemOps {
    ops: UnsafeCell<bindings::vm_operations_struct>,
    /// The shmem table `ops` was copied from (null before).
    base: AtomicPtr<bindings::vm_operations_struct>,
    /// 0: empty, 1: being filled, 2: filled.
    state: AtomicU8,
}

// SAFETY: `ops` is written once, by the thread that moved `state` from 0 to 1, before
// `state` becomes 2 (release); it is read only after seeing 2 (acquire).
unsafe impl Sync for OwnedShmemOps {}

static OWNED_SHMEM_OPS: OwnedShmemOps = OwnedShmemOps {
    // SAFETY: All-zero is a valid `vm_operations_struct` (no callbacks).
    ops: UnsafeCell::new(unsafe { core::mem::zeroed() }),
    base: AtomicPtr::new(core::ptr::null_mut()),
    state: AtomicU8::new(0),
};

impl OwnedShmemOps {
    /// The wrapped table for shmem's table `shmem`: `EINVAL` if the table is not the one the
    /// wrapper was made from (both shmem tables of unlinked files are the same one) or if
    /// shmem's table has callbacks of its own that the wrapper would replace.
    ///
    /// # Safety
    ///
    /// `shmem` must be the `vm_ops` shmem's `mmap` just installed.
    unsafe fn get(
        &self,
        shmem: *const bindings::vm_operations_struct,
        mkwrite: unsafe extern "C" fn(*mut bindings::vm_fault) -> bindings::vm_fault_t,
    ) -> Result<*const bindings::vm_operations_struct> {
        loop {
            match self
                .state
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: `shmem` is a valid static table (caller); this thread alone
                    // writes `ops` (state 1), and nobody reads it before state 2.
                    unsafe {
                        let mut ops = *shmem;
                        if ops.open.is_some()
                            || ops.close.is_some()
                            || ops.mremap.is_some()
                            || ops.page_mkwrite.is_some()
                        {
                            self.state.store(0, Ordering::Release);
                            return Err(EINVAL);
                        }
                        ops.open = Some(owner_open);
                        ops.close = Some(owner_close);
                        ops.mremap = Some(refuse_mremap);
                        // With `page_mkwrite` the mm core maps pages read-only until it
                        // allows a write (`vma_wants_writenotify`). One `M` per module.
                        ops.page_mkwrite = Some(mkwrite);
                        *self.ops.get() = ops;
                    }
                    self.base.store(shmem.cast_mut(), Ordering::Relaxed);
                    self.state.store(2, Ordering::Release);
                    break;
                }
                Err(2) => break,
                Err(_) => core::hint::spin_loop(),
            }
        }
        if !core::ptr::eq(self.base.load(Ordering::Relaxed), shmem) {
            return Err(EINVAL);
        }
        Ok(self.ops.get())
    }
}

/// `vm_ops->open` of a VMA mapped by [`ShmemFile::map_over`] (fork, split): one more
/// reference to the owner file.
///
/// # Safety
///
/// The mm core calls it with a valid VMA whose `vm_private_data` is a file it holds.
unsafe extern "C" fn owner_open(vma: *mut bindings::vm_area_struct) {
    // SAFETY: The VMA was copied from one holding a reference to this file, so it is alive.
    unsafe { dsu_get_file((*vma).vm_private_data.cast()) };
}

/// `vm_ops->close`: drops the VMA's reference to the owner file. The file's last `fput`
/// defers its release (task work or a workqueue), so this function has returned before
/// the module it belongs to can be unloaded.
///
/// # Safety
///
/// As [`owner_open`].
unsafe extern "C" fn owner_close(vma: *mut bindings::vm_area_struct) {
    // SAFETY: The VMA holds one reference (taken at map time or by `owner_open`).
    unsafe { bindings::fput((*vma).vm_private_data.cast()) };
}

/// `vm_ops->page_mkwrite` of a VMA mapped by [`ShmemFile::map_over`]: `M`'s, with the
/// owner file.
///
/// # Safety
///
/// The mm core calls it with a valid fault on such a VMA (whose `vm_private_data` is a file
/// it holds), its page referenced.
unsafe extern "C" fn owner_page_mkwrite<M: OwnerMkwrite>(
    vmf: *mut bindings::vm_fault,
) -> bindings::vm_fault_t {
    // SAFETY: The fault and its VMA are valid for the call; the VMA holds the owner file.
    let (owner, vmf) = unsafe {
        (
            File::from_raw((*(*vmf).__bindgen_anon_1.vma).vm_private_data.cast()),
            VmFault::from_raw(vmf),
        )
    };
    mkwrite_result(M::page_mkwrite(owner, &vmf))
}

/// `vm_ops->mremap`: the window must stay at its address in every process.
///
/// # Safety
///
/// Called by the mm core only.
unsafe extern "C" fn refuse_mremap(_vma: *mut bindings::vm_area_struct) -> kernel::ffi::c_int {
    -(bindings::EINVAL as kernel::ffi::c_int)
}

impl Drop for ShmemFile {
    fn drop(&mut self) {
        // SAFETY: We own a reference to the file (type invariant).
        unsafe { bindings::fput(self.file.as_ptr()) };
    }
}

/// Unmaps `[first, first + count)` pages (0: to the end) of `mapping` from every process
/// (`unmap_mapping_range`, private copies included).
pub(super) fn zap_mapping(mapping: *mut bindings::address_space, first: u64, count: u64) {
    let page = kernel::page::PAGE_SIZE as u64;
    let start = first.saturating_mul(page).min(i64::MAX as u64);
    let len = count.saturating_mul(page).min(i64::MAX as u64);
    // SAFETY: The caller passes a valid mapping; `unmap_mapping_range` takes its own locks
    // (`i_mmap_rwsem`, page table locks) and flushes TLBs before returning.
    unsafe {
        bindings::unmap_mapping_range(
            mapping,
            start as bindings::loff_t,
            len as bindings::loff_t,
            1,
        )
    };
}
