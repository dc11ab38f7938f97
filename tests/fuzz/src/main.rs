//! `dsu-fuzz`: a seeded, reproducible ioctl/mmap fuzzer for `/dev/dsu`.
//!
//! ```text
//! dsu-fuzz [--calls N] [--seed S] [--threads T] [--procs P] [--dev PATH]
//!          [--prefix NAME] [--max-seconds S] [--uid U --gid G] [--no-fork] [--no-cleanup]
//! ```
//!
//! `--calls` is the total over every process and thread. Each worker thread draws its
//! operations from its own stream derived from the seed, so a run with one process and one
//! thread repeats exactly; with more, the interleaving varies but each worker's choices do
//! not. Any errno is an acceptable answer: the fuzzer exits non-zero only for a *finding*,
//! an invariant the module broke (a successful private mapping, a mapped page that faults,
//! overlapping variables, a segment that outlives its users after DESTROY) or a fuzzer
//! process killed by a signal. Kernel reports (KASAN, lockdep, WARNING, BUG, kmemleak) are
//! for whoever reads the kernel log: the VM runner fails the run on any of them.

#![allow(clippy::collapsible_if, clippy::needless_range_loop)]

mod fuzz;
mod rng;
mod stats;

use fuzz::{Config, Worker};
use rng::Rng;
use stats::Stats;
use std::io::{Read, Write};
use std::time::Instant;

struct Args {
    calls: u64,
    seed: u64,
    threads: u64,
    procs: u64,
    dev: String,
    prefix: String,
    max_seconds: u64,
    uid: Option<u32>,
    gid: Option<u32>,
    fork: bool,
    cleanup: bool,
}

fn parse_num(s: &str) -> Result<u64, String> {
    let r = if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        s.parse()
    };
    r.map_err(|e| format!("{s}: {e}"))
}

fn parse_args() -> Result<Args, String> {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut a = Args {
        calls: 10_000,
        seed: (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32),
        threads: 2,
        procs: 2,
        dev: "/dev/dsu".into(),
        prefix: "fz".into(),
        max_seconds: 0,
        uid: None,
        gid: None,
        fork: true,
        cleanup: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--calls" => a.calls = parse_num(&value()?)?,
            "--seed" => a.seed = parse_num(&value()?)?,
            "--threads" => a.threads = parse_num(&value()?)?.max(1),
            "--procs" => a.procs = parse_num(&value()?)?.max(1),
            "--dev" => a.dev = value()?,
            "--prefix" => a.prefix = value()?,
            "--max-seconds" => a.max_seconds = parse_num(&value()?)?,
            "--uid" => a.uid = Some(parse_num(&value()?)? as u32),
            "--gid" => a.gid = Some(parse_num(&value()?)? as u32),
            "--no-fork" => a.fork = false,
            "--no-cleanup" => a.cleanup = false,
            "-h" | "--help" => {
                println!(
                    "dsu-fuzz [--calls N] [--seed S] [--threads T] [--procs P] [--dev PATH] [--prefix NAME]\n         [--max-seconds S] [--uid U --gid G] [--no-fork] [--no-cleanup]"
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.prefix.is_empty() || a.prefix.len() > 20 {
        return Err("--prefix must be 1..20 bytes".into());
    }
    Ok(a)
}

/// Runs the threads of process `p` and returns their merged counters.
fn run_proc(a: &Args, p: u64) -> Stats {
    let per_worker = a.calls / (a.threads * a.procs);
    let extra = a.calls % (a.threads * a.procs);
    let path = std::ffi::CString::new(a.dev.clone()).unwrap_or_default();
    // Two handles every thread of this process shares, so that threads race on one handle.
    let shared: Vec<i32> = (0..2)
        // SAFETY: a NUL-terminated path.
        .map(|_| unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })
        .filter(|fd| *fd >= 0)
        .collect();
    let mut total = Stats::default();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..a.threads)
            .map(|t| {
                let index = p * a.threads + t;
                let cfg = Config {
                    dev: a.dev.clone(),
                    prefix: a.prefix.clone(),
                    calls: per_worker + u64::from(index < extra),
                    max_seconds: a.max_seconds,
                    allow_fork: a.fork,
                };
                let rng = Rng::derive(a.seed, p, t);
                let shared = shared.clone();
                s.spawn(move || {
                    let mut w = Worker::new(cfg, rng, shared);
                    w.run();
                    w.stats.clone()
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(st) => total.merge(&st),
                Err(_) => total
                    .findings
                    .push(format!("process {p}: a worker thread panicked")),
            }
        }
    });
    for fd in shared {
        // SAFETY: descriptors opened above.
        unsafe { libc::close(fd) };
    }
    total
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dsu-fuzz: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "dsu-fuzz: seed={:#x} calls={} threads={} procs={} dev={} prefix={}",
        a.seed, a.calls, a.threads, a.procs, a.dev, a.prefix
    );
    println!(
        "dsu-fuzz: reproduce with: dsu-fuzz --seed {:#x} --calls {} --threads {} --procs {}",
        a.seed, a.calls, a.threads, a.procs
    );
    let _ = std::io::stdout().flush();
    if let Some(gid) = a.gid {
        // SAFETY: plain credential syscalls, before any thread exists.
        if unsafe { libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 } {
            eprintln!(
                "dsu-fuzz: cannot set gid {gid}: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(2);
        }
    }
    if let Some(uid) = a.uid {
        // SAFETY: as above.
        if unsafe { libc::setuid(uid) } != 0 {
            eprintln!(
                "dsu-fuzz: cannot set uid {uid}: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(2);
        }
    }
    let start = Instant::now();
    let mut total = Stats::default();
    if a.procs == 1 {
        total = run_proc(&a, 0);
    } else {
        let mut children = Vec::new();
        for p in 0..a.procs {
            let mut fds = [0i32; 2];
            // SAFETY: a pipe for the child's counters.
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
            // SAFETY: still single-threaded here, so the child may run anything.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: the child's read end is not needed.
                unsafe { libc::close(fds[0]) };
                let st = run_proc(&a, p);
                let mut w = {
                    use std::os::fd::FromRawFd;
                    // SAFETY: the write end belongs to this child.
                    unsafe { std::fs::File::from_raw_fd(fds[1]) }
                };
                let _ = w.write_all(st.to_wire().as_bytes());
                drop(w);
                // SAFETY: leave without running the parent's exit handlers.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: the parent's write end is not needed.
            unsafe { libc::close(fds[1]) };
            children.push((p, pid, fds[0]));
        }
        for (p, pid, rfd) in children {
            let mut text = String::new();
            {
                use std::os::fd::FromRawFd;
                // SAFETY: the read end belongs to the parent.
                let mut r = unsafe { std::fs::File::from_raw_fd(rfd) };
                let _ = r.read_to_string(&mut text);
            }
            let mut status = 0;
            // SAFETY: reaps our child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if pid < 0 {
                total.findings.push(format!("process {p}: fork failed"));
            } else if libc::WIFSIGNALED(status) {
                let f = format!(
                    "process {p} (pid {pid}) died by signal {}",
                    libc::WTERMSIG(status)
                );
                eprintln!("dsu-fuzz: FINDING: {f}");
                total.findings.push(f);
            }
            total.merge(&Stats::from_wire(&text));
        }
    }
    if a.cleanup {
        for f in fuzz::cleanup(&a.dev, &a.prefix) {
            eprintln!("dsu-fuzz: FINDING: {f}");
            total.findings.push(f);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let calls = total.total_calls();
    let ok: u64 = total.ok.iter().sum();
    print!("{}", total.summary());
    println!(
        "dsu-fuzz: done seed={:#x} calls={calls} ok={ok} failed={} elapsed={secs:.1}s rate={:.0}/s findings={}",
        a.seed,
        calls - ok,
        calls as f64 / secs.max(1e-9),
        total.findings.len()
    );
    for f in &total.findings {
        println!("dsu-fuzz: FINDING: {f}");
    }
    std::process::exit(if total.findings.is_empty() { 0 } else { 1 });
}
