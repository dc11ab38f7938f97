//! Version 3 of the counter example (used by the VM suite): `stats` changes type and is
//! migrated from v1/v2's layout; `hits` carries over and `misses` starts at 1000 so that
//! a test can tell the transform ran.

#[path = "common/mod.rs"]
mod common;

use dsu::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// The statistics of versions 1 and 2.
#[derive(dsu::Shared)]
#[repr(C)]
pub struct Stats {
    hits: AtomicU64,
}

/// The statistics of version 3: a field more.
#[derive(dsu::Shared)]
#[repr(C)]
pub struct StatsV3 {
    hits: AtomicU64,
    misses: AtomicU64,
}

fn upgrade(old: Stats) -> StatsV3 {
    StatsV3 {
        hits: AtomicU64::new(old.hits.into_inner()),
        misses: AtomicU64::new(1000),
    }
}

dsu::global! {
    #[dsu(name = "counter::COUNTER")]
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    #[dsu(name = "counter::STATS", migrate(from = Stats, with = upgrade))]
    static STATS: StatsV3 = StatsV3 { hits: AtomicU64::new(0), misses: AtomicU64::new(0) };
    #[dsu(name = "counter::LOCK")]
    static LOCK: Mutex<u64> = Mutex::new(0);
    #[dsu(name = "counter::ADDED")]
    static ADDED: AtomicU64 = AtomicU64::new(42);
}

fn main() {
    common::main(common::Program {
        default_label: "v3",
        vars: vec![
            atomic_var!("counter", COUNTER, u64),
            atomic_var!("hits", STATS.hits, u64),
            atomic_var!("misses", STATS.misses, u64),
            atomic_var!("added", ADDED, u64),
        ],
        lock: &LOCK,
    });
}
