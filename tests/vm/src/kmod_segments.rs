//! Kernel module: segments and the argument contract of every ioctl (create, open, EEXIST,
//! ENOENT, names, bad pointers, struct sizes, counts, handle states, DESTROY).

use crate::kmod_ioctl::*;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

#[distributed_slice(TESTS)]
static CREATE_OPEN: VmTest = VmTest {
    name: "kmod_segments::create_open_exists",
    phase: Phase::Main,
    run: create_open,
};
fn create_open() -> TestResult {
    let name = unique("seg");
    let a = Dsu::open()?;
    ensure_eq!(
        a.attach(&name, DSU_ATTACH_MUST_EXIST, 0),
        Err(Errno::ENOENT),
        "MUST_EXIST on a missing segment"
    );
    ensure_eq!(
        a.attach(&name, DSU_ATTACH_MUST_CREATE, 0),
        Ok(true),
        "MUST_CREATE creates"
    );
    ensure_eq!(
        a.attach(&name, 0, 0),
        Err(Errno::EBUSY),
        "ATTACH on an attached handle"
    );
    let b = Dsu::open()?;
    ensure_eq!(
        b.attach(&name, DSU_ATTACH_MUST_CREATE, 0),
        Err(Errno::EEXIST),
        "MUST_CREATE on an existing segment"
    );
    ensure_eq!(
        b.attach(&name, DSU_ATTACH_MUST_CREATE | DSU_ATTACH_MUST_EXIST, 0),
        Err(Errno::EINVAL),
        "both flags"
    );
    ensure_eq!(
        b.attach(&name, 1 << 3, 0),
        Err(Errno::EINVAL),
        "unknown flag"
    );
    ensure_eq!(
        b.attach(&name, 0, 0o1000),
        Err(Errno::EINVAL),
        "mode above 0777"
    );
    ensure_eq!(
        b.attach(&name, DSU_ATTACH_MUST_EXIST, 0),
        Ok(false),
        "MUST_EXIST opens"
    );
    let c = Dsu::open()?;
    ensure_eq!(c.attach(&name, 0, 0), Ok(false), "plain ATTACH opens");

    let info = a.segment_info(&name)?.ok_or("segment not listed")?;
    ensure_eq!(info.mode, 0o600, "default mode");
    ensure_eq!((info.uid, info.gid), (0, 0), "owner");
    ensure_eq!(info.handles, 3, "attached handles");
    ensure_eq!(info.flags, 0, "flags");

    let d = Dsu::open()?;
    ensure_eq!(d.destroy(&name), Ok(()), "DESTROY");
    ensure_eq!(d.destroy(&name), Err(Errno::ENOENT), "second DESTROY");
    ensure_eq!(
        d.list_variables(&name, 0, 1).map(|_| ()),
        Err(Errno::ENOENT),
        "LIST_VARIABLES after DESTROY"
    );
    // Still listed while handles remain, marked destroyed.
    let (all, _) = d.list_segments(0, DSU_LIST_MAX)?;
    let listed = all
        .iter()
        .find(|s| cstr(&s.name) == name)
        .ok_or("destroyed segment with handles not listed")?;
    ensure_eq!(listed.flags, DSU_SEGMENT_DESTROYED, "destroyed flag");
    // The name is free again: a new segment, not the old one.
    let e = Dsu::open()?;
    ensure_eq!(
        e.attach(&name, DSU_ATTACH_MUST_CREATE, 0o640),
        Ok(true),
        "re-create after DESTROY"
    );
    drop((a, b, c));
    let (all, _) = d.list_segments(0, DSU_LIST_MAX)?;
    let same: Vec<_> = all.iter().filter(|s| cstr(&s.name) == name).collect();
    ensure_eq!(same.len(), 1, "old segment gone after its last handle");
    ensure_eq!(same[0].mode, 0o640, "new segment's mode");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static BAD_NAMES: VmTest = VmTest {
    name: "kmod_segments::bad_names",
    phase: Phase::Main,
    run: bad_names,
};
fn bad_names() -> TestResult {
    let d = Dsu::open()?;
    for bad in ["", "a/b", "a b", "a\u{e9}", "seg*", "\t"] {
        ensure_eq!(
            d.attach(bad, 0, 0),
            Err(Errno::EINVAL),
            "segment name {bad:?}"
        );
    }
    // 64 bytes with no NUL.
    let mut a = dsu_attach {
        size: size_of::<dsu_attach>() as u32,
        ..Default::default()
    };
    a.name = [b'x' as core::ffi::c_char; 64];
    ensure_eq!(
        d.attach_raw(&mut a),
        Err(Errno::EINVAL),
        "unterminated name"
    );
    // 63 bytes is the longest.
    let mut longest = unique("L");
    while longest.len() < 63 {
        longest.push('n');
    }
    ensure_eq!(d.attach(&longest, 0, 0).map(|_| ()), Ok(()), "63-byte name");
    cleanup(&longest);

    // Variable names and labels.
    let name = unique("names");
    let h = Dsu::attached(&name)?;
    let mut vars = vec![var("", 8, 1, None)];
    ensure_eq!(
        h.resolve(&mut vars).1,
        Err(Errno::EINVAL),
        "empty variable name"
    );
    ensure_eq!(vars[0].status, DSU_VAR_INVALID, "status of an empty name");
    let mut v = var("x", 8, 1, None);
    v.name = [b'v' as core::ffi::c_char; 128];
    let mut vars = vec![v];
    ensure_eq!(
        h.resolve(&mut vars).1,
        Err(Errno::EINVAL),
        "unterminated variable name"
    );
    let mut vars = vec![var("bad\nname", 8, 1, None)];
    ensure_eq!(
        h.resolve(&mut vars).1,
        Err(Errno::EINVAL),
        "control byte in a variable name"
    );
    let ok = h.resolve_ok(vec![var("a name: with spaces & symbols!", 8, 1, None)])?;
    ensure_eq!(ok[0].status, DSU_VAR_ADDED, "printable name");
    ensure_eq!(h.bind("", &[0], 0), Err(Errno::EINVAL), "empty label");
    ensure_eq!(
        h.bind("tab\tlabel", &[0], 0),
        Err(Errno::EINVAL),
        "control byte in a label"
    );
    let mut b = dsu_bind {
        size: size_of::<dsu_bind>() as u32,
        page_count: 1,
        ..Default::default()
    };
    b.label = [b'l' as core::ffi::c_char; 32];
    let pages = [0u64];
    b.pages = pages.as_ptr() as u64;
    ensure_eq!(h.bind_raw(&mut b), Err(Errno::EINVAL), "unterminated label");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static BAD_POINTERS: VmTest = VmTest {
    name: "kmod_segments::bad_pointers",
    phase: Phase::Main,
    run: bad_pointers,
};
fn bad_pointers() -> TestResult {
    let d = Dsu::open()?;
    for which in [
        Ioc::Attach,
        Ioc::Resolve,
        Ioc::Bind,
        Ioc::ListSegments,
        Ioc::ReadVar,
        Ioc::Destroy,
    ] {
        for arg in [0usize, 1, 0xffff_ffff_ffff_f000, 0x8000_0000_0000_0000] {
            ensure_eq!(
                d.ioctl_arg(which, arg),
                Err(Errno::EFAULT),
                "{which:?} with argument {arg:#x}"
            );
        }
    }
    let name = unique("ptr");
    let h = Dsu::attached(&name)?;
    // RESOLVE: bad vars array, bad init pointer.
    let mut r = dsu_resolve {
        size: size_of::<dsu_resolve>() as u32,
        var_size: size_of::<dsu_var>() as u32,
        count: 1,
        vars: 8,
        ..Default::default()
    };
    ensure_eq!(
        h.resolve_raw(&mut r),
        Err(Errno::EFAULT),
        "RESOLVE with a bad vars pointer"
    );
    let mut vars = vec![dsu_var {
        init: 16,
        ..var("v", 64, 1, None)
    }];
    ensure_eq!(
        h.resolve(&mut vars).1,
        Err(Errno::EFAULT),
        "RESOLVE with a bad init pointer"
    );
    ensure_eq!(
        h.list_variables(&name, 0, 8)?.1,
        0,
        "nothing created by a failed RESOLVE"
    );
    let vars = h.resolve_ok(vec![var("v", 64, 1, None)])?;
    // BIND: bad page map pointer.
    let mut b = dsu_bind {
        size: size_of::<dsu_bind>() as u32,
        page_count: 1,
        pages: 24,
        label: cname("1"),
        ..Default::default()
    };
    ensure_eq!(
        h.bind_raw(&mut b),
        Err(Errno::EFAULT),
        "BIND with a bad pages pointer"
    );
    // LIST with bad records, READ_VAR with a bad buffer.
    let mut l = dsu_list {
        size: size_of::<dsu_list>() as u32,
        record_size: size_of::<dsu_variable_info>() as u32,
        count: 4,
        records: 32,
        segment: cname(&name),
        ..Default::default()
    };
    ensure_eq!(
        h.list_raw(1, &mut l),
        Err(Errno::EFAULT),
        "LIST_VARIABLES with bad records"
    );
    let mut rv = dsu_read_var {
        size: size_of::<dsu_read_var>() as u32,
        fingerprint: 1,
        length: 64,
        buf: 40,
        segment: cname(&name),
        name: cname("v"),
        ..Default::default()
    };
    ensure_eq!(
        h.read_var_raw(&mut rv),
        Err(Errno::EFAULT),
        "READ_VAR with a bad buffer"
    );
    ensure_eq!(vars[0].status, DSU_VAR_ADDED, "the good RESOLVE");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static STRUCT_SIZES: VmTest = VmTest {
    name: "kmod_segments::struct_sizes_and_flags",
    phase: Phase::Main,
    run: struct_sizes,
};
fn struct_sizes() -> TestResult {
    let name = unique("size");
    let d = Dsu::open()?;
    let mut a = dsu_attach {
        size: 79,
        name: cname(&name),
        ..Default::default()
    };
    ensure_eq!(
        d.attach_raw(&mut a),
        Err(Errno::EINVAL),
        "size below the struct"
    );
    a.size = 0;
    ensure_eq!(d.attach_raw(&mut a), Err(Errno::EINVAL), "size 0");
    // A larger struct with a zero tail is accepted; a non-zero tail is E2BIG.
    #[repr(C)]
    struct Bigger {
        a: dsu_attach,
        tail: [u8; 24],
    }
    let mut big = Bigger {
        a: dsu_attach {
            size: size_of::<Bigger>() as u32,
            name: cname(&name),
            ..Default::default()
        },
        tail: [0; 24],
    };
    big.tail[23] = 1;
    ensure_eq!(
        d.ioctl_arg(Ioc::Attach, &mut big as *mut Bigger as usize),
        Err(Errno::E2BIG),
        "non-zero tail"
    );
    big.tail[23] = 0;
    ensure_eq!(
        d.ioctl_arg(Ioc::Attach, &mut big as *mut Bigger as usize),
        Ok(()),
        "zero tail"
    );
    ensure_eq!(big.a.created, 1, "created through the larger struct");
    ensure_eq!(big.tail, [0; 24], "tail left alone");
    // Far too large.
    let mut huge = vec![0u8; 3 * PAGE];
    huge[..4].copy_from_slice(&((2 * PAGE) as u32).to_ne_bytes());
    ensure_eq!(
        Dsu::open()?.ioctl_arg(Ioc::Attach, huge.as_mut_ptr() as usize),
        Err(Errno::E2BIG),
        "size above a page"
    );

    // Reserved fields and flags.
    let mut l = dsu_list {
        size: size_of::<dsu_list>() as u32,
        record_size: 120,
        __pad: 1,
        ..Default::default()
    };
    ensure_eq!(
        d.list_raw(0, &mut l),
        Err(Errno::EINVAL),
        "non-zero padding"
    );
    let mut r = dsu_resolve {
        size: size_of::<dsu_resolve>() as u32,
        var_size: size_of::<dsu_var>() as u32,
        count: 1,
        flags: 1,
        ..Default::default()
    };
    ensure_eq!(d.resolve_raw(&mut r), Err(Errno::EINVAL), "RESOLVE flags");
    let dd = dsu_destroy {
        size: size_of::<dsu_destroy>() as u32,
        flags: 1,
        name: cname(&name),
    };
    ensure_eq!(
        d.ioctl_arg(Ioc::Destroy, &dd as *const _ as usize),
        Err(Errno::EINVAL),
        "DESTROY flags"
    );
    // var_size / record_size below the struct.
    let h = Dsu::attached(&name)?;
    let mut vars = vec![var("x", 8, 1, None)];
    let mut r = dsu_resolve {
        size: size_of::<dsu_resolve>() as u32,
        var_size: 199,
        count: 1,
        vars: vars.as_mut_ptr() as u64,
        ..Default::default()
    };
    ensure_eq!(
        h.resolve_raw(&mut r),
        Err(Errno::EINVAL),
        "var_size below dsu_var"
    );
    let mut l = dsu_list {
        size: size_of::<dsu_list>() as u32,
        record_size: 100,
        count: 1,
        records: vars.as_mut_ptr() as u64,
        ..Default::default()
    };
    ensure_eq!(
        h.list_raw(0, &mut l),
        Err(Errno::EINVAL),
        "record_size below dsu_segment_info"
    );
    // A larger record size: the kernel zero-fills what it does not know.
    let mut recs = vec![0xffu8; 2 * 200];
    let mut l = dsu_list {
        size: size_of::<dsu_list>() as u32,
        record_size: 200,
        count: 2,
        records: recs.as_mut_ptr() as u64,
        ..Default::default()
    };
    ensure_eq!(h.list_raw(0, &mut l), Ok(()), "larger record size");
    ensure!(l.count >= 1, "no segment listed");
    ensure!(
        recs[120..200].iter().all(|b| *b == 0),
        "record tail not zeroed"
    );
    // Unknown ioctls.
    let unknown_nr = (3u64 << 30) | (80 << 16) | ((DSU_IOC_MAGIC as u64) << 8) | 0x7f;
    ensure_eq!(
        h.ioctl_cmd(unknown_nr, 0),
        Err(Errno::ENOTTY),
        "unknown number"
    );
    let other_type = (3u64 << 30) | (80 << 16) | (0x54 << 8) | 1;
    ensure_eq!(h.ioctl_cmd(other_type, 0), Err(Errno::ENOTTY), "other type");
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static COUNTS: VmTest = VmTest {
    name: "kmod_segments::oversized_counts",
    phase: Phase::Main,
    run: counts,
};
fn counts() -> TestResult {
    let name = unique("count");
    let h = Dsu::attached(&name)?;
    let mut r = dsu_resolve {
        size: size_of::<dsu_resolve>() as u32,
        var_size: size_of::<dsu_var>() as u32,
        count: 0,
        vars: 0,
        ..Default::default()
    };
    ensure_eq!(h.resolve_raw(&mut r), Err(Errno::EINVAL), "RESOLVE count 0");
    r.count = 16385;
    ensure_eq!(
        h.resolve_raw(&mut r),
        Err(Errno::E2BIG),
        "RESOLVE count above max_variables"
    );
    r.count = u32::MAX;
    ensure_eq!(
        h.resolve_raw(&mut r),
        Err(Errno::E2BIG),
        "RESOLVE count u32::MAX"
    );
    let mut l = dsu_list {
        size: size_of::<dsu_list>() as u32,
        record_size: size_of::<dsu_segment_info>() as u32,
        count: DSU_LIST_MAX + 1,
        ..Default::default()
    };
    ensure_eq!(
        h.list_raw(0, &mut l),
        Err(Errno::E2BIG),
        "LIST count above DSU_LIST_MAX"
    );
    // count 0 asks only for the total.
    l.count = 0;
    ensure_eq!(h.list_raw(0, &mut l), Ok(()), "LIST count 0");
    ensure!(l.total >= 1, "total with count 0: {}", l.total);
    h.resolve_ok(vec![var("v", 8, 1, None)])?;
    ensure_eq!(h.bind("1", &[], 0), Err(Errno::EINVAL), "BIND page_count 0");
    let mut b = dsu_bind {
        size: size_of::<dsu_bind>() as u32,
        page_count: 131073,
        pages: 8,
        label: cname("1"),
        ..Default::default()
    };
    ensure_eq!(
        h.bind_raw(&mut b),
        Err(Errno::E2BIG),
        "BIND map above max_segment_pages"
    );
    b.page_count = u64::MAX;
    ensure_eq!(h.bind_raw(&mut b), Err(Errno::E2BIG), "BIND map u64::MAX");
    ensure_eq!(
        h.bind("1", &[1], 0),
        Err(Errno::EINVAL),
        "BIND index out of range"
    );
    ensure_eq!(
        h.bind("1", &[0, u64::MAX], 0),
        Err(Errno::EINVAL),
        "BIND index u64::MAX"
    );
    // Bit 1 is DSU_BIND_CANDIDATE; bit 2 is the first unknown one.
    ensure_eq!(
        h.bind("1", &[0], 1 << 2),
        Err(Errno::EINVAL),
        "BIND unknown flag"
    );
    ensure_eq!(
        h.bind("1", &[0, 0, 0], 0).map(|_| ()),
        Ok(()),
        "BIND may map a page more than once"
    );
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static STATES: VmTest = VmTest {
    name: "kmod_segments::handle_states",
    phase: Phase::Main,
    run: states,
};
fn states() -> TestResult {
    let name = unique("state");
    let fresh = Dsu::open()?;
    let mut vars = vec![var("v", 8, 1, None)];
    ensure_eq!(
        fresh.resolve(&mut vars).1,
        Err(Errno::EBADFD),
        "RESOLVE on a fresh handle"
    );
    ensure_eq!(
        fresh.bind("1", &[0], 0),
        Err(Errno::EBADFD),
        "BIND on a fresh handle"
    );
    ensure_eq!(
        fresh.map(1).map(|_| ()),
        Err(Errno::EBADFD),
        "mmap on a fresh handle"
    );
    let h = Dsu::attached(&name)?;
    let v = h.resolve_ok(vec![var("v", 8, 1, Some(&7u64.to_ne_bytes()))])?;
    ensure_eq!(
        h.map(1).map(|_| ()),
        Err(Errno::EBADFD),
        "mmap on an attached handle"
    );
    h.bind("1", &[v[0].first_page], 0)?;
    ensure_eq!(
        h.bind("2", &[v[0].first_page], 0),
        Err(Errno::EBUSY),
        "BIND on a bound handle"
    );
    // RESOLVE is allowed when bound.
    let more = h.resolve_ok(vec![var("w", 8, 1, None)])?;
    ensure_eq!(more[0].status, DSU_VAR_ADDED, "RESOLVE on a bound handle");
    let m = h.map(1)?;
    ensure_eq!(m.get(0), 7, "initial value through the mapping");

    // DESTROY: new RESOLVE/BIND fail with EIDRM, the mapping keeps working.
    let other = Dsu::attached(&name)?;
    Dsu::open()?.destroy(&name)?;
    let mut vars = vec![var("z", 8, 1, None)];
    ensure_eq!(
        other.resolve(&mut vars).1,
        Err(Errno::EIDRM),
        "RESOLVE on a destroyed segment"
    );
    ensure_eq!(
        other.bind("3", &[0], 0),
        Err(Errno::EIDRM),
        "BIND on a destroyed segment"
    );
    m.set(0, 99);
    ensure_eq!(m.get(0), 99, "mapping after DESTROY");
    let m2 = h.map(1)?;
    ensure_eq!(
        m2.get(0),
        99,
        "second mapping of a destroyed segment's version"
    );
    Ok(())
}
