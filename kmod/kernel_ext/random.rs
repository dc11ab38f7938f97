// SPDX-License-Identifier: GPL-2.0-only

//! Random numbers from the kernel's CRNG.

extern "C" {
    fn dsu_random_u32() -> u32;
}

/// A random `u32` (`get_random_u32`; never blocks once the CRNG is seeded at boot).
pub fn random_u32() -> u32 {
    // SAFETY: No arguments, no state of ours.
    unsafe { dsu_random_u32() }
}
