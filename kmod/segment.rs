// SPDX-License-Identifier: GPL-2.0-only

//! Segments: named sets of physical pages with a directory of the variables in them.
//!
//! A [`Segment`] owns its pages, which live in an internal shmem file (see
//! `kernel_ext/shmem.rs`: page-cache pages, so that shared futexes on them work; zeroed,
//! unevictable, charged to the memcg of whoever caused their allocation) and frees them
//! when it is dropped: after DESTROY, and once the last handle
//! attached to it, and so the last version and mapping, is gone. Pages are only appended,
//! never removed or moved, so a page pointer taken under the lock stays valid for as long
//! as a reference to the segment is held (READ_VAR relies on that), and so does a page
//! looked up in the file's page cache without the lock (the fault path: versions map runs
//! of file pages, which BIND translates from segment pages through `Inner::file_map`).
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
        mm::{BorrowedPage, PageRef},
        ns::{IpcNs, TaskPid},
        shmem::ShmemFile,
        time::realtime_ns,
    },
    limits,
    uapi::{
        self, dsu_extent, dsu_segment_info, dsu_var, dsu_variable_info, Label, SegName, VarName,
        DSU_EVENT_VERSION_BOUND, DSU_EVENT_VERSION_ENDED, DSU_SEGMENT_DESTROYED, DSU_VAR_ADDED,
        DSU_VAR_COMMON, DSU_VAR_MIGRATE, DSU_VAR_PENDING,
    },
    version::{EventQueue, PageMap, Version},
};
use core::sync::atomic::{AtomicU64, Ordering};
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
    /// Segment page `i` is `pages[i]` (held references to pages of `Segment::file`).
    pages: KVVec<PageRef>,
    /// Where segment pages are in the file: runs by segment page index, covering `pages`.
    /// BIND translates a version's extents through it.
    file_map: PageMap,
    dir: Directory,
    /// Live versions by id; removed when their handle is released.
    versions: RBTree<u64, Arc<Version>>,
    version_count: usize,
    /// Event queues of attached handles, by handle id.
    handles: RBTree<u64, Arc<EventQueue>>,
    handle_count: usize,
    next_version: u64,
    /// The shared heap, once a DSU_IOC_HEAP created it (`heap.rs`).
    heap: Option<Arc<Heap>>,
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

/// Where READ_VAR copies from: pages borrowed from the segment, which keeps them.
pub struct VarSnapshot<'a> {
    /// Pages covering the requested bytes.
    pub pages: KVVec<BorrowedPage<'a>>,
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
            file_map: PageMap::new(),
            dir: Directory::new(),
            versions: RBTree::new(),
            version_count: 0,
            handles: RBTree::new(),
            handle_count: 0,
            next_version: 1,
            heap: None,
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
        g.handles.insert(node.into_node(handle_id, queue));
        g.handle_count += 1;
        Ok(())
    }

    /// Disconnects a released handle and ends its version, if any, telling the other
    /// handles. Returns whether this was the last handle of a destroyed segment.
    pub fn detach_handle(&self, handle_id: u64, version: Option<&Version>) -> bool {
        let (queue, ended, last);
        {
            let mut g = self.inner.lock();
            queue = g.handles.remove(&handle_id);
            g.handle_count = g.handle_count.saturating_sub(1);
            ended = version.and_then(|v| g.versions.remove(&v.id));
            if let Some(v) = &ended {
                g.version_count = g.version_count.saturating_sub(1);
                let event = v.event(DSU_EVENT_VERSION_ENDED);
                for (_, q) in g.handles.iter() {
                    q.push(event.clone());
                }
            }
            last = g.destroyed && g.handle_count == 0;
        }
        // Dropped here, outside the mutex.
        drop((queue, ended));
        last
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
            pages: g.pages.len() as u64,
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
        if adds == 0 {
            return Ok(0);
        }
        g.pages.reserve(add_pages, GFP_ACCOUNT_MAYFAIL)?;
        g.file_map.reserve(adds)?;
        g.charges.pages.reserve(charge.uid)?;
        let mut reservation = g.dir.reserve(adds)?;
        let now = realtime_ns();
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
                g.pages.push(page, GFP_NOWAIT)?;
            }
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

    /// Appends to `out` segment pages `first..first + count` (`EINVAL` past the end),
    /// borrowed for as long as the segment is: its pages are only freed when it is dropped.
    /// No user memory is touched under the lock.
    pub fn page_ptrs<'a>(
        &'a self,
        first: u64,
        count: usize,
        out: &mut KVVec<BorrowedPage<'a>>,
    ) -> Result {
        let g = self.inner.lock();
        let first = usize::try_from(first).map_err(|_| EINVAL)?;
        let pages = first
            .checked_add(count)
            .and_then(|end| g.pages.get(first..end))
            .ok_or(EINVAL)?;
        for page in pages {
            // SAFETY: The segment drops its page references only when it is dropped, and
            // `'a` borrows it.
            out.push(unsafe { page.borrow_for() }, GFP_KERNEL)?;
        }
        Ok(())
    }

    /// The page at `index` of the segment's file, with a reference; `None` if absent. Takes
    /// no lock (an RCU page-cache lookup), for the fault path.
    pub fn file_page(&self, index: u64) -> Option<PageRef> {
        self.file.lookup(index)
    }

    /// BIND: creates a version whose section is the concatenation of `extents` (segment
    /// pages `first_page..first_page + page_count`, each non-empty and not overflowing: the
    /// caller checked). `EINVAL` for an extent out of range, `ENOSPC` at `max_versions`,
    /// `eidrm()` if destroyed. Costs O(extents + entries they span), not O(pages). Tells
    /// every other attached handle and clears `own` (the binder's queue).
    pub fn bind(
        seg: &Arc<Segment>,
        handle_id: u64,
        label: Label,
        pid: TaskPid,
        prefault: bool,
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
                segment: seg.clone(),
            },
            GFP_ACCOUNT_MAYFAIL,
        )?;
        g.next_version += 1;
        g.dir.adopt(handle_id, id, label);
        g.versions.insert(node.into_node(id, version.clone()));
        g.version_count += 1;
        own.clear();
        let event = version.event(DSU_EVENT_VERSION_BOUND);
        for (hid, q) in g.handles.iter() {
            if *hid != handle_id {
                q.push(event.clone());
            }
        }
        Ok(version)
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
    /// the segment and `count >= 1`), as a map from page 0: a view's page map.
    pub fn view_map(&self, first: u64, count: u64) -> Result<PageMap> {
        let mut map = PageMap::new();
        map.reserve(1)?;
        let g = self.inner.lock();
        g.file_map.translate(first, count, &mut map)?;
        Ok(map)
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
            out.push(
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
                },
                GFP_ACCOUNT_MAYFAIL,
            )?;
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
    ) -> Result<VarSnapshot<'_>> {
        let mut g = self.inner.lock();
        let g = &mut *g;
        let e = g.dir.find(name, fingerprint, any).ok_or(ENOENT)?;
        if offset > e.size {
            return Err(EINVAL);
        }
        let len = length.min(e.size - offset) as usize;
        let offset = offset as usize;
        let skip = offset % PAGE_SIZE;
        let first = e.first_page as usize + offset / PAGE_SIZE;
        let count = (skip + len).div_ceil(PAGE_SIZE);
        let (var_size, var_fingerprint) = (e.size, e.fingerprint);
        let mut pages = KVVec::with_capacity(count, GFP_ACCOUNT_MAYFAIL)?;
        for i in first..first + count {
            let page = g.pages.get(i).ok_or(EINVAL)?;
            // SAFETY: The segment drops its page references only when it is dropped, and the
            // snapshot borrows it.
            pages.push(unsafe { page.borrow_for() }, GFP_ACCOUNT_MAYFAIL)?;
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
        if g.pages.len().saturating_add(others).saturating_add(pages) > limits::max_segment_pages()
        {
            return Err(ENOSPC);
        }
        if g.dir.len().saturating_add(adds) > limits::max_variables() {
            return Err(ENOSPC);
        }
    }
    Ok((adds, pages))
}
