//! Reading the switch's own counters from `GET /metrics`, on a connection of its own.

use anyhow::{Context, Result};

use message_switch::client::{Connection, ConnectionConfig, Connector};
use message_switch::protocol::Request;

/// The per-route request counters (one series per route).
const REQUESTS: &str = "message_switch_request_duration_seconds_count{route=\"";

/// The journal's sync counter (durable switches only).
const SYNCS: &str = "message_switch_journal_syncs_total ";

/// The gauge of parked Transfers.
const BLOCKED_TRANSFERS: &str = "message_switch_blocked_transfers ";

/// A connection for reading `/metrics`.
pub struct Probe {
    connection: Connection,
}

impl Probe {
    /// Opens the probe's connection (it needs no session).
    pub async fn open<C: Connector>(connector: &C) -> Result<Probe> {
        let connection = Connection::open(connector, &ConnectionConfig::default()).await?;
        Ok(Probe { connection })
    }

    /// HTTP requests the switch has answered (all routes but `/metrics` itself) and, for a
    /// durable switch, the journal syncs it has made.
    pub async fn counters(&mut self) -> Result<Counters> {
        let text = self.metrics().await?;
        let syncs = text
            .lines()
            .find_map(|line| line.strip_prefix(SYNCS))
            .map(parse_count)
            .transpose()?;
        Ok(Counters {
            requests: requests_served(&text)?,
            syncs,
        })
    }

    /// Transfers parked right now.
    pub async fn blocked_transfers(&mut self) -> Result<u64> {
        let text = self.metrics().await?;
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(BLOCKED_TRANSFERS))
            .context("no blocked-transfers gauge in /metrics")?;
        parse_count(value)
    }

    async fn metrics(&mut self) -> Result<String> {
        let body = self.connection.execute(&Request::Metrics).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// The switch's counters at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    /// HTTP requests answered, `/metrics` excepted.
    pub requests: u64,
    /// Journal syncs, if the switch is durable.
    pub syncs: Option<u64>,
}

/// The per-route request counters of `/metrics` text, summed (`/metrics` itself excepted).
fn requests_served(text: &str) -> Result<u64> {
    let mut total = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(REQUESTS) else {
            continue;
        };
        let Some((route, value)) = rest.split_once("\"} ") else {
            continue;
        };
        if route != "metrics" {
            total += parse_count(value)?;
        }
    }
    Ok(total)
}

/// A Prometheus sample value that holds a count (printed as an integer or a float).
fn parse_count(value: &str) -> Result<u64> {
    let value: f64 = value
        .trim()
        .parse()
        .with_context(|| format!("not a number in /metrics: {value}"))?;
    Ok(value.max(0.0) as u64)
}
