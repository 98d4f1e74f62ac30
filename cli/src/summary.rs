//! The summary a campaign's requester gets when it completes (or is cancelled,
//! or its `stop_at` passes): counts, the per-domain table, the commonest
//! failure reasons, elapsed time and rate, as a plain-text message to its
//! `notify` addresses, queued in the spool like relayed mail (from `<>`, so
//! that nothing bounces back about it) and sent through volley's own delivery.

use anyhow::{Context, Result};
use bytes::BytesMut;
use volley_control::plane::view::CampaignView;
use volley_control::plane::Plane;
use volley_engine::deposit::SpoolDeposit;

use crate::table;

/// The text of campaign `c`'s summary (its view, and its failure reasons:
/// (code, enhanced, count, example)).
pub fn text(c: &CampaignView, reasons: &[(i64, String, i64, String)]) -> String {
    let mut out = format!(
        "Campaign {} is {}.\n\n{} recipients: {} delivered, {} bounced, {} expired, {} suppressed, {} cancelled, {} not final.\n{} rows of the list were rejected.\n",
        c.id,
        c.state,
        c.recipients,
        c.delivered,
        c.bounced,
        c.expired,
        c.suppressed,
        c.cancelled,
        c.pending + c.in_flight + c.deferred,
        c.rejected_rows
    );
    out.push_str(&format!(
        "Submitted {}, started {}, finished {}; {} messages per second.\n\n",
        c.created_at,
        c.started_at.as_deref().unwrap_or("-"),
        c.completed_at.as_deref().unwrap_or("-"),
        c.msgs_per_s
    ));
    let rows: Vec<Vec<String>> = c
        .domains
        .iter()
        .map(|d| {
            let n = &d.counts;
            vec![
                d.domain.clone(),
                n.recipients.to_string(),
                n.delivered.to_string(),
                (n.deferred + n.pending + n.in_flight).to_string(),
                n.bounced.to_string(),
                n.expired.to_string(),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "domain",
            "recipients",
            "delivered",
            "deferred",
            "bounced",
            "expired",
        ],
        &rows,
    ));
    if !reasons.is_empty() {
        out.push_str("\nCommonest failures:\n");
        for (code, enhanced, n, sample) in reasons {
            let sample: String = sample
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            out.push_str(&format!("  {n:>8}  {code} {enhanced}  {sample}\n"));
        }
    }
    out
}

/// The whole message (CRLF lines) to `to`, from `From: volley <postmaster@HELO>`.
pub fn message(
    c: &CampaignView,
    reasons: &[(i64, String, i64, String)],
    to: &[String],
    helo: &str,
    now: u64,
) -> Vec<u8> {
    let mut date = BytesMut::new();
    volley_smtp::date::write_date(now, &mut date);
    let mut head = format!(
        "From: volley <postmaster@{helo}>\r\nTo: {}\r\nSubject: Campaign {} {}: {} delivered of {}\r\nDate: {}\r\nMessage-ID: <summary.{}.{now}@{helo}>\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        to.join(", "),
        c.id,
        c.state,
        c.delivered,
        c.recipients,
        String::from_utf8_lossy(&date),
        c.id
    );
    for line in text(c, reasons).lines() {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.into_bytes()
}

/// Queues the summaries the plane says are due into the spool through
/// `deposit`, marking each queued in the store. Answers how many.
pub async fn queue_due(plane: &Plane, deposit: &SpoolDeposit, helo: &str) -> Result<usize> {
    let mut queued = 0;
    for id in plane.take_summaries() {
        let Some(c) = plane.store().campaign(id).await? else {
            continue;
        };
        if c.summary_queued || c.notify.is_empty() {
            continue;
        }
        let view = plane.view(&c).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let reasons = plane.store().failure_reasons(id, 10).await?;
        let msg = message(
            &view,
            &reasons,
            &c.notify,
            helo,
            volley_engine::host::unix_now(),
        );
        deposit
            .store("", &c.notify, &msg)
            .with_context(|| format!("cannot queue the summary of campaign {id}"))?;
        plane.store().summary_queued(id).await?;
        tracing::info!(campaign = id, to = ?c.notify, "campaign summary queued");
        queued += 1;
    }
    Ok(queued)
}
