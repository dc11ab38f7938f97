// SPDX-License-Identifier: GPL-2.0-only

//! dsu: shared data segments for multi-version dynamic software update.
//!
//! Global variables are migrated between program versions by overlaying virtual memory:
//! each version maps the physical pages of a named *segment* over its own global section,
//! so that a common global is the same memory in every version. See `docs/DESIGN.md`.
//!
//! The module registers `/dev/dsu` as a misc device (major 10, dynamic minor, mode 0666;
//! access control is per segment), mounts the private tmpfs that holds segment pages
//! (huge pages off) and owns the segment registry. Every open file pins the module (`fops.owner`), so unloading is refused
//! while any fd or mapping lives; unloading drops the registry and with it every segment.

pub mod accounting;
pub mod device;
pub mod directory;
pub mod handle;
pub mod heap;
pub mod kernel_ext;
pub mod limits;
pub mod lock_owner;
pub mod mapping;
pub mod registry;
pub mod restore;
pub mod segment;
pub mod snapshot;
pub mod uapi;
pub mod version;

use handle::Handle;
use kernel::{c_str, prelude::*};
use kernel_ext::{
    anon_file::DeviceMappings, miscdevice::MiscDeviceRegistration, shmem::ShmemMount,
};
use registry::Registry;

module! {
    type: DsuModule,
    name: "dsu",
    author: "dsu developers",
    description: "Shared data segments for multi-version dynamic software update",
    license: "GPL",
}

// Fields drop in order: the device (and with it the registry and every segment) before
// the mount their files live on.
struct DsuModule {
    _device: MiscDeviceRegistration<Handle>,
    _mappings: DeviceMappings,
    _shmem: ShmemMount,
}

impl kernel::Module for DsuModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let shmem = ShmemMount::new()?;
        let mappings = DeviceMappings::new()?;
        snapshot::SNAPSHOT_FILE.init(module);
        let accounting = accounting::Accounting::new()?;
        let registry = KBox::pin_init(Registry::new(accounting), GFP_KERNEL)?;
        let device = MiscDeviceRegistration::register(c_str!("dsu"), module, registry)?;
        pr_info!("/dev/dsu ready (API version {})\n", uapi::DSU_API_VERSION);
        Ok(Self {
            _device: device,
            _mappings: mappings,
            _shmem: shmem,
        })
    }
}
