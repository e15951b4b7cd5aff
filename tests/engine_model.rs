//! Model-based property test: random sequences of connect / login / create / send / transfer /
//! ack / destroy / disconnect / time-advance over several sessions, connections and queues,
//! run against the engine and against a small reference model written here from the
//! protocol description. After every step the replies and the durable state must agree.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;

use message_switch::engine::{Config, ConnectionId, Engine, Output, RequestId, Timestamp};
use message_switch::protocol::{
    ErrorReply, Message, MessageId, MessageKind, QueueName, Reply, Request, TransferReply,
    TransferRequest,
};

const START: i64 = 1_700_000_000_000_000_000;
const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
const TOKENS: [&str; 2] = ["s0", "s1"];

#[derive(Clone, Debug)]
enum Op {
    Login {
        conn: u64,
        token: usize,
    },
    CreatePersistent {
        conn: u64,
        queue: usize,
    },
    CreateTransient {
        conn: u64,
        queue: usize,
    },
    Destroy {
        conn: u64,
        queue: usize,
    },
    Send {
        conn: u64,
        queue: usize,
        payload: u8,
    },
    /// `cursor` picks a cursor: absent, or relative to the ids handed out so far.
    Transfer {
        conn: u64,
        queues: Vec<usize>,
        cursor: Option<i8>,
        wait_s: u8,
    },
    /// `which` picks a stored message (or a missing id) of the queue.
    Ack {
        conn: u64,
        queue: usize,
        which: u8,
    },
    List {
        conn: u64,
        alive_only: bool,
    },
    Disconnect {
        conn: u64,
    },
    Advance {
        millis: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let conn = 0u64..3;
    let queue = 0usize..QUEUES.len();
    prop_oneof![
        3 => (conn.clone(), 0usize..TOKENS.len()).prop_map(|(conn, token)| Op::Login { conn, token }),
        2 => (conn.clone(), queue.clone()).prop_map(|(conn, queue)| Op::CreatePersistent { conn, queue }),
        2 => (conn.clone(), queue.clone()).prop_map(|(conn, queue)| Op::CreateTransient { conn, queue }),
        1 => (conn.clone(), queue.clone()).prop_map(|(conn, queue)| Op::Destroy { conn, queue }),
        4 => (conn.clone(), queue.clone(), any::<u8>()).prop_map(|(conn, queue, payload)| Op::Send { conn, queue, payload }),
        3 => (conn.clone(), proptest::collection::vec(queue.clone(), 1..3), proptest::option::of(-3i8..2), 0u8..3)
            .prop_map(|(conn, queues, cursor, wait_s)| Op::Transfer { conn, queues, cursor, wait_s }),
        2 => (conn.clone(), queue, any::<u8>()).prop_map(|(conn, queue, which)| Op::Ack { conn, queue, which }),
        1 => (conn.clone(), any::<bool>()).prop_map(|(conn, alive_only)| Op::List { conn, alive_only }),
        1 => conn.prop_map(|conn| Op::Disconnect { conn }),
        2 => (0u16..2500).prop_map(|millis| Op::Advance { millis }),
    ]
}

#[derive(Default, Debug)]
struct ModelQueue {
    owner: Option<String>,
    messages: BTreeMap<i64, u8>,
    alive: bool,
}

struct Parked {
    conn: u64,
    from: i64,
    queues: Vec<String>,
    deadline: i64,
}

/// The reference model: plain collections, scanned naively.
struct Model {
    now: i64,
    next_id: i64,
    connections: BTreeMap<u64, BTreeSet<String>>,
    queues: BTreeMap<String, ModelQueue>,
    parked: BTreeMap<u64, Parked>,
    /// Most messages in one Transfer reply (payloads are one byte each, so the engine's
    /// byte limit is a message count here).
    reply_messages: usize,
    /// Most messages one queue may hold: the per-queue byte limit, in one-byte payloads.
    queue_messages: usize,
    /// Most messages all queues may hold together: the switch-wide byte limit.
    stored_messages: usize,
}

impl Model {
    fn new(reply_messages: usize, queue_messages: usize, stored_messages: usize) -> Self {
        Self {
            now: START,
            next_id: START / 1000,
            connections: BTreeMap::new(),
            queues: BTreeMap::new(),
            parked: BTreeMap::new(),
            reply_messages,
            queue_messages,
            stored_messages,
        }
    }

    fn session(&self, conn: u64) -> Option<String> {
        self.connections.get(&conn)?.iter().next().cloned()
    }

    fn transfer_result(&self, queues: &[String], from: i64) -> (Vec<(String, i64, u8)>, i64) {
        let mut messages = Vec::new();
        for name in queues {
            if let Some(queue) = self.queues.get(name) {
                for (&id, &payload) in queue.messages.range(from.saturating_add(1)..) {
                    if id > from {
                        messages.push((name.clone(), id, payload));
                    }
                }
            }
        }
        // Merged across the queues in id order (protocol.md part A.2); a stable sort keeps a
        // queue named twice side by side. The reply limit keeps the first ones (at least one),
        // and `next` is then the last one kept.
        messages.sort_by_key(|m| m.1);
        messages.truncate(self.reply_messages.max(1));
        let next = messages.iter().map(|m| m.1).max().unwrap_or(from);
        (messages, next)
    }

    fn close(&mut self, conn: u64) {
        self.parked.retain(|_, p| p.conn != conn);
        let Some(tokens) = self.connections.remove(&conn) else {
            return;
        };
        for token in tokens {
            let still_held = self.connections.values().any(|t| t.contains(&token));
            if !still_held {
                self.queues
                    .retain(|_, q| q.owner.as_deref() != Some(token.as_str()));
            }
        }
    }
}

/// What a reply looks like, reduced to what the model can predict.
#[derive(Clone, PartialEq, Debug)]
enum Seen {
    Empty,
    Name(String),
    Sent(Option<(String, i64)>),
    Transfer(Vec<(String, i64, u8)>, i64),
    List(Vec<String>),
    Error(u16),
}

fn seen(reply: &Reply) -> Seen {
    match reply {
        Reply::Empty => Seen::Empty,
        Reply::Name(name) => Seen::Name(name.to_text()),
        Reply::Sent(id) => Seen::Sent(id.as_ref().map(|id| (id.queue.to_text(), id.index))),
        Reply::Transfer(TransferReply { messages, next }) => Seen::Transfer(
            messages
                .iter()
                .map(|(id, m)| (id.queue.to_text(), id.index, m.payload[0]))
                .collect(),
            *next,
        ),
        Reply::List(names) => Seen::List(names.iter().map(|n| n.to_text()).collect()),
        Reply::Error(ErrorReply { status, .. }) => Seen::Error(*status),
        other => panic!("unexpected reply {other:?}"),
    }
}

struct Run {
    engine: Engine,
    model: Model,
    next_request: u64,
}

impl Run {
    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let request_id = self.next_request;
        self.next_request += 1;
        let mut expected: BTreeMap<u64, Seen> = BTreeMap::new();
        let model = &mut self.model;
        let now = Timestamp::from_unix_nanos(model.now);
        let please = Seen::Error(404);
        match op {
            Op::Advance { millis } => {
                model.now += i64::from(*millis) * 1_000_000;
                let now = model.now;
                let due: Vec<u64> = model
                    .parked
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    let parked = model.parked.remove(&id).expect("due transfer is parked");
                    let (messages, next) = model.transfer_result(&parked.queues, parked.from);
                    for name in &parked.queues {
                        if let Some(q) = model.queues.get_mut(name) {
                            q.alive = true;
                        }
                    }
                    expected.insert(id, Seen::Transfer(messages, next));
                }
                self.engine
                    .handle_timeout(Timestamp::from_unix_nanos(model.now));
            }
            Op::Disconnect { conn } => {
                model.close(*conn);
                self.engine.handle_disconnect(now, ConnectionId(*conn));
            }
            Op::Login { conn, token } => {
                model
                    .connections
                    .entry(*conn)
                    .or_default()
                    .insert(TOKENS[*token].to_owned());
                expected.insert(request_id, Seen::Empty);
                self.engine.handle_request(
                    now,
                    ConnectionId(*conn),
                    RequestId(request_id),
                    Request::Login(TOKENS[*token].into()),
                );
            }
            other => {
                let conn = match other {
                    Op::CreatePersistent { conn, .. }
                    | Op::CreateTransient { conn, .. }
                    | Op::Destroy { conn, .. }
                    | Op::Send { conn, .. }
                    | Op::Transfer { conn, .. }
                    | Op::Ack { conn, .. }
                    | Op::List { conn, .. } => *conn,
                    _ => unreachable!("handled above"),
                };
                let session = model.session(conn);
                let (request, outcome) = Self::model_request(model, other, session.clone());
                let outcome = if session.is_none() {
                    Some(please)
                } else {
                    outcome
                };
                match outcome {
                    Some(seen) => {
                        expected.insert(request_id, seen);
                    }
                    None => {
                        if let Op::Transfer { queues, .. } = other {
                            let Request::Transfer(transfer) = &request else {
                                unreachable!("a transfer op builds a transfer request")
                            };
                            model.parked.insert(
                                request_id,
                                Parked {
                                    conn,
                                    from: transfer.from.unwrap_or(-1),
                                    queues: queues.iter().map(|q| QUEUES[*q].to_owned()).collect(),
                                    deadline: model.now + (transfer.timeout_s * 1e9) as i64,
                                },
                            );
                        }
                    }
                }
                self.engine
                    .handle_request(now, ConnectionId(conn), RequestId(request_id), request);
            }
        }
        // A send may have woken parked transfers.
        if let Op::Send { conn, queue, .. } = op {
            if self.model.session(*conn).is_some() {
                if let Some(Seen::Sent(Some((_, id)))) = expected.get(&request_id).cloned() {
                    let name = QUEUES[*queue];
                    let woken: Vec<u64> = self
                        .model
                        .parked
                        .iter()
                        .filter(|(_, p)| p.from < id && p.queues.iter().any(|q| q == name))
                        .map(|(rid, _)| *rid)
                        .collect();
                    for rid in woken {
                        let parked = self.model.parked.remove(&rid).expect("woken is parked");
                        let (messages, next) =
                            self.model.transfer_result(&parked.queues, parked.from);
                        for name in &parked.queues {
                            if let Some(q) = self.model.queues.get_mut(name) {
                                q.alive = true;
                            }
                        }
                        expected.insert(rid, Seen::Transfer(messages, next));
                    }
                }
            }
        }
        let mut actual: BTreeMap<u64, Seen> = BTreeMap::new();
        while let Some(output) = self.engine.poll_output() {
            if let Output::Reply { request, reply, .. } = output {
                actual.insert(request.0, seen(&reply));
            }
        }
        prop_assert_eq!(&actual, &expected, "replies differ after {:?}", op);
        self.compare_state()
    }

    /// Builds the engine request for `op` and predicts its immediate reply (`None`: it parks).
    fn model_request(
        model: &mut Model,
        op: &Op,
        session: Option<String>,
    ) -> (Request, Option<Seen>) {
        let logged_in = session.is_some();
        match op {
            Op::CreatePersistent { queue, .. } | Op::CreateTransient { queue, .. } => {
                let name = QUEUES[*queue];
                let transient = matches!(op, Op::CreateTransient { .. });
                if logged_in && !model.queues.contains_key(name) {
                    // Transfers already waiting on the name count as listeners.
                    let alive = model
                        .parked
                        .values()
                        .any(|p| p.queues.iter().any(|q| q == name));
                    model.queues.insert(
                        name.to_owned(),
                        ModelQueue {
                            owner: if transient { session.clone() } else { None },
                            alive,
                            ..ModelQueue::default()
                        },
                    );
                }
                let request = if transient {
                    Request::CreateTransient(Some(name.into()))
                } else {
                    Request::CreatePersistent(name.into())
                };
                (request, Some(Seen::Name(name.to_owned())))
            }
            Op::Destroy { queue, .. } => {
                if logged_in {
                    model.queues.remove(QUEUES[*queue]);
                }
                (Request::Destroy(QUEUES[*queue].into()), Some(Seen::Empty))
            }
            Op::Send { queue, payload, .. } => {
                let name = QUEUES[*queue];
                let request = Request::Send {
                    queue: name.into(),
                    message: Message {
                        payload: Bytes::from(vec![*payload]),
                        kind: MessageKind::Request {
                            reply_to: "r".into(),
                        },
                    },
                };
                let stored: usize = model.queues.values().map(|q| q.messages.len()).sum();
                let sent = match model.queues.get_mut(name) {
                    // The queue's own limit first, then the switch's (429 either way).
                    Some(q)
                        if logged_in
                            && (q.messages.len() >= model.queue_messages
                                || stored >= model.stored_messages) =>
                    {
                        return (request, Some(Seen::Error(429)));
                    }
                    Some(q) if logged_in => {
                        let id = model.next_id;
                        model.next_id += 1;
                        q.messages.insert(id, *payload);
                        Some((name.to_owned(), id))
                    }
                    _ => None,
                };
                (request, Some(Seen::Sent(sent)))
            }
            Op::Transfer {
                queues,
                cursor,
                wait_s,
                ..
            } => {
                let names: Vec<String> = queues.iter().map(|q| QUEUES[*q].to_owned()).collect();
                let from = cursor.map(|c| model.next_id - 1 + i64::from(c));
                let request = Request::Transfer(TransferRequest {
                    from,
                    timeout_s: f64::from(*wait_s),
                    queues: names.iter().map(|n| QueueName::from(n.as_str())).collect(),
                });
                if !logged_in {
                    return (request, None);
                }
                for name in &names {
                    if let Some(q) = model.queues.get_mut(name) {
                        q.alive = true;
                    }
                }
                let (messages, next) = model.transfer_result(&names, from.unwrap_or(-1));
                if messages.is_empty() && *wait_s > 0 {
                    (request, None)
                } else {
                    (request, Some(Seen::Transfer(messages, next)))
                }
            }
            Op::Ack { queue, which, .. } => {
                let name = QUEUES[*queue];
                let ids: Vec<i64> = model
                    .queues
                    .get(name)
                    .map(|q| q.messages.keys().copied().collect())
                    .unwrap_or_default();
                let id = if ids.is_empty() || usize::from(*which) >= ids.len() * 2 {
                    model.next_id + 5
                } else {
                    ids[usize::from(*which) % ids.len()]
                };
                if logged_in {
                    if let Some(q) = model.queues.get_mut(name) {
                        q.messages.remove(&id);
                    }
                }
                (
                    Request::Ack(MessageId::new(name.into(), id)),
                    Some(Seen::Empty),
                )
            }
            Op::List { alive_only, .. } => {
                let names: Vec<String> = model
                    .queues
                    .iter()
                    .rev()
                    .filter(|(_, q)| !alive_only || q.alive)
                    .map(|(n, _)| n.clone())
                    .collect();
                (
                    Request::List {
                        prefix: "".into(),
                        alive_only: *alive_only,
                    },
                    Some(Seen::List(names)),
                )
            }
            Op::Login { .. } | Op::Disconnect { .. } | Op::Advance { .. } => {
                unreachable!("handled by the caller")
            }
        }
    }

    fn compare_state(&self) -> Result<(), TestCaseError> {
        let engine: BTreeMap<String, (Option<String>, Vec<i64>)> = self
            .engine
            .store()
            .queues()
            .map(|(name, q)| {
                (
                    name.to_text(),
                    (
                        q.owner.as_ref().map(|o| o.to_text()),
                        q.messages.keys().copied().collect(),
                    ),
                )
            })
            .collect();
        let model: BTreeMap<String, (Option<String>, Vec<i64>)> = self
            .model
            .queues
            .iter()
            .map(|(name, q)| {
                (
                    name.clone(),
                    (q.owner.clone(), q.messages.keys().copied().collect()),
                )
            })
            .collect();
        prop_assert_eq!(engine, model);
        prop_assert_eq!(
            self.engine.stats().parked_transfers,
            self.model.parked.len()
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(common::proptest_config(512))]

    #[test]
    fn engine_matches_the_reference_model(
        ops in proptest::collection::vec(op(), 1..60),
        reply_messages in prop_oneof![Just(usize::MAX), 1..4usize],
        queue_messages in prop_oneof![Just(usize::MAX), 1..5usize],
        stored_messages in prop_oneof![Just(usize::MAX), 2..9usize],
        // A switch without a journal builds its engine without one: it must answer the same.
        journalled in any::<bool>(),
    ) {
        let config = Config {
            transfer_reply_bytes_max: reply_messages,
            queue_bytes_max: queue_messages,
            stored_bytes_max: stored_messages,
            ..Config::default()
        };
        let engine = Engine::new(config, Timestamp::from_unix_nanos(START));
        let mut run = Run {
            engine: if journalled { engine } else { engine.without_journal() },
            model: Model::new(reply_messages, queue_messages, stored_messages),
            next_request: 0,
        };
        for op in &ops {
            run.step(op)?;
        }
        // Closing every connection leaves no session, parked request or transient queue.
        for conn in 0..3 {
            run.step(&Op::Disconnect { conn })?;
        }
        let stats = run.engine.stats();
        prop_assert_eq!((stats.sessions, stats.parked_transfers), (0, 0));
        prop_assert!(run.engine.store().queues().all(|(_, q)| q.owner.is_none()));
    }
}
