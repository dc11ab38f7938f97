//! Figures 2 to 6: the update pause against state size (with the copy and serialise
//! baselines and the prefault variant), first touch, scale in versions, scale in
//! variables, and resolve cost.
//!
//! "Attach" below is what a new version does to start with all state in place, timed as
//! one span and phase by phase: open `/dev/dsu`, ATTACH the existing segment, RESOLVE
//! the batch (every entry common), build the page map, BIND, mmap `MAP_SHARED |
//! MAP_FIXED` over the (already reserved) global section, and read one word of the
//! state. After that every byte of the old version's state is reachable at its address;
//! the first access of each page costs a minor fault (figure 3), unless the version was
//! bound with `DSU_BIND_PREFAULT`. The reservation (the section of the executable) exists
//! before the pause starts and is not timed.

use crate::baselines;
use crate::raw::{self, Handle, PAGE, Reservation};
use crate::stats::{Clock, Samples};
use dsu_uapi::{DSU_ATTACH_MUST_CREATE, DSU_ATTACH_MUST_EXIST, DSU_BIND_PREFAULT, dsu_var};
use serde::Serialize;
use std::io;

/// Fingerprint of every benchmark variable.
const FP: u64 = 0x0D5B_E4C4;

/// What one run measures: sizes, counts and trials.
#[derive(Serialize, Clone, Debug)]
pub struct Plan {
    /// State sizes of figure 2, bytes.
    pub pause_sizes: Vec<u64>,
    /// Trials of figure 2 for sizes up to 1 MiB.
    pub pause_trials_small: usize,
    /// Trials of figure 2 above 1 MiB.
    pub pause_trials_large: usize,
    /// Pages touched in figure 3.
    pub touch_pages: usize,
    /// Versions held bound in figure 4.
    pub versions: Vec<usize>,
    /// Pages of each version's state in figure 4.
    pub versions_state_pages: usize,
    /// Variable counts of figure 5.
    pub variables: Vec<usize>,
    /// Batch sizes of figure 6.
    pub resolve_batches: Vec<usize>,
    /// Trials of figures 3 to 6.
    pub trials: usize,
}

impl Plan {
    /// The full run (BENCHMARKS.md).
    pub fn full() -> Self {
        Plan {
            pause_sizes: vec![4 << 10, 1 << 20, 64 << 20, 256 << 20],
            pause_trials_small: 21,
            pause_trials_large: 5,
            touch_pages: 4096,
            versions: vec![1, 8, 32, 64],
            versions_state_pages: 16,
            variables: vec![1, 100, 1000, 10_000],
            resolve_batches: vec![1, 1000],
            trials: 11,
        }
    }

    /// Tiny sizes for the VM suite: proves every figure runs.
    pub fn quick() -> Self {
        Plan {
            pause_sizes: vec![4 << 10, 64 << 10],
            pause_trials_small: 3,
            pause_trials_large: 3,
            touch_pages: 16,
            versions: vec![1, 4],
            versions_state_pages: 2,
            variables: vec![1, 10],
            resolve_batches: vec![1, 10],
            trials: 3,
        }
    }
}

/// A segment name unique to this process and figure.
fn segment(what: &str) -> String {
    format!("dsu-bench-{}-{what}", std::process::id())
}

/// A version: its handle and its mapping (dropping both ends it).
pub struct Version {
    /// The mapping over the reserved section.
    pub map: Reservation,
    /// The bound handle (held: closing it, with the unmap, ends the version).
    #[allow(dead_code)]
    pub handle: Handle,
}

/// Phase-by-phase times of attaches, nanoseconds.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Phases {
    /// open("/dev/dsu").
    pub open: Samples,
    /// DSU_IOC_ATTACH.
    pub attach: Samples,
    /// DSU_IOC_RESOLVE of the batch.
    pub resolve: Samples,
    /// Building the page map and DSU_IOC_BIND.
    pub bind: Samples,
    /// mmap MAP_SHARED | MAP_FIXED.
    pub mmap: Samples,
    /// Reading the state: one word, or one word per page with `touch_all`.
    pub serve: Samples,
    /// The whole span.
    pub total: Samples,
}

/// How a version attaches.
#[derive(Clone, Copy)]
pub struct Mode {
    /// DSU_BIND_* flags.
    pub bind_flags: u32,
    /// Read one word of every page inside the timed span (all state touched).
    pub touch_all: bool,
    /// Bind with the per-page map (one `u64` per page) instead of extents.
    pub per_page: bool,
}

/// Fault on demand, one word read: the pause as dsu delivers it.
pub const FAULT: Mode = Mode {
    bind_flags: 0,
    touch_all: false,
    per_page: false,
};
/// Fault on demand, one word read, but bound with the per-page map (dsu before extents).
pub const PER_PAGE: Mode = Mode {
    bind_flags: 0,
    touch_all: false,
    per_page: true,
};
/// DSU_BIND_PREFAULT: every PTE installed at mmap.
pub const PREFAULT: Mode = Mode {
    bind_flags: DSU_BIND_PREFAULT,
    touch_all: false,
    per_page: false,
};
/// Fault on demand, then every page touched once.
pub const TOUCH_ALL: Mode = Mode {
    bind_flags: 0,
    touch_all: true,
    per_page: false,
};

/// Attaches a new version of `seg` with the batch `vars` over a fresh reservation and
/// records its phases. The reservation is made before the clock starts.
pub fn attach_version(
    seg: &str,
    vars: &mut [dsu_var],
    mode: Mode,
    phases: &mut Phases,
) -> io::Result<Version> {
    let pages: u64 = vars.iter().map(|v| raw::pages_for(v.size)).sum();
    let map = Reservation::new(pages as usize * PAGE)?;
    let c = Clock::start();
    let handle = Handle::open()?;
    let t_open = c.ns();
    handle.attach(seg, DSU_ATTACH_MUST_EXIST)?;
    let t_attach = c.ns();
    let added = handle.resolve(vars)?;
    let t_resolve = c.ns();
    if mode.per_page {
        let page_map = raw::page_map(vars);
        handle.bind(&page_map, mode.bind_flags, "new")?;
    } else {
        let extents = raw::extents(vars);
        handle.bind_extents(&extents, mode.bind_flags, "new")?;
    }
    let t_bind = c.ns();
    handle.map_fixed(&map)?;
    let t_mmap = c.ns();
    let mut sum = map.read(0);
    if mode.touch_all {
        for p in 1..map.len / PAGE {
            sum = sum.wrapping_add(map.read(p * PAGE));
        }
    }
    std::hint::black_box(sum);
    let t_serve = c.ns();
    if added != 0 {
        return Err(io::Error::other(
            "the new version's resolve added variables",
        ));
    }
    phases.open.push(t_open);
    phases.attach.push(t_attach - t_open);
    phases.resolve.push(t_resolve - t_attach);
    phases.bind.push(t_bind - t_resolve);
    phases.mmap.push(t_mmap - t_bind);
    phases.serve.push(t_serve - t_mmap);
    phases.total.push(t_serve);
    Ok(Version { map, handle })
}

/// Creates `seg` with the batch `vars` as the old version, maps it and writes a word into
/// every page (stamp: page index + 1), so that every page is faulted in the old version.
pub fn old_version(seg: &str, vars: &mut [dsu_var]) -> io::Result<Version> {
    raw::destroy_quietly(seg);
    let handle = Handle::open()?;
    handle.attach(seg, DSU_ATTACH_MUST_CREATE)?;
    handle.resolve(vars)?;
    let page_map = raw::page_map(vars);
    handle.bind(&page_map, 0, "old")?;
    let map = Reservation::new(page_map.len() * PAGE)?;
    handle.map_fixed(&map)?;
    for p in 0..page_map.len() {
        map.write(p * PAGE, p as u64 + 1);
    }
    Ok(Version { map, handle })
}

/// Checks that a new version sees the old version's stamps (first and last page).
fn check_stamps(v: &Version) -> io::Result<()> {
    let last = v.map.len / PAGE - 1;
    if v.map.read(0) != 1 || v.map.read(last * PAGE) != last as u64 + 1 {
        return Err(io::Error::other(
            "the new version does not see the old version's state",
        ));
    }
    Ok(())
}

fn checked(v: Version) -> io::Result<Version> {
    check_stamps(&v)?;
    Ok(v)
}

/// Figure 2 at one state size.
#[derive(Serialize, Clone, Debug, Default)]
pub struct PauseRow {
    /// State size in bytes.
    pub bytes: u64,
    /// dsu, fault on demand: the pause.
    pub dsu: Phases,
    /// dsu with DSU_BIND_PREFAULT.
    pub dsu_prefault: Phases,
    /// dsu, fault on demand, then every page touched.
    pub dsu_touch_all: Phases,
    /// dsu, fault on demand, bound with the per-page map.
    pub dsu_per_page: Phases,
    /// Copy through a shared buffer (Kitsune/Ekiden).
    pub copy: Samples,
    /// Serialise and send over a Unix socket (Envoy).
    pub serialise: Samples,
}

/// Figure 2: the update pause against state size, every method in the same trial round.
pub fn pause(plan: &Plan, with_dsu: bool, progress: &dyn Fn(&str)) -> io::Result<Vec<PauseRow>> {
    let mut rows = Vec::new();
    for &bytes in &plan.pause_sizes {
        progress(&format!("pause: {}", crate::stats::fmt_size(bytes)));
        let seg = segment(&format!("pause-{bytes}"));
        let mut vars = [raw::var("state", bytes, FP)];
        let old = if with_dsu {
            Some(old_version(&seg, &mut vars)?)
        } else {
            None
        };
        let src = Reservation::anon(bytes as usize)?;
        baselines::fill(src.bytes_mut());
        let trials = if bytes <= 1 << 20 {
            plan.pause_trials_small
        } else {
            plan.pause_trials_large
        };
        let mut row = PauseRow {
            bytes,
            ..Default::default()
        };
        let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ bytes;
        for _ in 0..trials {
            // Shuffle the methods in every round, so that whatever the previous one left
            // behind (caches, TLB, a CPU gone idle) hits every method alike.
            let mut order = [0, 1, 2, 3, 4, 5];
            for i in (1..order.len()).rev() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                order.swap(i, (rng % (i as u64 + 1)) as usize);
            }
            for k in order {
                match k {
                    0 if with_dsu => drop(checked(attach_version(
                        &seg,
                        &mut vars,
                        FAULT,
                        &mut row.dsu,
                    )?)?),
                    1 if with_dsu => drop(checked(attach_version(
                        &seg,
                        &mut vars,
                        PREFAULT,
                        &mut row.dsu_prefault,
                    )?)?),
                    2 if with_dsu => drop(checked(attach_version(
                        &seg,
                        &mut vars,
                        TOUCH_ALL,
                        &mut row.dsu_touch_all,
                    )?)?),
                    5 if with_dsu => drop(checked(attach_version(
                        &seg,
                        &mut vars,
                        PER_PAGE,
                        &mut row.dsu_per_page,
                    )?)?),
                    3 => {
                        let new = Reservation::anon(bytes as usize)?;
                        row.copy.push(baselines::copy_transfer(src.bytes(), &new)?);
                    }
                    4 => {
                        let new = Reservation::anon(bytes as usize)?;
                        row.serialise
                            .push(baselines::serialise_transfer(src.bytes(), &new)?);
                    }
                    _ => {}
                }
            }
        }
        drop(old);
        if with_dsu {
            raw::destroy_quietly(&seg);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Figure 3: first touch, per page.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Touch {
    /// Pages touched per trial.
    pub pages: usize,
    /// Read of a bound page, fault on demand (ns per page).
    pub dsu_read: Samples,
    /// Write of a bound page, fault on demand.
    pub dsu_write: Samples,
    /// Write of a page bound with DSU_BIND_PREFAULT (PTE already there).
    pub dsu_prefault_write: Samples,
    /// Write of fresh anonymous memory (fault, allocation and zeroing).
    pub anon_write: Samples,
    /// Read of fresh anonymous memory (the shared zero page).
    pub anon_read: Samples,
}

/// Touches pages `first..` of `map` once each; returns ns per page.
fn touch_pages(map: &Reservation, first: usize, write: bool) -> f64 {
    let pages = map.len / PAGE;
    let c = Clock::start();
    if write {
        for p in first..pages {
            map.write(p * PAGE, p as u64 + 1);
        }
    } else {
        let mut sum = 0u64;
        for p in first..pages {
            sum = sum.wrapping_add(map.read(p * PAGE));
        }
        std::hint::black_box(sum);
    }
    c.ns() / (pages - first) as f64
}

/// Figure 3: the cost per page of the first access to bound pages against anonymous ones.
pub fn first_touch(plan: &Plan) -> io::Result<Touch> {
    let seg = segment("touch");
    let bytes = (plan.touch_pages * PAGE) as u64;
    let mut vars = [raw::var("state", bytes, FP)];
    let old = old_version(&seg, &mut vars)?;
    let mut t = Touch {
        pages: plan.touch_pages,
        ..Default::default()
    };
    let mut scratch = Phases::default();
    for _ in 0..plan.trials {
        // The attach read page 0 already: count from page 1.
        let v = attach_version(&seg, &mut vars, FAULT, &mut scratch)?;
        t.dsu_read.push(touch_pages(&v.map, 1, false));
        drop(v);
        let v = attach_version(&seg, &mut vars, FAULT, &mut scratch)?;
        t.dsu_write.push(touch_pages(&v.map, 1, true));
        drop(v);
        let v = attach_version(&seg, &mut vars, PREFAULT, &mut scratch)?;
        t.dsu_prefault_write.push(touch_pages(&v.map, 1, true));
        drop(v);
        let a = Reservation::anon(bytes as usize)?;
        t.anon_write.push(touch_pages(&a, 1, true));
        drop(a);
        let a = Reservation::anon(bytes as usize)?;
        t.anon_read.push(touch_pages(&a, 1, false));
    }
    drop(old);
    raw::destroy_quietly(&seg);
    Ok(t)
}

/// Figure 4 at one count of versions already bound.
#[derive(Serialize, Clone, Debug, Default)]
pub struct VersionsRow {
    /// Versions bound (and mapped) while the new one attaches.
    pub bound: usize,
    /// The new version's attach.
    pub attach: Phases,
}

/// Figure 4: attach latency with 1, 8, 32, 64 versions already bound to the segment (held
/// by this process, each with its own handle and mapping).
pub fn versions(plan: &Plan) -> io::Result<Vec<VersionsRow>> {
    let seg = segment("versions");
    let mut vars = [raw::var(
        "state",
        (plan.versions_state_pages * PAGE) as u64,
        FP,
    )];
    let mut held = vec![old_version(&seg, &mut vars)?];
    let mut rows = Vec::new();
    for &n in &plan.versions {
        let mut scratch = Phases::default();
        while held.len() < n {
            held.push(attach_version(&seg, &mut vars, FAULT, &mut scratch)?);
        }
        let mut row = VersionsRow {
            bound: n,
            ..Default::default()
        };
        for _ in 0..plan.trials {
            let v = attach_version(&seg, &mut vars, FAULT, &mut row.attach)?;
            check_stamps(&v)?;
        }
        rows.push(row);
    }
    drop(held);
    raw::destroy_quietly(&seg);
    Ok(rows)
}

/// Figure 5 at one variable count.
#[derive(Serialize, Clone, Debug, Default)]
pub struct VariablesRow {
    /// Globals (one page each, like `dsu::global!`s of a word).
    pub variables: usize,
    /// The new version's attach.
    pub attach: Phases,
}

fn batch(prefix: &str, n: usize) -> Vec<dsu_var> {
    (0..n)
        .map(|i| raw::var(&format!("{prefix}{i:05}"), 8, FP))
        .collect()
}

/// Figure 5: attach latency for 1, 100, 1000, 10 000 globals of one word each.
pub fn variables(plan: &Plan) -> io::Result<Vec<VariablesRow>> {
    let mut rows = Vec::new();
    for &n in &plan.variables {
        let seg = segment(&format!("vars-{n}"));
        let mut vars = batch("bench::GLOBAL_", n);
        let old = old_version(&seg, &mut vars)?;
        let mut row = VariablesRow {
            variables: n,
            ..Default::default()
        };
        for _ in 0..plan.trials {
            let v = attach_version(&seg, &mut vars, FAULT, &mut row.attach)?;
            check_stamps(&v)?;
        }
        drop(old);
        raw::destroy_quietly(&seg);
        rows.push(row);
    }
    Ok(rows)
}

/// Figure 6 at one batch size.
#[derive(Serialize, Clone, Debug, Default)]
pub struct ResolveRow {
    /// Variables in the RESOLVE batch.
    pub batch: usize,
    /// ns per variable when every entry is added (a new segment).
    pub added_per_var: Samples,
    /// ns per variable when every entry is common (a second handle, same batch).
    pub common_per_var: Samples,
}

/// Figure 6: RESOLVE cost per variable, added and common, by batch size.
pub fn resolve(plan: &Plan) -> io::Result<Vec<ResolveRow>> {
    let mut rows = Vec::new();
    for &n in &plan.resolve_batches {
        let seg = segment(&format!("resolve-{n}"));
        let mut row = ResolveRow {
            batch: n,
            ..Default::default()
        };
        let mut vars = batch("bench::VAR_", n);
        for _ in 0..plan.trials {
            raw::destroy_quietly(&seg);
            let a = Handle::open()?;
            a.attach(&seg, DSU_ATTACH_MUST_CREATE)?;
            let c = Clock::start();
            let added = a.resolve(&mut vars)?;
            row.added_per_var.push(c.ns() / n as f64);
            let b = Handle::open()?;
            b.attach(&seg, DSU_ATTACH_MUST_EXIST)?;
            let c = Clock::start();
            let again = b.resolve(&mut vars)?;
            row.common_per_var.push(c.ns() / n as f64);
            if added as usize != n || again != 0 {
                return Err(io::Error::other(format!(
                    "resolve: added {added}, then {again}"
                )));
            }
            a.destroy(&seg)?;
        }
        rows.push(row);
    }
    Ok(rows)
}
