//! Generation 1 of the tally example (VM suite: migrations that lose nothing).
//!
//! - `run AFTER`: attaches, prints `attached`, then increments `hits` without pause until
//!   a newer version binds, then `AFTER` more times (draining), prints `v1 increments=N`
//!   (every increment it made) and exits.
//! - `add N`: attaches, adds N, prints `hits=H`.

#[path = "tally/mod.rs"]
mod tally;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tally::StatsV1;

dsu::global! {
    #[dsu(name = "tally::STATS")]
    static STATS: StatsV1 = StatsV1 { hits: AtomicU64::new(0) };
}

fn main() {
    let (segment, args) = tally::args();
    match args[0].as_str() {
        "run" => {
            let after = tally::number(&args, 1);
            let version = tally::attach(&segment, "v1", true);
            println!("attached");
            std::io::stdout().flush().unwrap();
            let mut made = 0u64;
            let deadline = Instant::now() + Duration::from_secs(300);
            // Until v2 is there (checked every 256 increments), then `after` more.
            loop {
                STATS.hits.fetch_add(1, Relaxed);
                made += 1;
                if made % 256 == 0 {
                    if version.newer_version().unwrap().is_some() {
                        break;
                    }
                    if Instant::now() > deadline {
                        println!("err no newer version within 300 s");
                        std::process::exit(1);
                    }
                    std::thread::yield_now();
                }
            }
            for i in 0..after {
                STATS.hits.fetch_add(1, Relaxed);
                made += 1;
                if i % 256 == 0 {
                    std::thread::yield_now();
                }
            }
            println!("v1 increments={made}");
        }
        "add" => {
            let n = tally::number(&args, 1);
            let _version = tally::attach(&segment, "v1", true);
            STATS.hits.fetch_add(n, Relaxed);
            println!("hits={}", STATS.hits.load(Relaxed));
        }
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}
