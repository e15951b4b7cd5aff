//! The journal writer: group commit, retry after disk errors, and compaction from a shadow
//! copy of the state.
//!
//! Two synchronous parts, [`Log`] (appends and syncs records to the active segment, starts new
//! segments) and [`Compactor`] (keeps the shadow state and writes snapshots from it), are run
//! either on two threads ([`spawn_threads`]) or inline in one tokio task ([`spawn_task`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::codec::{
    event_size_hint, file_header, put_batch, put_snapshot_end, FileKind, RecordBuilder, TooLarge,
    FILE_HEADER_BYTES,
};
use super::inbox::Inbox;
use super::recovery::{journal_name, recover, snapshot_name, snapshot_temp_name, Active, FileName};
use super::storage::{Storage, StorageFile};
use super::{Completion, Journal, Opened, Options, RecoveryReport, StatsHandle, StoreError};
use crate::engine::{Event, QueueStore};

/// A record's payload is closed once it passes this size, and the next one begins (in the
/// same write): bounds the memory of one record and keeps lengths far from the 4 GiB limit.
const RECORD_BYTES_TARGET: usize = 64 << 20;
/// Snapshot records are cut at about this size.
const SNAPSHOT_RECORD_BYTES: usize = 1 << 20;
/// A snapshot being written is synced every this many bytes: one large flush at the end
/// would sit in the disk's queue in front of the journal's syncs and delay every reply
/// waiting for them.
const SNAPSHOT_SYNC_BYTES: u64 = 4 << 20;
/// How many bytes of batches one group commit gathers before it writes.
const GATHER_BYTES_MAX: usize = 256 << 20;
/// Durable batches are handed to the snapshot thread (to update its shadow state) once they
/// hold this many bytes, and always before a snapshot starts: one wake-up of that thread per
/// many commits rather than one per commit, which on an idle switch cost a futex wake and a
/// context switch on every sync.
const SHADOW_HANDOFF_BYTES: usize = 1 << 20;
/// How far the active journal segment keeps zeros ahead of its last record (see
/// [`super::storage::DiskFile`]): a sync then flushes data only, and the file grows (its size
/// committed once) every this many bytes rather than on every commit. At most a quarter of
/// the compaction threshold, so that disk use stays bounded by the live data.
const JOURNAL_PREALLOCATE_BYTES_MAX: u64 = 512 << 10;
/// How long the writer lets batches that no reply waits for (lazy Acks alone) wait for one
/// that some reply does, so that they share its sync; past it they are synced anyway. It
/// bounds how long a lazy Ack stays undurable on an otherwise idle switch.
pub const DEFERRED_SYNC_MAX: Duration = Duration::from_millis(5);
/// The first pause before retrying a failed write; it doubles up to the maximum.
const RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(1);
/// How many times closing retries a failing disk before giving up.
const CLOSE_ATTEMPTS_MAX: u32 = 5;

/// The zeros the active segment keeps ahead of its records under `options`.
fn journal_preallocation(options: &Options) -> u64 {
    JOURNAL_PREALLOCATE_BYTES_MAX.min(options.compaction_bytes_min / 4)
}

/// Messages to the writer. The batches themselves wait in the [`Inbox`] (where an Ack may
/// still withdraw a store from them); the channel only wakes the writer.
#[derive(Debug)]
pub(crate) enum ToWriter {
    /// A batch was added to the inbox.
    Submitted,
    Close,
}

/// One driver batch: the events of one wake-up.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) seq: u64,
    pub(crate) events: Vec<Event>,
    pub(crate) id_floor: i64,
}

impl Batch {
    pub(crate) fn size_hint(&self) -> usize {
        self.events.iter().map(event_size_hint).sum::<usize>() + 16
    }
}

/// Appends records to the active journal segment.
pub(crate) struct Log<S: Storage> {
    storage: S,
    options: Options,
    generation: u64,
    file: S::File,
    /// Bytes of the active segment known durable.
    good_len: u64,
    /// Something may have been written after `good_len` (an unsynced or failed write): cut
    /// it off before writing again.
    dirty: bool,
    next_seq: u64,
    /// The records of the last write, until synced.
    buf: Vec<u8>,
    records_in_buf: u64,
    /// Durable lengths of the segments written since the last snapshot.
    segments: BTreeMap<u64, u64>,
    snapshot_bytes: u64,
    /// After a failed compaction, wait until the journal has grown to this before trying
    /// again.
    compaction_retry_bytes: u64,
    stats: StatsHandle,
}

impl<S: Storage> Log<S> {
    /// The sequence number of the last record made durable.
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The generation of the active segment.
    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes `batches` as one record (several if huge), replacing anything written since
    /// the last successful [`Log::sync`]: after a failure, pass every batch not yet synced.
    pub(crate) fn write(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        if self.dirty {
            // A failed or unsynced write may have left bytes behind; a full disk can still
            // shrink a file.
            self.file
                .truncate(self.good_len)
                .map_err(|source| self.io_error("truncate", source))?;
            self.dirty = false;
        }
        self.buf.clear();
        self.records_in_buf = 0;
        let id_floor = batches.iter().map(|b| b.id_floor).max().unwrap_or(0);
        let mut events = batches.iter().flat_map(|b| b.events.iter()).peekable();
        // Batches without events still carry an id floor, so they still make a record.
        while events.peek().is_some() || (self.records_in_buf == 0 && !batches.is_empty()) {
            let record_start = self.buf.len();
            let mut chunk = Vec::new();
            let mut chunk_bytes = 0;
            while let Some(event) = events.peek() {
                if !chunk.is_empty() && chunk_bytes >= RECORD_BYTES_TARGET {
                    break;
                }
                chunk_bytes += event_size_hint(event);
                chunk.push(*event);
                events.next();
            }
            let seq = self.next_seq + self.records_in_buf;
            let builder = RecordBuilder::begin(&mut self.buf);
            let encoded = put_batch(&mut self.buf, id_floor, chunk.into_iter())
                .and_then(|()| builder.finish(&mut self.buf, seq));
            if let Err(TooLarge(bytes)) = encoded {
                self.buf.truncate(record_start);
                return Err(StoreError::TooLarge { bytes });
            }
            self.records_in_buf += 1;
        }
        self.dirty = true;
        self.file
            .write_all(&self.buf)
            .map_err(|source| self.io_error("write", source))
    }

    /// Makes the last [`Log::write`] durable.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        self.file
            .sync()
            .map_err(|source| self.io_error("sync", source))?;
        let elapsed = started.elapsed();
        self.dirty = false;
        self.good_len += self.buf.len() as u64;
        self.next_seq += self.records_in_buf;
        self.segments.insert(self.generation, self.good_len);
        let (records, bytes) = (self.records_in_buf, self.buf.len() as u64);
        let journal_bytes = self.journal_bytes();
        self.stats.update(|stats| {
            stats.records += records;
            stats.syncs += 1;
            stats.bytes_written += bytes;
            stats.sync_time_max = stats.sync_time_max.max(elapsed);
            stats.journal_bytes = journal_bytes;
        });
        self.records_in_buf = 0;
        Ok(())
    }

    fn journal_bytes(&self) -> u64 {
        self.segments.values().sum()
    }

    /// Whether the journal has grown enough, relative to the live data (the last snapshot),
    /// to be worth replacing by a snapshot.
    pub(crate) fn wants_compaction(&self) -> bool {
        let journal = self.journal_bytes();
        let relative = (self.snapshot_bytes as f64 * self.options.compaction_ratio) as u64;
        journal >= self.options.compaction_bytes_min.max(relative)
            && journal >= self.compaction_retry_bytes
    }

    /// Starts segment `generation + 1` (durably) and makes it the active one. A snapshot of
    /// everything before it can then be written.
    pub(crate) fn rotate(&mut self) -> Result<u64, StoreError> {
        let started = Instant::now();
        let generation = self.generation + 1;
        // The segment being left keeps only its records: recovery accepts a zeroed tail on
        // any segment, but a finished one should not hold preallocated space for ever.
        self.file
            .truncate(self.good_len)
            .and_then(|()| self.file.sync())
            .map_err(|source| self.io_error("trim", source))?;
        let mut file = create_segment(&self.storage, generation)?;
        file.preallocate(journal_preallocation(&self.options));
        self.file = file;
        self.generation = generation;
        self.good_len = FILE_HEADER_BYTES as u64;
        self.dirty = false;
        self.segments.insert(generation, self.good_len);
        let elapsed = started.elapsed();
        self.stats.update(|stats| {
            stats.generation = generation;
            stats.rotation_time_max = stats.rotation_time_max.max(elapsed);
        });
        Ok(generation)
    }

    /// Snapshot `generation` of `bytes` bytes is complete: the segments before it are gone.
    pub(crate) fn compaction_done(&mut self, generation: u64, bytes: u64) {
        self.snapshot_bytes = bytes;
        self.segments.retain(|g, _| *g >= generation);
        self.compaction_retry_bytes = 0;
        let journal_bytes = self.journal_bytes();
        self.stats.update(|stats| {
            stats.compactions += 1;
            stats.snapshot_bytes = bytes;
            stats.journal_bytes = journal_bytes;
        });
    }

    /// A compaction failed: try again once the journal has grown by another minimum.
    pub(crate) fn compaction_failed(&mut self) {
        self.compaction_retry_bytes = self.journal_bytes() + self.options.compaction_bytes_min;
        self.stats.update(|stats| stats.compaction_failures += 1);
    }

    fn io_error(&self, action: &'static str, source: std::io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: self.storage.describe(&journal_name(self.generation)),
            source,
        }
    }
}

/// Creates journal segment `generation` with its header, durably (file and directory).
pub(crate) fn create_segment<S: Storage>(
    storage: &S,
    generation: u64,
) -> Result<S::File, StoreError> {
    let name = journal_name(generation);
    let io = |action: &'static str| {
        let path = storage.describe(&name);
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    };
    let result = (|| {
        let mut file = storage.create(&name).map_err(io("create"))?;
        file.write_all(&file_header(FileKind::Journal, generation))
            .map_err(io("write"))?;
        file.sync().map_err(io("sync"))?;
        storage.sync_dir().map_err(io("sync the directory of"))?;
        Ok(file)
    })();
    if result.is_err() {
        // Best effort: a half-made segment would be taken for the newest one by recovery
        // (harmless, it holds nothing, but untidy).
        let _ = storage.remove(&name);
    }
    result
}

/// Writes snapshot `generation` of `store` (whose last journal record is `journal_seq`):
/// to a temporary name, synced, then renamed into place, directory synced. Returns its size.
/// `stop` abandons it part-way (the temporary file is removed).
pub(crate) fn write_snapshot<S: Storage>(
    storage: &S,
    generation: u64,
    store: &QueueStore,
    journal_seq: u64,
    stop: &AtomicBool,
) -> Result<u64, StoreError> {
    let temp = snapshot_temp_name(generation);
    let io = |action: &'static str, name: &str| {
        let path = storage.describe(name);
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    };
    let mut file = storage.create(&temp).map_err(io("create", &temp))?;
    let result = (|| {
        let mut written = FILE_HEADER_BYTES as u64;
        file.write_all(&file_header(FileKind::Snapshot, generation))
            .map_err(io("write", &temp))?;
        let mut buf = Vec::with_capacity(SNAPSHOT_RECORD_BYTES + 4096);
        let mut seq = 0u64;
        let mut total = 0u64;
        let mut events = store.snapshot_events().peekable();
        while events.peek().is_some() {
            if stop.load(Ordering::Relaxed) {
                return Err(StoreError::Closed);
            }
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while bytes < SNAPSHOT_RECORD_BYTES {
                let Some(event) = events.next() else { break };
                bytes += event_size_hint(&event);
                chunk.push(event);
            }
            buf.clear();
            seq += 1;
            total += chunk.len() as u64;
            let builder = RecordBuilder::begin(&mut buf);
            put_batch(&mut buf, store.next_index(), chunk.iter())
                .and_then(|()| builder.finish(&mut buf, seq))
                .map_err(|TooLarge(bytes)| StoreError::TooLarge { bytes })?;
            file.write_all(&buf).map_err(io("write", &temp))?;
            let before = written;
            written += buf.len() as u64;
            if before / SNAPSHOT_SYNC_BYTES != written / SNAPSHOT_SYNC_BYTES {
                file.sync().map_err(io("sync", &temp))?;
            }
        }
        buf.clear();
        let builder = RecordBuilder::begin(&mut buf);
        put_snapshot_end(&mut buf, store.next_index(), total, journal_seq);
        builder
            .finish(&mut buf, seq + 1)
            .map_err(|TooLarge(bytes)| StoreError::TooLarge { bytes })?;
        file.write_all(&buf).map_err(io("write", &temp))?;
        written += buf.len() as u64;
        file.sync().map_err(io("sync", &temp))?;
        Ok(written)
    })();
    drop(file);
    let written = match result {
        Ok(written) => written,
        Err(error) => {
            let _ = storage.remove(&temp);
            return Err(error);
        }
    };
    let name = snapshot_name(generation);
    storage
        .rename(&temp, &name)
        .map_err(io("rename into place", &name))?;
    storage
        .sync_dir()
        .map_err(io("sync the directory of", &name))?;
    Ok(written)
}

/// Removes journal segments and snapshots older than snapshot `generation`, now complete.
/// Failures are only logged: leftovers are harmless and removed at the next start.
fn remove_older<S: Storage>(storage: &S, generation: u64) {
    let names = match storage.list() {
        Ok(names) => names,
        Err(error) => {
            tracing::warn!(%error, "cannot list the state directory to remove old files");
            return;
        }
    };
    for name in names {
        let old = match FileName::parse(&name) {
            FileName::Journal(g) | FileName::Snapshot(g) | FileName::SnapshotTemp(g) => {
                g < generation
            }
            FileName::Other => false,
        };
        if old {
            if let Err(error) = storage.remove(&name) {
                tracing::warn!(%error, file = %storage.describe(&name), "cannot remove an old file");
            }
        }
    }
    if let Err(error) = storage.sync_dir() {
        tracing::warn!(%error, "cannot sync the state directory after removing old files");
    }
}

/// Keeps a shadow copy of the durable state (what the journal holds) and writes snapshots
/// from it.
pub(crate) struct Compactor<S: Storage> {
    storage: S,
    shadow: QueueStore,
    journal_seq: u64,
    stats: StatsHandle,
}

impl<S: Storage> Compactor<S> {
    /// Applies batches that were just made durable, whose last record is `journal_seq`.
    pub(crate) fn apply(&mut self, batches: &[Batch], journal_seq: u64) {
        for batch in batches {
            for event in &batch.events {
                self.shadow.apply(event);
            }
            self.shadow.raise_next_index(batch.id_floor);
        }
        self.journal_seq = journal_seq;
    }

    /// Writes snapshot `generation` of the shadow state, then removes what it replaces.
    pub(crate) fn snapshot(
        &mut self,
        generation: u64,
        stop: &AtomicBool,
    ) -> Result<u64, StoreError> {
        let started = Instant::now();
        let bytes = write_snapshot(
            &self.storage,
            generation,
            &self.shadow,
            self.journal_seq,
            stop,
        )?;
        remove_older(&self.storage, generation);
        let elapsed = started.elapsed();
        tracing::info!(
            generation,
            bytes,
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "compaction: snapshot written"
        );
        self.stats
            .update(|stats| stats.snapshot_time_max = stats.snapshot_time_max.max(elapsed));
        Ok(bytes)
    }
}

/// A recovered store with its writer parts, ready to run.
pub(crate) struct Prepared<S: Storage> {
    log: Log<S>,
    compactor: Compactor<S>,
    store: QueueStore,
    report: RecoveryReport,
    stats: StatsHandle,
}

impl<S: Storage> Prepared<S> {
    /// The parts, for tests that drive them by hand.
    #[cfg(test)]
    pub(crate) fn into_parts(self) -> (Log<S>, Compactor<S>, QueueStore, RecoveryReport) {
        (self.log, self.compactor, self.store, self.report)
    }
}

/// Recovers `storage`, readies the active segment (cutting off a torn tail), drops transient
/// queues durably, and, after salvage, writes a fresh snapshot and moves the old files aside.
pub(crate) fn prepare<S: Storage>(
    storage: S,
    options: &Options,
) -> Result<Prepared<S>, StoreError> {
    let recovered = recover(&storage, options.salvage)?;
    let mut store = recovered.store;
    let mut report = recovered.report;
    let removals = store.transient_queue_removals();
    for event in &removals {
        store.apply(event);
    }
    report.transient_queues_dropped = removals.len();
    report.queues = store.queue_count();
    report.messages = store.message_count();
    let stats = StatsHandle::default();
    let never = AtomicBool::new(false);

    let (generation, file, good_len, segments, snapshot_bytes) = if report.damage.is_empty() {
        let (generation, file, good_len) = ready_active(&storage, recovered.active)?;
        for name in &recovered.obsolete {
            tracing::info!(file = %storage.describe(name), "removing a file left by an interrupted compaction");
            let _ = storage.remove(name);
        }
        let mut segments = recovered.segments;
        segments.insert(generation, good_len);
        (
            generation,
            file,
            good_len,
            segments,
            recovered.snapshot_bytes,
        )
    } else {
        // Salvage: make what was recovered the new baseline, and keep the damaged files
        // for inspection under another name.
        let generation = recovered.max_generation + 1;
        let bytes = write_snapshot(&storage, generation, &store, recovered.last_seq, &never)?;
        let file = create_segment(&storage, generation)?;
        for name in &recovered.state_files {
            let aside = format!("{name}.salvaged");
            if let Err(source) = storage.rename(name, &aside) {
                return Err(StoreError::Io {
                    action: "move aside",
                    path: storage.describe(name),
                    source,
                });
            }
        }
        storage.sync_dir().map_err(|source| StoreError::Io {
            action: "sync",
            path: storage.describe(""),
            source,
        })?;
        tracing::warn!(
            damaged_regions = report.damage.len(),
            generation,
            "salvage: wrote a fresh snapshot of the intact data; the old files end in .salvaged"
        );
        let good_len = FILE_HEADER_BYTES as u64;
        (
            generation,
            file,
            good_len,
            BTreeMap::from([(generation, good_len)]),
            bytes,
        )
    };

    let mut file = file;
    file.preallocate(journal_preallocation(options));
    let mut log = Log {
        storage: storage.clone(),
        options: options.clone(),
        generation,
        file,
        good_len,
        dirty: false,
        next_seq: recovered.last_seq + 1,
        buf: Vec::new(),
        records_in_buf: 0,
        segments,
        snapshot_bytes,
        compaction_retry_bytes: 0,
        stats: stats.clone(),
    };
    if !removals.is_empty() {
        // Journal the drop, or a persistent queue later created under a dropped transient
        // queue's name would be mistaken for it (a create of an existing queue is a no-op)
        // and dropped at the next start.
        let batch = Batch {
            seq: 0,
            events: removals,
            id_floor: store.next_index(),
        };
        log.write(std::slice::from_ref(&batch))?;
        log.sync()?;
    }
    let journal_bytes = log.journal_bytes();
    stats.update(|s| {
        s.generation = generation;
        s.journal_bytes = journal_bytes;
        s.snapshot_bytes = snapshot_bytes;
    });
    let compactor = Compactor {
        storage,
        shadow: store.clone(),
        journal_seq: log.last_seq(),
        stats: stats.clone(),
    };
    tracing::info!(
        queues = report.queues,
        messages = report.messages,
        snapshot = ?report.snapshot_generation,
        journal_records = report.journal_records,
        transient_queues_dropped = report.transient_queues_dropped,
        "recovered the durable state"
    );
    Ok(Prepared {
        log,
        compactor,
        store,
        report,
        stats,
    })
}

/// Opens the segment recovery chose, cut back to its good length, or creates it.
fn ready_active<S: Storage>(
    storage: &S,
    active: Active,
) -> Result<(u64, S::File, u64), StoreError> {
    match active {
        Active::Create(generation) => {
            let file = create_segment(storage, generation)?;
            Ok((generation, file, FILE_HEADER_BYTES as u64))
        }
        Active::Continue {
            generation,
            good_len,
            file_len,
            header_torn,
        } => {
            let name = journal_name(generation);
            let io = |action: &'static str| {
                let path = storage.describe(&name);
                move |source| StoreError::Io {
                    action,
                    path,
                    source,
                }
            };
            let mut file = storage.open_append(&name).map_err(io("open"))?;
            if header_torn {
                file.truncate(0).map_err(io("truncate"))?;
                file.write_all(&file_header(FileKind::Journal, generation))
                    .map_err(io("write"))?;
                file.sync().map_err(io("sync"))?;
                return Ok((generation, file, FILE_HEADER_BYTES as u64));
            }
            if good_len < file_len {
                // The torn tail must go before anything is appended, or the next record
                // would follow garbage and look like corruption.
                file.truncate(good_len).map_err(io("truncate"))?;
                file.sync().map_err(io("sync"))?;
            }
            Ok((generation, file, good_len))
        }
    }
}

fn send(completions: &mpsc::UnboundedSender<Completion>, completion: Completion) {
    // The driver may be gone (the switch was dropped); the journal still finishes its work.
    let _ = completions.send(completion);
}

/// The batches a writer has taken from its inbox and not yet made durable.
#[derive(Default)]
struct Pending {
    batches: Vec<Batch>,
    /// The sum of their size hints.
    bytes: usize,
    /// A reply waits for one of them.
    urgent: bool,
}

impl Pending {
    /// Drains the writer's wake-ups and takes the waiting batches (up to
    /// [`GATHER_BYTES_MAX`]), noting whether a reply waits for them; returns whether a close
    /// was asked for.
    fn gather(&mut self, receiver: &mut mpsc::UnboundedReceiver<ToWriter>, inbox: &Inbox) -> bool {
        let mut closing = false;
        // Wake-ups first: every batch submitted before a Close is in the inbox by then.
        loop {
            match receiver.try_recv() {
                Ok(ToWriter::Submitted) => {}
                Ok(ToWriter::Close) => closing = true,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closing = true;
                    break;
                }
            }
        }
        self.urgent |= inbox.take(&mut self.batches, &mut self.bytes, GATHER_BYTES_MAX);
        closing
    }

    /// Whether it waits for nothing to be made durable.
    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Forgets the batches (now durable), keeping the buffer.
    fn committed(&mut self) {
        self.batches.clear();
        self.bytes = 0;
        self.urgent = false;
    }
}

fn journal_handle(
    stats: StatsHandle,
) -> (
    Journal,
    mpsc::UnboundedReceiver<ToWriter>,
    mpsc::UnboundedSender<Completion>,
    Arc<Inbox>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let (completion_sender, completions) = mpsc::unbounded_channel();
    let inbox = Arc::new(Inbox::default());
    (
        Journal {
            sender,
            inbox: inbox.clone(),
            completions,
            stats,
        },
        receiver,
        completion_sender,
        inbox,
    )
}

enum ToCompactor {
    Apply(Vec<Batch>, u64),
    Snapshot(u64),
}

enum FromCompactor {
    Done { generation: u64, bytes: u64 },
    Failed,
}

/// Runs the writer and the snapshotter on two threads.
pub(crate) fn spawn_threads<S: Storage>(prepared: Prepared<S>) -> Opened {
    let Prepared {
        mut log,
        mut compactor,
        store,
        report,
        stats,
    } = prepared;
    let (journal, mut receiver, completions, inbox) = journal_handle(stats.clone());
    let (to_compactor, compactor_inbox) = std_mpsc::channel::<ToCompactor>();
    let (compactor_results, results) = std_mpsc::channel::<FromCompactor>();
    let stop = Arc::new(AtomicBool::new(false));
    let compactor_stop = stop.clone();
    let compactor_thread = std::thread::Builder::new()
        .name("journal-snapshot".into())
        .spawn(move || {
            while let Ok(message) = compactor_inbox.recv() {
                match message {
                    ToCompactor::Apply(batches, seq) => compactor.apply(&batches, seq),
                    ToCompactor::Snapshot(generation) => {
                        let result = match compactor.snapshot(generation, &compactor_stop) {
                            Ok(bytes) => FromCompactor::Done { generation, bytes },
                            Err(StoreError::Closed) => FromCompactor::Failed,
                            Err(error) => {
                                tracing::warn!(%error, "compaction failed; the journal keeps everything");
                                FromCompactor::Failed
                            }
                        };
                        let _ = compactor_results.send(result);
                    }
                }
            }
        });
    let compactor_thread = match compactor_thread {
        Ok(handle) => Some(handle),
        Err(error) => {
            // Without the snapshot thread the journal still works; it just never compacts.
            tracing::error!(%error, "cannot start the snapshot thread; compaction is off");
            None
        }
    };
    let writer_nice = log.options.writer_nice;
    let spawned = std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || {
            super::writer_priority::apply_to_current_thread(writer_nice);
            let mut pending = Pending::default();
            // Durable batches not yet applied to the snapshot thread's shadow state.
            let mut unapplied: Vec<Batch> = Vec::new();
            let mut unapplied_bytes = 0usize;
            let mut closing = false;
            let mut compacting = false;
            let mut delay = RETRY_DELAY_MIN;
            let mut close_attempts = 0u32;
            let outcome = loop {
                if pending.is_empty() && !closing {
                    match receiver.blocking_recv() {
                        Some(ToWriter::Submitted) => {}
                        Some(ToWriter::Close) | None => closing = true,
                    }
                }
                closing |= pending.gather(&mut receiver, &inbox);
                if !pending.is_empty() && !pending.urgent && !closing {
                    // No reply waits for these (lazy Acks): let them ride with the next sync
                    // one does.
                    inbox.wait_until_urgent(DEFERRED_SYNC_MAX);
                    closing |= pending.gather(&mut receiver, &inbox);
                }
                while let Ok(result) = results.try_recv() {
                    compacting = false;
                    match result {
                        FromCompactor::Done { generation, bytes } => {
                            log.compaction_done(generation, bytes)
                        }
                        FromCompactor::Failed => log.compaction_failed(),
                    }
                }
                if !pending.is_empty() {
                    match commit(&mut log, &pending.batches, &stats) {
                        Ok(through) => {
                            send(&completions, Completion::Synced { through });
                            delay = RETRY_DELAY_MIN;
                            if compactor_thread.is_some() {
                                unapplied.append(&mut pending.batches);
                                unapplied_bytes += pending.bytes;
                                if unapplied_bytes >= SHADOW_HANDOFF_BYTES {
                                    let batches = std::mem::take(&mut unapplied);
                                    let _ = to_compactor.send(ToCompactor::Apply(batches, log.last_seq()));
                                    unapplied_bytes = 0;
                                }
                            }
                            pending.committed();
                        }
                        Err(error) => {
                            let error = Arc::new(error);
                            send(&completions, Completion::Failed { error: error.clone() });
                            if closing {
                                close_attempts += 1;
                                if close_attempts >= CLOSE_ATTEMPTS_MAX {
                                    break Err(error);
                                }
                            }
                            std::thread::sleep(delay);
                            delay = (delay * 2).min(RETRY_DELAY_MAX);
                            continue;
                        }
                    }
                }
                if compactor_thread.is_some() && !compacting && !closing && log.wants_compaction() {
                    // The snapshot must hold everything written before the new segment.
                    if !unapplied.is_empty() {
                        let batches = std::mem::take(&mut unapplied);
                        let _ = to_compactor.send(ToCompactor::Apply(batches, log.last_seq()));
                        unapplied_bytes = 0;
                    }
                    match log.rotate() {
                        Ok(generation) => {
                            compacting = true;
                            let _ = to_compactor.send(ToCompactor::Snapshot(generation));
                        }
                        Err(error) => {
                            tracing::warn!(%error, "cannot start a new journal segment for compaction");
                            log.compaction_failed();
                        }
                    }
                }
                if closing && pending.is_empty() {
                    break Ok(());
                }
            };
            // Abandon a snapshot in progress: the journal holds everything it would.
            stop.store(true, Ordering::Relaxed);
            drop(to_compactor);
            if let Some(handle) = compactor_thread {
                let _ = handle.join();
            }
            // Close the files (and release the directory lock) before saying so.
            drop(log);
            send(&completions, Completion::Closed(outcome));
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the journal writer thread");
    }
    Opened {
        store,
        journal,
        report,
    }
}

/// Writes and syncs `pending` as one group commit; returns the highest batch sequence
/// number now durable.
fn commit<S: Storage>(
    log: &mut Log<S>,
    pending: &[Batch],
    stats: &StatsHandle,
) -> Result<u64, StoreError> {
    let result = log.write(pending).and_then(|()| log.sync());
    record_commit(&result, pending, stats, "journal write failed");
    result.map(|()| pending.last().map_or(0, |b| b.seq))
}

/// Runs the writer, with inline compaction, as one tokio task.
pub(crate) fn spawn_task<S: Storage>(prepared: Prepared<S>, sync_delay: Duration) -> Opened {
    let Prepared {
        mut log,
        mut compactor,
        store,
        report,
        stats,
    } = prepared;
    let (journal, mut receiver, completions, inbox) = journal_handle(stats.clone());
    tokio::spawn(async move {
        let never = AtomicBool::new(false);
        let mut pending = Pending::default();
        let mut closing = false;
        let mut delay = RETRY_DELAY_MIN;
        let mut close_attempts = 0u32;
        let outcome = loop {
            if pending.is_empty() && !closing {
                match receiver.recv().await {
                    Some(ToWriter::Submitted) => {}
                    Some(ToWriter::Close) | None => closing = true,
                }
            }
            closing |= pending.gather(&mut receiver, &inbox);
            if !pending.is_empty() && !pending.urgent && !closing {
                // As the threaded writer: deferrable batches wait for an urgent one, here
                // woken by the wake-up every submission and hurry sends.
                let deadline = tokio::time::Instant::now() + DEFERRED_SYNC_MAX;
                while !inbox.is_urgent() {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(ToWriter::Submitted)) => {}
                        Ok(Some(ToWriter::Close) | None) => {
                            closing = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                closing |= pending.gather(&mut receiver, &inbox);
            }
            if !pending.is_empty() {
                let mut result = log.write(&pending.batches);
                if result.is_ok() && !sync_delay.is_zero() {
                    // The window in which a simulated crash loses the write.
                    tokio::time::sleep(sync_delay).await;
                    // Batches that arrived meanwhile wait for the next commit.
                }
                if result.is_ok() {
                    result = commit_sync(&mut log, &pending.batches, &stats);
                } else {
                    let error = result.as_ref().err().map(ToString::to_string);
                    tracing::error!(error, "journal write failed");
                    stats.update(|s| {
                        s.write_errors += 1;
                        s.failing = true;
                    });
                }
                match result {
                    Ok(()) => {
                        let through = pending.batches.last().map_or(0, |b| b.seq);
                        send(&completions, Completion::Synced { through });
                        delay = RETRY_DELAY_MIN;
                        compactor.apply(&pending.batches, log.last_seq());
                        pending.committed();
                    }
                    Err(error) => {
                        let error = Arc::new(error);
                        send(
                            &completions,
                            Completion::Failed {
                                error: error.clone(),
                            },
                        );
                        if closing {
                            close_attempts += 1;
                            if close_attempts >= CLOSE_ATTEMPTS_MAX {
                                break Err(error);
                            }
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RETRY_DELAY_MAX);
                        continue;
                    }
                }
            }
            if !closing && log.wants_compaction() {
                match log.rotate() {
                    Ok(generation) => match compactor.snapshot(generation, &never) {
                        Ok(bytes) => log.compaction_done(generation, bytes),
                        Err(error) => {
                            tracing::warn!(%error, "compaction failed; the journal keeps everything");
                            log.compaction_failed();
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%error, "cannot start a new journal segment for compaction");
                        log.compaction_failed();
                    }
                }
            }
            if closing && pending.is_empty() {
                break Ok(());
            }
        };
        drop(log);
        drop(compactor);
        send(&completions, Completion::Closed(outcome));
    });
    Opened {
        store,
        journal,
        report,
    }
}

/// Counts a group commit's outcome in the journal stats (which the driver reads to refuse
/// changes while the journal fails) and logs the transitions.
fn record_commit(
    result: &Result<(), StoreError>,
    pending: &[Batch],
    stats: &StatsHandle,
    failure: &str,
) {
    match result {
        Ok(()) => {
            let count = pending.len() as u64;
            stats.update(|s| {
                s.batches += count;
                if s.failing {
                    tracing::info!("the journal is writable again");
                }
                s.failing = false;
            });
        }
        Err(error) => {
            tracing::error!(%error, "{failure}; mutating requests are refused until it recovers");
            stats.update(|s| {
                s.write_errors += 1;
                s.failing = true;
            });
        }
    }
}

/// The sync half of [`commit`], for the task runner which sleeps between the halves.
fn commit_sync<S: Storage>(
    log: &mut Log<S>,
    pending: &[Batch],
    stats: &StatsHandle,
) -> Result<(), StoreError> {
    let result = log.sync();
    record_commit(&result, pending, stats, "journal sync failed");
    result
}
