//! Output formatting: pure functions from the kernel's records to text and JSON.

use dsu::heap::HeapStats;
use dsu::sys::{Event, EventKind, GcReport, SegmentInfo, VariableInfo, VersionInfo};
use dsu::typedesc::TypeDesc;
use serde::Serialize;

/// The columns of a variable table (`dsuctl show`, `dsuctl inspect`).
pub const VARIABLE_COLUMNS: [&str; 7] = [
    "NAME",
    "SIZE",
    "PAGES",
    "FINGERPRINT",
    "CREATED BY",
    "CREATED AT",
    "TYPE",
];

/// A segment as `list --json` prints it.
#[derive(Serialize, Debug, PartialEq)]
pub struct SegmentJson {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: String,
    pub destroyed: bool,
    pub pages: u64,
    pub variables: u64,
    pub versions: u64,
    pub handles: u64,
    pub created_ns: u64,
    /// The shared heap, if the segment has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap: Option<HeapJson>,
}

/// A segment's shared heap as `list --json` and `show --json` print it.
#[derive(Serialize, Debug, PartialEq)]
pub struct HeapJson {
    /// The window's address, hex.
    pub base: String,
    /// The window's length in bytes.
    pub reserve: u64,
    /// Bytes backed.
    pub size: u64,
    /// The allocator's counters (`show --json` only; absent if they could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocator: Option<HeapAllocatorJson>,
}

/// A heap's allocator counters, from [`dsu::heap::stats_from_bytes`].
#[derive(Serialize, Debug, PartialEq)]
pub struct HeapAllocatorJson {
    pub allocated_bytes: usize,
    pub allocated_blocks: usize,
    pub free_bytes: usize,
    pub free_blocks: usize,
    pub largest_free: usize,
}

/// `dump --heap --json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct HeapDumpJson {
    pub segment: String,
    pub address: String,
    pub size: usize,
    pub hex: String,
}

impl From<&SegmentInfo> for SegmentJson {
    fn from(s: &SegmentInfo) -> Self {
        SegmentJson {
            name: s.name.clone(),
            uid: s.uid,
            gid: s.gid,
            mode: format!("{:04o}", s.mode),
            destroyed: s.destroyed,
            pages: s.pages,
            variables: s.variables,
            versions: s.versions,
            handles: s.handles,
            created_ns: s.created_ns,
            heap: s.heap.map(|h| HeapJson {
                base: format!("{:#x}", h.base),
                reserve: h.reserve,
                size: h.size,
                allocator: None,
            }),
        }
    }
}

/// A variable as `show --json` prints it.
#[derive(Serialize, Debug, PartialEq)]
pub struct VariableJson {
    pub name: String,
    pub size: u64,
    pub align: u64,
    pub pages: u64,
    pub first_page: u64,
    pub fingerprint: String,
    pub created_by: u64,
    pub created_label: String,
    pub created_ns: u64,
    #[serde(rename = "type")]
    pub type_desc: Option<TypeJson>,
}

impl From<&VariableInfo> for VariableJson {
    fn from(v: &VariableInfo) -> Self {
        VariableJson {
            name: v.name.clone(),
            size: v.size,
            align: v.align,
            pages: v.page_count,
            first_page: v.first_page,
            fingerprint: format!("{:016x}", v.fingerprint),
            created_by: v.created_by,
            created_label: v.created_label.clone(),
            created_ns: v.created_ns,
            type_desc: None,
        }
    }
}

/// A variable's type as `show --json` prints it (from the description stored in the
/// segment; `null` if its creator gave none).
#[derive(Serialize, Debug, PartialEq)]
pub struct TypeJson {
    pub name: String,
    pub size: u64,
    pub align: u64,
    pub fields: Vec<FieldJson>,
}

/// A field of a [`TypeJson`].
#[derive(Serialize, Debug, PartialEq)]
pub struct FieldJson {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub offset: u64,
    pub size: u64,
}

impl From<&TypeDesc> for TypeJson {
    fn from(t: &TypeDesc) -> Self {
        TypeJson {
            name: t.name.clone(),
            size: t.size,
            align: t.align,
            fields: t
                .fields
                .iter()
                .map(|f| FieldJson {
                    name: f.name.clone(),
                    type_name: f.type_name.clone(),
                    offset: f.offset,
                    size: f.size,
                })
                .collect(),
        }
    }
}

/// A version as `show --json` prints it.
#[derive(Serialize, Debug, PartialEq)]
pub struct VersionJson {
    pub id: u64,
    pub label: String,
    pub pid: i32,
    pub pages: u64,
    pub mappings: u64,
    pub bound_ns: u64,
    pub age_s: u64,
    /// `ready`, or `candidate` (bound, not ready yet: it may still abort).
    pub state: &'static str,
}

/// A version's state as `show` prints it.
pub fn version_state(v: &VersionInfo) -> &'static str {
    if v.ready { "ready" } else { "candidate" }
}

/// `gc --json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct GcJson {
    pub segment: String,
    pub dry_run: bool,
    pub generation: u64,
    pub total: u32,
    pub pages: u64,
    pub variables: Vec<VariableJson>,
}

/// `dsuctl gc SEG`: what was (or, with `dry_run`, would be) reclaimed.
pub fn gc_text(segment: &str, r: &GcReport, dry_run: bool) -> String {
    let verb = if dry_run {
        "would reclaim"
    } else {
        "reclaimed"
    };
    let mut out = format!(
        "segment {segment} (generation {}): {verb} {} variable(s), {} page(s)\n",
        r.generation, r.total, r.pages
    );
    if !r.variables.is_empty() {
        let rows: Vec<Vec<String>> = r
            .variables
            .iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    v.size.to_string(),
                    v.page_count.to_string(),
                    format!("{:016x}", v.fingerprint),
                    creator(v),
                ]
            })
            .collect();
        out.push_str(&table(
            &["NAME", "SIZE", "PAGES", "FINGERPRINT", "CREATED BY"],
            &rows,
        ));
    }
    if (r.variables.len() as u64) < u64::from(r.total) {
        out.push_str(&format!(
            "({} more not listed)\n",
            u64::from(r.total) - r.variables.len() as u64
        ));
    }
    out
}

/// `show --json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct ShowJson {
    pub segment: SegmentJson,
    pub variables: Vec<VariableJson>,
    pub versions: Vec<VersionJson>,
}

/// `dump --json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct DumpJson {
    pub segment: String,
    pub name: String,
    pub size: usize,
    pub fingerprint: String,
    pub hex: String,
}

/// An event as `watch --json` prints it (one object per line).
#[derive(Serialize, Debug, PartialEq)]
pub struct EventJson {
    pub event: String,
    pub version_id: u64,
    pub label: String,
    pub pid: i32,
    pub time_ns: u64,
    pub lost: u32,
}

impl From<&Event> for EventJson {
    fn from(e: &Event) -> Self {
        EventJson {
            event: event_kind(e.kind),
            version_id: e.version_id,
            label: e.label.clone(),
            pid: e.pid,
            time_ns: e.time_ns,
            lost: e.lost,
        }
    }
}

fn event_kind(k: EventKind) -> String {
    match k {
        EventKind::Bound => "bound".into(),
        EventKind::Ended => "ended".into(),
        EventKind::Ready => "ready".into(),
        EventKind::Aborted => "aborted".into(),
        EventKind::Other(n) => format!("kind-{n}"),
    }
}

/// `2024-05-01T12:00:00Z` from CLOCK_REALTIME nanoseconds (UTC).
pub fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A duration in seconds as `5s`, `3m04s`, `2h05m`, `3d04h`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Lays out rows under a header, columns separated by two spaces, the last one unpadded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `dsuctl list`.
pub fn segments_text(segs: &[SegmentInfo]) -> String {
    if segs.is_empty() {
        return "no segments\n".into();
    }
    let rows: Vec<Vec<String>> = segs
        .iter()
        .map(|s| {
            vec![
                s.name.clone() + if s.destroyed { " (destroyed)" } else { "" },
                format!("{}:{}", s.uid, s.gid),
                format!("{:04o}", s.mode),
                s.pages.to_string(),
                s.variables.to_string(),
                s.versions.to_string(),
                s.handles.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SEGMENT",
            "OWNER",
            "MODE",
            "PAGES",
            "VARIABLES",
            "VERSIONS",
            "HANDLES",
        ],
        &rows,
    )
}

/// `dsuctl show SEG`; `now_ns` is the current CLOCK_REALTIME; `types[i]` is variable i's
/// type description, if the segment has one. `verbose` lists each struct's fields.
pub fn show_text(
    seg: &SegmentInfo,
    vars: &[VariableInfo],
    types: &[Option<TypeDesc>],
    versions: &[VersionInfo],
    now_ns: u64,
    verbose: bool,
    heap_stats: Option<&HeapStats>,
) -> String {
    let mut out = format!(
        "segment {}{}: owner {}:{}, mode {:04o}, {} pages, {} handles, created {}\n\n",
        seg.name,
        if seg.destroyed { " (destroyed)" } else { "" },
        seg.uid,
        seg.gid,
        seg.mode,
        seg.pages,
        seg.handles,
        utc(seg.created_ns)
    );
    if let Some(h) = &seg.heap {
        // Printed before the table's blank line, as part of the segment's header.
        out.insert_str(
            out.len() - 1,
            &format!(
                "heap: base {:#x}, reserve {} bytes, size {} bytes\n",
                h.base, h.reserve, h.size
            ),
        );
        let line = match heap_stats {
            Some(st) => format!(
                "heap: allocated {} bytes in {} blocks, free {} bytes in {} blocks, largest free block {} bytes\n",
                st.allocated_bytes,
                st.allocated_blocks,
                st.free_bytes,
                st.free_blocks,
                st.largest_free
            ),
            None => {
                "heap: allocator counters unavailable (not formatted, or changing: retry)\n".into()
            }
        };
        out.insert_str(out.len() - 1, &line);
    }
    out.push_str(&format!("variables ({}):\n", vars.len()));
    let type_of = |i: usize| types.get(i).and_then(Option::as_ref);
    let rows: Vec<Vec<String>> = vars
        .iter()
        .enumerate()
        .map(|(i, v)| {
            vec![
                v.name.clone(),
                v.size.to_string(),
                v.page_count.to_string(),
                format!("{:016x}", v.fingerprint),
                creator(v),
                utc(v.created_ns),
                type_of(i).map_or("-".into(), |t| t.name.clone()),
            ]
        })
        .collect();
    out.push_str(&table(&VARIABLE_COLUMNS, &rows));
    if verbose {
        for (i, v) in vars.iter().enumerate() {
            let Some(t) = type_of(i).filter(|t| !t.fields.is_empty()) else {
                continue;
            };
            out.push_str(&format!(
                "\n{} ({}, {} bytes, align {}):\n",
                v.name, t.name, t.size, t.align
            ));
            let rows: Vec<Vec<String>> = t
                .fields
                .iter()
                .map(|f| {
                    vec![
                        f.offset.to_string(),
                        f.size.to_string(),
                        f.name.clone(),
                        f.type_name.clone(),
                    ]
                })
                .collect();
            for line in table(&["OFFSET", "SIZE", "FIELD", "TYPE"], &rows).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    out.push_str(&format!("\nversions ({}):\n", versions.len()));
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.id.to_string(),
                v.label.clone(),
                v.pid.to_string(),
                age(now_ns.saturating_sub(v.bound_ns) / 1_000_000_000),
                v.pages.to_string(),
                v.mappings.to_string(),
                version_state(v).into(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ID", "LABEL", "PID", "AGE", "PAGES", "MAPPINGS", "STATE"],
        &rows,
    ));
    out
}

/// `dsuctl show SEG --json`.
pub fn show_json(
    seg: &SegmentInfo,
    vars: &[VariableInfo],
    types: &[Option<TypeDesc>],
    versions: &[VersionInfo],
    now_ns: u64,
    heap_stats: Option<&HeapStats>,
) -> ShowJson {
    let mut segment: SegmentJson = seg.into();
    if let Some(h) = segment.heap.as_mut() {
        h.allocator = heap_stats.map(|st| HeapAllocatorJson {
            allocated_bytes: st.allocated_bytes,
            allocated_blocks: st.allocated_blocks,
            free_bytes: st.free_bytes,
            free_blocks: st.free_blocks,
            largest_free: st.largest_free,
        });
    }
    ShowJson {
        segment,
        variables: vars
            .iter()
            .enumerate()
            .map(|(i, v)| VariableJson {
                type_desc: types.get(i).and_then(Option::as_ref).map(Into::into),
                ..v.into()
            })
            .collect(),
        versions: versions
            .iter()
            .map(|v| VersionJson {
                id: v.id,
                label: v.label.clone(),
                pid: v.pid,
                pages: v.pages,
                mappings: v.mappings,
                bound_ns: v.bound_ns,
                age_s: now_ns.saturating_sub(v.bound_ns) / 1_000_000_000,
                state: version_state(v),
            })
            .collect(),
    }
}

/// Hex and ASCII, 16 bytes a line: `00000000  01 02 ... |..|`.
pub fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        out.push_str(&format!("{:08x}  ", i * 16));
        for j in 0..16 {
            match chunk.get(j) {
                Some(b) => out.push_str(&format!("{b:02x} ")),
                None => out.push_str("   "),
            }
            if j == 7 {
                out.push(' ');
            }
        }
        out.push_str(" |");
        out.extend(chunk.iter().map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    out
}

/// Who created a variable: `LABEL (#ID)`, or `-` if its creating handle never bound.
fn creator(v: &VariableInfo) -> String {
    if v.created_by == 0 {
        "-".to_string()
    } else if v.created_label.is_empty() {
        format!("#{}", v.created_by)
    } else {
        format!("{} (#{})", v.created_label, v.created_by)
    }
}

/// `dsuctl watch` line for an event.
pub fn event_text(e: &Event) -> String {
    let mut s = format!(
        "{} {} version {} label {} pid {}",
        utc(e.time_ns),
        event_kind(e.kind),
        e.version_id,
        e.label,
        e.pid
    );
    if e.lost > 0 {
        s.push_str(&format!(" ({} earlier events lost)", e.lost));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg() -> SegmentInfo {
        SegmentInfo {
            name: "app".into(),
            uid: 0,
            gid: 0,
            mode: 0o600,
            destroyed: false,
            pages: 3,
            variables: 2,
            versions: 1,
            handles: 2,
            created_ns: 1_700_000_000_000_000_000,
            heap: None,
        }
    }

    fn var() -> VariableInfo {
        VariableInfo {
            name: "app::COUNTER".into(),
            size: 8,
            align: 8,
            fingerprint: 0xabc,
            first_page: 0,
            page_count: 1,
            created_ns: 1_700_000_000_000_000_000,
            created_by: 1,
            created_label: "1.0".into(),
        }
    }

    fn ver() -> VersionInfo {
        VersionInfo {
            id: 1,
            pid: 42,
            pages: 3,
            mappings: 1,
            bound_ns: 1_700_000_000_000_000_000,
            label: "1.0".into(),
            ready: true,
        }
    }

    #[test]
    fn gc_report() {
        let r = GcReport {
            variables: vec![var()],
            total: 2,
            pages: 3,
            generation: 4,
        };
        let t = gc_text("app", &r, true);
        assert!(
            t.starts_with("segment app (generation 4): would reclaim 2 variable(s), 3 page(s)\n"),
            "{t}"
        );
        assert!(t.contains("app::COUNTER"), "{t}");
        assert!(t.ends_with("(1 more not listed)\n"), "{t}");
        let none = GcReport {
            variables: vec![],
            total: 0,
            pages: 0,
            generation: 1,
        };
        assert_eq!(
            gc_text("app", &none, false),
            "segment app (generation 1): reclaimed 0 variable(s), 0 page(s)\n"
        );
    }

    #[test]
    fn utc_and_age() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400 * 1_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(age(5), "5s");
        assert_eq!(age(184), "3m04s");
        assert_eq!(age(7500), "2h05m");
        assert_eq!(age(3 * 86_400 + 4 * 3600), "3d04h");
    }

    #[test]
    fn list_text() {
        let t = segments_text(&[seg()]);
        assert_eq!(
            t,
            "SEGMENT  OWNER  MODE  PAGES  VARIABLES  VERSIONS  HANDLES\n\
             app      0:0    0600  3      2          1         2\n"
        );
        assert_eq!(segments_text(&[]), "no segments\n");
        let mut d = seg();
        d.destroyed = true;
        assert!(segments_text(&[d]).contains("app (destroyed)"));
    }

    #[test]
    fn show_text_and_json() {
        let now = 1_700_000_000_000_000_000 + 65_000_000_000;
        let t = show_text(&seg(), &[var()], &[None], &[ver()], now, false, None);
        assert!(t.starts_with("segment app: owner 0:0, mode 0600, 3 pages, 2 handles, created 2023-11-14T22:13:20Z\n"), "{t}");
        assert!(
            t.contains(
                "app::COUNTER  8     1      0000000000000abc  1.0 (#1)    2023-11-14T22:13:20Z  -"
            ),
            "{t}"
        );
        assert!(
            t.contains("1   1.0    42   1m05s  3      1         ready"),
            "{t}"
        );
        let mut candidate = ver();
        candidate.ready = false;
        let t = show_text(
            &seg(),
            &[var()],
            &[None],
            &[candidate.clone()],
            now,
            false,
            None,
        );
        assert!(
            t.contains("MAPPINGS  STATE") && t.contains("candidate"),
            "{t}"
        );
        let j = serde_json::to_value(show_json(&seg(), &[], &[], &[candidate], now, None)).unwrap();
        assert_eq!(j["versions"][0]["state"], "candidate");
        let j = serde_json::to_value(show_json(&seg(), &[var()], &[None], &[ver()], now, None))
            .unwrap();
        assert_eq!(j["segment"]["mode"], "0600");
        assert_eq!(j["variables"][0]["fingerprint"], "0000000000000abc");
        assert!(j["variables"][0]["type"].is_null());
        assert_eq!(j["versions"][0]["age_s"], 65);
        assert_eq!(j["versions"][0]["pid"], 42);
        assert!(j["segment"].get("heap").is_none(), "no heap, no field");
    }

    #[test]
    fn show_heap() {
        let mut s = seg();
        s.heap = Some(dsu::sys::HeapInfo {
            base: 0x3000_0000_0000,
            reserve: 1 << 30,
            size: 8192,
            created: false,
        });
        let st = dsu::heap::HeapStats {
            allocated_bytes: 4096,
            allocated_blocks: 3,
            free_bytes: 2048,
            free_blocks: 2,
            largest_free: 1024,
            ..Default::default()
        };
        let t = show_text(&s, &[], &[], &[], 0, false, Some(&st));
        assert!(
            t.contains("created 2023-11-14T22:13:20Z\nheap: base 0x300000000000, reserve 1073741824 bytes, size 8192 bytes\nheap: allocated 4096 bytes in 3 blocks, free 2048 bytes in 2 blocks, largest free block 1024 bytes\n\nvariables (0):"),
            "{t}"
        );
        let t = show_text(&s, &[], &[], &[], 0, false, None);
        assert!(t.contains("heap: allocator counters unavailable"), "{t}");
        let j = serde_json::to_value(show_json(&s, &[], &[], &[], 0, Some(&st))).unwrap();
        assert_eq!(j["segment"]["heap"]["base"], "0x300000000000");
        assert_eq!(j["segment"]["heap"]["size"], 8192);
        assert_eq!(j["segment"]["heap"]["allocator"]["largest_free"], 1024);
        let j = serde_json::to_value(show_json(&s, &[], &[], &[], 0, None)).unwrap();
        assert!(j["segment"]["heap"].get("allocator").is_none());
    }

    #[test]
    fn show_types_and_fields() {
        let conf = TypeDesc {
            name: "struct conf".into(),
            size: 16,
            align: 8,
            fields: vec![
                dsu::typedesc::Field {
                    name: "port".into(),
                    type_name: "uint64_t".into(),
                    offset: 0,
                    size: 8,
                },
                dsu::typedesc::Field {
                    name: "limit".into(),
                    type_name: "uint64_t".into(),
                    offset: 8,
                    size: 8,
                },
            ],
        };
        let types = [Some(conf)];
        let t = show_text(&seg(), &[var()], &types, &[], 0, false, None);
        assert!(t.contains("2023-11-14T22:13:20Z  struct conf\n"), "{t}");
        assert!(!t.contains("OFFSET"), "{t}");
        let t = show_text(&seg(), &[var()], &types, &[], 0, true, None);
        assert!(
            t.contains(
                "app::COUNTER (struct conf, 16 bytes, align 8):\n  \
                 OFFSET  SIZE  FIELD  TYPE\n  \
                 0       8     port   uint64_t\n  \
                 8       8     limit  uint64_t\n"
            ),
            "{t}"
        );
        let j = serde_json::to_value(show_json(&seg(), &[var()], &types, &[], 0, None)).unwrap();
        let ty = &j["variables"][0]["type"];
        assert_eq!(ty["name"], "struct conf");
        assert_eq!(ty["fields"][1]["name"], "limit");
        assert_eq!(ty["fields"][1]["type"], "uint64_t");
        assert_eq!(ty["fields"][1]["offset"], 8);
    }

    #[test]
    fn hexdump_lines() {
        let d = hexdump(b"hello, world\x00\x01\x02\x03ABC");
        assert_eq!(
            d,
            "00000000  68 65 6c 6c 6f 2c 20 77  6f 72 6c 64 00 01 02 03  |hello, world....|\n\
             00000010  41 42 43                                          |ABC|\n"
        );
        assert_eq!(hexdump(&[]), "");
    }

    #[test]
    fn events() {
        let e = Event {
            kind: EventKind::Bound,
            version_id: 2,
            pid: 7,
            lost: 0,
            time_ns: 0,
            label: "v2".into(),
        };
        assert_eq!(
            event_text(&e),
            "1970-01-01T00:00:00Z bound version 2 label v2 pid 7"
        );
        let j = serde_json::to_string(&EventJson::from(&e)).unwrap();
        assert_eq!(
            j,
            r#"{"event":"bound","version_id":2,"label":"v2","pid":7,"time_ns":0,"lost":0}"#
        );
        let e = Event {
            kind: EventKind::Ended,
            lost: 3,
            ..e
        };
        assert!(event_text(&e).ends_with("ended version 2 label v2 pid 7 (3 earlier events lost)"));
    }
}
