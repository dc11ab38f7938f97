//! Process-shared, robust synchronisation for shared globals.
//!
//! `std::sync::Mutex` uses private futexes, which do not wake waiters in another process,
//! and it deadlocks forever if its holder dies. [`Mutex`] is a futex word holding the
//! owner's thread id, laid out as the kernel's *robust futexes* expect. An uncontended lock
//! is one compare-and-swap plus a few stores to link the lock into the thread's robust
//! list; a contended one spins briefly, then sleeps on a *shared* futex (the module backs
//! segment pages with a shmem file, so the kernel keys the futex by page, not by virtual
//! address, and versions that map the lock at different addresses wake each other).
//!
//! # Owner death
//!
//! While a thread holds a `Mutex`, the lock is linked into the thread's robust futex list,
//! the list the kernel walks when the thread exits or is killed (`set_robust_list(2)`).
//! For every lock on it whose word still holds the dying thread's id, the kernel sets
//! `FUTEX_OWNER_DIED` and wakes a waiter, whatever pid namespace the waiter runs in. The
//! waiter takes the lock over and is told through [`OwnerDied`], like std's `PoisonError`.
//! Nobody ever guesses from a thread id whether its owner lives: versions in different
//! pid namespaces (containers) share a lock safely.
//!
//! A guard can outlive its thread: leaked with `mem::forget` or `Box::leak`, its `&mut T`
//! stays usable after the thread exits, but the kernel reports the death of a thread, not
//! of its process. So a thread that exits still holding locks hands them, in a
//! thread-local destructor that runs before the kernel walks its list, to this process's
//! *keeper* thread (started on the first such exit): the keeper's id replaces the thread's
//! in the word and the lock moves onto the keeper's robust list. Such a lock stays held
//! for as long as the process lives, for every process, as std's `Mutex` stays locked
//! forever after a leaked guard (`lock` waits, `try_lock` returns `None`), and is taken
//! over once the process is gone. As a second line, a lock also records its holder's
//! *process token* (a random number drawn once per process, and again in the child of
//! `fork`), and a takeover is refused when the dead holder was a thread of the caller's
//! own process. Guards are counted per thread and, once their thread exited, per process,
//! for [`Attach::attach`](crate::Attach::attach)'s check.
//!
//! # Copied locks
//!
//! A lock word copied while held (a snapshot of a segment taken while a thread held the
//! lock, restored as a new segment; or restored after a module reload or a reboot) names a
//! holder that will never release *that* copy, and no kernel marks it. Its process token is
//! the dsu module's (`DSU_IOC_LOCK_TOKEN`): a waiter that has seen the same holder for
//! its 50 ms recheck twice asks the module (`DSU_IOC_LOCK_OWNER`) whether that process is alive
//! and maps this lock's memory (for a segment's variables, the same segment). If not, the
//! waiter marks the word `FUTEX_OWNER_DIED`, as the kernel would have, and takes the lock
//! over ([`OwnerDied`]): a restored image continues as a SIGKILL of every holder at the
//! snapshot's instant would have left it. A process that restores its *own* snapshot and
//! maps both copies stays the recorded holder of the copies of its held locks (the module
//! cannot tell them apart): restore before taking locks, or from another process.
//!
//! A child of `fork` inherits the parent's guards as a copy of memory, but not the locks:
//! there an inherited guard is inert (its drop does not unlock) and dereferencing it panics.
//!
//! The list belongs to libc (glibc registers one per thread; dsu registers its own where
//! none is registered): a lock's list node lies in its header at the offset the registered
//! list prescribes (`futex_offset`), and it is linked and unlinked exactly as glibc links
//! its robust `pthread_mutex_t`s, so both kinds of lock mix in one list. DESIGN.md
//! ("Userspace") explains the choice.
//!
//! Because the list node lives in the mutex, a locked mutex must never move or be freed:
//! [`lock`](Mutex::lock) takes `&'static self` (a global, a `static`, or leaked memory).
//!
//! ```
//! use dsu::sync::Mutex;
//! dsu::global! {
//!     static QUEUE: Mutex<[u32; 16]> = Mutex::new([0; 16]);
//! }
//! let mut q = QUEUE.lock().unwrap_or_else(|died| died.into_inner());
//! q[0] = 1;
//! ```

use crate::Shared;
use crate::SharedCell;
use crate::fingerprint::Fnv;
use core::cell::{Cell, UnsafeCell};
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, compiler_fence, fence};
use std::time::Duration;

mod keeper;

/// `FUTEX_WAITERS`: set in the lock word when a thread may be sleeping on it.
const WAITERS: u32 = 1 << 31;
/// `FUTEX_OWNER_DIED`: set by the kernel when the owner exited holding the lock.
const OWNER_DIED: u32 = 1 << 30;
/// `FUTEX_TID_MASK`: the owner's thread id, as its own pid namespace numbers it.
const TID_MASK: u32 = (1 << 30) - 1;
/// How long a waiter sleeps before it looks at the word again. Owner death wakes it at
/// once; this only bounds a wake-up lost to a woken waiter that was killed before taking
/// the lock.
const RECHECK: Duration = Duration::from_millis(50);
/// Spins on a held lock before sleeping: critical sections on shared globals are short.
const SPINS: u32 = 100;
/// How often a waiter polls when the kernel refuses a futex on the lock's page: the
/// interval starts here and doubles up to the maximum.
const NO_FUTEX_POLL_MIN: Duration = Duration::from_micros(200);
const NO_FUTEX_POLL_MAX: Duration = Duration::from_millis(8);
/// The list node's area in the header: bytes `NODE_AREA_START..NODE_AREA_END` from the
/// lock word. The node (`next`) lies at `word - futex_offset` and its `prev` in the 8
/// bytes below it: glibc's -32 puts them at 24..40, musl's -28 at 20..36. Bytes
/// `NODE_AREA_START..LINKS_START` hold [`MARK`].
const NODE_AREA_START: usize = 8;
const LINKS_START: usize = 16;
const NODE_AREA_END: usize = 40;
/// Stored by every holder in the first slot of the node area (bytes 8..16 from the word):
/// tells a dsu lock apart from libc's robust mutexes on the same list, at thread exit.
/// Its low 32 bits have bit 31 set, which glibc's `__owner` at the same place (a thread id
/// or `PTHREAD_MUTEX_INCONSISTENT`) never has.
const MARK: usize = 0x4453_552d_d5d5_0001_u64 as usize;
/// The kernel's `ROBUST_LIST_LIMIT`: it walks no further, nor do we.
const ROBUST_LIST_LIMIT: usize = 2048;

/// A mutual-exclusion lock that works across processes (and program versions, in any pid
/// namespace) mapping the same shared global, and survives the death of its holder.
///
/// The layout is `#[repr(C)]`: a `u32` lock word (0 = free, else the owner's thread id as
/// its pid namespace numbers it, bit 30 `FUTEX_OWNER_DIED`, bit 31 `FUTEX_WAITERS`), the
/// holder's thread id (for [`OwnerDied::dead_owner`]), the robust-list node (32 bytes of
/// the holder's private pointers), the holder's process token (a `u64`, 0 when free), then
/// the data. It is [`Shared`] when `T` is, and a global may hold it ([`SharedCell`]).
///
/// Locking a mutex the calling thread already holds panics. `lock` and `try_lock` take
/// `&'static self`: the held lock is linked into the thread's robust list through its own
/// header, so it must stay where it is for as long as the program runs.
///
/// The lock is taken over ([`OwnerDied`]) only once its holder's whole process is gone.
/// If a thread exits holding it (a guard leaked with `mem::forget` or `Box::leak`, whose
/// `&mut T` may still be in use), its process's keeper thread holds it from then on: the
/// lock stays held while that process lives, like std's `Mutex`, in every process:
/// [`lock`](Self::lock) waits and [`try_lock`](Self::try_lock) returns `None`. Once the
/// process is gone (killed, or exited), another takes it over. The keeper is an ordinary
/// thread of the process (all signals blocked), started on the first such exit; if no
/// thread can be started the process aborts (its locks are then reported dead, rightly).
///
/// ```
/// static M: dsu::sync::Mutex<u32> = dsu::sync::Mutex::new(0);
/// std::thread::spawn(|| std::mem::forget(M.lock().unwrap())).join().unwrap();
/// assert!(M.try_lock().is_none(), "still held for the leaked guard");
/// ```
///
/// ```
/// use dsu::sync::Mutex;
/// static M: Mutex<u64> = Mutex::new(0);
/// *M.lock().unwrap() += 1;
/// assert_eq!(*M.lock().unwrap(), 1);
/// ```
#[repr(C)]
pub struct Mutex<T> {
    word: AtomicU32,
    /// The holder's thread id; unlike the word, the kernel leaves it when the owner dies.
    holder: AtomicU32,
    /// The robust-list node: `prev` and `next` pointers of the holder's list, private to
    /// it, at the offset the list's `futex_offset` prescribes.
    node: UnsafeCell<[usize; 4]>,
    /// The holder's process token ([`process_token`]), 0 once released: a lock whose dead
    /// holder was a thread of the caller's own process is not taken over.
    process: AtomicU64,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serialises access to `data`, like std's Mutex; `node` is touched only by
// the holder.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Mutex<T> {}

// SAFETY: repr(C) of two AtomicU32s, an array of integers, an AtomicU64 and a Shared T; the
// lock word's meaning (a tid and the robust-futex bits) is the same in every version. The
// name says which protocol: versions with the kill()-based mutex, or without the process
// token, must not share with this one.
unsafe impl<T: Shared> Shared for Mutex<T> {
    const FINGERPRINT: u64 = Fnv::new()
        .str("dsu::sync::Mutex(robust-list, process token)")
        .u64(T::FINGERPRINT)
        .finish();
    const OWNS_HEAP: bool = T::OWNS_HEAP;
}

// SAFETY: every byte but padding is inside an UnsafeCell or an atomic; `data` is only
// reached through the lock, and a Shared T accepts whatever bytes a dead holder left.
unsafe impl<T: Shared + Send> SharedCell for Mutex<T> {}

/// Holds a [`Mutex`] locked; unlocks on drop. Dereferences to the data.
///
/// A guard belongs to the thread that locked (it is neither `Send` nor `Sync`). In the
/// child of `fork` a guard inherited from the parent is inert: the lock is still the
/// parent's, so dropping the guard does not unlock, and dereferencing it panics (lock the
/// mutex again in the child). References taken from the guard *before* `fork` are copied
/// into the child too; `fork` is `unsafe`, and its caller must not use them there.
///
/// ```
/// static M: dsu::sync::Mutex<i32> = dsu::sync::Mutex::new(5);
/// let g: dsu::sync::MutexGuard<'_, i32> = M.lock().unwrap();
/// assert_eq!(*g, 5);
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T> {
    lock: &'a Mutex<T>,
    /// This thread's fork generation when it locked: a guard a child of `fork` inherited
    /// is inert (the child's list does not hold the lock, nor does the child).
    generation: u32,
    // The lock word and the robust list record this thread: the guard stays on it.
    _not_send: PhantomData<*const ()>,
}

/// The lock was taken over from an owner that died while holding it: the data may be
/// half-updated. The guard is still yours ([`into_inner`](Self::into_inner)).
///
/// ```
/// static M: dsu::sync::Mutex<u32> = dsu::sync::Mutex::new(0);
/// let guard = match M.lock() {
///     Ok(g) => g,
///     Err(died) => {
///         eprintln!("{died}; repairing");
///         died.into_inner()
///     }
/// };
/// ```
pub struct OwnerDied<G> {
    guard: G,
    tid: u32,
}

impl<G> OwnerDied<G> {
    /// The guard: the lock is held by the caller.
    ///
    /// ```
    /// static M: dsu::sync::Mutex<i32> = dsu::sync::Mutex::new(1);
    /// let g = M.lock().unwrap_or_else(|e| e.into_inner());
    /// assert_eq!(*g, 1);
    /// ```
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// The thread id of the owner that died, as its own pid namespace numbered it (it may
    /// mean another thread, or nothing, in the caller's namespace; for messages).
    ///
    /// ```
    /// static M: dsu::sync::Mutex<i32> = dsu::sync::Mutex::new(1);
    /// if let Err(e) = M.lock() { println!("tid {} died", e.dead_owner()); }
    /// ```
    pub fn dead_owner(&self) -> u32 {
        self.tid
    }

    /// A reference to the guard.
    ///
    /// ```
    /// static M: dsu::sync::Mutex<i32> = dsu::sync::Mutex::new(1);
    /// if let Err(e) = M.lock() { let _ = **e.get_ref(); }
    /// ```
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// A mutable reference to the guard.
    ///
    /// ```
    /// static M: dsu::sync::Mutex<i32> = dsu::sync::Mutex::new(1);
    /// if let Err(mut e) = M.lock() { **e.get_mut() = 0; }
    /// ```
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> std::fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerDied")
            .field("tid", &self.tid)
            .finish_non_exhaustive()
    }
}

impl<G> std::fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the previous owner of the lock (thread {}) died while holding it: the protected data may be inconsistent",
            self.tid
        )
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

/// The result of [`Mutex::lock`]: the guard, or the guard wrapped in [`OwnerDied`].
///
/// ```
/// static M: dsu::sync::Mutex<u8> = dsu::sync::Mutex::new(0);
/// let r: dsu::sync::LockResult<dsu::sync::MutexGuard<'_, u8>> = M.lock();
/// ```
pub type LockResult<G> = Result<G, OwnerDied<G>>;

/// The kernel's `struct robust_list_head` (`linux/futex.h`).
#[repr(C)]
struct RobustListHead {
    /// The first node (`&list` when empty); bit 0 marks a PI futex.
    list: UnsafeCell<usize>,
    /// The lock word's address minus the node's.
    futex_offset: isize,
    /// The node being locked or unlocked, 0 if none.
    list_op_pending: UnsafeCell<usize>,
}

/// This thread's robust list as this module uses it.
#[derive(Clone, Copy)]
struct Robust {
    /// The head registered with the kernel (libc's, or [`OWN_HEAD`]).
    head: *mut RobustListHead,
    /// `-futex_offset`: where a lock's node lies, from its word.
    node_offset: usize,
    tid: u32,
    generation: u32,
    /// This process's token ([`process_token`]).
    token: u64,
    /// The thread is exiting ([`ThreadState::exiting`]).
    exiting: bool,
}

/// What each thread remembers; const-initialised and without destructor, so it lives in
/// the static TLS block until the thread is gone (the kernel reads [`OWN_HEAD`] at exit).
struct ThreadState {
    /// 0 until the thread first locks.
    tid: Cell<u32>,
    head: Cell<*mut RobustListHead>,
    node_offset: Cell<usize>,
    /// Guards this thread holds (forgotten ones included): `attach` refuses while > 0.
    held: Cell<usize>,
    /// Set once [`ExitHook`] ran: the thread is exiting, and its guards count in
    /// [`LEFT_BY_EXITED`] instead of `held`.
    exiting: Cell<bool>,
    /// Bumped in the child of fork: guards from before are inert there.
    generation: Cell<u32>,
    /// [`process_token`], cached with the rest.
    token: Cell<u64>,
    /// Tests only: the thread stands for a thread of another process, whose death the
    /// kernel reports; its exit hands nothing to the keeper.
    #[cfg(test)]
    no_handoff: Cell<bool>,
}

std::thread_local! {
    static STATE: ThreadState = const {
        ThreadState {
            tid: Cell::new(0),
            head: Cell::new(ptr::null_mut()),
            node_offset: Cell::new(0),
            held: Cell::new(0),
            exiting: Cell::new(false),
            generation: Cell::new(0),
            token: Cell::new(0),
            #[cfg(test)]
            no_handoff: Cell::new(false),
        }
    };
    /// Registered at a thread's first lock; its destructor runs when the thread exits.
    static EXIT_HOOK: ExitHook = const { ExitHook };
    /// The list head of a thread whose libc registered none (glibc always does; musl only
    /// once the thread locks a robust pthread mutex).
    static OWN_HEAD: RobustListHead = const {
        RobustListHead {
            list: UnsafeCell::new(0),
            futex_offset: -32,
            list_op_pending: UnsafeCell::new(0),
        }
    };
}

/// Guards still held by threads of this process that exited (leaked with `mem::forget` or
/// `Box::leak`): counted per process, so that `attach` sees them once their thread is gone.
static LEFT_BY_EXITED: AtomicUsize = AtomicUsize::new(0);

/// Counts the guards of an exiting thread into [`LEFT_BY_EXITED`] and hands the locks it
/// still holds to the [keeper](keeper). Per-thread counts keep `lock`/`unlock` free of
/// shared counters; only an exit with guards held touches one.
///
/// Thread-local destructors run before the thread's `exit` system call, and so before the
/// kernel walks its robust list: the locks leave the list first.
struct ExitHook;

impl Drop for ExitHook {
    fn drop(&mut self) {
        let held = STATE.with(|s| {
            s.exiting.set(true);
            let held = s.held.replace(0);
            LEFT_BY_EXITED.fetch_add(held, Ordering::SeqCst);
            #[cfg(test)]
            if s.no_handoff.get() {
                return 0;
            }
            held
        });
        if held > 0 {
            keeper::hand_over_all(robust());
        }
    }
}

/// This process's lock token, drawn once per process (again in the child of fork), never
/// 0: the module's (DSU_IOC_LOCK_TOKEN, bit 63 set) where it gives one, else a random
/// number with bit 63 clear. A lock records its holder's; a takeover is refused when the
/// dead holder's token is the caller's own (the holder was a thread of this process, whose
/// guard may live on), and a waiter asks the module about a module token that holds a
/// lock for long (`Mutex::holder_gone`).
static PROCESS_TOKEN: AtomicU64 = AtomicU64::new(0);

/// This process's token, drawn on first use.
#[cold]
fn process_token() -> u64 {
    let current = PROCESS_TOKEN.load(Ordering::Relaxed);
    if current != 0 {
        return current;
    }
    // The module's token, if it gives one: waiters can then ask whether this process can
    // still release a lock it is recorded to hold (`Mutex::holder_gone`).
    let mut token = crate::sys::lock_token_quiet().unwrap_or(0);
    while token == 0 {
        let mut bytes = [0u8; 8];
        // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n == bytes.len() as isize {
            // Bit 63 clear: not the module's (DSU_LOCK_TOKEN_ISSUED), never declared gone.
            token = u64::from_ne_bytes(bytes) & !(1 << 63);
        } else {
            assert!(
                n >= 0 || nix::errno::Errno::last() == nix::errno::Errno::EINTR,
                "dsu::sync::Mutex: getrandom failed ({}): the process token needs it",
                std::io::Error::last_os_error()
            );
        }
    }
    match PROCESS_TOKEN.compare_exchange(0, token, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => token,
        Err(other) => other,
    }
}

extern "C" fn after_fork_in_child() {
    // The child's only thread has a new id, and libc emptied its robust list (the kernel
    // unregistered ours): look everything up again; inherited guards become inert. The
    // child is another process: it draws its own token.
    PROCESS_TOKEN.store(0, Ordering::Relaxed);
    LEFT_BY_EXITED.store(0, Ordering::Relaxed);
    keeper::after_fork_in_child();
    STATE.with(|s| {
        s.tid.set(0);
        s.head.set(ptr::null_mut());
        s.held.set(0);
        s.exiting.set(false);
        s.generation.set(s.generation.get().wrapping_add(1));
    });
}

/// The calling thread's id (cached).
#[cfg(test)]
fn gettid() -> u32 {
    robust().tid
}

/// Guards held in this process, forgotten ones included: `(held by the calling thread,
/// left by threads that exited)`. Guards of other live threads are not counted.
pub(crate) fn guards_held() -> (usize, usize) {
    (
        STATE.with(|s| s.held.get()),
        LEFT_BY_EXITED.load(Ordering::SeqCst),
    )
}

/// This thread's robust list, looked up on first use.
#[inline]
fn robust() -> Robust {
    STATE.with(|s| {
        if s.tid.get() == 0 {
            init_thread(s);
        }
        Robust {
            head: s.head.get(),
            node_offset: s.node_offset.get(),
            tid: s.tid.get(),
            generation: s.generation.get(),
            token: s.token.get(),
            exiting: s.exiting.get(),
        }
    })
}

#[cold]
fn init_thread(s: &ThreadState) {
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only touches this module's thread-locals,
        // which is safe in the child of fork.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    let mut head: *mut RobustListHead = ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: get_robust_list(0, ...) writes the calling thread's head pointer and size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut *mut RobustListHead,
            &mut len as *mut libc::size_t,
        )
    };
    if r != 0 || head.is_null() {
        head = OWN_HEAD.with(|h| {
            let p = h as *const RobustListHead as *mut RobustListHead;
            // SAFETY: our own head, in this thread's static TLS; empty list = itself.
            unsafe {
                *(*p).list.get() = p as usize;
                *(*p).list_op_pending.get() = 0;
            }
            p
        });
        // SAFETY: registers a valid head that lives as long as the thread.
        let r =
            unsafe { libc::syscall(libc::SYS_set_robust_list, head, size_of::<RobustListHead>()) };
        assert!(
            r == 0,
            "dsu::sync::Mutex: set_robust_list failed ({}); the kernel lacks robust futexes",
            std::io::Error::last_os_error()
        );
    } else {
        assert_eq!(
            len,
            size_of::<RobustListHead>(),
            "dsu::sync::Mutex: unexpected robust list head size"
        );
    }
    // SAFETY: the registered head is valid for the thread's life.
    let futex_offset = unsafe { ptr::addr_of!((*head).futex_offset).read_volatile() };
    let node_offset = futex_offset.unsigned_abs();
    assert!(
        futex_offset < 0 && node_offset >= LINKS_START + 8 && node_offset + 8 <= NODE_AREA_END,
        "dsu::sync::Mutex: this libc's robust list uses futex_offset {futex_offset}, which \
         the lock header cannot hold (supported: -{} to -{})",
        NODE_AREA_END - 8,
        LINKS_START + 8
    );
    s.head.set(head);
    s.node_offset.set(node_offset);
    s.token.set(process_token());
    if EXIT_HOOK.try_with(|_| {}).is_err() {
        // Locking from another thread-local's destructor, after ours ran.
        s.exiting.set(true);
    }
    // SAFETY: gettid has no preconditions.
    s.tid.set(unsafe { libc::gettid() } as u32);
}

// The list manipulation below follows glibc's ENQUEUE_MUTEX/DEQUEUE_MUTEX: a node is the
// address of a `next` pointer, with its `prev` pointer just below it; bit 0 of a pointer to
// a node marks a PI futex (never ours, maybe libc's). The head's `list` field is the `next`
// of the empty list. Only the owning thread touches its list, so plain volatile accesses
// suffice; the compiler fences order them for the kernel, which reads the list from this
// same thread when it exits.

/// Reads the pointer-sized value at `addr` (a list pointer).
///
/// # Safety
/// `addr` is a `next` or `prev` field of a node in this thread's list, or of its head.
unsafe fn get(addr: usize) -> usize {
    // SAFETY: the caller's contract; unaligned reads cover libcs whose offset is not a
    // multiple of 8.
    unsafe { (addr as *const usize).read_unaligned() }
}

/// Writes a list pointer.
///
/// # Safety
/// As [`get`].
unsafe fn set(addr: usize, value: usize) {
    // SAFETY: the caller's contract.
    unsafe { (addr as *mut usize).write_unaligned(value) }
}

impl Robust {
    fn head_addr(self) -> usize {
        self.head as usize
    }

    /// Announces (`node`) or clears (0) the operation in progress: if the thread dies
    /// now, the kernel still looks at that lock.
    #[inline]
    fn pending(self, node: usize) {
        compiler_fence(Ordering::SeqCst);
        // SAFETY: the registered head, valid for the thread's life; written only by this
        // thread (and its libc, never concurrently).
        unsafe {
            ptr::addr_of_mut!((*self.head).list_op_pending)
                .cast::<usize>()
                .write_volatile(node)
        };
        compiler_fence(Ordering::SeqCst);
    }

    /// Links `node` (of a lock just taken) at the front of the list.
    ///
    /// # Safety
    /// `node` is the node of a `'static` mutex this thread now holds, not yet linked.
    #[inline]
    unsafe fn link(self, node: usize) {
        let head = self.head_addr();
        // SAFETY: head and nodes of this thread's list (its libc's and ours), all valid
        // while linked; `node` is ours to write.
        unsafe {
            let first = get(head);
            set(node, first);
            set(node - 8, head);
            let first_node = first & !1;
            if first_node != head {
                set(first_node - 8, node);
            }
            compiler_fence(Ordering::SeqCst);
            set(head, node);
        }
    }

    /// Unlinks `node`.
    ///
    /// # Safety
    /// `node` is linked in this thread's list.
    #[inline]
    unsafe fn unlink(self, node: usize) {
        let head = self.head_addr();
        // SAFETY: as in link; `prev` is the head or a linked node, `next` the head or a
        // linked node.
        unsafe {
            let next = get(node);
            let prev = get(node - 8) & !1;
            let next_node = next & !1;
            if next_node != head {
                set(next_node - 8, prev);
            }
            set(prev, next);
            compiler_fence(Ordering::SeqCst);
            set(node, 0);
            set(node - 8, 0);
        }
    }

    /// Whether `node` is linked in this thread's list (the thread holds that lock).
    fn holds(self, node: usize) -> bool {
        let head = self.head_addr();
        // SAFETY: walks this thread's list, as the kernel does, bounded the same way.
        let mut entry = unsafe { get(head) } & !1;
        for _ in 0..ROBUST_LIST_LIMIT {
            if entry == head || entry == 0 {
                return false;
            }
            if entry == node {
                return true;
            }
            // SAFETY: a linked node.
            entry = unsafe { get(entry) } & !1;
        }
        false
    }
}

/// Why a futex sleep ended.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    /// Woken, or the word changed before the sleep began: look again.
    Changed,
    /// The timeout passed: time to check on the owner.
    TimedOut,
    /// The kernel has no futex for this memory (a page without a mapping): poll instead.
    NoFutex,
}

/// Sleeps on a shared futex while `word == expected`, for at most `timeout`.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> Wake {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a shared (not FUTEX_PRIVATE_FLAG) wait on a valid aligned u32; the kernel
    // only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            0usize,
            0u32,
        )
    };
    if r == 0 {
        return Wake::Changed;
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::ETIMEDOUT => Wake::TimedOut,
        // A shared futex needs a key for the page, derived from the page's mapping; pages
        // without one (driver pages of older dsu modules) give EFAULT at once.
        nix::errno::Errno::EFAULT => Wake::NoFutex,
        _ => Wake::Changed,
    }
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: a shared wake on a valid aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            0usize,
            0usize,
            0u32,
        );
    }
}

impl<T> Mutex<T> {
    /// A new, unlocked mutex. `const`, for use in [`global!`](crate::global).
    ///
    /// ```
    /// static M: dsu::sync::Mutex<[u8; 4]> = dsu::sync::Mutex::new([0; 4]);
    /// ```
    pub const fn new(value: T) -> Self {
        Mutex {
            word: AtomicU32::new(0),
            holder: AtomicU32::new(0),
            node: UnsafeCell::new([0; 4]),
            process: AtomicU64::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// The address of this lock's list node for a list with `node_offset`.
    fn node(&self, r: Robust) -> usize {
        self.word.as_ptr() as usize + r.node_offset
    }

    /// Locks, sleeping while another thread (in any process) holds it. If the holder's
    /// process died, takes the lock over and returns the guard inside [`OwnerDied`]. If
    /// the holder was a thread that exited while its process lives on (its guard leaked),
    /// the lock stays held while that process lives: this waits, for ever if that process
    /// is this one.
    ///
    /// # Panics
    ///
    /// If the calling thread already holds the lock.
    ///
    /// ```
    /// static M: dsu::sync::Mutex<u64> = dsu::sync::Mutex::new(1);
    /// *M.lock().unwrap() += 1;
    /// ```
    #[inline(always)]
    pub fn lock(&'static self) -> LockResult<MutexGuard<'static, T>> {
        let r = robust();
        let node = self.node(r);
        // As glibc: announce the node first, so that a death right after the CAS still
        // has the kernel release the lock.
        r.pending(node);
        if self
            .word
            .compare_exchange(0, r.tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(self.taken(r, node));
        }
        r.pending(0);
        self.lock_contended(r, node)
    }

    /// The lock was just taken (the word holds `r.tid`): records the holder, links the
    /// node, clears the pending operation and counts the guard.
    #[inline(always)]
    fn taken(&'static self, r: Robust, node: usize) -> MutexGuard<'static, T> {
        self.holder.store(r.tid, Ordering::Relaxed);
        self.process.store(r.token, Ordering::Relaxed);
        // SAFETY: the holder's slot of the node area (below the links, see `LINKS_START`).
        unsafe { self.node.get().cast::<usize>().write_volatile(MARK) };
        // SAFETY: this thread holds the 'static lock; its node is not linked (only a
        // holder links it, and unlinks it before releasing).
        unsafe { r.link(node) };
        r.pending(0);
        if r.exiting {
            keeper::taken_while_exiting(r, node);
        } else {
            STATE.with(|s| s.held.set(s.held.get() + 1));
        }
        MutexGuard {
            lock: self,
            generation: r.generation,
            _not_send: PhantomData,
        }
    }

    /// Whether the owner-died lock's dead holder was a thread of this process: its guard
    /// may have been leaked and still give a `&mut T`, so the lock stays held.
    fn died_here(&self, r: Robust) -> bool {
        // Pairs with the kernel's atomic update of the word as the holder died, after the
        // holder's store of its token.
        fence(Ordering::Acquire);
        self.process.load(Ordering::Relaxed) == r.token
    }

    /// Tries to take the lock from word value `cur` (no owner: free, or its owner died).
    fn try_take(&'static self, r: Robust, node: usize, cur: u32, waiters: u32) -> Take<T> {
        debug_assert_eq!(cur & TID_MASK, 0);
        let died = cur & OWNER_DIED != 0;
        if died && self.died_here(r) {
            return Take::LeftHere;
        }
        let dead = self.holder.load(Ordering::Relaxed);
        r.pending(node);
        if self
            .word
            .compare_exchange(
                cur,
                r.tid | (cur & WAITERS) | waiters,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            r.pending(0);
            return Take::Changed;
        }
        if died && self.died_here(r) {
            // Between the look and the CAS, a thread of this process took the lock over and
            // exited holding it: put the kernel's mark back.
            let prev = self.word.swap(OWNER_DIED | WAITERS, Ordering::Release);
            if prev & WAITERS != 0 {
                futex_wake(&self.word, 1);
            }
            r.pending(0);
            return Take::LeftHere;
        }
        let guard = self.taken(r, node);
        Take::Taken(if died {
            Err(OwnerDied { guard, tid: dead })
        } else {
            Ok(guard)
        })
    }

    /// The slow path of [`lock`](Self::lock): spin, then sleep on the futex until the
    /// word is free or its owner died.
    #[cold]
    fn lock_contended(&'static self, r: Robust, node: usize) -> LockResult<MutexGuard<'static, T>> {
        for _ in 0..SPINS {
            core::hint::spin_loop();
            let cur = self.word.load(Ordering::Relaxed);
            if cur & TID_MASK == 0
                && let Take::Taken(taken) = self.try_take(r, node, cur, 0)
            {
                return taken;
            }
        }
        let mut poll = NO_FUTEX_POLL_MIN;
        let mut stall = Stall::default();
        loop {
            let cur = self.word.load(Ordering::Relaxed);
            if cur & TID_MASK == 0 {
                // Others may sleep on it too: set WAITERS so that our unlock wakes one.
                match self.try_take(r, node, cur, WAITERS) {
                    Take::Taken(taken) => return taken,
                    Take::Changed => continue,
                    // Marked dead, but its holder was a thread of ours, whose leaked guard
                    // may live on (it exited without its destructors, so the keeper never
                    // got the lock): wait as for a live holder.
                    Take::LeftHere => {}
                }
            } else if cur & TID_MASK == r.tid && r.holds(node) {
                // The same number may be another namespace's thread: we asked our own list.
                panic!("dsu::sync::Mutex::lock: this thread already holds the lock (deadlock)");
            }
            if cur & WAITERS == 0
                && self
                    .word
                    .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            match futex_wait(&self.word, cur | WAITERS, RECHECK) {
                Wake::Changed => {}
                Wake::TimedOut => {
                    if stall.waited(self, cur) && self.holder_gone(r, cur) {
                        stall = Stall::default();
                    }
                }
                Wake::NoFutex => {
                    // Poll with a growing interval instead of spinning, so that a waiter
                    // costs next to no CPU (tests/vm robust::mutex_waiter_sleeps). The
                    // kernel still marks a dead owner's word.
                    std::thread::sleep(poll);
                    poll = (poll * 2).min(NO_FUTEX_POLL_MAX);
                }
            }
        }
    }

    /// Whether the module says the holder recorded in this lock (word `cur`) can never
    /// release it, in which case the word is marked `FUTEX_OWNER_DIED` here, as the kernel
    /// marks a dead holder's (the caller then takes the lock over). That is the case of a
    /// word *copied* while held: an image restored as a new segment (its holder runs on in
    /// the original, or ran before a reboot or module reload). Asked only of a holder whose
    /// thread id and token are both recorded and have not changed for a while, and never
    /// of this process's own token: the module's answer is about that process (alive, and
    /// mapping this lock's memory), which any of its threads may be.
    #[cold]
    fn holder_gone(&'static self, r: Robust, cur: u32) -> bool {
        let token = self.process.load(Ordering::Acquire);
        let holder = self.holder.load(Ordering::Relaxed);
        if token == 0 || token == r.token || holder != cur & TID_MASK {
            // Being taken or released right now, or ours: nothing to ask.
            return false;
        }
        let addr = self.word.as_ptr() as usize;
        if crate::sys::lock_owner_quiet(token, addr) != Some(crate::sys::LockOwner::Gone) {
            return false;
        }
        if self.process.load(Ordering::Acquire) != token {
            return false;
        }
        self.word
            .compare_exchange(
                cur,
                OWNER_DIED | (cur & WAITERS),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Locks if that needs no waiting: `None` if a live thread holds it, or a thread
    /// exited holding it (its guard leaked) while its process lives. A lock whose owner's
    /// process died is taken over (`Some(Err(_))`).
    ///
    /// # Panics
    ///
    /// If the calling thread already holds the lock.
    ///
    /// ```
    /// static M: dsu::sync::Mutex<u8> = dsu::sync::Mutex::new(0);
    /// let g = M.try_lock().unwrap().unwrap();
    /// ```
    pub fn try_lock(&'static self) -> Option<LockResult<MutexGuard<'static, T>>> {
        let r = robust();
        let node = self.node(r);
        for _ in 0..4 {
            let cur = self.word.load(Ordering::Relaxed);
            if cur & TID_MASK != 0 {
                if cur & TID_MASK == r.tid && r.holds(node) {
                    panic!(
                        "dsu::sync::Mutex::try_lock: this thread already holds the lock (deadlock)"
                    );
                }
                return None;
            }
            match self.try_take(r, node, cur, 0) {
                Take::Taken(taken) => return Some(taken),
                Take::Changed => {}
                Take::LeftHere => return None,
            }
        }
        None
    }

    /// The thread id of the current holder, if locked, as the holder's pid namespace
    /// numbers it (racy: for diagnostics and tests).
    ///
    /// ```
    /// let m = dsu::sync::Mutex::new(0);
    /// assert_eq!(m.owner(), None);
    /// ```
    pub fn owner(&self) -> Option<u32> {
        match self.word.load(Ordering::Relaxed) & TID_MASK {
            0 => None,
            t => Some(t),
        }
    }

    /// Consumes the mutex and returns the data, whatever the lock state (used by
    /// migrations, which receive a snapshot of the old value).
    ///
    /// ```
    /// assert_eq!(dsu::sync::Mutex::new(3).into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }

    /// Mutable access without locking (the `&mut` proves exclusivity).
    ///
    /// ```
    /// let mut m = dsu::sync::Mutex::new(3);
    /// *m.get_mut() = 4;
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

/// Counts the [`Mutex`]es that a memory image shows held: a lock word with a thread id in it
/// and [`MARK`] 8 bytes after it (every holder stores it; a lock never taken has none). Fed
/// the image's bytes in address order, region by region ([`feed`](Self::feed)): a lock whose
/// word ends one read and whose mark starts the next is counted too. A snapshot writer uses
/// it to find an instant at which no lock is held (`snapshot::Segment::snapshot_with`).
///
/// Bytes that merely look like a held lock (the mark's 8 bytes at an 8-aligned address
/// after a non-zero word) are counted too: the count is an upper bound, never too low,
/// except for a lock being taken for the very first time (the mark is stored just after
/// the compare-and-swap).
#[derive(Debug, Default)]
pub(crate) struct HeldLocks {
    /// The last 8 bytes fed and the offset after them, if they continue a region.
    tail: Option<([u8; 8], u64)>,
    /// Held locks seen so far.
    pub count: u64,
}

impl HeldLocks {
    /// Scans `bytes`, which start at `offset` (8-aligned) of a region; a new region (a
    /// discontinuous offset) starts afresh.
    pub(crate) fn feed(&mut self, offset: u64, bytes: &[u8]) {
        let word_held = |w: &[u8]| u32::from_ne_bytes(w[..4].try_into().unwrap()) & TID_MASK != 0;
        let is_mark = |m: &[u8]| u64::from_ne_bytes(m[..8].try_into().unwrap()) == MARK as u64;
        if let Some((tail, next)) = self.tail.take()
            && next == offset
            && bytes.len() >= 8
            && is_mark(bytes)
            && word_held(&tail)
        {
            self.count += 1;
        }
        let words = bytes.len() / 8;
        for i in 1..words {
            if is_mark(&bytes[i * 8..]) && word_held(&bytes[(i - 1) * 8..]) {
                self.count += 1;
            }
        }
        if words > 0 && bytes.len() % 8 == 0 {
            let last = bytes[bytes.len() - 8..].try_into().unwrap();
            self.tail = Some((last, offset + bytes.len() as u64));
        }
    }
}

/// Timed-out waits on one unchanged holder, so that the module is asked about a holder
/// that has not moved for [`ASK_AFTER`] waits, then after twice as many, and so on up to
/// every [`ASK_EVERY_MAX`] waits (a live holder of a long critical section costs its
/// waiters one ioctl a second).
#[derive(Default)]
struct Stall {
    /// The word, holder and token at the last timeout.
    seen: (u32, u32, u64),
    waits: u32,
    next_ask: u32,
}

/// Timed-out waits (of [`RECHECK`] each) on one unchanged holder before the module is
/// first asked about it.
const ASK_AFTER: u32 = 2;
/// The longest interval between questions, in waits.
const ASK_EVERY_MAX: u32 = 20;

impl Stall {
    /// Counts a timed-out wait on `lock` with word `cur`: whether to ask now.
    fn waited<T>(&mut self, lock: &Mutex<T>, cur: u32) -> bool {
        let seen = (
            cur,
            lock.holder.load(Ordering::Relaxed),
            lock.process.load(Ordering::Relaxed),
        );
        if seen != self.seen {
            *self = Stall {
                seen,
                waits: 0,
                next_ask: ASK_AFTER,
            };
        }
        self.waits += 1;
        if self.waits < self.next_ask {
            return false;
        }
        self.next_ask = self.waits + self.waits.clamp(ASK_AFTER, ASK_EVERY_MAX);
        true
    }
}

/// What [`Mutex::try_take`] found.
enum Take<T: 'static> {
    /// The lock is the caller's.
    Taken(LockResult<MutexGuard<'static, T>>),
    /// The word changed: look again.
    Changed,
    /// Its owner died, but was a thread of this process: the lock stays held.
    LeftHere,
}

impl<T> MutexGuard<'_, T> {
    /// Panics if the guard was inherited through `fork`: in the child, the lock is the
    /// parent's (one thread-local load and compare).
    #[inline]
    #[track_caller]
    fn check_generation(&self) {
        if STATE.with(|s| s.generation.get()) != self.generation {
            inherited_guard_used();
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn inherited_guard_used() -> ! {
    panic!(
        "dsu::sync::MutexGuard used in the child of fork: the lock is held by the parent \
         process, not by the child; lock the mutex again in the child"
    )
}

impl<T> core::ops::Deref for MutexGuard<'_, T> {
    type Target = T;
    /// # Panics
    ///
    /// In the child of `fork`, if the guard was inherited from the parent.
    #[inline]
    #[track_caller]
    fn deref(&self) -> &T {
        self.check_generation();
        // SAFETY: the guard holds the lock in this process (same fork generation).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> core::ops::DerefMut for MutexGuard<'_, T> {
    /// # Panics
    ///
    /// In the child of `fork`, if the guard was inherited from the parent.
    #[inline]
    #[track_caller]
    fn deref_mut(&mut self) -> &mut T {
        self.check_generation();
        // SAFETY: the guard holds the lock in this process (same fork generation).
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        let r = robust();
        if r.generation != self.generation {
            // Inherited through fork: the lock is the parent's.
            return;
        }
        let node = self.lock.node(r);
        if r.exiting {
            return keeper::dropped_while_exiting(node);
        }
        // SAFETY: the guard's lock is held by this thread, so its node is linked here.
        unsafe { self.lock.release(r, node) };
        STATE.with(|s| s.held.set(s.held.get() - 1));
    }
}

impl<T> Mutex<T> {
    /// Unlocks for the holder `r`. As glibc: announce, unlink, release, and only then
    /// clear the announcement, so that a death at any point leaves the lock released or
    /// marked.
    ///
    /// # Safety
    /// `node` is this lock's node, linked in `r`'s list (`r` is the calling thread's).
    #[inline(always)]
    unsafe fn release(&self, r: Robust, node: usize) {
        r.pending(node);
        // SAFETY: the caller's contract.
        unsafe { r.unlink(node) };
        compiler_fence(Ordering::SeqCst);
        // A holder killed before storing its token leaves 0 here, not a stale token.
        self.process.store(0, Ordering::Relaxed);
        let prev = self.word.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            futex_wake(&self.word, 1);
        }
        r.pending(0);
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex")
            .field("owner", &self.owner())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leak<T>(value: T) -> &'static Mutex<T> {
        Box::leak(Box::new(Mutex::new(value)))
    }

    /// Marks the lock, held by the calling thread, as held by a thread of another process
    /// (another token, and the thread's exit hands nothing to the keeper), so that its
    /// death lets this process take it over.
    fn as_if_held_by_another_process<T>(m: &Mutex<T>) {
        m.process
            .store(robust().token.wrapping_add(1), Ordering::Relaxed);
        STATE.with(|s| s.no_handoff.set(true));
    }

    /// Runs the test `name` alone (one test thread) in a fresh copy of the test binary
    /// with `env` set, for tests that fork; true when called from that copy.
    fn in_fresh_process(name: &str, env: &str) -> bool {
        if std::env::var_os(env).is_some() {
            return true;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env(env, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
        false
    }

    #[test]
    fn contended_counter() {
        let m = leak(0u64);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *m.lock().unwrap() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock().unwrap(), 40_000);
    }

    #[test]
    fn owner_died_word_is_taken_over() {
        let m = leak(7u32);
        // What the kernel leaves when the holder (tid 4242 in its namespace) dies.
        m.word.store(OWNER_DIED, Ordering::Relaxed);
        m.holder.store(4242, Ordering::Relaxed);
        let e = m.lock().err().expect("owner died");
        assert_eq!(e.dead_owner(), 4242);
        assert!(e.to_string().contains("died while holding it"));
        let g = e.into_inner();
        assert_eq!(*g, 7);
        assert_eq!(m.owner(), Some(gettid()));
        drop(g);
        assert_eq!(m.owner(), None);
        assert!(m.lock().is_ok());
    }

    /// The kernel, not a guess from the thread id, reports a holder that exited.
    #[test]
    fn exited_thread_is_dead() {
        let m = leak(0);
        std::thread::spawn(move || {
            let g = m.lock().unwrap();
            as_if_held_by_another_process(m);
            std::mem::forget(g)
        })
        .join()
        .unwrap();
        assert!(m.lock().is_err());
    }

    /// A thread of this process that exits holding the lock may have leaked its guard, whose
    /// `&mut T` lives on: the lock stays held (no takeover, no second `&mut T`) while the
    /// process lives, by the keeper thread: the kernel does not mark it dead.
    #[test]
    fn leaked_guard_of_exited_thread_keeps_the_lock() {
        let m = leak(0u32);
        let (leaked, leaker) = std::thread::spawn(move || {
            let guard: &'static mut MutexGuard<'static, u32> =
                Box::leak(Box::new(m.lock().unwrap()));
            let r: &'static mut u32 = guard;
            (r as *mut u32 as usize, gettid())
        })
        .join()
        .unwrap();
        let word = m.word.load(Ordering::Relaxed);
        assert_eq!(word & OWNER_DIED, 0, "marked dead: {word:#x}");
        let keeper = m.owner().expect("held");
        assert_ne!(keeper, leaker, "still the exited thread's");
        assert!(keeper::started());
        assert_eq!(m.holder.load(Ordering::Relaxed), keeper);
        assert!(m.try_lock().is_none(), "taken over under a leaked guard");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = m.lock().map(|_| ()).map_err(|e| e.dead_owner());
            tx.send(r).unwrap();
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(300)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout),
            "lock() returned while a leaked guard of this process holds the lock"
        );
        // SAFETY: the leaked guard's data; the lock is still held for it.
        assert_eq!(unsafe { *(leaked as *const u32) }, 0);
        // Should the kernel mark it anyway (a thread that skipped its destructors), the
        // process token still refuses the takeover.
        m.word.store(OWNER_DIED, Ordering::Relaxed);
        assert!(m.try_lock().is_none(), "taken over under a leaked guard");
    }

    /// Several threads exiting at once with leaked guards (and one that leaks two): each
    /// lock ends up held by the keeper, none marked dead.
    #[test]
    fn concurrent_exits_hand_every_lock_to_the_keeper() {
        let locks: Vec<&'static Mutex<u32>> = (0..9).map(|_| leak(0)).collect();
        let threads: Vec<_> = locks
            .chunks(3)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                std::thread::spawn(move || {
                    let guards: Vec<_> = chunk.iter().map(|m| m.lock().unwrap()).collect();
                    // Leaves one in the middle of the list released.
                    let mut guards = guards.into_iter();
                    let (a, b, c) = (guards.next(), guards.next(), guards.next());
                    drop(b);
                    std::mem::forget((a, c));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let keeper = locks[0].owner().expect("held");
        for (i, m) in locks.iter().enumerate() {
            if i % 3 == 1 {
                assert!(m.try_lock().is_some_and(|r| r.is_ok()), "lock {i} released");
            } else {
                assert_eq!(
                    m.word.load(Ordering::Relaxed) & !WAITERS,
                    keeper,
                    "lock {i}"
                );
            }
        }
    }

    /// The exit hook moves only dsu locks: a robust pthread mutex on the same list stays
    /// there, and the kernel reports its owner's death.
    #[test]
    fn hand_over_leaves_libc_robust_mutexes() {
        let p: &'static mut libc::pthread_mutex_t =
            Box::leak(Box::new(libc::PTHREAD_MUTEX_INITIALIZER));
        // SAFETY: initialises a leaked pthread mutex as robust.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            libc::pthread_mutex_init(p, &attr);
        }
        let p = p as *mut libc::pthread_mutex_t as usize;
        let (a, b) = (leak(1), leak(2));
        std::thread::spawn(move || {
            let ga = a.lock().unwrap();
            // SAFETY: a valid robust mutex.
            assert_eq!(unsafe { libc::pthread_mutex_lock(p as *mut _) }, 0);
            let gb = b.lock().unwrap();
            std::mem::forget((ga, gb));
        })
        .join()
        .unwrap();
        // SAFETY: a valid robust mutex whose owner died.
        let locked = unsafe { libc::pthread_mutex_lock(p as *mut libc::pthread_mutex_t) };
        assert_eq!(locked, libc::EOWNERDEAD);
        assert!(a.try_lock().is_none() && b.try_lock().is_none());
        assert!(a.owner().is_some(), "held by the keeper, not marked dead");
        assert_eq!(a.owner(), b.owner());
    }

    /// A guard that a thread-local destructor drops after the exit hook handed its lock to
    /// the keeper is released by the keeper (the thread's own list no longer has it).
    #[test]
    fn guard_dropped_after_the_hand_over_releases_the_lock() {
        std::thread_local!(static LATE: Cell<Option<MutexGuard<'static, u32>>> = const { Cell::new(None) });
        let (m, other) = (leak(0u32), leak(0u32));
        let (_, before) = guards_held();
        std::thread::spawn(move || {
            // Registered before dsu's hook (the first lock registers it), so run after it.
            LATE.with(|l| l.set(None));
            let keep_list_busy = other.lock().unwrap();
            LATE.with(|l| l.set(Some(m.lock().unwrap())));
            std::mem::forget(keep_list_busy);
        })
        .join()
        .unwrap();
        let mut g = m.try_lock().expect("released").expect("not marked dead");
        *g += 1;
        drop(g);
        assert!(other.try_lock().is_none(), "the leaked one stays held");
        // `other`'s guard counts; `m`'s was counted and then released.
        let (_, left) = guards_held();
        assert!(left > before, "{left} > {before}");
    }

    /// A process whose thread exited with a leaked guard keeps the lock from other
    /// processes while it lives (another process's `try_lock` gives `None`); once it is
    /// killed, the other process takes the lock over (`OwnerDied`) with the data the
    /// leaked guard wrote. The lock lies on a `MAP_SHARED` page shared across `fork`.
    #[test]
    fn leaked_guard_holds_the_lock_against_other_processes_until_exit() {
        if in_fresh_process(
            "sync::tests::leaked_guard_holds_the_lock_against_other_processes_until_exit",
            "DSU_SYNC_TEST_CROSS_PROCESS",
        ) {
            leaked_guard_across_processes();
        }
    }

    fn leaked_guard_across_processes() {
        // SAFETY: a fresh shared anonymous page, never unmapped: the lock is 'static.
        let m: &'static Mutex<u32> = unsafe {
            let p = libc::mmap(
                ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let p = p.cast::<Mutex<u32>>();
            p.write(Mutex::new(0));
            &*p
        };
        let mut fds = [0; 2];
        // SAFETY: a pipe into a valid array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the test process runs this test alone; the child spawns a thread, then
        // only writes and sleeps until killed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            std::thread::spawn(move || {
                let mut g = m.lock().unwrap();
                *g = 1;
                std::mem::forget(g);
            })
            .join()
            .unwrap();
            // SAFETY: writes one byte to our pipe, then sleeps until killed.
            unsafe {
                libc::write(fds[1], b"x".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        let mut byte = 0u8;
        // SAFETY: reads one byte from our pipe.
        let n = unsafe { libc::read(fds[0], (&mut byte as *mut u8).cast(), 1) };
        let mut taken_over_while_alive = false;
        if n == 1 {
            for _ in 0..5 {
                if let Some(r) = m.try_lock() {
                    taken_over_while_alive = true;
                    std::mem::forget(r);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // SAFETY: kills and reaps our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, ptr::null_mut(), 0);
        }
        assert_eq!(n, 1, "the child died before its thread exited");
        assert!(
            !taken_over_while_alive,
            "taken over while the process holding a leaked guard lives"
        );
        let died = m.lock().err().expect("taken over once its process is gone");
        let mut g = died.into_inner();
        assert_eq!(*g, 1);
        *g = 0;
        drop(g);

        // A process whose only thread calls exit() holding a leaked guard: exit() runs the
        // thread's destructors, whose hand-over starts the keeper; it must not hang.
        // SAFETY: as above; the child locks and calls exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let mut g = m.lock().unwrap();
            *g = 2;
            std::mem::forget(g);
            // SAFETY: ends the child the ordinary way, destructors included.
            unsafe { libc::exit(0) };
        }
        let mut status = 0;
        let start = std::time::Instant::now();
        // SAFETY: reaps our own child without blocking.
        while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
            if start.elapsed() > Duration::from_secs(20) {
                // SAFETY: kills and reaps our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, ptr::null_mut(), 0);
                }
                panic!("exit() with a leaked guard hangs");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
        let died = m.lock().err().expect("taken over once its process is gone");
        assert_eq!(*died.into_inner(), 2);
    }

    /// A held lock's bytes are counted wherever they lie, across two reads too; a
    /// released one, one never taken, and a region boundary are not.
    #[test]
    fn held_locks_are_found_in_an_image() {
        let m = leak([0u8; 8]);
        let bytes_of = |m: &Mutex<[u8; 8]>| {
            // SAFETY: reading the plain bytes of a live mutex (no reference to its data).
            unsafe { std::slice::from_raw_parts((m as *const Mutex<[u8; 8]>).cast::<u8>(), 56) }
                .to_vec()
        };
        let never = bytes_of(m);
        let g = m.lock().unwrap();
        let held = bytes_of(m);
        drop(g);
        let released = bytes_of(m);
        let count = |parts: &[(u64, &[u8])]| {
            let mut h = HeldLocks::default();
            for (off, b) in parts {
                h.feed(*off, b);
            }
            h.count
        };
        assert_eq!(count(&[(0, &never)]), 0, "never taken");
        assert_eq!(count(&[(0, &released)]), 0, "released");
        assert_eq!(count(&[(0, &held)]), 1, "held");
        let mut page = vec![0u8; 8192];
        page[4096 - 8..4096 - 8 + 56].copy_from_slice(&held);
        assert_eq!(count(&[(0, &page)]), 1, "held, in one read");
        assert_eq!(
            count(&[(0, &page[..4096]), (4096, &page[4096..])]),
            1,
            "held, its word and mark in two reads"
        );
        assert_eq!(
            count(&[(0, &page[..4096]), (8192, &page[4096..])]),
            0,
            "two regions: no lock across them"
        );
    }

    const DSU_ISSUED_FOR_TEST: u64 = 1 << 63;

    /// A waiter asks the module about an unchanged holder after 2 timed-out waits, then
    /// after 4, 8, 16, 32 and from then on every 20; a new holder starts the count again.
    #[test]
    fn stall_asks_after_two_waits_then_less_often() {
        let m = Mutex::new(0u32);
        m.word.store(5, Ordering::Relaxed);
        m.holder.store(5, Ordering::Relaxed);
        m.process.store(9, Ordering::Relaxed);
        let mut s = Stall::default();
        let asks: Vec<u32> = (1..=80).filter(|_| s.waited(&m, 5)).collect();
        assert_eq!(asks, [2, 4, 8, 16, 32, 52, 72]);
        m.process.store(10, Ordering::Relaxed);
        assert!(
            !s.waited(&m, 5),
            "a new token: the first wait of a new count"
        );
        assert!(s.waited(&m, 5), "its second");
        assert!(!s.waited(&m, 5 | WAITERS), "a new word: counted again");
    }

    /// Without an answer from the module (no module here, or a token it never issued),
    /// a waiter never declares the holder gone.
    #[test]
    fn no_module_no_takeover() {
        let m: &'static Mutex<u32> = Box::leak(Box::new(Mutex::new(0)));
        m.word.store(5, Ordering::Relaxed);
        m.holder.store(5, Ordering::Relaxed);
        m.process.store(DSU_ISSUED_FOR_TEST | 7, Ordering::Relaxed);
        if std::path::Path::new("/dev/dsu").exists() {
            return;
        }
        assert!(!m.holder_gone(robust(), 5));
        assert_eq!(m.word.load(Ordering::Relaxed), 5);
    }

    /// The look at the token and the CAS are not atomic: a takeover that finds the lock
    /// left by this process after its CAS puts the kernel's mark back.
    #[test]
    fn takeover_rechecks_the_token_after_its_cas() {
        let m = leak(0u32);
        m.word.store(OWNER_DIED, Ordering::Relaxed);
        m.process.store(robust().token, Ordering::Relaxed);
        let r = robust();
        assert!(matches!(
            m.try_take(r, m.node(r), OWNER_DIED, 0),
            Take::LeftHere
        ));
        assert_eq!(m.word.load(Ordering::Relaxed), OWNER_DIED);
    }

    /// Guards that threads leaked before exiting count for `attach`'s check, per process.
    #[test]
    fn guards_left_by_exited_threads_are_counted() {
        let m = leak(0u32);
        let (_, before) = guards_held();
        std::thread::spawn(move || std::mem::forget(m.lock().unwrap()))
            .join()
            .unwrap();
        let (here, left) = guards_held();
        assert_eq!(here, 0);
        // Other tests' threads may leak guards meanwhile; none is ever released.
        assert!(left > before, "{left} > {before}");
    }

    /// A thread-local destructor that locks after dsu's own destructor ran still counts
    /// the guard it leaks.
    #[test]
    fn guards_leaked_in_late_destructors_are_counted() {
        /// (exiting, held) right after the late destructor leaked its guard.
        static SEEN: std::sync::Mutex<Option<(bool, usize)>> = std::sync::Mutex::new(None);
        struct LockInDrop(&'static Mutex<u32>);
        impl Drop for LockInDrop {
            fn drop(&mut self) {
                std::mem::forget(self.0.lock().unwrap());
                let seen = STATE.with(|s| (s.exiting.get(), s.held.get()));
                *SEEN.lock().unwrap() = Some(seen);
            }
        }
        std::thread_local!(static LATE: Cell<Option<LockInDrop>> = const { Cell::new(None) });
        let (m, other) = (leak(0u32), leak(0u32));
        let (_, before) = guards_held();
        std::thread::spawn(move || {
            // Registered before dsu's hook (the first lock registers it), so run after it.
            LATE.with(|l| l.set(Some(LockInDrop(m))));
            drop(other.lock().unwrap());
        })
        .join()
        .unwrap();
        let (_, left) = guards_held();
        assert!(left > before, "{left} > {before}");
        // Counted in LEFT_BY_EXITED, not in the exiting thread's own count.
        assert_eq!(*SEEN.lock().unwrap(), Some((true, 0)));
        // Handed to the keeper at once: not marked dead at the thread's exit.
        assert_eq!(m.word.load(Ordering::Relaxed) & OWNER_DIED, 0);
        assert!(m.try_lock().is_none());
    }

    /// A waiter sleeping on the lock is woken when the holder exits.
    #[test]
    fn waiter_is_woken_by_holder_exit() {
        let m = leak(0);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let g = m.lock().unwrap();
            as_if_held_by_another_process(m);
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            std::mem::forget(g);
        });
        rx.recv().unwrap();
        let start = std::time::Instant::now();
        let r = m.lock();
        let waited = start.elapsed();
        assert!(r.is_err(), "the holder exited holding the lock");
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        t.join().unwrap();
    }

    /// A word holding this thread's id that this thread does not hold is another pid
    /// namespace's thread with the same number: it is held, not a recursive lock, and
    /// its owner is not presumed dead.
    #[test]
    fn same_tid_in_another_namespace_is_not_this_thread() {
        let m = leak(0);
        m.word.store(gettid(), Ordering::Relaxed);
        assert!(m.try_lock().is_none());
        let waiter = std::thread::spawn(move || m.try_lock().is_none());
        assert!(waiter.join().unwrap());
        m.word.store(0, Ordering::Relaxed);
        assert!(matches!(m.try_lock(), Some(Ok(_))));
    }

    #[test]
    fn recursive_lock_panics() {
        let m = leak(0);
        let g = m.lock().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.try_lock().map(|_| ())));
        assert!(r.is_err());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.lock().map(|_| ())));
        assert!(r.is_err());
        drop(g);
    }

    #[test]
    fn try_lock_fails_while_held() {
        let m = leak(0);
        let g = m.lock().unwrap();
        assert!(
            std::thread::spawn(move || m.try_lock().is_none())
                .join()
                .unwrap()
        );
        drop(g);
        assert!(m.try_lock().is_some());
    }

    #[test]
    fn guards_are_counted() {
        let (a, b) = (leak(0), leak(0));
        let before = guards_held().0;
        let ga = a.lock().unwrap();
        let gb = b.try_lock().unwrap().unwrap();
        assert_eq!(guards_held().0, before + 2);
        drop(ga);
        std::mem::forget(gb);
        assert_eq!(guards_held().0, before + 1, "a forgotten guard stays held");
    }

    /// dsu locks and glibc's robust pthread mutexes share the thread's robust list: taken
    /// and released in any order, the list stays well-formed, and when the thread exits
    /// holding both kinds the kernel marks each one.
    #[test]
    fn mixes_with_robust_pthread_mutexes() {
        let p: &'static mut libc::pthread_mutex_t =
            Box::leak(Box::new(libc::PTHREAD_MUTEX_INITIALIZER));
        // SAFETY: initialises a leaked pthread mutex as robust.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            libc::pthread_mutex_init(p, &attr);
        }
        let p = p as *mut libc::pthread_mutex_t as usize;
        let (a, b) = (leak(1), leak(2));
        std::thread::spawn(move || {
            let p = p as *mut libc::pthread_mutex_t;
            let r = robust();
            let ga = a.lock().unwrap();
            // SAFETY: a valid robust mutex.
            assert_eq!(unsafe { libc::pthread_mutex_lock(p) }, 0);
            let gb = b.lock().unwrap();
            assert!(r.holds(a.node(r)) && r.holds(b.node(r)));
            drop(ga); // between glibc's node and the head's end
            assert!(!r.holds(a.node(r)) && r.holds(b.node(r)));
            // SAFETY: locked by this thread.
            assert_eq!(unsafe { libc::pthread_mutex_unlock(p) }, 0);
            // SAFETY: as above.
            assert_eq!(unsafe { libc::pthread_mutex_lock(p) }, 0);
            let ga = a.lock().unwrap();
            as_if_held_by_another_process(a);
            as_if_held_by_another_process(b);
            std::mem::forget((ga, gb));
            // Exits holding a, p and b.
        })
        .join()
        .unwrap();
        // SAFETY: a valid robust mutex whose owner died.
        let locked = unsafe { libc::pthread_mutex_lock(p as *mut libc::pthread_mutex_t) };
        assert_eq!(locked, libc::EOWNERDEAD);
        assert!(a.lock().is_err());
        assert!(b.lock().is_err());
    }

    /// In the child of `fork`, a guard inherited from the parent neither unlocks nor gives
    /// access to the data: the lock is the parent's. Runs the fork in a fresh copy of the
    /// test binary, with one test thread.
    #[test]
    fn guard_inherited_through_fork_is_inert() {
        if in_fresh_process(
            "sync::tests::guard_inherited_through_fork_is_inert",
            "DSU_SYNC_TEST_FORK_CHILD",
        ) {
            inherited_guard_in_fork_child();
        }
    }

    fn inherited_guard_in_fork_child() {
        let m = leak(5u32);
        let mut g = m.lock().unwrap();
        *g = 6;
        // SAFETY: the test process runs this test alone; the child only locks, panics and
        // exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| *g));
            let write = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| *g = 7));
            let msg = match &read {
                Err(p) => p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default(),
                Ok(_) => String::new(),
            };
            let code = match (read.is_err(), write.is_err(), msg.contains("child of fork")) {
                (true, true, true) => {
                    drop(g); // inert: does not unlock the parent's lock
                    // The child locks for itself: the parent's thread holds it.
                    if m.try_lock().is_none() { 0 } else { 4 }
                }
                (false, _, _) => 1,
                (_, false, _) => 2,
                _ => 3,
            };
            // SAFETY: leaves the child without running the test harness's exit paths.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        match libc::WEXITSTATUS(status) {
            0 => {}
            1 => panic!("the child read the data through the parent's guard"),
            2 => panic!("the child wrote the data through the parent's guard"),
            3 => panic!("the child's panic does not say what happened"),
            c => panic!("the child's exit status is {c}"),
        }
        assert_eq!(*g, 6);
        drop(g);
        assert!(m.try_lock().is_some());
    }

    #[test]
    fn layout() {
        assert_eq!(std::mem::offset_of!(Mutex<u8>, process), NODE_AREA_END);
        assert_eq!(std::mem::offset_of!(Mutex<u8>, data), NODE_AREA_END + 8);
        assert_eq!(std::mem::offset_of!(Mutex<u8>, node), NODE_AREA_START);
        let r = robust();
        assert!(r.node_offset >= LINKS_START + 8 && r.node_offset + 8 <= NODE_AREA_END);
    }

    #[test]
    fn fingerprint_depends_on_data() {
        assert_ne!(Mutex::<u32>::FINGERPRINT, Mutex::<u64>::FINGERPRINT);
        assert_ne!(Mutex::<u32>::FINGERPRINT, u32::FINGERPRINT);
    }
}
