//! The lock keeper: one thread per process that holds, on behalf of threads that exited,
//! the [`Mutex`](super::Mutex)es whose guards they leaked.
//!
//! The kernel reports a thread's death, not its process's: a lock left on an exited
//! thread's robust list is marked `FUTEX_OWNER_DIED`, and a waiter in another process would
//! take it over while the leaked guard's `&mut T` lives on in this one. So an exiting
//! thread's exit hook (a thread-local destructor, run before the kernel walks its list)
//! moves each lock it still holds onto the keeper's list: the lock stays held by a live
//! thread of this process, and the kernel marks it dead exactly when the process dies
//! (the keeper with it), when no guard of it can be used any more.
//!
//! Hand-over, for a lock whose word holds the exiting thread's id `e`:
//! 1. the exiting thread sets its `list_op_pending` to the node and unlinks it;
//! 2. the keeper sets its own `list_op_pending` to the node, swaps `e` for its own id in
//!    the word (CAS, keeping `FUTEX_WAITERS`), links the node, clears its pending;
//! 3. the exiting thread clears its pending.
//!
//! Threads die one by one only by exiting (which waits for the hand-over); a kill takes
//! the whole process, and then the kernel marks the lock through whichever pending or list
//! names it, and whichever thread's id the word holds: dead, as it should be.
//!
//! The keeper starts on the first hand-over (started with `pthread_create`, as std's
//! `thread::spawn` may need thread-locals already destroyed in an exit hook), with every
//! signal blocked; it takes no lock, so an `exit()` whose destructors hand locks over
//! cannot wait on a thread that waits on it. Requests are a lock-free stack of nodes on
//! the requesters' stacks, each answered through its own futex. The child of `fork` has
//! no keeper, and starts its own when it needs one.
//!
//! Lock order: none (no locks; the only waits are a requester on its answer and the
//! keeper on its bell).

use super::{LEFT_BY_EXITED, MARK, Mutex, NODE_AREA_START, Robust, TID_MASK, get, robust};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// What a requester asks the keeper.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Take over the lock whose word holds `from`.
    Keep { from: u32 },
    /// Release the lock (its guard was dropped after the hand-over).
    Release,
}

/// A request, on the requester's stack until `done` is set.
struct Request {
    op: Op,
    /// The lock's list node (the same offset in every thread of the process).
    node: usize,
    next: *mut Request,
    /// Set to 1 by the keeper when the request is answered (a futex).
    done: AtomicU32,
}

/// Requests not yet taken by the keeper, newest first.
static REQUESTS: AtomicPtr<Request> = AtomicPtr::new(ptr::null_mut());
/// Bumped at each request; the keeper sleeps on it.
static BELL: AtomicU32 = AtomicU32::new(0);
/// 0 until the keeper of this process is started (back to 0 in the child of fork).
static STARTED: AtomicU32 = AtomicU32::new(0);

/// The lock at `node`, through its header (the same for every `T`).
///
/// # Safety
/// `node` is the list node of a live `'static` [`Mutex`] for this process's list offset.
unsafe fn lock_at(node: usize, r: Robust) -> &'static Mutex<()> {
    // SAFETY: `Mutex` is `repr(C)` with the data last: its header is `Mutex<()>`'s.
    unsafe { &*((node - r.node_offset) as *const Mutex<()>) }
}

/// Hands every dsu lock on the exiting thread `r`'s list to the keeper (exit hook).
#[cold]
#[inline(never)]
pub(super) fn hand_over_all(r: Robust) {
    let head = r.head_addr();
    // SAFETY: this thread's list, walked as the kernel walks it, with the same bound; a
    // node's `next` is read before it is handed over.
    let mut entry = unsafe { get(head) } & !1;
    for _ in 0..super::ROBUST_LIST_LIMIT {
        if entry == head || entry == 0 {
            break;
        }
        // SAFETY: a linked node.
        let next = unsafe { get(entry) } & !1;
        let word = entry - r.node_offset;
        // SAFETY: the word and the first slot of the node area lie in the same object as
        // the node, a lock linked in this thread's list (ours, or libc's robust mutex,
        // whose owner field sits there).
        let (mark, owner) = unsafe {
            (
                ((word + NODE_AREA_START) as *const usize).read_volatile(),
                (*(word as *const AtomicU32)).load(Ordering::Relaxed),
            )
        };
        if mark == MARK && owner & TID_MASK == r.tid {
            hand_over(r, entry);
        }
        entry = next;
    }
}

/// Counts a guard taken by a thread-local destructor that ran after the exit hook, and
/// hands its lock to the keeper at once, in case this guard is leaked too.
#[cold]
#[inline(never)]
pub(super) fn taken_while_exiting(r: Robust, node: usize) {
    LEFT_BY_EXITED.fetch_add(1, Ordering::SeqCst);
    hand_over(r, node);
}

/// Hands the lock at `node`, held by the calling thread `r` and linked in its list, to
/// the keeper.
#[cold]
#[inline(never)]
pub(super) fn hand_over(r: Robust, node: usize) {
    r.pending(node);
    // SAFETY: linked in this thread's list (the caller's contract).
    unsafe { r.unlink(node) };
    ask(Op::Keep { from: r.tid }, node);
    r.pending(0);
}

/// Drops a guard of the lock at `node` in a thread-local destructor that ran after the
/// exit hook: the lock is the keeper's (the hook, or [`taken_while_exiting`], handed it
/// over), and the keeper releases it. Not generic, so that the guard's drop stays small.
#[cold]
#[inline(never)]
pub(super) fn dropped_while_exiting(node: usize) {
    let r = robust();
    // SAFETY: the node of the 'static lock of a guard being dropped.
    let lock = unsafe { lock_at(node, r) };
    if lock.word.load(Ordering::Relaxed) & TID_MASK == r.tid && r.holds(node) {
        // Not handed over (tests' `no_handoff` threads).
        // SAFETY: linked in this thread's list, as just checked.
        unsafe { lock.release(r, node) };
    } else {
        ask(Op::Release, node);
    }
    LEFT_BY_EXITED.fetch_sub(1, Ordering::SeqCst);
}

/// Sends a request to the keeper (starting it if needed) and waits for the answer.
fn ask(op: Op, node: usize) {
    let mut request = Request {
        op,
        node,
        next: ptr::null_mut(),
        done: AtomicU32::new(0),
    };
    let request_ptr: *mut Request = &mut request;
    let mut first = REQUESTS.load(Ordering::Relaxed);
    loop {
        // SAFETY: not yet published.
        unsafe { (*request_ptr).next = first };
        match REQUESTS.compare_exchange_weak(
            first,
            request_ptr,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(now) => first = now,
        }
    }
    BELL.fetch_add(1, Ordering::Release);
    start();
    futex_wake_private(&BELL);
    // SAFETY: `request` outlives the wait; the keeper only touches it through the pointer
    // until it stores `done`.
    let done = unsafe { &(*request_ptr).done };
    while done.load(Ordering::Acquire) == 0 {
        futex_wait_private(done, 0);
    }
}

/// Starts the keeper unless it runs. Aborts the process if no thread can be started:
/// otherwise the exiting thread's locks would be marked dead while this process may still
/// use them through the leaked guards.
fn start() {
    if STARTED.load(Ordering::Acquire) != 0 || STARTED.swap(1, Ordering::AcqRel) != 0 {
        return;
    }
    // SAFETY: plain pthread calls on local, initialised values; the new thread runs
    // `keeper_main`, which never returns, detached.
    let r = unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut thread: libc::pthread_t = core::mem::zeroed();
        let r = libc::pthread_create(&mut thread, ptr::null(), keeper_main, ptr::null_mut());
        if r == 0 {
            libc::pthread_detach(thread);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        r
    };
    if r != 0 {
        let msg = b"dsu::sync::Mutex: a thread exited holding a lock (a leaked MutexGuard) and \
the lock keeper thread could not be started (pthread_create failed): aborting, so that \
other processes see the lock's owner die rather than take it while this process may \
still use it\n";
        // SAFETY: writes a static buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        std::process::abort();
    }
}

extern "C" fn keeper_main(_: *mut libc::c_void) -> *mut libc::c_void {
    let k = robust();
    loop {
        let bell = BELL.load(Ordering::Acquire);
        let mut request = REQUESTS.swap(ptr::null_mut(), Ordering::Acquire);
        if request.is_null() {
            futex_wait_private(&BELL, bell);
            continue;
        }
        while !request.is_null() {
            // SAFETY: a published request, alive until `done` is set; `next` and the rest
            // are read before.
            let (op, node, next) = unsafe { ((*request).op, (*request).node, (*request).next) };
            // SAFETY: the node of a 'static lock the requester holds (or held and handed to
            // this thread).
            let lock = unsafe { lock_at(node, k) };
            match op {
                Op::Keep { from } => keep(k, lock, node, from),
                Op::Release => {
                    if k.holds(node) {
                        // SAFETY: linked in this thread's list, as just checked.
                        unsafe { lock.release(k, node) };
                    }
                }
            }
            // SAFETY: as above; the last touch of the request.
            let done = unsafe { &(*request).done };
            done.store(1, Ordering::Release);
            futex_wake_private(done);
            request = next;
        }
    }
}

/// Takes the lock `lock` (node `node`) over from the exiting thread `from`, which unlinked
/// it and announces it in its own `list_op_pending`.
fn keep(k: Robust, lock: &Mutex<()>, node: usize, from: u32) {
    k.pending(node);
    let mut cur = lock.word.load(Ordering::Relaxed);
    loop {
        if cur & TID_MASK != from {
            // Not the requester's (cannot happen: it holds the lock and waits for us).
            k.pending(0);
            return;
        }
        // Waiters may set WAITERS meanwhile: keep it, and every other bit.
        match lock.word.compare_exchange_weak(
            cur,
            (cur & !TID_MASK) | k.tid,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(now) => cur = now,
        }
    }
    lock.holder.store(k.tid, Ordering::Relaxed);
    // SAFETY: this thread now holds the 'static lock; the requester unlinked its node.
    unsafe { k.link(node) };
    k.pending(0);
}

/// In the child of fork: no keeper, no requests (their threads are the parent's).
pub(super) fn after_fork_in_child() {
    REQUESTS.store(ptr::null_mut(), Ordering::Relaxed);
    BELL.store(0, Ordering::Relaxed);
    STARTED.store(0, Ordering::Relaxed);
}

/// Whether this process's keeper was started (tests).
#[cfg(test)]
pub(super) fn started() -> bool {
    STARTED.load(Ordering::Acquire) != 0
}

fn futex_wait_private(word: &AtomicU32, expected: u32) {
    // SAFETY: a private wait without timeout on a valid aligned u32 of this process.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ptr::null::<libc::timespec>(),
        )
    };
}

fn futex_wake_private(word: &AtomicU32) {
    // SAFETY: a private wake on a valid aligned u32 of this process.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}
