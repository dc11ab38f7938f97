//! Type descriptions: what a variable's type looks like, stored with its entry in the
//! segment so that a conflict (and `dsuctl show`) can say which field changed.
//!
//! The format (version 1, defined in docs/DESIGN.md) is text, at most
//! [`TYPE_DESC_MAX`] bytes of printable ASCII and newlines, one record per line:
//!
//! ```text
//! dsu-type 1
//! type SIZE ALIGN SPELLING
//! field OFFSET SIZE NAME SPELLING
//! ...
//! ```
//!
//! `SPELLING` (the rest of the line) is the type as the program spells it. Fields come in
//! offset order; a primitive, array or atomic has no `field` lines. Unknown record kinds
//! are skipped, so later versions can add some.
//!
//! ```
//! use dsu::typedesc::{Field, TypeDesc};
//! let d = TypeDesc {
//!     name: "struct conf".into(),
//!     size: 8,
//!     align: 4,
//!     fields: vec![
//!         Field { name: "port".into(), type_name: "uint16_t".into(), offset: 0, size: 2 },
//!         Field { name: "limit".into(), type_name: "int".into(), offset: 4, size: 4 },
//!     ],
//! };
//! let text = d.to_text();
//! assert!(text.starts_with("dsu-type 1\ntype 8 4 struct conf\nfield 0 2 port uint16_t\n"));
//! assert_eq!(TypeDesc::parse(&text).unwrap(), d);
//! ```

use core::ffi::{CStr, c_char};

/// Most bytes of a description (`DSU_TYPE_DESC_MAX`); [`TypeDesc::to_text`] truncates
/// the field list to fit.
pub const TYPE_DESC_MAX: usize = dsu_uapi::DSU_TYPE_DESC_MAX as usize;

/// One field of a described struct, as the C ABI lays it out: a `#[repr(C)]` struct of two
/// NUL-terminated strings and two `u64`s (`struct dsu_field_desc` in `libdsu.h`).
/// `#[derive(dsu::Shared)]` and C's `DSU_TYPE` emit arrays of them.
///
/// ```
/// let f = dsu::typedesc::FieldDesc::new(c"port".as_ptr(), c"u16".as_ptr(), 8, 2);
/// assert_eq!(f.offset, 8);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FieldDesc {
    /// NUL-terminated field name.
    pub name: *const c_char,
    /// NUL-terminated spelling of the field's type.
    pub type_name: *const c_char,
    /// Offset in the struct.
    pub offset: u64,
    /// Size of the field.
    pub size: u64,
}

// SAFETY: the pointers are to 'static strings that are never written (as in GlobalDesc).
unsafe impl Sync for FieldDesc {}

// The C header's `struct dsu_field_desc` and `struct dsu_global_desc` have these sizes.
const _: () = assert!(
    size_of::<FieldDesc>() == 32 && size_of::<crate::GlobalDesc>() == 96,
    "libdsu.h's descriptor layouts changed: update userspace/libdsu/include/libdsu.h"
);

impl FieldDesc {
    /// A field record (used by the derive).
    ///
    /// ```
    /// let f = dsu::typedesc::FieldDesc::new(c"a".as_ptr(), c"u8".as_ptr(), 0, 1);
    /// assert_eq!(f.size, 1);
    /// ```
    pub const fn new(
        name: *const c_char,
        type_name: *const c_char,
        offset: u64,
        size: u64,
    ) -> Self {
        FieldDesc {
            name,
            type_name,
            offset,
            size,
        }
    }

    /// The field as owned strings.
    ///
    /// # Safety
    ///
    /// `name` and `type_name` are null or point to NUL-terminated strings that live for the
    /// call (the derive and `DSU_TYPE` store `'static` literals).
    ///
    /// ```
    /// let f = dsu::typedesc::FieldDesc::new(c"a".as_ptr(), c"u8".as_ptr(), 0, 1);
    /// // SAFETY: both are C string literals.
    /// assert_eq!(unsafe { f.to_field() }.name, "a");
    /// ```
    pub unsafe fn to_field(&self) -> Field {
        // SAFETY: forwarded to the caller.
        let s = |p: *const c_char| unsafe { lossy(p) };
        Field {
            name: s(self.name),
            type_name: s(self.type_name),
            offset: self.offset,
            size: self.size,
        }
    }
}

/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn lossy(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: forwarded to the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A field of a [`TypeDesc`].
///
/// ```
/// let f = dsu::typedesc::Field { name: "a".into(), type_name: "u8".into(), offset: 0, size: 1 };
/// assert_eq!(f.end(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// The spelling of its type.
    pub type_name: String,
    /// Its offset.
    pub offset: u64,
    /// Its size.
    pub size: u64,
}

impl Field {
    /// The offset just past the field.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.size)
    }
}

/// A parsed type description.
///
/// ```
/// let d = dsu::typedesc::TypeDesc::primitive("u64", 8, 8);
/// assert_eq!(dsu::typedesc::TypeDesc::parse(&d.to_text()).unwrap(), d);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeDesc {
    /// The spelling of the type.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its alignment.
    pub align: u64,
    /// Its fields in offset order (empty for a primitive, array or atomic).
    pub fields: Vec<Field>,
}

/// Makes a spelling fit on one line of printable ASCII.
fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    let s = s.trim();
    if s.is_empty() { "?".into() } else { s.into() }
}

impl TypeDesc {
    /// A type without fields.
    ///
    /// ```
    /// assert!(dsu::typedesc::TypeDesc::primitive("u32", 4, 4).fields.is_empty());
    /// ```
    pub fn primitive(name: &str, size: u64, align: u64) -> Self {
        TypeDesc {
            name: name.into(),
            size,
            align,
            fields: Vec::new(),
        }
    }

    /// The text form, at most [`TYPE_DESC_MAX`] bytes: fields that do not fit are left
    /// out (a trailing `more N` line says how many). Names are made printable.
    ///
    /// ```
    /// let t = dsu::typedesc::TypeDesc::primitive("u8", 1, 1).to_text();
    /// assert_eq!(t, "dsu-type 1\ntype 1 1 u8\n");
    /// ```
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "dsu-type 1\ntype {} {} {}\n",
            self.size,
            self.align,
            clean(&self.name)
        );
        out.truncate(TYPE_DESC_MAX);
        for (i, f) in self.fields.iter().enumerate() {
            let line = format!(
                "field {} {} {} {}\n",
                f.offset,
                f.size,
                clean(&f.name).replace(' ', "_"),
                clean(&f.type_name)
            );
            // Room for the `more` line.
            if out.len() + line.len() + 32 > TYPE_DESC_MAX {
                out.push_str(&format!("more {}\n", self.fields.len() - i));
                break;
            }
            out.push_str(&line);
        }
        out
    }

    /// Parses the text form. An error says what is wrong.
    ///
    /// ```
    /// use dsu::typedesc::TypeDesc;
    /// assert!(TypeDesc::parse("dsu-type 2\n").is_err());
    /// let d = TypeDesc::parse("dsu-type 1\ntype 4 4 int\n").unwrap();
    /// assert_eq!(d.name, "int");
    /// ```
    pub fn parse(text: &str) -> Result<TypeDesc, String> {
        let mut lines = text.lines();
        if lines.next() != Some("dsu-type 1") {
            return Err("not a version 1 type description (no \"dsu-type 1\" line)".into());
        }
        let mut desc: Option<TypeDesc> = None;
        for line in lines {
            let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
            match kind {
                "type" => {
                    let mut p = rest.splitn(3, ' ');
                    let (size, align, name) = (p.next(), p.next(), p.next());
                    let num = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
                    match (num(size), num(align), name) {
                        (Some(size), Some(align), Some(name)) => {
                            desc = Some(TypeDesc::primitive(name, size, align))
                        }
                        _ => return Err(format!("bad type line {line:?}")),
                    }
                }
                "field" => {
                    let Some(d) = desc.as_mut() else {
                        return Err("a field line before the type line".into());
                    };
                    let mut p = rest.splitn(4, ' ');
                    let (offset, size, name, ty) = (p.next(), p.next(), p.next(), p.next());
                    let num = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
                    match (num(offset), num(size), name, ty) {
                        (Some(offset), Some(size), Some(name), Some(ty)) => d.fields.push(Field {
                            name: name.into(),
                            type_name: ty.into(),
                            offset,
                            size,
                        }),
                        _ => return Err(format!("bad field line {line:?}")),
                    }
                }
                _ => {} // `more` and kinds of later versions
            }
        }
        desc.ok_or_else(|| "no type line".into())
    }

    /// Checks a field list made by hand (C's `DSU_TYPE`): fields in offset order, no
    /// overlap, each inside the type, names unique and non-empty.
    ///
    /// ```
    /// use dsu::typedesc::{Field, TypeDesc};
    /// let f = |n: &str, o| Field { name: n.into(), type_name: "int".into(), offset: o, size: 4 };
    /// let mut d = TypeDesc { name: "struct s".into(), size: 8, align: 4, fields: vec![f("a", 0), f("b", 4)] };
    /// assert!(d.check_fields().is_ok());
    /// d.fields.swap(0, 1);
    /// assert!(d.check_fields().unwrap_err().contains("declaration order"));
    /// ```
    pub fn check_fields(&self) -> Result<(), String> {
        let mut end = 0u64;
        let mut names = std::collections::HashSet::new();
        for f in &self.fields {
            if f.name.is_empty() || !names.insert(f.name.as_str()) {
                return Err(format!("field {:?} is listed twice or unnamed", f.name));
            }
            if f.offset < end {
                return Err(format!(
                    "field `{}` at offset {} overlaps the previous one (list fields once each, in declaration order)",
                    f.name, f.offset
                ));
            }
            if f.end() > self.size {
                return Err(format!(
                    "field `{}` ends at {} past the type's size {}",
                    f.name,
                    f.end(),
                    self.size
                ));
            }
            end = f.end();
        }
        Ok(())
    }

    /// Says how `ours` differs from `self` (the description in the segment), naming the
    /// first field that changed; `None` if nothing visible in the descriptions differs.
    ///
    /// ```
    /// use dsu::typedesc::{Field, TypeDesc};
    /// let f = |n: &str, t: &str, s| Field { name: n.into(), type_name: t.into(), offset: 8, size: s };
    /// let old = TypeDesc { name: "Conf".into(), size: 16, align: 8, fields: vec![f("port", "u16", 2)] };
    /// let new = TypeDesc { fields: vec![f("port", "u32", 4)], ..old.clone() };
    /// assert_eq!(
    ///     old.diff(&new).unwrap(),
    ///     "field `port` is u16 at offset 8 (2 bytes) in the segment but u32 at offset 8 (4 bytes) in this program"
    /// );
    /// ```
    pub fn diff(&self, ours: &TypeDesc) -> Option<String> {
        let at = |f: &Field| format!("{} at offset {} ({} bytes)", f.type_name, f.offset, f.size);
        for f in &ours.fields {
            match self.fields.iter().find(|g| g.name == f.name) {
                None => {
                    return Some(format!(
                        "field `{}` ({}) is new in this program",
                        f.name,
                        at(f)
                    ));
                }
                Some(g) if g != f => {
                    return Some(format!(
                        "field `{}` is {} in the segment but {} in this program",
                        f.name,
                        at(g),
                        at(f)
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(g) = self
            .fields
            .iter()
            .find(|g| !ours.fields.iter().any(|f| f.name == g.name))
        {
            return Some(format!(
                "field `{}` ({}) in the segment is gone from this program",
                g.name,
                at(g)
            ));
        }
        let a: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
        let b: Vec<&str> = ours.fields.iter().map(|f| f.name.as_str()).collect();
        if a != b {
            return Some(format!(
                "the fields are reordered: ({}) in the segment, ({}) in this program",
                a.join(", "),
                b.join(", ")
            ));
        }
        if self.name != ours.name {
            return Some(format!(
                "the type is `{}` in the segment but `{}` in this program",
                self.name, ours.name
            ));
        }
        if (self.size, self.align) != (ours.size, ours.align) {
            return Some(format!(
                "the type is {} bytes aligned to {} in the segment but {} bytes aligned to {} in this program",
                self.size, self.align, ours.size, ours.align
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, ty: &str, offset: u64, size: u64) -> Field {
        Field {
            name: name.into(),
            type_name: ty.into(),
            offset,
            size,
        }
    }

    fn conf(fields: Vec<Field>) -> TypeDesc {
        TypeDesc {
            name: "struct conf".into(),
            size: 8,
            align: 4,
            fields,
        }
    }

    #[test]
    fn round_trip() {
        let d = conf(vec![f("a", "unsigned int", 0, 4), f("b", "char[4]", 4, 4)]);
        let t = d.to_text();
        assert_eq!(
            t,
            "dsu-type 1\ntype 8 4 struct conf\nfield 0 4 a unsigned int\nfield 4 4 b char[4]\n"
        );
        assert_eq!(TypeDesc::parse(&t).unwrap(), d);
        // Unknown kinds are skipped.
        let t2 = format!("{t}later something\n");
        assert_eq!(TypeDesc::parse(&t2).unwrap(), d);
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "dsu-type 2\ntype 1 1 u8\n",
            "dsu-type 1\n",
            "dsu-type 1\nfield 0 1 a u8\n",
            "dsu-type 1\ntype x 1 u8\n",
            "dsu-type 1\ntype 1 1\n",
            "dsu-type 1\ntype 1 1 u8\nfield 0 1 a\n",
        ] {
            assert!(TypeDesc::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn to_text_fits_and_is_printable() {
        let many: Vec<Field> = (0..1000)
            .map(|i| f(&format!("field_{i}"), "unsigned long long", i * 8, 8))
            .collect();
        let d = TypeDesc {
            name: "struct \u{e9}big\nx".into(),
            size: 8000,
            align: 8,
            fields: many,
        };
        let t = d.to_text();
        assert!(t.len() <= TYPE_DESC_MAX, "{}", t.len());
        assert!(t.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b)));
        assert!(t.contains("\nmore "), "{t}");
        let p = TypeDesc::parse(&t).unwrap();
        assert_eq!(p.name, "struct ?big?x");
        assert!(p.fields.len() > 50 && p.fields.len() < 1000);
    }

    #[test]
    fn diffs_name_the_field() {
        let v1 = conf(vec![f("a", "int", 0, 4), f("b", "int", 4, 4)]);
        let reordered = conf(vec![f("b", "int", 0, 4), f("a", "int", 4, 4)]);
        assert_eq!(
            v1.diff(&reordered).unwrap(),
            "field `b` is int at offset 4 (4 bytes) in the segment but int at offset 0 (4 bytes) in this program"
        );
        let retyped = conf(vec![f("a", "int", 0, 4), f("b", "float", 4, 4)]);
        assert!(v1.diff(&retyped).unwrap().starts_with("field `b` is int"));
        let renamed = conf(vec![f("a", "int", 0, 4), f("c", "int", 4, 4)]);
        assert_eq!(
            v1.diff(&renamed).unwrap(),
            "field `c` (int at offset 4 (4 bytes)) is new in this program"
        );
        let removed = conf(vec![f("a", "int", 0, 4)]);
        assert!(v1.diff(&removed).unwrap().contains("field `b`"));
        assert!(
            v1.diff(&removed)
                .unwrap()
                .contains("gone from this program")
        );
        assert_eq!(v1.diff(&v1), None);
        let other = TypeDesc {
            name: "struct other".into(),
            ..v1.clone()
        };
        assert!(v1.diff(&other).unwrap().contains("`struct other`"));
        let p = TypeDesc::primitive("u64", 8, 8);
        let q = TypeDesc::primitive("i64", 8, 8);
        assert_eq!(
            p.diff(&q).unwrap(),
            "the type is `u64` in the segment but `i64` in this program"
        );
    }

    /// A C descriptor as `DSU_GLOBAL_TYPED` emits it: the fingerprint follows the fields.
    #[test]
    fn c_fingerprints_follow_the_layout() {
        use crate::global::{DESC_HASH_TYPE_NAME, DESC_MAGIC, GlobalDesc};
        use std::sync::atomic::AtomicU64;
        static G: crate::Global<[AtomicU64; 2]> =
            crate::Global::new([const { AtomicU64::new(0) }; 2]);
        const U64: *const c_char = c"uint64_t".as_ptr();
        static PORT_LIMIT: [FieldDesc; 2] = [
            FieldDesc::new(c"port".as_ptr(), U64, 0, 8),
            FieldDesc::new(c"limit".as_ptr(), U64, 8, 8),
        ];
        static LIMIT_PORT: [FieldDesc; 2] = [
            FieldDesc::new(c"limit".as_ptr(), U64, 0, 8),
            FieldDesc::new(c"port".as_ptr(), U64, 8, 8),
        ];
        static RETYPED: [FieldDesc; 2] = [
            FieldDesc::new(c"port".as_ptr(), c"int64_t".as_ptr(), 0, 8),
            FieldDesc::new(c"limit".as_ptr(), U64, 8, 8),
        ];
        let c = |fields: &'static [FieldDesc]| GlobalDesc {
            magic: DESC_MAGIC,
            flags: DESC_HASH_TYPE_NAME,
            name: c"conf".as_ptr(),
            type_name: c"struct conf".as_ptr(),
            addr: G.as_ptr().cast(),
            size: 16,
            align: 8,
            pages: 1,
            fingerprint: 0,
            init: G.as_ptr().cast(),
            migration: std::ptr::null(),
            fields: fields.as_ptr(),
            field_count: fields.len() as u64,
        };
        let v1 = c(&PORT_LIMIT);
        let reordered = c(&LIMIT_PORT);
        let retyped = c(&RETYPED);
        assert_eq!(
            v1.effective_fingerprint(),
            c(&PORT_LIMIT).effective_fingerprint()
        );
        assert_ne!(
            v1.effective_fingerprint(),
            reordered.effective_fingerprint()
        );
        assert_ne!(v1.effective_fingerprint(), retyped.effective_fingerprint());
        assert_ne!(
            v1.effective_fingerprint(),
            c(&[]).effective_fingerprint(),
            "a described struct differs from an undescribed one"
        );
        assert_eq!(
            v1.type_desc().diff(&reordered.type_desc()).unwrap(),
            "field `limit` is uint64_t at offset 8 (8 bytes) in the segment but uint64_t at offset 0 (8 bytes) in this program"
        );
        let mut dup = c(&PORT_LIMIT);
        dup.field_count = 1;
        assert!(dup.type_desc().check_fields().is_ok());
    }

    mod v1 {
        use std::sync::atomic::{AtomicU16, AtomicU64};
        #[derive(crate::Shared)]
        #[repr(C)]
        pub struct Conf {
            pub limit: AtomicU64,
            pub port: AtomicU16,
        }
    }
    mod v2 {
        use std::sync::atomic::{AtomicU32, AtomicU64};
        #[derive(crate::Shared)]
        #[repr(C)]
        pub struct Conf {
            pub limit: AtomicU64,
            pub port: AtomicU32,
        }
    }

    /// The derive's field list gives the description the conflict message uses.
    #[test]
    fn derived_descriptions_name_the_field() {
        use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64};
        static A: crate::Global<v1::Conf> = crate::Global::new(v1::Conf {
            limit: AtomicU64::new(0),
            port: AtomicU16::new(0),
        });
        static B: crate::Global<v2::Conf> = crate::Global::new(v2::Conf {
            limit: AtomicU64::new(0),
            port: AtomicU32::new(0),
        });
        let null = std::ptr::null();
        // SAFETY: 'static strings, no migration; only described, never attached.
        let a = unsafe { crate::GlobalDesc::new(c"conf".as_ptr(), c"Conf".as_ptr(), &A, null) };
        // SAFETY: as above.
        let b = unsafe { crate::GlobalDesc::new(c"conf".as_ptr(), c"Conf".as_ptr(), &B, null) };
        let (ta, tb) = (a.type_desc(), b.type_desc());
        assert_eq!(ta.fields.len(), 2);
        assert_eq!(
            TypeDesc::parse(&ta.to_text()).unwrap(),
            ta,
            "survives the text form"
        );
        assert_eq!(
            ta.diff(&tb).unwrap(),
            "field `port` is AtomicU16 at offset 8 (2 bytes) in the segment but AtomicU32 at offset 8 (4 bytes) in this program"
        );
    }

    #[test]
    fn field_checks() {
        assert!(
            conf(vec![f("a", "int", 0, 4), f("b", "int", 4, 4)])
                .check_fields()
                .is_ok()
        );
        let e = conf(vec![f("a", "int", 0, 4), f("a", "int", 4, 4)]).check_fields();
        assert!(e.unwrap_err().contains("listed twice"));
        let e = conf(vec![f("a", "int", 0, 4), f("b", "int", 2, 4)]).check_fields();
        assert!(e.unwrap_err().contains("overlaps"));
        let e = conf(vec![f("a", "int", 6, 4)]).check_fields();
        assert!(e.unwrap_err().contains("past the type's size"));
    }
}
