//! Gives the shared library its SONAME, `libdsu.so.0` (the ABI version: bump it with any
//! incompatible change to `libdsu.h`'s functions or `struct dsu_global_desc`). Cargo names
//! the file `libdsuc.so`; `make install` installs it as `libdsu.so.0.1.0` with the
//! `libdsu.so.0` and `libdsu.so` links.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdsu.so.0");
}
