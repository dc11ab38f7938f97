// SPDX-License-Identifier: GPL-2.0-only

//! The `/dev/dsu` interface: the structs generated from `uapi/dsu.h`, ioctl numbers, and
//! copying them in and out of userspace with the header's size rules.
//!
//! Every struct starts with a `u32 size`. A size below the struct's first version (for API
//! version 1: the whole struct) is `EINVAL`; a larger one must have an all-zero tail, else
//! `E2BIG`, and is capped at one page. Output is written back only up to the size the
//! kernel knows. Arrays of records (`dsu_var`, `*_info`) follow the same rules with their
//! own element size. Names and labels are validated here into fixed, zero-padded arrays.
//!
//! No lock is held by any function here: they all touch user memory.

use crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL;
use core::mem::size_of;
use kernel::{
    error::code::*,
    page::PAGE_SIZE,
    prelude::*,
    types::{AsBytes, FromBytes},
    uaccess::{UserSlice, UserSliceReader, UserSliceWriter},
};

#[allow(
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_upper_case_globals,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
mod raw {
    include!("../uapi/src/bindings.rs");
}
pub use raw::*;

macro_rules! plain_data {
    ($($t:ty => $size:expr),* $(,)?) => {$(
        // The header lays every struct out with explicit padding: check that the generated
        // struct has exactly the bytes of its fields, so no padding byte is uninitialised.
        const _: () = assert!(size_of::<$t>() == $size);
        // SAFETY: The struct consists of integers and integer arrays with no padding (size
        // checked above): every bit pattern is valid and every byte is initialised.
        unsafe impl FromBytes for $t {}
        // SAFETY: See above.
        unsafe impl AsBytes for $t {}
    )*};
}

plain_data! {
    dsu_attach => 88,
    dsu_var => 216,
    dsu_resolve => 32,
    dsu_bind => 80,
    dsu_extent => 16,
    dsu_event => 64,
    dsu_list => 96,
    dsu_segment_info => 144,
    dsu_variable_info => 216,
    dsu_version_info => 72,
    dsu_read_var => 248,
    dsu_destroy => 72,
    dsu_setattr => 88,
    dsu_heap => 32,
    dsu_heap_grow => 24,
    dsu_heap_discard => 24,
    dsu_read_heap => 96,
    dsu_gc => 112,
    dsu_restore => 80,
    dsu_restore_var => 240,
    dsu_restore_heap => 32,
    dsu_snapshot => 144,
    dsu_lock_token => 16,
    dsu_lock_owner => 32,
}

/// ioctl command numbers, dispatched on the whole command: type, number, direction and
/// size bits. Each struct size the kernel knows has its own command (ATTACH and BIND have
/// two: API version 1's 80- and 64-byte structs and today's); any other command is `ENOTTY`. Within a
/// command, the struct's own `size` field still says how much is copied.
pub mod ioctl {
    use super::*;
    use kernel::ioctl::{_IO, _IOW, _IOWR};

    const MAGIC: u32 = DSU_IOC_MAGIC;
    /// `DSU_IOC_ATTACH`.
    pub const ATTACH: u32 = _IOWR::<dsu_attach>(MAGIC, DSU_IOC_NR_ATTACH);
    /// `DSU_IOC_ATTACH_VER1`: ATTACH as API version 1 encoded it (an 80-byte struct).
    pub const ATTACH_VER1: u32 =
        _IOWR::<[u8; DSU_ATTACH_SIZE_VER1 as usize]>(MAGIC, DSU_IOC_NR_ATTACH);
    /// `DSU_IOC_RESOLVE`.
    pub const RESOLVE: u32 = _IOWR::<dsu_resolve>(MAGIC, DSU_IOC_NR_RESOLVE);
    /// `DSU_IOC_BIND`.
    pub const BIND: u32 = _IOWR::<dsu_bind>(MAGIC, DSU_IOC_NR_BIND);
    /// `DSU_IOC_BIND_VER1`: BIND as API version 1 encoded it (a 64-byte struct).
    pub const BIND_VER1: u32 = _IOWR::<[u8; DSU_BIND_SIZE_VER1 as usize]>(MAGIC, DSU_IOC_NR_BIND);
    /// `DSU_IOC_LIST_SEGMENTS`.
    pub const LIST_SEGMENTS: u32 = _IOWR::<dsu_list>(MAGIC, DSU_IOC_NR_LIST_SEGMENTS);
    /// `DSU_IOC_LIST_VARIABLES`.
    pub const LIST_VARIABLES: u32 = _IOWR::<dsu_list>(MAGIC, DSU_IOC_NR_LIST_VARIABLES);
    /// `DSU_IOC_LIST_VERSIONS`.
    pub const LIST_VERSIONS: u32 = _IOWR::<dsu_list>(MAGIC, DSU_IOC_NR_LIST_VERSIONS);
    /// `DSU_IOC_READ_VAR`.
    pub const READ_VAR: u32 = _IOWR::<dsu_read_var>(MAGIC, DSU_IOC_NR_READ_VAR);
    /// `DSU_IOC_DESTROY`.
    pub const DESTROY: u32 = _IOW::<dsu_destroy>(MAGIC, DSU_IOC_NR_DESTROY);
    /// `DSU_IOC_SETATTR`.
    pub const SETATTR: u32 = _IOW::<dsu_setattr>(MAGIC, DSU_IOC_NR_SETATTR);
    /// `DSU_IOC_HEAP`.
    pub const HEAP: u32 = _IOWR::<dsu_heap>(MAGIC, DSU_IOC_NR_HEAP);
    /// `DSU_IOC_HEAP_GROW`.
    pub const HEAP_GROW: u32 = _IOWR::<dsu_heap_grow>(MAGIC, DSU_IOC_NR_HEAP_GROW);
    /// `DSU_IOC_HEAP_DISCARD`.
    pub const HEAP_DISCARD: u32 = _IOW::<dsu_heap_discard>(MAGIC, DSU_IOC_NR_HEAP_DISCARD);
    /// `DSU_IOC_READ_HEAP`.
    pub const READ_HEAP: u32 = _IOWR::<dsu_read_heap>(MAGIC, DSU_IOC_NR_READ_HEAP);
    /// `DSU_IOC_READY` (no argument struct).
    pub const READY: u32 = _IO(MAGIC, DSU_IOC_NR_READY);
    /// `DSU_IOC_GC`.
    pub const GC: u32 = _IOWR::<dsu_gc>(MAGIC, DSU_IOC_NR_GC);
    /// `DSU_IOC_RESTORE`.
    pub const RESTORE: u32 = _IOW::<dsu_restore>(MAGIC, DSU_IOC_NR_RESTORE);
    /// `DSU_IOC_RESTORE_VAR`.
    pub const RESTORE_VAR: u32 = _IOWR::<dsu_restore_var>(MAGIC, DSU_IOC_NR_RESTORE_VAR);
    /// `DSU_IOC_RESTORE_HEAP`.
    pub const RESTORE_HEAP: u32 = _IOW::<dsu_restore_heap>(MAGIC, DSU_IOC_NR_RESTORE_HEAP);
    /// `DSU_IOC_RESTORE_COMMIT` (no argument struct).
    pub const RESTORE_COMMIT: u32 = _IO(MAGIC, DSU_IOC_NR_RESTORE_COMMIT);
    /// `DSU_IOC_SNAPSHOT`.
    pub const SNAPSHOT: u32 = _IOWR::<dsu_snapshot>(MAGIC, DSU_IOC_NR_SNAPSHOT);
    /// `DSU_IOC_LOCK_TOKEN`.
    pub const LOCK_TOKEN: u32 = _IOWR::<dsu_lock_token>(MAGIC, DSU_IOC_NR_LOCK_TOKEN);
    /// `DSU_IOC_LOCK_OWNER`.
    pub const LOCK_OWNER: u32 = _IOWR::<dsu_lock_owner>(MAGIC, DSU_IOC_NR_LOCK_OWNER);
}

/// Largest struct or record size accepted (the tail beyond what the kernel knows must be
/// zero, and is only read this far).
const MAX_STRUCT_SIZE: usize = PAGE_SIZE;

/// Checks that `len` user bytes at `ptr` are zero: `E2BIG` if not, `EFAULT` if unreadable.
fn check_zero_tail(ptr: usize, len: usize) -> Result {
    let mut reader = UserSlice::new(ptr, len).reader();
    let mut chunk = [0u8; 64];
    while !reader.is_empty() {
        let n = reader.len().min(chunk.len());
        reader.read_slice(&mut chunk[..n])?;
        if chunk[..n].iter().any(|b| *b != 0) {
            return Err(E2BIG);
        }
    }
    Ok(())
}

/// Validates a caller's size for a struct or record of `T`: `EINVAL` below it, `E2BIG` for
/// a non-zero tail or above [`MAX_STRUCT_SIZE`].
fn check_size<T>(ptr: usize, size: usize) -> Result {
    let known = size_of::<T>();
    if size < known {
        return Err(EINVAL);
    }
    if size > MAX_STRUCT_SIZE {
        return Err(E2BIG);
    }
    if size > known {
        check_zero_tail(ptr.checked_add(known).ok_or(EFAULT)?, size - known)?;
    }
    Ok(())
}

/// Copies in an ioctl argument struct whose first field is its `u32 size`.
pub fn read_struct<T: FromBytes>(arg: usize) -> Result<T> {
    let size: u32 = UserSlice::new(arg, size_of::<u32>()).reader().read()?;
    check_size::<T>(arg, size as usize)?;
    UserSlice::new(arg, size_of::<T>()).reader().read()
}

/// Copies in an ioctl argument struct that grew after API version 1: a caller's `size` of at
/// least `min` (the first version's size) is accepted, and the fields it does not cover read
/// as zero. Returns the struct and the caller's size.
pub fn read_struct_grown<T: FromBytes + Default + AsBytes>(
    arg: usize,
    min: usize,
) -> Result<(T, usize)> {
    let size: u32 = UserSlice::new(arg, size_of::<u32>()).reader().read()?;
    let size = size as usize;
    if size < min {
        return Err(EINVAL);
    }
    if size >= size_of::<T>() {
        check_size::<T>(arg, size)?;
        return Ok((UserSlice::new(arg, size_of::<T>()).reader().read()?, size));
    }
    let mut value = T::default();
    // SAFETY: `T: AsBytes + FromBytes`: its bytes are plain data, any pattern is valid, and
    // `size < size_of::<T>()` bytes of it are overwritten.
    let bytes = unsafe { core::slice::from_raw_parts_mut((&raw mut value).cast::<u8>(), size) };
    UserSlice::new(arg, size).reader().read_slice(bytes)?;
    Ok((value, size))
}

/// Copies the first `size` bytes (a caller's smaller size) of an ioctl struct back out, or
/// the bytes the kernel knows if `size` is larger.
pub fn write_struct_prefix<T: AsBytes>(arg: usize, value: &T, size: usize) -> Result {
    let len = size.min(size_of::<T>());
    // SAFETY: `T: AsBytes`: every byte of `value` is initialised; `len <= size_of::<T>()`.
    let bytes = unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), len) };
    UserSlice::new(arg, len).writer().write_slice(bytes)
}

/// Copies an ioctl argument struct back out (the bytes the kernel knows).
pub fn write_struct<T: AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(arg, size_of::<T>()).writer().write(value)
}

/// An array of `count` records of `record_size` bytes at a user address.
#[derive(Clone, Copy)]
pub struct RecordArray {
    ptr: usize,
    record_size: usize,
    count: usize,
}

impl RecordArray {
    /// Describes the array, checking that its byte length does not overflow (`EFAULT`) and
    /// that `record_size` covers `T` (`EINVAL`) and is at most a page (`E2BIG`).
    pub fn new<T>(ptr: u64, record_size: u32, count: usize) -> Result<Self> {
        let record_size = record_size as usize;
        if record_size < size_of::<T>() {
            return Err(EINVAL);
        }
        if record_size > MAX_STRUCT_SIZE {
            return Err(E2BIG);
        }
        let ptr = usize::try_from(ptr).map_err(|_| EFAULT)?;
        let bytes = record_size.checked_mul(count).ok_or(EFAULT)?;
        ptr.checked_add(bytes).ok_or(EFAULT)?;
        Ok(Self {
            ptr,
            record_size,
            count,
        })
    }

    /// As [`RecordArray::new`] for a record that grew after API version 1: a `record_size`
    /// of at least `min` (the first version's size) is accepted; [`RecordArray::read_grown`]
    /// reads the fields it does not cover as zero.
    pub fn new_grown<T>(ptr: u64, record_size: u32, count: usize, min: usize) -> Result<Self> {
        let size = record_size as usize;
        if size < min {
            return Err(EINVAL);
        }
        if size >= size_of::<T>() {
            return Self::new::<T>(ptr, record_size, count);
        }
        let ptr = usize::try_from(ptr).map_err(|_| EFAULT)?;
        let bytes = size.checked_mul(count).ok_or(EFAULT)?;
        ptr.checked_add(bytes).ok_or(EFAULT)?;
        Ok(Self {
            ptr,
            record_size: size,
            count,
        })
    }

    /// Reads record `i` of an array made by [`RecordArray::new_grown`].
    pub fn read_grown<T: FromBytes + AsBytes + Default>(&self, i: usize) -> Result<T> {
        if self.record_size >= size_of::<T>() {
            return self.read(i);
        }
        let mut value = T::default();
        // SAFETY: `T: AsBytes + FromBytes`: its bytes are plain data, any pattern is valid,
        // and `record_size < size_of::<T>()` bytes of it are overwritten.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut((&raw mut value).cast::<u8>(), self.record_size)
        };
        UserSlice::new(self.at(i), self.record_size)
            .reader()
            .read_slice(bytes)?;
        Ok(value)
    }

    fn at(&self, i: usize) -> usize {
        self.ptr + i * self.record_size
    }

    /// Reads record `i` (its tail beyond `T` must be zero).
    pub fn read<T: FromBytes>(&self, i: usize) -> Result<T> {
        check_size::<T>(self.at(i), self.record_size)?;
        UserSlice::new(self.at(i), size_of::<T>()).reader().read()
    }

    /// Writes record `i`: `T`'s bytes, then zeros up to the record size, so that fields the
    /// kernel does not know read as zero (only the bytes it covers for a shorter record of
    /// [`RecordArray::new_grown`]).
    pub fn write<T: AsBytes>(&self, i: usize, value: &T) -> Result {
        if self.record_size < size_of::<T>() {
            // A record that grew, as an older caller knows it (`new_grown`): its prefix.
            return self.write_prefix(i, value);
        }
        let mut writer = UserSlice::new(self.at(i), self.record_size).writer();
        writer.write(value)?;
        zero_fill(&mut writer)
    }

    /// Writes back the bytes of record `i` that both the caller and the kernel know, from
    /// `value` (output fields of an in/out record, leaving the caller's tail alone).
    pub fn write_prefix<T: AsBytes>(&self, i: usize, value: &T) -> Result {
        let len = self.record_size.min(size_of::<T>());
        // SAFETY: `T: AsBytes`: every byte of `value` is initialised; `len <= size_of::<T>()`.
        let bytes = unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), len) };
        UserSlice::new(self.at(i), len).writer().write_slice(bytes)
    }

    /// Number of records.
    pub fn count(&self) -> usize {
        self.count
    }
}

fn zero_fill(writer: &mut UserSliceWriter) -> Result {
    let zeros = [0u8; 64];
    while !writer.is_empty() {
        let n = writer.len().min(zeros.len());
        writer.write_slice(&zeros[..n])?;
    }
    Ok(())
}

/// Copies `len` bytes of user memory at `ptr` (e.g. a variable's initial value).
pub fn reader(ptr: u64, len: usize) -> Result<UserSliceReader> {
    let ptr = usize::try_from(ptr).map_err(|_| EFAULT)?;
    ptr.checked_add(len).ok_or(EFAULT)?;
    Ok(UserSlice::new(ptr, len).reader())
}

/// Checks that `len` bytes of user memory at `ptr` form an address range that does not
/// overflow (`EFAULT`) and returns the address, for copies through raw pointers.
pub fn user_range(ptr: u64, len: usize) -> Result<usize> {
    let ptr = usize::try_from(ptr).map_err(|_| EFAULT)?;
    ptr.checked_add(len).ok_or(EFAULT)?;
    Ok(ptr)
}

/// A writer for `len` bytes of user memory at `ptr`.
pub fn writer(ptr: u64, len: usize) -> Result<UserSliceWriter> {
    let ptr = usize::try_from(ptr).map_err(|_| EFAULT)?;
    ptr.checked_add(len).ok_or(EFAULT)?;
    Ok(UserSlice::new(ptr, len).writer())
}

/// Reads an array of `count` `T`s (a page map, extents) with one user copy.
pub fn read_array<T: FromBytes>(ptr: u64, count: usize) -> Result<KVVec<T>> {
    let bytes = count.checked_mul(size_of::<T>()).ok_or(EFAULT)?;
    let mut reader = reader(ptr, bytes)?;
    let mut out = KVVec::<T>::with_capacity(count, GFP_ACCOUNT_MAYFAIL)?;
    let spare = out.spare_capacity_mut();
    // SAFETY: `spare` is `count` (or more) uninitialised `T`s; viewing their first `bytes`
    // bytes as uninitialised bytes is sound (same memory, alignment 1).
    let raw = unsafe {
        core::slice::from_raw_parts_mut(
            spare.as_mut_ptr().cast::<core::mem::MaybeUninit<u8>>(),
            bytes,
        )
    };
    reader.read_raw(raw)?;
    // SAFETY: `read_raw` succeeded, so the first `count` elements are initialised, and
    // `T: FromBytes` makes any bit pattern a valid `T`.
    unsafe { out.set_len(count) };
    Ok(out)
}

/// A validated, NUL-terminated name or label stored in `N` bytes, zero-padded after its
/// end, so that equal names compare equal as arrays.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name<const N: usize>([u8; N]);

/// A segment name: 1..63 bytes of `[A-Za-z0-9._-]`.
pub type SegName = Name<{ DSU_SEGMENT_NAME_MAX as usize }>;
/// A variable name: 1..127 printable ASCII bytes.
pub type VarName = Name<{ DSU_VARIABLE_NAME_MAX as usize }>;
/// A version label: 1..31 printable ASCII bytes (or empty where "not bound").
pub type Label = Name<{ DSU_LABEL_MAX as usize }>;

impl<const N: usize> Name<N> {
    /// The empty name (only used for "no label").
    pub const EMPTY: Self = Self([0; N]);

    /// Validates a NUL-terminated C array: `EINVAL` if empty, unterminated or containing a
    /// byte that `allowed` rejects.
    pub fn parse(raw: &[core::ffi::c_char; N], allowed: fn(u8) -> bool) -> Result<Self> {
        let mut out = [0u8; N];
        for (i, c) in raw.iter().enumerate() {
            let b = *c as u8;
            if b == 0 {
                return if i == 0 { Err(EINVAL) } else { Ok(Self(out)) };
            }
            if !allowed(b) {
                return Err(EINVAL);
            }
            out[i] = b;
        }
        Err(EINVAL)
    }

    /// Copies the name into a C array of the same size (NUL-padded).
    pub fn to_c(&self) -> [core::ffi::c_char; N] {
        self.0.map(|b| b as core::ffi::c_char)
    }

    /// Whether the name is empty.
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

/// Bytes allowed in segment names.
pub fn segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

/// Bytes allowed in variable names and labels: printable ASCII.
pub fn printable_char(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

/// Parses a segment name.
pub fn segment_name(raw: &[core::ffi::c_char; DSU_SEGMENT_NAME_MAX as usize]) -> Result<SegName> {
    SegName::parse(raw, segment_char)
}

/// Parses a variable name.
pub fn variable_name(raw: &[core::ffi::c_char; DSU_VARIABLE_NAME_MAX as usize]) -> Result<VarName> {
    VarName::parse(raw, printable_char)
}

/// Parses a version label.
pub fn label(raw: &[core::ffi::c_char; DSU_LABEL_MAX as usize]) -> Result<Label> {
    Label::parse(raw, printable_char)
}
