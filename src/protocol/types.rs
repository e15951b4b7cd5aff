//! The nouns of the protocol: queue names, session tokens, message ids, messages and entries.
//!
//! Names and payloads are bytes, not strings: the reference percent-decodes names from the
//! URL, so any byte may occur, and payloads are HTTP bodies. Clones are cheap, which matters
//! because a queued message is shared by the queue, transfer replies and the trace: a payload
//! is a `Bytes`, a name or token an `Arc<[u8]>`.
//!
//! Why names are not `Bytes` too: a name is built whole from a decoded path segment or JSON
//! string and never sliced, and it is cloned and dropped several times per exchange (into the
//! trace, the stored message, the reply). An `Arc<[u8]>` is half the size (16 bytes against 32,
//! in every request, event, reply and stored message that holds one), takes one allocation
//! where a copied `Bytes` takes a second at its first clone, and clones and drops inline,
//! where `Bytes` calls through its vtable (docs/performance.md, "a ninth pass").

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// The name of a queue: any byte string (the engine bounds its length).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QueueName(Arc<[u8]>);

/// A session token, as given to `/login/TOKEN`. The reference clients use `PROGRAM:PID`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SessionToken(Arc<[u8]>);

macro_rules! byte_name {
    ($type:ident) => {
        impl $type {
            /// A name holding a copy of the given bytes.
            pub fn new(bytes: impl AsRef<[u8]>) -> Self {
                Self(Arc::from(bytes.as_ref()))
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// The raw bytes, copied into a `Bytes` (for a body or a request path).
            pub fn to_bytes(&self) -> Bytes {
                Bytes::copy_from_slice(&self.0)
            }

            /// The length in bytes.
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// Whether the name is the empty string.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            /// A lossy UTF-8 rendering, for logs and human-readable output.
            pub fn to_text(&self) -> String {
                String::from_utf8_lossy(&self.0).into_owned()
            }
        }

        impl From<&str> for $type {
            fn from(text: &str) -> Self {
                Self::new(text)
            }
        }

        impl From<Vec<u8>> for $type {
            fn from(bytes: Vec<u8>) -> Self {
                Self(Arc::from(bytes))
            }
        }

        impl From<String> for $type {
            fn from(text: String) -> Self {
                Self(Arc::from(text.into_bytes()))
            }
        }

        impl fmt::Debug for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", String::from_utf8_lossy(&self.0))
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&String::from_utf8_lossy(&self.0))
            }
        }
    };
}

byte_name!(QueueName);
byte_name!(SessionToken);

/// A message id: the queue it was sent to and its number there. Numbers only ever grow for a
/// given queue name (protocol.md part A.3), so a cursor never hides a newer message.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct MessageId {
    /// The queue the message was stored in.
    pub queue: QueueName,
    /// The message's number within that queue.
    pub index: i64,
}

impl MessageId {
    /// Builds an id.
    pub fn new(queue: QueueName, index: i64) -> Self {
        Self { queue, index }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.queue, self.index)
    }
}

/// Whether a message is a request (with the queue to reply to) or a response (with the id of
/// the request it answers).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MessageKind {
    /// A request; the reply should be sent to `reply_to`.
    Request {
        /// The queue the caller listens on for the response.
        reply_to: QueueName,
    },
    /// A response to the request with id `request`.
    Response {
        /// The id the switch gave the request.
        request: MessageId,
    },
}

/// A message as stored and transferred: an opaque payload and its kind.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message {
    /// The payload: any bytes.
    pub payload: Bytes,
    /// Request or response.
    pub kind: MessageKind,
}

/// Who sent a stored message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Origin {
    /// A logged-in session.
    Name(SessionToken),
    /// A connection without a session (cannot happen in practice: Send needs a session).
    Anonymous(i64),
}

/// A stored message with its metadata, as shown by diagnostics.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    /// The sender.
    pub origin: Origin,
    /// When it was stored, in ns on the diagnostics clock (see `Diagnostics::current_time`).
    pub time: i64,
    /// The message.
    pub message: Message,
}
