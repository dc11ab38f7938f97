//! Helpers of the host tests that run servers: free ports, processes killed on drop.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port nobody listens on now, never the same twice in this process: tests run in
/// parallel threads, and two of them given one port by the kernel's `bind(0)` would each
/// start a server on it (the second fails to bind, and its test talks to the first's server
/// until that one is killed).
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Starts `program args` and waits until `port` accepts connections.
pub fn start(program: &str, args: &[&str], port: u16) -> Proc {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut p = Proc(child);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{program} not listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The listener must be this child, not another process on the same port.
    if let Ok(Some(status)) = p.0.try_wait() {
        panic!("{program} exited ({status}) although port {port} accepts connections");
    }
    p
}

/// kv_local without dsu on `port`, with `extra` arguments.
pub fn kv_local(port: u16, extra: &[&str]) -> Proc {
    let port_s = port.to_string();
    let mut args = vec!["--no-dsu", "--port", &port_s];
    args.extend_from_slice(extra);
    start(env!("CARGO_BIN_EXE_kv_local"), &args, port)
}

/// `kv_vN --no-dsu` (`version` 1, 2 or 3: the same keyspace code as with dsu, in the
/// process's heap) on `port`.
pub fn kv_version(version: u32, port: u16) -> Proc {
    let port_s = port.to_string();
    let program = match version {
        1 => env!("CARGO_BIN_EXE_kv_v1"),
        2 => env!("CARGO_BIN_EXE_kv_v2"),
        _ => env!("CARGO_BIN_EXE_kv_v3"),
    };
    start(program, &["--no-dsu", "--port", &port_s], port)
}
