//! The event outbox: every event a sender's application may want pushed to it
//! (`campaign.completed`, and the delivery events of a later issue) is a row
//! here first, written in the same transaction as the change it reports where
//! there is one; webhooks deliver from it and mark rows sent.

use serde::Serialize;
use sqlx::Row;

use super::{now, Context, Store, StoreError};

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Its number, increasing.
    pub id: i64,
    /// Unix second it happened.
    pub at: i64,
    /// What happened (`campaign.completed`, …).
    pub kind: String,
    /// The campaign it is about, if one.
    pub campaign: Option<i64>,
    /// Its JSON payload.
    pub payload: String,
    /// Unix second it was delivered, if it was.
    pub sent_at: Option<i64>,
}

impl Store {
    /// Appends an event.
    pub async fn add_event(
        &self,
        kind: &str,
        campaign: Option<i64>,
        payload: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        sqlx::query(
            "INSERT INTO events (at, kind, campaign, payload) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(now())
        .bind(kind)
        .bind(campaign)
        .bind(payload.to_string())
        .fetch_one(self.pool())
        .await
        .and_then(|r| r.try_get(0))
        .what("add an event")
    }

    /// Events after `after`, oldest first, at most `limit`.
    pub async fn events(&self, after: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, campaign, payload, sent_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("list events")?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    id: r.try_get("id").what("read an event")?,
                    at: r.try_get("at").what("read an event")?,
                    kind: r.try_get("kind").what("read an event")?,
                    campaign: r.try_get("campaign").what("read an event")?,
                    payload: r.try_get("payload").what("read an event")?,
                    sent_at: r.try_get("sent_at").what("read an event")?,
                })
            })
            .collect()
    }
}
