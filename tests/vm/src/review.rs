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
    let id_a = a.bind("a", &[v[0].first_page], 0)?;
    let b = Dsu::attached(&name)?;
    let id_b = b.bind("b", &[v[0].first_page], 0)?;

    // The first record faults: EFAULT, nothing consumed.
    // SAFETY: The kernel is given an unmapped address; it must not write to it.
    let n = unsafe { libc::read(watcher.fd(), 16 as *mut libc::c_void, 2 * EVENT) };
    ensure_eq!(
        (n, Errno::last()),
        (-1, Errno::EFAULT),
        "read into an unmapped buffer"
    );

    // Two pages, the second inaccessible: room for the first record only.
    // SAFETY: A fresh anonymous mapping, unmapped below.
    let area = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    ensure_eq!(area == libc::MAP_FAILED, false, "mmap");
    // SAFETY: The second page of our own mapping.
    unsafe { libc::mprotect(area.cast::<u8>().add(PAGE).cast(), PAGE, libc::PROT_NONE) };
    // SAFETY: The last record's room of the first page, then the inaccessible page.
    let buf = unsafe { area.cast::<u8>().add(PAGE - EVENT) };
    // SAFETY: As above; the kernel checks every byte it writes.
    let n = unsafe { libc::read(watcher.fd(), buf.cast(), 2 * EVENT) };
    let first = if n == EVENT as isize {
        // SAFETY: The kernel wrote one whole record there.
        Some(unsafe { std::ptr::read_unaligned(buf.cast::<dsu_event>()) }.version_id)
    } else {
        None
    };
    let errno = Errno::last();
    // SAFETY: Our own mapping.
    unsafe { libc::munmap(area, 2 * PAGE) };
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
