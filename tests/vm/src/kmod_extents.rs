//! Kernel module: BIND with the map as extents (`dsu_bind.extents`). An extents version
//! shares pages with a per-page version at another layout, on fault and prefaulted (more
//! than one 512-page batch, extents spanning entries of separate RESOLVE calls); the
//! validation errnos; and the first version's 64-byte struct is still accepted.

use crate::kmod_ioctl::*;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

fn ext(first_page: u64, page_count: u64) -> dsu_extent {
    dsu_extent {
        first_page,
        page_count,
    }
}

/// A BIND struct with the extents form of the map.
fn extents_bind(label: &str, page_count: u64, extents: &[dsu_extent], flags: u32) -> dsu_bind {
    dsu_bind {
        size: size_of::<dsu_bind>() as u32,
        flags,
        page_count,
        extents: extents.as_ptr() as u64,
        extent_count: extents.len() as u64,
        label: cname(label),
        ..Default::default()
    }
}

/// BIND with `extents` (page_count: their sum); returns the version id.
fn bind_extents(h: &Dsu, label: &str, extents: &[dsu_extent], flags: u32) -> Sys<u64> {
    let total = extents.iter().map(|e| e.page_count).sum();
    let mut b = extents_bind(label, total, extents, flags);
    h.bind_raw(&mut b)?;
    Ok(b.version_id)
}

/// Pages of the big global: more than one 512-page prefault batch, not a multiple of it.
const BIG: u64 = 700;

/// Resolves a (1 page), big (`BIG` pages), then c (3 pages) in a second RESOLVE; returns
/// their first pages.
fn globals(h: &Dsu) -> Result<[u64; 3], crate::Failure> {
    let v = h.resolve_ok(vec![
        var("a", 8, 0xa, Some(&11u64.to_ne_bytes())),
        var("big", BIG * PAGE as u64, 0xb, None),
    ])?;
    let c = h.resolve_ok(vec![var("c", 3 * PAGE as u64, 0xc, None)])?;
    Ok([v[0].first_page, v[1].first_page, c[0].first_page])
}

fn shares(flags: u32) -> TestResult {
    let name = unique("extents");
    // Version 1, per page: [a, big, c].
    let v1 = Dsu::attached(&name)?;
    let [a, big, c] = globals(&v1)?;
    let total = (1 + BIG + 3) as usize;
    let mut per_page = vec![a];
    per_page.extend(big..big + BIG);
    per_page.extend(c..c + 3);
    v1.bind("per-page", &per_page, 0)?;
    let m1 = v1.map(total)?;
    for i in 0..total {
        m1.set(i * PAGE + 16, 1000 + i as u64);
    }

    // Version 2, extents, another layout: [c, a, big].
    let v2 = Dsu::attached(&name)?;
    ensure_eq!(globals(&v2)?, [a, big, c], "common globals");
    let id = bind_extents(
        &v2,
        "extents",
        &[ext(c, 3), ext(a, 1), ext(big, BIG)],
        flags,
    )?;
    ensure!(id > 0, "version id {id}");
    let m2 = v2.map(total)?;
    ensure_eq!(m2.get(3 * PAGE), 11, "a's initial value at page 3");
    for k in 0..3 {
        ensure_eq!(
            m2.get(k * PAGE + 16),
            1000 + 1 + BIG + k as u64,
            "c page {k}"
        );
    }
    ensure_eq!(m2.get(3 * PAGE + 16), 1000, "a");
    for k in 0..BIG as usize {
        ensure_eq!(m2.get((4 + k) * PAGE + 16), 1001 + k as u64, "big page {k}");
    }
    // Writes go both ways.
    m2.set(4 * PAGE + 24, 77);
    ensure_eq!(
        m1.get(PAGE + 24),
        77,
        "big page 0 written through the extents version"
    );

    // Version 3: one extent over a and big (one RESOLVE), one over c, and one spanning the
    // last page of big and c (entries of two RESOLVE calls, if adjacent in the segment).
    let v3 = Dsu::attached(&name)?;
    let mut extents = vec![ext(a, 1 + BIG)];
    if c == big + BIG {
        extents.push(ext(big + BIG - 1, 4));
    } else {
        extents.push(ext(c, 3));
    }
    bind_extents(&v3, "spanning", &extents, flags)?;
    let pages: u64 = extents.iter().map(|e| e.page_count).sum();
    let m3 = v3.map(pages as usize)?;
    for i in 0..pages as usize {
        let seg = extents
            .iter()
            .scan(0u64, |at, e| {
                let r = (*at, e);
                *at += e.page_count;
                Some(r)
            })
            .find(|(at, e)| (i as u64) < at + e.page_count)
            .map(|(at, e)| e.first_page + (i as u64 - at))
            .unwrap();
        let want = per_page.iter().position(|&p| p == seg).unwrap() as u64 + 1000;
        ensure_eq!(m3.get(i * PAGE + 16), want, "spanning version page {i}");
    }

    // LIST_VERSIONS reports the page count of the extents version.
    let (versions, _) = v1.list_versions(&name, 0, 8)?;
    let v = versions.iter().find(|v| v.id == id);
    ensure_eq!(
        v.map(|v| v.pages),
        Some(total as u64),
        "pages of the extents version"
    );
    drop((m1, m2, m3));
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static SHARES: VmTest = VmTest {
    name: "kmod_extents::shares_pages_with_per_page_version",
    phase: Phase::Main,
    run: || shares(0),
};

#[distributed_slice(TESTS)]
static PREFAULT: VmTest = VmTest {
    name: "kmod_extents::prefault",
    phase: Phase::Main,
    run: || shares(DSU_BIND_PREFAULT),
};

#[distributed_slice(TESTS)]
static VALIDATION: VmTest = VmTest {
    name: "kmod_extents::validation_errnos",
    phase: Phase::Main,
    run: validation,
};
fn validation() -> TestResult {
    let name = unique("extval");
    let h = Dsu::attached(&name)?;
    let v = h.resolve_ok(vec![var("x", 4 * PAGE as u64, 1, None)])?;
    let (x, n) = (v[0].first_page, v[0].page_count);
    ensure_eq!(n, 4, "x's pages");
    let end = x + n; // one past the segment's last page
    let good = [ext(x, 2), ext(x + 3, 1)];
    let pages = [x, x + 1];
    let max: u64 = std::fs::read_to_string("/sys/module/dsu/parameters/max_segment_pages")?
        .trim()
        .parse()?;

    let cases: Vec<(&str, dsu_bind, Errno)> = vec![
        (
            "both pointers",
            {
                let mut b = extents_bind("b", 3, &good, 0);
                b.pages = pages.as_ptr() as u64;
                b
            },
            Errno::EINVAL,
        ),
        (
            "neither pointer",
            {
                let mut b = extents_bind("b", 3, &good, 0);
                b.extents = 0;
                b
            },
            Errno::EINVAL,
        ),
        (
            "per-page map with an extent count",
            {
                let mut b = extents_bind("b", 2, &good, 0);
                b.extents = 0;
                b.pages = pages.as_ptr() as u64;
                b
            },
            Errno::EINVAL,
        ),
        (
            "sum below page_count",
            extents_bind("b", 4, &good, 0),
            Errno::EINVAL,
        ),
        (
            "sum above page_count",
            extents_bind("b", 2, &good, 0),
            Errno::EINVAL,
        ),
        (
            "extent past the segment",
            extents_bind("b", 2, &[ext(end - 1, 2)], 0),
            Errno::EINVAL,
        ),
        (
            "extent after the segment",
            extents_bind("b", 1, &[ext(end, 1)], 0),
            Errno::EINVAL,
        ),
        (
            "first_page + page_count overflows",
            extents_bind("b", 2, &[ext(u64::MAX, 2)], 0),
            Errno::EINVAL,
        ),
        (
            "sum of page counts overflows",
            extents_bind("b", 2, &[ext(x, 1 << 63), ext(x, 1 << 63), ext(x, 2)], 0),
            Errno::EINVAL,
        ),
        (
            "empty extent",
            extents_bind("b", 2, &[ext(x, 2), ext(x, 0)], 0),
            Errno::EINVAL,
        ),
        (
            "extent_count 0",
            {
                let mut b = extents_bind("b", 2, &good, 0);
                b.extent_count = 0;
                b
            },
            Errno::EINVAL,
        ),
        (
            "extent_count above max_segment_pages",
            {
                let mut b = extents_bind("b", 1, &good, 0);
                b.extent_count = max + 1;
                b
            },
            Errno::E2BIG,
        ),
        (
            "unreadable extents",
            {
                let mut b = extents_bind("b", 1, &good, 0);
                b.extents = 8;
                b.extent_count = 1;
                b
            },
            Errno::EFAULT,
        ),
        (
            "page_count 0",
            extents_bind("b", 0, &good, 0),
            Errno::EINVAL,
        ),
    ];
    for (what, mut b, want) in cases {
        ensure_eq!(h.bind_raw(&mut b), Err(want), "{what}");
        ensure_eq!(b.version_id, 0, "{what}: no version id written");
    }
    // Still attached after every refusal: a good BIND works, and the map is [x, x+1, x+3].
    let id = bind_extents(&h, "ok", &good, 0)?;
    ensure!(id > 0, "version id {id}");
    let m = h.map(3)?;
    m.set(2 * PAGE, 5);
    let p = Dsu::attached(&name)?;
    p.bind("per-page", &[x, x + 1, x + 2, x + 3], 0)?;
    let mp = p.map(4)?;
    ensure_eq!(mp.get(3 * PAGE), 5, "third extent page is segment page x+3");
    drop((m, mp));
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static OLD_SIZE: VmTest = VmTest {
    name: "kmod_extents::first_version_struct_size",
    phase: Phase::Main,
    run: old_size,
};
fn old_size() -> TestResult {
    let name = unique("extold");
    let h = Dsu::attached(&name)?;
    let v = h.resolve_ok(vec![var("x", 8, 1, Some(&9u64.to_ne_bytes()))])?;
    let pages = [v[0].first_page];
    ensure_eq!(
        DSU_BIND_SIZE_VER1 as usize,
        std::mem::offset_of!(dsu_bind, extents),
        "VER1 size"
    );

    // Smaller than the first version: refused.
    let mut b = dsu_bind {
        size: DSU_BIND_SIZE_VER1 - 8,
        page_count: 1,
        pages: pages.as_ptr() as u64,
        label: cname("old"),
        ..Default::default()
    };
    ensure_eq!(
        h.bind_raw(&mut b),
        Err(Errno::EINVAL),
        "size below the first version"
    );
    // Larger with a non-zero tail: refused.
    #[repr(C)]
    struct Longer {
        b: dsu_bind,
        tail: u64,
    }
    let mut l = Longer { b, tail: 1 };
    l.b.size = size_of::<Longer>() as u32;
    // SAFETY: `Longer` is repr(C) and starts with a valid dsu_bind; the kernel reads its
    // `size` bytes, all inside `l`.
    let longer = unsafe { &mut *(&raw mut l).cast::<dsu_bind>() };
    ensure_eq!(h.bind_raw(longer), Err(Errno::E2BIG), "non-zero tail");

    // The first version's size: the new fields are not read (garbage there is ignored) and
    // not written back.
    let mut b = dsu_bind {
        size: DSU_BIND_SIZE_VER1,
        page_count: 1,
        pages: pages.as_ptr() as u64,
        label: cname("old"),
        extents: 0xdead_beef_0000,
        extent_count: 0x5555,
        ..Default::default()
    };
    h.bind_raw(&mut b)?;
    ensure!(b.version_id > 0, "version id {}", b.version_id);
    ensure_eq!(
        (b.extents, b.extent_count),
        (0xdead_beef_0000, 0x5555),
        "bytes past the caller's size"
    );
    let m = h.map(1)?;
    ensure_eq!(m.get(0), 9, "x through the old-size version");
    drop(m);
    cleanup(&name);
    Ok(())
}
