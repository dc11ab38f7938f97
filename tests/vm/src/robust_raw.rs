//! Raw `/dev/dsu` ioctls for the robustness tests: every call returns the exact errno, so
//! that tests can check the documented error contract, and nothing is checked or retried
//! in userspace. Also the kernel-log watcher and a few shared helpers.

use dsu_uapi::*;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};

/// The result of a raw call.
pub type Sys<T> = Result<T, Errno>;

const fn ioc(dir: u64, nr: u32, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((DSU_IOC_MAGIC as u64) << 8) | nr as u64
}
const IOC_ATTACH: u64 = ioc(3, DSU_IOC_NR_ATTACH, size_of::<dsu_attach>());
const IOC_RESOLVE: u64 = ioc(3, DSU_IOC_NR_RESOLVE, size_of::<dsu_resolve>());
const IOC_BIND: u64 = ioc(3, DSU_IOC_NR_BIND, size_of::<dsu_bind>());
const IOC_LIST_SEGMENTS: u64 = ioc(3, DSU_IOC_NR_LIST_SEGMENTS, size_of::<dsu_list>());
const IOC_LIST_VARIABLES: u64 = ioc(3, DSU_IOC_NR_LIST_VARIABLES, size_of::<dsu_list>());
const IOC_LIST_VERSIONS: u64 = ioc(3, DSU_IOC_NR_LIST_VERSIONS, size_of::<dsu_list>());
const IOC_READ_VAR: u64 = ioc(3, DSU_IOC_NR_READ_VAR, size_of::<dsu_read_var>());
const IOC_DESTROY: u64 = ioc(1, DSU_IOC_NR_DESTROY, size_of::<dsu_destroy>());

/// Page size of the guest.
pub const PAGE: usize = 4096;

fn cbuf<const N: usize>(s: &str) -> [core::ffi::c_char; N] {
    let mut b = [0 as core::ffi::c_char; N];
    for (d, c) in b.iter_mut().zip(s.bytes().take(N - 1)) {
        *d = c as core::ffi::c_char;
    }
    b
}

// C string fields and RESOLVE entries are built as in the kmod tests.
pub use crate::kmod_ioctl::{cstr, var};

/// One open handle of `/dev/dsu`.
#[derive(Debug)]
pub struct Dev(pub OwnedFd);

impl Dev {
    /// Opens `/dev/dsu` read-write.
    pub fn open() -> Sys<Dev> {
        Self::open_flags(libc::O_RDWR)
    }

    /// Opens `/dev/dsu` with the given flags (close-on-exec is added).
    pub fn open_flags(flags: i32) -> Sys<Dev> {
        crate::kmod_ioctl::Dsu::open_flags(flags).map(|d| Dev(d.0))
    }

    /// The raw descriptor.
    pub fn fd(&self) -> i32 {
        self.0.as_raw_fd()
    }

    fn ioctl<T>(&self, cmd: u64, arg: &mut T) -> Sys<()> {
        // SAFETY: arg is a valid uapi struct the kernel may read and write.
        let r = unsafe { libc::ioctl(self.fd(), cmd as libc::c_ulong, arg as *mut T) };
        if r < 0 { Err(Errno::last()) } else { Ok(()) }
    }

    /// ATTACH with DSU_ATTACH_* `flags` and `mode`; returns whether it created the segment.
    pub fn attach(&self, name: &str, flags: u32, mode: u32) -> Sys<bool> {
        let mut a = dsu_attach {
            size: size_of::<dsu_attach>() as u32,
            flags,
            mode,
            created: 0,
            name: cbuf(name),
            ..Default::default()
        };
        self.ioctl(IOC_ATTACH, &mut a)?;
        Ok(a.created != 0)
    }

    /// ATTACH with a struct the caller prepared (its `size` included).
    pub fn attach_struct(&self, a: &mut dsu_attach) -> Sys<()> {
        self.ioctl(IOC_ATTACH, a)
    }

    /// ATTACH with `DSU_ATTACH_OWNER` and `owner` (plus `flags`); returns whether it
    /// created the segment.
    pub fn attach_owner(&self, name: &str, flags: u32, mode: u32, owner: u32) -> Sys<bool> {
        let mut a = dsu_attach {
            size: size_of::<dsu_attach>() as u32,
            flags: flags | DSU_ATTACH_OWNER,
            mode,
            name: cbuf(name),
            owner,
            ..Default::default()
        };
        self.ioctl(IOC_ATTACH, &mut a)?;
        Ok(a.created != 0)
    }

    /// RESOLVE a batch; returns the number added. Statuses and pages are written back.
    pub fn resolve(&self, vars: &mut [dsu_var]) -> Sys<u32> {
        let mut r = dsu_resolve {
            size: size_of::<dsu_resolve>() as u32,
            var_size: size_of::<dsu_var>() as u32,
            count: vars.len() as u32,
            flags: 0,
            vars: vars.as_mut_ptr() as u64,
            added: 0,
            conflicts: 0,
        };
        self.ioctl(IOC_RESOLVE, &mut r)?;
        Ok(r.added)
    }

    /// BIND with a page map; returns the version id.
    pub fn bind(&self, label: &str, pages: &[u64], flags: u32) -> Sys<u64> {
        let mut b = dsu_bind {
            size: size_of::<dsu_bind>() as u32,
            flags,
            page_count: pages.len() as u64,
            pages: pages.as_ptr() as u64,
            version_id: 0,
            label: cbuf(label),
            ..Default::default()
        };
        self.ioctl(IOC_BIND, &mut b)?;
        Ok(b.version_id)
    }

    /// mmap of `len` bytes at offset 0 with the given protection and flags.
    pub fn mmap(&self, len: usize, prot: i32, flags: i32) -> Sys<Map> {
        // SAFETY: no MAP_FIXED: the kernel picks a free range.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, self.fd(), 0) };
        if p == libc::MAP_FAILED {
            Err(Errno::last())
        } else {
            Ok(Map {
                addr: p as *mut u8,
                len,
            })
        }
    }

    /// A read-write shared mapping of `pages` pages.
    pub fn map_rw(&self, pages: usize) -> Sys<Map> {
        self.mmap(
            pages * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
    }

    fn list<R: Copy + Default>(&self, cmd: u64, segment: &str) -> Sys<Vec<R>> {
        let mut out = Vec::new();
        loop {
            let mut buf = vec![R::default(); 256];
            let mut l = dsu_list {
                size: size_of::<dsu_list>() as u32,
                record_size: size_of::<R>() as u32,
                start: out.len() as u32,
                count: buf.len() as u32,
                records: buf.as_mut_ptr() as u64,
                segment: cbuf(segment),
                ..Default::default()
            };
            self.ioctl(cmd, &mut l)?;
            buf.truncate(l.count as usize);
            let n = buf.len();
            out.extend(buf);
            if n == 0 || out.len() >= l.total as usize {
                return Ok(out);
            }
        }
    }

    /// LIST_SEGMENTS.
    pub fn segments(&self) -> Sys<Vec<dsu_segment_info>> {
        self.list(IOC_LIST_SEGMENTS, "")
    }

    /// LIST_VARIABLES of a segment.
    pub fn variables(&self, segment: &str) -> Sys<Vec<dsu_variable_info>> {
        self.list(IOC_LIST_VARIABLES, segment)
    }

    /// LIST_VERSIONS of a segment.
    pub fn versions(&self, segment: &str) -> Sys<Vec<dsu_version_info>> {
        self.list(IOC_LIST_VERSIONS, segment)
    }

    /// The segment's info record, if listed.
    pub fn segment(&self, name: &str) -> Sys<Option<dsu_segment_info>> {
        Ok(self.segments()?.into_iter().find(|s| cstr(&s.name) == name))
    }

    /// READ_VAR of the newest entry of that name (any fingerprint): its bytes.
    pub fn read_var(&self, segment: &str, name: &str, len: usize) -> Sys<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut r = dsu_read_var {
            size: size_of::<dsu_read_var>() as u32,
            flags: DSU_READ_ANY_FINGERPRINT,
            length: len as u64,
            buf: buf.as_mut_ptr() as u64,
            segment: cbuf(segment),
            name: cbuf(name),
            ..Default::default()
        };
        self.ioctl(IOC_READ_VAR, &mut r)?;
        buf.truncate(r.length as usize);
        Ok(buf)
    }

    /// DESTROY a segment.
    pub fn destroy(&self, segment: &str) -> Sys<()> {
        let mut d = dsu_destroy {
            size: size_of::<dsu_destroy>() as u32,
            flags: 0,
            name: cbuf(segment),
        };
        self.ioctl(IOC_DESTROY, &mut d)
    }
}

/// A mapping, unmapped on drop.
#[derive(Debug)]
pub struct Map {
    /// First byte.
    pub addr: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

impl Map {
    /// A fresh shared anonymous page, for processes of a test to share counters.
    pub fn shared_anon_page() -> Map {
        // SAFETY: a new anonymous mapping; no existing memory is touched.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED, "mmap of a shared anonymous page");
        Map {
            addr: addr as *mut u8,
            len: PAGE,
        }
    }

    /// The u64 at byte offset `off`, as an atomic.
    pub fn u64_at(&self, off: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(off + 8 <= self.len && off.is_multiple_of(8));
        // SAFETY: inside the mapping, aligned; the mapping lives as long as &self.
        unsafe { &*(self.addr.add(off) as *const std::sync::atomic::AtomicU64) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: a mapping this value owns.
        unsafe { libc::munmap(self.addr as *mut _, self.len) };
    }
}

/// Destroys a segment if it exists, ignoring errors (test set-up).
pub fn destroy_quietly(name: &str) {
    if let Ok(d) = Dev::open() {
        let _ = d.destroy(name);
    }
}

/// Watches the kernel log from a point on, for reports a test caused.
pub struct KernelLog {
    lines: usize,
}

const REPORT_PATTERNS: [&str; 10] = [
    "BUG:",
    "WARNING:",
    "KASAN",
    "Oops",
    "kernel BUG",
    "possible circular locking",
    "possible recursive locking",
    "general protection fault",
    "UBSAN",
    "unreferenced object",
];

fn dmesg() -> Vec<String> {
    std::process::Command::new("dmesg")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl KernelLog {
    /// Marks the current end of the log.
    pub fn mark() -> Self {
        KernelLog {
            lines: dmesg().len(),
        }
    }

    /// Kernel reports logged since the mark (empty when clean).
    pub fn reports(&self) -> Vec<String> {
        dmesg()
            .into_iter()
            .skip(self.lines)
            .filter(|l| REPORT_PATTERNS.iter().any(|p| l.contains(p)))
            .collect()
    }

    /// Fails if the kernel reported anything since the mark.
    pub fn check(&self) -> crate::TestResult {
        let r = self.reports();
        if r.is_empty() {
            Ok(())
        } else {
            Err(crate::Failure::Fail(format!(
                "kernel reports: {}",
                r.join(" | ")
            )))
        }
    }
}

/// Checks a segment's directory: no overlapping variables, each `ceil(size/PAGE)` pages,
/// all inside the segment, and the segment's page count is exactly the sum of its
/// variables' pages (no page allocated to nothing). Returns the variables.
pub fn check_directory(dev: &Dev, segment: &str) -> Result<Vec<dsu_variable_info>, crate::Failure> {
    let vars = dev.variables(segment)?;
    let info = dev
        .segment(segment)?
        .ok_or_else(|| crate::Failure::Fail(format!("segment {segment} not listed")))?;
    let mut ranges: Vec<(u64, u64, String)> = Vec::new();
    for v in &vars {
        let n = cstr(&v.name);
        if v.page_count != v.size.div_ceil(PAGE as u64) {
            return Err(crate::Failure::Fail(format!(
                "{segment}/{n}: size {} but {} pages",
                v.size, v.page_count
            )));
        }
        ranges.push((v.first_page, v.page_count, n));
    }
    ranges.sort();
    for w in ranges.windows(2) {
        if w[0].0 + w[0].1 > w[1].0 {
            return Err(crate::Failure::Fail(format!(
                "{segment}: {} and {} overlap",
                w[0].2, w[1].2
            )));
        }
    }
    let sum: u64 = vars.iter().map(|v| v.page_count).sum();
    if sum != info.pages || info.variables != vars.len() as u64 {
        return Err(crate::Failure::Fail(format!(
            "{segment}: {} pages and {} variables listed, the variables hold {sum} pages in {} entries",
            info.pages,
            info.variables,
            vars.len()
        )));
    }
    Ok(vars)
}

/// Runs `f` in a forked child and returns its exit status as `Ok(code)` or the signal as
/// `Err(sig)`. The suite is single-threaded, so the child may run anything.
pub fn in_child(f: impl FnOnce() -> i32) -> Result<i32, i32> {
    // SAFETY: single-threaded suite.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: leave without the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    wait_child(pid)
}

/// Waits for a child: `Ok(exit code)` or `Err(signal)`.
pub fn wait_child(pid: i32) -> Result<i32, i32> {
    let mut status = 0;
    // SAFETY: reaps our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        Err(libc::WTERMSIG(status))
    } else {
        Ok(libc::WEXITSTATUS(status))
    }
}
