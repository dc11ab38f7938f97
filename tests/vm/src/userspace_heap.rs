//! The shared heap through the `dsu` crate (`heap_probe`, userspace/dsu/examples): two
//! versions map it at the same address, a global holds a plain pointer into it that the
//! other version follows, growth is seen without re-attach, `dsuctl show` and `dsuctl dump
//! --heap` read it, and a process with something at the heap's address gets a clear error
//! while the running version keeps working.

use crate::userspace_helpers::{Server, destroy, fails, field, ok};
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use linkme::distributed_slice;

#[distributed_slice(TESTS)]
static SHARED: VmTest = VmTest {
    name: "userspace::heap_shared_between_versions",
    phase: Phase::Main,
    run: shared,
};
fn shared() -> TestResult {
    let seg = "us-heap";
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start("heap_probe", &["--segment", seg, "--reserve", "67108864"])?;
        let status = v1.cmd("status")?;
        let base = field(&status, "base").ok_or("no base")?;
        ensure_eq!(
            field(&status, "size"),
            Some("0".to_string()),
            "new heap: {status}"
        );
        ensure!(
            base.starts_with("0x") && u64::from_str_radix(&base[2..], 16)? % (1 << 30) == 0,
            "a 1 GiB-aligned base: {status}"
        );
        ensure_eq!(v1.cmd("grow 8192")?, "size=8192", "v1 grows");
        v1.cmd("put 4096 77")?;
        // v2 maps the existing heap without asking for one, at the same address.
        let mut v2 = Server::start("heap_probe", &["--segment", seg])?;
        let status2 = v2.cmd("status")?;
        ensure_eq!(field(&status2, "base"), Some(base.clone()), "v2's base");
        ensure_eq!(
            v2.cmd("deref")?,
            "77",
            "v2 follows v1's pointer from a global"
        );
        // v2 grows and writes past v1's size; v1 reads it at once.
        ensure_eq!(v2.cmd("grow 12288")?, "size=12288", "v2 grows");
        v2.cmd("put 8192 99")?;
        ensure_eq!(v1.cmd("get 8192")?, "99", "v1 reads past its own growth");
        ensure_eq!(v1.cmd("deref")?, "99", "v1 follows v2's pointer");
        let show = ok("dsuctl", &["show", seg])?;
        ensure!(
            show.contains(&format!(
                "heap: base {base}, reserve 67108864 bytes, size 12288 bytes"
            )),
            "dsuctl show: {show}"
        );
        let addr = format!("{:#x}", u64::from_str_radix(&base[2..], 16)? + 8192);
        let dump = ok("dsuctl", &["dump", seg, "--heap", &addr, "8"])?;
        ensure!(
            dump.contains(&format!("heap {addr}: 8 bytes")) && dump.contains("63 00 00 00"),
            "dsuctl dump --heap: {dump}"
        );
        let err = fails(
            "dsuctl",
            &["dump", seg, "--heap", &base[2..], "0x40000000"],
            1,
        )?;
        ensure!(err.contains("not a length"), "dump too long: {err}");
        v1.cmd("exit")?;
        v2.cmd("exit")?;
        Ok(())
    })();
    destroy(seg);
    r
}

#[distributed_slice(TESTS)]
static CONFLICT: VmTest = VmTest {
    name: "userspace::heap_address_conflict",
    phase: Phase::Main,
    run: conflict,
};
/// A second version that has a page mapped inside the heap's window fails to attach with
/// an error naming the range and what is there; the segment gains no version and the
/// running version keeps working, heap included.
fn conflict() -> TestResult {
    let seg = "us-heap-conflict";
    destroy(seg);
    let r = (|| -> TestResult {
        let mut v1 = Server::start("heap_probe", &["--segment", seg, "--reserve", "1048576"])?;
        let base = field(&v1.cmd("status")?, "base").ok_or("no base")?;
        v1.cmd("grow 4096")?;
        v1.cmd("put 0 5")?;
        let inside = format!("{:#x}", u64::from_str_radix(&base[2..], 16)? + 65536);
        let err = fails(
            "heap_probe",
            &["--segment", seg, "--occupy", &inside, "status"],
            1,
        )?;
        let end = format!("{:#x}", u64::from_str_radix(&base[2..], 16)? + 1048576);
        ensure!(
            err.contains(&format!(
                "the shared heap of segment \"{seg}\" lives at {base}..{end} in every version"
            )),
            "conflict message: {err}"
        );
        ensure!(
            err.contains(&format!("{}-", &inside[2..])) && err.contains("r--p"),
            "the message names the occupying mapping: {err}"
        );
        let show = ok("dsuctl", &["show", seg])?;
        ensure!(show.contains("versions (1):"), "one version: {show}");
        ensure_eq!(v1.cmd("get 0")?, "5", "v1 still reads its heap");
        ensure_eq!(v1.cmd("grow 8192")?, "size=8192", "v1 still grows it");
        v1.cmd("exit")?;
        Ok(())
    })();
    destroy(seg);
    r
}
