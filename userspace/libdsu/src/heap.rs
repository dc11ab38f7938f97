//! The C allocator of the shared heap: `dsu_malloc`, `dsu_calloc`, `dsu_realloc`,
//! `dsu_free` and `dsu_heap_stats` on the process's installed heap
//! ([`dsu::heap::installed`]; attach installs a segment's heap). Like `malloc(3)` they
//! return null and set `errno` to `ENOMEM` when they fail, including when no heap is
//! installed; blocks are aligned to 16 bytes.

use std::ffi::{c_int, c_void};
use std::ptr::{NonNull, null_mut};

/// The alignment of every block (`alignof(max_align_t)` on x86-64 and aarch64).
const ALIGN: usize = 16;

fn enomem() -> *mut c_void {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() = libc::ENOMEM };
    null_mut()
}

/// The installed heap and `ptr` as one of its blocks; aborts on a pointer outside the heap
/// (like glibc's "free(): invalid pointer"), since freeing it would corrupt the heap.
fn heap_block(ptr: *mut c_void, what: &str) -> (&'static dsu::heap::RawHeap, NonNull<u8>) {
    match dsu::heap::installed() {
        Some(h) if h.contains(ptr.cast()) && ptr as usize % ALIGN == 0 => (
            h,
            NonNull::new(ptr.cast()).expect("in the heap, so not null"),
        ),
        _ => {
            eprintln!("{what}({ptr:p}): not a block of the dsu shared heap; aborting");
            std::process::abort()
        }
    }
}

/// `malloc` in the shared heap: `size` bytes aligned to 16, or null with `errno` =
/// `ENOMEM` (no heap installed, or it cannot grow). `dsu_malloc(0)` returns a unique
/// block.
///
/// ```
/// dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
/// let p = dsuc::dsu_malloc(100);
/// assert!(!p.is_null());
/// // SAFETY: p came from dsu_malloc.
/// unsafe { dsuc::dsu_free(p) };
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_malloc(size: usize) -> *mut c_void {
    match dsu::heap::installed().and_then(|h| h.allocate(size.max(1), ALIGN)) {
        Some(p) => p.as_ptr().cast(),
        None => enomem(),
    }
}

/// `calloc` in the shared heap: `n * size` zero bytes, or null with `errno` = `ENOMEM`
/// (also when `n * size` overflows). Pages the heap gave back to the system are not
/// written.
///
/// ```
/// dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
/// let p = dsuc::dsu_calloc(10, 8) as *const u64;
/// // SAFETY: 10 zeroed u64s.
/// assert_eq!(unsafe { *p.add(9) }, 0);
/// assert!(dsuc::dsu_calloc(usize::MAX, 2).is_null());
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_calloc(n: usize, size: usize) -> *mut c_void {
    let Some(bytes) = n.checked_mul(size) else {
        return enomem();
    };
    match dsu::heap::installed().and_then(|h| h.allocate_zeroed(bytes.max(1), ALIGN)) {
        Some(p) => p.as_ptr().cast(),
        None => enomem(),
    }
}

/// `realloc` in the shared heap: null `ptr` allocates; `size` 0 frees and returns null;
/// otherwise the block is resized (in place when it can), keeping its first bytes. On
/// failure returns null with `errno` = `ENOMEM` and leaves the block as it was.
///
/// # Safety
///
/// `ptr` is null or a live block of the shared heap (from any version or process).
/// A pointer outside the heap aborts the process.
///
/// ```
/// dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
/// // SAFETY: null, then the block just returned.
/// unsafe {
///     let p = dsuc::dsu_realloc(std::ptr::null_mut(), 4) as *mut u8;
///     p.copy_from(b"abcd".as_ptr(), 4);
///     let q = dsuc::dsu_realloc(p.cast(), 1 << 20) as *mut u8;
///     assert_eq!(std::slice::from_raw_parts(q, 4), b"abcd");
///     dsuc::dsu_free(q.cast());
/// }
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsu_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return dsu_malloc(size);
    }
    let (heap, block) = heap_block(ptr, "dsu_realloc");
    if size == 0 {
        // SAFETY: the caller's contract: a live block.
        unsafe { heap.deallocate(block) };
        return null_mut();
    }
    // SAFETY: a live block, aligned to 16.
    match unsafe { heap.reallocate(block, size, ALIGN) } {
        Some(p) => p.as_ptr().cast(),
        None => enomem(),
    }
}

/// `free` in the shared heap; null is ignored.
///
/// # Safety
///
/// `ptr` is null or a live block of the shared heap (from any version or process), not
/// used after. A pointer outside the heap aborts the process.
///
/// ```
/// // SAFETY: null.
/// unsafe { dsuc::dsu_free(std::ptr::null_mut()) };
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsu_free(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    let (heap, block) = heap_block(ptr, "dsu_free");
    // SAFETY: the caller's contract.
    unsafe { heap.deallocate(block) };
}

/// `struct dsu_heap_stats` of `libdsu.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DsuHeapStats {
    /// The heap's address, the same in every version.
    pub base: u64,
    /// Bytes backed.
    pub size: u64,
    /// Bytes in allocated blocks (16-byte headers included).
    pub allocated_bytes: u64,
    /// Allocated blocks.
    pub allocated_blocks: u64,
    /// Bytes in free blocks.
    pub free_bytes: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// The largest free block.
    pub largest_free: u64,
}

/// Fills `*out` with the heap's counters: 0, or `-EBADFD` if no heap is installed,
/// `-EINVAL` if `out` is null.
///
/// # Safety
///
/// `out` is null or points to a writable `struct dsu_heap_stats`.
///
/// ```
/// dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak()).unwrap();
/// let mut s = dsuc::DsuHeapStats::default();
/// // SAFETY: a valid struct.
/// assert_eq!(unsafe { dsuc::dsu_heap_stats(&mut s) }, 0);
/// assert!(s.size > 0);
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsu_heap_stats(out: *mut DsuHeapStats) -> c_int {
    if out.is_null() {
        return -libc::EINVAL;
    }
    let Some(heap) = dsu::heap::installed() else {
        return crate::fail_with(
            libc::EBADFD,
            "no shared heap: attach a segment with a heap first",
        );
    };
    let s = heap.stats();
    let stats = DsuHeapStats {
        base: s.base as u64,
        size: s.size as u64,
        allocated_bytes: s.allocated_bytes as u64,
        allocated_blocks: s.allocated_blocks as u64,
        free_bytes: s.free_bytes as u64,
        free_blocks: s.free_blocks as u64,
        largest_free: s.largest_free as u64,
    };
    // SAFETY: the caller's contract.
    unsafe { out.write(stats) };
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno() -> c_int {
        // SAFETY: errno is thread-local.
        unsafe { *libc::__errno_location() }
    }

    #[test]
    fn malloc_calloc_realloc_free() {
        let heap = dsu::heap::install(dsu::heap::MemfdRegion::new(1 << 30).unwrap().leak())
            .unwrap_or_else(|_| dsu::heap::installed().unwrap());
        let before = heap.stats().allocated_blocks;
        let p = dsu_malloc(0);
        assert!(!p.is_null() && p as usize % 16 == 0);
        let c = dsu_calloc(1000, 1000) as *mut u8;
        // SAFETY: 10^6 zeroed bytes.
        let zeroed = unsafe { std::slice::from_raw_parts(c, 1_000_000) };
        assert!(zeroed.iter().all(|&b| b == 0));
        // SAFETY: live blocks of the heap.
        unsafe {
            c.write_bytes(9, 1_000_000);
            let r = dsu_realloc(c.cast(), 10) as *mut u8;
            assert_eq!(std::slice::from_raw_parts(r, 10), [9; 10]);
            let r = dsu_realloc(r.cast(), 3_000_000) as *mut u8;
            assert_eq!(std::slice::from_raw_parts(r, 10), [9; 10]);
            assert!(dsu_realloc(r.cast(), 1 << 40).is_null());
            assert_eq!(errno(), libc::ENOMEM);
            assert!(dsu_realloc(r.cast(), 0).is_null(), "realloc to 0 frees");
            dsu_free(p);
        }
        assert!(dsu_calloc(1 << 62, 4).is_null());
        assert_eq!(heap.check().unwrap().allocated_blocks, before);
    }
}
