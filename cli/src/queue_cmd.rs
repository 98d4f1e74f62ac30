//! `volley queue …`: look at the spool without disturbing a running daemon.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use volley_conf::Config;
use volley_queue::holds::{Holds, Rule};
use volley_queue::{BatchView, Spool, State};

use crate::table;

/// `volley queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Recipients by state for each destination domain (like Postfix's qshape).
    ///
    /// Example: volley queue summary --spool /var/spool/volley --json
    Summary {
        /// Spool directory (default: `[spool] dir` from the configuration).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A batch's header and each recipient's state.
    ///
    /// BATCH is a path, or a file name (with or without .vqb) looked up in the
    /// spool's active/, done/ and quarantine/ directories.
    /// Example: volley queue show 0000000000000001-0000000000000007
    Show {
        /// The batch.
        batch: String,
        /// Spool directory (default: `[spool] dir` from the configuration).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
        /// Also print each recipient's merge values.
        #[arg(long)]
        values: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the startup recovery scan now: remove uncommitted temporary files,
    /// quarantine corrupt batches (with a reason file), count the pending work.
    /// Takes the spool's lock, so it refuses while a daemon is running.
    ///
    /// Example: volley queue recover --spool ./spool
    Recover {
        /// Spool directory (default: `[spool] dir` from the configuration).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
    /// Hold a campaign's, a domain's or a site's recipients: no new
    /// transaction takes them until released (like postsuper -h). Survives a
    /// restart. On a running daemon through its API (an admin token), else
    /// on the stopped spool.
    ///
    /// Example: volley queue hold --domain example.com
    Hold(RuleArgs),
    /// Release a hold (like postsuper -H): the recipients are due again.
    ///
    /// Example: volley queue release --domain example.com
    Release(RuleArgs),
    /// Finalise a campaign's, a domain's or a site's unfinished recipients
    /// unsent (like postsuper -d): each is logged as purged. Needs --yes.
    ///
    /// Example: volley queue purge --campaign 12 --yes
    Purge {
        /// What to purge.
        #[command(flatten)]
        rule: RuleArgs,
        /// Yes, finalise them for good.
        #[arg(long)]
        yes: bool,
    },
}

/// What `hold`, `release` and `purge` act on (exactly one), and where.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["campaign", "domain", "site"])))]
pub struct RuleArgs {
    /// A campaign's recipients (its id).
    #[arg(long, value_name = "ID")]
    campaign: Option<String>,
    /// Recipients at a destination domain.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Recipients sent through a site: an MX host name (as `queue summary`
    /// and /metrics name sites) or a route's `via`.
    #[arg(long, value_name = "SITE")]
    site: Option<String>,
    /// Spool directory (default: `[spool] dir` from the configuration).
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// A running daemon's or a fleet's control plane's API base URL: the
    /// call goes there (default: http:// + `[control] listen` when a daemon
    /// holds the spool, else the spool itself).
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// An admin API token (default: $VOLLEY_TOKEN, `[control] token_file`, or
    /// one made for the call in the store and revoked after).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

impl RuleArgs {
    fn rule(&self) -> Result<Rule> {
        let (kind, value) = match (&self.campaign, &self.domain, &self.site) {
            (Some(c), None, None) => ("campaign", c),
            (None, Some(d), None) => ("domain", d),
            (None, None, Some(s)) => ("site", s),
            _ => bail!("name one of --campaign, --domain or --site"),
        };
        Rule::parse(kind, value).map_err(|e| anyhow::anyhow!("--{kind}: {e}"))
    }
}

fn spool_dir(explicit: Option<PathBuf>, config: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(dir) => Ok(dir),
        None => Ok(Config::discover(config)?.spool.dir),
    }
}

/// Runs a `queue` subcommand.
pub fn run(cmd: QueueCommand, config: Option<&Path>) -> Result<String> {
    match cmd {
        QueueCommand::Summary { spool, json } => summary(&spool_dir(spool, config)?, json),
        QueueCommand::Show {
            batch,
            spool,
            values,
            json,
        } => show(&spool_dir(spool, config)?, &batch, values, json),
        QueueCommand::Recover { spool } => recover(&spool_dir(spool, config)?),
        QueueCommand::Hold(args) => change(&args, config, Some(true)),
        QueueCommand::Release(args) => change(&args, config, Some(false)),
        QueueCommand::Purge { rule, yes } => {
            let what = rule.rule()?;
            if !yes {
                bail!("volley queue purge finalises every unfinished recipient of {what} for good: add --yes");
            }
            change(&rule, config, None)
        }
    }
}

/// Holds (`Some(true)`), releases or purges (`None`): on the spool when
/// stopped, else through the daemon's API.
fn change(args: &RuleArgs, config: Option<&Path>, hold: Option<bool>) -> Result<String> {
    let rule = args.rule()?;
    let config = Config::discover(config)?;
    if args.api.is_some() {
        // A daemon or a fleet's control plane, named.
        return through_api(args, &config, &rule, hold);
    }
    let dir = args
        .spool
        .clone()
        .unwrap_or_else(|| config.spool.dir.clone());
    match Spool::open(&dir) {
        Ok(spool) => crate::queue_ops::local(&config, spool, &rule, hold),
        Err(volley_queue::QueueError::Locked { .. }) => through_api(args, &config, &rule, hold),
        Err(e) => Err(e).with_context(|| format!("cannot open the spool {}", dir.display())),
    }
}

/// The same through a running daemon's API.
fn through_api(
    args: &RuleArgs,
    config: &Config,
    rule: &Rule,
    hold: Option<bool>,
) -> Result<String> {
    use crate::api_client::{base_url, token_or_mint, ApiClient};
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let base = base_url(args.api.as_deref(), config)
        .context("the spool is held by a running daemon, and its API is off")?;
    let (secret, minted) = token_or_mint(
        args.token.as_deref(),
        config,
        &runtime,
        "queue",
        volley_control::store::tokens::Role::Admin,
    )?;
    let client = ApiClient::new(base, secret)?;
    let body = volley_control::queue_ops::rule_json(rule);
    let result = runtime.block_on(async {
        match hold {
            Some(hold) => {
                let path = if hold {
                    "/v1/queue/hold"
                } else {
                    "/v1/queue/release"
                };
                let answer = client.post(path, &body).await?;
                let now: Vec<Rule> = answer["holds"]
                    .as_array()
                    .map(|l| l.iter().filter_map(rule_of).collect())
                    .unwrap_or_default();
                let changed = answer["changed"].as_bool().unwrap_or(false);
                Ok(crate::queue_ops::describe_change(rule, hold, changed, &now))
            }
            None => {
                let answer = client.post("/v1/queue/purge", &body).await?;
                let done = volley_control::queue_ops::PurgeCount {
                    recipients: answer["recipients"].as_u64().unwrap_or(0),
                    batches: answer["batches"].as_u64().unwrap_or(0),
                    ordered: answer["ordered"].as_bool().unwrap_or(false),
                };
                Ok(crate::queue_ops::describe_purge(rule, done))
            }
        }
    });
    if let Some(minted) = minted {
        minted.revoke(&runtime);
    }
    result
}

/// A rule from its JSON (`{"domain": "…"}`).
fn rule_of(v: &serde_json::Value) -> Option<Rule> {
    let (kind, value) = v.as_object()?.iter().next()?;
    let value = match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Rule::parse(kind, &value).ok()
}

const STATE_COLUMNS: [State; 6] = [
    State::Pending,
    State::InFlight,
    State::Deferred,
    State::Delivered,
    State::Bounced,
    State::Expired,
];

fn summary(dir: &Path, json: bool) -> Result<String> {
    let mut out = String::new();
    let spool = Spool::open_read_only(dir)?;
    let (summary, corrupt) = spool.summary()?;
    let holds: Vec<Rule> = Holds::open(dir)?.snapshot().rules().cloned().collect();
    for c in &corrupt {
        eprintln!("volley: warning: {}", c.reason);
    }
    if json {
        let corrupt: Vec<_> = corrupt
            .iter()
            .map(|c| serde_json::json!({"file": c.from, "reason": c.reason}))
            .collect();
        let doc = serde_json::json!({
            "spool": dir,
            "batches": summary.batches,
            "domains": summary.domains,
            "total": summary.total,
            "corrupt": corrupt,
            "holds": holds.iter().map(volley_control::queue_ops::rule_json).collect::<Vec<_>>(),
        });
        writeln!(out, "{doc}")?;
        return Ok(out);
    }
    let mut domains: Vec<_> = summary.domains.iter().collect();
    domains.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(b.0)));
    let row = |name: &str, c: &volley_queue::StateCounts| {
        let mut row = vec![name.to_owned(), c.total().to_string()];
        row.extend(STATE_COLUMNS.iter().map(|&s| c.get(s).to_string()));
        row
    };
    let mut rows: Vec<Vec<String>> = domains.iter().map(|(d, c)| row(d, c)).collect();
    rows.push(row("TOTAL", &summary.total));
    let mut header = vec!["domain", "total"];
    header.extend(STATE_COLUMNS.iter().map(|s| s.name()));
    write!(out, "{}", table::render(&header, &rows))?;
    if !holds.is_empty() {
        let list: Vec<String> = holds.iter().map(Rule::to_string).collect();
        writeln!(out, "held: {} (volley queue release)", list.join(", "))?;
    }
    writeln!(
        out,
        "{} batches in {}{}",
        summary.batches,
        dir.join("active").display(),
        if corrupt.is_empty() {
            String::new()
        } else {
            format!(", {} corrupt (see warnings)", corrupt.len())
        }
    )?;
    Ok(out)
}

fn show(dir: &Path, batch: &str, values: bool, json: bool) -> Result<String> {
    let mut out = String::new();
    let spool = Spool::open_read_only(dir).ok();
    let path = match &spool {
        Some(spool) => spool.find(batch),
        None => Some(PathBuf::from(batch)).filter(|p| p.is_file()),
    };
    let Some(path) = path else {
        bail!(
            "no batch {batch:?}: not a file, and not in {}/active, done or quarantine",
            dir.display()
        );
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let view =
        BatchView::parse(&bytes).with_context(|| format!("{} is corrupt", path.display()))?;
    let h = view.header();
    let hash: String = h.content_hash.iter().map(|b| format!("{b:02x}")).collect();
    let created = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(h.created_at));
    let fields = view.field_names();
    let when = |secs: u64| {
        if secs == 0 {
            "-".to_owned()
        } else {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
    };
    let mut recipients = Vec::with_capacity(view.len());
    for (i, r) in view.recipients().enumerate() {
        let slot = view.slot(i)?;
        let vals: Vec<String> = r
            .values()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        recipients.push((i, r.address(), slot, vals));
    }
    if json {
        let list: Vec<_> = recipients
            .iter()
            .map(|(i, address, slot, vals)| {
                let mut o = serde_json::json!({
                    "index": i, "address": address, "state": slot.state.name(), "status": volley_queue::slot::final_status(*slot),
                    "attempts": slot.attempts, "code": slot.code, "next_attempt": slot.next_attempt,
                });
                if values {
                    o["values"] = serde_json::json!(fields
                        .iter()
                        .zip(vals)
                        .collect::<std::collections::BTreeMap<_, _>>());
                }
                o
            })
            .collect();
        let doc = serde_json::json!({
            "file": path, "campaign_id": h.campaign_id, "batch_id": h.batch_id,
            "created_at": h.created_at, "content_hash": hash, "fields": fields,
            "recipient_count": h.recipient_count, "bytes": bytes.len(), "recipients": list,
        });
        writeln!(out, "{doc}")?;
        return Ok(out);
    }
    writeln!(out, "file:         {}", path.display())?;
    writeln!(out, "campaign:     {}", h.campaign_id)?;
    writeln!(out, "batch:        {}", h.batch_id)?;
    writeln!(out, "created:      {created}")?;
    writeln!(out, "content hash: {hash}")?;
    writeln!(out, "fields:       {}", fields.join(", "))?;
    writeln!(
        out,
        "recipients:   {} ({} bytes)",
        h.recipient_count,
        bytes.len()
    )?;
    writeln!(out)?;
    let mut header = vec!["#", "address", "state", "attempts", "code", "next attempt"];
    if values {
        header.extend(fields.iter().copied());
    }
    let rows: Vec<Vec<String>> = recipients
        .into_iter()
        .map(|(i, address, slot, vals)| {
            let mut row = vec![
                i.to_string(),
                address,
                volley_queue::slot::final_status(slot).to_owned(),
                slot.attempts.to_string(),
                if slot.code == 0 {
                    "-".into()
                } else {
                    slot.code.to_string()
                },
                // A final slot's next_attempt is no time (it holds a
                // `volley_queue::slot::mark`).
                if slot.state.is_final() {
                    "-".to_owned()
                } else {
                    when(slot.next_attempt)
                },
            ];
            if values {
                // Escape control characters so a value cannot garble the terminal.
                row.extend(vals.iter().map(|v| v.escape_debug().to_string()));
            }
            row
        })
        .collect();
    write!(out, "{}", table::render(&header, &rows))?;
    Ok(out)
}

fn recover(dir: &Path) -> Result<String> {
    let mut out = String::new();
    let spool = Spool::open(dir)?;
    let recovery = spool.recover()?;
    let totals = recovery.totals();
    writeln!(
        out,
        "{} batches, {} recipients: {} unfinished ({} pending, {} in flight, {} deferred)",
        recovery.batches.len(),
        totals.total(),
        totals.unfinished(),
        totals.pending,
        totals.in_flight,
        totals.deferred
    )?;
    if recovery.removed_temp > 0 {
        writeln!(
            out,
            "removed {} uncommitted temporary files",
            recovery.removed_temp
        )?;
    }
    for q in &recovery.quarantined {
        let to =
            q.to.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
        writeln!(
            out,
            "quarantined {} -> {to}: {}",
            q.from.display(),
            q.reason
        )?;
    }
    Ok(out)
}
