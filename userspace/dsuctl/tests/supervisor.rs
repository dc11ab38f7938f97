//! `dsuctl run` and `dsuctl upgrade` end to end on the host, without the kernel module:
//! the versions are this test program itself (`supervisor version NAME [exit|hang]`), which
//! takes its socket from LISTEN_FDS, sends READY=1 and answers each connection with its
//! name. A client connects all along: not one connection may fail. The supervisor's own
//! notify messages go to a datagram socket of the test, and must come in order.
//!
//! `harness = false`: `main` is the version when its first argument is `version`.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("version") {
        version(&args[1..]);
    }
    // `cargo test` passes harness flags; there is one test.
    upgrades_through_the_supervisor();
    println!("test upgrades_through_the_supervisor ... ok");
    println!("\ntest result: ok. 1 passed; 0 failed");
}

/// A version: serves its name on fd 3 after READY=1, or fails as told.
fn version(args: &[String]) -> ! {
    use std::os::fd::FromRawFd;
    let name = &args[0];
    let pid = std::process::id().to_string();
    assert_eq!(std::env::var("LISTEN_PID").as_deref(), Ok(pid.as_str()));
    assert_eq!(std::env::var("LISTEN_FDS").as_deref(), Ok("1"));
    assert_eq!(std::env::var("LISTEN_FDNAMES").as_deref(), Ok("web"));
    // SAFETY: fd 3 was passed to this process (LISTEN_PID is ours) for it to own.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(3) };
    match args.get(1).map(String::as_str) {
        Some("exit") => std::process::exit(3),
        Some("hang") => loop {
            std::thread::sleep(Duration::from_secs(60));
        },
        _ => {}
    }
    // SIGTERM (the supervisor's, after the drain timeout) ends the version between two
    // connections, never in the middle of one: the queue stays on the shared socket.
    static TERM: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_term(_: libc::c_int) {
        TERM.store(true, Relaxed);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t) };
    listener.set_nonblocking(true).unwrap();
    dsu::notify::notify(&format!("READY=1\nSTATUS={name} serving")).unwrap();
    loop {
        if TERM.load(Relaxed) {
            // End as the signal asked, once the connection in hand is served.
            // SAFETY: restores the default action and raises the signal.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                libc::raise(libc::SIGTERM);
            }
        }
        match listener.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                let _ = std::io::Write::write_all(
                    &mut conn,
                    format!("{name} {}\n", std::process::id()).as_bytes(),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn dsuctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dsuctl"))
}

/// Which version answers a new connection.
fn who(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut name = String::new();
    s.read_to_string(&mut name)
        .map_err(|e| format!("read: {e}"))?;
    if name.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok(name.trim().to_string())
}

/// The version name in an answer of [`who`] (`NAME PID`).
fn name(answer: String) -> String {
    answer.split(' ').next().unwrap_or_default().to_string()
}

/// The pid in `... (pid N)`.
fn pid_in(text: &str) -> u32 {
    let i = text.find("(pid ").expect("a pid") + 5;
    text[i..].split(')').next().unwrap().parse().unwrap()
}

/// Waits until `old` is gone (the supervisor sent SIGTERM after the drain timeout and
/// reaped it); then `new` answers.
fn retired(port: u16, old: u32, new: u32) {
    let t0 = Instant::now();
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    while unsafe { libc::kill(old as i32, 0) } == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the old version {old} still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..5 {
        let answer = who(port).unwrap();
        assert!(
            answer.ends_with(&format!(" {new}")),
            "{answer}, want pid {new}"
        );
    }
}

fn upgrade(control: &Path, argv: &[&str]) -> Output {
    dsuctl()
        .args(["upgrade", "t", "--control", control.to_str().unwrap()])
        .args(argv)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Kills the supervisor if the test fails half-way.
struct Supervisor(Child);

impl Drop for Supervisor {
    fn drop(&mut self) {
        // SIGTERM first: the supervisor stops its versions (SIGKILL would orphan them).
        // SAFETY: kill(2) on our child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while self.0.try_wait().ok().flatten().is_none() {
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = self.0.kill();
                let _ = self.0.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn upgrades_through_the_supervisor() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("dsuctl-supervisor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let control = dir.join("t.sock");
    let notify_path = dir.join("manager.notify");
    let manager = UnixDatagram::bind(&notify_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let me = std::env::current_exe().unwrap();
    let me = me.to_str().unwrap();
    let child = dsuctl()
        .args([
            "run",
            "--segment",
            "t",
            "--control",
            control.to_str().unwrap(),
            "--listen",
            &format!("web=127.0.0.1:{port}"),
            "--ready-timeout",
            "2",
            "--drain-timeout",
            "0.5",
            "--stop-timeout",
            "1",
            "--",
            me,
            "version",
            "v1",
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sup_pid = child.id();
    let mut sup = Supervisor(child);
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = sup.0.stderr.take().unwrap();
    let log_thread = std::thread::spawn({
        let log = log.clone();
        move || {
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap();
                eprintln!("{line}");
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        }
    });
    let mut notices = Vec::new();
    let mut next_notice = || {
        let mut buf = [0u8; 4096];
        let n = manager.recv(&mut buf).expect("a notify message");
        let s = String::from_utf8(buf[..n].to_vec()).unwrap();
        notices.push(s.clone());
        s
    };
    assert_eq!(
        next_notice(),
        format!("MAINPID={sup_pid}\nSTATUS=starting {me}")
    );
    assert!(next_notice().starts_with("READY=1\nSTATUS=serving: "));
    assert_eq!(name(who(port).unwrap()), "v1");

    // A client connects all along: no connection may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let client = std::thread::spawn({
        let (stop, served) = (stop.clone(), served.clone());
        move || -> Result<(), String> {
            while !stop.load(Relaxed) {
                who(port)?;
                served.fetch_add(1, Relaxed);
            }
            Ok(())
        }
    });

    // A new version that exits before READY=1.
    let o = upgrade(&control, &[me, "version", "v2", "exit"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("exited with status 3 before READY=1")
            && text(&o).contains("still serves"),
        "{}",
        text(&o)
    );
    let reloading = next_notice();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(next_notice().starts_with("READY=1\nSTATUS=upgrade failed: "));
    assert_eq!(name(who(port).unwrap()), "v1");

    // One that never sends READY=1; an upgrade meanwhile is refused.
    let t0 = Instant::now();
    let hanging = std::thread::spawn({
        let (control, me) = (control.clone(), me.to_string());
        move || upgrade(&control, &[&me, "version", "v2", "hang"])
    });
    assert!(next_notice().starts_with("RELOADING=1"));
    let o = upgrade(&control, &[me, "version", "v2"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("an upgrade is in progress"),
        "{}",
        text(&o)
    );
    let o = hanging.join().unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(2));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("did not send READY=1 within 2 s: killed"),
        "{}",
        text(&o)
    );
    assert!(next_notice().starts_with("READY=1\nSTATUS=upgrade failed: "));
    assert_eq!(name(who(port).unwrap()), "v1");

    // v1 -> v2 -> v3. An old version that does not retire by itself gets SIGTERM after
    // the drain timeout.
    let mut serving: u32 = who(port)
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    for v in ["v2", "v3"] {
        let o = upgrade(&control, &[me, "version", v]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("upgraded to"), "{}", text(&o));
        let new = pid_in(&text(&o));
        assert!(next_notice().starts_with("RELOADING=1"));
        assert_eq!(
            next_notice(),
            format!("READY=1\nSTATUS=serving: {me} (pid {new})")
        );
        retired(port, serving, new);
        serving = new;
    }
    stop.store(true, Relaxed);
    client.join().unwrap().unwrap();
    assert!(served.load(Relaxed) > 0);

    // SIGUSR2 repeats the serving command line.
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(sup_pid as i32, libc::SIGUSR2) };
    assert!(next_notice().starts_with("RELOADING=1"));
    let ready = next_notice();
    assert!(ready.starts_with("READY=1\nSTATUS=serving: "), "{ready}");
    let new = pid_in(&ready);
    retired(port, serving, new);
    assert_eq!(name(who(port).unwrap()), "v3");

    // SIGTERM is forwarded; the supervisor ends as the service did.
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(sup_pid as i32, libc::SIGTERM) };
    let status = sup.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert!(next_notice().starts_with("STOPPING=1"));
    log_thread.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(log.contains("old version"), "{log}");
    assert!(!control.exists(), "the control socket is removed at exit");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "manager.notify")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
