//! `dsu-bench snapshot`: what a snapshot (`DSU_IOC_SNAPSHOT`, uapi/dsu.h "Snapshots") costs
//! a version that keeps writing, against Redis's `BGSAVE` fork for the same data size, and
//! how fast `dsuctl save` and `dsuctl restore` move an image, against `cp`; all in one run,
//! interleaved per trial.
//!
//! For each segment size, one variable of that size is created and every page written
//! (half of each page's words counters, half pseudo-random: neither sparse nor trivially
//! compressible). A forked *writer* process attaches the segment as a second version and
//! writes one word at a time to pseudo-random pages, timestamping every write; a control
//! page shared with it opens measurement windows. Per trial:
//!
//! 1. a baseline window as long as the last snapshot took: the writer's longest gap
//!    between two consecutive writes, and its writes per second;
//! 2. a snapshot window: `DSU_IOC_SNAPSHOT`, reading the whole image from its fd (into a
//!    buffer, discarded; its rate is the *image read* column), and closing it; the writer's longest gap (the **pause**: the
//!    longest any writing version was held up by the snapshot, its copy-on-write faults
//!    included), the longest gap across the SNAPSHOT call alone (a gap with a write made
//!    during the call at either end: the only time a writer can be made to wait, in
//!    phase 1b) and writes per second (the **write slowdown** is their ratio to 1);
//! 3. `BGSAVE` on a `redis-server` holding about as many bytes (`DEBUG POPULATE`), waited
//!    for, and its `latest_fork_usec`: how long Redis's event loop stopped to fork.
//!
//! Then, with the writer stopped, `dsuctl save` and `dsuctl restore` (with and without
//! zstd) are timed against `cp` of a file of the segment's size (at most two trials each).

use crate::raw::{self, Handle, PAGE, Reservation};
use crate::stats::{Clock, fmt_ns, fmt_size, median};
use dsu_uapi::{DSU_ATTACH_MUST_CREATE, DSU_ATTACH_MUST_EXIST, dsu_var};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// What `dsu-bench snapshot` measures.
pub struct Options {
    /// Segment sizes in bytes.
    pub sizes: Vec<u64>,
    /// Trials per size.
    pub trials: usize,
    /// Whether to compare with redis-server's BGSAVE (needs `redis-server` and
    /// `redis-cli` on PATH).
    pub redis: bool,
    /// Whether to time `dsuctl save`/`restore` against `cp` (needs `dsuctl` on PATH).
    pub throughput: bool,
}

/// The sizes of BENCHMARKS.md: 4 KiB, 64 MiB and 256 MiB.
pub const DEFAULT_SIZES: [u64; 3] = [4 << 10, 64 << 20, 256 << 20];

/// Parses a size such as `4K`, `64M`, `1G` or a byte count.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = num.parse().ok()?;
    (n > 0).then(|| n << shift)
}

/// The page shared with the writer process.
#[repr(C)]
struct Control {
    /// Bumped by the parent to open a new window.
    epoch: AtomicU64,
    /// The epoch the writer last saw (its counters were reset then).
    ack: AtomicU64,
    /// The longest gap between two consecutive writes in this window, ns.
    max_gap_ns: AtomicU64,
    /// Writes in this window.
    writes: AtomicU64,
    /// Non-zero: the writer exits.
    stop: AtomicU64,
    /// Set by the writer once it is attached and writing; `u64::MAX` if it failed.
    ready: AtomicU64,
    /// Non-zero while the parent is in the SNAPSHOT ioctl (the only time a writer can be
    /// made to wait).
    in_call: AtomicU64,
    /// The longest gap between two writes in this window of which either was made while
    /// `in_call` was set, ns.
    max_call_gap_ns: AtomicU64,
}

/// A `MAP_SHARED` anonymous page holding a [`Control`], inherited by a forked child.
struct SharedControl {
    ptr: *mut Control,
}

impl SharedControl {
    fn new() -> io::Result<Self> {
        // SAFETY: a new shared anonymous mapping at an address of the kernel's choice.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedControl { ptr: p.cast() })
    }

    fn get(&self) -> &Control {
        // SAFETY: the page is mapped for our lifetime, zero-filled (every atomic 0), and
        // only ever accessed through atomics.
        unsafe { &*self.ptr }
    }
}

impl Drop for SharedControl {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), PAGE) };
    }
}

/// The variable every version of the bench segment declares.
fn the_var(size: u64) -> dsu_var {
    raw::var("bench::snapshot", size, 0x736e_6170_7368_6f74)
}

/// Word `w` of page `p` as the creator writes it.
fn fill_word(p: usize, w: usize) -> u64 {
    let i = (p * (PAGE / 8) + w) as u64;
    if w % 2 == 0 {
        i
    } else {
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        x.wrapping_mul(0xbf58_476d_1ce4_e5b9)
    }
}

/// The writer process's body: attaches `seg` as a version, then writes until told to stop.
fn writer(seg: &str, size: u64, ctl: &Control) -> io::Result<()> {
    let h = Handle::open()?;
    h.attach(seg, DSU_ATTACH_MUST_EXIST)?;
    let mut vars = [the_var(size)];
    h.resolve(&mut vars)?;
    h.bind_extents(&raw::extents(&vars), 0, "writer")?;
    let map = Reservation::new(raw::pages_for(size) as usize * PAGE)?;
    h.map_fixed(&map)?;
    let pages = map.len / PAGE;
    let clock = Instant::now();
    let mut last = 0u64;
    let (mut epoch, mut max_gap, mut writes) = (u64::MAX, 0u64, 0u64);
    let (mut max_call_gap, mut prev_in_call) = (0u64, false);
    ctl.ready.store(1, Relaxed);
    let mut i = 0u64;
    while ctl.stop.load(Relaxed) == 0 {
        i = i.wrapping_add(1);
        let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let page = (x >> 24) as usize % pages;
        map.write(page * PAGE + (i as usize % (PAGE / 8)) * 8, i);
        let now = clock.elapsed().as_nanos() as u64;
        let gap = now - last;
        last = now;
        let e = ctl.epoch.load(Relaxed);
        let in_call = ctl.in_call.load(Relaxed) != 0;
        if e != epoch {
            (epoch, max_gap, writes) = (e, 0, 0);
            (max_call_gap, prev_in_call) = (0, in_call);
            ctl.max_gap_ns.store(0, Relaxed);
            ctl.max_call_gap_ns.store(0, Relaxed);
            ctl.writes.store(0, Relaxed);
            ctl.ack.store(e, Relaxed);
            continue;
        }
        writes += 1;
        ctl.writes.store(writes, Relaxed);
        if gap > max_gap {
            max_gap = gap;
            ctl.max_gap_ns.store(gap, Relaxed);
        }
        // A gap that began or ended during the call may hold a wait in its phase 1b.
        if (in_call || prev_in_call) && gap > max_call_gap {
            max_call_gap = gap;
            ctl.max_call_gap_ns.store(gap, Relaxed);
        }
        prev_in_call = in_call;
    }
    Ok(())
}

/// The bench segment: its creator version (which keeps it alive) and the writer process.
struct Bench {
    seg: String,
    size: u64,
    _creator: (Handle, Reservation),
    ctl: SharedControl,
    child: libc::pid_t,
}

impl Bench {
    fn new(size: u64) -> io::Result<Bench> {
        let seg = format!("bench-snapshot-{size}");
        raw::destroy_quietly(&seg);
        let h = Handle::open()?;
        h.attach(&seg, DSU_ATTACH_MUST_CREATE)?;
        let mut vars = [the_var(size)];
        h.resolve(&mut vars)?;
        h.bind_extents(&raw::extents(&vars), 0, "creator")?;
        let map = Reservation::new(raw::pages_for(size) as usize * PAGE)?;
        h.map_fixed(&map)?;
        for p in 0..map.len / PAGE {
            for w in 0..PAGE / 8 {
                map.write(p * PAGE + w * 8, fill_word(p, w));
            }
        }
        let ctl = SharedControl::new()?;
        // SAFETY: dsu-bench is single-threaded here, so the child may run arbitrary code.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        if child == 0 {
            let status = match writer(&seg, size, ctl.get()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("dsu-bench snapshot: writer: {e}");
                    ctl.get().ready.store(u64::MAX, Relaxed);
                    1
                }
            };
            // SAFETY: _exit skips the parent's atexit handlers and destructors.
            unsafe { libc::_exit(status) };
        }
        let b = Bench {
            seg,
            size,
            _creator: (h, map),
            ctl,
            child,
        };
        let t0 = Instant::now();
        loop {
            match b.ctl.get().ready.load(Relaxed) {
                1 => return Ok(b),
                u64::MAX => return Err(io::Error::other("the writer process failed to attach")),
                _ if t0.elapsed() > Duration::from_secs(60) => {
                    return Err(io::Error::other("the writer process did not start"));
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Runs `f` in a new measurement window: (writer's longest gap ns, writes per second,
    /// `f`'s result, window length ns).
    fn window<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<(f64, f64, T, f64)> {
        let ctl = self.ctl.get();
        let e = ctl.epoch.fetch_add(1, Relaxed) + 1;
        while ctl.ack.load(Relaxed) != e {
            std::thread::yield_now();
        }
        // The writer writes again after its reset: the window starts at a write.
        let w0 = ctl.writes.load(Relaxed);
        while ctl.writes.load(Relaxed) == w0 {
            std::hint::spin_loop();
        }
        let c = Clock::start();
        let w1 = ctl.writes.load(Relaxed);
        let r = f()?;
        let ns = c.ns();
        let writes = ctl.writes.load(Relaxed) - w1;
        let gap = ctl.max_gap_ns.load(Relaxed) as f64;
        Ok((gap, writes as f64 * 1e9 / ns, r, ns))
    }

    /// One snapshot: the ioctl, the whole image read, the fd closed. Returns the ioctl's
    /// time and the image read's, ns.
    fn snapshot(&self, buf: &mut [u8]) -> io::Result<(f64, f64)> {
        let h = Handle::open()?;
        let ctl = self.ctl.get();
        let c = Clock::start();
        ctl.in_call.store(1, Relaxed);
        let taken = h.snapshot(&self.seg);
        ctl.in_call.store(0, Relaxed);
        let ioctl_ns = c.ns();
        let (fd, info) = taken?;
        let bytes = info.pages * PAGE as u64;
        if bytes < self.size {
            return Err(io::Error::other(format!(
                "the image has {bytes} bytes of pages, the segment {}",
                self.size
            )));
        }
        read_all(&fd, bytes, buf)?;
        let read_ns = c.ns() - ioctl_ns;
        drop(fd);
        Ok((ioctl_ns, read_ns))
    }
}

impl Bench {
    /// Stops the writer process and waits for it.
    fn stop_writer(&mut self) {
        if self.child > 0 {
            self.ctl.get().stop.store(1, Relaxed);
            let mut status = 0;
            // SAFETY: our own child, not yet waited for.
            unsafe { libc::waitpid(self.child, &mut status, 0) };
            self.child = 0;
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop_writer();
        raw::destroy_quietly(&self.seg);
    }
}

/// Reads `len` bytes of the image from offset 0 with `pread`.
fn read_all(fd: &OwnedFd, len: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut off = 0u64;
    while off < len {
        let n = buf.len().min((len - off) as usize);
        // SAFETY: `buf` is writable for `n` bytes.
        let r = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                n,
                off as libc::off_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Err(io::Error::other(format!(
                "the image ends at {off}, want {len}"
            )));
        }
        off += r as u64;
    }
    Ok(())
}

/// A redis-server for the BGSAVE comparison, killed on drop.
struct Redis {
    child: std::process::Child,
    port: String,
    dir: String,
}

impl Redis {
    fn start(port: u16) -> io::Result<Redis> {
        let dir = format!("/tmp/dsu-bench-redis-{port}");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let port = port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--enable-debug-command", "yes"])
            .args(["--dir", &dir])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let r = Redis { child, port, dir };
        let t0 = Instant::now();
        while r.cli(&["PING"]).map(|s| s.trim() != "PONG").unwrap_or(true) {
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(io::Error::other("redis-server does not answer PING"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(r)
    }

    fn cli(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn info(&self, section: &str, field: &str) -> io::Result<u64> {
        let text = self.cli(&["INFO", section])?;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .parse()
                    .ok()
            })
            .ok_or_else(|| io::Error::other(format!("no {field} in INFO {section}: {text}")))
    }

    /// Loads about `bytes` of values (`DEBUG POPULATE`); returns `used_memory`.
    fn populate(&self, bytes: u64) -> io::Result<u64> {
        let (count, value) = if bytes <= 64 << 10 {
            (1, bytes)
        } else {
            // A 1000-byte value costs about 1100 bytes with its key and dict entry.
            (bytes / 1100, 1000)
        };
        let reply = self.cli(&[
            "DEBUG",
            "POPULATE",
            &count.to_string(),
            "k",
            &value.to_string(),
        ])?;
        if reply.trim() != "OK" {
            return Err(io::Error::other(format!("DEBUG POPULATE replied {reply}")));
        }
        self.info("memory", "used_memory")
    }

    /// One BGSAVE, waited for: its fork time, ns.
    fn bgsave_fork_ns(&self) -> io::Result<f64> {
        let reply = self.cli(&["BGSAVE"])?;
        if !reply.contains("started") {
            return Err(io::Error::other(format!("BGSAVE replied {reply}")));
        }
        let t0 = Instant::now();
        while self.info("persistence", "rdb_bgsave_in_progress")? != 0 {
            if t0.elapsed() > Duration::from_secs(600) {
                return Err(io::Error::other("BGSAVE still running after 600 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(format!("{}/dump.rdb", self.dir));
        Ok(self.info("stats", "latest_fork_usec")? as f64 * 1e3)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `program args`, failing on a non-zero exit; its wall time, ns.
fn timed(program: &str, args: &[&str]) -> io::Result<f64> {
    let c = Clock::start();
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    let ns = c.ns();
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(ns)
}

/// The figures of one segment size.
struct Row {
    size: u64,
    base_gap: Vec<f64>,
    snap_gap: Vec<f64>,
    /// The longest gap across the SNAPSHOT call, ns.
    call_gap: Vec<f64>,
    ioctl: Vec<f64>,
    /// Reading the whole image from the fd, ns.
    read: Vec<f64>,
    snap_total: Vec<f64>,
    base_rate: Vec<f64>,
    snap_rate: Vec<f64>,
    redis_used: Option<u64>,
    fork: Vec<f64>,
    /// (what, times ns, file bytes)
    moves: Vec<(String, Vec<f64>, u64)>,
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn mib_s(bytes: u64, ns: f64) -> String {
    format!("{:.0}", bytes as f64 / (1 << 20) as f64 / (ns / 1e9))
}

/// `dsuctl save` and `restore` with and without zstd, and `cp`, `trials` times each.
fn throughput(b: &Bench, trials: usize) -> io::Result<Vec<(String, Vec<f64>, u64)>> {
    let (img, cp_src, cp_dst) = (
        "/tmp/dsu-bench-snapshot.img",
        "/tmp/dsu-bench-cp.src",
        "/tmp/dsu-bench-cp.dst",
    );
    let restored = format!("{}-restored", b.seg);
    // A file of the segment's size for cp, with the segment's bytes.
    {
        let (fd, info) = Handle::open()?.snapshot(&b.seg)?;
        let mut f = std::fs::File::create(cp_src)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        let len = info.pages * PAGE as u64;
        while off < len {
            let n = buf.len().min((len - off) as usize);
            read_all_at(&fd, off, &mut buf[..n])?;
            f.write_all(&buf[..n])?;
            off += n as u64;
        }
        f.sync_all()?;
    }
    let mut rows: Vec<(String, Vec<f64>, u64)> = Vec::new();
    for (label, zstd) in [("uncompressed", false), ("zstd, --compress", true)] {
        let (mut save, mut restore) = (Vec::new(), Vec::new());
        let mut file_bytes = 0;
        for _ in 0..trials {
            let _ = std::fs::remove_file(img);
            let mut args = vec!["save"];
            if zstd {
                args.push("--compress");
            }
            args.extend([b.seg.as_str(), img]);
            save.push(timed("dsuctl", &args)?);
            file_bytes = std::fs::metadata(img)?.len();
            raw::destroy_quietly(&restored);
            restore.push(timed("dsuctl", &["restore", img, "--name", &restored])?);
            raw::destroy_quietly(&restored);
        }
        let _ = std::fs::remove_file(img);
        rows.push((format!("dsuctl save ({label})"), save, file_bytes));
        rows.push((format!("dsuctl restore ({label})"), restore, file_bytes));
    }
    let mut cp = Vec::new();
    for _ in 0..trials {
        let _ = std::fs::remove_file(cp_dst);
        cp.push(timed("cp", &[cp_src, cp_dst])?);
    }
    let _ = std::fs::remove_file(cp_dst);
    let bytes = std::fs::metadata(cp_src)?.len();
    let _ = std::fs::remove_file(cp_src);
    rows.push(("cp (same size)".into(), cp, bytes));
    Ok(rows)
}

fn read_all_at(fd: &OwnedFd, off: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: `buf[done..]` is writable.
        let r = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                (off + done as u64) as libc::off_t,
            )
        };
        if r <= 0 {
            return Err(if r < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::other("short image")
            });
        }
        done += r as usize;
    }
    Ok(())
}

/// Measures every size and prints the tables.
pub fn run(o: &Options, out: &mut dyn Write) -> io::Result<()> {
    if !raw::available() {
        return Err(io::Error::other("no /dev/dsu: load dsu.ko first"));
    }
    let mut rows = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for &size in &o.sizes {
        eprintln!("dsu-bench snapshot: {} ...", fmt_size(size));
        let redis = if o.redis {
            match Redis::start(16_500).and_then(|r| Ok((r.populate(size)?, r))) {
                Ok((used, r)) => Some((r, used)),
                Err(e) => {
                    eprintln!("dsu-bench snapshot: no BGSAVE comparison: {e}");
                    None
                }
            }
        } else {
            None
        };
        let b = Bench::new(size)?;
        let mut row = Row {
            size,
            base_gap: Vec::new(),
            snap_gap: Vec::new(),
            call_gap: Vec::new(),
            ioctl: Vec::new(),
            read: Vec::new(),
            snap_total: Vec::new(),
            base_rate: Vec::new(),
            snap_rate: Vec::new(),
            redis_used: redis.as_ref().map(|r| r.1),
            fork: Vec::new(),
            moves: Vec::new(),
        };
        // A first snapshot sizes the baseline windows; it is not counted.
        let (_, _, _, mut last_ns) = b.window(|| b.snapshot(&mut buf))?;
        for _ in 0..o.trials {
            let wait = Duration::from_nanos(last_ns as u64);
            let (gap, rate, (), _) = b.window(|| {
                std::thread::sleep(wait);
                Ok(())
            })?;
            row.base_gap.push(gap);
            row.base_rate.push(rate);
            let (gap, rate, (ioctl, read), ns) = b.window(|| b.snapshot(&mut buf))?;
            row.snap_gap.push(gap);
            row.call_gap
                .push(b.ctl.get().max_call_gap_ns.load(Relaxed) as f64);
            row.snap_rate.push(rate);
            row.ioctl.push(ioctl);
            row.read.push(read);
            row.snap_total.push(ns);
            last_ns = ns;
            if let Some((r, _)) = &redis {
                row.fork.push(r.bgsave_fork_ns()?);
            }
        }
        drop(redis);
        // The writer stops before the copies are timed.
        let mut b = b;
        b.stop_writer();
        if o.throughput {
            row.moves = throughput(&b, o.trials.min(2)).unwrap_or_else(|e| {
                eprintln!("dsu-bench snapshot: save/restore not timed: {e}");
                vec![(format!("save/restore failed: {e}"), vec![f64::NAN], 0)]
            });
        }
        drop(b);
        rows.push(row);
    }
    print_tables(o, &rows, out)
}

fn print_tables(o: &Options, rows: &[Row], out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "\n### Snapshot pause: the writer's longest gap between two writes ({} trials; median / max)\n",
        o.trials
    )?;
    writeln!(
        out,
        "| segment | no snapshot | during a snapshot | across the SNAPSHOT call | SNAPSHOT ioctl | image read | snapshot, image read, close | redis-server used_memory | BGSAVE fork (latest_fork_usec) |"
    )?;
    writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )?;
    let pair = |v: &[f64]| format!("{} / {}", fmt_ns(median(v)), fmt_ns(max(v)));
    for r in rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} MiB/s | {} | {} | {} |",
            fmt_size(r.size),
            pair(&r.base_gap),
            pair(&r.snap_gap),
            pair(&r.call_gap),
            fmt_ns(median(&r.ioctl)),
            mib_s(r.size, median(&r.read)),
            fmt_ns(median(&r.snap_total)),
            r.redis_used.map_or("n/a".into(), fmt_size),
            if r.fork.is_empty() {
                "n/a".into()
            } else {
                pair(&r.fork)
            },
        )?;
    }
    if let (Some(small), Some(big)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        writeln!(out)?;
        for (what, pick) in [
            (
                "across the SNAPSHOT call (where a writer can wait)",
                (|r: &Row| median(&r.call_gap)) as fn(&Row) -> f64,
            ),
            (
                "over the whole snapshot window (copy-on-write faults included)",
                |r: &Row| median(&r.snap_gap),
            ),
        ] {
            let ratio = pick(big) / pick(small);
            writeln!(
                out,
                "Goal: pause within 2x from {} to {}, {what}: {:.2}x, {}.",
                fmt_size(small.size),
                fmt_size(big.size),
                ratio,
                if ratio <= 2.0 { "met" } else { "missed" }
            )?;
            if !big.fork.is_empty() {
                let (p, f) = (pick(big), median(&big.fork));
                writeln!(
                    out,
                    "Goal: pause below redis-server's fork at {}, {what}: {} vs {}, {}.",
                    fmt_size(big.size),
                    fmt_ns(p),
                    fmt_ns(f),
                    if p < f { "met" } else { "missed" }
                )?;
            }
        }
    }
    writeln!(
        out,
        "\n### Write slowdown during a snapshot (writes per second, medians)\n"
    )?;
    writeln!(out, "| segment | normal | during a snapshot | ratio |")?;
    writeln!(out, "| --- | --- | --- | --- |")?;
    for r in rows {
        let (n, d) = (median(&r.base_rate), median(&r.snap_rate));
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.2} |",
            fmt_size(r.size),
            n,
            d,
            d / n
        )?;
    }
    if rows.iter().any(|r| !r.moves.is_empty()) {
        writeln!(
            out,
            "\n### Save and restore throughput (MiB of segment per second, median)\n"
        )?;
        writeln!(out, "| segment | what | MiB/s | time | file |")?;
        writeln!(out, "| --- | --- | --- | --- | --- |")?;
        for r in rows {
            for (what, times, file) in &r.moves {
                writeln!(
                    out,
                    "| {} | {what} | {} | {} | {} |",
                    fmt_size(r.size),
                    mib_s(r.size, median(times)),
                    fmt_ns(median(times)),
                    fmt_size(*file)
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("--x"), None);
    }
}
