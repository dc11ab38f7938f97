//! Kernel module: commit and abort, and garbage collection (issue 13, items 1 and 3).
//!
//! A version bound with `DSU_BIND_CANDIDATE` is announced (`VERSION_READY`) only at
//! `DSU_IOC_READY`; one that goes before is reported `ABORTED` and the variables it added
//! that nothing else maps or holds are removed, their pages freed and uncharged.
//! `DSU_IOC_GC` lists or reclaims what no live version maps, no handle holds and no ready
//! version used for `min_age` generations, and never a variable that is mapped, even while
//! other processes attach and bind concurrently.

use crate::kmod_ioctl::*;
use crate::util::{as_user, with_module_params};
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;
use std::time::{Duration, Instant};

/// Names of the segment's variables, in directory order.
fn names(d: &Dsu, seg: &str) -> Result<Vec<String>, Errno> {
    let (vars, _) = d.list_variables(seg, 0, DSU_LIST_MAX)?;
    Ok(vars.iter().map(|v| cstr(&v.name)).collect())
}

/// The segment's page count (LIST_SEGMENTS).
fn pages(d: &Dsu, seg: &str) -> Result<u64, Errno> {
    Ok(d.segment_info(seg)?.map_or(0, |s| s.pages))
}

/// (id, flags) of each live version.
fn versions(d: &Dsu, seg: &str) -> Result<Vec<(u64, u32)>, Errno> {
    let (v, _) = d.list_versions(seg, 0, DSU_LIST_MAX)?;
    Ok(v.iter().map(|v| (v.id, v.flags)).collect())
}

/// (kind, version id) of the events queued on a non-blocking handle.
fn kinds(h: &Dsu) -> Result<Vec<(u32, u64)>, Errno> {
    let mut out = Vec::new();
    loop {
        match h.events() {
            Ok(evs) if !evs.is_empty() => out.extend(evs.iter().map(|e| (e.kind, e.version_id))),
            Ok(_) | Err(Errno::EAGAIN) => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// Segment pages of RESOLVEd entries, in order: a per-page BIND map.
fn map_of(vars: &[dsu_var]) -> Vec<u64> {
    vars.iter()
        .flat_map(|v| (0..v.page_count).map(move |i| v.first_page + i))
        .collect()
}

/// A non-blocking handle attached to `name`.
fn watcher(name: &str) -> Result<Dsu, Errno> {
    let h = Dsu::open_flags(libc::O_RDWR | libc::O_NONBLOCK)?;
    h.attach(name, 0, 0)?;
    Ok(h)
}

#[distributed_slice(TESTS)]
static READY_EVENTS: VmTest = VmTest {
    name: "kmod_lifecycle::ready_not_bind_announces",
    phase: Phase::Main,
    run: ready_events,
};
fn ready_events() -> TestResult {
    let name = unique("ready");
    let old = watcher(&name)?;
    let v = old.resolve_ok(vec![var("g", 8, 1, None)])?;
    let page = v[0].first_page;
    // Without DSU_BIND_CANDIDATE a version is ready at BIND (API version 1's behaviour).
    let id1 = old.bind("1.0", &[page], 0)?;
    let watch = watcher(&name)?;
    ensure_eq!(
        versions(&old, &name)?,
        vec![(id1, DSU_VERSION_READY)],
        "v1 ready at bind"
    );

    let cand = Dsu::attached(&name)?;
    cand.resolve_ok(vec![var("g", 8, 1, None)])?;
    let id2 = cand.bind("2.0", &[page], DSU_BIND_CANDIDATE)?;
    for (who, h) in [("old version", &old), ("watcher", &watch)] {
        ensure_eq!(
            kinds(h)?,
            vec![(DSU_EVENT_VERSION_BOUND, id2)],
            "{who}: a candidate's bind is announced as BOUND only"
        );
    }
    ensure_eq!(
        versions(&old, &name)?,
        vec![(id1, DSU_VERSION_READY), (id2, 0)],
        "LIST_VERSIONS: v2 is a candidate"
    );

    cand.ready()?;
    for (who, h) in [("old version", &old), ("watcher", &watch)] {
        ensure_eq!(
            kinds(h)?,
            vec![(DSU_EVENT_VERSION_READY, id2)],
            "{who}: READY"
        );
    }
    ensure!(!cand.readable(0)?, "the candidate got its own READY");
    cand.ready()?;
    ensure!(!old.readable(0)?, "a second READY is announced again");
    ensure_eq!(
        versions(&old, &name)?,
        vec![(id1, DSU_VERSION_READY), (id2, DSU_VERSION_READY)],
        "LIST_VERSIONS after READY"
    );

    // A plain BIND is BOUND and READY at once.
    let plain = Dsu::attached(&name)?;
    let id3 = plain.bind("3.0", &[page], 0)?;
    ensure_eq!(
        kinds(&old)?,
        vec![
            (DSU_EVENT_VERSION_BOUND, id3),
            (DSU_EVENT_VERSION_READY, id3)
        ],
        "plain bind"
    );

    // Errnos.
    ensure_eq!(
        Dsu::open()?.ready(),
        Err(Errno::EBADFD),
        "READY on a fresh handle"
    );
    ensure_eq!(
        Dsu::attached(&name)?.ready(),
        Err(Errno::EBADFD),
        "READY on an attached, unbound handle"
    );
    // The third argument is ignored (C callers omit it, leaving a register's contents).
    ensure_eq!(
        cand.ready_arg(0xdead_beef),
        Ok(()),
        "READY ignores its argument"
    );
    ensure_eq!(
        Dsu::attached(&name)?.bind("4.0", &[page], 1 << 2),
        Err(Errno::EINVAL),
        "BIND with an unknown flag"
    );

    // A ready version ends without ABORTED.
    drop(cand);
    ensure_eq!(
        kinds(&old)?,
        vec![(DSU_EVENT_VERSION_ENDED, id2)],
        "a ready version's end"
    );
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static ABORT: VmTest = VmTest {
    name: "kmod_lifecycle::abort_removes_unused_additions",
    phase: Phase::Main,
    run: abort,
};
fn abort() -> TestResult {
    let name = unique("abort");
    let old = watcher(&name)?;
    let v = old.resolve_ok(vec![var("common", 8, 1, None)])?;
    let id1 = old.bind("1.0", &[v[0].first_page], 0)?;
    let m1 = old.map(1)?;
    m1.set(0, 1111);
    ensure_eq!(pages(&old, &name)?, 1, "pages before v2");

    // v2 adds three variables, binds as a candidate, writes, and is killed before READY.
    // Meanwhile `pinner` resolves one of its additions (and never binds) and `adopter`
    // resolves another and binds it as a ready version.
    let (bound, go) = (Channel::new()?, Channel::new()?);
    let seg = name.clone();
    let (to_parent, to_child) = (&bound, &go);
    let child = spawn(move || {
        let (bound, go) = (to_parent, to_child);
        let h = Dsu::attached(&seg)?;
        let vars = h.resolve_ok(vec![
            var("common", 8, 1, None),
            var("only_v2", 3 * PAGE as u64, 2, None),
            var("pinned", 8, 3, None),
            var("adopted", 8, 4, None),
        ])?;
        let map = map_of(&vars);
        h.bind("2.0", &map, DSU_BIND_CANDIDATE)?;
        let m = h.map(map.len())?;
        m.set(PAGE, 42);
        bound.send(1)?;
        go.recv()?;
        // SAFETY: Kills this process, as a crash would.
        unsafe { libc::raise(libc::SIGKILL) };
        Ok(())
    });
    ensure_eq!(bound.recv()?, 1, "v2 bound");
    ensure_eq!(pages(&old, &name)?, 1 + 3 + 1 + 1, "pages with v2");
    let id2 = versions(&old, &name)?
        .iter()
        .map(|v| v.0)
        .find(|&id| id != id1)
        .ok_or("v2 not listed")?;
    let pinner = Dsu::attached(&name)?;
    pinner.resolve_ok(vec![var("pinned", 8, 3, None)])?;
    let adopter = Dsu::attached(&name)?;
    let a = adopter.resolve_ok(vec![var("adopted", 8, 4, None)])?;
    go.send(1)?;
    match nix::sys::wait::waitpid(child, None)? {
        nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _) => {}
        other => return Err(format!("v2 ended with {other:?}").into()),
    }

    ensure_eq!(
        kinds(&old)?,
        vec![
            (DSU_EVENT_VERSION_BOUND, id2),
            (DSU_EVENT_VERSION_ABORTED, id2),
            (DSU_EVENT_VERSION_ENDED, id2)
        ],
        "v1 is told that v2 bound and aborted, never that it is ready"
    );
    ensure_eq!(
        versions(&old, &name)?,
        vec![(id1, DSU_VERSION_READY)],
        "versions after the abort"
    );
    ensure_eq!(
        names(&old, &name)?,
        vec!["common", "pinned", "adopted"],
        "v2's unused addition is removed; what others resolved stays"
    );
    ensure_eq!(pages(&old, &name)?, 3, "only_v2's 3 pages are freed");
    ensure_eq!(m1.get(0), 1111, "v1's variable");

    // The adopter commits its variable; the pinner goes without binding.
    adopter.bind("3.0", &[a[0].first_page], 0)?;
    drop(pinner);
    ensure_eq!(
        names(&old, &name)?,
        vec!["common", "adopted"],
        "the aborted candidate's addition goes with the last handle holding it"
    );
    drop(adopter);
    ensure_eq!(
        names(&old, &name)?,
        vec!["common", "adopted"],
        "a variable a ready version used stays after it ends"
    );
    ensure_eq!(pages(&old, &name)?, 2, "pages at the end");

    // A new version adds the same names again, with fresh pages holding their initial
    // values (segment page indexes are not reused).
    let init = 7u64.to_ne_bytes();
    let again = Dsu::attached(&name)?;
    let r = again.resolve_ok(vec![var("only_v2", 8, 2, Some(&init))])?;
    ensure_eq!(r[0].status, DSU_VAR_ADDED, "only_v2 added again");
    ensure!(
        r[0].first_page >= 6,
        "page index reused: {}",
        r[0].first_page
    );
    again.bind("4.0", &[r[0].first_page], 0)?;
    ensure_eq!(again.map(1)?.get(0), 7, "initial value of the new entry");
    drop(m1);
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static ABORT_CHAIN: VmTest = VmTest {
    name: "kmod_lifecycle::abort_keeps_what_a_live_version_maps",
    phase: Phase::Main,
    run: abort_chain,
};
fn abort_chain() -> TestResult {
    let name = unique("chain");
    let old = watcher(&name)?;
    let v = old.resolve_ok(vec![var("base", 8, 1, None)])?;
    old.bind("1.0", &[v[0].first_page], 0)?;
    // v2 adds `x`; v3 shares it; both are candidates.
    let v2 = Dsu::attached(&name)?;
    let r2 = v2.resolve_ok(vec![var("x", 8, 2, None)])?;
    v2.bind("2.0", &map_of(&r2), DSU_BIND_CANDIDATE)?;
    let v3 = Dsu::attached(&name)?;
    let r3 = v3.resolve_ok(vec![var("x", 8, 2, None)])?;
    ensure_eq!(r3[0].status, DSU_VAR_COMMON, "v3 shares x");
    v3.bind("3.0", &map_of(&r3), DSU_BIND_CANDIDATE)?;
    let m3 = v3.map(1)?;
    m3.set(0, 33);
    drop(v2);
    ensure_eq!(
        names(&old, &name)?,
        vec!["base", "x"],
        "x stays while v3 maps it"
    );
    ensure_eq!(m3.get(0), 33, "x's bytes");
    // v3 aborts too: x, added by a candidate and never used by a ready version, goes.
    drop(m3);
    drop(v3);
    ensure_eq!(names(&old, &name)?, vec!["base"], "after both aborted");
    ensure_eq!(pages(&old, &name)?, 1, "pages");
    cleanup(&name);
    Ok(())
}

/// `Shmem:` of /proc/meminfo, in kB.
fn shmem_kb() -> Result<u64, crate::Failure> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    info.lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no Shmem in /proc/meminfo".into())
}

#[distributed_slice(TESTS)]
static ABORT_UNCHARGES: VmTest = VmTest {
    name: "kmod_lifecycle::abort_frees_and_uncharges",
    phase: Phase::Main,
    run: abort_uncharges,
};
fn abort_uncharges() -> TestResult {
    // 300 pages per user: a candidate that adds 256 and aborts must give them back, or
    // the next one cannot add 256 again.
    with_module_params("max_user_pages=300", || {
        let name = unique("uncharge");
        let old = Dsu::attached(&name)?;
        let v = old.resolve_ok(vec![var("base", 8, 1, None)])?;
        old.bind("1.0", &[v[0].first_page], 0)?;
        for round in 0..3 {
            let before = shmem_kb()?;
            let cand = Dsu::attached(&name)?;
            let r = cand.resolve_ok(vec![var("big", 256 * PAGE as u64, 2, None)])?;
            cand.bind("2.0", &map_of(&r), DSU_BIND_CANDIDATE)?;
            let m = cand.map(256)?;
            for i in 0..256 {
                m.set(i * PAGE, i as u64);
            }
            let during = shmem_kb()?;
            ensure!(
                during >= before + 900,
                "round {round}: 256 pages did not show in Shmem ({before} -> {during} kB)"
            );
            drop(m);
            drop(cand);
            let after = shmem_kb()?;
            ensure!(
                after + 900 <= during,
                "round {round}: the aborted candidate's pages were not freed ({during} -> {after} kB)"
            );
            ensure_eq!(pages(&old, &name)?, 1, "round {round}: segment pages");
        }
        cleanup(&name);
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static GC: VmTest = VmTest {
    name: "kmod_lifecycle::gc_lists_and_reclaims",
    phase: Phase::Main,
    run: gc,
};
fn gc() -> TestResult {
    let name = unique("gc");
    let d = Dsu::open()?;
    // v1 declares keep and retired; v2 declares keep and new. Both ready at bind.
    let h1 = Dsu::attached(&name)?;
    let r1 = h1.resolve_ok(vec![
        var("keep", 8, 1, None),
        var("retired", 2 * PAGE as u64, 2, None),
    ])?;
    h1.bind("1.0", &map_of(&r1), 0)?;
    let m1 = h1.map(3)?;
    let h2 = Dsu::attached(&name)?;
    let r2 = h2.resolve_ok(vec![var("keep", 8, 1, None), var("new", 8, 3, None)])?;
    h2.bind("2.0", &map_of(&r2), 0)?;
    let m2 = h2.map(2)?;
    m2.set(0, 5);
    m2.set(PAGE, 6);

    let (c, recs) = d.gc(&name, DSU_GC_DRY_RUN | DSU_GC_MIN_AGE, 0)?;
    ensure_eq!(
        (c.total, recs.len(), c.generation),
        (0, 0, 2),
        "nothing reclaimable while both versions map everything"
    );
    drop(m1);
    drop(h1);
    let (c, _) = d.gc(&name, DSU_GC_DRY_RUN | DSU_GC_MIN_AGE, 2)?;
    ensure_eq!(c.total, 0, "retired was used one update ago: not 2");
    let (c, recs) = d.gc(&name, DSU_GC_DRY_RUN, 0)?;
    ensure_eq!(
        (c.total, c.pages, c.count),
        (1, 2, 1),
        "dry run with the default min_age (1)"
    );
    ensure_eq!(cstr(&recs[0].name), "retired", "the record");
    ensure_eq!(recs[0].page_count, 2, "its pages");
    ensure_eq!(
        names(&d, &name)?,
        vec!["keep", "retired", "new"],
        "a dry run changes nothing"
    );

    // A handle that resolved it holds it until it binds or goes.
    let holder = Dsu::attached(&name)?;
    holder.resolve_ok(vec![var("retired", 2 * PAGE as u64, 2, None)])?;
    ensure_eq!(
        d.gc(&name, DSU_GC_DRY_RUN | DSU_GC_MIN_AGE, 0)?.0.total,
        0,
        "held between RESOLVE and BIND"
    );
    ensure_eq!(
        d.gc(&name, DSU_GC_MIN_AGE, 0)?.0.total,
        0,
        "held: not reclaimed"
    );
    drop(holder);
    // Listing with no room for records still counts.
    let mut c = dsu_gc {
        size: size_of::<dsu_gc>() as u32,
        flags: DSU_GC_DRY_RUN,
        record_size: size_of::<dsu_variable_info>() as u32,
        segment: cname(&name),
        ..Default::default()
    };
    d.gc_raw(&mut c)?;
    ensure_eq!((c.count, c.total, c.pages), (0, 1, 2), "count 0");

    let before = pages(&d, &name)?;
    let (c, recs) = d.gc(&name, 0, 0)?;
    ensure_eq!((c.total, c.pages, recs.len()), (1, 2, 1), "reclaimed");
    ensure_eq!(cstr(&recs[0].name), "retired", "reclaimed record");
    ensure_eq!(names(&d, &name)?, vec!["keep", "new"], "after GC");
    ensure_eq!(pages(&d, &name)?, before - 2, "pages after GC");
    ensure_eq!(d.gc(&name, DSU_GC_MIN_AGE, 0)?.0.total, 0, "a second GC");
    ensure_eq!((m2.get(0), m2.get(PAGE)), (5, 6), "mapped bytes survive");
    // Reading a reclaimed variable: gone.
    ensure_eq!(
        d.read_var(&name, "retired", 2, 0, 0, 8).map(drop),
        Err(Errno::ENOENT),
        "READ_VAR of a reclaimed variable"
    );
    drop(m2);
    drop(h2);
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static GC_ERRORS: VmTest = VmTest {
    name: "kmod_lifecycle::gc_errnos",
    phase: Phase::Main,
    run: gc_errors,
};
fn gc_errors() -> TestResult {
    let name = unique("gcerr");
    let d = Dsu::open()?;
    let h = Dsu::attached(&name)?;
    // One reclaimable variable: resolved by a handle that then went.
    h.resolve_ok(vec![var("stray", 8, 1, None)])?;
    drop(h);
    let good = |flags: u32| dsu_gc {
        size: size_of::<dsu_gc>() as u32,
        flags,
        record_size: size_of::<dsu_variable_info>() as u32,
        segment: cname(&name),
        ..Default::default()
    };
    let mut cases: Vec<(&str, dsu_gc, Errno)> = Vec::new();
    let mut c = good(1 << 5);
    cases.push(("unknown flag", c, Errno::EINVAL));
    c = good(DSU_GC_DRY_RUN);
    c.min_age = 3;
    cases.push(("min_age without DSU_GC_MIN_AGE", c, Errno::EINVAL));
    for (what, set) in [
        ("total", (|c: &mut dsu_gc| c.total = 1) as fn(&mut dsu_gc)),
        ("pages", |c| c.pages = 1),
        ("generation", |c| c.generation = 1),
    ] {
        let mut c = good(DSU_GC_DRY_RUN);
        set(&mut c);
        cases.push((what, c, Errno::EINVAL));
    }
    c = good(DSU_GC_DRY_RUN);
    c.count = DSU_LIST_MAX + 1;
    cases.push(("count above DSU_LIST_MAX", c, Errno::E2BIG));
    c = good(DSU_GC_DRY_RUN);
    c.record_size = 8;
    cases.push(("record_size too small", c, Errno::EINVAL));
    c = good(DSU_GC_DRY_RUN);
    c.size = 8;
    cases.push(("size too small", c, Errno::EINVAL));
    c = good(DSU_GC_DRY_RUN);
    c.segment = cname("no-such-segment-gc");
    cases.push(("missing segment", c, Errno::ENOENT));
    c = good(DSU_GC_DRY_RUN);
    c.segment = cname("bad/name");
    cases.push(("bad name", c, Errno::EINVAL));
    c = good(DSU_GC_DRY_RUN | DSU_GC_MIN_AGE);
    c.records = 8;
    c.count = 4;
    cases.push(("records at a bad pointer", c, Errno::EFAULT));
    for (what, mut c, want) in cases {
        ensure_eq!(d.gc_raw(&mut c), Err(want), "{what}");
    }
    ensure_eq!(
        d.ioctl_cmd(
            nix::request_code_readwrite!(DSU_IOC_MAGIC, DSU_IOC_NR_GC, 64),
            0
        ),
        Err(Errno::ENOTTY),
        "GC with another encoded size"
    );
    ensure_eq!(
        d.ioctl_cmd(
            nix::request_code_read!(DSU_IOC_MAGIC, DSU_IOC_NR_READY, 8),
            0
        ),
        Err(Errno::ENOTTY),
        "READY encoded with a size"
    );
    // Reclaiming needs write permission, listing read.
    d.setattr(&name, DSU_SETATTR_MODE, 0o644, 0, 0)?;
    let seg = name.clone();
    as_user(1000, 1000, &[], move || {
        let d = Dsu::open()?;
        ensure_eq!(
            d.gc(&seg, DSU_GC_DRY_RUN | DSU_GC_MIN_AGE, 0)?.0.total,
            1,
            "dry run with read permission"
        );
        ensure_eq!(
            d.gc(&seg, DSU_GC_MIN_AGE, 0).map(drop),
            Err(Errno::EACCES),
            "reclaim without write permission"
        );
        Ok(())
    })?;
    ensure_eq!(d.gc(&name, DSU_GC_MIN_AGE, 0)?.0.total, 1, "owner reclaims");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static GC_RACE: VmTest = VmTest {
    name: "kmod_lifecycle::gc_under_concurrent_attach",
    phase: Phase::Main,
    run: gc_race,
};
fn gc_race() -> TestResult {
    const KEEP: u64 = 8;
    const ROUNDS: u64 = 40;
    let name = unique("gcrace");
    let keeper = Dsu::attached(&name)?;
    let inits: Vec<[u8; 8]> = (0..KEEP).map(|i| (i * 1000 + 7).to_ne_bytes()).collect();
    let kvars: Vec<dsu_var> = (0..KEEP)
        .map(|i| var(&format!("keep{i}"), 8, 1, Some(&inits[i as usize])))
        .collect();
    let k = keeper.resolve_ok(kvars)?;
    keeper.bind("keeper", &map_of(&k), 0)?;
    let km = keeper.map(KEEP as usize)?;

    // Two processes attach, resolve one kept variable and one temporary, bind (as a
    // candidate every other round), map, check and write, and go, over and over.
    let children: Vec<_> = (0..2u64)
        .map(|c| {
            let seg = name.clone();
            spawn(move || {
                for round in 0..ROUNDS {
                    let j = (round + c) % KEEP;
                    let h = Dsu::attached(&seg)?;
                    // A kept variable, one reused by this process, one both processes
                    // and the GC fight over, and a new one (so that RESOLVE takes its
                    // slow path, where what step 1 found must still be there at commit).
                    let r = h.resolve_ok(vec![
                        var(&format!("keep{j}"), 8, 1, None),
                        var(&format!("tmp{c}-{}", round % 4), 8, 9, None),
                        var(&format!("shared{}", round % 3), 8, 9, None),
                        var(&format!("fresh{c}-{round}"), 8, 9, None),
                    ])?;
                    ensure_eq!(r[0].status, DSU_VAR_COMMON, "keep{j} is common");
                    ensure!(
                        r.iter().all(|v| v.page_count == 1),
                        "round {round}: an entry without its page: {:?}",
                        r.iter().map(|v| v.page_count).collect::<Vec<_>>()
                    );
                    let candidate = round % 2 == 1;
                    let flags = if candidate { DSU_BIND_CANDIDATE } else { 0 };
                    h.bind("racer", &map_of(&r), flags)
                        .map_err(|e| format!("round {round}: BIND after RESOLVE: {e}"))?;
                    let m = h.map(4)?;
                    ensure_eq!(m.get(0), j * 1000 + 7, "round {round}: keep{j}'s bytes");
                    // Pages 1 (tmp) and 3 (fresh) are this process's own.
                    for p in [1, 3] {
                        m.set(p * PAGE, round + 100 * p as u64);
                    }
                    m.set(2 * PAGE, round);
                    for p in [1, 3] {
                        ensure_eq!(
                            m.get(p * PAGE),
                            round + 100 * p as u64,
                            "round {round}: page {p}"
                        );
                    }
                    if candidate && round % 4 == 1 {
                        h.ready()?;
                    }
                }
                Ok(())
            })
        })
        .collect();

    // GC with min_age 0 (anything unused now) as fast as possible meanwhile.
    let (mut reclaimed, mut calls) = (0u64, 0u64);
    let t0 = Instant::now();
    let mut done = 0;
    while done < children.len() {
        let (c, recs) = keeper.gc(&name, DSU_GC_MIN_AGE, 0)?;
        calls += 1;
        reclaimed += u64::from(c.total);
        for r in &recs {
            let n = cstr(&r.name);
            ensure!(!n.starts_with("keep"), "GC reclaimed mapped {n}");
        }
        done = 0;
        for &pid in &children {
            let st = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            match st {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {}
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) | Err(Errno::ECHILD) => done += 1,
                other => return Err(format!("racer ended with {other:?}").into()),
            }
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(240),
            "racers still running after 4 minutes: {}",
            where_are(&children)
        );
    }
    ensure!(
        reclaimed > 0,
        "GC never reclaimed anything in {calls} calls"
    );
    // Everything left over goes; the kept variables and their bytes stay.
    keeper.gc(&name, DSU_GC_MIN_AGE, 0)?;
    let want: Vec<String> = (0..KEEP).map(|i| format!("keep{i}")).collect();
    ensure_eq!(names(&keeper, &name)?, want, "after the race");
    for i in 0..KEEP {
        ensure_eq!(km.get(i as usize * PAGE), i * 1000 + 7, "keep{i}'s bytes");
    }
    ensure_eq!(pages(&keeper, &name)?, KEEP, "pages after the race");
    println!("    gc race: {calls} GC calls reclaimed {reclaimed} variables");
    drop(km);
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static VIEW_KEEPS: VmTest = VmTest {
    name: "kmod_lifecycle::view_keeps_variables_from_gc_and_abort",
    phase: Phase::Main,
    run: view_keeps,
};
fn view_keeps() -> TestResult {
    let name = unique("gc-view");
    let d = Dsu::open()?;
    // v1 declares keep and retired; v2 only keep: once v1 is gone, retired is garbage.
    let h1 = Dsu::attached(&name)?;
    let r1 = h1.resolve_ok(vec![
        var("keep", 8, 1, None),
        var("retired", 2 * PAGE as u64, 2, None),
    ])?;
    h1.bind("1.0", &map_of(&r1), 0)?;
    let m1 = h1.map(3)?;
    m1.set(PAGE, 11);
    m1.set(2 * PAGE + 8, 12);
    let h2 = Dsu::attached(&name)?;
    let r2 = h2.resolve_ok(vec![var("keep", 8, 1, None)])?;
    h2.bind("2.0", &map_of(&r2), 0)?;

    // A view of retired's pages (as a migration reads an old variable in place).
    let viewer = Dsu::attached(&name)?;
    let view = viewer.map_view(r1[1].first_page, 2)?;
    drop(m1);
    drop(h1);
    ensure_eq!(
        d.gc(&name, DSU_GC_DRY_RUN, 0)?.0.total,
        0,
        "a viewed variable is not reclaimable"
    );
    let before = pages(&d, &name)?;
    ensure_eq!(d.gc(&name, 0, 0)?.0.total, 0, "GC under a view");
    ensure_eq!(
        names(&d, &name)?,
        vec!["keep", "retired"],
        "retired stays while viewed"
    );
    ensure_eq!(pages(&d, &name)?, before, "its pages stay");
    ensure_eq!(
        (view.get(0), view.get(PAGE + 8)),
        (11, 12),
        "bytes through the view after GC"
    );
    view.set(8, 13);
    ensure_eq!(
        d.read_var(&name, "retired", 2, 0, 8, 8)?,
        13u64.to_ne_bytes().to_vec(),
        "a write through the view reaches the variable"
    );

    // The view's last VMA (a fork's copy counts too) gone: GC frees it.
    drop(view);
    let (c, recs) = d.gc(&name, 0, 0)?;
    ensure_eq!(
        (c.total, c.pages, recs.first().map(|r| cstr(&r.name))),
        (1, 2, Some("retired".to_string())),
        "GC after the view is unmapped"
    );
    ensure_eq!(names(&d, &name)?, vec!["keep"], "after GC");
    ensure_eq!(
        viewer.map_view(r1[1].first_page, 2).map(drop),
        Err(Errno::EINVAL),
        "a view of a reclaimed variable's pages"
    );

    // An aborted candidate's addition that a view maps stays until the view goes.
    let cand = Dsu::attached(&name)?;
    let rc = cand.resolve_ok(vec![var("keep", 8, 1, None), var("fresh", 8, 7, None)])?;
    cand.bind("3.0", &map_of(&rc), DSU_BIND_CANDIDATE)?;
    let mc = cand.map(2)?;
    mc.set(PAGE, 77);
    let view = viewer.map_view(rc[1].first_page, 1)?;
    drop(mc);
    drop(cand);
    ensure_eq!(
        names(&d, &name)?,
        vec!["keep", "fresh"],
        "an aborted addition stays while viewed"
    );
    ensure_eq!(view.get(0), 77, "bytes through the view after the abort");
    drop(view);
    // Orphans nothing keeps go at the next handle release (here the viewer's own).
    drop(viewer);
    ensure_eq!(
        names(&d, &name)?,
        vec!["keep"],
        "the orphan goes once its view is unmapped"
    );
    drop(h2);
    cleanup(&name);
    Ok(())
}
