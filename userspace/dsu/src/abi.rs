//! The byte layout of the descriptor records a built binary holds, for tools that read
//! them from the file without running it (`dsuctl check`): offsets of the fields of
//! [`GlobalDesc`] (in the section [`DESC_SECTION`](crate::DESC_SECTION)), [`Migration`] and
//! [`FieldDesc`]. Pointers are 8 bytes, native-endian; in a position-independent binary
//! they are filled in by relocations (`R_X86_64_RELATIVE`), so a reader applies the
//! binary's dynamic relocations.
//!
//! ```
//! use dsu::abi;
//! assert_eq!(abi::DESC_SIZE, 96);
//! assert_eq!(abi::DESC_NAME, 8);
//! ```

use crate::typedesc::FieldDesc;
use crate::{GlobalDesc, Migration};
use core::mem::{offset_of, size_of};

/// Bytes per [`GlobalDesc`] record.
pub const DESC_SIZE: usize = size_of::<GlobalDesc>();
/// `u32` magic ([`DESC_MAGIC`](crate::DESC_MAGIC)).
pub const DESC_MAGIC: usize = offset_of!(GlobalDesc, magic);
/// `u32` flags (`DESC_*`).
pub const DESC_FLAGS: usize = offset_of!(GlobalDesc, flags);
/// Pointer to the NUL-terminated variable name.
pub const DESC_NAME: usize = offset_of!(GlobalDesc, name);
/// Pointer to the NUL-terminated type spelling.
pub const DESC_TYPE_NAME: usize = offset_of!(GlobalDesc, type_name);
/// `u64` size of the value.
pub const DESC_VALUE_SIZE: usize = offset_of!(GlobalDesc, size);
/// `u64` alignment.
pub const DESC_ALIGN: usize = offset_of!(GlobalDesc, align);
/// `u64` pages.
pub const DESC_PAGES: usize = offset_of!(GlobalDesc, pages);
/// `u64` fingerprint (0 for C globals).
pub const DESC_FINGERPRINT: usize = offset_of!(GlobalDesc, fingerprint);
/// Pointer to the first [`Migration`], or null.
pub const DESC_MIGRATION: usize = offset_of!(GlobalDesc, migration);
/// Pointer to the [`FieldDesc`] array, or null.
pub const DESC_FIELDS: usize = offset_of!(GlobalDesc, fields);
/// `u64` entries of the field array.
pub const DESC_FIELD_COUNT: usize = offset_of!(GlobalDesc, field_count);

/// Bytes of a [`Migration`].
pub const MIGRATION_SIZE: usize = size_of::<Migration>();
/// `u64` size of the older type.
pub const MIGRATION_OLD_SIZE: usize = offset_of!(Migration, old_size);
/// `u64` fingerprint of the older type.
pub const MIGRATION_OLD_FINGERPRINT: usize = offset_of!(Migration, old_fingerprint);
/// Pointer to the NUL-terminated spelling of the older type.
pub const MIGRATION_OLD_TYPE_NAME: usize = offset_of!(Migration, old_type_name);
/// Pointer to the merge function, or null (none).
pub const MIGRATION_MERGE: usize = offset_of!(Migration, merge);
/// Pointer to the next [`Migration`], or null.
pub const MIGRATION_NEXT: usize = offset_of!(Migration, next);
/// `u64` flags ([`MIGRATION_IN_PLACE`](crate::MIGRATION_IN_PLACE)); after the fields
/// above, which keep their offsets.
pub const MIGRATION_FLAGS: usize = offset_of!(Migration, flags);

/// Bytes per [`FieldDesc`].
pub const FIELD_SIZE: usize = size_of::<FieldDesc>();
/// Pointer to the NUL-terminated field name.
pub const FIELD_NAME: usize = offset_of!(FieldDesc, name);
/// Pointer to the NUL-terminated spelling of the field's type.
pub const FIELD_TYPE_NAME: usize = offset_of!(FieldDesc, type_name);
/// `u64` offset.
pub const FIELD_OFFSET: usize = offset_of!(FieldDesc, offset);
/// `u64` size.
pub const FIELD_VALUE_SIZE: usize = offset_of!(FieldDesc, size);

#[cfg(test)]
mod tests {
    /// `Option<fn>` is one pointer, null for `None`: what a reader of the file assumes.
    #[test]
    fn merge_is_a_nullable_pointer() {
        assert_eq!(size_of::<Option<fn(*const u8, *const u8)>>(), 8);
        assert_eq!(super::MIGRATION_SIZE, 64);
        assert_eq!(super::MIGRATION_FLAGS, 56);
        assert_eq!(super::FIELD_SIZE, 32);
    }
}
