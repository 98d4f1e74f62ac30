//! `[retry]`: when deferred recipients are tried again, and when volley gives up.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::duration;

/// The `[retry]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct RetryConfig {
    /// Wait before the 2nd, 3rd, … attempt; the last one repeats. Default
    /// ["5m", "10m", "30m", "1h", "2h", "4h"]; 1 to 100 entries, each 1s..=7d.
    #[serde(deserialize_with = "intervals")]
    pub intervals: Vec<Duration>,
    /// How long a recipient may stay queued, counted from when it was queued
    /// (its batch was written), as Postfix's `maximal_queue_lifetime`: a
    /// temporary failure whose next attempt would fall later expires the
    /// recipient (final, like a bounce). Default 5d; allowed 1m..=30d.
    #[serde(deserialize_with = "expire")]
    pub expire: Duration,
}

const DAY: u64 = 86_400;
const INTERVAL: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(7 * DAY);
const EXPIRE: RangeInclusive<Duration> = Duration::from_secs(60)..=Duration::from_secs(30 * DAY);

impl Default for RetryConfig {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        RetryConfig {
            intervals: vec![m(5), m(10), m(30), m(60), m(120), m(240)],
            expire: Duration::from_secs(5 * DAY),
        }
    }
}

impl RetryConfig {
    /// The wait after attempt number `attempts` (1 = the first attempt failed).
    pub fn interval_after(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) - 1) as usize;
        self.intervals
            .get(i)
            .or(self.intervals.last())
            .copied()
            .unwrap_or(Duration::from_secs(300))
    }
}

fn intervals<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Duration>, D::Error> {
    duration::list_in_range(de, INTERVAL, 1..=100)
}

fn expire<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, EXPIRE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_interval_repeats() {
        let r = RetryConfig::default();
        let m = |n: u64| Duration::from_secs(60 * n);
        let table = [
            (0, m(5)),
            (1, m(5)),
            (2, m(10)),
            (6, m(240)),
            (7, m(240)),
            (200, m(240)),
        ];
        for (attempts, wait) in table {
            assert_eq!(r.interval_after(attempts), wait, "after {attempts}");
        }
    }
}
