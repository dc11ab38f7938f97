// SPDX-License-Identifier: GPL-2.0-only
// expect: E0133
//! Borrowing a page for a caller-chosen lifetime is `unsafe`: safe code cannot choose one.

use crate::kernel_ext::{mm::BorrowedPage, shmem::ShmemFile};
use kernel::prelude::*;

#[allow(dead_code)]
fn case(file: &ShmemFile) -> Result<BorrowedPage<'static>> {
    let page = file.page(0)?;
    Ok(page.borrow_for())
}
