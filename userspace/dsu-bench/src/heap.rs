//! `dsu-bench heap`: the shared heap's allocator against glibc malloc, and
//! `dsu::heap::HashMap` against `std::collections::HashMap`, each pair in the same run.
//!
//! The heap lives in a [`MemfdRegion`] (a memfd mapped `MAP_SHARED`, inherited by forked
//! children): the allocator's code and its shared-memory pages are those of a segment's
//! heap; only the region's growth and hole punching are memfd calls instead of the dsu
//! module's ioctls, and neither runs in the timed loops (the heap is grown before).

use crate::stats::{Clock, median};
use dsu::heap::{self, MemfdRegion, RawHeap};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::ptr::NonNull;

/// The size mix: 70 % 16–128 bytes, 25 % 129–4096, 5 % 4 KiB–64 KiB (a server's
/// strings, records and buffers).
fn sizes(n: usize, seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let r = next();
            (match r % 100 {
                0..70 => 16 + r / 100 % 113,
                70..95 => 129 + r / 100 % 3968,
                _ => 4097 + r / 100 % 61_440,
            }) as usize
        })
        .collect()
}

/// Live blocks of the pairs loop: each step frees the oldest of `WINDOW` blocks and
/// allocates the next size in its place (writing its first byte, as a user would).
const WINDOW: usize = 1024;

trait Alloc: Sync {
    fn alloc(&self, size: usize) -> *mut u8;
    /// # Safety
    /// `p` came from `alloc` and is not used after.
    unsafe fn free(&self, p: *mut u8);
}

struct Glibc;

impl Alloc for Glibc {
    fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc.
        unsafe { libc::malloc(size).cast() }
    }
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: the caller's contract.
        unsafe { libc::free(p.cast()) }
    }
}

struct Dsu(&'static RawHeap);

impl Alloc for Dsu {
    fn alloc(&self, size: usize) -> *mut u8 {
        self.0.allocate(size, 16).expect("heap exhausted").as_ptr()
    }
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: the caller's contract.
        unsafe { self.0.deallocate(NonNull::new(p).unwrap()) }
    }
}

/// Runs `sizes.len()` malloc/free pairs; returns nanoseconds per pair.
fn pairs(a: &dyn Alloc, sizes: &[usize]) -> f64 {
    let mut ring = [std::ptr::null_mut::<u8>(); WINDOW];
    for (slot, &s) in ring.iter_mut().zip(sizes) {
        *slot = a.alloc(s);
    }
    let clock = Clock::start();
    for (i, &s) in sizes.iter().enumerate() {
        let slot = &mut ring[i % WINDOW];
        // SAFETY: a live block from `a`.
        unsafe { a.free(*slot) };
        let p = a.alloc(s);
        // SAFETY: at least one byte.
        unsafe { p.write_volatile(1) };
        *slot = p;
    }
    let ns = clock.ns() / sizes.len() as f64;
    for p in ring {
        // SAFETY: live blocks.
        unsafe { a.free(p) };
    }
    ns
}

/// The pairs loop in `threads` threads at once: wall-clock nanoseconds per pair of one
/// thread.
fn pairs_threads(a: &dyn Alloc, sizes: &[usize], threads: usize) -> f64 {
    let clock = Clock::start();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| pairs(a, sizes));
        }
    });
    clock.ns() / sizes.len() as f64
}

/// The pairs loop in `procs` forked processes at once (sharing the heap for dsu; each
/// its own glibc heap): wall-clock nanoseconds per pair of one process.
fn pairs_processes(a: &dyn Alloc, sizes: &[usize], procs: usize) -> f64 {
    let clock = Clock::start();
    let pids: Vec<_> = (0..procs)
        .map(|_| {
            // SAFETY: the child runs the loop and _exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                pairs(a, sizes);
                // SAFETY: ends the child.
                unsafe { libc::_exit(0) };
            }
            pid
        })
        .collect();
    for pid in pids {
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0, "benchmark child failed");
    }
    clock.ns() / sizes.len() as f64
}

/// A key sequence without order (a multiplicative mix of 0..n).
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i >> 7)
}

/// Inserts `n` keys, then looks each up; nanoseconds per insert and per get.
fn map_std<S: BuildHasher + Default>(n: u64) -> (f64, f64) {
    let mut m: std::collections::HashMap<u64, u64, S> = std::collections::HashMap::default();
    let c = Clock::start();
    for i in 0..n {
        m.insert(key(i), i);
    }
    let ins = c.ns() / n as f64;
    let c = Clock::start();
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(*m.get(&key(i)).unwrap());
    }
    let get = c.ns() / n as f64;
    std::hint::black_box(sum);
    (ins, get)
}

fn map_heap(n: u64) -> (f64, f64) {
    let mut m: heap::HashMap<u64, u64> = heap::HashMap::new();
    let c = Clock::start();
    for i in 0..n {
        m.insert(key(i), i);
    }
    let ins = c.ns() / n as f64;
    let c = Clock::start();
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(*m.get(&key(i)).unwrap());
    }
    let get = c.ns() / n as f64;
    std::hint::black_box(sum);
    (ins, get)
}

/// `std::collections::HashMap` with foldhash's fixed state: the same hasher as the heap
/// map, so that the ratio shows the heap's cost alone.
#[derive(Default)]
struct Fold;
impl BuildHasher for Fold {
    type Hasher = foldhash::fast::FoldHasher<'static>;
    fn build_hasher(&self) -> Self::Hasher {
        foldhash::fast::FixedState::with_seed(7).build_hasher()
    }
}

/// One row of the allocator table: nanoseconds per pair with an allocator.
type Case<'a> = dyn Fn(&dyn Alloc) -> f64 + 'a;

/// Runs the heap benchmarks and prints their tables (markdown).
///
/// `segment`: the heap is a fresh segment's (attached with a 1 GiB heap window, destroyed
/// at the end), else a memfd region.
pub fn run(quick: bool, segment: bool, out: &mut dyn Write) -> io::Result<()> {
    let err = |e: dsu::Error| io::Error::other(e.to_string());
    let seg = format!("bench-heap-{}", std::process::id());
    let (raw, memfd, version) = if segment {
        crate::raw::destroy_quietly(&seg);
        let v = dsu::Attach::new(&seg, "heap")
            .heap(1 << 30)
            .mode(0o600)
            .attach()
            .map_err(err)?;
        let region = v
            .heap()
            .ok_or_else(|| io::Error::other("the segment has no heap"))?;
        (heap::install(region).map_err(err)?, None, Some(v))
    } else {
        let region = MemfdRegion::new(8 << 30).map_err(err)?.leak();
        (heap::install(region).map_err(err)?, Some(region), None)
    };
    let place = if segment {
        "the heap of a dsu segment"
    } else {
        "heap in a memfd region"
    };
    let (n, trials, map_n) = if quick {
        (20_000, 3, 50_000)
    } else {
        (300_000, 9, 1_000_000)
    };
    let seq = sizes(n, 42);
    // Warm both: glibc's arenas and the heap's span (grown once, not in the timed loops).
    pairs(&Glibc, &seq);
    pairs(&Dsu(raw), &seq);
    let _ = pairs_threads(&Dsu(raw), &seq, 2);
    writeln!(
        out,
        "Allocator: malloc/free pairs, sizes 70 % 16–128 B, 25 % 129 B–4 KiB, 5 % 4–64 KiB, \
         {WINDOW} blocks live; {n} pairs, median of {trials} ({place})\n"
    )?;
    writeln!(out, "| case | glibc malloc | dsu heap | ratio |")?;
    writeln!(out, "|---|---|---|---|")?;
    let rows: [(&str, &Case); 3] = [
        ("1 thread", &|a| pairs(a, &seq)),
        ("2 threads (per thread, wall)", &|a| {
            pairs_threads(a, &seq, 2)
        }),
        ("2 processes (per process, wall)", &|a| {
            pairs_processes(a, &seq, 2)
        }),
    ];
    for (name, f) in rows {
        // Interleaved, so that a busy machine slows both alike; the ratio is the median
        // of the trials' ratios.
        let (mut g, mut d, mut r) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..trials {
            g.push(f(&Glibc));
            d.push(f(&Dsu(raw)));
            r.push(d[d.len() - 1] / g[g.len() - 1]);
        }
        let (g, d, r) = (median(&g), median(&d), median(&r));
        writeln!(out, "| {name} | {g:.1} ns | {d:.1} ns | {r:.2}× |")?;
    }
    raw.check().map_err(|e| io::Error::other(e.to_string()))?;
    for map_n in [map_n / 100, map_n] {
        writeln!(
            out,
            "\nMap: HashMap<u64, u64>, {map_n} inserts (from empty) then {map_n} gets, median of {trials}\n"
        )?;
        writeln!(
            out,
            "| map | insert | get | heap's insert ratio | heap's get ratio |\n|---|---|---|---|---|"
        )?;
        let (mut h, mut sip, mut fold) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..trials {
            h.push(map_heap(map_n));
            sip.push(map_std::<std::collections::hash_map::RandomState>(map_n));
            fold.push(map_std::<Fold>(map_n));
        }
        let ins = |v: &[(f64, f64)]| median(&v.iter().map(|x| x.0).collect::<Vec<_>>());
        let get = |v: &[(f64, f64)]| median(&v.iter().map(|x| x.1).collect::<Vec<_>>());
        let (hi, hg) = (ins(&h), get(&h));
        writeln!(
            out,
            "| dsu::heap::HashMap (foldhash, shared heap) | {hi:.1} ns | {hg:.1} ns | | |"
        )?;
        for (name, r) in [
            ("std HashMap (SipHash, glibc)", &sip),
            ("std HashMap (foldhash, glibc)", &fold),
        ] {
            let (i, g) = (ins(r), get(r));
            writeln!(
                out,
                "| {name} | {i:.1} ns | {g:.1} ns | {:.2}× | {:.2}× |",
                hi / i,
                hg / g
            )?;
        }
    }
    let s = raw.stats();
    write!(
        out,
        "\nheap after: {} MiB backed, {} blocks allocated, largest free {} KiB",
        s.size >> 20,
        s.allocated_blocks,
        s.largest_free >> 10,
    )?;
    match memfd {
        Some(m) => writeln!(
            out,
            "; {} MiB given back to the system in all",
            m.discarded_bytes() >> 20
        )?,
        None => writeln!(out)?,
    }
    if let Some(v) = version {
        drop(v);
        crate::raw::destroy_quietly(&seg);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn size_mix() {
        let s = super::sizes(10_000, 1);
        let small = s.iter().filter(|&&x| x <= 128).count();
        assert!((6500..7500).contains(&small), "{small}");
        assert!(s.iter().all(|&x| (16..=65_536).contains(&x)));
    }
}
