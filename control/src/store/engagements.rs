//! What recipients did with their message over the web links: unsubscribed,
//! clicked a tracked link, opened (the image): one row per recipient, kind and
//! link, written once; and each campaign's tracked links.

use sqlx::Row;

use super::{now, Context, Store, StoreError};

/// What a recipient did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engagement {
    /// The one-click unsubscribe (or its page's button).
    Unsubscribed,
    /// A tracked link.
    Clicked,
    /// The open image was fetched (unreliable: some readers fetch every image).
    Opened,
    /// The recipient reported the message as spam (a verified ARF report).
    Complained,
    /// The recipient replied (to the message's VERP address).
    Replied,
}

impl Engagement {
    /// Its name in the store, the log and events.
    pub fn name(self) -> &'static str {
        match self {
            Engagement::Unsubscribed => "unsubscribed",
            Engagement::Clicked => "clicked",
            Engagement::Opened => "opened",
            Engagement::Complained => "complained",
            Engagement::Replied => "replied",
        }
    }
}

/// One recipient of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// Index in the batch.
    pub idx: i64,
}

/// A campaign's engagement counts: distinct recipients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngagementCounts {
    /// Recipients who clicked at least one tracked link.
    pub clicked: i64,
    /// Recipients whose open image was fetched.
    pub opened: i64,
    /// Recipients who unsubscribed (over the link or by mail).
    pub unsubscribed: i64,
    /// Recipients who complained (verified reports).
    pub complained: i64,
    /// Recipients who replied.
    pub replied: i64,
    /// Recipients who clicked or replied (the post office's acknowledgement).
    pub acknowledged: i64,
}

impl Store {
    /// The URL of tracked link `link` of `campaign`.
    pub async fn link_url(&self, campaign: i64, link: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT url FROM campaign_links WHERE campaign = $1 AND link = $2")
            .bind(campaign)
            .bind(link)
            .fetch_optional(self.pool())
            .await
            .what("read a tracked link")?;
        row.map(|r| r.try_get("url"))
            .transpose()
            .what("read a tracked link")
    }

    /// Records that `who` (address `email`) did `what` (on `link`, for
    /// clicks; else 0), with its outbox event `event` in the same transaction.
    /// False when it was recorded before (nothing is written again).
    pub async fn record_engagement(
        &self,
        who: Who,
        what: Engagement,
        link: i64,
        email: &str,
        event: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("begin an engagement").await?;
        self.lock_outbox(&mut tx).await?;
        let at = now();
        let inserted = sqlx::query(
            "INSERT INTO engagements (campaign, batch, idx, kind, link, email, at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(who.campaign)
        .bind(who.batch)
        .bind(who.idx)
        .bind(what.name())
        .bind(link)
        .bind(email)
        .bind(at)
        .execute(&mut *tx)
        .await
        .what("record an engagement")?
        .rows_affected()
            > 0;
        if inserted {
            let kind = format!("message.{}", what.name());
            self.insert_event(&mut tx, &kind, Some(who.campaign), &event.to_string(), at)
                .await?;
        }
        tx.commit().await.what("commit an engagement")?;
        Ok(inserted)
    }

    /// A campaign's engagement counts.
    pub async fn engagement_counts(&self, campaign: i64) -> Result<EngagementCounts, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, CAST(COUNT(*) AS BIGINT) AS n FROM (SELECT DISTINCT kind, batch, idx FROM engagements WHERE campaign = $1) AS d GROUP BY kind",
        )
        .bind(campaign)
        .fetch_all(self.pool())
        .await
        .what("count engagements")?;
        let mut counts = EngagementCounts::default();
        for row in rows {
            let kind: String = row.try_get("kind").what("count engagements")?;
            let n: i64 = row.try_get("n").what("count engagements")?;
            match kind.as_str() {
                "clicked" => counts.clicked = n,
                "opened" => counts.opened = n,
                "unsubscribed" => counts.unsubscribed = n,
                "complained" => counts.complained = n,
                "replied" => counts.replied = n,
                _ => {}
            }
        }
        counts.acknowledged = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT DISTINCT batch, idx FROM engagements WHERE campaign = $1 AND kind IN ('clicked', 'replied')) AS d",
        )
        .bind(campaign)
        .fetch_one(self.pool())
        .await
        .and_then(|r| r.try_get(0))
        .what("count acknowledgements")?;
        Ok(counts)
    }

    /// Which of a batch's recipients clicked or replied (acknowledged), by
    /// index.
    pub async fn acknowledged_in_batch(
        &self,
        campaign: i64,
        batch: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT idx FROM engagements WHERE campaign = $1 AND batch = $2 AND kind IN ('clicked', 'replied') ORDER BY idx",
        )
        .bind(campaign)
        .bind(batch)
        .fetch_all(self.pool())
        .await
        .what("read a batch's clicks")?;
        rows.iter()
            .map(|r| r.try_get("idx").what("read a batch's clicks"))
            .collect()
    }
}
