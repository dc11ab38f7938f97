//! Generation 2 of the tally example (VM suite: migrations that lose nothing): migrates
//! `tally::STATS` from v1's type with a merge step.
//!
//! - `run N`: attaches (the segment must exist), prints `status=S` (how `tally::STATS` was
//!   found), increments `hits` N times while v1 drains, waits for the merge, and prints
//!   `v2 increments=N hits=H pending=P`.
//! - `read`: attaches and prints `status=S hits=H misses=M pending=P`.
//! - `add N`: attaches, adds N to `misses`, prints `misses=M`.

#[path = "tally/mod.rs"]
mod tally;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tally::{StatsV1, StatsV2, v2_catch_up_v1, v2_from_v1};

dsu::global! {
    #[dsu(name = "tally::STATS", migrate(from = StatsV1, with = v2_from_v1, merge = v2_catch_up_v1))]
    static STATS: StatsV2 = StatsV2 { hits: AtomicU64::new(0), misses: AtomicU64::new(0) };
}

fn main() {
    let (segment, args) = tally::args();
    let create = args[0] != "run";
    let version = tally::attach(&segment, "v2", create);
    let status = tally::status(&version, "tally::STATS");
    match args[0].as_str() {
        "run" => {
            let n = tally::number(&args, 1);
            let pending = tally::run(&version, n, &STATS.hits);
            println!(
                "v2 increments={n} hits={} pending={pending}",
                STATS.hits.load(Relaxed)
            );
        }
        "read" => println!(
            "status={status} hits={} misses={} pending={}",
            STATS.hits.load(Relaxed),
            STATS.misses.load(Relaxed),
            version.pending_migrations()
        ),
        "add" => {
            let n = tally::number(&args, 1);
            STATS.misses.fetch_add(n, Relaxed);
            println!("misses={}", STATS.misses.load(Relaxed));
        }
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}
