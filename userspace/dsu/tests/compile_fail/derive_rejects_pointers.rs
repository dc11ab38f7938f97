#[derive(dsu::Shared)]
#[repr(C)]
struct Ref {
    a: &'static u32,
}

#[derive(dsu::Shared)]
#[repr(C)]
struct Raw {
    a: *const u32,
}

#[derive(dsu::Shared)]
#[repr(C)]
struct Boxed {
    a: Box<u32>,
}

#[derive(dsu::Shared)]
#[repr(C)]
struct Heap {
    a: Vec<u32>,
}

#[derive(dsu::Shared)]
#[repr(C)]
struct Text {
    a: String,
}

#[derive(dsu::Shared)]
#[repr(C)]
struct Func {
    a: fn(),
}

#[derive(dsu::Shared)]
#[repr(C)]
struct Nested {
    a: [Option<Box<u8>>; 2],
}

#[derive(dsu::Shared)]
struct NoRepr {
    a: u32,
}

fn main() {}
