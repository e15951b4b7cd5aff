//! The disk's floor for durable cells: how long `fdatasync` of one small appended record
//! takes in the directory where the switch keeps its state, measured between the durable
//! cells of the same run.
//!
//! The switch's journal appends records to a file opened with `O_APPEND` and makes them
//! durable with `fdatasync` (`File::sync_data`); this probe does the same with a
//! journal-sized record, so its latency is what one group commit cannot go below.
//!
//! On a virtual machine the latency depends on whether the CPUs are idle while the sync is
//! in flight: an idle virtual CPU halts, and the completion must wait for the host to run
//! it again (milliseconds on a loaded host), while a busy one takes it at once. A durable
//! cell keeps the CPUs busy, so the probe runs twice: alone, and with a thread spinning
//! beside it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::child;

/// Bytes appended before each sync: about one journalled Send of a 100-byte body.
const RECORD_BYTES: usize = 160;

/// Most syncs in one probe, whatever the window (the loop is bounded in count and time).
const SYNCS_MAX: usize = 2_000;

/// What one probe measured.
#[derive(Clone, Debug, Default)]
pub struct Syncs {
    /// The latency of each append + `fdatasync`, in ns.
    pub latencies_ns: Vec<u64>,
    /// CPU time the probing thread used: what the kernel charges for the syncs.
    pub cpu: Duration,
}

/// Probes alone (`busy` false) or with a thread spinning beside the probe for its whole
/// duration (`busy` true), as [`probe`] does.
pub fn probe_with(dir: &Path, name: &str, window: Duration, busy: bool) -> Result<Syncs> {
    if !busy {
        return probe(dir, name, window);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    let measured = probe(dir, name, window);
    stop.store(true, Ordering::Relaxed);
    let _ = spinner.join();
    measured
}

/// Appends a record and syncs it, again and again for `window` (at least one sync, at most
/// [`SYNCS_MAX`]), in a file `name` in `dir` that is removed afterwards. Blocking: run it on
/// a blocking thread.
pub fn probe(dir: &Path, name: &str, window: Duration) -> Result<Syncs> {
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let record = [b'x'; RECORD_BYTES];
    let mut samples_ns = Vec::new();
    let cpu_before = child::thread_cpu_time()?;
    let start = Instant::now();
    while samples_ns.len() < SYNCS_MAX && (samples_ns.is_empty() || start.elapsed() < window) {
        let before = Instant::now();
        file.write_all(&record)?;
        file.sync_data()
            .with_context(|| format!("cannot sync {}", path.display()))?;
        samples_ns.push(u64::try_from(before.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let cpu = child::thread_cpu_time()?.saturating_sub(cpu_before);
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Syncs {
        latencies_ns: samples_ns,
        cpu,
    })
}
