//! What a gateway measures of itself between reports: its delivery rate
//! (which sizes its lease requests: about [`AHEAD`] of work at that rate)
//! and each site's busy time (which the control plane compares across
//! gateways to choose who sends to a site).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How much work a gateway asks to hold: this long at its recent rate.
pub const AHEAD: Duration = Duration::from_secs(30);
/// Batches asked for before the gateway knows its rate.
pub const PROBE: usize = 2;
/// The shortest span of holding work that gives a rate.
const WINDOW: f64 = 2.0;

/// The gateway's own figures, kept between reports.
#[derive(Debug)]
pub struct Meter {
    last: Instant,
    /// Recipients delivered and seconds of holding work, not yet a rate.
    pending: (u64, f64),
    rate: Option<f64>,
    /// Recipients per leased batch (a moving average).
    batch_size: f64,
    /// Each engine site's transactions and busy seconds at the last report.
    timed: HashMap<String, (u64, f64)>,
}

impl Default for Meter {
    fn default() -> Meter {
        Meter {
            last: Instant::now(),
            pending: (0, 0.0),
            rate: None,
            batch_size: 100.0,
            timed: HashMap::new(),
        }
    }
}

impl Meter {
    /// Starts a report's interval; answers how long the last one lasted.
    pub fn interval(&mut self) -> f64 {
        let now = Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        seconds
    }

    /// Counts `delivered` recipients over `seconds` of holding work.
    pub fn delivered(&mut self, delivered: u64, seconds: f64) {
        self.pending.0 += delivered;
        self.pending.1 += seconds;
        if self.pending.1 >= WINDOW {
            let rate = self.pending.0 as f64 / self.pending.1;
            self.rate = Some(self.rate.map_or(rate, |old| 0.5 * old + 0.5 * rate));
            self.pending = (0, 0.0);
        }
    }

    /// Counts a leased batch of `recipients` into the batch size.
    pub fn installed(&mut self, recipients: usize) {
        self.batch_size = 0.8 * self.batch_size + 0.2 * recipients as f64;
    }

    /// Batches to ask for, with `free` room and `held` batches
    /// ([`batches_wanted`] at this gateway's rate and batch size).
    pub fn batches_wanted(&self, free: usize, held: usize) -> usize {
        batches_wanted(free, held, self.rate, self.batch_size)
    }

    /// The change in site `key`'s cumulative `(transactions, busy seconds)`
    /// since the last call for it.
    pub fn timing(&mut self, key: &str, now: (u64, f64)) -> (u64, f64) {
        let before = self.timed.insert(key.to_owned(), now).unwrap_or((0, 0.0));
        (now.0.saturating_sub(before.0), (now.1 - before.1).max(0.0))
    }
}

/// Batches to ask for: enough that, with the `held` batches (of about
/// `batch_size` recipients), the gateway has [`AHEAD`] of work at `rate`;
/// [`PROBE`] while the rate is unknown; at least one when it holds none;
/// never more than `free`.
pub fn batches_wanted(free: usize, held: usize, rate: Option<f64>, batch_size: f64) -> usize {
    let target = match rate {
        None => PROBE,
        Some(rate) => (rate * AHEAD.as_secs_f64() / batch_size.max(1.0)).ceil() as usize,
    };
    let floor = usize::from(held == 0);
    target.saturating_sub(held).max(floor).min(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (why, free, held, rate, batch size, wanted).
    type Case = (&'static str, usize, usize, Option<f64>, f64, usize);

    #[test]
    fn wanted() {
        let table: &[Case] = &[
            ("unknown rate: a probe", 8, 0, None, 100.0, PROBE),
            ("unknown rate, probe held", 6, 2, None, 100.0, 0),
            ("fast: all the room", 8, 0, Some(1000.0), 100.0, 8),
            ("30 s at 20/s is 6 batches", 8, 0, Some(20.0), 100.0, 6),
            ("of which 4 held", 4, 4, Some(20.0), 100.0, 2),
            ("slow, holding none: one", 8, 0, Some(0.1), 100.0, 1),
            ("slow, holding one: none", 7, 1, Some(0.1), 100.0, 0),
            ("no room", 0, 8, Some(1000.0), 100.0, 0),
            ("a zero batch size is one", 8, 0, Some(0.1), 0.0, 3),
        ];
        for &(why, free, held, rate, size, expected) in table {
            assert_eq!(batches_wanted(free, held, rate, size), expected, "{why}");
        }
    }

    #[test]
    fn rate_and_timing() {
        let mut m = Meter::default();
        m.delivered(100, 1.0);
        assert_eq!(m.rate, None);
        m.delivered(300, 1.0);
        assert_eq!(m.rate, Some(200.0));
        m.delivered(0, 2.0);
        assert_eq!(m.rate, Some(100.0));
        assert_eq!(m.timing("s", (10, 5.0)), (10, 5.0));
        assert_eq!(m.timing("s", (14, 7.0)), (4, 2.0));
        assert_eq!(m.timing("t", (1, 1.0)), (1, 1.0));
    }
}
