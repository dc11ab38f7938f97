// SPDX-License-Identifier: GPL-2.0

//! Module parameters.
//!
//! The 6.12 `module!` macro has no parameters, so [`module_param_uint!`] builds what C's
//! `module_param(name, uint, perm)` does: a `struct kernel_param` in the `__param` section
//! (found by the module loader, so the value can be given to insmod and shows in
//! `/sys/module/<mod>/parameters/`) using the kernel's `param_ops_uint`, plus the
//! `parmtype`/`parm` strings in `.modinfo` for modinfo(8).
//!
//! The value lives in a [`UintParam`]. The kernel writes it under its parameter lock (at
//! load, or through sysfs when the permission allows writing); readers load it atomically
//! and may see an old or a new value, never a torn one.

use core::sync::atomic::{AtomicU32, Ordering};
use kernel::{bindings, str::CStr, types::Opaque};

extern "C" {
    /// This module, constructed by the module loader.
    static __this_module: Opaque<bindings::module>;
}

/// Storage of an unsigned int module parameter.
#[repr(transparent)]
pub struct UintParam(AtomicU32);

impl UintParam {
    /// A parameter with the given default.
    pub const fn new(default: u32) -> Self {
        Self(AtomicU32::new(default))
    }

    /// The current value.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A `struct kernel_param`, made `Sync` so that it can be a static.
#[repr(transparent)]
pub struct KernelParam(bindings::kernel_param);

// SAFETY: The kernel serialises every access to the parameter (`kernel_param_lock`); Rust
// code never touches it after construction.
unsafe impl Sync for KernelParam {}

impl KernelParam {
    /// A `uint` parameter named `name` stored in `value`, with sysfs permission `perm`.
    pub const fn uint(name: &'static CStr, value: &'static UintParam, perm: u16) -> Self {
        Self(bindings::kernel_param {
            name: name.as_char_ptr(),
            // Only the addresses of the loader-provided `__this_module` and the kernel's
            // `param_ops_uint` are taken, which needs no `unsafe`.
            mod_: (&raw const __this_module).cast_mut().cast(),
            ops: &raw const bindings::param_ops_uint,
            perm,
            level: -1,
            flags: 0,
            __bindgen_anon_1: bindings::kernel_param__bindgen_ty_1 {
                // `param_ops_uint` reads and writes an `unsigned int` here; `UintParam` is a
                // transparent `AtomicU32`, which has that layout.
                arg: value.0.as_ptr().cast(),
            },
        })
    }
}

/// Copies a string into a fixed array at compile time (for `.modinfo` entries).
pub const fn modinfo<const N: usize>(s: &str) -> [u8; N] {
    let bytes = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() && i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Declares a `uint` module parameter: `module_param_uint!(STATIC, "name", default, perm,
/// "description")` defines `static STATIC: UintParam`.
#[macro_export]
macro_rules! module_param_uint {
    ($storage:ident, $name:literal, $default:expr, $perm:expr, $desc:literal) => {
        #[doc = $desc]
        pub static $storage: $crate::kernel_ext::param::UintParam =
            $crate::kernel_ext::param::UintParam::new($default);

        const _: () = {
            #[link_section = "__param"]
            #[used(compiler)]
            static PARAM: $crate::kernel_ext::param::KernelParam =
                $crate::kernel_ext::param::KernelParam::uint(
                    ::kernel::c_str!($name),
                    &$storage,
                    $perm,
                );

            const TYPE: &str = concat!("parmtype=", $name, ":uint\0");
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static PARMTYPE: [u8; TYPE.len()] = $crate::kernel_ext::param::modinfo(TYPE);

            const DESC: &str = concat!("parm=", $name, ":", $desc, "\0");
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static PARM: [u8; DESC.len()] = $crate::kernel_ext::param::modinfo(DESC);
        };
    };
}
