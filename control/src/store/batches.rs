//! Batch rows, their per-domain progress, and the final per-recipient rows.
//!
//! A batch row is made when its campaign is partitioned (all of a campaign's in
//! one transaction, with the campaign marked partitioned), holds the lease
//! fields a fleet needs (holder, epoch, expiry) and is updated in place; its
//! progress rows (one per destination domain in it) are updated in place as
//! delivery goes on; the final outcomes of its recipients are written once,
//! when the batch is done, as one row (a JSON array: a row per recipient would
//! cost the store a row write per message), with the campaign's failure
//! reasons counted beside them. While a batch is live its file's slots are the truth and the
//! progress rows a copy at most a few seconds old.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::campaigns::INSERT_ROWS;
use super::events::BatchOutcomes;
use super::{now, Backend, Context, Store, StoreError};
use crate::recipients::Rejected;

/// Recipients by state: a batch's, a domain's or a campaign's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counts {
    /// Every recipient.
    pub recipients: i64,
    /// Not attempted yet.
    pub pending: i64,
    /// In a transaction now.
    pub in_flight: i64,
    /// Accepted by the receiver.
    pub delivered: i64,
    /// Temporarily refused, to be retried.
    pub deferred: i64,
    /// Permanently refused.
    pub bounced: i64,
    /// Given up on (retry limit or `stop_at`).
    pub expired: i64,
    /// Stopped before sending: suppressed while queued.
    pub suppressed: i64,
    /// Finalised unsent: the campaign was cancelled, or an operator purged
    /// them from the queue.
    pub cancelled: i64,
}

/// The queue as `/metrics` shows it ([`Store::queue_gauges`]).
#[derive(Debug, Clone, Default)]
pub struct QueueGauges {
    /// Recipients of live batches not final yet, by state (pending,
    /// in_flight, deferred).
    pub recipients: Vec<(String, i64)>,
    /// Live batches by state.
    pub batches: Vec<(String, i64)>,
    /// Campaigns by state.
    pub campaigns: Vec<(String, i64)>,
    /// Leases held by gateways and not expired.
    pub leases: i64,
}

impl Counts {
    /// Recipients not final yet.
    pub fn unfinished(&self) -> i64 {
        self.pending + self.in_flight + self.deferred
    }
}

/// One batch of a partitioned campaign: its id and its recipients per
/// destination domain (lower case, in batch order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCut {
    /// Batch id.
    pub batch: i64,
    /// (domain, recipients) in the order they come in the batch.
    pub domains: Vec<(String, i64)>,
}

/// The progress of one domain of one live batch ([`Store::record_progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// Destination domain.
    pub domain: String,
    /// Its recipients by state.
    pub counts: Counts,
}

/// One recipient's final outcome, as written when its batch is done.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(from = "Packed")]
pub struct FinalRecipient {
    /// Index in its batch.
    pub idx: i64,
    /// Address.
    pub email: String,
    /// `delivered`, `bounced`, `expired`, `suppressed` or `cancelled`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// Last SMTP code (0: none).
    pub code: i64,
    /// Last enhanced status code, or "".
    pub enhanced: String,
    /// Last reply text or local reason, or "".
    pub reply: String,
    /// Unix second of the outcome.
    pub at: i64,
}

/// A [`FinalRecipient`] as stored: an array, without field names (a batch's
/// outcomes are one JSON array of these).
#[derive(serde::Deserialize)]
struct Packed(i64, String, String, i64, i64, String, String, i64);

impl Serialize for FinalRecipient {
    /// As [`Packed`], borrowed (every completed batch writes 100 of these:
    /// no copy of their strings).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (
            self.idx,
            &self.email,
            &self.status,
            self.attempts,
            self.code,
            &self.enhanced,
            &self.reply,
            self.at,
        )
            .serialize(s)
    }
}

impl From<Packed> for FinalRecipient {
    fn from(p: Packed) -> FinalRecipient {
        FinalRecipient {
            idx: p.0,
            email: p.1,
            status: p.2,
            attempts: p.3,
            code: p.4,
            enhanced: p.5,
            reply: p.6,
            at: p.7,
        }
    }
}

/// One failure reason of batches being completed: ((campaign, code,
/// enhanced), (count, an example reply)).
type FailureCount<'a> = ((i64, i64, &'a str), (i64, &'a str));

/// A batch found done ([`Store::complete_batches`]).
#[derive(Debug, Clone)]
pub struct DoneBatch {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// Final counts per domain.
    pub domains: Vec<(String, Counts)>,
    /// Every recipient, by index.
    pub recipients: Vec<FinalRecipient>,
}

/// A batch row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRow {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// Its first destination domain.
    pub site: String,
    /// Its recipients.
    pub recipients: i64,
    /// `queued` or `done`.
    pub state: String,
}

const COUNT_COLUMNS: &str =
    "recipients, pending, in_flight, delivered, deferred, bounced, expired, suppressed, cancelled";

fn sums() -> String {
    COUNT_COLUMNS
        .split(", ")
        .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts_of(row: &AnyRow) -> Result<Counts, StoreError> {
    let get = |c: &'static str| row.try_get::<i64, _>(c).what("read counts");
    Ok(Counts {
        recipients: get("recipients")?,
        pending: get("pending")?,
        in_flight: get("in_flight")?,
        delivered: get("delivered")?,
        deferred: get("deferred")?,
        bounced: get("bounced")?,
        expired: get("expired")?,
        suppressed: get("suppressed")?,
        cancelled: get("cancelled")?,
    })
}

/// The placeholders of a multi-row `VALUES` list: `$1, $2, …` for PostgreSQL,
/// `?` for SQLite, whose named parameters are looked up one by one in a list
/// (`sqlite3_bind_parameter_name` walks it: binding n `$N` parameters costs n²,
/// half of volley's CPU at 250 rows a statement before this).
pub(super) fn values(backend: Backend, rows: usize, columns: usize) -> String {
    values_from(backend, 1, rows, columns)
}

/// [`values`] for a statement whose first `first - 1` parameters (`$1`, …)
/// come before the list: numbered from `$first` for PostgreSQL, `?first`
/// for SQLite (sqlx numbers a bare `?` apart from the named ones, so after
/// `$1` a `?` would take the first argument again).
///
/// Bound rather than written into the text: a statement's text then depends
/// only on its row count, so each connection prepares it once and PostgreSQL
/// keeps its plan (written-in values made each lease and report parse and plan
/// new statements, ~15% of the database's CPU in `benches/lease.py`).
pub(super) fn values_from(backend: Backend, first: usize, rows: usize, columns: usize) -> String {
    let mut out = String::new();
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            let n = first + r * columns + c;
            match backend {
                Backend::Sqlite if first == 1 => out.push('?'),
                Backend::Sqlite => out.push_str(&format!("?{n}")),
                Backend::Postgres => out.push_str(&format!("${n}")),
            }
        }
        out.push(')');
    }
    out
}

impl Store {
    /// Records the result of partitioning campaign `id`, all or nothing: its
    /// batch rows and their progress rows (every recipient pending), its
    /// rejected rows and the rows dropped as suppressed (both listed with their
    /// reasons), its counts, and the mark that it is partitioned. Rows already
    /// there (a resumed partitioning) are left alone.
    pub async fn set_partitioned(
        &self,
        id: i64,
        cuts: &[BatchCut],
        rejected: &[Rejected],
        suppressed: &[Rejected],
    ) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.pool().begin().await.what("begin a partitioning")?;
        let mut recipients = 0i64;
        for chunk in cuts.chunks(INSERT_ROWS) {
            let sql = format!(
                "INSERT INTO batches (campaign, batch, site, recipients, state, lease_epoch, updated_at) VALUES {} ON CONFLICT DO NOTHING",
                values(self.backend(), chunk.len(), 7)
            );
            let mut query = sqlx::query(&sql);
            for cut in chunk {
                let total: i64 = cut.domains.iter().map(|d| d.1).sum();
                recipients += total;
                let site = cut.domains.first().map(|d| d.0.clone()).unwrap_or_default();
                query = query
                    .bind(id)
                    .bind(cut.batch)
                    .bind(site)
                    .bind(total)
                    .bind("queued")
                    .bind(0i64)
                    .bind(at);
            }
            query.execute(&mut *tx).await.what("insert batch rows")?;
        }
        let domains: Vec<(i64, &str, i64)> = cuts
            .iter()
            .flat_map(|c| c.domains.iter().map(|(d, n)| (c.batch, d.as_str(), *n)))
            .collect();
        for chunk in domains.chunks(INSERT_ROWS) {
            let sql = format!(
                "INSERT INTO progress (campaign, batch, domain, {COUNT_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING",
                values(self.backend(), chunk.len(), 12)
            );
            let mut query = sqlx::query(&sql);
            for (batch, domain, n) in chunk {
                query = query
                    .bind(id)
                    .bind(*batch)
                    .bind(domain.to_string())
                    .bind(*n)
                    .bind(*n);
                for _ in 0..7 {
                    query = query.bind(0i64);
                }
            }
            query.execute(&mut *tx).await.what("insert progress rows")?;
        }
        for chunk in rejected
            .chunks(INSERT_ROWS)
            .chain(suppressed.chunks(INSERT_ROWS))
        {
            let sql = format!(
                "INSERT INTO rejects (campaign, line, email, reason) VALUES {} ON CONFLICT DO NOTHING",
                values(self.backend(), chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(id)
                    .bind(r.line as i64)
                    .bind(r.email.clone())
                    .bind(r.reason.clone());
            }
            query.execute(&mut *tx).await.what("insert rejected rows")?;
        }
        sqlx::query(
            "UPDATE campaigns SET partitioned = 1, recipients = $1, rejected_rows = $2, suppressed = $3, batches = $4 WHERE id = $5",
        )
        .bind(recipients)
        .bind(rejected.len() as i64)
        .bind(suppressed.len() as i64)
        .bind(cuts.len() as i64)
        .bind(id)
        .execute(&mut *tx)
        .await
        .what("mark a campaign partitioned")?;
        tx.commit().await.what("commit a partitioning")?;
        if self.backend() == Backend::Postgres {
            // The planner's view of the tables just grown: with statistics
            // from before the cut, a lease request's read of run-out leases
            // walked the whole campaign instead of its small index (0.6 ms
            // a request), until autovacuum came by a minute later.
            if let Err(e) = sqlx::query("ANALYZE batches, progress")
                .execute(self.pool())
                .await
            {
                tracing::warn!(error = %e, "could not analyze the batch tables");
            }
        }
        Ok(())
    }

    /// Updates the progress rows of live batches (those of batches already done
    /// are left alone: their final counts are written with them). One
    /// statement per [`INSERT_ROWS`] / 12 rows: an upsert whose update applies
    /// only while the batch is not done.
    pub async fn record_progress(&self, progress: &[Progress]) -> Result<(), StoreError> {
        if progress.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await.what("begin a progress update")?;
        self.upsert_progress(&mut tx, progress, true).await?;
        tx.commit().await.what("commit a progress update")?;
        Ok(())
    }

    /// Writes progress rows in multi-row upserts; with `live_only`, a row of
    /// a batch that is done is not changed.
    pub(super) async fn upsert_progress(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        progress: &[Progress],
        live_only: bool,
    ) -> Result<(), StoreError> {
        let only = if live_only {
            " WHERE EXISTS (SELECT 1 FROM batches b WHERE b.campaign = excluded.campaign AND b.batch = excluded.batch AND b.state <> 'done')"
        } else {
            ""
        };
        for chunk in progress.chunks(INSERT_ROWS / 12) {
            let sql = format!(
                "INSERT INTO progress (campaign, batch, domain, {COUNT_COLUMNS}) VALUES {} \
                 ON CONFLICT (campaign, batch, domain) DO UPDATE SET pending = excluded.pending, in_flight = excluded.in_flight, \
                 delivered = excluded.delivered, deferred = excluded.deferred, bounced = excluded.bounced, expired = excluded.expired, \
                 suppressed = excluded.suppressed, cancelled = excluded.cancelled{only}",
                values(self.backend(), chunk.len(), 12)
            );
            let mut query = sqlx::query(&sql);
            for p in chunk {
                let c = &p.counts;
                query = query
                    .bind(p.campaign)
                    .bind(p.batch)
                    .bind(p.domain.clone())
                    .bind(c.recipients)
                    .bind(c.pending)
                    .bind(c.in_flight)
                    .bind(c.delivered)
                    .bind(c.deferred)
                    .bind(c.bounced)
                    .bind(c.expired)
                    .bind(c.suppressed)
                    .bind(c.cancelled);
            }
            query.execute(&mut **tx).await.what("write progress")?;
        }
        Ok(())
    }

    /// Records batches as done, all or nothing: the batch rows' state, final
    /// progress, each batch's outcomes (one row) and the campaigns' failure
    /// reasons, in a handful of multi-row statements, with `outcomes` (their
    /// delivery events, [`Store::add_outcomes`]). A batch done already is left
    /// as it is (a completion repeated after a crash).
    pub async fn complete_batches(
        &self,
        done: &[DoneBatch],
        outcomes: &[BatchOutcomes],
    ) -> Result<(), StoreError> {
        if done.is_empty() && outcomes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await.what("begin a batch completion")?;
        self.complete_in(&mut tx, done, outcomes).await?;
        tx.commit().await.what("commit a batch completion")?;
        Ok(())
    }

    /// The writes of [`Store::complete_batches`], in `tx`.
    pub(super) async fn complete_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        done: &[DoneBatch],
        outcomes: &[BatchOutcomes],
    ) -> Result<(), StoreError> {
        if !outcomes.is_empty() {
            // The outbox's lock first, as every writer of events takes it.
            self.lock_outbox(tx).await?;
        }
        let at = now();
        // Which of them this call completes (the others were before).
        let mut newly: Vec<&DoneBatch> = Vec::new();
        for chunk in done.chunks(INSERT_ROWS / 2) {
            let list = values_from(self.backend(), 2, chunk.len(), 2);
            let sql = format!(
                "UPDATE batches SET state = 'done', lease_holder = NULL, lease_expires = NULL, updated_at = $1 \
                 WHERE state <> 'done' AND (campaign, batch) IN (VALUES {list}) RETURNING campaign, batch"
            );
            let mut query = sqlx::query(&sql).bind(at);
            for b in chunk {
                query = query.bind(b.campaign).bind(b.batch);
            }
            let rows = query.fetch_all(&mut **tx).await.what("complete batches")?;
            for r in rows {
                let key: (i64, i64) = (
                    r.try_get("campaign").what("read a batch")?,
                    r.try_get("batch").what("read a batch")?,
                );
                if let Some(b) = chunk.iter().find(|b| (b.campaign, b.batch) == key) {
                    newly.push(b);
                }
            }
        }
        let progress: Vec<Progress> = newly
            .iter()
            .flat_map(|b| {
                b.domains.iter().map(|(domain, counts)| Progress {
                    campaign: b.campaign,
                    batch: b.batch,
                    domain: domain.clone(),
                    counts: *counts,
                })
            })
            .collect();
        self.upsert_progress(tx, &progress, false).await?;
        for chunk in newly.chunks(INSERT_ROWS / 3) {
            let sql = format!(
                "INSERT INTO outcomes (campaign, batch, recipients) VALUES {} ON CONFLICT DO NOTHING",
                values(self.backend(), chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for b in chunk {
                let packed = serde_json::to_string(&b.recipients)
                    .map_err(|e| StoreError::Corrupt(format!("outcomes: {e}")))?;
                query = query.bind(b.campaign).bind(b.batch).bind(packed);
            }
            query.execute(&mut **tx).await.what("write outcomes")?;
        }
        // Failure reasons, summed over the batches first.
        let mut failed: Vec<FailureCount<'_>> = Vec::new();
        for b in &newly {
            for r in &b.recipients {
                if r.status != "bounced" && r.status != "expired" {
                    continue;
                }
                let key = (b.campaign, r.code, r.enhanced.as_str());
                match failed.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, (n, _))) => *n += 1,
                    None => failed.push((key, (1, &r.reply))),
                }
            }
        }
        for chunk in failed.chunks(INSERT_ROWS / 5) {
            let sql = format!(
                "INSERT INTO failures (campaign, code, enhanced, count, sample) VALUES {} \
                 ON CONFLICT (campaign, code, enhanced) DO UPDATE SET count = failures.count + excluded.count",
                values(self.backend(), chunk.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for ((campaign, code, enhanced), (n, sample)) in chunk {
                query = query
                    .bind(*campaign)
                    .bind(*code)
                    .bind(enhanced.to_string())
                    .bind(*n)
                    .bind(sample.chars().take(300).collect::<String>());
            }
            query
                .execute(&mut **tx)
                .await
                .what("count failure reasons")?;
        }
        // The outcomes of batches completed now, or live ones; a batch done
        // before (a completion repeated after a crash) has its events.
        let outcomes: Vec<BatchOutcomes> = outcomes
            .iter()
            .filter(|o| {
                let key = (o.campaign, o.batch);
                newly.iter().any(|b| (b.campaign, b.batch) == key)
                    || !done.iter().any(|b| (b.campaign, b.batch) == key)
            })
            .cloned()
            .collect();
        let completed: Vec<(i64, i64)> = newly.iter().map(|b| (b.campaign, b.batch)).collect();
        self.insert_outcomes(tx, &outcomes, &completed).await?;
        Ok(())
    }

    /// A campaign's recipients by state, over its batches (live batches as of
    /// their last progress update).
    pub async fn campaign_counts(&self, campaign: i64) -> Result<Counts, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM progress WHERE campaign = $1",
            sums()
        ))
        .bind(campaign)
        .fetch_one(self.pool())
        .await
        .what("count a campaign's recipients")?;
        counts_of(&row)
    }

    /// A campaign's recipients by state per destination domain, the `limit`
    /// largest domains first.
    pub async fn domain_counts(
        &self,
        campaign: i64,
        limit: i64,
    ) -> Result<Vec<(String, Counts)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT domain, {} FROM progress WHERE campaign = $1 GROUP BY domain ORDER BY SUM(recipients) DESC, domain LIMIT $2",
            sums()
        ))
        .bind(campaign)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("count a campaign's domains")?;
        rows.iter()
            .map(|r| Ok((r.try_get("domain").what("read a domain")?, counts_of(r)?)))
            .collect()
    }

    /// The commonest reasons a campaign's recipients failed (bounced or
    /// expired), by (code, enhanced code): each with its count and one reply
    /// as an example, the `limit` commonest first.
    pub async fn failure_reasons(
        &self,
        campaign: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String, i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT code, enhanced, count AS n, sample FROM failures WHERE campaign = $1 ORDER BY count DESC, code LIMIT $2",
        )
        .bind(campaign)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("count failure reasons")?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("code").what("read a reason")?,
                    r.try_get("enhanced").what("read a reason")?,
                    r.try_get("n").what("read a reason")?,
                    r.try_get("sample").what("read a reason")?,
                ))
            })
            .collect()
    }

    /// The live batches' recipients by destination domain, the `limit`
    /// domains with the most unfinished recipients first (`GET /v1/queue`,
    /// `volley top`).
    pub async fn queue_domains(&self, limit: i64) -> Result<Vec<(String, Counts)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT domain, {} FROM progress \
             WHERE (campaign, batch) IN (SELECT campaign, batch FROM batches WHERE state <> 'done') \
             GROUP BY domain ORDER BY SUM(pending + in_flight + deferred) DESC, domain LIMIT $1",
            sums()
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("count the queue's domains")?;
        rows.iter()
            .map(|r| Ok((r.try_get("domain").what("read a domain")?, counts_of(r)?)))
            .collect()
    }

    /// What `/metrics` shows of the queue at `now`: recipients not final by
    /// state, live batches by state, campaigns by state, and the leases held.
    pub async fn queue_gauges(&self, now: i64) -> Result<QueueGauges, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(p.pending), 0) AS BIGINT) AS pending, \
             CAST(COALESCE(SUM(p.in_flight), 0) AS BIGINT) AS in_flight, \
             CAST(COALESCE(SUM(p.deferred), 0) AS BIGINT) AS deferred \
             FROM progress p JOIN batches b ON b.campaign = p.campaign AND b.batch = p.batch \
             WHERE b.state <> 'done'",
        )
        .fetch_one(self.pool())
        .await
        .what("count the queue")?;
        let get = |c: &'static str| row.try_get::<i64, _>(c).what("read the queue's counts");
        let recipients = vec![
            ("pending".to_owned(), get("pending")?),
            ("in_flight".to_owned(), get("in_flight")?),
            ("deferred".to_owned(), get("deferred")?),
        ];
        let by_state = |sql: &'static str, what: &'static str| async move {
            let rows = sqlx::query(sql).fetch_all(self.pool()).await.what(what)?;
            rows.iter()
                .map(|r| Ok((r.try_get(0).what(what)?, r.try_get(1).what(what)?)))
                .collect::<Result<Vec<(String, i64)>, StoreError>>()
        };
        let batches = by_state(
            "SELECT state, COUNT(*) FROM batches WHERE state <> 'done' GROUP BY state",
            "count batches by state",
        )
        .await?;
        let campaigns = by_state(
            "SELECT state, COUNT(*) FROM campaigns GROUP BY state",
            "count campaigns by state",
        )
        .await?;
        let leases = sqlx::query(
            "SELECT COUNT(*) FROM batches WHERE lease_holder IS NOT NULL AND lease_expires >= $1 AND state <> 'done'",
        )
        .bind(now)
        .fetch_one(self.pool())
        .await
        .and_then(|r| r.try_get(0))
        .what("count leases")?;
        Ok(QueueGauges {
            recipients,
            batches,
            campaigns,
            leases,
        })
    }

    /// How many of a campaign's batches are not done.
    pub async fn live_batches(&self, campaign: i64) -> Result<i64, StoreError> {
        sqlx::query("SELECT COUNT(*) FROM batches WHERE campaign = $1 AND state <> 'done'")
            .bind(campaign)
            .fetch_one(self.pool())
            .await
            .and_then(|r| r.try_get(0))
            .what("count live batches")
    }

    /// A campaign's batch rows from batch `from` on, in order, at most `limit`.
    pub async fn batch_rows(
        &self,
        campaign: i64,
        from: i64,
        limit: i64,
    ) -> Result<Vec<BatchRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT campaign, batch, site, recipients, state FROM batches WHERE campaign = $1 AND batch >= $2 ORDER BY batch LIMIT $3",
        )
        .bind(campaign)
        .bind(from)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("list batches")?;
        rows.iter()
            .map(|r| {
                Ok(BatchRow {
                    campaign: r.try_get("campaign").what("read a batch")?,
                    batch: r.try_get("batch").what("read a batch")?,
                    site: r.try_get("site").what("read a batch")?,
                    recipients: r.try_get("recipients").what("read a batch")?,
                    state: r.try_get("state").what("read a batch")?,
                })
            })
            .collect()
    }

    /// The final outcomes of one done batch's recipients from index `from` on,
    /// optionally only those with `status`, at most `limit` (none for a batch
    /// not done).
    pub async fn final_recipients(
        &self,
        campaign: i64,
        batch: i64,
        from: i64,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FinalRecipient>, StoreError> {
        let row = sqlx::query("SELECT recipients FROM outcomes WHERE campaign = $1 AND batch = $2")
            .bind(campaign)
            .bind(batch)
            .fetch_optional(self.pool())
            .await
            .what("read a batch's outcomes")?;
        let Some(row) = row else {
            return Ok(Vec::new());
        };
        let text: String = row.try_get("recipients").what("read a batch's outcomes")?;
        let all: Vec<FinalRecipient> = serde_json::from_str(&text).map_err(|e| {
            StoreError::Corrupt(format!("outcomes of batch {campaign}/{batch}: {e}"))
        })?;
        Ok(all
            .into_iter()
            .filter(|r| r.idx >= from && status.is_none_or(|s| r.status == s))
            .take(limit)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_continue_the_numbering_of_those_before_the_list() {
        let cases = [
            (Backend::Postgres, 1, 2, 2, "($1, $2), ($3, $4)"),
            (Backend::Postgres, 4, 2, 3, "($4, $5, $6), ($7, $8, $9)"),
            (Backend::Sqlite, 1, 2, 2, "(?, ?), (?, ?)"),
            (Backend::Sqlite, 2, 2, 1, "(?2), (?3)"),
            (Backend::Postgres, 1, 0, 3, ""),
        ];
        for (backend, first, rows, columns, want) in cases {
            assert_eq!(values_from(backend, first, rows, columns), want);
        }
        assert_eq!(values(Backend::Sqlite, 1, 3), "(?, ?, ?)");
    }
}
