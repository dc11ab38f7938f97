//! Helpers shared by the VM tests: module loading, shell commands, running code as another
//! user in a child process, and kmemleak.

use crate::{Failure, TestResult};
use std::process::Command;

/// Fails the test with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::Failure::Fail(format!($($msg)+)));
        }
    };
}

/// Fails the test unless both values are equal, printing both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err($crate::Failure::Fail(format!("{}: {:?} != {:?}", format!($($msg)+), l, r)));
        }
    }};
}

/// Path of the module under test.
pub fn module_path() -> String {
    std::env::var("DSU_MODULE").unwrap_or_else(|_| "/dsu/dsu.ko".into())
}

/// Runs a shell command and returns its stdout, failing on a non-zero exit.
pub fn sh(cmd: &str) -> Result<String, Failure> {
    let out = Command::new("/bin/sh").arg("-c").arg(cmd).output()?;
    if !out.status.success() {
        return Err(Failure::Fail(format!(
            "`{cmd}` exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the dsu module is loaded.
pub fn module_loaded() -> bool {
    std::fs::read_to_string("/proc/modules")
        .map(|m| m.lines().any(|l| l.starts_with("dsu ")))
        .unwrap_or(false)
}

/// Loads the module with the given parameters (e.g. `"max_segments=3"`).
pub fn insmod(params: &str) -> TestResult {
    sh(&format!("insmod {} {params}", module_path()))?;
    Ok(())
}

/// Unloads the module.
pub fn rmmod() -> TestResult {
    sh("rmmod dsu")?;
    Ok(())
}

/// Reloads the module with the given parameters, runs `f`, then reloads it with defaults,
/// so that a test of limits leaves the module as it found it.
pub fn with_module_params(params: &str, f: impl FnOnce() -> TestResult) -> TestResult {
    rmmod()?;
    insmod(params)?;
    let result = f();
    rmmod()?;
    insmod("")?;
    result
}

/// Runs `f` in a forked child with the given uid and gid (and no supplementary groups
/// other than `groups`), and returns its result. The child's failure message comes back
/// through a pipe.
pub fn as_user(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> TestResult) -> TestResult {
    use nix::unistd::{ForkResult, Gid, Uid, fork, pipe, setgid, setgroups, setuid};
    use std::io::{Read, Write};
    let (r, w) = pipe()?;
    // SAFETY: the VM suite is single-threaded, so the child may run arbitrary code.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(r);
            let mut w = std::fs::File::from(w);
            let result = (|| -> TestResult {
                let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
                setgroups(&groups)?;
                setgid(Gid::from_raw(gid))?;
                setuid(Uid::from_raw(uid))?;
                f()
            })();
            let msg = match result {
                Ok(()) => "ok".to_string(),
                Err(Failure::Fail(m)) => format!("fail:{m}"),
                Err(Failure::Skip(m)) => format!("skip:{m}"),
            };
            let _ = w.write_all(msg.as_bytes());
            drop(w);
            // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers.
            unsafe { libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut msg = String::new();
            std::fs::File::from(r).read_to_string(&mut msg)?;
            nix::sys::wait::waitpid(child, None)?;
            match msg.split_once(':') {
                _ if msg == "ok" => Ok(()),
                Some(("skip", m)) => Err(Failure::Skip(m.into())),
                Some((_, m)) => Err(Failure::Fail(format!("as uid {uid}: {m}"))),
                None => Err(Failure::Fail(format!("as uid {uid}: child died: {msg:?}"))),
            }
        }
    }
}

/// Triggers a kmemleak scan and returns the reports (empty when clean). Fails if kmemleak
/// is not available, since the suite's kernel must have it.
pub fn kmemleak_scan() -> Result<String, Failure> {
    let path = "/sys/kernel/debug/kmemleak";
    if !std::path::Path::new(path).exists() {
        let _ = sh("mount -t debugfs none /sys/kernel/debug");
    }
    // Two scans: an object must be seen unreferenced twice to be reported.
    for _ in 0..2 {
        std::fs::write(path, "scan")?;
    }
    Ok(std::fs::read_to_string(path)?)
}

/// A fresh memory cgroup `/sys/fs/cgroup/NAME` under the root, with the memory controller
/// enabled for the root's children; its path. SKIP if the kernel has no memory controller.
pub fn memory_cgroup(name: &str) -> Result<String, Failure> {
    let root = "/sys/fs/cgroup";
    let controllers =
        std::fs::read_to_string(format!("{root}/cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(Failure::Skip(
            "no memory controller in /sys/fs/cgroup (see SECURITY.md)".into(),
        ));
    }
    std::fs::write(format!("{root}/cgroup.subtree_control"), "+memory")?;
    let cg = format!("{root}/{name}");
    let _ = std::fs::remove_dir(&cg);
    std::fs::create_dir(&cg)?;
    Ok(cg)
}

/// Sets this process's soft and hard limit `resource` (`libc::RLIMIT_*`) to `bytes`.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, bytes: u64) -> TestResult {
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: a valid rlimit.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(Failure::Fail(format!(
            "setrlimit: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
