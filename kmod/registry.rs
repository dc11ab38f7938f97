// SPDX-License-Identifier: GPL-2.0

//! The registry: every segment of this module instance, by name.
//!
//! Named segments can be attached by name. DESTROY removes the name; a destroyed segment
//! that still has handles stays listed (with `DSU_SEGMENT_DESTROYED`) until its last handle
//! is released, when it is dropped and its pages freed. Unloading drops the registry and so
//! every remaining segment (no handle can exist then).
//!
//! Lock order: handle state mutex → registry mutex → segment mutex. Lookups for LIST,
//! READ_VAR and DESTROY clone the segment's `Arc` and unlock before any user copy.

use crate::{
    limits,
    segment::{Segment, MAY_READ},
    uapi::{dsu_segment_info, SegName, DSU_DEFAULT_MODE},
    version::EventQueue,
};
use kernel::{
    error::code::*,
    new_mutex,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::{Arc, Mutex},
};

struct Inner {
    named: RBTree<SegName, Arc<Segment>>,
    named_count: usize,
    /// Destroyed segments with handles left, by id.
    destroyed: RBTree<u64, Arc<Segment>>,
    destroyed_count: usize,
    next_id: u64,
}

/// How ATTACH may find its segment.
pub struct AttachMode {
    /// Fail with `EEXIST` if it exists.
    pub must_create: bool,
    /// Fail with `ENOENT` if it does not.
    pub must_exist: bool,
    /// Mode of a new segment (0: the default).
    pub mode: u32,
}

/// All segments. ATTACH, DESTROY, listing and releases may race; the mutex orders them.
#[pin_data]
pub struct Registry {
    #[pin]
    inner: Mutex<Inner>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            inner <- new_mutex!(
                Inner {
                    named: RBTree::new(),
                    named_count: 0,
                    destroyed: RBTree::new(),
                    destroyed_count: 0,
                    next_id: 1,
                },
                "dsu_registry"
            ),
        })
    }

    /// Opens or creates segment `name` and attaches a handle's event queue to it. Returns
    /// the segment and whether it was created.
    pub fn attach(
        &self,
        name: &SegName,
        how: &AttachMode,
        handle_id: u64,
        queue: Arc<EventQueue>,
    ) -> Result<(Arc<Segment>, bool)> {
        let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let mut g = self.inner.lock();
        if let Some(seg) = g.named.get(name) {
            if how.must_create {
                return Err(EEXIST);
            }
            seg.check_access(MAY_READ)?;
            let seg = seg.clone();
            // Attach with the registry locked, so that DESTROY sees this handle.
            seg.attach_handle(handle_id, queue)?;
            return Ok((seg, false));
        }
        if how.must_exist {
            return Err(ENOENT);
        }
        if g.named_count >= limits::max_segments() {
            return Err(ENOSPC);
        }
        let mode = if how.mode == 0 {
            DSU_DEFAULT_MODE
        } else {
            how.mode
        };
        let seg = Segment::new(g.next_id, *name, mode)?;
        seg.attach_handle(handle_id, queue)?;
        g.next_id += 1;
        g.named.insert(node.into_node(*name, seg.clone()));
        g.named_count += 1;
        Ok((seg, true))
    }

    /// The named segment `name` (`ENOENT` if none).
    pub fn get(&self, name: &SegName) -> Result<Arc<Segment>> {
        self.inner.lock().named.get(name).cloned().ok_or(ENOENT)
    }

    /// DESTROY: removes the name (owner or `CAP_SYS_ADMIN`, else `EPERM`). The segment
    /// lives on while handles remain.
    pub fn destroy(&self, name: &SegName) -> Result {
        let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let removed;
        {
            let mut g = self.inner.lock();
            let seg = g.named.get(name).ok_or(ENOENT)?;
            if !seg.may_destroy() {
                return Err(EPERM);
            }
            let seg = g.named.remove(name).ok_or(ENOENT)?;
            g.named_count -= 1;
            if seg.mark_destroyed() > 0 {
                g.destroyed.insert(node.into_node(seg.id, seg));
                g.destroyed_count += 1;
                removed = None;
            } else {
                removed = Some(seg);
            }
        }
        // Frees the pages outside the registry lock when nobody is attached.
        drop(removed);
        Ok(())
    }

    /// Forgets a destroyed segment whose last handle was released.
    pub fn forget_destroyed(&self, id: u64) {
        let removed = {
            let mut g = self.inner.lock();
            let removed = g.destroyed.remove(&id);
            if removed.is_some() {
                g.destroyed_count -= 1;
            }
            removed
        };
        drop(removed);
    }

    /// Up to `count` segment records from `start` (named ones by name, then destroyed
    /// ones), and the total.
    pub fn list(&self, start: usize, count: usize) -> Result<(KVVec<dsu_segment_info>, usize)> {
        let mut out = KVVec::with_capacity(count, GFP_KERNEL)?;
        let g = self.inner.lock();
        let total = g.named_count + g.destroyed_count;
        let all = Iterator::chain(g.named.values(), g.destroyed.values());
        for seg in all.skip(start).take(count) {
            out.push(seg.info(), GFP_KERNEL)?;
        }
        Ok((out, total))
    }
}
