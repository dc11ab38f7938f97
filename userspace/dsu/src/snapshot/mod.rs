//! Snapshots: a point-in-time image of a live segment in a file, and the segment rebuilt
//! from it, so that state survives a reboot, a module reload or a move to another machine.
//!
//! [`Segment::snapshot`] writes the image of every variable, the directory (names, sizes,
//! fingerprints, type descriptions, labels) and the shared heap, as it was at one instant,
//! while the segment's versions keep running (the kernel copies a page on its first write
//! after that instant). The file is written atomically: a temporary file in the same
//! directory, fsync, rename, fsync of the directory, so a crash leaves the old file or the
//! new one, never half of one. [`restore`] rebuilds the segment before any version
//! attaches; a version that attaches then finds its globals *common*, as if it had run all
//! along. [`Attach::restore_from`](crate::Attach::restore_from) does that at start when the
//! segment is missing. [`inspect`] reads a file without restoring it.
//!
//! The format (docs/SNAPSHOT-FORMAT.md, [`format`](mod@format)) is versioned, sparse (zero pages are
//! not stored), checksummed per block, optionally zstd-compressed. A truncated, corrupt or
//! future-version file is refused with [`Error::BadSnapshot`] and a restore from it creates
//! nothing: the restore builds the segment on a handle nobody else sees, checks the whole
//! file, and publishes the segment only after the file's last byte checked out.
//!
//! ```no_run
//! use dsu::snapshot::{self, Segment};
//! let info = Segment::open("app")?.snapshot("/var/lib/app/app.dsusnap")?;
//! println!("{} bytes, {} pages in {:?}", info.bytes, info.pages_stored, info.duration);
//! // After a reboot, before the service starts:
//! let restored = snapshot::restore("/var/lib/app/app.dsusnap", None)?;
//! println!("restored {} with {} variables", restored.segment, restored.variables);
//! # Ok::<(), dsu::Error>(())
//! ```

pub mod format;

#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::sync::HeldLocks;
use crate::sys::{Device, RestoreVar, SnapshotFd};
use format::{BlockKind, Compression, Decoder, Encoder, HeapMeta, Metadata, Totals, VarMeta};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The file name extension `dsuctl save --every` gives snapshots.
///
/// ```
/// assert_eq!(dsu::snapshot::EXTENSION, "dsusnap");
/// ```
pub const EXTENSION: &str = "dsusnap";

/// The zstd level [`SaveOptions::compressed`] uses (zstd's default).
///
/// ```
/// assert_eq!(dsu::snapshot::ZSTD_LEVEL, 3);
/// ```
pub const ZSTD_LEVEL: i32 = 3;

/// A segment, by name, to snapshot. Opening it needs no permission beyond opening
/// `/dev/dsu`; the snapshot needs read permission on the segment.
///
/// ```no_run
/// let seg = dsu::snapshot::Segment::open("app")?;
/// let info = seg.snapshot("/tmp/app.dsusnap")?;
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Debug)]
pub struct Segment {
    dev: Device,
    name: String,
}

/// How [`Segment::snapshot_with`] writes a file.
///
/// ```
/// let o = dsu::snapshot::SaveOptions::compressed();
/// assert_ne!(o.compression, dsu::snapshot::format::Compression::None);
/// assert_eq!(o.lock_attempts, dsu::snapshot::LOCK_ATTEMPTS);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaveOptions {
    /// How blocks are stored (default: as they are).
    pub compression: Compression,
    /// How many snapshots to take, at most, to find an instant at which no
    /// [`sync::Mutex`](crate::sync::Mutex) (nor a [`heap::Mutex`](crate::heap::Mutex)) of
    /// the segment is held: an image taken while a lock is held shows its data half-changed,
    /// as a SIGKILL of the holder would leave it, and the restored program takes the lock
    /// over ([`OwnerDied`](crate::sync::OwnerDied); a `heap::Mutex` is then poisoned). A
    /// snapshot whose image shows a held lock is dropped as soon as the lock is seen and
    /// another one taken, a little later. The last one is kept whatever it shows
    /// ([`SnapshotInfo::held_locks`]). 1: the first instant, locks or not. Default
    /// [`LOCK_ATTEMPTS`].
    pub lock_attempts: u32,
}

/// How many snapshots [`SaveOptions::default`] takes at most to find an instant at which no
/// dsu lock is held.
///
/// ```
/// assert!(dsu::snapshot::LOCK_ATTEMPTS > 1);
/// ```
pub const LOCK_ATTEMPTS: u32 = 100;

impl Default for SaveOptions {
    /// Blocks as they are, up to [`LOCK_ATTEMPTS`] snapshots.
    ///
    /// ```
    /// let o = dsu::snapshot::SaveOptions::default();
    /// assert_eq!(o.compression, dsu::snapshot::format::Compression::None);
    /// ```
    fn default() -> Self {
        SaveOptions {
            compression: Compression::None,
            lock_attempts: LOCK_ATTEMPTS,
        }
    }
}

impl SaveOptions {
    /// zstd at [`ZSTD_LEVEL`] (blocks it does not shrink stay as they are). In a build
    /// without the `zstd` feature, blocks are stored as they are.
    ///
    /// ```
    /// let o = dsu::snapshot::SaveOptions::compressed();
    /// ```
    pub fn compressed() -> Self {
        SaveOptions {
            compression: Compression::Zstd(ZSTD_LEVEL),
            ..SaveOptions::default()
        }
    }
}

/// What [`Segment::snapshot`] wrote.
///
/// ```no_run
/// let info = dsu::snapshot::Segment::open("app")?.snapshot("/tmp/app.dsusnap")?;
/// println!("taken at {:?}, {} bytes", info.taken, info.bytes);
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct SnapshotInfo {
    /// The file written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Pages stored (segment and heap; zero pages are not stored).
    pub pages_stored: u64,
    /// Segment pages stored.
    pub segment_pages: u64,
    /// Heap pages stored.
    pub heap_pages: u64,
    /// Bytes of the image's data before compression.
    pub raw_bytes: u64,
    /// Variables in the image.
    pub variables: usize,
    /// The segment's generation at that instant.
    pub generation: u64,
    /// The instant the image shows.
    pub taken: SystemTime,
    /// The same, in CLOCK_REALTIME nanoseconds.
    pub taken_ns: u64,
    /// How long DSU_IOC_SNAPSHOT took (the image's instant is at its end), for the
    /// snapshot written.
    pub snapshot_call: Duration,
    /// Snapshots taken: 1, plus one for each image dropped because it showed a held lock
    /// ([`SaveOptions::lock_attempts`]).
    pub attempts: u32,
    /// dsu locks the written image shows held (0 unless every attempt found one): the
    /// restored program takes them over as after a SIGKILL of their holders. An upper bound
    /// (bytes that look like a held lock count).
    pub held_locks: u64,
    /// The whole save: snapshot, reading, writing, fsync and rename.
    pub duration: Duration,
}

impl Segment {
    /// Opens `/dev/dsu` for the segment `name`, which must exist
    /// ([`Error::SegmentNotFound`]).
    ///
    /// ```no_run
    /// let seg = dsu::snapshot::Segment::open("app")?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Segment> {
        Self::open_on(crate::sys::DEVICE_PATH, name)
    }

    /// [`open`](Self::open) through another device node.
    ///
    /// ```no_run
    /// let seg = dsu::snapshot::Segment::open_on("/dev/dsu", "app")?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn open_on(device: &str, name: &str) -> Result<Segment> {
        crate::names::check_segment(name)?;
        let dev = Device::open_path(device)?;
        if !segment_exists(&dev, name)? {
            return Err(Error::SegmentNotFound {
                segment: name.into(),
            });
        }
        Ok(Segment {
            dev,
            name: name.into(),
        })
    }

    /// The segment's name.
    ///
    /// ```no_run
    /// assert_eq!(dsu::snapshot::Segment::open("app")?.name(), "app");
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes a point-in-time image of the segment to `path`, atomically (a temporary
    /// file beside it, fsync, rename over `path`, fsync of the directory), uncompressed.
    /// The segment's versions keep running meanwhile. The file gets the segment's read
    /// and write bits (`mode & 0o666`, less the umask): it is readable by whom the
    /// segment is, no more.
    ///
    /// ```no_run
    /// let info = dsu::snapshot::Segment::open("app")?.snapshot("/var/lib/app/app.dsusnap")?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn snapshot(&self, path: impl AsRef<Path>) -> Result<SnapshotInfo> {
        self.snapshot_with(path, &SaveOptions::default())
    }

    /// [`snapshot`](Self::snapshot) with [`SaveOptions`] (zstd compression).
    ///
    /// ```no_run
    /// use dsu::snapshot::{SaveOptions, Segment};
    /// let info = Segment::open("app")?.snapshot_with("/tmp/app.dsusnap", &SaveOptions::compressed())?;
    /// # Ok::<(), dsu::Error>(())
    /// ```
    pub fn snapshot_with(
        &self,
        path: impl AsRef<Path>,
        options: &SaveOptions,
    ) -> Result<SnapshotInfo> {
        let path = path.as_ref();
        let start = Instant::now();
        let mut attempts = 0;
        let (meta, totals, held_locks, snapshot_call, mut tmp) = loop {
            attempts += 1;
            let last = attempts >= options.lock_attempts;
            let call = Instant::now();
            let snap = self.dev.snapshot(&self.name)?;
            let snapshot_call = call.elapsed();
            let meta = snapshot_metadata(&snap)?;
            // The file holds the segment's data: readable by whom the segment is (less
            // umask).
            let tmp = TempFile::create(path, snap.mode & 0o666)?;
            let mut src = ScanSource {
                inner: FdSource(&snap),
                segment: HeldLocks::default(),
                heap: HeldLocks::default(),
                stop_on_held: !last,
            };
            let written = {
                let w = BufWriter::with_capacity(1 << 20, &tmp.file);
                match write_image(&meta, &mut src, w, options.compression, path)? {
                    Some((mut w, totals)) => {
                        w.flush()
                            .map_err(|source| io_error("writing snapshot", path, source))?;
                        Some(totals)
                    }
                    None => None,
                }
            };
            let held = src.segment.count + src.heap.count;
            let Some(totals) = written else {
                // A lock was held at that instant: drop this image (and its temporary
                // file) and take another a little later (a holder keeps a lock for
                // microseconds; the wait only spreads the instants apart).
                drop(snap);
                std::thread::sleep(Duration::from_millis(u64::from(attempts.min(10))));
                continue;
            };
            // The image is read: end the snapshot (its copies) before waiting for the disk.
            drop(snap);
            break (meta, totals, held, snapshot_call, tmp);
        };
        tmp.commit()?;
        Ok(SnapshotInfo {
            path: path.into(),
            bytes: totals.file_bytes,
            pages_stored: totals.segment_pages + totals.heap_pages,
            segment_pages: totals.segment_pages,
            heap_pages: totals.heap_pages,
            raw_bytes: totals.raw_bytes,
            variables: meta.variables.len(),
            generation: meta.generation,
            taken: SystemTime::UNIX_EPOCH + Duration::from_nanos(meta.taken_ns),
            taken_ns: meta.taken_ns,
            snapshot_call,
            attempts,
            held_locks,
            duration: start.elapsed(),
        })
    }
}

/// Whether `name` names a live (not destroyed) segment.
fn segment_exists(dev: &Device, name: &str) -> Result<bool> {
    Ok(dev
        .list_segments()?
        .iter()
        .any(|s| s.name == name && !s.destroyed))
}

fn io_error(what: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::SnapshotIo {
        what,
        path: path.into(),
        source,
    }
}

/// The metadata of an open snapshot: its description and directory with type
/// descriptions.
fn snapshot_metadata(snap: &SnapshotFd) -> Result<Metadata> {
    let mut variables = Vec::new();
    for v in snap.list_variables()? {
        let type_desc = snap.read_type_desc(&v.name, v.fingerprint)?;
        variables.push(VarMeta {
            name: v.name,
            size: v.size,
            align: v.align,
            fingerprint: v.fingerprint,
            created_ns: v.created_ns,
            created_label: v.created_label,
            type_desc,
            first_page: v.first_page,
            page_count: v.page_count,
        });
    }
    Ok(Metadata {
        segment: snap.segment.clone(),
        mode: snap.mode,
        uid: snap.uid,
        gid: snap.gid,
        generation: snap.generation,
        taken_ns: snap.taken_ns,
        pages: snap.pages,
        heap: snap.heap.map(|h| HeapMeta {
            base: h.base,
            reserve: h.reserve,
            size: h.size,
        }),
        variables,
    })
}

/// Where [`write_image`] reads an image's bytes.
pub(crate) trait ImageSource {
    /// Segment image bytes at `offset` (page index times the page size).
    fn segment(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Heap image bytes at `offset` from the heap's base.
    fn heap(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Whether the writer should give up on this image (checked after each read).
    fn stop(&self) -> bool {
        false
    }
}

/// An [`ImageSource`] that counts the dsu locks its bytes show held, and asks the writer
/// to stop at the first one if `stop_on_held`.
struct ScanSource<S> {
    inner: S,
    segment: HeldLocks,
    heap: HeldLocks,
    stop_on_held: bool,
}

impl<S: ImageSource> ImageSource for ScanSource<S> {
    fn segment(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.segment(offset, buf)?;
        self.segment.feed(offset, buf);
        Ok(())
    }
    fn heap(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.heap(offset, buf)?;
        self.heap.feed(offset, buf);
        Ok(())
    }
    fn stop(&self) -> bool {
        self.stop_on_held && self.segment.count + self.heap.count > 0
    }
}

struct FdSource<'a>(&'a SnapshotFd);

impl ImageSource for FdSource<'_> {
    fn segment(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.0.read_segment(offset, buf)
    }
    fn heap(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.0.read_heap(offset, buf)
    }
}

/// Writes the image of `meta` whose bytes `src` gives: every variable's pages (in page
/// order) and the heap's bytes, zero pages left out. `None` if the source asked to stop.
pub(crate) fn write_image<W: Write>(
    meta: &Metadata,
    src: &mut impl ImageSource,
    w: W,
    compression: Compression,
    path: &Path,
) -> Result<Option<(W, Totals)>> {
    let werr = |source| io_error("writing snapshot", path, source);
    let mut enc = Encoder::new(w, meta, compression).map_err(werr)?;
    let mut buf = vec![0u8; format::MAX_BLOCK];
    let page = format::PAGE_SIZE as u64;
    let mut vars: Vec<&VarMeta> = meta.variables.iter().collect();
    vars.sort_by_key(|v| v.first_page);
    for v in vars {
        let (start, end) = (v.first_page * page, (v.first_page + v.page_count) * page);
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            src.segment(at, &mut buf[..n])?;
            if src.stop() {
                return Ok(None);
            }
            enc.pages(BlockKind::Segment, at, &buf[..n]).map_err(werr)?;
            at += n as u64;
        }
    }
    if let Some(h) = meta.heap {
        let mut at = 0;
        while at < h.size {
            let n = ((h.size - at) as usize).min(buf.len());
            src.heap(at, &mut buf[..n])?;
            if src.stop() {
                return Ok(None);
            }
            enc.pages(BlockKind::Heap, at, &buf[..n]).map_err(werr)?;
            at += n as u64;
        }
    }
    enc.finish().map_err(werr).map(Some)
}

/// What [`restore_image`] builds a segment with; the device's restoring handle, or a test's
/// recorder.
pub(crate) trait RestoreSink {
    /// One directory entry and its value (`None`: all zero).
    fn variable(&mut self, var: &VarMeta, value: Option<&[u8]>) -> Result<()>;
    /// Creates the heap and backs `heap.size` bytes of it.
    fn heap(&mut self, heap: &HeapMeta) -> Result<()>;
    /// Heap bytes at `offset`.
    fn heap_bytes(&mut self, offset: u64, bytes: &[u8]) -> Result<()>;
    /// Publishes the segment: called only once the whole file checked out.
    fn commit(&mut self) -> Result<()>;
}

/// Feeds the image `dec` reads into `sink`, and commits only after the trailer checked out.
pub(crate) fn restore_image<R: std::io::Read>(
    mut dec: Decoder<R>,
    sink: &mut impl RestoreSink,
    path: &Path,
) -> Result<(Metadata, Totals)> {
    let bad = |problem| Error::BadSnapshot {
        path: path.into(),
        problem,
    };
    let meta = dec.metadata().clone();
    let page = format::PAGE_SIZE as u64;
    let vars = &meta.variables;
    let mut order: Vec<usize> = (0..vars.len()).collect();
    order.sort_by_key(|&i| vars[i].first_page);
    // The variables before `next` (in `order`) are restored; `current` is the one whose
    // blocks are being gathered.
    let mut next = 0;
    let mut current: Option<(usize, Vec<u8>)> = None;
    let mut heap_done = false;
    loop {
        let block = dec.next_block().map_err(bad)?;
        match block {
            Some(b) if b.kind == BlockKind::Segment => {
                // The decoder checked that the block lies inside one variable's pages.
                let pos = order.partition_point(|&i| vars[i].first_page * page <= b.offset) - 1;
                flush(vars, &order, pos, &mut next, &mut current, sink)?;
                let v = &vars[order[pos]];
                if current.as_ref().is_none_or(|(p, _)| *p != pos) {
                    let mut buf = Vec::new();
                    buf.try_reserve_exact(v.size as usize)
                        .map_err(|_| Error::OutOfMemory {
                            op: crate::Op::RestoreVar,
                        })?;
                    buf.resize(v.size as usize, 0);
                    current = Some((pos, buf));
                }
                let (_, buf) = current.as_mut().expect("set above");
                let at = (b.offset - v.first_page * page) as usize;
                if at < buf.len() {
                    let n = b.data.len().min(buf.len() - at);
                    buf[at..at + n].copy_from_slice(&b.data[..n]);
                }
            }
            Some(b) => {
                if !heap_done {
                    flush(vars, &order, order.len(), &mut next, &mut current, sink)?;
                    if let Some(h) = meta.heap {
                        sink.heap(&h)?;
                    }
                    heap_done = true;
                }
                sink.heap_bytes(b.offset, &b.data)?;
            }
            None => {
                flush(vars, &order, order.len(), &mut next, &mut current, sink)?;
                if !heap_done {
                    if let Some(h) = meta.heap {
                        sink.heap(&h)?;
                    }
                }
                sink.commit()?;
                return Ok((meta, dec.totals()));
            }
        }
    }
}

/// Restores the variables `order[*next..upto]`: the one in `current` with its gathered
/// bytes, the others (no block held a non-zero page of them) as zeros.
fn flush(
    vars: &[VarMeta],
    order: &[usize],
    upto: usize,
    next: &mut usize,
    current: &mut Option<(usize, Vec<u8>)>,
    sink: &mut impl RestoreSink,
) -> Result<()> {
    while *next < upto {
        let v = &vars[order[*next]];
        match current.take() {
            Some((pos, buf)) if pos == *next => sink.variable(v, Some(&buf))?,
            other => {
                *current = other;
                sink.variable(v, None)?;
            }
        }
        *next += 1;
    }
    Ok(())
}

/// The device side of a restore: a restoring handle.
struct DeviceSink<'a>(&'a Device);

impl RestoreSink for DeviceSink<'_> {
    fn variable(&mut self, v: &VarMeta, value: Option<&[u8]>) -> Result<()> {
        self.0
            .restore_var(&RestoreVar {
                name: &v.name,
                size: v.size,
                align: v.align,
                fingerprint: v.fingerprint,
                value,
                type_desc: &v.type_desc,
                created_ns: v.created_ns,
                created_label: &v.created_label,
            })
            .map(|_| ())
    }
    fn heap(&mut self, h: &HeapMeta) -> Result<()> {
        self.0.heap(Some((h.base, h.reserve)))?;
        if h.size > 0 {
            self.0.heap_grow(h.size)?;
        }
        Ok(())
    }
    fn heap_bytes(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.0.restore_heap(offset, bytes)
    }
    fn commit(&mut self) -> Result<()> {
        self.0.restore_commit()
    }
}

/// How [`restore_with`] restores.
///
/// ```
/// let o = dsu::snapshot::RestoreOptions { mode: Some(0o640), ..Default::default() };
/// assert!(o.device.is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// The device node (default `/dev/dsu`).
    pub device: Option<String>,
    /// Permission bits of the new segment (default: the image's).
    pub mode: Option<u32>,
}

/// What [`restore`] created.
///
/// ```no_run
/// let r = dsu::snapshot::restore("/tmp/app.dsusnap", None)?;
/// println!("{}: {} variables, {} heap pages", r.segment, r.variables, r.heap_pages);
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Restored {
    /// The segment created.
    pub segment: String,
    /// Its variables.
    pub variables: usize,
    /// Segment pages that held data in the image.
    pub segment_pages: u64,
    /// Heap pages that held data.
    pub heap_pages: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// When the image was taken, CLOCK_REALTIME nanoseconds.
    pub taken_ns: u64,
    /// How long the restore took.
    pub duration: Duration,
}

/// Recreates a segment from the snapshot at `path`, under `name` (or the name it was saved
/// under), owned by the caller, with the image's mode, before any version attaches. The
/// whole file is checked before the segment appears: a truncated, corrupt or future-version
/// file is [`Error::BadSnapshot`] and creates nothing; a name in use is
/// [`Error::RestoreTargetExists`] and changes nothing.
///
/// ```no_run
/// let r = dsu::snapshot::restore("/var/lib/app/app.dsusnap", Some("app-copy"))?;
/// assert_eq!(r.segment, "app-copy");
/// # Ok::<(), dsu::Error>(())
/// ```
pub fn restore(path: impl AsRef<Path>, name: Option<&str>) -> Result<Restored> {
    restore_with(path, name, &RestoreOptions::default())
}

/// [`restore`] with [`RestoreOptions`] (device node, mode).
///
/// ```no_run
/// use dsu::snapshot::{RestoreOptions, restore_with};
/// let o = RestoreOptions { mode: Some(0o600), ..Default::default() };
/// let r = restore_with("/tmp/app.dsusnap", None, &o)?;
/// # Ok::<(), dsu::Error>(())
/// ```
pub fn restore_with(
    path: impl AsRef<Path>,
    name: Option<&str>,
    options: &RestoreOptions,
) -> Result<Restored> {
    let path = path.as_ref();
    let start = Instant::now();
    if let Some(name) = name {
        crate::names::check_segment(name)?;
    }
    let file = File::open(path).map_err(|source| io_error("opening snapshot", path, source))?;
    let dec = Decoder::new(BufReader::with_capacity(1 << 20, file)).map_err(|problem| {
        Error::BadSnapshot {
            path: path.into(),
            problem,
        }
    })?;
    let segment = name.unwrap_or(&dec.metadata().segment).to_string();
    let mode = options.mode.unwrap_or(dec.metadata().mode);
    let mut dev = Device::open_path(options.device.as_deref().unwrap_or(crate::sys::DEVICE_PATH))?;
    dev.restore(&segment, mode)?;
    // On any error below, `dev` is dropped before the commit: the kernel frees everything.
    let (meta, totals) = restore_image(dec, &mut DeviceSink(&dev), path)?;
    Ok(Restored {
        segment,
        variables: meta.variables.len(),
        segment_pages: totals.segment_pages,
        heap_pages: totals.heap_pages,
        bytes: totals.file_bytes,
        taken_ns: meta.taken_ns,
        duration: start.elapsed(),
    })
}

/// A snapshot file's contents, from [`inspect`].
///
/// ```no_run
/// let i = dsu::snapshot::inspect("/tmp/app.dsusnap")?;
/// for v in &i.metadata.variables { println!("{} {} bytes", v.name, v.size); }
/// # Ok::<(), dsu::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The file.
    pub path: PathBuf,
    /// Its format version.
    pub format_version: u32,
    /// Header flags ([`format::FLAG_ZSTD`]).
    pub flags: u32,
    /// The segment's description and directory.
    pub metadata: Metadata,
    /// Blocks, pages and bytes.
    pub totals: Totals,
    /// The heap allocator's counters over the image's heap bytes (allocated and free
    /// blocks); `None` without a heap, or if the heap was never formatted.
    pub heap_stats: Option<crate::heap::HeapStats>,
}

/// Reads and checks the snapshot at `path` without restoring it: every block's checksum,
/// the trailer, and the heap allocator's walk over the image's heap. Refuses a bad file
/// as [`restore`] does.
///
/// ```no_run
/// let i = dsu::snapshot::inspect("/tmp/app.dsusnap")?;
/// println!("segment {} taken at {} ns", i.metadata.segment, i.metadata.taken_ns);
/// # Ok::<(), dsu::Error>(())
/// ```
pub fn inspect(path: impl AsRef<Path>) -> Result<ImageInfo> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| io_error("opening snapshot", path, source))?;
    inspect_reader(BufReader::with_capacity(1 << 20, file), path)
}

pub(crate) fn inspect_reader<R: std::io::Read>(r: R, path: &Path) -> Result<ImageInfo> {
    let bad = |problem| Error::BadSnapshot {
        path: path.into(),
        problem,
    };
    let mut dec = Decoder::new(r).map_err(bad)?;
    let mut heap = std::collections::BTreeMap::new();
    while let Some(b) = dec.next_block().map_err(bad)? {
        if b.kind == BlockKind::Heap {
            heap.insert(b.offset, b.data);
        }
    }
    let metadata = dec.metadata().clone();
    let heap_stats = metadata.heap.and_then(|h| {
        crate::heap::stats_from_bytes(h.base as usize, h.size as usize, |off, buf| {
            read_sparse(&heap, h.size, off, buf)
        })
    });
    Ok(ImageInfo {
        path: path.into(),
        format_version: format::FORMAT_VERSION,
        flags: dec.flags(),
        metadata,
        totals: dec.totals(),
        heap_stats,
    })
}

/// Copies image bytes at `off` from sparse blocks (missing ranges are zeros); false past
/// `size`.
fn read_sparse(
    blocks: &std::collections::BTreeMap<u64, Vec<u8>>,
    size: u64,
    off: u64,
    buf: &mut [u8],
) -> bool {
    if off
        .checked_add(buf.len() as u64)
        .is_none_or(|end| end > size)
    {
        return false;
    }
    buf.fill(0);
    let end = off + buf.len() as u64;
    let first = blocks.range(..=off).next_back().map_or(off, |(&s, _)| s);
    for (&s, data) in blocks.range(first..end) {
        let (lo, hi) = (s.max(off), (s + data.len() as u64).min(end));
        if lo < hi {
            buf[(lo - off) as usize..(hi - off) as usize]
                .copy_from_slice(&data[(lo - s) as usize..(hi - s) as usize]);
        }
    }
    true
}

/// A file written beside its target and renamed over it once complete and on disk.
struct TempFile {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl TempFile {
    /// Creates the temporary file with permission bits `mode` (less the umask).
    fn create(target: &Path, mode: u32) -> Result<TempFile> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = target.file_name().ok_or_else(|| {
            io_error(
                "writing snapshot",
                target,
                std::io::ErrorKind::InvalidInput.into(),
            )
        })?;
        let tmp_name = format!(
            ".{}.tmp.{}.{}",
            name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = target.with_file_name(tmp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|source| io_error("creating the temporary snapshot file", &tmp, source))?;
        Ok(TempFile {
            file,
            tmp,
            target: target.into(),
            committed: false,
        })
    }

    /// fsync, rename over the target, fsync the directory.
    fn commit(&mut self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|source| io_error("fsync of snapshot", &self.tmp, source))?;
        std::fs::rename(&self.tmp, &self.target).map_err(|source| {
            io_error(
                "renaming the temporary file over snapshot",
                &self.target,
                source,
            )
        })?;
        self.committed = true;
        let dir = match self.target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| io_error("fsync of the directory of snapshot", &self.target, source))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
