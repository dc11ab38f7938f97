//! kv's 21 MiB keyspace is a `#[dsu(zeroed)]` global: the server binaries do not carry it
//! as file data.

#[test]
fn kv_binaries_do_not_carry_the_zeroed_table() {
    for exe in [
        env!("CARGO_BIN_EXE_kv_v1"),
        env!("CARGO_BIN_EXE_kv_v2"),
        env!("CARGO_BIN_EXE_kv_v3"),
    ] {
        let size = std::fs::metadata(exe).unwrap().len();
        assert!(
            size < 21 << 20,
            "{exe} is {size} bytes: the 21 MiB table takes file space"
        );
    }
}
