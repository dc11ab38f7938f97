//! Pure logic of the VM runner: reading the guest's console into test results, the guest's
//! exit status and kernel-log findings. Everything here is unit-tested on the host with
//! recorded logs, so that a check which cannot fail would show up as a failing test.

/// Outcome of one VM test, as reported by the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The test passed.
    Pass,
    /// The test failed.
    Fail,
    /// The test could not run.
    Skip,
}

/// One `DSU-TEST <name> <PASS|FAIL|SKIP> [detail]` line from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestLine {
    /// Test name.
    pub name: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// Duration or failure reason.
    pub detail: String,
}

/// Strips a kernel timestamp (`[    1.234567] `) and console noise from a line.
fn payload(line: &str) -> &str {
    let line = line.trim_end_matches(['\r', '\n']);
    match line.find("DSU-") {
        Some(i) => &line[i..],
        None => line,
    }
}

/// Parses a `DSU-TEST` line.
///
/// ```
/// use dsu_vmrun::{Outcome, parse_test_line};
/// let t = parse_test_line("DSU-TEST a::b FAIL expected 1").unwrap();
/// assert_eq!((t.name.as_str(), t.outcome, t.detail.as_str()), ("a::b", Outcome::Fail, "expected 1"));
/// ```
pub fn parse_test_line(line: &str) -> Option<TestLine> {
    let rest = payload(line).strip_prefix("DSU-TEST ")?;
    let mut parts = rest.splitn(3, ' ');
    let name = parts.next()?.to_string();
    let outcome = match parts.next()? {
        "PASS" => Outcome::Pass,
        "FAIL" => Outcome::Fail,
        "SKIP" => Outcome::Skip,
        _ => return None,
    };
    let detail = parts.next().unwrap_or("").to_string();
    Some(TestLine {
        name,
        outcome,
        detail,
    })
}

/// Parses the guest's `DSU-EXIT <code>` line, printed by /init just before reboot.
pub fn parse_exit_line(line: &str) -> Option<i32> {
    payload(line).strip_prefix("DSU-EXIT ")?.trim().parse().ok()
}

/// Kernel-log patterns that fail a run: any BUG, WARNING, KASAN, lockdep, kmemleak or
/// Oops report.
pub const KERNEL_REPORT_PATTERNS: &[&str] = &[
    "BUG:",
    "WARNING:",
    "KASAN:",
    "kasan:",
    "possible circular locking",
    "inconsistent lock state",
    "possible recursive locking",
    "suspicious RCU usage",
    "lock held when returning to user space",
    "unreferenced object",
    "kmemleak: ",
    "Oops:",
    "general protection fault",
    "Kernel panic",
    "Call Trace:",
    "rcu_sched self-detected stall",
    "hung_task",
];

/// Lines that match a report pattern but are not reports.
const BENIGN: &[&str] = &[
    // kmemleak announces itself at boot and when a scan thread starts.
    "kmemleak: Kernel memory leak detector initialized",
    "kmemleak: Automatic memory scanning thread started",
    "kmemleak: Automatic memory scanning thread ended",
    // KASAN announces itself at boot.
    "KernelAddressSanitizer initialized",
];

/// Returns every line of the console log that holds a kernel report.
///
/// ```
/// let log = "[ 1.0] ok\n[ 2.0] WARNING: CPU: 0 PID: 1 at kmod/x.rs:1\n";
/// assert_eq!(dsu_vmrun::kernel_reports(log).len(), 1);
/// ```
pub fn kernel_reports(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.contains("DSU-TEST ") && !l.starts_with("dsu-demo"))
        .filter(|l| KERNEL_REPORT_PATTERNS.iter().any(|p| l.contains(p)))
        .filter(|l| !BENIGN.iter().any(|b| l.contains(b)))
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// The verdict on one VM run.
#[derive(Debug, Default)]
pub struct Report {
    /// Tests in the order the guest ran them.
    pub tests: Vec<TestLine>,
    /// The guest's exit status, if it got as far as printing it.
    pub exit: Option<i32>,
    /// Kernel-log lines that hold a report.
    pub kernel_reports: Vec<String>,
}

impl Report {
    /// Reads a whole console log.
    pub fn from_log(log: &str) -> Self {
        Report {
            tests: log.lines().filter_map(parse_test_line).collect(),
            exit: log.lines().rev().find_map(parse_exit_line),
            kernel_reports: kernel_reports(log),
        }
    }

    /// Counts of passed, failed and skipped tests.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |o: Outcome| self.tests.iter().filter(|t| t.outcome == o).count();
        (n(Outcome::Pass), n(Outcome::Fail), n(Outcome::Skip))
    }

    /// The closing line, `N passed, N failed` (plus `, N skipped` when any were). A run
    /// whose kernel log holds reports, or whose guest did not exit cleanly, counts one
    /// more failure for it.
    pub fn summary(&self) -> String {
        let (pass, mut fail, skip) = self.counts();
        fail += self.extra_failures().len();
        let mut s = format!("{pass} passed, {fail} failed");
        if skip > 0 {
            s.push_str(&format!(", {skip} skipped"));
        }
        s
    }

    /// Failures of the run itself, beyond the tests': kernel reports and exit status.
    pub fn extra_failures(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.kernel_reports.is_empty() {
            v.push(format!(
                "kernel log holds {} report line(s)",
                self.kernel_reports.len()
            ));
        }
        match self.exit {
            None => v.push("guest did not report an exit status (crashed or timed out)".into()),
            Some(0) => {}
            Some(code) => {
                if !self.tests.iter().any(|t| t.outcome == Outcome::Fail) {
                    v.push(format!("guest exited with status {code}"));
                }
            }
        }
        v
    }

    /// Whether the run passed: every test passed or skipped, the guest exited 0 and the
    /// kernel log is clean.
    pub fn passed(&self) -> bool {
        self.counts().1 == 0 && self.extra_failures().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
[    0.000000] Linux version 6.12.117
[    0.100000] kmemleak: Kernel memory leak detector initialized (mem pool available: 15741)
[    0.100000] KernelAddressSanitizer initialized (generic)
DSU-TEST foundation::module_loads PASS 12ms
DSU-TEST foundation::device_node PASS 1ms
DSU-EXIT 0
";

    #[test]
    fn clean_run_passes() {
        let r = Report::from_log(CLEAN);
        assert!(r.passed(), "{r:?}");
        assert_eq!(r.summary(), "2 passed, 0 failed");
    }

    #[test]
    fn warning_fails_the_run() {
        let log = CLEAN.replace(
            "DSU-EXIT 0",
            "[    3.1] ------------[ cut here ]------------\n\
             [    3.1] WARNING: CPU: 1 PID: 77 at mm/memory.c:1234 insert_page+0x10/0x20\n\
             DSU-EXIT 0",
        );
        let r = Report::from_log(&log);
        assert!(!r.passed());
        assert_eq!(r.kernel_reports.len(), 1);
        assert!(r.kernel_reports[0].contains("WARNING: CPU: 1"));
        assert_eq!(r.summary(), "2 passed, 1 failed");
    }

    #[test]
    fn kasan_report_fails_the_run() {
        let log = CLEAN.replace(
            "DSU-EXIT 0",
            "[    4.2] ==================================================================\n\
             [    4.2] BUG: KASAN: slab-use-after-free in dsu_release+0x42/0x80 [dsu]\n\
             [    4.2] Read of size 8 at addr ffff888003a1c010 by task t/90\n\
             DSU-EXIT 0",
        );
        let r = Report::from_log(&log);
        assert!(!r.passed());
        assert!(
            r.kernel_reports
                .iter()
                .any(|l| l.contains("KASAN: slab-use-after-free"))
        );
    }

    #[test]
    fn lockdep_and_kmemleak_fail_the_run() {
        for report in [
            "WARNING: possible circular locking dependency detected",
            "WARNING: inconsistent lock state",
            "unreferenced object 0xffff888004f1a000 (size 64):",
            "kmemleak: 1 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
            "Oops: general protection fault, probably for non-canonical address",
        ] {
            let r = Report::from_log(
                &CLEAN.replace("DSU-EXIT 0", &format!("[ 5.0] {report}\nDSU-EXIT 0")),
            );
            assert!(!r.passed(), "not caught: {report}");
        }
    }

    #[test]
    fn missing_exit_fails_the_run() {
        let r = Report::from_log(&CLEAN.replace("DSU-EXIT 0\n", ""));
        assert!(!r.passed());
        assert!(r.extra_failures()[0].contains("did not report an exit status"));
    }

    #[test]
    fn failing_and_skipped_tests_are_counted() {
        let log =
            "DSU-TEST a PASS 1ms\nDSU-TEST b FAIL boom\nDSU-TEST c SKIP no memcg\nDSU-EXIT 1\n";
        let r = Report::from_log(log);
        assert!(!r.passed());
        assert_eq!(r.summary(), "1 passed, 1 failed, 1 skipped");
    }

    #[test]
    fn test_lines_survive_kernel_interleaving() {
        let t = parse_test_line("[   7.1] random kernel textDSU-TEST x PASS 3ms\r").unwrap();
        assert_eq!(t.name, "x");
        assert_eq!(parse_exit_line("DSU-EXIT 3\r"), Some(3));
    }
}
