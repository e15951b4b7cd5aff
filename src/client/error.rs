//! The client's error type: what can go wrong talking to a switch, as values.

use std::io;
use std::time::Duration;

use crate::protocol::{DecodeError, QueueName};

/// Why a client operation failed.
///
/// The variants split into two families. *Transport* failures
/// ([`Error::is_transport`]: [`Error::Unreachable`], [`Error::Disconnected`],
/// [`Error::RequestTimedOut`]) mean the connection is gone or unusable; the RPC patterns
/// reconnect and retry after them. Every other variant is an answer from a working switch (or
/// a deadline of the caller) and is returned as is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be opened (refused, no such socket, connect timed out).
    #[error("cannot connect to the message switch: {0}")]
    Unreachable(#[source] io::Error),
    /// The connection failed or was closed while a request was in flight, or was already
    /// closed when a request was attempted.
    #[error("lost the connection to the message switch: {0}")]
    Disconnected(String),
    /// The switch did not answer a request within the client's bound (the long-poll time of
    /// the request plus `request_timeout`). The connection is abandoned, because its
    /// response could still arrive later.
    #[error("the message switch did not answer within {0:?}")]
    RequestTimedOut(Duration),
    /// The switch answered with a status other than 200. `text` is the (one-line) body.
    #[error("the message switch answered {status}: {text}")]
    Status {
        /// The HTTP status code, e.g. 404 or 500.
        status: u16,
        /// The response body, lossily decoded and cut to a bounded length.
        text: String,
    },
    /// A 200 response whose body is not what the protocol says it should be.
    #[error("the message switch sent a malformed reply: {0}")]
    Decode(#[from] DecodeError),
    /// A response body larger than the configured bound (`response_bytes_max`).
    #[error("the message switch sent a reply larger than {0} bytes")]
    ResponseTooLarge(usize),
    /// A Send answered `[]`: the destination queue does not exist and the message was
    /// dropped (the reference's `Queue_deleted`).
    #[error("queue {0} does not exist")]
    QueueDeleted(QueueName),
    /// A call got no reply within its timeout. Its waiter has been removed; a reply that
    /// arrives later is acked and dropped.
    #[error("no reply from {queue} within {timeout:?}")]
    CallTimedOut {
        /// The queue the request was sent to.
        queue: QueueName,
        /// The timeout the caller gave.
        timeout: Duration,
    },
}

impl Error {
    /// Whether this is a transport failure (the connection is gone or unusable), after which
    /// reconnecting and retrying may succeed.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Error::Unreachable(_) | Error::Disconnected(_) | Error::RequestTimedOut(_)
        )
    }

    /// Whether the switch is at one of its limits (429: too many queues, messages, stored
    /// bytes, connections or logins). The same request may succeed later, once something is
    /// acked, destroyed or closed; whoever retries must back off.
    pub fn is_overload(&self) -> bool {
        matches!(self, Error::Status { status: 429, .. })
    }

    /// Whether the switch refused the request itself with a 4xx other than 429 (a name, body
    /// or timeout over its limits, a malformed request, no session): the same request will
    /// be refused again, so retrying cannot help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Status { status, .. } if (400..500).contains(status) && *status != 429)
    }
}
