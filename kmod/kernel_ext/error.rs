// SPDX-License-Identifier: GPL-2.0-only

//! Error codes that the 6.12 `kernel::error::code` module does not declare.

use kernel::{bindings, error::Error};

/// File descriptor in bad state (the handle is not in the state the call needs).
pub fn ebadfd() -> Error {
    Error::from_errno(-(bindings::EBADFD as i32))
}

/// Identifier removed (the segment was destroyed).
pub fn eidrm() -> Error {
    Error::from_errno(-(bindings::EIDRM as i32))
}
