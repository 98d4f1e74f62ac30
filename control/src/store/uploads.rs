//! Upload rows: a CSV recipient list received whole (`POST /v1/uploads`),
//! kept in the spool until a campaign takes it.

use sqlx::Row;

use super::{now, Context, Store, StoreError};

impl Store {
    /// Records an upload stored at `path`.
    pub async fn insert_upload(
        &self,
        id: &str,
        owner: Option<i64>,
        path: &str,
        bytes: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO uploads (id, owner, path, bytes, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(owner)
        .bind(path)
        .bind(bytes)
        .bind(now())
        .execute(self.pool())
        .await
        .what("record an upload")?;
        Ok(())
    }

    /// The file of upload `id` if `owner` made it (`None`: whoever did) and
    /// no campaign has taken it yet.
    pub async fn upload_path(
        &self,
        id: &str,
        owner: Option<i64>,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT path FROM uploads WHERE id = $1 AND ($2 IS NULL OR owner = $2) AND campaign IS NULL",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(self.pool())
        .await
        .what("find an upload")?;
        row.map(|r| r.try_get("path").what("read an upload"))
            .transpose()
    }

    /// Notes that campaign `campaign` took upload `id`.
    pub async fn use_upload(&self, id: &str, campaign: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE uploads SET campaign = $1 WHERE id = $2")
            .bind(campaign)
            .bind(id)
            .execute(self.pool())
            .await
            .what("take an upload")?;
        Ok(())
    }

    /// Forgets the uploads made before `before` that no campaign took;
    /// answers their files, for the caller to remove.
    pub async fn expire_uploads(&self, before: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "DELETE FROM uploads WHERE campaign IS NULL AND created_at < $1 RETURNING path",
        )
        .bind(before)
        .fetch_all(self.pool())
        .await
        .what("expire uploads")?;
        rows.iter()
            .map(|r| r.try_get("path").what("read an upload"))
            .collect()
    }
}
