//! The typed `/dev/dsu` ioctl layer: one method per ioctl of `uapi/dsu.h`, errors mapped
//! to [`Error`]. [`attach`](crate::attach), `dsuctl` and the tests are built on it.
//!
//! ```no_run
//! let dev = dsu::sys::Device::open()?;
//! for seg in dev.list_segments()? {
//!     println!("{} owner {} mode {:o}", seg.name, seg.uid, seg.mode);
//! }
//! # Ok::<(), dsu::Error>(())
//! ```

use crate::error::{Context, Error, Op, Result};
use crate::names;
use dsu_uapi as u;
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

#[allow(missing_docs)]
mod ioctls {
    use dsu_uapi as u;
    nix::ioctl_readwrite!(
        attach,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_ATTACH,
        u::dsu_attach
    );
    nix::ioctl_readwrite!(
        resolve,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_RESOLVE,
        u::dsu_resolve
    );
    nix::ioctl_readwrite!(bind, u::DSU_IOC_MAGIC, u::DSU_IOC_NR_BIND, u::dsu_bind);
    nix::ioctl_readwrite!(
        list_segments,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_LIST_SEGMENTS,
        u::dsu_list
    );
    nix::ioctl_readwrite!(
        list_variables,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_LIST_VARIABLES,
        u::dsu_list
    );
    nix::ioctl_readwrite!(
        list_versions,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_LIST_VERSIONS,
        u::dsu_list
    );
    nix::ioctl_readwrite!(
        read_var,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_READ_VAR,
        u::dsu_read_var
    );
    nix::ioctl_write_ptr!(
        destroy,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_DESTROY,
        u::dsu_destroy
    );
    nix::ioctl_write_ptr!(
        setattr,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_SETATTR,
        u::dsu_setattr
    );
    nix::ioctl_readwrite!(heap, u::DSU_IOC_MAGIC, u::DSU_IOC_NR_HEAP, u::dsu_heap);
    nix::ioctl_readwrite!(
        heap_grow,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_HEAP_GROW,
        u::dsu_heap_grow
    );
    nix::ioctl_write_ptr!(
        heap_discard,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_HEAP_DISCARD,
        u::dsu_heap_discard
    );
    nix::ioctl_readwrite!(
        read_heap,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_READ_HEAP,
        u::dsu_read_heap
    );
    nix::ioctl_none!(ready, u::DSU_IOC_MAGIC, u::DSU_IOC_NR_READY);
    nix::ioctl_readwrite!(gc, u::DSU_IOC_MAGIC, u::DSU_IOC_NR_GC, u::dsu_gc);
    nix::ioctl_readwrite!(
        snapshot,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_SNAPSHOT,
        u::dsu_snapshot
    );
    nix::ioctl_write_ptr!(
        restore,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_RESTORE,
        u::dsu_restore
    );
    nix::ioctl_readwrite!(
        restore_var,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_RESTORE_VAR,
        u::dsu_restore_var
    );
    nix::ioctl_write_ptr!(
        restore_heap,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_RESTORE_HEAP,
        u::dsu_restore_heap
    );
    nix::ioctl_none!(
        restore_commit,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_RESTORE_COMMIT
    );
    nix::ioctl_readwrite!(
        lock_token,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_LOCK_TOKEN,
        u::dsu_lock_token
    );
    nix::ioctl_readwrite!(
        lock_owner,
        u::DSU_IOC_MAGIC,
        u::DSU_IOC_NR_LOCK_OWNER,
        u::dsu_lock_owner
    );
}

/// What the module says of a lock's recorded holder ([`Device::lock_owner`]).
///
/// ```
/// use dsu::sys::LockOwner;
/// assert_ne!(LockOwner::Live, LockOwner::Gone);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOwner {
    /// The token's process is alive and maps the lock's memory: it may release the lock.
    Live,
    /// It cannot: it exited or execed, maps no part of that memory (the lock word is a
    /// copy, as in a restored snapshot), or got its token from an earlier module instance.
    Gone,
    /// The module cannot tell: it never issued the token.
    Unknown,
}

/// Runs `f` on `/dev/dsu` opened with no allocation (the lock path asks for its token on
/// its first use in a process, where allocating could recurse into an allocator that
/// locks): `None` without the module, or if `f` fails.
fn with_device_quiet<T>(f: impl FnOnce(RawFd) -> nix::Result<T>) -> Option<T> {
    // SAFETY: a NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(c"/dev/dsu".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let r = f(fd);
    // SAFETY: ours, closed once.
    unsafe { libc::close(fd) };
    r.ok()
}

/// DSU_IOC_LOCK_TOKEN on `fd`.
fn lock_token_on(fd: RawFd) -> nix::Result<u64> {
    let mut t = u::dsu_lock_token {
        size: size32::<u::dsu_lock_token>(),
        ..Default::default()
    };
    // SAFETY: a valid struct of the encoded size.
    unsafe { ioctls::lock_token(fd, &mut t) }?;
    Ok(t.token)
}

/// DSU_IOC_LOCK_OWNER on `fd`.
fn lock_owner_on(fd: RawFd, token: u64, addr: usize) -> nix::Result<LockOwner> {
    let mut q = u::dsu_lock_owner {
        size: size32::<u::dsu_lock_owner>(),
        token,
        addr: addr as u64,
        ..Default::default()
    };
    // SAFETY: a valid struct of the encoded size.
    unsafe { ioctls::lock_owner(fd, &mut q) }?;
    Ok(match q.state {
        u::DSU_LOCK_OWNER_LIVE => LockOwner::Live,
        u::DSU_LOCK_OWNER_GONE => LockOwner::Gone,
        _ => LockOwner::Unknown,
    })
}

/// [`Device::lock_token`] with no allocation: `None` without the module, or if it has no
/// token to give.
pub(crate) fn lock_token_quiet() -> Option<u64> {
    with_device_quiet(lock_token_on)
}

/// [`Device::lock_owner`] with no allocation: `None` without the module, or if it refuses
/// the question.
pub(crate) fn lock_owner_quiet(token: u64, addr: usize) -> Option<LockOwner> {
    with_device_quiet(|fd| lock_owner_on(fd, token, addr))
}

/// The path of the device.
pub const DEVICE_PATH: &str = "/dev/dsu";

/// What [`Device::set_attr`] changes: each field that is `Some`.
///
/// ```
/// let a = dsu::sys::SetAttr { mode: Some(0o640), gid: Some(100), ..Default::default() };
/// assert_eq!(a.uid, None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits, at most `0o777`.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
}

impl SetAttr {
    /// The ioctl argument; an empty change or a mode above 0777 is refused here, with the
    /// errors the kernel would give.
    fn to_uapi(self, segment: &str) -> Result<u::dsu_setattr> {
        let invalid = |why: &str| Error::InvalidName {
            what: "attribute change for segment",
            name: segment.into(),
            why: why.into(),
        };
        let mut s = u::dsu_setattr {
            size: size32::<u::dsu_setattr>(),
            ..Default::default()
        };
        if let Some(mode) = self.mode {
            if mode > 0o777 {
                return Err(invalid(&format!("mode {mode:o} is above 0777")));
            }
            s.flags |= u::DSU_SETATTR_MODE;
            s.mode = mode;
        }
        if let Some(uid) = self.uid {
            s.flags |= u::DSU_SETATTR_UID;
            s.uid = uid;
        }
        if let Some(gid) = self.gid {
            s.flags |= u::DSU_SETATTR_GID;
            s.gid = gid;
        }
        if s.flags == 0 {
            return Err(invalid("nothing to change (no mode, uid or gid)"));
        }
        names::fill(&mut s.name, segment);
        Ok(s)
    }
}

/// How ATTACH treats a missing or existing segment.
///
/// ```
/// assert_eq!(dsu::sys::Create::default(), dsu::sys::Create::IfMissing);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Create {
    /// Open the segment, creating it if missing (flags 0).
    #[default]
    IfMissing,
    /// Fail with [`Error::SegmentNotFound`] if missing (`DSU_ATTACH_MUST_EXIST`).
    MustExist,
    /// Fail with [`Error::SegmentExists`] if present (`DSU_ATTACH_MUST_CREATE`).
    MustCreate,
}

impl Create {
    /// The `DSU_ATTACH_*` flags.
    ///
    /// ```
    /// assert_eq!(dsu::sys::Create::MustExist.flags(), dsu_uapi::DSU_ATTACH_MUST_EXIST);
    /// ```
    pub fn flags(self) -> u32 {
        match self {
            Create::IfMissing => 0,
            Create::MustExist => u::DSU_ATTACH_MUST_EXIST,
            Create::MustCreate => u::DSU_ATTACH_MUST_CREATE,
        }
    }
}

/// A segment, from LIST_SEGMENTS.
///
/// ```no_run
/// let segs: Vec<dsu::sys::SegmentInfo> = dsu::sys::Device::open()?.list_segments()?;
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Name.
    pub name: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Destroyed (name removed) but still alive through handles or mappings.
    pub destroyed: bool,
    /// Pages allocated.
    pub pages: u64,
    /// Directory entries.
    pub variables: u64,
    /// Live versions.
    pub versions: u64,
    /// Open handles attached.
    pub handles: u64,
    /// Creation time, CLOCK_REALTIME nanoseconds.
    pub created_ns: u64,
    /// The shared heap, if the segment has one.
    pub heap: Option<HeapInfo>,
}

/// A segment's shared heap: its window `[base, base + reserve)`, the same address in every
/// process, of which the first `size` bytes are backed (DESIGN.md, *Shared heap*).
///
/// ```no_run
/// let mut dev = dsu::sys::Device::open()?;
/// dev.attach("app", dsu::sys::Create::MustExist, 0)?;
/// let heap: dsu::sys::HeapInfo = dev.heap(None)?;
/// println!("heap at {:#x}, {} of {} bytes backed", heap.base, heap.size, heap.reserve);
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapInfo {
    /// The window's address.
    pub base: u64,
    /// The window's length in bytes.
    pub reserve: u64,
    /// Bytes backed by pages.
    pub size: u64,
    /// Whether the call that returned this created the heap (always `false` from a list).
    pub created: bool,
}

impl From<&u::dsu_segment_info> for SegmentInfo {
    fn from(s: &u::dsu_segment_info) -> Self {
        SegmentInfo {
            name: names::read(&s.name),
            uid: s.uid,
            gid: s.gid,
            mode: s.mode,
            destroyed: s.flags & u::DSU_SEGMENT_DESTROYED != 0,
            pages: s.pages,
            variables: s.variables,
            versions: s.versions,
            handles: s.handles,
            created_ns: s.created_ns,
            heap: (s.heap_reserve != 0).then_some(HeapInfo {
                base: s.heap_base,
                reserve: s.heap_reserve,
                size: s.heap_size,
                created: false,
            }),
        }
    }
}

/// A directory entry, from LIST_VARIABLES.
///
/// ```no_run
/// let vars: Vec<dsu::sys::VariableInfo> = dsu::sys::Device::open()?.list_variables("app")?;
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariableInfo {
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Alignment.
    pub align: u64,
    /// Type fingerprint.
    pub fingerprint: u64,
    /// First page in the segment.
    pub first_page: u64,
    /// Pages it occupies.
    pub page_count: u64,
    /// Creation time, CLOCK_REALTIME nanoseconds.
    pub created_ns: u64,
    /// Id of the version (or handle) that created it.
    pub created_by: u64,
    /// That version's label ("" if it had not bound yet).
    pub created_label: String,
}

impl From<&u::dsu_variable_info> for VariableInfo {
    fn from(v: &u::dsu_variable_info) -> Self {
        VariableInfo {
            name: names::read(&v.name),
            size: v.size,
            align: v.align,
            fingerprint: v.fingerprint,
            first_page: v.first_page,
            page_count: v.page_count,
            created_ns: v.created_ns,
            created_by: v.created_by,
            created_label: names::read(&v.created_label),
        }
    }
}

/// A live version, from LIST_VERSIONS.
///
/// ```no_run
/// let versions: Vec<dsu::sys::VersionInfo> = dsu::sys::Device::open()?.list_versions("app")?;
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version id, unique in the segment.
    pub id: u64,
    /// Process id of the binder.
    pub pid: i32,
    /// Pages in its map.
    pub pages: u64,
    /// Live mappings.
    pub mappings: u64,
    /// Bind time, CLOCK_REALTIME nanoseconds.
    pub bound_ns: u64,
    /// Label.
    pub label: String,
    /// Ready (committed, `DSU_VERSION_READY`); `false`: a candidate, which may still abort.
    pub ready: bool,
}

impl From<&u::dsu_version_info> for VersionInfo {
    fn from(v: &u::dsu_version_info) -> Self {
        VersionInfo {
            id: v.id,
            pid: v.pid,
            ready: v.flags & u::DSU_VERSION_READY != 0,
            pages: v.pages,
            mappings: v.mappings,
            bound_ns: v.bound_ns,
            label: names::read(&v.label),
        }
    }
}

/// What an event is about.
///
/// ```
/// assert_ne!(dsu::sys::EventKind::Bound, dsu::sys::EventKind::Ended);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A (newer) version bound to the segment: maybe a candidate, which may still abort.
    /// Wait for [`Ready`](Self::Ready) before retiring.
    Bound,
    /// A version's fd and mappings are all gone.
    Ended,
    /// A version declared itself ready (`DSU_IOC_READY`, or a BIND without
    /// `DSU_BIND_CANDIDATE`): the one to hand over to.
    Ready,
    /// A candidate ended before it was ready; [`Ended`](Self::Ended) follows.
    Aborted,
    /// A kind this library does not know.
    Other(u32),
}

/// An event read from a handle attached to a segment.
///
/// ```no_run
/// let mut dev = dsu::sys::Device::open()?;
/// dev.attach("app", dsu::sys::Create::MustExist, 0)?;
/// for ev in dev.read_events()? {
///     println!("{:?} version {} ({}) pid {}", ev.kind, ev.version_id, ev.label, ev.pid);
/// }
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Bound or ended.
    pub kind: EventKind,
    /// The version it is about.
    pub version_id: u64,
    /// That version's process id.
    pub pid: i32,
    /// Events dropped before this one (the queue was full).
    pub lost: u32,
    /// CLOCK_REALTIME nanoseconds.
    pub time_ns: u64,
    /// That version's label.
    pub label: String,
}

impl From<&u::dsu_event> for Event {
    fn from(e: &u::dsu_event) -> Self {
        Event {
            kind: match e.kind {
                u::DSU_EVENT_VERSION_BOUND => EventKind::Bound,
                u::DSU_EVENT_VERSION_ENDED => EventKind::Ended,
                u::DSU_EVENT_VERSION_READY => EventKind::Ready,
                u::DSU_EVENT_VERSION_ABORTED => EventKind::Aborted,
                k => EventKind::Other(k),
            },
            version_id: e.version_id,
            pid: e.pid,
            lost: e.lost,
            time_ns: e.time_ns,
            label: names::read(&e.label),
        }
    }
}

/// How BIND makes a version ([`Device::bind_extents_with`]).
///
/// ```
/// let o = dsu::sys::BindOptions { candidate: true, ..Default::default() };
/// assert!(!o.prefault);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// Install every page-table entry at mmap (`DSU_BIND_PREFAULT`).
    pub prefault: bool,
    /// Bind as a candidate (`DSU_BIND_CANDIDATE`): ready only at [`Device::ready`]; if the
    /// handle goes before, the version aborts and its unused additions are removed.
    pub candidate: bool,
}

impl BindOptions {
    /// The `DSU_BIND_*` flags.
    ///
    /// ```
    /// let o = dsu::sys::BindOptions { candidate: true, prefault: true };
    /// assert_eq!(o.flags(), dsu_uapi::DSU_BIND_CANDIDATE | dsu_uapi::DSU_BIND_PREFAULT);
    /// ```
    pub fn flags(self) -> u32 {
        let mut f = 0;
        if self.prefault {
            f |= u::DSU_BIND_PREFAULT;
        }
        if self.candidate {
            f |= u::DSU_BIND_CANDIDATE;
        }
        f
    }
}

/// What [`Device::gc`] reclaims.
///
/// ```
/// let o = dsu::sys::GcOptions { dry_run: true, min_age: Some(2) };
/// assert_eq!(dsu::sys::GcOptions::default().min_age, None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Only list what would be reclaimed (`DSU_GC_DRY_RUN`, read permission).
    pub dry_run: bool,
    /// Generations (READYs) a variable must have gone unused; `None`: the module's
    /// `gc_min_age` parameter (default 1).
    pub min_age: Option<u32>,
}

/// What [`Device::gc`] found.
///
/// ```
/// let r = dsu::sys::GcReport { variables: vec![], total: 0, pages: 0, generation: 3 };
/// assert!(r.variables.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcReport {
    /// The variables reclaimed (or reclaimable, in a dry run): the first
    /// `DSU_LIST_MAX` (1024) of them.
    pub variables: Vec<VariableInfo>,
    /// How many there were.
    pub total: u32,
    /// Their pages.
    pub pages: u64,
    /// The segment's generation: how many versions became ready in it.
    pub generation: u64,
}

/// The result of READ_VAR.
///
/// ```
/// let r = dsu::sys::ReadVar { copied: 4, var_size: 4, var_fingerprint: 1 };
/// assert_eq!(r.copied, r.var_size);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadVar {
    /// Bytes copied into the buffer.
    pub copied: u64,
    /// The variable's size.
    pub var_size: u64,
    /// The variable's fingerprint.
    pub var_fingerprint: u64,
}

/// An open handle of `/dev/dsu`.
///
/// ```no_run
/// use dsu::sys::{Create, Device};
/// let mut dev = Device::open()?;
/// let created = dev.attach("demo", Create::IfMissing, 0o600)?;
/// println!("created: {created}");
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    segment: String,
}

/// A segment's permission bits (ATTACH, RESTORE): at most 0777.
fn check_mode(mode: u32) -> Result<()> {
    if mode > 0o777 {
        return Err(Error::InvalidName {
            what: "mode",
            name: format!("{mode:o}"),
            why: "it must be at most 0777".into(),
        });
    }
    Ok(())
}

fn size32<T>() -> u32 {
    size_of::<T>() as u32
}

impl Device {
    /// Opens `/dev/dsu` read-write, close-on-exec.
    ///
    /// ```no_run
    /// let dev = dsu::sys::Device::open()?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn open() -> Result<Device> {
        Self::open_path(DEVICE_PATH)
    }

    /// Opens another device node (tests).
    ///
    /// ```no_run
    /// let dev = dsu::sys::Device::open_path("/dev/dsu")?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn open_path(path: &str) -> Result<Device> {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => Ok(Device {
                fd: f.into(),
                segment: String::new(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::ModuleNotLoaded),
            Err(source) => Err(Error::OpenDevice {
                path: path.into(),
                source,
            }),
        }
    }

    /// This process's *lock token* (DSU_IOC_LOCK_TOKEN): the number a
    /// [`sync::Mutex`](crate::sync::Mutex) records beside its holder's thread id, issued on
    /// the first call and the same for every thread until the process exits or execs. The
    /// mutex asks for it itself; this is for tools and tests.
    ///
    /// ```no_run
    /// let token = dsu::sys::Device::open()?.lock_token()?;
    /// assert_ne!(token & (1 << 63), 0);
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn lock_token(&self) -> Result<u64> {
        lock_token_on(self.fd.as_raw_fd()).map_err(|e| self.error(Op::LockToken, e, "", None))
    }

    /// Whether the process whose lock token is `token` can still release a lock whose
    /// word is at `addr` in this process's shared memory (DSU_IOC_LOCK_OWNER): a
    /// [`sync::Mutex`](crate::sync::Mutex) waiter asks this after waiting a while, and
    /// takes the lock over when the answer is [`LockOwner::Gone`] (the word was copied:
    /// a restored snapshot). `addr` outside a `MAP_SHARED` file mapping: an error.
    ///
    /// ```no_run
    /// use dsu::sys::{Device, LockOwner};
    /// let dev = Device::open()?;
    /// let token = dev.lock_token()?;
    /// // An address of no shared mapping is refused.
    /// assert!(dev.lock_owner(token, &token as *const u64 as usize).is_err());
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn lock_owner(&self, token: u64, addr: usize) -> Result<LockOwner> {
        lock_owner_on(self.fd.as_raw_fd(), token, addr)
            .map_err(|e| self.error(Op::LockOwner, e, "", None))
    }

    /// A second `Device` on the same open file (`dup` with close-on-exec): the same handle,
    /// attached or bound as this one is.
    ///
    /// ```no_run
    /// let dev = dsu::sys::Device::open()?;
    /// let same = dev.try_clone()?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Device> {
        Ok(Device {
            fd: self.fd.try_clone().map_err(|source| Error::Io {
                what: "dup of the /dev/dsu handle",
                source,
            })?,
            segment: self.segment.clone(),
        })
    }

    /// The segment this handle attached to ("" before [`attach`](Self::attach)).
    ///
    /// ```no_run
    /// let dev = dsu::sys::Device::open()?;
    /// assert_eq!(dev.segment(), "");
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn segment(&self) -> &str {
        &self.segment
    }

    /// Looks up a segment's owner and mode for an error message.
    fn owner_of(&self, segment: &str) -> Option<(u32, u32)> {
        let segs = self.list_segments().ok()?;
        segs.iter()
            .find(|s| s.name == segment && !s.destroyed)
            .map(|s| (s.uid, s.mode))
    }

    fn error(&self, op: Op, errno: Errno, segment: &str, name: Option<&str>) -> Error {
        let owner = match errno {
            Errno::EACCES | Errno::EPERM => self.owner_of(segment),
            _ => None,
        };
        let mut ctx = Context {
            segment: segment.into(),
            name: name.map(Into::into),
            owner,
            expected_owner: None,
        };
        if op == Op::ReadVar && errno == Errno::ENOENT {
            // Segment or variable? Ask.
            let seg_exists = self
                .list_segments()
                .map(|s| s.iter().any(|s| s.name == segment))
                .unwrap_or(true);
            if !seg_exists {
                ctx.name = None;
            }
        }
        Error::from_errno(op, errno, &ctx)
    }

    /// DSU_IOC_ATTACH: opens or creates `segment` (mode 0 means 0600) and connects this
    /// handle to it. Returns whether this call created it.
    ///
    /// ```no_run
    /// use dsu::sys::{Create, Device};
    /// let mut dev = Device::open()?;
    /// dev.attach("demo", Create::MustExist, 0)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn attach(&mut self, segment: &str, create: Create, mode: u32) -> Result<bool> {
        self.attach_owned(segment, create, mode, None)
    }

    /// DSU_IOC_ATTACH with `DSU_ATTACH_OWNER`: like [`attach`](Self::attach), but an
    /// existing segment may be owned by `owner` (a uid) instead of by this user, so that
    /// two users can share a segment on purpose. A segment owned by anyone else is
    /// [`Error::OwnedByOther`]; a missing one is created only if `owner` is this user
    /// (else [`Error::SegmentNotFound`]).
    ///
    /// ```no_run
    /// use dsu::sys::{Create, Device};
    /// let mut dev = Device::open()?;
    /// // uid 1001 created "shared" with mode 0660 and put us in its group.
    /// dev.attach_shared_with("shared", Create::MustExist, 0, 1001)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn attach_shared_with(
        &mut self,
        segment: &str,
        create: Create,
        mode: u32,
        owner: u32,
    ) -> Result<bool> {
        self.attach_owned(segment, create, mode, Some(owner))
    }

    fn attach_owned(
        &mut self,
        segment: &str,
        create: Create,
        mode: u32,
        owner: Option<u32>,
    ) -> Result<bool> {
        names::check_segment(segment)?;
        check_mode(mode)?;
        let mut a = u::dsu_attach {
            size: size32::<u::dsu_attach>(),
            flags: create.flags() | owner.map_or(0, |_| u::DSU_ATTACH_OWNER),
            mode,
            owner: owner.unwrap_or(0),
            event_size: size32::<u::dsu_event>(),
            ..Default::default()
        };
        names::fill(&mut a.name, segment);
        // SAFETY: a valid, initialised struct of the size the request encodes.
        match unsafe { ioctls::attach(self.fd.as_raw_fd(), &mut a) } {
            Ok(_) => {
                self.segment = segment.into();
                Ok(a.created != 0)
            }
            Err(e) => {
                let mut err = self.error(Op::Attach, e, segment, None);
                if let Error::OwnedByOther { expected, .. } = &mut err {
                    *expected = owner;
                }
                Err(err)
            }
        }
    }

    /// DSU_IOC_RESOLVE: finds or creates the batch of variables. On success every entry's
    /// `status`, `first_page` and `page_count` are set and the number added is returned.
    /// A conflict becomes [`Error::TypeChanged`] or [`Error::SizeChanged`] for the first
    /// conflicting entry (`type_names[i]` spells entry i's type in the message).
    ///
    /// ```no_run
    /// use dsu::sys::{Create, Device};
    /// let mut dev = Device::open()?;
    /// dev.attach("demo", Create::IfMissing, 0)?;
    /// let mut v = dsu_uapi::dsu_var { size: 8, align: 8, fingerprint: 1, ..Default::default() };
    /// dsu::sys::set_var_name(&mut v, "demo::X")?;
    /// let added = dev.resolve(std::slice::from_mut(&mut v), &["u64"])?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn resolve(&self, vars: &mut [u::dsu_var], type_names: &[&str]) -> Result<u32> {
        let mut r = u::dsu_resolve {
            size: size32::<u::dsu_resolve>(),
            var_size: size32::<u::dsu_var>(),
            count: vars.len() as u32,
            flags: 0,
            vars: vars.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `vars` points to `count` initialised entries that live across the call.
        match unsafe { ioctls::resolve(self.fd.as_raw_fd(), &mut r) } {
            Ok(_) => Ok(r.added),
            Err(Errno::EEXIST) => Err(conflict_error(&self.segment, vars, type_names)),
            Err(Errno::EINVAL) => {
                if let Some(v) = vars.iter().find(|v| v.status == u::DSU_VAR_INVALID) {
                    return Err(Error::InvalidName {
                        what: "variable",
                        name: names::read(&v.name),
                        why: format!(
                            "the module rejected it (size {}, align {}: size must be >= 1, align a power of two <= 4096)",
                            v.size, v.align
                        ),
                    });
                }
                let mut seen = std::collections::HashSet::new();
                if let Some(v) = vars.iter().find(|v| !seen.insert(names::read(&v.name))) {
                    return Err(Error::DuplicateName(names::read(&v.name)));
                }
                Err(self.error(Op::Resolve, Errno::EINVAL, &self.segment, None))
            }
            Err(e) => Err(self.error(Op::Resolve, e, &self.segment, None)),
        }
    }

    /// DSU_IOC_BIND: makes this handle a version with the given per-page map (`pages[i]`
    /// backs page `i` of the section) and label. Returns the version id. The kernel's work
    /// grows with the number of pages; [`bind_extents`](Self::bind_extents) does not.
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// let id = dev.bind("1.0", &[0, 1], false)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn bind(&self, label: &str, pages: &[u64], prefault: bool) -> Result<u64> {
        names::check_label(label)?;
        let mut b = u::dsu_bind {
            size: size32::<u::dsu_bind>(),
            flags: if prefault { u::DSU_BIND_PREFAULT } else { 0 },
            page_count: pages.len() as u64,
            pages: pages.as_ptr() as u64,
            ..Default::default()
        };
        names::fill(&mut b.label, label);
        // SAFETY: `pages` points to page_count u64s that live across the call.
        match unsafe { ioctls::bind(self.fd.as_raw_fd(), &mut b) } {
            Ok(_) => Ok(b.version_id),
            Err(e) => Err(self.error(Op::Bind, e, &self.segment, None)),
        }
    }

    /// DSU_IOC_BIND with the map as extents: the version's section is the concatenation of
    /// `extents` (see [`Extent`](crate::layout::Extent)), so the kernel's work does not grow
    /// with the number of pages. Returns the version id.
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// use dsu::layout::Extent;
    /// let id = dev.bind_extents("1.0", &[Extent { first_page: 0, page_count: 2 }], false)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn bind_extents(
        &self,
        label: &str,
        extents: &[crate::layout::Extent],
        prefault: bool,
    ) -> Result<u64> {
        let options = BindOptions {
            prefault,
            candidate: false,
        };
        self.bind_extents_with(label, extents, options)
    }

    /// [`bind_extents`](Self::bind_extents) with [`BindOptions`]: with `candidate`, the
    /// version is ready only after [`ready`](Self::ready).
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// use dsu::{layout::Extent, sys::BindOptions};
    /// let options = BindOptions { candidate: true, ..Default::default() };
    /// let id = dev.bind_extents_with("2.0", &[Extent { first_page: 0, page_count: 1 }], options)?;
    /// dev.ready()?; // once started: older versions are told now
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn bind_extents_with(
        &self,
        label: &str,
        extents: &[crate::layout::Extent],
        options: BindOptions,
    ) -> Result<u64> {
        names::check_label(label)?;
        let page_count = extents
            .iter()
            .try_fold(0u64, |sum, e| sum.checked_add(e.page_count))
            .ok_or_else(|| self.error(Op::Bind, Errno::EINVAL, &self.segment, None))?;
        let mut b = u::dsu_bind {
            size: size32::<u::dsu_bind>(),
            flags: options.flags(),
            page_count,
            extents: extents.as_ptr() as u64,
            extent_count: extents.len() as u64,
            ..Default::default()
        };
        names::fill(&mut b.label, label);
        // SAFETY: `extents` points to extent_count `Extent`s, laid out as `struct
        // dsu_extent` (checked in layout.rs), that live across the call.
        match unsafe { ioctls::bind(self.fd.as_raw_fd(), &mut b) } {
            Ok(_) => Ok(b.version_id),
            Err(e) => Err(self.error(Op::Bind, e, &self.segment, None)),
        }
    }

    /// Maps the bound version: `MAP_SHARED`, read-write, offset 0, `len` bytes, at `addr`
    /// (with `MAP_FIXED`) or wherever the kernel chooses.
    ///
    /// # Safety
    ///
    /// With `addr`, the range is replaced: nothing else may use it (other than as the
    /// program's globals section, which is the point).
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// // SAFETY: no fixed address.
    /// let p = unsafe { dev.mmap(None, 4096) }?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub unsafe fn mmap(&self, addr: Option<usize>, len: usize) -> Result<*mut u8> {
        let (hint, flags) = match addr {
            Some(a) => (a as *mut libc::c_void, libc::MAP_SHARED | libc::MAP_FIXED),
            None => (std::ptr::null_mut(), libc::MAP_SHARED),
        };
        // SAFETY: the caller vouches for the range when it is fixed.
        let p = unsafe {
            libc::mmap(
                hint,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(self.error(Op::Mmap, Errno::last(), &self.segment, None));
        }
        Ok(p.cast())
    }

    fn list<T: Default + Clone>(
        &self,
        op: Op,
        segment: &str,
        call: unsafe fn(libc::c_int, *mut u::dsu_list) -> nix::Result<libc::c_int>,
    ) -> Result<Vec<T>> {
        let mut out: Vec<T> = Vec::new();
        loop {
            let cap = 256usize;
            let mut buf = vec![T::default(); cap];
            let mut l = u::dsu_list {
                size: size32::<u::dsu_list>(),
                record_size: size32::<T>(),
                start: out.len() as u32,
                count: cap as u32,
                records: buf.as_mut_ptr() as u64,
                ..Default::default()
            };
            if op != Op::ListSegments {
                names::fill(&mut l.segment, segment);
            }
            // SAFETY: `records` points to `count` records of `record_size` bytes.
            if let Err(e) = unsafe { call(self.fd.as_raw_fd(), &mut l) } {
                return Err(self.error(op, e, segment, None));
            }
            buf.truncate(l.count.min(cap as u32) as usize);
            out.extend(buf);
            if l.count == 0 || out.len() >= l.total as usize {
                return Ok(out);
            }
        }
    }

    /// DSU_IOC_LIST_SEGMENTS, every page of it.
    ///
    /// ```no_run
    /// let n = dsu::sys::Device::open()?.list_segments()?.len();
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn list_segments(&self) -> Result<Vec<SegmentInfo>> {
        let raw: Vec<u::dsu_segment_info> =
            self.list(Op::ListSegments, "", ioctls::list_segments)?;
        Ok(raw.iter().map(SegmentInfo::from).collect())
    }

    /// DSU_IOC_LIST_VARIABLES of `segment`.
    ///
    /// ```no_run
    /// for v in dsu::sys::Device::open()?.list_variables("app")? { println!("{}", v.name); }
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn list_variables(&self, segment: &str) -> Result<Vec<VariableInfo>> {
        names::check_segment(segment)?;
        let raw: Vec<u::dsu_variable_info> =
            self.list(Op::ListVariables, segment, ioctls::list_variables)?;
        Ok(raw.iter().map(VariableInfo::from).collect())
    }

    /// DSU_IOC_LIST_VERSIONS of `segment`.
    ///
    /// ```no_run
    /// for v in dsu::sys::Device::open()?.list_versions("app")? { println!("{} pid {}", v.label, v.pid); }
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn list_versions(&self, segment: &str) -> Result<Vec<VersionInfo>> {
        names::check_segment(segment)?;
        let raw: Vec<u::dsu_version_info> =
            self.list(Op::ListVersions, segment, ioctls::list_versions)?;
        Ok(raw.iter().map(VersionInfo::from).collect())
    }

    /// DSU_IOC_READ_VAR: copies up to `buf.len()` bytes of the variable from `offset`. With
    /// `fingerprint` `None` the newest entry of that name is read, whatever its type.
    ///
    /// ```no_run
    /// let mut buf = [0u8; 8];
    /// let r = dsu::sys::Device::open()?.read_var("app", "app::COUNTER", None, 0, &mut buf)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn read_var(
        &self,
        segment: &str,
        name: &str,
        fingerprint: Option<u64>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<ReadVar> {
        let r = self.read_var_request(0, segment, name, fingerprint, offset, buf)?;
        Ok(ReadVar {
            copied: r.length,
            var_size: r.var_size,
            var_fingerprint: r.var_fingerprint,
        })
    }

    /// DSU_IOC_READ_VAR with `flags` (besides `DSU_READ_ANY_FINGERPRINT`, set when
    /// `fingerprint` is `None`) into `buf`; the request as the kernel returned it.
    fn read_var_request(
        &self,
        flags: u32,
        segment: &str,
        name: &str,
        fingerprint: Option<u64>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<u::dsu_read_var> {
        names::check_segment(segment)?;
        names::check_variable(name)?;
        let mut r = u::dsu_read_var {
            size: size32::<u::dsu_read_var>(),
            flags: flags
                | if fingerprint.is_none() {
                    u::DSU_READ_ANY_FINGERPRINT
                } else {
                    0
                },
            fingerprint: fingerprint.unwrap_or(0),
            offset,
            length: buf.len() as u64,
            buf: buf.as_mut_ptr() as u64,
            ..Default::default()
        };
        names::fill(&mut r.segment, segment);
        names::fill(&mut r.name, name);
        // SAFETY: `buf` is writable for `length` bytes across the call.
        match unsafe { ioctls::read_var(self.fd.as_raw_fd(), &mut r) } {
            Ok(_) => Ok(r),
            Err(e) => Err(self.error(Op::ReadVar, e, segment, Some(name))),
        }
    }

    /// DSU_IOC_READ_VAR with `DSU_READ_TYPE_DESC`: the type description stored with the
    /// variable's entry (newest of that name with `fingerprint`, or whatever its
    /// fingerprint with `None`), as text (format: [`typedesc`](crate::typedesc)); `None`
    /// if its creator gave none.
    ///
    /// ```no_run
    /// let dev = dsu::sys::Device::open()?;
    /// if let Some(text) = dev.read_type_desc("app", "app::CONF", None)? {
    ///     println!("{:?}", dsu::typedesc::TypeDesc::parse(&text));
    /// }
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn read_type_desc(
        &self,
        segment: &str,
        name: &str,
        fingerprint: Option<u64>,
    ) -> Result<Option<String>> {
        let mut buf = vec![0u8; crate::typedesc::TYPE_DESC_MAX];
        let r = self.read_var_request(
            u::DSU_READ_TYPE_DESC,
            segment,
            name,
            fingerprint,
            0,
            &mut buf,
        )?;
        buf.truncate((r.length as usize).min(buf.len()));
        Ok((!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned()))
    }

    /// Reads a whole variable: its bytes and fingerprint.
    ///
    /// ```no_run
    /// let (bytes, fp) = dsu::sys::Device::open()?.read_var_all("app", "app::COUNTER", None)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn read_var_all(
        &self,
        segment: &str,
        name: &str,
        fingerprint: Option<u64>,
    ) -> Result<(Vec<u8>, u64)> {
        let mut buf = vec![0u8; 4096];
        loop {
            let r = self.read_var(segment, name, fingerprint, 0, &mut buf)?;
            if r.var_size as usize <= buf.len() {
                buf.truncate(r.copied.min(r.var_size) as usize);
                return Ok((buf, r.var_fingerprint));
            }
            buf = vec![0u8; r.var_size as usize];
        }
    }

    /// DSU_IOC_DESTROY: removes the segment's name (owner or root only).
    ///
    /// ```no_run
    /// dsu::sys::Device::open()?.destroy("demo")?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn destroy(&self, segment: &str) -> Result<()> {
        names::check_segment(segment)?;
        let mut d = u::dsu_destroy {
            size: size32::<u::dsu_destroy>(),
            ..Default::default()
        };
        names::fill(&mut d.name, segment);
        // SAFETY: a valid struct of the encoded size.
        match unsafe { ioctls::destroy(self.fd.as_raw_fd(), &d) } {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(Op::Destroy, e, segment, None)),
        }
    }

    /// Changes a segment's mode, owner or group (`DSU_IOC_SETATTR`): the fields of
    /// `attrs` that are `Some`. Needs ownership of the segment or `CAP_SYS_ADMIN`
    /// ([`Error::NotOwner`]); as with chown(2), a new owner needs `CAP_SYS_ADMIN` and a
    /// new group one the owner is in. uid and gid are in the caller's user namespace. The change
    /// applies to the next operation of every handle; existing mappings stay.
    ///
    /// ```no_run
    /// use dsu::sys::{Device, SetAttr};
    /// let dev = Device::open()?;
    /// dev.set_attr("demo", SetAttr { mode: Some(0o660), ..Default::default() })?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn set_attr(&self, segment: &str, attrs: SetAttr) -> Result<()> {
        names::check_segment(segment)?;
        let s = attrs.to_uapi(segment)?;
        // SAFETY: a valid struct of the encoded size.
        match unsafe { ioctls::setattr(self.fd.as_raw_fd(), &s) } {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(Op::SetAttr, e, segment, None)),
        }
    }

    /// DSU_IOC_HEAP: the attached segment's shared heap. With `window` `Some((base,
    /// reserve))` and no heap yet, creates one there (page-aligned, non-zero; nothing
    /// backed); a heap that exists is returned whatever `window` says. `None` only gets it;
    /// a segment without a heap is then [`Error::Kernel`] with `ENOENT`.
    ///
    /// ```no_run
    /// let mut dev = dsu::sys::Device::open()?;
    /// dev.attach("app", dsu::sys::Create::IfMissing, 0)?;
    /// let heap = dev.heap(Some((0x3000_0000_0000, 1 << 30)))?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn heap(&self, window: Option<(u64, u64)>) -> Result<HeapInfo> {
        let (base, reserve) = window.unwrap_or((0, 0));
        let mut h = u::dsu_heap {
            size: size32::<u::dsu_heap>(),
            base,
            reserve,
            ..Default::default()
        };
        // SAFETY: a valid struct of the encoded size.
        match unsafe { ioctls::heap(self.fd.as_raw_fd(), &mut h) } {
            Ok(_) => Ok(HeapInfo {
                base: h.base,
                reserve: h.reserve,
                size: h.heap_size,
                created: h.flags & u::DSU_HEAP_CREATED != 0,
            }),
            Err(e) => Err(self.heap_error(Op::Heap, e)),
        }
    }

    /// The error of a heap call: `ENOENT` there means "no heap", not "no segment".
    fn heap_error(&self, op: Op, errno: Errno) -> Error {
        if errno == Errno::ENOENT {
            return Error::Kernel {
                op,
                errno,
                hint: "the segment has no shared heap yet: attach with a heap (Attach::heap) to create one",
            };
        }
        self.error(op, errno, &self.segment, None)
    }

    /// DSU_IOC_HEAP_GROW: backs at least `min_size` bytes of the heap (rounded up to
    /// pages; a smaller request changes nothing) and returns the heap's size. Past any
    /// limit (the reserve, `max_heap_pages`, `max_user_pages`, `RLIMIT_MEMLOCK`, the
    /// memory cgroup): [`Error::OutOfMemory`], with nothing changed. A signal that
    /// interrupts the allocation (`EINTR`, nothing changed) is retried.
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// let size = dev.heap_grow(1 << 20)?;
    /// assert!(size >= 1 << 20);
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn heap_grow(&self, min_size: u64) -> Result<u64> {
        let mut g = u::dsu_heap_grow {
            size: size32::<u::dsu_heap_grow>(),
            min_size,
            ..Default::default()
        };
        loop {
            // SAFETY: a valid struct of the encoded size.
            match unsafe { ioctls::heap_grow(self.fd.as_raw_fd(), &mut g) } {
                Ok(_) => return Ok(g.heap_size),
                // shmem's fallocate stops at any pending signal, having changed nothing.
                Err(Errno::EINTR) => g.heap_size = 0,
                Err(e) => return Err(self.heap_error(Op::HeapGrow, e)),
            }
        }
    }

    /// DSU_IOC_HEAP_DISCARD: gives the pages of `[offset, offset + len)` of the heap
    /// (page-aligned, inside its size) back to the system; they read as zeros afterwards in
    /// every process.
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// dev.heap_discard(1 << 20, 1 << 20)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn heap_discard(&self, offset: u64, len: u64) -> Result<()> {
        let d = u::dsu_heap_discard {
            size: size32::<u::dsu_heap_discard>(),
            offset,
            length: len,
            ..Default::default()
        };
        // SAFETY: a valid struct of the encoded size.
        match unsafe { ioctls::heap_discard(self.fd.as_raw_fd(), &d) } {
            Ok(_) => Ok(()),
            Err(e) => Err(self.heap_error(Op::HeapDiscard, e)),
        }
    }

    /// DSU_IOC_READ_HEAP: copies up to `buf.len()` bytes of `segment`'s heap at `offset`
    /// (an address minus the heap's base), stopping at the heap's size; returns the bytes
    /// copied. Needs read permission only; works on any handle.
    ///
    /// ```no_run
    /// let mut buf = [0u8; 64];
    /// let n = dsu::sys::Device::open()?.read_heap("app", 0, &mut buf)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn read_heap(&self, segment: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        names::check_segment(segment)?;
        let mut r = u::dsu_read_heap {
            size: size32::<u::dsu_read_heap>(),
            offset,
            length: buf.len() as u64,
            buf: buf.as_mut_ptr() as u64,
            ..Default::default()
        };
        names::fill(&mut r.segment, segment);
        // SAFETY: a valid struct; `buf` is writable for `length` bytes.
        match unsafe { ioctls::read_heap(self.fd.as_raw_fd(), &mut r) } {
            Ok(_) => Ok(r.length as usize),
            Err(Errno::ENOENT)
                if self
                    .list_segments()
                    .is_ok_and(|l| l.iter().any(|s| s.name == segment && !s.destroyed)) =>
            {
                Err(self.heap_error(Op::ReadHeap, Errno::ENOENT))
            }
            Err(e) => Err(self.error(Op::ReadHeap, e, segment, None)),
        }
    }

    /// Maps the attached segment's heap window: `MAP_SHARED`, read-write, at `heap.base`,
    /// `heap.reserve` bytes. With `replace` false (`MAP_FIXED_NOREPLACE`) a range already in
    /// use fails with `EEXIST` (as [`Error::Kernel`] of [`Op::Mmap`]) and nothing is
    /// replaced; with `replace` true (`MAP_FIXED`) whatever is there is replaced.
    ///
    /// # Safety
    ///
    /// With `replace`, the range must be the caller's own (e.g. a reservation it made) and
    /// unused. Either way the memory is written by other processes at any time: the caller
    /// decides who may form references into it.
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// let heap = dev.heap(None)?;
    /// // SAFETY: nothing is replaced; the window is only used through raw pointers here.
    /// let p = unsafe { dev.mmap_heap(&heap, false) }?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub unsafe fn mmap_heap(&self, heap: &HeapInfo, replace: bool) -> Result<*mut u8> {
        let fixed = if replace {
            libc::MAP_FIXED
        } else {
            libc::MAP_FIXED_NOREPLACE
        };
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping; with MAP_FIXED the caller
        // vouches for the range.
        let p = unsafe {
            libc::mmap(
                heap.base as *mut libc::c_void,
                heap.reserve as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | fixed,
                self.fd.as_raw_fd(),
                u::DSU_HEAP_MMAP_OFFSET as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(self.error(Op::Mmap, Errno::last(), &self.segment, None));
        }
        if p as u64 != heap.base {
            // A kernel without MAP_FIXED_NOREPLACE treats it as a hint (before 4.17).
            // SAFETY: the mapping just made, at the address the kernel chose.
            unsafe { libc::munmap(p, heap.reserve as usize) };
            return Err(self.error(Op::Mmap, Errno::EEXIST, &self.segment, None));
        }
        Ok(p.cast())
    }

    /// Maps segment pages `first_page..first_page + pages` of the attached segment
    /// read-write (`MAP_SHARED`, where the kernel chooses) without making the handle a
    /// version: a view, e.g. of an old version's variable that a migration reads in place.
    ///
    /// # Safety
    ///
    /// Other processes write the pages at any time: the caller may only access them in
    /// ways that allow that (raw pointers, atomics, or under the data's own lock).
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// // SAFETY: read through raw pointers only.
    /// let p = unsafe { dev.mmap_view(0, 1) }?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub unsafe fn mmap_view(&self, first_page: u64, pages: usize) -> Result<*mut u8> {
        let offset = first_page
            .checked_mul(4096)
            .and_then(|o| o.checked_add(u::DSU_VIEW_MMAP_OFFSET))
            .ok_or_else(|| self.error(Op::Mmap, Errno::EINVAL, &self.segment, None))?;
        // SAFETY: a new mapping where the kernel chooses; nothing is replaced.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(self.error(Op::Mmap, Errno::last(), &self.segment, None));
        }
        Ok(p.cast())
    }

    /// DSU_IOC_READY: commits this handle's version. Other handles get
    /// [`EventKind::Ready`]; a candidate can no longer abort. Idempotent.
    /// [`Error::Kernel`] with `EBADFD` if the handle is not bound.
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// dev.ready()?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn ready(&self) -> Result<()> {
        // SAFETY: the command takes no argument.
        match unsafe { ioctls::ready(self.fd.as_raw_fd()) } {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(Op::Ready, e, &self.segment, None)),
        }
    }

    /// DSU_IOC_GC: lists (dry run) or reclaims the variables of `segment` that no live
    /// version maps, no handle holds between RESOLVE and BIND, and no ready version used
    /// for `min_age` generations. Reclaiming needs read and write permission.
    ///
    /// ```no_run
    /// use dsu::sys::{Device, GcOptions};
    /// let report = Device::open()?.gc("app", GcOptions { dry_run: true, ..Default::default() })?;
    /// for v in &report.variables { println!("{} ({} pages)", v.name, v.page_count); }
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn gc(&self, segment: &str, options: GcOptions) -> Result<GcReport> {
        names::check_segment(segment)?;
        let cap = u::DSU_LIST_MAX as usize;
        let mut buf = vec![u::dsu_variable_info::default(); cap];
        let mut c = u::dsu_gc {
            size: size32::<u::dsu_gc>(),
            record_size: size32::<u::dsu_variable_info>(),
            records: buf.as_mut_ptr() as u64,
            count: cap as u32,
            ..Default::default()
        };
        if options.dry_run {
            c.flags |= u::DSU_GC_DRY_RUN;
        }
        if let Some(age) = options.min_age {
            c.flags |= u::DSU_GC_MIN_AGE;
            c.min_age = age;
        }
        names::fill(&mut c.segment, segment);
        // SAFETY: `records` points to `count` records of `record_size` bytes.
        if let Err(e) = unsafe { ioctls::gc(self.fd.as_raw_fd(), &mut c) } {
            return Err(self.error(Op::Gc, e, segment, None));
        }
        buf.truncate(c.count.min(cap as u32) as usize);
        Ok(GcReport {
            variables: buf.iter().map(VariableInfo::from).collect(),
            total: c.total,
            pages: c.pages,
            generation: c.generation,
        })
    }

    /// Sets or clears `O_NONBLOCK` (whether [`read_events`](Self::read_events) blocks).
    ///
    /// ```no_run
    /// dsu::sys::Device::open()?.set_nonblocking(true)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn set_nonblocking(&self, on: bool) -> Result<()> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let io = |e: Errno| Error::Io {
            what: "fcntl on /dev/dsu",
            source: e.into(),
        };
        let flags =
            OFlag::from_bits_truncate(fcntl(self.fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io)?);
        let flags = if on {
            flags | OFlag::O_NONBLOCK
        } else {
            flags - OFlag::O_NONBLOCK
        };
        fcntl(self.fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io)?;
        Ok(())
    }

    /// Waits until events are queued or the timeout passes (`None`: forever). Returns
    /// whether events are ready.
    ///
    /// ```no_run
    /// let ready = dsu::sys::Device::open()?.poll(Some(std::time::Duration::ZERO))?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn poll(&self, timeout: Option<std::time::Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let ms: i32 = match deadline {
                None => -1,
                Some(d) => d
                    .saturating_duration_since(std::time::Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32,
            };
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = Errno::last();
                if e == Errno::EINTR {
                    continue;
                }
                return Err(Error::Io {
                    what: "poll on /dev/dsu",
                    source: e.into(),
                });
            }
            return Ok(n > 0 && pfd.revents & libc::POLLIN != 0);
        }
    }

    /// Reads the queued events: blocks until there is one unless the handle is
    /// non-blocking, in which case an empty queue gives an empty vector.
    ///
    /// ```no_run
    /// let dev = dsu::sys::Device::open()?;
    /// dev.set_nonblocking(true)?;
    /// let events = dev.read_events()?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn read_events(&self) -> Result<Vec<Event>> {
        let mut buf = vec![u::dsu_event::default(); 64];
        loop {
            // SAFETY: the buffer is writable for its whole length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len() * size_of::<u::dsu_event>(),
                )
            };
            if n < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    Errno::EAGAIN => return Ok(Vec::new()),
                    e => return Err(self.error(Op::Events, e, &self.segment, None)),
                }
            }
            let count = n as usize / size_of::<u::dsu_event>();
            return Ok(buf[..count].iter().map(Event::from).collect());
        }
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Device {
    /// DSU_IOC_SNAPSHOT: takes a point-in-time image of `segment` (read permission) and
    /// returns it as a [`SnapshotFd`] to read at leisure while the segment's versions keep
    /// running. One snapshot of a segment at a time ([`Error::SnapshotBusy`]); closing
    /// the returned value ends it. [`Segment::snapshot`](crate::snapshot::Segment::snapshot)
    /// writes one to a file.
    ///
    /// ```no_run
    /// let snap = dsu::sys::Device::open()?.snapshot("app")?;
    /// println!("{} pages, {} variables", snap.pages, snap.variables);
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn snapshot(&self, segment: &str) -> Result<SnapshotFd> {
        names::check_segment(segment)?;
        let mut s = u::dsu_snapshot {
            size: size32::<u::dsu_snapshot>(),
            ..Default::default()
        };
        names::fill(&mut s.segment, segment);
        // SAFETY: a valid struct of the encoded size.
        match unsafe { ioctls::snapshot(self.fd.as_raw_fd(), &mut s) } {
            Ok(_) => {}
            Err(Errno::EBUSY) => {
                return Err(Error::SnapshotBusy {
                    segment: segment.into(),
                });
            }
            Err(e) => return Err(self.error(Op::Snapshot, e, segment, None)),
        }
        // SAFETY: the kernel returned a new fd that nothing else owns.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s.fd) };
        Ok(SnapshotFd {
            fd,
            segment: segment.into(),
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            pages: s.pages,
            variables: s.variables,
            heap: (s.heap_reserve != 0).then_some(HeapInfo {
                base: s.heap_base,
                reserve: s.heap_reserve,
                size: s.heap_size,
                created: false,
            }),
            generation: s.generation,
            taken_ns: s.taken_ns,
        })
    }

    /// DSU_IOC_RESTORE: makes this fresh handle a *restoring* handle of a new segment
    /// `segment` with permission bits `mode`, which nobody sees until
    /// [`restore_commit`](Self::restore_commit). A name in use is
    /// [`Error::RestoreTargetExists`], with nothing changed. Dropping the handle before
    /// the commit frees everything restored. [`snapshot::restore`](crate::snapshot::restore)
    /// does the whole restore from a file.
    ///
    /// ```no_run
    /// let mut dev = dsu::sys::Device::open()?;
    /// dev.restore("app", 0o600)?;
    /// // ... restore_var, heap, heap_grow, restore_heap ...
    /// dev.restore_commit()?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn restore(&mut self, segment: &str, mode: u32) -> Result<()> {
        names::check_segment(segment)?;
        check_mode(mode)?;
        let mut r = u::dsu_restore {
            size: size32::<u::dsu_restore>(),
            mode,
            ..Default::default()
        };
        names::fill(&mut r.segment, segment);
        // SAFETY: a valid struct of the encoded size.
        match unsafe { ioctls::restore(self.fd.as_raw_fd(), &r) } {
            Ok(_) => {
                self.segment = segment.into();
                Ok(())
            }
            Err(Errno::EEXIST) => Err(Error::RestoreTargetExists {
                segment: segment.into(),
            }),
            Err(e) => Err(self.error(Op::Restore, e, segment, None)),
        }
    }

    /// DSU_IOC_RESTORE_VAR on a restoring handle: adds one directory entry holding
    /// `var.value` (`None`: all zero). Returns its first page and page count in the new
    /// segment.
    ///
    /// ```no_run
    /// # let mut dev = dsu::sys::Device::open()?;
    /// dev.restore("app", 0o600)?;
    /// let v = dsu::sys::RestoreVar {
    ///     name: "app::N", size: 8, align: 8, fingerprint: 1, value: Some(&[1, 0, 0, 0, 0, 0, 0, 0]),
    ///     type_desc: b"", created_ns: 0, created_label: "1.0",
    /// };
    /// let (first_page, pages) = dev.restore_var(&v)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn restore_var(&self, var: &RestoreVar<'_>) -> Result<(u64, u64)> {
        names::check_variable(var.name)?;
        if !var.created_label.is_empty() {
            names::check_label(var.created_label)?;
        }
        if var.value.is_some_and(|v| v.len() as u64 != var.size) {
            return Err(Error::InvalidName {
                what: "variable",
                name: var.name.into(),
                why: format!("its value is not {} bytes long", var.size),
            });
        }
        let mut r = u::dsu_restore_var {
            size: size32::<u::dsu_restore_var>(),
            var_size: var.size,
            align: var.align,
            fingerprint: var.fingerprint,
            value: var.value.map_or(0, |v| v.as_ptr() as u64),
            type_desc: if var.type_desc.is_empty() {
                0
            } else {
                var.type_desc.as_ptr() as u64
            },
            type_desc_len: var.type_desc.len() as u32,
            created_ns: var.created_ns,
            ..Default::default()
        };
        names::fill(&mut r.created_label, var.created_label);
        names::fill(&mut r.name, var.name);
        // SAFETY: `value` and `type_desc` point to their lengths of bytes across the call.
        match unsafe { ioctls::restore_var(self.fd.as_raw_fd(), &mut r) } {
            Ok(_) => Ok((r.first_page, r.page_count)),
            Err(e) => Err(self.error(Op::RestoreVar, e, &self.segment, Some(var.name))),
        }
    }

    /// DSU_IOC_RESTORE_HEAP on a restoring handle whose heap exists
    /// ([`heap`](Self::heap), [`heap_grow`](Self::heap_grow)): writes `bytes` at heap
    /// `offset`.
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// dev.restore_heap(0, &[0xab; 4096])?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn restore_heap(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        let r = u::dsu_restore_heap {
            size: size32::<u::dsu_restore_heap>(),
            offset,
            length: bytes.len() as u64,
            buf: bytes.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `buf` points to `length` readable bytes across the call.
        match unsafe { ioctls::restore_heap(self.fd.as_raw_fd(), &r) } {
            Ok(_) => Ok(()),
            Err(e) => Err(self.heap_error(Op::RestoreHeap, e)),
        }
    }

    /// DSU_IOC_RESTORE_COMMIT: publishes the restored segment under its name; the handle
    /// is then attached to it. A name taken meanwhile is [`Error::RestoreTargetExists`]
    /// (the handle stays restoring: drop it to free everything).
    ///
    /// ```no_run
    /// # let dev = dsu::sys::Device::open()?;
    /// dev.restore_commit()?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn restore_commit(&self) -> Result<()> {
        // SAFETY: the command takes no argument.
        match unsafe { ioctls::restore_commit(self.fd.as_raw_fd()) } {
            Ok(_) => Ok(()),
            Err(Errno::EEXIST) => Err(Error::RestoreTargetExists {
                segment: self.segment.clone(),
            }),
            Err(e) => Err(self.error(Op::RestoreCommit, e, &self.segment, None)),
        }
    }
}

/// One variable for [`Device::restore_var`].
///
/// ```
/// let v = dsu::sys::RestoreVar {
///     name: "app::N", size: 8, align: 8, fingerprint: 1, value: None,
///     type_desc: b"", created_ns: 0, created_label: "",
/// };
/// assert!(v.value.is_none());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RestoreVar<'a> {
    /// Variable name.
    pub name: &'a str,
    /// Bytes.
    pub size: u64,
    /// Alignment (a power of two, at most the page size).
    pub align: u64,
    /// Type fingerprint.
    pub fingerprint: u64,
    /// Its `size` bytes, or `None` for all zero.
    pub value: Option<&'a [u8]>,
    /// Its type description (empty: none).
    pub type_desc: &'a [u8],
    /// When it was created, CLOCK_REALTIME nanoseconds.
    pub created_ns: u64,
    /// The label of the version that created it, or "".
    pub created_label: &'a str,
}

/// A point-in-time image of a segment ([`Device::snapshot`]): its description at that
/// instant, and the snapshot fd to read its bytes, directory and type descriptions. The
/// snapshot ends when this is dropped.
///
/// ```no_run
/// let snap = dsu::sys::Device::open()?.snapshot("app")?;
/// let mut page = vec![0u8; 4096];
/// snap.read_segment(0, &mut page)?;
/// for v in snap.list_variables()? { println!("{} at page {}", v.name, v.first_page); }
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Debug)]
pub struct SnapshotFd {
    fd: OwnedFd,
    /// The segment's name.
    pub segment: String,
    /// Its permission bits.
    pub mode: u32,
    /// Its owner.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// Segment pages in the image (indexes `0..pages`).
    pub pages: u64,
    /// Directory entries in the image.
    pub variables: u64,
    /// The heap (its `size`: heap bytes in the image), if the segment has one.
    pub heap: Option<HeapInfo>,
    /// The segment's generation (READYs so far).
    pub generation: u64,
    /// CLOCK_REALTIME nanoseconds of the instant the image shows.
    pub taken_ns: u64,
}

impl SnapshotFd {
    /// Fills `buf` with image bytes at `offset` (pread until full or the range ends);
    /// returns the bytes read.
    fn pread(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            // SAFETY: the buffer's tail is writable for its length.
            let n = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    buf[done..].as_mut_ptr().cast(),
                    buf.len() - done,
                    (offset + done as u64) as libc::off_t,
                )
            };
            match n {
                0 => break,
                n if n > 0 => done += n as usize,
                _ if Errno::last() == Errno::EINTR => {}
                _ => {
                    let e = Errno::last();
                    return Err(Error::from_errno(
                        Op::ReadSnapshot,
                        e,
                        &Context {
                            segment: self.segment.clone(),
                            ..Default::default()
                        },
                    ));
                }
            }
        }
        Ok(done)
    }

    /// Reads segment image bytes at `offset` (page `i` is at `i * 4096`) into `buf`, which
    /// must lie inside the image's pages.
    ///
    /// ```no_run
    /// # let snap = dsu::sys::Device::open()?.snapshot("app")?;
    /// let mut page = vec![0u8; 4096];
    /// snap.read_segment(0, &mut page)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn read_segment(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let n = self.pread(offset, buf)?;
        self.short(n, buf.len())
    }

    /// Reads heap image bytes at `offset` from the heap's base into `buf`, which must lie
    /// inside the image's heap size.
    ///
    /// ```no_run
    /// # let snap = dsu::sys::Device::open()?.snapshot("app")?;
    /// let mut bytes = vec![0u8; 64];
    /// snap.read_heap(0, &mut bytes)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn read_heap(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let n = self.pread(u::DSU_HEAP_MMAP_OFFSET + offset, buf)?;
        self.short(n, buf.len())
    }

    fn short(&self, n: usize, want: usize) -> Result<()> {
        if n == want {
            return Ok(());
        }
        Err(Error::Kernel {
            op: Op::ReadSnapshot,
            errno: Errno::EIO,
            hint: "the snapshot fd returned fewer bytes than its image holds (the module and the library disagree)",
        })
    }

    /// LIST_VARIABLES on the snapshot fd: the image's directory, with `first_page` and
    /// `page_count` addressing the image.
    ///
    /// ```no_run
    /// # let snap = dsu::sys::Device::open()?.snapshot("app")?;
    /// let vars = snap.list_variables()?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn list_variables(&self) -> Result<Vec<VariableInfo>> {
        let mut out: Vec<u::dsu_variable_info> = Vec::new();
        loop {
            let cap = 256usize;
            let mut buf = vec![u::dsu_variable_info::default(); cap];
            let mut l = u::dsu_list {
                size: size32::<u::dsu_list>(),
                record_size: size32::<u::dsu_variable_info>(),
                start: out.len() as u32,
                count: cap as u32,
                records: buf.as_mut_ptr() as u64,
                ..Default::default()
            };
            // SAFETY: `records` points to `count` records of `record_size` bytes.
            if let Err(e) = unsafe { ioctls::list_variables(self.fd.as_raw_fd(), &mut l) } {
                return Err(self.fd_error(Op::ListVariables, e));
            }
            buf.truncate(l.count.min(cap as u32) as usize);
            out.extend(buf);
            if l.count == 0 || out.len() >= l.total as usize {
                return Ok(out.iter().map(VariableInfo::from).collect());
            }
        }
    }

    /// READ_VAR with `DSU_READ_TYPE_DESC` on the snapshot fd: the type description of the
    /// image's entry `name` with `fingerprint` (empty if it has none).
    ///
    /// ```no_run
    /// # let snap = dsu::sys::Device::open()?.snapshot("app")?;
    /// let desc = snap.read_type_desc("app::N", 0x1234)?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn read_type_desc(&self, name: &str, fingerprint: u64) -> Result<Vec<u8>> {
        names::check_variable(name)?;
        let mut buf = vec![0u8; crate::typedesc::TYPE_DESC_MAX];
        let mut r = u::dsu_read_var {
            size: size32::<u::dsu_read_var>(),
            flags: u::DSU_READ_TYPE_DESC,
            fingerprint,
            length: buf.len() as u64,
            buf: buf.as_mut_ptr() as u64,
            ..Default::default()
        };
        names::fill(&mut r.name, name);
        // SAFETY: `buf` is writable for `length` bytes across the call.
        match unsafe { ioctls::read_var(self.fd.as_raw_fd(), &mut r) } {
            Ok(_) => {
                buf.truncate((r.length as usize).min(buf.len()));
                Ok(buf)
            }
            Err(e) => Err(self.fd_error(Op::ReadVar, e)),
        }
    }

    fn fd_error(&self, op: Op, errno: Errno) -> Error {
        Error::from_errno(
            op,
            errno,
            &Context {
                segment: self.segment.clone(),
                ..Default::default()
            },
        )
    }
}

impl AsFd for SnapshotFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Sets a `dsu_var`'s name, checking the kernel's rules.
///
/// ```
/// let mut v = dsu_uapi::dsu_var::default();
/// dsu::sys::set_var_name(&mut v, "app::X").unwrap();
/// assert!(dsu::sys::set_var_name(&mut v, "").is_err());
/// ```
pub fn set_var_name(v: &mut u::dsu_var, name: &str) -> Result<()> {
    names::check_variable(name)?;
    names::fill(&mut v.name, name);
    Ok(())
}

/// The error for a RESOLVE that failed with `EEXIST`: the first conflicting entry, and how
/// many others conflict.
///
/// ```
/// let mut v = dsu_uapi::dsu_var { size: 8, fingerprint: 1, found_size: 8, found_fingerprint: 2, ..Default::default() };
/// v.status = dsu_uapi::DSU_VAR_CONFLICT_TYPE;
/// dsu::sys::set_var_name(&mut v, "app::X").unwrap();
/// let e = dsu::sys::conflict_error("s", &[v], &["u64"]);
/// assert!(e.to_string().contains("variable \"app::X\" changed type"));
/// ```
pub fn conflict_error(segment: &str, vars: &[u::dsu_var], type_names: &[&str]) -> Error {
    let conflicts: Vec<usize> = (0..vars.len())
        .filter(|&i| {
            matches!(
                vars[i].status,
                u::DSU_VAR_CONFLICT_SIZE | u::DSU_VAR_CONFLICT_TYPE
            )
        })
        .collect();
    let Some(&i) = conflicts.first() else {
        return Error::Kernel {
            op: Op::Resolve,
            errno: Errno::EEXIST,
            hint: "a conflict was reported but no entry says which",
        };
    };
    let v = &vars[i];
    let name = names::read(&v.name);
    let type_name = type_names
        .get(i)
        .copied()
        .unwrap_or("this type")
        .to_string();
    let others = conflicts.len() - 1;
    let segment = segment.to_string();
    if v.status == u::DSU_VAR_CONFLICT_SIZE {
        Error::SizeChanged {
            segment,
            name,
            type_name,
            ours: v.size,
            theirs: v.found_size,
            detail: Box::default(),
            others,
        }
    } else {
        Error::TypeChanged {
            segment,
            name,
            type_name,
            ours: v.fingerprint,
            theirs: v.found_fingerprint,
            detail: Box::default(),
            others,
        }
    }
}

#[cfg(test)]
mod setattr_tests {
    use super::*;

    #[test]
    fn setattr_sets_the_flags_of_the_fields_given() {
        let s = SetAttr {
            mode: Some(0o640),
            gid: Some(7),
            ..Default::default()
        }
        .to_uapi("app")
        .unwrap();
        assert_eq!(s.flags, u::DSU_SETATTR_MODE | u::DSU_SETATTR_GID);
        assert_eq!((s.mode, s.uid, s.gid), (0o640, 0, 7));
        assert_eq!(s.size as usize, size_of::<u::dsu_setattr>());
        assert_eq!(&s.name[..4], &[b'a' as _, b'p' as _, b'p' as _, 0]);
    }

    #[test]
    fn setattr_refuses_a_bad_mode_and_an_empty_change() {
        let e = SetAttr {
            mode: Some(0o1000),
            ..Default::default()
        }
        .to_uapi("app")
        .unwrap_err();
        assert!(e.to_string().contains("above 0777"), "{e}");
        let e = SetAttr::default().to_uapi("app").unwrap_err();
        assert!(e.to_string().contains("nothing to change"), "{e}");
    }

    #[test]
    fn setattr_eperm_says_who_may() {
        let ctx = Context {
            segment: "app".into(),
            owner: Some((1000, 0o600)),
            ..Default::default()
        };
        let e = Error::from_errno(Op::SetAttr, Errno::EPERM, &ctx).to_string();
        assert_eq!(
            e,
            "only the owner of segment \"app\" (owner 1000, mode 0600) or root can change its mode or set its group to one of the owner's groups, and only root can change its owner"
        );
        let e = Error::from_errno(Op::Destroy, Errno::EPERM, &ctx).to_string();
        assert!(e.ends_with("or root can destroy it"), "{e}");
    }
}
