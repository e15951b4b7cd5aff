//! How the client reaches a switch: the [`Connector`] trait and its TCP and Unix-socket
//! implementations. The simulation implements the trait for turmoil's TCP.

use std::future::Future;
use std::io;
#[cfg(unix)]
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Opens byte streams to one switch.
///
/// Every connection the client opens comes from [`Connector::connect`]; nothing else in the
/// client knows the socket type, so any transport with tokio's `AsyncRead + AsyncWrite`
/// works (TCP, Unix sockets, turmoil's simulated TCP, in-memory pipes in tests).
///
/// Contract: each call opens a *new*, independent stream to the same switch. Failing to open
/// one is reported as an `io::Error` (the client reports it as
/// [`Error::Unreachable`](super::Error::Unreachable) and, in the RPC patterns, retries with
/// back-off). Implementations must not block the thread; any waiting must go through tokio
/// so that simulated time works.
pub trait Connector: Clone + Send + Sync + 'static {
    /// The stream type a connection runs over.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens a new stream to the switch.
    fn connect(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Connects over TCP to `HOST:PORT` (resolved on every connect, so a name that moves is
/// followed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConnector {
    address: String,
}

impl TcpConnector {
    /// A connector for `address`, in any form `tokio::net::TcpStream::connect` accepts,
    /// e.g. `127.0.0.1:8080` or `localhost:8080`.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
        }
    }

    /// The address connections go to, as given.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Connector for TcpConnector {
    type Stream = TcpStream;

    async fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(self.address.as_str()).await?;
        // Requests are small and strictly request/response: Nagle would only add latency.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Connects to a Unix-domain stream socket, the original switch's only transport.
#[cfg(unix)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixConnector {
    path: PathBuf,
}

#[cfg(unix)]
impl UnixConnector {
    /// A connector for the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The socket path connections go to.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

#[cfg(unix)]
impl Connector for UnixConnector {
    type Stream = tokio::net::UnixStream;

    async fn connect(&self) -> io::Result<tokio::net::UnixStream> {
        tokio::net::UnixStream::connect(&self.path).await
    }
}
