//! The fleet's side of the store: the immutable bytes of batches and content
//! that gateways lease, the leases themselves (holder, epoch, expiry on the
//! batch row), the slots each gateway last reported, and the gateways seen.
//!
//! **Fencing.** Every claim bumps a batch's epoch; every report and every
//! completion names the epoch it holds and changes nothing unless holder and
//! epoch still match (one guarded `UPDATE`, so two control-plane processes on
//! one database need no other coordination). A claim takes a batch whose lease
//! is free or expired, guarded the same way: of two processes claiming one
//! batch, one wins.

use std::collections::HashMap;

use sqlx::Row;

use super::batches::{values, values_from, DoneBatch, Progress};
use super::events::BatchOutcomes;

/// Makes the outbox events of the batches a completion accepted.
pub type EventsOf<'a> = dyn Fn(&[DoneBatch]) -> Vec<BatchOutcomes> + Sync + 'a;
use super::{Backend, Context, Store, StoreError};

/// A batch that can be leased now, offered to [`Store::lease`]'s choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// Its destination site (first domain).
    pub site: String,
    /// Its recipients.
    pub recipients: i64,
    /// Offered again: its holder's lease ran out (or was abandoned).
    pub run_out: bool,
}

/// What a lease request looks among ([`Store::lease`]).
#[derive(Debug, Clone, Copy)]
pub struct Look<'a> {
    /// The campaigns it may take batches of.
    pub campaigns: &'a [i64],
    /// Unix second now.
    pub now: i64,
    /// The lease time, seconds.
    pub ttl: i64,
    /// Candidates offered to the choice, at most.
    pub at_most: i64,
    /// Whether to look for leases run out too.
    pub run_out: bool,
}

/// A batch leased to a gateway ([`Store::lease`]).
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// Its site.
    pub site: String,
    /// The lease's epoch (every report names it).
    pub epoch: i64,
    /// Unix second the lease ends unless renewed.
    pub expires: i64,
    /// The batch file as partitioned.
    pub file: Vec<u8>,
    /// The slots last reported (8 bytes per recipient, little-endian), if any.
    pub slots: Option<Vec<u8>>,
    /// Recipients counted as sent again: the batch was taken from a gateway
    /// whose lease ran out after it had started on the batch (a gateway sends
    /// from a batch only once a report on it was recorded), and these have no
    /// final state reported: each may have been sent there.
    pub resent: i64,
}

/// A gateway as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRow {
    /// Its name.
    pub name: String,
    /// First and last unix second it reached a control plane.
    pub first_seen: i64,
    /// Last contact.
    pub last_seen: i64,
    /// Recipients it reported delivered.
    pub delivered: i64,
    /// Leases it holds now (unexpired).
    pub leases: i64,
    /// Its last per-site figures, as JSON.
    pub figures: String,
}

/// Batch keys bound in one statement (3 parameters each: well under both
/// databases' limits).
const KEYS_PER_STATEMENT: usize = 500;

/// How many recipients of `slots` have no final state.
fn unfinished(slots: &[u8]) -> i64 {
    slots
        .chunks_exact(8)
        .filter_map(|c| <[u8; 8]>::try_from(c).ok())
        .filter_map(|b| volley_queue::Slot::decode(u64::from_le_bytes(b)).ok())
        .filter(|s| !s.state.is_final())
        .count() as i64
}

impl Store {
    /// Stores the bytes of a campaign's batch files (a batch is leasable only
    /// once they are here). Files already stored are kept.
    pub async fn put_batch_files(
        &self,
        campaign: i64,
        files: &[(i64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .what("begin storing batch files")?;
        for (batch, bytes) in files {
            sqlx::query(
                "INSERT INTO batch_files (campaign, batch, bytes) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(campaign)
            .bind(*batch)
            .bind(bytes.clone())
            .execute(&mut *tx)
            .await
            .what("store a batch file")?;
        }
        tx.commit().await.what("commit batch files")?;
        Ok(())
    }

    /// The stored bytes of a batch file (published for the fleet), if any.
    pub async fn batch_file(
        &self,
        campaign: i64,
        batch: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT bytes FROM batch_files WHERE campaign = $1 AND batch = $2")
            .bind(campaign)
            .bind(batch)
            .fetch_optional(self.pool())
            .await
            .what("read a batch file")?;
        row.map(|r| r.try_get("bytes"))
            .transpose()
            .what("read a batch file")
    }

    /// Stores a content item under its hash (hex); kept if already there.
    pub async fn put_content(&self, hash: &str, bytes: &[u8]) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO contents (hash, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(hash.to_owned())
            .bind(bytes.to_vec())
            .execute(self.pool())
            .await
            .what("store content")?;
        Ok(())
    }

    /// Those of `campaigns` with batch files stored (a campaign cut for the
    /// fleet stores all of them before its batch rows; one cut by `volley
    /// run` stores none).
    pub async fn published(&self, campaigns: &[i64]) -> Result<Vec<i64>, StoreError> {
        let mut out = Vec::new();
        for &c in campaigns {
            let found = sqlx::query("SELECT 1 FROM batch_files WHERE campaign = $1 LIMIT 1")
                .bind(c)
                .fetch_optional(self.pool())
                .await
                .what("look for batch files")?;
            if found.is_some() {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// A content item by hash (hex).
    pub async fn content(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT bytes FROM contents WHERE hash = $1")
            .bind(hash.to_owned())
            .fetch_optional(self.pool())
            .await
            .what("read content")?;
        row.map(|r| r.try_get("bytes").what("read content"))
            .transpose()
    }

    /// Leases to `gateway`, until `now + ttl`, the batches `choose` picks
    /// (indices) among those `look` offers: of its campaigns (whose batch
    /// files are stored: [`Store::published`]), those that can be leased at
    /// `now`, not done and with no holder, or (with `look.run_out`) with a
    /// lease run out whose holder has not been heard from for `ttl` (a
    /// gateway that is reachable keeps its batches through a control-plane
    /// outage, and reports them late), one its holder never reported on (the
    /// answer that carried it was lost: its holder sent nothing from it) or
    /// one its holder abandoned (restarted: expiry 0); run-out ones first,
    /// then the oldest, at most `look.at_most`. Each claim bumps the batch's
    /// epoch. A batch taken from
    /// a gateway whose lease ran out after it reported on it counts its
    /// unfinished recipients as resent (per campaign). Answers the claimed
    /// batches in the order chosen.
    ///
    /// One transaction of four statements whatever the count: the
    /// candidates read and locked, run-out leases then free batches (on
    /// PostgreSQL `FOR UPDATE SKIP LOCKED`: concurrent requests, of this
    /// process or another, see disjoint candidates instead of all choosing
    /// the same oldest batches and retrying; SQLite's writer lock serializes
    /// them), the chosen ones' files read, and those updated in one `UPDATE`
    /// guarded by the epoch read.
    pub async fn lease<F>(
        &self,
        gateway: &str,
        look: Look<'_>,
        choose: F,
    ) -> Result<Vec<Claimed>, StoreError>
    where
        F: FnOnce(&[Candidate]) -> Vec<usize>,
    {
        let Look {
            campaigns,
            now,
            ttl,
            at_most: look,
            run_out: look_run_out,
        } = look;
        if campaigns.is_empty() || look <= 0 {
            return Ok(Vec::new());
        }
        let list = campaigns
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE OF b SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut tx = self.begin_write("begin a lease").await?;
        // Those whose lease ran out first, longest ago first, then the free
        // ones, oldest batch first: each read through its own partial index
        // (schema v9).
        let columns =
            "b.campaign, b.batch, b.site, b.recipients, b.lease_holder, b.lease_epoch, b.lease_reported";
        let mut rows = Vec::new();
        if look_run_out {
            rows = sqlx::query(&format!(
                "SELECT {columns} FROM batches b \
             WHERE b.campaign IN ({list}) AND b.state <> 'done' AND b.lease_holder IS NOT NULL \
             AND b.lease_expires < $1 AND (b.lease_expires = 0 OR b.lease_reported = 0 OR NOT EXISTS \
             (SELECT 1 FROM gateways g WHERE g.name = b.lease_holder AND g.last_seen >= $2)) \
             ORDER BY b.lease_expires LIMIT $3{lock}"
            ))
            .bind(now)
            .bind(now - ttl)
            .bind(look)
            .fetch_all(&mut *tx)
            .await
            .what("find batches to lease")?;
        }
        let more = look - rows.len() as i64;
        if more > 0 {
            rows.extend(
                sqlx::query(&format!(
                    "SELECT {columns} FROM batches b \
                     WHERE b.campaign IN ({list}) AND b.state <> 'done' AND b.lease_holder IS NULL \
                     ORDER BY b.campaign, b.batch LIMIT $1{lock}"
                ))
                .bind(more)
                .fetch_all(&mut *tx)
                .await
                .what("find batches to lease")?,
            );
        }
        let mut candidates = Vec::with_capacity(rows.len());
        let mut held = Vec::with_capacity(rows.len());
        for r in &rows {
            let what = "read a batch";
            let holder: Option<String> = r.try_get("lease_holder").what(what)?;
            candidates.push(Candidate {
                campaign: r.try_get("campaign").what(what)?,
                batch: r.try_get("batch").what(what)?,
                site: r.try_get("site").what(what)?,
                recipients: r.try_get("recipients").what(what)?,
                run_out: holder.is_some(),
            });
            // Never reported on under its lease: its holder sent nothing.
            let started =
                holder.is_some() && r.try_get::<i64, _>("lease_reported").what(what)? != 0;
            held.push((
                started,
                r.try_get::<i64, _>("lease_epoch").what(what)?,
                holder,
            ));
        }
        let mut chosen = choose(&candidates);
        let mut seen = std::collections::HashSet::with_capacity(chosen.len());
        chosen.retain(|&i| i < candidates.len() && seen.insert(i));
        // Their files first: a batch is leased only with its bytes (a
        // campaign's are all stored before its rows; this keeps a missing
        // one from being leased, unsendable, again and again).
        let mut files: HashMap<(i64, i64), Vec<u8>> = HashMap::with_capacity(chosen.len());
        if !chosen.is_empty() {
            let sql = format!(
                "SELECT campaign, batch, bytes FROM batch_files WHERE (campaign, batch) IN (VALUES {})",
                values(self.backend(), chosen.len(), 2)
            );
            let mut query = sqlx::query(&sql);
            for &i in &chosen {
                query = query.bind(candidates[i].campaign).bind(candidates[i].batch);
            }
            let rows = query
                .fetch_all(&mut *tx)
                .await
                .what("read leased batches")?;
            for row in &rows {
                let what = "read a batch file";
                files.insert(
                    (
                        row.try_get("campaign").what(what)?,
                        row.try_get("batch").what(what)?,
                    ),
                    row.try_get("bytes").what(what)?,
                );
            }
            chosen.retain(|&i| files.contains_key(&(candidates[i].campaign, candidates[i].batch)));
        }
        if chosen.is_empty() {
            tx.commit().await.what("commit a lease")?;
            return Ok(Vec::new());
        }
        let expires = now + ttl;
        let guarded = values_from(self.backend(), 4, chosen.len(), 3);
        let sql = format!(
            "UPDATE batches SET lease_holder = $1, lease_epoch = lease_epoch + 1, lease_expires = $2, lease_reported = 0, updated_at = $3 \
             WHERE (campaign, batch, lease_epoch) IN (VALUES {guarded}) AND state <> 'done' \
             RETURNING campaign, batch, lease_epoch, slots"
        );
        let mut query = sqlx::query(&sql)
            .bind(gateway.to_owned())
            .bind(expires)
            .bind(now);
        for &i in &chosen {
            let c = &candidates[i];
            query = query.bind(c.campaign).bind(c.batch).bind(held[i].1);
        }
        let updated = query.fetch_all(&mut *tx).await.what("lease batches")?;
        // (campaign, batch) -> (new epoch, slots last reported).
        type Updated = HashMap<(i64, i64), (i64, Option<Vec<u8>>)>;
        let mut epochs: Updated = HashMap::with_capacity(updated.len());
        for row in &updated {
            let what = "read a lease";
            epochs.insert(
                (
                    row.try_get("campaign").what(what)?,
                    row.try_get("batch").what(what)?,
                ),
                (
                    row.try_get("lease_epoch").what(what)?,
                    row.try_get("slots").what(what)?,
                ),
            );
        }
        let mut out = Vec::with_capacity(epochs.len());
        let mut resent_by_campaign: HashMap<i64, i64> = HashMap::new();
        for &i in &chosen {
            let c = &candidates[i];
            let key = (c.campaign, c.batch);
            let (Some((epoch, slots)), Some(file)) = (epochs.remove(&key), files.remove(&key))
            else {
                continue;
            };
            let (started, _, previous) = &held[i];
            let resent = match (started, &slots) {
                (true, Some(s)) => unfinished(s),
                _ => 0,
            };
            if resent > 0 {
                *resent_by_campaign.entry(c.campaign).or_default() += resent;
                tracing::warn!(
                    campaign = c.campaign,
                    batch = c.batch,
                    from = previous.as_deref().unwrap_or(""),
                    to = gateway,
                    resent,
                    "batch taken from a lost gateway"
                );
            }
            out.push(Claimed {
                campaign: c.campaign,
                batch: c.batch,
                site: c.site.clone(),
                epoch,
                expires,
                file,
                slots,
                resent,
            });
        }
        for (campaign, resent) in resent_by_campaign {
            sqlx::query(
                "UPDATE campaigns SET resent_after_failure = resent_after_failure + $1 WHERE id = $2",
            )
            .bind(resent)
            .bind(campaign)
            .execute(&mut *tx)
            .await
            .what("count resent recipients")?;
        }
        tx.commit().await.what("commit a lease")?;
        Ok(out)
    }

    /// Records `gateway`'s report on the batches it holds at `epochs`: their
    /// slots and progress, the outbox events of their attempts (`events`),
    /// and renews their leases to `now + ttl`. Answers,
    /// per batch in order, whether the lease was still the gateway's (a report
    /// on a batch leased to another since, or done, changes nothing).
    pub async fn report(
        &self,
        gateway: &str,
        batches: &[(i64, i64, i64, Vec<u8>)],
        progress: &[Progress],
        events: &[BatchOutcomes],
        now: i64,
        ttl: i64,
    ) -> Result<Vec<bool>, StoreError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool().begin().await.what("begin a report")?;
        if events.iter().any(|e| !e.events.is_empty()) {
            // The outbox's lock first, as every writer of events takes it.
            self.lock_outbox(&mut tx).await?;
        }
        let mut held = Vec::with_capacity(batches.len());
        for (campaign, batch, epoch, slots) in batches {
            let n = sqlx::query(
                "UPDATE batches SET slots = $1, lease_expires = $2, lease_reported = 1, updated_at = $3 \
                 WHERE campaign = $4 AND batch = $5 AND lease_holder = $6 AND lease_epoch = $7 AND state <> 'done'",
            )
            .bind(slots.clone())
            .bind(now + ttl)
            .bind(now)
            .bind(*campaign)
            .bind(*batch)
            .bind(gateway.to_owned())
            .bind(*epoch)
            .execute(&mut *tx)
            .await
            .what("record a report")?
            .rows_affected();
            held.push(n == 1);
        }
        let accepted: Vec<Progress> = progress
            .iter()
            .filter(|p| {
                batches
                    .iter()
                    .zip(&held)
                    .any(|((c, b, _, _), ok)| *ok && *c == p.campaign && *b == p.batch)
            })
            .cloned()
            .collect();
        self.upsert_progress(&mut tx, &accepted, true).await?;
        // The events of batches still the gateway's (a stale report's are
        // dropped with it).
        let accepted_events: Vec<BatchOutcomes> = events
            .iter()
            .filter(|o| {
                batches
                    .iter()
                    .zip(&held)
                    .any(|((c, b, _, _), ok)| *ok && (*c, *b) == (o.campaign, o.batch))
            })
            .cloned()
            .collect();
        self.insert_outcomes(&mut tx, &accepted_events, &[]).await?;
        tx.commit().await.what("commit a report")?;
        Ok(held)
    }

    /// Renews `gateway`'s leases of `batches` (campaign, batch, epoch) whose
    /// slots did not change since its last report, to `now + ttl`, in one
    /// statement. Answers, per batch in order, whether the lease was still
    /// the gateway's.
    pub async fn renew(
        &self,
        gateway: &str,
        batches: &[(i64, i64, i64)],
        now: i64,
        ttl: i64,
    ) -> Result<Vec<bool>, StoreError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let mut renewed = std::collections::HashSet::with_capacity(batches.len());
        for chunk in batches.chunks(KEYS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE batches SET lease_expires = $1, lease_reported = 1, updated_at = $2 \
                 WHERE lease_holder = $3 AND state <> 'done' \
                 AND (campaign, batch, lease_epoch) IN (VALUES {}) RETURNING campaign, batch",
                values_from(self.backend(), 4, chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql)
                .bind(now + ttl)
                .bind(now)
                .bind(gateway.to_owned());
            for (c, b, e) in chunk {
                query = query.bind(*c).bind(*b).bind(*e);
            }
            let rows = query.fetch_all(self.pool()).await.what("renew leases")?;
            for row in &rows {
                let what = "read a renewed lease";
                let c: i64 = row.try_get("campaign").what(what)?;
                let b: i64 = row.try_get("batch").what(what)?;
                renewed.insert((c, b));
            }
        }
        Ok(batches
            .iter()
            .map(|(c, b, _)| renewed.contains(&(*c, *b)))
            .collect())
    }

    /// Records batches `gateway` finished under the epochs it names, as
    /// [`Store::complete_batches`] does, with the events `events_of` (when
    /// given) makes of those still its own; answers, per batch in order, whether
    /// it was still the gateway's (a stale completion changes nothing).
    pub async fn complete_leased(
        &self,
        gateway: &str,
        done: &[(DoneBatch, i64)],
        events_of: Option<&EventsOf<'_>>,
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.begin_write("begin a leased completion").await?;
        if events_of.is_some() {
            // The outbox's lock first, as every writer of events takes it.
            self.lock_outbox(&mut tx).await?;
        }
        // Which are still the gateway's, in one statement (locked on
        // PostgreSQL until the commit: a claim skips them meanwhile).
        let mut ours = std::collections::HashSet::with_capacity(done.len());
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        for chunk in done.chunks(KEYS_PER_STATEMENT) {
            let sql = format!(
                "SELECT campaign, batch FROM batches WHERE lease_holder = $1 AND state <> 'done' \
                 AND (campaign, batch, lease_epoch) IN (VALUES {}){lock}",
                values_from(self.backend(), 2, chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql).bind(gateway.to_owned());
            for (b, epoch) in chunk {
                query = query.bind(b.campaign).bind(b.batch).bind(*epoch);
            }
            let rows = query.fetch_all(&mut *tx).await.what("check leases")?;
            for row in &rows {
                let what = "read a lease";
                let c: i64 = row.try_get("campaign").what(what)?;
                let b: i64 = row.try_get("batch").what(what)?;
                ours.insert((c, b));
            }
        }
        let held: Vec<bool> = done
            .iter()
            .map(|(b, _)| ours.contains(&(b.campaign, b.batch)))
            .collect();
        let accepted: Vec<DoneBatch> = done
            .iter()
            .filter(|(b, _)| ours.contains(&(b.campaign, b.batch)))
            .map(|(b, _)| b.clone())
            .collect();
        let events = events_of.map(|f| f(&accepted)).unwrap_or_default();
        self.complete_in(&mut tx, &accepted, &events).await?;
        tx.commit().await.what("commit a leased completion")?;
        Ok(held)
    }

    /// Gives `gateway`'s leases on `batches` back (it stopped cleanly): they
    /// can be leased again at once, their slots as last reported.
    pub async fn release(
        &self,
        gateway: &str,
        batches: &[(i64, i64, i64)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.what("begin a release")?;
        for (campaign, batch, epoch) in batches {
            sqlx::query(
                "UPDATE batches SET lease_holder = NULL, lease_expires = NULL \
                 WHERE campaign = $1 AND batch = $2 AND lease_holder = $3 AND lease_epoch = $4",
            )
            .bind(*campaign)
            .bind(*batch)
            .bind(gateway.to_owned())
            .bind(*epoch)
            .execute(&mut *tx)
            .await
            .what("release a lease")?;
        }
        tx.commit().await.what("commit a release")?;
        Ok(())
    }

    /// Marks every lease of `gateway` abandoned (it restarted without them):
    /// they can be taken at once, their unfinished recipients counted as
    /// resent as for a lost gateway.
    pub async fn abandon(&self, gateway: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE batches SET lease_expires = 0 WHERE lease_holder = $1 AND state <> 'done'",
        )
        .bind(gateway.to_owned())
        .execute(self.pool())
        .await
        .what("abandon leases")?
        .rows_affected())
    }

    /// Notes that `gateway` reached a control plane at `now`, having delivered
    /// `delivered` more recipients, with its latest per-site `figures`.
    pub async fn touch_gateway(
        &self,
        gateway: &str,
        delivered: i64,
        figures: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gateways (name, first_seen, last_seen, delivered, figures) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen, \
             delivered = gateways.delivered + excluded.delivered, \
             figures = CASE WHEN excluded.figures = '' THEN gateways.figures ELSE excluded.figures END",
        )
        .bind(gateway.to_owned())
        .bind(now)
        .bind(now)
        .bind(delivered)
        .bind(figures.unwrap_or("").to_owned())
        .execute(self.pool())
        .await
        .what("record a gateway")?;
        Ok(())
    }

    /// The names of the gateways heard from at or after `since`.
    pub async fn live_gateways(&self, since: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT name FROM gateways WHERE last_seen >= $1 ORDER BY name")
            .bind(since)
            .fetch_all(self.pool())
            .await
            .what("list live gateways")?;
        rows.iter()
            .map(|r| r.try_get("name").what("read a gateway"))
            .collect()
    }

    /// Every gateway seen, by name, with the leases it holds at `now`.
    pub async fn gateways(&self, now: i64) -> Result<Vec<GatewayRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.name, g.first_seen, g.last_seen, g.delivered, g.figures, \
             (SELECT COUNT(*) FROM batches b WHERE b.lease_holder = g.name AND b.lease_expires >= $1 AND b.state <> 'done') AS leases \
             FROM gateways g ORDER BY g.name",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await
        .what("list gateways")?;
        rows.iter()
            .map(|r| {
                Ok(GatewayRow {
                    name: r.try_get("name").what("read a gateway")?,
                    first_seen: r.try_get("first_seen").what("read a gateway")?,
                    last_seen: r.try_get("last_seen").what("read a gateway")?,
                    delivered: r.try_get("delivered").what("read a gateway")?,
                    leases: r.try_get("leases").what("read a gateway")?,
                    figures: r.try_get("figures").what("read a gateway")?,
                })
            })
            .collect()
    }

    /// Recipients of campaign `id` sent again after a gateway was lost.
    pub async fn resent_after_failure(&self, id: i64) -> Result<i64, StoreError> {
        sqlx::query("SELECT resent_after_failure FROM campaigns WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .what("read resent recipients")?
            .map_or(Ok(0), |r| r.try_get(0).what("read resent recipients"))
    }
}
