// SPDX-License-Identifier: GPL-2.0-only

//! Borrowed view of an open `struct file`, as handed to file operations.
//!
//! The VFS keeps the file alive for the duration of each callback, so a `&File` never
//! outlives the call it was given to.

use kernel::{bindings, types::Opaque};

/// An open file (`struct file`), borrowed for the duration of a file operation.
#[repr(transparent)]
pub struct File(Opaque<bindings::file>);

impl File {
    /// Borrows a raw file.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid file that stays alive for the lifetime `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::file) -> &'a File {
        // SAFETY: `File` is a transparent wrapper of `struct file`; the caller guarantees
        // validity for `'a`.
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw pointer.
    pub fn as_ptr(&self) -> *mut bindings::file {
        self.0.get()
    }

    /// The file's `O_*` flags.
    pub fn flags(&self) -> u32 {
        // SAFETY: The file is valid by the type invariant. `f_flags` may change through
        // fcntl(F_SETFL); a plain read of the current value is what the VFS does too.
        unsafe { core::ptr::read_volatile(&raw const (*self.0.get()).f_flags) }
    }

    /// The file's `private_data` as a `T` owned through an `Arc` (`ForeignOwnable`).
    ///
    /// # Safety
    ///
    /// `private_data` must be an `Arc<T>`'s foreign pointer that stays alive for the borrow
    /// (e.g. the file's, which its release drops, and the caller holds the file).
    pub unsafe fn private<T: Send + Sync + 'static>(&self) -> kernel::sync::ArcBorrow<'_, T> {
        // SAFETY: As the caller promises.
        unsafe {
            <kernel::sync::Arc<T> as kernel::types::ForeignOwnable>::borrow(
                (*self.0.get()).private_data,
            )
        }
    }

    /// Whether the file was opened (or set) non-blocking.
    pub fn is_nonblocking(&self) -> bool {
        self.flags() & bindings::O_NONBLOCK != 0
    }
}
