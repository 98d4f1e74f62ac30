//! Starting webhook delivery in a process that runs a control plane (`volley
//! run`, `volley control`): the configuration's `[[webhook]]` entries made the
//! store's `config` webhooks (their secrets read from their files), then the
//! dispatcher that delivers the outbox to every active webhook.

use std::sync::Arc;

use anyhow::{Context, Result};
use volley_conf::Config;
use volley_control::plane::Plane;
use volley_control::store::webhooks::{NewWebhook, FROM_CONFIG};
use volley_control::webhook::Dispatcher;

/// The configuration's webhooks, their secrets read and checked.
pub fn configured(config: &Config) -> Result<Vec<NewWebhook>> {
    let mut out: Vec<NewWebhook> = Vec::new();
    for (i, w) in config.webhook.iter().enumerate() {
        let what = format!("webhook[{i}] ({})", w.url);
        if out.iter().any(|o| o.url == w.url) {
            anyhow::bail!("{what}: another [[webhook]] entry has the same url: merge their events");
        }
        let secret = std::fs::read_to_string(&w.secret_file).with_context(|| {
            format!(
                "{what}: cannot read secret_file {}",
                w.secret_file.display()
            )
        })?;
        volley_conf::parse_webhook_secret(&secret)
            .map_err(|e| anyhow::anyhow!("{what}: secret_file {}: {e}", w.secret_file.display()))?;
        out.push(NewWebhook {
            owner: None,
            source: FROM_CONFIG,
            url: w.url.clone(),
            events: w.events.clone(),
            secret: secret.trim().to_owned(),
            batch: i64::from(w.batch.unwrap_or(0)),
            retry_for: w.retry_for.as_secs() as i64,
            timeout_ms: w.timeout.as_millis() as i64,
        });
    }
    Ok(out)
}

/// Makes `wanted` (the configuration's webhooks, [`configured`]) the
/// store's and starts delivering the outbox (in a task, until aborted).
pub async fn start(
    config: &Config,
    wanted: &[NewWebhook],
    plane: &Arc<Plane>,
) -> Result<tokio::task::JoinHandle<()>> {
    plane
        .store()
        .sync_config_webhooks(wanted)
        .await
        .context("cannot record the [[webhook]] entries in the store")?;
    let worker = format!(
        "{}:{}",
        crate::control::node_name(config),
        std::process::id()
    );
    let dispatcher = Dispatcher::new(plane.store().clone(), worker, Arc::clone(plane.outbox()))
        .map_err(anyhow::Error::msg)?;
    Ok(tokio::spawn(dispatcher.run()))
}
