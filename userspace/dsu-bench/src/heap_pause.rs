//! `dsu-bench heap-pause`: the update pause with state in a segment's shared heap, against
//! the copy and serialise baselines (figure 2's, [`crate::baselines`]) of the same bytes.
//!
//! The old version (a child process, `heap-pause-old`) attaches a fresh segment with a
//! heap, builds a `heap::Vec` of `n` `heap::Box<[u8; OBJECT]>` (each block 16 bytes of
//! header and `OBJECT` of payload) and stores the Vec's address in the global [`ROOT`].
//! Each new version (a child process, `heap-pause-new`) times, in itself, from just
//! before `dsu::Attach::attach` until it is ready: attached, the heap mapped and
//! installed, `ROOT` read, the Vec's length and its first and last object checked. It
//! then checks a sample of the objects outside the timed span. Filling is not timed.

use crate::baselines;
use crate::raw::{self, Reservation};
use crate::stats::{Clock, fmt_ns, fmt_size, median};
use dsu::heap;
use std::io::{self, BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Payload bytes of each object: with the 16-byte block header, 112 bytes a block.
pub const OBJECT: usize = 96;

dsu::global! {
    /// The address of the old version's `heap::Vec<heap::Box<[u8; OBJECT]>>` (0: none).
    #[dsu(name = "dsu_bench::heap_pause::ROOT")]
    static ROOT: AtomicU64 = AtomicU64::new(0);
}

type Objects = heap::Vec<heap::Box<[u8; OBJECT]>>;

/// The payload of object `i`: its index in the first 8 bytes, then a pattern.
fn object(i: usize) -> [u8; OBJECT] {
    let mut o = [0u8; OBJECT];
    o[..8].copy_from_slice(&(i as u64).to_le_bytes());
    o[8] = i as u8;
    o[OBJECT - 1] = !(i as u8);
    o
}

fn check_object(v: &Objects, i: usize) -> io::Result<()> {
    if *v[i] != object(i) {
        return Err(io::Error::other(format!("object {i} is corrupted")));
    }
    Ok(())
}

/// The heap reserve for `n` objects: the blocks, the Vec (grown by doubling: up to 2x
/// its final size while it moves) and slack.
fn reserve(n: usize) -> usize {
    let bytes = n * (OBJECT + 16) + 3 * n.next_power_of_two() * 8 + (64 << 20);
    bytes.next_multiple_of(2 << 20)
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// `heap-pause-old SEGMENT N`: fills, prints "filled NS BACKED_BYTES", then waits for
/// its stdin to close.
pub fn old(seg: &str, n: usize) -> io::Result<()> {
    let v = dsu::Attach::new(seg, "old")
        .heap(reserve(n))
        .mode(0o600)
        .attach()
        .map_err(err)?;
    let h = heap::install(v.heap().ok_or_else(|| err("the segment has no heap"))?).map_err(err)?;
    let clock = Clock::start();
    let mut objs = Objects::with_capacity(n);
    for i in 0..n {
        objs.push(heap::Box::new(object(i)));
    }
    let root = heap::Box::new(objs).leak() as *mut Objects;
    ROOT.store(root as u64, Ordering::Release);
    let fill = clock.ns();
    println!("filled {fill} {}", h.stats().size);
    io::stdout().flush()?;
    // Hold the version (and the heap's pages) until the driver is done.
    let mut line = String::new();
    while io::stdin().lock().read_line(&mut line)? > 0 {}
    drop(v);
    Ok(())
}

/// `heap-pause-new SEGMENT N`: prints "pause NS".
pub fn new(seg: &str, n: usize) -> io::Result<()> {
    let clock = Clock::start();
    let v = dsu::Attach::new(seg, "new")
        .mode(0o600)
        .attach()
        .map_err(err)?;
    let region = v.heap().ok_or_else(|| err("the segment has no heap"))?;
    heap::install(region).map_err(err)?;
    let root = ROOT.load(Ordering::Acquire) as *const Objects;
    if root.is_null() {
        return Err(err("ROOT is 0: the old version did not fill"));
    }
    // SAFETY: the old version leaked the Vec in the shared heap, mapped at the same address
    // here, and no longer changes it.
    let objs = unsafe { &*root };
    if objs.len() != n {
        return Err(err(format!("{} objects, want {n}", objs.len())));
    }
    check_object(objs, 0)?;
    check_object(objs, n - 1)?;
    let pause = clock.ns();
    for i in (0..n).step_by((n / 1000).max(1)) {
        check_object(objs, i)?;
    }
    println!("pause {pause}");
    drop(v);
    Ok(())
}

/// One state size: the old version's fill time and backed bytes, and the pauses.
struct Row {
    n: usize,
    fill_ns: f64,
    backed: u64,
    dsu: Vec<f64>,
    copy: Vec<f64>,
    serialise: Vec<f64>,
}

fn run_size(n: usize, trials: usize, serialise: bool) -> io::Result<Row> {
    let exe = std::env::current_exe()?;
    let seg = format!("bench-hp-{}-{n}", std::process::id());
    raw::destroy_quietly(&seg);
    let mut old = Command::new(&exe)
        .args(["heap-pause-old", &seg, &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    io::BufReader::new(old.stdout.take().expect("piped")).read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (Some("filled"), Some(fill), Some(backed)) = (words.next(), words.next(), words.next())
    else {
        let _ = old.kill();
        return Err(err(format!("heap-pause-old {n}: {line:?}")));
    };
    let (fill_ns, backed): (f64, u64) = (fill.parse().map_err(err)?, backed.parse().map_err(err)?);
    let mut dsu = Vec::new();
    let mut result = Ok(());
    for _ in 0..trials {
        let out = Command::new(&exe)
            .args(["heap-pause-new", &seg, &n.to_string()])
            .output()?;
        let s = String::from_utf8_lossy(&out.stdout);
        match s.trim().strip_prefix("pause ").map(str::parse::<f64>) {
            Some(Ok(ns)) if out.status.success() => dsu.push(ns),
            _ => {
                result = Err(err(format!(
                    "heap-pause-new {n}: {s}{}",
                    String::from_utf8_lossy(&out.stderr)
                )));
                break;
            }
        }
    }
    drop(old.stdin.take());
    old.wait()?;
    raw::destroy_quietly(&seg);
    result?;
    // The baselines move the same number of bytes (the heap's backed size) as flat state;
    // they would also have to relocate every pointer, which they are not charged for.
    let len = backed as usize;
    let mut state = vec![0u8; len];
    baselines::fill(&mut state);
    let mut copy = Vec::new();
    for _ in 0..trials {
        copy.push(baselines::copy_transfer(&state, &Reservation::anon(len)?)?);
    }
    let mut ser = Vec::new();
    if serialise {
        ser.push(baselines::serialise_transfer(
            &state,
            &Reservation::anon(len)?,
        )?);
    }
    Ok(Row {
        n,
        fill_ns,
        backed,
        dsu,
        copy,
        serialise: ser,
    })
}

/// Runs the figure for each object count and prints its table (markdown).
pub fn run(
    counts: &[usize],
    trials: usize,
    serialise: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    writeln!(
        out,
        "Update pause, state in the shared heap: heap::Vec of N heap::Box<[u8; {OBJECT}]> \
         ({} bytes a block); new version's attach until ready, median of {trials}; copy and \
         serialise move the heap's backed bytes as flat state{}\n",
        OBJECT + 16,
        if serialise {
            " (serialise: 1 trial)"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "| objects | heap backed | fill (not in the pause) | dsu pause | dsu / first row | copy | serialise | copy / dsu |\n|---|---|---|---|---|---|---|---|"
    )?;
    let mut first = None;
    for &n in counts {
        let r = run_size(n, trials, serialise)?;
        let d = median(&r.dsu);
        let base = *first.get_or_insert(d);
        let c = median(&r.copy);
        let s = if r.serialise.is_empty() {
            "not run".into()
        } else {
            fmt_ns(median(&r.serialise))
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {:.2}× | {} | {s} | {:.2}× |",
            r.n,
            fmt_size(r.backed),
            fmt_ns(r.fill_ns),
            fmt_ns(d),
            d / base,
            fmt_ns(c),
            c / d
        )?;
        writeln!(out, "<!-- dsu samples (ns): {:?} -->", r.dsu)?;
        out.flush()?;
    }
    Ok(())
}
