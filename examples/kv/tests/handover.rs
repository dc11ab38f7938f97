//! The old version's side of v3's keyspace migration (`src/forward.rs`), on the host: a
//! keyspace whose stripes a newer version took over forwards every request that needs
//! them, changes nothing itself and counts nothing; when the newer version is gone before
//! it committed, the stripes are served here again; after it committed, requests fail.

mod common_servers;
use common_servers::{free_port, kv_version};
use dsu_kv::alloc::Counted;
use dsu_kv::commands::{Ctx, Store, execute};
use dsu_kv::keyspace::{Handover, Keyspace, STRIPES};
use dsu_kv::resp::{Reply, parse_reply};
use dsu_kv::stats::Stats;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

fn run(ctx: &Ctx, args: &[&[u8]]) -> Reply {
    let mut out = Vec::new();
    execute(ctx, args, &mut out);
    let (r, used) = parse_reply(&out).unwrap().unwrap();
    assert_eq!(used, out.len(), "one reply");
    r
}

fn mark(ks: &'static Keyspace<Counted>, port: u16, committed: u32) {
    for i in 0..STRIPES {
        ks.lock_any(i).handover = Handover {
            port: u32::from(port),
            committed,
        };
    }
}

#[test]
fn moved_stripes_are_forwarded_then_taken_back() {
    let ks: &'static Keyspace<Counted> = Box::leak(Box::new(Keyspace::new()));
    let stats: &'static Stats = Box::leak(Box::new(Stats::new()));
    let clients = AtomicUsize::new(0);
    let ctx = Ctx {
        store: Store::Local(ks),
        stats,
        cmd_stats: None,
        version: 2,
        port: 0,
        started: Instant::now(),
        clients: &clients,
    };
    assert_eq!(
        run(&ctx, &[b"SET", b"here", b"1"]),
        Reply::Simple("OK".into())
    );

    // The newer version (a kv_v3 without dsu stands in for it) took every stripe over.
    let port = free_port();
    let newer = kv_version(3, port);
    mark(ks, port, 1);
    assert_eq!(run(&ctx, &[b"SET", b"a", b"x"]), Reply::Simple("OK".into()));
    assert_eq!(
        run(&ctx, &[b"MGET", b"a", b"here"]),
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"x".to_vec())),
            Reply::Bulk(None)
        ])),
        "read from the newer version, whole (not half here, half there)"
    );
    assert_eq!(run(&ctx, &[b"RPUSH", b"l", b"1", b"2"]), Reply::Integer(2));
    assert_eq!(
        run(&ctx, &[b"DBSIZE"]),
        Reply::Integer(2),
        "the newer version's count"
    );
    assert_eq!(
        run(&ctx, &[b"PING"]),
        Reply::Simple("PONG".into()),
        "served here"
    );
    assert_eq!(
        stats.total_commands.load(Relaxed),
        2,
        "the first SET and PING only: forwarded requests count where they are executed"
    );
    for i in 0..STRIPES {
        let g = ks.lock_any(i);
        assert!(i != dsu_kv::keyspace::stripe_of(b"here") || g.len() == 1);
        assert!(
            i == dsu_kv::keyspace::stripe_of(b"here") || g.is_empty(),
            "stripe {i} changed here"
        );
    }

    // It dies after it committed: this copy is stale, requests fail.
    drop(newer);
    match run(&ctx, &[b"GET", b"a"]) {
        Reply::Error(e) => assert!(e.contains("retired"), "{e}"),
        r => panic!("{r:?}"),
    }

    // A newer version that dies before it committed: the stripes are ours again.
    mark(ks, port, 0);
    assert_eq!(
        run(&ctx, &[b"GET", b"here"]),
        Reply::Bulk(Some(b"1".to_vec())),
        "served here again"
    );
    assert!((0..STRIPES).all(|i| ks.lock_any(i).handover == Handover::default()));
}
