//! `libdsu.h` (`DSU_GLOBAL`, `DSU_TYPE`, the inline `dsu_attach`) compiles as C99, C11 and
//! C++17 with gcc and g++, and `DSU_TYPE` refuses, at compile time, field lists that do not
//! match the struct (needs `gcc`/`g++`, as the C examples do).

use std::path::Path;
use std::process::Command;

const STRUCT: &str = "struct conf { uint16_t port; char host[64]; int limit; };\n";

/// Compiles `body` after `#include <libdsu.h>` and the struct to an object file (so that
/// aliases and sections are checked too); returns the compiler's stderr on failure.
fn compile(compiler: &str, std: &str, body: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("dsu-c-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ext = if compiler == "g++" { "cc" } else { "c" };
    let file = dir.join(format!("t-{std}-{}.{ext}", body.len()));
    std::fs::write(&file, format!("#include <libdsu.h>\n{STRUCT}{body}\n")).unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let out = Command::new(compiler)
        .arg(format!("-std={std}"))
        .args(["-Wall", "-Wextra", "-Werror", "-c", "-o"])
        .arg(file.with_extension("o"))
        .arg("-I")
        .arg(&include)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("{compiler} is needed for this test (as for the C examples): {e}")
        });
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const GOOD: &str = "DSU_TYPE(conf, struct conf, DSU_FIELD(port, uint16_t), \
                    DSU_FIELD(host, char[64]), DSU_FIELD(limit, int));";

/// A program with each kind of global that calls `dsu_attach` (C++17 has no designated
/// initialisers, so the struct initialisers are positional).
const PROGRAM: &str = "DSU_GLOBAL(unsigned long, requests, 0);\n\
    DSU_GLOBAL(struct conf, plain, { 80, \"h\", 3 });\n\
    DSU_GLOBAL_NAMED(double, ratio, \"app.ratio\", 0.5);\n\
    DSU_TYPE(conf, struct conf, DSU_FIELD(port, uint16_t), DSU_FIELD(host, char[64]), \
             DSU_FIELD(limit, int));\n\
    DSU_GLOBAL_TYPED(conf, config, { 8080, \"x\", 1 });\n\
    DSU_GLOBAL_ZERO(struct conf, zconf);\n\
    DSU_GLOBAL_ZERO_NAMED(unsigned long, zcount, \"app.zcount\");\n\
    DSU_GLOBAL_TYPED_ZERO(conf, tzconf);\n\
    int main(void) {\n\
        int rc = dsu_attach(\"app\", \"1\", DSU_MUST_EXIST | DSU_PREFAULT, 0600);\n\
        if (rc < 0) return dsu_strerror(rc)[0] != 0 && dsu_last_error() != NULL;\n\
        return (int)(requests + plain.port + config.limit + (unsigned long)ratio + zconf.port + \
                     zcount + tzconf.limit);\n\
    }";

#[test]
fn globals_and_attach_compile_as_c99_c11_and_cpp17() {
    for (compiler, std) in [("gcc", "c99"), ("gcc", "c11"), ("g++", "c++17")] {
        if let Err(e) = compile(compiler, std, PROGRAM) {
            panic!("{compiler} -std={std} refused libdsu.h:\n{e}");
        }
    }
}

#[test]
fn dsu_type_compiles_in_c_and_cpp() {
    for std in ["c99", "c11"] {
        let global = "DSU_GLOBAL_TYPED(conf, config, { .port = 80 });";
        compile("gcc", std, &format!("{GOOD}\n{global}")).unwrap();
    }
    let cpp = format!(
        "{GOOD}\nstatic_assert(sizeof(dsu__fields_conf) / sizeof(dsu__fields_conf[0]) == 3, \"3 fields\");"
    );
    compile("g++", "c++17", &cpp).unwrap();
}

#[test]
fn dsu_type_refuses_lists_that_do_not_match() {
    let cases = [
        (
            "out of order",
            "DSU_TYPE(conf, struct conf, DSU_FIELD(host, char[64]), DSU_FIELD(port, uint16_t), DSU_FIELD(limit, int));",
        ),
        (
            "listed twice",
            "DSU_TYPE(conf, struct conf, DSU_FIELD(port, uint16_t), DSU_FIELD(port, uint16_t));",
        ),
        (
            "another type of the same size",
            "DSU_TYPE(conf, struct conf, DSU_FIELD(port, int16_t), DSU_FIELD(host, char[64]), DSU_FIELD(limit, int));",
        ),
        (
            "another size",
            "DSU_TYPE(conf, struct conf, DSU_FIELD(port, uint32_t), DSU_FIELD(host, char[64]), DSU_FIELD(limit, int));",
        ),
        (
            "no such field",
            "DSU_TYPE(conf, struct conf, DSU_FIELD(port, uint16_t), DSU_FIELD(nope, int));",
        ),
    ];
    for (what, body) in cases {
        for (compiler, std) in [("gcc", "c11"), ("g++", "c++17")] {
            assert!(
                compile(compiler, std, body).is_err(),
                "{compiler} -std={std} accepted a field list with a field {what}"
            );
        }
    }
}

/// `DSU_GLOBAL_ZERO`'s section is NOBITS (no file space) in C and C++ objects, and holds
/// only the zeroed globals; `DSU_GLOBAL`'s is PROGBITS.
#[test]
fn zeroed_globals_are_nobits() {
    let dir = std::env::temp_dir().join(format!("dsu-c-zero-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    for (compiler, ext) in [("gcc", "c"), ("g++", "cc")] {
        let src = dir.join(format!("z.{ext}"));
        let obj = dir.join(format!("z-{ext}.o"));
        std::fs::write(
            &src,
            "#include <libdsu.h>\nstruct big { unsigned long v[1 << 20]; };\n\
             DSU_GLOBAL_ZERO(struct big, big);\nDSU_GLOBAL(unsigned long, small, 1);\n",
        )
        .unwrap();
        let ok = Command::new(compiler)
            .args(["-Wall", "-Wextra", "-Werror", "-c", "-I"])
            .arg(&include)
            .arg("-o")
            .arg(&obj)
            .arg(&src)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{compiler} failed");
        let out = Command::new("readelf")
            .arg("-SW")
            .arg(&obj)
            .output()
            .unwrap();
        let sections = String::from_utf8_lossy(&out.stdout);
        let line = |name: &str| {
            sections
                .lines()
                .find(|l| l.split_whitespace().any(|w| w == name))
                .unwrap_or_else(|| panic!("{compiler}: no section {name}:\n{sections}"))
                .to_string()
        };
        assert!(
            line(".bss.dsu_globals_zero").contains("NOBITS"),
            "{compiler}: {}",
            line(".bss.dsu_globals_zero")
        );
        assert!(line("dsu_globals").contains("PROGBITS"), "{compiler}");
        // 8 MiB of zeros, not in the object file.
        let size = std::fs::metadata(&obj).unwrap().len();
        assert!(size < 1 << 20, "{compiler}: the object is {size} bytes");
    }
}
