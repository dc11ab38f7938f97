//! The benchmark runs to completion on tiny sizes (`dsu-bench --quick`). No timing is
//! checked here: the figures are published in BENCHMARKS.md by `scripts/bench`.

use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure};
use linkme::distributed_slice;
use std::process::Command;

#[distributed_slice(TESTS)]
static QUICK_RUNS: VmTest = VmTest {
    name: "bench::quick_runs",
    phase: Phase::Main,
    run: quick_runs,
};
fn quick_runs() -> TestResult {
    let json = "/tmp/dsu-bench-quick.json";
    let svg = "/tmp/dsu-bench-quick.svg";
    let out = Command::new("dsu-bench")
        .args(["--quick", "--json", json, "--svg", svg])
        .output()?;
    if !out.status.success() {
        return Err(Failure::Fail(format!(
            "dsu-bench --quick exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Every figure printed its table (the module is loaded, so none was skipped).
    for heading in [
        "1. Access cost",
        "2. Update pause",
        "3. First touch",
        "4. Attach",
        "5. Attach",
        "6. RESOLVE",
    ] {
        ensure!(
            stdout.contains(heading),
            "no table {heading:?} in the output:\n{stdout}"
        );
    }
    let raw = std::fs::read_to_string(json)?;
    ensure!(
        raw.contains("\"pause\"") && raw.contains("\"median_ns\""),
        "{json} lacks the raw figures"
    );
    ensure!(
        std::fs::read_to_string(svg)?.contains("</svg>"),
        "{svg} is not a complete SVG"
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static HEAP_QUICK_RUNS: VmTest = VmTest {
    name: "bench::heap_quick_runs",
    phase: Phase::Main,
    run: heap_quick_runs,
};
/// `dsu-bench heap --quick --segment` (the allocator and map tables on a real segment's
/// heap) and `dsu-bench heap-pause` on tiny sizes: each prints its tables, and the new
/// versions found every object (heap-pause fails otherwise). No timing is checked.
fn heap_quick_runs() -> TestResult {
    for (args, headings) in [
        (
            &["heap", "--quick", "--segment"][..],
            &[
                "(the heap of a dsu segment)",
                "| 2 processes",
                "Map: HashMap",
            ][..],
        ),
        (
            &["heap-pause", "--trials", "2", "36", "3000"][..],
            &["| 36 | ", "| 3000 | "][..],
        ),
    ] {
        let out = Command::new("dsu-bench").args(args).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "dsu-bench {args:?} exited with {}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for h in headings {
            ensure!(
                stdout.contains(h),
                "no {h:?} in dsu-bench {args:?}:\n{stdout}"
            );
        }
    }
    Ok(())
}
