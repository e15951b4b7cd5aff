//! The wire vocabulary shared by the server and the client: request routing (method + path +
//! body ⇄ [`Request`]), reply encoding and decoding ([`Reply`]), and the byte-exact JSON of the
//! reference switch (`json`). Everything here is pure: no I/O, no clocks.

mod byte_search;
pub mod json;
pub mod numbers;
mod reply;
mod request;
mod types;

pub use reply::{
    decode_list, decode_sent, decode_trace, write_message_id, write_message_kind, DecodeError,
    Diagnostics, ErrorReply, QueueDiagnostics, Reply, TraceEvent, TraceMessage, TransferReply,
    PLEASE_LOG_IN,
};
pub use request::{
    decode_segment, encode_segment, HttpRequest, Request, RouteError, TransferRequest,
    TRANSFER_FROM_START,
};
pub use types::{Entry, Message, MessageId, MessageKind, Origin, QueueName, SessionToken};
