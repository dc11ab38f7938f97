//! `dsu-bench snapshot`: what a live snapshot (DSU_IOC_SNAPSHOT, copy-on-first-write) costs
//! the versions that keep writing, for segments of several sizes.
//!
//! Per size, a fresh segment holds one variable of that size, bound and mapped in this
//! process. A writer thread sweeps it, writing one `u64` per page in order, and times every
//! store; the longest store is how long the writer was blocked (a fault that waits for a
//! snapshot's phase 1, or copies a page). Each trial measures a window with no snapshot
//! (the baseline: ordinary faults and scheduling), then a window that covers SNAPSHOT and
//! reading the whole image with `pread` (1 MiB at a time), then closing the fd. It prints
//! the medians over trials:
//!
//! - *SNAPSHOT call*: the ioctl's duration (both phases, from the caller's side);
//! - *longest stall*: the writer's longest store during the snapshot window, and in the
//!   baseline window;
//! - *write rate*: pages written per second during the snapshot window over the baseline
//!   window's rate (the slowdown from copying, the extra faults and the reader);
//! - *save read*: image bytes read per second.
//!
//! The comparison with Redis's `BGSAVE` fork time (issue 14) runs in the VM suite's bench
//! run, which has redis-server; this subcommand only measures dsu.

use crate::raw::{self, Handle, PAGE, Reservation};
use crate::stats::{fmt_ns, fmt_size, median};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One trial's figures.
#[derive(Clone, Copy, Default)]
struct Trial {
    call_ns: f64,
    stall_ns: f64,
    base_stall_ns: f64,
    rate_ratio: f64,
    read_bytes_per_s: f64,
}

/// The writer's counters, reset at each window.
struct Writer {
    stop: AtomicBool,
    max_ns: AtomicU64,
    pages: AtomicU64,
}

/// Sweeps `map`'s pages until told to stop, recording the longest store.
fn write_loop(map: usize, pages: usize, w: &Writer) {
    let mut k = 0u64;
    while !w.stop.load(Ordering::Relaxed) {
        k += 1;
        for i in 0..pages {
            let t = Instant::now();
            // SAFETY: `map` is a live shared mapping of `pages` pages for the thread's life.
            unsafe { ((map + i * PAGE) as *mut u64).write_volatile(k) };
            let ns = t.elapsed().as_nanos() as u64;
            w.max_ns.fetch_max(ns, Ordering::Relaxed);
            w.pages.fetch_add(1, Ordering::Relaxed);
            if w.stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }
}

/// Resets the writer's counters, runs `f`, and returns (its result, the longest store
/// during it, pages written per second during it).
fn window<T>(w: &Writer, f: impl FnOnce() -> io::Result<T>) -> io::Result<(T, f64, f64)> {
    w.max_ns.store(0, Ordering::Relaxed);
    let before = w.pages.load(Ordering::Relaxed);
    let t = Instant::now();
    let r = f()?;
    let secs = t.elapsed().as_secs_f64();
    let written = (w.pages.load(Ordering::Relaxed) - before) as f64;
    Ok((
        r,
        w.max_ns.load(Ordering::Relaxed) as f64,
        written / secs.max(1e-9),
    ))
}

/// Reads the whole image (segment pages) with pread; returns the bytes read.
fn read_image(fd: &std::os::fd::OwnedFd, len: usize) -> io::Result<usize> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0usize;
    while at < len {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                at as i64,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        at += n as usize;
    }
    Ok(at)
}

fn one_size(bytes: u64, trials: usize) -> io::Result<Trial> {
    let seg = format!("dsu-bench-snapshot-{}", std::process::id());
    raw::destroy_quietly(&seg);
    let h = Handle::open()?;
    h.attach(&seg, 0)?;
    let mut vars = [raw::var("state", bytes, 1)];
    h.resolve(&mut vars)?;
    h.bind_extents(&raw::extents(&vars), 0, "bench")?;
    let pages = raw::pages_for(bytes) as usize;
    let at = Reservation::new(pages * PAGE)?;
    h.map_fixed(&at)?;
    let w = Arc::new(Writer {
        stop: AtomicBool::new(false),
        max_ns: AtomicU64::new(0),
        pages: AtomicU64::new(0),
    });
    let (map, w2) = (at.ptr as usize, w.clone());
    let writer = std::thread::spawn(move || write_loop(map, pages, &w2));
    let result = (|| {
        // Warm up: every page faulted in and written once.
        std::thread::sleep(Duration::from_millis(200));
        let mut out = Vec::new();
        for _ in 0..trials {
            let snap_ns = Duration::from_millis(300);
            let (_, base_stall, base_rate) = window(&w, || {
                std::thread::sleep(snap_ns);
                Ok(())
            })?;
            let ((call_ns, read_rate), stall, rate) = window(&w, || {
                let t = Instant::now();
                let (fd, info) = h.snapshot(&seg)?;
                let call_ns = t.elapsed().as_nanos() as f64;
                let t = Instant::now();
                let n = read_image(&fd, (info.pages as usize) * PAGE)?;
                let read_rate = n as f64 / t.elapsed().as_secs_f64().max(1e-9);
                // A short tail with the snapshot still open, so that small images are
                // measured over a comparable window.
                std::thread::sleep(Duration::from_millis(20));
                drop(fd);
                Ok((call_ns, read_rate))
            })?;
            out.push(Trial {
                call_ns,
                stall_ns: stall,
                base_stall_ns: base_stall,
                rate_ratio: rate / base_rate.max(1.0),
                read_bytes_per_s: read_rate,
            });
        }
        let m = |f: fn(&Trial) -> f64| median(&out.iter().map(f).collect::<Vec<_>>());
        Ok(Trial {
            call_ns: m(|t| t.call_ns),
            stall_ns: m(|t| t.stall_ns),
            base_stall_ns: m(|t| t.base_stall_ns),
            rate_ratio: m(|t| t.rate_ratio),
            read_bytes_per_s: m(|t| t.read_bytes_per_s),
        })
    })();
    w.stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    drop(at);
    let _ = h.destroy(&seg);
    result
}

/// `dsu-bench snapshot [--trials T] BYTES...`: prints the table (see the module docs).
pub fn run(sizes: &[u64], trials: usize, out: &mut impl Write) -> io::Result<()> {
    if !raw::available() {
        return Err(io::Error::other("no /dev/dsu: load the module first"));
    }
    writeln!(
        out,
        "| segment | SNAPSHOT call | longest stall during a snapshot | longest stall without | write rate during / without | save read |"
    )?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- |")?;
    for &bytes in sizes {
        let t = one_size(bytes, trials)?;
        writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {}/s |",
            fmt_size(bytes),
            fmt_ns(t.call_ns),
            fmt_ns(t.stall_ns),
            fmt_ns(t.base_stall_ns),
            t.rate_ratio,
            fmt_size(t.read_bytes_per_s as u64)
        )?;
        out.flush()?;
    }
    writeln!(
        out,
        "(medians of {trials} trials; one writer thread sweeping the segment)"
    )?;
    Ok(())
}
