//! Shared globals for multi-version dynamic software update.
//!
//! A program declares its long-lived state with [`global!`]. Each global is an ordinary
//! static, alone in whole pages of the linker section `dsu_globals`. [`attach`] maps the
//! pages of a named *segment* of the `dsu` kernel module over that section, so that every
//! running version of the program (v1, and the v2 that replaces it) reads and writes the
//! same physical pages at its own link-time addresses: no copying, no pointer chasing.
//!
//! Variables are matched by name. A variable both versions declare with the same type is
//! *common* (shared); one only the new version declares is *added* with its initialiser;
//! one only the old version declares stays in the segment for it. A variable whose type
//! changed is a conflict ([`Error::TypeChanged`]) unless the new version declares a
//! migration.
//!
//! # Worked example: v1 → v2
//!
//! Version 1 counts requests and keeps a log level:
//!
//! ```no_run
//! // server v1
//! use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
//!
//! dsu::global! {
//!     #[dsu(name = "server::REQUESTS")]
//!     static REQUESTS: AtomicU64 = AtomicU64::new(0);
//!     #[dsu(name = "server::LOG_LEVEL")]
//!     static LOG_LEVEL: AtomicU32 = AtomicU32::new(2);
//! }
//!
//! fn main() -> Result<(), dsu::Error> {
//!     // First thing in main, before other threads touch the globals.
//!     let version = dsu::attach("server", "1.0")?;
//!     // ... start-up: open sockets, load configuration ...
//!     version.ready()?; // commit: older versions may now retire
//!     loop {
//!         REQUESTS.fetch_add(1, Ordering::Relaxed); // handle a request
//!         if version.newer_version()?.is_some() {
//!             return Ok(()); // v2 is up and ready: drain and exit
//!         }
//!     }
//! }
//! ```
//!
//! Version 2 keeps `REQUESTS` (same name and type: it sees v1's count and both versions
//! update it while they run side by side), drops `LOG_LEVEL` (it stays in the segment for
//! v1) and adds a mutex-protected table (created with its initialiser). Its `Stats` type
//! migrates from v1's layout:
//!
//! ```no_run
//! // server v2
//! use dsu::sync::Mutex;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! #[derive(dsu::Shared)]
//! #[repr(C)]
//! struct Table { len: u32, keys: [u64; 64] }
//!
//! // The old and the new layout of a struct that changed.
//! #[derive(dsu::Shared)]
//! #[repr(C)]
//! struct StatsV1 { hits: AtomicU64 }
//! #[derive(dsu::Shared)]
//! #[repr(C)]
//! struct Stats { hits: AtomicU64, misses: AtomicU64 }
//!
//! fn upgrade(old: StatsV1) -> Stats {
//!     Stats { hits: old.hits, misses: AtomicU64::new(0) }
//! }
//! // Once v1 has ended: add the hits it counted after v2's attach.
//! fn catch_up(new: &Stats, at_attach: &StatsV1, last: &StatsV1) {
//!     let delta = last.hits.load(Ordering::Relaxed) - at_attach.hits.load(Ordering::Relaxed);
//!     new.hits.fetch_add(delta, Ordering::Relaxed);
//! }
//!
//! dsu::global! {
//!     #[dsu(name = "server::REQUESTS")]
//!     static REQUESTS: AtomicU64 = AtomicU64::new(0);
//!     #[dsu(name = "server::TABLE")]
//!     static TABLE: Mutex<Table> = Mutex::new(Table { len: 0, keys: [0; 64] });
//!     #[dsu(name = "server::STATS", migrate(from = StatsV1, with = upgrade, merge = catch_up))]
//!     static STATS: Stats = Stats { hits: AtomicU64::new(0), misses: AtomicU64::new(0) };
//! }
//!
//! fn main() -> Result<(), dsu::Error> {
//!     let version = dsu::Attach::new("server", "2.0").must_exist().attach()?;
//!     println!("requests so far: {}", REQUESTS.load(Ordering::Relaxed));
//!     let mut table = TABLE.lock().unwrap_or_else(|died| died.into_inner());
//!     table.len += 1;
//!     Ok(())
//! }
//! ```
//!
//! A migrated variable is a new entry in the segment: it starts from a snapshot of the old
//! value taken at attach, and is no longer shared with the older versions (they keep
//! the old entry). Its `merge` step runs once they have all ended and adds what they
//! wrote meanwhile ([`Version::finish_migrations`]), so no write is lost.
//!
//! # What can be shared
//!
//! A global holds a [`SharedCell`] type: atomic integers, [`sync::Mutex`], arrays of them,
//! and `#[repr(C)]` structs deriving [`Shared`] made only of them. Other versions write a
//! global's pages at any time, so every byte must be interior-mutable: plain data (integers,
//! floats, arrays, `#[derive(Shared)]` structs of them) lives inside a [`sync::Mutex`].
//! Every [`Shared`] type accepts any bit pattern, since another version may store any:
//! `bool`, `char`, `AtomicBool` and enums are refused (use integers). Pointers of any kind
//! are refused: they point into one version's private memory. Data that grows lives in the
//! shared heap ([`heap`]: `heap::Vec`, `heap::HashMap`, ...), which every version maps at
//! the same address; a global holds it inside a [`heap::Mutex`].
//!
//! # Linker sections
//!
//! Globals live in `dsu_globals`; their descriptors ([`GlobalDesc`]) in the linkme slice
//! [`GLOBALS`](static@GLOBALS), whose ELF section is `linkme_DSU_GLOBALS` (linkme names the section of a
//! slice `linkme_<IDENT>`; the slice is declared as `DSU_GLOBALS` so that its section does
//! not clash with another crate's `GLOBALS`). The C API (`libdsu`, `libdsu.h`) places C
//! globals and descriptors in the same two sections, so C and Rust globals can mix.

extern crate self as dsu;

pub mod abi;
pub mod error;
pub mod fingerprint;
mod global;
pub mod heap;
pub mod layout;
pub mod names;
pub mod notify;
mod shared;
pub mod snapshot;
pub mod sync;
pub mod sys;
pub mod typedesc;

mod attach;

pub use attach::{Attach, AttachedVar, VarStatus, Version, attach};
pub use dsu_macros::Shared;
pub use error::{Error, Op, Result};
pub use global::{
    DESC_HASH_TYPE_NAME, DESC_MAGIC, DESC_ZEROED, Global, GlobalDesc, MIGRATION_IN_PLACE,
    Migration, PAGE_SIZE, SECTION, ZERO_SECTION,
};
pub use shared::{Shared, SharedCell};
pub use snapshot::Segment;

/// The name of the ELF section holding the [`GlobalDesc`] records (for C and tools).
///
/// ```
/// assert_eq!(dsu::DESC_SECTION, "linkme_DSU_GLOBALS");
/// ```
pub const DESC_SECTION: &str = "linkme_DSU_GLOBALS";

/// Every global of the program (Rust and C), one [`GlobalDesc`] each. Filled at link time
/// by [`global!`] and C's `DSU_GLOBAL`; ELF section `linkme_DSU_GLOBALS`.
///
/// ```
/// dsu::global! { static X: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0); }
/// assert!(dsu::GLOBALS.iter().any(|d| d.name().ends_with("::X")));
/// ```
#[linkme::distributed_slice]
pub static DSU_GLOBALS: [GlobalDesc];

#[doc(inline)]
pub use DSU_GLOBALS as GLOBALS;

#[doc(hidden)]
pub mod __private {
    pub use dsu_macros::global as global_impl;
    pub use linkme;
}

/// Declares shared globals.
///
/// Each `static NAME: T = init;` becomes a [`Global<T>`] (page-aligned, whole pages, in the
/// section `dsu_globals`) that dereferences to `T`, plus a [`GlobalDesc`] in [`GLOBALS`](static@GLOBALS).
/// `T` must be [`SharedCell`] (atomics, [`sync::Mutex`], arrays and derived structs of them)
/// and `init` a constant expression. Attributes:
///
/// - `#[dsu(name = "app::COUNTER")]`: the variable's name in the segment. The default is
///   `module_path!()::NAME`, which includes the crate name: give an explicit name when two
///   builds of different crates (e.g. two example binaries) must share it.
/// - `#[dsu(migrate(from = OldType, with = transform, merge = catch_up))]`: the global's
///   type changed; `transform: fn(OldType) -> T` turns a snapshot of the old value (read
///   at attach) into the new one. The new entry is not shared with versions that use the
///   old type, which keep writing the old entry while they drain: `merge` (optional),
///   `catch_up: fn(&T, at_attach: &OldType, final: &OldType)`, is called once they have
///   all ended, with the snapshot and the old entry's last value, to add what they wrote
///   ([`Version::finish_migrations`]). Without `merge`, the old version's writes after
///   this attach are lost. Repeat `migrate(...)` to accept several older types (e.g. the
///   last two generations): the one whose fingerprint the segment's newest entry of that
///   name has is used. Without an entry of that name in the segment, `init` is used; an
///   entry of another type is [`Error::MigrationSourceUnknown`], never a silent `init`.
/// - `#[dsu(migrate(from = OldType, with_ref = transform))]`: for an old type that owns
///   shared-heap blocks (a [`heap::Mutex`] of a container, or a type holding one), which
///   `with` refuses at compile time (a snapshot would be a second owner of the old
///   version's blocks). `transform: fn(&'static OldType) -> T` gets the old entry's live
///   value, in a view of its pages that stays mapped for the process's life; it takes the
///   old value's lock (shared with the running old versions), reads the container and
///   builds the new one in the heap. Nothing old is copied, moved or freed; the old
///   versions keep using their container, and their writes after the transform are not
///   carried over (there is no `merge` with `with_ref`). It costs one pass over the old
///   container at attach, under its lock (docs/DESIGN.md, "Migrating a heap container").
/// - `#[dsu(zeroed)]`: `init` is all zero bytes (a table of zeros, an empty mutex), so the
///   global goes to the NOBITS section [`ZERO_SECTION`] and takes no space in the binary's
///   file. rustc refuses to compile it if `init` has a non-zero byte ("BSS section
///   '.bss.dsu_globals_zero' cannot have non-zero bytes").
///
/// Other attributes (docs, `#[allow]`) are kept on the static.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use dsu::sync::Mutex;
///
/// dsu::global! {
///     /// Requests served.
///     pub static REQUESTS: AtomicU64 = AtomicU64::new(0);
///     #[dsu(name = "app::CONFIG")]
///     static CONFIG: Mutex<[u8; 64]> = Mutex::new([0; 64]);
///     /// One MiB of zeros: no file space.
///     #[dsu(zeroed)]
///     static TABLE: [AtomicU64; 131072] = [const { AtomicU64::new(0) }; 131072];
/// }
///
/// REQUESTS.fetch_add(1, Ordering::Relaxed);
/// CONFIG.lock().unwrap()[0] = 1;
/// ```
///
/// A migration from either of two older layouts, with merge steps:
///
/// ```
/// use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
/// #[derive(dsu::Shared)]
/// #[repr(C)]
/// struct StatsV1 { hits: AtomicU32 }
/// #[derive(dsu::Shared)]
/// #[repr(C)]
/// struct StatsV2 { hits: AtomicU64 }
/// #[derive(dsu::Shared)]
/// #[repr(C)]
/// struct StatsV3 { hits: AtomicU64, misses: AtomicU64 }
///
/// fn from_v2(old: StatsV2) -> StatsV3 {
///     StatsV3 { hits: old.hits, misses: AtomicU64::new(0) }
/// }
/// fn catch_up_v2(new: &StatsV3, at_attach: &StatsV2, last: &StatsV2) {
///     new.hits.fetch_add(last.hits.load(Relaxed) - at_attach.hits.load(Relaxed), Relaxed);
/// }
/// fn from_v1(old: StatsV1) -> StatsV3 {
///     StatsV3 { hits: AtomicU64::new(old.hits.into_inner().into()), misses: AtomicU64::new(0) }
/// }
/// fn catch_up_v1(new: &StatsV3, at_attach: &StatsV1, last: &StatsV1) {
///     let delta = last.hits.load(Relaxed).wrapping_sub(at_attach.hits.load(Relaxed));
///     new.hits.fetch_add(delta.into(), Relaxed);
/// }
///
/// dsu::global! {
///     #[dsu(name = "app::STATS",
///           migrate(from = StatsV2, with = from_v2, merge = catch_up_v2),
///           migrate(from = StatsV1, with = from_v1, merge = catch_up_v1))]
///     static STATS: StatsV3 = StatsV3 { hits: AtomicU64::new(0), misses: AtomicU64::new(0) };
/// }
/// let d = dsu::GLOBALS.iter().find(|d| d.name() == "app::STATS").unwrap();
/// let froms: Vec<_> = d.migration().unwrap().chain().map(|m| m.old_type_name()).collect();
/// assert_eq!(froms, ["StatsV2", "StatsV1"]);
/// ```
///
/// A heap map whose value type changed, migrated in place:
///
/// ```
/// use dsu::heap::{HashMap, Mutex};
/// #[derive(dsu::Shared, Clone, Copy)]
/// #[repr(C)]
/// struct V1 { hits: u32 }
/// #[derive(dsu::Shared)]
/// #[repr(C)]
/// struct V2 { hits: u64, misses: u64 }
///
/// fn upgrade(old: &'static Mutex<HashMap<u64, V1>>) -> Mutex<HashMap<u64, V2>> {
///     let old = old.lock().expect("v1's map is poisoned");
///     let mut new = HashMap::new();
///     new.reserve(old.len());
///     for (k, v) in old.iter() {
///         new.insert(*k, V2 { hits: v.hits.into(), misses: 0 });
///     }
///     Mutex::new(new)
/// }
///
/// dsu::global! {
///     #[dsu(name = "app::CLIENTS", migrate(from = Mutex<HashMap<u64, V1>>, with_ref = upgrade))]
///     static CLIENTS: Mutex<HashMap<u64, V2>> = Mutex::new(HashMap::new());
/// }
/// let d = dsu::GLOBALS.iter().find(|d| d.name() == "app::CLIENTS").unwrap();
/// assert!(d.migration().unwrap().is_in_place());
/// ```
#[macro_export]
macro_rules! global {
    ($($body:tt)*) => {
        $crate::__private::global_impl! { $($body)* }
    };
}
