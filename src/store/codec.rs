//! The on-disk format: file headers, checksummed records, and the binary encoding of engine
//! events (docs/persistence.md describes it for operators).
//!
//! Every file (journal segment or snapshot) starts with a 24-byte header:
//!
//! ```text
//! magic "MSWITCH\0" (8) | version u16 | kind u16 (1 journal, 2 snapshot) | generation u64
//! | crc32c of the preceding 20 bytes u32
//! ```
//!
//! followed by records:
//!
//! ```text
//! magic "MSWR" (4) | length u32 | sequence u64 | crc32c(length, sequence, payload) u32
//! | payload (length bytes)
//! ```
//!
//! All integers are little-endian. The record magic and checksum together make a valid record
//! at a random offset vanishingly unlikely (2^-64), which recovery relies on when it looks past
//! a damaged record for intact ones. The checksum covers the length, so a run of zero bytes
//! (a file extended by a crash but never written) is never a valid record.

use bytes::Bytes;

use super::crc::Crc32c;
use crate::engine::{Event, Timestamp};
use crate::protocol::{Message, MessageId, MessageKind, Origin, QueueName, SessionToken};

/// The first eight bytes of every journal and snapshot file.
pub(crate) const FILE_MAGIC: [u8; 8] = *b"MSWITCH\0";
/// The format version this code writes and reads.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Size of a file header.
pub(crate) const FILE_HEADER_BYTES: usize = 24;
/// The first four bytes of every record.
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"MSWR";
/// Size of a record header.
pub(crate) const RECORD_HEADER_BYTES: usize = 20;

/// What a file holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FileKind {
    /// A journal segment: batches of events appended as they happen.
    Journal,
    /// A snapshot: batches of events that rebuild the state, then an end record.
    Snapshot,
}

impl FileKind {
    fn code(self) -> u16 {
        match self {
            FileKind::Journal => 1,
            FileKind::Snapshot => 2,
        }
    }
}

/// The decoded payload of a record.
#[derive(Clone, PartialEq, Debug)]
pub(crate) enum RecordBody {
    /// Events to apply in order, and the lowest value the id counter may have after them
    /// (the writer reserves ids ahead, see `store::ID_RESERVE`).
    Batch {
        /// The id counter is raised to at least this.
        id_floor: i64,
        /// The events.
        events: Vec<Event>,
    },
    /// The last record of a snapshot: a snapshot without it is incomplete.
    SnapshotEnd {
        /// The id counter when the snapshot was taken.
        next_index: i64,
        /// How many events the snapshot's batches hold, as a cross-check.
        events: u64,
        /// The sequence number of the last journal record the snapshot covers; the first
        /// record of the journal after it must be the next one.
        journal_seq: u64,
    },
}

const BODY_BATCH: u8 = 1;
const BODY_SNAPSHOT_END: u8 = 2;

const EVENT_QUEUE_CREATED: u8 = 1;
const EVENT_QUEUE_REMOVED: u8 = 2;
const EVENT_MESSAGE_STORED: u8 = 3;
const EVENT_MESSAGE_ACKED: u8 = 4;

/// Why a file header is unusable.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    /// Fewer than [`FILE_HEADER_BYTES`] bytes.
    #[error("the file header is incomplete")]
    Short,
    /// Not a message-switch file, or a damaged header.
    #[error("the file header is damaged (bad magic or checksum)")]
    Damaged,
    /// Written by a newer (or unknown) version of the format.
    #[error("unsupported format version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    /// A valid header of the wrong kind of file.
    #[error("the header says this is a {found:?} file, not a {expected:?} file")]
    WrongKind {
        /// The kind the name implies.
        expected: FileKind,
        /// The kind the header holds.
        found: FileKind,
    },
    /// A valid header with a generation that does not match the file name.
    #[error("the header holds generation {found}, the file name says {expected}")]
    WrongGeneration {
        /// The generation in the name.
        expected: u64,
        /// The generation in the header.
        found: u64,
    },
}

/// Why the bytes at an offset are not a valid record.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub(crate) enum RecordFault {
    /// The header or the payload runs past the end of the file.
    #[error("the record is cut short by the end of the file")]
    Truncated,
    /// The record magic is wrong.
    #[error("no record starts here (bad record magic)")]
    BadMagic,
    /// The checksum does not match.
    #[error("checksum mismatch")]
    BadChecksum,
}

/// A record payload whose checksum matched but which does not decode: a bug, or a file from
/// a different format version.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("undecodable record payload: {0}")]
pub(crate) struct DecodeError(pub(crate) String);

/// An event too large for the format (a length that does not fit in 32 bits).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("an event field of {0} bytes is too large for the journal format (limit 4 GiB)")]
pub(crate) struct TooLarge(pub(crate) usize);

/// A record as found in a file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct RawRecord<'a> {
    /// Its sequence number.
    pub(crate) seq: u64,
    /// Its payload.
    pub(crate) payload: &'a [u8],
    /// The offset just past it.
    pub(crate) end: usize,
}

/// The header of a new file.
pub(crate) fn file_header(kind: FileKind, generation: u64) -> [u8; FILE_HEADER_BYTES] {
    let mut header = [0u8; FILE_HEADER_BYTES];
    header[..8].copy_from_slice(&FILE_MAGIC);
    header[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[10..12].copy_from_slice(&kind.code().to_le_bytes());
    header[12..20].copy_from_slice(&generation.to_le_bytes());
    let crc = super::crc::crc32c(&header[..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks the header at the start of `data` against the kind and generation the file name
/// implies.
pub(crate) fn check_file_header(
    data: &[u8],
    expected_kind: FileKind,
    expected_generation: u64,
) -> Result<(), HeaderError> {
    let header = data.get(..FILE_HEADER_BYTES).ok_or(HeaderError::Short)?;
    let crc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    if header[..8] != FILE_MAGIC || super::crc::crc32c(&header[..20]) != crc {
        return Err(HeaderError::Damaged);
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let kind = match u16::from_le_bytes([header[10], header[11]]) {
        1 => FileKind::Journal,
        2 => FileKind::Snapshot,
        _ => return Err(HeaderError::Damaged),
    };
    if kind != expected_kind {
        return Err(HeaderError::WrongKind {
            expected: expected_kind,
            found: kind,
        });
    }
    let mut generation = [0u8; 8];
    generation.copy_from_slice(&header[12..20]);
    let generation = u64::from_le_bytes(generation);
    if generation != expected_generation {
        return Err(HeaderError::WrongGeneration {
            expected: expected_generation,
            found: generation,
        });
    }
    Ok(())
}

/// Reads the record at `offset` of `data`.
pub(crate) fn read_record(data: &[u8], offset: usize) -> Result<RawRecord<'_>, RecordFault> {
    let header = data
        .get(offset..)
        .and_then(|rest| rest.get(..RECORD_HEADER_BYTES))
        .ok_or(RecordFault::Truncated)?;
    if header[..4] != RECORD_MAGIC {
        return Err(RecordFault::BadMagic);
    }
    let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[8..16]);
    let crc = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    let start = offset + RECORD_HEADER_BYTES;
    let end = start.checked_add(length).ok_or(RecordFault::Truncated)?;
    let payload = data.get(start..end).ok_or(RecordFault::Truncated)?;
    let mut check = Crc32c::new();
    check.update(&header[4..16]);
    check.update(payload);
    if check.finish() != crc {
        return Err(RecordFault::BadChecksum);
    }
    Ok(RawRecord {
        seq: u64::from_le_bytes(seq),
        payload,
        end,
    })
}

/// The first offset after `from` where a valid record with a sequence number above `min_seq`
/// starts, if any. Used to tell a torn tail (nothing valid follows the damage) from
/// corruption in the middle of a file (intact records follow it), and by salvage to skip a
/// damaged region.
pub(crate) fn find_next_record(data: &[u8], from: usize, min_seq: u64) -> Option<usize> {
    let mut offset = from;
    while offset + RECORD_HEADER_BYTES <= data.len() {
        let window = &data[offset..data.len() - RECORD_HEADER_BYTES + RECORD_MAGIC.len()];
        let found = window
            .windows(RECORD_MAGIC.len())
            .position(|w| w == RECORD_MAGIC)?;
        let candidate = offset + found;
        if let Ok(record) = read_record(data, candidate) {
            if record.seq > min_seq {
                return Some(candidate);
            }
        }
        offset = candidate + 1;
    }
    None
}

/// Builds records into a buffer.
pub(crate) struct RecordBuilder {
    start: usize,
}

impl RecordBuilder {
    /// Starts a record at the end of `buf`; the payload is appended next.
    pub(crate) fn begin(buf: &mut Vec<u8>) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
        Self { start }
    }

    /// Fills in the header of the record begun at `self`, whose payload is everything
    /// appended to `buf` since.
    pub(crate) fn finish(self, buf: &mut [u8], seq: u64) -> Result<(), TooLarge> {
        let payload_start = self.start + RECORD_HEADER_BYTES;
        let length = buf.len() - payload_start;
        let length = u32::try_from(length).map_err(|_| TooLarge(length))?;
        let header = &mut buf[self.start..payload_start];
        header[..4].copy_from_slice(&RECORD_MAGIC);
        header[4..8].copy_from_slice(&length.to_le_bytes());
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        let mut crc = Crc32c::new();
        crc.update(&buf[self.start + 4..self.start + 16]);
        crc.update(&buf[payload_start..]);
        let crc = crc.finish();
        buf[self.start + 16..payload_start].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }
}

/// Appends the payload of a batch record (use between [`RecordBuilder::begin`] and
/// [`RecordBuilder::finish`]).
pub(crate) fn put_batch<'a>(
    buf: &mut Vec<u8>,
    id_floor: i64,
    events: impl ExactSizeIterator<Item = &'a Event>,
) -> Result<(), TooLarge> {
    buf.push(BODY_BATCH);
    buf.extend_from_slice(&id_floor.to_le_bytes());
    let count = events.len();
    buf.extend_from_slice(
        &u32::try_from(count)
            .map_err(|_| TooLarge(count))?
            .to_le_bytes(),
    );
    for event in events {
        put_event(buf, event)?;
    }
    Ok(())
}

/// Appends the payload of a snapshot's end record.
pub(crate) fn put_snapshot_end(buf: &mut Vec<u8>, next_index: i64, events: u64, journal_seq: u64) {
    buf.push(BODY_SNAPSHOT_END);
    buf.extend_from_slice(&next_index.to_le_bytes());
    buf.extend_from_slice(&events.to_le_bytes());
    buf.extend_from_slice(&journal_seq.to_le_bytes());
}

/// The encoded size of an event, roughly (for sizing records before encoding them).
pub(crate) fn event_size_hint(event: &Event) -> usize {
    match event {
        Event::QueueCreated { name, owner } => {
            10 + name.len() + owner.as_ref().map_or(0, |o| o.len())
        }
        Event::QueueRemoved { name } => 5 + name.len(),
        Event::MessageStored { id, message, .. } => {
            let kind = match &message.kind {
                MessageKind::Request { reply_to } => reply_to.len(),
                MessageKind::Response { request } => request.queue.len() + 8,
            };
            48 + id.queue.len() + message.payload.len() + kind
        }
        Event::MessageAcked { id } => 13 + id.queue.len(),
    }
}

fn put_event(buf: &mut Vec<u8>, event: &Event) -> Result<(), TooLarge> {
    match event {
        Event::QueueCreated { name, owner } => {
            buf.push(EVENT_QUEUE_CREATED);
            put_bytes(buf, name.as_bytes())?;
            match owner {
                None => buf.push(0),
                Some(owner) => {
                    buf.push(1);
                    put_bytes(buf, owner.as_bytes())?;
                }
            }
        }
        Event::QueueRemoved { name } => {
            buf.push(EVENT_QUEUE_REMOVED);
            put_bytes(buf, name.as_bytes())?;
        }
        Event::MessageStored {
            id,
            origin,
            time,
            message,
        } => {
            buf.push(EVENT_MESSAGE_STORED);
            put_bytes(buf, id.queue.as_bytes())?;
            buf.extend_from_slice(&id.index.to_le_bytes());
            match origin {
                Origin::Name(session) => {
                    buf.push(0);
                    put_bytes(buf, session.as_bytes())?;
                }
                Origin::Anonymous(connection) => {
                    buf.push(1);
                    buf.extend_from_slice(&connection.to_le_bytes());
                }
            }
            buf.extend_from_slice(&time.unix_nanos().to_le_bytes());
            put_bytes(buf, &message.payload)?;
            match &message.kind {
                MessageKind::Request { reply_to } => {
                    buf.push(0);
                    put_bytes(buf, reply_to.as_bytes())?;
                }
                MessageKind::Response { request } => {
                    buf.push(1);
                    put_bytes(buf, request.queue.as_bytes())?;
                    buf.extend_from_slice(&request.index.to_le_bytes());
                }
            }
        }
        Event::MessageAcked { id } => {
            buf.push(EVENT_MESSAGE_ACKED);
            put_bytes(buf, id.queue.as_bytes())?;
            buf.extend_from_slice(&id.index.to_le_bytes());
        }
    }
    Ok(())
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) -> Result<(), TooLarge> {
    let length = u32::try_from(bytes.len()).map_err(|_| TooLarge(bytes.len()))?;
    buf.extend_from_slice(&length.to_le_bytes());
    buf.extend_from_slice(bytes);
    Ok(())
}

/// Decodes a record payload.
pub(crate) fn decode_body(payload: &[u8]) -> Result<RecordBody, DecodeError> {
    let mut reader = Reader { data: payload };
    let body = match reader.u8()? {
        BODY_BATCH => {
            let id_floor = reader.i64()?;
            let count = reader.u32()? as usize;
            // Each event takes at least five bytes, which bounds the allocation by the
            // payload's size whatever the count claims.
            let mut events = Vec::with_capacity(count.min(payload.len() / 5));
            for _ in 0..count {
                events.push(reader.event()?);
            }
            RecordBody::Batch { id_floor, events }
        }
        BODY_SNAPSHOT_END => RecordBody::SnapshotEnd {
            next_index: reader.i64()?,
            events: reader.u64()?,
            journal_seq: reader.u64()?,
        },
        other => return Err(DecodeError(format!("unknown record type {other}"))),
    };
    if !reader.data.is_empty() {
        return Err(DecodeError(format!(
            "{} unexpected bytes after the record's contents",
            reader.data.len()
        )));
    }
    Ok(body)
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < count {
            return Err(DecodeError("the record's contents end early".into()));
        }
        let (taken, rest) = self.data.split_at(count);
        self.data = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(bytes))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(bytes))
    }

    /// A length-prefixed byte string, copied: a `Bytes` slice of the file buffer would keep
    /// the whole segment in memory for as long as one message from it stays queued.
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let length = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(length)?))
    }

    fn name(&mut self) -> Result<QueueName, DecodeError> {
        self.bytes().map(QueueName::new)
    }

    fn event(&mut self) -> Result<Event, DecodeError> {
        match self.u8()? {
            EVENT_QUEUE_CREATED => {
                let name = self.name()?;
                let owner = match self.u8()? {
                    0 => None,
                    1 => Some(SessionToken::new(self.bytes()?)),
                    other => return Err(DecodeError(format!("bad owner tag {other}"))),
                };
                Ok(Event::QueueCreated { name, owner })
            }
            EVENT_QUEUE_REMOVED => Ok(Event::QueueRemoved { name: self.name()? }),
            EVENT_MESSAGE_STORED => {
                let queue = self.name()?;
                let index = self.i64()?;
                let origin = match self.u8()? {
                    0 => Origin::Name(SessionToken::new(self.bytes()?)),
                    1 => Origin::Anonymous(self.i64()?),
                    other => return Err(DecodeError(format!("bad origin tag {other}"))),
                };
                let time = Timestamp::from_unix_nanos(self.i64()?);
                let payload = self.bytes()?;
                let kind = match self.u8()? {
                    0 => MessageKind::Request {
                        reply_to: self.name()?,
                    },
                    1 => {
                        let queue = self.name()?;
                        MessageKind::Response {
                            request: MessageId::new(queue, self.i64()?),
                        }
                    }
                    other => return Err(DecodeError(format!("bad message kind tag {other}"))),
                };
                Ok(Event::MessageStored {
                    id: MessageId::new(queue, index),
                    origin,
                    time,
                    message: Message { payload, kind },
                })
            }
            EVENT_MESSAGE_ACKED => {
                let queue = self.name()?;
                Ok(Event::MessageAcked {
                    id: MessageId::new(queue, self.i64()?),
                })
            }
            other => Err(DecodeError(format!("unknown event type {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_events() -> Vec<Event> {
        vec![
            Event::QueueCreated {
                name: QueueName::from("svc"),
                owner: None,
            },
            Event::QueueCreated {
                name: QueueName::from("reply\u{0}\u{ff}"),
                owner: Some(SessionToken::from("client:1")),
            },
            Event::MessageStored {
                id: MessageId::new(QueueName::from("svc"), 1_700_000_000_000_001),
                origin: Origin::Name(SessionToken::from("client:1")),
                time: Timestamp::from_unix_nanos(1_700_000_000_123_456_789),
                message: Message {
                    payload: Bytes::from_static(b"\x00\xff payload"),
                    kind: MessageKind::Request {
                        reply_to: QueueName::from("reply"),
                    },
                },
            },
            Event::MessageStored {
                id: MessageId::new(QueueName::from("reply"), -5),
                origin: Origin::Anonymous(-1),
                time: Timestamp::from_unix_nanos(-3),
                message: Message {
                    payload: Bytes::new(),
                    kind: MessageKind::Response {
                        request: MessageId::new(QueueName::from("svc"), 7),
                    },
                },
            },
            Event::MessageAcked {
                id: MessageId::new(QueueName::from("svc"), i64::MAX),
            },
            Event::QueueRemoved {
                name: QueueName::from(""),
            },
        ]
    }

    fn record(seq: u64, id_floor: i64, events: &[Event]) -> Vec<u8> {
        let mut buf = Vec::new();
        let builder = RecordBuilder::begin(&mut buf);
        put_batch(&mut buf, id_floor, events.iter()).unwrap();
        builder.finish(&mut buf, seq).unwrap();
        buf
    }

    #[test]
    fn events_round_trip() {
        let events = sample_events();
        let buf = record(9, 42, &events);
        let raw = read_record(&buf, 0).unwrap();
        assert_eq!(raw.seq, 9);
        assert_eq!(raw.end, buf.len());
        assert_eq!(
            decode_body(raw.payload).unwrap(),
            RecordBody::Batch {
                id_floor: 42,
                events
            }
        );
    }

    #[test]
    fn snapshot_end_round_trips() {
        let mut buf = Vec::new();
        let builder = RecordBuilder::begin(&mut buf);
        put_snapshot_end(&mut buf, 77, 3, 12);
        builder.finish(&mut buf, 2).unwrap();
        let raw = read_record(&buf, 0).unwrap();
        assert_eq!(
            decode_body(raw.payload).unwrap(),
            RecordBody::SnapshotEnd {
                next_index: 77,
                events: 3,
                journal_seq: 12,
            }
        );
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let buf = record(1, 0, &sample_events()[..3]);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    read_record(&damaged, 0).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let buf = record(1, 0, &sample_events());
        for length in 0..buf.len() {
            assert!(read_record(&buf[..length], 0).is_err());
        }
    }

    #[test]
    fn zeros_are_not_a_record() {
        assert_eq!(read_record(&[0u8; 64], 0), Err(RecordFault::BadMagic));
        assert_eq!(find_next_record(&[0u8; 4096], 0, 0), None);
    }

    #[test]
    fn finds_the_next_valid_record_after_damage() {
        let mut data = record(1, 0, &sample_events()[..1]);
        let second_at = data.len();
        data.extend(record(2, 0, &sample_events()[1..2]));
        data[5] ^= 0x10;
        assert!(read_record(&data, 0).is_err());
        assert_eq!(find_next_record(&data, 1, 0), Some(second_at));
        // A record whose sequence number is not above the minimum does not count.
        assert_eq!(find_next_record(&data, 1, 2), None);
    }

    #[test]
    fn headers_are_checked() {
        let header = file_header(FileKind::Journal, 7);
        assert_eq!(check_file_header(&header, FileKind::Journal, 7), Ok(()));
        assert_eq!(
            check_file_header(&header[..10], FileKind::Journal, 7),
            Err(HeaderError::Short)
        );
        assert!(matches!(
            check_file_header(&header, FileKind::Snapshot, 7),
            Err(HeaderError::WrongKind { .. })
        ));
        assert!(matches!(
            check_file_header(&header, FileKind::Journal, 8),
            Err(HeaderError::WrongGeneration { .. })
        ));
        let mut damaged = header;
        damaged[13] ^= 1;
        assert_eq!(
            check_file_header(&damaged, FileKind::Journal, 7),
            Err(HeaderError::Damaged)
        );
        let mut newer = header;
        newer[8] = 2;
        let crc = super::super::crc::crc32c(&newer[..20]);
        newer[20..24].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            check_file_header(&newer, FileKind::Journal, 7),
            Err(HeaderError::UnsupportedVersion(2))
        );
    }
}
