// SPDX-License-Identifier: GPL-2.0-only

//! Allocation flags the 6.12 `kernel` crate does not name: its `Flags` has constants for
//! `GFP_KERNEL_ACCOUNT` but none with `__GFP_RETRY_MAYFAIL`.

use kernel::{alloc::Flags, bindings};

// `Flags` is a single-`u32`-field struct; with the size of a `u32` that field covers every
// byte at offset 0, so any `u32` is a valid `Flags` (checked here, relied on below).
const _: () = assert!(core::mem::size_of::<Flags>() == core::mem::size_of::<u32>());

/// Kernel memory a user's call causes (batch copies, directory entries, listing buffers,
/// event queues): charged to the caller's memory cgroup (`GFP_KERNEL_ACCOUNT`) and allowed
/// to fail (`__GFP_RETRY_MAYFAIL`) silently (`__GFP_NOWARN`), so that a charge past
/// `memory.max` answers `ENOMEM` instead of OOM-killing the caller or warning in the kernel
/// log, as for segment pages.
pub const GFP_ACCOUNT_MAYFAIL: Flags = {
    let bits: u32 = bindings::GFP_KERNEL_ACCOUNT
        | (1 << bindings::___GFP_RETRY_MAYFAIL_BIT)
        | (1 << bindings::___GFP_NOWARN_BIT);
    // SAFETY: Any `u32` is a valid `Flags` (see the size assertion above), and these are the
    // kernel's own gfp bits, which `kmalloc`/`kvmalloc` accept together.
    unsafe { core::mem::transmute::<u32, Flags>(bits) }
};
