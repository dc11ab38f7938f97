//! Kernel module: events. A newer version's BIND makes the other handles readable (poll) and
//! read() returns whole records (BOUND, then READY for a version that is not a candidate);
//! a version's end is reported too; the queue is bounded.

use crate::kmod_ioctl::*;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

#[distributed_slice(TESTS)]
static POLL_READ: VmTest = VmTest {
    name: "kmod_notify::poll_and_read",
    phase: Phase::Main,
    run: poll_read,
};
fn poll_read() -> TestResult {
    let name = unique("notify");
    let old = Dsu::open_flags(libc::O_RDWR | libc::O_NONBLOCK)?;
    old.attach(&name, 0, 0)?;
    let v = old.resolve_ok(vec![var("g", 8, 1, None)])?;
    old.bind("1.0", &[v[0].first_page], 0)?;
    let watcher = Dsu::open_flags(libc::O_RDWR | libc::O_NONBLOCK)?;
    watcher.attach(&name, 0, 0)?;
    let fresh = Dsu::open_flags(libc::O_RDWR | libc::O_NONBLOCK)?;
    ensure!(!old.readable(0)?, "old readable before anything happened");
    ensure_eq!(
        old.events().map(|_| ()),
        Err(Errno::EAGAIN),
        "non-blocking read of an empty queue"
    );

    let new = Dsu::attached(&name)?;
    let id = new.bind("2.0", &[v[0].first_page], 0)?;
    for (who, h) in [("old version", &old), ("watcher", &watcher)] {
        ensure!(h.readable(0)?, "{who} not readable after a newer BIND");
        let evs = h.events()?;
        ensure_eq!(evs.len(), 2, "{who}: events");
        ensure_eq!(
            (evs[1].kind, evs[1].version_id),
            (DSU_EVENT_VERSION_READY, id),
            "{who}: a plain BIND is ready at once"
        );
        let e = &evs[0];
        ensure_eq!(
            (e.size, e.kind, e.version_id),
            (64, DSU_EVENT_VERSION_BOUND, id),
            "{who}: event"
        );
        ensure_eq!(e.pid, std::process::id() as i32, "{who}: pid");
        ensure_eq!(cstr(&e.label), "2.0", "{who}: label");
        ensure_eq!(e.lost, 0, "{who}: lost");
        ensure!(e.time_ns > 0, "{who}: time");
        ensure!(!h.readable(0)?, "{who} readable after draining");
    }
    ensure!(!fresh.readable(0)?, "an unattached handle got an event");
    ensure!(!new.readable(0)?, "the binder got its own event");

    // The new version ends; then a buffer smaller than one record.
    drop(new);
    ensure!(
        old.readable(0)?,
        "old not readable after the new version ended"
    );
    let mut small = [0u8; 63];
    ensure_eq!(
        old.read(&mut small),
        Err(Errno::EINVAL),
        "read into 63 bytes"
    );
    let evs = old.events()?;
    ensure_eq!(evs.len(), 1, "ended events");
    ensure_eq!(
        (evs[0].kind, evs[0].version_id),
        (DSU_EVENT_VERSION_ENDED, id),
        "ended event"
    );
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static BLOCKING: VmTest = VmTest {
    name: "kmod_notify::blocking_read_wakes",
    phase: Phase::Main,
    run: blocking,
};
fn blocking() -> TestResult {
    let name = unique("block");
    let waiter = Dsu::attached(&name)?;
    let v = waiter.resolve_ok(vec![var("g", 8, 1, None)])?;
    let page = v[0].first_page;
    let reader = std::thread::spawn(move || waiter.events());
    std::thread::sleep(std::time::Duration::from_millis(200));
    ensure!(!reader.is_finished(), "read returned before any event");
    let binder = Dsu::attached(&name)?;
    // A candidate: one event, BOUND.
    let id = binder.bind("next", &[page], DSU_BIND_CANDIDATE)?;
    let evs = reader.join().map_err(|_| "reader panicked")??;
    ensure_eq!(evs.len(), 1, "events");
    ensure_eq!(
        (evs[0].kind, evs[0].version_id),
        (DSU_EVENT_VERSION_BOUND, id),
        "event"
    );

    // A signal interrupts a blocked read (EINTR without SA_RESTART).
    let waiter = Dsu::attached(&name)?;
    let child = spawn(move || {
        extern "C" fn nothing(_: i32) {}
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(nothing),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: The handler does nothing.
        unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGUSR1, &action) }?;
        ensure_eq!(
            waiter.events().map(|_| ()),
            Err(Errno::EINTR),
            "read interrupted by a signal"
        );
        Ok(())
    });
    // Signal until it is out: one sent before it blocks only runs the handler.
    let mut done = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGUSR1)?;
        if let nix::sys::wait::WaitStatus::Exited(_, code) =
            nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG))?
        {
            ensure_eq!(code, 0, "interrupted reader's exit");
            done = true;
            break;
        }
    }
    ensure!(done, "blocked reader was not interrupted");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static OVERFLOW: VmTest = VmTest {
    name: "kmod_notify::queue_overflow_counts_lost",
    phase: Phase::Main,
    run: overflow,
};
fn overflow() -> TestResult {
    let name = unique("overflow");
    let watcher = Dsu::open_flags(libc::O_RDWR | libc::O_NONBLOCK)?;
    watcher.attach(&name, 0, 0)?;
    let v = watcher.resolve_ok(vec![var("g", 8, 1, None)])?;
    // 40 versions bind (BOUND and READY) and end: 120 events for a queue of 64.
    for i in 0..40 {
        let h = Dsu::attached(&name)?;
        h.bind(&format!("v{i}"), &[v[0].first_page], 0)?;
    }
    let mut all = Vec::new();
    loop {
        match watcher.events() {
            Ok(evs) => all.extend(evs),
            Err(Errno::EAGAIN) => break,
            Err(e) => return Err(e.into()),
        }
    }
    ensure_eq!(all.len(), 64, "events kept");
    ensure_eq!(all[0].lost, 56, "lost before the oldest kept");
    ensure!(all[1..].iter().all(|e| e.lost == 0), "lost on later events");
    let last = all.last().ok_or("no events")?;
    ensure_eq!(
        (last.kind, cstr(&last.label)),
        (DSU_EVENT_VERSION_ENDED, "v39".to_string()),
        "newest event"
    );
    cleanup(&name);
    Ok(())
}
