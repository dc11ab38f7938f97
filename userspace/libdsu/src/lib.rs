//! The C API of dsu: `include/dsu.h` declares these functions and the `DSU_GLOBAL` macro,
//! which places C globals and their descriptors in the same linker sections as
//! `dsu::global!` (`dsu_globals` and `linkme_DSU_GLOBALS`). Link the static library
//! `libdsuc.a` into the C program.
//!
//! ```no_run
//! // The same calls from Rust, for illustration:
//! let rc = unsafe { dsuc::dsu_attach(c"app".as_ptr(), c"1.0".as_ptr(), 0, 0) };
//! if rc < 0 {
//!     let msg = unsafe { std::ffi::CStr::from_ptr(dsuc::dsu_last_error()) };
//!     eprintln!("{}", msg.to_string_lossy());
//! }
//! ```

use dsu::{Error, Version};
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_uint};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::OnceLock;

/// `dsu_attach` flag: the segment must exist.
pub const DSU_MUST_EXIST: c_uint = 1 << 0;
/// `dsu_attach` flag: this call must create the segment.
pub const DSU_MUST_CREATE: c_uint = 1 << 1;
/// `dsu_attach` flag: map every page at attach.
pub const DSU_PREFAULT: c_uint = 1 << 2;

/// Error codes (`enum dsu_error` in dsu.h).
#[allow(missing_docs)]
pub mod code {
    use std::ffi::c_int;
    pub const OK: c_int = 0;
    pub const NOMODULE: c_int = -1;
    pub const ACCESS: c_int = -2;
    pub const NOSEGMENT: c_int = -3;
    pub const EXISTS: c_int = -4;
    pub const CONFLICT: c_int = -5;
    pub const LIMIT: c_int = -6;
    pub const NOMEM: c_int = -7;
    pub const INVAL: c_int = -8;
    pub const DESTROYED: c_int = -9;
    pub const ALREADY: c_int = -10;
    pub const LAYOUT: c_int = -11;
    pub const KERNEL: c_int = -12;
    pub const NOTATTACHED: c_int = -13;
    pub const OWNER: c_int = -14;
}

static VERSION: OnceLock<Version> = OnceLock::new();

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The C error code of an error.
///
/// ```
/// assert_eq!(dsuc::error_code(&dsu::Error::ModuleNotLoaded), dsuc::code::NOMODULE);
/// ```
pub fn error_code(e: &Error) -> c_int {
    match e {
        Error::ModuleNotLoaded | Error::OpenDevice { .. } => code::NOMODULE,
        Error::PermissionDenied { .. } | Error::NotOwner { .. } => code::ACCESS,
        Error::SegmentNotFound { .. } | Error::VariableNotFound { .. } => code::NOSEGMENT,
        Error::SegmentExists { .. } => code::EXISTS,
        Error::OwnedByOther { .. } => code::OWNER,
        Error::TypeChanged { .. } | Error::SizeChanged { .. } => code::CONFLICT,
        Error::Limit { .. } => code::LIMIT,
        Error::OutOfMemory { .. } => code::NOMEM,
        Error::InvalidName { .. } => code::INVAL,
        Error::SegmentDestroyed { .. } => code::DESTROYED,
        Error::AlreadyAttached => code::ALREADY,
        Error::Layout(_)
        | Error::DuplicateName(_)
        | Error::BadDescriptor(_)
        | Error::PageSize(_) => code::LAYOUT,
        _ => code::KERNEL,
    }
}

fn fail(e: Error) -> c_int {
    set_error(&e.to_string());
    error_code(&e)
}

fn guard(f: impl FnOnce() -> c_int) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            set_error("internal error in libdsu (a Rust panic); please report it");
            code::KERNEL
        }
    }
}

fn str_arg(p: *const c_char, what: &str) -> Result<String, c_int> {
    if p.is_null() {
        set_error(&format!("{what} is NULL"));
        return Err(code::INVAL);
    }
    // SAFETY: the caller passes a NUL-terminated string.
    match unsafe { CStr::from_ptr(p) }.to_str() {
        Ok(s) => Ok(s.to_string()),
        Err(_) => {
            set_error(&format!("{what} is not UTF-8"));
            Err(code::INVAL)
        }
    }
}

/// Attaches the program's globals (C and Rust) to `segment` as version `version`.
/// Returns 0 or a negative error code. See `dsu.h`.
///
/// # Safety
///
/// `segment` and `version` are NUL-terminated strings. No other thread may touch the
/// globals during the call, and no lock in a global may be held (the contract of
/// `dsu::Attach::attach_unchecked`).
///
/// ```no_run
/// let rc = unsafe { dsuc::dsu_attach(c"app".as_ptr(), c"1.0".as_ptr(), dsuc::DSU_PREFAULT, 0o600) };
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsu_attach(
    segment: *const c_char,
    version: *const c_char,
    flags: c_uint,
    mode: c_uint,
) -> c_int {
    // SAFETY: the caller's contract is this function's.
    unsafe { attach(segment, version, flags, mode, None) }
}

/// Like [`dsu_attach`], but shares the segment with the user `owner` (a uid) who owns it:
/// an existing segment must be owned by `owner` instead of by this user, and a missing one
/// is created only if `owner` is this user's uid. See `dsu.h`.
///
/// # Safety
///
/// As for [`dsu_attach`].
///
/// ```no_run
/// let rc = unsafe { dsuc::dsu_attach_shared(c"app".as_ptr(), c"2.0".as_ptr(), 0, 0, 1001) };
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsu_attach_shared(
    segment: *const c_char,
    version: *const c_char,
    flags: c_uint,
    mode: c_uint,
    owner: c_uint,
) -> c_int {
    // SAFETY: the caller's contract is this function's.
    unsafe { attach(segment, version, flags, mode, Some(owner)) }
}

/// # Safety
///
/// As for [`dsu_attach`].
unsafe fn attach(
    segment: *const c_char,
    version: *const c_char,
    flags: c_uint,
    mode: c_uint,
    owner: Option<u32>,
) -> c_int {
    guard(|| {
        set_error("");
        let segment = match str_arg(segment, "segment") {
            Ok(s) => s,
            Err(c) => return c,
        };
        let label = match str_arg(version, "version") {
            Ok(s) => s,
            Err(c) => return c,
        };
        if flags & !(DSU_MUST_EXIST | DSU_MUST_CREATE | DSU_PREFAULT) != 0 {
            set_error(&format!("unknown dsu_attach flags {flags:#x}"));
            return code::INVAL;
        }
        if flags & DSU_MUST_EXIST != 0 && flags & DSU_MUST_CREATE != 0 {
            set_error("DSU_MUST_EXIST and DSU_MUST_CREATE exclude each other");
            return code::INVAL;
        }
        let mut a = dsu::Attach::new(segment, label)
            .mode(mode)
            .prefault(flags & DSU_PREFAULT != 0);
        if flags & DSU_MUST_EXIST != 0 {
            a = a.must_exist();
        }
        if flags & DSU_MUST_CREATE != 0 {
            a = a.must_create();
        }
        if let Some(owner) = owner {
            a = a.shared_with_owner(owner);
        }
        // SAFETY: this function's contract is attach_unchecked's (C programs may attach
        // with threads running, as long as none touches the globals).
        match unsafe { a.attach_unchecked() } {
            Ok(v) => {
                let _ = VERSION.set(v);
                code::OK
            }
            Err(e) => fail(e),
        }
    })
}

/// The message of the last failure in this thread, `""` if none.
///
/// ```no_run
/// let msg = unsafe { std::ffi::CStr::from_ptr(dsuc::dsu_last_error()) };
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A fixed description of an error code.
///
/// ```
/// let s = unsafe { std::ffi::CStr::from_ptr(dsuc::dsu_strerror(dsuc::code::CONFLICT)) };
/// assert!(s.to_str().unwrap().contains("changed type"));
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn dsu_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        code::OK => c"success",
        code::NOMODULE => {
            c"dsu kernel module not loaded: /dev/dsu is missing (load it with insmod dsu.ko)"
        }
        code::ACCESS => c"permission denied on the segment",
        code::NOSEGMENT => c"the segment does not exist",
        code::EXISTS => c"the segment already exists",
        code::CONFLICT => c"a variable changed type or size; nothing was changed",
        code::LIMIT => c"a dsu module limit was reached",
        code::NOMEM => c"out of memory",
        code::INVAL => c"invalid segment name, version label, flags or mode",
        code::DESTROYED => c"the segment was destroyed",
        code::ALREADY => c"dsu_attach already succeeded in this process",
        code::LAYOUT => c"the program's globals do not tile the dsu_globals section",
        code::KERNEL => c"error from the dsu module",
        code::NOTATTACHED => c"not attached: call dsu_attach first",
        code::OWNER => {
            c"the segment is owned by another user (share it on purpose with dsu_attach_shared, or choose another name)"
        }
        _ => c"unknown dsu error code",
    };
    s.as_ptr()
}

fn version() -> Result<&'static Version, c_int> {
    VERSION.get().ok_or_else(|| {
        set_error("not attached: call dsu_attach first");
        code::NOTATTACHED
    })
}

/// The version's pollable fd, or `DSU_ENOTATTACHED`.
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

/// The version id, or `DSU_ENOTATTACHED`.
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

/// 1 if a newer version has bound, 0 if not, negative on error.
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
/// negative on error.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        assert_eq!(error_code(&Error::AlreadyAttached), code::ALREADY);
        for c in 0..=13 {
            // SAFETY: dsu_strerror returns a static string.
            let s = unsafe { CStr::from_ptr(dsu_strerror(-c)) }
                .to_str()
                .unwrap();
            assert!(!s.starts_with("unknown"), "{c}");
        }
        assert_eq!(dsu_fd(), code::NOTATTACHED);
        // SAFETY: dsu_last_error returns this thread's string.
        let msg = unsafe { CStr::from_ptr(dsu_last_error()) }
            .to_str()
            .unwrap()
            .to_string();
        assert!(msg.contains("call dsu_attach first"), "{msg}");
    }

    #[test]
    fn bad_arguments() {
        // SAFETY: valid strings.
        let rc = unsafe { dsu_attach(c"bad/name".as_ptr(), c"1".as_ptr(), 0, 0) };
        assert_eq!(rc, code::INVAL);
        // SAFETY: valid strings.
        let rc = unsafe {
            dsu_attach(
                c"ok".as_ptr(),
                c"1".as_ptr(),
                DSU_MUST_EXIST | DSU_MUST_CREATE,
                0,
            )
        };
        assert_eq!(rc, code::INVAL);
        // SAFETY: null is checked.
        let rc = unsafe { dsu_attach(std::ptr::null(), c"1".as_ptr(), 0, 0) };
        assert_eq!(rc, code::INVAL);
    }
}
