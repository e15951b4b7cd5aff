//! The batches submitted to the journal and not yet taken by the writer, shared by the
//! driver (which adds to it) and the writer (which takes from its front).
//!
//! It exists so that an Ack can *withdraw* the store of its message while that store is
//! still only here: a message stored and acked before the writer picks it up need never be
//! written at all, and the Ack then has nothing to wait for. In the real clients' pattern a
//! service acks each request on one shared connection, one Ack at a time, so an Ack that
//! waits for a sync holds up every later response; with the writer busy on the previous
//! group commit, the request's store is often still here when its Ack arrives.
//!
//! What the writer has taken (being written, synced, or retried after a failure) is never
//! changed: only batches still in the inbox are.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::writer::Batch;
use crate::engine::Event;

/// Submitted batches waiting for the writer, in sequence order.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    batches: VecDeque<Batch>,
    /// The batch (by sequence number) holding the `MessageStored` of each message index in
    /// `batches`.
    stored_in: HashMap<i64, u64>,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // A panic while holding the lock leaves the queue consistent (every change is one
        // push, pop or remove), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `batch` behind the others.
    pub(crate) fn push(&self, batch: Batch) {
        let mut waiting = self.lock();
        for event in &batch.events {
            if let Event::MessageStored { id, .. } = event {
                waiting.stored_in.insert(id.index, batch.seq);
            }
        }
        waiting.batches.push_back(batch);
    }

    /// Takes batches from the front into `taken` while their size hints keep `taken_bytes`
    /// under `bytes_max` (always at least one, if any waits).
    pub(crate) fn take(&self, taken: &mut Vec<Batch>, taken_bytes: &mut usize, bytes_max: usize) {
        let mut waiting = self.lock();
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
        inbox.push(batch(1, vec![stored(10), stored(11)]));
        inbox.push(batch(2, vec![stored(12)]));
        assert!(inbox.withdraw_stored(11));
        assert!(!inbox.withdraw_stored(11), "withdrawn once only");
        assert!(inbox.withdraw_stored(12));
        let (mut taken, mut bytes) = (Vec::new(), 0);
        inbox.take(&mut taken, &mut bytes, usize::MAX);
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
        inbox.push(batch(1, vec![stored(10)]));
        inbox.push(batch(2, vec![stored(11)]));
        let (mut taken, mut bytes) = (Vec::new(), 0);
        // One batch fits the budget: the second stays.
        inbox.take(&mut taken, &mut bytes, 1);
        assert_eq!(taken.len(), 1);
        assert!(!inbox.withdraw_stored(10), "the writer has it");
        assert_eq!(taken[0].events, [stored(10)]);
        assert!(inbox.withdraw_stored(11));
        assert!(!inbox.withdraw_stored(99), "never stored");
    }
}
