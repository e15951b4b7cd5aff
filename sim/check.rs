//! The checkers: they judge a whole run's history against the five invariants of issue 4.
//!
//! The history is what the clients saw: each request has an invocation time and, if it
//! ended, a completion time; the switch applied it somewhere in between (or, for a request
//! whose reply was lost, at some unknown time after its invocation, or never). Every checker
//! reasons with these intervals, so it reports only what no ordering of the switch's work
//! could explain. Connection lifetimes come from the network registry.
//!
//! Without durability a restarted switch is empty: messages, queues and sessions never cross
//! an incarnation ("epoch"), so most checks compare requests of the same epoch only; ids,
//! however, must grow across epochs too. In a durable run persistent queues and their
//! messages do cross epochs (a 200 means synced), so the message checks compare their
//! requests across every epoch ([`Facts::lineage`]); transient queues still die with their
//! sessions, at the latest when the switch restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use message_switch::engine::{seconds_to_duration, AckSync};
use message_switch::protocol::{Message, MessageId, QueueName, Request};

use crate::harness::{RunResult, SETTLE};
use crate::history::{CallResult, Outcome, ReplyData, What};
use crate::limits::Limits;
use crate::net::ConnRecord;
use crate::workload::CALL_TIMEOUT;

/// How long after the switch must know a session is gone its transient queues may linger
/// (the switch processes the disconnect within a tick or two; this leaves room for ticks).
const CLEANUP_BOUND_US: u64 = 500_000;

/// How much longer than its timeout plus a round trip a Transfer may take after the faults
/// have healed: the switch's ticks.
const TRANSFER_LATE_SLACK_US: u64 = 20_000;

/// The invariants, numbered as in the issue.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Invariant {
    /// 1. Transient queues live exactly as long as their session (plus a bound).
    Transient = 1,
    /// 2. At-least-once delivery until ack; nothing after the ack.
    AtLeastOnce = 2,
    /// 3. Transfer returns exactly the stored messages after the cursor, ascending; ids grow.
    Transfer = 3,
    /// 4. RPC replies go to their own call; calls complete once faults heal.
    Rpc = 4,
    /// 5. No leaks once the clients are gone.
    Leaks = 5,
    /// 6. Beside a hostile client, RPC calls stay within a bound (`sim/hostile.rs`).
    Isolation = 6,
}

/// One violation.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// What happened, with the op numbers and times involved.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant {} ({:?}): {}",
            self.invariant as u8, self.invariant, self.what
        )
    }
}

/// One request with its interval.
#[derive(Clone, Debug)]
struct Op {
    op: u64,
    conn: u64,
    epoch: u32,
    session: Option<String>,
    request: Request,
    t_i: u64,
    t_c: Option<u64>,
    outcome: Option<Outcome>,
}

impl Op {
    /// The switch may have applied it (anything but a non-200 answer).
    fn maybe_applied(&self) -> bool {
        !matches!(self.outcome, Some(Outcome::Status(..)))
    }

    /// The switch applied it, before `t_c`.
    fn ok(&self) -> Option<&ReplyData> {
        match &self.outcome {
            Some(Outcome::Ok(data)) => Some(data),
            _ => None,
        }
    }

    /// The latest time it may have been applied at.
    fn latest_effect(&self) -> u64 {
        match (&self.outcome, self.t_c) {
            (Some(Outcome::Ok(_)), Some(t)) => t,
            _ => u64::MAX,
        }
    }

    fn t_c_or_max(&self) -> u64 {
        self.t_c.unwrap_or(u64::MAX)
    }
}

/// The facts derived from a run that the checkers share.
struct Facts<'a> {
    run: &'a RunResult,
    ops: Vec<Op>,
    conns: BTreeMap<u64, &'a ConnRecord>,
    epoch_start: BTreeMap<u32, u64>,
    /// Transient queue name -> owning session (only names created by exactly one session).
    owners: BTreeMap<QueueName, String>,
    /// Per session and epoch, the connections that tried to log in as it: (conn, login
    /// invocation, login success time).
    logins: BTreeMap<(String, u32), Vec<Login>>,
    /// Whether the switch journalled (its persistent queues survive restarts).
    durable: bool,
    /// Names someone created as persistent queues, and never as transient ones.
    persistent: BTreeSet<QueueName>,
    /// Whether the switch answered Acks before their sync (`AckSync::Lazy`).
    lazy_acks: bool,
    /// Per epoch, when the last Send to a persistent queue began that got a 200 with an id
    /// (its reply waited for a sync covering every change applied before it began).
    last_synced_send: BTreeMap<u32, u64>,
    /// The switch's limits in this run (the defaults unless the seed drew its own).
    limits: Limits,
}

/// The lineage of every persistent queue of a durable run: it spans all epochs (which are
/// numbered from 1).
const EVERY_EPOCH: u32 = 0;

/// A connection's attempt to log in: (connection, invocation time, success time if it
/// succeeded).
type Login = (u64, u64, Option<u64>);

/// Runs every checker.
pub fn check(run: &RunResult) -> Vec<Violation> {
    let facts = Facts::new(run);
    let mut violations = Vec::new();
    if let Some(error) = &run.host_error {
        violations.push(Violation {
            invariant: Invariant::Leaks,
            what: format!("a host failed: {error}"),
        });
    }
    check_protocol(&facts, &mut violations);
    check_transient(&facts, &mut violations);
    check_transfers(&facts, &mut violations);
    check_ids_grow(&facts, &mut violations);
    check_rpc(&facts, &mut violations);
    check_leaks(&facts, &mut violations);
    violations
}

impl<'a> Facts<'a> {
    fn new(run: &'a RunResult) -> Self {
        let mut ops: Vec<Op> = Vec::new();
        let mut index: BTreeMap<u64, usize> = BTreeMap::new();
        let mut epoch_start = BTreeMap::new();
        for event in &run.events {
            match &event.what {
                What::Invoke {
                    op,
                    conn,
                    epoch,
                    session,
                    request,
                    ..
                } => {
                    index.insert(*op, ops.len());
                    ops.push(Op {
                        op: *op,
                        conn: *conn,
                        epoch: *epoch,
                        session: session.clone(),
                        request: request.clone(),
                        t_i: event.t_us,
                        t_c: None,
                        outcome: None,
                    });
                }
                What::Complete { op, outcome } => {
                    if let Some(&i) = index.get(op) {
                        ops[i].t_c = Some(event.t_us);
                        ops[i].outcome = Some(outcome.clone());
                    }
                }
                What::SwitchUp { epoch } => {
                    epoch_start.insert(*epoch, event.t_us);
                }
                _ => {}
            }
        }
        let conns = run.conns.iter().map(|c| (c.id, c)).collect();
        let mut creators: BTreeMap<QueueName, BTreeSet<String>> = BTreeMap::new();
        let mut logins: BTreeMap<(String, u32), Vec<Login>> = BTreeMap::new();
        for op in &ops {
            match (&op.request, op.ok()) {
                (Request::CreateTransient(Some(name)), _) if op.maybe_applied() => {
                    if let Some(session) = &op.session {
                        creators
                            .entry(name.clone())
                            .or_default()
                            .insert(session.clone());
                    }
                }
                (Request::CreateTransient(None), Some(ReplyData::Name(name))) => {
                    if let Some(session) = &op.session {
                        creators
                            .entry(name.clone())
                            .or_default()
                            .insert(session.clone());
                    }
                }
                (Request::Login(token), _) if op.maybe_applied() => {
                    let ok = op.ok().map(|_| op.t_c.unwrap_or(u64::MAX));
                    logins
                        .entry((token.to_text(), op.epoch))
                        .or_default()
                        .push((op.conn, op.t_i, ok));
                }
                _ => {}
            }
        }
        // A persistent create of the same name would make ownership ambiguous.
        let mut persistent = BTreeSet::new();
        for op in &ops {
            if let Request::CreatePersistent(name) = &op.request {
                if creators.remove(name).is_none() {
                    persistent.insert(name.clone());
                }
            }
        }
        let mut last_synced_send: BTreeMap<u32, u64> = BTreeMap::new();
        for op in &ops {
            if let (Request::Send { queue, .. }, Some(ReplyData::Sent(Some(_)))) =
                (&op.request, op.ok())
            {
                if persistent.contains(queue) {
                    let last = last_synced_send.entry(op.epoch).or_default();
                    *last = (*last).max(op.t_i);
                }
            }
        }
        let owners = creators
            .into_iter()
            .filter(|(_, sessions)| sessions.len() == 1)
            .filter_map(|(name, sessions)| Some((name, sessions.into_iter().next()?)))
            .collect();
        Facts {
            run,
            ops,
            conns,
            epoch_start,
            owners,
            logins,
            durable: run.plan.durability.is_some(),
            persistent,
            lazy_acks: run
                .plan
                .durability
                .is_some_and(|d| d.ack_sync == AckSync::Lazy),
            last_synced_send,
            limits: run.plan.limits.clone().unwrap_or_else(Limits::defaults),
        }
    }

    /// Whether the successful `ack` surely removed its message for good as seen from
    /// `epoch`: in its own incarnation always; after a crash, with strict acks always, and
    /// with lazy acks only if a sync surely covered it before the crash (a Send to a
    /// persistent queue that began after the ack's reply and got its 200). A lazily acked
    /// message may come back otherwise (docs/persistence.md, the lazy-ack window).
    fn ack_binds(&self, ack: &Op, epoch: u32) -> bool {
        !self.lazy_acks
            || ack.epoch == epoch
            || self
                .last_synced_send
                .get(&ack.epoch)
                .is_some_and(|&t| t > ack.t_c_or_max())
    }

    /// Which incarnations share the contents of `queue` as seen in `epoch`: only `epoch`
    /// itself, except for a persistent queue of a durable run, whose messages, acks and
    /// destroys carry across restarts ([`EVERY_EPOCH`]). The workloads never use one name
    /// both ways (transient names carry the session token), so the split is unambiguous; a
    /// name created both ways is judged per epoch.
    fn lineage(&self, epoch: u32, queue: &QueueName) -> u32 {
        if self.durable && self.persistent.contains(queue) {
            EVERY_EPOCH
        } else {
            epoch
        }
    }

    /// When the switch had surely learnt that `conn` closed (`u64::MAX` if never).
    fn known_closed(&self, conn: u64) -> u64 {
        let Some(record) = self.conns.get(&conn) else {
            return u64::MAX;
        };
        let mut known = u64::MAX;
        if let Some(t) = record.server_closed_us {
            known = known.min(t);
        }
        if let Some(t) = record.reset_us {
            known = known.min(t);
        }
        if let Some(t) = record.client_closed_us {
            // The FIN leaves at `t`, or when a hold covering `t` is released; a FIN lost to a
            // partition shows up as a reset at the repair.
            let leaves = self
                .run
                .holds
                .iter()
                .filter(|(host, start, end)| {
                    *host == record.client_host && *start <= t && t <= *end
                })
                .map(|(_, _, end)| *end)
                .max()
                .unwrap_or(t);
            if !record.doomed {
                known = known.min(leaves + self.run.plan.latency_max_us + 2_000);
            }
        }
        known
    }

    /// The end of `conn`'s surely-open time: the earliest sign of its close.
    fn surely_open_until(&self, conn: u64) -> u64 {
        let Some(record) = self.conns.get(&conn) else {
            return 0;
        };
        [
            record.client_closed_us,
            record.server_closed_us,
            record.reset_us,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX)
    }

    /// Whether `session` surely had a logged-in, open connection at every moment of
    /// `[from, to]` in `epoch`.
    fn session_surely_alive(&self, session: &str, epoch: u32, from: u64, to: u64) -> bool {
        let Some(logins) = self.logins.get(&(session.to_owned(), epoch)) else {
            return false;
        };
        let mut intervals: Vec<(u64, u64)> = logins
            .iter()
            .filter_map(|(conn, _, ok)| {
                Some((ok.as_ref().copied()?, self.surely_open_until(*conn)))
            })
            .filter(|(start, end)| start < end)
            .collect();
        intervals.sort();
        let mut covered = from;
        for (start, end) in intervals {
            if start > covered {
                break;
            }
            covered = covered.max(end);
            if covered > to {
                return true;
            }
        }
        false
    }

    /// When the switch surely knew that `session` had no connection left in `epoch`, as seen
    /// by a request invoked at `before` (`None` if some connection may still be open).
    fn session_surely_gone_since(&self, session: &str, epoch: u32, before: u64) -> Option<u64> {
        let start = *self.epoch_start.get(&epoch)?;
        let mut gone = start;
        if let Some(logins) = self.logins.get(&(session.to_owned(), epoch)) {
            for (conn, invoked, _) in logins {
                if *invoked >= before {
                    continue;
                }
                gone = gone.max(self.known_closed(*conn));
            }
        }
        (gone != u64::MAX).then_some(gone)
    }
}

/// Every reply is well-formed; the only errors a correct client meets are "Please log in."
/// and the refusals of a limit the request really crossed (issue 12); and a request over a
/// limit the switch checks exactly (a name, a body, a timeout) is never accepted.
fn check_protocol(facts: &Facts, out: &mut Vec<Violation>) {
    let limits = &facts.limits;
    for op in &facts.ops {
        let over = over_limits(limits, &op.request);
        let bad = |what: String| Violation {
            invariant: Invariant::Transfer,
            what: format!(
                "op {} {:?} (session {:?}): {what}",
                op.op, op.request, op.session
            ),
        };
        match &op.outcome {
            Some(Outcome::BadReply(error)) => out.push(bad(format!("malformed reply: {error}"))),
            Some(Outcome::Status(status, text)) if !expected_refusal(*status, text, op, &over) => {
                out.push(bad(format!("unexpected {status} {text:?}")));
            }
            Some(Outcome::Ok(_)) => {
                if let Some(limit) = over.first() {
                    out.push(bad(format!("accepted although over the {limit} limit")));
                }
            }
            _ => {}
        }
    }
}

/// The limits that the switch checks exactly and `request` crosses: its body, a name in it,
/// its timeout.
fn over_limits(limits: &Limits, request: &Request) -> Vec<&'static str> {
    let mut over = Vec::new();
    if request.to_http().body.len() > limits.body_bytes_max {
        over.push("body");
    }
    if request.longest_name_bytes() > limits.engine.name_bytes_max {
        over.push("name");
    }
    let timeout_s = match request {
        Request::Transfer(transfer) => Some(transfer.timeout_s),
        Request::Trace { timeout_s, .. } => Some(*timeout_s),
        _ => None,
    };
    if timeout_s.is_some_and(|t| seconds_to_duration(t) > limits.engine.wait_timeout_max) {
        over.push("wait timeout");
    }
    over
}

/// Whether a non-200 answer is one the switch owes this request: 404 without a session, or
/// the refusal of a limit. The exact limits (body, name, timeout) must be the ones the
/// request crossed, in the order the switch checks them; the others (queues, messages,
/// stored bytes, logins, connections) depend on state the history does not pin down, so
/// only their kind of request is checked.
fn expected_refusal(status: u16, text: &str, op: &Op, over: &[&str]) -> bool {
    let first_over = over.first().copied();
    match (status, text) {
        (413, text) => text.starts_with("request body too large") && first_over == Some("body"),
        (429, text) if text.starts_with("too many open connections") => true,
        // The per-client connection rate (issue 19): any request of a connection opened
        // too fast gets it.
        (429, text) if text.starts_with("this client (") => true,
        // The body is checked before the request is routed, the session and then the names
        // before anything else.
        _ if first_over == Some("body") => false,
        (404, "Please log in.") => op.session.is_none(),
        (400, text) if text.starts_with("name too long") => first_over == Some("name"),
        _ if first_over == Some("name") => false,
        (400, text) if text.starts_with("timeout too long") => first_over == Some("wait timeout"),
        (429, text) if text.starts_with("too many queues") => matches!(
            op.request,
            Request::CreatePersistent(_) | Request::CreateTransient(_)
        ),
        (429, text) if text.starts_with("queue ") || text.starts_with("switch storage is full") => {
            matches!(op.request, Request::Send { .. })
        }
        (429, text) if text.starts_with("too many logins") => {
            matches!(op.request, Request::Login(_))
        }
        _ => false,
    }
}

/// Observations of which queues exist: (op, name, exists).
fn existence_observations<'f>(facts: &'f Facts) -> Vec<(&'f Op, QueueName, bool)> {
    let mut seen = Vec::new();
    for op in &facts.ops {
        match (&op.request, op.ok()) {
            (Request::Send { queue, .. }, Some(ReplyData::Sent(id))) => {
                seen.push((op, queue.clone(), id.is_some()));
            }
            (
                Request::List {
                    prefix,
                    alive_only: false,
                },
                Some(ReplyData::List(names)),
            ) => {
                for name in facts.owners.keys() {
                    if name.as_bytes().starts_with(prefix.as_bytes()) {
                        seen.push((op, name.clone(), names.contains(name)));
                    }
                }
            }
            (Request::Diagnostics, Some(ReplyData::Queues(permanent, transient))) => {
                for name in facts.owners.keys() {
                    let exists = permanent.contains(name) || transient.contains(name);
                    seen.push((op, name.clone(), exists));
                }
            }
            _ => {}
        }
    }
    seen
}

/// Invariant 1: a transient queue exists while its session has a connection, and is gone
/// within a bound once the switch knows the session's last connection closed.
fn check_transient(facts: &Facts, out: &mut Vec<Violation>) {
    for (op, name, exists) in existence_observations(facts) {
        let Some(owner) = facts.owners.get(&name) else {
            continue;
        };
        if exists {
            // Liveness of the cleanup.
            if let Some(gone) = facts.session_surely_gone_since(owner, op.epoch, op.t_c_or_max()) {
                if op.t_i > gone.saturating_add(CLEANUP_BOUND_US) {
                    out.push(Violation {
                        invariant: Invariant::Transient,
                        what: format!(
                            "op {} at {}us saw transient queue {name} of session {owner} \
                             {}us after the switch knew the session was gone (at {gone}us)",
                            op.op,
                            op.t_i,
                            op.t_i - gone
                        ),
                    });
                }
            }
            continue;
        }
        // Safety: it must not vanish while its session is alive and nobody destroyed it.
        let created = facts
            .ops
            .iter()
            .filter(|c| {
                c.epoch == op.epoch
                    && c.session.as_deref() == Some(owner.as_str())
                    && matches!(&c.request, Request::CreateTransient(Some(n)) if *n == name)
                    && c.ok().is_some()
                    && c.t_c_or_max() < op.t_i
            })
            .max_by_key(|c| c.t_c);
        let Some(created) = created else { continue };
        let destroyed = facts.ops.iter().any(|d| {
            d.epoch == op.epoch
                && matches!(&d.request, Request::Destroy(n) if *n == name)
                && d.maybe_applied()
                && d.t_i < op.t_c_or_max()
                && d.latest_effect() > created.t_i
        });
        if destroyed {
            continue;
        }
        if facts.session_surely_alive(owner, op.epoch, created.t_i, op.t_c_or_max()) {
            out.push(Violation {
                invariant: Invariant::Transient,
                what: format!(
                    "op {} at {}us found transient queue {name} missing while its session \
                     {owner} surely had an open connection (created by op {} at {}us)",
                    op.op, op.t_i, created.op, created.t_i
                ),
            });
        }
    }
}

/// A message some Send stored (or may have stored).
struct Sent<'f> {
    op: &'f Op,
    queue: QueueName,
    message: &'f Message,
}

/// Invariants 2 and 3 over every Transfer reply.
fn check_transfers(facts: &Facts, out: &mut Vec<Violation>) {
    let mut by_payload: BTreeMap<&[u8], Sent> = BTreeMap::new();
    let mut stored: BTreeMap<(u32, QueueName), Vec<(i64, &Op)>> = BTreeMap::new();
    for op in &facts.ops {
        if let Request::Send { queue, message } = &op.request {
            by_payload.insert(
                &message.payload[..],
                Sent {
                    op,
                    queue: queue.clone(),
                    message,
                },
            );
            if let Some(ReplyData::Sent(Some(id))) = op.ok() {
                stored
                    .entry((facts.lineage(op.epoch, queue), queue.clone()))
                    .or_default()
                    .push((id.index, op));
            }
        }
    }
    let mut acks: BTreeMap<(u32, MessageId), Vec<&Op>> = BTreeMap::new();
    let mut destroys: BTreeMap<(u32, QueueName), Vec<&Op>> = BTreeMap::new();
    for op in &facts.ops {
        match &op.request {
            Request::Ack(id) if op.maybe_applied() => acks
                .entry((facts.lineage(op.epoch, &id.queue), id.clone()))
                .or_default()
                .push(op),
            Request::Destroy(name) if op.maybe_applied() => destroys
                .entry((facts.lineage(op.epoch, name), name.clone()))
                .or_default()
                .push(op),
            _ => {}
        }
    }
    let no_ops: Vec<&Op> = Vec::new();
    for t in &facts.ops {
        let (Request::Transfer(request), Some(ReplyData::Transfer(reply))) = (&t.request, t.ok())
        else {
            continue;
        };
        let t_c = t.t_c_or_max();
        let from = request.from.unwrap_or(-1);
        let bad = |what: String| Violation {
            invariant: Invariant::Transfer,
            what: format!("transfer op {} at {}us {:?}: {what}", t.op, t.t_i, request),
        };
        // Invariant 3's "waits no longer than its timeout": with every fault over (nothing
        // holds or slows the link beyond its latency), a Transfer is answered within its
        // timeout plus a round trip and a few ticks. A parked Transfer whose deadline the
        // switch forgot to arm waits for whatever wakes the switch next.
        if t.t_i >= facts.run.plan.heal_us {
            let waited = t_c - t.t_i;
            let bound = seconds_to_duration(request.timeout_s).as_micros() as u64
                + 2 * facts.run.plan.latency_max_us
                + TRANSFER_LATE_SLACK_US;
            if waited > bound {
                out.push(bad(format!(
                    "answered after {waited}us, beyond its timeout (bound {bound}us)"
                )));
            }
        }
        // Invariant 3, locally: only the queues asked for, ids ascending across all of them
        // (protocol.md part A.2) and after the cursor, `next` as specified, and no more than
        // the reply limit unless it is a single message.
        let mut last: Option<i64> = None;
        for (id, _) in &reply.messages {
            if !request.queues.contains(&id.queue) {
                out.push(bad(format!("returned {id} of a queue it did not ask for")));
                continue;
            }
            if id.index <= from {
                out.push(bad(format!("returned {id}, not after the cursor {from}")));
            }
            if last.is_some_and(|i| id.index <= i) {
                out.push(bad(format!("returned {id} out of id order")));
            }
            last = Some(id.index);
        }
        let reply_bytes: usize = reply.messages.iter().map(|(_, m)| m.payload.len()).sum();
        let reply_bytes_max = facts.limits.engine.transfer_reply_bytes_max;
        if reply.messages.len() > 1 && reply_bytes > reply_bytes_max {
            out.push(bad(format!(
                "returned {reply_bytes} payload bytes in {} messages, over the reply limit of \
                 {reply_bytes_max}",
                reply.messages.len()
            )));
        }
        let expected_next = reply
            .messages
            .iter()
            .map(|(id, _)| id.index)
            .max()
            .unwrap_or(from);
        if reply.next != expected_next {
            out.push(bad(format!(
                "next is {} but should be {expected_next}",
                reply.next
            )));
        }
        // Invariant 2 (and 3's "exactly"): every returned message was stored, in this
        // incarnation (or, durable and persistent, in this one or an earlier one), and not
        // surely removed before the transfer began, in any incarnation it lived through.
        for (id, message) in &reply.messages {
            let lineage = facts.lineage(t.epoch, &id.queue);
            let Some(sent) = by_payload.get(&message.payload[..]) else {
                out.push(bad(format!("returned {id}, which nobody sent")));
                continue;
            };
            let s = sent.op;
            // A Send the switch refused (a limit) must leave no trace in any queue.
            let mismatch = sent.queue != id.queue
                || sent.message.kind != message.kind
                || facts.lineage(s.epoch, &sent.queue) != lineage
                || s.t_i > t_c
                || !s.maybe_applied()
                || matches!(s.ok(), Some(ReplyData::Sent(None)))
                || matches!(s.ok(), Some(ReplyData::Sent(Some(sid))) if sid != id);
            if mismatch {
                out.push(bad(format!(
                    "returned {id} = {:?}, which does not match its send (op {}, epoch {}, \
                     queue {}, reply {:?})",
                    message, s.op, s.epoch, sent.queue, s.outcome
                )));
                continue;
            }
            let acked = acks
                .get(&(lineage, id.clone()))
                .unwrap_or(&no_ops)
                .iter()
                .find(|a| {
                    a.ok().is_some()
                        && a.t_c_or_max() < t.t_i
                        && a.t_i > s.t_i
                        && facts.ack_binds(a, t.epoch)
                });
            if let Some(ack) = acked {
                out.push(Violation {
                    invariant: Invariant::AtLeastOnce,
                    what: format!(
                        "transfer op {} at {}us returned {id} after its ack (op {}) \
                         completed at {}us",
                        t.op,
                        t.t_i,
                        ack.op,
                        ack.t_c_or_max()
                    ),
                });
            }
            let destroyed = destroys
                .get(&(lineage, id.queue.clone()))
                .unwrap_or(&no_ops)
                .iter()
                .find(|d| d.ok().is_some() && d.t_i > s.t_c_or_max() && d.t_c_or_max() < t.t_i);
            if let Some(destroy) = destroyed {
                out.push(Violation {
                    invariant: Invariant::AtLeastOnce,
                    what: format!(
                        "transfer op {} at {}us returned {id} after its queue was destroyed \
                         (op {} completed at {}us)",
                        t.op,
                        t.t_i,
                        destroy.op,
                        destroy.t_c_or_max()
                    ),
                });
            }
        }
        // Invariant 2, completeness: every message surely stored before the transfer began,
        // after the cursor and not possibly removed, is returned, unless the reply limit cut
        // the reply before it (then its id is above `next`, so the listener, continuing from
        // `next`, still gets it). In a durable run that includes what persistent queues held
        // before a switch crash: its Send's 200 meant synced.
        let returned: BTreeSet<&MessageId> = reply.messages.iter().map(|(id, _)| id).collect();
        // Messages missing above `next`: excused together if the limit may have cut the
        // reply, judged at the smallest of them (every one above it has the same first
        // message left out).
        let mut missing_above_next: Vec<Violation> = Vec::new();
        let mut smallest_above_next = i64::MAX;
        for queue in &request.queues {
            let lineage = facts.lineage(t.epoch, queue);
            let Some(messages) = stored.get(&(lineage, queue.clone())) else {
                continue;
            };
            for (index, s) in messages {
                if *index <= from || s.t_c_or_max() >= t.t_i {
                    continue;
                }
                let id = MessageId::new(queue.clone(), *index);
                if returned.contains(&id) {
                    continue;
                }
                let maybe_acked = acks
                    .get(&(lineage, id.clone()))
                    .is_some_and(|a| a.iter().any(|a| a.t_i < t_c));
                let maybe_destroyed = destroys
                    .get(&(lineage, queue.clone()))
                    .is_some_and(|d| d.iter().any(|d| d.t_i < t_c && d.latest_effect() > s.t_i));
                let maybe_cleaned = facts
                    .owners
                    .get(queue)
                    .is_some_and(|owner| !facts.session_surely_alive(owner, t.epoch, s.t_i, t_c));
                if maybe_acked || maybe_destroyed || maybe_cleaned {
                    continue;
                }
                let missing = if *index > reply.next {
                    smallest_above_next = smallest_above_next.min(*index);
                    &mut missing_above_next
                } else {
                    &mut *out
                };
                missing.push(Violation {
                    invariant: Invariant::AtLeastOnce,
                    what: format!(
                        "transfer op {} at {}us (epoch {}) {:?} did not return {id}, stored by \
                         op {} (epoch {}, completed at {}us), never acked, its queue never \
                         destroyed",
                        t.op,
                        t.t_i,
                        t.epoch,
                        request,
                        s.op,
                        s.epoch,
                        s.t_c_or_max()
                    ),
                });
            }
        }
        let cut = !reply.messages.is_empty()
            && !missing_above_next.is_empty()
            && reply_bytes + largest_candidate(facts, t, request, reply.next, smallest_above_next)
                > reply_bytes_max;
        if !cut {
            out.extend(missing_above_next);
        }
    }
}

/// The largest payload that may have been the first message a Transfer `t` left out, given
/// that it returned up to `next` and left out the stored message `first_left_out` (so the
/// first one left out has an id in `(next, first_left_out]`, or is one whose id the history
/// does not know): the reply limit cut the reply there only if this message did not fit.
fn largest_candidate(
    facts: &Facts,
    t: &Op,
    request: &message_switch::protocol::TransferRequest,
    next: i64,
    first_left_out: i64,
) -> usize {
    facts
        .ops
        .iter()
        .filter(|s| s.t_i < t.t_c_or_max() && s.maybe_applied())
        .filter_map(|s| {
            let Request::Send { queue, message } = &s.request else {
                return None;
            };
            if !request.queues.contains(queue) {
                return None;
            }
            let candidate = match s.ok() {
                Some(ReplyData::Sent(Some(id))) => id.index > next && id.index <= first_left_out,
                Some(ReplyData::Sent(None)) => false,
                _ => true,
            };
            candidate.then_some(message.payload.len())
        })
        .max()
        .unwrap_or(0)
}

/// Invariant 3: for one queue name, a Send that began after another ended, or after a
/// Transfer showed an id, gets a larger id, across Destroy/re-create and across restarts. The
/// shown ids matter in a durable run: a listener's cursor may be past a message the crash
/// then lost, so the recovered switch must not hand that id out again.
fn check_ids_grow(facts: &Facts, out: &mut Vec<Violation>) {
    let mut by_queue: BTreeMap<&QueueName, Vec<(&Op, i64)>> = BTreeMap::new();
    // Per queue: (when it was surely known, id, op) of every id a Transfer showed.
    let mut shown: BTreeMap<&QueueName, Vec<(u64, i64, u64)>> = BTreeMap::new();
    for op in &facts.ops {
        if let (Request::Transfer(_), Some(ReplyData::Transfer(reply))) = (&op.request, op.ok()) {
            for (id, _) in &reply.messages {
                shown
                    .entry(&id.queue)
                    .or_default()
                    .push((op.t_c_or_max(), id.index, op.op));
            }
        }
        if let (Request::Send { queue, .. }, Some(ReplyData::Sent(Some(id)))) =
            (&op.request, op.ok())
        {
            if id.queue != *queue {
                out.push(Violation {
                    invariant: Invariant::Transfer,
                    what: format!(
                        "send op {} to {queue} got the id {id} of another queue",
                        op.op
                    ),
                });
            }
            by_queue.entry(queue).or_default().push((op, id.index));
        }
    }
    for (queue, mut sends) in by_queue {
        // Sweep in invocation order, keeping the largest id of the sends completed before.
        let mut completed: Vec<(u64, i64, u64)> = sends
            .iter()
            .map(|(op, index)| (op.t_c_or_max(), *index, op.op))
            .collect();
        completed.extend(shown.remove(queue).unwrap_or_default());
        completed.sort();
        sends.sort_by_key(|(op, _)| op.t_i);
        let mut next = 0;
        let mut best: Option<(i64, u64)> = None;
        for (op, index) in sends {
            while next < completed.len() && completed[next].0 < op.t_i {
                let (_, i, o) = completed[next];
                if best.is_none_or(|(b, _)| i > b) {
                    best = Some((i, o));
                }
                next += 1;
            }
            if let Some((earlier, earlier_op)) = best {
                if index <= earlier {
                    out.push(Violation {
                        invariant: Invariant::Transfer,
                        what: format!(
                            "ids went backwards on {queue}: send op {} (at {}us, epoch {}) \
                             got {index} after op {earlier_op} got or showed {earlier}",
                            op.op, op.t_i, op.epoch
                        ),
                    });
                }
            }
        }
    }
}

/// Invariant 4: every reply belongs to its call; once faults heal, calls complete.
fn check_rpc(facts: &Facts, out: &mut Vec<Violation>) {
    let mut starts = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for event in &facts.run.events {
        match &event.what {
            What::CallStart { call, payload, .. } => {
                starts.insert(*call, (event.t_us, payload.clone()));
            }
            What::CallEnd { call, result } => {
                ends.insert(*call, (event.t_us, result.clone()));
            }
            _ => {}
        }
    }
    let plan = &facts.run.plan;
    let pressure = if plan.limits.is_some() {
        pressure_times(facts)
    } else {
        Vec::new()
    };
    let live_from = plan.heal_us + SETTLE.as_micros() as u64;
    let must_end_by = plan
        .stop_us
        .saturating_sub(CALL_TIMEOUT.as_micros() as u64 + 3_000_000);
    for (call, (started, payload)) in &starts {
        let end = ends.get(call);
        if let Some((_, CallResult::Replied(reply))) = end {
            let mut expected = b"re:".to_vec();
            expected.extend_from_slice(payload);
            expected.push(b'|');
            if !reply.starts_with(&expected) {
                out.push(Violation {
                    invariant: Invariant::Rpc,
                    what: format!(
                        "call {call} ({:?}) got another call's reply {:?}",
                        String::from_utf8_lossy(payload),
                        String::from_utf8_lossy(reply)
                    ),
                });
            }
        }
        if *started < live_from || *started > must_end_by {
            continue;
        }
        // With drawn limits a call may fail while the switch is at a limit of what all
        // clients share (queues, messages, stored bytes, connections): the switch refused
        // something, which is its contract. It must still never get another call's reply.
        let ended = end.map_or(u64::MAX, |(t, _)| *t);
        let under_pressure = pressure
            .iter()
            .any(|t| *t + 1_000_000 >= *started && *t <= ended.saturating_add(300_000));
        if under_pressure {
            continue;
        }
        match end {
            Some((_, CallResult::Replied(_))) => {}
            Some((ended, result)) => out.push(Violation {
                invariant: Invariant::Rpc,
                what: format!(
                    "call {call} started at {started}us, after the heal, ended at {ended}us \
                     with {result:?}"
                ),
            }),
            None => out.push(Violation {
                invariant: Invariant::Rpc,
                what: format!("call {call} started at {started}us, after the heal, never ended"),
            }),
        }
    }
}

/// When the switch was at a limit that all clients share: the completion of every request
/// refused with 429, and every probe whose count of refusals for queues, messages or stored
/// bytes grew since the previous probe of its incarnation (the client library's own requests
/// are not in the history; the engine counts them).
fn pressure_times(facts: &Facts) -> Vec<u64> {
    let mut times = Vec::new();
    let mut previous: BTreeMap<u32, u64> = BTreeMap::new();
    for event in &facts.run.events {
        match &event.what {
            What::Complete {
                outcome: Outcome::Status(429, _),
                ..
            } => times.push(event.t_us),
            What::Probe(probe) => {
                let hits = probe.stats.limits_hit;
                let shared =
                    hits.queues + hits.queue_messages + hits.queue_bytes + hits.stored_bytes;
                if previous.insert(probe.epoch, shared).unwrap_or(0) < shared {
                    times.push(event.t_us);
                }
            }
            _ => {}
        }
    }
    times
}

/// Invariant 5: once clients and janitor are gone, the switch holds nothing; and at every
/// probe it holds no more parked requests than connections.
fn check_leaks(facts: &Facts, out: &mut Vec<Violation>) {
    let run = facts.run;
    if !run.clients_stopped {
        out.push(Violation {
            invariant: Invariant::Leaks,
            what: "client processes did not stop within 10 s of being asked".into(),
        });
    }
    let Some(janitor_done) = run.janitor_done_us else {
        out.push(Violation {
            invariant: Invariant::Leaks,
            what: "the janitor did not finish".into(),
        });
        return;
    };
    // The janitor's first look: every session is gone, so no transient queue may be left.
    let janitor_view = facts.ops.iter().find(|op| {
        op.session.as_deref() == Some("janitor") && matches!(op.request, Request::Diagnostics)
    });
    if let Some(ReplyData::Queues(_, transient)) = janitor_view.and_then(|op| op.ok()) {
        if !transient.is_empty() {
            out.push(Violation {
                invariant: Invariant::Transient,
                what: format!("after every client left, transient queues remain: {transient:?}"),
            });
        }
    }
    let mut last = None;
    for event in &run.events {
        if let What::Probe(probe) = &event.what {
            let parked = probe.stats.parked_transfers + probe.stats.parked_traces;
            if parked > probe.stats.connections {
                out.push(Violation {
                    invariant: Invariant::Leaks,
                    what: format!(
                        "at {}us {parked} parked requests but {} connections",
                        event.t_us, probe.stats.connections
                    ),
                });
            }
            if event.t_us > janitor_done + 500_000 {
                last = Some(probe.clone());
            }
        }
    }
    let Some(probe) = last else {
        out.push(Violation {
            invariant: Invariant::Leaks,
            what: "no probe of the switch after the janitor finished".into(),
        });
        return;
    };
    let s = probe.stats;
    let leaked = s.connections
        + s.sessions
        + s.queues
        + s.messages
        + s.payload_bytes
        + s.parked_transfers
        + s.parked_traces
        + s.alive_queues
        + probe.open_connections
        + probe.tcp_streams;
    if leaked != 0 {
        out.push(Violation {
            invariant: Invariant::Leaks,
            what: format!(
                "after everyone left the switch still holds {probe:?}; connections the switch \
                 never closed: {:?}",
                run.conns
                    .iter()
                    .filter(|c| c.server_closed_us.is_none())
                    .collect::<Vec<_>>()
            ),
        });
    }
}
