//! Recovery: rebuild the durable state from the newest snapshot plus the journal segments
//! after it, through [`QueueStore::apply`], and judge every damaged byte found on the way.
//!
//! The rules (docs/persistence.md, "Recovery"):
//! - A record that fails its checks at the end of the newest segment, with no valid record
//!   anywhere after it, is a torn write from a crash: it is dropped with a warning and the
//!   segment is cut back to the last good record. Nothing acknowledged is lost, because a
//!   reply only leaves after its record was synced, and the writer syncs one write at a time.
//! - Any other damage (a bad record with intact records after it, a bad record in an older
//!   segment, a damaged snapshot, a missing segment, a sequence gap) is corruption: recovery
//!   refuses, naming the file and byte offset, unless salvage was asked for.
//! - Salvage keeps every intact record and skips the damaged regions, reporting each one.

use std::collections::BTreeMap;

use super::codec::{
    check_file_header, decode_body, find_next_record, read_record, FileKind, HeaderError,
    RecordBody, FILE_HEADER_BYTES,
};
use super::storage::Storage;
use super::{Damage, RecoveryReport, StoreError, TornTail};
use crate::engine::QueueStore;

/// The name of journal segment `generation`.
pub(crate) fn journal_name(generation: u64) -> String {
    format!("journal-{generation:020}.log")
}

/// The name of snapshot `generation`.
pub(crate) fn snapshot_name(generation: u64) -> String {
    format!("snapshot-{generation:020}.snap")
}

/// The name snapshot `generation` is written under before it is complete.
pub(crate) fn snapshot_temp_name(generation: u64) -> String {
    format!("snapshot-{generation:020}.snap.tmp")
}

/// What a file name in the state directory says the file is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FileName {
    /// A journal segment.
    Journal(u64),
    /// A complete snapshot.
    Snapshot(u64),
    /// A snapshot being written (or abandoned by a crash).
    SnapshotTemp(u64),
    /// Anything else (the lock file, salvaged files, an operator's notes): left alone.
    Other,
}

impl FileName {
    /// Classifies `name`.
    pub(crate) fn parse(name: &str) -> FileName {
        let generation = |digits: &str| {
            (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().ok())
                .flatten()
        };
        if let Some(digits) = name
            .strip_prefix("journal-")
            .and_then(|rest| rest.strip_suffix(".log"))
        {
            if let Some(generation) = generation(digits) {
                return FileName::Journal(generation);
            }
        }
        if let Some(digits) = name
            .strip_prefix("snapshot-")
            .and_then(|rest| rest.strip_suffix(".snap"))
        {
            if let Some(generation) = generation(digits) {
                return FileName::Snapshot(generation);
            }
        }
        if let Some(digits) = name
            .strip_prefix("snapshot-")
            .and_then(|rest| rest.strip_suffix(".snap.tmp"))
        {
            if let Some(generation) = generation(digits) {
                return FileName::SnapshotTemp(generation);
            }
        }
        FileName::Other
    }
}

/// The newest journal segment, which the writer continues.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Active {
    /// No segment to continue: create segment `generation`.
    Create(u64),
    /// Continue segment `generation`: cut it to `good_len` bytes first if it is longer
    /// (a torn tail), and rewrite its header if `header_torn`.
    Continue {
        generation: u64,
        good_len: u64,
        file_len: u64,
        header_torn: bool,
    },
}

/// The outcome of reading the state directory.
pub(crate) struct Recovered {
    /// The rebuilt state (transient queues still in it).
    pub(crate) store: QueueStore,
    /// The sequence number of the last journal record replayed (or covered by the snapshot).
    pub(crate) last_seq: u64,
    /// The segment to continue.
    pub(crate) active: Active,
    /// Lengths of the segments that postdate the snapshot, by generation.
    pub(crate) segments: BTreeMap<u64, u64>,
    /// Size of the snapshot replayed (0 if none).
    pub(crate) snapshot_bytes: u64,
    /// Files left behind by an interrupted compaction, to delete once the writer runs.
    pub(crate) obsolete: Vec<String>,
    /// The journal and snapshot files recovery looked at (salvage moves them aside).
    pub(crate) state_files: Vec<String>,
    /// The highest generation of any journal or snapshot file, temporary ones included.
    pub(crate) max_generation: u64,
    /// What was found.
    pub(crate) report: RecoveryReport,
}

/// Reads the state directory. With `salvage` false, any corruption is an error; with it,
/// damaged regions are skipped and listed in the report's `damage`.
pub(crate) fn recover<S: Storage>(storage: &S, salvage: bool) -> Result<Recovered, StoreError> {
    let names = storage.list().map_err(|source| StoreError::Io {
        action: "list the state directory",
        path: storage.describe(""),
        source,
    })?;
    let mut journals = Vec::new();
    let mut snapshots = Vec::new();
    let mut temps = Vec::new();
    for name in &names {
        match FileName::parse(name) {
            FileName::Journal(generation) => journals.push(generation),
            FileName::Snapshot(generation) => snapshots.push(generation),
            FileName::SnapshotTemp(generation) => temps.push(generation),
            FileName::Other => {}
        }
    }
    journals.sort_unstable();
    snapshots.sort_unstable();
    let max_generation = journals
        .iter()
        .chain(&snapshots)
        .chain(&temps)
        .copied()
        .max()
        .unwrap_or(0);
    let mut replay = Replay {
        storage,
        salvage,
        store: QueueStore::new(0),
        last_seq: 0,
        report: RecoveryReport::default(),
    };

    let snapshot = snapshots.last().copied();
    let mut snapshot_bytes = 0;
    if let Some(generation) = snapshot {
        snapshot_bytes = replay.snapshot(generation)?;
    }
    let first_journal = snapshot.unwrap_or(1);
    let mut obsolete: Vec<String> = temps.iter().map(|g| snapshot_temp_name(*g)).collect();
    obsolete.extend(
        snapshots
            .iter()
            .filter(|g| Some(**g) != snapshot)
            .map(|g| snapshot_name(*g)),
    );
    obsolete.extend(
        journals
            .iter()
            .filter(|g| **g < first_journal)
            .map(|g| journal_name(*g)),
    );
    let live: Vec<u64> = journals
        .iter()
        .copied()
        .filter(|g| *g >= first_journal)
        .collect();

    let mut segments = BTreeMap::new();
    let mut active = Active::Create(first_journal);
    let mut expected = first_journal;
    for (position, &generation) in live.iter().enumerate() {
        if generation != expected {
            let missing = journal_name(expected);
            let reason = if snapshot.is_some() || expected > 1 {
                format!("journal segment {missing} is missing")
            } else {
                format!("journal segment {missing} is missing and there is no snapshot")
            };
            replay.damage(storage.describe(&missing), 0, 0, reason)?;
        }
        expected = generation + 1;
        let is_last = position + 1 == live.len();
        let segment = replay.journal(generation, is_last)?;
        segments.insert(generation, segment.good_len);
        if is_last {
            active = Active::Continue {
                generation,
                good_len: segment.good_len,
                file_len: segment.file_len,
                header_torn: segment.header_torn,
            };
        }
    }
    if live.is_empty() && snapshot.is_some() {
        replay.damage(
            storage.describe(&journal_name(first_journal)),
            0,
            0,
            format!(
                "journal segment {} is missing (it is created before its snapshot)",
                journal_name(first_journal)
            ),
        )?;
    }
    let mut state_files: Vec<String> = journals.iter().map(|g| journal_name(*g)).collect();
    state_files.extend(snapshots.iter().map(|g| snapshot_name(*g)));
    replay.report.queues = replay.store.queue_count();
    replay.report.messages = replay.store.message_count();
    Ok(Recovered {
        store: replay.store,
        last_seq: replay.last_seq,
        active,
        segments,
        snapshot_bytes,
        obsolete,
        state_files,
        max_generation,
        report: replay.report,
    })
}

struct Replay<'s, S> {
    storage: &'s S,
    salvage: bool,
    store: QueueStore,
    last_seq: u64,
    report: RecoveryReport,
}

struct SegmentOutcome {
    good_len: u64,
    file_len: u64,
    header_torn: bool,
}

impl<S: Storage> Replay<'_, S> {
    /// Records damage at `offset` of `file`: an error, or with salvage a note in the report.
    fn damage(
        &mut self,
        file: String,
        offset: usize,
        bytes: usize,
        reason: String,
    ) -> Result<(), StoreError> {
        if !self.salvage {
            return Err(StoreError::Corrupt {
                file,
                offset: offset as u64,
                reason,
            });
        }
        tracing::error!(%file, offset, bytes, %reason, "salvage: skipping damaged data");
        self.report.damage.push(Damage {
            file,
            offset: offset as u64,
            bytes: bytes as u64,
            reason,
        });
        Ok(())
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.storage.read(name).map_err(|source| StoreError::Io {
            action: "read",
            path: self.storage.describe(name),
            source,
        })
    }

    /// Replays snapshot `generation`; returns its size.
    fn snapshot(&mut self, generation: u64) -> Result<u64, StoreError> {
        let name = snapshot_name(generation);
        let file = self.storage.describe(&name);
        let data = self.read(&name)?;
        if let Err(error) = check_file_header(&data, FileKind::Snapshot, generation) {
            self.damage(file.clone(), 0, FILE_HEADER_BYTES, error.to_string())?;
        }
        self.report.snapshot_generation = Some(generation);
        let mut offset = FILE_HEADER_BYTES;
        let mut seq = 0u64;
        let mut events = 0u64;
        let mut ended = false;
        while offset < data.len() {
            let record = match read_record(&data, offset) {
                Ok(record) if !ended && (record.seq == seq + 1 || self.salvage) => record,
                Ok(record) => {
                    let reason = if ended {
                        "data follows the snapshot's end record".to_owned()
                    } else {
                        format!("record {} follows record {seq}", record.seq)
                    };
                    self.damage(file.clone(), offset, data.len() - offset, reason)?;
                    break;
                }
                Err(fault) => {
                    // Snapshots are complete before they get their name, so no damage here
                    // is a torn write.
                    let next = find_next_record(&data, offset + 1, seq);
                    let skipped = next.unwrap_or(data.len()) - offset;
                    self.damage(file.clone(), offset, skipped, fault.to_string())?;
                    match next {
                        Some(next) => {
                            offset = next;
                            continue;
                        }
                        None => break,
                    }
                }
            };
            seq = record.seq;
            match decode_body(record.payload) {
                Ok(RecordBody::Batch {
                    id_floor,
                    events: batch,
                }) => {
                    for event in &batch {
                        self.store.apply(event);
                    }
                    self.store.raise_next_index(id_floor);
                    events += batch.len() as u64;
                }
                Ok(RecordBody::SnapshotEnd {
                    next_index,
                    events: expected,
                    journal_seq,
                }) => {
                    if expected != events {
                        self.damage(
                            file.clone(),
                            offset,
                            record.end - offset,
                            format!(
                                "the snapshot's end record counts {expected} events, \
                                 its records hold {events}"
                            ),
                        )?;
                    }
                    self.store.raise_next_index(next_index);
                    self.last_seq = journal_seq;
                    ended = true;
                }
                Err(error) => {
                    self.damage(file.clone(), offset, record.end - offset, error.to_string())?;
                }
            }
            offset = record.end;
        }
        if !ended {
            self.damage(
                file.clone(),
                data.len(),
                0,
                "the snapshot is incomplete (it has no end record)".to_owned(),
            )?;
        }
        self.report.snapshot_events = events;
        Ok(data.len() as u64)
    }

    /// Replays journal segment `generation`.
    fn journal(&mut self, generation: u64, is_last: bool) -> Result<SegmentOutcome, StoreError> {
        let name = journal_name(generation);
        let file = self.storage.describe(&name);
        let data = self.read(&name)?;
        self.report.journal_segments += 1;
        let mut header_torn = false;
        if let Err(error) = check_file_header(&data, FileKind::Journal, generation) {
            let torn = matches!(error, HeaderError::Short | HeaderError::Damaged)
                && is_last
                && find_next_record(&data, 0, self.last_seq).is_none();
            if torn {
                // A crash while the segment was being started: it holds nothing.
                tracing::warn!(%file, "dropping a journal segment whose header was never completed");
                self.report.torn_tail = Some(TornTail {
                    file,
                    offset: 0,
                    bytes: data.len() as u64,
                });
                return Ok(SegmentOutcome {
                    good_len: 0,
                    file_len: data.len() as u64,
                    header_torn: true,
                });
            }
            self.damage(file.clone(), 0, FILE_HEADER_BYTES, error.to_string())?;
            header_torn = true;
        }
        let mut offset = FILE_HEADER_BYTES.min(data.len());
        while offset < data.len() {
            let checked = match read_record(&data, offset) {
                Ok(record)
                    if record.seq == self.last_seq + 1
                        || (self.salvage && record.seq > self.last_seq) =>
                {
                    Ok(record)
                }
                Ok(record) => Err(format!(
                    "record sequence number {} where {} was expected",
                    record.seq,
                    self.last_seq + 1
                )),
                Err(fault) => Err(fault.to_string()),
            };
            let record = match checked {
                Ok(record) => record,
                Err(_) if data[offset..].iter().all(|&byte| byte == 0) => {
                    // The zeros the writer keeps ahead of its appends (`preallocate`), or a
                    // tail the filesystem zero-filled in a crash: nothing was written there.
                    return Ok(SegmentOutcome {
                        good_len: offset as u64,
                        file_len: data.len() as u64,
                        header_torn,
                    });
                }
                Err(reason) => {
                    let next = find_next_record(&data, offset + 1, self.last_seq);
                    if next.is_none() && is_last {
                        tracing::warn!(
                            %file,
                            offset,
                            bytes = data.len() - offset,
                            %reason,
                            "dropping the torn final record of the journal (a write cut short by a crash)"
                        );
                        self.report.torn_tail = Some(TornTail {
                            file,
                            offset: offset as u64,
                            bytes: (data.len() - offset) as u64,
                        });
                        return Ok(SegmentOutcome {
                            good_len: offset as u64,
                            file_len: data.len() as u64,
                            header_torn,
                        });
                    }
                    let reason = match next {
                        Some(next) => format!("{reason}; intact records follow at byte {next}"),
                        None => format!("{reason}; a newer journal segment follows"),
                    };
                    let skipped = next.unwrap_or(data.len()) - offset;
                    self.damage(file.clone(), offset, skipped, reason)?;
                    match next {
                        Some(next) => {
                            offset = next;
                            continue;
                        }
                        None => break,
                    }
                }
            };
            match decode_body(record.payload) {
                Ok(RecordBody::Batch { id_floor, events }) => {
                    for event in &events {
                        self.store.apply(event);
                    }
                    self.store.raise_next_index(id_floor);
                    self.report.journal_records += 1;
                    self.report.journal_events += events.len() as u64;
                }
                Ok(RecordBody::SnapshotEnd { .. }) => {
                    self.damage(
                        file.clone(),
                        offset,
                        record.end - offset,
                        "a snapshot end record inside a journal".to_owned(),
                    )?;
                }
                Err(error) => {
                    self.damage(file.clone(), offset, record.end - offset, error.to_string())?;
                }
            }
            self.last_seq = record.seq;
            offset = record.end;
        }
        Ok(SegmentOutcome {
            good_len: data.len() as u64,
            file_len: data.len() as u64,
            header_torn,
        })
    }
}
