// A derived struct of plain fields is Shared (it may sit inside a Mutex) but not a global.
#[derive(dsu::Shared)]
#[repr(C)]
struct Point {
    x: u64,
    y: std::sync::atomic::AtomicU64,
}

dsu::global! {
    static P: Point = Point { x: 0, y: std::sync::atomic::AtomicU64::new(0) };
}

fn main() {}
