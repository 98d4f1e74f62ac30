//! Webhook rows: the endpoints events are pushed to, where each stands in the
//! outbox, and its retry state. The delivery itself is [`crate::webhook`]'s.
//!
//! A webhook's place in the outbox is a [`Pos`]: the next event to send is
//! event `part` of the first row from `row` on that it wants (a row may hold
//! a group of events, [`super::events`]). The request being tried ends at
//! `pend` (fixed when first tried, so every retry carries the same events
//! under the same `webhook-id`). One process at a time delivers a webhook: it
//! holds the row (`worker`, `worker_until`) and renews it while it works.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now, Context, Store, StoreError};

/// `source` of a webhook from the configuration file.
pub const FROM_CONFIG: &str = "config";
/// `source` of a webhook made through the API.
pub const FROM_API: &str = "api";

/// A webhook as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    /// Its id.
    pub id: i64,
    /// The token that made it (its events are those of its campaigns);
    /// `None`: every event (an admin's, or the configuration's).
    #[serde(skip)]
    pub owner: Option<i64>,
    /// `config` or `api`.
    pub source: String,
    /// Where events are POSTed.
    pub url: String,
    /// The event types it gets; empty: every type.
    pub events: Vec<String>,
    /// The signing secret (`whsec_…`); never shown after creation.
    #[serde(skip)]
    pub secret: String,
    /// Events per request; 0: one event per request, unbatched.
    pub batch: i64,
    /// Seconds a failing request is retried.
    pub retry_for: i64,
    /// Request timeout in milliseconds.
    pub timeout_ms: i64,
    /// `active`, or `disabled` (its endpoint answered 410).
    pub state: String,
    /// Its place in the outbox: every event before it is delivered or
    /// given up.
    pub next: Pos,
    /// Where the request being tried ends (exclusive), when one is.
    pub pend: Option<Pos>,
    /// Failed tries of the request being tried.
    pub attempts: i64,
    /// Unix second of its next try.
    pub next_attempt_at: i64,
    /// Unix second the request being tried first failed.
    pub failing_since: Option<i64>,
    /// Events delivered.
    pub delivered: i64,
    /// Events given up after `retry_for` of failures.
    pub failed: i64,
    /// HTTP status of the last try (none: no answer).
    pub last_status: Option<i64>,
    /// What went wrong last, if anything.
    pub last_error: Option<String>,
    /// Unix second of the last try.
    pub last_attempt_at: Option<i64>,
    /// Unix second it was made.
    pub created_at: i64,
}

/// A webhook to make ([`Store::add_webhook`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    /// See [`Webhook::owner`].
    pub owner: Option<i64>,
    /// See [`Webhook::source`].
    pub source: &'static str,
    /// See [`Webhook::url`].
    pub url: String,
    /// See [`Webhook::events`].
    pub events: Vec<String>,
    /// See [`Webhook::secret`].
    pub secret: String,
    /// See [`Webhook::batch`].
    pub batch: i64,
    /// See [`Webhook::retry_for`].
    pub retry_for: i64,
    /// See [`Webhook::timeout_ms`].
    pub timeout_ms: i64,
}

/// A place in the outbox: event `part` of row `row` (or of the first row
/// after it that a webhook wants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Pos {
    /// The row.
    pub row: i64,
    /// The event in it.
    pub part: i64,
}

/// How a try of a webhook's request ended ([`Store::webhook_tried`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tried {
    /// Answered 2xx: its `events` events are delivered.
    Delivered {
        /// Events the request carried.
        events: i64,
    },
    /// Failed; tried again at `next_at`.
    Retry {
        /// Unix second of the next try.
        next_at: i64,
    },
    /// Failed for `retry_for`: its `events` events are given up.
    GaveUp {
        /// Events the request carried.
        events: i64,
    },
    /// Answered 410: the webhook is disabled.
    Disabled,
}

/// Moves a webhook past its request, to `($1, $2)`: delivered (`$3`
/// events) or given up (`$4`).
const DONE: &str = "UPDATE webhooks SET next_row = $1, next_part = $2, pend_row = NULL, pend_part = NULL, attempts = 0, next_attempt_at = 0, failing_since = NULL, \
     delivered = delivered + $3, failed = failed + $4, last_status = $5, last_error = $6, last_attempt_at = $7 \
     WHERE id = $8 AND worker = $9";

const COLUMNS: &str = "id, owner, source, url, events, secret, batch, retry_for, timeout_ms, state, next_row, next_part, pend_row, pend_part, attempts, next_attempt_at, failing_since, delivered, failed, last_status, last_error, last_attempt_at, created_at";

fn webhook_of(r: &AnyRow) -> Result<Webhook, StoreError> {
    let what = "read a webhook";
    let events: String = r.try_get("events").what(what)?;
    Ok(Webhook {
        id: r.try_get("id").what(what)?,
        owner: r.try_get("owner").what(what)?,
        source: r.try_get("source").what(what)?,
        url: r.try_get("url").what(what)?,
        events: serde_json::from_str(&events)
            .map_err(|e| StoreError::Corrupt(format!("webhook events {events:?}: {e}")))?,
        secret: r.try_get("secret").what(what)?,
        batch: r.try_get("batch").what(what)?,
        retry_for: r.try_get("retry_for").what(what)?,
        timeout_ms: r.try_get("timeout_ms").what(what)?,
        state: r.try_get("state").what(what)?,
        next: Pos {
            row: r.try_get("next_row").what(what)?,
            part: r.try_get("next_part").what(what)?,
        },
        pend: match (
            r.try_get::<Option<i64>, _>("pend_row").what(what)?,
            r.try_get::<Option<i64>, _>("pend_part").what(what)?,
        ) {
            (Some(row), Some(part)) => Some(Pos { row, part }),
            _ => None,
        },
        attempts: r.try_get("attempts").what(what)?,
        next_attempt_at: r.try_get("next_attempt_at").what(what)?,
        failing_since: r.try_get("failing_since").what(what)?,
        delivered: r.try_get("delivered").what(what)?,
        failed: r.try_get("failed").what(what)?,
        last_status: r.try_get("last_status").what(what)?,
        last_error: r.try_get("last_error").what(what)?,
        last_attempt_at: r.try_get("last_attempt_at").what(what)?,
        created_at: r.try_get("created_at").what(what)?,
    })
}

/// One outbox row a webhook sends events of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Its id.
    pub id: i64,
    /// Unix second it happened.
    pub at: i64,
    /// Its events' type.
    pub kind: String,
    /// How many events it holds.
    pub n: i64,
    /// Its payload ([`super::events::members`]).
    pub payload: String,
}

/// The `WHERE` terms selecting the rows `hook` wants from `$1` up to `$2`,
/// with its types and owner bound from `$3` on.
fn filter(hook: &Webhook) -> String {
    let mut sql = String::from("id >= $1 AND id <= $2");
    let mut n = 3;
    let mut param = || {
        let p = format!("${n}");
        n += 1;
        p
    };
    if !hook.events.is_empty() {
        let list: Vec<String> = hook.events.iter().map(|_| param()).collect();
        sql.push_str(&format!(" AND kind IN ({})", list.join(", ")));
    }
    if hook.owner.is_some() {
        sql.push_str(&format!(
            " AND campaign IN (SELECT id FROM campaigns WHERE owner = {})",
            param()
        ));
    }
    sql
}

impl Store {
    /// Makes a webhook; it gets the events added from now on.
    pub async fn add_webhook(&self, new: &NewWebhook) -> Result<Webhook, StoreError> {
        let mut tx = self.begin_write("add a webhook").await?;
        // New events are numbered after the ones seen here (the outbox lock).
        self.lock_outbox(&mut tx).await?;
        let last: i64 = sqlx::query("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM events")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get(0))
            .what("read the newest event")?;
        let events = serde_json::to_string(&new.events)
            .map_err(|e| StoreError::Corrupt(format!("webhook events: {e}")))?;
        let at = now();
        let id: i64 = sqlx::query(
            "INSERT INTO webhooks (owner, source, url, events, secret, batch, retry_for, timeout_ms, state, next_row, next_part, attempts, next_attempt_at, delivered, failed, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, 0, 0, 0, 0, 0, $10) RETURNING id",
        )
        .bind(new.owner)
        .bind(new.source)
        .bind(&new.url)
        .bind(events)
        .bind(&new.secret)
        .bind(new.batch)
        .bind(new.retry_for)
        .bind(new.timeout_ms)
        .bind(last + 1)
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get(0))
        .what("add a webhook")?;
        tx.commit().await.what("add a webhook")?;
        self.webhook(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("webhook {id} vanished")))
    }

    /// Webhook `id`.
    pub async fn webhook(&self, id: i64) -> Result<Option<Webhook>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .what("read a webhook")?;
        row.as_ref().map(webhook_of).transpose()
    }

    /// Every webhook (of `owner`, when given), oldest first.
    pub async fn webhooks(&self, owner: Option<i64>) -> Result<Vec<Webhook>, StoreError> {
        let rows = match owner {
            Some(owner) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM webhooks WHERE owner = $1 ORDER BY id"
                ))
                .bind(owner)
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM webhooks ORDER BY id"))
                    .fetch_all(self.pool())
                    .await
            }
        }
        .what("list webhooks")?;
        rows.iter().map(webhook_of).collect()
    }

    /// Deletes webhook `id`; false if there was none.
    pub async fn delete_webhook(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .what("delete a webhook")?;
        Ok(done.rows_affected() > 0)
    }

    /// Makes the configuration's webhooks the stored `config` ones: an entry
    /// whose URL is stored keeps its place in the outbox (its types, secret,
    /// batch and timings are updated, and a disabled one is enabled again);
    /// a new one starts at the next event; a stored one no longer configured
    /// is deleted.
    pub async fn sync_config_webhooks(&self, wanted: &[NewWebhook]) -> Result<(), StoreError> {
        let stored: Vec<Webhook> = self
            .webhooks(None)
            .await?
            .into_iter()
            .filter(|w| w.source == FROM_CONFIG)
            .collect();
        for w in &stored {
            if !wanted.iter().any(|n| n.url == w.url) {
                self.delete_webhook(w.id).await?;
                tracing::info!(webhook = w.id, url = %w.url, "webhook no longer configured: deleted");
            }
        }
        for n in wanted {
            match stored.iter().find(|w| w.url == n.url) {
                Some(w) => {
                    let events = serde_json::to_string(&n.events)
                        .map_err(|e| StoreError::Corrupt(format!("webhook events: {e}")))?;
                    sqlx::query(
                        "UPDATE webhooks SET events = $1, secret = $2, batch = $3, retry_for = $4, timeout_ms = $5, state = 'active' WHERE id = $6",
                    )
                    .bind(events)
                    .bind(&n.secret)
                    .bind(n.batch)
                    .bind(n.retry_for)
                    .bind(n.timeout_ms)
                    .bind(w.id)
                    .execute(self.pool())
                    .await
                    .what("update a webhook")?;
                }
                None => {
                    let w = self.add_webhook(n).await?;
                    tracing::info!(webhook = w.id, url = %w.url, "webhook configured");
                }
            }
        }
        Ok(())
    }

    /// Takes webhook `id` for `worker` until `until` when it is free, already
    /// `worker`'s, or its holder's time ran out. False: another process has it.
    pub async fn claim_webhook(
        &self,
        id: i64,
        worker: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhooks SET worker = $1, worker_until = $2 WHERE id = $3 AND state = 'active' \
             AND (worker IS NULL OR worker = $1 OR worker_until < $4)",
        )
        .bind(worker)
        .bind(until)
        .bind(id)
        .bind(now())
        .execute(self.pool())
        .await
        .what("claim a webhook")?;
        Ok(done.rows_affected() > 0)
    }

    /// Lets webhook `id` go (this process stops).
    pub async fn release_webhook(&self, id: i64, worker: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhooks SET worker = NULL, worker_until = NULL WHERE id = $1 AND worker = $2",
        )
        .bind(id)
        .bind(worker)
        .execute(self.pool())
        .await
        .what("release a webhook")?;
        Ok(())
    }

    /// The rows `hook` wants from `from` up to `through`, oldest first: as
    /// many as hold `events` events from `from` on (rows of a group hold
    /// many: the sizes are read first, then only the payloads needed). Also
    /// answers whether they are every row it wants up to `through`.
    pub async fn webhook_rows(
        &self,
        hook: &Webhook,
        from: Pos,
        through: i64,
        events: i64,
    ) -> Result<(Vec<OutboxRow>, bool), StoreError> {
        fn bind<'q>(
            sql: &'q str,
            hook: &'q Webhook,
            from: Pos,
            through: i64,
        ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
            let mut query = sqlx::query(sql).bind(from.row).bind(through);
            for kind in &hook.events {
                query = query.bind(kind.as_str());
            }
            if let Some(owner) = hook.owner {
                query = query.bind(owner);
            }
            query
        }
        let sizes = format!(
            "SELECT id, n FROM events WHERE {} ORDER BY id LIMIT {}",
            filter(hook),
            events.max(1)
        );
        let sizes = bind(&sizes, hook, from, through)
            .fetch_all(self.pool())
            .await
            .what("read a webhook's events")?;
        let mut need = events + from.part;
        let mut last = None;
        for r in &sizes {
            let what = "read a webhook's events";
            let id: i64 = r.try_get("id").what(what)?;
            let n: i64 = r.try_get("n").what(what)?;
            last = Some(id);
            need -= n.max(1);
            if need <= 0 {
                break;
            }
        }
        let exhausted = need > 0 && (sizes.len() as i64) < events.max(1);
        let Some(last) = last else {
            return Ok((Vec::new(), exhausted));
        };
        let sql = format!(
            "SELECT id, at, kind, n, payload FROM events WHERE {} AND id <= {last} ORDER BY id",
            filter(hook)
        );
        let rows = bind(&sql, hook, from, through)
            .fetch_all(self.pool())
            .await
            .what("read a webhook's events")?;
        rows.iter()
            .map(|r| {
                let what = "read an event";
                Ok(OutboxRow {
                    id: r.try_get("id").what(what)?,
                    at: r.try_get("at").what(what)?,
                    kind: r.try_get("kind").what(what)?,
                    n: r.try_get("n").what(what)?,
                    payload: r.try_get("payload").what(what)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map(|rows| (rows, exhausted))
    }

    /// How many events `hook` has yet to deliver.
    pub async fn webhook_pending(&self, hook: &Webhook) -> Result<i64, StoreError> {
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM events WHERE {}",
            filter(hook)
        );
        let mut query = sqlx::query(&sql).bind(hook.next.row).bind(i64::MAX);
        for kind in &hook.events {
            query = query.bind(kind.as_str());
        }
        if let Some(owner) = hook.owner {
            query = query.bind(owner);
        }
        let rows: i64 = query
            .fetch_one(self.pool())
            .await
            .and_then(|r| r.try_get(0))
            .what("count a webhook's events")?;
        Ok((rows - hook.next.part).max(0))
    }

    /// Fixes the request being tried to end at `end` (when `worker` still
    /// holds the webhook).
    pub async fn webhook_pend(&self, id: i64, worker: &str, end: Pos) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhooks SET pend_row = $1, pend_part = $2 WHERE id = $3 AND worker = $4 AND state = 'active'",
        )
        .bind(end.row)
        .bind(end.part)
        .bind(id)
        .bind(worker)
        .execute(self.pool())
        .await
        .what("fix a webhook's request")?;
        Ok(done.rows_affected() > 0)
    }

    /// Moves webhook `id` on to `to`, past rows with nothing for it.
    pub async fn webhook_skip(&self, id: i64, worker: &str, to: Pos) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhooks SET next_row = $1, next_part = $2 WHERE id = $3 AND worker = $4 AND next_row < $1 AND pend_row IS NULL",
        )
        .bind(to.row)
        .bind(to.part)
        .bind(id)
        .bind(worker)
        .execute(self.pool())
        .await
        .what("move a webhook on")?;
        Ok(())
    }

    /// Records how a try of webhook `id`'s request (ending at `end`) ended,
    /// with its HTTP status (none: no answer) and error text.
    #[allow(clippy::too_many_arguments)]
    pub async fn webhook_tried(
        &self,
        id: i64,
        worker: &str,
        end: Pos,
        tried: &Tried,
        status: Option<i64>,
        error: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError> {
        // Each statement's own values first, then status, error, time, id
        // and worker.
        let (sql, values): (&str, Vec<i64>) = match tried {
            Tried::Delivered { events } => (DONE, vec![end.row, end.part, *events, 0]),
            Tried::GaveUp { events } => (DONE, vec![end.row, end.part, 0, *events]),
            Tried::Retry { next_at } => (
                "UPDATE webhooks SET attempts = attempts + 1, next_attempt_at = $1, failing_since = COALESCE(failing_since, $4), \
                 last_status = $2, last_error = $3, last_attempt_at = $4 WHERE id = $5 AND worker = $6",
                vec![*next_at],
            ),
            Tried::Disabled => (
                "UPDATE webhooks SET state = 'disabled', worker = NULL, worker_until = NULL, \
                 last_status = $1, last_error = $2, last_attempt_at = $3 WHERE id = $4 AND worker = $5",
                vec![],
            ),
        };
        let mut query = sqlx::query(sql);
        for v in values {
            query = query.bind(v);
        }
        query
            .bind(status)
            .bind(error)
            .bind(at)
            .bind(id)
            .bind(worker)
            .execute(self.pool())
            .await
            .what("record a webhook's try")?;
        Ok(())
    }

    /// Deletes the rows of types in `kinds` that every active webhook has
    /// passed and that are older than `before` (unix second): the high-volume
    /// delivery events, kept only as long as a webhook needs them. Answers how
    /// many rows were deleted.
    pub async fn prune_events(&self, kinds: &[&str], before: i64) -> Result<u64, StoreError> {
        if kinds.is_empty() {
            return Ok(0);
        }
        let low: i64 = sqlx::query(
            "SELECT CAST(COALESCE(MIN(next_row), -1) AS BIGINT) FROM webhooks WHERE state = 'active'",
        )
        .fetch_one(self.pool())
        .await
        .and_then(|r| r.try_get(0))
        .what("read the webhooks' places")?;
        // Rows before every active webhook's place (a partly sent row stays).
        let below = if low < 0 { i64::MAX } else { low };
        let list: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "DELETE FROM events WHERE id < $1 AND at < $2 AND kind IN ({})",
            list.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(below).bind(before);
        for k in kinds {
            query = query.bind(*k);
        }
        let done = query.execute(self.pool()).await.what("prune the outbox")?;
        Ok(done.rows_affected())
    }
}
