// SPDX-License-Identifier: GPL-2.0-only

//! Anonymous-inode files: file descriptors for kernel objects that are no device node (as
//! `anon_inode_getfile`, KVM's stats fds and DRM's sync files), and the address space that
//! every `/dev/dsu` file maps through.
//!
//! - [`AnonFileType`]: a `file_operations` table for objects of one Rust type `T`
//!   ([`AnonFileOps`]: `read` with a position, so `pread`, and `ioctl`), with `owner` set to
//!   this module at init, so that an open file pins the module. [`AnonFileType::create`]
//!   makes a read-only file holding an `Arc<T>` (dropped at its release) and reserves an fd
//!   ([`NewFd`]); the fd is installed only once nothing can fail any more, else both go.
//! - [`DeviceMappings`]: an `address_space` of its own (an anon inode's, as DRM's
//!   `drm_open` gives every file of a device), which every `/dev/dsu` file uses as its
//!   `f_mapping` from `open`, before any mmap: the reverse map (`i_mmap`) of every VMA
//!   mapped through `/dev/dsu` is then this module's, whatever device node was opened, and
//!   [`DeviceMappings::zap`] unmaps a range of offsets from every process at once.

use super::{file::File, shmem::zap_mapping};
use core::{
    cell::UnsafeCell,
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{AtomicBool, AtomicPtr, Ordering},
};
use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong};
use kernel::{
    bindings, error::from_err_ptr, prelude::*, str::CStr, sync::Arc, types::ForeignOwnable,
    ThisModule,
};

#[allow(improper_ctypes)]
extern "C" {
    fn dsu_anon_file(
        name: *const c_char,
        fops: *const bindings::file_operations,
        private: *mut core::ffi::c_void,
    ) -> *mut bindings::file;
    fn dsu_anon_inode_file(
        name: *const c_char,
        fops: *const bindings::file_operations,
    ) -> *mut bindings::file;
    fn dsu_file_set_mapping(file: *mut bindings::file, mapping: *mut bindings::address_space);
}

/// Operations of an anon-inode file whose `private_data` is an `Arc<Self>`.
pub trait AnonFileOps: Send + Sync + Sized + 'static {
    /// `read`/`pread` at `*pos` into `len` bytes at the user address `buf`: returns the
    /// bytes read and advances `*pos`.
    fn read(this: &Self, buf: usize, len: usize, pos: &mut i64) -> Result<usize>;
    /// The file's release (its last reference is gone), before the `Arc` is dropped.
    fn release(this: &Self);
    /// `ioctl` with the whole command number.
    fn ioctl(this: &Self, cmd: u32, arg: usize) -> Result<isize>;
    /// `mmap`: refused with this error.
    const MMAP_ERROR: Error;
}

/// A `file_operations` table for files of `T`. Place it in a `static`, call
/// [`AnonFileType::init`] at module init, before any [`AnonFileType::create`].
pub struct AnonFileType<T: AnonFileOps> {
    fops: UnsafeCell<bindings::file_operations>,
    ready: AtomicBool,
    _t: PhantomData<T>,
}

// SAFETY: `fops` is written once, in `init` at module init (before `ready` is set, with
// release ordering), and only read after `ready` is seen set (acquire).
unsafe impl<T: AnonFileOps> Sync for AnonFileType<T> {}

impl<T: AnonFileOps> AnonFileType<T> {
    /// The table, without an owner yet.
    pub const fn new() -> Self {
        // SAFETY: All-zero is a valid `file_operations` (no operations).
        let mut fops: bindings::file_operations = unsafe { core::mem::zeroed() };
        fops.read = Some(read_callback::<T>);
        fops.unlocked_ioctl = Some(ioctl_callback::<T>);
        fops.compat_ioctl = Some(bindings::compat_ptr_ioctl);
        fops.mmap = Some(mmap_callback::<T>);
        fops.release = Some(release_callback::<T>);
        Self {
            fops: UnsafeCell::new(fops),
            ready: AtomicBool::new(false),
            _t: PhantomData,
        }
    }

    /// Sets the owner to `module` (every file then holds a module reference). Call once, at
    /// module init, before any file is created; later calls do nothing.
    pub fn init(&'static self, module: &'static ThisModule) {
        if self.ready.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: Module init runs once, before any other user of the table (`ready` is
        // still false, so no `create` reads it).
        unsafe { (*self.fops.get()).owner = module.as_ptr() };
        self.ready.store(true, Ordering::Release);
    }

    /// A new read-only, close-on-exec file named `name` (shown in `/proc/*/fd`) holding
    /// `data`, and a reserved fd for it. `ENODEV` before [`AnonFileType::init`].
    pub fn create(&'static self, name: &'static CStr, data: Arc<T>) -> Result<NewFd> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(ENODEV);
        }
        // SAFETY: Plain call; O_CLOEXEC is a valid flag.
        let fd = unsafe { bindings::get_unused_fd_flags(bindings::O_CLOEXEC) };
        if fd < 0 {
            return Err(Error::from_errno(fd));
        }
        let private = data.into_foreign();
        // SAFETY: `name` is static and NUL-terminated; the table is static and complete
        // (`ready`); `private` is an `Arc<T>` that the file owns from now (its release drops
        // it).
        let file =
            unsafe { dsu_anon_file(name.as_char_ptr(), self.fops.get(), private.cast_mut()) };
        match from_err_ptr(file) {
            // INVARIANT: `fd` is reserved and `file` a new file holding `private`.
            Ok(file) => Ok(NewFd {
                fd: fd as c_uint,
                // SAFETY: `from_err_ptr` passed it: a valid file pointer.
                file: unsafe { NonNull::new_unchecked(file) },
            }),
            Err(e) => {
                // SAFETY: The file was not created: `private` is still ours; `fd` reserved.
                unsafe {
                    drop(Arc::<T>::from_foreign(private));
                    bindings::put_unused_fd(fd as c_uint);
                }
                Err(e)
            }
        }
    }
}

/// A file with a reserved fd, not yet installed: dropping it releases the file (and its
/// object) and the fd; [`NewFd::install`] makes the fd live.
///
/// # Invariants
///
/// `fd` is reserved (`get_unused_fd_flags`) and `file` holds a reference we own.
pub struct NewFd {
    fd: c_uint,
    file: NonNull<bindings::file>,
}

impl NewFd {
    /// The fd number it will have.
    pub fn fd(&self) -> i32 {
        self.fd as i32
    }

    /// Installs the fd in the caller's table (nothing can fail after this).
    pub fn install(self) {
        // SAFETY: `fd` is reserved and the reference is given to the fd table (invariant).
        unsafe { bindings::fd_install(self.fd, self.file.as_ptr()) };
        core::mem::forget(self);
    }
}

impl Drop for NewFd {
    fn drop(&mut self) {
        // SAFETY: We own the reference and the reservation (type invariant).
        unsafe {
            bindings::fput(self.file.as_ptr());
            bindings::put_unused_fd(self.fd);
        }
    }
}

/// # Safety
///
/// `file` is a valid file made by [`AnonFileType::create`] for `T` and not released.
unsafe fn object<'a, T: AnonFileOps>(file: *mut bindings::file) -> kernel::sync::ArcBorrow<'a, T> {
    // SAFETY: `private_data` is the foreign form of the `Arc<T>` the file owns until
    // release (caller), which outlives the callback.
    unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) }
}

unsafe extern "C" fn read_callback<T: AnonFileOps>(
    file: *mut bindings::file,
    buf: *mut c_char,
    len: usize,
    ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: The VFS passes a valid file of ours and a valid position for the call.
    let (this, pos) = unsafe { (object::<T>(file), &mut *ppos) };
    match T::read(&this, buf as usize, len, pos) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

unsafe extern "C" fn ioctl_callback<T: AnonFileOps>(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: The VFS passes a valid file of ours.
    let this = unsafe { object::<T>(file) };
    match T::ioctl(&this, cmd, arg as usize) {
        Ok(r) => r as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

unsafe extern "C" fn mmap_callback<T: AnonFileOps>(
    _file: *mut bindings::file,
    _vma: *mut bindings::vm_area_struct,
) -> c_int {
    T::MMAP_ERROR.to_errno()
}

unsafe extern "C" fn release_callback<T: AnonFileOps>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: The last reference is gone: the `Arc<T>` the file owned is ours to drop.
    let this = unsafe { Arc::<T>::from_foreign((*file).private_data) };
    T::release(&this);
    drop(this);
    0
}

/// The address space of every `/dev/dsu` file while a [`DeviceMappings`] lives.
static MAPPING: AtomicPtr<bindings::address_space> = AtomicPtr::new(core::ptr::null_mut());

/// A `file_operations` with no operation, for the inode that only lends its mapping.
struct EmptyFops(bindings::file_operations);
// SAFETY: Immutable, no pointers.
unsafe impl Sync for EmptyFops {}
// SAFETY: All-zero is a valid `file_operations`.
static EMPTY_FOPS: EmptyFops = EmptyFops(unsafe { core::mem::zeroed() });

/// The module's own address space for `/dev/dsu` files (see the module docs); the inode is
/// released on drop. Create it at module init before the device, drop it after.
///
/// # Invariants
///
/// `file` is an anon-inode file with an inode of its own, whose mapping is in `MAPPING`.
pub struct DeviceMappings {
    file: NonNull<bindings::file>,
}

// SAFETY: Only `drop` uses the file, from any thread.
unsafe impl Send for DeviceMappings {}
// SAFETY: `&DeviceMappings` allows nothing.
unsafe impl Sync for DeviceMappings {}

impl DeviceMappings {
    /// Creates the address space and publishes it. `EBUSY` if one exists.
    pub fn new() -> Result<Self> {
        // SAFETY: Static name and table; the file has no operations and no owner (the
        // module drops it at exit).
        let file = from_err_ptr(unsafe {
            dsu_anon_inode_file(kernel::c_str!("dsu-mappings").as_char_ptr(), &EMPTY_FOPS.0)
        })?;
        let file = NonNull::new(file).ok_or(ENOMEM)?;
        // SAFETY: The file is valid; its mapping is its own inode's.
        let mapping = unsafe { (*file.as_ptr()).f_mapping };
        if MAPPING
            .compare_exchange(
                core::ptr::null_mut(),
                mapping,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: Ours, published nowhere; released now (see `drop`).
            unsafe { bindings::__fput_sync(file.as_ptr()) };
            return Err(EBUSY);
        }
        Ok(Self { file })
    }

    /// Makes `file` map through the module's address space. Call from `open`, before the
    /// file can be mapped: `mmap` accounts writable mappings on the `f_mapping` it sees
    /// before and after the driver's `mmap`, and links VMAs into it.
    pub fn adopt(file: &File) {
        let mapping = MAPPING.load(Ordering::Acquire);
        if !mapping.is_null() {
            // SAFETY: The file is being opened (no mmap yet); the mapping lives while the
            // module serves files (dropped at exit, after every file is gone).
            unsafe { dsu_file_set_mapping(file.as_ptr(), mapping) };
        }
    }

    /// Whether `mapping` (an address space's address) is the module's address space.
    pub fn is_module_mapping(mapping: usize) -> bool {
        let ours = MAPPING.load(Ordering::Acquire);
        !ours.is_null() && ours as usize == mapping
    }

    /// Unmaps pages `[first, first + count)` of the address space from every process: the
    /// next access to any of them faults. `count` 0: to the end.
    pub fn zap(first: u64, count: u64) {
        let mapping = MAPPING.load(Ordering::Acquire);
        if !mapping.is_null() {
            zap_mapping(mapping, first, count);
        }
    }
}

impl Drop for DeviceMappings {
    fn drop(&mut self) {
        MAPPING.store(core::ptr::null_mut(), Ordering::Release);
        // Released now, not at the caller's return to userspace (`fput`'s task work): the
        // file's `f_op` is this module's `EMPTY_FOPS`, gone once module exit returns.
        // SAFETY: We own the last reference (type invariant: nobody else ever took one); no
        // `/dev/dsu` file, and so no VMA in the mapping, is left (each pins the module).
        unsafe { bindings::__fput_sync(self.file.as_ptr()) };
    }
}
