//! The dashboard's signed-in sessions ([`crate::dashboard`]): a random id in
//! an `HttpOnly; SameSite=Strict` cookie stands for the token signed in
//! with, for [`SESSION_TTL`] or until the token is revoked. Kept in the
//! store by the id's hash, so every control plane of a fleet serves them and
//! a restart signs nobody out. The API accepts the cookie in place of
//! `Authorization` ([`caller`]), with the session's CSRF token in
//! `X-CSRF-Token` on anything but GET.

use std::time::Duration;

use axum::http::{header, HeaderMap, Method, StatusCode};

use super::problem::Problem;
use crate::store::tokens::Token;
use crate::store::Store;

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The session cookie's name.
pub const COOKIE: &str = "volley_session";

fn random_id() -> Result<String, Problem> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for a session id",
        )
    })?;
    Ok(data_encoding::BASE64URL_NOPAD.encode(&bytes))
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A new session for `token`: its id (for the cookie).
pub async fn open(store: &Store, token: &Token) -> Result<String, Problem> {
    let (id, csrf) = (random_id()?, random_id()?);
    let expires = crate::store::now() + SESSION_TTL.as_secs() as i64;
    store.open_session(&id, token.id, &csrf, expires).await?;
    Ok(id)
}

/// The session of a request's cookie: its token and CSRF token.
pub async fn of(store: &Store, headers: &HeaderMap) -> Result<Option<(Token, String)>, Problem> {
    let Some(id) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    Ok(store.session(id).await?)
}

/// Ends the session of a request's cookie.
pub async fn close(store: &Store, headers: &HeaderMap) -> Result<(), Problem> {
    if let Some(id) = cookie(headers, COOKIE) {
        store.close_session(id).await?;
    }
    Ok(())
}

/// The caller of an API request without `Authorization`: the token of its
/// session cookie, when a non-GET request also carries the session's CSRF
/// token. `None` when there is no session; an error when the CSRF token is
/// missing or wrong.
pub async fn caller(
    store: &Store,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Token>, Problem> {
    let Some((token, csrf)) = of(store, headers).await? else {
        return Ok(None);
    };
    if method != Method::GET && method != Method::HEAD {
        let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        if sent != Some(csrf.as_str()) {
            return Err(Problem::forbidden(
                "a call from the dashboard needs its X-CSRF-Token header (reload the page)",
            ));
        }
    }
    Ok(Some(token))
}
