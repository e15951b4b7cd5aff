//! What an accept loop does when accepting fails: back off, log once per interval rather than
//! once per attempt, and say when it recovers.
//!
//! The usual cause is running out of file descriptors (`EMFILE`/`ENFILE`): the pending
//! connection stays in the listen backlog, so an immediate retry fails again at once. Retrying
//! in a tight loop would burn a core and flood the log while the connections already open
//! still need serving; so each failure doubles the pause (up to [`ACCEPT_PAUSE_MAX`]), and
//! the first success resets it.

use std::time::Duration;

use tokio::time::Instant;

/// The pause after the first failure in a row.
pub(crate) const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
/// The longest pause between attempts: also the longest a freed descriptor waits unused.
pub(crate) const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// At most one warning per this interval while accepting keeps failing.
pub(crate) const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The accept loop's memory of recent failures.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// Failures in the current run of failures.
    failures: u64,
    /// Failures not yet reported in a log line.
    unreported: u64,
    /// When the last warning was logged.
    last_log: Option<Instant>,
}

/// What to say after a failure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FailureLog {
    /// Nothing (a warning was logged less than [`ACCEPT_LOG_INTERVAL`] ago).
    Quiet,
    /// A warning, covering this many failures since the previous one (this one included).
    Warn { failures: u64 },
}

impl AcceptBackoff {
    /// Records a failed accept at `now`: how long to pause before the next attempt, and
    /// whether to log.
    pub(crate) fn failed(&mut self, now: Instant) -> (Duration, FailureLog) {
        self.failures += 1;
        self.unreported += 1;
        let doublings = u32::try_from(self.failures - 1).unwrap_or(u32::MAX).min(16);
        let pause = ACCEPT_PAUSE_MIN
            .saturating_mul(1 << doublings)
            .min(ACCEPT_PAUSE_MAX);
        let due = self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_LOG_INTERVAL);
        if !due {
            return (pause, FailureLog::Quiet);
        }
        self.last_log = Some(now);
        let failures = std::mem::take(&mut self.unreported);
        (pause, FailureLog::Warn { failures })
    }

    /// Records a successful accept. Returns the length of the run of failures it ends, if
    /// any, so that the recovery can be logged.
    pub(crate) fn accepted(&mut self) -> Option<u64> {
        if self.failures == 0 {
            return None;
        }
        let failures = std::mem::take(&mut self.failures);
        self.unreported = 0;
        self.last_log = None;
        Some(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_maximum_and_reset_on_success() {
        let mut backoff = AcceptBackoff::default();
        let now = Instant::now();
        let pauses: Vec<Duration> = (0..10).map(|_| backoff.failed(now).0).collect();
        assert_eq!(pauses[0], ACCEPT_PAUSE_MIN);
        assert_eq!(pauses[1], ACCEPT_PAUSE_MIN * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(pauses[9], ACCEPT_PAUSE_MAX);
        assert_eq!(backoff.accepted(), Some(10));
        assert_eq!(backoff.failed(now).0, ACCEPT_PAUSE_MIN);
    }

    #[test]
    fn logs_once_per_interval_with_the_count_of_failures() {
        let mut backoff = AcceptBackoff::default();
        let start = Instant::now();
        assert_eq!(backoff.failed(start).1, FailureLog::Warn { failures: 1 });
        let mut logs = 0;
        // A minute of failures, one every 100 ms.
        for step in 1..600u32 {
            let now = start + Duration::from_millis(100) * step;
            if let (_, FailureLog::Warn { failures }) = backoff.failed(now) {
                logs += 1;
                assert_eq!(failures, 100, "each warning covers the interval's failures");
            }
        }
        assert_eq!(logs, 5);
        assert_eq!(backoff.accepted(), Some(600));
        assert_eq!(backoff.accepted(), None, "one recovery, logged once");
    }
}
