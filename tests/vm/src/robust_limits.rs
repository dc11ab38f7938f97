//! Limits (DESIGN.md "Limits"): each module parameter is hit exactly — one below succeeds,
//! the limit itself succeeds, one past answers the documented errno — and a process in a
//! memory cgroup cannot allocate dsu pages past its memory.max.

use crate::robust_raw::{Dev, PAGE, check_directory, destroy_quietly, in_child, var};
use crate::util::with_module_params;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

#[distributed_slice(TESTS)]
static SEGMENTS: VmTest = VmTest {
    name: "robust::limit_max_segments",
    phase: Phase::Main,
    run: max_segments,
};
fn max_segments() -> TestResult {
    with_module_params("max_segments=3", || {
        let devs: Vec<Dev> = (0..4).map(|_| Dev::open()).collect::<Result<_, _>>()?;
        for (i, d) in devs.iter().take(3).enumerate() {
            ensure!(
                d.attach(&format!("lim-seg-{i}"), DSU_ATTACH_MUST_CREATE, 0)?,
                "segment {i} created"
            );
        }
        ensure_eq!(
            devs[3].attach("lim-seg-3", DSU_ATTACH_MUST_CREATE, 0),
            Err(Errno::ENOSPC),
            "4th segment with max_segments=3"
        );
        ensure_eq!(
            devs[3].attach("lim-seg-3", 0, 0),
            Err(Errno::ENOSPC),
            "4th segment, create-if-missing"
        );
        // At the limit, existing segments still open.
        ensure_eq!(
            devs[3].attach("lim-seg-0", DSU_ATTACH_MUST_EXIST, 0),
            Ok(false),
            "attach existing at the limit"
        );
        // DESTROY frees the name's slot once its last handle is gone.
        devs[3].destroy("lim-seg-1")?;
        drop(devs);
        let d = Dev::open()?;
        ensure_eq!(
            d.attach("lim-seg-3", DSU_ATTACH_MUST_CREATE, 0),
            Ok(true),
            "a slot freed by DESTROY"
        );
        for i in 0..4 {
            let _ = d.destroy(&format!("lim-seg-{i}"));
        }
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static PAGES: VmTest = VmTest {
    name: "robust::limit_max_segment_pages",
    phase: Phase::Main,
    run: max_segment_pages,
};
fn max_segment_pages() -> TestResult {
    with_module_params("max_segment_pages=8", || {
        let d = Dev::open()?;
        d.attach("lim-pages", DSU_ATTACH_MUST_CREATE, 0)?;
        // 7 pages, then 2 more would be 9: ENOSPC, nothing created; then exactly 8.
        let mut v = [var("a", 7 * PAGE as u64, 1, None)];
        d.resolve(&mut v)?;
        let mut v = [var("b", 2 * PAGE as u64, 1, None)];
        ensure_eq!(
            d.resolve(&mut v),
            Err(Errno::ENOSPC),
            "7 + 2 pages with max_segment_pages=8"
        );
        let mut v = [var("b", PAGE as u64 - 1, 1, None), var("c", 1, 1, None)];
        ensure_eq!(
            d.resolve(&mut v),
            Err(Errno::ENOSPC),
            "a batch of 7 + 1 + 1 pages: all or nothing"
        );
        let mut v = [var("b", PAGE as u64, 1, None)];
        ensure_eq!(d.resolve(&mut v), Ok(1), "exactly 8 pages");
        let mut v = [var("c", 1, 1, None)];
        ensure_eq!(d.resolve(&mut v), Err(Errno::ENOSPC), "a 9th page");
        // Huge sizes fail fast, before any allocation.
        for size in [u64::MAX, 1 << 40, 9 * PAGE as u64] {
            let mut v = [var("huge", size, 1, None)];
            ensure_eq!(
                d.resolve(&mut v),
                Err(Errno::ENOSPC),
                "a variable of {size} bytes"
            );
        }
        let vars = check_directory(&d, "lim-pages")?;
        ensure_eq!(vars.len(), 2, "variables after the refused batches");
        // A map of 8 pages binds; 9 is E2BIG.
        let nine = [0u64; 9];
        let other = Dev::open()?;
        other.attach("lim-pages", 0, 0)?;
        ensure_eq!(
            other.bind("lim", &nine, 0),
            Err(Errno::E2BIG),
            "a 9-page map"
        );
        ensure!(other.bind("lim", &nine[..8], 0).is_ok(), "an 8-page map");
        d.destroy("lim-pages")?;
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static VARIABLES: VmTest = VmTest {
    name: "robust::limit_max_variables",
    phase: Phase::Main,
    run: max_variables,
};
fn max_variables() -> TestResult {
    with_module_params("max_variables=4", || {
        let d = Dev::open()?;
        d.attach("lim-vars", DSU_ATTACH_MUST_CREATE, 0)?;
        let mut five: Vec<_> = (0..5).map(|i| var(&format!("v{i}"), 8, 1, None)).collect();
        ensure_eq!(
            d.resolve(&mut five),
            Err(Errno::E2BIG),
            "a batch of 5 with max_variables=4"
        );
        let mut three: Vec<_> = (0..3).map(|i| var(&format!("v{i}"), 8, 1, None)).collect();
        ensure_eq!(d.resolve(&mut three), Ok(3), "3 variables");
        let mut two = [var("v3", 8, 1, None), var("v4", 8, 1, None)];
        ensure_eq!(
            d.resolve(&mut two),
            Err(Errno::ENOSPC),
            "3 + 2 variables: all or nothing"
        );
        let mut one = [var("v3", 8, 1, None)];
        ensure_eq!(d.resolve(&mut one), Ok(1), "the 4th variable");
        let mut one = [var("v4", 8, 1, None)];
        ensure_eq!(d.resolve(&mut one), Err(Errno::ENOSPC), "a 5th variable");
        // Common entries are not new: a full batch of existing names still resolves.
        let mut all: Vec<_> = (0..4).map(|i| var(&format!("v{i}"), 8, 1, None)).collect();
        ensure_eq!(
            d.resolve(&mut all),
            Ok(0),
            "resolving the 4 existing variables"
        );
        ensure_eq!(check_directory(&d, "lim-vars")?.len(), 4, "variables");
        d.destroy("lim-vars")?;
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static VERSIONS: VmTest = VmTest {
    name: "robust::limit_max_versions",
    phase: Phase::Main,
    run: max_versions,
};
fn max_versions() -> TestResult {
    with_module_params("max_versions=2", || {
        let devs: Vec<Dev> = (0..3).map(|_| Dev::open()).collect::<Result<_, _>>()?;
        devs[0].attach("lim-vers", DSU_ATTACH_MUST_CREATE, 0)?;
        let mut v = [var("x", 8, 1, None)];
        devs[0].resolve(&mut v)?;
        for d in &devs[1..] {
            d.attach("lim-vers", DSU_ATTACH_MUST_EXIST, 0)?;
        }
        devs[0].bind("1", &[0], 0)?;
        devs[1].bind("2", &[0], 0)?;
        ensure_eq!(
            devs[2].bind("3", &[0], 0),
            Err(Errno::ENOSPC),
            "a 3rd version with max_versions=2"
        );
        // A version ends with its file: then there is room again.
        let mut devs = devs;
        drop(devs.remove(0));
        ensure!(
            devs[1].bind("3", &[0], 0).is_ok(),
            "a version after one ended"
        );
        devs[0].destroy("lim-vers")?;
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static MEMCG: VmTest = VmTest {
    name: "robust::limit_memcg",
    phase: Phase::Main,
    run: memcg,
};
/// A process in a cgroup with memory.max = 8 MiB asks dsu for 32 MiB: ENOMEM (not an
/// OOM kill, not a bigger segment), while 1 MiB fits; the pages are charged to its cgroup.
fn memcg() -> TestResult {
    let cg = crate::util::memory_cgroup("dsu-memcg-test")?;
    std::fs::write(format!("{cg}/memory.max"), "8M")?;
    destroy_quietly("lim-memcg");
    let setup = Dev::open()?;
    setup.attach("lim-memcg", DSU_ATTACH_MUST_CREATE, 0o666)?;
    let procs = format!("{cg}/cgroup.procs");
    let current = format!("{cg}/memory.current");
    let status = in_child(|| {
        // SAFETY: getpid has no preconditions.
        if std::fs::write(&procs, unsafe { libc::getpid() }.to_string()).is_err() {
            return 10;
        }
        let Ok(d) = Dev::open() else { return 11 };
        if d.attach("lim-memcg", DSU_ATTACH_MUST_EXIST, 0).is_err() {
            return 12;
        }
        let before: u64 = std::fs::read_to_string(&current)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut small = [var("small", 1 << 20, 1, None)];
        if d.resolve(&mut small).is_err() {
            return 13;
        }
        let after: u64 = std::fs::read_to_string(&current)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if after < before + (1 << 20) {
            return 14; // not charged to this cgroup
        }
        let mut big = [var("big", 32 << 20, 1, None)];
        match d.resolve(&mut big) {
            Err(Errno::ENOMEM) => 0,
            Ok(_) => 15,
            Err(_) => 16,
        }
    });
    let info = setup.segment("lim-memcg")?;
    let vars = check_directory(&setup, "lim-memcg");
    setup.destroy("lim-memcg")?;
    drop(setup);
    let _ = std::fs::remove_dir(&cg);
    let why = match status {
        Ok(0) => None,
        Ok(10) => Some("cannot join the cgroup".to_string()),
        Ok(13) => Some("1 MiB under an 8 MiB memory.max was refused".into()),
        Ok(14) => Some("the 1 MiB of dsu pages was not charged to the caller's cgroup".into()),
        Ok(15) => Some("32 MiB past an 8 MiB memory.max was allocated".into()),
        Ok(16) => Some("32 MiB past memory.max failed with another errno than ENOMEM".into()),
        Ok(c) => Some(format!("child exited with {c}")),
        Err(sig) => Some(format!(
            "child killed by signal {sig} (memcg OOM kill instead of ENOMEM)"
        )),
    };
    ensure!(why.is_none(), "{}", why.unwrap_or_default());
    let vars = vars?;
    ensure_eq!(vars.len(), 1, "only the small variable exists: {info:?}");
    Ok(())
}
