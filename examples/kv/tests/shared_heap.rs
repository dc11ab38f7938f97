//! The keyspace on dsu's shared heap (`dsu::heap::SharedHeap` over a memfd region, which
//! a forked child shares with its parent at the same address, as versions share a
//! segment's heap): a child process writes keys of every type, its parent reads them back
//! through the same pointers, with nothing copied; DEL gives the heap its memory back.

use allocator_api2::boxed::Box;
use dsu::heap::{self, MemfdRegion, SharedHeap};
use dsu_kv::alloc::KvAlloc;
use dsu_kv::engine::{self, Server};
use dsu_kv::keyspace::Keyspace;
use dsu_kv::resp::{Reply, parse_reply};

struct NoServer;

impl Server for NoServer {
    fn info(&self, _: usize, _: usize, _: usize, _: usize) -> String {
        String::new()
    }

    fn keyspace_hit(&self, _: bool) {}
}

fn run(ks: &'static Keyspace<SharedHeap>, args: &[&[u8]]) -> Reply {
    let mut out = Vec::new();
    engine::execute(ks, &NoServer, args, &mut out);
    let (r, used) = parse_reply(&out).unwrap().unwrap();
    assert_eq!(used, out.len());
    r
}

fn bulks(items: &[&str]) -> Reply {
    Reply::Array(Some(
        items
            .iter()
            .map(|s| Reply::Bulk(Some(s.as_bytes().to_vec())))
            .collect(),
    ))
}

#[test]
fn a_forked_process_writes_every_type_its_parent_reads_them() {
    heap::install(MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
    let ks: &'static Keyspace<SharedHeap> = Box::leak(Box::new_in(Keyspace::new(), SharedHeap));
    let big = vec![b'b'; 1 << 20];
    // SAFETY: the child runs only this crate's code over the shared heap (no lock is held
    // at fork) and leaves with _exit, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let writes: [&[&[u8]]; 7] = [
            &[b"SET", b"s", b"value"],
            &[b"SET", b"big", &big],
            &[b"RPUSH", b"l", b"a", b"b", b"c"],
            &[b"SADD", b"set", b"x", b"y"],
            &[b"HSET", b"h", b"f", b"v"],
            &[b"ZADD", b"z", b"2", b"b", b"1.5", b"a"],
            &[b"EXPIRE", b"s", b"1000"],
        ];
        let ok = writes
            .iter()
            .all(|w| !matches!(run(ks, w), Reply::Error(_)));
        // SAFETY: ends the child without running the parent's destructors or harness.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);

    assert_eq!(run(ks, &[b"DBSIZE"]), Reply::Integer(7 - 1));
    assert_eq!(
        run(ks, &[b"GET", b"s"]),
        Reply::Bulk(Some(b"value".to_vec()))
    );
    assert!(matches!(
        run(ks, &[b"TTL", b"s"]),
        Reply::Integer(999 | 1000)
    ));
    assert_eq!(run(ks, &[b"STRLEN", b"big"]), Reply::Integer(1 << 20));
    assert_eq!(
        run(ks, &[b"LRANGE", b"l", b"0", b"-1"]),
        bulks(&["a", "b", "c"])
    );
    assert_eq!(run(ks, &[b"SCARD", b"set"]), Reply::Integer(2));
    assert_eq!(run(ks, &[b"SISMEMBER", b"set", b"y"]), Reply::Integer(1));
    assert_eq!(run(ks, &[b"HGETALL", b"h"]), bulks(&["f", "v"]));
    assert_eq!(
        run(ks, &[b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"]),
        bulks(&["a", "1.5", "b", "2"])
    );
    // The parent changes what the child built, in place.
    assert_eq!(run(ks, &[b"LPUSH", b"l", b"z"]), Reply::Integer(4));
    let used = SharedHeap.used_bytes();
    assert!(used > 1 << 20, "{used}");
    assert_eq!(run(ks, &[b"DEL", b"big"]), Reply::Integer(1));
    assert!(
        SharedHeap.used_bytes() + (1 << 20) <= used,
        "DEL gave back {} bytes",
        used - SharedHeap.used_bytes()
    );
    assert!(SharedHeap.limit_bytes() >= 1 << 30);
}
