//! `/v1/campaigns` and `/v1/uploads`: submit, list, show, suspend, resume,
//! cancel, the per-recipient table, the rejected rows; and `/v1/events`.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::problem::Problem;
use super::{json_body, page_limit, parse_time, Caller, St};
use crate::plane::submit::{JsonRecipient, Recipients, Submission};
use crate::plane::view::STATUSES;
use crate::store::campaigns::{Campaign, CampaignFilter, CampaignState};
use crate::store::events::{event_id, members};

/// The body of `POST /v1/campaigns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    template: serde_json::Value,
    #[serde(default)]
    recipients: Option<Vec<JsonRecipient>>,
    #[serde(default)]
    upload: Option<String>,
    #[serde(default)]
    list: Option<i64>,
    #[serde(default, rename = "where")]
    filter: Option<serde_json::Value>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    start_at: Option<String>,
    #[serde(default)]
    stop_at: Option<String>,
    #[serde(default)]
    batch_size: Option<u32>,
    #[serde(default)]
    notify: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

fn time_field(name: &str, value: Option<&String>) -> Result<Option<i64>, Problem> {
    value
        .map(|t| {
            parse_time(t).ok_or_else(|| {
                Problem::bad_request(format!(
                    "{name}: {t:?} is not an RFC 3339 time (e.g. 2026-12-02T10:00:00Z or 2026-12-02T11:00:00+01:00)"
                ))
            })
        })
        .transpose()
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            Problem::bad_request("Idempotency-Key must be 1 to 255 printable ASCII characters")
        })?;
    Ok(Some(key.to_owned()))
}

/// Loads campaign `id` for `caller`: 404 when there is none, 403 when it is
/// another sender's.
async fn campaign_for(state: &St, caller: &Caller, id: &str) -> Result<Campaign, Problem> {
    caller.sender()?;
    let id: i64 = id
        .parse()
        .map_err(|_| Problem::not_found(format!("{id:?} is not a campaign id (a number)")))?;
    let c = state
        .plane
        .store()
        .campaign(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("there is no campaign {id}")))?;
    if !caller.is_admin() && c.owner != Some(caller.0.id) {
        return Err(Problem::forbidden(format!(
            "campaign {id} was submitted by another token: use that token or an admin token"
        )));
    }
    Ok(c)
}

async fn shown(state: &St, c: &Campaign) -> Result<serde_json::Value, Problem> {
    let view = state.plane.view(c).await?;
    serde_json::to_value(view)
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `POST /v1/uploads`: a CSV body of any length, streamed to disk.
pub async fn upload(state: St, caller: Caller, body: Body) -> Result<Response, Problem> {
    caller.sender()?;
    let stream = body.into_data_stream();
    let (id, bytes) = state
        .plane
        .upload(Some(caller.0.id), stream, state.limits.max_upload_bytes)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"id": id, "bytes": bytes})),
    )
        .into_response())
}

/// `POST /v1/campaigns`.
pub async fn create(
    state: St,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    caller.sender()?;
    let key = idempotency_key(&headers)?;
    let (req, raw): (CreateBody, _) = json_body(body, state.limits.max_body_bytes).await?;
    if req.list.is_none() && (req.filter.is_some() || req.limit.is_some()) {
        return Err(Problem::bad_request(
            "where and limit select members of a list: give list too",
        ));
    }
    let recipients = match (req.recipients, req.upload, req.list) {
        (Some(rows), None, None) => Recipients::Rows(rows),
        (None, Some(id), None) => Recipients::Upload(id),
        (None, None, Some(id)) => Recipients::List {
            id,
            filter: match &req.filter {
                Some(query) => crate::targeting::parse(query).map_err(Problem::bad_request)?,
                None => crate::targeting::Filter::All,
            },
            limit: req.limit,
        },
        (None, None, None) => {
            return Err(Problem::bad_request(
                "no recipients: give recipients (an array of {\"email\": ..., \"fields\": {...}}), upload (the id from POST /v1/uploads) or list (a list's id)",
            ))
        }
        _ => {
            return Err(Problem::bad_request(
                "give one of recipients, upload or list, not several",
            ))
        }
    };
    let hash = crate::store::tokens::hash(&String::from_utf8_lossy(&raw));
    let sub = Submission {
        template: req.template,
        recipients,
        start_at: time_field("start_at", req.start_at.as_ref())?,
        stop_at: time_field("stop_at", req.stop_at.as_ref())?,
        batch_size: req.batch_size,
        notify: req.notify,
        tags: req.tags,
        idempotency: key.map(|k| (k, hash)),
        wait: false,
    };
    let submitted = state.plane.submit(Some(caller.0.id), sub).await?;
    let body = shown(&state, &submitted.campaign).await?;
    let status = if submitted.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(body)).into_response();
    if let Ok(location) = format!("/v1/campaigns/{}", submitted.campaign.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Query of `GET /v1/campaigns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    tag: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/campaigns?state=S&tag=T&cursor=C&limit=N`: newest first.
pub async fn list(
    state: St,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.sender()?;
    let limit = page_limit(q.limit, 50)?;
    let wanted = q
        .state
        .as_deref()
        .map(|s| {
            CampaignState::parse(s).ok_or_else(|| {
                let names: Vec<&str> = CampaignState::ALL.iter().map(|s| s.name()).collect();
                Problem::bad_request(format!("state {s:?} is not one of {}", names.join(", ")))
            })
        })
        .transpose()?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| Problem::bad_request(format!("cursor {c:?} is not one this API gave")))
        })
        .transpose()?;
    let filter = CampaignFilter {
        owner: caller.owner_filter(),
        state: wanted,
        tag: q.tag,
        before,
        limit: limit as i64 + 1,
    };
    let mut found = state.plane.store().list_campaigns(&filter).await?;
    let more = found.len() > limit;
    found.truncate(limit);
    let mut out = Vec::with_capacity(found.len());
    for c in &found {
        out.push(shown(&state, c).await?);
    }
    let next = if more {
        found.last().map(|c| c.id.to_string())
    } else {
        None
    };
    Ok(Json(
        serde_json::json!({"campaigns": out, "next_cursor": next}),
    ))
}

/// `GET /v1/campaigns/ID`.
pub async fn show(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let c = campaign_for(&state, &caller, &id).await?;
    Ok(Json(shown(&state, &c).await?))
}

/// `POST /v1/campaigns/ID/suspend`.
pub async fn suspend(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let c = campaign_for(&state, &caller, &id).await?;
    let c = state.plane.suspend(c.id).await?;
    Ok(Json(shown(&state, &c).await?))
}

/// `POST /v1/campaigns/ID/resume`.
pub async fn resume(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let c = campaign_for(&state, &caller, &id).await?;
    let c = state.plane.resume(c.id).await?;
    Ok(Json(shown(&state, &c).await?))
}

/// `POST /v1/campaigns/ID/cancel`.
pub async fn cancel(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let c = campaign_for(&state, &caller, &id).await?;
    let c = state.plane.cancel(c.id).await?;
    Ok(Json(shown(&state, &c).await?))
}

/// Query of `GET /v1/campaigns/ID/recipients`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientsQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/campaigns/ID/recipients?status=S&cursor=C&limit=N`: in queue order.
pub async fn recipients(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RecipientsQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    let c = campaign_for(&state, &caller, &id).await?;
    let limit = page_limit(q.limit, 100)?;
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(Problem::bad_request(format!(
                "status {s:?} is not one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    let cursor = match q.cursor.as_deref() {
        None => (0, 0),
        Some(text) => text
            .split_once('.')
            .and_then(|(b, i)| Some((b.parse().ok()?, i.parse().ok()?)))
            .ok_or_else(|| {
                Problem::bad_request(format!("cursor {text:?} is not one this API gave"))
            })?,
    };
    let (rows, next) = state
        .plane
        .recipients(&c, q.status.as_deref(), cursor, limit)
        .await?;
    Ok(Json(serde_json::json!({
        "recipients": rows,
        "next_cursor": next.map(|(b, i)| format!("{b}.{i}")),
    })))
}

/// Query of the lists paged by a number (`rejects`, `events`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

fn number_cursor(cursor: Option<&str>) -> Result<i64, Problem> {
    cursor
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| Problem::bad_request(format!("cursor {c:?} is not one this API gave")))
        })
        .transpose()
        .map(|c| c.unwrap_or(0))
}

/// `GET /v1/campaigns/ID/rejects`: the rows skipped, with line and reason.
pub async fn rejects(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    let c = campaign_for(&state, &caller, &id).await?;
    let limit = page_limit(q.limit, 100)?;
    let after = number_cursor(q.cursor.as_deref())?;
    let mut rows = state
        .plane
        .store()
        .rejects(c.id, after, limit as i64 + 1)
        .await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|r| r.line.to_string())
    } else {
        None
    };
    let rows: Vec<_> = rows
        .iter()
        .map(|r| serde_json::json!({"line": r.line, "email": r.email, "reason": r.reason}))
        .collect();
    Ok(Json(serde_json::json!({
        "partitioned": c.partitioned,
        "rejects": rows,
        "next_cursor": next,
    })))
}

/// Query of `GET /v1/campaigns/ID/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestQuery {
    limit: Option<usize>,
}

/// `GET /v1/campaigns/ID/events?limit=N`: the campaign's latest events in
/// the outbox, newest first (at most N, default 20): what the dashboard
/// shows as they happen.
pub async fn campaign_events(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LatestQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    let c = campaign_for(&state, &caller, &id).await?;
    let limit = page_limit(q.limit, 20)?;
    let events = state
        .plane
        .store()
        .campaign_events(c.id, limit as i64)
        .await?;
    let mut rows = Vec::new();
    for e in &events {
        let mut members = members(e.at, e.n, &e.payload);
        members.reverse();
        for m in members {
            if rows.len() >= limit {
                break;
            }
            rows.push(serde_json::json!({
                "event_id": event_id(e.id, e.n, m.part),
                "type": e.kind,
                "at": crate::plane::view::rfc3339(m.at),
                "data": m.data.value(),
            }));
        }
    }
    Ok(Json(serde_json::json!({"events": rows})))
}

/// `GET /v1/events?cursor=ID&limit=N`: the outbox, oldest first (admin): at
/// most N events, whole rows (a row may hold a group of delivery events,
/// each listed; `id` is the row's, `event_id` the event's, as webhooks send
/// it).
pub async fn events(
    State(state): St,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.admin()?;
    let limit = page_limit(q.limit, 100)?;
    let after = number_cursor(q.cursor.as_deref())?;
    let events = state.plane.store().events(after, limit as i64).await?;
    let mut rows = Vec::new();
    let mut last = None;
    for e in &events {
        if !rows.is_empty() && rows.len() + e.n.max(1) as usize > limit {
            break;
        }
        for m in members(e.at, e.n, &e.payload) {
            rows.push(serde_json::json!({
                "id": e.id,
                "event_id": event_id(e.id, e.n, m.part),
                "type": e.kind,
                "campaign": e.campaign,
                "at": crate::plane::view::rfc3339(m.at),
                "data": m.data.value(),
            }));
        }
        last = Some(e.id);
    }
    let more = events.len() == limit || last != events.last().map(|e| e.id);
    let next = last.filter(|_| more).map(|id| id.to_string());
    Ok(Json(
        serde_json::json!({"events": rows, "next_cursor": next}),
    ))
}
