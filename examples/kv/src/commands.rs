//! Command execution: one parsed request in, one RESP reply out.
//!
//! v1 implements PING, ECHO, GET, SET (with NX/XX), DEL, EXISTS, INCR, DBSIZE, INFO, and
//! the bits of CONFIG GET, COMMAND, SELECT and QUIT that `redis-cli` and `redis-benchmark`
//! send. v2 and v3 add INCRBY and APPEND. Every request, known or not, counts once in
//! [`Stats::total_commands`], in every version.

use crate::alloc::ServerAlloc;
use crate::keyspace::Keyspace;
use crate::resp;
use crate::stats::{Cmd, CommandStats, Stats};
use crate::table::{SetCond, Table};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Where the keys are.
#[derive(Clone, Copy)]
pub enum Store {
    /// The fixed table of strings, a shared global (`kv_v1`, `kv_v2`, `kv_v3`).
    Table(&'static Table),
    /// The keyspace of every Redis type ([`crate::engine`]'s commands), in
    /// [`ServerAlloc`] (`kv_local`).
    Keyspace(&'static Keyspace<ServerAlloc>),
}

impl Store {
    /// Keys stored.
    pub fn len(&self) -> usize {
        match self {
            Store::Table(t) => t.len(),
            Store::Keyspace(k) => k.counts().0,
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
    /// This program's version: 1, 2 or 3. INCRBY and APPEND need 2.
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

fn wrong_args(out: &mut Vec<u8>, cmd: Cmd) {
    resp::error(
        out,
        &format!("ERR wrong number of arguments for '{}' command", cmd.name()),
    );
}

/// Executes one request (`args` non-empty) and appends its reply to `out`.
pub fn execute(ctx: &Ctx, args: &[&[u8]], out: &mut Vec<u8>) -> After {
    let t0 = Instant::now();
    ctx.stats.total_commands.fetch_add(1, Relaxed);
    let table = match ctx.store {
        Store::Table(t) => t,
        Store::Keyspace(ks) => {
            return match crate::engine::execute(ks, ctx, args, out) {
                crate::engine::After::Continue => After::Continue,
                crate::engine::After::Close => After::Close,
            };
        }
    };
    let mut cmd = Cmd::parse(args[0]);
    if matches!(cmd, Cmd::Incrby | Cmd::Append) && ctx.version < 2 {
        cmd = Cmd::Unknown;
    }
    let after = dispatch(ctx, table, cmd, args, out);
    if let Some(cs) = ctx.cmd_stats {
        cs.record(cmd, t0.elapsed().as_nanos() as u64);
    }
    after
}

fn dispatch(
    ctx: &Ctx,
    table: &'static Table,
    cmd: Cmd,
    args: &[&[u8]],
    out: &mut Vec<u8>,
) -> After {
    let n = args.len();
    let arity_ok = match cmd {
        Cmd::Ping => n <= 2,
        Cmd::Echo | Cmd::Get | Cmd::Incr | Cmd::Select => n == 2,
        Cmd::Set => n >= 3,
        Cmd::Del | Cmd::Exists => n >= 2,
        Cmd::Dbsize | Cmd::Quit => n == 1,
        Cmd::Info | Cmd::Command => true,
        Cmd::Config => n >= 2,
        Cmd::Incrby | Cmd::Append => n == 3,
        Cmd::Unknown => true,
    };
    if !arity_ok {
        wrong_args(out, cmd);
        return After::Continue;
    }
    match cmd {
        Cmd::Ping if n == 2 => resp::bulk(out, args[1]),
        Cmd::Ping => resp::simple(out, "PONG"),
        Cmd::Echo => resp::bulk(out, args[1]),
        Cmd::Get => get(ctx, table, args[1], out),
        Cmd::Set => set(table, args, out),
        Cmd::Del => resp::integer(
            out,
            args[1..].iter().filter(|k| table.del(k)).count() as i64,
        ),
        Cmd::Exists => resp::integer(
            out,
            args[1..].iter().filter(|k| table.exists(k)).count() as i64,
        ),
        Cmd::Incr => incr_reply(table.incr_by(args[1], 1), out),
        Cmd::Incrby => match resp::parse_int(args[2]) {
            Some(d) => incr_reply(table.incr_by(args[1], d), out),
            None => resp::error(out, "ERR value is not an integer or out of range"),
        },
        Cmd::Append => match table.append(args[1], args[2]) {
            Ok(len) => resp::integer(out, len as i64),
            Err(e) => resp::error(out, &e.to_string()),
        },
        Cmd::Dbsize => resp::integer(out, table.len() as i64),
        Cmd::Info => resp::bulk(out, info(ctx, table.len(), 0, None).as_bytes()),
        Cmd::Config => config(args, out),
        // redis-cli asks for command docs when it starts interactively: none here.
        Cmd::Command => resp::array(out, 0),
        Cmd::Select if args[1] == b"0" => resp::simple(out, "OK"),
        Cmd::Select => resp::error(out, "ERR DB index is out of range"),
        Cmd::Quit => {
            resp::simple(out, "OK");
            return After::Close;
        }
        Cmd::Unknown => {
            let name = String::from_utf8_lossy(args[0]);
            resp::error(
                out,
                &format!("ERR unknown command '{name}', with args beginning with: "),
            );
        }
    }
    After::Continue
}

fn get(ctx: &Ctx, table: &'static Table, key: &[u8], out: &mut Vec<u8>) {
    let mut val = Vec::new();
    if table.get_into(key, &mut val) {
        ctx.stats.keyspace_hits.fetch_add(1, Relaxed);
        resp::bulk(out, &val);
    } else {
        ctx.stats.keyspace_misses.fetch_add(1, Relaxed);
        resp::null(out);
    }
}

fn set(table: &'static Table, args: &[&[u8]], out: &mut Vec<u8>) {
    let mut cond = SetCond::Always;
    for opt in &args[3..] {
        cond = match (opt.to_ascii_uppercase().as_slice(), cond) {
            (b"NX", SetCond::Always | SetCond::IfAbsent) => SetCond::IfAbsent,
            (b"XX", SetCond::Always | SetCond::IfPresent) => SetCond::IfPresent,
            _ => return resp::error(out, "ERR syntax error"),
        };
    }
    match table.set(args[1], args[2], cond) {
        Ok(true) => resp::simple(out, "OK"),
        Ok(false) => resp::null(out),
        Err(e) => resp::error(out, &e.to_string()),
    }
}

fn incr_reply(r: Result<i64, crate::table::TableError>, out: &mut Vec<u8>) {
    match r {
        Ok(v) => resp::integer(out, v),
        Err(e) => resp::error(out, &e.to_string()),
    }
}

/// CONFIG GET answers for what `redis-benchmark` asks at start (`save`, `appendonly`);
/// other parameters are unknown (empty array). CONFIG SET and RESETSTAT are accepted and
/// ignored.
fn config(args: &[&[u8]], out: &mut Vec<u8>) {
    let sub = args[1].to_ascii_uppercase();
    match sub.as_slice() {
        b"GET" if args.len() == 3 => {
            let known: [(&str, &str); 2] = [("save", ""), ("appendonly", "no")];
            let pat = args[2].to_ascii_lowercase();
            let hits: Vec<_> = known
                .iter()
                .filter(|(k, _)| pat == b"*" || k.as_bytes() == pat)
                .collect();
            resp::array(out, hits.len() * 2);
            for (k, v) in hits {
                resp::bulk(out, k.as_bytes());
                resp::bulk(out, v.as_bytes());
            }
        }
        b"SET" | b"RESETSTAT" => resp::simple(out, "OK"),
        _ => resp::error(
            out,
            "ERR unknown CONFIG subcommand or wrong number of arguments",
        ),
    }
}

impl crate::engine::Server for Ctx<'_> {
    fn info(&self, keys: usize, expires: usize, used_memory: usize, maxmemory: usize) -> String {
        info(self, keys, expires, Some((used_memory, maxmemory)))
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
        table: &'static Table,
        stats: Stats,
        clients: AtomicUsize,
    }

    fn fixture() -> Fixture {
        Fixture {
            table: Table::new_leaked(),
            stats: Stats::new(),
            clients: AtomicUsize::new(0),
        }
    }

    impl Fixture {
        fn ctx<'a>(&'a self, version: u32, cs: Option<&'a dyn CommandStats>) -> Ctx<'a> {
            Ctx {
                store: Store::Table(self.table),
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
        assert_eq!(
            one(&c, "SET a 2 PX"),
            Reply::Error("ERR syntax error".into())
        );
        assert_eq!(one(&c, "INCR a"), Reply::Integer(3));
        assert_eq!(one(&c, "INCR n"), Reply::Integer(1));
        assert_eq!(one(&c, "EXISTS a n zz a"), Reply::Integer(3));
        assert_eq!(one(&c, "DBSIZE"), Reply::Integer(2));
        assert_eq!(one(&c, "DEL a zz"), Reply::Integer(1));
        assert_eq!(one(&c, "DBSIZE"), Reply::Integer(1));
        assert_eq!(one(&c, "ECHO x"), bulk("x"));
        assert_eq!(one(&c, "SELECT 0"), ok());
        assert!(matches!(one(&c, "SELECT 1"), Reply::Error(_)));
        assert_eq!(one(&c, "COMMAND DOCS"), Reply::Array(Some(vec![])));
        assert!(matches!(one(&c, "GET"), Reply::Error(e) if e.contains("wrong number")));
        assert!(matches!(one(&c, "FLUSHALL"), Reply::Error(e) if e.contains("unknown command")));
        assert_eq!(f.stats.keyspace_hits.load(Relaxed), 1);
        assert_eq!(f.stats.keyspace_misses.load(Relaxed), 1);
        assert_eq!(f.stats.total_commands.load(Relaxed), 21);
    }

    #[test]
    fn version_gates_new_commands() {
        let f = fixture();
        let v1 = f.ctx(1, None);
        assert!(matches!(one(&v1, "INCRBY n 5"), Reply::Error(e) if e.contains("unknown command")));
        assert!(matches!(one(&v1, "APPEND s x"), Reply::Error(e) if e.contains("unknown command")));
        let calls = CmdCalls::new();
        let v2 = f.ctx(2, Some(&calls));
        assert_eq!(one(&v2, "INCRBY n 5"), Reply::Integer(5));
        assert_eq!(one(&v2, "INCRBY n -7"), Reply::Integer(-2));
        assert!(matches!(one(&v2, "INCRBY n x"), Reply::Error(_)));
        assert_eq!(one(&v2, "APPEND s ab"), Reply::Integer(2));
        assert_eq!(one(&v2, "APPEND s cd"), Reply::Integer(4));
        assert_eq!(one(&v2, "GET s"), bulk("abcd"));
        assert_eq!(calls.calls[Cmd::Incrby as usize].load(Relaxed), 3);
        assert_eq!(calls.calls[Cmd::Get as usize].load(Relaxed), 1);
    }

    #[test]
    fn config_get_for_redis_benchmark() {
        let f = fixture();
        let c = f.ctx(1, None);
        assert_eq!(
            one(&c, "CONFIG GET save"),
            Reply::Array(Some(vec![bulk("save"), bulk("")]))
        );
        assert_eq!(
            one(&c, "CONFIG GET appendonly"),
            Reply::Array(Some(vec![bulk("appendonly"), bulk("no")]))
        );
        assert_eq!(one(&c, "CONFIG GET maxmemory"), Reply::Array(Some(vec![])));
        assert!(matches!(one(&c, "CONFIG FOO"), Reply::Error(_)));
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
