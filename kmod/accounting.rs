// SPDX-License-Identifier: GPL-2.0-only

//! Per-user accounting of what segments pin: segments, and segment pages.
//!
//! Segment pages are unevictable, like `SHM_LOCK`ed or mlocked memory, so they are charged
//! the same way: to the *real uid* of the task whose call caused them (ATTACH that creates
//! a segment: one segment; RESOLVE that adds variables: their pages), and checked against
//! the sum charged to that uid. A charge is held by the segment and released when the
//! segment is freed (after DESTROY, its last handle and its last mapping), not at DESTROY:
//! until then the pages are still pinned.
//!
//! Page charges are checked against two bounds: `max_user_pages` (`ENOSPC`; a task with
//! `CAP_SYS_RESOURCE` is exempt) and the caller's `RLIMIT_MEMLOCK` (`ENOMEM`, as for
//! mlock; `CAP_IPC_LOCK` is exempt). Segment charges against `max_user_segments`
//! (`ENOSPC`; `CAP_SYS_RESOURCE` exempt). Either bound is checked against the uid's total,
//! whichever task charged it.
//!
//! Lock order: registry mutex → accounting mutex (segment creation charges under the
//! registry lock), segment mutex → accounting mutex (RESOLVE's commit releases the part of
//! its charge it did not use). RESOLVE charges with no segment lock held; no other lock is
//! taken with the accounting mutex held.

use crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL;
use crate::{
    kernel_ext::cred::{capable_ipc_lock, capable_sys_resource, current_uid, memlock_limit_pages},
    limits,
};
use kernel::{
    error::code::*,
    new_mutex,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::{Arc, Mutex},
};

/// What one uid holds.
#[derive(Default)]
struct Usage {
    segments: usize,
    pages: usize,
}

/// Usage of every uid that holds something (entries are removed when they drop to zero).
#[pin_data]
pub struct Accounting {
    #[pin]
    users: Mutex<RBTree<u32, Usage>>,
}

/// Pages charged to a uid, released when dropped unless [`PageCharge::keep`] hands them to
/// the segment.
pub struct PageCharge {
    accounting: Arc<Accounting>,
    /// The uid charged.
    pub uid: u32,
    /// Pages charged.
    pub pages: usize,
}

impl PageCharge {
    /// Keeps `pages` of the charge (the caller records them) and releases the rest now.
    pub fn keep(mut self, pages: usize) {
        let rest = self.pages.saturating_sub(pages);
        self.pages = rest;
        // Drop releases `rest`.
    }
}

impl Drop for PageCharge {
    fn drop(&mut self) {
        if self.pages > 0 {
            self.accounting.uncharge_pages(self.uid, self.pages);
        }
    }
}

impl Accounting {
    /// Nothing charged.
    pub fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                users <- new_mutex!(RBTree::new(), "dsu_accounting"),
            }),
            GFP_KERNEL,
        )
    }

    /// Applies `f` to `uid`'s usage (created as zero if missing, removed if left at zero).
    fn charge(&self, uid: u32, f: impl FnOnce(&mut Usage) -> Result) -> Result {
        let node = RBTreeNodeReservation::new(GFP_ACCOUNT_MAYFAIL)?;
        let mut users = self.users.lock();
        if users.get(&uid).is_none() {
            users.insert(node.into_node(uid, Usage::default()));
        }
        let usage = users.get_mut(&uid).ok_or(EINVAL)?;
        let result = f(usage);
        let unused = usage.segments == 0 && usage.pages == 0;
        if unused {
            users.remove(&uid);
        }
        result
    }

    /// Takes back from `uid`'s usage (no allocation: a release cannot fail).
    fn release(&self, uid: u32, f: impl FnOnce(&mut Usage)) {
        let mut users = self.users.lock();
        let Some(usage) = users.get_mut(&uid) else {
            return;
        };
        f(usage);
        if usage.segments == 0 && usage.pages == 0 {
            users.remove(&uid);
        }
    }

    /// Charges one segment to the caller's real uid. `ENOSPC` at `max_user_segments`
    /// (unless the caller has `CAP_SYS_RESOURCE`). Returns the uid charged.
    pub fn charge_segment(&self) -> Result<u32> {
        let uid = current_uid();
        let limit = limits::max_user_segments();
        self.charge(uid, |u| {
            if u.segments >= limit && !capable_sys_resource() {
                return Err(ENOSPC);
            }
            u.segments += 1;
            Ok(())
        })?;
        Ok(uid)
    }

    /// Releases a segment charged by [`Accounting::charge_segment`].
    pub fn uncharge_segment(&self, uid: u32) {
        self.release(uid, |u| u.segments = u.segments.saturating_sub(1));
    }

    /// Charges `pages` to the caller's real uid: `ENOSPC` past `max_user_pages` (unless
    /// `CAP_SYS_RESOURCE`), `ENOMEM` past the caller's `RLIMIT_MEMLOCK` (unless
    /// `CAP_IPC_LOCK`). Nothing is charged on failure.
    pub fn charge_pages(self: &Arc<Self>, pages: usize) -> Result<PageCharge> {
        let uid = current_uid();
        if pages > 0 {
            let limit = limits::max_user_pages();
            let memlock = memlock_limit_pages();
            self.charge(uid, |u| {
                let total = u.pages.checked_add(pages).ok_or(ENOSPC)?;
                if total > limit && !capable_sys_resource() {
                    return Err(ENOSPC);
                }
                if total > memlock && !capable_ipc_lock() {
                    return Err(ENOMEM);
                }
                u.pages = total;
                Ok(())
            })?;
        }
        Ok(PageCharge {
            accounting: self.clone(),
            uid,
            pages,
        })
    }

    /// Releases `pages` charged to `uid`.
    pub fn uncharge_pages(&self, uid: u32, pages: usize) {
        self.release(uid, |u| u.pages = u.pages.saturating_sub(pages));
    }
}

/// Page charges an object keeps until it is dropped (a segment's pages, a heap's), by uid:
/// a handful of users at most share one object.
pub struct HeldPages {
    accounting: Arc<Accounting>,
    pages: KVVec<(u32, usize)>,
}

impl HeldPages {
    /// Nothing held yet.
    pub fn new(accounting: &Arc<Accounting>) -> Self {
        Self {
            accounting: accounting.clone(),
            pages: KVVec::new(),
        }
    }

    /// Makes room to record pages charged to `uid`, so that [`HeldPages::record`] cannot
    /// fail.
    pub fn reserve(&mut self, uid: u32) -> Result {
        if !self.pages.iter().any(|(u, _)| *u == uid) {
            self.pages.reserve(1, GFP_ACCOUNT_MAYFAIL)?;
        }
        Ok(())
    }

    /// Keeps `pages` of `charge` until drop (the rest is released now). Call
    /// [`HeldPages::reserve`] for its uid first.
    pub fn record(&mut self, charge: PageCharge, pages: usize) -> Result {
        match self.pages.iter_mut().find(|(u, _)| *u == charge.uid) {
            Some((_, n)) => *n += pages,
            None => self.pages.push((charge.uid, pages), GFP_NOWAIT)?,
        }
        charge.keep(pages);
        Ok(())
    }

    /// Releases `pages` held for `uid` now (an entry removed before the segment is freed).
    pub fn release(&mut self, uid: u32, pages: usize) {
        if let Some((_, n)) = self.pages.iter_mut().find(|(u, _)| *u == uid) {
            let pages = pages.min(*n);
            *n -= pages;
            self.accounting.uncharge_pages(uid, pages);
        }
    }

    /// Pages held, over every uid.
    pub fn total(&self) -> usize {
        self.pages.iter().map(|(_, n)| *n).sum()
    }
}

impl Drop for HeldPages {
    fn drop(&mut self) {
        for (uid, pages) in self.pages.iter() {
            self.accounting.uncharge_pages(*uid, *pages);
        }
    }
}
