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
//! per request. A site no live gateway knows yet is anyone's. So after the
//! first figures, a slow pair stops getting the site while a fast one is
//! live; when the fast one is lost it drops out of the comparison and the
//! site goes to the next best: no site waits for a gateway that is gone.

use std::collections::HashMap;

use volley_conf::Assignment;

use super::wire::SiteEstimate;
use crate::store::leases::Candidate;

/// A gateway takes a site when its rate is at least this share of the best.
pub const GOOD_ENOUGH: f64 = 0.7;
/// Batches of a site it knows nothing about a gateway gets per request.
pub const EXPLORE: usize = 1;

/// What the control plane learned, per (gateway, site).
pub type Estimates = HashMap<(String, String), SiteEstimate>;

/// The indexes into `candidates` (oldest first) to lease to `me`, at most
/// `want`, given the `live` gateways (`me` among them) and `estimates`.
pub fn choose(
    mode: Assignment,
    me: &str,
    live: &[String],
    candidates: &[Candidate],
    want: usize,
    estimates: &Estimates,
) -> Vec<usize> {
    if mode == Assignment::RoundRobin {
        return (0..candidates.len().min(want)).collect();
    }
    let mut out = Vec::new();
    let mut explored: HashMap<&str, usize> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        if out.len() >= want {
            break;
        }
        let site = c.site.as_str();
        let rate_of = |g: &str| {
            estimates
                .get(&(g.to_owned(), site.to_owned()))
                .filter(|e| e.samples > 0)
                .map(|e| e.rate)
        };
        let best = live
            .iter()
            .filter_map(|g| rate_of(g))
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        let take = match (rate_of(me), best) {
            // Nobody knows the site yet: anyone's.
            (_, None) => true,
            (Some(mine), Some(best)) => mine >= GOOD_ENOUGH * best,
            // Others know it, this gateway does not: explore a little.
            (None, Some(_)) => {
                let n = explored.entry(site).or_default();
                *n += 1;
                *n <= EXPLORE
            }
        };
        if take {
            out.push(i);
        }
    }
    out
}

/// Folds one interval's figures into an estimate (moving averages): `rate`
/// is recipients delivered per second of holding the site's batches.
pub fn learn(
    old: Option<&SiteEstimate>,
    site: &str,
    delivered: u64,
    failed: u64,
    seconds: f64,
) -> SiteEstimate {
    let attempts = delivered + failed;
    let rate = if seconds > 0.0 {
        delivered as f64 / seconds
    } else {
        0.0
    };
    let failure = if attempts > 0 {
        failed as f64 / attempts as f64
    } else {
        0.0
    };
    match old {
        Some(o) if o.samples > 0 && attempts > 0 => SiteEstimate {
            site: site.to_owned(),
            rate: 0.7 * o.rate + 0.3 * rate,
            failure_rate: 0.7 * o.failure_rate + 0.3 * failure,
            samples: o.samples + attempts,
        },
        Some(o) if attempts == 0 => o.clone(),
        _ => SiteEstimate {
            site: site.to_owned(),
            rate,
            failure_rate: failure,
            samples: attempts,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(sites: &[&str]) -> Vec<Candidate> {
        sites
            .iter()
            .enumerate()
            .map(|(i, s)| Candidate {
                campaign: 1,
                batch: i as i64,
                site: (*s).to_owned(),
                recipients: 100,
            })
            .collect()
    }

    fn estimates(pairs: &[(&str, &str, f64)]) -> Estimates {
        pairs
            .iter()
            .map(|(g, s, rate)| {
                (
                    ((*g).to_owned(), (*s).to_owned()),
                    SiteEstimate {
                        site: (*s).to_owned(),
                        rate: *rate,
                        failure_rate: 0.0,
                        samples: 100,
                    },
                )
            })
            .collect()
    }

    /// (why, mode, asking gateway, (gateway, site, rate) known, want, chosen).
    type Case = (
        &'static str,
        Assignment,
        &'static str,
        Vec<(&'static str, &'static str, f64)>,
        usize,
        Vec<usize>,
    );

    #[test]
    fn choices() {
        let live = vec!["a".to_owned(), "b".to_owned()];
        let sites = ["x", "x", "y", "x", "y"];
        let table: &[Case] = &[
            (
                "round robin takes the oldest",
                Assignment::RoundRobin,
                "a",
                vec![("a", "x", 1.0), ("b", "x", 100.0)],
                3,
                vec![0, 1, 2],
            ),
            (
                "nothing known: anyone's",
                Assignment::Learned,
                "a",
                vec![],
                5,
                vec![0, 1, 2, 3, 4],
            ),
            (
                "want bounds it",
                Assignment::Learned,
                "a",
                vec![],
                2,
                vec![0, 1],
            ),
            (
                "the slow pair skips the site",
                Assignment::Learned,
                "a",
                vec![("a", "x", 10.0), ("b", "x", 100.0)],
                5,
                vec![2, 4],
            ),
            (
                "the fast pair takes it",
                Assignment::Learned,
                "b",
                vec![("a", "x", 10.0), ("b", "x", 100.0)],
                5,
                vec![0, 1, 2, 3, 4],
            ),
            (
                "close enough shares",
                Assignment::Learned,
                "a",
                vec![("a", "x", 80.0), ("b", "x", 100.0)],
                5,
                vec![0, 1, 2, 3, 4],
            ),
            (
                "an unknown site is explored once",
                Assignment::Learned,
                "a",
                vec![("b", "x", 100.0)],
                5,
                vec![0, 2, 4],
            ),
            (
                "a lost gateway drops out",
                Assignment::Learned,
                "a",
                vec![("a", "x", 10.0), ("c", "x", 100.0)],
                5,
                vec![0, 1, 2, 3, 4],
            ),
        ];
        for (why, mode, me, known, want, expected) in table {
            let got = choose(
                *mode,
                me,
                &live,
                &candidates(&sites),
                *want,
                &estimates(known),
            );
            assert_eq!(&got, expected, "{why}");
        }
    }

    #[test]
    fn learning_averages() {
        let first = learn(None, "x", 100, 0, 2.0);
        assert_eq!((first.rate, first.samples), (50.0, 100));
        let second = learn(Some(&first), "x", 0, 100, 2.0);
        assert!((second.rate - 35.0).abs() < 1e-9);
        assert!((second.failure_rate - 0.3).abs() < 1e-9);
        // An interval without attempts changes nothing.
        assert_eq!(learn(Some(&second), "x", 0, 0, 5.0), second);
    }
}
