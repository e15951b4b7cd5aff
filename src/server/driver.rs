//! The engine's driver: a task fed by a bounded channel. It stamps every input with the time,
//! drains the engine's outputs, sends replies back to the waiting HTTP handlers and arms the
//! engine's timer. Its state is behind a lock that a connection task may also take, to answer
//! a request in place while the driver has nothing queued (`super::in_place`); the lock is
//! never held across an `await`, so the engine still has one owner at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use super::admission::Admission;
use super::client::ClientId;
use super::durable::Durability;
use super::fairness::{ClientKey, FairQueue};
use super::id_hash::IdHash;
use super::in_place::{InPlaceCredits, Round};
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
        self.at(Instant::now())
    }

    /// The time of `instant` (the anchor's for an instant before it).
    fn at(&self, instant: Instant) -> Timestamp {
        self.anchor_time
            .saturating_add(instant.saturating_duration_since(self.anchor))
    }

    fn instant_of(&self, time: Timestamp) -> Instant {
        self.anchor + self.anchor_time.duration_until(time)
    }
}

/// What the driver's task and the connection tasks answering in place share: the driver's
/// state behind a lock that nobody holds across an `await`, and the bell that wakes the
/// driver's task when a request answered in place left it work.
pub(crate) struct DriverShared {
    core: Mutex<Core>,
    wake: Notify,
}

/// What answering in place came to ([`DriverShared::answer_in_place`],
/// [`DriverShared::answer_in_place_after`]).
pub(crate) enum InPlace {
    /// The engine answered at once.
    Answered(Reply),
    /// The engine took the request and answers later (a parked Transfer, a reply held for
    /// its sync): through this, as for a request sent to the driver.
    Awaiting(oneshot::Receiver<Reply>),
    /// Not answered in place (see `in_place`): send it to the driver as a command.
    Declined(Request),
}

/// One attempt of [`DriverShared::answer_in_place`].
pub(crate) enum Attempt {
    /// Answered, awaiting the engine's reply, or declined.
    Done(InPlace),
    /// The client had spent its credit in this round.
    OutOfCredit(Request, Round),
}

impl DriverShared {
    /// Hands `request` of `connection` to the engine now, if that is allowed
    /// (`super::in_place`), `commands` being the driver's command queue. Never waits: a lock
    /// held elsewhere declines. When the client has spent its credit, the caller yields to the
    /// runtime once (the end of a round) and tries again with
    /// [`DriverShared::answer_in_place_after`].
    ///
    /// The engine takes the request at `arrived` (when its head was read: the handler's own
    /// clock reading, which spares one per request), or at the last time it saw if that is
    /// later, so that its clock never goes back.
    pub(crate) fn answer_in_place(
        &self,
        connection: ConnectionId,
        request: Request,
        commands: &mpsc::Sender<Command>,
        arrived: Instant,
    ) -> Attempt {
        self.attempt(connection, request, commands, None, arrived)
    }

    /// [`DriverShared::answer_in_place`] for a request that found its client's credit spent
    /// in `round`: yields first (every task woken before this one runs), then tries once
    /// more.
    pub(crate) async fn answer_in_place_after(
        &self,
        round: Round,
        connection: ConnectionId,
        request: Request,
        commands: &mpsc::Sender<Command>,
        arrived: Instant,
    ) -> InPlace {
        tokio::task::yield_now().await;
        match self.attempt(connection, request, commands, Some(round), arrived) {
            Attempt::Done(outcome) => outcome,
            Attempt::OutOfCredit(request, _) => InPlace::Declined(request),
        }
    }

    /// One attempt at answering in place; `after` is the round in which this request found
    /// its client's credit spent, before it yielded. Never waits: a lock held elsewhere
    /// declines too.
    fn attempt(
        &self,
        connection: ConnectionId,
        request: Request,
        commands: &mpsc::Sender<Command>,
        after: Option<Round>,
        arrived: Instant,
    ) -> Attempt {
        let declined = |request| Attempt::Done(InPlace::Declined(request));
        if commands.capacity() != commands.max_capacity() {
            return declined(request);
        }
        let Ok(mut core) = self.core.try_lock() else {
            return declined(request);
        };
        let Some(client) = core.client_of.get(&connection).copied() else {
            return declined(request);
        };
        if !core.waiting.is_empty() {
            return declined(request);
        }
        if let Some(round) = after {
            core.in_place.new_round_after(round);
        }
        if let Err(round) = core.in_place.take(client) {
            return Attempt::OutOfCredit(request, round);
        }
        core.now = core.now.max(core.clock.at(arrived));
        let outcome = core.handle_in_place(connection, request);
        let driver_needed = core.driver_needed();
        drop(core);
        if driver_needed {
            self.wake.notify_one();
        }
        Attempt::Done(outcome)
    }

    /// The driver's state, or `None` once a panic while it was held left it unusable (the
    /// driver then stops, and every request is answered as at shutdown).
    fn lock(&self) -> Option<MutexGuard<'_, Core>> {
        self.core.lock().ok()
    }

    /// The journal's next report, polled under the lock (never ready without a journal).
    fn poll_completion(&self, context: &mut Context<'_>) -> Poll<Option<Completion>> {
        match self.lock() {
            Some(mut core) => match &mut core.durability {
                Some(durability) => durability.poll_completion(context),
                None => Poll::Pending,
            },
            // Reported as the writer gone; the driver stops when it takes the lock.
            None => Poll::Ready(None),
        }
    }
}

/// The driver's task: owns the command queue's receiving end and the timers, and serves
/// everything that is not answered in place.
pub(crate) struct Driver {
    shared: Arc<DriverShared>,
    commands: mpsc::Receiver<Command>,
}

/// The driver's state: the engine and everything around it.
struct Core {
    engine: Engine,
    clock: Clock,
    /// The time of this wake-up's batch (or of the request answered in place), read once
    /// for all its commands (a clock reading per command was a measurable share of a
    /// request's cost; a batch takes microseconds).
    now: Timestamp,
    /// The requests whose replies are awaited: their connection and the handler's oneshot.
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
    /// Requests answered in place per client since the last turn.
    in_place: InPlaceCredits,
    /// While the engine takes a request answered in place: its id, and its reply once
    /// released (it is entered in `pending` only if that does not happen at once).
    in_place_answer: Option<(RequestId, Option<Reply>)>,
    /// The engine's deadline and the end of the oldest store hold that the driver's timers
    /// were last armed for: a request answered in place that moves either earlier must wake
    /// the driver to re-arm them.
    timer_armed: Option<Timestamp>,
    hold_armed: Option<Instant>,
}

impl Driver {
    /// The driver of `engine` and a handle to its state for answering in place.
    pub(crate) fn new(
        engine: Engine,
        clock: Clock,
        commands: mpsc::Receiver<Command>,
        shutdown: watch::Sender<bool>,
        durability: Option<Durability>,
        admission: Arc<Admission>,
    ) -> (Self, Arc<DriverShared>) {
        let core = Core {
            engine,
            now: clock.now(),
            clock,
            pending: HashMap::default(),
            pending_by_connection: HashMap::default(),
            next_request: 0,
            shutdown,
            durability,
            waiting: FairQueue::default(),
            client_of: HashMap::default(),
            admission,
            in_place: InPlaceCredits::default(),
            in_place_answer: None,
            timer_armed: None,
            hold_armed: None,
        };
        let shared = Arc::new(DriverShared {
            core: Mutex::new(core),
            wake: Notify::new(),
        });
        (
            Self {
                shared: shared.clone(),
                commands,
            },
            shared,
        )
    }

    /// Runs until every sender of commands is gone.
    pub(crate) async fn run(mut self) {
        let shared = self.shared.clone();
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
        let mut waiting_empty = true;
        loop {
            let (deadline, hold_due) = {
                let Some(mut core) = shared.lock() else {
                    return;
                };
                core.arm_timers()
            };
            if let Some(deadline) = deadline.filter(|d| armed != Some(*d)) {
                timer.as_mut().reset(deadline);
            }
            armed = deadline;
            if let Some(due) = hold_due.filter(|d| hold_armed != Some(*d)) {
                hold_timer.as_mut().reset(due);
            }
            hold_armed = hold_due;
            // `biased` keeps runs reproducible under the simulation (tokio would otherwise
            // pick among ready branches at random). Completions and deadlines go first so a
            // steady stream of commands cannot starve held replies or parked requests.
            let mut first = None;
            let mut woke_for = WokeFor::Commands;
            tokio::select! {
                biased;
                completion = std::future::poll_fn(|cx| shared.poll_completion(cx)) => {
                    woke_for = WokeFor::Completion(completion);
                }
                () = timer.as_mut(), if armed.is_some() => {
                    // Fired: the next pass re-arms it, even for the same deadline.
                    armed = None;
                    woke_for = WokeFor::Deadline;
                }
                () = hold_timer.as_mut(), if hold_armed.is_some() => {
                    hold_armed = None;
                    woke_for = WokeFor::HoldDue;
                }
                // Commands left from the last turn: serve the next one at once.
                () = std::future::ready(()), if !waiting_empty => {}
                // A request answered in place left work (see `DriverShared::answer_in_place`).
                () = shared.wake.notified() => {}
                command = self.commands.recv(), if waiting_empty => {
                    let Some(command) = command else { return };
                    first = Some(command);
                }
            }
            let Some(waiting_left) = self.serve(woke_for, first) else {
                return;
            };
            waiting_empty = !waiting_left;
            if waiting_left {
                // Let the connection tasks this turn answered run (and send their next
                // requests) before the next turn.
                tokio::task::yield_now().await;
            }
        }
    }

    /// One pass after a wake-up: what woke the driver, the commands queued (`first` and
    /// those behind it), one fair turn, and the journal's batch. Returns whether commands
    /// are left for later turns, or `None` if the driver's state is unusable.
    fn serve(&mut self, woke_for: WokeFor, first: Option<Command>) -> Option<bool> {
        let mut core = self.shared.lock()?;
        match woke_for {
            WokeFor::Commands => {}
            WokeFor::Completion(completion) => core.on_completion(completion),
            WokeFor::Deadline => {
                let now = core.clock.now();
                core.engine.handle_timeout(now);
            }
            WokeFor::HoldDue => {
                if let Some(durability) = &mut core.durability {
                    durability.end_due_holds();
                }
            }
        }
        core.now = core.clock.now();
        if let Some(command) = first {
            core.take_in(command);
        }
        for _ in 1..BATCH_MAX {
            match self.commands.try_recv() {
                Ok(command) => core.take_in(command),
                Err(_) => break,
            }
        }
        core.take_turn();
        core.flush();
        // One batch per wake-up: everything handled above (and answered in place since
        // the last one) shares one journal write.
        let next_index = core.engine.store().next_index();
        if let Some(durability) = &mut core.durability {
            durability.submit(next_index);
        }
        Some(!core.waiting.is_empty())
    }
}

/// Whether `new` is a deadline before `armed` (none armed: any deadline is).
fn earlier<T: Ord>(new: Option<T>, armed: Option<T>) -> bool {
    match (new, armed) {
        (Some(new), Some(armed)) => new < armed,
        (new, None) => new.is_some(),
        (None, Some(_)) => false,
    }
}

/// Which of the driver's wake-up sources fired (handled once the lock is taken).
enum WokeFor {
    Commands,
    Completion(Option<Completion>),
    Deadline,
    HoldDue,
}

impl Core {
    /// The instants the driver's timers must be armed for now, remembered for
    /// [`Core::driver_needed`].
    fn arm_timers(&mut self) -> (Option<Instant>, Option<Instant>) {
        self.timer_armed = self.engine.poll_timeout();
        self.hold_armed = self.durability.as_ref().and_then(Durability::next_hold_due);
        (
            self.timer_armed.map(|t| self.clock.instant_of(t)),
            self.hold_armed,
        )
    }

    /// Whether the driver's task must run for what was just done in place: a batch for
    /// the journal, or a deadline or store hold earlier than its timers are armed for.
    fn driver_needed(&self) -> bool {
        earlier(self.engine.poll_timeout(), self.timer_armed)
            || self.durability.as_ref().is_some_and(|durability| {
                durability.wants_submit(self.engine.store().next_index())
                    || earlier(durability.next_hold_due(), self.hold_armed)
            })
    }

    /// Handles a command that is not the engine's work for a client at once; queues the
    /// others for their client's turn.
    fn take_in(&mut self, command: Command) {
        let client = match &command {
            Command::Connect { connection, client } => {
                let key = self.waiting.key(*client);
                self.client_of.insert(*connection, key);
                self.in_place.connected(key);
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

    /// Serves one turn of the waiting commands, fairly between clients; every client's
    /// credit for answers in place starts again.
    fn take_turn(&mut self) {
        self.in_place.new_round();
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

    /// Gives `request` of `connection` to the engine, whose reply goes to `reply`.
    fn handle_request(
        &mut self,
        connection: ConnectionId,
        request: Request,
        reply: oneshot::Sender<Reply>,
    ) {
        let id = self.next_request_id();
        self.await_reply(connection, id, reply);
        self.handle_new_request(connection, id, request);
    }

    /// Gives `request` of `connection`, answered in place, to the engine. Nearly always
    /// answered before the engine returns, it is entered in `pending` (two hash maps written
    /// and read back per request) only if it is not, with a oneshot for its later reply.
    fn handle_in_place(&mut self, connection: ConnectionId, request: Request) -> InPlace {
        let id = self.next_request_id();
        self.in_place_answer = Some((id, None));
        self.handle_new_request(connection, id, request);
        if let Some((_, Some(reply))) = self.in_place_answer.take() {
            return InPlace::Answered(reply);
        }
        let (sender, receiver) = oneshot::channel();
        self.await_reply(connection, id, sender);
        InPlace::Awaiting(receiver)
    }

    fn next_request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    /// Enters `id` among the requests whose replies are awaited, by `reply`.
    fn await_reply(
        &mut self,
        connection: ConnectionId,
        id: RequestId,
        reply: oneshot::Sender<Reply>,
    ) {
        self.pending.insert(id, (connection, reply));
        self.pending_by_connection
            .entry(connection)
            .or_default()
            .push(id);
    }

    /// Gives request `id` of `connection` to the engine (after the journal's refusal, if it
    /// is failing) and releases whatever replies that made.
    fn handle_new_request(&mut self, connection: ConnectionId, id: RequestId, request: Request) {
        // A change the journal cannot take must not reach the engine at all.
        let needs_journal = self.durability.is_some() && self.engine.needs_journal(&request);
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
        self.engine
            .handle_request(self.now, connection, id, request);
        // Replies are released as they come: without a journal there is nothing to wait for.
        self.flush();
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
                self.handle_request(connection, request, reply);
                return;
            }
            Command::Disconnect(connection) => {
                if let Some(client) = self.client_of.remove(&connection) {
                    self.in_place.disconnected(client);
                }
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
                let next_index = self.engine.store().next_index();
                match &mut self.durability {
                    Some(durability) => durability.close(next_index, waiter),
                    None => {
                        let _ = waiter.send(Ok(()));
                    }
                }
            }
        }
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
                    let next_index = self.engine.store().next_index();
                    let reply = match &mut self.durability {
                        Some(durability) => durability.gate(request, reply, after_sync, next_index),
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
        if let Some((id, answer)) = &mut self.in_place_answer {
            if *id == request {
                *answer = Some(reply);
                return;
            }
        }
        if let Some((connection, sender)) = self.pending.remove(&request) {
            if let Some(in_flight) = self.pending_by_connection.get_mut(&connection) {
                in_flight.retain(|r| *r != request);
            }
            // The handler may be gone (client disconnected); nothing to do then.
            let _ = sender.send(reply);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Config as EngineConfig;
    use crate::server::admission::ClientLimits;
    use crate::server::fairness::PER_CLIENT_PER_TURN;

    const START: Timestamp = Timestamp::from_unix_nanos(1_700_000_000_000_000_000);

    fn client(pid: i32) -> ClientId {
        ClientId::Local {
            uid: 0,
            pid: Some(pid),
        }
    }

    /// A driver's state with connection `c` of client `pid` taken in for each `(c, pid)`,
    /// the (empty) command queue it checks, and the driver (not run, but keeping the queue
    /// open).
    fn connected(connections: &[(u64, i32)]) -> (Arc<DriverShared>, mpsc::Sender<Command>, Driver) {
        let (commands, receiver) = mpsc::channel(16);
        let (shutdown, _) = watch::channel(false);
        let engine = Engine::new(EngineConfig::default(), START).without_journal();
        let admission = Admission::new(ClientLimits::default());
        let (driver, shared) = Driver::new(
            engine,
            Clock::new(START),
            receiver,
            shutdown,
            None,
            admission,
        );
        {
            let mut core = shared.lock().unwrap();
            for (connection, pid) in connections {
                core.take_in(Command::Connect {
                    connection: ConnectionId(*connection),
                    client: client(*pid),
                });
            }
            core.take_turn();
        }
        (shared, commands, driver)
    }

    fn login(shared: &DriverShared, commands: &mpsc::Sender<Command>, connection: u64) -> Attempt {
        let request = Request::Login("token".into());
        shared.attempt(
            ConnectionId(connection),
            request,
            commands,
            None,
            Instant::now(),
        )
    }

    fn answered(attempt: &Attempt) -> bool {
        matches!(attempt, Attempt::Done(InPlace::Answered(Reply::Empty)))
    }

    #[test]
    fn beside_another_client_a_busy_one_is_answered_in_place_a_turns_share_per_round() {
        let (shared, commands, _driver) = connected(&[(1, 1), (2, 1), (3, 2)]);
        for n in 0..PER_CLIENT_PER_TURN {
            assert!(answered(&login(&shared, &commands, 1 + n as u64 % 2)));
        }
        let Attempt::OutOfCredit(request, round) = login(&shared, &commands, 1) else {
            panic!("client 1 has spent its round's credit");
        };
        assert!(
            answered(&login(&shared, &commands, 3)),
            "client 2 has its own"
        );
        let again = shared.attempt(
            ConnectionId(1),
            request,
            &commands,
            Some(round),
            Instant::now(),
        );
        assert!(answered(&again), "back from its yield, in a new round");
    }

    #[test]
    fn a_client_alone_is_answered_in_place_without_counting() {
        let (shared, commands, _driver) = connected(&[(1, 1), (2, 1)]);
        for n in 0..4 * PER_CLIENT_PER_TURN {
            assert!(answered(&login(&shared, &commands, 1 + n as u64 % 2)));
        }
    }

    #[test]
    fn nothing_is_answered_in_place_past_commands_that_wait() {
        let (shared, commands, _driver) = connected(&[(1, 1), (2, 2)]);
        // A command in the queue, not yet taken in.
        commands.try_send(Command::Shutdown).unwrap();
        assert!(matches!(
            login(&shared, &commands, 1),
            Attempt::Done(InPlace::Declined(_))
        ));
        // A command taken in that waits for its client's turn.
        let (commands, _idle_receiver) = mpsc::channel(16);
        let (reply, _) = oneshot::channel();
        shared.lock().unwrap().take_in(Command::Request {
            connection: ConnectionId(2),
            request: Request::Login("other".into()),
            reply,
        });
        assert!(matches!(
            login(&shared, &commands, 1),
            Attempt::Done(InPlace::Declined(_))
        ));
        // A connection whose Connect the driver has not taken in.
        let (shared, commands, _driver) = connected(&[]);
        assert!(matches!(
            login(&shared, &commands, 1),
            Attempt::Done(InPlace::Declined(_))
        ));
    }

    #[test]
    fn a_parked_transfer_is_awaited_and_answered_through_the_driver_path() {
        let (shared, commands, _driver) = connected(&[(1, 1)]);
        assert!(answered(&login(&shared, &commands, 1)));
        let create = Request::CreatePersistent("q".into());
        let created = shared.attempt(ConnectionId(1), create, &commands, None, Instant::now());
        assert!(matches!(
            created,
            Attempt::Done(InPlace::Answered(Reply::Name(_)))
        ));
        let transfer = Request::route(
            "POST",
            "/transfer",
            bytes::Bytes::from_static(br#"{"timeout":5,"queues":["q"]}"#),
        )
        .unwrap();
        let Attempt::Done(InPlace::Awaiting(mut receiver)) =
            shared.attempt(ConnectionId(1), transfer, &commands, None, Instant::now())
        else {
            panic!("nothing to transfer: the Transfer parks");
        };
        assert!(receiver.try_recv().is_err(), "still parked");
        assert!(
            shared.lock().unwrap().driver_needed(),
            "its deadline is one the driver's timer is not armed for"
        );
        let core_now = shared.lock().unwrap().now;
        let deadline = core_now.saturating_add(std::time::Duration::from_secs(6));
        let mut core = shared.lock().unwrap();
        core.engine.handle_timeout(deadline);
        core.flush();
        drop(core);
        assert!(matches!(receiver.try_recv(), Ok(Reply::Transfer(_))));
    }
}
