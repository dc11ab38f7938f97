//! Version 1 of the counter example (used by the VM suite).
//!
//! Globals: `counter` (common to every version), `old_only` (removed in v2), `stats`
//! (migrated to a larger type in v3) and the mutex `lock`. Run `counter_v1 serve` and
//! type `read`, `write counter 5`, `lock`, `wait-newer 1000`.

#[path = "common/mod.rs"]
mod common;

use dsu::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// The statistics of versions 1 and 2.
#[derive(dsu::Shared)]
#[repr(C)]
pub struct Stats {
    hits: AtomicU64,
}

dsu::global! {
    #[dsu(name = "counter::COUNTER")]
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    #[dsu(name = "counter::OLD_ONLY")]
    static OLD_ONLY: AtomicU32 = AtomicU32::new(7);
    #[dsu(name = "counter::STATS")]
    static STATS: Stats = Stats { hits: AtomicU64::new(0) };
    #[dsu(name = "counter::LOCK")]
    static LOCK: Mutex<u64> = Mutex::new(0);
}

fn main() {
    common::main(common::Program {
        default_label: "v1",
        vars: vec![
            atomic_var!("counter", COUNTER, u64),
            atomic_var!("old_only", OLD_ONLY, u32),
            atomic_var!("hits", STATS.hits, u64),
        ],
        lock: &LOCK,
    });
}
