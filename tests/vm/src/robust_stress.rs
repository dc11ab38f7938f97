//! Concurrency stress: 16 processes, each running many short-lived versions one after the
//! other (a forked child per round: attach, resolve four common variables and one new one,
//! bind, map, add to the counters, write its own variable, exit). At the end every counter
//! equals the sum of the additions, every new variable holds its last write, and the segment
//! holds exactly the expected variables and pages. `DSU_STRESS_ROUNDS` sets the rounds per
//! process (20 in the suite, 1000 in scripts/robustness-long.sh).
//!
//! Also: unloading the module is refused while a handle or a mapping is alive, and works
//! once everything is gone.

use crate::robust_raw::{
    Dev, KernelLog, check_directory, cstr, destroy_quietly, in_child, var, wait_child,
};
use crate::util::{insmod, module_loaded, sh};
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use std::sync::atomic::Ordering;

const SEG: &str = "stress";
const PROCS: u64 = 16;
const COMMON: usize = 4;

fn own_value(p: u64, r: u64) -> u64 {
    p * 1_000_000 + r
}

/// One round of process `p`: a whole version's life. Returns 0 or a failure code.
fn round(p: u64, r: u64) -> i32 {
    let Ok(dev) = Dev::open() else { return 2 };
    if dev.attach(SEG, 0, 0o600).is_err() {
        return 3;
    }
    let init = own_value(p, r).to_ne_bytes();
    let mut vars: Vec<_> = (0..COMMON)
        .map(|k| var(&format!("common-{k}"), 8, 0xc0, None))
        .collect();
    vars.push(var(&format!("p{p}-r{r}"), 8, 0x01, Some(&init)));
    if dev.resolve(&mut vars).is_err() {
        return 4;
    }
    if vars[COMMON].status != DSU_VAR_ADDED {
        return 5;
    }
    let map: Vec<u64> = vars.iter().map(|v| v.first_page).collect();
    let flags = if r.is_multiple_of(2) {
        DSU_BIND_PREFAULT
    } else {
        0
    };
    if dev.bind(&format!("{p}.{r}"), &map, flags).is_err() {
        return 6;
    }
    let Ok(m) = dev.map_rw(map.len()) else {
        return 7;
    };
    for k in 0..COMMON {
        m.u64_at(k * crate::robust_raw::PAGE)
            .fetch_add(p + 1, Ordering::SeqCst);
    }
    let own = m.u64_at(COMMON * crate::robust_raw::PAGE);
    if own.load(Ordering::SeqCst) != own_value(p, r) {
        return 8;
    }
    own.store(own_value(p, r) + 1, Ordering::SeqCst);
    0
}

#[distributed_slice(TESTS)]
static STRESS: VmTest = VmTest {
    name: "robust::stress_16_processes",
    phase: Phase::Main,
    run: stress,
};
fn stress() -> TestResult {
    let rounds: u64 = std::env::var("DSU_STRESS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let log = KernelLog::mark();
    destroy_quietly(SEG);
    let start = std::time::Instant::now();
    let mut workers = Vec::new();
    for p in 0..PROCS {
        // SAFETY: the suite is single-threaded.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut failed = 0i32;
            for r in 0..rounds {
                match in_child(|| round(p, r)) {
                    Ok(0) => {}
                    other => {
                        eprintln!("stress: process {p} round {r}: {other:?}");
                        failed += 1;
                    }
                }
            }
            // SAFETY: leave without the parent's exit handlers.
            unsafe { libc::_exit(failed.min(255)) };
        }
        workers.push(pid);
    }
    let mut failures = Vec::new();
    for (p, pid) in workers.into_iter().enumerate() {
        match wait_child(pid) {
            Ok(0) => {}
            other => failures.push(format!("process {p}: {other:?}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        failures.is_empty(),
        "rounds failed: {}",
        failures.join(", ")
    );

    let dev = Dev::open()?;
    let info = dev
        .segment(SEG)?
        .ok_or_else(|| crate::Failure::Fail("segment missing".into()))?;
    ensure_eq!(
        (info.handles, info.versions),
        (0, 0),
        "handles and versions after every version exited"
    );
    let vars = check_directory(&dev, SEG)?;
    let expected_vars = COMMON as u64 + PROCS * rounds;
    ensure_eq!(vars.len() as u64, expected_vars, "variables");
    ensure_eq!(info.pages, expected_vars, "pages");
    let per_round: u64 = (1..=PROCS).sum();
    for k in 0..COMMON {
        let name = format!("common-{k}");
        ensure_eq!(
            vars.iter().filter(|v| cstr(&v.name) == name).count(),
            1,
            "entries named {name}"
        );
        let v = u64::from_ne_bytes(dev.read_var(SEG, &name, 8)?.try_into().unwrap_or_default());
        ensure_eq!(v, per_round * rounds, "{name}: sum of the additions");
    }
    for p in 0..PROCS {
        for r in 0..rounds {
            let v = u64::from_ne_bytes(
                dev.read_var(SEG, &format!("p{p}-r{r}"), 8)?
                    .try_into()
                    .unwrap_or_default(),
            );
            ensure_eq!(v, own_value(p, r) + 1, "p{p}-r{r}");
        }
    }
    dev.destroy(SEG)?;
    println!(
        "    {PROCS} processes x {rounds} rounds in {secs:.1} s ({:.0} versions/s)",
        (PROCS * rounds) as f64 / secs
    );
    log.check()
}

#[distributed_slice(TESTS)]
static UNLOAD: VmTest = VmTest {
    name: "robust::unload_under_use",
    phase: Phase::Main,
    run: unload_under_use,
};
fn unload_under_use() -> TestResult {
    let busy = |what: &str| -> TestResult {
        ensure!(sh("rmmod dsu").is_err(), "rmmod succeeded with {what}");
        ensure!(module_loaded(), "module gone with {what}");
        Ok(())
    };
    destroy_quietly("unload");
    {
        let d = Dev::open()?;
        busy("an open handle")?;
        d.attach("unload", DSU_ATTACH_MUST_CREATE, 0)?;
        let mut v = [var("x", 8, 1, None)];
        d.resolve(&mut v)?;
        d.bind("u", &[v[0].first_page], 0)?;
        let m = d.map_rw(1)?;
        m.u64_at(0).store(7, Ordering::SeqCst);
        drop(d);
        // Only the mapping is left; it holds the file and so the module.
        busy("only a mapping")?;
        ensure_eq!(
            m.u64_at(0).load(Ordering::SeqCst),
            7,
            "the mapping works after close"
        );
    }
    // Nothing open, but the segment is still named in the registry: unload frees it.
    let log = KernelLog::mark();
    sh("rmmod dsu")?;
    ensure!(!module_loaded(), "module still loaded");
    insmod("")?;
    let d = Dev::open()?;
    ensure!(d.segment("unload")?.is_none(), "segment survived an unload");
    log.check()
}
