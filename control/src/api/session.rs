//! The dashboard's signed-in sessions ([`crate::dashboard`]): a random id in
//! an `HttpOnly; SameSite=Strict` cookie stands for the token signed in
//! with, in this process's memory for [`SESSION_TTL`]. The API accepts the
//! cookie in place of `Authorization` ([`Sessions::caller`]), with the
//! session's CSRF token in `X-CSRF-Token` on anything but GET.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method, StatusCode};

use super::problem::Problem;
use crate::store::tokens::Token;

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Most sessions held at once (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// The session cookie's name.
pub const COOKIE: &str = "volley_session";

struct Session {
    token: Token,
    csrf: String,
    expires: Instant,
}

/// The signed-in sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

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

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session for `token`: its id and CSRF token.
    pub fn open(&self, token: Token) -> Result<(String, String), Problem> {
        let (id, csrf) = (random_id()?, random_id()?);
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                token,
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Ok((id, csrf))
    }

    /// The session of a request's cookie: its token and CSRF token.
    pub fn of(&self, headers: &HeaderMap) -> Option<(Token, String)> {
        let id = cookie(headers, COOKIE)?;
        let map = self.lock();
        let s = map.get(id).filter(|s| s.expires > Instant::now())?;
        Some((s.token.clone(), s.csrf.clone()))
    }

    /// Ends the session of a request's cookie.
    pub fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.lock().remove(id);
        }
    }

    /// The caller of an API request without `Authorization`: the token of
    /// its session cookie, when a non-GET request also carries the session's
    /// CSRF token. `None` when there is no session; an error when the CSRF
    /// token is missing or wrong.
    pub fn caller(&self, method: &Method, headers: &HeaderMap) -> Result<Option<Token>, Problem> {
        let Some((token, csrf)) = self.of(headers) else {
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
}
