//! The state transfers dsu is compared with. Both start with the old version's state in
//! its private memory and end with the new version's own globals (fresh, untouched
//! anonymous memory, like the .data/.bss of a freshly exec'd binary) holding a copy, and
//! one word of it read back: the new version can serve.
//!
//! - [`copy_transfer`]: Kitsune/Ekiden style. The old version creates a shared buffer
//!   (memfd), copies its globals into it; the new version maps the buffer and copies them
//!   out into its own globals (two memcpys, plus the page faults of the buffer and of the
//!   new globals).
//! - [`serialise_transfer`]: Envoy style. The old version serialises its state and sends
//!   it over a Unix stream socket; the new version receives and decodes it into its
//!   globals. The format is the cheapest there is (fixed-width little-endian u64 fields),
//!   so the figure is a lower bound for a real format such as protobuf.
//!
//! The old and new sides run in one process (the sender on a thread for the socket), which
//! changes nothing in the work done: the copies, faults and socket transfers are the same.

use crate::raw::Reservation;
use crate::stats::Clock;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

/// Chunk of the serialised stream handed to one write/read.
const CHUNK: usize = 64 << 10;

/// Fills `state` with a pattern whose words depend on their position, so that a transfer
/// that loses or reorders data is caught by [`check`].
pub fn fill(state: &mut [u8]) {
    for (i, w) in state.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&pattern(i).to_le_bytes());
    }
}

fn pattern(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD5D5
}

/// Checks a few words (first, middle, last) of a transferred state.
pub fn check(state: &[u8]) -> io::Result<()> {
    let words = state.len() / 8;
    for i in [0, words / 2, words - 1] {
        let w = u64::from_le_bytes(state[i * 8..i * 8 + 8].try_into().unwrap());
        if w != pattern(i) {
            return Err(io::Error::other(format!("transfer corrupted word {i}")));
        }
    }
    Ok(())
}

fn memfd(len: usize) -> io::Result<OwnedFd> {
    // SAFETY: the name is a NUL-terminated literal.
    let fd = unsafe { libc::memfd_create(c"dsu-bench-state".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain system call on our fd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A shared mapping of a memfd, unmapped on drop.
struct SharedMap(Reservation);

impl SharedMap {
    fn new(fd: &OwnedFd, len: usize) -> io::Result<Self> {
        // SAFETY: a new shared mapping of our memfd at an address of the kernel's choice.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMap(Reservation {
            ptr: p as *mut u8,
            len,
        }))
    }
}

/// Copy-based transfer of `old` into `new` (fresh memory of the same length). Returns the
/// pause in nanoseconds.
pub fn copy_transfer(old: &[u8], new: &Reservation) -> io::Result<f64> {
    let len = old.len();
    let clock = Clock::start();
    // Old version: shared buffer, globals copied in.
    let fd = memfd(len)?;
    let out = SharedMap::new(&fd, len)?;
    out.0.bytes_mut().copy_from_slice(old);
    // New version: maps the buffer and copies the globals out into its own.
    let inp = SharedMap::new(&fd, len)?;
    new.bytes_mut().copy_from_slice(inp.0.bytes());
    std::hint::black_box(new.read(0));
    let ns = clock.ns();
    drop((out, inp, fd));
    check(new.bytes())?;
    Ok(ns)
}

/// Serialise-and-send transfer of `old` into `new` (fresh memory of the same length).
/// The sender thread (the old version) and the connected socket pair exist before the
/// pause starts, as the old and new process and their control socket would. Returns the
/// pause in nanoseconds: from the new version's request until its globals hold the state
/// and one word was read.
pub fn serialise_transfer(old: &[u8], new: &Reservation) -> io::Result<f64> {
    let (mut tx, mut rx) = UnixStream::pair()?;
    // The request to send: the sender spins on it, so that the figure holds the transfer
    // and not the wakeup of an idle CPU (slow under QEMU TCG).
    let start = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| -> io::Result<()> {
            while !start.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let mut buf = Vec::with_capacity(CHUNK);
            tx.write_all(&(old.len() as u64).to_le_bytes())?;
            for chunk in old.chunks(CHUNK) {
                buf.clear();
                for w in chunk.chunks_exact(8) {
                    let v = u64::from_ne_bytes(w.try_into().unwrap());
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                tx.write_all(&buf)?;
            }
            Ok(())
        });
        let received = (|| -> io::Result<f64> {
            let mut buf = vec![0u8; CHUNK];
            let clock = Clock::start();
            start.store(true, Ordering::Release);
            let mut header = [0u8; 8];
            rx.read_exact(&mut header)?;
            let len = u64::from_le_bytes(header) as usize;
            if len != new.len {
                return Err(io::Error::other("serialised length mismatch"));
            }
            let dst = new.bytes_mut();
            let mut at = 0;
            while at < len {
                let n = CHUNK.min(len - at);
                rx.read_exact(&mut buf[..n])?;
                for (d, s) in dst[at..at + n]
                    .chunks_exact_mut(8)
                    .zip(buf[..n].chunks_exact(8))
                {
                    let v = u64::from_le_bytes(s.try_into().unwrap());
                    d.copy_from_slice(&v.to_ne_bytes());
                }
                at += n;
            }
            std::hint::black_box(new.read(0));
            Ok(clock.ns())
        })();
        let sent = sender
            .join()
            .map_err(|_| io::Error::other("sender panicked"))?;
        let ns = received?;
        sent?;
        check(new.bytes())?;
        Ok(ns)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old_state(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        fill(&mut v);
        v
    }

    #[test]
    fn copy_moves_the_state() {
        let old = old_state(3 * 4096);
        let new = Reservation::anon(old.len()).unwrap();
        assert!(copy_transfer(&old, &new).unwrap() > 0.0);
        assert_eq!(new.bytes(), old);
    }

    #[test]
    fn serialise_moves_the_state() {
        let old = old_state(200 * 1024);
        let new = Reservation::anon(old.len()).unwrap();
        assert!(serialise_transfer(&old, &new).unwrap() > 0.0);
        assert_eq!(new.bytes(), old);
    }

    #[test]
    fn check_catches_corruption() {
        let mut s = vec![0u8; 4096];
        fill(&mut s);
        assert!(check(&s).is_ok());
        s[4088] ^= 1;
        assert!(check(&s).is_err());
    }
}
