//! Kernel module: restore (DSU_IOC_RESTORE, RESTORE_VAR, RESTORE_HEAP, RESTORE_COMMIT, and
//! HEAP/HEAP_GROW on a restoring handle). A restored segment is invisible until COMMIT,
//! which publishes it whole; a version then finds every variable COMMON with the restored
//! bytes and the heap at its base. A name taken is EEXIST with nothing changed, a restore
//! closed before COMMIT gives everything back, limits answer as RESOLVE's and HEAP_GROW's,
//! ownership is the restorer's, names are per IPC namespace, and wrong states are EBADFD.

use crate::kmod_ioctl::*;
use crate::robust_raw::in_child;
use crate::util::{as_user, insmod, memory_cgroup, rmmod, set_rlimit, with_module_params};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

const P: u64 = PAGE as u64;

/// The RESTORE ioctls, raw (also used by `snapshot_kv`'s negative control).
pub mod raw {
    use dsu_uapi::*;
    nix::ioctl_write_ptr!(restore, DSU_IOC_MAGIC, DSU_IOC_NR_RESTORE, dsu_restore);
    nix::ioctl_readwrite!(
        restore_var,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_RESTORE_VAR,
        dsu_restore_var
    );
    nix::ioctl_write_ptr!(
        restore_heap,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_RESTORE_HEAP,
        dsu_restore_heap
    );
    nix::ioctl_none!(restore_commit, DSU_IOC_MAGIC, DSU_IOC_NR_RESTORE_COMMIT);
}

/// A heap window address for test `slot`: 1 GiB apart, away from kmod_heap's windows.
fn base(slot: u64) -> u64 {
    0x3800_0000_0000 + slot * (1 << 30)
}

/// A RESTORE struct for `name` with `mode`.
fn restore_struct(name: &str, mode: u32) -> dsu_restore {
    dsu_restore {
        size: size_of::<dsu_restore>() as u32,
        mode,
        segment: cname(name),
        ..Default::default()
    }
}

/// DSU_IOC_RESTORE with a struct as given.
fn restore_raw(d: &Dsu, r: &dsu_restore) -> Sys<()> {
    // SAFETY: `r` is a live struct of the size its `size` field claims (or a wrong size,
    // which the kernel must refuse).
    unsafe { raw::restore(d.fd(), r) }.map(drop)
}

/// DSU_IOC_RESTORE of `name` with `mode`.
fn restore(d: &Dsu, name: &str, mode: u32) -> Sys<()> {
    restore_raw(d, &restore_struct(name, mode))
}

/// A RESTORE_VAR entry (align 8; `value` must outlive the call).
fn rvar(name: &str, size: u64, fingerprint: u64, value: Option<&[u8]>) -> dsu_restore_var {
    dsu_restore_var {
        size: size_of::<dsu_restore_var>() as u32,
        var_size: size,
        align: 8,
        fingerprint,
        value: value.map_or(0, |v| v.as_ptr() as u64),
        name: cname(name),
        ..Default::default()
    }
}

/// DSU_IOC_RESTORE_VAR with an entry as given.
fn restore_var_raw(d: &Dsu, v: &mut dsu_restore_var) -> Sys<()> {
    // SAFETY: `v` is a live struct; its pointers are checked by the kernel.
    unsafe { raw::restore_var(d.fd(), v) }.map(drop)
}

/// DSU_IOC_RESTORE_VAR; returns (first_page, page_count).
fn restore_var(d: &Dsu, mut v: dsu_restore_var) -> Sys<(u64, u64)> {
    restore_var_raw(d, &mut v)?;
    Ok((v.first_page, v.page_count))
}

/// DSU_IOC_RESTORE_HEAP with a struct as given.
fn restore_heap_raw(d: &Dsu, h: &dsu_restore_heap) -> Sys<()> {
    // SAFETY: `h` is a live struct; its buffer pointer is checked by the kernel.
    unsafe { raw::restore_heap(d.fd(), h) }.map(drop)
}

/// DSU_IOC_RESTORE_HEAP of `bytes` at `offset`.
fn restore_heap(d: &Dsu, offset: u64, bytes: &[u8]) -> Sys<()> {
    restore_heap_raw(
        d,
        &dsu_restore_heap {
            size: size_of::<dsu_restore_heap>() as u32,
            offset,
            length: bytes.len() as u64,
            buf: bytes.as_ptr() as u64,
            ..Default::default()
        },
    )
}

/// DSU_IOC_RESTORE_COMMIT.
fn commit(d: &Dsu) -> Sys<()> {
    // SAFETY: No argument.
    unsafe { raw::restore_commit(d.fd()) }.map(drop)
}

/// `len` bytes of a pattern that differs per `seed`, with no zero page.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + seed as usize) % 251) as u8 + 1)
        .collect()
}

/// The bytes of a mapping.
fn bytes(m: &Map, offset: usize, len: usize) -> Vec<u8> {
    // SAFETY: The range is inside the live mapping; the bytes are copied at once.
    unsafe { std::slice::from_raw_parts(m.ptr.add(offset), len) }.to_vec()
}

/// What the full restore puts in: (name, size, fingerprint, bytes or zeros).
fn image() -> Vec<(&'static str, u64, u64, Option<Vec<u8>>)> {
    vec![
        ("counter", 8, 0x11, Some(42u64.to_ne_bytes().to_vec())),
        ("table", 3 * P + 100, 0x22, Some(pattern(3 * PAGE + 100, 3))),
        ("zeros", 5000, 0x33, None),
        ("migrated", 16, 0x44, Some(pattern(16, 9))),
        // The same name with another size and fingerprint: a migrated variable beside it.
        ("migrated", 24, 0x45, Some(pattern(24, 11))),
    ]
}

#[distributed_slice(TESTS)]
static FULL: VmTest = VmTest {
    name: "kmod_restore::full_restore_then_version_reads",
    phase: Phase::Main,
    run: full,
};
/// Restores five variables (one all zeros, two fingerprints of one name, a type
/// description, created_ns and label) and a heap with two written ranges; nothing is
/// visible before COMMIT. After it, LIST shows the segment (mode, owner, heap) and the
/// entries as given, and a version that RESOLVEs the same variables finds each COMMON on
/// the restored pages, binds, reads every byte through its mapping, and maps the heap at
/// the restored base with the restored bytes; the committed handle gets the version's
/// event.
fn full() -> TestResult {
    let name = unique("rst-full");
    let r = (|| {
        let h = Dsu::open()?;
        restore(&h, &name, 0o640)?;
        let other = Dsu::open()?;
        ensure!(other.segment_info(&name)?.is_none(), "listed before COMMIT");
        let desc = b"u64 counter\n";
        let mut pages = Vec::new();
        for (i, (n, size, fp, value)) in image().iter().enumerate() {
            let mut v = rvar(n, *size, *fp, value.as_deref());
            v.created_ns = 1_000_000 + i as u64;
            v.created_label = cname("v7");
            if i == 0 {
                v.type_desc = desc.as_ptr() as u64;
                v.type_desc_len = desc.len() as u32;
            }
            let (first, count) = restore_var(&h, v)?;
            ensure_eq!(count, size.div_ceil(P), "{n}: page count");
            pages.push((first, count));
        }
        ensure_eq!(
            restore_var(&h, rvar("counter", 16, 0x11, None)),
            Err(Errno::EEXIST),
            "same name and fingerprint again"
        );
        ensure_eq!(
            h.heap(base(0), 64 * P),
            Ok((base(0), 64 * P, 0, true)),
            "HEAP on the restoring handle"
        );
        ensure_eq!(h.heap_grow(10 * P), Ok(10 * P), "HEAP_GROW");
        let (a, b) = (pattern(2 * PAGE, 5), pattern(10, 6));
        restore_heap(&h, 100, &a)?;
        restore_heap(&h, 7 * P + 5, &b)?;
        ensure_eq!(
            other.attach(&name, DSU_ATTACH_MUST_EXIST, 0),
            Err(Errno::ENOENT),
            "ATTACH before COMMIT"
        );
        commit(&h)?;

        let info = other
            .segment_info(&name)?
            .ok_or("not listed after COMMIT")?;
        ensure_eq!(
            (info.mode, info.uid, info.variables, info.pages),
            (0o640, 0, 5, pages.iter().map(|p| p.1).sum::<u64>()),
            "segment record"
        );
        ensure_eq!(
            (info.heap_base, info.heap_reserve, info.heap_size),
            (base(0), 64 * P, 10 * P),
            "heap record"
        );
        let (vars, total) = other.list_variables(&name, 0, 16)?;
        ensure_eq!(total, 5, "variables listed");
        for (i, v) in vars.iter().enumerate() {
            let (n, size, fp, _) = &image()[i];
            ensure_eq!(
                (
                    cstr(&v.name),
                    v.size,
                    v.fingerprint,
                    v.created_ns,
                    cstr(&v.created_label)
                ),
                (
                    n.to_string(),
                    *size,
                    *fp,
                    1_000_000 + i as u64,
                    "v7".to_string()
                ),
                "entry {i}"
            );
            ensure_eq!((v.first_page, v.page_count), pages[i], "entry {i}: pages");
        }
        ensure_eq!(
            other.read_var(&name, "counter", 0x11, DSU_READ_TYPE_DESC, 0, 64),
            Ok(desc.to_vec()),
            "type description"
        );

        // A version with the same variables (the newest "migrated").
        let v = Dsu::open()?;
        v.attach(&name, DSU_ATTACH_MUST_EXIST, 0)?;
        let wanted: Vec<usize> = vec![0, 1, 2, 4];
        let resolved = v.resolve_ok(
            wanted
                .iter()
                .map(|&i| {
                    let (n, size, fp, _) = &image()[i];
                    var(n, *size, *fp, None)
                })
                .collect(),
        )?;
        let mut map = Vec::new();
        for (k, &i) in wanted.iter().enumerate() {
            ensure_eq!(
                (resolved[k].status, resolved[k].first_page),
                (DSU_VAR_COMMON, pages[i].0),
                "{}: found common on the restored pages",
                image()[i].0
            );
            map.extend(pages[i].0..pages[i].0 + pages[i].1);
        }
        v.bind("after-restore", &map, 0)?;
        let m = v.map(map.len())?;
        let mut at = 0;
        for &i in &wanted {
            let (n, size, _, value) = &image()[i];
            let want = value.clone().unwrap_or_else(|| vec![0; *size as usize]);
            ensure!(
                bytes(&m, at, *size as usize) == want,
                "{n}: the version reads other bytes than restored"
            );
            at += pages[i].1 as usize * PAGE;
        }
        ensure_eq!(
            other.read_var(&name, "migrated", 0x44, 0, 0, 16),
            Ok(pattern(16, 9)),
            "the older migrated entry"
        );
        let hv = v.heap(0, 0)?;
        ensure_eq!(hv, (base(0), 64 * P, 10 * P, false), "the version's heap");
        let mh = v.map_heap(hv.0, hv.1)?;
        let mut want = vec![0u8; 10 * PAGE];
        want[100..100 + a.len()].copy_from_slice(&a);
        want[7 * PAGE + 5..7 * PAGE + 15].copy_from_slice(&b);
        ensure!(
            bytes(&mh, 0, 10 * PAGE) == want,
            "heap bytes through the window differ from those restored"
        );
        ensure_eq!(other.read_heap(&name, 0, 10 * PAGE), Ok(want), "READ_HEAP");
        ensure!(
            h.readable(1000)?,
            "the committed handle got no event of the version"
        );
        ensure_eq!(
            h.events()?.first().map(|e| e.kind),
            Some(DSU_EVENT_VERSION_BOUND),
            "event"
        );
        drop(h);
        ensure_eq!(m.get(0), 42, "after the restoring handle is closed");
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static EEXIST: VmTest = VmTest {
    name: "kmod_restore::name_taken_eexist_changes_nothing",
    phase: Phase::Main,
    run: eexist,
};
/// RESTORE of an existing name is EEXIST and leaves the handle fresh; a name taken by an
/// ATTACH between RESTORE and COMMIT makes COMMIT EEXIST, the handle stays restoring (its
/// RESTORE_VAR works, LIST is EBADFD), and the existing segment keeps its pages, variables,
/// bytes and heap.
fn eexist() -> TestResult {
    let name = unique("rst-exist");
    let r = (|| {
        let owner = Dsu::attached(&name)?;
        let v = owner.resolve_ok(vec![var("x", 8, 1, Some(&5u64.to_ne_bytes()))])?;
        owner.heap(base(1), 4 * P)?;
        owner.heap_grow(P)?;
        let before = owner.segment_info(&name)?.ok_or("not listed")?;

        let h = Dsu::open()?;
        ensure_eq!(restore(&h, &name, 0o600), Err(Errno::EEXIST), "RESTORE");
        // Still fresh: it can restore another name.
        let other = unique("rst-exist-other");
        restore(&h, &other, 0o600)?;
        drop(h);

        // Taken between RESTORE and COMMIT.
        let late = unique("rst-late");
        let h = Dsu::open()?;
        restore(&h, &late, 0o600)?;
        restore_var(&h, rvar("x", 8, 1, Some(&9u64.to_ne_bytes())))?;
        restore_var(&h, rvar("y", 3 * P, 2, None))?;
        h.heap(base(2), 8 * P)?;
        h.heap_grow(4 * P)?;
        let winner = Dsu::attached(&late)?;
        winner.resolve_ok(vec![var("x", 8, 1, Some(&7u64.to_ne_bytes()))])?;
        let late_before = winner.segment_info(&late)?.ok_or("not listed")?;
        ensure_eq!(commit(&h), Err(Errno::EEXIST), "COMMIT onto a taken name");
        ensure_eq!(
            h.list_segments(0, 1).map(drop),
            Err(Errno::EBADFD),
            "LIST on the handle after a failed COMMIT (still restoring)"
        );
        restore_var(&h, rvar("z", 8, 3, None))?;
        ensure_eq!(commit(&h), Err(Errno::EEXIST), "COMMIT again");
        let late_after = winner.segment_info(&late)?.ok_or("not listed")?;
        ensure_eq!(
            (
                late_after.pages,
                late_after.variables,
                late_after.heap_base,
                late_after.heap_size
            ),
            (late_before.pages, 1, 0, 0),
            "the winner's segment after the failed COMMIT"
        );
        ensure_eq!(
            winner.read_var(&late, "x", 1, 0, 0, 8),
            Ok(7u64.to_ne_bytes().to_vec()),
            "the winner's bytes"
        );
        drop(h);
        cleanup(&late);

        let after = owner.segment_info(&name)?.ok_or("not listed")?;
        ensure_eq!(
            (after.pages, after.variables, after.heap_size, after.uid),
            (before.pages, before.variables, before.heap_size, before.uid),
            "the existing segment"
        );
        ensure_eq!(
            owner.read_var(&name, "x", 1, 0, 0, 8),
            Ok(5u64.to_ne_bytes().to_vec()),
            "its bytes"
        );
        ensure_eq!(v[0].status, DSU_VAR_ADDED, "setup");
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static CONCURRENT: VmTest = VmTest {
    name: "kmod_restore::concurrent_restores_one_commits",
    phase: Phase::Main,
    run: concurrent,
};
/// Two handles restore one name: the first COMMIT wins, the second is EEXIST and the
/// segment holds the winner's bytes. Then, 20 rounds of two processes racing RESTORE and
/// COMMIT of one name with different bytes: exactly one COMMIT succeeds each round, and
/// the segment holds that one's bytes; meanwhile a third process ATTACHes with
/// MUST_EXIST and sees either nothing or the whole segment (all 16 variables).
fn concurrent() -> TestResult {
    let name = unique("rst-race");
    let r = (|| {
        let (a, b) = (Dsu::open()?, Dsu::open()?);
        restore(&a, &name, 0o600)?;
        restore(&b, &name, 0o600)?;
        restore_var(&a, rvar("g", 8, 1, Some(&1u64.to_ne_bytes())))?;
        restore_var(&b, rvar("g", 8, 1, Some(&2u64.to_ne_bytes())))?;
        commit(&b)?;
        ensure_eq!(commit(&a), Err(Errno::EEXIST), "the second COMMIT");
        ensure_eq!(
            b.read_var(&name, "g", 1, 0, 0, 8),
            Ok(2u64.to_ne_bytes().to_vec()),
            "the winner's bytes"
        );
        drop((a, b));
        cleanup(&name);

        for round in 0..20u64 {
            let (go, ready) = (Channel::new()?, Channel::new()?);
            let racers: Vec<_> = (0..2u64)
                .map(|k| {
                    let (n, go, ready) = (name.clone(), &go, &ready);
                    in_child_code(move || {
                        let h = Dsu::open().map_err(|e| e as i32)?;
                        restore(&h, &n, 0o600).map_err(|e| e as i32)?;
                        for i in 0..16u64 {
                            let val = (round * 10 + k).to_ne_bytes();
                            restore_var(&h, rvar(&format!("v{i}"), 8, i, Some(&val)))
                                .map_err(|e| e as i32)?;
                        }
                        ready.send(1).map_err(|e| e as i32)?;
                        go.recv().map_err(|e| e as i32)?;
                        match commit(&h) {
                            Ok(()) => Ok(100 + k as i32),
                            Err(Errno::EEXIST) => Ok(0),
                            Err(e) => Err(e as i32),
                        }
                    })
                })
                .collect();
            let n = name.clone();
            let watcher = in_child_code(move || {
                for _ in 0..100_000 {
                    let h = Dsu::open().map_err(|e| e as i32)?;
                    match h.attach(&n, DSU_ATTACH_MUST_EXIST, 0) {
                        Err(Errno::ENOENT) => continue,
                        Err(e) => return Err(e as i32),
                        Ok(_) => {}
                    }
                    let (_, total) = h.list_variables(&n, 0, 0).map_err(|e| e as i32)?;
                    return Ok(total as i32);
                }
                Ok(-1)
            });
            // Both restored before either may commit.
            ensure_eq!(ready.recv(), Ok(1), "round {round}: a racer restored");
            ensure_eq!(ready.recv(), Ok(1), "round {round}: both racers restored");
            go.send(1)?;
            go.send(1)?;
            let codes: Vec<i32> = racers
                .into_iter()
                .map(wait_code)
                .collect::<Result<_, _>>()?;
            let winners: Vec<i32> = codes.iter().copied().filter(|c| *c >= 100).collect();
            ensure_eq!(
                winners.len(),
                1,
                "round {round}: COMMITs that won: {codes:?}"
            );
            let k = (winners[0] - 100) as u64;
            let seen = wait_code(watcher)?;
            ensure!(
                seen == 16 || seen == -1,
                "round {round}: an ATTACH saw {seen} of 16 variables"
            );
            let d = Dsu::open()?;
            for i in 0..16u64 {
                ensure_eq!(
                    d.read_var(&name, &format!("v{i}"), i, 0, 0, 8),
                    Ok((round * 10 + k).to_ne_bytes().to_vec()),
                    "round {round}: v{i}"
                );
            }
            d.destroy(&name)?;
        }
        Ok(())
    })();
    cleanup(&name);
    r
}

/// Forks a child running `f`: its `Ok(code)` (0..=255 after the shift below) or an errno.
fn in_child_code(f: impl FnOnce() -> Result<i32, i32>) -> i32 {
    // SAFETY: The suite is single-threaded; the child runs `f` and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match f() {
            Ok(c) => (c + 1).clamp(0, 200),
            Err(e) => 201 + e.clamp(0, 54),
        };
        // SAFETY: Leaves without the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for a child of [`in_child_code`]: its code, or a failure naming its errno.
fn wait_code(pid: i32) -> Result<i32, Failure> {
    match crate::robust_raw::wait_child(pid) {
        Ok(c) if c <= 200 => Ok(c - 1),
        Ok(c) => Err(Failure::Fail(format!(
            "child failed: {}",
            Errno::from_raw(c - 201)
        ))),
        Err(sig) => Err(Failure::Fail(format!("child killed by signal {sig}"))),
    }
}

/// The memory cgroup's memory.current.
fn current(cg: &str) -> Result<u64, Failure> {
    Ok(std::fs::read_to_string(format!("{cg}/memory.current"))?
        .trim()
        .parse()?)
}

#[distributed_slice(TESTS)]
static CLOSE: VmTest = VmTest {
    name: "kmod_restore::close_before_commit_frees",
    phase: Phase::Main,
    run: close,
};
/// A restore closed before COMMIT gives everything back: with max_user_pages=300 and
/// max_user_segments=1 (and max_segments=1), uid 1000 restores 256 pages of variables and
/// 32 of heap, closes, and can do it again (the per-user page and segment charges and the
/// segment count were released), nothing is listed; in a memory cgroup, memory.current
/// rises by the 288 pages and falls back to within 128 pages of where it was.
fn close() -> TestResult {
    with_module_params(
        "max_user_pages=300 max_user_segments=1 max_segments=1",
        || {
            let cg = memory_cgroup("dsu-restore-close")?;
            let cgp = cg.clone();
            let r = as_user(1000, 1000, &[], move || {
                let name = unique("rst-close");
                for round in 0..3 {
                    let h = Dsu::open()?;
                    restore(&h, &name, 0o600)?;
                    restore_var(&h, rvar("big", 200 * P, 1, None))?;
                    restore_var(&h, rvar("more", 56 * P, 2, Some(&pattern(56 * PAGE, 1))))?;
                    h.heap(base(3), 64 * P)?;
                    h.heap_grow(32 * P)?;
                    restore_heap(&h, 0, &pattern(32 * PAGE, 2))?;
                    ensure_eq!(
                        Dsu::open()?.attach(&unique("rst-other"), 0, 0),
                        Err(Errno::ENOSPC),
                        "round {round}: the restoring segment counts (max_user_segments)"
                    );
                    drop(h);
                    ensure!(
                        Dsu::open()?.segment_info(&name)?.is_none(),
                        "round {round}: listed after close"
                    );
                }
                Ok(())
            });
            r?;
            // The memory cgroup, as root in a child.
            let status = in_child(move || {
                let run = || -> Result<(), String> {
                    // SAFETY: getpid has no preconditions.
                    let pid = unsafe { libc::getpid() };
                    std::fs::write(format!("{cgp}/cgroup.procs"), pid.to_string())
                        .map_err(|e| e.to_string())?;
                    let name = unique("rst-memcg");
                    // Allocated (and touched) before the first reading and kept until the last:
                    // memory malloc gives back stays charged to the cgroup.
                    let bytes = pattern(256 * PAGE, 4);
                    let before = current(&cgp).map_err(|e| format!("{e:?}"))?;
                    let h = Dsu::open().map_err(|e| e.to_string())?;
                    restore(&h, &name, 0o600).map_err(|e| e.to_string())?;
                    restore_var(&h, rvar("big", 256 * P, 1, Some(&bytes)))
                        .map_err(|e| e.to_string())?;
                    h.heap(base(4), 64 * P).map_err(|e| e.to_string())?;
                    h.heap_grow(32 * P).map_err(|e| e.to_string())?;
                    let during = current(&cgp).map_err(|e| format!("{e:?}"))?;
                    drop(h);
                    let after = current(&cgp).map_err(|e| format!("{e:?}"))?;
                    drop(bytes);
                    // The cgroup charges in per-CPU batches of 64 pages, so `before` may already
                    // hold up to 64 pages precharged that the restore then uses.
                    if during < before + 224 * P {
                        return Err(format!("memory.current {before} -> {during}: not charged"));
                    }
                    if after > before + 128 * P {
                        return Err(format!(
                            "memory.current {before} -> {during} -> {after}: not given back"
                        ));
                    }
                    Ok(())
                };
                match run() {
                    Ok(()) => 0,
                    Err(m) => {
                        println!("kmod_restore::close memcg child: {m}");
                        1
                    }
                }
            });
            let _ = std::fs::remove_dir(&cg);
            ensure_eq!(status, Ok(0), "memory cgroup child (see the console)");
            Ok(())
        },
    )
}

#[distributed_slice(TESTS)]
static LIMITS: VmTest = VmTest {
    name: "kmod_restore::limits_enomem_enospc",
    phase: Phase::Main,
    run: limits,
};
/// RESTORE_VAR answers limits as RESOLVE does: past max_segment_pages or max_variables
/// ENOSPC, past max_user_pages ENOSPC, past RLIMIT_MEMLOCK (uid 1000) ENOMEM, and the
/// restore goes on after a refusal; RESTORE past max_segments or max_user_segments is
/// ENOSPC; HEAP_GROW past the reserve, and past memory.max, is ENOMEM; a heap window above
/// max_heap_pages is E2BIG.
fn limits() -> TestResult {
    with_module_params(
        "max_segment_pages=20 max_variables=4 max_segments=2 max_heap_pages=32",
        || {
            let name = unique("rst-lim");
            let h = Dsu::open()?;
            restore(&h, &name, 0o600)?;
            restore_var(&h, rvar("a", 10 * P, 1, None))?;
            ensure_eq!(
                restore_var(&h, rvar("b", 11 * P, 2, None)),
                Err(Errno::ENOSPC),
                "past max_segment_pages"
            );
            restore_var(&h, rvar("b", 6 * P, 2, None))?;
            restore_var(&h, rvar("c", 8, 3, None))?;
            restore_var(&h, rvar("d", 8, 4, None)).map_err(|e| format!("d: {e}"))?;
            ensure_eq!(
                restore_var(&h, rvar("e", 8, 5, None)),
                Err(Errno::ENOSPC),
                "past max_variables"
            );
            ensure_eq!(
                h.heap(base(5), 33 * P),
                Err(Errno::E2BIG),
                "window above max_heap_pages"
            );
            h.heap(base(5), 8 * P)?;
            ensure_eq!(h.heap_grow(9 * P), Err(Errno::ENOMEM), "past the reserve");
            // Root is exempt from max_user_pages (CAP_SYS_RESOURCE): uid 1000 below.
            let h2 = Dsu::open()?;
            restore(&h2, &unique("rst-lim2"), 0o600)?;
            ensure_eq!(
                restore(&Dsu::open()?, &unique("rst-lim3"), 0o600),
                Err(Errno::ENOSPC),
                "past max_segments (two restoring)"
            );
            commit(&h)?;
            drop((h, h2));
            cleanup(&name);
            Ok(())
        },
    )?;
    with_module_params("max_user_pages=16 max_user_segments=1", || {
        as_user(1000, 1000, &[], || {
            let h = Dsu::open()?;
            restore(&h, &unique("rst-user"), 0o600)?;
            ensure_eq!(
                restore(&Dsu::open()?, &unique("rst-user2"), 0o600),
                Err(Errno::ENOSPC),
                "past max_user_segments"
            );
            restore_var(&h, rvar("a", 10 * P, 1, None))?;
            ensure_eq!(
                restore_var(&h, rvar("b", 7 * P, 2, None)),
                Err(Errno::ENOSPC),
                "past max_user_pages"
            );
            set_rlimit(libc::RLIMIT_MEMLOCK, 12 * P)?;
            ensure_eq!(
                restore_var(&h, rvar("b", 3 * P, 2, None)),
                Err(Errno::ENOMEM),
                "past RLIMIT_MEMLOCK"
            );
            restore_var(&h, rvar("b", 2 * P, 2, None))?;
            h.heap(base(6), 8 * P)?;
            ensure_eq!(
                h.heap_grow(P),
                Err(Errno::ENOMEM),
                "heap growth past RLIMIT_MEMLOCK"
            );
            Ok(())
        })
    })?;
    // memory.max: 1 MiB of room, 4 MiB of variable asked.
    let cg = memory_cgroup("dsu-restore-memcg")?;
    let cgp = cg.clone();
    let status = in_child(move || {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        if std::fs::write(format!("{cgp}/cgroup.procs"), pid.to_string()).is_err() {
            return 10;
        }
        let Ok(h) = Dsu::open() else { return 11 };
        if restore(&h, &unique("rst-memcg-max"), 0o600).is_err() {
            return 12;
        }
        let Ok(cur) = current(&cgp) else { return 13 };
        if std::fs::write(format!("{cgp}/memory.max"), (cur + (1 << 20)).to_string()).is_err() {
            return 14;
        }
        match restore_var(&h, rvar("big", 1024 * P, 1, None)) {
            Err(Errno::ENOMEM) => {}
            Ok(_) => return 15,
            Err(_) => return 16,
        }
        if h.heap(base(7), 1024 * P).is_err() {
            return 17;
        }
        match h.heap_grow(1024 * P) {
            Err(Errno::ENOMEM) => {}
            Ok(_) => return 18,
            Err(_) => return 19,
        }
        // Still restoring, and a small variable fits.
        match restore_var(&h, rvar("small", 8, 2, None)) {
            Ok(_) => 0,
            Err(_) => 20,
        }
    });
    let _ = std::fs::remove_dir(&cg);
    ensure_eq!(
        status,
        Ok(0),
        "past memory.max (15/18: granted, 16/19: another errno, signal: OOM-killed)"
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static OWNERSHIP: VmTest = VmTest {
    name: "kmod_restore::ownership_and_namespaces",
    phase: Phase::Main,
    run: ownership,
};
/// uid 1000 restores a segment with mode 0600: it is owned by uid/gid 1000 with that mode;
/// uid 1001 cannot attach it (EPERM, or EACCES naming the owner), uid 1000 can. A restore in
/// another IPC namespace is invisible in the first, and may use a name the first has.
fn ownership() -> TestResult {
    let name = unique("rst-own");
    let r = (|| {
        let n = name.clone();
        let (tx, rx) = (Channel::new()?, Channel::new()?);
        let (txr, rxr) = (&tx, &rx);
        let keeper = spawn(move || {
            as_user(1000, 1000, &[], || {
                let h = Dsu::open()?;
                restore(&h, &n, 0o600)?;
                restore_var(&h, rvar("g", 8, 1, Some(&77u64.to_ne_bytes())))?;
                commit(&h)?;
                txr.send(1)?;
                ensure_eq!(rxr.recv(), Ok(2), "parent done");
                Ok(())
            })
        });
        ensure_eq!(tx.recv(), Ok(1), "restored");
        let info = Dsu::open()?.segment_info(&name)?.ok_or("not listed")?;
        ensure_eq!(
            (info.uid, info.gid, info.mode),
            (1000, 1000, 0o600),
            "owner and mode"
        );
        let n = name.clone();
        as_user(1001, 1001, &[], move || {
            let d = Dsu::open()?;
            ensure_eq!(d.attach(&n, 0, 0), Err(Errno::EPERM), "uid 1001 ATTACH");
            ensure_eq!(
                d.attach_owner(&n, 0, 0, 1000),
                Err(Errno::EACCES),
                "uid 1001 ATTACH naming the owner"
            );
            Ok(())
        })?;
        let n = name.clone();
        as_user(1000, 1000, &[], move || {
            let d = Dsu::open()?;
            ensure_eq!(d.attach(&n, 0, 0), Ok(false), "the owner's ATTACH");
            ensure_eq!(
                d.read_var(&n, "g", 1, 0, 0, 8),
                Ok(77u64.to_ne_bytes().to_vec()),
                "bytes"
            );
            Ok(())
        })?;
        rx.send(2)?;
        join(keeper, "uid 1000 restorer")?;

        // Another IPC namespace.
        let n = name.clone();
        let (tx, rx) = (Channel::new()?, Channel::new()?);
        let (txr, rxr) = (&tx, &rx);
        let ns_name = unique("rst-ns");
        let nsn = ns_name.clone();
        let child = spawn(move || {
            // SAFETY: unshare has no memory preconditions; the child is single-threaded.
            if unsafe { libc::unshare(libc::CLONE_NEWIPC) } != 0 {
                return Err(Failure::Fail(format!("unshare: {}", Errno::last())));
            }
            let h = Dsu::open()?;
            restore(&h, &nsn, 0o600)?;
            restore_var(&h, rvar("g", 8, 1, None))?;
            commit(&h)?;
            // The first namespace's name is free here.
            let h2 = Dsu::open()?;
            restore(&h2, &n, 0o600)?;
            commit(&h2)?;
            txr.send(1)?;
            ensure_eq!(rxr.recv(), Ok(2), "parent looked");
            ensure!(
                Dsu::open()?.segment_info(&nsn)?.is_some(),
                "not listed in its own namespace"
            );
            h.destroy(&nsn)?;
            h.destroy(&n)?;
            Ok(())
        });
        ensure_eq!(tx.recv(), Ok(1), "restored in the other namespace");
        let d = Dsu::open()?;
        ensure!(
            d.segment_info(&ns_name)?.is_none(),
            "another namespace's restore is listed"
        );
        ensure_eq!(
            d.attach(&ns_name, DSU_ATTACH_MUST_EXIST, 0),
            Err(Errno::ENOENT),
            "ATTACH of another namespace's restore"
        );
        ensure_eq!(
            Dsu::open()?.read_var(&name, "g", 1, 0, 0, 8),
            Ok(77u64.to_ne_bytes().to_vec()),
            "the first namespace's segment is unchanged"
        );
        rx.send(2)?;
        join(child, "restorer in another IPC namespace")?;
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static STATES: VmTest = VmTest {
    name: "kmod_restore::wrong_states_ebadfd",
    phase: Phase::Main,
    run: states,
};
/// RESTORE_VAR, RESTORE_HEAP and COMMIT on a fresh or attached handle, RESTORE on an
/// attached or restoring one, and every other ioctl (and mmap) on a restoring handle are
/// EBADFD; a committed handle is attached (RESTORE_* and COMMIT EBADFD again); unknown
/// commands stay ENOTTY.
fn states() -> TestResult {
    let name = unique("rst-state");
    let r = (|| {
        let fresh = Dsu::open()?;
        ensure_eq!(
            restore_var(&fresh, rvar("g", 8, 1, None)),
            Err(Errno::EBADFD),
            "RESTORE_VAR on a fresh handle"
        );
        ensure_eq!(
            restore_heap(&fresh, 0, &[1]),
            Err(Errno::EBADFD),
            "RESTORE_HEAP on a fresh handle"
        );
        ensure_eq!(
            commit(&fresh),
            Err(Errno::EBADFD),
            "COMMIT on a fresh handle"
        );
        let att_name = unique("rst-state-att");
        let attached = Dsu::attached(&att_name)?;
        attached.destroy(&att_name)?;
        ensure_eq!(
            restore(&attached, &name, 0o600),
            Err(Errno::EBADFD),
            "RESTORE on an attached handle"
        );
        ensure_eq!(
            restore_var(&attached, rvar("g", 8, 1, None)),
            Err(Errno::EBADFD),
            "RESTORE_VAR on an attached handle"
        );
        ensure_eq!(commit(&attached), Err(Errno::EBADFD), "COMMIT on attached");

        let h = Dsu::open()?;
        restore(&h, &name, 0o600)?;
        let (first, _) = restore_var(&h, rvar("g", 8, 1, None))?;
        ensure_eq!(
            restore(&h, &name, 0o600),
            Err(Errno::EBADFD),
            "RESTORE twice"
        );
        ensure_eq!(h.attach(&name, 0, 0), Err(Errno::EBADFD), "ATTACH");
        ensure_eq!(
            h.resolve(&mut [var("g", 8, 1, None)]).1,
            Err(Errno::EBADFD),
            "RESOLVE"
        );
        ensure_eq!(h.bind("x", &[first], 0), Err(Errno::EBADFD), "BIND");
        ensure_eq!(h.list_segments(0, 1).map(drop), Err(Errno::EBADFD), "LIST");
        ensure_eq!(
            h.list_variables(&name, 0, 1).map(drop),
            Err(Errno::EBADFD),
            "LIST_VARIABLES"
        );
        ensure_eq!(
            h.list_versions(&name, 0, 1).map(drop),
            Err(Errno::EBADFD),
            "LIST_VERSIONS"
        );
        ensure_eq!(
            h.read_var(&name, "g", 1, 0, 0, 8).map(drop),
            Err(Errno::EBADFD),
            "READ_VAR"
        );
        ensure_eq!(h.destroy(&name), Err(Errno::EBADFD), "DESTROY");
        ensure_eq!(
            h.setattr(&name, DSU_SETATTR_MODE, 0o644, 0, 0),
            Err(Errno::EBADFD),
            "SETATTR"
        );
        ensure_eq!(h.heap_discard(0, P), Err(Errno::EBADFD), "HEAP_DISCARD");
        ensure_eq!(
            h.read_heap(&name, 0, 8).map(drop),
            Err(Errno::EBADFD),
            "READ_HEAP"
        );
        ensure_eq!(h.ready(), Err(Errno::EBADFD), "READY");
        ensure_eq!(
            crate::kmod_snapshot::snapshot(&h, &name).map(drop),
            Err(Errno::EBADFD),
            "SNAPSHOT"
        );
        ensure_eq!(
            h.gc(&name, DSU_GC_DRY_RUN, 0).map(drop),
            Err(Errno::EBADFD),
            "GC"
        );
        ensure_eq!(h.map(1).map(drop), Err(Errno::EBADFD), "mmap");
        ensure_eq!(
            h.ioctl_cmd(request_none(0x1F), 0),
            Err(Errno::ENOTTY),
            "an unknown command"
        );
        ensure_eq!(h.heap(0, 0), Err(Errno::ENOENT), "HEAP with no heap");
        ensure_eq!(h.heap_grow(P), Err(Errno::ENOENT), "HEAP_GROW with no heap");
        ensure_eq!(
            restore_heap(&h, 0, &[1]),
            Err(Errno::ENOENT),
            "RESTORE_HEAP with no heap"
        );
        commit(&h)?;
        ensure_eq!(commit(&h), Err(Errno::EBADFD), "COMMIT twice");
        ensure_eq!(
            restore_var(&h, rvar("h", 8, 2, None)),
            Err(Errno::EBADFD),
            "RESTORE_VAR after COMMIT"
        );
        ensure_eq!(
            restore(&h, &name, 0o600),
            Err(Errno::EBADFD),
            "RESTORE after COMMIT"
        );
        // Attached now: the usual ioctls work.
        ensure_eq!(
            h.resolve_ok(vec![var("g", 8, 1, None)])?[0].status,
            DSU_VAR_COMMON,
            "RESOLVE after COMMIT"
        );
        h.bind("after", &[first], 0)?;
        h.map(1)?;
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static EINVAL: VmTest = VmTest {
    name: "kmod_restore::einval_paths",
    phase: Phase::Main,
    run: einval,
};
/// Every malformed RESTORE, RESTORE_VAR and RESTORE_HEAP: EINVAL (E2BIG for a type
/// description over DSU_TYPE_DESC_MAX and a struct with a non-zero tail, EFAULT for a bad
/// value pointer), with nothing created: the restore goes on and COMMITs with only the
/// good entries.
fn einval() -> TestResult {
    let name = unique("rst-inval");
    let r = (|| {
        let h = Dsu::open()?;
        let bad_restore: Vec<(&str, dsu_restore)> = vec![
            (
                "flags",
                dsu_restore {
                    flags: 1,
                    ..restore_struct(&name, 0o600)
                },
            ),
            (
                "pad",
                dsu_restore {
                    __pad: 1,
                    ..restore_struct(&name, 0o600)
                },
            ),
            ("mode 01000", restore_struct(&name, 0o1000)),
            ("empty name", restore_struct("", 0o600)),
            ("name with a slash", restore_struct("a/b", 0o600)),
            (
                "name unterminated",
                dsu_restore {
                    segment: [b'a' as core::ffi::c_char; 64],
                    ..restore_struct(&name, 0o600)
                },
            ),
            (
                "size short",
                dsu_restore {
                    size: 79,
                    ..restore_struct(&name, 0o600)
                },
            ),
        ];
        for (what, r) in &bad_restore {
            ensure_eq!(restore_raw(&h, r), Err(Errno::EINVAL), "RESTORE: {what}");
        }
        restore(&h, &name, 0o600)?;

        let desc_bad = b"a\x01b";
        let long = vec![b'a'; DSU_TYPE_DESC_MAX as usize + 1];
        let good = rvar("g", 8, 1, None);
        let mut cases: Vec<(&str, dsu_restore_var, Errno)> = vec![
            ("flags", dsu_restore_var { flags: 1, ..good }, Errno::EINVAL),
            ("pad", dsu_restore_var { __pad: 1, ..good }, Errno::EINVAL),
            (
                "first_page",
                dsu_restore_var {
                    first_page: 1,
                    ..good
                },
                Errno::EINVAL,
            ),
            (
                "page_count",
                dsu_restore_var {
                    page_count: 1,
                    ..good
                },
                Errno::EINVAL,
            ),
            (
                "size 0",
                dsu_restore_var {
                    var_size: 0,
                    ..good
                },
                Errno::EINVAL,
            ),
            (
                "align 0",
                dsu_restore_var { align: 0, ..good },
                Errno::EINVAL,
            ),
            (
                "align 3",
                dsu_restore_var { align: 3, ..good },
                Errno::EINVAL,
            ),
            (
                "align 2 pages",
                dsu_restore_var {
                    align: 2 * P,
                    ..good
                },
                Errno::EINVAL,
            ),
            ("empty name", rvar("", 8, 1, None), Errno::EINVAL),
            (
                "name with a control byte",
                rvar("a\x07", 8, 1, None),
                Errno::EINVAL,
            ),
            (
                "name unterminated",
                dsu_restore_var {
                    name: [b'n' as core::ffi::c_char; 128],
                    ..good
                },
                Errno::EINVAL,
            ),
            (
                "label with a control byte",
                dsu_restore_var {
                    created_label: cname("v\x01"),
                    ..good
                },
                Errno::EINVAL,
            ),
            (
                "label unterminated",
                dsu_restore_var {
                    created_label: [b'l' as core::ffi::c_char; 32],
                    ..good
                },
                Errno::EINVAL,
            ),
            (
                "type_desc without a length",
                dsu_restore_var {
                    type_desc: desc_bad.as_ptr() as u64,
                    ..good
                },
                Errno::EINVAL,
            ),
            (
                "type_desc_len without a pointer",
                dsu_restore_var {
                    type_desc_len: 3,
                    ..good
                },
                Errno::EINVAL,
            ),
            (
                "type_desc with a control byte",
                dsu_restore_var {
                    type_desc: desc_bad.as_ptr() as u64,
                    type_desc_len: 3,
                    ..good
                },
                Errno::EINVAL,
            ),
            (
                "type_desc too long",
                dsu_restore_var {
                    type_desc: long.as_ptr() as u64,
                    type_desc_len: long.len() as u32,
                    ..good
                },
                Errno::E2BIG,
            ),
            (
                "size short",
                dsu_restore_var { size: 200, ..good },
                Errno::EINVAL,
            ),
            (
                "value unreadable",
                dsu_restore_var { value: 8, ..good },
                Errno::EFAULT,
            ),
        ];
        for (what, v, errno) in cases.iter_mut() {
            ensure_eq!(restore_var_raw(&h, v), Err(*errno), "RESTORE_VAR: {what}");
        }
        restore_var(&h, good)?;
        h.heap(base(8), 8 * P)?;
        h.heap_grow(2 * P)?;
        let buf = [7u8; 16];
        let hp = |offset: u64, length: u64| dsu_restore_heap {
            size: size_of::<dsu_restore_heap>() as u32,
            offset,
            length,
            buf: buf.as_ptr() as u64,
            ..Default::default()
        };
        let heap_cases: Vec<(&str, dsu_restore_heap, Errno)> = vec![
            (
                "flags",
                dsu_restore_heap {
                    flags: 1,
                    ..hp(0, 8)
                },
                Errno::EINVAL,
            ),
            ("length 0", hp(0, 0), Errno::EINVAL),
            ("past heap_size", hp(2 * P - 8, 16), Errno::EINVAL),
            ("at heap_size", hp(2 * P, 1), Errno::EINVAL),
            ("overflow", hp(u64::MAX - 4, 8), Errno::EINVAL),
            (
                "size short",
                dsu_restore_heap {
                    size: 8,
                    ..hp(0, 8)
                },
                Errno::EINVAL,
            ),
            (
                "buf unreadable",
                dsu_restore_heap { buf: 8, ..hp(0, 8) },
                Errno::EFAULT,
            ),
        ];
        for (what, r, errno) in &heap_cases {
            ensure_eq!(restore_heap_raw(&h, r), Err(*errno), "RESTORE_HEAP: {what}");
        }
        ensure_eq!(
            h.heap(base(9), 8 * P).map(|x| x.0),
            Ok(base(8)),
            "HEAP again returns the heap"
        );
        restore_heap(&h, 2 * P - 16, &buf)?;
        commit(&h)?;
        let info = h.segment_info(&name)?.ok_or("not listed")?;
        ensure_eq!((info.variables, info.pages), (1, 1), "only the good entry");
        ensure_eq!(
            h.read_heap(&name, 2 * P - 16, 16),
            Ok(buf.to_vec()),
            "heap bytes at the end"
        );
        // A window refused like on an attached handle.
        let h2 = Dsu::open()?;
        restore(&h2, &unique("rst-inval2"), 0o600)?;
        ensure_eq!(
            h2.heap(base(10) + 1, 8 * P),
            Err(Errno::EINVAL),
            "HEAP: base not page-aligned"
        );
        ensure_eq!(h2.heap(base(10), 0), Err(Errno::EINVAL), "HEAP: no reserve");
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static RELOAD: VmTest = VmTest {
    name: "kmod_restore::after_module_reload",
    phase: Phase::Main,
    run: reload,
};
/// A restored segment does not survive an unload (a restoring handle pins the module like
/// any fd); after a reload the same name restores again, with the new bytes.
fn reload() -> TestResult {
    let name = "rst-reload";
    let h = Dsu::open()?;
    restore(&h, name, 0o600)?;
    restore_var(&h, rvar("g", 8, 1, Some(&1u64.to_ne_bytes())))?;
    ensure!(rmmod().is_err(), "rmmod with a restoring handle open");
    commit(&h)?;
    drop(h);
    rmmod()?;
    insmod("")?;
    let h = Dsu::open()?;
    ensure!(h.segment_info(name)?.is_none(), "survived a reload");
    restore(&h, name, 0o600)?;
    restore_var(&h, rvar("g", 8, 1, Some(&2u64.to_ne_bytes())))?;
    commit(&h)?;
    let r = (|| {
        ensure_eq!(
            h.read_var(name, "g", 1, 0, 0, 8),
            Ok(2u64.to_ne_bytes().to_vec()),
            "bytes after the second restore"
        );
        Ok(())
    })();
    drop(h);
    cleanup(name);
    r
}
