//! Connection handling: a few worker threads (one per CPU), each with its own epoll set
//! and the connections handed to it, instead of a thread per connection. Under
//! `redis-benchmark -c 50` a thread per connection means 50 threads woken one request at
//! a time; a worker serves every ready connection per wake-up (BENCHMARKS.md, "kv server
//! on the heap keyspace", compares the two).
//!
//! The acceptor (the server's main loop) pushes a new connection into a worker's inbox,
//! then adds its socket to the worker's epoll set, so the worker has adopted it by the
//! time it sees its first event. Level-triggered: a connection is watched for input
//! unless its pending output passed [`OUT_HIGH_WATER`], and for output while any is
//! pending.

use crate::commands::{After, Ctx, execute};
use crate::resp;
use crate::server::Local;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

/// Pending output past which a connection's input is not read until the client reads.
pub const OUT_HIGH_WATER: usize = 16 << 20;
/// Input read per wake-up of one connection before its requests run.
const READ_BUDGET: usize = 256 * 1024;

/// One connection's buffers (generic over the stream for the tests).
struct Conn<S = TcpStream> {
    stream: S,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// QUIT or a protocol error: close once the output is written.
    closing: bool,
    /// The interest registered now.
    interest: EpollFlags,
}

impl<S: Read + Write> Conn<S> {
    fn new(stream: S) -> Self {
        Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            closing: false,
            interest: EpollFlags::EPOLLIN,
        }
    }

    fn pending(&self) -> usize {
        self.output.len() - self.written
    }

    fn wanted(&self) -> EpollFlags {
        let mut f = EpollFlags::empty();
        if !self.closing && self.pending() < OUT_HIGH_WATER {
            f |= EpollFlags::EPOLLIN;
        }
        if self.pending() > 0 {
            f |= EpollFlags::EPOLLOUT;
        }
        f
    }

    /// Reads what is there, runs every whole request, writes what the socket takes.
    /// Returns whether the connection stays open.
    ///
    /// System calls are what a request costs most (BENCHMARKS.md, "Where the time goes"),
    /// so, as Redis does: one `read` per wake-up unless it filled the buffer (no second
    /// `read` just to see `EAGAIN`; level-triggered epoll reports the rest), requests
    /// parsed where they were read (no copy into the connection's buffer unless a request
    /// is split across reads), and one `write` of every reply of the batch.
    fn service(&mut self, ctx: &Ctx, local: &Local, chunk: &mut [u8]) -> bool {
        let mut eof = false;
        let mut got = 0;
        let mut executed = 0;
        while !self.closing && self.pending() < OUT_HIGH_WATER && got < READ_BUDGET {
            let n = match self.stream.read(chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            got += n;
            // One argument vector for the batch (it borrows the buffer read into).
            let mut args = Vec::new();
            if self.input.is_empty() {
                let used = run_requests(
                    ctx,
                    &chunk[..n],
                    &mut args,
                    &mut self.output,
                    &mut self.closing,
                    &mut executed,
                );
                self.input.extend_from_slice(&chunk[used..n]);
            } else {
                self.input.extend_from_slice(&chunk[..n]);
                let used = run_requests(
                    ctx,
                    &self.input,
                    &mut args,
                    &mut self.output,
                    &mut self.closing,
                    &mut executed,
                );
                self.input.drain(..used);
            }
            if n < chunk.len() {
                break;
            }
        }
        if self.closing {
            self.input.clear();
        }
        if executed > 0 {
            local.commands.fetch_add(executed, Relaxed);
        }
        while self.pending() > 0 {
            match self.stream.write(&self.output[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.pending() == 0 {
            self.output.clear();
            self.written = 0;
            if self.output.capacity() > 1 << 20 {
                self.output.shrink_to(64 * 1024);
            }
        }
        if self.input.capacity() > 1 << 20 && self.input.len() < 64 * 1024 {
            self.input.shrink_to(64 * 1024);
        }
        // Closed as Redis does: when the client closed (read 0), or after QUIT or a
        // protocol error once the reply is out.
        let done = self.closing && self.pending() == 0;
        !eof && !done
    }

    fn idle(&self) -> bool {
        self.input.is_empty() && self.pending() == 0
    }
}

/// Runs every whole request at the front of `buf` (stopping at QUIT or a protocol error,
/// which set `closing`), appending the replies to `out`; returns the bytes used. `args` is
/// the argument vector reused for every request.
fn run_requests<'a>(
    ctx: &Ctx,
    buf: &'a [u8],
    args: &mut Vec<&'a [u8]>,
    out: &mut Vec<u8>,
    closing: &mut bool,
    executed: &mut u64,
) -> usize {
    let mut pos = 0;
    while !*closing {
        match resp::parse_into(&buf[pos..], args) {
            Ok(Some(used)) => {
                pos += used;
                if args.is_empty() {
                    continue;
                }
                *executed += 1;
                if execute(ctx, args, out) == After::Close {
                    *closing = true;
                }
            }
            Ok(None) => break,
            Err(e) => {
                resp::error(out, &format!("ERR {e}"));
                *closing = true;
            }
        }
    }
    pos
}

/// A worker: its epoll set and the connections handed to it not yet adopted.
pub struct Worker {
    epoll: Epoll,
    inbox: Mutex<Vec<TcpStream>>,
}

/// The workers of a process.
pub struct Pool {
    workers: Vec<&'static Worker>,
    next: std::sync::atomic::AtomicUsize,
}

impl Pool {
    /// Starts `n` workers serving `ctx`.
    pub fn start(n: usize, ctx: &'static Ctx<'static>, local: &'static Local) -> io::Result<Pool> {
        let mut workers = Vec::new();
        for i in 0..n.max(1) {
            let w: &'static Worker = Box::leak(Box::new(Worker {
                epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
                inbox: Mutex::new(Vec::new()),
            }));
            std::thread::Builder::new()
                .name(format!("kv-worker-{i}"))
                .spawn(move || run(w, ctx, local))?;
            workers.push(w);
        }
        Ok(Pool {
            workers,
            next: Default::default(),
        })
    }

    /// Hands a new connection to the next worker, round robin.
    pub fn add(&self, stream: TcpStream) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        let w = self.workers[self.next.fetch_add(1, Relaxed) % self.workers.len()];
        let fd = stream.as_raw_fd();
        // Watched before the worker holds it: an event for a connection not yet adopted is
        // skipped, and fires again (level-triggered) after the worker drained its inbox.
        w.epoll
            .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, fd as u64))?;
        w.inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stream);
        Ok(())
    }
}

fn run(w: &'static Worker, ctx: &'static Ctx<'static>, local: &'static Local) {
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut events = vec![EpollEvent::empty(); 256];
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match w.epoll.wait(&mut events, EpollTimeout::from(200u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => {
                eprintln!("dsu-kv: epoll_wait: {e}");
                return;
            }
        };
        for s in w.inbox.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            conns.insert(s.as_raw_fd(), Conn::new(s));
        }
        for ev in &events[..n] {
            let fd = ev.data() as RawFd;
            let Some(c) = conns.get_mut(&fd) else {
                continue;
            };
            let open = c.service(ctx, local, &mut chunk);
            let want = c.wanted();
            if open && want != c.interest {
                c.interest = want;
                let _ = w
                    .epoll
                    .modify(&c.stream, &mut EpollEvent::new(want, fd as u64));
            }
            if !open {
                close(w, &mut conns, fd, local);
            }
        }
        if local.close_idle.load(Relaxed) {
            let idle: Vec<RawFd> = conns
                .iter()
                .filter(|(_, c)| c.idle())
                .map(|(fd, _)| *fd)
                .collect();
            for fd in idle {
                close(w, &mut conns, fd, local);
            }
        }
    }
}

fn close(w: &Worker, conns: &mut HashMap<RawFd, Conn>, fd: RawFd, local: &Local) {
    if let Some(c) = conns.remove(&fd) {
        let _ = w.epoll.delete(&c.stream);
        drop(c);
        local.clients.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{Ctx, Store};
    use crate::keyspace::Keyspace;
    use crate::stats::Stats;
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;

    /// A socket that hands out the given reads (then `WouldBlock`) and counts calls.
    #[derive(Default)]
    struct Script {
        reads: VecDeque<Vec<u8>>,
        read_calls: usize,
        write_calls: usize,
        sent: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.read_calls += 1;
            let Some(mut next) = self.reads.pop_front() else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            let n = next.len().min(buf.len());
            buf[..n].copy_from_slice(&next[..n]);
            if n < next.len() {
                self.reads.push_front(next.split_off(n));
            }
            Ok(n)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_calls += 1;
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn ctx() -> &'static Ctx<'static> {
        static KEYSPACE: Keyspace<crate::alloc::ServerAlloc> = Keyspace::new();
        static STATS: Stats = Stats::new();
        static CLIENTS: AtomicUsize = AtomicUsize::new(0);
        Box::leak(Box::new(Ctx {
            store: Store::Local(&KEYSPACE),
            stats: &STATS,
            cmd_stats: None,
            version: 1,
            port: 0,
            started: std::time::Instant::now(),
            clients: &CLIENTS,
        }))
    }

    fn sets(n: usize) -> Vec<u8> {
        let mut req = Vec::new();
        for i in 0..n {
            resp::request(&mut req, &[b"SET", format!("k{i}").as_bytes(), b"v"]);
        }
        req
    }

    /// A pipeline that arrives in one read costs one `read` and one `write`, as in Redis:
    /// no second `read` that only finds `EAGAIN` (the event loop made one per batch).
    #[test]
    fn one_read_and_one_write_per_batch() {
        let (ctx, local) = (ctx(), Local::default());
        let mut chunk = vec![0u8; 64 * 1024];
        let mut c = Conn::new(Script::default());
        c.stream.reads.push_back(sets(16));
        assert!(c.service(ctx, &local, &mut chunk));
        assert_eq!((c.stream.read_calls, c.stream.write_calls), (1, 1));
        assert_eq!(c.stream.sent, b"+OK\r\n".repeat(16));
        assert_eq!(local.commands.load(Relaxed), 16);
        assert!(c.idle());
    }

    /// A read that fills the buffer is followed by another; requests split across reads
    /// (and across wake-ups) are kept and run once whole.
    #[test]
    fn full_reads_and_split_requests() {
        let (ctx, local) = (ctx(), Local::default());
        let mut chunk = vec![0u8; 64];
        let req = sets(10);
        let mut c = Conn::new(Script::default());
        c.stream.reads.push_back(req[..100].to_vec());
        assert!(c.service(ctx, &local, &mut chunk));
        // 64 bytes (full: read again), then 36.
        assert_eq!(c.stream.read_calls, 2);
        let whole = c.stream.sent.len() / 5;
        assert!(
            whole >= 2 && !c.idle(),
            "{whole} replies, part of a request kept"
        );
        c.stream.reads.push_back(req[100..].to_vec());
        assert!(c.service(ctx, &local, &mut chunk));
        assert_eq!(c.stream.sent, b"+OK\r\n".repeat(10));
        assert!(c.idle());
    }

    /// QUIT: its reply is written, later requests of the batch are not run, and the
    /// connection closes.
    #[test]
    fn quit_ends_the_batch() {
        let (ctx, local) = (ctx(), Local::default());
        let mut chunk = vec![0u8; 1024];
        let mut req = Vec::new();
        resp::request(&mut req, &[b"PING"]);
        resp::request(&mut req, &[b"QUIT"]);
        resp::request(&mut req, &[b"PING"]);
        let mut c = Conn::new(Script::default());
        c.stream.reads.push_back(req);
        assert!(!c.service(ctx, &local, &mut chunk));
        assert_eq!(c.stream.sent, b"+PONG\r\n+OK\r\n");
    }
}
