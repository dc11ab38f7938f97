//! v3's migration of the keyspace: lists from v1/v2's two stacks of `Vec<u8>`
//! ([`List`](crate::keyspace::List)) to a ring of `Box<[u8]>`
//! ([`RingList`](crate::keyspace::RingList)), in place in the shared heap, with the
//! running older version handing its stripes over (see [`crate::forward`]).
//!
//! `kv_v3` declares `kv::KEYSPACE` with `migrate(from = HeapKeyspaceV1, with_ref =
//! lists_to_rings)`. dsu calls [`lists_to_rings`] in v3's attach with the old keyspace
//! (mapped read-write through a view), while v2 serves:
//!
//! 1. It locks every old stripe, in index order (the lock order of v2's multi-stripe
//!    commands), and holds them all: v2's requests wait.
//! 2. It builds v3's stripes out of the old ones' blocks: keys, strings, sets, hashes and
//!    sorted sets are the same heap blocks (nothing copied), each list gets a new ring
//!    array whose elements are the old elements' blocks. Only the index structures (the
//!    stripes' tables, the rings) are new.
//! 3. It marks every old stripe with v3's forwarding port and unlocks. v2 now forwards
//!    every request that needs a stripe to v3, which answers once ready.
//! 4. After `ready`, before serving anything, v3 marks the old stripes committed
//!    ([`commit`]). Until then the old stripes are intact and v2 takes them back if v3
//!    dies ([`crate::forward::take_back`]); after, v3 owns the blocks.
//!
//! The old stripes' tables and lists' arrays stay allocated (the old version may read
//! them until it exits, and after that nothing frees a global's heap data): about the
//! size of the index, not of the data.

use crate::keyspace::{Db, Handover, HeapKeyspaceV1, HeapKeyspaceV3, Keyspace, STRIPES};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};

/// The port of v3's forwarding listener on 127.0.0.1, set before its attach: what the old
/// stripes are marked with.
pub static FORWARD_PORT: AtomicU16 = AtomicU16::new(0);

/// The old keyspace this process took over, for [`commit`].
static TAKEN: OnceLock<&'static HeapKeyspaceV1> = OnceLock::new();

/// The transform of `kv::KEYSPACE` from v1/v2's type to v3's (`with_ref`): see the module
/// docs. Exits the process (before v3 is ready, so the old version keeps serving with its
/// stripes untouched) if the heap has no room for the new index.
pub fn lists_to_rings(old: &'static HeapKeyspaceV1) -> HeapKeyspaceV3 {
    let port = FORWARD_PORT.load(Relaxed);
    assert_ne!(port, 0, "kv_v3 binds its forwarding port before attaching");
    let mut guards: Vec<_> = (0..STRIPES).map(|i| old.lock_any(i)).collect();
    let mut dbs = Vec::with_capacity(STRIPES);
    for g in &guards {
        // SAFETY: the new stripe shares the old one's blocks. From here the old one is
        // only read (by nothing: its stripe is marked moved below, and a version seeing
        // the mark forwards instead) until `commit`, and v3 changes nothing before
        // `commit`; if v3 dies first, its copy is never used and the old one is the truth
        // again (take_back). After `commit` the old copy is never used. So exactly one
        // copy is ever used or dropped.
        match unsafe { Db::alias_lists_as_rings(g) } {
            Ok(db) => dbs.push(db),
            Err(_) => {
                // Forget, never drop: the partial stripes share the old ones' blocks.
                dbs.into_iter().for_each(std::mem::forget);
                drop(guards);
                eprintln!(
                    "kv_v3: no heap memory for the migrated keyspace's index; the running version keeps serving"
                );
                std::process::exit(1);
            }
        }
    }
    for g in &mut guards {
        g.handover = Handover {
            port: u32::from(port),
            committed: 0,
        };
    }
    let _ = TAKEN.set(old);
    drop(guards);
    Keyspace::from_dbs(dbs)
}

/// Marks the old stripes committed: v3 is ready and about to serve, and the old copy is
/// stale for good. Called by the server after `ready`, before it accepts (a no-op when
/// this process migrated nothing).
pub fn commit() {
    if let Some(old) = TAKEN.get() {
        for i in 0..STRIPES {
            old.lock_any(i).handover.committed = 1;
        }
    }
}
