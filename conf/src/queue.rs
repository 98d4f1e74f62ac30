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
    /// Group commit of received mail: after the first message of a group
    /// arrives, the listener waits this long for more before one fsync covers
    /// them all (each sender gets its `250` after that fsync). Messages that
    /// arrive while a group is being synced form the next group anyway. Default
    /// 1ms; allowed 0s..=1s.
    #[serde(deserialize_with = "group_window")]
    pub group_window: Duration,
    /// A group is written at once when it holds this many messages. Default
    /// 256; allowed 1..=100000.
    #[serde(deserialize_with = "group_messages")]
    pub group_messages: u32,
    /// A group is written at once when it holds this many bytes; a message
    /// larger than this is written and synced on its own (in its own relay
    /// batch), so it never holds back the others. Default 4194304 (4 MiB);
    /// allowed 65536..=1073741824.
    #[serde(deserialize_with = "group_bytes")]
    pub group_bytes: u64,
    /// A relay batch (received mail, appended group by group) is sealed and
    /// handed to delivery when it holds `batch_size` messages (or 100 times as
    /// many recipients) or is this old.
    /// Default 50ms; allowed 1ms..=10s.
    #[serde(deserialize_with = "seal_after")]
    pub seal_after: Duration,
}

const BATCH_SIZE: RangeInclusive<u32> = 1..=100_000;
const WINDOW: RangeInclusive<u32> = 1000..=10_000_000;
const SYNC_INTERVAL: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);
const GROUP_WINDOW: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(1);
const GROUP_MESSAGES: RangeInclusive<u32> = 1..=100_000;
const GROUP_BYTES: RangeInclusive<u64> = 65_536..=1 << 30;
const SEAL_AFTER: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(10);

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            batch_size: 100,
            sync_interval: Duration::from_secs(1),
            window: 200_000,
            group_window: Duration::from_millis(1),
            group_messages: 256,
            group_bytes: 4 << 20,
            seal_after: Duration::from_millis(50),
        }
    }
}

fn batch_size<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, BATCH_SIZE)
}

fn window<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, WINDOW)
}

fn group_window<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, GROUP_WINDOW)
}

fn group_messages<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, GROUP_MESSAGES)
}

fn group_bytes<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    integer::in_range(de, GROUP_BYTES)
}

fn seal_after<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, SEAL_AFTER)
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
        assert!(GROUP_WINDOW.contains(&queue.group_window));
        assert!(GROUP_MESSAGES.contains(&queue.group_messages));
        assert!(GROUP_BYTES.contains(&queue.group_bytes));
        assert!(SEAL_AFTER.contains(&queue.seal_after));
    }
}
