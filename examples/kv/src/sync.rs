//! The locks of the keyspace: [`dsu::sync::Mutex`], process-shared and robust, so that the
//! versions of the server running side by side during an update exclude each other, and a
//! version killed while holding a stripe leaves it repairable rather than locked forever.

pub use dsu::sync::{Mutex, MutexGuard};

/// Locks `m`; when the previous holder died with the lock, runs `repair` on the data
/// before handing out the guard (and says so on stderr). [`Mutex::lock`] itself spins
/// briefly before it sleeps on the shared futex, which suits stripes held for a
/// microsecond or two.
///
/// ```
/// static M: dsu_kv::sync::Mutex<u32> = dsu_kv::sync::Mutex::new(1);
/// let g = dsu_kv::sync::lock_repair(&M, |v| { *v = 0; true });
/// assert_eq!(*g, 1, "not repaired: nobody died");
/// ```
pub fn lock_repair<T>(
    m: &'static Mutex<T>,
    repair: impl FnOnce(&mut T) -> bool,
) -> MutexGuard<'static, T> {
    match m.lock() {
        Ok(g) => g,
        Err(died) => {
            let tid = died.dead_owner();
            let mut g = died.into_inner();
            let changed = repair(&mut g);
            eprintln!(
                "dsu-kv: thread {tid} died holding a stripe lock; stripe repaired (changed: {changed})"
            );
            g
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_contend_on_one_lock() {
        let m: &'static Mutex<u64> = Box::leak(Box::new(Mutex::new(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *lock_repair(m, |_| false) += 1;
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*lock_repair(m, |_| false), 40_000);
    }
}
