//! The floor: a trivial hyper HTTP/1.1 echo server and a keep-alive client for it.
//!
//! The server runs as a child process (the bench re-executes itself with the hidden
//! `echo-server` subcommand), on the same flavour of tokio runtime as the switch under
//! comparison (current-thread for one thread, else multi-threaded with that many workers,
//! as `message-switch --threads`), listening on loopback TCP and a Unix socket exactly like the switch binary: same
//! hyper version, same `http1::Builder` settings, `TCP_NODELAY` on accept, the whole body read
//! before answering. So the floor differs from the switch only by what the switch does with a
//! request (routing, the hop to the engine's task, the engine, encoding), and its CPU time is
//! measured the same way, from `/proc`. The client side mirrors
//! `message_switch::client::Connection` (same handshake, headers and body collection), except
//! that hyper's side of the connection runs on a task of its own: for plain round trips that
//! measured a little faster than driving it from the requesting task (as `Connection` does),
//! and the floor should be the fastest plain exchange.

use std::convert::Infallible;
use std::path::Path;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_http1;
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::UnixListener;

use message_switch::client::Connector;

/// Largest body the echo server reads, as the switch's default `--body-bytes-max`.
const BODY_BYTES_MAX: usize = 64 << 20;

/// Runs the echo server until its stdin closes (the bench exited or killed it), on a
/// runtime of `threads` threads built as the switch builds its own. Prints `listening on tcp
/// ADDR` and `listening on unix PATH` on stderr, as the switch does.
pub fn run_server(unix: &Path, threads: u16) -> Result<()> {
    message_switch::server::runtime(threads)
        .context("cannot start the async runtime")?
        .block_on(serve(unix))
}

async fn serve(unix: &Path) -> Result<()> {
    // Bound as the switch binds its own, so a burst of connections meets the same backlog.
    let tcp = message_switch::server::bind_tcp(([127, 0, 0, 1], 0).into())?;
    eprintln!("listening on tcp {}", tcp.local_addr()?);
    let _ = std::fs::remove_file(unix);
    let unix_listener = UnixListener::bind(unix)?;
    eprintln!("listening on unix {}", unix.display());
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            // As the switch does for its TCP listener.
            if stream.set_nodelay(true).is_ok() {
                tokio::spawn(serve_connection(stream));
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = unix_listener.accept().await {
            tokio::spawn(serve_connection(stream));
        }
    });
    // The parent keeps our stdin open for as long as it wants us to run.
    let mut sink = [0u8; 64];
    let mut stdin = tokio::io::stdin();
    while stdin.read(&mut sink).await.unwrap_or(0) > 0 {}
    Ok(())
}

async fn serve_connection<Io>(io: Io)
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|request: hyper::Request<Incoming>| async move {
        Ok::<_, Infallible>(echo(request).await)
    });
    let mut builder = server_http1::Builder::new();
    // The switch's settings (src/server/http.rs), so that both servers do the same HTTP work.
    builder
        .keep_alive(true)
        .half_close(false)
        .header_read_timeout(None)
        .auto_date_header(false);
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}

async fn echo(request: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    match Limited::new(request.into_body(), BODY_BYTES_MAX)
        .collect()
        .await
    {
        Ok(body) => Response::new(Full::new(body.to_bytes())),
        Err(_) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            response
        }
    }
}

/// A keep-alive HTTP/1.1 connection to the echo server, one request at a time.
pub struct EchoConnection {
    sender: client_http1::SendRequest<Full<Bytes>>,
}

impl EchoConnection {
    /// Opens a stream with `connector` and starts HTTP/1.1 on it, as
    /// `message_switch::client::Connection::open` does.
    pub async fn open<C: Connector>(connector: &C) -> Result<EchoConnection> {
        let stream = connector.connect().await?;
        let (sender, driver) = client_http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(EchoConnection { sender })
    }

    /// `POST /echo` with `body`, returning the response body.
    pub async fn round_trip(&mut self, body: Bytes) -> Result<Bytes> {
        let request = hyper::Request::builder()
            .method("POST")
            .uri("/echo")
            .header(HOST, "localhost")
            .header(CONTENT_LENGTH, body.len())
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let body = Limited::new(response.into_body(), BODY_BYTES_MAX)
            .collect()
            .await
            .map_err(|error| anyhow::anyhow!("cannot read the echo: {error}"))?;
        Ok(body.to_bytes())
    }
}
