//! The import of the original OCaml message-switch's state directory (`queues.sexp` and
//! `redo-log`) into this switch's journal, on the first start over it.
//!
//! The original recovers by loading its snapshot `queues.sexp` and replaying the operations
//! of its `redo-log` (a block ring, see `ring`) that it had not yet folded into the snapshot
//! (`model`). The import does the same, then keeps the persistent queues with every message
//! not yet acked (payload, kind, reply-to or correlation, and the original's ids, so that
//! responses still name their requests and listeners' acks still match), writes them as
//! this switch's first snapshot, syncs it, and only then moves the original's files into
//! `imported-<UTC time>/` in the state directory: a second start does not import again, and
//! a rollback to the original finds the files there.
//!
//! - The original's transient queues are dropped (their sessions ended with the original),
//!   each with a log line, as recovery drops this switch's own.
//! - The id counter is raised past every imported id by the snapshot itself (`apply` of a
//!   stored message does it), so new ids stay above the imported ones.
//! - Message times are the import's: the original's count from its own process start.
//! - Anything unreadable (a damaged, truncated or unparsable file) stops the start-up with
//!   the file and what is wrong ([`StoreError::OriginalState`]), leaving every file as it
//!   was: the switch never starts empty over messages it could not read.
//! - The original's files beside this switch's own journal: refused
//!   ([`StoreError::OriginalBesideJournal`]), since either could be the current state
//!   (after a rollback to the original and a second upgrade, the original's are newer).
//! - Crash safety: the import writes [`IMPORT_PENDING`] (synced) before anything else and
//!   removes it last. Found at start-up, it means an import was cut short: if its snapshot
//!   is complete, the move aside is finished; otherwise the partial journal is removed and
//!   the import starts again from the original's files, which are still untouched.

mod decode;
mod model;
mod ring;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::recovery::{snapshot_name, FileName};
use super::storage::{DiskStorage, Storage, StorageFile};
use super::writer::{create_segment, write_snapshot};
use super::StoreError;
use crate::engine::{Event, QueueStore, Timestamp};
use crate::sexp::{parse_binary, SyntaxError};
use model::{Op, OriginalState};

/// The original's snapshot.
pub const ORIGINAL_SNAPSHOT: &str = "queues.sexp";
/// The original's redo-log.
pub const ORIGINAL_REDO_LOG: &str = "redo-log";
/// A snapshot the original was writing when it stopped (it ignores it at start-up).
pub const ORIGINAL_SNAPSHOT_TEMP: &str = "queues.sexp.tmp";
/// Present in the state directory while an import is under way (see the module doc).
pub const IMPORT_PENDING: &str = "original-import.pending";

/// Whether to import the original's state found in the state directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OriginalImport {
    /// Import it if it is there and this switch has no journal yet.
    #[default]
    Auto,
    /// Leave the original's files unread (a warning says they are there).
    No,
}

/// What an import took over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// Persistent queues imported.
    pub queues: usize,
    /// Messages imported.
    pub messages: usize,
    /// Payload bytes imported.
    pub payload_bytes: usize,
    /// Redo-log operations replayed onto `queues.sexp`.
    pub replayed_operations: usize,
    /// Transient queues dropped.
    pub transient_queues_dropped: usize,
    /// Where the original's files now are.
    pub moved_to: PathBuf,
}

/// Imports the original's state in `dir` (whose `storage` is open and locked) if there is
/// one, as the module doc says. `Ok(None)` when there is nothing to import (or `mode` is
/// [`OriginalImport::No`]). `now` stamps the imported messages.
pub fn import_if_present(
    dir: &Path,
    storage: &DiskStorage,
    mode: OriginalImport,
    now: Timestamp,
) -> Result<Option<ImportReport>, StoreError> {
    let originals: Vec<&str> = [ORIGINAL_SNAPSHOT, ORIGINAL_REDO_LOG, ORIGINAL_SNAPSHOT_TEMP]
        .into_iter()
        .filter(|name| dir.join(name).exists())
        .collect();
    if !originals
        .iter()
        .any(|name| [ORIGINAL_SNAPSHOT, ORIGINAL_REDO_LOG].contains(name))
    {
        if dir.join(IMPORT_PENDING).exists() {
            // Cut short after the move aside: only the marker is left.
            done(dir, storage)?;
        }
        return Ok(None);
    }
    if mode == OriginalImport::No {
        tracing::warn!(
            files = originals.join(", "),
            "the original message-switch's state is left unread (--statedir-import=no)"
        );
        return Ok(None);
    }
    let pending = dir.join(IMPORT_PENDING).exists();
    let ours = our_files(dir, storage)?;
    let first_snapshot = snapshot_name(1);
    if pending && ours.contains(&first_snapshot) {
        let moved_to = move_aside(dir, &originals)?;
        done(dir, storage)?;
        tracing::warn!(
            moved_to = %moved_to.display(),
            "finished an import of the original message-switch's state that was cut short \
             after its snapshot was written: moved the original's files aside"
        );
        return Ok(None);
    }
    if pending {
        // Cut short before its snapshot was complete: only the import wrote these.
        for name in &ours {
            remove(storage, name)?;
        }
    } else if !ours.is_empty() {
        return Err(StoreError::OriginalBesideJournal {
            original: describe_all(dir, &originals),
            ours: describe_all(dir, &ours),
        });
    }

    let (state, replayed_operations) = read_original(dir)?;
    let mut store = QueueStore::new(0);
    let mut transient_queues_dropped = 0;
    for (name, queue) in state.queues {
        if let Some(owner) = &queue.owner {
            tracing::warn!(
                queue = %String::from_utf8_lossy(name.as_bytes()),
                owner = %String::from_utf8_lossy(owner.as_bytes()),
                messages = queue.messages.len(),
                "skipped a transient queue of the original message-switch: its session ended \
                 with the original"
            );
            transient_queues_dropped += 1;
            continue;
        }
        store.apply(&Event::QueueCreated {
            name: name.clone(),
            owner: None,
        });
        for (index, (origin, message)) in queue.messages {
            store.apply(&Event::MessageStored {
                id: crate::protocol::MessageId::new(name.clone(), index),
                origin,
                time: now,
                message,
            });
        }
    }
    let io = |action, name| io_error(action, storage.describe(name));
    let mut marker = storage
        .create(IMPORT_PENDING)
        .map_err(io("create", IMPORT_PENDING))?;
    marker.sync().map_err(io("sync", IMPORT_PENDING))?;
    storage
        .sync_dir()
        .map_err(io("sync the directory of", IMPORT_PENDING))?;
    // As a compaction does: the segment that continues the snapshot exists before it.
    drop(create_segment(storage, 1)?);
    write_snapshot(storage, 1, &store, 0, &AtomicBool::new(false))?;
    let moved_to = move_aside(dir, &originals)?;
    done(dir, storage)?;
    let report = ImportReport {
        queues: store.queue_count(),
        messages: store.message_count(),
        payload_bytes: store.payload_bytes(),
        replayed_operations,
        transient_queues_dropped,
        moved_to,
    };
    tracing::info!(
        queues = report.queues,
        messages = report.messages,
        payload_bytes = report.payload_bytes,
        replayed_redo_log_operations = report.replayed_operations,
        transient_queues_dropped = report.transient_queues_dropped,
        moved_to = %report.moved_to.display(),
        "imported the original message-switch's state"
    );
    Ok(Some(report))
}

/// This switch's journal segments and snapshots (temporary ones included) in `dir`, sorted.
fn our_files(dir: &Path, storage: &DiskStorage) -> Result<Vec<String>, StoreError> {
    let mut ours: Vec<String> = storage
        .list()
        .map_err(io_error("list", dir.display().to_string()))?
        .into_iter()
        .filter(|name| FileName::parse(name) != FileName::Other)
        .collect();
    ours.sort();
    Ok(ours)
}

fn remove(storage: &DiskStorage, name: &str) -> Result<(), StoreError> {
    storage
        .remove(name)
        .map_err(io_error("remove", storage.describe(name)))
}

/// Ends an import: removes [`IMPORT_PENDING`], durably.
fn done(dir: &Path, storage: &DiskStorage) -> Result<(), StoreError> {
    remove(storage, IMPORT_PENDING)?;
    storage
        .sync_dir()
        .map_err(io_error("sync", dir.display().to_string()))
}

/// The original's state in `dir`: `queues.sexp` with the unconsumed operations of
/// `redo-log` applied, and how many there were.
fn read_original(dir: &Path) -> Result<(OriginalState, usize), StoreError> {
    let snapshot_path = dir.join(ORIGINAL_SNAPSHOT);
    let bad = |path: &Path, reason: String| StoreError::OriginalState {
        file: path.display().to_string(),
        reason,
    };
    let read = |path: &Path| std::fs::read(path).map_err(|error| bad(path, error.to_string()));
    if !snapshot_path.exists() {
        return Err(bad(
            &snapshot_path,
            "missing while redo-log is present; the redo-log holds only the changes since \
             the last snapshot, so it cannot be imported alone"
                .into(),
        ));
    }
    let text = String::from_utf8(read(&snapshot_path)?).map_err(|error| {
        let offset = error.utf8_error().valid_up_to();
        bad(
            &snapshot_path,
            format!("byte {offset} is not text (the original writes ASCII)"),
        )
    })?;
    let sexp = one_sexp(&text).map_err(|reason| bad(&snapshot_path, reason))?;
    let mut state = OriginalState::from_sexp(&sexp)
        .map_err(|mismatch| bad(&snapshot_path, mismatch.to_string()))?;

    let redo_path = dir.join(ORIGINAL_REDO_LOG);
    if !redo_path.exists() {
        tracing::warn!(
            file = %snapshot_path.display(),
            "no redo-log beside queues.sexp: importing the snapshot alone"
        );
        return Ok((state, 0));
    }
    let items = ring::unconsumed_items(&read(&redo_path)?).map_err(|error| {
        bad(
            &redo_path,
            format!("at byte offset {}: {}", error.offset, error.reason),
        )
    })?;
    let replayed = items.len();
    for item in items {
        let at = |reason: String| {
            bad(
                &redo_path,
                format!(
                    "the operation at byte offset {} (ring position {}): {reason}",
                    item.file_offset, item.position
                ),
            )
        };
        let text = String::from_utf8(item.bytes)
            .map_err(|_| at("not text (the original writes ASCII)".into()))?;
        let sexp = one_sexp(&text).map_err(at)?;
        state.apply(Op::from_sexp(&sexp).map_err(|mismatch| at(mismatch.to_string()))?);
    }
    Ok((state, replayed))
}

/// The one s-expression of `text`.
fn one_sexp(text: &str) -> Result<crate::sexp::Sexp, String> {
    let syntax = |error: SyntaxError| {
        format!(
            "line {}, column {}: {}",
            error.at.line, error.at.column, error.kind
        )
    };
    let mut all = parse_binary(text).map_err(syntax)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err("empty: no s-expression".into()),
        _ => {
            let at = all[1].at();
            Err(format!(
                "line {}, column {}: a second s-expression after the first",
                at.line, at.column
            ))
        }
    }
}

/// Moves `names` from `dir` into a new `dir/imported-<UTC time>/`, durably.
fn move_aside(dir: &Path, names: &[&str]) -> Result<PathBuf, StoreError> {
    let io = |action, path: &Path| io_error(action, path.display().to_string());
    let stamp = utc_stamp(std::time::SystemTime::now());
    let mut aside = dir.join(format!("imported-{stamp}"));
    let mut attempt = 1;
    while aside.exists() {
        attempt += 1;
        aside = dir.join(format!("imported-{stamp}-{attempt}"));
    }
    std::fs::create_dir(&aside).map_err(io("create", &aside))?;
    for name in names {
        std::fs::rename(dir.join(name), aside.join(name))
            .map_err(io("move aside", &dir.join(name)))?;
    }
    for synced in [&aside, &dir.to_path_buf()] {
        std::fs::File::open(synced)
            .and_then(|directory| directory.sync_all())
            .map_err(io("sync the directory", synced))?;
    }
    Ok(aside)
}

/// Turns an I/O error of doing `action` to `path` into a [`StoreError::Io`].
fn io_error(action: &'static str, path: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

fn describe_all<S: AsRef<str>>(dir: &Path, names: &[S]) -> String {
    names
        .iter()
        .map(|name| dir.join(name.as_ref()).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `time` as `YYYYMMDDTHHMMSSZ` (UTC).
fn utc_stamp(time: std::time::SystemTime) -> String {
    let seconds = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests;
