//! The request-head timeout: a connection in the middle of a request head for longer than a
//! limit is closed, while an idle keep-alive connection, however long it stays idle, is not.
//!
//! Sessions live on connections, so idle connections between requests must never be timed
//! out. hyper's own `header_read_timeout` cannot tell the two apart: it starts its timer as
//! soon as hyper begins waiting for the next head, that is while the connection is idle, and
//! so closes idle keep-alive connections too. So hyper's is off, and this wrapper around the
//! connection's stream keeps the timer instead:
//!
//! - it is armed by the first bytes read while no request is being served (the start of a
//!   head: the client has begun its next request), and its clock starts when a read first
//!   has to wait for more of that head;
//! - it is disarmed once hyper hands the parsed head to the service ([`RequestTracker::begin`]);
//! - if it expires while a read waits for more bytes, the read fails with `TimedOut` and
//!   hyper closes the connection.
//!
//! A connection over the connection limit is armed from the moment it is accepted: it
//! occupies a descriptor, and its only purpose is to carry a 429.
//!
//! A normal request (whole head in one read) costs no clock reading and no allocation: the
//! deadline and its sleep are only made if a read would wait while the head is incomplete.
//! The limit then runs from that first wait rather than from the first byte, later by the
//! time the switch took to read what had already arrived.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the service tells the stream wrapper: how many heads have been parsed, and whether a
/// request is being served now.
#[derive(Debug, Default)]
pub(crate) struct RequestTracker {
    heads: AtomicU64,
    busy: AtomicBool,
}

impl RequestTracker {
    /// Called by the service when hyper hands it a parsed head: the head is complete.
    pub(crate) fn begin(&self) {
        self.heads.fetch_add(1, Ordering::AcqRel);
        self.busy.store(true, Ordering::Release);
    }

    /// Called when the service has produced its response (or was dropped).
    pub(crate) fn end(&self) {
        self.busy.store(false, Ordering::Release);
    }

    fn heads(&self) -> u64 {
        self.heads.load(Ordering::Acquire)
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }
}

/// Ends the tracked request when dropped, so that a cancelled service future cannot leave the
/// connection marked busy.
pub(crate) struct Serving(Arc<RequestTracker>);

impl Serving {
    /// Marks a request as begun until the returned guard is dropped.
    pub(crate) fn start(tracker: &Arc<RequestTracker>) -> Self {
        tracker.begin();
        Serving(tracker.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A connection's stream with the request-head timer (see the module doc).
pub(crate) struct HeadTimeoutIo<Io> {
    io: Io,
    limit: Option<Duration>,
    tracker: Arc<RequestTracker>,
    armed: Option<Armed>,
}

struct Armed {
    /// The tracker's head count when the timer was armed: a change means the head completed.
    heads: u64,
    /// Set from the start for a connection over the limit; else when a read first waits.
    deadline: Option<Instant>,
    /// Created only when a read has to wait for the rest of the head.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<Io> HeadTimeoutIo<Io> {
    /// Wraps `io`. `limit` `None` never times out. With `from_start` the timer runs from now
    /// (for connections over the limit), else from the first byte of each request head.
    pub(crate) fn new(
        io: Io,
        limit: Option<Duration>,
        tracker: Arc<RequestTracker>,
        from_start: bool,
    ) -> Self {
        let armed = match limit {
            Some(limit) if from_start => Some(Armed {
                heads: tracker.heads(),
                deadline: Some(Instant::now() + limit),
                sleep: None,
            }),
            _ => None,
        };
        Self {
            io,
            limit,
            tracker,
            armed,
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for HeadTimeoutIo<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(armed) = &this.armed {
            if armed.heads != this.tracker.heads() {
                this.armed = None;
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() > before;
                if read && this.armed.is_none() && !this.tracker.busy() && this.limit.is_some() {
                    this.armed = Some(Armed {
                        heads: this.tracker.heads(),
                        deadline: None,
                        sleep: None,
                    });
                }
            }
            Poll::Pending => {
                if let Some(armed) = &mut this.armed {
                    let limit = this.limit.unwrap_or_default();
                    let deadline = *armed.deadline.get_or_insert_with(|| Instant::now() + limit);
                    let sleep = armed
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the request head was not completed in time",
                        )));
                    }
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        result
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for HeadTimeoutIo<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_secs(60);

    fn wrapped(
        from_start: bool,
    ) -> (
        HeadTimeoutIo<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<RequestTracker>,
    ) {
        let (server, client) = tokio::io::duplex(1024);
        let tracker = Arc::new(RequestTracker::default());
        let io = HeadTimeoutIo::new(server, Some(LIMIT), tracker.clone(), from_start);
        (io, client, tracker)
    }

    async fn read_outcome(io: &mut HeadTimeoutIo<tokio::io::DuplexStream>) -> io::Result<usize> {
        let mut buf = [0u8; 64];
        io.read(&mut buf).await
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_never_timed_out() {
        let (mut io, mut client, _tracker) = wrapped(false);
        let read = tokio::time::timeout(LIMIT * 100, read_outcome(&mut io)).await;
        assert!(read.is_err(), "the read still waits: {read:?}");
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(read_outcome(&mut io).await.unwrap(), 18);
    }

    #[tokio::test(start_paused = true)]
    async fn an_incomplete_head_is_timed_out() {
        let (mut io, mut client, _tracker) = wrapped(false);
        client.write_all(b"GET /lo").await.unwrap();
        assert_eq!(read_outcome(&mut io).await.unwrap(), 7);
        let error = read_outcome(&mut io).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_head_disarms_and_the_next_idle_period_is_free() {
        let (mut io, mut client, tracker) = wrapped(false);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        read_outcome(&mut io).await.unwrap();
        {
            let _serving = Serving::start(&tracker);
            // A long request (a parked Transfer) with pipelined bytes arriving meanwhile.
            client.write_all(b"GET /x").await.unwrap();
            read_outcome(&mut io).await.unwrap();
            let read = tokio::time::timeout(LIMIT * 3, read_outcome(&mut io)).await;
            assert!(read.is_err(), "no timer while a request is served");
        }
        let read = tokio::time::timeout(LIMIT * 3, read_outcome(&mut io)).await;
        assert!(read.is_err(), "idle again after the response");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_over_the_limit_is_timed_from_its_start() {
        let (mut io, _client, _tracker) = wrapped(true);
        let error = read_outcome(&mut io).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
