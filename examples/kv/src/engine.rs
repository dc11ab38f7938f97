//! Redis's commands over the [`Keyspace`]: one parsed request in, one RESP2 reply out, with
//! the replies and error texts of Redis 7.0 (Debian's `redis-server` 7.0.15, which the
//! differential test `tests/differential.rs` and the VM test `kv::differential` compare
//! against, reply for reply).
//!
//! As in Redis, a request is checked in this order: the command exists (`-ERR unknown
//! command ...`), its arity (`-ERR wrong number of arguments for '<name>' command`), then,
//! for commands that may grow the keyspace, the memory limit (`-OOM command not allowed
//! when used memory > 'maxmemory'.`); then the command parses its arguments and looks up
//! its key, in the order Redis does (that order decides which error a request with two
//! faults gets).
//!
//! Differences from Redis, all outside what the differential test sends: ZRANGE knows only
//! ranks (no BYSCORE, BYLEX, LIMIT); expired keys are removed when touched, not also by a
//! background sweep; multi-key commands other than MSET are not atomic across stripes.

use crate::alloc::KvAlloc;
use crate::keyspace::{
    Db, Keyspace, ListRepr, Oom, STRIPES, Str, Value, ZSet, bytes_in, key_in, new_map, new_set,
    now_ms, stripe_of,
};
use crate::resp;
use allocator_api2::boxed::Box;

/// Redis's `proto-max-bulk-len`: the longest string a value may grow to.
pub const PROTO_MAX_BULK_LEN: usize = 512 << 20;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INT: &str = "ERR value is not an integer or out of range";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const SYNTAX: &str = "ERR syntax error";
/// The reply to a write refused for memory, Redis's text.
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
const OVERFLOW: &str = "ERR increment or decrement would overflow";
const NOT_POSITIVE: &str = "ERR value is out of range, must be positive";
const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// A command the engine knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Command {
    Ping,
    Echo,
    Get,
    Set,
    Incr,
    Decr,
    Incrby,
    Decrby,
    Mset,
    Mget,
    Del,
    Exists,
    Append,
    Strlen,
    Lpush,
    Rpush,
    Lpop,
    Rpop,
    Lrange,
    Llen,
    Lindex,
    Sadd,
    Srem,
    Spop,
    Smembers,
    Sismember,
    Scard,
    Hset,
    Hget,
    Hgetall,
    Hdel,
    Zadd,
    Zpopmin,
    Zrange,
    Zscore,
    Expire,
    Pexpire,
    Ttl,
    Pttl,
    Persist,
    Type,
    Dbsize,
    Flushall,
    Info,
    Command,
    Config,
    Select,
    Quit,
    Lmove,
    Rpoplpush,
    Smove,
    Hincrby,
    Hlen,
    Hexists,
}

/// A command's facts from Redis's command table.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The command.
    pub cmd: Command,
    /// Its lower-case name.
    pub name: &'static str,
    /// Redis's arity: `n` exactly n arguments (the name included), `-n` at least n.
    pub arity: i32,
    /// Whether it may grow the keyspace (Redis's `denyoom`): refused past the memory limit.
    pub denyoom: bool,
}

macro_rules! specs {
    ($($cmd:ident $name:literal $arity:literal $oom:literal),* $(,)?) => {
        /// Every command, with its name, arity and `denyoom` flag.
        pub const SPECS: &[Spec] = &[
            $(Spec { cmd: Command::$cmd, name: $name, arity: $arity, denyoom: $oom },)*
        ];
    };
}

specs! {
    Ping "ping" -1 false, Echo "echo" 2 false, Get "get" 2 false, Set "set" -3 true,
    Incr "incr" 2 true, Decr "decr" 2 true, Incrby "incrby" 3 true, Decrby "decrby" 3 true,
    Mset "mset" -3 true, Mget "mget" -2 false, Del "del" -2 false, Exists "exists" -2 false,
    Append "append" 3 true, Strlen "strlen" 2 false,
    Lpush "lpush" -3 true, Rpush "rpush" -3 true, Lpop "lpop" -2 false, Rpop "rpop" -2 false,
    Lrange "lrange" 4 false, Llen "llen" 2 false, Lindex "lindex" 3 false,
    Sadd "sadd" -3 true, Srem "srem" -3 false, Spop "spop" -2 false,
    Smembers "smembers" 2 false, Sismember "sismember" 3 false, Scard "scard" 2 false,
    Hset "hset" -4 true, Hget "hget" 3 false, Hgetall "hgetall" 2 false, Hdel "hdel" -3 false,
    Zadd "zadd" -4 true, Zpopmin "zpopmin" -2 false, Zrange "zrange" -4 false,
    Zscore "zscore" 3 false,
    Expire "expire" -3 false, Pexpire "pexpire" -3 false, Ttl "ttl" 2 false,
    Pttl "pttl" 2 false, Persist "persist" 2 false, Type "type" 2 false,
    Dbsize "dbsize" 1 false, Flushall "flushall" -1 false, Info "info" -1 false,
    Command "command" -1 false, Config "config" -2 false, Select "select" 2 false,
    Quit "quit" -1 false,
    Lmove "lmove" 5 true, Rpoplpush "rpoplpush" 3 true, Smove "smove" 4 false,
    Hincrby "hincrby" 4 true, Hlen "hlen" 2 false, Hexists "hexists" 3 false,
}

/// The first version of the server that has `cmd` (v2 added the list, set and hash moves
/// and counters); an older version answers it as an unknown command.
///
/// ```
/// use dsu_kv::engine::{Command, since};
/// assert_eq!(since(Command::Get), 1);
/// assert_eq!(since(Command::Lmove), 2);
/// ```
pub fn since(cmd: Command) -> u32 {
    use Command as C;
    match cmd {
        C::Lmove | C::Rpoplpush | C::Smove | C::Hincrby | C::Hlen | C::Hexists => 2,
        _ => 1,
    }
}

/// The command named `name` (any case).
///
/// ```
/// assert_eq!(dsu_kv::engine::lookup(b"zPopMin").unwrap().name, "zpopmin");
/// assert!(dsu_kv::engine::lookup(b"xadd").is_none());
/// ```
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    SPECS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// What the connection does after the reply.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum After {
    /// Read the next request.
    Continue,
    /// Send the reply, then close (QUIT).
    Close,
}

/// What the engine needs beyond the keyspace: INFO's text and the hit counters.
pub trait Server {
    /// The INFO reply's text, given the keyspace's key and expiry counts and the memory
    /// figures.
    fn info(&self, keys: usize, expires: usize, used_memory: usize, maxmemory: usize) -> String;
    /// Counts a key lookup of GET: found or not.
    fn keyspace_hit(&self, hit: bool);
    /// The server's version: commands of later versions ([`since`]) are unknown to it.
    fn version(&self) -> u32 {
        u32::MAX
    }
}

/// Appends an error reply whose text holds client bytes (Redis copies them raw, with CR
/// and LF made spaces).
fn error_bytes(out: &mut std::vec::Vec<u8>, msg: &[u8]) {
    out.push(b'-');
    out.extend(
        msg.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// A C string's view of `b`: up to its first NUL (Redis formats names with `%s`).
fn c_str(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

fn unknown_command(out: &mut std::vec::Vec<u8>, args: &[&[u8]]) {
    let name = c_str(args[0]);
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(&name[..name.len().min(128)]);
    msg.extend_from_slice(b"', with args beginning with: ");
    let mut listed: std::vec::Vec<u8> = std::vec::Vec::new();
    for a in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let a = c_str(a);
        let room = 128 - listed.len();
        listed.push(b'\'');
        listed.extend_from_slice(&a[..a.len().min(room)]);
        listed.extend_from_slice(b"' ");
    }
    msg.extend_from_slice(&listed);
    error_bytes(out, &msg);
}

fn wrong_args(out: &mut std::vec::Vec<u8>, name: &str) {
    resp::error(
        out,
        &format!("ERR wrong number of arguments for '{name}' command"),
    );
}

/// Parses an integer as Redis's `string2ll` does: an optional `-`, then digits with no
/// leading zero (except `0` itself), nothing else.
///
/// ```
/// use dsu_kv::engine::parse_ll;
/// assert_eq!(parse_ll(b"-12"), Some(-12));
/// assert_eq!(parse_ll(b"012"), None);
/// assert_eq!(parse_ll(b"-0"), None);
/// assert_eq!(parse_ll(b"+1"), None);
/// ```
pub fn parse_ll(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    match digits.first() {
        Some(b'1'..=b'9') => resp::parse_int(s),
        _ => None,
    }
}

/// Parses a score as Redis's `getDoubleFromObject` (`strtod`, whole string, not NaN, no
/// leading space).
///
/// ```
/// use dsu_kv::engine::parse_double;
/// assert_eq!(parse_double(b"1.5"), Some(1.5));
/// assert_eq!(parse_double(b"-inf"), Some(f64::NEG_INFINITY));
/// assert_eq!(parse_double(b"nan"), None);
/// assert_eq!(parse_double(b" 1"), None);
/// ```
pub fn parse_double(s: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(s).ok()?;
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    // strtod's ERANGE, which Redis refuses: overflow to infinity from digits, underflow
    // to zero from a non-zero mantissa.
    let digits = s.split(['e', 'E']).next().unwrap_or("");
    let literal_inf = s.trim_start_matches(['+', '-']).starts_with(['i', 'I']);
    let overflow = v.is_infinite() && !literal_inf;
    let underflow = v == 0.0 && digits.bytes().any(|b| (b'1'..=b'9').contains(&b));
    (!v.is_nan() && !overflow && !underflow).then_some(v)
}

/// Formats a score as Redis 7.0's `addReplyDouble` does for RESP2: `inf`/`-inf`, else
/// printf's `%.17g`.
///
/// ```
/// use dsu_kv::engine::format_double;
/// assert_eq!(format_double(1.5), "1.5");
/// assert_eq!(format_double(0.1), "0.10000000000000001");
/// assert_eq!(format_double(1e17), "1e+17");
/// assert_eq!(format_double(-0.00001), "-1.0000000000000001e-05");
/// assert_eq!(format_double(f64::INFINITY), "inf");
/// ```
pub fn format_double(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    // %.17g: 17 significant digits; the exponent X of the %e form picks fixed notation
    // when -4 <= X < 17; trailing zeros and a bare point are removed.
    let e = format!("{v:.16e}");
    let (mantissa, exp) = e.split_once('e').expect("{:e} has an exponent");
    let x: i32 = exp.parse().expect("{:e} exponent is an integer");
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if (-4..17).contains(&x) {
        trim(&format!("{v:.*}", (16 - x) as usize))
    } else {
        let sign = if x < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), x.abs())
    }
}

fn bulk_double(out: &mut std::vec::Vec<u8>, v: f64) {
    resp::bulk(out, format_double(v).as_bytes());
}

/// Replies `WRONGTYPE` and returns from the command when the value is of another type.
macro_rules! typed {
    ($out:expr, $entry:expr, $variant:ident) => {
        match $entry {
            None => None,
            Some(Value::$variant(v)) => Some(v),
            Some(_) => return resp::error($out, WRONGTYPE),
        }
    };
}

/// A request being executed.
struct Call<'a, A: KvAlloc, L: ListRepr<A>, S: Server + ?Sized> {
    ks: &'static Keyspace<A, L>,
    server: &'a S,
    args: &'a [&'a [u8]],
    out: &'a mut std::vec::Vec<u8>,
}

/// Executes one request (`args` non-empty) against `ks` and appends its reply to `out`.
///
/// A request that needs a stripe a newer version took over unwinds with a
/// [`Moved`](crate::keyspace::Moved) payload before changing anything (the server forwards
/// it).
pub fn execute<A: KvAlloc, L: ListRepr<A>, S: Server + ?Sized>(
    ks: &'static Keyspace<A, L>,
    server: &S,
    args: &[&[u8]],
    out: &mut std::vec::Vec<u8>,
) -> After {
    let Some(spec) = lookup(args[0]).filter(|s| since(s.cmd) <= server.version()) else {
        unknown_command(out, args);
        return After::Continue;
    };
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || n < -spec.arity {
        wrong_args(out, spec.name);
        return After::Continue;
    }
    if spec.denyoom {
        let a = A::HANDLE;
        if a.used_bytes() > a.limit_bytes() - a.limit_bytes() / 64 {
            resp::error(out, OOM);
            return After::Continue;
        }
    }
    let mut c = Call {
        ks,
        server,
        args,
        out,
    };
    if spec.cmd == Command::Quit {
        resp::simple(c.out, "OK");
        return After::Close;
    }
    c.run(spec.cmd);
    After::Continue
}

impl<A: KvAlloc, L: ListRepr<A>, S: Server + ?Sized> Call<'_, A, L, S> {
    fn run(&mut self, cmd: Command) {
        use Command as C;
        let args = self.args;
        match cmd {
            C::Ping if args.len() > 2 => wrong_args(self.out, "ping"),
            C::Ping if args.len() == 2 => resp::bulk(self.out, args[1]),
            C::Ping => resp::simple(self.out, "PONG"),
            C::Echo => resp::bulk(self.out, args[1]),
            C::Get => self.get(),
            C::Set => self.set(),
            C::Incr => self.incr_by(Some(1)),
            C::Decr => self.incr_by(Some(-1)),
            C::Incrby => match parse_ll(args[2]) {
                Some(d) => self.incr_by(Some(d)),
                None => resp::error(self.out, NOT_INT),
            },
            C::Decrby => match parse_ll(args[2]) {
                Some(i64::MIN) => resp::error(self.out, "ERR decrement would overflow"),
                Some(d) => self.incr_by(Some(-d)),
                None => resp::error(self.out, NOT_INT),
            },
            C::Mset => self.mset(),
            C::Mget => self.mget(),
            C::Del => {
                // Every stripe first (a request forwarded to a newer version must not
                // have deleted anything here), which also makes DEL atomic.
                let (stripes, mut guards) = self.ks.lock_keys(args[1..].iter().copied());
                let n = args[1..]
                    .iter()
                    .filter(|k| {
                        let db = &mut guards[stripes.binary_search(&stripe_of(k)).expect("locked")];
                        db.get(k).is_some() && db.remove(k)
                    })
                    .count();
                resp::integer(self.out, n as i64)
            }
            C::Exists => {
                let n = args[1..]
                    .iter()
                    .filter(|k| self.ks.lock_key(k).get(k).is_some())
                    .count();
                resp::integer(self.out, n as i64)
            }
            C::Append => self.append(),
            C::Strlen => {
                let mut db = self.ks.lock_key(args[1]);
                let v = typed!(self.out, db.get(args[1]), Str);
                resp::integer(self.out, v.map_or(0, |v| v.len()) as i64)
            }
            C::Lpush => self.push(true),
            C::Rpush => self.push(false),
            C::Lpop => self.pop(true),
            C::Rpop => self.pop(false),
            C::Lrange => self.lrange(),
            C::Llen => {
                let mut db = self.ks.lock_key(args[1]);
                let l = typed!(self.out, db.get(args[1]), List);
                resp::integer(self.out, l.map_or(0, |l| l.len()) as i64)
            }
            C::Lindex => self.lindex(),
            C::Sadd => self.sadd(),
            C::Srem => self.srem(),
            C::Spop => self.spop(),
            C::Smembers => {
                let mut db = self.ks.lock_key(args[1]);
                let Some(s) = typed!(self.out, db.get(args[1]), Set) else {
                    return resp::array(self.out, 0);
                };
                resp::array(self.out, s.len());
                for m in s.iter() {
                    resp::bulk(self.out, m);
                }
            }
            C::Sismember => {
                let mut db = self.ks.lock_key(args[1]);
                let s = typed!(self.out, db.get(args[1]), Set);
                let is = s.is_some_and(|s| s.contains(args[2]));
                resp::integer(self.out, is as i64)
            }
            C::Scard => {
                let mut db = self.ks.lock_key(args[1]);
                let s = typed!(self.out, db.get(args[1]), Set);
                resp::integer(self.out, s.map_or(0, |s| s.len()) as i64)
            }
            C::Hset => self.hset(),
            C::Hget => {
                let mut db = self.ks.lock_key(args[1]);
                let h = typed!(self.out, db.get(args[1]), Hash);
                match h.and_then(|h| h.get(args[2])) {
                    Some(v) => resp::bulk(self.out, v),
                    None => resp::null(self.out),
                }
            }
            C::Hgetall => {
                let mut db = self.ks.lock_key(args[1]);
                let Some(h) = typed!(self.out, db.get(args[1]), Hash) else {
                    return resp::array(self.out, 0);
                };
                resp::array(self.out, h.len() * 2);
                for (f, v) in h.iter() {
                    resp::bulk(self.out, f);
                    resp::bulk(self.out, v);
                }
            }
            C::Hdel => self.hdel(),
            C::Zadd => self.zadd(),
            C::Zpopmin => self.zpopmin(),
            C::Zrange => self.zrange(),
            C::Zscore => {
                let mut db = self.ks.lock_key(args[1]);
                let z = typed!(self.out, db.get(args[1]), ZSet);
                match z.and_then(|z| z.score(args[2])) {
                    Some(s) => bulk_double(self.out, s),
                    None => resp::null(self.out),
                }
            }
            C::Expire => self.expire(1000),
            C::Pexpire => self.expire(1),
            C::Ttl => self.ttl(1000),
            C::Pttl => self.ttl(1),
            C::Persist => {
                let mut db = self.ks.lock_key(args[1]);
                let had = db.get(args[1]).is_some() && db.expiry(args[1]) != 0;
                if had {
                    let _ = db.set_expiry(args[1], 0);
                }
                resp::integer(self.out, had as i64)
            }
            C::Type => {
                let mut db = self.ks.lock_key(args[1]);
                let t = db.get(args[1]).map_or("none", |e| e.type_name());
                resp::simple(self.out, t)
            }
            C::Dbsize => resp::integer(self.out, self.ks.counts().0 as i64),
            C::Flushall => {
                let ok = args.len() == 1
                    || (args.len() == 2
                        && (args[1].eq_ignore_ascii_case(b"sync")
                            || args[1].eq_ignore_ascii_case(b"async")));
                if !ok {
                    return resp::error(self.out, SYNTAX);
                }
                let mut all: std::vec::Vec<_> = (0..STRIPES).map(|i| self.ks.lock(i)).collect();
                all.iter_mut().for_each(|db| db.clear());
                resp::simple(self.out, "OK")
            }
            C::Info => {
                let (keys, expires) = self.ks.counts();
                let a = A::HANDLE;
                let text = self
                    .server
                    .info(keys, expires, a.used_bytes(), a.limit_bytes());
                resp::bulk(self.out, text.as_bytes())
            }
            // redis-cli asks for command docs when it starts interactively: none here.
            C::Command => resp::array(self.out, 0),
            C::Config => self.config(),
            C::Select if args[1] == b"0" => resp::simple(self.out, "OK"),
            C::Select => resp::error(self.out, "ERR DB index is out of range"),
            C::Quit => resp::simple(self.out, "OK"),
            C::Lmove => {
                let side = |a: &[u8]| {
                    (a.eq_ignore_ascii_case(b"left") || a.eq_ignore_ascii_case(b"right"))
                        .then(|| a.eq_ignore_ascii_case(b"left"))
                };
                match (side(args[3]), side(args[4])) {
                    (Some(from), Some(to)) => self.lmove(from, to),
                    _ => resp::error(self.out, SYNTAX),
                }
            }
            C::Rpoplpush => self.lmove(false, true),
            C::Smove => self.smove(),
            C::Hincrby => self.hincrby(),
            C::Hlen => {
                let mut db = self.ks.lock_key(args[1]);
                let h = typed!(self.out, db.get(args[1]), Hash);
                resp::integer(self.out, h.map_or(0, |h| h.len()) as i64)
            }
            C::Hexists => {
                let mut db = self.ks.lock_key(args[1]);
                let h = typed!(self.out, db.get(args[1]), Hash);
                resp::integer(self.out, h.is_some_and(|h| h.contains_key(args[2])) as i64)
            }
        }
    }

    /// LMOVE and RPOPLPUSH (Redis's `lmoveGenericCommand`): the element is pushed onto
    /// the destination before it is popped from the source, so that a destination
    /// without memory leaves both lists as they were (and a rotation of one list works
    /// the same).
    fn lmove(&mut self, from_left: bool, to_left: bool) {
        let (src, dst) = (self.args[1], self.args[2]);
        let (stripes, mut guards) = self.ks.lock_keys([src, dst].into_iter());
        let at = |k: &[u8]| stripes.binary_search(&stripe_of(k)).expect("locked");
        let (si, di) = (at(src), at(dst));
        let value: std::vec::Vec<u8> = match guards[si].get(src) {
            None => return resp::null(self.out),
            Some(Value::List(l)) => {
                let i = if from_left { 0 } else { l.len() - 1 };
                l.get(i).expect("lists are never empty").to_vec()
            }
            Some(_) => return resp::error(self.out, WRONGTYPE),
        };
        let make = || Ok(Value::List(Box::try_new_in(L::new(), A::HANDLE)?));
        let Some(Value::List(d)) = Self::create(self.out, &mut guards[di], dst, make, "list")
        else {
            return;
        };
        if d.push(to_left, &value).is_err() {
            Self::drop_if_empty(&mut guards[di], dst);
            return resp::error(self.out, OOM);
        }
        if let Some(Value::List(l)) = guards[si].get(src) {
            l.pop(from_left);
        }
        Self::drop_if_empty(&mut guards[si], src);
        resp::bulk(self.out, &value)
    }

    /// SMOVE (Redis's `smoveCommand`, in its order of checks).
    fn smove(&mut self) {
        let (src, dst, member) = (self.args[1], self.args[2], self.args[3]);
        let (stripes, mut guards) = self.ks.lock_keys([src, dst].into_iter());
        let at = |k: &[u8]| stripes.binary_search(&stripe_of(k)).expect("locked");
        let (si, di) = (at(src), at(dst));
        let dst_type = guards[di].get(dst).map(|v| v.type_name());
        let has = match guards[si].get(src) {
            None => return resp::integer(self.out, 0),
            Some(Value::Set(s)) if dst_type.is_none_or(|t| t == "set") => s.contains(member),
            Some(_) => return resp::error(self.out, WRONGTYPE),
        };
        if src == dst || !has {
            return resp::integer(self.out, has as i64);
        }
        let make = || Ok(Value::Set(Box::try_new_in(new_set(), A::HANDLE)?));
        let Some(Value::Set(d)) = Self::create(self.out, &mut guards[di], dst, make, "set") else {
            return;
        };
        if !d.contains(member) {
            let r = d
                .try_reserve(1)
                .map_err(Oom::from)
                .and_then(|()| key_in(member));
            match r {
                Ok(m) => {
                    d.insert(m);
                }
                Err(Oom) => {
                    Self::drop_if_empty(&mut guards[di], dst);
                    return resp::error(self.out, OOM);
                }
            }
        }
        if let Some(Value::Set(s)) = guards[si].get(src) {
            s.remove(member);
        }
        Self::drop_if_empty(&mut guards[si], src);
        resp::integer(self.out, 1)
    }

    /// HINCRBY (Redis's `hincrbyCommand`).
    fn hincrby(&mut self) {
        let (key, field) = (self.args[1], self.args[2]);
        let Some(incr) = parse_ll(self.args[3]) else {
            return resp::error(self.out, NOT_INT);
        };
        let mut db = self.ks.lock_key(key);
        let make = || Ok(Value::Hash(Box::try_new_in(new_map(), A::HANDLE)?));
        let Some(Value::Hash(h)) = Self::create(self.out, &mut db, key, make, "hash") else {
            return;
        };
        let old = match h.get(field) {
            None => 0,
            Some(v) => match parse_ll(v) {
                Some(n) => n,
                None => return resp::error(self.out, "ERR hash value is not an integer"),
            },
        };
        let Some(new) = old.checked_add(incr) else {
            Self::drop_if_empty(&mut db, key);
            return resp::error(self.out, OVERFLOW);
        };
        let text = new.to_string();
        let r = match h.get_mut(field) {
            Some(v) => bytes_in::<A>(text.as_bytes()).map(|n| *v = n),
            None => h.try_reserve(1).map_err(Oom::from).and_then(|()| {
                h.insert(key_in(field)?, bytes_in(text.as_bytes())?);
                Ok(())
            }),
        };
        if r.is_err() {
            Self::drop_if_empty(&mut db, key);
            return resp::error(self.out, OOM);
        }
        resp::integer(self.out, new)
    }

    fn get(&mut self) {
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let v = typed!(self.out, db.get(key), Str);
        self.server.keyspace_hit(v.is_some());
        match v {
            Some(v) => resp::bulk(self.out, v),
            None => resp::null(self.out),
        }
    }

    fn set(&mut self) {
        let args = self.args;
        let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
        // (value, milliseconds per unit, absolute)
        let mut expire: Option<(&[u8], i64, bool)> = None;
        let mut j = 3;
        while j < args.len() {
            let opt = args[j];
            let has_next = j + 1 < args.len();
            let is = |s: &str| opt.eq_ignore_ascii_case(s.as_bytes());
            if is("nx") && !xx {
                nx = true;
            } else if is("xx") && !nx {
                xx = true;
            } else if is("get") {
                get = true;
            } else if is("keepttl") && expire.is_none() {
                keepttl = true;
            } else if !keepttl
                && has_next
                && let Some(unit) = [("ex", 1000, false), ("px", 1, false), ("exat", 1000, true)]
                    .into_iter()
                    .chain([("pxat", 1, true)])
                    .find(|(n, ..)| is(n))
                    .filter(|u| expire.is_none_or(|(_, m, a)| (m, a) == (u.1, u.2)))
            {
                expire = Some((args[j + 1], unit.1, unit.2));
                j += 1;
            } else {
                return resp::error(self.out, SYNTAX);
            }
            j += 1;
        }
        let mut at = 0u64;
        if let Some((v, unit, absolute)) = expire {
            let Some(n) = parse_ll(v) else {
                return resp::error(self.out, NOT_INT);
            };
            let invalid = || "ERR invalid expire time in 'set' command";
            if n <= 0 || (unit == 1000 && n > i64::MAX / 1000) {
                return resp::error(self.out, invalid());
            }
            let ms = n * unit;
            let now = now_ms() as i64;
            if !absolute && ms > i64::MAX - now {
                return resp::error(self.out, invalid());
            }
            at = if absolute {
                ms as u64
            } else {
                (ms + now) as u64
            };
        }
        let key = args[1];
        let mut db = self.ks.lock_key(key);
        let keep = db.expiry(key);
        let old = db.get(key);
        let found = old.is_some();
        if get {
            match typed!(self.out, old, Str) {
                Some(v) => resp::bulk(self.out, v),
                None => resp::null(self.out),
            }
        }
        if (nx && found) || (xx && !found) {
            if !get {
                resp::null(self.out);
            }
            return;
        }
        let expire_at = if keepttl { keep } else { at };
        if Value::str(args[2])
            .and_then(|v| db.set(key, v, expire_at))
            .is_err()
        {
            return self.oom(get);
        }
        if !get {
            resp::simple(self.out, "OK");
        }
    }

    /// Replies `-OOM`, unless a reply was already given (SET ... GET).
    fn oom(&mut self, replied: bool) {
        if !replied {
            resp::error(self.out, OOM);
        }
    }

    /// INCR and friends: `delta` is the increment, already parsed.
    fn incr_by(&mut self, delta: Option<i64>) {
        let delta = delta.expect("parsed");
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let entry = db.get(key);
        let old = match typed!(self.out, entry, Str) {
            None => 0,
            Some(v) => match parse_ll(v) {
                Some(n) if v.len() <= 20 => n,
                _ => return resp::error(self.out, NOT_INT),
            },
        };
        let Some(new) = old.checked_add(delta) else {
            return resp::error(self.out, OVERFLOW);
        };
        let text = new.to_string();
        // In place when the key exists: INCR keeps its expiry.
        let r = match db.get(key) {
            Some(Value::Str(v)) => Str::new(text.as_bytes()).map(|n| *v = n),
            _ => Value::str(text.as_bytes()).and_then(|v| db.set(key, v, 0)),
        };
        if r.is_err() {
            return resp::error(self.out, OOM);
        }
        resp::integer(self.out, new)
    }

    fn mset(&mut self) {
        let args = self.args;
        if args.len() % 2 == 0 {
            return wrong_args(self.out, "mset");
        }
        // All the stripes, in index order (the lock order), for an atomic MSET.
        let (stripes, mut guards) = self.ks.lock_keys(args[1..].iter().step_by(2).copied());
        let mut failed = false;
        for pair in args[1..].chunks(2) {
            let g = stripes.binary_search(&stripe_of(pair[0])).expect("locked");
            let db: &mut Db<A, L> = &mut guards[g];
            let r = Value::str(pair[1]).and_then(|v| db.set(pair[0], v, 0));
            failed |= r.is_err();
        }
        if failed {
            resp::error(self.out, OOM)
        } else {
            resp::simple(self.out, "OK")
        }
    }

    fn mget(&mut self) {
        let keys = &self.args[1..];
        resp::array(self.out, keys.len());
        for k in keys {
            let mut db = self.ks.lock_key(k);
            match db.get(k) {
                Some(Value::Str(v)) => resp::bulk(self.out, v),
                _ => resp::null(self.out),
            }
        }
    }

    fn append(&mut self) {
        let (key, suffix) = (self.args[1], self.args[2]);
        let mut db = self.ks.lock_key(key);
        match typed!(self.out, db.get(key), Str) {
            Some(v) => {
                if v.len() + suffix.len() > PROTO_MAX_BULK_LEN {
                    return resp::error(self.out, TOO_BIG);
                }
                // A new string of the joint length (strings are exact-size blocks); in
                // place, so the expiry stays.
                let Ok(joined) = Str::concat(&[v, suffix]) else {
                    return resp::error(self.out, OOM);
                };
                *v = joined;
                resp::integer(self.out, v.len() as i64)
            }
            None => {
                let r = Value::str(suffix).and_then(|v| db.set(key, v, 0));
                match r {
                    Ok(()) => resp::integer(self.out, suffix.len() as i64),
                    Err(Oom) => resp::error(self.out, OOM),
                }
            }
        }
    }

    /// Gets the container of `key` of the type `make` builds, creating it when missing.
    /// `Ok(None)` after a WRONGTYPE or OOM reply.
    fn create<'d>(
        out: &mut std::vec::Vec<u8>,
        db: &'d mut Db<A, L>,
        key: &[u8],
        make: impl FnOnce() -> Result<Value<A, L>, Oom>,
        type_name: &str,
    ) -> Option<&'d mut Value<A, L>> {
        if db.get(key).is_none() {
            let r = make().and_then(|value| db.set(key, value, 0));
            if r.is_err() {
                resp::error(out, OOM);
                return None;
            }
        }
        let e = db.get(key).expect("just made");
        if e.type_name() != type_name {
            resp::error(out, WRONGTYPE);
            return None;
        }
        Some(e)
    }

    /// Removes `key` when its container became empty (Redis never keeps an empty one).
    fn drop_if_empty(db: &mut Db<A, L>, key: &[u8]) {
        let empty = match db.get(key) {
            Some(Value::List(l)) => l.is_empty(),
            Some(Value::Set(s)) => s.is_empty(),
            Some(Value::Hash(h)) => h.is_empty(),
            Some(Value::ZSet(z)) => z.is_empty(),
            _ => false,
        };
        if empty {
            db.remove(key);
        }
    }

    fn push(&mut self, left: bool) {
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let make = || Ok(Value::List(Box::try_new_in(L::new(), A::HANDLE)?));
        let Some(Value::List(l)) = Self::create(self.out, &mut db, key, make, "list") else {
            return;
        };
        for v in &self.args[2..] {
            if l.push(left, v).is_err() {
                Self::drop_if_empty(&mut db, key);
                return resp::error(self.out, OOM);
            }
        }
        resp::integer(self.out, l.len() as i64)
    }

    /// Parses the COUNT of LPOP, RPOP, SPOP and ZPOPMIN: `Err(())` after the error reply.
    fn positive_count(&mut self, i: usize) -> Result<Option<usize>, ()> {
        let Some(&arg) = self.args.get(i) else {
            return Ok(None);
        };
        // Redis's getPositiveLongFromObjectOrReply: one message for both faults.
        match parse_ll(arg) {
            Some(n) if n >= 0 => Ok(Some(n as usize)),
            _ => {
                resp::error(self.out, NOT_POSITIVE);
                Err(())
            }
        }
    }

    fn pop(&mut self, left: bool) {
        if self.args.len() > 3 {
            return wrong_args(self.out, if left { "lpop" } else { "rpop" });
        }
        let Ok(count) = self.positive_count(2) else {
            return;
        };
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let Some(l) = typed!(self.out, db.get(key), List) else {
            return match count {
                Some(_) => self.out.extend_from_slice(b"*-1\r\n"),
                None => resp::null(self.out),
            };
        };
        match count {
            None => {
                let v = l.pop(left).expect("lists are never empty");
                resp::bulk(self.out, &v);
            }
            Some(0) => resp::array(self.out, 0),
            Some(n) => {
                let n = n.min(l.len());
                resp::array(self.out, n);
                for _ in 0..n {
                    let v = l.pop(left).expect("counted");
                    resp::bulk(self.out, &v);
                }
            }
        }
        Self::drop_if_empty(&mut db, key);
    }

    fn lrange(&mut self) {
        let (Some(start), Some(stop)) = (parse_ll(self.args[2]), parse_ll(self.args[3])) else {
            return resp::error(self.out, NOT_INT);
        };
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let Some(l) = typed!(self.out, db.get(key), List) else {
            return resp::array(self.out, 0);
        };
        match rank_range(start, stop, l.len()) {
            None => resp::array(self.out, 0),
            Some((a, b)) => {
                resp::array(self.out, b - a + 1);
                for v in l.range(a, b) {
                    resp::bulk(self.out, v);
                }
            }
        }
    }

    fn lindex(&mut self) {
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let Some(l) = typed!(self.out, db.get(key), List) else {
            return resp::null(self.out);
        };
        let Some(i) = parse_ll(self.args[2]) else {
            return resp::error(self.out, NOT_INT);
        };
        let i = if i < 0 { i + l.len() as i64 } else { i };
        match usize::try_from(i).ok().and_then(|i| l.get(i)) {
            Some(v) => resp::bulk(self.out, v),
            None => resp::null(self.out),
        }
    }

    fn sadd(&mut self) {
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let make = || Ok(Value::Set(Box::try_new_in(new_set(), A::HANDLE)?));
        let Some(Value::Set(s)) = Self::create(self.out, &mut db, key, make, "set") else {
            return;
        };
        let mut added = 0;
        for m in &self.args[2..] {
            if s.contains(*m) {
                continue;
            }
            let r = s.try_reserve(1).map_err(Oom::from).and_then(|()| key_in(m));
            match r {
                Ok(m) => {
                    s.insert(m);
                    added += 1;
                }
                Err(Oom) => {
                    Self::drop_if_empty(&mut db, key);
                    return resp::error(self.out, OOM);
                }
            }
        }
        resp::integer(self.out, added)
    }

    fn srem(&mut self) {
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let Some(s) = typed!(self.out, db.get(key), Set) else {
            return resp::integer(self.out, 0);
        };
        let n = self.args[2..].iter().filter(|m| s.remove(**m)).count();
        Self::drop_if_empty(&mut db, key);
        resp::integer(self.out, n as i64)
    }

    fn spop(&mut self) {
        if self.args.len() > 3 {
            return resp::error(self.out, SYNTAX);
        }
        let Ok(count) = self.positive_count(2) else {
            return;
        };
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let Some(s) = typed!(self.out, db.get(key), Set) else {
            return match count {
                Some(_) => resp::array(self.out, 0),
                None => resp::null(self.out),
            };
        };
        let n = count.unwrap_or(1).min(s.len());
        // A member from a random place in the table: start the walk at a random bucket
        // offset (hashbrown's iteration order is the table's).
        let skip = random_below(s.len());
        let picked: std::vec::Vec<std::vec::Vec<u8>> = s
            .iter()
            .cycle()
            .skip(skip)
            .take(n)
            .map(|m| m.to_vec())
            .collect();
        for m in &picked {
            s.remove(&m[..]);
        }
        if count.is_some() {
            resp::array(self.out, picked.len());
        }
        for m in &picked {
            resp::bulk(self.out, m);
        }
        Self::drop_if_empty(&mut db, key);
    }

    fn hset(&mut self) {
        if self.args.len() % 2 == 1 {
            return wrong_args(self.out, "hset");
        }
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let make = || Ok(Value::Hash(Box::try_new_in(new_map(), A::HANDLE)?));
        let Some(Value::Hash(h)) = Self::create(self.out, &mut db, key, make, "hash") else {
            return;
        };
        let mut created = 0;
        for pair in self.args[2..].chunks(2) {
            let r = match h.get_mut(pair[0]) {
                Some(v) => {
                    v.clear();
                    v.try_reserve(pair[1].len())
                        .map(|()| v.extend_from_slice(pair[1]))
                        .map_err(Oom::from)
                }
                None => h.try_reserve(1).map_err(Oom::from).and_then(|()| {
                    h.insert(key_in(pair[0])?, bytes_in(pair[1])?);
                    created += 1;
                    Ok(())
                }),
            };
            if r.is_err() {
                Self::drop_if_empty(&mut db, key);
                return resp::error(self.out, OOM);
            }
        }
        resp::integer(self.out, created)
    }

    fn hdel(&mut self) {
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let Some(h) = typed!(self.out, db.get(key), Hash) else {
            return resp::integer(self.out, 0);
        };
        let n = self.args[2..]
            .iter()
            .filter(|f| h.remove(**f).is_some())
            .count();
        Self::drop_if_empty(&mut db, key);
        resp::integer(self.out, n as i64)
    }

    fn zadd(&mut self) {
        let args = self.args;
        let (mut nx, mut xx, mut ch, mut incr, mut gt, mut lt) =
            (false, false, false, false, false, false);
        let mut i = 2;
        while i < args.len() {
            let o = args[i];
            let flag = match () {
                _ if o.eq_ignore_ascii_case(b"nx") => &mut nx,
                _ if o.eq_ignore_ascii_case(b"xx") => &mut xx,
                _ if o.eq_ignore_ascii_case(b"ch") => &mut ch,
                _ if o.eq_ignore_ascii_case(b"incr") => &mut incr,
                _ if o.eq_ignore_ascii_case(b"gt") => &mut gt,
                _ if o.eq_ignore_ascii_case(b"lt") => &mut lt,
                _ => break,
            };
            *flag = true;
            i += 1;
        }
        let pairs = &args[i..];
        if pairs.is_empty() || pairs.len() % 2 == 1 {
            return resp::error(self.out, SYNTAX);
        }
        if xx && nx {
            return resp::error(
                self.out,
                "ERR XX and NX options at the same time are not compatible",
            );
        }
        if (nx && (gt || lt)) || (gt && lt) {
            return resp::error(
                self.out,
                "ERR GT, LT, and/or NX options at the same time are not compatible",
            );
        }
        if incr && pairs.len() > 2 {
            return resp::error(
                self.out,
                "ERR INCR option supports a single increment-element pair",
            );
        }
        let mut scores = std::vec::Vec::with_capacity(pairs.len() / 2);
        for p in pairs.chunks(2) {
            match parse_double(p[0]) {
                Some(s) => scores.push(s),
                None => return resp::error(self.out, NOT_FLOAT),
            }
        }
        let key = args[1];
        let mut db = self.ks.lock_key(key);
        let missing = match db.get(key) {
            None => true,
            Some(Value::ZSet(_)) => false,
            Some(_) => return resp::error(self.out, WRONGTYPE),
        };
        let (mut added, mut updated, mut processed, mut last) = (0, 0, 0, 0.0);
        if !(missing && xx) {
            let make = || Ok(Value::ZSet(Box::try_new_in(ZSet::new(), A::HANDLE)?));
            let Some(Value::ZSet(z)) = Self::create(self.out, &mut db, key, make, "zset") else {
                return;
            };
            for (p, &score) in pairs.chunks(2).zip(&scores) {
                let member = p[1];
                let mut score = score;
                match z.score(member) {
                    Some(cur) => {
                        if nx {
                            continue;
                        }
                        if incr {
                            score += cur;
                            if score.is_nan() {
                                Self::drop_if_empty(&mut db, key);
                                return resp::error(
                                    self.out,
                                    "ERR resulting score is not a number (NaN)",
                                );
                            }
                        }
                        if (lt && score >= cur) || (gt && score <= cur) {
                            continue;
                        }
                        if score != cur {
                            let _ = z.insert(member, score);
                            updated += 1;
                        }
                        processed += 1;
                        last = score;
                    }
                    None if xx => continue,
                    None => {
                        if z.insert(member, score).is_err() {
                            Self::drop_if_empty(&mut db, key);
                            return resp::error(self.out, OOM);
                        }
                        added += 1;
                        processed += 1;
                        last = score;
                    }
                }
            }
            Self::drop_if_empty(&mut db, key);
        }
        if incr {
            if processed > 0 {
                bulk_double(self.out, last)
            } else {
                resp::null(self.out)
            }
        } else {
            resp::integer(self.out, if ch { added + updated } else { added })
        }
    }

    fn zpopmin(&mut self) {
        if self.args.len() > 3 {
            return resp::error(self.out, SYNTAX);
        }
        let Ok(count) = self.positive_count(2) else {
            return;
        };
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        let Some(z) = typed!(self.out, db.get(key), ZSet) else {
            return resp::array(self.out, 0);
        };
        let n = count.unwrap_or(1).min(z.len());
        resp::array(self.out, n * 2);
        for _ in 0..n {
            let (score, member) = z.pop_min().expect("counted");
            resp::bulk(self.out, &member);
            bulk_double(self.out, score);
        }
        Self::drop_if_empty(&mut db, key);
    }

    fn zrange(&mut self) {
        let args = self.args;
        let (mut withscores, mut rev) = (false, false);
        for a in &args[4..] {
            if a.eq_ignore_ascii_case(b"withscores") {
                withscores = true;
            } else if a.eq_ignore_ascii_case(b"rev") && !rev {
                rev = true;
            } else {
                return resp::error(self.out, SYNTAX);
            }
        }
        let (Some(start), Some(stop)) = (parse_ll(args[2]), parse_ll(args[3])) else {
            return resp::error(self.out, NOT_INT);
        };
        let key = args[1];
        let mut db = self.ks.lock_key(key);
        let Some(z) = typed!(self.out, db.get(key), ZSet) else {
            return resp::array(self.out, 0);
        };
        let len = z.len();
        let Some((a, b)) = rank_range(start, stop, len) else {
            return resp::array(self.out, 0);
        };
        resp::array(self.out, (b - a + 1) * if withscores { 2 } else { 1 });
        for r in a..=b {
            let (score, m) = z.at(if rev { len - 1 - r } else { r }).expect("in range");
            resp::bulk(self.out, m);
            if withscores {
                bulk_double(self.out, score);
            }
        }
    }

    fn expire(&mut self, unit: i64) {
        let args = self.args;
        let name = if unit == 1 { "pexpire" } else { "expire" };
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for o in &args[3..] {
            match () {
                _ if o.eq_ignore_ascii_case(b"nx") => nx = true,
                _ if o.eq_ignore_ascii_case(b"xx") => xx = true,
                _ if o.eq_ignore_ascii_case(b"gt") => gt = true,
                _ if o.eq_ignore_ascii_case(b"lt") => lt = true,
                _ => {
                    let mut m = b"ERR Unsupported option ".to_vec();
                    m.extend_from_slice(c_str(o));
                    return error_bytes(self.out, &m);
                }
            }
        }
        if nx && (xx || gt || lt) {
            return resp::error(
                self.out,
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            );
        }
        if gt && lt {
            return resp::error(
                self.out,
                "ERR GT and LT options at the same time are not compatible",
            );
        }
        let Some(when) = parse_ll(args[2]) else {
            return resp::error(self.out, NOT_INT);
        };
        let invalid = format!("ERR invalid expire time in '{name}' command");
        if unit == 1000 && !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return resp::error(self.out, &invalid);
        }
        let now = now_ms() as i64;
        let Some(at) = (when * unit).checked_add(now) else {
            return resp::error(self.out, &invalid);
        };
        let key = args[1];
        let mut db = self.ks.lock_key(key);
        if db.get(key).is_none() {
            return resp::integer(self.out, 0);
        }
        let cur = db.expiry(key);
        let refused = (nx && cur != 0)
            || (xx && cur == 0)
            || (gt && (cur == 0 || at <= cur as i64))
            || (lt && cur != 0 && at >= cur as i64);
        if refused {
            return resp::integer(self.out, 0);
        }
        if at <= now {
            db.remove(key);
        } else if db.set_expiry(key, at as u64).is_err() {
            return resp::error(self.out, OOM);
        }
        resp::integer(self.out, 1)
    }

    fn ttl(&mut self, unit: u64) {
        let key = self.args[1];
        let mut db = self.ks.lock_key(key);
        if db.get(key).is_none() {
            return resp::integer(self.out, -2);
        }
        let at = db.expiry(key);
        if at == 0 {
            return resp::integer(self.out, -1);
        }
        let left = at.saturating_sub(now_ms());
        let v = if unit == 1 { left } else { (left + 500) / 1000 };
        resp::integer(self.out, v as i64)
    }

    /// CONFIG GET answers for what `redis-benchmark` asks at start (`save`, `appendonly`)
    /// and `maxmemory`; other parameters are unknown (empty array). CONFIG SET and
    /// RESETSTAT are accepted and ignored.
    fn config(&mut self) {
        let args = self.args;
        let sub = args[1].to_ascii_lowercase();
        match sub.as_slice() {
            b"get" if args.len() < 3 => wrong_args(self.out, "config|get"),
            b"get" => {
                let maxmemory = match A::HANDLE.limit_bytes() {
                    usize::MAX => 0,
                    n => n,
                }
                .to_string();
                let known = [
                    ("save", String::new()),
                    ("appendonly", "no".into()),
                    ("maxmemory", maxmemory),
                ];
                let hits: std::vec::Vec<_> = known
                    .iter()
                    .filter(|(k, _)| {
                        args[2..]
                            .iter()
                            .any(|p| *p == b"*" || p.eq_ignore_ascii_case(k.as_bytes()))
                    })
                    .collect();
                resp::array(self.out, hits.len() * 2);
                for (k, v) in hits {
                    resp::bulk(self.out, k.as_bytes());
                    resp::bulk(self.out, v.as_bytes());
                }
            }
            b"set" | b"resetstat" => resp::simple(self.out, "OK"),
            _ => {
                let mut m = b"ERR unknown subcommand '".to_vec();
                let s = c_str(args[1]);
                m.extend_from_slice(&s[..s.len().min(128)]);
                m.extend_from_slice(b"'. Try CONFIG HELP.");
                error_bytes(self.out, &m)
            }
        }
    }
}

/// LRANGE's and ZRANGE's index arithmetic: negative indexes count from the end; `None`
/// for an empty range, else the inclusive range clamped to `len`.
fn rank_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let n = len as i64;
    let mut start = if start < 0 { start + n } else { start };
    let mut stop = if stop < 0 { stop + n } else { stop };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= n {
        return None;
    }
    if stop >= n {
        stop = n - 1;
    }
    Some((start as usize, stop as usize))
}

/// A number below `n` (> 0), from a per-thread xorshift generator seeded by the clock:
/// SPOP's choice needs to be spread, not secret.
fn random_below(n: usize) -> usize {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(now_ms() | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x % n.max(1) as u64) as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `format_double` is printf's `%.17g`, checked against the C library's own.
    #[test]
    fn format_double_is_printf_g17() {
        let mut x: u64 = 0x1234_5678;
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1.5,
            1e16,
            1e17,
            1.2345e-4,
            1e-5,
            123456789.125,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            99999999999999999.0,
            0.0001,
            0.00009999,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if v.is_finite() {
                values.push(v);
            }
            values.push((x % 2_000_000) as f64 / 1000.0 - 1000.0);
        }
        for v in values {
            let mut buf = [0u8; 64];
            // SAFETY: buf is 64 writable bytes, the format is a NUL-terminated literal
            // whose one conversion takes a double.
            let n =
                unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), c"%.17g".as_ptr(), v) };
            let c = std::str::from_utf8(&buf[..n as usize]).unwrap();
            assert_eq!(format_double(v), c, "{v:e}");
        }
    }

    #[test]
    fn ranks() {
        assert_eq!(rank_range(0, -1, 3), Some((0, 2)));
        assert_eq!(rank_range(-100, 100, 3), Some((0, 2)));
        assert_eq!(rank_range(2, 1, 3), None);
        assert_eq!(rank_range(3, 5, 3), None);
        assert_eq!(rank_range(0, 0, 0), None);
    }

    #[test]
    fn every_command_is_found_by_its_name() {
        for s in SPECS {
            assert_eq!(lookup(s.name.to_uppercase().as_bytes()).unwrap().cmd, s.cmd);
        }
    }
}
