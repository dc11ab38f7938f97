// SPDX-License-Identifier: GPL-2.0-only

//! Handles: one per open file of `/dev/dsu`.
//!
//! A handle moves `Fresh → Attached(segment) → Bound(segment, version)` and never back (or
//! `Fresh → Restoring → Attached` through a restore, `restore.rs`); the
//! state lives in a mutex, held across each transition (but never across a user copy, which
//! happens before locking or after unlocking). The handle's event queue is registered with
//! its segment from ATTACH until release. Release comes after the last fd is closed and the
//! last VMA is gone (each VMA holds the file), so it ends the version.
//!
//! Lock order: mmap_lock → handle state mutex → registry mutex → segment mutex → event
//! spinlock.

use crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL;
use crate::{
    directory::TypeDesc,
    kernel_ext::{cred::kuid_from_current_ns, error::ebadfd, ns::TaskPid},
    limits,
    registry::{AttachMode, Registry},
    restore::{RestoreOp, Restoring},
    segment::{Creator, Segment, MAY_READ, MAY_WRITE},
    uapi::{
        self, dsu_attach, dsu_bind, dsu_extent, dsu_heap, dsu_heap_discard, dsu_heap_grow,
        dsu_resolve, dsu_var, Label, RecordArray, SegName, VarName, DSU_ATTACH_MUST_CREATE,
        DSU_ATTACH_MUST_EXIST, DSU_ATTACH_OWNER, DSU_ATTACH_SIZE_VER1, DSU_BIND_CANDIDATE,
        DSU_BIND_PREFAULT, DSU_BIND_SIZE_VER1, DSU_EVENT_SIZE_VER1, DSU_HEAP_CREATED,
        DSU_TYPE_DESC_MAX, DSU_VAR_INVALID, DSU_VAR_MIGRATE, DSU_VAR_PENDING, DSU_VAR_SIZE_VER1,
    },
    version::{EventQueue, Version},
};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::{
    error::code::*,
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, Mutex},
};

/// Where a handle is in its life.
pub enum State {
    /// Opened, not attached.
    Fresh,
    /// Restoring a segment that nobody else sees yet (`restore.rs`).
    Restoring(Arc<Restoring>),
    /// Attached to a segment.
    Attached(Arc<Segment>),
    /// A version of the segment.
    Bound(Arc<Segment>, Arc<Version>),
}

/// An open file of `/dev/dsu`.
///
/// Every ioctl may race with every other on the same file (threads sharing the fd), and
/// with `mmap`, `poll` and `read`; the state mutex orders state changes, and the event
/// queue has its own lock.
#[pin_data]
pub struct Handle {
    /// Unique among handles of this module instance.
    pub id: u64,
    #[pin]
    state: Mutex<State>,
    /// Events about other versions of the attached segment.
    pub events: Arc<EventQueue>,
    /// Bytes per record that `read()` returns (set by ATTACH; `DSU_EVENT_SIZE_VER1` until).
    event_size: AtomicU32,
}

static NEXT_HANDLE_ID: AtomicU64 = AtomicU64::new(1);

impl Handle {
    /// A fresh handle.
    pub fn new() -> Result<Arc<Self>> {
        let events = EventQueue::new()?;
        Arc::pin_init(
            pin_init!(Self {
                id: NEXT_HANDLE_ID.fetch_add(1, Ordering::Relaxed),
                state <- new_mutex!(State::Fresh, "dsu_handle_state"),
                events,
                event_size: AtomicU32::new(DSU_EVENT_SIZE_VER1),
            }),
            GFP_ACCOUNT_MAYFAIL,
        )
    }

    /// Bytes per event record that `read()` returns: at least `size_of::<dsu_event>()`.
    pub fn event_size(&self) -> usize {
        self.event_size.load(Ordering::Relaxed) as usize
    }

    /// The version, if bound (for mmap).
    pub fn version(&self) -> Result<Arc<Version>> {
        match &*self.state.lock() {
            State::Bound(_, v) => Ok(v.clone()),
            _ => Err(ebadfd()),
        }
    }

    /// The segment, if attached or bound (`ebadfd()` otherwise).
    pub fn segment(&self) -> Result<Arc<Segment>> {
        match &*self.state.lock() {
            State::Fresh | State::Restoring(_) => Err(ebadfd()),
            State::Attached(s) | State::Bound(s, _) => Ok(s.clone()),
        }
    }

    /// Whether the handle is restoring (most ioctls are then `EBADFD`).
    pub fn is_restoring(&self) -> bool {
        matches!(*self.state.lock(), State::Restoring(_))
    }

    /// RESTORE: a fresh handle (else `ebadfd()`) becomes a restoring handle of a new segment
    /// `name` with `mode` ([`Registry::begin_restore`], with the state mutex held: no second
    /// RESTORE on the handle races).
    pub fn start_restore(&self, registry: &Registry, name: &SegName, mode: u32) -> Result {
        let mut state = self.state.lock();
        if !matches!(*state, State::Fresh) {
            return Err(ebadfd());
        }
        let seg = registry.begin_restore(name, mode)?;
        match Restoring::new(seg) {
            Ok(restoring) => *state = State::Restoring(restoring),
            Err(e) => {
                registry.end_restore();
                return Err(e);
            }
        }
        Ok(())
    }

    /// A restore ioctl in flight on a restoring handle (`ebadfd()` in any other state).
    pub fn restore_op(&self) -> Result<RestoreOp> {
        match &*self.state.lock() {
            State::Restoring(r) => Ok(r.op()),
            _ => Err(ebadfd()),
        }
    }

    /// RESTORE_COMMIT: publishes the restoring segment and becomes an attached handle of
    /// it. `ebadfd()` unless restoring, `EBUSY` while another restore ioctl is in flight on
    /// the handle, `EEXIST` if the name was taken meanwhile (the handle stays restoring).
    pub fn commit_restore(&self, registry: &Registry) -> Result<isize> {
        let mut state = self.state.lock();
        let State::Restoring(r) = &*state else {
            return Err(ebadfd());
        };
        if r.busy() {
            return Err(EBUSY);
        }
        let seg = r.segment.clone();
        registry.publish_restored(&seg, self.id, self.events.clone())?;
        *state = State::Attached(seg);
        Ok(0)
    }

    /// The segment DSU_IOC_HEAP and HEAP_GROW work on: an attached or bound handle's (read
    /// and write permission needed), or a restoring handle's (its restorer builds it: no
    /// check), then counted in flight until the [`RestoreOp`] is dropped.
    fn heap_segment(&self) -> Result<(Arc<Segment>, Option<RestoreOp>)> {
        let (seg, op) = match &*self.state.lock() {
            State::Fresh => return Err(ebadfd()),
            State::Restoring(r) => (r.segment.clone(), Some(r.op())),
            State::Attached(s) | State::Bound(s, _) => (s.clone(), None),
        };
        if op.is_none() {
            seg.check_access(MAY_READ | MAY_WRITE)?;
        }
        Ok((seg, op))
    }

    /// DSU_IOC_ATTACH.
    pub fn attach(&self, registry: &Registry, arg: usize) -> Result<isize> {
        let (mut a, size) =
            uapi::read_struct_grown::<dsu_attach>(arg, DSU_ATTACH_SIZE_VER1 as usize)?;
        let known = DSU_ATTACH_MUST_CREATE | DSU_ATTACH_MUST_EXIST | DSU_ATTACH_OWNER;
        let both = DSU_ATTACH_MUST_CREATE | DSU_ATTACH_MUST_EXIST;
        if a.flags & !known != 0 || a.flags & both == both || a.mode > 0o777 || a.created != 0 {
            return Err(EINVAL);
        }
        let name = uapi::segment_name(&a.name)?;
        let owner = if a.flags & DSU_ATTACH_OWNER != 0 {
            // A uid that maps to nothing in the caller's namespace owns nothing it can name.
            Some(kuid_from_current_ns(a.owner).ok_or(EINVAL)?)
        } else if a.owner != 0 {
            return Err(EINVAL);
        } else {
            None
        };
        let event_size = match a.event_size {
            0 => DSU_EVENT_SIZE_VER1,
            n if n < DSU_EVENT_SIZE_VER1 => return Err(EINVAL),
            n if n as usize > PAGE_SIZE => return Err(E2BIG),
            n => n,
        };
        let how = AttachMode {
            must_create: a.flags & DSU_ATTACH_MUST_CREATE != 0,
            must_exist: a.flags & DSU_ATTACH_MUST_EXIST != 0,
            mode: a.mode,
            owner,
        };
        let created = {
            let mut state = self.state.lock();
            match *state {
                State::Fresh => {}
                State::Restoring(_) => return Err(ebadfd()),
                _ => return Err(EBUSY),
            }
            let (seg, created) = registry.attach(&name, &how, self.id, self.events.clone())?;
            // Before the state says attached: a reader never sees an event before its size.
            self.event_size.store(event_size, Ordering::Relaxed);
            *state = State::Attached(seg);
            created
        };
        a.created = created as u32;
        uapi::write_struct_prefix(arg, &a, size)?;
        Ok(0)
    }

    /// DSU_IOC_RESOLVE.
    pub fn resolve(&self, arg: usize) -> Result<isize> {
        let mut r: dsu_resolve = uapi::read_struct(arg)?;
        if r.flags != 0 || r.count == 0 || r.added != 0 || r.conflicts != 0 {
            return Err(EINVAL);
        }
        let count = r.count as usize;
        if count > limits::max_variables() {
            return Err(E2BIG);
        }
        let array = RecordArray::new_grown::<dsu_var>(
            r.vars,
            r.var_size,
            count,
            DSU_VAR_SIZE_VER1 as usize,
        )?;

        // State first, so that a fresh handle gets ebadfd() before any entry is looked at.
        let seg = self.segment()?;
        seg.check_access(MAY_READ | MAY_WRITE)?;

        // 1. Copy in and validate every entry, with its type description.
        let mut vars: KVVec<dsu_var> = KVVec::with_capacity(count, GFP_ACCOUNT_MAYFAIL)?;
        let mut names: KVVec<VarName> = KVVec::with_capacity(count, GFP_ACCOUNT_MAYFAIL)?;
        let mut descs: KVVec<TypeDesc> = KVVec::with_capacity(count, GFP_ACCOUNT_MAYFAIL)?;
        let mut invalid = false;
        for i in 0..count {
            let mut v: dsu_var = array.read_grown(i)?;
            if v.type_desc_len > DSU_TYPE_DESC_MAX {
                return Err(E2BIG);
            }
            let name = uapi::variable_name(&v.name);
            let ok = name.is_ok()
                && v.size >= 1
                && v.align.is_power_of_two()
                && v.align <= PAGE_SIZE as u64
                && v.flags & !DSU_VAR_MIGRATE == 0
                && v.__pad == 0
                && output_fields_zero(&v)
                && (v.type_desc == 0) == (v.type_desc_len == 0);
            let desc = if ok {
                TypeDesc::copy_in(v.type_desc, v.type_desc_len)?
            } else {
                None
            };
            let ok = ok && desc.is_some();
            v.status = if ok { DSU_VAR_PENDING } else { DSU_VAR_INVALID };
            invalid |= !ok;
            names.push(name.unwrap_or(VarName::EMPTY), GFP_ACCOUNT_MAYFAIL)?;
            vars.push(v, GFP_ACCOUNT_MAYFAIL)?;
            descs.push(desc.unwrap_or_else(TypeDesc::none), GFP_ACCOUNT_MAYFAIL)?;
        }
        if !invalid {
            invalid = mark_duplicates(&mut vars, &names)?;
        }
        if invalid {
            write_vars(&array, &vars)?;
            return Err(EINVAL);
        }

        // 2-5. Classify, allocate, commit (segment.rs), as this handle's version if bound.
        let creator = match &*self.state.lock() {
            State::Bound(_, v) => Creator {
                handle: self.id,
                version: v.id,
                label: v.label,
            },
            _ => Creator {
                handle: self.id,
                version: 0,
                label: Label::EMPTY,
            },
        };
        let result = seg.resolve(&mut vars, &names, &mut descs, &creator);

        // 6. Copy statuses and pages out (also on a conflict).
        match result {
            Ok(added) => {
                write_vars(&array, &vars)?;
                r.added = added;
                r.conflicts = 0;
                uapi::write_struct(arg, &r)?;
                Ok(0)
            }
            Err(e) if e == EEXIST => {
                write_vars(&array, &vars)?;
                r.added = 0;
                r.conflicts = vars.iter().filter(|v| is_conflict(v.status)).count() as u32;
                uapi::write_struct(arg, &r)?;
                Err(EEXIST)
            }
            Err(e) => Err(e),
        }
    }

    /// DSU_IOC_BIND.
    pub fn bind(&self, arg: usize) -> Result<isize> {
        let (mut b, size) = uapi::read_struct_grown::<dsu_bind>(arg, DSU_BIND_SIZE_VER1 as usize)?;
        if b.flags & !(DSU_BIND_PREFAULT | DSU_BIND_CANDIDATE) != 0 || b.version_id != 0 {
            return Err(EINVAL);
        }
        let label = uapi::label(&b.label)?;
        if b.page_count == 0 {
            return Err(EINVAL);
        }
        // Exactly one form of the map.
        let per_page = match (b.pages != 0, b.extents != 0) {
            (true, false) if b.extent_count == 0 => true,
            (false, true) => false,
            _ => return Err(EINVAL),
        };
        // Check the state before copying the map in, for precise errnos.
        let seg = match &*self.state.lock() {
            State::Fresh | State::Restoring(_) => return Err(ebadfd()),
            State::Bound(..) => return Err(EBUSY),
            State::Attached(s) => s.clone(),
        };
        seg.check_access(MAY_READ | MAY_WRITE)?;
        let max = limits::max_segment_pages() as u64;
        if b.page_count > max {
            return Err(E2BIG);
        }
        let extents = if per_page {
            let indexes = uapi::read_array::<u64>(b.pages, b.page_count as usize)?;
            compress(&indexes)?
        } else {
            if b.extent_count == 0 {
                return Err(EINVAL);
            }
            if b.extent_count > max {
                return Err(E2BIG);
            }
            let extents = uapi::read_array::<dsu_extent>(b.extents, b.extent_count as usize)?;
            let mut sum = 0u64;
            for e in extents.iter() {
                if e.page_count == 0 || e.first_page.checked_add(e.page_count).is_none() {
                    return Err(EINVAL);
                }
                sum = sum.checked_add(e.page_count).ok_or(EINVAL)?;
            }
            if sum != b.page_count {
                return Err(EINVAL);
            }
            extents
        };

        let version = {
            let mut state = self.state.lock();
            let seg = match &*state {
                State::Fresh | State::Restoring(_) => return Err(ebadfd()),
                State::Bound(..) => return Err(EBUSY),
                State::Attached(s) => s.clone(),
            };
            let pid = TaskPid::current_tgid()?;
            let version = Segment::bind(
                &seg,
                self.id,
                label,
                pid,
                b.flags & DSU_BIND_PREFAULT != 0,
                b.flags & DSU_BIND_CANDIDATE != 0,
                &extents,
                &self.events,
            )?;
            *state = State::Bound(seg, version.clone());
            version
        };
        b.version_id = version.id;
        uapi::write_struct_prefix(arg, &b, size)?;
        Ok(0)
    }

    /// DSU_IOC_HEAP: creates the segment's heap or returns it (`heap.rs`).
    pub fn heap(&self, arg: usize) -> Result<isize> {
        let mut h: dsu_heap = uapi::read_struct(arg)?;
        if h.flags != 0 || h.heap_size != 0 || (h.base == 0) != (h.reserve == 0) {
            return Err(EINVAL);
        }
        let (seg, _op) = self.heap_segment()?;
        let (heap, created) = seg.heap_or_create(h.base, h.reserve)?;
        h.flags = if created { DSU_HEAP_CREATED } else { 0 };
        h.base = heap.base;
        h.reserve = heap.reserve;
        h.heap_size = heap.size();
        uapi::write_struct(arg, &h)?;
        Ok(0)
    }

    /// DSU_IOC_HEAP_GROW.
    pub fn heap_grow(&self, arg: usize) -> Result<isize> {
        let mut g: dsu_heap_grow = uapi::read_struct(arg)?;
        if g.flags != 0 || g.heap_size != 0 || g.min_size == 0 {
            return Err(EINVAL);
        }
        let (seg, _op) = self.heap_segment()?;
        let heap = seg.heap().ok_or(ENOENT)?;
        g.heap_size = heap.grow(g.min_size)?;
        uapi::write_struct(arg, &g)?;
        Ok(0)
    }

    /// DSU_IOC_HEAP_DISCARD.
    pub fn heap_discard(&self, arg: usize) -> Result<isize> {
        let d: dsu_heap_discard = uapi::read_struct(arg)?;
        if d.flags != 0 {
            return Err(EINVAL);
        }
        let seg = self.segment()?;
        seg.check_access(MAY_READ | MAY_WRITE)?;
        let heap = seg.heap().ok_or(ENOENT)?;
        // A snapshot taken keeps the bytes punched out (copied first).
        let page = PAGE_SIZE as u64;
        seg.snap
            .before_discard(&heap, d.offset / page, d.length.div_ceil(page), || {
                heap.discard(d.offset, d.length)
            })?;
        Ok(0)
    }

    /// DSU_IOC_READY: commits this handle's version. Idempotent; `ebadfd()` unless bound.
    /// The command has no argument, so the ioctl's third argument is ignored (C callers
    /// commonly omit it, leaving whatever a register held).
    pub fn ready(&self) -> Result<isize> {
        let (seg, version) = match &*self.state.lock() {
            State::Bound(s, v) => (s.clone(), v.clone()),
            _ => return Err(ebadfd()),
        };
        seg.ready(&version)?;
        Ok(0)
    }

    /// The file's release: detaches from the segment, ending the version.
    pub fn release(&self, registry: &Registry) {
        let state = core::mem::replace(&mut *self.state.lock(), State::Fresh);
        let (seg, version) = match state {
            State::Fresh => return,
            State::Restoring(r) => {
                // Never named: dropping it frees everything it restored, with no lock held.
                registry.end_restore();
                drop(r);
                return;
            }
            State::Attached(s) => (s, None),
            State::Bound(s, v) => (s, Some(v)),
        };
        if seg.detach_handle(self.id, version.as_deref()) {
            registry.forget_destroyed(seg.id);
        }
    }
}

/// Whether an entry's output-only fields are zero on input (so they can get a meaning later).
fn output_fields_zero(v: &dsu_var) -> bool {
    v.status == 0
        && v.first_page == 0
        && v.page_count == 0
        && v.found_size == 0
        && v.found_fingerprint == 0
}

fn is_conflict(status: u32) -> bool {
    status == uapi::DSU_VAR_CONFLICT_SIZE || status == uapi::DSU_VAR_CONFLICT_TYPE
}

/// Marks entries whose name appears earlier in the batch `INVALID`; returns whether any did.
fn mark_duplicates(vars: &mut [dsu_var], names: &[VarName]) -> Result<bool> {
    let mut order: KVVec<usize> = KVVec::with_capacity(names.len(), GFP_ACCOUNT_MAYFAIL)?;
    for i in 0..names.len() {
        order.push(i, GFP_ACCOUNT_MAYFAIL)?;
    }
    order.sort_unstable_by(|a, b| names[*a].cmp(&names[*b]).then(a.cmp(b)));
    let mut dup = false;
    for w in order.windows(2) {
        if names[w[0]] == names[w[1]] {
            vars[w[1]].status = DSU_VAR_INVALID;
            dup = true;
        }
    }
    Ok(dup)
}

/// A per-page map as extents of consecutive segment pages (an index that overflows is
/// caught as out of range by BIND).
fn compress(indexes: &[u64]) -> Result<KVVec<dsu_extent>> {
    let mut out: KVVec<dsu_extent> = KVVec::new();
    for &i in indexes {
        if let Some(last) = out.last_mut() {
            if last.first_page.checked_add(last.page_count) == Some(i) {
                last.page_count += 1;
                continue;
            }
        }
        out.push(
            dsu_extent {
                first_page: i,
                page_count: 1,
            },
            GFP_ACCOUNT_MAYFAIL,
        )?;
    }
    Ok(out)
}

/// Copies each entry's output fields back.
fn write_vars(array: &RecordArray, vars: &[dsu_var]) -> Result {
    for (i, v) in vars.iter().enumerate() {
        array.write_prefix(i, v)?;
    }
    Ok(())
}
