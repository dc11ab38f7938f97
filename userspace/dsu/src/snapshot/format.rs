//! The snapshot file format, version 1 (docs/SNAPSHOT-FORMAT.md): pure encoding and
//! decoding over `Write` and `Read`, with no device access, so that it is tested on the
//! host. [`Encoder`] writes a header, the metadata, blocks of runs of non-zero pages and a
//! trailer; [`Decoder`] checks every byte of that (each part carries an XXH3-64 hash, and
//! the trailer a digest of all of them) and refuses a truncated, corrupt or future-version
//! file with a [`FormatError`] that says what is wrong and what to do.
//!
//! ```
//! use dsu::snapshot::format::{BlockKind, Compression, Decoder, Encoder, Metadata};
//! let meta = Metadata { segment: "app".into(), mode: 0o600, pages: 1, ..Default::default() };
//! let mut enc = Encoder::new(Vec::new(), &meta, Compression::None)?;
//! enc.pages(BlockKind::Heap, 0, &[0u8; 4096])?; // a zero page: not stored
//! let (file, totals) = enc.finish()?;
//! assert_eq!(totals.blocks, 0);
//! let mut dec = Decoder::new(&file[..]).unwrap();
//! assert_eq!(dec.metadata().segment, "app");
//! assert!(dec.next_block().unwrap().is_none());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The first eight bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"DSUSNAP\0";
/// The first eight bytes of the trailer.
pub const END_MAGIC: [u8; 8] = *b"DSUEND\0\0";
/// The first four bytes of a block header.
pub const BLOCK_MAGIC: [u8; 4] = *b"DBLK";
/// The format version this code writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The page size of version 1 images.
pub const PAGE_SIZE: usize = 4096;
/// Bytes of the header.
pub const HEADER_SIZE: usize = 64;
/// Bytes of a block header.
pub const BLOCK_HEADER_SIZE: usize = 48;
/// Bytes of the trailer.
pub const TRAILER_SIZE: usize = 64;
/// The most raw bytes one block holds (256 pages), which bounds what a reader allocates.
pub const MAX_BLOCK: usize = 1 << 20;
/// The most metadata bytes a reader accepts.
pub const MAX_METADATA: u64 = 64 << 20;
/// Header flag: some blocks are zstd-compressed.
pub const FLAG_ZSTD: u32 = 1 << 0;
/// The most bytes of a type description (as `DSU_TYPE_DESC_MAX`).
pub const TYPE_DESC_MAX: usize = 4096;

/// What a block holds.
///
/// ```
/// assert_ne!(dsu::snapshot::format::BlockKind::Segment, dsu::snapshot::format::BlockKind::Heap);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Segment pages: the offset is a page index times the page size.
    Segment,
    /// Heap bytes: the offset is from the heap's base.
    Heap,
}

impl BlockKind {
    fn code(self) -> u8 {
        match self {
            BlockKind::Segment => 1,
            BlockKind::Heap => 2,
        }
    }
}

/// How blocks are stored.
///
/// ```
/// assert_eq!(dsu::snapshot::format::Compression::default(), dsu::snapshot::format::Compression::None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// As they are.
    #[default]
    None,
    /// zstd at this level (1..=22; 3 is zstd's default), where it makes a block smaller.
    Zstd(i32),
}

/// The heap part of an image.
///
/// ```
/// let h = dsu::snapshot::format::HeapMeta { base: 0x3000_0000_0000, reserve: 1 << 30, size: 1 << 20 };
/// assert!(h.size <= h.reserve);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapMeta {
    /// The window's address (the same in every process).
    pub base: u64,
    /// Bytes of the window.
    pub reserve: u64,
    /// Heap bytes in the image.
    pub size: u64,
}

/// One directory entry of an image.
///
/// ```
/// let v = dsu::snapshot::format::VarMeta { name: "app::N".into(), size: 8, align: 8, page_count: 1, ..Default::default() };
/// assert_eq!(v.first_page, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VarMeta {
    /// Variable name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Alignment.
    pub align: u64,
    /// Type fingerprint.
    pub fingerprint: u64,
    /// CLOCK_REALTIME nanoseconds of its creation.
    pub created_ns: u64,
    /// Label of the version that created it ("" if unknown).
    pub created_label: String,
    /// Its type description (docs/DESIGN.md's text format), empty if none.
    pub type_desc: Vec<u8>,
    /// Its first page in the image.
    pub first_page: u64,
    /// Its pages in the image.
    pub page_count: u64,
}

/// Everything an image says besides its bytes.
///
/// ```
/// let m = dsu::snapshot::format::Metadata { segment: "app".into(), ..Default::default() };
/// assert!(m.heap.is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The segment's name when it was saved.
    pub segment: String,
    /// Its permission bits.
    pub mode: u32,
    /// Its owner (as the saver saw it).
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// Its generation (READYs so far).
    pub generation: u64,
    /// CLOCK_REALTIME nanoseconds of the instant the image shows.
    pub taken_ns: u64,
    /// Segment pages in the image (page indexes `0..pages`).
    pub pages: u64,
    /// The heap, if the segment has one.
    pub heap: Option<HeapMeta>,
    /// The directory.
    pub variables: Vec<VarMeta>,
}

/// One decoded block: `data` is the raw bytes at `offset`.
///
/// ```
/// let b = dsu::snapshot::format::Block { kind: dsu::snapshot::format::BlockKind::Heap, offset: 0, data: vec![1; 4096] };
/// assert_eq!(b.data.len(), 4096);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Segment pages or heap bytes.
    pub kind: BlockKind,
    /// Image offset of the first byte.
    pub offset: u64,
    /// The bytes, decompressed.
    pub data: Vec<u8>,
}

/// What a file holds, from its trailer (or counted by the encoder).
///
/// ```
/// let t = dsu::snapshot::format::Totals::default();
/// assert_eq!(t.segment_pages + t.heap_pages, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Blocks.
    pub blocks: u64,
    /// Segment pages stored.
    pub segment_pages: u64,
    /// Heap pages stored (a partial last page counts as one).
    pub heap_pages: u64,
    /// Raw bytes in the blocks.
    pub raw_bytes: u64,
    /// Bytes the blocks take in the file (after compression).
    pub stored_bytes: u64,
    /// Bytes of the whole file.
    pub file_bytes: u64,
    /// Blocks stored zstd-compressed.
    pub compressed_blocks: u64,
}

/// Why a file is refused. Each message says what is wrong, where, and what to do.
///
/// ```
/// let e = dsu::snapshot::format::FormatError::FutureVersion { version: 2 };
/// assert!(e.to_string().contains("newer dsu"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with [`MAGIC`].
    #[error(
        "it is not a dsu snapshot (it does not start with \"DSUSNAP\"): check the file name; `dsuctl save SEG FILE` writes snapshots"
    )]
    NotASnapshot,
    /// A newer format version.
    #[error(
        "it was written by a newer dsu (snapshot format version {version}; this dsu reads version {FORMAT_VERSION}): restore it with the dsuctl or library of that release, or upgrade this one"
    )]
    FutureVersion {
        /// The file's version.
        version: u32,
    },
    /// Header flags this version does not know (with a valid header hash: a newer writer).
    #[error(
        "it uses features this dsu does not know (header flags {flags:#x}): restore it with the dsu release that wrote it, or upgrade this one"
    )]
    UnknownFeatures {
        /// The flags.
        flags: u32,
    },
    /// A zstd block, and this build has no zstd.
    #[error(
        "it holds zstd-compressed blocks, and this dsu was built without the `zstd` feature: restore it with a dsuctl built with zstd (the default), or save it again without --compress"
    )]
    NoZstd,
    /// The file ends early.
    #[error(
        "it is truncated: it ends at byte {offset}, inside {what} (an interrupted copy or save): use a complete copy or an older snapshot"
    )]
    Truncated {
        /// The file's length.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A hash mismatch or an impossible value.
    #[error(
        "it is corrupt: {what} at byte {offset} (the file was damaged after it was written): use another copy or an older snapshot"
    )]
    Corrupt {
        /// Where the damaged part starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Reading failed.
    #[error("reading it failed at byte {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// The cause.
        source: io::Error,
    },
}

fn corrupt(offset: u64, what: impl Into<String>) -> FormatError {
    FormatError::Corrupt {
        offset,
        what: what.into(),
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Whether `b` is all zero bytes.
///
/// ```
/// assert!(dsu::snapshot::format::is_zero(&[0; 4096]));
/// assert!(!dsu::snapshot::format::is_zero(&[0, 0, 1]));
/// ```
pub fn is_zero(b: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: every bit pattern is a valid u64; align_to splits at aligned boundaries.
        unsafe { b.align_to::<u64>() }
    };
    head.iter().all(|&x| x == 0) && words.iter().all(|&x| x == 0) && tail.iter().all(|&x| x == 0)
}

/// Appends `s` with a u16 length.
fn put_str16(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s);
}

/// The metadata's bytes.
fn encode_metadata(m: &Metadata) -> io::Result<Vec<u8>> {
    let too_long =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} is too long"));
    if m.segment.len() > u16::MAX as usize {
        return Err(too_long("segment name"));
    }
    let mut out = Vec::with_capacity(128 + m.variables.len() * 256);
    put_str16(&mut out, m.segment.as_bytes());
    for x in [m.mode, m.uid, m.gid, 0] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    let heap = m.heap.unwrap_or_default();
    for x in [
        m.generation,
        m.taken_ns,
        m.pages,
        heap.base,
        heap.reserve,
        heap.size,
    ] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(&(m.variables.len() as u32).to_le_bytes());
    for v in &m.variables {
        if v.name.len() > u16::MAX as usize || v.created_label.len() > u16::MAX as usize {
            return Err(too_long("variable name or label"));
        }
        if v.type_desc.len() > TYPE_DESC_MAX {
            return Err(too_long("type description"));
        }
        put_str16(&mut out, v.name.as_bytes());
        for x in [
            v.size,
            v.align,
            v.fingerprint,
            v.created_ns,
            v.first_page,
            v.page_count,
        ] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        put_str16(&mut out, v.created_label.as_bytes());
        out.extend_from_slice(&(v.type_desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&v.type_desc);
    }
    Ok(out)
}

/// A cursor over the metadata bytes; every read past the end is corruption (the length
/// and hash matched, so the writer cannot have meant it).
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    base: u64,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(corrupt(
                self.base + self.at as u64,
                format!("the metadata ends inside {what}"),
            ));
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        Ok(le32(self.take(4, what)?, 0))
    }
    fn u64(&mut self, what: &str) -> Result<u64, FormatError> {
        Ok(le64(self.take(8, what)?, 0))
    }
    fn str16(&mut self, what: &str) -> Result<String, FormatError> {
        let at = self.base + self.at as u64;
        let n = u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes"));
        let s = self.take(n as usize, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| corrupt(at, format!("{what} is not UTF-8")))
    }
}

fn decode_metadata(b: &[u8], base: u64) -> Result<Metadata, FormatError> {
    let mut c = Cursor { b, at: 0, base };
    let segment = c.str16("the segment name")?;
    let mode = c.u32("the mode")?;
    let uid = c.u32("the owner")?;
    let gid = c.u32("the group")?;
    if c.u32("reserved bytes")? != 0 {
        return Err(corrupt(
            base + c.at as u64 - 4,
            "reserved metadata bytes are not zero",
        ));
    }
    let generation = c.u64("the generation")?;
    let taken_ns = c.u64("the time")?;
    let pages = c.u64("the page count")?;
    let heap = HeapMeta {
        base: c.u64("the heap")?,
        reserve: c.u64("the heap")?,
        size: c.u64("the heap")?,
    };
    let count = c.u32("the variable count")?;
    let mut variables = Vec::with_capacity((count as usize).min(b.len() / 64));
    for _ in 0..count {
        let name = c.str16("a variable name")?;
        let size = c.u64("a variable")?;
        let align = c.u64("a variable")?;
        let fingerprint = c.u64("a variable")?;
        let created_ns = c.u64("a variable")?;
        let first_page = c.u64("a variable")?;
        let page_count = c.u64("a variable")?;
        let created_label = c.str16("a label")?;
        let n = c.u32("a type description")? as usize;
        if n > TYPE_DESC_MAX {
            return Err(corrupt(
                base + c.at as u64 - 4,
                format!(
                    "variable {name:?} has a {n}-byte type description (at most {TYPE_DESC_MAX})"
                ),
            ));
        }
        let type_desc = c.take(n, "a type description")?.to_vec();
        variables.push(VarMeta {
            name,
            size,
            align,
            fingerprint,
            created_ns,
            created_label,
            type_desc,
            first_page,
            page_count,
        });
    }
    if c.at != b.len() {
        return Err(corrupt(
            base + c.at as u64,
            "the metadata has bytes after the last variable",
        ));
    }
    let m = Metadata {
        segment,
        mode,
        uid,
        gid,
        generation,
        taken_ns,
        pages,
        heap: (heap != HeapMeta::default()).then_some(heap),
        variables,
    };
    check_metadata(&m).map_err(|what| corrupt(base, what))?;
    Ok(m)
}

/// The rules a well-formed image follows (the writer's side of them is the kernel's).
fn check_metadata(m: &Metadata) -> Result<(), String> {
    let page = PAGE_SIZE as u64;
    if crate::names::check_segment(&m.segment).is_err() {
        return Err(format!(
            "the segment name {:?} is not a valid name",
            m.segment
        ));
    }
    if m.mode > 0o777 {
        return Err(format!("the mode {:o} is above 0777", m.mode));
    }
    if let Some(h) = m.heap {
        if h.base % page != 0
            || h.reserve % page != 0
            || h.reserve == 0
            || h.size > h.reserve
            || h.base.checked_add(h.reserve).is_none()
        {
            return Err(format!(
                "the heap (base {:#x}, reserve {:#x}, size {:#x}) is not a page-aligned window holding its size",
                h.base, h.reserve, h.size
            ));
        }
    }
    let mut order: Vec<&VarMeta> = m.variables.iter().collect();
    order.sort_by_key(|v| v.first_page);
    let mut next_free = 0u64;
    for v in order {
        let bad = |why: &str| format!("variable {:?} {why}", v.name);
        if crate::names::check_variable(&v.name).is_err() {
            return Err(bad("has an invalid name"));
        }
        if !v.created_label.is_empty() && crate::names::check_label(&v.created_label).is_err() {
            return Err(bad("has an invalid label"));
        }
        if v.size == 0 || !v.align.is_power_of_two() || v.align > page {
            return Err(bad(
                "has a size of 0 or an alignment that is not a power of two up to the page size",
            ));
        }
        let end = v.first_page.checked_add(v.page_count);
        let need = v.size.div_ceil(page);
        match end {
            Some(end) if v.page_count >= need && end <= m.pages && v.first_page >= next_free => {
                next_free = end;
            }
            _ => {
                return Err(bad(&format!(
                    "has pages {}+{} for {} bytes, outside the image's {} pages or overlapping another variable",
                    v.first_page, v.page_count, v.size, m.pages
                )));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for v in &m.variables {
        if !seen.insert((v.name.as_str(), v.fingerprint)) {
            return Err(format!(
                "variable {:?} appears twice with one fingerprint",
                v.name
            ));
        }
    }
    Ok(())
}

/// Writes an image: [`new`](Self::new) writes the header and metadata, [`block`](Self::block)
/// or [`pages`](Self::pages) the data (segment blocks before heap blocks, each kind in
/// increasing offsets), [`finish`](Self::finish) the trailer.
///
/// ```
/// use dsu::snapshot::format::{BlockKind, Compression, Encoder, Metadata, VarMeta};
/// let meta = Metadata {
///     segment: "app".into(), pages: 1,
///     variables: vec![VarMeta { name: "app::N".into(), size: 8, align: 8, page_count: 1, ..Default::default() }],
///     ..Default::default()
/// };
/// let mut enc = Encoder::new(Vec::new(), &meta, Compression::None)?;
/// let mut page = [0u8; 4096];
/// page[0] = 7;
/// enc.pages(BlockKind::Segment, 0, &page)?;
/// let (file, totals) = enc.finish()?;
/// assert_eq!((totals.blocks, totals.segment_pages, totals.file_bytes), (1, 1, file.len() as u64));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Encoder<W: Write> {
    w: W,
    compression: Compression,
    digest: Xxh3,
    totals: Totals,
    last: Option<(BlockKind, u64)>,
}

impl<W: Write> Encoder<W> {
    /// Writes the header and `meta` to `w`. With [`Compression::Zstd`] in a build without
    /// the `zstd` feature, blocks are stored as they are.
    ///
    /// ```
    /// use dsu::snapshot::format::{Compression, Encoder, Metadata};
    /// let meta = Metadata { segment: "a".into(), ..Default::default() };
    /// let enc = Encoder::new(Vec::new(), &meta, Compression::Zstd(3))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(mut w: W, meta: &Metadata, compression: Compression) -> io::Result<Self> {
        let compression = if cfg!(feature = "zstd") {
            compression
        } else {
            Compression::None
        };
        let md = encode_metadata(meta)?;
        let mut h = [0u8; HEADER_SIZE];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        let flags = if matches!(compression, Compression::Zstd(_)) {
            FLAG_ZSTD
        } else {
            0
        };
        h[16..20].copy_from_slice(&flags.to_le_bytes());
        h[20..24].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&(md.len() as u64).to_le_bytes());
        let md_hash = xxh3_64(&md);
        h[32..40].copy_from_slice(&md_hash.to_le_bytes());
        let h_hash = xxh3_64(&h[..56]);
        h[56..64].copy_from_slice(&h_hash.to_le_bytes());
        w.write_all(&h)?;
        w.write_all(&md)?;
        let mut digest = Xxh3::new();
        digest.update(&h_hash.to_le_bytes());
        digest.update(&md_hash.to_le_bytes());
        Ok(Encoder {
            w,
            compression,
            digest,
            totals: Totals {
                file_bytes: (HEADER_SIZE + md.len()) as u64,
                ..Default::default()
            },
            last: None,
        })
    }

    /// Writes `raw` (1 byte to [`MAX_BLOCK`]) as one block at image `offset`, compressed if
    /// that makes it smaller. Blocks of a kind must come in increasing, non-overlapping
    /// offsets, segment blocks before heap blocks (else `InvalidInput`).
    ///
    /// ```
    /// use dsu::snapshot::format::{BlockKind, Compression, Encoder, Metadata};
    /// let meta = Metadata { segment: "a".into(), ..Default::default() };
    /// let mut enc = Encoder::new(Vec::new(), &meta, Compression::None)?;
    /// assert!(enc.block(BlockKind::Heap, 4096, &[1; 4096]).is_ok());
    /// assert!(enc.block(BlockKind::Heap, 0, &[1; 4096]).is_err(), "out of order");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn block(&mut self, kind: BlockKind, offset: u64, raw: &[u8]) -> io::Result<()> {
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_string());
        if raw.is_empty() || raw.len() > MAX_BLOCK {
            return Err(invalid("a block holds 1 byte to 1 MiB"));
        }
        if offset % PAGE_SIZE as u64 != 0
            || (kind == BlockKind::Segment && raw.len() % PAGE_SIZE != 0)
        {
            return Err(invalid(
                "blocks start on a page; segment blocks are whole pages",
            ));
        }
        match self.last {
            Some((BlockKind::Heap, _)) if kind == BlockKind::Segment => {
                return Err(invalid("segment blocks come before heap blocks"));
            }
            Some((k, end)) if k == kind && offset < end => {
                return Err(invalid("blocks of a kind come in increasing offsets"));
            }
            _ => {}
        }
        let stored: std::borrow::Cow<'_, [u8]> = match self.compression {
            Compression::None => raw.into(),
            Compression::Zstd(level) => match compress(raw, level)? {
                Some(c) if c.len() < raw.len() => c.into(),
                _ => raw.into(),
            },
        };
        let zstd = matches!(&stored, std::borrow::Cow::Owned(_));
        let mut h = [0u8; BLOCK_HEADER_SIZE];
        h[..4].copy_from_slice(&BLOCK_MAGIC);
        h[4] = kind.code();
        h[5] = u8::from(zstd);
        h[8..16].copy_from_slice(&offset.to_le_bytes());
        h[16..24].copy_from_slice(&(raw.len() as u64).to_le_bytes());
        h[24..32].copy_from_slice(&(stored.len() as u64).to_le_bytes());
        let mut hasher = Xxh3::new();
        hasher.update(&h[..40]);
        hasher.update(&stored);
        let hash = hasher.digest();
        h[40..48].copy_from_slice(&hash.to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(&stored)?;
        self.digest.update(&hash.to_le_bytes());
        let t = &mut self.totals;
        t.blocks += 1;
        let pages = raw.len().div_ceil(PAGE_SIZE) as u64;
        match kind {
            BlockKind::Segment => t.segment_pages += pages,
            BlockKind::Heap => t.heap_pages += pages,
        }
        t.raw_bytes += raw.len() as u64;
        t.stored_bytes += stored.len() as u64;
        t.compressed_blocks += u64::from(zstd);
        t.file_bytes += (BLOCK_HEADER_SIZE + stored.len()) as u64;
        self.last = Some((kind, offset + raw.len() as u64));
        Ok(())
    }

    /// Writes the non-zero pages of `bytes` (at image `offset`, page-aligned) as blocks of
    /// runs of consecutive non-zero pages, at most [`MAX_BLOCK`] each: zero pages take no
    /// space. A partial last page is written if it is not all zero.
    ///
    /// ```
    /// use dsu::snapshot::format::{BlockKind, Compression, Encoder, Metadata};
    /// let meta = Metadata { segment: "a".into(), ..Default::default() };
    /// let mut enc = Encoder::new(Vec::new(), &meta, Compression::None)?;
    /// let mut bytes = vec![0u8; 3 * 4096];
    /// bytes[0] = 1;
    /// bytes[2 * 4096] = 1;
    /// enc.pages(BlockKind::Heap, 0, &bytes)?;
    /// assert_eq!(enc.totals().blocks, 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pages(&mut self, kind: BlockKind, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut run: Option<usize> = None;
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + PAGE_SIZE).min(bytes.len());
            let zero = is_zero(&bytes[at..end]);
            if let Some(start) = run {
                if zero || at - start >= MAX_BLOCK {
                    self.block(kind, offset + start as u64, &bytes[start..at])?;
                    run = None;
                }
            }
            if !zero && run.is_none() {
                run = Some(at);
            }
            at = end;
        }
        if let Some(start) = run {
            self.block(kind, offset + start as u64, &bytes[start..])?;
        }
        Ok(())
    }

    /// What was written so far.
    ///
    /// ```
    /// use dsu::snapshot::format::{Compression, Encoder, Metadata};
    /// let enc = Encoder::new(Vec::new(), &Metadata { segment: "a".into(), ..Default::default() }, Compression::None)?;
    /// assert_eq!(enc.totals().blocks, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Writes the trailer, flushes, and returns the writer and the totals.
    ///
    /// ```
    /// use dsu::snapshot::format::{Compression, Encoder, Metadata};
    /// let enc = Encoder::new(Vec::new(), &Metadata { segment: "a".into(), ..Default::default() }, Compression::None)?;
    /// let (file, totals) = enc.finish()?;
    /// assert_eq!(file.len() as u64, totals.file_bytes);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn finish(mut self) -> io::Result<(W, Totals)> {
        self.totals.file_bytes += TRAILER_SIZE as u64;
        let t = self.totals;
        let mut b = [0u8; TRAILER_SIZE];
        b[..8].copy_from_slice(&END_MAGIC);
        for (i, x) in [
            t.blocks,
            t.segment_pages,
            t.heap_pages,
            t.stored_bytes,
            t.file_bytes,
            self.digest.digest(),
        ]
        .into_iter()
        .enumerate()
        {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&x.to_le_bytes());
        }
        let hash = xxh3_64(&b[..56]);
        b[56..].copy_from_slice(&hash.to_le_bytes());
        self.w.write_all(&b)?;
        self.w.flush()?;
        Ok((self.w, t))
    }
}

#[cfg(feature = "zstd")]
fn compress(raw: &[u8], level: i32) -> io::Result<Option<Vec<u8>>> {
    zstd::bulk::compress(raw, level).map(Some)
}

#[cfg(not(feature = "zstd"))]
fn compress(_raw: &[u8], _level: i32) -> io::Result<Option<Vec<u8>>> {
    Ok(None)
}

#[cfg(feature = "zstd")]
fn decompress(stored: &[u8], raw_len: usize, offset: u64) -> Result<Vec<u8>, FormatError> {
    match zstd::bulk::decompress(stored, raw_len) {
        Ok(d) if d.len() == raw_len => Ok(d),
        _ => Err(corrupt(
            offset,
            "a compressed block does not decompress to its length",
        )),
    }
}

#[cfg(not(feature = "zstd"))]
fn decompress(_stored: &[u8], _raw_len: usize, _offset: u64) -> Result<Vec<u8>, FormatError> {
    Err(FormatError::NoZstd)
}

/// Reads and checks an image: [`new`](Self::new) the header and metadata,
/// [`next_block`](Self::next_block) each block and at last the trailer. Nothing it returns
/// is trusted before `next_block` has returned `Ok(None)`: only then is the whole file
/// known to be complete and intact.
///
/// ```
/// use dsu::snapshot::format::{Compression, Decoder, Encoder, FormatError, Metadata};
/// let (file, _) = Encoder::new(Vec::new(), &Metadata { segment: "a".into(), ..Default::default() }, Compression::None)?.finish()?;
/// let cut = &file[..file.len() - 1];
/// let mut dec = Decoder::new(cut).unwrap();
/// assert!(matches!(dec.next_block(), Err(FormatError::Truncated { .. })));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Decoder<R: Read> {
    r: R,
    pos: u64,
    flags: u32,
    meta: Metadata,
    /// Variables' page ranges in bytes, sorted: segment blocks must lie inside one.
    ranges: Vec<(u64, u64)>,
    digest: Xxh3,
    totals: Totals,
    last: Option<(BlockKind, u64)>,
    done: bool,
}

impl<R: Read> Decoder<R> {
    /// Reads and checks the header and the metadata.
    ///
    /// ```
    /// use dsu::snapshot::format::{Decoder, FormatError};
    /// assert!(matches!(Decoder::new(&b"hello"[..]), Err(FormatError::NotASnapshot)));
    /// ```
    pub fn new(mut r: R) -> Result<Self, FormatError> {
        let mut h = [0u8; HEADER_SIZE];
        let got = read_full(&mut r, &mut h, 0)?;
        if got < 8 || h[..8] != MAGIC {
            return Err(if got < 8 && MAGIC.starts_with(&h[..got]) {
                FormatError::Truncated {
                    offset: got as u64,
                    what: "the header",
                }
            } else {
                FormatError::NotASnapshot
            });
        }
        if got >= 12 {
            let version = le32(&h, 8);
            if version > FORMAT_VERSION {
                return Err(FormatError::FutureVersion { version });
            }
        }
        if got < HEADER_SIZE {
            return Err(FormatError::Truncated {
                offset: got as u64,
                what: "the header",
            });
        }
        let h_hash = le64(&h, 56);
        if xxh3_64(&h[..56]) != h_hash {
            return Err(corrupt(0, "the header's checksum does not match"));
        }
        let version = le32(&h, 8);
        if version != FORMAT_VERSION {
            return Err(corrupt(
                8,
                format!("format version {version} does not exist"),
            ));
        }
        if le32(&h, 12) as usize != HEADER_SIZE
            || le32(&h, 20) as usize != PAGE_SIZE
            || h[40..56] != [0; 16]
        {
            return Err(corrupt(
                12,
                "the header's size, page size or reserved bytes are wrong",
            ));
        }
        let flags = le32(&h, 16);
        if flags & !FLAG_ZSTD != 0 {
            return Err(FormatError::UnknownFeatures { flags });
        }
        if flags & FLAG_ZSTD != 0 && !cfg!(feature = "zstd") {
            return Err(FormatError::NoZstd);
        }
        let md_len = le64(&h, 24);
        if md_len > MAX_METADATA {
            return Err(corrupt(
                24,
                format!("the metadata length {md_len} is above {MAX_METADATA}"),
            ));
        }
        let mut md = vec![0u8; md_len as usize];
        let got = read_full(&mut r, &mut md, HEADER_SIZE as u64)?;
        if got < md.len() {
            return Err(FormatError::Truncated {
                offset: (HEADER_SIZE + got) as u64,
                what: "the metadata",
            });
        }
        let md_hash = le64(&h, 32);
        if xxh3_64(&md) != md_hash {
            return Err(corrupt(
                HEADER_SIZE as u64,
                "the metadata's checksum does not match",
            ));
        }
        let meta = decode_metadata(&md, HEADER_SIZE as u64)?;
        let page = PAGE_SIZE as u64;
        let mut ranges: Vec<(u64, u64)> = meta
            .variables
            .iter()
            .map(|v| (v.first_page * page, (v.first_page + v.page_count) * page))
            .collect();
        ranges.sort_unstable();
        let mut digest = Xxh3::new();
        digest.update(&h_hash.to_le_bytes());
        digest.update(&md_hash.to_le_bytes());
        Ok(Decoder {
            r,
            pos: HEADER_SIZE as u64 + md_len,
            flags,
            meta,
            ranges,
            digest,
            totals: Totals::default(),
            last: None,
            done: false,
        })
    }

    /// The image's metadata (checked for consistency; its bytes are hashed).
    ///
    /// ```
    /// use dsu::snapshot::format::{Compression, Decoder, Encoder, Metadata};
    /// let (file, _) = Encoder::new(Vec::new(), &Metadata { segment: "a".into(), ..Default::default() }, Compression::None)?.finish()?;
    /// assert_eq!(Decoder::new(&file[..]).unwrap().metadata().segment, "a");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The header's flags ([`FLAG_ZSTD`]).
    ///
    /// ```
    /// use dsu::snapshot::format::{Compression, Decoder, Encoder, Metadata};
    /// let (file, _) = Encoder::new(Vec::new(), &Metadata { segment: "a".into(), ..Default::default() }, Compression::None)?.finish()?;
    /// assert_eq!(Decoder::new(&file[..]).unwrap().flags(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// What was read so far; after `next_block` returned `Ok(None)`, the whole file's.
    ///
    /// ```
    /// use dsu::snapshot::format::{Compression, Decoder, Encoder, Metadata};
    /// let (file, _) = Encoder::new(Vec::new(), &Metadata { segment: "a".into(), ..Default::default() }, Compression::None)?.finish()?;
    /// let mut d = Decoder::new(&file[..]).unwrap();
    /// while d.next_block().unwrap().is_some() {}
    /// assert_eq!(d.totals().file_bytes, file.len() as u64);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The next block, checked; `Ok(None)` once the trailer is read and checked and the
    /// file has ended.
    ///
    /// ```
    /// use dsu::snapshot::format::{BlockKind, Compression, Decoder, Encoder, HeapMeta, Metadata};
    /// let heap = HeapMeta { base: 1 << 40, reserve: 1 << 20, size: 100 };
    /// let meta = Metadata { segment: "a".into(), heap: Some(heap), ..Default::default() };
    /// let mut enc = Encoder::new(Vec::new(), &meta, Compression::None)?;
    /// enc.block(BlockKind::Heap, 0, &[9; 100])?;
    /// let (file, _) = enc.finish()?;
    /// let mut dec = Decoder::new(&file[..]).unwrap();
    /// assert_eq!(dec.next_block().unwrap().unwrap().data, vec![9; 100]);
    /// assert!(dec.next_block().unwrap().is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn next_block(&mut self) -> Result<Option<Block>, FormatError> {
        if self.done {
            return Ok(None);
        }
        let start = self.pos;
        let mut magic = [0u8; 4];
        self.read(&mut magic, "a block header or the trailer")?;
        if magic == END_MAGIC[..4] {
            self.trailer(start)?;
            self.done = true;
            return Ok(None);
        }
        if magic != BLOCK_MAGIC {
            return Err(corrupt(start, "a block header has no block magic"));
        }
        let mut h = [0u8; BLOCK_HEADER_SIZE];
        h[..4].copy_from_slice(&magic);
        self.read(&mut h[4..], "a block header")?;
        let raw_len = le64(&h, 16);
        let stored_len = le64(&h, 24);
        let hash = le64(&h, 40);
        // Check the sizes before reading (and allocating) the data; the hash comes after.
        let stored_max = MAX_BLOCK as u64 + MAX_BLOCK as u64 / 64 + 1024;
        if raw_len == 0 || raw_len > MAX_BLOCK as u64 || stored_len == 0 || stored_len > stored_max
        {
            return Err(corrupt(
                start,
                format!("a block's lengths ({raw_len} raw, {stored_len} stored) are impossible"),
            ));
        }
        let mut stored = vec![0u8; stored_len as usize];
        self.read(&mut stored, "a block's data")?;
        let mut hasher = Xxh3::new();
        hasher.update(&h[..40]);
        hasher.update(&stored);
        if hasher.digest() != hash {
            return Err(corrupt(start, "a block's checksum does not match"));
        }
        let kind = match h[4] {
            1 => BlockKind::Segment,
            2 => BlockKind::Heap,
            k => return Err(corrupt(start, format!("a block has the unknown kind {k}"))),
        };
        if h[6..8] != [0, 0] || h[32..40] != [0; 8] {
            return Err(corrupt(start, "a block's reserved bytes are not zero"));
        }
        let offset = le64(&h, 8);
        let data = match h[5] {
            0 if stored_len == raw_len => stored,
            1 if self.flags & FLAG_ZSTD != 0 => decompress(&stored, raw_len as usize, start)?,
            c => {
                return Err(corrupt(
                    start,
                    format!("a block has compression {c} with lengths {raw_len}/{stored_len}"),
                ));
            }
        };
        self.check_place(start, kind, offset, raw_len)?;
        self.digest.update(&hash.to_le_bytes());
        let t = &mut self.totals;
        t.blocks += 1;
        let pages = raw_len.div_ceil(PAGE_SIZE as u64);
        match kind {
            BlockKind::Segment => t.segment_pages += pages,
            BlockKind::Heap => t.heap_pages += pages,
        }
        t.raw_bytes += raw_len;
        t.stored_bytes += stored_len;
        t.compressed_blocks += u64::from(h[5] == 1);
        self.last = Some((kind, offset + raw_len));
        Ok(Some(Block { kind, offset, data }))
    }

    /// A block must lie where the metadata says data can be, after the previous one.
    fn check_place(
        &self,
        start: u64,
        kind: BlockKind,
        offset: u64,
        len: u64,
    ) -> Result<(), FormatError> {
        let page = PAGE_SIZE as u64;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| corrupt(start, "a block's offset overflows"))?;
        let ordered = match self.last {
            Some((BlockKind::Heap, _)) if kind == BlockKind::Segment => false,
            Some((k, prev_end)) if k == kind => offset >= prev_end,
            _ => true,
        };
        if !ordered || offset % page != 0 {
            return Err(corrupt(
                start,
                format!("a block at image offset {offset:#x} is out of order or not page-aligned"),
            ));
        }
        let inside = match kind {
            BlockKind::Segment => {
                len % page == 0 && {
                    let i = self.ranges.partition_point(|&(s, _)| s <= offset);
                    i > 0 && end <= self.ranges[i - 1].1
                }
            }
            BlockKind::Heap => self.meta.heap.is_some_and(|h| end <= h.size),
        };
        if !inside {
            return Err(corrupt(
                start,
                format!(
                    "a {kind:?} block at image offset {offset:#x} ({len} bytes) lies outside every variable or the heap"
                ),
            ));
        }
        Ok(())
    }

    fn trailer(&mut self, start: u64) -> Result<(), FormatError> {
        let mut b = [0u8; TRAILER_SIZE];
        b[..4].copy_from_slice(&END_MAGIC[..4]);
        self.read(&mut b[4..], "the trailer")?;
        if b[..8] != END_MAGIC || xxh3_64(&b[..56]) != le64(&b, 56) {
            return Err(corrupt(start, "the trailer's checksum does not match"));
        }
        self.totals.file_bytes = self.pos;
        let t = self.totals;
        let want = [
            t.blocks,
            t.segment_pages,
            t.heap_pages,
            t.stored_bytes,
            t.file_bytes,
            self.digest.digest(),
        ];
        for (i, w) in want.into_iter().enumerate() {
            if le64(&b, 8 + 8 * i) != w {
                return Err(corrupt(
                    start,
                    "the trailer does not match the blocks before it (blocks are missing or were reordered)",
                ));
            }
        }
        let mut extra = [0u8; 1];
        match read_full(&mut self.r, &mut extra, self.pos)? {
            0 => Ok(()),
            _ => Err(corrupt(self.pos, "the file continues after its trailer")),
        }
    }

    fn read(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), FormatError> {
        let got = read_full(&mut self.r, buf, self.pos)?;
        self.pos += got as u64;
        if got < buf.len() {
            return Err(FormatError::Truncated {
                offset: self.pos,
                what,
            });
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the end of the file; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<usize, FormatError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(FormatError::Io {
                    offset: offset + got as u64,
                    source,
                });
            }
        }
    }
    Ok(got)
}
