//! kv's 21 MiB keyspace is a `#[dsu(zeroed)]` global: the server binaries do not carry it
//! as file data. `kv_local` has no table and shares the rest of the code, so a version
//! that carried the table would be at least 21 MiB larger than it.

#[test]
fn kv_binaries_do_not_carry_the_zeroed_table() {
    let base = std::fs::metadata(env!("CARGO_BIN_EXE_kv_local"))
        .unwrap()
        .len();
    for exe in [
        env!("CARGO_BIN_EXE_kv_v1"),
        env!("CARGO_BIN_EXE_kv_v2"),
        env!("CARGO_BIN_EXE_kv_v3"),
    ] {
        let size = std::fs::metadata(exe).unwrap().len();
        assert!(
            size < base + (4 << 20),
            "{exe} is {size} bytes, kv_local {base}: the 21 MiB table takes file space"
        );
    }
}
