//! Crash and stress checks of a [`RawHeap`] on any [`HeapRegion`](super::HeapRegion): the
//! host tests run them over memfd regions, and the VM suite can run them over a
//! segment's heap (cargo feature `heap-testing`).

use super::RawHeap;
use std::collections::HashMap as StdMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// A small deterministic PRNG (xorshift*), so that a failing seed can be replayed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A mixed size: mostly small, some medium, a few large (up to `max`).
    pub(crate) fn size(&mut self, max: u64) -> usize {
        let s = match self.below(100) {
            0..70 => 1 + self.below(128),
            70..95 => 129 + self.below(4096),
            _ => 4097 + self.below(max.max(4098) - 4097),
        };
        s as usize
    }
}

pub(crate) fn fill(p: NonNull<u8>, len: usize, seed: u8) {
    // SAFETY: callers pass live blocks of at least len bytes.
    unsafe { p.as_ptr().write_bytes(seed, len) };
}

pub(crate) fn intact(p: usize, len: usize, seed: u8) -> bool {
    // SAFETY: callers pass live blocks of at least len bytes.
    unsafe { std::slice::from_raw_parts(p as *const u8, len) }
        .iter()
        .all(|&b| b == seed)
}

/// Shared anonymous memory that survives the fork (the tests' boards).
pub(crate) fn shared_board<T>() -> &'static T {
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

pub(crate) fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

/// 1,000 children killed by SIGKILL at random moments in a loop of random heap calls;
/// after each, the heap recovers and passes the full check with at most the killed
/// call's block leaked. Fails without the undo log's rollback (a kill between two
/// metadata stores leaves broken lists).
/// Runs `trials` crash trials on `heap` (which must have room for about 100 MiB): each
/// forks a child that makes random heap calls in a loop, kills it with `SIGKILL` after a
/// random delay, then recovers and checks the heap ([`RawHeap::check`], the blocks the
/// child recorded, their bytes, at most the killed call's block leaked). Panics on the
/// first failure; returns how many kills interrupted a heap operation.
pub fn crash_trials(heap: &'static RawHeap, trials: u64) -> u64 {
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
    // Leave the heap as found: the board's blocks back.
    for [ptr, _, _] in &board.slots {
        let p = ptr.swap(0, Ordering::SeqCst) as usize;
        if p != 0 {
            // SAFETY: a live block of the finished child's.
            unsafe { heap.deallocate(NonNull::new(p as *mut u8).unwrap()) };
        }
    }
    mid
}

/// `procs` processes × `threads` threads each doing `ops` malloc/free calls of mixed sizes
/// on `heap`, each block filled with its own pattern and checked byte-exact before it is
/// freed and at the end. Panics on a failure; the heap's allocated blocks are as before.
pub fn stress(heap: &'static RawHeap, procs: u64, threads: u64, ops: u32) {
    let before = heap.check().unwrap().allocated_blocks;
    let failures: &'static AtomicU64 = shared_board();
    let mut pids = Vec::new();
    for proc in 0..procs {
        // SAFETY: the child uses the heap, spawns threads, and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    std::thread::spawn(move || {
                        let mut rng = Rng((proc * 4 + t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                        let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
                        for i in 0..ops {
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
            let ok = handles.into_iter().all(|t| t.join().is_ok());
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
    assert_eq!(s.allocated_blocks, before);
}
