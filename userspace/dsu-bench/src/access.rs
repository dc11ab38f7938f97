//! Figure 1: the cost of an access to a shared global against an ordinary static.
//!
//! Both are `AtomicU64` statics that the compiler addresses directly (RIP-relative); the
//! shared one is a `dsu::global!` whose page, after `dsu::attach`, is a segment page
//! mapped `MAP_SHARED` by the module. The loops are the same code instantiated for each
//! static (a macro, so that neither goes through a pointer), run alternately in one trial
//! round. Two loops: `fetch_add` (a locked read-modify-write) and a relaxed load then
//! store (plain `mov`s).

use crate::stats::{Clock, Samples};
use serde::Serialize;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// An ordinary static, alone in its cache line as the shared global is alone in its page.
#[repr(C, align(64))]
struct Padded(AtomicU64);
static PLAIN: Padded = Padded(AtomicU64::new(0));

/// A control: an ordinary static alone at the start of its page, like the shared global,
/// but in private memory. If it is as slow as the shared global, page placement (e.g. the
/// emulator's software TLB), not dsu, makes the difference.
#[repr(C, align(4096))]
struct PageAligned(AtomicU64);
static ALIGNED: PageAligned = PageAligned(AtomicU64::new(0));

/// Figure 1's figures: ns per operation.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Access {
    /// What the shared global is.
    pub shared: String,
    /// Operations per timed loop.
    pub iterations: u64,
    /// `fetch_add` on the ordinary static.
    pub static_fetch_add: Samples,
    /// `fetch_add` on the shared global.
    pub shared_fetch_add: Samples,
    /// Load + store on the ordinary static.
    pub static_load_store: Samples,
    /// Load + store on the shared global.
    pub shared_load_store: Samples,
    /// `fetch_add` on the page-aligned ordinary static (control).
    pub aligned_fetch_add: Samples,
    /// Load + store on the page-aligned ordinary static (control).
    pub aligned_load_store: Samples,
    /// Median shared / median static, fetch_add.
    pub ratio_fetch_add: f64,
    /// Median shared / median static, load + store.
    pub ratio_load_store: f64,
}

macro_rules! fetch_add_loop {
    ($x:expr, $n:expr) => {{
        let n = black_box($n);
        let c = Clock::start();
        for _ in 0..n {
            $x.fetch_add(1, Relaxed);
        }
        c.ns() / n as f64
    }};
}

macro_rules! load_store_loop {
    ($x:expr, $n:expr) => {{
        let n = black_box($n);
        let c = Clock::start();
        for _ in 0..n {
            let v = $x.load(Relaxed);
            $x.store(black_box(v) + 1, Relaxed);
        }
        c.ns() / n as f64
    }};
}

dsu::global! {
    #[dsu(name = "dsu_bench::SHARED")]
    static SHARED: AtomicU64 = AtomicU64::new(0);
}

/// Runs the loops `trials` times each on both statics. With `dsu`, `SHARED` is attached to
/// a fresh segment first (the program's only global, so its one page); without it only
/// the ordinary static is measured.
pub fn run(dsu: bool, iterations: u64, trials: usize) -> std::io::Result<Access> {
    let segment = format!("dsu-bench-{}-access", std::process::id());
    let version = if dsu {
        crate::raw::destroy_quietly(&segment);
        Some(dsu::attach(&segment, "bench").map_err(std::io::Error::other)?)
    } else {
        None
    };
    let shared = if dsu {
        format!("dsu::global! attached to segment {segment}")
    } else {
        "none (no /dev/dsu)".into()
    };
    let mut a = Access {
        shared,
        iterations,
        ..Default::default()
    };
    // Warm up both (page faults, caches) before timing.
    let _ = fetch_add_loop!(PLAIN.0, 1000u64);
    let _ = fetch_add_loop!(ALIGNED.0, 1000u64);
    if dsu {
        let _ = fetch_add_loop!(SHARED, 1000u64);
        check_mapped(SHARED.as_ptr() as usize)?;
    }
    for t in 0..trials {
        // Alternate which goes first, so that drift over the run hits both alike.
        for plain in [t % 2 == 0, t % 2 != 0] {
            if plain {
                a.static_fetch_add
                    .push(fetch_add_loop!(PLAIN.0, iterations));
                a.static_load_store
                    .push(load_store_loop!(PLAIN.0, iterations));
                a.aligned_fetch_add
                    .push(fetch_add_loop!(ALIGNED.0, iterations));
                a.aligned_load_store
                    .push(load_store_loop!(ALIGNED.0, iterations));
            } else if dsu {
                a.shared_fetch_add.push(fetch_add_loop!(SHARED, iterations));
                a.shared_load_store
                    .push(load_store_loop!(SHARED, iterations));
            }
        }
    }
    if dsu {
        a.ratio_fetch_add = a.shared_fetch_add.median_ns / a.static_fetch_add.median_ns;
        a.ratio_load_store = a.shared_load_store.median_ns / a.static_load_store.median_ns;
        drop(version);
        crate::raw::destroy_quietly(&segment);
    }
    Ok(a)
}

/// Checks that the page at `addr` is mapped from /dev/dsu (so the loop measured the shared
/// page, not the executable's own copy).
fn check_mapped(addr: usize) -> std::io::Result<()> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    for line in maps.lines() {
        let Some((range, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            continue;
        };
        if (lo..hi).contains(&addr) {
            return if rest.contains("dsu") {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "the shared global is not mapped from /dev/dsu: {line}"
                )))
            };
        }
    }
    Err(std::io::Error::other(
        "the shared global's page is not in /proc/self/maps",
    ))
}
