//! `[queue]`: batching and flushing of queue state.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{duration, integer};

/// The `[queue]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct QueueConfig {
    /// Recipients per batch file. Default 100; allowed 1..=100000.
    #[serde(deserialize_with = "batch_size")]
    pub batch_size: u32,
    /// How often dirty state slots are flushed to disk with msync (group
    /// commit); zero flushes each update as it is made. Default 1s; allowed
    /// 0s..=1h.
    #[serde(deserialize_with = "sync_interval")]
    pub sync_interval: Duration,
    /// At most this many recipients due now are mapped and queued for one
    /// delivery round (those waiting for a retry take no room); the batches
    /// beyond wait for the next round, which starts at once. Bounds
    /// the memory of a round whatever the spool holds. Default 200000; allowed
    /// 1000..=10000000.
    #[serde(deserialize_with = "window")]
    pub window: u32,
}

const BATCH_SIZE: RangeInclusive<u32> = 1..=100_000;
const WINDOW: RangeInclusive<u32> = 1000..=10_000_000;
const SYNC_INTERVAL: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            batch_size: 100,
            sync_interval: Duration::from_secs(1),
            window: 200_000,
        }
    }
}

fn batch_size<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, BATCH_SIZE)
}

fn window<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, WINDOW)
}

fn sync_interval<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, SYNC_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_in_range() {
        let queue = QueueConfig::default();
        assert!(BATCH_SIZE.contains(&queue.batch_size));
        assert!(SYNC_INTERVAL.contains(&queue.sync_interval));
        assert!(WINDOW.contains(&queue.window));
    }
}
