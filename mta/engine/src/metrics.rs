//! The delivery engine's Prometheus metrics: messages by outcome and site,
//! transactions in flight, open connections per site, the time from a
//! transaction's start to its reply. Registered by the binary with the rest
//! of a process's metrics and served on `/metrics`.
//!
//! Cheap on the hot path: a site resolves its counters once, when a round
//! makes it, and then only adds to atomics. Labels are bounded: at most
//! [`MAX_SITES`] sites are named, the rest count as `other`; no campaign or
//! recipient is ever a label.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Sites named in labels; the others are `other`.
pub const MAX_SITES: usize = 100;

/// The outcomes counted.
pub const OUTCOMES: [&str; 5] = ["delivered", "deferred", "bounced", "expired", "suppressed"];

/// Where `suppressed` is in [`OUTCOMES`].
pub const SUPPRESSED: usize = 4;

type Labels = Vec<(String, String)>;

/// The engine's metrics.
#[derive(Debug)]
pub struct EngineMetrics {
    messages: Family<Labels, Counter>,
    connections: Family<Labels, Gauge>,
    in_flight: Gauge,
    reply_seconds: Histogram,
    sites: Mutex<HashSet<String>>,
}

impl Default for EngineMetrics {
    fn default() -> EngineMetrics {
        EngineMetrics {
            messages: Family::default(),
            connections: Family::default(),
            in_flight: Gauge::default(),
            // 1 ms to ~33 s.
            reply_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            sites: Mutex::default(),
        }
    }
}

/// One site's handles, resolved once ([`EngineMetrics::site`]).
#[derive(Debug, Clone)]
pub struct SiteMetrics {
    outcomes: [Counter; 5],
    connections: Gauge,
    in_flight: Gauge,
    reply_seconds: Histogram,
}

impl SiteMetrics {
    /// Counts an outcome (an index into [`OUTCOMES`]).
    pub fn outcome(&self, which: usize) {
        if let Some(c) = self.outcomes.get(which) {
            c.inc();
        }
    }

    /// A connection opened; closed when the guard goes.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    /// A transaction started.
    pub fn transaction_started(&self) {
        self.in_flight.inc();
    }

    /// A transaction ended `seconds` after it started (with a reply, or
    /// without one when the connection went).
    pub fn transaction_ended(&self, seconds: Option<f64>) {
        self.in_flight.dec();
        if let Some(s) = seconds {
            self.reply_seconds.observe(s);
        }
    }
}

/// Counts an open connection until dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl EngineMetrics {
    /// The label of site `key`: itself while fewer than [`MAX_SITES`] are
    /// named, else `other`.
    fn label(&self, key: &str) -> String {
        let mut sites = self
            .sites
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sites.contains(key) {
            return key.to_owned();
        }
        if sites.len() < MAX_SITES {
            sites.insert(key.to_owned());
            return key.to_owned();
        }
        "other".to_owned()
    }

    /// The handles of site `key` (a round's site: the MX host or route).
    pub fn site(&self, key: &str) -> SiteMetrics {
        let site = self.label(key);
        let counter = |outcome: &str| {
            self.messages
                .get_or_create(&vec![
                    ("outcome".to_owned(), outcome.to_owned()),
                    ("site".to_owned(), site.clone()),
                ])
                .clone()
        };
        SiteMetrics {
            outcomes: OUTCOMES.map(counter),
            connections: self
                .connections
                .get_or_create(&vec![("site".to_owned(), site.clone())])
                .clone(),
            in_flight: self.in_flight.clone(),
            reply_seconds: self.reply_seconds.clone(),
        }
    }

    /// Adds the metrics to `registry` (prefixed `volley_` by the caller's
    /// registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "messages",
            "Recipients by outcome of an attempt (or suppressed unsent), by destination site",
            self.messages.clone(),
        );
        registry.register(
            "connections",
            "SMTP connections open, by destination site",
            self.connections.clone(),
        );
        registry.register(
            "transactions_in_flight",
            "Recipients whose transaction has started and has no reply yet",
            self.in_flight.clone(),
        );
        registry.register(
            "reply_seconds",
            "Time from a recipient's transaction start to its reply",
            self.reply_seconds.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_are_capped_and_counted() {
        let m = EngineMetrics::default();
        for i in 0..MAX_SITES + 5 {
            let s = m.site(&format!("mx{i}.test"));
            s.outcome(0);
        }
        let again = m.site("mx0.test");
        again.outcome(1);
        {
            let _c = again.connection();
            again.transaction_started();
            again.transaction_ended(Some(0.02));
        }
        let mut registry = Registry::with_prefix("volley");
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("volley_messages_total{outcome=\"delivered\",site=\"other\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("volley_messages_total{outcome=\"deferred\",site=\"mx0.test\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("volley_connections{site=\"mx0.test\"} 0"),
            "{text}"
        );
        assert!(text.contains("volley_transactions_in_flight 0"), "{text}");
        assert!(text.contains("volley_reply_seconds_count 1"), "{text}");
    }
}
