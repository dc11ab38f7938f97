//! The C API of dsu: `include/libdsu.h` declares these functions and the `DSU_GLOBAL`
//! macro, which places C globals and their descriptors in the same linker sections as
//! `dsu::global!` (`dsu_globals` and `linkme_DSU_GLOBALS`). Built as `libdsu.so.0` (SONAME
//! `libdsu.so.0`) and `libdsu.a` by `make -C userspace/libdsu` (cargo profile `libdsu`).
//!
//! Every function returns `-errno` on failure; [`dsu_last_error`] then says what happened
//! and what to do, in a thread-local buffer that stays valid (and unchanged) until the
//! thread's next failing call.
//!
//! ```no_run
//! // The same calls from Rust, for illustration (C calls the header's dsu_attach, which
//! // passes the executable's descriptor section; null bounds mean "no globals").
//! let rc = unsafe {
//!     dsuc::dsu_attach_descs(c"app".as_ptr(), c"1.0".as_ptr(), 0, 0,
//!                            std::ptr::null(), std::ptr::null())
//! };
//! if rc < 0 {
//!     let msg = unsafe { std::ffi::CStr::from_ptr(dsuc::dsu_last_error()) };
//!     eprintln!("{}", msg.to_string_lossy());
//! }
//! ```

mod heap;

pub use heap::{DsuHeapStats, dsu_calloc, dsu_free, dsu_heap_stats, dsu_malloc, dsu_realloc};

use dsu::{Error, GlobalDesc, Version};
use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int, c_uint};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::OnceLock;

/// `dsu_attach` flag: the segment must exist.
pub const DSU_MUST_EXIST: c_uint = 1 << 0;
/// `dsu_attach` flag: this call must create the segment.
pub const DSU_MUST_CREATE: c_uint = 1 << 1;
/// `dsu_attach` flag: map every page at attach.
pub const DSU_PREFAULT: c_uint = 1 << 2;
/// `dsu_attach` flag: create the segment's shared heap if it has none, with a window of
/// `dsu::heap::DEFAULT_RESERVE` (1 GiB) of address space. A heap the segment has is
/// mapped with or without it; either way `dsu_attach` installs it as the process's heap,
/// so that `dsu_malloc` and friends allocate in it.
pub const DSU_HEAP: c_uint = 1 << 3;
/// `DSU_CANDIDATE`: attach as a candidate, ready only at [`dsu_ready`].
pub const DSU_CANDIDATE: c_uint = 1 << 4;

static VERSION: OnceLock<Version> = OnceLock::new();

/// Bytes of the last-error buffer, NUL included.
const LAST_ERROR_LEN: usize = 1024;

thread_local! {
    /// This thread's last error message. Its address never changes while the thread
    /// lives; only a failing call rewrites it.
    static LAST_ERROR: RefCell<[u8; LAST_ERROR_LEN]> = const { RefCell::new([0; LAST_ERROR_LEN]) };
}

/// Stores `msg` (truncated at a character boundary to fit) as this thread's last error.
fn set_error(msg: &str) {
    let mut end = msg.len().min(LAST_ERROR_LEN - 1);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    LAST_ERROR.with(|e| {
        let mut buf = e.borrow_mut();
        for (dst, src) in buf.iter_mut().zip(msg[..end].bytes()) {
            *dst = if src == 0 { b' ' } else { src };
        }
        buf[end] = 0;
    });
}

/// The `-errno` value of an error (what the C functions return).
///
/// ```
/// assert_eq!(dsuc::error_code(&dsu::Error::ModuleNotLoaded), -libc::ENODEV);
/// assert_eq!(dsuc::error_code(&dsu::Error::AlreadyAttached), -libc::EALREADY);
/// ```
pub fn error_code(e: &Error) -> c_int {
    let errno = match e {
        Error::ModuleNotLoaded => libc::ENODEV,
        Error::OpenDevice { source, .. } | Error::Io { source, .. } => {
            source.raw_os_error().unwrap_or(libc::EIO)
        }
        Error::InvalidName { .. } => libc::EINVAL,
        Error::PermissionDenied { .. } => libc::EACCES,
        Error::NotOwner { .. } | Error::OwnedByOther { .. } => libc::EPERM,
        Error::SegmentNotFound { .. } | Error::VariableNotFound { .. } => libc::ENOENT,
        Error::SegmentExists { .. }
        | Error::TypeChanged { .. }
        | Error::SizeChanged { .. }
        | Error::MigrationSourceUnknown { .. } => libc::EEXIST,
        Error::SegmentDestroyed { .. } => libc::EIDRM,
        Error::Limit { .. } => libc::ENOSPC,
        Error::OutOfMemory { .. } => libc::ENOMEM,
        Error::Kernel { errno, .. } => *errno as c_int,
        Error::DuplicateName(_) | Error::Layout(_) | Error::BadDescriptor(_) => libc::ENOEXEC,
        Error::PageCount { .. } => libc::EPROTO,
        Error::AlreadyAttached => libc::EALREADY,
        Error::NotQuiescent(_) => libc::EBUSY,
        Error::PageSize(_) => libc::EOPNOTSUPP,
        Error::HeapAddressTaken { .. } => libc::EADDRINUSE,
        Error::SnapshotBusy { .. } => libc::EBUSY,
        Error::RestoreTargetExists { .. } => libc::EEXIST,
        Error::BadSnapshot { .. } => libc::EBADMSG,
        Error::SnapshotIo { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        _ => libc::EIO,
    };
    -errno
}

fn fail(e: Error) -> c_int {
    set_error(&e.to_string());
    error_code(&e)
}

fn fail_with(errno: c_int, msg: &str) -> c_int {
    set_error(msg);
    -errno
}

/// Runs `f`, turning a panic into `-ENOTRECOVERABLE` (the static and shared libraries
/// are built with `panic = "abort"`, so this only matters for the rlib).
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => fail_with(
            libc::ENOTRECOVERABLE,
            "internal error in libdsu (a Rust panic); please report it",
        ),
    }
}

fn str_arg(p: *const c_char, what: &str) -> Result<String, c_int> {
    if p.is_null() {
        return Err(fail_with(libc::EINVAL, &format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    match unsafe { CStr::from_ptr(p) }.to_str() {
        Ok(s) => Ok(s.to_string()),
        Err(_) => Err(fail_with(libc::EINVAL, &format!("{what} is not UTF-8"))),
    }
}

/// The descriptors between `first` and `end` (a linker section's bounds), checked to be
/// a whole number of aligned descriptors.
///
/// # Safety
///
/// `first..end` is null..null or a section holding only descriptors.
unsafe fn descs<'a>(
    first: *const GlobalDesc,
    end: *const GlobalDesc,
) -> Result<&'a [GlobalDesc], c_int> {
    if first.is_null() && end.is_null() {
        return Ok(&[]);
    }
    let size = std::mem::size_of::<GlobalDesc>();
    let bytes = (end as usize).wrapping_sub(first as usize);
    if first.is_null() || end < first || bytes.checked_rem(size) != Some(0) || !first.is_aligned() {
        return Err(fail_with(
            libc::ENOEXEC,
            &format!(
                "the descriptor section {first:p}..{end:p} is not a whole number of {size}-byte descriptors (rebuild the program against this libdsu.h)"
            ),
        ));
    }
    // SAFETY: the caller passes a section of descriptors; bounds and alignment checked.
    Ok(unsafe { std::slice::from_raw_parts(first, bytes / size) })
}

/// Attaches the globals described by the descriptors `first..end` to `segment` as version
/// `version`. C programs call `libdsu.h`'s `dsu_attach`, which passes the bounds of the
/// executable's descriptor section (`__start_linkme_DSU_GLOBALS`, `__stop_...`), so the
/// shared library attaches the executable's globals. Returns 0 or `-errno` (see
/// `libdsu.h`).
///
/// # Safety
///
/// `segment` and `version` are NUL-terminated strings; `first..end` are both null or the
/// bounds of the program's whole descriptor section. No other thread may touch the
/// globals during the call, and no lock in a global may be held (the contract of
/// `dsu::Attach::attach_unchecked`).
///
/// ```no_run
/// let rc = unsafe {
///     dsuc::dsu_attach_descs(c"app".as_ptr(), c"1.0".as_ptr(), dsuc::DSU_PREFAULT, 0o600,
///                            std::ptr::null(), std::ptr::null())
/// };
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsu_attach_descs(
    segment: *const c_char,
    version: *const c_char,
    flags: c_uint,
    mode: c_uint,
    first: *const GlobalDesc,
    end: *const GlobalDesc,
) -> c_int {
    // SAFETY: the caller's contract is this function's.
    unsafe { attach(segment, version, flags, mode, None, first, end) }
}

/// As [`dsu_attach_descs`], sharing the segment with the user `owner` (a uid) who owns it:
/// an existing segment must be owned by `owner` instead of by this user, and a missing one
/// is created only if `owner` is this user's uid. C calls `libdsu.h`'s `dsu_attach_shared`.
///
/// # Safety
///
/// As for [`dsu_attach_descs`].
///
/// ```no_run
/// let rc = unsafe {
///     dsuc::dsu_attach_shared_descs(c"app".as_ptr(), c"2.0".as_ptr(), 0, 0, 1001,
///                                   std::ptr::null(), std::ptr::null())
/// };
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsu_attach_shared_descs(
    segment: *const c_char,
    version: *const c_char,
    flags: c_uint,
    mode: c_uint,
    owner: c_uint,
    first: *const GlobalDesc,
    end: *const GlobalDesc,
) -> c_int {
    // SAFETY: the caller's contract is this function's.
    unsafe { attach(segment, version, flags, mode, Some(owner), first, end) }
}

/// # Safety
///
/// As for [`dsu_attach_descs`].
unsafe fn attach(
    segment: *const c_char,
    version: *const c_char,
    flags: c_uint,
    mode: c_uint,
    owner: Option<u32>,
    first: *const GlobalDesc,
    end: *const GlobalDesc,
) -> c_int {
    guard(|| {
        let segment = match str_arg(segment, "segment") {
            Ok(s) => s,
            Err(c) => return c,
        };
        let label = match str_arg(version, "version") {
            Ok(s) => s,
            Err(c) => return c,
        };
        if flags & !(DSU_MUST_EXIST | DSU_MUST_CREATE | DSU_PREFAULT | DSU_HEAP | DSU_CANDIDATE)
            != 0
        {
            return fail_with(
                libc::EINVAL,
                &format!("unknown dsu_attach flags {flags:#x}"),
            );
        }
        if flags & DSU_MUST_EXIST != 0 && flags & DSU_MUST_CREATE != 0 {
            return fail_with(
                libc::EINVAL,
                "DSU_MUST_EXIST and DSU_MUST_CREATE exclude each other",
            );
        }
        if mode & !0o7777 != 0 {
            return fail_with(
                libc::EINVAL,
                &format!("mode {mode:#o} is not permission bits"),
            );
        }
        // SAFETY: the caller passes the descriptor section's bounds.
        let descs = match unsafe { descs(first, end) } {
            Ok(d) => d,
            Err(c) => return c,
        };
        let mut a = dsu::Attach::new(segment, label)
            .mode(mode)
            .prefault(flags & DSU_PREFAULT != 0)
            .ready_on_attach(flags & DSU_CANDIDATE == 0);
        if flags & DSU_HEAP != 0 {
            a = a.heap(0);
        }
        if flags & DSU_MUST_EXIST != 0 {
            a = a.must_exist();
        }
        if flags & DSU_MUST_CREATE != 0 {
            a = a.must_create();
        }
        if let Some(owner) = owner {
            a = a.shared_with_owner(owner);
        }
        // SAFETY: descs are the program's descriptors (the caller's contract).
        match unsafe { a.attach_with(descs) } {
            Ok(v) => {
                let _ = VERSION.set(v);
                0
            }
            Err(e) => fail(e),
        }
    })
}

/// The message of this thread's last failing call, `""` if none. The buffer belongs to
/// the library and stays unchanged until the thread's next failing call.
///
/// ```
/// let before = dsuc::dsu_last_error();
/// assert_eq!(dsuc::dsu_fd(), -libc::EBADFD);
/// assert_eq!(dsuc::dsu_last_error(), before, "same buffer");
/// let msg = unsafe { std::ffi::CStr::from_ptr(before) };
/// assert!(msg.to_str().unwrap().contains("dsu_attach"));
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.as_ptr() as *const c_char)
}

/// A fixed description of a `-errno` value as the dsu functions use it (for other
/// values, the C library's `strerror`).
///
/// ```
/// let s = unsafe { std::ffi::CStr::from_ptr(dsuc::dsu_strerror(-libc::EEXIST)) };
/// assert!(s.to_str().unwrap().contains("changed type"));
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code.checked_neg().unwrap_or(0) {
        0 => c"success",
        libc::ENODEV => {
            c"dsu kernel module not loaded: /dev/dsu is missing (load it with insmod dsu.ko)"
        }
        libc::EACCES => c"permission denied on the segment or /dev/dsu",
        libc::EPERM => {
            c"the segment is owned by another user (share it on purpose with dsu_attach_shared, or choose another name)"
        }
        libc::ENOENT => c"the segment does not exist (DSU_MUST_EXIST)",
        libc::EEXIST => {
            c"the segment already exists (DSU_MUST_CREATE, or dsu_restore onto an existing name), or a variable changed type or size (nothing was changed)"
        }
        libc::EBADMSG => {
            c"the snapshot file is truncated, corrupt or of a newer format (nothing was restored; dsu_last_error says which)"
        }
        libc::ENOSPC => c"a dsu module limit was reached",
        libc::ENOMEM => c"out of memory",
        libc::EINVAL => c"invalid segment name, version label, flags or mode",
        libc::EIDRM => c"the segment was destroyed",
        libc::EALREADY => c"dsu_attach already succeeded in this process",
        libc::EBUSY => {
            c"a dsu::sync::MutexGuard is held (release every lock in a global first), or a snapshot of the segment is in progress (retry)"
        }
        libc::ENOEXEC => {
            c"the program's globals or descriptors are malformed (they do not tile the dsu_globals section)"
        }
        libc::EBADFD => c"not attached: call dsu_attach first",
        libc::EOPNOTSUPP => c"dsu globals need 4096-byte pages",
        libc::EPROTO => c"the dsu module and libdsu disagree (update one of them)",
        libc::EADDRINUSE => {
            c"the segment's shared heap lives at an address this process already uses (nothing was changed)"
        }
        libc::ENOTRECOVERABLE => c"internal error in libdsu",
        // SAFETY: strerror returns a string that stays valid at least until the next
        // strerror call; glibc's messages for known errnos are static.
        e if e > 0 => return unsafe { libc::strerror(e) },
        _ => c"unknown dsu error code (not a -errno value)",
    };
    s.as_ptr()
}

fn version() -> Result<&'static Version, c_int> {
    VERSION
        .get()
        .ok_or_else(|| fail_with(libc::EBADFD, "not attached: call dsu_attach first"))
}

/// The version's pollable fd, or `-EBADFD` before a successful `dsu_attach`.
///
/// ```no_run
/// let fd = dsuc::dsu_fd();
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_fd() -> c_int {
    match version() {
        Ok(v) => {
            let fd: BorrowedFd<'_> = v.as_fd();
            fd.as_raw_fd()
        }
        Err(c) => c,
    }
}

/// The version id, or `-EBADFD` before a successful `dsu_attach`.
///
/// ```no_run
/// let id = dsuc::dsu_version_id();
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_version_id() -> i64 {
    match version() {
        Ok(v) => v.id().map(|i| i as i64).unwrap_or(0),
        Err(c) => c as i64,
    }
}

/// Commits a candidate (`DSU_CANDIDATE`): 0, `-errno` on error.
///
/// ```no_run
/// assert_eq!(dsuc::dsu_ready(), 0);
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_ready() -> c_int {
    guard(|| match version() {
        Ok(v) => match v.ready() {
            Ok(()) => 0,
            Err(e) => fail(e),
        },
        Err(c) => c,
    })
}

/// Reclaims (or with `dry_run` counts) the segment's garbage: how many variables, or
/// `-errno`. `min_age < 0`: the module's `gc_min_age`.
///
/// ```no_run
/// let n = dsuc::dsu_collect_garbage(-1, 1);
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_collect_garbage(min_age: c_int, dry_run: c_int) -> c_int {
    guard(|| match version() {
        Ok(v) => {
            let options = dsu::sys::GcOptions {
                dry_run: dry_run != 0,
                min_age: u32::try_from(min_age).ok(),
            };
            match v.collect_garbage(options) {
                Ok(r) => r.total.min(i32::MAX as u32) as c_int,
                Err(e) => fail(e),
            }
        }
        Err(c) => c,
    })
}

/// 1 if a newer version is ready (and live), 0 if not, `-errno` on error.
///
/// ```no_run
/// if dsuc::dsu_newer_version() == 1 { /* drain */ }
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_newer_version() -> c_int {
    guard(|| match version() {
        Ok(v) => match v.newer_version() {
            Ok(Some(_)) => 1,
            Ok(None) => 0,
            Err(e) => fail(e),
        },
        Err(c) => c,
    })
}

/// Waits up to `timeout_ms` (negative: forever) for a newer version: 1, 0 on timeout,
/// `-errno` on error.
///
/// ```no_run
/// let r = dsuc::dsu_wait_for_newer(1000);
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_wait_for_newer(timeout_ms: c_int) -> c_int {
    guard(|| match version() {
        Ok(v) => {
            let t = (timeout_ms >= 0).then(|| std::time::Duration::from_millis(timeout_ms as u64));
            match v.wait_for_newer(t) {
                Ok(Some(_)) => 1,
                Ok(None) => 0,
                Err(e) => fail(e),
            }
        }
        Err(c) => c,
    })
}

/// `dsu_snapshot` flag: compress the file's blocks with zstd.
pub const DSU_SNAPSHOT_COMPRESS: c_uint = 1 << 0;

/// A path argument: any bytes but NUL (paths need not be UTF-8).
fn path_arg(p: *const c_char, what: &str) -> Result<std::path::PathBuf, c_int> {
    use std::os::unix::ffi::OsStrExt;
    if p.is_null() {
        return Err(fail_with(libc::EINVAL, &format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    if bytes.is_empty() {
        return Err(fail_with(libc::EINVAL, &format!("{what} is empty")));
    }
    Ok(std::ffi::OsStr::from_bytes(bytes).into())
}

/// Writes a point-in-time snapshot of `segment` to the file `path`, atomically (a
/// temporary file beside it, fsync, rename, fsync of the directory), while its versions
/// keep running. `flags`: 0 or `DSU_SNAPSHOT_COMPRESS`. Needs no `dsu_attach`. Returns 0
/// or `-errno`: `-ENOENT` (no such segment), `-EACCES`, `-EBUSY` (another snapshot of it
/// is in progress), `-ENOMEM`, or the file's errno; [`dsu_last_error`] says more.
///
/// # Safety
///
/// `segment` and `path` are NUL-terminated strings.
///
/// ```no_run
/// let rc = unsafe { dsuc::dsu_snapshot(c"app".as_ptr(), c"/tmp/app.dsusnap".as_ptr(), 0) };
/// assert_eq!(rc, 0);
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsu_snapshot(
    segment: *const c_char,
    path: *const c_char,
    flags: c_uint,
) -> c_int {
    guard(|| {
        let segment = match str_arg(segment, "segment") {
            Ok(s) => s,
            Err(c) => return c,
        };
        let path = match path_arg(path, "path") {
            Ok(p) => p,
            Err(c) => return c,
        };
        if flags & !DSU_SNAPSHOT_COMPRESS != 0 {
            return fail_with(
                libc::EINVAL,
                &format!("unknown dsu_snapshot flags {flags:#x}"),
            );
        }
        let options = if flags & DSU_SNAPSHOT_COMPRESS != 0 {
            dsu::snapshot::SaveOptions::compressed()
        } else {
            dsu::snapshot::SaveOptions::default()
        };
        match dsu::Segment::open(&segment).and_then(|s| s.snapshot_with(&path, &options)) {
            Ok(_) => 0,
            Err(e) => fail(e),
        }
    })
}

/// Recreates a segment from the snapshot file `path`, under `segment` (or, with `NULL`,
/// the name it was saved under), owned by the caller with the image's mode, before any
/// version attaches; `dsu_attach` then finds the globals common. `flags` must be 0.
/// Returns 0 or `-errno`: `-EEXIST` (the name is taken; nothing changed), `-EBADMSG` (the
/// file is truncated, corrupt or of a newer format; nothing created), `-ENOENT` (no such
/// file), `-ENOMEM`, `-ENOSPC`; [`dsu_last_error`] says what is wrong and what to do.
///
/// # Safety
///
/// `path` is a NUL-terminated string; `segment` one or `NULL`.
///
/// ```no_run
/// let rc = unsafe { dsuc::dsu_restore(c"/tmp/app.dsusnap".as_ptr(), std::ptr::null(), 0) };
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsu_restore(
    path: *const c_char,
    segment: *const c_char,
    flags: c_uint,
) -> c_int {
    guard(|| {
        let path = match path_arg(path, "path") {
            Ok(p) => p,
            Err(c) => return c,
        };
        let segment = if segment.is_null() {
            None
        } else {
            match str_arg(segment, "segment") {
                Ok(s) => Some(s),
                Err(c) => return c,
            }
        };
        if flags != 0 {
            return fail_with(
                libc::EINVAL,
                &format!("unknown dsu_restore flags {flags:#x}"),
            );
        }
        match dsu::snapshot::restore(&path, segment.as_deref()) {
            Ok(_) => 0,
            Err(e) => fail(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: dsu_last_error returns this thread's NUL-terminated buffer.
        unsafe { CStr::from_ptr(dsu_last_error()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn codes_are_errnos_with_messages() {
        for e in [
            libc::ENODEV,
            libc::EACCES,
            libc::EPERM,
            libc::ENOENT,
            libc::EEXIST,
            libc::ENOSPC,
            libc::ENOMEM,
            libc::EINVAL,
            libc::EIDRM,
            libc::EALREADY,
            libc::EBUSY,
            libc::ENOEXEC,
            libc::EBADFD,
            libc::EOPNOTSUPP,
            libc::EPROTO,
            libc::EADDRINUSE,
            libc::ENOTRECOVERABLE,
        ] {
            // SAFETY: dsu_strerror returns a NUL-terminated string.
            let s = unsafe { CStr::from_ptr(dsu_strerror(-e)) }
                .to_str()
                .unwrap();
            assert!(!s.starts_with("unknown"), "{e}: {s}");
        }
        // SAFETY: as above.
        let other = unsafe { CStr::from_ptr(dsu_strerror(-libc::EINTR)) };
        assert!(!other.to_bytes().is_empty());
        // SAFETY: as above.
        let bad = unsafe { CStr::from_ptr(dsu_strerror(5)) }.to_str().unwrap();
        assert!(bad.starts_with("unknown"), "{bad}");
        assert_eq!(dsu_fd(), -libc::EBADFD);
        assert!(last_error().contains("call dsu_attach first"));
    }

    #[test]
    fn bad_arguments_are_einval() {
        let null = std::ptr::null();
        // SAFETY: valid strings, no descriptors.
        let rc = unsafe { dsu_attach_descs(c"bad/name".as_ptr(), c"1".as_ptr(), 0, 0, null, null) };
        assert_eq!(rc, -libc::EINVAL);
        let flags = DSU_MUST_EXIST | DSU_MUST_CREATE;
        // SAFETY: valid strings, no descriptors.
        let rc = unsafe { dsu_attach_descs(c"ok".as_ptr(), c"1".as_ptr(), flags, 0, null, null) };
        assert_eq!(rc, -libc::EINVAL);
        // SAFETY: null is checked.
        let rc = unsafe { dsu_attach_descs(null.cast(), c"1".as_ptr(), 0, 0, null, null) };
        assert_eq!(rc, -libc::EINVAL);
        // SAFETY: valid strings, no descriptors.
        let rc = unsafe { dsu_attach_descs(c"ok".as_ptr(), c"1".as_ptr(), 0, 0o10000, null, null) };
        assert_eq!(rc, -libc::EINVAL);
        // DSU_HEAP and DSU_CANDIDATE are known flags; the bit above them is not.
        let bad = c"bad/name".as_ptr();
        let known = DSU_HEAP | DSU_CANDIDATE;
        // SAFETY: valid strings, no descriptors.
        let rc = unsafe { dsu_attach_descs(bad, c"1".as_ptr(), known, 0, null, null) };
        assert_eq!(rc, -libc::EINVAL);
        assert!(last_error().contains("bad/name"), "{}", last_error());
        // SAFETY: valid strings, no descriptors.
        let rc = unsafe {
            dsu_attach_descs(
                c"ok".as_ptr(),
                c"1".as_ptr(),
                DSU_CANDIDATE << 1,
                0,
                null,
                null,
            )
        };
        assert_eq!(rc, -libc::EINVAL);
        assert!(
            last_error().contains("unknown dsu_attach flags"),
            "{}",
            last_error()
        );
    }

    #[test]
    fn malformed_section_bounds_are_enoexec() {
        let d = std::ptr::dangling::<GlobalDesc>();
        let half = (d as usize + 8) as *const GlobalDesc;
        // SAFETY: the bounds are refused before being read.
        let rc = unsafe { dsu_attach_descs(c"ok".as_ptr(), c"1".as_ptr(), 0, 0, d, half) };
        assert_eq!(rc, -libc::ENOEXEC);
        assert!(
            last_error().contains("descriptor section"),
            "{}",
            last_error()
        );
    }

    #[test]
    fn last_error_stays_until_the_next_failure() {
        assert_eq!(dsu_fd(), -libc::EBADFD);
        let p = dsu_last_error();
        let msg = last_error();
        // Successful calls leave the buffer alone.
        // SAFETY: returns a static string.
        let _ = unsafe { CStr::from_ptr(dsu_strerror(0)) };
        assert_eq!(last_error(), msg);
        // A failure rewrites it in place.
        // SAFETY: valid strings, no descriptors.
        let rc = unsafe {
            dsu_attach_descs(
                c"bad/x".as_ptr(),
                c"1".as_ptr(),
                0,
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, -libc::EINVAL);
        assert_eq!(dsu_last_error(), p, "the buffer does not move");
        assert!(last_error().contains("bad/x"), "{}", last_error());
        // Long messages are cut at a character boundary.
        set_error(&"é".repeat(LAST_ERROR_LEN));
        assert!(last_error().len() < LAST_ERROR_LEN);
    }
}
