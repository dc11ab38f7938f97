//! Review regressions: bugs found in a review of the kernel module, one test each.

use crate::kmod_ioctl::*;
use crate::{Phase, TESTS, TestResult, VmTest, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

const EVENT: usize = size_of::<dsu_event>();

/// read() of events into a buffer that cannot be written must not lose them: a read whose
/// first record faults fails with EFAULT and leaves every event queued, and a read whose
/// later record faults returns the records it did copy and keeps the rest.
#[distributed_slice(TESTS)]
static READ_EFAULT_KEEPS_EVENTS: VmTest = VmTest {
    name: "review::read_efault_keeps_events",
    phase: Phase::Main,
    run: read_efault_keeps_events,
};
fn read_efault_keeps_events() -> TestResult {
    let name = unique("review-read");
    let watcher = Dsu::open_flags(libc::O_RDWR | libc::O_NONBLOCK)?;
    watcher.attach(&name, 0, 0)?;
    let a = Dsu::attached(&name)?;
    let v = a.resolve_ok(vec![var("g", 8, 1, None)])?;
    // Candidates: one event (BOUND) each.
    let id_a = a.bind("a", &[v[0].first_page], DSU_BIND_CANDIDATE)?;
    let b = Dsu::attached(&name)?;
    let id_b = b.bind("b", &[v[0].first_page], DSU_BIND_CANDIDATE)?;

    // The first record faults: EFAULT, nothing consumed.
    // SAFETY: The kernel is given an unmapped address; it must not write to it.
    let n = unsafe { libc::read(watcher.fd(), 16 as *mut libc::c_void, 2 * EVENT) };
    ensure_eq!(
        (n, Errno::last()),
        (-1, Errno::EFAULT),
        "read into an unmapped buffer"
    );

    // Two pages, the second inaccessible: room for the first record only.
    let area = page_then_guard()?;
    // SAFETY: The last record's room of the first page, then the inaccessible page.
    let buf = unsafe { area.ptr.add(PAGE - EVENT) };
    // SAFETY: As above; the kernel checks every byte it writes.
    let n = unsafe { libc::read(watcher.fd(), buf.cast(), 2 * EVENT) };
    let first = if n == EVENT as isize {
        // SAFETY: The kernel wrote one whole record there.
        Some(unsafe { std::ptr::read_unaligned(buf.cast::<dsu_event>()) }.version_id)
    } else {
        None
    };
    let errno = Errno::last();
    drop(area);
    ensure_eq!(
        (n, first),
        (EVENT as isize, Some(id_a)),
        "read with room for one record (errno {errno})"
    );
    let rest: Vec<u64> = watcher.events()?.iter().map(|e| e.version_id).collect();
    ensure_eq!(rest, vec![id_b], "events left after the partial read");
    drop((a, b, watcher));
    cleanup(&name);
    Ok(())
}

/// Shmem pages in use, from /proc/meminfo (kB).
fn shmem_kb() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// An entry that a handle's RESOLVE creates names the handle's version even when the BIND
/// of that handle lands while the RESOLVE is copying initial values in (after it looked at
/// the handle's state, before it committed): `Directory::adopt` at BIND ran too early for
/// the entry, so its `created_by` stayed 0 for good.
#[distributed_slice(TESTS)]
static RESOLVE_RACING_BIND_NAMES_VERSION: VmTest = VmTest {
    name: "review::resolve_racing_bind_names_version",
    phase: Phase::Main,
    run: resolve_racing_bind_names_version,
};
fn resolve_racing_bind_names_version() -> TestResult {
    const BIG: usize = 32 << 20;
    let init = vec![0x5au8; BIG];
    let name = unique("review-adopt");
    let h = Dsu::attached(&name)?;
    let v = h.resolve_ok(vec![var("small", 8, 1, None)])?;
    let before = shmem_kb();
    let (id, resolved) = std::thread::scope(|s| {
        let resolver = s.spawn(|| h.resolve_ok(vec![var("big", BIG as u64, 2, Some(&init))]));
        // BIND once the RESOLVE is allocating and copying (Shmem grows page by page).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while shmem_kb() < before + 2048 && std::time::Instant::now() < deadline {
            std::hint::spin_loop();
        }
        let id = h.bind("racer", &[v[0].first_page], 0);
        (id, resolver.join().expect("resolver panicked"))
    });
    let id = id?;
    let big = resolved?;
    ensure_eq!(big[0].status, DSU_VAR_ADDED, "big entry status");
    let (vars, _) = h.list_variables(&name, 0, 16)?;
    let entry = vars
        .iter()
        .find(|e| cstr(&e.name) == "big")
        .ok_or("big entry not listed")?;
    ensure_eq!(
        (entry.created_by, cstr(&entry.created_label)),
        (id, "racer".to_string()),
        "created_by of an entry the bound handle created"
    );
    drop(h);
    cleanup(&name);
    Ok(())
}
