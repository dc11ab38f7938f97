//! The shared part of `heap_linked_v1` and `heap_linked_v2` (VM suite,
//! `userspace::heap_linked_structures`): two versions of one program, with different global
//! layouts, that share a list of heap objects (`heap_linked::LIST`, a
//! `heap::Mutex<heap::Vec<heap::Box<Node>>>`). Each pushes nodes it allocates and pops
//! (and frees) nodes of either version, checking every node byte-exact through the plain
//! pointers the other version stored.
//!
//! ```text
//! heap_linked_vN --segment S work OPS   (waits for the other version, then OPS rounds)
//! heap_linked_vN --segment S verify     (every listed node byte-exact, the heap's check)
//! ```

use dsu::heap;
use std::sync::atomic::{AtomicU64, Ordering};

/// One heap object: its creator (1 or 2), a sequence number and a pattern derived from
/// both, so that a node read through another version's pointer can be checked byte-exact.
#[derive(dsu::Shared, Clone, Copy)]
#[repr(C)]
pub struct Node {
    pub owner: u64,
    pub seq: u64,
    pub pattern: [u64; 6],
}

impl Node {
    pub fn new(owner: u64, seq: u64) -> Node {
        let mut pattern = [0; 6];
        for (i, w) in pattern.iter_mut().enumerate() {
            *w = (owner << 56 ^ seq).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64;
        }
        Node {
            owner,
            seq,
            pattern,
        }
    }

    pub fn intact(&self) -> bool {
        let want = Node::new(self.owner, self.seq);
        (self.owner == 1 || self.owner == 2) && self.pattern == want.pattern
    }
}

pub type List = heap::Mutex<heap::Vec<heap::Box<Node>>>;

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

/// Runs the command line of version `me` over `list`; `started` counts the versions that
/// are in `work`.
pub fn main(me: u64, list: &'static List, started: &'static AtomicU64) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (segment, cmd) = match args.as_slice() {
        [flag, seg, rest @ ..] if flag == "--segment" && !rest.is_empty() => (seg, rest),
        _ => fail("usage: heap_linked_vN --segment S (work OPS | verify)"),
    };
    let _version = dsu::Attach::new(segment.as_str(), format!("v{me}"))
        .heap(0)
        .ready_on_attach(true)
        .attach()
        .unwrap_or_else(|e| fail(&e.to_string()));
    match cmd[0].as_str() {
        "work" => {
            let ops: u64 = cmd
                .get(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| fail("work OPS"));
            started.fetch_add(1, Ordering::SeqCst);
            let t0 = std::time::Instant::now();
            while started.load(Ordering::SeqCst) < 2 {
                if t0.elapsed().as_secs() > 60 {
                    fail("the other version never started");
                }
                std::thread::yield_now();
            }
            let (mut pushed, mut popped, mut others, mut bad) = (0u64, 0u64, 0u64, 0u64);
            let mut rng = me.wrapping_mul(0x2545_f491_4f6c_dd1d);
            for seq in 0..ops {
                // A pause now and then, so that the two versions' rounds interleave even
                // when one of them could run all of its rounds in one time slice.
                if seq % 16 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let mut l = list.lock().unwrap_or_else(|_| fail("LIST is poisoned"));
                // Mostly pushes, so the list grows (its buffer moves: a reallocation by one
                // version, followed by the other through the global's pointer).
                if !rng.is_multiple_of(3) || l.is_empty() {
                    l.push(heap::Box::new(Node::new(me, seq)));
                    pushed += 1;
                } else {
                    let k = (rng >> 8) as usize % l.len();
                    let n = l.swap_remove(k);
                    if !n.intact() {
                        bad += 1;
                    }
                    if n.owner != me {
                        others += 1;
                    }
                    popped += 1;
                    drop(n); // freed by this version, whoever allocated it
                }
            }
            println!("pushed={pushed} popped={popped} others={others} bad={bad}");
        }
        "verify" => {
            let l = list.lock().unwrap_or_else(|_| fail("LIST is poisoned"));
            let bad = l.iter().filter(|n| !n.intact()).count();
            let by = |o| l.iter().filter(|n| n.owner == o).count();
            let (v1, v2) = (by(1), by(2));
            drop(l);
            let stats = heap::installed()
                .unwrap_or_else(|| fail("no heap installed"))
                .check()
                .unwrap_or_else(|e| fail(&e.to_string()));
            println!(
                "v1={v1} v2={v2} bad={bad} blocks={}",
                stats.allocated_blocks
            );
        }
        _ => fail("usage: heap_linked_vN --segment S (work OPS | verify)"),
    }
}
