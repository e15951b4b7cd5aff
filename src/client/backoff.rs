//! Exponential back-off between reconnect attempts, on tokio time (so simulated time works).

use std::time::Duration;

/// Doubles the delay after every wait, from `min` up to `max`; [`Backoff::reset`] after a
/// success. No jitter: runs must stay deterministic under simulation.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            next: min,
        }
    }

    /// Sleeps for the current delay, then doubles it (capped).
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = self.next.saturating_mul(2).min(self.max);
    }

    /// Back to the shortest delay, after a successful attempt.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let start = tokio::time::Instant::now();
        backoff.wait().await;
        backoff.wait().await;
        backoff.wait().await;
        backoff.wait().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(100 + 200 + 350 + 350)
        );
        backoff.reset();
        let start = tokio::time::Instant::now();
        backoff.wait().await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }
}
