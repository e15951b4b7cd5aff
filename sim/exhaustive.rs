//! Exhaustive check of the engine: every command sequence up to a bound, over 2 sessions × 2
//! connections × 2 queues (plus an admin connection), driven directly on [`Engine`] with no
//! runtime, checked after every step against the same invariants as the simulation.
//!
//! The search is breadth-first over distinct *model* states: two sequences that leave the
//! reference model in the same state are explored once (the engine must then be in an
//! equivalent state, or a step would already have disagreed with the model). The engine
//! cannot be cloned, so each new state is reached by replaying its sequence from the start.
//!
//! Checked at every step: replies go to the request's own connection, once (4); Transfer
//! returns exactly the stored messages after the cursor, ascending, `next` as specified, and
//! parked transfers wake when a message for them arrives (2, 3); ids for one queue name only
//! grow (3); the durable state (queues, owners, messages) equals the model's, so a transient
//! queue lives exactly as long as its session (1) and nothing unacked disappears (2). At the
//! end of every distinct state: once every connection closes and the queues are destroyed,
//! the engine holds nothing (5).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use message_switch::engine::{Config, ConnectionId, Engine, Output, RequestId, Timestamp};
use message_switch::protocol::{
    Message, MessageId, MessageKind, QueueName, Reply, Request, TransferRequest,
};

const START: i64 = 1_700_000_000_000_000_000;
const QUEUES: [&str; 2] = ["q0", "q1"];
/// What a Transfer names: one queue (0, 1) or both (`BOTH`), with one cursor each.
const TARGETS: usize = 3;
/// The target naming both queues, `q1` first: the reply must still come in id order.
const BOTH: usize = 2;
/// Every payload is this long, so that the reply limit is a whole number of messages.
const PAYLOAD_BYTES: usize = 4;
const SESSIONS: [&str; 2] = ["A", "B"];
/// Connection slots: two per session.
const SLOTS: usize = 4;
/// The admin connection, which never closes until the teardown.
const ADMIN: ConnectionId = ConnectionId(1000);
/// Transfers wait this long; a tick advances past it.
const WAIT_S: f64 = 10.0;
const TICK: Duration = Duration::from_secs(11);

/// The depth bound, overridable with `SIM_EXHAUSTIVE_DEPTH`.
const DEFAULT_DEPTH: usize = 6;

/// One command of the search alphabet.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Cmd {
    /// The admin sends a request to a queue.
    Send(usize),
    /// The admin creates a persistent queue.
    CreatePersistent(usize),
    /// The admin destroys a queue.
    Destroy(usize),
    /// The admin acks the lowest stored message of a queue.
    Ack(usize),
    /// A slot starts a Transfer on a target (a queue, or both) from its cursor for that
    /// target (it may park).
    Transfer(usize, usize),
    /// A slot creates a transient queue for its session.
    CreateTransient(usize, usize),
    /// A slot closes its connection, or opens a new one and logs in.
    Toggle(usize),
    /// Time passes beyond every parked transfer's deadline.
    Tick,
}

fn alphabet() -> Vec<Cmd> {
    let mut cmds = Vec::new();
    for q in 0..QUEUES.len() {
        cmds.push(Cmd::Send(q));
        cmds.push(Cmd::CreatePersistent(q));
        cmds.push(Cmd::Destroy(q));
        cmds.push(Cmd::Ack(q));
    }
    for slot in 0..SLOTS {
        for target in 0..TARGETS {
            cmds.push(Cmd::Transfer(slot, target));
        }
        for q in 0..QUEUES.len() {
            cmds.push(Cmd::CreateTransient(slot, q));
        }
        cmds.push(Cmd::Toggle(slot));
    }
    cmds.push(Cmd::Tick);
    cmds
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MQueue {
    owner: Option<usize>,
    /// Message ids (relative to the first id) and their payload numbers.
    messages: BTreeMap<i64, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    conn: Option<u64>,
    /// A parked Transfer: its request, target and cursor.
    parked: Option<(u64, usize, Option<i64>)>,
    /// The cursor per target, as the client keeps it (relative ids; `None` = none yet).
    cursor: [Option<i64>; TARGETS],
    /// Per target, the messages (queue, relative id) its replies delivered, for the
    /// invariant that no stored message falls below the cursor undelivered. Not part of the
    /// fingerprint: while the invariant holds it is exactly the stored messages at or below
    /// the cursor (cursors only move forward, and new ids are above every cursor).
    delivered: [BTreeSet<(usize, i64)>; TARGETS],
}

/// The reference model, plus the bookkeeping needed to drive the engine.
#[derive(Clone, Debug)]
struct Model {
    queues: BTreeMap<usize, MQueue>,
    slots: Vec<Slot>,
    /// The largest id ever handed out per queue (relative), for "ids only grow".
    max_id: [Option<i64>; 2],
    next_conn: u64,
    next_request: u64,
    next_payload: u32,
    now: Timestamp,
}

impl Model {
    /// The state that matters for the future, without counters that only name things, up to
    /// symmetry: the two sessions, the two queues and the two slots of each session are
    /// interchangeable, so the smallest rendering over those 16 relabellings is the key.
    fn fingerprint(&self) -> String {
        let mut best: Option<String> = None;
        for perm in 0..16u8 {
            let (swap_sessions, swap_queues) = (perm & 1 != 0, perm & 2 != 0);
            let swap_slots = [perm & 4 != 0, perm & 8 != 0];
            let q_map = |q: usize| if swap_queues { 1 - q } else { q };
            // The target naming both queues maps to itself.
            let t_map = |t: usize| if t == BOTH { t } else { q_map(t) };
            let s_map = |s: usize| if swap_sessions { 1 - s } else { s };
            let slot_map = |slot: usize| {
                let (session, k) = (slot / 2, slot % 2);
                s_map(session) * 2 + (k ^ usize::from(swap_slots[session]))
            };
            let mut slots = vec![None; SLOTS];
            for (slot, state) in self.slots.iter().enumerate() {
                let mut cursor = state.cursor;
                if swap_queues {
                    cursor.swap(0, 1);
                }
                slots[slot_map(slot)] = Some((
                    state.conn.is_some(),
                    state.parked.map(|(_, t, from)| (t_map(t), from)),
                    cursor,
                ));
            }
            let mut queues: Vec<_> = self
                .queues
                .iter()
                .map(|(q, mq)| {
                    (
                        q_map(*q),
                        mq.owner.map(s_map),
                        mq.messages.keys().copied().collect::<Vec<_>>(),
                    )
                })
                .collect();
            queues.sort();
            let mut max_id = self.max_id;
            if swap_queues {
                max_id.swap(0, 1);
            }
            let key = format!("{queues:?}|{slots:?}|{max_id:?}");
            if best.as_ref().is_none_or(|b| key < *b) {
                best = Some(key);
            }
        }
        best.unwrap_or_default()
    }
}

struct Driver {
    engine: Engine,
    model: Model,
    first: i64,
    /// Requests in flight: request -> connection.
    pending: BTreeMap<u64, u64>,
    /// The reply limit, in messages (the engine's is in bytes, and payloads are all
    /// [`PAYLOAD_BYTES`] long).
    reply_messages: usize,
}

type Failure = String;

impl Driver {
    fn new(reply_messages: usize) -> Result<Driver, Failure> {
        let now = Timestamp::from_unix_nanos(START);
        let config = Config {
            transfer_reply_bytes_max: reply_messages * PAYLOAD_BYTES,
            ..Config::default()
        };
        let engine = Engine::new(config, now);
        let first = engine.store().next_index();
        let mut driver = Driver {
            engine,
            model: Model {
                queues: BTreeMap::new(),
                slots: vec![
                    Slot {
                        conn: None,
                        parked: None,
                        cursor: [None; TARGETS],
                        delivered: Default::default(),
                    };
                    SLOTS
                ],
                max_id: [None, None],
                next_conn: 0,
                next_request: 0,
                next_payload: 0,
                now,
            },
            first,
            pending: BTreeMap::new(),
            reply_messages,
        };
        driver.engine.handle_connect(ADMIN);
        driver.expect_empty(ADMIN.0, Request::Login("admin".into()))?;
        for slot in 0..SLOTS {
            driver.open(slot)?;
        }
        Ok(driver)
    }

    fn queue_name(q: usize) -> QueueName {
        QueueName::from(QUEUES[q])
    }

    fn submit(&mut self, conn: u64, request: Request) -> (u64, Vec<Output>) {
        let id = self.model.next_request;
        self.model.next_request += 1;
        self.pending.insert(id, conn);
        self.engine
            .handle_request(self.model.now, ConnectionId(conn), RequestId(id), request);
        (id, self.drain())
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.engine.poll_output()).collect()
    }

    /// Takes the replies out of `outputs`, checking each goes to its request's connection,
    /// once.
    fn replies(&mut self, outputs: Vec<Output>) -> Result<BTreeMap<u64, Reply>, Failure> {
        let mut replies = BTreeMap::new();
        for output in outputs {
            if let Output::Reply {
                request,
                connection,
                reply,
                ..
            } = output
            {
                match self.pending.remove(&request.0) {
                    Some(conn) if conn == connection.0 => {
                        replies.insert(request.0, reply);
                    }
                    Some(conn) => {
                        return Err(format!(
                            "reply to request {} routed to connection {} instead of {conn}",
                            request.0, connection.0
                        ))
                    }
                    None => {
                        return Err(format!(
                            "reply to unknown or answered request {}",
                            request.0
                        ))
                    }
                }
            }
        }
        Ok(replies)
    }

    fn expect_empty(&mut self, conn: u64, request: Request) -> Result<(), Failure> {
        let (id, outputs) = self.submit(conn, request.clone());
        let mut replies = self.replies(outputs)?;
        match replies.remove(&id) {
            Some(Reply::Empty) | Some(Reply::Name(_)) if replies.is_empty() => Ok(()),
            other => Err(format!(
                "{request:?} answered {other:?} (others {replies:?})"
            )),
        }
    }

    fn open(&mut self, slot: usize) -> Result<(), Failure> {
        let conn = self.model.next_conn;
        self.model.next_conn += 1;
        self.engine.handle_connect(ConnectionId(conn));
        self.model.slots[slot].conn = Some(conn);
        self.expect_empty(conn, Request::Login(SESSIONS[slot / 2].into()))
    }

    fn session_open(&self, session: usize) -> bool {
        (0..SLOTS).any(|s| s / 2 == session && self.model.slots[s].conn.is_some())
    }

    /// The queues a target names, in request order.
    fn target_queues(target: usize) -> Vec<usize> {
        if target == BOTH {
            vec![1, 0]
        } else {
            vec![target]
        }
    }

    /// What a transfer from `from` on `target` must return now: (queue, relative id) in
    /// ascending id order across its queues, at most the reply limit of them (at least one),
    /// and the absolute `next`: the last id included.
    fn expected_transfer(&self, target: usize, from: Option<i64>) -> (Vec<(usize, i64)>, i64) {
        let from_abs = from.map(|f| f + self.first).unwrap_or(-1);
        let mut ids: Vec<(usize, i64)> = Self::target_queues(target)
            .into_iter()
            .filter_map(|q| Some((q, self.model.queues.get(&q)?)))
            .flat_map(|(q, mq)| mq.messages.keys().map(move |id| (q, *id)))
            .filter(|(_, id)| *id + self.first > from_abs)
            .collect();
        ids.sort_by_key(|(_, id)| *id);
        ids.truncate(self.reply_messages.max(1));
        let next = ids
            .last()
            .map(|(_, id)| id + self.first)
            .unwrap_or(from_abs);
        (ids, next)
    }

    /// No stored message is at or below a slot's cursor without having been delivered to it
    /// (issue 12: a limit that cuts a reply short must not move the cursor past what it left
    /// out).
    fn check_cursors(&self) -> Result<(), Failure> {
        for (slot, state) in self.model.slots.iter().enumerate() {
            for target in 0..TARGETS {
                let Some(cursor) = state.cursor[target] else {
                    continue;
                };
                for q in Self::target_queues(target) {
                    let Some(mq) = self.model.queues.get(&q) else {
                        continue;
                    };
                    for id in mq.messages.keys().filter(|id| **id <= cursor) {
                        if !state.delivered[target].contains(&(q, *id)) {
                            return Err(format!(
                                "slot {slot}'s cursor {cursor} on target {target} is past \
                                 {}'s message {id}, which it never got",
                                QUEUES[q]
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks one transfer reply of `slot` against the model and moves the slot's cursor.
    fn check_transfer(
        &mut self,
        slot: usize,
        target: usize,
        from: Option<i64>,
        reply: Reply,
    ) -> Result<(), Failure> {
        let Reply::Transfer(reply) = reply else {
            return Err(format!("slot {slot} transfer answered {reply:?}"));
        };
        let (ids, next) = self.expected_transfer(target, from);
        let got: Vec<(usize, i64)> = reply
            .messages
            .iter()
            .map(|(id, _)| {
                let q = QUEUES
                    .iter()
                    .position(|name| id.queue == QueueName::from(*name))
                    .unwrap_or(usize::MAX);
                (q, id.index - self.first)
            })
            .collect();
        if got != ids || reply.next != next {
            return Err(format!(
                "slot {slot} transfer on target {target} from {from:?}: got {got:?} next {}, \
                 expected {ids:?} next {next} (relative ids; first id {})",
                reply.next, self.first
            ));
        }
        for ((q, rel), (id, message)) in ids.iter().zip(&reply.messages) {
            let expected = self.model.queues[q].messages[rel];
            if message.payload != payload_bytes(expected) {
                return Err(format!(
                    "message {id} has the wrong payload {:?}",
                    message.payload
                ));
            }
        }
        let state = &mut self.model.slots[slot];
        state.cursor[target] = Some(next - self.first);
        state.delivered[target].extend(ids);
        Ok(())
    }

    /// Completes every parked transfer whose reply is in `replies`; none may be missing or
    /// extra beyond those the model expects to complete (`expect`).
    fn complete_parked(
        &mut self,
        mut replies: BTreeMap<u64, Reply>,
        expect: &[usize],
    ) -> Result<(), Failure> {
        for &slot in expect {
            let Some((request, target, from)) = self.model.slots[slot].parked.take() else {
                continue;
            };
            let Some(reply) = replies.remove(&request) else {
                return Err(format!(
                    "slot {slot}'s parked transfer on target {target} was not answered"
                ));
            };
            self.check_transfer(slot, target, from, reply)?;
        }
        if !replies.is_empty() {
            return Err(format!("unexpected replies {replies:?}"));
        }
        Ok(())
    }

    fn step(&mut self, cmd: Cmd) -> Result<bool, Failure> {
        let admin = ADMIN.0;
        match cmd {
            Cmd::Send(q) => {
                let payload = self.model.next_payload;
                self.model.next_payload += 1;
                let request = Request::Send {
                    queue: Self::queue_name(q),
                    message: Message {
                        payload: Bytes::from(payload_bytes(payload)),
                        kind: MessageKind::Request {
                            reply_to: "r".into(),
                        },
                    },
                };
                let (id, outputs) = self.submit(admin, request);
                let mut replies = self.replies(outputs)?;
                let reply = replies.remove(&id);
                let exists = self.model.queues.contains_key(&q);
                match reply {
                    Some(Reply::Sent(None)) if !exists => {
                        self.complete_parked(replies, &[])?;
                    }
                    Some(Reply::Sent(Some(mid))) if exists && mid.queue == Self::queue_name(q) => {
                        let rel = mid.index - self.first;
                        if self.model.max_id[q].is_some_and(|m| rel <= m) {
                            return Err(format!(
                                "id {rel} on {} is not above {:?}",
                                QUEUES[q], self.model.max_id[q]
                            ));
                        }
                        self.model.max_id[q] = Some(rel);
                        self.model
                            .queues
                            .get_mut(&q)
                            .map(|mq| mq.messages.insert(rel, payload));
                        // Parked transfers on q whose cursor is below the new id wake now.
                        let woken: Vec<usize> = (0..SLOTS)
                            .filter(|s| {
                                self.model.slots[*s]
                                    .parked
                                    .is_some_and(|(_, target, from)| {
                                        Self::target_queues(target).contains(&q)
                                            && from.is_none_or(|f| f < rel)
                                    })
                            })
                            .collect();
                        self.complete_parked(replies, &woken)?;
                    }
                    other => {
                        return Err(format!(
                            "send to {} (exists: {exists}) answered {other:?}",
                            QUEUES[q]
                        ))
                    }
                }
            }
            Cmd::CreatePersistent(q) => {
                self.expect_empty(admin, Request::CreatePersistent(Self::queue_name(q)))?;
                self.model.queues.entry(q).or_insert(MQueue {
                    owner: None,
                    messages: BTreeMap::new(),
                });
            }
            Cmd::Destroy(q) => {
                self.expect_empty(admin, Request::Destroy(Self::queue_name(q)))?;
                self.model.queues.remove(&q);
            }
            Cmd::Ack(q) => {
                let lowest = self
                    .model
                    .queues
                    .get(&q)
                    .and_then(|mq| mq.messages.keys().next().copied());
                let index = lowest.map(|l| l + self.first).unwrap_or(0);
                self.expect_empty(
                    admin,
                    Request::Ack(MessageId::new(Self::queue_name(q), index)),
                )?;
                if let (Some(l), Some(mq)) = (lowest, self.model.queues.get_mut(&q)) {
                    mq.messages.remove(&l);
                }
            }
            Cmd::Transfer(slot, target) => {
                let s = &self.model.slots[slot];
                let (Some(conn), None) = (s.conn, s.parked) else {
                    return Ok(false);
                };
                let from = s.cursor[target];
                let request = Request::Transfer(TransferRequest {
                    from: from.map(|f| f + self.first),
                    timeout_s: WAIT_S,
                    queues: Self::target_queues(target)
                        .into_iter()
                        .map(Self::queue_name)
                        .collect(),
                });
                let (id, outputs) = self.submit(conn, request);
                let mut replies = self.replies(outputs)?;
                let (ids, _) = self.expected_transfer(target, from);
                match replies.remove(&id) {
                    Some(reply) if !ids.is_empty() => {
                        self.check_transfer(slot, target, from, reply)?
                    }
                    None if ids.is_empty() => {
                        self.model.slots[slot].parked = Some((id, target, from))
                    }
                    other => {
                        return Err(format!(
                            "slot {slot} transfer on target {target} (expected {ids:?}) \
                             answered {other:?}"
                        ))
                    }
                }
                if !replies.is_empty() {
                    return Err(format!("unexpected replies {replies:?}"));
                }
            }
            Cmd::CreateTransient(slot, q) => {
                let Some(conn) = self.model.slots[slot].conn else {
                    return Ok(false);
                };
                if self.model.slots[slot].parked.is_some() {
                    return Ok(false);
                }
                self.expect_empty(conn, Request::CreateTransient(Some(Self::queue_name(q))))?;
                self.model.queues.entry(q).or_insert(MQueue {
                    owner: Some(slot / 2),
                    messages: BTreeMap::new(),
                });
            }
            Cmd::Toggle(slot) => match self.model.slots[slot].conn {
                Some(conn) => {
                    self.engine
                        .handle_disconnect(self.model.now, ConnectionId(conn));
                    let outputs = self.drain();
                    self.pending.retain(|_, c| *c != conn);
                    self.model.slots[slot].conn = None;
                    self.model.slots[slot].parked = None;
                    let replies = self.replies(outputs)?;
                    if !replies.is_empty() {
                        return Err(format!("a disconnect produced replies {replies:?}"));
                    }
                    let session = slot / 2;
                    if !self.session_open(session) {
                        self.model.queues.retain(|_, mq| mq.owner != Some(session));
                    }
                }
                None => self.open(slot)?,
            },
            Cmd::Tick => {
                self.model.now = self.model.now.saturating_add(TICK);
                self.engine.handle_timeout(self.model.now);
                let outputs = self.drain();
                let replies = self.replies(outputs)?;
                let all: Vec<usize> = (0..SLOTS).collect();
                self.complete_parked(replies, &all)?;
            }
        }
        self.compare_store()?;
        self.check_cursors()?;
        Ok(true)
    }

    /// The engine's durable state equals the model's: same queues, owners and messages.
    fn compare_store(&self) -> Result<(), Failure> {
        let store = self.engine.store();
        for (q, label) in QUEUES.iter().enumerate() {
            let name = Self::queue_name(q);
            let engine_view = store.queue(&name).map(|queue| {
                (
                    queue.owner.as_ref().map(|o| o.to_text()),
                    queue
                        .messages
                        .keys()
                        .map(|i| i - self.first)
                        .collect::<Vec<_>>(),
                )
            });
            let model_view = self.model.queues.get(&q).map(|mq| {
                (
                    mq.owner.map(|o| SESSIONS[o].to_owned()),
                    mq.messages.keys().copied().collect::<Vec<_>>(),
                )
            });
            if engine_view != model_view {
                return Err(format!(
                    "queue {}: engine has {engine_view:?}, model {model_view:?}",
                    label
                ));
            }
        }
        Ok(())
    }

    /// Closes every connection and destroys every queue: nothing may be left.
    fn teardown(&mut self) -> Result<(), Failure> {
        for slot in 0..SLOTS {
            if self.model.slots[slot].conn.is_some() {
                self.step(Cmd::Toggle(slot))?;
            }
        }
        if self.engine.store().queues().any(|(_, q)| q.owner.is_some()) {
            return Err("transient queues outlived their sessions".into());
        }
        for q in 0..QUEUES.len() {
            self.step(Cmd::Destroy(q))?;
        }
        self.engine.handle_disconnect(self.model.now, ADMIN);
        let stats = self.engine.stats();
        let leaked = stats.connections
            + stats.sessions
            + stats.queues
            + stats.messages
            + stats.parked_transfers
            + stats.parked_traces
            + stats.alive_queues;
        if leaked != 0 {
            return Err(format!("after teardown the engine still holds {stats:?}"));
        }
        Ok(())
    }
}

/// A payload of exactly [`PAYLOAD_BYTES`] bytes naming payload number `n`.
fn payload_bytes(n: u32) -> Vec<u8> {
    format!("{n:0width$}", width = PAYLOAD_BYTES).into_bytes()
}

/// Replays `path` then `next`; returns the model if every step was applicable and correct.
fn replay(path: &[Cmd], next: Cmd, reply_messages: usize) -> Result<Option<Driver>, Failure> {
    let mut driver = Driver::new(reply_messages)?;
    for &cmd in path {
        driver.step(cmd)?;
    }
    if !driver.step(next)? {
        return Ok(None);
    }
    Ok(Some(driver))
}

/// Explores every sequence up to the depth bound with a reply limit of two messages, then one
/// level less deep with a limit of one (to keep `cargo test` quick; `SIM_EXHAUSTIVE_REPLY=n`
/// explores only a limit of `n`, to the full depth); panics with the first failing sequence.
pub fn run() {
    let depth = std::env::var("SIM_EXHAUSTIVE_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(DEFAULT_DEPTH);
    let runs: Vec<(usize, usize)> = match std::env::var("SIM_EXHAUSTIVE_REPLY")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(n) => vec![(n, depth)],
        None => vec![(2, depth), (1, depth.saturating_sub(1))],
    };
    for (reply_messages, depth) in runs {
        explore(depth, reply_messages);
    }
}

fn explore(depth: usize, reply_messages: usize) {
    let began = Instant::now();
    let cmds = alphabet();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let root = Driver::new(reply_messages).unwrap_or_else(|e| panic!("setup failed: {e}"));
    seen.insert(root.model.fingerprint());
    let mut frontier: Vec<Vec<Cmd>> = vec![Vec::new()];
    let mut sequences = 0u64;
    for level in 1..=depth {
        let mut next_frontier = Vec::new();
        for path in &frontier {
            for &cmd in &cmds {
                sequences += 1;
                let driver = match replay(path, cmd, reply_messages) {
                    Ok(Some(driver)) => driver,
                    Ok(None) => continue,
                    Err(failure) => fail(path, cmd, &failure),
                };
                if !seen.insert(driver.model.fingerprint()) {
                    continue;
                }
                let mut driver = driver;
                if let Err(failure) = driver.teardown() {
                    fail(path, cmd, &format!("teardown: {failure}"));
                }
                let mut extended = path.clone();
                extended.push(cmd);
                next_frontier.push(extended);
            }
        }
        println!(
            "exhaustive (reply limit {reply_messages} messages): depth {level}: {} new states ({} total, {sequences} sequences run), {:.1}s",
            next_frontier.len(),
            seen.len(),
            began.elapsed().as_secs_f64()
        );
        frontier = next_frontier;
    }
}

fn fail(path: &[Cmd], cmd: Cmd, failure: &str) -> ! {
    panic!("engine exhaustive check failed after {path:?} then {cmd:?}: {failure}");
}
