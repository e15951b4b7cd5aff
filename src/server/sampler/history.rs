//! The sampled history: a pure fold of samples (an inspection plus the trace events read
//! since the previous sample) into bounded per-queue series and per-edge statistics. No I/O
//! and no clock: the time is the inspection's, so the fold is tested like the engine is.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::SamplerConfig;
use crate::engine::{EngineStats, QueueSummary, Timestamp};
use crate::protocol::json::{self, Value};
use crate::protocol::{MessageKind, QueueName, SessionToken, TraceEvent, TraceMessage};

use super::super::inspection::Inspection;

/// The service map's rates and latencies cover this much time.
pub(super) const EDGE_WINDOW_NS: i64 = 60_000_000_000;

/// Latencies kept per edge (the newest), enough for a stable p99 at human request rates
/// while bounding memory at busy ones.
const EDGE_LATENCIES_MAX: usize = 512;

/// Requests remembered (by message id) to attribute a response to its caller and time it
/// when the engine gives no processing time; the oldest are forgotten first.
const REQUESTS_REMEMBERED_MAX: usize = 16_384;

/// A listener whose next poll is this late is presumed gone (as `message-cli diagnostics`
/// judges it).
pub(super) const LISTENER_GRACE_NS: i64 = 30_000_000_000;

/// A caller (session) → service (queue) pair: one edge of the service map.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct EdgeKey {
    pub(super) caller: SessionToken,
    pub(super) service: QueueName,
}

/// Everything the sampler knows, bounded by its configuration.
pub(super) struct History {
    pub(super) config: SamplerConfig,
    /// The next trace id to read.
    cursor: i64,
    /// Whether a sample has been taken (the first one reads the whole ring).
    started: bool,
    /// The latest inspection's time, counts and queue total.
    pub(super) latest: Option<Latest>,
    /// Exact totals per sample, oldest first, at most `history_len`.
    pub(super) totals: VecDeque<SampleTotals>,
    /// The tracked (busiest) queues, at most `queues_max`.
    pub(super) queues: BTreeMap<QueueName, QueueTrack>,
    /// Queues not tracked: how many, and their messages.
    pub(super) untracked: (usize, usize),
    /// The service map's edges, at most `edges_max`.
    pub(super) edges: HashMap<EdgeKey, Edge>,
    /// The session that last received a request from each tracked queue.
    pub(super) servers: HashMap<QueueName, SessionToken>,
    requests: RequestIndex,
    previous_sent: Option<u64>,
    previous_acked: Option<u64>,
}

/// The latest sample's view of the switch as a whole.
pub(super) struct Latest {
    pub(super) now: Timestamp,
    pub(super) start: Timestamp,
    pub(super) stats: EngineStats,
}

/// Exact counts over one sample interval.
#[derive(Clone, Copy, Default)]
pub(super) struct SampleTotals {
    pub(super) sent: u64,
    pub(super) acked: u64,
    /// Trace events that were evicted from the ring before the sampler read them.
    pub(super) trace_lost: u64,
}

/// One tracked queue: its latest summary and one entry per sample since it was tracked.
pub(super) struct QueueTrack {
    pub(super) summary: QueueSummary,
    /// Messages stored, per sample, oldest first.
    pub(super) depth: VecDeque<u32>,
    /// Sends per sample (scaled up when the trace overflowed), oldest first.
    pub(super) sends: VecDeque<f64>,
}

/// Calls, responses, errors and latencies of one edge over the last minute.
#[derive(Default)]
pub(super) struct Edge {
    /// `(time, calls, responses, errors)` per sample that saw activity, oldest first.
    pub(super) buckets: VecDeque<(Timestamp, f64, u32, u32)>,
    /// `(time of the response, ns from request to response)`, oldest first.
    pub(super) latencies: VecDeque<(Timestamp, i64)>,
    /// When the edge was last active.
    pub(super) last: Timestamp,
    /// Counts were scaled up because the trace overflowed.
    pub(super) estimated: bool,
}

/// A bounded map from a request's message id to its caller and the time it was sent.
#[derive(Default)]
struct RequestIndex {
    by_id: HashMap<(QueueName, i64), (SessionToken, Timestamp)>,
    order: VecDeque<(QueueName, i64)>,
}

/// What one sample's trace events add up to.
#[derive(Default)]
struct Tally {
    sends: HashMap<QueueName, f64>,
    sampled_sends: u64,
    edges: HashMap<EdgeKey, EdgeTally>,
}

/// One edge's part of a sample.
#[derive(Default)]
struct EdgeTally {
    calls: f64,
    responses: u32,
    errors: u32,
    /// `(time of the response, ns from request to response)`.
    latencies: Vec<(Timestamp, i64)>,
}

impl History {
    /// An empty history.
    pub(super) fn new(config: SamplerConfig) -> Self {
        Self {
            config,
            cursor: 0,
            started: false,
            latest: None,
            totals: VecDeque::new(),
            queues: BTreeMap::new(),
            untracked: (0, 0),
            edges: HashMap::new(),
            servers: HashMap::new(),
            requests: RequestIndex::default(),
            previous_sent: None,
            previous_acked: None,
        }
    }

    /// The trace id the next sample reads from.
    pub(super) fn trace_cursor(&self) -> i64 {
        self.cursor
    }

    /// Folds one sample in: `inspection` (every queue's summary) and the trace events read
    /// from [`History::trace_cursor`].
    pub(super) fn record(&mut self, inspection: &Inspection, events: &[(i64, TraceEvent)]) {
        let now = inspection.now;
        // Events the ring evicted before we read them: the counts below are then a sample.
        let trace_lost = match events.first() {
            Some((first, _)) if self.started => first.saturating_sub(self.cursor).max(0),
            _ => 0,
        };
        if let Some((last, _)) = events.last() {
            self.cursor = self.cursor.max(last.saturating_add(1));
        }
        let stats = inspection.stats;
        let sent = delta(&mut self.previous_sent, stats.messages_sent);
        let acked = delta(&mut self.previous_acked, stats.messages_acked);
        // The first sample reads the whole ring: only its last interval counts as "now".
        let since = match &self.latest {
            Some(latest) => latest.now,
            None => before(now, self.interval_ns()),
        };
        let mut tally = self.tally(events, since);
        let scale = if trace_lost > 0 && tally.sampled_sends > 0 {
            (sent as f64 / tally.sampled_sends as f64).max(1.0)
        } else {
            1.0
        };
        tally.sends.values_mut().for_each(|sends| *sends *= scale);
        self.started = true;
        self.push_totals(SampleTotals {
            sent,
            acked,
            trace_lost: u64::try_from(trace_lost).unwrap_or(0),
        });
        self.track_queues(&inspection.queues, &tally.sends);
        self.update_edges(now, tally.edges, scale);
        self.latest = Some(Latest {
            now,
            start: inspection.start,
            stats,
        });
    }

    fn interval_ns(&self) -> i64 {
        i64::try_from(self.config.interval.as_nanos()).unwrap_or(i64::MAX)
    }

    /// Counts sends per queue (those after `since`), and calls, responses, errors and
    /// latencies per edge (all of them: edges are bucketed by event time).
    fn tally(&mut self, events: &[(i64, TraceEvent)], since: Timestamp) -> Tally {
        let mut tally = Tally::default();
        for (_, event) in events {
            let TraceMessage::Message(id, message) = &event.message else {
                continue;
            };
            let time = Timestamp::from_unix_nanos((event.time * 1e9) as i64);
            if let Some(sender) = &event.input {
                if time > since {
                    *tally.sends.entry(id.queue.clone()).or_default() += 1.0;
                    tally.sampled_sends += 1;
                }
                if let MessageKind::Request { .. } = message.kind {
                    self.requests
                        .remember((id.queue.clone(), id.index), sender.clone(), time);
                    let key = EdgeKey {
                        caller: sender.clone(),
                        service: id.queue.clone(),
                    };
                    tally.edges.entry(key).or_default().calls += 1.0;
                }
            }
            let Some(receiver) = &event.output else {
                continue;
            };
            match &message.kind {
                MessageKind::Request { .. } => {
                    self.servers.insert(id.queue.clone(), receiver.clone());
                }
                MessageKind::Response { request } => {
                    let key = (request.queue.clone(), request.index);
                    let (caller, sent) = match self.requests.by_id.get(&key) {
                        Some((caller, sent)) => (caller.clone(), Some(*sent)),
                        None => (receiver.clone(), None),
                    };
                    let latency = event
                        .processing_time
                        .or_else(|| sent.map(|sent| time.nanos_since(sent)));
                    let key = EdgeKey {
                        caller,
                        service: request.queue.clone(),
                    };
                    let edge = tally.edges.entry(key).or_default();
                    edge.responses += 1;
                    edge.errors += u32::from(is_error_response(&message.payload));
                    if let Some(latency) = latency {
                        edge.latencies.push((time, latency.max(0)));
                    }
                }
            }
        }
        tally
    }

    fn push_totals(&mut self, totals: SampleTotals) {
        self.totals.push_back(totals);
        while self.totals.len() > self.config.history_len.max(1) {
            self.totals.pop_front();
        }
    }

    /// Re-ranks every queue (sends over the history, then depth, then name) and keeps the
    /// top `queues_max`, extending their series by this sample.
    fn track_queues(&mut self, summaries: &[QueueSummary], sends: &HashMap<QueueName, f64>) {
        let activity = |summary: &QueueSummary| {
            let past: f64 = self
                .queues
                .get(&summary.name)
                .map_or(0.0, |track| track.sends.iter().sum());
            past + sends.get(&summary.name).copied().unwrap_or(0.0) + summary.depth as f64
        };
        let mut ranked: Vec<(f64, &QueueSummary)> =
            summaries.iter().map(|s| (activity(s), s)).collect();
        let keep = self.config.queues_max;
        if ranked.len() > keep {
            let by_activity = |a: &(f64, &QueueSummary), b: &(f64, &QueueSummary)| {
                b.0.total_cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name))
            };
            if keep > 0 {
                ranked.select_nth_unstable_by(keep - 1, by_activity);
            }
            ranked.truncate(keep);
        }
        let kept: HashSet<&QueueName> = ranked.iter().map(|(_, s)| &s.name).collect();
        self.queues.retain(|name, _| kept.contains(name));
        let history_len = self.config.history_len.max(1);
        for (_, summary) in &ranked {
            let track = self
                .queues
                .entry(summary.name.clone())
                .or_insert_with(|| QueueTrack {
                    summary: (*summary).clone(),
                    depth: VecDeque::new(),
                    sends: VecDeque::new(),
                });
            track.summary = (*summary).clone();
            track
                .depth
                .push_back(u32::try_from(summary.depth).unwrap_or(u32::MAX));
            track
                .sends
                .push_back(sends.get(&summary.name).copied().unwrap_or(0.0));
            while track.depth.len() > history_len {
                track.depth.pop_front();
                track.sends.pop_front();
            }
        }
        let untracked_depth: usize = summaries
            .iter()
            .filter(|s| !self.queues.contains_key(&s.name))
            .map(|s| s.depth)
            .sum();
        self.untracked = (summaries.len() - self.queues.len(), untracked_depth);
        let edges = &self.edges;
        let queues = &self.queues;
        self.servers.retain(|name, _| {
            queues.contains_key(name) || edges.keys().any(|key| key.service == *name)
        });
    }

    /// Adds this sample's per-edge counts, forgets what left the window, and keeps the
    /// `edges_max` most recently active edges.
    fn update_edges(&mut self, now: Timestamp, tallied: HashMap<EdgeKey, EdgeTally>, scale: f64) {
        for (key, tally) in tallied {
            let edge = self.edges.entry(key).or_default();
            edge.buckets
                .push_back((now, tally.calls * scale, tally.responses, tally.errors));
            edge.estimated |= scale > 1.0;
            edge.latencies.extend(tally.latencies);
            while edge.latencies.len() > EDGE_LATENCIES_MAX {
                edge.latencies.pop_front();
            }
            edge.last = now;
        }
        let window_start = before(now, EDGE_WINDOW_NS);
        let span_ns = self
            .interval_ns()
            .saturating_mul(i64::try_from(self.config.history_len).unwrap_or(i64::MAX));
        let forget_before = before(now, span_ns.max(EDGE_WINDOW_NS));
        self.edges.retain(|_, edge| {
            while edge.buckets.front().is_some_and(|b| b.0 <= window_start) {
                edge.buckets.pop_front();
            }
            while edge.latencies.front().is_some_and(|l| l.0 <= window_start) {
                edge.latencies.pop_front();
            }
            if edge.buckets.is_empty() {
                edge.estimated = false;
            }
            edge.last > forget_before
        });
        if self.edges.len() > self.config.edges_max {
            let mut by_recency: Vec<(Timestamp, EdgeKey)> = self
                .edges
                .iter()
                .map(|(key, edge)| (edge.last, key.clone()))
                .collect();
            by_recency.sort_by(|a, b| b.cmp(a));
            for (_, key) in by_recency.into_iter().skip(self.config.edges_max) {
                self.edges.remove(&key);
            }
        }
    }
}

impl RequestIndex {
    fn remember(&mut self, id: (QueueName, i64), caller: SessionToken, time: Timestamp) {
        if self.by_id.insert(id.clone(), (caller, time)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > REQUESTS_REMEMBERED_MAX {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }
}

impl Edge {
    /// Calls, responses and errors over the window.
    pub(super) fn counts(&self) -> (f64, u32, u32) {
        self.buckets
            .iter()
            .fold((0.0, 0, 0), |(c, r, e), b| (c + b.1, r + b.2, e + b.3))
    }

    /// The `q`-quantile (0..=1) of the window's latencies, in ns.
    pub(super) fn latency_quantile(&self, q: f64) -> Option<i64> {
        let mut sorted: Vec<i64> = self.latencies.iter().map(|l| l.1).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted.get(rank.min(sorted.len() - 1)).copied()
    }
}

/// Whether a listener has polled `summary`'s queue recently: `"alive"`, `"stale"` (its next
/// poll is overdue), or `"none"` (nobody ever polled it).
pub(super) fn listener(summary: &QueueSummary, now: Timestamp) -> &'static str {
    match summary.next_transfer_expected {
        None => "none",
        Some(expected) if now.nanos_since(expected) > LISTENER_GRACE_NS => "stale",
        Some(_) => "alive",
    }
}

/// Whether a response payload reports a failure: a JSON object with `"success": false`
/// (the xapi-idl envelope) or a non-null `"error"` member (JSON-RPC). Anything else,
/// including payloads that are not JSON, counts as success: the switch cannot know better.
pub(super) fn is_error_response(payload: &[u8]) -> bool {
    could_report_an_error(payload) && parses_as_an_error(payload)
}

/// Whether `payload` has the bytes an error response needs: the literal `false` (which JSON
/// cannot escape), the word `error`, or a backslash (a key spelled with escapes). Most
/// responses have none, and are not parsed.
fn could_report_an_error(payload: &[u8]) -> bool {
    let contains = |word: &[u8]| payload.windows(word.len()).any(|window| window == word);
    payload.contains(&b'\\') || contains(b"false") || contains(b"error")
}

fn parses_as_an_error(payload: &[u8]) -> bool {
    let Ok(value) = json::parse(payload) else {
        return false;
    };
    matches!(value.member("success"), Some(Value::Bool(false)))
        || value
            .member("error")
            .is_some_and(|e| !matches!(e, Value::Null))
}

/// The change of a monotonic counter since the previous sample (zero the first time).
fn delta(previous: &mut Option<u64>, current: u64) -> u64 {
    let change = previous.map_or(0, |p| current.saturating_sub(p));
    *previous = Some(current);
    change
}

/// `ns` nanoseconds before `time`.
fn before(time: Timestamp, ns: i64) -> Timestamp {
    Timestamp::from_unix_nanos(time.unix_nanos().saturating_sub(ns))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::protocol::{Message, MessageId};

    const SECOND: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * SECOND;

    fn config(queues_max: usize, edges_max: usize) -> SamplerConfig {
        SamplerConfig {
            interval: Duration::from_secs(1),
            queues_max,
            history_len: 300,
            edges_max,
        }
    }

    fn summary(name: &str, depth: usize, listening: bool, now: i64) -> QueueSummary {
        QueueSummary {
            name: QueueName::from(name),
            transient: false,
            depth,
            payload_bytes: depth,
            oldest: (depth > 0).then(|| Timestamp::from_unix_nanos(now - 5 * SECOND)),
            next_transfer_expected: listening.then(|| Timestamp::from_unix_nanos(now)),
        }
    }

    fn inspection(now: i64, sent: u64, queues: Vec<QueueSummary>) -> Inspection {
        Inspection {
            now: Timestamp::from_unix_nanos(now),
            start: Timestamp::from_unix_nanos(T0),
            stats: EngineStats {
                queues: queues.len(),
                messages_sent: sent,
                ..EngineStats::default()
            },
            queues,
            trace: Vec::new(),
        }
    }

    fn event(
        time: i64,
        input: Option<&str>,
        output: Option<&str>,
        id: (&str, i64),
        kind: MessageKind,
        payload: &str,
        processing_time: Option<i64>,
    ) -> TraceEvent {
        TraceEvent {
            time: time as f64 / 1e9,
            input: input.map(SessionToken::from),
            queue: QueueName::from(id.0),
            output: output.map(SessionToken::from),
            message: TraceMessage::Message(
                MessageId::new(QueueName::from(id.0), id.1),
                Message {
                    payload: Bytes::from(payload.to_owned()),
                    kind,
                },
            ),
            processing_time,
        }
    }

    fn request(reply_to: &str) -> MessageKind {
        MessageKind::Request {
            reply_to: QueueName::from(reply_to),
        }
    }

    fn response(queue: &str, index: i64) -> MessageKind {
        MessageKind::Response {
            request: MessageId::new(QueueName::from(queue), index),
        }
    }

    /// One RPC from `caller` to `service`: the request sent and delivered, the response sent
    /// and delivered `latency` ns later.
    fn rpc(
        at: i64,
        caller: &str,
        service: &str,
        index: i64,
        latency: i64,
        answer: &str,
    ) -> Vec<TraceEvent> {
        vec![
            event(
                at,
                Some(caller),
                None,
                (service, index),
                request(caller),
                "{}",
                None,
            ),
            event(
                at,
                None,
                Some("daemon"),
                (service, index),
                request(caller),
                "{}",
                None,
            ),
            event(
                at + latency,
                Some("daemon"),
                None,
                (caller, index + 1),
                response(service, index),
                answer,
                None,
            ),
            event(
                at + latency,
                None,
                Some(caller),
                (caller, index + 1),
                response(service, index),
                answer,
                Some(latency),
            ),
        ]
    }

    fn numbered(events: Vec<TraceEvent>, first: i64) -> Vec<(i64, TraceEvent)> {
        (first..).zip(events).collect()
    }

    #[test]
    fn only_the_busiest_queues_are_tracked_and_the_rest_counted() {
        let mut history = History::new(config(2, 10));
        let now = T0 + SECOND;
        let queues = vec![
            summary("a", 1, true, now),
            summary("b", 7, true, now),
            summary("c", 0, true, now),
            summary("d", 3, false, now),
            summary("e", 0, true, now),
        ];
        // "c" is empty but busy: 5 sends in this interval.
        let sends: Vec<TraceEvent> = (0..5)
            .map(|i| {
                event(
                    now - 1000,
                    Some("x"),
                    None,
                    ("c", i),
                    request("x"),
                    "{}",
                    None,
                )
            })
            .collect();
        history.record(&inspection(now, 5, queues), &numbered(sends, 0));
        let tracked: Vec<String> = history.queues.keys().map(QueueName::to_text).collect();
        assert_eq!(tracked, ["b", "c"]);
        assert_eq!(history.untracked, (3, 4));
        assert_eq!(history.queues[&QueueName::from("c")].sends, [5.0]);
        assert_eq!(history.trace_cursor(), 5);
    }

    #[test]
    fn series_are_bounded_by_the_history_length() {
        let mut history = History::new(SamplerConfig {
            history_len: 10,
            ..config(5, 5)
        });
        for tick in 1..=25 {
            let now = T0 + tick * SECOND;
            history.record(
                &inspection(now, 0, vec![summary("q", tick as usize, true, now)]),
                &[],
            );
        }
        let track = &history.queues[&QueueName::from("q")];
        assert_eq!(track.depth.len(), 10);
        assert_eq!(track.depth.back(), Some(&25));
        assert_eq!(history.totals.len(), 10);
    }

    #[test]
    fn edges_count_calls_latencies_and_errors_over_the_last_minute() {
        let mut history = History::new(config(10, 10));
        let now = T0 + 10 * SECOND;
        let mut events = rpc(
            now - 900_000_000,
            "xapi",
            "svc",
            10,
            2_000_000,
            r#"{"result":1,"error":null,"id":1}"#,
        );
        events.extend(rpc(
            now - 800_000_000,
            "xapi",
            "svc",
            20,
            4_000_000,
            r#"{"result":null,"error":"E","id":1}"#,
        ));
        events.extend(rpc(
            now - 700_000_000,
            "xapi",
            "svc",
            30,
            6_000_000,
            r#"{"success":false}"#,
        ));
        history.record(
            &inspection(now, 6, vec![summary("svc", 0, true, now)]),
            &numbered(events, 0),
        );
        let key = EdgeKey {
            caller: SessionToken::from("xapi"),
            service: QueueName::from("svc"),
        };
        let edge = &history.edges[&key];
        assert_eq!(edge.counts(), (3.0, 3, 2));
        assert_eq!(edge.latency_quantile(0.5), Some(4_000_000));
        assert_eq!(edge.latency_quantile(0.99), Some(6_000_000));
        assert!(!edge.estimated);
        assert_eq!(
            history.servers[&QueueName::from("svc")],
            SessionToken::from("daemon")
        );
        // A minute later the calls have left the window; after the history's span the edge
        // itself is forgotten.
        let later = now + 61 * SECOND;
        history.record(
            &inspection(later, 6, vec![summary("svc", 0, true, later)]),
            &[],
        );
        assert_eq!(history.edges[&key].counts(), (0.0, 0, 0));
        assert_eq!(history.edges[&key].latency_quantile(0.5), None);
        let much_later = now + 301 * SECOND;
        history.record(
            &inspection(much_later, 6, vec![summary("svc", 0, true, much_later)]),
            &[],
        );
        assert!(history.edges.is_empty());
    }

    #[test]
    fn a_response_without_a_remembered_request_is_timed_by_the_engine() {
        let mut history = History::new(config(10, 10));
        let now = T0 + SECOND;
        let events = vec![event(
            now,
            None,
            Some("xapi"),
            ("xapi", 2),
            response("svc", 1),
            "{}",
            Some(3_000_000),
        )];
        history.record(&inspection(now, 0, vec![]), &numbered(events, 0));
        let key = EdgeKey {
            caller: SessionToken::from("xapi"),
            service: QueueName::from("svc"),
        };
        assert_eq!(history.edges[&key].counts(), (0.0, 1, 0));
        assert_eq!(history.edges[&key].latency_quantile(0.5), Some(3_000_000));
    }

    #[test]
    fn the_most_recently_active_edges_are_kept() {
        let mut history = History::new(config(10, 2));
        for (tick, caller) in ["a", "b", "c"].into_iter().enumerate() {
            let now = T0 + (tick as i64 + 1) * SECOND;
            let events = vec![event(
                now - 1,
                Some(caller),
                None,
                ("svc", tick as i64),
                request(caller),
                "{}",
                None,
            )];
            history.record(
                &inspection(now, tick as u64 + 1, vec![]),
                &numbered(events, tick as i64),
            );
        }
        let mut callers: Vec<String> = history.edges.keys().map(|k| k.caller.to_text()).collect();
        callers.sort();
        assert_eq!(callers, ["b", "c"]);
    }

    #[test]
    fn an_overflowed_trace_makes_the_counts_estimates_scaled_by_the_exact_total() {
        let mut history = History::new(config(10, 10));
        let now = T0 + SECOND;
        history.record(&inspection(now, 0, vec![summary("svc", 0, true, now)]), &[]);
        // 100 sends happened, but the ring only still holds 10 of them (ids 90..100).
        let later = now + SECOND;
        let events: Vec<TraceEvent> = (0..10)
            .map(|i| {
                event(
                    later - 1000,
                    Some("xapi"),
                    None,
                    ("svc", i),
                    request("xapi"),
                    "{}",
                    None,
                )
            })
            .collect();
        history.record(
            &inspection(later, 100, vec![summary("svc", 0, true, later)]),
            &numbered(events, 90),
        );
        assert_eq!(history.totals.back().map(|t| t.trace_lost), Some(90));
        assert_eq!(
            history.queues[&QueueName::from("svc")].sends.back(),
            Some(&100.0)
        );
        let key = EdgeKey {
            caller: SessionToken::from("xapi"),
            service: QueueName::from("svc"),
        };
        assert_eq!(history.edges[&key].counts().0, 100.0);
        assert!(history.edges[&key].estimated);
    }

    #[test]
    fn listeners_and_errors_are_classified() {
        let now = Timestamp::from_unix_nanos(T0);
        let mut queue = summary("q", 1, false, T0);
        assert_eq!(listener(&queue, now), "none");
        queue.next_transfer_expected = Some(Timestamp::from_unix_nanos(T0 - LISTENER_GRACE_NS - 1));
        assert_eq!(listener(&queue, now), "stale");
        queue.next_transfer_expected = Some(Timestamp::from_unix_nanos(T0 - LISTENER_GRACE_NS));
        assert_eq!(listener(&queue, now), "alive");
        assert!(is_error_response(br#"{"success":false,"contents":1}"#));
        assert!(is_error_response(
            br#"{"jsonrpc":"2.0","error":{"code":1},"id":1}"#
        ));
        assert!(!is_error_response(br#"{"result":1,"error":null,"id":1}"#));
        assert!(!is_error_response(b"not json"));
        // Keys spelled with escapes are still keys.
        assert!(is_error_response(br#"{"\u0065rror":"x"}"#));
        assert!(is_error_response(br#"{"succ\u0065ss":false}"#));
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_support::config(256))]

        /// The byte check before parsing never hides an error response: objects made of
        /// the members that make one, spelled plainly or with escapes, and of others.
        #[test]
        fn the_byte_check_agrees_with_parsing(
            members in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        r#""success""#, r#""error""#, r#""e\u0072ror""#, r#""succ\u0065ss""#,
                        r#""contents""#, r#""x""#,
                    ]),
                    proptest::sample::select(vec![
                        "false", "true", "null", "1", r#""x""#, r#""false""#, r#"{"error":1}"#,
                    ]),
                ),
                0..4,
            )
        ) {
            let body: Vec<String> =
                members.iter().map(|(key, value)| format!("{key}:{value}")).collect();
            let payload = format!("{{{}}}", body.join(","));
            proptest::prop_assert_eq!(
                is_error_response(payload.as_bytes()),
                parses_as_an_error(payload.as_bytes()),
                "{}",
                payload
            );
        }
    }
}
