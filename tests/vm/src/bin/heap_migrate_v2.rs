//! Version 2 of the migrated-map program (see `heap_migrate.rs`): `heap_migrate::MAP` holds
//! `V2` values, migrated in place from v1's `HashMap<u64, V1>` at attach.
//!
//! ```text
//! heap_migrate_v2 --segment S check
//! ```
//!
//! attaches, times the attach (which runs the transform), and checks its map: keys
//! `0..len`, each mapped to `V2::from_v1(V1::of(key))`. Prints
//! `len=L bad=B attach_us=T`.

#[path = "../heap_migrate.rs"]
mod heap_migrate;

use heap_migrate::{MapV1, MapV2, V1, V2, fail};

/// Builds v2's map from v1's live one, under v1's lock (held by v1's threads too).
fn upgrade(old: &'static MapV1) -> MapV2 {
    let old = old.lock().unwrap_or_else(|_| fail("v1's MAP is poisoned"));
    let mut new = dsu::heap::HashMap::new();
    new.reserve(old.len());
    for (k, v) in old.iter() {
        new.insert(*k, V2::from_v1(v));
    }
    dsu::heap::Mutex::new(new)
}

dsu::global! {
    #[dsu(name = "heap_migrate::MAP", migrate(from = MapV1, with_ref = upgrade))]
    static MAP: MapV2 = dsu::heap::Mutex::new(dsu::heap::HashMap::new());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let segment = match args.as_slice() {
        [flag, seg, check] if flag == "--segment" && check == "check" => seg.clone(),
        _ => fail("usage: heap_migrate_v2 --segment S check"),
    };
    let t0 = std::time::Instant::now();
    let _version = dsu::Attach::new(segment.as_str(), "v2")
        .heap(0)
        .ready_on_attach(true)
        .attach()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let attach_us = t0.elapsed().as_micros();
    let m = MAP.lock().unwrap_or_else(|_| fail("MAP is poisoned"));
    let n = m.len() as u64;
    let bad = (0..n)
        .filter(|k| m.get(k) != Some(&V2::from_v1(&V1::of(*k))))
        .count();
    println!("len={n} bad={bad} attach_us={attach_us}");
}
