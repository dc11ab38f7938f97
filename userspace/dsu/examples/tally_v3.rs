//! Generation 3 of the tally example (VM suite): migrates `tally::STATS` from v2's type
//! or, skipping a generation, from v1's, each with a merge step.
//!
//! `read`: attaches and prints `status=S hits=H misses=M errors=E` (`errors` is 2 after a
//! migration from v2, 1 from v1, 0 on a fresh segment).
//!
//! `run N`: attaches (the segment must exist), prints `status=S`, counts N hits, waits until
//! its merge steps have run and prints `v3 increments=N hits=H pending=P`.

#[path = "tally/mod.rs"]
mod tally;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tally::{StatsV1, StatsV2, StatsV3, v3_catch_up_v1, v3_catch_up_v2, v3_from_v1, v3_from_v2};

dsu::global! {
    #[dsu(name = "tally::STATS",
          migrate(from = StatsV2, with = v3_from_v2, merge = v3_catch_up_v2),
          migrate(from = StatsV1, with = v3_from_v1, merge = v3_catch_up_v1))]
    static STATS: StatsV3 = StatsV3 {
        misses: AtomicU64::new(0),
        hits: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    };
}

fn main() {
    let (segment, args) = tally::args();
    let create = args[0] != "run";
    let version = tally::attach(&segment, "v3", create);
    match args[0].as_str() {
        // Counts n times, then waits until every older entry it migrated from has merged.
        "run" => {
            let n = tally::number(&args, 1);
            let pending = tally::run(&version, n, &STATS.hits);
            println!(
                "v3 increments={n} hits={} pending={pending}",
                STATS.hits.load(Relaxed)
            );
        }
        "read" => println!(
            "status={} hits={} misses={} errors={}",
            tally::status(&version, "tally::STATS"),
            STATS.hits.load(Relaxed),
            STATS.misses.load(Relaxed),
            STATS.errors.load(Relaxed)
        ),
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}
