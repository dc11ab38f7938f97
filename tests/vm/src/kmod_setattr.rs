//! Kernel module: SETATTR (`dsuctl chmod`, `dsuctl chown`) changes a segment's mode, owner
//! and group for its owner or CAP_SYS_ADMIN; what the others may do follows at once; bad
//! arguments get precise errnos.

use crate::kmod_ioctl::*;
use crate::userspace_helpers::{fails, ok};
use crate::util::as_user;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

const MODE: u32 = DSU_SETATTR_MODE;
const UID: u32 = DSU_SETATTR_UID;
const GID: u32 = DSU_SETATTR_GID;

fn owner_mode(h: &Dsu, name: &str) -> Result<(u32, u32, u32), crate::Failure> {
    let i = h.segment_info(name)?.ok_or("segment not listed")?;
    Ok((i.uid, i.gid, i.mode))
}

#[distributed_slice(TESTS)]
static BY_OWNER: VmTest = VmTest {
    name: "kmod_setattr::owner_chmod_chown_changes_access",
    phase: Phase::Main,
    run: by_owner,
};
/// uid 1000 creates a 0600 segment; uid 1002 cannot read it until the owner's chmod 0604,
/// and cannot change it; after chown to 1002, 1002 administers it and 1000 no longer does.
fn by_owner() -> TestResult {
    let name = unique("setattr");
    let n = name.clone();
    as_user(1000, 1000, &[], move || {
        let h = Dsu::open()?;
        ensure_eq!(
            h.attach(&n, DSU_ATTACH_MUST_CREATE, 0o600),
            Ok(true),
            "create"
        );
        h.resolve_ok(vec![var("g", 8, 1, Some(&7u64.to_ne_bytes()))])?;
        Ok(())
    })?;
    let n = name.clone();
    as_user(1002, 1002, &[], move || {
        let h = Dsu::open()?;
        ensure_eq!(
            h.list_variables(&n, 0, 4).map(|_| ()),
            Err(Errno::EACCES),
            "other reads a 0600 segment"
        );
        ensure_eq!(
            h.setattr(&n, MODE, 0o666, 0, 0),
            Err(Errno::EPERM),
            "non-owner chmod"
        );
        ensure_eq!(
            h.setattr(&n, UID, 0, 1002, 0),
            Err(Errno::EPERM),
            "non-owner chown"
        );
        Ok(())
    })?;
    let n = name.clone();
    as_user(1000, 1000, &[], move || {
        let h = Dsu::open()?;
        ensure_eq!(h.setattr(&n, MODE, 0o604, 0, 0), Ok(()), "owner chmod 0604");
        ensure_eq!(owner_mode(&h, &n)?, (1000, 1000, 0o604), "after chmod");
        Ok(())
    })?;
    let n = name.clone();
    as_user(1002, 1002, &[], move || {
        let h = Dsu::open()?;
        let (vars, _) = h.list_variables(&n, 0, 4)?;
        ensure_eq!(vars.len(), 1, "other reads after chmod 0604");
        ensure_eq!(
            h.read_var(&n, "g", 1, 0, 0, 8)?,
            7u64.to_ne_bytes().to_vec(),
            "READ_VAR after chmod"
        );
        // Read, not write: BIND still needs write, and write is not granted.
        let a = Dsu::open()?;
        ensure_eq!(
            a.attach_owner(&n, 0, 0, 1000),
            Ok(false),
            "ATTACH naming the owner"
        );
        ensure_eq!(
            a.resolve(&mut [var("g", 8, 1, None)]).1,
            Err(Errno::EACCES),
            "RESOLVE needs write"
        );
        Ok(())
    })?;
    // Like chown(2): the owner may not give the segment away (its programs would join a
    // segment someone else filled), and may change the group only to one it is in.
    let n = name.clone();
    as_user(1000, 1000, &[1003], move || {
        let h = Dsu::open()?;
        ensure_eq!(
            h.setattr(&n, UID, 0, 1002, 0),
            Err(Errno::EPERM),
            "owner gives it away"
        );
        ensure_eq!(
            h.setattr(&n, GID, 0, 0, 1002),
            Err(Errno::EPERM),
            "owner chgrp to a group it is not in"
        );
        ensure_eq!(
            h.setattr(&n, UID, 0, 1000, 0),
            Ok(()),
            "owner chown to itself"
        );
        ensure_eq!(
            h.setattr(&n, GID, 0, 0, 1003),
            Ok(()),
            "owner chgrp to its group"
        );
        ensure_eq!(owner_mode(&h, &n)?, (1000, 1003, 0o604), "after chgrp");
        Ok(())
    })?;
    // Root gives it to 1002: 1002 administers it, 1000 no longer does.
    let h = Dsu::open()?;
    ensure_eq!(
        h.setattr(&name, UID | GID, 0, 1002, 1002),
        Ok(()),
        "root chown 1002:1002"
    );
    let n = name.clone();
    as_user(1000, 1000, &[], move || {
        let h = Dsu::open()?;
        ensure_eq!(owner_mode(&h, &n)?, (1002, 1002, 0o604), "after chown");
        ensure_eq!(
            h.setattr(&n, MODE, 0o600, 0, 0),
            Err(Errno::EPERM),
            "old owner chmod"
        );
        ensure_eq!(h.destroy(&n), Err(Errno::EPERM), "old owner DESTROY");
        Ok(())
    })?;
    let n = name.clone();
    as_user(1002, 1002, &[], move || {
        let h = Dsu::open()?;
        ensure_eq!(h.setattr(&n, MODE, 0o600, 0, 0), Ok(()), "new owner chmod");
        // Owner bits now apply to 1002: rw.
        let a = Dsu::open()?;
        ensure_eq!(
            a.attach_owner(&n, 0, 0, 1002),
            Ok(false),
            "new owner ATTACH"
        );
        a.resolve_ok(vec![var("g", 8, 1, None)])?;
        Ok(())
    })?;
    let n = name.clone();
    as_user(1000, 1000, &[], move || {
        let h = Dsu::open()?;
        ensure_eq!(
            h.list_variables(&n, 0, 4).map(|_| ()),
            Err(Errno::EACCES),
            "old owner reads a 0600 segment of 1002"
        );
        Ok(())
    })?;
    // Root (CAP_SYS_ADMIN) may change anyone's segment, and destroy it.
    let h = Dsu::open()?;
    ensure_eq!(
        h.setattr(&name, MODE | UID | GID, 0o640, 0, 0),
        Ok(()),
        "root chmod/chown"
    );
    ensure_eq!(owner_mode(&h, &name)?, (0, 0, 0o640), "after root's change");
    ensure_eq!(h.destroy(&name), Ok(()), "destroy");
    Ok(())
}

#[distributed_slice(TESTS)]
static ERRNOS: VmTest = VmTest {
    name: "kmod_setattr::errnos",
    phase: Phase::Main,
    run: errnos,
};
fn errnos() -> TestResult {
    let name = unique("setattr-e");
    let h = Dsu::open()?;
    ensure_eq!(
        h.attach(&name, DSU_ATTACH_MUST_CREATE, 0o600),
        Ok(true),
        "create"
    );
    let good = || dsu_setattr {
        size: size_of::<dsu_setattr>() as u32,
        flags: MODE,
        mode: 0o640,
        name: cname(&name),
        ..Default::default()
    };
    let cases: Vec<(&str, dsu_setattr, Errno)> = vec![
        (
            "mode 01000",
            dsu_setattr {
                mode: 0o1000,
                ..good()
            },
            Errno::EINVAL,
        ),
        (
            "mode 0777 + sticky",
            dsu_setattr {
                mode: 0o1777,
                ..good()
            },
            Errno::EINVAL,
        ),
        (
            "no flags",
            dsu_setattr { flags: 0, ..good() },
            Errno::EINVAL,
        ),
        (
            "unknown flag",
            dsu_setattr {
                flags: MODE | 1 << 3,
                ..good()
            },
            Errno::EINVAL,
        ),
        (
            "uid without its flag",
            dsu_setattr { uid: 5, ..good() },
            Errno::EINVAL,
        ),
        (
            "gid without its flag",
            dsu_setattr { gid: 5, ..good() },
            Errno::EINVAL,
        ),
        (
            "mode without its flag",
            dsu_setattr {
                flags: UID,
                uid: 0,
                mode: 0o600,
                ..good()
            },
            Errno::EINVAL,
        ),
        ("padding", dsu_setattr { __pad: 1, ..good() }, Errno::EINVAL),
        (
            "unmapped uid",
            dsu_setattr {
                flags: UID,
                mode: 0,
                uid: u32::MAX,
                ..good()
            },
            Errno::EINVAL,
        ),
        (
            "unmapped gid",
            dsu_setattr {
                flags: GID,
                mode: 0,
                gid: u32::MAX,
                ..good()
            },
            Errno::EINVAL,
        ),
        (
            "size too small",
            dsu_setattr { size: 8, ..good() },
            Errno::EINVAL,
        ),
        (
            "empty name",
            dsu_setattr {
                name: cname(""),
                ..good()
            },
            Errno::EINVAL,
        ),
        (
            "bad name",
            dsu_setattr {
                name: cname("a/b"),
                ..good()
            },
            Errno::EINVAL,
        ),
        (
            "missing segment",
            dsu_setattr {
                name: cname(&unique("nosuch")),
                ..good()
            },
            Errno::ENOENT,
        ),
    ];
    for (what, s, want) in cases {
        ensure_eq!(h.setattr_raw(&s), Err(want), "{what}");
    }
    ensure_eq!(
        owner_mode(&h, &name)?,
        (0, 0, 0o600),
        "nothing changed by the refused calls"
    );
    ensure_eq!(h.setattr_raw(&good()), Ok(()), "the good call");
    ensure_eq!(owner_mode(&h, &name)?, (0, 0, 0o640), "mode changed");
    // A destroyed name is gone for SETATTR too, even while a handle keeps the segment.
    ensure_eq!(h.destroy(&name), Ok(()), "destroy");
    ensure_eq!(
        h.setattr_raw(&good()),
        Err(Errno::ENOENT),
        "SETATTR after DESTROY"
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static DSUCTL: VmTest = VmTest {
    name: "kmod_setattr::dsuctl_chmod_chown_and_hints",
    phase: Phase::Main,
    run: dsuctl,
};
fn dsuctl() -> TestResult {
    let seg = unique("ctl-attr");
    ensure_eq!(
        ok("dsuctl", &["create", &seg])?,
        format!("created segment {seg} (mode 0600)"),
        "create"
    );
    ensure_eq!(
        ok("dsuctl", &["chmod", &seg, "0640"])?,
        format!("segment {seg}: mode 0640"),
        "chmod"
    );
    ensure_eq!(
        ok("dsuctl", &["chown", &seg, "1000:1001"])?,
        format!("segment {seg}: owner 1000, group 1001"),
        "chown"
    );
    let h = Dsu::open()?;
    ensure_eq!(owner_mode(&h, &seg)?, (1000, 1001, 0o640), "after dsuctl");
    let s = seg.clone();
    as_user(1002, 1002, &[], move || {
        let err = fails("dsuctl", &["chmod", &s, "0666"], 1)?;
        ensure!(
            err.contains(&format!(
                "only the owner of segment \"{s}\" (owner 1000, mode 0640) or root can change its mode or set its group to one of the owner's groups, and only root can change its owner"
            )),
            "non-owner chmod: {err}"
        );
        Ok(())
    })?;
    let err = fails("dsuctl", &["chmod", &seg, "01000"], 2)?;
    ensure!(
        err.contains("above 0777"),
        "bad mode is a usage error: {err}"
    );
    // A bad name is reported as such, the module being loaded or not.
    let err = fails("dsuctl", &["show", "bad/name"], 1)?;
    ensure!(
        err.starts_with("dsuctl: invalid segment name \"bad/name\""),
        "{err}"
    );
    let err = fails("dsuctl", &["list", "--device", "/dev/dsu-other"], 1)?;
    ensure!(
        err.contains("/dev/dsu-other does not exist") && !err.contains("insmod"),
        "hint names the device used: {err}"
    );
    ensure_eq!(h.destroy(&seg), Ok(()), "destroy");
    Ok(())
}
