//! Host tests of the snapshot format and of the save and restore drivers, with an image in
//! memory instead of a snapshot fd and a recorder instead of a restoring handle.

use super::format::*;
use super::*;
use std::path::Path;

const PAGE: usize = PAGE_SIZE;

/// An image in memory: segment pages and heap bytes.
struct MemSource {
    seg: Vec<u8>,
    heap: Vec<u8>,
}

impl ImageSource for MemSource {
    fn segment(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        buf.copy_from_slice(&self.seg[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn heap(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        buf.copy_from_slice(&self.heap[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
}

/// What a restore did, in order.
#[derive(Debug, Default, PartialEq)]
struct Recorder {
    vars: Vec<(String, u64, Vec<u8>)>,
    heap: Option<HeapMeta>,
    heap_bytes: Vec<u8>,
    committed: bool,
}

impl RestoreSink for Recorder {
    fn variable(&mut self, v: &VarMeta, value: Option<&[u8]>) -> Result<()> {
        assert!(self.heap.is_none(), "variables come before the heap");
        let bytes = value.map_or_else(|| vec![0; v.size as usize], <[u8]>::to_vec);
        assert_eq!(bytes.len() as u64, v.size);
        self.vars.push((v.name.clone(), v.fingerprint, bytes));
        Ok(())
    }
    fn heap(&mut self, h: &HeapMeta) -> Result<()> {
        assert!(self.heap.is_none(), "one heap");
        self.heap = Some(*h);
        self.heap_bytes = vec![0; h.size as usize];
        Ok(())
    }
    fn heap_bytes(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let at = offset as usize;
        self.heap_bytes[at..at + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        self.committed = true;
        Ok(())
    }
}

fn var(name: &str, size: u64, first_page: u64, page_count: u64, desc: &str) -> VarMeta {
    VarMeta {
        name: name.into(),
        size,
        align: 8,
        fingerprint: 0x1000 + size,
        created_ns: 1_700_000_000_000_000_000 + size,
        created_label: "1.0".into(),
        type_desc: desc.as_bytes().to_vec(),
        first_page,
        page_count,
    }
}

/// A segment of 9 pages with variables around a gap and a zero variable, and a 64-page
/// heap with random, compressible and zero pages.
fn sample(seed: u64) -> (Metadata, MemSource) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let meta = Metadata {
        segment: "snap-test".into(),
        mode: 0o640,
        uid: 1000,
        gid: 100,
        generation: 7,
        taken_ns: 1_764_000_000_123_456_789,
        pages: 9,
        heap: Some(HeapMeta {
            base: 0x3000_0000_0000,
            reserve: 1 << 30,
            size: 64 * PAGE as u64,
        }),
        variables: vec![
            var("app::COUNTER", 8, 0, 1, "u64\n"),
            var("app::TABLE", 10_000, 1, 3, ""),
            var("app::ZERO", 4096, 4, 1, "[u8; 4096]\n"),
            // The gap (page 5) belongs to a variable that was collected.
            var("app::LAST", 5_000, 6, 2, "struct Last\n"),
            var("app::TAIL", 100, 8, 1, ""),
        ],
    };
    let mut seg = vec![0u8; 9 * PAGE];
    seg[..8].copy_from_slice(&42u64.to_le_bytes());
    for b in &mut seg[PAGE..PAGE + 10_000] {
        *b = rng.u8(..);
    }
    // Page 2 of TABLE stays zero in part: page 3 is [TABLE's tail, zeros].
    seg[2 * PAGE..3 * PAGE].fill(0);
    for (i, b) in seg[6 * PAGE..6 * PAGE + 5_000].iter_mut().enumerate() {
        *b = (i % 7) as u8; // compressible
    }
    seg[8 * PAGE + 99] = 0xee;
    let mut heap = vec![0u8; 64 * PAGE];
    for p in [0usize, 1, 2, 10, 11, 40, 63] {
        for b in &mut heap[p * PAGE..(p + 1) * PAGE] {
            *b = if p % 2 == 0 {
                rng.u8(..)
            } else {
                (p % 5) as u8 + 1
            };
        }
    }
    (meta, MemSource { seg, heap })
}

fn save(meta: &Metadata, src: &mut MemSource, compression: Compression) -> (Vec<u8>, Totals) {
    write_image(meta, src, Vec::new(), compression, Path::new("mem"))
        .unwrap()
        .unwrap()
}

fn restore_bytes(file: &[u8]) -> (Result<(Metadata, Totals)>, Recorder) {
    let mut rec = Recorder::default();
    let r = match Decoder::new(file) {
        Ok(dec) => restore_image(dec, &mut rec, Path::new("mem")),
        Err(problem) => Err(Error::BadSnapshot {
            path: "mem".into(),
            problem,
        }),
    };
    (r, rec)
}

/// The variables' expected values: `size` bytes from their pages.
fn expected_vars(meta: &Metadata, src: &MemSource) -> Vec<(String, u64, Vec<u8>)> {
    let mut vars: Vec<&VarMeta> = meta.variables.iter().collect();
    vars.sort_by_key(|v| v.first_page);
    vars.iter()
        .map(|v| {
            let at = v.first_page as usize * PAGE;
            (
                v.name.clone(),
                v.fingerprint,
                src.seg[at..at + v.size as usize].to_vec(),
            )
        })
        .collect()
}

#[test]
fn round_trip_restores_every_variable_and_the_heap() {
    for compression in [Compression::None, Compression::Zstd(3)] {
        let (meta, mut src) = sample(1);
        let (file, totals) = save(&meta, &mut src, compression);
        assert_eq!(totals.file_bytes, file.len() as u64);
        let (r, rec) = restore_bytes(&file);
        let (read_meta, read_totals) = r.unwrap();
        assert_eq!(read_meta, meta, "{compression:?}");
        assert_eq!(read_totals, totals, "{compression:?}");
        assert!(rec.committed);
        assert_eq!(rec.vars, expected_vars(&meta, &src));
        assert_eq!(rec.heap, meta.heap);
        assert_eq!(rec.heap_bytes, src.heap);
        if compression != Compression::None {
            assert!(
                totals.compressed_blocks > 0,
                "the compressible pages were compressed"
            );
            assert!(totals.stored_bytes < totals.raw_bytes);
        }
    }
}

#[test]
fn zero_pages_are_not_stored() {
    let (meta, mut src) = sample(2);
    let (file, totals) = save(&meta, &mut src, Compression::None);
    // Segment: COUNTER 1, TABLE pages 1 and 3 (page 2 is zero), LAST 2, TAIL 1; ZERO none.
    assert_eq!(totals.segment_pages, 6);
    assert_eq!(totals.heap_pages, 7);
    assert_eq!(totals.raw_bytes, 13 * PAGE as u64);
    assert!(file.len() < 14 * PAGE, "{} bytes", file.len());
    // Runs of consecutive non-zero pages of one variable are one block: COUNTER, TABLE's
    // two, LAST, TAIL; heap pages 0-2, 10-11, 40, 63.
    assert_eq!(totals.blocks, 5 + 4);
}

#[test]
fn an_empty_segment_and_a_heap_of_zeros_round_trip() {
    let meta = Metadata {
        segment: "empty".into(),
        heap: Some(HeapMeta {
            base: 0x4000_0000_0000,
            reserve: 1 << 20,
            size: 8192,
        }),
        ..Default::default()
    };
    let mut src = MemSource {
        seg: vec![],
        heap: vec![0; 8192],
    };
    let (file, totals) = save(&meta, &mut src, Compression::None);
    assert_eq!(totals.blocks, 0);
    let (r, rec) = restore_bytes(&file);
    r.unwrap();
    assert!(rec.committed && rec.vars.is_empty());
    assert_eq!(rec.heap, meta.heap, "the heap is created even with no data");
}

#[test]
fn inspect_walks_the_heap_of_the_image() {
    use crate::heap::{MemfdRegion, RawHeap};
    let heap = RawHeap::open(MemfdRegion::new(64 << 20).unwrap().leak()).unwrap();
    let blocks: Vec<_> = (0..50)
        .map(|i| heap.allocate(100 + i * 40, 8).unwrap())
        .collect();
    // SAFETY: blocks of this test's own heap, written before being freed.
    unsafe {
        for (i, b) in blocks.iter().enumerate() {
            b.as_ptr().write_bytes(i as u8 + 1, 100);
        }
        heap.deallocate(blocks[3]);
    }
    let stats = heap.stats();
    let base = heap.base();
    // SAFETY: the backed part of this test's heap, read as bytes (no other user).
    let bytes = unsafe { std::slice::from_raw_parts(base, stats.size) }.to_vec();
    let meta = Metadata {
        segment: "inspect".into(),
        heap: Some(HeapMeta {
            base: base as u64,
            reserve: 64 << 20,
            size: stats.size as u64,
        }),
        ..Default::default()
    };
    let mut src = MemSource {
        seg: vec![],
        heap: bytes,
    };
    for compression in [Compression::None, Compression::Zstd(3)] {
        let (file, _) = save(&meta, &mut src, compression);
        let info = inspect_reader(&file[..], Path::new("mem")).unwrap();
        assert_eq!(info.heap_stats, Some(stats));
        assert_eq!(info.heap_stats.unwrap().allocated_blocks, 49);
    }
}

/// Every way a file can be damaged: each is refused with a format error, before any
/// commit, and nothing panics.
#[test]
fn seeded_corruption_run_refuses_every_damaged_file() {
    const SEED: u64 = 0x5eed_00d5;
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut files = Vec::new();
    for (i, compression) in [Compression::None, Compression::Zstd(3)]
        .into_iter()
        .enumerate()
    {
        let (meta, mut src) = sample(10 + i as u64);
        files.push(save(&meta, &mut src, compression).0);
    }
    let mut cases = 0;
    let mut check = |damaged: &[u8], what: &str| {
        let (r, rec) = restore_bytes(damaged);
        match r {
            Err(Error::BadSnapshot { .. }) => {}
            other => panic!("{what}: not refused as a bad snapshot: {other:?}"),
        }
        assert!(!rec.committed, "{what}: committed");
        assert!(
            matches!(
                inspect_reader(damaged, Path::new("mem")),
                Err(Error::BadSnapshot { .. })
            ),
            "{what}: inspect accepted it"
        );
        cases += 1;
    };
    for _ in 0..1200 {
        let file = &files[rng.usize(..files.len())];
        let mut f = file.clone();
        match rng.u8(..4) {
            // One bit.
            0 | 1 => {
                let at = rng.usize(..f.len());
                f[at] ^= 1 << rng.u8(..8);
                check(&f, &format!("bit flip at {at}"));
            }
            // A few bits anywhere.
            2 => {
                for _ in 0..rng.usize(2..6) {
                    let at = rng.usize(..f.len());
                    f[at] ^= 1 << rng.u8(..8);
                }
                if f != *file {
                    check(&f, "several bit flips");
                }
            }
            // Truncated.
            _ => {
                let len = rng.usize(..f.len());
                check(&f[..len], &format!("truncated to {len}"));
            }
        }
    }
    // Every bit of the header, the metadata and the trailer, in the first file.
    let file = &files[0];
    let md_end = HEADER_SIZE + u64::from_le_bytes(file[24..32].try_into().unwrap()) as usize;
    let trailer = file.len() - TRAILER_SIZE;
    for at in (0..md_end).chain(trailer..file.len()) {
        let mut f = file.clone();
        f[at] ^= 1 << (at % 8);
        check(&f, &format!("header/metadata/trailer bit at {at}"));
    }
    // Bytes appended.
    let mut f = file.clone();
    f.push(0);
    check(&f, "a byte appended");
    assert!(cases >= 1000, "{cases} cases");
    eprintln!("seed {SEED:#x}: {cases} damaged files refused");
}

/// Rewrites the header's hash after an edit, as a newer (or hostile) writer would.
fn rehash_header(f: &mut [u8]) {
    let h = xxhash_rust::xxh3::xxh3_64(&f[..56]);
    f[56..64].copy_from_slice(&h.to_le_bytes());
}

#[test]
fn a_future_version_is_refused_with_what_to_do() {
    let (meta, mut src) = sample(3);
    let (file, _) = save(&meta, &mut src, Compression::None);
    let mut f = file.clone();
    f[8..12].copy_from_slice(&2u32.to_le_bytes());
    rehash_header(&mut f);
    let (r, rec) = restore_bytes(&f);
    let msg = r.unwrap_err().to_string();
    assert!(!rec.committed && rec.vars.is_empty());
    assert_eq!(
        msg,
        "snapshot file mem: it was written by a newer dsu (snapshot format version 2; this dsu reads version 1): restore it with the dsuctl or library of that release, or upgrade this one; nothing was restored"
    );
    let mut f = file;
    f[16..20].copy_from_slice(&0x80u32.to_le_bytes());
    rehash_header(&mut f);
    let msg = restore_bytes(&f).0.unwrap_err().to_string();
    assert!(
        msg.contains("features this dsu does not know (header flags 0x80)"),
        "{msg}"
    );
}

#[test]
fn messages_name_the_problem_and_the_remedy() {
    let (meta, mut src) = sample(4);
    let (file, _) = save(&meta, &mut src, Compression::None);
    let msg = restore_bytes(&file[..file.len() - 10])
        .0
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("it is truncated: it ends at byte")
            && msg.contains("use a complete copy or an older snapshot"),
        "{msg}"
    );
    let mut f = file.clone();
    let last_block = file.len() - TRAILER_SIZE - 10;
    f[last_block] ^= 4;
    let msg = restore_bytes(&f).0.unwrap_err().to_string();
    assert!(
        msg.contains("it is corrupt: a block's checksum does not match at byte")
            && msg.contains("use another copy"),
        "{msg}"
    );
    let msg = restore_bytes(b"#!/bin/sh\necho hi\n")
        .0
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not a dsu snapshot"), "{msg}");
    let msg = restore_bytes(b"").0.unwrap_err().to_string();
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn a_missing_or_moved_block_is_caught_by_the_trailer() {
    let meta = Metadata {
        segment: "blocks".into(),
        pages: 3,
        variables: vec![var("a::A", 3 * 4096, 0, 3, "")],
        ..Default::default()
    };
    let mut src = MemSource {
        seg: vec![1u8; 3 * PAGE],
        heap: vec![],
    };
    // Three separate blocks: pages 0, 1, 2 written one by one.
    let mut enc = Encoder::new(Vec::new(), &meta, Compression::None).unwrap();
    for p in 0..3u64 {
        enc.block(BlockKind::Segment, p * PAGE as u64, &src.seg[..PAGE])
            .unwrap();
    }
    let (file, _) = enc.finish().unwrap();
    let (r, rec) = restore_bytes(&file);
    r.unwrap();
    assert!(rec.committed);
    // Cut the middle block out: every remaining byte is intact, the trailer disagrees.
    let md_end = HEADER_SIZE + u64::from_le_bytes(file[24..32].try_into().unwrap()) as usize;
    let block = BLOCK_HEADER_SIZE + PAGE;
    let mut f = file[..md_end + block].to_vec();
    f.extend_from_slice(&file[md_end + 2 * block..]);
    let (r, rec) = restore_bytes(&f);
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("trailer does not match"), "{msg}");
    assert!(!rec.committed);
    let _ = &mut src;
}

#[test]
fn the_encoder_refuses_blocks_out_of_order() {
    let meta = Metadata {
        segment: "order".into(),
        ..Default::default()
    };
    let mut enc = Encoder::new(Vec::new(), &meta, Compression::None).unwrap();
    enc.block(BlockKind::Heap, 0, &[1; 10]).unwrap();
    assert!(enc.block(BlockKind::Segment, 0, &[1; PAGE]).is_err());
    assert!(
        enc.block(BlockKind::Heap, 8192, &[1; MAX_BLOCK + 1])
            .is_err()
    );
    assert!(
        enc.block(BlockKind::Heap, 100, &[1; 10]).is_err(),
        "not page-aligned"
    );
}

#[test]
fn metadata_that_breaks_the_rules_is_refused() {
    let good = Metadata {
        segment: "rules".into(),
        pages: 2,
        variables: vec![var("a::A", 8, 0, 1, ""), var("a::B", 8, 1, 1, "")],
        ..Default::default()
    };
    let bad = [
        Metadata {
            variables: vec![var("a::A", 8, 0, 1, ""), var("a::B", 8, 0, 1, "")],
            ..good.clone()
        },
        Metadata {
            variables: vec![var("a::A", 8, 0, 1, ""), var("a::B", 8, 1, 5, "")],
            ..good.clone()
        },
        Metadata {
            variables: vec![var("a::A", 8000, 0, 1, "")],
            ..good.clone()
        },
        Metadata {
            segment: "bad/name".into(),
            ..good.clone()
        },
        Metadata {
            heap: Some(HeapMeta {
                base: 4097,
                reserve: 4096,
                size: 0,
            }),
            ..good.clone()
        },
    ];
    let (file, _) = Encoder::new(Vec::new(), &good, Compression::None)
        .unwrap()
        .finish()
        .unwrap();
    assert!(restore_bytes(&file).0.is_ok());
    for m in bad {
        let (file, _) = Encoder::new(Vec::new(), &m, Compression::None)
            .unwrap()
            .finish()
            .unwrap();
        let (r, rec) = restore_bytes(&file);
        assert!(matches!(r, Err(Error::BadSnapshot { .. })), "{m:?}");
        assert!(!rec.committed);
    }
}

#[test]
fn the_temporary_file_replaces_the_target_only_when_committed() {
    let dir = std::env::temp_dir().join(format!("dsu-snap-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("s.dsusnap");
    std::fs::write(&target, b"old").unwrap();
    {
        let mut t = TempFile::create(&target, 0o600).unwrap();
        t.file.write_all(b"half").unwrap();
        // Dropped without commit: the old file stays, the temporary one is gone.
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let mut t = TempFile::create(&target, 0o640).unwrap();
    t.file.write_all(b"new").unwrap();
    t.commit().unwrap();
    drop(t);
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode & !0o640,
        0,
        "a snapshot is no more readable than asked: {mode:o}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The bytes of a `sync::Mutex<u64>` held by this thread (its word, holder, mark, links,
/// token), taken while a guard lives.
fn held_mutex_bytes() -> Vec<u8> {
    let m: &'static crate::sync::Mutex<u64> = Box::leak(Box::new(crate::sync::Mutex::new(7)));
    let g = m.lock().unwrap();
    // SAFETY: reading the plain bytes of a live mutex's header (no reference to its data).
    let bytes = unsafe {
        std::slice::from_raw_parts((m as *const crate::sync::Mutex<u64>).cast::<u8>(), 56)
    }
    .to_vec();
    drop(g);
    bytes
}

/// A writer that scans stops at the first held lock if asked to (the save takes another
/// snapshot), and otherwise writes the image and counts the held locks, in segment pages
/// and in the heap.
#[test]
fn held_locks_stop_or_are_counted() {
    let (meta, mut src) = sample(1);
    let held = held_mutex_bytes();
    src.seg[3 * PAGE + 64..3 * PAGE + 64 + held.len()].copy_from_slice(&held);
    src.heap[40 * PAGE + 4096 - 8..40 * PAGE + 4096 - 8 + held.len()].copy_from_slice(&held);
    let write = |src: MemSource, stop_on_held: bool| {
        let mut scan = ScanSource {
            inner: src,
            segment: HeldLocks::default(),
            heap: HeldLocks::default(),
            stop_on_held,
        };
        let out = write_image(
            &meta,
            &mut scan,
            Vec::new(),
            Compression::None,
            Path::new("mem"),
        )
        .unwrap();
        (out.is_some(), scan.segment.count, scan.heap.count)
    };
    let copy = MemSource {
        seg: src.seg.clone(),
        heap: src.heap.clone(),
    };
    assert_eq!(
        write(copy, true),
        (false, 1, 0),
        "stopped at the segment's lock"
    );
    assert_eq!(
        write(src, false),
        (true, 1, 1),
        "written, both locks counted"
    );
    let (meta2, clean) = sample(1);
    assert_eq!(meta2.pages, meta.pages);
    assert_eq!(write(clean, true), (true, 0, 0), "no lock held: written");
}
