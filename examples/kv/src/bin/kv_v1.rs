//! `kv_v1`: the base version of the dsu key-value server. Its globals are the keyspace
//! (Redis's five types, every container in the segment's shared heap) and the totals;
//! every later version shares both (v3 migrates the keyspace's list representation).

use dsu_kv::alloc::Counted;
use dsu_kv::commands::Store;
use dsu_kv::keyspace::{HeapKeyspaceV1, Keyspace};
use dsu_kv::server::{Program, main as serve};
use dsu_kv::stats::Stats;

dsu::global! {
    /// The keyspace: 64 stripes, each a `dsu::heap::Mutex` of a map in the shared heap.
    #[dsu(name = "kv::KEYSPACE")]
    static KEYSPACE: HeapKeyspaceV1 = Keyspace::new();
    /// INFO's totals, shared by every version.
    #[dsu(name = "kv::STATS")]
    static STATS: Stats = Stats::new();
}

/// The same keyspace in the process's heap, for `--no-dsu`.
static LOCAL: Keyspace<Counted> = Keyspace::new();

fn main() {
    serve(Program {
        version: 1,
        store: Store::Heap(&KEYSPACE),
        local_store: Store::Local(&LOCAL),
        migrates_keyspace: false,
        stats: &STATS,
        cmd_stats: None,
    })
}
