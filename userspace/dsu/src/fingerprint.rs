//! Layout fingerprints: a `const` FNV-1a hash used by [`Shared`](crate::Shared).
//!
//! ```
//! use dsu::fingerprint::Fnv;
//! const A: u64 = Fnv::new().str("Point").u64(8).finish();
//! const B: u64 = Fnv::new().str("Point").u64(16).finish();
//! assert_ne!(A, B);
//! ```

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// A `const` FNV-1a 64-bit hasher. Every method takes and returns it by value so that it
/// can be chained in a `const` item.
///
/// ```
/// let h = dsu::fingerprint::Fnv::new().str("u32").u64(4).finish();
/// assert_eq!(h, dsu::fingerprint::Fnv::new().str("u32").u64(4).finish());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Fnv {
    /// A hasher in its initial state.
    ///
    /// ```
    /// assert_eq!(dsu::fingerprint::Fnv::new().finish(), 0xcbf29ce484222325);
    /// ```
    pub const fn new() -> Self {
        Fnv(OFFSET)
    }

    /// Feeds bytes.
    ///
    /// ```
    /// let h = dsu::fingerprint::Fnv::new().bytes(b"abc").finish();
    /// assert_eq!(h, 0xe71fa2190541574b);
    /// ```
    pub const fn bytes(self, b: &[u8]) -> Self {
        let mut h = self.0;
        let mut i = 0;
        while i < b.len() {
            h ^= b[i] as u64;
            h = h.wrapping_mul(PRIME);
            i += 1;
        }
        Fnv(h)
    }

    /// Feeds a string, followed by its length so that `("ab", "c")` and `("a", "bc")` differ.
    ///
    /// ```
    /// use dsu::fingerprint::Fnv;
    /// assert_ne!(Fnv::new().str("ab").str("c").finish(), Fnv::new().str("a").str("bc").finish());
    /// ```
    pub const fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes()).u64(s.len() as u64)
    }

    /// Feeds a `u64` (little-endian bytes).
    ///
    /// ```
    /// use dsu::fingerprint::Fnv;
    /// assert_ne!(Fnv::new().u64(1).finish(), Fnv::new().u64(2).finish());
    /// ```
    pub const fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    /// The hash.
    ///
    /// ```
    /// let fp: u64 = dsu::fingerprint::Fnv::new().str("x").finish();
    /// assert_ne!(fp, 0);
    /// ```
    pub const fn finish(self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

/// The fingerprint of a C global declared with `DSU_GLOBAL(type, name, init)` in
/// `libdsu.h`: C has no `const` string hashing, so `attach` computes it from the
/// spelling of the type, its size and alignment.
///
/// ```
/// let a = dsu::fingerprint::c_type(b"int", 4, 4);
/// assert_ne!(a, dsu::fingerprint::c_type(b"long", 8, 8));
/// ```
pub const fn c_type(type_name: &[u8], size: u64, align: u64) -> u64 {
    Fnv::new()
        .bytes(b"C:")
        .bytes(type_name)
        .u64(type_name.len() as u64)
        .u64(size)
        .u64(align)
        .finish()
}

/// The fingerprint of a C global whose type is described field by field (`DSU_TYPE` in
/// `libdsu.h`): [`c_type`] extended with every field's name, type spelling, offset and size,
/// so that reordering, renaming or retyping a field changes it. With no fields it equals
/// [`c_type`] (primitives, and structs declared without `DSU_TYPE`).
///
/// ```
/// use dsu::typedesc::Field;
/// use dsu::fingerprint::{c_type, c_type_fields};
/// let f = |n: &str, o| Field { name: n.into(), type_name: "int".into(), offset: o, size: 4 };
/// let ab = c_type_fields(b"struct s", 8, 4, &[f("a", 0), f("b", 4)]);
/// let ba = c_type_fields(b"struct s", 8, 4, &[f("b", 0), f("a", 4)]);
/// assert_ne!(ab, ba);
/// assert_eq!(c_type_fields(b"int", 4, 4, &[]), c_type(b"int", 4, 4));
/// ```
pub fn c_type_fields(
    type_name: &[u8],
    size: u64,
    align: u64,
    fields: &[crate::typedesc::Field],
) -> u64 {
    let base = c_type(type_name, size, align);
    if fields.is_empty() {
        return base;
    }
    let mut h = Fnv::new().bytes(b"C fields:").u64(base);
    for f in fields {
        h = h.str(&f.name).str(&f.type_name).u64(f.offset).u64(f.size);
    }
    h.finish()
}
