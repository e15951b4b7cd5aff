//! Time as the engine sees it: a value passed in by the driver, never read from a clock.

use std::fmt;
use std::time::Duration;

/// A point in time, in nanoseconds since the Unix epoch.
///
/// The driver derives it from a monotonic clock anchored at a wall-clock reading taken once at
/// start-up, so it never goes backwards within one process, and stored message times stay
/// meaningful across restarts (which keeps message ages right after recovery).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The given number of nanoseconds since the Unix epoch.
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// Microseconds since the Unix epoch (the base of fresh message ids).
    pub const fn unix_micros(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    /// Seconds since the Unix epoch, as the trace's `time` field.
    pub fn unix_seconds(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// This time plus a duration, saturating at the far future.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let nanos = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(nanos))
    }

    /// Nanoseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn nanos_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The duration from `self` until `later`, zero if `later` is not after `self`.
    pub fn duration_until(self, later: Timestamp) -> Duration {
        Duration::from_nanos(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0.div_euclid(1_000_000_000),
            self.0.rem_euclid(1_000_000_000)
        )
    }
}

/// Converts a timeout in seconds from the wire (any float, possibly NaN or negative) into a
/// duration: NaN and negative values mean "do not wait".
pub fn seconds_to_duration(seconds: f64) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }
}
