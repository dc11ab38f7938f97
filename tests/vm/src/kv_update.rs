//! The kv server (`examples/kv`) is updated live v1 -> v2 -> v3 while Debian's unmodified
//! `redis-benchmark` loads it, and a verifying client of our own writes and reads back
//! through the update, reconnecting often so that its connections land on every version.
//!
//! redis-benchmark runs its whole default test set (PING to MSET, Redis's five types)
//! with `-P 16 -c 50 -r 1000000`. The keyspace lives in the segment's shared heap: v2
//! shares it as is, v3 migrates its lists to another representation in place while v2
//! serves (v2 then forwards to v3).
//!
//! Asserts: zero failed requests (redis-benchmark exits 0 with no error line, every reply
//! the verifying client gets is the right one), sentinel keys of every type (a 1 MiB
//! string, a binary key, a list with a 1 MiB element, a set, a hash with a 1 MiB value, a
//! sorted set, a key with a TTL) read back identical after each update, every key written
//! before the update reads back after it, INFO's `total_commands_processed` equals the commands that all clients
//! sent to all versions together, each old version retires by itself with status 0, and
//! v3 reports the migrated per-command statistics. The runner checks the kernel log.
//!
//! Prints requests per second and p99 latency before, during and after the update (the
//! console log keeps them; BENCHMARKS.md quotes them).

use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const PORT: u16 = 16379;
const SEGMENT: &str = "kvtest";
/// redis-benchmark requests per test per run: a multiple of the pipeline depth (16), so
/// that redis-benchmark sends exactly N (it issues whole pipelines).
const N: u64 = 1600;
/// redis-benchmark's default test set: 20 result rows, N requests each.
const DEFAULT_SET_ROWS: usize = 20;
/// Keys written before the update.
const PRELOAD: usize = 2000;
/// redis-benchmark sends `CONFIG GET save` and `CONFIG GET appendonly` once per run.
const BENCH_CONFIG_GETS: u64 = 2;

#[distributed_slice(TESTS)]
static KV_LIVE_UPDATE: VmTest = VmTest {
    name: "kv::live_update_under_load",
    phase: Phase::Main,
    run: live_update,
};

/// A reply, as far as this test needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

pub(crate) fn parse_reply(buf: &[u8]) -> Option<(Reply, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..end]).ok()?;
    let next = end + 2;
    Some(match buf[0] {
        b'+' => (Reply::Simple(line.into()), next),
        b'-' => (Reply::Error(line.into()), next),
        b':' => (Reply::Int(line.parse().ok()?), next),
        b'$' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                (Reply::Bulk(None), next)
            } else {
                let stop = next + n as usize;
                if buf.len() < stop + 2 {
                    return None;
                }
                (Reply::Bulk(Some(buf[next..stop].to_vec())), stop + 2)
            }
        }
        b'*' => {
            let n: usize = line.parse().ok()?;
            let mut pos = next;
            let mut items = Vec::new();
            for _ in 0..n {
                let (r, used) = parse_reply(&buf[pos..])?;
                items.push(r);
                pos += used;
            }
            (Reply::Array(items), pos)
        }
        _ => (
            Reply::Error(format!(
                "unparsable reply {:?}",
                String::from_utf8_lossy(buf)
            )),
            buf.len(),
        ),
    })
}

/// A RESP client that counts the commands it sends into a shared counter.
pub(crate) struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    sent: Arc<AtomicU64>,
}

impl Client {
    fn connect(sent: &Arc<AtomicU64>) -> std::io::Result<Client> {
        Self::connect_to(PORT, sent)
    }

    /// A client of the server on `port`.
    pub(crate) fn connect_to(port: u16, sent: &Arc<AtomicU64>) -> std::io::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
            sent: sent.clone(),
        })
    }

    /// Sends the requests in one write and reads one reply per request.
    pub(crate) fn pipeline(&mut self, reqs: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, String> {
        let mut out = Vec::new();
        for args in reqs {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        self.stream
            .write_all(&out)
            .map_err(|e| format!("write: {e}"))?;
        self.sent.fetch_add(reqs.len() as u64, Relaxed);
        let mut replies = Vec::with_capacity(reqs.len());
        let mut chunk = [0u8; 16384];
        while replies.len() < reqs.len() {
            if let Some((r, used)) = parse_reply(&self.buf) {
                self.buf.drain(..used);
                replies.push(r);
                continue;
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "connection closed after {} of {} replies",
                    replies.len(),
                    reqs.len()
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(replies)
    }

    pub(crate) fn cmd(&mut self, args: &[&str]) -> Result<Reply, String> {
        let req: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        Ok(self.pipeline(&[req])?.remove(0))
    }

    fn info(&mut self) -> Result<String, String> {
        match self.cmd(&["INFO"])? {
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            r => Err(format!("INFO replied {r:?}")),
        }
    }
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(':')
            .map(|v| v.trim().to_string())
    })
}

/// One version of the server, its output going to `/tmp/kv_vN.log`.
pub(crate) struct Server {
    name: String,
    child: Child,
    log: String,
}

impl Server {
    fn start(version: u32) -> Result<Server, Failure> {
        Self::start_with(version, PORT, SEGMENT, &[], "")
    }

    /// `kv_v{version}` on `port` and `segment` with `extra` arguments; its log is
    /// `/tmp/kv_v{version}{tag}.log`.
    pub(crate) fn start_with(
        version: u32,
        port: u16,
        segment: &str,
        extra: &[&str],
        tag: &str,
    ) -> Result<Server, Failure> {
        let name = format!("kv_v{version}");
        let log = format!("/tmp/{name}{tag}.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(&name)
            .args([
                "--port",
                &port.to_string(),
                "--segment",
                segment,
                "--drain-timeout",
                "60",
            ])
            .args(extra)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| Failure::Fail(format!("cannot start {name}: {e}")))?;
        Ok(Server { name, child, log })
    }

    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the server says it serves (it has listened and attached).
    pub(crate) fn wait_serving(&mut self, timeout: Duration) -> TestResult {
        let t0 = Instant::now();
        while !self.output().contains(": serving ") {
            if let Some(st) = self.child.try_wait()? {
                return Err(Failure::Fail(format!(
                    "{} exited with {st}: {}",
                    self.name,
                    self.output()
                )));
            }
            ensure!(
                t0.elapsed() < timeout,
                "{} not serving after {timeout:?}: {}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits until the server retires by itself, successfully.
    fn wait_retired(&mut self, timeout: Duration) -> TestResult {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                ensure!(
                    st.success(),
                    "{} exited with {st}: {}",
                    self.name,
                    self.output()
                );
                ensure!(
                    self.output().contains("retired"),
                    "{} did not retire: {}",
                    self.name,
                    self.output()
                );
                return Ok(());
            }
            ensure!(
                t0.elapsed() < timeout,
                "{} still running {timeout:?} after a newer version: {}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[distributed_slice(TESTS)]
static KV_SUCCESSOR_ABORTS: VmTest = VmTest {
    name: "kv::successor_abort_keeps_serving",
    phase: Phase::Main,
    run: successor_aborts,
};

/// v1 serves; a v2 attaches (a candidate) and then fails its start-up (it cannot listen on
/// an address this host does not have) before it is ready. v1 must keep serving, never
/// start draining, and v2's additions must be gone from the segment. Then a good v2
/// starts, and v1 retires as usual.
fn successor_aborts() -> TestResult {
    const PORT2: u16 = 16380;
    const SEG2: &str = "kvabort";
    if Command::new("kv_v1").arg("--help").output().is_err() {
        return Err(Failure::Skip("kv_v1 is not on PATH".into()));
    }
    let _ = Command::new("dsuctl").args(["destroy", SEG2]).output();
    let d = crate::kmod_ioctl::Dsu::open()?;
    let names = |d: &crate::kmod_ioctl::Dsu| -> Result<Vec<String>, Failure> {
        let (vars, _) = d.list_variables(SEG2, 0, dsu_uapi::DSU_LIST_MAX)?;
        Ok(vars
            .iter()
            .map(|v| crate::kmod_ioctl::cstr(&v.name))
            .collect())
    };
    let r = (|| -> TestResult {
        let sent = Arc::new(AtomicU64::new(0));
        let mut v1 = Server::start_with(1, PORT2, SEG2, &[], "-abort")?;
        v1.wait_serving(Duration::from_secs(60))?;
        let connect = || -> Result<Client, Failure> {
            let stream = TcpStream::connect(("127.0.0.1", PORT2))?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            Ok(Client {
                stream,
                buf: Vec::new(),
                sent: sent.clone(),
            })
        };
        let mut c = connect()?;
        ensure_eq!(
            c.cmd(&["SET", "k", "before"])?,
            Reply::Simple("OK".into()),
            "SET"
        );
        let before = names(&d)?;
        let pages = d.segment_info(SEG2)?.map(|s| s.pages);

        // 192.0.2.1 (TEST-NET-1) is no address of the guest: listen fails after attach.
        let mut bad = Server::start_with(2, PORT2, SEG2, &["--bind", "192.0.2.1"], "-bad")?;
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = bad.child.try_wait()? {
                break st;
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "the failing v2 still runs: {}",
                bad.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        ensure!(
            !status.success(),
            "the failing v2 exited 0: {}",
            bad.output()
        );
        ensure!(
            bad.output().contains("attached to segment"),
            "v2 failed before attaching, not after: {}",
            bad.output()
        );
        std::thread::sleep(Duration::from_millis(1500));
        ensure!(
            v1.child.try_wait()?.is_none(),
            "v1 exited after its successor aborted: {}",
            v1.output()
        );
        ensure!(
            !v1.output().contains("draining"),
            "v1 started draining for a successor that never became ready: {}",
            v1.output()
        );
        let mut c = connect()?;
        ensure_eq!(c.cmd(&["PING"])?, Reply::Simple("PONG".into()), "v1 PING");
        ensure_eq!(
            c.cmd(&["GET", "k"])?,
            Reply::Bulk(Some(b"before".to_vec())),
            "v1 GET"
        );
        ensure_eq!(names(&d)?, before, "the aborted v2's additions are gone");
        ensure_eq!(
            d.segment_info(SEG2)?.map(|s| s.pages),
            pages,
            "segment pages after the abort"
        );

        // A v2 that starts: v1 retires only now.
        let mut v2 = Server::start_with(2, PORT2, SEG2, &[], "-good")?;
        v2.wait_serving(Duration::from_secs(60))?;
        v1.wait_retired(Duration::from_secs(120))?;
        ensure!(
            v1.output().contains("is ready: listener closed"),
            "v1's retirement: {}",
            v1.output()
        );
        let mut c = connect()?;
        ensure_eq!(
            c.cmd(&["GET", "k"])?,
            Reply::Bulk(Some(b"before".to_vec())),
            "v2 GET"
        );
        drop(c);
        drop(v2);
        Ok(())
    })();
    let _ = Command::new("dsuctl").args(["destroy", SEG2]).output();
    r
}

#[distributed_slice(TESTS)]
static KV_MIGRATION_ABORTS: VmTest = VmTest {
    name: "kv::v3_abort_after_keyspace_migration",
    phase: Phase::Main,
    run: migration_aborts,
};

/// v2 serves; a v3 attaches, which migrates the keyspace (v2's stripes are marked handed
/// over to v3's forwarding port), and then fails its start-up before it is ready (it
/// cannot listen on 192.0.2.1). v2 must take its stripes back and serve every key,
/// including writes made after the failed migration; then a good v3 migrates again and
/// serves all of them.
fn migration_aborts() -> TestResult {
    const PORT4: u16 = 16382;
    const SEG4: &str = "kvabort3";
    if Command::new("kv_v3").arg("--help").output().is_err() {
        return Err(Failure::Skip("kv_v3 is not on PATH".into()));
    }
    let _ = Command::new("dsuctl").args(["destroy", SEG4]).output();
    let r = (|| -> TestResult {
        let sent = Arc::new(AtomicU64::new(0));
        let mut v2 = Server::start_with(2, PORT4, SEG4, &[], "-abort3")?;
        v2.wait_serving(Duration::from_secs(60))?;
        let mut c = Client::connect_to(PORT4, &sent)?;
        ensure_eq!(
            c.cmd(&["RPUSH", "l", "a", "b", "c"])?,
            Reply::Int(3),
            "RPUSH"
        );
        ensure_eq!(
            c.cmd(&["SET", "k", "before"])?,
            Reply::Simple("OK".into()),
            "SET"
        );

        let mut bad = Server::start_with(3, PORT4, SEG4, &["--bind", "192.0.2.1"], "-bad3")?;
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = bad.child.try_wait()? {
                break st;
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "the failing v3 still runs: {}",
                bad.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        ensure!(
            !status.success(),
            "the failing v3 exited 0: {}",
            bad.output()
        );
        ensure!(
            bad.output().contains("kv::KEYSPACE migrated"),
            "v3 failed before migrating the keyspace: {}",
            bad.output()
        );
        // v2's open connection and a new one: the stripes are served by v2 again.
        ensure_eq!(
            c.cmd(&["LMOVE", "l", "l", "LEFT", "RIGHT"])?,
            bulk(b"a"),
            "LMOVE on v2 after v3's failed migration"
        );
        let mut c2 = Client::connect_to(PORT4, &sent)?;
        ensure_eq!(
            c2.cmd(&["SET", "k", "after"])?,
            Reply::Simple("OK".into()),
            "SET on v2"
        );
        ensure!(
            v2.output().contains("never served"),
            "v2 did not say it took its stripes back: {}",
            v2.output()
        );

        let mut v3 = Server::start_with(3, PORT4, SEG4, &[], "-good3")?;
        v3.wait_serving(Duration::from_secs(60))?;
        // v2's connections forward to v3 now.
        ensure_eq!(
            c.cmd(&["LRANGE", "l", "0", "-1"])?,
            Reply::Array(vec![bulk(b"b"), bulk(b"c"), bulk(b"a")]),
            "LRANGE through v2, from v3"
        );
        drop(c);
        drop(c2);
        v2.wait_retired(Duration::from_secs(120))?;
        let mut c = Client::connect_to(PORT4, &sent)?;
        ensure_eq!(c.cmd(&["GET", "k"])?, bulk(b"after"), "GET k on v3");
        ensure_eq!(
            c.cmd(&["LRANGE", "l", "0", "-1"])?,
            Reply::Array(vec![bulk(b"b"), bulk(b"c"), bulk(b"a")]),
            "LRANGE on v3"
        );
        drop(c);
        drop(v3);
        Ok(())
    })();
    let _ = Command::new("dsuctl").args(["destroy", SEG4]).output();
    r
}

#[distributed_slice(TESTS)]
static KV_HEAP_OOM: VmTest = VmTest {
    name: "kv::heap_oom_reads_kept_del_frees",
    phase: Phase::Main,
    run: heap_oom,
};

/// kv_v1 with a 32 MiB shared heap (`--maxmemory`): 1 MiB values are written until the
/// heap is full and a write gets Redis's `-OOM`; every value written reads back; DEL
/// gives the memory back to the heap (INFO `used_memory`, the heap's allocated bytes,
/// falls by about what was deleted) and writes succeed again.
fn heap_oom() -> TestResult {
    const PORT3: u16 = 16381;
    const SEG3: &str = "kvoom";
    const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
    if Command::new("kv_v1").arg("--help").output().is_err() {
        return Err(Failure::Skip("kv_v1 is not on PATH".into()));
    }
    let _ = Command::new("dsuctl").args(["destroy", SEG3]).output();
    let r = (|| -> TestResult {
        let mut v1 = Server::start_with(1, PORT3, SEG3, &["--maxmemory", "33554432"], "-oom")?;
        v1.wait_serving(Duration::from_secs(60))?;
        let sent = Arc::new(AtomicU64::new(0));
        let mut c = Client::connect_to(PORT3, &sent)?;
        let big = big_value();
        let mut written = 0;
        let refused = loop {
            ensure!(written < 64, "64 MiB written into a 32 MiB heap");
            let r = c.pipeline(&[vec![
                b"SET".to_vec(),
                format!("big:{written}").into_bytes(),
                big.clone(),
            ]])?;
            match &r[0] {
                Reply::Simple(s) if s == "OK" => written += 1,
                Reply::Error(e) => break e.clone(),
                r => return Err(Failure::Fail(format!("SET big:{written}: {r:?}"))),
            }
        };
        ensure_eq!(refused.as_str(), OOM, "the refusal");
        ensure!(written >= 16, "only {written} MiB fit in a 32 MiB heap");
        for i in 0..written {
            ensure_eq!(
                c.cmd(&["GET", &format!("big:{i}")])?,
                bulk(&big),
                "big:{i} after the heap filled"
            );
        }
        let used = |c: &mut Client| -> Result<u64, Failure> {
            let info = c.info()?;
            info_field(&info, "used_memory")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Failure::Fail(format!("no used_memory: {info}")))
        };
        let full = used(&mut c)?;
        let keys: Vec<String> = (0..written).map(|i| format!("big:{i}")).collect();
        let mut del = vec!["DEL"];
        del.extend(keys.iter().map(String::as_str));
        ensure_eq!(c.cmd(&del)?, Reply::Int(written as i64), "DEL");
        let empty = used(&mut c)?;
        ensure!(
            full - empty >= written as u64 * (1 << 20),
            "DEL of {written} MiB gave back only {} bytes ({full} -> {empty})",
            full - empty
        );
        ensure_eq!(
            c.pipeline(&[vec![b"SET".to_vec(), b"big:again".to_vec(), big.clone()]])?[0],
            Reply::Simple("OK".into()),
            "a write after DEL"
        );
        println!(
            "kv-oom: {written} values of 1 MiB fit in a 32 MiB heap, the next got -OOM; used_memory {full} -> {empty} after DEL"
        );
        drop(c);
        drop(v1);
        Ok(())
    })();
    let _ = Command::new("dsuctl").args(["destroy", SEG3]).output();
    r
}

/// One line of redis-benchmark's CSV.
#[derive(Debug, Clone)]
struct BenchRow {
    test: String,
    rps: f64,
    p99_ms: f64,
}

/// Runs redis-benchmark's whole default test set once (`-P 16 -c 50 -r 1000000`); fails
/// on a non-zero exit or any error line. Returns its rows and the number of commands it
/// sent.
fn redis_benchmark() -> Result<(Vec<BenchRow>, u64), String> {
    let tests = "the default set";
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &PORT.to_string(),
            "-n",
            &N.to_string(),
            "-r",
            "1000000",
            "-P",
            "16",
            "-c",
            "50",
            "--csv",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-benchmark: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || text.to_lowercase().contains("error") {
        return Err(format!(
            "redis-benchmark ({tests}) failed ({}): {text}",
            out.status
        ));
    }
    let mut rows = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with("\"test\"") && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split(',').map(|x| x.trim_matches('"')).collect();
        match (
            f.len(),
            f.get(1).and_then(|x| x.parse().ok()),
            f.get(6).and_then(|x| x.parse().ok()),
        ) {
            (8, Some(rps), Some(p99_ms)) => rows.push(BenchRow {
                test: f[0].into(),
                rps,
                p99_ms,
            }),
            _ => {
                return Err(format!(
                    "unexpected redis-benchmark output line {line:?} in: {text}"
                ));
            }
        }
    }
    let want = DEFAULT_SET_ROWS;
    if rows.len() != want {
        return Err(format!(
            "redis-benchmark ({tests}) printed {} results, want {want}: {text}",
            rows.len()
        ));
    }
    Ok((rows.clone(), N * rows.len() as u64 + BENCH_CONFIG_GETS))
}

/// "SET 1234 req/s p99 5.1 ms, ..." over runs: mean req/s, worst p99 per test.
fn summarize(runs: &[Vec<BenchRow>]) -> String {
    let mut tests: Vec<String> = Vec::new();
    for r in runs.iter().flatten() {
        if !tests.contains(&r.test) {
            tests.push(r.test.clone());
        }
    }
    tests
        .iter()
        .map(|t| {
            let rows: Vec<&BenchRow> = runs.iter().flatten().filter(|r| &r.test == t).collect();
            let rps = rows.iter().map(|r| r.rps).sum::<f64>() / rows.len() as f64;
            let p99 = rows.iter().map(|r| r.p99_ms).fold(0.0, f64::max);
            format!("{t} {rps:.0} req/s p99 {p99:.2} ms")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verifying client: until `stop`, connects, does 10 rounds of SET/GET/INCR with
/// checks, disconnects. Returns the keys it wrote, with their values.
fn verifier(sent: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Result<Vec<(String, String)>, String> {
    let mut written = Vec::new();
    let mut counter = 0i64;
    let mut i = 0u64;
    while !stop.load(Relaxed) {
        let mut c = Client::connect(&sent).map_err(|e| format!("verifier: connect: {e}"))?;
        for _ in 0..10 {
            i += 1;
            let (k, v) = (format!("ver:{i}"), format!("value-{i}"));
            let replies = c.pipeline(&[
                vec![
                    b"SET".to_vec(),
                    k.clone().into_bytes(),
                    v.clone().into_bytes(),
                ],
                vec![b"GET".to_vec(), k.clone().into_bytes()],
                vec![b"INCR".to_vec(), b"ver:counter".to_vec()],
            ])?;
            counter += 1;
            let want = [
                Reply::Simple("OK".into()),
                Reply::Bulk(Some(v.clone().into_bytes())),
                Reply::Int(counter),
            ];
            if replies != want {
                return Err(format!(
                    "verifier round {i}: got {replies:?}, want {want:?}"
                ));
            }
            written.push((k, v));
        }
    }
    Ok(written)
}

/// A 1 MiB value of every byte value.
fn big_value() -> Vec<u8> {
    (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(7) % 251) as u8)
        .collect()
}

/// A key of binary bytes (NUL, CR, LF, 0xff).
const BINARY_KEY: &[u8] = b"sentinel:\x00\xff\r\nbin";

fn bulk(b: &[u8]) -> Reply {
    Reply::Bulk(Some(b.to_vec()))
}

/// The list sentinel's elements, head first, and its writes.
fn sentinel_list() -> (Vec<Vec<u8>>, Vec<Vec<Vec<u8>>>) {
    let mut rpush = vec![b"RPUSH".to_vec(), b"sentinel:list".to_vec()];
    let mut elems: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            if i == 50 {
                big_value()
            } else {
                format!("e{i}").into_bytes()
            }
        })
        .collect();
    rpush.extend(elems.iter().cloned());
    let lpush = vec![
        b"LPUSH".to_vec(),
        b"sentinel:list".to_vec(),
        b"l0".to_vec(),
        vec![0, 255, b'\r', b'\n'],
    ];
    elems.insert(0, b"l0".to_vec());
    elems.insert(0, vec![0, 255, b'\r', b'\n']);
    (elems, vec![rpush, lpush])
}

/// Writes the sentinel keys, one of every type, some big or binary.
fn write_sentinels(c: &mut Client) -> TestResult {
    let mut w: Vec<Vec<Vec<u8>>> = vec![
        vec![b"SET".to_vec(), b"sentinel:str".to_vec(), big_value()],
        vec![b"SET".to_vec(), BINARY_KEY.to_vec(), (0..=255u8).collect()],
        vec![
            b"SET".to_vec(),
            b"sentinel:ttl".to_vec(),
            b"v".to_vec(),
            b"EX".to_vec(),
            b"100000".to_vec(),
        ],
    ];
    w.extend(sentinel_list().1);
    let mut sadd = vec![
        b"SADD".to_vec(),
        b"sentinel:set".to_vec(),
        vec![0, 1, 2, 255],
    ];
    sadd.extend((0..50).map(|i| format!("m{i}").into_bytes()));
    w.push(sadd);
    let mut hset = vec![b"HSET".to_vec(), b"sentinel:hash".to_vec()];
    for i in 0..50 {
        hset.push(format!("f{i}").into_bytes());
        hset.push(format!("v{i}").into_bytes());
    }
    hset.push(b"fbig".to_vec());
    hset.push(big_value());
    w.push(hset);
    let mut zadd = vec![b"ZADD".to_vec(), b"sentinel:zset".to_vec()];
    for i in 0..50 {
        zadd.push(format!("{}", i as f64 * 1.5 - 20.0).into_bytes());
        zadd.push(format!("z{i}").into_bytes());
    }
    w.push(zadd);
    for r in c.pipeline(&w)? {
        ensure!(
            matches!(r, Reply::Simple(_) | Reply::Int(_)),
            "writing the sentinels: {r:?}"
        );
    }
    Ok(())
}

/// Reads every sentinel key back and compares it with what was written.
fn check_sentinels(sent: &Arc<AtomicU64>, when: &str) -> TestResult {
    let mut c = Client::connect(sent)?;
    let big = big_value();
    let sorted = |r: Reply| -> Result<Vec<Reply>, Failure> {
        match r {
            Reply::Array(mut items) => {
                items.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
                Ok(items)
            }
            r => Err(Failure::Fail(format!("{when}: not an array: {r:?}"))),
        }
    };
    ensure_eq!(
        c.cmd(&["GET", "sentinel:str"])?,
        bulk(&big),
        "{when}: the 1 MiB string"
    );
    let r = c.pipeline(&[vec![b"GET".to_vec(), BINARY_KEY.to_vec()]])?;
    ensure_eq!(
        r[0],
        bulk(&(0..=255u8).collect::<Vec<u8>>()),
        "{when}: the binary key"
    );
    match c.cmd(&["TTL", "sentinel:ttl"])? {
        Reply::Int(t) if t > 0 && t <= 100_000 => {}
        r => return Err(Failure::Fail(format!("{when}: TTL sentinel:ttl: {r:?}"))),
    }
    let (elems, _) = sentinel_list();
    ensure_eq!(
        c.cmd(&["LRANGE", "sentinel:list", "0", "-1"])?,
        Reply::Array(elems.iter().map(|e| bulk(e)).collect()),
        "{when}: the list"
    );
    let mut members: Vec<Reply> = (0..50).map(|i| bulk(format!("m{i}").as_bytes())).collect();
    members.push(bulk(&[0, 1, 2, 255]));
    members.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    ensure_eq!(
        sorted(c.cmd(&["SMEMBERS", "sentinel:set"])?)?,
        members,
        "{when}: the set"
    );
    let pairs = |r: Reply| -> Result<Vec<(Reply, Reply)>, Failure> {
        let Reply::Array(items) = r else {
            return Err(Failure::Fail(format!("{when}: HGETALL: {r:?}")));
        };
        let mut p: Vec<(Reply, Reply)> = items
            .chunks(2)
            .map(|x| (x[0].clone(), x[1].clone()))
            .collect();
        p.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
        Ok(p)
    };
    let mut want: Vec<(Reply, Reply)> = (0..50)
        .map(|i| {
            (
                bulk(format!("f{i}").as_bytes()),
                bulk(format!("v{i}").as_bytes()),
            )
        })
        .collect();
    want.push((bulk(b"fbig"), bulk(&big)));
    want.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    ensure!(
        pairs(c.cmd(&["HGETALL", "sentinel:hash"])?)? == want,
        "{when}: the hash differs"
    );
    let zwant: Vec<Reply> = (0..50)
        .flat_map(|i| {
            [
                bulk(format!("z{i}").as_bytes()),
                bulk(format!("{}", i as f64 * 1.5 - 20.0).as_bytes()),
            ]
        })
        .collect();
    ensure_eq!(
        c.cmd(&["ZRANGE", "sentinel:zset", "0", "-1", "WITHSCORES"])?,
        Reply::Array(zwant),
        "{when}: the sorted set"
    );
    println!("kv-update: {when}: every sentinel key reads back identical");
    Ok(())
}

/// Stops the load threads however the test ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

fn live_update() -> TestResult {
    for tool in ["/usr/bin/redis-benchmark", "/usr/bin/redis-cli"] {
        if !std::path::Path::new(tool).exists() {
            return Err(Failure::Skip(format!(
                "{tool} is not in the initramfs (install redis-tools on the host)"
            )));
        }
    }
    if Command::new("kv_v1").arg("--help").output().is_err() {
        return Err(Failure::Skip("kv_v1 is not on PATH".into()));
    }
    // A connection that races into the closing listener's queue moves to the new one.
    std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1")?;
    let sent = Arc::new(AtomicU64::new(0));

    // v1, and the keys written before the update.
    let mut v1 = Server::start(1)?;
    v1.wait_serving(Duration::from_secs(60))?;
    let mut c = Client::connect(&sent)?;
    ensure_eq!(c.cmd(&["PING"])?, Reply::Simple("PONG".into()), "PING");
    let preload: Vec<Vec<Vec<u8>>> = (0..PRELOAD)
        .map(|i| {
            vec![
                b"SET".to_vec(),
                format!("pre:{i}").into_bytes(),
                format!("before-{i}").into_bytes(),
            ]
        })
        .collect();
    for chunk in preload.chunks(200) {
        let replies = c.pipeline(chunk)?;
        ensure!(
            replies.iter().all(|r| *r == Reply::Simple("OK".into())),
            "preload: {replies:?}"
        );
    }
    write_sentinels(&mut c)?;
    drop(c);
    check_sentinels(&sent, "v1, before the update")?;

    let (before, n) = redis_benchmark()?;
    sent.fetch_add(n, Relaxed);
    println!(
        "kv-update: before (v1): {}",
        summarize(std::slice::from_ref(&before))
    );

    // The update, under load: redis-benchmark runs back to back, the verifier churns.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_return = StopOnDrop(stop.clone());
    let bench = std::thread::spawn({
        let (stop, sent) = (stop.clone(), sent.clone());
        move || -> Result<Vec<Vec<BenchRow>>, String> {
            let mut runs = Vec::new();
            loop {
                let done = stop.load(Relaxed);
                let (rows, n) = redis_benchmark()?;
                sent.fetch_add(n, Relaxed);
                runs.push(rows);
                if done {
                    return Ok(runs);
                }
            }
        }
    });
    let verify = std::thread::spawn({
        let (stop, sent) = (stop.clone(), sent.clone());
        move || verifier(sent, stop)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let t_update = Instant::now();
    let mut v2 = Server::start(2)?;
    v2.wait_serving(Duration::from_secs(60))?;
    v1.wait_retired(Duration::from_secs(300))?;
    let v1_done = t_update.elapsed();
    check_sentinels(&sent, "after v1 -> v2")?;
    let mut v3 = Server::start(3)?;
    v3.wait_serving(Duration::from_secs(60))?;
    v2.wait_retired(Duration::from_secs(300))?;
    let update_time = t_update.elapsed();
    check_sentinels(&sent, "after v2 -> v3")?;
    stop.store(true, Relaxed);
    let during = bench
        .join()
        .map_err(|_| Failure::Fail("benchmark thread panicked".into()))?
        .map_err(|e| {
            // Say whether an old version's drain timeout closed idle connections (a slow,
            // loaded host) or something else did.
            let timeouts: Vec<String> = [&v1, &v2]
                .iter()
                .flat_map(|s| {
                    s.output()
                        .lines()
                        .filter(|l| l.contains("drain timeout"))
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            Failure::Fail(format!("{e}; drain timeouts: {timeouts:?}"))
        })?;
    let written = verify
        .join()
        .map_err(|_| Failure::Fail("verifier thread panicked".into()))??;
    println!(
        "kv-update: during (v1 -> v2 -> v3; v1 retired after {} ms, v2 after {} ms; {} runs): {}",
        v1_done.as_millis(),
        update_time.as_millis(),
        during.len(),
        summarize(&during)
    );

    let (after, n) = redis_benchmark()?;
    sent.fetch_add(n, Relaxed);
    println!(
        "kv-update: after (v3): {}",
        summarize(std::slice::from_ref(&after))
    );

    // Every key written before and during the update reads back from v3.
    let mut c = Client::connect(&sent)?;
    let gets: Vec<Vec<Vec<u8>>> = (0..PRELOAD)
        .map(|i| vec![b"GET".to_vec(), format!("pre:{i}").into_bytes()])
        .collect();
    let mut i = 0;
    for chunk in gets.chunks(200) {
        for r in c.pipeline(chunk)? {
            ensure_eq!(
                r,
                Reply::Bulk(Some(format!("before-{i}").into_bytes())),
                "pre:{i} after the update"
            );
            i += 1;
        }
    }
    let gets: Vec<Vec<Vec<u8>>> = written
        .iter()
        .map(|(k, _)| vec![b"GET".to_vec(), k.clone().into_bytes()])
        .collect();
    let mut pos = 0;
    for chunk in gets.chunks(200) {
        for r in c.pipeline(chunk)? {
            let (k, v) = &written[pos];
            ensure_eq!(
                r,
                Reply::Bulk(Some(v.clone().into_bytes())),
                "{k} (written by the verifier during the update)"
            );
            pos += 1;
        }
    }
    ensure_eq!(
        c.cmd(&["GET", "ver:counter"])?,
        Reply::Bulk(Some(written.len().to_string().into_bytes())),
        "ver:counter"
    );

    // INFO's counter, shared by all versions, equals what all clients sent (INFO counts
    // itself before it renders).
    let info = c.info()?;
    let total: u64 = info_field(&info, "total_commands_processed")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ensure_eq!(
        total,
        sent.load(Relaxed),
        "total_commands_processed vs commands sent by all clients\n{info}"
    );
    ensure_eq!(
        info_field(&info, "dsu_kv_version"),
        Some("3".to_string()),
        "INFO comes from v3"
    );
    ensure_eq!(
        info_field(&info, "dsu_versions_started"),
        Some("3".to_string()),
        "versions started"
    );
    ensure!(
        info.contains("cmdstat_set:calls=") && info.contains(",usec="),
        "v3's command statistics:\n{info}"
    );
    let v3_out = v3.output();
    ensure!(
        v3_out.contains("kv::CMD_STATS migrated") && v3_out.contains("kv::KEYSPACE migrated"),
        "v3 did not migrate kv::CMD_STATS and kv::KEYSPACE: {v3_out}"
    );
    ensure!(
        !v2.output().contains("(0 forwarded"),
        "v2 forwarded nothing to v3 (the migration under load was not exercised): {}",
        v2.output()
    );
    ensure!(
        v2.output().contains("kv::KEYSPACE common"),
        "v2 did not share v1's keyspace: {}",
        v2.output()
    );
    println!(
        "kv-update: {} commands in all, {} verifier rounds, {PRELOAD} preloaded keys read back, update took {} ms",
        total,
        written.len(),
        update_time.as_millis()
    );
    // The servers' own account of the update (attach times, drains), for the console log.
    for server in [&v1, &v2, &v3] {
        for line in server.output().lines() {
            println!("kv-update: {line}");
        }
    }
    drop(c);
    drop(v3);
    let _ = Command::new("dsuctl").args(["destroy", SEGMENT]).output();
    Ok(())
}
