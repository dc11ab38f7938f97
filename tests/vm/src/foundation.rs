//! Foundation tests: the module loads, `/dev/dsu` appears with the intended mode, opens and
//! closes, unloads cleanly and reloads, and kmemleak finds nothing at the end.

use crate::util::{insmod, kmemleak_scan, module_loaded, rmmod};
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

#[distributed_slice(TESTS)]
static MODULE_LOADS: VmTest = VmTest {
    name: "foundation::module_loads",
    phase: Phase::Load,
    run: module_loads,
};
fn module_loads() -> TestResult {
    insmod("")?;
    ensure!(
        module_loaded(),
        "dsu missing from /proc/modules after insmod"
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static DEVICE_NODE: VmTest = VmTest {
    name: "foundation::device_node",
    phase: Phase::Main,
    run: device_node,
};
fn device_node() -> TestResult {
    let meta = std::fs::metadata("/dev/dsu")?;
    ensure!(
        meta.file_type().is_char_device(),
        "/dev/dsu is not a char device"
    );
    // World-accessible: access control is per segment, like files.
    ensure_eq!(meta.permissions().mode() & 0o7777, 0o666, "/dev/dsu mode");
    Ok(())
}

#[distributed_slice(TESTS)]
static OPEN_CLOSE: VmTest = VmTest {
    name: "foundation::open_close",
    phase: Phase::Main,
    run: open_close,
};
fn open_close() -> TestResult {
    for _ in 0..100 {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/dsu")?;
        drop(f);
    }
    // Several at once, closed out of order.
    let files: Vec<_> = (0..8)
        .map(|_| std::fs::File::open("/dev/dsu"))
        .collect::<Result<_, _>>()?;
    drop(files);
    Ok(())
}

#[distributed_slice(TESTS)]
static UNLOAD_RELOAD: VmTest = VmTest {
    name: "foundation::unload_reload",
    phase: Phase::Unload,
    run: unload_reload,
};
fn unload_reload() -> TestResult {
    for _ in 0..3 {
        rmmod()?;
        ensure!(!module_loaded(), "dsu still in /proc/modules after rmmod");
        ensure!(
            !std::path::Path::new("/dev/dsu").exists(),
            "/dev/dsu left behind after rmmod"
        );
        insmod("")?;
        ensure!(
            std::path::Path::new("/dev/dsu").exists(),
            "/dev/dsu missing after reload"
        );
    }
    rmmod()?;
    Ok(())
}

#[distributed_slice(TESTS)]
static KMEMLEAK_CLEAN: VmTest = VmTest {
    name: "foundation::kmemleak_clean",
    phase: Phase::Final,
    run: kmemleak_clean,
};
fn kmemleak_clean() -> TestResult {
    let report = kmemleak_scan()?;
    ensure!(report.trim().is_empty(), "kmemleak reports:\n{report}");
    Ok(())
}
