//! The driver's side of durability: batch the engine's events per wake-up, hand them to the
//! journal, and hold back every reply that depends on an event not yet synced
//! (protocol.md part A.8, "durable before visible").
//!
//! Nothing here blocks: the journal writes and syncs on its own threads (or task), and
//! reports completions that [`Durability::on_completion`] turns into released or failed
//! replies. Replies that need no sync (reads, changes of transient queues, lazy acks) are
//! answered at once, except in the rare case that the engine's id counter has passed the id
//! floor already durable (see [`store::ID_RESERVE`] and [`Durability::submit`]).
//!
//! # Ids without syncs
//!
//! A reply that leaves before a sync may show a message id (a Transfer, a Send to a transient
//! queue, a trace), and no id shown may ever be handed out again, even after a crash that
//! loses everything unsynced. Recovery raises the id counter to the highest floor journalled,
//! so every id below `durable_floor` (the highest floor synced) is safe. The driver keeps the
//! floor ahead: whenever the counter comes within half a reserve of the floor last submitted,
//! the next batch carries a new floor, even if it has no events (transient traffic journals
//! none). So `next_index <= durable_floor` holds except right after start-up (until the first
//! batch is synced) and when more than `ID_RESERVE / 2` ids are taken within one sync; only
//! then does such a reply wait for the floor's sync.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::metrics::Histogram;
use crate::engine::{Event, RequestId};
use crate::protocol::{ErrorReply, Reply};
use crate::store::{self, Completion, Journal, StoreError};

/// A reply waiting for its batch to be durable.
struct Held {
    /// The batch whose sync releases it.
    tag: u64,
    request: RequestId,
    reply: Reply,
    /// A reply that needed no sync, held only because the id counter had passed the
    /// durable id floor.
    read: bool,
}

/// Durability state owned by the driver.
pub(crate) struct Durability {
    journal: Journal,
    /// Events of the current wake-up, submitted together as batch `next_seq`.
    batch: Vec<Event>,
    next_seq: u64,
    /// The highest batch known durable.
    synced: u64,
    /// Submitted batches not yet durable: sequence number, id floor, submission time.
    in_flight: VecDeque<(u64, i64, Instant)>,
    /// The id floor recovery would restore now: ids below it are safe to show.
    durable_floor: i64,
    /// The highest id floor submitted (durable or not).
    submitted_floor: i64,
    held: VecDeque<Held>,
    /// Set while the journal fails: mutations are refused until a sync succeeds.
    failure: Option<Arc<StoreError>>,
    /// The writer stopped (closed or died): nothing more can be made durable.
    writer_gone: bool,
    close_waiters: Vec<oneshot::Sender<Result<(), String>>>,
    closed: Option<Result<(), String>>,
    sync_latency: Arc<Histogram>,
}

impl Durability {
    /// Wraps a journal whose recovered state had id counter `recovered_next_index` (before
    /// the engine raised it to the start time).
    pub(crate) fn new(
        journal: Journal,
        recovered_next_index: i64,
        sync_latency: Arc<Histogram>,
    ) -> Self {
        Self {
            journal,
            batch: Vec::new(),
            next_seq: 1,
            synced: 0,
            in_flight: VecDeque::new(),
            durable_floor: recovered_next_index,
            submitted_floor: recovered_next_index,
            held: VecDeque::new(),
            failure: None,
            writer_gone: false,
            close_waiters: Vec::new(),
            closed: None,
            sync_latency,
        }
    }

    /// The reply for a request that must be refused before the engine sees it, because it
    /// would journal something (`needs_journal`, see `Engine::needs_journal`) and the journal
    /// is failing or closed: applying it would change the state with no way to make the
    /// change durable. Changes of transient queues need no journal and are never refused.
    pub(crate) fn refusal(&self, needs_journal: bool) -> Option<Reply> {
        if !needs_journal {
            return None;
        }
        if self.closed.is_some() || self.writer_gone {
            return Some(Reply::Error(ErrorReply::new(
                503,
                "the switch is shutting down: its journal is closed",
            )));
        }
        let error = self.failure.as_ref()?;
        Some(Reply::Error(ErrorReply::new(
            status_of(error),
            format!(
                "the journal cannot be written ({error}); changes are refused until it recovers"
            ),
        )))
    }

    /// Takes an event the engine emitted (and already applied).
    pub(crate) fn persist(&mut self, event: Event) {
        self.batch.push(event);
    }

    /// Decides whether `reply` may leave now (returned) or must wait (kept, `None`).
    /// `after_sync` is the engine's verdict; `next_index` is the engine's id counter now.
    pub(crate) fn gate(
        &mut self,
        request: RequestId,
        reply: Reply,
        after_sync: bool,
        next_index: i64,
    ) -> Option<Reply> {
        let read = !after_sync;
        let tag = if after_sync {
            // The latest batch holding an event emitted before this reply.
            if self.batch.is_empty() {
                self.next_seq - 1
            } else {
                self.next_seq
            }
        } else if next_index <= self.durable_floor || !may_show_ids(&reply) {
            return Some(reply);
        } else if next_index <= self.submitted_floor {
            self.next_seq - 1
        } else {
            // `submit` sends a new floor at the end of this wake-up.
            self.next_seq
        };
        if tag <= self.synced {
            return Some(reply);
        }
        self.held.push_back(Held {
            tag,
            request,
            reply,
            read,
        });
        None
    }

    /// Submits the events of this wake-up as one batch; `next_index` is the engine's id
    /// counter now. With no events, a batch is still submitted when the counter has come
    /// within half a reserve of the floor last submitted, to move the floor ahead.
    pub(crate) fn submit(&mut self, next_index: i64) {
        if self.batch.is_empty() && !store::floor_due(next_index, self.submitted_floor) {
            return;
        }
        let events = std::mem::take(&mut self.batch);
        let seq = self.next_seq;
        self.next_seq += 1;
        let floor = next_index.saturating_add(store::ID_RESERVE);
        self.submitted_floor = self.submitted_floor.max(floor);
        if self.journal.submit(seq, events, floor).is_err() {
            // The writer is gone: nothing more will be durable. Held replies fail below when
            // the completion channel reports it closed.
            self.writer_gone = true;
        }
        self.in_flight.push_back((seq, floor, Instant::now()));
    }

    /// The next report from the journal; never resolves once the writer is gone.
    pub(crate) async fn completion(&mut self) -> Option<Completion> {
        if self.writer_gone && self.closed.is_some() {
            return std::future::pending().await;
        }
        self.journal.completion().await
    }

    /// Applies a report from the journal (`None`: the writer is gone); returns the replies
    /// that may now leave.
    pub(crate) fn on_completion(
        &mut self,
        completion: Option<Completion>,
    ) -> Vec<(RequestId, Reply)> {
        match completion {
            Some(Completion::Synced { through }) => {
                self.synced = self.synced.max(through);
                let now = Instant::now();
                while let Some(&(seq, floor, submitted)) = self.in_flight.front() {
                    if seq > through {
                        break;
                    }
                    self.durable_floor = self.durable_floor.max(floor);
                    self.sync_latency.observe(now.duration_since(submitted));
                    self.in_flight.pop_front();
                }
                if self.failure.take().is_some() {
                    tracing::info!("journal recovered; accepting changes again");
                }
                let mut released = Vec::new();
                while self.held.front().is_some_and(|h| h.tag <= self.synced) {
                    if let Some(held) = self.held.pop_front() {
                        released.push((held.request, held.reply));
                    }
                }
                released
            }
            Some(Completion::Failed { error }) => {
                let status = status_of(&error);
                let change = format!(
                    "the change could not be made durable ({error}); it is not confirmed and \
                     may or may not survive a restart"
                );
                let read = format!(
                    "the messages for this reply are not durable yet and the journal is failing \
                     ({error}); retry later"
                );
                self.failure = Some(error);
                self.held
                    .drain(..)
                    .map(|held| {
                        let text = if held.read { &read } else { &change };
                        (
                            held.request,
                            Reply::Error(ErrorReply::new(status, text.clone())),
                        )
                    })
                    .collect()
            }
            Some(Completion::Closed(result)) => {
                let result = result.map_err(|error| error.to_string());
                if let Err(error) = &result {
                    tracing::error!(%error, "the journal closed with unsynced changes");
                }
                self.writer_gone = true;
                for waiter in self.close_waiters.drain(..) {
                    let _ = waiter.send(result.clone());
                }
                self.closed = Some(result);
                self.fail_held(503, "the switch is shutting down: its journal is closed")
            }
            None => {
                if !self.writer_gone {
                    tracing::error!("the journal writer stopped unexpectedly");
                }
                self.writer_gone = true;
                if self.closed.is_none() {
                    self.closed = Some(Err("the journal writer stopped".to_owned()));
                }
                self.fail_held(
                    503,
                    "the journal writer stopped; changes cannot be made durable",
                )
            }
        }
    }

    /// Submits what is left and closes the journal; `waiter` learns whether everything
    /// submitted is durable.
    pub(crate) fn close(&mut self, next_index: i64, waiter: oneshot::Sender<Result<(), String>>) {
        if let Some(result) = &self.closed {
            let _ = waiter.send(result.clone());
            return;
        }
        self.submit(next_index);
        self.close_waiters.push(waiter);
        if self.close_waiters.len() == 1 {
            self.journal.close();
        }
    }

    fn fail_held(&mut self, status: u16, text: &str) -> Vec<(RequestId, Reply)> {
        self.held
            .drain(..)
            .map(|held| {
                (
                    held.request,
                    Reply::Error(ErrorReply::new(status, text.to_owned())),
                )
            })
            .collect()
    }
}

/// Whether `reply` may show a message id (or a name made from one): such a reply must not
/// leave before a durable id floor covers every id handed out.
fn may_show_ids(reply: &Reply) -> bool {
    match reply {
        Reply::Transfer(transfer) => !transfer.messages.is_empty(),
        Reply::Sent(sent) => sent.is_some(),
        Reply::Trace(events) => !events.is_empty(),
        Reply::Name(_) | Reply::Diagnostics(_) => true,
        Reply::Empty | Reply::List(_) | Reply::Error(_) => false,
    }
}

/// 507 Insufficient Storage for a full disk, 503 for other journal errors.
fn status_of(error: &StoreError) -> u16 {
    if error.is_storage_full() {
        507
    } else {
        503
    }
}
