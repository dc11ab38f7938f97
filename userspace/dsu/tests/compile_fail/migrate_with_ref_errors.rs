// `migrate(..., with_ref = f)` misuse the macro rejects: a merge (the transform read the
// live value, there is nothing to catch up), both `with` and `with_ref`, and a transform
// that takes the old value by value.
use dsu::heap;

type Old = heap::Mutex<heap::Vec<u32>>;
type New = heap::Mutex<heap::Vec<u64>>;

fn by_ref(_old: &'static Old) -> New {
    heap::Mutex::new(heap::Vec::new())
}
fn by_value(_old: Old) -> New {
    heap::Mutex::new(heap::Vec::new())
}
fn merge(_new: &New, _at_attach: &Old, _last: &Old) {}

dsu::global! {
    #[dsu(migrate(from = Old, with_ref = by_ref, merge = merge))]
    static MERGED: New = heap::Mutex::new(heap::Vec::new());
}

dsu::global! {
    #[dsu(migrate(from = Old, with = by_value, with_ref = by_ref))]
    static BOTH: New = heap::Mutex::new(heap::Vec::new());
}

dsu::global! {
    #[dsu(migrate(from = Old, with_ref = by_value))]
    static WRONG: New = heap::Mutex::new(heap::Vec::new());
}

fn main() {}
