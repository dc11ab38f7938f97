//! The marker traits [`Shared`] (types whose bytes mean the same in every program version)
//! and [`SharedCell`] (shared types a global may hold: every byte interior-mutable).

use crate::fingerprint::Fnv;
use core::sync::atomic;

/// A type that may live in a shared global: its bytes mean the same thing in every version
/// of the program that maps them, and it holds no pointer into one version's private
/// memory.
///
/// [`FINGERPRINT`](Shared::FINGERPRINT) identifies the layout: two versions agree on a
/// variable only if its size and fingerprint are equal. Derive it with
/// `#[derive(dsu::Shared)]` on a `#[repr(C)]` struct; the derive hashes the type's name,
/// size and alignment and each field's name, fingerprint, offset and size.
///
/// # Safety
///
/// Implementors must have a layout that does not depend on the build (`repr(C)`,
/// `repr(transparent)` or a primitive), must not contain references, raw pointers, or
/// owning pointers (`Box`, `Vec`, `String`, ...), and **every bit pattern must be a valid
/// value**: another version, or a version killed half-way through a write, may leave any
/// bytes there. So `bool`, `char`, `AtomicBool`, enums and `NonZero*` are not `Shared`
/// (use an integer or an atomic integer). `FINGERPRINT` must change whenever the layout or
/// meaning does. Every [`FieldDesc`](crate::typedesc::FieldDesc) in `FIELDS` must hold
/// null or `'static` NUL-terminated strings: `attach` reads them to describe the type.
///
/// One exception, made in this crate: [`heap::Mutex`](crate::heap::Mutex) holds pointers
/// into the shared heap (valid in every version) and not every bit pattern is a valid
/// value; its bytes are only ever written by its own code, under its lock, in versions that
/// agree on its fingerprint, a holder's death poisons it, and it sets
/// [`OWNS_HEAP`](Shared::OWNS_HEAP) so that no migration snapshots it. A type holding one
/// must set `OWNS_HEAP` too (the derive does).
///
/// ```
/// use std::sync::atomic::AtomicU64;
///
/// #[derive(dsu::Shared)]
/// #[repr(C)]
/// struct Stats {
///     hits: AtomicU64,
///     misses: AtomicU64,
/// }
///
/// use dsu::Shared;
/// assert_ne!(Stats::FINGERPRINT, AtomicU64::FINGERPRINT);
/// ```
pub unsafe trait Shared: Sized {
    /// 64-bit layout fingerprint (see the trait docs).
    ///
    /// ```
    /// use dsu::Shared;
    /// assert_ne!(u32::FINGERPRINT, i32::FINGERPRINT);
    /// ```
    const FINGERPRINT: u64;

    /// The fields of a struct, in offset order, for the type description stored in the
    /// segment (`dsuctl show`, conflict messages naming the field that changed); empty
    /// for primitives, arrays and atomics. The derive lists every field.
    ///
    /// ```
    /// #[derive(dsu::Shared)]
    /// #[repr(C)]
    /// struct P { x: u32, y: u64 }
    /// use dsu::Shared;
    /// assert_eq!(P::FIELDS.len(), 2);
    /// assert_eq!(P::FIELDS[1].offset, 8);
    /// assert!(u32::FIELDS.is_empty());
    /// ```
    const FIELDS: &'static [crate::typedesc::FieldDesc] = &[];

    /// Whether the type owns blocks of the shared heap ([`heap::Mutex`](crate::heap::Mutex),
    /// or a struct or array holding one). A migration cannot start from such a type: its
    /// snapshot would be a second owner of blocks the old version still uses. The derive
    /// sets it from the fields.
    ///
    /// ```
    /// use dsu::Shared;
    /// assert!(!u64::OWNS_HEAP);
    /// assert!(<dsu::heap::Mutex<dsu::heap::Vec<u8>>>::OWNS_HEAP);
    /// ```
    const OWNS_HEAP: bool = false;
}

/// The fingerprint of a primitive: its name and size.
const fn prim(name: &str, size: usize) -> u64 {
    Fnv::new().str(name).u64(size as u64).finish()
}

macro_rules! shared_prim {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: a primitive with a fixed layout and no pointers.
        unsafe impl Shared for $t {
            const FINGERPRINT: u64 = prim(stringify!($t), core::mem::size_of::<$t>());
        }
    )*};
}

// Not bool, char (or AtomicBool): 2 is not a bool, 0xD800 not a char, and another version
// may store either.
shared_prim!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64
);
shared_prim!(
    atomic::AtomicU8,
    atomic::AtomicU16,
    atomic::AtomicU32,
    atomic::AtomicU64,
    atomic::AtomicUsize,
    atomic::AtomicI8,
    atomic::AtomicI16,
    atomic::AtomicI32,
    atomic::AtomicI64,
    atomic::AtomicIsize,
);

// SAFETY: an array of Shared elements has the elements' layout, repeated.
unsafe impl<T: Shared, const N: usize> Shared for [T; N] {
    const FINGERPRINT: u64 = Fnv::new()
        .str("[T; N]")
        .u64(T::FINGERPRINT)
        .u64(N as u64)
        .finish();
    const OWNS_HEAP: bool = T::OWNS_HEAP;
}

// SAFETY: UnsafeCell<T> has the layout of T.
unsafe impl<T: Shared> Shared for core::cell::UnsafeCell<T> {
    const FINGERPRINT: u64 = Fnv::new().str("UnsafeCell").u64(T::FINGERPRINT).finish();
    const OWNS_HEAP: bool = T::OWNS_HEAP;
}

/// A [`Shared`] type that a global may hold: every byte of its value lies inside an
/// `UnsafeCell` and is accessed with synchronisation (atomics, [`Mutex`](crate::sync::Mutex)),
/// so that a `&Self` stays valid while other threads, other versions of the program and
/// [`attach`](crate::attach) change the bytes under it.
///
/// [`Global`](crate::Global) hands out `&T` for its value, and the value's pages are shared
/// with other processes that write them at any time: for a plain `u64` or `[u8; 16]` that
/// `&T` would be undefined behaviour (the compiler assumes the bytes behind a shared
/// reference do not change). So a global holds atomics, [`Mutex`](crate::sync::Mutex)es,
/// arrays of them, and `#[derive(dsu::Shared)]` structs made only of them (the derive
/// implements `SharedCell` for those); plain data goes inside a `Mutex`.
///
/// ```
/// use dsu::{SharedCell, sync::Mutex};
/// use std::sync::atomic::AtomicU64;
/// fn global_ok<T: SharedCell>() {}
/// global_ok::<AtomicU64>();
/// global_ok::<Mutex<[u8; 64]>>();
/// global_ok::<[AtomicU64; 4]>();
/// ```
///
/// # Safety
///
/// Every byte of the value other than padding lies inside an `UnsafeCell` (directly, or
/// through atomics), the type is `Sync`, and its methods stay sound when the bytes are
/// replaced at any moment by bytes of another valid value (a store of another thread).
/// Padding bytes are never read or written as part of the value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a dsu global: its bytes are not all interior-mutable",
    label = "not atomics or a dsu::sync::Mutex",
    note = "other versions write a global's pages at any time, so it must hold atomics, \
            dsu::sync::Mutex, arrays of them or #[derive(dsu::Shared)] structs made of them; \
            put plain data in a dsu::sync::Mutex"
)]
pub unsafe trait SharedCell: Shared + Sync {}

macro_rules! shared_cell {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: an atomic integer: its one field is an UnsafeCell, every access atomic.
        unsafe impl SharedCell for $t {}
    )*};
}

shared_cell!(
    atomic::AtomicU8,
    atomic::AtomicU16,
    atomic::AtomicU32,
    atomic::AtomicU64,
    atomic::AtomicUsize,
    atomic::AtomicI8,
    atomic::AtomicI16,
    atomic::AtomicI32,
    atomic::AtomicI64,
    atomic::AtomicIsize,
);

// SAFETY: no padding between elements; each element is SharedCell.
unsafe impl<T: SharedCell, const N: usize> SharedCell for [T; N] {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, AtomicU64};

    #[test]
    fn primitives_differ() {
        let all = [
            u8::FINGERPRINT,
            i8::FINGERPRINT,
            u32::FINGERPRINT,
            i32::FINGERPRINT,
            f32::FINGERPRINT,
            u64::FINGERPRINT,
            AtomicU64::FINGERPRINT,
            <[u8; 4]>::FINGERPRINT,
            <[u8; 5]>::FINGERPRINT,
            <[i8; 4]>::FINGERPRINT,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[derive(crate::Shared)]
    #[repr(C)]
    struct V1 {
        a: AtomicU32,
        b: AtomicU64,
    }

    mod added {
        use std::sync::atomic::{AtomicU32, AtomicU64};
        #[derive(crate::Shared)]
        #[repr(C)]
        pub struct V1 {
            a: AtomicU32,
            b: AtomicU64,
            c: AtomicU32,
        }
    }

    mod reordered {
        use std::sync::atomic::{AtomicU32, AtomicU64};
        #[derive(crate::Shared)]
        #[repr(C)]
        pub struct V1 {
            b: AtomicU64,
            a: AtomicU32,
        }
    }

    mod renamed {
        use std::sync::atomic::{AtomicU32, AtomicU64};
        #[derive(crate::Shared)]
        #[repr(C)]
        pub struct V1 {
            a: AtomicU32,
            bb: AtomicU64,
        }
    }

    mod retyped {
        use std::sync::atomic::{AtomicI64, AtomicU32};
        #[derive(crate::Shared)]
        #[repr(C)]
        pub struct V1 {
            a: AtomicU32,
            b: AtomicI64,
        }
    }

    mod same {
        use std::sync::atomic::{AtomicU32, AtomicU64};
        #[derive(crate::Shared)]
        #[repr(C)]
        pub struct V1 {
            a: AtomicU32,
            b: AtomicU64,
        }
    }

    #[derive(crate::Shared)]
    #[repr(transparent)]
    struct Wrapper(AtomicU64);

    #[derive(crate::Shared)]
    #[repr(C)]
    struct Generic<T> {
        x: T,
    }

    #[test]
    fn derive_changes_with_fields() {
        let base = V1::FINGERPRINT;
        assert_eq!(
            base,
            same::V1::FINGERPRINT,
            "same definition in another module: same fingerprint"
        );
        assert_ne!(base, added::V1::FINGERPRINT, "added field");
        assert_ne!(base, reordered::V1::FINGERPRINT, "reordered fields");
        assert_ne!(base, renamed::V1::FINGERPRINT, "renamed field");
        assert_ne!(base, retyped::V1::FINGERPRINT, "retyped field");
        assert_ne!(Wrapper::FINGERPRINT, AtomicU64::FINGERPRINT);
        assert_ne!(Generic::<u32>::FINGERPRINT, Generic::<i32>::FINGERPRINT);
    }
}
