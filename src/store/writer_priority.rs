//! The journal writer thread's scheduling priority.
//!
//! Every reply to a change waits for the writer: the driver hands it a batch, and the writer
//! thread must then get a CPU to write and sync it. The thread uses little CPU (a write and an
//! `fdatasync` per group commit) but sleeps between batches, and a woken thread can wait a
//! whole time slice of whatever else runs on a busy host before it is scheduled. On the
//! development VM, with the callers' processes keeping both CPUs busy, the strict-ack RPC rate
//! of the real clients' pattern went from about 600 to 2,000 per second once the writer alone
//! ran at nice -15 (docs/performance.md). So the writer asks for a better nice value; a
//! process without the privilege (`CAP_SYS_NICE`, which a dom0's root has) keeps the
//! default, and says so once at debug level.

/// The nice value the journal writer thread asks for by default.
pub const WRITER_NICE_DEFAULT: i32 = -10;

/// Sets the calling thread's nice value to `nice` (Linux keeps nice values per thread); 0
/// leaves it as inherited. Never fails: without the privilege the thread keeps its priority.
pub(crate) fn apply_to_current_thread(nice: i32) {
    if nice == 0 {
        return;
    }
    // `None`: the calling thread itself.
    match rustix::process::setpriority_process(None, nice) {
        Ok(()) => tracing::debug!(nice, "journal writer thread priority set"),
        Err(error) => {
            tracing::debug!(nice, %error, "cannot set the journal writer thread's priority; it keeps the default")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_gets_the_nice_value_it_may_have() {
        let main_before = rustix::process::getpriority_process(None).unwrap();
        std::thread::spawn(|| {
            let before = rustix::process::getpriority_process(None).unwrap();
            // Raising the nice value (lowering the priority) needs no privilege.
            apply_to_current_thread(before + 1);
            assert_eq!(
                rustix::process::getpriority_process(None).unwrap(),
                before + 1
            );
            apply_to_current_thread(0);
            assert_eq!(
                rustix::process::getpriority_process(None).unwrap(),
                before + 1,
                "0 leaves it"
            );
        })
        .join()
        .unwrap();
        assert_eq!(
            rustix::process::getpriority_process(None).unwrap(),
            main_before,
            "only the writer's thread changes, not the others"
        );
    }
}
