//! `dsuctl check SEG BINARY` (issue 13, item 4) on the guest's own built programs, Rust
//! (PIE, pointers by relocation) and C: a compatible binary, migrations, a skipped
//! generation, a C struct with its fields reordered, and a global renamed by moving its
//! module. Exit statuses and the JSON document are checked, and that `check` changes
//! nothing.

use crate::userspace_helpers::{destroy, ok, run};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;
use serde_json::Value;

/// The path of a guest program on `$PATH`.
fn bin(name: &str) -> Result<String, Failure> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
        .ok_or_else(|| Failure::Fail(format!("{name} is not on PATH")))
}

/// `dsuctl check SEG PROG --json`: the exit status and the document.
fn check(seg: &str, prog: &str) -> Result<(i32, Value), Failure> {
    let path = bin(prog)?;
    let out = run("dsuctl", &["check", seg, &path, "--json"])?;
    let code = out.status.code().unwrap_or(-1);
    let doc: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        Failure::Fail(format!(
            "dsuctl check {seg} {prog}: exit {code}, not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    Ok((code, doc))
}

/// The report entry of variable `name`.
fn var<'a>(doc: &'a Value, name: &str) -> Result<&'a Value, Failure> {
    doc["variables"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == name))
        .ok_or_else(|| Failure::Fail(format!("no variable {name} in {doc}")))
}

#[distributed_slice(TESTS)]
static CHECK_RUST: VmTest = VmTest {
    name: "userspace_check::rust_binaries",
    phase: Phase::Main,
    run: rust_binaries,
};
/// Against a segment tally_v1 made: tally_v1 itself is compatible (common), tally_v2
/// migrates from StatsV1 with a merge step, tally_v3_from_v2 conflicts (no `from` type
/// matches: exit 3, and its attach indeed fails), tally_v1_moved renames the variable
/// (exit 4, `renamed_to`). A missing segment: everything added.
fn rust_binaries() -> TestResult {
    let seg = "chk-rust";
    destroy(seg);
    let r = (|| -> TestResult {
        // Before the segment exists.
        let (code, doc) = check(seg, "tally_v1")?;
        ensure_eq!(code, 0, "{doc}");
        ensure_eq!(doc["segment_exists"], false, "{doc}");
        ensure_eq!(var(&doc, "tally::STATS")?["status"], "added", "{doc}");

        ok("tally_v1", &["--segment", seg, "add", "3"])?;
        let before = ok("dsuctl", &["show", seg, "--json"])?;

        let (code, doc) = check(seg, "tally_v1")?;
        ensure_eq!(code, 0, "{doc}");
        let stats = var(&doc, "tally::STATS")?;
        ensure_eq!(stats["status"], "common", "{doc}");
        ensure_eq!(stats["type"], "StatsV1", "{doc}");
        ensure_eq!(doc["conflicts"], 0, "{doc}");
        ensure_eq!(doc["undeclared"].as_array().map(Vec::len), Some(0), "{doc}");

        let (code, doc) = check(seg, "tally_v2")?;
        ensure_eq!(code, 0, "{doc}");
        let stats = var(&doc, "tally::STATS")?;
        ensure_eq!(stats["status"], "migrated", "{doc}");
        ensure_eq!(stats["from"], "StatsV1", "{doc}");
        ensure_eq!(stats["merge"], true, "{doc}");

        let (code, doc) = check(seg, "tally_v3_from_v2")?;
        ensure_eq!(code, 3, "{doc}");
        let stats = var(&doc, "tally::STATS")?;
        ensure_eq!(stats["status"], "conflict", "{doc}");
        ensure_eq!(stats["conflict"], "migration", "{doc}");
        ensure_eq!(stats["segment_type"], "StatsV1", "{doc}");
        let out = run("tally_v3_from_v2", &["--segment", seg, "read"])?;
        ensure_eq!(
            out.status.code(),
            Some(1),
            "the attach check predicted fails"
        );

        let (code, doc) = check(seg, "tally_v1_moved")?;
        ensure_eq!(code, 4, "{doc}");
        ensure_eq!(
            var(&doc, "tally_v1_moved::stats::STATS")?["status"],
            "added",
            "{doc}"
        );
        let undeclared = &doc["undeclared"][0];
        ensure_eq!(undeclared["name"], "tally::STATS", "{doc}");
        ensure_eq!(
            undeclared["renamed_to"][0],
            "tally_v1_moved::stats::STATS",
            "{doc}"
        );
        ensure_eq!(doc["probable_renames"], 1, "{doc}");
        // The text form says it too.
        let out = run("dsuctl", &["check", seg, &bin("tally_v1_moved")?])?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            text.contains("renamed? tally_v1_moved::stats::STATS"),
            "text report: {text}"
        );

        let after = ok("dsuctl", &["show", seg, "--json"])?;
        let names = |s: &str| {
            s.lines()
                .filter(|l| l.contains("\"name\"") || l.contains("\"fingerprint\""))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        ensure_eq!(names(&before), names(&after), "check changed the segment");
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static CHECK_C: VmTest = VmTest {
    name: "userspace_check::c_struct_reordered",
    phase: Phase::Main,
    run: c_struct_reordered,
};
/// Against cconf_v1's segment: cconf_v2_same is compatible, cconf_v2_reordered conflicts
/// and the report names the moved field, as its attach's error does.
fn c_struct_reordered() -> TestResult {
    let seg = "chk-c";
    destroy(seg);
    let r = (|| -> TestResult {
        ok("cconf_v1", &["--segment", seg, "read"])?;
        let (code, doc) = check(seg, "cconf_v2_same")?;
        ensure_eq!(code, 0, "{doc}");
        ensure_eq!(var(&doc, "conf")?["status"], "common", "{doc}");

        let (code, doc) = check(seg, "cconf_v2_reordered")?;
        ensure_eq!(code, 3, "{doc}");
        let conf = var(&doc, "conf")?;
        ensure_eq!(conf["status"], "conflict", "{doc}");
        ensure_eq!(conf["conflict"], "type", "{doc}");
        ensure_eq!(
            conf["detail"],
            "field `limit` is uint64_t at offset 8 (8 bytes) in the segment but uint64_t at offset 0 (8 bytes) in this program",
            "{doc}"
        );
        let out = run("dsuctl", &["check", seg, &bin("cconf_v2_reordered")?])?;
        ensure_eq!(out.status.code(), Some(3), "text mode exit status");
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            text.contains("CONFLICT") && text.contains("field `limit`"),
            "text report: {text}"
        );
        // Not an ELF file: an error (1), not a verdict.
        let out = run("dsuctl", &["check", seg, "/proc/self/status"])?;
        ensure_eq!(out.status.code(), Some(1), "a non-ELF file");
        Ok(())
    })();
    destroy(seg);
    r
}
