//! What the API shows of a campaign: its row with counts, rates and the
//! per-domain table; and the per-recipient table, from the store's final rows
//! for done batches and from the batch files' slots for live ones.

use serde::Serialize;
use volley_queue::slot::final_status;
use volley_queue::BatchView;

use super::{Plane, PlaneError};
use crate::store::batches::Counts;
use crate::store::campaigns::Campaign;
use crate::store::now;

/// Domains listed in a campaign's per-domain table.
pub const DOMAINS_SHOWN: i64 = 50;

/// Failure reasons a campaign's view shows.
pub const REASONS_SHOWN: i64 = 5;

/// A campaign as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignView {
    /// Its id.
    pub id: i64,
    /// Where it stands.
    pub state: &'static str,
    /// Its API path.
    pub url: String,
    /// Recipients queued.
    pub recipients: i64,
    /// Not attempted yet.
    pub pending: i64,
    /// In a transaction now.
    pub in_flight: i64,
    /// Accepted by their receivers.
    pub delivered: i64,
    /// Refused for now, to be retried.
    pub deferred: i64,
    /// Refused for good.
    pub bounced: i64,
    /// Given up on (retry limit, or `stop_at`).
    pub expired: i64,
    /// Not sent because suppressed (before queueing, or while queued).
    pub suppressed: i64,
    /// Not sent: the campaign was cancelled, or an operator purged them
    /// (`volley queue purge`).
    pub cancelled: i64,
    /// Rows of the list skipped (see `/rejects`).
    pub rejected_rows: i64,
    /// Recipients who clicked a tracked link or replied: they read it (the
    /// post office design's acknowledgement).
    pub acknowledged: i64,
    /// Recipients who replied (to the message's VERP address).
    pub replied: i64,
    /// Recipients who clicked at least one tracked link.
    pub clicked: i64,
    /// Recipients whose open image was fetched: unreliable (some readers fetch
    /// every image, Apple Mail Privacy Protection among them).
    pub opened: i64,
    /// Recipients who unsubscribed: over the one-click link or its page, or
    /// by mail (a verified request).
    pub unsubscribed: i64,
    /// Recipients who reported the message as spam (verified complaints).
    pub complained: i64,
    /// Recipients sent again because the gateway that held their batch was
    /// lost (a fleet): at most this many may have arrived twice.
    pub resent_after_failure: i64,
    /// Whether every batch has been written (the counts are final then).
    pub partitioned: bool,
    /// Batches.
    pub batches: i64,
    /// Delivered per second since it started.
    pub msgs_per_s: f64,
    /// Seconds left at that rate (`null` until there is a rate, or when done).
    pub eta_s: Option<f64>,
    /// RFC 3339 times.
    pub created_at: String,
    /// When its first batch went to delivery.
    pub started_at: Option<String>,
    /// When its last recipient became final.
    pub completed_at: Option<String>,
    /// RFC 3339, if scheduled.
    pub start_at: Option<String>,
    /// RFC 3339, if set.
    pub stop_at: Option<String>,
    /// Recipients per batch.
    pub batch_size: i64,
    /// Summary addresses.
    pub notify: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The largest domains, with their counts.
    pub domains: Vec<DomainView>,
    /// The commonest reasons recipients failed (bounced or expired), as
    /// their batches complete.
    pub reasons: Vec<ReasonView>,
}

/// One of a campaign's commonest failure reasons.
#[derive(Debug, Clone, Serialize)]
pub struct ReasonView {
    /// The SMTP reply code (0: none, e.g. DNS).
    pub code: i64,
    /// The enhanced status code, or "".
    pub enhanced: String,
    /// Recipients that failed so.
    pub count: i64,
    /// One such reply, as an example.
    pub sample: String,
}

/// One row of a campaign's per-domain table.
#[derive(Debug, Clone, Serialize)]
pub struct DomainView {
    /// The destination domain.
    pub domain: String,
    /// Its recipients by state.
    #[serde(flatten)]
    pub counts: Counts,
}

pub use crate::store::rfc3339;

/// A per-recipient table row.
#[derive(Debug, Clone, Serialize)]
pub struct RecipientView {
    /// The address.
    pub email: String,
    /// `pending`, `in_flight`, `deferred`, `delivered`, `bounced`, `expired`,
    /// `suppressed` or `cancelled`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// Last SMTP reply code, if any.
    pub code: Option<i64>,
    /// Last enhanced status code, if known.
    pub enhanced: Option<String>,
    /// Last reply text or reason, if known.
    pub reply: Option<String>,
    /// RFC 3339 time of the last outcome, if known.
    pub at: Option<String>,
    /// Batch and index: where it is in the queue.
    pub batch: i64,
    /// Index in its batch.
    pub index: i64,
    /// Whether it clicked a tracked link (read the message).
    pub acknowledged: bool,
}

/// The statuses a recipient can have, for `?status=`.
pub const STATUSES: [&str; 8] = [
    "pending",
    "in_flight",
    "deferred",
    "delivered",
    "bounced",
    "expired",
    "suppressed",
    "cancelled",
];

impl Plane {
    /// Campaign `c` with its counts and per-domain table.
    pub async fn view(&self, c: &Campaign) -> Result<CampaignView, PlaneError> {
        let counts = self.store.campaign_counts(c.id).await?;
        let engaged = self.store.engagement_counts(c.id).await?;
        let domains = self
            .store
            .domain_counts(c.id, DOMAINS_SHOWN)
            .await?
            .into_iter()
            .map(|(domain, counts)| DomainView { domain, counts })
            .collect();
        let reasons = self
            .store
            .failure_reasons(c.id, REASONS_SHOWN)
            .await?
            .into_iter()
            .map(|(code, enhanced, count, sample)| ReasonView {
                code,
                enhanced,
                count,
                sample,
            })
            .collect();
        let end = c.completed_at.unwrap_or_else(now);
        let elapsed = c.started_at.map_or(0, |s| end - s).max(1) as f64;
        let rate = if c.started_at.is_some() {
            counts.delivered as f64 / elapsed
        } else {
            0.0
        };
        let left = counts.unfinished();
        Ok(CampaignView {
            id: c.id,
            state: c.state.name(),
            url: format!("/v1/campaigns/{}", c.id),
            recipients: c.recipients.max(counts.recipients),
            pending: counts.pending,
            in_flight: counts.in_flight,
            delivered: counts.delivered,
            deferred: counts.deferred,
            bounced: counts.bounced,
            expired: counts.expired,
            suppressed: counts.suppressed + c.suppressed,
            cancelled: counts.cancelled,
            rejected_rows: c.rejected_rows,
            acknowledged: engaged.acknowledged,
            replied: engaged.replied,
            clicked: engaged.clicked,
            opened: engaged.opened,
            unsubscribed: engaged.unsubscribed,
            complained: engaged.complained,
            resent_after_failure: self.store.resent_after_failure(c.id).await?,
            partitioned: c.partitioned,
            batches: c.batches,
            msgs_per_s: (rate * 10.0).round() / 10.0,
            eta_s: (rate > 0.0 && left > 0 && c.completed_at.is_none())
                .then(|| (left as f64 / rate).round()),
            created_at: rfc3339(c.created_at),
            started_at: c.started_at.map(rfc3339),
            completed_at: c.completed_at.map(rfc3339),
            start_at: c.start_at.map(rfc3339),
            stop_at: c.stop_at.map(rfc3339),
            batch_size: c.batch_size,
            notify: c.notify.clone(),
            tags: c.tags.clone(),
            domains,
            reasons,
        })
    }

    /// A page of campaign `c`'s per-recipient table in queue order from
    /// `cursor` (batch, index), optionally only those with `status`; answers
    /// the rows and the cursor of the next page (`None`: this was the last).
    pub async fn recipients(
        &self,
        c: &Campaign,
        status: Option<&str>,
        cursor: (i64, i64),
        limit: usize,
    ) -> Result<(Vec<RecipientView>, Option<(i64, i64)>), PlaneError> {
        let (mut rows, next) = self.recipients_page(c, status, cursor, limit).await?;
        let mut batch = None;
        let mut clicked = Vec::new();
        for row in &mut rows {
            if batch != Some(row.batch) {
                clicked = self.store.acknowledged_in_batch(c.id, row.batch).await?;
                batch = Some(row.batch);
            }
            row.acknowledged = clicked.binary_search(&row.index).is_ok();
        }
        Ok((rows, next))
    }

    async fn recipients_page(
        &self,
        c: &Campaign,
        status: Option<&str>,
        cursor: (i64, i64),
        limit: usize,
    ) -> Result<(Vec<RecipientView>, Option<(i64, i64)>), PlaneError> {
        let mut out = Vec::new();
        let (mut batch, mut index) = cursor;
        loop {
            let rows = self.store.batch_rows(c.id, batch, 64).await?;
            if rows.is_empty() {
                return Ok((out, None));
            }
            for row in &rows {
                if row.batch != batch {
                    index = 0;
                }
                batch = row.batch;
                let want = limit - out.len();
                let (found, next) = if row.state == "done" {
                    let got = self
                        .store
                        .final_recipients(c.id, row.batch, index, status, want + 1)
                        .await?;
                    let more = got.len() > want;
                    let next = if more {
                        got.get(want).map(|r| r.idx)
                    } else {
                        None
                    };
                    let views = got
                        .into_iter()
                        .take(want)
                        .map(|r| RecipientView {
                            email: r.email,
                            status: r.status,
                            attempts: r.attempts,
                            code: (r.code != 0).then_some(r.code),
                            enhanced: Some(r.enhanced).filter(|e| !e.is_empty()),
                            reply: Some(r.reply).filter(|e| !e.is_empty()),
                            at: Some(rfc3339(r.at)),
                            batch: row.batch,
                            index: r.idx,
                            acknowledged: false,
                        })
                        .collect();
                    (views, next)
                } else {
                    self.live_recipients(c, row.batch, index, status, want)
                        .await?
                };
                out.extend(found);
                if let Some(next) = next {
                    return Ok((out, Some((row.batch, next))));
                }
                if out.len() >= limit {
                    return Ok((out, Some((row.batch + 1, 0))));
                }
                index = 0;
            }
            batch = rows.last().map_or(batch, |r| r.batch) + 1;
            index = 0;
        }
    }

    /// Rows of a live batch from its file (its slots are the truth while it is
    /// live; its replies are written with its outcomes when it is done).
    async fn live_recipients(
        &self,
        c: &Campaign,
        batch: i64,
        from: i64,
        status: Option<&str>,
        want: usize,
    ) -> Result<(Vec<RecipientView>, Option<i64>), PlaneError> {
        let name = volley_queue::Spool::file_name(c.id as u64, batch as u64);
        let Some(path) = self.spool.find(&name) else {
            return Ok((Vec::new(), None));
        };
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| PlaneError::Internal(format!("cannot read {}: {e}", path.display())))?;
        let view = BatchView::parse(&bytes)
            .map_err(|e| PlaneError::Internal(format!("{}: {e}", path.display())))?;
        let mut out = Vec::new();
        for i in (from.max(0) as usize)..view.len() {
            let Ok(slot) = view.slot(i) else { continue };
            let name = final_status(slot);
            if status.is_some_and(|s| s != name) {
                continue;
            }
            if out.len() == want {
                return Ok((out, Some(i as i64)));
            }
            out.push(RecipientView {
                email: view.recipient(i).map(|r| r.address()).unwrap_or_default(),
                status: name.to_owned(),
                attempts: i64::from(slot.attempts),
                code: (slot.code != 0).then_some(i64::from(slot.code)),
                // A live batch's replies reach the store with its outcomes.
                enhanced: None,
                reply: None,
                at: None,
                batch,
                index: i as i64,
                acknowledged: false,
            });
        }
        Ok((out, None))
    }
}
