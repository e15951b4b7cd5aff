//! The switch as a deterministic state machine: requests, disconnects and timeouts in;
//! replies, durable events and shutdown out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;

use crate::protocol::{
    Diagnostics, Entry, ErrorReply, Message, MessageId, MessageKind, Origin, QueueDiagnostics,
    QueueName, Reply, Request, SessionToken, TraceEvent, TraceMessage, TransferReply,
    TransferRequest, TRANSFER_FROM_START,
};

use super::config::{AckSync, Config};
use super::name_map::NameMap;
use super::state::{Event, Queue, QueueStore};
use super::time::{seconds_to_duration, Timestamp};
use super::trace::{message_record, TraceRecord, TraceRing};

/// Identifies one client connection. The driver assigns them and never reuses one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnectionId(pub u64);

/// Identifies one request. The driver assigns them, unique for the engine's life, and gets the
/// same id back in the request's [`Output::Reply`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RequestId(pub u64);

/// Whether `request` may change the durable state (create, destroy, send, ack). Its reply is
/// `after_sync` unless it turns out to concern only a transient queue (or is an Ack under
/// [`AckSync::Lazy`]), and a driver whose journal is failing refuses it up front rather than
/// apply a change it may not be able to make durable.
pub fn changes_durable_state(request: &Request) -> bool {
    matches!(
        request,
        Request::CreatePersistent(_)
            | Request::CreateTransient(_)
            | Request::Destroy(_)
            | Request::Send { .. }
            | Request::Ack(_)
    )
}

/// What the engine asks its driver to do. Drain with [`Engine::poll_output`] after every
/// `handle_*` call, in order.
#[derive(Clone, PartialEq, Debug)]
pub enum Output {
    /// Persist this event. Events come out in the order they were applied; a journal that
    /// replays them through [`QueueStore::apply`] rebuilds the durable state, transient
    /// queues aside: events that only change a transient queue are applied but not output
    /// (recovery would drop those queues anyway; ids they used are covered by the journal's
    /// id floors, see `store::ID_RESERVE`).
    Persist(Event),
    /// Answer a request.
    Reply {
        /// The request being answered.
        request: RequestId,
        /// Its connection.
        connection: ConnectionId,
        /// The answer.
        reply: Reply,
        /// The request was a mutation of durable state: the reply must not be released
        /// before every [`Output::Persist`] emitted before it is durable (protocol.md part
        /// A.8). Replies to reads, to changes of transient queues only, and to Acks under
        /// [`AckSync::Lazy`] carry `false` and may be released at once.
        after_sync: bool,
    },
    /// A Shutdown request was accepted: stop accepting connections, answer what is in flight
    /// (see [`Engine::handle_shutdown`]) and exit.
    Shutdown,
}

/// Counts of the engine's volatile bookkeeping, for leak checks and metrics.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct EngineStats {
    /// Connections the engine knows of.
    pub connections: usize,
    /// Distinct session tokens with at least one connection.
    pub sessions: usize,
    /// Queues.
    pub queues: usize,
    /// Stored messages.
    pub messages: usize,
    /// Stored payload bytes.
    pub payload_bytes: usize,
    /// Transfers waiting for a message.
    pub parked_transfers: usize,
    /// Trace reads waiting for an event.
    pub parked_traces: usize,
    /// Queues with a `next_transfer_expected` entry.
    pub alive_queues: usize,
    /// Events held by the trace.
    pub trace_events: usize,
    /// Bytes held by the trace.
    pub trace_bytes: usize,
    /// Messages stored since the engine started.
    pub messages_sent: u64,
    /// Messages deleted by an Ack since the engine started.
    pub messages_acked: u64,
    /// Messages returned by Transfers since the engine started (counted once per reply).
    pub messages_transferred: u64,
    /// Transient queues removed because their session's last connection closed.
    pub transient_queues_cleaned: u64,
    /// How often each limit was reached since the engine started.
    pub limits_hit: LimitHits,
}

/// How often each of the engine's limits ([`Config`]) was reached: a request refused with a
/// 4xx, a Transfer reply cut short, a trace event evicted. The simulation reports these per
/// seed and fails when a limit is never reached, so that no limit goes untested.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LimitHits {
    /// Requests refused for a name or token longer than `name_bytes_max`.
    pub name_bytes: u64,
    /// Creates refused because `queues_max` queues exist.
    pub queues: u64,
    /// Sends refused because the queue held `queue_messages_max` messages.
    pub queue_messages: u64,
    /// Sends refused because they would pass their queue's `queue_bytes_max`.
    pub queue_bytes: u64,
    /// Sends refused because they would pass `stored_bytes_max`.
    pub stored_bytes: u64,
    /// Transfers and Trace reads refused for a timeout above `wait_timeout_max`.
    pub wait_timeout: u64,
    /// Logins refused because the connection held `logins_per_connection_max` tokens.
    pub logins: u64,
    /// Transfer replies that `transfer_reply_bytes_max` cut short.
    pub transfer_reply_bytes: u64,
    /// Trace events evicted because the trace held `trace_entries_max` events.
    pub trace_entries: u64,
    /// Trace events evicted because the trace held more than `trace_bytes_max` bytes.
    pub trace_bytes: u64,
}

/// A summary of one queue, for metrics and consoles that must not copy whole queues.
#[derive(Clone, PartialEq, Debug)]
pub struct QueueSummary {
    /// The queue's name.
    pub name: QueueName,
    /// Whether a session owns it.
    pub transient: bool,
    /// Stored messages.
    pub depth: usize,
    /// Stored payload bytes.
    pub payload_bytes: usize,
    /// When the oldest stored message was stored.
    pub oldest: Option<Timestamp>,
    /// When the next Transfer naming it is expected, if one ever named it.
    pub next_transfer_expected: Option<Timestamp>,
}

#[derive(Default)]
struct Counters {
    messages_sent: u64,
    messages_acked: u64,
    messages_transferred: u64,
    transient_queues_cleaned: u64,
    /// Every field but the trace's, which the ring counts itself.
    limits_hit: LimitHits,
}

struct ParkedTransfer {
    connection: ConnectionId,
    session: SessionToken,
    from: i64,
    queues: Vec<QueueName>,
    deadline: Timestamp,
    timeout: Duration,
}

struct ParkedTrace {
    connection: ConnectionId,
    from: i64,
    deadline: Timestamp,
}

/// The message switch as a pure state machine (see the module documentation of
/// [`crate::engine`] for the driving contract).
pub struct Engine {
    config: Config,
    start: Timestamp,
    store: QueueStore,
    connections: BTreeMap<ConnectionId, BTreeSet<SessionToken>>,
    session_connections: BTreeMap<SessionToken, usize>,
    transfers: BTreeMap<RequestId, ParkedTransfer>,
    /// Only ever looked up by name, never iterated, so its order cannot reach an output: a
    /// hash map spares each Send the name comparisons of a B-tree search, which grew with
    /// thousands of parked Transfers (docs/performance.md, "10,000 idle waiters").
    transfers_by_queue: NameMap<BTreeSet<RequestId>>,
    traces: BTreeMap<RequestId, ParkedTrace>,
    traces_by_from: BTreeSet<(i64, RequestId)>,
    deadlines: BTreeSet<(Timestamp, RequestId)>,
    parked_by_connection: BTreeSet<(ConnectionId, RequestId)>,
    trace: TraceRing,
    outputs: VecDeque<Output>,
    counters: Counters,
    /// Set by `handle_shutdown`: from then on nothing parks, so a Transfer that arrives
    /// while connections drain is answered at once instead of holding the shutdown up.
    stopping: bool,
    /// Whether a journal takes the changes (see [`Engine::without_journal`]).
    journalled: bool,
}

impl Engine {
    /// A fresh engine that started at `start`. Message ids begin at `start` in µs since the
    /// epoch, so they keep growing across restarts without a journal.
    pub fn new(config: Config, start: Timestamp) -> Self {
        Self::with_store(config, start, QueueStore::new(start.unix_micros()))
    }

    /// An engine over recovered durable state. Transient queues in `store` (whose sessions are
    /// gone) must already have been removed by the caller; the id counter is raised to at
    /// least `start` in µs.
    pub fn with_store(config: Config, start: Timestamp, mut store: QueueStore) -> Self {
        store.raise_next_index(start.unix_micros());
        let trace = TraceRing::new(
            config.trace_entries_max,
            config.trace_bytes_max,
            config.trace_truncate_bytes,
        );
        Self {
            config,
            start,
            store,
            connections: BTreeMap::new(),
            session_connections: BTreeMap::new(),
            transfers: BTreeMap::new(),
            transfers_by_queue: NameMap::default(),
            traces: BTreeMap::new(),
            traces_by_from: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            parked_by_connection: BTreeSet::new(),
            trace,
            outputs: VecDeque::new(),
            counters: Counters::default(),
            stopping: false,
            journalled: true,
        }
    }

    /// This engine for a switch without a journal: it emits no [`Output::Persist`], and no
    /// reply is marked to wait for a sync (Shutdown's aside), so nothing looks a change's
    /// queue up a second time to decide whether it would be journalled. Everything else,
    /// replies and state included, is as with a journal.
    pub fn without_journal(mut self) -> Self {
        self.journalled = false;
        self
    }

    /// The durable state, read-only.
    pub fn store(&self) -> &QueueStore {
        &self.store
    }

    /// The engine's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counts of connections, sessions, queues, waiters and trace use.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            connections: self.connections.len(),
            sessions: self.session_connections.len(),
            queues: self.store.queue_count(),
            messages: self.store.message_count(),
            payload_bytes: self.store.payload_bytes(),
            parked_transfers: self.transfers.len(),
            parked_traces: self.traces.len(),
            alive_queues: self
                .store
                .queues()
                .filter(|(_, q)| q.next_transfer_expected.is_some())
                .count(),
            trace_events: self.trace.event_count(),
            trace_bytes: self.trace.bytes(),
            messages_sent: self.counters.messages_sent,
            messages_acked: self.counters.messages_acked,
            messages_transferred: self.counters.messages_transferred,
            transient_queues_cleaned: self.counters.transient_queues_cleaned,
            limits_hit: LimitHits {
                trace_entries: self.trace.evicted_for_entries(),
                trace_bytes: self.trace.evicted_for_bytes(),
                ..self.counters.limits_hit
            },
        }
    }

    /// One summary per queue, ascending by name, at most `limit` of them, deepest first when
    /// there are more (so metrics keep a bounded number of series).
    pub fn queue_summaries(&self, limit: usize) -> Vec<QueueSummary> {
        let mut summaries: Vec<QueueSummary> = self
            .store
            .queues()
            .map(|(name, queue)| QueueSummary {
                name: name.clone(),
                transient: queue.owner.is_some(),
                depth: queue.messages.len(),
                payload_bytes: queue.payload_bytes,
                oldest: queue.messages.values().next().map(|m| m.time),
                next_transfer_expected: queue.next_transfer_expected,
            })
            .collect();
        if summaries.len() > limit {
            // Deepest first; ties by name keep the choice deterministic.
            summaries.sort_by(|a, b| b.depth.cmp(&a.depth).then_with(|| a.name.cmp(&b.name)));
            summaries.truncate(limit);
            summaries.sort_by(|a, b| a.name.cmp(&b.name));
        }
        summaries
    }

    /// The trace events with an id ≥ `from`, ascending, with their payloads as recorded
    /// instead of compacted the reference's way (see
    /// [`TraceRing::events_as_recorded_from`]). A read, as a Trace request that does not
    /// wait is, but for readers inside the switch: nothing is recorded or changed.
    pub fn trace_as_recorded_from(&self, from: i64) -> Vec<(i64, TraceEvent)> {
        self.trace.events_as_recorded_from(from)
    }

    /// The time the engine started.
    pub fn start_time(&self) -> Timestamp {
        self.start
    }

    /// A new connection was accepted.
    pub fn handle_connect(&mut self, connection: ConnectionId) {
        self.connections.entry(connection).or_default();
    }

    /// Handles one request from `connection` at time `now`. Its reply comes out of
    /// [`Engine::poll_output`], at once or, for a Transfer or Trace that has to wait, after a
    /// later call wakes it.
    pub fn handle_request(
        &mut self,
        now: Timestamp,
        connection: ConnectionId,
        request_id: RequestId,
        request: Request,
    ) {
        let session = self.session_of(connection);
        if request.needs_session() && session.is_none() {
            return self.reply(
                request_id,
                connection,
                Reply::Error(ErrorReply::please_log_in()),
            );
        }
        if let Err(error) = self.check_names(&request) {
            return self.reply(request_id, connection, Reply::Error(error));
        }
        let session = session.unwrap_or_default();
        // Shutdown promises that everything before it is durable, so it waits like a mutation.
        let after_sync = matches!(request, Request::Shutdown)
            || (self.journalled && self.waits_for_sync(&request));
        let reply = match request {
            Request::Login(token) => self.login(connection, token),
            Request::CreatePersistent(name) => self.create(name, None),
            Request::CreateTransient(name) => self.create_transient(name, session),
            Request::Destroy(name) => {
                if self.store.queue(&name).is_some() {
                    self.emit(Event::QueueRemoved { name });
                }
                Ok(Reply::Empty)
            }
            Request::Send { queue, message } => self.send(now, session, queue, message),
            Request::Transfer(transfer) => {
                return self.transfer(now, connection, request_id, session, transfer);
            }
            Request::Ack(id) => self.ack(now, session, id),
            Request::List { prefix, alive_only } => Ok(self.list(&prefix, alive_only)),
            Request::Trace { from, timeout_s } => {
                return self.trace(now, connection, request_id, from, timeout_s);
            }
            Request::Diagnostics => Ok(Reply::Diagnostics(self.diagnostics(now))),
            Request::Shutdown => {
                self.outputs.push_back(Output::Reply {
                    request: request_id,
                    connection,
                    reply: Reply::Empty,
                    after_sync: true,
                });
                self.outputs.push_back(Output::Shutdown);
                return;
            }
            // The shell serves these itself; they never reach a correct driver.
            Request::Web(_) | Request::Metrics | Request::Health => {
                Err(ErrorReply::new(404, "Not found"))
            }
        };
        let reply = reply.unwrap_or_else(Reply::Error);
        self.outputs.push_back(Output::Reply {
            request: request_id,
            connection,
            reply,
            after_sync,
        });
    }

    /// `connection` closed (EOF, reset, or the server dropped it). Its parked requests are
    /// forgotten without a reply, and each of its session tokens that no other connection
    /// still holds loses its transient queues.
    pub fn handle_disconnect(&mut self, _now: Timestamp, connection: ConnectionId) {
        let parked: Vec<RequestId> = self
            .parked_by_connection
            .range((connection, RequestId(0))..=(connection, RequestId(u64::MAX)))
            .map(|(_, request)| *request)
            .collect();
        for request in parked {
            self.unpark(request);
        }
        let Some(tokens) = self.connections.remove(&connection) else {
            return;
        };
        for token in tokens {
            let remaining = self
                .session_connections
                .get_mut(&token)
                .map(|count| {
                    *count -= 1;
                    *count
                })
                .unwrap_or(0);
            if remaining == 0 {
                self.session_connections.remove(&token);
                for name in self.store.owned_by(&token) {
                    self.counters.transient_queues_cleaned += 1;
                    self.emit(Event::QueueRemoved { name });
                }
            }
        }
    }

    /// Time has reached `now`: answer every parked Transfer and Trace whose deadline passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(deadline, request)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.complete_parked(now, request);
        }
    }

    /// The switch is shutting down: answer every parked Transfer and Trace now, with what
    /// they would get at their deadline.
    pub fn handle_shutdown(&mut self, now: Timestamp) {
        self.stopping = true;
        let parked: Vec<RequestId> = self.deadlines.iter().map(|(_, r)| *r).collect();
        for request in parked {
            self.complete_parked(now, request);
        }
    }

    /// The next output, if any. Call until `None` after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Engine::handle_timeout`] must next be called, if anything is waiting.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    fn reply(&mut self, request: RequestId, connection: ConnectionId, reply: Reply) {
        self.outputs.push_back(Output::Reply {
            request,
            connection,
            reply,
            after_sync: false,
        });
    }

    /// Whether `request`, handled now, may journal anything: it changes durable state, and
    /// not only a transient queue (recovery drops those, so their changes are neither
    /// journalled nor synced). A driver whose journal is failing refuses exactly these.
    pub fn needs_journal(&self, request: &Request) -> bool {
        changes_durable_state(request) && !self.concerns_only_transient(request)
    }

    /// Whether the reply to `request` (about to be handled) must wait for the sync of what
    /// came before it: every change to durable state does ([`Engine::needs_journal`]),
    /// except an Ack under [`AckSync::Lazy`].
    fn waits_for_sync(&self, request: &Request) -> bool {
        let lazy_ack = matches!(request, Request::Ack(_)) && self.config.ack_sync == AckSync::Lazy;
        self.needs_journal(request) && !lazy_ack
    }

    fn concerns_only_transient(&self, request: &Request) -> bool {
        let store = &self.store;
        match request {
            Request::CreatePersistent(name) | Request::Destroy(name) => store.is_transient(name),
            Request::Send { queue, .. } => store.is_transient(queue),
            Request::Ack(id) => store.is_transient(&id.queue),
            // Creates a transient queue unless a persistent one of that name exists.
            Request::CreateTransient(name) => name
                .as_ref()
                .is_none_or(|name| store.queue(name).is_none() || store.is_transient(name)),
            _ => false,
        }
    }

    /// Applies `event` and asks for it to be journalled, unless it only changes a transient
    /// queue (see [`QueueStore::is_volatile`]).
    fn emit(&mut self, event: Event) {
        if !self.journalled || self.store.is_volatile(&event) {
            return self.store.apply_owned(event);
        }
        self.store.apply(&event);
        self.outputs.push_back(Output::Persist(event));
    }

    /// A connection's session: the smallest token it logged in with, as in the reference.
    fn session_of(&self, connection: ConnectionId) -> Option<SessionToken> {
        self.connections.get(&connection)?.first().cloned()
    }

    fn check_names(&mut self, request: &Request) -> Result<(), ErrorReply> {
        let max = self.config.name_bytes_max;
        if request.longest_name_bytes() > max {
            self.counters.limits_hit.name_bytes += 1;
            Err(ErrorReply::new(
                400,
                format!("name too long (limit {max} bytes)"),
            ))
        } else {
            Ok(())
        }
    }

    fn login(
        &mut self,
        connection: ConnectionId,
        token: SessionToken,
    ) -> Result<Reply, ErrorReply> {
        let tokens = self.connections.entry(connection).or_default();
        if tokens.contains(&token) {
            return Ok(Reply::Empty);
        }
        if tokens.len() >= self.config.logins_per_connection_max {
            self.counters.limits_hit.logins += 1;
            return Err(ErrorReply::new(
                429,
                format!(
                    "too many logins on one connection (limit {})",
                    self.config.logins_per_connection_max
                ),
            ));
        }
        tokens.insert(token.clone());
        *self.session_connections.entry(token).or_default() += 1;
        Ok(Reply::Empty)
    }

    fn create(
        &mut self,
        name: QueueName,
        owner: Option<SessionToken>,
    ) -> Result<Reply, ErrorReply> {
        if self.store.queue(&name).is_none() {
            if self.store.queue_count() >= self.config.queues_max {
                self.counters.limits_hit.queues += 1;
                return Err(ErrorReply::new(
                    429,
                    format!("too many queues (limit {})", self.config.queues_max),
                ));
            }
            self.emit(Event::QueueCreated {
                name: name.clone(),
                owner,
            });
            self.note_parked_listeners(&name);
        }
        Ok(Reply::Name(name))
    }

    fn create_transient(
        &mut self,
        name: Option<QueueName>,
        session: SessionToken,
    ) -> Result<Reply, ErrorReply> {
        let name = match name {
            Some(name) => name,
            None => loop {
                let candidate = QueueName::from(format!("transient:{}", self.store.take_index()));
                if self.store.queue(&candidate).is_none() {
                    break candidate;
                }
            },
        };
        self.create(name, Some(session))
    }

    /// A queue was just created: Transfers already parked on its name count as listeners, as
    /// they would have in the reference, which records every name a Transfer mentions.
    fn note_parked_listeners(&mut self, name: &QueueName) {
        let Some(waiting) = self.transfers_by_queue.get(name) else {
            return;
        };
        let latest = waiting
            .iter()
            .filter_map(|request| self.transfers.get(request))
            .map(|parked| parked.deadline)
            .max();
        if let Some(queue) = self.store.queue_mut(name) {
            queue.next_transfer_expected = latest;
        }
    }

    fn send(
        &mut self,
        now: Timestamp,
        session: SessionToken,
        queue: QueueName,
        message: Message,
    ) -> Result<Reply, ErrorReply> {
        let Some((stored_name, stored)) = self.store.queue_entry(&queue) else {
            return Ok(Reply::Sent(None));
        };
        if stored.messages.len() >= self.config.queue_messages_max {
            self.counters.limits_hit.queue_messages += 1;
            return Err(ErrorReply::new(
                429,
                format!(
                    "queue {queue} is full (limit {} messages)",
                    self.config.queue_messages_max
                ),
            ));
        }
        if stored.payload_bytes + message.payload.len() > self.config.queue_bytes_max {
            self.counters.limits_hit.queue_bytes += 1;
            return Err(ErrorReply::new(
                429,
                format!(
                    "queue {queue} is full (limit {} payload bytes)",
                    self.config.queue_bytes_max
                ),
            ));
        }
        if self.store.payload_bytes() + message.payload.len() > self.config.stored_bytes_max {
            self.counters.limits_hit.stored_bytes += 1;
            return Err(ErrorReply::new(
                429,
                format!(
                    "switch storage is full (limit {} payload bytes)",
                    self.config.stored_bytes_max
                ),
            ));
        }
        // The stored name, not the request's copy: the message id, the trace and the wake-up
        // then share its buffer, where each clone of the request's copy would first have
        // allocated a shared header for it.
        let queue = stored_name.clone();
        let message = self.owned_message(message);
        let id = MessageId::new(queue.clone(), self.store.next_index());
        self.trace.record(message_record(
            now,
            Some(session.clone()),
            None,
            &id,
            &message,
            None,
        ));
        self.counters.messages_sent += 1;
        self.emit(Event::MessageStored {
            id: id.clone(),
            origin: Origin::Name(session),
            time: now,
            message,
        });
        self.wake_transfers(now, &queue, id.index);
        self.wake_traces();
        Ok(Reply::Sent(Some(id)))
    }

    /// `message` made fit to be stored for a long time: its payload gets an allocation of its
    /// own, and the queue it names shares the name buffer of that queue, if it exists.
    ///
    /// The payload that arrives is often a view into a much larger buffer (hyper hands out
    /// slices of the connection's read buffer), which a stored message would keep alive
    /// whole: a queued 100-byte message pinned kilobytes. Copying it costs one small
    /// allocation per Send. The names come fresh from the request's path; sharing the stored
    /// queue name instead saves two allocations per queued message.
    fn owned_message(&self, message: Message) -> Message {
        let kind = match message.kind {
            MessageKind::Request { reply_to } => MessageKind::Request {
                reply_to: self.store.shared_name(reply_to),
            },
            MessageKind::Response { request } => MessageKind::Response {
                request: MessageId::new(self.store.shared_name(request.queue), request.index),
            },
        };
        Message {
            payload: Bytes::copy_from_slice(&message.payload),
            kind,
        }
    }

    fn ack(
        &mut self,
        now: Timestamp,
        session: SessionToken,
        id: MessageId,
    ) -> Result<Reply, ErrorReply> {
        // With the stored queue name, as in `send`.
        let (id, stored) = match self.store.queue_entry(&id.queue) {
            Some((name, queue)) => (
                MessageId::new(name.clone(), id.index),
                queue.messages.contains_key(&id.index),
            ),
            None => (id, false),
        };
        if stored {
            self.counters.messages_acked += 1;
            self.emit(Event::MessageAcked { id: id.clone() });
        }
        self.trace.record(TraceRecord {
            time: now,
            input: Some(session),
            output: None,
            message: TraceMessage::Ack(id),
            processing_time: None,
        });
        self.wake_traces();
        Ok(Reply::Empty)
    }

    fn transfer(
        &mut self,
        now: Timestamp,
        connection: ConnectionId,
        request: RequestId,
        session: SessionToken,
        transfer: TransferRequest,
    ) {
        let timeout = match self.wait_duration(transfer.timeout_s) {
            Ok(timeout) => timeout,
            Err(error) => return self.reply(request, connection, Reply::Error(error)),
        };
        let deadline = now.saturating_add(timeout);
        let parked = ParkedTransfer {
            connection,
            session,
            from: transfer.from.unwrap_or(TRANSFER_FROM_START),
            queues: transfer.queues,
            deadline,
            timeout,
        };
        for name in &parked.queues {
            if let Some(queue) = self.store.queue_mut(name) {
                queue.next_transfer_expected = Some(deadline);
            }
        }
        if timeout.is_zero() || self.has_messages_after(&parked.queues, parked.from) {
            return self.finish_transfer(now, request, parked);
        }
        for name in &parked.queues {
            self.transfers_by_queue
                .entry(name.clone())
                .or_default()
                .insert(request);
        }
        self.deadlines.insert((deadline, request));
        self.parked_by_connection.insert((connection, request));
        self.transfers.insert(request, parked);
    }

    fn wait_duration(&mut self, seconds: f64) -> Result<Duration, ErrorReply> {
        // NaN would otherwise read as "no wait" and +inf as "longer than the limit": both
        // are client mistakes worth naming (protocol.md part A.9).
        if !seconds.is_finite() {
            return Err(ErrorReply::new(
                400,
                format!("timeout must be a finite number of seconds, not {seconds}"),
            ));
        }
        if self.stopping {
            return Ok(Duration::ZERO);
        }
        let duration = seconds_to_duration(seconds);
        if duration > self.config.wait_timeout_max {
            self.counters.limits_hit.wait_timeout += 1;
            return Err(ErrorReply::new(
                400,
                format!(
                    "timeout too long (limit {} s)",
                    self.config.wait_timeout_max.as_secs_f64()
                ),
            ));
        }
        Ok(duration)
    }

    fn has_messages_after(&self, queues: &[QueueName], from: i64) -> bool {
        queues.iter().any(|name| {
            self.store.queue(name).is_some_and(|queue| {
                queue
                    .messages
                    .range((Bound::Excluded(from), Bound::Unbounded))
                    .next()
                    .is_some()
            })
        })
    }

    fn finish_transfer(&mut self, now: Timestamp, request: RequestId, parked: ParkedTransfer) {
        let (messages, next, cut) = self.transfer_batch(&parked.queues, parked.from);
        if cut {
            self.counters.limits_hit.transfer_reply_bytes += 1;
        }
        let expected = now.saturating_add(parked.timeout);
        for name in &parked.queues {
            if let Some(queue) = self.store.queue_mut(name) {
                queue.next_transfer_expected = Some(expected);
            }
        }
        for (id, message) in &messages {
            let processing_time = self.processing_time(now, message);
            self.trace.record(message_record(
                now,
                None,
                Some(parked.session.clone()),
                id,
                message,
                processing_time,
            ));
        }
        if !messages.is_empty() {
            self.counters.messages_transferred += messages.len() as u64;
            self.wake_traces();
        }
        self.outputs.push_back(Output::Reply {
            request,
            connection: parked.connection,
            reply: Reply::Transfer(TransferReply { messages, next }),
            after_sync: false,
        });
    }

    /// The messages a Transfer from `from` over `queues` returns now, its `next`, and whether
    /// the reply limit left messages out.
    ///
    /// Messages are taken in ascending id order across all the queues (protocol.md part A.2),
    /// so when the reply limit cuts the batch short, every message left out has a larger id
    /// than every message included, and `next`, the id of the last message included, leaves
    /// nothing stored below the cursor undelivered. Walking the queues one after another
    /// instead would put `next` past the messages of a later queue that the cut left out
    /// (issue 12). Ids come from one switch-wide counter, so no two queues share one; a queue
    /// named twice yields its messages twice, side by side, as the reference repeats them.
    fn transfer_batch(
        &self,
        queues: &[QueueName],
        from: i64,
    ) -> (Vec<(MessageId, Message)>, i64, bool) {
        let mut heads: Vec<_> = queues
            .iter()
            .filter_map(|name| {
                let queue = self.store.queue(name)?;
                let mut messages = queue
                    .messages
                    .range((Bound::Excluded(from), Bound::Unbounded))
                    .peekable();
                messages.peek()?;
                Some((name, messages))
            })
            .collect();
        let mut batch = Vec::new();
        let mut reply_bytes = 0usize;
        let mut next = from;
        // Each round takes from the queue whose first message left has the smallest id (the
        // first such queue on a tie, which only a repeated name can make).
        while let Some(position) =
            (0..heads.len()).min_by_key(|&i| heads[i].1.peek().map(|(&index, _)| index))
        {
            let (name, messages) = &mut heads[position];
            let Some((&index, stored)) = messages.next() else {
                break;
            };
            let size = stored.message.payload.len();
            if !batch.is_empty() && reply_bytes + size > self.config.transfer_reply_bytes_max {
                return (batch, next, true);
            }
            reply_bytes += size;
            next = index;
            batch.push((
                MessageId::new((*name).clone(), index),
                stored.message.clone(),
            ));
            if messages.peek().is_none() {
                let _exhausted = heads.swap_remove(position);
            }
        }
        (batch, next, false)
    }

    /// For a response whose request is still stored: ns since the request was stored.
    fn processing_time(&self, now: Timestamp, message: &Message) -> Option<i64> {
        let MessageKind::Response { request } = &message.kind else {
            return None;
        };
        let stored = self
            .store
            .queue(&request.queue)?
            .messages
            .get(&request.index)?;
        Some(now.nanos_since(stored.time))
    }

    /// A message with id `index` was stored in `queue`: answer the Transfers parked on that
    /// queue whose cursor is below it. Others are not looked at (protocol.md part A.4).
    fn wake_transfers(&mut self, now: Timestamp, queue: &QueueName, index: i64) {
        let Some(waiting) = self.transfers_by_queue.get(queue) else {
            return;
        };
        let ready: Vec<RequestId> = waiting
            .iter()
            .filter(|request| self.transfers.get(request).is_some_and(|p| p.from < index))
            .copied()
            .collect();
        for request in ready {
            if let Some(parked) = self.unpark(request) {
                self.finish_transfer(now, request, parked);
            }
        }
    }

    /// Removes a parked Transfer or Trace from every index. Returns the Transfer, if it was
    /// one.
    fn unpark(&mut self, request: RequestId) -> Option<ParkedTransfer> {
        if let Some(trace) = self.traces.remove(&request) {
            self.traces_by_from.remove(&(trace.from, request));
            self.deadlines.remove(&(trace.deadline, request));
            self.parked_by_connection
                .remove(&(trace.connection, request));
            return None;
        }
        let parked = self.transfers.remove(&request)?;
        for name in &parked.queues {
            if let Some(waiting) = self.transfers_by_queue.get_mut(name) {
                waiting.remove(&request);
                if waiting.is_empty() {
                    self.transfers_by_queue.remove(name);
                }
            }
        }
        self.deadlines.remove(&(parked.deadline, request));
        self.parked_by_connection
            .remove(&(parked.connection, request));
        Some(parked)
    }

    fn complete_parked(&mut self, now: Timestamp, request: RequestId) {
        if let Some(trace) = self.traces.get(&request) {
            let (connection, from) = (trace.connection, trace.from);
            self.unpark(request);
            let events = self.trace.events_from(from);
            self.reply(request, connection, Reply::Trace(events));
        } else if let Some(parked) = self.unpark(request) {
            self.finish_transfer(now, request, parked);
        }
    }

    fn trace(
        &mut self,
        now: Timestamp,
        connection: ConnectionId,
        request: RequestId,
        from: i64,
        timeout_s: f64,
    ) {
        let timeout = match self.wait_duration(timeout_s) {
            Ok(timeout) => timeout,
            Err(error) => return self.reply(request, connection, Reply::Error(error)),
        };
        if timeout.is_zero() || self.trace.next_id() > from {
            let events = self.trace.events_from(from);
            return self.reply(request, connection, Reply::Trace(events));
        }
        let deadline = now.saturating_add(timeout);
        self.traces.insert(
            request,
            ParkedTrace {
                connection,
                from,
                deadline,
            },
        );
        self.traces_by_from.insert((from, request));
        self.deadlines.insert((deadline, request));
        self.parked_by_connection.insert((connection, request));
    }

    /// Answers the parked Trace reads that the events recorded so far satisfy.
    fn wake_traces(&mut self) {
        let next_id = self.trace.next_id();
        while let Some(&(from, request)) = self.traces_by_from.first() {
            if from >= next_id {
                break;
            }
            let Some(connection) = self.traces.get(&request).map(|t| t.connection) else {
                self.traces_by_from.remove(&(from, request));
                continue;
            };
            self.unpark(request);
            let events = self.trace.events_from(from);
            self.reply(request, connection, Reply::Trace(events));
        }
    }

    fn list(&self, prefix: &QueueName, alive_only: bool) -> Reply {
        let mut names: Vec<QueueName> = self
            .store
            .queues_with_prefix(prefix)
            .filter(|(_, queue)| !alive_only || queue.next_transfer_expected.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        // The reference folds over a sorted map, prepending: descending order.
        names.reverse();
        Reply::List(names)
    }

    fn diagnostics(&self, now: Timestamp) -> Diagnostics {
        let mut permanent_queues = Vec::new();
        let mut transient_queues = Vec::new();
        for (name, queue) in self.store.queues() {
            let shown = (name.clone(), self.queue_diagnostics(name, queue));
            if queue.owner.is_some() {
                transient_queues.push(shown);
            } else {
                permanent_queues.push(shown);
            }
        }
        Diagnostics {
            start_time: 0,
            current_time: now.nanos_since(self.start),
            permanent_queues,
            transient_queues,
        }
    }

    fn queue_diagnostics(&self, name: &QueueName, queue: &Queue) -> QueueDiagnostics {
        QueueDiagnostics {
            next_transfer_expected: queue
                .next_transfer_expected
                .map(|t| t.nanos_since(self.start)),
            queue_contents: queue
                .messages
                .iter()
                .rev()
                .map(|(&index, stored)| {
                    (
                        MessageId::new(name.clone(), index),
                        Entry {
                            origin: stored.origin.clone(),
                            time: stored.time.nanos_since(self.start),
                            message: stored.message.clone(),
                        },
                    )
                })
                .collect(),
        }
    }
}
