//! The spool's suppression list (`volley_control::suppress`) as the delivery
//! engine asks it (`volley_engine::suppress::Suppressions`) and as the inbound
//! processing writes to it (`volley_engine::feedback::SuppressionWriter`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use volley_conf::BounceConfig;
use volley_control::suppress::pending::{Pending, PendingList};
use volley_control::suppress::{
    Bounce, BounceKind, BounceLimits, Reason, SharedList, SuppressionStore,
};
use volley_engine::feedback::{SuppressAction, SuppressKind, SuppressionWriter};
use volley_engine::suppress::Suppressions;

/// The store behind a lock: looked up by the engine per due recipient, refreshed
/// at the start of each round, written by the inbound listener (the engine
/// sees those entries at once: the same list in memory).
#[derive(Debug)]
pub struct StoreSuppressions {
    list: Arc<SharedList>,
    pending: PendingList,
    limits: BounceLimits,
}

/// The bounce limits of a `[bounce]` section.
pub fn bounce_limits(config: &BounceConfig) -> BounceLimits {
    BounceLimits {
        hard_limit: config.hard_limit,
        soft_limit: config.soft_limit,
        window: config.window,
    }
}

impl StoreSuppressions {
    /// Opens the list of the spool at `spool_root`; bounces count against the
    /// defaults of `[bounce]` (see [`StoreSuppressions::with_limits`]).
    pub fn open(spool_root: &Path) -> Result<StoreSuppressions> {
        let store = SuppressionStore::open(spool_root).with_context(|| {
            format!(
                "cannot open the suppression list in {}",
                SuppressionStore::dir(spool_root).display()
            )
        })?;
        Ok(StoreSuppressions {
            list: Arc::new(SharedList::new(store)),
            pending: PendingList::new(&SuppressionStore::dir(spool_root)),
            limits: bounce_limits(&BounceConfig::default()),
        })
    }

    /// Counts bounces against `limits` (from `[bounce]`).
    pub fn with_limits(mut self, limits: BounceLimits) -> StoreSuppressions {
        self.limits = limits;
        self
    }

    /// Runs `f` with the store (for partitioning, before delivery starts).
    pub fn with<R>(&self, f: impl FnOnce(&SuppressionStore) -> R) -> R {
        self.list.read(f)
    }

    /// The list in memory, for the control plane (partitioning, the API).
    pub fn shared(&self) -> Arc<SharedList> {
        Arc::clone(&self.list)
    }
}

impl Suppressions for StoreSuppressions {
    fn is_suppressed(&self, address: &str, sending_domain: &str) -> bool {
        self.with(|s| s.is_suppressed(address, sending_domain).is_some())
    }

    fn refresh(&self) {
        if let Err(err) = self.list.write(SuppressionStore::refresh) {
            tracing::warn!(%err, "cannot reread the suppression list; using it as it was");
        }
    }

    fn is_empty(&self) -> bool {
        self.with(SuppressionStore::is_empty)
    }

    fn version(&self) -> u64 {
        self.list.version()
    }
}

impl SuppressionWriter for StoreSuppressions {
    fn apply(&self, action: &SuppressAction<'_>) -> std::result::Result<bool, String> {
        self.list.write(|store| self.apply_to(store, action))
    }

    fn pend(&self, action: &SuppressAction<'_>, source: &str) -> std::result::Result<(), String> {
        let kind = match action.kind {
            SuppressKind::HardBounce => "hard_bounce",
            SuppressKind::SoftBounce => "soft_bounce",
            SuppressKind::Complaint => "complaint",
            SuppressKind::Unsubscribe => "unsubscribe",
        };
        self.pending
            .add(Pending {
                id: 0,
                address: action.address.to_owned(),
                domain: action.sending_domain.to_owned(),
                kind: kind.to_owned(),
                detail: action.detail.to_owned(),
                at: action.at,
                source: source.to_owned(),
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl StoreSuppressions {
    fn apply_to(
        &self,
        store: &mut SuppressionStore,
        action: &SuppressAction<'_>,
    ) -> std::result::Result<bool, String> {
        let detail = Some(action.detail).filter(|d| !d.is_empty());
        let bounce = |kind| Bounce {
            address: action.address,
            sending_domain: action.sending_domain,
            kind,
            at: action.at,
            detail,
        };
        let result = match action.kind {
            SuppressKind::HardBounce => store
                .record_bounce(&bounce(BounceKind::Hard), &self.limits)
                .map(|added| added.is_some()),
            SuppressKind::SoftBounce => store
                .record_bounce(&bounce(BounceKind::Soft), &self.limits)
                .map(|added| added.is_some()),
            SuppressKind::Complaint => store.add(
                action.address,
                action.sending_domain,
                &Reason::Complaint,
                detail,
                action.at,
            ),
            SuppressKind::Unsubscribe => store.add(
                action.address,
                action.sending_domain,
                &Reason::Unsubscribe,
                detail,
                action.at,
            ),
        };
        result.map_err(|err| err.to_string())
    }
}

/// How often a control-plane process syncs its list with the fleet's log.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps `plane`'s suppression list in step with the fleet's (the store's
/// log), as process `origin`, every second, until aborted; its place in the
/// log is kept in the spool at `spool_root`.
pub async fn sync_loop(
    plane: Arc<volley_control::plane::Plane>,
    spool_root: std::path::PathBuf,
    origin: String,
) {
    let path = volley_control::suppress::cursor_path(&spool_root);
    let mut cursor = volley_control::suppress::read_cursor(&path);
    let mut every = tokio::time::interval(SYNC_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let before = cursor;
        match plane.sync_suppressions(&origin, &mut cursor).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(changes = n, "suppressions from the fleet applied"),
            Err(err) => tracing::warn!(%err, "cannot sync the suppression list with the fleet"),
        }
        if cursor != before {
            if let Err(err) = volley_control::suppress::write_cursor(&path, cursor) {
                tracing::warn!(%err, file = %path.display(), "cannot keep the suppression log's place");
            }
        }
    }
}
