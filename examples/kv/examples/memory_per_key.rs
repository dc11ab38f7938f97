//! Bytes of keyspace per key for N keys with 100-byte string values (default 1,000,000),
//! in the process heap (`Counted`: the bytes requested) and in dsu's shared heap
//! (`SharedHeap` over a memfd region: the heap's allocated blocks, headers included).
//! BENCHMARKS.md compares them with redis-server's `used_memory`.
//!
//! ```sh
//! cargo run --release -p dsu-kv --example memory_per_key [N]
//! ```

use dsu::heap::{self, MemfdRegion, SharedHeap};
use dsu_kv::alloc::{Counted, KvAlloc};
use dsu_kv::engine::{self, Server};
use dsu_kv::keyspace::Keyspace;

struct NoServer;

impl Server for NoServer {
    fn info(&self, _: usize, _: usize, _: usize, _: usize) -> String {
        String::new()
    }

    fn keyspace_hit(&self, _: bool) {}
}

fn fill<A: KvAlloc>(ks: &'static Keyspace<A>, n: usize) -> f64 {
    let before = A::HANDLE.used_bytes();
    let value = [b'x'; 100];
    let mut out = Vec::new();
    for i in 0..n {
        let key = format!("key:{i:012}");
        engine::execute(ks, &NoServer, &[b"SET", key.as_bytes(), &value], &mut out);
        assert_eq!(out, b"+OK\r\n", "SET {key}");
        out.clear();
    }
    assert_eq!(ks.counts().0, n);
    (A::HANDLE.used_bytes() - before) as f64 / n as f64
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("N: a number of keys"));
    static LOCAL: Keyspace<Counted> = Keyspace::new();
    println!(
        "process heap (bytes requested): {:.1} bytes per key",
        fill(&LOCAL, n)
    );
    heap::install(MemfdRegion::new(4 << 30).expect("memfd region").leak()).expect("install");
    let shared: &'static Keyspace<SharedHeap> = allocator_api2::boxed::Box::leak(
        allocator_api2::boxed::Box::new_in(Keyspace::new(), SharedHeap),
    );
    println!(
        "dsu shared heap (allocated blocks): {:.1} bytes per key",
        fill(shared, n)
    );
}
