//! Engine tests without a runtime: every command, the cleanup rules and the wake-up rules,
//! driven directly through `handle_*` with explicit time.

use std::time::Duration;

use bytes::Bytes;

use message_switch::engine::{
    AckSync, Config, ConnectionId, Engine, Event, Output, RequestId, Timestamp,
};
use message_switch::protocol::{
    Message, MessageId, MessageKind, QueueName, Reply, Request, TraceMessage, TransferReply,
    TransferRequest,
};

const START: i64 = 1_700_000_000_000_000_000;

struct Harness {
    engine: Engine,
    now: Timestamp,
    next_request: u64,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(Config::default())
    }

    fn with_config(config: Config) -> Self {
        let now = Timestamp::from_unix_nanos(START);
        Self {
            engine: Engine::new(config, now),
            now,
            next_request: 0,
        }
    }

    fn first_id(&self) -> i64 {
        START / 1000
    }

    fn advance(&mut self, duration: Duration) -> Vec<Output> {
        self.now = self.now.saturating_add(duration);
        self.engine.handle_timeout(self.now);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.engine.poll_output()).collect()
    }

    /// Sends a request and returns its id and every output it caused.
    fn submit(&mut self, connection: u64, request: Request) -> (RequestId, Vec<Output>) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.engine
            .handle_request(self.now, ConnectionId(connection), id, request);
        (id, self.drain())
    }

    /// Sends a request that must be answered at once, and returns the reply.
    fn call(&mut self, connection: u64, request: Request) -> Reply {
        let (id, outputs) = self.submit(connection, request);
        reply_to(id, &outputs).unwrap_or_else(|| panic!("no immediate reply: {outputs:?}"))
    }

    fn login(&mut self, connection: u64, token: &str) {
        assert_eq!(
            self.call(connection, Request::Login(token.into())),
            Reply::Empty
        );
    }

    fn disconnect(&mut self, connection: u64) -> Vec<Output> {
        self.engine
            .handle_disconnect(self.now, ConnectionId(connection));
        self.drain()
    }

    fn send(&mut self, connection: u64, queue: &str, payload: &'static str) -> Option<MessageId> {
        match self.call(connection, send(queue, payload, "reply")) {
            Reply::Sent(id) => id,
            other => panic!("unexpected send reply {other:?}"),
        }
    }

    fn list(&mut self, connection: u64, prefix: &str, alive_only: bool) -> Vec<String> {
        match self.call(
            connection,
            Request::List {
                prefix: prefix.into(),
                alive_only,
            },
        ) {
            Reply::List(names) => names.iter().map(|n| n.to_text()).collect(),
            other => panic!("unexpected list reply {other:?}"),
        }
    }
}

fn send(queue: &str, payload: &'static str, reply_to: &str) -> Request {
    Request::Send {
        queue: queue.into(),
        message: Message {
            payload: Bytes::from_static(payload.as_bytes()),
            kind: MessageKind::Request {
                reply_to: reply_to.into(),
            },
        },
    }
}

fn transfer(from: Option<i64>, timeout_s: f64, queues: &[&str]) -> Request {
    Request::Transfer(TransferRequest {
        from,
        timeout_s,
        queues: queues.iter().map(|q| QueueName::from(*q)).collect(),
    })
}

fn reply_to(request: RequestId, outputs: &[Output]) -> Option<Reply> {
    outputs.iter().find_map(|output| match output {
        Output::Reply {
            request: id, reply, ..
        } if *id == request => Some(reply.clone()),
        _ => None,
    })
}

fn transfer_reply(reply: Option<Reply>) -> TransferReply {
    match reply {
        Some(Reply::Transfer(transfer)) => transfer,
        other => panic!("expected a transfer reply, got {other:?}"),
    }
}

fn payloads(reply: &TransferReply) -> Vec<String> {
    reply
        .messages
        .iter()
        .map(|(_, m)| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

fn events(outputs: &[Output]) -> Vec<Event> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Persist(event) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

/// Whether the first reply among `outputs` waits for a sync, and how many changes they journal.
fn sync_flag_and_events(outputs: &[Output]) -> (Option<bool>, usize) {
    let flag = outputs.iter().find_map(|o| match o {
        Output::Reply { after_sync, .. } => Some(*after_sync),
        _ => None,
    });
    (flag, events(outputs).len())
}

#[test]
fn requests_need_a_session_except_login_diagnostics_and_trace() {
    let mut h = Harness::new();
    let please = Reply::Error(message_switch::protocol::ErrorReply::please_log_in());
    assert_eq!(h.call(1, Request::CreatePersistent("q".into())), please);
    assert_eq!(h.call(1, transfer(None, 30.0, &["q"])), please);
    assert_eq!(h.call(1, Request::Shutdown), please);
    assert!(matches!(
        h.call(1, Request::Diagnostics),
        Reply::Diagnostics(_)
    ));
    assert!(matches!(
        h.call(
            1,
            Request::Trace {
                from: -1,
                timeout_s: 5.0
            }
        ),
        Reply::Trace(_)
    ));
    h.login(1, "a");
    assert_eq!(
        h.call(1, Request::CreatePersistent("q".into())),
        Reply::Name("q".into())
    );
}

#[test]
fn ids_grow_per_queue_and_survive_destroy() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.call(1, Request::CreatePersistent("q".into()));
    let first = h.send(1, "q", "x").unwrap();
    assert_eq!(first, MessageId::new("q".into(), h.first_id()));
    let second = h.send(1, "q", "y").unwrap();
    assert!(second.index > first.index);
    h.call(1, Request::Destroy("q".into()));
    assert_eq!(
        h.send(1, "q", "z"),
        None,
        "a send to a missing queue gets []"
    );
    h.call(1, Request::CreatePersistent("q".into()));
    let third = h.send(1, "q", "w").unwrap();
    assert!(
        third.index > second.index,
        "ids never go backwards for a name"
    );
}

#[test]
fn stored_messages_own_their_payload_and_share_queue_names() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.call(1, Request::CreatePersistent("q".into()));
    h.call(1, Request::CreatePersistent("replies".into()));
    // A body as hyper hands it over: a slice of the connection's much larger read buffer.
    let read_buffer = Bytes::from(vec![b'x'; 8192]);
    let payload = read_buffer.slice(100..200);
    let request = Request::Send {
        queue: "q".into(),
        message: Message {
            payload: payload.clone(),
            kind: MessageKind::Request {
                reply_to: QueueName::from("replies"),
            },
        },
    };
    h.call(1, request);
    let store = h.engine.store();
    let stored = &store
        .queue(&"q".into())
        .unwrap()
        .messages
        .values()
        .next()
        .unwrap()
        .message;
    assert_eq!(stored.payload, payload);
    assert!(
        !read_buffer
            .as_ptr_range()
            .contains(&stored.payload.as_ptr()),
        "a stored payload must not pin the buffer it arrived in"
    );
    let (replies, _) = store
        .queues()
        .find(|(name, _)| name.as_bytes() == b"replies")
        .unwrap();
    let MessageKind::Request { reply_to } = &stored.kind else {
        panic!("not a request: {stored:?}")
    };
    assert_eq!(reply_to, replies);
    assert_eq!(
        reply_to.as_bytes().as_ptr(),
        replies.as_bytes().as_ptr(),
        "the reply queue's name is shared with the stored queue"
    );
}

#[test]
fn ids_start_above_the_start_time_so_restarts_do_not_reuse_them() {
    let earlier = Engine::new(Config::default(), Timestamp::from_unix_nanos(START));
    let later = Engine::new(Config::default(), Timestamp::from_unix_nanos(START + 1_000));
    assert!(later.store().next_index() > earlier.store().next_index());
}

#[test]
fn create_is_idempotent_and_keeps_the_first_owner() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.login(2, "b");
    let (_, outputs) = h.submit(1, Request::CreateTransient(Some("t".into())));
    assert!(
        events(&outputs).is_empty(),
        "a transient queue is not journalled"
    );
    assert!(h.engine.store().queue(&"t".into()).is_some());
    let (_, outputs) = h.submit(2, Request::CreatePersistent("t".into()));
    assert!(
        events(&outputs).is_empty(),
        "an existing queue is not re-created"
    );
    assert_eq!(
        h.engine.store().queue(&"t".into()).unwrap().owner,
        Some("a".into())
    );
}

#[test]
fn fresh_transient_names_are_unique() {
    let mut h = Harness::new();
    h.login(1, "a");
    let Reply::Name(first) = h.call(1, Request::CreateTransient(None)) else {
        panic!("no name")
    };
    let Reply::Name(second) = h.call(1, Request::CreateTransient(None)) else {
        panic!("no name")
    };
    assert_ne!(first, second);
    assert_eq!(
        h.engine.store().queue(&first).unwrap().owner,
        Some("a".into())
    );
}

#[test]
fn transfer_returns_messages_after_the_cursor_in_ascending_order() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.call(1, Request::CreatePersistent("q".into()));
    let ids: Vec<MessageId> = ["m0", "m1", "m2"]
        .into_iter()
        .map(|p| h.send(1, "q", p).unwrap())
        .collect();
    let all = transfer_reply(Some(h.call(1, transfer(None, 0.0, &["q"]))));
    assert_eq!(payloads(&all), ["m0", "m1", "m2"]);
    assert_eq!(all.next, ids[2].index);
    let after = transfer_reply(Some(h.call(1, transfer(Some(ids[0].index), 0.0, &["q"]))));
    assert_eq!(payloads(&after), ["m1", "m2"]);
    let none = transfer_reply(Some(h.call(1, transfer(Some(ids[2].index), 0.0, &["q"]))));
    assert!(none.messages.is_empty());
    assert_eq!(
        none.next, ids[2].index,
        "next echoes from when nothing is returned"
    );
    let missing = transfer_reply(Some(h.call(1, transfer(None, 0.0, &["nope"]))));
    assert_eq!(missing.next, -1);
}

#[test]
fn a_parked_transfer_is_woken_only_by_its_queues() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.login(2, "b");
    for q in ["q", "other"] {
        h.call(1, Request::CreatePersistent(q.into()));
    }
    let (parked, outputs) = h.submit(2, transfer(None, 30.0, &["q"]));
    assert!(
        reply_to(parked, &outputs).is_none(),
        "nothing to return: it parks"
    );
    assert_eq!(h.engine.stats().parked_transfers, 1);
    let (_, outputs) = h.submit(1, send("other", "x", "r"));
    assert!(
        reply_to(parked, &outputs).is_none(),
        "another queue does not wake it"
    );
    let (_, outputs) = h.submit(1, Request::Destroy("other".into()));
    assert!(reply_to(parked, &outputs).is_none());
    let (_, outputs) = h.submit(1, send("q", "y", "r"));
    let woken = transfer_reply(reply_to(parked, &outputs));
    assert_eq!(payloads(&woken), ["y"]);
    assert_eq!(h.engine.stats().parked_transfers, 0);
}

#[test]
fn a_parked_transfer_times_out_empty_at_its_deadline() {
    let mut h = Harness::new();
    h.login(1, "a");
    let (parked, _) = h.submit(1, transfer(Some(7), 2.0, &["missing"]));
    assert_eq!(
        h.engine.poll_timeout(),
        Some(Timestamp::from_unix_nanos(START + 2_000_000_000))
    );
    assert!(reply_to(parked, &h.advance(Duration::from_millis(1999))).is_none());
    let reply = transfer_reply(reply_to(parked, &h.advance(Duration::from_millis(1))));
    assert!(reply.messages.is_empty());
    assert_eq!(reply.next, 7);
    assert_eq!(h.engine.poll_timeout(), None);
}

#[test]
fn a_send_below_the_cursor_does_not_wake() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.call(1, Request::CreatePersistent("q".into()));
    let (parked, _) = h.submit(1, transfer(Some(i64::MAX - 1), 30.0, &["q"]));
    let (_, outputs) = h.submit(1, send("q", "x", "r"));
    assert!(reply_to(parked, &outputs).is_none());
}

#[test]
fn transfer_timeouts_are_bounded() {
    let mut h = Harness::with_config(Config {
        wait_timeout_max: Duration::from_secs(60),
        ..Config::default()
    });
    h.login(1, "a");
    let Reply::Error(error) = h.call(1, transfer(None, 61.0, &["q"])) else {
        panic!("an over-long timeout must be refused")
    };
    assert_eq!(error.status, 400);
    assert_eq!(h.engine.stats().limits_hit.wait_timeout, 1);
    let zero = transfer_reply(Some(h.call(1, transfer(None, -3.0, &["q"]))));
    assert!(
        zero.messages.is_empty(),
        "a negative timeout means do not wait"
    );
}

#[test]
fn timeouts_that_are_not_finite_are_refused_with_a_reason() {
    let mut h = Harness::new();
    h.login(1, "a");
    for timeout_s in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for request in [
            transfer(None, timeout_s, &["q"]),
            Request::Trace { from: 0, timeout_s },
        ] {
            let Reply::Error(error) = h.call(1, request.clone()) else {
                panic!("{request:?} must be refused")
            };
            assert_eq!(error.status, 400, "{request:?}");
            assert!(
                error.text.contains("finite") && !error.text.contains('\n'),
                "{error:?}"
            );
        }
    }
    assert_eq!(h.engine.stats().parked_transfers, 0);
    assert_eq!(h.engine.stats().parked_traces, 0);
}

#[test]
fn ack_deletes_and_is_always_traced() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.call(1, Request::CreatePersistent("q".into()));
    let id = h.send(1, "q", "x").unwrap();
    let (_, outputs) = h.submit(1, Request::Ack(id.clone()));
    assert_eq!(events(&outputs), [Event::MessageAcked { id: id.clone() }]);
    let (_, outputs) = h.submit(1, Request::Ack(id.clone()));
    assert!(
        events(&outputs).is_empty(),
        "acking an unknown id changes nothing"
    );
    let reply = transfer_reply(Some(h.call(1, transfer(None, 0.0, &["q"]))));
    assert!(reply.messages.is_empty());
    let Reply::Trace(trace) = h.call(
        1,
        Request::Trace {
            from: 0,
            timeout_s: 0.0,
        },
    ) else {
        panic!("no trace")
    };
    let acks = trace
        .iter()
        .filter(|(_, e)| matches!(e.message, TraceMessage::Ack(_)))
        .count();
    assert_eq!(acks, 2);
}

#[test]
fn transient_queues_live_until_the_last_connection_of_the_session_closes() {
    let mut h = Harness::new();
    h.login(1, "client");
    h.login(2, "client");
    h.login(3, "other");
    h.call(1, Request::CreateTransient(Some("reply".into())));
    h.call(3, Request::CreatePersistent("service".into()));
    let outputs = h.disconnect(1);
    assert!(events(&outputs).is_empty());
    assert!(h.engine.store().queue(&"reply".into()).is_some());
    let outputs = h.disconnect(2);
    assert!(
        events(&outputs).is_empty(),
        "a transient queue is not journalled"
    );
    assert!(h.engine.store().queue(&"reply".into()).is_none());
    assert!(h.engine.store().queue(&"service".into()).is_some());
    assert_eq!(h.engine.stats().sessions, 1);
}

#[test]
fn cleanup_covers_every_token_of_a_multi_login_connection() {
    let mut h = Harness::new();
    h.login(1, "b");
    h.call(1, Request::CreateTransient(Some("owned-by-b".into())));
    h.login(2, "b");
    h.login(2, "a");
    h.disconnect(1);
    h.call(2, Request::CreateTransient(Some("owned-by-a".into())));
    h.disconnect(2);
    for name in ["owned-by-a", "owned-by-b"] {
        assert!(
            h.engine.store().queue(&name.into()).is_none(),
            "{name} goes"
        );
    }
    assert_eq!(h.engine.stats().sessions, 0);
}

#[test]
fn disconnect_forgets_a_parked_transfer_and_cleans_up_at_once() {
    let mut h = Harness::new();
    h.login(1, "client");
    h.call(1, Request::CreateTransient(Some("reply".into())));
    let (parked, _) = h.submit(1, transfer(None, 30.0, &["reply"]));
    let outputs = h.disconnect(1);
    assert!(reply_to(parked, &outputs).is_none());
    assert!(h.engine.store().queue(&"reply".into()).is_none());
    let stats = h.engine.stats();
    assert_eq!(
        (stats.parked_transfers, stats.connections, stats.sessions),
        (0, 0, 0)
    );
    assert_eq!(h.engine.poll_timeout(), None);
}

#[test]
fn list_is_descending_by_name_and_alive_means_someone_transferred() {
    let mut h = Harness::new();
    h.login(1, "a");
    for q in ["b", "a", "c", "ab"] {
        h.call(1, Request::CreatePersistent(q.into()));
    }
    assert_eq!(h.list(1, "", false), ["c", "b", "ab", "a"]);
    assert_eq!(h.list(1, "a", false), ["ab", "a"]);
    assert!(h.list(1, "", true).is_empty());
    h.call(1, transfer(None, 0.0, &["ab", "zz"]));
    assert_eq!(h.list(1, "", true), ["ab"]);
    h.call(1, Request::Destroy("ab".into()));
    h.call(1, Request::CreatePersistent("ab".into()));
    assert!(
        h.list(1, "", true).is_empty(),
        "the alive entry goes with the queue"
    );
}

#[test]
fn a_queue_created_while_a_transfer_waits_on_its_name_is_alive() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.login(2, "b");
    h.submit(2, transfer(None, 30.0, &["later"]));
    h.call(1, Request::CreatePersistent("later".into()));
    assert_eq!(h.list(1, "", true), ["later"]);
}

#[test]
fn diagnostics_use_the_switch_clock_and_split_queue_kinds() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.call(1, Request::CreatePersistent("p".into()));
    h.call(1, Request::CreateTransient(Some("t".into())));
    h.advance(Duration::from_secs(4));
    h.send(1, "p", "x");
    h.call(1, transfer(Some(i64::MAX), 0.0, &["p"]));
    h.advance(Duration::from_secs(1));
    let Reply::Diagnostics(diagnostics) = h.call(1, Request::Diagnostics) else {
        panic!("no diagnostics")
    };
    assert_eq!(diagnostics.start_time, 0);
    assert_eq!(diagnostics.current_time, 5_000_000_000);
    let (name, permanent) = &diagnostics.permanent_queues[0];
    assert_eq!(name.to_text(), "p");
    assert_eq!(permanent.queue_contents[0].1.time, 4_000_000_000);
    assert_eq!(permanent.next_transfer_expected, Some(4_000_000_000));
    assert_eq!(diagnostics.transient_queues[0].0.to_text(), "t");
}

#[test]
fn trace_reads_block_until_an_event_and_report_processing_time() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.call(1, Request::CreatePersistent("svc".into()));
    h.call(1, Request::CreateTransient(Some("a-reply".into())));
    let (waiting, outputs) = h.submit(
        2,
        Request::Trace {
            from: 0,
            timeout_s: 5.0,
        },
    );
    assert!(reply_to(waiting, &outputs).is_none());
    let (_, outputs) = h.submit(1, send("svc", "req", "a-reply"));
    let Some(Reply::Trace(woken)) = reply_to(waiting, &outputs) else {
        panic!("trace not woken: {outputs:?}")
    };
    assert_eq!(woken.len(), 1);
    let request_id = match &woken[0].1.message {
        TraceMessage::Message(id, _) => id.clone(),
        other => panic!("unexpected {other:?}"),
    };
    h.advance(Duration::from_millis(250));
    h.call(
        1,
        Request::Send {
            queue: "a-reply".into(),
            message: Message {
                payload: Bytes::from_static(b"resp"),
                kind: MessageKind::Response {
                    request: request_id,
                },
            },
        },
    );
    h.call(1, transfer(None, 0.0, &["a-reply"]));
    let Reply::Trace(trace) = h.call(
        1,
        Request::Trace {
            from: 0,
            timeout_s: 0.0,
        },
    ) else {
        panic!("no trace")
    };
    let delivered = trace.last().unwrap();
    assert_eq!(delivered.1.output, Some("a".into()));
    assert_eq!(delivered.1.processing_time, Some(250_000_000));
    let (later, outputs) = h.submit(
        2,
        Request::Trace {
            from: 100,
            timeout_s: 1.0,
        },
    );
    assert!(reply_to(later, &outputs).is_none());
    let Some(Reply::Trace(empty)) = reply_to(later, &h.advance(Duration::from_secs(1))) else {
        panic!("trace read did not time out")
    };
    assert!(empty.is_empty());
}

#[test]
fn limits_answer_with_4xx_and_a_reason() {
    let mut h = Harness::with_config(Config {
        name_bytes_max: 5,
        queues_max: 2,
        queue_messages_max: 1,
        logins_per_connection_max: 1,
        ..Config::default()
    });
    h.login(1, "a");
    let status = |reply: Reply| match reply {
        Reply::Error(e) => {
            assert!(!e.text.is_empty() && !e.text.contains('\n'));
            e.status
        }
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(status(h.call(1, Request::Login("b".into()))), 429);
    assert_eq!(
        status(h.call(1, Request::CreatePersistent("toolong".into()))),
        400
    );
    h.call(1, Request::CreatePersistent("q1".into()));
    h.call(1, Request::CreatePersistent("q2".into()));
    assert_eq!(
        status(h.call(1, Request::CreatePersistent("q3".into()))),
        429
    );
    h.send(1, "q1", "x");
    assert_eq!(status(h.call(1, send("q1", "y", "r"))), 429);
    let hits = h.engine.stats().limits_hit;
    assert_eq!(
        (
            hits.logins,
            hits.name_bytes,
            hits.queues,
            hits.queue_messages
        ),
        (1, 1, 1, 1)
    );
}

#[test]
fn a_send_over_the_stored_bytes_limit_is_refused_and_leaves_no_trace() {
    let mut h = Harness::with_config(Config {
        stored_bytes_max: 5,
        ..Config::default()
    });
    h.login(1, "a");
    h.call(1, Request::CreatePersistent("q".into()));
    h.send(1, "q", "1234");
    let trace_before = h.engine.stats().trace_events;
    let Reply::Error(error) = h.call(1, send("q", "56", "r")) else {
        panic!("the store is full")
    };
    assert_eq!(error.status, 429);
    let stats = h.engine.stats();
    assert_eq!((stats.messages, stats.payload_bytes), (1, 4));
    assert_eq!(
        stats.trace_events, trace_before,
        "a refused send is not traced"
    );
    assert_eq!(stats.limits_hit.stored_bytes, 1);
    let all = transfer_reply(Some(h.call(1, transfer(None, 0.0, &["q"]))));
    assert_eq!(payloads(&all), ["1234"]);
}

/// Issue 19: a queue at its byte limit refuses its own Sends, naming itself and the limit,
/// and no other queue's; an Ack makes room again; the switch-wide limit still guards the sum.
#[test]
fn a_queue_at_its_byte_limit_refuses_its_own_sends_and_no_other_queues() {
    let mut h = Harness::with_config(Config {
        queue_bytes_max: 6,
        stored_bytes_max: 14,
        ..Config::default()
    });
    h.login(1, "a");
    for name in ["flooded", "other", "third"] {
        h.call(1, Request::CreatePersistent(name.into()));
    }
    h.send(1, "flooded", "1234");
    let at_the_limit = h
        .send(1, "flooded", "56")
        .expect("exactly at the limit fits");
    let refusal = |reply: Reply| match reply {
        Reply::Error(error) => (error.status, error.text),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refusal(h.call(1, send("flooded", "7", "r"))),
        (
            429,
            "queue flooded is full (limit 6 payload bytes)".to_owned()
        ),
        "one byte past the limit"
    );
    let other = h
        .send(1, "other", "123456")
        .expect("another queue is not refused");
    let stats = h.engine.stats();
    assert_eq!((stats.payload_bytes, stats.limits_hit.queue_bytes), (12, 1));
    // Both queues are under their own limit but the switch is full: the last guard.
    h.call(1, Request::Ack(at_the_limit));
    let Reply::Error(full) = h.call(1, send("third", "xxxxx", "r")) else {
        panic!("the switch-wide limit still applies")
    };
    assert!(
        full.text.starts_with("switch storage is full"),
        "{}",
        full.text
    );
    assert!(
        h.send(1, "third", "xxxx").is_some(),
        "at the switch-wide limit exactly"
    );
    h.call(1, Request::Ack(other));
    assert!(
        h.send(1, "flooded", "56").is_some(),
        "room again after an Ack"
    );
    let hits = h.engine.stats().limits_hit;
    assert_eq!((hits.queue_bytes, hits.stored_bytes), (1, 1));
}

#[test]
fn large_transfer_replies_are_cut_at_a_message_boundary() {
    let mut h = Harness::with_config(Config {
        transfer_reply_bytes_max: 10,
        ..Config::default()
    });
    h.login(1, "a");
    h.call(1, Request::CreatePersistent("q".into()));
    let ids: Vec<MessageId> = (0..3).map(|_| h.send(1, "q", "123456").unwrap()).collect();
    let first = transfer_reply(Some(h.call(1, transfer(None, 0.0, &["q"]))));
    assert_eq!(first.messages.len(), 1);
    assert_eq!(first.next, ids[0].index);
    let rest = transfer_reply(Some(h.call(1, transfer(Some(first.next), 0.0, &["q"]))));
    assert_eq!(rest.next, ids[1].index);
    assert_eq!(h.engine.stats().limits_hit.transfer_reply_bytes, 2);
}

/// Follows `next` from the start until a Transfer returns nothing, as every listener does, and
/// returns the payloads in the order they came and each reply's size.
fn follow_cursor(h: &mut Harness, queues: &[&str]) -> (Vec<String>, Vec<usize>) {
    let (mut seen, mut sizes, mut from) = (Vec::new(), Vec::new(), None);
    loop {
        let reply = transfer_reply(Some(h.call(1, transfer(from, 0.0, queues))));
        if reply.messages.is_empty() {
            return (seen, sizes);
        }
        sizes.push(reply.messages.len());
        seen.extend(payloads(&reply));
        from = Some(reply.next);
    }
}

/// Issue 12: a Transfer over A and B, cut by the reply limit before B's message, used to
/// set `next` to A's later message, above B's, so a listener following `next` never saw B's.
#[test]
fn a_multi_queue_transfer_cut_by_the_reply_limit_leaves_nothing_below_its_cursor() {
    let mut h = Harness::with_config(Config {
        transfer_reply_bytes_max: 10,
        ..Config::default()
    });
    h.login(1, "a");
    h.call(1, Request::CreatePersistent("A".into()));
    h.call(1, Request::CreatePersistent("B".into()));
    let a1 = h.send(1, "A", "a1").unwrap();
    // One byte under the limit: a1 and this do not fit in one reply.
    let b = h.send(1, "B", "bbbbbbbbb").unwrap();
    h.send(1, "A", "a2").unwrap();
    let first = transfer_reply(Some(h.call(1, transfer(None, 0.0, &["A", "B"]))));
    assert_eq!(payloads(&first), ["a1"]);
    assert_eq!(first.next, a1.index, "next is the last message included");
    assert!(first.next < b.index);
    let (seen, sizes) = follow_cursor(&mut h, &["A", "B"]);
    assert_eq!(
        seen,
        ["a1", "bbbbbbbbb", "a2"],
        "every message, in id order"
    );
    assert_eq!(sizes, [1, 1, 1]);
    // Named the other way round, the order of ids still decides.
    let (seen, _) = follow_cursor(&mut h, &["B", "A"]);
    assert_eq!(seen, ["a1", "bbbbbbbbb", "a2"]);
}

#[test]
fn a_multi_queue_transfer_merges_its_queues_in_id_order() {
    let mut h = Harness::new();
    h.login(1, "a");
    for name in ["A", "B", "C"] {
        h.call(1, Request::CreatePersistent(name.into()));
    }
    for (queue, payload) in [("B", "1"), ("A", "2"), ("C", "3"), ("B", "4"), ("A", "5")] {
        h.send(1, queue, payload);
    }
    let all = transfer_reply(Some(h.call(1, transfer(None, 0.0, &["A", "missing", "B"]))));
    assert_eq!(payloads(&all), ["1", "2", "4", "5"]);
    let ids: Vec<i64> = all.messages.iter().map(|(id, _)| id.index).collect();
    assert_eq!(all.next, *ids.last().unwrap());
    // A queue named twice shows its messages twice, side by side.
    let twice = transfer_reply(Some(h.call(1, transfer(None, 0.0, &["A", "A"]))));
    assert_eq!(payloads(&twice), ["2", "2", "5", "5"]);
}

#[test]
fn shutdown_replies_then_answers_parked_requests() {
    let mut h = Harness::new();
    h.login(1, "a");
    h.login(2, "b");
    let (parked, _) = h.submit(2, transfer(None, 30.0, &["q"]));
    let (id, outputs) = h.submit(1, Request::Shutdown);
    assert_eq!(reply_to(id, &outputs), Some(Reply::Empty));
    assert!(outputs.contains(&Output::Shutdown));
    h.engine.handle_shutdown(h.now);
    let outputs = h.drain();
    assert!(reply_to(parked, &outputs).is_some());
    // While connections drain, nothing parks any more.
    let (late, outputs) = h.submit(2, transfer(None, 30.0, &["q"]));
    assert!(reply_to(late, &outputs).is_some());
    assert_eq!(h.engine.poll_timeout(), None);
}

#[test]
fn mutations_are_marked_to_wait_for_sync_and_reads_are_not() {
    let mut h = Harness::new();
    h.login(1, "a");
    let flag = |outputs: &[Output]| {
        outputs.iter().find_map(|o| match o {
            Output::Reply { after_sync, .. } => Some(*after_sync),
            _ => None,
        })
    };
    let (_, outputs) = h.submit(1, Request::CreatePersistent("q".into()));
    assert_eq!(flag(&outputs), Some(true));
    let (_, outputs) = h.submit(1, send("q", "x", "r"));
    assert_eq!(flag(&outputs), Some(true));
    let (_, outputs) = h.submit(1, transfer(None, 0.0, &["q"]));
    assert_eq!(flag(&outputs), Some(false));
    let (_, outputs) = h.submit(1, Request::Diagnostics);
    assert_eq!(flag(&outputs), Some(false));
    let (_, outputs) = h.submit(1, Request::Ack(MessageId::new("q".into(), h.first_id())));
    assert_eq!(flag(&outputs), Some(true), "acks are strict by default");
}

#[test]
fn an_engine_without_a_journal_emits_no_changes_and_no_reply_waits_but_shutdown() {
    let mut h = Harness::new();
    h.engine = Engine::new(Config::default(), h.now).without_journal();
    h.login(1, "a");
    let (_, outputs) = h.submit(1, Request::CreatePersistent("q".into()));
    assert_eq!(sync_flag_and_events(&outputs), (Some(false), 0));
    let (_, outputs) = h.submit(1, send("q", "x", "r"));
    assert_eq!(sync_flag_and_events(&outputs), (Some(false), 0));
    let (_, outputs) = h.submit(1, Request::Ack(MessageId::new("q".into(), h.first_id())));
    assert_eq!(sync_flag_and_events(&outputs), (Some(false), 0));
    let (_, outputs) = h.submit(1, send("q", "y", "r"));
    assert_eq!(sync_flag_and_events(&outputs), (Some(false), 0));
    // The state changed all the same.
    assert_eq!(h.engine.store().message_count(), 1);
    let (_, outputs) = h.submit(1, Request::Shutdown);
    assert_eq!(sync_flag_and_events(&outputs), (Some(true), 0));
}

#[test]
fn transient_changes_and_lazy_acks_do_not_wait_for_sync() {
    let mut h = Harness::with_config(Config {
        ack_sync: AckSync::Lazy,
        ..Config::default()
    });
    h.login(1, "a");
    let (_, outputs) = h.submit(1, Request::CreateTransient(Some("t".into())));
    assert_eq!(sync_flag_and_events(&outputs), (Some(false), 0));
    let (_, outputs) = h.submit(1, Request::CreateTransient(None));
    assert_eq!(sync_flag_and_events(&outputs), (Some(false), 0));
    let (_, outputs) = h.submit(1, send("t", "x", "r"));
    assert_eq!(sync_flag_and_events(&outputs), (Some(false), 0));
    let (_, outputs) = h.submit(
        1,
        Request::Ack(MessageId::new("t".into(), h.first_id() + 1)),
    );
    assert_eq!(sync_flag_and_events(&outputs), (Some(false), 0));
    let (_, outputs) = h.submit(1, Request::Destroy("t".into()));
    assert_eq!(sync_flag_and_events(&outputs), (Some(false), 0));
    assert!(h.engine.store().queue(&"t".into()).is_none());
    // The same name made persistent: its changes are journalled and wait again…
    let (_, outputs) = h.submit(1, Request::CreatePersistent("t".into()));
    assert_eq!(sync_flag_and_events(&outputs), (Some(true), 1));
    let (_, outputs) = h.submit(1, send("t", "y", "r"));
    assert_eq!(sync_flag_and_events(&outputs), (Some(true), 1));
    // …and so does a CreateTransient that finds it.
    let (_, outputs) = h.submit(1, Request::CreateTransient(Some("t".into())));
    assert_eq!(sync_flag_and_events(&outputs), (Some(true), 0));
    // A lazy ack is journalled but does not wait.
    let Reply::Transfer(transfer) = h.call(1, transfer(None, 0.0, &["t"])) else {
        panic!("no transfer")
    };
    let (id, _) = transfer.messages[0].clone();
    let (_, outputs) = h.submit(1, Request::Ack(id));
    assert_eq!(sync_flag_and_events(&outputs), (Some(false), 1));
}
