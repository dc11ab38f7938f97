// SPDX-License-Identifier: GPL-2.0-only

//! Lock owners: DSU_IOC_LOCK_TOKEN issues each process a *lock token*, and
//! DSU_IOC_LOCK_OWNER tells a waiter whether the process a token names can still release
//! a lock in the caller's shared memory.
//!
//! A robust lock's word holds its holder's thread id, and the kernel marks it
//! `FUTEX_OWNER_DIED` when that thread dies. A copy of the word is never marked: a
//! snapshot restored as a new segment while the original runs, or restored after a module
//! reload or a reboot, holds the ids of threads that hold nothing there. dsu locks also
//! record their holder's token, so a waiter that has waited a while asks here:
//!
//! - a token this module instance issued names one address space (one process between
//!   fork or exec and exit): the holder can release the lock only while that address
//!   space is in use and maps the lock's memory (the same file, and for `/dev/dsu`
//!   mappings the same segment's window of the module's address space);
//! - a token an earlier instance issued names a process that mapped no segment of this
//!   one: every segment of an instance is gone before it unloads;
//! - a token no instance issued (bit 63 clear: a process that could not get one) is
//!   unknown, and the waiter goes on waiting, as it would without this module.
//!
//! Tokens are `DSU_LOCK_TOKEN_ISSUED | instance << 32 | tag`: `instance` is 31 random bits
//! drawn at module load, `tag` 32 random bits per issue (never one a live record has). A
//! token is seen only by those who can read the memory of a lock its process held, so a
//! random tag keeps others from probing which processes map a file they can map too.
//! A record holds its address space's `mm_count` (not the mm alive), so the pointer is not
//! reused while the record lives; records of exited processes are pruned at every issue.
//!
//! Lock order: the table's mutex is a leaf; `mmap_lock`s are taken with it released.

use crate::{
    kernel_ext::{
        alloc::GFP_ACCOUNT_MAYFAIL,
        anon_file::DeviceMappings,
        mm_ref::{MmRef, SharedRegion},
        random::random_u32,
    },
    mapping,
    uapi::{
        self, dsu_lock_owner, dsu_lock_token, DSU_LOCK_OWNER_GONE, DSU_LOCK_OWNER_LIVE,
        DSU_LOCK_OWNER_UNKNOWN, DSU_LOCK_TOKENS_MAX, DSU_LOCK_TOKEN_ISSUED,
    },
};
use kernel::{
    error::code::*,
    new_mutex,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::Mutex,
};

/// Bit 63 of every token the module issues (bindgen makes the macro an `i64`).
const ISSUED: u64 = DSU_LOCK_TOKEN_ISSUED as u64;

struct Table {
    /// Every issued token's address space, by token.
    records: RBTree<u64, MmRef>,
}

/// The lock token table of this module instance. Every call may race with every other:
/// each takes the table's mutex for its lookup or insert only.
#[pin_data]
pub struct LockOwners {
    /// Bits 32..63 of every token this instance issues.
    instance: u64,
    #[pin]
    table: Mutex<Table>,
}

impl LockOwners {
    /// An empty table with a fresh random instance number.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            instance: ISSUED | (u64::from(random_u32() & 0x7fff_ffff) << 32),
            table <- new_mutex!(
                Table {
                    records: RBTree::new(),
                },
                "dsu_lock_owners"
            ),
        })
    }

    /// DSU_IOC_LOCK_TOKEN: the caller's token, issued on its first call.
    pub fn issue(&self, arg: usize) -> Result<isize> {
        let mut req: dsu_lock_token = uapi::read_struct(arg)?;
        if req.flags != 0 {
            return Err(EINVAL);
        }
        let mm = MmRef::current().ok_or(EINVAL)?;
        // Allocated before the lock: a node charged to the caller's memory cgroup.
        let node = RBTreeNodeReservation::new(GFP_ACCOUNT_MAYFAIL)?;
        let token = {
            let mut t = self.table.lock();
            if let Some(token) = t.find(&mm) {
                token
            } else {
                t.prune()?;
                if t.records.iter().count() >= DSU_LOCK_TOKENS_MAX as usize {
                    return Err(EAGAIN);
                }
                let token = t.next_free(self.instance);
                t.records.insert(node.into_node(token, mm));
                token
            }
        };
        req.token = token;
        uapi::write_struct(arg, &req)?;
        Ok(0)
    }

    /// DSU_IOC_LOCK_OWNER: whether the process a token names can release a lock at an
    /// address of the caller's.
    pub fn query(&self, arg: usize) -> Result<isize> {
        let mut req: dsu_lock_owner = uapi::read_struct(arg)?;
        if req.flags != 0 || req.__pad != 0 {
            return Err(EINVAL);
        }
        // The address is checked first, whatever the token: EFAULT says "not shared memory".
        let region = SharedRegion::of_current(req.addr)?;
        req.state = self.state(req.token, &region)?;
        uapi::write_struct(arg, &req)?;
        Ok(0)
    }

    fn state(&self, token: u64, region: &SharedRegion) -> Result<u32> {
        if token & ISSUED == 0 {
            return Ok(DSU_LOCK_OWNER_UNKNOWN);
        }
        if token & !0xffff_ffff != self.instance {
            return Ok(DSU_LOCK_OWNER_GONE);
        }
        let Some(mm) = self.table.lock().records.get(&token).map(MmRef::clone_ref) else {
            // Pruned: its process is gone.
            return Ok(DSU_LOCK_OWNER_GONE);
        };
        // The module's address space holds every segment's variables, each segment in a
        // window of its own: the holder must map the same segment. Any other file (a heap's
        // shmem file, a user's file) is one object: any page of it will do.
        let (first, pages) = if DeviceMappings::is_module_mapping(region.mapping_addr()) {
            mapping::window_of(region.pgoff)
        } else {
            (0, u64::MAX)
        };
        match mm.maps(region, first, pages) {
            Ok(true) => Ok(DSU_LOCK_OWNER_LIVE),
            Ok(false) => Ok(DSU_LOCK_OWNER_GONE),
            Err(e) if e == ESRCH => Ok(DSU_LOCK_OWNER_GONE),
            Err(e) => Err(e),
        }
    }
}

impl Table {
    /// The token already issued to `mm`'s process, if any.
    fn find(&self, mm: &MmRef) -> Option<u64> {
        self.records
            .iter()
            .find(|(_, r)| r.same(mm) && r.alive())
            .map(|(token, _)| *token)
    }

    /// Drops the records of address spaces no process uses any more.
    fn prune(&mut self) -> Result {
        let mut dead = KVec::new();
        for (token, r) in self.records.iter() {
            if !r.alive() {
                dead.push(*token, GFP_KERNEL)?;
            }
        }
        for token in dead {
            self.records.remove(&token);
        }
        Ok(())
    }

    /// A token not in the table, with a random tag (never 0).
    fn next_free(&mut self, instance: u64) -> u64 {
        loop {
            let token = instance | u64::from(random_u32().max(1));
            if self.records.get(&token).is_none() {
                return token;
            }
        }
    }
}
