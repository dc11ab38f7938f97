//! A thin layer over the `/dev/dsu` ioctls (`uapi/dsu.h`), so that the benchmark can
//! attach versions of any state size and variable count at run time, which compile-time
//! `dsu::global!`s cannot do. Every call is one system call; nothing is cached.

use dsu_uapi::{dsu_attach, dsu_bind, dsu_destroy, dsu_extent, dsu_resolve, dsu_snapshot, dsu_var};
use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The device.
pub const DEVICE: &str = "/dev/dsu";
/// The page size the module maps (x86_64).
pub const PAGE: usize = 4096;

const fn iowr(nr: u32, size: usize) -> libc::c_ulong {
    // _IOWR: direction read|write (3) in bits 30..31, size in 16..29, type in 8..15.
    ((3u32 << 30) | ((size as u32) << 16) | (dsu_uapi::DSU_IOC_MAGIC << 8) | nr) as libc::c_ulong
}
const fn iow(nr: u32, size: usize) -> libc::c_ulong {
    ((1u32 << 30) | ((size as u32) << 16) | (dsu_uapi::DSU_IOC_MAGIC << 8) | nr) as libc::c_ulong
}
const ATTACH: libc::c_ulong = iowr(dsu_uapi::DSU_IOC_NR_ATTACH, size_of::<dsu_attach>());
const RESOLVE: libc::c_ulong = iowr(dsu_uapi::DSU_IOC_NR_RESOLVE, size_of::<dsu_resolve>());
const BIND: libc::c_ulong = iowr(dsu_uapi::DSU_IOC_NR_BIND, size_of::<dsu_bind>());
const DESTROY: libc::c_ulong = iow(dsu_uapi::DSU_IOC_NR_DESTROY, size_of::<dsu_destroy>());
const SNAPSHOT: libc::c_ulong = iowr(dsu_uapi::DSU_IOC_NR_SNAPSHOT, size_of::<dsu_snapshot>());

/// Whether `/dev/dsu` exists here.
pub fn available() -> bool {
    std::path::Path::new(DEVICE).exists()
}

fn copy_name(dst: &mut [libc::c_char], name: &str) {
    assert!(name.len() < dst.len(), "name too long: {name}");
    for (d, s) in dst.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
}

/// An open file of `/dev/dsu`: a handle, and after [`Handle::bind`] a version.
pub struct Handle {
    fd: OwnedFd,
}

impl Handle {
    /// Opens the device.
    pub fn open() -> io::Result<Self> {
        // SAFETY: the path is a NUL-terminated literal; open has no other preconditions.
        let fd = unsafe { libc::open(c"/dev/dsu".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Handle { fd })
    }

    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: `arg` is a live, writable struct of the size the request encodes; the
        // pointers inside it (if any) are set by the callers to live buffers.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), request, arg as *mut T) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// DSU_IOC_ATTACH; returns whether this call created the segment.
    pub fn attach(&self, segment: &str, flags: u32) -> io::Result<bool> {
        let mut a = dsu_attach {
            size: size_of::<dsu_attach>() as u32,
            flags,
            ..Default::default()
        };
        copy_name(&mut a.name, segment);
        self.ioctl(ATTACH, &mut a)?;
        Ok(a.created != 0)
    }

    /// DSU_IOC_RESOLVE of a whole batch; returns the number of entries added. The entries'
    /// `status`, `first_page` and `page_count` are filled in. A batch may be resolved again:
    /// its output fields are cleared first (the kernel requires them zero on input).
    pub fn resolve(&self, vars: &mut [dsu_var]) -> io::Result<u32> {
        for v in vars.iter_mut() {
            (v.status, v.first_page, v.page_count) = (0, 0, 0);
            (v.found_size, v.found_fingerprint) = (0, 0);
        }
        let mut r = dsu_resolve {
            size: size_of::<dsu_resolve>() as u32,
            var_size: size_of::<dsu_var>() as u32,
            count: vars.len() as u32,
            vars: vars.as_mut_ptr() as u64,
            ..Default::default()
        };
        self.ioctl(RESOLVE, &mut r)?;
        Ok(r.added)
    }

    /// DSU_IOC_BIND with the page map `pages`; returns the version id.
    pub fn bind(&self, pages: &[u64], flags: u32, label: &str) -> io::Result<u64> {
        let mut b = dsu_bind {
            size: size_of::<dsu_bind>() as u32,
            flags,
            page_count: pages.len() as u64,
            pages: pages.as_ptr() as u64,
            ..Default::default()
        };
        copy_name(&mut b.label, label);
        self.ioctl(BIND, &mut b)?;
        Ok(b.version_id)
    }

    /// DSU_IOC_BIND with the map as extents, as `dsu::attach` binds.
    pub fn bind_extents(&self, extents: &[dsu_extent], flags: u32, label: &str) -> io::Result<u64> {
        let mut b = dsu_bind {
            size: size_of::<dsu_bind>() as u32,
            flags,
            page_count: extents.iter().map(|e| e.page_count).sum(),
            extents: extents.as_ptr() as u64,
            extent_count: extents.len() as u64,
            ..Default::default()
        };
        copy_name(&mut b.label, label);
        self.ioctl(BIND, &mut b)?;
        Ok(b.version_id)
    }

    /// mmap of this (bound) handle with `MAP_SHARED | MAP_FIXED` over `at`, a reservation
    /// exactly as long as the page map.
    pub fn map_fixed(&self, at: &Reservation) -> io::Result<()> {
        // SAFETY: the range is our own reservation, which nothing else uses; MAP_FIXED
        // replaces it in place.
        let p = unsafe {
            libc::mmap(
                at.ptr as *mut c_void,
                at.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// DSU_IOC_SNAPSHOT of a segment by name: the snapshot fd (closing it ends the
    /// snapshot) and the out fields.
    pub fn snapshot(&self, segment: &str) -> io::Result<(OwnedFd, dsu_snapshot)> {
        let mut s = dsu_snapshot {
            size: size_of::<dsu_snapshot>() as u32,
            ..Default::default()
        };
        copy_name(&mut s.segment, segment);
        self.ioctl(SNAPSHOT, &mut s)?;
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok((unsafe { OwnedFd::from_raw_fd(s.fd) }, s))
    }

    /// DSU_IOC_DESTROY of a segment by name (works on a handle in any state).
    pub fn destroy(&self, segment: &str) -> io::Result<()> {
        let mut d = dsu_destroy {
            size: size_of::<dsu_destroy>() as u32,
            ..Default::default()
        };
        copy_name(&mut d.name, segment);
        self.ioctl(DESTROY, &mut d)
    }
}

/// Destroys a segment if it exists (leftover from an interrupted run).
pub fn destroy_quietly(segment: &str) {
    if let Ok(h) = Handle::open() {
        let _ = h.destroy(segment);
    }
}

/// A variable entry for RESOLVE: `size` bytes, page-aligned like `dsu::global!`s.
pub fn var(name: &str, size: u64, fingerprint: u64) -> dsu_var {
    let mut v = dsu_var {
        size,
        align: 8,
        fingerprint,
        ..Default::default()
    };
    copy_name(&mut v.name, name);
    v
}

/// The page map of a resolved batch: its variables' pages, one after the other, as
/// `dsu::attach` lays out the global section.
pub fn page_map(vars: &[dsu_var]) -> Vec<u64> {
    let total: u64 = vars.iter().map(|v| v.page_count).sum();
    let mut map = Vec::with_capacity(total as usize);
    for v in vars {
        map.extend(v.first_page..v.first_page + v.page_count);
    }
    map
}

/// The same map as extents: one per variable, merged where a variable's pages continue
/// the previous one's (what `dsu::attach` sends).
pub fn extents(vars: &[dsu_var]) -> Vec<dsu_extent> {
    let mut out: Vec<dsu_extent> = Vec::with_capacity(vars.len());
    for v in vars.iter().filter(|v| v.page_count > 0) {
        if let Some(last) = out.last_mut()
            && last.first_page + last.page_count == v.first_page
        {
            last.page_count += v.page_count;
            continue;
        }
        out.push(dsu_extent {
            first_page: v.first_page,
            page_count: v.page_count,
        });
    }
    out
}

/// Pages a variable of `size` bytes occupies.
pub fn pages_for(size: u64) -> u64 {
    size.div_ceil(PAGE as u64)
}

/// An anonymous memory range, unmapped on drop. [`Reservation::new`] gives an
/// inaccessible placeholder (like a global section that dsu maps over);
/// [`Reservation::anon`] gives ordinary private memory, untouched.
pub struct Reservation {
    /// Start (page-aligned).
    pub ptr: *mut u8,
    /// Length in bytes (whole pages).
    pub len: usize,
}

impl Reservation {
    fn map(len: usize, prot: libc::c_int) -> io::Result<Self> {
        let len = len.div_ceil(PAGE) * PAGE;
        // SAFETY: a new anonymous mapping at an address of the kernel's choice.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Reservation {
            ptr: p as *mut u8,
            len,
        })
    }

    /// An inaccessible reservation of `len` bytes (rounded up to pages).
    pub fn new(len: usize) -> io::Result<Self> {
        Self::map(len, libc::PROT_NONE)
    }

    /// Readable and writable private anonymous memory, not yet touched.
    pub fn anon(len: usize) -> io::Result<Self> {
        Self::map(len, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// The range as bytes. The caller must have mapped it readable.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the range is mapped for our lifetime; callers only use it once readable.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The range as mutable bytes. The caller must have mapped it writable.
    #[allow(clippy::mut_from_ref)]
    pub fn bytes_mut(&self) -> &mut [u8] {
        // SAFETY: as in `bytes`; the benchmark never holds two of these slices at once.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Reads the u64 at byte `offset` (volatile, so that the access happens).
    pub fn read(&self, offset: usize) -> u64 {
        assert!(offset + 8 <= self.len);
        // SAFETY: in range and 8-aligned (offsets are multiples of 8 by construction).
        unsafe { std::ptr::read_volatile(self.ptr.add(offset) as *const u64) }
    }

    /// Writes the u64 at byte `offset` (volatile).
    pub fn write(&self, offset: usize, value: u64) {
        assert!(offset + 8 <= self.len);
        // SAFETY: as in `read`.
        unsafe { std::ptr::write_volatile(self.ptr.add(offset) as *mut u64, value) }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: the range is ours; whatever is mapped there now (a dsu version or
        // anonymous memory) goes with it.
        unsafe { libc::munmap(self.ptr as *mut c_void, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(first_page: u64, page_count: u64) -> dsu_var {
        dsu_var {
            first_page,
            page_count,
            ..Default::default()
        }
    }

    #[test]
    fn extents_merge_contiguous_variables() {
        let vars = [
            resolved(0, 2),
            resolved(2, 1),
            resolved(9, 4),
            resolved(5, 1),
        ];
        let e = extents(&vars);
        let pairs: Vec<(u64, u64)> = e.iter().map(|e| (e.first_page, e.page_count)).collect();
        assert_eq!(pairs, vec![(0, 3), (9, 4), (5, 1)]);
        let flat: Vec<u64> = e
            .iter()
            .flat_map(|e| e.first_page..e.first_page + e.page_count)
            .collect();
        assert_eq!(flat, page_map(&vars));
    }
}
