//! A large Transfer reply sent as it is written, not encoded whole first.
//!
//! A client that parks a Transfer and then never reads the reply (or stops halfway) would
//! otherwise pin the whole encoded reply, up to `transfer_reply_bytes_max` (64 MiB by
//! default) or one message if larger, for as long as its connection lives
//! (docs/reliability.md, scenario 2). This body encodes the reply in frames of about
//! [`FRAME_BYTES`] as hyper asks for them; hyper asks for the next one only when its write
//! buffer has room, so a stuck reader pins one frame and hyper's buffer, plus references to
//! the stored payloads it has not sent yet (shared with the queue, not copied).
//!
//! The bytes are exactly those of `TransferReply::encode` (a test checks it), and the body
//! reports its exact length up front, so hyper still sends `content-length` like the
//! original. Small replies keep the one-piece encoding: see [`STREAM_PAYLOAD_BYTES_MIN`].

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::protocol::json;
use crate::protocol::{write_message_id, write_message_kind, Message, MessageId, TransferReply};

/// Replies whose payloads add up to at least this many bytes are streamed.
pub(crate) const STREAM_PAYLOAD_BYTES_MIN: usize = 1 << 20;

/// About how many bytes each frame holds.
pub(crate) const FRAME_BYTES: usize = 64 << 10;

/// The body of a streamed Transfer reply.
pub(crate) struct TransferBody {
    reply: TransferReply,
    /// Bytes not yet produced.
    remaining: u64,
    stage: Stage,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// `{"messages":[`.
    Open,
    /// Message `index`: its id and the start of its payload string.
    Head(usize),
    /// Message `index`'s payload, from byte `offset`.
    Payload(usize, usize),
    /// Message `index`: the end of its payload string, its kind, the closing brackets.
    Tail(usize),
    /// `],"next":"N"}`.
    Close,
    /// Everything produced.
    Done,
}

const OPEN: &[u8] = b"{\"messages\":[";

impl TransferBody {
    /// Whether `reply` is large enough to be streamed.
    pub(crate) fn worth_streaming(reply: &TransferReply) -> bool {
        reply
            .messages
            .iter()
            .map(|(_, message)| message.payload.len())
            .sum::<usize>()
            >= STREAM_PAYLOAD_BYTES_MIN
    }

    /// The body of `reply`.
    pub(crate) fn new(reply: TransferReply) -> TransferBody {
        let mut scratch = Vec::new();
        let mut length = OPEN.len() as u64;
        for (index, (id, message)) in reply.messages.iter().enumerate() {
            scratch.clear();
            write_head(&mut scratch, index, id);
            write_tail(&mut scratch, message);
            length += scratch.len() as u64 + escaped_len(&message.payload);
        }
        scratch.clear();
        write_close(&mut scratch, reply.next);
        length += scratch.len() as u64;
        TransferBody {
            reply,
            remaining: length,
            stage: Stage::Open,
        }
    }

    /// Appends the next piece to `out` and moves on.
    fn step(&mut self, out: &mut Vec<u8>) {
        self.stage = match self.stage {
            Stage::Open => {
                out.extend_from_slice(OPEN);
                self.first_message()
            }
            Stage::Head(index) => {
                write_head(out, index, &self.reply.messages[index].0);
                Stage::Payload(index, 0)
            }
            Stage::Payload(index, offset) => {
                let payload = &self.reply.messages[index].1.payload;
                // An escaped byte takes up to 6 bytes: never overshoot the frame by much.
                let room = (FRAME_BYTES.saturating_sub(out.len()) / 6).max(1);
                let end = payload.len().min(offset + room);
                write_escaped(out, &payload[offset..end]);
                if end == payload.len() {
                    Stage::Tail(index)
                } else {
                    Stage::Payload(index, end)
                }
            }
            Stage::Tail(index) => {
                write_tail(out, &self.reply.messages[index].1);
                if index + 1 < self.reply.messages.len() {
                    Stage::Head(index + 1)
                } else {
                    Stage::Close
                }
            }
            Stage::Close => {
                write_close(out, self.reply.next);
                Stage::Done
            }
            Stage::Done => Stage::Done,
        };
    }

    fn first_message(&self) -> Stage {
        if self.reply.messages.is_empty() {
            Stage::Close
        } else {
            Stage::Head(0)
        }
    }
}

impl Body for TransferBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.stage == Stage::Done {
            return Poll::Ready(None);
        }
        let mut out = Vec::with_capacity(FRAME_BYTES + 256);
        while out.len() < FRAME_BYTES && this.stage != Stage::Done {
            this.step(&mut out);
        }
        this.remaining = this.remaining.saturating_sub(out.len() as u64);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }

    fn is_end_stream(&self) -> bool {
        self.stage == Stage::Done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// `,` between messages, then `[ID,{"payload":"`.
fn write_head(out: &mut Vec<u8>, index: usize, id: &MessageId) {
    if index > 0 {
        out.push(b',');
    }
    out.push(b'[');
    write_message_id(out, id);
    out.extend_from_slice(b",{\"payload\":\"");
}

/// `","kind":KIND]}]`: the rest of a message and of its `[id, message]` pair.
fn write_tail(out: &mut Vec<u8>, message: &Message) {
    out.extend_from_slice(b"\",\"kind\":");
    write_message_kind(out, &message.kind);
    out.extend_from_slice(b"}]");
}

fn write_close(out: &mut Vec<u8>, next: i64) {
    out.extend_from_slice(b"],\"next\":\"");
    json::write_int(out, next);
    out.extend_from_slice(b"\"}");
}

/// The escaped contents of a JSON string, without its quotes. Escaping is byte by byte, so a
/// payload escaped in pieces is the payload escaped whole.
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    json::write_string(out, bytes);
    // Drop the quotes `write_string` puts around the contents.
    out.pop();
    out.remove(start);
}

/// How long `bytes` is once escaped by `json::write_string`, without the quotes.
fn escaped_len(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .map(|&byte| match byte {
            b'"' | b'\\' | 0x08 | 0x0c | b'\n' | b'\r' | b'\t' => 2,
            0x00..=0x1f | 0x7f => 6,
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    use crate::protocol::{MessageKind, QueueName};

    /// A reply with messages of the given payload sizes, payload bytes cycling through every
    /// value (so every escape appears), alternating requests and responses.
    fn reply(sizes: &[usize]) -> TransferReply {
        let messages = sizes
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                let queue = QueueName::new(format!("q\"{index}\\"));
                let payload: Vec<u8> = (0..size).map(|i| (i * 7 + index) as u8).collect();
                let kind = if index % 2 == 0 {
                    MessageKind::Request {
                        reply_to: QueueName::new(&b"reply\n"[..]),
                    }
                } else {
                    MessageKind::Response {
                        request: MessageId::new(QueueName::new(&b"req"[..]), -3),
                    }
                };
                let message = Message {
                    payload: Bytes::from(payload),
                    kind,
                };
                (MessageId::new(queue, index as i64 * 1000), message)
            })
            .collect();
        TransferReply { messages, next: 42 }
    }

    async fn streamed(reply: TransferReply) -> (Vec<u8>, u64, usize) {
        let mut body = TransferBody::new(reply);
        let announced = body.size_hint().exact().expect("an exact length");
        let mut bytes = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            let data = frame.expect("infallible").into_data().expect("data");
            assert!(data.len() <= FRAME_BYTES + 1024, "frame of {}", data.len());
            bytes.extend_from_slice(&data);
            frames += 1;
        }
        assert!(body.is_end_stream());
        (bytes, announced, frames)
    }

    #[tokio::test]
    async fn streams_exactly_the_encoded_reply_with_its_length() {
        for sizes in [
            &[][..],
            &[0],
            &[1, 2, 3],
            &[FRAME_BYTES - 20, 5, FRAME_BYTES * 3 + 1],
            &[4 << 20],
        ] {
            let reply = reply(sizes);
            let expected = reply.encode();
            let (bytes, announced, frames) = streamed(reply).await;
            assert!(
                bytes == expected,
                "streamed bytes differ for sizes {sizes:?}"
            );
            assert_eq!(announced, expected.len() as u64);
            let payload: usize = sizes.iter().sum();
            // Frames are bounded, so a large reply is many of them.
            assert!(frames >= payload / (FRAME_BYTES + 1024), "{frames} frames");
        }
    }

    #[test]
    fn only_large_replies_are_streamed() {
        assert!(!TransferBody::worth_streaming(&reply(&[1000, 1000])));
        assert!(TransferBody::worth_streaming(&reply(&[
            STREAM_PAYLOAD_BYTES_MIN / 2,
            STREAM_PAYLOAD_BYTES_MIN / 2
        ])));
    }
}
