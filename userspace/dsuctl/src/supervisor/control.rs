//! The control socket between `dsuctl upgrade` and the supervisor (`dsuctl run`).
//!
//! A unix stream socket at `$XDG_RUNTIME_DIR/dsu/SEG.sock`, or `/run/dsu/SEG.sock` when
//! `XDG_RUNTIME_DIR` is unset (`--control PATH` chooses another). The directory is created
//! 0700 and the socket 0600; the supervisor also checks that the peer runs as its own user
//! or as root (`SO_PEERCRED`).
//!
//! Protocol: the client sends one line of JSON, `{"upgrade": ["BINARY", "ARG", ...]}` (an
//! empty list repeats the serving version's command line), and the supervisor answers one
//! line, `{"ok": true|false, "message": "..."}`, once the new version is ready or has
//! failed (at once if the upgrade is refused).

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// A request from `dsuctl upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The new version's command line (program first); empty: the serving version's.
    pub upgrade: Vec<String>,
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the new version serves.
    pub ok: bool,
    /// What happened (why not, when not).
    pub message: String,
}

/// The default control socket of segment `segment`, given `XDG_RUNTIME_DIR` (ignored
/// unless absolute, as the XDG spec says).
pub fn default_path(segment: &str, runtime_dir: Option<&Path>) -> PathBuf {
    runtime_dir
        .filter(|d| d.is_absolute())
        .unwrap_or(Path::new("/run"))
        .join("dsu")
        .join(format!("{segment}.sock"))
}

/// The control socket path: `explicit`, or the default of `segment`.
pub fn path(segment: &str, explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(p) => p.to_path_buf(),
        None => default_path(
            segment,
            std::env::var_os("XDG_RUNTIME_DIR")
                .as_deref()
                .map(Path::new),
        ),
    }
}

/// Reads one request line from `stream`.
pub fn read_request(stream: &UnixStream) -> io::Result<Request> {
    let mut line = String::new();
    BufReader::new(stream).take_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad request {line:?}: {e}"),
        )
    })
}

/// Reads at most one line (up to 64 KiB): a request is small.
trait TakeLine {
    fn take_line(self, line: &mut String) -> io::Result<usize>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(self, line: &mut String) -> io::Result<usize> {
        self.take(64 * 1024).read_line(line)
    }
}

/// Writes `reply` as one line.
pub fn write_reply(mut stream: &UnixStream, reply: &Reply) -> io::Result<()> {
    let mut text = serde_json::to_string(reply).expect("serialisable");
    text.push('\n');
    stream.write_all(text.as_bytes())
}

/// `dsuctl upgrade`: sends `request` to the supervisor at `path` and waits for its answer.
pub fn upgrade(path: &Path, request: &Request) -> Result<Reply, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the supervisor at {}: {e} (is `dsuctl run` running for this \
             segment, as this user? --control names another socket)",
            path.display()
        )
    })?;
    let mut text = serde_json::to_string(request).expect("serialisable");
    text.push('\n');
    stream
        .write_all(text.as_bytes())
        .map_err(|e| format!("cannot send to {}: {e}", path.display()))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .take_line(&mut line)
        .map_err(|e| format!("no answer from {}: {e}", path.display()))?;
    if line.is_empty() {
        return Err(format!(
            "the supervisor at {} closed the connection without an answer (did it exit?)",
            path.display()
        ));
    }
    serde_json::from_str(&line).map_err(|e| format!("bad answer {line:?}: {e}"))
}

/// The uid of the process at the other end of `stream` (`SO_PEERCRED`).
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live local `cred`.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            default_path("kv", Some(Path::new("/run/user/1000"))),
            PathBuf::from("/run/user/1000/dsu/kv.sock")
        );
        assert_eq!(default_path("kv", None), PathBuf::from("/run/dsu/kv.sock"));
        // A relative XDG_RUNTIME_DIR is ignored, as the XDG spec says.
        assert_eq!(
            default_path("kv", Some(Path::new("run"))),
            PathBuf::from("/run/dsu/kv.sock")
        );
        assert_eq!(
            path("kv", Some(Path::new("/tmp/x.sock"))),
            PathBuf::from("/tmp/x.sock")
        );
    }

    #[test]
    fn request_and_reply_round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        let req = Request {
            upgrade: vec!["/usr/bin/kv_v2".into(), "--segment".into(), "kv".into()],
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(text, r#"{"upgrade":["/usr/bin/kv_v2","--segment","kv"]}"#);
        (&a).write_all(format!("{text}\n").as_bytes()).unwrap();
        assert_eq!(read_request(&b).unwrap(), req);
        let reply = Reply {
            ok: false,
            message: "kv_v2 (pid 7) exited with status 3 before READY=1".into(),
        };
        write_reply(&b, &reply).unwrap();
        let mut line = String::new();
        BufReader::new(&a).read_line(&mut line).unwrap();
        assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), reply);
        assert_eq!(peer_uid(&a).unwrap(), nix::unistd::getuid().as_raw());

        (&a).write_all(b"{\"frob\": 1}\n").unwrap();
        let e = read_request(&b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
