//! Makes a connection that keeps asking for what the limits refuse pay for it itself.
//!
//! A refused Send is cheap, but not free: the switch still reads, routes and answers it on
//! its one thread, so a client that floods a full queue as fast as its 429s come back takes
//! that thread from everyone else (docs/reliability.md, scenario 1). After a run of
//! refusals on one connection, each further refusal is held back before it is written, for
//! a delay that doubles up to `--refusal-delay-max`; any answer that is not a 429 ends the
//! run. HTTP/1.1 answers one request at a time, so the hold slows that connection only: a
//! client that meets a full queue now and then, and backs off as clients should, never
//! waits.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hyper::StatusCode;

/// Refusals in a row that a connection gets at once, before the holds begin.
pub(crate) const REFUSALS_FREE: u32 = 8;

/// The hold of the first refusal past [`REFUSALS_FREE`]; each next one doubles it.
const FIRST_DELAY: Duration = Duration::from_millis(1);

/// One connection's run of refusals.
#[derive(Debug, Default)]
pub(crate) struct RefusalBackoff {
    in_a_row: AtomicU32,
}

impl RefusalBackoff {
    /// Counts an answer with `status` and says how long to hold it back before it is
    /// written: zero for anything but a 429, for the first [`REFUSALS_FREE`] 429s in a row,
    /// and always when `delay_max` is zero (holds off).
    pub(crate) fn delay_for(&self, status: StatusCode, delay_max: Duration) -> Duration {
        if status != StatusCode::TOO_MANY_REQUESTS {
            self.in_a_row.store(0, Ordering::Relaxed);
            return Duration::ZERO;
        }
        let in_a_row = self
            .in_a_row
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let Some(past_free) = in_a_row.checked_sub(REFUSALS_FREE + 1) else {
            return Duration::ZERO;
        };
        // 2^20 ms is far past any sensible maximum; the cap keeps the shift defined.
        FIRST_DELAY
            .saturating_mul(1 << past_free.min(20))
            .min(delay_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_millis(100);

    fn refusals(backoff: &RefusalBackoff, count: u32) -> Vec<Duration> {
        (0..count)
            .map(|_| backoff.delay_for(StatusCode::TOO_MANY_REQUESTS, MAX))
            .collect()
    }

    #[test]
    fn the_first_refusals_in_a_row_are_answered_at_once() {
        let backoff = RefusalBackoff::default();
        assert!(refusals(&backoff, REFUSALS_FREE)
            .iter()
            .all(Duration::is_zero));
    }

    #[test]
    fn later_refusals_are_held_for_a_doubling_delay_up_to_the_maximum() {
        let backoff = RefusalBackoff::default();
        refusals(&backoff, REFUSALS_FREE);
        let held: Vec<u64> = refusals(&backoff, 10)
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(held, [1, 2, 4, 8, 16, 32, 64, 100, 100, 100]);
        // Long runs stay at the maximum.
        assert_eq!(refusals(&backoff, 100).last(), Some(&MAX));
    }

    #[test]
    fn any_other_answer_ends_the_run() {
        let backoff = RefusalBackoff::default();
        refusals(&backoff, REFUSALS_FREE + 5);
        assert_eq!(backoff.delay_for(StatusCode::OK, MAX), Duration::ZERO);
        assert!(refusals(&backoff, REFUSALS_FREE)
            .iter()
            .all(Duration::is_zero));
        assert_eq!(
            refusals(&backoff, 1),
            [Duration::from_millis(1)],
            "a new run holds again after its free refusals"
        );
    }

    #[test]
    fn a_zero_maximum_turns_the_holds_off() {
        let backoff = RefusalBackoff::default();
        for _ in 0..REFUSALS_FREE + 20 {
            assert_eq!(
                backoff.delay_for(StatusCode::TOO_MANY_REQUESTS, Duration::ZERO),
                Duration::ZERO
            );
        }
    }
}
