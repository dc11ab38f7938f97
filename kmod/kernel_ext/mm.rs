// SPDX-License-Identifier: GPL-2.0-only

//! Memory management: VMAs, page faults and page references.
//!
//! - [`VmaNew`]: a VMA being set up by a file's `mmap` (mmap_lock held for writing, the VMA
//!   not yet in the tree), with typed flag setters (as upstream's 6.15+ `VmaNew`) and page
//!   insertion.
//! - [`VmArea`]: a VMA seen from `vm_operations_struct` callbacks (mmap_lock or the VMA lock
//!   held), with read-only accessors.
//! - [`VmOperations`] and [`VmOpsTable`]: a typed `vm_operations_struct`. Callbacks check
//!   that a VMA's `vm_ops` is the table and its `vm_private_data` is set before use.
//! - `page_mkwrite`: [`VmOperations::page_mkwrite`] makes the mm core map the VMA's pages
//!   read-only and call it before the first write through each PTE; it returns the page
//!   locked ([`PageLock::hand_to_fault`]) so that the PTE becomes writable before anyone
//!   else can lock the page, or asks for the fault to be retried.
//! - [`PageRef`]: an owned page reference; [`BorrowedPage`]: a page borrowed for a lifetime
//!   (as upstream's `BorrowedPage<'a>`), so that safe code cannot use a page after the
//!   reference that keeps it alive is gone. Bytes move between pages and userspace through
//!   raw pointers only: other processes may write the pages at any time, so no Rust
//!   reference to their contents is ever formed.

use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    bindings,
    error::{code::*, to_result},
    page::PAGE_SIZE,
    prelude::*,
    types::Opaque,
    uaccess::UserPtr,
};

// C helpers (`helpers.c`) for inlines of headers the Rust bindings lack; only pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn dsu_lock_page(page: *mut bindings::page);
    fn dsu_unlock_page(page: *mut bindings::page);
    fn dsu_page_has_mapping(page: *mut bindings::page) -> bool;
    fn dsu_page_maybe_dma_pinned(page: *mut bindings::page) -> bool;
    fn dsu_copy_page(to: *mut bindings::page, from: *mut bindings::page);
    fn dsu_alloc_page_charged(memcg: *mut bindings::mem_cgroup) -> *mut bindings::page;
    fn dsu_current_memcg() -> *mut bindings::mem_cgroup;
    fn dsu_memcg_put(memcg: *mut bindings::mem_cgroup);
    fn dsu_fatal_signal_pending() -> bool;
}

/// Whether the current task has a fatal signal pending (it is being killed).
pub fn fatal_signal_pending() -> bool {
    // SAFETY: Reads the current task's signal state; always valid in process context.
    unsafe { dsu_fatal_signal_pending() }
}

/// A reference to a memory cgroup (the one of the task that made it), dropped on drop.
///
/// # Invariants
///
/// `0` is null (no memcg) or a memcg this object holds a reference to.
pub struct MemCgroup(*mut bindings::mem_cgroup);

// SAFETY: A memcg reference may be used and dropped from any thread.
unsafe impl Send for MemCgroup {}
// SAFETY: Shared access only passes the pointer to functions that take their own care.
unsafe impl Sync for MemCgroup {}

impl MemCgroup {
    /// The current task's memory cgroup.
    pub fn current() -> Self {
        // SAFETY: Process context; returns a referenced memcg or null.
        Self(unsafe { dsu_current_memcg() })
    }

    /// A zeroed-or-not page (contents unspecified: the caller overwrites it), charged to
    /// this memcg (`__GFP_ACCOUNT` with it as the active memcg), allowed to fail instead of
    /// invoking the OOM killer. May sleep.
    pub fn alloc_page(&self) -> Option<PageRef> {
        // SAFETY: `self.0` is null or referenced (type invariant); the helper only makes it
        // the active memcg for the allocation.
        let page = unsafe { dsu_alloc_page_charged(self.0) };
        // SAFETY: A new page comes with one reference, which `PageRef` now owns.
        NonNull::new(page).map(|p| unsafe { PageRef::from_raw(p) })
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // SAFETY: Null or a reference we own (type invariant).
        unsafe { dsu_memcg_put(self.0) };
    }
}

/// An owned reference to a page, dropped with `release_pages`.
///
/// # Invariants
///
/// Holds one reference to a valid page.
#[repr(transparent)]
pub struct PageRef(NonNull<bindings::page>);

// SAFETY: Page references may be used and dropped from any thread.
unsafe impl Send for PageRef {}
// SAFETY: Shared access only reads the pointer.
unsafe impl Sync for PageRef {}

impl PageRef {
    /// Takes ownership of a page reference.
    ///
    /// # Safety
    ///
    /// `page` must be a valid page and the caller must own one reference to it, which is
    /// transferred.
    pub unsafe fn from_raw(page: NonNull<bindings::page>) -> Self {
        Self(page)
    }

    /// The page, borrowed for as long as this reference is.
    pub fn borrow(&self) -> BorrowedPage<'_> {
        // SAFETY: `self` holds a reference (type invariant) for the whole borrow.
        unsafe { BorrowedPage::from_raw(self.0) }
    }

    /// The page, borrowed for `'a`, which may be longer than the borrow of `self`.
    ///
    /// # Safety
    ///
    /// This reference (or another one to the same page) must be kept for all of `'a`: e.g.
    /// it is owned by an object that only drops its page references when it is dropped
    /// itself, and `'a` is a borrow of that object.
    pub unsafe fn borrow_for<'a>(&self) -> BorrowedPage<'a> {
        // SAFETY: The caller keeps a reference for `'a`.
        unsafe { BorrowedPage::from_raw(self.0) }
    }

    /// Whether the page belongs to a large folio (a huge or multi-page folio) rather than
    /// being a single order-0 page: `PageCompound()`.
    pub fn is_compound(&self) -> bool {
        let page = self.0.as_ptr();
        // SAFETY: The page is valid (type invariant). `flags` and `compound_head` may change
        // concurrently in other bits (e.g. PG_locked); volatile reads, as `READ_ONCE`.
        let (flags, head) = unsafe {
            (
                core::ptr::read_volatile(&raw const (*page).flags),
                core::ptr::read_volatile(
                    &raw const (*page).__bindgen_anon_1.__bindgen_anon_3.compound_head,
                ),
            )
        };
        flags & (1 << bindings::pageflags_PG_head) != 0 || head & 1 != 0
    }
}

impl PageRef {
    /// Gives up the reference as a raw pointer (take it back with [`PageRef::from_raw`]).
    pub fn into_raw(self) -> NonNull<bindings::page> {
        let page = self.0;
        core::mem::forget(self);
        page
    }

    /// Copies the whole page `src` into this page. `src` may be written meanwhile by others
    /// (the copy is then a mix, as any read of shared memory); lock it for a stable copy.
    pub fn copy_from(&self, src: BorrowedPage<'_>) {
        // SAFETY: Both pages are valid for the call (a reference each); the copy goes
        // through kernel mappings of the two pages, never through Rust references.
        unsafe { dsu_copy_page(self.0.as_ptr(), src.0.as_ptr()) };
    }

    /// Whether the page's contents are valid (`PageUptodate`): shmem leaves pages that
    /// `fallocate` allocated not up to date, with stale bytes, until their first use zeroes
    /// them; such a page reads as zeros.
    pub fn is_uptodate(&self) -> bool {
        let page = self.0.as_ptr();
        // SAFETY: The page is valid (type invariant). `flags` changes through atomic bit
        // operations; an acquire load pairs with `folio_mark_uptodate`'s barrier, so the
        // contents are visible once the bit is.
        let flags = unsafe {
            core::sync::atomic::AtomicUsize::from_ptr((&raw mut (*page).flags).cast())
                .load(core::sync::atomic::Ordering::Acquire)
        };
        flags & (1 << bindings::pageflags_PG_uptodate) != 0
    }
}

impl Drop for PageRef {
    fn drop(&mut self) {
        let mut page = self.0.as_ptr();
        // SAFETY: We own one reference (type invariant); `release_pages` drops one reference
        // per array entry, freeing the page if it was the last.
        unsafe { bindings::release_pages(bindings::release_pages_arg { pages: &mut page }, 1) };
    }
}

/// A page borrowed for the lifetime `'a`: someone holds a reference to it for all of `'a`.
///
/// Unlike a bare page pointer, it cannot outlive what keeps the page alive, so safe code
/// cannot copy into, copy out of or map a page that was freed. Make one with
/// [`PageRef::borrow`] (safe) or, where the owner's lifetime is not a Rust borrow of the
/// `PageRef`, with [`PageRef::borrow_for`] (unsafe, with that proof).
///
/// This replaces `PagePtr`, a `Copy` pointer with no lifetime whose safe users
/// (`VmaNew::insert_pages`) trusted it blindly: `let p = page.ptr(); drop(page);
/// vma.insert_pages(addr, &[p])` compiled and mapped a freed page into userspace. With
/// `BorrowedPage` the same code is rejected by the borrow checker (`page` is dropped while
/// borrowed), and the copies, which took `unsafe` "the page is alive" contracts before, are
/// safe.
///
/// # Invariants
///
/// Points to a valid page that some reference keeps alive for `'a`.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct BorrowedPage<'a>(NonNull<bindings::page>, PhantomData<&'a PageRef>);

// SAFETY: A borrowed page may be used from any thread while its reference lives.
unsafe impl Send for BorrowedPage<'_> {}
// SAFETY: See above.
unsafe impl Sync for BorrowedPage<'_> {}

/// A locked page (`lock_page`), unlocked on drop. While a writer's `page_mkwrite` holds
/// a page's lock, its PTE is not yet writable; the page stays locked until it is.
pub struct PageLock<'a> {
    page: BorrowedPage<'a>,
}

impl<'a> PageLock<'a> {
    /// The locked page.
    pub fn page(&self) -> BorrowedPage<'a> {
        self.page
    }

    /// Whether the page is still in its file (not truncated or punched out meanwhile).
    pub fn in_file(&self) -> bool {
        // SAFETY: The page is valid and locked, which keeps `mapping` stable.
        unsafe { dsu_page_has_mapping(self.page.0.as_ptr()) }
    }

    /// Whether the locked page's contents are valid (see [`PageRef::is_uptodate`]).
    pub fn is_uptodate(&self) -> bool {
        // SAFETY: The page is valid for the borrow; `PageRef` is a transparent pointer and
        // `is_uptodate` only reads flags, and the temporary is never dropped.
        let r = core::mem::ManuallyDrop::new(PageRef(self.page.0));
        r.is_uptodate()
    }

    /// Hands the lock to the mm core for a `page_mkwrite` of this very page: the fault
    /// makes the PTE writable and unlocks the page.
    pub fn hand_to_fault(self) -> LockedForWrite {
        core::mem::forget(self);
        LockedForWrite(())
    }
}

impl Drop for PageLock<'_> {
    fn drop(&mut self) {
        // SAFETY: Locked in `BorrowedPage::lock` by this guard.
        unsafe { dsu_unlock_page(self.page.0.as_ptr()) };
    }
}

/// Proof that a `page_mkwrite` locked the faulting page ([`PageLock::hand_to_fault`]).
pub struct LockedForWrite(());

/// A `page_mkwrite` that lets the fault be retried (`VM_FAULT_NOPAGE`): nothing was
/// written; the access faults again (after a fatal signal, the task dies first).
pub struct MkwriteRetry;

impl<'a> BorrowedPage<'a> {
    /// # Safety
    ///
    /// `page` must be valid and kept alive by a reference for the lifetime of the result.
    pub unsafe fn from_raw(page: NonNull<bindings::page>) -> Self {
        Self(page, PhantomData)
    }

    /// Maps the page, runs `f` on the kernel address of `offset` (with `offset + len` inside
    /// the page, else `EINVAL`), and unmaps it.
    fn with_mapped(&self, offset: usize, len: usize, f: impl FnOnce(*mut u8) -> Result) -> Result {
        if offset.checked_add(len).map_or(true, |end| end > PAGE_SIZE) {
            return Err(EINVAL);
        }
        // SAFETY: The page is valid for `'a` (type invariant); `kmap_local_page` maps it for
        // this thread.
        let addr = unsafe { bindings::kmap_local_page(self.0.as_ptr()) }.cast::<u8>();
        // SAFETY: `addr` maps a whole page and `offset <= PAGE_SIZE`.
        let result = f(unsafe { addr.add(offset) });
        // SAFETY: `addr` was returned by `kmap_local_page` above, in this thread.
        unsafe { bindings::kunmap_local(addr.cast()) };
        result
    }

    /// Locks the page (its folio, `lock_page`), sleeping until it is free; unlocked when the
    /// guard is dropped. Lock order: after `mmap_lock`, as the fault path takes it.
    pub fn lock(self) -> PageLock<'a> {
        // SAFETY: The page is valid for `'a` (type invariant).
        unsafe { dsu_lock_page(self.0.as_ptr()) };
        PageLock { page: self }
    }

    /// Whether the page may be pinned for DMA (`folio_maybe_dma_pinned`): someone may write
    /// it without going through a page table.
    pub fn maybe_dma_pinned(&self) -> bool {
        // SAFETY: The page is valid for `'a`.
        unsafe { dsu_page_maybe_dma_pinned(self.0.as_ptr()) }
    }

    /// Whether two borrows are of the same page.
    pub fn same_page(&self, other: &BorrowedPage<'_>) -> bool {
        self.0 == other.0
    }

    /// Copies `len` bytes from the user address `src` into the page at `offset`. `EFAULT`
    /// if any byte cannot be read (the page may then hold part of them).
    pub fn copy_from_user(self, src: UserPtr, offset: usize, len: usize) -> Result {
        self.with_mapped(offset, len, |dst| {
            // SAFETY: `dst` is `len` bytes of a mapped page; `_copy_from_user` checks `src`
            // with `access_ok` and copies through raw pointers, so concurrent writers through
            // other mappings only race with the copy, as any write to shared memory does.
            let left = unsafe {
                bindings::_copy_from_user(dst.cast(), src as *const _, len as kernel::ffi::c_ulong)
            };
            if left != 0 {
                return Err(EFAULT);
            }
            Ok(())
        })
    }

    /// Copies `len` bytes at `offset` in the page to the user address `dst`. `EFAULT` if
    /// any byte cannot be written. The copy reads the page through a raw pointer: a `&[u8]`
    /// over it (as `UserSliceWriter::write_slice` needs) would promise Rust that the bytes
    /// do not change while it lives, which other processes' writes break.
    pub fn copy_to_user(self, dst: UserPtr, offset: usize, len: usize) -> Result {
        self.with_mapped(offset, len, |src| {
            // SAFETY: `src` is `len` bytes of a mapped page; `_copy_to_user` checks `dst` with
            // `access_ok` and copies through raw pointers. Other mappings may write the bytes
            // meanwhile, which only makes the copy a racy snapshot, as a read of shared
            // memory is; no Rust reference to them is formed.
            let left = unsafe {
                bindings::_copy_to_user(dst as *mut _, src.cast(), len as kernel::ffi::c_ulong)
            };
            if left != 0 {
                return Err(EFAULT);
            }
            Ok(())
        })
    }
}

/// A VMA, borrowed within a VMA callback.
///
/// # Invariants
///
/// Points to a valid VMA whose mm is locked (mmap_lock or the VMA lock) for the borrow.
#[repr(transparent)]
pub struct VmArea(Opaque<bindings::vm_area_struct>);

impl VmArea {
    /// Borrows a raw VMA.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid VMA, locked for reading at least, for the lifetime `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::vm_area_struct) -> &'a Self {
        // SAFETY: Transparent wrapper; validity is guaranteed by the caller.
        unsafe { &*ptr.cast() }
    }

    fn raw(&self) -> *mut bindings::vm_area_struct {
        self.0.get()
    }

    /// The raw VMA, for the other `kernel_ext` files (`shmem.rs` maps a file over it).
    pub(super) fn as_raw(&self) -> *mut bindings::vm_area_struct {
        self.raw()
    }

    /// First address.
    pub fn start(&self) -> usize {
        // SAFETY: The VMA is valid by the type invariant; its bounds are stable while locked.
        unsafe { (*self.raw()).__bindgen_anon_1.__bindgen_anon_1.vm_start as usize }
    }

    /// One past the last address.
    pub fn end(&self) -> usize {
        // SAFETY: As in `start`.
        unsafe { (*self.raw()).__bindgen_anon_1.__bindgen_anon_1.vm_end as usize }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end() - self.start()
    }

    /// Offset in the file, in pages.
    pub fn pgoff(&self) -> usize {
        // SAFETY: As in `start`.
        unsafe { (*self.raw()).vm_pgoff as usize }
    }

    /// The `VM_*` flags.
    pub fn flags(&self) -> usize {
        // SAFETY: As in `start`; flags only change under the write lock.
        unsafe { (*self.raw()).__bindgen_anon_2.__vm_flags }
    }

    /// The private data if this VMA is ours: its `vm_ops` is `T`'s table and its
    /// `vm_private_data` is set.
    pub fn data_if_ours<T: VmOperations>(&self) -> Option<&T::Data> {
        // SAFETY: As in `start`.
        let (ops, data) = unsafe { ((*self.raw()).vm_ops, (*self.raw()).vm_private_data) };
        if !core::ptr::eq(ops, &T::table().ops) || data.is_null() {
            return None;
        }
        // SAFETY: Only `VmaNew::set_ops::<T>` installs `T`'s table, with a `T::Data` that it
        // requires to outlive the VMA.
        Some(unsafe { &*data.cast::<T::Data>() })
    }
}

/// `VM_*` flags, for reading [`VmArea::flags`]. Set them with [`VmaNew`]'s typed setters.
pub mod flags {
    use kernel::bindings;
    /// `VM_SHARED`: writes go to the shared object, not copy-on-write.
    pub const SHARED: usize = bindings::VM_SHARED as usize;
    /// `VM_DONTEXPAND`: mremap may not grow the VMA.
    pub const DONTEXPAND: usize = bindings::VM_DONTEXPAND as usize;
    /// `VM_DONTDUMP`: not in core dumps.
    pub const DONTDUMP: usize = bindings::VM_DONTDUMP as usize;
    /// `VM_MIXEDMAP`: pages inserted with `vm_insert_page(s)`.
    pub const MIXEDMAP: usize = bindings::VM_MIXEDMAP as usize;
}

/// A VMA under construction in a file's `mmap` operation.
///
/// Flags are set through one typed setter per flag, as upstream's `VmaNew` (6.15+): only
/// flags that are sound to set on a new VMA of a driver that maps struct pages are offered
/// (no `VM_PFNMAP`, which `vm_insert_page(s)` would `BUG()` on, nor any bit the mm core
/// owns, such as `VM_SHARED`, `VM_WRITE` or `VM_LOCKED`). The former `set_flags(usize)` took
/// any bits, so safe code could set `VM_PFNMAP` and then crash the kernel in
/// `insert_pages`, or turn a read-only mapping writable with `VM_WRITE`.
///
/// # Invariants
///
/// The mmap_lock is held for writing and the VMA is not yet visible in the mm's tree, so
/// its fields may be written directly.
#[repr(transparent)]
pub struct VmaNew(VmArea);

impl core::ops::Deref for VmaNew {
    type Target = VmArea;
    fn deref(&self) -> &VmArea {
        &self.0
    }
}

impl VmaNew {
    /// Borrows the VMA given to `mmap`.
    ///
    /// # Safety
    ///
    /// `ptr` must be the VMA passed to a file's `mmap` operation, for that call's duration.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::vm_area_struct) -> &'a Self {
        // SAFETY: Transparent wrapper; validity is guaranteed by the caller.
        unsafe { &*ptr.cast() }
    }

    fn set_flag(&self, flag: usize) {
        // SAFETY: By the type invariant nobody else can see the VMA yet.
        unsafe { (*self.raw()).__bindgen_anon_2.__vm_flags |= flag };
    }

    /// Sets `VM_MIXEDMAP`: pages are inserted with [`VmaNew::insert_pages`] and
    /// [`VmFault::insert_page`], which require it.
    pub fn set_mixedmap(&self) {
        self.set_flag(flags::MIXEDMAP);
    }

    /// Sets `VM_DONTEXPAND`: mremap may not grow the VMA.
    pub fn set_dontexpand(&self) {
        self.set_flag(flags::DONTEXPAND);
    }

    /// Sets `VM_DONTDUMP`: the VMA is left out of core dumps.
    pub fn set_dontdump(&self) {
        self.set_flag(flags::DONTDUMP);
    }

    /// Sets the VMA's offset in its file's address space, in pages (before it is linked
    /// into the file's reverse map, which indexes it by this offset).
    pub fn set_pgoff(&self, pgoff: usize) {
        // SAFETY: By the type invariant nobody else can see the VMA yet.
        unsafe { (*self.raw()).vm_pgoff = pgoff as _ };
    }

    /// Installs `T`'s table as the VMA's operations with `data` as its private data.
    ///
    /// # Safety
    ///
    /// `data` must stay valid until the VMA and every VMA copied from it (fork, split) is
    /// closed, e.g. because it is owned by the file that the VMA holds a reference to.
    pub unsafe fn set_ops<T: VmOperations>(&self, data: &T::Data) {
        // SAFETY: By the type invariant nobody else can see the VMA yet.
        unsafe {
            (*self.raw()).vm_ops = &T::table().ops;
            (*self.raw()).vm_private_data = (data as *const T::Data).cast_mut().cast();
        }
    }

    /// Inserts `pages` at `addr` onwards with `vm_insert_pages` (which takes its own page
    /// references), in batches of one page table. `EINVAL` unless the VMA is
    /// [mixed-map](VmaNew::set_mixedmap) and the range lies inside it.
    pub fn insert_pages(&self, addr: usize, pages: &[BorrowedPage<'_>]) -> Result {
        const BATCH: usize = 512;
        if self.flags() & flags::MIXEDMAP == 0 {
            return Err(EINVAL);
        }
        let end = addr
            .checked_add(pages.len().checked_mul(PAGE_SIZE).ok_or(EINVAL)?)
            .ok_or(EINVAL)?;
        if addr < self.start() || end > self.end() {
            return Err(EINVAL);
        }
        let mut at = addr;
        for chunk in pages.chunks(BATCH) {
            let mut left = chunk.len() as kernel::ffi::c_ulong;
            // SAFETY: The VMA is being set up under the mmap write lock (type invariant), is
            // `VM_MIXEDMAP` (so not `VM_PFNMAP`) and `[at, at + chunk)` lies inside it.
            // `BorrowedPage` is a transparent page pointer, so the slice is an array of page
            // pointers, which the call only reads; each page is kept alive for the call by
            // the borrow.
            let ret = unsafe {
                bindings::vm_insert_pages(
                    self.raw(),
                    at as kernel::ffi::c_ulong,
                    chunk.as_ptr().cast_mut().cast(),
                    &mut left,
                )
            };
            to_result(ret)?;
            if left != 0 {
                return Err(ENOMEM);
            }
            at += chunk.len() * PAGE_SIZE;
        }
        Ok(())
    }
}

/// A page fault in a VMA of ours.
pub struct VmFault {
    vmf: *mut bindings::vm_fault,
}

/// What a fault handler reports.
pub enum FaultResult {
    /// The handler installed the PTE itself (`VM_FAULT_NOPAGE`).
    Installed,
    /// Out of memory (`VM_FAULT_OOM`).
    Oom,
    /// The address has no page (`VM_FAULT_SIGBUS`).
    SigBus,
}

impl VmFault {
    /// Page offset of the faulting address in the file (`vma->vm_pgoff` included).
    pub fn pgoff(&self) -> usize {
        // SAFETY: `vmf` is valid for the duration of the fault callback.
        unsafe { (*self.vmf).__bindgen_anon_1.pgoff as usize }
    }

    /// Installs `page` at the faulting (page-aligned) address with `vm_insert_page`, which
    /// takes its own page reference. `SigBus` unless the VMA is `VM_MIXEDMAP` (set at mmap
    /// with [`VmaNew::set_mixedmap`]): only then may a page go in under the fault path's
    /// read or VMA lock.
    pub fn insert_page(&self, page: &PageRef) -> FaultResult {
        // SAFETY: `vmf` is valid for the fault callback, and so is its VMA.
        let (vma, address) = unsafe {
            (
                (*self.vmf).__bindgen_anon_1.vma,
                (*self.vmf).__bindgen_anon_1.address,
            )
        };
        // SAFETY: The VMA is valid and locked for the fault (see above).
        if unsafe { VmArea::from_raw(vma) }.flags() & flags::MIXEDMAP == 0 {
            return FaultResult::SigBus;
        }
        // SAFETY: The VMA has `VM_MIXEDMAP` (checked), so `vm_insert_page` needs only the
        // read or VMA lock that the fault path holds. `page` is kept alive by the reference.
        let ret = unsafe { bindings::vm_insert_page(vma, address, page.0.as_ptr()) };
        match ret {
            // -EBUSY: another thread installed the PTE first, which is as good.
            0 => FaultResult::Installed,
            e if e == -(bindings::EBUSY as i32) => FaultResult::Installed,
            e if e == -(bindings::ENOMEM as i32) => FaultResult::Oom,
            _ => FaultResult::SigBus,
        }
    }
}

impl VmFault {
    /// Borrows a raw fault.
    ///
    /// # Safety
    ///
    /// `vmf` must be a valid fault for the duration of the borrow (a fault callback's).
    pub unsafe fn from_raw(vmf: *mut bindings::vm_fault) -> Self {
        Self { vmf }
    }

    /// The page a `page_mkwrite` is about to make writable (the mm core holds a reference
    /// to it for the callback).
    pub fn page(&self) -> BorrowedPage<'_> {
        // SAFETY: In `page_mkwrite`, `vmf->page` is set and referenced by the mm core for
        // the call (`wp_page_shared`, `do_shared_fault`), which the borrow of `self` spans.
        unsafe { BorrowedPage::from_raw(NonNull::new_unchecked((*self.vmf).page)) }
    }
}

/// Callbacks for a VMA type. `Data` is what `vm_private_data` points to.
pub trait VmOperations: Sized + 'static {
    /// The per-VMA data.
    type Data: Sync;
    /// The table, a `static` whose address marks our VMAs.
    fn table() -> &'static VmOpsTable<Self>;
    /// A VMA was copied from one of ours (fork, split, mremap).
    fn open(data: &Self::Data, vma: &VmArea);
    /// A VMA of ours is going away.
    fn close(data: &Self::Data, vma: &VmArea);
    /// A page fault in a VMA of ours.
    fn fault(data: &Self::Data, vmf: &VmFault) -> FaultResult;
    /// The first write through a read-only PTE of `vmf.page()` (the table has a
    /// `page_mkwrite`, so the mm core maps pages read-only until this allows a write).
    fn page_mkwrite(data: &Self::Data, vmf: &VmFault) -> Result<LockedForWrite, MkwriteRetry>;
}

/// A `vm_operations_struct` for `T`. Place it in a `static` and pass it to
/// [`VmaNew::set_ops`]; its address identifies our VMAs.
pub struct VmOpsTable<T: VmOperations> {
    ops: bindings::vm_operations_struct,
    _t: PhantomData<T>,
}

// SAFETY: The table is immutable and holds only function pointers.
unsafe impl<T: VmOperations> Sync for VmOpsTable<T> {}

impl<T: VmOperations> VmOpsTable<T> {
    /// Builds the table.
    pub const fn new() -> Self {
        // SAFETY: `vm_operations_struct` is plain C data for which all-zero is valid (no
        // callbacks).
        let mut ops: bindings::vm_operations_struct = unsafe { core::mem::zeroed() };
        ops.open = Some(Self::open_callback);
        ops.close = Some(Self::close_callback);
        ops.fault = Some(Self::fault_callback);
        ops.page_mkwrite = Some(Self::page_mkwrite_callback);
        Self {
            ops,
            _t: PhantomData,
        }
    }

    /// Returns the VMA and its data if the VMA is ours.
    ///
    /// # Safety
    ///
    /// `vma` must be valid and locked for the lifetime `'a`.
    unsafe fn data<'a>(vma: *mut bindings::vm_area_struct) -> Option<(&'a VmArea, &'a T::Data)> {
        // SAFETY: Guaranteed by the caller.
        let vma = unsafe { VmArea::from_raw(vma) };
        vma.data_if_ours::<T>().map(|data| (vma, data))
    }

    /// # Safety
    ///
    /// Only the mm core calls this, as a `vm_operations_struct` callback, with valid, locked
    /// arguments.
    unsafe extern "C" fn open_callback(vma: *mut bindings::vm_area_struct) {
        // SAFETY: The kernel passes a valid, locked VMA.
        if let Some((vma, data)) = unsafe { Self::data(vma) } {
            T::open(data, vma);
        }
    }

    /// # Safety
    ///
    /// Only the mm core calls this, as a `vm_operations_struct` callback, with valid, locked
    /// arguments.
    unsafe extern "C" fn close_callback(vma: *mut bindings::vm_area_struct) {
        // SAFETY: The kernel passes a valid, locked VMA.
        if let Some((vma, data)) = unsafe { Self::data(vma) } {
            T::close(data, vma);
        }
    }

    /// # Safety
    ///
    /// Only the mm core calls this, as a `vm_operations_struct` callback, with valid, locked
    /// arguments.
    unsafe extern "C" fn fault_callback(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        // SAFETY: The kernel passes a valid fault whose VMA is valid and locked.
        let vma = unsafe { (*vmf).__bindgen_anon_1.vma };
        // SAFETY: As above.
        let Some((_, data)) = (unsafe { Self::data(vma) }) else {
            return bindings::vm_fault_reason_VM_FAULT_SIGBUS;
        };
        match T::fault(data, &VmFault { vmf }) {
            FaultResult::Installed => bindings::vm_fault_reason_VM_FAULT_NOPAGE,
            FaultResult::Oom => bindings::vm_fault_reason_VM_FAULT_OOM,
            FaultResult::SigBus => bindings::vm_fault_reason_VM_FAULT_SIGBUS,
        }
    }

    /// # Safety
    ///
    /// Only the mm core calls this, as a `vm_operations_struct` callback, with a valid fault
    /// whose VMA is locked and whose `page` is referenced.
    unsafe extern "C" fn page_mkwrite_callback(
        vmf: *mut bindings::vm_fault,
    ) -> bindings::vm_fault_t {
        // SAFETY: The kernel passes a valid fault whose VMA is valid and locked.
        let vma = unsafe { (*vmf).__bindgen_anon_1.vma };
        // SAFETY: As above.
        let Some((_, data)) = (unsafe { Self::data(vma) }) else {
            return bindings::vm_fault_reason_VM_FAULT_SIGBUS;
        };
        mkwrite_result(T::page_mkwrite(data, &VmFault { vmf }))
    }
}

/// The `vm_fault_t` of a `page_mkwrite` outcome.
pub(super) fn mkwrite_result(r: Result<LockedForWrite, MkwriteRetry>) -> bindings::vm_fault_t {
    match r {
        Ok(LockedForWrite(())) => bindings::vm_fault_reason_VM_FAULT_LOCKED,
        Err(MkwriteRetry) => bindings::vm_fault_reason_VM_FAULT_NOPAGE,
    }
}
