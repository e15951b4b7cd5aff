//! The async runtime the switch runs on, chosen by its thread count.

/// Builds the runtime for `threads` threads (timers and I/O enabled): tokio's current-thread
/// runtime for 1, so that no wake-up crosses threads (the switch is mostly idle between
/// requests, and a wake-up that crosses threads costs more than the request); otherwise a
/// multi-threaded runtime with `threads` workers. 0 is taken as 1.
pub fn runtime(threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(usize::from(threads));
        builder
    };
    builder.enable_all().build()
}
