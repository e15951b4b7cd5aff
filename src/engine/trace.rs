//! The trace: a ring of recent events (sends, acks, transfers), bounded in entries and bytes.
//!
//! Recording never parses a payload (protocol.md part A.12): payloads are kept as shared
//! buffers and only compacted the reference's way (JSON strings cut to `truncate` bytes plus
//! `…`) when someone reads the trace.

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocol::json;
use crate::protocol::{Message, MessageId, QueueName, SessionToken, TraceEvent, TraceMessage};

use super::time::Timestamp;

/// Payloads longer than this are cut when recorded instead of being kept whole for read-time
/// JSON compaction, so that one huge message cannot pin megabytes in the ring.
pub const TRACE_PAYLOAD_KEPT_BYTES_MAX: usize = 64 * 1024;

/// Fixed per-event overhead counted against the byte budget, beyond payload and names.
const EVENT_OVERHEAD_BYTES: usize = 96;

/// What a recorded event is about, before compaction.
#[derive(Clone, Debug)]
pub struct TraceRecord {
    /// When it happened.
    pub time: Timestamp,
    /// The sending session.
    pub input: Option<SessionToken>,
    /// The receiving session.
    pub output: Option<SessionToken>,
    /// The message or ack.
    pub message: TraceMessage,
    /// ns from a request being stored to its response being delivered.
    pub processing_time: Option<i64>,
}

impl TraceRecord {
    /// The queue concerned: the one its message id names (kept once, not beside the id).
    pub fn queue(&self) -> &QueueName {
        match &self.message {
            TraceMessage::Message(id, _) | TraceMessage::Ack(id) => &id.queue,
        }
    }
}

struct Recorded {
    record: TraceRecord,
    /// The payload was cut when recorded, so it is shown as is.
    payload_cut: bool,
    bytes: usize,
}

/// The bounded ring of trace events.
pub struct TraceRing {
    /// The held events, oldest first: the last has id `next_id - 1` (ids are consecutive,
    /// so they are not stored).
    events: VecDeque<Recorded>,
    next_id: i64,
    bytes: usize,
    entries_max: usize,
    bytes_max: usize,
    truncate_bytes: usize,
    evicted_for_entries: u64,
    evicted_for_bytes: u64,
}

impl TraceRing {
    /// An empty ring keeping at most `entries_max` events and about `bytes_max` bytes; strings
    /// of at least `truncate_bytes` bytes are cut when read.
    pub fn new(entries_max: usize, bytes_max: usize, truncate_bytes: usize) -> Self {
        Self {
            events: VecDeque::new(),
            next_id: 0,
            bytes: 0,
            entries_max: entries_max.max(1),
            bytes_max,
            truncate_bytes,
            evicted_for_entries: 0,
            evicted_for_bytes: 0,
        }
    }

    /// Events evicted (oldest first) because the ring held its most events.
    pub fn evicted_for_entries(&self) -> u64 {
        self.evicted_for_entries
    }

    /// Events evicted (oldest first) because the ring held more than its byte budget.
    pub fn evicted_for_bytes(&self) -> u64 {
        self.evicted_for_bytes
    }

    /// The id the next recorded event will get (the number of events ever recorded).
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    /// Bytes currently held, as counted against the budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Events currently held.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Records an event, evicting the oldest ones beyond the bounds (the newest is always
    /// kept).
    #[inline]
    pub fn record(&mut self, mut record: TraceRecord) {
        let mut payload_cut = false;
        if let TraceMessage::Message(_, message) = &mut record.message {
            if message.payload.len() > TRACE_PAYLOAD_KEPT_BYTES_MAX {
                message.payload = Bytes::from(cut(&message.payload, self.truncate_bytes));
                payload_cut = true;
            }
        }
        let payload_bytes = match &record.message {
            TraceMessage::Message(_, message) => message.payload.len(),
            TraceMessage::Ack(_) => 0,
        };
        let bytes = EVENT_OVERHEAD_BYTES
            + payload_bytes
            + record.queue().len()
            + record.input.as_ref().map_or(0, SessionToken::len)
            + record.output.as_ref().map_or(0, SessionToken::len);
        self.bytes += bytes;
        self.events.push_back(Recorded {
            record,
            payload_cut,
            bytes,
        });
        self.next_id += 1;
        while self.events.len() > 1
            && (self.events.len() > self.entries_max || self.bytes > self.bytes_max)
        {
            if self.events.len() > self.entries_max {
                self.evicted_for_entries += 1;
            } else {
                self.evicted_for_bytes += 1;
            }
            if let Some(evicted) = self.events.pop_front() {
                self.bytes -= evicted.bytes;
            }
        }
    }

    /// Every held event with an id ≥ `from`, ascending, with payloads compacted as the
    /// reference shows them.
    pub fn events_from(&self, from: i64) -> Vec<(i64, TraceEvent)> {
        self.held_from(from)
            .map(|(id, recorded)| (id, self.render(recorded, Payloads::Compacted)))
            .collect()
    }

    /// Every held event with an id ≥ `from`, ascending, with payloads as recorded (only
    /// those over [`TRACE_PAYLOAD_KEPT_BYTES_MAX`], cut when recorded): for a reader inside
    /// the switch that never shows a payload (the console's sampler), so that no payload is
    /// parsed and rewritten for it. Sharing a payload costs a reference count.
    pub fn events_as_recorded_from(&self, from: i64) -> Vec<(i64, TraceEvent)> {
        self.held_from(from)
            .map(|(id, recorded)| (id, self.render(recorded, Payloads::AsRecorded)))
            .collect()
    }

    /// The held events with an id ≥ `from`, with their ids.
    fn held_from(&self, from: i64) -> impl Iterator<Item = (i64, &Recorded)> {
        let first_held = self.first_held_id();
        let skip = usize::try_from(from.saturating_sub(first_held)).unwrap_or(0);
        // Skipped on the ring's own iterator, which jumps there at once.
        let first_read = first_held.saturating_add(i64::try_from(skip).unwrap_or(i64::MAX));
        self.events
            .iter()
            .skip(skip)
            .zip(first_read..)
            .map(|(recorded, id)| (id, recorded))
    }

    /// The id of the oldest held event (`next_id` when none is held).
    fn first_held_id(&self) -> i64 {
        // The ring never holds more events than were recorded.
        self.next_id - i64::try_from(self.events.len()).unwrap_or(i64::MAX)
    }

    fn render(&self, recorded: &Recorded, payloads: Payloads) -> TraceEvent {
        let record = &recorded.record;
        let message = match (&record.message, payloads) {
            (TraceMessage::Message(id, message), Payloads::Compacted) if !recorded.payload_cut => {
                TraceMessage::Message(
                    id.clone(),
                    Message {
                        payload: Bytes::from(compact_payload(
                            &message.payload,
                            self.truncate_bytes,
                        )),
                        kind: message.kind.clone(),
                    },
                )
            }
            (other, _) => other.clone(),
        };
        TraceEvent {
            time: record.time.unix_seconds(),
            input: record.input.clone(),
            queue: record.queue().clone(),
            output: record.output.clone(),
            message,
            processing_time: record.processing_time,
        }
    }
}

/// How [`TraceRing`] renders payloads for a reader.
#[derive(Clone, Copy)]
enum Payloads {
    /// As the reference shows them on the wire.
    Compacted,
    /// As kept, shared.
    AsRecorded,
}

/// A trace record for a message.
pub fn message_record(
    time: Timestamp,
    input: Option<SessionToken>,
    output: Option<SessionToken>,
    id: &MessageId,
    message: &Message,
    processing_time: Option<i64>,
) -> TraceRecord {
    TraceRecord {
        time,
        input,
        output,
        message: TraceMessage::Message(id.clone(), message.clone()),
        processing_time,
    }
}

/// The reference's compaction: a payload that parses as JSON is re-serialised with every
/// string and object key of at least `truncate` bytes cut to `truncate` bytes plus `…`; any
/// other payload is cut the same way as one string.
pub fn compact_payload(payload: &[u8], truncate: usize) -> Vec<u8> {
    match json::parse(payload) {
        Ok(value) => {
            let mut out = Vec::with_capacity(payload.len().min(truncate * 4));
            json::write_value_mapped(&mut out, &value, &|bytes| {
                if bytes.len() < truncate {
                    Cow::Borrowed(bytes)
                } else {
                    Cow::Owned(cut(bytes, truncate))
                }
            });
            out
        }
        Err(_) => cut(payload, truncate),
    }
}

fn cut(bytes: &[u8], truncate: usize) -> Vec<u8> {
    if bytes.len() < truncate {
        return bytes.to_vec();
    }
    let mut out = bytes[..truncate].to_vec();
    out.extend_from_slice("…".as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(queue: &str) -> TraceRecord {
        TraceRecord {
            time: Timestamp::default(),
            input: None,
            output: None,
            message: TraceMessage::Ack(MessageId::new(queue.into(), 0)),
            processing_time: None,
        }
    }

    #[test]
    fn ring_is_bounded_in_entries_and_bytes() {
        let mut ring = TraceRing::new(3, 10_000, 256);
        for _ in 0..5 {
            ring.record(ack("q"));
        }
        assert_eq!(ring.event_count(), 3);
        assert_eq!(ring.next_id(), 5);
        let ids: Vec<i64> = ring.events_from(0).iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [2, 3, 4]);
        assert_eq!(ring.events_from(4).len(), 1);
        assert_eq!(ring.events_from(5).len(), 0);

        let mut small = TraceRing::new(100, 2 * EVENT_OVERHEAD_BYTES + 10, 256);
        for _ in 0..5 {
            small.record(ack("q"));
        }
        assert_eq!(small.event_count(), 2);
        assert!(small.bytes() <= 2 * EVENT_OVERHEAD_BYTES + 10);
        // Each eviction is counted against the limit that caused it; the oldest goes first.
        assert_eq!(
            (ring.evicted_for_entries(), ring.evicted_for_bytes()),
            (2, 0)
        );
        assert_eq!(
            (small.evicted_for_entries(), small.evicted_for_bytes()),
            (0, 3)
        );
        let ids: Vec<i64> = small.events_from(0).iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [3, 4]);
    }

    #[test]
    fn as_recorded_reads_share_payloads_and_differ_from_wire_reads_only_in_them() {
        let mut ring = TraceRing::new(10, 1 << 20, 4);
        let id = MessageId::new("q".into(), 7);
        let payload = Bytes::from_static(br#"{ "method": "VM.start" }"#);
        let message = Message {
            payload: payload.clone(),
            kind: crate::protocol::MessageKind::Request {
                reply_to: "caller".into(),
            },
        };
        ring.record(message_record(
            Timestamp::from_unix_nanos(1),
            None,
            None,
            &id,
            &message,
            None,
        ));
        ring.record(ack("q"));
        let wire = ring.events_from(1);
        let recorded = ring.events_as_recorded_from(0);
        assert_eq!(recorded.len(), 2);
        assert_eq!(recorded[1].0, 1);
        assert_eq!(wire, recorded[1..]);
        let TraceMessage::Message(_, read) = &recorded[0].1.message else {
            panic!("a message event");
        };
        assert_eq!(
            read.payload.as_ptr(),
            payload.as_ptr(),
            "shared, not copied"
        );
        let TraceMessage::Message(_, compacted) = &ring.events_from(0)[0].1.message else {
            panic!("a message event");
        };
        assert_eq!(compacted.payload, r#"{"meth…":"VM.s…"}"#.as_bytes());
    }

    #[test]
    fn compaction_matches_the_reference() {
        assert_eq!(compact_payload(b"abcdef", 3), "abc…".as_bytes());
        assert_eq!(compact_payload(b"ab", 3), b"ab");
        assert_eq!(compact_payload(b"abc", 3), "abc…".as_bytes());
        assert_eq!(
            compact_payload(
                br#"{ "method" : "VM.start", "params": [1, 2.0, "xyzw"] }"#,
                4
            ),
            r#"{"meth…":"VM.s…","para…":[1,2.0,"xyzw…"]}"#.as_bytes()
        );
    }
}
