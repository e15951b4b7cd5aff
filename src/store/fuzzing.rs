//! Entry points for the fuzz targets (`tests/fuzz/`) and their short pass in `cargo test`:
//! recovery over files given as bytes, and the on-disk framing, so that a fuzzer's bytes can
//! reach the event decoder behind the record checksums. Not part of the switch's API.

use super::codec::{self, FileKind, RecordBuilder};
use super::recovery::{journal_name, recover, snapshot_name};
use super::{MemoryStorage, RecoveryReport, StoreError};
use crate::engine::Event;

/// Reads a state directory holding exactly `files` (name, contents), with or without
/// salvage, and returns what recovery found. Touches nothing but memory.
///
/// The contract the fuzz targets check: this returns (an error or a report) for any bytes,
/// never panics, and takes time roughly linear in the input.
pub fn recover_files(
    files: &[(String, Vec<u8>)],
    salvage: bool,
) -> Result<RecoveryReport, StoreError> {
    let storage = MemoryStorage::new();
    for (name, contents) in files {
        storage.set_contents(name, contents.clone());
    }
    recover(&storage, salvage).map(|recovered| recovered.report)
}

/// The file name of journal segment `generation`.
pub fn journal_file_name(generation: u64) -> String {
    journal_name(generation)
}

/// The file name of snapshot `generation`.
pub fn snapshot_file_name(generation: u64) -> String {
    snapshot_name(generation)
}

/// A valid header of journal segment `generation`.
pub fn journal_header(generation: u64) -> Vec<u8> {
    codec::file_header(FileKind::Journal, generation).to_vec()
}

/// A valid header of snapshot `generation`.
pub fn snapshot_header(generation: u64) -> Vec<u8> {
    codec::file_header(FileKind::Snapshot, generation).to_vec()
}

/// Appends a record with sequence number `seq` around an arbitrary `payload`, with a valid
/// checksum, to `out`. Returns false (appending nothing) if the payload is too large.
pub fn append_record(out: &mut Vec<u8>, seq: u64, payload: &[u8]) -> bool {
    let start = out.len();
    let record = RecordBuilder::begin(out);
    out.extend_from_slice(payload);
    if record.finish(out, seq).is_err() {
        out.truncate(start);
        return false;
    }
    true
}

/// The payload of a batch record holding `events`, as the writer encodes it. `None` if an
/// event is too large for the format.
pub fn batch_payload(id_floor: i64, events: &[Event]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    codec::put_batch(&mut out, id_floor, events.iter()).ok()?;
    Some(out)
}

/// The payload of a snapshot's end record.
pub fn snapshot_end_payload(next_index: i64, events: u64, journal_seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    codec::put_snapshot_end(&mut out, next_index, events, journal_seq);
    out
}
