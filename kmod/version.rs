// SPDX-License-Identifier: GPL-2.0

//! Versions and their events.
//!
//! A [`Version`] is a handle after BIND: a label, the binder's pid, and a page map that says
//! which segment page backs each page of the version's global section. The map holds page
//! pointers resolved at BIND; they stay valid because the version holds a reference to the
//! segment, which frees its pages only when it is dropped. The fault path reads the map
//! without any lock: it never changes after BIND.
//!
//! An [`EventQueue`] belongs to each attached handle and receives `VERSION_BOUND` and
//! `VERSION_ENDED` events about the *other* versions of its segment.
//!
//! Lock order: segment mutex → event spinlock (events are pushed with the segment locked).
//! The wait queue is woken after the spinlock is released.

use crate::{
    kernel_ext::{
        mm::PagePtr,
        poll::WaitQueue,
        time::realtime_ns,
    },
    limits::EVENT_QUEUE_LEN,
    segment::Segment,
    static_wait_class,
    uapi::{dsu_event, dsu_version_info, Label},
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{c_str, new_spinlock, prelude::*, sync::{Arc, SpinLock}};

/// A bound version.
///
/// Only `mappings` changes after creation (VMA open/close, any thread, atomically).
pub struct Version {
    /// Unique in its segment, from 1.
    pub id: u64,
    /// The label given at BIND.
    pub label: Label,
    /// Thread group id of the binder.
    pub pid: i32,
    /// `CLOCK_REALTIME` of the bind.
    pub bound_ns: u64,
    /// Install every PTE at mmap instead of on fault.
    pub prefault: bool,
    /// Page `i` of the version's section is `pages[i]`.
    pub pages: KVVec<PagePtr>,
    /// Live VMAs over this version.
    pub mappings: AtomicU64,
    /// Keeps the pages in `pages` alive.
    pub segment: Arc<Segment>,
}

impl Version {
    /// The introspection record.
    pub fn info(&self) -> dsu_version_info {
        dsu_version_info {
            id: self.id,
            pid: self.pid,
            flags: 0,
            pages: self.pages.len() as u64,
            mappings: self.mappings.load(Ordering::Relaxed),
            bound_ns: self.bound_ns,
            label: self.label.to_c(),
        }
    }

    /// An event about this version.
    pub fn event(&self, kind: u32) -> dsu_event {
        dsu_event {
            size: core::mem::size_of::<dsu_event>() as u32,
            kind,
            version_id: self.id,
            pid: self.pid,
            lost: 0,
            time_ns: realtime_ns(),
            label: self.label.to_c(),
        }
    }
}

/// A bounded ring of events.
struct Ring {
    events: KVec<dsu_event>,
    head: usize,
    len: usize,
    /// Events dropped (queue full) before the one at `head`.
    lost: u32,
}

/// Events for one handle. Pushing (segment side) and popping (reader side) may race; the
/// spinlock orders them and the wait queue wakes readers and pollers.
#[pin_data]
pub struct EventQueue {
    #[pin]
    ring: SpinLock<Ring>,
    #[pin]
    wait: WaitQueue,
}

impl EventQueue {
    /// An empty queue.
    pub fn new() -> Result<Arc<Self>> {
        let ring = Ring {
            events: KVec::from_elem(dsu_event::default(), EVENT_QUEUE_LEN, GFP_KERNEL)?,
            head: 0,
            len: 0,
            lost: 0,
        };
        Arc::pin_init(
            pin_init!(Self {
                ring <- new_spinlock!(ring, "dsu_events"),
                wait <- WaitQueue::new(c_str!("dsu_events_wait"), static_wait_class!()),
            }),
            GFP_KERNEL,
        )
    }

    /// Queues `event`, dropping the oldest if full, and wakes readers.
    pub fn push(&self, event: dsu_event) {
        {
            let mut r = self.ring.lock();
            if r.len == EVENT_QUEUE_LEN {
                r.head = (r.head + 1) % EVENT_QUEUE_LEN;
                r.len -= 1;
                r.lost = r.lost.saturating_add(1);
            }
            let tail = (r.head + r.len) % EVENT_QUEUE_LEN;
            r.events[tail] = event;
            r.len += 1;
        }
        self.wait.wake_up();
    }

    /// Pops up to `out.len()` events into `out`, returning how many.
    pub fn pop(&self, out: &mut [dsu_event]) -> usize {
        let mut r = self.ring.lock();
        let n = r.len.min(out.len());
        for slot in out.iter_mut().take(n) {
            *slot = r.events[r.head];
            slot.lost = r.lost;
            r.lost = 0;
            r.head = (r.head + 1) % EVENT_QUEUE_LEN;
            r.len -= 1;
        }
        n
    }

    /// Whether an event is queued.
    pub fn ready(&self) -> bool {
        self.ring.lock().len > 0
    }

    /// Drops every queued event (BIND clears the binder's own queue).
    pub fn clear(&self) {
        let mut r = self.ring.lock();
        r.head = 0;
        r.len = 0;
        r.lost = 0;
    }

    /// The wait queue that readers and pollers sleep on.
    pub fn wait_queue(&self) -> &WaitQueue {
        &self.wait
    }
}
