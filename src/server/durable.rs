//! The driver's side of durability: batch the engine's events per wake-up, hand them to the
//! journal, and hold back every reply that depends on an event not yet synced
//! (protocol.md part A.8, "durable before visible").
//!
//! Nothing here blocks: the journal writes and syncs on its own threads (or task), and
//! reports completions that [`Durability::on_completion`] turns into released or failed
//! replies. Replies that need no sync (reads, changes of transient queues, lazy acks) are
//! answered at once, except in the rare case that the engine's id counter has passed the id
//! floor already durable (see [`store::ID_RESERVE`] and [`Durability::submit`]).
//!
//! # Ids without syncs
//!
//! A reply that leaves before a sync may show a message id (a Transfer, a Send to a transient
//! queue, a trace), and no id shown may ever be handed out again, even after a crash that
//! loses everything unsynced. Recovery raises the id counter to the highest floor journalled,
//! so every id below `durable_floor` (the highest floor synced) is safe. The driver keeps the
//! floor ahead: whenever the counter comes within half a reserve of the floor last submitted,
//! the next batch carries a new floor, even if it has no events (transient traffic journals
//! none). So `next_index <= durable_floor` holds except right after start-up (until the first
//! batch is synced) and when more than `ID_RESERVE / 2` ids are taken within one sync; only
//! then does such a reply wait for the floor's sync.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::held_stores::{self, HeldReply, HeldStores, Released};
use super::metrics::Histogram;
use crate::engine::{Event, RequestId};
use crate::protocol::{ErrorReply, QueueName, Reply};
use crate::store::{self, Completion, Journal, StoreError};

/// A reply waiting for its batch to be durable.
struct Held {
    /// The batch whose sync releases it.
    tag: u64,
    request: RequestId,
    reply: Reply,
    /// A reply that needed no sync, held only because the id counter had passed the
    /// durable id floor.
    read: bool,
}

/// Durability state owned by the driver.
pub(crate) struct Durability {
    journal: Journal,
    /// Events of the current wake-up, submitted together as batch `next_seq`.
    batch: Vec<Event>,
    next_seq: u64,
    /// The highest batch known durable.
    synced: u64,
    /// Submitted batches not yet durable: sequence number, id floor, submission time (for
    /// the sync latency histogram; `None` for a batch no reply waited for when submitted).
    in_flight: VecDeque<(u64, i64, Option<Instant>)>,
    /// The highest batch a held reply waits for (all held replies wait for it or earlier).
    held_tag_max: u64,
    /// The highest batch the journal was told a reply waits for (submitted urgent, or
    /// hurried afterwards, [`Journal::hurry`]).
    hurried_through: u64,
    /// The id floor recovery would restore now: ids below it are safe to show.
    durable_floor: i64,
    /// The highest id floor submitted (durable or not).
    submitted_floor: i64,
    held: VecDeque<Held>,
    /// Events persisted since the last reply was gated, and of them how many were Acks that
    /// withdrew their message's store instead (see [`Durability::persist`]): a reply whose
    /// every event was withdrawn has nothing to wait for.
    persisted_since_reply: usize,
    withdrawn_since_reply: usize,
    /// Persistent queues created by batches not yet known durable, with that batch.
    unsynced_creations: HashMap<QueueName, u64>,
    /// The request the engine is handling ([`Durability::begin_request`]): the events it
    /// persists are counted for its own reply.
    current_request: Option<RequestId>,
    /// The CreatePersistent whose reply comes next ([`Durability::expect_create`]).
    create_expected: Option<(RequestId, QueueName)>,
    /// Set while the journal fails: mutations are refused until a sync succeeds.
    failure: Option<Arc<StoreError>>,
    /// The writer stopped (closed or died): nothing more can be made durable.
    writer_gone: bool,
    close_waiters: Vec<oneshot::Sender<Result<(), String>>>,
    closed: Option<Result<(), String>>,
    sync_latency: Arc<Histogram>,
    /// Stores kept out of the journal a little while, for their Ack to drop them
    /// ([`super::held_stores`]).
    held_stores: HeldStores,
    /// A moving average of the time from a batch's hand-over until it is durable, for the
    /// quiet window of held stores ([`Durability::hold_quiet`]).
    recent_sync: Duration,
    /// The store [`Durability::persist`] held since the last reply was gated.
    held_since_reply: Option<i64>,
    /// Replies released outside [`Durability::gate`] and [`Durability::on_completion`]: a
    /// Send's, when an Ack dropped its held store ([`Durability::take_released`]).
    released: Vec<(RequestId, Reply)>,
}

impl Durability {
    /// Wraps a journal whose recovered state had id counter `recovered_next_index` (before
    /// the engine raised it to the start time).
    pub(crate) fn new(
        journal: Journal,
        recovered_next_index: i64,
        sync_latency: Arc<Histogram>,
    ) -> Self {
        Self {
            journal,
            batch: Vec::new(),
            next_seq: 1,
            synced: 0,
            in_flight: VecDeque::new(),
            held_tag_max: 0,
            hurried_through: 0,
            durable_floor: recovered_next_index,
            submitted_floor: recovered_next_index,
            held: VecDeque::new(),
            persisted_since_reply: 0,
            withdrawn_since_reply: 0,
            unsynced_creations: HashMap::new(),
            current_request: None,
            create_expected: None,
            failure: None,
            writer_gone: false,
            close_waiters: Vec::new(),
            closed: None,
            sync_latency,
            held_stores: HeldStores::default(),
            recent_sync: Duration::ZERO,
            held_since_reply: None,
            released: Vec::new(),
        }
    }

    /// The reply for a request that must be refused before the engine sees it, because it
    /// would journal something (`needs_journal`, see `Engine::needs_journal`) and the journal
    /// is failing or closed: applying it would change the state with no way to make the
    /// change durable. Changes of transient queues need no journal and are never refused.
    pub(crate) fn refusal(&self, needs_journal: bool) -> Option<Reply> {
        if !needs_journal {
            return None;
        }
        if self.closed.is_some() || self.writer_gone {
            return Some(Reply::Error(ErrorReply::new(
                503,
                "the switch is shutting down: its journal is closed",
            )));
        }
        let error = self.failure.as_ref()?;
        Some(Reply::Error(ErrorReply::new(
            status_of(error),
            format!(
                "the journal cannot be written ({error}); changes are refused until it recovers"
            ),
        )))
    }

    /// Takes an event the engine emitted (and already applied).
    ///
    /// An Ack of a message whose store is not yet written (held, see
    /// [`super::held_stores`]; still in this wake-up's batch; or submitted and not yet taken by
    /// the writer) withdraws that store and journals nothing: the message then never reaches
    /// the disk, so no crash can bring it back, which is all a strict Ack promises. A Send
    /// whose store was held is answered then; one whose store reached a batch still waits
    /// for that batch's sync.
    pub(crate) fn persist(&mut self, event: Event) {
        let now = Instant::now();
        let event = match event {
            Event::MessageAcked { id } => {
                if let Some(reply) = self.held_stores.acked(&id.queue, id.index, now) {
                    self.withdrawn_since_reply += 1;
                    self.journal.count_withdrawn();
                    if let Some(reply) = reply {
                        self.release_after(reply);
                    }
                    return;
                }
                if self.journal.withdraw_stored(id.index, &mut self.batch) {
                    self.withdrawn_since_reply += 1;
                    return;
                }
                Event::MessageAcked { id }
            }
            Event::MessageStored { ref id, .. } => {
                let (queue, index) = (id.queue.clone(), id.index);
                if self.held_stores.wants(&queue, now) {
                    self.held_stores.hold(&queue, index, event, now);
                    self.held_since_reply = Some(index);
                    return;
                }
                self.journal_held_of(&queue, false);
                event
            }
            Event::QueueCreated {
                ref name,
                ref owner,
            } => {
                let name = name.clone();
                self.journal_held_of(&name, false);
                if owner.is_none() {
                    self.unsynced_creations.insert(name, self.next_seq);
                }
                event
            }
            Event::QueueRemoved { ref name } => {
                let name = name.clone();
                self.journal_held_of(&name, true);
                self.unsynced_creations.remove(&name);
                event
            }
        };
        self.persisted_since_reply += 1;
        self.batch.push(event);
    }

    /// Puts the stores held for `name` into this wake-up's batch, ahead of an event of that
    /// queue (its removal, its creation, or a store not held), so that the journal keeps the
    /// engine's order within the queue.
    fn journal_held_of(&mut self, name: &QueueName, removed: bool) {
        let stores = self.held_stores.take_queue(name, removed);
        self.journal_released(stores);
    }

    /// Journals stores taken out of the hold in this wake-up's batch; their Sends' replies
    /// now wait for it.
    fn journal_released(&mut self, stores: Vec<Released>) {
        for Released { event, reply } in stores {
            self.batch.push(event);
            if let Some((request, reply, _)) = reply {
                if let Some(reply) = self.hold_for(self.next_seq, request, reply, false) {
                    self.released.push((request, reply));
                }
            }
        }
    }

    /// Ends the holds due by now (see [`Durability::next_hold_due`]): their stores join this
    /// wake-up's batch.
    pub(crate) fn end_due_holds(&mut self) {
        let due = self.held_stores.take_due(Instant::now(), self.hold_quiet());
        self.journal_released(due);
    }

    /// When the oldest held store must join a batch, if any is held.
    pub(crate) fn next_hold_due(&self) -> Option<Instant> {
        self.held_stores.next_due(self.hold_quiet())
    }

    /// How long a queue with held stores may go without an Ack before they are journalled:
    /// twice the recent sync time, at least [`held_stores::QUIET_MIN`]. A consumer whose
    /// Acks each wait for a sync acks about once per sync while it works.
    fn hold_quiet(&self) -> Duration {
        (self.recent_sync * 2).max(held_stores::QUIET_MIN)
    }

    /// Replies released since the last call outside `gate` and `on_completion`: Sends whose
    /// held store an Ack dropped.
    pub(crate) fn take_released(&mut self) -> Vec<(RequestId, Reply)> {
        std::mem::take(&mut self.released)
    }

    /// A held Send's store was dropped by its Ack: the reply leaves once the events emitted
    /// before it are durable (at once, usually).
    fn release_after(&mut self, (request, reply, tag): HeldReply) {
        if let Some(reply) = self.hold_for(tag, request, reply, false) {
            self.released.push((request, reply));
        }
    }

    /// Says that `request` is about to reach the engine: the events persisted until its
    /// reply are its own. Other replies may come first (the parked Transfers a Send
    /// answers), and its own reply may need no sync (a lazy Ack).
    pub(crate) fn begin_request(&mut self, request: RequestId) {
        self.current_request = Some(request);
    }

    /// Says that `request`, about to reach the engine, is a CreatePersistent of `name`. If
    /// the queue exists already, the request changes nothing, and its 200 (the queue is
    /// durable) waits only for the batch that created the queue, if that is not durable
    /// yet, rather than for every change before it: the real clients send one before every
    /// request, and it used to wait for whatever sync was in flight.
    pub(crate) fn expect_create(&mut self, request: RequestId, name: &QueueName) {
        self.create_expected = Some((request, name.clone()));
    }

    /// Decides whether `reply` may leave now (returned) or must wait (kept, `None`).
    /// `after_sync` is the engine's verdict; `next_index` is the engine's id counter now.
    pub(crate) fn gate(
        &mut self,
        request: RequestId,
        reply: Reply,
        after_sync: bool,
        next_index: i64,
    ) -> Option<Reply> {
        let read = !after_sync;
        if read {
            if self.current_request == Some(request) {
                // The request's own reply needs no sync (a lazy Ack): nothing it persisted
                // changes that, and nothing of it may count for a later reply.
                self.persisted_since_reply = 0;
                self.withdrawn_since_reply = 0;
                if let Some(index) = self.held_since_reply.take() {
                    let store = self.held_stores.take(index);
                    self.journal_released(store.into_iter().collect());
                }
            }
            // Otherwise a read answered by this change (a parked Transfer its Send
            // completed): what the change persisted, withdrew or held is counted for the
            // change's own reply, which comes after.
            return self.gate_read(request, reply, next_index);
        }
        let mut persisted = std::mem::take(&mut self.persisted_since_reply);
        let withdrawn = std::mem::take(&mut self.withdrawn_since_reply);
        let create = self.create_expected.take().filter(|(r, _)| *r == request);
        let mut reply = reply;
        if let Some(index) = self.held_since_reply.take() {
            if persisted == 0 && withdrawn == 0 {
                // A Send whose store is held: its reply is held with it.
                let tag = self.tag_of_events_so_far();
                match self.held_stores.attach_reply(index, (request, reply, tag)) {
                    Ok(()) => return None,
                    Err((_, given_back, _)) => reply = given_back,
                }
            } else if let Some(Released { event, .. }) = self.held_stores.take(index) {
                // Something else of this request is journalled: its store goes with it.
                self.batch.push(event);
                persisted += 1;
            }
        }
        if persisted == 0 && withdrawn > 0 {
            // Its only change was an Ack that withdrew an unwritten store: nothing of it will
            // ever be on disk, so there is nothing to sync.
            return Some(reply);
        }
        let tag = if let Some((_, name)) = create.filter(|_| persisted == 0) {
            // A CreatePersistent of an existing queue: only the queue's creation must be
            // durable.
            match self.unsynced_creations.get(&name) {
                Some(&created_in) => created_in,
                None => return Some(reply),
            }
        } else {
            self.tag_of_events_so_far()
        };
        self.hold_for(tag, request, reply, false)
    }

    /// [`Durability::gate`] for a reply that needs no sync: it waits only if it may show an
    /// id that the durable id floor does not cover yet.
    fn gate_read(&mut self, request: RequestId, reply: Reply, next_index: i64) -> Option<Reply> {
        let tag = if next_index <= self.durable_floor || !may_show_ids(&reply) {
            return Some(reply);
        } else if next_index <= self.submitted_floor {
            self.next_seq - 1
        } else {
            // `submit` sends a new floor at the end of this wake-up.
            self.next_seq
        };
        self.hold_for(tag, request, reply, true)
    }

    /// The latest batch holding an event emitted so far.
    fn tag_of_events_so_far(&self) -> u64 {
        if self.batch.is_empty() {
            self.next_seq - 1
        } else {
            self.next_seq
        }
    }

    /// Holds `reply` until batch `tag` is durable; returns it if that is so already.
    fn hold_for(
        &mut self,
        tag: u64,
        request: RequestId,
        reply: Reply,
        read: bool,
    ) -> Option<Reply> {
        if tag <= self.synced {
            return Some(reply);
        }
        if tag < self.next_seq && tag > self.hurried_through {
            // Submitted already, perhaps as deferrable (lazy Acks alone): no longer.
            self.journal.hurry();
            self.hurried_through = self.next_seq - 1;
        }
        self.held_tag_max = self.held_tag_max.max(tag);
        let held = Held {
            tag,
            request,
            reply,
            read,
        };
        if self.held.back().is_none_or(|last| last.tag <= tag) {
            self.held.push_back(held);
        } else {
            // A held Send released by its Ack waits for an earlier batch than the last
            // reply held: `on_completion` releases them in tag order.
            let at = self.held.partition_point(|h| h.tag <= tag);
            self.held.insert(at, held);
        }
        None
    }

    /// Submits the events of this wake-up as one batch; `next_index` is the engine's id
    /// counter now. With no events, a batch is still submitted when the counter has come
    /// within half a reserve of the floor last submitted, to move the floor ahead.
    pub(crate) fn submit(&mut self, next_index: i64) {
        if !self.wants_submit(next_index) {
            return;
        }
        let events = std::mem::take(&mut self.batch);
        let seq = self.next_seq;
        self.next_seq += 1;
        let floor = next_index.saturating_add(store::ID_RESERVE);
        self.submitted_floor = self.submitted_floor.max(floor);
        // Otherwise (lazy Acks alone, a floor) its sync may wait for company.
        let urgent = self.held_tag_max >= seq;
        if urgent {
            self.hurried_through = seq;
        }
        if self.journal.submit(seq, events, floor, urgent).is_err() {
            // The writer is gone: nothing more will be durable. Held replies fail below when
            // the completion channel reports it closed.
            self.writer_gone = true;
        }
        self.in_flight
            .push_back((seq, floor, urgent.then(Instant::now)));
    }

    /// Whether [`Durability::submit`] with the id counter at `next_index` would submit a
    /// batch: there are events, the id floor must move, or a reply waits for a batch.
    pub(crate) fn wants_submit(&self, next_index: i64) -> bool {
        // An empty batch still goes when a reply waits for it: one gated while this
        // wake-up's batch held a store that an Ack then withdrew.
        !self.batch.is_empty()
            || store::floor_due(next_index, self.submitted_floor)
            || self.held_tag_max >= self.next_seq
    }

    /// The next report from the journal; never resolves once the writer is gone.
    #[cfg(test)]
    pub(crate) async fn completion(&mut self) -> Option<Completion> {
        std::future::poll_fn(|context| self.poll_completion(context)).await
    }

    /// Polls for the next report from the journal; never ready once the writer is gone.
    pub(crate) fn poll_completion(
        &mut self,
        context: &mut Context<'_>,
    ) -> Poll<Option<Completion>> {
        if self.writer_gone && self.closed.is_some() {
            return Poll::Pending;
        }
        self.journal.poll_completion(context)
    }

    /// Applies a report from the journal (`None`: the writer is gone); returns the replies
    /// that may now leave.
    pub(crate) fn on_completion(
        &mut self,
        completion: Option<Completion>,
    ) -> Vec<(RequestId, Reply)> {
        match completion {
            Some(Completion::Synced { through }) => {
                self.synced = self.synced.max(through);
                if !self.unsynced_creations.is_empty() {
                    let synced = self.synced;
                    self.unsynced_creations.retain(|_, batch| *batch > synced);
                }
                let now = Instant::now();
                while let Some(&(seq, floor, submitted)) = self.in_flight.front() {
                    if seq > through {
                        break;
                    }
                    self.durable_floor = self.durable_floor.max(floor);
                    if let Some(submitted) = submitted {
                        let took = now.duration_since(submitted);
                        self.sync_latency.observe(took);
                        self.recent_sync = (self.recent_sync * 7 + took) / 8;
                    }
                    self.in_flight.pop_front();
                }
                if self.failure.take().is_some() {
                    tracing::info!("journal recovered; accepting changes again");
                }
                let mut released = Vec::new();
                while self.held.front().is_some_and(|h| h.tag <= self.synced) {
                    if let Some(held) = self.held.pop_front() {
                        released.push((held.request, held.reply));
                    }
                }
                released
            }
            Some(Completion::Failed { error }) => {
                let status = status_of(&error);
                let change = format!(
                    "the change could not be made durable ({error}); it is not confirmed and \
                     may or may not survive a restart"
                );
                let read = format!(
                    "the messages for this reply are not durable yet and the journal is failing \
                     ({error}); retry later"
                );
                self.failure = Some(error);
                // Held stores would wait for a journal that fails: they join the next batch
                // (retried with everything else), and their Sends wait for it.
                let stores = self.held_stores.take_all();
                let failed: Vec<(RequestId, Reply)> = self
                    .held
                    .drain(..)
                    .map(|held| {
                        let text = if held.read { &read } else { &change };
                        (
                            held.request,
                            Reply::Error(ErrorReply::new(status, text.clone())),
                        )
                    })
                    .collect();
                self.journal_released(stores);
                failed
            }
            Some(Completion::Closed(result)) => {
                let result = result.map_err(|error| error.to_string());
                if let Err(error) = &result {
                    tracing::error!(%error, "the journal closed with unsynced changes");
                }
                self.writer_gone = true;
                for waiter in self.close_waiters.drain(..) {
                    let _ = waiter.send(result.clone());
                }
                self.closed = Some(result);
                self.fail_held(503, "the switch is shutting down: its journal is closed")
            }
            None => {
                if !self.writer_gone {
                    tracing::error!("the journal writer stopped unexpectedly");
                }
                self.writer_gone = true;
                if self.closed.is_none() {
                    self.closed = Some(Err("the journal writer stopped".to_owned()));
                }
                self.fail_held(
                    503,
                    "the journal writer stopped; changes cannot be made durable",
                )
            }
        }
    }

    /// Submits what is left and closes the journal; `waiter` learns whether everything
    /// submitted is durable.
    pub(crate) fn close(&mut self, next_index: i64, waiter: oneshot::Sender<Result<(), String>>) {
        if let Some(result) = &self.closed {
            let _ = waiter.send(result.clone());
            return;
        }
        let stores = self.held_stores.take_all();
        self.journal_released(stores);
        self.submit(next_index);
        self.close_waiters.push(waiter);
        if self.close_waiters.len() == 1 {
            self.journal.close();
        }
    }

    fn fail_held(&mut self, status: u16, text: &str) -> Vec<(RequestId, Reply)> {
        let held_sends = self
            .held_stores
            .take_all()
            .into_iter()
            .filter_map(|store| store.reply.map(|(request, _, _)| request));
        self.held
            .drain(..)
            .map(|held| held.request)
            .chain(held_sends)
            .map(|request| {
                (
                    request,
                    Reply::Error(ErrorReply::new(status, text.to_owned())),
                )
            })
            .collect()
    }
}

/// Whether `reply` may show a message id (or a name made from one): such a reply must not
/// leave before a durable id floor covers every id handed out.
fn may_show_ids(reply: &Reply) -> bool {
    match reply {
        Reply::Transfer(transfer) => !transfer.messages.is_empty(),
        Reply::Sent(sent) => sent.is_some(),
        Reply::Trace(events) => !events.is_empty(),
        Reply::Name(_) | Reply::Diagnostics(_) => true,
        Reply::Empty | Reply::List(_) | Reply::Error(_) => false,
    }
}

/// 507 Insufficient Storage for a full disk, 503 for other journal errors.
fn status_of(error: &StoreError) -> u16 {
    if error.is_storage_full() {
        507
    } else {
        503
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::engine::Timestamp;
    use crate::protocol::{Message, MessageId, MessageKind, Origin, QueueName};
    use crate::store::{MemoryStorage, Options};

    fn id(index: i64) -> MessageId {
        id_in("service", index)
    }

    fn id_in(queue: &str, index: i64) -> MessageId {
        MessageId {
            queue: QueueName::from(queue),
            index,
        }
    }

    fn created(queue: &str) -> Event {
        Event::QueueCreated {
            name: QueueName::from(queue),
            owner: None,
        }
    }

    fn stored(index: i64) -> Event {
        stored_in("service", index)
    }

    fn stored_in(queue: &str, index: i64) -> Event {
        Event::MessageStored {
            id: id_in(queue, index),
            origin: Origin::Anonymous(0),
            time: Timestamp::default(),
            message: Message {
                payload: Bytes::from_static(b"request"),
                kind: MessageKind::Request {
                    reply_to: QueueName::from("caller"),
                },
            },
        }
    }

    fn acked(index: i64) -> Event {
        Event::MessageAcked { id: id(index) }
    }

    /// One request's events and its reply (which waits for a sync), as the driver passes
    /// them; returns whether the reply may leave at once.
    fn change(durability: &mut Durability, request: u64, events: Vec<Event>) -> bool {
        for event in events {
            durability.persist(event);
        }
        durability
            .gate(RequestId(request), Reply::Empty, true, 0)
            .is_some()
    }

    /// Lets the writer task run until it sleeps in its (virtual) sync.
    async fn let_writer_take() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_of_an_unwritten_store_withdraws_it_and_waits_for_nothing() {
        let storage = MemoryStorage::new();
        let options = Options {
            simulated_sync_delay: Duration::from_millis(10),
            ..Options::default()
        };
        let opened = store::open_on_runtime(storage.clone(), &options).unwrap();
        let histogram = Arc::new(Histogram::default());
        let mut durability = Durability::new(opened.journal, 0, histogram);
        let queues = ["service", "fresh", "third"].map(created);
        let mut first = queues.to_vec();
        first.push(stored(1));
        assert!(!change(&mut durability, 1, first));
        durability.submit(0);
        let_writer_take().await;
        // The writer has taken message 1 and syncs it; message 2 waits in its inbox.
        assert!(!change(&mut durability, 2, vec![stored(2)]));
        durability.submit(0);
        assert!(
            change(&mut durability, 3, vec![acked(2)]),
            "the ack of a store still in the inbox waits for no sync"
        );
        assert!(
            !change(&mut durability, 4, vec![acked(1)]),
            "the ack of a store being written waits for its own sync"
        );
        // A store and its ack in one wake-up: neither is written. (In queues that saw no
        // Ack yet, so nothing is held, see the tests below.)
        assert!(!change(&mut durability, 5, vec![stored_in("fresh", 3)]));
        let ack_of_3 = Event::MessageAcked {
            id: id_in("fresh", 3),
        };
        assert!(change(&mut durability, 6, vec![ack_of_3]));
        // A store never acked is written, whatever else its batch lost.
        assert!(!change(&mut durability, 7, vec![stored_in("third", 4)]));
        durability.submit(0);
        assert_eq!(durability.journal.stats().get().stores_withdrawn, 2);
        // The Sends' replies (1, 2, 5 and 7) and the ack of 1 are released by syncs only.
        let mut released = Vec::new();
        while released.len() < 5 {
            let completion = durability.completion().await;
            released.extend(
                durability
                    .on_completion(completion)
                    .into_iter()
                    .map(|(request, _)| request.0),
            );
        }
        released.sort_unstable();
        assert_eq!(released, [1, 2, 4, 5, 7]);
        let (waiter, closed) = oneshot::channel();
        durability.close(0, waiter);
        loop {
            let completion = durability.completion().await;
            durability.on_completion(completion);
            if durability.closed.is_some() {
                break;
            }
        }
        closed.await.unwrap().unwrap();
        // What recovery finds: the queue and the unacked message 4 only.
        let recovered = store::open_on_runtime(storage, &options).unwrap();
        let messages = |name: &str| {
            let queue = recovered.store.queue(&QueueName::from(name)).unwrap();
            queue.messages.keys().copied().collect::<Vec<_>>()
        };
        assert!(messages("service").is_empty());
        assert!(messages("fresh").is_empty());
        assert_eq!(messages("third"), [4]);
    }

    /// A journal whose syncs take 10 ms of (paused) time, and the durability over it.
    fn slow_journal() -> (MemoryStorage, Options, Durability) {
        let storage = MemoryStorage::new();
        let options = Options {
            simulated_sync_delay: Duration::from_millis(10),
            ..Options::default()
        };
        let opened = store::open_on_runtime(storage.clone(), &options).unwrap();
        let durability = Durability::new(opened.journal, 0, Arc::new(Histogram::default()));
        (storage, options, durability)
    }

    /// Applies completions until `count` replies have been released (by syncs or by Acks).
    async fn released(durability: &mut Durability, count: usize) -> Vec<u64> {
        let mut released: Vec<u64> = durability.take_released().iter().map(|r| r.0 .0).collect();
        while released.len() < count {
            // Paused time jumps to the timeout if nothing else can happen.
            let completion = tokio::time::timeout(Duration::from_secs(5), durability.completion())
                .await
                .expect("no reply released for seconds");
            let now = durability.on_completion(completion);
            released.extend(now.iter().map(|r| r.0 .0));
        }
        released.sort_unstable();
        released
    }

    async fn close(durability: &mut Durability) {
        let (waiter, closed) = oneshot::channel();
        durability.close(0, waiter);
        while durability.closed.is_none() {
            let completion = durability.completion().await;
            durability.on_completion(completion);
        }
        closed.await.unwrap().unwrap();
    }

    /// Creates queue `service`, stores message 1 there (request 1) and acks it (request 2),
    /// each synced: from then on the queue holds its stores.
    async fn acking_service_queue(durability: &mut Durability) {
        assert!(!change(durability, 1, vec![created("service"), stored(1)]));
        durability.submit(0);
        assert_eq!(released(durability, 1).await, [1]);
        // The queue's first Ack waits for its sync.
        assert!(!change(durability, 2, vec![acked(1)]));
        durability.submit(0);
        assert_eq!(released(durability, 1).await, [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_into_an_acking_queue_is_held_and_its_ack_drops_it_and_releases_the_send() {
        let (storage, options, mut durability) = slow_journal();
        acking_service_queue(&mut durability).await;
        let syncs = durability.journal.stats().get().batches;
        assert!(
            !change(&mut durability, 3, vec![stored(2)]),
            "the Send waits"
        );
        assert!(!change(&mut durability, 4, vec![stored(3)]));
        durability.submit(0);
        assert!(durability.next_hold_due().is_some());
        assert!(durability.take_released().is_empty());
        // The Ack of 2 drops its store: both the Ack and the Send are answered at once.
        assert!(change(&mut durability, 5, vec![acked(2)]));
        assert_eq!(released(&mut durability, 1).await, [3]);
        assert_eq!(durability.journal.stats().get().stores_withdrawn, 1);
        // Nothing was written for them.
        durability.submit(0);
        let_writer_take().await;
        assert_eq!(durability.journal.stats().get().batches, syncs);
        // Message 3 is never acked: once the queue has been quiet for the window, its store
        // joins a batch and the Send is answered after that batch's sync.
        tokio::time::sleep_until(durability.next_hold_due().unwrap()).await;
        durability.end_due_holds();
        assert_eq!(durability.next_hold_due(), None);
        durability.submit(0);
        assert_eq!(released(&mut durability, 1).await, [4]);
        close(&mut durability).await;
        let recovered = store::open_on_runtime(storage, &options).unwrap();
        let queue = recovered.store.queue(&QueueName::from("service")).unwrap();
        assert_eq!(queue.messages.keys().copied().collect::<Vec<_>>(), [3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lazy_ack_that_drops_a_held_store_leaves_nothing_counted_for_the_next_send() {
        let (_storage, _options, mut durability) = slow_journal();
        acking_service_queue(&mut durability).await;
        let batches = durability.journal.stats().get().batches;
        for (send, ack, index) in [(3, 4, 2), (5, 6, 3)] {
            durability.begin_request(RequestId(send));
            assert!(!change(&mut durability, send, vec![stored(index)]), "held");
            // A lazy Ack: its own reply needs no sync.
            durability.begin_request(RequestId(ack));
            durability.persist(acked(index));
            assert!(durability
                .gate(RequestId(ack), Reply::Empty, false, 0)
                .is_some());
            assert_eq!(released(&mut durability, 1).await, [send]);
            durability.submit(0);
        }
        let_writer_take().await;
        assert_eq!(
            durability.journal.stats().get().batches,
            batches,
            "nothing written"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn held_stores_reach_the_journal_before_their_queue_changes_and_on_close() {
        let (storage, options, mut durability) = slow_journal();
        let setup = vec![created("service"), created("other"), stored(1)];
        assert!(!change(&mut durability, 1, setup));
        durability.submit(0);
        assert_eq!(released(&mut durability, 1).await, [1]);
        // Acks in both queues (of 1, and of one the journal never saw in `other`).
        assert!(!change(&mut durability, 2, vec![acked(1)]));
        let other_acked = Event::MessageAcked {
            id: id_in("other", 0),
        };
        assert!(!change(&mut durability, 3, vec![other_acked]));
        durability.submit(0);
        assert_eq!(released(&mut durability, 2).await, [2, 3]);
        // Held: 2 and 3 in service, 4 in other.
        assert!(!change(&mut durability, 4, vec![stored(2)]));
        assert!(!change(&mut durability, 5, vec![stored(3)]));
        assert!(!change(&mut durability, 6, vec![stored_in("other", 4)]));
        // The service queue is destroyed: its held stores go first, so replay removes them
        // with it; the Sends wait for that batch.
        let removed = Event::QueueRemoved {
            name: QueueName::from("service"),
        };
        assert!(!change(&mut durability, 7, vec![removed]));
        durability.submit(0);
        assert_eq!(released(&mut durability, 3).await, [4, 5, 7]);
        // Closing journals what is still held (message 4): its Send is answered then.
        close(&mut durability).await;
        assert_eq!(durability.take_released().len(), 0);
        let recovered = store::open_on_runtime(storage, &options).unwrap();
        assert!(recovered.store.queue(&QueueName::from("service")).is_none());
        let other = recovered.store.queue(&QueueName::from("other")).unwrap();
        assert_eq!(other.messages.keys().copied().collect::<Vec<_>>(), [4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_waiting_for_a_batch_emptied_by_withdrawal_is_still_released() {
        let (_storage, _options, mut durability) = slow_journal();
        assert!(!change(&mut durability, 1, vec![created("service")]));
        durability.submit(0);
        assert_eq!(released(&mut durability, 1).await, [1]);
        // A store (not held: the queue saw no Ack) and its Ack in one wake-up: the Send's
        // reply waits for this wake-up's batch, which the Ack leaves empty.
        assert!(!change(&mut durability, 2, vec![stored(1)]));
        assert!(change(&mut durability, 3, vec![acked(1)]));
        durability.submit(0);
        assert_eq!(released(&mut durability, 1).await, [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_of_an_existing_queue_waits_only_for_the_queue_to_be_durable() {
        let options = Options {
            simulated_sync_delay: Duration::from_millis(10),
            ..Options::default()
        };
        let opened = store::open_on_runtime(MemoryStorage::new(), &options).unwrap();
        let histogram = Arc::new(Histogram::default());
        let mut durability = Durability::new(opened.journal, 0, histogram);
        let service = QueueName::from("service");
        let created = Event::QueueCreated {
            name: service.clone(),
            owner: None,
        };
        durability.expect_create(RequestId(1), &service);
        assert!(!change(&mut durability, 1, vec![created]));
        durability.submit(0);
        // While its creation is not durable, a CreatePersistent of the queue waits for it.
        durability.expect_create(RequestId(2), &service);
        assert!(!change(&mut durability, 2, vec![]));
        let mut released = Vec::new();
        while released.len() < 2 {
            let completion = durability.completion().await;
            released.extend(durability.on_completion(completion));
        }
        // A Send in flight (batch 2), then a CreatePersistent of the now durable queue: it
        // does not wait for the Send's sync.
        assert!(!change(&mut durability, 3, vec![stored(1)]));
        durability.submit(0);
        durability.expect_create(RequestId(4), &service);
        assert!(change(&mut durability, 4, vec![]));
        // Other changes without events still wait for everything before them.
        assert!(!change(&mut durability, 5, vec![]));
        // And a CreatePersistent that did create its queue waits for its own batch.
        let other = QueueName::from("other");
        durability.expect_create(RequestId(6), &other);
        let created = Event::QueueCreated {
            name: other,
            owner: None,
        };
        assert!(!change(&mut durability, 6, vec![created]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_no_reply_waits_for_is_synced_late_unless_one_comes_to() {
        let opened = store::open_on_runtime(MemoryStorage::new(), &Options::default()).unwrap();
        let histogram = Arc::new(Histogram::default());
        let mut durability = Durability::new(opened.journal, 0, histogram);
        let created = Event::QueueCreated {
            name: QueueName::from("service"),
            owner: None,
        };
        assert!(!change(
            &mut durability,
            1,
            vec![created, stored(1), stored(2)]
        ));
        durability.submit(0);
        let completion = durability.completion().await;
        assert_eq!(durability.on_completion(completion).len(), 1);
        let quick = Duration::from_millis(1);
        // A lazy Ack: answered at once, its batch deferrable.
        durability.persist(acked(1));
        assert!(durability
            .gate(RequestId(2), Reply::Empty, false, 0)
            .is_some());
        durability.submit(0);
        assert!(
            tokio::time::timeout(quick, durability.completion())
                .await
                .is_err(),
            "its sync waits for company"
        );
        // A change with no event of its own waits for every change before it, the lazy
        // Ack's batch included: that batch is synced at once now.
        assert!(!change(&mut durability, 3, vec![]));
        let completion = tokio::time::timeout(quick, durability.completion())
            .await
            .expect("hurried");
        assert!(matches!(
            completion,
            Some(Completion::Synced { through: 2 })
        ));
        assert_eq!(durability.on_completion(completion).len(), 1);
        // Alone, a deferred batch is synced within the bound anyway.
        durability.persist(acked(2));
        assert!(durability
            .gate(RequestId(4), Reply::Empty, false, 0)
            .is_some());
        durability.submit(0);
        let started = Instant::now();
        let completion = durability.completion().await;
        assert!(matches!(
            completion,
            Some(Completion::Synced { through: 3 })
        ));
        assert!(started.elapsed() <= store::DEFERRED_SYNC_MAX + quick);
    }
}
