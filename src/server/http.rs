//! One HTTP/1.1 connection: its admission against the limits, hyper's settings, and its
//! end (the driver is told, and cleans up the session). Each request on it is an
//! [`Exchange`] (`super::exchange`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::admission::{Admit, REFUSAL_LOG_INTERVAL};
use super::client::ClientId;
use super::driver::Command;
use super::exchange::{ConnectionContext, Exchange};
use super::head_timeout::{HeadTimeoutIo, RequestTracker};
use super::refusal_backoff::RefusalBackoff;
use super::shutdown_signal::{wait_unless_stopping, Stopping};
use super::Shared;
use crate::engine::ConnectionId;

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
                if !hold.is_zero() && !wait_unless_stopping(&shared.shutdown, hold).await {
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
    let context = Arc::new(ConnectionContext {
        shared: shared.clone(),
        connection,
        client,
        refusal: refusal.map(String::into_boxed_str),
        backoff: RefusalBackoff::default(),
        tracker,
    });
    let service = service_fn(move |request| Exchange::start(&context, request));
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
