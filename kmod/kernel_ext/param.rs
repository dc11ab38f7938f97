// SPDX-License-Identifier: GPL-2.0-only

//! Module parameters.
//!
//! The 6.12 `module!` macro has no parameters, so [`module_param_uint!`] builds what C's
//! `module_param(name, uint, perm)` does: a `struct kernel_param` in the `__param` section
//! (found by the module loader, so the value can be given to insmod and shows in
//! `/sys/module/<mod>/parameters/`) plus the
//! `parmtype`/`parm` strings in `.modinfo` for modinfo(8), but with a bounded `set`.
//!
//! The value lives in a [`UintParam`] together with its largest allowed value. Writes go
//! through [`BOUNDED_UINT_OPS`], whose `set` parses like `param_ops_uint` but refuses a
//! value above that maximum with `EINVAL`, at insmod (the load fails) and through sysfs
//! alike, so no limit can be raised to where the allocations it bounds overflow or exceed
//! what kmalloc/kvmalloc may be asked for. The kernel writes under its parameter lock;
//! readers load atomically and may see an old or a new value, never a torn one.

use core::sync::atomic::{AtomicU32, Ordering};
use kernel::{
    bindings,
    error::code::{EINVAL, ERANGE},
    str::CStr,
    types::Opaque,
};

extern "C" {
    /// This module, constructed by the module loader.
    static __this_module: Opaque<bindings::module>;
}

/// Storage of an unsigned int module parameter and its largest allowed value.
///
/// `#[repr(C)]` with the value first: the kernel's `param_get_uint` reads an `unsigned int`
/// at the parameter's `arg`, which points here.
#[repr(C)]
pub struct UintParam {
    value: AtomicU32,
    max: u32,
}

impl UintParam {
    /// A parameter with the given default and maximum (`default <= max`).
    pub const fn new(default: u32, max: u32) -> Self {
        assert!(default <= max);
        Self {
            value: AtomicU32::new(default),
            max,
        }
    }

    /// The current value.
    pub fn get(&self) -> u32 {
        self.value.load(Ordering::Relaxed)
    }

    /// The largest value a write may set.
    pub fn max(&self) -> u32 {
        self.max
    }
}

/// `kernel_param_ops.set` of a bounded uint: `kstrtouint` (base 0, a trailing newline
/// allowed, as `param_set_uint`), then `EINVAL` above the parameter's maximum (also for a
/// number that does not fit in 32 bits, which `kstrtouint` calls `ERANGE`).
///
/// # Safety
///
/// `val` is a NUL-terminated string and `kp` a parameter whose `arg` is a [`UintParam`]; the
/// kernel calls it so, under the parameter lock.
unsafe extern "C" fn set_bounded_uint(
    val: *const kernel::ffi::c_char,
    kp: *const bindings::kernel_param,
) -> kernel::ffi::c_int {
    // SAFETY: `kp` is one of our parameters (the caller's contract), whose `arg` points to a
    // static `UintParam`.
    let param = unsafe { &*(*kp).__bindgen_anon_1.arg.cast::<UintParam>() };
    let mut value: kernel::ffi::c_uint = 0;
    // SAFETY: `val` is NUL-terminated (the caller's contract); `value` is a valid output.
    let rc = unsafe { bindings::kstrtouint(val, 0, &mut value) };
    if rc == ERANGE.to_errno() {
        // Above any cap, however far.
        return EINVAL.to_errno();
    }
    if rc != 0 {
        return rc;
    }
    if value > param.max {
        return EINVAL.to_errno();
    }
    param.value.store(value, Ordering::Relaxed);
    0
}

/// The `kernel_param_ops` of a bounded uint parameter, made `Sync` to be a static.
#[repr(transparent)]
pub struct ParamOps(bindings::kernel_param_ops);

// SAFETY: Read-only after construction; it holds only function pointers.
unsafe impl Sync for ParamOps {}

/// Ops of every [`UintParam`]: bounded set, the kernel's `param_get_uint`.
pub static BOUNDED_UINT_OPS: ParamOps = ParamOps(bindings::kernel_param_ops {
    flags: 0,
    set: Some(set_bounded_uint),
    get: Some(bindings::param_get_uint),
    free: None,
});

/// A `struct kernel_param`, made `Sync` so that it can be a static.
#[repr(transparent)]
pub struct KernelParam(bindings::kernel_param);

// SAFETY: The kernel serialises every access to the parameter (`kernel_param_lock`); Rust
// code never touches it after construction.
unsafe impl Sync for KernelParam {}

impl KernelParam {
    /// A bounded `uint` parameter named `name` stored in `value`, with sysfs permission
    /// `perm`.
    pub const fn uint(name: &'static CStr, value: &'static UintParam, perm: u16) -> Self {
        Self(bindings::kernel_param {
            name: name.as_char_ptr(),
            // Only the addresses of the loader-provided `__this_module` and of our ops are
            // taken, which needs no `unsafe`.
            mod_: (&raw const __this_module).cast_mut().cast(),
            ops: &raw const BOUNDED_UINT_OPS.0,
            perm,
            level: -1,
            flags: 0,
            __bindgen_anon_1: bindings::kernel_param__bindgen_ty_1 {
                // `set_bounded_uint` and `param_get_uint` access the `UintParam` here.
                arg: (value as *const UintParam).cast_mut().cast(),
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

/// Declares a bounded `uint` module parameter: `module_param_uint!(STATIC, "name", default,
/// max, perm, "description")` defines `static STATIC: UintParam`; writes above `max` fail
/// with `EINVAL`.
#[macro_export]
macro_rules! module_param_uint {
    ($storage:ident, $name:literal, $default:expr, $max:expr, $perm:expr, $desc:literal) => {
        #[doc = $desc]
        pub static $storage: $crate::kernel_ext::param::UintParam =
            $crate::kernel_ext::param::UintParam::new($default, $max);

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
