//! The kv server (`examples/kv`) under the supervisor, `dsuctl run`, updated with
//! `dsuctl upgrade` while Debian's unmodified `redis-benchmark` loads it.
//!
//! - `supervisor::kv_upgrade_under_load`: v1 -> v2 -> v3. Zero failed requests and no
//!   refused connection (a prober connects all along), each old version exits after the
//!   new one is ready, and the supervisor's own notify messages (a datagram socket of the
//!   test is its `NOTIFY_SOCKET`) come in order: `MAINPID=`, `READY=1`, then per upgrade
//!   `RELOADING=1` with `MONOTONIC_USEC=` and `READY=1`, each with `STATUS=`, and
//!   `STOPPING=1` after SIGTERM, which the supervisor forwards and then ends by.
//! - `supervisor::kv_v2_crashes_before_ready` and `supervisor::kv_v2_never_ready`: a v2 that
//!   exits (status 3) or hangs before `READY=1` (`--test-fail-before-ready`). The upgrade
//!   reports why (exit status, or the ready timeout), v2 is killed, v1 keeps serving with
//!   zero failed requests, and a later upgrade to a good v2 works.
//!
//! The failing v2 fails before it attaches: until the kernel's commit and abort (branch
//! `lifecycle`: a version is a candidate until it declares itself ready, and an old one
//! retires only on a *ready* newer version) a v2 that attached would make v1 retire at
//! once. [`LIFECYCLE`] turns on the `_after_attach` variants, which fail after attaching
//! and also check that the aborted v2's added variable (`kv::CMD_STATS`) is gone.

use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether the kernel and the kv server have commit and abort (branch `lifecycle`):
/// true since that branch is merged: the `_after_attach` variants run.
const LIFECYCLE: bool = true;

/// redis-benchmark requests per test per run.
const N: u64 = 1000;

#[distributed_slice(TESTS)]
static SUP_UPGRADE: VmTest = VmTest {
    name: "supervisor::kv_upgrade_under_load",
    phase: Phase::Main,
    run: upgrade_under_load,
};

#[distributed_slice(TESTS)]
static SUP_CRASH: VmTest = VmTest {
    name: "supervisor::kv_v2_crashes_before_ready",
    phase: Phase::Main,
    run: || failed_upgrade(Fail::Exit, false),
};

#[distributed_slice(TESTS)]
static SUP_HANG: VmTest = VmTest {
    name: "supervisor::kv_v2_never_ready",
    phase: Phase::Main,
    run: || failed_upgrade(Fail::Hang, false),
};

#[distributed_slice(TESTS)]
static SUP_CRASH_BOUND: VmTest = VmTest {
    name: "supervisor::kv_v2_crashes_before_ready_after_attach",
    phase: Phase::Main,
    run: || failed_upgrade(Fail::Exit, true),
};

#[distributed_slice(TESTS)]
static SUP_HANG_BOUND: VmTest = VmTest {
    name: "supervisor::kv_v2_never_ready_after_attach",
    phase: Phase::Main,
    run: || failed_upgrade(Fail::Hang, true),
};

fn need_tools() -> TestResult {
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
    Ok(())
}

/// One request on a new connection; the reply's first line (a bulk reply whole).
fn request(port: u16, cmd: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{cmd}\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "{cmd}: connection closed after {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(end) = text.find("\r\n") else {
            continue;
        };
        if let Some(len) = text.strip_prefix('$') {
            let len: usize = len[..end - 1].parse().map_err(|_| text.clone())?;
            if buf.len() >= end + 2 + len {
                return Ok(text[end + 2..end + 2 + len].to_string());
            }
            continue;
        }
        return Ok(text[..end].to_string());
    }
}

/// The pid of the version that answers a new connection.
fn serving_pid(port: u16) -> Result<u32, String> {
    let info = request(port, "INFO")?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("no process_id in INFO: {info}"))
}

/// One redis-benchmark run; an error on a non-zero exit or any error line.
fn redis_benchmark(port: u16) -> Result<(), String> {
    let out = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-t", "set,get,incr"])
        .args(["-n", &N.to_string(), "-r", "10000", "-c", "8", "--csv"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-benchmark: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = text
        .lines()
        .filter(|l| {
            l.starts_with("\"SET\"") || l.starts_with("\"GET\"") || l.starts_with("\"INCR\"")
        })
        .count();
    if !out.status.success() || text.to_lowercase().contains("error") || rows != 3 {
        return Err(format!("redis-benchmark failed ({}): {text}", out.status));
    }
    Ok(())
}

/// Load while an update runs: redis-benchmark back to back, and a prober that opens a
/// new connection for each PING (a refused or reset connection is a failure).
struct Load {
    stop: Arc<AtomicBool>,
    bench: std::thread::JoinHandle<Result<u64, String>>,
    probe: std::thread::JoinHandle<Result<u64, String>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let bench = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut runs = 0;
                loop {
                    let done = stop.load(Relaxed);
                    redis_benchmark(port)?;
                    runs += 1;
                    if done {
                        return Ok(runs);
                    }
                }
            }
        });
        let probe = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut pings = 0;
                while !stop.load(Relaxed) {
                    let r = request(port, "PING")?;
                    if r != "+PONG" {
                        return Err(format!("PING: {r}"));
                    }
                    pings += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(pings)
            }
        });
        Load { stop, bench, probe }
    }

    /// Stops the load; the redis-benchmark runs and PINGs done, or the first failure.
    fn finish(self) -> Result<(u64, u64), Failure> {
        self.stop.store(true, Relaxed);
        let join = |h: std::thread::JoinHandle<Result<u64, String>>| {
            h.join()
                .map_err(|_| Failure::Fail("a load thread panicked".into()))?
                .map_err(Failure::Fail)
        };
        let runs = join(self.bench)?;
        let pings = join(self.probe)?;
        Ok((runs, pings))
    }
}

/// The supervisor running kv, its log, and its notify messages.
struct Supervised {
    segment: String,
    control: String,
    child: Child,
    log: String,
    notices: Arc<Mutex<Vec<String>>>,
    stop_notices: Arc<AtomicBool>,
    notify_path: String,
}

impl Supervised {
    fn start(segment: &str, port: u16, ready_timeout: u32) -> Result<Supervised, Failure> {
        let _ = Command::new("dsuctl").args(["destroy", segment]).output();
        let notify_path = format!("/tmp/{segment}.manager");
        let _ = std::fs::remove_file(&notify_path);
        let manager = UnixDatagram::bind(&notify_path)?;
        manager.set_read_timeout(Some(Duration::from_millis(200)))?;
        let notices = Arc::new(Mutex::new(Vec::new()));
        let stop_notices = Arc::new(AtomicBool::new(false));
        std::thread::spawn({
            let (notices, stop) = (notices.clone(), stop_notices.clone());
            move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Relaxed) {
                    if let Ok(n) = manager.recv(&mut buf) {
                        let s = String::from_utf8_lossy(&buf[..n]).into_owned();
                        notices.lock().unwrap().push(s);
                    }
                }
            }
        });
        let log = format!("/tmp/{segment}.log");
        let out = std::fs::File::create(&log)?;
        let control = format!("/tmp/{segment}.sock");
        let child = Command::new("dsuctl")
            .args(["run", "--segment", segment, "--control", &control])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--ready-timeout", &ready_timeout.to_string()])
            .args(["--drain-timeout", "300", "--stop-timeout", "10", "--"])
            .args(["kv_v1", "--segment", segment, "--drain-timeout", "240"])
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| Failure::Fail(format!("cannot start dsuctl run: {e}")))?;
        let s = Supervised {
            segment: segment.into(),
            control,
            child,
            log,
            notices,
            stop_notices,
            notify_path,
        };
        s.wait_notice(1, "READY=1", Duration::from_secs(120))?;
        Ok(s)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn notices(&self) -> Vec<String> {
        self.notices.lock().unwrap().clone()
    }

    /// Waits until notice number `index` (from 0) arrived; checks it starts with `head`.
    fn wait_notice(&self, index: usize, head: &str, timeout: Duration) -> TestResult {
        let t0 = Instant::now();
        loop {
            if let Some(n) = self.notices().get(index) {
                ensure!(
                    n.starts_with(head),
                    "notify message {index} is {n:?}, want {head}...: {:?}\n{}",
                    self.notices(),
                    self.output()
                );
                return Ok(());
            }
            ensure!(
                t0.elapsed() < timeout,
                "no notify message {index} ({head}) after {timeout:?}: {:?}\n{}",
                self.notices(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `dsuctl upgrade SEG ARGV...`: its success and its output.
    fn upgrade(&self, argv: &[&str]) -> Result<(bool, String), Failure> {
        let o = Command::new("dsuctl")
            .args(["upgrade", &self.segment, "--control", &self.control])
            .args(argv)
            .output()?;
        Ok((
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ))
    }

    /// Waits until the log has `text`.
    fn wait_log(&self, text: &str, timeout: Duration) -> TestResult {
        let t0 = Instant::now();
        while !self.output().contains(text) {
            ensure!(
                t0.elapsed() < timeout,
                "no {text:?} in the supervisor's log after {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Prints the supervisor's own log lines (not the versions' STATUS= echoes) for the
    /// console log, each prefixed with `tag`.
    fn print_log(&self, tag: &str) {
        for line in self.output().lines() {
            if !line.contains(": STATUS=") {
                println!("{tag}: {line}");
            }
        }
    }

    /// SIGTERM: the supervisor forwards it and ends as kv did (by SIGTERM).
    fn terminate(mut self) -> TestResult {
        // SAFETY: kill(2) on our child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "the supervisor still runs 60 s after SIGTERM:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        use std::os::unix::process::ExitStatusExt;
        ensure_eq!(
            status.signal(),
            Some(libc::SIGTERM),
            "the supervisor ends as kv did\n{}",
            self.output()
        );
        let last = self.notices().last().cloned().unwrap_or_default();
        ensure!(last.starts_with("STOPPING=1"), "last notice {last:?}");
        Ok(())
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our child, not yet reaped.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() {
                if t0.elapsed() > Duration::from_secs(30) {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.stop_notices.store(true, Relaxed);
        let _ = std::fs::remove_file(&self.notify_path);
        let _ = Command::new("dsuctl")
            .args(["destroy", &self.segment])
            .output();
    }
}

/// The pid in "... to kv_vN (pid P), ..." of an upgrade's answer.
fn upgraded_pid(answer: &str) -> Option<u32> {
    let i = answer.find("(pid ")? + 5;
    answer[i..].split(')').next()?.parse().ok()
}

fn upgrade_under_load() -> TestResult {
    need_tools()?;
    let port = 16480;
    let t_start = Instant::now();
    let sup = Supervised::start("kvsup-up", port, 120)?;
    let started = t_start.elapsed();
    let v1 = serving_pid(port)?;
    ensure!(
        sup.output()
            .contains("using the inherited listener 127.0.0.1:16480"),
        "kv_v1 takes the supervisor's socket:\n{}",
        sup.output()
    );
    ensure_eq!(request(port, "SET before-update 1")?, "+OK", "SET");
    let load = Load::start(port);
    std::thread::sleep(Duration::from_millis(1500));
    let mut olds = vec![v1];
    let mut notice = 2;
    let mut times = Vec::new();
    for v in ["kv_v2", "kv_v3"] {
        let t0 = Instant::now();
        let (ok, answer) =
            sup.upgrade(&[v, "--segment", &sup.segment, "--drain-timeout", "240"])?;
        ensure!(ok, "upgrade to {v}: {answer}\n{}", sup.output());
        ensure!(answer.contains(&format!("upgraded to {v}")), "{answer}");
        times.push(t0.elapsed());
        sup.wait_notice(
            notice,
            "RELOADING=1\nMONOTONIC_USEC=",
            Duration::from_secs(5),
        )?;
        sup.wait_notice(
            notice + 1,
            "READY=1\nSTATUS=serving: ",
            Duration::from_secs(5),
        )?;
        notice += 2;
        let new = upgraded_pid(&answer).ok_or(format!("no pid in {answer:?}"))?;
        // The old version exits by itself (it learns of the newer version from dsu), after
        // the new one is ready: the log says so in that order.
        let old = *olds.last().expect("one");
        let exited = format!("(pid {old}) exited with status 0 after draining");
        sup.wait_log(&exited, Duration::from_secs(300))?;
        let log = sup.output();
        let ready_at = log.find(&format!("upgraded to {v} (pid {new})"));
        ensure!(
            ready_at.is_some_and(|r| r < log.find(&exited).expect("waited for")),
            "the old version exited before the new one was ready:\n{log}"
        );
        olds.push(new);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let (runs, pings) = load.finish()?;
    ensure!(runs >= 2 && pings > 0, "load: {runs} runs, {pings} pings");
    ensure_eq!(serving_pid(port)?, *olds.last().expect("v3"), "v3 serves");
    ensure_eq!(request(port, "GET before-update")?, "1", "the key survives");
    let notices = sup.notices();
    ensure_eq!(
        notices[0],
        format!("MAINPID={}\nSTATUS=starting kv_v1", sup.child.id()),
        "first notice"
    );
    ensure!(
        notices.iter().all(|n| n.contains("STATUS=")),
        "every notice has a STATUS=: {notices:?}"
    );
    println!(
        "supervisor: v1 -> v2 -> v3 under load: {runs} redis-benchmark runs, {pings} probes, \
         0 failed; v1 ready {} ms after the start, upgrades answered after {} ms and {} ms",
        started.as_millis(),
        times[0].as_millis(),
        times[1].as_millis()
    );
    sup.print_log("supervisor-up");
    let t_stop = Instant::now();
    sup.terminate()?;
    println!(
        "supervisor: stopped {} ms after SIGTERM",
        t_stop.elapsed().as_millis()
    );
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Fail {
    Exit,
    Hang,
}

fn failed_upgrade(fail: Fail, after_attach: bool) -> TestResult {
    if after_attach && !LIFECYCLE {
        return Err(Failure::Skip(
            "needs commit and abort (branch lifecycle): set LIFECYCLE in kv_supervisor.rs".into(),
        ));
    }
    need_tools()?;
    let (segment, port, ready_timeout) = match fail {
        Fail::Exit => ("kvsup-crash", 16481, 120),
        Fail::Hang => ("kvsup-hang", 16482, 8),
    };
    let t_start = Instant::now();
    let sup = Supervised::start(segment, port, ready_timeout)?;
    let started = t_start.elapsed();
    let v1 = serving_pid(port)?;
    let load = Load::start(port);
    std::thread::sleep(Duration::from_millis(1500));
    let point = match (fail, after_attach) {
        (Fail::Exit, false) => "exit-before-attach",
        (Fail::Hang, false) => "hang-before-attach",
        (Fail::Exit, true) => "exit-after-attach",
        (Fail::Hang, true) => "hang-after-attach",
    };
    let t0 = Instant::now();
    let (ok, answer) = sup.upgrade(&[
        "kv_v2",
        "--segment",
        segment,
        "--test-fail-before-ready",
        point,
    ])?;
    let took = t0.elapsed();
    ensure!(!ok, "the upgrade to a failing v2 succeeded: {answer}");
    let why = match fail {
        Fail::Exit => "exited with status 3 before READY=1".to_string(),
        Fail::Hang => format!("did not send READY=1 within {ready_timeout} s: killed"),
    };
    ensure!(
        answer.contains(&why) && answer.contains(&format!("kv_v1 (pid {v1}) still serves")),
        "the answer says why: {answer}"
    );
    sup.wait_notice(2, "RELOADING=1", Duration::from_secs(5))?;
    sup.wait_notice(
        3,
        "READY=1\nSTATUS=upgrade failed: ",
        Duration::from_secs(5),
    )?;
    // The load goes on against v1.
    std::thread::sleep(Duration::from_millis(1500));
    let (runs, pings) = load.finish()?;
    ensure_eq!(serving_pid(port)?, v1, "v1 still serves");
    ensure_eq!(request(port, "PING")?, "+PONG", "PING");
    if after_attach {
        // The aborted v2's added variable is gone.
        let show = Command::new("dsuctl").args(["show", segment]).output()?;
        let show = String::from_utf8_lossy(&show.stdout).into_owned();
        ensure!(
            !show.contains("kv::CMD_STATS"),
            "kv::CMD_STATS, added by the aborted v2, is still in the segment:\n{show}"
        );
    }
    // The failure left nothing behind: a good v2 takes over.
    let t_good = Instant::now();
    let (ok, answer) = sup.upgrade(&["kv_v2", "--segment", segment])?;
    ensure!(
        ok,
        "upgrade to a good v2 after the failure: {answer}\n{}",
        sup.output()
    );
    println!(
        "supervisor: v2 {point}: upgrade failed after {} ms ({why}); {runs} redis-benchmark \
         runs, {pings} probes, 0 failed; v1 served throughout (ready {} ms after the start); \
         a good v2 then ready after {} ms",
        took.as_millis(),
        started.as_millis(),
        t_good.elapsed().as_millis()
    );
    sup.print_log(&format!("supervisor-{point}"));
    let t_stop = Instant::now();
    sup.terminate()?;
    println!(
        "supervisor: stopped {} ms after SIGTERM",
        t_stop.elapsed().as_millis()
    );
    Ok(())
}
