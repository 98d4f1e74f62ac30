//! The operator's queue operations over the API (what `volley queue hold |
//! release | purge` calls on a running daemon): `GET /v1/queue/holds`,
//! `POST /v1/queue/hold`, `POST /v1/queue/release`, `POST /v1/queue/purge`.
//! Admin tokens only. The body names one rule: `{"campaign": 12}`,
//! `{"domain": "example.com"}` or `{"site": "mx.example.com"}`.
//!
//! The work is done behind [`QueueOps`]: on one node by the process that
//! holds the spool (the binary implements it over the delivery engine), in a
//! fleet by the control plane's store (holds only: a purge answers 409).

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use volley_queue::holds::Rule;

use super::problem::Problem;
use super::{json_body, Caller, St};
use crate::queue_ops::{rule_json, QueueOps};

/// The body of the calls: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// A campaign's id.
    pub campaign: Option<u64>,
    /// A destination domain.
    pub domain: Option<String>,
    /// A site: an MX host name or a route's `via`.
    pub site: Option<String>,
}

impl RuleBody {
    /// The rule it names, or what is wrong.
    pub fn rule(&self) -> Result<Rule, Problem> {
        let named: Vec<(&str, String)> = [
            ("campaign", self.campaign.map(|c| c.to_string())),
            ("domain", self.domain.clone()),
            ("site", self.site.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        match named.as_slice() {
            [(kind, value)] => Rule::parse(kind, value).map_err(|e| Problem::bad_request(format!("{kind}: {e}"))),
            [] => Err(Problem::bad_request(
                "name what to act on: {\"campaign\": ID}, {\"domain\": \"example.com\"} or {\"site\": \"mx.example.com\"}",
            )),
            _ => Err(Problem::bad_request(
                "name one of campaign, domain or site, not several",
            )),
        }
    }
}

fn ops(state: &St) -> Result<&dyn QueueOps, Problem> {
    state.queue.as_deref().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "this process has no queue to hold: use the control plane's or the delivering node's API",
        )
    })
}

/// The holds in force, as JSON.
async fn holds_json(ops: &dyn QueueOps) -> Result<Vec<Value>, Problem> {
    Ok(ops
        .holds()
        .await
        .map_err(failed)?
        .iter()
        .map(rule_json)
        .collect())
}

fn failed(e: String) -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e)
}

/// Query of `GET /v1/queue`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    limit: Option<usize>,
}

/// `GET /v1/queue?limit=N`: the live batches' recipients by destination
/// domain, most unfinished first (at most N, default 50), their totals, and
/// the holds when this process holds the spool.
pub async fn summary(
    state: St,
    caller: Caller,
    axum::extract::Query(q): axum::extract::Query<QueueQuery>,
) -> Result<Response, Problem> {
    caller.admin()?;
    let limit = super::page_limit(q.limit, 50)?;
    let store = state.plane.store();
    let domains = store.queue_domains(limit as i64).await?;
    let gauges = store.queue_gauges(crate::store::now()).await?;
    let totals: serde_json::Map<String, Value> = gauges
        .recipients
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let domains: Vec<Value> = domains
        .into_iter()
        .map(|(domain, c)| {
            json!({
                "domain": domain,
                "pending": c.pending,
                "in_flight": c.in_flight,
                "deferred": c.deferred,
                "delivered": c.delivered,
                "bounced": c.bounced,
                "recipients": c.recipients,
            })
        })
        .collect();
    let holds: Option<Vec<Value>> = match state.queue.as_deref() {
        Some(ops) => Some(holds_json(ops).await?),
        None => None,
    };
    Ok(Json(json!({
        "domains": domains,
        "totals": totals,
        "leases": gauges.leases,
        "holds": holds,
    }))
    .into_response())
}

/// `GET /v1/queue/holds`.
pub async fn holds(state: St, caller: Caller) -> Result<Response, Problem> {
    caller.admin()?;
    let ops = ops(&state)?;
    let list = holds_json(ops).await?;
    Ok(Json(json!({"holds": list})).into_response())
}

async fn change(state: St, caller: Caller, body: Body, hold: bool) -> Result<Response, Problem> {
    caller.admin()?;
    let (req, _) = json_body::<RuleBody>(body, state.limits.max_body_bytes).await?;
    let rule = req.rule()?;
    let ops = ops(&state)?;
    let changed = ops.hold(&rule, hold).await.map_err(failed)?;
    let what = if hold { "held" } else { "released" };
    tracing::info!(rule = %rule, changed, caller = %caller.0.name, "queue {what}");
    let list = holds_json(ops).await?;
    Ok(Json(json!({what: rule_json(&rule), "changed": changed, "holds": list})).into_response())
}

/// `POST /v1/queue/hold`.
pub async fn hold(state: St, caller: Caller, body: Body) -> Result<Response, Problem> {
    change(state, caller, body, true).await
}

/// `POST /v1/queue/release`.
pub async fn release(state: St, caller: Caller, body: Body) -> Result<Response, Problem> {
    change(state, caller, body, false).await
}

/// `POST /v1/queue/purge`.
pub async fn purge(state: St, caller: Caller, body: Body) -> Result<Response, Problem> {
    caller.admin()?;
    let (req, _) = json_body::<RuleBody>(body, state.limits.max_body_bytes).await?;
    let rule = req.rule()?;
    let ops = ops(&state)?;
    let Some(purging) = ops.purge(&rule) else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "a fleet's recipients cannot be purged yet: hold them (POST /v1/queue/hold), then cancel their campaign",
        ));
    };
    let done = purging.await.map_err(failed)?;
    tracing::info!(rule = %rule, recipients = done.recipients, batches = done.batches, caller = %caller.0.name, "queue purged");
    if done.ordered {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "purged": rule_json(&rule),
                "ordered": true,
                "detail": "the gateways finalise the unfinished recipients as they hold or lease their batches (each logged as purged in their delivery logs); the campaigns count them as cancelled",
            })),
        )
            .into_response());
    }
    Ok(Json(json!({
        "purged": rule_json(&rule),
        "recipients": done.recipients,
        "batches": done.batches,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_names_exactly_one_rule() {
        let body = |c: Option<u64>, d: Option<&str>, s: Option<&str>| RuleBody {
            campaign: c,
            domain: d.map(str::to_owned),
            site: s.map(str::to_owned),
        };
        assert_eq!(
            body(Some(3), None, None).rule().ok(),
            Some(Rule::Campaign(3))
        );
        assert_eq!(
            body(None, Some("A.test"), None).rule().ok(),
            Some(Rule::Domain("a.test".into()))
        );
        for bad in [
            body(None, None, None),
            body(Some(3), Some("a.test"), None),
            body(Some(0), None, None),
            body(None, None, Some("a b")),
        ] {
            assert!(bad.rule().is_err(), "{bad:?}");
        }
    }
}
