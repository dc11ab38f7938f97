//! The differential test: a seeded generator of random command sequences (valid and
//! invalid commands, wrong types, edge sizes: empty and 1 MiB values, binary keys) sent to
//! a real `redis-server` and to the kv server over two connections; every pair of replies
//! must be equal, except where [`ALLOWED_DIFFERENCES`] says why not.
//!
//! Run by `kv_difftest` (the VM suite's `kv::differential`, 100,000 commands) and by the
//! host test `tests/differential.rs` (fewer).

use crate::resp::{Reply, parse_reply, request};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Where the kv server's replies may differ from Redis's, and why. The comparison applies
/// exactly these rules; every other reply must be byte-identical.
pub const ALLOWED_DIFFERENCES: &[(&str, &str)] = &[
    (
        "SMEMBERS, HGETALL: compared as multisets (of members; of field-value pairs)",
        "the order is the hash table's, which differs between two hash functions",
    ),
    (
        "SPOP: compared by count; each member kv popped must be one Redis held; the test \
         then makes kv's set equal Redis's (SADD back what kv popped, SREM what Redis popped)",
        "Redis picks members at random",
    ),
    (
        "TTL: may differ by 1 second",
        "the two servers get EXPIRE and SET EX a few milliseconds apart, so one may round \
         to the next second",
    ),
];

/// A random generator (SplitMix64): the same seed gives the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (> 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One command of a sequence: its arguments, and how its replies are compared.
#[derive(Debug, Clone)]
pub struct Step {
    /// The request's arguments.
    pub args: Vec<Vec<u8>>,
    /// Sent as an inline command (`PING\r\n`) instead of a multibulk array.
    pub inline: bool,
}

/// The command generator.
pub struct Generator {
    rng: Rng,
    keys: Vec<Vec<u8>>,
    /// Whether v2's commands (LMOVE RPOPLPUSH SMOVE HINCRBY HLEN HEXISTS) come up too.
    v2: bool,
}

const INTS: &[&str] = &[
    "0",
    "1",
    "-1",
    "42",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "012",
    "-0",
    "+1",
    " 1",
    "1.5",
    "abc",
    "",
    "100",
    "-100",
    "3",
    "-3",
];
const SCORES: &[&str] = &[
    "0", "1", "-1", "1.5", "0.1", "-2.25", "1e10", "1e-5", "inf", "-inf", "+inf", "nan", "abc", "",
    " 1", "3", "7", "1e400", "-0", "100",
];

impl Generator {
    /// A generator for `seed`: 48 plain keys (8 per type, `str:0`.., and 8 `any:0`..) and 8 binary ones (CR, LF, NUL,
    /// bytes >= 0x80), and the empty key.
    pub fn new(seed: u64) -> Generator {
        let mut rng = Rng::new(seed);
        let mut keys: Vec<Vec<u8>> = (0..48)
            .map(|i| {
                format!(
                    "{}:{}",
                    ["str", "list", "set", "hash", "zset", "any"][i / 8],
                    i % 8
                )
                .into_bytes()
            })
            .collect();
        for i in 0..8 {
            let n = 1 + rng.below(12);
            let mut k: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            k.push(i);
            keys.push(k);
        }
        keys.push(Vec::new());
        Generator {
            rng,
            keys,
            v2: false,
        }
    }

    /// A generator for `seed` that also sends the commands `kv_v2` added (10% of the
    /// steps); the others come in the same proportions as [`new`](Self::new)'s.
    pub fn with_v2(seed: u64) -> Generator {
        Generator {
            v2: true,
            ..Generator::new(seed)
        }
    }

    /// A key: mostly one of the 8 of the command's type (`kind` 0..5: string, list,
    /// set, hash, zset), otherwise any key (so wrong types and binary keys come up).
    fn key_of(&mut self, kind: usize) -> Vec<u8> {
        if self.rng.one_in(5) {
            return self.key();
        }
        self.keys[kind * 8 + self.rng.below(8)].clone()
    }

    fn key(&mut self) -> Vec<u8> {
        self.rng.pick(&self.keys).clone()
    }

    fn value(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        match r.below(100) {
            0 => Vec::new(),
            1 if r.one_in(8) => vec![b'x'; 1 << 20],
            2..=20 => INTS[r.below(INTS.len())].as_bytes().to_vec(),
            21..=25 => (0..r.below(40)).map(|_| r.next_u64() as u8).collect(),
            26..=30 => vec![b'v'; r.below(5000)],
            _ => format!("v{}", r.below(30)).into_bytes(),
        }
    }

    fn member(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        match r.below(20) {
            0 => Vec::new(),
            1 => (0..1 + r.below(8)).map(|_| r.next_u64() as u8).collect(),
            _ => format!("m{}", r.below(12)).into_bytes(),
        }
    }

    fn int(&mut self) -> Vec<u8> {
        if self.rng.one_in(3) {
            return format!("{}", self.rng.below(21) as i64 - 10).into_bytes();
        }
        self.rng.pick(INTS).as_bytes().to_vec()
    }

    fn score(&mut self) -> Vec<u8> {
        if self.rng.one_in(2) {
            return format!("{}", self.rng.below(10)).into_bytes();
        }
        self.rng.pick(SCORES).as_bytes().to_vec()
    }

    /// The command name in a random case.
    fn name(&mut self, n: &str) -> Vec<u8> {
        match self.rng.below(4) {
            0 => n.to_ascii_lowercase().into_bytes(),
            1 => n
                .bytes()
                .map(|b| {
                    if self.rng.one_in(2) {
                        b.to_ascii_lowercase()
                    } else {
                        b
                    }
                })
                .collect(),
            _ => n.as_bytes().to_vec(),
        }
    }

    /// The next command.
    pub fn step(&mut self) -> Step {
        let mut inline = false;
        let r = self.rng.below(if self.v2 { 1100 } else { 1000 });
        let mut args: Vec<Vec<u8>> = match r {
            0..=9 => {
                inline = self.rng.one_in(2);
                let mut a = vec![self.name("PING")];
                if !inline && self.rng.one_in(2) {
                    a.push(self.value());
                }
                a
            }
            10..=89 => {
                let mut a = vec![self.name("SET"), self.key_of(0), self.value()];
                for _ in 0..self.rng.below(3) {
                    let opt: &[&str] = match self.rng.below(12) {
                        0 => &["NX"],
                        1 => &["XX"],
                        2 => &["GET"],
                        3 => &["KEEPTTL"],
                        4 => &["EX", "1000"],
                        5 => &["PX", "500000"],
                        6 => &["EX", "0"],
                        7 => &["EX", "x"],
                        8 => &["EX"],
                        9 => &["FOO"],
                        10 => &["ex", "-5"],
                        _ => &["px", "100000000"],
                    };
                    a.extend(opt.iter().map(|o| o.as_bytes().to_vec()));
                }
                a
            }
            90..=179 => vec![self.name("GET"), self.key_of(0)],
            180..=219 => vec![self.name("INCR"), self.key_of(0)],
            220..=239 => vec![self.name("INCRBY"), self.key_of(0), self.int()],
            240..=249 => vec![self.name("DECR"), self.key_of(0)],
            250..=259 => vec![self.name("DECRBY"), self.key_of(0), self.int()],
            260..=279 => {
                let mut a = vec![self.name("MSET")];
                for _ in 0..1 + self.rng.below(4) {
                    a.push(self.key_of(0));
                    a.push(self.value());
                }
                a
            }
            280..=299 => {
                let mut a = vec![self.name("MGET")];
                for _ in 0..1 + self.rng.below(4) {
                    a.push(self.key());
                }
                a
            }
            300..=319 => {
                let mut a = vec![self.name("DEL")];
                for _ in 0..1 + self.rng.below(3) {
                    a.push(self.key());
                }
                a
            }
            320..=334 => {
                let mut a = vec![self.name("EXISTS")];
                for _ in 0..1 + self.rng.below(3) {
                    a.push(self.key());
                }
                a
            }
            335..=354 => vec![self.name("APPEND"), self.key_of(0), self.value()],
            355..=364 => vec![self.name("STRLEN"), self.key_of(0)],
            365..=424 => {
                let n = if self.rng.one_in(2) { "LPUSH" } else { "RPUSH" };
                let mut a = vec![self.name(n), self.key_of(1)];
                for _ in 0..1 + self.rng.below(4) {
                    a.push(self.member());
                }
                a
            }
            425..=454 => {
                let n = if self.rng.one_in(2) { "LPOP" } else { "RPOP" };
                let mut a = vec![self.name(n), self.key_of(1)];
                if self.rng.one_in(2) {
                    a.push(self.int());
                }
                a
            }
            455..=484 => vec![self.name("LRANGE"), self.key_of(1), self.int(), self.int()],
            485..=494 => vec![self.name("LLEN"), self.key_of(1)],
            495..=509 => vec![self.name("LINDEX"), self.key_of(1), self.int()],
            510..=559 => {
                let mut a = vec![self.name("SADD"), self.key_of(2)];
                for _ in 0..1 + self.rng.below(4) {
                    a.push(self.member());
                }
                a
            }
            560..=569 => vec![self.name("SREM"), self.key_of(2), self.member()],
            570..=589 => {
                let mut a = vec![self.name("SPOP"), self.key_of(2)];
                if self.rng.one_in(2) {
                    a.push(self.int());
                }
                a
            }
            590..=604 => vec![self.name("SMEMBERS"), self.key_of(2)],
            605..=619 => vec![self.name("SISMEMBER"), self.key_of(2), self.member()],
            620..=629 => vec![self.name("SCARD"), self.key_of(2)],
            630..=679 => {
                let mut a = vec![self.name("HSET"), self.key_of(3)];
                for _ in 0..1 + self.rng.below(3) {
                    a.push(self.member());
                    a.push(self.value());
                }
                a
            }
            680..=699 => vec![self.name("HGET"), self.key_of(3), self.member()],
            700..=714 => vec![self.name("HGETALL"), self.key_of(3)],
            715..=729 => {
                let mut a = vec![self.name("HDEL"), self.key_of(3)];
                for _ in 0..1 + self.rng.below(2) {
                    a.push(self.member());
                }
                a
            }
            730..=789 => {
                let mut a = vec![self.name("ZADD"), self.key_of(4)];
                for _ in 0..self.rng.below(3) {
                    let f = ["NX", "XX", "CH", "INCR", "GT", "LT"][self.rng.below(6)];
                    a.push(f.as_bytes().to_vec());
                }
                for _ in 0..1 + self.rng.below(3) {
                    a.push(self.score());
                    a.push(self.member());
                }
                a
            }
            790..=809 => {
                let mut a = vec![self.name("ZPOPMIN"), self.key_of(4)];
                if self.rng.one_in(2) {
                    a.push(self.int());
                }
                a
            }
            810..=839 => {
                let mut a = vec![self.name("ZRANGE"), self.key_of(4), self.int(), self.int()];
                if self.rng.one_in(2) {
                    a.push(b"WITHSCORES".to_vec());
                }
                if self.rng.one_in(8) {
                    a.push(b"REV".to_vec());
                }
                a
            }
            840..=854 => vec![self.name("ZSCORE"), self.key_of(4), self.member()],
            855..=874 => {
                let secs = match self.rng.below(6) {
                    0 => "-1".to_string(),
                    1 => "0".into(),
                    2 => "x".into(),
                    _ => format!("{}", 100 + self.rng.below(100_000)),
                };
                let mut a = vec![self.name("EXPIRE"), self.key(), secs.into_bytes()];
                if self.rng.one_in(4) {
                    let f = ["NX", "XX", "GT", "LT", "FOO"][self.rng.below(5)];
                    a.push(f.as_bytes().to_vec());
                }
                a
            }
            875..=889 => vec![self.name("TTL"), self.key()],
            890..=899 => vec![self.name("PERSIST"), self.key()],
            900..=919 => vec![self.name("TYPE"), self.key()],
            920..=929 => vec![self.name("DBSIZE")],
            930 => {
                if self.rng.one_in(5) {
                    vec![self.name("FLUSHALL")]
                } else {
                    vec![self.name("DBSIZE")]
                }
            }
            931..=939 => {
                let p = ["save", "appendonly"][self.rng.below(2)];
                vec![b"CONFIG".to_vec(), b"GET".to_vec(), p.as_bytes().to_vec()]
            }
            940..=949 => vec![self.name("ECHO"), self.value()],
            950..=969 => {
                // Unknown commands, some with binary arguments.
                let mut a = vec![self.name("NOSUCHCMD")];
                for _ in 0..self.rng.below(4) {
                    a.push(if self.rng.one_in(2) {
                        self.key()
                    } else {
                        self.value()
                    });
                }
                a
            }
            970..=999 => {
                // A known command with an argument too many or too few.
                let n = *self.rng.pick(&[
                    "GET", "SET", "INCR", "LPUSH", "LRANGE", "LINDEX", "SADD", "HSET", "HGET",
                    "ZADD", "ZSCORE", "TTL", "TYPE", "DBSIZE", "STRLEN", "APPEND", "SCARD", "LLEN",
                    "HGETALL", "SMEMBERS", "EXPIRE", "MSET", "ECHO", "PING", "ZPOPMIN", "LPOP",
                    "SPOP",
                ]);
                let mut a = vec![self.name(n)];
                for _ in 0..self.rng.below(6) {
                    a.push(self.key());
                }
                a
            }
            // v2's commands.
            1000..=1024 => {
                let mut side = || {
                    let s = if self.rng.one_in(12) {
                        "UP"
                    } else {
                        ["LEFT", "RIGHT", "left", "Right"][self.rng.below(4)]
                    };
                    s.as_bytes().to_vec()
                };
                let (from, to) = (side(), side());
                vec![self.name("LMOVE"), self.key_of(1), self.key_of(1), from, to]
            }
            1025..=1039 => vec![self.name("RPOPLPUSH"), self.key_of(1), self.key_of(1)],
            1040..=1059 => vec![
                self.name("SMOVE"),
                self.key_of(2),
                self.key_of(2),
                self.member(),
            ],
            1060..=1084 => vec![
                self.name("HINCRBY"),
                self.key_of(3),
                self.member(),
                self.int(),
            ],
            1085..=1092 => vec![self.name("HLEN"), self.key_of(3)],
            _ => vec![self.name("HEXISTS"), self.key_of(3), self.member()],
        };
        if inline {
            args.truncate(1);
        }
        Step { args, inline }
    }
}

/// A connection that sends one request and reads its reply.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `127.0.0.1:port`.
    pub fn connect(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends `step` and returns the reply.
    pub fn call(&mut self, step: &Step) -> Result<Reply, String> {
        Ok(self.pipeline(std::slice::from_ref(step))?.remove(0))
    }

    /// Sends `steps` in one write and returns their replies, in order.
    pub fn pipeline(&mut self, steps: &[Step]) -> Result<Vec<Reply>, String> {
        let mut out = Vec::new();
        for step in steps {
            if step.inline {
                out.extend_from_slice(&step.args[0]);
                out.extend_from_slice(b"\r\n");
            } else {
                let args: Vec<&[u8]> = step.args.iter().map(|a| &a[..]).collect();
                request(&mut out, &args);
            }
        }
        self.stream
            .write_all(&out)
            .map_err(|e| format!("write: {e}"))?;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut replies = Vec::with_capacity(steps.len());
        let mut pos = 0;
        while replies.len() < steps.len() {
            if let Some((r, used)) = parse_reply(&self.buf[pos..]).map_err(|e| e.to_string())? {
                pos += used;
                replies.push(r);
                continue;
            }
            self.buf.drain(..pos);
            pos = 0;
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.buf.drain(..pos);
        Ok(replies)
    }

    fn args(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        self.call(&Step {
            args: args.iter().map(|a| a.to_vec()).collect(),
            inline: false,
        })
    }
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Commands compared.
    pub commands: u64,
    /// Replies that were errors (on both sides).
    pub errors: u64,
    /// Replies compared under an allowed difference's rule.
    pub by_rule: u64,
    /// Commands per name (upper case), for coverage.
    pub per_command: std::collections::BTreeMap<String, u64>,
}

fn show(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| {
            if a.len() > 64 {
                format!("<{} bytes>", a.len())
            } else {
                format!("{:?}", String::from_utf8_lossy(a))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn show_reply(r: &Reply) -> String {
    let s = format!("{r:?}");
    if s.len() > 300 {
        format!("{}... ({} chars)", &s[..300], s.len())
    } else {
        s
    }
}

fn sorted_items(r: &Reply, chunk: usize) -> Option<Vec<Vec<Reply>>> {
    match r {
        Reply::Array(Some(items)) => {
            let mut v: Vec<Vec<Reply>> = items.chunks(chunk).map(|c| c.to_vec()).collect();
            v.sort_by_key(|c| format!("{c:?}"));
            Some(v)
        }
        _ => None,
    }
}

fn bulk_items(r: &Reply) -> Vec<Vec<u8>> {
    match r {
        Reply::Bulk(Some(b)) => vec![b.clone()],
        Reply::Array(Some(items)) => items
            .iter()
            .filter_map(|i| match i {
                Reply::Bulk(Some(b)) => Some(b.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Sends `commands` generated from `seed` to Redis (`redis_port`) and to kv (`kv_port`),
/// both started empty, and compares every reply. The error names the first difference,
/// with the command that caused it and its position.
pub fn run(seed: u64, commands: u64, redis_port: u16, kv_port: u16) -> Result<Report, String> {
    run_for(seed, commands, redis_port, kv_port, 1)
}

/// [`run`] against a kv server of `version`: from 2 on, the commands v2 added come up too.
pub fn run_for(
    seed: u64,
    commands: u64,
    redis_port: u16,
    kv_port: u16,
    version: u32,
) -> Result<Report, String> {
    let mut redis = Conn::connect(redis_port).map_err(|e| format!("redis: {e}"))?;
    let mut kv = Conn::connect(kv_port).map_err(|e| format!("kv: {e}"))?;
    for c in [&mut redis, &mut kv] {
        c.args(&[b"FLUSHALL"])?;
    }
    let mut g = if version >= 2 {
        Generator::with_v2(seed)
    } else {
        Generator::new(seed)
    };
    let mut report = Report::default();
    let mut i = 0;
    while i < commands {
        // A pipelined batch, ending at an SPOP (whose fix-up must come before the next
        // command) or after 64 commands.
        let mut batch = Vec::new();
        while i + (batch.len() as u64) < commands && batch.len() < 64 {
            let step = g.step();
            let spop = step.args[0].eq_ignore_ascii_case(b"spop");
            batch.push(step);
            if spop {
                break;
            }
        }
        let wants = redis
            .pipeline(&batch)
            .map_err(|e| format!("redis, commands {i}..: {e}"))?;
        let gots = kv
            .pipeline(&batch)
            .map_err(|e| format!("kv, commands {i}..{}: {e}", i + batch.len() as u64))?;
        for ((step, want), got) in batch.iter().zip(wants).zip(gots) {
            compare(seed, i, step, want, got, &mut redis, &mut kv, &mut report)?;
            i += 1;
        }
    }
    finish(seed, &mut redis, &mut kv)?;
    Ok(report)
}

/// Compares one pair of replies under the rules of [`ALLOWED_DIFFERENCES`].
#[allow(clippy::too_many_arguments)]
fn compare(
    seed: u64,
    i: u64,
    step: &Step,
    want: Reply,
    got: Reply,
    redis: &mut Conn,
    kv: &mut Conn,
    report: &mut Report,
) -> Result<(), String> {
    let name = String::from_utf8_lossy(&step.args[0]).to_ascii_uppercase();
    {
        *report.per_command.entry(name.clone()).or_default() += 1;
        report.commands += 1;
        if matches!(want, Reply::Error(_)) {
            report.errors += 1;
        }
        let fail = |why: &str| {
            format!(
                "seed {seed}, command {i}: {}\n  redis: {}\n  kv:    {}\n  {why}",
                show(&step.args),
                show_reply(&want),
                show_reply(&got)
            )
        };
        if want == got {
            return Ok(());
        }
        match name.as_str() {
            "SMEMBERS" | "HGETALL" => {
                let chunk = if name == "HGETALL" { 2 } else { 1 };
                if sorted_items(&want, chunk).is_some()
                    && sorted_items(&want, chunk) == sorted_items(&got, chunk)
                {
                    report.by_rule += 1;
                    return Ok(());
                }
                Err(fail("different as multisets"))
            }
            "SPOP" if !matches!(want, Reply::Error(_)) => {
                let (w, k) = (bulk_items(&want), bulk_items(&got));
                let same_shape = std::mem::discriminant(&want) == std::mem::discriminant(&got);
                if !same_shape || w.len() != k.len() {
                    return Err(fail("SPOP popped a different number of members"));
                }
                let key = &step.args[1];
                for m in &k {
                    if !w.contains(m) && redis.args(&[b"SISMEMBER", key, m])? != Reply::Integer(1) {
                        return Err(fail("kv popped a member Redis's set never held"));
                    }
                }
                // Make kv's set equal Redis's: give back what kv popped, take what Redis
                // popped.
                for m in &k {
                    kv.args(&[b"SADD", key, m])?;
                }
                for m in &w {
                    kv.args(&[b"SREM", key, m])?;
                }
                report.by_rule += 1;
                Ok(())
            }
            "TTL" => {
                if let (Reply::Integer(a), Reply::Integer(b)) = (&want, &got)
                    && *a >= 0
                    && *b >= 0
                    && (a - b).abs() <= 1
                {
                    report.by_rule += 1;
                    return Ok(());
                }
                Err(fail("TTL differs by more than 1 s"))
            }
            _ => Err(fail("replies differ")),
        }
    }
}

/// The final state: every key's type agrees.
fn finish(seed: u64, redis: &mut Conn, kv: &mut Conn) -> Result<(), String> {
    let mut g = Generator::new(seed);
    for k in g.keys.drain(..) {
        let t = redis.args(&[b"TYPE", &k])?;
        let u = kv.args(&[b"TYPE", &k])?;
        if t != u {
            return Err(format!(
                "seed {seed}: at the end, TYPE {:?}: redis {t:?}, kv {u:?}",
                String::from_utf8_lossy(&k)
            ));
        }
    }
    Ok(())
}
