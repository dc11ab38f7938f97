//! One fuzzing worker: a thread that owns some `/dev/dsu` handles and mappings, shares a
//! few handles with the other threads of its process, and issues random, structure-aware
//! system calls on them. Every errno is an acceptable answer; what the worker checks itself
//! are invariants the kernel must keep whatever it is asked (a successful mmap can be
//! touched, the directory has no overlapping variables), counted as findings.

use crate::rng::Rng;
use crate::stats::{Op, Stats};
use dsu_uapi::*;
use std::time::Instant;

const PAGE: usize = 4096;
/// Arena regions (offsets into the worker's private read-write arena).
const STRUCT_OFF: usize = 0;
const STRUCT_LEN: usize = PAGE;
const ARRAY_OFF: usize = PAGE;
const ARRAY_LEN: usize = 12 * PAGE;
const DATA_OFF: usize = 13 * PAGE;
const DATA_LEN: usize = 4 * PAGE;
const ARENA_LEN: usize = 18 * PAGE;

const MAX_HANDLES: usize = 6;
const MAX_MAPPINGS: usize = 12;
const SEG_POOL: u64 = 6;
const VAR_POOL: u64 = 24;
/// Sizes of the pool variables by `index % 8`: sub-page, page, straddling, multi-page.
const VAR_SIZES: [u64; 8] = [1, 4, 8, 64, 100, 4096, 4097, 12000];

/// Configuration shared by every worker of a run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Path of the device.
    pub dev: String,
    /// Prefix of every segment name the fuzzer creates on purpose.
    pub prefix: String,
    /// Calls this worker makes.
    pub calls: u64,
    /// Stop after this many seconds even if calls remain (0: no limit).
    pub max_seconds: u64,
    /// Whether the fork operation may run (only when the process is allowed to fork).
    pub allow_fork: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Fresh,
    Attached,
    Bound,
    /// After a RESTORE, until its COMMIT.
    Restoring,
}

#[derive(Clone, Debug)]
struct Handle {
    fd: i32,
    st: St,
    /// Segment pool index it attached to (for names).
    seg: u64,
    /// Pages of its segment known from RESOLVE answers.
    known_pages: u64,
    /// Pages in its map once bound.
    map_pages: u64,
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    addr: usize,
    len: usize,
    prot: i32,
    /// A heap window: pages past the heap's size fault by design (SIGBUS, EFAULT).
    heap: bool,
}

/// What kind of pointer to hand the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ptr {
    Valid,
    Misaligned,
    Straddle,
    Null,
    Unmapped,
    Kernel,
    NonCanonical,
    ReadOnly,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is a plain-old-data uapi struct (Copy, no padding with uninit bytes since
    // every instance is made from Default's zeroed memory and field writes).
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
}

fn read_struct<T: Copy + Default>(p: *const u8) -> T {
    let mut v = T::default();
    // SAFETY: p points into the arena with at least size_of::<T>() readable bytes.
    unsafe { std::ptr::copy_nonoverlapping(p, &mut v as *mut T as *mut u8, size_of::<T>()) };
    v
}

fn set_cstr(dst: &mut [core::ffi::c_char], src: &[u8]) {
    for (i, d) in dst.iter_mut().enumerate() {
        *d = src.get(i).copied().unwrap_or(0) as core::ffi::c_char;
    }
}

fn cstr(src: &[core::ffi::c_char]) -> String {
    src.iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect()
}

const fn ioc(dir: u64, nr: u32, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((DSU_IOC_MAGIC as u64) << 8) | nr as u64
}
/// The ioctl request numbers of `uapi/dsu.h`.
pub const IOC_ATTACH: u64 = ioc(3, DSU_IOC_NR_ATTACH, size_of::<dsu_attach>());
/// DSU_IOC_RESOLVE.
pub const IOC_RESOLVE: u64 = ioc(3, DSU_IOC_NR_RESOLVE, size_of::<dsu_resolve>());
/// DSU_IOC_BIND.
pub const IOC_BIND: u64 = ioc(3, DSU_IOC_NR_BIND, size_of::<dsu_bind>());
/// DSU_IOC_LIST_SEGMENTS.
pub const IOC_LIST_SEGMENTS: u64 = ioc(3, DSU_IOC_NR_LIST_SEGMENTS, size_of::<dsu_list>());
/// DSU_IOC_LIST_VARIABLES.
pub const IOC_LIST_VARIABLES: u64 = ioc(3, DSU_IOC_NR_LIST_VARIABLES, size_of::<dsu_list>());
/// DSU_IOC_LIST_VERSIONS.
pub const IOC_LIST_VERSIONS: u64 = ioc(3, DSU_IOC_NR_LIST_VERSIONS, size_of::<dsu_list>());
/// DSU_IOC_READ_VAR.
pub const IOC_READ_VAR: u64 = ioc(3, DSU_IOC_NR_READ_VAR, size_of::<dsu_read_var>());
/// DSU_IOC_DESTROY.
pub const IOC_DESTROY: u64 = ioc(1, DSU_IOC_NR_DESTROY, size_of::<dsu_destroy>());
/// DSU_IOC_SETATTR.
pub const IOC_SETATTR: u64 = ioc(1, DSU_IOC_NR_SETATTR, size_of::<dsu_setattr>());
/// DSU_IOC_HEAP.
pub const IOC_HEAP: u64 = ioc(3, DSU_IOC_NR_HEAP, size_of::<dsu_heap>());
/// DSU_IOC_HEAP_GROW.
pub const IOC_HEAP_GROW: u64 = ioc(3, DSU_IOC_NR_HEAP_GROW, size_of::<dsu_heap_grow>());
/// DSU_IOC_HEAP_DISCARD.
pub const IOC_HEAP_DISCARD: u64 = ioc(1, DSU_IOC_NR_HEAP_DISCARD, size_of::<dsu_heap_discard>());
/// DSU_IOC_READ_HEAP.
pub const IOC_READ_HEAP: u64 = ioc(3, DSU_IOC_NR_READ_HEAP, size_of::<dsu_read_heap>());

/// Heap windows the fuzzer asks for: 1 GiB-aligned slots from here (overlaps between
/// segments are fine: the mmap then fails with EEXIST).
const HEAP_WINDOWS: u64 = 0x4000_0000_0000;
/// DSU_IOC_READY (no argument struct).
pub const IOC_READY: u64 = ioc(0, DSU_IOC_NR_READY, 0);
/// DSU_IOC_GC.
pub const IOC_GC: u64 = ioc(3, DSU_IOC_NR_GC, size_of::<dsu_gc>());
/// DSU_IOC_RESTORE.
pub const IOC_RESTORE: u64 = ioc(1, DSU_IOC_NR_RESTORE, size_of::<dsu_restore>());
/// DSU_IOC_RESTORE_VAR.
pub const IOC_RESTORE_VAR: u64 = ioc(3, DSU_IOC_NR_RESTORE_VAR, size_of::<dsu_restore_var>());
/// DSU_IOC_RESTORE_HEAP.
pub const IOC_RESTORE_HEAP: u64 = ioc(1, DSU_IOC_NR_RESTORE_HEAP, size_of::<dsu_restore_heap>());
/// DSU_IOC_RESTORE_COMMIT (no argument struct).
pub const IOC_RESTORE_COMMIT: u64 = ioc(0, DSU_IOC_NR_RESTORE_COMMIT, 0);
/// DSU_IOC_SNAPSHOT.
pub const IOC_SNAPSHOT: u64 = ioc(3, DSU_IOC_NR_SNAPSHOT, size_of::<dsu_snapshot>());
/// DSU_IOC_LOCK_TOKEN.
pub const IOC_LOCK_TOKEN: u64 = ioc(3, DSU_IOC_NR_LOCK_TOKEN, size_of::<dsu_lock_token>());
/// DSU_IOC_LOCK_OWNER.
pub const IOC_LOCK_OWNER: u64 = ioc(3, DSU_IOC_NR_LOCK_OWNER, size_of::<dsu_lock_owner>());
/// Snapshot fds a worker keeps open at most (each blocks further snapshots of its segment).
const MAX_SNAPSHOTS: usize = 2;

/// A fuzzing worker.
pub struct Worker {
    rng: Rng,
    cfg: Config,
    /// Handles shared by every thread of this process (never closed by a worker).
    shared: Vec<i32>,
    own: Vec<Handle>,
    maps: Vec<Mapping>,
    arena: *mut u8,
    /// A read-write page followed by a PROT_NONE page: for pointers straddling a page end.
    trap: *mut u8,
    /// A read-only page.
    ro: *mut u8,
    pipe: [i32; 2],
    proc_mem: i32,
    labels: u64,
    /// Open snapshot fds (DSU_IOC_SNAPSHOT).
    snapshots: Vec<i32>,
    /// Counters of this worker.
    pub stats: Stats,
}

// SAFETY: the raw pointers are private mappings owned by this worker only.
unsafe impl Send for Worker {}

fn mmap_anon(len: usize, prot: i32) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "dsu-fuzz: mmap of the arena failed");
    p as *mut u8
}

impl Worker {
    /// A worker with its own random stream, arena and pipe.
    pub fn new(cfg: Config, rng: Rng, shared: Vec<i32>) -> Self {
        let arena = mmap_anon(ARENA_LEN, libc::PROT_READ | libc::PROT_WRITE);
        let trap = mmap_anon(2 * PAGE, libc::PROT_READ | libc::PROT_WRITE);
        let ro = mmap_anon(PAGE, libc::PROT_READ | libc::PROT_WRITE);
        let mut pipe = [0i32; 2];
        // SAFETY: plain syscalls on memory this worker owns.
        unsafe {
            libc::mprotect(trap.add(PAGE) as *mut _, PAGE, libc::PROT_NONE);
            // The read-only page holds a plausible header: size fields of 64 and garbage.
            for i in 0..PAGE / 8 {
                *(ro as *mut u64).add(i) = 0x40 | ((i as u64) << 40);
            }
            libc::mprotect(ro as *mut _, PAGE, libc::PROT_READ);
            libc::pipe2(pipe.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC);
        }
        // SAFETY: a constant NUL-terminated path.
        let proc_mem =
            unsafe { libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        Worker {
            rng,
            cfg,
            shared,
            own: Vec::new(),
            maps: Vec::new(),
            arena,
            trap,
            ro,
            pipe,
            proc_mem,
            labels: 0,
            snapshots: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn done(&self, start: &Instant) -> bool {
        self.stats.total_calls() >= self.cfg.calls
            || (self.cfg.max_seconds > 0 && start.elapsed().as_secs() >= self.cfg.max_seconds)
    }

    /// Runs until this worker's call budget or time is spent, then releases everything.
    pub fn run(&mut self) {
        let start = Instant::now();
        while !self.done(&start) {
            let op = self.rng.weighted(&[
                6,  // open
                3,  // close
                1,  // dup
                10, // attach
                14, // resolve
                9,  // bind
                3,  // list segments
                3,  // list variables
                3,  // list versions
                4,  // read var
                2,  // destroy
                5,  // raw ioctl
                9,  // mmap
                3,  // munmap
                1,  // mremap
                1,  // mprotect
                2,  // madvise
                6,  // touch
                1,  // proc mem
                3,  // read
                2,  // poll
                if self.cfg.allow_fork { 1 } else { 0 },
                1, // check
                2, // scenario
                2, // setattr
                3, // heap (create or get), with a mapping of the window
                3, // heap grow
                2, // heap discard
                2, // read heap
                2, // view mmap
                4, // ready
                2, // gc
                2, // restore
                4, // restore var
                2, // restore heap
                2, // restore commit
                2, // snapshot
                3, // snapshot fd
                1, // lock token
                3, // lock owner
            ]);
            match op {
                0 => self.op_open(),
                1 => self.op_close(),
                2 => self.op_dup(),
                3 => {
                    self.op_attach(None);
                }
                4 => {
                    self.op_resolve(None);
                }
                5 => {
                    self.op_bind(None);
                }
                6 => {
                    self.op_list(Op::ListSegments, None);
                }
                7 => {
                    self.op_list(Op::ListVariables, None);
                }
                8 => {
                    self.op_list(Op::ListVersions, None);
                }
                9 => {
                    self.op_read_var();
                }
                10 => {
                    self.op_destroy(None);
                }
                11 => self.op_raw_ioctl(),
                12 => {
                    self.op_mmap(None);
                }
                13 => self.op_munmap(),
                14 => self.op_mremap(),
                15 => self.op_mprotect(),
                16 => self.op_madvise(),
                17 => self.op_touch(),
                18 => self.op_proc_mem(),
                19 => self.op_read(),
                20 => self.op_poll(),
                21 => self.op_fork(),
                22 => self.op_check(),
                23 => self.op_scenario(),
                24 => {
                    self.op_setattr();
                }
                25 => {
                    self.op_heap();
                }
                26 => {
                    self.op_heap_grow();
                }
                27 => {
                    self.op_heap_discard();
                }
                28 => {
                    self.op_read_heap();
                }
                29 => {
                    self.op_view();
                }
                30 => {
                    self.op_ready(None);
                }
                31 => {
                    self.op_gc();
                }
                32 => {
                    self.op_restore();
                }
                33 => {
                    self.op_restore_var(None);
                }
                34 => {
                    self.op_restore_heap();
                }
                35 => {
                    self.op_restore_commit(None);
                }
                36 => {
                    self.op_snapshot();
                }
                37 => self.op_snapshot_fd(),
                38 => {
                    self.op_lock_token();
                }
                _ => {
                    self.op_lock_owner();
                }
            }
        }
        self.release();
    }

    /// Unmaps and closes everything this worker holds.
    pub fn release(&mut self) {
        for fd in std::mem::take(&mut self.snapshots) {
            // SAFETY: a snapshot fd this worker owns.
            unsafe { libc::close(fd) };
        }
        for m in std::mem::take(&mut self.maps) {
            // SAFETY: a mapping this worker created and still tracks.
            unsafe { libc::munmap(m.addr as *mut _, m.len) };
        }
        for h in std::mem::take(&mut self.own) {
            // SAFETY: a descriptor this worker opened.
            unsafe { libc::close(h.fd) };
        }
    }

    // ------------------------------------------------------------------ helpers

    fn record(&mut self, op: Op, ret: i64) -> i64 {
        let e = if ret < 0 { errno() } else { 0 };
        self.stats.count(op, e);
        if ret < 0 { -(e as i64) } else { ret }
    }

    fn ioctl(&mut self, op: Op, fd: i32, cmd: u64, arg: u64) -> i64 {
        // SAFETY: the kernel validates every pointer; the fuzzer deliberately passes bad ones,
        // and none of the commands it sends can write into memory the worker relies on
        // except the arena, the trap page and its own mappings.
        let r = unsafe { libc::ioctl(fd, cmd as libc::c_ulong, arg) } as i64;
        self.record(op, r)
    }

    fn arena(&self, off: usize) -> *mut u8 {
        // SAFETY: every caller passes an offset inside the arena.
        unsafe { self.arena.add(off) }
    }

    fn pick_ptr(&mut self) -> Ptr {
        match self.rng.weighted(&[80, 4, 5, 3, 3, 2, 1, 2]) {
            0 => Ptr::Valid,
            1 => Ptr::Misaligned,
            2 => Ptr::Straddle,
            3 => Ptr::Null,
            4 => Ptr::Unmapped,
            5 => Ptr::Kernel,
            6 => Ptr::NonCanonical,
            _ => Ptr::ReadOnly,
        }
    }

    /// Puts `bytes` where a pointer of the chosen kind points and returns the pointer.
    /// `region` is the arena region used for valid pointers.
    fn place(&mut self, bytes: &[u8], off: usize, len: usize) -> u64 {
        let kind = self.pick_ptr();
        self.place_kind(kind, bytes, off, len)
    }

    fn place_kind(&mut self, kind: Ptr, bytes: &[u8], off: usize, len: usize) -> u64 {
        let n = bytes.len();
        match kind {
            Ptr::Valid | Ptr::Misaligned => {
                let shift = if kind == Ptr::Misaligned {
                    self.rng.range(1, 7) as usize
                } else {
                    0
                };
                if n + shift > len {
                    return self.arena(off) as u64;
                }
                let p = self.arena(off + shift);
                // SAFETY: p..p+n lies inside the arena region.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, n) };
                p as u64
            }
            Ptr::Straddle => {
                // The first k bytes on the readable page, the rest on the PROT_NONE page.
                let k = if n > 1 {
                    self.rng.range(1, (n - 1).min(PAGE) as u64) as usize
                } else {
                    1
                };
                // SAFETY: trap..trap+PAGE is read-write; we write its last k bytes.
                let p = unsafe { self.trap.add(PAGE - k) };
                // SAFETY: as above.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, k.min(n)) };
                p as u64
            }
            Ptr::Null => 0,
            // Below mmap_min_addr (never mapped), or the guard page after the trap page.
            Ptr::Unmapped => match self.rng.below(2) {
                0 => self.rng.range(1, 0xffff),
                // SAFETY: address arithmetic only: the guard page.
                _ => (unsafe { self.trap.add(PAGE + self.rng.below(PAGE as u64) as usize) }) as u64,
            },
            Ptr::Kernel => self.rng.pick(&[
                0xffff_8880_0000_0000,
                0xffff_ffff_8100_0000,
                0xffff_ffff_ffff_f000,
                u64::MAX,
                0xffff_8000_0000_0000,
                0xffff_c900_0000_0000,
            ]),
            Ptr::NonCanonical => self.rng.pick(&[
                0x0000_8000_0000_0000,
                0x8000_0000_0000_0000,
                0x1234_5678_9abc_def0,
            ]),
            Ptr::ReadOnly => self.ro as u64 + self.rng.below(64) * 8,
        }
    }

    /// Encodes a uapi struct, mutating it now and then: the size field, random bytes,
    /// a larger size with a zero or non-zero tail.
    fn encode<T: Copy>(&mut self, v: &T) -> Vec<u8> {
        let mut b = bytes_of(v);
        let real = b.len();
        if self.rng.chance(12) {
            let size: u32 = match self.rng.below(9) {
                0 => 0,
                1 => 4,
                2 => real as u32 - 1,
                3 | 4 => {
                    let extra = self.rng.pick(&[4usize, 8, 64, 4096 - real]);
                    b.resize(real + extra, 0);
                    if self.rng.chance(50) {
                        let i = real + self.rng.below(extra as u64) as usize;
                        b[i] = 1;
                    }
                    (real + extra) as u32
                }
                5 => u32::MAX,
                6 => self.rng.interesting_u32(),
                7 => real as u32 - 8,
                _ => (real / 2) as u32,
            };
            b[..4].copy_from_slice(&size.to_ne_bytes());
        }
        if self.rng.chance(6) {
            for _ in 0..self.rng.range(1, 3) {
                let i = self.rng.below(b.len() as u64) as usize;
                b[i] = self.rng.next_u64() as u8;
            }
        }
        if self.rng.chance(4) && b.len() >= 8 {
            let i = (self.rng.below(b.len() as u64 / 4) * 4) as usize;
            let v = self.rng.interesting_u32();
            b[i..i + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    fn pick_fd(&mut self) -> i32 {
        let r = self.rng.below(100);
        if r < 70 && !self.own.is_empty() {
            let i = self.rng.below(self.own.len() as u64) as usize;
            self.own[i].fd
        } else if r < 95 && !self.shared.is_empty() {
            self.rng.pick(&self.shared)
        } else if r < 97 {
            -1
        } else {
            self.pipe[0]
        }
    }

    fn pick_own(&mut self) -> Option<usize> {
        if self.own.is_empty() {
            None
        } else {
            Some(self.rng.below(self.own.len() as u64) as usize)
        }
    }

    fn own_index(&self, fd: i32) -> Option<usize> {
        self.own.iter().position(|h| h.fd == fd)
    }

    fn seg_name(&mut self) -> (u64, Vec<u8>) {
        let i = self.rng.below(SEG_POOL);
        let prefix = self.cfg.prefix.clone();
        let name = match self.rng.weighted(&[88, 2, 2, 2, 1, 1, 1, 1, 1, 1]) {
            0 => format!("{prefix}-{i}").into_bytes(),
            1 => Vec::new(),
            // 63 bytes: the longest valid name.
            2 => {
                let mut n = format!("{prefix}-{i}-").into_bytes();
                n.resize(63, b'x');
                n
            }
            // 64 bytes, no NUL.
            3 => {
                let mut n = format!("{prefix}-{i}-").into_bytes();
                n.resize(64, b'y');
                n
            }
            4 => format!("{prefix}/{i}").into_bytes(),
            5 => format!("{prefix} {i}").into_bytes(),
            6 => {
                let mut n = prefix.into_bytes();
                for _ in 0..self.rng.range(1, 60) {
                    n.push(self.rng.next_u64() as u8);
                }
                n
            }
            7 => b".".to_vec(),
            8 => b"..".to_vec(),
            _ => format!("{prefix}-{i}\u{e9}").into_bytes(),
        };
        (i, name)
    }

    fn var_name(&mut self, i: u64) -> Vec<u8> {
        match self.rng.weighted(&[92, 1, 2, 1, 1, 1, 1, 1]) {
            0 => format!("v{i}").into_bytes(),
            1 => Vec::new(),
            2 => vec![b'n'; 128],
            3 => {
                let mut n = format!("v{i}-").into_bytes();
                n.resize(127, b'z');
                n
            }
            4 => vec![b'v', 1, b'x'],
            5 => vec![b'v', 0x7f],
            6 => vec![0xff, 0xfe],
            _ => format!("v {i} with spaces").into_bytes(),
        }
    }

    fn label(&mut self) -> Vec<u8> {
        self.labels += 1;
        match self.rng.weighted(&[90, 3, 3, 2, 2]) {
            0 => format!("fz-{}", self.labels).into_bytes(),
            1 => Vec::new(),
            2 => vec![b'L'; 32],
            3 => vec![b'L', 0x01],
            _ => {
                let mut l = b"1.0.".to_vec();
                l.resize(31, b'9');
                l
            }
        }
    }

    // ------------------------------------------------------------------ operations

    fn op_open(&mut self) {
        if self.own.len() >= MAX_HANDLES {
            self.op_close();
        }
        let mut flags = match self.rng.weighted(&[80, 12, 4]) {
            0 => libc::O_RDWR,
            1 => libc::O_RDONLY,
            _ => libc::O_WRONLY,
        } | libc::O_CLOEXEC;
        if self.rng.chance(50) {
            flags |= libc::O_NONBLOCK;
        }
        let path = std::ffi::CString::new(self.cfg.dev.clone()).unwrap_or_default();
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
        let r = self.record(Op::Open, fd as i64);
        if r >= 0 {
            self.own.push(Handle {
                fd,
                st: St::Fresh,
                seg: 0,
                known_pages: 0,
                map_pages: 0,
            });
        }
    }

    fn op_close(&mut self) {
        if let Some(i) = self.pick_own() {
            let h = self.own.swap_remove(i);
            // SAFETY: a descriptor this worker owns.
            let r = unsafe { libc::close(h.fd) };
            self.record(Op::Close, r as i64);
        }
    }

    fn op_dup(&mut self) {
        if self.own.len() >= MAX_HANDLES {
            return;
        }
        if let Some(i) = self.pick_own() {
            // SAFETY: dup of a descriptor this worker owns.
            let fd = unsafe { libc::fcntl(self.own[i].fd, libc::F_DUPFD_CLOEXEC, 3) };
            if self.record(Op::Dup, fd as i64) >= 0 {
                let mut h = self.own[i].clone();
                h.fd = fd;
                self.own.push(h);
            }
        }
    }

    fn op_attach(&mut self, fd: Option<i32>) -> i64 {
        let fd = fd.unwrap_or_else(|| self.pick_fd());
        let (seg, name) = self.seg_name();
        let mut a = dsu_attach {
            size: size_of::<dsu_attach>() as u32,
            ..Default::default()
        };
        a.flags = match self.rng.weighted(&[60, 15, 15, 3, 3]) {
            0 => 0,
            1 => DSU_ATTACH_MUST_CREATE,
            2 => DSU_ATTACH_MUST_EXIST,
            3 => DSU_ATTACH_MUST_CREATE | DSU_ATTACH_MUST_EXIST,
            _ => self.rng.interesting_u32(),
        };
        // The expected owner: ours, another test uid's, root's, or garbage (also without
        // the flag, which must then be EINVAL).
        if self.rng.chance(4) {
            a.flags |= DSU_ATTACH_OWNER;
        }
        if self.rng.chance(4) {
            // SAFETY: getuid has no preconditions.
            let me = unsafe { libc::getuid() };
            a.owner = self
                .rng
                .pick(&[me, me, 0, 1000, 1001, 65534, u32::MAX, 0x7fff_ffff]);
        }
        if self.rng.chance(4) {
            a.event_size = self.rng.pick(&[
                0,
                DSU_EVENT_SIZE_VER1,
                DSU_EVENT_SIZE_VER1 + 8,
                DSU_EVENT_SIZE_VER1 - 1,
                1,
                4096,
                4097,
                u32::MAX,
            ]);
        }
        a.mode = self.rng.pick(&[
            0,
            0o600,
            0o640,
            0o666,
            0o777,
            0o660,
            0o400,
            0o1777,
            0o7777,
            0xffff_ffff,
        ]);
        if self.rng.chance(3) {
            a.created = self.rng.interesting_u32();
        }
        set_cstr(&mut a.name, &name);
        let bytes = self.encode(&a);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        let r = self.ioctl(Op::Attach, fd, IOC_ATTACH, p);
        if r == 0 {
            if let Some(i) = self.own_index(fd) {
                self.own[i].st = St::Attached;
                self.own[i].seg = seg;
                self.own[i].known_pages = 0;
            }
        }
        r
    }

    fn var_entry(&mut self, idx: u64) -> dsu_var {
        let mut v = dsu_var {
            size: VAR_SIZES[(idx % 8) as usize],
            align: 8,
            fingerprint: idx.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            ..Default::default()
        };
        match self.rng.weighted(&[85, 5, 4, 3, 3]) {
            0 => {}
            1 => v.size = self.rng.range(1, 3 * PAGE as u64),
            2 => v.size = self.rng.range(1, 64) * PAGE as u64,
            // Past any sane limit: must fail without allocating.
            3 => {
                v.size = self.rng.pick(&[
                    0,
                    u64::MAX,
                    1 << 63,
                    1 << 40,
                    (131_072 + 1) * PAGE as u64,
                    u64::MAX - 4094,
                ])
            }
            _ => v.size = self.rng.interesting_u64(),
        }
        v.align = match self.rng.weighted(&[80, 10, 5, 5]) {
            0 => self.rng.pick(&[1, 2, 4, 8, 16, 64]),
            1 => self.rng.pick(&[128, 4096]),
            2 => self.rng.pick(&[0, 3, 8192, 1 << 63, u64::MAX]),
            _ => self.rng.interesting_u64(),
        };
        if self.rng.chance(6) {
            v.fingerprint = self.rng.next_u64();
        }
        if self.rng.chance(10) {
            v.flags = DSU_VAR_MIGRATE;
        } else if self.rng.chance(3) {
            v.flags = self.rng.interesting_u32();
        }
        if self.rng.chance(3) {
            v.status = self.rng.interesting_u32();
            v.first_page = self.rng.next_u64();
        }
        if self.rng.chance(40) {
            // Initial bytes: in the data region unless the pointer kind says otherwise.
            let kind = self.pick_ptr();
            let fill = vec![idx as u8 ^ 0x5a; (v.size as usize).min(DATA_LEN).min(64)];
            v.init = self.place_kind(kind, &fill, DATA_OFF, DATA_LEN);
        }
        if self.rng.chance(8) {
            // A type description in the upper half of the data region (init uses the lower):
            // valid text, stray bytes, or lengths past DSU_TYPE_DESC_MAX.
            let kind = self.pick_ptr();
            let mut text =
                format!("dsu-type 1\ntype {} {} fuzz{idx}\n", v.size, v.align).into_bytes();
            if self.rng.chance(4) {
                let at = self.rng.below(text.len() as u64) as usize;
                text[at] = self.rng.pick(&[0, 1, 0x7f, 0x80, 0xff, b'\t']);
            }
            if self.rng.chance(6) {
                text.resize(DSU_TYPE_DESC_MAX as usize, b'x');
            }
            v.type_desc = self.place_kind(kind, &text, DATA_OFF + 2 * PAGE, 2 * PAGE);
            v.type_desc_len = match self.rng.weighted(&[80, 10, 10]) {
                0 => text.len() as u32,
                1 => self
                    .rng
                    .pick(&[0, DSU_TYPE_DESC_MAX, DSU_TYPE_DESC_MAX + 1, u32::MAX]),
                _ => self.rng.interesting_u32(),
            };
            if self.rng.chance(10) {
                v.type_desc = 0;
            }
        }
        if self.rng.chance(50) {
            v.__pad = self.rng.interesting_u32();
        }
        let name = self.var_name(idx);
        set_cstr(&mut v.name, &name);
        v
    }

    fn op_resolve(&mut self, fd: Option<i32>) -> i64 {
        let fd = fd.unwrap_or_else(|| self.pick_fd());
        let count: u32 = match self.rng.weighted(&[70, 15, 15]) {
            0 => self.rng.range(1, 4) as u32,
            1 => self.rng.range(5, 64) as u32,
            _ => self
                .rng
                .pick(&[0, 16_384, 16_385, u32::MAX, 1 << 31, 1024, 1025, 245]),
        };
        let var_size: u32 = match self.rng.weighted(&[90, 2, 2, 2, 2, 2]) {
            0 => size_of::<dsu_var>() as u32,
            1 => 0,
            2 => size_of::<dsu_var>() as u32 - 1,
            3 => 100,
            4 => size_of::<dsu_var>() as u32 + 8,
            _ => self
                .rng
                .pick(&[4096, u32::MAX, 199, 208, DSU_VAR_SIZE_VER1]),
        };
        let stride = var_size as usize;
        let fill = if stride == 0 {
            0
        } else {
            (count as usize).min(ARRAY_LEN / stride.max(1))
        };
        let mut arr = vec![0u8; fill * stride];
        let nonzero_tail = self.rng.chance(50);
        for k in 0..fill {
            let idx = if self.rng.chance(20) && k > 0 {
                self.rng.below(VAR_POOL)
            } else {
                (self.rng.below(VAR_POOL) + k as u64) % VAR_POOL
            };
            let v = self.var_entry(idx);
            let b = bytes_of(&v);
            let n = b.len().min(stride);
            arr[k * stride..k * stride + n].copy_from_slice(&b[..n]);
            if stride > b.len() && nonzero_tail {
                arr[k * stride + b.len()] = 0xee;
            }
        }
        let vars_kind = self.pick_ptr();
        let vars = self.place_kind(vars_kind, &arr, ARRAY_OFF, ARRAY_LEN);
        let mut rs = dsu_resolve {
            size: size_of::<dsu_resolve>() as u32,
            var_size,
            count,
            flags: 0,
            vars,
            added: 0,
            conflicts: 0,
        };
        if self.rng.chance(3) {
            rs.flags = self.rng.interesting_u32();
        }
        let bytes = self.encode(&rs);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        let r = self.ioctl(Op::Resolve, fd, IOC_RESOLVE, p);
        if r == 0 && vars_kind == Ptr::Valid && stride == size_of::<dsu_var>() {
            // Learn the segment's extent from the answer.
            let mut top = 0u64;
            for k in 0..fill {
                let v: dsu_var = read_struct(self.arena(ARRAY_OFF + k * stride));
                top = top.max(v.first_page.saturating_add(v.page_count));
            }
            if let Some(i) = self.own_index(fd) {
                self.own[i].known_pages = self.own[i].known_pages.max(top);
            }
        }
        r
    }

    fn op_bind(&mut self, fd: Option<i32>) -> i64 {
        let fd = fd.unwrap_or_else(|| self.pick_fd());
        let known = self
            .own_index(fd)
            .map(|i| self.own[i].known_pages)
            .unwrap_or(0)
            .max(1);
        let page_count: u64 = match self.rng.weighted(&[75, 10, 15]) {
            0 => self.rng.range(1, known.min(32)),
            1 => self.rng.range(1, 64),
            _ => self
                .rng
                .pick(&[0, 1 << 20, 1 << 40, u64::MAX, 131_073, 131_072, 6144, 6145]),
        };
        let fill = (page_count as usize).min(ARRAY_LEN / 8);
        let mut arr = Vec::with_capacity(fill * 8);
        let wild = self.rng.chance(10);
        for _ in 0..fill {
            let idx = if wild {
                let any = self.rng.interesting_u64();
                self.rng.pick(&[known, known + 1, u64::MAX, 1 << 32, any])
            } else {
                self.rng.below(known)
            };
            arr.extend_from_slice(&idx.to_ne_bytes());
        }
        let pages = self.place(&arr, ARRAY_OFF, ARRAY_LEN);
        let mut b = dsu_bind {
            size: size_of::<dsu_bind>() as u32,
            page_count,
            pages,
            ..Default::default()
        };
        b.flags = match self.rng.weighted(&[35, 15, 30, 15, 5]) {
            0 => 0,
            1 => DSU_BIND_PREFAULT,
            2 => DSU_BIND_CANDIDATE,
            3 => DSU_BIND_CANDIDATE | DSU_BIND_PREFAULT,
            _ => self.rng.interesting_u32(),
        };
        if self.rng.chance(3) {
            b.version_id = self.rng.next_u64();
        }
        let label = self.label();
        set_cstr(&mut b.label, &label);
        let bytes = self.encode(&b);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        let r = self.ioctl(Op::Bind, fd, IOC_BIND, p);
        if r == 0 {
            if let Some(i) = self.own_index(fd) {
                self.own[i].st = St::Bound;
                self.own[i].map_pages = page_count;
            }
        }
        r
    }

    fn op_list(&mut self, op: Op, fd: Option<i32>) -> i64 {
        let fd = fd.unwrap_or_else(|| self.pick_fd());
        let (cmd, rec) = match op {
            Op::ListSegments => (IOC_LIST_SEGMENTS, size_of::<dsu_segment_info>()),
            Op::ListVariables => (IOC_LIST_VARIABLES, size_of::<dsu_variable_info>()),
            _ => (IOC_LIST_VERSIONS, size_of::<dsu_version_info>()),
        };
        let record_size: u32 = match self.rng.weighted(&[85, 5, 5, 5]) {
            0 => rec as u32,
            1 => 0,
            2 => rec as u32 - 8,
            _ => self.rng.pick(&[rec as u32 + 8, 4, u32::MAX, 1 << 20]),
        };
        let count: u32 = match self.rng.weighted(&[75, 25]) {
            0 => self.rng.range(1, 16) as u32,
            _ => self.rng.pick(&[0, 1024, 1025, u32::MAX, 1 << 31, 200]),
        };
        let start: u32 = if self.rng.chance(80) {
            0
        } else {
            self.rng.interesting_u32()
        };
        let records = self.place(&[], ARRAY_OFF, ARRAY_LEN);
        let mut l = dsu_list {
            size: size_of::<dsu_list>() as u32,
            record_size,
            start,
            count,
            records,
            ..Default::default()
        };
        if self.rng.chance(3) {
            l.__pad = self.rng.interesting_u32();
        }
        if self.rng.chance(3) {
            l.total = self.rng.interesting_u32();
        }
        // LIST_SEGMENTS takes no segment name (a non-zero one is EINVAL): only sometimes.
        if op != Op::ListSegments || self.rng.chance(3) {
            let (_, name) = self.seg_name();
            set_cstr(&mut l.segment, &name);
        }
        let bytes = self.encode(&l);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        self.ioctl(op, fd, cmd, p)
    }

    fn op_read_var(&mut self) -> i64 {
        let fd = self.pick_fd();
        let idx = self.rng.below(VAR_POOL);
        let length: u64 = match self.rng.weighted(&[70, 30]) {
            0 => self.rng.range(1, DATA_LEN as u64),
            _ => self
                .rng
                .pick(&[0, u64::MAX, 1 << 40, DATA_LEN as u64 + 1, 1 << 20]),
        };
        let offset: u64 = match self.rng.weighted(&[70, 30]) {
            0 => 0,
            _ => self
                .rng
                .pick(&[1, 4095, 4096, 12000, u64::MAX, u64::MAX - 1, 1 << 63]),
        };
        let buf = self.place(&[], DATA_OFF, DATA_LEN);
        let mut r = dsu_read_var {
            size: size_of::<dsu_read_var>() as u32,
            fingerprint: idx.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            offset,
            length,
            buf,
            ..Default::default()
        };
        r.flags = match self.rng.weighted(&[50, 30, 15, 5]) {
            0 => 0,
            1 => DSU_READ_ANY_FINGERPRINT,
            2 => DSU_READ_TYPE_DESC | self.rng.pick(&[0, DSU_READ_ANY_FINGERPRINT]),
            _ => self.rng.interesting_u32(),
        };
        let (_, seg) = self.seg_name();
        set_cstr(&mut r.segment, &seg);
        let name = self.var_name(idx);
        set_cstr(&mut r.name, &name);
        let bytes = self.encode(&r);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        self.ioctl(Op::ReadVar, fd, IOC_READ_VAR, p)
    }

    fn op_destroy(&mut self, name: Option<Vec<u8>>) -> i64 {
        let fd = self.pick_fd();
        let name = name.unwrap_or_else(|| self.seg_name().1);
        let mut d = dsu_destroy {
            size: size_of::<dsu_destroy>() as u32,
            ..Default::default()
        };
        if self.rng.chance(3) {
            d.flags = self.rng.interesting_u32();
        }
        set_cstr(&mut d.name, &name);
        let bytes = self.encode(&d);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        self.ioctl(Op::Destroy, fd, IOC_DESTROY, p)
    }

    /// SETATTR: mostly valid modes (so that other workers' segments change under them),
    /// sometimes any flags, mode, uid and gid.
    fn op_setattr(&mut self) -> i64 {
        let fd = self.pick_fd();
        let (_, name) = self.seg_name();
        let mut s = dsu_setattr {
            size: size_of::<dsu_setattr>() as u32,
            flags: DSU_SETATTR_MODE,
            mode: self.rng.pick(&[0o600, 0o640, 0o666, 0o400, 0]),
            ..Default::default()
        };
        if self.rng.chance(30) {
            s.flags = self.rng.interesting_u32();
            s.mode = self.rng.interesting_u32();
            s.uid = self.rng.interesting_u32();
            s.gid = self.rng.interesting_u32();
            s.__pad = self.rng.interesting_u32() & 1;
        }
        set_cstr(&mut s.name, &name);
        let bytes = self.encode(&s);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        self.ioctl(Op::SetAttr, fd, IOC_SETATTR, p)
    }

    /// HEAP: mostly a valid window from a small pool (or 0, 0 to get), sometimes anything;
    /// then, often, a mapping of the heap at its base (MAP_FIXED_NOREPLACE), tracked like
    /// any other mapping.
    fn op_heap(&mut self) -> i64 {
        let fd = self.pick_fd();
        let mut h = dsu_heap {
            size: size_of::<dsu_heap>() as u32,
            ..Default::default()
        };
        match self.rng.weighted(&[60, 25, 15]) {
            0 => {
                h.base = HEAP_WINDOWS + self.rng.below(8) * (1 << 30);
                h.reserve = self.rng.pick(&[1, 4, 64, 1024, 1 << 18]) * PAGE as u64;
            }
            1 => {}
            _ => {
                h.base = self.rng.interesting_u64();
                h.reserve = self.rng.interesting_u64();
                h.flags = self.rng.interesting_u32() & 3;
                h.heap_size = self.rng.interesting_u64() & 1;
            }
        }
        let bytes = self.encode(&h);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        let r = self.ioctl(Op::Heap, fd, IOC_HEAP, p);
        if r != 0 || !self.rng.chance(60) || p != self.arena(STRUCT_OFF) as u64 {
            return r;
        }
        // SAFETY: the kernel wrote the struct back where `place` put it (the arena).
        let out: dsu_heap = unsafe { std::ptr::read_unaligned(p as *const dsu_heap) };
        if self.maps.len() >= MAX_MAPPINGS {
            self.op_munmap();
        }
        let len = out.reserve as usize;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping of ours.
        let m = unsafe {
            libc::mmap(
                out.base as *mut _,
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                fd,
                DSU_HEAP_MMAP_OFFSET as i64,
            )
        };
        let mr = self.record(Op::Mmap, if m == libc::MAP_FAILED { -1 } else { 0 });
        if mr == 0 {
            if m as u64 != out.base {
                self.stats.finding(format!(
                    "heap window mapped at {m:p}, not at its base {:#x}",
                    out.base
                ));
            }
            self.maps.push(Mapping {
                addr: m as usize,
                len,
                prot,
                heap: true,
            });
        }
        r
    }

    /// HEAP_GROW: mostly a few pages more, sometimes past every limit or zero.
    fn op_heap_grow(&mut self) -> i64 {
        let fd = self.pick_fd();
        let mut g = dsu_heap_grow {
            size: size_of::<dsu_heap_grow>() as u32,
            min_size: self.rng.range(1, 64) * PAGE as u64 - self.rng.below(2),
            ..Default::default()
        };
        if self.rng.chance(20) {
            g.min_size = self.rng.interesting_u64();
            g.flags = self.rng.interesting_u32() & 1;
            g.heap_size = self.rng.interesting_u64() & 1;
        }
        let bytes = self.encode(&g);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        self.ioctl(Op::HeapGrow, fd, IOC_HEAP_GROW, p)
    }

    /// HEAP_DISCARD: page-aligned ranges near the start, sometimes anything.
    fn op_heap_discard(&mut self) -> i64 {
        let fd = self.pick_fd();
        let mut d = dsu_heap_discard {
            size: size_of::<dsu_heap_discard>() as u32,
            offset: self.rng.below(32) * PAGE as u64,
            length: self.rng.range(1, 16) * PAGE as u64,
            ..Default::default()
        };
        if self.rng.chance(25) {
            d.offset = self.rng.interesting_u64();
            d.length = self.rng.interesting_u64();
            d.flags = self.rng.interesting_u32() & 1;
        }
        let bytes = self.encode(&d);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        self.ioctl(Op::HeapDiscard, fd, IOC_HEAP_DISCARD, p)
    }

    /// READ_HEAP of a pool segment into the data area (or a bad pointer).
    /// DSU_IOC_SNAPSHOT of a pool segment (sometimes with bad flags or out fields); the fd
    /// is kept for `op_snapshot_fd`, the oldest closed past `MAX_SNAPSHOTS`.
    fn op_snapshot(&mut self) -> i64 {
        let fd = self.pick_fd();
        let (_, seg) = self.seg_name();
        let mut s = dsu_snapshot {
            size: size_of::<dsu_snapshot>() as u32,
            ..Default::default()
        };
        if self.rng.chance(15) {
            s.flags = self.rng.interesting_u32();
            s.fd = self.rng.interesting_u32() as i32;
            s.taken_ns = self.rng.interesting_u64();
        }
        set_cstr(&mut s.segment, &seg);
        let bytes = self.encode(&s);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        let r = self.ioctl(Op::Snapshot, fd, IOC_SNAPSHOT, p);
        if r == 0 && p as usize == self.arena(STRUCT_OFF) as usize {
            let out: dsu_snapshot = read_struct(p as *const u8);
            if out.fd >= 0 {
                self.snapshots.push(out.fd);
                if self.snapshots.len() > MAX_SNAPSHOTS {
                    let old = self.snapshots.remove(0);
                    // SAFETY: an fd this worker owns.
                    unsafe { libc::close(old) };
                }
            }
        }
        r
    }

    /// DSU_IOC_LOCK_TOKEN, now and then with bad flags or through a bad pointer.
    fn op_lock_token(&mut self) -> i64 {
        let fd = self.pick_fd();
        let mut t = dsu_lock_token {
            size: size_of::<dsu_lock_token>() as u32,
            ..Default::default()
        };
        if self.rng.chance(15) {
            t.flags = self.rng.interesting_u32();
            t.token = self.rng.interesting_u64();
        }
        let bytes = self.encode(&t);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        let r = self.ioctl(Op::LockToken, fd, IOC_LOCK_TOKEN, p);
        if r == 0 && p as usize == self.arena(STRUCT_OFF) as usize {
            let out: dsu_lock_token = read_struct(p as *const u8);
            if out.token & (DSU_LOCK_TOKEN_ISSUED as u64) == 0 {
                self.stats
                    .finding(format!("LOCK_TOKEN gave {:#x} without bit 63", out.token));
            }
        }
        r
    }

    /// DSU_IOC_LOCK_OWNER on an address of one of this worker's mappings (a segment's, a
    /// heap window's), of the arena (private), or an interesting one, with this process's
    /// token, a mutation of it or any number.
    fn op_lock_owner(&mut self) -> i64 {
        let fd = self.pick_fd();
        let addr = match self.rng.below(4) {
            0 | 1 if !self.maps.is_empty() => {
                let m = &self.maps[self.rng.below(self.maps.len() as u64) as usize];
                (m.addr + self.rng.below(m.len as u64 + 8) as usize) as u64
            }
            2 => self.arena(DATA_OFF) as u64,
            _ => self.rng.interesting_u64(),
        };
        let own = {
            let mut t = dsu_lock_token {
                size: size_of::<dsu_lock_token>() as u32,
                ..Default::default()
            };
            // SAFETY: a valid struct on this worker's fd (any answer is fine).
            unsafe { libc::ioctl(fd, IOC_LOCK_TOKEN as libc::c_ulong, &mut t) };
            t.token
        };
        let token = match self.rng.below(4) {
            0 => own,
            1 => own ^ (1 << self.rng.below(64)),
            2 => own.wrapping_add(self.rng.below(4)),
            _ => self.rng.interesting_u64(),
        };
        let mut q = dsu_lock_owner {
            size: size_of::<dsu_lock_owner>() as u32,
            token,
            addr,
            ..Default::default()
        };
        if self.rng.chance(10) {
            q.flags = self.rng.interesting_u32();
            q.__pad = self.rng.interesting_u32();
        }
        let bytes = self.encode(&q);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        let r = self.ioctl(Op::LockOwner, fd, IOC_LOCK_OWNER, p);
        if r == 0 && p as usize == self.arena(STRUCT_OFF) as usize {
            let out: dsu_lock_owner = read_struct(p as *const u8);
            let issued = token & (DSU_LOCK_TOKEN_ISSUED as u64) != 0;
            let ok = match out.state {
                DSU_LOCK_OWNER_UNKNOWN => !issued,
                DSU_LOCK_OWNER_LIVE | DSU_LOCK_OWNER_GONE => issued,
                _ => false,
            };
            if !ok {
                self.stats.finding(format!(
                    "LOCK_OWNER answered state {} for token {token:#x}",
                    out.state
                ));
            }
        }
        r
    }

    /// Something on a snapshot fd: pread at an interesting offset and length, the fd's
    /// LIST_VARIABLES or READ_VAR with random fields, a random ioctl, mmap, write, close.
    fn op_snapshot_fd(&mut self) {
        let Some(&fd) = self
            .snapshots
            .get(self.rng.below(MAX_SNAPSHOTS as u64) as usize)
        else {
            return;
        };
        let r = match self.rng.below(7) {
            0 | 1 => {
                let off = if self.rng.chance(3) {
                    self.rng.interesting_u64()
                } else if self.rng.chance(2) {
                    DSU_HEAP_MMAP_OFFSET + self.rng.below(8 * PAGE as u64)
                } else {
                    self.rng.below(64 * PAGE as u64)
                };
                let len = self.rng.below(DATA_LEN as u64 + 1) as usize;
                let buf = self.place(&[], DATA_OFF, DATA_LEN);
                // SAFETY: the kernel must handle any buffer; a valid one is DATA_LEN long.
                unsafe { libc::pread(fd, buf as *mut libc::c_void, len, off as i64) as i64 }
            }
            2 => {
                let rec = self.place(&[], ARRAY_OFF, ARRAY_LEN);
                let mut l = dsu_list {
                    size: size_of::<dsu_list>() as u32,
                    record_size: size_of::<dsu_variable_info>() as u32,
                    start: self.rng.below(4) as u32,
                    count: self.rng.below(40) as u32,
                    records: rec,
                    ..Default::default()
                };
                if self.rng.chance(10) {
                    l.segment[0] = b'x' as core::ffi::c_char;
                    l.record_size = self.rng.interesting_u32();
                }
                let bytes = self.encode(&l);
                let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
                // SAFETY: the kernel must handle any argument.
                unsafe { libc::ioctl(fd, IOC_LIST_VARIABLES as _, p) as i64 }
            }
            3 => {
                let i = self.rng.below(VAR_POOL);
                let name = self.var_name(i);
                let buf = self.place(&[], DATA_OFF, DATA_LEN);
                let mut r = dsu_read_var {
                    size: size_of::<dsu_read_var>() as u32,
                    flags: self.rng.below(4) as u32,
                    offset: self.rng.below(2 * PAGE as u64),
                    length: self.rng.below(DATA_LEN as u64 + 1),
                    buf,
                    ..Default::default()
                };
                if self.rng.chance(10) {
                    r.offset = self.rng.interesting_u64();
                    r.segment[0] = b'x' as core::ffi::c_char;
                }
                set_cstr(&mut r.name, &name);
                let bytes = self.encode(&r);
                let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
                // SAFETY: the kernel must handle any argument.
                unsafe { libc::ioctl(fd, IOC_READ_VAR as _, p) as i64 }
            }
            4 => {
                let cmd = self.rng.interesting_u64();
                // SAFETY: unknown requests must be refused without touching the argument.
                unsafe { libc::ioctl(fd, cmd as _, self.arena(STRUCT_OFF)) as i64 }
            }
            5 => {
                // SAFETY: a mapping attempt the kernel refuses (nothing is mapped).
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        PAGE,
                        libc::PROT_READ,
                        libc::MAP_SHARED,
                        fd,
                        0,
                    )
                };
                if p != libc::MAP_FAILED {
                    self.stats
                        .finding(format!("mmap of a snapshot fd succeeded at {p:?}"));
                    // SAFETY: the mapping just made.
                    unsafe { libc::munmap(p, PAGE) };
                }
                -1
            }
            _ => {
                self.snapshots.retain(|&f| f != fd);
                // SAFETY: an fd this worker owns.
                unsafe { libc::close(fd) as i64 }
            }
        };
        // `record` reads errno for a negative result.
        self.record(Op::SnapshotFd, r.min(0));
    }

    fn op_read_heap(&mut self) -> i64 {
        let fd = self.pick_fd();
        let (_, seg) = self.seg_name();
        let buf = self.place(&[], DATA_OFF, DATA_LEN);
        let mut r = dsu_read_heap {
            size: size_of::<dsu_read_heap>() as u32,
            offset: self.rng.below(64 * PAGE as u64),
            length: self.rng.below(DATA_LEN as u64 + 1),
            buf,
            ..Default::default()
        };
        if self.rng.chance(20) {
            r.offset = self.rng.interesting_u64();
            r.length = self.rng.interesting_u64();
            r.flags = self.rng.interesting_u32() & 1;
        }
        set_cstr(&mut r.segment, &seg);
        let bytes = self.encode(&r);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        self.ioctl(Op::ReadHeap, fd, IOC_READ_HEAP, p)
    }

    /// A view of segment pages: mostly pages the handle's RESOLVEs reported, sometimes
    /// past the end; tracked like a version's mapping (every page backed).
    fn op_view(&mut self) -> i64 {
        if self.maps.len() >= MAX_MAPPINGS {
            self.op_munmap();
        }
        let fd = self.pick_fd();
        let known = self
            .own_index(fd)
            .map(|i| self.own[i].known_pages)
            .unwrap_or(0);
        let first = self.rng.below(known.max(1) + 2);
        let pages = self.rng.range(1, 4) as usize;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = if self.rng.chance(90) {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // SAFETY: no MAP_FIXED: the kernel picks a free range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * PAGE,
                prot,
                flags,
                fd,
                (DSU_VIEW_MMAP_OFFSET + first * PAGE as u64) as i64,
            )
        };
        let r = self.record(Op::Mmap, if p == libc::MAP_FAILED { -1 } else { 0 });
        if r == 0 {
            if flags == libc::MAP_PRIVATE {
                self.stats
                    .finding("a private view of a dsu segment succeeded".to_string());
            }
            self.maps.push(Mapping {
                addr: p as usize,
                len: pages * PAGE,
                prot,
                heap: false,
            });
        }
        r
    }

    /// READY: usually with argument 0 (ignored by the module), on any handle (bound ones
    /// commit; others EBADFD).
    fn op_ready(&mut self, fd: Option<i32>) -> i64 {
        let fd = fd.unwrap_or_else(|| self.pick_fd());
        let arg = if self.rng.chance(90) {
            0
        } else {
            self.rng.interesting_u64()
        };
        self.ioctl(Op::Ready, fd, IOC_READY, arg)
    }

    /// GC of one of our segments: dry runs and reclaims with small ages, sometimes any
    /// flags, sizes, counts and output fields.
    fn op_gc(&mut self) -> i64 {
        let fd = self.pick_fd();
        let (_, name) = self.seg_name();
        let cap = ARRAY_LEN / size_of::<dsu_variable_info>();
        let count = self.rng.below(cap as u64 + 1) as u32;
        let records = self.place(&[], ARRAY_OFF, ARRAY_LEN);
        let mut c = dsu_gc {
            size: size_of::<dsu_gc>() as u32,
            flags: self.rng.pick(&[
                0,
                DSU_GC_DRY_RUN,
                DSU_GC_MIN_AGE,
                DSU_GC_DRY_RUN | DSU_GC_MIN_AGE,
            ]),
            record_size: size_of::<dsu_variable_info>() as u32,
            records,
            count,
            ..Default::default()
        };
        if c.flags & DSU_GC_MIN_AGE != 0 {
            c.min_age = self.rng.pick(&[0, 1, 2, 5]);
        }
        if self.rng.chance(20) {
            c.flags = self.rng.interesting_u32();
            c.min_age = self.rng.interesting_u32();
            c.count = self.rng.interesting_u32();
            c.record_size = self.rng.interesting_u32();
            c.total = self.rng.interesting_u32() & 1;
            c.pages = self.rng.interesting_u64() & 1;
            c.generation = self.rng.interesting_u64() & 1;
        }
        set_cstr(&mut c.segment, &name);
        let bytes = self.encode(&c);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        self.ioctl(Op::Gc, fd, IOC_GC, p)
    }

    /// A fd for a restore ioctl: mostly one of this worker's restoring handles (or fresh
    /// ones, for RESTORE), else any.
    fn pick_restore_fd(&mut self, want: St) -> i32 {
        let fds: Vec<i32> = self
            .own
            .iter()
            .filter(|h| h.st == want)
            .map(|h| h.fd)
            .collect();
        if !fds.is_empty() && self.rng.chance(85) {
            self.rng.pick(&fds)
        } else {
            self.pick_fd()
        }
    }

    /// RESTORE: a pool name (the pool's segments often exist: EEXIST) or one only restores
    /// use, any mode.
    fn op_restore(&mut self) -> i64 {
        // Handles are soon attached: open a fresh one now and then.
        if !self.own.iter().any(|h| h.st == St::Fresh) && self.rng.chance(70) {
            self.op_open();
        }
        let fd = self.pick_restore_fd(St::Fresh);
        let (seg, mut name) = self.seg_name();
        let own_name = self.rng.chance(60);
        if own_name {
            // A name of its own, which only restores create (cleanup destroys it by prefix),
            // often destroyed first so that the restore can commit.
            name = format!("{}-r{seg}", self.cfg.prefix).into_bytes();
            if self.rng.chance(50) {
                self.op_destroy(Some(name.clone()));
            }
        }
        let mut r = dsu_restore {
            size: size_of::<dsu_restore>() as u32,
            mode: self
                .rng
                .pick(&[0, 0o600, 0o640, 0o666, 0o777, 0o1000, u32::MAX]),
            ..Default::default()
        };
        if self.rng.chance(5) {
            r.flags = self.rng.interesting_u32();
            r.__pad = self.rng.interesting_u32() & 1;
        }
        set_cstr(&mut r.segment, &name);
        let bytes = self.encode(&r);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        let ret = self.ioctl(Op::Restore, fd, IOC_RESTORE, p);
        if ret == 0 {
            if let Some(i) = self.own_index(fd) {
                self.own[i].st = St::Restoring;
                self.own[i].seg = seg;
                self.own[i].known_pages = 0;
            }
            // Often a whole restore at once, so that COMMITs race others' ATTACHes and
            // restores with something to publish.
            if own_name && self.rng.chance(60) {
                for _ in 0..self.rng.range(0, 3) {
                    self.op_restore_var(Some(fd));
                }
                self.op_restore_commit(Some(fd));
            }
        }
        ret
    }

    /// RESTORE_VAR: a pool variable (as RESOLVE's entries, with their corruptions), with
    /// created_ns, a label and now and then output fields set.
    fn op_restore_var(&mut self, fd: Option<i32>) -> i64 {
        let fd = fd.unwrap_or_else(|| self.pick_restore_fd(St::Restoring));
        let idx = self.rng.below(VAR_POOL);
        // Mostly a well-formed pool variable (its bytes from the data region), else one with
        // RESOLVE's corruptions.
        let e = if self.rng.chance(70) {
            let mut e = dsu_var {
                size: VAR_SIZES[(idx % 8) as usize],
                align: 8,
                fingerprint: idx.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                ..Default::default()
            };
            if self.rng.chance(50) {
                let fill = vec![idx as u8 ^ 0x3c; (e.size as usize).min(DATA_LEN)];
                e.init = self.place_kind(Ptr::Valid, &fill, DATA_OFF, DATA_LEN);
            }
            set_cstr(&mut e.name, format!("v{idx}").as_bytes());
            e
        } else {
            self.var_entry(idx)
        };
        let mut v = dsu_restore_var {
            size: size_of::<dsu_restore_var>() as u32,
            flags: e.flags & !DSU_VAR_MIGRATE,
            var_size: e.size,
            align: e.align,
            fingerprint: e.fingerprint,
            value: e.init,
            type_desc: e.type_desc,
            type_desc_len: e.type_desc_len,
            __pad: e.__pad & 1,
            created_ns: self.rng.next_u64(),
            name: e.name,
            ..Default::default()
        };
        let label = self.label();
        set_cstr(&mut v.created_label, &label);
        if self.rng.chance(3) {
            v.first_page = self.rng.next_u64();
            v.page_count = self.rng.interesting_u64();
        }
        let bytes = self.encode(&v);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        self.ioctl(Op::RestoreVar, fd, IOC_RESTORE_VAR, p)
    }

    /// RESTORE_HEAP: bytes near the start of the heap, sometimes anything.
    fn op_restore_heap(&mut self) -> i64 {
        let fd = self.pick_restore_fd(St::Restoring);
        let len = self.rng.range(1, DATA_LEN as u64 / 2) as usize;
        let fill = vec![0xa5u8; len];
        let kind = self.pick_ptr();
        let mut h = dsu_restore_heap {
            size: size_of::<dsu_restore_heap>() as u32,
            offset: self.rng.below(16 * PAGE as u64),
            length: len as u64,
            buf: self.place_kind(kind, &fill, DATA_OFF, DATA_LEN),
            ..Default::default()
        };
        if self.rng.chance(20) {
            h.offset = self.rng.interesting_u64();
            h.length = self.rng.interesting_u64();
            h.flags = self.rng.interesting_u32() & 1;
        }
        let bytes = self.encode(&h);
        let p = self.place(&bytes, STRUCT_OFF, STRUCT_LEN);
        self.ioctl(Op::RestoreHeap, fd, IOC_RESTORE_HEAP, p)
    }

    /// RESTORE_COMMIT: the handle becomes attached on success.
    fn op_restore_commit(&mut self, fd: Option<i32>) -> i64 {
        let fd = fd.unwrap_or_else(|| self.pick_restore_fd(St::Restoring));
        let arg = self.rng.interesting_u64();
        let r = self.ioctl(Op::RestoreCommit, fd, IOC_RESTORE_COMMIT, arg);
        if r == 0 {
            if let Some(i) = self.own_index(fd) {
                self.own[i].st = St::Attached;
            }
        }
        r
    }

    fn op_raw_ioctl(&mut self) {
        let fd = self.pick_fd();
        let cmd: u64 = match self.rng.below(3) {
            // dsu's type, any number, any direction and size.
            0 => {
                let nr = self.rng.below(24);
                let dir = self.rng.below(4);
                let size = self.rng.below(1 << 14);
                (dir << 30) | (size << 16) | ((DSU_IOC_MAGIC as u64) << 8) | nr
            }
            // A real command with another size or direction encoded.
            1 => {
                let real = self.rng.pick(&[
                    IOC_ATTACH,
                    IOC_RESOLVE,
                    IOC_BIND,
                    IOC_LIST_SEGMENTS,
                    IOC_LIST_VARIABLES,
                    IOC_LIST_VERSIONS,
                    IOC_READ_VAR,
                    IOC_DESTROY,
                    IOC_SETATTR,
                    IOC_HEAP,
                    IOC_HEAP_GROW,
                    IOC_HEAP_DISCARD,
                    IOC_READ_HEAP,
                    IOC_READY,
                    IOC_GC,
                    IOC_RESTORE,
                    IOC_RESTORE_VAR,
                    IOC_RESTORE_HEAP,
                    IOC_RESTORE_COMMIT,
                ]);
                (real & 0xffff) | (self.rng.below(4) << 30) | (self.rng.below(1 << 14) << 16)
            }
            // Anything, except the generic tty, filesystem-freeze and fs-flags types which
            // act on things other than dsu (FIONBIO would make a blocking read hang).
            _ => {
                let c = self.rng.next_u64() as u32 as u64;
                let ty = (c >> 8) & 0xff;
                if [0x54, 0x58, 0x66, 0x00, 0x12, 0x94].contains(&ty) {
                    (c & !0xff00) | ((DSU_IOC_MAGIC as u64) << 8)
                } else {
                    c
                }
            }
        };
        let arg = if self.rng.chance(70) {
            let n = self.rng.range(1, 512) as usize;
            let junk: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
            self.place(&junk, STRUCT_OFF, STRUCT_LEN)
        } else {
            self.rng.interesting_u64()
        };
        self.ioctl(Op::RawIoctl, fd, cmd, arg);
    }

    fn op_mmap(&mut self, fd: Option<i32>) -> i64 {
        if self.maps.len() >= MAX_MAPPINGS {
            self.op_munmap();
        }
        let fd = fd.unwrap_or_else(|| self.pick_fd());
        let map_pages = self
            .own_index(fd)
            .map(|i| self.own[i].map_pages)
            .unwrap_or(0);
        let exact = (map_pages.max(1) as usize) * PAGE;
        let len: usize = match self.rng.weighted(&[65, 35]) {
            0 => exact,
            _ => self.rng.pick(&[
                0,
                1,
                PAGE - 1,
                PAGE,
                exact - 1,
                exact + 1,
                exact + PAGE,
                exact.saturating_sub(PAGE),
                2 * exact,
                1 << 40,
            ]),
        };
        let off: i64 = match self.rng.weighted(&[85, 15]) {
            0 => 0,
            _ => self.rng.pick(&[
                PAGE as i64,
                2 * PAGE as i64,
                1 << 40,
                1,
                i64::MAX & !(PAGE as i64 - 1),
            ]),
        };
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let prot = match self.rng.weighted(&[75, 8, 4, 4, 4, 2]) {
            0 => rw,
            1 => libc::PROT_READ,
            2 => rw | libc::PROT_EXEC,
            3 => libc::PROT_WRITE,
            4 => libc::PROT_NONE,
            _ => libc::PROT_READ | libc::PROT_EXEC,
        };
        let flags = match self.rng.weighted(&[75, 10, 5, 4, 3, 3]) {
            0 => libc::MAP_SHARED,
            1 => libc::MAP_PRIVATE,
            2 => libc::MAP_SHARED | libc::MAP_POPULATE,
            3 => libc::MAP_SHARED_VALIDATE,
            4 => libc::MAP_SHARED | libc::MAP_LOCKED,
            _ => libc::MAP_PRIVATE | libc::MAP_POPULATE,
        };
        // SAFETY: no MAP_FIXED, so the kernel picks a free range; nothing of ours is replaced.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
        let r = if p == libc::MAP_FAILED { -1 } else { 0 };
        let r = self.record(Op::Mmap, r);
        if r == 0 {
            self.maps.push(Mapping {
                addr: p as usize,
                len,
                prot,
                heap: false,
            });
            if flags & libc::MAP_TYPE == libc::MAP_PRIVATE && self.own_index(fd).is_some() {
                // The design refuses private mappings (copy-on-write would break sharing).
                self.stats.finding(format!(
                    "mmap MAP_PRIVATE of a dsu handle succeeded (len {len}, off {off})"
                ));
            }
        }
        r
    }

    fn take_mapping(&mut self) -> Option<Mapping> {
        if self.maps.is_empty() {
            return None;
        }
        let i = self.rng.below(self.maps.len() as u64) as usize;
        Some(self.maps.swap_remove(i))
    }

    fn op_munmap(&mut self) {
        let Some(m) = self.take_mapping() else { return };
        let pages = m.len.div_ceil(PAGE);
        if pages >= 2 && self.rng.chance(40) {
            // Punch one page out: splits the VMA (vm_ops open) or trims it.
            let k = self.rng.below(pages as u64) as usize;
            // SAFETY: inside a mapping this worker owns.
            let r = unsafe { libc::munmap((m.addr + k * PAGE) as *mut _, PAGE) };
            if self.record(Op::Munmap, r as i64) == 0 {
                if k > 0 {
                    self.maps.push(Mapping {
                        addr: m.addr,
                        len: k * PAGE,
                        prot: m.prot,
                        heap: m.heap,
                    });
                }
                if k + 1 < pages {
                    self.maps.push(Mapping {
                        addr: m.addr + (k + 1) * PAGE,
                        len: (pages - k - 1) * PAGE,
                        prot: m.prot,
                        heap: m.heap,
                    });
                }
            } else {
                self.maps.push(m);
            }
        } else {
            // SAFETY: a mapping this worker owns.
            let r = unsafe { libc::munmap(m.addr as *mut _, m.len) };
            if self.record(Op::Munmap, r as i64) != 0 {
                self.maps.push(m);
            }
        }
    }

    fn op_mremap(&mut self) {
        let Some(m) = self.take_mapping() else { return };
        let pages = m.len.div_ceil(PAGE).max(1);
        let (new_len, flags) = match self.rng.below(3) {
            0 => ((pages + 1) * PAGE, libc::MREMAP_MAYMOVE),
            1 if pages > 1 => ((pages - 1) * PAGE, 0),
            _ => (pages * PAGE, libc::MREMAP_MAYMOVE),
        };
        // SAFETY: remaps a mapping this worker owns; without MREMAP_FIXED nothing else moves.
        let p = unsafe {
            if flags == 0 {
                libc::mremap(m.addr as *mut _, pages * PAGE, new_len, 0)
            } else {
                // Force a move now and then by asking for a fresh placement of the same size.
                libc::mremap(m.addr as *mut _, pages * PAGE, new_len, flags)
            }
        };
        let r = self.record(Op::Mremap, if p == libc::MAP_FAILED { -1 } else { 0 });
        if r == 0 {
            if m.heap && (p as usize != m.addr || new_len > m.len) {
                // The heap window's vm_ops refuse a move and VM_DONTEXPAND a growth; only
                // shrinking in place may succeed.
                self.stats.finding(format!(
                    "mremap of a heap window succeeded ({:#x}, {} -> {new_len} bytes at {p:p})",
                    m.addr, m.len
                ));
            }
            self.maps.push(Mapping {
                addr: p as usize,
                len: new_len,
                prot: m.prot,
                heap: m.heap,
            });
        } else {
            self.maps.push(m);
        }
    }

    fn op_mprotect(&mut self) {
        let Some(mut m) = self.take_mapping() else {
            return;
        };
        let prot = self.rng.pick(&[
            libc::PROT_READ,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_NONE,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        ]);
        // SAFETY: a mapping this worker owns.
        let r = unsafe { libc::mprotect(m.addr as *mut _, m.len.div_ceil(PAGE) * PAGE, prot) };
        if self.record(Op::Mprotect, r as i64) == 0 {
            m.prot = prot;
        }
        self.maps.push(m);
    }

    fn op_madvise(&mut self) {
        let Some(m) = self
            .maps
            .get(self.rng.below(self.maps.len().max(1) as u64) as usize)
            .copied()
        else {
            return;
        };
        let advice = self.rng.pick(&[
            libc::MADV_DONTNEED,
            libc::MADV_DONTNEED,
            libc::MADV_WILLNEED,
            libc::MADV_DONTFORK,
            libc::MADV_DOFORK,
            libc::MADV_COLD,
            libc::MADV_PAGEOUT,
            libc::MADV_POPULATE_READ,
            libc::MADV_POPULATE_WRITE,
            libc::MADV_REMOVE,
            libc::MADV_FREE,
            libc::MADV_NORMAL,
            libc::MADV_SEQUENTIAL,
        ]);
        // SAFETY: advice on a mapping this worker owns; none of these discard our own memory
        // other than the dsu mapping (DONTNEED/FREE only drop PTEs of shared pages).
        let r = unsafe { libc::madvise(m.addr as *mut _, m.len.div_ceil(PAGE) * PAGE, advice) };
        self.record(Op::Madvise, r as i64);
    }

    fn drain_pipe(&mut self) {
        let mut sink = [0u8; 512];
        // SAFETY: reads into a local buffer from this worker's non-blocking pipe.
        while unsafe { libc::read(self.pipe[0], sink.as_mut_ptr() as *mut _, sink.len()) } > 0 {}
    }

    /// Reads and writes pages of a mapping through the kernel (pipe copies), so a bad
    /// mapping costs an EFAULT instead of killing the fuzzer. A successful dsu mapping must be
    /// readable and writable as its protection says.
    fn op_touch(&mut self) {
        let Some(m) = self
            .maps
            .get(self.rng.below(self.maps.len().max(1) as u64) as usize)
            .copied()
        else {
            return;
        };
        self.drain_pipe();
        let pages = m.len.div_ceil(PAGE);
        for _ in 0..self.rng.range(1, 4) {
            let k = self.rng.below(pages as u64) as usize;
            let off = (self.rng.below(PAGE as u64 / 8) * 8) as usize;
            if off + 8 > m.len - k * PAGE && m.len < (k + 1) * PAGE {
                continue;
            }
            let addr = m.addr + k * PAGE + off;
            if m.prot & libc::PROT_READ != 0 {
                // SAFETY: the kernel copies from our mapping into the pipe, or fails with EFAULT.
                let r = unsafe { libc::write(self.pipe[1], addr as *const _, 8) } as i64;
                self.check_touch(r, "reading", addr, m);
            }
            if m.prot & libc::PROT_WRITE != 0 {
                let v = self.rng.next_u64().to_ne_bytes();
                // SAFETY: writes 8 bytes of a local into our pipe, then lets the kernel copy
                // them into the mapping.
                unsafe { libc::write(self.pipe[1], v.as_ptr() as *const _, 8) };
                // SAFETY: as above.
                let r = unsafe { libc::read(self.pipe[0], addr as *mut _, 8) } as i64;
                self.check_touch(r, "writing", addr, m);
            }
        }
    }

    /// Records a kernel copy to or from a mapped dsu page (`r`, with errno still set): a
    /// fault there is a finding, since every page of a mapping must be backed (except in a
    /// heap window, past the heap's size).
    fn check_touch(&mut self, r: i64, what: &str, addr: usize, m: Mapping) {
        if self.record(Op::Touch, r) == -(libc::EFAULT as i64) && !m.heap {
            self.stats.finding(format!(
                "{what} a mapped dsu page faulted (addr {addr:#x}, len {})",
                m.len
            ));
        }
        self.drain_pipe();
    }

    /// Remote access (get_user_pages): /proc/self/mem and process_vm_readv/writev.
    fn op_proc_mem(&mut self) {
        let Some(m) = self
            .maps
            .get(self.rng.below(self.maps.len().max(1) as u64) as usize)
            .copied()
        else {
            return;
        };
        let mut buf = [0u8; 64];
        let addr = m.addr + (self.rng.below(m.len.div_ceil(PAGE) as u64) as usize) * PAGE;
        let r = match self.rng.below(4) {
            0 => {
                // SAFETY: pread on /proc/self/mem into a local buffer; the kernel checks the target.
                (unsafe { libc::pread(self.proc_mem, buf.as_mut_ptr() as *mut _, 64, addr as i64) })
                    as i64
            }
            1 => {
                // SAFETY: as above; FOLL_FORCE writes go through the dsu mapping or fail.
                (unsafe { libc::pwrite(self.proc_mem, buf.as_ptr() as *const _, 64, addr as i64) })
                    as i64
            }
            2 => {
                let local = libc::iovec {
                    iov_base: buf.as_mut_ptr() as *mut _,
                    iov_len: 64,
                };
                let remote = libc::iovec {
                    iov_base: addr as *mut _,
                    iov_len: 64,
                };
                // SAFETY: process_vm_readv on our own pid into a local buffer.
                unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) as i64 }
            }
            _ => {
                let local = libc::iovec {
                    iov_base: buf.as_mut_ptr() as *mut _,
                    iov_len: 64,
                };
                let remote = libc::iovec {
                    iov_base: addr as *mut _,
                    iov_len: 64,
                };
                // SAFETY: process_vm_writev on our own pid from a local buffer into our mapping.
                unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) as i64 }
            }
        };
        self.record(Op::ProcMem, r);
    }

    fn op_read(&mut self) {
        let fd = self.pick_fd();
        if fd == self.pipe[0] {
            return;
        }
        // Never block: read only if the file is non-blocking or poll says there is an event.
        // SAFETY: fcntl and poll on a descriptor we hold (or -1, which fails).
        let nonblock = unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK != 0;
        if !nonblock {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: a one-element pollfd array on the stack.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            self.record(Op::Poll, n as i64);
            if n <= 0 || p.revents & libc::POLLIN == 0 {
                return;
            }
        }
        let len: usize = self.rng.pick(&[0, 1, 63, 64, 65, 128, 640, 4096, 1 << 20]);
        let buf = self.place(&[], DATA_OFF, DATA_LEN);
        // SAFETY: the kernel validates buf; valid kinds point into the arena's data region
        // (at most DATA_LEN bytes; larger reads may spill into the following guard page and fail).
        let len = if buf >= self.arena(DATA_OFF) as u64 && buf < self.arena(ARENA_LEN) as u64 {
            len.min(DATA_LEN - 8)
        } else {
            len
        };
        // SAFETY: see above.
        let r = unsafe { libc::read(fd, buf as *mut _, len) } as i64;
        self.record(Op::Read, r);
    }

    fn op_poll(&mut self) {
        let mut fds: Vec<libc::pollfd> = self
            .own
            .iter()
            .map(|h| h.fd)
            .chain(self.shared.iter().copied())
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN | libc::POLLOUT | libc::POLLPRI,
                revents: 0,
            })
            .collect();
        let timeout = if self.rng.chance(80) { 0 } else { 1 };
        // SAFETY: a pollfd array we own.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, timeout) };
        self.record(Op::Poll, r as i64);
    }

    /// Forks a child that shares our handles and mappings (fork copies dsu VMAs: vm_ops open),
    /// touches them and exits or is killed. The child runs only async-signal-safe calls.
    fn op_fork(&mut self) {
        let fds: Vec<i32> = self
            .own
            .iter()
            .map(|h| h.fd)
            .chain(self.shared.iter().copied())
            .collect();
        let maps: Vec<Mapping> = self.maps.clone();
        let close_first = self.rng.chance(50);
        let kill = self.rng.chance(50);
        let list = dsu_list {
            size: size_of::<dsu_list>() as u32,
            record_size: size_of::<dsu_version_info>() as u32,
            count: 8,
            records: self.arena(ARRAY_OFF) as u64,
            ..Default::default()
        };
        let pipe = self.pipe;
        // SAFETY: the child only makes raw system calls on memory prepared before the fork
        // (no allocation, no locks) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                for m in &maps {
                    if m.prot & libc::PROT_READ != 0 {
                        libc::write(pipe[1], m.addr as *const _, 8);
                    }
                    if m.prot & libc::PROT_WRITE != 0 {
                        libc::read(pipe[0], m.addr as *mut _, 8);
                    }
                }
                for fd in &fds {
                    libc::ioctl(
                        *fd,
                        IOC_LIST_VERSIONS as libc::c_ulong,
                        &list as *const dsu_list,
                    );
                    if close_first {
                        libc::close(*fd);
                    }
                }
                libc::_exit(0);
            }
        }
        let r = self.record(Op::Fork, pid as i64);
        if r > 0 {
            if kill {
                // SAFETY: signals our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let mut status = 0;
            // SAFETY: reaps our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) != libc::SIGKILL {
                self.stats.finding(format!(
                    "forked child died by signal {}",
                    libc::WTERMSIG(status)
                ));
            }
        }
        self.drain_pipe();
    }

    /// Directory consistency of the pool segments: variables never overlap, each has
    /// ceil(size / PAGE) pages, all lie inside the segment's pages.
    fn op_check(&mut self) {
        let Some(fd) = self
            .shared
            .first()
            .copied()
            .or_else(|| self.own.first().map(|h| h.fd))
        else {
            return;
        };
        let segs = match list_segments(fd, self.arena(ARRAY_OFF), 64) {
            Ok(s) => s,
            Err(e) => {
                self.stats.count(Op::Check, e);
                return;
            }
        };
        self.stats.count(Op::Check, 0);
        for s in segs {
            let name = cstr(&s.name);
            if !name.starts_with(&format!("{}-", self.cfg.prefix)) {
                continue;
            }
            if s.versions > s.handles {
                self.stats.finding(format!(
                    "segment {name}: {} versions but {} handles",
                    s.versions, s.handles
                ));
            }
            let cap = ARRAY_LEN / size_of::<dsu_variable_info>();
            let Ok((vars, total)) = list_variables(fd, self.arena(ARRAY_OFF), cap, &s.name) else {
                continue;
            };
            self.stats.count(Op::Check, 0);
            if total as usize != vars.len() {
                continue;
            }
            let mut ranges: Vec<(u64, u64, String)> = Vec::new();
            for v in &vars {
                let vname = cstr(&v.name);
                let want = v.size.div_ceil(PAGE as u64);
                if v.page_count != want {
                    self.stats.finding(format!(
                        "{name}/{vname}: size {} but {} pages",
                        v.size, v.page_count
                    ));
                }
                ranges.push((v.first_page, v.page_count, vname));
            }
            ranges.sort();
            for w in ranges.windows(2) {
                if w[0].0 + w[0].1 > w[1].0 {
                    self.stats.finding(format!(
                        "{name}: variables {} and {} overlap: {:?} {:?}",
                        w[0].2,
                        w[1].2,
                        (w[0].0, w[0].1),
                        (w[1].0, w[1].1)
                    ));
                }
            }
            // Comparing with the segment's page count is left to `cleanup`, where nothing
            // races: here another worker may destroy and re-create the name between two
            // listings (and created_ns is too coarse under TCG to tell them apart).
        }
    }

    /// A structured walk through every handle state: fresh, attached, bound, mapped,
    /// segment destroyed; every ioctl and mmap in each, then close.
    fn op_scenario(&mut self) {
        let path = std::ffi::CString::new(self.cfg.dev.clone()).unwrap_or_default();
        // SAFETY: a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if self.record(Op::Open, fd as i64) < 0 {
            return;
        }
        self.own.push(Handle {
            fd,
            st: St::Fresh,
            seg: 0,
            known_pages: 0,
            map_pages: 0,
        });
        let name = format!("{}-s{}", self.cfg.prefix, self.rng.below(4)).into_bytes();
        let every = |w: &mut Worker, fd: i32| {
            w.op_resolve(Some(fd));
            w.op_bind(Some(fd));
            w.op_ready(Some(fd));
            w.op_mmap(Some(fd));
            w.op_list(Op::ListVersions, Some(fd));
            w.op_attach(Some(fd));
        };
        every(self, fd);
        // Attach with a clean struct so that the rest of the walk happens.
        let mut a = dsu_attach {
            size: size_of::<dsu_attach>() as u32,
            mode: 0o600,
            ..Default::default()
        };
        set_cstr(&mut a.name, &name);
        let bytes = bytes_of(&a);
        let p = self.place_kind(Ptr::Valid, &bytes, STRUCT_OFF, STRUCT_LEN);
        if self.ioctl(Op::Attach, fd, IOC_ATTACH, p) == 0 {
            if let Some(i) = self.own_index(fd) {
                self.own[i].st = St::Attached;
            }
            for _ in 0..3 {
                self.op_resolve(Some(fd));
            }
            every(self, fd);
            every(self, fd);
            self.op_touch();
            if self.rng.chance(50) {
                self.op_destroy(Some(name));
                // Destroyed: RESOLVE and BIND answer EIDRM, mappings keep working.
                every(self, fd);
                self.op_touch();
            }
        }
        if self.rng.chance(70) {
            if let Some(i) = self.own_index(fd) {
                self.own.swap_remove(i);
                // SAFETY: the descriptor opened above.
                let r = unsafe { libc::close(fd) };
                self.record(Op::Close, r as i64);
            }
        }
    }
}

/// A LIST_* ioctl of `segment` into `buf` (room for `cap` records of `T`): the records
/// and the total, or an errno.
fn list_records<T: Copy + Default>(
    fd: i32,
    request: u64,
    buf: *mut u8,
    cap: usize,
    segment: [core::ffi::c_char; 64],
) -> Result<(Vec<T>, u32), i32> {
    let mut l = dsu_list {
        size: size_of::<dsu_list>() as u32,
        record_size: size_of::<T>() as u32,
        count: cap as u32,
        records: buf as u64,
        segment,
        ..Default::default()
    };
    // SAFETY: l and buf (cap records) are valid for the kernel to write.
    let r = unsafe { libc::ioctl(fd, request as libc::c_ulong, &mut l as *mut dsu_list) };
    if r < 0 {
        return Err(errno());
    }
    let n = (l.count as usize).min(cap);
    // SAFETY: the kernel wrote n records.
    let records = (0..n)
        .map(|i| read_struct(unsafe { buf.add(i * size_of::<T>()) }))
        .collect();
    Ok((records, l.total))
}

/// LIST_SEGMENTS into `buf` (room for `cap` records): the records or an errno.
pub fn list_segments(fd: i32, buf: *mut u8, cap: usize) -> Result<Vec<dsu_segment_info>, i32> {
    list_records(fd, IOC_LIST_SEGMENTS, buf, cap, [0; 64]).map(|(records, _)| records)
}

/// LIST_VARIABLES of `segment` into `buf`: the records and the total, or an errno.
pub fn list_variables(
    fd: i32,
    buf: *mut u8,
    cap: usize,
    segment: &[core::ffi::c_char; 64],
) -> Result<(Vec<dsu_variable_info>, u32), i32> {
    list_records(fd, IOC_LIST_VARIABLES, buf, cap, *segment)
}

/// Destroys every segment whose name starts with `prefix` (and the odd names the fuzzer
/// tries), then checks that none of them is left: returns the findings.
pub fn cleanup(dev: &str, prefix: &str) -> Vec<String> {
    let mut findings = Vec::new();
    let path = std::ffi::CString::new(dev).unwrap_or_default();
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        findings.push(format!("cleanup: cannot open {dev}: errno {}", errno()));
        return findings;
    }
    let buf_len = 1 << 18;
    let buf = mmap_anon(buf_len, libc::PROT_READ | libc::PROT_WRITE);
    let ours = |n: &str| n.starts_with(prefix) || n == "." || n == "..";
    match list_segments(fd, buf, 64) {
        Ok(segs) => {
            for s in segs {
                let name = cstr(&s.name);
                if !ours(&name) {
                    continue;
                }
                if s.handles != 0 || s.versions != 0 {
                    findings.push(format!(
                        "segment {name}: {} handles and {} versions after every fuzzer process ended",
                        s.handles, s.versions
                    ));
                }
                // Nothing races now: the directory must account for every page exactly. Page
                // indexes of removed variables (aborts, GC) are not reused, so the variables
                // hold `pages` pages at indexes that may run past it, without overlapping.
                let cap = (buf_len / size_of::<dsu_variable_info>()).min(DSU_LIST_MAX as usize);
                if let Ok((vars, total)) = list_variables(fd, buf, cap, &s.name) {
                    if total as usize == vars.len() {
                        let sum: u64 = vars.iter().map(|v| v.page_count).sum();
                        let mut ranges: Vec<(u64, u64)> =
                            vars.iter().map(|v| (v.first_page, v.page_count)).collect();
                        ranges.sort();
                        let overlap = ranges.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0);
                        let top = ranges.last().map_or(0, |r| r.0 + r.1);
                        if sum != s.pages || overlap || vars.len() as u64 != s.variables {
                            findings.push(format!(
                                "segment {name}: {} pages and {} variables, but its {} variables hold {sum} pages up to page {top} (overlapping: {overlap})",
                                s.pages,
                                s.variables,
                                vars.len()
                            ));
                        }
                    }
                }
                if s.flags & DSU_SEGMENT_DESTROYED != 0 {
                    findings.push(format!(
                        "segment {name}: destroyed and unreferenced but still listed"
                    ));
                    continue;
                }
                let d = dsu_destroy {
                    size: size_of::<dsu_destroy>() as u32,
                    flags: 0,
                    name: s.name,
                };
                // SAFETY: a valid struct on the stack.
                let r = unsafe {
                    libc::ioctl(fd, IOC_DESTROY as libc::c_ulong, &d as *const dsu_destroy)
                };
                if r < 0 {
                    findings.push(format!("cleanup: DESTROY {name}: errno {}", errno()));
                }
            }
        }
        Err(e) => findings.push(format!("cleanup: LIST_SEGMENTS: errno {e}")),
    }
    match list_segments(fd, buf, 64) {
        Ok(segs) => {
            for s in segs.iter().filter(|s| ours(&cstr(&s.name))) {
                findings.push(format!(
                    "segment {} still listed after DESTROY with no users",
                    cstr(&s.name)
                ));
            }
        }
        Err(e) => findings.push(format!("cleanup: LIST_SEGMENTS: errno {e}")),
    }
    // SAFETY: our own descriptor and mapping.
    unsafe {
        libc::close(fd);
        libc::munmap(buf as *mut _, buf_len);
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_header() {
        // _IOWR(0xD5, 1, struct dsu_attach): dir 3, size 88.
        assert_eq!(IOC_ATTACH, 0xC058_D501);
        assert_eq!(IOC_DESTROY, 0x4048_D508);
        assert_eq!(IOC_SETATTR, 0x4058_D509);
        assert_eq!(IOC_HEAP, 0xC020_D50A);
        assert_eq!(IOC_HEAP_GROW, 0xC018_D50B);
        assert_eq!(IOC_HEAP_DISCARD, 0x4018_D50C);
        assert_eq!(IOC_READ_HEAP, 0xC060_D50D);
        // _IO(0xD5, 0x10) and _IOWR(0xD5, 0x11, struct dsu_gc): size 112.
        assert_eq!(IOC_READY, 0x0000_D510);
        assert_eq!(IOC_GC, 0xC070_D511);
        assert_eq!(IOC_READ_VAR & 0xff, 7);
    }

    #[test]
    fn placement_kinds() {
        let cfg = Config {
            dev: "/nonexistent".into(),
            prefix: "fz".into(),
            calls: 0,
            max_seconds: 0,
            allow_fork: false,
        };
        let mut w = Worker::new(cfg, Rng::new(1), Vec::new());
        let bytes = [7u8; 80];
        let p = w.place_kind(Ptr::Valid, &bytes, STRUCT_OFF, STRUCT_LEN);
        assert_eq!(p, w.arena as u64);
        // SAFETY: p is the arena.
        assert_eq!(unsafe { *(p as *const u8).add(79) }, 7);
        for _ in 0..100 {
            let p = w.place_kind(Ptr::Straddle, &bytes, STRUCT_OFF, STRUCT_LEN);
            let page_end = w.trap as u64 + PAGE as u64;
            assert!(p < page_end && p + 80 > page_end, "straddles the page end");
        }
        let p = w.place_kind(Ptr::Misaligned, &bytes, STRUCT_OFF, STRUCT_LEN);
        assert_ne!(p % 8, 0);
    }

    #[test]
    fn same_seed_same_calls_without_a_device() {
        // With no device every call fails; the sequence of operations must still be the same.
        let run = |seed| {
            let cfg = Config {
                dev: "/nonexistent".into(),
                prefix: "fz".into(),
                calls: 500,
                max_seconds: 0,
                allow_fork: false,
            };
            let mut w = Worker::new(cfg, Rng::new(seed), Vec::new());
            w.run();
            w.stats.clone()
        };
        let (a, b, c) = (run(5), run(5), run(6));
        assert_eq!(a.calls, b.calls);
        assert_ne!(a.calls, c.calls);
        assert_eq!(a.findings.len(), 0);
    }
}
