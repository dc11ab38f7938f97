// SPDX-License-Identifier: GPL-2.0-only

//! Harness self-test module: on load it makes KASAN report a real out-of-bounds read, so
//! that the VM runner can prove it fails a run whose kernel log holds a KASAN report.
//! It is loaded only by `scripts/guest/run/warn.sh`, never by the VM suite.

use kernel::prelude::*;

module! {
    type: WarnTest,
    name: "dsu_warn_test",
    author: "dsu developers",
    description: "Triggers a KASAN report on purpose (VM harness self-test)",
    license: "GPL",
}

struct WarnTest;

impl kernel::Module for WarnTest {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let mut buf: KVec<u8> = KVec::with_capacity(16, GFP_KERNEL)?;
        buf.push(0, GFP_KERNEL)?;
        // SAFETY: `__kasan_check_read` only checks the shadow memory of the range and reports;
        // it does not dereference it. Byte 16 lies past the 16-byte allocation on purpose.
        let in_bounds =
            unsafe { kernel::bindings::__kasan_check_read(buf.as_ptr().add(16).cast(), 1) };
        pr_info!(
            "dsu_warn_test: out-of-bounds check returned {}\n",
            in_bounds
        );
        Ok(WarnTest)
    }
}
