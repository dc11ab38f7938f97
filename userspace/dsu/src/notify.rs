//! The sender side of the systemd notify protocol (`sd_notify(3)`), without libsystemd.
//!
//! A service manager (systemd with `Type=notify`, or `dsuctl run`, the dsu supervisor)
//! puts the address of a unix datagram socket in the child's `NOTIFY_SOCKET` environment
//! variable. The child tells it how it is doing by sending one datagram of newline-separated
//! `KEY=VALUE` assignments: `READY=1` once it serves, `STATUS=...` as a free-form line,
//! `RELOADING=1`, `STOPPING=1`, `MAINPID=N`. Under `dsuctl run`, `READY=1` is the commit
//! point of an update: the supervisor lets the old version drain only after the new one
//! sent it, and kills a new version that exits or times out before.
//!
//! The address is a path (`/run/...`) or a Linux abstract socket name (`@name`). When
//! `NOTIFY_SOCKET` is unset, nobody listens and [`notify`] does nothing. Other address
//! families systemd knows (`vsock:`) are refused with [`std::io::ErrorKind::Unsupported`].
//!
//! The variable is left in the environment: a program that starts children of its own
//! should remove `NOTIFY_SOCKET` from their environment, or their messages count as its own.
//!
//! ```no_run
//! // Once the listening socket is open and the state attached:
//! dsu::notify::ready().expect("tell the supervisor we serve");
//! dsu::notify::notify("STATUS=serving 12 clients").ok();
//! ```

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable that carries the notify socket's address.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A connection to a notify socket: the address, and an unbound datagram socket to send
/// from.
///
/// ```no_run
/// let n = dsu::notify::Notifier::new("/run/dsu/app.notify")?;
/// n.send("READY=1\nSTATUS=serving")?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Notifier {
    address: SocketAddr,
    socket: UnixDatagram,
}

/// Parses a `NOTIFY_SOCKET` value: `/path` or `@abstract-name`.
///
/// ```
/// use std::os::linux::net::SocketAddrExt;
/// let a = dsu::notify::parse_address("@dsu/app").unwrap();
/// assert_eq!(a.as_abstract_name(), Some(&b"dsu/app"[..]));
/// let p = dsu::notify::parse_address("/run/app.notify").unwrap();
/// assert_eq!(p.as_pathname(), Some(std::path::Path::new("/run/app.notify")));
/// assert!(dsu::notify::parse_address("vsock:2:1234").is_err());
/// ```
pub fn parse_address(address: &str) -> io::Result<SocketAddr> {
    if let Some(name) = address.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if address.starts_with('/') {
        SocketAddr::from_pathname(address)
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{NOTIFY_SOCKET}={address:?}: only a path (/...) or an abstract socket (@...) \
                 is supported"
            ),
        ))
    }
}

impl Notifier {
    /// A notifier for the socket at `address` (`/path` or `@abstract-name`).
    pub fn new(address: &str) -> io::Result<Notifier> {
        Ok(Notifier {
            address: parse_address(address)?,
            socket: UnixDatagram::unbound()?,
        })
    }

    /// The notifier of `$NOTIFY_SOCKET`, or `None` when it is unset or empty.
    ///
    /// ```
    /// // In a test run, nobody set NOTIFY_SOCKET.
    /// # if std::env::var_os("NOTIFY_SOCKET").is_none() {
    /// assert!(dsu::notify::Notifier::from_env().unwrap().is_none());
    /// # }
    /// ```
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var(NOTIFY_SOCKET) {
            Ok(a) if !a.is_empty() => Notifier::new(&a).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(a)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{NOTIFY_SOCKET}={a:?} is not UTF-8"),
            )),
        }
    }

    /// Sends `state`, newline-separated `KEY=VALUE` lines, as one datagram.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.address)?;
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("notify: sent {sent} of {} bytes", state.len()),
            ));
        }
        Ok(())
    }
}

/// Sends `state` to `$NOTIFY_SOCKET`. Returns `Ok(false)` when the variable is unset
/// (nobody listens), `Ok(true)` when the message was sent.
///
/// ```
/// # if std::env::var_os("NOTIFY_SOCKET").is_none() {
/// assert!(!dsu::notify::notify("STATUS=idle").unwrap());
/// # }
/// ```
pub fn notify(state: &str) -> io::Result<bool> {
    match Notifier::from_env()? {
        Some(n) => n.send(state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `READY=1` to `$NOTIFY_SOCKET`: this version serves. See [`notify`].
///
/// ```no_run
/// if dsu::notify::ready()? {
///     println!("told the service manager that we are ready");
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("dsu-notify-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.send("READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("dsu-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .send("STOPPING=1")
            .unwrap();
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn refuses_unknown_addresses_and_reports_a_missing_listener() {
        for bad in ["vsock:2:9", "relative/path", ""] {
            let e = parse_address(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{bad:?}");
        }
        let n = Notifier::new("/nonexistent/dsu-notify.sock").unwrap();
        assert!(n.send("READY=1").is_err());
    }
}
