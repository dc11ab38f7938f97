// SPDX-License-Identifier: GPL-2.0-only

//! The registry: every segment of this module instance, by IPC namespace and name.
//!
//! Names are scoped like SysV and POSIX shared memory: a segment is found only from the IPC
//! namespace it was created in (ATTACH, LIST_*, READ_VAR and DESTROY look names up in the
//! caller's, LIST_SEGMENTS lists only the caller's). A segment holds a reference to its
//! namespace, so a namespace's address, the key here, is never reused while a segment of
//! it lives.
//!
//! Named segments can be attached by name. DESTROY removes the name; a destroyed segment
//! that still has handles stays listed (with `DSU_SEGMENT_DESTROYED`) until its last handle
//! is released, when it is dropped and its pages freed. Unloading drops the registry and so
//! every remaining segment (no handle can exist then).
//!
//! `max_segments` counts every segment that holds pages: named ones, destroyed ones with
//! handles, and those of restoring handles (`restore.rs`), which get their name only at
//! COMMIT. Each segment is also charged to its creator (`accounting.rs`).
//!
//! Lock order: handle state mutex → registry mutex → segment mutex, registry mutex →
//! accounting mutex. Lookups for LIST,
//! READ_VAR and DESTROY clone the segment's `Arc` and unlock before any user copy.

use crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL;
use crate::{
    accounting::Accounting,
    kernel_ext::{cred::current_fsuid, ns::current_ipc_ns_key},
    limits,
    lock_owner::LockOwners,
    segment::{AttrChange, Charges, Segment, MAY_READ},
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

/// A segment's key: its IPC namespace's address and its name.
type Key = (usize, SegName);

struct Inner {
    named: RBTree<Key, Arc<Segment>>,
    named_count: usize,
    /// Destroyed segments with handles left, by id.
    destroyed: RBTree<u64, Arc<Segment>>,
    destroyed_count: usize,
    /// Segments of restoring handles (`restore.rs`): unnamed until their COMMIT.
    restoring_count: usize,
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
    /// The owner an existing segment may have (a kernel uid), if the caller named one
    /// (`DSU_ATTACH_OWNER`); else it must be the caller's fsuid.
    pub owner: Option<u32>,
}

/// All segments. ATTACH, DESTROY, listing and releases may race; the mutex orders them.
#[pin_data]
pub struct Registry {
    #[pin]
    inner: Mutex<Inner>,
    /// What each user holds.
    accounting: Arc<Accounting>,
    /// Lock tokens (`lock_owner.rs`).
    #[pin]
    lock_owners: LockOwners,
}

impl Registry {
    /// An empty registry charging users in `accounting`.
    pub fn new(accounting: Arc<Accounting>) -> impl PinInit<Self> {
        pin_init!(Self {
            accounting,
            lock_owners <- LockOwners::new(),
            inner <- new_mutex!(
                Inner {
                    named: RBTree::new(),
                    named_count: 0,
                    destroyed: RBTree::new(),
                    destroyed_count: 0,
                    restoring_count: 0,
                    next_id: 1,
                },
                "dsu_registry"
            ),
        })
    }

    /// The lock token table.
    pub fn lock_owners(&self) -> &LockOwners {
        &self.lock_owners
    }

    /// Opens or creates segment `name` of the caller's IPC namespace and attaches a
    /// handle's event queue to it. Returns the segment and whether it was created.
    ///
    /// An existing segment must be owned by the expected owner (`how.owner`, else the
    /// caller's fsuid): `EPERM` otherwise, for every caller, `CAP_SYS_ADMIN` included (a
    /// name another user created first is a trap for root too). A missing one is created
    /// only if the expected owner is the caller (`ENOENT` otherwise).
    pub fn attach(
        &self,
        name: &SegName,
        how: &AttachMode,
        handle_id: u64,
        queue: Arc<EventQueue>,
    ) -> Result<(Arc<Segment>, bool)> {
        let node = RBTreeNodeReservation::new(GFP_ACCOUNT_MAYFAIL)?;
        let key = (current_ipc_ns_key(), *name);
        let caller = current_fsuid();
        let owner = how.owner.unwrap_or(caller);
        let mut g = self.inner.lock();
        if let Some(seg) = g.named.get(&key) {
            if how.must_create {
                return Err(EEXIST);
            }
            if seg.attrs().uid != owner {
                return Err(EPERM);
            }
            seg.check_access(MAY_READ)?;
            let seg = seg.clone();
            // Attach with the registry locked, so that DESTROY sees this handle.
            seg.attach_handle(handle_id, queue)?;
            return Ok((seg, false));
        }
        if how.must_exist || owner != caller {
            return Err(ENOENT);
        }
        if g.named_count + g.destroyed_count + g.restoring_count >= limits::max_segments() {
            return Err(ENOSPC);
        }
        // Released when the segment is freed (or at once if creating it fails).
        let charges = Charges::new_segment(&self.accounting)?;
        let mode = if how.mode == 0 {
            DSU_DEFAULT_MODE
        } else {
            how.mode
        };
        let seg = Segment::new(g.next_id, *name, mode, charges)?;
        seg.attach_handle(handle_id, queue)?;
        g.next_id += 1;
        g.named.insert(node.into_node(key, seg.clone()));
        g.named_count += 1;
        Ok((seg, true))
    }

    /// RESTORE: a new segment `name` of the caller's IPC namespace, owned by the caller with
    /// `mode`, that nobody can find until [`Registry::publish_restored`] (or that goes with
    /// [`Registry::end_restore`]). `EEXIST` if the name is taken; counted and charged like
    /// one that ATTACH creates (`ENOSPC` at `max_segments` or `max_user_segments`).
    pub fn begin_restore(&self, name: &SegName, mode: u32) -> Result<Arc<Segment>> {
        let key = (current_ipc_ns_key(), *name);
        let mut g = self.inner.lock();
        if g.named.get(&key).is_some() {
            return Err(EEXIST);
        }
        if g.named_count + g.destroyed_count + g.restoring_count >= limits::max_segments() {
            return Err(ENOSPC);
        }
        let charges = Charges::new_segment(&self.accounting)?;
        let seg = Segment::new(g.next_id, *name, mode, charges)?;
        g.next_id += 1;
        g.restoring_count += 1;
        Ok(seg)
    }

    /// RESTORE_COMMIT: names `seg` (from [`Registry::begin_restore`]) in the IPC namespace
    /// it was restored in and attaches the committing handle, at once: a concurrent ATTACH
    /// finds either nothing or the whole segment. `EEXIST` if the name was taken meanwhile
    /// (nothing changes: the segment stays the handle's).
    pub fn publish_restored(
        &self,
        seg: &Arc<Segment>,
        handle_id: u64,
        queue: Arc<EventQueue>,
    ) -> Result {
        let node = RBTreeNodeReservation::new(GFP_ACCOUNT_MAYFAIL)?;
        let key = (seg.ns.key(), seg.name);
        let mut g = self.inner.lock();
        if g.named.get(&key).is_some() {
            return Err(EEXIST);
        }
        seg.attach_handle(handle_id, queue)?;
        g.named.insert(node.into_node(key, seg.clone()));
        g.named_count += 1;
        g.restoring_count -= 1;
        Ok(())
    }

    /// A restoring handle went before its COMMIT: its segment no longer counts (the caller
    /// drops it, freeing everything, with no lock held).
    pub fn end_restore(&self) {
        self.inner.lock().restoring_count -= 1;
    }

    /// The segment `name` of the caller's IPC namespace (`ENOENT` if none).
    pub fn get(&self, name: &SegName) -> Result<Arc<Segment>> {
        let key = (current_ipc_ns_key(), *name);
        self.inner.lock().named.get(&key).cloned().ok_or(ENOENT)
    }

    /// DESTROY: removes the name (owner or `CAP_SYS_ADMIN`, else `EPERM`). The segment
    /// lives on while handles remain.
    pub fn destroy(&self, name: &SegName) -> Result {
        let node = RBTreeNodeReservation::new(GFP_ACCOUNT_MAYFAIL)?;
        let key = (current_ipc_ns_key(), *name);
        let removed;
        {
            let mut g = self.inner.lock();
            let seg = g.named.get(&key).ok_or(ENOENT)?;
            if !seg.may_administer() {
                return Err(EPERM);
            }
            let seg = g.named.remove(&key).ok_or(ENOENT)?;
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

    /// SETATTR: changes the mode, owner or group of the named segment `name` (owner or
    /// `CAP_SYS_ADMIN`, else `EPERM`), with the registry locked so that concurrent SETATTRs
    /// and DESTROYs each see the others' owner.
    pub fn set_attrs(&self, name: &SegName, change: AttrChange) -> Result {
        let key = (current_ipc_ns_key(), *name);
        let g = self.inner.lock();
        g.named.get(&key).ok_or(ENOENT)?.set_attrs(change)
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

    /// Up to `count` records from `start` of the segments of the caller's IPC namespace
    /// (named ones by name, then destroyed ones), and their total.
    pub fn list(&self, start: usize, count: usize) -> Result<(KVVec<dsu_segment_info>, usize)> {
        let mut out = KVVec::with_capacity(count, GFP_ACCOUNT_MAYFAIL)?;
        let ns = current_ipc_ns_key();
        let g = self.inner.lock();
        let all = Iterator::chain(g.named.values(), g.destroyed.values());
        let mut total = 0;
        for seg in all.filter(|seg| seg.ns.key() == ns) {
            if total >= start && out.len() < count {
                out.push(seg.info(), GFP_ACCOUNT_MAYFAIL)?;
            }
            total += 1;
        }
        Ok((out, total))
    }
}
