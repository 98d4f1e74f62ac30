//! The delivery engine's Prometheus metrics: messages by outcome and site,
//! transactions in flight, open connections per site, the time from a
//! transaction's start to its reply. Registered by the binary with the rest
//! of a process's metrics and served on `/metrics`.
//!
//! Cheap on the hot path: a site resolves its counters once, when a round
//! makes it, and then only adds to atomics. Labels are bounded: at most
//! [`MAX_SITES`] sites are named, the rest count as `other`; no campaign or
//! recipient is ever a label.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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
    paused: Arc<Paused>,
    timings: Arc<Timings>,
}

/// Sites timed one by one ([`Timings`]); the rest share one entry.
pub const MAX_TIMED_SITES: usize = 100_000;

/// One site's busy time: what a fleet's gateway reports so that the control
/// plane can send each site to the gateway that delivers to it fastest.
/// Two atomics added to per transaction, none read on the hot path.
#[derive(Debug, Default)]
pub struct SiteTiming {
    transactions: AtomicU64,
    busy_micros: AtomicU64,
}

/// The busy time of every site since the engine started, by site key (not
/// a metric label: no cap at [`MAX_SITES`]).
#[derive(Debug, Default)]
pub struct Timings(Mutex<HashMap<String, Arc<SiteTiming>>>);

impl Timings {
    fn of(&self, key: &str) -> Arc<SiteTiming> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = map.get(key) {
            return Arc::clone(t);
        }
        let key = if map.len() < MAX_TIMED_SITES {
            key
        } else {
            "other"
        };
        Arc::clone(map.entry(key.to_owned()).or_default())
    }

    /// Site `key`'s transactions that got a reply, and the seconds spent on
    /// them (each from its start, or the reply before it on its connection
    /// if later, to its reply) and on opening connections, since the engine
    /// started; `None` before its first.
    pub fn get(&self, key: &str) -> Option<(u64, f64)> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let t = map.get(key)?;
        Some((
            t.transactions.load(Ordering::Relaxed),
            t.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ))
    }
}

/// The longest reason shown for a pause.
const REASON_MAX: usize = 120;

/// The sites paused now, each with the reply that paused it and until when
/// (`volley_site_paused{site, reason} 1` while it lasts).
#[derive(Debug, Default)]
pub struct Paused(Mutex<HashMap<String, (String, Instant)>>);

impl Paused {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sites paused now, with their reasons and seconds left, by site.
    pub fn now(&self) -> Vec<(String, String, f64)> {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, (_, until)| *until > now);
        let mut out: Vec<(String, String, f64)> = map
            .iter()
            .map(|(site, (reason, until))| {
                (
                    site.clone(),
                    reason.clone(),
                    until.duration_since(now).as_secs_f64(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Encodes [`Paused`] when scraped (a pause that ended is not shown).
#[derive(Debug)]
struct PausedCollector(Arc<Paused>);

impl Collector for PausedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let paused = self.0.now();
        let gauge = ConstGauge::new(1i64);
        let mut metric = encoder.encode_descriptor(
            "site_paused",
            "Sites paused now after a reply matching [site] pause_patterns, with that reply",
            None,
            gauge.metric_type(),
        )?;
        for (site, reason, _) in &paused {
            let labels = [("site", site.as_str()), ("reason", reason.as_str())];
            let family = metric.encode_family(&labels)?;
            ConstGauge::new(1i64).encode(family)?;
        }
        Ok(())
    }
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
            paused: Arc::default(),
            timings: Arc::default(),
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
    site: String,
    paused: Arc<Paused>,
    timing: Arc<SiteTiming>,
}

impl SiteMetrics {
    /// The site was paused for `for_` by a reply (`reason`: its code,
    /// enhanced code and text).
    pub fn paused(&self, reason: &str, for_: Duration) {
        let mut end = reason.len().min(REASON_MAX);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason: String = reason[..end]
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.paused
            .lock()
            .insert(self.site.clone(), (reason, Instant::now() + for_));
    }

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

    /// A transaction ended with a reply `(seconds after it started, seconds
    /// it had the connection to itself)` (the second leaves out the wait
    /// behind the transactions pipelined before it), or without one when the
    /// connection went.
    pub fn transaction_ended(&self, times: Option<(f64, f64)>) {
        self.in_flight.dec();
        if let Some((seconds, own)) = times {
            self.reply_seconds.observe(seconds);
            self.timing.transactions.fetch_add(1, Ordering::Relaxed);
            self.busy(own);
        }
    }

    /// A connection was opened (greeting, EHLO, STARTTLS) in `seconds`.
    pub fn connected(&self, seconds: f64) {
        self.busy(seconds);
    }

    fn busy(&self, seconds: f64) {
        let micros = (seconds * 1e6) as u64;
        self.timing.busy_micros.fetch_add(micros, Ordering::Relaxed);
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
            site,
            paused: Arc::clone(&self.paused),
            timing: self.timings.of(key),
        }
    }

    /// Every site's busy time ([`Timings`]).
    pub fn timings(&self) -> Arc<Timings> {
        Arc::clone(&self.timings)
    }

    /// The sites paused now ([`Paused::now`]).
    pub fn paused(&self) -> Vec<(String, String, f64)> {
        self.paused.now()
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
        registry.register_collector(Box::new(PausedCollector(Arc::clone(&self.paused))));
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
            again.transaction_ended(Some((0.05, 0.02)));
            again.transaction_started();
            again.transaction_ended(None);
            again.connected(0.5);
        }
        // Timed by site, past the label cap, a transaction without reply not.
        assert_eq!(m.timings().get("mx0.test"), Some((1, 0.52)));
        assert_eq!(m.timings().get("mx104.test"), Some((0, 0.0)));
        assert_eq!(m.timings().get("mx999.test"), None);
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
        assert!(!text.contains("volley_site_paused{"), "{text}");
        again.paused("421 4.7.0 Try again later\r\n", Duration::from_secs(60));
        m.site("mx1.test").paused("421 gone", Duration::ZERO);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "volley_site_paused{site=\"mx0.test\",reason=\"421 4.7.0 Try again later  \"} 1"
            ),
            "{text}"
        );
        assert!(
            !text.contains("mx1.test\",reason"),
            "an ended pause: {text}"
        );
    }
}
