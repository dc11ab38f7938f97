//! Kernel module: ioctl ABI hygiene and registration. Commands are dispatched on the whole
//! number (direction and size bits too); output-only and unused fields must be zero on
//! input; `/dev/dsu` is a misc device; a 32-bit process goes through the compat path.

use crate::kmod_ioctl::*;
use crate::robust_raw::KernelLog;
use crate::util::{insmod, module_loaded, sh};
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

const fn ioc(dir: u64, nr: u32, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((DSU_IOC_MAGIC as u64) << 8) | nr as u64
}

const READ_WRITE: u64 = 3;
const WRITE: u64 = 1;

/// Every command the module knows: (name, direction, number, struct size).
const COMMANDS: [(&str, u64, u32, usize); 19] = [
    (
        "ATTACH",
        READ_WRITE,
        DSU_IOC_NR_ATTACH,
        size_of::<dsu_attach>(),
    ),
    (
        "ATTACH_VER1",
        READ_WRITE,
        DSU_IOC_NR_ATTACH,
        DSU_ATTACH_SIZE_VER1 as usize,
    ),
    (
        "RESOLVE",
        READ_WRITE,
        DSU_IOC_NR_RESOLVE,
        size_of::<dsu_resolve>(),
    ),
    ("BIND", READ_WRITE, DSU_IOC_NR_BIND, size_of::<dsu_bind>()),
    (
        "BIND_VER1",
        READ_WRITE,
        DSU_IOC_NR_BIND,
        DSU_BIND_SIZE_VER1 as usize,
    ),
    (
        "LIST_SEGMENTS",
        READ_WRITE,
        DSU_IOC_NR_LIST_SEGMENTS,
        size_of::<dsu_list>(),
    ),
    (
        "LIST_VARIABLES",
        READ_WRITE,
        DSU_IOC_NR_LIST_VARIABLES,
        size_of::<dsu_list>(),
    ),
    (
        "LIST_VERSIONS",
        READ_WRITE,
        DSU_IOC_NR_LIST_VERSIONS,
        size_of::<dsu_list>(),
    ),
    (
        "READ_VAR",
        READ_WRITE,
        DSU_IOC_NR_READ_VAR,
        size_of::<dsu_read_var>(),
    ),
    (
        "DESTROY",
        WRITE,
        DSU_IOC_NR_DESTROY,
        size_of::<dsu_destroy>(),
    ),
    ("HEAP", READ_WRITE, DSU_IOC_NR_HEAP, size_of::<dsu_heap>()),
    (
        "HEAP_GROW",
        READ_WRITE,
        DSU_IOC_NR_HEAP_GROW,
        size_of::<dsu_heap_grow>(),
    ),
    (
        "HEAP_DISCARD",
        WRITE,
        DSU_IOC_NR_HEAP_DISCARD,
        size_of::<dsu_heap_discard>(),
    ),
    (
        "READ_HEAP",
        READ_WRITE,
        DSU_IOC_NR_READ_HEAP,
        size_of::<dsu_read_heap>(),
    ),
    (
        "SETATTR",
        WRITE,
        DSU_IOC_NR_SETATTR,
        size_of::<dsu_setattr>(),
    ),
    // _IO: no direction, no size.
    ("READY", 0, DSU_IOC_NR_READY, 0),
    ("GC", READ_WRITE, DSU_IOC_NR_GC, size_of::<dsu_gc>()),
    (
        "LOCK_TOKEN",
        READ_WRITE,
        DSU_IOC_NR_LOCK_TOKEN,
        size_of::<dsu_lock_token>(),
    ),
    (
        "LOCK_OWNER",
        READ_WRITE,
        DSU_IOC_NR_LOCK_OWNER,
        size_of::<dsu_lock_owner>(),
    ),
];

#[distributed_slice(TESTS)]
static DISPATCH: VmTest = VmTest {
    name: "kmod_abi::full_command_dispatch",
    phase: Phase::Main,
    run: full_command_dispatch,
};
fn full_command_dispatch() -> TestResult {
    let h = Dsu::open()?;
    // A valid struct behind every probe: a command the module took would act on it (and
    // answer something other than ENOTTY).
    let name = unique("abi-dispatch");
    let mut a = dsu_attach {
        size: size_of::<dsu_attach>() as u32,
        name: cname(&name),
        ..Default::default()
    };
    let arg = &raw mut a as usize;
    for (what, dir, nr, size) in COMMANDS {
        let real = ioc(dir, nr, size);
        for (how, cmd) in [
            ("size + 8", ioc(dir, nr, size + 8)),
            // READY has size 0: its "size - 8" is itself (skipped below).
            ("size - 8", ioc(dir, nr, size.saturating_sub(8))),
            ("size 0", ioc(dir, nr, 0)),
            ("direction none", real & !(3 << 30)),
            ("direction read", (real & !(3 << 30)) | (2 << 30)),
            ("direction write", (real & !(3 << 30)) | (WRITE << 30)),
            ("direction read+write", real | (READ_WRITE << 30)),
        ] {
            if cmd == real || COMMANDS.iter().any(|(_, d, n, s)| ioc(*d, *n, *s) == cmd) {
                continue;
            }
            ensure_eq!(
                h.ioctl_cmd(cmd, arg),
                Err(Errno::ENOTTY),
                "{what} with {how} ({cmd:#x})"
            );
        }
    }
    ensure!(
        Dsu::open()?.segment_info(&name)?.is_none(),
        "a probe attached"
    );

    // The real commands work, BIND through both of its commands.
    ensure_eq!(
        h.ioctl_cmd(
            ioc(READ_WRITE, DSU_IOC_NR_ATTACH, size_of::<dsu_attach>()),
            arg
        ),
        Ok(()),
        "ATTACH"
    );
    let v = h.resolve_ok(vec![var("x", 8, 1, Some(&5u64.to_ne_bytes()))])?;
    let pages = [v[0].first_page];
    let mut b = dsu_bind {
        size: DSU_BIND_SIZE_VER1,
        page_count: 1,
        pages: pages.as_ptr() as u64,
        label: cname("v1"),
        ..Default::default()
    };
    let bind_ver1 = ioc(READ_WRITE, DSU_IOC_NR_BIND, DSU_BIND_SIZE_VER1 as usize);
    ensure_eq!(
        h.ioctl_cmd(bind_ver1, &raw mut b as usize),
        Ok(()),
        "BIND_VER1"
    );
    ensure!(b.version_id != 0, "BIND_VER1 gave no version id");
    let m = h.map(1)?;
    ensure_eq!(m.get(0), 5, "mapped through a BIND_VER1 version");
    let h2 = Dsu::attached(&name)?;
    h2.resolve_ok(vec![var("x", 8, 1, None)])?;
    ensure!(h2.bind("v2", &pages, 0)? > b.version_id, "BIND");
    drop(m);
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static ZERO_FIELDS: VmTest = VmTest {
    name: "kmod_abi::unused_fields_must_be_zero",
    phase: Phase::Main,
    run: unused_fields_must_be_zero,
};
fn unused_fields_must_be_zero() -> TestResult {
    let name = unique("abi-zero");
    // ATTACH: `created` is output-only.
    let h = Dsu::open()?;
    let mut a = dsu_attach {
        size: size_of::<dsu_attach>() as u32,
        created: 1,
        name: cname(&name),
        ..Default::default()
    };
    ensure_eq!(
        h.attach_raw(&mut a),
        Err(Errno::EINVAL),
        "attach.created = 1"
    );
    a.created = 0;
    ensure_eq!(h.attach_raw(&mut a), Ok(()), "attach");

    // RESOLVE: `added` and `conflicts`, and each entry's status and outputs.
    for (field, set) in [
        (
            "added",
            (|r: &mut dsu_resolve| r.added = 1) as fn(&mut dsu_resolve),
        ),
        ("conflicts", |r| r.conflicts = 1),
    ] {
        let mut vars = [var("a", 8, 1, None)];
        let mut r = dsu_resolve {
            size: size_of::<dsu_resolve>() as u32,
            var_size: size_of::<dsu_var>() as u32,
            count: 1,
            vars: vars.as_mut_ptr() as u64,
            ..Default::default()
        };
        set(&mut r);
        ensure_eq!(
            h.resolve_raw(&mut r),
            Err(Errno::EINVAL),
            "resolve.{field} set"
        );
    }
    for (field, set) in [
        (
            "status",
            (|v: &mut dsu_var| v.status = DSU_VAR_COMMON) as fn(&mut dsu_var),
        ),
        ("first_page", |v| v.first_page = 1),
        ("page_count", |v| v.page_count = 1),
        ("found_size", |v| v.found_size = 8),
        ("found_fingerprint", |v| v.found_fingerprint = 1),
    ] {
        let mut vars = [var("a", 8, 1, None), var("b", 8, 1, None)];
        set(&mut vars[1]);
        let (_, res) = h.resolve(&mut vars);
        ensure_eq!(res, Err(Errno::EINVAL), "dsu_var.{field} set");
        ensure_eq!(
            vars[1].status,
            DSU_VAR_INVALID,
            "status of the entry with {field}"
        );
        ensure_eq!(vars[0].status, DSU_VAR_PENDING, "status of the clean entry");
    }
    let v = h.resolve_ok(vec![var("a", 8, 1, None)])?;

    // BIND: `version_id`.
    let pages = [v[0].first_page];
    let mut b = dsu_bind {
        size: size_of::<dsu_bind>() as u32,
        page_count: 1,
        pages: pages.as_ptr() as u64,
        version_id: 7,
        label: cname("1"),
        ..Default::default()
    };
    ensure_eq!(
        h.bind_raw(&mut b),
        Err(Errno::EINVAL),
        "bind.version_id = 7"
    );
    b.version_id = 0;
    ensure_eq!(h.bind_raw(&mut b), Ok(()), "bind");

    // LIST_*: `total` is output-only; LIST_SEGMENTS takes no segment name.
    let mut recs = vec![dsu_segment_info::default(); 4];
    let records = recs.as_mut_ptr() as u64;
    let list = |which: u32, total: u32, segment: &str| {
        let mut l = dsu_list {
            size: size_of::<dsu_list>() as u32,
            record_size: match which {
                0 => size_of::<dsu_segment_info>(),
                1 => size_of::<dsu_variable_info>(),
                _ => size_of::<dsu_version_info>(),
            } as u32,
            count: 1,
            records,
            total,
            segment: cname(segment),
            ..Default::default()
        };
        h.list_raw(which, &mut l)
    };
    ensure_eq!(
        list(0, 0, &name),
        Err(Errno::EINVAL),
        "LIST_SEGMENTS with a segment"
    );
    ensure_eq!(
        list(0, 1, ""),
        Err(Errno::EINVAL),
        "LIST_SEGMENTS with total"
    );
    ensure_eq!(list(0, 0, ""), Ok(()), "LIST_SEGMENTS");
    ensure_eq!(
        list(1, 1, &name),
        Err(Errno::EINVAL),
        "LIST_VARIABLES with total"
    );
    ensure_eq!(list(1, 0, &name), Ok(()), "LIST_VARIABLES");
    ensure_eq!(
        list(2, 1, &name),
        Err(Errno::EINVAL),
        "LIST_VERSIONS with total"
    );
    ensure_eq!(list(2, 0, &name), Ok(()), "LIST_VERSIONS");

    // READ_VAR: `var_size` and `var_fingerprint`.
    let mut buf = [0u8; 8];
    for (field, set) in [
        (
            "var_size",
            (|r: &mut dsu_read_var| r.var_size = 8) as fn(&mut dsu_read_var),
        ),
        ("var_fingerprint", |r| r.var_fingerprint = 1),
        ("none", |_| {}),
    ] {
        let mut r = dsu_read_var {
            size: size_of::<dsu_read_var>() as u32,
            fingerprint: 1,
            length: 8,
            buf: buf.as_mut_ptr() as u64,
            segment: cname(&name),
            name: cname("a"),
            ..Default::default()
        };
        set(&mut r);
        let want = if field == "none" {
            Ok(())
        } else {
            Err(Errno::EINVAL)
        };
        ensure_eq!(h.read_var_raw(&mut r), want, "read_var.{field} set");
    }
    drop(h);
    cleanup(&name);
    Ok(())
}

/// Major and minor of a device number (glibc's encoding).
fn major_minor(rdev: u64) -> (u64, u64) {
    (
        ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
        (rdev & 0xff) | ((rdev >> 12) & !0xff),
    )
}

/// The minor `/proc/misc` lists for `dsu`, if any.
fn misc_minor() -> Result<Option<u64>, crate::Failure> {
    Ok(std::fs::read_to_string("/proc/misc")?
        .lines()
        .find_map(|l| {
            let (minor, name) = l.trim().split_once(' ')?;
            (name == "dsu").then(|| minor.parse().ok()).flatten()
        }))
}

fn check_node() -> TestResult {
    let meta = std::fs::metadata("/dev/dsu")?;
    ensure!(
        meta.file_type().is_char_device(),
        "/dev/dsu is not a char device"
    );
    ensure_eq!(meta.mode() & 0o7777, 0o666, "mode of /dev/dsu");
    let (major, minor) = major_minor(meta.rdev());
    ensure_eq!(major, 10, "major of /dev/dsu (misc)");
    ensure_eq!(misc_minor()?, Some(minor), "minor in /proc/misc");
    let devices = std::fs::read_to_string("/proc/devices")?;
    ensure!(
        !devices.lines().any(|l| l.trim().ends_with(" dsu")),
        "dsu still has its own major:\n{devices}"
    );
    ensure!(
        !std::path::Path::new("/sys/class/dsu").exists(),
        "a private dsu class exists"
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static MISC: VmTest = VmTest {
    name: "kmod_abi::misc_device",
    phase: Phase::Main,
    run: misc_device,
};
fn misc_device() -> TestResult {
    let log = KernelLog::mark();
    check_node()?;
    // Unload: the misc minor and the node go; reload: they come back, and work.
    sh("rmmod dsu")?;
    ensure!(!module_loaded(), "module still loaded");
    ensure_eq!(misc_minor()?, None, "/proc/misc after rmmod");
    ensure!(
        !std::path::Path::new("/dev/dsu").exists(),
        "/dev/dsu left after rmmod"
    );
    insmod("")?;
    check_node()?;
    let name = unique("abi-misc");
    let h = Dsu::attached(&name)?;
    drop(h);
    cleanup(&name);
    log.check()
}

#[distributed_slice(TESTS)]
static COMPAT: VmTest = VmTest {
    name: "kmod_abi::compat_32bit",
    phase: Phase::Main,
    run: compat_32bit,
};
fn compat_32bit() -> TestResult {
    let log = KernelLog::mark();
    let out = std::process::Command::new("dsu-compat32")
        .arg(unique("abi-compat"))
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(crate::Failure::Skip(
                "dsu-compat32 not built (needs gcc -m32: gcc-multilib)".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "dsu-compat32 failed: {text}");
    ensure!(text.contains("compat32 ok"), "no success line: {text}");
    log.check()
}
