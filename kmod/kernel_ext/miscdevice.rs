// SPDX-License-Identifier: GPL-2.0

//! A character device with one minor, like upstream's `miscdevice` abstraction (6.13+),
//! built from `__register_chrdev`, `class_create` and `device_create` because 6.12 has no
//! `misc_register` binding.
//!
//! [`MiscDeviceRegistration`] owns the chrdev region, the class and the device node. Its
//! `file_operations` live inside it with `owner` set to this module, so every open file
//! (and every VMA, which holds a file) pins the module: the registration, and the context
//! in it, outlive every callback. Callbacks find the context from `file->f_op`.

use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong};
use kernel::{
    bindings, c_str,
    error::{from_err_ptr, to_result},
    prelude::*,
    str::CStr,
    types::ForeignOwnable,
    uaccess::{UserSlice, UserSliceWriter},
    ThisModule,
};

use super::{file::File, mm::VmaNew, poll::PollTable};

/// Operations of a misc device. `Ptr` is what each open file keeps in `private_data`.
pub trait MiscDevice: Sized {
    /// Shared state, owned by the registration, given to every callback.
    type Context: Sync;
    /// The per-file object.
    type Ptr: ForeignOwnable + Send + Sync;
    /// Mode of the device node.
    const MODE: u16;

    /// A file was opened.
    fn open(ctx: &Self::Context, file: &File) -> Result<Self::Ptr>;
    /// The last reference to the file is gone (every fd closed and every VMA unmapped).
    fn release(ctx: &Self::Context, device: Self::Ptr, file: &File);
    /// `ioctl` (native and compat: the interface has no pointer-size dependent layout).
    fn ioctl(
        ctx: &Self::Context,
        device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        cmd: u32,
        arg: usize,
    ) -> Result<isize>;
    /// `mmap`.
    fn mmap(
        ctx: &Self::Context,
        device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        vma: &VmaNew,
    ) -> Result;
    /// `poll`: returns the ready mask.
    fn poll(
        device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        table: &PollTable,
    ) -> u32;
    /// `read` into `buf`: returns the bytes read.
    fn read(
        device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        buf: UserSliceWriter,
    ) -> Result<usize>;
}

/// Heap part of a registration; its address is stable while files refer to `fops`.
struct Inner<T: MiscDevice> {
    fops: bindings::file_operations,
    ctx: T::Context,
}

/// A registered device node `/dev/<name>`, unregistered on drop.
pub struct MiscDeviceRegistration<T: MiscDevice> {
    inner: KBox<Inner<T>>,
    name: &'static CStr,
    major: u32,
    class: *mut bindings::class,
}

// SAFETY: The raw pointers are only used in `drop`; the context is `Sync`.
unsafe impl<T: MiscDevice> Send for MiscDeviceRegistration<T> where T::Context: Send {}
// SAFETY: Shared access only reads the context, which is `Sync`.
unsafe impl<T: MiscDevice> Sync for MiscDeviceRegistration<T> {}

impl<T: MiscDevice> MiscDeviceRegistration<T> {
    /// Registers `/dev/<name>` for `module` with context `ctx`.
    pub fn register(
        name: &'static CStr,
        module: &'static ThisModule,
        ctx: T::Context,
    ) -> Result<Self> {
        // SAFETY: `file_operations` is plain C data; all-zero means "no operation".
        let mut fops: bindings::file_operations = unsafe { core::mem::zeroed() };
        fops.owner = module.as_ptr();
        fops.open = Some(open_callback::<T>);
        fops.release = Some(release_callback::<T>);
        fops.unlocked_ioctl = Some(ioctl_callback::<T>);
        fops.compat_ioctl = Some(ioctl_callback::<T>);
        fops.mmap = Some(mmap_callback::<T>);
        fops.poll = Some(poll_callback::<T>);
        fops.read = Some(read_callback::<T>);
        let inner = KBox::new(Inner::<T> { fops, ctx }, GFP_KERNEL)?;

        // SAFETY: `name` is NUL-terminated and static; `fops` is in a box that outlives the
        // registration (dropped after `__unregister_chrdev`).
        let major =
            unsafe { bindings::__register_chrdev(0, 0, 1, name.as_char_ptr(), &inner.fops) };
        to_result(major)?;
        let major = major as u32;

        // SAFETY: `name` is NUL-terminated and static.
        let class = match from_err_ptr(unsafe { bindings::class_create(name.as_char_ptr()) }) {
            Ok(class) => class,
            Err(e) => {
                // SAFETY: Registered just above.
                unsafe { bindings::__unregister_chrdev(major, 0, 1, name.as_char_ptr()) };
                return Err(e);
            }
        };
        // SAFETY: `class` is a valid class that no device uses yet.
        unsafe { (*class).devnode = Some(devnode_callback::<T>) };

        // SAFETY: `class` is valid; the format takes one string argument, `name`.
        let dev = unsafe {
            bindings::device_create(
                class,
                core::ptr::null_mut(),
                devt(major),
                core::ptr::null_mut(),
                c_str!("%s").as_char_ptr(),
                name.as_char_ptr(),
            )
        };
        if let Err(e) = from_err_ptr(dev) {
            // SAFETY: Both were created above and have no users.
            unsafe {
                bindings::class_destroy(class);
                bindings::__unregister_chrdev(major, 0, 1, name.as_char_ptr());
            }
            return Err(e);
        }
        Ok(Self {
            inner,
            name,
            major,
            class,
        })
    }

    /// The context.
    pub fn context(&self) -> &T::Context {
        &self.inner.ctx
    }
}

impl<T: MiscDevice> Drop for MiscDeviceRegistration<T> {
    fn drop(&mut self) {
        // SAFETY: Created in `register`. No file is open: each would hold a module reference
        // and the module is only dropped at unload.
        unsafe {
            bindings::device_destroy(self.class, devt(self.major));
            bindings::class_destroy(self.class);
            bindings::__unregister_chrdev(self.major, 0, 1, self.name.as_char_ptr());
        }
    }
}

fn devt(major: u32) -> bindings::dev_t {
    major << bindings::MINORBITS
}

/// Finds the context of the registration whose `fops` the file uses.
///
/// # Safety
///
/// `file` must be a valid file opened through a `MiscDeviceRegistration<T>`.
unsafe fn context<'a, T: MiscDevice>(file: *mut bindings::file) -> &'a T::Context {
    // SAFETY: The file's `f_op` is the `fops` field of an `Inner<T>` (caller), which lives
    // while the file pins the module.
    unsafe {
        let inner = kernel::container_of!((*file).f_op, Inner<T>, fops);
        &(*inner).ctx
    }
}

/// # Safety
///
/// Only devtmpfs calls this, as the class `devnode` callback, with `mode` null or valid.
unsafe extern "C" fn devnode_callback<T: MiscDevice>(
    _dev: *const bindings::device,
    mode: *mut bindings::umode_t,
) -> *mut c_char {
    if !mode.is_null() {
        // SAFETY: A non-null `mode` is a valid out-parameter of the devtmpfs callback.
        unsafe { *mode = T::MODE };
    }
    core::ptr::null_mut()
}

/// # Safety
///
/// Only the VFS calls this, as a `file_operations` callback of a file opened through a
/// `MiscDeviceRegistration<T>`, with valid arguments.
unsafe extern "C" fn open_callback<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: The VFS passes a valid file opened through our fops.
    let (ctx, f) = unsafe { (context::<T>(file), File::from_raw(file)) };
    match T::open(ctx, f) {
        Ok(ptr) => {
            // SAFETY: `file` is valid and not yet visible to other threads.
            unsafe { (*file).private_data = ptr.into_foreign().cast_mut() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Only the VFS calls this, as a `file_operations` callback of a file opened through a
/// `MiscDeviceRegistration<T>`, with valid arguments.
unsafe extern "C" fn release_callback<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: The VFS passes a valid file opened through our fops.
    let (ctx, f) = unsafe { (context::<T>(file), File::from_raw(file)) };
    // SAFETY: `private_data` was set by `open_callback` and this is the last use.
    let ptr = unsafe { T::Ptr::from_foreign((*file).private_data) };
    T::release(ctx, ptr, f);
    0
}

/// # Safety
///
/// Only the VFS calls this, as a `file_operations` callback of a file opened through a
/// `MiscDeviceRegistration<T>`, with valid arguments.
unsafe extern "C" fn ioctl_callback<T: MiscDevice>(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: The VFS passes a valid file opened through our fops.
    let (ctx, f) = unsafe { (context::<T>(file), File::from_raw(file)) };
    // SAFETY: `private_data` was set by `open_callback`; release has not run.
    let device = unsafe { T::Ptr::borrow((*file).private_data) };
    match T::ioctl(ctx, device, f, cmd, arg as usize) {
        Ok(ret) => ret as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// Only the VFS calls this, as a `file_operations` callback of a file opened through a
/// `MiscDeviceRegistration<T>`, with valid arguments.
unsafe extern "C" fn mmap_callback<T: MiscDevice>(
    file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: The VFS passes a valid file opened through our fops.
    let (ctx, f) = unsafe { (context::<T>(file), File::from_raw(file)) };
    // SAFETY: `private_data` was set by `open_callback`; release has not run.
    let device = unsafe { T::Ptr::borrow((*file).private_data) };
    // SAFETY: This is the VMA being set up by `mmap`.
    let vma = unsafe { VmaNew::from_raw(vma) };
    match T::mmap(ctx, device, f, vma) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Only the VFS calls this, as a `file_operations` callback of a file opened through a
/// `MiscDeviceRegistration<T>`, with valid arguments.
unsafe extern "C" fn poll_callback<T: MiscDevice>(
    file: *mut bindings::file,
    table: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: The VFS passes a valid file opened through our fops.
    let f = unsafe { File::from_raw(file) };
    // SAFETY: `private_data` was set by `open_callback`; release has not run.
    let device = unsafe { T::Ptr::borrow((*file).private_data) };
    // SAFETY: `table` is null or valid for this call.
    let table = unsafe { PollTable::from_raw(table) };
    T::poll(device, f, &table)
}

/// # Safety
///
/// Only the VFS calls this, as a `file_operations` callback of a file opened through a
/// `MiscDeviceRegistration<T>`, with valid arguments.
unsafe extern "C" fn read_callback<T: MiscDevice>(
    file: *mut bindings::file,
    buf: *mut c_char,
    len: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: The VFS passes a valid file opened through our fops.
    let f = unsafe { File::from_raw(file) };
    // SAFETY: `private_data` was set by `open_callback`; release has not run.
    let device = unsafe { T::Ptr::borrow((*file).private_data) };
    let writer = UserSlice::new(buf as usize, len).writer();
    match T::read(device, f, writer) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}
