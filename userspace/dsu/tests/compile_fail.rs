//! Misuse that the compiler must reject, each with its checked diagnostic
//! (`tests/compile_fail/*.stderr`; regenerate with `TRYBUILD=overwrite cargo test -p dsu
//! --test compile_fail` and review the diff). trybuild builds the cases in its own
//! project under the target directory, wherever `CARGO_TARGET_DIR` puts it.

#[test]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
