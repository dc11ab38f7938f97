//! The TCP server and the update procedure.
//!
//! Start-up of a version: attach to the dsu segment as a candidate (the keyspace of the
//! running version appears at once), bind the port with `SO_REUSEPORT` and listen
//! (connections queue from now on), declare the version ready (the running version gets a
//! "version ready" event; had start-up failed first, it would get "version aborted" and keep
//! serving), then accept.
//!
//! Retirement of the old version, when its `/dev/dsu` handle reports a newer version:
//! accept whatever is already queued on its listener, close the listener (the kernel now
//! sends every new connection to the new version; with `net.ipv4.tcp_migrate_req=1` even
//! a connection that raced into the closing listener's queue is moved, not reset), keep
//! serving the open connections until their clients close them, and exit. Clients such as
//! `redis-benchmark` never reconnect, so an old version must not close a connection under
//! them; only after `--drain-timeout` are connections closed, and then only when idle
//! (no partial request buffered, no reply pending).
//!
//! Under the supervisor (`dsuctl run`), the listener is inherited instead (`LISTEN_FDS`,
//! see [`crate::activation`]) and the version sends `READY=1` ([`dsu::notify::ready`])
//! once it attached and is ready, before it accepts.

use crate::commands::{After, Ctx, Store, execute};
use crate::event_loop::Pool;
use crate::resp::{self, Parsed};
use crate::stats::{CommandStats, Stats};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// What a version of the server consists of: its number and its globals.
pub struct Program {
    /// 1, 2 or 3.
    pub version: u32,
    /// The keyspace (a global in the segment's shared heap).
    pub store: Store,
    /// The same keyspace in the process's own heap, for `--no-dsu`.
    pub local_store: Store,
    /// Whether this version's attach migrates the keyspace (v3): it then binds a
    /// forwarding port first, for the older version's requests ([`crate::forward`]).
    pub migrates_keyspace: bool,
    /// The totals global.
    pub stats: &'static Stats,
    /// The per-command statistics global (v2 on).
    pub cmd_stats: Option<&'static dyn CommandStats>,
}

/// Command-line options, common to `kv_v1`, `kv_v2` and `kv_v3`.
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(
    name = "kv_vN",
    version,
    about = "A Redis-protocol key-value server whose keyspace lives in dsu shared globals",
    after_help = "Start a newer version on the same port and segment while this one runs: it \
                  sees every key at once, and this one retires after its clients leave."
)]
pub struct Options {
    /// Address to listen on.
    #[arg(long, value_name = "IPV4", default_value_t = Ipv4Addr::LOCALHOST)]
    pub bind: Ipv4Addr,
    /// TCP port.
    #[arg(long, value_name = "N", default_value_t = 6379)]
    pub port: u16,
    /// dsu segment holding the keyspace.
    #[arg(long, value_name = "NAME", default_value = "kv")]
    pub segment: String,
    /// How long a retiring version waits for its clients to close before closing idle
    /// connections itself, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_secs)]
    pub drain_timeout: Duration,
    /// Run without dsu: the globals stay private to this process.
    #[arg(long)]
    pub no_dsu: bool,
    /// The keyspace's memory limit in bytes (Redis's `maxmemory`): past it, writes get
    /// `-OOM`. With dsu, the reserve of the segment's shared heap when this version
    /// creates it (0: 1 GiB; an existing heap keeps its reserve); without, a limit on the
    /// process heap's keyspace bytes (0: none).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub maxmemory: usize,
    /// Serve each connection on its own thread instead of the workers' event loops (for
    /// comparison).
    #[arg(long)]
    pub thread_per_connection: bool,
    /// Event-loop worker threads (0: one per CPU).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub workers: usize,
    /// For the supervisor's tests: fail at POINT instead of becoming ready (exit with
    /// status 3, or hang until killed), before or after attaching to the segment.
    #[arg(long, hide = true, value_name = "POINT")]
    pub test_fail_before_ready: Option<FailPoint>,
}

/// Where `--test-fail-before-ready` makes a version fail, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailPoint {
    /// Exit with status 3 before attaching.
    ExitBeforeAttach,
    /// Hang before attaching.
    HangBeforeAttach,
    /// Exit with status 3 after attaching (a bound candidate) and listening, before the
    /// dsu READY (the old version is told this one aborted) and READY=1.
    ExitAfterAttach,
    /// Hang after attaching (a bound candidate) and listening, before the dsu READY and
    /// READY=1.
    HangAfterAttach,
}

impl FailPoint {
    fn strike(self, say: impl Fn(String)) {
        say(format!(
            "failing on purpose at {self:?} (--test-fail-before-ready)"
        ));
        if matches!(
            self,
            FailPoint::ExitBeforeAttach | FailPoint::ExitAfterAttach
        ) {
            std::process::exit(3);
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bind: Ipv4Addr::LOCALHOST,
            port: 6379,
            segment: "kv".into(),
            drain_timeout: Duration::from_secs(120),
            no_dsu: false,
            maxmemory: 0,
            thread_per_connection: false,
            workers: 0,
            test_fail_before_ready: None,
        }
    }
}

/// Parses `--drain-timeout`: non-negative seconds, fractions allowed.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a number of seconds >= 0"))
}

impl Options {
    /// Parses the command line of `program` (`args` without the program name). The error
    /// is clap's: print it with [`clap::Error::exit`], which also handles `--help` and
    /// `--version` (exit 0).
    ///
    /// ```
    /// let o = dsu_kv::server::Options::from_args("kv_v1", ["--port", "7000", "--no-dsu"]).unwrap();
    /// assert_eq!(o.port, 7000);
    /// assert!(o.no_dsu);
    /// ```
    pub fn from_args<I, T>(program: &str, args: I) -> Result<Options, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Options::command()
            .name(program.to_owned())
            .bin_name(program.to_owned());
        let argv = std::iter::once(std::ffi::OsString::from(program))
            .chain(args.into_iter().map(Into::into));
        let matches = cmd.try_get_matches_from_mut(argv)?;
        Options::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
    }
}

/// Creates a listening TCP socket with `SO_REUSEADDR` and `SO_REUSEPORT`, so that two
/// versions listen on the same port at once.
pub fn listen_reuseport(addr: SocketAddrV4, backlog: i32) -> io::Result<TcpListener> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: plain socket syscalls on a descriptor this function owns; the option values
    // and the address are live locals of the sizes passed.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            check(libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        check(libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ))?;
        check(libc::listen(fd, backlog))?;
        Ok(TcpListener::from(owned))
    }
}

/// This process's own counters and drain state, shared by its connection threads.
#[derive(Default)]
pub struct Local {
    /// Open connections.
    pub clients: AtomicUsize,
    /// Commands this process executed.
    pub commands: AtomicU64,
    /// Connections this process accepted.
    pub connections: AtomicU64,
    /// Set when the drain timeout passed: idle connections close.
    pub close_idle: AtomicBool,
}

/// Serves one connection until the client closes it (or QUIT, a protocol error, or
/// `close_idle` while idle).
pub fn handle_connection(stream: TcpStream, ctx: &Ctx, local: &Local) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut stream = stream;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if buf.is_empty() && local.close_idle.load(Relaxed) {
                    return;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        let mut close = false;
        loop {
            match resp::parse(&buf[pos..]) {
                Ok(Parsed::Request(args, used)) => {
                    pos += used;
                    if args.is_empty() {
                        continue;
                    }
                    local.commands.fetch_add(1, Relaxed);
                    if execute(ctx, &args, &mut out) == After::Close {
                        close = true;
                        break;
                    }
                }
                Ok(Parsed::Incomplete) => break,
                Err(e) => {
                    resp::error(&mut out, &format!("ERR {e}"));
                    close = true;
                    break;
                }
            }
        }
        buf.drain(..pos);
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
    }
}

/// Why the accept loop ended.
enum Stop {
    /// A newer version bound: its label and pid.
    Newer(String, i32),
}

fn poll_readable(fds: &[RawFd], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: p is a live array of p.len() pollfds.
    let r = unsafe {
        libc::poll(
            p.as_mut_ptr(),
            p.len() as libc::nfds_t,
            timeout.as_millis() as libc::c_int,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents != 0).collect())
}

fn spawn_connection(
    stream: TcpStream,
    ctx: &'static Ctx<'static>,
    local: &'static Local,
    pool: Option<&Pool>,
) {
    local.clients.fetch_add(1, Relaxed);
    local.connections.fetch_add(1, Relaxed);
    ctx.stats.total_connections.fetch_add(1, Relaxed);
    if let Some(pool) = pool {
        if let Err(e) = pool.add(stream) {
            eprintln!("dsu-kv: cannot hand a connection to a worker: {e}");
            local.clients.fetch_sub(1, Relaxed);
        }
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("kv-conn".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            handle_connection(stream, ctx, local);
            local.clients.fetch_sub(1, Relaxed);
        });
    if let Err(e) = spawned {
        eprintln!("dsu-kv: cannot start a connection thread: {e}");
        local.clients.fetch_sub(1, Relaxed);
    }
}

/// Accepts every connection already queued on the (non-blocking) listener.
fn accept_queued(
    listener: &TcpListener,
    ctx: &'static Ctx<'static>,
    local: &'static Local,
    pool: Option<&Pool>,
) -> io::Result<usize> {
    let mut n = 0;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                // Accepted sockets do not inherit O_NONBLOCK: a thread per connection
                // reads blocking as they come; the workers make theirs non-blocking.
                spawn_connection(s, ctx, local, pool);
                n += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs a version of the server: the body of `kv_v1`, `kv_v2` and `kv_v3`. Exits the
/// process: 0 after a clean retirement, 1 on an error.
pub fn main(p: Program) -> ! {
    let name = format!("kv_v{}", p.version);
    let opts = Options::from_args(&name, std::env::args_os().skip(1)).unwrap_or_else(|e| e.exit());
    match run(&name, p, &opts) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
    }
}

fn run(name: &str, p: Program, opts: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let say = |msg: String| {
        println!("{name}[{}]: {msg}", std::process::id());
        let _ = io::stdout().flush();
    };
    if opts.maxmemory > 0 && opts.no_dsu {
        crate::alloc::Counted::set_limit(opts.maxmemory);
    }
    let fail = |point: FailPoint| {
        if opts.test_fail_before_ready == Some(point) {
            point.strike(say);
        }
    };
    fail(FailPoint::ExitBeforeAttach);
    fail(FailPoint::HangBeforeAttach);
    // Attach as a candidate, then listen, then declare the version ready: the old version
    // closes its listener only once it learns that we are ready, and by then connections
    // queue for us. If start-up fails before (the address cannot be bound), this process
    // exits, the kernel tells the old version that this one aborted, and it keeps serving.
    let mut forward_listener: Option<TcpListener> = None;
    let version = if opts.no_dsu {
        say("running without dsu: globals are private to this process".into());
        None
    } else {
        if p.migrates_keyspace {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            l.set_nonblocking(true)?;
            crate::migrate::FORWARD_PORT.store(l.local_addr()?.port(), Relaxed);
            forward_listener = Some(l);
        }
        let t0 = Instant::now();
        let v = dsu::Attach::new(opts.segment.as_str(), name)
            .heap(opts.maxmemory)
            .attach()?;
        let vars: Vec<String> = v
            .variables()
            .iter()
            .map(|x| format!("{} {}", x.name, format!("{:?}", x.status).to_lowercase()))
            .collect();
        say(format!(
            "attached to segment {:?} in {} ms ({}): {}",
            opts.segment,
            t0.elapsed().as_millis(),
            if v.created_segment() {
                "created it"
            } else {
                "joined the running version"
            },
            vars.join(", ")
        ));
        Some(v)
    };
    // Under a supervisor (LISTEN_FDS) the socket is inherited: every version accepts from
    // the one socket it holds.
    let listener = match crate::activation::inherited_listener()? {
        Some(l) => {
            say(format!("using the inherited listener {}", l.local_addr()?));
            l
        }
        None => listen_reuseport(SocketAddrV4::new(opts.bind, opts.port), 1024)
            .map_err(|e| format!("listen on {}:{}: {e}", opts.bind, opts.port))?,
    };
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    fail(FailPoint::ExitAfterAttach);
    fail(FailPoint::HangAfterAttach);
    if let Some(v) = &version {
        v.ready()?;
        // Before serving anything: the old stripes (if this attach migrated them) are
        // stale from now on.
        crate::migrate::commit();
        say("ready: older versions may retire".into());
    }
    let store = if opts.no_dsu { p.local_store } else { p.store };
    let started = p.stats.versions_started.fetch_add(1, Relaxed) + 1;
    // Both live as long as the process: connection threads are never joined.
    let local: &'static Local = Box::leak(Box::default());
    let ctx: &'static Ctx<'static> = Box::leak(Box::new(Ctx {
        store,
        stats: p.stats,
        cmd_stats: p.cmd_stats,
        version: p.version,
        port,
        started: Instant::now(),
        clients: &local.clients,
    }));
    let pool = if opts.thread_per_connection {
        None
    } else {
        let n = match opts.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Some(Pool::start(n, ctx, local)?)
    };
    say(format!(
        "serving {}: {} keys, total_commands_processed={}, versions started so far: {started}",
        listener.local_addr()?,
        store.len(),
        p.stats.total_commands.load(Relaxed)
    ));

    // A supervisor (`dsuctl run`) lets the old version drain only after this. Failing to
    // tell it is no reason to stop serving: it will time this version out if it must.
    if let Err(e) = dsu::notify::ready() {
        say(format!("cannot send READY=1 to $NOTIFY_SOCKET: {e}"));
    }

    let stop = loop {
        let mut fds = vec![listener.as_raw_fd()];
        if let Some(v) = &version {
            fds.push(v.as_fd().as_raw_fd());
        }
        if let Some(f) = &forward_listener {
            fds.push(f.as_raw_fd());
        }
        let ready = poll_readable(&fds, Duration::from_secs(1))?;
        if ready[0] {
            accept_queued(&listener, ctx, local, pool.as_ref())?;
        }
        if let Some(f) = &forward_listener
            && ready[fds.len() - 1]
        {
            // A thread each (the older version has one connection per worker): a
            // forwarded request, which blocks an older version's worker until answered,
            // must not wait behind the event loops' pipelined clients.
            accept_queued(f, ctx, local, None)?;
        }
        if let Some(v) = &version
            && let Some(e) = v.newer_version()?
        {
            break Stop::Newer(e.label, e.pid);
        }
    };
    let Stop::Newer(label, pid) = stop;
    let late = accept_queued(&listener, ctx, local, pool.as_ref())?;
    drop(listener);
    say(format!(
        "newer version {label} (pid {pid}) is ready: listener closed, draining {} open connection(s){}",
        local.clients.load(Relaxed),
        if late > 0 {
            format!(" ({late} accepted from the queue)")
        } else {
            String::new()
        }
    ));
    let t0 = Instant::now();
    while local.clients.load(Relaxed) > 0 {
        if t0.elapsed() > opts.drain_timeout && !local.close_idle.swap(true, Relaxed) {
            say(format!(
                "drain timeout ({:?}) passed: closing {} idle connection(s)",
                opts.drain_timeout,
                local.clients.load(Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    say(format!(
        "retired after draining for {} ms: this process served {} commands on {} connections ({} forwarded to the version that took the keyspace over)",
        t0.elapsed().as_millis(),
        local.commands.load(Relaxed),
        local.connections.load(Relaxed),
        crate::forward::FORWARDED.load(Relaxed)
    ));
    drop(version);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    #[test]
    fn every_flag_keeps_its_meaning() {
        assert_eq!(
            Options::from_args("kv_v1", Vec::<String>::new()).unwrap(),
            Options::default()
        );
        let o = Options::from_args(
            "kv_v2",
            [
                "--port",
                "7000",
                "--bind",
                "0.0.0.0",
                "--segment",
                "kv2",
                "--drain-timeout",
                "0.5",
                "--no-dsu",
            ],
        )
        .unwrap();
        assert_eq!(
            o,
            Options {
                bind: Ipv4Addr::UNSPECIFIED,
                port: 7000,
                segment: "kv2".into(),
                drain_timeout: Duration::from_millis(500),
                no_dsu: true,
                maxmemory: 0,
                thread_per_connection: false,
                workers: 0,
                test_fail_before_ready: None,
            }
        );
        // The `--flag=value` form clap adds.
        assert_eq!(
            Options::from_args("kv_v1", ["--port=7001"]).unwrap().port,
            7001
        );
    }

    #[test]
    fn usage_errors_and_help() {
        for bad in [
            &["--port"][..],
            &["--port", "65536"],
            &["--bind", "::1"],
            &["--drain-timeout", "-1"],
            &["--drain-timeout", "soon"],
            &["--frob"],
            &["extra"],
        ] {
            let e = Options::from_args("kv_v1", bad).unwrap_err();
            assert!(e.use_stderr(), "{bad:?} must be a usage error (exit 2)");
        }
        let help = Options::from_args("kv_v3", ["--help"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        let text = help.to_string();
        assert!(text.contains("Usage: kv_v3"), "{text}");
        for flag in [
            "--port",
            "--bind",
            "--segment",
            "--drain-timeout",
            "--no-dsu",
        ] {
            assert!(text.contains(flag), "--help lists {flag}: {text}");
        }
        let version = Options::from_args("kv_v2", ["--version"]).unwrap_err();
        assert_eq!(version.kind(), ErrorKind::DisplayVersion);
        assert_eq!(
            version.to_string(),
            format!("kv_v2 {}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Options::command().debug_assert();
    }
}
