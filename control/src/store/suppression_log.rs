//! The fleet's log of suppression changes: every entry any process added or
//! lifted (API, bounces and complaints at any gateway's listener,
//! unsubscribes), in order; each process applies the rows after its own
//! cursor to its list ([`crate::suppress::Change`]). A change keeps its time
//! as it travels, so the same change arriving twice is one row.

use sqlx::Row;

use super::batches::values;
use super::campaigns::INSERT_ROWS;
use super::{now, Context, Store, StoreError};
use crate::suppress::Change;

impl Store {
    /// Appends `changes` (from process `origin`), in order; one already
    /// there is not written again.
    pub async fn add_suppression_changes(
        &self,
        changes: &[Change],
        origin: &str,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write("log suppression changes").await?;
        let logged = now();
        for chunk in changes.chunks(INSERT_ROWS / 8) {
            let sql = format!(
                "INSERT INTO suppression_log (at, op, domain, address, reason, detail, origin, logged_at) VALUES {} ON CONFLICT DO NOTHING",
                values(self.backend(), chunk.len(), 8)
            );
            let mut query = sqlx::query(&sql);
            for c in chunk {
                query = query
                    .bind(c.at as i64)
                    .bind(c.op.as_str())
                    .bind(c.domain.as_str())
                    .bind(c.address.as_str())
                    .bind(c.reason.as_str())
                    .bind(c.detail.as_str())
                    .bind(origin)
                    .bind(logged);
            }
            query
                .execute(&mut *tx)
                .await
                .what("log suppression changes")?;
        }
        tx.commit().await.what("log suppression changes")?;
        Ok(())
    }

    /// The changes after row `after`, oldest first, at most `limit`, with
    /// their row ids.
    pub async fn suppression_changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Change)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, op, domain, address, reason, detail FROM suppression_log WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("read suppression changes")?;
        rows.iter()
            .map(|r| {
                let what = "read a suppression change";
                let at: i64 = r.try_get("at").what(what)?;
                Ok((
                    r.try_get("id").what(what)?,
                    Change {
                        op: r.try_get("op").what(what)?,
                        at: at.max(0) as u64,
                        domain: r.try_get("domain").what(what)?,
                        address: r.try_get("address").what(what)?,
                        reason: r.try_get("reason").what(what)?,
                        detail: r.try_get("detail").what(what)?,
                    },
                ))
            })
            .collect()
    }
}
