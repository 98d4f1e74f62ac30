//! The spool's suppression list (`volley_control::suppress`) as the delivery
//! engine asks it (`volley_mta::engine::Suppressions`).

use std::path::Path;
use std::sync::{PoisonError, RwLock};

use anyhow::{Context, Result};
use volley_control::suppress::SuppressionStore;
use volley_mta::engine::Suppressions;

/// The store behind a lock: looked up by the engine per due recipient, refreshed
/// at the start of each round.
#[derive(Debug)]
pub struct StoreSuppressions(RwLock<SuppressionStore>);

impl StoreSuppressions {
    /// Opens the list of the spool at `spool_root`.
    pub fn open(spool_root: &Path) -> Result<StoreSuppressions> {
        let store = SuppressionStore::open(spool_root).with_context(|| {
            format!(
                "cannot open the suppression list in {}",
                SuppressionStore::dir(spool_root).display()
            )
        })?;
        Ok(StoreSuppressions(RwLock::new(store)))
    }

    /// Runs `f` with the store (for partitioning, before delivery starts).
    pub fn with<R>(&self, f: impl FnOnce(&SuppressionStore) -> R) -> R {
        f(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Suppressions for StoreSuppressions {
    fn is_suppressed(&self, address: &str, sending_domain: &str) -> bool {
        self.with(|s| s.is_suppressed(address, sending_domain).is_some())
    }

    fn refresh(&self) {
        let mut store = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = store.refresh() {
            tracing::warn!(%err, "cannot reread the suppression list; using it as it was");
        }
    }

    fn is_empty(&self) -> bool {
        self.with(SuppressionStore::is_empty)
    }
}
