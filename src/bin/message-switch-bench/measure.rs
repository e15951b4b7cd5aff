//! Measurement windows, latency samples and CPU accounting shared by every workload.
//!
//! A workload starts its workers, which loop until told to stop; [`run_window`] lets them warm
//! up, then opens the measurement window (reading the CPU time of the server process and of
//! the bench before and after), and finally tells the workers to stop. Workers keep the
//! latency of each operation that completed while the window was open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::child;

/// Most operations one worker performs in one workload, whatever the window: every request
/// loop is bounded in count as well as in time.
pub const OPERATIONS_PER_WORKER_MAX: u64 = 5_000_000;

/// How long the warm-up and the measurement window last.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Load before measuring (connections warm, allocator and caches settled).
    pub warmup: Duration,
    /// The measured interval.
    pub window: Duration,
}

/// The phase every worker of a workload reads before and after each operation.
#[derive(Default)]
pub struct Flags {
    measuring: AtomicBool,
    stopping: AtomicBool,
}

/// One worker's view of the window: whether to go on, and its latency samples.
pub struct Recorder {
    flags: Arc<Flags>,
    operations: u64,
    samples_ns: Vec<u64>,
}

impl Recorder {
    /// A recorder reading `flags`.
    pub fn new(flags: &Arc<Flags>) -> Recorder {
        Recorder {
            flags: Arc::clone(flags),
            operations: 0,
            samples_ns: Vec::new(),
        }
    }

    /// Whether the worker should start another operation.
    pub fn running(&self) -> bool {
        !self.flags.stopping.load(Ordering::Relaxed) && self.operations < OPERATIONS_PER_WORKER_MAX
    }

    /// An operation that started at `start` just completed; its latency counts if the window
    /// is open.
    pub fn record(&mut self, start: Instant) {
        self.operations += 1;
        if self.flags.measuring.load(Ordering::Relaxed) {
            let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.samples_ns.push(nanos);
        }
    }

    /// The samples taken inside the window, and how many operations ran in all.
    pub fn into_samples(self) -> Samples {
        Samples {
            latencies_ns: self.samples_ns,
            operations: self.operations,
        }
    }
}

/// What one worker recorded.
pub struct Samples {
    /// Latencies of the operations completed inside the window, in ns.
    pub latencies_ns: Vec<u64>,
    /// Operations completed in all, warm-up included.
    pub operations: u64,
}

/// What one window measured, apart from latencies.
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowCpu {
    /// The window's length.
    pub elapsed: Duration,
    /// CPU time the server process used during the window.
    pub server: Duration,
    /// The part of `server` spent in user mode (the rest is the kernel's, on its behalf),
    /// when measured.
    pub server_user: Option<Duration>,
    /// CPU time the bench process (the load generator) used during the window.
    pub client: Duration,
}

impl WindowCpu {
    /// Adds another window's figures to these (for a window measured in slices).
    pub fn add(&mut self, other: WindowCpu) {
        self.elapsed += other.elapsed;
        self.server += other.server;
        self.server_user = match (self.server_user, other.server_user) {
            (Some(mine), Some(theirs)) => Some(mine + theirs),
            _ => None,
        };
        self.client += other.client;
    }
}

/// Waits out the warm-up, measures one window of the server process `server_pid`, then tells
/// the workers to stop. The workers must already be running.
pub async fn run_window(flags: &Flags, timing: Timing, server_pid: u32) -> Result<WindowCpu> {
    tokio::time::sleep(timing.warmup).await;
    let (user_before, system_before) = child::cpu_split(server_pid)?;
    let client_before = child::cpu_time(std::process::id())?;
    let start = Instant::now();
    flags.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(timing.window).await;
    flags.measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let (user_after, system_after) = child::cpu_split(server_pid)?;
    let client_after = child::cpu_time(std::process::id())?;
    flags.stopping.store(true, Ordering::Relaxed);
    let server_user = user_after.saturating_sub(user_before);
    Ok(WindowCpu {
        elapsed,
        server: server_user + system_after.saturating_sub(system_before),
        server_user: Some(server_user),
        client: client_after.saturating_sub(client_before),
    })
}

/// Latency samples, sorted.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    sorted_ns: Vec<u64>,
}

impl Latencies {
    /// Merges the latencies of several workers.
    pub fn from_samples(samples: impl IntoIterator<Item = Vec<u64>>) -> Latencies {
        let mut sorted_ns: Vec<u64> = samples.into_iter().flatten().collect();
        sorted_ns.sort_unstable();
        Latencies { sorted_ns }
    }

    /// How many operations completed inside the window.
    pub fn count(&self) -> u64 {
        self.sorted_ns.len() as u64
    }

    /// The `q` quantile (0 ≤ q ≤ 1), nearest rank; zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.sorted_ns.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.sorted_ns.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.sorted_ns.len()) - 1;
        Duration::from_nanos(self.sorted_ns[index])
    }

    /// The median.
    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

/// Throughput, latency and CPU cost of one workload cell.
#[derive(Clone, Debug)]
pub struct Throughput {
    /// Latencies of the operations completed inside the window.
    pub latency: Latencies,
    /// The window and the CPU used in it.
    pub cpu: WindowCpu,
    /// HTTP requests the switch served per operation (over the whole cell, warm-up
    /// included), when known.
    pub requests_per_operation: Option<f64>,
    /// Journal syncs the switch made per operation (over the whole cell, warm-up included),
    /// when it is durable.
    pub syncs_per_operation: Option<f64>,
}

impl Throughput {
    /// A cell's figures from its workers' samples and its window.
    pub fn new(samples: Vec<Samples>, cpu: WindowCpu) -> Throughput {
        Throughput {
            latency: Latencies::from_samples(samples.into_iter().map(|s| s.latencies_ns)),
            cpu,
            requests_per_operation: None,
            syncs_per_operation: None,
        }
    }

    /// Operations completed per second.
    pub fn per_second(&self) -> f64 {
        self.latency.count() as f64 / self.cpu.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU time per operation.
    pub fn server_cpu_per_operation(&self) -> Duration {
        per_operation(self.cpu.server, self.latency.count())
    }

    /// The user-mode part of [`Throughput::server_cpu_per_operation`], when measured.
    pub fn server_user_cpu_per_operation(&self) -> Option<Duration> {
        Some(per_operation(self.cpu.server_user?, self.latency.count()))
    }

    /// Bench (client) CPU time per operation.
    pub fn client_cpu_per_operation(&self) -> Duration {
        per_operation(self.cpu.client, self.latency.count())
    }
}

/// `total` divided evenly among `operations` (zero for none).
pub fn per_operation(total: Duration, operations: u64) -> Duration {
    match u32::try_from(operations) {
        Ok(0) => Duration::ZERO,
        Ok(count) => total / count,
        Err(_) => Duration::from_secs_f64(total.as_secs_f64() / operations as f64),
    }
}
