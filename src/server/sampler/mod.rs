//! The console's sampler: once a second it asks the driver for what the engine already
//! exposes (the counts and the busiest queues' summaries, as `/metrics` does, and the trace
//! events recorded since the last sample) and folds them into a bounded history that
//! `GET /admin/api/overview` serves as JSON.
//!
//! The engine stays pure: sampling is the shell's job, and the engine sees the sampler only
//! as one more reader of the trace (as a Trace request that never waits, but with payloads
//! as recorded, not compacted) and of the queue summaries, both read by one
//! `Command::Inspect`. What the sampler keeps is bounded whatever the load: at most
//! [`SamplerConfig::queues_max`] queues with a series of [`SamplerConfig::history_len`]
//! samples, at most [`SamplerConfig::edges_max`] service-map edges with a bounded number of
//! latencies each, and a bounded map from request ids to callers.
//!
//! Rates come from the trace, which is a bounded ring: when more events happen between two
//! samples than the ring holds, the per-queue and per-edge counts are scaled by the exact
//! total of sends (a counter the engine keeps) and flagged as estimates.

mod history;
mod render;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use super::driver::Command;
use super::inspection::Inspection;
use history::History;

/// How the console's sampler samples, and how much it keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Time between two samples; zero turns the sampler off (the console then shows no
    /// service map, rates or sparklines, only what it reads from the trace itself).
    pub interval: Duration,
    /// Most queues given their own series (the busiest: most sends over the history, then
    /// the deepest); the others are only counted.
    pub queues_max: usize,
    /// Samples kept per series: the sparklines span `history_len × interval`.
    pub history_len: usize,
    /// Most caller → service edges kept for the service map (the most recently active).
    pub edges_max: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            queues_max: 100,
            history_len: 300,
            edges_max: 100,
        }
    }
}

/// A shared handle on the sampled history, cheap to clone; what the console's JSON endpoint
/// reads.
#[derive(Clone)]
pub(crate) struct Samples {
    history: Arc<Mutex<History>>,
}

impl Samples {
    /// The overview the console polls: totals, the busiest queues with their sparklines, and
    /// the service map's edges, as compact JSON (bounded by the configuration's limits).
    pub(crate) fn overview_json(&self) -> Vec<u8> {
        render::overview(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        // The history is plain data that each sample rewrites; a panic elsewhere cannot
        // leave it in a state worse than losing the console.
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the sampler on the current runtime (unless `config.interval` is zero) and returns
/// the handle to its history.
///
/// The task holds only a weak sender, so it never keeps the driver alive; it stops when the
/// switch begins shutting down or the driver is gone.
pub(crate) fn spawn(
    config: SamplerConfig,
    commands: &mpsc::Sender<Command>,
    shutdown: watch::Receiver<bool>,
) -> Samples {
    let samples = Samples {
        history: Arc::new(Mutex::new(History::new(config.clone()))),
    };
    if !config.interval.is_zero() {
        tokio::spawn(run(
            config.interval,
            commands.downgrade(),
            shutdown,
            samples.clone(),
        ));
    }
    samples
}

async fn run(
    interval: Duration,
    commands: mpsc::WeakSender<Command>,
    mut shutdown: watch::Receiver<bool>,
    samples: Samples,
) {
    let mut ticker = tokio::time::interval(interval);
    // A slow sample (a saturated driver) must not be followed by a burst of catch-up ones.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stopping| *stopping) => return,
            _ = ticker.tick() => {}
        }
        let Some(commands) = commands.upgrade() else {
            return;
        };
        let cursor = samples.lock().trace_cursor();
        let Some(inspection) = sample(&commands, cursor).await else {
            return;
        };
        // Do not hold a sender while idle: the driver ends when the switch's handles go.
        drop(commands);
        samples.lock().record(&inspection, &inspection.trace);
    }
}

/// One sample, in one pass of the driver: every queue's summary (as a `/metrics` scrape; the
/// ranking happens here, off the driver) and the trace events from `cursor` (the whole ring
/// the first time), with payloads as recorded: the sampler never shows one, and compacting
/// each for it, as a `/trace` reader gets them, would parse every payload in the driver.
/// `None` once the driver is gone.
async fn sample(commands: &mpsc::Sender<Command>, cursor: i64) -> Option<Inspection> {
    let (reply, inspection) = oneshot::channel();
    commands
        .send(Command::Inspect {
            queues_max: usize::MAX,
            trace_from: Some(cursor),
            reply,
        })
        .await
        .ok()?;
    inspection.await.ok()
}
