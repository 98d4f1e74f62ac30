//! `volley send` while a daemon holds the spool: the campaign is handed to the
//! daemon over its API (the list uploaded, streamed; the template as JSON) and
//! its progress followed until every recipient has been tried once (with
//! `--wait`: until the campaign completes). Stopping the command (Ctrl-C)
//! stops the following, not the campaign.
//!
//! The token is `--token`/`$VOLLEY_TOKEN`/`[control] token_file` when one is
//! given; else, since whoever may run `volley send` here may open the store, a
//! sender token made for this command and revoked when it ends.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use volley_conf::Config;
use volley_control::recipients::{write_rejected, Rejected};
use volley_merge::TemplateSpec;

use super::SendArgs;
use crate::api_client::{base_url, token_or_mint, ApiClient};
use crate::campaign_cmd::percent;
use crate::table;

fn count(c: &Value, key: &str) -> i64 {
    c.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// Hands the campaign to the daemon and follows it; answers what `volley
/// send` prints.
pub fn run(
    args: &SendArgs,
    config: &Config,
    spec: &TemplateSpec,
    rejects_path: &std::path::Path,
) -> Result<String> {
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let base = base_url(None, config)
        .context("the spool is held by a running daemon, and its API is off")?;
    let (secret, minted) = token_or_mint(
        None,
        config,
        &runtime,
        "send",
        volley_control::store::tokens::Role::Sender,
    )?;
    let client = ApiClient::new(base, secret)?;
    let result = runtime.block_on(hand_over(&client, args, spec, rejects_path, started));
    if let Some(minted) = minted {
        minted.revoke(&runtime);
    }
    result
}

async fn hand_over(
    client: &ApiClient,
    args: &SendArgs,
    spec: &TemplateSpec,
    rejects_path: &std::path::Path,
    started: Instant,
) -> Result<String> {
    eprintln!(
        "volley: a daemon holds the spool: handing the campaign to it at {}",
        client.base()
    );
    let upload = client.post_file("/v1/uploads", &args.recipients).await?;
    let upload_id = upload["id"]
        .as_str()
        .context("the upload has no id")?
        .to_owned();
    let body = json!({
        "template": serde_json::to_value(spec)?,
        "upload": upload_id,
        "notify": args.notify,
    });
    let created = client.post("/v1/campaigns", &body).await?;
    let id = count(&created, "id");
    let mut signals = crate::stop::StopSignals::new()?;
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    let mut last_line = Instant::now();
    let mut partitioned_said = false;
    let campaign = loop {
        let c = client.get(&format!("/v1/campaigns/{id}")).await?;
        if c["partitioned"] == true && !partitioned_said {
            partitioned_said = true;
            eprintln!(
                "volley: campaign {id} queued: {} recipients in {} batches of up to {}",
                count(&c, "recipients"),
                count(&c, "batches"),
                count(&c, "batch_size")
            );
        }
        let closed = !c["completed_at"].is_null();
        let tried =
            c["partitioned"] == true && count(&c, "pending") == 0 && count(&c, "in_flight") == 0;
        if closed || (!args.wait && tried) {
            break c;
        }
        if last_line.elapsed() >= every {
            last_line = Instant::now();
            let done = count(&c, "delivered") + count(&c, "bounced") + count(&c, "expired");
            let line = format!(
                "campaign {id}: {done}/{} final, {} delivered, {} deferred, {} bounced, {:.0} msgs/s",
                count(&c, "recipients"),
                count(&c, "delivered"),
                count(&c, "deferred"),
                count(&c, "bounced"),
                c["msgs_per_s"].as_f64().unwrap_or(0.0)
            );
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = signals.recv() => {
                eprintln!("\nvolley: no longer following campaign {id}; the daemon goes on with it (volley campaign show {id})");
                break client.get(&format!("/v1/campaigns/{id}")).await?;
            }
        }
    };
    if tty {
        eprintln!();
    }
    // Rejected rows, with their line numbers, as a standalone send writes them.
    let mut rejected = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = client
            .get(&format!("/v1/campaigns/{id}/rejects?limit=1000{cursor}"))
            .await?;
        for r in page["rejects"].as_array().cloned().unwrap_or_default() {
            rejected.push(Rejected {
                line: r["line"].as_u64().unwrap_or(0),
                email: r["email"].as_str().unwrap_or_default().to_owned(),
                reason: r["reason"].as_str().unwrap_or_default().to_owned(),
            });
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={}", percent(next)),
            None => break,
        }
    }
    if !rejected.is_empty() {
        write_rejected(rejects_path, rejected.iter())
            .with_context(|| format!("cannot write {}", rejects_path.display()))?;
        eprintln!(
            "volley: {} rows rejected, {} recipients suppressed, listed with their line numbers in {}",
            count(&campaign, "rejected_rows"),
            count(&campaign, "suppressed"),
            rejects_path.display()
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let c = &campaign;
    let deferred = count(c, "deferred") + count(c, "pending") + count(c, "in_flight");
    let report = json!({
        "campaign": id,
        "recipients": count(c, "recipients"),
        "delivered": count(c, "delivered"),
        "deferred": deferred,
        "bounced": count(c, "bounced"),
        "expired": count(c, "expired"),
        "suppressed": count(c, "suppressed"),
        "rejected_rows": count(c, "rejected_rows"),
        "elapsed_s": elapsed,
        "msgs_per_s": if elapsed > 0.0 { count(c, "delivered") as f64 / elapsed } else { 0.0 },
    });
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let row = |name: &str, v: &Value| {
        vec![
            name.to_owned(),
            count(v, "recipients").to_string(),
            count(v, "delivered").to_string(),
            (count(v, "deferred") + count(v, "pending") + count(v, "in_flight")).to_string(),
            count(v, "bounced").to_string(),
            count(v, "expired").to_string(),
        ]
    };
    let mut rows: Vec<Vec<String>> = c["domains"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| row(d["domain"].as_str().unwrap_or("-"), d))
        .collect();
    rows.push(row("TOTAL", c));
    let mut out = table::render(
        &[
            "domain",
            "recipients",
            "delivered",
            "deferred",
            "bounced",
            "expired",
        ],
        &rows,
    );
    out.push_str(&format!(
        "campaign {id}: {} recipients, {} delivered, {deferred} deferred, {} bounced, {} expired, {} suppressed, {} rows rejected, {elapsed:.1} s, {:.0} msgs/s\n",
        count(c, "recipients"), count(c, "delivered"), count(c, "bounced"), count(c, "expired"), count(c, "suppressed"), count(c, "rejected_rows"),
        report["msgs_per_s"].as_f64().unwrap_or(0.0)
    ));
    Ok(out)
}
