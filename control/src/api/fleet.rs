//! The gateway protocol's routes ([`crate::fleet::wire`]): `POST /v1/leases`,
//! `POST /v1/reports`, `POST /v1/releases`, `GET /v1/content/{hash}` (gateway
//! or admin tokens), and `GET /v1/gateways` (admin).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::problem::Problem;
use super::{json_body, Caller, St};
use crate::fleet::wire::{LeaseRequest, ReportRequest};
use crate::fleet::Fleet;
use crate::store::tokens::Role;

fn fleet(state: &St) -> Result<Arc<Fleet>, Problem> {
    state.fleet.clone().ok_or_else(|| {
        Problem::not_found(
            "this control plane feeds its own delivery (volley run): gateways lease from volley control",
        )
    })
}

/// Refuses a sender token: only gateways (and admins) speak the protocol.
fn gateway(caller: &Caller) -> Result<(), Problem> {
    match caller.0.role {
        Role::Gateway | Role::Admin => Ok(()),
        Role::Sender => Err(Problem::forbidden(format!(
            "token {:?} is a sender token: gateways need a gateway token (volley token create --role gateway)",
            caller.0.name
        ))),
    }
}

/// `POST /v1/leases`.
pub async fn lease(state: St, caller: Caller, body: Body) -> Result<Response, Problem> {
    gateway(&caller)?;
    let fleet = fleet(&state)?;
    let (req, _) = json_body::<LeaseRequest>(body, state.limits.max_body_bytes).await?;
    Ok(Json(fleet.lease(req).await?).into_response())
}

/// `POST /v1/reports`: `200`, or `409` naming the stale batches.
pub async fn report(state: St, caller: Caller, body: Body) -> Result<Response, Problem> {
    gateway(&caller)?;
    let fleet = fleet(&state)?;
    let (req, _) = json_body::<ReportRequest>(body, state.limits.max_body_bytes).await?;
    let answer = fleet.report(req).await?;
    let status = if answer.stale.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(answer)).into_response())
}

/// The body of `POST /v1/releases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The gateway's name.
    pub gateway: String,
    /// (campaign, batch, epoch) of each lease given back.
    #[serde(default)]
    pub batches: Vec<(i64, i64, i64)>,
    /// Every lease the gateway holds is abandoned (it restarted without
    /// them): they go to others at once, counted as resent.
    #[serde(default)]
    pub abandon_all: bool,
}

/// `POST /v1/releases`: a stopping gateway gives leases back.
pub async fn release(state: St, caller: Caller, body: Body) -> Result<Response, Problem> {
    gateway(&caller)?;
    let fleet = fleet(&state)?;
    let (req, _) = json_body::<Release>(body, state.limits.max_body_bytes).await?;
    if req.abandon_all {
        fleet.abandon(&req.gateway).await?;
    }
    fleet.release(&req.gateway, &req.batches).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/content/{hash}`: a campaign's content, as stored.
pub async fn content(
    state: St,
    caller: Caller,
    Path(hash): Path<String>,
) -> Result<Response, Problem> {
    gateway(&caller)?;
    let fleet = fleet(&state)?;
    let bytes = fleet.content(&hash).await?;
    let mut response = (StatusCode::OK, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// `GET /v1/gateways`.
pub async fn gateways(state: St, caller: Caller) -> Result<Response, Problem> {
    caller.admin()?;
    let fleet = fleet(&state)?;
    Ok(Json(serde_json::json!({ "gateways": fleet.gateways().await? })).into_response())
}
