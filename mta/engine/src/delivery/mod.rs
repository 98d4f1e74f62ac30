//! The delivery engine: takes the due recipients out of the batches its
//! [`feed`] opens, resolves their destinations, groups them into sites and drains
//! each site over pooled, pipelined connections, recording every reply in the
//! recipient's state slot and the delivery log.
//!
//! Layout: [`feed`] (where batches come from and progress goes: the one trait the
//! engine is fed through, and [`feed::SpoolFeed`]), [`work`] (what is due),
//! [`site`] (per-site workers), [`lanes`] (delivery threads), [`record`] (slots,
//! log, counters). The decisions they call are pure functions elsewhere:
//! [`crate::outcome`], [`crate::shaping`]; the suppression list is asked through
//! [`crate::suppress`].

pub mod feed;
pub mod lanes;
pub mod purge;
pub mod record;
pub mod reports;
pub mod site;
pub mod tls_fallback;
pub mod work;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::shaping::RateLimit;

use tokio::sync::Semaphore;
use volley_conf::{limits_for, Config, Route};
use volley_queue::QueueError;

use crate::conn::Timeouts;
use crate::delivery::feed::{Feed, LiveBatch};
use crate::delivery::lanes::Lanes;
use crate::delivery::record::{Answer, Level, Recorder, Via};
use crate::delivery::site::{Host, Site};
use crate::delivery::work::Item;
use crate::host::unix_now;
use crate::log::DeliveryLog;
use crate::mx::{MxError, MxResolver, ResolverConfig};
use crate::outcome::{BounceClass, Verdict};
use crate::tls::{TlsClients, TlsSetupError};
use crate::verp_key::verp_from_config;
use volley_inbound::Verp;
use volley_merge::source::MessageSource;
use volley_smtp::client::{SessionConfig, TlsMode};

pub use crate::suppress::{NoSuppressions, Suppressions};

/// Why the engine could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The spool failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The delivery log could not be opened.
    #[error("cannot open the delivery log {path}: {io}")]
    Log {
        /// The log path.
        path: String,
        /// The OS error.
        io: std::io::Error,
    },
    /// The resolver could not be set up.
    #[error("DNS resolver: {0}")]
    Dns(String),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// A DKIM key could not be loaded.
    #[error(transparent)]
    Dkim(#[from] crate::dkim::DkimError),
    /// The VERP key could not be read or created.
    #[error(transparent)]
    Verp(#[from] crate::verp_key::KeyError),
    /// The delivery threads could not be started.
    #[error("cannot start the delivery threads: {0}")]
    Lanes(std::io::Error),
}

/// What one delivery round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Recipients attempted (or failed before an attempt: DNS, rendering).
    pub attempted: u64,
    /// Delivered this round.
    pub delivered: u64,
    /// Deferred this round.
    pub deferred: u64,
    /// Bounced this round.
    pub bounced: u64,
    /// Expired this round.
    pub expired: u64,
    /// Finalised unsent this round because they are on the suppression list
    /// (their slots say bounced, code 0; not counted in `attempted` or `bounced`).
    pub suppressed: u64,
    /// Recipients found in flight from an earlier, interrupted run and sent again:
    /// the only ones that may have been delivered twice.
    pub resent_after_crash: u64,
    /// Recipients waiting for a later retry (not due this round).
    pub not_due: u64,
    /// The earliest unix second at which one of them becomes due, as the round's
    /// scan saw it (recipients the round itself deferred are not in it).
    pub next_due: Option<u64>,
    /// Batches completed (every recipient final) and moved to done/.
    pub batches_completed: u64,
    /// Corrupt batch files quarantined.
    pub quarantined: u64,
    /// Unfinished recipients left for the next round because this one's window
    /// (`[queue] window`) was full: the next round should start at once.
    pub waiting: u64,
    /// Due recipients left unsent because an operator holds them (`volley
    /// queue hold`).
    pub held: u64,
}

impl RunReport {
    /// How long a caller that keeps delivering may wait before its next round
    /// when nothing wakes it (new work does), at unix second `now`: a moment
    /// after a round that attempted something (its deferrals are not in
    /// `next_due`), else until the next recipient is due, at least a second and
    /// at most `MAX_IDLE`, so that a spool with nothing due is not rescanned in a
    /// loop.
    pub fn pause(&self, now: u64) -> Duration {
        const AFTER_WORK: Duration = Duration::from_secs(1);
        const MAX_IDLE: Duration = Duration::from_secs(60);
        if self.attempted > 0 || self.suppressed > 0 {
            return AFTER_WORK;
        }
        match self.next_due {
            Some(at) => Duration::from_secs(at.saturating_sub(now)).clamp(AFTER_WORK, MAX_IDLE),
            None => MAX_IDLE,
        }
    }
}

/// State shared by every site worker of the engine.
pub struct Shared {
    pub(crate) recorder: Recorder,
    pub(crate) source: Arc<dyn MessageSource>,
    /// Signs each rendered message whose From domain has a key; `None` when no
    /// `[[dkim]]` key is configured.
    pub(crate) dkim: Option<crate::dkim::DkimSigner>,
    /// Makes the VERP return path of each campaign message; `None` when no
    /// `[bounce] domain` is configured.
    pub(crate) verp: Option<Arc<Verp>>,
    pub(crate) tls: TlsClients,
    pub(crate) tls_verify: bool,
    /// Hosts sent to in plaintext for a while after a failed handshake
    /// (opportunistic TLS only).
    pub(crate) plaintext: tls_fallback::PlaintextHosts,
    pub(crate) session: SessionConfig,
    pub(crate) timeouts: Timeouts,
    pub(crate) pipeline_depth: usize,
    pub(crate) connections: Arc<Semaphore>,
    pub(crate) next_id: AtomicU64,
    /// The suppression list, checked for each due recipient at a round's start
    /// and, once it changed since ([`Suppressions::version`]), before each send.
    pub(crate) suppressions: Arc<dyn Suppressions>,
    /// The list's version the current round was screened at.
    pub(crate) screened: AtomicU64,
    /// The metrics (Prometheus) of this engine.
    pub(crate) metrics: Arc<crate::metrics::EngineMetrics>,
    /// The operator's holds (`volley queue hold`).
    pub(crate) holds: Arc<volley_queue::holds::Holds>,
    /// How many gateways of a fleet share each site's limits (1: this
    /// process alone): a round's sites get their share
    /// ([`crate::shaping::share_limits`]).
    pub(crate) limit_share: Arc<std::sync::atomic::AtomicU32>,
    /// Each site's message rate limit, kept from round to round: a round's
    /// site takes it over rather than starting with a full bucket (rounds
    /// come as often as a fleet's leases do).
    rates: Mutex<HashMap<String, Arc<Mutex<RateLimit>>>>,
    /// Set by [`Engine::stop`]: no new transactions or connections.
    stopping: AtomicBool,
    egress: Vec<IpAddr>,
    egress_next: AtomicUsize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Whether the engine is stopping ([`Engine::stop`]).
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Site `key`'s rate limit, at `rate` messages per second from now on.
    pub(crate) fn rate_limit(&self, key: &str, rate: f64) -> Arc<Mutex<RateLimit>> {
        let now = Instant::now();
        let mut rates = self.rates.lock().unwrap_or_else(PoisonError::into_inner);
        if rates.len() >= MAX_RATE_SITES {
            // Sites of no round now start afresh when they come back.
            rates.retain(|_, r| Arc::strong_count(r) > 1);
        }
        let limit = rates
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(RateLimit::new(rate, now))));
        limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_rate(rate, now);
        Arc::clone(limit)
    }

    /// The next source address of the egress pool, if one is configured.
    pub(crate) fn source_address(&self, _worker: usize) -> Option<IpAddr> {
        if self.egress.is_empty() {
            return None;
        }
        let i = self.egress_next.fetch_add(1, Ordering::Relaxed) % self.egress.len();
        Some(self.egress[i])
    }
}

/// Sites whose rate limits are kept between rounds before idle ones go.
const MAX_RATE_SITES: usize = 10_000;

/// Names the site a domain's mail goes through, as the engine does (a
/// cheap clone of its resolver and configuration).
#[derive(Clone)]
pub struct Sites {
    resolver: MxResolver,
    config: Arc<Config>,
}

impl Sites {
    /// The sites as `config` routes and resolves them (without an engine:
    /// `volley queue purge --site` on a stopped spool).
    pub fn new(config: &Config) -> Result<Sites, EngineError> {
        let resolver = MxResolver::new(&ResolverConfig::of(&config.dns))
            .map_err(|e| EngineError::Dns(e.to_string()))?;
        Ok(Sites {
            resolver,
            config: Arc::new(config.clone()),
        })
    }

    /// The site recipients at `domain` are sent through now (a route's
    /// `route:VIA`, else the MX hosts' names joined by commas): what `--site`
    /// and the metrics name; `None` when the domain does not resolve.
    pub async fn site_of(&self, domain: &str) -> Option<String> {
        resolve(&self.resolver, &self.config, domain)
            .await
            .ok()
            .map(|t| t.key)
    }
}

/// The delivery engine for one spool.
pub struct Engine {
    config: Arc<Config>,
    feed: Arc<dyn Feed>,
    resolver: MxResolver,
    shared: Arc<Shared>,
    lanes: Arc<Lanes>,
    /// Where the reports of failed relayed mail go; none without it.
    reports: Option<Arc<dyn reports::ReportSink>>,
    /// Numbers the reports made.
    report_seq: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine delivering the batches of `feed` with `config`, messages from
    /// `source`, logging to `log` (default: `[delivery] log`). The VERP key is
    /// looked for in `[spool] dir` unless `[bounce] secret_file` says otherwise.
    pub fn new(
        config: Config,
        feed: Arc<dyn Feed>,
        source: Arc<dyn MessageSource>,
        log: Option<&Path>,
    ) -> Result<Engine, EngineError> {
        let log_path = log.unwrap_or(&config.delivery.log).to_owned();
        let log = DeliveryLog::open(&log_path).map_err(|io| EngineError::Log {
            path: log_path.display().to_string(),
            io,
        })?;
        let resolver = MxResolver::new(&ResolverConfig::of(&config.dns))
            .map_err(|e| EngineError::Dns(e.to_string()))?;
        let tls = TlsClients::new(config.delivery.tls_ca_file.as_deref())?;
        let dkim = crate::dkim::DkimSigner::from_config(&config.dkim)?;
        let dkim = (!dkim.is_empty()).then_some(dkim);
        let verp = verp_from_config(&config.bounce, &config.spool.dir)?.map(Arc::new);
        let d = &config.delivery;
        let helo_name = if d.helo_name.is_empty() {
            crate::host::host_name()
        } else {
            d.helo_name.clone()
        };
        let shared = Shared {
            recorder: Recorder {
                log: Arc::new(log),
                retry: config.retry.clone(),
                counters: Default::default(),
                sync_each: config.queue.sync_interval.is_zero(),
                flushed: AtomicBool::new(true),
                delay_warning: config.bounce.delay_warning.as_secs(),
                relayed_reports: Default::default(),
            },
            source,
            dkim,
            verp,
            tls,
            tls_verify: d.tls_verify,
            plaintext: Default::default(),
            session: SessionConfig {
                helo_name,
                tls: TlsMode::Opportunistic,
                ..SessionConfig::default()
            },
            timeouts: Timeouts {
                connect: d.connect_timeout,
                greeting: d.greeting_timeout,
                command: d.command_timeout,
                data: d.data_timeout,
            },
            pipeline_depth: d.pipeline_depth as usize,
            connections: Arc::new(Semaphore::new(d.max_connections as usize)),
            next_id: AtomicU64::new(1),
            suppressions: Arc::new(NoSuppressions),
            screened: AtomicU64::new(0),
            metrics: Arc::default(),
            holds: Arc::new(volley_queue::holds::Holds::none()),
            limit_share: Arc::new(std::sync::atomic::AtomicU32::new(1)),
            rates: Mutex::default(),
            stopping: AtomicBool::new(false),
            egress: d.source_addresses.clone(),
            egress_next: AtomicUsize::new(0),
        };
        let lanes = Lanes::start(d.threads as usize).map_err(EngineError::Lanes)?;
        Ok(Engine {
            config: Arc::new(config),
            feed,
            resolver,
            shared: Arc::new(shared),
            lanes: Arc::new(lanes),
            reports: None,
            report_seq: AtomicU64::new(0),
        })
    }

    /// Holds the recipients `holds` covers (the spool's, shared with the
    /// process that changes them): none of them starts a transaction.
    pub fn with_holds(mut self, holds: Arc<volley_queue::holds::Holds>) -> Engine {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.holds = holds,
            None => tracing::error!("the holds were set after the engine started"),
        }
        self
    }

    /// Checks `suppressions` before sending: due recipients it holds for their
    /// batch's sending domain are finalised unsent (default: none are).
    pub fn with_suppressions(mut self, suppressions: Arc<dyn Suppressions>) -> Engine {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.suppressions = suppressions,
            // Only while building, before anything shares it.
            None => tracing::error!("the suppression list was set after the engine started"),
        }
        self
    }

    /// Sends a delivery status notification to the sender of each relayed
    /// message that bounces or expires, through `sink` (default: none is sent).
    pub fn with_reports(mut self, sink: Arc<dyn reports::ReportSink>) -> Engine {
        self.reports = Some(sink);
        self
    }

    /// The delivery log, to append other events to the same file (see
    /// [`crate::feedback`]).
    pub fn delivery_log(&self) -> Arc<DeliveryLog> {
        Arc::clone(&self.shared.recorder.log)
    }

    /// The VERP return paths of campaign mail (`None` without `[bounce]
    /// domain`): the same key and domain the inbound listener checks.
    pub fn verp(&self) -> Option<Arc<Verp>> {
        self.shared.verp.clone()
    }

    /// The operator's holds this engine obeys ([`Engine::with_holds`]).
    pub fn holds(&self) -> Arc<volley_queue::holds::Holds> {
        Arc::clone(&self.shared.holds)
    }

    /// What names the sites of this engine's domains (for `--site`).
    pub fn sites(&self) -> Sites {
        Sites {
            resolver: self.resolver.clone(),
            config: Arc::clone(&self.config),
        }
    }

    /// Adds this engine's metrics (delivery, connections, DNS cache) to a
    /// process's `registry`, for `/metrics`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.shared.metrics.register(registry);
        let (hits, misses) = self.resolver.cache_counters();
        registry.register(
            "dns_cache_hits",
            "MX lookups answered from the result cache",
            hits,
        );
        registry.register("dns_cache_misses", "MX lookups that went to DNS", misses);
    }

    /// Every site's busy time, for a fleet's gateway to report.
    pub fn timings(&self) -> Arc<crate::metrics::Timings> {
        self.shared.metrics.timings()
    }

    /// How many gateways share each site's limits (a fleet's gateway sets it
    /// from the control plane's answers; 1 by default).
    pub fn limit_share(&self) -> Arc<std::sync::atomic::AtomicU32> {
        Arc::clone(&self.shared.limit_share)
    }

    /// Where messages come from (the template cache).
    pub fn source(&self) -> Arc<dyn MessageSource> {
        Arc::clone(&self.shared.source)
    }

    /// One delivery round: every recipient due now is attempted once (deferred
    /// ones wait for their next attempt); returns when all attempts have a result.
    pub async fn run_once(&self) -> Result<RunReport, EngineError> {
        let suppressions = Arc::clone(&self.shared.suppressions);
        suppressions.refresh();
        self.shared
            .screened
            .store(suppressions.version(), Ordering::Relaxed);
        let now = unix_now();
        let mut opened = self
            .feed
            .open_round(now, u64::from(self.config.queue.window))?;
        // Relayed recipients whose outcome was recorded but never reported on
        // (a crash in the last round): reported at the end of this one.
        let found_finished = std::mem::take(&mut opened.finished);
        if self.reports.is_some() {
            let mut pending = Vec::new();
            for batch in found_finished.iter().chain(&opened.batches) {
                pending.extend(reports::unreported(batch));
            }
            if !pending.is_empty() {
                tracing::info!(
                    recipients = pending.len(),
                    "relayed outcomes left unreported by an earlier run: reporting them"
                );
                self.shared.recorder.note_unreported(pending);
            }
        }
        let work = work::collect(
            opened,
            now,
            suppressions.as_ref(),
            self.shared.source.as_ref(),
        )?;
        if !work.suppressed.is_empty() {
            // Never sent: no site; counted as `none`.
            let none = self.shared.metrics.site("none");
            for item in &work.suppressed {
                self.shared.recorder.suppressed(item, &item.address());
                none.outcome(crate::metrics::SUPPRESSED);
            }
        }
        if work.in_flight_reset > 0 {
            // Reported here, at once: a round can itself be cut short.
            tracing::warn!(
                "{} resent after a crash: their transactions were in flight when volley stopped, so each may arrive twice",
                work.in_flight_reset
            );
        }
        // The operator's holds: held recipients stay as they are, unsent.
        let holds_seen = self.shared.holds.generation();
        let holds = self.shared.holds.snapshot();
        let mut held = 0u64;
        let mut work = work;
        if !holds.is_empty() {
            work.by_domain.retain(|domain, items| {
                items.retain(|item| {
                    let keep = !holds.holds(item.batch.map.header().campaign_id, domain, None);
                    held += u64::from(!keep);
                    keep
                });
                !items.is_empty()
            });
        }
        let attempted: u64 = work.by_domain.values().map(|v| v.len() as u64).sum();
        let before = self.counts();

        // Group commit while the round runs.
        let batches = work.batches.clone();
        let interval = self
            .config
            .queue
            .sync_interval
            .max(Duration::from_millis(10));
        let shared = self.shared.clone();
        let feed = Arc::clone(&self.feed);
        let committer = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                shared.recorder.flush_result(&feed.commit(&batches));
                let _ = shared.recorder.log.flush();
            }
        });

        let sites = self
            .plan(work.by_domain, &holds, holds_seen, &mut held)
            .await;
        let mut tasks = tokio::task::JoinSet::new();
        for site in sites {
            tasks.spawn(site::run(
                Arc::new(site),
                self.shared.clone(),
                self.lanes.clone(),
            ));
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined {
                tracing::error!(%err, "site task failed");
            }
        }
        committer.abort();

        // A flush that fails is logged (flush_result) and holds new work back;
        // the round still ends, but no batch is completed on unflushed state:
        // the next round tries again.
        let committed = self.feed.commit(&work.batches);
        self.shared.recorder.flush_result(&committed);
        let failed = self.shared.recorder.take_relayed_reports();
        if let (false, Some(sink)) = (failed.is_empty(), &self.reports) {
            let mut unique = self
                .report_seq
                .fetch_add(failed.len() as u64, Ordering::Relaxed);
            reports::send(
                failed,
                self.shared.source.as_ref(),
                sink.as_ref(),
                &self.shared.session.helo_name,
                unix_now(),
                &mut unique,
            );
        }
        // A relayed batch whose report could not be queued stays, so that the
        // next round tries again.
        let reported = |batch: &Arc<LiveBatch>| {
            self.reports.is_none() || reports::unreported(batch).is_empty()
        };
        let mut finished: Vec<&LiveBatch> = Vec::new();
        if committed.is_ok() {
            for batch in work.batches.iter().chain(&found_finished) {
                if batch.map.is_finished()? && reported(batch) {
                    finished.push(batch);
                }
            }
        }
        let completed = self.feed.complete(&finished)?;
        self.feed.end_round(&work.batches);
        let _ = self.shared.recorder.log.flush();
        let after = self.counts();
        Ok(RunReport {
            attempted,
            delivered: after.delivered - before.delivered,
            deferred: after.deferred - before.deferred,
            bounced: after.bounced - before.bounced,
            expired: after.expired - before.expired,
            suppressed: work.suppressed.len() as u64,
            resent_after_crash: work.in_flight_reset,
            not_due: work.not_due,
            next_due: work.next_due,
            batches_completed: completed,
            quarantined: work.quarantined,
            waiting: work.waiting,
            held,
        })
    }

    /// Rounds until every recipient due now has been attempted once: one round
    /// per `[queue] window` of due recipients. Returns the rounds' reports summed
    /// (`waiting` is then 0; `not_due` and `next_due` are the last round's, whose
    /// scan saw every batch).
    pub async fn run_due(&self) -> Result<RunReport, EngineError> {
        let mut total = RunReport::default();
        loop {
            let report = self.run_once().await?;
            total.attempted += report.attempted;
            total.delivered += report.delivered;
            total.deferred += report.deferred;
            total.bounced += report.bounced;
            total.expired += report.expired;
            total.resent_after_crash += report.resent_after_crash;
            total.not_due = report.not_due;
            total.next_due = report.next_due;
            total.batches_completed += report.batches_completed;
            total.quarantined += report.quarantined;
            total.suppressed += report.suppressed;
            if report.waiting == 0 || self.shared.stopping() {
                return Ok(total);
            }
        }
    }

    /// Begins an orderly stop: no new transaction or connection starts, the
    /// transactions in flight get their replies recorded and their connections
    /// say QUIT, so the round being run ends by itself (recipients not yet sent
    /// stay as they were, due at the next start). The caller bounds the wait.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }

    /// Outcomes recorded since the engine was made (delivered, deferred, bounced,
    /// expired, suppressed), for progress displays while a round runs.
    pub fn progress(&self) -> RunReport {
        self.counts()
    }

    fn counts(&self) -> RunReport {
        let c = &self.shared.recorder.counters;
        RunReport {
            delivered: c.delivered.load(Ordering::Relaxed),
            deferred: c.deferred.load(Ordering::Relaxed),
            bounced: c.bounced.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            suppressed: c.suppressed.load(Ordering::Relaxed),
            ..RunReport::default()
        }
    }

    /// Resolves each domain (route or MX) and groups the recipients into sites.
    /// Recipients of domains that fail to resolve are recorded here.
    /// Sites the operator holds (`holds`, read at generation `holds_seen`) are
    /// left out, their recipients counted in `held`.
    async fn plan(
        &self,
        by_domain: HashMap<String, Vec<Item>>,
        holds: &volley_queue::holds::HoldSet,
        holds_seen: u64,
        held: &mut u64,
    ) -> Vec<Site> {
        let lookups = Arc::new(Semaphore::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        for (domain, items) in by_domain {
            let resolver = self.resolver.clone();
            let config = self.config.clone();
            let lookups = lookups.clone();
            tasks.spawn(async move {
                let _permit = lookups.acquire_owned().await;
                let target = resolve(&resolver, &config, &domain).await;
                (domain, items, target)
            });
        }
        let mut sites: HashMap<String, (Vec<Host>, String, volley_conf::TlsPolicy, Vec<Item>)> =
            HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            let Ok((domain, items, target)) = joined else {
                continue;
            };
            match target {
                Ok(t) => {
                    let entry = sites
                        .entry(t.key)
                        .or_insert_with(|| (t.hosts, domain.clone(), t.tls, Vec::new()));
                    entry.3.extend(items);
                }
                Err(err) => {
                    let verdict = if err.permanent {
                        Verdict::Permanent(BounceClass::NoSuchDomain)
                    } else {
                        Verdict::Temporary
                    };
                    let answer = Answer {
                        code: 0,
                        enhanced: if err.permanent { "5.1.2" } else { "4.4.3" },
                        subject: Some(if err.permanent { 1 } else { 4 }),
                        text: &err.reason,
                        level: Level::Connection,
                    };
                    let via = Via::default();
                    // No site: counted under `unresolved`.
                    let unresolved = self.shared.metrics.site("unresolved");
                    for item in &items {
                        let outcome = self.shared.recorder.record(
                            item,
                            &item.address(),
                            verdict,
                            &answer,
                            &via,
                            Instant::now(),
                        );
                        unresolved.outcome(outcome.metric());
                    }
                }
            }
        }
        let held_before = *held;
        sites.retain(|key, site| {
            let keep = !holds.holds_site(key);
            if !keep {
                *held += site.3.len() as u64;
            }
            keep
        });
        if *held > held_before {
            tracing::debug!(
                held = *held - held_before,
                "recipients of held sites left out of the round"
            );
        }
        sites
            .into_iter()
            .map(|(key, (hosts, domain, tls, mut items))| {
                work::group_relayed(&mut items);
                let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
                let limits = crate::shaping::share_limits(
                    limits_for(
                        &self.config.site,
                        &self.config.site_override,
                        &domain,
                        &names,
                    ),
                    self.shared.limit_share.load(Ordering::Relaxed),
                );
                let metrics = self.shared.metrics.site(&key);
                let holds = (Arc::clone(&self.shared.holds), holds_seen);
                let rate = self.shared.rate_limit(&key, limits.max_messages_per_second);
                Site::new(key, hosts, limits, tls, items, metrics, holds, rate)
            })
            .collect()
    }
}

/// Where a domain's mail goes.
struct Target {
    key: String,
    hosts: Vec<Host>,
    tls: volley_conf::TlsPolicy,
}

/// A resolution failure, as the engine records it.
struct ResolveFailure {
    permanent: bool,
    reason: String,
}

async fn resolve(
    resolver: &MxResolver,
    config: &Config,
    domain: &str,
) -> Result<Target, ResolveFailure> {
    if let Some(route) = config.route.iter().find(|r| r.domain.matches(domain)) {
        return resolve_route(route, config).await;
    }
    let destination = resolver
        .resolve(domain)
        .await
        .map_err(|err: MxError| ResolveFailure {
            permanent: err.is_permanent(),
            reason: err.to_string(),
        })?;
    let port = config.delivery.smtp_port;
    let hosts = destination
        .hosts
        .iter()
        .map(|h| Host {
            name: h.name.clone(),
            addrs: h.addrs.clone(),
            port,
        })
        .collect();
    Ok(Target {
        key: destination.site_key(),
        hosts,
        tls: config.delivery.tls,
    })
}

async fn resolve_route(route: &Route, config: &Config) -> Result<Target, ResolveFailure> {
    let (host, port) = (route.host().to_owned(), route.port());
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ResolveFailure {
                permanent: false,
                reason: format!("route {}: {e}", route.via),
            })?
            .map(|a| a.ip())
            .collect(),
    };
    Ok(Target {
        key: format!("route:{}", route.via),
        hosts: vec![Host {
            name: host,
            addrs,
            port,
        }],
        tls: route.tls.unwrap_or(config.delivery.tls),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_between_rounds() {
        let report = |attempted, next_due| RunReport {
            attempted,
            next_due,
            ..RunReport::default()
        };
        let s = Duration::from_secs;
        let table = [
            (report(5, None), s(1)),
            (report(5, Some(10_000)), s(1)),
            (report(0, None), s(60)),
            (report(0, Some(1_030)), s(30)),
            (report(0, Some(1_000)), s(1)),
            (report(0, Some(900)), s(1)),
            (report(0, Some(100_000)), s(60)),
        ];
        for (r, pause) in table {
            assert_eq!(r.pause(1_000), pause, "{r:?}");
        }
    }
}
