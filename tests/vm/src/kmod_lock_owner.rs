//! DSU_IOC_LOCK_TOKEN and DSU_IOC_LOCK_OWNER against the real module: one token per
//! process (the same from every handle and thread, another one in a child), and the
//! owner states for each kind of token and address. The cross-process case (a lock copied
//! by a snapshot) is `userspace::snapshot_held_lock`.

use crate::kmod_ioctl::Dsu;
use crate::{Phase, TESTS, TestResult, VmTest, ensure, ensure_eq};
use dsu_uapi::*;
use linkme::distributed_slice;
use nix::errno::Errno;
use std::os::fd::AsRawFd;

mod raw {
    use dsu_uapi::*;
    nix::ioctl_readwrite!(
        lock_token,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_LOCK_TOKEN,
        dsu_lock_token
    );
    nix::ioctl_readwrite!(
        lock_owner,
        DSU_IOC_MAGIC,
        DSU_IOC_NR_LOCK_OWNER,
        dsu_lock_owner
    );
}

const ISSUED: u64 = DSU_LOCK_TOKEN_ISSUED as u64;

fn token_raw(h: &Dsu, t: &mut dsu_lock_token) -> Result<u64, Errno> {
    // SAFETY: a valid struct.
    unsafe { raw::lock_token(h.fd(), t) }?;
    Ok(t.token)
}

fn token(h: &Dsu) -> Result<u64, Errno> {
    token_raw(
        h,
        &mut dsu_lock_token {
            size: size_of::<dsu_lock_token>() as u32,
            ..Default::default()
        },
    )
}

fn owner_raw(h: &Dsu, q: &mut dsu_lock_owner) -> Result<u32, Errno> {
    // SAFETY: a valid struct.
    unsafe { raw::lock_owner(h.fd(), q) }?;
    Ok(q.state)
}

fn owner(h: &Dsu, token: u64, addr: usize) -> Result<u32, Errno> {
    owner_raw(
        h,
        &mut dsu_lock_owner {
            size: size_of::<dsu_lock_owner>() as u32,
            token,
            addr: addr as u64,
            ..Default::default()
        },
    )
}

/// A page of a memfd, mapped shared (any shared file will do for LOCK_OWNER).
struct SharedPage {
    addr: *mut libc::c_void,
    _fd: std::os::fd::OwnedFd,
}

impl SharedPage {
    fn new() -> Result<Self, Errno> {
        let fd = nix::sys::memfd::memfd_create(
            c"lock-owner",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )?;
        nix::unistd::ftruncate(&fd, 4096)?;
        // SAFETY: a fresh shared mapping of a file we own, unmapped in drop.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(Self { addr, _fd: fd })
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.addr, 4096) };
    }
}

#[distributed_slice(TESTS)]
static TOKENS: VmTest = VmTest {
    name: "kmod_lock_owner::one_token_per_process",
    phase: Phase::Main,
    run: one_token_per_process,
};
fn one_token_per_process() -> TestResult {
    let (a, b) = (Dsu::open()?, Dsu::open()?);
    let t = token(&a)?;
    ensure!(t & ISSUED != 0, "token {t:#x} lacks DSU_LOCK_TOKEN_ISSUED");
    ensure_eq!(token(&a)?, t, "second call");
    ensure_eq!(token(&b)?, t, "another handle");
    let from_thread = std::thread::spawn(|| Dsu::open().and_then(|h| token(&h)))
        .join()
        .unwrap()?;
    ensure_eq!(from_thread, t, "another thread");
    // A child (another address space) gets its own, from the same instance.
    let (rd, wr) = nix::unistd::pipe()?;
    // SAFETY: the child only makes syscalls on memory it inherited, then _exits.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let v = token(&a).unwrap_or(0);
            let _ = nix::unistd::write(&wr, &v.to_ne_bytes());
            // SAFETY: no cleanup in the child of a threaded parent.
            unsafe { libc::_exit(0) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut buf = [0u8; 8];
            let n = nix::unistd::read(rd.as_raw_fd(), &mut buf)?;
            nix::sys::wait::waitpid(child, None)?;
            ensure_eq!(n, 8, "the child's token");
            let c = u64::from_ne_bytes(buf);
            ensure!(
                c & ISSUED != 0 && c != t,
                "child token {c:#x}, parent {t:#x}"
            );
            ensure_eq!(c >> 32, t >> 32, "the instance bits of parent and child");
            // The child has exited: its token names nobody now.
            let page = SharedPage::new()?;
            ensure_eq!(
                owner(&a, c, page.addr as usize)?,
                DSU_LOCK_OWNER_GONE,
                "exited child"
            );
        }
    }
    // Bad structs.
    let mut bad = dsu_lock_token {
        size: size_of::<dsu_lock_token>() as u32,
        flags: 1,
        ..Default::default()
    };
    ensure_eq!(token_raw(&a, &mut bad), Err(Errno::EINVAL), "flags");
    bad.flags = 0;
    bad.size = 8;
    ensure_eq!(token_raw(&a, &mut bad), Err(Errno::EINVAL), "short size");
    Ok(())
}

#[distributed_slice(TESTS)]
static STATES: VmTest = VmTest {
    name: "kmod_lock_owner::owner_states",
    phase: Phase::Main,
    run: owner_states,
};
fn owner_states() -> TestResult {
    let h = Dsu::open()?;
    let t = token(&h)?;
    let page = SharedPage::new()?;
    let addr = page.addr as usize + 64;
    // This process is alive and maps the page.
    ensure_eq!(owner(&h, t, addr)?, DSU_LOCK_OWNER_LIVE, "own token");
    // Never issued: unknown, whatever the address.
    ensure_eq!(
        owner(&h, t & !ISSUED, addr)?,
        DSU_LOCK_OWNER_UNKNOWN,
        "bit 63 clear"
    );
    // Another instance's (a reload or a reboot ago): gone.
    ensure_eq!(
        owner(&h, t ^ (1 << 40), addr)?,
        DSU_LOCK_OWNER_GONE,
        "another instance"
    );
    // This instance's, never issued (or pruned): gone.
    ensure_eq!(
        owner(&h, t ^ (1 << 30), addr)?,
        DSU_LOCK_OWNER_GONE,
        "an unissued tag"
    );
    // Addresses: private memory, unmapped, a kernel address.
    let private = 0u64;
    ensure_eq!(
        owner(&h, t, &private as *const u64 as usize),
        Err(Errno::EFAULT),
        "a stack address"
    );
    ensure_eq!(owner(&h, t, 16), Err(Errno::EFAULT), "page zero");
    ensure_eq!(
        owner(&h, t, usize::MAX - 4095),
        Err(Errno::EFAULT),
        "kernel address"
    );
    // A segment's mapping: live for this process.
    let name = crate::kmod_ioctl::unique("lock-owner");
    let seg = Dsu::open()?;
    seg.attach(&name, 0, 0o600)?;
    let vars = seg.resolve_ok(vec![crate::kmod_ioctl::var("w", 8, 1, None)])?;
    seg.bind("v1", &[vars[0].first_page], 0)?;
    let map = seg.map(1)?;
    ensure_eq!(
        owner(&h, t, map.ptr as usize + 8)?,
        DSU_LOCK_OWNER_LIVE,
        "a segment page"
    );
    // Bad structs.
    let mut q = dsu_lock_owner {
        size: size_of::<dsu_lock_owner>() as u32,
        token: t,
        addr: addr as u64,
        flags: 2,
        ..Default::default()
    };
    ensure_eq!(owner_raw(&h, &mut q), Err(Errno::EINVAL), "flags");
    q.flags = 0;
    q.__pad = 1;
    ensure_eq!(owner_raw(&h, &mut q), Err(Errno::EINVAL), "padding");
    drop(map);
    drop(seg);
    let _ = Dsu::open()?.destroy(&name);
    Ok(())
}
