//! Host tests of the shared heap over memfd regions. The checks are written against any
//! [`HeapRegion`] (`fresh_heap` is the only memfd-specific part), so that the VM suite can
//! run them over a segment's heap.

use super as heap;
use super::{HeapData, HeapRegion, MemfdRegion, Mutex, RawHeap, install, raw};
use std::collections::HashMap as StdMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// A small deterministic PRNG (xorshift*), so that a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A mixed size: mostly small, some medium, a few large (up to `max`).
    fn size(&mut self, max: u64) -> usize {
        let s = match self.below(100) {
            0..70 => 1 + self.below(128),
            70..95 => 129 + self.below(4096),
            _ => 4097 + self.below(max.max(4098) - 4097),
        };
        s as usize
    }
}

fn fresh_heap(reserve: usize) -> (&'static MemfdRegion, RawHeap) {
    let region = MemfdRegion::new(reserve).unwrap().leak();
    let heap = RawHeap::open(region).unwrap();
    (region, heap)
}

fn fill(p: NonNull<u8>, len: usize, seed: u8) {
    // SAFETY: callers pass live blocks of at least len bytes.
    unsafe { p.as_ptr().write_bytes(seed, len) };
}

fn intact(p: usize, len: usize, seed: u8) -> bool {
    // SAFETY: callers pass live blocks of at least len bytes.
    unsafe { std::slice::from_raw_parts(p as *const u8, len) }
        .iter()
        .all(|&b| b == seed)
}

/// Shared anonymous memory that survives the fork (the tests' boards).
fn shared_board<T>() -> &'static T {
    // SAFETY: a fresh shared zeroed mapping of T's size; T is all-atomic (zero is valid).
    unsafe {
        let p = libc::mmap(
            core::ptr::null_mut(),
            size_of::<T>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        &*(p as *const T)
    }
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

/// The board a crash-test child keeps in shared memory: the blocks it owns, and the slot
/// of the call in progress.
#[repr(C)]
struct Board {
    /// Slot index + 1 of the call in progress, 0 between calls.
    inflight: AtomicU64,
    slots: [[AtomicU64; 3]; 256],
}

/// Mostly small and medium sizes (so that most of the time goes to heap calls, not to
/// filling blocks), 1 % over 1 MiB (growth, and frees that give pages back).
fn crash_size(rng: &mut Rng) -> usize {
    if rng.below(100) == 0 {
        (1 << 20) + rng.below(1 << 19) as usize
    } else {
        rng.size(100_000)
    }
}

/// The child of a crash trial: random malloc/realloc/free forever, recording its blocks.
fn crash_child(heap: &RawHeap, board: &Board, seed: u64) -> ! {
    let mut rng = Rng(seed | 1);
    loop {
        let i = rng.below(256) as usize;
        let [ptr, size, pat] = &board.slots[i];
        let p = ptr.load(Ordering::Relaxed) as usize;
        board.inflight.store(i as u64 + 1, Ordering::SeqCst);
        if p == 0 {
            let n = crash_size(&mut rng);
            let q = if rng.below(4) == 0 {
                heap.allocate_zeroed(n, 16)
            } else {
                heap.allocate(n, 1 << rng.below(7))
            };
            let q = q.expect("heap of 1 GiB exhausted");
            let s = rng.next() as u8;
            fill(q, n, s);
            size.store(n as u64, Ordering::Relaxed);
            pat.store(s as u64, Ordering::Relaxed);
            ptr.store(q.as_ptr() as u64, Ordering::SeqCst);
        } else if rng.below(3) == 0 {
            let n = crash_size(&mut rng);
            let s = pat.load(Ordering::Relaxed) as u8;
            // SAFETY: a live block of this heap.
            let q = unsafe { heap.reallocate(NonNull::new(p as *mut u8).unwrap(), n, 1) }
                .expect("heap exhausted");
            fill(q, n, s);
            size.store(n as u64, Ordering::Relaxed);
            ptr.store(q.as_ptr() as u64, Ordering::SeqCst);
        } else {
            // SAFETY: a live block of this heap.
            unsafe { heap.deallocate(NonNull::new(p as *mut u8).unwrap()) };
            ptr.store(0, Ordering::SeqCst);
        }
        board.inflight.store(0, Ordering::SeqCst);
    }
}

/// After a kill: recovery and the full check pass, every block on the board is allocated
/// with its bytes intact, and at most one block (the killed call's own) is allocated but
/// not on the board. Then the parent frees that block and settles the call in progress,
/// so that the next trial starts from a board that matches the heap. Returns whether the
/// kill interrupted a heap operation (the undo log was not empty).
fn settle_after_kill(heap: &RawHeap, board: &Board) -> bool {
    let mid_operation = heap.pending_log_len() != 0;
    heap.check().unwrap_or_else(|e| panic!("after kill: {e}"));
    let mut allocated: StdMap<usize, usize> = heap
        .allocations()
        .unwrap()
        .into_iter()
        .map(|a| (a.ptr, a.usable))
        .collect();
    let inflight = board.inflight.load(Ordering::SeqCst) as usize;
    for (i, [ptr, size, pat]) in board.slots.iter().enumerate() {
        let p = ptr.load(Ordering::SeqCst) as usize;
        if p == 0 {
            continue;
        }
        if i + 1 == inflight {
            // Freed, moved or not yet: the parent takes care of it below.
            continue;
        }
        let usable = allocated
            .remove(&p)
            .unwrap_or_else(|| panic!("board block {p:#x} is not allocated"));
        let n = size.load(Ordering::Relaxed) as usize;
        assert!(usable >= n);
        assert!(
            intact(p, n, pat.load(Ordering::Relaxed) as u8),
            "block {p:#x} overwritten"
        );
    }
    if inflight != 0 {
        let [ptr, _, _] = &board.slots[inflight - 1];
        let p = ptr.load(Ordering::SeqCst) as usize;
        if p != 0 && allocated.remove(&p).is_some() {
            // SAFETY: an allocated block nobody uses any more.
            unsafe { heap.deallocate(NonNull::new(p as *mut u8).unwrap()) };
        }
        ptr.store(0, Ordering::SeqCst);
        board.inflight.store(0, Ordering::SeqCst);
    } else {
        assert!(
            allocated.is_empty(),
            "a block leaked outside any call: {allocated:x?}"
        );
    }
    assert!(
        allocated.len() <= 1,
        "more than the killed call's block leaked: {allocated:x?}"
    );
    for p in allocated.keys() {
        // SAFETY: the killed call's block, allocated and unused.
        unsafe { heap.deallocate(NonNull::new(*p as *mut u8).unwrap()) };
    }
    heap.check().unwrap();
    mid_operation
}

fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

/// 1,000 children killed by SIGKILL at random moments in a loop of random heap calls;
/// after each, the heap recovers and passes the full check with at most the killed
/// call's block leaked. Fails without the undo log's rollback (a kill between two
/// metadata stores leaves broken lists).
#[test]
fn crash_consistency_under_sigkill() {
    run_crash_trials(1000);
}

pub(crate) fn run_crash_trials(trials: u64) {
    let (_, heap) = fresh_heap(1 << 30);
    let heap: &'static RawHeap = std::boxed::Box::leak(std::boxed::Box::new(heap));
    let board: &'static Board = shared_board();
    let mut rng = Rng(0x5eed);
    let mut mid = 0;
    for trial in 0..trials {
        let seed = rng.next();
        // SAFETY: the child only uses the heap, the board and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            crash_child(heap, board, seed);
        }
        // Mostly short runs (the first calls), some long ones (a fuller heap).
        let delay = if rng.below(4) == 0 {
            rng.below(20_000)
        } else {
            rng.below(2_000)
        };
        std::thread::sleep(std::time::Duration::from_micros(delay));
        // SAFETY: our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let status = wait_child(pid);
        assert!(
            libc::WIFSIGNALED(status),
            "trial {trial}: child exited by itself ({status:#x}): it failed an assertion"
        );
        if settle_after_kill(heap, board) {
            mid += 1;
        }
        if trial % 50 == 0 {
            heap.check_zero_ranges().unwrap();
        }
    }
    eprintln!("{trials} kills, {mid} inside a heap operation (undo log not empty)");
    assert!(
        mid * 20 >= trials,
        "only {mid} of {trials} kills interrupted an operation: the test is too weak"
    );
}

/// 4 processes x 4 threads doing malloc/free of mixed sizes, each block filled with its
/// own pattern and checked byte-exact before it is freed and at the end.
#[test]
fn stress_4_processes_4_threads() {
    let (_, heap) = fresh_heap(1 << 30);
    let heap: &'static RawHeap = std::boxed::Box::leak(std::boxed::Box::new(heap));
    let failures: &'static AtomicU64 = shared_board();
    let mut pids = Vec::new();
    for proc in 0..4u64 {
        // SAFETY: the child uses the heap, spawns threads, and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    std::thread::spawn(move || {
                        let mut rng = Rng((proc * 4 + t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                        let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
                        for i in 0..6000u32 {
                            if live.len() < 64 && rng.below(2) == 0 || live.is_empty() {
                                let n = rng.size(64 << 10);
                                let p = heap.allocate(n, 8).expect("heap exhausted");
                                let s = (proc * 64 + t * 16 + i as u64) as u8;
                                fill(p, n, s);
                                live.push((p, n, s));
                            } else {
                                let k = rng.below(live.len() as u64) as usize;
                                let (p, n, s) = live.swap_remove(k);
                                if !intact(p.as_ptr() as usize, n, s) {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                }
                                // SAFETY: live block.
                                unsafe { heap.deallocate(p) };
                            }
                        }
                        for (p, n, s) in live {
                            if !intact(p.as_ptr() as usize, n, s) {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                            // SAFETY: live block.
                            unsafe { heap.deallocate(p) };
                        }
                    })
                })
                .collect();
            let ok = threads.into_iter().all(|t| t.join().is_ok());
            // SAFETY: ends the child without running the parent's test harness.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pids.push(pid);
    }
    for pid in pids {
        let status = wait_child(pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "blocks overwritten");
    let s = heap.check().unwrap();
    assert_eq!(s.allocated_blocks, 0);
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
