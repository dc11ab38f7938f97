// SPDX-License-Identifier: GPL-2.0-only

//! Thin safe wrappers over the raw `kernel::bindings` that the 6.12 `kernel` crate does not
//! abstract yet: misc devices, files, VMAs and faults, page references, shmem files,
//! credentials, namespaces and pids, poll wait queues, module parameters and wall-clock
//! time. `helpers.c` wraps the inlines of headers the Rust bindings lack.
//!
//! This is the only place in the module that touches `kernel::bindings`. Each file is named
//! after the upstream (6.13+) abstraction it stands in for, so that it can be replaced by
//! the real one when the kernel moves on.

pub mod alloc;
pub mod anon_file;
pub mod cred;
pub mod error;
pub mod file;
pub mod miscdevice;
pub mod mm;
pub mod mm_ref;
pub mod ns;
pub mod param;
pub mod poll;
pub mod random;
pub mod shmem;
pub mod time;
