// A bogus descriptor in GLOBALS would have attach map pages over any address: safe code
// can neither build one nor read its raw pointers.
use std::sync::atomic::AtomicU64;

static G: dsu::Global<AtomicU64> = dsu::Global::new(AtomicU64::new(0));

#[linkme::distributed_slice(dsu::GLOBALS)]
#[linkme(crate = dsu::__private::linkme)]
static BOGUS: dsu::GlobalDesc =
    dsu::GlobalDesc::new(c"bogus".as_ptr(), c"u64".as_ptr(), &G, std::ptr::null());

fn main() {
    let d = &dsu::GLOBALS[0];
    let _ = d.name;
    let _ = dsu::GlobalDesc {
        magic: dsu::DESC_MAGIC,
    };
}
