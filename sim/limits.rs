//! The configuration a seed draws (issue 12): about half the seeds run the switch with its
//! default limits, the rest with small limits drawn so that the workloads reach every one of
//! them often, and the count of how often each limit was reached in a run.
//!
//! Brokers lose messages at their limits (a reply cut short, a full queue, the largest body),
//! and with the defaults (64 MiB replies, 4 million messages per queue) no seed ever gets
//! there. The ranges below sit just above what the RPC actors need to work (so that the
//! liveness phase stays meaningful) and low enough that the raw actors' floods, big bodies,
//! long names, long polls, extra logins and extra connections cross them.

use std::collections::BTreeMap;
use std::time::Duration;

use message_switch::engine::{self, LimitHits};
use message_switch::protocol::Request;
use message_switch::server::ClientLimits;

use crate::history::{Event, Outcome, What};
use crate::rng::SimRng;

/// Every limit the simulation must reach, in the order the summary line shows them. The
/// `every_limit_is_hit` check of the default run fails if one of them was never reached.
pub const LIMIT_NAMES: [&str; 13] = [
    "reply_bytes",
    "body_bytes",
    "name_bytes",
    "queues",
    "queue_messages",
    "queue_bytes",
    "stored_bytes",
    "trace_entries",
    "trace_bytes",
    "wait_timeout",
    "logins",
    "connections",
    "refused_sends",
];

/// The limits of one seed's switch.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// The engine's limits.
    pub engine: engine::Config,
    /// The largest request body.
    pub body_bytes_max: usize,
    /// The most connections open at once.
    pub connections_max: usize,
    /// The per-client connection limits (a client host is one client).
    pub client_limits: ClientLimits,
    /// The longest hold of a refusal on a connection refused again and again.
    pub refusal_delay_max: Duration,
}

/// What the workload of a seed needs from the switch to keep working, from which the drawn
/// limits are set just above it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// Queues the RPC actors and the shared raw queues need at once.
    pub queues: usize,
    /// Connections every actor holds at once when nothing is wrong.
    pub connections: usize,
}

impl Limits {
    /// The switch's defaults.
    pub fn defaults() -> Limits {
        let server = message_switch::server::Config::default();
        Limits {
            engine: server.engine,
            body_bytes_max: server.body_bytes_max,
            connections_max: server.connections_max,
            client_limits: server.client_limits,
            refusal_delay_max: server.refusal_delay_max,
        }
    }

    /// Draws small limits for a seed whose workload needs `needs`.
    pub fn draw(rng: &mut SimRng, needs: Needs) -> Limits {
        let trace_entries_max = rng.range(4, 32) as usize;
        let mut engine = engine::Config {
            // A few messages per reply, and sometimes one: payloads are 10 to 40 bytes,
            // except the big ones drawn against the body limit.
            transfer_reply_bytes_max: if rng.chance(0.7) {
                rng.range(24, 256)
            } else {
                rng.range(256, 4096)
            } as usize,
            // Fresh transient names (`transient:` and 16 digits) are 26 bytes, the actors'
            // own names less: the long-name requests are drawn around this limit.
            name_bytes_max: rng.range(28, 64) as usize,
            queues_max: needs.queues + rng.range(0, 3) as usize,
            queue_messages_max: rng.range(3, 40) as usize,
            stored_bytes_max: rng.range(300, 4096) as usize,
            // Above every RPC actor's long poll (at most 8 s): the raw actors' long polls
            // reach past it.
            wait_timeout_max: Duration::from_secs(rng.range(8, 12)),
            logins_per_connection_max: rng.range(1, 4) as usize,
            trace_entries_max,
            // Between 80 and 200 bytes per entry: small events fill the entries first, big
            // payloads the bytes, so both limits are reached in most seeds.
            trace_bytes_max: trace_entries_max * rng.range(80, 200) as usize,
            ..engine::Config::default()
        };
        // A Transfer body naming two queues at the name limit must still fit.
        let body_bytes_max = rng.range(320, 1024) as usize;
        let connections_max = needs.connections + rng.range(0, 2) as usize;
        // Drawn after every other limit, so that adding it left their draws as they were.
        // From a quarter of the stored bytes (the default's share: a burst of small Sends or
        // one big body fills a queue before the switch) to all of them (the switch-wide limit
        // is reached first).
        engine.queue_bytes_max = rng.range(
            engine.stored_bytes_max as u64 / 4,
            engine.stored_bytes_max as u64,
        ) as usize;
        // Drawn last for the same reason. Half the seeds hold no refusal, so that bursts
        // against a full queue go on long enough to reach the byte limits too; the others
        // hold up to the default or a little of it, in virtual time.
        let refusal_delay_max = if rng.chance(0.5) {
            Duration::ZERO
        } else {
            Duration::from_millis(rng.range(1, 100))
        };
        Limits {
            engine,
            body_bytes_max,
            connections_max,
            client_limits: ClientLimits::default(),
            refusal_delay_max,
        }
    }

    /// One line for the seed's summary.
    pub fn describe(&self) -> String {
        let e = &self.engine;
        format!(
            "reply {}B, body {}B, name {}B, {} queues, {} msgs/queue, {}B/queue, stored {}B, \
             trace {}/{}B, wait {}s, {} logins/conn, {} conns, refusals held {}ms",
            e.transfer_reply_bytes_max,
            self.body_bytes_max,
            e.name_bytes_max,
            e.queues_max,
            e.queue_messages_max,
            e.queue_bytes_max,
            e.stored_bytes_max,
            e.trace_entries_max,
            e.trace_bytes_max,
            e.wait_timeout_max.as_secs(),
            e.logins_per_connection_max,
            self.connections_max,
            self.refusal_delay_max.as_millis()
        )
    }
}

/// How often each limit was reached in a run, by name ([`LIMIT_NAMES`]).
pub fn hits(events: &[Event]) -> BTreeMap<&'static str, u64> {
    // Each switch incarnation counts from zero: add up each one's last probe. A crash loses
    // what happened since the incarnation's last probe (at most 250 ms).
    let mut by_epoch: BTreeMap<u32, LimitHits> = BTreeMap::new();
    let mut body_bytes = 0;
    let mut connections = 0;
    let mut refused_sends = 0;
    let mut requests = BTreeMap::new();
    for event in events {
        match &event.what {
            What::Probe(probe) => {
                by_epoch.insert(probe.epoch, probe.stats.limits_hit);
            }
            What::Invoke { op, request, .. } => {
                requests.insert(*op, request);
            }
            What::Complete {
                op,
                outcome: Outcome::Status(status, text),
            } => {
                match (*status, text.as_str()) {
                    (413, _) => body_bytes += 1,
                    (429, text)
                        if text.starts_with("too many open connections")
                            || text.starts_with("this client (") =>
                    {
                        connections += 1
                    }
                    _ => {}
                }
                if matches!(requests.get(op), Some(Request::Send { .. })) {
                    refused_sends += 1;
                }
            }
            _ => {}
        }
    }
    let mut total = LimitHits::default();
    for hits in by_epoch.values() {
        total.transfer_reply_bytes += hits.transfer_reply_bytes;
        total.name_bytes += hits.name_bytes;
        total.queues += hits.queues;
        total.queue_messages += hits.queue_messages;
        total.queue_bytes += hits.queue_bytes;
        total.stored_bytes += hits.stored_bytes;
        total.trace_entries += hits.trace_entries;
        total.trace_bytes += hits.trace_bytes;
        total.wait_timeout += hits.wait_timeout;
        total.logins += hits.logins;
    }
    let counts = [
        total.transfer_reply_bytes,
        body_bytes,
        total.name_bytes,
        total.queues,
        total.queue_messages,
        total.queue_bytes,
        total.stored_bytes,
        total.trace_entries,
        total.trace_bytes,
        total.wait_timeout,
        total.logins,
        connections,
        refused_sends,
    ];
    LIMIT_NAMES.into_iter().zip(counts).collect()
}

/// The hits as the summary line shows them: `name=count` separated by spaces.
pub fn format_hits(hits: &BTreeMap<&'static str, u64>) -> String {
    LIMIT_NAMES
        .iter()
        .map(|name| format!("{name}={}", hits.get(name).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses what [`format_hits`] wrote after `hits: ` in a summary line, adding into `total`.
pub fn add_parsed_hits(line: &str, total: &mut BTreeMap<String, u64>) {
    let Some((_, rest)) = line.split_once("hits: ") else {
        return;
    };
    for pair in rest.split_whitespace() {
        if let Some((name, count)) = pair.split_once('=') {
            if let Ok(count) = count.trim_end_matches(',').parse::<u64>() {
                *total.entry(name.to_owned()).or_default() += count;
            }
        }
    }
}
