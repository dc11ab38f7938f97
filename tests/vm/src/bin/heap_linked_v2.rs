//! Version 2 of the shared-list program (see `heap_linked.rs`): another global layout
//! (a v2-only table first, the shared globals in another order).

#[path = "../heap_linked.rs"]
mod heap_linked;

use std::sync::atomic::AtomicU64;

dsu::global! {
    #[dsu(name = "heap_linked::V2_ONLY")]
    static V2_ONLY: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
    #[dsu(name = "heap_linked::STARTED")]
    static STARTED: AtomicU64 = AtomicU64::new(0);
    #[dsu(name = "heap_linked::LIST")]
    static LIST: heap_linked::List = dsu::heap::Mutex::new(dsu::heap::Vec::new());
}

fn main() {
    V2_ONLY[63].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    heap_linked::main(2, &LIST, &STARTED);
}
