//! Bounds on what users can pin (SECURITY.md "Limits"): every segment that holds pages
//! counts against `max_segments`, per-user segment and page limits, RLIMIT_MEMLOCK,
//! handles per segment, page reservations that keep concurrent RESOLVEs under
//! `max_segment_pages`, and module parameters that cannot be raised past their caps.

use crate::robust_raw::{Dev, destroy_quietly, var};
use crate::util::{as_user, insmod, rmmod, set_rlimit, with_module_params};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

const PAGE: u64 = 4096;

#[distributed_slice(TESTS)]
static DESTROYED: VmTest = VmTest {
    name: "robust::limit_destroyed_segments_count",
    phase: Phase::Main,
    run: destroyed,
};
/// A destroyed segment whose handle stays open still holds pages, so it still takes one
/// of `max_segments`: DESTROY + an open handle does not make room.
fn destroyed() -> TestResult {
    with_module_params("max_segments=2", || {
        let a = Dev::open()?;
        a.attach("pin-a", DSU_ATTACH_MUST_CREATE, 0)?;
        let b = Dev::open()?;
        b.attach("pin-b", DSU_ATTACH_MUST_CREATE, 0)?;
        let mut v = [var("x", PAGE * 4, 1, None)];
        b.resolve(&mut v)?;
        b.destroy("pin-b")?;
        ensure_eq!(
            Dev::open()?.attach("pin-c", DSU_ATTACH_MUST_CREATE, 0),
            Err(Errno::ENOSPC),
            "a third segment while a destroyed one still holds pages"
        );
        drop(b);
        ensure_eq!(
            Dev::open()?.attach("pin-c", DSU_ATTACH_MUST_CREATE, 0),
            Ok(true),
            "once the destroyed segment's last handle is gone"
        );
        a.destroy("pin-a")?;
        a.destroy("pin-c")?;
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static USER_SEGMENTS: VmTest = VmTest {
    name: "robust::limit_max_user_segments",
    phase: Phase::Main,
    run: user_segments,
};
/// `max_user_segments=2`: uid 1000's third segment is ENOSPC (a destroyed one with a
/// handle still counts), another uid is not affected, CAP_SYS_RESOURCE (root) is exempt.
fn user_segments() -> TestResult {
    with_module_params("max_user_segments=2", || {
        as_user(1000, 1000, &[], || {
            let keep = Dev::open()?;
            ensure_eq!(
                keep.attach("pin-u0", DSU_ATTACH_MUST_CREATE, 0),
                Ok(true),
                "first"
            );
            ensure_eq!(
                Dev::open()?.attach("pin-u1", DSU_ATTACH_MUST_CREATE, 0),
                Ok(true),
                "second"
            );
            ensure_eq!(
                Dev::open()?.attach("pin-u2", DSU_ATTACH_MUST_CREATE, 0),
                Err(Errno::ENOSPC),
                "third"
            );
            keep.destroy("pin-u0")?;
            ensure_eq!(
                Dev::open()?.attach("pin-u2", DSU_ATTACH_MUST_CREATE, 0),
                Err(Errno::ENOSPC),
                "third while a destroyed one has a handle"
            );
            drop(keep);
            ensure_eq!(
                Dev::open()?.attach("pin-u2", DSU_ATTACH_MUST_CREATE, 0),
                Ok(true),
                "third once the destroyed one is freed"
            );
            Ok(())
        })?;
        as_user(1001, 1001, &[], || {
            ensure_eq!(
                Dev::open()?.attach("pin-v0", DSU_ATTACH_MUST_CREATE, 0),
                Ok(true),
                "another uid"
            );
            Ok(())
        })?;
        let root = Dev::open()?;
        for i in 0..3 {
            ensure_eq!(
                Dev::open()?.attach(&format!("pin-r{i}"), DSU_ATTACH_MUST_CREATE, 0),
                Ok(true),
                "root's segment {i} (CAP_SYS_RESOURCE)"
            );
        }
        for n in ["pin-u1", "pin-u2", "pin-v0", "pin-r0", "pin-r1", "pin-r2"] {
            root.destroy(n)?;
        }
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static USER_PAGES: VmTest = VmTest {
    name: "robust::limit_max_user_pages",
    phase: Phase::Main,
    run: user_pages,
};
/// `max_user_pages=8`: the pages uid 1000 adds count across its segments; past 8 RESOLVE
/// is ENOSPC and changes nothing; pages another uid adds to uid 1000's segment are that
/// uid's; pages are released when the segment is freed, not at DESTROY.
fn user_pages() -> TestResult {
    with_module_params("max_user_pages=8", || {
        as_user(1000, 1000, &[], || {
            let a = Dev::open()?;
            a.attach("pin-p0", DSU_ATTACH_MUST_CREATE, 0o666)?;
            let mut v = [var("six", 6 * PAGE, 1, None)];
            ensure_eq!(a.resolve(&mut v), Ok(1), "6 pages");
            let b = Dev::open()?;
            b.attach("pin-p1", DSU_ATTACH_MUST_CREATE, 0)?;
            let mut v = [var("three", 3 * PAGE, 1, None)];
            ensure_eq!(b.resolve(&mut v), Err(Errno::ENOSPC), "9 pages in all");
            let mut v = [var("two", 2 * PAGE, 1, None)];
            ensure_eq!(b.resolve(&mut v), Ok(1), "8 pages in all");
            ensure_eq!(b.variables("pin-p1")?.len(), 1, "only the fitting entry");
            b.destroy("pin-p1")?;
            let mut v = [var("one", PAGE, 1, None)];
            ensure_eq!(
                a.resolve(&mut v),
                Err(Errno::ENOSPC),
                "a destroyed segment's pages stay charged while a handle holds them"
            );
            drop(b);
            ensure_eq!(a.resolve(&mut v), Ok(1), "freed with the last handle");
            Ok(())
        })?;
        as_user(1001, 1001, &[], || {
            let d = Dev::open()?;
            d.attach_owner("pin-p0", 0, 0, 1000)?;
            let mut v = [var("theirs", 8 * PAGE, 1, None)];
            ensure_eq!(d.resolve(&mut v), Ok(1), "uid 1001's own 8 pages");
            Ok(())
        })?;
        Dev::open()?.destroy("pin-p0")?;
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static MEMLOCK: VmTest = VmTest {
    name: "robust::limit_memlock",
    phase: Phase::Main,
    run: memlock,
};
/// Segment pages count against the user's RLIMIT_MEMLOCK like SHM_LOCK: with 64 KiB (16
/// pages), uid 1000 gets 12 pages, then 8 more are ENOMEM, also from a second process of
/// the same uid (the total is per user); the library's message names the limit. Root has
/// CAP_IPC_LOCK and is not bound by its own rlimit.
fn memlock() -> TestResult {
    const SEG: &str = "pin-memlock";
    destroy_quietly(SEG);
    let r = (|| {
        as_user(1000, 1000, &[], || {
            set_rlimit(libc::RLIMIT_MEMLOCK, 16 * PAGE)?;
            let a = Dev::open()?;
            a.attach(SEG, DSU_ATTACH_MUST_CREATE, 0)?;
            let mut v = [var("twelve", 12 * PAGE, 1, None)];
            ensure_eq!(a.resolve(&mut v), Ok(1), "12 of 16 pages");
            let mut v = [var("eight", 8 * PAGE, 1, None)];
            ensure_eq!(a.resolve(&mut v), Err(Errno::ENOMEM), "20 of 16 pages");
            // Another process of the same uid, with the same rlimit.
            let other = crate::robust_raw::in_child(|| {
                let Ok(b) = Dev::open() else { return 10 };
                if b.attach(SEG, DSU_ATTACH_MUST_EXIST, 0).is_err() {
                    return 11;
                }
                let mut v = [var("eight-b", 8 * PAGE, 1, None)];
                if b.resolve(&mut v) != Err(Errno::ENOMEM) {
                    return 12;
                }
                let mut v = [var("four", 4 * PAGE, 1, None)];
                if b.resolve(&mut v) != Ok(1) {
                    return 13;
                }
                0
            });
            ensure_eq!(
                other,
                Ok(0),
                "another process of uid 1000 (12: 20 pages not ENOMEM, 13: 16 pages refused)"
            );
            let e = dsu::Error::from_errno(
                dsu::Op::Resolve,
                Errno::ENOMEM,
                &dsu::error::Context::default(),
            );
            ensure!(
                e.to_string().contains("RLIMIT_MEMLOCK"),
                "the library's message names the limit: {e}"
            );
            Ok(())
        })?;
        as_user(0, 0, &[], || {
            set_rlimit(libc::RLIMIT_MEMLOCK, 16 * PAGE)?;
            let d = Dev::open()?;
            d.attach("pin-memlock-root", DSU_ATTACH_MUST_CREATE, 0)?;
            let mut v = [var("many", 64 * PAGE, 1, None)];
            let r = d.resolve(&mut v);
            d.destroy("pin-memlock-root")?;
            ensure_eq!(r, Ok(1), "root (CAP_IPC_LOCK) past its own rlimit");
            Ok(())
        })
    })();
    destroy_quietly(SEG);
    r
}

#[distributed_slice(TESTS)]
static HANDLES: VmTest = VmTest {
    name: "robust::limit_max_handles",
    phase: Phase::Main,
    run: handles,
};
/// `max_handles=3`: a fourth handle attached to one segment is ENOSPC, until one closes.
fn handles() -> TestResult {
    with_module_params("max_handles=3", || {
        let hs: Vec<Dev> = (0..3)
            .map(|_| {
                let d = Dev::open()?;
                d.attach("pin-h", 0, 0)?;
                Ok(d)
            })
            .collect::<Result<_, Errno>>()?;
        let d = Dev::open()?;
        ensure_eq!(d.attach("pin-h", 0, 0), Err(Errno::ENOSPC), "fourth handle");
        drop(hs);
        ensure_eq!(
            d.attach("pin-h", 0, 0),
            Ok(false),
            "after the others closed"
        );
        d.destroy("pin-h")?;
        Ok(())
    })
}

/// Writes a module parameter through sysfs: the errno of a refused write.
fn write_param(name: &str, value: &str) -> Result<(), Errno> {
    std::fs::write(format!("/sys/module/dsu/parameters/{name}"), value)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

#[distributed_slice(TESTS)]
static PARAMS: VmTest = VmTest {
    name: "robust::limit_params_capped",
    phase: Phase::Main,
    run: params,
};
/// Every parameter has a cap: a larger value is EINVAL through sysfs and at insmod, the cap
/// itself is accepted. The old reproduction (max_variables=20000000, then an unprivileged
/// RESOLVE of 11,000,000 entries and a kvmalloc WARNING) cannot happen: the write fails,
/// and at the cap such a RESOLVE is E2BIG before anything is allocated.
fn params() -> TestResult {
    let caps = [
        ("max_segments", 4096u64, "64"),
        ("max_segment_pages", 1 << 22, "131072"),
        ("max_variables", 1 << 18, "16384"),
        ("max_versions", 4096, "128"),
        ("max_handles", 65536, "1024"),
        ("max_user_segments", 4096, "16"),
        ("max_user_pages", 1 << 22, "131072"),
    ];
    let r = (|| {
        ensure_eq!(
            write_param("max_variables", "20000000"),
            Err(Errno::EINVAL),
            "max_variables=20000000"
        );
        for (name, cap, _) in caps {
            ensure_eq!(
                write_param(name, &(cap + 1).to_string()),
                Err(Errno::EINVAL),
                "{name} above its cap"
            );
            ensure_eq!(
                write_param(name, &u64::MAX.to_string()),
                Err(Errno::EINVAL),
                "{name}=u64::MAX"
            );
            ensure_eq!(
                write_param(name, &cap.to_string()),
                Ok(()),
                "{name} at its cap"
            );
            let now = std::fs::read_to_string(format!("/sys/module/dsu/parameters/{name}"))?;
            ensure_eq!(now.trim(), cap.to_string(), "{name} reads back");
        }
        as_user(1000, 1000, &[], || {
            let d = Dev::open()?;
            d.attach("pin-params", DSU_ATTACH_MUST_CREATE, 0)?;
            let mut r = dsu_resolve {
                size: size_of::<dsu_resolve>() as u32,
                var_size: size_of::<dsu_var>() as u32,
                count: 11_000_000,
                vars: 0x1000,
                ..Default::default()
            };
            ensure_eq!(
                crate::kmod_ioctl::Dsu(d.0.try_clone()?).resolve_raw(&mut r),
                Err(Errno::E2BIG),
                "RESOLVE of 11,000,000 entries"
            );
            d.destroy("pin-params")?;
            Ok(())
        })?;
        Ok(())
    })();
    for (name, _, default) in caps {
        let _ = write_param(name, default);
    }
    r?;
    // At insmod: a value above the cap fails the load.
    rmmod()?;
    let bad = insmod("max_variables=20000000");
    if bad.is_ok() {
        rmmod()?;
    }
    insmod("")?;
    ensure!(bad.is_err(), "insmod max_variables=20000000 succeeded");
    Ok(())
}

#[distributed_slice(TESTS)]
static RESERVED: VmTest = VmTest {
    name: "robust::limit_concurrent_resolve_reserved",
    phase: Phase::Main,
    run: reserved,
};
/// With `max_segment_pages=N`, one RESOLVE allocating N pages and others racing it for N
/// more: the racers are refused before they allocate (the first one's pages are reserved
/// under the segment lock), so the cgroup's memory peak stays near N pages, not 2N.
fn reserved() -> TestResult {
    const N: u64 = 8192; // 32 MiB
    let cg = crate::util::memory_cgroup("dsu-reserve-test")?;
    let procs = format!("{cg}/cgroup.procs");
    let r = with_module_params(&format!("max_segment_pages={N}"), || {
        as_user(0, 0, &[], || {
            // SAFETY: getpid has no preconditions.
            std::fs::write(&procs, unsafe { libc::getpid() }.to_string())?;
            let d = Dev::open()?;
            d.attach("pin-reserve", DSU_ATTACH_MUST_CREATE, 0)?;
            let fd = d.fd();
            let done = std::sync::atomic::AtomicBool::new(false);
            let (first, raced) = std::thread::scope(|s| {
                let first = s.spawn(|| {
                    let dev = Dev(unsafe_dup(fd));
                    let mut v = [var("first", N * PAGE, 1, None)];
                    let r = dev.resolve(&mut v);
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    r
                });
                let racer = s.spawn(|| {
                    let dev = Dev(unsafe_dup(fd));
                    let mut raced = 0;
                    let mut i = 0;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    while !done.load(std::sync::atomic::Ordering::SeqCst) && i < 1000 {
                        let mut v = [var(&format!("racer{i}"), N * PAGE, 1, None)];
                        // Started while the first RESOLVE was still in flight.
                        if !done.load(std::sync::atomic::Ordering::SeqCst) {
                            raced += 1;
                        }
                        let r = dev.resolve(&mut v);
                        if r.is_ok() {
                            break;
                        }
                        i += 1;
                    }
                    raced
                });
                (first.join().ok(), racer.join().unwrap_or(0))
            });
            let peak: u64 = std::fs::read_to_string(format!("{cg}/memory.peak"))?
                .trim()
                .parse()?;
            let vars = d.variables("pin-reserve")?;
            d.destroy("pin-reserve")?;
            ensure!(
                matches!(first, Some(Ok(1)) | Some(Err(Errno::ENOSPC))),
                "first RESOLVE: {first:?}"
            );
            ensure_eq!(vars.len(), 1, "one entry fits");
            if raced == 0 {
                return Err(Failure::Skip(
                    "no racing RESOLVE overlapped the first".into(),
                ));
            }
            ensure!(
                peak < N * PAGE * 3 / 2,
                "memory peak {peak} bytes with {raced} racing RESOLVEs: more than one segment's worth of pages was allocated"
            );
            Ok(())
        })
    });
    let _ = std::fs::remove_dir(&cg);
    r
}

/// A new descriptor for the same open file (each thread owns its copy).
fn unsafe_dup(fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: dup of a valid descriptor returns a new one that we own.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(libc::dup(fd)) }
}

#[distributed_slice(TESTS)]
static KERNEL_ALLOCATIONS: VmTest = VmTest {
    name: "robust::kernel_allocations_charged",
    phase: Phase::Main,
    run: kernel_allocations,
};
/// Kernel memory a RESOLVE allocates for its caller (the batch copy: entries, names and
/// descriptions, several MiB for 16384 entries) is charged to the caller's memory cgroup:
/// with 1 MiB of room left, a full batch of malformed entries fails with ENOMEM while the
/// kernel copies it in, where an uncharged copy would reach validation (EINVAL). Nothing is
/// created and the caller is not OOM-killed.
fn kernel_allocations() -> TestResult {
    let cg = crate::util::memory_cgroup("dsu-kacct-test")?;
    destroy_quietly("pin-kacct");
    let setup = Dev::open()?;
    setup.attach("pin-kacct", DSU_ATTACH_MUST_CREATE, 0o666)?;
    let status = crate::robust_raw::in_child(|| {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        if std::fs::write(format!("{cg}/cgroup.procs"), pid.to_string()).is_err() {
            return 10;
        }
        let Ok(d) = Dev::open() else { return 11 };
        if d.attach("pin-kacct", DSU_ATTACH_MUST_EXIST, 0).is_err() {
            return 12;
        }
        // Malformed (align 3), so that an uncharged copy ends in EINVAL, not in pages.
        let mut vars: Vec<dsu_var> = (0..16384)
            .map(|i| dsu_var {
                align: 3,
                ..var(&format!("k{i}"), 8, 1, None)
            })
            .collect();
        let Some(current) = std::fs::read_to_string(format!("{cg}/memory.current"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            return 13;
        };
        let room = current + (1 << 20);
        if std::fs::write(format!("{cg}/memory.max"), room.to_string()).is_err() {
            return 14;
        }
        match d.resolve(&mut vars) {
            Err(Errno::ENOMEM) => 0,
            Err(Errno::EINVAL) => 15,
            Ok(_) => 16,
            Err(_) => 17,
        }
    });
    let vars = setup.variables("pin-kacct");
    setup.destroy("pin-kacct")?;
    drop(setup);
    let _ = std::fs::remove_dir(&cg);
    let why = match status {
        Ok(0) => None,
        Ok(15) => {
            Some("the batch copy was not charged: the call reached validation (EINVAL)".into())
        }
        Ok(16) => Some("a malformed batch was accepted".into()),
        Ok(17) => Some("the charged copy failed with another errno than ENOMEM".into()),
        Ok(c) => Some(format!("child setup failed with {c}")),
        Err(sig) => Some(format!(
            "child killed by signal {sig} (memcg OOM kill instead of ENOMEM)"
        )),
    };
    ensure!(why.is_none(), "{}", why.unwrap_or_default());
    ensure_eq!(vars?.len(), 0, "variables created by the failed RESOLVE");
    Ok(())
}
