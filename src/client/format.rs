//! The text `message-cli` prints, as pure functions of decoded replies (`protocol.md` §4.4).
//!
//! Nothing here reads a clock: ages are computed against the switch's own `current_time`, and
//! trace times relative to the first event printed, so the same input always gives the same
//! text (which is what the snapshot tests rely on).
//!
//! Deliberate differences from the original `message-cli`:
//! - an age under one second prints as `just now` instead of a bare `ago`, and an age that
//!   would be negative (a clock difference after a restart) also prints as `just now`;
//! - `tail` prints the processing time in seconds (the original divided twice and printed
//!   `0.0` for anything under 1000 s), and control characters in payloads are escaped so that
//!   one event stays one line;
//! - `- R appears to have crashed` is indented like its sibling lines (the original had one
//!   extra space), and `Temporary queues containing replies:` is preceded by an empty line
//!   like every other section.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::protocol::json::{self, Value};
use crate::protocol::{
    Diagnostics, MessageKind, Origin, QueueDiagnostics, QueueName, TraceEvent, TraceMessage,
};

/// A queue whose listener's long poll expired more than this long ago (in ns) is shown as
/// crashed or deadlocked, as in the original.
pub const ASSUME_DEAD_AFTER_NS: i64 = 30_000_000_000;

/// Payload and parameter lines of `diagnostics` are cut to this many bytes unless verbose.
pub const PAYLOAD_BYTES_MAX: usize = 70;

const SECOND_NS: i64 = 1_000_000_000;
const MINUTE_NS: i64 = 60 * SECOND_NS;
const HOUR_NS: i64 = 60 * MINUTE_NS;
const DAY_NS: i64 = 24 * HOUR_NS;

/// A duration in ns as the original's `time` helper renders an age: `1 day, 2 hours, 1 min
/// and 5 seconds ago`, zero parts left out; `just now` under one second or when negative.
pub fn ago(span_ns: i64) -> String {
    if span_ns < SECOND_NS {
        return "just now".to_owned();
    }
    let parts: Vec<String> = [
        (span_ns / DAY_NS, "day"),
        (span_ns % DAY_NS / HOUR_NS, "hour"),
        (span_ns % HOUR_NS / MINUTE_NS, "min"),
        (span_ns % MINUTE_NS / SECOND_NS, "second"),
    ]
    .into_iter()
    .filter(|(count, _)| *count != 0)
    .map(|(count, unit)| match count {
        1 => format!("1 {unit}"),
        _ => format!("{count} {unit}s"),
    })
    .collect();
    let text = match parts.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => unreachable!("a span of at least one second has a non-zero part"),
    };
    format!("{text} ago")
}

/// `message-cli list`: one name per line, in the switch's order.
pub fn list(names: &[QueueName]) -> String {
    names.iter().map(|name| format!("{name}\n")).collect()
}

/// `message-cli diagnostics`: the services and their queued requests, classified as running,
/// never started or crashed, then the reply queues worth showing. `verbose` disables the
/// cutting of payloads to [`PAYLOAD_BYTES_MAX`] bytes.
pub fn diagnostics(diagnostics: &Diagnostics, verbose: bool) -> String {
    let view = DiagnosticsView {
        diagnostics,
        verbose,
    };
    let now = diagnostics.current_time;
    let mut out = String::new();
    let uptime = now.saturating_sub(diagnostics.start_time);
    let _ = writeln!(out, "Switch started {}", ago(uptime));
    let services = &diagnostics.permanent_queues;
    if services.is_empty() {
        out.push_str("There are no known services (yet).\n");
    } else {
        let with_status = |wanted: fn(&Status) -> bool| -> Vec<&(QueueName, QueueDiagnostics)> {
            services
                .iter()
                .filter(|(_, queue)| wanted(&classify(queue, now)))
                .collect()
        };
        let running = with_status(|s| matches!(s, Status::Running));
        let not_started = with_status(|s| matches!(s, Status::NotStarted));
        let crashed = with_status(|s| matches!(s, Status::Crashed(_)));
        if running.is_empty() {
            out.push_str("No known services are running.\n");
        } else {
            out.push_str("\nThe following services are running:\n");
            running.iter().for_each(|q| view.queue(&mut out, q));
        }
        if !not_started.is_empty() {
            out.push_str("\nThe following services have been called but have never started:\n");
            not_started.iter().for_each(|q| view.queue(&mut out, q));
        }
        if !crashed.is_empty() {
            out.push_str("\nThe following services have crashed or deadlocked:\n");
            crashed.iter().for_each(|q| view.queue(&mut out, q));
        }
    }
    // An empty reply queue that a queued request names is just a caller waiting: shown under
    // its request already. Every other reply queue is worth a look.
    let expected: BTreeSet<&QueueName> = services
        .iter()
        .flat_map(|(_, queue)| &queue.queue_contents)
        .filter_map(|(_, entry)| match &entry.message.kind {
            MessageKind::Request { reply_to } => Some(reply_to),
            MessageKind::Response { .. } => None,
        })
        .collect();
    let shown: Vec<_> = diagnostics
        .transient_queues
        .iter()
        .filter(|(name, queue)| !expected.contains(name) || !queue.queue_contents.is_empty())
        .collect();
    if !shown.is_empty() {
        out.push_str("\nTemporary queues containing replies:\n");
        shown.iter().for_each(|q| view.queue(&mut out, q));
    }
    out
}

/// Renders `message-cli tail` rows. Times are relative to the first event this value
/// printed, so keep one `Tail` for the whole of a `--follow` session.
#[derive(Clone, Debug, Default)]
pub struct Tail {
    start: Option<f64>,
}

impl Tail {
    /// A tail that has printed nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One row per event: relative time, sender, arrow, queue, arrow, receiver, processing
    /// time in seconds, and `QUEUE.N:PAYLOAD` (or `QUEUE.N:ack`), in cells of widths 5, 15,
    /// 4, 30, 4, 15, 5 and unbounded. A longer cell keeps its last characters; each cell is
    /// followed by one space.
    pub fn rows(&mut self, events: &[(i64, TraceEvent)]) -> String {
        let mut out = String::new();
        for (_, event) in events {
            let start = *self.start.get_or_insert(event.time);
            let endpoint = |who: &Option<crate::protocol::SessionToken>| {
                who.as_ref().map_or_else(|| "-".to_owned(), |w| w.to_text())
            };
            let queue = event.queue.to_text();
            let (from, arrow_in, arrow_out, to, message) = match &event.message {
                TraceMessage::Message(id, message) => {
                    let text = format!("{id}:{}", printable(&message.payload));
                    match message.kind {
                        MessageKind::Request { .. } => (
                            endpoint(&event.input),
                            "->",
                            "->",
                            endpoint(&event.output),
                            text,
                        ),
                        MessageKind::Response { .. } => (
                            endpoint(&event.output),
                            "<-",
                            "<-",
                            endpoint(&event.input),
                            text,
                        ),
                    }
                }
                TraceMessage::Ack(id) => (
                    endpoint(&event.input),
                    "->",
                    "",
                    String::new(),
                    format!("{id}:ack"),
                ),
            };
            let processing = event
                .processing_time
                .map(|ns| format!("{:.1}", ns as f64 / 1e9))
                .unwrap_or_default();
            let cells = [
                (format!("{:.1}", event.time - start), Some(5)),
                (from, Some(15)),
                (arrow_in.to_owned(), Some(4)),
                (queue, Some(30)),
                (arrow_out.to_owned(), Some(4)),
                (to, Some(15)),
                (processing, Some(5)),
                (message, None),
            ];
            for (text, width) in cells {
                out.push_str(&fit(&text, width));
                out.push(' ');
            }
            out.push('\n');
        }
        out
    }
}

/// The `from` for the next trace request after `events`: one past the largest id seen, or
/// `from` unchanged when there were none.
pub fn next_trace_from(events: &[(i64, TraceEvent)], from: i64) -> i64 {
    events
        .iter()
        .map(|(id, _)| id.saturating_add(1))
        .max()
        .unwrap_or(from)
}

/// `message-cli mscgen`: the trace as an mscgen message sequence chart.
pub fn mscgen(events: &[(i64, TraceEvent)]) -> String {
    let mut names: BTreeSet<&[u8]> = BTreeSet::new();
    for (_, event) in events {
        names.insert(event.queue.as_bytes());
        names.extend(event.input.iter().map(|s| s.as_bytes()));
        names.extend(event.output.iter().map(|s| s.as_bytes()));
    }
    let quote = |name: &[u8]| format!("\"{}\"", String::from_utf8_lossy(name));
    let mut out = String::from("msc {\n");
    let header: Vec<String> = names.iter().map(|name| quote(name)).collect();
    let _ = writeln!(out, "{};", header.join(","));
    for (_, event) in events {
        let TraceMessage::Message(_, message) = &event.message else {
            continue; // Acks are not drawn.
        };
        let label = ocaml_escaped(&summarise_payload(&message.payload));
        let queue = quote(event.queue.as_bytes());
        let mut arrow = |left: String, arrow: &str, right: String| {
            let _ = writeln!(out, "{left} {arrow} {right} [ label = \"{label}\" ] ;");
        };
        match message.kind {
            MessageKind::Response { .. } => {
                if let Some(input) = &event.input {
                    arrow(queue.clone(), "<<", quote(input.as_bytes()));
                }
            }
            MessageKind::Request { .. } => {
                if let Some(output) = &event.output {
                    arrow(queue.clone(), "=>", quote(output.as_bytes()));
                }
                if let Some(input) = &event.input {
                    arrow(quote(input.as_bytes()), "=>", queue.clone());
                }
            }
        }
    }
    out.push_str("}\n");
    out
}

/// OCaml's `String.escaped`: `"` `\` and `\n \t \r \b` backslash-escaped, other bytes outside
/// `' '..='~'` as `\DDD` (decimal).
pub fn ocaml_escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            0x08 => out.push_str("\\b"),
            b' '..=b'~' => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\{byte:03}");
            }
        }
    }
    out
}

/// How a queue's listener is doing, judged from when its next poll is expected.
enum Status {
    NotStarted,
    Crashed(i64),
    Running,
}

fn classify(queue: &QueueDiagnostics, now: i64) -> Status {
    match queue.next_transfer_expected {
        None => Status::NotStarted,
        Some(expected) if expected.saturating_add(ASSUME_DEAD_AFTER_NS) < now => {
            Status::Crashed(expected)
        }
        Some(_) => Status::Running,
    }
}

struct DiagnosticsView<'a> {
    diagnostics: &'a Diagnostics,
    verbose: bool,
}

impl DiagnosticsView<'_> {
    fn now(&self) -> i64 {
        self.diagnostics.current_time
    }

    fn age(&self, time: i64) -> String {
        ago(self.now().saturating_sub(time))
    }

    fn queue(&self, out: &mut String, (name, queue): &&(QueueName, QueueDiagnostics)) {
        let status = match classify(queue, self.now()) {
            Status::Crashed(expected) => {
                format!(": service crashed or deadlocked {}", self.age(expected))
            }
            _ => String::new(),
        };
        let _ = writeln!(out, "- {name}{status}");
        let mut entries: Vec<_> = queue.queue_contents.iter().collect();
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        for (id, entry) in entries {
            let origin = match &entry.origin {
                Origin::Name(session) => session.to_text(),
                Origin::Anonymous(connection) => format!("anonymous-{connection}"),
            };
            let _ = writeln!(
                out,
                "    {}: request from: {origin} sent {}",
                id.index,
                self.age(entry.time)
            );
            self.payload(out, &entry.message.payload);
            if let MessageKind::Request { reply_to } = &entry.message.kind {
                self.caller(out, reply_to);
            }
        }
    }

    fn payload(&self, out: &mut String, payload: &[u8]) {
        match jsonrpc_call(payload) {
            Some((method, params)) => {
                let _ = writeln!(out, "      - {method}");
                for param in params {
                    let _ = writeln!(out, "        - {}", self.trim(param.as_bytes()));
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "      - {}",
                    self.trim(ocaml_escaped(payload).as_bytes())
                );
            }
        }
    }

    fn caller(&self, out: &mut String, reply_to: &QueueName) {
        let reply_queue = self
            .diagnostics
            .transient_queues
            .iter()
            .find(|(name, _)| name == reply_to);
        let line = match reply_queue.map(|(_, queue)| classify(queue, self.now())) {
            Some(Status::NotStarted) => format!("{reply_to} has not started"),
            Some(Status::Crashed(expected)) => {
                format!("{reply_to} crashed or deadlocked {}", self.age(expected))
            }
            Some(Status::Running) => format!("{reply_to} is waiting for a response"),
            None => format!("{reply_to} appears to have crashed"),
        };
        let _ = writeln!(out, "      - {line}");
    }

    fn trim(&self, text: &[u8]) -> String {
        let cut = if self.verbose || text.len() < PAYLOAD_BYTES_MAX {
            text
        } else {
            &text[..PAYLOAD_BYTES_MAX]
        };
        String::from_utf8_lossy(cut).into_owned()
    }
}

/// Fits a cell to `width` characters: a longer text keeps its end, a shorter one is padded
/// on the right.
fn fit(text: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return text.to_owned();
    };
    let length = text.chars().count();
    if length > width {
        text.chars().skip(length - width).collect()
    } else {
        format!("{text}{}", " ".repeat(width - length))
    }
}

/// A payload as one line of text: lossy UTF-8 with control characters escaped.
fn printable(payload: &[u8]) -> String {
    let mut out = String::with_capacity(payload.len());
    for c in String::from_utf8_lossy(payload).chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// The mscgen label: the method of a JSON-RPC call, `OK`/`FAILURE` for a JSON-RPC response,
/// otherwise the first 10 bytes.
fn summarise_payload(payload: &[u8]) -> Vec<u8> {
    if let Some((method, _)) = jsonrpc_call(payload) {
        return method.into_bytes();
    }
    if let Some(success) = jsonrpc_response(payload) {
        return if success {
            b"OK".to_vec()
        } else {
            b"FAILURE".to_vec()
        };
    }
    payload[..payload.len().min(10)].to_vec()
}

/// Parses a JSON-RPC call as rpclib's `Jsonrpc.call_of_string` does: an object with a string
/// `method`, `params` (an array; for `"jsonrpc":"2.0"` also absent, null or an object) and an
/// `id` that is an integer or a string. Returns the method and each parameter printed back
/// as compact JSON.
fn jsonrpc_call(payload: &[u8]) -> Option<(String, Vec<String>)> {
    let value = rpc_value(payload)?;
    let method = String::from_utf8_lossy(field(&value, "method")?.as_bytes()?).into_owned();
    let version_2 = match field(&value, "jsonrpc") {
        None => false,
        Some(Value::String(v)) if v == b"2.0" => true,
        Some(_) => return None,
    };
    let params = match (field(&value, "params"), version_2) {
        (Some(Value::Array(items)), _) => items.iter().collect(),
        (None | Some(Value::Null), true) => Vec::new(),
        (Some(object @ Value::Object(_)), true) => vec![object],
        _ => return None,
    };
    match field(&value, "id") {
        Some(Value::Int(_) | Value::String(_)) => {}
        _ => return None,
    }
    let params = params.into_iter().map(compact_json).collect();
    Some((method, params))
}

/// Parses a JSON-RPC response as rpclib's `Jsonrpc.response_of_string` does and says whether
/// it reports success.
fn jsonrpc_response(payload: &[u8]) -> Option<bool> {
    let value = rpc_value(payload)?;
    if !matches!(field(&value, "id")?, Value::Int(_) | Value::String(_)) {
        return None;
    }
    match field(&value, "jsonrpc") {
        None => match (field(&value, "result")?, field(&value, "error")?) {
            (_, Value::Null) => Some(true),
            (Value::Null, _) => Some(false),
            _ => None,
        },
        Some(Value::String(v)) if v == b"2.0" => {
            match (field(&value, "result"), field(&value, "error")) {
                (Some(_), None) => Some(true),
                (None, Some(Value::Object(_))) => Some(false),
                _ => None,
            }
        }
        Some(_) => None,
    }
}

/// A payload as rpclib sees it: valid JSON whose integers all fit in an int64 (rpclib fails
/// on the whole document otherwise).
fn rpc_value(payload: &[u8]) -> Option<Value> {
    let value = json::parse(payload).ok()?;
    (!has_int_literal(&value)).then_some(value)
}

fn has_int_literal(value: &Value) -> bool {
    match value {
        Value::IntLiteral(_) => true,
        Value::Array(items) => items.iter().any(has_int_literal),
        Value::Object(members) => members.iter().any(|(_, v)| has_int_literal(v)),
        _ => false,
    }
}

/// An object member as OCaml's `List.assoc` finds it: the first with exactly this key.
fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(members) => members
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Compact JSON as `Jsonrpc.to_string` prints an `Rpc.t`.
fn compact_json(value: &Value) -> String {
    let mut out = Vec::new();
    json::write_value(&mut out, value);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_the_original() {
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(999_999_999), "just now");
        assert_eq!(ago(-5 * SECOND_NS), "just now");
        assert_eq!(ago(5 * SECOND_NS), "5 seconds ago");
        assert_eq!(ago(SECOND_NS), "1 second ago");
        assert_eq!(
            ago(HOUR_NS + 2 * MINUTE_NS + 3 * SECOND_NS),
            "1 hour, 2 mins and 3 seconds ago"
        );
        assert_eq!(ago(2 * DAY_NS + MINUTE_NS), "2 days and 1 min ago");
        assert_eq!(
            ago(DAY_NS + HOUR_NS + MINUTE_NS + SECOND_NS + 5),
            "1 day, 1 hour, 1 min and 1 second ago"
        );
    }

    #[test]
    fn escaping_matches_ocaml() {
        assert_eq!(
            ocaml_escaped(b"a\"b\\c\n\t\r\x08'"),
            "a\\\"b\\\\c\\n\\t\\r\\b'"
        );
        assert_eq!(
            ocaml_escaped(&[0, 0x7f, 0xc3, 0xa9]),
            "\\000\\127\\195\\169"
        );
    }

    #[test]
    fn jsonrpc_detection_follows_rpclib() {
        let call = br#"{"method":"VM.start","params":[{"x":1.5,"y":[true,null]},"s"],"id":3}"#;
        assert_eq!(
            jsonrpc_call(call),
            Some((
                "VM.start".to_owned(),
                vec![
                    r#"{"x":1.5,"y":[true,null]}"#.to_owned(),
                    r#""s""#.to_owned()
                ]
            ))
        );
        assert_eq!(
            jsonrpc_call(br#"{"method":"m","params":[]}"#),
            None,
            "id is required"
        );
        assert_eq!(jsonrpc_call(br#"{"method":"m","params":{},"id":1}"#), None);
        assert_eq!(
            jsonrpc_call(br#"{"jsonrpc":"2.0","method":"m","params":{"a":1},"id":"x"}"#),
            Some(("m".to_owned(), vec![r#"{"a":1}"#.to_owned()]))
        );
        assert_eq!(
            jsonrpc_call(br#"{"method":"m","params":[99999999999999999999],"id":1}"#),
            None,
            "an int64 overflow fails the whole parse"
        );
        assert_eq!(
            jsonrpc_response(br#"{"result":1,"error":null,"id":1}"#),
            Some(true)
        );
        assert_eq!(
            jsonrpc_response(br#"{"result":null,"error":"e","id":1}"#),
            Some(false)
        );
        assert_eq!(jsonrpc_response(br#"{"result":1,"error":2,"id":1}"#), None);
        assert_eq!(
            jsonrpc_response(br#"{"jsonrpc":"2.0","error":{"code":1,"message":"m"},"id":1}"#),
            Some(false)
        );
        assert_eq!(summarise_payload(b"hello world, long"), b"hello worl");
    }

    #[test]
    fn cells_keep_their_end() {
        assert_eq!(fit("message-cli:4242", Some(15)), "essage-cli:4242");
        assert_eq!(fit("foo", Some(5)), "foo  ");
        assert_eq!(fit("anything", None), "anything");
    }
}
