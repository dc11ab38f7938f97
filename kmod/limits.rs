// SPDX-License-Identifier: GPL-2.0-only

//! Limits, as module parameters (`/sys/module/dsu/parameters/`, settable at insmod and by
//! root at run time). A limit is hit exactly: with a limit of N, the Nth object is created
//! and the N+1th is refused. Each value is read once per operation.
//!
//! Every parameter has a maximum (the `*_CAP` constants): a larger value is refused with
//! `EINVAL` at insmod and through sysfs, so that no allocation a limit bounds can reach
//! sizes kmalloc/kvmalloc refuse (with a WARNING) or overflow.

use crate::module_param_uint;

/// Largest `max_segments` and `max_user_segments`.
pub const SEGMENTS_CAP: u32 = 4096;
/// Largest `max_segment_pages` and `max_user_pages` (16 GiB of 4 KiB pages; a BIND map of
/// that many `u64`s is 32 MiB).
pub const PAGES_CAP: u32 = 1 << 22;
/// Largest `max_variables` (a RESOLVE batch of that many `struct dsu_var` is 50 MiB).
pub const VARIABLES_CAP: u32 = 1 << 18;
/// Largest `max_versions`.
pub const VERSIONS_CAP: u32 = 4096;
/// Largest `max_handles`.
pub const HANDLES_CAP: u32 = 65536;

module_param_uint!(
    MAX_SEGMENTS,
    "max_segments",
    64,
    SEGMENTS_CAP,
    0o644,
    "Most segments holding pages, destroyed ones with handles included (ATTACH: ENOSPC; at most 4096)"
);
module_param_uint!(
    MAX_SEGMENT_PAGES,
    "max_segment_pages",
    131072,
    PAGES_CAP,
    0o644,
    "Most pages per segment (RESOLVE: ENOSPC; a longer BIND map: E2BIG; at most 4194304)"
);
module_param_uint!(
    MAX_VARIABLES,
    "max_variables",
    16384,
    VARIABLES_CAP,
    0o644,
    "Most variables per segment (RESOLVE: ENOSPC; a larger batch: E2BIG; at most 262144)"
);
module_param_uint!(
    MAX_VERSIONS,
    "max_versions",
    128,
    VERSIONS_CAP,
    0o644,
    "Most live versions per segment (BIND: ENOSPC; at most 4096)"
);
module_param_uint!(
    MAX_HANDLES,
    "max_handles",
    1024,
    HANDLES_CAP,
    0o644,
    "Most handles attached to one segment (ATTACH: ENOSPC; at most 65536)"
);
module_param_uint!(
    MAX_USER_SEGMENTS,
    "max_user_segments",
    16,
    SEGMENTS_CAP,
    0o644,
    "Most segments created by one uid that still hold pages (ATTACH: ENOSPC; CAP_SYS_RESOURCE exempt; at most 4096)"
);
module_param_uint!(
    MAX_USER_PAGES,
    "max_user_pages",
    131072,
    PAGES_CAP,
    0o644,
    "Most segment pages charged to one uid (RESOLVE: ENOSPC; CAP_SYS_RESOURCE exempt; at most 4194304)"
);

module_param_uint!(
    MAX_HEAP_PAGES,
    "max_heap_pages",
    262144,
    PAGES_CAP,
    0o644,
    "Most pages of a segment's shared heap, backed or reserved (HEAP create: E2BIG; HEAP_GROW: ENOMEM; at most 4194304)"
);

/// Most pages of a segment's heap: its window at creation, its size at growth.
pub fn max_heap_pages() -> usize {
    MAX_HEAP_PAGES.get() as usize
}

/// Largest `gc_min_age`.
pub const GC_MIN_AGE_CAP: u32 = 1 << 30;

module_param_uint!(
    GC_MIN_AGE,
    "gc_min_age",
    1,
    GC_MIN_AGE_CAP,
    0o644,
    "Generations (READYs) a variable must have gone unused before DSU_IOC_GC reclaims it, unless the call gives its own (at most 2^30)"
);

/// DSU_IOC_GC's default `min_age`.
pub fn gc_min_age() -> u64 {
    GC_MIN_AGE.get() as u64
}

/// Most segments that hold pages (named, and destroyed ones with handles left).
pub fn max_segments() -> usize {
    MAX_SEGMENTS.get() as usize
}

/// Most pages in one segment, and in one version's page map.
pub fn max_segment_pages() -> usize {
    MAX_SEGMENT_PAGES.get() as usize
}

/// Most directory entries in one segment, and entries in one RESOLVE batch.
pub fn max_variables() -> usize {
    MAX_VARIABLES.get() as usize
}

/// Most live versions of one segment.
pub fn max_versions() -> usize {
    MAX_VERSIONS.get() as usize
}

/// Most handles attached to one segment.
pub fn max_handles() -> usize {
    MAX_HANDLES.get() as usize
}

/// Most segments charged to one uid.
pub fn max_user_segments() -> usize {
    MAX_USER_SEGMENTS.get() as usize
}

/// Most segment pages charged to one uid.
pub fn max_user_pages() -> usize {
    MAX_USER_PAGES.get() as usize
}

/// Most events queued per handle; older ones are dropped and counted as lost.
pub const EVENT_QUEUE_LEN: usize = 64;
