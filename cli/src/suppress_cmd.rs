//! `volley suppress …`: the spool's suppression list by hand. Works while a
//! daemon runs (the list has its own lock; the daemon rereads it every round).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use volley_conf::Config;
use volley_control::suppress::import::ImportList;
use volley_control::suppress::pending::{Pending, PendingList};
use volley_control::suppress::{Entry, Reason, SuppressionStore};

use crate::table;
use volley_engine::host::unix_now;

/// `volley suppress …`
#[derive(Debug, Subcommand)]
pub enum SuppressCommand {
    /// Suppress addresses: neither `volley send` nor the daemon will send to them
    /// (matched case-insensitively). Every address is checked first; if one is
    /// invalid, none is added.
    ///
    /// Example: volley suppress add bob@example.com --domain news.acme.test --reason complaint
    Add {
        /// The addresses.
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// Sending domain (the envelope sender's) the suppression applies to;
        /// `*` for all mail.
        #[arg(long, value_name = "DOMAIN", default_value = "*")]
        domain: String,
        /// Why: manual, hard_bounce, soft_bounce, complaint, unsubscribe, import,
        /// or any text.
        #[arg(long, value_name = "TEXT", default_value = "manual")]
        reason: String,
        /// More about it (a ticket number, a DSN status).
        #[arg(long, value_name = "TEXT")]
        detail: Option<String>,
        /// Spool directory (default: `[spool] dir` from the configuration).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
    /// Lift suppressions: for every sending domain, or only for `--domain`.
    /// Addresses that were not suppressed are reported.
    ///
    /// Example: volley suppress remove bob@example.com
    Remove {
        /// The addresses.
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// Only the suppression for this sending domain (`*`: the one for all mail).
        #[arg(long, value_name = "DOMAIN")]
        domain: Option<String>,
        /// Spool directory (default: `[spool] dir` from the configuration).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
    /// List suppressions (address, sending domain, reason, since, detail), sorted
    /// by address.
    ///
    /// Example: volley suppress list --reason hard_bounce --json
    List {
        /// Only entries for this sending domain (`*`: the entries for all mail).
        #[arg(long, value_name = "DOMAIN")]
        domain: Option<String>,
        /// Only entries with this reason.
        #[arg(long, value_name = "REASON")]
        reason: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Spool directory (default: `[spool] dir` from the configuration).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
    /// Suppress every address of a file: CSV with an `email` column, or one
    /// address per line (`#` comments allowed). Bad rows are reported with their
    /// line numbers and skipped.
    ///
    /// Example: volley suppress import unsubscribed.csv --reason unsubscribe
    Import {
        /// The file.
        file: PathBuf,
        /// Sending domain the suppressions apply to; `*` for all mail.
        #[arg(long, value_name = "DOMAIN", default_value = "*")]
        domain: String,
        /// Why (see `add`).
        #[arg(long, value_name = "TEXT", default_value = "import")]
        reason: String,
        /// Spool directory (default: `[spool] dir` from the configuration).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
    /// Suppression requests waiting for an operator: reports that named their
    /// recipient without a verified VERP token (DSNs or complaints to a plain
    /// address, "unsubscribe" replies), which anyone could have sent.
    ///
    /// Example: volley suppress pending
    Pending {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Spool directory (default: `[spool] dir` from the configuration).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
    /// Apply pending requests (by the ids `pending` shows, or `--all`).
    ///
    /// Example: volley suppress accept 3 4
    Accept {
        /// Ids of the requests.
        ids: Vec<u64>,
        /// Every pending request.
        #[arg(long)]
        all: bool,
        /// Spool directory (default: `[spool] dir` from the configuration).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
    /// Drop pending requests (by id, or `--all`) without applying them.
    ///
    /// Example: volley suppress reject 5
    Reject {
        /// Ids of the requests.
        ids: Vec<u64>,
        /// Every pending request.
        #[arg(long)]
        all: bool,
        /// Spool directory (default: `[spool] dir` from the configuration).
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
}

fn spool_root(explicit: Option<PathBuf>, config: Option<&Path>) -> Result<PathBuf> {
    Ok(match explicit {
        Some(dir) => dir,
        None => Config::discover(config)?.spool.dir,
    })
}

/// The pending requests `ids` (or all) taken out of the list.
fn take_pending(root: &Path, ids: &[u64], all: bool) -> Result<Vec<Pending>> {
    if ids.is_empty() && !all {
        bail!("give the ids of the requests (volley suppress pending shows them), or --all");
    }
    let list = PendingList::new(&SuppressionStore::dir(root));
    let known: Vec<u64> = list.list()?.iter().map(|p| p.id).collect();
    if let Some(missing) = ids.iter().find(|id| !known.contains(id)) {
        bail!("no pending request {missing} (volley suppress pending shows them)");
    }
    Ok(list.take((!all).then_some(ids))?)
}

fn open(explicit: Option<PathBuf>, config: Option<&Path>) -> Result<SuppressionStore> {
    let root = match explicit {
        Some(dir) => dir,
        None => Config::discover(config)?.spool.dir,
    };
    SuppressionStore::open(&root).with_context(|| {
        format!(
            "cannot open the suppression list in {}",
            SuppressionStore::dir(&root).display()
        )
    })
}

/// Runs a `suppress` subcommand.
pub fn run(cmd: SuppressCommand, config: Option<&Path>) -> Result<String> {
    match cmd {
        SuppressCommand::Add {
            addresses,
            domain,
            reason,
            detail,
            spool,
        } => {
            check_all(&addresses)?;
            let domain = domain.trim().to_lowercase();
            add(
                &mut open(spool, config)?,
                &addresses,
                &domain,
                &Reason::parse(&reason),
                detail.as_deref(),
            )
        }
        SuppressCommand::Remove {
            addresses,
            domain,
            spool,
        } => {
            check_all(&addresses)?;
            remove(&mut open(spool, config)?, &addresses, domain.as_deref())
        }
        SuppressCommand::List {
            domain,
            reason,
            json,
            spool,
        } => Ok(list(
            &open(spool, config)?,
            domain.as_deref(),
            reason.as_deref(),
            json,
        )),
        SuppressCommand::Import {
            file,
            domain,
            reason,
            spool,
        } => {
            let list = ImportList::read(&file)?;
            let domain = domain.trim().to_lowercase();
            import(
                &mut open(spool, config)?,
                &file,
                &list,
                &domain,
                &Reason::parse(&reason),
            )
        }
        SuppressCommand::Pending { json, spool } => {
            let root = spool_root(spool, config)?;
            let pending = PendingList::new(&SuppressionStore::dir(&root)).list()?;
            if json {
                let mut out = String::new();
                for p in &pending {
                    out.push_str(&serde_json::to_string(p)?);
                    out.push('\n');
                }
                return Ok(out);
            }
            let rows: Vec<Vec<String>> = pending
                .iter()
                .map(|p| {
                    vec![
                        p.id.to_string(),
                        p.address.clone(),
                        p.domain.clone(),
                        p.kind.clone(),
                        volley_control::plane::view::rfc3339(p.at as i64),
                        p.detail.escape_debug().to_string(),
                        p.source.escape_debug().to_string(),
                    ]
                })
                .collect();
            Ok(table::render(
                &[
                    "id", "address", "domain", "kind", "since", "detail", "source",
                ],
                &rows,
            ))
        }
        SuppressCommand::Accept { ids, all, spool } => {
            let root = spool_root(spool, config)?;
            let taken = take_pending(&root, &ids, all)?;
            let mut store = open(Some(root), None)?;
            let mut out = String::new();
            for p in &taken {
                let reason = Reason::parse(&p.kind);
                let added = store.add(&p.address, &p.domain, &reason, Some(&p.detail), p.at)?;
                writeln!(
                    out,
                    "{} {} for {} ({})",
                    if added {
                        "suppressed"
                    } else {
                        "already suppressed:"
                    },
                    p.address,
                    p.domain,
                    p.kind
                )?;
            }
            Ok(out)
        }
        SuppressCommand::Reject { ids, all, spool } => {
            let root = spool_root(spool, config)?;
            let taken = take_pending(&root, &ids, all)?;
            Ok(format!("{} pending requests dropped\n", taken.len()))
        }
    }
}

/// Refuses the whole command if any address is invalid, naming each one.
fn check_all(addresses: &[String]) -> Result<()> {
    let bad: Vec<String> = addresses
        .iter()
        .filter_map(|a| {
            volley_control::address::check(a)
                .err()
                .map(|why| format!("{a:?}: {why}"))
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "nothing done: {} invalid address{}: {}",
            bad.len(),
            if bad.len() == 1 { "" } else { "es" },
            bad.join("; ")
        );
    }
    Ok(())
}

fn add(
    store: &mut SuppressionStore,
    addresses: &[String],
    domain: &str,
    reason: &Reason,
    detail: Option<&str>,
) -> Result<String> {
    let mut out = String::new();
    let now = unix_now();
    let (mut added, mut present) = (0, 0);
    for a in addresses {
        if store.add(a, domain, reason, detail, now)? {
            added += 1;
            writeln!(out, "added {a}")?;
        } else {
            present += 1;
            writeln!(out, "already present {a}")?;
        }
    }
    writeln!(
        out,
        "{added} added, {present} already present (sending domain {domain}, reason {reason})"
    )?;
    Ok(out)
}

fn remove(
    store: &mut SuppressionStore,
    addresses: &[String],
    domain: Option<&str>,
) -> Result<String> {
    let mut out = String::new();
    let now = unix_now();
    let mut missing = 0;
    for a in addresses {
        let removed = store.remove(a, domain, now)?;
        if removed.is_empty() {
            missing += 1;
            match domain {
                Some(d) => writeln!(out, "not present {a} (sending domain {d})")?,
                None => writeln!(out, "not present {a}")?,
            }
        } else {
            writeln!(out, "removed {a} (sending domain {})", removed.join(", "))?;
        }
    }
    writeln!(
        out,
        "{} removed, {missing} not present",
        addresses.len() - missing
    )?;
    Ok(out)
}

fn since(entry: &Entry<'_>) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(entry.since)).to_string()
}

fn list(
    store: &SuppressionStore,
    domain: Option<&str>,
    reason: Option<&str>,
    json: bool,
) -> String {
    let domain = domain.map(|d| d.trim().to_lowercase());
    let mut entries: Vec<Entry<'_>> = store
        .iter()
        .filter(|e| domain.as_ref().is_none_or(|d| d == e.domain))
        .filter(|e| reason.is_none_or(|r| r.trim() == e.reason.as_str()))
        .collect();
    entries.sort_by(|a, b| {
        a.address
            .cmp(b.address)
            .then_with(|| a.domain.cmp(b.domain))
    });
    let mut out = String::new();
    if json {
        for e in &entries {
            let doc = serde_json::json!({
                "address": e.address,
                "domain": e.domain,
                "reason": e.reason.as_str(),
                "since": since(e),
                "since_unix": e.since,
                "detail": e.detail,
            });
            out.push_str(&doc.to_string());
            out.push('\n');
        }
        return out;
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.address.to_owned(),
                e.domain.to_string(),
                e.reason.to_string(),
                since(e),
                e.detail.unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["address", "domain", "reason", "since", "detail"],
        &rows,
    ));
    let _ = writeln!(
        out,
        "{} entr{} (of {})",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        store.len()
    );
    out
}

fn import(
    store: &mut SuppressionStore,
    file: &Path,
    list: &ImportList,
    domain: &str,
    reason: &Reason,
) -> Result<String> {
    let mut out = String::new();
    for r in &list.rejected {
        writeln!(
            out,
            "{}:{}: skipped {:?}: {}",
            file.display(),
            r.line,
            r.email,
            r.reason
        )?;
    }
    let added = store.add_many(
        list.addresses.iter().map(|(_, a)| a.as_str()),
        domain,
        reason,
        None,
        unix_now(),
    )?;
    writeln!(
        out,
        "imported {}: {} added, {} already present, {} rejected (sending domain {domain}, reason {reason})",
        file.display(),
        added.added,
        added.present,
        list.rejected.len()
    )?;
    Ok(out)
}
