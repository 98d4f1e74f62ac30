//! The control plane's side of a fleet: the lease service gateways ask for
//! work ([`Fleet::lease`]), the reports that renew leases and record progress
//! ([`Fleet::report`]), content fetched by hash, and the gateways' view.
//!
//! Stateless over the store: every lease, epoch and recorded slot is in the
//! database, so two `volley control` processes on one PostgreSQL serve the
//! same fleet and either can die. What each process learns of the gateways'
//! delivery per site ([`assign::Estimates`]) is kept in memory, rebuilt from
//! the reports it receives.
//!
//! Layout: [`wire`] (the protocol's messages, shared with the gateway),
//! [`assign`] (which batches a gateway gets: a pure function).

pub mod assign;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use volley_conf::Assignment;
use volley_queue::holds::Rule;

use crate::plane::delivery_events::{attempt_event, final_events, Attempt};
use crate::plane::{Admission, Plane, PlaneError};
use crate::queue_ops::{OpFuture, PurgeCount, QueueOps};
use crate::store::batches::{DoneBatch, Progress};
use crate::store::events::BatchOutcomes;
use crate::store::leases::{EventsOf, Look};

/// Domains whose MX site is remembered (a batch of another is its own site).
const MAX_DOMAINS: usize = 1_000_000;
/// Suppression changes handed to a gateway per answer (it asks again for more).
const SUPPRESSION_UPDATES: i64 = 10_000;
use crate::store::now;
use crate::webhook::kinds::{Kinds, DELIVERY};
use assign::Estimates;
use wire::{
    Action, BatchKey, CampaignOrder, FleetState, GatewayView, Lease, LeaseRequest, LeaseResponse,
    Purge, ReportRequest, ReportResponse, SiteEstimate, SiteFigures, SuppressionUpdate,
};

/// How many times a lease request looks again at once when the batches it
/// chose were all claimed by others meanwhile.
const MAX_RETRIES: u32 = 5;

/// Longest long poll a gateway may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Candidates looked at per lease request, per batch wanted: room for the
/// assignment to skip the sites another gateway serves better.
const LOOK_AHEAD: i64 = 8;

/// The fleet's settings, from `[control]`.
#[derive(Debug, Clone, Copy)]
pub struct FleetSettings {
    /// `lease_ttl`.
    pub lease_ttl: Duration,
    /// `assignment`.
    pub assignment: Assignment,
}

/// The lease service over a plane.
pub struct Fleet {
    plane: Arc<Plane>,
    settings: FleetSettings,
    estimates: Mutex<Estimates>,
    /// The MX site (or route) of each domain, as the gateways report them:
    /// a batch's site is its first domain, its estimates are the MX site's.
    mx_of: Mutex<HashMap<String, String>>,
    /// The live gateways counted at a unix second, for the limits' share.
    share: PerSecond<u32>,
    /// The unix second each gateway's row was last written here, and a hash
    /// of the figures written.
    touched: Mutex<HashMap<String, (i64, u64)>>,
    /// The live gateways read at a unix second (for the choice).
    live_now: PerSecond<Vec<String>>,
    /// Each campaign's content hash.
    hashes: Mutex<HashMap<i64, String>>,
    /// Campaigns whose batch files are in the store (published before their
    /// batch rows, all at once: [`Store::published`]).
    published: Mutex<std::collections::HashSet<i64>>,
    /// The open campaigns cut into batches, as read at an instant.
    open: Mutex<Option<(Instant, Vec<i64>)>>,
    /// The unix second at which a look for run-out leases found none.
    none_run_out: Mutex<Option<i64>>,
    /// (unix second, id): the suppression log had nothing after `id` then.
    log_quiet: Mutex<Option<(i64, i64)>>,
    /// The holds read at a unix second.
    holds: PerSecond<Vec<Rule>>,
    /// The recent purges read at a unix second.
    purges: PerSecond<Vec<Purge>>,
    /// How long choosing and claiming a lease request's batches took.
    lease_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Reports refused for a stale epoch.
    stale_reports: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A value read from the store at a unix second, answered again within that
/// second instead of read again.
struct PerSecond<T>(Mutex<Option<(i64, T)>>);

impl<T> Default for PerSecond<T> {
    fn default() -> Self {
        PerSecond(Mutex::new(None))
    }
}

impl<T: Clone> PerSecond<T> {
    /// The value kept at `second`, if it was read then.
    fn at(&self, second: i64) -> Option<T> {
        match &*lock(&self.0) {
            Some((when, value)) if *when == second => Some(value.clone()),
            _ => None,
        }
    }

    /// Keeps `value`, read at `second`.
    fn keep(&self, second: i64, value: T) {
        *lock(&self.0) = Some((second, value));
    }

    /// Forgets the value: the next ask reads it again.
    fn forget(&self) {
        *lock(&self.0) = None;
    }
}

impl Fleet {
    /// The lease service of `plane`.
    pub fn new(plane: Arc<Plane>, settings: FleetSettings) -> Arc<Fleet> {
        Arc::new(Fleet {
            plane,
            settings,
            estimates: Mutex::default(),
            mx_of: Mutex::default(),
            share: PerSecond::default(),
            touched: Mutex::default(),
            live_now: PerSecond::default(),
            published: Mutex::default(),
            open: Mutex::default(),
            none_run_out: Mutex::default(),
            log_quiet: Mutex::default(),
            hashes: Mutex::default(),
            holds: PerSecond::default(),
            purges: PerSecond::default(),
            lease_seconds: prometheus_client::metrics::histogram::Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            stale_reports: Default::default(),
        })
    }

    /// Adds the lease service's metrics to `registry` (`/metrics`).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "lease_seconds",
            "Time to choose and claim the batches of a lease request that got some",
            self.lease_seconds.clone(),
        );
        registry.register(
            "stale_reports",
            "Batch reports refused for a stale lease epoch",
            self.stale_reports.clone(),
        );
    }

    /// The plane.
    pub fn plane(&self) -> &Arc<Plane> {
        &self.plane
    }

    fn ttl(&self) -> i64 {
        self.settings.lease_ttl.as_secs().max(1) as i64
    }

    /// The order for campaign `id` now.
    fn order(&self, id: i64, at: i64) -> CampaignOrder {
        let (action, mark) = match self.plane.admit(id as u64, at as u64) {
            Admission::Open(hold) if !hold.load(std::sync::atomic::Ordering::Relaxed) => {
                (Action::Send, 0)
            }
            Admission::Finalize(mark) => (Action::Finalize, mark),
            _ => (Action::Hold, 0),
        };
        CampaignOrder {
            campaign: id,
            action,
            mark,
        }
    }

    fn orders(&self, ids: impl IntoIterator<Item = i64>, at: i64) -> Vec<CampaignOrder> {
        let mut ids: Vec<i64> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(|id| self.order(id, at)).collect()
    }

    fn learn(&self, gateway: &str, figures: &[SiteFigures]) {
        let at = now();
        {
            let mut mx_of = lock(&self.mx_of);
            for f in figures.iter().filter(|f| !f.mx.is_empty()) {
                if mx_of.len() < MAX_DOMAINS || mx_of.contains_key(&f.site) {
                    mx_of.insert(f.site.clone(), f.mx.clone());
                }
            }
        }
        let mut estimates = lock(&self.estimates);
        for f in &assign::by_site(figures) {
            let key = (gateway.to_owned(), f.site.clone());
            let next = assign::learn(estimates.get(&key), f, at);
            estimates.insert(key, next);
        }
    }

    /// The open campaigns cut into batches (read from the store at most once
    /// a second, and after a wake-up).
    async fn partitioned(&self) -> Result<Vec<i64>, PlaneError> {
        if let Some((when, ids)) = &*lock(&self.open) {
            if when.elapsed() < Duration::from_secs(1) {
                return Ok(ids.clone());
            }
        }
        let read = Instant::now();
        let ids: Vec<i64> = self
            .plane
            .store()
            .open_campaigns()
            .await?
            .into_iter()
            .filter(|c| c.partitioned)
            .map(|c| c.id)
            .collect();
        *lock(&self.open) = Some((read, ids.clone()));
        Ok(ids)
    }

    /// Those of `campaigns` whose batch files are in the store: a campaign
    /// cut for the fleet publishes them all before its batch rows, so one
    /// look per campaign (remembered) stands for a look per batch.
    async fn published(&self, campaigns: Vec<i64>) -> Result<Vec<i64>, PlaneError> {
        let unknown: Vec<i64> = {
            let known = lock(&self.published);
            campaigns
                .iter()
                .copied()
                .filter(|c| !known.contains(c))
                .collect()
        };
        if !unknown.is_empty() {
            let found = self.plane.store().published(&unknown).await?;
            let mut known = lock(&self.published);
            if known.len() + found.len() > 100_000 {
                known.clear();
            }
            known.extend(found);
        }
        let known = lock(&self.published);
        Ok(campaigns
            .into_iter()
            .filter(|c| known.contains(c))
            .collect())
    }

    /// The gateways reported within the lease time.
    async fn live(&self, at: i64) -> Result<Vec<String>, PlaneError> {
        Ok(self.plane.store().live_gateways(at - self.ttl()).await?)
    }

    /// The live gateways for choosing among them (read at most once a
    /// second, and again when `me` is not among them yet). Not for the
    /// limits' share: a list read before the others' first contact would
    /// give each gateway too large a share.
    async fn live_for_choice(&self, me: &str, at: i64) -> Result<Vec<String>, PlaneError> {
        if let Some(names) = self.live_now.at(at) {
            if names.iter().any(|n| n == me) {
                return Ok(names);
            }
        }
        let names = self.live(at).await?;
        self.live_now.keep(at, names.clone());
        Ok(names)
    }

    /// Notes that `gateway` asked at `at`, with `delivered` more recipients
    /// delivered and its `figures` (JSON) when given. The row is written at
    /// most once a second per gateway and process while nothing in it
    /// changes (the store keeps seconds).
    async fn touch(
        &self,
        gateway: &str,
        at: i64,
        delivered: i64,
        figures: Option<&str>,
    ) -> Result<(), PlaneError> {
        let hash = figures.map(|f| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            f.hash(&mut h);
            h.finish()
        });
        {
            let mut touched = lock(&self.touched);
            let last = touched.get(gateway).copied();
            let same_figures = hash.is_none() || last.map(|l| Some(l.1)) == Some(hash);
            if last.map(|l| l.0) == Some(at) && delivered == 0 && same_figures {
                return Ok(());
            }
            if touched.len() >= 10_000 {
                touched.clear();
            }
            let kept = hash.or(last.map(|l| l.1)).unwrap_or(0);
            touched.insert(gateway.to_owned(), (at, kept));
        }
        self.plane
            .store()
            .touch_gateway(gateway, delivered, figures, at)
            .await?;
        Ok(())
    }

    /// Leases up to `want` due batches to the gateway, waiting up to
    /// `wait_ms` (bounded by [`MAX_WAIT`]) while none is due.
    pub async fn lease(&self, req: LeaseRequest) -> Result<LeaseResponse, PlaneError> {
        check_name(&req.gateway)?;
        let deadline = Instant::now() + Duration::from_millis(req.wait_ms).min(MAX_WAIT);
        self.learn(&req.gateway, &req.figures);
        let store = self.plane.store();
        self.touch(&req.gateway, now(), 0, None).await?;
        let mut retries = 0;
        loop {
            let at = now();
            let started = Instant::now();
            let mut leases = Vec::new();
            let mut raced = false;
            if req.want > 0 {
                // Held campaigns and batches of held domains are not leased
                // (the gateways hold the rest: sites, a batch's other domains).
                let holds = self.holds_now().await?;
                let sendable: Vec<i64> = self
                    .partitioned()
                    .await?
                    .into_iter()
                    .filter(|&id| self.order(id, at).action != Action::Hold)
                    .filter(|&id| !holds.contains(&Rule::Campaign(id as u64)))
                    .collect();
                let sendable = self.published(sendable).await?;
                let want = i64::from(req.want);
                let live = self.live_for_choice(&req.gateway, at).await?;
                let (mut chose, mut left, mut run_out) = (false, false, false);
                // Leases run out are looked for at most once a second while
                // there are none (they wait for the lease time anyway).
                let look_run_out = *lock(&self.none_run_out) != Some(at);
                let claimed = store
                    .lease(
                        &req.gateway,
                        Look {
                            campaigns: &sendable,
                            now: at,
                            ttl: self.ttl(),
                            at_most: want * LOOK_AHEAD,
                            run_out: look_run_out,
                        },
                        |candidates| {
                            run_out = candidates.iter().any(|c| c.run_out);
                            let eligible: Vec<usize> = (0..candidates.len())
                                .filter(|&i| {
                                    let site = candidates[i].site.to_ascii_lowercase();
                                    !holds.contains(&Rule::Domain(site))
                                })
                                .collect();
                            let mx_of = lock(&self.mx_of);
                            let sites: Vec<&str> = eligible
                                .iter()
                                .map(|&i| {
                                    let site = &candidates[i].site;
                                    mx_of.get(site).unwrap_or(site).as_str()
                                })
                                .collect();
                            let estimates = lock(&self.estimates);
                            let chosen: Vec<usize> = assign::choose(
                                self.settings.assignment,
                                &req.gateway,
                                &live,
                                &sites,
                                req.want as usize,
                                &estimates,
                                at,
                            )
                            .into_iter()
                            .filter_map(|i| eligible.get(i).copied())
                            .collect();
                            chose = !chosen.is_empty();
                            left =
                                chosen.len() == req.want as usize && eligible.len() > chosen.len();
                            chosen
                        },
                    )
                    .await?;
                // Others claimed them first (another process, or a lease
                // whose holder reported meanwhile): look again now rather
                // than wait.
                raced = chose && claimed.is_empty();
                if look_run_out && !run_out {
                    *lock(&self.none_run_out) = Some(at);
                }
                if left {
                    // The candidates this request locked and did not take
                    // are free again: a request that saw none while they
                    // were locked may be waiting. (Only after a full take,
                    // so requests that decline what they see never wake each
                    // other in a loop.)
                    self.plane.wake().notify_one();
                }
                let hashes = self
                    .content_hashes(claimed.iter().map(|c| c.campaign))
                    .await?;
                for c in claimed {
                    leases.push(Lease {
                        campaign: c.campaign,
                        batch: c.batch,
                        site: c.site,
                        epoch: c.epoch,
                        expires: c.expires,
                        content_hash: hashes.get(&c.campaign).cloned().unwrap_or_default(),
                        file: wire::encode(&c.file),
                        slots: c.slots.as_deref().map(wire::encode),
                    });
                }
            }
            if !leases.is_empty() || Instant::now() >= deadline {
                if !leases.is_empty() {
                    self.lease_seconds.observe(started.elapsed().as_secs_f64());
                    tracing::info!(gateway = %req.gateway, batches = leases.len(), "batches leased");
                }
                let campaigns = self.orders(leases.iter().map(|l| l.campaign), at);
                return Ok(LeaseResponse {
                    leases,
                    campaigns,
                    fleet: self.state(req.suppressions_after, at).await?,
                });
            }
            if raced && retries < MAX_RETRIES {
                retries += 1;
                tokio::task::yield_now().await;
                continue;
            }
            // Nothing due: wait for a change here, or poll (another process's).
            let wake = self.plane.wake();
            let left = deadline.saturating_duration_since(Instant::now());
            let woken =
                tokio::time::timeout(left.min(Duration::from_secs(1)), wake.notified()).await;
            if woken.is_ok() {
                // Perhaps a campaign was cut: read them again.
                *lock(&self.open) = None;
            }
            // A gateway waiting here is live (its wait may be as long as the
            // lease time): noted once a second.
            self.touch(&req.gateway, now(), 0, None).await?;
        }
    }

    /// The held batches of `req` (those `held` says are still its) that
    /// the gateway should give back ([`assign::give_back`]).
    async fn give_back(
        &self,
        req: &ReportRequest,
        held: &[bool],
        at: i64,
    ) -> Result<Vec<BatchKey>, PlaneError> {
        if self.settings.assignment == Assignment::RoundRobin || req.batches.is_empty() {
            return Ok(Vec::new());
        }
        let live = self.live_for_choice(&req.gateway, at).await?;
        if live.len() < 2 {
            return Ok(Vec::new());
        }
        let mx_of = lock(&self.mx_of);
        let estimates = lock(&self.estimates);
        let out: Vec<BatchKey> = req
            .batches
            .iter()
            .zip(held)
            .filter(|(b, ok)| {
                let site = mx_of.get(&b.site).unwrap_or(&b.site);
                **ok && !b.site.is_empty()
                    && assign::give_back(
                        self.settings.assignment,
                        &req.gateway,
                        &live,
                        site,
                        &estimates,
                    )
            })
            .map(|(b, _)| BatchKey {
                campaign: b.campaign,
                batch: b.batch,
            })
            .collect();
        if !out.is_empty() {
            tracing::info!(gateway = %req.gateway, batches = out.len(),
                "asked to give back batches of sites another gateway delivers to much faster");
        }
        Ok(out)
    }

    async fn content_hashes(
        &self,
        campaigns: impl Iterator<Item = i64>,
    ) -> Result<HashMap<i64, String>, PlaneError> {
        let mut out = HashMap::new();
        for id in campaigns {
            if out.contains_key(&id) {
                continue;
            }
            // A campaign's content never changes: read once per process.
            if let Some(hash) = lock(&self.hashes).get(&id) {
                out.insert(id, hash.clone());
                continue;
            }
            if let Some(c) = self.plane.store().campaign(id).await? {
                let mut hashes = lock(&self.hashes);
                if hashes.len() >= 10_000 {
                    hashes.clear();
                }
                hashes.insert(id, c.content_hash.clone());
                out.insert(id, c.content_hash);
            }
        }
        Ok(out)
    }

    /// Records a gateway's report: slots and progress of the batches it still
    /// holds (renewing their leases), the batches it finished; answers the
    /// stale ones and the campaigns' orders.
    pub async fn report(&self, req: ReportRequest) -> Result<ReportResponse, PlaneError> {
        check_name(&req.gateway)?;
        let at = now();
        let store = self.plane.store();
        // What its listener suppressed is the fleet's at once.
        store
            .add_suppression_changes(&req.suppressed, &req.gateway)
            .await?;
        self.learn(&req.gateway, &req.figures);
        let figures = {
            let estimates = lock(&self.estimates);
            let mine: Vec<&SiteEstimate> = estimates
                .iter()
                .filter(|((g, _), _)| *g == req.gateway)
                .map(|(_, e)| e)
                .collect();
            serde_json::to_string(&mine).unwrap_or_default()
        };
        self.touch(&req.gateway, at, req.delivered.max(0), Some(&figures))
            .await?;
        let mut rows = Vec::with_capacity(req.batches.len());
        let mut renewals = Vec::new();
        let mut progress = Vec::new();
        let wanted = self.plane.wanted_events();
        let mut events = Vec::with_capacity(req.batches.len());
        for b in &req.batches {
            // No slots: unchanged since the last report, only renewed.
            if b.slots.is_empty() {
                renewals.push((b.campaign, b.batch, b.epoch));
                continue;
            }
            let slots = wire::decode(&b.slots).map_err(|e| {
                PlaneError::BadRequest(format!("batch {}/{}: slots: {e}", b.campaign, b.batch))
            })?;
            rows.push((b.campaign, b.batch, b.epoch, slots));
            events.push(attempt_events(b, wanted, &req.gateway));
            for (domain, counts) in &b.domains {
                progress.push(Progress {
                    campaign: b.campaign,
                    batch: b.batch,
                    domain: domain.clone(),
                    counts: *counts,
                });
            }
        }
        let reported = store
            .report(&req.gateway, &rows, &progress, &events, at, self.ttl())
            .await?;
        let renewed = store.renew(&req.gateway, &renewals, at, self.ttl()).await?;
        // Whether each batch of the request is still the gateway's, in order.
        let (mut reported, mut renewed) = (reported.into_iter(), renewed.into_iter());
        let held: Vec<bool> = req
            .batches
            .iter()
            .map(|b| {
                let next = if b.slots.is_empty() {
                    renewed.next()
                } else {
                    reported.next()
                };
                next.unwrap_or(false)
            })
            .collect();
        if events.iter().any(|e| !e.events.is_empty()) {
            self.plane.outbox().added.notify_waiters();
        }
        let mut stale: Vec<BatchKey> = req
            .batches
            .iter()
            .zip(&held)
            .filter(|(_, ok)| !**ok)
            .map(|(b, _)| BatchKey {
                campaign: b.campaign,
                batch: b.batch,
            })
            .collect();
        let done: Vec<(DoneBatch, i64)> = req
            .done
            .iter()
            .map(|d| {
                (
                    DoneBatch {
                        campaign: d.campaign,
                        batch: d.batch,
                        domains: d.domains.clone(),
                        recipients: d.recipients.clone(),
                    },
                    d.epoch,
                )
            })
            .collect();
        let wanted = self.plane.wanted_events();
        let events_of =
            |accepted: &[DoneBatch]| final_events(accepted, wanted, &req.gateway, &|_, _| false);
        let completed = store
            .complete_leased(
                &req.gateway,
                &done,
                wanted.any_delivery().then_some(&events_of as &EventsOf<'_>),
            )
            .await?;
        if wanted.any_delivery() && completed.iter().any(|ok| *ok) {
            self.plane.outbox().added.notify_waiters();
        }
        stale.extend(
            req.done
                .iter()
                .zip(&completed)
                .filter(|(_, ok)| !**ok)
                .map(|(d, _)| BatchKey {
                    campaign: d.campaign,
                    batch: d.batch,
                }),
        );
        if !stale.is_empty() {
            self.stale_reports.inc_by(stale.len() as u64);
            tracing::warn!(gateway = %req.gateway, stale = stale.len(), "report on batches no longer the gateway's refused");
        }
        if completed.iter().any(|ok| *ok) {
            // A campaign may be complete now.
            self.plane.wake().notify_one();
        }
        let campaigns = self.orders(
            req.batches
                .iter()
                .map(|b| b.campaign)
                .chain(req.done.iter().map(|d| d.campaign)),
            at,
        );
        let give_back = self.give_back(&req, &held, at).await?;
        Ok(ReportResponse {
            stale,
            give_back,
            campaigns,
            fleet: self.state(req.suppressions_after, at).await?,
        })
    }

    /// What every answer tells a gateway at `at` (suppression changes after
    /// its `suppressions_after`).
    async fn state(&self, suppressions_after: i64, at: i64) -> Result<FleetState, PlaneError> {
        Ok(FleetState {
            ttl_secs: self.ttl() as u64,
            events: self.delivery_events(),
            suppressions: self.suppression_updates(suppressions_after).await?,
            limit_share: self.limit_share(at).await?,
            holds: self.holds_now().await?,
            purges: self.purges_now().await?,
        })
    }

    /// The purges that may still have something to do (read from the store
    /// at most once a second): a gateway carries each out on the batches it
    /// holds, and on each batch it leases afterwards.
    async fn purges_now(&self) -> Result<Vec<Purge>, PlaneError> {
        let at = now();
        if let Some(list) = self.purges.at(at) {
            return Ok(list);
        }
        let list: Vec<Purge> = self
            .plane
            .store()
            .live_purges()
            .await?
            .into_iter()
            .map(|o| Purge {
                id: o.id,
                kind: o.rule.kind().to_owned(),
                value: o.rule.value(),
                upto: o.upto,
            })
            .collect();
        self.purges.keep(at, list.clone());
        Ok(list)
    }

    /// The fleet's holds (read from the store at most once a second).
    async fn holds_now(&self) -> Result<Vec<Rule>, PlaneError> {
        let at = now();
        if let Some(rules) = self.holds.at(at) {
            return Ok(rules);
        }
        let rules = self.plane.store().holds().await?;
        self.holds.keep(at, rules.clone());
        Ok(rules)
    }

    /// How many live gateways share the sites' limits now (read at most once
    /// a second).
    async fn limit_share(&self, at: i64) -> Result<u32, PlaneError> {
        if let Some(n) = self.share.at(at) {
            return Ok(n);
        }
        let n = u32::try_from(self.live(at).await?.len())
            .unwrap_or(u32::MAX)
            .max(1);
        self.share.keep(at, n);
        Ok(n)
    }

    /// The fleet's suppression changes after row `after`, for a gateway.
    ///
    /// A log found to have nothing after some id is not read again within
    /// that second for gateways at or past it: every answer carries these,
    /// and a change reaches each gateway within a second or two either way
    /// (the fleet's promise is 5 s).
    async fn suppression_updates(&self, after: i64) -> Result<Vec<SuppressionUpdate>, PlaneError> {
        let at = now();
        if let Some((when, quiet_after)) = *lock(&self.log_quiet) {
            if when == at && after >= quiet_after {
                return Ok(Vec::new());
            }
        }
        let changes: Vec<SuppressionUpdate> = self
            .plane
            .store()
            .suppression_changes_after(after, SUPPRESSION_UPDATES)
            .await?
            .into_iter()
            .map(|(id, change)| SuppressionUpdate { id, change })
            .collect();
        if changes.is_empty() {
            *lock(&self.log_quiet) = Some((at, after));
        }
        Ok(changes)
    }

    /// The delivery event types gateways report attempts of.
    fn delivery_events(&self) -> Vec<String> {
        let wanted = self.plane.wanted_events();
        DELIVERY
            .iter()
            .filter(|t| wanted.has(t))
            .map(|t| (*t).to_owned())
            .collect()
    }

    /// Marks the leases a restarted gateway held abandoned.
    pub async fn abandon(&self, gateway: &str) -> Result<(), PlaneError> {
        check_name(gateway)?;
        let n = self.plane.store().abandon(gateway).await?;
        if n > 0 {
            tracing::warn!(
                gateway,
                batches = n,
                "a restarted gateway abandoned its leases"
            );
            self.plane.wake().notify_one();
        }
        Ok(())
    }

    /// Gives a stopping gateway's leases back.
    pub async fn release(
        &self,
        gateway: &str,
        batches: &[(i64, i64, i64)],
    ) -> Result<(), PlaneError> {
        check_name(gateway)?;
        self.plane.store().release(gateway, batches).await?;
        self.plane.wake().notify_one();
        Ok(())
    }

    /// A content item by hash (hex), as stored at submission.
    pub async fn content(&self, hash: &str) -> Result<Vec<u8>, PlaneError> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PlaneError::BadRequest(format!(
                "{hash:?} is not a content hash (64 hex digits)"
            )));
        }
        self.plane
            .store()
            .content(&hash.to_ascii_lowercase())
            .await?
            .ok_or_else(|| PlaneError::NotFound(format!("there is no content {hash}")))
    }

    /// Every gateway seen: live or lost, leases, deliveries, learned figures.
    pub async fn gateways(&self) -> Result<Vec<GatewayView>, PlaneError> {
        let at = now();
        let ttl = self.ttl();
        let estimates = lock(&self.estimates).clone();
        Ok(self
            .plane
            .store()
            .gateways(at)
            .await?
            .into_iter()
            .map(|g| {
                let mut sites: Vec<SiteEstimate> = estimates
                    .iter()
                    .filter(|((name, _), _)| *name == g.name)
                    .map(|(_, e)| e.clone())
                    .collect();
                if sites.is_empty() {
                    // Learned by another control-plane process.
                    sites = serde_json::from_str(&g.figures).unwrap_or_default();
                }
                sites.sort_by(|a, b| a.site.cmp(&b.site));
                GatewayView {
                    state: if g.last_seen + ttl >= at {
                        "live"
                    } else {
                        "lost"
                    }
                    .to_owned(),
                    name: g.name,
                    leases: g.leases,
                    delivered: g.delivered,
                    last_contact: g.last_seen,
                    sites,
                }
            })
            .collect())
    }
}

/// Refuses a gateway name that is not 1 to 64 letters, digits, `-`, `_`, `.`.
fn check_name(name: &str) -> Result<(), PlaneError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(PlaneError::BadRequest(format!(
            "{name:?} is not a gateway name: 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// The outbox events of the attempts a gateway reported on batch `b`.
fn attempt_events(b: &wire::BatchReport, wanted: Kinds, gateway: &str) -> BatchOutcomes {
    let mut out = BatchOutcomes {
        campaign: b.campaign,
        batch: b.batch,
        gateway: gateway.to_owned(),
        events: Vec::new(),
    };
    if !wanted.any_delivery() {
        return out;
    }
    out.events = b
        .attempts
        .iter()
        .filter_map(|a| {
            let state = match a.state.as_str() {
                "delivered" => volley_queue::State::Delivered,
                "deferred" => volley_queue::State::Deferred,
                "bounced" => volley_queue::State::Bounced,
                "expired" => volley_queue::State::Expired,
                _ => return None,
            };
            attempt_event(
                &Attempt {
                    index: a.index,
                    recipient: &a.recipient,
                    state,
                    code: a.code,
                    enhanced: &a.enhanced,
                    reply: &a.reply,
                    attempt: a.attempt,
                    next_attempt: a.next_attempt,
                    at: a.at,
                },
                wanted,
            )
        })
        .collect();
    out
}

/// A fleet's holds are the store's: every control plane serves them and
/// every gateway gets them with its answers. Purging is not done here.
impl QueueOps for Fleet {
    fn holds(&self) -> OpFuture<'_, Vec<Rule>> {
        Box::pin(async move { self.plane.store().holds().await.map_err(|e| e.to_string()) })
    }

    fn hold<'a>(&'a self, rule: &'a Rule, hold: bool) -> OpFuture<'a, bool> {
        Box::pin(async move {
            let changed = self
                .plane
                .store()
                .set_hold(rule, hold)
                .await
                .map_err(|e| e.to_string())?;
            // Answers from now on say so (and released batches lease again).
            self.holds.forget();
            self.plane.wake().notify_waiters();
            Ok(changed)
        })
    }

    fn purge<'a>(&'a self, rule: &'a Rule) -> Option<OpFuture<'a, PurgeCount>> {
        Some(Box::pin(async move {
            let order = self
                .plane
                .store()
                .add_purge(rule)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(purge = order.id, rule = %rule, upto = order.upto, "purge ordered");
            self.purges.forget();
            self.plane.wake().notify_waiters();
            Ok(PurgeCount {
                ordered: true,
                ..PurgeCount::default()
            })
        }))
    }
}
