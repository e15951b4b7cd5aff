//! The durable state of the switch (queues, their owners and messages, the id counter) and
//! the events that change it.
//!
//! [`QueueStore::apply`] is the only way this state changes, both live and when a journal is
//! replayed, so recovery runs exactly the code that produced the state. Commands decide which
//! events to emit (in `machine.rs`); events never fail to apply.

use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::{Message, MessageId, Origin, QueueName, SessionToken};

use super::name_map::NameMap;
use super::time::Timestamp;

/// A change to the durable state. These are what a journal records and replays.
#[derive(Clone, PartialEq, Debug)]
pub enum Event {
    /// A queue was created. `owner` is the session of a transient queue, `None` for a
    /// persistent one. Applying it to an existing queue changes nothing.
    QueueCreated {
        /// The new queue.
        name: QueueName,
        /// The owning session of a transient queue.
        owner: Option<SessionToken>,
    },
    /// A queue and all its messages were removed (Destroy, or transient cleanup).
    QueueRemoved {
        /// The removed queue.
        name: QueueName,
    },
    /// A message was stored under `id`.
    MessageStored {
        /// Its id; its queue exists when the event is emitted.
        id: MessageId,
        /// Who sent it.
        origin: Origin,
        /// When it was stored.
        time: Timestamp,
        /// The message.
        message: Message,
    },
    /// A stored message was deleted by an Ack.
    MessageAcked {
        /// The deleted message's id.
        id: MessageId,
    },
}

/// A stored message with its metadata.
#[derive(Clone, PartialEq, Debug)]
pub struct StoredMessage {
    /// Who sent it.
    pub origin: Origin,
    /// When it was stored.
    pub time: Timestamp,
    /// The message.
    pub message: Message,
}

/// One queue.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Queue {
    /// The owning session of a transient queue; `None` for a persistent one.
    pub owner: Option<SessionToken>,
    /// The stored messages by id, ascending.
    pub messages: BTreeMap<i64, StoredMessage>,
    /// Bytes of payload stored, for the memory limit.
    pub payload_bytes: usize,
    /// When the next Transfer naming this queue is expected (volatile: not journalled; it is
    /// dropped with the queue so the alive table cannot grow without bound).
    pub next_transfer_expected: Option<Timestamp>,
}

/// The queues and the id counter.
#[derive(Clone, PartialEq, Debug)]
pub struct QueueStore {
    /// The queues by name, hashed: every request looks its queues up (see `name_map`). Its
    /// order is never shown; `names` keeps the order.
    queues: NameMap<Queue>,
    /// The names of `queues`, ascending: what every walk over the queues goes by, so that
    /// lists, diagnostics, snapshots and recovery's removals are in name order.
    names: BTreeSet<QueueName>,
    by_owner: BTreeMap<SessionToken, BTreeSet<QueueName>>,
    next_index: i64,
    message_count: usize,
    payload_bytes: usize,
}

impl QueueStore {
    /// An empty store whose first message id is `first_index`. The driver derives it from the
    /// start time (in µs since the epoch), so ids keep growing across restarts even without a
    /// journal (protocol.md part A.3).
    pub fn new(first_index: i64) -> Self {
        Self {
            queues: NameMap::default(),
            names: BTreeSet::new(),
            by_owner: BTreeMap::new(),
            next_index: first_index,
            message_count: 0,
            payload_bytes: 0,
        }
    }

    /// Applies one event. This is the only mutation of the durable state.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::QueueCreated { name, owner } => {
                if self.queues.contains_key(name) {
                    return;
                }
                if let Some(owner) = owner {
                    self.by_owner
                        .entry(owner.clone())
                        .or_default()
                        .insert(name.clone());
                }
                self.names.insert(name.clone());
                self.queues.insert(
                    name.clone(),
                    Queue {
                        owner: owner.clone(),
                        ..Queue::default()
                    },
                );
            }
            Event::QueueRemoved { name } => {
                let Some(queue) = self.queues.remove(name) else {
                    return;
                };
                self.names.remove(name);
                self.message_count -= queue.messages.len();
                self.payload_bytes -= queue.payload_bytes;
                if let Some(owner) = &queue.owner {
                    if let Some(owned) = self.by_owner.get_mut(owner) {
                        owned.remove(name);
                        if owned.is_empty() {
                            self.by_owner.remove(owner);
                        }
                    }
                }
            }
            // A copy to keep (the event itself is journalled).
            Event::MessageStored { .. } => self.apply_owned(event.clone()),
            Event::MessageAcked { id } => {
                let Some(queue) = self.queues.get_mut(&id.queue) else {
                    return;
                };
                if let Some(removed) = queue.messages.remove(&id.index) {
                    queue.payload_bytes -= removed.message.payload.len();
                    self.payload_bytes -= removed.message.payload.len();
                    self.message_count -= 1;
                }
            }
        }
    }

    /// [`QueueStore::apply`] of an event that is not kept afterwards (nothing journals it):
    /// a stored message is moved in rather than copied, which spares a reference count
    /// taken and dropped for each of its buffers.
    pub fn apply_owned(&mut self, event: Event) {
        match event {
            Event::MessageStored {
                id,
                origin,
                time,
                message,
            } => self.store_message(
                &id,
                StoredMessage {
                    origin,
                    time,
                    message,
                },
            ),
            event => self.apply(&event),
        }
    }

    /// Stores `stored` as message `id` (replacing one stored under that id before).
    fn store_message(&mut self, id: &MessageId, stored: StoredMessage) {
        // Replay must advance the counter past every id ever stored, or new sends could
        // reuse (and overwrite) the id of a recovered message.
        self.next_index = self.next_index.max(id.index.saturating_add(1));
        let Some(queue) = self.queues.get_mut(&id.queue) else {
            return;
        };
        let size = stored.message.payload.len();
        queue.payload_bytes += size;
        self.payload_bytes += size;
        if let Some(previous) = queue.messages.insert(id.index, stored) {
            queue.payload_bytes -= previous.message.payload.len();
            self.payload_bytes -= previous.message.payload.len();
        } else {
            self.message_count += 1;
        }
    }

    /// Whether `name` is a transient queue (one owned by a session).
    pub fn is_transient(&self, name: &QueueName) -> bool {
        self.queues
            .get(name)
            .is_some_and(|queue| queue.owner.is_some())
    }

    /// Whether `event`, applied to this store now, changes only a transient queue: creating
    /// one, storing or acking a message in one, removing one. Recovery drops every transient
    /// queue (their sessions end with the process), so such an event never affects what a
    /// restart recovers and need not be journalled. Decide before applying it (a removal
    /// forgets the queue's owner).
    pub fn is_volatile(&self, event: &Event) -> bool {
        match event {
            Event::QueueCreated { owner, .. } => owner.is_some(),
            Event::QueueRemoved { name } => self.is_transient(name),
            Event::MessageStored { id, .. } | Event::MessageAcked { id } => {
                self.is_transient(&id.queue)
            }
        }
    }

    /// The id the next stored message will get.
    pub fn next_index(&self) -> i64 {
        self.next_index
    }

    /// Reserves and returns a fresh number from the id counter without storing a message
    /// (used for fresh transient queue names).
    pub fn take_index(&mut self) -> i64 {
        let index = self.next_index;
        self.next_index += 1;
        index
    }

    /// Raises the id counter to at least `floor` (used at start-up: a time-derived floor keeps
    /// ids growing across restarts that lost the journal's unsynced tail).
    pub fn raise_next_index(&mut self, floor: i64) {
        self.next_index = self.next_index.max(floor);
    }

    /// The queue called `name`.
    pub fn queue(&self, name: &QueueName) -> Option<&Queue> {
        self.queues.get(name)
    }

    /// The queue called `name` with its stored name, whose buffer copies of the name can share
    /// (see [`QueueStore::shared_name`]).
    pub fn queue_entry(&self, name: &QueueName) -> Option<(&QueueName, &Queue)> {
        self.queues.get_key_value(name)
    }

    /// `name`, sharing the buffer of the existing queue of that name if there is one (a
    /// cheap clone), so that long-lived copies of a name do not each hold an allocation.
    pub fn shared_name(&self, name: QueueName) -> QueueName {
        match self.queues.get_key_value(&name) {
            Some((stored, _)) => stored.clone(),
            None => name,
        }
    }

    /// The queue called `name`, mutably, for volatile fields only (`next_transfer_expected`).
    pub fn queue_mut(&mut self, name: &QueueName) -> Option<&mut Queue> {
        self.queues.get_mut(name)
    }

    /// All queues, ascending by name.
    pub fn queues(&self) -> impl DoubleEndedIterator<Item = (&QueueName, &Queue)> {
        // `apply` keeps the two in step, so every name has its queue.
        self.names
            .iter()
            .filter_map(|name| self.queues.get_key_value(name))
    }

    /// The queues whose names start with `prefix`, ascending by name.
    pub fn queues_with_prefix<'a>(
        &'a self,
        prefix: &'a QueueName,
    ) -> impl Iterator<Item = (&'a QueueName, &'a Queue)> + 'a {
        self.names
            .range(prefix.clone()..)
            .take_while(move |name| name.as_bytes().starts_with(prefix.as_bytes()))
            .filter_map(|name| self.queues.get_key_value(name))
    }

    /// The queues owned by `session`.
    pub fn owned_by(&self, session: &SessionToken) -> Vec<QueueName> {
        self.by_owner
            .get(session)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many queues exist.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// How many messages are stored in all queues.
    pub fn message_count(&self) -> usize {
        self.message_count
    }

    /// Payload bytes stored in all queues.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// The events that rebuild this store's queues and messages when applied, in order, to an
    /// empty store: for each queue in name order a `QueueCreated`, then a `MessageStored` per
    /// message in id order. A snapshot is these events, so loading one runs
    /// [`QueueStore::apply`] like any replay. The id counter is not covered (an empty queue
    /// list has no events); callers carry [`QueueStore::next_index`] beside them.
    pub fn snapshot_events(&self) -> impl Iterator<Item = Event> + '_ {
        self.queues().flat_map(|(name, queue)| {
            let created = Event::QueueCreated {
                name: name.clone(),
                owner: queue.owner.clone(),
            };
            let stored = queue
                .messages
                .iter()
                .map(move |(&index, stored)| Event::MessageStored {
                    id: MessageId::new(name.clone(), index),
                    origin: stored.origin.clone(),
                    time: stored.time,
                    message: stored.message.clone(),
                });
            std::iter::once(created).chain(stored)
        })
    }

    /// The `QueueRemoved` events that drop every transient queue, in name order. After a
    /// restart their sessions are gone, so recovery applies these and journals them (so that
    /// a later persistent queue of the same name is not mistaken for the old transient one).
    pub fn transient_queue_removals(&self) -> Vec<Event> {
        self.queues()
            .filter(|(_, queue)| queue.owner.is_some())
            .map(|(name, _)| Event::QueueRemoved { name: name.clone() })
            .collect()
    }
}
