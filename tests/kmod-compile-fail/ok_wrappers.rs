// SPDX-License-Identifier: GPL-2.0-only
// expect: ok
//! Control case: the sound uses of the wrappers that the other cases get wrong compile, so
//! a failing case fails for its misuse and not for a broken harness.

use crate::kernel_ext::{mm::VmaNew, shmem::ShmemFile};
use kernel::prelude::*;

#[allow(dead_code)]
fn case(file: &ShmemFile, vma: &VmaNew) -> Result {
    let page = file.page(0)?;
    vma.set_mixedmap();
    vma.set_dontexpand();
    vma.set_dontdump();
    vma.insert_pages(vma.start(), &[page.borrow()])?;
    drop(page);
    Ok(())
}
