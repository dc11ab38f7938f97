//! [`MemfdRegion`]: a [`HeapRegion`] over a `memfd`, for heaps without the kernel module
//! (tests, benchmarks, programs sharing a heap between a parent and its forked children).

use super::region::HeapRegion;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// A heap region backed by an anonymous shared-memory file (`memfd_create(2)`), mapped
/// `MAP_SHARED` over its whole reserve at an address the kernel picks. Processes forked
/// after [`new`](Self::new) share it at the same address, as versions share a segment's
/// heap. Bytes past the file's size are reserved but not backed: touching them raises
/// `SIGBUS`, as in a segment's heap window. [`grow`](HeapRegion::grow) extends the file
/// (`ftruncate`), [`discard`](HeapRegion::discard) punches holes
/// (`fallocate(PUNCH_HOLE | KEEP_SIZE)`), so the memory cgroup's usage falls.
///
/// `grow` is not atomic against a concurrent `grow` of another process (the file size is
/// read, then set): [`RawHeap`](super::RawHeap) only grows under its lock.
///
/// ```
/// use dsu::heap::{HeapRegion, MemfdRegion};
/// let r = MemfdRegion::new(1 << 30).unwrap();
/// assert_eq!(r.size(), 0);
/// assert!(r.grow(10_000).unwrap() >= 10_000);
/// // SAFETY: the first 10 000 bytes are backed.
/// unsafe { r.base().write(1) };
/// ```
#[derive(Debug)]
pub struct MemfdRegion {
    fd: OwnedFd,
    base: *mut u8,
    reserve: usize,
    discarded: AtomicU64,
}

// SAFETY: the mapping is shared memory the region never frees while it lives; the fd and
// counter are thread-safe.
unsafe impl Send for MemfdRegion {}
// SAFETY: as above.
unsafe impl Sync for MemfdRegion {}

fn io(what: &'static str) -> crate::Error {
    crate::Error::Io {
        what,
        source: std::io::Error::last_os_error(),
    }
}

impl MemfdRegion {
    /// A region of `reserve` bytes (rounded up to pages), none backed yet.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if `memfd_create` or `mmap` fails.
    ///
    /// ```
    /// let r = dsu::heap::MemfdRegion::new(64 << 20).unwrap();
    /// assert_eq!(dsu::heap::HeapRegion::reserve(&r), 64 << 20);
    /// ```
    pub fn new(reserve: usize) -> crate::Result<MemfdRegion> {
        let reserve = reserve.next_multiple_of(4096);
        // SAFETY: a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"dsu-heap".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io("memfd_create for a heap region"));
        }
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a fresh shared mapping of the file at an address the kernel picks.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                reserve,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io("mmap of a heap region"));
        }
        Ok(MemfdRegion {
            fd,
            base: base.cast(),
            reserve,
            discarded: AtomicU64::new(0),
        })
    }

    /// Leaks the region (it is never unmapped), for [`RawHeap::open`](super::RawHeap::open)
    /// and [`install`](super::install), which need it for the rest of the program.
    ///
    /// ```
    /// let r: &'static dsu::heap::MemfdRegion = dsu::heap::MemfdRegion::new(1 << 20).unwrap().leak();
    /// ```
    pub fn leak(self) -> &'static MemfdRegion {
        Box::leak(Box::new(self))
    }

    /// Bytes of the file backed by memory now (`st_blocks`): falls when pages are
    /// discarded.
    ///
    /// ```
    /// use dsu::heap::{HeapRegion, MemfdRegion};
    /// let r = MemfdRegion::new(1 << 20).unwrap();
    /// r.grow(1 << 20).unwrap();
    /// assert_eq!(r.resident_bytes(), 0);
    /// // SAFETY: backed.
    /// unsafe { r.base().write(1) };
    /// assert_eq!(r.resident_bytes(), 4096);
    /// ```
    pub fn resident_bytes(&self) -> u64 {
        self.stat().map(|s| s.st_blocks as u64 * 512).unwrap_or(0)
    }

    /// Bytes this process has discarded through this region (a counter for tests).
    ///
    /// ```
    /// use dsu::heap::{HeapRegion, MemfdRegion};
    /// let r = MemfdRegion::new(1 << 20).unwrap();
    /// r.grow(1 << 20).unwrap();
    /// r.discard(0, 8192).unwrap();
    /// assert_eq!(r.discarded_bytes(), 8192);
    /// ```
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded.load(Ordering::Relaxed)
    }

    fn stat(&self) -> Option<libc::stat> {
        // SAFETY: fstat on our descriptor into a zeroed struct.
        unsafe {
            let mut st: libc::stat = core::mem::zeroed();
            (libc::fstat(self.fd.as_raw_fd(), &mut st) == 0).then_some(st)
        }
    }
}

// SAFETY: [base, base + reserve) is a shared mapping of the file, reserved for the region's
// life (never unmapped while the region lives; leaked regions never), inherited at the same
// address by forked children; [base, base + size()) is backed by the file.
unsafe impl HeapRegion for MemfdRegion {
    fn base(&self) -> *mut u8 {
        self.base
    }

    fn reserve(&self) -> usize {
        self.reserve
    }

    fn size(&self) -> usize {
        self.stat().map(|s| s.st_size as usize).unwrap_or(0)
    }

    fn grow(&self, min_size: usize) -> crate::Result<usize> {
        if min_size > self.reserve {
            return Err(crate::Error::Io {
                what: "growing a heap region past its reserve",
                source: std::io::Error::from_raw_os_error(libc::ENOMEM),
            });
        }
        let size = self.size();
        if size >= min_size {
            return Ok(size);
        }
        let min_size = min_size.next_multiple_of(4096);
        // SAFETY: ftruncate on our descriptor.
        if unsafe { libc::ftruncate(self.fd.as_raw_fd(), min_size as libc::off_t) } != 0 {
            return Err(io("ftruncate of a heap region"));
        }
        Ok(min_size)
    }

    fn discard(&self, offset: usize, len: usize) -> crate::Result<()> {
        // SAFETY: fallocate on our descriptor; punching a hole only zeroes file pages.
        let r = unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r != 0 {
            return Err(io("fallocate(PUNCH_HOLE) of a heap region"));
        }
        self.discarded.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for MemfdRegion {
    fn drop(&mut self) {
        // SAFETY: our mapping; a dropped (not leaked) region has no 'static users.
        unsafe { libc::munmap(self.base.cast(), self.reserve) };
    }
}
