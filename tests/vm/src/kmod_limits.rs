//! Kernel module: limits, as module parameters. Each is hit exactly: with a limit of N the
//! Nth object is created and the N+1th gets the documented errno.

use crate::kmod_ioctl::*;
use crate::util::with_module_params;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

fn param(name: &str) -> Result<String, crate::Failure> {
    Ok(
        std::fs::read_to_string(format!("/sys/module/dsu/parameters/{name}"))?
            .trim()
            .to_string(),
    )
}

#[distributed_slice(TESTS)]
static DEFAULTS: VmTest = VmTest {
    name: "kmod_limits::parameters_visible",
    phase: Phase::Main,
    run: defaults,
};
fn defaults() -> TestResult {
    ensure_eq!(param("max_segments")?, "64", "max_segments");
    ensure_eq!(param("max_segment_pages")?, "131072", "max_segment_pages");
    ensure_eq!(param("max_variables")?, "16384", "max_variables");
    ensure_eq!(param("max_versions")?, "128", "max_versions");
    with_module_params("max_segments=5 max_versions=7", || {
        ensure_eq!(param("max_segments")?, "5", "max_segments given to insmod");
        ensure_eq!(param("max_versions")?, "7", "max_versions given to insmod");
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static SEGMENTS: VmTest = VmTest {
    name: "kmod_limits::max_segments",
    phase: Phase::Main,
    run: segments,
};
fn segments() -> TestResult {
    with_module_params("max_segments=3", || {
        let d = Dsu::open()?;
        let names: Vec<String> = (0..4).map(|i| format!("limit-seg-{i}")).collect();
        for n in &names[..3] {
            ensure_eq!(
                Dsu::open()?.attach(n, 0, 0),
                Ok(true),
                "segment {n} within the limit"
            );
        }
        ensure_eq!(
            Dsu::open()?.attach(&names[3], 0, 0),
            Err(Errno::ENOSPC),
            "segment past the limit"
        );
        ensure_eq!(
            Dsu::open()?.attach(&names[0], 0, 0),
            Ok(false),
            "opening an existing one at the limit"
        );
        d.destroy(&names[0])?;
        ensure_eq!(
            Dsu::open()?.attach(&names[3], 0, 0),
            Ok(true),
            "after a DESTROY"
        );
        for n in &names[1..] {
            d.destroy(n)?;
        }
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static PAGES: VmTest = VmTest {
    name: "kmod_limits::max_segment_pages",
    phase: Phase::Main,
    run: pages,
};
fn pages() -> TestResult {
    with_module_params("max_segment_pages=8", || {
        let h = Dsu::attached("limit-pages")?;
        let mut vars = vec![var("too_big", 9 * PAGE as u64, 1, None)];
        ensure_eq!(
            h.resolve(&mut vars).1,
            Err(Errno::ENOSPC),
            "one variable above the limit"
        );
        let mut vars = vec![var("huge", u64::MAX, 1, None)];
        ensure_eq!(h.resolve(&mut vars).1, Err(Errno::ENOSPC), "size u64::MAX");
        h.resolve_ok(vec![var("five", 5 * PAGE as u64, 1, None)])?;
        let mut vars = vec![
            var("x", 1, 1, None),
            var("four", 3 * PAGE as u64 + 1, 1, None),
        ];
        ensure_eq!(
            h.resolve(&mut vars).1,
            Err(Errno::ENOSPC),
            "a batch one page past the limit"
        );
        ensure_eq!(
            h.segment_info("limit-pages")?.ok_or("not listed")?.pages,
            5,
            "nothing added"
        );
        let three = h.resolve_ok(vec![var("three", 3 * PAGE as u64, 1, None)])?;
        ensure_eq!(three[0].status, DSU_VAR_ADDED, "exactly at the limit");
        let mut vars = vec![var("one_more", 1, 1, None)];
        ensure_eq!(
            h.resolve(&mut vars).1,
            Err(Errno::ENOSPC),
            "one page past the limit"
        );
        let map: Vec<u64> = (0..9).map(|i| i % 8).collect();
        ensure_eq!(
            h.bind("long", &map, 0),
            Err(Errno::E2BIG),
            "a map longer than the limit"
        );
        ensure_eq!(
            h.bind("exact", &map[..8], 0).map(|_| ()),
            Ok(()),
            "a map at the limit"
        );
        drop(h);
        Dsu::open()?.destroy("limit-pages")?;
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static VARIABLES: VmTest = VmTest {
    name: "kmod_limits::max_variables",
    phase: Phase::Main,
    run: variables,
};
fn variables() -> TestResult {
    with_module_params("max_variables=4", || {
        let h = Dsu::attached("limit-vars")?;
        let five: Vec<_> = (0..5).map(|i| var(&format!("v{i}"), 8, 1, None)).collect();
        let mut batch = five.clone();
        ensure_eq!(
            h.resolve(&mut batch).1,
            Err(Errno::E2BIG),
            "a batch above the limit"
        );
        h.resolve_ok(five[..3].to_vec())?;
        let mut batch = five[2..].to_vec();
        ensure_eq!(
            h.resolve(&mut batch).1,
            Err(Errno::ENOSPC),
            "two new entries with room for one"
        );
        ensure_eq!(h.list_variables("limit-vars", 0, 8)?.1, 3, "nothing added");
        let four = h.resolve_ok(five[..4].to_vec())?;
        ensure_eq!(four[3].status, DSU_VAR_ADDED, "exactly at the limit");
        let mut batch = five[4..].to_vec();
        ensure_eq!(
            h.resolve(&mut batch).1,
            Err(Errno::ENOSPC),
            "one past the limit"
        );
        // Common entries need no room.
        h.resolve_ok(five[..4].to_vec())?;
        drop(h);
        Dsu::open()?.destroy("limit-vars")?;
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static VERSIONS: VmTest = VmTest {
    name: "kmod_limits::max_versions",
    phase: Phase::Main,
    run: versions,
};
fn versions() -> TestResult {
    with_module_params("max_versions=2", || {
        let a = Dsu::attached("limit-versions")?;
        let v = a.resolve_ok(vec![var("g", 8, 1, None)])?;
        let page = [v[0].first_page];
        a.bind("1", &page, 0)?;
        let b = Dsu::attached("limit-versions")?;
        ensure_eq!(
            b.bind("2", &page, 0).map(|_| ()),
            Ok(()),
            "second version at the limit"
        );
        let c = Dsu::attached("limit-versions")?;
        ensure_eq!(
            c.bind("3", &page, 0),
            Err(Errno::ENOSPC),
            "third version past the limit"
        );
        drop(a);
        ensure_eq!(
            c.bind("3", &page, 0).map(|_| ()),
            Ok(()),
            "after a version ended"
        );
        drop((b, c));
        Dsu::open()?.destroy("limit-versions")?;
        ensure!(
            Dsu::open()?.segment_info("limit-versions")?.is_none(),
            "segment left"
        );
        Ok(())
    })
}
