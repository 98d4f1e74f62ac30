//! `volley run`: the daemon that keeps delivering what is in the spool, and
//! resumes whatever a killed `volley send` left (its partitioning included).
//! With `[[listen]]` entries it also runs the SMTP listener: accepted messages
//! are stored in the spool ([`SpoolDeposit`]) and delivered by the next round,
//! which they start at once; messages for the local domains (`[relay] domains`,
//! `[bounce] domain`) are classified on receipt ([`Feedback`]): bounces,
//! complaints and unsubscribe requests go to the delivery log and the
//! suppression list, and forged VERP addresses are refused. At start and then
//! hourly, between rounds, it sweeps the spool: `done/` batches older than
//! `[bounce] window` and relayed messages no live batch needs are deleted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use tokio::sync::{oneshot, Notify};
use volley_conf::Config;
use volley_control::api::{self, Limits};
use volley_control::plane::Plane;
use volley_engine::delivery::feed::Feed;
use volley_engine::deposit::SpoolDeposit;
use volley_engine::feedback::{Feedback, FeedbackEvents};
use volley_engine::host::unix_now;
use volley_engine::listen::Server;
use volley_engine::suppress::Suppressions;
use volley_engine::sweep::sweep;
use volley_engine::{Engine, RunReport};
use volley_merge::source::MessageSource;
use volley_merge::TemplateSource;
use volley_queue::Spool;

use crate::control_feed::ControlFeed;
use crate::stop::{run_round, Round, StopSignals};
use crate::suppressions::{bounce_limits, StoreSuppressions};

/// How often the daemon sweeps the spool (old `done/` batches, relayed
/// messages no batch needs: see `volley_engine::sweep`).
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How old an unreferenced relayed message must be before it is swept.
const SWEEP_GRACE: Duration = Duration::from_secs(3600);

/// How long an upload no campaign took is kept (seconds).
const UPLOAD_KEEP: i64 = 86_400;

/// Arguments of `volley run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// One delivery round (everything due now), then exit: for cron and tests.
    /// Does not listen on the `[[listen]]` addresses.
    #[arg(long)]
    pub once: bool,
    /// Spool directory (default: `[spool] dir`).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Delivery log (default: `[delivery] log`).
    #[arg(long, value_name = "FILE.jsonl")]
    pub log: Option<PathBuf>,
}

/// One round in one line. The resent count is included for `--once` (stdout); the
/// daemon's log already has it from the engine's warning at the round's start.
fn describe(r: &RunReport, with_resent: bool) -> String {
    let resent = if with_resent {
        format!("; {} resent after a crash", r.resent_after_crash)
    } else {
        String::new()
    };
    format!(
        "{} attempted: {} delivered, {} deferred, {} bounced, {} expired; {} suppressed; {} waiting for a retry{resent}; {} batches completed",
        r.attempted, r.delivered, r.deferred, r.bounced, r.expired, r.suppressed, r.not_due, r.batches_completed
    )
}

/// Runs `volley run`.
pub fn run(args: RunArgs, config_path: Option<&Path>) -> Result<String> {
    let mut config = Config::discover(config_path)?;
    if let Some(dir) = &args.spool {
        config.spool.dir = dir.clone();
    }
    let webhooks = crate::webhooks::configured(&config)?;
    // Before any connection: a limit too low for the configured connections is
    // refused now, not met as EMFILE mid-campaign.
    let listening = !args.once;
    volley_engine::host::raise_open_files(volley_engine::host::files_needed(&config, listening))?;
    let spool = Spool::open(&config.spool.dir)?;
    // Before anything else writes to tmp/ (the partitioning's sort, the listener).
    spool.remove_uncommitted()?;
    let suppressions =
        Arc::new(StoreSuppressions::open(spool.root())?.with_limits(bounce_limits(&config.bounce)));
    let web = crate::web::web(&config, spool.root())?;
    let source = Arc::new(with_web_links(
        TemplateSource::new(spool.content_dir()),
        web.as_ref(),
    ));
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let store = runtime.block_on(crate::control::open_store(&config))?;
    let plane = crate::control::plane(&config, store, &spool, &source, &suppressions, false)?;
    // Campaigns whose partitioning a crash interrupted: finished first by a
    // single run, in the background by a daemon (its API serves meanwhile).
    if args.once {
        runtime
            .block_on(plane.resume_partitioning())
            .context("cannot resume an interrupted partitioning")?;
    } else {
        let _guard = runtime.enter();
        plane.resume_partitioning_later();
    }
    runtime.block_on(plane.refresh())?;
    // Uploads cut short by a crash, and those no campaign took in a day.
    match runtime.block_on(plane.sweep_uploads(UPLOAD_KEEP)) {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "stale uploads removed"),
        Err(err) => tracing::warn!(%err, "cannot sweep the uploads"),
    }
    // What `volley sendmail` dropped while a daemon held the spool.
    volley_engine::maildrop::prepare(spool.root())?;
    let drops = SpoolDeposit::new(
        spool.try_clone()?,
        config.queue.batch_size,
        config.relay.domains.clone(),
    );
    volley_engine::maildrop::pickup(spool.root(), &drops)?;
    let summaries = SpoolDeposit::new(
        spool.try_clone()?,
        config.queue.batch_size,
        config.relay.domains.clone(),
    );
    let helo = helo_name(&config);
    let api_listen = if args.once {
        None
    } else {
        config.control.listen
    };
    let limits = Limits {
        max_body_bytes: config.control.max_body_bytes,
        max_upload_bytes: config.control.max_upload_bytes,
    };
    let feed = Arc::new(ControlFeed::new(
        spool.try_clone()?,
        Arc::clone(&plane),
        runtime.handle().clone(),
        crate::control::node_name(&config),
    ));
    let listen = !args.once && !config.listen.is_empty();
    let deposit_spool = if listen {
        Some(spool.try_clone()?)
    } else {
        None
    };
    let ops_spool = spool.try_clone()?;
    let listen_config = config.clone();
    let grace = config.delivery.stop_timeout;
    let keep_done = config.bounce.window;
    let root = spool.root().to_owned();
    let engine = spool_engine(
        config,
        spool,
        feed,
        source,
        args.log.as_deref(),
        Arc::clone(&suppressions) as Arc<dyn Suppressions>,
    )?;
    // What comes back for the local domains is classified on receipt, logged in
    // the engine's delivery log and written to the same suppression list.
    let events: Arc<dyn FeedbackEvents> = Arc::new(crate::web::PlaneFeedback {
        plane: Arc::clone(&plane),
        runtime: runtime.handle().clone(),
    });
    let feedback = feedback(&root, &engine, suppressions, &listen_config, Some(events));
    plane.set_engagement_log(Arc::new(crate::web::DeliveryLogEngagements(
        engine.delivery_log(),
    )));
    runtime.block_on(async {
        let mut signals = StopSignals::new()?;
        if args.once {
            let report = match run_round(&engine, engine.run_due(), &mut signals, grace).await? {
                Round::Done(report) | Round::Stopped(Some(report)) => report,
                Round::Stopped(None) => RunReport::default(),
            };
            // Campaigns this round completed are closed in the store (their
            // summaries wait for the next run).
            tick(&plane, &summaries, &helo, &Notify::new()).await;
            return anyhow::Ok(format!("{}\n", describe(&report, true)));
        }
        // Deposits wake the round loop, so a received message goes out at once.
        let wake = Arc::new(Notify::new());
        let listener = match deposit_spool {
            Some(spool) => Some(
                start_listener(
                    &listen_config,
                    spool,
                    Arc::clone(&wake),
                    Arc::clone(&feedback),
                )
                .await?,
            ),
            None => None,
        };
        // The configured webhooks are in the store before the API answers.
        let webhooks = crate::webhooks::start(&listen_config, &webhooks, &plane).await?;
        let api = match api_listen {
            Some(addr) => {
                let metrics = volley_control::metrics::Metrics::new(
                    Some((Arc::clone(&plane), listen_config.control.lease_ttl)),
                    |registry| engine.register_metrics(registry),
                );
                let queue = crate::queue_ops::SpoolQueue {
                    spool: ops_spool,
                    holds: engine.holds(),
                    sites: engine.sites(),
                    log: engine.delivery_log(),
                    wake: Arc::clone(&wake),
                };
                let extras = api::Extras {
                    fleet: None,
                    metrics: Some(metrics),
                    queue: Some(Arc::new(queue)),
                    pages: Some(volley_control::dashboard::routes()),
                };
                Some(start_api(addr, Arc::clone(&plane), limits, extras).await?)
            }
            None => None,
        };
        let web_server = match &web {
            Some(web) => Some(
                crate::web::start(&listen_config, Arc::clone(&plane), Arc::clone(&web.signer))
                    .await?,
            ),
            None => None,
        };
        let suppression_sync = tokio::spawn(crate::suppressions::sync_loop(
            Arc::clone(&plane),
            root.clone(),
            format!(
                "{}:{}",
                crate::control::node_name(&listen_config),
                std::process::id()
            ),
        ));
        let ticker = tokio::spawn(tick_loop(
            Arc::clone(&plane),
            summaries,
            helo.clone(),
            Arc::clone(&wake),
        ));
        let pickups = tokio::spawn(pickup_loop(root.clone(), drops, Arc::clone(&wake)));
        let planned = plane.wake();
        tracing::info!(spool = %root.display(), "volley run: delivering");
        let mut last_sweep: Option<Instant> = None;
        loop {
            // Between rounds (batches move to done/ only at a round's end).
            if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
                last_sweep = Some(Instant::now());
                let root = root.clone();
                let swept = tokio::task::spawn_blocking(move || {
                    sweep(&root, SystemTime::now(), keep_done, SWEEP_GRACE)
                })
                .await;
                match swept {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => tracing::warn!(%err, "cannot sweep the spool"),
                    Err(err) => tracing::warn!(%err, "the spool sweep failed"),
                }
            }
            let report = match run_round(&engine, engine.run_due(), &mut signals, grace).await? {
                Round::Done(report) => report,
                Round::Stopped(report) => {
                    if let Some(report) = report {
                        tracing::info!("{}", describe(&report, false));
                    }
                    break;
                }
            };
            if report.attempted > 0 || report.suppressed > 0 || report.resent_after_crash > 0 {
                tracing::info!("{}", describe(&report, false));
            }
            // Nothing due: no rescans until the next recipient is due or a
            // deposit brings new work.
            tokio::select! {
                _ = tokio::time::sleep(report.pause(unix_now())) => {}
                _ = wake.notified() => {}
                _ = planned.notified() => {}
                () = signals.recv() => break,
            }
        }
        ticker.abort();
        webhooks.abort();
        suppression_sync.abort();
        pickups.abort();
        for (stop, task) in api.into_iter().chain(web_server) {
            let _ = stop.send(());
            let _ = task.await;
        }
        if let Some((stop, task)) = listener {
            // Open sessions get 421; a message being stored is finished first.
            let _ = stop.send(());
            let _ = task.await;
        }
        tracing::info!("volley run: stopped");
        Ok(String::new())
    })
}

/// The delivery engine fed by `feed` from `spool`, checking `suppressions`,
/// logging to `log` (default `[delivery] log`); reports of relayed mail that
/// fails are queued in the same spool. What `volley run` and `volley send`
/// deliver with.
pub fn spool_engine(
    config: Config,
    spool: Spool,
    feed: Arc<dyn Feed>,
    source: Arc<dyn MessageSource>,
    log: Option<&Path>,
    suppressions: Arc<dyn Suppressions>,
) -> Result<Engine> {
    let reports = Arc::new(SpoolDeposit::new(
        spool.try_clone()?,
        config.queue.batch_size,
        config.relay.domains.clone(),
    ));
    let holds = Arc::new(volley_queue::holds::Holds::open(spool.root())?);
    Ok(Engine::new(config, feed, source, log)?
        .with_suppressions(suppressions)
        .with_holds(holds)
        .with_reports(reports))
}

/// The classification of what comes back for the local domains, into
/// `engine`'s delivery log and `suppressions`, trusting `config`'s feedback
/// loops. What `volley run` and `volley gateway` listen with.
pub(crate) fn feedback(
    root: &Path,
    engine: &Engine,
    suppressions: Arc<StoreSuppressions>,
    config: &Config,
    events: Option<Arc<dyn FeedbackEvents>>,
) -> Arc<Feedback> {
    let feedback = Feedback::new(
        root,
        engine.verp(),
        engine.source(),
        engine.delivery_log(),
        suppressions,
    )
    .with_fbl_sources(
        config.bounce.fbl_sources.clone(),
        volley_engine::mx::ResolverConfig::of(&config.dns),
    );
    Arc::new(match events {
        Some(events) => feedback.with_events(events),
        None => feedback,
    })
}

/// Binds every `[[listen]]` entry and runs the listener in a task until the
/// returned sender is used (or dropped).
pub(crate) async fn start_listener(
    config: &Config,
    spool: Spool,
    wake: Arc<Notify>,
    feedback: Arc<Feedback>,
) -> Result<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let verp = feedback.verp().cloned();
    let deposit = SpoolDeposit::new(spool, config.queue.batch_size, config.relay.domains.clone())
        .wake(wake)
        .feedback(feedback)
        .group_commit(volley_engine::deposit::GroupSettings::of(&config.queue))
        .context("cannot start the listener's group commit")?;
    let mut server = Server::bind(config, &[], Arc::new(deposit))
        .await
        .context("cannot start the SMTP listener")?;
    if let Some(verp) = verp {
        server = server.with_verp(verp);
    }
    for addr in server.local_addrs() {
        tracing::info!(%addr, "volley run: accepting mail");
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Ok((stop, task))
}

/// The scheduler: the plane's tick about once a second (scheduled starts,
/// completions, the outbox), then the summaries due queued through `deposit`
/// (waking the round loop), until aborted.
pub async fn tick_loop(plane: Arc<Plane>, deposit: SpoolDeposit, helo: String, wake: Arc<Notify>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        tick(&plane, &deposit, &helo, &wake).await;
    }
}

/// One scheduler step ([`tick_loop`]).
pub async fn tick(plane: &Plane, deposit: &SpoolDeposit, helo: &str, wake: &Notify) {
    if let Err(err) = plane.tick().await {
        tracing::warn!(%err, "control plane tick failed");
    }
    match crate::summary::queue_due(plane, deposit, helo).await {
        Ok(0) => {}
        Ok(_) => wake.notify_one(),
        Err(err) => tracing::warn!(err = %format!("{err:#}"), "cannot queue a campaign summary"),
    }
}

/// `source` writing each campaign message's web links when `[web]` is on.
pub fn with_web_links(source: TemplateSource, web: Option<&crate::web::Web>) -> TemplateSource {
    match web {
        Some(web) => source.with_web_links(Arc::clone(&web.links)),
        None => source,
    }
}

/// The name volley gives itself (`[delivery] helo_name`, else the host's).
pub fn helo_name(config: &Config) -> String {
    if config.delivery.helo_name.is_empty() {
        volley_engine::host::host_name()
    } else {
        config.delivery.helo_name.clone()
    }
}

/// Serves the HTTP API (and `/metrics`) on `addr` in a task until the
/// returned sender is used.
async fn start_api(
    addr: std::net::SocketAddr,
    plane: Arc<Plane>,
    limits: Limits,
    extras: api::Extras,
) -> Result<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ([control] listen)"))?;
    tracing::info!(%addr, "volley run: serving the API");
    let (stop, stopped) = oneshot::channel::<()>();
    let router = api::router(plane, limits, extras);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(err) = api::serve(listener, router, shutdown).await {
            tracing::error!(%err, "the API server failed");
        }
    });
    Ok((stop, task))
}

/// Picks up what `volley sendmail` leaves in the drop directory, every second,
/// waking the round loop when something was queued; until aborted.
async fn pickup_loop(root: PathBuf, deposit: SpoolDeposit, wake: Arc<Notify>) {
    let deposit = Arc::new(deposit);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (root, deposit) = (root.clone(), Arc::clone(&deposit));
        match tokio::task::spawn_blocking(move || volley_engine::maildrop::pickup(&root, &deposit))
            .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(_)) => wake.notify_one(),
            Ok(Err(err)) => tracing::warn!(%err, "cannot pick up the drop directory"),
            Err(err) => tracing::warn!(%err, "the drop directory pickup failed"),
        }
    }
}
