// `migrate(...)` misuse the macro rejects: the same older type twice, the global's own
// type as an older one, a missing `with`, and a merge function of the wrong signature.
use std::sync::atomic::AtomicU64;

#[derive(dsu::Shared)]
#[repr(C)]
struct Old {
    hits: AtomicU64,
}
#[derive(dsu::Shared)]
#[repr(C)]
struct New {
    hits: AtomicU64,
}
fn up(o: Old) -> New {
    New { hits: o.hits }
}
fn same(n: New) -> New {
    n
}
fn bad_merge(_new: &New, _last: &Old) {}

dsu::global! {
    #[dsu(migrate(from = Old, with = up), migrate(from = Old, with = up))]
    static TWICE: New = New { hits: AtomicU64::new(0) };
}

dsu::global! {
    #[dsu(migrate(from = New, with = same))]
    static OWN: New = New { hits: AtomicU64::new(0) };
}

dsu::global! {
    #[dsu(migrate(from = Old))]
    static NO_WITH: New = New { hits: AtomicU64::new(0) };
}

dsu::global! {
    #[dsu(migrate(from = Old, with = up, merge = bad_merge))]
    static BAD_MERGE: New = New { hits: AtomicU64::new(0) };
}

fn main() {}
