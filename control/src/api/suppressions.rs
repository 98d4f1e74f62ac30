//! `/v1/suppressions`: the spool's suppression list (the one `volley suppress`
//! and the engine use), read, added to and removed from (admin tokens).

use axum::body::Body;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::problem::Problem;
use super::{json_body, page_limit, Caller, St};
use crate::suppress::{Entry, Reason};

fn entry_json(e: &Entry<'_>) -> serde_json::Value {
    serde_json::json!({
        "address": e.address,
        "domain": e.domain,
        "reason": e.reason.as_str(),
        "detail": e.detail,
        "since": crate::plane::view::rfc3339(e.since as i64),
    })
}

/// Query of `GET /v1/suppressions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    address: Option<String>,
    domain: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/suppressions?address=A&domain=D&cursor=C&limit=N`: by address,
/// then sending domain.
pub async fn list(
    state: St,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.admin()?;
    let limit = page_limit(q.limit, 100)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| c.split_once(' ').map(|(a, d)| (a.to_owned(), d.to_owned())));
    let after = match after {
        Some(None) => return Err(Problem::bad_request("cursor is not one this API gave")),
        Some(Some(k)) => Some(k),
        None => None,
    };
    let domain = q.domain.map(|d| d.trim().to_ascii_lowercase());
    let (rows, next) = state.plane.suppressions().read(|list| {
        let mut entries: Vec<Entry<'_>> = match &q.address {
            Some(a) => list.entries_of(a),
            None => list.iter().collect(),
        };
        entries.retain(|e| domain.as_deref().is_none_or(|d| e.domain == d));
        entries.sort_by(|a, b| (a.address, a.domain).cmp(&(b.address, b.domain)));
        let start = match &after {
            Some((a, d)) => {
                entries.partition_point(|e| (e.address, e.domain) <= (a.as_str(), d.as_str()))
            }
            None => 0,
        };
        let page: Vec<Entry<'_>> = entries.iter().skip(start).take(limit).copied().collect();
        let next = (entries.len() > start + limit)
            .then(|| page.last().map(|e| format!("{} {}", e.address, e.domain)))
            .flatten();
        (page.iter().map(entry_json).collect::<Vec<_>>(), next)
    });
    Ok(Json(
        serde_json::json!({"suppressions": rows, "next_cursor": next}),
    ))
}

/// The body of `POST /v1/suppressions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    address: String,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// `POST /v1/suppressions {address, domain = "*", reason = "manual", detail}`.
pub async fn add(state: St, caller: Caller, body: Body) -> Result<Response, Problem> {
    caller.admin()?;
    let (req, _): (AddBody, _) = json_body(body, 64 << 10).await?;
    let domain = req.domain.unwrap_or_else(|| "*".to_owned());
    let reason = Reason::parse(req.reason.as_deref().unwrap_or("manual"));
    let at = crate::store::now() as u64;
    let added = state
        .plane
        .suppressions()
        .write(|list| list.add(&req.address, &domain, &reason, req.detail.as_deref(), at))
        .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let entry = state.plane.suppressions().read(|list| {
        list.entries_of(&req.address)
            .iter()
            .find(|e| e.domain == domain.trim().to_ascii_lowercase())
            .map(entry_json)
    });
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(entry.unwrap_or_default())).into_response())
}

/// Query of `DELETE /v1/suppressions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    address: String,
    domain: Option<String>,
}

/// `DELETE /v1/suppressions?address=A&domain=D`: for that sending domain, or
/// every one without `domain`.
pub async fn remove(
    state: St,
    caller: Caller,
    Query(q): Query<RemoveQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.admin()?;
    let at = crate::store::now() as u64;
    let removed = state
        .plane
        .suppressions()
        .write(|list| list.remove(&q.address, q.domain.as_deref(), at))
        .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    if removed.is_empty() {
        return Err(Problem::not_found(format!(
            "{} is not suppressed{}",
            q.address,
            q.domain.map(|d| format!(" for {d}")).unwrap_or_default()
        )));
    }
    Ok(Json(
        serde_json::json!({"address": q.address, "removed": removed}),
    ))
}
