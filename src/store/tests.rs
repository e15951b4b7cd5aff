//! Tests of the store as a whole: crash consistency (a property test driving the real engine),
//! torn tails, corruption and salvage, compaction, transient queues, ids, disk faults.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::codec::FILE_HEADER_BYTES;
use super::recovery::{journal_name, snapshot_name, snapshot_temp_name};
use super::writer::{prepare, Batch, Compactor, Log};
use super::*;
use crate::engine::{self, AckSync, ConnectionId, Engine, Output, RequestId, Timestamp};
use crate::protocol::{Message, MessageId, MessageKind, QueueName, Reply, Request, SessionToken};

const START: Timestamp = Timestamp::from_unix_nanos(1_700_000_000_000_000_000);

fn small_options() -> Options {
    Options {
        compaction_bytes_min: 600,
        compaction_ratio: 1.0,
        ..Options::default()
    }
}

/// The durable state as recovery must rebuild it: queues and messages, transient queues
/// left out (recovery drops them).
fn durable_view(store: &QueueStore) -> Vec<Event> {
    store
        .snapshot_events()
        .filter(|event| match event {
            Event::QueueCreated { owner, .. } => owner.is_none(),
            Event::MessageStored { id, .. } => store
                .queue(&id.queue)
                .is_some_and(|queue| queue.owner.is_none()),
            _ => true,
        })
        .collect()
}

fn max_id(events: &[Event]) -> Option<i64> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::MessageStored { id, .. } => Some(id.index),
            _ => None,
        })
        .max()
}

/// An engine over a journal on [`MemoryStorage`], driven by hand the way the driver does
/// (batches per operation, replies held until their batch is synced) but synchronously, so
/// that a test decides exactly where the syncs and the crash fall.
struct Harness {
    storage: MemoryStorage,
    log: Log<MemoryStorage>,
    compactor: Compactor<MemoryStorage>,
    engine: Engine,
    now: Timestamp,
    next_request: u64,
    next_batch: u64,
    /// Batches not yet synced.
    unsynced: Vec<Batch>,
    /// Operations whose `after_sync` reply waits for the next sync.
    held: Vec<usize>,
    /// Every operation up to this index had its reply released.
    released_through: usize,
    /// The durable view after each operation (index 0: before any).
    views: Vec<Vec<Event>>,
    /// Every event emitted so far.
    history: Vec<Event>,
    /// The highest message id a reply showed.
    shown_max: Option<i64>,
    /// The highest id floor submitted.
    submitted_floor: i64,
    ops: usize,
}

impl Harness {
    fn new(storage: MemoryStorage, options: Options) -> Self {
        Self::with_ack_sync(storage, options, AckSync::Strict)
    }

    fn with_ack_sync(storage: MemoryStorage, options: Options, ack_sync: AckSync) -> Self {
        let (log, compactor, store, _report) =
            prepare(storage.clone(), &options).unwrap().into_parts();
        let submitted_floor = store.next_index();
        let config = engine::Config {
            ack_sync,
            ..engine::Config::default()
        };
        let engine = Engine::with_store(config, START, store);
        let view = durable_view(engine.store());
        Self {
            storage,
            log,
            compactor,
            engine,
            now: START,
            next_request: 0,
            next_batch: 1,
            unsynced: Vec::new(),
            held: Vec::new(),
            released_through: 0,
            views: vec![view],
            history: Vec::new(),
            shown_max: None,
            submitted_floor,
            ops: 0,
        }
    }

    fn connect(&mut self, connection: u64) {
        self.engine.handle_connect(ConnectionId(connection));
    }

    /// One operation: a request, or a disconnect (followed by a reconnect).
    fn op(&mut self, connection: u64, request: Option<Request>) {
        self.ops += 1;
        self.now = self.now.saturating_add(Duration::from_millis(1));
        match request {
            Some(request) => {
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.engine
                    .handle_request(self.now, ConnectionId(connection), id, request);
            }
            None => {
                self.engine
                    .handle_disconnect(self.now, ConnectionId(connection));
                self.engine.handle_connect(ConnectionId(connection));
            }
        }
        let mut events = Vec::new();
        let mut wait = false;
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Persist(event) => events.push(event),
                Output::Reply {
                    after_sync, reply, ..
                } => {
                    wait |= after_sync;
                    if let Reply::Sent(Some(id)) = reply {
                        self.shown_max = self.shown_max.max(Some(id.index));
                    }
                }
                Output::Shutdown => {}
            }
        }
        // A change journalled without its reply waiting (a lazy ack) is promised only once
        // the next sync covers it, so it counts as held until then.
        let promised_at_sync = wait || !events.is_empty();
        let next_index = self.engine.store().next_index();
        if !events.is_empty() || floor_due(next_index, self.submitted_floor) {
            self.history.extend(events.iter().cloned());
            self.submitted_floor = next_index + ID_RESERVE;
            self.unsynced.push(Batch {
                seq: self.next_batch,
                events,
                id_floor: self.submitted_floor,
            });
            self.next_batch += 1;
        }
        // A reply waits if anything is unsynced (its own events or earlier ones).
        if promised_at_sync && !self.unsynced.is_empty() {
            self.held.push(self.ops);
        } else if self.held.is_empty() {
            self.released_through = self.ops;
        }
        self.views.push(durable_view(self.engine.store()));
    }

    /// A group commit: write every unsynced batch as one record and sync.
    fn sync(&mut self) {
        if !self.unsynced.is_empty() {
            self.log.write(&self.unsynced).unwrap();
            self.log.sync().unwrap();
            let batches = std::mem::take(&mut self.unsynced);
            self.compactor.apply(&batches, self.log.last_seq());
        }
        self.held.clear();
        self.released_through = self.ops;
    }

    /// Compacts inline if the journal has grown enough.
    fn maybe_compact(&mut self) {
        if self.log.wants_compaction() {
            let generation = self.log.rotate().unwrap();
            let bytes = self
                .compactor
                .snapshot(generation, &AtomicBool::new(false))
                .unwrap();
            self.log.compaction_done(generation, bytes);
        }
    }

    /// Writes the unsynced batches without syncing them: the tail a crash may tear.
    fn write_unsynced(&mut self) {
        if !self.unsynced.is_empty() {
            self.log.write(&self.unsynced).unwrap();
        }
    }

    fn active_segment(&self) -> String {
        journal_name(self.log.generation())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Login(u64, u8),
    CreatePersistent(u64, u8),
    CreateTransient(u64, u8),
    Destroy(u64, u8),
    Send(u64, u8, usize),
    Ack(u64, u8, usize),
    Disconnect(u64),
    Sync,
    Compact,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let connection = 0u64..3;
    let queue = 0u8..4;
    prop_oneof![
        2 => (connection.clone(), 0u8..3).prop_map(|(c, t)| Op::Login(c, t)),
        2 => (connection.clone(), queue.clone()).prop_map(|(c, q)| Op::CreatePersistent(c, q)),
        1 => (connection.clone(), queue.clone()).prop_map(|(c, q)| Op::CreateTransient(c, q)),
        1 => (connection.clone(), queue.clone()).prop_map(|(c, q)| Op::Destroy(c, q)),
        6 => (connection.clone(), queue.clone(), 0usize..200).prop_map(|(c, q, n)| Op::Send(c, q, n)),
        3 => (connection.clone(), queue.clone(), 0usize..8).prop_map(|(c, q, k)| Op::Ack(c, q, k)),
        1 => connection.prop_map(Op::Disconnect),
        3 => Just(Op::Sync),
        1 => Just(Op::Compact),
    ]
}

fn queue_name(queue: u8) -> QueueName {
    // Transient and persistent queues share names so that a name changes kind over time.
    QueueName::from(format!("q{queue}"))
}

fn run_op(harness: &mut Harness, op: &Op) {
    match *op {
        Op::Login(c, token) => harness.op(
            c,
            Some(Request::Login(SessionToken::from(format!("s{token}")))),
        ),
        Op::CreatePersistent(c, q) => harness.op(c, Some(Request::CreatePersistent(queue_name(q)))),
        Op::CreateTransient(c, q) => {
            harness.op(c, Some(Request::CreateTransient(Some(queue_name(q)))))
        }
        Op::Destroy(c, q) => harness.op(c, Some(Request::Destroy(queue_name(q)))),
        Op::Send(c, q, size) => {
            let payload = Bytes::from(vec![b'a' + q; size]);
            let message = Message {
                payload,
                kind: MessageKind::Request {
                    reply_to: QueueName::from("reply"),
                },
            };
            harness.op(
                c,
                Some(Request::Send {
                    queue: queue_name(q),
                    message,
                }),
            )
        }
        Op::Ack(c, q, k) => {
            let name = queue_name(q);
            let index = harness
                .engine
                .store()
                .queue(&name)
                .and_then(|queue| {
                    let ids: Vec<i64> = queue.messages.keys().copied().collect();
                    (!ids.is_empty()).then(|| ids[k % ids.len()])
                })
                .unwrap_or(k as i64);
            harness.op(c, Some(Request::Ack(MessageId::new(name, index))))
        }
        Op::Disconnect(c) => harness.op(c, None),
        Op::Sync => harness.sync(),
        Op::Compact => harness.maybe_compact(),
    }
}

fn start_harness(storage: &MemoryStorage, lazy_acks: bool) -> Harness {
    let ack_sync = if lazy_acks {
        AckSync::Lazy
    } else {
        AckSync::Strict
    };
    let mut harness = Harness::with_ack_sync(storage.clone(), small_options(), ack_sync);
    for connection in 0..3 {
        harness.connect(connection);
    }
    harness
}

/// Checks that `recovered` is the state after some prefix of the operations, at least
/// `min_prefix` long, and that its id counter is above every id handed out in that prefix.
fn check_prefix(harness: &Harness, recovered: &QueueStore, min_prefix: usize) -> usize {
    let view = durable_view(recovered);
    let prefix = (min_prefix..harness.views.len())
        .rev()
        .find(|k| harness.views[*k] == view);
    let Some(prefix) = prefix else {
        let earlier = (0..min_prefix).rev().find(|k| harness.views[*k] == view);
        panic!(
            "the recovered state is not the state after any prefix of at least {min_prefix} \
             operations (it matches prefix {earlier:?}); recovered: {view:#?}"
        );
    };
    if let Some(max) = max_id(&harness.views[prefix]) {
        assert!(recovered.next_index() > max);
    }
    prefix
}

proptest! {
    // Failures are kept beside this file (src/store/tests.proptest-regressions).
    #![proptest_config(crate::proptest_support::config(256))]

    /// Random operations, then a crash that cuts the newest journal segment at a random byte
    /// (possibly inside a record, possibly inside synced data). Recovery gives the state after
    /// some prefix of the operations; when the cut spares the synced bytes, that prefix holds
    /// every operation whose reply was released (a lazy ack's only once a sync followed it).
    /// Recovery is repeatable, and the journal continues after it.
    #[test]
    fn crash_anywhere_recovers_a_prefix(
        ops in proptest::collection::vec(op_strategy(), 1..120),
        lazy_acks in any::<bool>(),
        write_tail in any::<bool>(),
        spare_synced in any::<bool>(),
        cut_fraction in 0.0f64..=1.0,
    ) {
        let storage = MemoryStorage::new();
        let mut harness = start_harness(&storage, lazy_acks);
        for op in &ops {
            run_op(&mut harness, op);
        }
        if write_tail {
            harness.write_unsynced();
        }
        let name = harness.active_segment();
        let contents = storage.contents(&name).unwrap();
        let synced = storage.synced_len(&name).unwrap();
        let low = if spare_synced { synced } else { 0 };
        let cut = low + ((contents.len() - low) as f64 * cut_fraction) as usize;
        storage.set_contents(&name, contents[..cut].to_vec());

        let opened = prepare(storage.clone(), &small_options()).unwrap();
        let (log, _, recovered, report) = opened.into_parts();
        let min_prefix = if cut >= synced { harness.released_through } else { 0 };
        prop_assert!(report.damage.is_empty());
        check_prefix(&harness, &recovered, min_prefix);
        // Ids continue above everything ever handed out, even ids only shown and then lost
        // with the unsynced tail: every batch reserves ids ahead. (With nothing left at all,
        // the next start's time-derived floor is what keeps ids growing.)
        let anything_left = report.journal_records > 0 || report.snapshot_generation.is_some();
        if let (true, Some(max)) = (anything_left, max_id(&harness.history).max(harness.shown_max)) {
            prop_assert!(recovered.next_index() > max);
        }
        drop(log);

        // Recovering again gives the same state (the torn tail was cut off for good).
        let (log, compactor, again, _) = prepare(storage.clone(), &small_options()).unwrap().into_parts();
        prop_assert_eq!(durable_view(&again), durable_view(&recovered));
        prop_assert!(again.next_index() >= recovered.next_index());

        // And the journal continues: a new change survives the next recovery.
        let mut harness2 = Harness {
            log,
            compactor,
            engine: Engine::with_store(engine::Config::default(), START, again),
            ..Harness::new(MemoryStorage::new(), small_options())
        };
        harness2.storage = storage.clone();
        harness2.connect(9);
        harness2.op(9, Some(Request::Login(SessionToken::from("late"))));
        harness2.op(9, Some(Request::CreatePersistent(QueueName::from("after-crash"))));
        harness2.sync();
        let expected = durable_view(harness2.engine.store());
        let (_, _, last, _) = prepare(storage.clone(), &small_options()).unwrap().into_parts();
        prop_assert_eq!(durable_view(&last), expected);
    }

    /// A power failure (every file loses its unsynced bytes, except up to `kept` of them that
    /// happened to reach the disk) never loses an operation whose reply was released.
    #[test]
    fn power_loss_keeps_every_released_operation(
        ops in proptest::collection::vec(op_strategy(), 1..120),
        lazy_acks in any::<bool>(),
        kept in 0usize..400,
    ) {
        let storage = MemoryStorage::new();
        let mut harness = start_harness(&storage, lazy_acks);
        for op in &ops {
            run_op(&mut harness, op);
        }
        harness.write_unsynced();
        storage.crash_keeping_unsynced(kept);
        let (_, _, recovered, report) = prepare(storage.clone(), &small_options()).unwrap().into_parts();
        prop_assert!(report.damage.is_empty());
        check_prefix(&harness, &recovered, harness.released_through);
    }
}

/// Runs a fixed workload with several syncs and returns the harness (everything synced).
fn synced_workload(storage: &MemoryStorage, options: Options) -> Harness {
    let mut harness = Harness::new(storage.clone(), options);
    harness.connect(0);
    harness.op(0, Some(Request::Login(SessionToken::from("me"))));
    for round in 0..6u8 {
        harness.op(0, Some(Request::CreatePersistent(queue_name(round % 3))));
        for n in 0..3usize {
            run_op(&mut harness, &Op::Send(0, round % 3, 10 + n));
        }
        run_op(&mut harness, &Op::Ack(0, round % 3, 0));
        harness.sync();
    }
    harness
}

#[test]
fn recovery_replays_the_journal() {
    let storage = MemoryStorage::new();
    let harness = synced_workload(&storage, Options::default());
    let expected = durable_view(harness.engine.store());
    let (_, _, recovered, report) = prepare(storage, &Options::default()).unwrap().into_parts();
    assert_eq!(durable_view(&recovered), expected);
    assert_eq!(report.journal_records, 6);
    assert_eq!(report.torn_tail, None);
    assert!(recovered.next_index() >= harness.engine.store().next_index());
}

#[test]
fn a_torn_tail_is_dropped_and_cut_off() {
    let storage = MemoryStorage::new();
    let mut harness = synced_workload(&storage, Options::default());
    let expected = durable_view(harness.engine.store());
    run_op(&mut harness, &Op::Send(0, 0, 50));
    harness.write_unsynced();
    let name = harness.active_segment();
    let full = storage.contents(&name).unwrap();
    let synced = storage.synced_len(&name).unwrap();
    assert!(full.len() > synced + 10);
    storage.set_contents(&name, full[..synced + 10].to_vec());

    let (_, _, recovered, report) = prepare(storage.clone(), &Options::default())
        .unwrap()
        .into_parts();
    assert_eq!(durable_view(&recovered), expected);
    let torn = report.torn_tail.expect("the torn record is reported");
    assert_eq!(torn.offset, synced as u64);
    assert_eq!(torn.bytes, 10);
    assert!(torn.file.ends_with(&name));
    // The segment was cut back, so the next start sees no torn tail.
    assert_eq!(storage.contents(&name).unwrap().len(), synced);
    let (_, _, _, report) = prepare(storage, &Options::default()).unwrap().into_parts();
    assert_eq!(report.torn_tail, None);
}

#[test]
fn zeros_after_the_last_record_are_an_unwritten_tail() {
    // The writer keeps zeros ahead of its appends on disk (`StorageFile::preallocate`), and
    // a crash can leave a file longer than what was written, filled with zeros: neither is
    // a torn write, and both are cut off before the journal goes on.
    let storage = MemoryStorage::new();
    let harness = synced_workload(&storage, Options::default());
    let expected = durable_view(harness.engine.store());
    let name = harness.active_segment();
    let written = storage.contents(&name).unwrap();
    let mut contents = written.clone();
    contents.extend_from_slice(&[0u8; 4096]);
    storage.set_contents(&name, contents);
    let (_, _, recovered, report) = prepare(storage.clone(), &Options::default())
        .unwrap()
        .into_parts();
    assert_eq!(durable_view(&recovered), expected);
    assert_eq!(report.torn_tail, None);
    assert_eq!(storage.contents(&name).unwrap(), written);
}

#[test]
fn a_torn_record_before_zeros_is_still_a_torn_tail() {
    let storage = MemoryStorage::new();
    let harness = synced_workload(&storage, Options::default());
    let expected = durable_view(harness.engine.store());
    let name = harness.active_segment();
    let mut contents = storage.contents(&name).unwrap();
    let last = *record_offsets(&contents).last().unwrap();
    // The last record's second half lost (zeros where it was), as a crash mid-write leaves
    // a preallocated tail: that record is dropped, the rest kept.
    let cut = last + (contents.len() - last) / 2;
    contents[cut..].fill(0);
    contents.extend_from_slice(&[0u8; 4096]);
    storage.set_contents(&name, contents.clone());
    let (_, _, recovered, report) = prepare(storage, &Options::default()).unwrap().into_parts();
    assert_ne!(
        durable_view(&recovered),
        expected,
        "the last record is gone"
    );
    assert_eq!(
        report.torn_tail.map(|t| t.offset),
        Some(last as u64),
        "reported from the torn record on"
    );
}

fn record_offsets(data: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut offset = FILE_HEADER_BYTES;
    while let Ok(record) = super::codec::read_record(data, offset) {
        offsets.push(offset);
        offset = record.end;
    }
    offsets
}

#[test]
fn corruption_before_the_tail_refuses_to_start_and_salvage_keeps_the_rest() {
    let storage = MemoryStorage::new();
    let harness = synced_workload(&storage, Options::default());
    let name = harness.active_segment();
    let mut contents = storage.contents(&name).unwrap();
    let offsets = record_offsets(&contents);
    assert_eq!(offsets.len(), 6);
    // Damage the third record's payload.
    let damaged_at = offsets[2];
    contents[damaged_at + 25] ^= 0x40;
    storage.set_contents(&name, contents);

    let error = prepare(storage.clone(), &Options::default())
        .err()
        .expect("refuses");
    match &error {
        StoreError::Corrupt { file, offset, .. } => {
            assert!(file.ends_with(&name), "{file}");
            assert_eq!(*offset, damaged_at as u64);
        }
        other => panic!("unexpected error {other}"),
    }
    let text = error.to_string();
    assert!(text.contains(&name) && text.contains(&format!("offset {damaged_at}")));
    assert!(text.contains("--salvage"), "{text}");

    let salvage = Options {
        salvage: true,
        ..Options::default()
    };
    let (_, _, salvaged, report) = prepare(storage.clone(), &salvage).unwrap().into_parts();
    assert_eq!(report.damage.len(), 1);
    assert_eq!(report.damage[0].offset, damaged_at as u64);
    assert!(salvaged.message_count() > 0);
    // The damaged file is kept aside; the directory now opens without salvage.
    assert!(storage.file_names().contains(&format!("{name}.salvaged")));
    let (_, _, reopened, report) = prepare(storage, &Options::default()).unwrap().into_parts();
    assert!(report.damage.is_empty());
    assert_eq!(durable_view(&reopened), durable_view(&salvaged));
}

#[test]
fn a_damaged_snapshot_refuses_to_start() {
    let storage = MemoryStorage::new();
    let mut harness = synced_workload(&storage, small_options());
    harness.maybe_compact();
    let generation = harness.log.generation();
    assert!(generation > 1, "compaction happened");
    let expected = durable_view(harness.engine.store());
    let name = snapshot_name(generation);
    let mut contents = storage.contents(&name).unwrap();
    let last = contents.len() - 3;
    contents[last] ^= 1;
    storage.set_contents(&name, contents);
    let error = prepare(storage.clone(), &Options::default())
        .err()
        .expect("refuses");
    assert!(matches!(error, StoreError::Corrupt { ref file, .. } if file.ends_with(&name)));
    // Salvage keeps the intact records (here: all the data; only the end record was hit).
    let salvage = Options {
        salvage: true,
        ..Options::default()
    };
    let (_, _, salvaged, report) = prepare(storage, &salvage).unwrap().into_parts();
    assert!(!report.damage.is_empty());
    assert_eq!(durable_view(&salvaged), expected);
}

#[test]
fn a_missing_segment_refuses_to_start() {
    let storage = MemoryStorage::new();
    let mut harness = synced_workload(&storage, Options::default());
    let first = harness.log.generation();
    harness.log.rotate().unwrap();
    run_op(&mut harness, &Op::Send(0, 0, 5));
    harness.sync();
    harness.log.rotate().unwrap();
    run_op(&mut harness, &Op::Send(0, 0, 5));
    harness.sync();
    storage.remove(&journal_name(first + 1)).unwrap();
    let error = prepare(storage, &Options::default())
        .err()
        .expect("refuses");
    let text = error.to_string();
    assert!(text.contains(&journal_name(first + 1)), "{text}");
}

#[test]
fn compaction_replaces_old_segments_and_recovery_uses_the_snapshot() {
    let storage = MemoryStorage::new();
    let mut harness = Harness::new(storage.clone(), small_options());
    harness.connect(0);
    harness.op(0, Some(Request::Login(SessionToken::from("me"))));
    harness.op(0, Some(Request::CreatePersistent(queue_name(0))));
    let mut compactions = 0;
    for n in 0..200usize {
        run_op(&mut harness, &Op::Send(0, 0, 30));
        if n % 2 == 1 {
            run_op(&mut harness, &Op::Ack(0, 0, 0));
        }
        harness.sync();
        let before = harness.log.generation();
        harness.maybe_compact();
        compactions += usize::from(harness.log.generation() != before);
    }
    assert!(compactions >= 5, "only {compactions} compactions");
    // Only the newest snapshot and the segments after it remain: disk use stays bounded.
    let names = storage.file_names();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("snapshot-")).count(),
        1,
        "{names:?}"
    );
    assert!(
        names.iter().filter(|n| n.starts_with("journal-")).count() <= 2,
        "{names:?}"
    );
    let expected = durable_view(harness.engine.store());
    let next_index = harness.engine.store().next_index();
    let (_, _, recovered, report) = prepare(storage, &small_options()).unwrap().into_parts();
    assert!(report.snapshot_generation.is_some());
    assert_eq!(durable_view(&recovered), expected);
    assert!(recovered.next_index() >= next_index);
}

#[test]
fn a_crash_during_compaction_leaves_a_recoverable_directory() {
    let storage = MemoryStorage::new();
    let mut harness = synced_workload(&storage, small_options());
    let expected = durable_view(harness.engine.store());
    // The writer started a new segment, then crashed while the snapshot was being written.
    let generation = harness.log.rotate().unwrap();
    let mut temp = storage.create(&snapshot_temp_name(generation)).unwrap();
    temp.write_all(b"half a snapshot").unwrap();
    storage.crash_keeping_unsynced(usize::MAX);
    let (_, _, recovered, _) = prepare(storage.clone(), &small_options())
        .unwrap()
        .into_parts();
    assert_eq!(durable_view(&recovered), expected);
    assert!(!storage
        .file_names()
        .contains(&snapshot_temp_name(generation)));
}

#[test]
fn transient_queues_are_never_journalled() {
    let storage = MemoryStorage::new();
    let mut harness = Harness::new(storage.clone(), Options::default());
    harness.connect(0);
    harness.op(0, Some(Request::Login(SessionToken::from("owner"))));
    harness.op(0, Some(Request::CreateTransient(Some(queue_name(1)))));
    run_op(&mut harness, &Op::Send(0, 1, 3));
    run_op(&mut harness, &Op::Ack(0, 1, 0));
    run_op(&mut harness, &Op::Send(0, 1, 4));
    let shown = harness.shown_max.expect("the sends showed ids");
    assert!(harness.history.is_empty(), "{:?}", harness.history);
    harness.sync();

    let (log, compactor, store, report) = prepare(storage.clone(), &Options::default())
        .unwrap()
        .into_parts();
    assert_eq!(report.transient_queues_dropped, 0);
    assert_eq!(store.queue_count(), 0);
    // The ids the transient sends showed are below the floor journalled beside them.
    assert!(store.next_index() > shown);
    // A persistent queue of the same name is a new, empty queue.
    let report = recreate_as_persistent(storage, log, compactor, store);
    assert_eq!(report.transient_queues_dropped, 0);
}

/// Continues the journal of `storage` (recovered as `log`, `compactor`, `store`) with a
/// persistent queue named like the transient queue of these tests, and checks that the next
/// recovery has it, persistent and empty; returns that recovery's report.
fn recreate_as_persistent(
    storage: MemoryStorage,
    log: Log<MemoryStorage>,
    compactor: Compactor<MemoryStorage>,
    store: QueueStore,
) -> RecoveryReport {
    let mut harness = Harness {
        log,
        compactor,
        engine: Engine::with_store(engine::Config::default(), START, store),
        ..Harness::new(MemoryStorage::new(), Options::default())
    };
    harness.connect(0);
    harness.op(0, Some(Request::Login(SessionToken::from("other"))));
    harness.op(0, Some(Request::CreatePersistent(queue_name(1))));
    harness.sync();
    let (_, _, store, report) = prepare(storage, &Options::default()).unwrap().into_parts();
    let queue = store
        .queue(&queue_name(1))
        .expect("the persistent queue survives");
    assert_eq!(queue.owner, None);
    assert!(queue.messages.is_empty());
    report
}

/// Journals written before transient changes stopped being journalled hold transient
/// queues: recovery still drops them, durably.
#[test]
fn journalled_transient_queues_are_dropped_durably() {
    let storage = MemoryStorage::new();
    let (mut log, _, _, _) = prepare(storage.clone(), &Options::default())
        .unwrap()
        .into_parts();
    let created = Event::QueueCreated {
        name: queue_name(1),
        owner: Some(SessionToken::from("owner")),
    };
    let batch = Batch {
        seq: 1,
        events: vec![created],
        id_floor: 1,
    };
    log.write(&[batch]).unwrap();
    log.sync().unwrap();
    drop(log);
    let (log, compactor, store, report) = prepare(storage.clone(), &Options::default())
        .unwrap()
        .into_parts();
    assert_eq!(report.transient_queues_dropped, 1);
    assert_eq!(store.queue_count(), 0);
    // A persistent queue of the same name is not taken for the old transient one.
    let report = recreate_as_persistent(storage, log, compactor, store);
    assert_eq!(report.transient_queues_dropped, 0);
}

#[test]
fn ids_continue_above_reserved_floors_after_a_crash() {
    let storage = MemoryStorage::new();
    let mut harness = synced_workload(&storage, Options::default());
    // A batch whose ids were shown but never synced: the durable floor covers them.
    for _ in 0..5 {
        run_op(&mut harness, &Op::Send(0, 0, 1));
    }
    let highest_shown = harness.engine.store().next_index() - 1;
    storage.crash();
    let (_, _, recovered, _) = prepare(storage, &Options::default()).unwrap().into_parts();
    assert!(recovered.next_index() > highest_shown);
}

/// Drives the threaded journal through a full disk and back.
#[test]
fn a_full_disk_fails_batches_until_space_returns() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let memory = MemoryStorage::new();
        let faults = Faults::new();
        let storage = FaultyStorage::new(memory.clone(), faults.clone());
        let mut opened = open_threaded(storage, &Options::default()).unwrap();
        let created = |name: &str| Event::QueueCreated {
            name: QueueName::from(name),
            owner: None,
        };
        opened
            .journal
            .submit(1, vec![created("a")], 0, true)
            .unwrap();
        assert!(matches!(
            opened.journal.completion().await,
            Some(Completion::Synced { through: 1 })
        ));
        faults.set_disk_full(true);
        opened
            .journal
            .submit(2, vec![created("b")], 0, true)
            .unwrap();
        match opened.journal.completion().await {
            Some(Completion::Failed { error }) => assert!(error.is_storage_full(), "{error}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(opened.journal.stats().get().failing);
        faults.clear();
        // The writer retries the kept batch on its own.
        loop {
            match opened.journal.completion().await {
                Some(Completion::Synced { through }) => {
                    assert_eq!(through, 2);
                    break;
                }
                Some(Completion::Failed { .. }) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
        opened.journal.close();
        assert!(matches!(
            opened.journal.completion().await,
            Some(Completion::Closed(Ok(())))
        ));
        // The half-written record left by the full disk was cut off: both queues, once each,
        // and no damage.
        let (_, _, store, report) = prepare(memory, &Options::default()).unwrap().into_parts();
        assert!(report.damage.is_empty() && report.torn_tail.is_none());
        assert_eq!(store.queue_count(), 2);
        assert_eq!(report.journal_records, 2);
    });
}

#[test]
fn a_failing_sync_is_retried_with_the_data_rewritten() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let memory = MemoryStorage::new();
        let faults = Faults::new();
        let storage = FaultyStorage::new(memory.clone(), faults.clone());
        let mut opened = open_on_runtime(storage, &Options::default()).unwrap();
        faults.set_sync_failing(true);
        opened
            .journal
            .submit(
                1,
                vec![Event::QueueCreated {
                    name: QueueName::from("a"),
                    owner: None,
                }],
                0,
                true,
            )
            .unwrap();
        match opened.journal.completion().await {
            Some(Completion::Failed { error }) => assert!(!error.is_storage_full()),
            other => panic!("expected a failure, got {other:?}"),
        }
        faults.clear();
        loop {
            match opened.journal.completion().await {
                Some(Completion::Synced { through: 1 }) => break,
                Some(Completion::Failed { .. }) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
        let (_, _, store, report) = prepare(memory, &Options::default()).unwrap().into_parts();
        assert_eq!(store.queue_count(), 1);
        assert_eq!(report.journal_records, 1);
    });
}

#[test]
fn the_task_runner_compacts_and_loses_only_the_unsynced_tail() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let memory = MemoryStorage::new();
        let options = Options {
            simulated_sync_delay: Duration::from_millis(5),
            ..small_options()
        };
        let mut opened = open_on_runtime(memory.clone(), &options).unwrap();
        let mut synced = 0;
        for seq in 1..=50u64 {
            let event = Event::QueueCreated {
                name: QueueName::from(format!("q{seq}")),
                owner: None,
            };
            opened.journal.submit(seq, vec![event], 0, true).unwrap();
            if seq % 10 == 0 {
                while synced < seq {
                    if let Some(Completion::Synced { through }) = opened.journal.completion().await
                    {
                        synced = through;
                    }
                }
            }
        }
        assert!(opened.journal.stats().get().compactions > 0);
        // One more batch, written but (thanks to the sync delay) not yet synced: the crash
        // takes it.
        opened
            .journal
            .submit(
                51,
                vec![Event::QueueCreated {
                    name: QueueName::from("lost"),
                    owner: None,
                }],
                0,
                true,
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        memory.crash();
        let (_, _, store, _) = prepare(memory, &options).unwrap().into_parts();
        assert_eq!(store.queue_count(), 50);
        assert!(store.queue(&QueueName::from("lost")).is_none());
    });
}

#[test]
fn disk_storage_creates_locks_and_checks_the_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/state");
    let storage = DiskStorage::open(&dir).expect("created with its parents");
    assert!(dir.is_dir());
    match DiskStorage::open(&dir) {
        Err(StoreError::Locked { .. }) => {}
        other => panic!("a second open must fail on the lock: {other:?}"),
    }
    drop(storage);
    DiskStorage::open(&dir).expect("the lock is released with the storage");

    let file = root.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let error = DiskStorage::open(&file).unwrap_err();
    assert!(matches!(error, StoreError::NotADirectory { .. }));
    assert!(error.to_string().contains("not a directory"));
    let error = DiskStorage::open(&file.join("sub")).unwrap_err();
    assert!(error.to_string().contains("plain-file"), "{error}");
}

#[test]
fn disk_journal_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut opened = open_dir(root.path(), &Options::default()).unwrap();
        let id = MessageId::new(QueueName::from("q"), 7);
        let events = vec![
            Event::QueueCreated {
                name: QueueName::from("q"),
                owner: None,
            },
            Event::MessageStored {
                id: id.clone(),
                origin: crate::protocol::Origin::Name(SessionToken::from("me")),
                time: START,
                message: Message {
                    payload: Bytes::from_static(b"payload"),
                    kind: MessageKind::Request {
                        reply_to: QueueName::from("r"),
                    },
                },
            },
        ];
        opened.journal.submit(1, events, 100, true).unwrap();
        opened.journal.close();
        while let Some(completion) = opened.journal.completion().await {
            if let Completion::Closed(result) = completion {
                result.unwrap();
                break;
            }
        }
    });
    let opened = open_dir(root.path(), &Options::default()).unwrap();
    let queue = opened.store.queue(&QueueName::from("q")).unwrap();
    assert_eq!(
        queue.messages[&7].message.payload,
        Bytes::from_static(b"payload")
    );
    assert_eq!(queue.messages[&7].time, START);
    assert!(opened.store.next_index() >= 100);
}
