//! The shared part of `heap_migrate_v1` and `heap_migrate_v2` (VM suite,
//! `userspace::heap_migrate_map`): v1 keeps `heap_migrate::MAP`, a
//! `heap::Mutex<heap::HashMap<u64, V1>>`, in the shared heap; v2 declares it as
//! `heap::HashMap<u64, V2>` and migrates it in place (`migrate(from = ..., with_ref = ...)`)
//! at attach, while v1 keeps inserting under the lock.

/// v1's value: what `key` maps to is `V1::of(key)`.
#[derive(dsu::Shared, Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct V1 {
    pub hits: u64,
    pub port: u32,
    pub flags: u32,
}

impl V1 {
    pub fn of(key: u64) -> V1 {
        V1 {
            hits: key.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            port: (key % 65_521) as u32,
            flags: (key >> 3) as u32,
        }
    }
}

/// v2's value: v1's fields widened, and a new one.
#[derive(dsu::Shared, Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct V2 {
    pub hits: u64,
    pub port: u64,
    pub flags: u64,
    pub migrated: u64,
}

impl V2 {
    /// The conversion v2's transform applies.
    pub fn from_v1(v: &V1) -> V2 {
        V2 {
            hits: v.hits,
            port: v.port.into(),
            flags: v.flags.into(),
            migrated: 1,
        }
    }
}

pub type MapV1 = dsu::heap::Mutex<dsu::heap::HashMap<u64, V1>>;
pub type MapV2 = dsu::heap::Mutex<dsu::heap::HashMap<u64, V2>>;

pub fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
