//! Kernel module: RESOLVE. Added globals hold their initial value, common globals share
//! pages, a conflict changes nothing, invalid batches are refused whole, migrated entries
//! live beside the old ones, racing resolvers end with one entry, and the directory scales.

use crate::kmod_ioctl::*;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

#[distributed_slice(TESTS)]
static ADDED: VmTest = VmTest {
    name: "kmod_resolve::added_holds_initial_value",
    phase: Phase::Main,
    run: added,
};
fn added() -> TestResult {
    let name = unique("added");
    let h = Dsu::attached(&name)?;
    // Two pages and a bit, with a pattern.
    let init: Vec<u8> = (0..(2 * PAGE + 100)).map(|i| (i * 7 % 251) as u8).collect();
    let small = 0x1122_3344_5566_7788u64.to_ne_bytes();
    let vars = h.resolve_ok(vec![
        var("big", init.len() as u64, 0xb16, Some(&init)),
        var("small", 8, 0x5, Some(&small)),
        var("zero", 16, 0x0, None),
    ])?;
    ensure_eq!(
        vars.iter().map(|v| v.status).collect::<Vec<_>>(),
        vec![DSU_VAR_ADDED; 3],
        "statuses"
    );
    ensure_eq!(
        (vars[0].first_page, vars[0].page_count),
        (0, 3),
        "big's pages"
    );
    ensure_eq!(
        (vars[1].first_page, vars[1].page_count),
        (3, 1),
        "small's pages"
    );
    ensure_eq!(
        (vars[2].first_page, vars[2].page_count),
        (4, 1),
        "zero's pages"
    );
    // READ_VAR sees the initial bytes, whole and in parts.
    ensure!(
        h.read_var(&name, "big", 0xb16, 0, 0, init.len())? == init,
        "big's bytes"
    );
    ensure!(
        h.read_var(&name, "big", 0xb16, 0, 4000, 200)? == init[4000..4200],
        "big's bytes across a page"
    );
    ensure_eq!(
        h.read_var(&name, "big", 0xb16, 0, init.len() as u64 - 10, 100)?
            .len(),
        10,
        "read to the end"
    );
    ensure_eq!(
        h.read_var(&name, "big", 0xb16, 0, init.len() as u64 + 1, 1),
        Err(Errno::EINVAL),
        "offset past the end"
    );
    ensure_eq!(
        h.read_var(&name, "big", 0xdead, 0, 0, 1),
        Err(Errno::ENOENT),
        "another fingerprint"
    );
    ensure_eq!(
        h.read_var(&name, "nope", 0, 0, 0, 1),
        Err(Errno::ENOENT),
        "missing variable"
    );
    ensure_eq!(
        h.read_var(&name, "small", 0x5, 0, 0, 8)?,
        small.to_vec(),
        "small's bytes"
    );
    ensure_eq!(
        h.read_var(&name, "zero", 0, 0, 0, 16)?,
        vec![0; 16],
        "zero's bytes"
    );
    // And a version mapping them sees the same, zero beyond the variable's size.
    h.bind("1.0", &[0, 1, 2, 3, 4], 0)?;
    let m = h.map(5)?;
    // SAFETY: The mapping is 5 pages long.
    let mapped = unsafe { std::slice::from_raw_parts(m.ptr, init.len()) };
    ensure!(mapped == &init[..], "big through the mapping");
    ensure_eq!(
        m.get(3 * PAGE),
        0x1122_3344_5566_7788,
        "small through the mapping"
    );
    // SAFETY: In bounds.
    let rest = unsafe { std::slice::from_raw_parts(m.ptr.add(init.len()), 3 * PAGE - init.len()) };
    ensure!(rest.iter().all(|b| *b == 0), "page tail not zero");
    // The directory records the creator.
    let (list, total) = h.list_variables(&name, 0, 8)?;
    ensure_eq!(total, 3, "variables");
    ensure_eq!(cstr(&list[1].name), "small", "creation order");
    ensure_eq!(
        (list[1].size, list[1].fingerprint, list[1].align),
        (8, 0x5, 8),
        "small's record"
    );
    // Created by the handle's RESOLVE, labelled by its BIND.
    ensure_eq!(
        (cstr(&list[1].created_label), list[1].created_by > 0),
        ("1.0".to_string(), true),
        "created by the handle that then bound as version 1.0"
    );
    ensure!(list[1].created_ns > 0, "creation time");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static COMMON: VmTest = VmTest {
    name: "kmod_resolve::common_global",
    phase: Phase::Main,
    run: common,
};
fn common() -> TestResult {
    let name = unique("common");
    let a = Dsu::attached(&name)?;
    let va = a.resolve_ok(vec![
        var("shared", 24, 42, Some(&[1u8; 24])),
        var("only_a", 8, 1, None),
    ])?;
    a.bind("v1", &[va[0].first_page], 0)?;
    let b = Dsu::attached(&name)?;
    let (r, res) = {
        let mut vars = vec![
            var("shared", 24, 42, Some(&[9u8; 24])),
            var("only_b", 8, 2, None),
        ];
        let (r, res) = b.resolve(&mut vars);
        ensure_eq!(vars[0].status, DSU_VAR_COMMON, "shared is common");
        ensure_eq!(
            (vars[0].first_page, vars[0].page_count),
            (va[0].first_page, 1),
            "same pages"
        );
        ensure_eq!(vars[1].status, DSU_VAR_ADDED, "only_b is added");
        (r, res)
    };
    ensure_eq!(res, Ok(()), "RESOLVE");
    ensure_eq!((r.added, r.conflicts), (1, 0), "counts");
    // The common global kept its first value: the second initial value is ignored.
    ensure_eq!(
        b.read_var(&name, "shared", 42, 0, 0, 24)?,
        vec![1u8; 24],
        "value of the common global"
    );
    // Bound versions label what they create.
    let vb = b.resolve_ok(vec![var("later", 8, 3, None)])?;
    ensure_eq!(vb[0].status, DSU_VAR_ADDED, "later");
    let (list, _) = a.list_variables(&name, 0, 16)?;
    let later = list
        .iter()
        .find(|v| cstr(&v.name) == "later")
        .ok_or("later not listed")?;
    ensure_eq!(
        (cstr(&later.created_label), later.created_by),
        (String::new(), 0),
        "created by a handle that never bound"
    );
    let va2 = a.resolve_ok(vec![var("by_v1", 8, 3, None)])?;
    let (list, _) = a.list_variables(&name, 0, 16)?;
    let by_v1 = list
        .iter()
        .find(|v| cstr(&v.name) == "by_v1")
        .ok_or("by_v1 not listed")?;
    ensure_eq!(cstr(&by_v1.created_label), "v1", "created by version v1");
    ensure_eq!(va2[0].status, DSU_VAR_ADDED, "by_v1");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static CONFLICT: VmTest = VmTest {
    name: "kmod_resolve::conflict_changes_nothing",
    phase: Phase::Main,
    run: conflict,
};
fn conflict() -> TestResult {
    let name = unique("conflict");
    let h = Dsu::attached(&name)?;
    h.resolve_ok(vec![
        var("a", 8, 1, Some(&5u64.to_ne_bytes())),
        var("b", 16, 2, None),
    ])?;
    let before = h.segment_info(&name)?.ok_or("not listed")?;
    let mut vars = vec![
        var("new1", 8, 3, None),
        var("a", 8, 1, None),  // common
        var("b", 32, 2, None), // other size
        var("a2", PAGE as u64 * 4, 3, None),
    ];
    let (r, res) = h.resolve(&mut vars);
    ensure_eq!(res, Err(Errno::EEXIST), "size conflict");
    ensure_eq!(vars[2].status, DSU_VAR_CONFLICT_SIZE, "b's status");
    ensure_eq!(
        (vars[2].found_size, vars[2].found_fingerprint),
        (16, 2),
        "b as found"
    );
    ensure_eq!(vars[1].status, DSU_VAR_COMMON, "a's status");
    ensure_eq!(vars[0].status, DSU_VAR_PENDING, "new1 is not created");
    ensure_eq!((r.added, r.conflicts), (0, 1), "counts");
    let mut vars = vec![var("new2", 8, 3, None), var("b", 16, 99, None)];
    ensure_eq!(h.resolve(&mut vars).1, Err(Errno::EEXIST), "type conflict");
    ensure_eq!(vars[1].status, DSU_VAR_CONFLICT_TYPE, "b's status");
    ensure_eq!(vars[1].found_fingerprint, 2, "b's fingerprint as found");
    let after = h.segment_info(&name)?.ok_or("not listed")?;
    ensure_eq!(
        (after.pages, after.variables),
        (before.pages, before.variables),
        "segment unchanged"
    );
    ensure_eq!(
        h.read_var(&name, "new1", 3, 0, 0, 8),
        Err(Errno::ENOENT),
        "new1 absent"
    );
    ensure_eq!(
        h.read_var(&name, "a", 1, 0, 0, 8)?,
        5u64.to_ne_bytes().to_vec(),
        "a unchanged"
    );
    cleanup(&name);
    Ok(())
}

fn shmem_kib() -> Result<i64, crate::Failure> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("Shmem:"))
        .ok_or("no Shmem in /proc/meminfo")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("bad Shmem line")?
        .parse()?)
}

#[distributed_slice(TESTS)]
static FREED: VmTest = VmTest {
    name: "kmod_resolve::failed_batch_frees_pages",
    phase: Phase::Main,
    run: freed,
};
fn freed() -> TestResult {
    let name = unique("freed");
    let h = Dsu::attached(&name)?;
    let before = shmem_kib()?;
    // 16 MiB whose initial bytes run out after one page: every page is allocated, the copy
    // fails, nothing may stay allocated.
    let one_page = vec![1u8; PAGE];
    let mut vars = vec![
        var("big", 16 << 20, 1, Some(&one_page)),
        var("small", 8, 1, None),
    ];
    let area = page_then_guard()?;
    vars[0].init = area.ptr as u64;
    ensure_eq!(
        h.resolve(&mut vars).1,
        Err(Errno::EFAULT),
        "initial bytes end early"
    );
    drop(area);
    let after = shmem_kib()?;
    ensure!(
        after - before < 1024,
        "Shmem grew by {} KiB after a failed RESOLVE",
        after - before
    );
    ensure_eq!(h.list_variables(&name, 0, 4)?.1, 0, "nothing added");
    // A good one is allocated, and freed with the segment.
    let vars = h.resolve_ok(vec![var("big", 16 << 20, 1, None)])?;
    ensure_eq!(vars[0].page_count, 4096, "pages");
    // (Counters are per-CPU batched: allow a few pages of drift.)
    let grown = shmem_kib()?;
    ensure!(
        grown - before >= 15 << 10,
        "Shmem did not grow by 16 MiB: {before} -> {after} -> {grown} KiB"
    );
    drop(h);
    Dsu::open()?.destroy(&name)?;
    // The file is released when the segment goes (fput may finish at syscall return).
    std::thread::sleep(std::time::Duration::from_millis(100));
    let end = shmem_kib()?;
    ensure!(
        end - before < 1024,
        "Shmem still {} KiB up after DESTROY",
        end - before
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static INVALID: VmTest = VmTest {
    name: "kmod_resolve::invalid_entries",
    phase: Phase::Main,
    run: invalid,
};
fn invalid() -> TestResult {
    let name = unique("invalid");
    let h = Dsu::attached(&name)?;
    let cases: Vec<(&str, dsu_var)> = vec![
        ("size 0", var("x", 0, 1, None)),
        (
            "align 0",
            dsu_var {
                align: 0,
                ..var("x", 8, 1, None)
            },
        ),
        (
            "align 3",
            dsu_var {
                align: 3,
                ..var("x", 8, 1, None)
            },
        ),
        (
            "align above a page",
            dsu_var {
                align: 2 * PAGE as u64,
                ..var("x", 8, 1, None)
            },
        ),
        (
            "unknown flag",
            dsu_var {
                flags: 2,
                ..var("x", 8, 1, None)
            },
        ),
    ];
    for (what, bad) in cases {
        let mut vars = vec![var("fine", 8, 1, None), bad];
        ensure_eq!(h.resolve(&mut vars).1, Err(Errno::EINVAL), "{what}");
        ensure_eq!(vars[1].status, DSU_VAR_INVALID, "{what}: status");
        ensure_eq!(vars[0].status, DSU_VAR_PENDING, "{what}: the valid entry");
    }
    let mut vars = vec![
        var("dup", 8, 1, None),
        var("other", 8, 1, None),
        var("dup", 8, 1, None),
    ];
    ensure_eq!(
        h.resolve(&mut vars).1,
        Err(Errno::EINVAL),
        "duplicate names"
    );
    ensure_eq!(vars[2].status, DSU_VAR_INVALID, "the duplicate");
    ensure_eq!(h.list_variables(&name, 0, 4)?.1, 0, "nothing created");
    // Page-aligned entries are fine.
    let ok = h.resolve_ok(vec![dsu_var {
        align: PAGE as u64,
        ..var("aligned", 8, 1, None)
    }])?;
    ensure_eq!(ok[0].status, DSU_VAR_ADDED, "align of a page");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static MIGRATE: VmTest = VmTest {
    name: "kmod_resolve::migrate_beside_old",
    phase: Phase::Main,
    run: migrate,
};
fn migrate() -> TestResult {
    let name = unique("migrate");
    let h = Dsu::attached(&name)?;
    let old = h.resolve_ok(vec![var("cfg", 8, 100, Some(&1u64.to_ne_bytes()))])?;
    let v2 = 2u64.to_ne_bytes();
    let mut new = [0u8; 16];
    new[..8].copy_from_slice(&v2);
    let mig = h.resolve_ok(vec![dsu_var {
        flags: DSU_VAR_MIGRATE,
        ..var("cfg", 16, 200, Some(&new))
    }])?;
    ensure_eq!(mig[0].status, DSU_VAR_ADDED, "migrated entry added");
    ensure!(
        mig[0].first_page != old[0].first_page,
        "migrated entry has its own pages"
    );
    // Both are found; the old one unchanged.
    let again = h.resolve_ok(vec![var("cfg", 8, 100, None)])?;
    ensure_eq!(
        (again[0].status, again[0].first_page),
        (DSU_VAR_COMMON, old[0].first_page),
        "old entry"
    );
    let again = h.resolve_ok(vec![dsu_var {
        flags: DSU_VAR_MIGRATE,
        ..var("cfg", 16, 200, None)
    }])?;
    ensure_eq!(
        (again[0].status, again[0].first_page),
        (DSU_VAR_COMMON, mig[0].first_page),
        "new entry"
    );
    ensure_eq!(
        h.read_var(&name, "cfg", 100, 0, 0, 8)?,
        1u64.to_ne_bytes().to_vec(),
        "old value"
    );
    ensure_eq!(
        h.read_var(&name, "cfg", 0, DSU_READ_ANY_FINGERPRINT, 0, 16)?,
        new.to_vec(),
        "newest entry"
    );
    ensure_eq!(h.list_variables(&name, 0, 4)?.1, 2, "two entries");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static RACE: VmTest = VmTest {
    name: "kmod_resolve::racing_resolvers_one_entry",
    phase: Phase::Main,
    run: race,
};
fn race() -> TestResult {
    let name = unique("race");
    let names: Vec<String> = (0..200).map(|i| format!("g{i}")).collect();
    let go = Channel::new()?;
    let mut kids = Vec::new();
    for k in 0..3u8 {
        let names = names.clone();
        let name = name.clone();
        let go = &go;
        kids.push(spawn(move || {
            let h = Dsu::attached(&name)?;
            go.recv()?;
            for (i, n) in names.iter().enumerate() {
                let init = [k + 1; 8];
                let v = h.resolve_ok(vec![var(n, 8, i as u64, Some(&init))])?;
                ensure!(
                    v[0].status == DSU_VAR_ADDED || v[0].status == DSU_VAR_COMMON,
                    "status {}",
                    v[0].status
                );
            }
            Ok(())
        }));
    }
    // Attach first so that the segment exists, then let them race.
    let h = Dsu::attached(&name)?;
    for _ in 0..3 {
        go.send(1)?;
    }
    for k in kids {
        join(k, "resolver")?;
    }
    let (list, total) = h.list_variables(&name, 0, DSU_LIST_MAX)?;
    ensure_eq!(total, 200, "one entry per name");
    let info = h.segment_info(&name)?.ok_or("not listed")?;
    ensure_eq!(info.pages, 200, "one page per entry: losers' pages freed");
    for v in &list {
        let b = h.read_var(&name, &cstr(&v.name), v.fingerprint, 0, 0, 8)?;
        ensure!(
            b.iter().all(|x| *x == b[0]) && (1..=3).contains(&b[0]),
            "value of {} is one resolver's: {b:?}",
            cstr(&v.name)
        );
    }
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static MANY: VmTest = VmTest {
    name: "kmod_resolve::ten_thousand_variables",
    phase: Phase::Main,
    run: many,
};
fn many() -> TestResult {
    let name = unique("many");
    let h = Dsu::attached(&name)?;
    let start = std::time::Instant::now();
    let n = 10_000;
    let all: Vec<dsu_var> = (0..n)
        .map(|i| var(&format!("variable_{i:05}"), 8, i as u64, None))
        .collect();
    let mut batch_times = Vec::new();
    for chunk in all.chunks(2500) {
        let t = std::time::Instant::now();
        let out = h.resolve_ok(chunk.to_vec())?;
        batch_times.push(t.elapsed());
        ensure!(
            out.iter().all(|v| v.status == DSU_VAR_ADDED),
            "batch not all added"
        );
    }
    // With linear lookups the last batch (7 500 entries to search) would take about seven
    // times as long as the first; with the tree it takes about as long.
    let (first, last) = (batch_times[0], batch_times[3]);
    ensure!(
        last < first * 5,
        "last batch {last:?} against first {first:?}: lookups grow with the directory"
    );
    // Resolving them all again finds every one.
    let out = h.resolve_ok(all.clone())?;
    ensure!(
        out.iter()
            .enumerate()
            .all(|(i, v)| v.status == DSU_VAR_COMMON && v.first_page == i as u64),
        "second pass not all common"
    );
    let took = start.elapsed();
    // Paged listing.
    let mut seen = 0;
    let mut start_at = 0;
    loop {
        let (page, total) = h.list_variables(&name, start_at, DSU_LIST_MAX)?;
        ensure_eq!(total, n as u32, "total");
        if page.is_empty() {
            break;
        }
        ensure_eq!(
            cstr(&page[0].name),
            format!("variable_{start_at:05}"),
            "order"
        );
        seen += page.len();
        start_at += page.len() as u32;
    }
    ensure_eq!(seen, n, "listed");
    ensure!(took.as_secs() < 300, "10 000 variables took {took:?}");
    cleanup(&name);
    Ok(())
}
