//! The batches submitted to the journal and not yet taken by the writer, shared by the
//! driver (which adds to it) and the writer (which takes from its front).
//!
//! It exists so that an Ack can *withdraw* the store of its message while that store is
//! still only here: a message stored and acked before the writer picks it up need never be
//! written at all, and the Ack then has nothing to wait for. In the real clients' pattern a
//! service acks each request on one shared connection, one Ack at a time, so an Ack that
//! waits for a sync holds up every later response. While the writer is busy with the
//! previous group commit (on a slow disk, most of the time), a request's store can still be
//! here when a quick service acks it.
//!
//! What the writer has taken (being written, synced, or retried after a failure) is never
//! changed: only batches still in the inbox are.
//!
//! The inbox also says whether anything waits for its batches (*urgent*): a batch of lazy
//! Acks alone holds no reply back, so the writer lets it wait, up to
//! [`super::writer::DEFERRED_SYNC_MAX`], for the next batch that does, and both share one
//! sync instead of each paying its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::writer::Batch;
use crate::engine::Event;

/// Submitted batches waiting for the writer, in sequence order.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<Waiting>,
    /// Signalled when the inbox becomes urgent.
    urgent_now: Condvar,
}

#[derive(Debug, Default)]
struct Waiting {
    batches: VecDeque<Batch>,
    /// The batch (by sequence number) holding the `MessageStored` of each message index in
    /// `batches`.
    stored_in: HashMap<i64, u64>,
    /// A reply waits for a batch submitted and not yet synced: one pushed urgent, or any
    /// earlier one after [`Inbox::hurry`]. Cleared when the writer takes everything.
    urgent: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // A panic while holding the lock leaves the queue consistent (every change is one
        // push, pop or remove), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `batch` behind the others; `urgent`: a reply waits for it.
    pub(crate) fn push(&self, batch: Batch, urgent: bool) {
        let mut waiting = self.lock();
        for event in &batch.events {
            if let Event::MessageStored { id, .. } = event {
                waiting.stored_in.insert(id.index, batch.seq);
            }
        }
        waiting.batches.push_back(batch);
        if urgent {
            waiting.urgent = true;
            self.urgent_now.notify_one();
        }
    }

    /// A reply now waits for a batch already submitted (pushed, or taken by the writer and
    /// not yet synced): the writer must not defer its sync.
    pub(crate) fn hurry(&self) {
        self.lock().urgent = true;
        self.urgent_now.notify_one();
    }

    /// Whether a reply waits for what was submitted (see [`Inbox::hurry`]).
    pub(crate) fn is_urgent(&self) -> bool {
        self.lock().urgent
    }

    /// Blocks until the inbox is urgent or `max` has passed.
    pub(crate) fn wait_until_urgent(&self, max: Duration) {
        let deadline = Instant::now() + max;
        let mut waiting = self.lock();
        while !waiting.urgent {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            waiting = match self.urgent_now.wait_timeout(waiting, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Takes batches from the front into `taken` while their size hints keep `taken_bytes`
    /// under `bytes_max` (always at least one, if any waits). Returns whether the inbox was
    /// urgent; it stays so if batches are left.
    pub(crate) fn take(
        &self,
        taken: &mut Vec<Batch>,
        taken_bytes: &mut usize,
        bytes_max: usize,
    ) -> bool {
        let mut waiting = self.lock();
        let urgent = waiting.urgent;
        while *taken_bytes < bytes_max {
            let Some(batch) = waiting.batches.pop_front() else {
                break;
            };
            for event in &batch.events {
                if let Event::MessageStored { id, .. } = event {
                    waiting.stored_in.remove(&id.index);
                }
            }
            *taken_bytes += batch.size_hint();
            taken.push(batch);
        }
        if waiting.batches.is_empty() {
            waiting.urgent = false;
        }
        urgent
    }

    /// Removes the `MessageStored` of message `index` if its batch is still waiting here;
    /// returns whether it did. The batch itself stays (with its sequence number and id
    /// floor), so its completion still releases what waits for it.
    pub(crate) fn withdraw_stored(&self, index: i64) -> bool {
        let mut waiting = self.lock();
        let Some(seq) = waiting.stored_in.remove(&index) else {
            return false;
        };
        let Some(front) = waiting.batches.front().map(|b| b.seq) else {
            return false;
        };
        // Sequence numbers in the inbox are consecutive: the driver submits every one.
        let Some(batch) = usize::try_from(seq - front)
            .ok()
            .and_then(|at| waiting.batches.get_mut(at))
            .filter(|batch| batch.seq == seq)
        else {
            return false;
        };
        let position = batch.events.iter().position(
            |event| matches!(event, Event::MessageStored { id, .. } if id.index == index),
        );
        match position {
            Some(position) => {
                batch.events.remove(position);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Timestamp;
    use crate::protocol::{Message, MessageId, MessageKind, Origin, QueueName};

    fn stored(index: i64) -> Event {
        Event::MessageStored {
            id: MessageId {
                queue: QueueName::from("q"),
                index,
            },
            origin: Origin::Anonymous(0),
            time: Timestamp::default(),
            message: Message {
                payload: bytes::Bytes::from_static(b"x"),
                kind: MessageKind::Response {
                    request: MessageId {
                        queue: QueueName::from("r"),
                        index: 0,
                    },
                },
            },
        }
    }

    fn batch(seq: u64, events: Vec<Event>) -> Batch {
        Batch {
            seq,
            events,
            id_floor: 0,
        }
    }

    #[test]
    fn a_waiting_store_is_withdrawn_and_its_batch_kept() {
        let inbox = Inbox::default();
        inbox.push(batch(1, vec![stored(10), stored(11)]), true);
        inbox.push(batch(2, vec![stored(12)]), true);
        assert!(inbox.withdraw_stored(11));
        assert!(!inbox.withdraw_stored(11), "withdrawn once only");
        assert!(inbox.withdraw_stored(12));
        let (mut taken, mut bytes) = (Vec::new(), 0);
        assert!(inbox.take(&mut taken, &mut bytes, usize::MAX));
        assert_eq!(taken.iter().map(|b| b.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(taken[0].events, [stored(10)]);
        assert!(
            taken[1].events.is_empty(),
            "an emptied batch still completes"
        );
    }

    #[test]
    fn a_taken_store_is_never_withdrawn() {
        let inbox = Inbox::default();
        inbox.push(batch(1, vec![stored(10)]), true);
        inbox.push(batch(2, vec![stored(11)]), true);
        let (mut taken, mut bytes) = (Vec::new(), 0);
        // One batch fits the budget: the second stays.
        assert!(inbox.take(&mut taken, &mut bytes, 1));
        assert_eq!(taken.len(), 1);
        assert!(!inbox.withdraw_stored(10), "the writer has it");
        assert_eq!(taken[0].events, [stored(10)]);
        assert!(inbox.withdraw_stored(11));
        assert!(!inbox.withdraw_stored(99), "never stored");
    }

    #[test]
    fn urgency_lasts_until_everything_is_taken() {
        let inbox = Inbox::default();
        inbox.push(batch(1, vec![stored(10)]), false);
        assert!(!inbox.is_urgent(), "a deferrable batch alone");
        inbox.wait_until_urgent(Duration::from_millis(1));
        inbox.push(batch(2, vec![stored(11)]), true);
        assert!(inbox.is_urgent());
        inbox.wait_until_urgent(Duration::from_secs(30));
        let (mut taken, mut bytes) = (Vec::new(), 0);
        assert!(inbox.take(&mut taken, &mut bytes, 1), "was urgent");
        assert!(inbox.is_urgent(), "batch 2 is left");
        assert!(inbox.take(&mut taken, &mut bytes, usize::MAX));
        assert!(!inbox.is_urgent(), "all taken");
        // A reply waiting for a batch the writer has taken still hurries it.
        inbox.hurry();
        assert!(inbox.is_urgent());
        assert!(inbox.take(&mut taken, &mut bytes, usize::MAX));
        assert!(!inbox.is_urgent());
    }

    #[test]
    fn a_hurry_wakes_a_waiting_writer() {
        let inbox = std::sync::Arc::new(Inbox::default());
        let waiter = {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                inbox.wait_until_urgent(Duration::from_secs(30));
                started.elapsed()
            })
        };
        inbox.hurry();
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(30), "woken, not timed out");
    }
}
