//! Which due batches a gateway gets when it asks: a pure decision over the
//! candidates (oldest first), the live gateways and what was learned of each
//! (gateway, site) pair, so that it is table-tested.
//!
//! `round_robin`: the oldest candidates, whatever their site (gateways asking
//! in turn share the work in turn).
//!
//! `learned`: a gateway takes a site's batches when it delivers to that site
//! at least [`GOOD_ENOUGH`] as fast as the fastest live gateway that knows it,
//! and explores a site it knows nothing about with at most [`EXPLORE`] batches
//! per request. "As fast" is the speed of one transaction (connecting
//! included) times the share that succeeds: unlike a rate of recipients per
//! second it does not depend on how much work the gateway was given, so a
//! gateway given little is not mistaken for a slow one. (Figures of older
//! gateways without transaction times are compared by rate.) A site no live
//! gateway knows yet is anyone's. So after the first figures, a slow pair
//! stops getting the site while a fast one is live; when the fast one is lost
//! it drops out of the comparison and the site goes to the next best: no
//! site waits for a gateway that is gone. A slow pair whose figures are older
//! than [`REEXPLORE_SECS`] is explored again, so a receiver that got faster
//! for it is noticed.

use std::collections::HashMap;

use volley_conf::Assignment;

use super::wire::{SiteEstimate, SiteFigures};

/// A gateway takes a site when its speed is at least this share of the best.
pub const GOOD_ENOUGH: f64 = 0.7;
/// Batches of a site it knows nothing about a gateway gets per request.
pub const EXPLORE: usize = 1;
/// A gateway gives back the batches it holds of a site when its speed is
/// below this share of another live gateway's (below [`GOOD_ENOUGH`], so
/// that a batch does not go back and forth).
pub const GIVE_BACK: f64 = 0.5;
/// Transactions a pair's speed must cover, on both sides, for a give-back.
pub const GIVE_BACK_EVIDENCE: u64 = 20;
/// A slow pair's figures older than this are explored again.
pub const REEXPLORE_SECS: i64 = 60;
/// Weight of the newest interval in the moving averages.
const NEWEST: f64 = 0.3;

/// What the control plane learned, per (gateway, site).
pub type Estimates = HashMap<(String, String), SiteEstimate>;

/// Transaction times below this count as this: differences there are the
/// gateways' own scheduling noise, not the receiver's.
pub const TIME_FLOOR: f64 = 0.02;

/// Successful transactions per second of one connection's time.
fn speed(e: &SiteEstimate) -> Option<f64> {
    (e.transactions > 0 && e.transaction_seconds > 0.0)
        .then(|| (1.0 - e.failure_rate).max(0.0) / e.transaction_seconds.max(TIME_FLOOR))
}

/// The indexes into `candidates` (the due batches oldest first, each named
/// by the site its estimates are learned for) to lease to `me`, at most
/// `want`, given the `live` gateways (`me` among them), `estimates` and the
/// unix second `now`.
pub fn choose(
    mode: Assignment,
    me: &str,
    live: &[String],
    candidates: &[&str],
    want: usize,
    estimates: &Estimates,
    now: i64,
) -> Vec<usize> {
    if mode == Assignment::RoundRobin {
        return (0..candidates.len().min(want)).collect();
    }
    let mut out = Vec::new();
    let mut explored: HashMap<&str, usize> = HashMap::new();
    let mut explore = |site| {
        let n = explored.entry(site).or_default();
        *n += 1;
        *n <= EXPLORE
    };
    for (i, &site) in candidates.iter().enumerate() {
        if out.len() >= want {
            break;
        }
        let known = |g: &str| {
            estimates
                .get(&(g.to_owned(), site.to_owned()))
                .filter(|e| e.samples > 0 || e.transactions > 0)
        };
        // Compared by speed when any live gateway has one, else by rate.
        let by_speed = live
            .iter()
            .filter_map(|g| known(g))
            .any(|e| speed(e).is_some());
        let score = |e: &SiteEstimate| {
            if by_speed {
                speed(e)
            } else {
                (e.samples > 0).then_some(e.rate)
            }
        };
        let best = live
            .iter()
            .filter_map(|g| known(g).and_then(score))
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        let mine = known(me);
        let take = match (mine.and_then(score), best) {
            // Nobody knows the site yet: anyone's.
            (_, None) => true,
            (Some(mine_score), Some(best)) => {
                mine_score >= GOOD_ENOUGH * best
                    || (mine.is_some_and(|e| now - e.updated > REEXPLORE_SECS) && explore(site))
            }
            // Others know it, this gateway does not: explore a little.
            (None, Some(_)) => explore(site),
        };
        if take {
            out.push(i);
        }
    }
    out
}

/// Whether `me` should give back the batches it holds of `site`: another
/// live gateway delivers to it more than 1/[`GIVE_BACK`] times as fast (both
/// timed). So the first batches of a site, leased before anything was
/// known, do not keep a campaign waiting on a slow pair.
pub fn give_back(
    mode: Assignment,
    me: &str,
    live: &[String],
    site: &str,
    estimates: &Estimates,
) -> bool {
    if mode == Assignment::RoundRobin {
        return false;
    }
    // Only on figures of enough transactions, both sides.
    let speed_of = |g: &str| {
        estimates
            .get(&(g.to_owned(), site.to_owned()))
            .filter(|e| e.transactions >= GIVE_BACK_EVIDENCE)
            .and_then(speed)
    };
    let Some(mine) = speed_of(me) else {
        return false;
    };
    live.iter()
        .filter(|g| g.as_str() != me)
        .filter_map(|g| speed_of(g))
        .any(|other| mine < GIVE_BACK * other)
}

/// A report's figures by the site they are learned for: the domains sent
/// through one MX site (or route) are one, their recipients added up and
/// their shared busy time taken once; a domain not resolved is its own.
pub fn by_site(figures: &[SiteFigures]) -> Vec<SiteFigures> {
    let mut out: Vec<SiteFigures> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for f in figures {
        let key = if f.mx.is_empty() { &f.site } else { &f.mx };
        match at.get(key.as_str()) {
            Some(&i) => {
                let g = &mut out[i];
                g.delivered += f.delivered;
                g.failed += f.failed;
                g.seconds = g.seconds.max(f.seconds);
            }
            None => {
                at.insert(key, out.len());
                out.push(SiteFigures {
                    site: key.clone(),
                    mx: String::new(),
                    ..f.clone()
                });
            }
        }
    }
    out
}

/// Folds one interval's figures `f` into an estimate (moving averages) at
/// unix second `now`: `rate` is recipients delivered per second of the
/// interval, `transaction_seconds` the busy time per transaction.
pub fn learn(old: Option<&SiteEstimate>, f: &SiteFigures, now: i64) -> SiteEstimate {
    let attempts = f.delivered + f.failed;
    let average = |old: f64, new: f64| (1.0 - NEWEST) * old + NEWEST * new;
    let rate = if f.seconds > 0.0 {
        f.delivered as f64 / f.seconds
    } else {
        0.0
    };
    let failure = if attempts > 0 {
        f.failed as f64 / attempts as f64
    } else {
        0.0
    };
    let per_transaction = (f.transactions > 0).then(|| f.busy_seconds / f.transactions as f64);
    let mut e = old.cloned().unwrap_or(SiteEstimate {
        site: f.site.clone(),
        rate: 0.0,
        failure_rate: 0.0,
        samples: 0,
        transaction_seconds: 0.0,
        transactions: 0,
        updated: now,
    });
    if attempts > 0 {
        (e.rate, e.failure_rate) = if e.samples > 0 {
            (average(e.rate, rate), average(e.failure_rate, failure))
        } else {
            (rate, failure)
        };
        e.samples += attempts;
        e.updated = now;
    }
    if let Some(t) = per_transaction {
        e.transaction_seconds = if e.transactions > 0 {
            average(e.transaction_seconds, t)
        } else {
            t
        };
        e.transactions += f.transactions;
        e.updated = now;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    /// (gateway, site, rate, seconds per transaction (0: none), failure
    /// rate, seconds since the figures).
    type Known = (&'static str, &'static str, f64, f64, f64, i64);

    fn estimates(known: &[Known]) -> Estimates {
        known
            .iter()
            .map(|&(g, s, rate, seconds, failure_rate, age)| {
                (
                    (g.to_owned(), s.to_owned()),
                    SiteEstimate {
                        site: s.to_owned(),
                        rate,
                        failure_rate,
                        samples: 100,
                        transaction_seconds: seconds,
                        transactions: if seconds > 0.0 { 100 } else { 0 },
                        updated: NOW - age,
                    },
                )
            })
            .collect()
    }

    /// (why, mode, asking gateway, what is known, want, chosen).
    type Case = (
        &'static str,
        Assignment,
        &'static str,
        Vec<Known>,
        usize,
        Vec<usize>,
    );

    #[test]
    fn choices() {
        let live = vec!["a".to_owned(), "b".to_owned()];
        let sites = ["x", "x", "y", "x", "y"];
        use Assignment::{Learned, RoundRobin};
        let table: &[Case] = &[
            (
                "round robin takes the oldest",
                RoundRobin,
                "a",
                vec![("a", "x", 1.0, 0.0, 0.0, 0), ("b", "x", 100.0, 0.0, 0.0, 0)],
                3,
                vec![0, 1, 2],
            ),
            (
                "nothing known: anyone's",
                Learned,
                "a",
                vec![],
                5,
                vec![0, 1, 2, 3, 4],
            ),
            ("want bounds it", Learned, "a", vec![], 2, vec![0, 1]),
            (
                "by rate (older gateways): the slow pair skips the site",
                Learned,
                "a",
                vec![
                    ("a", "x", 10.0, 0.0, 0.0, 0),
                    ("b", "x", 100.0, 0.0, 0.0, 0),
                ],
                5,
                vec![2, 4],
            ),
            (
                "by rate: the fast pair takes it",
                Learned,
                "b",
                vec![
                    ("a", "x", 10.0, 0.0, 0.0, 0),
                    ("b", "x", 100.0, 0.0, 0.0, 0),
                ],
                5,
                vec![0, 1, 2, 3, 4],
            ),
            (
                "by rate: close enough shares",
                Learned,
                "a",
                vec![
                    ("a", "x", 80.0, 0.0, 0.0, 0),
                    ("b", "x", 100.0, 0.0, 0.0, 0),
                ],
                5,
                vec![0, 1, 2, 3, 4],
            ),
            (
                "slow transactions skip the site, whatever the rates",
                Learned,
                "a",
                vec![
                    ("a", "x", 500.0, 1.2, 0.0, 0),
                    ("b", "x", 50.0, 0.02, 0.0, 0),
                ],
                5,
                vec![2, 4],
            ),
            (
                "a gateway given little work is not taken for a slow one",
                Learned,
                "a",
                vec![
                    ("a", "x", 5.0, 0.02, 0.0, 0),
                    ("b", "x", 500.0, 0.02, 0.0, 0),
                ],
                5,
                vec![0, 1, 2, 3, 4],
            ),
            (
                "times under the floor are equal",
                Learned,
                "a",
                vec![
                    ("a", "x", 1.0, 0.009, 0.0, 0),
                    ("b", "x", 1.0, 0.0005, 0.0, 0),
                ],
                5,
                vec![0, 1, 2, 3, 4],
            ),
            (
                "deferrals count against a fast pair",
                Learned,
                "a",
                vec![
                    ("a", "x", 100.0, 0.01, 0.9, 0),
                    ("b", "x", 100.0, 0.02, 0.0, 0),
                ],
                5,
                vec![2, 4],
            ),
            (
                "the fast pair takes it by speed",
                Learned,
                "b",
                vec![
                    ("a", "x", 500.0, 1.2, 0.0, 0),
                    ("b", "x", 50.0, 0.02, 0.0, 0),
                ],
                5,
                vec![0, 1, 2, 3, 4],
            ),
            (
                "speed is compared where any live gateway has it",
                Learned,
                "a",
                vec![
                    ("a", "x", 500.0, 0.0, 0.0, 0),
                    ("b", "x", 50.0, 0.02, 0.0, 0),
                ],
                5,
                vec![0, 2, 4],
            ),
            (
                "an unknown site is explored once",
                Learned,
                "a",
                vec![("b", "x", 100.0, 0.02, 0.0, 0)],
                5,
                vec![0, 2, 4],
            ),
            (
                "a slow pair's old figures are explored again, once",
                Learned,
                "a",
                vec![
                    ("a", "x", 10.0, 1.0, 0.0, 61),
                    ("b", "x", 100.0, 0.02, 0.0, 0),
                ],
                5,
                vec![0, 2, 4],
            ),
            (
                "a lost gateway drops out",
                Learned,
                "a",
                vec![
                    ("a", "x", 10.0, 1.0, 0.0, 0),
                    ("c", "x", 100.0, 0.02, 0.0, 0),
                ],
                5,
                vec![0, 1, 2, 3, 4],
            ),
        ];
        for (why, mode, me, known, want, expected) in table {
            let got = choose(*mode, me, &live, &sites, *want, &estimates(known), NOW);
            assert_eq!(&got, expected, "{why}");
        }
    }

    #[test]
    fn giving_back() {
        let live = vec!["a".to_owned(), "b".to_owned()];
        // (why, mode, asking, known, gives back)
        let table: &[(&str, Assignment, &str, Vec<Known>, bool)] = &[
            (
                "much slower than a live one",
                Assignment::Learned,
                "a",
                vec![("a", "x", 1.0, 1.0, 0.0, 0), ("b", "x", 1.0, 0.1, 0.0, 0)],
                true,
            ),
            (
                "round robin never",
                Assignment::RoundRobin,
                "a",
                vec![("a", "x", 1.0, 1.0, 0.0, 0), ("b", "x", 1.0, 0.1, 0.0, 0)],
                false,
            ),
            (
                "slower, not by half",
                Assignment::Learned,
                "a",
                vec![("a", "x", 1.0, 0.15, 0.0, 0), ("b", "x", 1.0, 0.1, 0.0, 0)],
                false,
            ),
            (
                "the fast one",
                Assignment::Learned,
                "b",
                vec![("a", "x", 1.0, 1.0, 0.0, 0), ("b", "x", 1.0, 0.1, 0.0, 0)],
                false,
            ),
            (
                "the faster one is lost",
                Assignment::Learned,
                "a",
                vec![("a", "x", 1.0, 1.0, 0.0, 0), ("c", "x", 1.0, 0.1, 0.0, 0)],
                false,
            ),
            (
                "not timed yet",
                Assignment::Learned,
                "a",
                vec![("a", "x", 1.0, 0.0, 0.0, 0), ("b", "x", 1.0, 0.1, 0.0, 0)],
                false,
            ),
            (
                "another site",
                Assignment::Learned,
                "a",
                vec![("a", "y", 1.0, 1.0, 0.0, 0), ("b", "y", 1.0, 0.1, 0.0, 0)],
                false,
            ),
        ];
        for (why, mode, me, known, expected) in table {
            let got = give_back(*mode, me, &live, "x", &estimates(known));
            assert_eq!(got, *expected, "{why}");
        }
    }

    fn figures(delivered: u64, failed: u64, transactions: u64, busy: f64) -> SiteFigures {
        SiteFigures {
            site: "x".to_owned(),
            delivered,
            failed,
            seconds: 2.0,
            transactions,
            busy_seconds: busy,
            mx: String::new(),
        }
    }

    #[test]
    fn domains_of_one_mx_site_are_one() {
        let f = |site: &str, mx: &str, delivered| SiteFigures {
            site: site.to_owned(),
            mx: mx.to_owned(),
            ..figures(delivered, 1, 10, 1.0)
        };
        let got = by_site(&[
            f("a.test", "mx.test", 5),
            f("b.test", "mx.test", 7),
            f("c.test", "", 3),
        ]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            (got[0].site.as_str(), got[0].delivered, got[0].failed),
            ("mx.test", 12, 2)
        );
        assert_eq!((got[0].transactions, got[0].busy_seconds), (10, 1.0));
        assert_eq!((got[1].site.as_str(), got[1].delivered), ("c.test", 3));
    }

    #[test]
    fn learning_averages() {
        let first = learn(None, &figures(100, 0, 100, 50.0), NOW);
        assert_eq!((first.rate, first.samples), (50.0, 100));
        assert!((first.transaction_seconds - 0.5).abs() < 1e-9);
        let second = learn(Some(&first), &figures(0, 100, 100, 150.0), NOW + 2);
        assert!((second.rate - 35.0).abs() < 1e-9);
        assert!((second.failure_rate - 0.3).abs() < 1e-9);
        assert!((second.transaction_seconds - 0.8).abs() < 1e-9);
        assert_eq!((second.transactions, second.updated), (200, NOW + 2));
        // An interval without attempts changes nothing.
        assert_eq!(
            learn(Some(&second), &figures(0, 0, 0, 0.0), NOW + 9),
            second
        );
        // Transactions without final recipients yet still time the site.
        let timed = learn(None, &figures(0, 0, 4, 2.0), NOW);
        assert_eq!((timed.samples, timed.transactions), (0, 4));
        assert!((timed.transaction_seconds - 0.5).abs() < 1e-9);
    }
}
