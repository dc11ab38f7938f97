//! `dsuctl run`: the supervisor. It holds the service's listening sockets, starts each
//! version with them (systemd socket activation: `LISTEN_FDS`, see [`spawn`]), waits for
//! the version's `READY=1` on a notify socket of its own, and only then lets the old
//! version drain. A version that exits or misses the ready timeout is killed (SIGKILL,
//! reaped) while the old one keeps serving, and the caller is told why.
//!
//! Upgrades come from `dsuctl upgrade SEG [BINARY ARGS...]` through the control socket
//! ([`control`]), or from SIGUSR2 (the serving version's command line again: the binary
//! at the same path, replaced on disk). The supervisor speaks the notify protocol to its
//! own parent when `NOTIFY_SOCKET` is set (systemd `Type=notify`): `MAINPID=` and
//! `READY=1` for the first version, `RELOADING=1` with `MONOTONIC_USEC=` at an upgrade's
//! start and `READY=1` at its end (success or failure), `STOPPING=1`, and `STATUS=` lines.
//!
//! The supervisor is single-threaded: one `poll` over a signalfd (SIGCHLD, SIGTERM,
//! SIGINT, SIGUSR2), the control socket and each version's notify socket, with the
//! state machine's next deadline as timeout ([`machine`]).

pub mod control;
pub mod machine;
pub mod spawn;

use machine::{Action, Ended, Machine, Pid, Timeouts};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `dsuctl run` was asked to do.
#[derive(Debug)]
pub struct Config {
    /// The segment: names the control socket and the log lines.
    pub segment: String,
    /// The sockets to hold.
    pub listen: Vec<spawn::Listen>,
    /// The timeouts.
    pub timeouts: Timeouts,
    /// The control socket (`None`: the default of the segment).
    pub control: Option<PathBuf>,
    /// The first version's command line.
    pub command: Vec<OsString>,
}

/// A started version's own resources.
struct Child {
    argv: Vec<OsString>,
    notify: UnixDatagram,
    notify_path: PathBuf,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.notify_path);
    }
}

struct Supervisor {
    config: Config,
    machine: Machine,
    sockets: Vec<std::net::TcpListener>,
    names: Vec<String>,
    control: UnixListener,
    control_path: PathBuf,
    signals: SignalFd,
    parent: Option<dsu::notify::Notifier>,
    children: HashMap<Pid, Child>,
    waiter: Option<UnixStream>,
    seq: u64,
}

/// The signals the supervisor reads from its signalfd.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    set
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Creates the control socket at `path` (its directory 0700, the socket 0600); refuses
/// when a supervisor already answers there, replaces a stale one.
fn control_socket(path: &Path) -> Result<UnixListener, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(format!(
            "a supervisor already listens on {} (one `dsuctl run` per segment; --control \
             chooses another socket)",
            path.display()
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot create the control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod 0600 {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(listener)
}

/// Runs the supervisor until the service ends; then exits the process as the serving
/// version ended. Returns only on a set-up error.
pub fn run(config: Config) -> Result<std::convert::Infallible, String> {
    let mut sockets = Vec::new();
    for l in &config.listen {
        sockets.push(spawn::bind(l).map_err(|e| format!("cannot listen on {}: {e}", l.addr))?);
    }
    let names = config.listen.iter().map(|l| l.name.clone()).collect();
    let control_path = control::path(&config.segment, config.control.as_deref());
    let control = control_socket(&control_path)?;
    let mask = handled_signals();
    mask.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    let parent = dsu::notify::Notifier::from_env().map_err(|e| format!("NOTIFY_SOCKET: {e}"))?;
    let mut s = Supervisor {
        machine: Machine::new(config.timeouts),
        config,
        sockets,
        names,
        control,
        control_path,
        signals,
        parent,
        children: HashMap::new(),
        waiter: None,
        seq: 0,
    };
    s.log(&format!(
        "holding {} socket(s), control socket {}",
        s.sockets
            .iter()
            .zip(&s.names)
            .map(|(l, n)| format!(
                "{n}={}",
                l.local_addr().map_or("?".into(), |a| a.to_string())
            ))
            .collect::<Vec<_>>()
            .join(", "),
        s.control_path.display()
    ));
    let first = s.config.command.clone();
    s.start(first);
    loop {
        s.step();
    }
}

impl Supervisor {
    fn log(&self, msg: &str) {
        eprintln!("dsuctl run [{}]: {msg}", self.config.segment);
    }

    /// Carries out the machine's actions.
    fn act(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Log(m) => self.log(&m),
                Action::Notify(state) => {
                    if let Some(p) = &self.parent
                        && let Err(e) = p.send(&state)
                    {
                        self.log(&format!("cannot notify the service manager: {e}"));
                    }
                }
                Action::Reply { ok, message } => {
                    if let Some(w) = self.waiter.take() {
                        let _ = control::write_reply(&w, &control::Reply { ok, message });
                    }
                }
                Action::Signal(pid, sig) => {
                    // SAFETY: kill(2) on a child of ours (not yet reaped, so the pid is
                    // still its own).
                    unsafe { libc::kill(pid, sig) };
                }
                Action::Exit(ended) => self.exit(ended),
            }
        }
    }

    fn exit(&mut self, ended: Ended) -> ! {
        let _ = std::fs::remove_file(&self.control_path);
        self.children.clear();
        match ended {
            Ended::Exited(code) => std::process::exit(code),
            Ended::Signaled(sig) => {
                // End by the same signal, so that a service manager sees what it sent.
                // SAFETY: resets one signal's disposition, unblocks and raises it.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, sig);
                    libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                    libc::raise(sig);
                }
                std::process::exit(128 + sig)
            }
        }
    }

    /// Starts `argv` as the new candidate (or the first version).
    fn start(&mut self, argv: Vec<OsString>) {
        let name = argv
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pre = self
            .machine
            .starting(&name, std::process::id() as Pid, monotonic_usec());
        self.act(pre);
        let now = Instant::now();
        let result = self.spawn(&argv);
        let actions = match result {
            Ok(pid) => self.machine.started(pid, &name, now),
            Err(why) => self.machine.start_failed(&name, &why, now),
        };
        self.act(actions);
    }

    fn spawn(&mut self, argv: &[OsString]) -> Result<Pid, String> {
        let program = argv.first().ok_or("no command to run")?;
        let path = spawn::resolve_program(program, std::env::var_os("PATH").as_deref())?;
        self.seq += 1;
        let dir = self.control_path.parent().unwrap_or(Path::new("/"));
        let notify_path = dir.join(format!("{}.notify.{}", self.config.segment, self.seq));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)
            .map_err(|e| format!("cannot create {}: {e}", notify_path.display()))?;
        notify.set_nonblocking(true).map_err(|e| e.to_string())?;
        let env = spawn::child_env(std::env::vars_os(), &self.names, &notify_path);
        let fds: Vec<RawFd> = self.sockets.iter().map(|s| s.as_raw_fd()).collect();
        let child = Child {
            argv: argv.to_vec(),
            notify,
            notify_path,
        };
        let pid = spawn::spawn(&path, argv, &env, &fds)
            .map_err(|e| format!("cannot execute {}: {e}", path.display()))?;
        self.children.insert(pid, child);
        Ok(pid)
    }

    /// One turn of the loop: wait for something, handle it.
    fn step(&mut self) {
        let timeout = self
            .machine
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()) + Duration::from_millis(1));
        let pids: Vec<Pid> = self.children.keys().copied().collect();
        let mut fds = vec![
            libc::pollfd {
                fd: self.signals.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.control.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        fds.extend(pids.iter().map(|p| libc::pollfd {
            fd: self.children[p].notify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        // SAFETY: fds is a live array of fds.len() pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            self.log(&format!("poll: {}", io::Error::last_os_error()));
            std::thread::sleep(Duration::from_millis(100));
        }
        // Notify messages before exits: a version that says READY=1 and then dies is
        // seen ready first, as it was.
        for (i, pid) in pids.iter().enumerate() {
            if fds[2 + i].revents != 0 {
                self.read_notify(*pid);
            }
        }
        if fds[0].revents != 0 {
            self.read_signals();
        }
        if fds[1].revents != 0 {
            self.accept_control();
        }
        let due = self.machine.tick(Instant::now());
        self.act(due);
    }

    fn read_notify(&mut self, pid: Pid) {
        let mut buf = [0u8; 4096];
        loop {
            let Some(child) = self.children.get(&pid) else {
                return;
            };
            let n = match child.notify.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => return, // WouldBlock: read all
            };
            let msg = parse_notify(&buf[..n]);
            if let Some(status) = &msg.status {
                self.log(&format!("pid {pid}: STATUS={status}"));
            }
            if msg.ready {
                let actions = self.machine.ready(pid, Instant::now());
                self.act(actions);
            }
        }
    }

    fn read_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let sig = info.ssi_signo as i32;
            match sig {
                libc::SIGCHLD => self.reap(),
                libc::SIGTERM | libc::SIGINT => {
                    let actions = self.machine.terminate(sig, Instant::now());
                    self.act(actions);
                }
                libc::SIGUSR2 => {
                    let argv = self
                        .machine
                        .current_pid()
                        .and_then(|p| self.children.get(&p))
                        .map(|c| c.argv.clone())
                        .unwrap_or_else(|| self.config.command.clone());
                    match self.machine.may_start(Instant::now()) {
                        Ok(()) => self.start(argv),
                        Err(why) => self.log(&format!("SIGUSR2: {why}")),
                    }
                }
                _ => {}
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into the live local.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let ended = if libc::WIFSIGNALED(status) {
                Ended::Signaled(libc::WTERMSIG(status))
            } else {
                Ended::Exited(libc::WEXITSTATUS(status))
            };
            // A READY=1 sent just before the exit is read first.
            if self.children.contains_key(&pid) {
                self.read_notify(pid);
            }
            self.children.remove(&pid);
            let actions = self.machine.exited(pid, ended, Instant::now());
            self.act(actions);
        }
    }

    fn accept_control(&mut self) {
        while let Ok((stream, _)) = self.control.accept() {
            let answer = |s: &UnixStream, ok: bool, message: String| {
                let _ = control::write_reply(s, &control::Reply { ok, message });
            };
            // A request is one short line: a client gets one second to send it.
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let me = nix::unistd::getuid().as_raw();
            match control::peer_uid(&stream) {
                Ok(uid) if uid == me || uid == 0 => {}
                Ok(uid) => {
                    self.log(&format!("control: refused a request from uid {uid}"));
                    answer(
                        &stream,
                        false,
                        format!("uid {uid} may not control this supervisor"),
                    );
                    continue;
                }
                Err(e) => {
                    self.log(&format!("control: SO_PEERCRED: {e}"));
                    continue;
                }
            }
            let req = match control::read_request(&stream) {
                Ok(r) => r,
                Err(e) => {
                    answer(&stream, false, e.to_string());
                    continue;
                }
            };
            if let Err(why) = self.machine.may_start(Instant::now()) {
                self.log(&format!("upgrade refused: {why}"));
                answer(&stream, false, why);
                continue;
            }
            let argv: Vec<OsString> = if req.upgrade.is_empty() {
                self.machine
                    .current_pid()
                    .and_then(|p| self.children.get(&p))
                    .map(|c| c.argv.clone())
                    .unwrap_or_else(|| self.config.command.clone())
            } else {
                req.upgrade.iter().map(OsString::from).collect()
            };
            self.waiter = Some(stream);
            self.start(argv);
        }
    }
}

/// What a version's notify datagram says, as far as the supervisor cares.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NotifyMessage {
    /// `READY=1` was in it.
    pub ready: bool,
    /// The last `STATUS=` line.
    pub status: Option<String>,
}

/// Parses a notify datagram: newline-separated `KEY=VALUE` assignments; unknown keys and
/// malformed lines are ignored, as systemd does.
pub fn parse_notify(datagram: &[u8]) -> NotifyMessage {
    let mut m = NotifyMessage::default();
    for line in String::from_utf8_lossy(datagram).lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => m.ready = true,
            Some(("STATUS", s)) => m.status = Some(s.to_string()),
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_messages() {
        assert_eq!(
            parse_notify(b"READY=1\nSTATUS=serving 3 clients"),
            NotifyMessage {
                ready: true,
                status: Some("serving 3 clients".into())
            }
        );
        assert_eq!(parse_notify(b"READY=0"), NotifyMessage::default());
        assert_eq!(parse_notify(b"READY"), NotifyMessage::default());
        assert_eq!(
            parse_notify(b"\xff\xfe\nREADY=1\n"),
            NotifyMessage {
                ready: true,
                status: None
            }
        );
        assert_eq!(
            parse_notify(b"STATUS=a\nMAINPID=5\nSTATUS=b=c"),
            NotifyMessage {
                ready: false,
                status: Some("b=c".into())
            }
        );
    }
}
