//! A `#[dsu(zeroed)]` global takes no space in the binary's file: this test binary holds a
//! 21 MiB zeroed table (the size of examples/kv's keyspace) and stays smaller than it.

use std::sync::atomic::AtomicU64;

const WORDS: usize = 21 << 17; // 21 MiB of u64s

dsu::global! {
    #[dsu(zeroed)]
    static TABLE: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
    static SMALL: AtomicU64 = AtomicU64::new(7);
}

#[test]
fn zeroed_table_takes_no_file_space() {
    assert_eq!(std::mem::size_of_val(&*TABLE), 21 << 20);
    let exe = std::env::current_exe().unwrap();
    let size = std::fs::metadata(&exe).unwrap().len();
    assert!(
        size < 21 << 20,
        "{} is {size} bytes: the 21 MiB zeroed table takes file space",
        exe.display()
    );
    let desc = |suffix: &str| {
        dsu::GLOBALS
            .iter()
            .find(|d| d.name().ends_with(suffix))
            .unwrap()
    };
    assert_eq!(desc("::TABLE").flags() & dsu::DESC_ZEROED, dsu::DESC_ZEROED);
    assert_eq!(desc("::SMALL").flags() & dsu::DESC_ZEROED, 0);
    assert_eq!(SMALL.load(std::sync::atomic::Ordering::Relaxed), 7);
}
