//! Migrations that lose nothing (issue 13, item 2), with the `tally_*` examples
//! (`userspace/dsu/examples`): v1 counts without pause before, during and after v2's
//! attach and through its drain while v2 counts too, and the merge step makes the final
//! count exact; a version accepts several older types and refuses one it does not know.

use crate::userspace_helpers::{destroy, fails, field, ok};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// A program running in the background whose stdout lines are read with a timeout.
struct Running {
    name: String,
    child: Child,
    lines: Receiver<String>,
}

impl Running {
    fn start(prog: &str, args: &[&str]) -> Result<Running, Failure> {
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Failure::Fail(format!("spawn {prog}: {e}")))?;
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
        Ok(Running {
            name: format!("{prog} {}", args.join(" ")),
            child,
            lines,
        })
    }

    fn line(&mut self, timeout: Duration) -> Result<String, Failure> {
        self.lines.recv_timeout(timeout).map_err(|_| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            Failure::Fail(format!("{}: no line within {timeout:?}", self.name))
        })
    }

    fn wait(mut self) -> Result<(), Failure> {
        let status = self.child.wait()?;
        ensure!(status.success(), "{} exited with {status}", self.name);
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn number(line: &str, key: &str) -> Result<u64, Failure> {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failure::Fail(format!("no number {key}= in {line:?}")))
}

#[distributed_slice(TESTS)]
static LOST_WRITES: VmTest = VmTest {
    name: "userspace_migrate::merge_loses_no_write",
    phase: Phase::Main,
    run: merge_loses_no_write,
};
/// v1 increments `tally::STATS.hits` without pause; v2 migrates it (v1's type → v2's)
/// while v1 runs and increments it too; v1 goes on until it sees v2 and 200 000 times
/// more, then exits. v2's merge step adds what v1 wrote after the snapshot: the final
/// count is every increment of both. (Without the merge the count misses at least v1's
/// last 200 000.) Then v3 migrates from v2's type.
fn merge_loses_no_write() -> TestResult {
    const V1_AFTER: u64 = 200_000;
    const V2_INCREMENTS: u64 = 2_000;
    let seg = "mig-lost";
    destroy(seg);
    let r = (|| -> TestResult {
        let after = V1_AFTER.to_string();
        let mut v1 = Running::start("tally_v1", &["--segment", seg, "run", &after])?;
        ensure_eq!(v1.line(Duration::from_secs(30))?, "attached", "v1");
        // v1 counts alone for a while first.
        std::thread::sleep(Duration::from_millis(300));
        let n = V2_INCREMENTS.to_string();
        let mut v2 = Running::start("tally_v2", &["--segment", seg, "run", &n])?;
        ensure_eq!(
            v2.line(Duration::from_secs(30))?,
            "status=migrated",
            "v2 migrated tally::STATS"
        );
        let v1_line = v1.line(Duration::from_secs(240))?;
        let v1_made = number(&v1_line, "increments")?;
        v1.wait()?;
        let v2_line = v2.line(Duration::from_secs(240))?;
        v2.wait()?;
        ensure_eq!(number(&v2_line, "pending")?, 0, "{v2_line}");
        ensure_eq!(number(&v2_line, "increments")?, V2_INCREMENTS, "{v2_line}");
        ensure!(v1_made > V1_AFTER, "v1 made {v1_made} increments");
        ensure_eq!(
            number(&v2_line, "hits")?,
            v1_made + V2_INCREMENTS,
            "every increment of v1 ({v1_line}) and v2 ({v2_line}) counted"
        );
        // The merge ran once: another v2 now shares the entry and sees the same count.
        let read = ok("tally_v2", &["--segment", seg, "read"])?;
        ensure_eq!(
            read,
            format!(
                "status=common hits={} misses=0 pending=0",
                v1_made + V2_INCREMENTS
            ),
            "a later v2"
        );
        // v3 accepts v2's and v1's types: the segment's newest entry is v2's.
        let read = ok("tally_v3", &["--segment", seg, "read"])?;
        ensure_eq!(
            read,
            format!(
                "status=migrated hits={} misses=0 errors=2",
                v1_made + V2_INCREMENTS
            ),
            "v3 from v2"
        );
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static THREE_GENERATIONS: VmTest = VmTest {
    name: "userspace_migrate::three_generations",
    phase: Phase::Main,
    run: three_generations,
};
/// A chain v1 -> v2 -> v3 where v3 starts while v1 still runs: v1 counts without pause
/// until it sees a newer version and a long while more; v2 migrates from v1's type and
/// counts; v3 starts before v1 has exited, migrates from v2's type and counts. v2 waits for
/// its merge of v1's late writes before it exits; v3's merge then takes v2's final value.
/// The final count in v3 is every increment of all three.
fn three_generations() -> TestResult {
    const V1_AFTER: u64 = 3_000_000;
    const V2_INCREMENTS: u64 = 2_000;
    const V3_INCREMENTS: u64 = 1_000;
    let seg = "mig-chain";
    destroy(seg);
    let r = (|| -> TestResult {
        let after = V1_AFTER.to_string();
        let mut v1 = Running::start("tally_v1", &["--segment", seg, "run", &after])?;
        ensure_eq!(v1.line(Duration::from_secs(30))?, "attached", "v1");
        std::thread::sleep(Duration::from_millis(300));
        let n2 = V2_INCREMENTS.to_string();
        let mut v2 = Running::start("tally_v2", &["--segment", seg, "run", &n2])?;
        ensure_eq!(
            v2.line(Duration::from_secs(30))?,
            "status=migrated",
            "v2 from v1"
        );
        let n3 = V3_INCREMENTS.to_string();
        let mut v3 = Running::start("tally_v3", &["--segment", seg, "run", &n3])?;
        ensure_eq!(
            v3.line(Duration::from_secs(30))?,
            "status=migrated",
            "v3 from v2"
        );
        // v1 has not printed its total yet: it was still running when v3 attached.
        ensure!(
            v1.child.try_wait()?.is_none(),
            "v1 exited before v3 attached: raise V1_AFTER"
        );
        let v1_line = v1.line(Duration::from_secs(300))?;
        let v1_made = number(&v1_line, "increments")?;
        v1.wait()?;
        let v2_line = v2.line(Duration::from_secs(300))?;
        v2.wait()?;
        ensure_eq!(number(&v2_line, "pending")?, 0, "{v2_line}");
        let v3_line = v3.line(Duration::from_secs(300))?;
        v3.wait()?;
        ensure_eq!(number(&v3_line, "pending")?, 0, "{v3_line}");
        ensure!(v1_made > V1_AFTER, "v1 made {v1_made} increments");
        ensure_eq!(
            number(&v3_line, "hits")?,
            v1_made + V2_INCREMENTS + V3_INCREMENTS,
            "every increment of v1 ({v1_line}), v2 ({v2_line}) and v3 ({v3_line}) counted"
        );
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static SKIPPED: VmTest = VmTest {
    name: "userspace_migrate::skipped_generation",
    phase: Phase::Main,
    run: skipped_generation,
};
/// A segment still holding v1's type: a v3 that migrates only from v2's type refuses to
/// attach, naming the segment's type, its own and the one it accepts (it used to start
/// silently from its initialiser); a v3 that also accepts v1's type migrates from it.
fn skipped_generation() -> TestResult {
    let seg = "mig-skip";
    destroy(seg);
    let r = (|| -> TestResult {
        ensure_eq!(
            ok("tally_v1", &["--segment", seg, "add", "5"])?,
            "hits=5",
            "v1"
        );
        let err = fails("tally_v3_from_v2", &["--segment", seg, "read"], 1)?;
        ensure!(
            err.contains("variable \"tally::STATS\" is StatsV1 (8 bytes) in segment \"mig-skip\"")
                && err.contains("declares it as StatsV3 and migrates only from StatsV2"),
            "the error names both types: {err}"
        );
        // Nothing was created by the refused attach.
        let show = ok("dsuctl", &["show", seg])?;
        ensure_eq!(
            show.lines()
                .filter(|l| l.starts_with("tally::STATS "))
                .count(),
            1,
            "one STATS entry:\n{show}"
        );
        ensure_eq!(
            ok("tally_v3", &["--segment", seg, "read"])?,
            "status=migrated hits=5 misses=0 errors=1",
            "v3 from v1 (a skipped generation it accepts)"
        );
        Ok(())
    })();
    destroy(seg);
    r?;
    // On a fresh segment the initialiser is used.
    let fresh = "mig-skip-fresh";
    destroy(fresh);
    let r = ok("tally_v3_from_v2", &["--segment", fresh, "read"]);
    destroy(fresh);
    ensure_eq!(r?, "status=added hits=0", "fresh segment");
    Ok(())
}
