//! `/v1/lists`: lists and their members. A sender token sees its own lists,
//! an admin token every list.

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::problem::Problem;
use super::{json_body, page_limit, Caller, St};
use crate::plane::submit::JsonRecipient;
use crate::plane::view::rfc3339;
use crate::store::lists::{List, NewList};
use crate::suppress::normalize;

/// Body of `POST /v1/lists`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    form_fields: Vec<String>,
}

async fn shown(state: &St, list: &List) -> Result<serde_json::Value, Problem> {
    let (subscribed, unsubscribed) = state.plane.store().list_counts(list.id).await?;
    Ok(serde_json::json!({
        "id": list.id,
        "name": list.name,
        "fields": list.fields,
        "from": list.from,
        "form_fields": list.form_fields,
        "subscribed": subscribed,
        "unsubscribed": unsubscribed,
        "created_at": rfc3339(list.created_at),
    }))
}

fn list_id(id: &str) -> Result<i64, Problem> {
    id.parse()
        .map_err(|_| Problem::not_found(format!("there is no list {id}")))
}

async fn list_for(state: &St, caller: &Caller, id: &str) -> Result<List, Problem> {
    caller.sender()?;
    Ok(state
        .plane
        .list_for(list_id(id)?, caller.owner_filter())
        .await?)
}

/// `POST /v1/lists`: `{"name", "from", "form_fields"}` → `201`. `from` (the
/// sender of confirmation messages) turns the public subscribe form on.
pub async fn create(state: St, caller: Caller, body: Body) -> Result<Response, Problem> {
    caller.sender()?;
    let (req, _): (CreateBody, _) = json_body(body, state.limits.max_body_bytes).await?;
    let list = state
        .plane
        .create_list(NewList {
            owner: caller.owner_filter().or(Some(caller.0.id)),
            name: req.name,
            from: req.from,
            form_fields: req.form_fields,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(shown(&state, &list).await?)).into_response())
}

/// `GET /v1/lists`.
pub async fn list(state: St, caller: Caller) -> Result<Json<serde_json::Value>, Problem> {
    caller.sender()?;
    let lists = state.plane.store().lists(caller.owner_filter()).await?;
    let mut out = Vec::with_capacity(lists.len());
    for l in &lists {
        out.push(shown(&state, l).await?);
    }
    Ok(Json(serde_json::json!({ "lists": out })))
}

/// `GET /v1/lists/ID`.
pub async fn show(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let list = list_for(&state, &caller, &id).await?;
    Ok(Json(shown(&state, &list).await?))
}

/// `POST /v1/lists/ID/members`: a JSON array of `{"email", "fields"}`, or
/// with `Content-Type: text/csv` a CSV body (an `email` column, the others
/// merge fields). Answers the counts and the rows refused (with their line or
/// position); the rest is added in one transaction.
pub async fn add_members(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, Problem> {
    let list = list_for(&state, &caller, &id).await?;
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/csv"));
    let added = if csv {
        let bytes = axum::body::to_bytes(body, state.limits.max_body_bytes as usize)
            .await
            .map_err(|_| {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the body is larger than {} bytes ([control] max_body_bytes): send the members in parts",
                        state.limits.max_body_bytes
                    ),
                )
            })?;
        state.plane.add_members_csv(list.id, &bytes).await?
    } else {
        let (rows, _): (Vec<JsonRecipient>, _) =
            json_body(body, state.limits.max_body_bytes).await?;
        state.plane.add_members(list.id, rows).await?
    };
    tracing::info!(
        list = list.id,
        added = added.added.added,
        updated = added.added.updated,
        rejected = added.rejected.len(),
        "list members added"
    );
    Ok(Json(serde_json::to_value(&added).map_err(|e| {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })?))
}

/// Query of `GET /v1/lists/ID/members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

fn member_json(m: &crate::store::lists::Member) -> serde_json::Value {
    serde_json::json!({
        "email": m.email,
        "fields": m.fields,
        "status": m.status,
        "created_at": rfc3339(m.created_at),
        "updated_at": rfc3339(m.updated_at),
    })
}

/// `GET /v1/lists/ID/members?cursor=&limit=`: by address; `next_cursor`
/// while there are more.
pub async fn members(
    state: St,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<MembersQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    let list = list_for(&state, &caller, &id).await?;
    let limit = page_limit(q.limit, 100)?;
    let after = q.cursor.unwrap_or_default();
    let found = state
        .plane
        .store()
        .members(list.id, &after, limit as i64 + 1, false)
        .await?;
    let more = found.len() > limit;
    let page = &found[..found.len().min(limit)];
    let next = more.then(|| page.last().map(|m| m.email.clone())).flatten();
    Ok(Json(serde_json::json!({
        "members": page.iter().map(member_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// `GET /v1/lists/ID/members/ADDRESS`.
pub async fn member(
    state: St,
    caller: Caller,
    Path((id, address)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, Problem> {
    let list = list_for(&state, &caller, &id).await?;
    let m = state
        .plane
        .store()
        .member(list.id, &normalize(&address))
        .await?
        .ok_or_else(|| {
            Problem::not_found(format!("{address} is not a member of list {}", list.id))
        })?;
    Ok(Json(member_json(&m)))
}

/// `DELETE /v1/lists/ID/members/ADDRESS`: `204`, `404` if not a member.
pub async fn remove_member(
    state: St,
    caller: Caller,
    Path((id, address)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let list = list_for(&state, &caller, &id).await?;
    if !state
        .plane
        .store()
        .delete_member(list.id, &normalize(&address))
        .await?
    {
        return Err(Problem::not_found(format!(
            "{address} is not a member of list {}",
            list.id
        )));
    }
    tracing::info!(list = list.id, member = %address, "list member removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
