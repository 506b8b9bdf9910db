//! The pool's reaper task: while any connection is idle it closes those past the idle timeout
//! and those the engine has closed, so no request has to arrive for that to happen.

use std::sync::atomic::Ordering;
use std::sync::{PoisonError, Weak};

use tokio::time::Instant;

use super::Pool;

/// The reaper's hold on its pool: weak, so the pool's owner alone decides its lifetime. While
/// armed, dropping it (the task ends, or its runtime shuts down) lets the pool start another.
pub(super) struct Reaper {
    pub(super) pool: Weak<Pool>,
    pub(super) armed: bool,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade().filter(|_| self.armed) {
            pool.reaping.store(false, Ordering::Release);
        }
    }
}

/// The reaper task: sleeps until the next idle timeout or sweep and closes what is due, until
/// nothing is idle or the pool is gone. A connection checked in just as it stops is not
/// missed: `reaping` is cleared before the last look.
pub(super) async fn reap(mut reaper: Reaper) {
    loop {
        let next = {
            let Some(pool) = reaper.pool.upgrade() else {
                return;
            };
            match pool.sweep(Instant::now()) {
                Some(next) => next,
                None => {
                    reaper.armed = false;
                    pool.reaping.store(false, Ordering::Release);
                    let idle = !pool
                        .idle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_empty();
                    // Something came back meanwhile and no other reaper took it: go on.
                    if idle && !pool.reaping.swap(true, Ordering::AcqRel) {
                        reaper.armed = true;
                        continue;
                    }
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}
