//! What the `tally_*` examples share: the three generations of their statistics type and
//! a small command line (used by the VM suite's migration tests).
//!
//! `tally_vN --segment SEG COMMAND`: `read` attaches and prints the values; the others
//! are each example's own.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Generation 1: one counter.
#[derive(dsu::Shared)]
#[repr(C)]
pub struct StatsV1 {
    pub hits: AtomicU64,
}

/// Generation 2: a counter more.
#[derive(dsu::Shared)]
#[repr(C)]
pub struct StatsV2 {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// Generation 3: reordered, and a third counter.
#[derive(dsu::Shared)]
#[repr(C)]
pub struct StatsV3 {
    pub misses: AtomicU64,
    pub hits: AtomicU64,
    pub errors: AtomicU64,
}

/// v1 → v2: `misses` starts at 0.
pub fn v2_from_v1(old: StatsV1) -> StatsV2 {
    StatsV2 {
        hits: old.hits,
        misses: AtomicU64::new(0),
    }
}

/// v1 → v2 merge: add the hits v1 counted after the snapshot.
pub fn v2_catch_up_v1(new: &StatsV2, at_attach: &StatsV1, last: &StatsV1) {
    new.hits.fetch_add(
        last.hits.load(Relaxed) - at_attach.hits.load(Relaxed),
        Relaxed,
    );
}

/// v2 → v3.
pub fn v3_from_v2(old: StatsV2) -> StatsV3 {
    StatsV3 {
        misses: old.misses,
        hits: old.hits,
        errors: AtomicU64::new(2),
    }
}

/// v2 → v3 merge.
pub fn v3_catch_up_v2(new: &StatsV3, at_attach: &StatsV2, last: &StatsV2) {
    new.hits.fetch_add(
        last.hits.load(Relaxed) - at_attach.hits.load(Relaxed),
        Relaxed,
    );
    new.misses.fetch_add(
        last.misses.load(Relaxed) - at_attach.misses.load(Relaxed),
        Relaxed,
    );
}

/// v1 → v3 (a skipped generation).
pub fn v3_from_v1(old: StatsV1) -> StatsV3 {
    StatsV3 {
        misses: AtomicU64::new(0),
        hits: old.hits,
        errors: AtomicU64::new(1),
    }
}

/// v1 → v3 merge.
pub fn v3_catch_up_v1(new: &StatsV3, at_attach: &StatsV1, last: &StatsV1) {
    new.hits.fetch_add(
        last.hits.load(Relaxed) - at_attach.hits.load(Relaxed),
        Relaxed,
    );
}

/// The parsed command line: the segment and the command's words.
pub fn args() -> (String, Vec<String>) {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut segment = "tally".to_string();
    if args.len() >= 2 && args[0] == "--segment" {
        segment = args[1].clone();
        args.drain(..2);
    }
    if args.is_empty() {
        eprintln!("usage: tally_vN [--segment SEG] COMMAND [ARGS]");
        std::process::exit(2);
    }
    (segment, args)
}

/// Attaches (creating the segment only when `create`), or prints the error on stderr and
/// exits 1.
pub fn attach(segment: &str, label: &str, create: bool) -> dsu::Version {
    // Nothing in these programs' start-up can fail after attach: ready at once, so a
    // short-lived run (`read`, `add`) commits what it migrated instead of aborting it.
    let a = dsu::Attach::new(segment, label).ready_on_attach(true);
    let a = if create { a } else { a.must_exist() };
    match a.attach() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

/// How `name` was found at attach: "added", "common" or "migrated".
pub fn status(v: &dsu::Version, name: &str) -> &'static str {
    match v
        .variables()
        .iter()
        .find(|x| x.name == name)
        .map(|x| x.status)
    {
        Some(dsu::VarStatus::Added) => "added",
        Some(dsu::VarStatus::Common) => "common",
        Some(dsu::VarStatus::Migrated) => "migrated",
        None => "missing",
    }
}

/// The number argument at `i`.
pub fn number(args: &[String], i: usize) -> u64 {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("expected a number as argument {i}");
        std::process::exit(2)
    })
}

/// The `run N` command of v2 and v3: prints the migration status, counts `n` hits in
/// `hits` (a 1 ms pause every 16, so that other versions interleave), waits up to 300 s for
/// this version's merge steps, and returns the merges still pending (0 when all ran).
pub fn run(version: &dsu::Version, n: u64, hits: &AtomicU64) -> usize {
    use std::io::Write;
    println!("status={}", status(version, "tally::STATS"));
    std::io::stdout().flush().unwrap();
    for i in 0..n {
        hits.fetch_add(1, Relaxed);
        if i % 16 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let done = version
        .wait_for_migrations(Some(std::time::Duration::from_secs(300)))
        .unwrap();
    if done {
        0
    } else {
        version.pending_migrations()
    }
}
