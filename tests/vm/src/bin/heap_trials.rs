//! The allocator's crash and stress checks ([`dsu::heap::testing`]) over a segment's heap
//! on the real module (VM suite: `userspace::heap_crash_trials`, `userspace::heap_stress`).
//! Attach maps and installs the heap; the checks fork children that share it.
//!
//! ```text
//! heap_trials --segment S crash TRIALS           (prints trials=, mid=, ms=, blocks=)
//! heap_trials --segment S stress PROCS THREADS OPS (prints ms=, blocks=)
//! ```

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| fail("usage: heap_trials --segment S (crash N | stress P T OPS)"))
    };
    if args.len() < 3 || args[0] != "--segment" {
        fail("usage: heap_trials --segment S (crash N | stress P T OPS)");
    }
    let version = dsu::Attach::new(args[1].as_str(), "trials")
        .heap(0)
        .attach()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let heap = dsu::heap::installed().unwrap_or_else(|| fail("attach installed no heap"));
    assert!(std::ptr::eq(
        heap.base(),
        dsu::heap::HeapRegion::base(version.heap().expect("a heap"))
    ));
    let t0 = std::time::Instant::now();
    match args[2].as_str() {
        "crash" => {
            let trials = num(3);
            let mid = dsu::heap::testing::crash_trials(heap, trials);
            let s = heap.check().unwrap_or_else(|e| fail(&e.to_string()));
            println!(
                "trials={trials} mid={mid} ms={} blocks={}",
                t0.elapsed().as_millis(),
                s.allocated_blocks
            );
        }
        "stress" => {
            dsu::heap::testing::stress(heap, num(3), num(4), num(5) as u32);
            let s = heap.check().unwrap_or_else(|e| fail(&e.to_string()));
            println!(
                "ms={} blocks={}",
                t0.elapsed().as_millis(),
                s.allocated_blocks
            );
        }
        _ => fail("usage: heap_trials --segment S (crash N | stress P T OPS)"),
    }
}
