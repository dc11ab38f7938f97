//! Kernel module: segment pages stay order-0 whatever the system's shmem huge page policy
//! (`/sys/kernel/mm/transparent_hugepage/shmem_enabled`). The module keeps its pages on a
//! private tmpfs mount with `huge=never`; on the kernel's internal mount they would become
//! 2 MiB folios with `always` or `within_size`, pinning far more memory than asked for.

use crate::kmod_ioctl::*;
use crate::robust_raw::KernelLog;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;

const SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// `ShmemHugePages` of /proc/meminfo, in kB.
fn shmem_huge_kb() -> Result<u64, crate::Failure> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    info.lines()
        .find_map(|l| l.strip_prefix("ShmemHugePages:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| crate::Failure::Fail("no ShmemHugePages in /proc/meminfo".into()))
}

/// Runs `f` with `shmem_enabled` set to `mode`, then restores the setting it found.
fn with_shmem_enabled(mode: &str, f: impl FnOnce() -> TestResult) -> TestResult {
    let current = std::fs::read_to_string(SHMEM_ENABLED)?;
    let old = current
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .ok_or_else(|| crate::Failure::Fail(format!("no current mode in {current:?}")))?
        .to_string();
    std::fs::write(SHMEM_ENABLED, mode)?;
    let result = f();
    std::fs::write(SHMEM_ENABLED, &old)?;
    result
}

/// Deterministic contents for variable `k`.
fn pattern(k: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2654435761) >> 7 ^ k.wrapping_mul(0x9e37)) as u8)
        .collect()
}

/// The bytes of a mapping at `offset`.
fn mapped(m: &Map, offset: usize, len: usize) -> Vec<u8> {
    assert!(offset + len <= m.len);
    let mut out = vec![0u8; len];
    // SAFETY: In bounds of a live mapping; a byte copy of shared memory.
    unsafe { std::ptr::copy_nonoverlapping(m.ptr.add(offset), out.as_mut_ptr(), len) };
    out
}

/// The pages of the resolved entries, in the given order, and each entry's page offset in
/// that map.
fn page_map(vars: &[dsu_var], order: &[usize]) -> (Vec<u64>, Vec<usize>) {
    let (mut pages, mut at) = (Vec::new(), vec![0; vars.len()]);
    for &k in order {
        at[k] = pages.len();
        pages.extend(vars[k].first_page..vars[k].first_page + vars[k].page_count);
    }
    (pages, at)
}

fn one_mode(mode: &str) -> TestResult {
    let before = shmem_huge_kb()?;
    let name = unique(&format!("huge-{mode}"));
    let sizes: [usize; 3] = [3 * 1024 * 1024 + 123, 5 * 1024 * 1024, 8];
    let inits: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| pattern(k as u64, n))
        .collect();
    let names = ["big-a", "big-b", "small"];
    let entries = |with_init: bool| -> Vec<dsu_var> {
        (0..3)
            .map(|k| {
                let init = with_init.then_some(inits[k].as_slice());
                var(names[k], sizes[k] as u64, 0x40 + k as u64, init)
            })
            .collect()
    };

    // Version 1 creates the variables and maps them in order.
    let h1 = Dsu::attached(&name)?;
    let v = h1.resolve_ok(entries(true))?;
    let total: u64 = v.iter().map(|e| e.page_count).sum();
    ensure_eq!(
        shmem_huge_kb()?,
        before,
        "ShmemHugePages after allocating {total} pages with shmem_enabled={mode}"
    );
    let info = Dsu::open()?
        .segment_info(&name)?
        .ok_or_else(|| crate::Failure::Fail("segment not listed".into()))?;
    ensure_eq!(info.pages, total, "segment pages");
    let (pages1, at1) = page_map(&v, &[0, 1, 2]);
    h1.bind("1", &pages1, 0)?;
    let m1 = h1.map(pages1.len())?;
    for k in 0..3 {
        ensure!(
            mapped(&m1, at1[k] * PAGE, sizes[k]) == inits[k],
            "{} differs from its initial bytes in version 1",
            names[k]
        );
    }
    // Version 1 rewrites big-b.
    let new_b = pattern(99, sizes[1]);
    // SAFETY: In bounds of the live shared mapping `m1`.
    unsafe { std::ptr::copy_nonoverlapping(new_b.as_ptr(), m1.ptr.add(at1[1] * PAGE), sizes[1]) };

    // Version 2 finds them all common and maps them in another order (prefaulted).
    let h2 = Dsu::attached(&name)?;
    let v2 = h2.resolve_ok(entries(false))?;
    ensure!(
        v2.iter().all(|e| e.status == DSU_VAR_COMMON),
        "version 2 did not find every variable"
    );
    let (pages2, at2) = page_map(&v2, &[2, 1, 0]);
    h2.bind("2", &pages2, DSU_BIND_PREFAULT)?;
    let m2 = h2.map(pages2.len())?;
    let want = [&inits[0], &new_b, &inits[2]];
    for k in 0..3 {
        ensure!(
            mapped(&m2, at2[k] * PAGE, sizes[k]) == *want[k],
            "{} differs in version 2",
            names[k]
        );
    }
    let read = h2.read_var(&name, names[1], 0x41, 0, 0, sizes[1])?;
    ensure!(read == new_b, "READ_VAR of big-b differs");
    ensure_eq!(
        shmem_huge_kb()?,
        before,
        "ShmemHugePages with two versions mapped (shmem_enabled={mode})"
    );
    drop((m1, m2, h1, h2));
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static SHMEM_HUGE: VmTest = VmTest {
    name: "kmod_hugepages::no_huge_folios_with_shmem_enabled",
    phase: Phase::Main,
    run: no_huge_folios,
};
fn no_huge_folios() -> TestResult {
    if !std::path::Path::new(SHMEM_ENABLED).exists() {
        return Err(crate::Failure::Skip(
            "the kernel has no transparent huge pages".into(),
        ));
    }
    let log = KernelLog::mark();
    for mode in ["always", "within_size"] {
        with_shmem_enabled(mode, || one_mode(mode))?;
    }
    log.check()
}

#[distributed_slice(TESTS)]
static SHMEM_FORCE: VmTest = VmTest {
    name: "kmod_hugepages::large_folio_refused_with_force",
    phase: Phase::Main,
    run: large_folio_refused,
};
/// `shmem_enabled=force` overrides even a `huge=never` mount: the module must notice the
/// large folio and refuse the allocation (`ENOMEM`, nothing added, nothing left pinned)
/// rather than pin and map 2 MiB folios as if they were single pages.
fn large_folio_refused() -> TestResult {
    if !std::path::Path::new(SHMEM_ENABLED).exists() {
        return Err(crate::Failure::Skip(
            "the kernel has no transparent huge pages".into(),
        ));
    }
    let log = KernelLog::mark();
    let name = unique("huge-force");
    let before = shmem_huge_kb()?;
    let h = Dsu::attached(&name)?;
    with_shmem_enabled("force", || {
        let mut vars = [var("big", 4 << 20, 1, None)];
        let (_, res) = h.resolve(&mut vars);
        ensure_eq!(
            res,
            Err(nix::errno::Errno::ENOMEM),
            "RESOLVE of 4 MiB with force"
        );
        Ok(())
    })?;
    ensure_eq!(shmem_huge_kb()?, before, "ShmemHugePages after the refusal");
    let info = Dsu::open()?
        .segment_info(&name)?
        .ok_or_else(|| crate::Failure::Fail("segment not listed".into()))?;
    ensure_eq!(
        (info.pages, info.variables),
        (0, 0),
        "pages and variables after the refusal"
    );
    // Back to the default policy, the same RESOLVE works.
    let v = h.resolve_ok(vec![var("big", 4 << 20, 1, None)])?;
    ensure_eq!(v[0].page_count, 1024, "pages of 4 MiB");
    drop(h);
    cleanup(&name);
    log.check()
}
