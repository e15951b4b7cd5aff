//! One HTTP/1.1 connection to a switch, and the typed protocol operations over it.
//!
//! A session is bound to its connection (`protocol.md` §0.1): `Login` tags the connection and
//! later requests on it are authorised by that tag. So a [`Connection`] is long-lived,
//! carries exactly one request at a time (`&mut self`), like the OCaml clients, and a blocked
//! long poll blocks it; that is why the RPC patterns keep separate connections for sending
//! and for polling.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Connector, Error};
use crate::protocol::{
    decode_list, decode_sent, decode_trace, Diagnostics, Message, MessageId, MessageKind,
    QueueName, Request, SessionToken, TraceEvent, TransferReply, TransferRequest,
};

/// Bounds that apply to every request on a [`Connection`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// How long opening a stream may take before it counts as unreachable.
    pub connect_timeout: Duration,
    /// How long the switch may take to answer, on top of the time a long poll (Transfer,
    /// Trace) asks it to wait. Past this the connection is abandoned.
    pub request_timeout: Duration,
    /// The largest response body accepted.
    pub response_bytes_max: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            response_bytes_max: 256 * 1024 * 1024,
        }
    }
}

/// One HTTP/1.1 connection to a switch.
///
/// Requests are sent one at a time and each one waits for its response (no pipelining), as
/// the reference clients do. After a transport error ([`Error::is_transport`]) the
/// connection is unusable ([`Connection::is_usable`] is false) and should be dropped;
/// dropping it closes the socket, which ends the session on it.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    /// hyper's side of the connection: it does the reads and writes. It is polled by the
    /// task making a request, only while that request is in flight, rather than by a task of
    /// its own: a `Connection` is then one object with no detached task, dropping it closes
    /// the socket at once, and an exchange needs no hand-over between tasks. `None` once it
    /// ended.
    io: Option<IoDriver>,
    config: ConnectionConfig,
    broken: bool,
}

type IoDriver = std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Result<()>> + Send>>;

impl Connection {
    /// Opens a stream with `connector` and starts HTTP/1.1 on it. No request is sent yet (in
    /// particular no Login).
    pub async fn open<C: Connector>(
        connector: &C,
        config: &ConnectionConfig,
    ) -> Result<Connection, Error> {
        let stream = tokio::time::timeout(config.connect_timeout, connector.connect())
            .await
            .map_err(|_| {
                Error::Unreachable(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", config.connect_timeout),
                ))
            })?
            .map_err(Error::Unreachable)?;
        Connection::handshake(stream, config.clone()).await
    }

    /// Starts HTTP/1.1 over an already open stream. The connection's I/O is driven by the
    /// requests themselves (nothing is spawned): between requests nothing reads the stream,
    /// so a connection closed by the switch is noticed by the next request, as a transport
    /// error.
    pub async fn handshake<S>(stream: S, config: ConnectionConfig) -> Result<Connection, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, io) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Disconnected(e.to_string()))?;
        Ok(Connection {
            sender,
            io: Some(Box::pin(io)),
            config,
            broken: false,
        })
    }

    /// Whether the connection can still carry requests: no transport error has happened on it
    /// and the peer has not been seen closing it. Nothing reads the connection between
    /// requests, so a close by the switch is only seen by the next request, which then fails
    /// with a transport error.
    pub fn is_usable(&self) -> bool {
        !self.broken && !self.sender.is_closed()
    }

    /// Sends `request` and returns the body of a 200 response. A non-200 response is
    /// [`Error::Status`]; a failure of the connection is a transport error, after which this
    /// connection is unusable.
    pub async fn execute(&mut self, request: &Request) -> Result<Bytes, Error> {
        if self.broken {
            return Err(Error::Disconnected("connection already failed".into()));
        }
        let long_poll = match request {
            Request::Transfer(transfer) => seconds(transfer.timeout_s),
            Request::Trace { timeout_s, .. } => seconds(*timeout_s),
            _ => Duration::ZERO,
        };
        let bound = self.config.request_timeout.saturating_add(long_poll);
        match tokio::time::timeout(bound, self.round_trip(request)).await {
            Ok(Ok((200, body))) => Ok(body),
            Ok(Ok((status, body))) => Err(Error::Status {
                status,
                text: status_text(&body),
            }),
            Ok(Err(error)) => {
                if error.is_transport() {
                    self.broken = true;
                }
                Err(error)
            }
            Err(_) => {
                // The response may still arrive later and would then be taken as the answer
                // to the next request: this connection cannot be trusted any more.
                self.broken = true;
                Err(Error::RequestTimedOut(bound))
            }
        }
    }

    /// `GET /login/TOKEN`: tags this connection with a session.
    pub async fn login(&mut self, token: &SessionToken) -> Result<(), Error> {
        self.execute(&Request::Login(token.clone())).await?;
        Ok(())
    }

    /// `GET /persistent/NAME`: creates a queue that outlives sessions (no-op if it exists).
    /// Returns the name the switch answered with (the name itself).
    pub async fn create_persistent(&mut self, name: &QueueName) -> Result<QueueName, Error> {
        let body = self
            .execute(&Request::CreatePersistent(name.clone()))
            .await?;
        Ok(QueueName::new(body))
    }

    /// `GET /transient/NAME`: creates a queue owned by this connection's session, removed by
    /// the switch when the session's last connection closes (no-op if it exists). Returns the
    /// name the switch answered with, which the reference clients use as the queue's name.
    pub async fn create_transient(&mut self, name: &QueueName) -> Result<QueueName, Error> {
        let body = self
            .execute(&Request::CreateTransient(Some(name.clone())))
            .await?;
        Ok(QueueName::new(body))
    }

    /// `GET /transient/` (an extension of message-switch-rs, protocol.md A.7): creates a
    /// transient queue with a fresh name chosen by the switch and returns that name. The
    /// original switch does not support this; portable code names its queues itself.
    pub async fn create_fresh_transient(&mut self) -> Result<QueueName, Error> {
        let body = self.execute(&Request::CreateTransient(None)).await?;
        Ok(QueueName::new(body))
    }

    /// `GET /destroy/NAME`: removes a queue and its messages (no-op if it does not exist).
    pub async fn destroy(&mut self, name: &QueueName) -> Result<(), Error> {
        self.execute(&Request::Destroy(name.clone())).await?;
        Ok(())
    }

    /// `POST /request/QUEUE/REPLY_TO`: queues a request. Returns its id, or `None` when the
    /// queue does not exist (the switch then drops the message).
    pub async fn send_request(
        &mut self,
        queue: &QueueName,
        reply_to: &QueueName,
        payload: Bytes,
    ) -> Result<Option<MessageId>, Error> {
        self.send(
            queue,
            MessageKind::Request {
                reply_to: reply_to.clone(),
            },
            payload,
        )
        .await
    }

    /// `POST /response/QUEUE/REQUEST_QUEUE/REQUEST_N`: queues the response to the request
    /// `request`. Returns its id, or `None` when `queue` does not exist (the caller is gone).
    pub async fn send_response(
        &mut self,
        queue: &QueueName,
        request: &MessageId,
        payload: Bytes,
    ) -> Result<Option<MessageId>, Error> {
        self.send(
            queue,
            MessageKind::Response {
                request: request.clone(),
            },
            payload,
        )
        .await
    }

    /// `POST /transfer`: waits up to `timeout` for messages with an id greater than `from`
    /// (every stored message when `None`) in `queues`. Messages are not removed: they stay
    /// until acked. Pass the reply's `next` as the following `from`.
    pub async fn transfer(
        &mut self,
        from: Option<i64>,
        timeout: Duration,
        queues: &[QueueName],
    ) -> Result<TransferReply, Error> {
        let request = Request::Transfer(TransferRequest {
            from,
            timeout_s: timeout.as_secs_f64(),
            queues: queues.to_vec(),
        });
        let body = self.execute(&request).await?;
        Ok(TransferReply::decode(&body)?)
    }

    /// `GET /ack/QUEUE/N`: deletes a message (no-op if it does not exist).
    pub async fn ack(&mut self, id: &MessageId) -> Result<(), Error> {
        self.execute(&Request::Ack(id.clone())).await?;
        Ok(())
    }

    /// `GET /list/PREFIX` or, with `alive_only`, `GET /list/alive/PREFIX`: the names of the
    /// queues starting with `prefix`, in the switch's order.
    pub async fn list(
        &mut self,
        prefix: &QueueName,
        alive_only: bool,
    ) -> Result<Vec<QueueName>, Error> {
        let body = self
            .execute(&Request::List {
                prefix: prefix.clone(),
                alive_only,
            })
            .await?;
        Ok(decode_list(&body)?)
    }

    /// `GET /`: the switch's state. Needs no session.
    pub async fn diagnostics(&mut self) -> Result<Diagnostics, Error> {
        let body = self.execute(&Request::Diagnostics).await?;
        Ok(Diagnostics::decode(&body)?)
    }

    /// `GET /trace/FROM/TIMEOUT`: waits up to `timeout` until an event with an id ≥ `from`
    /// exists (−1 answers at once), then returns the buffered events with an id ≥ `from`,
    /// ascending. Needs no session.
    pub async fn trace(
        &mut self,
        from: i64,
        timeout: Duration,
    ) -> Result<Vec<(i64, TraceEvent)>, Error> {
        let body = self
            .execute(&Request::Trace {
                from,
                timeout_s: timeout.as_secs_f64(),
            })
            .await?;
        Ok(decode_trace(&body)?)
    }

    /// `POST /shutdown`: asks the switch to shut down.
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        self.execute(&Request::Shutdown).await?;
        Ok(())
    }

    async fn send(
        &mut self,
        queue: &QueueName,
        kind: MessageKind,
        payload: Bytes,
    ) -> Result<Option<MessageId>, Error> {
        let request = Request::Send {
            queue: queue.clone(),
            message: Message { payload, kind },
        };
        let body = self.execute(&request).await?;
        Ok(decode_sent(&body)?)
    }

    /// Sends one request and reads the whole response, driving the connection's I/O while it
    /// waits.
    async fn round_trip(&mut self, request: &Request) -> Result<(u16, Bytes), Error> {
        let Some(io) = self.io.as_mut() else {
            return Err(Error::Disconnected("the connection has ended".into()));
        };
        let exchange = exchange(&mut self.sender, request, self.config.response_bytes_max);
        tokio::pin!(exchange);
        let ended = tokio::select! {
            biased;
            result = &mut exchange => return result,
            ended = io => ended,
        };
        self.io = None;
        // The connection ended, but maybe only after delivering the whole response (the
        // switch closes the connection right after answering `/shutdown`, for example). Its
        // driver is gone, so the exchange can only finish with what was delivered or fail.
        exchange.await.map_err(|_| {
            Error::Disconnected(match ended {
                Ok(()) => "the switch closed the connection".to_owned(),
                Err(error) => error.to_string(),
            })
        })
    }
}

/// `request` as hyper sends it: its method, path and body, plus the `Host` header and a
/// `Content-Length` (also 0) that the OCaml clients always send, so that nothing on the
/// server side depends on defaults. For anything that speaks the protocol through hyper
/// without a [`Connection`] (the simulation's raw actors).
pub fn http_request(request: &Request) -> Result<hyper::Request<Full<Bytes>>, hyper::http::Error> {
    let http = request.to_http();
    let length = http.body.len();
    hyper::Request::builder()
        .method(http.method)
        .uri(http.path.as_str())
        .header(HOST, "localhost")
        .header(CONTENT_LENGTH, length)
        .body(Full::new(http.body))
}

/// One request and its whole response over `sender`, whose connection someone else drives.
async fn exchange(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    request: &Request,
    limit: usize,
) -> Result<(u16, Bytes), Error> {
    let request = http_request(request)
        .map_err(|e| Error::Disconnected(format!("cannot build request: {e}")))?;
    sender
        .ready()
        .await
        .map_err(|e| Error::Disconnected(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Error::Disconnected(e.to_string()))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::ResponseTooLarge(limit)
            } else {
                Error::Disconnected(e.to_string())
            }
        })?
        .to_bytes();
    Ok((status, body))
}

/// A one-line rendering of an error body, bounded so that a hostile or broken server cannot
/// flood a terminal.
fn status_text(body: &[u8]) -> String {
    const TEXT_BYTES_MAX: usize = 200;
    let cut = &body[..body.len().min(TEXT_BYTES_MAX)];
    String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A wire timeout in seconds as a `Duration`; negative, NaN or huge values are clamped.
fn seconds(timeout_s: f64) -> Duration {
    Duration::try_from_secs_f64(timeout_s.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one request head (and `length` body bytes) from the server side of a pipe.
    async fn read_request(server: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n\r\n") {
            server.read_exact(&mut byte).await.unwrap();
            seen.push(byte[0]);
        }
        let head = String::from_utf8(seen.clone()).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        server.read_exact(&mut body).await.unwrap();
        seen.extend_from_slice(&body);
        seen
    }

    #[tokio::test]
    async fn requests_look_like_the_ocaml_clients() {
        let (client, mut server) = tokio::io::duplex(4096);
        let mut connection = Connection::handshake(client, ConnectionConfig::default())
            .await
            .unwrap();
        let server = tokio::spawn(async move {
            let login = read_request(&mut server).await;
            server
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            let transfer = read_request(&mut server).await;
            server
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 27\r\n\r\n{\"messages\":[],\"next\":\"-1\"}")
                .await
                .unwrap();
            let send = read_request(&mut server).await;
            server
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 14\r\n\r\nPlease log in.")
                .await
                .unwrap();
            // Keep the pipe open: the connection must stay usable after a 404.
            (login, transfer, send, server)
        });
        connection.login(&"message-cli:42".into()).await.unwrap();
        let reply = connection
            .transfer(None, Duration::from_secs(30), &["message-cli:42".into()])
            .await
            .unwrap();
        assert_eq!(reply.next, -1);
        let error = connection
            .send_request(&"a b".into(), &"r".into(), Bytes::from_static(b"hi"))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Status { status: 404, text } if text == "Please log in."),
            "{error:?}"
        );
        let (login, transfer, send, _pipe) = server.await.unwrap();
        assert!(
            connection.is_usable(),
            "a 404 does not break the connection"
        );
        let login = String::from_utf8(login).unwrap();
        assert!(login.starts_with("GET /login/message-cli:42 HTTP/1.1\r\n"));
        assert!(login.contains("content-length: 0\r\n"));
        assert!(login.contains("host: localhost\r\n"));
        let transfer = String::from_utf8(transfer).unwrap();
        assert!(transfer.starts_with("POST /transfer HTTP/1.1\r\n"));
        assert!(transfer.contains("content-length: 44\r\n"));
        assert!(transfer.ends_with("\r\n\r\n{\"timeout\":30.0,\"queues\":[\"message-cli:42\"]}"));
        let send = String::from_utf8(send).unwrap();
        assert!(send.starts_with("POST /request/a%20b/r HTTP/1.1\r\n"));
        assert!(send.ends_with("\r\n\r\nhi"));
    }

    #[tokio::test]
    async fn a_closed_peer_is_a_transport_error() {
        let (client, server) = tokio::io::duplex(4096);
        let mut connection = Connection::handshake(client, ConnectionConfig::default())
            .await
            .unwrap();
        drop(server);
        let error = connection.diagnostics().await.unwrap_err();
        assert!(error.is_transport(), "{error:?}");
        assert!(!connection.is_usable());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_switch_times_out_and_breaks_the_connection() {
        let (client, _server) = tokio::io::duplex(4096);
        let config = ConnectionConfig {
            request_timeout: Duration::from_secs(1),
            ..ConnectionConfig::default()
        };
        let mut connection = Connection::handshake(client, config).await.unwrap();
        let error = connection
            .transfer(Some(3), Duration::from_secs(5), &["q".into()])
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::RequestTimedOut(bound) if bound == Duration::from_secs(6)),
            "{error:?}"
        );
        assert!(!connection.is_usable());
    }

    #[test]
    fn status_text_is_one_bounded_line() {
        assert_eq!(
            status_text(b"Error: Internal Server Error"),
            "Error: Internal Server Error"
        );
        assert_eq!(status_text(b"a\r\nb\n"), "a  b");
        assert_eq!(status_text(&[b'x'; 1000]).len(), 200);
    }
}
