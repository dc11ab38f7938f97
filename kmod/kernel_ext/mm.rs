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

impl BorrowedPage<'_> {
    /// # Safety
    ///
    /// `page` must be valid and kept alive by a reference for the lifetime of the result.
    unsafe fn from_raw(page: NonNull<bindings::page>) -> Self {
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
}
