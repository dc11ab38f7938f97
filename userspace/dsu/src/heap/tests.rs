//! Host tests of the shared heap over memfd regions. The checks are written against any
//! [`HeapRegion`] (`fresh_heap` is the only memfd-specific part), so that the VM suite can
//! run them over a segment's heap.

use super as heap;
use super::testing::{self, Rng, fill, intact, wait_child};
use super::{HeapData, HeapRegion, MemfdRegion, Mutex, RawHeap, install, raw};
use std::collections::HashMap as StdMap;
use std::ptr::NonNull;

fn fresh_heap(reserve: usize) -> (&'static MemfdRegion, RawHeap) {
    let region = MemfdRegion::new(reserve).unwrap().leak();
    let heap = RawHeap::open(region).unwrap();
    (region, heap)
}

#[test]
fn class_mapping_is_monotonic_and_search_fits() {
    let mut last = (0, 0);
    for size in (32..1 << 20).step_by(16) {
        let c = raw::test_mapping(size);
        assert!(c >= last, "{size}");
        last = c;
    }
}

#[test]
fn allocate_free_alignments_and_sizes() {
    let (_, heap) = fresh_heap(256 << 20);
    let mut live = Vec::new();
    for (i, align) in [1usize, 8, 16, 32, 64, 4096, 1 << 16].iter().enumerate() {
        for size in [1usize, 15, 16, 17, 100, 4096, 100_000] {
            let p = heap.allocate(size, *align).unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0);
            // SAFETY: live block.
            assert!(unsafe { heap.usable_size(p) } >= size);
            fill(p, size, i as u8);
            live.push((p, size, i as u8));
        }
    }
    heap.check().unwrap();
    for (p, size, seed) in live {
        assert!(intact(p.as_ptr() as usize, size, seed));
        // SAFETY: live block.
        unsafe { heap.deallocate(p) };
    }
    let s = heap.check().unwrap();
    assert_eq!(s.allocated_blocks, 0);
    assert!(s.free_blocks > 1, "small blocks wait on fast lists");
    heap.trim();
    let s = heap.check().unwrap();
    assert_eq!(s.free_blocks, 1, "everything merged back into one block");
    assert!(
        heap.allocate(8, 3).is_none(),
        "alignment not a power of two"
    );
}

/// Random malloc/realloc/free against a model (a map of live blocks with byte patterns),
/// with the full check every 100 operations.
#[test]
fn randomised_against_model() {
    let (_, heap) = fresh_heap(1 << 30);
    let mut rng = Rng(0x1234_5678);
    let mut model: StdMap<usize, (usize, u8)> = StdMap::new();
    for i in 0..20_000u32 {
        let op = rng.below(10);
        if op < 5 || model.is_empty() {
            let size = rng.size(2_000_000);
            let align = 1 << rng.below(8);
            let zeroed = rng.below(4) == 0;
            let p = if zeroed {
                heap.allocate_zeroed(size, align)
            } else {
                heap.allocate(size, align)
            }
            .unwrap();
            if zeroed {
                assert!(intact(p.as_ptr() as usize, size, 0), "calloc not zero");
            }
            let seed = i as u8;
            fill(p, size, seed);
            assert!(model.insert(p.as_ptr() as usize, (size, seed)).is_none());
        } else {
            let k = *model
                .keys()
                .nth(rng.below(model.len() as u64) as usize)
                .unwrap();
            let (size, seed) = model.remove(&k).unwrap();
            assert!(intact(k, size, seed), "block {k:#x} overwritten");
            let p = NonNull::new(k as *mut u8).unwrap();
            if op < 8 {
                // SAFETY: live block.
                unsafe { heap.deallocate(p) };
            } else {
                let new = rng.size(2_000_000);
                // SAFETY: live block, aligned to at least 1.
                let q = unsafe { heap.reallocate(p, new, 1) }.unwrap();
                assert!(
                    intact(q.as_ptr() as usize, size.min(new), seed),
                    "realloc lost data"
                );
                fill(q, new, seed);
                model.insert(q.as_ptr() as usize, (new, seed));
            }
        }
        if i % 100 == 0 {
            let s = heap.check().unwrap();
            assert_eq!(s.allocated_blocks, model.len());
        }
        if i % 2000 == 0 {
            heap.check_zero_ranges().unwrap();
        }
    }
    let blocks = heap.allocations().unwrap();
    assert_eq!(blocks.len(), model.len());
    for b in blocks {
        assert!(model[&b.ptr].0 <= b.usable);
    }
}

/// Small freed blocks wait on fast lists, and go back to the segregated lists (merged)
/// when an allocation would otherwise need more than the region can give.
#[test]
fn fast_lists_are_consolidated_before_growth_fails() {
    let (region, heap) = fresh_heap(16 << 20);
    let mut small = Vec::new();
    while heap.stats().size < 12 << 20 {
        small.push(heap.allocate(40, 8).unwrap());
    }
    for p in small {
        // SAFETY: live blocks.
        unsafe { heap.deallocate(p) };
    }
    let s = heap.check().unwrap();
    assert_eq!(s.allocated_blocks, 0);
    assert!(s.free_blocks > 1000, "on the fast lists: {}", s.free_blocks);
    let big = heap
        .allocate(14 << 20, 8)
        .expect("the fast lists were merged back");
    assert!(region.size() <= 16 << 20);
    heap.check().unwrap();
    // SAFETY: live block.
    unsafe { heap.deallocate(big) };
}

/// Absurd sizes fail cleanly (no overflow, the heap unchanged).
#[test]
fn huge_requests_fail() {
    let (_, heap) = fresh_heap(64 << 20);
    let p = heap.allocate(100, 8).unwrap();
    for size in [usize::MAX, usize::MAX / 2, 1 << 62, 1 << 47, 65 << 20] {
        assert!(heap.allocate(size, 8).is_none(), "{size}");
        assert!(heap.allocate(size, 4096).is_none(), "{size}");
        assert!(heap.allocate_zeroed(size, 8).is_none(), "{size}");
        // SAFETY: a live block; on failure it is kept.
        assert!(unsafe { heap.reallocate(p, size, 8) }.is_none(), "{size}");
    }
    let s = heap.check().unwrap();
    assert_eq!(s.allocated_blocks, 1);
}

/// Reallocation in place: growing into a free next block and shrinking keep the address;
/// the freed tail is reused.
#[test]
fn realloc_in_place() {
    let (_, heap) = fresh_heap(64 << 20);
    let a = heap.allocate(100, 16).unwrap();
    let b = heap.allocate(1000, 16).unwrap();
    let c = heap.allocate(100, 16).unwrap(); // keeps b's space from the tail
    fill(a, 100, 3);
    // SAFETY: live blocks.
    unsafe { heap.deallocate(b) };
    // SAFETY: live block.
    let a2 = unsafe { heap.reallocate(a, 900, 16) }.unwrap();
    assert_eq!(a2, a, "grew into the free next block");
    assert!(intact(a.as_ptr() as usize, 100, 3));
    heap.check().unwrap();
    // SAFETY: live block.
    let a3 = unsafe { heap.reallocate(a2, 50, 16) }.unwrap();
    assert_eq!(a3, a, "shrank in place");
    assert!(intact(a.as_ptr() as usize, 50, 3));
    let s = heap.check().unwrap();
    let d = heap.allocate(800, 16).unwrap();
    assert!(
        (d.as_ptr() as usize) < c.as_ptr() as usize,
        "the freed tail is reused"
    );
    assert_eq!(
        heap.check().unwrap().allocated_blocks,
        s.allocated_blocks + 1
    );
}

#[test]
fn growth_and_limit() {
    let (region, heap) = fresh_heap(16 << 20);
    let first = region.size();
    let mut live = Vec::new();
    while let Some(p) = heap.allocate(100_000, 8) {
        live.push(p);
    }
    assert!(region.size() > first, "grew");
    assert!(
        live.len() > 100,
        "{} blocks of 100 kB in 16 MiB",
        live.len()
    );
    assert!(region.size() <= 16 << 20);
    let s = heap.check().unwrap();
    assert_eq!(s.allocated_blocks, live.len());
    for p in live {
        // SAFETY: live block.
        unsafe { heap.deallocate(p) };
    }
    assert_eq!(heap.check().unwrap().allocated_blocks, 0);
    assert!(
        heap.allocate(15 << 20, 8).is_some(),
        "the freed span is reused whole"
    );
}

/// A span the region holds but the heap does not manage (a grower killed between the
/// region's growth and the logged update) is taken back by the next growth.
#[test]
fn unmanaged_span_is_reclaimed() {
    let (region, heap) = fresh_heap(64 << 20);
    let before = heap.check().unwrap();
    region.grow(before.size + (8 << 20)).unwrap();
    let s = heap.check().unwrap();
    assert_eq!(s.managed, before.managed, "not yet");
    let p = heap.allocate(before.largest_free + 4096, 8).unwrap();
    let s = heap.check().unwrap();
    assert!(s.managed >= before.size + (8 << 20));
    // SAFETY: live block.
    unsafe { heap.deallocate(p) };
}

/// A large freed span goes back to the system (holes in the memfd), and is reused
/// correctly afterwards (calloc of it reads zero, a later malloc of it works).
#[test]
fn large_free_discards_pages() {
    let (region, heap) = fresh_heap(256 << 20);
    let a = heap.allocate(8 << 20, 8).unwrap();
    let guard = heap.allocate(100, 8).unwrap(); // keeps `a` from merging with the tail
    fill(a, 8 << 20, 0xAB);
    let resident = region.resident_bytes();
    let discarded = region.discarded_bytes();
    assert!(resident >= 8 << 20);
    // SAFETY: live block.
    unsafe { heap.deallocate(a) };
    assert!(region.discarded_bytes() - discarded >= (8 << 20) - 8192);
    assert!(
        region.resident_bytes() <= resident - ((8 << 20) - 8192),
        "resident {} -> {}",
        resident,
        region.resident_bytes()
    );
    heap.check().unwrap();
    let z = heap.allocate_zeroed(6 << 20, 8).unwrap();
    assert!(
        region.resident_bytes() < resident - (4 << 20),
        "calloc of discarded pages did not write them"
    );
    // (Reading shmem holes allocates pages: check the contents after the count.)
    assert!(intact(z.as_ptr() as usize, 6 << 20, 0));
    fill(z, 6 << 20, 1);
    // SAFETY: live blocks.
    unsafe {
        heap.deallocate(z);
        heap.deallocate(guard);
    }
    heap.check().unwrap();
    // A small free next to a discarded block discards only the pages it adds.
    let d = region.discarded_bytes();
    let small = heap.allocate(100, 8).unwrap();
    // SAFETY: live block.
    unsafe { heap.deallocate(small) };
    assert!(
        region.discarded_bytes() - d <= 8192,
        "{}",
        region.discarded_bytes() - d
    );
}

/// 1,000 children killed by SIGKILL at random moments in a loop of random heap calls;
/// after each, the heap recovers and passes the full check with at most the killed
/// call's block leaked. Fails without the undo log's rollback (a kill between two
/// metadata stores leaves broken lists).
#[test]
fn crash_consistency_under_sigkill() {
    let (_, heap) = fresh_heap(1 << 30);
    let heap: &'static RawHeap = std::boxed::Box::leak(std::boxed::Box::new(heap));
    let trials = 1000;
    let mid = testing::crash_trials(heap, trials);
    eprintln!("{trials} kills, {mid} inside a heap operation (undo log not empty)");
    assert!(
        mid * 20 >= trials,
        "only {mid} of {trials} kills interrupted an operation: the test is too weak"
    );
    assert_eq!(heap.check().unwrap().allocated_blocks, 0);
}

/// The long run of the crash trials (`DSU_HEAP_CRASH_TRIALS`, default 10 000):
/// `cargo test -p dsu --lib heap::tests::crash_consistency_long -- --ignored`.
#[test]
#[ignore = "long: run on demand"]
fn crash_consistency_long() {
    let trials = std::env::var("DSU_HEAP_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (_, heap) = fresh_heap(4 << 30);
    let heap: &'static RawHeap = std::boxed::Box::leak(std::boxed::Box::new(heap));
    let mid = testing::crash_trials(heap, trials);
    eprintln!("{trials} kills, {mid} inside a heap operation (undo log not empty)");
    assert_eq!(heap.check().unwrap().allocated_blocks, 0);
}

/// 4 processes x 4 threads doing malloc/free of mixed sizes, checked byte-exact.
#[test]
fn stress_4_processes_4_threads() {
    let (_, heap) = fresh_heap(1 << 30);
    let heap: &'static RawHeap = std::boxed::Box::leak(std::boxed::Box::new(heap));
    testing::stress(heap, 4, 4, 6000);
}

/// A corrupted heap is reported, not walked blindly.
#[test]
fn check_finds_corruption() {
    let (_, heap) = fresh_heap(64 << 20);
    let p = heap.allocate(100, 8).unwrap();
    let q = heap.allocate(100, 8).unwrap();
    // SAFETY: live block.
    unsafe { heap.deallocate(p) };
    heap.check().unwrap();
    // Mark q's header free behind the allocator's back.
    // SAFETY: q's size word, 8 bytes before its payload.
    unsafe { *(q.as_ptr().sub(8) as *mut u64) |= 1 };
    let e = heap.check().unwrap_err();
    assert!(e.what.contains("free"), "{e}");
}

/// The heap's first bytes must be a dsu heap or zero.
#[test]
fn foreign_region_is_refused() {
    let region = MemfdRegion::new(1 << 20).unwrap().leak();
    region.grow(1 << 20).unwrap();
    // SAFETY: backed.
    unsafe { region.base().write_bytes(0x55, 64) };
    let e = RawHeap::open(region).unwrap_err();
    assert!(
        e.to_string().contains("something other than a dsu heap"),
        "{e}"
    );
}

// Containers over the process's installed heap.

fn installed_heap() -> &'static RawHeap {
    static REGION: std::sync::OnceLock<&'static MemfdRegion> = std::sync::OnceLock::new();
    let region = REGION.get_or_init(|| MemfdRegion::new(4 << 30).unwrap().leak());
    install(*region).unwrap()
}

#[test]
fn containers_nest() {
    installed_heap();
    let mut m: heap::HashMap<u64, heap::Vec<heap::String>> = heap::HashMap::new();
    for i in 0..1000u64 {
        m.entry(i % 10)
            .or_default()
            .push(heap::String::from(&*format!("v{i}")));
    }
    assert_eq!(m[&3].len(), 100);
    assert_eq!(m[&3][5].as_str(), "v53");
    let b = heap::Box::new(heap::Vec::from_iter([1u32, 2, 3]));
    assert_eq!(b.iter().sum::<u32>(), 6);
    let mut names: heap::HashMap<heap::String, u64> = heap::HashMap::new();
    names.insert(heap::String::from("alice"), 1);
    assert_eq!(names.get("alice"), Some(&1));
    let heap = installed_heap();
    for v in m.values() {
        assert!(heap.contains(v.as_ptr().cast()));
    }
}

#[test]
fn fingerprints_cover_elements_and_containers() {
    use crate::Shared;
    let all = [
        <heap::Vec<u8> as HeapData>::FINGERPRINT,
        <heap::Vec<i8> as HeapData>::FINGERPRINT,
        <heap::Box<u8> as HeapData>::FINGERPRINT,
        <heap::String as HeapData>::FINGERPRINT,
        <heap::HashMap<u64, u64> as HeapData>::FINGERPRINT,
        <heap::HashMap<u64, u32> as HeapData>::FINGERPRINT,
        <heap::HashMap<u32, u64> as HeapData>::FINGERPRINT,
        <heap::Vec<heap::Vec<u8>> as HeapData>::FINGERPRINT,
        <Mutex<heap::Vec<u8>> as Shared>::FINGERPRINT,
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
    #[derive(crate::Shared)]
    #[repr(C)]
    struct Holder {
        n: u64,
        names: Mutex<heap::Vec<heap::String>>,
    }
    const {
        assert!(<Mutex<heap::Vec<u8>> as Shared>::OWNS_HEAP);
        assert!(<[Mutex<u8>; 2] as Shared>::OWNS_HEAP);
        assert!(<crate::sync::Mutex<Mutex<u8>> as Shared>::OWNS_HEAP);
        assert!(Holder::OWNS_HEAP);
        assert!(!<[u64; 2] as Shared>::OWNS_HEAP);
    }
}

/// The parent builds a map in the heap (behind a heap::Mutex that lives in the heap too,
/// so the lock and the map's header are shared like an attached global's); a forked child
/// reads it through the same pointers and extends it; the parent sees the child's entries.
#[test]
fn containers_across_fork() {
    installed_heap();
    let table: &'static Mutex<heap::HashMap<u64, heap::String>> =
        heap::Box::new(Mutex::new(heap::HashMap::new())).leak();
    {
        let mut t = table.lock().unwrap();
        for i in 0..100u64 {
            t.insert(i, heap::String::from(&*format!("parent {i}")));
        }
    }
    // SAFETY: the child uses the heap and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut t = table.lock().unwrap();
            assert_eq!(t[&42].as_str(), "parent 42");
            for i in 1000..2000u64 {
                t.insert(i, heap::String::from("child")); // grows the table: moves it
            }
        }))
        .is_ok();
        // SAFETY: ends the child.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let status = wait_child(pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let t = table.lock().unwrap();
    assert_eq!(t.len(), 1100);
    assert_eq!(t[&1500].as_str(), "child");
    assert_eq!(t[&7].as_str(), "parent 7");
}

/// A holder killed while holding a heap::Mutex poisons it for everyone; reset starts
/// again.
#[test]
fn killed_holder_poisons_heap_mutex() {
    installed_heap();
    let m: &'static Mutex<heap::Vec<u64>> = heap::Box::new(Mutex::new(heap::Vec::new())).leak();
    // SAFETY: the child locks and dies holding the lock.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        std::mem::forget(m.lock().unwrap());
        // SAFETY: dies holding the lock.
        unsafe { libc::_exit(0) };
    }
    wait_child(pid);
    let e = m.lock().err().expect("poisoned");
    assert!(e.to_string().contains("reset"));
    assert!(m.lock().is_err(), "stays poisoned");
    assert!(m.is_poisoned());
    m.reset(heap::Vec::new()).push(1);
    assert_eq!(m.lock().unwrap()[..], [1]);
}

/// `stats_from_bytes` over a copy of the heap's bytes gives `stats`' counters; a copy that
/// is not a dsu heap, or whose free list loops (a torn copy), gives `None`.
#[test]
fn stats_from_a_copy_of_the_bytes() {
    let (_, heap) = fresh_heap(64 << 20);
    let mut live = Vec::new();
    for size in [24usize, 100, 5000, 70_000, 24, 300] {
        live.push(heap.allocate(size, 8).unwrap());
    }
    for p in live.drain(..).step_by(2) {
        // SAFETY: live block.
        unsafe { heap.deallocate(p) };
    }
    let want = heap.stats();
    // SAFETY: the backed part of the heap, which nothing changes during the copy.
    let mut copy = unsafe { std::slice::from_raw_parts(heap.base(), want.size) }.to_vec();
    let read = |copy: &[u8]| {
        heap::stats_from_bytes(want.base, want.size, |off, buf| {
            match copy.get(off as usize..off as usize + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        })
    };
    assert_eq!(read(&copy), Some(want));
    assert!(want.free_blocks >= 2 && want.largest_free > 0);
    // A free block whose next link points to itself: the walk stops, `None`.
    let mut looped = copy.clone();
    let mut patched = false;
    // Find a listed free block: any head in the header that is non-zero.
    for off in (0..4096).step_by(8) {
        let w = u64::from_ne_bytes(copy[off..off + 8].try_into().unwrap());
        if w >= 4096 && (w as usize) < want.managed && w % 16 == 0 {
            let size_word =
                u64::from_ne_bytes(copy[w as usize + 8..w as usize + 16].try_into().unwrap());
            if size_word & 1 == 1 {
                looped[w as usize + 16..w as usize + 24].copy_from_slice(&w.to_ne_bytes());
                patched = true;
                break;
            }
        }
    }
    assert!(patched, "a free-list head in the header");
    assert_eq!(read(&looped), None);
    copy[..8].copy_from_slice(&[0; 8]);
    assert_eq!(read(&copy), None, "no magic, no heap");
}

/// An in-place migration (`with_ref`) reads the old map where it is, under its lock, and
/// builds a new one; the old map is left as it was (nothing moved or freed).
#[test]
fn in_place_migration_reads_the_live_value() {
    installed_heap();
    type Old = Mutex<heap::HashMap<u64, u32>>;
    type New = Mutex<heap::HashMap<u64, u64>>;
    fn widen(old: &'static Old) -> New {
        let old = old.lock().unwrap();
        let mut m = heap::HashMap::new();
        for (k, v) in old.iter() {
            m.insert(*k, u64::from(*v) << 32);
        }
        Mutex::new(m)
    }
    crate::global! {
        #[dsu(name = "tests::IN_PLACE", migrate(from = Mutex<heap::HashMap<u64, u32>>, with_ref = widen))]
        static NEW: New = Mutex::new(heap::HashMap::new());
    }
    static OLD: Old = Mutex::new(heap::HashMap::new());
    for k in 0..1000 {
        OLD.lock().unwrap().insert(k, k as u32);
    }
    let d = crate::GLOBALS
        .iter()
        .find(|d| d.name() == "tests::IN_PLACE")
        .unwrap();
    let m = d.migration().unwrap();
    assert!(m.is_in_place() && !m.has_merge());
    assert_eq!(m.old_fingerprint(), <Old as crate::Shared>::FINGERPRINT);
    let mut out = std::mem::MaybeUninit::<New>::uninit();
    (m.transform)((&OLD as *const Old).cast(), out.as_mut_ptr().cast());
    // SAFETY: the transform wrote a New; it is leaked, as a global's value would be.
    let new: &'static New = Box::leak(Box::new(unsafe { out.assume_init() }));
    let new = new.lock().unwrap();
    let old = OLD.lock().unwrap();
    assert_eq!((new.len(), old.len()), (1000, 1000));
    for k in 0..1000u64 {
        assert_eq!(new.get(&k), Some(&(k << 32)));
        assert_eq!(old.get(&k), Some(&(k as u32)));
    }
    let _ = &NEW;
}
