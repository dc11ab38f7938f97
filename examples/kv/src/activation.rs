//! A listening socket passed by the parent, as systemd socket activation and `dsuctl run`
//! (the dsu supervisor) pass it: `LISTEN_PID` names this process, `LISTEN_FDS` counts the
//! descriptors, which start at 3 (`sd_listen_fds(3)`).
//!
//! With an inherited socket every version accepts from the one socket the supervisor
//! holds: no `SO_REUSEPORT`, and a retiring version that closes its copy loses nothing
//! queued on it.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// How many descriptors the environment says were passed to the process `pid`: `None`
/// when `LISTEN_PID` is unset or names another process (the variables were inherited
/// from an ancestor and are not ours), an error when they are malformed.
///
/// ```
/// use dsu_kv::activation::passed_fds;
/// assert_eq!(passed_fds(Some("42"), Some("1"), 42), Ok(Some(1)));
/// assert_eq!(passed_fds(Some("41"), Some("1"), 42), Ok(None));
/// assert_eq!(passed_fds(None, None, 42), Ok(None));
/// assert!(passed_fds(Some("42"), Some("x"), 42).is_err());
/// ```
pub fn passed_fds(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    pid: u32,
) -> Result<Option<u32>, String> {
    let Some(listen_pid) = listen_pid else {
        return Ok(None);
    };
    let owner: u32 = listen_pid
        .parse()
        .map_err(|_| format!("LISTEN_PID={listen_pid:?} is not a process id"))?;
    if owner != pid {
        return Ok(None);
    }
    let listen_fds = listen_fds.ok_or("LISTEN_PID is set but LISTEN_FDS is not")?;
    let n: u32 = listen_fds
        .parse()
        .map_err(|_| format!("LISTEN_FDS={listen_fds:?} is not a count"))?;
    Ok(Some(n))
}

/// The listening TCP socket passed to this process, or `None` when none was passed.
/// The kv server listens on one socket: more than one passed is an error, as is a
/// descriptor that is not a listening stream socket. The socket is made close-on-exec.
pub fn inherited_listener() -> Result<Option<TcpListener>, String> {
    let var = |name: &str| std::env::var(name).ok();
    let Some(n) = passed_fds(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        std::process::id(),
    )?
    else {
        return Ok(None);
    };
    match n {
        0 => return Ok(None),
        1 => {}
        n => {
            return Err(format!(
                "{n} sockets were passed (LISTEN_FDS={n}): the kv server listens on one"
            ));
        }
    }
    let fd = LISTEN_FDS_START;
    let int_opt = |level: libc::c_int, name: libc::c_int| -> io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live local `v`.
        let r = unsafe { libc::getsockopt(fd, level, name, (&raw mut v).cast(), &mut len) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(v)
        }
    };
    let what = format!("descriptor {fd} (LISTEN_FDS=1)");
    let accepting = int_opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)
        .map_err(|e| format!("{what} is not a socket: {e}"))?;
    let kind = int_opt(libc::SOL_SOCKET, libc::SO_TYPE).unwrap_or(0);
    let domain = int_opt(libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(0);
    if accepting != 1
        || kind != libc::SOCK_STREAM
        || !matches!(domain, libc::AF_INET | libc::AF_INET6)
    {
        return Err(format!("{what} is not a listening TCP socket"));
    }
    // SAFETY: fd 3 was passed to this process for it to own (LISTEN_PID is ours), and
    // nothing else in the program takes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: F_SETFD on a descriptor we own.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(format!(
            "{what}: cannot set close-on-exec: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(Some(TcpListener::from(owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_variables() {
        assert_eq!(passed_fds(Some("7"), Some("2"), 7), Ok(Some(2)));
        assert_eq!(passed_fds(Some("7"), Some("0"), 7), Ok(Some(0)));
        assert_eq!(passed_fds(None, Some("2"), 7), Ok(None));
        assert_eq!(passed_fds(Some("8"), Some("2"), 7), Ok(None));
        assert!(
            passed_fds(Some("7"), None, 7)
                .unwrap_err()
                .contains("LISTEN_FDS")
        );
        assert!(passed_fds(Some("-1"), Some("1"), 7).is_err());
        assert!(passed_fds(Some("7"), Some("-1"), 7).is_err());
    }
}
