//! The queue switch as a pure, deterministic state machine.
//!
//! Nothing in here reads a clock, touches a socket or a file, spawns a task or draws a random
//! number: time comes in as an argument, and everything the engine wants done comes out as an
//! [`Output`]. The same inputs always give the same outputs, which is what lets the simulation
//! and the property tests judge it.
//!
//! # Driving contract
//!
//! 1. Create the engine with [`Engine::new`] (or [`Engine::with_store`] after recovery).
//! 2. Feed it inputs as they happen, each with the current [`Timestamp`]:
//!    [`Engine::handle_connect`], [`Engine::handle_request`], [`Engine::handle_disconnect`],
//!    and [`Engine::handle_timeout`] when the time from [`Engine::poll_timeout`] is reached.
//! 3. After every input, drain [`Engine::poll_output`] until it returns `None`, in order:
//!    journal each [`Output::Persist`]; send each [`Output::Reply`] to its request, holding
//!    back those marked `after_sync` until every event emitted before them is durable; on
//!    [`Output::Shutdown`] stop accepting, call [`Engine::handle_shutdown`] and drain again.
//! 4. Re-arm the timer from [`Engine::poll_timeout`].
//!
//! Durable state changes only through [`QueueStore::apply`] of an [`Event`]; the handlers
//! decide which events to emit. Volatile state (connections, sessions, parked requests, the
//! alive table and the trace) lives beside it and is not journalled.

mod config;
mod machine;
mod name_map;
mod state;
mod time;
mod trace;

pub use config::{default_queue_bytes_max, AckSync, Config};
pub use machine::{
    changes_durable_state, ConnectionId, Engine, EngineStats, LimitHits, Output, QueueSummary,
    RequestId,
};
pub use state::{Event, Queue, QueueStore, StoredMessage};
pub use time::{seconds_to_duration, Timestamp};
pub use trace::{compact_payload, TRACE_PAYLOAD_KEPT_BYTES_MAX};
