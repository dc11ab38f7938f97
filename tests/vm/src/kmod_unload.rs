//! Kernel module: unloading is refused while any fd or mapping lives (the module is pinned
//! by its file operations' owner), and works, leaving nothing behind, afterwards.

use crate::kmod_ioctl::*;
use crate::util::{insmod, module_loaded, sh};
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;

fn refcount() -> Result<String, crate::Failure> {
    Ok(std::fs::read_to_string("/sys/module/dsu/refcnt")?
        .trim()
        .to_string())
}

#[distributed_slice(TESTS)]
static REFUSED: VmTest = VmTest {
    name: "kmod_unload::refused_while_in_use",
    phase: Phase::Main,
    run: refused,
};
fn refused() -> TestResult {
    ensure_eq!(refcount()?, "0", "refcount with nothing open");
    // An open fd pins the module.
    let h = Dsu::open()?;
    ensure!(refcount()? != "0", "refcount 0 with an fd open");
    ensure!(sh("rmmod dsu").is_err(), "rmmod succeeded with an fd open");
    ensure!(module_loaded(), "module gone with an fd open");

    // A mapping alone pins it too (the VMA holds the file).
    h.attach("unload-test", 0, 0)?;
    let v = h.resolve_ok(vec![var("g", 8, 1, Some(&9u64.to_ne_bytes()))])?;
    h.bind("1", &[v[0].first_page], 0)?;
    let m = h.map(1)?;
    drop(h);
    ensure!(refcount()? != "0", "refcount 0 with a mapping left");
    ensure!(
        sh("rmmod dsu").is_err(),
        "rmmod succeeded with a mapping left"
    );
    ensure!(module_loaded(), "module gone with a mapping left");
    ensure_eq!(m.get(0), 9, "the mapping still works");
    drop(m);
    ensure_eq!(refcount()?, "0", "refcount after the last munmap");

    // Now it unloads, freeing the segment that nobody destroyed; and loads again empty.
    sh("rmmod dsu")?;
    ensure!(!module_loaded(), "module still loaded");
    insmod("")?;
    ensure!(
        Dsu::open()?.segment_info("unload-test")?.is_none(),
        "segment survived a reload"
    );
    Ok(())
}
