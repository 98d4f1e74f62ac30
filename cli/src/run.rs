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
use volley_control::campaign::{unhex, Campaign};
use volley_control::partition::sort;
use volley_control::recipients::RecipientReader;
use volley_control::suppress::normalize;
use volley_engine::delivery::feed::SpoolFeed;
use volley_engine::deposit::SpoolDeposit;
use volley_engine::feedback::Feedback;
use volley_engine::host::unix_now;
use volley_engine::listen::Server;
use volley_engine::suppress::Suppressions;
use volley_engine::sweep::sweep;
use volley_engine::{Engine, RunReport};
use volley_merge::source::MessageSource;
use volley_merge::TemplateSource;
use volley_queue::BatchMeta;
use volley_queue::Spool;

use crate::stop::{run_round, Round, StopSignals};
use crate::suppressions::{bounce_limits, StoreSuppressions};

/// How often the daemon sweeps the spool (old `done/` batches, relayed
/// messages no batch needs: see `volley_engine::sweep`).
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How old an unreferenced relayed message must be before it is swept.
const SWEEP_GRACE: Duration = Duration::from_secs(3600);

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

/// Finishes the partitioning of campaigns a crash interrupted: their batches are
/// deterministic, so the missing ones are written and the rest left alone.
pub fn resume_partitioning(spool: &Spool) -> Result<u64> {
    let mut resumed = 0;
    for mut campaign in Campaign::list(spool)? {
        if campaign.partitioned {
            continue;
        }
        let hash = unhex(&campaign.content_hash)
            .with_context(|| format!("campaign {}: bad content hash", campaign.id))?;
        let mut list = RecipientReader::open(&campaign.recipients)
            .with_context(|| format!("campaign {}: cannot resume its partitioning", campaign.id))?;
        // Drop exactly what the first partitioning dropped, so the cut is the same;
        // addresses suppressed since are stopped by the engine.
        let dropped = Campaign::load_suppressed(spool, campaign.id)?;
        let sorted = sort(spool, &mut list, campaign.id, |email| {
            dropped
                .contains(&normalize(email))
                .then(|| "recorded".to_owned())
        })?;
        let suppressed = sorted.suppressed.len();
        let meta = BatchMeta {
            batch_id: 0,
            campaign_id: campaign.id,
            content_hash: hash,
            created_at: campaign.created_at,
        };
        let parts = sorted.write(spool, meta, campaign.batch_size, true)?;
        campaign.partitioned = true;
        campaign.recipient_count = parts.recipients;
        campaign.rejected_rows = parts.rejected.len() as u64;
        campaign.suppressed = suppressed as u64;
        campaign.save(spool)?;
        tracing::info!(
            campaign = campaign.id,
            written = parts.written,
            batches = parts.batches,
            "resumed an interrupted partitioning"
        );
        resumed += 1;
    }
    Ok(resumed)
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
    // Before any connection: a limit too low for the configured connections is
    // refused now, not met as EMFILE mid-campaign.
    let listening = !args.once;
    volley_engine::host::raise_open_files(volley_engine::host::files_needed(&config, listening))?;
    let spool = Spool::open(&config.spool.dir)?;
    // Before anything else writes to tmp/ (the partitioning's sort, the listener).
    spool.remove_uncommitted()?;
    resume_partitioning(&spool)?;
    let suppressions =
        Arc::new(StoreSuppressions::open(spool.root())?.with_limits(bounce_limits(&config.bounce)));
    let source = Arc::new(TemplateSource::new(spool.content_dir()));
    let listen = !args.once && !config.listen.is_empty();
    let deposit_spool = if listen {
        Some(spool.try_clone()?)
    } else {
        None
    };
    let listen_config = config.clone();
    let grace = config.delivery.stop_timeout;
    let keep_done = config.bounce.window;
    let root = spool.root().to_owned();
    let engine = spool_engine(
        config,
        spool,
        source,
        args.log.as_deref(),
        Arc::clone(&suppressions) as Arc<dyn Suppressions>,
    )?;
    // What comes back for the local domains is classified on receipt, logged in
    // the engine's delivery log and written to the same suppression list.
    let feedback = Arc::new(Feedback::new(
        &root,
        engine.verp(),
        engine.source(),
        engine.delivery_log(),
        suppressions,
    ));
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut signals = StopSignals::new()?;
        if args.once {
            let report = match run_round(&engine, engine.run_due(), &mut signals, grace).await? {
                Round::Done(report) | Round::Stopped(Some(report)) => report,
                Round::Stopped(None) => RunReport::default(),
            };
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
                () = signals.recv() => break,
            }
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

/// The delivery engine fed from `spool`, checking `suppressions`, logging to
/// `log` (default `[delivery] log`); reports of relayed mail that fails are
/// queued in the same spool. What `volley run` and `volley send` deliver with.
pub fn spool_engine(
    config: Config,
    spool: Spool,
    source: Arc<dyn MessageSource>,
    log: Option<&Path>,
    suppressions: Arc<dyn Suppressions>,
) -> Result<Engine> {
    let reports = Arc::new(SpoolDeposit::new(
        spool.try_clone()?,
        config.queue.batch_size,
        config.relay.domains.clone(),
    ));
    Ok(
        Engine::new(config, Arc::new(SpoolFeed::new(spool)), source, log)?
            .with_suppressions(suppressions)
            .with_reports(reports),
    )
}

/// Binds every `[[listen]]` entry and runs the listener in a task until the
/// returned sender is used (or dropped).
async fn start_listener(
    config: &Config,
    spool: Spool,
    wake: Arc<Notify>,
    feedback: Arc<Feedback>,
) -> Result<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let verp = feedback.verp().cloned();
    let deposit = SpoolDeposit::new(spool, config.queue.batch_size, config.relay.domains.clone())
        .wake(wake)
        .feedback(feedback);
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

#[cfg(test)]
mod tests {
    use super::*;
    use volley_control::campaign::hex;
    use volley_queue::BatchView;

    fn queued(spool: &Spool) -> Vec<String> {
        let mut out = Vec::new();
        for path in spool.active_files().unwrap() {
            let bytes = std::fs::read(path).unwrap();
            out.extend(
                BatchView::parse(&bytes)
                    .unwrap()
                    .recipients()
                    .map(|r| r.address()),
            );
        }
        out
    }

    #[test]
    fn a_resumed_partitioning_drops_exactly_what_the_first_one_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let csv = dir.path().join("list.csv");
        let rows: String = (0..10).map(|i| format!("u{i}@x.test\n")).collect();
        std::fs::write(&csv, format!("email\n{rows}")).unwrap();
        let mut campaign = Campaign {
            id: 7,
            content_hash: hex(&[1; 32]),
            recipients: csv.clone(),
            batch_size: 3,
            created_at: 1,
            partitioned: false,
            recipient_count: 0,
            rejected_rows: 0,
            suppressed: 2,
        };
        // What `volley send` does: record the dropped addresses, then the campaign.
        campaign
            .save_suppressed(&spool, ["U3@x.test", "u8@x.test"])
            .unwrap();
        campaign.save(&spool).unwrap();
        let mut list = RecipientReader::open(&csv).unwrap();
        let sorted = sort(&spool, &mut list, 7, |e| {
            ["u3@x.test", "u8@x.test"]
                .contains(&e)
                .then(|| "manual".into())
        })
        .unwrap();
        let meta = BatchMeta {
            batch_id: 0,
            campaign_id: 7,
            content_hash: [1; 32],
            created_at: 1,
        };
        sorted.write(&spool, meta, 3, false).unwrap();
        let first = queued(&spool);
        // Killed after the first batch: the others are missing.
        for path in &spool.active_files().unwrap()[1..] {
            std::fs::remove_file(path).unwrap();
        }
        assert_eq!(resume_partitioning(&spool).unwrap(), 1);
        assert_eq!(queued(&spool), first, "same cut, nothing lost or doubled");
        assert_eq!(first.len(), 8);
        assert!(!first.iter().any(|a| a == "u3@x.test" || a == "u8@x.test"));
        campaign = Campaign::list(&spool).unwrap().remove(0);
        assert_eq!(
            (
                campaign.partitioned,
                campaign.recipient_count,
                campaign.suppressed
            ),
            (true, 8, 2)
        );
    }
}
