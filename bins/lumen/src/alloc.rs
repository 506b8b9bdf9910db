//! The process allocator, and the two things it must be told so that memory follows the load
//! down after a burst (issue 24). This is the only module of the workspace that holds unsafe
//! code (`tests/it/architecture.rs` checks): two calls into C with no pointers and no
//! preconditions.
//!
//! mimalloc is the allocator: a gateway allocates and frees many small, short-lived buffers
//! per request across threads, which glibc's malloc handles with locks and consolidation
//! (about a tenth of Lumen's CPU in profiles); mimalloc's thread-local free lists are several
//! times cheaper. Two of its habits cost memory here:
//!
//! - It asks the kernel for transparent huge pages on its arenas (`MADV_HUGEPAGE`), so a
//!   2 MiB page is resident where a few KiB are used: 9 MB more at idle and 8–12 KB more per
//!   open stream in `lumen-bench burst`. [`init`] turns THP off for the process
//!   (`PR_SET_THP_DISABLE`) before the runtime starts; a gateway's heap is small, and the TLB
//!   misses huge pages save are not where its time goes.
//! - Memory a thread frees goes back to the thread that allocated it, and that thread's heap
//!   gives pages back to the OS only while it allocates. A tokio worker that goes idle after
//!   a burst keeps the burst's pages for good: RSS stayed at 6–8× idle 5 s after 3,000
//!   streams, level from one burst to the next (so reused, not leaked). [`on_park`] collects
//!   the worker's heap when it runs out of work, at most once per [`COLLECT_EVERY`], so a
//!   busy worker pays nothing and an idle one returns what it no longer uses.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::time::Duration;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often a worker that keeps going idle collects its heap. Parks come thousands of times
/// a second under load; one collect a few times a second is noise (tens of microseconds).
const COLLECT_EVERY: Duration = Duration::from_millis(250);

unsafe extern "C" {
    /// mimalloc: frees the calling thread's empty pages and returns them to the OS (`force`
    /// also visits full pages and purges the arenas at once). Safe to call at any time from
    /// any thread that uses the allocator.
    fn mi_collect(force: bool);
}

/// Process-wide setup, before any thread is started.
pub fn init() {
    // SAFETY: prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) takes no pointers; it sets a flag on the
    // process's memory map. A failure (an old kernel) leaves THP as it was, which is only
    // more memory.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

thread_local! {
    static LAST_COLLECT: Cell<Option<tokio::time::Instant>> = const { Cell::new(None) };
}

/// Called by each runtime worker when it runs out of work (`on_thread_park`).
pub fn on_park() {
    let now = tokio::time::Instant::now();
    let due = LAST_COLLECT.with(|last| match last.get() {
        Some(t) if now.saturating_duration_since(t) < COLLECT_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        // SAFETY: no arguments but a flag; mimalloc allows it from any of its threads.
        unsafe { mi_collect(true) };
    }
}
