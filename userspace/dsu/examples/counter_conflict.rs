//! A build of the counter example whose `counter` changed type (`AtomicI64` instead of
//! `AtomicU64`) without a migration: attaching must fail with a clear error and leave the
//! segment unchanged (used by the VM suite).

#[path = "common/mod.rs"]
mod common;

use dsu::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64};

dsu::global! {
    #[dsu(name = "counter::COUNTER")]
    static COUNTER: AtomicI64 = AtomicI64::new(0);
    #[dsu(name = "counter::LOCK")]
    static LOCK: Mutex<u64> = Mutex::new(0);
    #[dsu(name = "counter::CONFLICT_ADDED")]
    static CONFLICT_ADDED: AtomicU64 = AtomicU64::new(1);
}

fn main() {
    common::main(common::Program {
        default_label: "conflict",
        vars: vec![
            atomic_var!("counter", COUNTER, i64),
            atomic_var!("conflict_added", CONFLICT_ADDED, u64),
        ],
        lock: &LOCK,
    });
}
