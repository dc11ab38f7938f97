//! [`Attach`], [`attach`] and [`Version`]: the update step.

use crate::error::{Error, Result};
use crate::global::{DESC_MAGIC, DESC_ZEROED, GlobalDesc, PAGE_SIZE};
use crate::layout::{Placed, page_maps};
use crate::sys::{Create, Device, Event, EventKind};
use crate::typedesc::TypeDesc;
use dsu_uapi as u;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ATTACHED: AtomicBool = AtomicBool::new(false);

/// How a variable was found when attaching.
///
/// ```
/// assert_ne!(dsu::VarStatus::Added, dsu::VarStatus::Common);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarStatus {
    /// Already in the segment with the same type: shared with the other versions.
    Common,
    /// Created by this attach, holding the program's initial value.
    Added,
    /// Created by this attach from the old type's value through the migration transform.
    Migrated,
}

/// One of this program's globals after attach.
///
/// ```no_run
/// let v = dsu::attach("app", "1.0")?;
/// for var in v.variables() { println!("{} {:?}", var.name, var.status); }
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedVar {
    /// Its name.
    pub name: String,
    /// How it was found.
    pub status: VarStatus,
    /// Its first page in the segment.
    pub first_page: u64,
    /// Its pages.
    pub pages: u64,
}

/// Options of the update step; [`attach`](Attach::attach) does it.
///
/// ```no_run
/// let version = dsu::Attach::new("app", "2.0")
///     .must_exist()
///     .prefault(true)
///     .attach()?;
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Attach {
    segment: String,
    label: String,
    create: Create,
    mode: u32,
    owner: Option<u32>,
    prefault: bool,
    candidate: bool,
    device: String,
    heap: Option<usize>,
    restore_from: Option<std::path::PathBuf>,
}

impl Attach {
    /// Attach this program's globals to `segment` as a version labelled `label` (1 to 31
    /// printable ASCII bytes, e.g. `"2.1.0"`). By default the segment is created if
    /// missing, with mode 0600, and pages are mapped on fault.
    ///
    /// ```
    /// let a = dsu::Attach::new("app", "1.0");
    /// ```
    pub fn new(segment: impl Into<String>, label: impl Into<String>) -> Self {
        Attach {
            segment: segment.into(),
            label: label.into(),
            create: Create::IfMissing,
            mode: 0,
            owner: None,
            prefault: false,
            candidate: true,
            device: crate::sys::DEVICE_PATH.into(),
            heap: None,
            restore_from: None,
        }
    }

    /// Whether to create the segment ([`Create::IfMissing`], the default), require it to
    /// exist, or require this call to create it.
    ///
    /// ```
    /// let a = dsu::Attach::new("app", "1.0").create(dsu::sys::Create::MustCreate);
    /// ```
    pub fn create(mut self, create: Create) -> Self {
        self.create = create;
        self
    }

    /// Fail with [`Error::SegmentNotFound`] if the segment does not exist (an update that
    /// must find its predecessor's state).
    ///
    /// ```
    /// let a = dsu::Attach::new("app", "2.0").must_exist();
    /// ```
    pub fn must_exist(self) -> Self {
        self.create(Create::MustExist)
    }

    /// Fail with [`Error::SegmentExists`] if the segment exists (a first version that
    /// must start fresh).
    ///
    /// ```
    /// let a = dsu::Attach::new("app", "1.0").must_create();
    /// ```
    pub fn must_create(self) -> Self {
        self.create(Create::MustCreate)
    }

    /// Permission bits (at most 0o777) of a segment this call creates; 0 means 0600.
    ///
    /// ```
    /// let a = dsu::Attach::new("app", "1.0").mode(0o660);
    /// ```
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Share the segment with the user `uid` who owns it. By default a program only joins
    /// a segment that its own user owns: an existing segment of another owner is
    /// [`Error::OwnedByOther`], because a name another user created first would otherwise
    /// receive this program's globals. With this option, an existing segment must be
    /// owned by `uid` (a uid as this process sees it), and a missing one is created only if
    /// `uid` is this process's own (else [`Error::SegmentNotFound`]). The segment's mode
    /// must still grant this user read and write.
    ///
    /// ```
    /// // uid 1001 runs the service and created "app" with mode 0660.
    /// let a = dsu::Attach::new("app", "2.0").shared_with_owner(1001);
    /// ```
    pub fn shared_with_owner(mut self, uid: u32) -> Self {
        self.owner = Some(uid);
        self
    }

    /// Install every page-table entry at mmap (`DSU_BIND_PREFAULT`) instead of on first
    /// touch.
    ///
    /// ```
    /// let a = dsu::Attach::new("app", "1.0").prefault(true);
    /// ```
    pub fn prefault(mut self, yes: bool) -> Self {
        self.prefault = yes;
        self
    }

    /// Create the segment's shared heap if it has none, with a window of `reserve` bytes of
    /// address space (rounded up to pages; 0: [`DEFAULT_RESERVE`](crate::heap::DEFAULT_RESERVE),
    /// 1 GiB). Pages are only allocated as the heap grows. The window goes at a free,
    /// randomly chosen 1 GiB-aligned address, the same in every version afterwards.
    ///
    /// Without this option no heap is created; but a heap the segment has (an earlier
    /// version made it) is always mapped, whatever the options, since the globals may
    /// point into it. Either way the heap is mapped before the globals are resolved (so
    /// migrations can allocate in it) and is then [`dsu::heap::region()`](crate::heap::region())
    /// and [`Version::heap`]. If its range is in use in this process the attach fails with
    /// [`Error::HeapAddressTaken`], changing nothing in the segment.
    ///
    /// The mapped heap is also [installed](crate::heap::install) as the process's heap
    /// (formatted by the attach that creates it): [`SharedHeap`](crate::heap::SharedHeap),
    /// the [`heap`](crate::heap) containers and C's `dsu_malloc` allocate in it from then
    /// on. A process that installed another region before (a
    /// [`MemfdRegion`](crate::heap::MemfdRegion)) gets [`Error::Heap`] naming the segment.
    ///
    /// ```
    /// let a = dsu::Attach::new("app", "1.0").heap(256 << 20);
    /// ```
    pub fn heap(mut self, reserve: usize) -> Self {
        self.heap = Some(reserve);
        self
    }

    /// Make the version ready at once, at BIND, instead of a candidate that must call
    /// [`Version::ready`]. By default (`false`) the version binds as a *candidate*
    /// (`DSU_BIND_CANDIDATE`): older versions learn of it only when it calls
    /// [`Version::ready`], and if it exits or crashes before, they are told it aborted and
    /// the variables it added that nothing else uses are removed. Pass `true` for a program
    /// with no start-up that can fail, or one written before `ready` existed (the
    /// behaviour of earlier releases: older versions hand over as soon as it binds).
    ///
    /// ```
    /// let a = dsu::Attach::new("app", "1.0").ready_on_attach(true);
    /// ```
    pub fn ready_on_attach(mut self, yes: bool) -> Self {
        self.candidate = !yes;
        self
    }

    /// Restore the segment from the snapshot at `path` (written by
    /// [`Segment::snapshot`](crate::snapshot::Segment::snapshot) or `dsuctl save`) when it
    /// is missing, before attaching: a reboot or a module reload is then transparent to
    /// the program, which finds its globals *common*, as they were at the snapshot. If the
    /// segment exists, the file is not read. If the file does not exist either, the
    /// segment is created as usual (a first start). A file that exists but cannot be
    /// restored (truncated, corrupt, of a newer format, unreadable) is an error
    /// ([`Error::BadSnapshot`], [`Error::SnapshotIo`]), never a silent fresh start; nothing
    /// is created then. If another process creates the segment meanwhile, this one attaches
    /// to it. [`Version::restored_segment`] tells whether the restore happened.
    ///
    /// ```no_run
    /// let v = dsu::Attach::new("app", "1.0").restore_from("/var/lib/app/app.dsusnap").attach()?;
    /// if v.restored_segment() { println!("continuing from the snapshot"); }
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn restore_from(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.restore_from = Some(path.into());
        self
    }

    /// Use another device node than `/dev/dsu`.
    ///
    /// ```
    /// let a = dsu::Attach::new("app", "1.0").device("/dev/dsu");
    /// ```
    pub fn device(mut self, path: impl Into<String>) -> Self {
        self.device = path.into();
        self
    }

    /// Does the update step with every global of the program ([`GLOBALS`](static@crate::GLOBALS)):
    /// opens the device, attaches to the segment, resolves all globals in one batch
    /// (running migrations), builds the page map of the `dsu_globals` section, binds, and
    /// maps the segment's pages over the section with `MAP_FIXED`.
    ///
    /// Mapping replaces the bytes of every global at once. A reference into a global stays
    /// valid across that (globals are [`SharedCell`](crate::SharedCell): their bytes may
    /// change under a `&T`), but a [`MutexGuard`](crate::sync::MutexGuard) would not: its
    /// lock word and data would become another version's. So this safe `attach` refuses
    /// ([`Error::NotQuiescent`]) unless the process has **one thread** and that thread holds
    /// **no `MutexGuard`** (a `mem::forget`-ten one counts as held, and so does one leaked
    /// by a thread that has exited since): call it first thing in `main`. A program that must attach with other threads running uses
    /// [`attach_unchecked`](Self::attach_unchecked).
    ///
    /// Values stored before attach are only initialisers: the segment's values replace
    /// them. It succeeds once per process ([`Error::AlreadyAttached`] after that).
    ///
    /// On a conflict ([`Error::TypeChanged`], [`Error::SizeChanged`]) nothing is changed in
    /// the segment and the program's globals stay private.
    ///
    /// ```no_run
    /// let version = dsu::Attach::new("app", "1.0").mode(0o600).attach()?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn attach(self) -> Result<Version> {
        check_no_guards()?;
        match threads() {
            Ok(1) => {}
            Ok(n) => {
                return Err(Error::NotQuiescent(format!("the process has {n} threads")));
            }
            Err(e) => {
                return Err(Error::NotQuiescent(format!(
                    "its threads cannot be counted ({e}; is /proc mounted?)"
                )));
            }
        }
        // SAFETY: this is the process's only thread (and it cannot start another before
        // attach returns); attach_with checks the guards again, now that a thread that was
        // exiting during the first check has counted its guards: it refuses if this thread
        // or an exited one holds a guard, so then no MutexGuard exists.
        unsafe { self.attach_unchecked() }
    }

    /// [`attach`](Self::attach) without its checks, for programs that attach while other
    /// threads run.
    ///
    /// # Safety
    ///
    /// Like `fork` in a threaded program, this asks the caller to rule out what the type
    /// system cannot see. For the whole call:
    ///
    /// - no [`MutexGuard`](crate::sync::MutexGuard) of a mutex inside a global exists in
    ///   any thread, including guards leaked with `mem::forget` or `Box::leak` (its lock and
    ///   data would become another version's while it holds a `&mut`), and
    /// - no other thread calls `lock`/`try_lock` on a mutex inside a global.
    ///
    /// Other threads may use atomics in globals meanwhile; stores racing with the mapping
    /// are lost, which is a logic error, not undefined behaviour. This function still
    /// refuses if the calling thread holds a guard, or a thread that exited left one.
    ///
    /// ```no_run
    /// let worker = std::thread::spawn(|| { /* touches no global's Mutex */ });
    /// // SAFETY: the worker never locks a global's mutex; no guard exists.
    /// let version = unsafe { dsu::Attach::new("app", "1.0").attach_unchecked() }?;
    /// worker.join().unwrap();
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub unsafe fn attach_unchecked(self) -> Result<Version> {
        // SAFETY: GLOBALS are this program's descriptors; the rest is our caller's contract.
        unsafe { self.attach_with(&crate::GLOBALS) }
    }

    /// As [`attach_unchecked`](Attach::attach_unchecked), with the descriptors `descs`
    /// instead of this program's [`GLOBALS`](static@crate::GLOBALS). For `libdsu`'s shared
    /// library: the descriptors of C globals are in the executable's section, which the
    /// library's own `GLOBALS` does not see, so `libdsu.h` passes the executable's section
    /// bounds.
    ///
    /// # Safety
    ///
    /// [`attach_unchecked`](Attach::attach_unchecked)'s contract, and `descs` are all the
    /// descriptors of this program's dsu globals, each valid as [`GlobalDesc::new`] makes
    /// them (its `addr` is a global alone in its whole pages, which `attach` maps over).
    ///
    /// ```no_run
    /// // SAFETY: GLOBALS are this program's descriptors.
    /// let v = unsafe { dsu::Attach::new("app", "1.0").attach_with(&dsu::GLOBALS) }?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub unsafe fn attach_with(self, descs: &[GlobalDesc]) -> Result<Version> {
        check_no_guards()?;
        if ATTACHED.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyAttached);
        }
        let r = self.attach_descs(descs);
        if r.is_err() {
            ATTACHED.store(false, Ordering::Release);
        }
        r
    }

    /// [`restore_from`](Self::restore_from): restores `path` if the segment and the file
    /// exist; returns whether it did.
    fn restore_if_missing(&self, dev: &Device, path: &std::path::Path) -> Result<bool> {
        let exists = dev
            .list_segments()?
            .iter()
            .any(|s| s.name == self.segment && !s.destroyed);
        if exists {
            return Ok(false);
        }
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(Error::SnapshotIo {
                    what: "opening snapshot",
                    path: path.into(),
                    source,
                });
            }
            Ok(_) => {}
        }
        let options = crate::snapshot::RestoreOptions {
            device: Some(self.device.clone()),
            mode: (self.mode != 0).then_some(self.mode),
        };
        match crate::snapshot::restore_with(path, Some(&self.segment), &options) {
            Ok(_) => Ok(true),
            Err(Error::RestoreTargetExists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn attach_descs(self, descs: &[GlobalDesc]) -> Result<Version> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        if page != PAGE_SIZE {
            return Err(Error::PageSize(page));
        }
        crate::names::check_segment(&self.segment)?;
        crate::names::check_label(&self.label)?;
        check_descs(descs)?;

        let mut dev = Device::open_path(&self.device)?;
        let restored = match &self.restore_from {
            Some(path) => self.restore_if_missing(&dev, path)?,
            None => false,
        };
        let created = match self.owner {
            Some(owner) => dev.attach_shared_with(&self.segment, self.create, self.mode, owner)?,
            None => dev.attach(&self.segment, self.create, self.mode)?,
        };
        // The heap before any global: migrations may allocate in it.
        let heap = crate::heap::region::attach_heap(&dev, &self.segment, self.heap)?;
        if let Some(region) = heap {
            // The process's heap from now on: SharedHeap, the containers and dsu_malloc
            // allocate in the segment's heap (formatted here if this attach created it).
            crate::heap::install(region).map_err(|e| match e {
                Error::Heap(what) => Error::Heap(format!(
                    "installing the shared heap of segment \"{}\": {what}",
                    self.segment
                )),
                e => e,
            })?;
        }
        let mut version = Version {
            dev,
            segment: self.segment.clone(),
            label: self.label.clone(),
            id: None,
            created_segment: created,
            restored_segment: restored,
            vars: Vec::new(),
            ready: AtomicBool::new(true),
            newer: std::sync::Mutex::new(Vec::new()),
            heap,
            merges: std::sync::Mutex::new(Merges::default()),
        };
        if descs.is_empty() {
            version.dev.set_nonblocking(true)?;
            return Ok(version);
        }

        // Each global's type description, stored with an entry this attach creates.
        let type_descs: Vec<TypeDesc> = descs.iter().map(GlobalDesc::type_desc).collect();
        for (d, t) in descs.iter().zip(&type_descs) {
            t.check_fields()
                .map_err(|e| Error::BadDescriptor(format!("\"{}\": {e}", d.name())))?;
        }
        let type_texts: Vec<String> = type_descs.iter().map(TypeDesc::to_text).collect();

        // Build the batch; migrations read their old value first.
        let mut vars = Vec::with_capacity(descs.len());
        let mut buffers: Vec<Vec<std::mem::MaybeUninit<u8>>> = Vec::new();
        let mut migrated = vec![false; descs.len()];
        let mut merges = Vec::new();
        for (i, d) in descs.iter().enumerate() {
            let mut v = u::dsu_var {
                size: d.size,
                align: d.align,
                fingerprint: d.effective_fingerprint(),
                init: d.init as u64,
                type_desc: type_texts[i].as_ptr() as u64,
                type_desc_len: type_texts[i].len() as u32,
                ..Default::default()
            };
            crate::sys::set_var_name(&mut v, d.name())?;
            if let Some(m) = d.migration() {
                v.flags |= u::DSU_VAR_MIGRATE;
                if let Some(found) = migrate_init(&version.dev, &self.segment, d, m)? {
                    v.init = found.bytes.as_ptr() as u64;
                    buffers.push(found.bytes);
                    migrated[i] = true;
                    if let Some(merge) = found.from.merge {
                        merges.push((
                            i,
                            PendingMerge {
                                name: d.name().into(),
                                old_fingerprint: found.from.old_fingerprint,
                                old_type_name: found.from.old_type_name().into(),
                                at_attach: found.at_attach,
                                merge,
                            },
                        ));
                    }
                }
            }
            vars.push(v);
        }
        let type_names: Vec<&str> = descs.iter().map(|d| d.type_name()).collect();
        let resolved = version.dev.resolve(&mut vars, &type_names);
        drop(buffers);
        if let Err(mut e) = resolved {
            explain_conflict(&version.dev, &self.segment, &vars, &type_descs, &mut e);
            return Err(e);
        }

        let (mut placed, mut zeroed) = (Vec::with_capacity(descs.len()), Vec::new());
        for (i, (d, v)) in descs.iter().zip(&vars).enumerate() {
            if v.page_count != d.pages {
                return Err(Error::PageCount {
                    name: d.name().into(),
                    got: v.page_count,
                    want: d.pages,
                });
            }
            let here = Placed {
                name: d.name().into(),
                addr: d.addr as usize,
                pages: d.pages,
                first_page: v.first_page,
            };
            if d.flags & DESC_ZEROED != 0 {
                zeroed.push(here);
            } else {
                placed.push(here);
            }
            if v.status == u::DSU_VAR_ADDED && migrated[i] {
                // This attach made the new entry: its merge is ours to run. (Found common,
                // another version made it and runs the merge.)
                if let Some(at) = merges.iter().position(|(j, _)| *j == i) {
                    let (_, m) = merges.swap_remove(at);
                    version
                        .merges
                        .get_mut()
                        .unwrap_or_else(|e| e.into_inner())
                        .pending
                        .push(m);
                }
            }
            let status = match v.status {
                u::DSU_VAR_ADDED if migrated[i] => VarStatus::Migrated,
                u::DSU_VAR_ADDED => VarStatus::Added,
                _ => VarStatus::Common,
            };
            version.vars.push(AttachedVar {
                name: d.name().into(),
                status,
                first_page: v.first_page,
                pages: v.page_count,
            });
        }
        // The dsu_globals section, then each run of zeroed globals: the version's map is
        // their concatenation.
        let maps = page_maps(&placed, &zeroed).map_err(Error::Layout)?;
        let extents: Vec<_> = maps
            .iter()
            .flat_map(|m| m.extents.iter().copied())
            .collect();
        let options = crate::sys::BindOptions {
            prefault: self.prefault,
            candidate: self.candidate,
        };
        let id = version
            .dev
            .bind_extents_with(&self.label, &extents, options)?;
        version.id = Some(id);
        version.ready = AtomicBool::new(!self.candidate);
        // SAFETY: each map covers exactly the pages of globals (the dsu_globals section,
        // which holds nothing else, checked by page_maps; descriptors are unforgeable from
        // safe code; zeroed globals alone in their whole pages); mapping the segment over
        // them is the purpose. Every global is SharedCell, so references into them survive
        // the change of bytes, and no MutexGuard exists (attach checks it;
        // attach_unchecked's contract).
        unsafe { map_sections(&version.dev, &maps) }?;
        version.dev.set_nonblocking(true)?;
        if version.pending_migrations() > 0 {
            // The versions that may still write the old entries: every other one live now.
            // A version ending from here on queues an event on our handle.
            let others: Vec<u64> = version
                .dev
                .list_versions(&self.segment)?
                .iter()
                .map(|v| v.id)
                .filter(|&v| v != id)
                .collect();
            version
                .merges
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .waiting_on = others;
            version.finish_migrations()?;
        }
        Ok(version)
    }
}

/// Maps the bound version over `maps`, which concatenated are the version's map: one map
/// with one `MAP_FIXED` mmap; several (zeroed globals in `.bss`) by mapping the whole
/// version wherever the kernel chooses and moving each map's part to its place with
/// `mremap(MREMAP_FIXED)`, which replaces what was there as `MAP_FIXED` does.
///
/// # Safety
///
/// Every map covers only pages of this program's globals.
unsafe fn map_sections(dev: &Device, maps: &[crate::layout::PageMap]) -> Result<()> {
    let total: usize = maps.iter().map(|m| m.len()).sum();
    match maps {
        [] => return Ok(()),
        // SAFETY: the caller's contract.
        [one] => return unsafe { dev.mmap(Some(one.start), one.len()) }.map(|_| ()),
        _ => {}
    }
    // SAFETY: no fixed address: the kernel picks a free range.
    let whole = unsafe { dev.mmap(None, total) }?;
    let mut offset = 0;
    for m in maps {
        // SAFETY: moves `m.len()` bytes of our fresh mapping onto the globals' pages (the
        // caller's contract); the rest of the mapping is unaffected.
        let p = unsafe {
            libc::mremap(
                whole.add(offset).cast(),
                m.len(),
                m.len(),
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                m.start as *mut libc::c_void,
            )
        };
        if p == libc::MAP_FAILED {
            let source = std::io::Error::last_os_error();
            // SAFETY: unmaps what is left of our own mapping (its moved parts stay).
            unsafe { libc::munmap(whole.add(offset).cast(), total - offset) };
            return Err(Error::Io {
                what: "mremap of the segment's pages onto the zeroed globals",
                source,
            });
        }
        offset += m.len();
    }
    Ok(())
}

/// Fills in what differs in a conflict error, from the type description stored with the
/// conflicting entry (best effort: the error stands as it is if it cannot be read).
fn explain_conflict(
    dev: &Device,
    segment: &str,
    vars: &[u::dsu_var],
    ours: &[TypeDesc],
    e: &mut Error,
) {
    let (Error::TypeChanged { name, detail, .. } | Error::SizeChanged { name, detail, .. }) = e
    else {
        return;
    };
    let Some(i) = vars
        .iter()
        .position(|v| crate::names::read(&v.name) == *name)
    else {
        return;
    };
    let theirs = dev.read_type_desc(segment, name, Some(vars[i].found_fingerprint));
    let what: String = match theirs {
        Ok(Some(text)) => match TypeDesc::parse(&text) {
            Ok(theirs) => theirs.diff(&ours[i]).unwrap_or_else(|| {
                "their descriptions (fields' names, types, offsets and sizes) are equal, so a nested type changed".into()
            }),
            Err(why) => format!("the segment's type description is unreadable ({why})"),
        },
        Ok(None) => {
            "the segment's entry has no type description (its creator used an older dsu)".into()
        }
        Err(_) => return,
    };
    *detail = what.into();
}

/// Checks the descriptors: magic, names, duplicates.
fn check_descs(descs: &[GlobalDesc]) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for d in descs {
        if d.magic != DESC_MAGIC {
            return Err(Error::BadDescriptor(format!(
                "magic {:#x} != {DESC_MAGIC:#x} at {:p}",
                d.magic, d
            )));
        }
        if d.name.is_null() || d.addr.is_null() || d.init.is_null() {
            return Err(Error::BadDescriptor(format!(
                "null pointer in the descriptor at {d:p}"
            )));
        }
        crate::names::check_variable(d.name())?;
        if d.size == 0 || d.pages == 0 || d.size > d.pages * PAGE_SIZE as u64 {
            return Err(Error::BadDescriptor(format!(
                "\"{}\": size {} in {} pages",
                d.name(),
                d.size,
                d.pages
            )));
        }
        if !names.insert(d.name()) {
            return Err(Error::DuplicateName(d.name().into()));
        }
    }
    Ok(())
}

/// A migrated global's new value, made by this attach from the old entry.
struct MigratedInit<'a> {
    /// The new value's bytes (the transform's result).
    bytes: Vec<std::mem::MaybeUninit<u8>>,
    /// The migration whose older type was found.
    from: &'a crate::Migration,
    /// The old value the transform was given, for the merge.
    at_attach: Vec<u8>,
}

/// The initial value of a migrated global: `None` if its entry already exists (it is
/// shared as is) or the segment has no entry of that name (the program's initialiser is
/// used); else the transform applied to a snapshot of the newest entry of that name, with
/// the migration whose older type that entry has ([`choose_migration`]).
fn migrate_init<'a>(
    dev: &Device,
    segment: &str,
    d: &GlobalDesc,
    m: &'a crate::Migration,
) -> Result<Option<MigratedInit<'a>>> {
    let mut probe = [0u8; 1];
    match dev.read_var(
        segment,
        d.name(),
        Some(d.effective_fingerprint()),
        0,
        &mut probe,
    ) {
        Ok(r) if r.var_size == d.size => return Ok(None),
        Ok(_) | Err(Error::VariableNotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    // The newest entry of that name, whatever its type.
    let newest = match dev.read_var(segment, d.name(), None, 0, &mut probe) {
        Ok(r) => r,
        Err(Error::VariableNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(from) = choose_migration(m, newest.var_fingerprint, newest.var_size) else {
        let found = match dev.read_type_desc(segment, d.name(), Some(newest.var_fingerprint)) {
            Ok(Some(text)) => match TypeDesc::parse(&text) {
                Ok(t) => format!("{} ({} bytes)", t.name, t.size),
                Err(_) => format!(
                    "of an unreadable type description ({} bytes)",
                    newest.var_size
                ),
            },
            _ => format!("of an undescribed type ({} bytes)", newest.var_size),
        };
        return Err(Error::MigrationSourceUnknown {
            segment: segment.into(),
            name: d.name().into(),
            found: found.into(),
            found_fingerprint: newest.var_fingerprint,
            type_name: d.type_name().into(),
            accepted: accepted_types(m).into(),
        });
    };
    if from.is_in_place() {
        return migrate_in_place(dev, segment, d, from);
    }
    let mut old = vec![0u8; from.old_size as usize];
    match dev.read_var(segment, d.name(), Some(from.old_fingerprint), 0, &mut old) {
        Ok(r) if r.var_size == from.old_size && r.copied == from.old_size => {
            // MaybeUninit: the transform's typed write leaves padding bytes uninitialised;
            // only the kernel reads this buffer.
            let mut new = vec![std::mem::MaybeUninit::new(0u8); d.size as usize];
            (from.transform)(old.as_ptr(), new.as_mut_ptr().cast());
            Ok(Some(MigratedInit {
                bytes: new,
                from,
                at_attach: old,
            }))
        }
        // Gone between the two reads (collected): as if never there.
        Ok(_) | Err(Error::VariableNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The initial value of a global migrated in place
/// ([`Migration::in_place`](crate::Migration::in_place)): the transform reads the old
/// entry's live value in a view of its pages (mapped for the process's life, so the
/// transform's `&'static Old` stays valid), so an old value that owns shared-heap blocks is
/// read where it is, under its own lock, and never copied. `None` if the entry is gone
/// (collected) meanwhile.
fn migrate_in_place<'a>(
    dev: &Device,
    segment: &str,
    d: &GlobalDesc,
    from: &'a crate::Migration,
) -> Result<Option<MigratedInit<'a>>> {
    let Some(entry) = dev.list_variables(segment)?.into_iter().find(|v| {
        v.name == d.name() && v.fingerprint == from.old_fingerprint && v.size == from.old_size
    }) else {
        return Ok(None);
    };
    let len = entry.page_count as usize * PAGE_SIZE;
    if entry.page_count == 0 || (len as u64) < from.old_size {
        return Err(Error::BadDescriptor(format!(
            "\"{}\": the segment's entry has {} pages for {} bytes",
            d.name(),
            entry.page_count,
            from.old_size
        )));
    }
    // SAFETY: a new mapping where the kernel chooses, never unmapped; it is only read
    // through the transform's `&Old` (Old is SharedCell: Migration::in_place's contract).
    let view = unsafe { dev.mmap_view(entry.first_page, entry.page_count as usize) }?;
    let mut new = vec![std::mem::MaybeUninit::new(0u8); d.size as usize];
    // The variable starts at its first page, so `view` is aligned for any Old.
    (from.transform)(view, new.as_mut_ptr().cast());
    Ok(Some(MigratedInit {
        bytes: new,
        from,
        at_attach: Vec::new(),
    }))
}

/// The migration of `chain` whose older type has `fingerprint` and `size`, if any.
fn choose_migration(
    chain: &crate::Migration,
    fingerprint: u64,
    size: u64,
) -> Option<&crate::Migration> {
    chain
        .chain()
        .find(|m| m.old_fingerprint == fingerprint && m.old_size == size)
}

/// The older types of a migration chain, for messages: "A", "A or B", "A, B or C".
fn accepted_types(chain: &crate::Migration) -> String {
    let names: Vec<&str> = chain.chain().map(|m| m.old_type_name()).collect();
    match names.split_last() {
        Some((last, [])) => (*last).into(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A merge this version runs once the old entry has no user left: the migration's
/// `merge(at_attach, final)`.
#[derive(Debug)]
struct PendingMerge {
    name: String,
    old_fingerprint: u64,
    old_type_name: String,
    at_attach: Vec<u8>,
    merge: fn(*const u8, *const u8),
}

/// The merges a version still owes, and the versions they wait for.
#[derive(Debug, Default)]
struct Merges {
    pending: Vec<PendingMerge>,
    /// Ids of the versions that were live when this one bound: they may map the old
    /// entries. The merges run when none of them is live.
    waiting_on: Vec<u64>,
}

/// Attaches this program's globals to `segment` as version `label`, creating the segment
/// if missing: `Attach::new(segment, label).attach()`. Call it first thing in `main`,
/// before starting threads: see [`Attach::attach`].
///
/// ```no_run
/// use std::sync::atomic::{AtomicU64, Ordering};
/// dsu::global! {
///     static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// }
/// fn main() -> Result<(), dsu::Error> {
///     let _version = dsu::attach("server", "1.0")?;
///     REQUESTS.fetch_add(1, Ordering::Relaxed); // now in the shared segment
///     Ok(())
/// }
/// ```
pub fn attach(segment: &str, label: &str) -> Result<Version> {
    Attach::new(segment, label).attach()
}

/// This process as a version of a segment: returned by [`attach`].
///
/// It owns the `/dev/dsu` handle. Dropping it closes the handle but does **not** unmap
/// the globals: they stay shared until the process exits. Keep it to learn about newer
/// versions ([`newer_version`](Self::newer_version), [`wait_for_newer`](Self::wait_for_newer),
/// or poll [`as_fd`](Self::as_fd) for `POLLIN` in an event loop).
///
/// ```no_run
/// let version = dsu::attach("server", "1.0")?;
/// version.ready()?; // started: older versions may retire
/// loop {
///     // ... serve ...
///     if let Some(newer) = version.wait_for_newer(Some(std::time::Duration::from_secs(1)))? {
///         println!("version {} is up: draining", newer.label);
///         break;
///     }
/// }
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Debug)]
pub struct Version {
    dev: Device,
    segment: String,
    label: String,
    id: Option<u64>,
    created_segment: bool,
    restored_segment: bool,
    vars: Vec<AttachedVar>,
    ready: AtomicBool,
    /// READY events of newer versions that are still live.
    newer: std::sync::Mutex<Vec<Event>>,
    heap: Option<&'static crate::heap::SegmentHeap>,
    merges: std::sync::Mutex<Merges>,
}

impl Version {
    /// The segment's name.
    ///
    /// ```no_run
    /// assert_eq!(dsu::attach("app", "1")?.segment(), "app");
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn segment(&self) -> &str {
        &self.segment
    }

    /// This version's label.
    ///
    /// ```no_run
    /// assert_eq!(dsu::attach("app", "1")?.label(), "1");
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The version id the kernel assigned, `None` for a program without globals (it is
    /// attached, not bound).
    ///
    /// ```no_run
    /// println!("{:?}", dsu::attach("app", "1")?.id());
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    /// Whether this attach created the segment (the first version).
    ///
    /// ```no_run
    /// if dsu::attach("app", "1")?.created_segment() { println!("fresh start"); }
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn created_segment(&self) -> bool {
        self.created_segment
    }

    /// Whether this attach restored the segment from the snapshot of
    /// [`Attach::restore_from`] (it was missing and the file existed).
    ///
    /// ```no_run
    /// let v = dsu::Attach::new("app", "1").restore_from("/var/lib/app/app.dsusnap").attach()?;
    /// println!("restored: {}", v.restored_segment());
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn restored_segment(&self) -> bool {
        self.restored_segment
    }

    /// This program's globals and how each was found.
    ///
    /// ```no_run
    /// let v = dsu::attach("app", "1")?;
    /// let added = v.variables().iter().filter(|x| x.status == dsu::VarStatus::Added).count();
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn variables(&self) -> &[AttachedVar] {
        &self.vars
    }

    /// The segment's shared heap, mapped at the same address in every version: `None` if
    /// the segment has none (see [`Attach::heap`]). It is also
    /// [`dsu::heap::region()`](crate::heap::region()), and stays mapped for the process's life.
    ///
    /// ```no_run
    /// use dsu::heap::HeapRegion;
    /// let v = dsu::Attach::new("app", "1").heap(0).attach()?;
    /// println!("heap at {:p}", v.heap().unwrap().base());
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn heap(&self) -> Option<&'static crate::heap::SegmentHeap> {
        self.heap
    }

    /// The `/dev/dsu` handle, for queries such as [`Device::list_versions`].
    ///
    /// ```no_run
    /// let v = dsu::attach("app", "1")?;
    /// let others = v.device().list_versions("app")?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// The pollable fd: `POLLIN` when events (a version bound, became ready, aborted or
    /// ended) are queued. It is non-blocking.
    ///
    /// ```no_run
    /// use std::os::fd::AsRawFd;
    /// let v = dsu::attach("app", "1")?;
    /// println!("poll fd {}", v.as_fd().as_raw_fd());
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }

    /// Commits this version: it stops being a candidate, and older versions are told
    /// ([`EventKind::Ready`]) that they may hand over and retire. Call it once start-up
    /// has succeeded (listening sockets open, configuration loaded): until then a crash
    /// leaves the older versions serving, and the variables this version added that
    /// nothing else uses are removed. Idempotent; a version attached with
    /// [`Attach::ready_on_attach`], or without globals, is ready already.
    ///
    /// ```no_run
    /// let version = dsu::attach("app", "2.0")?;
    /// // ... load configuration, bind sockets: a failure here leaves version 1 serving ...
    /// version.ready()?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn ready(&self) -> Result<()> {
        if self.id.is_none() || self.is_ready() {
            return Ok(());
        }
        self.dev.ready()?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether this version is ready (see [`ready`](Self::ready)); `false` for a candidate.
    ///
    /// ```no_run
    /// let v = dsu::Attach::new("app", "1").ready_on_attach(true).attach()?;
    /// assert!(v.is_ready());
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Reclaims the segment's garbage (`DSU_IOC_GC`): variables no live version declares
    /// and no ready version used for `options.min_age` generations, such as globals an
    /// update retired or the old side of a migration. Call it after [`ready`](Self::ready)
    /// succeeded, when the old version has ended, or run `dsuctl gc`. A variable any
    /// version still maps is never reclaimed.
    ///
    /// ```no_run
    /// let v = dsu::attach("app", "3.0")?;
    /// v.ready()?;
    /// let report = v.collect_garbage(dsu::sys::GcOptions::default())?;
    /// println!("reclaimed {} variables, {} pages", report.total, report.pages);
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn collect_garbage(&self, options: crate::sys::GcOptions) -> Result<crate::sys::GcReport> {
        self.dev.gc(&self.segment, options)
    }

    /// Reads the queued events without blocking (empty if none), keeping track of the
    /// newer versions that are ready and still live for
    /// [`newer_version`](Self::newer_version): a [`EventKind::Ready`] adds one, an
    /// [`EventKind::Aborted`] or [`EventKind::Ended`] removes it. If the kernel dropped
    /// events (a full queue), the set is rebuilt from LIST_VERSIONS.
    ///
    /// ```no_run
    /// let v = dsu::attach("app", "1")?;
    /// for e in v.events()? { println!("{:?} {}", e.kind, e.label); }
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn events(&self) -> Result<Vec<Event>> {
        let events = self.dev.read_events()?;
        let mut newer = self.newer.lock().unwrap_or_else(|e| e.into_inner());
        if !track_newer(&mut newer, self.id, &events) {
            // Some were dropped: what is live and ready now is what LIST_VERSIONS says.
            let versions = self.dev.list_versions(&self.segment)?;
            *newer = live_newer(self.id, versions);
        }
        drop(newer);
        if events
            .iter()
            .any(|e| e.kind == EventKind::Ended || e.lost > 0)
        {
            self.finish_migrations()?;
        }
        Ok(events)
    }

    /// Migrations with a merge step whose merge has not run yet (see
    /// [`finish_migrations`](Self::finish_migrations)).
    ///
    /// ```no_run
    /// let v = dsu::attach("app", "2")?;
    /// println!("{} merges pending", v.pending_migrations());
    /// # Ok::<(), dsu::Error>(())
    /// ```
    #[must_use]
    pub fn pending_migrations(&self) -> usize {
        self.merges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .len()
    }

    /// Runs the merge steps of the migrations this version made, once no older version
    /// can write their old entries any more, and returns how many are still pending.
    ///
    /// A global declared `migrate(from = Old, with = upgrade, merge = catch_up)` that this
    /// attach created from an `Old` entry starts as `upgrade(at_attach)`, a snapshot; the
    /// versions that were live at this version's bind keep writing the old entry. When
    /// all of them have ended, this reads the old entry's final value and calls
    /// `catch_up(&GLOBAL, &at_attach, &final)`, which adds what they wrote meanwhile (for
    /// a counter: `new.hits.fetch_add(final.hits - at_attach.hits)`). So no write of the
    /// old version is lost. Each merge runs once, in this process, on the thread that
    /// calls this (or [`events`](Self::events), [`newer_version`](Self::newer_version),
    /// [`wait_for_newer`](Self::wait_for_newer), [`wait_for_migrations`](Self::wait_for_migrations),
    /// which call it when a version ends); `attach` calls it once, so with no older version
    /// live the merge runs at attach. If this process exits first, the merge never runs.
    ///
    /// Errors: [`Error::MergeSourceGone`] if an old entry vanished (the merge is dropped),
    /// or the device's errors.
    ///
    /// ```no_run
    /// let v = dsu::attach("app", "2")?;
    /// while v.finish_migrations()? > 0 {
    ///     std::thread::sleep(std::time::Duration::from_millis(100));
    /// }
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn finish_migrations(&self) -> Result<usize> {
        let due = {
            let mut m = self.merges.lock().unwrap_or_else(|e| e.into_inner());
            if m.pending.is_empty() {
                return Ok(0);
            }
            let live = self.dev.list_versions(&self.segment)?;
            m.waiting_on.retain(|id| live.iter().any(|v| v.id == *id));
            if !m.waiting_on.is_empty() {
                return Ok(m.pending.len());
            }
            std::mem::take(&mut m.pending)
        };
        // Outside the lock: a merge is user code.
        let mut first_error = None;
        for p in due {
            let mut last = vec![0u8; p.at_attach.len()];
            match self.dev.read_var(
                &self.segment,
                &p.name,
                Some(p.old_fingerprint),
                0,
                &mut last,
            ) {
                Ok(r) if r.copied == last.len() as u64 => {
                    (p.merge)(p.at_attach.as_ptr(), last.as_ptr())
                }
                Ok(_) | Err(Error::VariableNotFound { .. }) => {
                    first_error.get_or_insert(Error::MergeSourceGone {
                        segment: self.segment.clone(),
                        name: p.name.clone(),
                        type_name: p.old_type_name.clone(),
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(0), Err)
    }

    /// Waits until [`finish_migrations`](Self::finish_migrations) has run every merge
    /// (`true`) or the timeout passes (`false`; `None`: no timeout). Events read
    /// meanwhile are remembered for [`newer_version`](Self::newer_version).
    ///
    /// ```no_run
    /// let v = dsu::attach("app", "2")?;
    /// if !v.wait_for_migrations(Some(std::time::Duration::from_secs(30)))? {
    ///     eprintln!("the old version still runs");
    /// }
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn wait_for_migrations(&self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.events()?;
            if self.finish_migrations()? == 0 {
                return Ok(true);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(false);
            }
            self.dev.poll(left)?;
        }
    }

    /// Whether a newer version is ready and still live (non-blocking): the newest such
    /// version's READY event, or `None`. A newer version that only bound (a candidate
    /// still starting), or that aborted or ended, is not reported. Pending events are
    /// consumed.
    ///
    /// ```no_run
    /// let v = dsu::attach("app", "1")?;
    /// if v.newer_version()?.is_some() { /* drain and exit */ }
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn newer_version(&self) -> Result<Option<Event>> {
        self.events()?;
        let newer = self.newer.lock().unwrap_or_else(|e| e.into_inner());
        Ok(newer.iter().max_by_key(|e| e.version_id).cloned())
    }

    /// Waits until a newer version is ready (see [`newer_version`](Self::newer_version))
    /// or the timeout passes (`None`: no timeout). Returns its READY event, or `None` on
    /// timeout.
    ///
    /// ```no_run
    /// let v = dsu::attach("app", "1")?;
    /// let newer = v.wait_for_newer(Some(std::time::Duration::from_millis(100)))?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn wait_for_newer(&self, timeout: Option<Duration>) -> Result<Option<Event>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(e) = self.newer_version()? {
                return Ok(Some(e));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            self.dev.poll(left)?;
        }
    }
}

impl AsFd for Version {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }
}

/// Updates `newer`, the READY events of live versions newer than `own` (any, for `None`),
/// with `events`: READY adds, ABORTED and ENDED remove. Returns `false` if the kernel
/// dropped events (then `newer` must be rebuilt from LIST_VERSIONS: [`live_newer`]).
fn track_newer(newer: &mut Vec<Event>, own: Option<u64>, events: &[Event]) -> bool {
    if events.iter().any(|e| e.lost > 0) {
        return false;
    }
    for e in events {
        match e.kind {
            EventKind::Ready if own.is_none_or(|own| e.version_id > own) => {
                newer.retain(|n| n.version_id != e.version_id);
                newer.push(e.clone());
            }
            EventKind::Aborted | EventKind::Ended => newer.retain(|n| n.version_id != e.version_id),
            _ => {}
        }
    }
    true
}

/// The ready versions newer than `own` among `versions` (LIST_VERSIONS), as READY events.
fn live_newer(own: Option<u64>, versions: Vec<crate::sys::VersionInfo>) -> Vec<Event> {
    versions
        .into_iter()
        .filter(|v| v.ready && own.is_none_or(|own| v.id > own))
        .map(|v| Event {
            kind: EventKind::Ready,
            version_id: v.id,
            pid: v.pid,
            lost: 0,
            time_ns: v.bound_ns,
            label: v.label,
        })
        .collect()
}

/// Threads of this process, from `/proc/self/stat` (field 20, `num_threads`).
/// Refuses while the calling thread, or a thread of this process that exited, holds a
/// [`MutexGuard`](crate::sync::MutexGuard) (forgotten or leaked ones included).
fn check_no_guards() -> Result<()> {
    match crate::sync::guards_held() {
        (0, 0) => Ok(()),
        (here, 0) => Err(Error::NotQuiescent(format!(
            "this thread holds {here} dsu::sync::MutexGuard(s)"
        ))),
        (here, exited) => Err(Error::NotQuiescent(format!(
            "this thread holds {here} dsu::sync::MutexGuard(s) and threads that exited left \
             {exited} locked (guards leaked with mem::forget or Box::leak)"
        ))),
    }
}

fn threads() -> std::io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(17))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other("unexpected /proc/self/stat format"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_fail_before_any_ioctl() {
        let e = Attach::new("bad/name", "1")
            .device("/nonexistent")
            .attach_descs(&[])
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidName {
                    what: "segment name",
                    ..
                }
            ),
            "{e}"
        );
        let e = Attach::new("ok", "")
            .device("/nonexistent")
            .attach_descs(&[])
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidName {
                    what: "version label",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn missing_device_says_load_the_module() {
        let e = Attach::new("ok", "1")
            .device("/nonexistent/dsu")
            .attach_descs(&[])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "dsu kernel module not loaded: /dev/dsu is missing (load it with insmod dsu.ko)"
        );
    }

    /// Attach replaces the globals' bytes: the safe attach refuses while another thread
    /// could hold a guard or reference into them.
    #[test]
    fn safe_attach_refuses_other_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let e = Attach::new("ok", "1")
            .device("/nonexistent/dsu")
            .attach()
            .unwrap_err();
        assert!(matches!(e, Error::NotQuiescent(_)), "{e}");
        assert!(e.to_string().contains("threads"), "{e}");
        drop(tx);
        let _ = other.join();
    }

    /// A guard alive (or forgotten) in the calling thread makes both attaches refuse.
    #[test]
    fn attach_refuses_while_a_guard_is_held() {
        static LOCK: crate::sync::Mutex<u32> = crate::sync::Mutex::new(0);
        std::thread::spawn(|| {
            let g = LOCK.lock().unwrap();
            let e = Attach::new("ok", "1")
                .device("/nonexistent/dsu")
                .attach()
                .unwrap_err();
            assert!(
                e.to_string().contains("holds 1 dsu::sync::MutexGuard"),
                "{e}"
            );
            std::mem::forget(g);
            // SAFETY: only the guard check runs: it refuses before anything is mapped.
            let e = unsafe {
                Attach::new("ok", "1")
                    .device("/nonexistent/dsu")
                    .attach_unchecked()
            }
            .unwrap_err();
            assert!(matches!(e, Error::NotQuiescent(_)), "{e}");
        })
        .join()
        .unwrap();
    }

    /// A guard leaked by a thread that exited still holds its lock: attach refuses, though
    /// the calling thread holds none (the count is per process).
    #[test]
    fn attach_refuses_while_an_exited_thread_left_a_guard() {
        static LOCK: crate::sync::Mutex<u32> = crate::sync::Mutex::new(0);
        std::thread::spawn(|| std::mem::forget(LOCK.lock().unwrap()))
            .join()
            .unwrap();
        // SAFETY: only the guard check runs: it refuses before anything is mapped.
        let e = unsafe {
            Attach::new("ok", "1")
                .device("/nonexistent/dsu")
                .attach_unchecked()
        }
        .unwrap_err();
        assert!(matches!(e, Error::NotQuiescent(_)), "{e}");
    }

    /// Several `migrate(from = ...)`: the one whose older type the segment's entry has is
    /// chosen; a type none declares (a skipped generation) is no choice, and the message
    /// names every accepted type.
    #[test]
    fn migration_is_chosen_by_the_found_type() {
        use crate::Shared;
        use std::sync::atomic::{AtomicU32, AtomicU64};
        #[derive(crate::Shared)]
        #[repr(C)]
        struct V1 {
            hits: AtomicU32,
        }
        #[derive(crate::Shared)]
        #[repr(C)]
        struct V2 {
            hits: AtomicU64,
        }
        #[derive(crate::Shared)]
        #[repr(C)]
        struct V3 {
            hits: AtomicU64,
            misses: AtomicU64,
        }
        #[derive(crate::Shared)]
        #[repr(C)]
        struct V0 {
            hits: AtomicU64,
        }
        fn from_v2(o: V2) -> V3 {
            V3 {
                hits: o.hits,
                misses: AtomicU64::new(2),
            }
        }
        fn from_v1(o: V1) -> V3 {
            V3 {
                hits: AtomicU64::new(o.hits.into_inner().into()),
                misses: AtomicU64::new(1),
            }
        }
        fn merge_v1(new: &V3, at: &V1, last: &V1) {
            use std::sync::atomic::Ordering::Relaxed;
            let d = last.hits.load(Relaxed) - at.hits.load(Relaxed);
            new.hits.fetch_add(d.into(), Relaxed);
        }
        crate::global! {
            #[dsu(name = "test::CHOOSE",
                  migrate(from = V2, with = from_v2),
                  migrate(from = V1, with = from_v1, merge = merge_v1))]
            static CHOOSE: V3 = V3 { hits: AtomicU64::new(0), misses: AtomicU64::new(0) };
        }
        let d = crate::GLOBALS
            .iter()
            .find(|d| d.name() == "test::CHOOSE")
            .unwrap();
        let m = d.migration().unwrap();
        let v2 = choose_migration(m, V2::FINGERPRINT, 8).unwrap();
        assert_eq!((v2.old_type_name(), v2.has_merge()), ("V2", false));
        let v1 = choose_migration(m, V1::FINGERPRINT, 4).unwrap();
        assert_eq!((v1.old_type_name(), v1.has_merge()), ("V1", true));
        // V0 has V2's size but another fingerprint (its name): a skipped generation.
        assert!(choose_migration(m, V0::FINGERPRINT, 8).is_none());
        // A matching fingerprint with another size is no match either.
        assert!(choose_migration(m, V2::FINGERPRINT, 16).is_none());
        assert_eq!(accepted_types(m), "V2 or V1");
        // The transform and the merge of the chosen migration.
        let old = 5u32.to_ne_bytes();
        let mut new = vec![std::mem::MaybeUninit::new(0u8); 16];
        (v1.transform)(old.as_ptr(), new.as_mut_ptr().cast());
        // SAFETY: the transform wrote a V3 (16 initialised bytes).
        let hits = u64::from_ne_bytes(std::array::from_fn(|i| unsafe { new[i].assume_init() }));
        assert_eq!(hits, 5);
        CHOOSE.hits.store(100, std::sync::atomic::Ordering::Relaxed);
        (v1.merge.unwrap())(5u32.to_ne_bytes().as_ptr(), 12u32.to_ne_bytes().as_ptr());
        assert_eq!(CHOOSE.hits.load(std::sync::atomic::Ordering::Relaxed), 107);
        let e = Error::MigrationSourceUnknown {
            segment: "s".into(),
            name: "test::CHOOSE".into(),
            found: "V0 (8 bytes)".into(),
            found_fingerprint: V0::FINGERPRINT,
            type_name: "V3".into(),
            accepted: accepted_types(m).into(),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("variable \"test::CHOOSE\" is V0 (8 bytes) in segment \"s\""),
            "{text}"
        );
        assert!(
            text.contains("declares it as V3 and migrates only from V2 or V1"),
            "{text}"
        );
    }

    fn ev(kind: EventKind, id: u64, lost: u32) -> Event {
        Event {
            kind,
            version_id: id,
            pid: 1,
            lost,
            time_ns: 0,
            label: format!("v{id}"),
        }
    }

    #[test]
    fn newer_versions_are_ready_and_live() {
        use EventKind::*;
        let mut newer = Vec::new();
        let ids = |n: &[Event]| n.iter().map(|e| e.version_id).collect::<Vec<_>>();
        // A bind is not enough; an aborted candidate is never reported.
        assert!(track_newer(&mut newer, Some(2), &[ev(Bound, 3, 0)]));
        assert!(newer.is_empty());
        assert!(track_newer(
            &mut newer,
            Some(2),
            &[ev(Aborted, 3, 0), ev(Ended, 3, 0)]
        ));
        assert!(newer.is_empty());
        // Ready counts, once; older versions do not; an ended one is forgotten.
        let evs = [
            ev(Bound, 4, 0),
            ev(Ready, 4, 0),
            ev(Ready, 4, 0),
            ev(Ready, 1, 0),
        ];
        assert!(track_newer(&mut newer, Some(2), &evs));
        assert_eq!(ids(&newer), [4]);
        assert!(track_newer(
            &mut newer,
            Some(2),
            &[ev(Ready, 5, 0), ev(Ended, 4, 0)]
        ));
        assert_eq!(ids(&newer), [5]);
        // Without globals (no id) every version is newer.
        let mut any = Vec::new();
        assert!(track_newer(&mut any, None, &[ev(Ready, 1, 0)]));
        assert_eq!(ids(&any), [1]);
        // Lost events: rebuilt from the listing.
        assert!(!track_newer(&mut newer, Some(2), &[ev(Ready, 6, 3)]));
        let v = |id, ready| crate::sys::VersionInfo {
            id,
            pid: 9,
            pages: 1,
            mappings: 1,
            bound_ns: 0,
            label: format!("v{id}"),
            ready,
        };
        let live = live_newer(
            Some(2),
            vec![v(1, true), v(2, true), v(6, false), v(7, true)],
        );
        assert_eq!(ids(&live), [7]);
        assert_eq!(live[0].kind, Ready);
    }

    #[test]
    fn threads_are_counted() {
        assert!(threads().unwrap() >= 1);
    }

    #[test]
    fn descriptors_are_checked() {
        check_descs(&crate::GLOBALS).unwrap();
        use std::sync::atomic::AtomicU32;
        static G: crate::Global<AtomicU32> = crate::Global::new(AtomicU32::new(0));
        // SAFETY: 'static strings, no migration; only checked, never attached.
        let desc = |name: &'static std::ffi::CStr| unsafe {
            GlobalDesc::new(name.as_ptr(), c"u32".as_ptr(), &G, std::ptr::null())
        };
        let (a, b) = (desc(c"dup"), desc(c"dup"));
        let e = check_descs(&[a, b]).unwrap_err();
        assert!(
            e.to_string()
                .contains("two globals of this program are named \"dup\""),
            "{e}"
        );
        let mut c = desc(c"x");
        c.magic = 0;
        assert!(matches!(check_descs(&[c]), Err(Error::BadDescriptor(_))));
    }
}
