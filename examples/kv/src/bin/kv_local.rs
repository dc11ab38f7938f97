//! `kv_local`: the server with Redis's five data types and every size up to 512 MiB, its
//! keyspace ([`dsu_kv::keyspace::Keyspace`]) in the process's own heap
//! ([`dsu_kv::alloc::ServerAlloc`]): what `kv_v1`..`kv_v3` become once the keyspace lives
//! in the segment's shared heap. Its totals are a dsu global as in the other versions;
//! the keys are not shared with another version yet.

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
