// SPDX-License-Identifier: GPL-2.0-only

//! Snapshots: DSU_IOC_SNAPSHOT and the snapshot fd, a point-in-time image of a live segment
//! (every segment page and the heap's first `heap_size` bytes as at one instant) while its
//! versions keep running and writing. Copy-on-first-write, not a freeze:
//!
//! - Every mapping of segment and heap pages is write-notified: version and view VMAs have
//!   a `page_mkwrite` (`mapping.rs`), and so has the heap window's wrapped shmem table
//!   (`kernel_ext/shmem.rs`), so the mm core maps their pages read-only and calls
//!   [`SnapSlot::before_write`] before the first write through each PTE.
//! - SNAPSHOT, phase 1a (*arming*): every PTE of the segment's pages is zapped in every
//!   process while writers go on (one that faults now writes before the instant, and its
//!   fault is logged: [`Armed`]): version and view VMAs live in the module's address space
//!   at the segment's offset window (`DeviceMappings`, `mapping::window`), heap VMAs in
//!   the heap file's. 1a also waits out the heap faults that passed `page_mkwrite` before
//!   arming (a lock barrier over the heap pages, then a second zap) and lists the pages
//!   that may be pinned for DMA (written without a PTE), then sweeps the pages logged so
//!   far in up to [`ARM_ROUNDS`] shorter rounds. Phase 1b (*pending*): a writer
//!   that faults now waits; only the pages logged in the last round are swept,
//!   and the pinned ones copied, so that the writers' pause does not grow with the segment
//!   (if the log overflowed, 1b redoes the whole of phase 1). Phase 2: the instant is
//!   recorded and the image published (*taken*); waiting writers go on.
//! - From the instant, a write to an image page faults first; [`Image::preserve`] copies
//!   the page (once) under its page lock before the write is allowed. A reader takes the
//!   copy if there is one, else the live page under its page lock (no write can be in
//!   flight: one would hold the lock until its PTE is writable, and copy first).
//! - Closing the fd ends the snapshot: writers are free again (pages stay read-only in the
//!   page tables until their next write, one minor fault each), copies are freed.
//!
//! Why the write before the instant is in the image and the one after is not: a write
//! through a PTE that phase 1 has not zapped yet happens before the instant; after the zap
//! (TLBs flushed) every write faults. A `page_mkwrite` that saw no snapshot and races with
//! the zap either made its PTE writable before the zap (which then removes it) or finds
//! it gone (`finish_mkwrite_fault`'s `pte_same` fails, the fault is retried). Heap faults
//! on an empty PTE install it after `page_mkwrite` returns (`do_shared_fault`), so for the
//! heap phase 1 also locks every page once after the zap (a fault holds the page lock from
//! `page_mkwrite` to the PTE install, and checks for a snapshot under it) and zaps again.
//!
//! Kernel writers: HEAP_DISCARD copies the pages it punches out first
//! ([`SnapSlot::before_discard`], under the slot's gate, which SNAPSHOT holds too); growth
//! does not matter (pages past the image's heap size are not in it); GC and aborts free
//! pages the image holds references to, and the image keeps its own directory copy.
//!
//! Memory: the worst case (every image page copied) is charged to the caller's uid at
//! SNAPSHOT (`max_user_pages`, `RLIMIT_MEMLOCK`: `ENOMEM`, nothing changed); copies are
//! allocated at the first write, charged to the caller's memory cgroup. A copy that cannot
//! be allocated never fails the writer: it waits (killably, retrying every 10 ms) until
//! memory is found or the snapshot is closed.
//!
//! Lock order: slot gate → segment mutex → heap growth mutex → { accounting mutex, slot
//! spinlock, `i_mmap_rwsem` → page table locks, page (folio) locks }. A writer holds
//! `mmap_lock` (or its VMA lock) and takes the slot spinlock or a page lock, never both
//! while waiting: it waits for *pending* with no page locked, so phase 1 may lock pages.
//! HEAP_DISCARD: slot gate → page locks → shmem's locks. A reader takes one page lock at a
//! time and copies to userspace only with no lock held (through a bounce page).

use crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL;
use crate::{
    accounting::PageCharge,
    heap::Heap,
    kernel_ext::{
        anon_file::{AnonFileOps, AnonFileType, DeviceMappings},
        mm::{
            fatal_signal_pending, BorrowedPage, LockedForWrite, MemCgroup, MkwriteRetry, PageLock,
            PageRef,
        },
        time::realtime_ns,
    },
    mapping,
    registry::Registry,
    segment::{Segment, MAY_READ},
    uapi::{
        self, dsu_list, dsu_read_var, dsu_snapshot, dsu_variable_info, ioctl, RecordArray,
        DSU_HEAP_MMAP_OFFSET, DSU_LIST_MAX, DSU_READ_ANY_FINGERPRINT, DSU_READ_TYPE_DESC,
    },
};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::{
    c_str,
    error::code::*,
    new_condvar, new_mutex, new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, CondVar, Mutex, SpinLock},
    uaccess::UserSlice,
};

const PAGE: u64 = PAGE_SIZE as u64;

/// An image page that no write has touched since the instant: the live page is the image.
const LIVE: usize = 0;
/// An image page that reads as zeros (a heap page punched out after the instant that was
/// a hole or never used).
const ZERO: usize = 1;
// Any other value is a copy: a page pointer whose reference the image owns.

/// The snapshot fd's file type (`init` at module load).
pub static SNAPSHOT_FILE: AnonFileType<Image> = AnonFileType::new();

enum SlotState {
    Idle,
    /// Phase 1a: the bulk zap runs; writers that fault go on, and are logged so that 1b
    /// removes their PTEs.
    Arming(ArmLog),
    /// Phase 1b: writers that fault wait.
    Pending,
    Taken(Arc<Image>),
}

/// Where a write fault during phase 1a was: what 1b must zap and check again.
#[derive(Clone, Copy)]
pub enum Armed {
    /// A version's or view's VMA.
    Segment {
        /// The page in the module's address space.
        pgoff: u64,
        /// The segment page (image page).
        index: u64,
    },
    /// A heap window.
    Heap {
        /// The heap page.
        h: u64,
    },
}

/// The write faults of phase 1a, up to the capacity allocated at SNAPSHOT (never grown in
/// the fault path): `overflowed` once one more came, and 1b then redoes all of phase 1.
struct ArmLog {
    faults: KVVec<Armed>,
    overflowed: bool,
}

impl ArmLog {
    fn note(&mut self, fault: Armed) {
        if self.faults.len() < self.faults.capacity() {
            // Within capacity: no allocation.
            let _ = self.faults.push(fault, GFP_NOWAIT);
        } else {
            self.overflowed = true;
        }
    }
}

/// Most write faults phase 1a logs (16 bytes each, charged to the snapshot's caller; a
/// `KVVec`, so that a large log needs no high-order allocation).
const ARM_LOG_MAX: usize = 65536;

/// A segment's snapshot state: at most one snapshot at a time.
#[pin_data]
pub struct SnapSlot {
    /// Whether the state is not idle: the writers' fast path reads only this (under the
    /// faulting page's lock).
    active: AtomicBool,
    #[pin]
    state: SpinLock<SlotState>,
    /// Signalled when the state changes.
    #[pin]
    changed: CondVar,
    /// Held by SNAPSHOT until the instant and by HEAP_DISCARD across its copy and punch.
    #[pin]
    gate: Mutex<()>,
}

impl SnapSlot {
    /// Ends phase 1a: from now writers that fault wait. Returns the faults 1a logged, or
    /// `None` if they overflowed the log.
    fn begin_pending(&self) -> Option<KVVec<Armed>> {
        let old = {
            let mut g = self.state.lock();
            core::mem::replace(&mut *g, SlotState::Pending)
        };
        self.changed.notify_all();
        match old {
            SlotState::Arming(log) if !log.overflowed => Some(log.faults),
            _ => None,
        }
    }

    /// During phase 1a: how many faults the log holds, `None` if it overflowed.
    fn logged(&self) -> Option<usize> {
        match &*self.state.lock() {
            SlotState::Arming(log) if !log.overflowed => Some(log.faults.len()),
            _ => None,
        }
    }

    /// During phase 1a: starts a new log (`fresh`, empty) and returns the faults logged so
    /// far, or `None` if they overflowed (the new log is not installed then).
    fn next_round(&self, fresh: KVVec<Armed>) -> Option<KVVec<Armed>> {
        let mut g = self.state.lock();
        match &mut *g {
            SlotState::Arming(log) if !log.overflowed => {
                Some(core::mem::replace(&mut log.faults, fresh))
            }
            _ => None,
        }
    }

    /// No snapshot.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            active: AtomicBool::new(false),
            state <- new_spinlock!(SlotState::Idle, "dsu_snapshot_state"),
            changed <- new_condvar!("dsu_snapshot_changed"),
            gate <- new_mutex!((), "dsu_snapshot_gate"),
        })
    }

    fn set(&self, state: SlotState) {
        let old = {
            let mut g = self.state.lock();
            self.active
                .store(!matches!(state, SlotState::Idle), Ordering::SeqCst);
            core::mem::replace(&mut *g, state)
        };
        self.changed.notify_all();
        // An image is dropped outside the spinlock.
        drop(old);
    }

    /// Called before the first write through a read-only PTE of `page`, which is image page
    /// `index` (`None`: a page that is in no image, such as a heap page past any image's
    /// size): waits out a pending snapshot, copies the page into a taken one, and returns
    /// it locked for the write. Never fails the writer: `Err` retries the fault.
    pub fn before_write(
        &self,
        page: BorrowedPage<'_>,
        index: impl Fn(&Image) -> Option<u64>,
        fault: Armed,
    ) -> Result<LockedForWrite, MkwriteRetry> {
        loop {
            let lock = page.lock();
            if !lock.in_file() {
                return Err(MkwriteRetry);
            }
            // Checked under the page lock: phase 1 locks heap pages once after setting it.
            if !self.active.load(Ordering::SeqCst) {
                return Ok(lock.hand_to_fault());
            }
            let image = {
                let mut g = self.state.lock();
                match &mut *g {
                    SlotState::Idle => None,
                    SlotState::Arming(log) => {
                        log.note(fault);
                        None
                    }
                    SlotState::Pending => {
                        drop(g);
                        drop(lock);
                        self.wait_not_pending();
                        if fatal_signal_pending() {
                            return Err(MkwriteRetry);
                        }
                        continue;
                    }
                    SlotState::Taken(image) => Some(image.clone()),
                }
            };
            let Some(image) = image else {
                return Ok(lock.hand_to_fault());
            };
            let Some(i) = index(&image) else {
                return Ok(lock.hand_to_fault());
            };
            if image.preserve(i, &lock).is_ok() {
                return Ok(lock.hand_to_fault());
            }
            // No memory for the copy: wait for some (or for the snapshot's end), then let
            // the access fault again. A killed writer dies on its way out.
            drop(lock);
            drop(image);
            let mut g = self.state.lock();
            let _ = self
                .changed
                .wait_interruptible_timeout(&mut g, kernel::time::msecs_to_jiffies(10));
            return Err(MkwriteRetry);
        }
    }

    fn wait_not_pending(&self) {
        let mut g = self.state.lock();
        while matches!(*g, SlotState::Pending) {
            self.changed.wait(&mut g);
        }
    }

    /// HEAP_DISCARD of heap pages `[first, first + count)`: with a snapshot taken, copies
    /// the image pages among them first (`ENOMEM` if a copy cannot be had: nothing is
    /// discarded), then runs `punch` with the gate held, so no snapshot starts meanwhile.
    pub fn before_discard(
        &self,
        heap: &Heap,
        first: u64,
        count: u64,
        punch: impl FnOnce() -> Result,
    ) -> Result {
        let _gate = self.gate.lock();
        let image = match &*self.state.lock() {
            SlotState::Taken(image) => Some(image.clone()),
            _ => None,
        };
        if let Some(image) = image {
            let end = first.saturating_add(count).min(image.heap_pages);
            for h in first..end {
                let i = image.pages + h;
                if image.state[i as usize].load(Ordering::Acquire) != LIVE {
                    continue;
                }
                match heap.file().lookup(h) {
                    None => image.state[i as usize].store(ZERO, Ordering::Release),
                    Some(page) => {
                        let lock = page.borrow().lock();
                        if !lock.is_uptodate() || !lock.in_file() {
                            if image.state[i as usize].load(Ordering::Acquire) == LIVE {
                                image.state[i as usize].store(ZERO, Ordering::Release);
                            }
                        } else {
                            image.preserve(i, &lock)?;
                        }
                    }
                }
            }
        }
        punch()
    }
}

/// A directory entry as the image has it.
struct ImageEntry {
    info: dsu_variable_info,
    type_desc: KVVec<u8>,
}

/// What a segment gives a snapshot under its mutex (`Segment::freeze_for_snapshot`).
pub struct Frozen {
    /// References to segment pages `0..pages` (`None`: a removed entry's).
    pub refs: KVVec<Option<PageRef>>,
    /// The directory, in creation order: each entry's record and type description.
    pub dir: KVVec<(dsu_variable_info, KVVec<u8>)>,
    /// READYs so far.
    pub generation: u64,
    /// Live pages (what the worst case of copies is).
    pub live_pages: usize,
    /// The heap, if any.
    pub heap: Option<Arc<Heap>>,
}

/// A taken snapshot: what the fd reads.
pub struct Image {
    seg: Arc<Segment>,
    heap: Option<Arc<Heap>>,
    /// Segment pages in the image.
    pages: u64,
    /// Heap pages in the image (`heap_size` rounded up).
    heap_pages: u64,
    heap_size: u64,
    refs: KVVec<Option<PageRef>>,
    /// Per image page (segment pages, then heap pages): `LIVE`, `ZERO` or a copy.
    state: KVVec<AtomicUsize>,
    dir: KVVec<ImageEntry>,
    /// The out fields of `dsu_snapshot`, ids as the caller saw them.
    info: dsu_snapshot,
    /// Where copies are charged.
    memcg: MemCgroup,
    /// The worst case, charged to the caller's uid until the image goes.
    _charge: PageCharge,
    ended: AtomicBool,
    /// `CLOCK_REALTIME` of the instant.
    taken_ns: AtomicU64,
}

impl Image {
    /// Copies image page `i` (the locked `lock`) unless done already. `ENOMEM` if no page.
    fn preserve(&self, i: u64, lock: &PageLock<'_>) -> Result {
        self.preserve_locked(i, lock.page())
    }

    /// Image page `i` of a heap page index `h`, if the image has it.
    fn heap_index(&self, h: u64) -> Option<u64> {
        (h < self.heap_pages).then(|| self.pages + h)
    }

    /// Ends the snapshot (the fd's release, or a SNAPSHOT that failed after the instant):
    /// writers are free again. The image stays readable for whoever still holds it.
    fn end(&self) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        let slot = &self.seg.snap;
        let mine = matches!(&*slot.state.lock(), SlotState::Taken(i) if core::ptr::eq(&**i, self));
        if mine {
            slot.set(SlotState::Idle);
        }
    }

    /// Copies image page `i`'s bytes `[skip, skip + n)` to `dst` (no lock held during the
    /// user copy: live pages go through `bounce`).
    fn copy_page_out(
        &self,
        i: u64,
        skip: usize,
        n: usize,
        dst: usize,
        bounce: &mut Option<PageRef>,
    ) -> Result {
        let v = self.state[i as usize].load(Ordering::Acquire);
        if v == ZERO {
            return write_zeros(dst, n);
        }
        if v != LIVE {
            // SAFETY: A copy's reference is owned by the image until it is dropped, which
            // `&self` outlives.
            let page =
                unsafe { BorrowedPage::from_raw(core::ptr::NonNull::new_unchecked(v as *mut _)) };
            return page.copy_to_user(dst, skip, n);
        }
        let heap_page;
        let live = if i < self.pages {
            self.refs[i as usize].as_ref().map(|p| p.borrow())
        } else {
            heap_page = self
                .heap
                .as_ref()
                .and_then(|h| h.file().lookup(i - self.pages));
            heap_page.as_ref().map(|p| p.borrow())
        };
        let Some(live) = live else {
            return write_zeros(dst, n);
        };
        if bounce.is_none() {
            *bounce = Some(self.memcg.alloc_page().ok_or(ENOMEM)?);
        }
        let b = bounce.as_ref().ok_or(ENOMEM)?;
        {
            let lock = live.lock();
            let v = self.state[i as usize].load(Ordering::Acquire);
            if v != LIVE {
                drop(lock);
                return self.copy_page_out(i, skip, n, dst, bounce);
            }
            if i >= self.pages && (!lock.in_file() || !lock.is_uptodate()) {
                drop(lock);
                return write_zeros(dst, n);
            }
            b.copy_from(lock.page());
        }
        b.borrow().copy_to_user(dst, skip, n)
    }

    /// Copies `len` image bytes from byte `at` of the range starting at image page `base`
    /// to `dst`.
    fn copy_out(&self, base: u64, at: u64, len: usize, mut dst: usize) -> Result {
        let mut bounce = None;
        let (mut at, mut left) = (at, len);
        while left > 0 {
            let skip = (at % PAGE) as usize;
            let n = left.min(PAGE_SIZE - skip);
            self.copy_page_out(base + at / PAGE, skip, n, dst, &mut bounce)?;
            dst += n;
            at += n as u64;
            left -= n;
        }
        Ok(())
    }

    /// The newest entry `name` (with `fingerprint` unless `any`).
    fn find(&self, name: &uapi::VarName, fingerprint: u64, any: bool) -> Option<&ImageEntry> {
        let c = name.to_c();
        self.dir
            .iter()
            .rev()
            .find(|e| e.info.name == c && (any || e.info.fingerprint == fingerprint))
    }
}

fn write_zeros(dst: usize, n: usize) -> Result {
    let zeros = [0u8; 256];
    let mut w = UserSlice::new(dst, n).writer();
    while !w.is_empty() {
        let k = w.len().min(zeros.len());
        w.write_slice(&zeros[..k])?;
    }
    Ok(())
}

impl Drop for Image {
    fn drop(&mut self) {
        for s in self.state.iter() {
            let v = s.load(Ordering::Acquire);
            if v != LIVE && v != ZERO {
                // SAFETY: A copy's pointer came from `PageRef::into_raw` in `preserve`, and
                // the image owns that reference.
                drop(unsafe { PageRef::from_raw(core::ptr::NonNull::new_unchecked(v as *mut _)) });
            }
        }
    }
}

impl AnonFileOps for Image {
    const MMAP_ERROR: Error = EINVAL;

    /// Segment page `i` at byte `i * PAGE_SIZE`, heap byte `x` at `DSU_HEAP_MMAP_OFFSET + x`.
    fn read(this: &Self, buf: usize, buf_len: usize, pos: &mut i64) -> Result<usize> {
        let at = u64::try_from(*pos).map_err(|_| EINVAL)?;
        let seg_end = this.pages * PAGE;
        let (base, off, end) = if at <= seg_end {
            (0, at, seg_end)
        } else if at >= DSU_HEAP_MMAP_OFFSET && at - DSU_HEAP_MMAP_OFFSET <= this.heap_size {
            (this.pages, at - DSU_HEAP_MMAP_OFFSET, this.heap_size)
        } else {
            return Err(EINVAL);
        };
        let len = (buf_len as u64).min(end - off) as usize;
        if len == 0 {
            return Ok(0);
        }
        this.copy_out(base, off, len, buf)?;
        *pos += len as i64;
        Ok(len)
    }

    fn ioctl(this: &Self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            ioctl::LIST_VARIABLES => list_variables(this, arg),
            ioctl::READ_VAR => read_var(this, arg),
            _ => Err(ENOTTY),
        }
    }

    fn release(this: &Self) {
        this.end();
    }
}

/// LIST_VARIABLES on the fd: the image's directory (`segment` must be all zero).
fn list_variables(image: &Image, arg: usize) -> Result<isize> {
    let mut l: dsu_list = uapi::read_struct(arg)?;
    if l.__pad != 0 || l.total != 0 || l.segment.iter().any(|c| *c != 0) {
        return Err(EINVAL);
    }
    if l.count > DSU_LIST_MAX {
        return Err(E2BIG);
    }
    let array = RecordArray::new::<dsu_variable_info>(l.records, l.record_size, l.count as usize)?;
    let start = l.start as usize;
    let mut n = 0;
    for e in image.dir.iter().skip(start).take(array.count()) {
        array.write(n, &e.info)?;
        n += 1;
    }
    l.count = n as u32;
    l.total = image.dir.len() as u32;
    uapi::write_struct(arg, &l)?;
    Ok(0)
}

/// READ_VAR on the fd: a variable's bytes (or type description) in the image.
fn read_var(image: &Image, arg: usize) -> Result<isize> {
    let mut r: dsu_read_var = uapi::read_struct(arg)?;
    if r.flags & !(DSU_READ_ANY_FINGERPRINT | DSU_READ_TYPE_DESC) != 0
        || r.var_size != 0
        || r.var_fingerprint != 0
        || r.segment.iter().any(|c| *c != 0)
    {
        return Err(EINVAL);
    }
    let name = uapi::variable_name(&r.name)?;
    let e = image
        .find(
            &name,
            r.fingerprint,
            r.flags & DSU_READ_ANY_FINGERPRINT != 0,
        )
        .ok_or(ENOENT)?;
    if r.flags & DSU_READ_TYPE_DESC != 0 {
        let desc = &e.type_desc[..];
        let start = usize::try_from(r.offset)
            .ok()
            .filter(|&o| o <= desc.len())
            .ok_or(EINVAL)?;
        let len = usize::try_from(r.length)
            .unwrap_or(usize::MAX)
            .min(desc.len() - start);
        uapi::writer(r.buf, len)?.write_slice(&desc[start..start + len])?;
        r.length = len as u64;
    } else {
        if r.offset > e.info.size {
            return Err(EINVAL);
        }
        let len = r.length.min(e.info.size - r.offset) as usize;
        let dst = uapi::user_range(r.buf, len)?;
        image.copy_out(e.info.first_page, r.offset, len, dst)?;
        r.length = len as u64;
    }
    r.var_size = e.info.size;
    r.var_fingerprint = e.info.fingerprint;
    uapi::write_struct(arg, &r)?;
    Ok(0)
}

/// Whether every out field of a SNAPSHOT argument is zero on input.
fn outputs_zero(s: &dsu_snapshot) -> bool {
    s.fd == 0
        && s.mode == 0
        && s.uid == 0
        && s.gid == 0
        && s.pages == 0
        && s.variables == 0
        && s.heap_base == 0
        && s.heap_reserve == 0
        && s.heap_size == 0
        && s.generation == 0
        && s.taken_ns == 0
}

/// DSU_IOC_SNAPSHOT (see the module docs and `uapi/dsu.h`).
pub fn snapshot(registry: &Registry, arg: usize) -> Result<isize> {
    let mut s: dsu_snapshot = uapi::read_struct(arg)?;
    if s.flags != 0 || !outputs_zero(&s) {
        return Err(EINVAL);
    }
    let seg = registry.get(&uapi::segment_name(&s.segment)?)?;
    seg.check_access(MAY_READ)?;
    let image = take(&seg, &mut s)?;
    // From here the snapshot is taken: any failure ends it (the file's release, or here).
    let fd = match SNAPSHOT_FILE.create(c_str!("[dsu-snapshot]"), image.clone()) {
        Ok(fd) => fd,
        Err(e) => {
            image.end();
            return Err(e);
        }
    };
    drop(image);
    s.fd = fd.fd();
    // On failure `fd` is dropped: the file's release ends the snapshot.
    uapi::write_struct(arg, &s)?;
    fd.install();
    Ok(0)
}

/// Phases 1 and 2: returns the published image.
fn take(seg: &Arc<Segment>, s: &mut dsu_snapshot) -> Result<Arc<Image>> {
    let slot = &seg.snap;
    let _gate = slot.gate.lock();
    if !matches!(*slot.state.lock(), SlotState::Idle) {
        return Err(EBUSY);
    }
    let memcg = MemCgroup::current();
    let attrs = seg.info();
    seg.freeze_for_snapshot(|frozen| {
        let Frozen {
            refs,
            dir,
            generation,
            live_pages,
            heap,
        } = frozen;
        // The heap's size cannot change until the instant.
        let size_lock = heap.as_ref().map(|h| h.hold_size());
        let heap_size = heap.as_ref().map_or(0, |h| h.size());
        let heap_pages = heap_size.div_ceil(PAGE);
        let pages = refs.len() as u64;
        let worst = live_pages
            .checked_add(usize::try_from(heap_pages).map_err(|_| ENOMEM)?)
            .ok_or(ENOMEM)?;
        // The worst case of copies, to the caller's uid: every limit is ENOMEM here.
        let charge =
            seg.accounting()
                .charge_pages(worst)
                .map_err(|e| if e == ENOSPC { ENOMEM } else { e })?;
        let total = usize::try_from(pages + heap_pages).map_err(|_| ENOMEM)?;
        let mut state = KVVec::with_capacity(total, GFP_ACCOUNT_MAYFAIL)?;
        for _ in 0..total {
            state.push(AtomicUsize::new(LIVE), GFP_ACCOUNT_MAYFAIL)?;
        }
        let mut entries = KVVec::with_capacity(dir.len(), GFP_ACCOUNT_MAYFAIL)?;
        for (info, type_desc) in dir {
            entries.push(ImageEntry { info, type_desc }, GFP_ACCOUNT_MAYFAIL)?;
        }
        let info = dsu_snapshot {
            size: s.size,
            flags: 0,
            fd: -1,
            mode: attrs.mode,
            uid: attrs.uid,
            gid: attrs.gid,
            pages,
            variables: entries.len() as u64,
            heap_base: heap.as_ref().map_or(0, |h| h.base),
            heap_reserve: heap.as_ref().map_or(0, |h| h.reserve),
            heap_size,
            generation,
            taken_ns: 0,
            segment: s.segment,
        };
        let image = Arc::new(
            Image {
                seg: seg.clone(),
                heap: heap.clone(),
                pages,
                heap_pages,
                heap_size,
                refs,
                state,
                dir: entries,
                info,
                memcg,
                _charge: charge,
                ended: AtomicBool::new(false),
                taken_ns: AtomicU64::new(0),
            },
            GFP_ACCOUNT_MAYFAIL,
        )?;

        // Phase 1a, with writers going on: a writer that faults now writes before the
        // instant; its fault is logged, and 1b removes its PTE.
        let log_len = usize::try_from(pages + heap_pages)
            .unwrap_or(ARM_LOG_MAX)
            .clamp(1, ARM_LOG_MAX);
        slot.set(SlotState::Arming(ArmLog {
            faults: KVVec::with_capacity(log_len, GFP_ACCOUNT_MAYFAIL)?,
            overflowed: false,
        }));
        let mut pinned = arm(seg, &image);
        // Rounds of 1a over the pages written during the previous one (shorter each time),
        // so that 1b has few left.
        for _ in 0..ARM_ROUNDS {
            let Ok(list) = pinned.as_mut() else { break };
            if slot.logged().is_none_or(|n| n <= ARM_SMALL) {
                break;
            }
            // No memory for another log: no more rounds (1b takes the one there is).
            let Ok(fresh) = KVVec::with_capacity(log_len, GFP_ACCOUNT_MAYFAIL) else {
                break;
            };
            let Some(faults) = slot.next_round(fresh) else {
                break;
            };
            let mut full = false;
            let swept = sweep(&image, &faults, |i, _| {
                if list.len() < list.capacity() {
                    // Within capacity: no allocation (the page is locked).
                    let _ = list.push(i, GFP_NOWAIT);
                } else {
                    full = true;
                }
                Ok(())
            });
            if swept.is_err() || full {
                pinned = Err(ENOMEM);
            }
        }
        // Phase 1b: writers that fault from now wait; the PTEs made during 1a go.
        let result = match (slot.begin_pending(), pinned) {
            (Some(faults), Ok(pinned)) => protect_logged(&image, &faults, &pinned),
            _ => protect(seg, &image),
        };
        if let Err(e) = result {
            slot.set(SlotState::Idle);
            return Err(e);
        }
        // Phase 2: the instant.
        let taken_ns = realtime_ns();
        image.taken_ns.store(taken_ns, Ordering::Relaxed);
        drop(size_lock);
        slot.set(SlotState::Taken(image.clone()));
        Ok(image)
    })
    .inspect(|image| {
        *s = image.info;
        s.taken_ns = image.taken_ns.load(Ordering::Relaxed);
        s.size = core::mem::size_of::<dsu_snapshot>() as u32;
    })
}

/// Most pages that phase 1a lists as pinned for DMA (more: 1b redoes all of phase 1).
const PINNED_MAX: usize = 256;

/// Phase 1a, writers going on: zaps every PTE of the image's pages; waits out the heap
/// faults that passed their `page_mkwrite` before arming (each holds its page locked until
/// its PTE is in) and zaps the PTEs they made; lists the pages that may be pinned for DMA
/// (image indexes), which 1b copies. `ENOMEM` (the list is full, or no memory): 1b then
/// does the whole of phase 1 again.
fn arm(seg: &Segment, image: &Image) -> Result<KVec<u64>> {
    let (first, count) = mapping::window(seg);
    DeviceMappings::zap(first, count);
    let mut pinned = KVec::with_capacity(PINNED_MAX, GFP_ACCOUNT_MAYFAIL)?;
    let mut full = false;
    let mut note = |i: u64| {
        if pinned.len() < pinned.capacity() {
            // Within capacity: no allocation (a page may be locked).
            let _ = pinned.push(i, GFP_NOWAIT);
        } else {
            full = true;
        }
    };
    for (i, r) in image.refs.iter().enumerate() {
        if r.as_ref().is_some_and(|p| p.borrow().maybe_dma_pinned()) {
            note(i as u64);
        }
    }
    if let Some(heap) = &image.heap {
        heap.file().zap(0, 0);
        if image.heap_pages > 0 {
            heap.file()
                .lock_barrier(0, image.heap_pages - 1, |h, _| note(image.pages + h));
            heap.file().zap(0, 0);
        }
    }
    if full {
        return Err(ENOMEM);
    }
    Ok(pinned)
}

/// Pre-copy rounds of phase 1a after its bulk: each takes the faults logged since the last
/// (fewer each time, the rounds being shorter) and sweeps them, writers going on.
const ARM_ROUNDS: usize = 3;
/// A log this short goes to 1b as it is.
const ARM_SMALL: usize = 64;

/// Phase 1b after a complete 1a: only the pages written during 1a (`faults`) may have
/// writable PTEs again, and only they or the pages 1a found pinned may be written without
/// one. Sweeps the former and copies those pinned for DMA, and the latter.
fn protect_logged(image: &Image, faults: &[Armed], pinned: &[u64]) -> Result {
    sweep(image, faults, |i, lock| image.preserve(i, lock))?;
    let heap = image.heap.as_ref();
    for &i in pinned {
        if i < image.pages {
            if let Some(Some(page)) = image.refs.get(i as usize) {
                let lock = page.borrow().lock();
                image.preserve(i, &lock)?;
            }
        } else if let Some(heap) = heap {
            if let Some(page) = heap.file().lookup(i - image.pages) {
                let lock = page.borrow().lock();
                image.preserve(i, &lock)?;
            }
        }
    }
    Ok(())
}

/// Zaps the PTEs of the pages of `faults`, waits out heap faults on them (a lock of each
/// heap page, as the barrier of 1a), zaps those again, and calls `pinned` with each that
/// may be pinned for DMA (image index, locked).
fn sweep(
    image: &Image,
    faults: &[Armed],
    mut pinned: impl FnMut(u64, &PageLock<'_>) -> Result,
) -> Result {
    let heap = image.heap.as_ref();
    for f in faults {
        match *f {
            Armed::Segment { pgoff, .. } => DeviceMappings::zap(pgoff, 1),
            Armed::Heap { h } => {
                if let Some(heap) = heap {
                    heap.file().zap(h, 1);
                }
            }
        }
    }
    for f in faults {
        match *f {
            Armed::Segment { index, .. } => {
                if let Some(Some(page)) = image.refs.get(index as usize) {
                    if page.borrow().maybe_dma_pinned() {
                        let lock = page.borrow().lock();
                        pinned(index, &lock)?;
                    }
                }
            }
            Armed::Heap { h } => {
                let (Some(heap), Some(i)) = (heap, image.heap_index(h)) else {
                    continue;
                };
                if let Some(page) = heap.file().lookup(h) {
                    // Waits for a fault that holds the page until its PTE is in.
                    let lock = page.borrow().lock();
                    if page.borrow().maybe_dma_pinned() {
                        pinned(i, &lock)?;
                    }
                }
                heap.file().zap(h, 1);
            }
        }
    }
    Ok(())
}

/// Phase 1b in full (when 1a's log overflowed): write-protects every mapping of the
/// image's pages (after 1a's bulk zap, only the PTEs made meanwhile are left to remove)
/// and copies those that may be written without a PTE (pinned for DMA).
fn protect(seg: &Segment, image: &Image) -> Result {
    let (first, count) = mapping::window(seg);
    DeviceMappings::zap(first, count);
    for (i, r) in image.refs.iter().enumerate() {
        if let Some(page) = r {
            if page.borrow().maybe_dma_pinned() {
                let lock = page.borrow().lock();
                image.preserve(i as u64, &lock)?;
            }
        }
    }
    if let Some(heap) = &image.heap {
        if image.heap_pages > 0 {
            heap.file().zap(0, 0);
            let mut failed = Ok(());
            heap.file()
                .lock_barrier(0, image.heap_pages - 1, |h, page| {
                    // The barrier holds the page locked; a second lock would deadlock, so the
                    // copy is made from the locked page directly.
                    if failed.is_ok() {
                        failed = image.preserve_locked(image.pages + h, page);
                    }
                });
            failed?;
            heap.file().zap(0, 0);
        }
    }
    Ok(())
}

impl Image {
    /// Copies image page `i`, the live `page`, which the caller holds locked, unless done
    /// already. `ENOMEM` if no page can be had.
    fn preserve_locked(&self, i: u64, page: BorrowedPage<'_>) -> Result {
        let slot = &self.state[i as usize];
        if slot.load(Ordering::Acquire) != LIVE {
            return Ok(());
        }
        let copy = self.memcg.alloc_page().ok_or(ENOMEM)?;
        copy.copy_from(page);
        // Only ever changed from LIVE under the live page's lock, which the caller holds.
        slot.store(copy.into_raw().as_ptr() as usize, Ordering::Release);
        Ok(())
    }
}

/// The heap window's `page_mkwrite` for segment `seg` (heap page `h`).
pub fn heap_before_write(
    seg: &Segment,
    page: BorrowedPage<'_>,
    h: u64,
) -> Result<LockedForWrite, MkwriteRetry> {
    seg.snap
        .before_write(page, |image| image.heap_index(h), Armed::Heap { h })
}

/// A version's or view's `page_mkwrite` (segment page `p`, at page `pgoff` of the module's
/// address space).
pub fn page_before_write(
    seg: &Segment,
    page: BorrowedPage<'_>,
    p: u64,
    pgoff: u64,
) -> Result<LockedForWrite, MkwriteRetry> {
    seg.snap.before_write(
        page,
        |image| (p < image.pages).then_some(p),
        Armed::Segment { pgoff, index: p },
    )
}
