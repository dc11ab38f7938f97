//! Kernel module: DSU_IOC_SNAPSHOT and the snapshot fd. The image of an idle segment is its
//! pages and heap; under concurrent writers (two processes, segment and heap pages) every
//! image is point in time (a prefix-consistent sequence and a counter pair, checks that
//! fail without copy-on-write); HEAP_DISCARD and HEAP_GROW, GC and an abort during a
//! snapshot leave the image alone; one snapshot per segment (EBUSY); read permission
//! (EACCES); the fd's errnos, pread offsets and ranges; the fd outlives the segment's
//! handles and keeps the module loaded; a per-user limit is ENOMEM with nothing changed.

use crate::kmod_ioctl::*;
use crate::util::{as_user, insmod, module_loaded, rmmod, sh, with_module_params};
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const P: u64 = PAGE as u64;

mod raw {
    use dsu_uapi::*;
    nix::ioctl_readwrite!(snapshot, DSU_IOC_MAGIC, DSU_IOC_NR_SNAPSHOT, dsu_snapshot);
    nix::ioctl_readwrite!(
        list_variables,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_LIST_VARIABLES,
        dsu_list
    );
    nix::ioctl_readwrite!(read_var, DSU_IOC_MAGIC, DSU_IOC_NR_READ_VAR, dsu_read_var);
}

/// A snapshot fd and what SNAPSHOT returned.
pub struct Snap {
    /// The fd (closing it ends the snapshot).
    pub fd: OwnedFd,
    /// The out fields.
    pub info: dsu_snapshot,
}

/// SNAPSHOT with a raw argument.
pub fn snapshot_raw(d: &Dsu, s: &mut dsu_snapshot) -> Sys<()> {
    // SAFETY: `s` is a valid struct for the call.
    unsafe { raw::snapshot(d.fd(), s) }.map(drop)
}

/// SNAPSHOT of `segment`.
pub fn snapshot(d: &Dsu, segment: &str) -> Sys<Snap> {
    let mut s = dsu_snapshot {
        size: size_of::<dsu_snapshot>() as u32,
        segment: cname(segment),
        ..Default::default()
    };
    snapshot_raw(d, &mut s)?;
    // SAFETY: The kernel returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(s.fd) };
    Ok(Snap { fd, info: s })
}

impl Snap {
    /// pread of `len` bytes at `offset`.
    pub fn pread(&self, offset: u64, len: usize) -> Sys<Vec<u8>> {
        let mut buf = vec![0u8; len];
        // SAFETY: `buf` is writable for `len` bytes.
        let n = unsafe {
            libc::pread(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                len,
                offset as i64,
            )
        };
        if n < 0 {
            return Err(Errno::last());
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    /// Segment page `i` of the image.
    pub fn page(&self, i: u64) -> Sys<Vec<u8>> {
        self.pread(i * P, PAGE)
    }

    /// The `u64` at byte `offset` of segment page `i`.
    pub fn word(&self, i: u64, offset: usize) -> Sys<u64> {
        let b = self.pread(i * P + offset as u64, 8)?;
        Ok(u64::from_ne_bytes(b.try_into().map_err(|_| Errno::EIO)?))
    }

    /// The `u64` at heap byte `offset`.
    pub fn heap_word(&self, offset: u64) -> Sys<u64> {
        let b = self.pread(DSU_HEAP_MMAP_OFFSET + offset, 8)?;
        Ok(u64::from_ne_bytes(b.try_into().map_err(|_| Errno::EIO)?))
    }

    /// LIST_VARIABLES on the fd.
    pub fn variables(&self) -> Sys<Vec<dsu_variable_info>> {
        let mut records = vec![dsu_variable_info::default(); 64];
        let mut l = dsu_list {
            size: size_of::<dsu_list>() as u32,
            record_size: size_of::<dsu_variable_info>() as u32,
            count: 64,
            records: records.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `l` and its records are valid.
        unsafe { raw::list_variables(self.fd.as_raw_fd(), &mut l) }?;
        records.truncate(l.count as usize);
        Ok(records)
    }

    /// READ_VAR on the fd: `len` bytes of `name` (any fingerprint).
    pub fn read_var(&self, name: &str, len: usize) -> Sys<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut r = dsu_read_var {
            size: size_of::<dsu_read_var>() as u32,
            flags: DSU_READ_ANY_FINGERPRINT,
            length: len as u64,
            buf: buf.as_mut_ptr() as u64,
            name: cname(name),
            ..Default::default()
        };
        // SAFETY: `r` and its buffer are valid.
        unsafe { raw::read_var(self.fd.as_raw_fd(), &mut r) }?;
        buf.truncate(r.length as usize);
        Ok(buf)
    }
}

/// A heap window address for test `slot`, away from kmod_heap's.
fn base(slot: u64) -> u64 {
    0x3800_0000_0000 + slot * (1 << 30)
}

/// Attaches `name`, adds `vars` (name, bytes) and binds them all; returns the handle, the
/// mapping and each variable's first page.
fn segment_with(name: &str, vars: &[(&str, u64)]) -> Result<(Dsu, Map, Vec<u64>), crate::Failure> {
    let d = Dsu::attached(name)?;
    let added = d.resolve_ok(vars.iter().map(|(n, s)| var(n, *s, 7, None)).collect())?;
    let mut pages = Vec::new();
    let mut firsts = Vec::new();
    for v in &added {
        firsts.push(v.first_page);
        pages.extend(v.first_page..v.first_page + v.page_count);
    }
    d.bind("snap", &pages, 0)?;
    let m = d.map(pages.len())?;
    Ok((d, m, firsts))
}

#[distributed_slice(TESTS)]
static IDLE: VmTest = VmTest {
    name: "kmod_snapshot::idle_image_is_the_segment",
    phase: Phase::Main,
    run: idle,
};
/// An idle segment's image: every segment page and heap byte as mapped, the out fields,
/// the fd's directory and READ_VAR; pread offsets and ranges; reading twice; the fd's
/// errnos; a second snapshot is EBUSY until the first fd is closed.
fn idle() -> TestResult {
    let name = unique("snap-idle");
    let r = (|| {
        let (d, m, firsts) = segment_with(&name, &[("a", 8), ("b", 3 * P), ("c", 100)])?;
        ensure_eq!(m.len, 5 * PAGE, "mapping");
        for i in 0..m.len / 8 {
            m.set(i * 8, (i as u64) * 0x0101_0101 + 3);
        }
        d.heap(base(1), 8 * P)?;
        let h = d.map_heap(base(1), 8 * P)?;
        d.heap_grow(3 * P)?;
        for i in 0..(2 * PAGE) / 8 {
            h.set(i * 8, !(i as u64));
        }
        let s = snapshot(&d, &name)?;
        let i = s.info;
        ensure_eq!(
            (
                i.pages,
                i.variables,
                i.heap_base,
                i.heap_reserve,
                i.heap_size
            ),
            (5, 3, base(1), 8 * P, 3 * P),
            "out fields"
        );
        ensure!(
            i.taken_ns > 0 && i.generation >= 1 && i.mode == 0o600,
            "out fields {i:?}"
        );
        // Segment pages 0..5 in segment order; the mapping is in the same order.
        for p in 0..5u64 {
            let want: Vec<u8> = (0..PAGE / 8)
                .flat_map(|k| m.get(p as usize * PAGE + k * 8).to_ne_bytes())
                .collect();
            ensure!(s.page(p)? == want, "segment page {p}");
            ensure!(s.page(p)? == want, "segment page {p}, read again");
        }
        let heap = s.pread(DSU_HEAP_MMAP_OFFSET, 3 * PAGE)?;
        for k in 0..3 * PAGE / 8 {
            let want = if k < 2 * PAGE / 8 { !(k as u64) } else { 0 };
            ensure_eq!(
                u64::from_ne_bytes(heap[k * 8..k * 8 + 8].try_into().unwrap()),
                want,
                "heap word {k}"
            );
        }
        // Ranges: short at the end, 0 at the end, EINVAL outside both.
        ensure_eq!(
            s.pread(4 * P + 10, 2 * PAGE)?.len(),
            PAGE - 10,
            "short read at the end"
        );
        ensure_eq!(s.pread(5 * P, 8)?.len(), 0, "read at the segment's end");
        ensure_eq!(
            s.pread(5 * P + 1, 8),
            Err(Errno::EINVAL),
            "past the segment's end"
        );
        ensure_eq!(
            s.pread(DSU_HEAP_MMAP_OFFSET - 8, 8),
            Err(Errno::EINVAL),
            "before the heap"
        );
        ensure_eq!(
            s.pread(DSU_HEAP_MMAP_OFFSET + 3 * P, 8)?.len(),
            0,
            "at the heap's end"
        );
        ensure_eq!(
            s.pread(DSU_HEAP_MMAP_OFFSET + 3 * P + 1, 8),
            Err(Errno::EINVAL),
            "past the heap's end"
        );
        ensure_eq!(
            s.pread(u64::MAX / 2 + 1, 8),
            Err(Errno::EINVAL),
            "negative offset"
        );
        // read() advances the file position.
        let mut buf = [0u8; 16];
        ensure_eq!(
            nix::unistd::read(s.fd.as_raw_fd(), &mut buf),
            Ok(16),
            "read"
        );
        ensure_eq!(&buf[..8], &m.get(0).to_ne_bytes()[..], "read's bytes");
        // The directory and READ_VAR.
        let vars = s.variables()?;
        let names: Vec<String> = vars.iter().map(|v| cstr(&v.name)).collect();
        ensure_eq!(names, vec!["a", "b", "c"], "directory");
        ensure_eq!(vars[1].first_page, firsts[1], "first page of b");
        let b = s.read_var("b", 3 * PAGE)?;
        ensure_eq!(b, s.pread(firsts[1] * P, 3 * PAGE)?, "READ_VAR of b");
        ensure_eq!(
            s.read_var("c", 4096)?.len(),
            100,
            "READ_VAR of c is its size"
        );
        ensure_eq!(
            s.read_var("zz", 8),
            Err(Errno::ENOENT),
            "READ_VAR of a missing name"
        );
        // The fd's other operations.
        ensure_eq!(nix::unistd::write(&s.fd, b"x"), Err(Errno::EBADF), "write");
        // SAFETY: A mapping attempt that must fail.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ,
                libc::MAP_SHARED,
                s.fd.as_raw_fd(),
                0,
            )
        };
        ensure!(
            p == libc::MAP_FAILED && Errno::last() == Errno::EINVAL,
            "mmap"
        );
        // SAFETY: An unknown request on the fd.
        let r = unsafe { libc::ioctl(s.fd.as_raw_fd(), request_none(DSU_IOC_NR_READY) as _, 0) };
        ensure!(r < 0 && Errno::last() == Errno::ENOTTY, "READY on the fd");
        let mut l = dsu_list {
            size: size_of::<dsu_list>() as u32,
            record_size: size_of::<dsu_variable_info>() as u32,
            segment: cname(&name),
            ..Default::default()
        };
        // SAFETY: Valid struct.
        let r = unsafe { raw::list_variables(s.fd.as_raw_fd(), &mut l) };
        ensure_eq!(
            r.map(drop),
            Err(Errno::EINVAL),
            "LIST_VARIABLES naming a segment"
        );
        // One at a time.
        ensure_eq!(
            snapshot(&d, &name).map(drop),
            Err(Errno::EBUSY),
            "second snapshot"
        );
        drop(s);
        let again = snapshot(&d, &name)?;
        ensure_eq!(again.info.pages, 5, "snapshot after the first fd is closed");
        drop(h);
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static ERRORS: VmTest = VmTest {
    name: "kmod_snapshot::argument_errors",
    phase: Phase::Main,
    run: errors,
};
/// Flags, out fields, size, names, a missing segment, and read permission.
fn errors() -> TestResult {
    let name = unique("snap-err");
    let r = (|| {
        let d = Dsu::open()?;
        ensure!(d.attach(&name, DSU_ATTACH_MUST_CREATE, 0o640)?, "created");
        let good = || dsu_snapshot {
            size: size_of::<dsu_snapshot>() as u32,
            segment: cname(&name),
            ..Default::default()
        };
        let cases: Vec<(&str, dsu_snapshot, Errno)> = vec![
            ("flags", dsu_snapshot { flags: 1, ..good() }, Errno::EINVAL),
            ("fd set", dsu_snapshot { fd: 3, ..good() }, Errno::EINVAL),
            (
                "taken_ns set",
                dsu_snapshot {
                    taken_ns: 1,
                    ..good()
                },
                Errno::EINVAL,
            ),
            (
                "size small",
                dsu_snapshot { size: 8, ..good() },
                Errno::EINVAL,
            ),
            (
                "bad name",
                dsu_snapshot {
                    segment: cname("a/b"),
                    ..good()
                },
                Errno::EINVAL,
            ),
            (
                "missing",
                dsu_snapshot {
                    segment: cname("snap-none"),
                    ..good()
                },
                Errno::ENOENT,
            ),
        ];
        for (what, mut s, errno) in cases {
            ensure_eq!(snapshot_raw(&d, &mut s), Err(errno), "{}", what);
        }
        // 0640: the group may read, others may not.
        let n = name.clone();
        as_user(1000, 1000, &[], move || {
            let d = Dsu::open()?;
            ensure_eq!(snapshot(&d, &n).map(drop), Err(Errno::EACCES), "other uid");
            Ok(())
        })?;
        let n = name.clone();
        as_user(1000, 0, &[], move || {
            let d = Dsu::open()?;
            let s = snapshot(&d, &n)?;
            ensure_eq!(
                s.info.pages,
                0,
                "group member's snapshot of an empty segment"
            );
            Ok(())
        })?;
        Ok(())
    })();
    cleanup(&name);
    r
}

/// Pages the writers' sequence spans: segment pages first, then heap pages.
const SEQ_SEG: usize = 48;
const SEQ_HEAP: usize = 16;

#[distributed_slice(TESTS)]
static POINT_IN_TIME: VmTest = VmTest {
    name: "kmod_snapshot::point_in_time_under_writers",
    phase: Phase::Main,
    run: point_in_time,
};
/// Two writer processes run while 12 snapshots are taken and read slowly:
/// - one writes round `k` to the first word of every page of a sequence, in order (48
///   segment pages, then 16 heap pages): at any instant the sequence reads
///   `k, ..., k, k-1, ..., k-1`, so an image must be non-increasing with first minus
///   last at most 1 (read page by page without protection, later pages show later
///   rounds);
/// - the other increments counter A (one page), then counter B (another page): at any
///   instant A == B or A == B + 1.
fn point_in_time() -> TestResult {
    let name = unique("snap-pit");
    let r = (|| {
        let (d, m, _) = segment_with(&name, &[("seq", SEQ_SEG as u64 * P), ("a", 8), ("b", 8)])?;
        d.heap(base(2), 64 * P)?;
        let h = d.map_heap(base(2), 64 * P)?;
        d.heap_grow(SEQ_HEAP as u64 * P)?;
        let (mp, hp) = (m.ptr as usize, h.ptr as usize);
        let seq_writer = spawn(move || {
            let word = |i: usize| -> *mut u64 {
                if i < SEQ_SEG {
                    (mp + i * PAGE) as *mut u64
                } else {
                    (hp + (i - SEQ_SEG) * PAGE) as *mut u64
                }
            };
            for k in 1u64.. {
                for i in 0..SEQ_SEG + SEQ_HEAP {
                    // SAFETY: Inside the inherited shared mappings.
                    unsafe { word(i).write_volatile(k) };
                }
            }
            Ok(())
        });
        let pair_writer = spawn(move || {
            let a = (mp + SEQ_SEG * PAGE) as *mut u64;
            let b = (mp + (SEQ_SEG + 1) * PAGE) as *mut u64;
            for k in 1u64.. {
                // SAFETY: Inside the inherited shared mapping.
                unsafe {
                    a.write_volatile(k);
                    b.write_volatile(k);
                }
            }
            Ok(())
        });
        let result = (|| {
            // The writers are well into their rounds before the first snapshot.
            let t = std::time::Instant::now();
            while m.get(0) < 3 || m.get(SEQ_SEG * PAGE) < 3 {
                ensure!(t.elapsed().as_secs() < 30, "the writers did not start");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            for round in 0..12 {
                let s = snapshot(&d, &name)?;
                // Read slowly, so that unprotected pages would move on meanwhile.
                let mut seq = Vec::new();
                for i in 0..SEQ_SEG {
                    seq.push(s.word(i as u64, 0)?);
                    if i % 8 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
                for i in 0..SEQ_HEAP {
                    seq.push(s.heap_word((i * PAGE) as u64)?);
                }
                let (a, b) = (s.word(SEQ_SEG as u64, 0)?, s.word(SEQ_SEG as u64 + 1, 0)?);
                let ordered = seq.windows(2).all(|w| w[0] >= w[1]);
                ensure!(
                    ordered && seq[0] - seq[seq.len() - 1] <= 1,
                    "snapshot {round}: the sequence is not one instant's: {seq:?}"
                );
                ensure!(a == b || a == b + 1, "snapshot {round}: A {a}, B {b}");
                // The writers went on meanwhile (the image did not stop them).
                let later = m.get(0);
                ensure!(later >= seq[0], "writer went backwards");
                drop(s);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            ensure!(m.get(0) > 1, "the writer never ran");
            Ok(())
        })();
        for pid in [seq_writer, pair_writer] {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        drop(h);
        result
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static HEAP_CHANGES: VmTest = VmTest {
    name: "kmod_snapshot::heap_discard_and_grow_during_snapshot",
    phase: Phase::Main,
    run: heap_changes,
};
/// A discard punches out pages the image holds (the image keeps their bytes, the live heap
/// reads zeros), a growth adds pages past the image's heap size (not in it), and writes to
/// both after the instant leave the image as it was.
fn heap_changes() -> TestResult {
    let name = unique("snap-heap");
    let r = (|| {
        let d = Dsu::attached(&name)?;
        d.heap(base(3), 16 * P)?;
        let h = d.map_heap(base(3), 16 * P)?;
        d.heap_grow(4 * P)?;
        for p in 0..4 {
            h.set(p * PAGE + 16, 0xaa00 + p as u64);
        }
        let s = snapshot(&d, &name)?;
        d.heap_discard(P, 2 * P)?;
        ensure_eq!(h.get(PAGE + 16), 0, "live heap after the discard");
        ensure_eq!(d.heap_grow(8 * P), Ok(8 * P), "growth during the snapshot");
        h.set(PAGE + 16, 0xbad);
        h.set(3 * PAGE + 16, 0xbad);
        h.set(6 * PAGE + 16, 0xbad);
        for p in 0..4u64 {
            ensure_eq!(
                s.heap_word(p * P + 16),
                Ok(0xaa00 + p),
                "image heap page {p}"
            );
        }
        ensure_eq!(s.info.heap_size, 4 * P, "image heap size");
        ensure_eq!(
            s.pread(DSU_HEAP_MMAP_OFFSET + 6 * P, 8),
            Err(Errno::EINVAL),
            "grown page"
        );
        drop(s);
        // A discard with no snapshot works as before.
        d.heap_discard(3 * P, P)?;
        ensure_eq!(h.get(3 * PAGE + 16), 0, "discard after the snapshot");
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static REMOVED: VmTest = VmTest {
    name: "kmod_snapshot::gc_and_abort_during_snapshot",
    phase: Phase::Main,
    run: removed,
};
/// A candidate's addition removed by its abort, and a variable removed by GC, after the
/// instant: the image keeps both in its directory and their bytes.
fn removed() -> TestResult {
    let name = unique("snap-gc");
    let r = (|| {
        let keep = Dsu::attached(&name)?;
        let init = [0x5au8; 64];
        keep.resolve_ok(vec![var("old", 64, 1, Some(&init))])?;
        // A ready version that maps "old" and ends: GC may then remove it.
        {
            let v = Dsu::attached(&name)?;
            let got = v.resolve_ok(vec![var("old", 64, 1, None)])?;
            v.bind("v1", &[got[0].first_page], 0)?;
        }
        let cand = Dsu::attached(&name)?;
        let init2 = [0xc3u8; 64];
        let added = cand.resolve_ok(vec![var("new", 64, 2, Some(&init2))])?;
        cand.bind("cand", &[added[0].first_page], DSU_BIND_CANDIDATE)?;
        let s = snapshot(&keep, &name)?;
        drop(cand); // aborts: "new" is removed
        drop(keep);
        let g = Dsu::open()?;
        let (_, found) = g.gc(&name, DSU_GC_MIN_AGE, 0)?;
        let gone: Vec<String> = found.iter().map(|v| cstr(&v.name)).collect();
        let live: Vec<String> = g
            .list_variables(&name, 0, 16)?
            .0
            .iter()
            .map(|v| cstr(&v.name))
            .collect();
        ensure!(
            live.is_empty(),
            "live directory after abort and GC: {live:?} (GC found {gone:?})"
        );
        let names: Vec<String> = s.variables()?.iter().map(|v| cstr(&v.name)).collect();
        ensure_eq!(names, vec!["old", "new"], "image directory");
        ensure_eq!(s.read_var("old", 64)?, init.to_vec(), "image bytes of old");
        ensure_eq!(s.read_var("new", 64)?, init2.to_vec(), "image bytes of new");
        Ok(())
    })();
    cleanup(&name);
    r
}

#[distributed_slice(TESTS)]
static OUTLIVES: VmTest = VmTest {
    name: "kmod_snapshot::fd_outlives_segment_and_pins_module",
    phase: Phase::Unload,
    run: outlives,
};
/// The fd keeps the image readable after every handle is closed and the segment is
/// destroyed, and keeps the module loaded (rmmod fails) until it is closed.
fn outlives() -> TestResult {
    with_module_loaded(outlives_loaded)
}

/// Runs `f` with the module loaded, and leaves it loaded or not as it was (the Unload phase
/// may find it unloaded).
fn with_module_loaded(f: fn() -> TestResult) -> TestResult {
    let was = module_loaded();
    if !was {
        insmod("")?;
    }
    let r = f();
    if !was && module_loaded() {
        rmmod()?;
    }
    r
}

fn outlives_loaded() -> TestResult {
    let name = unique("snap-outlive");
    let s = {
        let (d, m, _) = segment_with(&name, &[("x", 2 * P)])?;
        m.set(PAGE + 8, 0x1234);
        let s = snapshot(&d, &name)?;
        d.destroy(&name)?;
        s
    };
    ensure_eq!(s.word(1, 8), Ok(0x1234), "image after the segment is gone");
    ensure!(
        sh("rmmod dsu").is_err(),
        "rmmod succeeded with a snapshot fd open"
    );
    ensure!(module_loaded(), "module unloaded with a snapshot fd open");
    drop(s);
    Ok(())
}

#[distributed_slice(TESTS)]
static LIMIT: VmTest = VmTest {
    name: "kmod_snapshot::user_page_limit_enomem",
    phase: Phase::Unload,
    run: limit,
};
/// With `max_user_pages` leaving room for the segment but not for its image's worst case,
/// SNAPSHOT is ENOMEM and nothing changes: writes go on, a second try fails the same way,
/// and a smaller segment's snapshot works. As uid 1000 (root's `CAP_SYS_RESOURCE` is
/// exempt from the limit).
fn limit() -> TestResult {
    with_module_loaded(limit_loaded)
}

fn limit_loaded() -> TestResult {
    with_module_params("max_user_pages=24", || {
        let name = unique("snap-limit");
        let n = name.clone();
        let r = as_user(1000, 1000, &[], move || {
            let name = n;
            let (d, m, _) = segment_with(&name, &[("big", 16 * P)])?;
            ensure_eq!(
                snapshot(&d, &name).map(drop),
                Err(Errno::ENOMEM),
                "16 + 16 > 24"
            );
            m.set(0, 7);
            ensure_eq!(m.get(0), 7, "write after the failed snapshot");
            ensure_eq!(snapshot(&d, &name).map(drop), Err(Errno::ENOMEM), "again");
            let small = unique("snap-limit-small");
            let (d2, _m2, _) = segment_with(&small, &[("s", 2 * P)])?;
            let s = snapshot(&d2, &small)?;
            ensure_eq!(s.info.pages, 2, "small snapshot");
            drop(s);
            cleanup(&small);
            Ok(())
        });
        cleanup(&name);
        r
    })
}
