//! One HTTP/1.1 connection: hyper parses requests, this module routes them, hands the
//! resulting command to the driver and encodes its reply. No business rules live here.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONNECTION, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;

use super::admission::{most_troubled, Admit, REFUSAL_LOG_INTERVAL};
use super::client::ClientId;
use super::driver::{Attempt, Command, InPlace};
use super::head_timeout::{HeadTimeoutIo, RequestTracker, Serving};
use super::in_place::Round;
use super::metrics::{self, Route};
use super::refusal_backoff::RefusalBackoff;
use super::shutdown_signal::Stopping;
use super::transfer_body::TransferBody;
use super::{web, Shared};
use crate::engine::ConnectionId;
use crate::protocol::{Reply, Request, RouteError};
use crate::store::StatsHandle;

/// Most clients given their own series in `/metrics` (the most refused or held back first,
/// then those with the most connections), to bound label cardinality.
const METRICS_CLIENTS_MAX: usize = 50;

/// The reference's body for a request that failed while being handled (cohttp's text).
const INTERNAL_ERROR: &str = "Error: Internal Server Error";

/// The longest a connection over the connection limit is kept, from its accept, to deliver
/// its 429: it holds a descriptor and a slot of nothing useful.
const OVER_LIMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one accepted connection of `client` until the peer closes it or the switch shuts
/// down, then tells the driver, which cleans up the connection's session. A connection over
/// the switch-wide or the client's limits gets a 429 and is closed; one over its client's
/// rate is first held back (not read) until its turn.
pub(crate) async fn serve_connection<Io>(shared: Arc<Shared>, io: Io, client: ClientId)
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = ConnectionId(shared.next_connection.fetch_add(1, Ordering::Relaxed));
    let open = shared.open_connections.fetch_add(1, Ordering::AcqRel) + 1;
    let _open_guard = OpenGuard(shared.clone());
    let (_ticket, refusal) = if open > shared.config.connections_max {
        let refusal = format!(
            "too many open connections (limit {})",
            shared.config.connections_max
        );
        (None, Some(refusal))
    } else {
        match shared.admission.admit(client, tokio::time::Instant::now()) {
            Admit::Serve { ticket, hold } => {
                if !hold.is_zero() && !wait_unless_stopping(&shared, hold).await {
                    return;
                }
                (Some(ticket), None)
            }
            Admit::Refuse { refusal, log } => {
                let limits = shared.admission.limits();
                if let Some(refused) = log {
                    tracing::warn!(
                        %client,
                        reason = refusal.label(),
                        refused,
                        "refused connections over the per-client limits (this client's last; \
                         logged at most every {} s, see /metrics for each client)",
                        REFUSAL_LOG_INTERVAL.as_secs()
                    );
                }
                (None, Some(refusal.message(client, limits)))
            }
        }
    };
    let over_limit = refusal.is_some();
    if !over_limit
        && shared
            .commands
            .send(Command::Connect { connection, client })
            .await
            .is_err()
    {
        return;
    }
    let tracker = Arc::new(RequestTracker::default());
    let head_timeout = if over_limit {
        Some(
            shared
                .config
                .request_head_timeout
                .map_or(OVER_LIMIT_TIMEOUT, |limit| limit.min(OVER_LIMIT_TIMEOUT)),
        )
    } else {
        shared.config.request_head_timeout
    };
    let io = HeadTimeoutIo::new(io, head_timeout, tracker.clone(), over_limit);
    let service_shared = shared.clone();
    let refusal: Option<Arc<str>> = refusal.map(Arc::from);
    let backoff = Arc::new(RefusalBackoff::default());
    let service = service_fn(move |request| {
        let shared = service_shared.clone();
        let refusal = refusal.clone();
        let backoff = backoff.clone();
        // The head is complete: stop its timer until this request has been answered.
        let serving = Serving::start(&tracker);
        async move {
            let asker = Asker {
                connection,
                client,
                backoff: &backoff,
            };
            let response = handle(shared, asker, refusal.as_deref(), request).await;
            drop(serving);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = http1::Builder::new();
    // Sessions live on connections, so idle keep-alive connections must never be timed out,
    // and a blocked Transfer must notice the peer's EOF at once (no half-close). hyper's
    // header-read timeout is off because it also runs while a connection is idle; the
    // request-head timeout is `HeadTimeoutIo`'s instead.
    builder
        .keep_alive(!over_limit)
        .half_close(false)
        .header_read_timeout(None)
        .auto_date_header(false);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let stopping = Stopping::new(&shared.shutdown);
    let result = tokio::select! {
        biased;
        result = conn.as_mut() => result,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(error) = result {
        // A peer that goes away mid-request is routine for a long-poll server.
        tracing::debug!(connection = connection.0, %error, "connection ended with an error");
    }
    if !over_limit {
        let _ = shared.commands.send(Command::Disconnect(connection)).await;
    }
}

struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let before = self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
        if before == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// Waits `hold`, or less if the switch begins shutting down: whether the wait ran out.
async fn wait_unless_stopping(shared: &Shared, hold: Duration) -> bool {
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        biased;
        _ = shutdown.wait_for(|stopping| *stopping) => false,
        () = tokio::time::sleep(hold) => true,
    }
}

/// Who asks a request: its connection, the connection's client and its run of refusals.
struct Asker<'a> {
    connection: ConnectionId,
    client: ClientId,
    backoff: &'a RefusalBackoff,
}

/// Answers one request: with 429 and `refusal` on a connection over a limit.
async fn handle(
    shared: Arc<Shared>,
    asker: Asker<'_>,
    refusal: Option<&str>,
    request: hyper::Request<Incoming>,
) -> Response<Either<Full<Bytes>, TransferBody>> {
    if let Some(refusal) = refusal {
        let mut response = text(StatusCode::TOO_MANY_REQUESTS, refusal.to_owned());
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return whole(response);
    }
    let started = tokio::time::Instant::now();
    let (parts, body) = request.into_parts();
    let body = match read_body(
        body,
        shared.config.body_bytes_max,
        shared.config.request_head_timeout,
    )
    .await
    {
        Ok(body) => body,
        Err(response) => return whole(response),
    };
    let path = parts.uri.path();
    let (route, response) = match Request::route(parts.method.as_str(), path, body) {
        Ok(request) => {
            let route = Route::of(&request);
            // hyper moves the handler's future into place for every request, so what only a
            // few requests need is boxed rather than made part of it.
            let response = match answer_now(&shared, asker.connection, request, started) {
                Ok(response) => response,
                Err(Unanswered::Awaiting(receiver)) => respond_when(receiver).await,
                Err(unanswered) => {
                    Box::pin(answer_later(&shared, asker.connection, unanswered, started)).await
                }
            };
            let delay = asker
                .backoff
                .delay_for(response.status(), shared.config.refusal_delay_max);
            if !delay.is_zero() {
                shared.admission.count_refusal_held(asker.client, delay);
                // A shutdown answers at once: the connection is about to close anyway.
                Box::pin(wait_unless_stopping(&shared, delay)).await;
            }
            (route, response)
        }
        Err(error) => (
            Route::Invalid,
            whole(route_error(error, &parts.headers, path)),
        ),
    };
    shared.http_metrics.observe(route, started.elapsed());
    response
}

fn route_error(error: RouteError, headers: &hyper::HeaderMap, path: &str) -> Response<Full<Bytes>> {
    match error {
        RouteError::NotFound => {
            let host = headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            text(StatusCode::NOT_FOUND, format!("Not found: //{host}{path}"))
        }
        RouteError::Malformed(detail) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{INTERNAL_ERROR}: {detail}"),
        ),
    }
}

/// What answering a routed request needs beyond [`answer_now`].
enum Unanswered {
    /// The metrics page, which asks the driver for its counts.
    Metrics,
    /// The engine took the request in place and answers it later.
    Awaiting(oneshot::Receiver<Reply>),
    /// The client had spent its in-place credit in this round.
    OutOfCredit(Request, Round),
    /// For the driver's task.
    ForTheDriver(Request),
}

/// Answers a routed request at once if it can: the operator surfaces, and a request the
/// engine answers in place (`super::in_place`). Nothing here awaits, so the common exchange
/// builds no future beyond the handler's own.
fn answer_now(
    shared: &Shared,
    connection: ConnectionId,
    request: Request,
    arrived: tokio::time::Instant,
) -> Result<Response<Either<Full<Bytes>, TransferBody>>, Unanswered> {
    match request {
        Request::Web(segments) => Ok(whole(web::console(
            &segments,
            &shared.samples,
            &shared.admission,
        ))),
        Request::Metrics => Err(Unanswered::Metrics),
        Request::Health => Ok(whole(health(shared))),
        request => {
            match shared
                .driver
                .answer_in_place(connection, request, &shared.commands, arrived)
            {
                Attempt::Done(InPlace::Answered(reply)) => Ok(respond(reply)),
                Attempt::Done(InPlace::Awaiting(receiver)) => Err(Unanswered::Awaiting(receiver)),
                Attempt::Done(InPlace::Declined(request)) => Err(Unanswered::ForTheDriver(request)),
                Attempt::OutOfCredit(request, round) => {
                    Err(Unanswered::OutOfCredit(request, round))
                }
            }
        }
    }
}

/// Answers what [`answer_now`] could not.
async fn answer_later(
    shared: &Shared,
    connection: ConnectionId,
    unanswered: Unanswered,
    arrived: tokio::time::Instant,
) -> Response<Either<Full<Bytes>, TransferBody>> {
    let request = match unanswered {
        Unanswered::Metrics => return whole(metrics_page(shared).await),
        Unanswered::Awaiting(receiver) => return respond_when(receiver).await,
        Unanswered::OutOfCredit(request, round) => match shared
            .driver
            .answer_in_place_after(round, connection, request, &shared.commands, arrived)
            .await
        {
            InPlace::Answered(reply) => return respond(reply),
            InPlace::Awaiting(receiver) => return respond_when(receiver).await,
            InPlace::Declined(request) => request,
        },
        Unanswered::ForTheDriver(request) => request,
    };
    let (reply_sender, reply_receiver) = oneshot::channel();
    let command = Command::Request {
        connection,
        request,
        reply: reply_sender,
    };
    // The queue to the driver nearly always has room: hand the command over at once, and
    // build the waiting send (which moves the command again) only when it is full. Waiting
    // senders are served first either way: a free slot is never left while one waits.
    match shared.commands.try_send(command) {
        Ok(()) => {}
        Err(TrySendError::Full(command)) => {
            if shared.commands.send(command).await.is_err() {
                return shutting_down();
            }
        }
        Err(TrySendError::Closed(_)) => return shutting_down(),
    }
    respond_when(reply_receiver).await
}

/// The response to the reply that `receiver` brings; a reply dropped unsent means the
/// driver stopped.
async fn respond_when(
    receiver: oneshot::Receiver<Reply>,
) -> Response<Either<Full<Bytes>, TransferBody>> {
    match receiver.await {
        Ok(reply) => respond(reply),
        Err(_) => shutting_down(),
    }
}

/// The response that carries `reply`: a large Transfer streamed, anything else whole.
fn respond(reply: Reply) -> Response<Either<Full<Bytes>, TransferBody>> {
    match reply {
        Reply::Transfer(transfer) if TransferBody::worth_streaming(&transfer) => {
            Response::new(Either::Right(TransferBody::new(transfer)))
        }
        reply => whole(encode(&reply)),
    }
}

fn shutting_down() -> Response<Either<Full<Bytes>, TransferBody>> {
    whole(text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the switch is shutting down",
    ))
}

async fn metrics_page(shared: &Shared) -> Response<Full<Bytes>> {
    let (reply, inspection) = oneshot::channel();
    let command = Command::Inspect {
        queues_max: shared.config.metrics_queues_max,
        trace_from: None,
        reply,
    };
    if shared.commands.send(command).await.is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the switch is shutting down",
        );
    }
    let Ok(inspection) = inspection.await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the switch is shutting down",
        );
    };
    let journal = shared.journal_stats.as_ref().map(StatsHandle::get);
    let clients = most_troubled(shared.admission.counts(), METRICS_CLIENTS_MAX);
    let body = metrics::render(
        &inspection,
        &shared.http_metrics,
        shared.sync_latency.as_deref().zip(journal.as_ref()),
        shared.config.engine.trace_bytes_max,
        &clients,
    );
    web::typed(
        StatusCode::OK,
        body,
        "text/plain; version=0.0.4; charset=utf-8",
    )
}

/// Ready once the switch serves (recovery finishes before any listener is served); not
/// ready while shutting down, so load balancers and supervisors stop sending work.
fn health(shared: &Shared) -> Response<Full<Bytes>> {
    if *shared.shutdown.borrow() {
        web::typed(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping\n".to_owned(),
            "text/plain; charset=utf-8",
        )
    } else {
        web::typed(
            StatusCode::OK,
            "ready\n".to_owned(),
            "text/plain; charset=utf-8",
        )
    }
}

/// Reads a whole body, refusing more than `limit` bytes with 413, and a body that has not
/// arrived within `timeout` with 408 (and closes the connection: its rest is unread).
async fn read_body(
    body: Incoming,
    limit: usize,
    timeout: Option<Duration>,
) -> Result<Bytes, Response<Full<Bytes>>> {
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large (limit {limit} bytes)"),
        )
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let collect = collect_limited(body, limit);
    tokio::pin!(collect);
    // A body that is already in hyper's buffer (nearly all: they are small) is collected on
    // the first poll; only one still arriving needs the timer, which costs a clock reading and
    // a timer entry per request.
    let collected = match std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await {
        Poll::Ready(collected) => collected,
        Poll::Pending => match timeout {
            Some(timeout) => match Box::pin(tokio::time::timeout(timeout, collect)).await {
                Ok(collected) => collected,
                Err(_) => {
                    let mut response = text(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "request body not received within {} s",
                            timeout.as_secs_f64()
                        ),
                    );
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                    return Err(response);
                }
            },
            None => collect.await,
        },
    };
    match collected {
        Ok(body) => Ok(body),
        Err(BodyError::TooLarge) => Err(too_large()),
        Err(BodyError::Read(error)) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {error}"),
        )),
    }
}

/// Why a request body could not be collected.
enum BodyError {
    /// More than the limit arrived.
    TooLarge,
    /// The connection failed while the body arrived.
    Read(hyper::Error),
}

/// The whole body, refusing more than `limit` bytes. A body of one data frame (any body hyper
/// had whole in its buffer, that is nearly all) is that frame itself: no allocation and no
/// copy, where a general collector keeps a list of frames and joins it. Trailers are ignored.
async fn collect_limited(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        if let Some(joined) = &mut joined {
            joined.extend_from_slice(&data);
        } else if let Some(head) = &first {
            let mut both = BytesMut::with_capacity(total);
            both.extend_from_slice(head);
            both.extend_from_slice(&data);
            joined = Some(both);
        } else {
            first = Some(data);
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}

fn encode(reply: &Reply) -> Response<Full<Bytes>> {
    let (status, body) = reply.encode();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

/// A response encoded whole. Response bodies are either that or, for a large Transfer reply,
/// streamed ([`TransferBody`]).
fn whole(response: Response<Full<Bytes>>) -> Response<Either<Full<Bytes>, TransferBody>> {
    response.map(Either::Left)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response
}
