//! `kv_v2`: adds LMOVE, RPOPLPUSH, SMOVE, HINCRBY, HLEN and HEXISTS, and a new global,
//! per-command call counters, which starts at zero when v2 attaches beside v1 while the
//! keyspace (the same type: nothing migrates, nothing is copied) and totals keep their
//! values.

use dsu_kv::alloc::Counted;
use dsu_kv::commands::Store;
use dsu_kv::keyspace::{HeapKeyspaceV1, Keyspace};
use dsu_kv::server::{Program, main as serve};
use dsu_kv::stats::{CmdCalls, Stats};

dsu::global! {
    /// The keyspace, shared with v1 (same type).
    #[dsu(name = "kv::KEYSPACE")]
    static KEYSPACE: HeapKeyspaceV1 = Keyspace::new();
    /// INFO's totals, shared by every version.
    #[dsu(name = "kv::STATS")]
    static STATS: Stats = Stats::new();
    /// New in v2: calls per command.
    #[dsu(name = "kv::CMD_STATS")]
    static CMD_STATS: CmdCalls = CmdCalls::new();
}

/// The same keyspace in the process's heap, for `--no-dsu`.
static LOCAL: Keyspace<Counted> = Keyspace::new();

fn main() {
    serve(Program {
        version: 2,
        store: Store::Heap(&KEYSPACE),
        local_store: Store::Local(&LOCAL),
        migrates_keyspace: false,
        stats: &STATS,
        cmd_stats: Some(&*CMD_STATS),
    })
}
