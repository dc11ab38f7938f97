//! Kernel module: type descriptions (`dsu_var.type_desc`, READ_VAR with
//! `DSU_READ_TYPE_DESC`). A new entry keeps its creator's description, a common one keeps
//! the first; the old `dsu_var` size still works (no description); bad descriptions are
//! refused with a precise errno and change nothing.

use crate::kmod_ioctl::*;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

/// A RESOLVE entry with a description, which must outlive the call.
fn described(name: &str, fingerprint: u64, desc: &[u8]) -> dsu_var {
    dsu_var {
        type_desc: desc.as_ptr() as u64,
        type_desc_len: desc.len() as u32,
        ..var(name, 16, fingerprint, None)
    }
}

/// READ_VAR with `DSU_READ_TYPE_DESC` (and `extra` flags) of `len` bytes at `offset`.
fn read_desc(
    h: &Dsu,
    seg: &str,
    name: &str,
    fingerprint: u64,
    extra: u32,
    offset: u64,
    len: usize,
) -> Sys<Vec<u8>> {
    h.read_var(
        seg,
        name,
        fingerprint,
        DSU_READ_TYPE_DESC | extra,
        offset,
        len,
    )
}

#[distributed_slice(TESTS)]
static STORED: VmTest = VmTest {
    name: "kmod_typedesc::stored_and_read_back",
    phase: Phase::Main,
    run: stored,
};
fn stored() -> TestResult {
    let seg = unique("tdesc");
    let h = Dsu::attached(&seg)?;
    let conf =
        b"dsu-type 1\ntype 16 8 struct conf\nfield 0 8 port uint64_t\nfield 8 8 limit uint64_t\n";
    let vars = h.resolve_ok(vec![
        described("conf", 0xc0, conf),
        var("plain", 8, 0x5, None),
    ])?;
    ensure_eq!(vars[0].status, DSU_VAR_ADDED, "conf added");
    ensure_eq!(
        read_desc(&h, &seg, "conf", 0xc0, 0, 0, 4096)?,
        conf.to_vec(),
        "the description, whole"
    );
    ensure_eq!(
        read_desc(&h, &seg, "conf", 0, DSU_READ_ANY_FINGERPRINT, 11, 10)?,
        conf[11..21].to_vec(),
        "a part, any fingerprint"
    );
    ensure_eq!(
        read_desc(&h, &seg, "conf", 0xc0, 0, conf.len() as u64, 8)?,
        Vec::<u8>::new(),
        "at its end: nothing"
    );
    ensure_eq!(
        read_desc(&h, &seg, "conf", 0xc0, 0, conf.len() as u64 + 1, 8),
        Err(Errno::EINVAL),
        "past its end"
    );
    ensure_eq!(
        read_desc(&h, &seg, "plain", 0x5, 0, 0, 4096)?,
        Vec::<u8>::new(),
        "an entry without a description reads as empty"
    );
    ensure_eq!(
        read_desc(&h, &seg, "conf", 0xdead, 0, 0, 16),
        Err(Errno::ENOENT),
        "another fingerprint"
    );
    ensure_eq!(
        read_desc(&h, &seg, "nope", 0xc0, 0, 0, 16),
        Err(Errno::ENOENT),
        "missing variable"
    );
    // The value is still the value.
    ensure_eq!(
        h.read_var(&seg, "conf", 0xc0, 0, 0, 16)?,
        vec![0; 16],
        "READ_VAR without the flag reads the bytes"
    );
    // A bad buffer: EFAULT.
    let mut r = dsu_read_var {
        size: size_of::<dsu_read_var>() as u32,
        flags: DSU_READ_TYPE_DESC,
        fingerprint: 0xc0,
        length: 64,
        buf: 8,
        segment: cname(&seg),
        name: cname("conf"),
        ..Default::default()
    };
    ensure_eq!(h.read_var_raw(&mut r), Err(Errno::EFAULT), "bad buffer");

    // A second handle finding the entry common keeps the first description.
    let h2 = Dsu::attached(&seg)?;
    let other = b"dsu-type 1\ntype 16 8 other\n";
    let vars = h2.resolve_ok(vec![described("conf", 0xc0, other)])?;
    ensure_eq!(vars[0].status, DSU_VAR_COMMON, "common");
    ensure_eq!(
        read_desc(&h, &seg, "conf", 0xc0, 0, 0, 4096)?,
        conf.to_vec(),
        "the creator's description stays"
    );

    // The first version of dsu_var (200 bytes, no description) is still accepted.
    let mut old = [var("old", 8, 0x01d, None)];
    let mut bytes = vec![0u8; DSU_VAR_SIZE_VER1 as usize];
    // SAFETY: dsu_var is plain data at least DSU_VAR_SIZE_VER1 bytes long.
    bytes.copy_from_slice(unsafe {
        std::slice::from_raw_parts(old.as_ptr().cast::<u8>(), DSU_VAR_SIZE_VER1 as usize)
    });
    // The bytes after the old size in this buffer must not be written.
    bytes.extend_from_slice(&[0xee; 16]);
    let mut r = dsu_resolve {
        size: size_of::<dsu_resolve>() as u32,
        var_size: DSU_VAR_SIZE_VER1,
        count: 1,
        vars: bytes.as_mut_ptr() as u64,
        ..Default::default()
    };
    h.resolve_raw(&mut r)?;
    // SAFETY: the kernel wrote back at most DSU_VAR_SIZE_VER1 bytes of the record.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            old.as_mut_ptr().cast::<u8>(),
            DSU_VAR_SIZE_VER1 as usize,
        )
    };
    ensure_eq!(old[0].status, DSU_VAR_ADDED, "added with the old var_size");
    ensure!(
        bytes[DSU_VAR_SIZE_VER1 as usize..]
            .iter()
            .all(|b| *b == 0xee),
        "the kernel wrote past the caller's var_size"
    );
    ensure_eq!(
        read_desc(&h, &seg, "old", 0x01d, 0, 0, 64)?,
        Vec::<u8>::new(),
        "no description"
    );
    cleanup(&seg);
    Ok(())
}

#[distributed_slice(TESTS)]
static BAD: VmTest = VmTest {
    name: "kmod_typedesc::bad_descriptions_change_nothing",
    phase: Phase::Main,
    run: bad,
};
fn bad() -> TestResult {
    let seg = unique("tdesc-bad");
    let h = Dsu::attached(&seg)?;
    let good = b"dsu-type 1\ntype 16 8 ok\n".to_vec();
    let guard = page_then_guard()?;
    // The last 4 bytes of the readable page, then the PROT_NONE page.
    let straddle = guard.ptr as u64 + PAGE as u64 - 4;
    let long = vec![b'x'; DSU_TYPE_DESC_MAX as usize + 1];
    let with = |bytes: &[u8], e: fn(&mut dsu_var)| {
        let mut v = described("bad", 0xbad, bytes);
        e(&mut v);
        v
    };
    let cases: Vec<(&str, dsu_var, Errno, bool)> = vec![
        (
            "longer than DSU_TYPE_DESC_MAX",
            described("bad", 0xbad, &long),
            Errno::E2BIG,
            false,
        ),
        (
            "a pointer without a length",
            with(&good, |v| v.type_desc_len = 0),
            Errno::EINVAL,
            true,
        ),
        (
            "a length without a pointer",
            with(&good, |v| v.type_desc = 0),
            Errno::EINVAL,
            true,
        ),
        (
            "a control byte",
            described("bad", 0xbad, b"dsu-type 1\x01\n"),
            Errno::EINVAL,
            true,
        ),
        (
            "a byte above ASCII",
            described("bad", 0xbad, b"dsu-type 1 \xc3\xa9\n"),
            Errno::EINVAL,
            true,
        ),
        (
            "a NUL byte",
            described("bad", 0xbad, b"dsu-type 1\0\n"),
            Errno::EINVAL,
            true,
        ),
        (
            "non-zero padding",
            with(&good, |v| v.__pad = 1),
            Errno::EINVAL,
            true,
        ),
        (
            "an unmapped pointer",
            with(&good, |v| v.type_desc = 8),
            Errno::EFAULT,
            false,
        ),
        (
            "a description running into a PROT_NONE page",
            with(&good, |v| {
                v.type_desc = 0;
                v.type_desc_len = 16;
            }),
            Errno::EFAULT,
            false,
        ),
        (
            "a kernel address",
            with(&good, |v| v.type_desc = 0xffff_8880_0000_0000),
            Errno::EFAULT,
            false,
        ),
    ];
    for (what, mut v, want, invalid_status) in cases {
        if what.contains("PROT_NONE") {
            v.type_desc = straddle;
        }
        // A valid entry first: it must not be created either.
        let mut batch = vec![described("fine", 0xf1, &good), v];
        let (r, res) = h.resolve(&mut batch);
        ensure_eq!(res, Err(want), "{what}");
        ensure_eq!(r.added, 0, "{what}: added");
        if invalid_status {
            ensure_eq!(batch[1].status, DSU_VAR_INVALID, "{what}: status");
        }
        let (_, total) = h.list_variables(&seg, 0, 8)?;
        ensure_eq!(total, 0, "{what}: the directory changed");
    }
    // The exact limit is fine.
    let max = {
        let mut m = b"dsu-type 1\ntype 16 8 big\n".to_vec();
        m.resize(DSU_TYPE_DESC_MAX as usize, b'x');
        m
    };
    let vars = h.resolve_ok(vec![described("max", 0x3a, &max)])?;
    ensure_eq!(
        vars[0].status,
        DSU_VAR_ADDED,
        "a description of DSU_TYPE_DESC_MAX bytes"
    );
    ensure_eq!(
        read_desc(&h, &seg, "max", 0x3a, 0, 0, 2 * DSU_TYPE_DESC_MAX as usize)?,
        max,
        "read back whole"
    );
    // An unknown READ_VAR flag is still refused.
    ensure_eq!(
        h.read_var(&seg, "max", 0x3a, 1 << 2, 0, 8),
        Err(Errno::EINVAL),
        "unknown READ_VAR flag"
    );
    cleanup(&seg);
    Ok(())
}
