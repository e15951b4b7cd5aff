//! The disk's floor for durable cells: how long `fdatasync` of one small appended record
//! takes in the directory where the switch keeps its state, measured between the durable
//! cells of the same run.
//!
//! The switch's journal appends records to a file opened with `O_APPEND` and makes them
//! durable with `fdatasync` (`File::sync_data`); this probe does the same with a
//! journal-sized record, so its latency is what one group commit cannot go below.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Bytes appended before each sync: about one journalled Send of a 100-byte body.
const RECORD_BYTES: usize = 160;

/// Most syncs in one probe, whatever the window (the loop is bounded in count and time).
const SYNCS_MAX: usize = 2_000;

/// Appends a record and syncs it, again and again for `window` (at least one sync, at most
/// [`SYNCS_MAX`]), in a file `name` in `dir` that is removed afterwards. Returns the latency
/// of each append + `fdatasync`. Blocking: run it on a blocking thread.
pub fn probe(dir: &Path, name: &str, window: Duration) -> Result<Vec<u64>> {
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let record = [b'x'; RECORD_BYTES];
    let mut samples_ns = Vec::new();
    let start = Instant::now();
    while samples_ns.len() < SYNCS_MAX && (samples_ns.is_empty() || start.elapsed() < window) {
        let before = Instant::now();
        file.write_all(&record)?;
        file.sync_data()
            .with_context(|| format!("cannot sync {}", path.display()))?;
        samples_ns.push(u64::try_from(before.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(samples_ns)
}
