//! Durability: a journal of the engine's [`Event`]s with group commit, snapshots that
//! replace it when it grows, and recovery through [`QueueStore::apply`]. Knows nothing of
//! HTTP. docs/persistence.md is the operator's view of the same design.
//!
//! # Pieces
//!
//! - [`Storage`]: a flat directory of files. [`DiskStorage`] is a real directory (locked
//!   against a second switch); [`MemoryStorage`] keeps files in memory and, on
//!   [`MemoryStorage::crash`], loses exactly what was never synced; [`FaultyStorage`] wraps
//!   either and injects `ENOSPC`/`EIO` on command ([`Faults`]).
//! - The on-disk format (`codec`): versioned file headers and CRC-32C checksummed records,
//!   each record a batch of events.
//! - Recovery (`recovery`): newest snapshot + journal segments after it, replayed through
//!   `apply`; a torn final record is cut off with a warning; other damage refuses to start
//!   with the file and offset ([`StoreError::Corrupt`]), unless [`Options::salvage`].
//! - The writer (`writer`): takes batches from the driver, writes every batch waiting into
//!   one record, syncs once (group commit), and reports [`Completion`]s. It keeps a shadow
//!   copy of the state by applying what it synced, so a snapshot is written from that copy
//!   without pausing the engine. [`open_threaded`] runs it on two dedicated threads (writer
//!   and snapshotter) for real files; [`open_on_runtime`] runs it as one tokio task, for
//!   storage that never blocks (the in-memory one under turmoil).
//!
//! # Driving contract (what `server::driver` does)
//!
//! 1. [`open_dir`] (or another `open_*`) recovers the state, drops transient queues (and
//!    journals that), and starts the writer. Build the engine over [`Opened::store`].
//! 2. Collect the engine's `Persist` events of one wake-up, and [`Journal::submit`] them as a
//!    batch with the next sequence number (1, 2, …) and an id floor of
//!    `next_index + ID_RESERVE`; submit a batch without events when [`floor_due`] says so.
//!    A reply that needs no sync but may show an id waits while `next_index` is above the
//!    highest floor synced.
//! 3. Hold each `after_sync` reply until a [`Completion::Synced`] covers the batch it
//!    followed. On [`Completion::Failed`] answer the held replies with an error and refuse
//!    new mutations until the next `Synced`: the writer keeps the failed batches and retries
//!    them, in order, until the disk takes them.
//! 4. On shutdown, submit what is left, [`Journal::close`], and wait for
//!    [`Completion::Closed`].

mod codec;
mod crc;
mod faults;
#[doc(hidden)]
pub mod fuzzing;
mod inbox;
mod memory;
pub mod original;
mod recovery;
mod storage;
mod writer;
mod writer_priority;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::engine::{Event, QueueStore};

pub use faults::{Faults, FaultyFile, FaultyStorage};
pub use memory::{MemoryFile, MemoryStorage};
pub use original::{ImportReport, OriginalImport};
pub use storage::{DiskFile, DiskStorage, Storage, StorageFile, LOCK_FILE};
pub use writer::DEFERRED_SYNC_MAX;
pub use writer_priority::WRITER_NICE_DEFAULT;

/// How far ahead of the id counter each journalled batch reserves ids.
///
/// Transfers may show a message before its batch is synced (reads never wait for the
/// disk), so after a crash the ids of lost messages must not be handed out again: a listener
/// may already hold a cursor past them. Every batch records `next_index + ID_RESERVE`, and
/// recovery raises the counter to the highest such floor. The driver holds back the rare
/// Transfer reply that would show an id at or above the floor already durable.
pub const ID_RESERVE: i64 = 1 << 20;

/// Whether the next batch must carry a new id floor even if it has no events: the id counter
/// (`next_index`) has come within half a reserve of the highest floor submitted so far.
///
/// Changes of transient queues journal nothing, yet take ids that replies show at once; a
/// driver that submits a floor whenever this says so keeps the durable floor above every id
/// handed out, except while more than `ID_RESERVE / 2` ids are taken within one sync.
pub fn floor_due(next_index: i64, submitted_floor: i64) -> bool {
    next_index.saturating_add(ID_RESERVE / 2) > submitted_floor
}

/// Tuning of the journal.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Compaction is considered once the journal written since the last snapshot holds at
    /// least this many bytes.
    pub compaction_bytes_min: u64,
    /// …and at least this many times the size of the last snapshot (so the work of writing
    /// snapshots stays proportional to the journal written).
    pub compaction_ratio: f64,
    /// Recover what is intact instead of refusing to start on corruption: damaged regions
    /// are skipped (and logged), a fresh snapshot of the result is written, and the old files
    /// are renamed with a `.salvaged` suffix.
    pub salvage: bool,
    /// Only for [`open_on_runtime`]: how long (in tokio time) each sync takes, so that a
    /// simulated crash can fall between a write and its sync.
    pub simulated_sync_delay: Duration,
    /// Only for [`open_dir`]: the nice value the journal writer thread asks for (see
    /// [`WRITER_NICE_DEFAULT`]); 0 leaves the thread at the process's priority.
    pub writer_nice: i32,
    /// Only for [`open_dir`]: whether the original switch's state found in the directory is
    /// imported (see [`original`]).
    pub original_import: OriginalImport,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            compaction_bytes_min: 32 << 20,
            compaction_ratio: 2.0,
            salvage: false,
            simulated_sync_delay: Duration::ZERO,
            writer_nice: WRITER_NICE_DEFAULT,
            original_import: OriginalImport::Auto,
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory path exists and is not a directory.
    #[error("the state directory {path} exists and is not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// Another process holds the state directory's lock.
    #[error("the state directory {path} is in use by another message-switch process")]
    Locked {
        /// The directory.
        path: String,
    },
    /// An I/O operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done, as a verb phrase ("write", "sync", …).
        action: &'static str,
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The journal or a snapshot is damaged somewhere other than a torn final record.
    #[error(
        "{file} is corrupt at byte offset {offset}: {reason}; refusing to start. \
         Restore the state directory from a backup, or start once with --salvage to keep \
         every intact record (see docs/persistence.md)"
    )]
    Corrupt {
        /// The file.
        file: String,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The original switch's state in the state directory cannot be read, so it cannot be
    /// imported (see [`original`]).
    #[error(
        "cannot import the original message-switch's state: {file}: {reason}. Refusing to \
         start rather than lose the messages in it; the files are untouched. Repair or \
         restore them, or start with --statedir-import=no to leave them unread (see \
         docs/persistence.md)"
    )]
    OriginalState {
        /// The file.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The state directory holds the original switch's files and this switch's journal.
    #[error(
        "the state directory holds both the original message-switch's state ({original}) and \
         this switch's own journal ({ours}); refusing to guess which one is current. Move \
         the stale one out of the directory (see docs/deploy.md), or start with \
         --statedir-import=no to use the journal and leave the original's files unread"
    )]
    OriginalBesideJournal {
        /// The original's files.
        original: String,
        /// This switch's files.
        ours: String,
    },
    /// An event does not fit the format (a field over 4 GiB).
    #[error("an event of {bytes} bytes is too large for the journal (limit 4 GiB per field)")]
    TooLarge {
        /// The size of the field.
        bytes: usize,
    },
    /// The journal's writer has stopped.
    #[error("the journal is closed")]
    Closed,
}

impl StoreError {
    /// Whether the error means the disk is full (`ENOSPC`, or a quota), for the HTTP status.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The generation of the snapshot loaded, if any.
    pub snapshot_generation: Option<u64>,
    /// Events replayed from the snapshot.
    pub snapshot_events: u64,
    /// Journal segments read.
    pub journal_segments: usize,
    /// Journal records replayed.
    pub journal_records: u64,
    /// Events replayed from the journal.
    pub journal_events: u64,
    /// The torn final record dropped, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Damaged regions skipped by salvage (always empty without [`Options::salvage`]).
    pub damage: Vec<Damage>,
    /// Transient queues dropped because their sessions are gone.
    pub transient_queues_dropped: usize,
    /// Queues recovered (after dropping transient ones).
    pub queues: usize,
    /// Messages recovered (after dropping transient queues).
    pub messages: usize,
}

/// A torn final record, dropped by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The journal segment.
    pub file: String,
    /// Where the torn record began; the segment was cut back to here.
    pub offset: u64,
    /// Bytes dropped.
    pub bytes: u64,
}

/// A damaged region skipped by salvage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The file.
    pub file: String,
    /// Where the damage starts.
    pub offset: u64,
    /// Bytes skipped.
    pub bytes: u64,
    /// What was wrong.
    pub reason: String,
}

/// Counters and timings of a running journal.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JournalStats {
    /// Batches journalled (driver wake-ups with events).
    pub batches: u64,
    /// Records written (usually one per sync; a huge group commit is cut into several).
    pub records: u64,
    /// Successful syncs of the journal (one per group commit), the disk operations that
    /// durability costs: each is a flush the process waits for and is charged CPU for.
    pub syncs: u64,
    /// Bytes of records written.
    pub bytes_written: u64,
    /// The longest sync.
    pub sync_time_max: Duration,
    /// Writes or syncs that failed.
    pub write_errors: u64,
    /// Whether the last write or sync failed (mutations are refused until one succeeds).
    pub failing: bool,
    /// The generation of the segment being written.
    pub generation: u64,
    /// Journal bytes on disk since the last snapshot.
    pub journal_bytes: u64,
    /// Size of the last snapshot.
    pub snapshot_bytes: u64,
    /// Stores of messages taken back out of the journal's inbox by their Ack before the
    /// writer took them: messages (and Acks) that were never written.
    pub stores_withdrawn: u64,
    /// Snapshots written by compaction.
    pub compactions: u64,
    /// Compactions that failed (the journal keeps growing until one succeeds).
    pub compaction_failures: u64,
    /// The longest time the writer spent starting a new segment for a compaction: the only
    /// part of compaction that delays syncs (the snapshot itself is written on the side).
    pub rotation_time_max: Duration,
    /// The longest time a snapshot took to write.
    pub snapshot_time_max: Duration,
}

/// A shared, cheaply readable copy of a journal's [`JournalStats`].
#[derive(Clone, Debug, Default)]
pub struct StatsHandle {
    stats: Arc<Mutex<JournalStats>>,
}

impl StatsHandle {
    /// The current values.
    pub fn get(&self) -> JournalStats {
        self.stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut JournalStats)) {
        change(
            &mut self
                .stats
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }
}

/// What the writer reports to the driver.
#[derive(Clone, Debug)]
pub enum Completion {
    /// Every batch up to and including sequence number `through` is durable.
    Synced {
        /// The highest batch sequence number covered.
        through: u64,
    },
    /// Writing or syncing failed. The batches not yet reported synced are kept and retried
    /// in order; until a later `Synced`, their fate is unknown.
    Failed {
        /// What went wrong.
        error: Arc<StoreError>,
    },
    /// The writer stopped after [`Journal::close`]: `Ok` if everything submitted is durable.
    Closed(Result<(), Arc<StoreError>>),
}

/// The driver's handle to a running journal writer.
#[derive(Debug)]
pub struct Journal {
    sender: mpsc::UnboundedSender<writer::ToWriter>,
    /// The submitted batches the writer has not taken yet.
    inbox: Arc<inbox::Inbox>,
    completions: mpsc::UnboundedReceiver<Completion>,
    stats: StatsHandle,
}

impl Journal {
    /// Submits the events of one batch. `seq` must be one more than the previous batch's
    /// (starting at 1); `id_floor` is the lowest value the id counter may take after a
    /// crash that keeps this batch (see [`ID_RESERVE`]). Never blocks: the channel is
    /// unbounded, but each client connection has at most one request in flight and only
    /// mutations and disconnects make events, so what waits here is bounded by the
    /// connection limit.
    ///
    /// `urgent`: a reply waits for this batch's sync. A batch that no reply waits for (lazy
    /// Acks alone) may wait up to [`DEFERRED_SYNC_MAX`] for the next urgent one and share
    /// its sync; [`Journal::hurry`] ends that wait once a reply does come to depend on it.
    pub fn submit(
        &self,
        seq: u64,
        events: Vec<Event>,
        id_floor: i64,
        urgent: bool,
    ) -> Result<(), StoreError> {
        if self.sender.is_closed() {
            return Err(StoreError::Closed);
        }
        self.inbox.push(
            writer::Batch {
                seq,
                events,
                id_floor,
            },
            urgent,
        );
        self.sender
            .send(writer::ToWriter::Submitted)
            .map_err(|_| StoreError::Closed)
    }

    /// A reply now waits for a batch already submitted: its sync must not be deferred.
    pub fn hurry(&self) {
        self.inbox.hurry();
        // The task writer learns of it through its channel.
        let _ = self.sender.send(writer::ToWriter::Submitted);
    }

    /// Takes the store of message `index` back out of `unsubmitted` (the events of the
    /// batch being gathered) or of the batches submitted but not yet taken by the writer, if
    /// it is still there; returns whether it was. The caller (an Ack of that message) then
    /// journals nothing: the message is never written, so no crash can bring it back. Once
    /// the writer has taken the batch, this is `false` and the Ack must be journalled as
    /// usual.
    pub fn withdraw_stored(&self, index: i64, unsubmitted: &mut Vec<Event>) -> bool {
        let in_unsubmitted = unsubmitted.iter().rposition(
            |event| matches!(event, Event::MessageStored { id, .. } if id.index == index),
        );
        let withdrawn = match in_unsubmitted {
            Some(position) => {
                unsubmitted.remove(position);
                true
            }
            None => self.inbox.withdraw_stored(index),
        };
        if withdrawn {
            self.count_withdrawn();
        }
        withdrawn
    }

    /// Counts a store withdrawn before it reached the journal at all (one the driver held
    /// back and an Ack dropped), with those [`Journal::withdraw_stored`] takes back.
    pub fn count_withdrawn(&self) {
        self.stats.update(|s| s.stores_withdrawn += 1);
    }

    /// The next report from the writer; `None` once the writer is gone.
    pub async fn completion(&mut self) -> Option<Completion> {
        self.completions.recv().await
    }

    /// Polls for the next report from the writer, as [`Journal::completion`] awaits it (for
    /// a caller that must not hold its borrow of the journal across an `await`).
    pub fn poll_completion(&mut self, context: &mut Context<'_>) -> Poll<Option<Completion>> {
        self.completions.poll_recv(context)
    }

    /// Asks the writer to make everything submitted durable and stop; it then reports
    /// [`Completion::Closed`]. A snapshot being written is abandoned (the journal still
    /// holds everything).
    pub fn close(&self) {
        let _ = self.sender.send(writer::ToWriter::Close);
        // A writer deferring a sync waits on the inbox, not on the channel.
        self.inbox.hurry();
    }

    /// The journal's counters.
    pub fn stats(&self) -> StatsHandle {
        self.stats.clone()
    }
}

/// A recovered state and the journal that continues it.
#[derive(Debug)]
pub struct Opened {
    /// The recovered durable state, transient queues already dropped. Give it to
    /// `Engine::with_store`.
    pub store: QueueStore,
    /// The running journal.
    pub journal: Journal,
    /// What recovery found.
    pub report: RecoveryReport,
}

/// Opens (creating it if missing) the state directory `dir`, recovers its state and starts
/// the journal on dedicated threads. Blocking: call it before serving, or from a blocking
/// context.
///
/// First, if `dir` holds the original switch's state, imports it (unless
/// [`Options::original_import`] says no; see [`original`]).
pub fn open_dir(dir: &Path, options: &Options) -> Result<Opened, StoreError> {
    let storage = DiskStorage::open(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i64);
    original::import_if_present(
        dir,
        &storage,
        options.original_import,
        crate::engine::Timestamp::from_unix_nanos(now),
    )?;
    open_threaded(storage, options)
}

/// Recovers the state in `storage` and starts the journal on two dedicated threads (one
/// writes and syncs, one writes snapshots), so that blocking file I/O never runs on the
/// async runtime. Needs no runtime.
pub fn open_threaded<S: Storage>(storage: S, options: &Options) -> Result<Opened, StoreError> {
    let prepared = writer::prepare(storage, options)?;
    Ok(writer::spawn_threads(prepared))
}

/// Recovers the state in `storage` and starts the journal as one task on the current tokio
/// runtime (so it must be called from within one). The task calls the storage directly, so
/// use it only for storage that never blocks, such as [`MemoryStorage`]; it sleeps
/// [`Options::simulated_sync_delay`] before each sync, in tokio time (virtual under
/// turmoil). This is the form the simulation uses: no threads, no files.
pub fn open_on_runtime<S: Storage>(storage: S, options: &Options) -> Result<Opened, StoreError> {
    let prepared = writer::prepare(storage, options)?;
    Ok(writer::spawn_task(prepared, options.simulated_sync_delay))
}
