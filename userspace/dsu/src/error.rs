//! [`Error`]: every failure of the crate, with a message that says what to do.

use nix::errno::Errno;

/// Which `/dev/dsu` operation failed.
///
/// ```
/// assert_eq!(dsu::Op::Resolve.to_string(), "RESOLVE");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `DSU_IOC_ATTACH`.
    Attach,
    /// `DSU_IOC_RESOLVE`.
    Resolve,
    /// `DSU_IOC_BIND`.
    Bind,
    /// `mmap()` of a bound handle.
    Mmap,
    /// `DSU_IOC_LIST_SEGMENTS`.
    ListSegments,
    /// `DSU_IOC_LIST_VARIABLES`.
    ListVariables,
    /// `DSU_IOC_LIST_VERSIONS`.
    ListVersions,
    /// `DSU_IOC_READ_VAR`.
    ReadVar,
    /// `DSU_IOC_DESTROY`.
    Destroy,
    /// `DSU_IOC_SETATTR` (chmod, chown).
    SetAttr,
    /// `read()` or `poll()` of events.
    Events,
    /// `DSU_IOC_HEAP` (create or get the shared heap).
    Heap,
    /// `DSU_IOC_HEAP_GROW`.
    HeapGrow,
    /// `DSU_IOC_HEAP_DISCARD`.
    HeapDiscard,
    /// `DSU_IOC_READ_HEAP`.
    ReadHeap,
    /// `DSU_IOC_READY`.
    Ready,
    /// `DSU_IOC_GC`.
    Gc,
    /// `DSU_IOC_SNAPSHOT`.
    Snapshot,
    /// `pread()` of a snapshot fd.
    ReadSnapshot,
    /// `DSU_IOC_RESTORE`.
    Restore,
    /// `DSU_IOC_RESTORE_VAR`.
    RestoreVar,
    /// `DSU_IOC_RESTORE_HEAP`.
    RestoreHeap,
    /// `DSU_IOC_RESTORE_COMMIT`.
    RestoreCommit,
    /// `DSU_IOC_LOCK_TOKEN`.
    LockToken,
    /// `DSU_IOC_LOCK_OWNER`.
    LockOwner,
}

impl Op {
    /// The permission the operation needs on an existing segment (per DESIGN.md).
    ///
    /// ```
    /// assert_eq!(dsu::Op::Bind.needs(), "read and write");
    /// ```
    pub fn needs(self) -> &'static str {
        match self {
            Op::Resolve
            | Op::Bind
            | Op::Mmap
            | Op::Heap
            | Op::HeapGrow
            | Op::HeapDiscard
            | Op::Gc => "read and write",
            Op::Destroy | Op::SetAttr => "owner",
            _ => "read",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Attach => "ATTACH",
            Op::Resolve => "RESOLVE",
            Op::Bind => "BIND",
            Op::Mmap => "mmap",
            Op::ListSegments => "LIST_SEGMENTS",
            Op::ListVariables => "LIST_VARIABLES",
            Op::ListVersions => "LIST_VERSIONS",
            Op::ReadVar => "READ_VAR",
            Op::Destroy => "DESTROY",
            Op::SetAttr => "SETATTR",
            Op::Events => "reading events",
            Op::Heap => "HEAP",
            Op::HeapGrow => "HEAP_GROW",
            Op::HeapDiscard => "HEAP_DISCARD",
            Op::ReadHeap => "READ_HEAP",
            Op::Ready => "READY",
            Op::Gc => "GC",
            Op::Snapshot => "SNAPSHOT",
            Op::ReadSnapshot => "reading a snapshot",
            Op::Restore => "RESTORE",
            Op::RestoreVar => "RESTORE_VAR",
            Op::RestoreHeap => "RESTORE_HEAP",
            Op::RestoreCommit => "RESTORE_COMMIT",
            Op::LockToken => "LOCK_TOKEN",
            Op::LockOwner => "LOCK_OWNER",
        })
    }
}

/// Formats "owner U, mode 0MMM" or what is known of it.
fn owner_mode(uid: &Option<u32>, mode: &Option<u32>) -> String {
    match (uid, mode) {
        (Some(u), Some(m)) => format!("owner {u}, mode {m:04o}"),
        _ => "owner and mode unknown".into(),
    }
}

fn detail_or(detail: &str) -> &str {
    if detail.is_empty() {
        "the segment does not say how its type differs"
    } else {
        detail
    }
}

fn more(n: &usize) -> String {
    if *n == 0 {
        String::new()
    } else {
        format!(" (and {n} more conflicting variables)")
    }
}

/// Every error of the crate. The messages name the object and say what to do.
///
/// ```
/// let e = dsu::Error::ModuleNotLoaded;
/// assert_eq!(e.to_string(), "dsu kernel module not loaded: /dev/dsu is missing (load it with insmod dsu.ko)");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/dsu` does not exist.
    #[error("dsu kernel module not loaded: /dev/dsu is missing (load it with insmod dsu.ko)")]
    ModuleNotLoaded,

    /// `/dev/dsu` exists but cannot be opened.
    #[error(
        "cannot open {path}: {source} (it should be the dsu module's character device, mode 0666)"
    )]
    OpenDevice {
        /// The device path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },

    /// A segment name, variable name or label breaks the kernel's rules.
    #[error("invalid {what} {name:?}: {why}")]
    InvalidName {
        /// "segment name", "variable name" or "version label".
        what: &'static str,
        /// The offending name.
        name: String,
        /// What is wrong with it.
        why: String,
    },

    /// `EACCES`: the segment's mode does not allow the operation.
    #[error(
        "permission denied on segment \"{segment}\" ({}): {op} needs {needs} permission (run as its owner, or recreate it with a wider mode, e.g. dsuctl create {segment} --mode 0660)",
        owner_mode(.uid, .mode), needs = .op.needs()
    )]
    PermissionDenied {
        /// The segment.
        segment: String,
        /// The operation refused.
        op: Op,
        /// Its owner, if it could be looked up.
        uid: Option<u32>,
        /// Its mode, if it could be looked up.
        mode: Option<u32>,
    },

    /// `EPERM` from ATTACH: the segment exists and another uid owns it. A program never
    /// joins a segment that another user created unless it names that owner
    /// ([`Attach::shared_with_owner`](crate::Attach::shared_with_owner)).
    #[error(
        "segment \"{segment}\" is owned by {}; {}",
        .uid.map_or("another uid".to_string(), |u| format!("uid {u}")),
        owned_by_other_hint(.segment, .uid, .expected)
    )]
    OwnedByOther {
        /// The segment.
        segment: String,
        /// Its owner, if it could be looked up.
        uid: Option<u32>,
        /// The owner this program named, if any (else it expected to own the segment).
        expected: Option<u32>,
    },

    /// `EPERM` from DESTROY or SETATTR.
    #[error(
        "only the owner of segment \"{segment}\" ({}) or root can {}",
        owner_mode(.uid, .mode),
        if *.op == Op::SetAttr {
            "change its mode or set its group to one of the owner's groups, and only root can change its owner"
        } else {
            "destroy it"
        }
    )]
    NotOwner {
        /// The segment.
        segment: String,
        /// DESTROY or SETATTR.
        op: Op,
        /// Its owner, if known.
        uid: Option<u32>,
        /// Its mode, if known.
        mode: Option<u32>,
    },

    /// `ENOENT`: no such segment.
    #[error(
        "segment \"{segment}\" does not exist (create it with `dsuctl create {segment}`, or attach without must_exist; `dsuctl list` shows the segments)"
    )]
    SegmentNotFound {
        /// The segment.
        segment: String,
    },

    /// `EEXIST` from ATTACH with must-create.
    #[error(
        "segment \"{segment}\" already exists (attach without must_create, or remove it first with `dsuctl destroy {segment}`)"
    )]
    SegmentExists {
        /// The segment.
        segment: String,
    },

    /// `EIDRM`: the segment was destroyed.
    #[error(
        "segment \"{segment}\" was destroyed (running versions keep their pages); attach again to create a new segment of that name"
    )]
    SegmentDestroyed {
        /// The segment.
        segment: String,
    },

    /// `ENOENT` from READ_VAR: no such variable (with that fingerprint).
    #[error(
        "variable \"{name}\" not found in segment \"{segment}\" (`dsuctl show {segment}` lists its variables)"
    )]
    VariableNotFound {
        /// The segment.
        segment: String,
        /// The variable.
        name: String,
    },

    /// RESOLVE conflict: same size, another fingerprint.
    #[error(
        "variable \"{name}\" changed type in segment \"{segment}\": {} (fingerprint {theirs:#018x} in the segment, {ours:#018x} in this program, which declares it as {type_name}){}; migrate it with #[dsu(migrate(from = OldType, with = transform))], keep the old type, or use a new name; nothing was changed",
        detail_or(.detail), more(.others)
    )]
    TypeChanged {
        /// The segment.
        segment: String,
        /// The variable.
        name: String,
        /// The type as this program spells it.
        type_name: String,
        /// This program's fingerprint.
        ours: u64,
        /// The fingerprint in the segment.
        theirs: u64,
        /// What differs, from the type description stored in the segment (e.g. "field
        /// `port` is u16 at offset 8 (2 bytes) in the segment but u32 ..."); empty if
        /// unknown.
        detail: Box<str>,
        /// Further conflicting variables in the same batch.
        others: usize,
    },

    /// RESOLVE conflict: another size.
    #[error(
        "variable \"{name}\" changed size in segment \"{segment}\": {theirs} bytes in the segment, {ours} bytes in this program ({type_name}); {}{}; migrate it with #[dsu(migrate(from = OldType, with = transform))], keep the old type, or use a new name; nothing was changed",
        detail_or(.detail), more(.others)
    )]
    SizeChanged {
        /// The segment.
        segment: String,
        /// The variable.
        name: String,
        /// The type as this program spells it.
        type_name: String,
        /// This program's size.
        ours: u64,
        /// The size in the segment.
        theirs: u64,
        /// What differs, from the type description stored in the segment; empty if
        /// unknown.
        detail: Box<str>,
        /// Further conflicting variables in the same batch.
        others: usize,
    },

    /// A migrated global found in the segment with a type that none of its
    /// `migrate(from = ...)` types is (nor its own): the program skipped a generation it
    /// cannot start from. Nothing was changed.
    #[error(
        "variable \"{name}\" is {found} in segment \"{segment}\" (fingerprint {found_fingerprint:#018x}), but this program declares it as {type_name} and migrates only from {accepted}; add #[dsu(migrate(from = <that type>, with = transform))], or update through a version that migrates from it; nothing was changed"
    )]
    MigrationSourceUnknown {
        /// The segment.
        segment: String,
        /// The variable.
        name: String,
        /// The type of the segment's newest entry of that name, from its type description
        /// (or "of an undescribed type").
        found: Box<str>,
        /// Its fingerprint.
        found_fingerprint: u64,
        /// The type as this program spells it.
        type_name: Box<str>,
        /// The older types this program accepts, e.g. "StatsV1 or StatsV2".
        accepted: Box<str>,
    },

    /// [`Version::finish_migrations`](crate::Version::finish_migrations): the old entry of
    /// a migration with a merge step is gone from the segment, so its final value cannot be
    /// merged.
    #[error(
        "the merge of variable \"{name}\" cannot run: its old entry ({type_name}) is gone from segment \"{segment}\" (destroyed or collected before the merge); the old version's writes after this version's attach are lost"
    )]
    MergeSourceGone {
        /// The segment.
        segment: String,
        /// The variable.
        name: String,
        /// The old type.
        type_name: String,
    },

    /// `ENOSPC` / `E2BIG`: a module limit.
    #[error(
        "dsu limit reached: {what} (raise /sys/module/dsu/parameters/{param} when loading the module)"
    )]
    Limit {
        /// What ran out.
        what: &'static str,
        /// The module parameter(s).
        param: &'static str,
    },

    /// `ENOMEM`.
    #[error(
        "out of memory during {op} (dsu pages are charged to the caller's memory cgroup, and count against the user's RLIMIT_MEMLOCK like locked memory: raise it with `ulimit -l`, or grant CAP_IPC_LOCK)"
    )]
    OutOfMemory {
        /// The operation.
        op: Op,
    },

    /// The segment's shared heap lives at an address range that this process already uses
    /// for something else, so it cannot be mapped there (every version maps it at the same
    /// address). Nothing was changed in the segment.
    #[error(
        "the shared heap of segment \"{segment}\" lives at {base:#x}..{end:#x} in every version, but this process already has {occupants} there; nothing was changed: start this program so that nothing is mapped in that range (a fixed-address mmap, a large allocation, or an address-space layout that reaches there), or create the segment anew (its heap gets another address)"
    )]
    HeapAddressTaken {
        /// The segment.
        segment: String,
        /// The heap window's first address.
        base: u64,
        /// One past its last.
        end: u64,
        /// What `/proc/self/maps` shows there.
        occupants: String,
    },

    /// An errno that means the library and the module disagree, or a bug.
    #[error("dsu {op} failed with {errno}: {hint}")]
    Kernel {
        /// The operation.
        op: Op,
        /// The errno.
        errno: Errno,
        /// What it most likely means.
        hint: &'static str,
    },

    /// Two globals of this program have the same name.
    #[error(
        "two globals of this program are named \"{0}\": give one of them an explicit #[dsu(name = \"...\")]"
    )]
    DuplicateName(String),

    /// The globals do not tile the section.
    #[error(
        "this program's dsu globals do not tile the dsu_globals section: {0} (only dsu::global! / DSU_GLOBAL may place data there)"
    )]
    Layout(String),

    /// A descriptor is malformed (wrong magic, a C header from another version).
    #[error("bad dsu global descriptor: {0} (rebuild the program against this library's libdsu.h)")]
    BadDescriptor(String),

    /// The kernel returned pages that do not match the program's layout.
    #[error(
        "the kernel gave variable \"{name}\" {got} pages where this program has {want} (the module and the library disagree)"
    )]
    PageCount {
        /// The variable.
        name: String,
        /// Pages in the segment.
        got: u64,
        /// Pages here.
        want: u64,
    },

    /// `attach` was called twice.
    #[error(
        "dsu::attach was already called in this process: the globals can be attached only once"
    )]
    AlreadyAttached,

    /// The safe [`attach`](crate::attach) found something that could hold a reference into
    /// the globals while their pages are replaced: another thread, or a
    /// [`MutexGuard`](crate::sync::MutexGuard) alive (or forgotten) in this thread, or
    /// leaked by a thread that exited.
    #[error(
        "dsu::attach must run while nothing can use the globals, but {0}: call it first thing \
         in main, before starting threads and with no dsu::sync::MutexGuard alive, or use the \
         unsafe Attach::attach_unchecked and uphold its contract"
    )]
    NotQuiescent(String),

    /// The system's page size is not the one the layout assumes.
    #[error("dsu globals assume 4096-byte pages, but this system uses {0}-byte pages")]
    PageSize(usize),

    /// A system call other than an ioctl failed.
    #[error("{what} failed: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },

    /// The shared heap cannot be used (see [`heap`](crate::heap)): the message says why.
    #[error("dsu shared heap: {0}")]
    Heap(String),

    /// `EBUSY` from SNAPSHOT: another snapshot of the segment is open.
    #[error(
        "a snapshot of segment \"{segment}\" is already in progress (one at a time per segment): retry when it has finished"
    )]
    SnapshotBusy {
        /// The segment.
        segment: String,
    },

    /// `EEXIST` from RESTORE or RESTORE_COMMIT: a segment of that name exists. Nothing
    /// was changed.
    #[error(
        "segment \"{segment}\" already exists, so the snapshot was not restored and nothing was changed: restore it under another name (`dsuctl restore FILE --name NEW`, or dsu::snapshot::restore(path, Some(\"NEW\"))), or remove the existing segment first with `dsuctl destroy {segment}`"
    )]
    RestoreTargetExists {
        /// The segment.
        segment: String,
    },

    /// A snapshot file that cannot be used: truncated, corrupt, of a newer format, or not
    /// a snapshot. A restore from it created nothing.
    #[error("snapshot file {}: {problem}; nothing was restored", .path.display())]
    BadSnapshot {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: crate::snapshot::format::FormatError,
    },

    /// Reading or writing a snapshot file failed.
    #[error("{what} {} failed: {source}", .path.display())]
    SnapshotIo {
        /// What was being done, e.g. "writing snapshot".
        what: &'static str,
        /// The file (or directory).
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A `Result` with [`Error`].
///
/// ```
/// fn f() -> dsu::Result<()> { Ok(()) }
/// f().unwrap();
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a failing ioctl was about, for the message.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// The segment.
    pub segment: String,
    /// The variable, if any.
    pub name: Option<String>,
    /// The segment's owner and mode, if looked up (for EACCES / EPERM).
    pub owner: Option<(u32, u32)>,
    /// The owner the caller named at ATTACH (`DSU_ATTACH_OWNER`), if any.
    pub expected_owner: Option<u32>,
}

/// What to do about a segment owned by another uid.
fn owned_by_other_hint(segment: &str, uid: &Option<u32>, expected: &Option<u32>) -> String {
    let owner = uid.map_or("OWNER".to_string(), |u| u.to_string());
    match expected {
        Some(e) => format!(
            "this program expected uid {e} to own it; if you meant to share it with uid {owner}, attach with shared_with_owner({owner}); else choose another name"
        ),
        None => format!(
            "if you meant to share it, attach with shared_with_owner({owner}) (C: dsu_attach_shared(..., {owner})); else choose another name than \"{segment}\""
        ),
    }
}

impl Error {
    /// Maps an errno of `op` to an error, as DESIGN.md lists them for every ioctl.
    ///
    /// ```
    /// use dsu::{Error, Op, error::Context};
    /// use nix::errno::Errno;
    /// let ctx = Context { segment: "x".into(), owner: Some((0, 0o600)), ..Default::default() };
    /// let e = Error::from_errno(Op::Bind, Errno::EACCES, &ctx);
    /// assert!(e.to_string().starts_with("permission denied on segment \"x\" (owner 0, mode 0600)"));
    /// ```
    pub fn from_errno(op: Op, errno: Errno, ctx: &Context) -> Error {
        let segment = ctx.segment.clone();
        let (uid, mode) = match ctx.owner {
            Some((u, m)) => (Some(u), Some(m)),
            None => (None, None),
        };
        match (op, errno) {
            (_, Errno::ENOMEM) => Error::OutOfMemory { op },
            (_, Errno::EACCES) => Error::PermissionDenied {
                segment,
                op,
                uid,
                mode,
            },
            (Op::Destroy | Op::SetAttr, Errno::EPERM) => Error::NotOwner {
                segment,
                op,
                uid,
                mode,
            },
            (Op::Attach, Errno::EPERM) => Error::OwnedByOther {
                segment,
                uid,
                expected: ctx.expected_owner,
            },
            (_, Errno::EIDRM) => Error::SegmentDestroyed { segment },
            (Op::ReadVar, Errno::ENOENT) if ctx.name.is_some() => Error::VariableNotFound {
                segment,
                name: ctx.name.clone().unwrap_or_default(),
            },
            (_, Errno::ENOENT) => Error::SegmentNotFound { segment },
            (Op::Attach, Errno::EEXIST) => Error::SegmentExists { segment },
            (Op::Attach, Errno::ENOSPC) => Error::Limit {
                what: "too many segments (in all, or created by this user), or too many handles attached to this one",
                param: "max_segments, max_user_segments or max_handles",
            },
            (Op::Resolve, Errno::ENOSPC) => Error::Limit {
                what: "the segment is full (pages or variables), or this user holds too many pages",
                param: "max_segment_pages, max_variables or max_user_pages",
            },
            (Op::Resolve, Errno::E2BIG) => Error::Limit {
                what: "this program has more globals than one batch may hold",
                param: "max_variables",
            },
            (Op::Bind, Errno::ENOSPC) => Error::Limit {
                what: "too many live versions of the segment",
                param: "max_versions",
            },
            (Op::Heap, Errno::E2BIG) => Error::Limit {
                what: "the heap window asked for is larger than a heap may be",
                param: "max_heap_pages",
            },
            (Op::Restore, Errno::ENOSPC) => Error::Limit {
                what: "too many segments (in all, or created by this user)",
                param: "max_segments or max_user_segments",
            },
            (Op::RestoreVar, Errno::ENOSPC) => Error::Limit {
                what: "the restored segment is full (pages or variables), or this user holds too many pages",
                param: "max_segment_pages, max_variables or max_user_pages",
            },
            (Op::Bind, Errno::E2BIG) => Error::Limit {
                what: "the globals section is longer than a segment may be",
                param: "max_segment_pages",
            },
            (_, errno) => Error::Kernel {
                op,
                errno,
                hint: hint(op, errno),
            },
        }
    }
}

/// What an unexpected errno most likely means.
fn hint(op: Op, errno: Errno) -> &'static str {
    match errno {
        Errno::EINVAL if op == Op::Mmap => {
            "the mapping must be MAP_SHARED, at offset 0 and exactly as long as the bound map"
        }
        Errno::EINVAL if op == Op::Heap => {
            "the heap window must be page-aligned, non-empty and inside the user address space"
        }
        Errno::EINVAL if op == Op::HeapDiscard => {
            "the range to discard must be page-aligned, non-empty and inside the heap's size"
        }
        Errno::EINVAL if op == Op::Events => "the read buffer is smaller than one struct dsu_event",
        Errno::EBADFD if op == Op::Ready => {
            "READY commits a bound version: attach and bind this handle first"
        }
        Errno::EINVAL if op == Op::SetAttr => {
            "the mode is above 0777, or the uid or gid has no mapping in the segment's user namespace"
        }
        Errno::EINVAL if op == Op::RestoreVar => {
            "the module rejected a variable of the image (name, size, alignment or type description)"
        }
        Errno::EFAULT if op == Op::LockOwner => {
            "the address is not in a MAP_SHARED file mapping of this process: a lock in private memory has no other owner to ask about"
        }
        Errno::EAGAIN if op == Op::LockToken => {
            "the module's lock-token table is full (DSU_LOCK_TOKENS_MAX live processes); dsu::sync::Mutex still works, with a token the module cannot vouch for"
        }
        Errno::EINVAL => {
            "the module rejected a name, label, flag or size; if they are valid, the module and this library were built from different uapi/dsu.h"
        }
        Errno::E2BIG => {
            "the module is older than this library (it does not know a non-zero field); rebuild them together"
        }
        Errno::ENOTTY
            if matches!(
                op,
                Op::Snapshot | Op::Restore | Op::RestoreVar | Op::RestoreHeap | Op::RestoreCommit
            ) =>
        {
            "this dsu module has no snapshots (it is older than this library): load the dsu.ko of this release"
        }
        Errno::EBADFD if op == Op::Restore => {
            "RESTORE needs a fresh handle (one never attached): open /dev/dsu again"
        }
        Errno::ENOTTY => {
            "the device does not know this ioctl: is /dev/dsu the dsu module of the same uapi version?"
        }
        Errno::EBUSY => {
            "this handle is already attached or bound; use a new handle (open /dev/dsu again)"
        }
        Errno::EBADFD => "this handle is not attached (or not bound, for mmap) yet",
        Errno::EFAULT => "the kernel could not access a buffer passed to it (a bug in the caller)",
        Errno::EEXIST => "a variable conflicts with the segment's directory",
        Errno::EINTR => "interrupted by a signal; retry",
        _ => "unexpected error from the dsu module",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(seg: &str) -> Context {
        Context {
            segment: seg.into(),
            name: None,
            owner: None,
            expected_owner: None,
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let with_owner = Context {
            owner: Some((0, 0o600)),
            ..ctx("x")
        };
        assert_eq!(
            Error::from_errno(Op::Attach, Errno::EACCES, &with_owner).to_string(),
            "permission denied on segment \"x\" (owner 0, mode 0600): ATTACH needs read permission (run as its owner, or recreate it with a wider mode, e.g. dsuctl create x --mode 0660)"
        );
        let m = Error::from_errno(Op::Resolve, Errno::EACCES, &ctx("x")).to_string();
        assert!(
            m.contains("owner and mode unknown") && m.contains("read and write"),
            "{m}"
        );
        let m = Error::from_errno(Op::Destroy, Errno::EPERM, &with_owner).to_string();
        assert!(
            m.contains("only the owner of segment \"x\" (owner 0, mode 0600)"),
            "{m}"
        );
        let other = Context {
            segment: "app".into(),
            owner: Some((1001, 0o666)),
            ..Default::default()
        };
        let m = Error::from_errno(Op::Attach, Errno::EPERM, &other).to_string();
        assert_eq!(
            m,
            "segment \"app\" is owned by uid 1001; if you meant to share it, attach with shared_with_owner(1001) (C: dsu_attach_shared(..., 1001)); else choose another name than \"app\""
        );
        let expected = Context {
            expected_owner: Some(1002),
            ..other
        };
        let m = Error::from_errno(Op::Attach, Errno::EPERM, &expected).to_string();
        assert!(
            m.contains("owned by uid 1001; this program expected uid 1002 to own it"),
            "{m}"
        );
        let m = Error::from_errno(Op::Attach, Errno::ENOENT, &ctx("s")).to_string();
        assert!(
            m.contains("segment \"s\" does not exist") && m.contains("dsuctl create s"),
            "{m}"
        );
        let m = Error::from_errno(Op::Attach, Errno::EEXIST, &ctx("s")).to_string();
        assert!(m.contains("already exists"), "{m}");
        let m = Error::from_errno(Op::Bind, Errno::EIDRM, &ctx("s")).to_string();
        assert!(m.contains("was destroyed"), "{m}");
        let rv = Context {
            name: Some("v".into()),
            ..ctx("s")
        };
        let m = Error::from_errno(Op::ReadVar, Errno::ENOENT, &rv).to_string();
        assert!(
            m.contains("variable \"v\" not found in segment \"s\""),
            "{m}"
        );
        for (op, e, param) in [
            (Op::Attach, Errno::ENOSPC, "max_segments"),
            (Op::Resolve, Errno::ENOSPC, "max_segment_pages"),
            (Op::Resolve, Errno::E2BIG, "max_variables"),
            (Op::Bind, Errno::ENOSPC, "max_versions"),
            (Op::Bind, Errno::E2BIG, "max_segment_pages"),
        ] {
            let m = Error::from_errno(op, e, &ctx("s")).to_string();
            assert!(
                m.contains(&format!("/sys/module/dsu/parameters/{param}")),
                "{op} {e}: {m}"
            );
        }
        let m = Error::from_errno(Op::Resolve, Errno::ENOMEM, &ctx("s")).to_string();
        assert!(m.contains("out of memory during RESOLVE"), "{m}");
        for e in [
            Errno::EINVAL,
            Errno::E2BIG,
            Errno::ENOTTY,
            Errno::EBUSY,
            Errno::EBADFD,
            Errno::EFAULT,
        ] {
            let m = Error::from_errno(Op::Attach, e, &ctx("s")).to_string();
            assert!(m.starts_with("dsu ATTACH failed with"), "{m}");
            assert!(!m.contains("unexpected"), "{e} has a hint: {m}");
        }
    }

    #[test]
    fn conflict_messages() {
        let e = Error::TypeChanged {
            segment: "s".into(),
            name: "app::COUNTER".into(),
            type_name: "AtomicI64".into(),
            ours: 0xa,
            theirs: 0xb,
            detail: "field `port` is u16 at offset 8 (2 bytes) in the segment but u32 at offset 8 (4 bytes) in this program".into(),
            others: 0,
        };
        let m = e.to_string();
        assert_eq!(
            m,
            "variable \"app::COUNTER\" changed type in segment \"s\": field `port` is u16 at offset 8 (2 bytes) in the segment but u32 at offset 8 (4 bytes) in this program (fingerprint 0x000000000000000b in the segment, 0x000000000000000a in this program, which declares it as AtomicI64); migrate it with #[dsu(migrate(from = OldType, with = transform))], keep the old type, or use a new name; nothing was changed"
        );
        let e = Error::SizeChanged {
            segment: "s".into(),
            name: "v".into(),
            type_name: "u64".into(),
            ours: 8,
            theirs: 4,
            detail: Box::default(),
            others: 2,
        };
        let m = e.to_string();
        assert!(
            m.contains("changed size in segment \"s\": 4 bytes in the segment, 8 bytes in this program (u64); the segment does not say how its type differs (and 2 more conflicting variables)"),
            "{m}"
        );
    }
}
