//! `volley send`: one campaign end to end on this host: read the template and the
//! recipients, partition into batches, deliver, report.

mod handoff;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use volley_conf::Config;
use volley_control::plane::submit::{Recipients, Submission};
use volley_control::plane::Plane;
use volley_control::recipients::{write_rejected, RecipientReader, Rejected};
use volley_engine::host::unix_now;
use volley_engine::{Engine, RunReport};
use volley_merge::{Template, TemplateSource, TemplateSpec};
use volley_queue::{BatchView, DomainSummary, Spool};

use crate::control_feed::ControlFeed;
use crate::run::spool_engine;
use crate::stop::{run_round, Round, StopSignals};
use crate::suppressions::StoreSuppressions;
use crate::table;

/// Arguments of `volley send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Campaign template: TOML (from, subject, text/html, headers, attachments) or
    /// a raw RFC 5322 message with {{ placeholders }}.
    #[arg(long, value_name = "FILE")]
    pub template: PathBuf,
    /// Recipients: CSV with a header row and an `email` column; other columns are
    /// merge fields.
    #[arg(long, value_name = "FILE.csv")]
    pub recipients: PathBuf,
    /// Delivery log, one JSON line per attempt (default: `[delivery] log`).
    #[arg(long, value_name = "FILE.jsonl")]
    pub log: Option<PathBuf>,
    /// Write a JSON report: recipients (queued), delivered, deferred, bounced,
    /// expired, suppressed (not queued, or stopped before sending, because on the
    /// suppression list), rejected_rows, elapsed_s, msgs_per_s.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Where rejected CSV rows go (line, email, reason), with the suppressed
    /// recipients (reason `suppressed: WHY`). Default: next to the recipient list,
    /// as NAME.rejects.csv.
    #[arg(long, value_name = "FILE.csv")]
    pub rejects: Option<PathBuf>,
    /// Keep retrying deferred recipients until every one is final (delivered,
    /// bounced or expired). Without it, send returns after one pass and deferred
    /// recipients stay in the spool for `volley run`.
    #[arg(long)]
    pub wait: bool,
    /// Spool directory (default: `[spool] dir`).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Send a summary of the campaign (counts, domains, bounce reasons, rate)
    /// to ADDR when it completes; repeat for more addresses.
    #[arg(long, value_name = "ADDR")]
    pub notify: Vec<String>,
}

/// Runs `volley send`.
pub fn run(args: SendArgs, config_path: Option<&Path>) -> Result<String> {
    let started = Instant::now();
    let mut config = Config::discover(config_path)?;
    if let Some(dir) = &args.spool {
        config.spool.dir = dir.clone();
    }
    let spec = TemplateSpec::load(&args.template)
        .with_context(|| format!("template {}", args.template.display()))?;
    let template = Template::compile(&spec)
        .with_context(|| format!("template {}", args.template.display()))?;
    let list = RecipientReader::open(&args.recipients)?;
    let mut available: Vec<&str> = list.fields().iter().map(String::as_str).collect();
    available.push("email");
    template.check_fields(&available).with_context(|| {
        format!(
            "{} does not provide every placeholder of {}",
            args.recipients.display(),
            args.template.display()
        )
    })?;
    drop(list);

    let rejects_path = args.rejects.clone().unwrap_or_else(|| {
        let mut name = args
            .recipients
            .file_stem()
            .unwrap_or_default()
            .to_os_string();
        name.push(".rejects.csv");
        args.recipients.with_file_name(name)
    });
    // Before any connection: a limit too low for the configured connections is
    // refused now, not met as EMFILE mid-campaign.
    volley_engine::host::raise_open_files(volley_engine::host::files_needed(&config, false))?;
    let spool = match Spool::open(&config.spool.dir) {
        Ok(spool) => spool,
        // A daemon delivers from this spool: it takes the campaign over its API.
        Err(volley_queue::QueueError::Locked { .. }) => {
            return handoff::run(&args, &config, &spec, &rejects_path);
        }
        Err(e) => return Err(e.into()),
    };
    let recipients_abs =
        std::fs::canonicalize(&args.recipients).unwrap_or_else(|_| args.recipients.clone());
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let suppressions = Arc::new(StoreSuppressions::open(spool.root())?);
    let web = crate::web::web(&config, spool.root())?;
    let source = Arc::new(crate::run::with_web_links(
        TemplateSource::new(spool.content_dir()),
        web.as_ref(),
    ));
    let store = runtime.block_on(crate::control::open_store(&config))?;
    let plane = crate::control::plane(&config, store, &spool, &source, &suppressions, false)?;
    // The campaign is recorded and cut into batches through the control plane,
    // as one submitted over the API is (suppressed recipients are dropped for
    // the template's sending domain, and recorded before any batch is written).
    let submission = Submission {
        template: serde_json::to_value(&spec).context("the template as JSON")?,
        recipients: Recipients::File(recipients_abs),
        start_at: None,
        stop_at: None,
        batch_size: None,
        notify: args.notify.clone(),
        tags: Vec::new(),
        idempotency: None,
        wait: true,
    };
    let campaign = runtime
        .block_on(plane.submit(None, submission))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .campaign;
    runtime.block_on(plane.refresh())?;
    let rejected = runtime.block_on(all_rejects(&plane, campaign.id))?;
    if !rejected.is_empty() {
        write_rejected(&rejects_path, rejected.iter())
            .with_context(|| format!("cannot write {}", rejects_path.display()))?;
        eprintln!(
            "volley: {} rows rejected, {} recipients suppressed, listed with their line numbers in {}",
            campaign.rejected_rows,
            campaign.suppressed,
            rejects_path.display()
        );
    }
    eprintln!(
        "volley: campaign {} queued: {} recipients in {} batches of up to {}",
        campaign.id, campaign.recipients, campaign.batches, campaign.batch_size
    );

    let spool_dir = config.spool.dir.clone();
    let grace = config.delivery.stop_timeout;
    let summaries = volley_engine::deposit::SpoolDeposit::new(
        spool.try_clone()?,
        config.queue.batch_size,
        config.relay.domains.clone(),
    );
    let helo = crate::run::helo_name(&config);
    let feed = Arc::new(ControlFeed::new(
        spool.try_clone()?,
        Arc::clone(&plane),
        runtime.handle().clone(),
        crate::control::node_name(&config),
    ));
    // The engine delivers whatever the spool holds, relayed mail included.
    let engine = spool_engine(
        config,
        spool,
        feed,
        source,
        args.log.as_deref(),
        suppressions,
    )?;
    let total = campaign.recipients as u64;
    runtime.block_on(deliver(&engine, total, args.wait, grace))?;
    // A campaign that completed with --notify: its summary is queued and
    // sent now (one more round for it).
    if !args.notify.is_empty() {
        runtime.block_on(crate::run::tick(
            &plane,
            &summaries,
            &helo,
            &tokio::sync::Notify::new(),
        ));
        let queued = runtime
            .block_on(plane.store().campaign(campaign.id))?
            .is_some_and(|c| c.summary_queued);
        if queued {
            runtime.block_on(deliver(&engine, 0, false, grace))?;
        }
    }
    // Recipients suppressed after partitioning (added while the campaign ran):
    // their slots say bounced, but they were never sent.
    let late_suppressed = engine.progress().suppressed;
    drop(engine);
    if let Err(err) = runtime.block_on(plane.tick()) {
        tracing::warn!(%err, "control plane tick failed");
    }

    let reader = Spool::open_read_only(&spool_dir)?;
    // Every recipient may have been suppressed (or rejected): no batches then.
    let summary = if campaign.batches == 0 {
        DomainSummary::default()
    } else {
        campaign_summary(&reader, campaign.id as u64)?
    };
    let elapsed = started.elapsed().as_secs_f64();
    let t = &summary.total;
    let report = serde_json::json!({
        "campaign": campaign.id,
        "recipients": total,
        "delivered": t.delivered,
        "deferred": t.deferred + t.pending + t.in_flight,
        "bounced": t.bounced.saturating_sub(late_suppressed),
        "expired": t.expired,
        "suppressed": campaign.suppressed as u64 + late_suppressed,
        "rejected_rows": campaign.rejected_rows,
        "elapsed_s": elapsed,
        "msgs_per_s": if elapsed > 0.0 { t.delivered as f64 / elapsed } else { 0.0 },
    });
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = String::new();
    out.push_str(&summary_table(&summary));
    out.push_str(&format!(
        "campaign {}: {} recipients, {} delivered, {} deferred, {} bounced, {} expired, {} suppressed, {} rows rejected, {:.1} s, {:.0} msgs/s\n",
        campaign.id, total, report["delivered"], report["deferred"], report["bounced"], t.expired, report["suppressed"], campaign.rejected_rows, elapsed,
        report["msgs_per_s"].as_f64().unwrap_or(0.0)
    ));
    Ok(out)
}

/// Every row a campaign's list had to skip, and those dropped as suppressed,
/// by line.
async fn all_rejects(plane: &Plane, campaign: i64) -> Result<Vec<Rejected>> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = plane.store().rejects(campaign, after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.line as i64;
        out.extend(page);
    }
    Ok(out)
}

/// Delivery rounds with a progress line on stderr; with `wait`, until every
/// recipient is final.
async fn deliver(engine: &Engine, total: u64, wait: bool, grace: Duration) -> Result<()> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let progress = async {
        let every = if tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            eprint!(
                "{}",
                progress_line(&engine.progress(), total, started.elapsed(), tty)
            );
        }
    };
    let mut signals = StopSignals::new()?;
    let rounds = async {
        loop {
            let report = match run_round(engine, engine.run_due(), &mut signals, grace).await? {
                Round::Done(report) => report,
                // What was not sent stays queued: `volley run` takes it on.
                Round::Stopped(_) => return anyhow::Ok(()),
            };
            // Without --wait, done when nothing is due; with it, when nothing
            // waits for a retry either.
            if !wait || (report.attempted == 0 && report.not_due == 0) {
                return anyhow::Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(report.pause(unix_now())) => {}
                () = signals.recv() => return anyhow::Ok(()),
            }
        }
    };
    // The progress display runs until the rounds end.
    let result = tokio::select! {
        result = rounds => result,
        () = progress => Ok(()),
    };
    eprint!(
        "{}",
        progress_line(&engine.progress(), total, started.elapsed(), tty)
    );
    if tty {
        eprintln!();
    }
    result
}

/// `[=====>    ] done/total  rate  ETA  delivered/deferred/bounced`.
fn progress_line(p: &RunReport, total: u64, elapsed: Duration, tty: bool) -> String {
    let done = (p.delivered + p.bounced + p.expired + p.suppressed).min(total);
    let attempted = done + p.deferred;
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = if rate > 0.0 {
        format!("{:.0}s", (total - done) as f64 / rate)
    } else {
        "-".into()
    };
    let width = 30usize;
    let filled = (done as usize * width)
        .checked_div(total as usize)
        .unwrap_or(width);
    let bar: String = (0..width)
        .map(|i| {
            if i < filled {
                '='
            } else if i == filled {
                '>'
            } else {
                ' '
            }
        })
        .collect();
    let line = format!(
        "[{bar}] {done}/{total}  {rate:.0} msg/s  ETA {eta}  delivered {} deferred {} bounced {} (attempts {attempted})",
        p.delivered, p.deferred, p.bounced
    );
    if tty {
        format!("\r{line}\x1b[K")
    } else {
        format!("{line}\n")
    }
}

/// Recipients by state per domain over one campaign's batches (live and done).
pub fn campaign_summary(spool: &Spool, campaign: u64) -> Result<DomainSummary> {
    let prefix = format!("{campaign:016x}-");
    let mut summary = DomainSummary::default();
    for dir in [spool.active_dir(), spool.done_dir()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || !name.ends_with(".vqb") {
                continue;
            }
            let bytes = std::fs::read(entry.path())?;
            let view =
                BatchView::parse(&bytes).with_context(|| format!("{}", entry.path().display()))?;
            summary.add_batch(&view)?;
        }
    }
    if summary.batches == 0 {
        bail!(
            "no batches of campaign {campaign} in {}",
            spool.root().display()
        );
    }
    Ok(summary)
}

/// The per-domain table printed at the end of a send.
pub fn summary_table(summary: &DomainSummary) -> String {
    let mut domains: Vec<_> = summary.domains.iter().collect();
    domains.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(b.0)));
    let row = |name: &str, c: &volley_queue::StateCounts| {
        vec![
            name.to_owned(),
            c.total().to_string(),
            c.delivered.to_string(),
            (c.deferred + c.pending + c.in_flight).to_string(),
            c.bounced.to_string(),
            c.expired.to_string(),
        ]
    };
    let mut rows: Vec<Vec<String>> = domains.iter().map(|(d, c)| row(d, c)).collect();
    rows.push(row("TOTAL", &summary.total));
    table::render(
        &[
            "domain",
            "recipients",
            "delivered",
            "deferred",
            "bounced",
            "expired",
        ],
        &rows,
    )
}
