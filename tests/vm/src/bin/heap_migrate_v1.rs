//! Version 1 of the migrated-map program (see `heap_migrate.rs`), a line server:
//!
//! ```text
//! heap_migrate_v1 --segment S serve
//! fill N        (keys 0..N, replies "ok len=N")
//! grow start    (a thread inserts the next keys, one per lock, until `grow stop`)
//! grow stop     (replies "ok len=L")
//! check         (every key 0..len maps to V1::of(key): "ok len=L bad=B")
//! exit
//! ```

#[path = "../heap_migrate.rs"]
#[allow(dead_code)] // V2 is v2's
mod heap_migrate;

use heap_migrate::{MapV1, V1, fail};
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

dsu::global! {
    #[dsu(name = "heap_migrate::MAP")]
    static MAP: MapV1 = dsu::heap::Mutex::new(dsu::heap::HashMap::new());
}

fn len() -> u64 {
    MAP.lock().unwrap_or_else(|_| fail("MAP is poisoned")).len() as u64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let segment = match args.as_slice() {
        [flag, seg, serve] if flag == "--segment" && serve == "serve" => seg.clone(),
        _ => fail("usage: heap_migrate_v1 --segment S serve"),
    };
    let version = dsu::Attach::new(segment.as_str(), "v1")
        .heap(0)
        .ready_on_attach(true)
        .attach()
        .unwrap_or_else(|e| fail(&e.to_string()));
    println!("ready {}", version.id().unwrap_or(0));
    let mut grower: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> = None;
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_else(|e| fail(&e.to_string()));
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["fill", n] => {
                let n: u64 = n.parse().unwrap_or_else(|_| fail("fill N"));
                let mut m = MAP.lock().unwrap_or_else(|_| fail("MAP is poisoned"));
                m.reserve(n as usize);
                for k in 0..n {
                    m.insert(k, V1::of(k));
                }
                println!("ok len={}", m.len());
            }
            ["grow", "start"] => {
                let stop = Arc::new(AtomicBool::new(false));
                let s = stop.clone();
                let t = std::thread::spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        let mut m = MAP.lock().unwrap_or_else(|_| fail("MAP is poisoned"));
                        let k = m.len() as u64;
                        m.insert(k, V1::of(k));
                        drop(m);
                        std::thread::yield_now();
                    }
                });
                grower = Some((stop, t));
                println!("ok growing");
            }
            ["grow", "stop"] => {
                if let Some((stop, t)) = grower.take() {
                    stop.store(true, Ordering::Relaxed);
                    t.join().unwrap_or_else(|_| fail("the grower panicked"));
                }
                println!("ok len={}", len());
            }
            ["check"] => {
                let m = MAP.lock().unwrap_or_else(|_| fail("MAP is poisoned"));
                let n = m.len() as u64;
                let bad = (0..n).filter(|k| m.get(k) != Some(&V1::of(*k))).count();
                println!("ok len={n} bad={bad}");
            }
            ["exit"] => {
                println!("ok bye");
                break;
            }
            _ => println!("error unknown command {line:?}"),
        }
    }
}
