//! Issue 20's busy target measured more than once.
//!
//! The target's figure, the switch's CPU per HTTP exchange of the RPC cell at 16 callers
//! (Unix, in memory) ÷ the echo's per round trip, compares two cells measured one after the
//! other, and on a shared machine the load under them moves between any two windows: on the
//! tenth session's machine, back-to-back runs of the same binary gave 1.12 to 1.51. So after
//! the main cells the pair (the floor's cell, then the RPC cell, on the same echo server and
//! switch) is measured again `--exchange-repeats` times, each pair side by side, and the
//! target is judged on the median of the pairs' ratios, the main cells' pair included. The
//! report lists every ratio beside the median.

use anyhow::Result;
use message_switch::client::UnixConnector;

use crate::child::ChildProcess;
use crate::measure::{Throughput, Timing};
use crate::rpc;

/// Callers of the repeated cells: the busy target's.
pub const CONCURRENCY: usize = 16;

/// Repeats of a full run (one pair each). Twenty, so 21 pairs in all: on the twelfth
/// session's machine one pair's ratio spread over ±15 %, which left the median of six
/// pairs (the default before) anywhere between 1.28 and 1.44 for the same binary, too wide
/// to judge a bound of 1.3; 42 pairs of each build put its median within ±0.04
/// (docs/performance.md, "an eighth pass"). They add 100 s to a full run.
pub const DEFAULT_REPEATS: usize = 20;

/// One repeat: the floor's cell and then the RPC cell, measured one right after the other.
pub struct Pair {
    /// The echo server's round trips.
    pub floor: Throughput,
    /// The switch's RPCs.
    pub rpc: Throughput,
}

/// Measures `count` pairs against `echo` and `switch` (their Unix sockets), each cell with
/// `timing`; `progress` reports each pair as it starts.
pub async fn measure(
    echo: &ChildProcess,
    switch: &ChildProcess,
    count: usize,
    timing: Timing,
    progress: impl Fn(&str),
) -> Result<Vec<Pair>> {
    let mut pairs = Vec::with_capacity(count);
    for repeat in 1..=count {
        progress(&format!(
            "exchange repeat {repeat} of {count}: floor and RPC, Unix c={CONCURRENCY}"
        ));
        let floor = rpc::floor(
            UnixConnector::new(&echo.unix),
            echo.pid(),
            CONCURRENCY,
            timing,
        )
        .await?;
        let tag = format!("repeat-{repeat}");
        let measured = rpc::rpc(
            UnixConnector::new(&switch.unix),
            switch.pid(),
            CONCURRENCY,
            timing,
            &tag,
        )
        .await?;
        pairs.push(Pair {
            floor,
            rpc: measured,
        });
    }
    Ok(pairs)
}

/// The median of `values` (the mean of the middle two for an even count); `None` when there
/// are none. NaN sorts last.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.4]), Some(1.4));
        assert_eq!(median(&[1.5, 1.1, 1.3]), Some(1.3));
        assert_eq!(median(&[1.5, 1.1, 1.3, 1.2]), Some(1.25));
    }
}
