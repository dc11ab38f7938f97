//! Crash consistency: a version is SIGKILLed at every step of its life — before and during
//! attach, resolve (while its pages are being allocated and filled), bind, mmap, and while
//! it holds a `dsu::sync::Mutex` in the segment — over many trials. After each kill the
//! surviving version's data is intact, the directory is consistent (no half-created
//! variable, the segment's pages are exactly its variables' pages), the dead version is
//! gone from LIST_VERSIONS, and the mutex is taken over. At the end a restarted version
//! re-attaches and sees everything.

use crate::robust_raw::{Dev, Map, PAGE, check_directory, cstr, destroy_quietly, var, wait_child};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu::sync::Mutex;
use dsu_uapi::*;
use linkme::distributed_slice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SEG: &str = "crash";
const LOCK_FP: u64 = 0x10c;
const CHILD_SIZE: u64 = 3 * PAGE as u64 + 100;
const BIG_SIZE: u64 = 64 * PAGE as u64;

/// The protected pair: `a` and `b` are incremented one after the other under the lock, so a
/// holder killed in between leaves `a == b + 1`, which the next holder repairs.
type Pair = Mutex<[u64; 2]>;

fn pattern(trial: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (trial as usize * 31 + i * 7) as u8)
        .collect()
}

/// Steps of a child's life, written to a shared page so that the parent knows where it died.
mod step {
    pub const OPEN: u64 = 1;
    pub const ATTACH: u64 = 2;
    pub const RESOLVE: u64 = 3;
    pub const BIND: u64 = 4;
    pub const MMAP: u64 = 5;
    pub const LOCK: u64 = 6;
    pub const HOLDING: u64 = 7;
    pub const UNLOCKED: u64 = 8;
    pub const LAST: u64 = UNLOCKED;
}

/// The life of a child version. With `stop_at`, it stops itself (SIGSTOP) just before that
/// step, so the parent kills it exactly there; without, it loops until killed at random.
fn child(trial: u64, stop_at: Option<u64>, progress: &AtomicU64) -> i32 {
    let at = |s: u64| {
        progress.store(s, Ordering::SeqCst);
        if stop_at == Some(s) {
            // SAFETY: stops this process; the parent kills it.
            unsafe { libc::raise(libc::SIGSTOP) };
        }
    };
    at(step::OPEN);
    let Ok(dev) = Dev::open() else { return 2 };
    at(step::ATTACH);
    if dev.attach(SEG, DSU_ATTACH_MUST_EXIST, 0).is_err() {
        return 3;
    }
    at(step::RESOLVE);
    let init = pattern(trial, CHILD_SIZE as usize);
    let mut vars = [
        var("lock", size_of::<Pair>() as u64, LOCK_FP, None),
        var(&format!("child-{trial}"), CHILD_SIZE, 7, Some(&init)),
        var(&format!("big-{trial}"), BIG_SIZE, 7, None),
    ];
    if dev.resolve(&mut vars).is_err() {
        return 4;
    }
    at(step::BIND);
    let c = &vars[1];
    let mut map = vec![vars[0].first_page];
    map.extend(c.first_page..c.first_page + c.page_count);
    if dev
        .bind(
            &format!("c{trial}"),
            &map,
            if trial.is_multiple_of(2) {
                DSU_BIND_PREFAULT
            } else {
                0
            },
        )
        .is_err()
    {
        return 5;
    }
    at(step::MMAP);
    let Ok(m) = dev.map_rw(map.len()) else {
        return 6;
    };
    // SAFETY: page 0 of the map is the "lock" variable, zero-initialised: a free Pair.
    // `lock` needs it `'static`: the process ends before the map does.
    let pair = unsafe { &*(m.addr as *const Pair) };
    loop {
        at(step::LOCK);
        let mut g = pair.lock().unwrap_or_else(|died| {
            let mut g = died.into_inner();
            g[1] = g[0];
            g
        });
        g[0] += 1;
        at(step::HOLDING);
        g[1] += 1;
        drop(g);
        at(step::UNLOCKED);
        if stop_at.is_some() {
            return 0;
        }
    }
}

/// Takes the lock within a few seconds (a dead holder's lock is taken over): returns the
/// pair and whether the previous owner had died.
fn take_lock(pair: &'static Pair) -> Result<([u64; 2], bool), Failure> {
    let start = Instant::now();
    loop {
        match pair.try_lock() {
            Some(Ok(g)) => return Ok((*g, false)),
            Some(Err(died)) => {
                let mut g = died.into_inner();
                let before = *g;
                g[1] = g[0];
                return Ok((before, true));
            }
            None if start.elapsed() > Duration::from_secs(10) => {
                return Err(Failure::Fail(format!(
                    "lock still held after 10 s by {:?}",
                    pair.owner()
                )));
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

#[distributed_slice(TESTS)]
static KILL_EVERY_STEP: VmTest = VmTest {
    name: "robust::crash_kill_every_step",
    phase: Phase::Main,
    run: kill_every_step,
};
fn kill_every_step() -> TestResult {
    let trials: u64 = std::env::var("DSU_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    destroy_quietly(SEG);
    let survivor = Dev::open()?;
    survivor.attach(SEG, DSU_ATTACH_MUST_CREATE, 0o600)?;
    let mine = vec![0x5au8; 300];
    let mut vars = [
        var("lock", size_of::<Pair>() as u64, LOCK_FP, None),
        var("survivor", 300, 9, Some(&mine)),
    ];
    survivor.resolve(&mut vars)?;
    survivor.bind("survivor", &[vars[0].first_page, vars[1].first_page], 0)?;
    let m = survivor.map_rw(2)?;
    // SAFETY: page 0 of the map is the zero-initialised "lock" variable. `lock` needs it
    // `'static`: the map outlives every guard (none is leaked), so no robust-list node
    // outlives the map.
    let pair = unsafe { &*(m.addr as *const Pair) };
    // SAFETY: page 1 is "survivor", 300 bytes initialised to 0x5a.
    let data = unsafe { std::slice::from_raw_parts_mut(m.addr.add(PAGE), 300) };
    ensure!(data.iter().all(|b| *b == 0x5a), "survivor's initial bytes");
    data[..8].copy_from_slice(&0xfeed_u64.to_ne_bytes());

    // A shared anonymous page for the children's progress.
    let progress_map = Map::shared_anon_page();
    let progress = progress_map.u64_at(0);

    let mut rng = 0x9e37_79b9_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut created = Vec::new();
    let mut died_holding = 0;
    let mut last_a = 0;
    for trial in 0..trials {
        // Even trials stop exactly at a step (cycling through all of them); odd trials are
        // killed after a random delay, which lands inside system calls as well.
        let stop_at = if trial.is_multiple_of(2) {
            Some(1 + (trial / 2) % step::LAST)
        } else {
            None
        };
        progress.store(0, Ordering::SeqCst);
        // SAFETY: the suite is single-threaded.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child(trial, stop_at, progress);
            // SAFETY: leave without the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        if stop_at.is_some() {
            let mut status = 0;
            // SAFETY: waits for our child to stop or exit.
            unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
            if libc::WIFSTOPPED(status) {
                // SAFETY: kills our stopped child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = wait_child(pid);
            } else {
                ensure!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "trial {trial}: child status {status:#x}"
                );
            }
        } else {
            std::thread::sleep(Duration::from_micros(next() % 40_000));
            // SAFETY: kills our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let r = wait_child(pid);
            ensure!(
                r == Err(libc::SIGKILL) || r == Ok(0),
                "trial {trial}: child ended with {r:?}"
            );
        }
        let reached = progress.load(Ordering::SeqCst);

        // The survivor's data is intact and its mapping works.
        ensure!(
            data[8..].iter().all(|b| *b == 0x5a),
            "trial {trial}: survivor's bytes changed"
        );
        ensure_eq!(
            u64::from_ne_bytes(data[..8].try_into()?),
            0xfeed,
            "trial {trial}: survivor's word"
        );
        // The lock is free or taken over; the pair is consistent after repair.
        let ([a, b], died) = take_lock(pair)?;
        if died {
            died_holding += 1;
            ensure!(
                reached >= step::LOCK,
                "trial {trial}: owner died before locking (step {reached})"
            );
            ensure!(
                a == b || a == b + 1,
                "trial {trial}: pair {a} {b} after the owner died"
            );
        } else {
            ensure_eq!(a, b, "trial {trial}: pair with no dead owner");
        }
        if stop_at == Some(step::HOLDING) {
            ensure!(
                died,
                "trial {trial}: killed while holding, but the lock was not reported as taken over"
            );
        }
        ensure!(
            a >= last_a,
            "trial {trial}: counter went back from {last_a} to {a}"
        );
        last_a = a;
        // The dead version is gone, nothing half-created, page count exact.
        let versions = survivor.versions(SEG)?;
        ensure_eq!(
            versions.len(),
            1,
            "trial {trial}: versions after the kill (step {reached})"
        );
        let info = survivor
            .segment(SEG)?
            .ok_or_else(|| Failure::Fail("segment gone".into()))?;
        ensure_eq!(
            (info.handles, info.versions),
            (1, 1),
            "trial {trial}: handles and versions"
        );
        let vars = check_directory(&survivor, SEG)?;
        let name = format!("child-{trial}");
        match vars.iter().find(|v| cstr(&v.name) == name) {
            Some(v) => {
                ensure_eq!(v.size, CHILD_SIZE, "trial {trial}: size of {name}");
                ensure!(
                    reached >= step::RESOLVE,
                    "trial {trial}: {name} exists but the child died at step {reached}"
                );
                let bytes = survivor.read_var(SEG, &name, CHILD_SIZE as usize)?;
                ensure!(
                    bytes == pattern(trial, CHILD_SIZE as usize),
                    "trial {trial}: {name} half-initialised"
                );
                ensure!(
                    vars.iter().any(|v| cstr(&v.name) == format!("big-{trial}")),
                    "trial {trial}: the batch was applied in part"
                );
                created.push(trial);
            }
            None => ensure!(
                reached <= step::RESOLVE,
                "trial {trial}: {name} missing after the child reached step {reached}"
            ),
        }
    }
    ensure!(died_holding > 0, "no trial killed a lock holder");

    // A restarted version re-attaches, finds every variable common and sees the state.
    let expect_a = last_a;
    let created2 = created.clone();
    let r = crate::robust_raw::in_child(move || {
        let run = || -> Result<(), String> {
            let dev = Dev::open().map_err(|e| e.to_string())?;
            dev.attach(SEG, DSU_ATTACH_MUST_EXIST, 0)
                .map_err(|e| format!("attach {e}"))?;
            let mut vars = vec![var("lock", size_of::<Pair>() as u64, LOCK_FP, None)];
            let inits: Vec<Vec<u8>> = created2
                .iter()
                .map(|t| pattern(*t, CHILD_SIZE as usize))
                .collect();
            for (t, init) in created2.iter().zip(&inits) {
                vars.push(var(&format!("child-{t}"), CHILD_SIZE, 7, Some(init)));
            }
            let added = dev.resolve(&mut vars).map_err(|e| format!("resolve {e}"))?;
            if added != 0 {
                return Err(format!("{added} variables re-created"));
            }
            let mut map = Vec::new();
            for v in &vars {
                map.extend(v.first_page..v.first_page + v.page_count);
            }
            dev.bind("restarted", &map, 0)
                .map_err(|e| format!("bind {e}"))?;
            let m = dev.map_rw(map.len()).map_err(|e| format!("mmap {e}"))?;
            // SAFETY: page 0 is the lock; the map outlives the guard (`'static` for `lock`).
            let pair = unsafe { &*(m.addr as *const Pair) };
            let g = pair.lock().map_err(|_| "owner died".to_string())?;
            if g[0] != expect_a || g[1] != expect_a {
                return Err(format!("pair {:?}, expected {expect_a}", *g));
            }
            drop(g);
            let mut page = 1;
            for (t, init) in created2.iter().zip(&inits) {
                // SAFETY: the variable's pages follow in the map.
                let got = unsafe {
                    std::slice::from_raw_parts(m.addr.add(page * PAGE), CHILD_SIZE as usize)
                };
                if got != init.as_slice() {
                    return Err(format!("child-{t} differs through the restarted mapping"));
                }
                page += CHILD_SIZE.div_ceil(PAGE as u64) as usize;
            }
            Ok(())
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("restarted version: {e}");
                1
            }
        }
    });
    ensure_eq!(r, Ok(0), "restarted version (see its stderr)");
    println!(
        "    {trials} trials, {} variables created by killed versions, {died_holding} lock takeovers",
        created.len()
    );
    drop(m);
    survivor.destroy(SEG)?;
    Ok(())
}

#[distributed_slice(TESTS)]
static FUTEX: VmTest = VmTest {
    name: "robust::futex_on_segment_page",
    phase: Phase::Main,
    run: futex_on_segment_page,
};
/// `dsu::sync::Mutex` sleeps on a *shared* futex in a segment page. The kernel must key
/// such a futex by the page (segment pages live in a shmem file), not by the virtual
/// address: a FUTEX_WAIT through one mapping must time out rather than fail with EFAULT,
/// and a FUTEX_WAKE from another process through a mapping at another address must wake it.
fn futex_on_segment_page() -> TestResult {
    destroy_quietly("futex");
    let d = Dev::open()?;
    d.attach("futex", DSU_ATTACH_MUST_CREATE, 0)?;
    let mut v = [var("word", 4, 1, None)];
    d.resolve(&mut v)?;
    d.bind("f", &[v[0].first_page], 0)?;
    let waiter_map = d.map_rw(1)?;
    let waker_map = d.map_rw(1)?;
    let (word, other) = (waiter_map.addr as *const u32, waker_map.addr as *const u32);
    ensure!(word != other, "the two mappings share an address");
    let wait = |ns: i64| {
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: ns,
        };
        // SAFETY: a shared FUTEX_WAIT on an aligned u32 in our mapping, expecting its value (0).
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word,
                libc::FUTEX_WAIT,
                0u32,
                &ts as *const libc::timespec,
                0usize,
                0u32,
            )
        };
        (r, nix::errno::Errno::last())
    };
    let (r, e) = wait(20_000_000);
    ensure!(
        r == -1 && e == nix::errno::Errno::ETIMEDOUT,
        "shared FUTEX_WAIT on a segment page: {r} {e:?} (EFAULT: the page has no futex key)"
    );
    // SAFETY: the suite is single-threaded.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // Wake through the other mapping until the parent is woken (it may not sleep yet).
        for _ in 0..400 {
            std::thread::sleep(Duration::from_millis(5));
            // SAFETY: a shared FUTEX_WAKE on an aligned u32 in the inherited mapping.
            let woken = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    other,
                    libc::FUTEX_WAKE,
                    1,
                    0usize,
                    0usize,
                    0u32,
                )
            };
            if woken > 0 {
                // SAFETY: leave without the parent's exit handlers.
                unsafe { libc::_exit(0) };
            }
        }
        // SAFETY: as above.
        unsafe { libc::_exit(1) };
    }
    let (r, e) = wait(900_000_000);
    let status = wait_child(pid);
    drop((waiter_map, waker_map));
    d.destroy("futex")?;
    ensure!(
        r == 0,
        "FUTEX_WAKE through another address and process did not wake the waiter: {r} {e:?}"
    );
    ensure_eq!(status, Ok(0), "waker child (1: its wakes found no waiter)");
    Ok(())
}

#[distributed_slice(TESTS)]
static WAITER_SLEEPS: VmTest = VmTest {
    name: "robust::mutex_waiter_sleeps",
    phase: Phase::Main,
    run: mutex_waiter_sleeps,
};
/// Regression test: a `dsu::sync::Mutex` waiter in a segment page must sleep, not spin,
/// while another process holds the lock.
fn mutex_waiter_sleeps() -> TestResult {
    destroy_quietly("mutex-sleep");
    let d = Dev::open()?;
    d.attach("mutex-sleep", DSU_ATTACH_MUST_CREATE, 0)?;
    let mut v = [var("lock", size_of::<Pair>() as u64, LOCK_FP, None)];
    d.resolve(&mut v)?;
    d.bind("w", &[v[0].first_page], 0)?;
    let m = d.map_rw(1)?;
    // SAFETY: the zero-initialised lock variable; the map outlives every guard (`'static`
    // for `lock`).
    let pair = unsafe { &*(m.addr as *const Pair) };
    // SAFETY: the suite is single-threaded.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let g = pair.lock();
        std::thread::sleep(Duration::from_millis(800));
        drop(g);
        // SAFETY: leave without the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    let start = Instant::now();
    while pair.owner().is_none() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes the calling thread's CPU time into ts.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let (wall0, cpu0) = (Instant::now(), cpu());
    let g = pair.lock();
    let (wall, used) = (wall0.elapsed(), cpu() - cpu0);
    ensure!(g.is_ok(), "the holder exited normally, so no takeover");
    drop(g);
    let _ = wait_child(pid);
    drop(m);
    d.destroy("mutex-sleep")?;
    println!("    waited {wall:?}, used {used:?} of CPU");
    ensure!(
        wall >= Duration::from_millis(300),
        "lock() returned after {wall:?} although the holder kept it 800 ms"
    );
    ensure!(
        used * 2 < wall,
        "the waiter spun: {used:?} of CPU in {wall:?}"
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static PID_NAMESPACES: VmTest = VmTest {
    name: "robust::mutex_across_pid_namespaces",
    phase: Phase::Main,
    run: mutex_across_pid_namespaces,
};

/// Slots of the shared board of [`mutex_across_pid_namespaces`] (u64 each).
mod board {
    /// The owner's pid in the test's (initial) pid namespace.
    pub const OWNER_PID: usize = 0;
    /// The owner's thread id in its own namespace.
    pub const OWNER_TID: usize = 1;
    /// 1 once the owner holds the lock.
    pub const HOLDING: usize = 2;
    /// Per waiter `w` (0, 1): its tid in its namespace, 1 once it calls lock, then the
    /// outcome (1 = locked, 2 = OwnerDied, 3 = panicked) and CLOCK_MONOTONIC ns when locked.
    pub const fn waiter(w: usize, field: usize) -> usize {
        3 + w * 4 + field
    }
    pub const TID: usize = 0;
    pub const STARTED: usize = 1;
    pub const OUTCOME: usize = 2;
    pub const AT_NS: usize = 3;
    /// The root-namespace pids of the three namespaces' init processes (for cleanup).
    pub const INITS: usize = 11;
    pub const SLOTS: usize = 14;
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the time into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `f` in a new pid namespace: as its init (pid 1), or as pid 2 under an init that
/// only waits for it. Returns the pid (in our namespace) of the forked child that does
/// the `unshare`; that child writes its namespace's init into `init_slot` and exits with
/// `f`'s code (or 128 + the signal that killed it).
fn in_new_pid_ns(as_init: bool, init_slot: &AtomicU64, f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the suite is single-threaded.
    let outer = unsafe { libc::fork() };
    if outer != 0 {
        return outer;
    }
    let code = (|| {
        // SAFETY: a single-threaded process; the next child is pid 1 of the new namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            eprintln!("unshare(CLONE_NEWPID): {}", std::io::Error::last_os_error());
            return 90;
        }
        // SAFETY: single-threaded.
        let init = unsafe { libc::fork() };
        if init == 0 {
            let code = if as_init {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101)
            } else {
                match crate::robust_raw::in_child(f) {
                    Ok(c) => c,
                    Err(sig) => 128 + sig,
                }
            };
            // SAFETY: leave without the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        init_slot.store(init as u64, Ordering::SeqCst);
        match wait_child(init) {
            Ok(c) => c,
            Err(sig) => 128 + sig,
        }
    })();
    // SAFETY: as above.
    unsafe { libc::_exit(code) };
}

/// Item 12 of issue 10: a `dsu::sync::Mutex` shared by processes in different pid
/// namespaces. The owner is pid 2 of namespace A; one waiter is pid 1 of namespace B
/// (where no pid 2 exists: a `kill(2, 0)` liveness check calls the owner dead and steals
/// the lock), the other pid 2 of namespace C (the owner's number: a tid comparison calls
/// it a recursive lock). Neither may take the lock while the owner lives; when the owner
/// is SIGKILLed, one of them gets `OwnerDied` at once, the other the lock after it.
fn mutex_across_pid_namespaces() -> TestResult {
    const SEG: &str = "pidns-mutex";
    destroy_quietly(SEG);
    let d = Dev::open()?;
    d.attach(SEG, DSU_ATTACH_MUST_CREATE, 0)?;
    let mut v = [var("lock", size_of::<Pair>() as u64, LOCK_FP, None)];
    d.resolve(&mut v)?;
    d.bind("pidns", &[v[0].first_page], 0)?;
    let m = d.map_rw(1)?;
    // SAFETY: the zero-initialised lock variable. `lock` needs it `'static`: every process
    // that locks it exits (or is killed) before this map goes.
    let pair: &'static Pair = unsafe { &*(m.addr as *const Pair) };
    let board_map = Map::shared_anon_page();
    let slot = |i: usize| {
        assert!(i < board::SLOTS);
        board_map.u64_at(i * 8)
    };

    let r = (|| -> TestResult {
        // Namespace A: init (pid 1) waits for the owner (pid 2), which locks and sleeps.
        let owner_group = in_new_pid_ns(false, slot(board::INITS), || {
            let me = std::fs::read_link("/proc/self")
                .ok()
                .and_then(|p| p.to_str()?.parse::<u64>().ok())
                .unwrap_or(0);
            slot(board::OWNER_PID).store(me, Ordering::SeqCst);
            // SAFETY: gettid has no preconditions.
            slot(board::OWNER_TID).store(unsafe { libc::gettid() } as u64, Ordering::SeqCst);
            let g = pair.lock();
            slot(board::HOLDING).store(1, Ordering::SeqCst);
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let _ = &g;
            }
        });
        let start = Instant::now();
        while slot(board::HOLDING).load(Ordering::SeqCst) == 0 {
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the owner did not lock (owner group status {:?})",
                wait_nohang(owner_group)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let owner_tid = slot(board::OWNER_TID).load(Ordering::SeqCst);
        let owner_pid = slot(board::OWNER_PID).load(Ordering::SeqCst);
        ensure_eq!(owner_tid, 2, "the owner's tid in its namespace");
        ensure!(owner_pid > 2, "the owner's pid in ours: {owner_pid}");

        let waiter = |w: usize| {
            move || {
                // SAFETY: gettid has no preconditions.
                slot(board::waiter(w, board::TID))
                    .store(unsafe { libc::gettid() } as u64, Ordering::SeqCst);
                slot(board::waiter(w, board::STARTED)).store(1, Ordering::SeqCst);
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match pair.lock() {
                        Ok(g) => (g, 1),
                        Err(died) => {
                            let mut g = died.into_inner();
                            g[1] = g[0];
                            (g, 2)
                        }
                    }));
                let at = monotonic_ns();
                match outcome {
                    Ok((mut g, outcome)) => {
                        slot(board::waiter(w, board::AT_NS)).store(at, Ordering::SeqCst);
                        slot(board::waiter(w, board::OUTCOME)).store(outcome, Ordering::SeqCst);
                        g[0] += 1;
                        std::thread::sleep(Duration::from_millis(50));
                        g[1] += 1;
                        0
                    }
                    Err(_) => {
                        slot(board::waiter(w, board::OUTCOME)).store(3, Ordering::SeqCst);
                        1
                    }
                }
            }
        };
        // Namespace B: the waiter is init (pid 1). Namespace C: it is pid 2, like the owner.
        let w0_group = in_new_pid_ns(true, slot(board::INITS + 1), waiter(0));
        let w1_group = in_new_pid_ns(false, slot(board::INITS + 2), waiter(1));
        let start = Instant::now();
        while (0..2).any(|w| slot(board::waiter(w, board::STARTED)).load(Ordering::SeqCst) == 0) {
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the waiters did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        ensure_eq!(
            (
                slot(board::waiter(0, board::TID)).load(Ordering::SeqCst),
                slot(board::waiter(1, board::TID)).load(Ordering::SeqCst)
            ),
            (1, 2),
            "the waiters' tids in their namespaces"
        );
        // The owner lives: for 1.5 s (30 of the waiters' 50 ms sleeps) nobody gets the lock.
        std::thread::sleep(Duration::from_millis(1500));
        for w in 0..2 {
            let outcome = slot(board::waiter(w, board::OUTCOME)).load(Ordering::SeqCst);
            ensure_eq!(
                outcome,
                0,
                "waiter {w} (pid {} of its namespace) while the owner lives (1: took the lock, \
                 2: called the owner dead, 3: panicked)",
                w + 1
            );
        }
        ensure_eq!(pair.owner(), Some(2), "the lock word while the owner lives");

        // The owner dies: one waiter is told at once, the other locks after it.
        let killed_at = monotonic_ns();
        // SAFETY: kills the owner process, our grandchild's child.
        let killed = unsafe { libc::kill(owner_pid as i32, libc::SIGKILL) };
        ensure_eq!(killed, 0, "kill the owner");
        let start = Instant::now();
        while (0..2).any(|w| slot(board::waiter(w, board::OUTCOME)).load(Ordering::SeqCst) == 0) {
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the waiters did not get the lock within 10 s of the owner's death"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let outcomes: Vec<u64> = (0..2)
            .map(|w| slot(board::waiter(w, board::OUTCOME)).load(Ordering::SeqCst))
            .collect();
        ensure!(
            outcomes == [1, 2] || outcomes == [2, 1],
            "outcomes {outcomes:?}: one OwnerDied (2) and one plain lock (1) expected"
        );
        let died = outcomes.iter().position(|o| *o == 2).unwrap();
        let delay = Duration::from_nanos(
            slot(board::waiter(died, board::AT_NS)).load(Ordering::SeqCst) - killed_at,
        );
        println!("    OwnerDied {delay:?} after the SIGKILL (waiter {died})");
        ensure!(
            delay < Duration::from_secs(1),
            "OwnerDied came {delay:?} after the owner's SIGKILL"
        );
        ensure_eq!(
            wait_child(owner_group),
            Ok(128 + libc::SIGKILL),
            "owner group"
        );
        ensure_eq!(wait_child(w0_group), Ok(0), "waiter 0 group");
        ensure_eq!(wait_child(w1_group), Ok(0), "waiter 1 group");
        let g = pair
            .lock()
            .map_err(|_| Failure::Fail("the lock's last holder died".into()))?;
        ensure_eq!(*g, [2, 2], "the pair after two waiters");
        Ok(())
    })();
    // Whatever happened, no process of the three namespaces survives the test.
    for i in 0..3 {
        let init = slot(board::INITS + i).load(Ordering::SeqCst);
        if init != 0 {
            // SAFETY: kills a namespace's init (and so the namespace); reaped by its parent.
            unsafe { libc::kill(init as i32, libc::SIGKILL) };
        }
    }
    // SAFETY: reaps any of our children left.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    drop(m);
    d.destroy(SEG)?;
    r
}

/// `waitpid(WNOHANG)`: `None` while the child runs.
fn wait_nohang(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: polls our child.
    (unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid).then_some(status)
}
