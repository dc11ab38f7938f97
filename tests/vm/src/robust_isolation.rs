//! Who sees whose segments (SECURITY.md "Who may do what", DESIGN.md "Ownership and
//! namespaces"): a program never lands on a segment another uid created unless it names
//! that owner; IPC namespaces scope segment names like SysV shm; uids, gids and pids in
//! output are those of the reader's user and pid namespaces; the event record size is
//! chosen at ATTACH.

use crate::robust_raw::{Dev, destroy_quietly, var};
use crate::util::as_user;
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;
use std::os::fd::AsRawFd;

/// Runs `f` in a forked child as root (a fresh process to unshare namespaces in).
fn in_root_child(f: impl FnOnce() -> TestResult) -> TestResult {
    as_user(0, 0, &[], f)
}

/// unshare(2), as a test failure.
fn unshare(flags: i32) -> TestResult {
    // SAFETY: unshare has no memory preconditions; the caller is single-threaded.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(Failure::Fail(format!(
            "unshare({flags:#x}): {}",
            Errno::last()
        )));
    }
    Ok(())
}

#[distributed_slice(TESTS)]
static TAKEOVER: VmTest = VmTest {
    name: "robust::owner_takeover_refused",
    phase: Phase::Main,
    run: takeover,
};
/// uid 1001 pre-creates `app` with mode 0666 before uid 1000's program starts: the
/// program's attach fails (EPERM, and the library says what to do) and uid 1001 sees
/// nothing of it; root is not trapped either; naming the owner shares on purpose; naming
/// an owner never creates a segment for someone else.
fn takeover() -> TestResult {
    const SEG: &str = "iso-app";
    destroy_quietly(SEG);
    as_user(1001, 1001, &[], || {
        ensure_eq!(
            Dev::open()?.attach(SEG, DSU_ATTACH_MUST_CREATE, 0o666),
            Ok(true),
            "uid 1001 pre-creates the name"
        );
        Ok(())
    })?;
    let r = (|| {
        as_user(1000, 1000, &[], || {
            let d = Dev::open()?;
            ensure_eq!(d.attach(SEG, 0, 0), Err(Errno::EPERM), "create-or-open");
            ensure_eq!(
                d.attach(SEG, DSU_ATTACH_MUST_EXIST, 0),
                Err(Errno::EPERM),
                "MUST_EXIST"
            );
            // The library's attach gives the error that says what to do.
            let mut dev = dsu::sys::Device::open()?;
            let e = dev
                .attach(SEG, dsu::sys::Create::IfMissing, 0)
                .expect_err("the library attached to another user's segment");
            let msg = e.to_string();
            ensure!(
                matches!(
                    e,
                    dsu::Error::OwnedByOther {
                        uid: Some(1001),
                        ..
                    }
                ) && msg.contains("shared_with_owner(1001)")
                    && msg.contains("choose another name"),
                "library error: {msg}"
            );
            // Naming another owner than the real one fails the same way.
            ensure_eq!(
                d.attach_owner(SEG, 0, 0, 1002),
                Err(Errno::EPERM),
                "owner 1002 named"
            );
            // Naming an owner never creates a segment owned by someone else...
            ensure_eq!(
                d.attach_owner("iso-app-missing", 0, 0o666, 1001),
                Err(Errno::ENOENT),
                "a missing segment with another owner named"
            );
            // ...but naming oneself is plain create-or-open.
            let mine = Dev::open()?;
            ensure_eq!(
                mine.attach_owner("iso-app-mine", 0, 0, 1000),
                Ok(true),
                "a missing segment, this user named"
            );
            mine.destroy("iso-app-mine")?;
            Ok(())
        })?;
        // uid 1001 sees nothing of uid 1000's program.
        as_user(1001, 1001, &[], || {
            ensure_eq!(
                Dev::open()?.variables(SEG)?.len(),
                0,
                "variables in the trap segment"
            );
            Ok(())
        })?;
        // The trap works on root too (CAP_SYS_ADMIN bypasses modes, not the owner check).
        ensure_eq!(
            Dev::open()?.attach(SEG, 0, 0),
            Err(Errno::EPERM),
            "root's attach"
        );
        // Sharing on purpose: uid 1000 names the owner, stores a value, uid 1001 reads it.
        as_user(1000, 1000, &[], || {
            let d = Dev::open()?;
            ensure_eq!(
                d.attach_owner(SEG, 0, 0, 1001),
                Ok(false),
                "uid 1000 names the owner"
            );
            let init = 7u64.to_ne_bytes();
            let mut v = [var("shared", 8, 1, Some(&init))];
            d.resolve(&mut v)?;
            Ok(())
        })?;
        as_user(1001, 1001, &[], || {
            ensure_eq!(
                Dev::open()?.read_var(SEG, "shared", 8)?,
                7u64.to_ne_bytes().to_vec(),
                "the owner reads what was shared on purpose"
            );
            Ok(())
        })
    })();
    destroy_quietly(SEG);
    r
}

#[distributed_slice(TESTS)]
static IPC_NS: VmTest = VmTest {
    name: "robust::ipc_namespace_scoping",
    phase: Phase::Main,
    run: ipc_ns,
};
/// A process in another IPC namespace neither lists, opens, reads nor destroys the
/// initial namespace's segment; its ATTACH of the same name creates a separate segment,
/// which the initial namespace does not see; and namespaces do not reuse each other's
/// segments when one ends.
fn ipc_ns() -> TestResult {
    const SEG: &str = "iso-ipc";
    destroy_quietly(SEG);
    let outer = Dev::open()?;
    outer.attach(SEG, DSU_ATTACH_MUST_CREATE, 0o666)?;
    let init = 42u64.to_ne_bytes();
    let mut v = [var("secret", 8, 1, Some(&init))];
    outer.resolve(&mut v)?;
    let r = (|| {
        for round in 0..2 {
            in_root_child(|| {
                unshare(libc::CLONE_NEWIPC)?;
                let d = Dev::open()?;
                ensure!(
                    d.segment(SEG)?.is_none(),
                    "round {round}: LIST_SEGMENTS shows another namespace's segment"
                );
                ensure_eq!(
                    d.read_var(SEG, "secret", 8),
                    Err(Errno::ENOENT),
                    "round {round}: READ_VAR"
                );
                ensure_eq!(
                    d.variables(SEG).map(|v| v.len()),
                    Err(Errno::ENOENT),
                    "round {round}: LIST_VARIABLES"
                );
                ensure_eq!(d.destroy(SEG), Err(Errno::ENOENT), "round {round}: DESTROY");
                ensure_eq!(
                    d.attach(SEG, DSU_ATTACH_MUST_EXIST, 0),
                    Err(Errno::ENOENT),
                    "round {round}: ATTACH MUST_EXIST"
                );
                // Its own segment of that name: new, empty, listed here only.
                let own = Dev::open()?;
                ensure_eq!(
                    own.attach(SEG, 0, 0o666),
                    Ok(true),
                    "round {round}: ATTACH creates this namespace's own segment"
                );
                let init = 9u64.to_ne_bytes();
                let mut mine = [var("inner", 8, 2, Some(&init))];
                own.resolve(&mut mine)?;
                ensure_eq!(d.segments()?.len(), 1, "round {round}: segments listed");
                ensure_eq!(
                    d.variables(SEG)?.len(),
                    1,
                    "round {round}: its own variables"
                );
                // Left behind (named) when the namespace's last process exits.
                Ok(())
            })?;
        }
        // The initial namespace's segment is untouched and alone under its name here.
        let names: Vec<String> = outer
            .segments()?
            .iter()
            .map(|s| crate::robust_raw::cstr(&s.name))
            .filter(|n| n == SEG)
            .collect();
        ensure_eq!(names.len(), 1, "segments named {SEG} listed outside");
        let vars = outer.variables(SEG)?;
        ensure_eq!(vars.len(), 1, "variables of the outer segment");
        ensure_eq!(
            outer.read_var(SEG, "secret", 8)?,
            42u64.to_ne_bytes().to_vec(),
            "outer value"
        );
        Ok(())
    })();
    destroy_quietly(SEG);
    r
}

/// Writes `map` to /proc/`pid`/`file`.
fn write_map(pid: i32, file: &str, map: &str) -> TestResult {
    std::fs::write(format!("/proc/{pid}/{file}"), map)
        .map_err(|e| Failure::Fail(format!("writing /proc/{pid}/{file}: {e}")))
}

#[distributed_slice(TESTS)]
static USER_NS: VmTest = VmTest {
    name: "robust::user_namespace_ids",
    phase: Phase::Main,
    run: user_ns,
};
/// In a user namespace that maps its uid/gid 0 to 1000: a segment of uid 1000 lists as
/// uid 0, root's as the overflow uid 65534; an owner named at ATTACH is a uid of that
/// namespace (0 means 1000 there, and 1000 maps to nothing: EINVAL).
fn user_ns() -> TestResult {
    const MINE: &str = "iso-uid-1000";
    const ROOTS: &str = "iso-uid-root";
    destroy_quietly(MINE);
    destroy_quietly(ROOTS);
    as_user(1000, 1000, &[], || {
        Dev::open()?.attach(MINE, DSU_ATTACH_MUST_CREATE, 0o644)?;
        Ok(())
    })?;
    Dev::open()?.attach(ROOTS, DSU_ATTACH_MUST_CREATE, 0o644)?;
    let r = (|| {
        let (go_r, go_w) = nix::unistd::pipe()?;
        let (ready_r, ready_w) = nix::unistd::pipe()?;
        // SAFETY: single-threaded suite.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(go_w);
            drop(ready_r);
            let code = (|| -> Result<i32, Failure> {
                unshare(libc::CLONE_NEWUSER)?;
                nix::unistd::write(&ready_w, b"u")?;
                let mut b = [0u8; 1];
                nix::unistd::read(go_r.as_raw_fd(), &mut b)?;
                let d = Dev::open()?;
                let mine = d.segment(MINE)?.ok_or("own segment not listed")?;
                let roots = d.segment(ROOTS)?.ok_or("root's segment not listed")?;
                if (mine.uid, mine.gid) != (0, 0) {
                    return Ok(10);
                }
                if (roots.uid, roots.gid) != (65534, 65534) {
                    return Ok(11);
                }
                if Dev::open()?.attach(MINE, DSU_ATTACH_MUST_EXIST, 0) != Err(Errno::EPERM) {
                    return Ok(12);
                }
                if Dev::open()?.attach_owner(MINE, DSU_ATTACH_MUST_EXIST, 0, 0) != Ok(false) {
                    return Ok(13);
                }
                if Dev::open()?.attach_owner(MINE, DSU_ATTACH_MUST_EXIST, 0, 1000)
                    != Err(Errno::EINVAL)
                {
                    return Ok(14);
                }
                Ok(0)
            })()
            .unwrap_or(20);
            // SAFETY: leave without the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        drop(go_r);
        drop(ready_w);
        let mut b = [0u8; 1];
        nix::unistd::read(ready_r.as_raw_fd(), &mut b)?;
        write_map(pid, "uid_map", "0 1000 1\n")?;
        write_map(pid, "gid_map", "0 1000 1\n")?;
        nix::unistd::write(&go_w, b"g")?;
        let status = crate::robust_raw::wait_child(pid);
        let why = match status {
            Ok(0) => return Ok(()),
            Ok(10) => "uid 1000's segment does not list as uid/gid 0 in the namespace",
            Ok(11) => "root's segment does not list as 65534 (unmapped) in the namespace",
            Ok(12) => "ATTACH without naming the owner was not EPERM",
            Ok(13) => "ATTACH naming owner 0 (= uid 1000 outside) failed",
            Ok(14) => "ATTACH naming an unmapped uid was not EINVAL",
            _ => "the child failed",
        };
        Err(Failure::Fail(format!("{why} ({status:?})")))
    })();
    destroy_quietly(MINE);
    destroy_quietly(ROOTS);
    r
}

#[distributed_slice(TESTS)]
static PID_NS: VmTest = VmTest {
    name: "robust::pid_namespace_pids",
    phase: Phase::Main,
    run: pid_ns,
};
/// A version bound in a new pid namespace (its process is pid 1 there) lists as pid 1
/// inside and as its real pid outside, where its VERSION_BOUND event carries the real pid
/// too; the outer version, not visible inside, lists as pid 0 there.
fn pid_ns() -> TestResult {
    const SEG: &str = "iso-pid";
    destroy_quietly(SEG);
    let outer = Dev::open()?;
    outer.attach(SEG, DSU_ATTACH_MUST_CREATE, 0o600)?;
    let mut v = [var("x", 8, 1, None)];
    outer.resolve(&mut v)?;
    let page = v[0].first_page;
    outer.bind("outer", &[page], 0)?;
    let listener = Dev::open()?;
    listener.attach(SEG, DSU_ATTACH_MUST_EXIST, 0)?;
    let (pid_r, pid_w) = nix::unistd::pipe()?;
    let r = (|| {
        in_root_child(|| {
            unshare(libc::CLONE_NEWPID)?;
            // The next child is pid 1 of the new namespace.
            as_user(0, 0, &[], || {
                // /proc is the initial namespace's: /proc/self is this process's real pid.
                let real = std::fs::read_link("/proc/self")?;
                nix::unistd::write(&pid_w, real.to_string_lossy().as_bytes())?;
                // SAFETY: getpid has no preconditions.
                ensure_eq!(unsafe { libc::getpid() }, 1, "pid in the new namespace");
                let watch = Dev::open()?;
                watch.attach(SEG, DSU_ATTACH_MUST_EXIST, 0)?;
                let d = Dev::open()?;
                d.attach(SEG, DSU_ATTACH_MUST_EXIST, 0)?;
                let id = d.bind("inner", &[page], 0)?;
                let versions = d.versions(SEG)?;
                let pid_of = |label: &str| {
                    versions
                        .iter()
                        .find(|v| crate::robust_raw::cstr(&v.label) == label)
                        .map(|v| v.pid)
                };
                ensure_eq!(pid_of("inner"), Some(1), "own version's pid inside");
                ensure_eq!(
                    pid_of("outer"),
                    Some(0),
                    "outer version's pid inside (not visible)"
                );
                let events = read_events(&watch, 64)?;
                ensure!(
                    events.iter().any(|e| e.version_id == id && e.pid == 1),
                    "VERSION_BOUND inside carries pid 1: {events:?}"
                );
                Ok(())
            })
        })?;
        drop(pid_w);
        let mut buf = [0u8; 32];
        let n = nix::unistd::read(pid_r.as_raw_fd(), &mut buf)?;
        let real: i32 = String::from_utf8_lossy(&buf[..n])
            .trim()
            .parse()
            .map_err(|e| Failure::Fail(format!("child's real pid: {e}")))?;
        let events = read_events(&listener, 64)?;
        let bound = events
            .iter()
            .find(|e| e.kind == DSU_EVENT_VERSION_BOUND)
            .ok_or("no VERSION_BOUND event outside")?;
        ensure_eq!(
            bound.pid,
            real,
            "the inner version's pid in the outer event"
        );
        Ok(())
    })();
    drop(outer);
    drop(listener);
    destroy_quietly(SEG);
    r
}

/// Reads the queued events of `dev` (non-blocking) with `record`-byte records.
fn read_events(dev: &Dev, record: usize) -> Result<Vec<dsu_event>, Failure> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; record * 16];
    loop {
        let mut pfd = libc::pollfd {
            fd: dev.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 {
            return Ok(out);
        }
        // SAFETY: the buffer is writable for its length.
        let n = unsafe { libc::read(dev.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(Failure::Fail(format!("read: {}", Errno::last())));
        }
        for rec in buf[..n as usize].chunks(record) {
            // SAFETY: a record holds at least a dsu_event; any bytes are a valid one.
            out.push(unsafe { std::ptr::read_unaligned(rec.as_ptr().cast::<dsu_event>()) });
        }
    }
}

#[distributed_slice(TESTS)]
static EVENT_SIZE: VmTest = VmTest {
    name: "robust::event_record_size",
    phase: Phase::Main,
    run: event_size,
};
/// `dsu_attach.event_size` fixes the record size `read()` returns: a larger one is the
/// event zero-filled (its `size` says 64), a buffer below one record is EINVAL, sizes below
/// the first version's or above a page are refused, and the first version's 80-byte
/// `struct dsu_attach` still attaches, with 64-byte records.
fn event_size() -> TestResult {
    const SEG: &str = "iso-events";
    destroy_quietly(SEG);
    let attach = |event_size: u32, size: u32| -> Result<Dev, Errno> {
        let d = Dev::open_flags(libc::O_RDWR | libc::O_NONBLOCK)?;
        let mut a = dsu_attach {
            size,
            mode: 0o600,
            event_size,
            name: crate::kmod_ioctl::cname(SEG),
            ..Default::default()
        };
        if size < 88 {
            // API version 1's program: its struct and its command number.
            a.event_size = 0;
            let cmd = (3u64 << 30)
                | ((DSU_ATTACH_SIZE_VER1 as u64) << 16)
                | ((DSU_IOC_MAGIC as u64) << 8)
                | DSU_IOC_NR_ATTACH as u64;
            // SAFETY: `a` is a valid dsu_attach whose first 80 bytes the kernel may access.
            let r = unsafe { libc::ioctl(d.fd(), cmd as libc::c_ulong, &raw mut a) };
            return if r < 0 { Err(Errno::last()) } else { Ok(d) };
        }
        d.attach_struct(&mut a)?;
        Ok(d)
    };
    let full = size_of::<dsu_attach>() as u32;
    let r = (|| {
        let wide = attach(128, full)?;
        let old = attach(0, DSU_ATTACH_SIZE_VER1)?;
        ensure_eq!(
            attach(DSU_EVENT_SIZE_VER1 - 1, full).map(drop),
            Err(Errno::EINVAL),
            "event_size 63"
        );
        ensure_eq!(
            attach(4097, full).map(drop),
            Err(Errno::E2BIG),
            "event_size above a page"
        );
        let binder = Dev::open()?;
        binder.attach(SEG, DSU_ATTACH_MUST_EXIST, 0)?;
        let mut v = [var("x", 8, 1, None)];
        binder.resolve(&mut v)?;
        // A candidate: one event (BOUND) until READY.
        let id = binder.bind("b", &[v[0].first_page], DSU_BIND_CANDIDATE)?;

        // A buffer smaller than one 128-byte record.
        let mut small = [0u8; 100];
        // SAFETY: writable buffer of its length.
        let n = unsafe { libc::read(wide.fd(), small.as_mut_ptr().cast(), small.len()) };
        ensure_eq!((n, Errno::last()), (-1, Errno::EINVAL), "read of 100 bytes");
        let mut buf = [0xffu8; 300];
        // SAFETY: writable buffer of its length.
        let n = unsafe { libc::read(wide.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        ensure_eq!(n, 128, "one 128-byte record");
        // SAFETY: 128 bytes hold a dsu_event.
        let e = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<dsu_event>()) };
        ensure_eq!(
            (e.size, e.kind, e.version_id),
            (64, DSU_EVENT_VERSION_BOUND, id),
            "record"
        );
        ensure!(
            buf[64..128].iter().all(|b| *b == 0),
            "bytes past the kernel's event are zero"
        );
        ensure!(
            buf[128..].iter().all(|b| *b == 0xff),
            "nothing past the record"
        );
        let mut buf = [0u8; 256];
        // SAFETY: writable buffer of its length.
        let n = unsafe { libc::read(old.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        ensure_eq!(n, 64, "an 80-byte ATTACH reads 64-byte records");
        Ok(())
    })();
    destroy_quietly(SEG);
    r
}
