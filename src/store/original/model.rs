//! The original switch's durable state as its `switch/q.ml` keeps it, read from
//! `queues.sexp`, and the redo-log operations applied to it exactly as the original's
//! `Q.do_op` applies them when it replays its log at start-up.
//!
//! `queues.sexp` is `Sexp.to_string` of
//! `((queues ((NAME ((q ((ID ENTRY) …)) (name NAME) (length N) (owner OPTION) (waiter …))) …))
//! (by_owner …))`, where ENTRY is `((origin (Name S)) (time NS) (message ((payload P)
//! (kind (Request R)))))` or with `(kind (Response (Q ID)))`. A redo-log item is one `Op.t`:
//! `(Directory (Add OWNER-OPTION NAME))`, `(Directory (Remove NAME))`, `(Ack (Q ID))` or
//! `(Send ORIGIN Q ID MESSAGE)`.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::decode::{
    atom, int64, list, option, record, required, tuple, variant, Decoded, Mismatch,
};
use crate::protocol::{Message, MessageId, MessageKind, Origin, QueueName, SessionToken};
use crate::sexp::Sexp;

/// One queue of the original.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct OriginalQueue {
    /// The owning session of a transient queue.
    pub(crate) owner: Option<SessionToken>,
    /// The messages not yet acked, by the original's per-queue id.
    pub(crate) messages: BTreeMap<i64, (Origin, Message)>,
}

/// The original's queues by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct OriginalState {
    pub(crate) queues: BTreeMap<QueueName, OriginalQueue>,
}

/// One operation of the original's redo-log (`Q.Op.t`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    /// `Directory (Add (owner, name))`: creates the queue unless it exists.
    Add {
        owner: Option<SessionToken>,
        name: QueueName,
    },
    /// `Directory (Remove name)`: removes the queue and its messages.
    Remove { name: QueueName },
    /// `Ack (queue, id)`: deletes the message if it is there.
    Ack { id: MessageId },
    /// `Send (origin, queue, id, message)`: stores the message if the queue exists,
    /// replacing one with the same id (as the original's map insert does).
    Send {
        origin: Origin,
        id: MessageId,
        message: Message,
    },
}

impl OriginalState {
    /// Reads the one s-expression of `queues.sexp`.
    pub(crate) fn from_sexp(sexp: &Sexp) -> Decoded<OriginalState> {
        let [queues, by_owner] = record(sexp, "the set of queues", ["queues", "by_owner"])?;
        let queues = required(sexp, queues, "the set of queues", "queues")?;
        // The owner index is derived from the queues' owner fields; only its shape is checked.
        list(
            required(sexp, by_owner, "the set of queues", "by_owner")?,
            "by_owner",
        )?;
        let mut state = OriginalState::default();
        for binding in list(queues, "the queues")? {
            let [name, queue] = tuple::<2>(binding, "a queue binding (NAME QUEUE)")?;
            let name = QueueName::new(atom(name, "a queue name")?);
            // A name bound twice: the original's map keeps the last binding.
            state
                .queues
                .insert(name.clone(), queue_from_sexp(&name, queue)?);
        }
        Ok(state)
    }

    /// Applies one redo-log operation as the original's `Q.do_op` does.
    pub(crate) fn apply(&mut self, op: Op) {
        match op {
            Op::Add { owner, name } => {
                self.queues.entry(name).or_insert(OriginalQueue {
                    owner,
                    messages: BTreeMap::new(),
                });
            }
            Op::Remove { name } => {
                self.queues.remove(&name);
            }
            Op::Ack { id } => {
                if let Some(queue) = self.queues.get_mut(&id.queue) {
                    queue.messages.remove(&id.index);
                }
            }
            Op::Send {
                origin,
                id,
                message,
            } => {
                if let Some(queue) = self.queues.get_mut(&id.queue) {
                    queue.messages.insert(id.index, (origin, message));
                }
            }
        }
    }
}

impl Op {
    /// Reads one redo-log item.
    pub(crate) fn from_sexp(sexp: &Sexp) -> Decoded<Op> {
        let (tag, arguments) = variant(sexp, "a redo-log operation")?;
        match (tag.as_str(), arguments) {
            ("Directory", [directory]) => {
                let (tag, arguments) = variant(directory, "a directory operation")?;
                match (tag.as_str(), arguments) {
                    ("Add", [owner, name]) => Ok(Op::Add {
                        owner: option(owner, "the owner of a new queue")?
                            .map(|owner| session(owner, "the owner of a new queue"))
                            .transpose()?,
                        name: queue_name(name)?,
                    }),
                    ("Remove", [name]) => Ok(Op::Remove {
                        name: queue_name(name)?,
                    }),
                    _ => unexpected(directory, "a directory operation (Add or Remove)"),
                }
            }
            ("Ack", [id]) => Ok(Op::Ack {
                id: message_id(id)?,
            }),
            ("Send", [origin, queue, id, message]) => Ok(Op::Send {
                origin: origin_from_sexp(origin)?,
                id: MessageId::new(queue_name(queue)?, int64(id, "a message id")?),
                message: message_from_sexp(message)?,
            }),
            _ => unexpected(sexp, "a redo-log operation (Directory, Ack or Send)"),
        }
    }
}

fn unexpected<T>(sexp: &Sexp, what: &str) -> Decoded<T> {
    Err(Mismatch {
        at: sexp.at(),
        reason: format!("expected {what}"),
    })
}

fn queue_name(sexp: &Sexp) -> Decoded<QueueName> {
    Ok(QueueName::new(atom(sexp, "a queue name")?))
}

fn session(sexp: &Sexp, what: &str) -> Decoded<SessionToken> {
    Ok(SessionToken::new(atom(sexp, what)?))
}

/// A `message_id`: `(QUEUE ID)`.
fn message_id(sexp: &Sexp) -> Decoded<MessageId> {
    let [queue, index] = tuple::<2>(sexp, "a message id (QUEUE N)")?;
    Ok(MessageId::new(
        queue_name(queue)?,
        int64(index, "a message id")?,
    ))
}

fn queue_from_sexp(name: &QueueName, sexp: &Sexp) -> Decoded<OriginalQueue> {
    let what = format!("queue {}", String::from_utf8_lossy(name.as_bytes()));
    let [q, owner] = record(sexp, &what, ["q", "owner"])?;
    let owner = option(required(sexp, owner, &what, "owner")?, "a queue's owner")?
        .map(|owner| session(owner, "a queue's owner"))
        .transpose()?;
    let mut messages = BTreeMap::new();
    for binding in list(required(sexp, q, &what, "q")?, "a queue's messages")? {
        let [id, entry] = tuple::<2>(binding, "a message binding (ID ENTRY)")?;
        let id = int64(id, "a message id")?;
        messages.insert(id, entry_from_sexp(entry)?);
    }
    Ok(OriginalQueue { owner, messages })
}

/// An `Entry.t`; its `time` (ns on the original's clock since its process started) has no
/// meaning outside that process, so it is not kept.
fn entry_from_sexp(sexp: &Sexp) -> Decoded<(Origin, Message)> {
    let [origin, message] = record(sexp, "a message entry", ["origin", "message"])?;
    Ok((
        origin_from_sexp(required(sexp, origin, "a message entry", "origin")?)?,
        message_from_sexp(required(sexp, message, "a message entry", "message")?)?,
    ))
}

/// An `origin`: `(Name SESSION)` or `(Anonymous CONNECTION)`. The original's connection ids
/// are decimal numbers; one that is not becomes 0 (an origin is only shown by diagnostics).
fn origin_from_sexp(sexp: &Sexp) -> Decoded<Origin> {
    match variant(sexp, "a message origin")? {
        (tag, [name]) if tag == "Name" => Ok(Origin::Name(session(name, "a sender's session")?)),
        (tag, [connection]) if tag == "Anonymous" => Ok(Origin::Anonymous(
            int64(connection, "a connection id").unwrap_or(0),
        )),
        _ => unexpected(sexp, "a message origin ((Name S) or (Anonymous C))"),
    }
}

/// A `Message.t`: `((payload P) (kind KIND))`.
fn message_from_sexp(sexp: &Sexp) -> Decoded<Message> {
    let [payload, kind] = record(sexp, "a message", ["payload", "kind"])?;
    let payload = atom(
        required(sexp, payload, "a message", "payload")?,
        "a payload",
    )?;
    let kind = required(sexp, kind, "a message", "kind")?;
    let kind = match variant(kind, "a message kind")? {
        (tag, [reply_to]) if tag == "Request" => MessageKind::Request {
            reply_to: queue_name(reply_to)?,
        },
        (tag, [request]) if tag == "Response" => MessageKind::Response {
            request: message_id(request)?,
        },
        _ => return unexpected(kind, "a message kind ((Request R) or (Response (Q N)))"),
    };
    Ok(Message {
        payload: Bytes::copy_from_slice(payload),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sexp::parse_binary;

    fn one(text: &str) -> Sexp {
        parse_binary(text).expect("valid").remove(0)
    }

    fn name(text: &str) -> QueueName {
        QueueName::new(text)
    }

    #[test]
    fn every_operation_the_original_writes() {
        let ops = [
            "(Directory(Add()q))",
            "(Directory(Add(owner:1)t))",
            "(Directory(Remove q))",
            "(Ack(q 3))",
            "(Send(Name s:1)q 3((payload\"a\\000\\255\")(kind(Request r))))",
            "(Send(Anonymous 12)q 4((payload p)(kind(Response(q 3)))))",
        ]
        .map(|text| Op::from_sexp(&one(text)).expect(text));
        assert_eq!(
            ops[0],
            Op::Add {
                owner: None,
                name: name("q")
            }
        );
        assert_eq!(
            ops[1],
            Op::Add {
                owner: Some(SessionToken::new("owner:1")),
                name: name("t")
            }
        );
        assert_eq!(ops[2], Op::Remove { name: name("q") });
        assert_eq!(
            ops[3],
            Op::Ack {
                id: MessageId::new(name("q"), 3)
            }
        );
        assert_eq!(
            ops[4],
            Op::Send {
                origin: Origin::Name(SessionToken::new("s:1")),
                id: MessageId::new(name("q"), 3),
                message: Message {
                    payload: Bytes::from_static(b"a\0\xff"),
                    kind: MessageKind::Request {
                        reply_to: name("r")
                    },
                },
            }
        );
        assert_eq!(
            ops[5],
            Op::Send {
                origin: Origin::Anonymous(12),
                id: MessageId::new(name("q"), 4),
                message: Message {
                    payload: Bytes::from_static(b"p"),
                    kind: MessageKind::Response {
                        request: MessageId::new(name("q"), 3)
                    },
                },
            }
        );
    }

    #[test]
    fn operations_apply_as_the_original_replays_them() {
        let mut state = OriginalState::default();
        let send = |queue: &str, index, payload: &'static [u8]| Op::Send {
            origin: Origin::Anonymous(1),
            id: MessageId::new(name(queue), index),
            message: Message {
                payload: Bytes::from_static(payload),
                kind: MessageKind::Request {
                    reply_to: name("r"),
                },
            },
        };
        state.apply(send("q", 0, b"to a missing queue: dropped"));
        state.apply(Op::Add {
            owner: None,
            name: name("q"),
        });
        state.apply(send("q", 0, b"first"));
        state.apply(send("q", 1, b"second"));
        state.apply(send("q", 0, b"replaces first"));
        state.apply(Op::Add {
            owner: Some(SessionToken::new("x")),
            name: name("q"),
        });
        state.apply(Op::Ack {
            id: MessageId::new(name("q"), 1),
        });
        state.apply(Op::Ack {
            id: MessageId::new(name("q"), 7),
        });
        let queue = &state.queues[&name("q")];
        assert_eq!(
            queue.owner, None,
            "an Add of an existing queue changes nothing"
        );
        assert_eq!(queue.messages.keys().collect::<Vec<_>>(), [&0]);
        assert_eq!(&queue.messages[&0].1.payload[..], b"replaces first");
        state.apply(Op::Remove { name: name("q") });
        assert!(state.queues.is_empty());
    }

    #[test]
    fn a_snapshot_as_the_original_writes_it() {
        let text = "((queues((t((q((0((origin(Name svc))(time 5)(message((payload x)(kind(Response(q 1)))))))))(name t)(length 1)(owner(caller))(waiter((next_id 0)))))(q((q((1((origin(Name c))(time 6)(message((payload\"a b\")(kind(Request t))))))))(name q)(length 1)(owner())(waiter((next_id 2)))))))(by_owner((caller(t)))))";
        let state = OriginalState::from_sexp(&one(text)).expect("a snapshot");
        assert_eq!(state.queues.len(), 2);
        let q = &state.queues[&name("q")];
        assert_eq!(q.owner, None);
        assert_eq!(&q.messages[&1].1.payload[..], b"a b");
        let t = &state.queues[&name("t")];
        assert_eq!(t.owner, Some(SessionToken::new("caller")));
        assert_eq!(
            t.messages[&0].1.kind,
            MessageKind::Response {
                request: MessageId::new(name("q"), 1)
            }
        );
    }

    #[test]
    fn a_damaged_snapshot_says_what_is_wrong() {
        let cases = [
            ("((queues()))", "the set of queues has no field by_owner"),
            ("((queues((q((q())(name q)))))(by_owner()))", "queue q has no field owner"),
            (
                "((queues((q((q((x((origin(Name c))(message((payload p)(kind(Request r))))))))(owner())))))(by_owner()))",
                "expected a message id (an int64), found \"x\"",
            ),
            (
                "((queues((q((q((1((origin(Name c))(message((payload p)(kind(Reply r))))))))(owner())))))(by_owner()))",
                "expected a message kind ((Request R) or (Response (Q N)))",
            ),
        ];
        for (text, reason) in cases {
            let error = OriginalState::from_sexp(&one(text)).expect_err(text);
            assert_eq!(error.reason, reason, "{text}");
        }
    }
}
