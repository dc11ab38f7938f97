//! Kernel module: a handle's event wait queue and epoll. epoll keeps its entry on the queue
//! after `poll` returns; the queue is torn down with `POLLFREE` and an RCU grace period, so
//! an epoll instance that outlives the handle (or watches it from a forked child) never
//! touches freed memory (KASAN would report it).

use crate::kmod_ioctl::*;
use crate::robust_raw::KernelLog;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A new epoll instance watching `fds` for POLLIN.
fn epoll_on(fds: &[RawFd]) -> Result<OwnedFd, Errno> {
    // SAFETY: Creates a new fd.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(Errno::last());
    }
    // SAFETY: A fresh fd that we own.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for &fd in fds {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: Valid fds and a valid event.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(Errno::last());
        }
    }
    Ok(ep)
}

/// `epoll_wait` with a timeout in ms: the number of ready fds.
fn ready(ep: &OwnedFd, timeout_ms: i32) -> Result<usize, Errno> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
    // SAFETY: `evs` has room for 4 events.
    let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), evs.as_mut_ptr(), 4, timeout_ms) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

#[distributed_slice(TESTS)]
static EPOLL: VmTest = VmTest {
    name: "kmod_poll::epoll_outlives_handles",
    phase: Phase::Main,
    run: epoll_outlives_handles,
};
fn epoll_outlives_handles() -> TestResult {
    let log = KernelLog::mark();
    let name = unique("poll-epoll");
    for round in 0..20u64 {
        let watcher = Dsu::attached(&name)?;
        // A second epoll watches a dup of the fd, so the file outlives the first close.
        let dup = watcher.0.try_clone()?;
        let epoll = epoll_on(&[watcher.fd()])?;
        let epoll2 = epoll_on(&[dup.as_raw_fd()])?;

        // Another handle binds: the watcher's queue gets an event and wakes both.
        let binder = Dsu::attached(&name)?;
        let v = binder.resolve_ok(vec![var("x", 8, 1, None)])?;
        binder.bind(&format!("{round}"), &[v[0].first_page], 0)?;
        ensure_eq!(
            ready(&epoll, 2000)?,
            1,
            "epoll saw no event (round {round})"
        );
        ensure_eq!(
            ready(&epoll2, 2000)?,
            1,
            "second epoll saw no event (round {round})"
        );
        // Close the handles in varying orders while the epoll instances live on.
        match round % 3 {
            0 => drop((watcher, dup, binder)),
            1 => drop((binder, dup, watcher)),
            _ => drop((dup, watcher, binder)),
        }
        ensure!(ready(&epoll, 0)? == 0, "an event for a closed handle");
        drop((epoll, epoll2));
    }
    cleanup(&name);
    log.check()
}
