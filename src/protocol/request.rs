//! Requests: routing an HTTP method, path and body to a typed [`Request`] exactly as the
//! reference switch does (`protocol.md` §1), and the reverse, building the method, path and
//! body a client sends for a [`Request`].

use std::borrow::Cow;

use bytes::Bytes;

use super::byte_search::find_either;
use super::json::{self, Value};
use super::numbers::{parse_float, parse_int64_bytes};
use super::types::{Message, MessageId, MessageKind, QueueName, SessionToken};

/// The `from` a Transfer without one means: every stored message.
pub const TRANSFER_FROM_START: i64 = -1;

/// A parsed request.
#[derive(Clone, PartialEq, Debug)]
pub enum Request {
    /// `GET /login/TOKEN`: tag the connection with a session token.
    Login(SessionToken),
    /// `GET /persistent/NAME`: create a queue that outlives sessions.
    CreatePersistent(QueueName),
    /// `GET /transient/NAME`: create a queue owned by the session, removed when its last
    /// connection closes. `None` (from `GET /transient/`) asks for a fresh server-chosen name.
    CreateTransient(Option<QueueName>),
    /// `GET /destroy/NAME`.
    Destroy(QueueName),
    /// `POST /request/NAME/REPLY_TO` or `POST /response/NAME/FROM_Q/FROM_N`.
    Send {
        /// The destination queue.
        queue: QueueName,
        /// The payload (the body) and kind.
        message: Message,
    },
    /// `POST /transfer`: a long poll for messages after a cursor.
    Transfer(TransferRequest),
    /// `GET /ack/NAME/ID`: delete a message.
    Ack(MessageId),
    /// `GET /list/PREFIX` (`alive_only == false`) or `GET /list/alive/PREFIX`.
    List {
        /// Only names starting with these bytes are listed.
        prefix: QueueName,
        /// Only queues that some Transfer has named.
        alive_only: bool,
    },
    /// `GET /trace` or `GET /trace/FROM/TIMEOUT`: a long poll on the event trace.
    Trace {
        /// Return events with an id ≥ this; wait until there is one.
        from: i64,
        /// Seconds to wait at most; ≤ 0 means do not wait.
        timeout_s: f64,
    },
    /// `GET /`: the switch's state as JSON.
    Diagnostics,
    /// `POST /shutdown` with an empty body.
    Shutdown,
    /// `GET /admin…`, `/js/…`, `/css/…`, `/images/…`: a file of the web console. The segments
    /// are kept raw (not percent-decoded), as in the reference.
    Web(Vec<String>),
    /// `GET /metrics`: Prometheus metrics (ours; not in the reference).
    Metrics,
    /// `GET /health`: liveness and readiness (ours; not in the reference).
    Health,
}

/// The body of `POST /transfer`.
#[derive(Clone, PartialEq, Debug)]
pub struct TransferRequest {
    /// Return only messages with an id greater than this (`-1` when absent on the wire).
    pub from: Option<i64>,
    /// Seconds to wait for a message; ≤ 0 means answer at once.
    pub timeout_s: f64,
    /// The queues to look in, in order.
    pub queues: Vec<QueueName>,
}

/// Why a request could not be routed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RouteError {
    /// No route matches: the reference answers 404 `Not found: URI`.
    #[error("not found")]
    NotFound,
    /// A route matched but a number or the JSON body is malformed: the reference answers 500.
    #[error("{0}")]
    Malformed(String),
}

/// The HTTP request a client sends for a [`Request`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The percent-encoded path.
    pub path: String,
    /// The body (empty for GET).
    pub body: Bytes,
}

impl Request {
    /// The length in bytes of the longest queue name or session token the request carries
    /// (0 if none): what the switch holds against its name limit. Payloads and web paths do
    /// not count.
    pub fn longest_name_bytes(&self) -> usize {
        match self {
            Request::Login(token) => token.len(),
            Request::CreatePersistent(name) | Request::Destroy(name) => name.len(),
            Request::CreateTransient(name) => name.as_ref().map_or(0, QueueName::len),
            Request::Send { queue, message } => queue.len().max(match &message.kind {
                MessageKind::Request { reply_to } => reply_to.len(),
                MessageKind::Response { request } => request.queue.len(),
            }),
            Request::Transfer(transfer) => transfer
                .queues
                .iter()
                .map(QueueName::len)
                .max()
                .unwrap_or(0),
            Request::Ack(id) => id.queue.len(),
            Request::List { prefix, .. } => prefix.len(),
            Request::Trace { .. }
            | Request::Diagnostics
            | Request::Shutdown
            | Request::Web(_)
            | Request::Metrics
            | Request::Health => 0,
        }
    }

    /// Whether the reference refuses this request (404 `Please log in.`) on a connection that
    /// has not logged in.
    pub fn needs_session(&self) -> bool {
        !matches!(
            self,
            Request::Login(_)
                | Request::Diagnostics
                | Request::Trace { .. }
                | Request::Web(_)
                | Request::Metrics
                | Request::Health
        )
    }

    /// Routes a request as the reference does (`protocol.md` §1). `path` is the request
    /// target's path without the query; `body` is ignored for GET.
    pub fn route(method: &str, path: &str, body: Bytes) -> Result<Request, RouteError> {
        // Nearly every path has a few segments, none escaped and none a dot segment: those
        // are split on the stack. Others (and their errors) take the general way.
        let mut raw = [""; PLAIN_SEGMENTS_MAX];
        if let Some(count) = plain_segments(path, &mut raw) {
            let mut decoded: [&[u8]; PLAIN_SEGMENTS_MAX] = [b""; PLAIN_SEGMENTS_MAX];
            for (decoded, raw) in decoded.iter_mut().zip(&raw[..count]) {
                *decoded = raw.as_bytes();
            }
            return Self::route_segments(method, &raw[..count], &decoded[..count], body);
        }
        Self::route_general(method, path, body)
    }

    /// [`Request::route`] for any path: percent escapes decoded and dot segments removed as
    /// the reference does.
    fn route_general(method: &str, path: &str, body: Bytes) -> Result<Request, RouteError> {
        let segments = Segments::parse(path);
        let decoded: Vec<&[u8]> = segments.decoded.iter().map(|s| s.as_ref()).collect();
        Self::route_segments(method, &segments.raw, &decoded, body)
    }

    /// Routes by the path's raw and decoded segments (the same count of each).
    fn route_segments(
        method: &str,
        raw: &[&str],
        decoded: &[&[u8]],
        body: Bytes,
    ) -> Result<Request, RouteError> {
        let name = |index: usize| QueueName::new(decoded[index]);
        match (method, decoded) {
            ("GET", [b"", b""]) => Ok(Request::Diagnostics),
            ("GET", [b"", b"login", token]) => Ok(Request::Login(SessionToken::new(token))),
            ("GET", [b"", b"persistent", _]) => Ok(Request::CreatePersistent(name(2))),
            ("GET", [b"", b"transient", b""]) => Ok(Request::CreateTransient(None)),
            ("GET", [b"", b"transient", _]) => Ok(Request::CreateTransient(Some(name(2)))),
            ("GET", [b"", b"destroy", _]) => Ok(Request::Destroy(name(2))),
            ("POST", [b"", b"request", _, _]) => Ok(Request::Send {
                queue: name(2),
                message: Message {
                    payload: body,
                    kind: MessageKind::Request { reply_to: name(3) },
                },
            }),
            ("POST", [b"", b"response", _, _, index]) => Ok(Request::Send {
                queue: name(2),
                message: Message {
                    payload: body,
                    kind: MessageKind::Response {
                        request: MessageId::new(name(3), int64_segment(index, "message id")?),
                    },
                },
            }),
            ("POST", [b"", b"transfer"]) => TransferRequest::parse(&body).map(Request::Transfer),
            ("GET", [b"", b"ack", _, index]) => Ok(Request::Ack(MessageId::new(
                name(2),
                int64_segment(index, "message id")?,
            ))),
            ("GET", [b"", b"list", b"alive", _]) => Ok(Request::List {
                prefix: name(3),
                alive_only: true,
            }),
            ("GET", [b"", b"list", _]) => Ok(Request::List {
                prefix: name(2),
                alive_only: false,
            }),
            ("GET", [b"", b"trace"]) => Ok(Request::Trace {
                from: -1,
                timeout_s: 5.0,
            }),
            ("GET", [b"", b"trace", from, timeout]) => Ok(Request::Trace {
                from: int64_segment(from, "trace id")?,
                timeout_s: float_segment(timeout)?,
            }),
            ("POST", [b"", b"shutdown"]) if body.is_empty() => Ok(Request::Shutdown),
            ("GET", [b"", b"metrics"]) => Ok(Request::Metrics),
            ("GET", [b"", b"health"]) => Ok(Request::Health),
            ("GET", [b"", first, ..]) if is_web_root(first) => Ok(Request::Web(
                raw[1..].iter().map(|s| (*s).to_owned()).collect(),
            )),
            _ => Err(RouteError::NotFound),
        }
    }

    /// The method, percent-encoded path and body a client sends for this request. Names are
    /// encoded with the path-safe set the OCaml clients use, plus `/` (encoded as `%2F`, so
    /// that names holding `/` stay one segment).
    pub fn to_http(&self) -> HttpRequest {
        let get = |path: String| HttpRequest {
            method: "GET",
            path,
            body: Bytes::new(),
        };
        match self {
            Request::Login(token) => get(format!("/login/{}", encode_segment(token.as_bytes()))),
            Request::CreatePersistent(name) => {
                get(format!("/persistent/{}", encode_segment(name.as_bytes())))
            }
            Request::CreateTransient(name) => get(format!(
                "/transient/{}",
                name.as_ref()
                    .map(|n| encode_segment(n.as_bytes()))
                    .unwrap_or_default()
            )),
            Request::Destroy(name) => get(format!("/destroy/{}", encode_segment(name.as_bytes()))),
            Request::Send { queue, message } => {
                // The hot path of every RPC: built in one buffer, without `format!`.
                let mut path = String::with_capacity(64);
                match &message.kind {
                    MessageKind::Request { reply_to } => {
                        path.push_str("/request/");
                        encode_segment_into(&mut path, queue.as_bytes());
                        path.push('/');
                        encode_segment_into(&mut path, reply_to.as_bytes());
                    }
                    MessageKind::Response { request } => {
                        path.push_str("/response/");
                        encode_segment_into(&mut path, queue.as_bytes());
                        path.push('/');
                        push_message_id(&mut path, request);
                    }
                }
                HttpRequest {
                    method: "POST",
                    path,
                    body: message.payload.clone(),
                }
            }
            Request::Transfer(transfer) => HttpRequest {
                method: "POST",
                path: "/transfer".to_owned(),
                body: Bytes::from(transfer.encode()),
            },
            Request::Ack(id) => {
                let mut path = String::with_capacity(48);
                path.push_str("/ack/");
                push_message_id(&mut path, id);
                get(path)
            }
            Request::List { prefix, alive_only } => get(format!(
                "/list/{}{}",
                if *alive_only { "alive/" } else { "" },
                encode_segment(prefix.as_bytes())
            )),
            Request::Trace { from, timeout_s } => {
                get(format!("/trace/{from}/{}", json::format_float(*timeout_s)))
            }
            Request::Diagnostics => get("/".to_owned()),
            Request::Shutdown => HttpRequest {
                method: "POST",
                path: "/shutdown".to_owned(),
                body: Bytes::new(),
            },
            Request::Web(segments) => get(format!("/{}", segments.join("/"))),
            Request::Metrics => get("/metrics".to_owned()),
            Request::Health => get("/health".to_owned()),
        }
    }
}

impl TransferRequest {
    /// Parses the JSON body of `POST /transfer` as rpclib does: keys case-insensitive, unknown
    /// keys ignored, `from` an optional string holding an int64 (`null` or a number is an
    /// error), `timeout` a float, integer or numeric string, `queues` an array of strings.
    pub fn parse(body: &[u8]) -> Result<TransferRequest, RouteError> {
        match parse_canonical(body) {
            Some(request) => Ok(request),
            None => Self::parse_general(body),
        }
    }

    /// [`TransferRequest::parse`] through the general JSON reader: any body, and the error
    /// for a malformed one.
    fn parse_general(body: &[u8]) -> Result<TransferRequest, RouteError> {
        let malformed =
            |what: &str| RouteError::Malformed(format!("invalid transfer body: {what}"));
        let value = json::parse(body).map_err(|e| malformed(&e.to_string()))?;
        if !matches!(value, Value::Object(_)) {
            return Err(malformed("expected an object"));
        }
        let from = match value.member("from") {
            None => None,
            Some(Value::String(text)) => Some(
                parse_int64_bytes(text)
                    .ok_or_else(|| malformed("'from' is not an int64 string"))?,
            ),
            Some(_) => return Err(malformed("'from' must be a string")),
        };
        let timeout_s = value
            .member("timeout")
            .ok_or_else(|| malformed("missing 'timeout'"))?
            .as_float()
            .ok_or_else(|| malformed("'timeout' is not a number"))?;
        let queues = value
            .member("queues")
            .ok_or_else(|| malformed("missing 'queues'"))?
            .as_array()
            .ok_or_else(|| malformed("'queues' is not an array"))?
            .iter()
            .map(|q| q.as_bytes().map(QueueName::new))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| malformed("'queues' must hold strings"))?;
        Ok(TransferRequest {
            from,
            timeout_s,
            queues,
        })
    }

    /// The JSON body, as the OCaml client prints it: `{"from":"17","timeout":30.0,"queues":["q"]}`
    /// with `from` omitted when `None`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(b'{');
        if let Some(from) = self.from {
            out.extend_from_slice(b"\"from\":\"");
            json::write_int(&mut out, from);
            out.extend_from_slice(b"\",");
        }
        out.extend_from_slice(b"\"timeout\":");
        json::write_float(&mut out, self.timeout_s);
        out.extend_from_slice(b",\"queues\":[");
        for (index, queue) in self.queues.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            json::write_string(&mut out, queue.as_bytes());
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// The body of a Transfer as the clients write it, read without building a JSON tree:
/// `{"from":"N","timeout":T,"queues":["q",…]}` — keys in lower case, each at most once, in
/// any order, with optional white space; strings without escapes; `timeout` a JSON number.
/// Anything else (escapes, comments, other keys or types, an error) gives `None`, and the
/// general reader decides: so this never accepts what it would refuse, nor reads a body
/// differently (a property test compares the two).
fn parse_canonical(body: &[u8]) -> Option<TransferRequest> {
    let mut scan = Scan {
        input: body,
        pos: 0,
    };
    let (mut from, mut timeout_s, mut queues) = (None, None, None);
    scan.expect(b'{')?;
    if scan.peek()? == b'}' {
        return None;
    }
    loop {
        let key = scan.string()?;
        scan.expect(b':')?;
        match key {
            b"from" if from.is_none() => {
                from = Some(parse_int64_bytes(scan.string()?)?);
            }
            b"timeout" if timeout_s.is_none() => timeout_s = Some(scan.number()?),
            b"queues" if queues.is_none() => {
                let mut names = Vec::new();
                scan.expect(b'[')?;
                if scan.peek()? == b']' {
                    scan.pos += 1;
                } else {
                    loop {
                        names.push(QueueName::new(scan.string()?));
                        match scan.next()? {
                            b',' => {}
                            b']' => break,
                            _ => return None,
                        }
                    }
                }
                queues = Some(names);
            }
            _ => return None,
        }
        match scan.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    scan.skip_space();
    if scan.pos != body.len() {
        return None;
    }
    Some(TransferRequest {
        from,
        timeout_s: timeout_s?,
        queues: queues?,
    })
}

/// The cursor of [`parse_canonical`]. Every method skips white space first.
struct Scan<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn skip_space(&mut self) {
        while matches!(self.input.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// A string without escapes, as its bytes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.pos;
        let end = find_either(self.input, start, b'"', b'\\');
        if self.input.get(end) != Some(&b'"') {
            return None;
        }
        self.pos = end + 1;
        Some(&self.input[start..end])
    }

    /// A number as the JSON reader's grammar has it (`-?D+(.D+)?([eE][+-]?D+)?`), as a float
    /// (an integer converts, as `Value::as_float` does).
    fn number(&mut self) -> Option<f64> {
        self.skip_space();
        let start = self.pos;
        let digits = |scan: &mut Scan<'_>| {
            let first = scan.pos;
            while matches!(scan.input.get(scan.pos), Some(b'0'..=b'9')) {
                scan.pos += 1;
            }
            (scan.pos > first).then_some(())
        };
        let negative = self.input.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let whole_start = self.pos;
        digits(self)?;
        let whole = &self.input[whole_start..self.pos];
        let mut integer = true;
        let mut zero_fraction = true;
        if self.input.get(self.pos) == Some(&b'.') {
            integer = false;
            self.pos += 1;
            let fraction_start = self.pos;
            digits(self)?;
            zero_fraction = self.input[fraction_start..self.pos]
                .iter()
                .all(|&b| b == b'0');
        }
        if !matches!(self.input.get(self.pos), Some(b'e' | b'E'))
            && zero_fraction
            && whole.len() <= 15
        {
            // A whole number, bare or with a zero fraction (`30.0`, as the crate's client
            // writes its timeouts): up to 15 digits are exact in a float, so read them
            // directly instead of parsing the text twice. A bare `-0` is 0.0 as below, and
            // `-0.0` the float's -0.0.
            let magnitude = whole
                .iter()
                .fold(0i64, |value, &b| value * 10 + i64::from(b - b'0'));
            return Some(match (negative, integer) {
                (true, true) => (-magnitude) as f64,
                (true, false) => -(magnitude as f64),
                (false, _) => magnitude as f64,
            });
        }
        if matches!(self.input.get(self.pos), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.input.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            digits(self)?;
        }
        let text = std::str::from_utf8(&self.input[start..self.pos]).ok()?;
        // As the reader: an integer that fits an i64 converts from it (so `-0` is 0.0), a
        // larger one or a float is read as a float.
        match text.parse::<i64>() {
            Ok(n) if integer => Some(n as f64),
            _ => text.parse().ok(),
        }
    }
}

/// Percent-encodes one path segment with the path-safe set of OCaml's `Uri` (unreserved
/// characters, sub-delims, `:` and `@`); every other byte, including `/` and `%`, becomes
/// `%XX`.
pub fn encode_segment(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    encode_segment_into(&mut out, bytes);
    out
}

/// Appends a message id in its path form, `QUEUE/INDEX` (the queue percent-encoded).
fn push_message_id(path: &mut String, id: &MessageId) {
    encode_segment_into(path, id.queue.as_bytes());
    path.push('/');
    path.push_str(itoa::Buffer::new().format(id.index));
}

/// [`encode_segment`], appending to `out`.
fn encode_segment_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(bytes.len());
    for &byte in bytes {
        let safe = byte.is_ascii_alphanumeric() || b"_.-~!$&'()*+,;=:@".contains(&byte);
        if safe {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

/// Decodes `%XX` escapes; an invalid escape (`%zz`, a trailing `%4`) is kept literally and `+`
/// stays `+`, as with OCaml's `Uri.pct_decode`.
pub fn decode_segment(segment: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(segment.len());
    let mut index = 0;
    while index < segment.len() {
        let byte = segment[index];
        if byte == b'%' {
            let high = segment
                .get(index + 1)
                .and_then(|&b| (b as char).to_digit(16));
            let low = segment
                .get(index + 2)
                .and_then(|&b| (b as char).to_digit(16));
            if let (Some(high), Some(low)) = (high, low) {
                out.push((high * 16 + low) as u8);
                index += 3;
                continue;
            }
        }
        out.push(byte);
        index += 1;
    }
    out
}

/// Most segments a path split on the stack may have ([`plain_segments`]); a request path
/// has at most five.
const PLAIN_SEGMENTS_MAX: usize = 8;

/// Splits `path` on `/` into `segments` when no segment needs decoding or dot-segment
/// removal (no `%`, no `.` or `..` segment) and there are at most [`PLAIN_SEGMENTS_MAX`];
/// returns their count. Such a path's decoded segments are its raw ones.
fn plain_segments<'a>(
    path: &'a str,
    segments: &mut [&'a str; PLAIN_SEGMENTS_MAX],
) -> Option<usize> {
    // One pass over the bytes, eight at a time (a `%` search and `str::split` were two
    // passes, and `split`'s searcher cost more than the rest of the routing).
    let bytes = path.as_bytes();
    let mut count = 0;
    let mut start = 0;
    loop {
        let end = find_either(bytes, start, b'/', b'%');
        if bytes.get(end) == Some(&b'%') {
            return None;
        }
        // `/` and `%` are ASCII, so `start..end` lies on character boundaries.
        let piece = path.get(start..end)?;
        if count == PLAIN_SEGMENTS_MAX || piece == "." || piece == ".." {
            return None;
        }
        segments[count] = piece;
        count += 1;
        if end == bytes.len() {
            break;
        }
        start = end + 1;
    }
    Some(count)
}

/// A path split on `/` with empty segments kept and dot segments removed (RFC 3986 §5.2.4,
/// applied to the decoded segments as cohttp's `Uri` does), in raw and decoded form.
///
/// Both borrow from the path where they can (a segment without `%` decodes to itself), so
/// routing a request allocates only the two small vectors and the names it keeps.
struct Segments<'a> {
    raw: Vec<&'a str>,
    decoded: Vec<Cow<'a, [u8]>>,
}

impl<'a> Segments<'a> {
    fn parse(path: &'a str) -> Segments<'a> {
        // Every request path has a handful of segments; one allocation each covers them.
        const SEGMENTS_EXPECTED: usize = 6;
        let mut raw: Vec<&str> = Vec::with_capacity(SEGMENTS_EXPECTED);
        let mut decoded: Vec<Cow<'a, [u8]>> = Vec::with_capacity(SEGMENTS_EXPECTED);
        let last = path.bytes().filter(|&b| b == b'/').count();
        for (position, piece) in path.split('/').enumerate() {
            let value = decode_segment_borrowed(piece.as_bytes());
            let is_dot = *value == *b".";
            let is_dot_dot = *value == *b"..";
            if position > 0 && (is_dot || is_dot_dot) {
                // ".." removes the previous segment, but never the leading empty one that
                // stands for the root.
                if is_dot_dot && raw.len() > 1 {
                    raw.pop();
                    decoded.pop();
                }
                if position == last {
                    raw.push("");
                    decoded.push(Cow::Borrowed(b""));
                }
                continue;
            }
            raw.push(piece);
            decoded.push(value);
        }
        Segments { raw, decoded }
    }
}

/// [`decode_segment`], borrowing the segment when it holds no escape.
fn decode_segment_borrowed(segment: &[u8]) -> Cow<'_, [u8]> {
    if segment.contains(&b'%') {
        Cow::Owned(decode_segment(segment))
    } else {
        Cow::Borrowed(segment)
    }
}

fn is_web_root(segment: &[u8]) -> bool {
    matches!(segment, b"admin" | b"js" | b"css" | b"images")
}

fn int64_segment(segment: &[u8], what: &str) -> Result<i64, RouteError> {
    parse_int64_bytes(segment).ok_or_else(|| {
        RouteError::Malformed(format!(
            "invalid {what}: {:?}",
            String::from_utf8_lossy(segment)
        ))
    })
}

fn float_segment(segment: &[u8]) -> Result<f64, RouteError> {
    std::str::from_utf8(segment)
        .ok()
        .and_then(parse_float)
        .ok_or_else(|| {
            RouteError::Malformed(format!(
                "invalid timeout: {:?}",
                String::from_utf8_lossy(segment)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_support::config(2000))]

        /// The stack-split path routes exactly as the general one, for paths that take it.
        #[test]
        fn plain_paths_route_as_the_general_way(
            method in prop_oneof![Just("GET"), Just("POST")],
            path in "(/(persistent|transient|request|response|ack|list|alive|trace|login|\\.|\\.\\.|%2[ef]|[a-z0-9:._-]{0,4})){0,9}/?",
            body in "[a-z0-9{}\\[\\]\",:]{0,12}",
        ) {
            let body = Bytes::from(body);
            let mut segments = [""; PLAIN_SEGMENTS_MAX];
            if plain_segments(&path, &mut segments).is_some() {
                prop_assert_eq!(
                    Request::route(method, &path, body.clone()),
                    Request::route_general(method, &path, body)
                );
            }
        }

        /// The Transfer fast path reads a body exactly as the JSON reader, or leaves it to it.
        #[test]
        fn canonical_transfer_bodies_read_as_the_general_way(
            from in prop::option::weighted(0.9, prop_oneof![
                Just("\"17\"".to_owned()), Just("\"x\"".to_owned()), Just("null".to_owned()),
                "\"-?[0-9]{0,20}\"",
            ]),
            timeout in prop::option::weighted(0.9, prop_oneof![
                Just("-0".to_owned()), Just("\"5\"".to_owned()), Just("NaN".to_owned()),
                "-?[0-9]{1,20}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
                // Whole numbers with a zero fraction, around the 15 digits read directly.
                "-?[0-9]{1,17}\\.0{1,3}",
            ]),
            // Mostly complete bodies with plain names, which the fast path reads itself.
            queues in prop::option::weighted(
                0.9,
                prop::collection::vec(prop_oneof![3 => "[a-z]{0,3}", 1 => "[a-z\\\\\"]{0,3}"], 0..3),
            ),
            extra in prop::option::of(prop_oneof![
                Just("\"x\":1".to_owned()), Just("\"FROM\":\"1\"".to_owned()),
                Just("\"timeout\":2".to_owned()),
            ]),
            order in 0usize..6,
            space in prop_oneof![Just(""), Just(" "), Just("\n")],
            trailing in prop_oneof![Just(""), Just(" "), Just(","), Just("x")],
        ) {
            let mut members: Vec<String> = Vec::new();
            if let Some(from) = from { members.push(format!("\"from\"{space}:{space}{from}")); }
            if let Some(timeout) = timeout { members.push(format!("\"timeout\":{space}{timeout}")); }
            if let Some(queues) = queues {
                let names: Vec<String> = queues.iter().map(|q| format!("\"{q}\"")).collect();
                members.push(format!("\"queues\":[{}]", names.join(&format!(",{space}"))));
            }
            let count = members.len().max(1);
            members.rotate_left(order % count);
            if order % 2 == 1 { members.reverse(); }
            let slots = members.len() + 1;
            if let Some(extra) = extra { members.insert(order % slots, extra); }
            let body = format!("{space}{{{}}}{trailing}", members.join(&format!("{space},")));
            let general = TransferRequest::parse_general(body.as_bytes());
            match parse_canonical(body.as_bytes()) {
                Some(fast) => {
                    prop_assert_eq!(Ok(&fast), general.as_ref(), "body {}", body);
                    prop_assert_eq!(fast.timeout_s.to_bits(), general.unwrap().timeout_s.to_bits());
                }
                // Anything the general reader accepts without escapes, other keys, quoted or
                // special numbers, or an odd trailer, the fast path must take too.
                None => prop_assert!(
                    general.is_err() || body.contains('\\') || body.contains("\"x\"")
                        || body.contains("FROM") || body.contains("\"5\"") || body.contains("NaN")
                        || body.matches("timeout").count() > 1,
                    "fast path refused {}", body
                ),
            }
        }
    }

    #[test]
    fn the_clients_transfer_bodies_take_the_fast_path() {
        for body in [
            &br#"{"from":"17","timeout":30.0,"queues":["q"]}"#[..],
            br#"{"timeout":5,"queues":[]}"#,
            br#" { "queues" : ["a", "b"] , "timeout" : 1e3 } "#,
        ] {
            let fast = parse_canonical(body).expect("fast path");
            assert_eq!(Ok(fast), TransferRequest::parse_general(body));
        }
        for body in [
            &br#"{"from":"17","timeout":30.0,"queues":["q"],"from":"18"}"#[..],
            br#"{"FROM":"17","timeout":30.0,"queues":["q"]}"#,
            br#"{"timeout":"5","queues":[]}"#,
            br#"{"timeout":5,"queues":["a\u0041"]}"#,
            br#"{"timeout":5,"queues":[]} // comment"#,
            br#"{"timeout":NaN,"queues":[]}"#,
            br#"{"timeout":5}"#,
        ] {
            assert_eq!(
                parse_canonical(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn get(path: &str) -> Result<Request, RouteError> {
        Request::route("GET", path, Bytes::new())
    }

    #[test]
    fn empty_segments_matter() {
        assert_eq!(get("/"), Ok(Request::Diagnostics));
        assert_eq!(get(""), Err(RouteError::NotFound));
        assert_eq!(get("/list"), Err(RouteError::NotFound));
        assert_eq!(
            get("/list/"),
            Ok(Request::List {
                prefix: "".into(),
                alive_only: false
            })
        );
        assert_eq!(
            get("/list/alive"),
            Ok(Request::List {
                prefix: "alive".into(),
                alive_only: false
            })
        );
        assert_eq!(
            get("/list/alive/"),
            Ok(Request::List {
                prefix: "".into(),
                alive_only: true
            })
        );
        assert_eq!(get("/list//x"), Err(RouteError::NotFound));
        assert_eq!(get("/login/"), Ok(Request::Login("".into())));
        assert_eq!(get("/transient/"), Ok(Request::CreateTransient(None)));
    }

    #[test]
    fn names_are_percent_decoded_including_response_from_queue() {
        assert_eq!(
            get("/persistent/a%20b%2Fc%zz%4"),
            Ok(Request::CreatePersistent("a b/c%zz%4".into()))
        );
        let sent = Request::route("POST", "/response/r/q%3Ax/3", Bytes::from_static(b"x"));
        let Ok(Request::Send { message, .. }) = sent else {
            panic!("not a send: {sent:?}")
        };
        assert_eq!(
            message.kind,
            MessageKind::Response {
                request: MessageId::new("q:x".into(), 3)
            }
        );
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(get("/foo/../"), Ok(Request::Diagnostics));
        assert_eq!(get("/list/x/%2e%2e/y"), get("/list/y"));
        assert_eq!(get("/persistent/."), get("/persistent/"));
    }

    #[test]
    fn methods_and_bodies() {
        assert_eq!(
            Request::route("POST", "/login/x", Bytes::new()),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            Request::route("HEAD", "/", Bytes::new()),
            Err(RouteError::NotFound)
        );
        assert_eq!(get("/shutdown"), Err(RouteError::NotFound));
        assert_eq!(
            Request::route("POST", "/shutdown", Bytes::from_static(b"x")),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            Request::route("POST", "/shutdown", Bytes::new()),
            Ok(Request::Shutdown)
        );
    }

    #[test]
    fn numbers_like_ocaml() {
        assert_eq!(
            get("/ack/q/0x10"),
            Ok(Request::Ack(MessageId::new("q".into(), 16)))
        );
        assert!(matches!(get("/ack/q/x"), Err(RouteError::Malformed(_))));
        assert_eq!(
            get("/trace"),
            Ok(Request::Trace {
                from: -1,
                timeout_s: 5.0
            })
        );
        assert_eq!(
            get("/trace/3/5."),
            Ok(Request::Trace {
                from: 3,
                timeout_s: 5.0
            })
        );
        assert!(matches!(get("/trace/3/x"), Err(RouteError::Malformed(_))));
    }

    #[test]
    fn transfer_body_is_parsed_leniently() {
        let parse = |body: &str| TransferRequest::parse(body.as_bytes());
        assert_eq!(
            parse(r#"{"TIMEOUT":"5","Queues":["a"],"extra":null,"from":"0x2"}"#),
            Ok(TransferRequest {
                from: Some(2),
                timeout_s: 5.0,
                queues: vec!["a".into()]
            })
        );
        assert_eq!(parse(r#"{"timeout":1,"queues":[]}"#).unwrap().from, None);
        assert!(parse(r#"{"from":null,"timeout":1,"queues":[]}"#).is_err());
        assert!(parse(r#"{"from":1,"timeout":1,"queues":[]}"#).is_err());
        assert!(parse(r#"{"queues":[]}"#).is_err());
        assert!(parse(r#"{"timeout":1}"#).is_err());
        assert!(parse("").is_err());
        assert!(parse("[]").is_err());
    }

    #[test]
    fn client_paths_round_trip_through_the_router() {
        let requests = [
            Request::Login("message-cli:42".into()),
            Request::CreatePersistent("a/b c?é%".into()),
            Request::CreateTransient(None),
            Request::Destroy("x".into()),
            Request::Ack(MessageId::new("q/1".into(), -3)),
            Request::List {
                prefix: "p".into(),
                alive_only: true,
            },
            Request::Trace {
                from: 4,
                timeout_s: 0.5,
            },
            Request::Transfer(TransferRequest {
                from: Some(9),
                timeout_s: 30.0,
                queues: vec!["\"q\"".into()],
            }),
        ];
        for request in requests {
            let http = request.to_http();
            assert_eq!(
                Request::route(http.method, &http.path, http.body),
                Ok(request)
            );
        }
    }

    #[test]
    fn encodes_like_the_ocaml_client() {
        assert_eq!(encode_segment(b"reply to"), "reply%20to");
        assert_eq!(encode_segment(b"xapi:123"), "xapi:123");
        assert_eq!(encode_segment(b"q?x#y%"), "q%3Fx%23y%25");
        assert_eq!(encode_segment("é".as_bytes()), "%C3%A9");
        let transfer = TransferRequest {
            from: None,
            timeout_s: 30.0,
            queues: vec!["message-cli:1234".into()],
        };
        assert_eq!(
            transfer.encode(),
            br#"{"timeout":30.0,"queues":["message-cli:1234"]}"#
        );
    }
}
