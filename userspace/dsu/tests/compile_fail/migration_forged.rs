// attach runs a Migration's transform on buffers sized from its fields.
fn t(_old: *const u8, _new: *mut u8) {}

static M: dsu::Migration = dsu::Migration::new::<u32>(c"u32".as_ptr(), t);

fn main() {
    let _ = M.old_size;
}
