//! The permission matrix (DESIGN.md "Permissions", SECURITY.md): owner, group member,
//! other and CAP_SYS_ADMIN, each a real separate uid, against segments of mode 0600, 0640
//! and 0666, for every operation. A subject that may not write must not be able to map the
//! segment by any route.

use crate::robust_raw::{Dev, PAGE, destroy_quietly, var};
use crate::util::as_user;
use crate::{Failure, Phase, TESTS, TestResult, VmTest, ensure};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;

const OWNER: u32 = 1000;
const SEG: &str = "perm-matrix";
const FP: u64 = 0x5eed;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Owner,
    Group,
    Other,
    Admin,
}

impl Who {
    /// uid, gid, supplementary groups.
    fn ids(self) -> (u32, u32, &'static [u32]) {
        match self {
            Who::Owner => (OWNER, OWNER, &[]),
            Who::Group => (1001, 1001, &[OWNER]),
            Who::Other => (1002, 1002, &[]),
            Who::Admin => (0, 0, &[]),
        }
    }
    fn bits(self, mode: u32) -> u32 {
        match self {
            Who::Owner => (mode >> 6) & 7,
            Who::Group => (mode >> 3) & 7,
            Who::Other => mode & 7,
            Who::Admin => 7,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Open,
    Resolve,
    Bind,
    Mmap,
    ListVariables,
    Dump,
}

const OPS: [Op; 6] = [
    Op::Open,
    Op::Resolve,
    Op::Bind,
    Op::Mmap,
    Op::ListVariables,
    Op::Dump,
];

/// What the design says `who` gets for `op` on a segment of `mode`.
fn expected(who: Who, mode: u32, op: Op) -> Result<(), Errno> {
    let bits = who.bits(mode);
    let (r, w) = (bits & 4 != 0, bits & 2 != 0);
    match op {
        Op::Open | Op::ListVariables | Op::Dump => {
            if r {
                Ok(())
            } else {
                Err(Errno::EACCES)
            }
        }
        Op::Resolve | Op::Bind | Op::Mmap => {
            if r && w {
                Ok(())
            } else {
                Err(Errno::EACCES)
            }
        }
    }
}

/// Performs `op` as the current (already switched) user.
fn perform(op: Op) -> Result<(), Errno> {
    let dev = Dev::open()?;
    // Sharing with another owner is explicit (DSU_ATTACH_OWNER); the mode decides the rest.
    let attach = || {
        dev.attach_owner(SEG, DSU_ATTACH_MUST_EXIST, 0, OWNER)
            .map(|_| ())
    };
    match op {
        Op::Open => {
            // Without naming the owner, nobody else lands on the segment, root included.
            let plain = Dev::open()?.attach(SEG, DSU_ATTACH_MUST_EXIST, 0);
            // SAFETY: getuid has no preconditions.
            let me = unsafe { libc::getuid() };
            if me != OWNER && plain != Err(Errno::EPERM) {
                return Err(Errno::EOWNERDEAD); // "joined another user's segment unasked"
            }
            attach()
        }
        Op::Resolve => {
            attach()?;
            let mut v = [var("x", 8, FP, None)];
            dev.resolve(&mut v).map(|_| ())
        }
        Op::Bind => {
            attach()?;
            dev.bind("perm", &[0], 0).map(|_| ())
        }
        Op::Mmap => {
            let chain = (|| {
                attach()?;
                dev.bind("perm", &[0], 0)?;
                dev.map_rw(1).map(|_| ())
            })();
            if chain.is_err() {
                // Whatever failed, the handle must not map: every route is tried.
                for (prot, flags) in [
                    (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED),
                    (libc::PROT_READ, libc::MAP_SHARED),
                    (libc::PROT_READ, libc::MAP_PRIVATE),
                    (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE),
                ] {
                    if dev.mmap(PAGE, prot, flags).is_ok() {
                        return Err(Errno::ENOTRECOVERABLE); // "mapped although denied"
                    }
                }
            }
            chain
        }
        Op::ListVariables => dev.variables(SEG).map(|_| ()),
        Op::Dump => dev.read_var(SEG, "x", 8).map(|_| ()),
    }
}

fn create_as_owner(mode: u32) -> TestResult {
    destroy_quietly(SEG);
    as_user(OWNER, OWNER, &[], || {
        let dev = Dev::open()?;
        ensure!(dev.attach(SEG, DSU_ATTACH_MUST_CREATE, mode)?, "created");
        let init = 42u64.to_ne_bytes();
        let mut v = [var("x", 8, FP, Some(&init))];
        dev.resolve(&mut v)?;
        Ok(())
    })
}

#[distributed_slice(TESTS)]
static MATRIX: VmTest = VmTest {
    name: "robust::permission_matrix",
    phase: Phase::Main,
    run: matrix,
};
fn matrix() -> TestResult {
    let mut mismatches = Vec::new();
    let mut cells = 0;
    for mode in [0o600, 0o640, 0o666] {
        create_as_owner(mode)?;
        let info = Dev::open()?
            .segment(SEG)?
            .ok_or_else(|| Failure::Fail("segment missing".into()))?;
        ensure!(
            info.uid == OWNER && info.gid == OWNER && info.mode == mode,
            "owner, group and mode: {info:?}"
        );
        for who in [Who::Owner, Who::Group, Who::Other, Who::Admin] {
            let (uid, gid, groups) = who.ids();
            // Each subject runs in its own process with its own credentials; mismatches come
            // back as the child's failure message.
            let r = as_user(uid, gid, groups, || {
                let mut bad = Vec::new();
                for op in OPS {
                    let got = perform(op);
                    let want = expected(who, mode, op);
                    if got != want {
                        bad.push(format!("{op:?}: got {got:?}, want {want:?}"));
                    }
                }
                if bad.is_empty() {
                    Ok(())
                } else {
                    Err(Failure::Fail(bad.join("; ")))
                }
            });
            cells += OPS.len();
            if let Err(Failure::Fail(m)) = r {
                mismatches.push(format!("mode {mode:o} {who:?}: {m}"));
            }
        }
        // DESTROY: only the owner or CAP_SYS_ADMIN; EPERM for everyone else, whatever the mode.
        for who in [Who::Group, Who::Other] {
            let (uid, gid, groups) = who.ids();
            let r = as_user(uid, gid, groups, || {
                let got = Dev::open()?.destroy(SEG);
                ensure!(got == Err(Errno::EPERM), "destroy: got {got:?}, want EPERM");
                Ok(())
            });
            cells += 1;
            if let Err(Failure::Fail(m)) = r {
                mismatches.push(format!("mode {mode:o} {who:?}: {m}"));
            }
        }
        for who in [Who::Admin, Who::Owner] {
            create_as_owner(mode)?;
            let (uid, gid, groups) = who.ids();
            let r = as_user(uid, gid, groups, || {
                let got = Dev::open()?.destroy(SEG);
                ensure!(got.is_ok(), "destroy: got {got:?}, want Ok");
                Ok(())
            });
            cells += 1;
            if let Err(Failure::Fail(m)) = r {
                mismatches.push(format!("mode {mode:o} {who:?}: {m}"));
            }
        }
    }
    destroy_quietly(SEG);
    ensure!(
        mismatches.is_empty(),
        "{} of {cells} cells differ from the design: {}",
        mismatches.len(),
        mismatches.join(" / ")
    );
    Ok(())
}

#[distributed_slice(TESTS)]
static EXISTING_HANDLE: VmTest = VmTest {
    name: "robust::permission_checked_per_operation",
    phase: Phase::Main,
    run: per_operation,
};
/// LIST_SEGMENTS is public; a read-only subject attached to a 0644 segment can list and
/// dump but neither resolve, bind nor map, even though it holds an attached handle.
fn per_operation() -> TestResult {
    create_as_owner(0o644)?;
    let r = as_user(1002, 1002, &[], || {
        let dev = Dev::open()?;
        ensure!(
            dev.segment(SEG)?.is_some(),
            "LIST_SEGMENTS shows other users' segments"
        );
        dev.attach_owner(SEG, DSU_ATTACH_MUST_EXIST, 0, OWNER)?;
        ensure!(
            dev.read_var(SEG, "x", 8)? == 42u64.to_ne_bytes(),
            "dump reads the value"
        );
        let mut v = [var("x", 8, FP, None)];
        ensure!(
            dev.resolve(&mut v) == Err(Errno::EACCES),
            "resolve on a read-only segment"
        );
        ensure!(
            dev.bind("ro", &[0], 0) == Err(Errno::EACCES),
            "bind on a read-only segment"
        );
        ensure!(dev.map_rw(1).is_err(), "mmap without bind");
        ensure!(
            dev.mmap(PAGE, libc::PROT_READ, libc::MAP_SHARED).is_err(),
            "read-only mmap without bind"
        );
        // Creating a segment is open to everyone, and the creator owns it.
        let mine = Dev::open()?;
        ensure!(
            mine.attach("perm-other-own", DSU_ATTACH_MUST_CREATE, 0)?,
            "an unprivileged user creates a segment"
        );
        let info = mine
            .segment("perm-other-own")?
            .ok_or_else(|| Failure::Fail("own segment missing".into()))?;
        ensure!(
            info.uid == 1002 && info.mode == DSU_DEFAULT_MODE,
            "owner and default mode: {info:?}"
        );
        mine.destroy("perm-other-own")?;
        Ok(())
    });
    destroy_quietly(SEG);
    r
}
