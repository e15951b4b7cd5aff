//! The one owner of the engine: a task fed by a bounded channel. It stamps every input with
//! the time, drains the engine's outputs, sends replies back to the waiting HTTP handlers and
//! arms the engine's timer.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::admission::Admission;
use super::client::ClientId;
use super::durable::Durability;
use super::fairness::{ClientKey, FairQueue};
use super::id_hash::IdHash;
use super::inspection::Inspection;
use crate::engine::{ConnectionId, Engine, EngineStats, Output, RequestId, Timestamp};
use crate::protocol::{Reply, Request};
use crate::store::Completion;

/// Inputs from the HTTP shell (and the operator) to the driver.
pub(crate) enum Command {
    /// A connection of `client` opens; its commands are then served in `client`'s turns.
    Connect {
        connection: ConnectionId,
        client: ClientId,
    },
    Request {
        connection: ConnectionId,
        request: Request,
        reply: oneshot::Sender<Reply>,
    },
    Disconnect(ConnectionId),
    Stats(oneshot::Sender<EngineStats>),
    /// Counts plus per-queue summaries (at most `queues_max` of them), for `/metrics`, and
    /// with `trace_from` the trace events from that id, for the console's sampler, all read
    /// in one pass.
    Inspect {
        queues_max: usize,
        trace_from: Option<i64>,
        reply: oneshot::Sender<Inspection>,
    },
    Shutdown,
    /// Make every event durable and stop the journal; answers whether that worked (at once,
    /// `Ok`, without a journal).
    CloseJournal(oneshot::Sender<Result<(), String>>),
}

/// Inputs handled per wake-up before outputs are flushed, so that a burst shares one pass
/// (and, with a journal, one sync).
const BATCH_MAX: usize = 256;

/// Maps the tokio clock (virtual under turmoil and in paused tests) to Unix time, anchored at
/// one wall-clock reading taken when the switch starts.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    anchor: Instant,
    anchor_time: Timestamp,
}

impl Clock {
    pub(crate) fn new(anchor_time: Timestamp) -> Self {
        Self {
            anchor: Instant::now(),
            anchor_time,
        }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.anchor_time.saturating_add(self.anchor.elapsed())
    }

    fn instant_of(&self, time: Timestamp) -> Instant {
        self.anchor + self.anchor_time.duration_until(time)
    }
}

pub(crate) struct Driver {
    engine: Engine,
    clock: Clock,
    /// The time of this wake-up's batch, read once for all its commands (a clock reading per
    /// command was a measurable share of a request's cost; a batch takes microseconds).
    now: Timestamp,
    commands: mpsc::Receiver<Command>,
    pending: HashMap<RequestId, (ConnectionId, oneshot::Sender<Reply>), IdHash>,
    /// The requests each connection has in flight (hyper serves one at a time per connection,
    /// so these stay tiny); used to forget them when the connection closes. A connection's
    /// entry stays, empty, until it disconnects, so that its next request allocates nothing.
    pending_by_connection: HashMap<ConnectionId, Vec<RequestId>, IdHash>,
    next_request: u64,
    shutdown: watch::Sender<bool>,
    /// The journal, when the switch is durable.
    durability: Option<Durability>,
    /// The engine's commands waiting for their client's turn (`fairness`).
    waiting: FairQueue<Command>,
    /// The client of each open connection (keyed for `waiting`), whose turns its commands
    /// wait for.
    client_of: HashMap<ConnectionId, ClientKey, IdHash>,
    /// Where the clients' turns cut short are counted, for `/metrics` and the console.
    admission: Arc<Admission>,
}

impl Driver {
    pub(crate) fn new(
        engine: Engine,
        clock: Clock,
        commands: mpsc::Receiver<Command>,
        shutdown: watch::Sender<bool>,
        durability: Option<Durability>,
        admission: Arc<Admission>,
    ) -> Self {
        Self {
            engine,
            now: clock.now(),
            clock,
            commands,
            pending: HashMap::default(),
            pending_by_connection: HashMap::default(),
            next_request: 0,
            shutdown,
            durability,
            waiting: FairQueue::default(),
            client_of: HashMap::default(),
            admission,
        }
    }

    /// Runs until every sender of commands is gone.
    pub(crate) async fn run(mut self) {
        // One timer for the whole run, moved only when the engine's next deadline changes:
        // a parked Transfer keeps the same deadline across many wake-ups, and building a new
        // `Sleep` on each would register and cancel a timer-wheel entry per request.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        // The end of the oldest store hold (see `held_stores`), moved the same way.
        let hold_timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(hold_timer);
        let mut hold_armed: Option<Instant> = None;
        loop {
            let deadline = self.engine.poll_timeout().map(|t| self.clock.instant_of(t));
            if let Some(deadline) = deadline.filter(|d| armed != Some(*d)) {
                timer.as_mut().reset(deadline);
            }
            armed = deadline;
            let hold_due = self.durability.as_ref().and_then(Durability::next_hold_due);
            if let Some(due) = hold_due.filter(|d| hold_armed != Some(*d)) {
                hold_timer.as_mut().reset(due);
            }
            hold_armed = hold_due;
            // `biased` keeps runs reproducible under the simulation (tokio would otherwise
            // pick among ready branches at random). Completions and deadlines go first so a
            // steady stream of commands cannot starve held replies or parked requests.
            let mut first = None;
            tokio::select! {
                biased;
                completion = next_completion(self.durability.as_mut()) => {
                    self.on_completion(completion);
                }
                () = timer.as_mut(), if armed.is_some() => {
                    // Fired: the next pass re-arms it, even for the same deadline.
                    armed = None;
                    self.engine.handle_timeout(self.clock.now());
                }
                () = hold_timer.as_mut(), if hold_armed.is_some() => {
                    hold_armed = None;
                    if let Some(durability) = &mut self.durability {
                        durability.end_due_holds();
                    }
                }
                // Commands left from the last turn: serve the next one at once.
                () = std::future::ready(()), if !self.waiting.is_empty() => {}
                command = self.commands.recv(), if self.waiting.is_empty() => {
                    let Some(command) = command else { return };
                    first = Some(command);
                }
            }
            self.now = self.clock.now();
            if let Some(command) = first {
                self.take_in(command);
            }
            for _ in 1..BATCH_MAX {
                match self.commands.try_recv() {
                    Ok(command) => self.take_in(command),
                    Err(_) => break,
                }
            }
            self.take_turn();
            self.flush();
            // One batch per wake-up: everything handled above shares one journal write.
            if let Some(durability) = &mut self.durability {
                durability.submit(self.engine.store().next_index());
            }
            if !self.waiting.is_empty() {
                // Let the connection tasks this turn answered run (and send their next
                // requests) before the next turn.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Handles a command that is not the engine's work for a client at once; queues the
    /// others for their client's turn.
    fn take_in(&mut self, command: Command) {
        let client = match &command {
            Command::Connect { connection, client } => {
                let key = self.waiting.key(*client);
                self.client_of.insert(*connection, key);
                Some(key)
            }
            Command::Request { connection, .. } | Command::Disconnect(connection) => {
                // Every connection's Connect comes first; one unknown here (none is, but a
                // command must not be lost for it) has no client's turn to wait for.
                self.client_of.get(connection).copied()
            }
            _ => None,
        };
        match client {
            Some(client) => self.waiting.push(client, command),
            None => self.handle(command),
        }
    }

    /// Serves one turn of the waiting commands, fairly between clients.
    fn take_turn(&mut self) {
        let mut waiting = std::mem::take(&mut self.waiting);
        let mut cut_short = Vec::new();
        waiting.take_turn(
            |command| self.handle(command),
            |command| matches!(command, Command::Connect { .. }),
            |client, _| cut_short.push(client.client()),
        );
        self.waiting = waiting;
        if !cut_short.is_empty() {
            self.admission.count_turns_cut_short(&cut_short);
        }
    }

    fn handle(&mut self, command: Command) {
        let now = self.now;
        match command {
            Command::Connect { connection, .. } => self.engine.handle_connect(connection),
            Command::Request {
                connection,
                request,
                reply,
            } => {
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.pending.insert(id, (connection, reply));
                self.pending_by_connection
                    .entry(connection)
                    .or_default()
                    .push(id);
                // A change the journal cannot take must not reach the engine at all.
                let needs_journal =
                    self.durability.is_some() && self.engine.needs_journal(&request);
                if let Some(refusal) = self
                    .durability
                    .as_ref()
                    .and_then(|d| d.refusal(needs_journal))
                {
                    self.release(id, refusal);
                    return;
                }
                if let Some(durability) = &mut self.durability {
                    durability.begin_request(id);
                    if let Request::CreatePersistent(name) = &request {
                        durability.expect_create(id, name);
                    }
                }
                self.engine.handle_request(now, connection, id, request);
            }
            Command::Disconnect(connection) => {
                self.client_of.remove(&connection);
                self.engine.handle_disconnect(now, connection);
                for request in self
                    .pending_by_connection
                    .remove(&connection)
                    .unwrap_or_default()
                {
                    self.pending.remove(&request);
                }
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.engine.stats());
            }
            Command::Inspect {
                queues_max,
                trace_from,
                reply,
            } => {
                let _ = reply.send(Inspection {
                    now,
                    start: self.engine.start_time(),
                    stats: self.engine.stats(),
                    queues: self.engine.queue_summaries(queues_max),
                    trace: trace_from
                        .map(|from| self.engine.trace_as_recorded_from(from))
                        .unwrap_or_default(),
                });
            }
            Command::Shutdown => self.begin_shutdown(),
            Command::CloseJournal(waiter) => {
                self.flush();
                match &mut self.durability {
                    Some(durability) => durability.close(self.engine.store().next_index(), waiter),
                    None => {
                        let _ = waiter.send(Ok(()));
                    }
                }
            }
        }
        // Replies are released as they come: without a journal there is nothing to wait for.
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Persist(event) => {
                    if let Some(durability) = &mut self.durability {
                        durability.persist(event);
                    }
                }
                Output::Reply {
                    request,
                    reply,
                    after_sync,
                    ..
                } => {
                    let reply = match &mut self.durability {
                        Some(durability) => durability.gate(
                            request,
                            reply,
                            after_sync,
                            self.engine.store().next_index(),
                        ),
                        None => Some(reply),
                    };
                    if let Some(reply) = reply {
                        self.release(request, reply);
                    }
                }
                Output::Shutdown => self.begin_shutdown(),
            }
        }
        if let Some(durability) = &mut self.durability {
            for (request, reply) in durability.take_released() {
                self.release(request, reply);
            }
        }
    }

    /// Sends `reply` to the handler waiting for `request`, if it still waits.
    fn release(&mut self, request: RequestId, reply: Reply) {
        if let Some((connection, waiter)) = self.pending.remove(&request) {
            if let Some(in_flight) = self.pending_by_connection.get_mut(&connection) {
                in_flight.retain(|r| *r != request);
            }
            // The handler may be gone (client disconnected); nothing to do then.
            let _ = waiter.send(reply);
        }
    }

    fn on_completion(&mut self, completion: Option<Completion>) {
        let Some(durability) = &mut self.durability else {
            return;
        };
        for (request, reply) in durability.on_completion(completion) {
            self.release(request, reply);
        }
    }

    fn begin_shutdown(&mut self) {
        if *self.shutdown.borrow() {
            return;
        }
        tracing::info!("shutting down");
        self.engine.handle_shutdown(self.clock.now());
        self.shutdown.send_replace(true);
    }
}

/// The journal's next report, or never without a journal.
async fn next_completion(durability: Option<&mut Durability>) -> Option<Completion> {
    match durability {
        Some(durability) => durability.completion().await,
        None => std::future::pending().await,
    }
}
