// A shared-heap container holds only HeapData: no std Vec (a pointer to private memory).
fn main() {
    let mut v: dsu::heap::Vec<std::vec::Vec<u8>> = dsu::heap::Vec::new();
    v.push(std::vec::Vec::new());
}
