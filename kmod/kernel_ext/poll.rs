// SPDX-License-Identifier: GPL-2.0-only

//! Wait queues for `poll()` and blocking `read()`.
//!
//! [`WaitQueue`] wraps a `wait_queue_head`. Its internal spinlock nests inside any dsu lock
//! (dsu takes no lock while holding it). [`PollTable`] is the table handed to a file's
//! `poll` operation; [`WaitQueue::register`] is `poll_wait()`.
//!
//! A poller (epoll above all) keeps an entry on the queue after `poll` returns, for as long
//! as it watches the file, and epoll unlinks it under RCU. So a queue that was ever
//! registered is torn down as upstream's `PollCondVar` (6.13+) does: on drop it wakes
//! every poller with `POLLFREE` (`__wake_up_pollfree`: epoll then forgets the queue) and
//! waits for an RCU grace period, so no poller can touch the freed queue. That makes
//! `register` safe on any queue, however long it lives. (Before, its safety rested on the
//! caller: registering a queue that is dropped before the file is released, e.g. one that
//! is replaced while the file stays open, left epoll with an entry in freed memory.)

use core::sync::atomic::{AtomicBool, Ordering};
use kernel::{bindings, error::code::ERESTARTSYS, prelude::*, str::CStr, types::Opaque};

/// Readable: `POLLIN`.
pub const POLLIN: u32 = 0x0001;
/// Normal data readable: `POLLRDNORM`.
pub const POLLRDNORM: u32 = 0x0040;

/// A lockdep class for a [`WaitQueue`]'s spinlock. Create with [`static_wait_class!`].
#[repr(transparent)]
pub struct WaitClassKey(Opaque<bindings::lock_class_key>);

// SAFETY: lockdep owns the key and synchronises every access to it.
unsafe impl Sync for WaitClassKey {}

impl WaitClassKey {
    /// Returns an uninitialised key, as lockdep expects for statically allocated keys.
    ///
    /// # Safety
    ///
    /// The key must be placed in a `static` (lockdep checks that keys are static objects).
    pub const unsafe fn new_static() -> Self {
        Self(Opaque::uninit())
    }
}

/// Defines a static [`WaitClassKey`] and returns a reference to it.
#[macro_export]
macro_rules! static_wait_class {
    () => {{
        // SAFETY: The key is placed in a static.
        static KEY: $crate::kernel_ext::poll::WaitClassKey =
            unsafe { $crate::kernel_ext::poll::WaitClassKey::new_static() };
        &KEY
    }};
}

/// `struct poll_table_struct` as laid out in `include/linux/poll.h`. The 6.12 bindings only
/// have it as an opaque type, since `poll.h` is not in their header list.
#[repr(C)]
struct RawPollTable {
    qproc: Option<
        unsafe extern "C" fn(
            *mut bindings::file,
            *mut bindings::wait_queue_head,
            *mut RawPollTable,
        ),
    >,
    key: u32,
}

/// The poll table given to a `poll` file operation (possibly null: no waiting wanted).
pub struct PollTable(*mut bindings::poll_table_struct);

impl PollTable {
    /// Wraps the raw table.
    ///
    /// # Safety
    ///
    /// `ptr` must be null or a valid poll table for the duration of the `poll` call.
    pub unsafe fn from_raw(ptr: *mut bindings::poll_table_struct) -> Self {
        Self(ptr)
    }
}

/// A wait queue head, pinned in place (waiters link into it).
///
/// Waking and registering may race freely; the kernel's queue lock orders them. Dropping a
/// queue that a poller registered on sleeps for an RCU grace period (see the module docs),
/// so it must be dropped where sleeping is allowed.
#[pin_data(PinnedDrop)]
pub struct WaitQueue {
    #[pin]
    head: Opaque<bindings::wait_queue_head>,
    /// Whether a poll table was ever registered (then drop must free its pollers).
    polled: AtomicBool,
}

// SAFETY: The wait queue is designed to be used from any thread; its lock serialises it.
unsafe impl Send for WaitQueue {}
// SAFETY: See above.
unsafe impl Sync for WaitQueue {}

impl WaitQueue {
    /// Creates an initialiser for an empty wait queue.
    pub fn new(name: &'static CStr, key: &'static WaitClassKey) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes while the closure runs; `name` and `key` are
            // static.
            head <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_waitqueue_head(slot, name.as_char_ptr(), key.0.get())
            }),
            polled: AtomicBool::new(false),
        })
    }

    /// `poll_wait()`: lets `poll`/`select`/`epoll` wait on this queue.
    pub fn register(&self, file: &super::file::File, table: &PollTable) {
        if table.0.is_null() {
            return;
        }
        let raw = table.0.cast::<RawPollTable>();
        // SAFETY: A non-null table is a valid `poll_table_struct` (see `PollTable::from_raw`)
        // with the layout of `RawPollTable`.
        let qproc = unsafe { (*raw).qproc };
        if let Some(qproc) = qproc {
            // Before the entry goes in: drop must see that a poller may be queued.
            self.polled.store(true, Ordering::Release);
            // SAFETY: `file` and the table are valid for this poll call; the queue is pinned,
            // and when dropped it detaches every poller first (`PinnedDrop`), so the entry
            // never points to a freed queue.
            unsafe { qproc(file.as_ptr(), self.head.get(), raw) };
        }
    }

    /// Wakes the waiters, telling poll waiters that the queue is readable.
    pub fn wake_up(&self) {
        // SAFETY: The queue head is initialised and pinned. The key is a poll mask, as
        // `wake_up_interruptible_poll` passes it.
        unsafe {
            bindings::__wake_up(
                self.head.get(),
                bindings::TASK_INTERRUPTIBLE,
                1,
                (POLLIN | POLLRDNORM) as usize as *mut kernel::ffi::c_void,
            )
        };
    }

    /// `wait_event_interruptible()`: sleeps until `ready()` returns true. Returns
    /// `ERESTARTSYS` if a signal arrives first. `ready` runs with the task state set, so it
    /// must not sleep (taking a spinlock is fine).
    pub fn wait_interruptible(&self, mut ready: impl FnMut() -> bool) -> Result {
        let entry = Opaque::<bindings::wait_queue_entry>::uninit();
        // SAFETY: `entry` is a local that does not move until `finish_wait` below.
        unsafe { bindings::init_wait_entry(entry.get(), 0) };
        let result = loop {
            // SAFETY: The queue head is initialised and pinned; `entry` is initialised.
            let intr = unsafe {
                bindings::prepare_to_wait_event(
                    self.head.get(),
                    entry.get(),
                    bindings::TASK_INTERRUPTIBLE as i32,
                )
            };
            if ready() {
                break Ok(());
            }
            if intr != 0 {
                break Err(ERESTARTSYS);
            }
            // SAFETY: Sleeping is allowed: the caller holds no spinlock (this is a sleeping
            // context, like every file operation).
            unsafe { bindings::schedule() };
        };
        // SAFETY: Removes `entry` from the queue if it is still queued and resets the task
        // state; valid whether or not it was queued.
        unsafe { bindings::finish_wait(self.head.get(), entry.get()) };
        result
    }
}

#[pinned_drop]
impl PinnedDrop for WaitQueue {
    fn drop(self: Pin<&mut Self>) {
        if !self.polled.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: The queue head is initialised and pinned. `__wake_up_pollfree` wakes every
        // poller with `POLLFREE`, which makes epoll unlink its entries (under RCU) and
        // forget the queue; the grace period then lets every such unlink finish before the
        // memory goes, as upstream's `PollCondVar` does.
        unsafe {
            bindings::__wake_up_pollfree(self.head.get());
            bindings::synchronize_rcu();
        }
    }
}
