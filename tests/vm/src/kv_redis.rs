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
//!   pipelining on redis-server, `kv_v1` (keyspace in the shared heap), `kv_v1 --no-dsu`
//!   (the same keyspace in the process's heap) and `kv_v1` with a thread per connection,
//!   all running at once and interleaved test by test over five rounds; prints the
//!   figures and tables that BENCHMARKS.md quotes, with each server's CPU time per
//!   request, and fails only when a run reports an error. It runs only when a filter
//!   names it (`scripts/vm-test.sh kv::bench_vs_redis_server`): over 30 minutes of TCG on
//!   the test kernel of a busy host (set `DSU_VM_TIMEOUT`);
//! - `kv::bench_dsu_cost`: the same for redis-server, `kv_v1`, `kv_v1 --no-dsu` and `kv_v1`
//!   with one worker, three rounds of shorter runs (only when named).

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

#[distributed_slice(TESTS)]
static KV_BENCH_DSU_COST: VmTest = VmTest {
    name: "kv::bench_dsu_cost",
    phase: Phase::Main,
    run: bench_dsu_cost,
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

/// CPU and scheduling counters of one server process and of the guest, read before and
/// after a `redis-benchmark` run: where the time of a run went (user or kernel time of the
/// server, the client's share, page faults, context switches).
#[derive(Clone, Copy, Default)]
struct Counters {
    /// Server: user and system time (clock ticks), minor faults, voluntary and
    /// involuntary context switches summed over its threads.
    utime: u64,
    stime: u64,
    minflt: u64,
    vcsw: u64,
    ivcsw: u64,
    /// Guest, all CPUs: user (with nice), system (with irq and softirq), idle (clock ticks).
    cpu_user: u64,
    cpu_sys: u64,
    cpu_idle: u64,
}

impl Counters {
    fn read(pid: u32) -> Counters {
        let mut c = Counters::default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            // Fields 10, 14 and 15 of proc(5), counted from the state (field 3).
            c.minflt = f.get(7).copied().unwrap_or(0);
            c.utime = f.get(11).copied().unwrap_or(0);
            c.stime = f.get(12).copied().unwrap_or(0);
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                for line in st.lines() {
                    let n = |l: &str| l.split_whitespace().nth(1).and_then(|x| x.parse().ok());
                    if line.starts_with("voluntary_ctxt_switches") {
                        c.vcsw += n(line).unwrap_or(0);
                    } else if line.starts_with("nonvoluntary_ctxt_switches") {
                        c.ivcsw += n(line).unwrap_or(0);
                    }
                }
            }
        }
        let all = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        if let Some(cpu) = all.lines().find(|l| l.starts_with("cpu ")) {
            let f: Vec<u64> = cpu
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            let g = |i: usize| f.get(i).copied().unwrap_or(0);
            c.cpu_user = g(0) + g(1);
            c.cpu_sys = g(2) + g(5) + g(6);
            c.cpu_idle = g(3) + g(4);
        }
        c
    }

    /// Adds what changed from `before` to `after`.
    fn add(&mut self, before: Counters, after: Counters) {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        self.utime += d(after.utime, before.utime);
        self.stime += d(after.stime, before.stime);
        self.minflt += d(after.minflt, before.minflt);
        self.vcsw += d(after.vcsw, before.vcsw);
        self.ivcsw += d(after.ivcsw, before.ivcsw);
        self.cpu_user += d(after.cpu_user, before.cpu_user);
        self.cpu_sys += d(after.cpu_sys, before.cpu_sys);
        self.cpu_idle += d(after.cpu_idle, before.cpu_idle);
    }

    /// Accumulated counters as a line: the server's CPU time per request (user and
    /// system, µs), its minor faults and context switches per 1000 requests, and the
    /// guest's CPU split over the runs.
    fn line(&self, requests: u64) -> String {
        let n = requests.max(1) as f64;
        // USER_HZ is 100 on Linux: a tick is 10 ms.
        let us = |ticks: u64| ticks as f64 * 10_000.0 / n;
        let per_k = |x: u64| x as f64 * 1000.0 / n;
        let total = (self.cpu_user + self.cpu_sys + self.cpu_idle).max(1) as f64;
        format!(
            "{requests} req | server user {:.1} us + sys {:.1} us per req | {:.1} minflt, {:.0} vcsw, {:.0} ivcsw per 1000 req | guest user {:.0}% sys {:.0}% idle {:.0}%",
            us(self.utime),
            us(self.stime),
            per_k(self.minflt),
            per_k(self.vcsw),
            per_k(self.ivcsw),
            100.0 * self.cpu_user as f64 / total,
            100.0 * self.cpu_sys as f64 / total,
            100.0 * self.cpu_idle as f64 / total,
        )
    }
}

/// A server under test: its label, program (`redis-server` or a kv binary), extra
/// arguments, and the `redis-benchmark -t` tests it runs (`None`: all of them).
type Server<'a> = (&'a str, &'a str, &'a [&'a str], Option<&'a [&'a str]>);

/// One `redis-benchmark` result: req/s, p50 and p99 in ms.
#[derive(Clone, Copy)]
struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Benchmarks `servers`, all running at once (each on its own port and dsu segment, idle
/// while another is measured), interleaved test by test: for each mode, test and round,
/// one `redis-benchmark -t <test>` run per server, in an order that rotates every round.
/// A busy host slows whichever run it meets, so adjacent runs of the same test are what
/// the ratios compare; the tables give medians over the rounds. Prints a `<tag>:` line per
/// run, per-server CPU counters per mode (`<tag>-cpu:`, [`Counters`]), and a table per
/// mode (`<tag>-table:`) with the medians and the ratios of the first server named in
/// `ratios` to the others, as the median of the per-round ratios and their range.
fn interleaved(
    tag: &str,
    rounds: usize,
    servers: &[Server],
    tests: &[&str],
    modes: &[(&str, &[&str])],
    ratios: &[(usize, usize)],
) -> TestResult {
    println!(
        "{tag}: clocksource {}, {} rounds",
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default()
            .trim(),
        rounds
    );
    let mut procs = Vec::new();
    for (i, &(_, program, extra, _)) in servers.iter().enumerate() {
        let port = REDIS_PORT + 10 + i as u16;
        procs.push(if program == "redis-server" {
            redis_server(port)?
        } else {
            let port_s = port.to_string();
            let segment = format!("kvbench{i}");
            let mut args = vec!["--port", &port_s, "--segment", &segment];
            args.extend_from_slice(extra);
            start(&format!("{program}-{i}"), program, &args, port)?
        });
    }
    let runs = |i: usize, t: &str| servers[i].3.is_none_or(|ts| ts.contains(&t));
    for &(mode, margs) in modes {
        // samples[test][server][round]
        let mut samples = vec![vec![Vec::<Sample>::new(); servers.len()]; tests.len()];
        let mut cpu = vec![(Counters::default(), 0u64); servers.len()];
        for round in 0..rounds {
            for (ti, &t) in tests.iter().enumerate() {
                for k in 0..servers.len() {
                    let i = (k + round) % servers.len();
                    if !runs(i, t) {
                        continue;
                    }
                    let port = REDIS_PORT + 10 + i as u16;
                    let pid = procs[i].child.id();
                    let mut args = vec!["-t", t];
                    args.extend_from_slice(margs);
                    let before = Counters::read(pid);
                    let rows = redis_benchmark(port, &args)?;
                    let after = Counters::read(pid);
                    let n: u64 = margs
                        .windows(2)
                        .find(|w| w[0] == "-n")
                        .and_then(|w| w[1].parse().ok())
                        .unwrap_or(0);
                    cpu[i].0.add(before, after);
                    cpu[i].1 += n * rows.len() as u64;
                    // `-t lrange_100` runs an LPUSH fill first: its row is not LRANGE's.
                    let (name, rps, p50, p99) = rows
                        .into_iter()
                        .last()
                        .ok_or_else(|| Failure::Fail(format!("no result for {t}")))?;
                    println!(
                        "{tag}: round {} | {mode} | {} | {name} | {rps:.0} req/s | p50 {p50:.3} ms | p99 {p99:.3} ms",
                        round + 1,
                        servers[i].0
                    );
                    samples[ti][i].push(Sample { rps, p50, p99 });
                }
            }
        }
        for (i, (c, n)) in cpu.iter().enumerate() {
            println!("{tag}-cpu: {mode} | {} | {}", servers[i].0, c.line(*n));
        }
        let mut head = format!("{tag}-table: {mode} | test");
        for s in servers {
            head += &format!(" | {} req/s (p50 / p99 ms)", s.0);
        }
        for &(a, b) in ratios {
            head += &format!(" | {} / {}", servers[a].0, servers[b].0);
        }
        println!("{head}");
        for (ti, &t) in tests.iter().enumerate() {
            let mut row = format!("{tag}-table: {mode} | {t}");
            for per in &samples[ti] {
                if per.is_empty() {
                    row += " | n/a";
                    continue;
                }
                let m = |f: fn(&Sample) -> f64| median(per.iter().map(f).collect());
                row += &format!(
                    " | {:.0} ({:.1} / {:.1})",
                    m(|x| x.rps),
                    m(|x| x.p50),
                    m(|x| x.p99)
                );
            }
            for &(a, b) in ratios {
                let (sa, sb) = (&samples[ti][a], &samples[ti][b]);
                if sa.is_empty() || sb.is_empty() {
                    row += " | n/a";
                    continue;
                }
                let r: Vec<f64> = sa.iter().zip(sb).map(|(x, y)| x.rps / y.rps).collect();
                let (lo, hi) = r
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
                row += &format!(" | {:.2} ({lo:.2}-{hi:.2})", median(r));
            }
            println!("{row}");
        }
    }
    drop(procs);
    for i in 0..servers.len() {
        let _ = Command::new("dsuctl")
            .args(["destroy", &format!("kvbench{i}")])
            .output();
    }
    Ok(())
}

/// Whether a filter on the command line names `name` (benchmarks run only when asked).
fn named(name: &str) -> bool {
    std::env::args().skip(1).any(|f| f.contains(name))
}

/// The tests of the issue's throughput table.
const BENCH_TESTS: [&str; 5] = ["set", "get", "lpush", "lrange_100", "hset"];

fn bench() -> TestResult {
    // Half an hour of TCG on a shared host: only when asked for by name.
    if !named("bench_vs_redis") {
        return Err(Failure::Skip(
            "a benchmark; run it with scripts/vm-test.sh kv::bench_vs_redis_server".into(),
        ));
    }
    tools_present()?;
    // kv_v1: the keyspace in the segment's shared heap; with --no-dsu the same keyspace
    // in the process's heap (issue 12's cost of dsu).
    let servers: [Server; 4] = [
        ("redis-server", "redis-server", &[], None),
        ("kv_v1", "kv_v1", &[], None),
        ("kv_v1 --no-dsu", "kv_v1", &["--no-dsu"], None),
        (
            "kv_v1 thread/conn",
            "kv_v1",
            &["--thread-per-connection"],
            None,
        ),
    ];
    let modes: [(&str, &[&str]); 2] = [
        (
            "-c 50 -P 16 -r 100000",
            &["-n", "6000", "-c", "50", "-P", "16", "-r", "100000"],
        ),
        (
            "-c 50 -r 100000 (no pipelining)",
            &["-n", "500", "-c", "50", "-r", "100000"],
        ),
    ];
    interleaved(
        "kv-bench",
        5,
        &servers,
        &BENCH_TESTS,
        &modes,
        &[(1, 0), (1, 2), (1, 3)],
    )
}

fn bench_dsu_cost() -> TestResult {
    if !named("bench_dsu_cost") {
        return Err(Failure::Skip(
            "a benchmark; run it with scripts/vm-test.sh kv::bench_dsu_cost".into(),
        ));
    }
    tools_present()?;
    let servers: [Server; 4] = [
        ("redis-server", "redis-server", &[], None),
        ("kv_v1", "kv_v1", &[], None),
        ("kv_v1 --no-dsu", "kv_v1", &["--no-dsu"], None),
        ("kv_v1 --workers 1", "kv_v1", &["--workers", "1"], None),
    ];
    let modes: [(&str, &[&str]); 2] = [
        (
            "-c 50 -P 16 -r 100000",
            &["-n", "3000", "-c", "50", "-P", "16", "-r", "100000"],
        ),
        (
            "-c 50 -r 100000 (no pipelining)",
            &["-n", "300", "-c", "50", "-r", "100000"],
        ),
    ];
    interleaved(
        "kv-dsu-cost",
        3,
        &servers,
        &BENCH_TESTS,
        &modes,
        &[(1, 0), (1, 2), (3, 1)],
    )
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
