//! `kv_local`: `kv_v1`'s keyspace and commands ([`dsu_kv::keyspace::Keyspace`]) in the
//! process's own heap ([`dsu_kv::alloc::ServerAlloc`]) whether or not it attaches, for
//! the host tests and the benchmarks' process-heap comparison. Its totals are a dsu global
//! as in the other versions; its keys are never shared with another version (`kv_v1`'s
//! are, in the segment's shared heap).

use dsu_kv::alloc::ServerAlloc;
use dsu_kv::commands::Store;
use dsu_kv::keyspace::Keyspace;
use dsu_kv::server::{Program, main as serve};
use dsu_kv::stats::Stats;

static KEYSPACE: Keyspace<ServerAlloc> = Keyspace::new();

dsu::global! {
    /// INFO's totals.
    #[dsu(name = "kv::STATS")]
    static STATS: Stats = Stats::new();
}

fn main() {
    serve(Program {
        version: 1,
        store: Store::Local(&KEYSPACE),
        local_store: Store::Local(&KEYSPACE),
        migrates_keyspace: false,
        stats: &STATS,
        cmd_stats: None,
    })
}
