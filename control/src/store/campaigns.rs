//! Campaign rows: what a campaign is made of, where it stands, its tags and the
//! rows its recipient list had to skip.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now, Context, Store, StoreError};
use crate::recipients::Rejected;

/// Where a campaign stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignState {
    /// Waiting for its `start_at`.
    Scheduled,
    /// Accepted; being cut into batches, or about to be sent.
    Queued,
    /// Being delivered.
    Sending,
    /// Suspended: no new transactions until resumed.
    Suspended,
    /// Every recipient final.
    Completed,
    /// Cancelled: unsent recipients are finalised as `cancelled`.
    Cancelled,
}

impl CampaignState {
    /// Every state, for messages and validation.
    pub const ALL: [CampaignState; 6] = [
        CampaignState::Scheduled,
        CampaignState::Queued,
        CampaignState::Sending,
        CampaignState::Suspended,
        CampaignState::Completed,
        CampaignState::Cancelled,
    ];

    /// Its name, as stored and in the API.
    pub fn name(self) -> &'static str {
        match self {
            CampaignState::Scheduled => "scheduled",
            CampaignState::Queued => "queued",
            CampaignState::Sending => "sending",
            CampaignState::Suspended => "suspended",
            CampaignState::Completed => "completed",
            CampaignState::Cancelled => "cancelled",
        }
    }

    /// The state a name gives.
    pub fn parse(name: &str) -> Option<CampaignState> {
        CampaignState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether nothing more will be sent (the campaign cannot be suspended,
    /// resumed or cancelled any more). A cancelled campaign is final.
    pub fn is_final(self) -> bool {
        matches!(self, CampaignState::Completed | CampaignState::Cancelled)
    }
}

/// A campaign as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    /// Its id (in every batch header too).
    pub id: i64,
    /// The token that submitted it (`None`: a local command).
    pub owner: Option<i64>,
    /// Where it stands.
    pub state: CampaignState,
    /// Content hash of its stored template, 64 hex digits.
    pub content_hash: String,
    /// The domain of its envelope sender (suppressions are per sending domain).
    pub sender_domain: String,
    /// Its recipient list (a CSV file on the host that partitions it).
    pub list_path: String,
    /// Recipients per batch.
    pub batch_size: i64,
    /// Unix second to start at, if scheduled.
    pub start_at: Option<i64>,
    /// Unix second at which unsent recipients expire, if any.
    pub stop_at: Option<i64>,
    /// Addresses the summary goes to.
    pub notify: Vec<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// The `Idempotency-Key` it was submitted with, if any.
    pub idempotency_key: Option<String>,
    /// Hash of the request it was submitted with (an idempotent retry must match).
    pub request_hash: Option<String>,
    /// Whether every batch has been written (and its row made).
    pub partitioned: bool,
    /// Recipients queued (known once partitioned).
    pub recipients: i64,
    /// Rows of the list skipped as bad.
    pub rejected_rows: i64,
    /// Recipients dropped before queueing because they were suppressed.
    pub suppressed: i64,
    /// Batches (known once partitioned).
    pub batches: i64,
    /// Unix second of submission (the queue time of every recipient).
    pub created_at: i64,
    /// Unix second its first batch was handed to delivery.
    pub started_at: Option<i64>,
    /// Unix second its last recipient became final.
    pub completed_at: Option<i64>,
    /// Whether the summary to `notify` has been queued.
    pub summary_queued: bool,
}

/// What a new campaign is made of ([`Store::insert_campaign`]).
#[derive(Debug, Clone, Default)]
pub struct NewCampaign {
    /// The submitting token (`None`: a local command).
    pub owner: Option<i64>,
    /// Content hash of the stored template.
    pub content_hash: String,
    /// The envelope sender's domain.
    pub sender_domain: String,
    /// The recipient list.
    pub list_path: String,
    /// Recipients per batch.
    pub batch_size: i64,
    /// Unix second to start at.
    pub start_at: Option<i64>,
    /// Unix second to stop at.
    pub stop_at: Option<i64>,
    /// Summary addresses.
    pub notify: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// `Idempotency-Key`, with the hash of the request.
    pub idempotency: Option<(String, String)>,
    /// The template's tracked links, by index (what `/c/TOKEN` redirects to).
    pub links: Vec<String>,
    /// The list it is sent to, if one (an unsubscribe leaves it).
    pub list: Option<i64>,
}

/// Which campaigns to list ([`Store::list_campaigns`]).
#[derive(Debug, Clone, Default)]
pub struct CampaignFilter {
    /// Only those of this owner.
    pub owner: Option<i64>,
    /// Only those in this state.
    pub state: Option<CampaignState>,
    /// Only those with this tag.
    pub tag: Option<String>,
    /// Only ids below this one (the cursor: newest first).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

const COLUMNS: &str = "id, owner, state, content_hash, sender_domain, list_path, batch_size, start_at, stop_at, notify, tags, idempotency_key, request_hash, partitioned, recipients, rejected_rows, suppressed, batches, created_at, started_at, completed_at, summary_queued";

fn campaign_of(row: &AnyRow) -> Result<Campaign, StoreError> {
    let get_i = |c: &'static str| row.try_get::<i64, _>(c).what("read a campaign");
    let get_o = |c: &'static str| row.try_get::<Option<i64>, _>(c).what("read a campaign");
    let get_s = |c: &'static str| row.try_get::<String, _>(c).what("read a campaign");
    let list = |c: &'static str| -> Result<Vec<String>, StoreError> {
        serde_json::from_str(&get_s(c)?).map_err(|e| StoreError::Corrupt(format!("{c}: {e}")))
    };
    let state = get_s("state")?;
    Ok(Campaign {
        id: get_i("id")?,
        owner: get_o("owner")?,
        state: CampaignState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("campaign state {state:?}")))?,
        content_hash: get_s("content_hash")?,
        sender_domain: get_s("sender_domain")?,
        list_path: get_s("list_path")?,
        batch_size: get_i("batch_size")?,
        start_at: get_o("start_at")?,
        stop_at: get_o("stop_at")?,
        notify: list("notify")?,
        tags: list("tags")?,
        idempotency_key: row.try_get("idempotency_key").what("read a campaign")?,
        request_hash: row.try_get("request_hash").what("read a campaign")?,
        partitioned: get_i("partitioned")? != 0,
        recipients: get_i("recipients")?,
        rejected_rows: get_i("rejected_rows")?,
        suppressed: get_i("suppressed")?,
        batches: get_i("batches")?,
        created_at: get_i("created_at")?,
        started_at: get_o("started_at")?,
        completed_at: get_o("completed_at")?,
        summary_queued: get_i("summary_queued")? != 0,
    })
}

/// Rows per multi-row INSERT (well under SQLite's 32,766 bound parameters).
pub(crate) const INSERT_ROWS: usize = 500;

impl Store {
    /// Records a new campaign, not partitioned yet, in state `scheduled` (when
    /// `start_at` is ahead) or `queued`. Its id is milliseconds since the epoch,
    /// bumped past every id in the store (and past `at_least`: ids already in
    /// a spool).
    pub async fn insert_campaign(
        &self,
        new: &NewCampaign,
        at_least: i64,
    ) -> Result<Campaign, StoreError> {
        let created_at = now();
        let state = match new.start_at {
            Some(at) if at > created_at => CampaignState::Scheduled,
            _ => CampaignState::Queued,
        };
        let (key, request_hash) = match &new.idempotency {
            Some((k, h)) => (Some(k.clone()), Some(h.clone())),
            None => (None, None),
        };
        let to_json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        // Two control planes inserting at once may pick one id: the loser tries
        // the next.
        for _ in 0..16 {
            let highest: i64 =
                sqlx::query("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM campaigns")
                    .fetch_one(self.pool())
                    .await
                    .and_then(|r| r.try_get(0))
                    .what("pick a campaign id")?;
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_millis() as i64);
            let id = millis.max(highest + 1).max(at_least);
            let mut tx = self.pool().begin().await.what("begin a campaign")?;
            let inserted = sqlx::query(&format!(
                "INSERT INTO campaigns ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, 0, 0, 0, 0, $14, NULL, NULL, 0) RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(new.owner)
            .bind(state.name())
            .bind(&new.content_hash)
            .bind(&new.sender_domain)
            .bind(&new.list_path)
            .bind(new.batch_size)
            .bind(new.start_at)
            .bind(new.stop_at)
            .bind(to_json(&new.notify))
            .bind(to_json(&new.tags))
            .bind(key.clone())
            .bind(request_hash.clone())
            .bind(created_at)
            .fetch_one(&mut *tx)
            .await
            .what("insert a campaign");
            let row = match inserted {
                Ok(row) => row,
                Err(e) if e.is_conflict() => {
                    drop(tx);
                    if let Some((key, _)) = &new.idempotency {
                        if let Some(found) = self.idempotent(new.owner, key).await? {
                            return Ok(found);
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            for tag in &new.tags {
                sqlx::query("INSERT INTO campaign_tags (campaign, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(id)
                    .bind(tag)
                    .execute(&mut *tx)
                    .await
                    .what("tag a campaign")?;
            }
            for (link, url) in new.links.iter().enumerate() {
                sqlx::query("INSERT INTO campaign_links (campaign, link, url) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(link as i64)
                    .bind(url)
                    .execute(&mut *tx)
                    .await
                    .what("record a campaign's links")?;
            }
            if let Some(list) = new.list {
                sqlx::query("INSERT INTO campaign_lists (campaign, list) VALUES ($1, $2)")
                    .bind(id)
                    .bind(list)
                    .execute(&mut *tx)
                    .await
                    .what("record a campaign's list")?;
            }
            tx.commit().await.what("commit a campaign")?;
            return campaign_of(&row);
        }
        Err(StoreError::Corrupt(
            "no free campaign id after 16 tries".to_owned(),
        ))
    }

    /// The campaign `owner` submitted with Idempotency-Key `key`, if any.
    pub async fn idempotent(
        &self,
        owner: Option<i64>,
        key: &str,
    ) -> Result<Option<Campaign>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM campaigns WHERE owner IS NOT DISTINCT FROM $1 AND idempotency_key = $2"
        ))
        .bind(owner)
        .bind(key)
        .fetch_optional(self.pool())
        .await
        .what("look up an idempotency key")?;
        row.as_ref().map(campaign_of).transpose()
    }

    /// One campaign.
    pub async fn campaign(&self, id: i64) -> Result<Option<Campaign>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM campaigns WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .what("read a campaign")?;
        row.as_ref().map(campaign_of).transpose()
    }

    /// Campaigns, newest first, as `filter` says.
    pub async fn list_campaigns(
        &self,
        filter: &CampaignFilter,
    ) -> Result<Vec<Campaign>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM campaigns WHERE 1 = 1");
        let mut n = 0;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if filter.owner.is_some() {
            sql.push_str(&format!(" AND owner = {}", param()));
        }
        if filter.state.is_some() {
            sql.push_str(&format!(" AND state = {}", param()));
        }
        if filter.tag.is_some() {
            sql.push_str(&format!(
                " AND id IN (SELECT campaign FROM campaign_tags WHERE tag = {})",
                param()
            ));
        }
        if filter.before.is_some() {
            sql.push_str(&format!(" AND id < {}", param()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", param()));
        let mut query = sqlx::query(&sql);
        if let Some(owner) = filter.owner {
            query = query.bind(owner);
        }
        if let Some(state) = filter.state {
            query = query.bind(state.name());
        }
        if let Some(tag) = &filter.tag {
            query = query.bind(tag.clone());
        }
        if let Some(before) = filter.before {
            query = query.bind(before);
        }
        let rows = query
            .bind(filter.limit)
            .fetch_all(self.pool())
            .await
            .what("list campaigns")?;
        rows.iter().map(campaign_of).collect()
    }

    /// Campaigns not closed yet, or closed with a summary to queue still: what
    /// the scheduler and the feed look at, oldest first (closed ones drop out,
    /// so the scheduler's work follows the open campaigns, not all there were).
    pub async fn open_campaigns(&self) -> Result<Vec<Campaign>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM campaigns WHERE state NOT IN ('completed', 'cancelled') OR completed_at IS NULL OR (summary_queued = 0 AND notify <> '[]') ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await
        .what("list open campaigns")?;
        rows.iter().map(campaign_of).collect()
    }

    /// Moves campaign `id` to `to` if it is in one of `from`; answers whether it
    /// moved. Moving to `sending` sets `started_at` the first time.
    pub async fn transition(
        &self,
        id: i64,
        from: &[CampaignState],
        to: CampaignState,
    ) -> Result<bool, StoreError> {
        let list: Vec<String> = from.iter().map(|s| format!("'{}'", s.name())).collect();
        let started = if to == CampaignState::Sending {
            ", started_at = COALESCE(started_at, $3)"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE campaigns SET state = $1{started} WHERE id = $2 AND state IN ({})",
            list.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(to.name()).bind(id);
        if to == CampaignState::Sending {
            query = query.bind(now());
        }
        let done = query
            .execute(self.pool())
            .await
            .what("change a campaign's state")?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks a final campaign as completed at `at` (when its last batch is
    /// done); a cancelled one stays cancelled. Answers whether it changed.
    pub async fn finish_campaign(&self, id: i64, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE campaigns SET completed_at = $1, state = CASE WHEN state = 'cancelled' THEN 'cancelled' ELSE 'completed' END WHERE id = $2 AND completed_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(self.pool())
        .await
        .what("complete a campaign")?;
        Ok(done.rows_affected() > 0)
    }

    /// Notes that a campaign's summary has been queued.
    pub async fn summary_queued(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE campaigns SET summary_queued = 1 WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .what("note a campaign's summary")?;
        Ok(())
    }

    /// The rows a campaign's list had to skip, by line, from line `after` on.
    pub async fn rejects(
        &self,
        campaign: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Rejected>, StoreError> {
        let rows = sqlx::query(
            "SELECT line, email, reason FROM rejects WHERE campaign = $1 AND line > $2 ORDER BY line LIMIT $3",
        )
        .bind(campaign)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("list rejected rows")?;
        rows.iter()
            .map(|r| {
                Ok(Rejected {
                    line: r.try_get::<i64, _>("line").what("read a rejected row")? as u64,
                    email: r.try_get("email").what("read a rejected row")?,
                    reason: r.try_get("reason").what("read a rejected row")?,
                })
            })
            .collect()
    }
}
