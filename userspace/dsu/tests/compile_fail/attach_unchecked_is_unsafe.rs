// Attaching while other threads may hold guards is the caller's promise.
fn main() {
    let _ = dsu::Attach::new("app", "1").attach_unchecked();
}
