//! The engine's limits. Every one is explicit, configurable and answered with a 4xx and a
//! one-line text when exceeded (protocol.md part A.9).

use std::time::Duration;

/// Limits and sizes of the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Longest queue name or session token, in bytes.
    pub name_bytes_max: usize,
    /// Most queues that may exist at once.
    pub queues_max: usize,
    /// Most messages one queue may hold.
    pub queue_messages_max: usize,
    /// Most payload bytes one queue may hold, so that one flooded queue refuses its own
    /// Sends and no other queue's (`stored_bytes_max` stays the last guard over all of them).
    pub queue_bytes_max: usize,
    /// Most payload bytes stored in all queues together.
    pub stored_bytes_max: usize,
    /// Longest Transfer or Trace wait a client may ask for.
    pub wait_timeout_max: Duration,
    /// Most distinct tokens one connection may log in with.
    pub logins_per_connection_max: usize,
    /// A Transfer reply stops adding messages once it holds this many payload bytes (it
    /// always holds at least one message; the client continues from `next`).
    pub transfer_reply_bytes_max: usize,
    /// Most events the trace keeps.
    pub trace_entries_max: usize,
    /// Most bytes the trace keeps (payloads counted in full).
    pub trace_bytes_max: usize,
    /// Strings in trace payloads of at least this many bytes are cut (the reference's
    /// `--trace-truncate`).
    pub trace_truncate_bytes: usize,
    /// When the reply to an Ack of a persistent queue's message may leave (with a journal).
    pub ack_sync: AckSync,
}

/// When an Ack's reply may leave, relative to the sync that makes the ack durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AckSync {
    /// After the sync: a message whose Ack was answered never comes back after a crash.
    #[default]
    Strict,
    /// At once: the ack is journalled with the next group commit. A crash before that sync
    /// brings the message back (delivered again, at-least-once); nothing un-acked is lost.
    Lazy,
}

impl std::str::FromStr for AckSync {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "strict" => Ok(AckSync::Strict),
            "lazy" => Ok(AckSync::Lazy),
            _ => Err(format!("expected strict or lazy, not {text:?}")),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name_bytes_max: 1024,
            queues_max: 100_000,
            queue_messages_max: 4_000_000,
            queue_bytes_max: default_queue_bytes_max(4 << 30),
            stored_bytes_max: 4 << 30,
            wait_timeout_max: Duration::from_secs(3600),
            logins_per_connection_max: 64,
            transfer_reply_bytes_max: 64 << 20,
            trace_entries_max: 1024,
            trace_bytes_max: 8 << 20,
            trace_truncate_bytes: 256,
            ack_sync: AckSync::Strict,
        }
    }
}

/// The default per-queue byte limit for a switch-wide limit of `stored_bytes_max`: a
/// quarter of it. One flooded queue then leaves three quarters of the store to every other
/// queue (it takes four flooded queues to fill the switch), while a queue of the real
/// toolstack, which holds a few RPC requests of at most a few MiB at a time, stays orders of
/// magnitude below it (1 GiB with the default 4 GiB store).
pub fn default_queue_bytes_max(stored_bytes_max: usize) -> usize {
    stored_bytes_max / 4
}
