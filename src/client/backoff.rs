//! Exponential back-off with jitter between retries, on tokio time (so simulated time works).
//!
//! Every retry loop of the client library (reconnects, the serve loop, answering a request)
//! waits through a [`Backoff`]: the delay doubles after each failed attempt up to a cap and
//! goes back to the minimum only after real progress, so a switch that keeps refusing (a
//! limit reached, a 429) sees fewer and fewer attempts, never a tight loop. Each wait is
//! drawn between half the current delay and the whole of it, so that clients that failed
//! together (a switch restart) do not all come back in the same instant. The draws come from
//! a [`Jitter`], which the simulation seeds from its own random numbers, so that a seed still
//! replays exactly.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The source of the back-off's jitter: a small seeded generator (SplitMix64), shared by
/// every clone, so that one seed gives one sequence of delays whatever the number of retry
/// loops drawing from it. Not for anything that needs unpredictability.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: Arc<AtomicU64>,
}

impl Jitter {
    /// A source whose draws depend only on `seed` (and on the order of the draws).
    pub fn seeded(seed: u64) -> Jitter {
        Jitter {
            state: Arc::new(AtomicU64::new(seed)),
        }
    }

    /// A source seeded from the standard library's per-process random keys, for real
    /// clients: two processes retrying the same switch draw different delays.
    pub fn from_entropy() -> Jitter {
        Jitter::seeded(RandomState::new().hash_one(std::process::id()))
    }

    /// The next 64 random bits.
    fn next_u64(&self) -> u64 {
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration drawn uniformly from `[delay / 2, delay]`.
    fn spread(&self, delay: Duration) -> Duration {
        let half = delay / 2;
        let span = u64::try_from((delay - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.next_u64() % span.saturating_add(1))
    }
}

impl Default for Jitter {
    /// [`Jitter::from_entropy`].
    fn default() -> Jitter {
        Jitter::from_entropy()
    }
}

/// Doubles the delay after every wait, from `min` up to `max`, each wait jittered down to as
/// little as half of it; [`Backoff::reset`] after progress.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    jitter: Jitter,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration, jitter: Jitter) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            next: min,
            jitter,
        }
    }

    /// The wait the next [`Backoff::wait`] sleeps, and the delay doubles (capped).
    fn draw(&mut self) -> Duration {
        let wait = self.jitter.spread(self.next);
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }

    /// Sleeps for the current delay (jittered), then doubles it (capped).
    pub(crate) async fn wait(&mut self) {
        let wait = self.draw();
        tokio::time::sleep(wait).await;
    }

    /// Back to the shortest delay, after an attempt that made progress.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn draws(seed: u64, count: usize) -> Vec<Duration> {
        let mut backoff = Backoff::new(100 * MS, 350 * MS, Jitter::seeded(seed));
        (0..count).map(|_| backoff.draw()).collect()
    }

    #[test]
    fn doubles_up_to_the_cap_with_each_wait_between_half_and_all_of_the_delay() {
        for seed in 0..50 {
            let waits = draws(seed, 6);
            let delays = [100, 200, 350, 350, 350, 350];
            for (wait, delay) in waits.iter().zip(delays) {
                assert!(
                    *wait >= delay * MS / 2 && *wait <= delay * MS,
                    "seed {seed}: {waits:?}"
                );
            }
        }
    }

    #[test]
    fn one_seed_gives_one_sequence_and_seeds_differ() {
        assert_eq!(draws(7, 8), draws(7, 8));
        assert_ne!(draws(7, 8), draws(8, 8));
        // The waits really are spread, not all at one end of the range.
        let waits: Vec<Duration> = (0..200).flat_map(|seed| draws(seed, 1)).collect();
        assert!(waits.iter().any(|w| *w < 75 * MS) && waits.iter().any(|w| *w > 75 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_on_tokio_time_and_resets_to_the_minimum() {
        let mut backoff = Backoff::new(100 * MS, 350 * MS, Jitter::seeded(1));
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            backoff.wait().await;
        }
        let waited = start.elapsed();
        assert!(waited >= 500 * MS && waited <= 1000 * MS, "{waited:?}");
        backoff.reset();
        let start = tokio::time::Instant::now();
        backoff.wait().await;
        assert!(start.elapsed() <= 100 * MS);
    }
}
