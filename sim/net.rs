//! The simulated network between the switch and its clients: turmoil TCP, plus a thin stream
//! wrapper that records every connection's life and can reset connections on both ends.
//!
//! Why a wrapper: turmoil drops segments silently on a partitioned link and has no
//! retransmission, so a connection that lost a segment (or its FIN) stalls forever and the
//! switch would never learn it is gone. Real TCP would eventually reset such a connection, and
//! the production transport (a Unix socket) cannot partition at all. So the harness marks a
//! connection *doomed* when either end writes (or closes) while its link is partitioned, and
//! resets doomed connections at both ends when the link is repaired. The same reset implements
//! the "connection drop" fault.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use message_switch::client::Connector;
use message_switch::server::{ClientId, Listener};

/// The switch's host name in the simulation.
pub const SWITCH_HOST: &str = "switch";
/// The switch's TCP port.
pub const SWITCH_PORT: u16 = 8080;

/// Virtual time now, in µs since the simulation began (0 outside a running host).
pub fn now_us() -> u64 {
    turmoil::sim_elapsed()
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

/// What the harness knows about one connection. Times are virtual µs.
#[derive(Clone, Debug)]
pub struct ConnRecord {
    /// The harness's id for the connection.
    pub id: u64,
    /// The client's host.
    pub client_host: String,
    /// The switch incarnation that accepted it.
    pub epoch: u32,
    /// When the client dropped its end (its FIN leaves then).
    pub client_closed_us: Option<u64>,
    /// When the switch dropped its end.
    pub server_closed_us: Option<u64>,
    /// When the harness reset it (both ends see an error from then on).
    pub reset_us: Option<u64>,
    /// A segment or FIN of it was lost to a partition; it is reset when the link heals.
    pub doomed: bool,
}

#[derive(Default)]
struct NetInner {
    next_conn: u64,
    conns: BTreeMap<u64, ConnRecord>,
    shared: BTreeMap<u64, Arc<ConnShared>>,
    /// Connections the switch accepted that the client has not picked up yet, by the
    /// client's address.
    accepted: BTreeMap<SocketAddr, u64>,
    /// Client hosts whose link to the switch is partitioned.
    partitioned: BTreeSet<String>,
    /// The current switch incarnation.
    epoch: u32,
}

/// The shared network registry. One per simulation run.
#[derive(Default)]
pub struct Net {
    inner: Mutex<NetInner>,
}

/// State shared by the two ends of one connection.
pub struct ConnShared {
    id: u64,
    client_host: String,
    reset: AtomicBool,
    /// The last reader waker of each end (client, server), woken by a reset.
    wakers: Mutex<[Option<Waker>; 2]>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Client = 0,
    Server = 1,
}

/// A turmoil TCP stream seen through the harness.
pub struct SimStream {
    inner: turmoil::net::TcpStream,
    shared: Arc<ConnShared>,
    net: Arc<Net>,
    side: Side,
}

/// The switch's listener: a newtype over turmoil's, because `Listener` is the server's trait
/// and `TcpListener` turmoil's type (orphan rule).
pub struct SimListener {
    inner: turmoil::net::TcpListener,
    net: Arc<Net>,
    epoch: u32,
}

impl Net {
    /// A new, empty registry.
    pub fn new() -> Arc<Net> {
        Arc::new(Net::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetInner> {
        // A poisoned lock only means an earlier check panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new switch incarnation begins; returns its number.
    pub fn begin_epoch(&self) -> u32 {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.accepted.clear();
        inner.epoch
    }

    /// Marks `host`'s link to the switch as partitioned (the harness also tells turmoil).
    pub fn set_partitioned(&self, host: &str, partitioned: bool) {
        let mut inner = self.lock();
        if partitioned {
            inner.partitioned.insert(host.to_owned());
        } else {
            inner.partitioned.remove(host);
        }
    }

    /// Whether `host`'s link to the switch is partitioned.
    pub fn is_partitioned(&self, host: &str) -> bool {
        self.lock().partitioned.contains(host)
    }

    /// Resets every doomed connection of `host` (its link was repaired). Returns their ids.
    pub fn reset_doomed(&self, host: &str, now: u64) -> Vec<u64> {
        let doomed: Vec<u64> = self
            .lock()
            .conns
            .values()
            .filter(|c| c.client_host == host && c.doomed && c.reset_us.is_none())
            .map(|c| c.id)
            .collect();
        for id in &doomed {
            self.reset(*id, now);
        }
        doomed
    }

    /// Resets connection `id` at both ends: reads fail with `ConnectionReset`, writes with
    /// `BrokenPipe`. Returns false if it was already closed at both ends or reset.
    pub fn reset(&self, id: u64, now: u64) -> bool {
        let shared = {
            let mut inner = self.lock();
            let Some(record) = inner.conns.get_mut(&id) else {
                return false;
            };
            let closed = record.client_closed_us.is_some() && record.server_closed_us.is_some();
            if closed || record.reset_us.is_some() {
                return false;
            }
            record.reset_us = Some(now);
            inner.shared.get(&id).cloned()
        };
        if let Some(shared) = shared {
            shared.reset.store(true, Ordering::SeqCst);
            let wakers =
                std::mem::take(&mut *shared.wakers.lock().unwrap_or_else(|e| e.into_inner()));
            for waker in wakers.into_iter().flatten() {
                waker.wake();
            }
        }
        true
    }

    /// Connections that are open at both ends and not reset, ascending by id.
    pub fn live_connections(&self) -> Vec<u64> {
        self.lock()
            .conns
            .values()
            .filter(|c| {
                c.reset_us.is_none() && c.client_closed_us.is_none() && c.server_closed_us.is_none()
            })
            .map(|c| c.id)
            .collect()
    }

    /// Every connection record, ascending by id.
    pub fn records(&self) -> Vec<ConnRecord> {
        self.lock().conns.values().cloned().collect()
    }

    /// Opens a connection from the current host (named `host`) to the switch.
    ///
    /// The handshake runs in a task of its own, so a caller that gives up (a connect timeout)
    /// does not abandon a half-open connection: a real kernel resets a connection whose socket
    /// was closed mid-handshake, but turmoil would leave the switch's accepted end open for
    /// ever (seed 580). When nobody awaits the task any more, the finished stream is dropped,
    /// which closes it as the kernel would.
    pub async fn connect(self: &Arc<Net>, host: &str) -> io::Result<(SimStream, u64, u32)> {
        let net = Arc::clone(self);
        let host = host.to_owned();
        tokio::spawn(async move { net.connect_now(&host).await })
            .await
            .unwrap_or_else(|join_error| Err(io::Error::other(join_error.to_string())))
    }

    async fn connect_now(self: &Arc<Net>, host: &str) -> io::Result<(SimStream, u64, u32)> {
        let stream = turmoil::net::TcpStream::connect((SWITCH_HOST, SWITCH_PORT)).await?;
        let local = stream.local_addr()?;
        let picked = {
            let mut inner = self.lock();
            let id = inner.accepted.remove(&local);
            id.and_then(|id| {
                let shared = inner.shared.get(&id).cloned()?;
                let epoch = inner.conns.get(&id).map(|c| c.epoch)?;
                Some((id, shared, epoch))
            })
        };
        let Some((id, shared, epoch)) = picked else {
            // The switch accepted it in an incarnation that is already gone.
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection lost during connect",
            ));
        };
        debug_assert_eq!(shared.client_host, host);
        Ok((
            SimStream {
                inner: stream,
                shared,
                net: self.clone(),
                side: Side::Client,
            },
            id,
            epoch,
        ))
    }

    fn accepted(
        self: &Arc<Net>,
        stream: turmoil::net::TcpStream,
        peer: SocketAddr,
        epoch: u32,
    ) -> SimStream {
        let client_host =
            turmoil::reverse_lookup(peer.ip()).unwrap_or_else(|| peer.ip().to_string());
        let mut inner = self.lock();
        let id = inner.next_conn;
        inner.next_conn += 1;
        let shared = Arc::new(ConnShared {
            id,
            client_host: client_host.clone(),
            reset: AtomicBool::new(false),
            wakers: Mutex::new([None, None]),
        });
        inner.conns.insert(
            id,
            ConnRecord {
                id,
                client_host,
                epoch,
                client_closed_us: None,
                server_closed_us: None,
                reset_us: None,
                doomed: false,
            },
        );
        inner.shared.insert(id, shared.clone());
        inner.accepted.insert(peer, id);
        drop(inner);
        SimStream {
            inner: stream,
            shared,
            net: self.clone(),
            side: Side::Server,
        }
    }

    fn note_partition_loss(&self, shared: &ConnShared) {
        let mut inner = self.lock();
        if inner.partitioned.contains(&shared.client_host) {
            if let Some(record) = inner.conns.get_mut(&shared.id) {
                record.doomed = true;
            }
        }
    }
}

/// The client library's way to reach the switch from one client host.
#[derive(Clone)]
pub struct SimConnector {
    /// The network registry.
    pub net: Arc<Net>,
    /// The host the connections start from.
    pub host: String,
}

impl Connector for SimConnector {
    type Stream = SimStream;

    async fn connect(&self) -> io::Result<SimStream> {
        self.net
            .connect(&self.host)
            .await
            .map(|(stream, _, _)| stream)
    }
}

impl SimListener {
    /// Binds the switch port on the current host, for switch incarnation `epoch`.
    pub async fn bind(net: Arc<Net>, epoch: u32) -> io::Result<SimListener> {
        let inner = turmoil::net::TcpListener::bind(("0.0.0.0", SWITCH_PORT)).await?;
        Ok(SimListener { inner, net, epoch })
    }
}

impl Listener for SimListener {
    type Io = SimStream;

    async fn accept(&mut self) -> io::Result<SimStream> {
        let (stream, peer) = self.inner.accept().await?;
        Ok(self.net.accepted(stream, peer, self.epoch))
    }

    /// Each simulated host is a client of its own (by its address), as a TCP peer is.
    fn client(io: &SimStream) -> ClientId {
        io.inner
            .peer_addr()
            .map_or(ClientId::Unidentified, ClientId::of_tcp)
    }
}

impl SimStream {
    fn is_reset(&self) -> bool {
        self.shared.reset.load(Ordering::SeqCst)
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_reset() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset by the simulation",
            )));
        }
        {
            let mut wakers = self.shared.wakers.lock().unwrap_or_else(|e| e.into_inner());
            wakers[self.side as usize] = Some(cx.waker().clone());
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_reset() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection reset by the simulation",
            )));
        }
        self.net.note_partition_loss(&self.shared);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.net.note_partition_loss(&self.shared);
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        // Dropping sends a FIN, which a partition loses too.
        self.net.note_partition_loss(&self.shared);
        let now = now_us();
        let mut inner = self.net.lock();
        if let Some(record) = inner.conns.get_mut(&self.shared.id) {
            match self.side {
                Side::Client => record.client_closed_us.get_or_insert(now),
                Side::Server => record.server_closed_us.get_or_insert(now),
            };
        }
    }
}
