//! The [`Shared`] marker trait: types whose bytes mean the same in every program version.

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
/// owning pointers (`Box`, `Vec`, `String`, ...), and every bit pattern another version
/// can store must be valid. `FINGERPRINT` must change whenever the layout or meaning does.
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

shared_prim!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool, char
);
shared_prim!(
    atomic::AtomicBool,
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
}

// SAFETY: UnsafeCell<T> has the layout of T.
unsafe impl<T: Shared> Shared for core::cell::UnsafeCell<T> {
    const FINGERPRINT: u64 = Fnv::new().str("UnsafeCell").u64(T::FINGERPRINT).finish();
}

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
            bool::FINGERPRINT,
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

    /// The derive rejects pointer-like fields at compile time. Checked by compiling small
    /// crates with rustc when it is available (no trybuild).
    #[test]
    fn derive_rejects_pointers() {
        let cases = [
            ("struct S { a: &'static u32 }", "a reference"),
            ("struct S { a: *const u32 }", "a raw pointer"),
            ("struct S { a: Box<u32> }", "`Box`"),
            ("struct S { a: Vec<u32> }", "`Vec`"),
            ("struct S { a: String }", "`String`"),
            ("struct S { a: fn() }", "a function pointer"),
            ("struct S { a: [Option<Box<u8>>; 2] }", "`Box`"),
        ];
        for (src, want) in cases {
            let Some(msg) = compile_fail::derive_error(&format!("#[repr(C)] {src}")) else {
                return;
            };
            assert!(msg.contains(want), "{src}: {msg}");
        }
        if let Some(msg) = compile_fail::derive_error("struct S { a: u32 }") {
            assert!(msg.contains("repr(C)"), "{msg}");
        }
    }

    /// Compiles a tiny crate using the derive and returns rustc's diagnostics.
    mod compile_fail {
        /// `None` when the proc-macro library cannot be found (another target dir).
        pub fn derive_error(item: &str) -> Option<String> {
            let dir = std::env::temp_dir().join(format!("dsu-derive-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join("t.rs");
            std::fs::write(
                &file,
                format!("extern crate dsu_macros;\n#[derive(dsu_macros::Shared)]\n{item}\nfn main() {{}}\n"),
            )
            .unwrap();
            let deps =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/deps");
            let lib = std::fs::read_dir(&deps)
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with("libdsu_macros-") && n.ends_with(".so")
                })
                .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())?;
            let out = std::process::Command::new(
                std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()),
            )
            .args([
                "--edition",
                "2024",
                "--crate-type",
                "bin",
                "--emit",
                "metadata",
                "-o",
            ])
            .arg(dir.join("t.rmeta"))
            .arg("--extern")
            .arg(format!("dsu_macros={}", lib.display()))
            .arg(&file)
            .output()
            .unwrap();
            assert!(!out.status.success(), "{item} compiled");
            Some(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}
