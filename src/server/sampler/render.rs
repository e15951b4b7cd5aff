//! The history as the console's JSON. Its size is bounded by the sampler's limits: at most
//! `queues_max` queues with [`SPARK_POINTS`] points per series, and at most `edges_max`
//! edges, each with a few numbers and two names (names are bounded by the engine).

use std::collections::VecDeque;

use super::history::{listener, History, EDGE_WINDOW_NS};
use crate::engine::Timestamp;
use crate::protocol::json::{write_int, write_string};

/// Points per sparkline: samples are merged (depth: the maximum; sends: the mean rate) so
/// that a series never has more, whatever `history_len` is.
pub(super) const SPARK_POINTS: usize = 60;

/// The overview JSON (see `docs/operations.md`, "Console").
pub(super) fn overview(history: &History) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    let interval_s = history.config.interval.as_secs_f64().max(1e-9);
    let group = history.config.history_len.div_ceil(SPARK_POINTS).max(1);
    let points = history.config.history_len.max(1).div_ceil(group);
    out.push(b'{');
    field(&mut out, "interval_ms", false);
    write_u64(
        &mut out,
        u64::try_from(history.config.interval.as_millis()).unwrap_or(u64::MAX),
    );
    field(&mut out, "spark_seconds", true);
    write_float(&mut out, group as f64 * points as f64 * interval_s);
    let now = history.latest.as_ref().map(|l| l.now);
    field(&mut out, "now", true);
    match now {
        Some(now) => write_float(&mut out, now.unix_seconds()),
        None => out.extend_from_slice(b"null"),
    }
    totals(&mut out, history, interval_s, group, points);
    field(&mut out, "untracked", true);
    out.extend_from_slice(b"{\"queues\":");
    write_u64(&mut out, history.untracked.0 as u64);
    out.extend_from_slice(b",\"messages\":");
    write_u64(&mut out, history.untracked.1 as u64);
    out.push(b'}');
    queues(
        &mut out,
        history,
        now.unwrap_or_default(),
        interval_s,
        group,
        points,
    );
    edges(&mut out, history);
    out.push(b'}');
    out
}

fn totals(out: &mut Vec<u8>, history: &History, interval_s: f64, group: usize, points: usize) {
    field(out, "totals", true);
    out.push(b'{');
    let stats = history.latest.as_ref().map(|l| l.stats).unwrap_or_default();
    let uptime = history
        .latest
        .as_ref()
        .map_or(0.0, |l| l.now.nanos_since(l.start) as f64 / 1e9);
    let counts = [
        ("queues", stats.queues as u64),
        ("messages", stats.messages as u64),
        ("payload_bytes", stats.payload_bytes as u64),
        ("connections", stats.connections as u64),
        ("sessions", stats.sessions as u64),
        ("parked_transfers", stats.parked_transfers as u64),
        ("trace_events", stats.trace_events as u64),
        ("messages_sent", stats.messages_sent),
        ("messages_acked", stats.messages_acked),
    ];
    for (index, (name, value)) in counts.into_iter().enumerate() {
        field(out, name, index > 0);
        write_u64(out, value);
    }
    field(out, "uptime_s", true);
    write_float(out, uptime);
    let sent: VecDeque<f64> = history.totals.iter().map(|t| t.sent as f64).collect();
    let acked: VecDeque<f64> = history.totals.iter().map(|t| t.acked as f64).collect();
    field(out, "send_series", true);
    rate_series(out, &sent, interval_s, group, points);
    field(out, "ack_series", true);
    rate_series(out, &acked, interval_s, group, points);
    let minute = recent(history.totals.len(), EDGE_WINDOW_NS, interval_s);
    let lost: u64 = history
        .totals
        .iter()
        .rev()
        .take(minute)
        .map(|t| t.trace_lost)
        .sum();
    field(out, "trace_lost_last_minute", true);
    write_u64(out, lost);
    out.push(b'}');
}

fn queues(
    out: &mut Vec<u8>,
    history: &History,
    now: Timestamp,
    interval_s: f64,
    group: usize,
    points: usize,
) {
    field(out, "queues", true);
    out.push(b'[');
    for (index, (name, track)) in history.queues.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let summary = &track.summary;
        out.push(b'{');
        field(out, "name", false);
        write_text(out, name.as_bytes());
        field(out, "transient", true);
        out.extend_from_slice(if summary.transient { b"true" } else { b"false" });
        field(out, "depth", true);
        write_u64(out, summary.depth as u64);
        field(out, "payload_bytes", true);
        write_u64(out, summary.payload_bytes as u64);
        field(out, "oldest_age_s", true);
        match summary.oldest {
            Some(oldest) => write_float(out, now.nanos_since(oldest).max(0) as f64 / 1e9),
            None => out.extend_from_slice(b"null"),
        }
        field(out, "listener", true);
        write_text(out, listener(summary, now).as_bytes());
        field(out, "server", true);
        match history.servers.get(name) {
            Some(server) => write_text(out, server.as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        let minute = recent(track.sends.len(), EDGE_WINDOW_NS, interval_s);
        let recent_sends: f64 = track.sends.iter().rev().take(minute).sum();
        field(out, "send_rate", true);
        write_float(out, recent_sends / (minute.max(1) as f64 * interval_s));
        field(out, "depth_series", true);
        let depth: VecDeque<f64> = track.depth.iter().map(|d| f64::from(*d)).collect();
        max_series(out, &depth, group, points);
        field(out, "send_series", true);
        rate_series(out, &track.sends, interval_s, group, points);
        out.push(b'}');
    }
    out.push(b']');
}

fn edges(out: &mut Vec<u8>, history: &History) {
    field(out, "edges", true);
    out.push(b'[');
    // Sorted so that the JSON (and the map drawn from it) does not depend on hash order.
    let mut keys: Vec<_> = history.edges.keys().collect();
    keys.sort();
    let mut first = true;
    for key in keys {
        let Some(edge) = history.edges.get(key) else {
            continue;
        };
        let (calls, responses, errors) = edge.counts();
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'{');
        field(out, "caller", false);
        write_text(out, key.caller.as_bytes());
        field(out, "service", true);
        write_text(out, key.service.as_bytes());
        field(out, "calls", true);
        write_float(out, calls);
        field(out, "responses", true);
        write_u64(out, u64::from(responses));
        field(out, "errors", true);
        write_u64(out, u64::from(errors));
        for (name, q) in [("p50_ms", 0.5), ("p99_ms", 0.99)] {
            field(out, name, true);
            match edge.latency_quantile(q) {
                Some(ns) => write_float(out, ns as f64 / 1e6),
                None => out.extend_from_slice(b"null"),
            }
        }
        field(out, "estimated", true);
        out.extend_from_slice(if edge.estimated { b"true" } else { b"false" });
        out.push(b'}');
    }
    out.push(b']');
}

/// How many of the last `len` samples fall in `window_ns`.
fn recent(len: usize, window_ns: i64, interval_s: f64) -> usize {
    let samples = (window_ns as f64 / 1e9 / interval_s).round() as usize;
    samples.clamp(1, len.max(1))
}

/// `series` (one value per sample, oldest first) merged `group` samples per point, as a
/// rate per second, right-aligned to `points` points (`null` where there was no sample).
fn rate_series(
    out: &mut Vec<u8>,
    series: &VecDeque<f64>,
    interval_s: f64,
    group: usize,
    points: usize,
) {
    merged(out, series, group, points, |values| {
        values.iter().sum::<f64>() / (values.len() as f64 * interval_s)
    });
}

/// Like [`rate_series`], keeping each group's maximum.
fn max_series(out: &mut Vec<u8>, series: &VecDeque<f64>, group: usize, points: usize) {
    merged(out, series, group, points, |values| {
        values.iter().copied().fold(0.0, f64::max)
    });
}

fn merged(
    out: &mut Vec<u8>,
    series: &VecDeque<f64>,
    group: usize,
    points: usize,
    combine: impl Fn(&[f64]) -> f64,
) {
    let values: Vec<f64> = series.iter().copied().collect();
    // Groups end at the newest sample, so the last point is always complete.
    let mut groups: Vec<f64> = values.rchunks(group).map(&combine).collect();
    groups.truncate(points);
    groups.reverse();
    out.push(b'[');
    let missing = points - groups.len();
    for index in 0..points {
        if index > 0 {
            out.push(b',');
        }
        match index.checked_sub(missing).and_then(|i| groups.get(i)) {
            Some(value) => write_float(out, *value),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b']');
}

fn field(out: &mut Vec<u8>, name: &str, comma: bool) {
    if comma {
        out.push(b',');
    }
    write_string(out, name.as_bytes());
    out.push(b':');
}

/// Names are bytes; the page gets them as (lossy) UTF-8 so that its JSON parser accepts them.
fn write_text(out: &mut Vec<u8>, bytes: &[u8]) {
    write_string(out, String::from_utf8_lossy(bytes).as_bytes());
}

fn write_u64(out: &mut Vec<u8>, value: u64) {
    write_int(out, i64::try_from(value).unwrap_or(i64::MAX));
}

/// A finite number with at most three decimals (the console shows no more), trailing zeros
/// dropped to keep the JSON small.
fn write_float(out: &mut Vec<u8>, value: f64) {
    if !value.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    out.extend_from_slice(if text == "-0" { "0" } else { text }.as_bytes());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use serde_json::Value;

    use super::*;
    use crate::engine::{EngineStats, QueueSummary};
    use crate::protocol::{
        Message, MessageId, MessageKind, QueueName, SessionToken, TraceEvent, TraceMessage,
    };
    use crate::server::inspection::Inspection;
    use crate::server::sampler::SamplerConfig;

    const SECOND: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * SECOND;

    /// A full history: 1,000 queues with 64-byte names, 300 samples, every queue busy, and
    /// more callers than edges kept.
    fn full_history() -> History {
        let config = SamplerConfig {
            interval: Duration::from_secs(1),
            ..SamplerConfig::default()
        };
        let mut history = History::new(config);
        let name = |i: usize| format!("{i:0>64}");
        let mut id = 0;
        for tick in 1..=300 {
            let now = T0 + tick * SECOND;
            let queues: Vec<QueueSummary> = (0..1000)
                .map(|i| QueueSummary {
                    name: QueueName::from(name(i).as_str()),
                    transient: false,
                    depth: i,
                    payload_bytes: i,
                    oldest: Some(Timestamp::from_unix_nanos(T0)),
                    next_transfer_expected: None,
                })
                .collect();
            let events: Vec<(i64, TraceEvent)> = (0..200)
                .map(|i| {
                    id += 1;
                    let queue = QueueName::from(name(i % 1000).as_str());
                    let event = TraceEvent {
                        time: (now - 1000) as f64 / 1e9,
                        input: Some(SessionToken::from(name(i).as_str())),
                        queue: queue.clone(),
                        output: None,
                        message: TraceMessage::Message(
                            MessageId::new(queue, id),
                            Message {
                                payload: Bytes::from_static(b"{}"),
                                kind: MessageKind::Request {
                                    reply_to: QueueName::from("reply"),
                                },
                            },
                        ),
                        processing_time: None,
                    };
                    (id - 1, event)
                })
                .collect();
            let inspection = Inspection {
                now: Timestamp::from_unix_nanos(now),
                start: Timestamp::from_unix_nanos(T0),
                stats: EngineStats {
                    queues: 1000,
                    messages_sent: id as u64,
                    ..EngineStats::default()
                },
                queues,
                trace: Vec::new(),
            };
            history.record(&inspection, &events);
        }
        history
    }

    #[test]
    fn the_overview_is_bounded_json() {
        let history = full_history();
        let json = overview(&history);
        // 100 queues × (a 64-byte name and two 60-point series) + 100 edges (two 64-byte
        // names) + totals: well under 128 KiB, which the browser test also asserts.
        assert!(json.len() < 128 * 1024, "{} bytes", json.len());
        let value: Value = serde_json::from_slice(&json).expect("valid JSON");
        let queues = value["queues"].as_array().unwrap();
        assert_eq!(queues.len(), 100);
        assert_eq!(value["untracked"]["queues"], 900);
        for queue in queues {
            assert_eq!(
                queue["depth_series"].as_array().unwrap().len(),
                SPARK_POINTS
            );
            assert_eq!(queue["send_series"].as_array().unwrap().len(), SPARK_POINTS);
        }
        assert_eq!(value["edges"].as_array().unwrap().len(), 100);
        assert_eq!(
            value["totals"]["send_series"].as_array().unwrap().len(),
            SPARK_POINTS
        );
        assert_eq!(value["spark_seconds"], 300);
    }

    #[test]
    fn a_young_history_pads_its_series_on_the_left() {
        let mut history = History::new(SamplerConfig::default());
        let now = T0 + SECOND;
        let inspection = Inspection {
            now: Timestamp::from_unix_nanos(now),
            start: Timestamp::from_unix_nanos(T0),
            stats: EngineStats::default(),
            queues: vec![QueueSummary {
                name: QueueName::from("q"),
                transient: true,
                depth: 3,
                payload_bytes: 3,
                oldest: Some(Timestamp::from_unix_nanos(T0)),
                next_transfer_expected: None,
            }],
            trace: Vec::new(),
        };
        history.record(&inspection, &[]);
        let value: Value = serde_json::from_slice(&overview(&history)).unwrap();
        let queue = &value["queues"][0];
        let depth = queue["depth_series"].as_array().unwrap();
        assert!(depth[..SPARK_POINTS - 1].iter().all(Value::is_null));
        assert_eq!(depth[SPARK_POINTS - 1], 3);
        assert_eq!(queue["oldest_age_s"], 1);
        assert_eq!(queue["listener"], "none");
        assert_eq!(queue["transient"], true);
    }
}
