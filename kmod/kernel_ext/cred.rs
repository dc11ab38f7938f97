// SPDX-License-Identifier: GPL-2.0-only

//! The current task's credentials: filesystem uid/gid, group membership and capabilities,
//! which segment permissions are checked against (like file permissions).
//!
//! Ids are the kernel-internal (`init_user_ns`) values (`kuid_t`/`kgid_t`); ids that
//! cross the user boundary are translated from or into the caller's user namespace here.
//! Also the caller's `RLIMIT_MEMLOCK`, which segment pages are charged against.

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

/// The current task's real uid (who resource usage is charged to, as for mlock).
pub fn current_uid() -> u32 {
    // SAFETY: `current_cred` returns the valid credentials of the running task.
    unsafe { (*current_cred()).uid.val }
}

/// The current task's user namespace.
fn current_user_ns() -> *mut bindings::user_namespace {
    // SAFETY: `current_cred` returns the valid credentials of the running task, whose user
    // namespace lives at least as long as they do.
    unsafe { (*current_cred()).user_ns }
}

/// A uid of the caller's user namespace as a kernel uid; `None` if it maps to none.
pub fn kuid_from_current_ns(uid: u32) -> Option<u32> {
    // SAFETY: `make_kuid` only reads the (live) namespace's id map.
    let kuid = unsafe { bindings::make_kuid(current_user_ns(), uid) };
    // INVALID_UID is (uid_t)-1.
    (kuid.val != u32::MAX).then_some(kuid.val)
}

/// A gid of the caller's user namespace as a kernel gid; `None` if it maps to none.
pub fn kgid_from_current_ns(gid: u32) -> Option<u32> {
    // SAFETY: `make_kgid` only reads the (live) namespace's id map.
    let kgid = unsafe { bindings::make_kgid(current_user_ns(), gid) };
    // INVALID_GID is (gid_t)-1.
    (kgid.val != u32::MAX).then_some(kgid.val)
}

/// A kernel uid as the caller's user namespace sees it (`overflowuid` if unmapped).
pub fn uid_in_current_ns(kuid: u32) -> u32 {
    // SAFETY: `from_kuid_munged` only reads the (live) namespace's id map.
    unsafe { bindings::from_kuid_munged(current_user_ns(), bindings::kuid_t { val: kuid }) }
}

/// A kernel gid as the caller's user namespace sees it (`overflowgid` if unmapped).
pub fn gid_in_current_ns(kgid: u32) -> u32 {
    // SAFETY: `from_kgid_munged` only reads the (live) namespace's id map.
    unsafe { bindings::from_kgid_munged(current_user_ns(), bindings::kgid_t { val: kgid }) }
}

/// Whether the current task has `CAP_IPC_LOCK` (may pin memory past `RLIMIT_MEMLOCK`).
pub fn capable_ipc_lock() -> bool {
    // SAFETY: `capable` has no preconditions; it checks the current task.
    unsafe { bindings::capable(bindings::CAP_IPC_LOCK as i32) }
}

/// Whether the current task has `CAP_SYS_RESOURCE` (may exceed dsu's per-user limits).
pub fn capable_sys_resource() -> bool {
    // SAFETY: `capable` has no preconditions; it checks the current task.
    unsafe { bindings::capable(bindings::CAP_SYS_RESOURCE as i32) }
}

/// The current task's soft limit `resource` (an `RLIMIT_*`), `!0` for unlimited.
fn rlimit_cur(resource: u32) -> usize {
    // SAFETY: `get_current` is the running task; its `signal` lives as long as the task.
    // `rlim_cur` is a word that setrlimit may change concurrently: read it once, as
    // `task_rlimit` does with READ_ONCE.
    unsafe {
        let signal = (*bindings::get_current()).signal;
        core::ptr::read_volatile(&raw const (*signal).rlim[resource as usize].rlim_cur)
    }
}

/// The current task's soft `RLIMIT_MEMLOCK`, in pages (`usize::MAX` for unlimited).
pub fn memlock_limit_pages() -> usize {
    let bytes = rlimit_cur(bindings::RLIMIT_MEMLOCK);
    if bytes == !0 {
        usize::MAX
    } else {
        bytes / kernel::page::PAGE_SIZE
    }
}

/// The current task's soft `RLIMIT_FSIZE` in bytes (`u64::MAX` for unlimited), which shmem's
/// `fallocate` enforces with `EFBIG` and `SIGXFSZ`.
pub fn fsize_limit() -> u64 {
    match rlimit_cur(bindings::RLIMIT_FSIZE) {
        usize::MAX => u64::MAX,
        bytes => bytes as u64,
    }
}
