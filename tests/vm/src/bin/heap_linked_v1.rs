//! Version 1 of the shared-list program (see `heap_linked.rs`): the list, then a counter.

#[path = "../heap_linked.rs"]
mod heap_linked;

use std::sync::atomic::AtomicU64;

dsu::global! {
    #[dsu(name = "heap_linked::LIST")]
    static LIST: heap_linked::List = dsu::heap::Mutex::new(dsu::heap::Vec::new());
    #[dsu(name = "heap_linked::STARTED")]
    static STARTED: AtomicU64 = AtomicU64::new(0);
    #[dsu(name = "heap_linked::V1_ONLY")]
    static V1_ONLY: AtomicU64 = AtomicU64::new(0);
}

fn main() {
    V1_ONLY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    heap_linked::main(1, &LIST, &STARTED);
}
