//! The listening sockets the supervisor holds, and the start of a version with them, as
//! systemd socket activation passes them (`sd_listen_fds(3)`): descriptors 3, 4, ... in
//! `--listen` order, `LISTEN_FDS` their count, `LISTEN_FDNAMES` their names separated by
//! colons, `LISTEN_PID` the version's own pid (written in the child between fork and
//! exec), and `NOTIFY_SOCKET` the version's own notify socket.
//!
//! fork and exec are done by hand because `std::process::Command` builds the environment
//! before it forks, and `LISTEN_PID` is only known after. Everything the child touches is
//! prepared before the fork; the child only calls async-signal-safe functions.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// One `--listen [NAME=]ADDR:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// Its name in `LISTEN_FDNAMES` (default `tcp-PORT`).
    pub name: String,
    /// The address to bind.
    pub addr: SocketAddr,
}

/// Parses `[NAME=]ADDR:PORT`; an IPv6 address goes in brackets (`[::1]:6379`).
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    let (name, addr) = match s.split_once('=') {
        Some((n, a)) => (Some(n), a),
        None => (None, s),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| {
        format!("{addr:?} is not ADDR:PORT (e.g. 127.0.0.1:6379, 0.0.0.0:80, [::]:443)")
    })?;
    let name = match name {
        None => format!("tcp-{}", addr.port()),
        Some(n)
            if !n.is_empty()
                && n.len() <= 255
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b':') =>
        {
            n.to_string()
        }
        Some(n) => {
            return Err(format!(
                "socket name {n:?}: 1-255 printable characters, no ':' or space"
            ));
        }
    };
    Ok(Listen { name, addr })
}

/// Creates the listening socket of `listen` (close-on-exec, `SO_REUSEADDR`, backlog
/// `SOMAXCONN`). No `SO_REUSEPORT`: the versions share this one socket.
pub fn bind(listen: &Listen) -> io::Result<std::net::TcpListener> {
    let family = match listen.addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: socket() returns a new descriptor or -1.
    let fd = check(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a new descriptor nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    let (storage, len) = sockaddr(&listen.addr);
    // SAFETY: storage holds a sockaddr of `len` bytes.
    check(unsafe { libc::bind(fd, (&raw const storage).cast(), len) })?;
    // SAFETY: listen() on a descriptor we own.
    check(unsafe { libc::listen(fd, libc::SOMAXCONN) })?;
    Ok(std::net::TcpListener::from(owned))
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The environment of a version: the supervisor's own (`parent`) without the activation
/// and notify variables it received itself, plus `LISTEN_FDS`, `LISTEN_FDNAMES` and
/// `NOTIFY_SOCKET` for the version. `LISTEN_PID` is added in the child.
pub fn child_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    names: &[String],
    notify_socket: &Path,
) -> Vec<(OsString, OsString)> {
    const OURS: [&str; 5] = [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "WATCHDOG_PID",
    ];
    let mut env: Vec<(OsString, OsString)> = parent
        .into_iter()
        .filter(|(k, _)| !OURS.iter().any(|o| OsStr::new(o) == k))
        .collect();
    env.push(("LISTEN_FDS".into(), names.len().to_string().into()));
    env.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
    env.push(("NOTIFY_SOCKET".into(), notify_socket.as_os_str().to_owned()));
    env
}

/// Finds `program` the way `execvp` would: as given if it contains a `/`, else in the
/// directories of `path` (`$PATH`).
pub fn resolve_program(program: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, String> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        let p = PathBuf::from(program);
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(format!("{} is not an executable file", p.display()))
        };
    }
    if program.is_empty() {
        return Err("the program name is empty".into());
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(path)
        .map(|d| d.join(program))
        .find(|p| is_exec(p))
        .ok_or_else(|| format!("{} is not in PATH", program.to_string_lossy()))
}

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in an argument or environment variable",
        )
    })
}

/// Starts `program` with `argv` (`argv[0]` first) and `env`, the `fds` at descriptors
/// 3, 4, ... and `LISTEN_PID` set to its pid, all signals unblocked and SIGPIPE at its
/// default. Returns its pid once it has exec'd; an exec failure is returned as the error
/// (the child is reaped).
pub fn spawn(
    program: &Path,
    argv: &[OsString],
    env: &[(OsString, OsString)],
    fds: &[RawFd],
) -> io::Result<i32> {
    // Everything the child uses is allocated here, before the fork.
    let path = cstring(program.as_os_str().as_bytes().to_vec())?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| cstring(a.clone().into_vec()))
        .collect::<io::Result<_>>()?;
    let vars: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(kv)
        })
        .collect::<io::Result<_>>()?;
    const PID_PREFIX: &[u8] = b"LISTEN_PID=";
    let mut listen_pid = [0u8; 40];
    listen_pid[..PID_PREFIX.len()].copy_from_slice(PID_PREFIX);
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = vars.iter().map(|v| v.as_ptr()).collect();
    env_ptrs.push(listen_pid.as_ptr().cast());
    env_ptrs.push(std::ptr::null());
    let listen_pid_ptr = listen_pid.as_mut_ptr();
    let mut moved = vec![-1 as RawFd; fds.len()];
    let moved_ptr = moved.as_mut_ptr();
    let first_free = LISTEN_FDS_START + fds.len() as RawFd;
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut no_signals: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a live sigset_t.
    unsafe { libc::sigemptyset(&mut no_signals) };

    let mut pipe = [-1 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the live array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 made both; we own them.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };

    // SAFETY: the child below calls only async-signal-safe functions on memory prepared
    // above, so forking is sound even from a multi-threaded process (a test).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: the child: see above. Every pointer is into memory allocated before the
        // fork, alive in this copy of the address space until exec or _exit.
        unsafe {
            child(ChildPlan {
                path: path.as_ptr(),
                argv: arg_ptrs.as_ptr(),
                envp: env_ptrs.as_ptr(),
                listen_pid: listen_pid_ptr.add(PID_PREFIX.len()),
                fds,
                moved: moved_ptr,
                first_free,
                no_signals: &no_signals,
                error_pipe: wr.as_raw_fd(),
            })
        }
    }
    drop(wr);
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < errno.len() {
        // SAFETY: reads into the live array's remaining bytes.
        let n = unsafe {
            libc::read(
                rd.as_raw_fd(),
                errno[got..].as_mut_ptr().cast(),
                errno.len() - got,
            )
        };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    if got == 0 {
        return Ok(pid); // the pipe closed on exec
    }
    let mut status = 0;
    // SAFETY: reaps our own child, which exits right after writing.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

struct ChildPlan<'a> {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Where the decimal pid goes (NUL-terminated; 28 bytes of room).
    listen_pid: *mut u8,
    fds: &'a [RawFd],
    moved: *mut RawFd,
    first_free: RawFd,
    no_signals: *const libc::sigset_t,
    error_pipe: RawFd,
}

/// The child between fork and exec. Never returns.
///
/// # Safety
///
/// Called only in the child of a fork of a single-threaded process, with a plan whose
/// pointers are valid (see [`spawn`]).
unsafe fn child(plan: ChildPlan<'_>) -> ! {
    // SAFETY: (whole body) async-signal-safe calls on descriptors and memory of the plan.
    unsafe {
        let fail = |pipe: RawFd| -> ! {
            let e = *libc::__errno_location();
            let b = e.to_ne_bytes();
            libc::write(pipe, b.as_ptr().cast(), b.len());
            libc::_exit(127)
        };
        // The error pipe and the sockets first move above the target range.
        let pipe = libc::fcntl(plan.error_pipe, libc::F_DUPFD_CLOEXEC, plan.first_free);
        if pipe < 0 {
            libc::_exit(127);
        }
        for (i, &fd) in plan.fds.iter().enumerate() {
            let m = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, plan.first_free);
            if m < 0 {
                fail(pipe);
            }
            *plan.moved.add(i) = m;
        }
        for i in 0..plan.fds.len() {
            // dup2 clears close-on-exec on the target.
            if libc::dup2(*plan.moved.add(i), LISTEN_FDS_START + i as RawFd) < 0 {
                fail(pipe);
            }
        }
        // LISTEN_PID: this process's pid in decimal.
        let mut pid = libc::getpid() as u32;
        let mut digits = [0u8; 12];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (pid % 10) as u8;
            n += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        for i in 0..n {
            *plan.listen_pid.add(i) = digits[n - 1 - i];
        }
        *plan.listen_pid.add(n) = 0;
        // The supervisor blocks the signals it reads from a signalfd, and Rust ignores
        // SIGPIPE: a version starts with neither.
        libc::sigprocmask(libc::SIG_SETMASK, plan.no_signals, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(plan.path, plan.argv, plan.envp);
        fail(pipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_options() {
        assert_eq!(
            parse_listen("127.0.0.1:6379").unwrap(),
            Listen {
                name: "tcp-6379".into(),
                addr: "127.0.0.1:6379".parse().unwrap()
            }
        );
        assert_eq!(
            parse_listen("redis=[::1]:7000").unwrap(),
            Listen {
                name: "redis".into(),
                addr: "[::1]:7000".parse().unwrap()
            }
        );
        for bad in [
            "6379",
            "localhost:6379",
            "a:b=1.2.3.4:5",
            "=1.2.3.4:5",
            "x y=1.2.3.4:5",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn environment_of_a_version() {
        let parent = [
            ("PATH", "/bin"),
            ("LISTEN_FDS", "9"),
            ("LISTEN_PID", "1"),
            ("LISTEN_FDNAMES", "x"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = child_env(
            parent,
            &["tcp-6379".into(), "admin".into()],
            Path::new("/run/dsu/kv.notify.1"),
        );
        let want = [
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "tcp-6379:admin"),
            ("NOTIFY_SOCKET", "/run/dsu/kv.notify.1"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        assert_eq!(env, want);
    }

    #[test]
    fn programs_are_found_like_execvp() {
        let sh = resolve_program(OsStr::new("sh"), Some(OsStr::new("/nonexistent:/bin")));
        assert_eq!(sh.unwrap(), PathBuf::from("/bin/sh"));
        assert!(
            resolve_program(OsStr::new("sh"), Some(OsStr::new("/nonexistent")))
                .unwrap_err()
                .contains("not in PATH")
        );
        assert!(resolve_program(OsStr::new("/etc/passwd"), None).is_err());
        assert!(resolve_program(OsStr::new(""), None).is_err());
    }

    /// A version sees the sockets at 3, 4 and LISTEN_PID equal to its own pid.
    #[test]
    fn a_version_gets_its_sockets_and_its_pid() {
        let a = bind(&parse_listen("127.0.0.1:0").unwrap()).unwrap();
        let b = bind(&parse_listen("127.0.0.1:0").unwrap()).unwrap();
        let dir = std::env::temp_dir().join(format!("dsuctl-spawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        // The child reports its pid, LISTEN_PID, and what its fds 3 and 4 are.
        let script = format!(
            "echo \"$$ $LISTEN_PID $LISTEN_FDS $LISTEN_FDNAMES\" > {out}; \
             ls -l /proc/$$/fd/3 /proc/$$/fd/4 >> {out} 2>&1",
            out = out.display()
        );
        let env = child_env(
            std::env::vars_os(),
            &["a".into(), "b".into()],
            Path::new("/nonexistent"),
        );
        let pid = spawn(
            Path::new("/bin/sh"),
            &["sh".into(), "-c".into(), script.into()],
            &env,
            &[a.as_raw_fd(), b.as_raw_fd()],
        )
        .unwrap();
        let mut status = 0;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let text = std::fs::read_to_string(&out).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(first, format!("{pid} {pid} 2 a:b"), "{text}");
        assert_eq!(text.matches("socket:[").count(), 2, "{text}");
        // The sockets at 3 and 4 are ours, in order: compare inode numbers.
        let inode = |fd: RawFd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert!(lines[0].ends_with(&inode(a.as_raw_fd())), "{text}");
        assert!(lines[1].ends_with(&inode(b.as_raw_fd())), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();

        let e = spawn(Path::new("/nonexistent/prog"), &["prog".into()], &env, &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
