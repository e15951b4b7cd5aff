//! Stores kept out of the journal for a few milliseconds, in the hope that their Ack comes
//! first (issue 20: durability costs only what it buys).
//!
//! In the toolstack's RPC pattern a request to a persistent queue is taken by a waiting
//! service at once and acked a millisecond or two later, after the service has sent its
//! response. Journalling the request's store costs a sync; journalling its Ack then costs a
//! second one, and the OCaml service waits for that second sync on its one shared reply
//! connection, so every sync serialises the whole service. A store still held here when its
//! Ack arrives is simply dropped: neither is ever written, no crash can bring the message back
//! (all a strict Ack promises), and nothing at all waits for the disk.
//!
//! Only a Send waits: its 200 (protocol.md part A.8: the change is on disk) is held too, until
//! either its store is durable or its message has been acked (then the durable state already
//! is what it would be after the store and the Ack). The replies of every other request are
//! unchanged. A store is held only into a queue that saw an Ack within
//! [`RECENT_ACK_WINDOW`] (a consumer that acks is there) and for at most [`HOLD_MAX`]; then it
//! joins the next batch like any other event. For a caller that waits for the response of its
//! request anyway (every RPC client), the hold costs nothing: the response comes before the
//! Ack that releases the 200.
//!
//! Holding changes the order in which stores reach the journal, which is safe because the only
//! events a store's replay depends on are about its own queue: an Ack of the same message (it
//! withdraws the store instead) and the queue's creation and removal. The owner puts a
//! queue's held stores into the batch before any other event of that queue
//! ([`HeldStores::take_queue`]), so within one queue the journal keeps the engine's order.
//! Message ids stay safe without the stores: the journal's id floors cover them
//! (`store::ID_RESERVE`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::{Event, RequestId};
use crate::protocol::{QueueName, Reply};

/// The longest a store is kept out of the journal waiting for its Ack.
pub(crate) const HOLD_MAX: Duration = Duration::from_millis(5);

/// A queue whose last Ack is at most this old has a consumer worth holding its stores for.
pub(crate) const RECENT_ACK_WINDOW: Duration = Duration::from_secs(1);

/// Held stores at most: each has a Send waiting for its reply, so this is bounded by the
/// connections already; the cap keeps a flood of Sends from making the scans long.
const HELD_MAX: usize = 4096;

/// A Send's reply held with its store: the request, the reply, and the batch holding the
/// events emitted before it (which must be durable before the reply leaves, as for any
/// change).
pub(crate) type HeldReply = (RequestId, Reply, u64);

/// One store kept out of the journal.
struct Held {
    /// The `MessageStored` event.
    event: Event,
    queue: QueueName,
    /// When it must join a batch.
    due: Instant,
    /// The Send's reply, once the engine gave it.
    reply: Option<HeldReply>,
}

/// A store taken back out of [`HeldStores`] to be journalled, with its Send's reply if held.
pub(crate) struct Released {
    pub(crate) event: Event,
    pub(crate) reply: Option<HeldReply>,
}

/// The stores held, by message index (ids grow with time, so this is also the order of their
/// deadlines), and when each persistent queue last saw an Ack.
#[derive(Default)]
pub(crate) struct HeldStores {
    held: BTreeMap<i64, Held>,
    last_ack: HashMap<QueueName, Instant>,
}

impl HeldStores {
    /// Keeps `event` if it is a `MessageStored` worth holding at `now` (its queue's consumer
    /// acked recently and the cap is not reached); otherwise gives it back.
    pub(crate) fn offer(&mut self, event: Event, now: Instant) -> Result<i64, Event> {
        let Event::MessageStored { id, .. } = &event else {
            return Err(event);
        };
        let acked_recently = self
            .last_ack
            .get(&id.queue)
            .is_some_and(|&at| now.saturating_duration_since(at) <= RECENT_ACK_WINDOW);
        if !acked_recently || self.held.len() >= HELD_MAX {
            return Err(event);
        }
        let (index, queue) = (id.index, id.queue.clone());
        self.held.insert(
            index,
            Held {
                event,
                queue,
                due: now + HOLD_MAX,
                reply: None,
            },
        );
        Ok(index)
    }

    /// Attaches the Send's reply to the store of message `index`; gives the reply back if that
    /// store is no longer held.
    pub(crate) fn attach_reply(&mut self, index: i64, reply: HeldReply) -> Result<(), HeldReply> {
        match self.held.get_mut(&index) {
            Some(held) if held.reply.is_none() => {
                held.reply = Some(reply);
                Ok(())
            }
            _ => Err(reply),
        }
    }

    /// Notes an Ack of message `index` in `queue` at `now`. If its store is held, it is
    /// dropped: returns `Some` with the Send's reply (if given yet), to release.
    pub(crate) fn acked(
        &mut self,
        queue: &QueueName,
        index: i64,
        now: Instant,
    ) -> Option<Option<HeldReply>> {
        match self.last_ack.get_mut(queue) {
            Some(at) => *at = now,
            None => {
                self.last_ack.insert(queue.clone(), now);
            }
        }
        if self.held.get(&index).is_none_or(|held| held.queue != *queue) {
            return None;
        }
        self.held.remove(&index).map(|held| held.reply)
    }

    /// Takes every store held for `queue` (in order), which must reach the journal before
    /// the event about to be journalled for that queue; a removed queue is forgotten.
    pub(crate) fn take_queue(&mut self, queue: &QueueName, removed: bool) -> Vec<Released> {
        if removed {
            self.last_ack.remove(queue);
        }
        if !self.held.values().any(|held| held.queue == *queue) {
            return Vec::new();
        }
        let indices: Vec<i64> = self
            .held
            .iter()
            .filter(|(_, held)| held.queue == *queue)
            .map(|(&index, _)| index)
            .collect();
        indices
            .into_iter()
            .filter_map(|index| self.held.remove(&index))
            .map(Held::released)
            .collect()
    }

    /// Takes the store of message `index` out of the hold, if held.
    pub(crate) fn take(&mut self, index: i64) -> Option<Released> {
        self.held.remove(&index).map(Held::released)
    }

    /// Takes the stores whose hold ended by `now`, in order.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Released> {
        let mut due = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if entry.get().due > now {
                break;
            }
            due.push(entry.remove().released());
        }
        due
    }

    /// Takes every store held, in order (the journal is closing, or failing).
    pub(crate) fn take_all(&mut self) -> Vec<Released> {
        std::mem::take(&mut self.held)
            .into_values()
            .map(Held::released)
            .collect()
    }

    /// When the oldest hold ends, if any store is held.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.held.first_key_value().map(|(_, held)| held.due)
    }
}

impl Held {
    fn released(self) -> Released {
        Released {
            event: self.event,
            reply: self.reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Timestamp;
    use crate::protocol::{Message, MessageId, MessageKind, Origin};

    fn stored(queue: &str, index: i64) -> Event {
        Event::MessageStored {
            id: MessageId {
                queue: QueueName::from(queue),
                index,
            },
            origin: Origin::Anonymous(0),
            time: Timestamp::default(),
            message: Message {
                payload: bytes::Bytes::from_static(b"x"),
                kind: MessageKind::Request {
                    reply_to: QueueName::from("reply"),
                },
            },
        }
    }

    fn reply(request: u64) -> HeldReply {
        (RequestId(request), Reply::Empty, 0)
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_queue_acked_recently_holds_its_stores() {
        let mut held = HeldStores::default();
        let now = Instant::now();
        assert!(held.offer(stored("q", 1), now).is_err(), "no Ack seen yet");
        assert!(held.acked(&QueueName::from("q"), 0, now).is_none());
        assert_eq!(held.offer(stored("q", 2), now).ok(), Some(2));
        assert!(held.offer(stored("other", 3), now).is_err());
        let later = now + RECENT_ACK_WINDOW + Duration::from_millis(1);
        assert!(held.offer(stored("q", 4), later).is_err(), "the Ack is too old");
        assert!(held
            .offer(
                Event::MessageAcked {
                    id: MessageId {
                        queue: QueueName::from("q"),
                        index: 2
                    }
                },
                now
            )
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_drops_its_held_store_and_gives_back_the_reply() {
        let mut held = HeldStores::default();
        let now = Instant::now();
        let q = QueueName::from("q");
        held.acked(&q, 0, now);
        held.offer(stored("q", 5), now).unwrap();
        held.offer(stored("q", 6), now).unwrap();
        held.attach_reply(5, reply(50)).unwrap();
        assert!(held.attach_reply(7, reply(70)).is_err(), "not held");
        let dropped = held.acked(&q, 5, now).expect("held");
        assert_eq!(dropped.map(|(r, _, _)| r), Some(RequestId(50)));
        assert!(
            held.acked(&QueueName::from("other"), 6, now).is_none(),
            "another queue's index"
        );
        assert_eq!(held.acked(&q, 6, now).expect("held"), None, "no reply yet");
        assert_eq!(held.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn holds_end_in_order_at_their_deadline_or_with_their_queue() {
        let mut held = HeldStores::default();
        let start = Instant::now();
        let (a, b) = (QueueName::from("a"), QueueName::from("b"));
        held.acked(&a, 0, start);
        held.acked(&b, 0, start);
        held.offer(stored("a", 1), start).unwrap();
        held.offer(stored("b", 2), start).unwrap();
        let later = start + Duration::from_millis(1);
        held.offer(stored("a", 3), later).unwrap();
        held.offer(stored("b", 4), later).unwrap();
        assert_eq!(held.next_due(), Some(start + HOLD_MAX));
        let index = |r: &Released| match &r.event {
            Event::MessageStored { id, .. } => id.index,
            _ => unreachable!(),
        };
        let of_a: Vec<i64> = held.take_queue(&a, false).iter().map(index).collect();
        assert_eq!(of_a, [1, 3]);
        assert!(held.take_due(start + HOLD_MAX - Duration::from_micros(1)).is_empty());
        let due: Vec<i64> = held.take_due(start + HOLD_MAX).iter().map(index).collect();
        assert_eq!(due, [2]);
        let rest: Vec<i64> = held.take_all().iter().map(index).collect();
        assert_eq!(rest, [4]);
        assert_eq!(held.next_due(), None);
        held.take_queue(&a, true);
        assert!(held.offer(stored("a", 9), later).is_err(), "a removed queue is forgotten");
    }
}
