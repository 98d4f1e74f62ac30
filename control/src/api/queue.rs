//! The operator's queue operations over the API (what `volley queue hold |
//! release | purge` calls on a running daemon): `GET /v1/queue/holds`,
//! `POST /v1/queue/hold`, `POST /v1/queue/release`, `POST /v1/queue/purge`.
//! Admin tokens only. The body names one rule: `{"campaign": 12}`,
//! `{"domain": "example.com"}` or `{"site": "mx.example.com"}`.
//!
//! The work is done by whoever holds the spool, behind [`QueueOps`] (the
//! binary implements it over the delivery engine); a process without a spool
//! (`volley control`) answers 409.

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use volley_queue::holds::Rule;

use super::problem::Problem;
use super::{json_body, Caller, St};

/// What a purge did: recipients finalised, batch files they were in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCount {
    /// Recipients finalised.
    pub recipients: u64,
    /// Batch files changed.
    pub batches: u64,
}

/// A future of a purge.
pub type PurgeFuture<'a> = Pin<Box<dyn Future<Output = Result<PurgeCount, String>> + Send + 'a>>;

/// The queue operations of the process that holds the spool.
pub trait QueueOps: Send + Sync {
    /// The holds in force.
    fn holds(&self) -> Vec<Rule>;
    /// Adds (`hold`) or removes a hold; answers whether it changed anything.
    fn hold(&self, rule: &Rule, hold: bool) -> Result<bool, String>;
    /// Finalises the unfinished recipients `rule` covers.
    fn purge<'a>(&'a self, rule: &'a Rule) -> PurgeFuture<'a>;
}

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

/// The JSON of a rule: `{"campaign": 12}`, `{"domain": "…"}`, `{"site": "…"}`.
pub fn rule_json(rule: &Rule) -> Value {
    match rule {
        Rule::Campaign(id) => json!({"campaign": id}),
        Rule::Domain(d) => json!({"domain": d}),
        Rule::Site(s) => json!({"site": s}),
    }
}

fn ops(state: &St) -> Result<&dyn QueueOps, Problem> {
    state.queue.as_deref().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "this process holds no spool (volley control): hold, release and purge on the node that delivers (volley run), or with volley queue on a stopped spool",
        )
    })
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
    let holds: Option<Vec<Value>> = state
        .queue
        .as_deref()
        .map(|ops| ops.holds().iter().map(rule_json).collect());
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
    let list: Vec<Value> = ops.holds().iter().map(rule_json).collect();
    Ok(Json(json!({"holds": list})).into_response())
}

async fn change(state: St, caller: Caller, body: Body, hold: bool) -> Result<Response, Problem> {
    caller.admin()?;
    let (req, _) = json_body::<RuleBody>(body, state.limits.max_body_bytes).await?;
    let rule = req.rule()?;
    let ops = ops(&state)?;
    let changed = ops
        .hold(&rule, hold)
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let what = if hold { "held" } else { "released" };
    tracing::info!(rule = %rule, changed, caller = %caller.0.name, "queue {what}");
    let list: Vec<Value> = ops.holds().iter().map(rule_json).collect();
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
    let done = ops
        .purge(&rule)
        .await
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    tracing::info!(rule = %rule, recipients = done.recipients, batches = done.batches, caller = %caller.0.name, "queue purged");
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
