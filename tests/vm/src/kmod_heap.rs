//! Kernel module: the shared heap (DSU_IOC_HEAP, HEAP_GROW, HEAP_DISCARD, READ_HEAP, the
//! heap window's mmap) and views of segment pages. Growth is seen by every mapping at once,
//! a touch past the size is SIGBUS, a discard zeroes every mapping and gives the memory
//! back, every limit answers ENOMEM with nothing changed, bad arguments get precise errnos,
//! and a mapping keeps the heap after its fd is closed.

use crate::kmod_ioctl::*;
use crate::robust_raw::in_child;
use crate::util::{as_user, memory_cgroup, set_rlimit, with_module_params};
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

const P: u64 = PAGE as u64;

/// A heap window address for test `slot`: 1 GiB apart, far from the suite's mappings.
fn base(slot: u64) -> u64 {
    0x3000_0000_0000 + slot * (1 << 30)
}

/// Unmaps the copy of a heap window that a forked child inherited, so that it maps its own
/// like an unrelated process.
fn unmap_inherited(base: u64, len: u64) {
    // SAFETY: The child owns no reference into the range (the parent's `Map` is not used in
    // the child, whose exit skips destructors).
    unsafe { libc::munmap(base as *mut libc::c_void, len as usize) };
}

/// Reads the byte at `addr` in a forked child: `Ok(byte)` or `Err(signal)`.
fn touch(addr: *const u8) -> Result<i32, i32> {
    // SAFETY: The child reads an address that may fault; a fault kills only the child.
    in_child(|| unsafe { std::ptr::read_volatile(addr) } as i32)
}

#[distributed_slice(TESTS)]
static GROWTH: VmTest = VmTest {
    name: "kmod_heap::growth_seen_without_remap",
    phase: Phase::Main,
    run: growth,
};
/// Process A creates and maps a heap with nothing backed (a touch is SIGBUS); process B
/// gets it, maps it at the same address, grows it and writes; A reads B's bytes at once
/// through its own mapping, a touch past the size is still SIGBUS, READ_HEAP and the
/// segment record agree, and a smaller GROW changes nothing.
fn growth() -> TestResult {
    let name = unique("heap-grow");
    let r = (|| {
        let a = Dsu::attached(&name)?;
        ensure_eq!(
            a.heap(base(1), 16 * P),
            Ok((base(1), 16 * P, 0, true)),
            "create"
        );
        let ma = a.map_heap(base(1), 16 * P)?;
        ensure_eq!(
            touch(ma.ptr),
            Err(libc::SIGBUS),
            "touch of a heap with nothing backed"
        );
        let n = name.clone();
        let b = spawn(move || {
            unmap_inherited(base(1), 16 * P);
            let b = Dsu::attached(&n)?;
            let (bb, br, size, created) = b.heap(0, 0)?;
            ensure!(!created && size == 0, "get: created {created}, size {size}");
            // Another window asked for: the existing one comes back.
            ensure_eq!(
                b.heap(base(2), 4 * P),
                Ok((base(1), 16 * P, 0, false)),
                "create over an existing heap"
            );
            let m = b.map_heap(bb, br)?;
            ensure_eq!(b.heap_grow(2 * P + 1), Ok(3 * P), "grow to 3 pages");
            m.set(2 * PAGE + 8, 0xfeed_f00d);
            Ok(())
        });
        join(b, "process B")?;
        ensure_eq!(ma.get(2 * PAGE + 8), 0xfeed_f00d, "A reads B's write");
        ensure_eq!(ma.get(0), 0, "a new heap page is zeroed");
        ensure_eq!(
            touch(ma.ptr.wrapping_add(3 * PAGE)),
            Err(libc::SIGBUS),
            "touch past the size"
        );
        ensure_eq!(
            a.read_heap(&name, 2 * P + 8, 8),
            Ok(0xfeed_f00du64.to_ne_bytes().to_vec()),
            "READ_HEAP"
        );
        ensure_eq!(
            a.read_heap(&name, 3 * P - 4, 100).map(|v| v.len()),
            Ok(4),
            "READ_HEAP stops at the size"
        );
        ensure_eq!(
            a.read_heap(&name, 3 * P + 1, 1),
            Err(Errno::EINVAL),
            "READ_HEAP past the size"
        );
        let info = a.segment_info(&name)?.ok_or("segment not listed")?;
        ensure_eq!(
            (info.heap_base, info.heap_reserve, info.heap_size),
            (base(1), 16 * P, 3 * P),
            "segment record"
        );
        ensure_eq!(a.heap_grow(P), Ok(3 * P), "a smaller GROW");
        ensure_eq!(a.heap_grow(16 * P), Ok(16 * P), "grow to the reserve");
        ensure_eq!(ma.get(15 * PAGE), 0, "the last page");
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static DISCARD: VmTest = VmTest {
    name: "kmod_heap::discard_zeroes_everywhere_and_uncharges",
    phase: Phase::Main,
    run: discard,
};
/// A child in a memory cgroup grows the heap by 4 MiB and fills it; the parent maps it and
/// reads it (so it has page-table entries too); the child discards all but the first page:
/// the cgroup's memory.current falls by at least 3 MiB, and both processes read zeros there
/// (the first page keeps its bytes). The size does not shrink.
fn discard() -> TestResult {
    const PAGES: u64 = 1024;
    let cg = memory_cgroup("dsu-heap-discard")?;
    let name = unique("heap-discard");
    let r = (|| {
        let a = Dsu::attached(&name)?;
        a.heap(base(3), PAGES * P)?;
        let ma = a.map_heap(base(3), PAGES * P)?;
        let (to_child, to_parent) = (Channel::new()?, Channel::new()?);
        let (n, cgp) = (name.clone(), cg.clone());
        let (tc, tp) = (&to_child, &to_parent);
        let child = spawn(move || {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            std::fs::write(format!("{cgp}/cgroup.procs"), pid.to_string())?;
            unmap_inherited(base(3), PAGES * P);
            let b = Dsu::attached(&n)?;
            let m = b.map_heap(base(3), PAGES * P)?;
            b.heap_grow(PAGES * P)?;
            for i in 0..PAGES as usize {
                m.set(i * PAGE, 0x55);
            }
            let current = || -> Result<u64, Failure> {
                Ok(std::fs::read_to_string(format!("{cgp}/memory.current"))?
                    .trim()
                    .parse()?)
            };
            let before = current()?;
            tp.send(1)?;
            ensure_eq!(tc.recv(), Ok(2), "parent read");
            b.heap_discard(P, (PAGES - 1) * P)?;
            let after = current()?;
            ensure!(
                before.saturating_sub(after) >= 3 << 20,
                "memory.current {before} -> {after}: the discarded pages were not freed"
            );
            ensure_eq!(m.get(0), 0x55, "the first page in the child");
            ensure_eq!(m.get(5 * PAGE), 0, "a discarded page in the child");
            ensure_eq!(m.get((PAGES as usize - 1) * PAGE), 0, "the last page");
            Ok(())
        });
        ensure_eq!(to_parent.recv(), Ok(1), "child filled the heap");
        ensure_eq!(ma.get(5 * PAGE), 0x55, "the parent reads the child's bytes");
        to_child.send(2)?;
        join(child, "child in the cgroup")?;
        ensure_eq!(ma.get(0), 0x55, "the first page in the parent");
        ensure_eq!(ma.get(5 * PAGE), 0, "a discarded page in the parent");
        ensure_eq!(a.heap(0, 0)?.2, PAGES * P, "the size after a discard");
        Ok(())
    })();
    cleanup(&name);
    let _ = std::fs::remove_dir(&cg);
    r
}

/// Writes a module parameter through sysfs.
fn set_param(name: &str, value: u64) -> TestResult {
    std::fs::write(
        format!("/sys/module/dsu/parameters/{name}"),
        value.to_string(),
    )?;
    Ok(())
}

#[distributed_slice(TESTS)]
static LIMITS: VmTest = VmTest {
    name: "kmod_heap::limits_enomem",
    phase: Phase::Main,
    run: limits,
};
/// Growth past the reserve, past `max_heap_pages` (also lowered after creation), past
/// `max_user_pages` and RLIMIT_MEMLOCK (uid 1000) and past the memory cgroup's memory.max is
/// ENOMEM with the size unchanged (and no OOM kill); a window above `max_heap_pages` at
/// creation is E2BIG.
fn limits() -> TestResult {
    with_module_params("max_heap_pages=32 max_user_pages=16", || {
        let name = unique("heap-limits");
        let r = (|| {
            let a = Dsu::attached(&name)?;
            ensure_eq!(
                a.heap(base(4), 33 * P),
                Err(Errno::E2BIG),
                "window above max_heap_pages"
            );
            a.heap(base(4), 32 * P)?;
            ensure_eq!(a.heap_grow(33 * P), Err(Errno::ENOMEM), "past the reserve");
            set_param("max_heap_pages", 8)?;
            ensure_eq!(
                a.heap_grow(9 * P),
                Err(Errno::ENOMEM),
                "past a lowered max_heap_pages"
            );
            ensure_eq!(a.heap(0, 0)?.2, 0, "size after refused growth");
            ensure_eq!(a.heap_grow(8 * P), Ok(8 * P), "up to max_heap_pages");
            set_param("max_heap_pages", 32)?;
            Ok(())
        })();
        cleanup(&name);
        r?;
        // Per user: max_user_pages (16), then RLIMIT_MEMLOCK (8 pages), as uid 1000.
        let name = unique("heap-user");
        let n = name.clone();
        let r = as_user(1000, 1000, &[], move || {
            let a = Dsu::attached(&n)?;
            a.heap(base(5), 32 * P)?;
            ensure_eq!(
                a.heap_grow(17 * P),
                Err(Errno::ENOMEM),
                "past max_user_pages"
            );
            ensure_eq!(a.heap(0, 0)?.2, 0, "size after refused growth");
            ensure_eq!(a.heap_grow(16 * P), Ok(16 * P), "up to max_user_pages");
            a.destroy(&n)?;
            drop(a);
            set_rlimit(libc::RLIMIT_MEMLOCK, 8 * P)?;
            let a = Dsu::attached(&n)?;
            a.heap(base(5), 32 * P)?;
            ensure_eq!(
                a.heap_grow(9 * P),
                Err(Errno::ENOMEM),
                "past RLIMIT_MEMLOCK"
            );
            ensure_eq!(a.heap(0, 0)?.2, 0, "size after refused growth");
            ensure_eq!(a.heap_grow(8 * P), Ok(8 * P), "up to RLIMIT_MEMLOCK");
            a.destroy(&n)?;
            Ok(())
        });
        cleanup(&name);
        r
    })?;
    // The memory cgroup: 1 MiB of room, 16 MiB asked.
    let cg = memory_cgroup("dsu-heap-memcg")?;
    let name = unique("heap-memcg");
    let setup = Dsu::attached(&name)?;
    setup.heap(base(6), 4096 * P)?;
    let (n, cgp) = (name.clone(), cg.clone());
    let status = in_child(move || {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        if std::fs::write(format!("{cgp}/cgroup.procs"), pid.to_string()).is_err() {
            return 10;
        }
        let Ok(d) = Dsu::attached(&n) else { return 11 };
        let Some(current) = std::fs::read_to_string(format!("{cgp}/memory.current"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            return 12;
        };
        if std::fs::write(
            format!("{cgp}/memory.max"),
            (current + (1 << 20)).to_string(),
        )
        .is_err()
        {
            return 13;
        }
        match d.heap_grow(4096 * P) {
            Err(Errno::ENOMEM) => 0,
            Ok(_) => 14,
            Err(_) => 15,
        }
    });
    let size = setup.heap(0, 0).map(|h| h.2);
    drop(setup);
    cleanup(&name);
    let _ = std::fs::remove_dir(&cg);
    ensure_eq!(
        status,
        Ok(0),
        "GROW past memory.max (14: granted, 15: another errno, signal: OOM-killed)"
    );
    ensure_eq!(size, Ok(0), "size after growth refused by the memcg");
    Ok(())
}

#[distributed_slice(TESTS)]
static LIMIT_FSIZE: VmTest = VmTest {
    name: "kmod_heap::limit_fsize_enomem",
    phase: Phase::Main,
    run: limit_fsize,
};
/// Growth past the caller's RLIMIT_FSIZE is ENOMEM with the size unchanged; the caller is
/// not killed by the SIGXFSZ that shmem's `fallocate` sends past that limit.
fn limit_fsize() -> TestResult {
    let name = unique("heap-fsize");
    let setup = Dsu::attached(&name)?;
    setup.heap(base(7), 64 * P)?;
    let n = name.clone();
    let status = in_child(move || {
        if set_rlimit(libc::RLIMIT_FSIZE, 8 * P).is_err() {
            return 10;
        }
        let Ok(d) = Dsu::attached(&n) else { return 11 };
        match d.heap_grow(16 * P) {
            Err(Errno::ENOMEM) => {}
            Ok(_) => return 12,
            Err(_) => return 13,
        }
        match d.heap_grow(8 * P) {
            Ok(s) if s == 8 * P => 0,
            _ => 14,
        }
    });
    let size = setup.heap(0, 0).map(|h| h.2);
    drop(setup);
    cleanup(&name);
    ensure_eq!(
        status,
        Ok(0),
        "GROW past RLIMIT_FSIZE (12: granted, 13: another errno, 14: growth up to the limit \
         refused, signal 25: killed by SIGXFSZ)"
    );
    ensure_eq!(size, Ok(8 * P), "size after growth up to RLIMIT_FSIZE");
    Ok(())
}

#[distributed_slice(TESTS)]
static VALIDATION: VmTest = VmTest {
    name: "kmod_heap::validation_errnos",
    phase: Phase::Main,
    run: validation,
};
/// Bad arguments of every heap call and of the heap and view mmaps get precise errnos.
fn validation() -> TestResult {
    let name = unique("heap-valid");
    let r = (|| {
        let fresh = Dsu::open()?;
        ensure_eq!(
            fresh.heap(0, 0),
            Err(Errno::EBADFD),
            "HEAP on a fresh handle"
        );
        ensure_eq!(
            fresh.heap_grow(P),
            Err(Errno::EBADFD),
            "GROW on a fresh handle"
        );
        let a = Dsu::attached(&name)?;
        ensure_eq!(a.heap(0, 0), Err(Errno::ENOENT), "get without a heap");
        ensure_eq!(a.heap_grow(P), Err(Errno::ENOENT), "GROW without a heap");
        ensure_eq!(
            a.heap_discard(0, P),
            Err(Errno::ENOENT),
            "DISCARD without a heap"
        );
        ensure_eq!(
            a.read_heap(&name, 0, 1),
            Err(Errno::ENOENT),
            "READ without a heap"
        );
        ensure_eq!(
            a.map_heap_with(0, PAGE, libc::MAP_SHARED).map(drop),
            Err(Errno::ENOENT),
            "mmap without a heap"
        );
        let bad = [
            (base(7), 0, "reserve 0"),
            (0, 4 * P, "base 0"),
            (base(7) + 8, 4 * P, "misaligned base"),
            (base(7), 4 * P + 8, "misaligned reserve"),
            (!(P - 1), 4 * P, "overflowing window"),
            (0xffff_8000_0000_0000, 4 * P, "window in kernel addresses"),
        ];
        for (b, r, what) in bad {
            ensure_eq!(a.heap(b, r), Err(Errno::EINVAL), "{what}");
        }
        let mut h = dsu_heap {
            size: size_of::<dsu_heap>() as u32,
            flags: 1,
            base: base(7),
            reserve: 4 * P,
            ..Default::default()
        };
        ensure_eq!(a.heap_raw(&mut h), Err(Errno::EINVAL), "HEAP flags");
        h.flags = 0;
        h.heap_size = 1;
        ensure_eq!(a.heap_raw(&mut h), Err(Errno::EINVAL), "HEAP heap_size in");
        h.heap_size = 0;
        h.size = 16;
        ensure_eq!(a.heap_raw(&mut h), Err(Errno::EINVAL), "HEAP small size");
        ensure_eq!(
            a.heap(base(7), 4 * P),
            Ok((base(7), 4 * P, 0, true)),
            "create"
        );
        ensure_eq!(a.heap_grow(0), Err(Errno::EINVAL), "GROW 0");
        let mut g = dsu_heap_grow {
            size: size_of::<dsu_heap_grow>() as u32,
            min_size: P,
            heap_size: 1,
            ..Default::default()
        };
        ensure_eq!(
            a.heap_grow_raw(&mut g),
            Err(Errno::EINVAL),
            "GROW heap_size in"
        );
        g.heap_size = 0;
        g.flags = 2;
        ensure_eq!(a.heap_grow_raw(&mut g), Err(Errno::EINVAL), "GROW flags");
        ensure_eq!(a.heap_grow(u64::MAX), Err(Errno::ENOMEM), "GROW u64::MAX");
        ensure_eq!(a.heap_grow(2 * P), Ok(2 * P), "grow");
        for (o, l, what) in [
            (0, 0, "length 0"),
            (1, P, "misaligned offset"),
            (0, P + 1, "misaligned length"),
            (P, 2 * P, "past the size"),
            (!(P - 1), P, "overflow"),
        ] {
            ensure_eq!(a.heap_discard(o, l), Err(Errno::EINVAL), "DISCARD {what}");
        }
        ensure_eq!(
            a.heap_discard_raw(&dsu_heap_discard {
                size: size_of::<dsu_heap_discard>() as u32,
                flags: 1,
                offset: 0,
                length: P,
            }),
            Err(Errno::EINVAL),
            "DISCARD flags"
        );
        let mut r = dsu_read_heap {
            size: size_of::<dsu_read_heap>() as u32,
            flags: 1,
            length: 1,
            segment: cname(&name),
            ..Default::default()
        };
        ensure_eq!(
            a.read_heap_raw(&mut r),
            Err(Errno::EINVAL),
            "READ_HEAP flags"
        );
        r.flags = 0;
        r.buf = 8;
        ensure_eq!(
            a.read_heap_raw(&mut r),
            Err(Errno::EFAULT),
            "READ_HEAP bad buffer"
        );
        // mmap: wrong address, length, sharing.
        ensure_eq!(
            a.map_heap_with(base(8), 4 * PAGE, libc::MAP_SHARED)
                .map(drop),
            Err(Errno::EINVAL),
            "mmap at another address"
        );
        ensure_eq!(
            a.map_heap_with(base(7), 2 * PAGE, libc::MAP_SHARED)
                .map(drop),
            Err(Errno::EINVAL),
            "mmap shorter than the reserve"
        );
        ensure_eq!(
            a.map_heap_with(base(7), 4 * PAGE, libc::MAP_PRIVATE)
                .map(drop),
            Err(Errno::EINVAL),
            "private mmap"
        );
        ensure_eq!(
            fresh
                .map_heap_with(base(7), 4 * PAGE, libc::MAP_SHARED)
                .map(drop),
            Err(Errno::EBADFD),
            "mmap on a fresh handle"
        );
        let m = a.map_heap(base(7), 4 * P)?;
        // SAFETY: mremap of our own mapping to a free address; the kernel must refuse it.
        let moved = unsafe {
            libc::mremap(
                m.ptr.cast(),
                m.len,
                m.len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                base(9) as *mut libc::c_void,
            )
        };
        ensure!(moved == libc::MAP_FAILED, "mremap moved the heap window");
        ensure_eq!(m.get(PAGE), 0, "window still mapped after the refused move");
        // Views: out of range, private, fresh handle.
        let mut v = [var("viewed", 8, 1, None)];
        let (_, res) = a.resolve(&mut v);
        res?;
        ensure_eq!(
            a.map_view(v[0].first_page, 2).map(drop),
            Err(Errno::EINVAL),
            "view past the segment"
        );
        ensure_eq!(
            a.map_with(
                1,
                libc::MAP_PRIVATE,
                (DSU_VIEW_MMAP_OFFSET + v[0].first_page * P) as i64
            )
            .map(drop),
            Err(Errno::EINVAL),
            "private view"
        );
        ensure_eq!(
            fresh.map_view(0, 1).map(drop),
            Err(Errno::EBADFD),
            "view on a fresh handle"
        );
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static OUTLIVES: VmTest = VmTest {
    name: "kmod_heap::mapping_outlives_fd",
    phase: Phase::Main,
    run: outlives,
};
/// A heap mapping keeps the heap after its fd is closed and its segment destroyed: it still
/// reads and writes, and so does a forked child's copy; the segment is freed (gone from
/// LIST_SEGMENTS) only once the last mapping is unmapped.
fn outlives() -> TestResult {
    let name = unique("heap-outlive");
    let listed = |name: &str| -> Result<Option<u32>, Failure> {
        Ok(Dsu::open()?.segment_info(name)?.map(|i| i.flags))
    };
    let r = (|| {
        let a = Dsu::attached(&name)?;
        a.heap(base(10), 8 * P)?;
        a.heap_grow(2 * P)?;
        let m = a.map_heap(base(10), 8 * P)?;
        m.set(PAGE, 41);
        drop(a);
        Dsu::open()?.destroy(&name)?;
        ensure_eq!(
            listed(&name)?,
            Some(DSU_SEGMENT_DESTROYED),
            "destroyed segment kept by the mapping"
        );
        m.set(PAGE, m.get(PAGE) + 1);
        let mp = m.ptr as usize;
        let child = in_child(move || {
            // SAFETY: The forked copy of the parent's heap mapping.
            let v = unsafe { std::ptr::read_volatile((mp + PAGE) as *const u64) };
            if v == 42 { 0 } else { 1 }
        });
        ensure_eq!(child, Ok(0), "a forked child reads the heap");
        drop(m);
        ensure_eq!(listed(&name)?, None, "segment after the last munmap");
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static VIEW: VmTest = VmTest {
    name: "kmod_heap::view_maps_segment_pages",
    phase: Phase::Main,
    run: view,
};
/// An attached, unbound handle maps a variable's pages through a view: it reads the initial
/// bytes, its writes are what READ_VAR and a version mapping see, and the handle does not
/// become a version (BIND still works on it).
fn view() -> TestResult {
    let name = unique("heap-view");
    let r = (|| {
        let a = Dsu::attached(&name)?;
        let init: Vec<u8> = (0..2 * PAGE).map(|i| (i % 251) as u8).collect();
        let mut v = [var("two-pages", 2 * P, 1, Some(&init))];
        let (_, res) = a.resolve(&mut v);
        res?;
        let view = a.map_view(v[0].first_page, 2)?;
        ensure_eq!(
            view.get(PAGE),
            u64::from_ne_bytes(init[PAGE..PAGE + 8].try_into()?),
            "view reads the initial bytes"
        );
        view.set(PAGE + 8, 0xabcd);
        let read = a.read_var(&name, "two-pages", 1, 0, (PAGE + 8) as u64, 8)?;
        ensure_eq!(
            read,
            0xabcdu64.to_ne_bytes().to_vec(),
            "READ_VAR sees the view's write"
        );
        ensure_eq!(a.list_versions(&name, 0, 4)?.1, 0, "no version from a view");
        let pages: Vec<u64> = (0..2).map(|i| v[0].first_page + i).collect();
        a.bind("v1", &pages, 0)?;
        let version = a.map(2)?;
        ensure_eq!(
            version.get(PAGE + 8),
            0xabcd,
            "the version sees the view's write"
        );
        Ok(())
    })();
    cleanup(&name);
    r
}
