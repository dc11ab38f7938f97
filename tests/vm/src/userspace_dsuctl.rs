//! `dsuctl` against known state: list, show, dump (text and JSON), create with a mode,
//! destroy, watch, and its exit codes.

use crate::userspace_helpers::{REPLY, Server, destroy, fails, ok, run};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu::Shared;
use linkme::distributed_slice;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::sync::atomic::AtomicU64;

fn json(args: &[&str]) -> Result<Value, Failure> {
    let out = ok("dsuctl", args)?;
    serde_json::from_str(&out)
        .map_err(|e| Failure::Fail(format!("dsuctl {}: bad JSON ({e}): {out}", args.join(" "))))
}

#[distributed_slice(TESTS)]
static DSUCTL: VmTest = VmTest {
    name: "userspace::dsuctl_output",
    phase: Phase::Main,
    run: dsuctl_output,
};
fn dsuctl_output() -> TestResult {
    let seg = "us-ctl";
    destroy(seg);
    let r = (|| -> TestResult {
        ensure_eq!(
            ok("dsuctl", &["create", seg, "--mode", "0640"])?,
            "created segment us-ctl (mode 0640)",
            "create"
        );
        let err = fails("dsuctl", &["create", seg], 1)?;
        ensure!(
            err.contains("segment \"us-ctl\" already exists"),
            "create twice: {err}"
        );

        // list, text and JSON.
        let list = ok("dsuctl", &["list"])?;
        let header: Vec<&str> = list
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        ensure_eq!(
            header,
            vec![
                "SEGMENT",
                "OWNER",
                "MODE",
                "PAGES",
                "VARIABLES",
                "VERSIONS",
                "HANDLES"
            ],
            "list header"
        );
        let row = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(seg));
        let row = row.ok_or_else(|| Failure::Fail(format!("{seg} not listed:\n{list}")))?;
        ensure_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            vec![seg, "0:0", "0640", "0", "0", "0", "0"],
            "list row"
        );
        let l = json(&["list", "--json"])?;
        let s = l
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == seg))
            .cloned()
            .unwrap_or_default();
        ensure_eq!(s["mode"], "0640", "list --json mode");
        ensure_eq!(s["uid"], 0, "list --json uid");
        ensure_eq!(s["variables"], 0, "list --json variables");

        // Known state: v1 writes counter = 0x0102 and stays running.
        let mut v1 = Server::start("counter_v1", &["--segment", seg, "--label", "ctl-1"])?;
        v1.cmd("write counter 258")?;
        let show = json(&["show", seg, "--json"])?;
        let vars = show["variables"].as_array().cloned().unwrap_or_default();
        let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
        for n in [
            "counter::COUNTER",
            "counter::OLD_ONLY",
            "counter::STATS",
            "counter::LOCK",
        ] {
            ensure!(names.contains(&n), "show --json lacks {n}: {names:?}");
        }
        let counter = vars
            .iter()
            .find(|v| v["name"] == "counter::COUNTER")
            .cloned()
            .unwrap_or_default();
        ensure_eq!(counter["size"], 8, "COUNTER size");
        ensure_eq!(counter["pages"], 1, "COUNTER pages");
        ensure_eq!(
            counter["fingerprint"],
            format!("{:016x}", AtomicU64::FINGERPRINT),
            "COUNTER fingerprint"
        );
        // RESOLVE comes before BIND; BIND labels the entries its handle created.
        ensure_eq!(counter["created_label"], "ctl-1", "COUNTER created by");
        let versions = show["versions"].as_array().cloned().unwrap_or_default();
        ensure_eq!(versions.len(), 1, "one version: {versions:?}");
        ensure_eq!(versions[0]["label"], "ctl-1", "version label");
        ensure_eq!(versions[0]["pid"], v1.pid(), "version pid");
        ensure_eq!(
            versions[0]["pages"],
            4,
            "version pages (4 globals of one page)"
        );
        ensure_eq!(show["segment"]["pages"], 4, "segment pages");

        let text = ok("dsuctl", &["show", seg])?;
        ensure!(
            text.starts_with("segment us-ctl: owner 0:0, mode 0640, 4 pages"),
            "show text:\n{text}"
        );
        ensure!(
            text.contains("variables (4):") && text.contains("versions (1):"),
            "show text:\n{text}"
        );
        let crow = text
            .lines()
            .find(|l| l.starts_with("counter::COUNTER "))
            .unwrap_or("");
        let cols: Vec<&str> = crow.split_whitespace().collect();
        let fp = format!("{:016x}", AtomicU64::FINGERPRINT);
        ensure_eq!(
            cols.get(1..4).map(|c| c.to_vec()),
            Some(vec!["8", "1", fp.as_str()]),
            "show row {crow:?}"
        );
        let vrow = text
            .lines()
            .rev()
            .find(|l| l.contains("ctl-1") && l.contains(&v1.pid().to_string()))
            .unwrap_or("");
        ensure!(!vrow.is_empty(), "version row missing:\n{text}");

        // dump, text and JSON.
        let dump = ok("dsuctl", &["dump", seg, "counter::COUNTER"])?;
        ensure_eq!(
            dump,
            format!(
                "counter::COUNTER: 8 bytes, fingerprint {:016x}\n00000000  02 01 00 00 00 00 00 00                           |........|",
                AtomicU64::FINGERPRINT
            ),
            "dump"
        );
        let d = json(&["dump", seg, "counter::COUNTER", "--json"])?;
        ensure_eq!(d["hex"], "0201000000000000", "dump --json hex");
        ensure_eq!(d["size"], 8, "dump --json size");
        let err = fails("dsuctl", &["dump", seg, "counter::NOPE"], 1)?;
        ensure!(
            err.contains("variable \"counter::NOPE\" not found in segment \"us-ctl\""),
            "dump missing: {err}"
        );

        // watch: a version arriving and leaving.
        let mut watch = std::process::Command::new("dsuctl")
            .args(["watch", seg, "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = watch.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        ok(
            "counter_v2",
            &["--segment", seg, "--label", "ctl-2", "read"],
        )?;
        let mut events = Vec::new();
        while events.len() < 3 {
            match rx.recv_timeout(REPLY) {
                Ok(l) => events.push(
                    serde_json::from_str::<Value>(&l)
                        .map_err(|e| Failure::Fail(format!("watch line {l:?}: {e}")))?,
                ),
                Err(_) => break,
            }
        }
        let _ = watch.kill();
        let _ = watch.wait();
        // counter_v2 is ready at attach: bound, ready, then ended.
        ensure_eq!(events.len(), 3, "watch events: {events:?}");
        ensure_eq!(events[0]["event"], "bound", "first event");
        ensure_eq!(events[0]["label"], "ctl-2", "first event label");
        ensure_eq!(events[1]["event"], "ready", "second event");
        ensure_eq!(events[2]["event"], "ended", "third event");
        for i in 1..3 {
            ensure_eq!(
                events[0]["version_id"],
                events[i]["version_id"],
                "same version"
            );
        }

        v1.exit()?;
        // destroy, then it is gone from list and show fails with exit 1.
        ensure_eq!(
            ok("dsuctl", &["destroy", seg])?,
            "destroyed segment us-ctl",
            "destroy"
        );
        let list = ok("dsuctl", &["list"])?;
        ensure!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(seg)),
            "destroyed segment still listed:\n{list}"
        );
        let err = fails("dsuctl", &["show", seg], 1)?;
        ensure!(
            err.contains("segment \"us-ctl\" does not exist"),
            "show destroyed: {err}"
        );
        // Usage errors exit 2, --help 0.
        fails("dsuctl", &["frobnicate"], 2)?;
        fails("dsuctl", &["create", seg, "--mode", "0999"], 2)?;
        let help = run("dsuctl", &["--help"])?;
        ensure_eq!(help.status.code(), Some(0), "--help exit");
        Ok(())
    })();
    destroy(seg);
    r
}
