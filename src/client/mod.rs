//! The async client library and the RPC patterns.
//!
//! Layers, bottom up:
//! - [`Connector`]: how to open a byte stream to the switch ([`TcpConnector`],
//!   [`UnixConnector`], or your own, e.g. turmoil's TCP in the simulation).
//! - [`Connection`]: one HTTP/1.1 connection carrying one request at a time, with a typed
//!   method per protocol request (login, create, destroy, send, transfer, ack, list,
//!   diagnostics, trace, shutdown).
//! - [`Client`]: RPC calls with a reply queue, correlation by request id, concurrent calls,
//!   timeouts that leave nothing behind, and reconnects that re-create the reply queue.
//! - [`serve`]: the service loop (handle, respond, then ack), in order or with bounded
//!   concurrency, surviving switch restarts.
//! - [`format`](mod@format): the text `message-cli` prints, as pure functions.
//!
//! Everything waits through `tokio::time` and spawns through `tokio::spawn` only, so the
//! library runs unchanged inside a turmoil simulation.

#![warn(missing_docs)]

mod backoff;
mod connection;
mod connector;
mod error;
pub mod format;
mod rpc;
mod serve;

pub use backoff::Jitter;
pub use connection::{http_request, Connection, ConnectionConfig};
#[cfg(unix)]
pub use connector::UnixConnector;
pub use connector::{Connector, TcpConnector};
pub use error::Error;
pub use rpc::{default_token, CallOptions, Client, ClientConfig};
pub use serve::{serve, Incoming, ServeOptions, REPLIERS_MAX};
