//! The service side of RPC: take requests from a queue, answer each one, ack it.
//!
//! # How it works
//! - A *listener* connection logs in, creates the queue (persistent, a no-op if it exists)
//!   and long-polls it with a cursor. Every message stays stored until acked, so the cursor
//!   is what keeps the loop from seeing a request twice.
//! - Each request runs the handler; its result is sent to the request's `reply_to` as the
//!   response, and only once the switch has accepted the response is the request acked, on a
//!   *replier* connection. A crash between the two leaves the request queued, so it is
//!   answered again later: at-least-once, never lost. Concurrent handlers answer over a small
//!   pool of replier connections (at most [`REPLIERS_MAX`], and never more than
//!   [`ServeOptions::concurrency`]), opened as needed: one shared connection would make every
//!   response wait for the exchanges of the others, and on a switch with `--statedir` (where
//!   a reply to a Send or an Ack leaves only after an fsync) it capped a service at one
//!   response and one ack per fsync, whatever its concurrency.
//! - By default requests are handled one at a time, in ascending id order (the reference
//!   switch hands out batches newest-first; they are sorted). [`ServeOptions::concurrency`]
//!   allows a bounded number of handlers to run at once.
//! - On any failure the listener reconnects with back-off, re-creates the queue (a switch
//!   restarted without persistence has forgotten it) and restarts its cursor from the
//!   beginning: acked requests are gone, so only unanswered ones come back, and ids from a
//!   previous switch process (which may restart at 0 on the reference switch) cannot hide
//!   new requests. Requests still being handled are recognised and not started twice.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::backoff::Backoff;
use super::{ClientConfig, Connection, Connector, Error};
use crate::protocol::{MessageId, MessageKind, QueueName};

/// Most replier connections one [`serve`] opens (see the module documentation).
pub const REPLIERS_MAX: usize = 16;

/// Options of [`serve`].
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Token, timeouts and back-off. The token only identifies the service's session here
    /// (it owns no queue), so sharing it with a [`Client`](super::Client) is harmless.
    pub config: ClientConfig,
    /// How many requests may be handled at once. 1 (the default) handles them strictly one
    /// after another in id order.
    pub concurrency: NonZeroUsize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            config: ClientConfig::default(),
            concurrency: NonZeroUsize::MIN,
        }
    }
}

/// A request handed to a [`serve`] handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The request's id; the response is correlated with it.
    pub id: MessageId,
    /// The queue the response goes to.
    pub reply_to: QueueName,
    /// The request body.
    pub payload: Bytes,
}

/// Serves `queue`: for every request, runs `handler`, sends its result as the response and
/// then acks the request. Runs until the returned future is dropped (which also cancels the
/// handlers in progress; their requests stay queued and will be served again).
///
/// Returns an error if the very first connection fails (so that a misconfigured address is
/// reported at once), or when the switch refuses the listener itself with a 4xx other than
/// 429 ([`Error::is_refusal`]: a queue name or timeout over the switch's limits), which
/// retrying cannot cure. Otherwise it survives lost connections, switch restarts and a switch
/// at its limits (429), reconnecting with exponential back-off and jitter; the back-off only
/// goes back to its minimum once a Transfer has come back, so a switch that keeps refusing
/// is not hammered. Handlers run on tasks spawned with `tokio::spawn`.
pub async fn serve<C, H, F>(
    connector: C,
    queue: QueueName,
    options: ServeOptions,
    handler: H,
) -> Result<Infallible, Error>
where
    C: Connector,
    H: Fn(Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Bytes> + Send + 'static,
{
    let service = Arc::new(Service {
        connector,
        config: options.config,
        queue,
        handler,
        repliers: Repliers::new(options.concurrency.get().min(REPLIERS_MAX)),
        in_progress: Mutex::new(BTreeSet::new()),
    });
    let permits = Arc::new(Semaphore::new(options.concurrency.get()));
    // Dropping the JoinSet (when this future is dropped) aborts the handlers.
    let mut workers = JoinSet::new();
    let mut backoff = service.backoff();
    let mut connected_before = false;
    let queues = [service.queue.clone()];
    loop {
        let mut listener = match service.open_listener().await {
            Ok(connection) => connection,
            Err(error) if !connected_before || error.is_refusal() => return Err(error),
            Err(error) => {
                // Already reported when the connection was lost: stay quiet while retrying.
                tracing::debug!(%error, queue = %service.queue, "cannot reach the switch; retrying");
                backoff.wait().await;
                continue;
            }
        };
        if connected_before {
            tracing::info!(queue = %service.queue, "reconnected to the switch");
        }
        connected_before = true;
        let mut from = None;
        let error = 'session: loop {
            let reply = match listener
                .transfer(from, service.config.transfer_timeout, &queues)
                .await
            {
                Ok(reply) => reply,
                Err(error) => break error,
            };
            // A long poll that came back is progress; a connection alone is not, or a switch
            // that accepts connections and refuses the rest would be retried at the minimum
            // delay for ever.
            backoff.reset();
            if !reply.messages.is_empty() {
                from = Some(reply.next);
            }
            let mut messages = reply.messages;
            messages.sort_by(|a, b| a.0.cmp(&b.0));
            for (id, message) in messages {
                let reply_to = match message.kind {
                    MessageKind::Request { reply_to } => reply_to,
                    MessageKind::Response { .. } => {
                        // Nobody can be waiting for a response in a service queue; ack it so
                        // it does not sit there for ever.
                        tracing::warn!(%id, "acking a response found in a service queue");
                        if let Err(error) = listener.ack(&id).await {
                            break 'session error;
                        }
                        continue;
                    }
                };
                let Some(claim) = Claim::take(&service, id) else {
                    continue; // Delivered again after a reconnect while still being handled.
                };
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    unreachable!("the semaphore is never closed");
                };
                while let Some(finished) = workers.try_join_next() {
                    if let Err(error) = finished {
                        tracing::error!(%error, "a request handler panicked");
                    }
                }
                workers.spawn(handle(
                    Arc::clone(&service),
                    claim,
                    reply_to,
                    message.payload,
                    permit,
                ));
            }
        };
        if error.is_refusal() {
            return Err(error);
        }
        tracing::warn!(%error, queue = %service.queue, "lost the connection to the switch; reconnecting");
        backoff.wait().await;
    }
}

struct Service<C, H> {
    connector: C,
    config: ClientConfig,
    queue: QueueName,
    handler: H,
    /// The connections for responses and acks.
    repliers: Repliers,
    /// Requests taken by a handler and not yet acked (or given up on).
    in_progress: Mutex<BTreeSet<MessageId>>,
}

impl<C: Connector, H> Service<C, H> {
    async fn open_listener(&self) -> Result<Connection, Error> {
        let mut connection = Connection::open(&self.connector, &self.config.connection).await?;
        connection.login(&self.config.token).await?;
        connection.create_persistent(&self.queue).await?;
        Ok(connection)
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            self.config.reconnect_delay_min,
            self.config.reconnect_delay_max,
            self.config.jitter.clone(),
        )
    }

    /// Sends the response, then acks the request; retries after transport errors and while
    /// the switch is at a limit (429: the reply queue or the store is full) until both are
    /// done, backing off. Other errors are logged and the request is left queued to be served
    /// again.
    async fn respond_and_ack(&self, request: &MessageId, reply_to: &QueueName, response: Bytes) {
        let mut backoff = self.backoff();
        let mut responded = false;
        loop {
            let result = self
                .try_respond_and_ack(request, reply_to, &response, &mut responded)
                .await;
            match result {
                Ok(()) => return,
                Err(error) if error.is_transport() || error.is_overload() => {
                    tracing::debug!(%error, %request, "cannot answer yet; retrying");
                    backoff.wait().await;
                }
                Err(error) => {
                    tracing::error!(%error, %request, "cannot answer the request");
                    return;
                }
            }
        }
    }

    async fn try_respond_and_ack(
        &self,
        request: &MessageId,
        reply_to: &QueueName,
        response: &Bytes,
        responded: &mut bool,
    ) -> Result<(), Error> {
        let mut replier = self.repliers.take().await;
        let connection = match replier.connection.take().filter(Connection::is_usable) {
            Some(connection) => connection,
            None => {
                let mut connection =
                    Connection::open(&self.connector, &self.config.connection).await?;
                connection.login(&self.config.token).await?;
                connection
            }
        };
        let connection = replier.connection.insert(connection);
        if !*responded {
            let sent = connection
                .send_response(reply_to, request, response.clone())
                .await?;
            if sent.is_none() {
                // The caller's reply queue is gone (the caller died, or the switch restarted
                // without persistence): nobody can receive the answer, so just ack.
                tracing::debug!(%request, %reply_to, "the caller's reply queue is gone");
            }
            *responded = true;
        }
        connection.ack(request).await
    }
}

/// The pool of replier connections: at most `permits` in use at once, idle ones kept for
/// reuse.
struct Repliers {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

impl Repliers {
    fn new(connections_max: usize) -> Repliers {
        Repliers {
            permits: Arc::new(Semaphore::new(connections_max.max(1))),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Waits for a free place in the pool and takes an idle connection, if there is one (the
    /// caller opens one otherwise). The place and the connection return with the guard.
    async fn take(&self) -> Replier<'_> {
        let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
            unreachable!("the semaphore is never closed");
        };
        let connection = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        Replier {
            pool: self,
            connection,
            _permit: permit,
        }
    }
}

/// A replier connection in use. Dropping it returns a usable connection to the pool (a broken
/// one is dropped, closing it) and frees its place.
struct Replier<'a> {
    pool: &'a Repliers,
    connection: Option<Connection>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Replier<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take().filter(Connection::is_usable) {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(connection);
        }
    }
}

/// A request taken by a handler. Dropping it (after the ack, on give-up or on panic) lets the
/// request be served again if it is still queued.
struct Claim<C, H> {
    service: Arc<Service<C, H>>,
    id: MessageId,
}

impl<C, H> Claim<C, H> {
    fn take(service: &Arc<Service<C, H>>, id: MessageId) -> Option<Claim<C, H>> {
        let fresh = service
            .in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
        fresh.then(|| Claim {
            service: Arc::clone(service),
            id,
        })
    }
}

impl<C, H> Drop for Claim<C, H> {
    fn drop(&mut self) {
        self.service
            .in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

async fn handle<C, H, F>(
    service: Arc<Service<C, H>>,
    claim: Claim<C, H>,
    reply_to: QueueName,
    payload: Bytes,
    permit: OwnedSemaphorePermit,
) where
    C: Connector,
    H: Fn(Incoming) -> F,
    F: Future<Output = Bytes>,
{
    let incoming = Incoming {
        id: claim.id.clone(),
        reply_to: reply_to.clone(),
        payload,
    };
    let response = (service.handler)(incoming).await;
    service
        .respond_and_ack(&claim.id, &reply_to, response)
        .await;
    // Only now may the next request start (in-order mode) and may this one be seen again.
    drop(permit);
    drop(claim);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::ConnectionConfig;

    /// A usable connection over an in-memory pipe; the returned pipe end must stay alive.
    async fn connection() -> (Connection, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1024);
        let connection = Connection::handshake(client, ConnectionConfig::default())
            .await
            .unwrap();
        (connection, server)
    }

    #[tokio::test]
    async fn the_replier_pool_is_bounded_and_reuses_connections() {
        let pool = Repliers::new(2);
        let mut first = pool.take().await;
        assert!(
            first.connection.is_none(),
            "an empty pool hands out no connection"
        );
        let (opened, _pipe) = connection().await;
        first.connection = Some(opened);
        let second = pool.take().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), pool.take())
                .await
                .is_err(),
            "a third user waits for a free place"
        );
        drop(first);
        let third = pool.take().await;
        assert!(
            third.connection.is_some(),
            "a returned connection is reused"
        );
        drop(second);
        drop(third);
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_broken_replier_is_not_returned_to_the_pool() {
        let pool = Repliers::new(1);
        let (opened, pipe) = connection().await;
        drop(pipe);
        let mut replier = pool.take().await;
        replier.connection = Some(opened);
        // The peer is gone: the next request fails, and the connection is no longer usable.
        let connection = replier.connection.as_mut().unwrap();
        let error = connection
            .execute(&crate::protocol::Request::Diagnostics)
            .await
            .unwrap_err();
        assert!(error.is_transport(), "{error}");
        assert!(!connection.is_usable());
        drop(replier);
        assert!(pool.idle.lock().unwrap().is_empty());
    }
}
