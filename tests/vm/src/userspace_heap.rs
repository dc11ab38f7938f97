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
        let size1: u64 = field(&status, "size").ok_or("no size")?.parse()?;
        ensure!(
            size1 > 0 && size1 < 4 << 20,
            "attach formats the new heap (installs it): {status}"
        );
        ensure!(
            base.starts_with("0x") && u64::from_str_radix(&base[2..], 16)? % (1 << 30) == 0,
            "a 1 GiB-aligned base: {status}"
        );
        let a = field(&v1.cmd("alloc 8")?, "ptr").ok_or("no ptr")?;
        v1.cmd(&format!("put {a} 77"))?;
        // v2 maps the existing heap without asking for one, at the same address.
        let mut v2 = Server::start("heap_probe", &["--segment", seg])?;
        let status2 = v2.cmd("status")?;
        ensure_eq!(field(&status2, "base"), Some(base.clone()), "v2's base");
        ensure_eq!(
            v2.cmd("deref")?,
            "77",
            "v2 follows v1's pointer from a global"
        );
        // v2 allocates more than v1 ever saw backed (the heap grows); v1 reads it at once.
        let b = field(&v2.cmd("alloc 4194304")?, "ptr").ok_or("no ptr")?;
        let size2: u64 = field(&v2.cmd("status")?, "size")
            .ok_or("no size")?
            .parse()?;
        ensure!(
            size2 > size1 + (4 << 20) - 4096,
            "v2 grew the heap: {size2}"
        );
        let b_end = format!("{:#x}", u64::from_str_radix(&b[2..], 16)? + (4 << 20) - 8);
        v2.cmd(&format!("put {b_end} 99"))?;
        ensure_eq!(
            v1.cmd(&format!("get {b_end}"))?,
            "99",
            "v1 reads past its own view of the size"
        );
        ensure_eq!(v1.cmd("deref")?, "99", "v1 follows v2's pointer");
        ensure!(
            v1.cmd("stats")?.contains("blocks=2"),
            "both blocks, one allocator"
        );
        let show = ok("dsuctl", &["show", seg])?;
        ensure!(
            show.contains(&format!(
                "heap: base {base}, reserve 67108864 bytes, size {size2} bytes"
            )),
            "dsuctl show: {show}"
        );
        // The allocator's own counters, read by dsuctl without attaching.
        let stats = v1.cmd("stats")?;
        let largest = field(&stats, "largest").ok_or("no largest")?;
        ensure!(
            show.contains(&format!(
                "heap: allocated {} bytes in 2 blocks, free {} bytes",
                field(&stats, "allocated").ok_or("no allocated")?,
                field(&stats, "free").ok_or("no free")?
            )) && show.contains(&format!("largest free block {largest} bytes")),
            "dsuctl show's allocator line: {show} (v1: {stats})"
        );
        let addr = b_end;
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
        let p = field(&v1.cmd("alloc 8")?, "ptr").ok_or("no ptr")?;
        v1.cmd(&format!("put {p} 5"))?;
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
        ensure_eq!(v1.cmd(&format!("get {p}"))?, "5", "v1 still reads its heap");
        ensure!(
            v1.cmd("alloc 524288")?.starts_with("ptr=0x"),
            "v1 still allocates (and grows) in it"
        );
        v1.cmd("exit")?;
        Ok(())
    })();
    destroy(seg);
    r
}
