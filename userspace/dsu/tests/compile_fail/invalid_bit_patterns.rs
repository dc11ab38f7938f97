// Another version may store any bytes: types with invalid bit patterns are not Shared.
use dsu::sync::Mutex;
use std::sync::atomic::AtomicBool;

dsu::global! {
    static FLAG: AtomicBool = AtomicBool::new(false);
    static B: Mutex<bool> = Mutex::new(false);
    static C: Mutex<char> = Mutex::new('a');
}

#[derive(dsu::Shared)]
#[repr(C)]
struct WithBool {
    ok: bool,
}

#[derive(dsu::Shared)]
#[repr(C)]
enum State {
    Idle,
    Busy,
}

fn main() {}
