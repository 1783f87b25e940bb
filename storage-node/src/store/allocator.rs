//! How Silo's heap gives memory back to the system after a burst of uploads (glibc's malloc;
//! other allocators are left as they are).
//!
//! glibc keeps freed memory in its arenas (up to eight per core, one taken by each of the many
//! blocking threads hashing and compressing chunks) and raises its mmap threshold whenever a
//! large block is freed, so that later chunk-sized blocks come from the arenas too: an idle
//! Silo then stays at the peak of its last burst. [`tune`] fixes the threshold (blocks of
//! [`MMAP_THRESHOLD`] and more, the chunks and buffers of uploads and downloads, are mapped
//! and unmapped on their own) and caps the arenas; [`trim`] hands the free memory of every
//! arena back, which the memory budget does whenever its last upload ends.

/// Blocks of this size and more are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: usize = 128 * 1024;
/// The arenas glibc may keep, unless `MALLOC_ARENA_MAX` says otherwise.
const ARENA_MAX: usize = 4;

/// Sets the allocator up; call it first thing in `main`, before any thread starts. glibc's own
/// `MALLOC_MMAP_THRESHOLD_` and `MALLOC_ARENA_MAX`, when set, win.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets parameters of glibc's allocator; it is called before any other
    // thread exists.
    unsafe {
        // glibc takes the variable only as a number; anything else leaves its dynamic threshold.
        let threshold_set =
            std::env::var("MALLOC_MMAP_THRESHOLD_").is_ok_and(|value| value.parse::<usize>().is_ok());
        if !threshold_set {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX as libc::c_int);
        }
    }
}

/// Gives the free memory of every arena back to the system (a few milliseconds).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
