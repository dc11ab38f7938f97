// SPDX-License-Identifier: GPL-2.0-only
// expect: E0515
//! A borrowed page cannot outlive the reference it borrows from.

use crate::kernel_ext::{mm::BorrowedPage, shmem::ShmemFile};
use kernel::prelude::*;

#[allow(dead_code)]
fn case(file: &ShmemFile) -> Result<BorrowedPage<'static>> {
    let page = file.page(0)?;
    Ok(page.borrow())
}
