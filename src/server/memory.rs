//! Memory given back after a large review. mimalloc keeps the pages a
//! thread freed in that thread's heap for its next allocations. Large
//! reviews run on tokio's blocking threads, and the next one may run on
//! another thread, which takes fresh pages: each blocking thread would
//! keep the peak of the largest review it ever ran resident. Collecting
//! after each large review returns those pages to the system, so the
//! process's peak is the reviews running at once, not the blocking threads
//! that ever ran one (tests/memory.rs holds the manifest's limit to it).

// The binary's allocator (src/main.rs); linked here for `mi_collect`.
extern crate mimalloc;

/// Reviews of bodies at least this large are followed by a collection: a
/// collection costs about a millisecond, nothing against judging such a
/// body, and smaller reviews leave too little behind to matter.
pub const COLLECT_AFTER_BYTES: usize = 256 * 1024;

unsafe extern "C" {
    /// mimalloc's: frees what it can and, when `force`, returns unused
    /// pages to the system.
    fn mi_collect(force: bool);
}

/// Called on the thread that ran the review, after its memory is freed.
pub fn after_review(body_bytes: usize) {
    if body_bytes >= COLLECT_AFTER_BYTES {
        // SAFETY: mi_collect takes no pointers and works on mimalloc's own
        // state; in a process whose allocator is not mimalloc it finds
        // nothing to free.
        unsafe { mi_collect(true) }
    }
}
