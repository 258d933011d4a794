//! Pinning the measuring thread to one core, so an evaluation measurement is
//! not smeared across cores by the scheduler (and sees one core's clocks).
//! Where the OS offers no affinity call, the measurement runs unpinned and
//! says so.

/// Pins the calling thread to the CPU it is running on (which respects any
/// `taskset` mask). Returns whether it is now pinned.
#[cfg(target_os = "linux")]
pub fn pin_current_thread() -> bool {
    // SAFETY: plain libc calls on a zero-initialised cpu_set_t owned here;
    // pid 0 means the calling thread.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 || cpu as usize >= libc::CPU_SETSIZE as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// No affinity call on this OS: the thread stays unpinned.
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinning_a_scratch_thread_works_on_linux() {
        let pinned = std::thread::spawn(super::pin_current_thread)
            .join()
            .unwrap();
        assert_eq!(pinned, cfg!(target_os = "linux"));
    }
}
