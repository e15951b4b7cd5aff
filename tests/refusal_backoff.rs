//! A connection that keeps being refused is slowed on its own (`--refusal-delay-max`), over a
//! real socket: its first refusals in a row are answered at once, the next are held back for
//! a doubling delay and counted for its client in `/metrics`, an answer that is not a 429
//! starts a new run, and another connection is never held.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use common::raw::Raw;
use message_switch::engine;
use message_switch::server::{bind_unix, Config, Switch};

/// Refusals in a row a connection gets at once (the switch's `REFUSALS_FREE`).
const FREE: usize = 8;

/// A switch whose queues hold at most 4 payload bytes, so that a second Send is refused.
async fn switch(refusal_delay_max: Duration) -> (Switch, tempfile::TempDir, PathBuf) {
    let switch = Switch::start(Config {
        engine: engine::Config {
            queue_bytes_max: 4,
            ..engine::Config::default()
        },
        refusal_delay_max,
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sock");
    switch.serve(bind_unix(&path, 0o600).await.unwrap());
    (switch, dir, path)
}

/// A logged-in connection with the full queue `full` created.
async fn connection(path: &PathBuf, token: &str) -> Raw<UnixStream> {
    let mut connection = Raw::new(UnixStream::connect(path).await.unwrap());
    connection.login(token).await;
    let created = connection.get("/persistent/full").await;
    assert_eq!(created.status, 200, "{}", created.text());
    connection
}

/// Sends `count` refused requests to the full queue; how long they took.
async fn refused_sends(connection: &mut Raw<UnixStream>, count: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..count {
        let refused = connection.call("POST", "/request/full/nobody", b"xy").await;
        assert_eq!(refused.status, 429, "{}", refused.text());
    }
    started.elapsed()
}

fn held_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|line| line.starts_with("message_switch_client_refusals_held_total{"))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn a_connection_refused_again_and_again_is_held_back_and_counted() {
    let (_switch, _dir, path) = switch(Duration::from_millis(40)).await;
    let mut flooder = connection(&path, "flooder").await;
    let filled = flooder.call("POST", "/request/full/nobody", b"four").await;
    assert_eq!(filled.status, 200, "{}", filled.text());
    refused_sends(&mut flooder, FREE).await;
    assert_eq!(held_count(&flooder.get("/metrics").await.text()), 0);
    // The /metrics answer ended the run: FREE more at once, then 7 held for
    // 1 + 2 + 4 + 8 + 16 + 32 + 64 → 40 (the maximum) ms: at least 103 ms in all.
    refused_sends(&mut flooder, FREE).await;
    let held = refused_sends(&mut flooder, 7).await;
    assert!(
        held >= Duration::from_millis(103),
        "7 refusals past the free ones took only {held:?}"
    );
    let metrics = flooder.get("/metrics").await.text();
    assert_eq!(held_count(&metrics), 7, "{metrics}");
    // Another connection of the same client has a run of its own: it is answered at once.
    let mut other = connection(&path, "other").await;
    refused_sends(&mut other, FREE).await;
    assert_eq!(held_count(&other.get("/metrics").await.text()), 7);
}

#[tokio::test]
async fn a_zero_delay_maximum_never_holds_a_refusal() {
    let (_switch, _dir, path) = switch(Duration::ZERO).await;
    let mut flooder = connection(&path, "flooder").await;
    let filled = flooder.call("POST", "/request/full/nobody", b"four").await;
    assert_eq!(filled.status, 200, "{}", filled.text());
    refused_sends(&mut flooder, FREE + 20).await;
    assert_eq!(held_count(&flooder.get("/metrics").await.text()), 0);
}
