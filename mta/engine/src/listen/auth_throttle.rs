//! Throttling failed AUTH across connections: failures are counted per client
//! address and per user name over `[server] auth_lockout`; each one past the
//! first few makes the next check of that address or name wait longer (1 s,
//! 2 s, 4 s … at most 30 s), and at `[server] max_auth_failures` further tries
//! get `454 4.7.0` at once, without a password check, until the failures age
//! out. A success clears the user's count (not the address's: one good
//! password does not buy an address more guesses at others).
//!
//! Pure bookkeeping with explicit times, so it is table-tested; the listener
//! holds one behind a lock and asks it before each check.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures that cost nothing yet (a person mistyping).
const FREE_FAILURES: u32 = 3;
/// Longest wait before a check.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Most addresses and names tracked at once; past it the oldest are dropped.
const MAX_TRACKED: usize = 100_000;

/// What to do with an AUTH attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Check the password after waiting this long.
    Check(Duration),
    /// Refuse it for now (`454 4.7.0`) without checking.
    Locked,
}

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    last: Instant,
}

/// Failure counts per client address and per user name.
#[derive(Debug)]
pub struct Throttle {
    max_failures: u32,
    window: Duration,
    by_ip: HashMap<IpAddr, Count>,
    by_user: HashMap<String, Count>,
}

/// The wait before a check after `failures` recent failures.
pub fn delay(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let step = (failures - FREE_FAILURES).min(5);
    Duration::from_secs(1 << step).min(MAX_DELAY)
}

impl Throttle {
    /// A throttle locking at `max_failures` within `window`.
    pub fn new(max_failures: u32, window: Duration) -> Throttle {
        Throttle {
            max_failures: max_failures.max(1),
            window,
            by_ip: HashMap::new(),
            by_user: HashMap::new(),
        }
    }

    fn recent(&self, count: Option<&Count>, now: Instant) -> u32 {
        match count {
            Some(c) if now.duration_since(c.last) < self.window => c.failures,
            _ => 0,
        }
    }

    /// What to do with an attempt from `ip` as `user` at `now`.
    pub fn gate(&self, ip: IpAddr, user: &str, now: Instant) -> Gate {
        let failures = self
            .recent(self.by_ip.get(&ip), now)
            .max(self.recent(self.by_user.get(&user.to_ascii_lowercase()), now));
        if failures >= self.max_failures {
            Gate::Locked
        } else {
            Gate::Check(delay(failures))
        }
    }

    /// Notes the result of a check; answers the failures now counted for the
    /// address (0 after a success).
    pub fn record(&mut self, ip: IpAddr, user: &str, ok: bool, now: Instant) -> u32 {
        let user = user.to_ascii_lowercase();
        if ok {
            self.by_user.remove(&user);
            return 0;
        }
        if self.by_ip.len() + self.by_user.len() >= MAX_TRACKED {
            let window = self.window;
            self.by_ip
                .retain(|_, c| now.duration_since(c.last) < window);
            self.by_user
                .retain(|_, c| now.duration_since(c.last) < window);
            if self.by_ip.len() + self.by_user.len() >= MAX_TRACKED {
                self.by_ip.clear();
                self.by_user.clear();
            }
        }
        let window = self.window;
        let bump = |c: &mut Count| {
            if now.duration_since(c.last) >= window {
                c.failures = 0;
            }
            c.failures += 1;
            c.last = now;
            c.failures
        };
        let fresh = Count {
            failures: 0,
            last: now,
        };
        bump(self.by_user.entry(user).or_insert(fresh));
        bump(self.by_ip.entry(ip).or_insert(fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap() {
        let s = Duration::from_secs;
        let table = [
            (0, s(0)),
            (2, s(0)),
            (3, s(1)),
            (4, s(2)),
            (5, s(4)),
            (7, s(16)),
            (8, s(30)),
            (50, s(30)),
        ];
        for (failures, want) in table {
            assert_eq!(delay(failures), want, "{failures}");
        }
    }

    #[test]
    fn failures_lock_an_address_and_a_name_until_they_age_out() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut t = Throttle::new(5, 15 * min);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..5 {
            assert!(matches!(t.gate(a, "alice", t0), Gate::Check(_)));
            t.record(a, "alice", false, t0);
        }
        assert_eq!(t.gate(a, "bob", t0), Gate::Locked, "the address is locked");
        assert_eq!(
            t.gate(b, "ALICE", t0),
            Gate::Locked,
            "and the name, from anywhere"
        );
        assert_eq!(t.gate(b, "bob", t0), Gate::Check(Duration::ZERO));
        // Aged out.
        assert_eq!(
            t.gate(a, "alice", t0 + 16 * min),
            Gate::Check(Duration::ZERO)
        );
        // A success clears the name, not the address.
        let mut t = Throttle::new(5, 15 * min);
        for _ in 0..4 {
            t.record(a, "carol", false, t0);
        }
        assert_eq!(t.record(a, "carol", true, t0), 0);
        assert_eq!(t.gate(b, "carol", t0), Gate::Check(Duration::ZERO));
        assert_eq!(t.gate(a, "dave", t0), Gate::Check(delay(4)));
    }
}
