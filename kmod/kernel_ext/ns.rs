// SPDX-License-Identifier: GPL-2.0-only

//! Namespaces: the IPC namespace that scopes segment names, and the current task's user
//! and pid namespaces that ids in output are translated into.
//!
//! A [`TaskPid`] holds a `struct pid` (the binder of a version), which is translated into
//! a number only when a reader asks, in the reader's pid namespace (`pid_vnr`: 0 if the
//! process is not visible there).
//!
//! An [`IpcNs`] holds a reference to an IPC namespace, so that the namespace (and so its
//! address, which is its identity here) cannot be freed and reused while a segment of it
//! lives. `get_ipc_ns` is an inline of a header the 6.12 Rust bindings do not include, so
//! the reference is taken by a C helper (`helpers.c`).

use core::ptr::NonNull;
use kernel::{bindings, error::code::EINVAL, prelude::*};

extern "C" {
    fn dsu_get_current_ipc_ns() -> *mut bindings::ipc_namespace;
    fn dsu_put_ipc_ns(ns: *mut bindings::ipc_namespace);
}

/// The current task's IPC namespace, as an identity to compare with (no reference taken).
pub fn current_ipc_ns_key() -> usize {
    // SAFETY: `get_current` returns the running task. Its `nsproxy` is only replaced by the
    // task itself (setns, unshare) and is non-NULL until it exits, so reading it here is
    // race-free; `ipc_ns` of an nsproxy never changes.
    unsafe { (*(*bindings::get_current()).nsproxy).ipc_ns as usize }
}

/// A counted reference to an IPC namespace.
pub struct IpcNs(NonNull<bindings::ipc_namespace>);

// SAFETY: The reference count is atomic; the namespace may be released from any thread.
unsafe impl Send for IpcNs {}
// SAFETY: `IpcNs` only exposes the namespace's address.
unsafe impl Sync for IpcNs {}

impl IpcNs {
    /// A reference to the current task's IPC namespace (`EINVAL` if it has none, which a
    /// task running an ioctl never lacks).
    pub fn current() -> Result<Self> {
        // SAFETY: The helper reads the current task's nsproxy (see `current_ipc_ns_key`)
        // and takes a reference on its IPC namespace.
        let ns = unsafe { dsu_get_current_ipc_ns() };
        NonNull::new(ns).map(Self).ok_or(EINVAL)
    }

    /// The namespace's identity, comparable with [`current_ipc_ns_key`].
    pub fn key(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

impl Drop for IpcNs {
    fn drop(&mut self) {
        // SAFETY: `self` owns one reference, taken in `current`.
        unsafe { dsu_put_ipc_ns(self.0.as_ptr()) };
    }
}

/// A counted reference to a `struct pid`: a process, whatever namespace looks at it.
pub struct TaskPid(NonNull<bindings::pid>);

// SAFETY: The reference count is atomic, and `put_pid` may be called from any context.
unsafe impl Send for TaskPid {}
// SAFETY: `pid_vnr` only reads the pid under RCU.
unsafe impl Sync for TaskPid {}

impl TaskPid {
    /// The current process (its thread group leader's pid), with a reference.
    pub fn current_tgid() -> Result<Self> {
        // SAFETY: `get_current` is the running task; `get_task_pid` takes a reference on its
        // thread group's pid (NULL only for an exiting task).
        let pid = unsafe {
            bindings::get_task_pid(bindings::get_current(), bindings::pid_type_PIDTYPE_TGID)
        };
        NonNull::new(pid).map(Self).ok_or(ESRCH)
    }

    /// The process id as the current task's pid namespace sees it; 0 if not visible there.
    pub fn nr_in_current_ns(&self) -> i32 {
        // SAFETY: `self` holds a reference, so the pid is alive.
        unsafe { bindings::pid_vnr(self.0.as_ptr()) }
    }
}

impl Clone for TaskPid {
    fn clone(&self) -> Self {
        // SAFETY: `self` holds a reference, so the pid is alive and its count non-zero:
        // incrementing it (what `get_pid` does) makes one more reference, owned by the clone.
        unsafe { bindings::refcount_inc(&raw mut (*self.0.as_ptr()).count) };
        Self(self.0)
    }
}

impl Drop for TaskPid {
    fn drop(&mut self) {
        // SAFETY: `self` owns one reference.
        unsafe { bindings::put_pid(self.0.as_ptr()) };
    }
}
