// SPDX-License-Identifier: GPL-2.0-only

//! A misc character device (major 10, dynamic minor), shaped like upstream's
//! `kernel::miscdevice` (6.13+): a [`MiscDevice`] trait for the file operations and a
//! [`MiscDeviceRegistration`] that owns the registration.
//!
//! The 6.12 bindings do not include `include/linux/miscdevice.h`, so `struct miscdevice`,
//! `misc_register` and `misc_deregister` are declared here ([`RawMiscDevice`]); swap them
//! for `bindings::miscdevice` once the kernel's bindings have it.
//!
//! The registration's `file_operations` and `miscdevice` live in one heap block with the
//! context, with `owner` set to this module, so every open file (and every VMA, which holds
//! a file) pins the module: the registration, and the context in it, outlive every
//! callback. Callbacks find the context from `file->f_op`. `compat_ioctl` is the kernel's
//! `compat_ptr_ioctl`: the interface's structs are fixed-width, so a 32-bit caller differs
//! only in the argument pointer, which it converts with `compat_ptr` before calling `ioctl`.

use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong};
use kernel::{
    bindings,
    error::to_result,
    prelude::*,
    str::CStr,
    types::{ForeignOwnable, Opaque},
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
    /// `ioctl`, with the whole command number. 32-bit callers arrive here too, with `arg`
    /// already converted by `compat_ptr` (`compat_ptr_ioctl`): the commands' structs must
    /// have the same layout for both ABIs (fixed-width fields, explicit padding).
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

/// `MISC_DYNAMIC_MINOR` (`include/linux/miscdevice.h`).
const MISC_DYNAMIC_MINOR: c_int = 255;

/// `struct miscdevice` as laid out in `include/linux/miscdevice.h` of Linux 6.12:
///
/// ```c
/// struct miscdevice {
///         int minor;
///         const char *name;
///         const struct file_operations *fops;
///         struct list_head list;
///         struct device *parent;
///         struct device *this_device;
///         const struct attribute_group **groups;
///         const char *nodename;
///         umode_t mode;
/// };
/// ```
///
/// Field for field, in order, with the same C types; keep it in step with that header.
#[repr(C)]
struct RawMiscDevice {
    minor: c_int,
    name: *const c_char,
    fops: *const bindings::file_operations,
    list: bindings::list_head,
    parent: *mut bindings::device,
    this_device: *mut bindings::device,
    groups: *mut *const bindings::attribute_group,
    nodename: *const c_char,
    mode: bindings::umode_t,
}

// 64-bit layout of the C struct: 4 + 4 (hole) + 8 + 8 + 16 + 8 + 8 + 8 + 8 + 2 + 6 (tail).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(core::mem::size_of::<RawMiscDevice>() == 80);

// `drivers/char/misc.c`, exported; not in the 6.12 bindings (see `RawMiscDevice`). The
// types contain a zero-sized placeholder struct deep inside (`dev_msi_info`), which trips
// `improper_ctypes` although only pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn misc_register(misc: *mut RawMiscDevice) -> c_int;
    fn misc_deregister(misc: *mut RawMiscDevice);
}

/// Heap part of a registration: misc keeps a pointer to `misc` in its list and every file a
/// pointer to `fops`, so its address is stable (it is never moved out of its box).
struct Inner<T: MiscDevice> {
    fops: bindings::file_operations,
    misc: Opaque<RawMiscDevice>,
    ctx: T::Context,
}

/// A registered misc device `/dev/<name>`, unregistered on drop.
///
/// # Invariants
///
/// `inner.misc` is registered with `misc_register` until `drop`.
pub struct MiscDeviceRegistration<T: MiscDevice> {
    inner: KBox<Inner<T>>,
}

// SAFETY: The registration is only touched by `drop`; the context is `Send` (required).
unsafe impl<T: MiscDevice> Send for MiscDeviceRegistration<T> where T::Context: Send {}
// SAFETY: Shared access only reads the context, which is `Sync`.
unsafe impl<T: MiscDevice> Sync for MiscDeviceRegistration<T> {}

impl<T: MiscDevice> MiscDeviceRegistration<T> {
    /// Registers `/dev/<name>` (major 10, a dynamic minor, mode [`MiscDevice::MODE`]) for
    /// `module` with context `ctx`.
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
        fops.compat_ioctl = Some(bindings::compat_ptr_ioctl);
        fops.mmap = Some(mmap_callback::<T>);
        fops.poll = Some(poll_callback::<T>);
        fops.read = Some(read_callback::<T>);
        let inner = KBox::new(
            Inner::<T> {
                fops,
                misc: Opaque::uninit(),
                ctx,
            },
            GFP_KERNEL,
        )?;
        let misc = inner.misc.get();
        // SAFETY: `misc` is valid for writes and not yet shared. `name` is static and
        // NUL-terminated; `fops` lives in the same box, which outlives the registration.
        // `list` is initialised by `misc_register`.
        unsafe {
            misc.write(RawMiscDevice {
                minor: MISC_DYNAMIC_MINOR,
                name: name.as_char_ptr(),
                fops: &inner.fops,
                list: core::mem::zeroed(),
                parent: core::ptr::null_mut(),
                this_device: core::ptr::null_mut(),
                groups: core::ptr::null_mut(),
                nodename: core::ptr::null(),
                mode: T::MODE,
            })
        };
        // SAFETY: `misc` is initialised above and stays at this address until
        // `misc_deregister` in `drop` (the box is never moved out of).
        to_result(unsafe { misc_register(misc) })?;
        // INVARIANT: Registered just above.
        Ok(Self { inner })
    }

    /// The context.
    pub fn context(&self) -> &T::Context {
        &self.inner.ctx
    }
}

impl<T: MiscDevice> Drop for MiscDeviceRegistration<T> {
    fn drop(&mut self) {
        // SAFETY: Registered in `register` (type invariant). No file is open: each would hold
        // a module reference and the registration is only dropped at unload.
        unsafe { misc_deregister(self.inner.misc.get()) };
    }
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
