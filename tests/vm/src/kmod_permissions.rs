//! Kernel module: permissions, checked like files against the segment's owner, group and
//! mode; CAP_SYS_ADMIN overrides; DESTROY is for the owner or CAP_SYS_ADMIN.

use crate::kmod_ioctl::*;
use crate::util::as_user;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

/// Root creates `name` with `mode` and one variable; returns the variable's first page.
fn root_segment(name: &str, mode: u32) -> Result<(Dsu, u64), crate::Failure> {
    let h = Dsu::open()?;
    ensure_eq!(
        h.attach(name, DSU_ATTACH_MUST_CREATE, mode),
        Ok(true),
        "create {name}"
    );
    let v = h.resolve_ok(vec![var("g", 8, 1, Some(&3u64.to_ne_bytes()))])?;
    Ok((h, v[0].first_page))
}

#[distributed_slice(TESTS)]
static DENIED: VmTest = VmTest {
    name: "kmod_permissions::uid1000_denied_0600",
    phase: Phase::Main,
    run: denied,
};
fn denied() -> TestResult {
    let name = unique("perm600");
    let (_root, _) = root_segment(&name, 0o600)?;
    let n = name.clone();
    as_user(1000, 1000, &[], move || {
        let h = Dsu::open()?;
        ensure_eq!(
            h.attach(&n, 0, 0),
            Err(Errno::EPERM),
            "ATTACH of root's segment"
        );
        ensure_eq!(
            h.attach_owner(&n, 0, 0, 0),
            Err(Errno::EACCES),
            "ATTACH naming the owner"
        );
        ensure_eq!(
            h.attach_owner(&n, DSU_ATTACH_MUST_EXIST, 0, 0),
            Err(Errno::EACCES),
            "ATTACH MUST_EXIST"
        );
        ensure_eq!(
            h.list_variables(&n, 0, 4).map(|_| ()),
            Err(Errno::EACCES),
            "LIST_VARIABLES"
        );
        ensure_eq!(
            h.list_versions(&n, 0, 4).map(|_| ()),
            Err(Errno::EACCES),
            "LIST_VERSIONS"
        );
        ensure_eq!(
            h.read_var(&n, "g", 1, 0, 0, 8).map(|_| ()),
            Err(Errno::EACCES),
            "READ_VAR"
        );
        ensure_eq!(h.destroy(&n), Err(Errno::EPERM), "DESTROY");
        // Names and owners are public.
        let info = h
            .segment_info(&n)?
            .ok_or("segment not listed for uid 1000")?;
        ensure_eq!((info.uid, info.mode), (0, 0o600), "listed owner and mode");
        // Its own segments work.
        let mine = unique("mine");
        ensure_eq!(h.attach(&mine, 0, 0), Ok(true), "creating its own segment");
        let info = h.segment_info(&mine)?.ok_or("own segment not listed")?;
        ensure_eq!(
            (info.uid, info.gid),
            (1000, 1000),
            "owner of its own segment"
        );
        ensure_eq!(h.destroy(&mine), Ok(()), "destroying its own segment");
        Ok(())
    })?;
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static ALLOWED: VmTest = VmTest {
    name: "kmod_permissions::uid1000_allowed_0666",
    phase: Phase::Main,
    run: allowed,
};
fn allowed() -> TestResult {
    let name = unique("perm666");
    let (_root, page) = root_segment(&name, 0o666)?;
    let n = name.clone();
    as_user(1000, 1000, &[], move || {
        let h = Dsu::open()?;
        ensure_eq!(h.attach_owner(&n, 0, 0, 0), Ok(false), "ATTACH");
        let v = h.resolve_ok(vec![var("g", 8, 1, None), var("by_1000", 8, 2, None)])?;
        ensure_eq!(
            (v[0].status, v[0].first_page),
            (DSU_VAR_COMMON, page),
            "common global"
        );
        h.bind("user", &[page, v[1].first_page], 0)?;
        let m = h.map(2)?;
        ensure_eq!(m.get(0), 3, "value through the mapping");
        m.set(0, 4);
        ensure_eq!(
            h.read_var(&n, "g", 1, 0, 0, 8)?,
            4u64.to_ne_bytes().to_vec(),
            "READ_VAR"
        );
        ensure_eq!(h.list_versions(&n, 0, 4)?.1, 1, "LIST_VERSIONS");
        ensure_eq!(
            h.destroy(&n),
            Err(Errno::EPERM),
            "DESTROY of root's segment"
        );
        Ok(())
    })?;
    // Root (CAP_SYS_ADMIN) destroys it.
    ensure_eq!(Dsu::open()?.destroy(&name), Ok(()), "root's DESTROY");
    Ok(())
}

#[distributed_slice(TESTS)]
static READ_ONLY: VmTest = VmTest {
    name: "kmod_permissions::read_only_and_group",
    phase: Phase::Main,
    run: read_only,
};
fn read_only() -> TestResult {
    let name = unique("perm644");
    let (_root, page) = root_segment(&name, 0o644)?;
    let n = name.clone();
    as_user(1000, 1000, &[], move || {
        let h = Dsu::open()?;
        ensure_eq!(
            h.attach_owner(&n, 0, 0, 0),
            Ok(false),
            "ATTACH with read permission"
        );
        let mut vars = vec![var("g", 8, 1, None)];
        ensure_eq!(
            h.resolve(&mut vars).1,
            Err(Errno::EACCES),
            "RESOLVE without write permission"
        );
        ensure_eq!(
            h.bind("ro", &[page], 0),
            Err(Errno::EACCES),
            "BIND without write permission"
        );
        ensure_eq!(
            h.list_variables(&n, 0, 4)?.1,
            1,
            "LIST_VARIABLES with read permission"
        );
        ensure_eq!(
            h.read_var(&n, "g", 1, 0, 0, 8)?,
            3u64.to_ne_bytes().to_vec(),
            "READ_VAR with read permission"
        );
        Ok(())
    })?;
    cleanup(&name);

    // Group bits: 0060 lets members of group 0 (the segment's) in, nobody else.
    let name = unique("perm060");
    let (_root, page) = root_segment(&name, 0o060)?;
    let n = name.clone();
    as_user(1000, 1000, &[0], move || {
        let h = Dsu::open()?;
        h.attach_owner(&n, 0, 0, 0)?;
        h.bind("member", &[page], 0)?;
        let m = h.map(1)?;
        ensure_eq!(m.get(0), 3, "group member's mapping");
        Ok(())
    })?;
    let n = name.clone();
    as_user(1000, 1000, &[], move || {
        ensure_eq!(
            Dsu::open()?.attach_owner(&n, 0, 0, 0),
            Err(Errno::EACCES),
            "non-member"
        );
        Ok(())
    })?;
    // Root owns it and the owner bits are 0, but CAP_SYS_ADMIN overrides.
    ensure_eq!(
        Dsu::open()?.attach(&name, 0, 0),
        Ok(false),
        "CAP_SYS_ADMIN overrides"
    );
    cleanup(&name);
    Ok(())
}

#[distributed_slice(TESTS)]
static DESTROY: VmTest = VmTest {
    name: "kmod_permissions::destroy_owner_only",
    phase: Phase::Main,
    run: destroy,
};
fn destroy() -> TestResult {
    let name = unique("owned");
    let n = name.clone();
    as_user(1000, 1000, &[], move || {
        ensure_eq!(
            Dsu::open()?.attach(&n, 0, 0o666),
            Ok(true),
            "uid 1000 creates"
        );
        Ok(())
    })?;
    let n = name.clone();
    as_user(1001, 1001, &[], move || {
        let h = Dsu::open()?;
        ensure_eq!(
            h.attach_owner(&n, 0, 0, 1000),
            Ok(false),
            "uid 1001 opens a 0666 segment, naming its owner"
        );
        ensure_eq!(h.destroy(&n), Err(Errno::EPERM), "uid 1001 destroys");
        Ok(())
    })?;
    let n = name.clone();
    as_user(1000, 1000, &[], move || {
        ensure_eq!(Dsu::open()?.destroy(&n), Ok(()), "the owner destroys");
        Ok(())
    })?;
    ensure!(
        Dsu::open()?.segment_info(&name)?.is_none(),
        "segment still listed"
    );
    Ok(())
}
