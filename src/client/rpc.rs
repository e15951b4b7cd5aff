//! The RPC client: one reply queue per client, requests correlated with their responses by
//! the request's message id, any number of concurrent calls.
//!
//! # How a call flows
//! 1. [`Client::call`] sends `POST /request/QUEUE/REPLY_QUEUE` on the *requests* connection
//!    and gets back the request's id `(QUEUE, n)`.
//! 2. It registers a waiter under that id and waits (with its timeout, if any).
//! 3. A background task long-polls the reply queue on the *events* connection. A response
//!    `Response (QUEUE, n)` fills the waiter of `(QUEUE, n)`, and the response is acked.
//!
//! # Exchanges per call
//! The OCaml client sends `CreatePersistent QUEUE` before every request, so that a request to
//! a service that has not started yet is queued rather than dropped. That costs one more
//! exchange on every call and, on the switch, a journal write and a wake-up of every waiter.
//! This client sends the request first and creates the queue only when the switch answers
//! `[]` (queue missing), then sends once more: one exchange on the hot path, three on the
//! first call to a queue that does not exist yet, and the same outcome as the reference
//! (the request ends up queued). Opt out with [`CallOptions::create_queue`].
//!
//! # Reconnects
//! Every connection the client opens logs in and (re-)creates the reply queue (`GET
//! /transient/REPLY_QUEUE` is a no-op when it exists). So after a lost connection, or a
//! restarted switch, the reply queue exists again before any request names it — unlike the
//! reference client, whose calls hang forever after its reply queue was cleaned up
//! (`protocol.md` §6.10, §6.16). The reply listener restarts its cursor from the beginning
//! of the queue on every new connection: everything still stored there is unacked, and a
//! cursor from an earlier switch process could hide new replies.
//!
//! A call retries its Send after transport errors, with back-off, until its timeout. A Send
//! whose reply was lost may thus have been queued twice; the second response then finds no
//! waiter and is acked and dropped. Requests in flight when a switch restarts without
//! persistence are gone with it; their calls end at their timeout.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::backoff::{Backoff, Jitter};
use super::{Connection, ConnectionConfig, Connector, Error};
use crate::protocol::{
    decode_list, decode_sent, decode_trace, Diagnostics, Message, MessageId, MessageKind,
    QueueName, Request, SessionToken, TraceEvent,
};

/// Settings shared by [`Client`] and [`serve`](super::serve).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The session token every connection logs in with. A [`Client`] also names its reply
    /// queue after it, so two clients must never share a token (they would consume each
    /// other's replies). The default, [`default_token`], is unique within the process.
    pub token: SessionToken,
    /// Timeouts and size bounds of each connection.
    pub connection: ConnectionConfig,
    /// How long each long poll (Transfer) asks the switch to wait. The reference clients use
    /// 30 s; the switch's diagnostics consider a listener dead 30 s after this expires.
    pub transfer_timeout: Duration,
    /// The first delay before reconnecting after a failure; doubled after each failed attempt.
    pub reconnect_delay_min: Duration,
    /// The longest delay between reconnect attempts.
    pub reconnect_delay_max: Duration,
    /// Where the back-off draws its jitter from; seed it ([`Jitter::seeded`]) for
    /// reproducible retry timing, as the simulation does.
    pub jitter: Jitter,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            token: default_token(),
            connection: ConnectionConfig::default(),
            transfer_timeout: Duration::from_secs(30),
            reconnect_delay_min: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_secs(2),
            jitter: Jitter::from_entropy(),
        }
    }
}

/// Options of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallOptions {
    /// Give up (with [`Error::CallTimedOut`]) after this long; `None` waits for ever.
    pub timeout: Option<Duration>,
    /// Create the destination queue if it does not exist, so that the request waits for the
    /// service to start (the reference behaviour). When false, a missing queue fails the
    /// call with [`Error::QueueDeleted`].
    pub create_queue: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: None,
            create_queue: true,
        }
    }
}

/// An RPC client of one switch. Cheap to clone; clones share the connections, the reply
/// queue and the waiters. When the last clone is dropped, the background reply listener is
/// stopped and the connections close, so the switch removes the reply queue.
pub struct Client<C: Connector> {
    shared: Arc<Shared<C>>,
    _listener: Arc<AbortOnDrop>,
}

impl<C: Connector> Clone for Client<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            _listener: Arc::clone(&self._listener),
        }
    }
}

impl<C: Connector> Client<C> {
    /// Connects, logs in, creates the reply queue (named after the token, as the reference
    /// client does) and starts the reply listener (a task spawned with `tokio::spawn`).
    /// Fails at once if the switch cannot be reached: only an established client reconnects.
    pub async fn connect(connector: C, config: ClientConfig) -> Result<Client<C>, Error> {
        let mut connection = Connection::open(&connector, &config.connection).await?;
        connection.login(&config.token).await?;
        let wanted = QueueName::new(config.token.as_bytes());
        let answered = connection.create_transient(&wanted).await?;
        // The reference clients use the reply body as the queue name; an empty body could
        // only come from a broken switch, and the name we asked for is then the best guess.
        let reply_queue = if answered.is_empty() {
            wanted
        } else {
            answered
        };
        let shared = Arc::new(Shared {
            connector,
            config,
            reply_queue,
            requests: tokio::sync::Mutex::new(Some(connection)),
            correlation: Arc::new(Mutex::new(Correlation::default())),
        });
        let listener = tokio::spawn(listen_for_replies(Arc::clone(&shared)));
        Ok(Client {
            shared,
            _listener: Arc::new(AbortOnDrop(listener)),
        })
    }

    /// The session token this client logs in with.
    pub fn token(&self) -> &SessionToken {
        &self.shared.config.token
    }

    /// The client's reply queue.
    pub fn reply_queue(&self) -> &QueueName {
        &self.shared.reply_queue
    }

    /// How many calls are currently waiting for a response. A call that returns, times out
    /// or is cancelled no longer counts.
    pub fn waiter_count(&self) -> usize {
        lock(&self.shared.correlation).waiters.len()
    }

    /// Sends `body` to `queue` and waits for the response, for at most `timeout` if given.
    /// Creates `queue` if it does not exist (see [`CallOptions`]). See the module docs for
    /// retries and their duplicates. Only transport failures are retried (with exponential
    /// back-off and jitter); a switch that refuses the request (a 4xx, such as 429 when a
    /// limit is reached) fails the call at once with [`Error::Status`], so that an overloaded
    /// switch is not hammered and the caller decides what to do.
    pub async fn call(
        &self,
        queue: &QueueName,
        body: impl Into<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Bytes, Error> {
        let options = CallOptions {
            timeout,
            ..CallOptions::default()
        };
        self.call_with(queue, body.into(), &options).await
    }

    /// [`Client::call`] with all options.
    pub async fn call_with(
        &self,
        queue: &QueueName,
        body: Bytes,
        options: &CallOptions,
    ) -> Result<Bytes, Error> {
        let exchange = async {
            let mut waiter = self.send_call(queue, body, options.create_queue).await?;
            waiter.response().await
        };
        match options.timeout {
            // Dropping `exchange` on timeout drops its waiter, which unregisters it.
            Some(timeout) => tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::CallTimedOut {
                        queue: queue.clone(),
                        timeout,
                    })
                }),
            None => exchange.await,
        }
    }

    /// `GET /list/…`: queue names starting with `prefix`; with `alive_only`, only those some
    /// listener has polled.
    pub async fn list(
        &self,
        prefix: &QueueName,
        alive_only: bool,
    ) -> Result<Vec<QueueName>, Error> {
        let body = self
            .execute(Request::List {
                prefix: prefix.clone(),
                alive_only,
            })
            .await?;
        Ok(decode_list(&body)?)
    }

    /// `GET /`: the switch's state.
    pub async fn diagnostics(&self) -> Result<Diagnostics, Error> {
        let body = self.execute(Request::Diagnostics).await?;
        Ok(Diagnostics::decode(&body)?)
    }

    /// `GET /trace/FROM/TIMEOUT`: see [`Connection::trace`]. Blocks the requests connection
    /// (and so other calls' Sends) for up to `timeout`.
    pub async fn trace(
        &self,
        from: i64,
        timeout: Duration,
    ) -> Result<Vec<(i64, TraceEvent)>, Error> {
        let body = self
            .execute(Request::Trace {
                from,
                timeout_s: timeout.as_secs_f64(),
            })
            .await?;
        Ok(decode_trace(&body)?)
    }

    /// `GET /ack/QUEUE/N`: deletes a message.
    pub async fn ack(&self, id: &MessageId) -> Result<(), Error> {
        self.execute(Request::Ack(id.clone())).await.map(drop)
    }

    /// `GET /persistent/NAME`: creates a queue that outlives sessions.
    pub async fn create_persistent(&self, name: &QueueName) -> Result<QueueName, Error> {
        self.execute(Request::CreatePersistent(name.clone()))
            .await
            .map(QueueName::new)
    }

    /// `GET /destroy/NAME`: removes a queue and its messages.
    pub async fn destroy(&self, name: &QueueName) -> Result<(), Error> {
        self.execute(Request::Destroy(name.clone())).await.map(drop)
    }

    /// `POST /shutdown`: asks the switch to shut down.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.execute(Request::Shutdown).await.map(drop)
    }

    /// Acks the responses that were parked and are now handed over or known to be orphans.
    /// Normally there are none. Doing it here rather than in the reply listener means they
    /// leave the reply queue at once instead of after the listener's current long poll.
    async fn ack_unclaimed(&self) {
        let mut unclaimed = UnclaimedAcks::take(&self.shared.correlation);
        while let Some(id) = unclaimed.ids.pop() {
            if let Err(error) = self.execute(Request::Ack(id.clone())).await {
                tracing::debug!(%error, "cannot ack a response yet; the listener will");
                unclaimed.ids.push(id);
                return;
            }
        }
    }

    /// One request on the requests connection, reconnecting first if it is gone. No retry:
    /// the caller decides whether repeating is safe.
    async fn execute(&self, request: Request) -> Result<Bytes, Error> {
        let mut slot = self.shared.requests.lock().await;
        let connection = self.shared.usable(&mut slot).await?;
        connection.execute(&request).await
    }

    /// Sends the request of a call (creating the queue if needed and allowed, retrying after
    /// transport errors) and returns the registered waiter.
    async fn send_call(
        &self,
        queue: &QueueName,
        body: Bytes,
        create_queue: bool,
    ) -> Result<Waiter, Error> {
        // Counted as "sending" from before the Send until the waiter is registered, so that
        // the reply listener parks a response that overtakes the registration.
        let sending = Sending::start(&self.shared.correlation);
        let mut backoff = self.shared.backoff();
        let mut created = false;
        loop {
            let send = Request::Send {
                queue: queue.clone(),
                message: Message {
                    payload: body.clone(),
                    kind: MessageKind::Request {
                        reply_to: self.shared.reply_queue.clone(),
                    },
                },
            };
            let sent = match self.execute(send).await {
                Ok(reply) => decode_sent(&reply).map_err(Error::from),
                Err(error) => Err(error),
            };
            let error = match sent {
                Ok(Some(id)) => {
                    let waiter = sending.register(id);
                    self.ack_unclaimed().await;
                    return Ok(waiter);
                }
                Ok(None) if create_queue && !created => {
                    match self.execute(Request::CreatePersistent(queue.clone())).await {
                        Ok(_) => {
                            created = true;
                            continue;
                        }
                        Err(error) => error,
                    }
                }
                Ok(None) => return Err(Error::QueueDeleted(queue.clone())),
                Err(error) => error,
            };
            if !error.is_transport() {
                return Err(error);
            }
            tracing::debug!(%error, "call: switch unavailable, retrying");
            backoff.wait().await;
        }
    }
}

/// A session token unique within this process: `PROGRAM:PID` (the reference's `whoami`)
/// for the first one asked for, `PROGRAM:PID.N` after that, so that several clients in one
/// process get distinct reply queues.
pub fn default_token() -> SessionToken {
    static TOKENS_ISSUED: AtomicU64 = AtomicU64::new(0);
    let issued = TOKENS_ISSUED.fetch_add(1, Ordering::Relaxed);
    let program = std::env::args_os()
        .next()
        .and_then(|argv0| {
            Path::new(&argv0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "client".to_owned());
    let pid = std::process::id();
    if issued == 0 {
        SessionToken::from(format!("{program}:{pid}"))
    } else {
        SessionToken::from(format!("{program}:{pid}.{issued}"))
    }
}

struct Shared<C> {
    connector: C,
    config: ClientConfig,
    reply_queue: QueueName,
    /// The connection for Sends and one-off requests. One request at a time: holders of the
    /// lock use it for one exchange and release it.
    requests: tokio::sync::Mutex<Option<Connection>>,
    correlation: Arc<Mutex<Correlation>>,
}

impl<C: Connector> Shared<C> {
    /// A logged-in connection on which the reply queue has been (re-)created.
    async fn open_session(&self) -> Result<Connection, Error> {
        let mut connection = Connection::open(&self.connector, &self.config.connection).await?;
        connection.login(&self.config.token).await?;
        connection.create_transient(&self.reply_queue).await?;
        Ok(connection)
    }

    /// The connection in `slot`, replaced by a new session if it is missing or broken.
    async fn usable<'a>(
        &self,
        slot: &'a mut Option<Connection>,
    ) -> Result<&'a mut Connection, Error> {
        let connection = match slot.take().filter(Connection::is_usable) {
            Some(connection) => connection,
            None => self.open_session().await?,
        };
        Ok(slot.insert(connection))
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            self.config.reconnect_delay_min,
            self.config.reconnect_delay_max,
            self.config.jitter.clone(),
        )
    }

    /// Acks the parked responses whose ack is still due (see [`Client::ack_unclaimed`]).
    async fn ack_unclaimed(&self, connection: &mut Connection) -> Result<(), Error> {
        let mut unclaimed = UnclaimedAcks::take(&self.correlation);
        while let Some(id) = unclaimed.ids.pop() {
            if let Err(error) = connection.ack(&id).await {
                unclaimed.ids.push(id);
                return Err(error);
            }
        }
        Ok(())
    }
}

/// The reply listener: long-polls the reply queue, hands responses to their waiters and acks
/// them, for as long as the client lives; reconnects with back-off on any failure.
async fn listen_for_replies<C: Connector>(shared: Arc<Shared<C>>) {
    let mut backoff = shared.backoff();
    let queues = [shared.reply_queue.clone()];
    loop {
        let mut connection = match shared.open_session().await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::debug!(%error, "reply listener cannot connect");
                backoff.wait().await;
                continue;
            }
        };
        let mut from = None;
        let error = 'session: loop {
            if let Err(error) = shared.ack_unclaimed(&mut connection).await {
                break error;
            }
            let reply = match connection
                .transfer(from, shared.config.transfer_timeout, &queues)
                .await
            {
                Ok(reply) => reply,
                Err(error) => break error,
            };
            // Only a long poll that came back is progress (see `serve`): a switch that takes
            // connections and refuses the Transfer must not be retried at the minimum delay.
            backoff.reset();
            if !reply.messages.is_empty() {
                from = Some(reply.next);
            }
            for (id, message) in reply.messages {
                // A request in a reply queue is not ours to answer; like the reference client,
                // leave it alone.
                let MessageKind::Response { request } = message.kind else {
                    continue;
                };
                let ack = lock(&shared.correlation).deliver(request, id, message.payload);
                if let Some(ack) = ack {
                    if let Err(error) = connection.ack(&ack).await {
                        break 'session error;
                    }
                }
            }
        };
        tracing::debug!(%error, "reply listener lost its connection");
        backoff.wait().await;
    }
}

/// Who waits for which response.
#[derive(Default)]
struct Correlation {
    /// Registered calls, by the id of their request.
    waiters: BTreeMap<MessageId, oneshot::Sender<Bytes>>,
    /// Calls between starting their Send and registering their waiter.
    sending: usize,
    /// Responses that arrived while some call was still sending, so that their waiter may
    /// not be registered yet: request id → (response id, payload).
    parked: BTreeMap<MessageId, (MessageId, Bytes)>,
    /// Responses handed over or found to be orphans after parking, still to be acked (by the
    /// call that registered, or else by the listener).
    acks: Vec<MessageId>,
}

impl Correlation {
    /// Routes the response `response` to the request `request`. Returns the id to ack now, or
    /// `None` when the response was parked.
    fn deliver(
        &mut self,
        request: MessageId,
        response: MessageId,
        payload: Bytes,
    ) -> Option<MessageId> {
        if let Some(waiter) = self.waiters.remove(&request) {
            // If the call was cancelled in the meantime, the response is dropped either way.
            let _ = waiter.send(payload);
            Some(response)
        } else if self.sending > 0 {
            self.parked.insert(request, (response, payload));
            None
        } else {
            // A late reply to a call that timed out or was cancelled (or a duplicate).
            tracing::debug!(%request, "dropping a response nobody waits for");
            Some(response)
        }
    }

    /// Once no call is sending, nobody can claim a parked response any more.
    fn sweep(&mut self) {
        if self.sending == 0 {
            let parked = std::mem::take(&mut self.parked);
            self.acks
                .extend(parked.into_values().map(|(response, _)| response));
        }
    }
}

/// A call between the start of its Send and the registration of its waiter. Dropping it
/// unregistered (the Send failed or the call was cancelled) ends the "sending" state.
struct Sending {
    correlation: Arc<Mutex<Correlation>>,
    registered: bool,
}

impl Sending {
    fn start(correlation: &Arc<Mutex<Correlation>>) -> Sending {
        lock(correlation).sending += 1;
        Sending {
            correlation: Arc::clone(correlation),
            registered: false,
        }
    }

    /// Registers the waiter for the request `id`, taking a parked response if one came first.
    fn register(mut self, id: MessageId) -> Waiter {
        let (sender, receiver) = oneshot::channel();
        let mut correlation = lock(&self.correlation);
        correlation.sending -= 1;
        self.registered = true;
        match correlation.parked.remove(&id) {
            Some((response, payload)) => {
                correlation.acks.push(response);
                let _ = sender.send(payload);
            }
            None => {
                correlation.waiters.insert(id.clone(), sender);
            }
        }
        correlation.sweep();
        drop(correlation);
        Waiter {
            correlation: Arc::clone(&self.correlation),
            id,
            receiver,
        }
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if !self.registered {
            let mut correlation = lock(&self.correlation);
            correlation.sending -= 1;
            correlation.sweep();
        }
    }
}

/// A registered call. Dropping it (timeout, cancellation, or after the response) removes its
/// entry, so no waiter outlives its call.
struct Waiter {
    correlation: Arc<Mutex<Correlation>>,
    id: MessageId,
    receiver: oneshot::Receiver<Bytes>,
}

impl Waiter {
    async fn response(&mut self) -> Result<Bytes, Error> {
        (&mut self.receiver)
            .await
            .map_err(|_| Error::Disconnected("the client's reply listener stopped".into()))
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        lock(&self.correlation).waiters.remove(&self.id);
    }
}

/// Acks taken out of [`Correlation::acks`] to be sent; whatever is left when this is dropped
/// (an error, or the call was cancelled) goes back for the next attempt.
struct UnclaimedAcks {
    correlation: Arc<Mutex<Correlation>>,
    ids: Vec<MessageId>,
}

impl UnclaimedAcks {
    fn take(correlation: &Arc<Mutex<Correlation>>) -> UnclaimedAcks {
        let ids = std::mem::take(&mut lock(correlation).acks);
        UnclaimedAcks {
            correlation: Arc::clone(correlation),
            ids,
        }
    }
}

impl Drop for UnclaimedAcks {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            lock(&self.correlation).acks.append(&mut self.ids);
        }
    }
}

/// Aborts the reply listener when the last clone of the client is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Locks a mutex; a panic while holding it cannot leave `Correlation` inconsistent in a way
/// that matters more than losing the client, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> MessageId {
        MessageId::new("svc".into(), n)
    }

    fn response_id(n: i64) -> MessageId {
        MessageId::new("reply".into(), n)
    }

    #[test]
    fn a_response_reaches_its_waiter_and_is_acked() {
        let correlation = Arc::new(Mutex::new(Correlation::default()));
        let mut waiter = Sending::start(&correlation).register(id(1));
        let ack = lock(&correlation).deliver(id(1), response_id(7), Bytes::from_static(b"ok"));
        assert_eq!(ack, Some(response_id(7)));
        assert_eq!(
            waiter.receiver.try_recv().unwrap(),
            Bytes::from_static(b"ok")
        );
        drop(waiter);
        assert!(lock(&correlation).waiters.is_empty());
    }

    #[test]
    fn a_response_that_overtakes_registration_is_parked_then_claimed() {
        let correlation = Arc::new(Mutex::new(Correlation::default()));
        let sending = Sending::start(&correlation);
        let ack = lock(&correlation).deliver(id(1), response_id(7), Bytes::from_static(b"ok"));
        assert_eq!(ack, None, "parked while a call is sending");
        let mut waiter = sending.register(id(1));
        assert_eq!(
            waiter.receiver.try_recv().unwrap(),
            Bytes::from_static(b"ok")
        );
        let correlation = lock(&correlation);
        assert_eq!(correlation.acks, vec![response_id(7)]);
        assert!(correlation.parked.is_empty());
        assert!(correlation.waiters.is_empty());
    }

    #[test]
    fn parked_orphans_are_acked_once_nobody_is_sending() {
        let correlation = Arc::new(Mutex::new(Correlation::default()));
        let first = Sending::start(&correlation);
        let second = Sending::start(&correlation);
        lock(&correlation).deliver(id(9), response_id(1), Bytes::new());
        let _waiter = first.register(id(1));
        assert_eq!(
            lock(&correlation).parked.len(),
            1,
            "second may still claim it"
        );
        drop(second);
        let correlation = lock(&correlation);
        assert!(correlation.parked.is_empty());
        assert_eq!(correlation.acks, vec![response_id(1)]);
    }

    #[test]
    fn a_late_response_is_acked_and_dropped() {
        let correlation = Arc::new(Mutex::new(Correlation::default()));
        let waiter = Sending::start(&correlation).register(id(1));
        drop(waiter);
        assert!(lock(&correlation).waiters.is_empty());
        let ack = lock(&correlation).deliver(id(1), response_id(3), Bytes::new());
        assert_eq!(ack, Some(response_id(3)));
    }

    #[test]
    fn default_tokens_are_unique_and_look_like_whoami() {
        let first = default_token().to_text();
        let second = default_token().to_text();
        assert_ne!(first, second);
        let pid = std::process::id().to_string();
        assert!(first.contains(&format!(":{pid}")), "{first}");
    }
}
