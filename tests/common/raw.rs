//! A raw HTTP/1.1 client for the integration tests: it writes the bytes the OCaml clients
//! write (cohttp's alphabetical headers, always a content-length) and reads the exact bytes
//! the switch answers, so tests can assert on them.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw HTTP/1.1 connection.
pub struct Raw<S> {
    stream: S,
    buffer: Vec<u8>,
}

/// A response, byte for byte.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line and headers, with their CRLFs.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw connection to a TCP address.
pub async fn tcp(address: &str) -> Raw<TcpStream> {
    Raw::new(TcpStream::connect(address).await.unwrap())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Writes a request as cohttp 4 does (alphabetical headers, always a content-length).
    pub async fn write(&mut self, method: &str, path: &str, body: &[u8]) {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nconnection: keep-alive\r\ncontent-length: {}\r\nhost: localhost\r\nuser-agent: cohttp\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request).await.unwrap();
    }

    pub async fn read(&mut self) -> Response {
        let head_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await;
        };
        let head = String::from_utf8(self.buffer[..head_end].to_vec()).unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .expect("every response carries content-length")
            .trim()
            .parse()
            .unwrap();
        while self.buffer.len() < head_end + length {
            self.fill().await;
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        let status = head[9..12].parse().unwrap();
        Response { status, head, body }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed by the switch");
        self.buffer.extend_from_slice(&chunk[..n]);
    }

    /// Writes a request and reads its response.
    pub async fn call(&mut self, method: &str, path: &str, body: &[u8]) -> Response {
        self.write(method, path, body).await;
        self.read().await
    }

    /// A GET with an empty body.
    pub async fn get(&mut self, path: &str) -> Response {
        self.call("GET", path, b"").await
    }

    /// Logs in, asserting a 200.
    pub async fn login(&mut self, token: &str) {
        assert_eq!(self.get(&format!("/login/{token}")).await.status, 200);
    }

    /// True once the switch has closed this connection.
    pub async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(200), self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}
