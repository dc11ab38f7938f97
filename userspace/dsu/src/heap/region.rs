/// The memory a heap allocator manages: [base, base + reserve) is reserved at the same
/// address in every process, [base, base + size()) is backed. Implementors guarantee that.
pub unsafe trait HeapRegion: Send + Sync {
    fn base(&self) -> *mut u8;
    fn reserve(&self) -> usize;
    /// Bytes backed now; another process may have grown it since: re-read, never cache.
    fn size(&self) -> usize;
    /// Grows so that size() >= min_size; returns the new size. Past the limits: Err.
    fn grow(&self, min_size: usize) -> crate::Result<usize>;
    /// Returns the pages of [offset, offset+len) (page-aligned) to the system; they read as 0 after.
    fn discard(&self, offset: usize, len: usize) -> crate::Result<()>;
}
