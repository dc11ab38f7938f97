//! `kv_v1`: the base version of the dsu key-value server. Its globals are the keyspace and
//! the totals; every later version shares both.

use dsu_kv::commands::Store;
use dsu_kv::server::{Program, main as serve};
use dsu_kv::stats::Stats;
use dsu_kv::table::Table;

dsu::global! {
    /// The keyspace, shared by every version: 21 MiB of zeros at first, so `zeroed` keeps
    /// them out of the binary.
    #[dsu(name = "kv::TABLE", zeroed)]
    static TABLE: Table = Table::new();
    /// INFO's totals, shared by every version.
    #[dsu(name = "kv::STATS")]
    static STATS: Stats = Stats::new();
}

fn main() {
    serve(Program {
        version: 1,
        store: Store::Table(&TABLE),
        stats: &STATS,
        cmd_stats: None,
    })
}
