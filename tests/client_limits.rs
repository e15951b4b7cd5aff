//! The per-client connection limits over real sockets, at their edges: the count limit
//! refuses exactly the connection past it (and only for that client), the rate limit lets the
//! burst through, holds the next ones back and refuses those that would wait too long, and
//! `/metrics` names the client and the reason.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpListener, UnixStream};

use common::raw::{tcp, Raw};
use message_switch::server::{bind_unix, ClientLimits, Config, Switch};

/// A switch on a Unix socket and on loopback TCP, with the given per-client limits.
async fn switch(limits: ClientLimits) -> (Switch, tempfile::TempDir, PathBuf, String) {
    let switch = Switch::start(Config {
        client_limits: limits,
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sock");
    switch.serve(bind_unix(&path, 0o600).await.unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    switch.serve(listener);
    (switch, dir, path, address)
}

async fn unix(path: &Path) -> Raw<UnixStream> {
    Raw::new(UnixStream::connect(path).await.unwrap())
}

/// This test process's label as a client of the Unix socket.
fn this_process() -> String {
    // The real uid from /proc (no libc call needed), as SO_PEERCRED reports it.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap()
        .to_owned();
    format!("uid={uid} pid={}", std::process::id())
}

async fn metrics(path: &Path) -> String {
    let mut connection = unix(path).await;
    connection.get("/metrics").await.text()
}

fn metric_line(metrics: &str, prefix: &str) -> String {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"))
        .to_owned()
}

#[tokio::test]
async fn the_connection_count_limit_refuses_the_one_past_it_and_only_for_its_client() {
    let (_switch, _dir, path, address) = switch(ClientLimits {
        connections_max: 3,
        connects_per_second: 0.0,
        ..ClientLimits::default()
    })
    .await;
    let mut open = Vec::new();
    for index in 0..3 {
        let mut connection = unix(&path).await;
        connection.login(&format!("limited-{index}")).await;
        open.push(connection);
    }
    let mut fourth = unix(&path).await;
    let refused = fourth.get("/login/limited-3").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let client = this_process();
    assert_eq!(
        refused.text(),
        format!("too many open connections from this client ({client}; limit 3)")
    );
    assert!(fourth.is_closed().await, "a refused connection is closed");
    // Another client (this process over TCP is the client 127.0.0.1) is not counted.
    let mut other = tcp(&address).await;
    other.login("other").await;
    // The console's clients view names the refused client first, with the reason.
    let view = other.get("/admin/api/clients").await.text();
    let first = view
        .split("\"clients\":[")
        .nth(1)
        .unwrap_or_else(|| panic!("no clients in {view}"));
    assert!(
        first.starts_with(&format!("{{\"client\":\"{client}\",\"open\":3,")),
        "{view}"
    );
    assert!(first.contains("\"refused_connections\":1,"), "{view}");
    // Closing one frees its place.
    drop(open.pop());
    let metrics = common::eventually("the closed connection to be counted", || {
        let path = path.clone();
        let client = client.clone();
        async move {
            let text = metrics(&path).await;
            // The /metrics connection itself is one of the three.
            text.contains(&format!(
                "message_switch_client_connections{{client=\"{client}\"}} 3"
            ))
            .then_some(text)
        }
    })
    .await;
    assert_eq!(
        metric_line(
            &metrics,
            &format!(
                "message_switch_client_connections_refused_total{{client=\"{client}\",reason=\"connections\"}}"
            )
        ),
        format!(
            "message_switch_client_connections_refused_total{{client=\"{client}\",reason=\"connections\"}} 1"
        )
    );
    let mut replacement = unix(&path).await;
    replacement.login("limited-again").await;
}

#[tokio::test]
async fn the_rate_limit_passes_the_burst_holds_the_next_and_refuses_past_the_hold() {
    // One connection per 1,000 s after a burst of 2: the third would wait far more than the
    // second the switch holds a connection for, so it is refused at once.
    let (_switch, _dir, path, _address) = switch(ClientLimits {
        connects_per_second: 0.001,
        connect_burst: 2,
        ..ClientLimits::default()
    })
    .await;
    let mut first = unix(&path).await;
    first.login("burst-1").await;
    let mut second = unix(&path).await;
    second.login("burst-2").await;
    let mut third = unix(&path).await;
    // Held back instead of refused, it would wait 1,000 s: the guard only keeps such a
    // broken build from hanging the test.
    let refused = tokio::time::timeout(Duration::from_secs(60), third.get("/login/burst-3"))
        .await
        .expect("the third connection was answered, not held back");
    assert_eq!(refused.status, 429, "{}", refused.text());
    let client = this_process();
    assert_eq!(
        refused.text(),
        format!(
            "this client ({client}) opens connections too fast (limit 0.001 per second, burst 2)"
        )
    );
    // The established connections are not affected; the count shows on them.
    let text = first.get("/metrics").await.text();
    assert!(
        text.contains(&format!(
            "message_switch_client_connections_refused_total{{client=\"{client}\",reason=\"rate\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "message_switch_client_connections_accepted_total{{client=\"{client}\"}} 2"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_connection_a_little_too_fast_is_held_back_then_served() {
    // 1.25 per second, no burst: the second connection's token is 800 ms after the first's,
    // within the second of holding (the login in between takes far less).
    let (_switch, _dir, path, _address) = switch(ClientLimits {
        connects_per_second: 1.25,
        connect_burst: 1,
        ..ClientLimits::default()
    })
    .await;
    let mut first = unix(&path).await;
    first.login("steady-1").await;
    let mut second = unix(&path).await;
    second.login("steady-2").await;
    let text = second.get("/metrics").await.text();
    let client = this_process();
    let held = metric_line(
        &text,
        &format!("message_switch_client_connections_held_total{{client=\"{client}\"}}"),
    );
    assert!(held.ends_with(" 1"), "{held}");
    let refused = metric_line(
        &text,
        &format!(
            "message_switch_client_connections_refused_total{{client=\"{client}\",reason=\"rate\"}}"
        ),
    );
    assert!(refused.ends_with(" 0"), "{refused}");
}
