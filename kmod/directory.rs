// SPDX-License-Identifier: GPL-2.0-only

//! The variable directory of a segment: which pages hold which global variable.
//!
//! Entries are kept in creation order (a vector, so listing is paged by index) and indexed
//! by `(name, seq)` in a red-black tree, so lookups are `O(log n)` and one name may have
//! several entries (migrated variables with another size or fingerprint). `seq` is an
//! entry's stable number: creation order, like `first_page` (segment pages are appended and
//! never reused), so both are found by binary search in the vector. Entries are removed only
//! by [`Directory::remove_where`] (an aborted candidate's additions, DSU_IOC_GC), which keeps
//! the order.
//!
//! Each entry counts who keeps it: `mappers` (live versions whose map covers any of its
//! pages, counted at BIND and uncounted at the version's end, over the same runs, and views
//! of its pages, counted at their mmap and uncounted at their last VMA's close) and `pins`
//! (handles that RESOLVEd it and have not bound since: see `segment.rs`).
//!
//! The directory has no lock of its own: it lives in the segment's mutex. Inserting is split
//! into a fallible [`Directory::reserve`] and an infallible [`Directory::insert`], so that a
//! RESOLVE batch either adds all of its entries or none.

use crate::kernel_ext::alloc::GFP_ACCOUNT_MAYFAIL;
use crate::uapi::{self, Label, VarName, DSU_VAR_CONFLICT_SIZE, DSU_VAR_CONFLICT_TYPE};
use kernel::{
    error::code::ENOMEM,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
};

/// A variable's type description as its creator gave it to RESOLVE (`dsu_var.type_desc`,
/// the text format of DESIGN.md): at most `DSU_TYPE_DESC_MAX` bytes of printable ASCII and
/// newlines, empty for none. The kernel only checks the bytes; userspace parses them.
pub struct TypeDesc(KVVec<u8>);

impl TypeDesc {
    /// No description.
    pub fn none() -> Self {
        Self(KVVec::new())
    }

    /// Copies `len` (at most `DSU_TYPE_DESC_MAX`: the caller checked) bytes in from `ptr`,
    /// charged to the caller's memcg. `EFAULT` for a bad pointer; `Ok(None)` if a byte is
    /// neither printable ASCII nor a newline. No lock may be held (this faults).
    pub fn copy_in(ptr: u64, len: u32) -> Result<Option<Self>> {
        let len = len as usize;
        if len == 0 {
            return Ok(Some(Self::none()));
        }
        let mut bytes = KVVec::from_elem(0u8, len, GFP_ACCOUNT_MAYFAIL)?;
        uapi::reader(ptr, len)?.read_slice(&mut bytes)?;
        let valid = bytes.iter().all(|&b| b == b'\n' || uapi::printable_char(b));
        Ok(valid.then_some(Self(bytes)))
    }

    /// The description's bytes (empty for none).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// One variable.
pub struct Entry {
    /// Its name.
    pub name: VarName,
    /// Size in bytes.
    pub size: u64,
    /// Alignment its creator asked for (pages satisfy any alignment up to a page).
    pub align: u64,
    /// Type fingerprint.
    pub fingerprint: u64,
    /// First page in the segment.
    pub first_page: u64,
    /// Pages it occupies, from `first_page`.
    pub page_count: u64,
    /// `CLOCK_REALTIME` of its creation.
    pub created_ns: u64,
    /// Id of the version that created it; 0 while its creating handle is not bound.
    pub created_by: u64,
    /// Label of the version that created it; empty while its creating handle is not bound.
    pub created_label: Label,
    /// The handle whose RESOLVE created it (dsu::attach resolves, then binds that handle).
    pub creator_handle: u64,
    /// The type description its creator gave (READ_VAR with `DSU_READ_TYPE_DESC`).
    pub type_desc: TypeDesc,
    /// Stable number in creation order (set by [`Directory::insert`]).
    pub seq: u64,
    /// The uid its pages are charged to (uncharged when it is removed).
    pub charged_uid: u32,
    /// Live versions whose map covers it, and live views of its pages.
    pub mappers: u32,
    /// Handles that resolved it and hold it until they bind or are released.
    pub pins: u32,
    /// The segment generation when a ready version last started to use it (its READY), or
    /// when it was created; DSU_IOC_GC measures its age from here.
    pub last_gen: u64,
    /// Whether a ready version ever mapped it (committed state: never removed on abort).
    pub committed: bool,
    /// Whether its creating handle went before any version using it became ready: removed
    /// as soon as nothing maps or pins it.
    pub orphan: bool,
}

impl Entry {
    /// One past its last segment page.
    pub fn end_page(&self) -> u64 {
        self.first_page + self.page_count
    }
}

/// What a lookup found for `(name, size, fingerprint)`.
pub enum Lookup {
    /// An entry with equal size and fingerprint: the common global.
    Found(usize),
    /// No usable entry: a new one would be added.
    Missing,
    /// The name exists with another size (`DSU_VAR_CONFLICT_SIZE`) or fingerprint
    /// (`DSU_VAR_CONFLICT_TYPE`); the newest such entry's size and fingerprint.
    Conflict {
        /// The conflict status.
        status: u32,
        /// Size in the directory.
        size: u64,
        /// Fingerprint in the directory.
        fingerprint: u64,
    },
}

/// Space reserved for new entries.
pub struct Reservation {
    nodes: kernel::alloc::kvec::IntoIter<
        RBTreeNodeReservation<(VarName, u64), ()>,
        kernel::alloc::allocator::Kmalloc,
    >,
}

/// The directory.
pub struct Directory {
    entries: KVVec<Entry>,
    index: RBTree<(VarName, u64), ()>,
    next_seq: u64,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self {
            entries: KVVec::new(),
            index: RBTree::new(),
            next_seq: 1,
        }
    }

    /// Position of the entry numbered `seq`.
    fn position(&self, seq: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&seq, |e| e.seq).ok()
    }

    /// Position of the entry whose pages start at segment page `first_page`.
    pub fn position_of_page(&self, first_page: u64) -> Option<usize> {
        self.entries
            .binary_search_by_key(&first_page, |e| e.first_page)
            .ok()
    }

    /// Positions of the entries holding any of segment pages `first..first + count`, in
    /// order.
    pub fn overlapping(&self, first: u64, count: u64) -> core::ops::Range<usize> {
        let end = first.saturating_add(count);
        let lo = self.entries.partition_point(|e| e.end_page() <= first);
        let hi = self.entries.partition_point(|e| e.first_page < end);
        lo..hi.max(lo)
    }

    /// Whether live entries hold every one of segment pages `first..first + count` (pages
    /// of removed entries are holes).
    pub fn covers(&self, first: u64, count: u64) -> bool {
        let end = first.saturating_add(count);
        let mut at = first;
        for e in &self.entries[self.overlapping(first, count)] {
            if e.first_page > at {
                return false;
            }
            at = e.end_page();
        }
        at >= end
    }

    /// Entry `i` in creation order, mutably.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Entry> {
        self.entries.get_mut(i)
    }

    /// Entry numbered `seq`, mutably.
    pub fn by_seq_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let i = self.position(seq)?;
        self.entries.get_mut(i)
    }

    /// Removes every entry for which `remove` says so, calling `removed` with each first
    /// (to free its pages). Keeps the others' order; allocates nothing.
    pub fn remove_where(
        &mut self,
        mut remove: impl FnMut(&Entry) -> bool,
        mut removed: impl FnMut(&mut Entry),
    ) -> usize {
        let len = self.entries.len();
        let mut kept = 0;
        for i in 0..len {
            if remove(&self.entries[i]) {
                let e = &mut self.entries[i];
                removed(e);
                self.index.remove(&(e.name, e.seq));
            } else {
                self.entries.swap(kept, i);
                kept += 1;
            }
        }
        let tail = core::ptr::slice_from_raw_parts_mut(
            self.entries.as_mut_slice()[kept..].as_mut_ptr(),
            len - kept,
        );
        // SAFETY: The entries past `kept` are the removed ones, initialised and no longer
        // reachable once the length shrinks: each is dropped exactly once here, and
        // `set_len` only shrinks.
        unsafe {
            self.entries.set_len(kept);
            core::ptr::drop_in_place(tail);
        }
        len - kept
    }

    /// BIND of handle `handle_id` as version `version_id`: entries that handle created
    /// before it was bound now name the version and its label. O(entries), no allocation.
    pub fn adopt(&mut self, handle_id: u64, version_id: u64, label: Label) {
        for e in self.entries.iter_mut() {
            if e.created_by == 0 && e.creator_handle == handle_id {
                e.created_by = version_id;
                e.created_label = label;
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entry `i` in creation order.
    pub fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    /// Looks up `name` with `size` and `fingerprint`. With `migrate`, an entry of the same
    /// name but another size or fingerprint is no conflict (a new entry goes beside it).
    pub fn lookup(&mut self, name: &VarName, size: u64, fingerprint: u64, migrate: bool) -> Lookup {
        let entries = &self.entries;
        let (mut exact, mut newest) = (None, None);
        for_name(&mut self.index, entries, name, |i| {
            newest = Some(i);
            let e = &entries[i];
            if exact.is_none() && e.size == size && e.fingerprint == fingerprint {
                exact = Some(i);
            }
        });
        match (exact, newest) {
            (Some(i), _) => Lookup::Found(i),
            (None, None) => Lookup::Missing,
            (None, Some(_)) if migrate => Lookup::Missing,
            (None, Some(n)) => {
                let e = &entries[n];
                let status = if e.size != size {
                    DSU_VAR_CONFLICT_SIZE
                } else {
                    DSU_VAR_CONFLICT_TYPE
                };
                Lookup::Conflict {
                    status,
                    size: e.size,
                    fingerprint: e.fingerprint,
                }
            }
        }
    }

    /// The newest entry named `name`, with fingerprint `fingerprint` unless `any`.
    pub fn find(&mut self, name: &VarName, fingerprint: u64, any: bool) -> Option<&Entry> {
        let entries = &self.entries;
        let mut best = None;
        for_name(&mut self.index, entries, name, |i| {
            if any || entries[i].fingerprint == fingerprint {
                best = Some(i);
            }
        });
        best.map(|i| &self.entries[i])
    }

    /// Reserves room for `n` more entries (`ENOMEM` on failure; nothing changes).
    pub fn reserve(&mut self, n: usize) -> Result<Reservation> {
        self.entries.reserve(n, GFP_ACCOUNT_MAYFAIL)?;
        let mut nodes = KVec::with_capacity(n, GFP_ACCOUNT_MAYFAIL)?;
        for _ in 0..n {
            nodes.push(
                RBTreeNodeReservation::new(GFP_ACCOUNT_MAYFAIL)?,
                GFP_ACCOUNT_MAYFAIL,
            )?;
        }
        Ok(Reservation {
            nodes: nodes.into_iter(),
        })
    }

    /// Appends `entry` using room from `reservation`, numbering it; returns its position.
    ///
    /// Cannot fail when `reservation` came from [`Directory::reserve`] with room for every
    /// entry inserted; `ENOMEM` (with nothing changed) if it is exhausted.
    pub fn insert(&mut self, mut entry: Entry, reservation: &mut Reservation) -> Result<usize> {
        let i = self.entries.len();
        let node = reservation.nodes.next().ok_or(ENOMEM)?;
        entry.seq = self.next_seq;
        let key = (entry.name, entry.seq);
        // The vector's capacity was reserved, so this does not allocate.
        self.entries.push(entry, GFP_NOWAIT)?;
        self.next_seq += 1;
        self.index.insert(node.into_node(key, ()));
        Ok(i)
    }
}

/// Calls `f` with the position of every entry named `name`, oldest first.
fn for_name(
    index: &mut RBTree<(VarName, u64), ()>,
    entries: &[Entry],
    name: &VarName,
    mut f: impl FnMut(usize),
) {
    let mut cursor = index.cursor_lower_bound(&(*name, 0));
    while let Some(c) = cursor {
        let (key, _) = c.current();
        if key.0 != *name {
            return;
        }
        if let Ok(i) = entries.binary_search_by_key(&key.1, |e| e.seq) {
            f(i);
        }
        cursor = c.move_next();
    }
}
