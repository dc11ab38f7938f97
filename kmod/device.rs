// SPDX-License-Identifier: GPL-2.0-only

//! `/dev/dsu` file operations: open, release, ioctl dispatch, mmap, poll and read.
//!
//! Each ioctl is dispatched on its whole command number (type, number, direction and size:
//! one command per struct size the kernel knows, `ENOTTY` for any other); the struct's own
//! size field then governs copying. The introspection, DESTROY and SETATTR ioctls, which name their segment and work in any
//! handle state, are implemented here; the state-changing ones are in `handle.rs`.
//! Nothing here holds a dsu lock across a user copy.

use crate::{
    handle::Handle,
    kernel_ext::{
        anon_file::DeviceMappings,
        cred::{kgid_from_current_ns, kuid_from_current_ns},
        error::ebadfd,
        file::File,
        miscdevice::MiscDevice,
        mm::VmaNew,
        poll::{PollTable, POLLIN, POLLRDNORM},
    },
    limits, mapping,
    registry::Registry,
    restore,
    segment::{AttrChange, MAY_READ, MAY_WRITE},
    uapi::{
        self, dsu_destroy, dsu_event, dsu_gc, dsu_list, dsu_read_heap, dsu_read_var,
        dsu_segment_info, dsu_setattr, dsu_variable_info, dsu_version_info, ioctl, RecordArray,
        DSU_GC_DRY_RUN, DSU_GC_MIN_AGE, DSU_LIST_MAX, DSU_READ_ANY_FINGERPRINT, DSU_READ_TYPE_DESC,
        DSU_SEGMENT_INFO_SIZE_VER1, DSU_SETATTR_GID, DSU_SETATTR_MODE, DSU_SETATTR_UID,
    },
    version::QueuedEvent,
};
use core::mem::size_of;
use kernel::{
    error::code::*,
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, ArcBorrow},
    uaccess::{UserSlice, UserSliceWriter},
};

impl MiscDevice for Handle {
    type Context = Pin<KBox<Registry>>;
    type Ptr = Arc<Handle>;
    // World-accessible: access control is per segment.
    const MODE: u16 = 0o666;

    fn open(_registry: &Pin<KBox<Registry>>, file: &File) -> Result<Arc<Handle>> {
        // Before any mmap: every VMA of the file is then in the module's reverse map, which
        // a snapshot zaps (`snapshot.rs`).
        DeviceMappings::adopt(file);
        Handle::new()
    }

    fn release(registry: &Pin<KBox<Registry>>, handle: Arc<Handle>, _file: &File) {
        handle.release(registry);
    }

    fn ioctl(
        registry: &Pin<KBox<Registry>>,
        handle: ArcBorrow<'_, Handle>,
        _file: &File,
        cmd: u32,
        arg: usize,
    ) -> Result<isize> {
        if restore::refused_while_restoring(cmd) && handle.is_restoring() {
            return Err(ebadfd());
        }
        match cmd {
            ioctl::ATTACH | ioctl::ATTACH_VER1 => handle.attach(registry, arg),
            ioctl::RESOLVE => handle.resolve(arg),
            ioctl::BIND | ioctl::BIND_VER1 => handle.bind(arg),
            ioctl::LIST_SEGMENTS => list(registry, arg, ListKind::Segments),
            ioctl::LIST_VARIABLES => list(registry, arg, ListKind::Variables),
            ioctl::LIST_VERSIONS => list(registry, arg, ListKind::Versions),
            ioctl::READ_VAR => read_var(registry, arg),
            ioctl::DESTROY => destroy(registry, arg),
            ioctl::SETATTR => setattr(registry, arg),
            ioctl::HEAP => handle.heap(arg),
            ioctl::HEAP_GROW => handle.heap_grow(arg),
            ioctl::HEAP_DISCARD => handle.heap_discard(arg),
            ioctl::READ_HEAP => read_heap(registry, arg),
            ioctl::READY => handle.ready(),
            ioctl::GC => gc(registry, arg),
            ioctl::RESTORE => restore::restore(&handle, registry, arg),
            ioctl::RESTORE_VAR => restore::restore_var(&handle, arg),
            ioctl::RESTORE_HEAP => restore::restore_heap(&handle, arg),
            ioctl::RESTORE_COMMIT => handle.commit_restore(registry),
            ioctl::SNAPSHOT => crate::snapshot::snapshot(registry, arg),
            ioctl::LOCK_TOKEN => registry.lock_owners().issue(arg),
            ioctl::LOCK_OWNER => registry.lock_owners().query(arg),
            _ => Err(ENOTTY),
        }
    }

    fn mmap(
        _registry: &Pin<KBox<Registry>>,
        handle: ArcBorrow<'_, Handle>,
        file: &File,
        vma: &VmaNew,
    ) -> Result {
        mapping::mmap(&handle, file, vma)
    }

    fn poll(handle: ArcBorrow<'_, Handle>, file: &File, table: &PollTable) -> u32 {
        handle.events.wait_queue().register(file, table);
        if handle.events.ready() {
            POLLIN | POLLRDNORM
        } else {
            0
        }
    }

    /// Whole records of the size the handle's ATTACH chose (`dsu_attach.event_size`): the
    /// kernel's `struct dsu_event`, zero-filled past its size; pids in the reader's pid
    /// namespace.
    fn read(handle: ArcBorrow<'_, Handle>, file: &File, mut buf: UserSliceWriter) -> Result<usize> {
        let record = handle.event_size();
        let want = (buf.len() / record).min(16);
        if want == 0 {
            return Err(EINVAL);
        }
        let mut events: [QueuedEvent; 16] = Default::default();
        loop {
            let n = handle.events.pop(&mut events[..want]);
            if n > 0 {
                // Copied out with no lock held. Events that could not be copied are put
                // back: a failed read returns EFAULT, a partial one the records it copied.
                for i in 0..n {
                    if let Err(err) = write_event(&mut buf, &events[i].record(), record) {
                        handle.events.unpop(&mut events[i..n]);
                        return if i == 0 { Err(err) } else { Ok(i * record) };
                    }
                }
                return Ok(n * record);
            }
            if file.is_nonblocking() {
                return Err(EAGAIN);
            }
            handle
                .events
                .wait_queue()
                .wait_interruptible(|| handle.events.ready())?;
        }
    }
}

/// Writes one `record`-byte event record: the event, then zeros (`record >= size_of` the
/// event: ATTACH refuses a smaller `event_size`).
fn write_event(buf: &mut UserSliceWriter, event: &dsu_event, record: usize) -> Result {
    buf.write(event)?;
    let zeros = [0u8; 64];
    let mut left = record.saturating_sub(size_of::<dsu_event>());
    while left > 0 {
        let n = left.min(zeros.len());
        buf.write_slice(&zeros[..n])?;
        left -= n;
    }
    Ok(())
}

enum ListKind {
    Segments,
    Variables,
    Versions,
}

/// DSU_IOC_LIST_*: paged copies of introspection records.
fn list(registry: &Registry, arg: usize, kind: ListKind) -> Result<isize> {
    let mut l: dsu_list = uapi::read_struct(arg)?;
    // Padding, output-only and unused fields must be zero, so that they can be given a
    // meaning later.
    if l.__pad != 0 || l.total != 0 {
        return Err(EINVAL);
    }
    if matches!(kind, ListKind::Segments) && l.segment.iter().any(|c| *c != 0) {
        return Err(EINVAL);
    }
    if l.count > DSU_LIST_MAX {
        return Err(E2BIG);
    }
    let (start, count) = (l.start as usize, l.count as usize);
    let written = match kind {
        ListKind::Segments => {
            // Records grew after API version 1: shorter ones get the fields they cover.
            let array = RecordArray::new_grown::<dsu_segment_info>(
                l.records,
                l.record_size,
                count,
                DSU_SEGMENT_INFO_SIZE_VER1 as usize,
            )?;
            let (records, total) = registry.list(start, count)?;
            l.total = total as u32;
            write_records(&array, &records)?
        }
        ListKind::Variables => {
            let array = RecordArray::new::<dsu_variable_info>(l.records, l.record_size, count)?;
            let seg = registry.get(&uapi::segment_name(&l.segment)?)?;
            seg.check_access(MAY_READ)?;
            let (records, total) = seg.list_variables(start, count)?;
            l.total = total as u32;
            write_records(&array, &records)?
        }
        ListKind::Versions => {
            let array = RecordArray::new::<dsu_version_info>(l.records, l.record_size, count)?;
            let seg = registry.get(&uapi::segment_name(&l.segment)?)?;
            seg.check_access(MAY_READ)?;
            let (records, total) = seg.list_versions(start, count)?;
            l.total = total as u32;
            write_records(&array, &records)?
        }
    };
    l.count = written as u32;
    uapi::write_struct(arg, &l)?;
    Ok(0)
}

fn write_records<T: kernel::types::AsBytes>(array: &RecordArray, records: &[T]) -> Result<usize> {
    for (i, r) in records.iter().enumerate().take(array.count()) {
        array.write(i, r)?;
    }
    Ok(records.len().min(array.count()))
}

/// DSU_IOC_READ_VAR: copies a variable's current bytes, or its type description.
fn read_var(registry: &Registry, arg: usize) -> Result<isize> {
    let mut r: dsu_read_var = uapi::read_struct(arg)?;
    if r.flags & !(DSU_READ_ANY_FINGERPRINT | DSU_READ_TYPE_DESC) != 0
        || r.var_size != 0
        || r.var_fingerprint != 0
    {
        return Err(EINVAL);
    }
    let seg = registry.get(&uapi::segment_name(&r.segment)?)?;
    let name = uapi::variable_name(&r.name)?;
    seg.check_access(MAY_READ)?;
    let any = r.flags & DSU_READ_ANY_FINGERPRINT != 0;
    if r.flags & DSU_READ_TYPE_DESC != 0 {
        // Copied under the segment mutex, written out with no lock held.
        let snap = seg.read_type_desc(&name, r.fingerprint, any, r.offset, r.length)?;
        uapi::writer(r.buf, snap.bytes.len())?.write_slice(&snap.bytes)?;
        r.length = snap.bytes.len() as u64;
        r.var_size = snap.var_size;
        r.var_fingerprint = snap.var_fingerprint;
        uapi::write_struct(arg, &r)?;
        return Ok(0);
    }
    let snap = seg.read_var(&name, r.fingerprint, any, r.offset, r.length)?;
    // The snapshot holds references to the pages; copy with no lock held.
    let mut dst = uapi::user_range(r.buf, snap.len)?;
    let (mut skip, mut left) = (snap.skip, snap.len);
    for page in snap.pages.iter() {
        let n = left.min(PAGE_SIZE - skip);
        page.borrow().copy_to_user(dst, skip, n)?;
        dst += n;
        skip = 0;
        left -= n;
    }
    r.length = snap.len as u64;
    r.var_size = snap.var_size;
    r.var_fingerprint = snap.var_fingerprint;
    uapi::write_struct(arg, &r)?;
    Ok(0)
}

/// DSU_IOC_READ_HEAP: copies heap bytes, page by page with no lock held; pages never used
/// or discarded read as zeros (nothing is allocated).
fn read_heap(registry: &Registry, arg: usize) -> Result<isize> {
    let mut r: dsu_read_heap = uapi::read_struct(arg)?;
    if r.flags != 0 {
        return Err(EINVAL);
    }
    let seg = registry.get(&uapi::segment_name(&r.segment)?)?;
    seg.check_access(MAY_READ)?;
    let heap = seg.heap().ok_or(ENOENT)?;
    let size = heap.size();
    if r.offset > size {
        return Err(EINVAL);
    }
    let len = r.length.min(size - r.offset) as usize;
    let mut dst = uapi::user_range(r.buf, len)?;
    let (mut at, mut left) = (r.offset, len);
    let zeros = [0u8; 256];
    while left > 0 {
        let skip = (at % PAGE_SIZE as u64) as usize;
        let n = left.min(PAGE_SIZE - skip);
        match heap.file().lookup_uptodate(at / PAGE_SIZE as u64) {
            Some(page) => page.borrow().copy_to_user(dst, skip, n)?,
            None => {
                let mut w = UserSlice::new(dst, n).writer();
                while !w.is_empty() {
                    let k = w.len().min(zeros.len());
                    w.write_slice(&zeros[..k])?;
                }
            }
        }
        dst += n;
        at += n as u64;
        left -= n;
    }
    r.length = len as u64;
    uapi::write_struct(arg, &r)?;
    Ok(0)
}

/// DSU_IOC_GC: lists (`DSU_GC_DRY_RUN`, read permission) or reclaims (read and write)
/// the variables nothing uses any more; records copied out with no lock held.
fn gc(registry: &Registry, arg: usize) -> Result<isize> {
    let mut c: dsu_gc = uapi::read_struct(arg)?;
    if c.flags & !(DSU_GC_DRY_RUN | DSU_GC_MIN_AGE) != 0
        || (c.flags & DSU_GC_MIN_AGE == 0 && c.min_age != 0)
        || c.total != 0
        || c.pages != 0
        || c.generation != 0
    {
        return Err(EINVAL);
    }
    if c.count > DSU_LIST_MAX {
        return Err(E2BIG);
    }
    let count = c.count as usize;
    let array = RecordArray::new::<dsu_variable_info>(c.records, c.record_size, count)?;
    let seg = registry.get(&uapi::segment_name(&c.segment)?)?;
    let dry_run = c.flags & DSU_GC_DRY_RUN != 0;
    seg.check_access(if dry_run {
        MAY_READ
    } else {
        MAY_READ | MAY_WRITE
    })?;
    let min_age = if c.flags & DSU_GC_MIN_AGE != 0 {
        c.min_age as u64
    } else {
        limits::gc_min_age()
    };
    let found = seg.collect_garbage(min_age, dry_run, count)?;
    c.count = write_records(&array, &found.records)? as u32;
    c.total = u32::try_from(found.count).unwrap_or(u32::MAX);
    c.pages = found.pages;
    c.generation = found.generation;
    uapi::write_struct(arg, &c)?;
    Ok(0)
}

/// DSU_IOC_DESTROY.
fn destroy(registry: &Registry, arg: usize) -> Result<isize> {
    let d: dsu_destroy = uapi::read_struct(arg)?;
    if d.flags != 0 {
        return Err(EINVAL);
    }
    registry.destroy(&uapi::segment_name(&d.name)?)?;
    Ok(0)
}

/// DSU_IOC_SETATTR: the selected fields must be valid and the others zero (`EINVAL`); ids
/// are translated from the caller's user namespace (`EINVAL` if unmapped there).
fn setattr(registry: &Registry, arg: usize) -> Result<isize> {
    let s: dsu_setattr = uapi::read_struct(arg)?;
    let known = DSU_SETATTR_MODE | DSU_SETATTR_UID | DSU_SETATTR_GID;
    if s.flags == 0 || s.flags & !known != 0 || s.__pad != 0 {
        return Err(EINVAL);
    }
    // A field that is not selected must be zero, so that a caller's mistake is not ignored.
    let field = |flag: u32, value: u32| match (s.flags & flag != 0, value) {
        (true, v) => Ok(Some(v)),
        (false, 0) => Ok(None),
        (false, _) => Err(EINVAL),
    };
    let mode = field(DSU_SETATTR_MODE, s.mode)?;
    if mode.is_some_and(|m| m > 0o777) {
        return Err(EINVAL);
    }
    let uid = match field(DSU_SETATTR_UID, s.uid)? {
        Some(uid) => Some(kuid_from_current_ns(uid).ok_or(EINVAL)?),
        None => None,
    };
    let gid = match field(DSU_SETATTR_GID, s.gid)? {
        Some(gid) => Some(kgid_from_current_ns(gid).ok_or(EINVAL)?),
        None => None,
    };
    let name = uapi::segment_name(&s.name)?;
    registry.set_attrs(&name, AttrChange { mode, uid, gid })?;
    Ok(0)
}
