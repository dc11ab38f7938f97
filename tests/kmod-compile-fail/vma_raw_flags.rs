// SPDX-License-Identifier: GPL-2.0-only
// expect: E0599
//! A new VMA's flags are set through typed setters only; raw bits (e.g. clearing
//! `VM_SHARED` or setting `VM_PFNMAP`) are not expressible.

use crate::kernel_ext::mm::VmaNew;

#[allow(dead_code)]
fn case(vma: &VmaNew) {
    vma.set_flags(0x400);
}
