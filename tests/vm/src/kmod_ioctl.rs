//! Raw `/dev/dsu` ioctls for the kernel module tests, through `nix`'s ioctl macros and the
//! `dsu-uapi` structs. Every call returns the exact errno; nothing is retried or checked in
//! userspace, so tests can assert the module's error contract.

use dsu_uapi::*;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// The result of a raw call.
pub type Sys<T> = Result<T, Errno>;

/// Page size of the guest.
pub const PAGE: usize = 4096;

mod raw {
    use dsu_uapi::*;
    nix::ioctl_readwrite!(attach, DSU_IOC_MAGIC, DSU_IOC_NR_ATTACH, dsu_attach);
    nix::ioctl_readwrite!(resolve, DSU_IOC_MAGIC, DSU_IOC_NR_RESOLVE, dsu_resolve);
    nix::ioctl_readwrite!(bind, DSU_IOC_MAGIC, DSU_IOC_NR_BIND, dsu_bind);
    nix::ioctl_readwrite!(
        list_segments,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_LIST_SEGMENTS,
        dsu_list
    );
    nix::ioctl_readwrite!(
        list_variables,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_LIST_VARIABLES,
        dsu_list
    );
    nix::ioctl_readwrite!(
        list_versions,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_LIST_VERSIONS,
        dsu_list
    );
    nix::ioctl_readwrite!(read_var, DSU_IOC_MAGIC, DSU_IOC_NR_READ_VAR, dsu_read_var);
    nix::ioctl_write_ptr!(destroy, DSU_IOC_MAGIC, DSU_IOC_NR_DESTROY, dsu_destroy);
    nix::ioctl_write_ptr!(setattr, DSU_IOC_MAGIC, DSU_IOC_NR_SETATTR, dsu_setattr);
    nix::ioctl_readwrite!(heap, DSU_IOC_MAGIC, DSU_IOC_NR_HEAP, dsu_heap);
    nix::ioctl_readwrite!(
        heap_grow,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_HEAP_GROW,
        dsu_heap_grow
    );
    nix::ioctl_write_ptr!(
        heap_discard,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_HEAP_DISCARD,
        dsu_heap_discard
    );
    nix::ioctl_readwrite!(
        read_heap,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_READ_HEAP,
        dsu_read_heap
    );
    nix::ioctl_readwrite!(gc, DSU_IOC_MAGIC, DSU_IOC_NR_GC, dsu_gc);
}

/// Which ioctl, for calls with a raw (possibly bad) argument pointer.
#[derive(Clone, Copy, Debug)]
pub enum Ioc {
    /// DSU_IOC_ATTACH.
    Attach,
    /// DSU_IOC_RESOLVE.
    Resolve,
    /// DSU_IOC_BIND.
    Bind,
    /// DSU_IOC_LIST_SEGMENTS.
    ListSegments,
    /// DSU_IOC_READ_VAR.
    ReadVar,
    /// DSU_IOC_DESTROY.
    Destroy,
}

/// A NUL-padded C string field.
pub fn cname<const N: usize>(s: &str) -> [core::ffi::c_char; N] {
    let mut b = [0 as core::ffi::c_char; N];
    for (d, c) in b.iter_mut().zip(s.bytes()) {
        *d = c as core::ffi::c_char;
    }
    b
}

/// A C string field as a Rust string.
pub fn cstr(s: &[core::ffi::c_char]) -> String {
    s.iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect()
}

/// A segment name unique in this run.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A RESOLVE entry of `size` bytes (align 8) with optional initial bytes, which must
/// outlive the call.
pub fn var(name: &str, size: u64, fingerprint: u64, init: Option<&[u8]>) -> dsu_var {
    dsu_var {
        size,
        align: 8,
        fingerprint,
        init: init.map(|b| b.as_ptr() as u64).unwrap_or(0),
        name: cname(name),
        ..Default::default()
    }
}

/// One open file of `/dev/dsu`.
pub struct Dsu(pub OwnedFd);

/// A shared mapping of a bound handle, unmapped on drop.
pub struct Map {
    /// Start.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

impl Map {
    /// The `u64` at byte `offset`, read volatile.
    pub fn get(&self, offset: usize) -> u64 {
        assert!(offset + 8 <= self.len);
        // SAFETY: In bounds of a live mapping.
        unsafe { std::ptr::read_volatile(self.ptr.add(offset).cast::<u64>()) }
    }

    /// Writes the `u64` at byte `offset`.
    pub fn set(&self, offset: usize, v: u64) {
        assert!(offset + 8 <= self.len);
        // SAFETY: In bounds of a live mapping.
        unsafe { std::ptr::write_volatile(self.ptr.add(offset).cast::<u64>(), v) }
    }

    /// The atomic `u64` at byte `offset`.
    pub fn atomic(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(offset + 8 <= self.len && offset.is_multiple_of(8));
        // SAFETY: In bounds and aligned, in a live shared mapping.
        unsafe { &*self.ptr.add(offset).cast::<std::sync::atomic::AtomicU64>() }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: We own this mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One readable and writable page followed by an inaccessible (`PROT_NONE`) one, for user
/// pointers that run off the end of valid memory. Unmapped on drop.
pub fn page_then_guard() -> Sys<Map> {
    // SAFETY: A fresh private anonymous mapping; nothing else refers to it.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    let map = Map {
        ptr: ptr.cast(),
        len: 2 * PAGE,
    };
    // SAFETY: The second page of the mapping just made.
    if unsafe { libc::mprotect(map.ptr.add(PAGE).cast(), PAGE, libc::PROT_NONE) } != 0 {
        return Err(Errno::last());
    }
    Ok(map)
}

fn errno<T>(r: nix::Result<T>) -> Sys<T> {
    r
}

impl Dsu {
    /// Opens `/dev/dsu` read-write.
    pub fn open() -> Sys<Dsu> {
        Self::open_flags(libc::O_RDWR)
    }

    /// Opens `/dev/dsu` with the given flags.
    pub fn open_flags(flags: i32) -> Sys<Dsu> {
        // SAFETY: A valid NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/dsu".as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: A fresh fd that we own.
        Ok(Dsu(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The raw fd.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// ATTACH with a prepared struct.
    pub fn attach_raw(&self, a: &mut dsu_attach) -> Sys<()> {
        // SAFETY: `a` is a valid dsu_attach.
        errno(unsafe { raw::attach(self.fd(), a) }).map(drop)
    }

    /// ATTACH `name` with `flags` and `mode`; returns whether it was created.
    pub fn attach(&self, name: &str, flags: u32, mode: u32) -> Sys<bool> {
        let mut a = dsu_attach {
            size: size_of::<dsu_attach>() as u32,
            flags,
            mode,
            name: cname(name),
            ..Default::default()
        };
        self.attach_raw(&mut a)?;
        Ok(a.created == 1)
    }

    /// ATTACH with `DSU_ATTACH_OWNER`: an existing segment may be owned by `owner`.
    pub fn attach_owner(&self, name: &str, flags: u32, mode: u32, owner: u32) -> Sys<bool> {
        let mut a = dsu_attach {
            size: size_of::<dsu_attach>() as u32,
            flags: flags | DSU_ATTACH_OWNER,
            mode,
            name: cname(name),
            owner,
            ..Default::default()
        };
        self.attach_raw(&mut a)?;
        Ok(a.created == 1)
    }

    /// Opens a handle and attaches it (create or open).
    pub fn attached(name: &str) -> Sys<Dsu> {
        let d = Dsu::open()?;
        d.attach(name, 0, 0)?;
        Ok(d)
    }

    /// RESOLVE with a prepared struct.
    pub fn resolve_raw(&self, r: &mut dsu_resolve) -> Sys<()> {
        // SAFETY: `r` is a valid dsu_resolve; its `vars` pointer is checked by the kernel.
        errno(unsafe { raw::resolve(self.fd(), r) }).map(drop)
    }

    /// RESOLVE `vars` in place; returns the struct (with `added`/`conflicts`) and the result.
    pub fn resolve(&self, vars: &mut [dsu_var]) -> (dsu_resolve, Sys<()>) {
        let mut r = dsu_resolve {
            size: size_of::<dsu_resolve>() as u32,
            var_size: size_of::<dsu_var>() as u32,
            count: vars.len() as u32,
            vars: vars.as_mut_ptr() as u64,
            ..Default::default()
        };
        let res = self.resolve_raw(&mut r);
        (r, res)
    }

    /// RESOLVE that must succeed; returns the entries.
    pub fn resolve_ok(&self, mut vars: Vec<dsu_var>) -> Sys<Vec<dsu_var>> {
        self.resolve(&mut vars).1?;
        Ok(vars)
    }

    /// BIND with a prepared struct.
    pub fn bind_raw(&self, b: &mut dsu_bind) -> Sys<()> {
        // SAFETY: `b` is a valid dsu_bind.
        errno(unsafe { raw::bind(self.fd(), b) }).map(drop)
    }

    /// BIND with `label`, `pages` and `flags`; returns the version id.
    pub fn bind(&self, label: &str, pages: &[u64], flags: u32) -> Sys<u64> {
        let mut b = dsu_bind {
            size: size_of::<dsu_bind>() as u32,
            flags,
            page_count: pages.len() as u64,
            pages: pages.as_ptr() as u64,
            label: cname(label),
            ..Default::default()
        };
        self.bind_raw(&mut b)?;
        Ok(b.version_id)
    }

    /// mmap `pages` pages with `flags` (MAP_SHARED normally) at offset `offset`.
    pub fn map_with(&self, pages: usize, flags: i32, offset: i64) -> Sys<Map> {
        let len = pages * PAGE;
        // SAFETY: A fresh mapping chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                self.fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(Map { ptr: p.cast(), len })
    }

    /// mmap `pages` pages MAP_SHARED.
    pub fn map(&self, pages: usize) -> Sys<Map> {
        self.map_with(pages, libc::MAP_SHARED, 0)
    }

    fn list<T: Default + Clone>(
        &self,
        call: unsafe fn(i32, *mut dsu_list) -> nix::Result<i32>,
        segment: &str,
        start: u32,
        count: u32,
    ) -> Sys<(Vec<T>, u32)> {
        let mut records = vec![T::default(); count as usize];
        let mut l = dsu_list {
            size: size_of::<dsu_list>() as u32,
            record_size: size_of::<T>() as u32,
            start,
            count,
            records: records.as_mut_ptr() as u64,
            segment: cname(segment),
            ..Default::default()
        };
        // SAFETY: `l` is valid and `records` holds `count` records.
        errno(unsafe { call(self.fd(), &mut l) })?;
        records.truncate(l.count as usize);
        Ok((records, l.total))
    }

    /// LIST_SEGMENTS from `start`, at most `count`; returns records and total.
    pub fn list_segments(&self, start: u32, count: u32) -> Sys<(Vec<dsu_segment_info>, u32)> {
        self.list(raw::list_segments, "", start, count)
    }

    /// LIST_VARIABLES of `segment`.
    pub fn list_variables(
        &self,
        segment: &str,
        start: u32,
        count: u32,
    ) -> Sys<(Vec<dsu_variable_info>, u32)> {
        self.list(raw::list_variables, segment, start, count)
    }

    /// LIST_VERSIONS of `segment`.
    pub fn list_versions(
        &self,
        segment: &str,
        start: u32,
        count: u32,
    ) -> Sys<(Vec<dsu_version_info>, u32)> {
        self.list(raw::list_versions, segment, start, count)
    }

    /// LIST_* with a prepared struct (`which`: 0 segments, 1 variables, 2 versions).
    pub fn list_raw(&self, which: u32, l: &mut dsu_list) -> Sys<()> {
        // SAFETY: `l` is a valid dsu_list; its records pointer is checked by the kernel.
        let r = unsafe {
            match which {
                0 => raw::list_segments(self.fd(), l),
                1 => raw::list_variables(self.fd(), l),
                _ => raw::list_versions(self.fd(), l),
            }
        };
        errno(r).map(drop)
    }

    /// The info record of `segment` from LIST_SEGMENTS, if listed.
    pub fn segment_info(&self, segment: &str) -> Sys<Option<dsu_segment_info>> {
        let (all, _) = self.list_segments(0, DSU_LIST_MAX)?;
        Ok(all.into_iter().find(|s| cstr(&s.name) == segment))
    }

    /// READ_VAR with a prepared struct.
    pub fn read_var_raw(&self, r: &mut dsu_read_var) -> Sys<()> {
        // SAFETY: `r` is a valid dsu_read_var; its buffer pointer is checked by the kernel.
        errno(unsafe { raw::read_var(self.fd(), r) }).map(drop)
    }

    /// READ_VAR of `len` bytes at `offset`.
    pub fn read_var(
        &self,
        segment: &str,
        name: &str,
        fingerprint: u64,
        flags: u32,
        offset: u64,
        len: usize,
    ) -> Sys<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut r = dsu_read_var {
            size: size_of::<dsu_read_var>() as u32,
            flags,
            fingerprint,
            offset,
            length: len as u64,
            buf: buf.as_mut_ptr() as u64,
            segment: cname(segment),
            name: cname(name),
            ..Default::default()
        };
        self.read_var_raw(&mut r)?;
        buf.truncate(r.length as usize);
        Ok(buf)
    }

    /// DESTROY `name`.
    pub fn destroy(&self, name: &str) -> Sys<()> {
        let d = dsu_destroy {
            size: size_of::<dsu_destroy>() as u32,
            flags: 0,
            name: cname(name),
        };
        // SAFETY: `d` is a valid dsu_destroy.
        errno(unsafe { raw::destroy(self.fd(), &d) }).map(drop)
    }

    /// SETATTR with a struct as given.
    pub fn setattr_raw(&self, s: &dsu_setattr) -> Sys<()> {
        // SAFETY: `s` is a live dsu_setattr of the size its `size` field claims (or less,
        // which the kernel must refuse).
        errno(unsafe { raw::setattr(self.fd(), s) }).map(drop)
    }

    /// SETATTR of `name`: the fields of `flags` (`DSU_SETATTR_*`) set to the values given.
    pub fn setattr(&self, name: &str, flags: u32, mode: u32, uid: u32, gid: u32) -> Sys<()> {
        self.setattr_raw(&dsu_setattr {
            size: size_of::<dsu_setattr>() as u32,
            flags,
            mode,
            uid,
            gid,
            name: cname(name),
            ..Default::default()
        })
    }

    /// DSU_IOC_HEAP with a caller-built struct.
    pub fn heap_raw(&self, h: &mut dsu_heap) -> Sys<()> {
        // SAFETY: `h` is a valid struct.
        errno(unsafe { raw::heap(self.fd(), h) }).map(drop)
    }

    /// DSU_IOC_HEAP: creates the heap at `base` with `reserve` bytes, or gets it (both 0).
    /// Returns (base, reserve, size, created).
    pub fn heap(&self, base: u64, reserve: u64) -> Sys<(u64, u64, u64, bool)> {
        let mut h = dsu_heap {
            size: size_of::<dsu_heap>() as u32,
            base,
            reserve,
            ..Default::default()
        };
        self.heap_raw(&mut h)?;
        Ok((
            h.base,
            h.reserve,
            h.heap_size,
            h.flags & DSU_HEAP_CREATED != 0,
        ))
    }

    /// DSU_IOC_HEAP_GROW with a caller-built struct.
    pub fn heap_grow_raw(&self, g: &mut dsu_heap_grow) -> Sys<()> {
        // SAFETY: `g` is a valid struct.
        errno(unsafe { raw::heap_grow(self.fd(), g) }).map(drop)
    }

    /// DSU_IOC_HEAP_GROW to at least `min_size` bytes; the new size.
    pub fn heap_grow(&self, min_size: u64) -> Sys<u64> {
        let mut g = dsu_heap_grow {
            size: size_of::<dsu_heap_grow>() as u32,
            min_size,
            ..Default::default()
        };
        self.heap_grow_raw(&mut g)?;
        Ok(g.heap_size)
    }

    /// DSU_IOC_HEAP_DISCARD with a caller-built struct.
    pub fn heap_discard_raw(&self, d: &dsu_heap_discard) -> Sys<()> {
        // SAFETY: `d` is a valid struct.
        errno(unsafe { raw::heap_discard(self.fd(), d) }).map(drop)
    }

    /// DSU_IOC_HEAP_DISCARD of `[offset, offset + length)`.
    pub fn heap_discard(&self, offset: u64, length: u64) -> Sys<()> {
        self.heap_discard_raw(&dsu_heap_discard {
            size: size_of::<dsu_heap_discard>() as u32,
            offset,
            length,
            ..Default::default()
        })
    }

    /// DSU_IOC_READ_HEAP with a caller-built struct.
    pub fn read_heap_raw(&self, r: &mut dsu_read_heap) -> Sys<()> {
        // SAFETY: `r` is a valid struct; its buffer is the caller's.
        errno(unsafe { raw::read_heap(self.fd(), r) }).map(drop)
    }

    /// DSU_IOC_READ_HEAP: up to `len` bytes of `segment`'s heap at `offset`.
    pub fn read_heap(&self, segment: &str, offset: u64, len: usize) -> Sys<Vec<u8>> {
        let mut buf = vec![0xa5u8; len];
        let mut r = dsu_read_heap {
            size: size_of::<dsu_read_heap>() as u32,
            offset,
            length: len as u64,
            buf: buf.as_mut_ptr() as u64,
            segment: cname(segment),
            ..Default::default()
        };
        self.read_heap_raw(&mut r)?;
        buf.truncate(r.length as usize);
        Ok(buf)
    }

    /// mmap of the heap window: `len` bytes at `addr` (MAP_FIXED_NOREPLACE unless 0) at the
    /// heap's offset, with `flags` (MAP_SHARED normally).
    pub fn map_heap_with(&self, addr: u64, len: usize, flags: i32) -> Sys<Map> {
        let fixed = if addr != 0 {
            libc::MAP_FIXED_NOREPLACE
        } else {
            0
        };
        // SAFETY: A new mapping; MAP_FIXED_NOREPLACE never replaces an existing one.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | fixed,
                self.fd(),
                DSU_HEAP_MMAP_OFFSET as i64,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(Map { ptr: p.cast(), len })
    }

    /// mmap of the heap window at `base`, `reserve` bytes long, MAP_SHARED.
    pub fn map_heap(&self, base: u64, reserve: u64) -> Sys<Map> {
        self.map_heap_with(base, reserve as usize, libc::MAP_SHARED)
    }

    /// mmap of a view of segment pages `first..first + pages`, MAP_SHARED.
    pub fn map_view(&self, first: u64, pages: usize) -> Sys<Map> {
        self.map_with(
            pages,
            libc::MAP_SHARED,
            (DSU_VIEW_MMAP_OFFSET + first * PAGE as u64) as i64,
        )
    }

    /// DSU_IOC_READY with argument `arg` (0 is the valid one).
    pub fn ready_arg(&self, arg: usize) -> Sys<()> {
        self.ioctl_cmd(request_none(DSU_IOC_NR_READY), arg)
    }

    /// DSU_IOC_READY.
    pub fn ready(&self) -> Sys<()> {
        self.ready_arg(0)
    }

    /// DSU_IOC_GC with a prepared struct.
    pub fn gc_raw(&self, c: &mut dsu_gc) -> Sys<()> {
        // SAFETY: `c` is a valid dsu_gc whose records (if any) the caller provides.
        errno(unsafe { raw::gc(self.fd(), c) }).map(drop)
    }

    /// DSU_IOC_GC of `segment` with `flags` and `min_age`, listing up to 64 records.
    pub fn gc(
        &self,
        segment: &str,
        flags: u32,
        min_age: u32,
    ) -> Sys<(dsu_gc, Vec<dsu_variable_info>)> {
        let mut records = vec![dsu_variable_info::default(); 64];
        let mut c = dsu_gc {
            size: size_of::<dsu_gc>() as u32,
            flags,
            min_age,
            record_size: size_of::<dsu_variable_info>() as u32,
            records: records.as_mut_ptr() as u64,
            count: records.len() as u32,
            segment: cname(segment),
            ..Default::default()
        };
        self.gc_raw(&mut c)?;
        records.truncate(c.count as usize);
        Ok((c, records))
    }

    /// An ioctl with an arbitrary argument (e.g. a bad pointer).
    pub fn ioctl_arg(&self, which: Ioc, arg: usize) -> Sys<()> {
        // SAFETY: The kernel must handle any argument; that is what is tested.
        let r = unsafe {
            match which {
                Ioc::Attach => raw::attach(self.fd(), arg as *mut _),
                Ioc::Resolve => raw::resolve(self.fd(), arg as *mut _),
                Ioc::Bind => raw::bind(self.fd(), arg as *mut _),
                Ioc::ListSegments => raw::list_segments(self.fd(), arg as *mut _),
                Ioc::ReadVar => raw::read_var(self.fd(), arg as *mut _),
                Ioc::Destroy => raw::destroy(self.fd(), arg as *const _),
            }
        };
        errno(r).map(drop)
    }

    /// An ioctl with any request number.
    pub fn ioctl_cmd(&self, cmd: u64, arg: usize) -> Sys<()> {
        // SAFETY: The kernel must reject unknown requests without touching `arg`.
        let r = unsafe { libc::ioctl(self.fd(), cmd as _, arg) };
        if r < 0 { Err(Errno::last()) } else { Ok(()) }
    }

    /// read() into `buf`; returns bytes read.
    pub fn read(&self, buf: &mut [u8]) -> Sys<usize> {
        nix::unistd::read(self.fd(), buf)
    }

    /// Reads whole events (up to 16).
    pub fn events(&self) -> Sys<Vec<dsu_event>> {
        let mut evs = vec![dsu_event::default(); 16];
        // SAFETY: `evs` is plain data of 16 * 64 bytes.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                evs.as_mut_ptr().cast::<u8>(),
                evs.len() * size_of::<dsu_event>(),
            )
        };
        let n = self.read(buf)?;
        evs.truncate(n / size_of::<dsu_event>());
        Ok(evs)
    }

    /// poll() for POLLIN with a timeout in ms; returns whether readable.
    pub fn readable(&self, timeout_ms: i32) -> Sys<bool> {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: One valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if n < 0 {
            return Err(Errno::last());
        }
        Ok(n == 1 && p.revents & libc::POLLIN != 0)
    }
}

/// The request number of an argument-less dsu ioctl (`_IO(DSU_IOC_MAGIC, nr)`).
pub fn request_none(nr: u32) -> u64 {
    nix::request_code_none!(DSU_IOC_MAGIC, nr)
}

/// Destroys `name` (ignoring errors): test cleanup.
pub fn cleanup(name: &str) {
    if let Ok(d) = Dsu::open() {
        let _ = d.destroy(name);
    }
}

/// Forks a child running `f` and returns its pid; the child exits 0 on `Ok`, 1 otherwise
/// (printing the failure to stderr).
pub fn spawn(f: impl FnOnce() -> crate::TestResult) -> nix::unistd::Pid {
    use nix::unistd::{ForkResult, fork};
    // SAFETY: The suite is single-threaded when it forks; the child only runs `f` and exits.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = match f() {
                Ok(()) => 0,
                Err(crate::Failure::Fail(m)) | Err(crate::Failure::Skip(m)) => {
                    // On the console, for the run's log.
                    println!("kmod test child {} failed: {m}", std::process::id());
                    1
                }
            };
            // SAFETY: Leaves the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    }
}

/// Where the given processes are: their state and kernel stacks (for a stuck test).
pub fn where_are(pids: &[nix::unistd::Pid]) -> String {
    let mut out = String::new();
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.contains("zombie") {
            let w = nix::sys::wait::waitpid(*pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            out += &format!("[pid {pid}: ended: {w:?}] ");
            continue;
        }
        let state = status
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("gone");
        let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let times: Vec<&str> = stat.split_whitespace().skip(13).take(2).collect();
        out += &format!(
            "[pid {pid}: {state} utime/stime {times:?} wchan {wchan} stack {}] ",
            stack.replace('\n', " < ")
        );
    }
    out
}

/// Waits for a child from [`spawn`] and fails unless it exited 0.
pub fn join(pid: nix::unistd::Pid, what: &str) -> crate::TestResult {
    use nix::sys::wait::{WaitStatus, waitpid};
    match waitpid(pid, None)? {
        WaitStatus::Exited(_, 0) => Ok(()),
        other => Err(crate::Failure::Fail(format!(
            "{what}: child ended with {other:?}"
        ))),
    }
}

/// A pipe used to pass single bytes between a parent and a forked child.
pub struct Channel {
    r: OwnedFd,
    w: OwnedFd,
}

impl Channel {
    /// A new pipe.
    pub fn new() -> Sys<Self> {
        let (r, w) = nix::unistd::pipe()?;
        Ok(Self { r, w })
    }

    /// Sends one byte.
    pub fn send(&self, b: u8) -> Sys<()> {
        nix::unistd::write(&self.w, &[b]).map(drop)
    }

    /// Receives one byte, waiting at most a minute (`ETIMEDOUT`), so that a peer that died
    /// without sending fails the test instead of hanging it.
    pub fn recv(&self) -> Sys<u8> {
        let mut p = libc::pollfd {
            fd: self.r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: One valid pollfd.
        match unsafe { libc::poll(&mut p, 1, 60_000) } {
            0 => return Err(Errno::ETIMEDOUT),
            n if n < 0 => return Err(Errno::last()),
            _ => {}
        }
        let mut b = [0u8];
        match nix::unistd::read(self.r.as_raw_fd(), &mut b)? {
            1 => Ok(b[0]),
            _ => Err(Errno::EPIPE),
        }
    }
}
