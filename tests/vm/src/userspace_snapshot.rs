//! Snapshots from userspace (issue 14): `dsuctl save/inspect/restore` and the library's
//! `dsu::snapshot` round trip (variables, type descriptions, labels, the heap, a program
//! that attaches after the restore finds its globals common), restore onto an existing
//! name (refused, nothing changed), damaged files through the real restore path (refused,
//! nothing created), `Attach::restore_from`, `save --every --keep`, the C API, and a
//! `dsu::sync::Mutex` held at the snapshot's instant (taken over in the restored image,
//! never in the live segment while its holder lives).

use crate::userspace_helpers::{Server, destroy, fails, field, ok};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu::sys::Device;
use linkme::distributed_slice;
use serde_json::Value;
use std::path::{Path, PathBuf};

const DIR: &str = "/tmp/us-snap";
const HEAP_VALUE: u64 = 0xfeed;

fn dir() -> Result<PathBuf, Failure> {
    std::fs::create_dir_all(DIR)?;
    Ok(PathBuf::from(DIR))
}

fn json(args: &[&str]) -> Result<Value, Failure> {
    let out = ok("dsuctl", args)?;
    serde_json::from_str(&out)
        .map_err(|e| Failure::Fail(format!("dsuctl {}: bad JSON ({e}): {out}", args.join(" "))))
}

fn segment_names() -> Result<Vec<String>, Failure> {
    let mut names: Vec<String> = Device::open()?
        .list_segments()?
        .into_iter()
        .filter(|s| !s.destroyed)
        .map(|s| s.name)
        .collect();
    names.sort();
    Ok(names)
}

/// Fills `seg` with known state: counter_v1's globals (counter 4321, hits 7, the lock
/// taken once) and heap_probe's root pointing at a heap word holding [`HEAP_VALUE`].
/// Returns heap_probe, still running: it is a candidate that never becomes ready, so the
/// variable it added (its root) leaves the segment when it exits.
fn populate(seg: &str) -> Result<Server, Failure> {
    ok(
        "counter_v1",
        &["--segment", seg, "write", "counter", "4321"],
    )?;
    ok("counter_v1", &["--segment", seg, "write", "hits", "7"])?;
    ok("counter_v1", &["--segment", seg, "lock"])?;
    let mut probe = Server::start("heap_probe", &["--segment", seg, "--reserve", "67108864"])?;
    let ptr = probe.cmd("alloc 64")?;
    let ptr = field(&ptr, "ptr").ok_or_else(|| Failure::Fail(format!("alloc: {ptr}")))?;
    probe.cmd(&format!("put {ptr} {HEAP_VALUE}"))?;
    Ok(probe)
}

/// Every variable's (name, size, fingerprint, label, type description, bytes) and the
/// heap's (base, reserve, size, bytes) of `seg`.
type State = (
    Vec<(String, u64, u64, String, Option<String>, Vec<u8>)>,
    Option<(u64, u64, u64, Vec<u8>)>,
);

fn state(seg: &str) -> Result<State, Failure> {
    let dev = Device::open()?;
    let mut vars = Vec::new();
    for v in dev.list_variables(seg)? {
        let (bytes, _) = dev.read_var_all(seg, &v.name, Some(v.fingerprint))?;
        let desc = dev.read_type_desc(seg, &v.name, Some(v.fingerprint))?;
        vars.push((v.name, v.size, v.fingerprint, v.created_label, desc, bytes));
    }
    vars.sort();
    let info = dev
        .list_segments()?
        .into_iter()
        .find(|s| s.name == seg && !s.destroyed)
        .ok_or_else(|| Failure::Fail(format!("{seg} is not listed")))?;
    let heap = match info.heap {
        Some(h) => {
            let mut bytes = vec![0u8; h.size as usize];
            let n = dev.read_heap(seg, 0, &mut bytes)?;
            ensure_eq!(n as u64, h.size, "read_heap of {seg}");
            Some((h.base, h.reserve, h.size, bytes))
        }
        None => None,
    };
    Ok((vars, heap))
}

#[distributed_slice(TESTS)]
static ROUND_TRIP: VmTest = VmTest {
    name: "userspace::snapshot_round_trip",
    phase: Phase::Main,
    run: snapshot_round_trip,
};
fn snapshot_round_trip() -> TestResult {
    let (seg, r1, r2) = ("us-snap", "us-snap-r", "us-snap-l");
    for s in [seg, r1, r2] {
        destroy(s);
    }
    let d = dir()?;
    let (file, zfile) = (d.join("rt.dsusnap"), d.join("rt-z.dsusnap"));
    let result = (|| -> TestResult {
        let probe = populate(seg)?;
        let before = state(seg)?;
        // dsuctl save, plain and compressed (JSON).
        let out = ok("dsuctl", &["save", seg, file.to_str().unwrap()])?;
        ensure!(
            out.starts_with(&format!("saved segment {seg} to {}", file.display())),
            "save: {out}"
        );
        let j = json(&["save", seg, zfile.to_str().unwrap(), "--compress", "--json"])?;
        ensure_eq!(j["segment"], seg, "save --json segment");
        ensure!(
            j["bytes"].as_u64().unwrap_or(0) > 0 && j["heap_pages"].as_u64().unwrap_or(0) > 0,
            "save --json: {j}"
        );
        ensure!(
            std::fs::read_dir(&d)?.all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp.")),
            "a temporary file is left"
        );
        probe.exit()?;
        use std::os::unix::fs::PermissionsExt;
        let file_mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
        ensure!(
            file_mode & 0o077 == 0,
            "the file of a 0600 segment has mode {file_mode:o}"
        );
        // The image is the instant of the save: a write afterwards is not in it.
        ok(
            "counter_v1",
            &["--segment", seg, "write", "counter", "9999"],
        )?;

        // inspect, JSON and text.
        let i = json(&["inspect", file.to_str().unwrap(), "--json"])?;
        ensure_eq!(i["segment"], seg, "inspect segment");
        ensure_eq!(i["mode"], "0600", "inspect mode");
        let vars = i["variables"].as_array().cloned().unwrap_or_default();
        let counter = vars.iter().find(|v| v["name"] == "counter::COUNTER");
        let counter =
            counter.ok_or_else(|| Failure::Fail(format!("inspect: no counter::COUNTER in {i}")))?;
        ensure_eq!(counter["size"], 8, "inspect counter size");
        ensure_eq!(counter["created_label"], "v1", "inspect counter label");
        let live = before
            .0
            .iter()
            .find(|v| v.0 == "counter::COUNTER")
            .map(|v| v.2)
            .unwrap_or(0);
        ensure_eq!(
            counter["fingerprint"],
            format!("{live:016x}"),
            "inspect fingerprint"
        );
        ensure_eq!(vars.len(), before.0.len(), "inspect variable count");
        let heap = &i["heap"];
        ensure!(
            heap["allocator"]["allocated_blocks"].as_u64().unwrap_or(0) >= 1,
            "inspect heap: {heap}"
        );
        ensure!(
            heap["allocator"]["free_bytes"].as_u64().is_some(),
            "inspect heap free: {heap}"
        );
        let text = ok("dsuctl", &["inspect", zfile.to_str().unwrap()])?;
        ensure!(
            text.contains("counter::COUNTER") && text.contains("heap: allocated"),
            "inspect text: {text}"
        );

        // dsuctl restore under another name; the library's restore of the compressed file.
        let out = ok("dsuctl", &["restore", file.to_str().unwrap(), "--name", r1])?;
        ensure!(
            out.starts_with(&format!("restored segment {r1} from")),
            "restore: {out}"
        );
        let r = dsu::snapshot::restore(&zfile, Some(r2))?;
        ensure_eq!(r.segment, r2, "library restore name");
        ensure_eq!(r.variables, before.0.len(), "library restore variables");
        let (s1, s2) = (state(r1)?, state(r2)?);
        ensure!(
            s1 == before,
            "dsuctl restore differs from the segment at the save:\n{s1:?}\n{before:?}"
        );
        ensure!(
            s2 == before,
            "library restore of the zstd file differs from the segment at the save"
        );
        let info = Device::open()?
            .list_segments()?
            .into_iter()
            .find(|s| s.name == r1);
        ensure_eq!(info.map(|s| s.mode), Some(0o600), "restored mode");

        // Programs attach after the restore: their globals are common, with the saved values.
        let status = ok("counter_v1", &["--segment", r1, "--must-exist", "status"])?;
        ensure_eq!(
            field(&status, "counter::COUNTER"),
            Some("common".to_string()),
            "status after restore: {status}"
        );
        let read = ok("counter_v1", &["--segment", r1, "read"])?;
        ensure_eq!(
            field(&read, "counter"),
            Some("4321".to_string()),
            "counter after restore ({read})"
        );
        ensure_eq!(
            field(&read, "hits"),
            Some("7".to_string()),
            "hits after restore ({read})"
        );
        ensure_eq!(
            ok("counter_v1", &["--segment", r1, "lock"])?,
            "lock=2",
            "the mutex after restore"
        );
        ensure_eq!(
            ok("heap_probe", &["--segment", r2, "deref"])?,
            HEAP_VALUE.to_string(),
            "heap root after restore"
        );
        ensure_eq!(
            ok("counter_v1", &["--segment", seg, "get", "counter"])?,
            "9999",
            "the source segment"
        );
        Ok(())
    })();
    for s in [seg, r1, r2] {
        destroy(s);
    }
    result
}

#[distributed_slice(TESTS)]
static EXISTING: VmTest = VmTest {
    name: "userspace::snapshot_restore_existing",
    phase: Phase::Main,
    run: snapshot_restore_existing,
};
fn snapshot_restore_existing() -> TestResult {
    let seg = "us-snap-ex";
    destroy(seg);
    let file = dir()?.join("ex.dsusnap");
    let result = (|| -> TestResult {
        let _probe = populate(seg)?;
        ok("dsuctl", &["save", seg, file.to_str().unwrap()])?;
        ok("counter_v1", &["--segment", seg, "write", "counter", "5"])?;
        let before = state(seg)?;
        let names = segment_names()?;
        let err = fails("dsuctl", &["restore", file.to_str().unwrap()], 1)?;
        ensure!(
            err.contains(&format!("segment \"{seg}\" already exists"))
                && err.contains("nothing was changed")
                && err.contains("--name"),
            "restore onto an existing name: {err}"
        );
        match dsu::snapshot::restore(&file, None) {
            Err(dsu::Error::RestoreTargetExists { segment }) => {
                ensure_eq!(segment, seg, "library error")
            }
            other => {
                return Err(Failure::Fail(format!(
                    "library restore onto {seg}: {other:?}"
                )));
            }
        }
        ensure!(state(seg)? == before, "the existing segment changed");
        ensure_eq!(
            segment_names()?,
            names,
            "segments after the refused restores"
        );
        Ok(())
    })();
    destroy(seg);
    result
}

#[distributed_slice(TESTS)]
static BAD_FILES: VmTest = VmTest {
    name: "userspace::snapshot_bad_files",
    phase: Phase::Main,
    run: snapshot_bad_files,
};
/// Damaged files through the real restore path: every one refused, none creates a segment,
/// and a restore that fails after RESTORE_VAR and HEAP calls leaves nothing behind (the
/// suite's kmemleak check runs last).
fn snapshot_bad_files() -> TestResult {
    const SEED: u64 = 0x14_5eed;
    const CASES: usize = 300;
    let (seg, target) = ("us-snap-bad-src", "us-snap-bad");
    destroy(seg);
    destroy(target);
    let d = dir()?;
    let file = d.join("bad-src.dsusnap");
    let damaged = d.join("bad.dsusnap");
    let result = (|| -> TestResult {
        let probe = populate(seg)?;
        ok(
            "dsuctl",
            &["save", seg, file.to_str().unwrap(), "--compress"],
        )?;
        probe.exit()?;
        let good = std::fs::read(&file)?;
        let names = segment_names()?;
        let mut rng = fastrand_lite(SEED);
        for case in 0..CASES {
            let mut f = good.clone();
            let what = if case % 3 == 2 {
                let len = (rng() % good.len() as u64) as usize;
                f.truncate(len);
                format!("truncated to {len}")
            } else {
                let at = (rng() % good.len() as u64) as usize;
                f[at] ^= 1 << (rng() % 8);
                format!("bit flip at {at}")
            };
            std::fs::write(&damaged, &f)?;
            match dsu::snapshot::restore(&damaged, Some(target)) {
                Err(dsu::Error::BadSnapshot { .. }) => {}
                other => {
                    return Err(Failure::Fail(format!(
                        "seed {SEED:#x} case {case} ({what}): {other:?}"
                    )));
                }
            }
            if case % 50 == 0 {
                ensure_eq!(
                    segment_names()?,
                    names,
                    "segments after case {case} ({what})"
                );
            }
        }
        ensure_eq!(
            segment_names()?,
            names,
            "segments after {CASES} damaged files"
        );

        // dsuctl's messages: truncated, corrupt, future version; nothing created.
        std::fs::write(&damaged, &good[..good.len() - 100])?;
        let err = fails(
            "dsuctl",
            &["restore", damaged.to_str().unwrap(), "--name", target],
            1,
        )?;
        ensure!(
            err.contains("it is truncated") && err.contains("nothing was restored"),
            "truncated: {err}"
        );
        let mut f = good.clone();
        let mid = good.len() / 2;
        f[mid] ^= 0x10;
        std::fs::write(&damaged, &f)?;
        let err = fails(
            "dsuctl",
            &["restore", damaged.to_str().unwrap(), "--name", target],
            1,
        )?;
        ensure!(
            err.contains("it is corrupt") && err.contains("use another copy"),
            "corrupt: {err}"
        );
        let err = fails("dsuctl", &["inspect", damaged.to_str().unwrap()], 1)?;
        ensure!(err.contains("it is corrupt"), "inspect corrupt: {err}");
        let mut f = good.clone();
        f[8..12].copy_from_slice(&2u32.to_le_bytes());
        std::fs::write(&damaged, &f)?;
        let err = fails(
            "dsuctl",
            &["restore", damaged.to_str().unwrap(), "--name", target],
            1,
        )?;
        ensure!(
            err.contains("written by a newer dsu (snapshot format version 2"),
            "future version: {err}"
        );
        ensure_eq!(segment_names()?, names, "segments after dsuctl's refusals");
        Ok(())
    })();
    destroy(seg);
    destroy(target);
    let _ = std::fs::remove_file(&damaged);
    result
}

/// A small seeded generator (splitmix64), so that a failing case can be replayed.
fn fastrand_lite(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[distributed_slice(TESTS)]
static RESTORE_FROM: VmTest = VmTest {
    name: "userspace::snapshot_restore_from",
    phase: Phase::Main,
    run: snapshot_restore_from,
};
fn snapshot_restore_from() -> TestResult {
    let seg = "us-snap-rf";
    destroy(seg);
    let d = dir()?;
    let (file, missing, corrupt) = (
        d.join("rf.dsusnap"),
        d.join("rf-missing.dsusnap"),
        d.join("rf-bad.dsusnap"),
    );
    let _ = std::fs::remove_file(&missing);
    let rf = |path: &Path, cmd: &[&str]| {
        let mut args = vec!["--segment", seg, "--restore-from", path.to_str().unwrap()];
        args.extend(cmd);
        ok("counter_v1", &args)
    };
    let result = (|| -> TestResult {
        let probe = populate(seg)?;
        ok("dsuctl", &["save", seg, file.to_str().unwrap()])?;
        probe.exit()?;
        // "Reboot": the segment is gone; the program restores it at start.
        destroy(seg);
        ensure_eq!(
            rf(&file, &["restored"])?,
            "restored=true",
            "first start after the reboot"
        );
        // The segment exists now: the file is not used again.
        ensure_eq!(rf(&file, &["restored"])?, "restored=false", "second start");
        let status = rf(&file, &["status"])?;
        ensure_eq!(
            field(&status, "counter::COUNTER"),
            Some("common".to_string()),
            "status: {status}"
        );
        ensure_eq!(rf(&file, &["get", "counter"])?, "4321", "counter");
        ensure_eq!(
            ok("heap_probe", &["--segment", seg, "deref"])?,
            HEAP_VALUE.to_string(),
            "heap after restore_from"
        );
        // No segment and no file: a first start, fresh.
        destroy(seg);
        ensure_eq!(rf(&missing, &["restored"])?, "restored=false", "no file");
        ensure_eq!(
            ok("counter_v1", &["--segment", seg, "get", "counter"])?,
            "0",
            "fresh start"
        );
        // No segment and a bad file: an error, never a fresh start; nothing created.
        destroy(seg);
        let mut f = std::fs::read(&file)?;
        let at = f.len() - 200;
        f[at] ^= 1;
        std::fs::write(&corrupt, &f)?;
        let err = fails(
            "counter_v1",
            &[
                "--segment",
                seg,
                "--restore-from",
                corrupt.to_str().unwrap(),
                "restored",
            ],
            1,
        )?;
        ensure!(
            err.contains("it is corrupt") && err.contains("nothing was restored"),
            "corrupt file: {err}"
        );
        ensure!(
            !segment_names()?.contains(&seg.to_string()),
            "a bad file created {seg}"
        );
        Ok(())
    })();
    destroy(seg);
    result
}

#[distributed_slice(TESTS)]
static PERIODIC: VmTest = VmTest {
    name: "userspace::snapshot_periodic",
    phase: Phase::Main,
    run: snapshot_periodic,
};
fn snapshot_periodic() -> TestResult {
    let seg = "us-snap-per";
    destroy(seg);
    let d = dir()?.join("periodic");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("unrelated.txt"), b"kept")?;
    let restored: Vec<String> = (0..3).map(|i| format!("us-snap-per-{i}")).collect();
    let result = (|| -> TestResult {
        let _probe = populate(seg)?;
        let out = ok(
            "dsuctl",
            &[
                "save",
                seg,
                d.to_str().unwrap(),
                "--every",
                "0.3",
                "--keep",
                "3",
                "--count",
                "5",
            ],
        )?;
        let saved = out
            .lines()
            .filter(|l| l.starts_with("saved segment"))
            .count();
        let removed = out.lines().filter(|l| l.starts_with("removed ")).count();
        ensure_eq!((saved, removed), (5, 2), "save --every output:\n{out}");
        let mut files: Vec<String> = std::fs::read_dir(&d)?
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "unrelated.txt")
            .collect();
        files.sort();
        ensure_eq!(files.len(), 3, "files kept: {files:?}");
        ensure!(
            d.join("unrelated.txt").exists(),
            "--keep removed an unrelated file"
        );
        for f in &files {
            ensure!(
                f.starts_with(&format!("{seg}.")) && f.ends_with("Z.dsusnap"),
                "file name {f}"
            );
        }
        // The kept ones are the newest: the names of the last three saves.
        let last3: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("saved segment {seg} to ")))
            // The time in the name has colons: the path ends at ".dsusnap:".
            .filter_map(|l| l.find(".dsusnap:").map(|end| &l[..end + ".dsusnap".len()]))
            .map(|p| {
                Path::new(p)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .skip(2)
            .collect();
        ensure_eq!(files, last3, "the newest three are kept");
        for (f, name) in files.iter().zip(&restored) {
            destroy(name);
            ok(
                "dsuctl",
                &["restore", d.join(f).to_str().unwrap(), "--name", name],
            )?;
            ensure_eq!(
                ok("counter_v1", &["--segment", name, "get", "counter"])?,
                "4321",
                "restored {f}"
            );
        }
        Ok(())
    })();
    destroy(seg);
    for name in &restored {
        destroy(name);
    }
    result
}

#[distributed_slice(TESTS)]
static C_API: VmTest = VmTest {
    name: "userspace::snapshot_c_api",
    phase: Phase::Main,
    run: snapshot_c_api,
};
fn snapshot_c_api() -> TestResult {
    let seg = "us-snap-c";
    destroy(seg);
    let d = dir()?;
    let (file, bad) = (d.join("c.dsusnap"), d.join("c-bad.dsusnap"));
    let result = (|| -> TestResult {
        let out = ok("csnapshot", &["save", seg, file.to_str().unwrap()])?;
        ensure!(out.starts_with("ok saved"), "csnapshot save: {out}");
        destroy(seg);
        let out = ok("csnapshot", &["restore", seg, file.to_str().unwrap()])?;
        ensure!(
            out.starts_with("ok restored counter=4242"),
            "csnapshot restore: {out}"
        );
        let f = std::fs::read(&file)?;
        std::fs::write(&bad, &f[..f.len() / 2])?;
        let out = ok("csnapshot", &["bad", bad.to_str().unwrap()])?;
        ensure!(out.contains("it is truncated"), "csnapshot bad: {out}");
        ensure!(
            !segment_names()?.contains(&"c-snap-bad".to_string()),
            "a bad file created c-snap-bad"
        );
        Ok(())
    })();
    destroy(seg);
    result
}

#[distributed_slice(TESTS)]
static HELD_LOCK: VmTest = VmTest {
    name: "userspace::snapshot_held_lock",
    phase: Phase::Main,
    run: snapshot_held_lock,
};
/// A process holds counter_v1's `dsu::sync::Mutex` while the segment is saved. In the
/// restored image the lock word still names that holder, which runs on but never releases
/// the copy: a locker of the restored segment must take it over (`owner-died=` the
/// holder's thread id, as after a SIGKILL at the instant) instead of waiting for ever. In
/// the live segment the holder is alive and maps it: a locker there keeps waiting (no
/// takeover of a live holder) until the holder is killed.
fn snapshot_held_lock() -> TestResult {
    let (seg, copy) = ("us-snap-held", "us-snap-held2");
    destroy(seg);
    destroy(copy);
    let file = dir()?.join("held.dsusnap");
    let mut holder: Option<std::process::Child> = None;
    let result = (|| -> TestResult {
        ensure_eq!(
            ok("counter_v1", &["--segment", seg, "lock"])?,
            "lock=1",
            "first lock"
        );
        let mut child = std::process::Command::new("counter_v1")
            .args(["--segment", seg, "hold-lock"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().unwrap();
        let pid = child.id();
        holder = Some(child);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        ensure_eq!(line.trim(), "locked 1", "holder");
        // The save looks for an instant with no lock held, in vain: every attempt finds
        // the holder's, and the last image is kept with it.
        let saved = json(&["save", seg, file.to_str().unwrap(), "--json"])?;
        ensure_eq!(
            (saved["attempts"].as_u64(), saved["held_locks"].as_u64()),
            (Some(dsu::snapshot::LOCK_ATTEMPTS as u64), Some(1)),
            "save while a lock is held: {saved}"
        );
        let once = json(&[
            "save",
            seg,
            file.to_str().unwrap(),
            "--lock-attempts",
            "1",
            "--json",
        ])?;
        ensure_eq!(
            (once["attempts"].as_u64(), once["held_locks"].as_u64()),
            (Some(1), Some(1)),
            "save --lock-attempts 1: {once}"
        );
        ok(
            "dsuctl",
            &["restore", file.to_str().unwrap(), "--name", copy],
        )?;
        // The copy: taken over, the holder's thread reported dead (its only thread).
        let mut restored = Server::start("counter_v1", &["--segment", copy])?;
        restored.send("lock")?;
        let reply = restored.reply("lock")?;
        ensure_eq!(
            reply,
            format!("lock=2 owner-died={pid}"),
            "lock of the restored copy while the original holder lives"
        );
        ensure_eq!(
            restored.cmd("lock")?,
            "lock=3",
            "the copy's lock afterwards"
        );
        restored.exit()?;
        // The original: its holder lives and maps it, so a locker waits, past several
        // questions to the module (the first after 100 ms, then 200, 400, 800 ms ...).
        let mut live = Server::start("counter_v1", &["--segment", seg])?;
        live.send("lock")?;
        if let Some(l) = live.try_line(std::time::Duration::from_secs(3)) {
            return Err(Failure::Fail(format!(
                "a locker of the live segment took the lock from its live holder: {l:?}"
            )));
        }
        let mut child = holder.take().unwrap();
        let killed = child.kill();
        child.wait()?;
        killed?;
        ensure_eq!(
            live.reply("lock")?,
            format!("lock=2 owner-died={pid}"),
            "lock of the live segment after the holder's SIGKILL"
        );
        live.exit()?;
        Ok(())
    })();
    if let Some(mut child) = holder {
        let _ = child.kill();
        let _ = child.wait();
    }
    destroy(seg);
    destroy(copy);
    let _ = std::fs::remove_file(&file);
    result
}
