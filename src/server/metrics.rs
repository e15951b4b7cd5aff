//! Prometheus metrics: request latency histograms kept by the HTTP shell, and the text
//! exposition of `GET /metrics`, built from an engine [`Inspection`].
//!
//! Label cardinality is bounded: per-queue series exist only for the `metrics_queues_max`
//! deepest queues; the rest are summed in totals and counted in
//! `message_switch_queues_unlisted`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::protocol::Request;
use crate::store::JournalStats;

use super::admission::{ClientCounts, Refusal};
use super::client::ClientId;
use super::inspection::Inspection;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_S: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0, 30.0,
];

/// The routes requests are counted under: a fixed set, so labels stay bounded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Route {
    Login,
    Create,
    Destroy,
    Send,
    Transfer,
    Ack,
    List,
    Trace,
    Diagnostics,
    Shutdown,
    Web,
    Metrics,
    Health,
    /// Unroutable or malformed requests.
    Invalid,
}

const ROUTES: [Route; 14] = [
    Route::Login,
    Route::Create,
    Route::Destroy,
    Route::Send,
    Route::Transfer,
    Route::Ack,
    Route::List,
    Route::Trace,
    Route::Diagnostics,
    Route::Shutdown,
    Route::Web,
    Route::Metrics,
    Route::Health,
    Route::Invalid,
];

impl Route {
    pub(crate) fn of(request: &Request) -> Route {
        match request {
            Request::Login(_) => Route::Login,
            Request::CreatePersistent(_) | Request::CreateTransient(_) => Route::Create,
            Request::Destroy(_) => Route::Destroy,
            Request::Send { .. } => Route::Send,
            Request::Transfer(_) => Route::Transfer,
            Request::Ack(_) => Route::Ack,
            Request::List { .. } => Route::List,
            Request::Trace { .. } => Route::Trace,
            Request::Diagnostics => Route::Diagnostics,
            Request::Shutdown => Route::Shutdown,
            Request::Web(_) => Route::Web,
            Request::Metrics => Route::Metrics,
            Request::Health => Route::Health,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Login => "login",
            Route::Create => "create",
            Route::Destroy => "destroy",
            Route::Send => "send",
            Route::Transfer => "transfer",
            Route::Ack => "ack",
            Route::List => "list",
            Route::Trace => "trace",
            Route::Diagnostics => "diagnostics",
            Route::Shutdown => "shutdown",
            Route::Web => "web",
            Route::Metrics => "metrics",
            Route::Health => "health",
            Route::Invalid => "invalid",
        }
    }
}

/// A latency histogram updated with relaxed atomics from many connection tasks.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = BUCKETS_S.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of this histogram.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let separator = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS_S.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {count}"
        );
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Request latencies per route.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    latency: [Histogram; ROUTES.len()],
}

impl HttpMetrics {
    pub(crate) fn observe(&self, route: Route, elapsed: Duration) {
        let index = ROUTES.iter().position(|r| *r == route).unwrap_or(0);
        self.latency[index].observe(elapsed);
    }
}

/// Renders the exposition text.
pub(crate) fn render(
    inspection: &Inspection,
    http: &HttpMetrics,
    durability: Option<(&Histogram, &JournalStats)>,
    trace_bytes_max: usize,
    clients: &[(ClientId, ClientCounts)],
) -> String {
    let mut out = String::with_capacity(4096 + inspection.queues.len() * 200);
    let stats = &inspection.stats;
    let uptime = inspection.now.nanos_since(inspection.start) as f64 / 1e9;
    gauge(
        &mut out,
        "message_switch_uptime_seconds",
        "Seconds since the switch started.",
        uptime,
    );

    header(
        &mut out,
        "message_switch_queue_depth",
        "gauge",
        "Messages stored in a queue.",
    );
    for queue in &inspection.queues {
        let _ = writeln!(
            out,
            "message_switch_queue_depth{{{}}} {}",
            queue_labels(&queue.name.to_text(), queue.transient),
            queue.depth
        );
    }
    header(
        &mut out,
        "message_switch_queue_oldest_message_age_seconds",
        "gauge",
        "Age of the oldest message stored in a queue (0 when empty).",
    );
    for queue in &inspection.queues {
        let age = queue
            .oldest
            .map_or(0.0, |t| inspection.now.nanos_since(t) as f64 / 1e9);
        let _ = writeln!(
            out,
            "message_switch_queue_oldest_message_age_seconds{{{}}} {age}",
            queue_labels(&queue.name.to_text(), queue.transient),
        );
    }
    gauge(
        &mut out,
        "message_switch_queues",
        "Queues that exist.",
        stats.queues as f64,
    );
    gauge(
        &mut out,
        "message_switch_queues_unlisted",
        "Queues left out of the per-queue series (only the deepest are listed).",
        stats.queues.saturating_sub(inspection.queues.len()) as f64,
    );
    gauge(
        &mut out,
        "message_switch_messages_stored",
        "Messages stored in all queues.",
        stats.messages as f64,
    );
    gauge(
        &mut out,
        "message_switch_payload_bytes_stored",
        "Payload bytes stored in all queues.",
        stats.payload_bytes as f64,
    );
    counter(
        &mut out,
        "message_switch_messages_sent_total",
        "Messages stored by a send.",
        stats.messages_sent,
    );
    counter(
        &mut out,
        "message_switch_messages_acked_total",
        "Messages deleted by an ack.",
        stats.messages_acked,
    );
    counter(
        &mut out,
        "message_switch_messages_transferred_total",
        "Messages returned by transfers.",
        stats.messages_transferred,
    );
    counter(
        &mut out,
        "message_switch_transient_queues_cleaned_total",
        "Transient queues removed when their session's last connection closed.",
        stats.transient_queues_cleaned,
    );
    gauge(
        &mut out,
        "message_switch_blocked_transfers",
        "Transfers waiting for a message.",
        stats.parked_transfers as f64,
    );
    gauge(
        &mut out,
        "message_switch_blocked_trace_reads",
        "Trace reads waiting for an event.",
        stats.parked_traces as f64,
    );
    gauge(
        &mut out,
        "message_switch_connections",
        "Open client connections.",
        stats.connections as f64,
    );
    gauge(
        &mut out,
        "message_switch_sessions",
        "Distinct session tokens with an open connection.",
        stats.sessions as f64,
    );
    gauge(
        &mut out,
        "message_switch_trace_events",
        "Events held in the trace buffer.",
        stats.trace_events as f64,
    );
    gauge(
        &mut out,
        "message_switch_trace_bytes",
        "Bytes held in the trace buffer.",
        stats.trace_bytes as f64,
    );
    gauge(
        &mut out,
        "message_switch_trace_bytes_limit",
        "Most bytes the trace buffer holds.",
        trace_bytes_max as f64,
    );
    header(
        &mut out,
        "message_switch_request_duration_seconds",
        "histogram",
        "Time from a request being routed to its reply being ready, by route.",
    );
    for (route, histogram) in ROUTES.iter().zip(&http.latency) {
        let labels = format!("route=\"{}\"", route.label());
        histogram.render(&mut out, "message_switch_request_duration_seconds", &labels);
    }
    if let Some((histogram, journal)) = durability {
        journal_counters(&mut out, journal);
        header(
            &mut out,
            "message_switch_fsync_duration_seconds",
            "histogram",
            "Time from a batch of changes being handed to the journal until it is durable (includes waiting for a sync already in flight).",
        );
        histogram.render(&mut out, "message_switch_fsync_duration_seconds", "");
    }
    client_series(&mut out, clients);
    out
}

/// One per-client series: its name, type, help and value.
type ClientSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ClientCounts) -> f64,
);

/// The per-client connection counters: who is held back or refused by the per-client
/// limits or the fair turns, and why. `clients` are the ones to list (the caller bounds and
/// ranks them).
fn client_series(out: &mut String, clients: &[(ClientId, ClientCounts)]) {
    let series: [ClientSeries; 7] = [
        (
            "message_switch_client_connections",
            "gauge",
            "Open connections of a client (a process on the Unix socket, an IP address on TCP).",
            |c| c.open as f64,
        ),
        (
            "message_switch_client_connections_accepted_total",
            "counter",
            "Connections of a client accepted and served.",
            |c| c.accepted as f64,
        ),
        (
            "message_switch_client_connections_held_total",
            "counter",
            "Connections of a client held back (not read) because it opened them faster than --client-connects-per-second.",
            |c| c.held as f64,
        ),
        (
            "message_switch_client_connections_held_seconds_total",
            "counter",
            "Time a client's connections spent held back.",
            |c| c.held_time.as_secs_f64(),
        ),
        (
            "message_switch_client_turns_cut_short_total",
            "counter",
            "Driver turns that ended a client's share of the engine's work with some of it still waiting (it sent more than its share while others had work too).",
            |c| c.turns_cut_short as f64,
        ),
        (
            "message_switch_client_refusals_held_total",
            "counter",
            "429s held back before they were written because the client's connection kept being refused (--refusal-delay-max).",
            |c| c.refusals_held as f64,
        ),
        (
            "message_switch_client_refusals_held_seconds_total",
            "counter",
            "Time a client's refusals were held back.",
            |c| c.refusals_held_time.as_secs_f64(),
        ),
    ];
    let labels: Vec<String> = clients
        .iter()
        .map(|(client, _)| format!("client=\"{}\"", escape_label(&client.to_string())))
        .collect();
    for (name, kind, help, value) in series {
        header(out, name, kind, help);
        for (label, (_, counts)) in labels.iter().zip(clients) {
            let _ = writeln!(out, "{name}{{{label}}} {}", value(counts));
        }
    }
    let name = "message_switch_client_connections_refused_total";
    header(
        out,
        name,
        "counter",
        "Connections of a client refused with 429, by reason: connections (over --client-connections-max) or rate (over --client-connects-per-second past its hold).",
    );
    for (label, (_, counts)) in labels.iter().zip(clients) {
        for (reason, count) in [
            (Refusal::TooManyOpen, counts.refused_open),
            (Refusal::TooFast, counts.refused_rate),
        ] {
            let _ = writeln!(
                out,
                "{name}{{{label},reason=\"{}\"}} {count}",
                reason.label()
            );
        }
    }
}

/// The journal's own counters: what durability costs in disk operations, and compaction.
fn journal_counters(out: &mut String, journal: &JournalStats) {
    counter(
        out,
        "message_switch_journal_syncs_total",
        "Group commits: journal syncs (fdatasync) that succeeded.",
        journal.syncs,
    );
    counter(
        out,
        "message_switch_journal_batches_total",
        "Batches of changes (driver wake-ups with changes) made durable.",
        journal.batches,
    );
    counter(
        out,
        "message_switch_journal_written_bytes_total",
        "Bytes of journal records written.",
        journal.bytes_written,
    );
    counter(
        out,
        "message_switch_journal_stores_withdrawn_total",
        "Messages acked before their store was written (held back by the switch, or waiting for the journal writer), so neither was written.",
        journal.stores_withdrawn,
    );
    counter(
        out,
        "message_switch_journal_compactions_total",
        "Snapshots written by compaction.",
        journal.compactions,
    );
    gauge(
        out,
        "message_switch_journal_sync_seconds_max",
        "The longest journal sync since the switch started.",
        journal.sync_time_max.as_secs_f64(),
    );
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn queue_labels(name: &str, transient: bool) -> String {
    let kind = if transient { "transient" } else { "persistent" };
    format!("queue=\"{}\",kind=\"{kind}\"", escape_label(name))
}

/// Escapes a label value as the exposition format requires.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(30));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let mut out = String::new();
        histogram.render(&mut out, "h", "");
        assert!(out.contains("h_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("h_count 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
