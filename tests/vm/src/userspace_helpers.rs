//! Helpers of the userspace tests: running the example programs (`counter_v1` ...,
//! `ccounter_v1` ...) and `dsuctl` in the guest, one-shot or as a server driven through
//! stdin, with timeouts so that a hung child fails the test instead of the suite.

use crate::Failure;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// How long a reply may take (TCG guests are slow).
pub const REPLY: Duration = Duration::from_secs(20);

/// A running example in `serve` mode.
pub struct Server {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Server {
    /// Starts `prog [args] serve` and waits for its "ready" line.
    pub fn start(prog: &str, args: &[&str]) -> Result<Server, Failure> {
        let mut child = Command::new(prog)
            .args(args)
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::Fail(format!("spawn {prog}: {e}")))?;
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Server {
            name: format!("{prog} {}", args.join(" ")),
            child,
            stdin,
            lines,
        };
        let first = s.line(REPLY)?;
        if !first.starts_with("ready") {
            return Err(Failure::Fail(format!(
                "{}: expected ready, got {first:?}",
                s.name
            )));
        }
        Ok(s)
    }

    /// The next stdout line, or a failure naming the program and its stderr.
    pub fn line(&mut self, timeout: Duration) -> Result<String, Failure> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(_) => {
                use std::io::Read;
                let _ = self.child.kill();
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                Err(Failure::Fail(format!(
                    "{}: no reply within {timeout:?} ({status}; stderr: {})",
                    self.name,
                    err.trim()
                )))
            }
        }
    }

    /// The next stdout line if one comes within `timeout`, leaving the program running
    /// either way (to check that it is still blocked).
    pub fn try_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Sends a command line without waiting for the reply.
    pub fn send(&mut self, cmd: &str) -> Result<(), Failure> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Sends a command and returns the text after "ok ", failing on "err ...".
    pub fn cmd(&mut self, cmd: &str) -> Result<String, Failure> {
        self.send(cmd)?;
        self.reply(cmd)
    }

    /// Reads the reply of a command sent with [`send`](Self::send).
    pub fn reply(&mut self, cmd: &str) -> Result<String, Failure> {
        let l = self.line(REPLY)?;
        match l.strip_prefix("ok ") {
            Some(rest) => Ok(rest.to_string()),
            None => Err(Failure::Fail(format!(
                "{}: `{cmd}` answered {l:?}",
                self.name
            ))),
        }
    }

    /// `get VAR` as a number.
    pub fn get(&mut self, var: &str) -> Result<u64, Failure> {
        let s = self.cmd(&format!("get {var}"))?;
        s.trim()
            .parse()
            .map_err(|_| Failure::Fail(format!("{}: get {var} gave {s:?}", self.name)))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks it to exit and waits.
    pub fn exit(mut self) -> Result<(), Failure> {
        let _ = self.send("exit");
        let _ = self.line(REPLY);
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a program to completion with a timeout.
pub fn run(prog: &str, args: &[&str]) -> Result<Output, Failure> {
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::Fail(format!("spawn {prog}: {e}")))?;
    let pid = child.id();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(REPLY) {
        Ok(out) => Ok(out?),
        Err(_) => {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            Err(Failure::Fail(format!(
                "{prog} {}: did not finish within {REPLY:?}",
                args.join(" ")
            )))
        }
    }
}

/// Runs a program that must succeed and returns its trimmed stdout.
pub fn ok(prog: &str, args: &[&str]) -> Result<String, Failure> {
    let out = run(prog, args)?;
    if !out.status.success() {
        return Err(Failure::Fail(format!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs a program that must fail with `code` and returns its stderr.
pub fn fails(prog: &str, args: &[&str], code: i32) -> Result<String, Failure> {
    let out = run(prog, args)?;
    if out.status.code() != Some(code) {
        return Err(Failure::Fail(format!(
            "{prog} {}: expected exit {code}, got {} (stdout {:?}, stderr {:?})",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stderr).trim().to_string())
}

/// Parses "a=1 b=2" into pairs.
pub fn pairs(s: &str) -> Vec<(String, String)> {
    s.split_whitespace()
        .filter_map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The value of `key` in "a=1 b=2".
pub fn field(s: &str, key: &str) -> Option<String> {
    pairs(s).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Removes a segment, ignoring errors (cleanup).
pub fn destroy(seg: &str) {
    let _ = run("dsuctl", &["destroy", seg]);
}
