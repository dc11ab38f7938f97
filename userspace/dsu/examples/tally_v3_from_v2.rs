//! Generation 3 of the tally example that migrates only from v2's type (VM suite): on a
//! segment still holding v1's type, its attach fails with an error naming both types
//! instead of starting from the initialiser.
//!
//! `read`: attaches and prints `status=S hits=H`, or the error on stderr (exit status 1).

#[path = "tally/mod.rs"]
mod tally;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tally::{StatsV2, StatsV3, v3_catch_up_v2, v3_from_v2};

dsu::global! {
    #[dsu(name = "tally::STATS", migrate(from = StatsV2, with = v3_from_v2, merge = v3_catch_up_v2))]
    static STATS: StatsV3 = StatsV3 {
        misses: AtomicU64::new(0),
        hits: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    };
}

fn main() {
    let (segment, args) = tally::args();
    let version = tally::attach(&segment, "v3", true);
    match args[0].as_str() {
        "read" => println!(
            "status={} hits={}",
            tally::status(&version, "tally::STATS"),
            STATS.hits.load(Relaxed)
        ),
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}
