//! Generation 1 of the tally example with its global moved into a module and no explicit
//! name (VM suite: `dsuctl check` flags the rename). The default name is
//! `module_path!()::STATS`, here `tally_v1_moved::stats::STATS`, so the segment's
//! `tally::STATS` is no longer declared and this program's state would start over.
//!
//! `read`: attaches and prints `hits=H`.

#[path = "tally/mod.rs"]
mod tally;

mod stats {
    use super::tally::StatsV1;
    use std::sync::atomic::AtomicU64;

    dsu::global! {
        pub static STATS: StatsV1 = StatsV1 { hits: AtomicU64::new(0) };
    }
}

fn main() {
    let (segment, args) = tally::args();
    let _version = tally::attach(&segment, "v1", true);
    match args[0].as_str() {
        "read" => println!(
            "hits={}",
            stats::STATS.hits.load(std::sync::atomic::Ordering::Relaxed)
        ),
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}
