//! Version 2 of the counter example (used by the VM suite).
//!
//! Compared with v1: `counter`, `stats` and `lock` are common, `old_only` is removed and
//! `added` (initialiser 42) and `big` (three pages) are added.

#[path = "common/mod.rs"]
mod common;

use dsu::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// The statistics of versions 1 and 2 (same layout as v1's).
#[derive(dsu::Shared)]
#[repr(C)]
pub struct Stats {
    hits: AtomicU64,
}

dsu::global! {
    #[dsu(name = "counter::COUNTER")]
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    #[dsu(name = "counter::STATS")]
    static STATS: Stats = Stats { hits: AtomicU64::new(0) };
    #[dsu(name = "counter::LOCK")]
    static LOCK: Mutex<u64> = Mutex::new(0);
    #[dsu(name = "counter::ADDED")]
    static ADDED: AtomicU64 = AtomicU64::new(42);
    #[dsu(name = "counter::BIG")]
    static BIG: [AtomicU64; 1100] = [const { AtomicU64::new(9) }; 1100];
}

fn main() {
    common::main(common::Program {
        default_label: "v2",
        vars: vec![
            atomic_var!("counter", COUNTER, u64),
            atomic_var!("hits", STATS.hits, u64),
            atomic_var!("added", ADDED, u64),
            atomic_var!("big_last", BIG[1099], u64),
        ],
        lock: &LOCK,
    });
}
