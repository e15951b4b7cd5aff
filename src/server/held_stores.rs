//! Stores kept out of the journal while their queue's consumer keeps acking (at most
//! [`HOLD_MAX`]), in the hope that their own Ack comes first (issue 20: durability costs only
//! what it buys).
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
//! [`RECENT_ACK_WINDOW`] (a consumer that acks is there), and only while that consumer keeps
//! working: the hold ends once the queue has had no Ack for the *quiet window* (at least
//! [`QUIET_MIN`], and twice the recent sync time: the owner's `Durability::hold_quiet`) and in any
//! case after [`HOLD_MAX`]; the store then joins the next batch like any other event. For a
//! caller that waits for the response of its request anyway (every RPC client), the hold
//! costs nothing: the response comes before the Ack that releases the 200. A Send nobody
//! waits on the response of waits at most [`HOLD_MAX`] longer for its 200.
//!
//! Why the hold follows the consumer rather than a fixed time: a store written after all
//! makes its Ack wait for a sync, and the OCaml service's Acks, one at a time, then each wait
//! for one; while it works through such Acks the requests behind them age. A fixed hold
//! shorter than that backlog lets them be written too, and the service never catches up (on
//! a disk with 4 ms syncs, a 5 ms hold was measured at 1.5 syncs per RPC, worse than no hold).
//! Ending the hold only when the consumer goes quiet lets the backlog drain.
//!
//! Holding changes the order in which stores reach the journal, which is safe because the only
//! events a store's replay depends on are about its own queue: an Ack of the same message (it
//! withdraws the store instead) and the queue's creation and removal. The owner puts a
//! queue's held stores into the batch before any other event of that queue
//! ([`HeldStores::take_queue`]), so within one queue the journal keeps the engine's order.
//! Message ids stay safe without the stores: the journal's id floors cover them
//! (`store::ID_RESERVE`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::{Event, RequestId};
use crate::protocol::{QueueName, Reply};

/// The longest a store is kept out of the journal waiting for its Ack.
pub(crate) const HOLD_MAX: Duration = Duration::from_millis(200);

/// The shortest quiet window: a queue with held stores and no Ack for this long (or for
/// twice the recent sync time, if longer) has a consumer that is not coming for them soon.
pub(crate) const QUIET_MIN: Duration = Duration::from_millis(5);

/// A queue whose last Ack is at most this old has a consumer worth holding its stores for.
pub(crate) const RECENT_ACK_WINDOW: Duration = Duration::from_secs(1);

/// Held stores at most: each has a Send waiting for its reply, so this is bounded by the
/// connections already; the cap bounds the work of a flood of Sends.
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
    /// When it was held.
    since: Instant,
    /// The Send's reply, once the engine gave it.
    reply: Option<HeldReply>,
}

/// A store taken back out of [`HeldStores`] to be journalled, with its Send's reply if held.
pub(crate) struct Released {
    pub(crate) event: Event,
    pub(crate) reply: Option<HeldReply>,
}

/// The stores held, by message index, and when each persistent queue last saw an Ack.
#[derive(Default)]
pub(crate) struct HeldStores {
    held: BTreeMap<i64, Held>,
    /// The indices held, per queue holding any (ids grow with time: the first is the oldest).
    by_queue: HashMap<QueueName, BTreeSet<i64>>,
    last_ack: HashMap<QueueName, Instant>,
}

impl HeldStores {
    /// Whether a store into `queue` is worth holding at `now`: its consumer acked recently
    /// and the cap is not reached.
    pub(crate) fn wants(&self, queue: &QueueName, now: Instant) -> bool {
        let acked_recently = self
            .last_ack
            .get(queue)
            .is_some_and(|&at| now.saturating_duration_since(at) <= RECENT_ACK_WINDOW);
        acked_recently && self.held.len() < HELD_MAX
    }

    /// Holds `event`, the `MessageStored` of message `index` into `queue`, from `now`.
    pub(crate) fn hold(&mut self, queue: &QueueName, index: i64, event: Event, now: Instant) {
        self.by_queue
            .entry(queue.clone())
            .or_default()
            .insert(index);
        self.held.insert(
            index,
            Held {
                event,
                queue: queue.clone(),
                since: now,
                reply: None,
            },
        );
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
        if self
            .held
            .get(&index)
            .is_none_or(|held| held.queue != *queue)
        {
            return None;
        }
        self.take(index).map(|released| released.reply)
    }

    /// Takes the store of message `index` out of the hold, if held.
    pub(crate) fn take(&mut self, index: i64) -> Option<Released> {
        let held = self.held.remove(&index)?;
        if let Some(indices) = self.by_queue.get_mut(&held.queue) {
            indices.remove(&index);
            if indices.is_empty() {
                self.by_queue.remove(&held.queue);
            }
        }
        Some(held.released())
    }

    /// Takes every store held for `queue` (in order), which must reach the journal before
    /// the event about to be journalled for that queue; a removed queue is forgotten.
    pub(crate) fn take_queue(&mut self, queue: &QueueName, removed: bool) -> Vec<Released> {
        if removed {
            self.last_ack.remove(queue);
        }
        let Some(indices) = self.by_queue.remove(queue) else {
            return Vec::new();
        };
        indices
            .into_iter()
            .filter_map(|index| self.held.remove(&index))
            .map(Held::released)
            .collect()
    }

    /// When `queue`'s oldest hold, from `since`, ends with quiet window `quiet`.
    fn due(&self, queue: &QueueName, since: Instant, quiet: Duration) -> Instant {
        let last_ack = self.last_ack.get(queue).copied().unwrap_or(since);
        (since + HOLD_MAX).min(since.max(last_ack) + quiet)
    }

    /// Takes, in order, the stores whose hold ended by `now`: held [`HOLD_MAX`], or their
    /// queue has had no Ack for `quiet` (nor since they were held).
    pub(crate) fn take_due(&mut self, now: Instant, quiet: Duration) -> Vec<Released> {
        let mut due_indices = Vec::new();
        for (queue, indices) in &self.by_queue {
            for &index in indices {
                let since = self.held[&index].since;
                if self.due(queue, since, quiet) > now {
                    break;
                }
                due_indices.push(index);
            }
        }
        due_indices.sort_unstable();
        due_indices
            .into_iter()
            .filter_map(|index| self.take(index))
            .collect()
    }

    /// Takes every store held, in order (the journal is closing, or failing).
    pub(crate) fn take_all(&mut self) -> Vec<Released> {
        self.by_queue.clear();
        std::mem::take(&mut self.held)
            .into_values()
            .map(Held::released)
            .collect()
    }

    /// When the next hold ends with quiet window `quiet`, if any store is held.
    pub(crate) fn next_due(&self, quiet: Duration) -> Option<Instant> {
        self.by_queue
            .iter()
            .filter_map(|(queue, indices)| {
                let oldest = indices.first()?;
                Some(self.due(queue, self.held[oldest].since, quiet))
            })
            .min()
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

    /// Holds the store if it is wanted, as `Durability::persist` does.
    fn offer(held: &mut HeldStores, queue: &str, index: i64, now: Instant) -> bool {
        let name = QueueName::from(queue);
        let wanted = held.wants(&name, now);
        if wanted {
            held.hold(&name, index, stored(queue, index), now);
        }
        wanted
    }

    fn reply(request: u64) -> HeldReply {
        (RequestId(request), Reply::Empty, 0)
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_queue_acked_recently_holds_its_stores() {
        let mut held = HeldStores::default();
        let now = Instant::now();
        assert!(!offer(&mut held, "q", 1, now), "no Ack seen yet");
        assert!(held.acked(&QueueName::from("q"), 0, now).is_none());
        assert!(offer(&mut held, "q", 2, now));
        assert!(!offer(&mut held, "other", 3, now));
        let later = now + RECENT_ACK_WINDOW + Duration::from_millis(1);
        assert!(!offer(&mut held, "q", 4, later), "the Ack is too old");
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_drops_its_held_store_and_gives_back_the_reply() {
        let mut held = HeldStores::default();
        let now = Instant::now();
        let q = QueueName::from("q");
        held.acked(&q, 0, now);
        assert!(offer(&mut held, "q", 5, now));
        assert!(offer(&mut held, "q", 6, now));
        held.attach_reply(5, reply(50)).unwrap();
        assert!(held.attach_reply(7, reply(70)).is_err(), "not held");
        let dropped = held.acked(&q, 5, now).expect("held");
        assert_eq!(dropped.map(|(r, _, _)| r), Some(RequestId(50)));
        assert!(
            held.acked(&QueueName::from("other"), 6, now).is_none(),
            "another queue's index"
        );
        assert_eq!(held.acked(&q, 6, now).expect("held"), None, "no reply yet");
        assert_eq!(held.next_due(QUIET_MIN), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_lasts_while_the_queue_sees_acks_and_never_past_the_maximum() {
        let mut held = HeldStores::default();
        let start = Instant::now();
        let ms = Duration::from_millis;
        let (a, b) = (QueueName::from("a"), QueueName::from("b"));
        held.acked(&a, 0, start);
        held.acked(&b, 0, start);
        assert!(offer(&mut held, "a", 1, start));
        assert!(offer(&mut held, "b", 2, start));
        assert!(offer(&mut held, "a", 3, start + ms(1)));
        assert_eq!(held.next_due(QUIET_MIN), Some(start + QUIET_MIN));
        // Queue a's consumer keeps acking (other messages): its holds go on; b's end.
        held.acked(&a, 0, start + ms(4));
        assert_eq!(held.next_due(QUIET_MIN), Some(start + QUIET_MIN), "b's");
        let due: Vec<i64> = held
            .take_due(start + QUIET_MIN, QUIET_MIN)
            .iter()
            .map(index)
            .collect();
        assert_eq!(due, [2]);
        assert_eq!(held.next_due(QUIET_MIN), Some(start + ms(4) + QUIET_MIN));
        // A longer quiet window (slow syncs) keeps them longer.
        assert!(held.take_due(start + ms(10), ms(20)).is_empty());
        let mut at = start;
        while at < start + HOLD_MAX {
            at += ms(4);
            held.acked(&a, 0, at);
        }
        let due: Vec<i64> = held
            .take_due(start + HOLD_MAX, QUIET_MIN)
            .iter()
            .map(index)
            .collect();
        assert_eq!(due, [1], "held the maximum, acks or not");
        let due: Vec<i64> = held
            .take_due(start + ms(1) + HOLD_MAX, QUIET_MIN)
            .iter()
            .map(index)
            .collect();
        assert_eq!(due, [3]);
        assert_eq!(held.next_due(QUIET_MIN), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_event_or_the_end_takes_its_holds_in_order() {
        let mut held = HeldStores::default();
        let start = Instant::now();
        let (a, b) = (QueueName::from("a"), QueueName::from("b"));
        held.acked(&a, 0, start);
        held.acked(&b, 0, start);
        for (queue, index) in [("a", 1), ("b", 2), ("a", 3), ("b", 4)] {
            assert!(offer(&mut held, queue, index, start));
        }
        let of_a: Vec<i64> = held.take_queue(&a, false).iter().map(index).collect();
        assert_eq!(of_a, [1, 3]);
        assert_eq!(held.take(2).as_ref().map(index), Some(2));
        let rest: Vec<i64> = held.take_all().iter().map(index).collect();
        assert_eq!(rest, [4]);
        assert_eq!(held.next_due(QUIET_MIN), None);
        held.take_queue(&a, true);
        assert!(
            !offer(&mut held, "a", 9, start),
            "a removed queue is forgotten"
        );
    }

    fn index(released: &Released) -> i64 {
        match &released.event {
            Event::MessageStored { id, .. } => id.index,
            _ => unreachable!("only stores are held"),
        }
    }
}
