//! Per-site shaping decisions: message rate, reconnect backoff, pauses. Pure
//! functions and small state machines over an `Instant` passed in, so the
//! delivery loop calls them and tests run them without a clock.

use std::time::{Duration, Instant};

/// A token bucket: at most `rate` messages per second on average, bursts of up
/// to one second's worth (at least one message).
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A limit of `rate` messages per second; 0 means no limit.
    pub fn new(rate: f64, now: Instant) -> RateLimit {
        let burst = rate.max(1.0);
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Changes the limit to `rate` (a fleet's share changed), keeping the
    /// tokens earned so far (at most the new burst).
    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        if rate == self.rate {
            return;
        }
        if self.rate > 0.0 {
            let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens += elapsed * self.rate;
        }
        self.last = self.last.max(now);
        self.rate = rate;
        self.burst = rate.max(1.0);
        self.tokens = self.tokens.min(self.burst);
    }

    /// Takes one token: `Ok` to send now, or `Err(wait)` until a token is free.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// A site's limits when `gateways` gateways of a fleet send to it at once:
/// the fleet's limits split evenly, so that together they never exceed them
/// (connections rounded down, at least one; the rate divided; no rate stays
/// no rate).
pub fn share_limits(mut limits: volley_conf::SiteLimits, gateways: u32) -> volley_conf::SiteLimits {
    let n = gateways.max(1);
    limits.max_connections = (limits.max_connections / n).max(1);
    if limits.max_messages_per_second > 0.0 {
        limits.max_messages_per_second /= f64::from(n);
    }
    limits
}

/// The wait before reconnecting after `failures` consecutive connection failures
/// (1 = one failure): `base` doubled per further failure, capped at `max`.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 1).min(20);
    base.saturating_mul(factor).min(max)
}

/// Whether a reply pauses the whole site: a 421 (service closing), or a reply
/// (4xx or 5xx) whose enhanced code and text contain one of `patterns` (ASCII
/// case-insensitive).
pub fn pauses_site(code: u16, enhanced: &str, text: &str, patterns: &[String]) -> bool {
    if code == 421 {
        return true;
    }
    // A positive reply never pauses (and this runs once per delivered message).
    if (200..400).contains(&code) || patterns.is_empty() {
        return false;
    }
    // The enhanced code is part of what a pattern may name ("4.7.28").
    let reply = format!("{enhanced} {text}").to_ascii_lowercase();
    patterns
        .iter()
        .any(|p| !p.is_empty() && reply.contains(&p.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_shares_a_sites_limits() {
        let limits = |c, r| volley_conf::SiteLimits {
            max_connections: c,
            max_messages_per_second: r,
            ..volley_conf::SiteLimits::default()
        };
        let table = [
            (limits(4, 200.0), 1, 4, 200.0),
            (limits(4, 200.0), 3, 1, 200.0 / 3.0),
            (limits(4, 200.0), 0, 4, 200.0),
            (limits(10, 0.0), 4, 2, 0.0),
            (limits(2, 1.0), 5, 1, 0.2),
        ];
        for (given, n, connections, rate) in table {
            let got = share_limits(given, n);
            assert_eq!(
                (got.max_connections, got.max_messages_per_second),
                (connections, rate),
                "{n}"
            );
        }
    }

    #[test]
    fn rate_limit_spaces_messages() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RateLimit::new(2.0, t0);
        assert_eq!(r.take(t0), Ok(()));
        assert_eq!(r.take(t0), Ok(()));
        assert_eq!(r.take(t0), Err(ms(500)));
        assert!(r.take(t0 + ms(250)).is_err());
        assert_eq!(r.take(t0 + ms(500)), Ok(()));
        let mut unlimited = RateLimit::new(0.0, t0);
        for _ in 0..1000 {
            assert_eq!(unlimited.take(t0), Ok(()));
        }
    }

    #[test]
    fn a_changed_rate_keeps_the_bucket() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RateLimit::new(4.0, t0);
        for _ in 0..4 {
            assert_eq!(r.take(t0), Ok(()));
        }
        // A third of the rate: an empty bucket stays empty, then refills slower.
        r.set_rate(4.0 / 3.0, t0);
        assert_eq!(r.take(t0), Err(ms(750)));
        assert_eq!(r.take(t0 + ms(750)), Ok(()));
        // Unchanged: nothing happens; back up: the tokens earned stay.
        r.set_rate(4.0 / 3.0, t0 + ms(750));
        r.set_rate(4.0, t0 + ms(1500));
        assert_eq!(r.take(t0 + ms(1500)), Ok(()));
        assert_eq!(r.take(t0 + ms(1500)), Err(ms(250)));
    }

    #[test]
    fn fractional_rates_allow_one_then_wait() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0.5, t0);
        assert_eq!(r.take(t0), Ok(()));
        assert_eq!(r.take(t0), Err(Duration::from_secs(2)));
        assert_eq!(r.take(t0 + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        let table = [
            (0, s(0)),
            (1, s(10)),
            (2, s(20)),
            (3, s(40)),
            (6, s(320)),
            (7, s(600)),
            (99, s(600)),
        ];
        for (failures, wait) in table {
            assert_eq!(backoff(failures, s(10), s(600)), wait, "{failures}");
        }
    }

    #[test]
    fn pauses_on_421_and_configured_texts() {
        let patterns = vec!["Try Again Later".to_owned(), "4.7.28".to_owned()];
        assert!(pauses_site(421, "", "", &patterns));
        assert!(pauses_site(421, "4.3.2", "closing", &[]));
        // The reply parser strips the enhanced code from the text: it is matched
        // separately, as in "450 4.7.28 unusual rate ...".
        assert!(pauses_site(
            450,
            "4.7.28",
            "unusual rate of unsolicited mail",
            &patterns
        ));
        assert!(pauses_site(
            450,
            "",
            "4.7.28 unusual rate of unsolicited mail",
            &patterns
        ));
        assert!(pauses_site(451, "", "please TRY AGAIN LATER", &patterns));
        assert!(!pauses_site(451, "4.7.1", "greylisted", &patterns));
        assert!(!pauses_site(550, "", "user unknown", &[]));
        // A positive reply never pauses, whatever its text says.
        assert!(!pauses_site(250, "2.0.0", "ok, try again later", &patterns));
    }
}
