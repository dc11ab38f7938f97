// SPDX-License-Identifier: GPL-2.0-only

//! Versions and their events.
//!
//! A [`Version`] is a handle after BIND: a label, the binder's pid, and a [`PageMap`] that
//! says which page of the segment's shmem file backs each page of the version's global
//! section. The map is a sorted array of runs, one per contiguous stretch (an extent of the
//! BIND, split where the segment's file pages are not contiguous), so BIND costs O(runs),
//! not O(pages). The fault path reads the map without any lock (it never changes after
//! BIND), finds the run by binary search and takes the page from the file's page cache
//! (an RCU lookup). The pages stay in the file because the version holds a reference to the
//! segment, which only truncates pages that never became part of it.
//!
//! An [`EventQueue`] belongs to each attached handle and receives `VERSION_BOUND`,
//! `VERSION_READY`, `VERSION_ABORTED` and `VERSION_ENDED` events about the *other* versions
//! of its segment. A queued event holds
//! the binder's `struct pid` ([`TaskPid`]), translated into a number only by `read()`, in
//! the reader's pid namespace; so is a version's pid in LIST_VERSIONS.
//!
//! Lock order: segment mutex → event spinlock (events are pushed with the segment locked).
//! The wait queue is woken after the spinlock is released. Dropping a [`TaskPid`] under the
//! spinlock is fine: `put_pid` is atomic-safe (RCU callbacks call it).

use crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL;
use crate::{
    kernel_ext::{ns::TaskPid, poll::WaitQueue, time::realtime_ns},
    limits::EVENT_QUEUE_LEN,
    segment::Segment,
    static_wait_class,
    uapi::{dsu_event, dsu_version_info, Label, DSU_VERSION_READY},
};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{
    c_str,
    error::code::*,
    new_spinlock,
    prelude::*,
    sync::{Arc, SpinLock},
};

/// A bound version.
///
/// Only `mappings` (VMA open/close, any thread, atomically) and `ready` (READY, under the
/// segment mutex) change after creation.
pub struct Version {
    /// Unique in its segment, from 1.
    pub id: u64,
    /// The handle that bound it.
    pub handle: u64,
    /// The label given at BIND.
    pub label: Label,
    /// The binder's thread group.
    pub pid: TaskPid,
    /// `CLOCK_REALTIME` of the bind.
    pub bound_ns: u64,
    /// Install every PTE at mmap instead of on fault.
    pub prefault: bool,
    /// Which file page backs each page of the version's section.
    pub map: PageMap,
    /// Live VMAs over this version.
    pub mappings: AtomicU64,
    /// Whether it is ready (committed); a candidate until then. Written under the segment
    /// mutex.
    pub ready: AtomicBool,
    /// Keeps the pages in `pages` alive.
    pub segment: Arc<Segment>,
}

impl Version {
    /// Whether it is ready (else a candidate).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The introspection record, its pid as the caller's pid namespace sees it (0 if not).
    pub fn info(&self) -> dsu_version_info {
        dsu_version_info {
            id: self.id,
            pid: self.pid.nr_in_current_ns(),
            flags: if self.is_ready() {
                DSU_VERSION_READY
            } else {
                0
            },
            pages: self.map.pages(),
            mappings: self.mappings.load(Ordering::Relaxed),
            bound_ns: self.bound_ns,
            label: self.label.to_c(),
        }
    }

    /// An event about this version.
    pub fn event(&self, kind: u32) -> QueuedEvent {
        QueuedEvent {
            event: dsu_event {
                size: core::mem::size_of::<dsu_event>() as u32,
                kind,
                version_id: self.id,
                // Set by `read()`, in the reader's pid namespace.
                pid: 0,
                lost: 0,
                time_ns: realtime_ns(),
                label: self.label.to_c(),
            },
            pid: Some(self.pid.clone()),
        }
    }
}

/// An event in a queue: the record, and the process its `pid` is translated from.
#[derive(Default, Clone)]
pub struct QueuedEvent {
    /// The record (`pid` not filled in).
    pub event: dsu_event,
    /// The version's binder.
    pub pid: Option<TaskPid>,
}

impl QueuedEvent {
    /// The record as the current task (the reader) sees it.
    pub fn record(&self) -> dsu_event {
        let mut event = self.event;
        event.pid = self.pid.as_ref().map_or(0, TaskPid::nr_in_current_ns);
        event
    }
}

/// A run of a page map: pages `start..start + count` of a range are the segment pages
/// `seg..seg + count`, which are the pages `file..file + count` of the segment's file.
/// Segments use runs too (with `start == seg`), to say where their pages are in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First page of the range.
    pub start: u64,
    /// Its segment page.
    pub seg: u64,
    /// Its page in the segment's file.
    pub file: u64,
    /// Pages, >= 1.
    pub count: u64,
}

/// Runs sorted by `start`, each starting where the previous one ends, from page 0.
pub struct PageMap {
    runs: KVVec<Run>,
    pages: u64,
}

impl PageMap {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            runs: KVVec::new(),
            pages: 0,
        }
    }

    /// Appends `count >= 1` pages: segment pages from `seg`, file pages from `file`, merging
    /// with the last run if both continue it. May allocate.
    pub fn push(&mut self, seg: u64, file: u64, count: u64, flags: kernel::alloc::Flags) -> Result {
        let start = self.pages;
        self.pages = start.checked_add(count).ok_or(EINVAL)?;
        if let Some(last) = self.runs.last_mut() {
            if last.file.checked_add(last.count) == Some(file)
                && last.seg.checked_add(last.count) == Some(seg)
            {
                last.count += count;
                return Ok(());
            }
        }
        if let Err(e) = self.runs.push(
            Run {
                start,
                seg,
                file,
                count,
            },
            flags,
        ) {
            self.pages = start;
            return Err(e.into());
        }
        Ok(())
    }

    /// Reserves room for `additional` more runs.
    pub fn reserve(&mut self, additional: usize) -> Result {
        self.runs.reserve(additional, GFP_ACCOUNT_MAYFAIL)?;
        Ok(())
    }

    /// Pages mapped.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The runs, in order.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Index of the run holding page `page` (binary search), or `None` past the end.
    fn run_of(&self, page: u64) -> Option<usize> {
        if page >= self.pages {
            return None;
        }
        // Runs start at 0 and cover `0..pages`, so some run starts at or before `page`.
        Some(self.runs.partition_point(|r| r.start <= page) - 1)
    }

    /// The segment page behind page `page`.
    pub fn segment_page(&self, page: u64) -> Option<u64> {
        let run = self.runs[self.run_of(page)?];
        Some(run.seg + (page - run.start))
    }

    /// The file page behind page `page`.
    pub fn file_page(&self, page: u64) -> Option<u64> {
        let run = self.runs[self.run_of(page)?];
        Some(run.file + (page - run.start))
    }

    /// Appends to `out` the file pages behind `first..first + count`, which must lie inside
    /// the map (`EINVAL` otherwise), as runs continuing `out`.
    pub fn translate(&self, first: u64, count: u64, out: &mut PageMap) -> Result {
        let end = first.checked_add(count).ok_or(EINVAL)?;
        if count == 0 || end > self.pages {
            return Err(EINVAL);
        }
        let mut i = self.run_of(first).ok_or(EINVAL)?;
        let mut at = first;
        while at < end {
            let run = self.runs[i];
            let skip = at - run.start;
            let n = (run.count - skip).min(end - at);
            out.push(run.seg + skip, run.file + skip, n, GFP_ACCOUNT_MAYFAIL)?;
            at += n;
            i += 1;
        }
        Ok(())
    }
}

/// A bounded ring of events.
struct Ring {
    events: KVec<QueuedEvent>,
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
            events: KVec::from_elem(QueuedEvent::default(), EVENT_QUEUE_LEN, GFP_ACCOUNT_MAYFAIL)?,
            head: 0,
            len: 0,
            lost: 0,
        };
        Arc::pin_init(
            pin_init!(Self {
                ring <- new_spinlock!(ring, "dsu_events"),
                wait <- WaitQueue::new(c_str!("dsu_events_wait"), static_wait_class!()),
            }),
            GFP_ACCOUNT_MAYFAIL,
        )
    }

    /// Queues `event`, dropping the oldest if full, and wakes readers.
    pub fn push(&self, event: QueuedEvent) {
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
    pub fn pop(&self, out: &mut [QueuedEvent]) -> usize {
        let mut r = self.ring.lock();
        let n = r.len.min(out.len());
        for slot in out.iter_mut().take(n) {
            let head = r.head;
            *slot = core::mem::take(&mut r.events[head]);
            slot.event.lost = r.lost;
            r.lost = 0;
            r.head = (r.head + 1) % EVENT_QUEUE_LEN;
            r.len -= 1;
        }
        n
    }

    /// Puts back `events`, popped from the head but not delivered (a read whose copy-out
    /// failed), ahead of anything queued since. If the queue filled up meanwhile, the oldest
    /// of them are dropped and counted in `lost`, as `push` would have. Wakes readers.
    pub fn unpop(&self, events: &mut [QueuedEvent]) {
        let Some(first_lost) = events.first().map(|e| e.event.lost) else {
            return;
        };
        {
            let mut r = self.ring.lock();
            let keep = events.len().min(EVENT_QUEUE_LEN - r.len);
            let dropped = events.len() - keep;
            for e in events[dropped..].iter_mut().rev() {
                r.head = (r.head + EVENT_QUEUE_LEN - 1) % EVENT_QUEUE_LEN;
                let head = r.head;
                r.events[head] = core::mem::take(e);
                r.len += 1;
            }
            // `pop` gave the first event the count of those lost before it.
            r.lost = r
                .lost
                .saturating_add(first_lost)
                .saturating_add(dropped as u32);
        }
        self.wait.wake_up();
    }

    /// Whether an event is queued.
    pub fn ready(&self) -> bool {
        self.ring.lock().len > 0
    }

    /// Drops every queued event (BIND clears the binder's own queue).
    pub fn clear(&self) {
        let mut r = self.ring.lock();
        for e in r.events.iter_mut() {
            *e = QueuedEvent::default();
        }
        r.head = 0;
        r.len = 0;
        r.lost = 0;
    }

    /// The wait queue that readers and pollers sleep on.
    pub fn wait_queue(&self) -> &WaitQueue {
        &self.wait
    }
}
