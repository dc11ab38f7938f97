//! The locks of the keyspace: [`dsu::sync::Mutex`], process-shared and robust, so that the
//! versions of the server running side by side during an update exclude each other, and a
//! version killed while holding a stripe leaves it repairable rather than locked forever.

pub use dsu::sync::{Mutex, MutexGuard};

/// Looks this many times for the lock to be free, yielding the CPU in between, before
/// [`Mutex::lock`] sleeps. A stripe is held for a microsecond or two, so a short wait
/// usually suffices and is cheaper than a futex sleep and wake-up, or than `lock`'s polling
/// fallback on a kernel without a futex for `/dev/dsu` pages, whose sleeps last a whole
/// timer tick on a kernel without high-resolution timers.
const TRIES_BEFORE_SLEEP: usize = 64;

/// Locks `m`; when the previous holder died with the lock, runs `repair` on the data
/// before handing out the guard (and says so on stderr).
///
/// ```
/// let m = dsu_kv::sync::Mutex::new(1u32);
/// let g = dsu_kv::sync::lock_repair(&m, |v| { *v = 0; true });
/// assert_eq!(*g, 1, "not repaired: nobody died");
/// ```
pub fn lock_repair<T>(m: &Mutex<T>, repair: impl FnOnce(&mut T) -> bool) -> MutexGuard<'_, T> {
    let mut attempt = None;
    for _ in 0..TRIES_BEFORE_SLEEP {
        // `owner` is one load; `try_lock` on a held lock also checks (through /proc)
        // whether the holder lives, which is too slow to repeat.
        if m.owner().is_none() {
            attempt = m.try_lock();
            if attempt.is_some() {
                break;
            }
        }
        std::thread::yield_now();
    }
    match attempt.unwrap_or_else(|| m.lock()) {
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
    use std::sync::Arc;

    #[test]
    fn threads_contend_on_one_lock() {
        let m = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *lock_repair(&m, |_| false) += 1;
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*lock_repair(&m, |_| false), 40_000);
    }
}
