//! The fleet's queue holds (`volley queue hold` through a control plane):
//! one row per rule (`campaign 12`, `domain example.com`, `site mx.test`).
//! Every lease and report answer carries them; each gateway's engine obeys
//! them from its next transaction. (One node keeps its holds in its spool:
//! [`volley_queue::holds`].)

use sqlx::Row;
use volley_queue::holds::Rule;

use super::{now, Context, Store, StoreError};

impl Store {
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
