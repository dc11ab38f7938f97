//! The C API (`libdsu`, `DSU_GLOBAL`, `dsu_attach`) end to end with the C examples
//! `ccounter_v1` and `ccounter_v2` (built with gcc -static against libdsuc.a).

use crate::userspace_helpers::{Server, destroy, fails, ok};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;
use std::time::Duration;

fn have_c_examples() -> Result<(), Failure> {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| std::path::Path::new(d).join("ccounter_v1").exists());
    if found {
        Ok(())
    } else {
        Err(Failure::Fail(
            "ccounter_v1 is not on PATH (build-examples.sh did not run?)".into(),
        ))
    }
}

#[distributed_slice(TESTS)]
static C_V1_V2: VmTest = VmTest {
    name: "userspace::c_v1_v2",
    phase: Phase::Main,
    run: c_v1_v2,
};
fn c_v1_v2() -> TestResult {
    have_c_examples()?;
    let seg = "us-c";
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start("ccounter_v1", &["--segment", seg])?;
        ensure_eq!(v1.cmd("read")?, "counter=0 old_only=7", "v1 initial");
        v1.cmd("write counter 5")?;
        // v1 waits for a newer version; v2's bind wakes it (dsu_wait_for_newer).
        v1.send("wait-newer 15000")?;
        std::thread::sleep(Duration::from_millis(200));
        let mut v2 = Server::start("ccounter_v2", &["--segment", seg])?;
        ensure_eq!(v1.reply("wait-newer")?, "newer", "v1 woken by v2");
        ensure_eq!(
            v2.cmd("read")?,
            "counter=5 added=42 table_len=5",
            "v2 sees v1's value and its initialisers"
        );
        v2.cmd("write counter 6")?;
        ensure_eq!(v1.get("counter")?, 6, "v1 sees v2's write");
        v1.cmd("write counter 7")?;
        ensure_eq!(v2.get("counter")?, 7, "v2 sees v1's write");
        ensure_eq!(v1.get("old_only")?, 7, "v1's removed global");
        let show = ok("dsuctl", &["show", seg])?;
        for n in ["counter ", "old_only ", "added ", "table "] {
            ensure!(
                show.lines().any(|l| l.starts_with(n)),
                "{n}missing from the segment:\n{show}"
            );
        }
        // The table is three pages.
        let table = show.lines().find(|l| l.starts_with("table ")).unwrap_or("");
        ensure_eq!(
            table.split_whitespace().nth(2),
            Some("3"),
            "table pages: {table}"
        );
        v1.exit()?;
        v2.exit()?;
        Ok(())
    })();
    destroy(seg);
    r?;
    // Errors come back through dsu_last_error.
    let err = fails("ccounter_v1", &["--segment", "bad/name", "read"], 1)?;
    ensure!(
        err.contains("invalid segment name \"bad/name\""),
        "C error message: {err}"
    );
    Ok(())
}
