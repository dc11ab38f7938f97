//! Kernel module: BIND and mmap. Two processes with different layouts share common globals,
//! both PTE strategies work, mmap arguments are checked, three versions run at once, and
//! fork, munmap and close retire versions (LIST_VERSIONS counts).

use crate::kmod_ioctl::*;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

/// Resolves globals a (1 page), b (1 page) and c (2 pages) and returns their first pages.
fn globals(h: &Dsu) -> Result<[u64; 3], crate::Failure> {
    let v = h.resolve_ok(vec![
        var("a", 8, 0xa, Some(&11u64.to_ne_bytes())),
        var("b", 8, 0xb, Some(&22u64.to_ne_bytes())),
        var("c", 2 * PAGE as u64, 0xc, None),
    ])?;
    Ok([v[0].first_page, v[1].first_page, v[2].first_page])
}

#[distributed_slice(TESTS)]
static LAYOUTS: VmTest = VmTest {
    name: "kmod_binding::two_layouts_share_globals",
    phase: Phase::Main,
    run: layouts,
};
fn layouts() -> TestResult {
    let name = unique("layout");
    let to_child = Channel::new()?;
    let to_parent = Channel::new()?;
    // Version 1 (parent): [a, b]. Version 2 (child): [c0, c1, b, a], plus its own new global.
    let parent = Dsu::attached(&name)?;
    let [a, b, _] = globals(&parent)?;
    parent.bind("1.0", &[a, b], 0)?;
    let m1 = parent.map(2)?;
    ensure_eq!(
        (m1.get(0), m1.get(PAGE)),
        (11, 22),
        "initial values in version 1"
    );

    let child = {
        let name = name.clone();
        let (to_child, to_parent) = (&to_child, &to_parent);
        spawn(move || {
            let h = Dsu::attached(&name)?;
            let [a, b, c] = globals(&h)?;
            let d = h.resolve_ok(vec![var("d_new_in_v2", 8, 0xd, Some(&44u64.to_ne_bytes()))])?;
            ensure_eq!(d[0].status, DSU_VAR_ADDED, "added global of version 2");
            h.bind("2.0", &[c, c + 1, b, a, d[0].first_page], DSU_BIND_PREFAULT)?;
            let m2 = h.map(5)?;
            ensure_eq!(
                (m2.get(3 * PAGE), m2.get(2 * PAGE)),
                (11, 22),
                "common globals at other offsets"
            );
            ensure_eq!(m2.get(4 * PAGE), 44, "added global holds its initial value");
            m2.set(3 * PAGE, 1111); // a, written by version 2
            to_parent.send(1)?;
            to_child.recv()?;
            ensure_eq!(m2.get(2 * PAGE), 2222, "b as written by version 1");
            Ok(())
        })
    };
    to_parent.recv()?;
    ensure_eq!(m1.get(0), 1111, "a as written by version 2");
    m1.set(PAGE, 2222);
    to_child.send(1)?;
    join(child, "version 2")?;
    ensure_eq!(
        parent.read_var(&name, "a", 0xa, 0, 0, 8)?,
        1111u64.to_ne_bytes().to_vec(),
        "READ_VAR of a"
    );
    // Two mappings of one version in one process share too.
    let m1b = parent.map(2)?;
    m1b.set(0, 5);
    ensure_eq!(m1.get(0), 5, "second mapping");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static MMAP_ARGS: VmTest = VmTest {
    name: "kmod_binding::mmap_arguments",
    phase: Phase::Main,
    run: mmap_args,
};
fn mmap_args() -> TestResult {
    let name = unique("mmap");
    let h = Dsu::attached(&name)?;
    let [a, b, _] = globals(&h)?;
    h.bind("1", &[a, b], 0)?;
    for prot in [
        libc::PROT_READ | libc::PROT_WRITE,
        libc::PROT_READ,
        libc::PROT_WRITE,
        libc::PROT_NONE,
        libc::PROT_READ | libc::PROT_EXEC,
    ] {
        for flags in [libc::MAP_PRIVATE, libc::MAP_PRIVATE | libc::MAP_POPULATE] {
            // SAFETY: A fresh mapping chosen by the kernel; unmapped below if it succeeds.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), 2 * PAGE, prot, flags, h.fd(), 0) };
            if p != libc::MAP_FAILED {
                // SAFETY: We just mapped it.
                unsafe { libc::munmap(p, 2 * PAGE) };
                return Err(crate::Failure::Fail(format!(
                    "MAP_PRIVATE succeeded: prot {prot:#x} flags {flags:#x}"
                )));
            }
            ensure_eq!(
                Errno::last(),
                Errno::EINVAL,
                "MAP_PRIVATE prot {prot:#x} flags {flags:#x}"
            );
        }
    }
    ensure_eq!(
        h.map(1).map(|_| ()),
        Err(Errno::EINVAL),
        "shorter than the map"
    );
    ensure_eq!(
        h.map(3).map(|_| ()),
        Err(Errno::EINVAL),
        "longer than the map"
    );
    ensure_eq!(
        h.map_with(1, libc::MAP_SHARED, PAGE as i64).map(|_| ()),
        Err(Errno::EINVAL),
        "offset"
    );
    let m = h.map(2)?;
    // mremap may not grow it.
    // SAFETY: Asks the kernel to grow our mapping in place or move it; it must refuse.
    let r = unsafe { libc::mremap(m.ptr.cast(), 2 * PAGE, 3 * PAGE, libc::MREMAP_MAYMOVE) };
    ensure!(r == libc::MAP_FAILED, "mremap grew the mapping");
    // A read-only fd cannot give a shared writable mapping; the kernel says EACCES itself.
    let ro = Dsu::open_flags(libc::O_RDONLY)?;
    ro.attach(&name, 0, 0)?;
    ensure_eq!(
        ro.bind("ro", &[a], 0).map(|_| ()),
        Ok(()),
        "bind on a read-only fd"
    );
    ensure_eq!(
        ro.map(1).map(|_| ()),
        Err(Errno::EACCES),
        "writable mapping of a read-only fd"
    );
    drop(m);
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static PREFAULT: VmTest = VmTest {
    name: "kmod_binding::fault_and_prefault",
    phase: Phase::Main,
    run: prefault,
};
fn prefault() -> TestResult {
    let name = unique("prefault");
    let h = Dsu::attached(&name)?;
    let pages = 256;
    let v = h.resolve_ok(vec![var("array", (pages * PAGE) as u64, 1, None)])?;
    let map: Vec<u64> = (0..pages as u64).map(|i| v[0].first_page + i).collect();
    let f = Dsu::attached(&name)?;
    f.bind("fault", &map, 0)?;
    let p = Dsu::attached(&name)?;
    p.bind("prefault", &map, DSU_BIND_PREFAULT)?;
    let mf = f.map(pages)?;
    let mp = p.map(pages)?;
    for i in 0..pages {
        mf.set(i * PAGE + 8, i as u64 * 3);
    }
    for i in 0..pages {
        ensure_eq!(
            mp.get(i * PAGE + 8),
            i as u64 * 3,
            "page {i} through the prefaulted mapping"
        );
    }
    // Reversed map: page i shows segment page pages-1-i.
    let rev: Vec<u64> = map.iter().rev().copied().collect();
    let r = Dsu::attached(&name)?;
    r.bind("reversed", &rev, 0)?;
    let mr = r.map(pages)?;
    ensure_eq!(
        mr.get(8),
        (pages as u64 - 1) * 3,
        "first page of the reversed map"
    );
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static THREE: VmTest = VmTest {
    name: "kmod_binding::three_concurrent_versions",
    phase: Phase::Main,
    run: three,
};
fn three() -> TestResult {
    let name = unique("three");
    // One pipe per step: a fast child must not take a byte meant for a slow one.
    let (go, done) = (Channel::new()?, Channel::new()?);
    let ready = Channel::new()?;
    let mut kids = Vec::new();
    for (k, label) in ["1.0", "1.1", "2.0"].into_iter().enumerate() {
        let name = name.clone();
        let (go, done, ready) = (&go, &done, &ready);
        kids.push(spawn(move || {
            let h = Dsu::attached(&name)?;
            let v = h.resolve_ok(vec![
                var("counter", 8, 7, None),
                var(&format!("private_{k}"), 8, 7, None),
            ])?;
            // Different layouts: version k puts the counter at page k.
            let mut map = vec![v[1].first_page; 3];
            map[k] = v[0].first_page;
            h.bind(label, &map, if k == 1 { DSU_BIND_PREFAULT } else { 0 })?;
            let m = h.map(3)?;
            ready.send(1)?;
            go.recv()?;
            for _ in 0..10_000 {
                m.atomic(k * PAGE)
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            ready.send(2)?;
            done.recv()?;
            Ok(())
        }));
    }
    for _ in 0..3 {
        match ready.recv() {
            Ok(b) => ensure_eq!(b, 1, "child ready"),
            Err(e) => {
                return Err(crate::Failure::Fail(format!(
                    "waiting for the children: {e}: {}",
                    where_are(&kids)
                )));
            }
        }
    }
    let h = Dsu::open()?;
    let (versions, total) = h.list_versions(&name, 0, 16)?;
    ensure_eq!(total, 3, "live versions");
    let mut labels: Vec<String> = versions.iter().map(|v| cstr(&v.label)).collect();
    labels.sort();
    ensure_eq!(labels, vec!["1.0", "1.1", "2.0"], "labels");
    ensure!(
        versions
            .iter()
            .all(|v| v.mappings == 1 && v.pages == 3 && v.pid > 0),
        "version records: {versions:?}"
    );
    for _ in 0..3 {
        go.send(1)?;
    }
    for _ in 0..3 {
        match ready.recv() {
            Ok(b) => ensure_eq!(b, 2, "child done"),
            Err(e) => {
                return Err(crate::Failure::Fail(format!(
                    "waiting for the increments: {e}: {}",
                    where_are(&kids)
                )));
            }
        }
    }
    ensure_eq!(
        h.read_var(&name, "counter", 7, 0, 0, 8)?,
        30_000u64.to_ne_bytes().to_vec(),
        "increments of all three"
    );
    for _ in 0..3 {
        done.send(1)?;
    }
    for k in kids {
        join(k, "version")?;
    }
    ensure_eq!(
        h.list_versions(&name, 0, 16)?.1,
        0,
        "versions after their processes exit"
    );
    cleanup(&name);
    Ok(())
}

fn versions(name: &str) -> Result<Vec<dsu_version_info>, crate::Failure> {
    Ok(Dsu::open()?.list_versions(name, 0, 64)?.0)
}

#[distributed_slice(TESTS)]
static RETIRE: VmTest = VmTest {
    name: "kmod_binding::fork_munmap_close_retire",
    phase: Phase::Main,
    run: retire,
};
fn retire() -> TestResult {
    let name = unique("retire");
    let h = Dsu::attached(&name)?;
    let v = h.resolve_ok(vec![var("g", 3 * PAGE as u64, 1, None)])?;
    let map = [v[0].first_page, v[0].first_page + 1, v[0].first_page + 2];
    h.bind("r1", &map, 0)?;
    ensure_eq!(versions(&name)?.len(), 1, "bound, not mapped");
    ensure_eq!(versions(&name)?[0].mappings, 0, "no mapping yet");
    let m = h.map(3)?;
    ensure_eq!(versions(&name)?[0].mappings, 1, "mapped");

    // fork inherits the mapping: two VMAs until the child exits.
    let stop = Channel::new()?;
    let up = Channel::new()?;
    let child = {
        let (stop, up) = (&stop, &up);
        let m = &m;
        spawn(move || {
            m.set(8, 77);
            up.send(1)?;
            stop.recv()?;
            Ok(())
        })
    };
    up.recv()?;
    ensure_eq!(
        m.get(8),
        77,
        "the child's write through the inherited mapping"
    );
    ensure_eq!(
        versions(&name)?[0].mappings,
        2,
        "mappings with a forked child"
    );
    stop.send(1)?;
    join(child, "forked child")?;
    ensure_eq!(
        versions(&name)?[0].mappings,
        1,
        "mappings after the child exits"
    );

    // mprotect of the middle page splits the VMA in three.
    // SAFETY: Changes protection of a page inside our mapping.
    let r = unsafe { libc::mprotect(m.ptr.add(PAGE).cast(), PAGE, libc::PROT_READ) };
    ensure_eq!(r, 0, "mprotect");
    ensure_eq!(versions(&name)?[0].mappings, 3, "mappings after a split");
    // munmap of the first page leaves two.
    // SAFETY: Unmaps the first page of our mapping; `m` is not used past this test's end
    // except by its drop, which unmaps the whole range again (harmless).
    let r = unsafe { libc::munmap(m.ptr.cast(), PAGE) };
    ensure_eq!(r, 0, "munmap");
    ensure_eq!(
        versions(&name)?[0].mappings,
        2,
        "mappings after a partial munmap"
    );
    ensure_eq!(m.get(2 * PAGE), 0, "last page still mapped");
    drop(m);
    ensure_eq!(versions(&name)?[0].mappings, 0, "mappings after munmap");
    // Still a version while its fd is open; gone at close.
    ensure_eq!(versions(&name)?.len(), 1, "version with its fd open");
    drop(h);
    ensure_eq!(versions(&name)?.len(), 0, "version after close");

    // close first, mapping remains: the version lives until munmap.
    let h = Dsu::attached(&name)?;
    h.bind("r2", &map, 0)?;
    let m = h.map(3)?;
    drop(h);
    let vs = versions(&name)?;
    ensure_eq!(vs.len(), 1, "version with only a mapping left");
    ensure_eq!(
        (cstr(&vs[0].label), vs[0].mappings),
        ("r2".to_string(), 1),
        "its record"
    );
    m.set(0, 5);
    drop(m);
    ensure_eq!(versions(&name)?.len(), 0, "version after the last munmap");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static FUTEX: VmTest = VmTest {
    name: "kmod_binding::shared_futex_across_layouts",
    phase: Phase::Main,
    run: futex,
};
fn futex() -> TestResult {
    let name = unique("futex");
    let parent = Dsu::attached(&name)?;
    let v = parent.resolve_ok(vec![var("word", 4, 1, None), var("pad", 8, 1, None)])?;
    let (word, pad) = (v[0].first_page, v[1].first_page);
    parent.bind("p", &[word], 0)?;
    let m = parent.map(1)?;
    let ready = Channel::new()?;
    let child = {
        let (name, ready) = (name.clone(), &ready);
        spawn(move || {
            // The word sits at another offset (and so another address) here.
            let h = Dsu::attached(&name)?;
            h.bind("c", &[pad, word], DSU_BIND_PREFAULT)?;
            let m = h.map(2)?;
            let addr = m.ptr.wrapping_add(PAGE).cast::<u32>();
            ready.send(1)?;
            // SAFETY: A shared (not PRIVATE) FUTEX_WAIT on a word of our mapping, expecting 0.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    addr,
                    libc::FUTEX_WAIT,
                    0u32,
                    std::ptr::null::<libc::timespec>(),
                )
            };
            ensure_eq!(r, 0, "FUTEX_WAIT woken ({})", Errno::last());
            Ok(())
        })
    };
    ready.recv()?;
    // Wake until the child has gone to sleep and been woken (a wake before its wait is lost).
    let addr = m.ptr.cast::<u32>();
    let mut woken = 0;
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        // SAFETY: A shared FUTEX_WAKE on our mapping's first word.
        let r = unsafe { libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAKE, 1, 0, 0, 0) };
        ensure!(r >= 0, "FUTEX_WAKE: {}", Errno::last());
        woken += r;
        if woken > 0 {
            break;
        }
    }
    ensure_eq!(woken, 1, "waiters woken through another process's address");
    join(child, "futex waiter")?;
    cleanup(&name);
    Ok(())
}
