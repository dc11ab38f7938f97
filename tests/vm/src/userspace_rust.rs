//! The `dsu` crate end to end, with the counter examples (`userspace/dsu/examples`):
//! v1 and v2 with common, added and removed globals, three versions at once, a type
//! conflict, a migration, the robust mutex across versions and after SIGKILL, and update
//! notification.

use crate::userspace_helpers::{Server, destroy, fails, field, ok};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;
use std::time::Duration;

#[distributed_slice(TESTS)]
static V1_V2: VmTest = VmTest {
    name: "userspace::v1_v2_common_added_removed",
    phase: Phase::Main,
    run: v1_v2,
};
fn v1_v2() -> TestResult {
    let seg = "us-v1v2";
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start("counter_v1", &["--segment", seg])?;
        let status = v1.cmd("status")?;
        for var in [
            "counter::COUNTER",
            "counter::OLD_ONLY",
            "counter::STATS",
            "counter::LOCK",
        ] {
            ensure_eq!(
                field(&status, var),
                Some("added".to_string()),
                "v1 creates {var}: {status}"
            );
        }
        v1.cmd("write counter 5")?;
        v1.cmd("write hits 3")?;
        // v2 starts while v1 runs and sees v1's values.
        let mut v2 = Server::start("counter_v2", &["--segment", seg])?;
        let status = v2.cmd("status")?;
        ensure_eq!(
            field(&status, "counter::COUNTER"),
            Some("common".to_string()),
            "v2 status {status}"
        );
        ensure_eq!(
            field(&status, "counter::ADDED"),
            Some("added".to_string()),
            "v2 status {status}"
        );
        ensure_eq!(
            field(&status, "counter::BIG"),
            Some("added".to_string()),
            "v2 status {status}"
        );
        let read = v2.cmd("read")?;
        ensure_eq!(
            read,
            "counter=5 hits=3 added=42 big_last=9",
            "v2 sees v1's values and its own initialisers"
        );
        // Writes both ways.
        v2.cmd("write counter 6")?;
        ensure_eq!(v1.get("counter")?, 6, "v1 sees v2's write");
        v1.cmd("write counter 7")?;
        ensure_eq!(v2.get("counter")?, 7, "v2 sees v1's write");
        v1.cmd("write hits 30")?;
        ensure_eq!(v2.get("hits")?, 30, "struct field shared");
        // The removed global stays for v1, and in the segment.
        ensure_eq!(v1.get("old_only")?, 7, "v1's removed global");
        v1.cmd("write old_only 8")?;
        ensure_eq!(v1.get("old_only")?, 8, "v1's removed global still writable");
        let show = ok("dsuctl", &["show", seg])?;
        ensure!(
            show.contains("counter::OLD_ONLY"),
            "removed global missing from the segment:\n{show}"
        );
        ensure!(
            show.contains("counter::ADDED"),
            "added global missing from the segment:\n{show}"
        );
        // Added globals are really shared too: a second v2 sees the first one's write.
        v2.cmd("write added 43")?;
        ensure_eq!(
            ok("counter_v2", &["--segment", seg, "get", "added"])?,
            "43",
            "another v2"
        );
        // v1 exits; v2 keeps the state.
        v1.exit()?;
        ensure_eq!(v2.get("counter")?, 7, "after v1 exited");
        v2.exit()?;
        ensure_eq!(
            ok("counter_v1", &["--segment", seg, "read"])?,
            "counter=7 old_only=8 hits=30",
            "state outlives the versions"
        );
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static THREE: VmTest = VmTest {
    name: "userspace::three_versions",
    phase: Phase::Main,
    run: three_versions,
};
fn three_versions() -> TestResult {
    let seg = "us-three";
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start("counter_v1", &["--segment", seg, "--prefault"])?;
        v1.cmd("write counter 100")?;
        let mut v2 = Server::start("counter_v2", &["--segment", seg])?;
        let mut v3 = Server::start("counter_v3", &["--segment", seg])?;
        ensure_eq!(v3.get("counter")?, 100, "v3 sees v1's counter");
        ensure_eq!(v3.get("added")?, 42, "v3 shares v2's added global");
        v3.cmd("write counter 101")?;
        ensure_eq!(v1.get("counter")?, 101, "v1 sees v3");
        ensure_eq!(v2.get("counter")?, 101, "v2 sees v3");
        v2.cmd("write added 7")?;
        ensure_eq!(v3.get("added")?, 7, "v3 sees v2's added global");
        let versions = ok("dsuctl", &["show", seg, "--json"])?;
        for label in ["\"v1\"", "\"v2\"", "\"v3\""] {
            ensure!(
                versions.contains(label),
                "dsuctl show lacks version {label}:\n{versions}"
            );
        }
        v1.exit()?;
        v2.exit()?;
        v3.exit()?;
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static CONFLICT: VmTest = VmTest {
    name: "userspace::type_conflict",
    phase: Phase::Main,
    run: type_conflict,
};
fn type_conflict() -> TestResult {
    let seg = "us-conflict";
    destroy(seg);
    let r = (|| -> TestResult {
        ok("counter_v1", &["--segment", seg, "write", "counter", "5"])?;
        let before = ok("dsuctl", &["show", seg, "--json"])?;
        let err = fails("counter_conflict", &["--segment", seg, "read"], 1)?;
        ensure!(
            err.contains("variable \"counter::COUNTER\" changed type in segment \"us-conflict\": the type is `AtomicU64` in the segment but `AtomicI64` in this program (fingerprint 0x"),
            "unclear conflict error: {err}"
        );
        ensure!(err.contains("nothing was changed"), "conflict error: {err}");
        let after = ok("dsuctl", &["show", seg, "--json"])?;
        // Variables unchanged: no CONFLICT_ADDED, same list (versions may differ in age).
        ensure!(
            !after.contains("CONFLICT_ADDED"),
            "the failed attach added a variable:\n{after}"
        );
        let vars = |s: &str| {
            s.lines()
                .filter(|l| l.contains("\"name\""))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        ensure_eq!(
            vars(&before),
            vars(&after),
            "variables changed by a failed attach"
        );
        ensure_eq!(
            ok("counter_v1", &["--segment", seg, "get", "counter"])?,
            "5",
            "value after the conflict"
        );
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static MIGRATION: VmTest = VmTest {
    name: "userspace::migration",
    phase: Phase::Main,
    run: migration,
};
fn migration() -> TestResult {
    let seg = "us-migrate";
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start("counter_v1", &["--segment", seg])?;
        v1.cmd("write hits 11")?;
        let mut v3 = Server::start("counter_v3", &["--segment", seg])?;
        let status = v3.cmd("status")?;
        ensure_eq!(
            field(&status, "counter::STATS"),
            Some("migrated".to_string()),
            "v3 status {status}"
        );
        ensure_eq!(v3.get("hits")?, 11, "transform carried hits over");
        ensure_eq!(v3.get("misses")?, 1000, "transform set misses");
        // A migrated variable is no longer shared with the old version.
        v3.cmd("write hits 20")?;
        ensure_eq!(v1.get("hits")?, 11, "v1 keeps the old entry");
        v1.cmd("write hits 12")?;
        ensure_eq!(v3.get("hits")?, 20, "v3 does not see the old entry");
        // Another v3 shares the migrated entry (no second transform).
        ensure_eq!(
            ok("counter_v3", &["--segment", seg, "read"])?,
            "counter=0 hits=20 misses=1000 added=42",
            "second v3"
        );
        // Both entries are in the directory.
        let show = ok("dsuctl", &["show", seg])?;
        ensure_eq!(
            show.lines()
                .filter(|l| l.starts_with("counter::STATS "))
                .count(),
            2,
            "two STATS entries:\n{show}"
        );
        v1.exit()?;
        v3.exit()?;
        Ok(())
    })();
    destroy(seg);
    // Without an old value, the initialiser is used.
    let fresh = "us-migrate-fresh";
    destroy(fresh);
    let r2 = ok("counter_v3", &["--segment", fresh, "read"]);
    destroy(fresh);
    r?;
    ensure_eq!(
        r2?,
        "counter=0 hits=0 misses=0 added=42",
        "v3 on a fresh segment"
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static MUTEX: VmTest = VmTest {
    name: "userspace::mutex_across_versions_and_sigkill",
    phase: Phase::Main,
    run: mutex,
};
fn mutex() -> TestResult {
    let seg = "us-mutex";
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start("counter_v1", &["--segment", seg])?;
        let mut v2 = Server::start("counter_v2", &["--segment", seg])?;
        ensure_eq!(v1.cmd("lock")?, "lock=1", "v1 lock");
        ensure_eq!(v2.cmd("lock")?, "lock=2", "v2 lock");
        // A third process takes the lock and is killed while holding it.
        let mut holder = std::process::Command::new("counter_v1")
            .args(["--segment", seg, "hold-lock"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )?;
        ensure_eq!(line.trim(), "locked 2", "holder");
        // v2 blocks on it...
        v2.send("lock")?;
        std::thread::sleep(Duration::from_millis(500));
        // ... until the holder dies.
        holder.kill()?;
        holder.wait()?;
        let reply = v2.reply("lock")?;
        ensure!(
            reply.starts_with("lock=3 owner-died=") && reply.ends_with(&holder.id().to_string()),
            "v2 after the holder's SIGKILL: {reply:?}"
        );
        // And the lock works normally afterwards, from both versions.
        ensure_eq!(v1.cmd("lock")?, "lock=4", "v1 lock after takeover");
        ensure_eq!(v2.cmd("lock")?, "lock=5", "v2 lock after takeover");
        v1.exit()?;
        v2.exit()?;
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static NOTIFY: VmTest = VmTest {
    name: "userspace::notification_wakes_v1",
    phase: Phase::Main,
    run: notify,
};
fn notify() -> TestResult {
    let seg = "us-notify";
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start("counter_v1", &["--segment", seg])?;
        ensure_eq!(v1.cmd("newer")?, "none", "before v2");
        ensure_eq!(v1.cmd("wait-newer 100")?, "timeout", "no newer version yet");
        v1.send("wait-newer 15000")?;
        std::thread::sleep(Duration::from_millis(200));
        let mut v2 = Server::start("counter_v2", &["--segment", seg])?;
        let reply = v1.reply("wait-newer")?;
        ensure_eq!(
            reply,
            format!("newer v2 {}", v2.pid()),
            "v1 woken by v2's bind"
        );
        ensure_eq!(
            v1.cmd("newer")?,
            format!("newer v2 {}", v2.pid()),
            "newer_version remembers"
        );
        // v2 itself has no newer version.
        ensure_eq!(v2.cmd("newer")?, "none", "v2");
        v1.exit()?;
        v2.exit()?;
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static ERRORS: VmTest = VmTest {
    name: "userspace::attach_errors",
    phase: Phase::Main,
    run: attach_errors,
};
fn attach_errors() -> TestResult {
    let err = fails(
        "counter_v1",
        &["--segment", "us-missing", "--must-exist", "read"],
        1,
    )?;
    ensure!(
        err.contains("segment \"us-missing\" does not exist"),
        "must-exist: {err}"
    );
    let err = fails("counter_v1", &["--segment", "bad/name", "read"], 1)?;
    ensure!(
        err.contains("invalid segment name \"bad/name\""),
        "bad name: {err}"
    );
    // Ownership: a root-owned segment, attached by uid 1000 without naming its owner, is
    // refused whatever its mode, with a message that says how to share on purpose.
    let seg = "us-perm";
    destroy(seg);
    ok("dsuctl", &["create", seg, "--mode", "0600"])?;
    let out = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("counter_v1")
            .args(["--segment", seg, "read"])
            .uid(1000)
            .gid(1000)
            .output()
    };
    destroy(seg);
    let out = out.map_err(|e| Failure::Fail(format!("run as uid 1000: {e}")))?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure_eq!(out.status.code(), Some(1), "as uid 1000: {err}");
    ensure!(
        err.contains("segment \"us-perm\" is owned by uid 0; if you meant to share it, attach with shared_with_owner(0)"),
        "as uid 1000: {err}"
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static CANDIDATE: VmTest = VmTest {
    name: "userspace::newer_version_is_ready_and_live",
    phase: Phase::Main,
    run: candidate,
};
/// `Version::newer_version` reports a newer version only once it is ready, never one
/// that aborted, and forgets one that ended; `Version::ready` and `collect_garbage`.
fn candidate() -> TestResult {
    let seg = "us-candidate";
    destroy(seg);
    let r = (|| -> TestResult {
        let d = crate::kmod_ioctl::Dsu::open()?;
        let names = || -> Result<Vec<String>, Failure> {
            let (vars, _) = d.list_variables(seg, 0, dsu_uapi::DSU_LIST_MAX)?;
            Ok(vars
                .iter()
                .map(|v| crate::kmod_ioctl::cstr(&v.name))
                .collect())
        };
        let mut v1 = Server::start("counter_v1", &["--segment", seg])?;
        let before = names()?;

        // A candidate that is killed before ready: v1 never sees it, its additions go.
        let v2 = Server::start("counter_v2", &["--segment", seg, "--candidate"])?;
        ensure!(names()?.len() > before.len(), "counter_v2 adds globals");
        ensure_eq!(
            v1.cmd("newer")?,
            "none",
            "a candidate is not a newer version"
        );
        drop(v2); // SIGKILL
        ensure_eq!(v1.cmd("wait-newer 500")?, "timeout", "after the abort");
        ensure_eq!(names()?, before, "the aborted candidate's globals are gone");

        // A candidate that becomes ready: v1 is woken by its READY, not by its bind.
        let mut v2 = Server::start("counter_v2", &["--segment", seg, "--candidate"])?;
        ensure_eq!(v1.cmd("wait-newer 300")?, "timeout", "bound, not ready");
        v1.send("wait-newer 15000")?;
        std::thread::sleep(Duration::from_millis(200));
        ensure_eq!(v2.cmd("ready")?, "ready", "v2 ready");
        ensure_eq!(
            v1.reply("wait-newer")?,
            format!("newer v2 {}", v2.pid()),
            "v1 woken by v2's READY"
        );
        // v2 ends: v1 forgets it.
        v2.exit()?;
        let t0 = std::time::Instant::now();
        loop {
            let n = v1.cmd("newer")?;
            if n == "none" {
                break;
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(20),
                "v1 still reports the ended v2: {n}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // v2's added globals are committed state now, retired: GC reclaims them (v1 maps
        // the rest).
        let dry = v1.cmd("gc dry 0")?;
        // dsuctl agrees, and shows v1's state.
        let json: serde_json::Value = serde_json::from_str(&ok(
            "dsuctl",
            &["--json", "gc", seg, "--dry-run", "--min-age", "0"],
        )?)?;
        let total = json["total"].as_u64().ok_or("dsuctl gc --json: no total")?;
        ensure!(
            dry.starts_with(&format!("gc {total} ")),
            "dsuctl gc --dry-run found {total}, the library {dry}"
        );
        let show: serde_json::Value =
            serde_json::from_str(&ok("dsuctl", &["--json", "show", seg])?)?;
        ensure_eq!(
            show["versions"][0]["state"],
            "ready",
            "dsuctl show: v1's state"
        );
        let reclaimed = v1.cmd("gc 0")?;
        ensure_eq!(dry, reclaimed, "dry run and reclaim agree");
        ensure!(
            !reclaimed.starts_with("gc 0 "),
            "nothing reclaimed: {reclaimed}"
        );
        ensure_eq!(names()?, before, "after GC: v1's globals");
        v1.exit()?;
        Ok(())
    })();
    destroy(seg);
    r
}
