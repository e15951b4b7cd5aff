//! What the driver reports about the engine when asked (`Command::Inspect`): the counts and
//! the busiest queues, for `/metrics` and the console's sampler.
//!
//! It is its own module, below both the driver (which fills it) and the metrics and sampler
//! (which read it), so that none of them has to import another sideways.

use crate::engine::{EngineStats, QueueSummary, Timestamp};
use crate::protocol::TraceEvent;

/// A point-in-time view of the engine for metrics.
pub(crate) struct Inspection {
    pub(crate) now: Timestamp,
    pub(crate) start: Timestamp,
    pub(crate) stats: EngineStats,
    pub(crate) queues: Vec<QueueSummary>,
    /// The trace events asked for (`Command::Inspect`'s `trace_from`), ascending by id, with
    /// payloads as recorded; empty when none were.
    pub(crate) trace: Vec<(i64, TraceEvent)>,
}
