// SPDX-License-Identifier: GPL-2.0-only

//! Segments: named sets of physical pages with a directory of the variables in them.
//!
//! A [`Segment`] owns its pages, which live in an internal shmem file (see
//! `kernel_ext/shmem.rs`: page-cache pages, so that shared futexes on them work; zeroed,
//! unevictable, charged to the memcg of whoever caused their allocation) and frees them
//! when it is dropped: after DESTROY, and once the last handle
//! attached to it, and so the last version and mapping, is gone. Pages are appended and
//! never moved; segment page indexes are never reused. An entry's pages are freed before
//! that only when the entry is removed (an aborted candidate's additions, DSU_IOC_GC), and
//! only while no live version maps it and no handle pins it (resolved, not yet bound), so a
//! page a version maps stays for as long as the version (the fault path looks it up in the
//! file's page cache without the lock: versions map runs of file pages, which BIND
//! translates from segment pages through `Inner::file_map`). READ_VAR takes its own page
//! references.
//!
//! Lifecycle (DESIGN.md, *Commit and abort*): a version bound with `DSU_BIND_CANDIDATE` is
//! a candidate until READY; READY increments `Inner::generation` and stamps the entries the
//! version maps. A candidate released before READY is ABORTED: the entries its handle
//! created become orphans, removed as soon as nothing maps or pins them.
//!
//! Pages count against `max_segment_pages` from the moment a RESOLVE decides to allocate
//! them: the first lock section reserves them (`Inner::reserved_pages`), so concurrent
//! RESOLVEs cannot each allocate up to the limit; the reservation becomes pages at commit
//! or is released on failure. They are charged to the resolving user (`accounting.rs`)
//! before they are allocated, and the segment keeps those charges until it is freed.
//!
//! Lock order: registry mutex → segment mutex → event spinlock. The attributes spinlock
//! (owner, group, mode) is a leaf: taken alone or innermost, only to copy them in or out.
//! Nothing here touches user memory with the mutex held: RESOLVE copies initial values in
//! between two lock sections.

use crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL;
use crate::{
    accounting::{Accounting, HeldPages},
    directory::{Directory, Entry, Lookup, TypeDesc},
    heap::Heap,
    kernel_ext::{
        cred::{
            capable_sys_admin, current_fsgid, current_fsuid, gid_in_current_ns, in_group,
            uid_in_current_ns,
        },
        error::eidrm,
        mm::PageRef,
        ns::{IpcNs, TaskPid},
        shmem::ShmemFile,
        time::realtime_ns,
    },
    limits,
    restore::RestoredVar,
    uapi::{
        self, dsu_extent, dsu_segment_info, dsu_var, dsu_variable_info, Label, SegName, VarName,
        DSU_EVENT_VERSION_ABORTED, DSU_EVENT_VERSION_BOUND, DSU_EVENT_VERSION_ENDED,
        DSU_EVENT_VERSION_READY, DSU_SEGMENT_DESTROYED, DSU_VAR_ADDED, DSU_VAR_COMMON,
        DSU_VAR_MIGRATE, DSU_VAR_PENDING,
    },
    version::{EventQueue, PageMap, QueuedEvent, Version},
};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{
    c_str,
    error::code::*,
    new_mutex, new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::{Arc, Mutex, SpinLock},
};

/// Permission bits, as in a file mode's triplets.
pub const MAY_READ: u32 = 4;
/// Write permission.
pub const MAY_WRITE: u32 = 2;

/// Who creates directory entries in a RESOLVE.
pub struct Creator {
    /// The resolving handle.
    pub handle: u64,
    /// Version id if bound, else 0 (BIND fills it in: [`Directory::adopt`]).
    pub version: u64,
    /// Version label if bound, else empty.
    pub label: Label,
}

/// What a segment has charged to users (`accounting.rs`): released when it is freed.
pub struct Charges {
    accounting: Arc<Accounting>,
    /// The uid charged for the segment itself.
    segment_uid: u32,
    /// Pages charged, by uid.
    pages: HeldPages,
}

impl Charges {
    /// Charges one segment to the caller (`ENOSPC` at its `max_user_segments`).
    pub fn new_segment(accounting: &Arc<Accounting>) -> Result<Self> {
        Ok(Self {
            segment_uid: accounting.charge_segment()?,
            accounting: accounting.clone(),
            pages: HeldPages::new(accounting),
        })
    }
}

impl Drop for Charges {
    fn drop(&mut self) {
        self.accounting.uncharge_segment(self.segment_uid);
    }
}

/// State behind the segment mutex.
struct Inner {
    destroyed: bool,
    /// Pages that RESOLVEs in progress will add (counted against `max_segment_pages`).
    reserved_pages: usize,
    /// Charges to users, released when the segment is freed.
    charges: Charges,
    /// Segment page `i` is `pages[i]` (held references to pages of `Segment::file`); `None`
    /// once its entry was removed (indexes are not reused).
    pages: KVVec<Option<PageRef>>,
    /// Pages held (`pages` less the removed ones): what `max_segment_pages` counts.
    live_pages: usize,
    /// Where segment pages are in the file: runs by segment page index, covering `pages`.
    /// BIND translates a version's extents through it.
    file_map: PageMap,
    dir: Directory,
    /// Live versions by id; removed when their handle is released.
    versions: RBTree<u64, Arc<Version>>,
    version_count: usize,
    /// Attached handles, by handle id.
    handles: RBTree<u64, Attached>,
    handle_count: usize,
    next_version: u64,
    /// The shared heap, once a DSU_IOC_HEAP created it (`heap.rs`).
    heap: Option<Arc<Heap>>,
    /// READYs so far; entries record the generation of their last use.
    generation: u64,
}

/// An attached handle, as its segment knows it.
struct Attached {
    /// Where events about other versions go.
    queue: Arc<EventQueue>,
    /// Entries (by `seq`, sorted) it resolved and holds (`Entry::pins`) until it binds or
    /// is released, so that GC or an abort cannot free them between RESOLVE and BIND.
    pins: KVVec<u64>,
}

/// Owner, group and permission bits of a segment: set at creation, changed by SETATTR.
#[derive(Clone, Copy)]
pub struct Attrs {
    /// Owner uid (kernel uid).
    pub uid: u32,
    /// Owner gid (kernel gid).
    pub gid: u32,
    /// Permission bits (<= 0777).
    pub mode: u32,
}

/// What a SETATTR changes: the fields that are `Some` (ids are kernel ids).
#[derive(Clone, Copy)]
pub struct AttrChange {
    /// New permission bits (<= 0777).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
}

/// A segment. The name never changes; owner, group and mode are behind their own spinlock
/// (read whole, so a check never mixes an old owner with a new mode); everything else is in
/// the mutex.
///
/// RESOLVE, BIND, attach/detach, DESTROY and listing may race on any thread; each takes the
/// mutex, so each sees the others either wholly done or not started.
#[pin_data]
pub struct Segment {
    /// Registry-wide unique id.
    pub id: u64,
    /// Its name, unique in its IPC namespace.
    pub name: SegName,
    /// The IPC namespace it was created in (a reference: the address stays its identity).
    pub ns: IpcNs,
    /// Owner, group and mode (SETATTR changes them, with the registry mutex held).
    #[pin]
    attrs: SpinLock<Attrs>,
    /// `CLOCK_REALTIME` of its creation.
    pub created_ns: u64,
    #[pin]
    inner: Mutex<Inner>,
    /// Backing store of the pages (dropped after `inner`, which holds references into it).
    file: ShmemFile,
    /// Where pages are charged (the registry's).
    accounting: Arc<Accounting>,
    /// Next unused page index of `file`. Indexes are never reused: pages allocated for
    /// entries that were then not added are truncated from the file.
    next_file_page: AtomicU64,
    /// Its snapshot, if one is pending or taken (`snapshot.rs`).
    #[pin]
    pub snap: crate::snapshot::SnapSlot,
}

/// Pages allocated for one new entry, at file indexes `first..first + reserved`. Unless
/// taken by a commit, they are freed from the file when dropped (after the segment mutex is
/// released: they are dropped after the guard).
struct NewPages<'a> {
    file: &'a ShmemFile,
    first: u64,
    reserved: u64,
    pages: KVVec<PageRef>,
}

impl Drop for NewPages<'_> {
    fn drop(&mut self) {
        if self.reserved > 0 {
            // Drop our references first, then free the pages from the file.
            self.pages = KVVec::new();
            self.file.truncate(self.first, self.reserved);
        }
    }
}

/// Pages reserved by a RESOLVE in progress; released (under the segment mutex) if dropped,
/// i.e. unless the commit took them.
struct Reserved<'a> {
    seg: &'a Segment,
    pages: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.seg.inner.lock().reserved_pages -= self.pages;
    }
}

/// Where READ_VAR copies from: references to the pages (a GC may remove the variable
/// meanwhile; the bytes copied are then its last ones).
pub struct VarSnapshot {
    /// Pages covering the requested bytes.
    pub pages: KVVec<PageRef>,
    /// Offset of the first byte in `pages[0]`.
    pub skip: usize,
    /// Bytes to copy.
    pub len: usize,
    /// The variable's size.
    pub var_size: u64,
    /// The variable's fingerprint.
    pub var_fingerprint: u64,
}

/// Page indexes of a segment's file: far more than any segment uses, since indexes of pages
/// that were allocated but not added (lost races, failed copies) are not reused.
const FILE_PAGES: u64 = 1 << 50;

impl Segment {
    /// Creates a segment owned by the caller's fsuid and fsgid, in the caller's IPC
    /// namespace, holding `charges` (the segment's own) until it is freed.
    pub fn new(id: u64, name: SegName, mode: u32, charges: Charges) -> Result<Arc<Self>> {
        let ns = IpcNs::current()?;
        let accounting = charges.accounting.clone();
        let inner = Inner {
            destroyed: false,
            reserved_pages: 0,
            charges,
            pages: KVVec::new(),
            live_pages: 0,
            file_map: PageMap::new(),
            dir: Directory::new(),
            versions: RBTree::new(),
            version_count: 0,
            handles: RBTree::new(),
            handle_count: 0,
            next_version: 1,
            heap: None,
            generation: 0,
        };
        let file = ShmemFile::new(c_str!("dsu-segment"), FILE_PAGES)?;
        Arc::pin_init(
            pin_init!(Self {
                id,
                name,
                ns,
                attrs <- new_spinlock!(
                    Attrs {
                        uid: current_fsuid(),
                        gid: current_fsgid(),
                        mode,
                    },
                    "dsu_segment_attrs"
                ),
                created_ns: realtime_ns(),
                inner <- new_mutex!(inner, "dsu_segment"),
                file,
                accounting,
                next_file_page: AtomicU64::new(0),
                snap <- crate::snapshot::SnapSlot::new(),
            }),
            GFP_ACCOUNT_MAYFAIL,
        )
    }

    /// Checks the caller's access like a file's: owner bits for the owner, else group bits
    /// for a member of the group, else other bits; `CAP_SYS_ADMIN` overrides. `EACCES`.
    pub fn check_access(&self, want: u32) -> Result {
        let a = self.attrs();
        let bits = if current_fsuid() == a.uid {
            a.mode >> 6
        } else if in_group(a.gid) {
            a.mode >> 3
        } else {
            a.mode
        } & 7;
        if bits & want == want || capable_sys_admin() {
            Ok(())
        } else {
            Err(EACCES)
        }
    }

    /// A copy of the owner, group and mode, consistent with each other.
    pub fn attrs(&self) -> Attrs {
        *self.attrs.lock()
    }

    /// Whether the caller may DESTROY the segment or change its attributes: its owner, or
    /// `CAP_SYS_ADMIN`.
    pub fn may_administer(&self) -> bool {
        current_fsuid() == self.attrs().uid || capable_sys_admin()
    }

    /// SETATTR (the registry mutex held, which orders it against other SETATTRs and
    /// DESTROY): applies `change` if the caller may administer the segment, else `EPERM`.
    ///
    /// Like chown(2), giving the segment to another uid needs `CAP_SYS_ADMIN`, and the
    /// owner may only change the group to one it is in: otherwise a user could fill a
    /// segment and hand it to someone whose programs then join it as their own (ATTACH's
    /// owner expectation would pass).
    pub fn set_attrs(&self, change: AttrChange) -> Result {
        let cur = self.attrs();
        let as_owner = current_fsuid() == cur.uid
            && change.uid.is_none_or(|u| u == cur.uid)
            && change.gid.is_none_or(|g| g == cur.gid || in_group(g));
        if !as_owner && !capable_sys_admin() {
            return Err(EPERM);
        }
        let mut a = self.attrs.lock();
        if let Some(mode) = change.mode {
            a.mode = mode;
        }
        if let Some(uid) = change.uid {
            a.uid = uid;
        }
        if let Some(gid) = change.gid {
            a.gid = gid;
        }
        Ok(())
    }

    /// Connects a handle: its queue will get events about other versions. `ENOSPC` at
    /// `max_handles`.
    pub fn attach_handle(&self, handle_id: u64, queue: Arc<EventQueue>) -> Result {
        let node = RBTreeNodeReservation::new(GFP_ACCOUNT_MAYFAIL)?;
        let mut g = self.inner.lock();
        if g.handle_count >= limits::max_handles() {
            return Err(ENOSPC);
        }
        let slot = Attached {
            queue,
            pins: KVVec::new(),
        };
        g.handles.insert(node.into_node(handle_id, slot));
        g.handle_count += 1;
        Ok(())
    }

    /// Disconnects a released handle and ends its version, if any, telling the other
    /// handles (ABORTED then ENDED for a candidate, ENDED for a ready version). Releases
    /// the handle's pins and its version's mappings; an aborted candidate's additions
    /// become orphans, and orphans nothing keeps any more are removed. Returns whether
    /// this was the last handle of a destroyed segment.
    pub fn detach_handle(&self, handle_id: u64, version: Option<&Version>) -> bool {
        let (slot, ended, last);
        {
            let mut g = self.inner.lock();
            let g = &mut *g;
            slot = g.handles.remove(&handle_id);
            if let Some(slot) = &slot {
                unpin(&mut g.dir, &slot.pins);
            }
            g.handle_count = g.handle_count.saturating_sub(1);
            ended = version.and_then(|v| g.versions.remove(&v.id));
            if let Some(v) = &ended {
                g.version_count = g.version_count.saturating_sub(1);
                for_entries_of(&mut g.dir, v, |e| e.mappers = e.mappers.saturating_sub(1));
                let mut events = [v.event(DSU_EVENT_VERSION_ENDED), QueuedEvent::default()];
                if !v.is_ready() {
                    events = [v.event(DSU_EVENT_VERSION_ABORTED), events[0].clone()];
                    // Its handle created them: committed state stays, the rest is orphaned.
                    for i in 0..g.dir.len() {
                        if let Some(e) = g.dir.get_mut(i) {
                            if e.creator_handle == handle_id && !e.committed {
                                e.orphan = true;
                            }
                        }
                    }
                }
                for (_, h) in g.handles.iter() {
                    for ev in events.iter().filter(|e| e.event.kind != 0) {
                        h.queue.push(ev.clone());
                    }
                }
            }
            self.sweep(g, |e| e.orphan && !e.committed, |_| ());
            last = g.destroyed && g.handle_count == 0;
        }
        // Dropped here, outside the mutex.
        drop((slot, ended));
        last
    }

    /// Removes the entries that `remove` selects among those no live version maps and no
    /// handle pins, freeing their pages from the file and releasing their charges; calls
    /// `removed` with each first. Returns how many entries and pages went. Allocates
    /// nothing (it runs at release too).
    fn sweep(
        &self,
        g: &mut Inner,
        mut remove: impl FnMut(&Entry) -> bool,
        mut removed: impl FnMut(&Entry),
    ) -> (usize, u64) {
        let Inner {
            dir,
            pages,
            live_pages,
            file_map,
            charges,
            ..
        } = g;
        let mut freed = 0u64;
        let count = dir.remove_where(
            |e| e.mappers == 0 && e.pins == 0 && remove(e),
            |e| {
                removed(e);
                let (first, n) = (e.first_page as usize, e.page_count as usize);
                if let Some(slots) = pages.get_mut(first..first + n) {
                    // Our references go first; truncating then frees the pages.
                    for slot in slots.iter_mut() {
                        *slot = None;
                    }
                }
                // An entry's file pages are consecutive (one allocation).
                if let Some(file_first) = file_map.file_page(e.first_page) {
                    self.file.truncate(file_first, e.page_count);
                }
                charges.pages.release(e.charged_uid, n);
                *live_pages -= n;
                freed += e.page_count;
            },
        );
        (count, freed)
    }

    /// Marks the segment destroyed (DESTROY, with the registry locked). Returns the number
    /// of handles still attached.
    pub fn mark_destroyed(&self) -> usize {
        let mut g = self.inner.lock();
        g.destroyed = true;
        g.handle_count
    }

    /// The introspection record, ids as the caller's user namespace sees them.
    pub fn info(&self) -> dsu_segment_info {
        let a = self.attrs();
        let g = self.inner.lock();
        dsu_segment_info {
            uid: uid_in_current_ns(a.uid),
            gid: gid_in_current_ns(a.gid),
            mode: a.mode,
            flags: if g.destroyed {
                DSU_SEGMENT_DESTROYED
            } else {
                0
            },
            pages: g.live_pages as u64,
            variables: g.dir.len() as u64,
            versions: g.version_count as u64,
            handles: g.handle_count as u64,
            created_ns: self.created_ns,
            heap_base: g.heap.as_ref().map_or(0, |h| h.base),
            heap_reserve: g.heap.as_ref().map_or(0, |h| h.reserve),
            heap_size: g.heap.as_ref().map_or(0, |h| h.size()),
            name: self.name.to_c(),
        }
    }

    /// RESOLVE (see DESIGN.md): finds or creates every entry of `vars` (validated, with
    /// unique `names`); an entry it creates takes its type description from `descs`. On
    /// success every status is `COMMON` or `ADDED` with its pages, and the number added is
    /// returned. On `EEXIST` (a conflict) statuses say what was found and nothing changed.
    /// On any other error nothing changed either.
    pub fn resolve(
        &self,
        vars: &mut [dsu_var],
        names: &[VarName],
        descs: &mut [TypeDesc],
        creator: &Creator,
    ) -> Result<u32> {
        // 1. Classify under the lock (limits are checked here too, before allocating) and
        //    reserve the pages to add, so that concurrent RESOLVEs cannot overshoot.
        let reserved = {
            let mut g = self.inner.lock();
            let (adds, pages) = classify(&mut g, vars, names, 0)?;
            // Pin what was found now: no GC or abort may remove it before step 3 (which
            // would then find it missing, with no pages allocated for it).
            reserve_pins(&mut g, creator.handle, vars.len())?;
            pin(&mut g, creator.handle, vars);
            if adds == 0 {
                return Ok(0);
            }
            g.reserved_pages += pages;
            Reserved { seg: self, pages }
        };
        // Charged to the caller before anything is allocated (per-user limit, memlock).
        let charge = self.accounting.charge_pages(reserved.pages)?;

        // 2. Allocate and fill the new entries' pages with no lock held.
        let mut groups: KVVec<NewPages<'_>> =
            KVVec::with_capacity(vars.len(), GFP_ACCOUNT_MAYFAIL)?;
        for v in vars.iter() {
            let group = if v.status == DSU_VAR_PENDING {
                self.new_pages(v)?
            } else {
                NewPages {
                    file: &self.file,
                    first: 0,
                    reserved: 0,
                    pages: KVVec::new(),
                }
            };
            groups.push(group, GFP_ACCOUNT_MAYFAIL)?;
        }

        // 3. Re-classify (another version may have resolved the same names meanwhile) and
        //    commit. Pages of entries that became common are freed after unlocking.
        // Declared after `reserved` and `charge`: unlocked before they are dropped on failure.
        let mut g = self.inner.lock();
        let (adds, add_pages) = classify(&mut g, vars, names, reserved.pages)?;
        // Entries found in step 1 are pinned, so only those missing then can be missing now.
        if vars
            .iter()
            .zip(groups.iter())
            .any(|(v, group)| v.status == DSU_VAR_PENDING && group.reserved == 0)
        {
            return Err(EAGAIN);
        }
        reserve_pins(&mut g, creator.handle, vars.len())?;
        if adds == 0 {
            pin(&mut g, creator.handle, vars);
            return Ok(0);
        }
        g.pages.reserve(add_pages, GFP_ACCOUNT_MAYFAIL)?;
        g.file_map.reserve(adds)?;
        g.charges.pages.reserve(charge.uid)?;
        let mut reservation = g.dir.reserve(adds)?;
        let now = realtime_ns();
        let generation = g.generation;
        // The caller looked at its handle's state before copying initial values in; a BIND
        // of that handle may have come since (and adopted only the entries it saw).
        let (created_by, created_label) = if creator.version != 0 {
            (creator.version, creator.label)
        } else {
            g.versions
                .values()
                .find(|v| v.handle == creator.handle)
                .map_or((0, Label::EMPTY), |v| (v.id, v.label))
        };
        for (i, v) in vars.iter_mut().enumerate() {
            if v.status != DSU_VAR_PENDING {
                continue;
            }
            // Taken: the commit owns the pages now, the group must not free them.
            groups[i].reserved = 0;
            let file_first = groups[i].first;
            let group = core::mem::replace(&mut groups[i].pages, KVVec::new());
            let first_page = g.pages.len() as u64;
            let page_count = group.len() as u64;
            for page in group {
                // Capacity was reserved above: no allocation, no failure.
                g.pages.push(Some(page), GFP_NOWAIT)?;
            }
            g.live_pages += page_count as usize;
            if page_count > 0 {
                // One run per entry was reserved above.
                g.file_map
                    .push(first_page, file_first, page_count, GFP_NOWAIT)?;
            }
            g.dir.insert(
                Entry {
                    name: names[i],
                    size: v.size,
                    align: v.align,
                    fingerprint: v.fingerprint,
                    first_page,
                    page_count,
                    created_ns: now,
                    created_by,
                    created_label,
                    creator_handle: creator.handle,
                    type_desc: core::mem::replace(&mut descs[i], TypeDesc::none()),
                    seq: 0,
                    charged_uid: charge.uid,
                    mappers: 0,
                    pins: 0,
                    last_gen: generation,
                    committed: false,
                    orphan: false,
                },
                &mut reservation,
            )?;
            v.status = DSU_VAR_ADDED;
            v.first_page = first_page;
            v.page_count = page_count;
        }
        // The reservation became pages (re-classifying can only need fewer); the charge
        // stays with the segment for the pages added.
        g.reserved_pages -= reserved.pages;
        // Released above: its drop must not release it again (nor lock the held mutex).
        core::mem::forget(reserved);
        pin(&mut g, creator.handle, vars);
        g.charges.pages.record(charge, add_pages)?;
        Ok(adds as u32)
    }

    /// Allocates the zeroed pages of a new variable in the segment's file and copies its
    /// initial bytes in (no lock held: this faults on user memory).
    fn new_pages(&self, v: &dsu_var) -> Result<NewPages<'_>> {
        let count = pages_for(v.size).ok_or(ENOSPC)?;
        let size = usize::try_from(v.size).map_err(|_| ENOSPC)?;
        let mut group = NewPages {
            file: &self.file,
            first: self
                .next_file_page
                .fetch_add(count as u64, Ordering::Relaxed),
            reserved: count as u64,
            pages: KVVec::with_capacity(count, GFP_ACCOUNT_MAYFAIL)?,
        };
        let init = if v.init != 0 {
            Some(uapi::user_range(v.init, size)?)
        } else {
            None
        };
        let mut left = size;
        for i in 0..count as u64 {
            let page = self.file.page(group.first + i)?;
            let n = left.min(PAGE_SIZE);
            if let Some(src) = init {
                page.borrow()
                    .copy_from_user(src + i as usize * PAGE_SIZE, 0, n)?;
            }
            left -= n;
            group.pages.push(page, GFP_ACCOUNT_MAYFAIL)?;
        }
        Ok(group)
    }

    /// RESTORE_VAR (`restore.rs`): adds `var` to a segment nobody can see yet, with its
    /// bytes copied in, as committed state (no handle created it: nothing orphans or adopts
    /// it). Reserved, charged and allocated like a RESOLVE's addition (`ENOSPC` past
    /// `max_segment_pages` or `max_variables`, the accounting's errnos); `EEXIST` if an
    /// entry of the same name and fingerprint exists. Returns its first page and page count.
    pub fn restore_var(&self, var: &mut RestoredVar) -> Result<(u64, u64)> {
        let pages = pages_for(var.size).ok_or(ENOSPC)?;
        let reserved = {
            let mut g = self.inner.lock();
            restore_fits(&mut g, var, pages, 0)?;
            g.reserved_pages += pages;
            Reserved { seg: self, pages }
        };
        let charge = self.accounting.charge_pages(pages)?;
        let init = dsu_var {
            size: var.size,
            init: var.value,
            ..Default::default()
        };
        let mut group = self.new_pages(&init)?;
        // Declared after `reserved`, `charge` and `group`: unlocked before they are dropped
        // on failure.
        let mut g = self.inner.lock();
        restore_fits(&mut g, var, pages, pages)?;
        g.pages.reserve(pages, GFP_ACCOUNT_MAYFAIL)?;
        g.file_map.reserve(1)?;
        g.charges.pages.reserve(charge.uid)?;
        let mut reservation = g.dir.reserve(1)?;
        // Taken: the segment owns the pages now, the group must not free them.
        group.reserved = 0;
        let first_page = g.pages.len() as u64;
        let page_count = pages as u64;
        for page in core::mem::replace(&mut group.pages, KVVec::new()) {
            // Capacity was reserved above: no allocation, no failure.
            g.pages.push(Some(page), GFP_NOWAIT)?;
        }
        g.live_pages += pages;
        g.file_map
            .push(first_page, group.first, page_count, GFP_NOWAIT)?;
        let generation = g.generation;
        g.dir.insert(
            Entry {
                name: var.name,
                size: var.size,
                align: var.align,
                fingerprint: var.fingerprint,
                first_page,
                page_count,
                created_ns: var.created_ns,
                created_by: 0,
                created_label: var.created_label,
                creator_handle: 0,
                type_desc: core::mem::replace(&mut var.type_desc, TypeDesc::none()),
                seq: 0,
                charged_uid: charge.uid,
                mappers: 0,
                pins: 0,
                last_gen: generation,
                committed: true,
                orphan: false,
            },
            &mut reservation,
        )?;
        g.reserved_pages -= reserved.pages;
        // Released above: its drop must not release it again (nor lock the held mutex).
        core::mem::forget(reserved);
        g.charges.pages.record(charge, pages)?;
        Ok((first_page, page_count))
    }

    /// The page at `index` of the segment's file, with a reference; `None` if absent. Takes
    /// no lock (an RCU page-cache lookup), for the fault path.
    pub fn file_page(&self, index: u64) -> Option<PageRef> {
        self.file.lookup(index)
    }

    /// BIND: creates a version whose section is the concatenation of `extents` (segment
    /// pages `first_page..first_page + page_count`, each non-empty and not overflowing: the
    /// caller checked). `EINVAL` for an extent out of range or over pages of a removed
    /// entry, `ENOSPC` at `max_versions`, `eidrm()` if destroyed. Costs O(extents + entries
    /// they span), not O(pages). The version counts as a mapper of every entry it covers,
    /// and the handle's pins are released. Tells every other attached handle (BOUND, and
    /// READY unless `candidate`) and clears `own` (the binder's queue).
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        seg: &Arc<Segment>,
        handle_id: u64,
        label: Label,
        pid: TaskPid,
        prefault: bool,
        candidate: bool,
        extents: &[dsu_extent],
        own: &EventQueue,
    ) -> Result<Arc<Version>> {
        let mut map = PageMap::new();
        map.reserve(extents.len())?;
        let node = RBTreeNodeReservation::new(GFP_ACCOUNT_MAYFAIL)?;
        let mut g = seg.inner.lock();
        if g.destroyed {
            return Err(eidrm());
        }
        if g.version_count >= limits::max_versions() {
            return Err(ENOSPC);
        }
        for e in extents {
            g.file_map.translate(e.first_page, e.page_count, &mut map)?;
        }
        // Pages of removed entries are holes in the segment: not mappable.
        if !map.runs().iter().all(|r| g.dir.covers(r.seg, r.count)) {
            return Err(EINVAL);
        }
        let id = g.next_version;
        let version = Arc::new(
            Version {
                id,
                handle: handle_id,
                label,
                pid,
                bound_ns: realtime_ns(),
                prefault,
                map,
                mappings: AtomicU64::new(0),
                ready: AtomicBool::new(false),
                segment: seg.clone(),
            },
            GFP_ACCOUNT_MAYFAIL,
        )?;
        let g = &mut *g;
        g.next_version += 1;
        g.dir.adopt(handle_id, id, label);
        g.versions.insert(node.into_node(id, version.clone()));
        g.version_count += 1;
        for_entries_of(&mut g.dir, &version, |e| e.mappers += 1);
        if let Some(slot) = g.handles.get_mut(&handle_id) {
            unpin(&mut g.dir, &slot.pins);
            slot.pins = KVVec::new();
        }
        own.clear();
        g.push_event(handle_id, version.event(DSU_EVENT_VERSION_BOUND));
        if !candidate {
            g.commit(&version);
        }
        Ok(version)
    }

    /// Where the segment's pages are charged.
    pub fn accounting(&self) -> &Arc<Accounting> {
        &self.accounting
    }

    /// For a snapshot: copies the directory, takes a reference to every segment page and
    /// runs `f` with them while the segment mutex is still held, so that nothing is added
    /// or removed until `f` has taken the snapshot's instant.
    pub fn freeze_for_snapshot<R>(
        &self,
        f: impl FnOnce(crate::snapshot::Frozen) -> Result<R>,
    ) -> Result<R> {
        let g = self.inner.lock();
        let mut refs = KVVec::with_capacity(g.pages.len(), GFP_ACCOUNT_MAYFAIL)?;
        for (i, page) in g.pages.iter().enumerate() {
            // A reference of our own (RCU lookup) for each page the segment holds.
            let page = match page {
                Some(_) => g
                    .file_map
                    .file_page(i as u64)
                    .and_then(|f| self.file.lookup(f)),
                None => None,
            };
            refs.push(page, GFP_ACCOUNT_MAYFAIL)?;
        }
        let mut dir = KVVec::with_capacity(g.dir.len(), GFP_ACCOUNT_MAYFAIL)?;
        for i in 0..g.dir.len() {
            let Some(e) = g.dir.get(i) else { break };
            let mut desc = KVVec::new();
            desc.extend_from_slice(e.type_desc.bytes(), GFP_ACCOUNT_MAYFAIL)?;
            dir.push((variable_info(e), desc), GFP_ACCOUNT_MAYFAIL)?;
        }
        f(crate::snapshot::Frozen {
            refs,
            dir,
            generation: g.generation,
            live_pages: g.live_pages,
            heap: g.heap.clone(),
        })
    }

    /// The shared heap, if created.
    pub fn heap(&self) -> Option<Arc<Heap>> {
        self.inner.lock().heap.clone()
    }

    /// DSU_IOC_HEAP: the heap, and whether this call created it. An existing heap is
    /// returned whatever `base` and `reserve` say; without one, both zero is `ENOENT`, a
    /// window [`Heap::check_window`] refuses its errno, a destroyed segment `eidrm()`.
    pub fn heap_or_create(&self, base: u64, reserve: u64) -> Result<(Arc<Heap>, bool)> {
        if let Some(heap) = self.heap() {
            return Ok((heap, false));
        }
        if base == 0 && reserve == 0 {
            return Err(ENOENT);
        }
        Heap::check_window(base, reserve)?;
        // Made with no lock held (a shmem inode); dropped unused if another caller won.
        let new = Heap::new(base, reserve, &self.accounting)?;
        let mut g = self.inner.lock();
        if let Some(heap) = &g.heap {
            return Ok((heap.clone(), false));
        }
        if g.destroyed {
            return Err(eidrm());
        }
        g.heap = Some(new.clone());
        Ok((new, true))
    }

    /// The file pages behind segment pages `first..first + count` (`EINVAL` unless inside
    /// the segment, `count >= 1` and every page held by a live variable), as a map from
    /// page 0: a view's page map. The variables the range covers count the view as one
    /// more mapper until the returned [`ViewPages`] is dropped (the view's last VMA is
    /// gone), so neither GC nor an abort frees a page a view maps.
    pub fn view_map(seg: &Arc<Segment>, first: u64, count: u64) -> Result<ViewPages> {
        let mut map = PageMap::new();
        map.reserve(1)?;
        let mut g = seg.inner.lock();
        g.file_map.translate(first, count, &mut map)?;
        // Pages of removed entries are holes in the segment: not mappable (as for BIND).
        if !g.dir.covers(first, count) {
            return Err(EINVAL);
        }
        for i in g.dir.overlapping(first, count) {
            if let Some(e) = g.dir.get_mut(i) {
                e.mappers += 1;
            }
        }
        Ok(ViewPages {
            map,
            segment: seg.clone(),
            first,
            count,
        })
    }

    /// READY: commits `version` (a candidate becomes ready, see [`Inner::commit`]);
    /// idempotent. `ebadfd()` if it already ended.
    pub fn ready(&self, version: &Version) -> Result {
        let mut g = self.inner.lock();
        if !g
            .versions
            .get(&version.id)
            .is_some_and(|v| core::ptr::eq(&**v, version))
        {
            return Err(crate::kernel_ext::error::ebadfd());
        }
        if !version.is_ready() {
            g.commit(version);
        }
        Ok(())
    }

    /// DSU_IOC_GC: finds the entries that no live version maps, no handle pins, and no ready
    /// version used for `min_age` generations, and (unless `dry_run`) removes them. Returns
    /// records of the first `capacity` of them, and the count, pages and the generation.
    /// Decided and done under the segment mutex, so a concurrent RESOLVE or BIND sees each
    /// entry either still there (and then pins or maps it) or gone.
    pub fn collect_garbage(&self, min_age: u64, dry_run: bool, capacity: usize) -> Result<Garbage> {
        let mut records = KVVec::with_capacity(capacity, GFP_ACCOUNT_MAYFAIL)?;
        let mut g = self.inner.lock();
        let g = &mut *g;
        let generation = g.generation;
        let old = |e: &Entry| generation.saturating_sub(e.last_gen) >= min_age;
        let mut record = |e: &Entry| {
            if records.len() < capacity {
                // Capacity reserved above: no allocation.
                let _ = records.push(variable_info(e), GFP_NOWAIT);
            }
        };
        let (count, pages) = if dry_run {
            let (mut count, mut pages) = (0, 0);
            for i in 0..g.dir.len() {
                let Some(e) = g.dir.get(i) else { break };
                if e.mappers == 0 && e.pins == 0 && old(e) {
                    record(e);
                    count += 1;
                    pages += e.page_count;
                }
            }
            (count, pages)
        } else {
            self.sweep(g, old, record)
        };
        Ok(Garbage {
            records,
            count,
            pages,
            generation,
        })
    }

    /// Up to `count` variable records from `start`, and the total.
    pub fn list_variables(
        &self,
        start: usize,
        count: usize,
    ) -> Result<(KVVec<dsu_variable_info>, usize)> {
        let mut out = KVVec::with_capacity(count, GFP_ACCOUNT_MAYFAIL)?;
        let g = self.inner.lock();
        let total = g.dir.len();
        for i in start..total.min(start.saturating_add(count)) {
            let Some(e) = g.dir.get(i) else { break };
            out.push(variable_info(e), GFP_ACCOUNT_MAYFAIL)?;
        }
        Ok((out, total))
    }

    /// Up to `count` version records from `start` (by id), and the total.
    pub fn list_versions(
        &self,
        start: usize,
        count: usize,
    ) -> Result<(KVVec<uapi::dsu_version_info>, usize)> {
        let mut out = KVVec::with_capacity(count, GFP_ACCOUNT_MAYFAIL)?;
        let g = self.inner.lock();
        for (_, v) in g.versions.iter().skip(start).take(count) {
            out.push(v.info(), GFP_ACCOUNT_MAYFAIL)?;
        }
        Ok((out, g.version_count))
    }

    /// Finds the pages holding `length` bytes at `offset` of the newest entry `name` (with
    /// `fingerprint` unless `any`). `ENOENT` if missing, `EINVAL` for an offset past its end.
    pub fn read_var(
        &self,
        name: &VarName,
        fingerprint: u64,
        any: bool,
        offset: u64,
        length: u64,
    ) -> Result<VarSnapshot> {
        let mut g = self.inner.lock();
        let g = &mut *g;
        let e = g.dir.find(name, fingerprint, any).ok_or(ENOENT)?;
        if offset > e.size {
            return Err(EINVAL);
        }
        let len = length.min(e.size - offset) as usize;
        let offset = offset as usize;
        let skip = offset % PAGE_SIZE;
        let first = e.first_page + (offset / PAGE_SIZE) as u64;
        let count = (skip + len).div_ceil(PAGE_SIZE);
        let (var_size, var_fingerprint) = (e.size, e.fingerprint);
        let mut pages = KVVec::with_capacity(count, GFP_ACCOUNT_MAYFAIL)?;
        for i in first..first + count as u64 {
            // References of our own (an RCU page-cache lookup): the copy happens after
            // unlocking, when a GC may have removed the entry.
            let page = g
                .file_map
                .file_page(i)
                .and_then(|f| self.file.lookup(f))
                .ok_or(EINVAL)?;
            pages.push(page, GFP_ACCOUNT_MAYFAIL)?;
        }
        Ok(VarSnapshot {
            pages,
            skip,
            len,
            var_size,
            var_fingerprint,
        })
    }
}

/// Where READ_VAR with `DSU_READ_TYPE_DESC` copies from: a copy of the requested bytes.
pub struct DescSnapshot {
    /// The bytes to copy out.
    pub bytes: KVVec<u8>,
    /// The variable's size.
    pub var_size: u64,
    /// The variable's fingerprint.
    pub var_fingerprint: u64,
}

impl Segment {
    /// Copies up to `length` bytes at `offset` of the type description of the newest entry
    /// `name` (with `fingerprint` unless `any`). `ENOENT` if missing, `EINVAL` for an offset
    /// past the description's end.
    pub fn read_type_desc(
        &self,
        name: &VarName,
        fingerprint: u64,
        any: bool,
        offset: u64,
        length: u64,
    ) -> Result<DescSnapshot> {
        let mut g = self.inner.lock();
        let e = g.dir.find(name, fingerprint, any).ok_or(ENOENT)?;
        let desc = e.type_desc.bytes();
        let start = usize::try_from(offset)
            .ok()
            .filter(|&o| o <= desc.len())
            .ok_or(EINVAL)?;
        let len = usize::try_from(length)
            .unwrap_or(usize::MAX)
            .min(desc.len() - start);
        let mut bytes = KVVec::with_capacity(len, GFP_ACCOUNT_MAYFAIL)?;
        bytes.extend_from_slice(&desc[start..start + len], GFP_ACCOUNT_MAYFAIL)?;
        Ok(DescSnapshot {
            bytes,
            var_size: e.size,
            var_fingerprint: e.fingerprint,
        })
    }
}

/// What DSU_IOC_GC found (and removed, unless a dry run).
pub struct Garbage {
    /// Records of the first ones.
    pub records: KVVec<dsu_variable_info>,
    /// How many.
    pub count: usize,
    /// Their pages.
    pub pages: u64,
    /// The segment's generation.
    pub generation: u64,
}

impl Inner {
    /// Queues `event` for every attached handle but `except`.
    fn push_event(&self, except: u64, event: QueuedEvent) {
        for (hid, h) in self.handles.iter() {
            if *hid != except {
                h.queue.push(event.clone());
            }
        }
    }

    /// Makes `version` ready: a new generation, which every entry it maps records as its
    /// last use (and which makes them committed state); tells the other handles.
    fn commit(&mut self, version: &Version) {
        version.ready.store(true, Ordering::Relaxed);
        self.generation += 1;
        let generation = self.generation;
        for_entries_of(&mut self.dir, version, |e| {
            e.last_gen = generation;
            e.committed = true;
            e.orphan = false;
        });
        self.push_event(version.handle, version.event(DSU_EVENT_VERSION_READY));
    }
}

/// A view's pages (`DSU_VIEW_MMAP_OFFSET`): segment pages `first..first + count`, whose
/// variables count the view as a mapper (`Entry::mappers`) while this lives.
pub struct ViewPages {
    /// Which file page backs each page of the view; fixed at mmap.
    pub map: PageMap,
    /// The segment, which keeps the pages.
    pub segment: Arc<Segment>,
    first: u64,
    count: u64,
}

impl Drop for ViewPages {
    /// Uncounts the view's mappers (the same entries: none of them could be removed since).
    /// Runs at the view's last VMA close (`mmap_lock` held: `mmap_lock` → segment mutex is
    /// the documented order). It removes nothing: a variable this was the last to keep is
    /// reclaimed by the next GC, or, if orphaned, by the next handle's release (the view's
    /// own handle is released only after its VMAs, which hold its file).
    fn drop(&mut self) {
        let mut g = self.segment.inner.lock();
        for i in g.dir.overlapping(self.first, self.count) {
            if let Some(e) = g.dir.get_mut(i) {
                e.mappers = e.mappers.saturating_sub(1);
            }
        }
    }
}

/// Calls `f` with every entry `version` maps, once per run of its map that covers it (BIND
/// counts mappers this way and the version's end uncounts them the same way).
fn for_entries_of(dir: &mut Directory, version: &Version, mut f: impl FnMut(&mut Entry)) {
    for run in version.map.runs() {
        for i in dir.overlapping(run.seg, run.count) {
            if let Some(e) = dir.get_mut(i) {
                f(e);
            }
        }
    }
}

/// Makes room for `n` more pins of handle `handle`.
fn reserve_pins(g: &mut Inner, handle: u64, n: usize) -> Result {
    if let Some(slot) = g.handles.get_mut(&handle) {
        slot.pins.reserve(n, GFP_ACCOUNT_MAYFAIL)?;
    }
    Ok(())
}

/// Pins for handle `handle` every entry a RESOLVE found or added (`vars` with their pages),
/// once per handle. [`reserve_pins`] made room.
fn pin(g: &mut Inner, handle: u64, vars: &[dsu_var]) {
    let Inner { handles, dir, .. } = g;
    let Some(slot) = handles.get_mut(&handle) else {
        return;
    };
    let old = slot.pins.len();
    for v in vars {
        if v.status != DSU_VAR_COMMON && v.status != DSU_VAR_ADDED {
            continue;
        }
        let Some(e) = dir
            .position_of_page(v.first_page)
            .and_then(|i| dir.get_mut(i))
        else {
            continue;
        };
        if slot.pins[..old].binary_search(&e.seq).is_ok() {
            continue;
        }
        // Room was reserved: no allocation. Names are unique in a batch, so no entry twice.
        if slot.pins.push(e.seq, GFP_NOWAIT).is_ok() {
            e.pins += 1;
        }
    }
    slot.pins.sort_unstable();
}

/// Releases the pins `pins` (entry numbers) of a handle that binds or goes.
fn unpin(dir: &mut Directory, pins: &[u64]) {
    for &seq in pins {
        if let Some(e) = dir.by_seq_mut(seq) {
            e.pins = e.pins.saturating_sub(1);
        }
    }
}

/// The LIST_VARIABLES (and GC) record of an entry.
fn variable_info(e: &Entry) -> dsu_variable_info {
    dsu_variable_info {
        size: e.size,
        align: e.align,
        fingerprint: e.fingerprint,
        first_page: e.first_page,
        page_count: e.page_count,
        created_ns: e.created_ns,
        created_by: e.created_by,
        created_label: e.created_label.to_c(),
        name: e.name.to_c(),
    }
}

/// Pages a variable of `size` bytes occupies, or `None` if that overflows.
fn pages_for(size: u64) -> Option<usize> {
    usize::try_from(size.div_ceil(PAGE_SIZE as u64)).ok()
}

/// Classifies every entry (statuses: `COMMON` with its pages, `PENDING` for an entry to add,
/// `CONFLICT_*`), checks that adding the pending ones fits the limits, and returns how many
/// entries and pages they need. `EEXIST` on a conflict, `eidrm()` if destroyed, `ENOSPC` past
/// a limit. `mine` is what the caller already reserved (not counted twice).
fn classify(
    g: &mut Inner,
    vars: &mut [dsu_var],
    names: &[VarName],
    mine: usize,
) -> Result<(usize, usize)> {
    if g.destroyed {
        return Err(eidrm());
    }
    let (mut adds, mut pages, mut conflicts) = (0usize, 0usize, 0usize);
    for (v, name) in vars.iter_mut().zip(names) {
        v.first_page = 0;
        v.page_count = 0;
        v.found_size = 0;
        v.found_fingerprint = 0;
        match g
            .dir
            .lookup(name, v.size, v.fingerprint, v.flags & DSU_VAR_MIGRATE != 0)
        {
            Lookup::Found(i) => {
                let e = g.dir.get(i).ok_or(EINVAL)?;
                v.status = DSU_VAR_COMMON;
                v.first_page = e.first_page;
                v.page_count = e.page_count;
            }
            Lookup::Missing => {
                v.status = DSU_VAR_PENDING;
                adds += 1;
                pages = pages.saturating_add(pages_for(v.size).unwrap_or(usize::MAX));
            }
            Lookup::Conflict {
                status,
                size,
                fingerprint,
            } => {
                v.status = status;
                v.found_size = size;
                v.found_fingerprint = fingerprint;
                conflicts += 1;
            }
        }
    }
    if conflicts > 0 {
        return Err(EEXIST);
    }
    if adds > 0 {
        let others = g.reserved_pages - mine;
        if g.live_pages.saturating_add(others).saturating_add(pages) > limits::max_segment_pages() {
            return Err(ENOSPC);
        }
        if g.dir.len().saturating_add(adds) > limits::max_variables() {
            return Err(ENOSPC);
        }
    }
    Ok((adds, pages))
}

/// Whether RESTORE_VAR may add `var` of `pages` pages: `EEXIST` for an entry of the same
/// name and fingerprint, `ENOSPC` past `max_segment_pages` (with other restores' reserved
/// pages; `mine` is what this one reserved already) or `max_variables`.
fn restore_fits(g: &mut Inner, var: &RestoredVar, pages: usize, mine: usize) -> Result {
    if g.dir.find(&var.name, var.fingerprint, false).is_some() {
        return Err(EEXIST);
    }
    let others = g.reserved_pages - mine;
    if g.live_pages.saturating_add(others).saturating_add(pages) > limits::max_segment_pages() {
        return Err(ENOSPC);
    }
    if g.dir.len() >= limits::max_variables() {
        return Err(ENOSPC);
    }
    Ok(())
}
