//! The C heap functions before any heap is installed (this test binary installs none):
//! each fails cleanly, NULL with errno ENOMEM, or -EBADFD; and a C program using them
//! compiles against libdsu.h.

use std::ffi::c_int;

fn errno() -> c_int {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() }
}

#[test]
fn no_heap_gives_enomem() {
    assert!(dsu::heap::installed().is_none());
    assert!(dsuc::dsu_malloc(8).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    assert!(dsuc::dsu_calloc(1, 8).is_null());
    // SAFETY: null is allowed.
    assert!(unsafe { dsuc::dsu_realloc(std::ptr::null_mut(), 8) }.is_null());
    // SAFETY: null is ignored.
    unsafe { dsuc::dsu_free(std::ptr::null_mut()) };
    let mut s = dsuc::DsuHeapStats::default();
    // SAFETY: a valid struct.
    assert_eq!(unsafe { dsuc::dsu_heap_stats(&mut s) }, -libc::EBADFD);
}

/// `struct dsu_heap_stats` has the Rust struct's layout, and the declarations compile as
/// C11 with -Wall -Wextra -Werror.
#[test]
fn heap_functions_compile_in_c() {
    let dir = std::env::temp_dir().join(format!("dsu-c-heap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("heap.c");
    let size = size_of::<dsuc::DsuHeapStats>();
    std::fs::write(
        &file,
        format!(
            "#include <libdsu.h>\n#include <assert.h>\n\
             struct node {{ struct node *next; long v; }};\n\
             static_assert(sizeof(struct dsu_heap_stats) == {size}, \"layout\");\n\
             int f(void) {{\n\
               struct node *n = dsu_malloc(sizeof *n);\n\
               if (!n) return -1;\n\
               n->next = dsu_calloc(1, sizeof *n);\n\
               n = dsu_realloc(n, 2 * sizeof *n);\n\
               struct dsu_heap_stats s;\n\
               int rc = dsu_heap_stats(&s);\n\
               dsu_free(n);\n\
               return rc + (int)s.largest_free;\n\
             }}\n"
        ),
    )
    .unwrap();
    let include = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let out = std::process::Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-c", "-o"])
        .arg(file.with_extension("o"))
        .arg("-I")
        .arg(&include)
        .arg(&file)
        .output()
        .expect("gcc is needed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
