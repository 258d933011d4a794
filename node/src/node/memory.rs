//! The process's allocator, sized for a node on a small host (glibc only;
//! elsewhere these do nothing).
//!
//! glibc gives every thread that allocates its own arena (up to 8 per
//! core) and memory freed in one arena is not reused by another: a
//! follower catching up at K = 6,500 decodes proposals on the runtime's
//! threads and drops them on others, and ended at 70-100 MB resident with
//! the default against 38 MB with one arena (docs/BENCHMARKS.md, "Resident
//! memory"). The node's threads allocate little in their hot loops
//! (hashing allocates nothing), so one arena costs no measurable speed.

/// One malloc arena for the whole process. Call before any thread starts
/// (the first thing `montana start` does); `MALLOC_ARENA_MAX` set by the
/// operator is overridden.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before
    // other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives the memory freed since to the system (after a catch-up, whose
/// batches and fetched proposals are gone once it ends).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the heap.
    unsafe {
        libc::malloc_trim(0);
    }
}
