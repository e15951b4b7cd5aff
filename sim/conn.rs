//! A raw protocol connection for the actors: one HTTP/1.1 connection over [`SimStream`], one
//! request at a time, every request and its outcome recorded in the history.
//!
//! The raw actors need arbitrary requests (any cursor, timeout, queue list) and a record of
//! each one with its invocation and completion time, so they speak [`Request`] directly
//! through hyper rather than through the client library's typed helpers (sharing only
//! [`http_request`], the request as the OCaml clients put it on the wire).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use message_switch::client::http_request;
use message_switch::protocol::{
    decode_list, decode_sent, Diagnostics, QueueName, Request, TransferReply,
};

use crate::history::{Outcome, Recorder, ReplyData};
use crate::net::{Net, SimStream};

/// How long a connect may take before the actor gives up on it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reply may take beyond a long poll's own timeout before the connection is
/// considered dead (a lost segment stalls a turmoil connection forever).
pub const REQUEST_SLACK: Duration = Duration::from_secs(3);

/// One recorded connection to the switch.
pub struct SimConn {
    sender: http1::SendRequest<Full<Bytes>>,
    /// The harness's id for this connection.
    pub id: u64,
    /// The switch incarnation that accepted it.
    pub epoch: u32,
    /// The session token it logged in with, if any.
    pub session: Option<String>,
    broken: bool,
    recorder: Rc<Recorder>,
    actor: Rc<str>,
}

impl SimConn {
    /// Opens a connection from host `host` for `actor`.
    pub async fn open(
        net: &Arc<Net>,
        host: &str,
        actor: Rc<str>,
        recorder: Rc<Recorder>,
    ) -> Result<SimConn, String> {
        let (stream, id, epoch): (SimStream, u64, u32) =
            match tokio::time::timeout(CONNECT_TIMEOUT, net.connect(host)).await {
                Ok(Ok(opened)) => opened,
                Ok(Err(error)) => return Err(format!("connect: {error}")),
                Err(_) => return Err("connect timed out".into()),
            };
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        // The connection task ends (and drops the stream, sending a FIN) once `sender` is
        // dropped or the stream fails.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(SimConn {
            sender,
            id,
            epoch,
            session: None,
            broken: false,
            recorder,
            actor,
        })
    }

    /// Whether a transport failure has made this connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken || self.sender.is_closed()
    }

    /// Sends `request`, records it and its outcome, and returns the outcome.
    pub async fn exec(&mut self, request: Request) -> Outcome {
        let op = self.recorder.invoke(
            &self.actor,
            self.id,
            self.epoch,
            self.session.clone(),
            request.clone(),
        );
        let outcome = if self.broken {
            Outcome::Transport("connection already failed".into())
        } else {
            let long_poll = match &request {
                Request::Transfer(transfer) => seconds(transfer.timeout_s),
                Request::Trace { timeout_s, .. } => seconds(*timeout_s),
                _ => Duration::ZERO,
            };
            match tokio::time::timeout(long_poll + REQUEST_SLACK, self.round_trip(&request)).await {
                Ok(Ok((200, body))) => decode(&request, &body),
                Ok(Ok((status, body))) => {
                    Outcome::Status(status, String::from_utf8_lossy(&body).into_owned())
                }
                Ok(Err(error)) => {
                    self.broken = true;
                    Outcome::Transport(error)
                }
                Err(_) => {
                    self.broken = true;
                    Outcome::Transport("request timed out".into())
                }
            }
        };
        if let (Request::Login(token), Outcome::Ok(_)) = (&request, &outcome) {
            self.session.get_or_insert_with(|| token.to_text());
        }
        self.recorder.complete(op, outcome.clone());
        outcome
    }

    async fn round_trip(&mut self, request: &Request) -> Result<(u16, Bytes), String> {
        let request = http_request(request).map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

fn seconds(timeout_s: f64) -> Duration {
    Duration::try_from_secs_f64(timeout_s.max(0.0)).unwrap_or(Duration::MAX)
}

/// Decodes a 200 body by what the request was; a body that does not decode is itself a
/// finding, recorded as [`Outcome::BadReply`].
fn decode(request: &Request, body: &[u8]) -> Outcome {
    let data = match request {
        Request::Send { .. } => decode_sent(body).map(ReplyData::Sent).map_err(|e| e.0),
        Request::Transfer(_) => TransferReply::decode(body)
            .map(ReplyData::Transfer)
            .map_err(|e| e.0),
        Request::List { .. } => decode_list(body).map(ReplyData::List).map_err(|e| e.0),
        Request::Diagnostics => Diagnostics::decode(body)
            .map(|d| {
                ReplyData::Queues(
                    d.permanent_queues.into_iter().map(|(n, _)| n).collect(),
                    d.transient_queues.into_iter().map(|(n, _)| n).collect(),
                )
            })
            .map_err(|e| e.0),
        Request::CreatePersistent(_) | Request::CreateTransient(_) => {
            Ok(ReplyData::Name(QueueName::new(body)))
        }
        _ if body.is_empty() => Ok(ReplyData::Empty),
        _ => Ok(ReplyData::Other(body.len())),
    };
    match data {
        Ok(data) => Outcome::Ok(data),
        Err(error) => Outcome::BadReply(error),
    }
}
