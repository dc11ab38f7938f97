//! `kv_v2`: adds INCRBY and APPEND, and a new global, per-command call counters, which
//! starts at zero when v2 attaches beside v1 while the keyspace and totals keep their
//! values.

use dsu_kv::commands::Store;
use dsu_kv::server::{Program, main as serve};
use dsu_kv::stats::{CmdCalls, Stats};
use dsu_kv::table::Table;

dsu::global! {
    /// The keyspace, shared by every version: 21 MiB of zeros at first, so `zeroed` keeps
    /// them out of the binary.
    #[dsu(name = "kv::TABLE", zeroed)]
    static TABLE: Table = Table::new();
    /// INFO's totals, shared by every version.
    #[dsu(name = "kv::STATS")]
    static STATS: Stats = Stats::new();
    /// New in v2: calls per command.
    #[dsu(name = "kv::CMD_STATS")]
    static CMD_STATS: CmdCalls = CmdCalls::new();
}

fn main() {
    serve(Program {
        version: 2,
        store: Store::Table(&TABLE),
        stats: &STATS,
        cmd_stats: Some(&*CMD_STATS),
    })
}
