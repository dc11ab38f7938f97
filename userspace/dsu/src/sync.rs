//! Process-shared, robust synchronisation for shared globals.
//!
//! `std::sync::Mutex` uses private futexes, which do not wake waiters in another process,
//! and it deadlocks forever if its holder dies. [`Mutex`] is a futex word holding the
//! owner's thread id. An uncontended lock is one compare-and-swap; a contended one spins
//! briefly, then sleeps on a *shared* futex (the module backs segment pages with a shmem
//! file, so the kernel keys the futex by page, not by virtual address, and versions that
//! map the lock at different addresses wake each other). Only when a sleep times out does
//! the waiter check whether the owner still lives; a dead owner's lock is taken over and
//! the new holder is told through [`OwnerDied`], like std's `PoisonError`.
//!
//! Thread ids are compared within one pid namespace: every version sharing a lock must run
//! in the same one.
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
use crate::fingerprint::Fnv;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Set in the lock word when a thread may be sleeping on it.
const WAITERS: u32 = 1 << 31;
/// The owner's thread id (Linux tids are below 2^22).
const TID_MASK: u32 = (1 << 30) - 1;
/// How long a waiter sleeps before it checks again whether the owner lives: the most a
/// dead owner can delay the next locker.
const RECHECK: Duration = Duration::from_millis(50);
/// Spins on a held lock before sleeping: critical sections on shared globals are short.
const SPINS: u32 = 100;
/// How often a waiter polls when the kernel refuses a futex on the lock's page: the
/// interval starts here and doubles up to the maximum.
const NO_FUTEX_POLL_MIN: Duration = Duration::from_micros(200);
const NO_FUTEX_POLL_MAX: Duration = Duration::from_millis(8);

/// A mutual-exclusion lock that works across processes (and program versions) mapping the
/// same shared global, and survives the death of its holder.
///
/// The layout is `#[repr(C)]`: a `u32` lock word (0 = free, else the owner's tid, with bit
/// 31 set when there are waiters) followed by the data. It is [`Shared`] when `T` is.
///
/// A thread id can be reused by a new thread after its owner died; the check treats such
/// a lock as held until that thread exits. Locking a mutex the calling thread already
/// holds panics.
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
    data: UnsafeCell<T>,
}

// SAFETY: the lock serialises access to `data`, like std's Mutex.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Mutex<T> {}

// SAFETY: repr(C) of an AtomicU32 and a Shared T; the lock word's meaning (a tid) is the
// same in every version.
unsafe impl<T: Shared> Shared for Mutex<T> {
    const FINGERPRINT: u64 = Fnv::new()
        .str("dsu::sync::Mutex")
        .u64(T::FINGERPRINT)
        .finish();
}

/// Holds a [`Mutex`] locked; unlocks on drop. Dereferences to the data.
///
/// ```
/// let m = dsu::sync::Mutex::new(5);
/// let g: dsu::sync::MutexGuard<'_, i32> = m.lock().unwrap();
/// assert_eq!(*g, 5);
/// ```
pub struct MutexGuard<'a, T> {
    lock: &'a Mutex<T>,
    // The lock word records this thread: the guard must not move to another.
    _not_send: PhantomData<*const ()>,
}

/// The lock was taken over from an owner that died while holding it: the data may be
/// half-updated. The guard is still yours ([`into_inner`](Self::into_inner)).
///
/// ```
/// let m = dsu::sync::Mutex::new(0u32);
/// let guard = match m.lock() {
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
    /// let m = dsu::sync::Mutex::new(1);
    /// let g = m.lock().unwrap_or_else(|e| e.into_inner());
    /// assert_eq!(*g, 1);
    /// ```
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// The thread id of the owner that died.
    ///
    /// ```
    /// let m = dsu::sync::Mutex::new(1);
    /// if let Err(e) = m.lock() { println!("tid {} died", e.dead_owner()); }
    /// ```
    pub fn dead_owner(&self) -> u32 {
        self.tid
    }

    /// A reference to the guard.
    ///
    /// ```
    /// let m = dsu::sync::Mutex::new(1);
    /// if let Err(e) = m.lock() { let _ = **e.get_ref(); }
    /// ```
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// A mutable reference to the guard.
    ///
    /// ```
    /// let m = dsu::sync::Mutex::new(1);
    /// if let Err(mut e) = m.lock() { **e.get_mut() = 0; }
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
/// let m = dsu::sync::Mutex::new(());
/// let r: dsu::sync::LockResult<dsu::sync::MutexGuard<'_, ()>> = m.lock();
/// ```
pub type LockResult<G> = Result<G, OwnerDied<G>>;

std::thread_local! {
    /// This thread's id, 0 until first asked (gettid is a system call on every lock otherwise).
    static TID: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

extern "C" fn forget_tid_after_fork() {
    // The child's only thread has a new id: forget the one inherited from the parent.
    TID.with(|t| t.set(0));
}

fn gettid() -> u32 {
    TID.with(|t| {
        if t.get() == 0 {
            static AT_FORK: std::sync::Once = std::sync::Once::new();
            AT_FORK.call_once(|| {
                // SAFETY: registers a handler that only touches a thread-local cell, which
                // is async-signal-safe enough for the child of fork.
                unsafe { libc::pthread_atfork(None, None, Some(forget_tid_after_fork)) };
            });
            // SAFETY: gettid has no preconditions.
            t.set((unsafe { libc::gettid() }) as u32);
        }
        t.get()
    })
}

/// Whether thread `tid` exists and is not a zombie.
fn alive(tid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(tid as libc::pid_t, 0) };
    if r != 0 && nix::errno::Errno::last() == nix::errno::Errno::ESRCH {
        return false;
    }
    // A killed process that its parent has not reaped yet still answers kill(): look at
    // its state.
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => true,
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
            data: UnsafeCell::new(value),
        }
    }

    /// Locks, sleeping while another thread (in any process) holds it. If the holder died,
    /// takes the lock over and returns the guard inside [`OwnerDied`].
    ///
    /// # Panics
    ///
    /// If the calling thread already holds the lock.
    ///
    /// ```
    /// let m = dsu::sync::Mutex::new(vec![1]);
    /// m.lock().unwrap().push(2);
    /// ```
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let me = gettid();
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(self.guard());
        }
        self.lock_contended(me)
    }

    /// The slow path of [`lock`](Self::lock): spin, then sleep on the futex, checking on
    /// the owner each time a sleep times out.
    #[cold]
    fn lock_contended(&self, me: u32) -> LockResult<MutexGuard<'_, T>> {
        for _ in 0..SPINS {
            core::hint::spin_loop();
            if self.word.load(Ordering::Relaxed) == 0
                && self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok(self.guard());
            }
        }
        let mut poll = NO_FUTEX_POLL_MIN;
        let mut last_check = std::time::Instant::now();
        loop {
            let cur = self.word.load(Ordering::Relaxed);
            if cur == 0 {
                // Others may sleep on it too: keep WAITERS so that our unlock wakes one.
                if self
                    .word
                    .compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.guard());
                }
                continue;
            }
            let owner = cur & TID_MASK;
            if owner == me {
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
            let check_owner = match futex_wait(&self.word, cur | WAITERS, RECHECK) {
                Wake::Changed => false,
                Wake::TimedOut => true,
                Wake::NoFutex => {
                    // Poll with a growing interval instead of spinning, so that a waiter
                    // costs next to no CPU (tests/vm robust::mutex_waiter_sleeps).
                    std::thread::sleep(poll);
                    poll = (poll * 2).min(NO_FUTEX_POLL_MAX);
                    last_check.elapsed() >= RECHECK
                }
            };
            if check_owner {
                last_check = std::time::Instant::now();
                if let Some(taken) = self.take_over_if_dead(me, cur | WAITERS) {
                    return taken;
                }
            }
        }
    }

    fn guard(&self) -> MutexGuard<'_, T> {
        MutexGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// If the lock word still is `cur` and its owner is dead, takes the lock over.
    fn take_over_if_dead(&self, me: u32, cur: u32) -> Option<LockResult<MutexGuard<'_, T>>> {
        let owner = cur & TID_MASK;
        if owner == 0 || alive(owner) {
            return None;
        }
        self.take_over(me, cur)
    }

    /// Replaces the dead owner in lock word `cur` with `me`; None if the word changed.
    fn take_over(&self, me: u32, cur: u32) -> Option<LockResult<MutexGuard<'_, T>>> {
        self.word
            .compare_exchange(
                cur,
                me | (cur & WAITERS),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| {
                Err(OwnerDied {
                    guard: self.guard(),
                    tid: cur & TID_MASK,
                })
            })
    }

    /// Locks if that needs no waiting: `None` if a live thread holds it.
    ///
    /// ```
    /// let m = dsu::sync::Mutex::new(0);
    /// let g = m.try_lock().unwrap().unwrap();
    /// ```
    pub fn try_lock(&self) -> Option<LockResult<MutexGuard<'_, T>>> {
        let me = gettid();
        for _ in 0..4 {
            let cur = self.word.load(Ordering::Relaxed);
            if cur == 0 {
                if self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(Ok(self.guard()));
                }
                continue;
            }
            if cur & TID_MASK == me {
                panic!("dsu::sync::Mutex::try_lock: this thread already holds the lock (deadlock)");
            }
            if alive(cur & TID_MASK) {
                return None;
            }
            if let Some(taken) = self.take_over(me, cur) {
                return Some(taken);
            }
        }
        None
    }

    /// The thread id of the current holder, if locked (racy: for diagnostics and tests).
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

impl<T> core::ops::Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> core::ops::DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        let prev = self.lock.word.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            futex_wake(&self.lock.word, 1);
        }
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
    use std::sync::Arc;

    #[test]
    fn contended_counter() {
        let m = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
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
    fn dead_owner_is_taken_over() {
        let m = Mutex::new(7u32);
        // Pretend a thread that no longer exists holds it (the largest tid is never used).
        m.word.store(TID_MASK - 1, Ordering::Relaxed);
        let e = m.lock().err().expect("owner died");
        assert_eq!(e.dead_owner(), TID_MASK - 1);
        assert!(e.to_string().contains("died while holding it"));
        let g = e.into_inner();
        assert_eq!(*g, 7);
        assert_eq!(m.owner(), Some(gettid()));
        drop(g);
        assert_eq!(m.owner(), None);
        assert!(m.lock().is_ok());
    }

    #[test]
    fn exited_thread_is_dead() {
        let m = Arc::new(Mutex::new(0));
        let m2 = m.clone();
        std::thread::spawn(move || std::mem::forget(m2.lock().unwrap()))
            .join()
            .unwrap();
        assert!(m.lock().is_err());
    }

    #[test]
    fn try_lock_fails_while_held() {
        let m = Arc::new(Mutex::new(0));
        let g = m.lock().unwrap();
        let m2 = m.clone();
        assert!(
            std::thread::spawn(move || m2.try_lock().is_none())
                .join()
                .unwrap()
        );
        drop(g);
        assert!(m.try_lock().is_some());
    }

    #[test]
    fn fingerprint_depends_on_data() {
        assert_ne!(Mutex::<u32>::FINGERPRINT, Mutex::<u64>::FINGERPRINT);
        assert_ne!(Mutex::<u32>::FINGERPRINT, u32::FINGERPRINT);
    }
}
