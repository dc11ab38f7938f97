//! The seam between the kernel's heap window and an allocator: [`HeapRegion`], its
//! implementation for the attached segment ([`SegmentHeap`]), and how `attach` maps the
//! window (at the same address in every process, before the globals are bound).

use crate::error::{Error, Result};
use crate::sys::{Device, HeapInfo};
use nix::errno::Errno;
use std::sync::OnceLock;

/// The memory a heap allocator manages: `[base, base + reserve)` is reserved at the same
/// address in every process, `[base, base + size())` is backed. Implementors guarantee that.
///
/// # Safety
///
/// Implementors guarantee that `[base(), base() + reserve())` stays mapped for as long as
/// the implementor lives (for [`SegmentHeap`]: the process), at that address in every
/// process that shares the heap, that `[base(), base() + size())` is readable and writable
/// memory, and that `size()` never shrinks.
///
/// ```no_run
/// use dsu::heap::HeapRegion;
/// fn backed(r: &dyn HeapRegion) -> std::ops::Range<usize> {
///     let base = r.base() as usize;
///     base..base + r.size()
/// }
/// ```
pub unsafe trait HeapRegion: Send + Sync {
    /// The first byte of the window, page-aligned.
    fn base(&self) -> *mut u8;
    /// The window's length in bytes (a page multiple).
    fn reserve(&self) -> usize;
    /// Bytes backed now; another process may have grown it since: re-read, never cache.
    fn size(&self) -> usize;
    /// Grows so that size() >= min_size; returns the new size. Past the limits: Err.
    fn grow(&self, min_size: usize) -> crate::Result<usize>;
    /// Returns the pages of [offset, offset+len) (page-aligned) to the system; they read as 0 after.
    fn discard(&self, offset: usize, len: usize) -> crate::Result<()>;
}

/// The reserve [`Attach::heap`](crate::Attach::heap) gives when asked for 0 bytes, and C's
/// `DSU_HEAP`: 1 GiB of address space (pages are only allocated as the heap grows).
///
/// ```
/// assert_eq!(dsu::heap::DEFAULT_RESERVE, 1 << 30);
/// ```
pub const DEFAULT_RESERVE: usize = 1 << 30;

/// The attached segment's heap, mapped in this process for its whole life.
///
/// It owns a duplicate of the attach's `/dev/dsu` handle (the same open file), through
/// which [`grow`](HeapRegion::grow), [`discard`](HeapRegion::discard) and
/// [`size`](HeapRegion::size) ask the kernel (`DSU_IOC_HEAP_GROW`, `DSU_IOC_HEAP_DISCARD`,
/// `DSU_IOC_HEAP`: one ioctl each).
///
/// ```no_run
/// use dsu::heap::HeapRegion;
/// let version = dsu::Attach::new("app", "1.0").heap(0).attach()?;
/// let heap: &'static dsu::heap::SegmentHeap = version.heap().expect("a heap");
/// println!("heap {:p}, {} of {} bytes backed", heap.base(), heap.size(), heap.reserve());
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Debug)]
pub struct SegmentHeap {
    base: usize,
    reserve: usize,
    segment: String,
    dev: Device,
}

// SAFETY: `attach` maps `[base, base + reserve)` at the address the segment records (the
// same in every process) and never unmaps it (`SegmentHeap`s live in a static); the kernel
// backs `[base, base + size)` with shared pages and only grows the size; the window's
// mmap refuses mremap, so it cannot move.
unsafe impl HeapRegion for SegmentHeap {
    fn base(&self) -> *mut u8 {
        self.base as *mut u8
    }

    fn reserve(&self) -> usize {
        self.reserve
    }

    fn size(&self) -> usize {
        // The handle is attached for the process's life, so this only fails if the module
        // misbehaves; 0 then makes the allocator grow, which reports the error.
        self.dev.heap(None).map_or(0, |h| h.size as usize)
    }

    fn grow(&self, min_size: usize) -> Result<usize> {
        Ok(self.dev.heap_grow(min_size as u64)? as usize)
    }

    fn discard(&self, offset: usize, len: usize) -> Result<()> {
        self.dev.heap_discard(offset as u64, len as u64)
    }
}

impl SegmentHeap {
    /// The segment whose heap this is.
    ///
    /// ```no_run
    /// let v = dsu::Attach::new("app", "1.0").heap(0).attach()?;
    /// assert_eq!(v.heap().unwrap().segment(), "app");
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn segment(&self) -> &str {
        &self.segment
    }
}

/// This process's heap: set once, when [`attach`](crate::attach) maps the segment's heap
/// (before it resolves the globals, so that migrations can allocate in it). `None` before,
/// or if the segment has no heap and the attach did not ask for one.
///
/// ```no_run
/// if let Some(heap) = dsu::heap::region() {
///     println!("heap of {}", heap.segment());
/// }
/// ```
pub fn region() -> Option<&'static SegmentHeap> {
    REGION.get()
}

static REGION: OnceLock<SegmentHeap> = OnceLock::new();

/// Where `attach` looks for a free window when it creates a heap: 1 GiB-aligned slots in
/// `[0x2000_0000_0000, 0x6000_0000_0000)`, above where Linux puts the heap (`brk`) and
/// executables, and below the top-down mmap area near `0x7fxx_xxxx_xxxx` on x86-64 and
/// arm64 (48-bit): a range no process's own mappings normally reach, so that other
/// versions, started later, find it free too.
const SLOTS: std::ops::Range<usize> = 0x2000_0000_0000..0x6000_0000_0000;
const SLOT_ALIGN: usize = 1 << 30;

/// `attach`'s heap step, after ATTACH and before RESOLVE: maps the segment's heap if it has
/// one; otherwise, with `reserve` (bytes, 0: [`DEFAULT_RESERVE`]), creates it at a free
/// window and maps it. Sets [`region()`] and returns it (`None`: no heap, none asked for).
///
/// A window that this process already uses is [`Error::HeapAddressTaken`], naming what is
/// there; nothing is changed in the segment then.
pub(crate) fn attach_heap(
    dev: &Device,
    segment: &str,
    reserve: Option<usize>,
) -> Result<Option<&'static SegmentHeap>> {
    let existing = match dev.heap(None) {
        Ok(h) => Some(h),
        Err(Error::Kernel {
            errno: Errno::ENOENT,
            ..
        }) => None,
        // Without asking for a heap, a module that predates heaps (ENOTTY) or a segment this
        // process may only read (an attach without globals) simply gives none.
        Err(Error::Kernel {
            errno: Errno::ENOTTY,
            ..
        })
        | Err(Error::PermissionDenied { .. })
            if reserve.is_none() =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(mapped) = REGION.get() {
        // A failed attach in this process got as far as mapping it; a retry of the same
        // segment reuses it.
        return match existing {
            Some(h) if h.base as usize == mapped.base && mapped.segment == segment => {
                Ok(Some(mapped))
            }
            _ => Err(Error::HeapAddressTaken {
                segment: segment.into(),
                base: existing.map_or(0, |h| h.base),
                end: existing.map_or(0, |h| h.base + h.reserve),
                occupants: format!(
                    "the heap of segment \"{}\", mapped by an earlier attach of this process",
                    mapped.segment
                ),
            }),
        };
    }
    let heap = match (existing, reserve) {
        (Some(h), _) => map_existing(dev, segment, &h)?,
        (None, None) => return Ok(None),
        (None, Some(r)) => create(dev, segment, r)?,
    };
    let mine = SegmentHeap {
        base: heap.base as usize,
        reserve: heap.reserve as usize,
        segment: segment.into(),
        dev: dev.try_clone()?,
    };
    // Nothing else sets it: `attach` runs once at a time (its ATTACHED flag).
    let _ = REGION.set(mine);
    Ok(REGION.get())
}

/// Maps an existing heap with `MAP_FIXED_NOREPLACE`; a taken range is
/// [`Error::HeapAddressTaken`] with what occupies it.
fn map_existing(dev: &Device, segment: &str, h: &HeapInfo) -> Result<HeapInfo> {
    // SAFETY: nothing is replaced (MAP_FIXED_NOREPLACE); the window lives as long as the
    // process (REGION), and is only reached through raw pointers by allocators.
    match unsafe { dev.mmap_heap(h, false) } {
        Ok(_) => Ok(*h),
        Err(Error::Kernel {
            errno: Errno::EEXIST,
            ..
        }) => Err(Error::HeapAddressTaken {
            segment: segment.into(),
            base: h.base,
            end: h.base + h.reserve,
            occupants: occupants(h.base, h.base + h.reserve),
        }),
        Err(e) => Err(e),
    }
}

/// Creates the heap at a free, randomly chosen window, reserved first with an inaccessible
/// private mapping so that nothing takes it before the heap's mapping replaces it. If
/// another process created the heap meanwhile, maps that one instead.
fn create(dev: &Device, segment: &str, reserve: usize) -> Result<HeapInfo> {
    let reserve = match reserve {
        0 => DEFAULT_RESERVE,
        // Larger than the address space: the module's answer for a window above its limit.
        r => r.checked_next_multiple_of(4096).ok_or(Error::Limit {
            what: "the heap window asked for is larger than a heap may be",
            param: "max_heap_pages",
        })?,
    };
    let probe = reserve_window(reserve)?;
    let unreserve = || {
        // SAFETY: our own PROT_NONE reservation, which nothing else uses.
        unsafe { libc::munmap(probe as *mut libc::c_void, reserve) };
    };
    let h = match dev.heap(Some((probe as u64, reserve as u64))) {
        Ok(h) => h,
        Err(e) => {
            unreserve();
            return Err(e);
        }
    };
    if h.base != probe as u64 || h.reserve != reserve as u64 {
        // Another process created it first: map theirs.
        unreserve();
        return map_existing(dev, segment, &h);
    }
    // SAFETY: the range is our own reservation (made above, used by nothing else), which
    // the heap's mapping replaces.
    match unsafe { dev.mmap_heap(&h, true) } {
        Ok(_) => Ok(h),
        Err(e) => {
            unreserve();
            Err(e)
        }
    }
}

/// Reserves `len` bytes (inaccessible, no memory) at a free, randomly chosen 1 GiB-aligned
/// slot of [`SLOTS`]; returns its address.
fn reserve_window(len: usize) -> Result<usize> {
    use std::hash::BuildHasher;
    let slots = (SLOTS.end - SLOTS.start).saturating_sub(len) / SLOT_ALIGN + 1;
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0..64u64 {
        let slot = random.hash_one((std::process::id(), attempt)) as usize % slots;
        let addr = SLOTS.start + slot * SLOT_ALIGN;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping; PROT_NONE and NORESERVE
        // make the reservation cost no memory.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            match Errno::last() {
                Errno::EEXIST => continue,
                e => {
                    return Err(Error::Io {
                        what: "reserving address space for the shared heap",
                        source: e.into(),
                    });
                }
            }
        }
        if p as usize == addr {
            return Ok(addr);
        }
        // SAFETY: the mapping just made, where the kernel put it (an old kernel's hint).
        unsafe { libc::munmap(p, len) };
    }
    Err(Error::Io {
        what: "finding a free window for the shared heap (64 random slots were in use)",
        source: Errno::EEXIST.into(),
    })
}

/// What `/proc/self/maps` shows in `[start, end)`: one "start-end perms path" per mapping,
/// `; `-separated.
fn occupants(start: u64, end: u64) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let found: Vec<String> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3).unwrap_or("[anonymous]");
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            );
            (a < end && b > start).then(|| format!("{range} {perms} {path}"))
        })
        .collect();
    if found.is_empty() {
        "a mapping that ended before it could be named".into()
    } else {
        found.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupants_names_what_overlaps() {
        let p = reserve_window(1 << 20).expect("a free slot");
        let text = occupants(p as u64, p as u64 + 4096);
        assert!(text.contains(&format!("{p:x}-")), "{text}");
        assert!(text.contains("---p"), "{text}");
        // SAFETY: the reservation just made.
        unsafe { libc::munmap(p as *mut libc::c_void, 1 << 20) };
        assert_eq!(
            occupants(p as u64, p as u64 + 4096),
            "a mapping that ended before it could be named"
        );
    }

    #[test]
    fn windows_are_slot_aligned_inside_the_range() {
        let p = reserve_window(2 << 30).expect("a free slot");
        assert_eq!(p % SLOT_ALIGN, 0);
        assert!(SLOTS.contains(&p) && p + (2 << 30) <= SLOTS.end);
        // SAFETY: the reservation just made.
        unsafe { libc::munmap(p as *mut libc::c_void, 2 << 30) };
    }
}
