// A migration cannot start from a type that owns shared-heap blocks: the snapshot would be
// a second owner of the old version's blocks.
use dsu::heap;

fn upgrade(_old: heap::Mutex<heap::Vec<u32>>) -> heap::Mutex<heap::Vec<u64>> {
    heap::Mutex::new(heap::Vec::new())
}

dsu::global! {
    #[dsu(migrate(from = heap::Mutex<heap::Vec<u32>>, with = upgrade))]
    static V: heap::Mutex<heap::Vec<u64>> = heap::Mutex::new(heap::Vec::new());
}

fn main() {
    let _ = V.lock();
}
