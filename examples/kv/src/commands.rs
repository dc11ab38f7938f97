//! Command execution: one parsed request in, one RESP reply out, by [`crate::engine`] over
//! the version's keyspace ([`Store`]).
//!
//! Every request, known or not, counts once in [`Stats::total_commands`], in every version:
//! a request forwarded to a newer version (its stripe was taken over,
//! [`crate::keyspace::Moved`]) counts there, not here.

use crate::alloc::Counted;
use crate::keyspace::{HeapKeyspaceV1, HeapKeyspaceV3, Keyspace, Moved, RingList};
use crate::resp;
use crate::stats::{Cmd, CommandStats, Stats};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Where the keys are: the keyspace of v1/v2 (lists as two stacks) or of v3 (lists as
/// rings), in the segment's shared heap or, without dsu, in the process's own heap.
#[derive(Clone, Copy)]
pub enum Store {
    /// v1's and v2's keyspace in the shared heap (a `dsu::global!`).
    Heap(&'static HeapKeyspaceV1),
    /// v3's keyspace in the shared heap.
    HeapV3(&'static HeapKeyspaceV3),
    /// v1's and v2's keyspace in the process's heap (`kv_local`, `--no-dsu`).
    Local(&'static Keyspace<Counted>),
    /// v3's keyspace in the process's heap (`kv_v3 --no-dsu`).
    LocalV3(&'static Keyspace<Counted, RingList<Counted>>),
}

impl Store {
    /// Keys stored.
    pub fn len(&self) -> usize {
        match self {
            Store::Heap(k) => k.counts().0,
            Store::HeapV3(k) => k.counts().0,
            Store::Local(k) => k.counts().0,
            Store::LocalV3(k) => k.counts().0,
        }
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a request runs against: the shared globals of this version, and local facts.
pub struct Ctx<'a> {
    /// The keyspace.
    pub store: Store,
    /// The totals (shared global).
    pub stats: &'a Stats,
    /// The per-command statistics (shared global from v2 on).
    pub cmd_stats: Option<&'a dyn CommandStats>,
    /// This program's version: 1, 2 or 3 (commands of later versions are unknown).
    pub version: u32,
    /// The TCP port served (for INFO).
    pub port: u16,
    /// When this process started (for INFO).
    pub started: Instant,
    /// Clients connected to this process (for INFO).
    pub clients: &'a std::sync::atomic::AtomicUsize,
}

/// What the connection does after the reply.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum After {
    /// Read the next request.
    Continue,
    /// Send the reply, then close (QUIT).
    Close,
}

fn run_engine(ctx: &Ctx, args: &[&[u8]], out: &mut Vec<u8>) -> crate::engine::After {
    use crate::engine::execute as run;
    match ctx.store {
        Store::Heap(ks) => run(ks, ctx, args, out),
        Store::HeapV3(ks) => run(ks, ctx, args, out),
        Store::Local(ks) => run(ks, ctx, args, out),
        Store::LocalV3(ks) => run(ks, ctx, args, out),
    }
}

/// Executes one request (`args` non-empty) and appends its reply to `out`.
pub fn execute(ctx: &Ctx, args: &[&[u8]], out: &mut Vec<u8>) -> After {
    // Timed only where recorded (v2 and v3): a clock read per command costs otherwise.
    let t0 = ctx.cmd_stats.map(|_| Instant::now());
    ctx.stats.total_commands.fetch_add(1, Relaxed);
    let mark = out.len();
    let after = loop {
        // A stripe a newer version took over unwinds out of the engine with `Moved`
        // before the request changed anything.
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_engine(ctx, args, out)));
        match r {
            Ok(after) => break after,
            Err(payload) => {
                let moved = *payload
                    .downcast::<Moved>()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                out.truncate(mark);
                match crate::forward::forward(moved, args, out) {
                    Ok(()) => {
                        // Counted by the newer version, which executed it.
                        ctx.stats.total_commands.fetch_sub(1, Relaxed);
                        return After::Continue;
                    }
                    Err(e) => {
                        out.truncate(mark);
                        if !crate::forward::take_back(ctx.store, moved, &e) {
                            resp::error(
                                out,
                                &format!(
                                    "ERR this version retired and the version that took its keys over is gone ({e})"
                                ),
                            );
                            return After::Continue;
                        }
                        // The newer version never served: the stripes are ours again.
                    }
                }
            }
        }
    };
    if let Some(cs) = ctx.cmd_stats {
        let nsec = t0.map_or(0, |t| t.elapsed().as_nanos() as u64);
        cs.record(Cmd::parse(args[0]), nsec);
    }
    match after {
        crate::engine::After::Continue => After::Continue,
        crate::engine::After::Close => After::Close,
    }
}

impl crate::engine::Server for Ctx<'_> {
    fn info(&self, keys: usize, expires: usize, used_memory: usize, maxmemory: usize) -> String {
        info(self, keys, expires, Some((used_memory, maxmemory)))
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn keyspace_hit(&self, hit: bool) {
        let c = if hit {
            &self.stats.keyspace_hits
        } else {
            &self.stats.keyspace_misses
        };
        c.fetch_add(1, Relaxed);
    }
}

/// The INFO text: Redis' field names where they exist (`total_commands_processed`, ...),
/// `dsu_*` fields for the update's own facts. `keys` and `expires` are the keyspace's
/// counts; `memory` its bytes in use and limit (`usize::MAX`: none), when known.
pub fn info(ctx: &Ctx, keys: usize, expires: usize, memory: Option<(usize, usize)>) -> String {
    let s = ctx.stats;
    let mut out = format!(
        "# Server\r\nredis_version:7.0.0\r\ndsu_kv_version:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\
         \r\n# Clients\r\nconnected_clients:{}\r\n\
         \r\n# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\n\
         dsu_versions_started:{}\r\n\
         \r\n# Keyspace\r\ndb0:keys={keys},expires={expires},avg_ttl=0\r\n",
        ctx.version,
        std::process::id(),
        ctx.port,
        ctx.started.elapsed().as_secs(),
        ctx.clients.load(Relaxed),
        s.total_connections.load(Relaxed),
        s.total_commands.load(Relaxed),
        s.keyspace_hits.load(Relaxed),
        s.keyspace_misses.load(Relaxed),
        s.versions_started.load(Relaxed),
    );
    if let Some((used, max)) = memory {
        let max = if max == usize::MAX { 0 } else { max };
        out.push_str(&format!(
            "\r\n# Memory\r\nused_memory:{used}\r\nmaxmemory:{max}\r\n"
        ));
    }
    if let Some(cs) = ctx.cmd_stats {
        out.push_str("\r\n# Commandstats\r\n");
        cs.render(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{Parsed, Reply, parse, parse_reply};
    use crate::stats::{CmdCalls, CmdStats};
    use std::sync::atomic::AtomicUsize;

    struct Fixture {
        ks: &'static Keyspace<Counted>,
        stats: Stats,
        clients: AtomicUsize,
    }

    fn fixture() -> Fixture {
        Fixture {
            ks: Box::leak(Box::new(Keyspace::new())),
            stats: Stats::new(),
            clients: AtomicUsize::new(0),
        }
    }

    impl Fixture {
        fn ctx<'a>(&'a self, version: u32, cs: Option<&'a dyn CommandStats>) -> Ctx<'a> {
            Ctx {
                store: Store::Local(self.ks),
                stats: &self.stats,
                cmd_stats: cs,
                version,
                port: 6379,
                started: Instant::now(),
                clients: &self.clients,
            }
        }
    }

    /// Runs a pipelined request buffer and returns the replies.
    fn run(ctx: &Ctx, mut input: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Parsed::Request(args, used) = parse(input).unwrap() {
            if !args.is_empty() {
                execute(ctx, &args, &mut out);
            }
            input = &input[used..];
        }
        let mut replies = Vec::new();
        let mut buf = &out[..];
        while let Some((r, used)) = parse_reply(buf).unwrap() {
            replies.push(r);
            buf = &buf[used..];
        }
        assert!(buf.is_empty());
        replies
    }

    fn one(ctx: &Ctx, line: &str) -> Reply {
        let mut r = run(ctx, format!("{line}\r\n").as_bytes());
        assert_eq!(r.len(), 1, "{line}");
        r.pop().unwrap()
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    #[test]
    fn basic_commands() {
        let f = fixture();
        let c = f.ctx(1, None);
        assert_eq!(one(&c, "PING"), Reply::Simple("PONG".into()));
        assert_eq!(one(&c, "ping hi"), bulk("hi"));
        assert_eq!(one(&c, "GET a"), Reply::Bulk(None));
        assert_eq!(one(&c, "SET a 1"), ok());
        assert_eq!(one(&c, "GET a"), bulk("1"));
        assert_eq!(one(&c, "SET a 2 NX"), Reply::Bulk(None));
        assert_eq!(one(&c, "SET b 2 XX"), Reply::Bulk(None));
        assert_eq!(one(&c, "SET a 2 XX"), ok());
        assert_eq!(one(&c, "INCR a"), Reply::Integer(3));
        assert_eq!(one(&c, "INCR n"), Reply::Integer(1));
        assert_eq!(one(&c, "EXISTS a n zz a"), Reply::Integer(3));
        assert_eq!(one(&c, "DBSIZE"), Reply::Integer(2));
        assert_eq!(one(&c, "DEL a zz"), Reply::Integer(1));
        assert_eq!(one(&c, "DBSIZE"), Reply::Integer(1));
        assert_eq!(one(&c, "SELECT 0"), ok());
        assert!(matches!(one(&c, "GET"), Reply::Error(e) if e.contains("wrong number")));
        assert_eq!(f.stats.keyspace_hits.load(Relaxed), 1);
        assert_eq!(f.stats.keyspace_misses.load(Relaxed), 1);
        assert_eq!(f.stats.total_commands.load(Relaxed), 16);
    }

    #[test]
    fn version_gates_new_commands() {
        let f = fixture();
        let v1 = f.ctx(1, None);
        for line in [
            "LMOVE a b LEFT RIGHT",
            "RPOPLPUSH a b",
            "SMOVE a b m",
            "HINCRBY h f 1",
            "HLEN h",
            "HEXISTS h f",
        ] {
            assert!(
                matches!(one(&v1, line), Reply::Error(e) if e.contains("unknown command")),
                "{line}"
            );
        }
        let calls = CmdCalls::new();
        let v2 = f.ctx(2, Some(&calls));
        assert_eq!(one(&v2, "RPUSH l a b c"), Reply::Integer(3));
        assert_eq!(one(&v2, "RPOPLPUSH l l"), bulk("c"));
        assert_eq!(one(&v2, "LMOVE l m LEFT RIGHT"), bulk("c"));
        assert_eq!(
            one(&v2, "LMOVE l m UP RIGHT"),
            Reply::Error("ERR syntax error".into())
        );
        assert_eq!(
            one(&v2, "LRANGE l 0 -1"),
            Reply::Array(Some(vec![bulk("a"), bulk("b")]))
        );
        assert_eq!(one(&v2, "LMOVE m m RIGHT LEFT"), bulk("c"));
        assert_eq!(one(&v2, "RPOPLPUSH m l"), bulk("c"));
        assert_eq!(
            one(&v2, "EXISTS m"),
            Reply::Integer(0),
            "an emptied source is removed"
        );
        assert_eq!(one(&v2, "SADD s x y"), Reply::Integer(2));
        assert_eq!(one(&v2, "SMOVE s t x"), Reply::Integer(1));
        assert_eq!(one(&v2, "SMOVE s t x"), Reply::Integer(0));
        assert_eq!(
            one(&v2, "SMOVE s l y"),
            Reply::Error(
                "WRONGTYPE Operation against a key holding the wrong kind of value".into()
            )
        );
        assert_eq!(one(&v2, "SMOVE s s y"), Reply::Integer(1));
        assert_eq!(one(&v2, "SMOVE s t y"), Reply::Integer(1));
        assert_eq!(one(&v2, "EXISTS s"), Reply::Integer(0));
        assert_eq!(one(&v2, "HINCRBY h f 5"), Reply::Integer(5));
        assert_eq!(one(&v2, "HINCRBY h f -7"), Reply::Integer(-2));
        assert_eq!(
            one(&v2, "HINCRBY h f x"),
            Reply::Error("ERR value is not an integer or out of range".into())
        );
        assert_eq!(one(&v2, "HSET h g x"), Reply::Integer(1));
        assert_eq!(
            one(&v2, "HINCRBY h g 1"),
            Reply::Error("ERR hash value is not an integer".into())
        );
        assert_eq!(
            one(&v2, "HINCRBY h f 9223372036854775807"),
            Reply::Integer(9223372036854775805)
        );
        assert_eq!(
            one(&v2, "HINCRBY h f 9"),
            Reply::Error("ERR increment or decrement would overflow".into())
        );
        assert_eq!(one(&v2, "HLEN h"), Reply::Integer(2));
        assert_eq!(one(&v2, "HEXISTS h g"), Reply::Integer(1));
        assert_eq!(calls.calls[Cmd::Get as usize].load(Relaxed), 0);
    }

    #[test]
    fn info_fields() {
        let f = fixture();
        let cs = CmdStats::new();
        let c = f.ctx(3, Some(&cs));
        run(&c, b"SET k v\r\nGET k\r\n");
        let Reply::Bulk(Some(info)) = one(&c, "INFO") else {
            panic!()
        };
        let info = String::from_utf8(info).unwrap();
        assert!(info.contains("total_commands_processed:3\r\n"), "{info}");
        assert!(info.contains("dsu_kv_version:3\r\n"), "{info}");
        assert!(info.contains("db0:keys=1,"), "{info}");
        assert!(info.contains("cmdstat_set:calls=1,usec="), "{info}");
    }

    #[test]
    fn quit_closes() {
        let f = fixture();
        let c = f.ctx(1, None);
        let mut out = Vec::new();
        assert_eq!(execute(&c, &[b"QUIT"], &mut out), After::Close);
        assert_eq!(out, b"+OK\r\n");
    }
}
