//! Replies: the typed answers of the switch, their byte-exact encoding (`protocol.md` §1.1)
//! and, for clients, their decoding.

use bytes::Bytes;

use super::json::{self, Value};
use super::types::{Entry, Message, MessageId, MessageKind, Origin, QueueName, SessionToken};

/// The body of `404 Please log in.`.
pub const PLEASE_LOG_IN: &str = "Please log in.";

/// A typed reply. [`Reply::encode`] turns it into the status and body on the wire.
#[derive(Clone, PartialEq, Debug)]
pub enum Reply {
    /// 200 with an empty body: Login, Ack, Destroy, Shutdown.
    Empty,
    /// 200 with the queue name as raw bytes: the Create requests.
    Name(QueueName),
    /// 200 with `[["NAME",ID]]`, or `[]` when the queue does not exist.
    Sent(Option<MessageId>),
    /// 200 with the Transfer JSON.
    Transfer(TransferReply),
    /// 200 with a JSON array of names.
    List(Vec<QueueName>),
    /// 200 with the trace JSON.
    Trace(Vec<(i64, TraceEvent)>),
    /// 200 with the diagnostics JSON.
    Diagnostics(Diagnostics),
    /// A non-200 status with a one-line text body.
    Error(ErrorReply),
}

/// A non-200 reply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ErrorReply {
    /// The HTTP status code.
    pub status: u16,
    /// The one-line text body.
    pub text: String,
}

impl ErrorReply {
    /// An error with the given status and text.
    pub fn new(status: u16, text: impl Into<String>) -> Self {
        Self {
            status,
            text: text.into(),
        }
    }

    /// 404 `Please log in.`: a session-only request on a connection without a session.
    pub fn please_log_in() -> Self {
        Self::new(404, PLEASE_LOG_IN)
    }
}

/// The answer to a Transfer.
#[derive(Clone, PartialEq, Debug)]
pub struct TransferReply {
    /// The messages, queue by queue in request order, ascending ids within a queue.
    pub messages: Vec<(MessageId, Message)>,
    /// The largest id returned, or the request's `from` (−1 if absent) when none was.
    pub next: i64,
}

/// One trace event.
#[derive(Clone, PartialEq, Debug)]
pub struct TraceEvent {
    /// Unix time in seconds.
    pub time: f64,
    /// The session that sent the message or ack, if any.
    pub input: Option<SessionToken>,
    /// The queue concerned.
    pub queue: QueueName,
    /// The session a message was transferred to, if any.
    pub output: Option<SessionToken>,
    /// What happened.
    pub message: TraceMessage,
    /// For a response delivered while its request was still stored: ns since the request was
    /// stored.
    pub processing_time: Option<i64>,
}

/// The subject of a trace event.
#[derive(Clone, PartialEq, Debug)]
pub enum TraceMessage {
    /// A message was sent or transferred.
    Message(MessageId, Message),
    /// A message was acked.
    Ack(MessageId),
}

/// The switch's state (`GET /`).
#[derive(Clone, PartialEq, Debug)]
pub struct Diagnostics {
    /// When the switch started, in ns on the same clock as `current_time` (always 0).
    pub start_time: i64,
    /// Now, in ns since the switch process started.
    pub current_time: i64,
    /// Queues without an owner, ascending by name.
    pub permanent_queues: Vec<(QueueName, QueueDiagnostics)>,
    /// Queues owned by a session, ascending by name.
    pub transient_queues: Vec<(QueueName, QueueDiagnostics)>,
}

/// One queue in [`Diagnostics`].
#[derive(Clone, PartialEq, Debug)]
pub struct QueueDiagnostics {
    /// When the next Transfer naming this queue is expected, in ns on the diagnostics clock.
    pub next_transfer_expected: Option<i64>,
    /// The stored messages, descending by id.
    pub queue_contents: Vec<(MessageId, Entry)>,
}

/// Why a reply body could not be decoded.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("unexpected reply body: {0}")]
pub struct DecodeError(pub String);

impl Reply {
    /// The HTTP status and body of this reply, byte for byte as the reference prints them.
    pub fn encode(&self) -> (u16, Bytes) {
        let body = match self {
            Reply::Empty => Bytes::new(),
            Reply::Name(name) => name.to_bytes(),
            Reply::Sent(None) => Bytes::from_static(b"[]"),
            Reply::Sent(Some(id)) => {
                // `[["name",id]]`, in a buffer of exactly that size when the name needs no
                // escape: the body then takes the buffer over as it is, where a buffer with
                // room to spare needs a second allocation to be shared.
                let digits = id.index.unsigned_abs().checked_ilog10().unwrap_or(0) as usize
                    + 1
                    + usize::from(id.index < 0);
                let mut out = Vec::with_capacity(id.queue.len() + digits + 7);
                out.push(b'[');
                write_message_id(&mut out, id);
                out.push(b']');
                Bytes::from(out)
            }
            Reply::Transfer(transfer) => Bytes::from(transfer.encode()),
            Reply::List(names) => {
                let mut out = Vec::with_capacity(names.len() * 16 + 2);
                out.push(b'[');
                for (index, name) in names.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    json::write_string(&mut out, name.as_bytes());
                }
                out.push(b']');
                Bytes::from(out)
            }
            Reply::Trace(events) => Bytes::from(encode_trace(events)),
            Reply::Diagnostics(diagnostics) => Bytes::from(diagnostics.encode()),
            Reply::Error(error) => return (error.status, Bytes::from(error.text.clone())),
        };
        (200, body)
    }
}

impl TransferReply {
    /// `{"messages":[[["q",n],{"payload":…,"kind":…}],…],"next":"N"}`.
    pub fn encode(&self) -> Vec<u8> {
        // Room for every payload and name with an eighth more for their escapes, and the
        // punctuation and numbers: the buffer is allocated once, not grown (and copied) twice.
        let message_bytes = |(id, message): &(MessageId, Message)| {
            let names = id.queue.len()
                + match &message.kind {
                    MessageKind::Request { reply_to } => reply_to.len(),
                    MessageKind::Response { request } => request.queue.len(),
                };
            let text = message.payload.len() + names;
            text + text / 8 + 96
        };
        let mut out =
            Vec::with_capacity(self.messages.iter().map(message_bytes).sum::<usize>() + 48);
        out.extend_from_slice(b"{\"messages\":[");
        for (index, (id, message)) in self.messages.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.push(b'[');
            write_message_id(&mut out, id);
            out.push(b',');
            write_message(&mut out, message);
            out.push(b']');
        }
        out.extend_from_slice(b"],\"next\":\"");
        json::write_int(&mut out, self.next);
        out.extend_from_slice(b"\"}");
        out
    }

    /// Decodes a Transfer reply body.
    pub fn decode(body: &[u8]) -> Result<TransferReply, DecodeError> {
        let value = parse(body)?;
        let messages = array(field(&value, "messages")?)?
            .iter()
            .map(|pair| {
                let [id, message] = pair_of(pair)?;
                Ok((decode_message_id(id)?, decode_message(message)?))
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let next = field(&value, "next")?
            .as_int64()
            .ok_or_else(|| DecodeError("'next' is not an int64".into()))?;
        Ok(TransferReply { messages, next })
    }
}

impl Diagnostics {
    /// The compact JSON of `GET /`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"start_time\":");
        json::write_int(&mut out, self.start_time);
        out.extend_from_slice(b",\"current_time\":");
        json::write_int(&mut out, self.current_time);
        out.extend_from_slice(b",\"permanent_queues\":");
        write_queue_map(&mut out, &self.permanent_queues);
        out.extend_from_slice(b",\"transient_queues\":");
        write_queue_map(&mut out, &self.transient_queues);
        out.push(b'}');
        out
    }

    /// Decodes a diagnostics body.
    pub fn decode(body: &[u8]) -> Result<Diagnostics, DecodeError> {
        let value = parse(body)?;
        Ok(Diagnostics {
            start_time: int(field(&value, "start_time")?)?,
            current_time: int(field(&value, "current_time")?)?,
            permanent_queues: decode_queue_map(field(&value, "permanent_queues")?)?,
            transient_queues: decode_queue_map(field(&value, "transient_queues")?)?,
        })
    }
}

/// Decodes the reply to a Send: `[]` or `[["q",n]]`.
pub fn decode_sent(body: &[u8]) -> Result<Option<MessageId>, DecodeError> {
    match array(&parse(body)?)? {
        [] => Ok(None),
        [id] => decode_message_id(id).map(Some),
        _ => Err(DecodeError("expected [] or [id]".into())),
    }
}

/// Decodes the reply to a List: an array of names.
pub fn decode_list(body: &[u8]) -> Result<Vec<QueueName>, DecodeError> {
    array(&parse(body)?)?.iter().map(name).collect()
}

/// Decodes the reply to a Trace: `{"events":[[id,event],…]}`.
pub fn decode_trace(body: &[u8]) -> Result<Vec<(i64, TraceEvent)>, DecodeError> {
    let value = parse(body)?;
    array(field(&value, "events")?)?
        .iter()
        .map(|pair| {
            let [id, event] = pair_of(pair)?;
            Ok((int(id)?, decode_trace_event(event)?))
        })
        .collect()
}

fn encode_trace(events: &[(i64, TraceEvent)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 160 + 16);
    out.extend_from_slice(b"{\"events\":[");
    for (index, (id, event)) in events.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.push(b'[');
        json::write_int(&mut out, *id);
        out.extend_from_slice(b",{\"time\":");
        json::write_float(&mut out, event.time);
        if let Some(input) = &event.input {
            out.extend_from_slice(b",\"input\":");
            json::write_string(&mut out, input.as_bytes());
        }
        out.extend_from_slice(b",\"queue\":");
        json::write_string(&mut out, event.queue.as_bytes());
        if let Some(output) = &event.output {
            out.extend_from_slice(b",\"output\":");
            json::write_string(&mut out, output.as_bytes());
        }
        out.extend_from_slice(b",\"message\":");
        match &event.message {
            TraceMessage::Message(id, message) => {
                out.extend_from_slice(b"[\"Message\",");
                write_message_id(&mut out, id);
                out.push(b',');
                write_message(&mut out, message);
                out.push(b']');
            }
            TraceMessage::Ack(id) => {
                out.extend_from_slice(b"[\"Ack\",");
                write_message_id(&mut out, id);
                out.push(b']');
            }
        }
        if let Some(processing_time) = event.processing_time {
            out.extend_from_slice(b",\"processing_time\":");
            json::write_int(&mut out, processing_time);
        }
        out.extend_from_slice(b"}]");
    }
    out.extend_from_slice(b"]}");
    out
}

/// Writes a message id as the wire has it: `["QUEUE",INDEX]`.
pub fn write_message_id(out: &mut Vec<u8>, id: &MessageId) {
    out.push(b'[');
    json::write_string(out, id.queue.as_bytes());
    out.push(b',');
    json::write_int(out, id.index);
    out.push(b']');
}

fn write_message(out: &mut Vec<u8>, message: &Message) {
    out.extend_from_slice(b"{\"payload\":");
    json::write_string(out, &message.payload);
    out.extend_from_slice(b",\"kind\":");
    write_message_kind(out, &message.kind);
    out.extend_from_slice(b"}");
}

/// Writes a message's kind as the wire has it: `["Request","REPLY_TO"]` or
/// `["Response",["QUEUE",INDEX]]`.
pub fn write_message_kind(out: &mut Vec<u8>, kind: &MessageKind) {
    match kind {
        MessageKind::Request { reply_to } => {
            out.extend_from_slice(b"[\"Request\",");
            json::write_string(out, reply_to.as_bytes());
        }
        MessageKind::Response { request } => {
            out.extend_from_slice(b"[\"Response\",");
            write_message_id(out, request);
        }
    }
    out.push(b']');
}

fn write_queue_map(out: &mut Vec<u8>, queues: &[(QueueName, QueueDiagnostics)]) {
    out.push(b'{');
    for (index, (name, queue)) in queues.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        json::write_string(out, name.as_bytes());
        out.extend_from_slice(b":{");
        if let Some(expected) = queue.next_transfer_expected {
            out.extend_from_slice(b"\"next_transfer_expected\":");
            json::write_int(out, expected);
            out.push(b',');
        }
        out.extend_from_slice(b"\"queue_contents\":[");
        for (index, (id, entry)) in queue.queue_contents.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.push(b'[');
            write_message_id(out, id);
            out.extend_from_slice(b",{\"origin\":");
            match &entry.origin {
                Origin::Name(session) => {
                    out.extend_from_slice(b"[\"Name\",");
                    json::write_string(out, session.as_bytes());
                }
                Origin::Anonymous(connection) => {
                    out.extend_from_slice(b"[\"Anonymous\",");
                    json::write_int(out, *connection);
                }
            }
            out.extend_from_slice(b"],\"time\":");
            json::write_int(out, entry.time);
            out.extend_from_slice(b",\"message\":");
            write_message(out, &entry.message);
            out.extend_from_slice(b"}]");
        }
        out.extend_from_slice(b"]}");
    }
    out.push(b'}');
}

fn parse(body: &[u8]) -> Result<Value, DecodeError> {
    json::parse(body).map_err(|e| DecodeError(e.to_string()))
}

fn field<'a>(value: &'a Value, key: &str) -> Result<&'a Value, DecodeError> {
    value
        .member(key)
        .ok_or_else(|| DecodeError(format!("missing field '{key}'")))
}

fn array(value: &Value) -> Result<&[Value], DecodeError> {
    value
        .as_array()
        .ok_or_else(|| DecodeError("expected an array".into()))
}

fn pair_of(value: &Value) -> Result<&[Value; 2], DecodeError> {
    array(value)?
        .try_into()
        .map_err(|_| DecodeError("expected a pair".into()))
}

fn int(value: &Value) -> Result<i64, DecodeError> {
    value
        .as_int64()
        .ok_or_else(|| DecodeError("expected an int64".into()))
}

fn bytes(value: &Value) -> Result<&[u8], DecodeError> {
    value
        .as_bytes()
        .ok_or_else(|| DecodeError("expected a string".into()))
}

fn name(value: &Value) -> Result<QueueName, DecodeError> {
    bytes(value).map(QueueName::new)
}

/// Matches a variant constructor `["Tag", args…]`, comparing the tag case-insensitively as
/// rpclib does, and returns the arguments.
fn variant<'a>(value: &'a Value, tag: &str) -> Option<&'a [Value]> {
    let items = value.as_array()?;
    let (first, rest) = items.split_first()?;
    first
        .as_bytes()
        .filter(|t| t.eq_ignore_ascii_case(tag.as_bytes()))
        .map(|_| rest)
}

fn decode_message_id(value: &Value) -> Result<MessageId, DecodeError> {
    let [queue, index] = pair_of(value)?;
    Ok(MessageId::new(name(queue)?, int(index)?))
}

fn decode_message(value: &Value) -> Result<Message, DecodeError> {
    let payload = Bytes::from(bytes(field(value, "payload")?)?.to_vec());
    let kind = field(value, "kind")?;
    let kind = if let Some([reply_to]) = variant(kind, "Request") {
        MessageKind::Request {
            reply_to: name(reply_to)?,
        }
    } else if let Some([request]) = variant(kind, "Response") {
        MessageKind::Response {
            request: decode_message_id(request)?,
        }
    } else {
        return Err(DecodeError("unknown message kind".into()));
    };
    Ok(Message { payload, kind })
}

fn decode_queue_map(value: &Value) -> Result<Vec<(QueueName, QueueDiagnostics)>, DecodeError> {
    let Value::Object(members) = value else {
        return Err(DecodeError("expected an object of queues".into()));
    };
    members
        .iter()
        .map(|(key, queue)| {
            let next_transfer_expected = queue
                .member("next_transfer_expected")
                .map(int)
                .transpose()?;
            let queue_contents = array(field(queue, "queue_contents")?)?
                .iter()
                .map(|pair| {
                    let [id, entry] = pair_of(pair)?;
                    Ok((decode_message_id(id)?, decode_entry(entry)?))
                })
                .collect::<Result<Vec<_>, DecodeError>>()?;
            Ok((
                QueueName::new(key.clone()),
                QueueDiagnostics {
                    next_transfer_expected,
                    queue_contents,
                },
            ))
        })
        .collect()
}

fn decode_entry(value: &Value) -> Result<Entry, DecodeError> {
    let origin = field(value, "origin")?;
    let origin = if let Some([session]) = variant(origin, "Name") {
        Origin::Name(SessionToken::new(bytes(session)?))
    } else if let Some([connection]) = variant(origin, "Anonymous") {
        Origin::Anonymous(int(connection)?)
    } else {
        return Err(DecodeError("unknown origin".into()));
    };
    Ok(Entry {
        origin,
        time: int(field(value, "time")?)?,
        message: decode_message(field(value, "message")?)?,
    })
}

fn decode_trace_event(value: &Value) -> Result<TraceEvent, DecodeError> {
    let session = |key: &str| -> Result<Option<SessionToken>, DecodeError> {
        value
            .member(key)
            .map(|v| bytes(v).map(SessionToken::new))
            .transpose()
    };
    let message = field(value, "message")?;
    let message = if let Some([id, message]) = variant(message, "Message") {
        TraceMessage::Message(decode_message_id(id)?, decode_message(message)?)
    } else if let Some([id]) = variant(message, "Ack") {
        TraceMessage::Ack(decode_message_id(id)?)
    } else {
        return Err(DecodeError("unknown trace message".into()));
    };
    Ok(TraceEvent {
        time: field(value, "time")?
            .as_float()
            .ok_or_else(|| DecodeError("'time' is not a number".into()))?,
        input: session("input")?,
        queue: name(field(value, "queue")?)?,
        output: session("output")?,
        message,
        processing_time: value.member("processing_time").map(int).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_bodies_are_exact_for_every_kind_of_index_and_name() {
        for index in [
            0,
            9,
            10,
            99,
            1_700_000_000_000_000_000,
            i64::MAX,
            -1,
            -10,
            i64::MIN,
        ] {
            let (status, body) = Reply::Sent(Some(MessageId::new("q".into(), index))).encode();
            assert_eq!(status, 200);
            assert_eq!(body, format!("[[\"q\",{index}]]").as_bytes());
        }
        let (_, escaped) = Reply::Sent(Some(MessageId::new("a\"b".into(), 5))).encode();
        assert_eq!(escaped, br#"[["a\"b",5]]"#.as_slice());
    }

    fn request(payload: &'static [u8], reply_to: &str) -> Message {
        Message {
            payload: Bytes::from_static(payload),
            kind: MessageKind::Request {
                reply_to: reply_to.into(),
            },
        }
    }

    #[test]
    fn reference_bodies_are_byte_exact() {
        assert_eq!(
            Reply::Sent(Some(MessageId::new("foo".into(), 0))).encode(),
            (200, Bytes::from_static(br#"[["foo",0]]"#))
        );
        assert_eq!(Reply::Sent(None).encode().1, Bytes::from_static(b"[]"));
        let transfer = TransferReply {
            messages: vec![
                (
                    MessageId::new("foo".into(), 3),
                    request(b"a", "message-cli:42"),
                ),
                (
                    MessageId::new("message-cli:42".into(), 0),
                    Message {
                        payload: Bytes::from_static(b"hello"),
                        kind: MessageKind::Response {
                            request: MessageId::new("foo".into(), 3),
                        },
                    },
                ),
            ],
            next: 4,
        };
        let encoded = transfer.encode();
        assert_eq!(
            encoded,
            br#"{"messages":[[["foo",3],{"payload":"a","kind":["Request","message-cli:42"]}],[["message-cli:42",0],{"payload":"hello","kind":["Response",["foo",3]]}]],"next":"4"}"#
        );
        assert_eq!(TransferReply::decode(&encoded), Ok(transfer));
    }

    #[test]
    fn trace_and_diagnostics_round_trip() {
        let events = vec![
            (
                0,
                TraceEvent {
                    time: 1700000000.123456,
                    input: Some("message-cli:42".into()),
                    queue: "foo".into(),
                    output: None,
                    message: TraceMessage::Message(
                        MessageId::new("foo".into(), 0),
                        request(b"hello", "message-cli:42"),
                    ),
                    processing_time: None,
                },
            ),
            (
                2,
                TraceEvent {
                    time: 1700000000.6,
                    input: Some("message-cli:77".into()),
                    queue: "foo".into(),
                    output: None,
                    message: TraceMessage::Ack(MessageId::new("foo".into(), 0)),
                    processing_time: Some(1234567),
                },
            ),
        ];
        let encoded = encode_trace(&events);
        assert_eq!(
            encoded,
            br#"{"events":[[0,{"time":1700000000.123456,"input":"message-cli:42","queue":"foo","message":["Message",["foo",0],{"payload":"hello","kind":["Request","message-cli:42"]}]}],[2,{"time":1700000000.6,"input":"message-cli:77","queue":"foo","message":["Ack",["foo",0]],"processing_time":1234567}]]}"#
        );
        assert_eq!(decode_trace(&encoded), Ok(events));

        let diagnostics = Diagnostics {
            start_time: 0,
            current_time: 5000000000,
            permanent_queues: vec![(
                "foo".into(),
                QueueDiagnostics {
                    next_transfer_expected: Some(34000000000),
                    queue_contents: vec![(
                        MessageId::new("foo".into(), 0),
                        Entry {
                            origin: Origin::Name("message-cli:42".into()),
                            time: 4000000000,
                            message: request(b"hello", "message-cli:42"),
                        },
                    )],
                },
            )],
            transient_queues: vec![],
        };
        let encoded = diagnostics.encode();
        assert_eq!(
            encoded,
            br#"{"start_time":0,"current_time":5000000000,"permanent_queues":{"foo":{"next_transfer_expected":34000000000,"queue_contents":[[["foo",0],{"origin":["Name","message-cli:42"],"time":4000000000,"message":{"payload":"hello","kind":["Request","message-cli:42"]}}]]}},"transient_queues":{}}"#
        );
        assert_eq!(Diagnostics::decode(&encoded), Ok(diagnostics));
    }

    #[test]
    fn list_and_sent_decode() {
        let (_, body) = Reply::List(vec!["b".into(), "a\"".into()]).encode();
        assert_eq!(&body[..], br#"["b","a\""]"#);
        assert_eq!(decode_list(&body), Ok(vec!["b".into(), "a\"".into()]));
        assert_eq!(decode_sent(b"[]"), Ok(None));
        assert_eq!(
            decode_sent(br#"[["q","7"]]"#),
            Ok(Some(MessageId::new("q".into(), 7)))
        );
        assert!(decode_sent(b"null").is_err());
    }
}
