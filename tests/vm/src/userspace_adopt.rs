//! README's "Your own program, v1 to v2": `hello-v1` and `hello-v2`, built outside the
//! workspace by `scripts/adopt.sh` from the README's own steps (`cargo new`, `cargo add dsu
//! --path`, two files), update live as the README says: v2 starts beside v1, counts on from
//! v1's value, and v1 learns of v2 and exits.

use crate::userspace_helpers::{REPLY, destroy, ok};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};

/// A started hello-vN and its stdout lines.
struct Hello {
    child: Child,
    lines: Receiver<String>,
}

impl Hello {
    fn start(prog: &str) -> Result<Hello, Failure> {
        let mut child = Command::new(prog)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Failure::Fail(format!("spawn {prog}: {e} (scripts/adopt.sh did not run?)"))
            })?;
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Hello { child, lines })
    }

    fn line(&self, what: &str) -> Result<String, Failure> {
        self.lines
            .recv_timeout(REPLY)
            .map_err(|_| Failure::Fail(format!("no line from {what} within {REPLY:?}")))
    }
}

impl Drop for Hello {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[distributed_slice(TESTS)]
static ADOPT_README: VmTest = VmTest {
    name: "userspace::adopt_readme",
    phase: Phase::Main,
    run: adopt_readme,
};
fn adopt_readme() -> TestResult {
    let seg = "hello";
    destroy(seg);
    let r = (|| -> TestResult {
        let v1 = Hello::start("hello-v1")?;
        ensure_eq!(
            v1.line("hello-v1")?,
            "v1: greeting number 1",
            "v1's first line"
        );
        let mut v2 = Hello::start("hello-v2")?;
        ensure_eq!(
            v2.line("hello-v2")?,
            "v2: greeting number 2",
            "v2 counts on from v1's value in the shared page"
        );
        ensure_eq!(
            v1.line("hello-v1")?,
            "v1: a newer version is running, exiting",
            "v1 notified of v2"
        );
        let mut v1 = v1;
        let status = v1.child.wait()?;
        ensure!(status.success(), "hello-v1 exited with {status}");
        let show = ok("dsuctl", &["show", seg])?;
        ensure!(
            show.lines().any(|l| l.starts_with("hello::GREETINGS ")),
            "hello::GREETINGS missing from the segment:\n{show}"
        );
        ensure!(
            v2.child.try_wait()?.is_none(),
            "hello-v2 exited while no newer version arrived"
        );
        Ok(())
    })();
    destroy(seg);
    r
}
