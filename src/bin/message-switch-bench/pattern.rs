//! The real clients' pattern: RPC exactly as the OCaml `message-switch-unix` library does it
//! (`ocaml/message-switch/unix/protocol_unix.ml` in xapi-project/xen-api), which is how
//! xapi, xenopsd and the other toolstack services talk through the switch.
//!
//! Per RPC, seven HTTP exchanges:
//!
//! | who | connection | exchange |
//! |---|---|---|
//! | caller (`Client.rpc`) | requests | `GET /persistent/QUEUE` (CreatePersistent, before every request) |
//! | caller | requests | `POST /request/QUEUE/REPLY_QUEUE` (Send) |
//! | service (`Server.listen`) | request | `POST /transfer` that returns the request |
//! | service's handler thread | reply | `POST /response/…` (Send of the response) |
//! | service's handler thread | reply | `GET /ack/QUEUE/N` (Ack of the request) |
//! | caller's listener thread | events | `POST /transfer` that returns the response |
//! | caller's listener thread | events | `GET /ack/REPLY_QUEUE/N` (Ack of the response), then wakes the caller |
//!
//! The caller logs in on two connections and creates its reply queue with `CreateTransient
//! TOKEN`; the service logs in on two connections (and again on the first, as the original
//! does), creates its queue once, and shares one reply connection between all its handlers
//! under a lock, taken separately for the response and for the ack. Long polls ask for 30 s
//! (the library's `Protocol.timeout`). Unlike [`rpc`](crate::rpc::rpc), which uses this
//! crate's client (six exchanges, no CreatePersistent), nothing here is optimised.

use std::slice;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

use message_switch::client::{Connection, ConnectionConfig, Connector};
use message_switch::protocol::{MessageId, MessageKind, QueueName, SessionToken};

use crate::measure::{Throughput, Timing};
use crate::rpc::{measure_calls, payload, Caller, CALL_TIMEOUT, PAYLOAD};

/// What the OCaml library asks every long poll to wait (`Protocol.timeout`).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// Responses a caller's listener may hold for its caller (one call is in flight at a time,
/// so one would do; a few leave room for a duplicate).
const RESPONSES_BUFFERED: usize = 4;

/// The real pattern through the switch (process `switch_pid`): one service on queue
/// `bench.real.TAG` echoing each body, and `concurrency` callers, each making one call after
/// another, all over `connector`.
pub async fn real<C: Connector>(
    connector: C,
    switch_pid: u32,
    concurrency: usize,
    timing: Timing,
    tag: &str,
) -> Result<Throughput> {
    let queue = QueueName::from(format!("bench.real.{tag}"));
    let mut tasks = JoinSet::new();
    let token = SessionToken::from(format!("bench-real-service:{tag}"));
    let service = Service::connect(&connector, &queue, &token).await?;
    tasks.spawn(service.run());
    let mut callers = Vec::with_capacity(concurrency);
    for index in 0..concurrency {
        let token = SessionToken::from(format!("bench-real-caller:{tag}.{index}"));
        let (caller, listener) = OcamlCaller::connect(&connector, queue.clone(), &token).await?;
        tasks.spawn(listener.run());
        callers.push(caller);
    }
    let measured = measure_calls(&connector, switch_pid, timing, callers).await;
    // A failed listener or service shows up as callers timing out; say why.
    if measured.is_err() {
        while let Some(Ok(Err(error))) = tasks.try_join_next() {
            eprintln!("[bench] real pattern: {error:#}");
        }
    }
    // Dropping the tasks closes their connections: the switch removes the callers' transient
    // queues.
    drop(tasks);
    measured
}

/// `Client.rpc`: CreatePersistent and Send on the requests connection, then wait for the
/// listener to hand over the response.
struct OcamlCaller {
    requests: Connection,
    queue: QueueName,
    reply_queue: QueueName,
    responses: mpsc::Receiver<(MessageId, Bytes)>,
}

/// The caller's listener thread: long-polls the reply queue on the events connection, acks
/// each response, then passes it to the caller.
struct Listener {
    events: Connection,
    reply_queue: QueueName,
    responses: mpsc::Sender<(MessageId, Bytes)>,
}

impl OcamlCaller {
    /// `Client.connect`: two connections logged in with `token`, and the reply queue
    /// (`CreateTransient token`, whose answer is the queue's name).
    async fn connect<C: Connector>(
        connector: &C,
        queue: QueueName,
        token: &SessionToken,
    ) -> Result<(OcamlCaller, Listener)> {
        let mut requests = logged_in(connector, token).await?;
        let events = logged_in(connector, token).await?;
        let reply_queue = requests
            .create_transient(&QueueName::new(token.as_bytes()))
            .await?;
        let (sender, responses) = mpsc::channel(RESPONSES_BUFFERED);
        let caller = OcamlCaller {
            requests,
            queue,
            reply_queue: reply_queue.clone(),
            responses,
        };
        let listener = Listener {
            events,
            reply_queue,
            responses: sender,
        };
        Ok((caller, listener))
    }
}

impl Caller for OcamlCaller {
    async fn call(&mut self) -> Result<()> {
        self.requests.create_persistent(&self.queue).await?;
        let id = self
            .requests
            .send_request(&self.queue, &self.reply_queue, payload())
            .await?
            .context("the service's queue is gone")?;
        loop {
            let response = tokio::time::timeout(CALL_TIMEOUT, self.responses.recv()).await;
            let Ok(Some((request, body))) = response else {
                bail!("no response within {CALL_TIMEOUT:?} (or the listener stopped)");
            };
            // A response to another call (a duplicate; none arise in this workload) is
            // skipped, as the original's wakener table would (which also leaves it unacked).
            if request == id {
                ensure!(body.len() == PAYLOAD.len(), "wrong response");
                return Ok(());
            }
        }
    }
}

impl Listener {
    async fn run(mut self) -> Result<()> {
        let mut from = None;
        loop {
            let transfer = self
                .events
                .transfer(from, TRANSFER_TIMEOUT, slice::from_ref(&self.reply_queue))
                .await?;
            if transfer.messages.is_empty() {
                continue;
            }
            for (id, message) in transfer.messages {
                if let MessageKind::Response { request } = message.kind {
                    self.events.ack(&id).await?;
                    if self
                        .responses
                        .send((request, message.payload))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
            from = Some(transfer.next);
        }
    }
}

/// `Server.listen`: Transfer on the request connection; each request handled by its own
/// task, which sends the response and then the ack on the shared reply connection.
struct Service {
    requests: Connection,
    replies: Arc<Mutex<Connection>>,
    queue: QueueName,
}

impl Service {
    async fn connect<C: Connector>(
        connector: &C,
        queue: &QueueName,
        token: &SessionToken,
    ) -> Result<Service> {
        let mut requests = logged_in(connector, token).await?;
        let replies = logged_in(connector, token).await?;
        // The original logs in on the request connection a second time.
        requests.login(token).await?;
        requests.create_persistent(queue).await?;
        Ok(Service {
            requests,
            replies: Arc::new(Mutex::new(replies)),
            queue: queue.clone(),
        })
    }

    async fn run(mut self) -> Result<()> {
        let mut from = None;
        let mut handlers = JoinSet::new();
        loop {
            let transfer = self
                .requests
                .transfer(from, TRANSFER_TIMEOUT, slice::from_ref(&self.queue))
                .await?;
            while let Some(handled) = handlers.try_join_next() {
                handled.context("a handler panicked")??;
            }
            if transfer.messages.is_empty() {
                continue;
            }
            for (id, message) in transfer.messages {
                if let MessageKind::Request { reply_to } = message.kind {
                    // The handler echoes the body.
                    let replies = Arc::clone(&self.replies);
                    handlers.spawn(respond(replies, id, reply_to, message.payload));
                }
            }
            from = Some(transfer.next);
        }
    }
}

async fn respond(
    replies: Arc<Mutex<Connection>>,
    id: MessageId,
    reply_to: QueueName,
    body: Bytes,
) -> Result<()> {
    replies
        .lock()
        .await
        .send_response(&reply_to, &id, body)
        .await?;
    replies.lock().await.ack(&id).await?;
    Ok(())
}

async fn logged_in<C: Connector>(connector: &C, token: &SessionToken) -> Result<Connection> {
    let mut connection = Connection::open(connector, &ConnectionConfig::default()).await?;
    connection.login(token).await?;
    Ok(connection)
}
