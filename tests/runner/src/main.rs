//! `dsu-vmrun`: boots the dsu test kernel and initramfs in QEMU (TCG), streams the serial
//! console, kills a hung guest after a hard timeout, and reports the VM tests and any
//! kernel-log findings. Exits 0 only if the run passed.
//!
//! ```text
//! dsu-vmrun --kernel bzImage --initrd initramfs.cpio [--run test] [--args a,b]
//!           [--timeout 900] [--log FILE] [--console] [--expect-kernel-report]
//!           [--accel tcg|kvm] [--memory 3G]
//! ```

use dsu_vmrun::{Outcome, Report, parse_test_line};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Args {
    kernel: String,
    initrd: String,
    run: String,
    args: String,
    timeout: u64,
    memory: String,
    accel: String,
    log: Option<String>,
    console: bool,
    expect_kernel_report: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        kernel: String::new(),
        initrd: String::new(),
        run: "test".into(),
        args: String::new(),
        timeout: 900,
        memory: "3G".into(),
        accel: "tcg".into(),
        log: None,
        console: false,
        expect_kernel_report: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--kernel" => a.kernel = value()?,
            "--initrd" => a.initrd = value()?,
            "--run" => a.run = value()?,
            "--args" => a.args = value()?,
            "--timeout" => a.timeout = value()?.parse().map_err(|e| format!("--timeout: {e}"))?,
            "--memory" => a.memory = value()?,
            "--accel" => a.accel = value()?,
            "--log" => a.log = Some(value()?),
            "--console" => a.console = true,
            "--expect-kernel-report" => a.expect_kernel_report = true,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.kernel.is_empty() || a.initrd.is_empty() {
        return Err("--kernel and --initrd are required".into());
    }
    if a.accel != "tcg" && a.accel != "kvm" {
        return Err("--accel must be tcg or kvm".into());
    }
    if a.args.contains(char::is_whitespace) {
        return Err("--args must not contain spaces (use commas)".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dsu-vmrun: {e}");
            return ExitCode::from(2);
        }
    };
    let mut append = format!(
        "console=ttyS0 loglevel=5 printk.time=1 panic=-1 oops=panic kasan.fault=report DSU_RUN={}",
        args.run
    );
    if !args.args.is_empty() {
        append.push_str(&format!(" DSU_ARGS={}", args.args));
    }
    // Nested KVM hangs on some machines: scripts/accel.sh picks kvm only after a probe boot.
    let cpu = if args.accel == "kvm" { "host" } else { "max" };
    let mut child = match Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            &args.accel,
            "-cpu",
            cpu,
            "-smp",
            "2",
            "-m",
            &args.memory,
        ])
        .args([
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
            "-monitor",
            "none",
        ])
        .args([
            "-kernel",
            &args.kernel,
            "-initrd",
            &args.initrd,
            "-append",
            &append,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dsu-vmrun: cannot start qemu-system-x86_64: {e} (run scripts/toolchain.sh)");
            return ExitCode::from(1);
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut log = String::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(t) = parse_test_line(&line) {
                    let tag = match t.outcome {
                        Outcome::Pass => "PASS",
                        Outcome::Fail => "FAIL",
                        Outcome::Skip => "SKIP",
                    };
                    println!("{tag} {} {}", t.name, t.detail);
                } else if args.console && !line.starts_with('[') && !line.contains("DSU-") {
                    println!("{}", line.trim_end_matches('\r'));
                }
                let _ = std::io::stdout().flush();
                log.push_str(&line);
                log.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let _ = child.wait();
    if let Some(path) = &args.log
        && let Err(e) = std::fs::write(path, &log)
    {
        eprintln!("dsu-vmrun: cannot write {path}: {e}");
    }

    let report = Report::from_log(&log);
    if timed_out {
        println!(
            "FAIL vm::timeout guest hung: killed after {} s",
            args.timeout
        );
    }
    // In the harness self-test the report is what we provoked: say so, not FAIL.
    let (kernel_tag, run_tag) = if args.expect_kernel_report {
        ("kernel (expected): ", "expected: vm::run ")
    } else {
        ("kernel: ", "FAIL vm::run ")
    };
    for line in &report.kernel_reports {
        println!("{kernel_tag}{line}");
    }
    for failure in report.extra_failures() {
        println!("{run_tag}{failure}");
    }
    if let Some(path) = &args.log {
        println!("console log: {path}");
    }

    if args.expect_kernel_report {
        // Harness self-test: the run must have been failed for its kernel report.
        let caught = !report.kernel_reports.is_empty() && !report.passed();
        println!(
            "{} harness::fails_on_kernel_report",
            if caught { "PASS" } else { "FAIL" }
        );
        println!("{} passed, {} failed", caught as u32, !caught as u32);
        return if caught {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }

    if report.tests.is_empty() && args.run != "test" {
        // A demo or benchmark run: no tests to count, only the run's own verdict.
        let ok = report.passed() && !timed_out;
        println!(
            "run {}: {}",
            args.run,
            if ok {
                "passed (guest exited 0, kernel log clean)"
            } else {
                "FAILED"
            }
        );
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let mut summary = report.summary();
    if timed_out {
        // The timeout is a failure of its own, on top of whatever the guest reported.
        let (pass, fail, skip) = report.counts();
        let fail = fail + report.extra_failures().len() + 1;
        summary = format!("{pass} passed, {fail} failed");
        if skip > 0 {
            summary.push_str(&format!(", {skip} skipped"));
        }
    }
    println!("{summary}");
    if report.passed() && !timed_out {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
