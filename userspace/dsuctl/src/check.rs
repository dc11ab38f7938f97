//! `dsuctl check SEG BINARY`: what a built binary's attach would do to a segment, without
//! running it.
//!
//! [`read_binary`] reads the binary's global descriptors from its ELF file (the section
//! `linkme_DSU_GLOBALS`, the layout of [`dsu::abi`]), applying its dynamic relocations
//! (a position-independent binary's pointers are `R_X86_64_RELATIVE` relocations whose
//! addend is the target). [`plan`] then classifies each variable against the segment's
//! directory the way RESOLVE and `attach` do: common, added, migrated (from which older
//! type, with or without a merge step) or conflicting (with the differing field), and
//! lists the segment's variables the binary no longer declares, flagging those that have
//! the fingerprint of a variable the binary would add as probable renames.

use dsu::abi;
use dsu::typedesc::{Field, TypeDesc};
use object::{Object, ObjectSection, SectionKind};
use serde::Serialize;
use std::collections::HashMap;

/// A migration declared by a binary's global.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryMigration {
    /// Spelling of the older type.
    pub old_type_name: String,
    /// Its size.
    pub old_size: u64,
    /// Its fingerprint.
    pub old_fingerprint: u64,
    /// Whether it has a merge step.
    pub merge: bool,
}

/// A global as a built binary declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryVar {
    /// Variable name.
    pub name: String,
    /// Its type description (spelling, size, alignment, fields).
    pub ty: TypeDesc,
    /// The fingerprint the kernel sees (for C globals, computed from the description).
    pub fingerprint: u64,
    /// The older types it migrates from, in the order declared.
    pub migrations: Vec<BinaryMigration>,
}

/// The loaded image of an ELF file: section contents by address and relocated pointers.
struct Image<'a> {
    sections: Vec<(u64, u64, Option<&'a [u8]>)>,
    /// Relocated pointer values by the address they are stored at.
    relocated: HashMap<u64, u64>,
}

impl<'a> Image<'a> {
    fn new(file: &object::File<'a>) -> Result<Self, String> {
        let mut sections = Vec::new();
        for s in file.sections() {
            if s.address() == 0 || s.size() == 0 {
                continue;
            }
            let data = match s.kind() {
                // TLS sections' addresses are templates that overlap the sections after
                // them (`.tbss` takes no address space): descriptors never point there.
                SectionKind::Tls | SectionKind::UninitializedTls => continue,
                SectionKind::UninitializedData => None,
                _ => Some(
                    s.data()
                        .map_err(|e| format!("section {:?}: {e}", s.name()))?,
                ),
            };
            sections.push((s.address(), s.size(), data));
        }
        let mut relocated = HashMap::new();
        for (at, r) in file.dynamic_relocations().into_iter().flatten() {
            if let object::RelocationFlags::Elf { r_type } = r.flags() {
                // Load base 0: a RELATIVE relocation's value is its addend.
                if r_type == object::elf::R_X86_64_RELATIVE && !r.has_implicit_addend() {
                    relocated.insert(at, r.addend() as u64);
                }
            }
        }
        Ok(Image {
            sections,
            relocated,
        })
    }

    /// `len` bytes at virtual address `addr` (zeros in NOBITS sections).
    fn bytes(&self, addr: u64, len: u64) -> Result<Vec<u8>, String> {
        for &(start, size, data) in &self.sections {
            if addr >= start && addr.checked_add(len).is_some_and(|end| end <= start + size) {
                let off = (addr - start) as usize;
                return Ok(match data {
                    Some(d) => d
                        .get(off..off + len as usize)
                        .ok_or_else(|| format!("address {addr:#x} is past its section's data"))?
                        .to_vec(),
                    None => vec![0; len as usize],
                });
            }
        }
        Err(format!("address {addr:#x} ({len} bytes) is in no section"))
    }

    fn u64_at(&self, addr: u64) -> Result<u64, String> {
        let b = self.bytes(addr, 8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn u32_at(&self, addr: u64) -> Result<u32, String> {
        let b = self.bytes(addr, 4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// The pointer stored at `addr`: its relocation's value, else the stored bytes.
    fn ptr_at(&self, addr: u64) -> Result<u64, String> {
        match self.relocated.get(&addr) {
            Some(&v) => Ok(v),
            None => self.u64_at(addr),
        }
    }

    /// The NUL-terminated string the pointer at `addr` points to ("" for null).
    fn string_at(&self, addr: u64) -> Result<String, String> {
        let p = self.ptr_at(addr)?;
        if p == 0 {
            return Ok(String::new());
        }
        for &(start, size, data) in &self.sections {
            if p >= start && p < start + size {
                let d = data.ok_or_else(|| format!("string at {p:#x} is in a NOBITS section"))?;
                let tail = &d[(p - start) as usize..];
                let end = tail
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| format!("string at {p:#x} has no NUL"))?;
                return Ok(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
        }
        Err(format!("string pointer {p:#x} is in no section"))
    }
}

/// Reads the dsu globals a built x86_64 ELF binary declares (Rust `global!` and C
/// `DSU_GLOBAL` alike). A binary without dsu globals gives an empty list.
pub fn read_binary(bytes: &[u8]) -> Result<Vec<BinaryVar>, String> {
    let file = object::File::parse(bytes).map_err(|e| format!("not an ELF file: {e}"))?;
    if file.format() != object::BinaryFormat::Elf
        || file.architecture() != object::Architecture::X86_64
    {
        return Err(format!(
            "not an x86_64 ELF file ({:?}, {:?})",
            file.format(),
            file.architecture()
        ));
    }
    let Some(section) = file.section_by_name(dsu::DESC_SECTION) else {
        return Ok(Vec::new());
    };
    let image = Image::new(&file)?;
    let (base, size) = (section.address(), section.size());
    if size % abi::DESC_SIZE as u64 != 0 {
        return Err(format!(
            "section {} is {size} bytes, not a whole number of {}-byte descriptors",
            dsu::DESC_SECTION,
            abi::DESC_SIZE
        ));
    }
    let mut vars = Vec::new();
    for i in 0..size / abi::DESC_SIZE as u64 {
        let d = base + i * abi::DESC_SIZE as u64;
        let at = |off: usize| d + off as u64;
        let magic = image.u32_at(at(abi::DESC_MAGIC))?;
        if magic != dsu::DESC_MAGIC {
            return Err(format!(
                "descriptor {i} has magic {magic:#x}, not {:#x}: the binary was built against another dsu",
                dsu::DESC_MAGIC
            ));
        }
        let flags = image.u32_at(at(abi::DESC_FLAGS))?;
        let name = image.string_at(at(abi::DESC_NAME))?;
        let type_name = image.string_at(at(abi::DESC_TYPE_NAME))?;
        let value_size = image.u64_at(at(abi::DESC_VALUE_SIZE))?;
        let align = image.u64_at(at(abi::DESC_ALIGN))?;
        let mut fields = Vec::new();
        let fields_at = image.ptr_at(at(abi::DESC_FIELDS))?;
        let count = image.u64_at(at(abi::DESC_FIELD_COUNT))?;
        if fields_at != 0 {
            if count > 4096 {
                return Err(format!("\"{name}\": {count} fields"));
            }
            for j in 0..count {
                let f = fields_at + j * abi::FIELD_SIZE as u64;
                fields.push(Field {
                    name: image.string_at(f + abi::FIELD_NAME as u64)?,
                    type_name: image.string_at(f + abi::FIELD_TYPE_NAME as u64)?,
                    offset: image.u64_at(f + abi::FIELD_OFFSET as u64)?,
                    size: image.u64_at(f + abi::FIELD_VALUE_SIZE as u64)?,
                });
            }
        }
        let fingerprint = if flags & dsu::DESC_HASH_TYPE_NAME != 0 {
            dsu::fingerprint::c_type_fields(type_name.as_bytes(), value_size, align, &fields)
        } else {
            image.u64_at(at(abi::DESC_FINGERPRINT))?
        };
        let mut migrations = Vec::new();
        let mut m = image.ptr_at(at(abi::DESC_MIGRATION))?;
        while m != 0 {
            if migrations.len() >= 64 {
                return Err(format!(
                    "\"{name}\": a migration chain of more than 64 types"
                ));
            }
            migrations.push(BinaryMigration {
                old_type_name: image.string_at(m + abi::MIGRATION_OLD_TYPE_NAME as u64)?,
                old_size: image.u64_at(m + abi::MIGRATION_OLD_SIZE as u64)?,
                old_fingerprint: image.u64_at(m + abi::MIGRATION_OLD_FINGERPRINT as u64)?,
                merge: image.ptr_at(m + abi::MIGRATION_MERGE as u64)? != 0,
            });
            m = image.ptr_at(m + abi::MIGRATION_NEXT as u64)?;
        }
        vars.push(BinaryVar {
            name,
            ty: TypeDesc {
                name: type_name,
                size: value_size,
                align,
                fields,
            },
            fingerprint,
            migrations,
        });
    }
    Ok(vars)
}

/// One entry of the segment's directory, with its stored type description.
#[derive(Clone, Debug)]
pub struct SegmentEntry {
    /// Name.
    pub name: String,
    /// Size.
    pub size: u64,
    /// Fingerprint.
    pub fingerprint: u64,
    /// Its type description, if stored and readable.
    pub ty: Option<TypeDesc>,
}

/// What attach would do with one of the binary's variables.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Found with the same size and fingerprint: shared.
    Common,
    /// Not in the segment: created with the binary's initialiser.
    Added,
    /// Created from the newest entry's value through a migration.
    Migrated,
    /// Attach would fail.
    Conflict,
}

/// The report on one variable of the binary.
#[derive(Clone, Debug, Serialize)]
pub struct VarReport {
    /// Variable name.
    pub name: String,
    /// The binary's type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Size in bytes.
    pub size: u64,
    /// The binary's fingerprint, hex.
    pub fingerprint: String,
    /// What attach would do.
    pub status: Status,
    /// Migrated: the older type the value comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Migrated: whether a merge step adds the older versions' later writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge: Option<bool>,
    /// Conflict: "type", "size" or "migration" (no `from` type matches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<&'static str>,
    /// Conflict: the segment's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_type: Option<String>,
    /// Conflict: what differs (the first differing field, when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A segment variable the binary does not declare.
#[derive(Clone, Debug, Serialize)]
pub struct UndeclaredReport {
    /// Variable name.
    pub name: String,
    /// Its type, from its description ("" if none).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Size.
    pub size: u64,
    /// Fingerprint, hex.
    pub fingerprint: String,
    /// The binary's added variables with the same size and fingerprint: probably this
    /// variable renamed (its state would start from the initialiser).
    pub renamed_to: Vec<String>,
}

/// The whole report (also the `--json` document).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The segment.
    pub segment: String,
    /// Whether it exists (if not, attach would create it and add every variable).
    pub segment_exists: bool,
    /// The binary's path.
    pub binary: String,
    /// One entry per variable of the binary, in descriptor order.
    pub variables: Vec<VarReport>,
    /// The segment's variables the binary does not declare.
    pub undeclared: Vec<UndeclaredReport>,
    /// Variables in conflict: attach would fail.
    pub conflicts: usize,
    /// Undeclared variables that look renamed.
    pub probable_renames: usize,
}

impl Report {
    /// The exit status: 0 compatible, 3 conflicts, 4 no conflict but a probable rename.
    pub fn exit_code(&self) -> u8 {
        if self.conflicts > 0 {
            3
        } else if self.probable_renames > 0 {
            4
        } else {
            0
        }
    }
}

fn hex(v: u64) -> String {
    format!("{v:#018x}")
}

/// Classifies the binary's variables against the segment's entries (in directory order,
/// oldest first, as LIST_VARIABLES returns them: the last of a name is its newest).
pub fn plan(
    segment: &str,
    segment_exists: bool,
    binary_path: &str,
    binary: &[BinaryVar],
    entries: &[SegmentEntry],
) -> Report {
    let mut variables = Vec::new();
    for v in binary {
        let mut r = VarReport {
            name: v.name.clone(),
            type_name: v.ty.name.clone(),
            size: v.ty.size,
            fingerprint: hex(v.fingerprint),
            status: Status::Added,
            from: None,
            merge: None,
            conflict: None,
            segment_type: None,
            detail: None,
        };
        let same_name: Vec<&SegmentEntry> = entries.iter().filter(|e| e.name == v.name).collect();
        if same_name
            .iter()
            .any(|e| e.size == v.ty.size && e.fingerprint == v.fingerprint)
        {
            r.status = Status::Common;
        } else if let Some(newest) = same_name.last() {
            let theirs = newest.ty.as_ref().map(|t| t.name.clone());
            if v.migrations.is_empty() {
                r.status = Status::Conflict;
                r.conflict = Some(if newest.size != v.ty.size {
                    "size"
                } else {
                    "type"
                });
                r.detail = Some(match &newest.ty {
                    Some(t) => t.diff(&v.ty).unwrap_or_else(|| {
                        "their descriptions are equal, so a nested type changed".into()
                    }),
                    None => format!(
                        "fingerprint {} ({} bytes) in the segment, which stores no type description",
                        hex(newest.fingerprint),
                        newest.size
                    ),
                });
                r.segment_type = theirs;
            } else if let Some(m) = v
                .migrations
                .iter()
                .find(|m| m.old_fingerprint == newest.fingerprint && m.old_size == newest.size)
            {
                r.status = Status::Migrated;
                r.from = Some(m.old_type_name.clone());
                r.merge = Some(m.merge);
            } else {
                r.status = Status::Conflict;
                r.conflict = Some("migration");
                let accepted: Vec<&str> = v
                    .migrations
                    .iter()
                    .map(|m| m.old_type_name.as_str())
                    .collect();
                r.detail = Some(format!(
                    "the segment holds it as {} (fingerprint {}), which none of its migrations accepts (from: {})",
                    theirs.as_deref().unwrap_or("an undescribed type"),
                    hex(newest.fingerprint),
                    accepted.join(", ")
                ));
                r.segment_type = theirs;
            }
        }
        variables.push(r);
    }
    let mut undeclared = Vec::new();
    for e in entries {
        if binary.iter().any(|v| v.name == e.name) {
            continue;
        }
        let renamed_to = variables
            .iter()
            .zip(binary)
            .filter(|(r, v)| {
                r.status == Status::Added && v.ty.size == e.size && v.fingerprint == e.fingerprint
            })
            .map(|(r, _)| r.name.clone())
            .collect();
        undeclared.push(UndeclaredReport {
            name: e.name.clone(),
            type_name: e.ty.as_ref().map(|t| t.name.clone()).unwrap_or_default(),
            size: e.size,
            fingerprint: hex(e.fingerprint),
            renamed_to,
        });
    }
    let conflicts = variables
        .iter()
        .filter(|v| v.status == Status::Conflict)
        .count();
    let probable_renames = undeclared
        .iter()
        .filter(|u| !u.renamed_to.is_empty())
        .count();
    Report {
        segment: segment.into(),
        segment_exists,
        binary: binary_path.into(),
        variables,
        undeclared,
        conflicts,
        probable_renames,
    }
}

/// The report as text: one line per variable, then the undeclared ones and a verdict.
pub fn text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if !r.segment_exists {
        let _ = writeln!(
            s,
            "segment \"{}\" does not exist: attach would create it",
            r.segment
        );
    }
    let width = r
        .variables
        .iter()
        .map(|v| v.name.len())
        .chain(r.undeclared.iter().map(|u| u.name.len()))
        .max()
        .unwrap_or(0);
    for v in &r.variables {
        let what = match v.status {
            Status::Common => format!("{} (shared)", v.type_name),
            Status::Added => format!("{} (from the initialiser)", v.type_name),
            Status::Migrated => format!(
                "{} from {}{}",
                v.type_name,
                v.from.as_deref().unwrap_or("?"),
                if v.merge == Some(true) {
                    ", with a merge step"
                } else {
                    "; no merge step: the older versions' writes after attach are lost"
                }
            ),
            Status::Conflict => format!(
                "{}: {}",
                v.type_name,
                v.detail.as_deref().unwrap_or("conflicting type")
            ),
        };
        let status = match v.status {
            Status::Common => "common",
            Status::Added => "added",
            Status::Migrated => "migrated",
            Status::Conflict => "CONFLICT",
        };
        let _ = writeln!(s, "{status:<12} {:<width$}  {what}", v.name);
    }
    for u in &r.undeclared {
        let ty = if u.type_name.is_empty() {
            format!("{} bytes", u.size)
        } else {
            u.type_name.clone()
        };
        let rename = if u.renamed_to.is_empty() {
            String::new()
        } else {
            format!(
                "; renamed? {} has its type and would start from its initialiser",
                u.renamed_to.join(", ")
            )
        };
        let _ = writeln!(
            s,
            "{:<12} {:<width$}  {ty} (stays in the segment){rename}",
            "undeclared", u.name
        );
    }
    let verdict = match r.exit_code() {
        0 => "compatible".to_string(),
        3 => format!(
            "{} conflict{}: attach would fail and change nothing",
            r.conflicts,
            if r.conflicts == 1 { "" } else { "s" }
        ),
        _ => format!(
            "no conflict, but {} probable rename{}: state would start over under the new name",
            r.probable_renames,
            if r.probable_renames == 1 { "" } else { "s" }
        ),
    };
    let _ = writeln!(s, "{verdict}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsu::Shared;
    use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64};

    #[derive(dsu::Shared)]
    #[repr(C)]
    struct ConfV1 {
        port: AtomicU16,
        limit: AtomicU32,
    }
    #[derive(dsu::Shared)]
    #[repr(C)]
    struct ConfV2 {
        port: AtomicU32,
        limit: AtomicU32,
    }

    fn ty<T: Shared>(name: &str) -> TypeDesc {
        TypeDesc {
            name: name.into(),
            size: size_of::<T>() as u64,
            align: align_of::<T>() as u64,
            fields: T::FIELDS
                .iter()
                // SAFETY: derived field records hold 'static strings.
                .map(|f| unsafe { f.to_field() })
                .collect(),
        }
    }

    fn var<T: Shared>(name: &str, type_name: &str, migrations: Vec<BinaryMigration>) -> BinaryVar {
        BinaryVar {
            name: name.into(),
            ty: ty::<T>(type_name),
            fingerprint: T::FINGERPRINT,
            migrations,
        }
    }

    fn entry<T: Shared>(name: &str, type_name: &str) -> SegmentEntry {
        SegmentEntry {
            name: name.into(),
            size: size_of::<T>() as u64,
            fingerprint: T::FINGERPRINT,
            ty: Some(ty::<T>(type_name)),
        }
    }

    #[test]
    fn classifies_like_attach() {
        let from_v1 = BinaryMigration {
            old_type_name: "ConfV1".into(),
            old_size: 8,
            old_fingerprint: ConfV1::FINGERPRINT,
            merge: true,
        };
        let binary = vec![
            var::<AtomicU64>("a::SAME", "AtomicU64", vec![]),
            var::<AtomicU64>("a::NEW_NAME", "AtomicU64", vec![]),
            var::<ConfV2>("a::CONF", "ConfV2", vec![]),
            var::<ConfV2>("a::MIGRATED", "ConfV2", vec![from_v1.clone()]),
            var::<AtomicU32>("a::FRESH", "AtomicU32", vec![]),
        ];
        let entries = vec![
            entry::<AtomicU64>("a::SAME", "AtomicU64"),
            entry::<AtomicU64>("a::OLD_NAME", "AtomicU64"),
            entry::<ConfV1>("a::CONF", "ConfV1"),
            entry::<ConfV1>("a::MIGRATED", "ConfV1"),
        ];
        let r = plan("s", true, "bin", &binary, &entries);
        let st: Vec<_> = r.variables.iter().map(|v| v.status.clone()).collect();
        assert_eq!(
            st,
            [
                Status::Common,
                Status::Added,
                Status::Conflict,
                Status::Migrated,
                Status::Added
            ]
        );
        assert_eq!(r.variables[2].conflict, Some("type"));
        let detail = r.variables[2].detail.as_deref().unwrap();
        assert!(detail.contains("field `port`"), "{detail}");
        assert_eq!(r.variables[3].from.as_deref(), Some("ConfV1"));
        assert_eq!(r.variables[3].merge, Some(true));
        assert_eq!(r.undeclared.len(), 1);
        assert_eq!(r.undeclared[0].name, "a::OLD_NAME");
        assert_eq!(r.undeclared[0].renamed_to, ["a::NEW_NAME"]);
        assert_eq!((r.conflicts, r.probable_renames, r.exit_code()), (1, 1, 3));
        let t = text(&r);
        assert!(t.contains("CONFLICT"), "{t}");
        assert!(t.contains("renamed? a::NEW_NAME"), "{t}");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["variables"][3]["status"], "migrated");
        assert_eq!(j["variables"][2]["conflict"], "type");
        assert_eq!(j["undeclared"][0]["renamed_to"][0], "a::NEW_NAME");

        // The migration's source is the newest entry; an older type no `from` names is a
        // conflict, never an added variable.
        let entries = vec![entry::<ConfV2>("a::MIGRATED", "ConfV0")];
        let binary = vec![var::<AtomicU64>("a::MIGRATED", "AtomicU64", vec![from_v1])];
        let r = plan("s", true, "bin", &binary, &entries);
        assert_eq!(r.variables[0].status, Status::Conflict);
        assert_eq!(r.variables[0].conflict, Some("migration"));
        assert_eq!(r.exit_code(), 3);
        // A compatible binary.
        let r = plan(
            "s",
            false,
            "bin",
            &[var::<AtomicU64>("x", "u", vec![])],
            &[],
        );
        assert_eq!(
            (r.exit_code(), r.variables[0].status.clone()),
            (0, Status::Added)
        );
    }

    /// This test binary's own descriptors, read back from its ELF file (a PIE: pointers
    /// come from relocations), match what the program sees in memory.
    #[test]
    fn reads_its_own_binary() {
        dsu::global! {
            #[dsu(name = "check::CONF", migrate(from = ConfV1, with = up, merge = catch_up))]
            static CONF: ConfV2 = ConfV2 { port: AtomicU32::new(0), limit: AtomicU32::new(0) };
        }
        fn up(o: ConfV1) -> ConfV2 {
            ConfV2 {
                port: AtomicU32::new(o.port.into_inner().into()),
                limit: o.limit,
            }
        }
        fn catch_up(_: &ConfV2, _: &ConfV1, _: &ConfV1) {}
        let _ = &CONF;
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let vars = read_binary(&exe).unwrap();
        let mine = vars.iter().find(|v| v.name == "check::CONF").unwrap();
        let desc = dsu::GLOBALS
            .iter()
            .find(|d| d.name() == "check::CONF")
            .unwrap();
        assert_eq!(mine.ty, desc.type_desc());
        assert_eq!(mine.fingerprint, desc.effective_fingerprint());
        assert_eq!(
            mine.migrations,
            [BinaryMigration {
                old_type_name: "ConfV1".into(),
                old_size: 8,
                old_fingerprint: ConfV1::FINGERPRINT,
                merge: true
            }]
        );
        assert_eq!(vars.len(), dsu::GLOBALS.len());
        assert!(read_binary(b"not an elf").is_err());
    }

    /// A static non-PIE C binary (pointers stored as addresses, no relocations) with
    /// thread-local data, whose `.tbss` overlaps the addresses of the sections after it:
    /// the DSU_TYPE field list is read from its real section, not as `.tbss` zeros.
    /// Needs gcc with a static libc, as the C examples do.
    #[test]
    fn reads_a_static_c_binary() {
        let dir = std::env::temp_dir().join(format!("dsuctl-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("conf.c");
        std::fs::write(
            &src,
            r#"#include <libdsu.h>
struct conf { uint64_t port; uint32_t limit; };
DSU_TYPE(conf, struct conf, DSU_FIELD(port, uint64_t), DSU_FIELD(limit, uint32_t));
DSU_GLOBAL_TYPED(conf, conf, { .port = 80, .limit = 10 });
DSU_GLOBAL(uint64_t, plain, 7);
static __thread char scratch[65536];
int main(void) { scratch[1] = 1; return (int)conf.port + (int)plain + scratch[1]; }
"#,
        )
        .unwrap();
        let exe = dir.join("conf");
        let include = concat!(env!("CARGO_MANIFEST_DIR"), "/../libdsu/include");
        let out = std::process::Command::new("gcc")
            .args(["-static", "-no-pie", "-O2", "-I", include, "-o"])
            .arg(&exe)
            .arg(&src)
            .output()
            .expect("gcc (the C examples need it too)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vars = read_binary(&std::fs::read(&exe).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let conf = vars.iter().find(|v| v.name == "conf").unwrap();
        let fields: Vec<_> = conf
            .ty
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.type_name.as_str(), f.offset, f.size))
            .collect();
        assert_eq!(
            fields,
            [("port", "uint64_t", 0, 8), ("limit", "uint32_t", 8, 4)]
        );
        assert_eq!((conf.ty.name.as_str(), conf.ty.size), ("struct conf", 16));
        assert_eq!(
            conf.fingerprint,
            dsu::fingerprint::c_type_fields(b"struct conf", 16, 8, &conf.ty.fields)
        );
        let plain = vars.iter().find(|v| v.name == "plain").unwrap();
        assert_eq!((plain.ty.name.as_str(), plain.ty.size), ("uint64_t", 8));
    }
}
