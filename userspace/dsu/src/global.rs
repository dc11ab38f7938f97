//! [`Global`], the page-aligned wrapper of every shared global, and [`GlobalDesc`], its
//! descriptor in the [`GLOBALS`](static@crate::GLOBALS) slice.

use crate::{Shared, SharedCell};
use core::cell::UnsafeCell;
use core::ffi::{CStr, c_char};

/// The page size the layout assumes (x86_64 and most Linux targets); `attach` checks it.
pub const PAGE_SIZE: usize = 4096;

/// The linker section every global lives in, except `#[dsu(zeroed)]` ones. The C header
/// uses the same name.
pub const SECTION: &str = "dsu_globals";

/// The section of globals declared `#[dsu(zeroed)]` (C: `DSU_GLOBAL_ZERO`), whose initial
/// bytes are all zero. Its `.bss.` prefix makes it `SHT_NOBITS`, so a zeroed table takes
/// no space in the binary's file (the linker merges it into `.bss`); rustc refuses to
/// compile a global there whose initialiser has a non-zero byte.
pub const ZERO_SECTION: &str = ".bss.dsu_globals_zero";

/// `magic` of a [`GlobalDesc`]: the bytes `"DSUG"` (little-endian), format 1. `attach`
/// rejects descriptors with another magic.
pub const DESC_MAGIC: u32 = 0x4755_5344;

/// [`GlobalDesc::flags`]: the fingerprint is computed at attach from `type_name`, `size`,
/// `align` and the fields with [`fingerprint::c_type_fields`](crate::fingerprint::c_type_fields)
/// (C globals).
pub const DESC_HASH_TYPE_NAME: u32 = 1 << 0;

/// [`GlobalDesc::flags`]: the global is in [`ZERO_SECTION`] (inside the program's `.bss`)
/// rather than [`SECTION`]. `attach` maps each run of consecutive zeroed globals on its
/// own, since other `.bss` data may lie between runs.
pub const DESC_ZEROED: u32 = 1 << 1;

/// A shared global: the value of type `T`, alone in one or more whole pages, in the linker
/// section [`SECTION`]. Declare it with [`global!`](crate::global); after
/// [`attach`](crate::attach) its pages are the segment's.
///
/// It dereferences to `T`, so an atomic or a [`Mutex`](crate::sync::Mutex) is used as
/// usual. `T` is [`SharedCell`]: every byte of the value is interior-mutable, because other
/// versions of the program write these pages at any time and a `&T` to plain bytes that
/// change under it would be undefined behaviour. (There is no by-value `read`/`write`: a
/// plain `u64` global would race with every other thread and version; use an atomic, or a
/// `Mutex` for plain data.) The value sits in an `UnsafeCell` so that the compiler never
/// constant-folds the static or places it in read-only memory.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// dsu::global! {
///     static HITS: AtomicU64 = AtomicU64::new(0);
/// }
/// HITS.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(HITS.load(Ordering::Relaxed), 1);
/// assert_eq!(std::mem::align_of_val(&HITS), 4096);
/// ```
#[repr(C, align(4096))]
pub struct Global<T> {
    value: UnsafeCell<T>,
}

// SAFETY: Global<T> only hands out &T (and raw pointers), so it is Sync exactly when T is.
unsafe impl<T: Sync> Sync for Global<T> {}

impl<T: SharedCell> Global<T> {
    /// Wraps the initial value. Used by [`global!`](crate::global).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// static X: dsu::Global<AtomicU32> = dsu::Global::new(AtomicU32::new(7));
    /// assert_eq!(X.load(Ordering::Relaxed), 7);
    /// ```
    pub const fn new(value: T) -> Self {
        const {
            assert!(
                size_of::<T>() > 0,
                "dsu: a shared global cannot be zero-sized"
            );
            assert!(
                align_of::<T>() <= PAGE_SIZE,
                "dsu: a shared global's alignment must not exceed the page size"
            );
        }
        Global {
            value: UnsafeCell::new(value),
        }
    }
}

impl<T> Global<T> {
    /// A raw pointer to the value.
    ///
    /// ```
    /// static X: dsu::Global<std::sync::atomic::AtomicU64> =
    ///     dsu::Global::new(std::sync::atomic::AtomicU64::new(1));
    /// assert_eq!(X.as_ptr() as usize % 4096, 0);
    /// ```
    pub const fn as_ptr(&self) -> *mut T {
        self.value.get()
    }

    /// Pages the global occupies.
    ///
    /// ```
    /// use dsu::sync::Mutex;
    /// static BIG: dsu::Global<Mutex<[u8; 5000]>> = dsu::Global::new(Mutex::new([0; 5000]));
    /// assert_eq!(BIG.pages(), 2);
    /// ```
    pub const fn pages(&self) -> usize {
        size_of::<Self>() / PAGE_SIZE
    }
}

impl<T: SharedCell> core::ops::Deref for Global<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: shared access only; T is SharedCell, so every byte is behind an
        // UnsafeCell and a change by another thread, version or attach is allowed under
        // the &T.
        unsafe { &*self.value.get() }
    }
}

/// A migration of a global from an older type, declared with
/// `#[dsu(migrate(from = Old, with = transform))]` (optionally `merge = catch_up`) in
/// [`global!`](crate::global). A global that accepts several older types has a chain of
/// them ([`next`](Self::next)), in the order declared.
///
/// Its fields are private and its constructors `unsafe`: [`attach`](crate::attach) calls
/// the transform and the merge on buffers sized from them.
///
/// ```
/// # use std::sync::atomic::{AtomicU32, AtomicU64};
/// fn widen(old: AtomicU32) -> AtomicU64 { AtomicU64::new(old.into_inner() as u64) }
/// dsu::global! {
///     #[dsu(name = "doc::COUNT", migrate(from = AtomicU32, with = widen))]
///     static COUNT: AtomicU64 = AtomicU64::new(0);
/// }
/// let d = dsu::GLOBALS.iter().find(|d| d.name() == "doc::COUNT").unwrap();
/// assert_eq!(d.migration().unwrap().old_size(), 4);
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct Migration {
    /// Size of the old type.
    pub(crate) old_size: u64,
    /// Alignment of the old type.
    pub(crate) old_align: u64,
    /// Fingerprint of the old type.
    pub(crate) old_fingerprint: u64,
    /// NUL-terminated spelling of the old type.
    pub(crate) old_type_name: *const c_char,
    /// Reads an `Old` from `old_size` bytes and writes the new value's bytes.
    pub(crate) transform: fn(*const u8, *mut u8),
    /// `merge(at_attach, final)`: reads two `Old`s (the old entry's value when the new
    /// entry was made, and its value once no older version uses it) and applies the
    /// difference to the global itself; `None`: no merge (see
    /// [`Version::finish_migrations`](crate::Version::finish_migrations)).
    pub(crate) merge: Option<fn(*const u8, *const u8)>,
    /// The next accepted older type, or null.
    pub(crate) next: *const Migration,
    /// `MIGRATION_*` flags: [`MIGRATION_IN_PLACE`] for a migration made with
    /// [`in_place`](Self::in_place).
    pub(crate) flags: u64,
}

/// [`Migration`] flag: the transform reads the old value in place, in a view of the old
/// entry's live pages, instead of a snapshot (see [`Migration::in_place`]).
pub const MIGRATION_IN_PLACE: u64 = 1 << 0;

// SAFETY: the pointer is to a 'static string, never written.
unsafe impl Sync for Migration {}

impl Migration {
    /// The descriptor of a migration from `Old` (used by [`global!`](crate::global)).
    ///
    /// # Safety
    ///
    /// `old_type_name` points to a NUL-terminated string that lives and stays unchanged
    /// for the whole program. `transform(old, new)` must be sound when `old` points to
    /// `size_of::<Old>()` readable bytes holding an `Old` (any alignment) and `new` to
    /// `size_of::<New>()` writable bytes (any alignment), where `New` is the type of the
    /// global whose [`GlobalDesc`] names this migration, and must write a valid `New` there.
    ///
    /// ```
    /// fn t(_old: *const u8, _new: *mut u8) {}
    /// // SAFETY: a 'static string; `t` touches neither buffer.
    /// static M: dsu::Migration = unsafe { dsu::Migration::new::<u32>(c"u32".as_ptr(), t) };
    /// assert_eq!(M.old_size(), 4);
    /// ```
    pub const unsafe fn new<Old: Shared>(
        old_type_name: *const c_char,
        transform: fn(*const u8, *mut u8),
    ) -> Self {
        const {
            assert!(
                !Old::OWNS_HEAP,
                "a migration cannot start from a type that owns shared-heap blocks (dsu::heap::Mutex) by value: its snapshot would be a second owner of blocks the old version still uses; use `migrate(from = Old, with_ref = f)` with `fn f(&Old) -> New`"
            )
        };
        Migration {
            old_size: size_of::<Old>() as u64,
            old_align: align_of::<Old>() as u64,
            old_fingerprint: Old::FINGERPRINT,
            old_type_name,
            transform,
            merge: None,
            next: core::ptr::null(),
            flags: 0,
        }
    }

    /// The descriptor of an in-place migration from `Old`, a type that may own shared-heap
    /// blocks (used by [`global!`](crate::global)'s `migrate(from = Old, with_ref = f)`).
    ///
    /// [`attach`](crate::attach) maps the old entry's live pages (a view, shared with the
    /// versions still running, kept mapped for the process's life) and calls
    /// `transform(old, new)` with `old` pointing to the old value in that view,
    /// page-aligned. Nothing
    /// old is copied, moved or freed: the transform reads the old value through `&Old`
    /// (taking its lock, which the running versions share) and builds a new one. Such a
    /// migration has no merge step.
    ///
    /// # Safety
    ///
    /// As [`new`](Self::new), except that `old` points to a live, aligned `Old` which other
    /// versions use at the same time (so `transform` may only access it through `&Old`, and
    /// `Old` is [`SharedCell`](crate::SharedCell)), valid for the rest of the process.
    ///
    /// ```
    /// fn t(_old: *const u8, _new: *mut u8) {}
    /// // SAFETY: a 'static string; `t` touches neither buffer.
    /// static M: dsu::Migration =
    ///     unsafe { dsu::Migration::in_place::<dsu::heap::Mutex<dsu::heap::Vec<u8>>>(c"V".as_ptr(), t) };
    /// assert!(M.is_in_place());
    /// ```
    pub const unsafe fn in_place<Old: crate::SharedCell>(
        old_type_name: *const c_char,
        transform: fn(*const u8, *mut u8),
    ) -> Self {
        Migration {
            old_size: size_of::<Old>() as u64,
            old_align: align_of::<Old>() as u64,
            old_fingerprint: Old::FINGERPRINT,
            old_type_name,
            transform,
            merge: None,
            next: core::ptr::null(),
            flags: MIGRATION_IN_PLACE,
        }
    }

    /// Whether the transform reads the old value in place ([`in_place`](Self::in_place)).
    ///
    /// ```
    /// # fn t(_: *const u8, _: *mut u8) {}
    /// # static M: dsu::Migration = unsafe { dsu::Migration::new::<u16>(c"u16".as_ptr(), t) };
    /// assert!(!M.is_in_place());
    /// ```
    pub fn is_in_place(&self) -> bool {
        self.flags & MIGRATION_IN_PLACE != 0
    }

    /// This migration with a merge step: once no older version uses the old entry any
    /// more, [`Version::finish_migrations`](crate::Version::finish_migrations) calls
    /// `merge(at_attach, final)` (used by [`global!`](crate::global)'s `merge = f`).
    ///
    /// # Safety
    ///
    /// `merge(at_attach, final)` must be sound when both point to `old_size` readable bytes
    /// (any alignment) holding an `Old` of [`new`](Self::new), at any time after the
    /// global this migration belongs to is attached, from any thread.
    ///
    /// ```
    /// fn t(_old: *const u8, _new: *mut u8) {}
    /// fn m(_at_attach: *const u8, _final: *const u8) {}
    /// // SAFETY: a 'static string; neither function touches a buffer.
    /// static M: dsu::Migration =
    ///     unsafe { dsu::Migration::new::<u32>(c"u32".as_ptr(), t).with_merge(m) };
    /// assert!(M.has_merge());
    /// ```
    pub const unsafe fn with_merge(mut self, merge: fn(*const u8, *const u8)) -> Self {
        assert!(
            self.flags & MIGRATION_IN_PLACE == 0,
            "an in-place migration has no merge step"
        );
        self.merge = Some(merge);
        self
    }

    /// This migration followed by `next`, another accepted older type (used by
    /// [`global!`](crate::global) for several `migrate(...)`).
    ///
    /// # Safety
    ///
    /// `next` (and its own chain) satisfies [`new`](Self::new)'s contract for the same
    /// global.
    ///
    /// ```
    /// fn t(_old: *const u8, _new: *mut u8) {}
    /// // SAFETY: 'static strings; `t` touches neither buffer.
    /// static OLDER: dsu::Migration = unsafe { dsu::Migration::new::<u16>(c"u16".as_ptr(), t) };
    /// // SAFETY: as above.
    /// static M: dsu::Migration =
    ///     unsafe { dsu::Migration::new::<u32>(c"u32".as_ptr(), t).or_from(&OLDER) };
    /// assert_eq!(M.next().unwrap().old_type_name(), "u16");
    /// ```
    pub const unsafe fn or_from(mut self, next: &'static Migration) -> Self {
        self.next = next;
        self
    }

    /// Whether the migration has a merge step.
    ///
    /// ```
    /// # fn t(_: *const u8, _: *mut u8) {}
    /// # static M: dsu::Migration = unsafe { dsu::Migration::new::<u16>(c"u16".as_ptr(), t) };
    /// assert!(!M.has_merge());
    /// ```
    pub fn has_merge(&self) -> bool {
        self.merge.is_some()
    }

    /// The next accepted older type, if any.
    ///
    /// ```
    /// # fn t(_: *const u8, _: *mut u8) {}
    /// # static M: dsu::Migration = unsafe { dsu::Migration::new::<u16>(c"u16".as_ptr(), t) };
    /// assert!(M.next().is_none());
    /// ```
    pub fn next(&self) -> Option<&Migration> {
        // SAFETY: null or a 'static Migration (or_from's contract).
        unsafe { self.next.as_ref() }
    }

    /// This migration and the ones after it, in the order declared.
    ///
    /// ```
    /// # fn t(_: *const u8, _: *mut u8) {}
    /// # static M: dsu::Migration = unsafe { dsu::Migration::new::<u16>(c"u16".as_ptr(), t) };
    /// assert_eq!(M.chain().count(), 1);
    /// ```
    pub fn chain(&self) -> impl Iterator<Item = &Migration> {
        core::iter::successors(Some(self), |m| m.next())
    }

    /// Size of the old type.
    ///
    /// ```
    /// # fn t(_: *const u8, _: *mut u8) {}
    /// # static M: dsu::Migration = unsafe { dsu::Migration::new::<u16>(c"u16".as_ptr(), t) };
    /// assert_eq!(M.old_size(), 2);
    /// ```
    pub fn old_size(&self) -> u64 {
        self.old_size
    }

    /// Alignment of the old type.
    ///
    /// ```
    /// # fn t(_: *const u8, _: *mut u8) {}
    /// # static M: dsu::Migration = unsafe { dsu::Migration::new::<u16>(c"u16".as_ptr(), t) };
    /// assert_eq!(M.old_align(), 2);
    /// ```
    pub fn old_align(&self) -> u64 {
        self.old_align
    }

    /// Fingerprint of the old type.
    ///
    /// ```
    /// # use dsu::Shared;
    /// # fn t(_: *const u8, _: *mut u8) {}
    /// # static M: dsu::Migration = unsafe { dsu::Migration::new::<u16>(c"u16".as_ptr(), t) };
    /// assert_eq!(M.old_fingerprint(), u16::FINGERPRINT);
    /// ```
    pub fn old_fingerprint(&self) -> u64 {
        self.old_fingerprint
    }

    /// Spelling of the old type.
    ///
    /// ```
    /// # fn t(_: *const u8, _: *mut u8) {}
    /// # static M: dsu::Migration = unsafe { dsu::Migration::new::<u16>(c"u16".as_ptr(), t) };
    /// assert_eq!(M.old_type_name(), "u16");
    /// ```
    pub fn old_type_name(&self) -> &str {
        cstr(self.old_type_name)
    }
}

/// The descriptor of one shared global, collected in [`GLOBALS`](static@crate::GLOBALS).
///
/// The layout is part of the C ABI: `struct dsu_global_desc` in `libdsu.h` is the
/// same, and C globals put their descriptors in the same linker section,
/// `linkme_DSU_GLOBALS` (linkme names a slice's section `linkme_<IDENT>`).
///
/// [`attach`](crate::attach) maps segment pages over the address a descriptor names, so
/// its fields are private and its constructor is `unsafe`: safe code cannot add a bogus
/// entry to [`GLOBALS`](static@crate::GLOBALS).
///
/// ```
/// dsu::global! {
///     static X: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// }
/// let d = dsu::GLOBALS.iter().find(|d| d.name().ends_with("::X")).unwrap();
/// assert_eq!(d.size(), 4);
/// assert_eq!(d.pages(), 1);
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct GlobalDesc {
    /// [`DESC_MAGIC`].
    pub(crate) magic: u32,
    /// `DESC_*` flags.
    pub(crate) flags: u32,
    /// NUL-terminated variable name, stable across versions.
    pub(crate) name: *const c_char,
    /// NUL-terminated spelling of the type (for messages; C: also hashed).
    pub(crate) type_name: *const c_char,
    /// Address of the page-aligned global.
    pub(crate) addr: *const u8,
    /// Size of the value in bytes (not rounded to pages).
    pub(crate) size: u64,
    /// Alignment of the value.
    pub(crate) align: u64,
    /// Whole pages the global occupies in the section.
    pub(crate) pages: u64,
    /// Layout fingerprint (0 with [`DESC_HASH_TYPE_NAME`]).
    pub(crate) fingerprint: u64,
    /// The initial bytes (`size` of them).
    pub(crate) init: *const u8,
    /// The first migration from an older type (the others follow its
    /// [`next`](Migration::next) chain), or null.
    pub(crate) migration: *const Migration,
    /// The type's fields in offset order ([`Shared::FIELDS`], C: `DSU_TYPE`), or null.
    pub(crate) fields: *const crate::typedesc::FieldDesc,
    /// Entries at `fields`.
    pub(crate) field_count: u64,
}

// SAFETY: every pointer is to 'static data; the descriptor is never written.
unsafe impl Sync for GlobalDesc {}

impl GlobalDesc {
    /// The descriptor of `global` (used by [`global!`](crate::global)).
    ///
    /// # Safety
    ///
    /// - `name` and `type_name` point to NUL-terminated strings that live and stay
    ///   unchanged for the whole program;
    /// - `global` is a `static` placed in the linker section [`SECTION`] (as
    ///   [`global!`](crate::global) does; or in [`ZERO_SECTION`], and the descriptor is then
    ///   made [`zeroed`](Self::zeroed)), described by no other descriptor: `attach`
    ///   replaces its pages with segment pages;
    /// - `migration` is null or points to a `Migration` that lives for the whole program
    ///   and whose transform writes a valid `T` (see [`Migration::new`]).
    ///
    /// ```
    /// use std::sync::atomic::AtomicU64;
    /// static G: dsu::Global<AtomicU64> = dsu::Global::new(AtomicU64::new(0));
    /// // SAFETY: 'static strings and no migration. (G is not in the section; this
    /// // descriptor is only looked at, never added to GLOBALS or attached.)
    /// static D: dsu::GlobalDesc = unsafe {
    ///     dsu::GlobalDesc::new(c"doc::G".as_ptr(), c"AtomicU64".as_ptr(), &G, std::ptr::null())
    /// };
    /// assert_eq!(D.name(), "doc::G");
    /// ```
    pub const unsafe fn new<T: SharedCell>(
        name: *const c_char,
        type_name: *const c_char,
        global: &'static Global<T>,
        migration: *const Migration,
    ) -> Self {
        GlobalDesc {
            magic: DESC_MAGIC,
            flags: 0,
            name,
            type_name,
            addr: global as *const Global<T> as *const u8,
            size: size_of::<T>() as u64,
            align: align_of::<T>() as u64,
            pages: (size_of::<Global<T>>() / PAGE_SIZE) as u64,
            fingerprint: T::FINGERPRINT,
            init: global.as_ptr() as *const u8,
            migration,
            fields: T::FIELDS.as_ptr(),
            field_count: T::FIELDS.len() as u64,
        }
    }

    /// This descriptor with [`DESC_ZEROED`]: for a global in [`ZERO_SECTION`] (used by
    /// [`global!`](crate::global) for `#[dsu(zeroed)]`).
    ///
    /// ```
    /// use std::sync::atomic::AtomicU64;
    /// #[unsafe(link_section = ".bss.dsu_globals_zero")]
    /// static G: dsu::Global<AtomicU64> = dsu::Global::new(AtomicU64::new(0));
    /// // SAFETY: 'static strings and no migration; G is in the zero section. (This
    /// // descriptor is only looked at, never added to GLOBALS or attached.)
    /// static D: dsu::GlobalDesc = unsafe {
    ///     dsu::GlobalDesc::new(c"doc::G".as_ptr(), c"AtomicU64".as_ptr(), &G, std::ptr::null())
    /// }
    /// .zeroed();
    /// assert_eq!(D.flags() & dsu::DESC_ZEROED, dsu::DESC_ZEROED);
    /// ```
    pub const fn zeroed(mut self) -> Self {
        self.flags |= DESC_ZEROED;
        self
    }

    /// The variable's name.
    ///
    /// ```
    /// for d in dsu::GLOBALS.iter() { assert!(!d.name().is_empty()); }
    /// ```
    pub fn name(&self) -> &str {
        cstr(self.name)
    }

    /// The spelling of the variable's type.
    ///
    /// ```
    /// for d in dsu::GLOBALS.iter() { let _ = d.type_name(); }
    /// ```
    pub fn type_name(&self) -> &str {
        cstr(self.type_name)
    }

    /// `DESC_*` flags ([`DESC_HASH_TYPE_NAME`] for C globals).
    ///
    /// ```
    /// for d in dsu::GLOBALS.iter() { let _ = d.flags() & dsu::DESC_HASH_TYPE_NAME; }
    /// ```
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Address of the global's first page in this program.
    ///
    /// ```
    /// for d in dsu::GLOBALS.iter() { assert_eq!(d.addr() as usize % dsu::PAGE_SIZE, 0); }
    /// ```
    pub fn addr(&self) -> *const u8 {
        self.addr
    }

    /// Size of the value in bytes (not rounded to pages).
    ///
    /// ```
    /// for d in dsu::GLOBALS.iter() { assert!(d.size() > 0); }
    /// ```
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Alignment of the value.
    ///
    /// ```
    /// for d in dsu::GLOBALS.iter() { assert!(d.align().is_power_of_two()); }
    /// ```
    pub fn align(&self) -> u64 {
        self.align
    }

    /// Whole pages the global occupies.
    ///
    /// ```
    /// for d in dsu::GLOBALS.iter() { assert!(d.pages() * dsu::PAGE_SIZE as u64 >= d.size()); }
    /// ```
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The layout fingerprint of a Rust global (0 for C globals: see
    /// [`effective_fingerprint`](Self::effective_fingerprint)).
    ///
    /// ```
    /// for d in dsu::GLOBALS.iter() { let _ = d.fingerprint(); }
    /// ```
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The fingerprint the kernel sees: [`fingerprint`](Self::fingerprint) or, for C
    /// globals, the hash of the type's spelling, size and alignment.
    ///
    /// ```
    /// for d in dsu::GLOBALS.iter() { let _ = d.effective_fingerprint(); }
    /// ```
    pub fn effective_fingerprint(&self) -> u64 {
        if self.flags & DESC_HASH_TYPE_NAME != 0 {
            let fields = self.type_desc().fields;
            crate::fingerprint::c_type_fields(
                self.type_name().as_bytes(),
                self.size,
                self.align,
                &fields,
            )
        } else {
            self.fingerprint
        }
    }

    /// The description of the variable's type stored with its entry in the segment: the
    /// spelling of the type, its size and alignment, and its fields.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU16, AtomicU32};
    /// #[derive(dsu::Shared)]
    /// #[repr(C)]
    /// struct Conf { port: AtomicU16, limit: AtomicU32 }
    /// dsu::global! {
    ///     #[dsu(name = "doc::CONF")]
    ///     static CONF: Conf = Conf { port: AtomicU16::new(80), limit: AtomicU32::new(10) };
    /// }
    /// let d = dsu::GLOBALS.iter().find(|d| d.name() == "doc::CONF").unwrap();
    /// let t = d.type_desc();
    /// assert_eq!((t.name.as_str(), t.size, t.fields.len()), ("Conf", 8, 2));
    /// assert_eq!((t.fields[1].name.as_str(), t.fields[1].type_name.as_str(), t.fields[1].offset), ("limit", "AtomicU32", 4));
    /// ```
    pub fn type_desc(&self) -> crate::typedesc::TypeDesc {
        let fields = if self.fields.is_null() {
            Vec::new()
        } else {
            // SAFETY: descriptors hold null or a 'static array of `field_count` field
            // records with 'static strings (global!, the derive, DSU_TYPE).
            unsafe { core::slice::from_raw_parts(self.fields, self.field_count as usize) }
                .iter()
                // SAFETY: as above.
                .map(|f| unsafe { f.to_field() })
                .collect()
        };
        crate::typedesc::TypeDesc {
            name: self.type_name().into(),
            size: self.size,
            align: self.align,
            fields,
        }
    }

    /// The first migration, if the global declares any ([`Migration::chain`] lists them
    /// all).
    ///
    /// ```
    /// for d in dsu::GLOBALS.iter() { let _ = d.migration(); }
    /// ```
    pub fn migration(&self) -> Option<&Migration> {
        // SAFETY: null or a pointer to a 'static Migration (the constructor's contract).
        unsafe { self.migration.as_ref() }
    }
}

fn cstr(p: *const c_char) -> &'static str {
    if p.is_null() {
        return "";
    }
    // SAFETY: descriptors hold NUL-terminated 'static strings (the constructors' contract;
    // C descriptors: dsu.h's).
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .unwrap_or("<non-UTF-8>")
}
