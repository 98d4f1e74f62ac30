//! The control plane's HTTP API (axum): campaigns, uploads, suppressions and
//! the event outbox, in JSON, errors as problem+json ([`problem`]). Every call
//! but `GET /healthz` and `/metrics` needs `Authorization: Bearer TOKEN` (or
//! the dashboard's session cookie, [`session`]); a sender token sees
//! only its own campaigns, an admin token everything, a gateway token none of
//! this (it leases batches, in the fleet).
//!
//! Bounds: a JSON body is read up to `[control] max_body_bytes` (413 past it),
//! an upload streamed to disk up to `max_upload_bytes`, headers within hyper's
//! limits (its 400 KB read buffer); lists are paginated (at most
//! [`MAX_PAGE`] items a page).
//!
//! Layout: [`problem`] (errors), [`campaigns`] (campaigns and uploads),
//! [`suppressions`], [`lists`], [`webhooks`], [`queue`] (holds and purges),
//! [`fleet`] (the gateway protocol), and here the router,
//! authentication, JSON bodies and times.

pub mod campaigns;
pub mod fleet;
pub mod lists;
pub mod problem;
pub mod queue;
pub mod session;
pub mod suppressions;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::plane::Plane;
use crate::store::tokens::{Role, Token};
use problem::Problem;

/// Most items one page of a list holds.
pub const MAX_PAGE: usize = 1000;

/// The bounds on requests, from `[control]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest JSON body.
    pub max_body_bytes: u64,
    /// Largest upload.
    pub max_upload_bytes: u64,
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The control plane.
    pub plane: Arc<Plane>,
    /// Request bounds.
    pub limits: Limits,
    /// The lease service, when gateways lease from this process (`volley
    /// control`).
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// The queue operations, when this process holds the spool (`volley run`).
    pub queue: Option<Arc<dyn crate::queue_ops::QueueOps>>,
}

/// What a process serves besides the API proper.
#[derive(Default)]
pub struct Extras {
    /// The gateway protocol (`volley control`).
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// `/metrics` (no token).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Holds and purges of the spool (`volley run`).
    pub queue: Option<Arc<dyn crate::queue_ops::QueueOps>>,
    /// Web pages served beside the API (the dashboard,
    /// `volley_control::dashboard::routes`).
    pub pages: Option<Router<AppState>>,
}

/// The caller of a request: its token.
#[derive(Debug, Clone)]
pub struct Caller(pub Token);

impl Caller {
    /// Whether it may do everything.
    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }

    /// The owner its campaigns are filed under (`None` for an admin: all).
    pub fn owner_filter(&self) -> Option<i64> {
        (!self.is_admin()).then_some(self.0.id)
    }

    /// Refuses a caller that is not an admin.
    pub fn admin(&self) -> Result<(), Problem> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "token {:?} is a {} token: this needs an admin token",
                self.0.name,
                self.0.role.name()
            )))
        }
    }

    /// Refuses a gateway token (campaigns are for senders and admins).
    pub fn sender(&self) -> Result<(), Problem> {
        if self.0.role == Role::Gateway {
            Err(Problem::forbidden(format!(
                "token {:?} is a gateway token: use a sender or admin token",
                self.0.name
            )))
        } else {
            Ok(())
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> impl Future<Output = Result<Caller, Problem>> + Send {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned));
        // Without it, the dashboard's session cookie stands for a token
        // (CSRF-checked).
        let session = header
            .is_none()
            .then(|| (parts.method.clone(), parts.headers.clone()));
        let plane = Arc::clone(&state.plane);
        async move {
            let unauthorized = |detail: &str| Problem::new(StatusCode::UNAUTHORIZED, detail);
            if let Some((method, headers)) = session {
                if let Some(token) = session::caller(plane.store(), &method, &headers).await? {
                    return Ok(Caller(token));
                }
            }
            let value = match header {
                None => {
                    return Err(unauthorized(
                        "no Authorization header: send Authorization: Bearer TOKEN (make a token with volley token create)",
                    ))
                }
                Some(Err(_)) => return Err(unauthorized("the Authorization header is not text")),
                Some(Ok(v)) => v,
            };
            let Some(secret) = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
            else {
                return Err(unauthorized(
                    "the Authorization header must be Bearer TOKEN",
                ));
            };
            match plane.store().authenticate(secret.trim()).await? {
                Some(token) => Ok(Caller(token)),
                None => Err(unauthorized(
                    "the token is not valid (mistyped, or revoked): check it with volley token list",
                )),
            }
        }
    }
}

/// Reads a JSON body of at most `limit` bytes into `T`; errors say where
/// (line, column and the path of the field) and what is wrong. Answers the
/// raw bytes too (the idempotency check hashes them).
pub async fn json_body<T: DeserializeOwned>(
    body: Body,
    limit: u64,
) -> Result<(T, bytes::Bytes), Problem> {
    let bytes = axum::body::to_bytes(body, limit as usize).await.map_err(|e| {
        let too_big = std::error::Error::source(&e)
            .is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_big {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {limit} bytes ([control] max_body_bytes): upload long recipient lists with POST /v1/uploads"),
            )
        } else {
            Problem::bad_request(format!("the body could not be read: {e}"))
        }
    })?;
    // Parsed without tracking the path first (gateways' reports are the
    // biggest bodies, and the busiest: tracking doubled the parse); a body
    // that fails is parsed again, with it, for the error's path.
    if let Ok(value) = serde_json::from_slice(&bytes) {
        return Ok((value, bytes));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = format!("line {} column {}", inner.line(), inner.column());
        if path == "." || path.is_empty() {
            Problem::bad_request(format!(
                "the body is not valid JSON for this call ({at}): {inner}"
            ))
        } else {
            Problem::bad_request(format!("{path} ({at}): {inner}"))
        }
    })?;
    de.end().map_err(|e| {
        Problem::bad_request(format!("the body has trailing bytes after its JSON: {e}"))
    })?;
    Ok((value, bytes))
}

/// A page's size: `limit` when from 1 to [`MAX_PAGE`], else `default` when
/// not given.
pub(crate) fn page_limit(limit: Option<usize>, default: usize) -> Result<usize, Problem> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(Problem::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}, not {n}"
        ))),
    }
}

/// Parses an RFC 3339 time (`2026-12-02T10:00:00Z`, `…+01:00`) into unix seconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (base, offset) =
        if let Some(base) = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
            (base, 0i64)
        } else {
            let split = text.len().checked_sub(6)?;
            let (base, off) = text.split_at(split);
            let sign = match off.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = off.get(1..)?.split_once(':')?;
            let minutes = h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?;
            (base, sign * minutes * 60)
        };
    let t = humantime::parse_rfc3339(&format!("{base}Z")).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(secs - offset)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> Problem {
    Problem::not_found("no such API path: see the API section of README.md")
}

/// Every route of the API, with what `extras` brings: the gateway protocol,
/// `/metrics` (no token), the queue operations.
pub fn router(plane: Arc<Plane>, limits: Limits, extras: Extras) -> Router {
    let Extras {
        fleet,
        metrics,
        queue,
        pages,
    } = extras;
    let state = AppState {
        plane,
        limits,
        fleet,
        queue,
    };
    let api = Router::new()
        .merge(pages.unwrap_or_default())
        .route("/healthz", get(healthz))
        .route("/v1/uploads", post(campaigns::upload))
        .route(
            "/v1/campaigns",
            post(campaigns::create).get(campaigns::list),
        )
        .route("/v1/campaigns/{id}", get(campaigns::show))
        .route("/v1/campaigns/{id}/suspend", post(campaigns::suspend))
        .route("/v1/campaigns/{id}/resume", post(campaigns::resume))
        .route("/v1/campaigns/{id}/cancel", post(campaigns::cancel))
        .route("/v1/campaigns/{id}/recipients", get(campaigns::recipients))
        .route("/v1/campaigns/{id}/rejects", get(campaigns::rejects))
        .route("/v1/campaigns/{id}/events", get(campaigns::campaign_events))
        .route(
            "/v1/suppressions",
            get(suppressions::list)
                .post(suppressions::add)
                .delete(suppressions::remove),
        )
        .route("/v1/events", get(campaigns::events))
        .route("/v1/lists", post(lists::create).get(lists::list))
        .route("/v1/lists/{id}", get(lists::show))
        .route(
            "/v1/lists/{id}/members",
            post(lists::add_members).get(lists::members),
        )
        .route(
            "/v1/lists/{id}/members/{address}",
            get(lists::member).delete(lists::remove_member),
        )
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::show).delete(webhooks::delete),
        )
        .route("/v1/leases", post(fleet::lease))
        .route("/v1/reports", post(fleet::report))
        .route("/v1/releases", post(fleet::release))
        .route("/v1/content/{hash}", get(fleet::content))
        .route("/v1/gateways", get(fleet::gateways))
        .route("/v1/queue", get(queue::summary))
        .route("/v1/queue/holds", get(queue::holds))
        .route("/v1/queue/hold", post(queue::hold))
        .route("/v1/queue/release", post(queue::release))
        .route("/v1/queue/purge", post(queue::purge))
        .fallback(not_found)
        .with_state(state);
    match metrics {
        Some(metrics) => api.merge(crate::metrics::router(metrics)),
        None => api,
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        crate::bounded::BoundedListener::new(listener, crate::bounded::Bounds::default()),
        router,
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The state of a handler, for the handlers' modules.
pub(crate) type St = State<AppState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        let table = [
            ("2026-12-02T10:00:00Z", Some(1_796_205_600)),
            ("2026-12-02T11:00:00+01:00", Some(1_796_205_600)),
            ("2026-12-02T09:30:00-00:30", Some(1_796_205_600)),
            ("2026-12-02T10:00:00.250Z", Some(1_796_205_600)),
            ("2026-12-02 10:00", None),
            ("tomorrow", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_time(text), want, "{text}");
        }
    }
}
