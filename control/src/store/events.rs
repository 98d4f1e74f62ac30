//! The event outbox: every event a sender's application may want pushed to it
//! (`campaign.completed`, engagements, and the delivery events webhooks ask
//! for) is a row here first, written in the same transaction as the change it
//! reports where there is one; webhooks deliver from it in id order
//! ([`super::webhooks`]).
//!
//! Ids are handed out in commit order: on PostgreSQL every transaction that
//! adds events first takes one advisory lock (held to its commit), so a
//! reader that sees event N has seen every event before N that will ever
//! exist; SQLite has one writer at a time anyway. A webhook can then keep a
//! single cursor without skipping an event whose transaction committed late.

use serde::Serialize;
use sqlx::Row;

use super::batches::values;
use super::{now, Backend, Context, Store, StoreError};

/// An event to append ([`Store::add_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unix second it happened.
    pub at: i64,
    /// Its type (`message.delivered`, …).
    pub kind: &'static str,
    /// The campaign it is about, if one.
    pub campaign: Option<i64>,
    /// Its JSON payload (the webhook body's `data`).
    pub payload: String,
    /// A key that makes it once-only: a second event with the same key is
    /// not written (a recipient's final outcome, recorded live and again
    /// when its batch completes).
    pub dedupe: Option<String>,
}

/// The advisory lock every event-adding transaction takes on PostgreSQL.
const OUTBOX_LOCK: i64 = 7_340_032;

/// Rows per multi-row INSERT (5 parameters each).
const EVENT_ROWS: usize = 500;

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
        let mut tx = self.begin_write("add an event").await?;
        self.lock_outbox(&mut tx).await?;
        let id = sqlx::query(
            "INSERT INTO events (at, kind, campaign, payload) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(now())
        .bind(kind)
        .bind(campaign)
        .bind(payload.to_string())
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get(0))
        .what("add an event")?;
        tx.commit().await.what("add an event")?;
        Ok(id)
    }

    /// Appends `events` in one transaction, in order; those whose `dedupe`
    /// key was written before are skipped.
    pub async fn add_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write("add events").await?;
        self.insert_events(&mut tx, events).await?;
        tx.commit().await.what("commit events")?;
        Ok(())
    }

    /// Takes the outbox's lock for the rest of `tx` (PostgreSQL; SQLite's
    /// write transactions are one at a time already).
    pub(crate) async fn lock_outbox(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<(), StoreError> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(OUTBOX_LOCK)
                .execute(&mut **tx)
                .await
                .what("lock the outbox")?;
        }
        Ok(())
    }

    /// The writes of [`Store::add_events`], in `tx` (which it locks).
    pub(crate) async fn insert_events(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.lock_outbox(tx).await?;
        for chunk in events.chunks(EVENT_ROWS) {
            let sql = format!(
                "INSERT INTO events (at, kind, campaign, payload, dedupe) VALUES {} ON CONFLICT DO NOTHING",
                values(self.backend(), chunk.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query
                    .bind(e.at)
                    .bind(e.kind)
                    .bind(e.campaign)
                    .bind(e.payload.as_str())
                    .bind(e.dedupe.as_deref());
            }
            query.execute(&mut **tx).await.what("add events")?;
        }
        Ok(())
    }

    /// The newest event's id (0: none).
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM events")
            .fetch_one(self.pool())
            .await
            .and_then(|r| r.try_get(0))
            .what("read the newest event")
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
