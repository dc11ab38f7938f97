//! The C API (`libdsu`, `DSU_GLOBAL`, `dsu_attach`) end to end with the C examples
//! `ccounter_v1` and `ccounter_v2`, built through pkg-config from a DESTDIR install of
//! libdsu (userspace/libdsu/build-examples.sh): statically against libdsu.a, and as
//! `ccounter_v1_so`/`ccounter_v2_so` against libdsu.so.0 (in the guest's /dsu/lib).

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
    run: || counter_update("ccounter_v1", "ccounter_v2", "us-c"),
};

#[distributed_slice(TESTS)]
static C_SHARED_LIB_V1_V2: VmTest = VmTest {
    name: "userspace::c_shared_lib_v1_v2",
    phase: Phase::Main,
    run: c_shared_lib_v1_v2,
};
/// The same update with both versions linked against libdsu.so.0: the library attaches
/// the globals defined in the executable (the header's inline dsu_attach passes the
/// executable's descriptor section).
fn c_shared_lib_v1_v2() -> TestResult {
    let needs = std::fs::read("/dsu/bin/ccounter_v1_so").map_err(|e| {
        Failure::Fail(format!(
            "/dsu/bin/ccounter_v1_so: {e} (build-examples.sh did not run?)"
        ))
    })?;
    ensure!(
        needs.windows(11).any(|w| w == b"libdsu.so.0"),
        "ccounter_v1_so does not name libdsu.so.0"
    );
    counter_update("ccounter_v1_so", "ccounter_v2_so", "us-cso")
}

/// v1 and v2 of the counter share `counter`; v2's bind wakes v1.
fn counter_update(v1_prog: &str, v2_prog: &str, seg: &str) -> TestResult {
    have_c_examples()?;
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start(v1_prog, &["--segment", seg])?;
        ensure_eq!(
            v1.cmd("read")?,
            "counter=0 old_only=7 zeros=0",
            "v1 initial"
        );
        v1.cmd("write counter 5")?;
        // v1 waits for a newer version; v2's bind wakes it (dsu_wait_for_newer).
        v1.send("wait-newer 15000")?;
        std::thread::sleep(Duration::from_millis(200));
        let mut v2 = Server::start(v2_prog, &["--segment", seg])?;
        ensure_eq!(v1.reply("wait-newer")?, "newer", "v1 woken by v2");
        ensure_eq!(
            v2.cmd("read")?,
            "counter=5 added=42 table_len=5 zeros=0",
            "v2 sees v1's value and its initialisers"
        );
        v2.cmd("write counter 6")?;
        ensure_eq!(v1.get("counter")?, 6, "v1 sees v2's write");
        v1.cmd("write counter 7")?;
        ensure_eq!(v2.get("counter")?, 7, "v2 sees v1's write");
        ensure_eq!(v1.get("old_only")?, 7, "v1's removed global");
        // The DSU_GLOBAL_ZERO global (in .bss, mapped apart from dsu_globals) is shared too.
        v1.cmd("write zeros 9")?;
        ensure_eq!(
            v2.get("zeros")?,
            9,
            "v2 sees v1's write to the zeroed global"
        );
        v2.cmd("write zeros 10")?;
        ensure_eq!(
            v1.get("zeros")?,
            10,
            "v1 sees v2's write to the zeroed global"
        );
        ensure_eq!(
            v2.get("counter")?,
            7,
            "dsu_globals still shared after the zeroed one"
        );
        let show = ok("dsuctl", &["show", seg])?;
        for n in ["counter ", "old_only ", "added ", "table ", "zeros "] {
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
        // 2 MiB of zeros take no file space: the binaries stay under 2 MiB. (Not more
        // zeros: an unprivileged user's pages count against RLIMIT_MEMLOCK, 8 MiB.)
        for prog in [v1_prog, v2_prog] {
            let size = std::fs::metadata(format!("/dsu/bin/{prog}"))?.len();
            ensure!(
                size < 2 << 20,
                "{prog} is {size} bytes: its 2 MiB zeroed global takes file space"
            );
        }
        Ok(())
    })();
    destroy(seg);
    r?;
    // Errors come back through dsu_last_error.
    let err = fails(v1_prog, &["--segment", "bad/name", "read"], 1)?;
    ensure!(
        err.contains("invalid segment name \"bad/name\""),
        "C error message: {err}"
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static C_ERRNOS: VmTest = VmTest {
    name: "userspace::c_errnos",
    phase: Phase::Main,
    run: c_errnos,
};
/// dsu_attach returns -errno values (the examples print "[CODE: dsu_strerror(CODE)]"),
/// with the static and the shared library alike.
fn c_errnos() -> TestResult {
    have_c_examples()?;
    let seg = "us-cerr";
    for prog in ["ccounter_v1", "ccounter_v1_so"] {
        destroy(seg);
        let r = (|| -> TestResult {
            let err = fails(prog, &["--segment", "bad/name", "read"], 1)?;
            ensure!(
                err.contains("[-22: invalid segment name"),
                "{prog} EINVAL: {err}"
            );
            let err = fails(prog, &["--segment", seg, "--must-exist", "read"], 1)?;
            ensure!(err.contains("[-2: "), "{prog} ENOENT: {err}");
            ensure!(
                err.contains("does not exist"),
                "{prog} ENOENT message: {err}"
            );
            ok(prog, &["--segment", seg, "--must-create", "read"])?;
            let err = fails(prog, &["--segment", seg, "--must-create", "read"], 1)?;
            ensure!(err.contains("[-17: "), "{prog} EEXIST: {err}");
            ensure!(
                err.contains("already exists"),
                "{prog} EEXIST message: {err}"
            );
            Ok(())
        })();
        destroy(seg);
        r?;
    }
    // A conflict is -EEXIST too (without DSU_MUST_CREATE it can only be a conflict).
    let seg = "us-cerr2";
    destroy(seg);
    let r = (|| -> TestResult {
        ok("cconf_v1", &["--segment", seg, "read"])?;
        let err = fails("cconf_v2_reordered", &["--segment", seg, "read"], 1)?;
        ensure!(err.contains("[-17: "), "conflict: {err}");
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static C_STRUCT_LAYOUT: VmTest = VmTest {
    name: "userspace::c_struct_layout",
    phase: Phase::Main,
    run: c_struct_layout,
};
/// A C struct described with DSU_TYPE: v2 with the same layout shares v1's bytes; v2 with
/// the same struct name and size but its fields swapped conflicts, naming the field, and
/// changes nothing; `dsuctl show` prints the type and its fields.
fn c_struct_layout() -> TestResult {
    have_c_examples()?;
    let seg = "us-cstruct";
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start("cconf_v1", &["--segment", seg])?;
        ensure_eq!(v1.cmd("read")?, "port=80 limit=10", "v1 initial");
        v1.cmd("write port 8080")?;
        let before = ok("dsuctl", &["show", seg, "--json"])?;

        let err = fails("cconf_v2_reordered", &["--segment", seg, "read"], 1)?;
        ensure!(
            err.contains("variable \"conf\" changed type in segment \"us-cstruct\": field `limit` is uint64_t at offset 8 (8 bytes) in the segment but uint64_t at offset 0 (8 bytes) in this program"),
            "the conflict does not name the moved field: {err}"
        );
        ensure!(err.contains("nothing was changed"), "conflict error: {err}");
        let after = ok("dsuctl", &["show", seg, "--json"])?;
        let vars = |s: &str| {
            s.lines()
                .filter(|l| l.contains("\"name\"") || l.contains("\"fingerprint\""))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        ensure_eq!(
            vars(&before),
            vars(&after),
            "the failed attach changed the segment"
        );
        ensure_eq!(v1.get("port")?, 8080, "v1's value after the refused v2");

        let mut v2 = Server::start("cconf_v2_same", &["--segment", seg])?;
        ensure_eq!(
            v2.cmd("read")?,
            "port=8080 limit=10 retries=3",
            "the same layout shares v1's bytes"
        );
        v2.cmd("write limit 11")?;
        ensure_eq!(v1.get("limit")?, 11, "v1 sees v2's write");

        let show = ok("dsuctl", &["show", seg, "-v"])?;
        let conf = show.lines().find(|l| l.starts_with("conf ")).unwrap_or("");
        ensure!(conf.ends_with("struct conf"), "conf's type: {show}");
        ensure!(
            show.contains("conf (struct conf, 16 bytes, align 8):"),
            "no field list: {show}"
        );
        ensure!(
            show.lines().any(
                |l| l.split_whitespace().collect::<Vec<_>>() == ["8", "8", "limit", "uint64_t"]
            ),
            "limit's line: {show}"
        );
        let json = ok("dsuctl", &["show", seg, "--json"])?;
        ensure!(
            json.contains("\"type\": \"uint64_t\"") && json.contains("\"name\": \"struct conf\""),
            "show --json lacks the type: {json}"
        );
        v1.exit()?;
        v2.exit()?;
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static C_OWNER: VmTest = VmTest {
    name: "userspace::c_attach_shared_owner",
    phase: Phase::Main,
    run: c_owner,
};
/// A C program run by uid 1000 does not join root's 0666 segment with `dsu_attach`
/// (-EPERM, and the message says how to share on purpose); with `dsu_attach_shared`
/// naming uid 0 it does.
fn c_owner() -> TestResult {
    use std::os::unix::process::CommandExt;
    have_c_examples()?;
    let seg = "us-c-owner";
    destroy(seg);
    let r = (|| -> TestResult {
        ok("dsuctl", &["create", seg, "--mode", "0666"])?;
        let run = |extra: &[&str]| {
            std::process::Command::new("ccounter_v1")
                .args(extra)
                .args(["--segment", seg, "read"])
                .uid(1000)
                .gid(1000)
                .output()
        };
        let out = run(&[])?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure_eq!(out.status.code(), Some(1), "dsu_attach as uid 1000: {err}");
        ensure!(
            err.contains("is owned by uid 0")
                && err.contains("dsu_attach_shared(..., 0)")
                && err.contains("[-1: "),
            "dsu_attach's message: {err}"
        );
        let out = run(&["--owner", "0"])?;
        ensure_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            ),
            (Some(0), "counter=0 old_only=7 zeros=0".to_string()),
            "dsu_attach_shared naming uid 0: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static C_HEAP_LIST_TABLE: VmTest = VmTest {
    name: "userspace::c_heap_list_table",
    phase: Phase::Main,
    run: c_heap_list_table,
};
/// The C shared-heap examples: v1 builds a linked list and a chained hash table with
/// dsu_malloc, rooted in globals; v2 (another global layout) starts beside it, walks both
/// through plain pointers and extends them; v1 sees v2's additions. Then both fill
/// concurrently (push/put with dsu_free of every other node and entry in between), and
/// each sees the exact same contents.
fn c_heap_list_table() -> TestResult {
    have_c_examples()?;
    let seg = "us-cheap";
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start("cheap_v1", &["--segment", seg])?;
        for c in [
            "push 1",
            "push 2",
            "push 3",
            "put 10 100",
            "put 20 200",
            "put 30 300",
        ] {
            v1.cmd(c)?;
        }
        v1.cmd("del 20")?;
        ensure_eq!(v1.cmd("list")?, "3,2,1", "v1's list");
        ensure_eq!(v1.cmd("table")?, "10=100 30=300", "v1's table");

        let mut v2 = Server::start("cheap_v2", &["--segment", seg])?;
        ensure_eq!(v2.cmd("list")?, "3,2,1", "v2 walks v1's list");
        ensure_eq!(v2.cmd("table")?, "10=100 30=300", "v2 walks v1's table");
        ensure_eq!(v2.cmd("check")?, "nodes=3 entries=2", "v2's check");
        v2.cmd("push 4")?;
        v2.cmd("put 40 400")?;
        v2.cmd("put 10 101")?;
        v2.cmd("unlink 2")?;
        ensure_eq!(v1.cmd("list")?, "4,3,1", "v1 sees v2's node and unlink");
        ensure_eq!(
            v1.cmd("table")?,
            "10=101 30=300 40=400",
            "v1 sees v2's entries"
        );
        v1.cmd("push 5")?;
        v1.cmd("put 50 500")?;
        ensure_eq!(v2.cmd("list")?, "5,4,3,1", "v2 sees v1's node");

        // Both fill at once: each step mallocs a node and an entry, and every other step
        // frees the previous step's node and entry (dsu_free in both processes).
        const N: u64 = 1500;
        v1.send(&format!("fill 1 {N}"))?;
        v2.send(&format!("fill 2 {N}"))?;
        ensure_eq!(v1.reply("fill")?, format!("filled 1 {N}"), "v1's fill");
        ensure_eq!(v2.reply("fill")?, format!("filled 2 {N}"), "v2's fill");

        let list = v1.cmd("list")?;
        ensure_eq!(v2.cmd("list")?, list, "both versions see one list");
        let values: Vec<u64> = list
            .split(',')
            .map(|v| {
                v.parse()
                    .map_err(|_| Failure::Fail(format!("list item {v:?}")))
            })
            .collect::<Result<_, _>>()?;
        ensure!(values.len() >= 4, "list too short: {list}");
        ensure_eq!(values[values.len() - 4..], [5, 4, 3, 1], "the list's tail");
        for a in [1, 2] {
            // Each process's surviving nodes (odd i), newest first.
            let mine: Vec<u64> = values
                .iter()
                .copied()
                .filter(|v| v / 1_000_000 == a)
                .collect();
            let want: Vec<u64> = (0..N)
                .rev()
                .filter(|i| i % 2 == 1)
                .map(|i| a * 1_000_000 + i)
                .collect();
            ensure_eq!(mine, want, "fill {a}'s nodes in the list");
        }
        let mut want = String::from("10=101 30=300 40=400 50=500");
        for a in [1, 2] {
            for i in (1..N).step_by(2) {
                want += &format!(" {}={i}", a * 1_000_000 + i);
            }
        }
        ensure_eq!(v1.cmd("table")?, want, "v1's table after both fills");
        ensure_eq!(v2.cmd("table")?, want, "v2's table after both fills");
        let counts = format!("nodes={} entries={}", 4 + N, 4 + N);
        ensure_eq!(v1.cmd("check")?, counts, "v1's check");
        v1.exit()?;
        // The heap outlives v1; v2 frees what is left of it.
        ensure_eq!(v2.cmd("check")?, counts, "v2's check after v1 exited");
        for v in values {
            v2.cmd(&format!("unlink {v}"))?;
        }
        ensure_eq!(v2.cmd("list")?, "-", "v2 freed every node");
        v2.exit()?;
        Ok(())
    })();
    destroy(seg);
    r
}
