// SPDX-License-Identifier: GPL-2.0-only

//! Wall-clock time (`CLOCK_REALTIME`), as reported to userspace in creation and event times.

use kernel::bindings;

/// Returns `CLOCK_REALTIME` in nanoseconds since the epoch (0 before 1970).
pub fn realtime_ns() -> u64 {
    let mut ts = bindings::timespec64::default();
    // SAFETY: `ts` is a valid, writable `timespec64`; the function only writes it.
    unsafe { bindings::ktime_get_real_ts64(&mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nsecs = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}
