// SPDX-License-Identifier: GPL-2.0-only
// expect: E0505
//! A borrowed page cannot be mapped after its reference was dropped (the old `PagePtr` was
//! `Copy` with no lifetime, so this compiled and mapped a freed page).

use crate::kernel_ext::{mm::VmaNew, shmem::ShmemFile};
use kernel::prelude::*;

#[allow(dead_code)]
fn case(file: &ShmemFile, vma: &VmaNew) -> Result {
    let page = file.page(0)?;
    let borrowed = page.borrow();
    drop(page);
    vma.insert_pages(vma.start(), &[borrowed])
}
