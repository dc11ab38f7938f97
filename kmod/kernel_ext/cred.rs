// SPDX-License-Identifier: GPL-2.0

//! The current task's credentials: filesystem uid/gid, group membership and capabilities,
//! which segment permissions are checked against (like file permissions).
//!
//! Ids are the kernel-internal (`init_user_ns`) values.

use kernel::bindings;

/// Returns the current task's credentials.
fn current_cred() -> *const bindings::cred {
    // SAFETY: `get_current` always returns the running task, which is valid while it runs.
    let task = unsafe { bindings::get_current() };
    // SAFETY: A task's own `cred` pointer can only be replaced by the task itself
    // (`commit_creds`), so reading it from the current task is race-free, and the
    // credentials it points to live at least as long as they stay installed.
    unsafe { (*task).cred }
}

/// The current task's filesystem uid.
pub fn current_fsuid() -> u32 {
    // SAFETY: `current_cred` returns the valid credentials of the running task.
    unsafe { (*current_cred()).fsuid.val }
}

/// The current task's filesystem gid.
pub fn current_fsgid() -> u32 {
    // SAFETY: `current_cred` returns the valid credentials of the running task.
    unsafe { (*current_cred()).fsgid.val }
}

/// Whether the current task is in group `gid` (fsgid or a supplementary group).
pub fn in_group(gid: u32) -> bool {
    // SAFETY: `in_group_p` only reads the current task's credentials.
    unsafe { bindings::in_group_p(bindings::kgid_t { val: gid }) != 0 }
}

/// Whether the current task has `CAP_SYS_ADMIN` (and marks it as having used it).
pub fn capable_sys_admin() -> bool {
    // SAFETY: `capable` has no preconditions; it checks the current task.
    unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as i32) }
}
