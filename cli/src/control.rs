//! Opening the control plane of this host's configuration: its store (the
//! `[control] database`, else the SQLite file in the spool) and the plane over
//! it, with the templates and suppression list the engine uses too.

use std::sync::Arc;

use anyhow::{Context, Result};
use volley_conf::Config;
use volley_control::plane::{Plane, Settings};
use volley_control::store::{sqlite_url, Store};
use volley_merge::TemplateSource;
use volley_queue::Spool;

use crate::suppressions::StoreSuppressions;
use crate::templates::MergeTemplates;

/// The URL of the store `config` names.
pub fn database_url(config: &Config) -> String {
    match &config.control.database {
        Some(url) => url.clone(),
        None => sqlite_url(&config.spool.dir),
    }
}

/// Opens (and migrates) the store `config` names.
pub async fn open_store(config: &Config) -> Result<Store> {
    let url = database_url(config);
    if config.control.database.is_none() {
        std::fs::create_dir_all(&config.spool.dir)
            .with_context(|| format!("cannot make the spool {}", config.spool.dir.display()))?;
    }
    Ok(Store::open(&url).await?)
}

/// The plane over `store`, partitioning into `spool`, storing templates into
/// its content store and `source`, screening with `suppressions`; with
/// `fleet`, its batches are leased to gateways (`volley control`).
pub fn plane(
    config: &Config,
    store: Store,
    spool: &Spool,
    source: &Arc<TemplateSource>,
    suppressions: &StoreSuppressions,
    fleet: bool,
) -> Result<Arc<Plane>> {
    let templates = Arc::new(MergeTemplates::new(spool.content_dir(), Arc::clone(source)));
    Ok(Plane::new(
        store,
        spool.try_clone()?,
        templates,
        suppressions.shared(),
        Settings {
            batch_size: config.queue.batch_size,
            max_json_recipients: config.control.max_recipients as usize,
            fleet,
        },
    ))
}

/// This node's name among gateways and in delivery events (`[gateway] name`,
/// else the host's).
pub fn node_name(config: &Config) -> String {
    config
        .gateway
        .name
        .clone()
        .unwrap_or_else(volley_engine::host::host_name)
}
