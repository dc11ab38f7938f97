// A held lock is linked into the thread's robust list through its own header: it must
// never move or be freed, so only a 'static mutex can be locked.
fn main() {
    let m = dsu::sync::Mutex::new(0u32);
    let g = m.lock();
    drop(g);
}
