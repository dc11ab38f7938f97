// SPDX-License-Identifier: GPL-2.0

//! Limits, as module parameters (`/sys/module/dsu/parameters/`, settable at insmod and by
//! root at run time). A limit is hit exactly: with a limit of N, the Nth object is created
//! and the N+1th is refused. Each value is read once per operation.

use crate::module_param_uint;

module_param_uint!(
    MAX_SEGMENTS,
    "max_segments",
    64,
    0o644,
    "Most named segments (ATTACH: ENOSPC)"
);
module_param_uint!(
    MAX_SEGMENT_PAGES,
    "max_segment_pages",
    131072,
    0o644,
    "Most pages per segment (RESOLVE: ENOSPC; a longer BIND map: E2BIG)"
);
module_param_uint!(
    MAX_VARIABLES,
    "max_variables",
    16384,
    0o644,
    "Most variables per segment (RESOLVE: ENOSPC; a larger batch: E2BIG)"
);
module_param_uint!(
    MAX_VERSIONS,
    "max_versions",
    128,
    0o644,
    "Most live versions per segment (BIND: ENOSPC)"
);

/// Most named segments.
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

/// Most events queued per handle; older ones are dropped and counted as lost.
pub const EVENT_QUEUE_LEN: usize = 64;
