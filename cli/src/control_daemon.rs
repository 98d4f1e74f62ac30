//! `volley control`: the control plane alone, for a fleet: the HTTP API, the
//! scheduler and the lease service gateways ask for work, over the `[control]
//! database` (PostgreSQL, so that several `volley control` processes and the
//! gateways share it; SQLite works for one process). It delivers nothing:
//! campaigns are cut into batches whose bytes go into the store, and gateways
//! (`volley gateway`) lease them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use volley_conf::Config;
use volley_control::api::{self, Limits};
use volley_control::fleet::{Fleet, FleetSettings};
use volley_merge::TemplateSource;
use volley_queue::Spool;

use crate::suppressions::{bounce_limits, StoreSuppressions};

/// How long an upload no campaign took is kept (seconds).
const UPLOAD_KEEP: i64 = 86_400;

/// Arguments of `volley control`.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Spool directory for uploads and partitioning (default: `[spool] dir`).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
}

/// Runs `volley control` until SIGTERM or SIGINT.
pub fn run(args: ControlArgs, config_path: Option<&Path>) -> Result<String> {
    let mut config = Config::discover(config_path)?;
    if let Some(dir) = &args.spool {
        config.spool.dir = dir.clone();
    }
    let webhooks = crate::webhooks::configured(&config)?;
    let Some(addr) = config.control.listen else {
        bail!("volley control serves the API gateways lease from: set [control] listen");
    };
    let spool = Spool::open(&config.spool.dir)?;
    spool.remove_uncommitted()?;
    let suppressions =
        Arc::new(StoreSuppressions::open(spool.root())?.with_limits(bounce_limits(&config.bounce)));
    let source = Arc::new(TemplateSource::new(spool.content_dir()));
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = crate::control::open_store(&config).await?;
        let plane = crate::control::plane(&config, store, &spool, &source, &suppressions, true)?;
        // In the background: the API serves while it is cut.
        plane.resume_partitioning_later();
        plane.refresh().await?;
        let web = match crate::web::web(&config, spool.root())? {
            Some(web) => Some(crate::web::start(&config, Arc::clone(&plane), web.signer).await?),
            None => None,
        };
        match plane.sweep_uploads(UPLOAD_KEEP).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "stale uploads removed"),
            Err(err) => tracing::warn!(%err, "cannot sweep the uploads"),
        }
        let fleet = Fleet::new(
            Arc::clone(&plane),
            FleetSettings {
                lease_ttl: config.control.lease_ttl,
                assignment: config.control.assignment,
            },
        );
        let limits = Limits {
            max_body_bytes: config.control.max_body_bytes,
            max_upload_bytes: config.control.max_upload_bytes,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ([control] listen)"))?;
        tracing::info!(%addr, store = %plane.store().url(), "volley control: serving the API and leases");
        let metrics = volley_control::metrics::Metrics::new(
            Some((Arc::clone(&plane), config.control.lease_ttl)),
            |registry| fleet.register_metrics(registry),
        );
        let router = api::router(
            Arc::clone(&plane),
            limits,
            api::Extras {
                fleet: Some(Arc::clone(&fleet)),
                metrics: Some(metrics),
                queue: Some(fleet),
                pages: Some(volley_control::dashboard::routes()),
            },
        );
        let webhooks = crate::webhooks::start(&config, &webhooks, &plane).await?;
        let suppression_sync = tokio::spawn(crate::suppressions::sync_loop(
            Arc::clone(&plane),
            spool.root().to_owned(),
            format!("{}:{}", crate::control::node_name(&config), std::process::id()),
        ));
        let ticker = tokio::spawn({
            let plane = Arc::clone(&plane);
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    if let Err(err) = plane.tick().await {
                        tracing::warn!(%err, "control plane tick failed");
                    }
                    // Summaries are mailed by a node that delivers (volley run).
                    let _ = plane.take_summaries();
                }
            }
        });
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
            tracing::info!("volley control: stopping");
        };
        api::serve(listener, router, shutdown)
            .await
            .context("the API server failed")?;
        ticker.abort();
        webhooks.abort();
        suppression_sync.abort();
        if let Some((stop, task)) = web {
            let _ = stop.send(());
            let _ = task.await;
        }
        tracing::info!("volley control: stopped");
        anyhow::Ok(String::new())
    })
}
