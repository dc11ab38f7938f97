//! `kv_v3`: changes the in-heap representation of lists, from v1/v2's two stacks of
//! `Vec<u8>` to a ring of `Box<[u8]>`, by migrating `kv::KEYSPACE` in place
//! ([`dsu_kv::migrate`]: the old version hands its stripes over and forwards their
//! requests, so no write is lost); and the type of `kv::CMD_STATS` from v2's calls-only
//! [`CmdCalls`] to [`CmdStats`] (calls and microseconds per command).

use dsu_kv::alloc::Counted;
use dsu_kv::commands::Store;
use dsu_kv::keyspace::{HeapKeyspaceV1, HeapKeyspaceV3, Keyspace, RingList};
use dsu_kv::migrate::lists_to_rings;
use dsu_kv::server::{Program, main as serve};
use dsu_kv::stats::{CmdCalls, CmdStats, Stats};

dsu::global! {
    /// Migrated in v3: lists are rings.
    #[dsu(name = "kv::KEYSPACE", migrate(from = HeapKeyspaceV1, with_ref = lists_to_rings))]
    static KEYSPACE: HeapKeyspaceV3 = Keyspace::new();
    /// INFO's totals, shared by every version.
    #[dsu(name = "kv::STATS")]
    static STATS: Stats = Stats::new();
    /// Migrated in v3: calls and time per command.
    #[dsu(name = "kv::CMD_STATS", migrate(from = CmdCalls, with = CmdStats::from_calls))]
    static CMD_STATS: CmdStats = CmdStats::new();
}

/// The same keyspace in the process's heap, for `--no-dsu`.
static LOCAL: Keyspace<Counted, RingList<Counted>> = Keyspace::new();

fn main() {
    serve(Program {
        version: 3,
        store: Store::HeapV3(&KEYSPACE),
        local_store: Store::LocalV3(&LOCAL),
        migrates_keyspace: true,
        stats: &STATS,
        cmd_stats: Some(&*CMD_STATS),
    })
}
