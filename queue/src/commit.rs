//! When to flush dirty slots: msync group commit at `[queue] sync_interval`.

use std::time::{Duration, Instant};

/// Decides when the next group commit (msync of every dirty batch) is due, so a power
/// loss loses at most one interval of slot updates. The delivery loop asks
/// [`GroupCommit::due`] after each batch of replies; a batch is also always synced
/// before it is declared done (see [`crate::Spool::complete`]).
#[derive(Debug, Clone)]
pub struct GroupCommit {
    interval: Duration,
    last: Instant,
}

impl GroupCommit {
    /// A schedule that commits every `interval` (zero: after every update), counting
    /// from `now`.
    pub fn new(interval: Duration, now: Instant) -> GroupCommit {
        GroupCommit {
            interval,
            last: now,
        }
    }

    /// Whether a commit is due at `now`; if so, the next interval starts at `now`.
    pub fn due(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last) >= self.interval {
            self.last = now;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_once_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut gc = GroupCommit::new(ms(100), t0);
        let table = [
            (50, false),
            (99, false),
            (100, true),
            (150, false),
            (200, true),
            (450, true),
        ];
        for (at, expected) in table {
            assert_eq!(gc.due(t0 + ms(at)), expected, "at {at} ms");
        }
    }

    #[test]
    fn zero_interval_commits_every_time() {
        let t0 = Instant::now();
        let mut gc = GroupCommit::new(Duration::ZERO, t0);
        assert!(gc.due(t0));
        assert!(gc.due(t0));
    }
}
