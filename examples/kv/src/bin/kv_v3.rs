//! `kv_v3`: changes the type of `kv::CMD_STATS` from v2's calls-only [`CmdCalls`] to
//! [`CmdStats`] (calls and microseconds per command) through dsu's migration path: attach
//! reads v2's value, converts it with [`CmdStats::from_calls`], and creates the new entry
//! beside the old one, which v2 keeps using until it exits.

use dsu_kv::commands::Store;
use dsu_kv::server::{Program, main as serve};
use dsu_kv::stats::{CmdCalls, CmdStats, Stats};
use dsu_kv::table::Table;

dsu::global! {
    /// The keyspace, shared by every version: 21 MiB of zeros at first, so `zeroed` keeps
    /// them out of the binary.
    #[dsu(name = "kv::TABLE", zeroed)]
    static TABLE: Table = Table::new();
    /// INFO's totals, shared by every version.
    #[dsu(name = "kv::STATS")]
    static STATS: Stats = Stats::new();
    /// Migrated in v3: calls and time per command.
    #[dsu(name = "kv::CMD_STATS", migrate(from = CmdCalls, with = CmdStats::from_calls))]
    static CMD_STATS: CmdStats = CmdStats::new();
}

fn main() {
    serve(Program {
        version: 3,
        store: Store::Table(&TABLE),
        stats: &STATS,
        cmd_stats: Some(&*CMD_STATS),
    })
}
