// The miscompile of issue 10: a live `&u32` from Deref while `write` changed the value.
// A plain integer can no longer be a global (and `write` is gone).
dsu::global! { static X: u32 = 0; }

fn bump(r: &u32) -> u32 {
    X.write(*r + 1);
    *r
}

fn main() {
    println!("{}", bump(&X));
}
