//! The dsu VM suite. It runs as a static binary inside the QEMU guest, with the module
//! at `$DSU_MODULE` (default `/dsu/dsu.ko`) and the other guest binaries on `$PATH`.
//!
//! Each test registers itself in [`TESTS`] with a name and a phase and prints one line,
//! `DSU-TEST <name> PASS|FAIL|SKIP [detail]`, which the host runner (`tests/runner`)
//! turns into its report. `dsu-vmtests [filter...]` runs only the tests whose names
//! contain one of the filters (setup and teardown phases always run).

mod bench;
mod foundation;
mod kmod_abi;
mod kmod_binding;
mod kmod_extents;
mod kmod_heap;
mod kmod_hugepages;
mod kmod_ioctl;
mod kmod_lifecycle;
mod kmod_limits;
mod kmod_lock_owner;
mod kmod_notify;
mod kmod_permissions;
mod kmod_poll;
mod kmod_resolve;
mod kmod_restore;
mod kmod_segments;
mod kmod_setattr;
mod kmod_snapshot;
mod kmod_typedesc;
mod kmod_unload;
mod kv_redis;
mod kv_supervisor;
mod kv_update;
mod review;
mod robust_crash;
mod robust_fuzz;
mod robust_isolation;
mod robust_limits;
mod robust_permissions;
mod robust_pinning;
mod robust_raw;
mod robust_stress;
mod snapshot_kv;
mod userspace_adopt;
mod userspace_c;
mod userspace_check;
mod userspace_dsuctl;
mod userspace_heap;
mod userspace_helpers;
mod userspace_migrate;
mod userspace_rust;
mod userspace_snapshot;
mod util;

use linkme::distributed_slice;
use std::io::Write;

/// When a test runs relative to the others: the module is loaded in `Load`, most tests
/// run in `Main`, `Unload` removes the module and `Final` checks kmemleak last.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Phase {
    /// Loads the module.
    Load,
    /// Tests that need the module loaded.
    Main,
    /// Unloads and reloads the module.
    Unload,
    /// Checks kmemleak after everything else.
    Final,
}

/// Outcome of a test other than a pass.
#[derive(Debug)]
pub enum Failure {
    /// The test failed; the string says what was expected and what was seen.
    Fail(String),
    /// The test could not run here; the string says why.
    Skip(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Fail(e.to_string())
    }
}

/// What a test returns.
pub type TestResult = Result<(), Failure>;

/// A named VM test.
pub struct VmTest {
    /// Unique name, `area::what`.
    pub name: &'static str,
    /// When it runs.
    pub phase: Phase,
    /// The test body.
    pub run: fn() -> TestResult,
}

/// Every VM test, collected from all modules of this crate.
#[distributed_slice]
pub static TESTS: [VmTest];

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).collect();
    let mut tests: Vec<&VmTest> = TESTS.iter().collect();
    tests.sort_by_key(|t| (t.phase, t.name));
    let mut failed = 0;
    for t in tests {
        let selected = filters.is_empty()
            || t.phase != Phase::Main
            || filters.iter().any(|f| t.name.contains(f.as_str()));
        if !selected {
            continue;
        }
        let start = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(t.run);
        let ms = start.elapsed().as_millis();
        let line = match outcome {
            Ok(Ok(())) => format!("DSU-TEST {} PASS {ms}ms", t.name),
            Ok(Err(Failure::Skip(why))) => format!("DSU-TEST {} SKIP {why}", t.name),
            Ok(Err(Failure::Fail(why))) => {
                failed += 1;
                format!("DSU-TEST {} FAIL {}", t.name, why.replace('\n', " | "))
            }
            Err(panic) => {
                failed += 1;
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into());
                format!(
                    "DSU-TEST {} FAIL panic: {}",
                    t.name,
                    why.replace('\n', " | ")
                )
            }
        };
        println!("{line}");
        let _ = std::io::stdout().flush();
    }
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
