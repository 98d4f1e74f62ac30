//! Lists (the design's D role): named sets of members, each an address with
//! its merge fields and a status (`subscribed`, or `unsubscribed`: kept, so
//! that a later import does not subscribe again someone who left); the
//! campaigns sent to a list; and subscribe requests from the public form,
//! buffered until they are confirmed (double opt-in) and then applied to
//! their list in bulk.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::batches::values;
use super::campaigns::INSERT_ROWS;
use super::{now, Context, Store, StoreError};

/// A list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct List {
    /// Its id.
    pub id: i64,
    /// The token that made it (`None`: a local command or an admin).
    #[serde(skip)]
    pub owner: Option<i64>,
    /// Its name.
    pub name: String,
    /// The merge fields its members have, in first-seen order.
    pub fields: Vec<String>,
    /// The sender of its confirmation messages (the subscribe form is off
    /// without one).
    pub from: Option<String>,
    /// The form fields the subscribe page asks for besides the address.
    pub form_fields: Vec<String>,
    /// Unix second it was made.
    pub created_at: i64,
}

/// A list to make ([`Store::add_list`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewList {
    /// See [`List::owner`].
    pub owner: Option<i64>,
    /// See [`List::name`].
    pub name: String,
    /// See [`List::from`].
    pub from: Option<String>,
    /// See [`List::form_fields`].
    pub form_fields: Vec<String>,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The address (normalized).
    pub email: String,
    /// Its merge fields.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// `subscribed` or `unsubscribed`.
    pub status: String,
    /// Unix second it was added.
    pub created_at: i64,
    /// Unix second it last changed.
    pub updated_at: i64,
}

/// What adding members did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Added {
    /// New members.
    pub added: i64,
    /// Members whose fields were replaced.
    pub updated: i64,
    /// Unsubscribed members left as they are (an import does not subscribe
    /// again someone who left; a confirmed subscribe request does).
    pub kept_unsubscribed: i64,
}

/// A subscribe request from the public form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// Its id (named by its confirmation link).
    pub id: i64,
    /// The list.
    pub list: i64,
    /// The address (normalized).
    pub email: String,
    /// The form's fields.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// `new`, `claimed`, `sent`, `confirmed`, `applied`, or `dropped` (over
    /// the address's bound: counted against its client, never mailed).
    pub state: String,
}

fn list_of(r: &AnyRow) -> Result<List, StoreError> {
    let what = "read a list";
    let json = |c: &str| -> Result<Vec<String>, StoreError> {
        let text: String = r.try_get(c).what(what)?;
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("list {c}: {e}")))
    };
    Ok(List {
        id: r.try_get("id").what(what)?,
        owner: r.try_get("owner").what(what)?,
        name: r.try_get("name").what(what)?,
        fields: json("fields")?,
        from: r.try_get("from_address").what(what)?,
        form_fields: json("form_fields")?,
        created_at: r.try_get("created_at").what(what)?,
    })
}

fn fields_of(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("member fields: {e}")))
}

fn member_of(r: &AnyRow) -> Result<Member, StoreError> {
    let what = "read a member";
    let fields: String = r.try_get("fields").what(what)?;
    Ok(Member {
        email: r.try_get("email").what(what)?,
        fields: fields_of(&fields)?,
        status: r.try_get("status").what(what)?,
        created_at: r.try_get("created_at").what(what)?,
        updated_at: r.try_get("updated_at").what(what)?,
    })
}

fn request_of(r: &AnyRow) -> Result<SubscribeRequest, StoreError> {
    let what = "read a subscribe request";
    let fields: String = r.try_get("fields").what(what)?;
    Ok(SubscribeRequest {
        id: r.try_get("id").what(what)?,
        list: r.try_get("list").what(what)?,
        email: r.try_get("email").what(what)?,
        fields: fields_of(&fields)?,
        state: r.try_get("state").what(what)?,
    })
}

/// `$from, $from+1, …`: `n` placeholders.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const REQUEST_COLUMNS: &str = "id, list, email, fields, state";

const LIST_COLUMNS: &str = "id, owner, name, fields, from_address, form_fields, created_at";

impl Store {
    /// Makes a list.
    pub async fn add_list(&self, new: &NewList) -> Result<List, StoreError> {
        let form = serde_json::to_string(&new.form_fields)
            .map_err(|e| StoreError::Corrupt(format!("form fields: {e}")))?;
        let row = sqlx::query(&format!(
            "INSERT INTO lists (owner, name, fields, from_address, form_fields, created_at) \
             VALUES ($1, $2, '[]', $3, $4, $5) RETURNING {LIST_COLUMNS}"
        ))
        .bind(new.owner)
        .bind(&new.name)
        .bind(new.from.as_deref())
        .bind(form)
        .bind(now())
        .fetch_one(self.pool())
        .await
        .what("add a list")?;
        list_of(&row)
    }

    /// List `id`.
    pub async fn list(&self, id: i64) -> Result<Option<List>, StoreError> {
        let row = sqlx::query(&format!("SELECT {LIST_COLUMNS} FROM lists WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .what("read a list")?;
        row.as_ref().map(list_of).transpose()
    }

    /// Every list (of `owner`, when given), oldest first.
    pub async fn lists(&self, owner: Option<i64>) -> Result<Vec<List>, StoreError> {
        let rows = match owner {
            Some(owner) => {
                sqlx::query(&format!(
                    "SELECT {LIST_COLUMNS} FROM lists WHERE owner = $1 ORDER BY id"
                ))
                .bind(owner)
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(&format!("SELECT {LIST_COLUMNS} FROM lists ORDER BY id"))
                    .fetch_all(self.pool())
                    .await
            }
        }
        .what("list lists")?;
        rows.iter().map(list_of).collect()
    }

    /// How many members of list `id` are subscribed, and unsubscribed.
    pub async fn list_counts(&self, id: i64) -> Result<(i64, i64), StoreError> {
        let rows = sqlx::query(
            "SELECT status, CAST(COUNT(*) AS BIGINT) AS n FROM list_members WHERE list = $1 GROUP BY status",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
        .what("count members")?;
        let mut counts = (0, 0);
        for r in rows {
            let status: String = r.try_get("status").what("count members")?;
            let n: i64 = r.try_get("n").what("count members")?;
            if status == "subscribed" {
                counts.0 = n;
            } else {
                counts.1 = n;
            }
        }
        Ok(counts)
    }

    /// Adds or updates members of list `id` (addresses normalized by the
    /// caller), all or nothing: a new address is subscribed; a subscribed
    /// one gets the new fields; an unsubscribed one is kept as it is, unless
    /// `resubscribe` (a confirmed subscribe request). The list's field names
    /// grow by the new ones.
    pub async fn add_members(
        &self,
        id: i64,
        members: &[(String, serde_json::Map<String, serde_json::Value>)],
        resubscribe: bool,
    ) -> Result<Added, StoreError> {
        let mut tx = self.begin_write("add members").await?;
        let at = now();
        let mut added = Added::default();
        let list_fields: String = sqlx::query("SELECT fields FROM lists WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .what("read a list")?
            .map(|r| r.try_get("fields"))
            .transpose()
            .what("read a list")?
            .ok_or_else(|| StoreError::Corrupt(format!("there is no list {id}")))?;
        let mut names: Vec<String> = serde_json::from_str(&list_fields)
            .map_err(|e| StoreError::Corrupt(format!("list fields: {e}")))?;
        let before = names.len();
        for chunk in members.chunks(INSERT_ROWS / 2) {
            // What is there already.
            let sql = format!(
                "SELECT email, status FROM list_members WHERE list = $1 AND email IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(id);
            for (email, _) in chunk {
                query = query.bind(email.as_str());
            }
            let found: Vec<(String, String)> = query
                .fetch_all(&mut *tx)
                .await
                .what("read members")?
                .iter()
                .map(|r| Ok((r.try_get("email")?, r.try_get("status")?)))
                .collect::<Result<_, sqlx::Error>>()
                .what("read members")?;
            let mut rows: Vec<(&str, String, &str)> = Vec::new();
            for (email, fields) in chunk {
                for name in fields.keys() {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
                let status = found
                    .iter()
                    .find(|(e, _)| e == email)
                    .map(|(_, s)| s.as_str());
                match status {
                    None => added.added += 1,
                    Some("unsubscribed") if !resubscribe => {
                        added.kept_unsubscribed += 1;
                        continue;
                    }
                    Some(_) => added.updated += 1,
                }
                let text = serde_json::to_string(fields)
                    .map_err(|e| StoreError::Corrupt(format!("member fields: {e}")))?;
                rows.push((email.as_str(), text, "subscribed"));
            }
            if rows.is_empty() {
                continue;
            }
            let sql = format!(
                "INSERT INTO list_members (list, email, fields, status, created_at, updated_at) VALUES {} \
                 ON CONFLICT (list, email) DO UPDATE SET fields = excluded.fields, status = excluded.status, updated_at = excluded.updated_at",
                values(self.backend(), rows.len(), 6)
            );
            let mut query = sqlx::query(&sql);
            for (email, fields, status) in &rows {
                query = query
                    .bind(id)
                    .bind(*email)
                    .bind(fields.as_str())
                    .bind(*status)
                    .bind(at)
                    .bind(at);
            }
            query.execute(&mut *tx).await.what("write members")?;
        }
        if names.len() > before {
            let text = serde_json::to_string(&names)
                .map_err(|e| StoreError::Corrupt(format!("list fields: {e}")))?;
            sqlx::query("UPDATE lists SET fields = $1 WHERE id = $2")
                .bind(text)
                .bind(id)
                .execute(&mut *tx)
                .await
                .what("record a list's fields")?;
        }
        tx.commit().await.what("commit members")?;
        Ok(added)
    }

    /// Removes member `email` of list `id`; false if there was none.
    pub async fn delete_member(&self, id: i64, email: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM list_members WHERE list = $1 AND email = $2")
            .bind(id)
            .bind(email)
            .execute(self.pool())
            .await
            .what("remove a member")?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks member `email` of list `id` unsubscribed (kept, so that an
    /// import does not add them again); false if not a subscribed member.
    pub async fn unsubscribe_member(&self, id: i64, email: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE list_members SET status = 'unsubscribed', updated_at = $1 WHERE list = $2 AND email = $3 AND status = 'subscribed'",
        )
        .bind(now())
        .bind(id)
        .bind(email)
        .execute(self.pool())
        .await
        .what("unsubscribe a member")?;
        Ok(done.rows_affected() > 0)
    }

    /// Members of list `id` after address `after`, by address, at most
    /// `limit`; only subscribed ones when `subscribed_only`.
    pub async fn members(
        &self,
        id: i64,
        after: &str,
        limit: i64,
        subscribed_only: bool,
    ) -> Result<Vec<Member>, StoreError> {
        let status = if subscribed_only {
            " AND status = 'subscribed'"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT email, fields, status, created_at, updated_at FROM list_members \
             WHERE list = $1 AND email > $2{status} ORDER BY email LIMIT $3"
        ))
        .bind(id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("list members")?;
        rows.iter().map(member_of).collect()
    }

    /// Member `email` of list `id`.
    pub async fn member(&self, id: i64, email: &str) -> Result<Option<Member>, StoreError> {
        let row = sqlx::query(
            "SELECT email, fields, status, created_at, updated_at FROM list_members WHERE list = $1 AND email = $2",
        )
        .bind(id)
        .bind(email)
        .fetch_optional(self.pool())
        .await
        .what("read a member")?;
        row.as_ref().map(member_of).transpose()
    }

    /// The list campaign `id` was sent to, if one.
    pub async fn campaign_list(&self, id: i64) -> Result<Option<i64>, StoreError> {
        sqlx::query("SELECT list FROM campaign_lists WHERE campaign = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .what("read a campaign's list")?
            .map(|r| r.try_get("list"))
            .transpose()
            .what("read a campaign's list")
    }

    /// Records a subscribe request from `client` (its address, for the
    /// bounds), `new`, or `dropped` (counted, never mailed); answers its id.
    pub async fn add_subscribe_request(
        &self,
        list: i64,
        email: &str,
        fields: &serde_json::Map<String, serde_json::Value>,
        client: &str,
        dropped: bool,
    ) -> Result<i64, StoreError> {
        let text = serde_json::to_string(fields)
            .map_err(|e| StoreError::Corrupt(format!("request fields: {e}")))?;
        sqlx::query(
            "INSERT INTO subscribe_requests (list, email, fields, client, at, state) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(list)
        .bind(email)
        .bind(text)
        .bind(client)
        .bind(now())
        .bind(if dropped { "dropped" } else { "new" })
        .fetch_one(self.pool())
        .await
        .and_then(|r| r.try_get(0))
        .what("record a subscribe request")
    }

    /// Subscribe requests since unix second `since` from `client`, and for
    /// `email` on `list`.
    pub async fn recent_subscribe_requests(
        &self,
        since: i64,
        client: &str,
        list: i64,
        email: &str,
    ) -> Result<(i64, i64), StoreError> {
        let what = "count subscribe requests";
        let by_client: i64 = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM subscribe_requests WHERE at >= $1 AND client = $2",
        )
        .bind(since)
        .bind(client)
        .fetch_one(self.pool())
        .await
        .and_then(|r| r.try_get(0))
        .what(what)?;
        let by_address: i64 = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM subscribe_requests WHERE at >= $1 AND list = $2 AND email = $3 AND state <> 'dropped'",
        )
        .bind(since)
        .bind(list)
        .bind(email)
        .fetch_one(self.pool())
        .await
        .and_then(|r| r.try_get(0))
        .what(what)?;
        Ok((by_client, by_address))
    }

    /// Takes up to `limit` new subscribe requests (and claims older than
    /// `stale_before` another process left) for `worker`, oldest first.
    pub async fn claim_subscribe_requests(
        &self,
        worker: &str,
        stale_before: i64,
        limit: i64,
    ) -> Result<Vec<SubscribeRequest>, StoreError> {
        let mut tx = self.begin_write("claim subscribe requests").await?;
        let rows = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM subscribe_requests \
             WHERE state = 'new' OR (state = 'claimed' AND (claimed_by = $1 OR claimed_at < $2)) ORDER BY id LIMIT $3"
        ))
        .bind(worker)
        .bind(stale_before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .what("read subscribe requests")?;
        let out = rows.iter().map(request_of).collect::<Result<Vec<_>, _>>()?;
        for chunk in out.chunks(INSERT_ROWS) {
            let sql = format!(
                "UPDATE subscribe_requests SET state = 'claimed', claimed_by = $1, claimed_at = $2 WHERE id IN ({})",
                placeholders(3, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(worker).bind(now());
            for r in chunk {
                query = query.bind(r.id);
            }
            query
                .execute(&mut *tx)
                .await
                .what("claim subscribe requests")?;
        }
        tx.commit().await.what("claim subscribe requests")?;
        Ok(out)
    }

    /// Marks subscribe requests as sent, in confirmation campaign `campaign`.
    pub async fn subscribe_requests_sent(
        &self,
        ids: &[i64],
        campaign: i64,
    ) -> Result<(), StoreError> {
        for chunk in ids.chunks(INSERT_ROWS) {
            let sql = format!(
                "UPDATE subscribe_requests SET state = 'sent', campaign = $1 WHERE state = 'claimed' AND id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(campaign);
            for id in chunk {
                query = query.bind(*id);
            }
            query
                .execute(self.pool())
                .await
                .what("mark subscribe requests sent")?;
        }
        Ok(())
    }

    /// Subscribe request `id`.
    pub async fn subscribe_request(&self, id: i64) -> Result<Option<SubscribeRequest>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM subscribe_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .what("read a subscribe request")?;
        row.as_ref().map(request_of).transpose()
    }

    /// Marks subscribe request `id` confirmed (its link was followed); it is
    /// applied to its list with the next bulk. False if it was not waiting
    /// for its confirmation.
    pub async fn confirm_subscribe_request(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE subscribe_requests SET state = 'confirmed', confirmed_at = $1 WHERE id = $2 AND state IN ('new', 'claimed', 'sent')",
        )
        .bind(now())
        .bind(id)
        .execute(self.pool())
        .await
        .what("confirm a subscribe request")?;
        Ok(done.rows_affected() > 0)
    }

    /// Confirmed subscribe requests not yet applied, oldest first, at most
    /// `limit`.
    pub async fn confirmed_subscribe_requests(
        &self,
        limit: i64,
    ) -> Result<Vec<SubscribeRequest>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM subscribe_requests WHERE state = 'confirmed' ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("read confirmed subscribe requests")?;
        rows.iter().map(request_of).collect()
    }

    /// Marks subscribe requests applied to their list.
    pub async fn subscribe_requests_applied(&self, ids: &[i64]) -> Result<(), StoreError> {
        for chunk in ids.chunks(INSERT_ROWS) {
            let sql = format!(
                "UPDATE subscribe_requests SET state = 'applied' WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            query
                .execute(self.pool())
                .await
                .what("mark subscribe requests applied")?;
        }
        Ok(())
    }
}
