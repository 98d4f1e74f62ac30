//! `[web]` in the binary: the link signing key (`[web] secret_file`, default
//! `SPOOL/web.key`), what writes each message's links, the public endpoints'
//! server (`volley_control::web`), and what the control plane hears of what
//! recipients did: engagements into the delivery log, verified complaints and
//! unsubscribe requests by mail into the campaign counts.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::oneshot;
use volley_conf::Config;
use volley_control::plane::engagement::{EngagementLog, LinkRecipient};
use volley_control::plane::subscriptions::ConfirmLinks;
use volley_control::plane::Plane;
use volley_control::store::engagements::{Engagement, Who};
use volley_engine::feedback::FeedbackEvents;
use volley_engine::log::InboundLogEvent;
use volley_inbound::verp::VerpTarget;
use volley_merge::WebLinks;
use volley_queue::link::LinkSigner;

/// What `[web]` sets up: the links messages carry and the signer that checks
/// them.
pub struct Web {
    /// Writes the links (the delivery side).
    pub links: Arc<WebLinks>,
    /// Checks them (the endpoints).
    pub signer: Arc<LinkSigner>,
}

/// The web links of `config`: `None` without a `[web]` section. Reads or
/// creates the key.
pub fn web(config: &Config, spool_root: &Path) -> Result<Option<Web>> {
    let Some(web) = &config.web else {
        return Ok(None);
    };
    let path = web.secret_path(spool_root);
    let key = volley_engine::verp_key::load_or_create_key(&path)
        .with_context(|| "the web links' key ([web] secret_file)")?;
    let links = WebLinks::new(&key, &web.base_url())
        .with_context(|| format!("the web links' key {}", path.display()))?;
    let signer =
        LinkSigner::new(&key).with_context(|| format!("the web links' key {}", path.display()))?;
    Ok(Some(Web {
        links: Arc::new(links),
        signer: Arc::new(signer),
    }))
}

/// Engagements into the delivery log, beside bounces and complaints.
pub struct DeliveryLogEngagements(pub Arc<volley_engine::log::DeliveryLog>);

impl EngagementLog for DeliveryLogEngagements {
    fn engaged(&self, r: &LinkRecipient, status: &'static str, link: Option<i64>) {
        let target = VerpTarget {
            campaign: r.who.campaign as u64,
            batch: r.who.batch as u64,
            index: r.who.idx as u32,
        };
        let line =
            InboundLogEvent::web(std::time::SystemTime::now(), target, &r.email, status, link);
        if let Err(err) = self.0.write_inbound(&line).and_then(|()| self.0.flush()) {
            tracing::warn!(%err, "cannot write the delivery log");
        }
    }
}

/// Verified complaints and unsubscribe requests by mail, counted by the
/// control plane per campaign (`volley run`).
pub struct PlaneFeedback {
    /// The plane.
    pub plane: Arc<Plane>,
    /// Where the store write runs (the inbound path does not wait for it).
    pub runtime: tokio::runtime::Handle,
}

impl FeedbackEvents for PlaneFeedback {
    fn verified(&self, status: &'static str, target: VerpTarget, recipient: &str) {
        let what = match status {
            "complained" => Engagement::Complained,
            "replied" => Engagement::Replied,
            _ => Engagement::Unsubscribed,
        };
        let who = Who {
            campaign: target.campaign as i64,
            batch: target.batch as i64,
            idx: i64::from(target.index),
        };
        let plane = Arc::clone(&self.plane);
        let email = recipient.to_owned();
        self.runtime.spawn(async move {
            if let Err(err) = plane.reported(who, &email, what).await {
                tracing::warn!(%err, "cannot count a complaint or unsubscribe in the store");
            }
        });
    }
}

/// Serves the public endpoints on `[web] listen` in a task until the returned
/// sender is used.
pub async fn start(
    config: &Config,
    plane: Arc<Plane>,
    signer: Arc<LinkSigner>,
) -> Result<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let addr = config
        .web
        .as_ref()
        .map(|w| w.listen)
        .context("no [web] section")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ([web] listen)"))?;
    tracing::info!(%addr, "serving the web links (unsubscribe, clicks, opens, subscribe forms)");
    let (stop, stopped) = oneshot::channel::<()>();
    let links = ConfirmLinks {
        signer: Arc::clone(&signer),
        base: config
            .web
            .as_ref()
            .map(|w| w.base_url())
            .unwrap_or_default(),
    };
    let worker = format!(
        "{}:{}",
        crate::control::node_name(config),
        std::process::id()
    );
    let router = volley_control::web::router(Arc::clone(&plane), signer);
    let task = tokio::spawn(async move {
        // Subscribe requests: confirmations mailed and confirmed ones applied
        // in bulk, while the endpoints are served.
        let work = tokio::spawn(volley_control::web::subscriptions(plane, links, worker));
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(err) = volley_control::web::serve(listener, router, shutdown).await {
            tracing::error!(%err, "the web server failed");
        }
        work.abort();
    });
    Ok((stop, task))
}
