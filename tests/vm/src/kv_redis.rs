//! The kv server's keyspace (Redis's five types, `examples/kv/src/keyspace.rs`, in the
//! segment's shared heap) against Debian's real `redis-server` 7.0 in the guest:
//!
//! - `kv::differential_vs_redis_server`: `kv_difftest` sends 100,000 seeded random
//!   commands (valid and invalid, wrong types, empty and 1 MiB values, binary keys, v2's
//!   commands) to both and compares every reply (allowed differences are listed in the
//!   tool's output); kv is `kv_v3` attached to a segment (its keyspace in the shared heap,
//!   lists as rings);
//! - `kv::redis_benchmark_default_set`: `redis-benchmark`'s whole default test set runs
//!   against `kv_v1` (shared heap) with zero errors and a result line for each of its 20
//!   tests;
//! - `kv::bench_vs_redis_server`: SET, GET, LPUSH, LRANGE_100 and HSET with and without
//!   pipelining on redis-server, kv (dsu attached), kv `--no-dsu`, kv with a thread per
//!   connection, and the fixed-table `kv_v1` as it was before (thread per connection; SET
//!   and GET only: the baseline), interleaved; prints the figures that
//!   BENCHMARKS.md quotes and fails only when a run reports an error. It runs only when a
//!   filter names it (`scripts/vm-test.sh kv::bench_vs_redis_server`): it takes about 25
//!   minutes of TCG.

use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure};
use linkme::distributed_slice;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REDIS_PORT: u16 = 16390;
const KV_PORT: u16 = 16391;
/// The differential test's seed and length.
const SEED: u64 = 20_261_201;
const COMMANDS: u64 = 100_000;

#[distributed_slice(TESTS)]
static KV_DIFFERENTIAL: VmTest = VmTest {
    name: "kv::differential_vs_redis_server",
    phase: Phase::Main,
    run: differential,
};

#[distributed_slice(TESTS)]
static KV_DEFAULT_SET: VmTest = VmTest {
    name: "kv::redis_benchmark_default_set",
    phase: Phase::Main,
    run: default_set,
};

#[distributed_slice(TESTS)]
static KV_BENCH: VmTest = VmTest {
    name: "kv::bench_vs_redis_server",
    phase: Phase::Main,
    run: bench,
};

/// A server process, killed when dropped.
struct Proc {
    child: Child,
    log: String,
}

impl Proc {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program` with `args`, output to `/tmp/<tag>.log`, and waits until its port
/// answers PING.
fn start(tag: &str, program: &str, args: &[&str], port: u16) -> Result<Proc, Failure> {
    let log = format!("/tmp/{tag}.log");
    let out = std::fs::File::create(&log)?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .map_err(|e| Failure::Fail(format!("cannot start {program}: {e}")))?;
    let mut p = Proc { child, log };
    let t0 = Instant::now();
    loop {
        let pong = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"));
        if pong {
            return Ok(p);
        }
        if let Some(st) = p.child.try_wait()? {
            return Err(Failure::Fail(format!(
                "{program} exited with {st}: {}",
                p.output()
            )));
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "{program} not answering on port {port} after 60 s: {}",
            p.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `cmd` to completion, killing it after `limit` (a hung client is a failure with
/// its output so far, not a hung suite).
fn output_within(cmd: &mut Command, limit: Duration) -> Result<std::process::Output, Failure> {
    let out_path = format!("/tmp/kv-redis-out-{}", std::process::id());
    let err_path = format!("{out_path}.err");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()?;
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failure::Fail(format!(
                "{cmd:?} still running after {limit:?}; its output: {}{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(std::process::Output {
        status,
        stdout: std::fs::read(&out_path)?,
        stderr: std::fs::read(&err_path)?,
    })
}

fn redis_server(port: u16) -> Result<Proc, Failure> {
    let port_s = port.to_string();
    start(
        "redis-server",
        "redis-server",
        &[
            "--port",
            &port_s,
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ],
        port,
    )
}

fn kv(program: &str, port: u16, extra: &[&str]) -> Result<Proc, Failure> {
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s, "--segment", "kvredis"];
    args.extend_from_slice(extra);
    start(program, program, &args, port)
}

fn tools_present() -> TestResult {
    for tool in [
        "/usr/bin/redis-benchmark",
        "/usr/bin/redis-cli",
        "/usr/bin/redis-server",
    ] {
        if !std::path::Path::new(tool).exists() {
            return Err(Failure::Skip(format!(
                "{tool} is not in the initramfs (install redis-tools and redis-server on the host)"
            )));
        }
    }
    Ok(())
}

fn differential() -> TestResult {
    tools_present()?;
    let _redis = redis_server(REDIS_PORT)?;
    let _ = Command::new("dsuctl").args(["destroy", "kvredis"]).output();
    let kv = kv("kv_v3", KV_PORT, &[])?;
    let t0 = Instant::now();
    let out = output_within(
        Command::new("kv_difftest").args([
            "--seed",
            &SEED.to_string(),
            "--commands",
            &COMMANDS.to_string(),
            "--redis-port",
            &REDIS_PORT.to_string(),
            "--kv-port",
            &KV_PORT.to_string(),
            "--kv-version",
            "3",
        ]),
        Duration::from_secs(1200),
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "kv_difftest failed ({}): {text}\nkv_v3's log: {}",
        out.status,
        kv.output()
    );
    ensure!(
        text.contains(&format!("{COMMANDS} commands, all replies agree")),
        "kv_difftest did not report {COMMANDS} agreeing commands: {text}"
    );
    for line in text.lines() {
        println!("kv-differential: {line}");
    }
    println!(
        "kv-differential: {COMMANDS} commands in {} ms",
        t0.elapsed().as_millis()
    );
    let _ = Command::new("dsuctl").args(["destroy", "kvredis"]).output();
    Ok(())
}

/// redis-benchmark's CSV rows: (test, req/s, p50 ms, p99 ms). Fails on a non-zero exit
/// or any line that mentions an error.
fn redis_benchmark(port: u16, args: &[&str]) -> Result<Vec<(String, f64, f64, f64)>, Failure> {
    let port_s = port.to_string();
    let mut all = vec!["-p", &port_s, "--csv"];
    all.extend_from_slice(args);
    let out = output_within(
        Command::new("redis-benchmark").args(&all),
        Duration::from_secs(300),
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && !text.to_lowercase().contains("error"),
        "redis-benchmark {all:?} failed ({}): {text}",
        out.status
    );
    let mut rows = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with("\"test\"") && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split(',').map(|x| x.trim_matches('"')).collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
        match (num(1), num(4), num(6)) {
            (Some(rps), Some(p50), Some(p99)) if f.len() == 8 => {
                rows.push((f[0].to_string(), rps, p50, p99))
            }
            _ => {
                return Err(Failure::Fail(format!(
                    "unexpected redis-benchmark line {line:?} in: {text}"
                )));
            }
        }
    }
    Ok(rows)
}

fn default_set() -> TestResult {
    tools_present()?;
    let _ = Command::new("dsuctl").args(["destroy", "kvredis"]).output();
    let kv = kv("kv_v1", KV_PORT, &[])?;
    // No -t: the whole default set, as a user would run it.
    let rows = redis_benchmark(KV_PORT, &["-n", "1000", "-r", "100000", "-c", "10"])?;
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    for want in [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "RPOP",
        "SADD",
        "HSET",
        "SPOP",
        "ZADD",
        "ZPOPMIN",
        "LPUSH (needed to benchmark LRANGE)",
        "LRANGE_100 (first 100 elements)",
        "LRANGE_300 (first 300 elements)",
        "LRANGE_500 (first 500 elements)",
        "LRANGE_600 (first 600 elements)",
        "MSET (10 keys)",
    ] {
        ensure!(
            names.contains(&want),
            "no {want:?} result in {names:?}\n{}",
            kv.output()
        );
    }
    ensure!(
        rows.len() == 20,
        "{} results, want 20: {names:?}",
        rows.len()
    );
    for (t, rps, p50, p99) in &rows {
        println!("kv-default-set: {t}: {rps:.0} req/s, p50 {p50:.3} ms, p99 {p99:.3} ms");
    }
    drop(kv);
    let _ = Command::new("dsuctl").args(["destroy", "kvredis"]).output();
    Ok(())
}

fn bench() -> TestResult {
    // About 25 minutes of TCG on a shared host: only when asked for by name.
    if !std::env::args()
        .skip(1)
        .any(|f| f.contains("bench_vs_redis"))
    {
        return Err(Failure::Skip(
            "a benchmark; run it with scripts/vm-test.sh kv::bench_vs_redis_server".into(),
        ));
    }
    tools_present()?;
    let servers: [(&str, &str, &[&str], &str); 5] = [
        (
            "redis-server",
            "redis-server",
            &[],
            "set,get,lpush,lrange_100,hset",
        ),
        ("kv", "kv_local", &[], "set,get,lpush,lrange_100,hset"),
        (
            "kv --no-dsu",
            "kv_local",
            &["--no-dsu"],
            "set,get,lpush,lrange_100,hset",
        ),
        (
            "kv --thread-per-connection",
            "kv_local",
            &["--thread-per-connection"],
            "set,get,lpush,lrange_100,hset",
        ),
        (
            "kv_v1 (fixed table, thread per connection: baseline)",
            "kv_v1",
            &["--thread-per-connection"],
            "set,get",
        ),
    ];
    let modes: [(&str, &[&str]); 2] = [
        (
            "-c 50 -P 16 -r 100000",
            &["-n", "10000", "-c", "50", "-P", "16", "-r", "100000"],
        ),
        (
            "-c 50 -r 100000 (no pipelining)",
            &["-n", "1000", "-c", "50", "-r", "100000"],
        ),
    ];
    for round in 1..=2 {
        for (mode, margs) in modes {
            // Round 2 runs the servers in reverse order, so that no server always
            // follows the same one (a server's exit leaves the guest busy for a while).
            let order: Vec<_> = if round == 1 {
                servers.iter().collect()
            } else {
                servers.iter().rev().collect()
            };
            for &(label, program, extra, tests) in order {
                let p = if program == "redis-server" {
                    redis_server(REDIS_PORT)?
                } else {
                    kv(program, REDIS_PORT, extra)?
                };
                let mut args = vec!["-t", tests];
                args.extend_from_slice(margs);
                let rows = redis_benchmark(REDIS_PORT, &args)?;
                for (t, rps, p50, p99) in rows {
                    println!(
                        "kv-bench: round {round} | {mode} | {label} | {t} | {rps:.0} req/s | p50 {p50:.3} ms | p99 {p99:.3} ms"
                    );
                }
                drop(p);
                let _ = Command::new("dsuctl").args(["destroy", "kvredis"]).output();
            }
        }
    }
    Ok(())
}

#[distributed_slice(TESTS)]
static KV_BENCH_HEAP: VmTest = VmTest {
    name: "kv::bench_heap_memory_and_update_p99",
    phase: Phase::Main,
    run: bench_heap,
};

/// Sends `SET key:%012d <100 bytes>` for `0..n` in pipelines of 1000 and checks every
/// reply is `+OK`.
fn load_keys(port: u16, n: usize) -> TestResult {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let value = [b'v'; 100];
    let mut reply = vec![0u8; 5 * 1000];
    for batch in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut req = Vec::with_capacity(batch.len() * 160);
        for i in batch {
            let key = format!("key:{i:012}");
            req.extend_from_slice(
                format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$100\r\n", key.len()).as_bytes(),
            );
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req)?;
        let want = 5 * batch.len();
        s.read_exact(&mut reply[..want])?;
        ensure!(
            reply[..want].chunks(5).all(|r| r == b"+OK\r\n"),
            "SET replies: {:?}",
            String::from_utf8_lossy(&reply[..want.min(200)])
        );
    }
    Ok(())
}

/// INFO's `used_memory` of the server on `port`.
fn used_memory(port: u16) -> Result<u64, Failure> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "memory"])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
        .ok_or_else(|| Failure::Fail("no used_memory in INFO memory".into()))
}

/// Issue 12's memory and update-latency benchmarks, in one VM run (only when a filter
/// names it: about 10 minutes of TCG):
///
/// - memory: 1,000,000 keys of 100-byte string values, in redis-server (`used_memory`)
///   and in `kv_v1` (the shared heap's allocated bytes, headers included), growth over
///   the empty server, per key;
/// - p99 during v1 -> v2: `redis-benchmark -t set,get -c 50 -P 16 -r 100000`, three times
///   against `kv_v1` (steady state), then once with `kv_v2` started two seconds in (v1
///   retires when the run's connections close), then three times against `kv_v2`; each
///   test's p99 during the update over the mean of its steady-state p99s.
fn bench_heap() -> TestResult {
    if !std::env::args().skip(1).any(|f| f.contains("bench_heap")) {
        return Err(Failure::Skip(
            "a benchmark; run it with scripts/vm-test.sh kv::bench_heap".into(),
        ));
    }
    tools_present()?;
    const KEYS: usize = 1_000_000;
    let mut per_key = Vec::new();
    for label in ["redis-server", "kv_v1"] {
        let _ = Command::new("dsuctl").args(["destroy", "kvredis"]).output();
        let p = if label == "redis-server" {
            redis_server(REDIS_PORT)?
        } else {
            kv(
                "kv_v1",
                REDIS_PORT,
                &["--maxmemory", &(1u64 << 30).to_string()],
            )?
        };
        let before = used_memory(REDIS_PORT)?;
        let t0 = Instant::now();
        load_keys(REDIS_PORT, KEYS)?;
        let after = used_memory(REDIS_PORT)?;
        let b = (after - before) as f64 / KEYS as f64;
        println!(
            "kv-memory: {label}: used_memory {before} -> {after} for {KEYS} keys of 100-byte values: {b:.1} bytes per key (loaded in {} ms)",
            t0.elapsed().as_millis()
        );
        per_key.push(b);
        drop(p);
    }
    println!(
        "kv-memory: kv_v1 (shared heap) / redis-server = {:.3} (goal <= 1.2)",
        per_key[1] / per_key[0]
    );
    let _ = Command::new("dsuctl").args(["destroy", "kvredis"]).output();

    // p99 during v1 -> v2.
    std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1")?;
    let args = [
        "-t", "set,get", "-n", "16000", "-c", "50", "-P", "16", "-r", "100000",
    ];
    let v1 = kv("kv_v1", REDIS_PORT, &[])?;
    let mut steady: Vec<Vec<(String, f64, f64, f64)>> = Vec::new();
    for _ in 0..3 {
        steady.push(redis_benchmark(REDIS_PORT, &args)?);
    }
    let port_s = REDIS_PORT.to_string();
    let bench = std::thread::spawn(move || {
        redis_benchmark(REDIS_PORT, &args).map_err(|e| format!("{e:?}"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let v2 = start(
        "kv_v2-bench",
        "kv_v2",
        &["--port", &port_s, "--segment", "kvredis"],
        REDIS_PORT,
    )?;
    let during = bench
        .join()
        .map_err(|_| Failure::Fail("benchmark thread panicked".into()))?
        .map_err(Failure::Fail)?;
    let t0 = Instant::now();
    let mut v1 = v1;
    while v1.child.try_wait()?.is_none() {
        ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "kv_v1 did not retire: {}",
            v1.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        v1.output().contains("retired"),
        "kv_v1 did not retire by itself: {}",
        v1.output()
    );
    for _ in 0..3 {
        steady.push(redis_benchmark(REDIS_PORT, &args)?);
    }
    for (test, rps, p50, p99) in &during {
        let base: Vec<f64> = steady
            .iter()
            .flatten()
            .filter(|r| &r.0 == test)
            .map(|r| r.3)
            .collect();
        let mean = base.iter().sum::<f64>() / base.len() as f64;
        let rps_base = steady
            .iter()
            .flatten()
            .filter(|r| &r.0 == test)
            .map(|r| r.1)
            .sum::<f64>()
            / base.len() as f64;
        println!(
            "kv-update-p99: {test}: during v1 -> v2 {rps:.0} req/s p50 {p50:.3} ms p99 {p99:.3} ms; steady state (3 runs on v1, 3 on v2) {rps_base:.0} req/s p99 {} ms (mean {mean:.3}); ratio {:.2} (goal <= 2)",
            base.iter()
                .map(|b| format!("{b:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            p99 / mean
        );
    }
    for line in v2.output().lines().chain(v1.output().lines()) {
        println!("kv-update-p99: {line}");
    }
    drop(v2);
    let _ = Command::new("dsuctl").args(["destroy", "kvredis"]).output();
    Ok(())
}
