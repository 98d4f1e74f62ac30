//! API tokens: made at random, shown once, stored only as their SHA-256 (a
//! token is 256 random bits, so a fast hash is enough: there is nothing to
//! guess a token from, unlike a password).

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use sqlx::Row;

use super::{now, Context, Store, StoreError};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Submit campaigns and read its own.
    Sender,
    /// A delivery gateway of the fleet (leases, progress reports).
    Gateway,
}

impl Role {
    /// The role a name gives.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "admin" => Some(Role::Admin),
            "sender" => Some(Role::Sender),
            "gateway" => Some(Role::Gateway),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Sender => "sender",
            Role::Gateway => "gateway",
        }
    }
}

/// A token as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Token {
    /// Its number (the owner of the campaigns it submits).
    pub id: i64,
    /// The name it was made with.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Unix second it was made.
    pub created_at: i64,
    /// Unix second it was last used (to the minute), if ever.
    pub last_used_at: Option<i64>,
    /// Unix second it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// The prefix of every token, so that one found in a file or a log is
/// recognisable.
pub const PREFIX: &str = "vly_";

/// The stored form of a token's secret: SHA-256, lower-case hex.
pub fn hash(secret: &str) -> String {
    data_encoding::HEXLOWER.encode(digest(&SHA256, secret.trim().as_bytes()).as_ref())
}

/// A new random secret.
fn new_secret() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Corrupt("the system's random source failed".to_owned()))?;
    Ok(format!(
        "{PREFIX}{}",
        data_encoding::BASE64URL_NOPAD.encode(&bytes)
    ))
}

fn token_of(row: &sqlx::any::AnyRow) -> Result<Token, StoreError> {
    let role: String = row.try_get("role").what("read a token")?;
    Ok(Token {
        id: row.try_get("id").what("read a token")?,
        name: row.try_get("name").what("read a token")?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("token role {role:?}")))?,
        created_at: row.try_get("created_at").what("read a token")?,
        last_used_at: row.try_get("last_used_at").what("read a token")?,
        revoked_at: row.try_get("revoked_at").what("read a token")?,
    })
}

const COLUMNS: &str = "id, name, role, created_at, last_used_at, revoked_at";

impl Store {
    /// Makes a token named `name` (unique among all tokens, revoked ones
    /// included) with `role`; returns it and its secret, which is not stored.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
    ) -> Result<(Token, String), StoreError> {
        let secret = new_secret()?;
        let row = sqlx::query(&format!(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
        ))
        .bind(name)
        .bind(role.name())
        .bind(hash(&secret))
        .bind(now())
        .fetch_one(self.pool())
        .await
        .what("create a token")?;
        Ok((token_of(&row)?, secret))
    }

    /// Every token, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<Token>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM tokens ORDER BY id"))
            .fetch_all(self.pool())
            .await
            .what("list tokens")?;
        rows.iter().map(token_of).collect()
    }

    /// Revokes the token named `name`; false when there is none (or it was
    /// revoked already).
    pub async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
                .bind(now())
                .bind(name)
                .execute(self.pool())
                .await
                .what("revoke a token")?;
        Ok(done.rows_affected() > 0)
    }

    /// The live token whose secret is `secret`, if any; notes its use (at most
    /// once a minute, so that reading the API does not write on every call).
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Token>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tokens WHERE hash = $1 AND revoked_at IS NULL"
        ))
        .bind(hash(secret))
        .fetch_optional(self.pool())
        .await
        .what("check a token")?;
        let Some(row) = row else { return Ok(None) };
        let token = token_of(&row)?;
        let at = now();
        if token.last_used_at.is_none_or(|t| t < at - 60) {
            sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
                .bind(at)
                .bind(token.id)
                .execute(self.pool())
                .await
                .what("note a token's use")?;
        }
        Ok(Some(token))
    }
}

/// The dashboard's sessions: a session id stands for a token until it
/// expires, the token is revoked, or it is closed. Only the id's hash is
/// stored.
impl Store {
    /// Opens a session `id` for token `token` with `csrf`, until unix second
    /// `expires_at` (expired ones are dropped meanwhile).
    pub async fn open_session(
        &self,
        id: &str,
        token: i64,
        csrf: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now())
            .execute(self.pool())
            .await
            .what("drop expired sessions")?;
        sqlx::query("INSERT INTO sessions (hash, token, csrf, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(hash(id))
            .bind(token)
            .bind(csrf.to_owned())
            .bind(expires_at)
            .execute(self.pool())
            .await
            .what("open a session")?;
        Ok(())
    }

    /// The token and CSRF token of session `id`, while it lasts and its
    /// token is not revoked.
    pub async fn session(&self, id: &str) -> Result<Option<(Token, String)>, StoreError> {
        let columns = COLUMNS
            .split(", ")
            .map(|c| format!("t.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let row = sqlx::query(&format!(
            "SELECT {columns}, s.csrf FROM sessions s JOIN tokens t ON t.id = s.token \
             WHERE s.hash = $1 AND s.expires_at >= $2 AND t.revoked_at IS NULL"
        ))
        .bind(hash(id))
        .bind(now())
        .fetch_optional(self.pool())
        .await
        .what("check a session")?;
        let Some(row) = row else { return Ok(None) };
        let csrf: String = row.try_get("csrf").what("read a session")?;
        Ok(Some((token_of(&row)?, csrf)))
    }

    /// Closes session `id`.
    pub async fn close_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(hash(id))
            .execute(self.pool())
            .await
            .what("close a session")?;
        Ok(())
    }
}
