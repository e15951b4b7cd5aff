//! Hostile and overloaded clients (docs/reliability.md).
//!
//! The six abuse scenarios run against the real binaries at a reduced scale: this runs
//! `message-switch-bench --only abuse` at a small `--abuse-scale`, which fails if any bound
//! of a scenario is not met (memory per stuck reader and per idle session, descriptors and
//! sessions back to the baseline, the pair's calls and the victims' messages getting through,
//! recovery from descriptor exhaustion, one log line per interval). Latencies are reported,
//! not asserted. The full scale is `--abuse-scale 1`, the default of the bench.
//!
//! The request-head timeout is also tested in-process, at its edge: an idle keep-alive
//! connection outlives it, an incomplete head does not.

mod common;

use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use message_switch::server::{Config, Switch};

#[test]
fn the_abuse_scenarios_hold_their_bounds_at_a_small_scale() {
    let output = Command::new(env!("CARGO_BIN_EXE_message-switch-bench"))
        .args(["--only", "abuse", "--abuse-scale", "0.01"])
        .output()
        .expect("the bench runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "abuse checks failed:\n{report}\n{log}"
    );
    for scenario in [
        "1 flood",
        "2 never-read",
        "3 slow headers",
        "4 churn",
        "4 churn, no rate limit",
        "5 descriptors",
        "6 idle sessions",
    ] {
        assert!(
            report.contains(scenario),
            "{scenario} missing from:\n{report}"
        );
    }
}

/// An in-process switch on loopback TCP with a short request-head timeout.
async fn switch_with_head_timeout(limit: Duration) -> (Switch, std::net::SocketAddr) {
    let switch = Switch::start(Config {
        request_head_timeout: Some(limit),
        ..Config::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    switch.serve(listener);
    (switch, address)
}

async fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).await.expect("write");
    let mut buffer = vec![0u8; 4096];
    let read = stream.read(&mut buffer).await.expect("read");
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[tokio::test]
async fn an_idle_session_outlives_the_request_head_timeout() {
    let limit = Duration::from_millis(200);
    let (_switch, address) = switch_with_head_timeout(limit).await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let login = exchange(&mut stream, b"GET /login/idle HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    // Idle for many times the limit: sessions live on connections, so this one must stay.
    tokio::time::sleep(limit * 5).await;
    let created = exchange(
        &mut stream,
        b"GET /transient/mine HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await;
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
}

#[tokio::test]
async fn an_incomplete_request_head_is_closed_after_the_timeout() {
    let (_switch, address) = switch_with_head_timeout(Duration::from_millis(200)).await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(b"GET /login/slo").await.expect("write");
    let mut buffer = [0u8; 64];
    // The switch closes the connection (EOF, or a reset); the outer limit only keeps a broken
    // build from hanging the test.
    let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buffer))
        .await
        .expect("the switch closed the slow connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn a_slow_body_gets_408() {
    let (_switch, address) = switch_with_head_timeout(Duration::from_millis(200)).await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let reply = exchange(
        &mut stream,
        b"POST /transfer HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n{\"ti",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
}

/// A large Transfer reply is streamed (so a reader that never reads pins little), yet it goes
/// out with a `content-length`, like the original's, and decodes to what was sent.
#[tokio::test]
async fn a_streamed_transfer_reply_keeps_its_content_length() {
    use message_switch::protocol::TransferReply;

    let (_switch, address) = switch_with_head_timeout(Duration::from_secs(60)).await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    for request in [
        &b"GET /login/big HTTP/1.1\r\nhost: t\r\n\r\n"[..],
        b"GET /persistent/big HTTP/1.1\r\nhost: t\r\n\r\n",
    ] {
        let reply = exchange(&mut stream, request).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    let payload: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let head = format!(
        "POST /request/big/big HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let sent = exchange(&mut stream, &payload).await;
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    let body = br#"{"timeout":0.0,"queues":["big"]}"#;
    let head = format!(
        "POST /transfer HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut response = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    let (head_end, length) = loop {
        let read = stream.read(&mut buffer).await.expect("read");
        assert!(read > 0, "the switch closed the connection");
        response.extend_from_slice(&buffer[..read]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_lowercase();
            assert!(!head.contains("transfer-encoding"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .expect("a content-length")
                .trim()
                .parse()
                .expect("a number");
            break (end + 4, length);
        }
    };
    while response.len() < head_end + length {
        let read = stream.read(&mut buffer).await.expect("read");
        assert!(read > 0, "the body was cut short");
        response.extend_from_slice(&buffer[..read]);
    }
    let reply = TransferReply::decode(&response[head_end..]).expect("a Transfer reply");
    assert_eq!(reply.messages.len(), 1);
    assert!(
        reply.messages[0].1.payload == payload,
        "the payload came back intact"
    );
}
