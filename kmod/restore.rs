// SPDX-License-Identifier: GPL-2.0-only

//! Restore: rebuilding a segment from an image (DSU_IOC_RESTORE, RESTORE_VAR, RESTORE_HEAP,
//! RESTORE_COMMIT) before any version can see it.
//!
//! RESTORE turns a fresh handle into a *restoring* one ([`Restoring`]): it holds a new
//! segment that the registry counts and charges (`max_segments`, `max_user_segments`) but
//! does not name, so no ATTACH, LIST or READ_VAR can find it. RESTORE_VAR adds directory
//! entries with their bytes (`Segment::restore_var`: reserved, charged and allocated like a
//! RESOLVE's additions), DSU_IOC_HEAP and HEAP_GROW create and back the heap as on an
//! attached handle, and RESTORE_HEAP copies heap bytes in (`Heap::write`). COMMIT names the
//! segment in one registry lock section (`Registry::publish_restored`) and the handle becomes
//! an attached one: a concurrent ATTACH finds nothing or the whole segment. Closing the
//! handle before COMMIT drops the segment, which frees every page and releases every charge
//! as any segment's end does.
//!
//! The restore ioctls copy user memory with no lock held, so they cannot hold the handle's
//! state mutex while they work: each counts itself in [`Restoring::busy`] (taken under the
//! state mutex) until it is done, and COMMIT, under the same mutex, refuses with `EBUSY`
//! while any is in flight, so nothing is added to a segment after it is published.
//!
//! Lock order: handle state mutex → registry mutex → segment mutex (as `handle.rs`); the
//! segment and heap work takes the locks `segment.rs` and `heap.rs` describe, with no other
//! lock held.

use crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL;
use crate::{
    directory::TypeDesc,
    handle::Handle,
    registry::Registry,
    segment::Segment,
    uapi::{
        self, dsu_restore, dsu_restore_heap, dsu_restore_var, ioctl, Label, VarName,
        DSU_TYPE_DESC_MAX,
    },
};
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::{error::code::*, page::PAGE_SIZE, prelude::*, sync::Arc};

/// What a restoring handle holds: the segment being restored, not yet named.
pub struct Restoring {
    /// The segment (owned by the restorer, in the IPC namespace of its RESTORE).
    pub segment: Arc<Segment>,
    /// Restore ioctls in flight on the handle (each holds a [`RestoreOp`]).
    busy: AtomicUsize,
}

impl Restoring {
    /// The state of a handle that RESTORE gave `segment`.
    pub fn new(segment: Arc<Segment>) -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                segment,
                busy: AtomicUsize::new(0),
            },
            GFP_ACCOUNT_MAYFAIL,
        )?)
    }

    /// Counts an ioctl in flight until the returned guard is dropped. Called with the
    /// handle's state mutex held (as [`Restoring::busy`]), so a COMMIT sees it.
    pub fn op(self: &Arc<Self>) -> RestoreOp {
        self.busy.fetch_add(1, Ordering::Relaxed);
        RestoreOp(self.clone())
    }

    /// Whether an ioctl is in flight (COMMIT, with the state mutex held: `EBUSY` then).
    pub fn busy(&self) -> bool {
        // Acquire: pairs with the Release of a finished op's drop, so what it wrote (heap
        // bytes copied outside any lock) is seen by whoever COMMIT publishes the segment to.
        self.busy.load(Ordering::Acquire) != 0
    }
}

/// A restore ioctl in flight on a restoring handle (see [`Restoring::op`]).
pub struct RestoreOp(Arc<Restoring>);

impl RestoreOp {
    /// The segment being restored.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.0.segment
    }
}

impl Drop for RestoreOp {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Release);
    }
}

/// A directory entry to restore, validated (RESTORE_VAR).
pub struct RestoredVar {
    /// Its name.
    pub name: VarName,
    /// Bytes, >= 1.
    pub size: u64,
    /// A power of two up to the page size.
    pub align: u64,
    /// Type fingerprint.
    pub fingerprint: u64,
    /// User pointer to `size` bytes, or 0 for zeros.
    pub value: u64,
    /// Its type description (taken by the entry).
    pub type_desc: TypeDesc,
    /// `CLOCK_REALTIME` of its creation, as the image recorded it.
    pub created_ns: u64,
    /// Label of the version that created it, or empty.
    pub created_label: Label,
}

/// Whether `cmd` is a command that a restoring handle refuses with `EBADFD` (every command
/// but RESTORE_VAR, RESTORE_HEAP, RESTORE_COMMIT, HEAP and HEAP_GROW; unknown ones stay
/// `ENOTTY`).
pub fn refused_while_restoring(cmd: u32) -> bool {
    matches!(
        cmd,
        ioctl::ATTACH
            | ioctl::ATTACH_VER1
            | ioctl::RESOLVE
            | ioctl::BIND
            | ioctl::BIND_VER1
            | ioctl::LIST_SEGMENTS
            | ioctl::LIST_VARIABLES
            | ioctl::LIST_VERSIONS
            | ioctl::READ_VAR
            | ioctl::DESTROY
            | ioctl::SETATTR
            | ioctl::HEAP_DISCARD
            | ioctl::READ_HEAP
            | ioctl::READY
            | ioctl::GC
            | ioctl::RESTORE
            | ioctl::SNAPSHOT
    )
}

/// DSU_IOC_RESTORE: a fresh handle becomes a restoring handle of a new, unnamed segment.
pub fn restore(handle: &Handle, registry: &Registry, arg: usize) -> Result<isize> {
    let r: dsu_restore = uapi::read_struct(arg)?;
    if r.flags != 0 || r.__pad != 0 || r.mode > 0o777 {
        return Err(EINVAL);
    }
    let name = uapi::segment_name(&r.segment)?;
    handle.start_restore(registry, &name, r.mode)?;
    Ok(0)
}

/// DSU_IOC_RESTORE_VAR: adds one directory entry with its bytes to the restoring segment.
pub fn restore_var(handle: &Handle, arg: usize) -> Result<isize> {
    let mut r: dsu_restore_var = uapi::read_struct(arg)?;
    // State first, so that a handle in another state gets EBADFD whatever the entry says.
    let op = handle.restore_op()?;
    if r.type_desc_len > DSU_TYPE_DESC_MAX {
        return Err(E2BIG);
    }
    let valid = r.flags == 0
        && r.__pad == 0
        && r.first_page == 0
        && r.page_count == 0
        && r.var_size >= 1
        && r.align.is_power_of_two()
        && r.align <= PAGE_SIZE as u64
        && (r.type_desc == 0) == (r.type_desc_len == 0);
    if !valid {
        return Err(EINVAL);
    }
    let name = uapi::variable_name(&r.name)?;
    let created_label = if r.created_label[0] == 0 {
        Label::EMPTY
    } else {
        uapi::label(&r.created_label)?
    };
    let type_desc = TypeDesc::copy_in(r.type_desc, r.type_desc_len)?.ok_or(EINVAL)?;
    let mut var = RestoredVar {
        name,
        size: r.var_size,
        align: r.align,
        fingerprint: r.fingerprint,
        value: r.value,
        type_desc,
        created_ns: r.created_ns,
        created_label,
    };
    let (first_page, page_count) = op.segment().restore_var(&mut var)?;
    drop(op);
    r.first_page = first_page;
    r.page_count = page_count;
    uapi::write_struct(arg, &r)?;
    Ok(0)
}

/// DSU_IOC_RESTORE_HEAP: copies bytes into the restoring segment's heap.
pub fn restore_heap(handle: &Handle, arg: usize) -> Result<isize> {
    let r: dsu_restore_heap = uapi::read_struct(arg)?;
    let op = handle.restore_op()?;
    if r.flags != 0 {
        return Err(EINVAL);
    }
    let heap = op.segment().heap().ok_or(ENOENT)?;
    heap.write(r.offset, r.length, r.buf)?;
    Ok(0)
}
