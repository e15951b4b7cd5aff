//! The history recorder: every request with its invocation and completion time, every RPC call,
//! fault, switch incarnation and bookkeeping probe, in the order they happened. The checkers
//! judge this history as a whole; its digest proves a seed replays exactly.

use std::cell::RefCell;
use std::fmt::Write as _;

use bytes::Bytes;

use message_switch::engine::EngineStats;
use message_switch::protocol::{MessageId, QueueName, Request, TransferReply};

use crate::net::now_us;

/// What a 200 reply said, decoded by the kind of request.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplyData {
    /// Login, Ack, Destroy: empty body.
    Empty,
    /// Create: the name the switch answered.
    Name(QueueName),
    /// Send: the id, or `None` when the queue did not exist.
    Sent(Option<MessageId>),
    /// Transfer.
    Transfer(TransferReply),
    /// List.
    List(Vec<QueueName>),
    /// Diagnostics: permanent and transient queue names.
    Queues(Vec<QueueName>, Vec<QueueName>),
    /// Anything else: only its size matters.
    Other(usize),
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// 200, with the decoded body.
    Ok(ReplyData),
    /// Another status: the switch answered and changed nothing.
    Status(u16, String),
    /// The connection failed or the reply did not come in time: the request may or may not
    /// have taken effect.
    Transport(String),
    /// A 200 whose body did not decode.
    BadReply(String),
}

/// How an RPC call ended.
#[derive(Clone, Debug, PartialEq)]
pub enum CallResult {
    /// A reply arrived, with this payload.
    Replied(Bytes),
    /// No reply within the call's timeout.
    TimedOut,
    /// The destination queue did not exist.
    QueueDeleted,
    /// The call failed on a transport or protocol error.
    Failed(String),
}

/// The switch's bookkeeping at one moment, as seen from its host.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// The switch incarnation.
    pub epoch: u32,
    /// The engine's counts.
    pub stats: EngineStats,
    /// Connections the server shell has open.
    pub open_connections: usize,
    /// turmoil's count of established TCP streams on the switch host.
    pub tcp_streams: usize,
    /// Snapshots this incarnation's journal has written (0 without a journal).
    pub compactions: u64,
    /// Stores this incarnation's Acks withdrew before the writer took them (0 without a
    /// journal).
    pub stores_withdrawn: u64,
}

/// One entry of the history.
#[derive(Clone, Debug, PartialEq)]
pub enum What {
    /// A request was sent.
    Invoke {
        /// Its number.
        op: u64,
        /// Who sent it.
        actor: String,
        /// On which connection.
        conn: u64,
        /// The switch incarnation of that connection.
        epoch: u32,
        /// The session token of the connection, if it logged in.
        session: Option<String>,
        /// The request.
        request: Request,
    },
    /// A request ended.
    Complete {
        /// The request's number.
        op: u64,
        /// How.
        outcome: Outcome,
    },
    /// An RPC call began.
    CallStart {
        /// Its number.
        call: u64,
        /// The caller.
        actor: String,
        /// The service queue.
        service: QueueName,
        /// The request payload.
        payload: Bytes,
    },
    /// An RPC call ended.
    CallEnd {
        /// The call's number.
        call: u64,
        /// How.
        result: CallResult,
    },
    /// A switch incarnation started serving.
    SwitchUp {
        /// Its number.
        epoch: u32,
    },
    /// The harness did something to the world (a fault, a repair, a phase change).
    Harness(String),
    /// A bookkeeping probe of the switch.
    Probe(Probe),
}

/// One timed entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Virtual µs since the start of the run.
    pub t_us: u64,
    /// What happened.
    pub what: What,
}

/// The recorder, shared by every actor of a run (all of them run on one thread).
#[derive(Default)]
pub struct Recorder {
    events: RefCell<Vec<Event>>,
    next_op: RefCell<u64>,
    next_call: RefCell<u64>,
}

impl Recorder {
    /// Records an entry at the current virtual time.
    pub fn record(&self, what: What) {
        self.record_at(now_us(), what);
    }

    /// Records an entry at a given virtual time (used by the harness, outside any host).
    pub fn record_at(&self, t_us: u64, what: What) {
        self.events.borrow_mut().push(Event { t_us, what });
    }

    /// Records a request being sent; returns its number.
    pub fn invoke(
        &self,
        actor: &str,
        conn: u64,
        epoch: u32,
        session: Option<String>,
        request: Request,
    ) -> u64 {
        let op = {
            let mut next = self.next_op.borrow_mut();
            *next += 1;
            *next
        };
        self.record(What::Invoke {
            op,
            actor: actor.to_owned(),
            conn,
            epoch,
            session,
            request,
        });
        op
    }

    /// Records a request's end.
    pub fn complete(&self, op: u64, outcome: Outcome) {
        self.record(What::Complete { op, outcome });
    }

    /// Records a call's start; returns its number.
    pub fn call_start(&self, actor: &str, service: QueueName, payload: Bytes) -> u64 {
        let call = {
            let mut next = self.next_call.borrow_mut();
            *next += 1;
            *next
        };
        self.record(What::CallStart {
            call,
            actor: actor.to_owned(),
            service,
            payload,
        });
        call
    }

    /// Records a call's end.
    pub fn call_end(&self, call: u64, result: CallResult) {
        self.record(What::CallEnd { call, result });
    }

    /// A copy of everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.borrow().clone()
    }
}

/// A digest of a history: FNV-1a over its debug rendering. Two runs of one seed must agree.
pub fn digest(events: &[Event]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut line = String::new();
    for event in events {
        line.clear();
        let _ = write!(line, "{event:?}");
        for byte in line.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The last `count` entries, one per line, for failure reports.
pub fn tail(events: &[Event], count: usize) -> String {
    let start = events.len().saturating_sub(count);
    let mut out = String::new();
    for event in &events[start..] {
        let mut line = format!("{:>10.3}s {:?}", event.t_us as f64 / 1e6, event.what);
        if line.len() > 400 {
            let mut cut = 400;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}
