//! `GET /metrics`: a process's metrics in the Prometheus text format
//! (prefix `volley_`). The delivery engine's counters (messages by outcome
//! and site, connections, transactions in flight, reply latency, DNS cache)
//! are registered by the binary; the control plane's gauges (the queue by
//! state, campaigns, leases held, gateways, webhook outbox depth) are read
//! from the store when scraped, so every control plane on one store shows
//! the same figures and nothing on the delivery path counts them.
//!
//! No label holds a campaign, batch or recipient: states, outcomes and sites
//! (capped) only.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::plane::Plane;
use crate::store::StoreError;

type Labels = Vec<(String, String)>;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The control plane's gauges, refreshed from the store at each scrape.
#[derive(Debug, Default)]
struct ControlGauges {
    queue_recipients: Family<Labels, Gauge>,
    queue_batches: Family<Labels, Gauge>,
    campaigns: Family<Labels, Gauge>,
    leases: Gauge,
    gateways: Family<Labels, Gauge>,
    webhook_pending: Gauge,
    webhooks: Family<Labels, Gauge>,
}

/// The recipient states always shown (0 when none).
const QUEUE_STATES: [&str; 3] = ["pending", "in_flight", "deferred"];

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

impl ControlGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "queue_recipients",
            "Recipients of live batches not final yet, by state",
            self.queue_recipients.clone(),
        );
        registry.register(
            "queue_batches",
            "Batches not done, by state",
            self.queue_batches.clone(),
        );
        registry.register("campaigns", "Campaigns by state", self.campaigns.clone());
        registry.register(
            "leases_held",
            "Batches leased to gateways, lease not expired",
            self.leases.clone(),
        );
        registry.register(
            "gateways",
            "Gateways seen, by state (live: reported within the lease ttl)",
            self.gateways.clone(),
        );
        registry.register(
            "webhook_outbox_pending",
            "Events the active webhooks have yet to deliver",
            self.webhook_pending.clone(),
        );
        registry.register("webhooks", "Webhooks by state", self.webhooks.clone());
    }

    async fn refresh(&self, plane: &Plane, lease_ttl: Duration) -> Result<(), StoreError> {
        let store = plane.store();
        let now = crate::store::now();
        let queue = store.queue_gauges(now).await?;
        self.queue_recipients.clear();
        for state in QUEUE_STATES {
            let n = queue
                .recipients
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.queue_recipients
                .get_or_create(&label("state", state))
                .set(n);
        }
        set_all(&self.queue_batches, &queue.batches);
        set_all(&self.campaigns, &queue.campaigns);
        self.leases.set(queue.leases);
        let ttl = lease_ttl.as_secs().max(1) as i64;
        let (mut live, mut lost) = (0, 0);
        for g in store.gateways(now).await? {
            if g.last_seen + ttl >= now {
                live += 1;
            } else {
                lost += 1;
            }
        }
        self.gateways.clear();
        self.gateways
            .get_or_create(&label("state", "live"))
            .set(live);
        self.gateways
            .get_or_create(&label("state", "lost"))
            .set(lost);
        let mut pending = 0;
        let mut states: Vec<(String, i64)> = Vec::new();
        for hook in store.webhooks(None).await? {
            if hook.state == "active" {
                pending += store.webhook_pending(&hook).await?;
            }
            match states.iter_mut().find(|(s, _)| *s == hook.state) {
                Some((_, n)) => *n += 1,
                None => states.push((hook.state.clone(), 1)),
            }
        }
        self.webhook_pending.set(pending);
        set_all(&self.webhooks, &states);
        Ok(())
    }
}

/// Sets a `state`-labelled family to exactly `values` (states gone are
/// dropped).
fn set_all(family: &Family<Labels, Gauge>, values: &[(String, i64)]) {
    family.clear();
    for (state, n) in values {
        family.get_or_create(&label("state", state)).set(*n);
    }
}

/// What one process serves on `/metrics`.
pub struct Metrics {
    registry: Registry,
    control: Option<(Arc<Plane>, Duration, ControlGauges)>,
    /// One scrape at a time: a refresh clears and refills the gauges.
    scrape: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A process's metrics: what `register` adds (the engine's, the lease
    /// service's) and, with `control` (its plane and `[control] lease_ttl`),
    /// the control plane's gauges.
    pub fn new(
        control: Option<(Arc<Plane>, Duration)>,
        register: impl FnOnce(&mut Registry),
    ) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("volley");
        register(&mut registry);
        let control = control.map(|(plane, ttl)| {
            let gauges = ControlGauges::default();
            gauges.register(&mut registry);
            (plane, ttl, gauges)
        });
        Arc::new(Metrics {
            registry,
            control,
            scrape: tokio::sync::Mutex::new(()),
        })
    }

    /// The text format, the control plane's gauges read now.
    pub async fn render(&self) -> Result<String, StoreError> {
        let _one = self.scrape.lock().await;
        if let Some((plane, ttl, gauges)) = &self.control {
            gauges.refresh(plane, *ttl).await?;
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        Ok(text)
    }
}

/// `GET /metrics` (no token: it shows counts only; serve it on a private
/// address).
pub async fn handler(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render().await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::warn!(%err, "cannot read the metrics");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the store could not be read: {err}\n"),
            )
                .into_response()
        }
    }
}

/// A router with `/metrics` alone (a gateway's `[gateway] metrics_listen`).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(handler))
        .with_state(metrics)
}
