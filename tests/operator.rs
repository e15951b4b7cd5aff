//! The operator surfaces over a real socket: `/metrics` parsed as Prometheus exposition text
//! after a scripted workload, `/health`, and the embedded console's files.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::net::TcpListener;

use message_switch::server::{Config, Switch};

use common::raw::tcp;

mod common;

async fn switch(config: Config) -> (Switch, String) {
    let switch = Switch::start(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    switch.serve(listener);
    (switch, address)
}

/// Parses the exposition format strictly enough to catch malformed output: every sample
/// line is `name{labels} value` with a numeric value, and its family was declared by a
/// `# TYPE` line before it.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut declared = std::collections::BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(matches!(kind, "gauge" | "counter" | "histogram"), "{line}");
            declared.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "unexpected line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| declared.contains(*f)))
            .unwrap_or(name);
        assert!(declared.contains(family), "{name} has no # TYPE line");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate {series}"
        );
    }
    samples
}

#[tokio::test]
async fn metrics_reflect_a_scripted_workload() {
    let (switch, address) = switch(Config {
        metrics_queues_max: 2,
        ..Config::default()
    })
    .await;
    let mut conn = tcp(&address).await;
    conn.get("/login/worker").await;
    for queue in ["busy", "quiet", "empty"] {
        conn.get(&format!("/persistent/{queue}")).await;
    }
    for body in ["a", "b", "c"] {
        conn.call("POST", "/request/busy/r", body.as_bytes()).await;
    }
    conn.call("POST", "/request/quiet/r", b"d").await;
    let transfer = conn
        .call("POST", "/transfer", br#"{"timeout":0,"queues":["busy"]}"#)
        .await
        .text();
    let first_id = transfer
        .split("[[\"busy\",")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    conn.get(&format!("/ack/busy/{first_id}")).await;
    let mut transient = tcp(&address).await;
    transient.get("/login/short-lived").await;
    transient.get("/transient/short-lived-reply").await;
    drop(transient);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while switch.stats().await.unwrap().transient_queues_cleaned == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let response = conn.get("/metrics").await;
    let (status, head, text) = (response.status, response.head.clone(), response.text());
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = parse_exposition(&text);
    let value = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("missing {series} in\n{text}"))
    };
    assert_eq!(
        value(r#"message_switch_queue_depth{queue="busy",kind="persistent"}"#),
        2.0
    );
    assert_eq!(
        value(r#"message_switch_queue_depth{queue="quiet",kind="persistent"}"#),
        1.0
    );
    assert!(
        !samples.contains_key(r#"message_switch_queue_depth{queue="empty",kind="persistent"}"#),
        "only the deepest metrics_queues_max queues get series"
    );
    assert_eq!(value("message_switch_queues"), 3.0);
    assert_eq!(value("message_switch_queues_unlisted"), 1.0);
    assert_eq!(value("message_switch_messages_stored"), 3.0);
    assert_eq!(value("message_switch_messages_sent_total"), 4.0);
    assert_eq!(value("message_switch_messages_acked_total"), 1.0);
    assert_eq!(value("message_switch_messages_transferred_total"), 3.0);
    assert_eq!(value("message_switch_transient_queues_cleaned_total"), 1.0);
    assert_eq!(value("message_switch_blocked_transfers"), 0.0);
    assert_eq!(value("message_switch_connections"), 1.0);
    assert_eq!(value("message_switch_sessions"), 1.0);
    assert_eq!(value("message_switch_trace_events"), 8.0);
    assert_eq!(
        value(r#"message_switch_request_duration_seconds_count{route="send"}"#),
        4.0
    );
    assert_eq!(
        value(r#"message_switch_request_duration_seconds_bucket{route="send",le="+Inf"}"#),
        4.0
    );
    assert!(
        value(r#"message_switch_queue_oldest_message_age_seconds{queue="busy",kind="persistent"}"#)
            >= 0.0
    );
    assert!(
        !samples
            .keys()
            .any(|k| k.starts_with("message_switch_fsync")),
        "no journal, no fsync series"
    );
}

/// A durable switch adds the journal's counters: every acknowledged change was synced, so
/// two changes made one after another took at least two syncs.
#[tokio::test]
async fn metrics_of_a_durable_switch_count_the_journal_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (switch, _) = Switch::open_dir(Config::default(), dir.path())
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    switch.serve(listener);
    let mut conn = tcp(&address).await;
    conn.get("/login/worker").await;
    conn.get("/persistent/q").await;
    conn.call("POST", "/request/q/r", b"a").await;
    let text = conn.get("/metrics").await.text();
    let samples = parse_exposition(&text);
    let value = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("missing {series} in\n{text}"))
    };
    assert!(value("message_switch_journal_syncs_total") >= 2.0, "{text}");
    assert!(
        value("message_switch_journal_batches_total") >= 2.0,
        "{text}"
    );
    assert!(value("message_switch_journal_written_bytes_total") > 0.0);
    assert_eq!(value("message_switch_journal_compactions_total"), 0.0);
    assert!(value("message_switch_journal_sync_seconds_max") > 0.0);
    assert!(value("message_switch_fsync_duration_seconds_count") >= 2.0);
}

#[tokio::test]
async fn health_is_ready_while_serving() {
    let (_switch, address) = switch(Config::default()).await;
    let mut conn = tcp(&address).await;
    let response = conn.get("/health").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "ready\n")
    );
}

#[tokio::test]
async fn the_console_is_embedded_and_cannot_be_escaped() {
    let (_switch, address) = switch(Config::default()).await;
    let mut conn = tcp(&address).await;
    for path in ["/admin", "/admin/", "/admin/index.html"] {
        let response = conn.get(path).await;
        assert_eq!(response.status, 200, "{path}");
        assert!(
            response.head.contains("content-type: text/html"),
            "{}",
            response.head
        );
        assert!(response.text().contains(r#"<table id="queues">"#));
    }
    let script = conn.get("/js/console.js").await;
    assert_eq!(script.status, 200);
    assert!(script.head.contains("text/javascript") && script.text().contains("pollTrace"));
    assert_eq!(conn.get("/css/console.css").await.status, 200);
    for path in [
        "/admin/../../etc/passwd",
        "/admin/%2e%2e/%2e%2e/etc/passwd",
        "/admin/nope.js",
        "/images/logo.png",
        "/js/../Cargo.toml",
    ] {
        let response = conn.get(path).await;
        assert_eq!(response.status, 404, "{path}: {}", response.text());
        assert!(!response.text().contains("root:"), "{path}");
    }
}
