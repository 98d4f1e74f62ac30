//! `volley gateway`: a delivery gateway of a fleet. It leases batches from
//! the control planes of `[gateway] control` (tried in turn), delivers them
//! with the engine from its own spool, reports each held batch's slots every
//! [`REPORT_EVERY`] (which renews the leases) and runs its `[[listen]]`
//! listeners as `volley run` does.
//!
//! - **Leases** ([`held`]): asked for when there is free capacity (`[gateway]
//!   max_batches`), long-polled so that an idle gateway makes about one
//!   request every [`LEASE_WAIT`].
//! - **Fencing**: a batch whose lease this gateway could not renew in time is
//!   held (nothing new is sent from it) until a report is accepted again; a
//!   `409` drops it.
//! - **Outages**: final reports wait in `SPOOL/fleet/done/` until a control
//!   plane answers; nothing finished is lost.
//!
//! Layout: [`client`] (HTTP to the control planes), [`held`] (the leases),
//! [`feed`] (the engine's feed).

mod client;
mod feed;
mod held;
mod meter;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::sync::Notify;
use volley_conf::Config;
use volley_control::fleet::wire::{
    self, BatchReport, DoneReport, FleetState, Lease, LeaseRequest, Purge, ReportRequest,
    SiteFigures, SuppressionUpdate,
};
use volley_control::plane::progress::domain_counts;
use volley_engine::host::unix_now;
use volley_engine::suppress::Suppressions;
use volley_merge::TemplateSource;
use volley_queue::{MappedBatch, QueueError, Slot, Spool, State};

use crate::stop::{run_round, Round, StopSignals};
use crate::suppressions::{bounce_limits, StoreSuppressions};
use client::{Answer, ControlClient};
use held::{Held, Key, Leases};

/// How often held batches are reported at least (each report renews their
/// leases).
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// How long a batch being given back is held before its slots are taken as
/// final: a transaction begun just before the hold shows in flight by then.
const GIVE_BACK_AFTER: Duration = Duration::from_secs(1);
/// How long a batch being given back may take to drain before it is kept.
const GIVE_BACK_LIMIT: Duration = Duration::from_secs(60);
/// How soon after the engine recorded outcomes they are reported, at most
/// (the engine's group commits ask for a report): what a killed gateway
/// delivered without the control plane knowing is what it delivered within
/// about this long.
const REPORT_SOON: Duration = Duration::from_millis(250);
/// How often the gateway checks its leases' ends.
const LEASE_CLOCK: Duration = Duration::from_millis(200);
/// How long a lease request may wait for work.
const LEASE_WAIT: Duration = Duration::from_secs(5);

/// Arguments of `volley gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Spool directory (default: `[spool] dir`).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Delivery log (default: `[delivery] log`).
    #[arg(long, value_name = "FILE.jsonl")]
    pub log: Option<PathBuf>,
}

/// What the gateway's tasks share.
struct Gateway {
    name: String,
    spool: Spool,
    client: ControlClient,
    leases: Arc<Leases>,
    max_batches: usize,
    wake: Arc<Notify>,
    ttl: std::sync::Mutex<Duration>,
    reporting: tokio::sync::Mutex<()>,
    /// The gateway's suppression list (checked before each send).
    suppressions: Arc<volley_control::suppress::SharedList>,
    /// The last change of the fleet's suppression log applied to it, and
    /// where that place is kept.
    suppressed_through: std::sync::Mutex<i64>,
    cursor_path: PathBuf,
    /// The engine's divisor of site limits ([`volley_engine::Engine::limit_share`]).
    limit_share: Arc<std::sync::atomic::AtomicU32>,
    /// The holds the engine obeys: the fleet's, from each answer.
    holds: Arc<volley_queue::holds::Holds>,
    /// The fleet's purges that may still have something to do, and those
    /// already carried out on every batch held (a batch leased later has
    /// them all carried out as it is installed).
    purges: std::sync::Mutex<Vec<Purge>>,
    purges_done: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// What purges need: sites of domains, the delivery log.
    sites: volley_engine::delivery::Sites,
    log: Arc<volley_engine::log::DeliveryLog>,
    /// Every site's busy time in the engine, reported per batch site.
    timings: Arc<volley_engine::metrics::Timings>,
    /// The gateway's rate, batch size and what it last reported of each
    /// site's time.
    meter: std::sync::Mutex<meter::Meter>,
}

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gateway {
    /// Applies the fleet's suppression changes an answer carried (in
    /// order; the place in the log kept).
    async fn apply_suppressions(&self, updates: Vec<SuppressionUpdate>) {
        let Some(last) = updates.last().map(|u| u.id) else {
            return;
        };
        let list = Arc::clone(&self.suppressions);
        let changes: Vec<_> = updates.into_iter().map(|u| u.change).collect();
        let applied =
            tokio::task::spawn_blocking(move || list.write(|s| s.apply_changes(&changes))).await;
        match applied {
            Ok(Ok(n)) => {
                if n > 0 {
                    tracing::info!(changes = n, "suppressions from the fleet applied");
                }
                *self
                    .suppressed_through
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = last;
                if let Err(err) = volley_control::suppress::write_cursor(&self.cursor_path, last) {
                    tracing::warn!(%err, "cannot keep the suppression log's place");
                }
            }
            Ok(Err(err)) => tracing::warn!(%err, "cannot apply the fleet's suppressions"),
            Err(err) => tracing::warn!(%err, "cannot apply the fleet's suppressions"),
        }
    }

    /// How many live gateways share the sites' limits (0: an older control
    /// plane that does not say; kept as it was).
    /// Follows what an answer says of the fleet: the lease time (answered),
    /// the event types to report, the share of site limits, the holds and
    /// purges, the suppression changes.
    async fn follow(&self, fleet: FleetState) -> Duration {
        let ttl = Duration::from_secs(fleet.ttl_secs.max(1));
        *locked(&self.ttl) = ttl;
        self.leases.set_events(&fleet.events);
        self.set_limit_share(fleet.limit_share);
        self.set_holds(fleet.holds, fleet.purges).await;
        self.apply_suppressions(fleet.suppressions).await;
        ttl
    }

    /// Obeys the fleet's holds (and holds what its purges cover) from the
    /// next transaction, then carries out the purges not carried out yet on
    /// the batches held; a change wakes the round loop (released recipients
    /// are due now; purged batches may be complete).
    async fn set_holds(&self, rules: Vec<volley_queue::holds::Rule>, purges: Vec<Purge>) {
        let count = rules.len();
        let purging: Vec<(volley_queue::holds::Rule, u64)> = purges
            .iter()
            .filter_map(|p| Some((p.rule()?, p.upto.max(0) as u64)))
            .collect();
        let changed = self.holds.replace(rules, purging);
        if changed {
            tracing::info!(
                holds = count,
                purges = purges.len(),
                "the fleet's holds changed"
            );
        }
        let new: Vec<Purge> = {
            let done = locked(&self.purges_done);
            purges
                .iter()
                .filter(|p| !done.contains(&p.id))
                .cloned()
                .collect()
        };
        *locked(&self.purges) = purges;
        let mut purged = 0;
        for order in &new {
            let paths: Vec<PathBuf> = self
                .leases
                .with(|held| held.values().map(|h| h.path.clone()).collect());
            for path in paths {
                purged += self.purge_file(&path, std::slice::from_ref(order)).await;
            }
            locked(&self.purges_done).insert(order.id);
            tracing::info!(purge = order.id, kind = %order.kind, value = %order.value, "purge carried out on the batches held");
        }
        if changed || purged > 0 {
            self.wake.notify_one();
        }
    }

    /// Carries out `orders` on one batch file; answers how many recipients
    /// it finalised.
    async fn purge_file(&self, path: &Path, orders: &[Purge]) -> u64 {
        let Ok(map) = MappedBatch::open(path) else {
            return 0;
        };
        let mut cache = volley_engine::delivery::purge::SiteCache::default();
        let mut purged = 0;
        for order in orders {
            let Some(rule) = order.rule() else { continue };
            let upto = Some(order.upto.max(0) as u64);
            match volley_engine::delivery::purge::purge_batch(
                &map,
                &rule,
                upto,
                &self.sites,
                &mut cache,
                &self.log,
            )
            .await
            {
                Ok(n) => purged += n,
                Err(err) => tracing::warn!(%err, path = %path.display(), "cannot purge a batch"),
            }
        }
        if purged > 0 {
            let _ = self.log.flush();
        }
        purged
    }

    fn set_limit_share(&self, n: u32) {
        if n > 0 {
            let before = self
                .limit_share
                .swap(n, std::sync::atomic::Ordering::Relaxed);
            if before != n {
                tracing::info!(gateways = n, "site limits shared by this many gateways");
            }
        }
    }

    /// The place in the fleet's suppression log.
    fn suppressions_after(&self) -> i64 {
        *self
            .suppressed_through
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs `volley gateway` until SIGTERM or SIGINT.
pub fn run(args: GatewayArgs, config_path: Option<&Path>) -> Result<String> {
    let mut config = Config::discover(config_path)?;
    if let Some(dir) = &args.spool {
        config.spool.dir = dir.clone();
    }
    let Some(token_file) = &config.gateway.token_file else {
        bail!("volley gateway needs [gateway] token_file (a gateway token: volley token create --role gateway)");
    };
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("cannot read [gateway] token_file {}", token_file.display()))?
        .trim()
        .to_owned();
    let name = crate::control::node_name(&config);
    volley_engine::host::raise_open_files(volley_engine::host::files_needed(&config, true))?;
    let spool = Spool::open(&config.spool.dir)?;
    spool.remove_uncommitted()?;
    let suppressions =
        Arc::new(StoreSuppressions::open(spool.root())?.with_limits(bounce_limits(&config.bounce)));
    // The links are checked by the control planes' web endpoints: the same
    // [web] base_url and secret_file as theirs.
    let web = crate::web::web(&config, spool.root())?;
    let source = Arc::new(crate::run::with_web_links(
        TemplateSource::new(spool.content_dir()),
        web.as_ref(),
    ));
    let leases = Arc::new(Leases::default());
    let progress = Arc::new(Notify::new());
    let feed = Arc::new(feed::LeaseFeed::new(
        spool.try_clone()?,
        Arc::clone(&leases),
        Arc::clone(&progress),
    ));
    let listen_config = config.clone();
    let grace = config.delivery.stop_timeout;
    let root = spool.root().to_owned();
    let listen = !config.listen.is_empty();
    let engine = crate::run::spool_engine(
        config,
        spool.try_clone()?,
        feed,
        source,
        args.log.as_deref(),
        Arc::clone(&suppressions) as Arc<dyn Suppressions>,
    )?;
    let gateway = Arc::new(Gateway {
        name: name.clone(),
        spool: spool.try_clone()?,
        client: ControlClient::new(listen_config.gateway.control.clone(), token)?,
        leases: Arc::clone(&leases),
        max_batches: listen_config.gateway.max_batches as usize,
        wake: Arc::new(Notify::new()),
        ttl: std::sync::Mutex::new(listen_config.control.lease_ttl),
        reporting: tokio::sync::Mutex::new(()),
        suppressions: suppressions.shared(),
        suppressed_through: std::sync::Mutex::new(volley_control::suppress::read_cursor(
            &volley_control::suppress::cursor_path(spool.root()),
        )),
        cursor_path: volley_control::suppress::cursor_path(spool.root()),
        limit_share: engine.limit_share(),
        holds: engine.holds(),
        purges: std::sync::Mutex::default(),
        purges_done: std::sync::Mutex::default(),
        sites: engine.sites(),
        log: engine.delivery_log(),
        timings: engine.timings(),
        meter: std::sync::Mutex::default(),
    });
    let feedback = crate::run::feedback(&root, &engine, suppressions, &listen_config, None);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut signals = StopSignals::new()?;
        let listener = if listen {
            Some(
                crate::run::start_listener(
                    &listen_config,
                    spool.try_clone()?,
                    Arc::clone(&gateway.wake),
                    feedback,
                )
                .await?,
            )
        } else {
            None
        };
        let metrics_server = match listen_config.gateway.metrics_listen {
            Some(addr) => Some(start_metrics(addr, &engine, &leases).await?),
            None => None,
        };
        // Leases of an earlier run are not held any more (their files went):
        // they go to whoever asks first, this gateway included.
        abandon_earlier(&gateway, &mut signals).await?;
        let leasing = tokio::spawn(lease_loop(Arc::clone(&gateway)));
        let reporting = tokio::spawn(report_loop(Arc::clone(&gateway), progress));
        let clock = tokio::spawn(lease_clock(Arc::clone(&gateway)));
        tracing::info!(gateway = %name, spool = %root.display(), "volley gateway: delivering");
        loop {
            let report = match run_round(&engine, engine.run_due(), &mut signals, grace).await? {
                Round::Done(report) => report,
                Round::Stopped(_) => break,
            };
            tokio::select! {
                _ = tokio::time::sleep(report.pause(unix_now()).min(Duration::from_secs(1))) => {}
                _ = gateway.wake.notified() => {}
                () = signals.recv() => break,
            }
        }
        leasing.abort();
        reporting.abort();
        clock.abort();
        // What is finished is reported; what is not goes back at once.
        report_once(&gateway).await;
        let back: Vec<(i64, i64, i64)> = leases.with(|held| {
            held.iter()
                .map(|((c, b), h)| (*c, *b, h.epoch))
                .collect()
        });
        if !back.is_empty() {
            match gateway.client.release(&name, &back).await {
                Ok(()) => tracing::info!(batches = back.len(), "leases given back"),
                Err(err) => tracing::warn!(err = %format!("{err:#}"), "cannot give leases back: they expire"),
            }
        }
        for (stop, task) in listener.into_iter().chain(metrics_server) {
            let _ = stop.send(());
            let _ = task.await;
        }
        tracing::info!("volley gateway: stopped");
        anyhow::Ok(String::new())
    })
}

/// Serves `GET /metrics` on `addr` (`[gateway] metrics_listen`): the
/// engine's metrics and the leases held, until the returned sender is used.
async fn start_metrics(
    addr: std::net::SocketAddr,
    engine: &volley_engine::Engine,
    leases: &Arc<Leases>,
) -> Result<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ([gateway] metrics_listen)"))?;
    let metrics = volley_control::metrics::Metrics::new(None, |registry| {
        engine.register_metrics(registry);
        registry.register_collector(Box::new(LeasesHeld(Arc::clone(leases))));
    });
    tracing::info!(%addr, "volley gateway: serving /metrics");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        let router = volley_control::metrics::router(metrics);
        if let Err(err) = volley_control::api::serve(listener, router, shutdown).await {
            tracing::error!(%err, "the metrics server failed");
        }
    });
    Ok((stop, task))
}

/// `volley_gateway_leases_held`: the leases this gateway holds, read when
/// scraped.
#[derive(Debug)]
struct LeasesHeld(Arc<Leases>);

impl prometheus_client::collector::Collector for LeasesHeld {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        let gauge = prometheus_client::metrics::gauge::ConstGauge::new(self.0.len() as i64);
        let metric = encoder.encode_descriptor(
            "gateway_leases_held",
            "Batches this gateway holds a lease on",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// Removes the leased batches an earlier run left in the spool and tells a
/// control plane their leases are abandoned, retrying until one answers (or
/// a stop signal).
async fn abandon_earlier(gw: &Gateway, signals: &mut StopSignals) -> Result<()> {
    let mut removed = 0;
    for path in gw.spool.active_files()? {
        let Ok(map) = MappedBatch::open(&path) else {
            continue;
        };
        if !volley_queue::ids::is_inbound_id(map.header().campaign_id) {
            drop(map);
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            batches = removed,
            "leased batches of an earlier run removed"
        );
    }
    // Batches an earlier run finished are reported first.
    report_once(gw).await;
    loop {
        match gw.client.abandon_all(&gw.name).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::warn!(err = %format!("{err:#}"), "no control plane answers yet");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = signals.recv() => bail!("stopped before a control plane answered"),
                }
            }
        }
    }
}

/// Asks for work while there is room, long-polling; installs what comes.
async fn lease_loop(gw: Arc<Gateway>) {
    loop {
        let held = gw.leases.len();
        let free = gw.max_batches.saturating_sub(held);
        let want = locked(&gw.meter).batches_wanted(free, held);
        if want == 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let req = LeaseRequest {
            gateway: gw.name.clone(),
            want: want as u32,
            wait_ms: LEASE_WAIT.as_millis() as u64,
            figures: Vec::new(),
            suppressions_after: gw.suppressions_after(),
        };
        let sent = Instant::now();
        match gw.client.lease(&req).await {
            Ok(answer) => {
                gw.leases.set_orders(&answer.campaigns);
                let ttl = gw.follow(answer.fleet).await;
                let mut installed = 0;
                for lease in answer.leases {
                    let key = (lease.campaign, lease.batch);
                    match install(&gw, &lease, sent, ttl).await {
                        Ok(()) => installed += 1,
                        Err(err) => {
                            tracing::warn!(campaign = key.0, batch = key.1, err = %format!("{err:#}"),
                                "cannot install a leased batch: giving it back");
                            let _ = gw
                                .client
                                .release(&gw.name, &[(key.0, key.1, lease.epoch)])
                                .await;
                        }
                    }
                }
                if installed > 0 {
                    // Reported at once: a batch is sent from only once the
                    // control plane has its first report.
                    report_once(&gw).await;
                    gw.wake.notify_one();
                }
            }
            Err(err) => {
                tracing::warn!(err = %format!("{err:#}"), "no control plane answers a lease request");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Puts a leased batch into the spool: its content (fetched by hash if
/// missing, checked against the hash), its file, its recorded slots.
async fn install(gw: &Gateway, lease: &Lease, sent: Instant, ttl: Duration) -> Result<()> {
    let content = gw
        .spool
        .content_dir()
        .join(format!("{}.json", lease.content_hash));
    if !content.exists() {
        let bytes = gw.client.content(&lease.content_hash).await?;
        let hash = volley_merge::hash_hex(&volley_merge::sha256(&bytes));
        if hash != lease.content_hash {
            bail!("content {} arrived with hash {hash}", lease.content_hash);
        }
        std::fs::create_dir_all(gw.spool.content_dir())
            .with_context(|| format!("cannot make {}", gw.spool.content_dir().display()))?;
        gw.spool.write_atomic(&content, &bytes)?;
    }
    let file = wire::decode(&lease.file).map_err(anyhow::Error::msg)?;
    let slots = lease
        .slots
        .as_deref()
        .map(wire::decode)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let name = Spool::file_name(lease.campaign as u64, lease.batch as u64);
    let path = gw.spool.active_dir().join(&name);
    gw.leases.undrop(&path);
    // A copy from an earlier lease of this batch is out of date.
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(gw.spool.done_dir().join(&name));
    let path = gw.spool.write_batch(&file)?;
    if let Some(slots) = slots {
        let map = MappedBatch::open(&path)?;
        for (i, raw) in slots.chunks_exact(8).enumerate() {
            let raw = u64::from_le_bytes(raw.try_into().unwrap_or_default());
            if let Ok(slot) = Slot::decode(raw) {
                map.set_slot(i, slot)?;
            }
        }
        // In flight at the previous holder (counted resent): pending here,
        // which this gateway has not sent.
        map.reset_in_flight()?;
        map.sync()?;
    }
    // The fleet's purges, before the engine can see the batch.
    let purges = locked(&gw.purges).clone();
    if !purges.is_empty() {
        let n = gw.purge_file(&path, &purges).await;
        if n > 0 {
            tracing::info!(
                campaign = lease.campaign,
                batch = lease.batch,
                recipients = n,
                "purged as leased"
            );
        }
    }
    let (delivered, attempts, recipients) = tallies(&path).unwrap_or_default();
    locked(&gw.meter).installed(recipients);
    gw.leases.insert(
        (lease.campaign, lease.batch),
        Held {
            epoch: lease.epoch,
            site: lease.site.clone(),
            path,
            until: sent + ttl.saturating_sub(held::MARGIN),
            hold: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            replies: HashMap::new(),
            attempts: Vec::new(),
            reported: (delivered, attempts),
            started: false,
            giving_back: None,
            accepted_slots: None,
        },
    );
    Ok(())
}

/// Adds to each batch site's figures the busy time of the engine's site its
/// mail goes through (the MX hosts or route, looked up in the engine's
/// resolver cache) since the last report.
async fn timed(gw: &Gateway, figures: HashMap<String, SiteFigures>) -> Vec<SiteFigures> {
    let figures: Vec<SiteFigures> = figures.into_values().collect();
    let mut keys = Vec::with_capacity(figures.len());
    for f in &figures {
        keys.push(gw.sites.site_of(&f.site).await);
    }
    let mut meter = locked(&gw.meter);
    let mut deltas: HashMap<String, (u64, f64)> = HashMap::new();
    figures
        .into_iter()
        .zip(keys)
        .map(|(mut f, key)| {
            if let Some(key) = key {
                let delta = match deltas.get(&key) {
                    Some(d) => *d,
                    None => {
                        let now = gw.timings.get(&key).unwrap_or((0, 0.0));
                        let d = meter.timing(&key, now);
                        deltas.insert(key.clone(), d);
                        d
                    }
                };
                (f.transactions, f.busy_seconds) = delta;
                f.mx = key;
            }
            f
        })
        .collect()
}

/// Delivered recipients, attempts made, and recipients, over a batch's slots.
fn tallies(path: &Path) -> Result<(u64, u64, usize), QueueError> {
    let map = MappedBatch::open(path)?;
    let mut out = (0, 0, map.len());
    for i in 0..map.len() {
        let slot = map.slot(i).unwrap_or(Slot::PENDING);
        if slot.state == State::Delivered {
            out.0 += 1;
        }
        out.1 += u64::from(slot.attempts);
    }
    Ok(out)
}

/// Reports every [`REPORT_EVERY`], and [`REPORT_SOON`] after the engine
/// recorded outcomes.
async fn report_loop(gw: Arc<Gateway>, progress: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => {}
            _ = progress.notified() => tokio::time::sleep(REPORT_SOON).await,
        }
        report_once(&gw).await;
    }
}

/// The gateway's own lease clock: holds the batches whose leases ran out,
/// whatever the reports are doing (one may hang on a network that lost
/// its packets).
async fn lease_clock(gw: Arc<Gateway>) {
    let mut expired_before = 0;
    loop {
        tokio::time::sleep(LEASE_CLOCK).await;
        let expired = gw.leases.refresh_holds();
        if expired > expired_before {
            tracing::warn!(
                batches = expired,
                "leases not renewed in time: sending nothing from them"
            );
        }
        expired_before = expired;
    }
}

/// One report: every held batch's slots, and the final reports waiting
/// (one at a time: the lease loop reports new batches at once).
async fn report_once(gw: &Gateway) {
    let _one = gw.reporting.lock().await;
    let done_dir = feed::done_dir(&gw.spool);
    let mut done_files: Vec<PathBuf> = std::fs::read_dir(&done_dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    done_files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    done_files.sort();
    done_files.truncate(200);
    let pending: Vec<feed::PendingDone> = done_files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    // Each site's figures cover the interval since the last report once,
    // however many of its batches are held.
    let interval = locked(&gw.meter).interval();
    let mut figures: HashMap<String, SiteFigures> = HashMap::new();
    let mut delivered_total = 0i64;
    let mut done: Vec<DoneReport> = Vec::with_capacity(pending.len());
    for p in pending {
        let delivered = p
            .report
            .recipients
            .iter()
            .filter(|r| r.status == "delivered")
            .count() as u64;
        let attempts: u64 = p.report.recipients.iter().map(|r| r.attempts as u64).sum();
        let new_delivered = delivered.saturating_sub(p.reported.0);
        delivered_total += new_delivered as i64;
        let f = figures
            .entry(p.site.clone())
            .or_insert_with(|| SiteFigures {
                site: p.site.clone(),
                ..SiteFigures::default()
            });
        f.delivered += new_delivered;
        f.failed += attempts
            .saturating_sub(p.reported.1)
            .saturating_sub(new_delivered);
        f.seconds = interval;
        done.push(p.report);
    }
    let mut drained: Vec<(i64, i64, i64)> = Vec::new();
    let mut sent_slots: Vec<(Key, Vec<u8>)> = Vec::new();
    let mut undrained = false;
    let batches: Vec<BatchReport> = gw.leases.with(|held| {
        let mut out = Vec::with_capacity(held.len());
        for ((campaign, batch), h) in held.iter_mut() {
            let map = match MappedBatch::open(&h.path) {
                Ok(map) => map,
                Err(err) => {
                    tracing::warn!(campaign, batch, %err, "a held batch cannot be read: not reported");
                    continue;
                }
            };
            let mut slots = Vec::with_capacity(map.len() * 8);
            let (mut delivered, mut attempts) = (0u64, 0u64);
            let mut in_flight = false;
            for i in 0..map.len() {
                let slot = map.slot(i).unwrap_or(Slot::PENDING);
                slots.extend_from_slice(&slot.encode().to_le_bytes());
                if slot.state == State::Delivered {
                    delivered += 1;
                }
                in_flight |= slot.state == State::InFlight;
                attempts += u64::from(slot.attempts);
            }
            // Held long enough for any transaction begun before the hold
            // to show in flight, and none is: these slots are its last.
            if let Some(since) = h.giving_back {
                if !in_flight && since.elapsed() >= GIVE_BACK_AFTER {
                    drained.push((*campaign, *batch, h.epoch));
                } else if since.elapsed() >= GIVE_BACK_LIMIT {
                    // Never drained (a reply that never comes): kept and sent
                    // from again rather than held for ever.
                    h.giving_back = None;
                    undrained = true;
                }
            }
            let view = map.view();
            let new_delivered = delivered.saturating_sub(h.reported.0);
            let new_attempts = attempts.saturating_sub(h.reported.1);
            h.reported = (delivered, attempts);
            delivered_total += new_delivered as i64;
            let f = figures
                .entry(h.site.clone())
                .or_insert_with(|| SiteFigures {
                    site: h.site.clone(),
                    ..SiteFigures::default()
                });
            f.delivered += new_delivered;
            f.failed += new_attempts.saturating_sub(new_delivered);
            f.seconds = interval;
            // Nothing new since the last accepted report: only renewed
            // (no slots, no counts; no attempts are waiting).
            let changed =
                !h.attempts.is_empty() || h.accepted_slots.as_deref() != Some(&slots[..]);
            out.push(BatchReport {
                campaign: *campaign,
                batch: *batch,
                epoch: h.epoch,
                slots: if changed { wire::encode(&slots) } else { String::new() },
                domains: if changed {
                    domain_counts(&view, |i| map.slot(i).ok())
                } else {
                    Vec::new()
                },
                site: h.site.clone(),
                // Taken off once a report with them is accepted.
                attempts: h.attempts.clone(),
            });
            if changed {
                sent_slots.push(((*campaign, *batch), slots));
            }
        }
        out
    });
    if undrained {
        gw.leases.refresh_holds();
        tracing::warn!("batches to give back did not drain in time: sending from them again");
    }
    // What the listener suppressed (bounces, complaints, unsubscribe
    // requests) goes to the fleet with the report.
    let suppressed = gw.suppressions.write(|s| s.take_changes());
    if batches.is_empty() && done.is_empty() && suppressed.is_empty() {
        return;
    }
    if !batches.is_empty() || !done.is_empty() {
        locked(&gw.meter).delivered(delivered_total.max(0) as u64, interval);
    }
    let figures = timed(gw, figures).await;
    let keys: Vec<Key> = batches.iter().map(|b| (b.campaign, b.batch)).collect();
    let attempts: Vec<usize> = batches.iter().map(|b| b.attempts.len()).collect();
    let req = ReportRequest {
        gateway: gw.name.clone(),
        batches,
        done,
        delivered: delivered_total,
        figures,
        suppressed,
        suppressions_after: gw.suppressions_after(),
    };
    let sent = Instant::now();
    let answer = match gw.client.report(&req).await {
        Ok(Answer::Ok(a)) | Ok(Answer::Conflict(a)) => a,
        Err(err) => {
            tracing::warn!(err = %format!("{err:#}"), "no control plane takes the report: kept for the next");
            gw.suppressions.write(|s| s.untake_changes(req.suppressed));
            return;
        }
    };
    let ttl = gw.follow(answer.fleet).await;
    let stale: std::collections::HashSet<Key> =
        answer.stale.iter().map(|k| (k.campaign, k.batch)).collect();
    for key in &stale {
        tracing::warn!(
            campaign = key.0,
            batch = key.1,
            "lease lost (another gateway has the batch): dropped"
        );
        gw.leases.drop_batch(*key);
    }
    // The attempts and slots this report carried are the control plane's now.
    gw.leases.with(|held| {
        for (key, n) in keys.iter().zip(attempts) {
            if let Some(h) = held.get_mut(key) {
                h.attempts.drain(..n.min(h.attempts.len()));
            }
        }
        for (key, slots) in sent_slots {
            if let Some(h) = held.get_mut(&key) {
                h.accepted_slots = Some(slots);
            }
        }
    });
    let renewed: Vec<Key> = keys.into_iter().filter(|k| !stale.contains(k)).collect();
    gw.leases.renew(&renewed, sent, ttl);
    gw.leases.set_orders(&answer.campaigns);
    let give_back: Vec<Key> = answer
        .give_back
        .iter()
        .map(|k| (k.campaign, k.batch))
        .collect();
    gw.leases.give_back(&give_back);
    // Drained batches being given back: the control plane has their last
    // slots now; release them for a faster gateway.
    drained.retain(|(c, b, _)| !stale.contains(&(*c, *b)));
    if !drained.is_empty() {
        match gw.client.release(&gw.name, &drained).await {
            Ok(()) => {
                for (c, b, _) in &drained {
                    gw.leases.drop_batch((*c, *b));
                }
                tracing::info!(
                    batches = drained.len(),
                    "batches given back: another gateway delivers to their site much faster"
                );
            }
            Err(err) => {
                tracing::warn!(err = %format!("{err:#}"), "cannot give batches back yet");
            }
        }
    }
    // Final reports taken (or refused as stale: another gateway finishes
    // the batch) are done with.
    for path in done_files {
        let _ = std::fs::remove_file(path);
    }
}
