//! `/v1/webhooks`: the endpoints events are pushed to. A sender token's
//! webhooks get the events of its own campaigns; an admin's (and the
//! configuration's `[[webhook]]` entries) every event.

use axum::body::Body;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::problem::Problem;
use super::{json_body, Caller, St};
use crate::plane::view::rfc3339;
use crate::store::webhooks::{NewWebhook, Webhook, FROM_API, FROM_CONFIG};
use crate::webhook::sign::{new_secret, Signer};

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    batch: Option<u32>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    retry_for: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

fn duration(
    text: Option<&str>,
    key: &str,
    default: std::time::Duration,
    range: std::ops::RangeInclusive<std::time::Duration>,
) -> Result<i64, Problem> {
    let Some(text) = text else {
        return Ok(default.as_millis() as i64);
    };
    let d = humantime::parse_duration(text).map_err(|e| {
        Problem::bad_request(format!(
            "{key}: {text:?} is not a time span like \"3d\" or \"10s\": {e}"
        ))
    })?;
    if !range.contains(&d) {
        return Err(Problem::bad_request(format!(
            "{key}: {text} is out of range: allowed {}..={}",
            humantime::format_duration(*range.start()),
            humantime::format_duration(*range.end())
        )));
    }
    Ok(d.as_millis() as i64)
}

/// What the API shows of a webhook (its secret only when made).
async fn shown(state: &St, w: &Webhook) -> Result<serde_json::Value, Problem> {
    let pending = state.plane.store().webhook_pending(w).await?;
    Ok(serde_json::json!({
        "id": w.id,
        "url": w.url,
        "events": w.events,
        "batch": (w.batch > 0).then_some(w.batch),
        "source": w.source,
        "state": w.state,
        "pending": pending,
        "delivered": w.delivered,
        "failed": w.failed,
        "attempts": w.attempts,
        "last_status": w.last_status,
        "last_error": w.last_error,
        "last_attempt_at": w.last_attempt_at.map(rfc3339),
        "next_attempt_at": (w.attempts > 0).then(|| rfc3339(w.next_attempt_at)),
        "retry_for_secs": w.retry_for,
        "timeout_ms": w.timeout_ms,
        "created_at": rfc3339(w.created_at),
    }))
}

/// The webhook `id` names, if the caller may see it.
async fn webhook_for(state: &St, caller: &Caller, id: &str) -> Result<Webhook, Problem> {
    let missing = || Problem::not_found(format!("there is no webhook {id}"));
    let id: i64 = id.parse().map_err(|_| missing())?;
    let w = state.plane.store().webhook(id).await?.ok_or_else(missing)?;
    match caller.owner_filter() {
        Some(owner) if w.owner != Some(owner) => Err(missing()),
        _ => Ok(w),
    }
}

/// `POST /v1/webhooks`: `{"url", "events": [...], "batch": N, "secret":
/// "whsec_…", "retry_for": "3d", "timeout": "10s"}`; all but `url` optional.
/// Answers `201` with the webhook and its secret (made here when not given):
/// the only time the secret is shown.
pub async fn create(state: St, caller: Caller, body: Body) -> Result<Response, Problem> {
    caller.sender()?;
    let (req, _): (CreateBody, _) = json_body(body, state.limits.max_body_bytes).await?;
    volley_conf::check_webhook_url(&req.url)
        .map_err(|e| Problem::bad_request(format!("url: {e}")))?;
    volley_conf::check_event_types(&req.events)
        .map_err(|e| Problem::bad_request(format!("events: {e}")))?;
    if let Some(n) = req.batch {
        if !(1..=volley_conf::MAX_BATCH).contains(&n) {
            return Err(Problem::bad_request(format!(
                "batch: {n} is out of range: allowed 1..={} (leave it out for one event per request)",
                volley_conf::MAX_BATCH
            )));
        }
    }
    let secret = match req.secret {
        Some(secret) => {
            Signer::new(&secret).map_err(|e| Problem::bad_request(format!("secret: {e}")))?;
            secret.trim().to_owned()
        }
        None => new_secret().map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e))?,
    };
    use std::time::Duration;
    let retry_for = duration(
        req.retry_for.as_deref(),
        "retry_for",
        volley_conf::default_webhook_retry_for(),
        Duration::from_secs(60)..=Duration::from_secs(30 * 86_400),
    )? / 1000;
    let timeout_ms = duration(
        req.timeout.as_deref(),
        "timeout",
        volley_conf::default_webhook_timeout(),
        Duration::from_secs(1)..=Duration::from_secs(120),
    )?;
    let mut events = req.events;
    events.sort_by_key(|e| volley_conf::EVENT_TYPES.iter().position(|t| t == e));
    events.dedup();
    let w = state
        .plane
        .store()
        .add_webhook(&NewWebhook {
            owner: caller.owner_filter(),
            source: FROM_API,
            url: req.url,
            events,
            secret: secret.clone(),
            batch: i64::from(req.batch.unwrap_or(0)),
            retry_for,
            timeout_ms,
        })
        .await?;
    state.plane.webhooks_changed();
    tracing::info!(webhook = w.id, url = %w.url, token = %caller.0.name, "webhook created");
    let mut view = shown(&state, &w).await?;
    view["secret"] = secret.into();
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /v1/webhooks`.
pub async fn list(state: St, caller: Caller) -> Result<Json<serde_json::Value>, Problem> {
    caller.sender()?;
    let hooks = state.plane.store().webhooks(caller.owner_filter()).await?;
    let mut out = Vec::with_capacity(hooks.len());
    for w in &hooks {
        out.push(shown(&state, w).await?);
    }
    Ok(Json(serde_json::json!({ "webhooks": out })))
}

/// `GET /v1/webhooks/ID`: the webhook, with its pending (not yet delivered)
/// and failed (given up) event counts and its last error.
pub async fn show(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.sender()?;
    let w = webhook_for(&state, &caller, &id).await?;
    Ok(Json(shown(&state, &w).await?))
}

/// `DELETE /v1/webhooks/ID`: `204`; a configured one is refused (`409`).
pub async fn delete(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.sender()?;
    let w = webhook_for(&state, &caller, &id).await?;
    if w.source == FROM_CONFIG {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!(
                "webhook {} comes from a [[webhook]] entry of the configuration file: remove it there and restart",
                w.id
            ),
        ));
    }
    state.plane.store().delete_webhook(w.id).await?;
    state.plane.webhooks_changed();
    tracing::info!(webhook = w.id, url = %w.url, token = %caller.0.name, "webhook deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
