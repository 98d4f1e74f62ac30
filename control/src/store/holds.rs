//! The fleet's queue holds (`volley queue hold` through a control plane):
//! one row per rule (`campaign 12`, `domain example.com`, `site mx.test`),
//! and the purges ordered (`volley queue purge`), each covering the
//! campaigns that existed when it was ordered. Every lease and report answer
//! carries them; each gateway's engine obeys the holds from its next
//! transaction and carries out the purges on the batches it holds or leases.
//! (One node keeps its holds in its spool: [`volley_queue::holds`].)

use sqlx::Row;
use volley_queue::holds::Rule;

use super::{now, Context, Store, StoreError};

/// A purge ordered in a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeOrder {
    /// Its number.
    pub id: i64,
    /// What it purges.
    pub rule: Rule,
    /// The highest campaign id it covers.
    pub upto: i64,
    /// When it was ordered (unix seconds).
    pub at: i64,
}

impl Store {
    /// Orders a purge of what `rule` covers in the campaigns there are now;
    /// answers the order.
    pub async fn add_purge(&self, rule: &Rule) -> Result<PurgeOrder, StoreError> {
        let mut tx = self.begin_write("order a purge").await?;
        let upto: i64 = sqlx::query("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM campaigns")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get(0))
            .what("find the newest campaign")?;
        let at = now();
        let id: i64 = sqlx::query(
            "INSERT INTO purges (kind, value, upto, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(rule.kind())
        .bind(rule.value())
        .bind(upto)
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get(0))
        .what("order a purge")?;
        tx.commit().await.what("order a purge")?;
        Ok(PurgeOrder {
            id,
            rule: rule.clone(),
            upto,
            at,
        })
    }

    /// The purges that may still have something to do: those covering a
    /// campaign with a batch not done yet, oldest first.
    pub async fn live_purges(&self) -> Result<Vec<PurgeOrder>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, value, upto, created_at FROM purges \
             WHERE upto >= (SELECT COALESCE(MIN(campaign), 9223372036854775807) FROM batches WHERE state <> 'done') \
             ORDER BY id",
        )
        .fetch_all(self.pool())
        .await
        .what("read the purges")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let what = "read a purge";
            let kind: String = r.try_get("kind").what(what)?;
            let value: String = r.try_get("value").what(what)?;
            if let Ok(rule) = Rule::parse(&kind, &value) {
                out.push(PurgeOrder {
                    id: r.try_get("id").what(what)?,
                    rule,
                    upto: r.try_get("upto").what(what)?,
                    at: r.try_get("created_at").what(what)?,
                });
            }
        }
        Ok(out)
    }

    /// Every hold, in order.
    pub async fn holds(&self) -> Result<Vec<Rule>, StoreError> {
        let rows = sqlx::query("SELECT kind, value FROM holds ORDER BY kind, value")
            .fetch_all(self.pool())
            .await
            .what("read the holds")?;
        let mut rules = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind: String = r.try_get("kind").what("read a hold")?;
            let value: String = r.try_get("value").what("read a hold")?;
            // A row this binary cannot read is skipped, not fatal.
            if let Ok(rule) = Rule::parse(&kind, &value) {
                rules.push(rule);
            }
        }
        Ok(rules)
    }

    /// Adds (`hold`) or removes a hold; answers whether it changed.
    pub async fn set_hold(&self, rule: &Rule, hold: bool) -> Result<bool, StoreError> {
        let done = if hold {
            sqlx::query(
                "INSERT INTO holds (kind, value, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(rule.kind())
            .bind(rule.value())
            .bind(now())
            .execute(self.pool())
            .await
        } else {
            sqlx::query("DELETE FROM holds WHERE kind = $1 AND value = $2")
                .bind(rule.kind())
                .bind(rule.value())
                .execute(self.pool())
                .await
        };
        Ok(done.what("change a hold")?.rows_affected() > 0)
    }
}
