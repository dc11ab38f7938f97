//! `dsuctl save`, `restore` and `inspect`: snapshot files of segments (dsu::snapshot).
//!
//! Periodic saves (`save SEG DIR --every SECS --keep N`) name their files
//! `SEG.<UTC time of the save, RFC 3339 with milliseconds>.dsusnap`, e.g.
//! `kv.2026-12-01T06:31:28.123Z.dsusnap`, so that the names sort by time; pruning removes
//! the oldest files of that pattern (and no other file) beyond the newest N.

use crate::format::{HeapAllocatorJson, TypeJson, VARIABLE_COLUMNS, table, utc};
use dsu::snapshot::{self, ImageInfo, RestoreOptions, SaveOptions, Segment, SnapshotInfo};
use dsu::typedesc::TypeDesc;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// `save --json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct SaveJson {
    pub segment: String,
    pub path: String,
    pub bytes: u64,
    pub pages_stored: u64,
    pub segment_pages: u64,
    pub heap_pages: u64,
    pub raw_bytes: u64,
    pub variables: usize,
    pub generation: u64,
    pub taken_ns: u64,
    pub taken: String,
    pub snapshot_call_us: u128,
    pub duration_us: u128,
    /// Snapshots taken to find an instant with no dsu lock held.
    pub attempts: u32,
    /// dsu locks the image shows held (0 unless every attempt found one).
    pub held_locks: u64,
    /// Files removed by --keep after this save.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
}

impl SaveJson {
    fn new(segment: &str, i: &SnapshotInfo, pruned: Vec<String>) -> Self {
        SaveJson {
            segment: segment.into(),
            path: i.path.display().to_string(),
            bytes: i.bytes,
            pages_stored: i.pages_stored,
            segment_pages: i.segment_pages,
            heap_pages: i.heap_pages,
            raw_bytes: i.raw_bytes,
            variables: i.variables,
            generation: i.generation,
            taken_ns: i.taken_ns,
            taken: utc(i.taken_ns),
            snapshot_call_us: i.snapshot_call.as_micros(),
            duration_us: i.duration.as_micros(),
            attempts: i.attempts,
            held_locks: i.held_locks,
            pruned,
        }
    }
}

/// `save`'s line of text.
pub fn save_text(segment: &str, i: &SnapshotInfo) -> String {
    let attempts = match (i.attempts, i.held_locks) {
        (1, 0) => String::new(),
        (n, 0) => format!(", {n} snapshots taken to find an instant with no dsu lock held"),
        (n, held) => format!(
            "; {held} dsu lock(s) held at that instant (all {n} snapshots found some): the restored program takes them over as after a SIGKILL of their holders"
        ),
    };
    format!(
        "saved segment {segment} to {}: {} bytes, {} pages stored ({} segment, {} heap), {} variables, generation {}, taken {} in {:.1} ms (snapshot call {:.3} ms){attempts}\n",
        i.path.display(),
        i.bytes,
        i.pages_stored,
        i.segment_pages,
        i.heap_pages,
        i.variables,
        i.generation,
        utc(i.taken_ns),
        i.duration.as_secs_f64() * 1e3,
        i.snapshot_call.as_secs_f64() * 1e3,
    )
}

/// The file name of a periodic save of `segment` at `when`.
pub fn periodic_name(segment: &str, when: SystemTime) -> String {
    format!(
        "{segment}.{}.{}",
        humantime::format_rfc3339_millis(when),
        snapshot::EXTENSION
    )
}

/// Whether `name` is a periodic save of `segment` (the pattern of [`periodic_name`]).
pub fn is_periodic_name(segment: &str, name: &str) -> bool {
    name.strip_prefix(segment)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix(snapshot::EXTENSION))
        .and_then(|r| r.strip_suffix('.'))
        .is_some_and(|t| t.len() == 24 && humantime::parse_rfc3339(t).is_ok())
}

/// Removes the oldest periodic saves of `segment` in `dir` beyond the newest `keep`;
/// returns the paths removed.
pub fn prune(dir: &Path, segment: &str, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_periodic_name(segment, n))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for n in &names[..excess] {
        let p = dir.join(n);
        std::fs::remove_file(&p)?;
        removed.push(p);
    }
    Ok(removed)
}

/// What `dsuctl save` was asked.
pub struct Save<'a> {
    pub device: &'a str,
    pub segment: &'a str,
    pub target: &'a Path,
    pub compress: bool,
    pub every: Option<Duration>,
    pub keep: Option<usize>,
    pub count: Option<u64>,
    pub json: bool,
    pub lock_attempts: u32,
}

/// `dsuctl save`: one save to a file, or periodic saves into a directory until killed (or
/// `--count` saves). Returns the exit status: with --every, 1 if any save failed.
pub fn save(s: &Save<'_>) -> Result<u8, crate::Failure> {
    let seg = Segment::open_on(s.device, s.segment).map_err(crate::device_failure(s.device))?;
    let options = SaveOptions {
        lock_attempts: s.lock_attempts,
        ..if s.compress {
            SaveOptions::compressed()
        } else {
            SaveOptions::default()
        }
    };
    let print = |i: &SnapshotInfo, pruned: Vec<PathBuf>| {
        let text = if s.json {
            serde_json::to_string(&SaveJson::new(
                s.segment,
                i,
                pruned.iter().map(|p| p.display().to_string()).collect(),
            ))
            .expect("serialisable")
                + "\n"
        } else {
            let mut t = save_text(s.segment, i);
            for p in pruned {
                t.push_str(&format!("removed {}\n", p.display()));
            }
            t
        };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    };
    let Some(every) = s.every else {
        let info = seg.snapshot_with(s.target, &options)?;
        print(&info, Vec::new());
        return Ok(0);
    };
    if !s.target.is_dir() {
        return Err(crate::Failure::Usage(format!(
            "{}: with --every, the target must be an existing directory (the saves are named {})",
            s.target.display(),
            periodic_name(s.segment, SystemTime::UNIX_EPOCH)
        )));
    }
    let mut failed = false;
    let mut done = 0u64;
    let start = Instant::now();
    loop {
        let path = s.target.join(periodic_name(s.segment, SystemTime::now()));
        match seg.snapshot_with(&path, &options) {
            Ok(info) => {
                let pruned = match s.keep {
                    Some(keep) => prune(s.target, s.segment, keep).unwrap_or_else(|e| {
                        eprintln!("dsuctl: pruning {}: {e}", s.target.display());
                        Vec::new()
                    }),
                    None => Vec::new(),
                };
                print(&info, pruned);
            }
            Err(e) => {
                failed = true;
                eprintln!(
                    "dsuctl: save of {} to {} failed: {e}",
                    s.segment,
                    path.display()
                );
            }
        }
        done += 1;
        if s.count.is_some_and(|c| done >= c) {
            return Ok(u8::from(failed));
        }
        // The next save at start + done * every (no drift); one late save is not repeated.
        let next = start + every * done as u32;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// `restore --json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct RestoreJson {
    pub segment: String,
    pub path: String,
    pub variables: usize,
    pub segment_pages: u64,
    pub heap_pages: u64,
    pub bytes: u64,
    pub taken_ns: u64,
    pub duration_us: u128,
}

/// `dsuctl restore FILE [--name SEG] [--mode MODE]`.
pub fn restore(
    device: &str,
    file: &Path,
    name: Option<&str>,
    mode: Option<u32>,
    json: bool,
) -> Result<String, crate::Failure> {
    let options = RestoreOptions {
        device: Some(device.into()),
        mode,
    };
    let r = snapshot::restore_with(file, name, &options).map_err(crate::device_failure(device))?;
    Ok(if json {
        crate::json(&RestoreJson {
            segment: r.segment.clone(),
            path: file.display().to_string(),
            variables: r.variables,
            segment_pages: r.segment_pages,
            heap_pages: r.heap_pages,
            bytes: r.bytes,
            taken_ns: r.taken_ns,
            duration_us: r.duration.as_micros(),
        })
    } else {
        format!(
            "restored segment {} from {} (taken {}): {} variables, {} segment pages and {} heap pages of data, in {:.1} ms\n",
            r.segment,
            file.display(),
            utc(r.taken_ns),
            r.variables,
            r.segment_pages,
            r.heap_pages,
            r.duration.as_secs_f64() * 1e3
        )
    })
}

/// `inspect --json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct InspectJson {
    pub path: String,
    pub format_version: u32,
    pub bytes: u64,
    pub compressed_blocks: u64,
    pub blocks: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub segment: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: String,
    pub generation: u64,
    pub taken_ns: u64,
    pub taken: String,
    pub pages: u64,
    pub segment_pages_stored: u64,
    pub variables: Vec<InspectVarJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap: Option<InspectHeapJson>,
}

/// A variable of `inspect --json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct InspectVarJson {
    pub name: String,
    pub size: u64,
    pub align: u64,
    pub first_page: u64,
    pub pages: u64,
    pub fingerprint: String,
    pub created_label: String,
    pub created_ns: u64,
    #[serde(rename = "type")]
    pub type_desc: Option<TypeJson>,
}

/// The heap of `inspect --json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct InspectHeapJson {
    pub base: String,
    pub reserve: u64,
    pub size: u64,
    pub pages_stored: u64,
    /// The allocator's counters over the image's heap (absent if it was never formatted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocator: Option<HeapAllocatorJson>,
}

fn type_of(v: &dsu::snapshot::format::VarMeta) -> Option<TypeDesc> {
    let text = std::str::from_utf8(&v.type_desc).ok()?;
    (!text.is_empty())
        .then(|| TypeDesc::parse(text).ok())
        .flatten()
}

/// `inspect --json` of `i`.
pub fn inspect_json(i: &ImageInfo) -> InspectJson {
    let m = &i.metadata;
    InspectJson {
        path: i.path.display().to_string(),
        format_version: i.format_version,
        bytes: i.totals.file_bytes,
        compressed_blocks: i.totals.compressed_blocks,
        blocks: i.totals.blocks,
        raw_bytes: i.totals.raw_bytes,
        stored_bytes: i.totals.stored_bytes,
        segment: m.segment.clone(),
        uid: m.uid,
        gid: m.gid,
        mode: format!("{:04o}", m.mode),
        generation: m.generation,
        taken_ns: m.taken_ns,
        taken: utc(m.taken_ns),
        pages: m.pages,
        segment_pages_stored: i.totals.segment_pages,
        variables: m
            .variables
            .iter()
            .map(|v| InspectVarJson {
                name: v.name.clone(),
                size: v.size,
                align: v.align,
                first_page: v.first_page,
                pages: v.page_count,
                fingerprint: format!("{:016x}", v.fingerprint),
                created_label: v.created_label.clone(),
                created_ns: v.created_ns,
                type_desc: type_of(v).as_ref().map(TypeJson::from),
            })
            .collect(),
        heap: m.heap.map(|h| InspectHeapJson {
            base: format!("{:#x}", h.base),
            reserve: h.reserve,
            size: h.size,
            pages_stored: i.totals.heap_pages,
            allocator: i.heap_stats.map(|st| HeapAllocatorJson {
                allocated_bytes: st.allocated_bytes,
                allocated_blocks: st.allocated_blocks,
                free_bytes: st.free_bytes,
                free_blocks: st.free_blocks,
                largest_free: st.largest_free,
            }),
        }),
    }
}

/// `inspect`'s text.
pub fn inspect_text(i: &ImageInfo) -> String {
    let m = &i.metadata;
    let t = &i.totals;
    let mut out = format!(
        "snapshot {}: format {}, {} bytes, {} blocks ({} zstd-compressed), {} bytes of data stored as {}\n",
        i.path.display(),
        i.format_version,
        t.file_bytes,
        t.blocks,
        t.compressed_blocks,
        t.raw_bytes,
        t.stored_bytes
    );
    out.push_str(&format!(
        "segment {}: owner {}:{}, mode {:04o}, generation {}, taken {}\npages: {} ({} stored)\n",
        m.segment,
        m.uid,
        m.gid,
        m.mode,
        m.generation,
        utc(m.taken_ns),
        m.pages,
        t.segment_pages
    ));
    if let Some(h) = m.heap {
        out.push_str(&format!(
            "heap: base {:#x}, reserve {} bytes, size {} bytes ({} pages stored)\n",
            h.base, h.reserve, h.size, t.heap_pages
        ));
        out.push_str(&match i.heap_stats {
            Some(st) => format!(
                "heap: allocated {} bytes in {} blocks, free {} bytes in {} blocks, largest free block {} bytes\n",
                st.allocated_bytes, st.allocated_blocks, st.free_bytes, st.free_blocks, st.largest_free
            ),
            None => "heap: no allocator counters (the heap was never formatted)\n".into(),
        });
    }
    out.push_str(&format!("\nvariables ({}):\n", m.variables.len()));
    let rows: Vec<Vec<String>> = m
        .variables
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.size.to_string(),
                v.page_count.to_string(),
                format!("{:016x}", v.fingerprint),
                if v.created_label.is_empty() {
                    "-".into()
                } else {
                    v.created_label.clone()
                },
                utc(v.created_ns),
                type_of(v).map_or("-".into(), |t| t.name),
            ]
        })
        .collect();
    out.push_str(&table(&VARIABLE_COLUMNS, &rows));
    out
}

/// `dsuctl inspect FILE` (needs no module).
pub fn inspect(file: &Path, json: bool) -> Result<String, crate::Failure> {
    let i = snapshot::inspect(file)?;
    Ok(if json {
        crate::json(&inspect_json(&i))
    } else {
        inspect_text(&i)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_names_sort_by_time_and_are_recognised() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_570_688_123);
        let n = periodic_name("kv", t);
        assert_eq!(n, "kv.2025-12-01T06:31:28.123Z.dsusnap");
        assert!(is_periodic_name("kv", &n));
        assert!(!is_periodic_name("k", &n), "another segment's prefix");
        assert!(!is_periodic_name("kv", "kv.backup.dsusnap"));
        assert!(!is_periodic_name("kv", "kv.dsusnap"));
        assert!(!is_periodic_name(
            "kv",
            ".kv.2025-12-01T06:31:28.123Z.dsusnap.tmp.1.0"
        ));
        let later = periodic_name("kv", t + Duration::from_secs(1));
        assert!(n < later);
    }

    #[test]
    fn prune_keeps_the_newest_and_touches_nothing_else() {
        let dir = std::env::temp_dir().join(format!("dsuctl-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_570_688);
        let names: Vec<String> = (0..5)
            .map(|i| periodic_name("kv", t + Duration::from_secs(i * 60)))
            .collect();
        for n in &names {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        std::fs::write(dir.join("kv.keep-me.dsusnap"), b"x").unwrap();
        std::fs::write(dir.join(periodic_name("kv2", t)), b"x").unwrap();
        let removed = prune(&dir, "kv", 2).unwrap();
        assert_eq!(
            removed,
            names[..3].iter().map(|n| dir.join(n)).collect::<Vec<_>>()
        );
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![
            names[3].clone(),
            names[4].clone(),
            "kv.keep-me.dsusnap".to_string(),
            periodic_name("kv2", t),
        ];
        want.sort();
        assert_eq!(left, want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn inspect_text_lists_variables_and_heap_usage() {
        use dsu::snapshot::format::{HeapMeta, Metadata, Totals, VarMeta};
        let i = ImageInfo {
            path: "/s/kv.dsusnap".into(),
            format_version: 1,
            flags: 0,
            metadata: Metadata {
                segment: "kv".into(),
                mode: 0o640,
                uid: 1000,
                gid: 100,
                generation: 3,
                taken_ns: 1_700_000_000_000_000_000,
                pages: 2,
                heap: Some(HeapMeta {
                    base: 0x3000_0000_0000,
                    reserve: 1 << 30,
                    size: 8192,
                }),
                variables: vec![VarMeta {
                    name: "kv::COUNT".into(),
                    size: 8,
                    align: 8,
                    fingerprint: 0xab,
                    created_label: "1.0".into(),
                    created_ns: 1_700_000_000_000_000_000,
                    type_desc: b"u64\n".to_vec(),
                    first_page: 0,
                    page_count: 1,
                }],
            },
            totals: Totals {
                blocks: 2,
                segment_pages: 1,
                heap_pages: 1,
                raw_bytes: 8192,
                stored_bytes: 8192,
                file_bytes: 8500,
                compressed_blocks: 0,
            },
            heap_stats: Some(dsu::heap::HeapStats {
                allocated_bytes: 4096,
                allocated_blocks: 3,
                free_bytes: 1024,
                free_blocks: 1,
                largest_free: 1024,
                ..Default::default()
            }),
        };
        let t = inspect_text(&i);
        assert!(
            t.contains(
                "segment kv: owner 1000:100, mode 0640, generation 3, taken 2023-11-14T22:13:20Z"
            ),
            "{t}"
        );
        assert!(
            t.contains("heap: allocated 4096 bytes in 3 blocks, free 1024 bytes in 1 blocks"),
            "{t}"
        );
        assert!(
            t.contains("kv::COUNT  8     1      00000000000000ab  1.0"),
            "{t}"
        );
        let j = serde_json::to_value(inspect_json(&i)).unwrap();
        assert_eq!(j["variables"][0]["fingerprint"], "00000000000000ab");
        assert_eq!(j["heap"]["allocator"]["allocated_bytes"], 4096);
        assert_eq!(j["mode"], "0640");
    }
}
