//! The per-domain result cache of [`MxResolver`](super::MxResolver): one entry per
//! lower-cased domain holding the whole outcome (`Ok(Destination)` or `Err(MxError)`)
//! and its expiry, with concurrent lookups of the same domain coalesced onto one
//! in-flight resolution.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::OnceCell;

use super::{Destination, MxError};

/// A finished resolution and when it stops being usable.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The result, hosts in preference order (not yet shuffled per call).
    pub(crate) result: Result<Destination, MxError>,
    /// The instant after which the outcome must be resolved again.
    pub(crate) expires: Instant,
}

/// One domain's slot: empty while its first resolution is in flight.
#[derive(Debug, Default)]
struct Slot {
    cell: OnceCell<Outcome>,
}

impl Slot {
    /// Whether the slot can serve a caller arriving at `now`: still resolving (join
    /// it) or resolved and not expired.
    fn usable(&self, now: Instant) -> bool {
        match self.cell.get() {
            None => true,
            Some(outcome) => now < outcome.expires,
        }
    }
}

/// A bounded map from domain to [`Slot`].
#[derive(Debug)]
pub(crate) struct ResultCache {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    capacity: usize,
    /// Lookups answered from the cache (or joined to one in flight).
    pub(crate) hits: prometheus_client::metrics::counter::Counter,
    /// Lookups that resolved.
    pub(crate) misses: prometheus_client::metrics::counter::Counter,
}

impl ResultCache {
    /// A cache of at most about `capacity` domains; 0 turns caching (and coalescing)
    /// off.
    pub(crate) fn new(capacity: usize) -> ResultCache {
        ResultCache {
            slots: Mutex::new(HashMap::new()),
            capacity,
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        // A panic while holding the lock cannot leave the map inconsistent (all
        // updates are single insert/remove calls), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the cached outcome for `key` if it is fresh, else runs `resolve` (or
    /// joins a resolution of the same key already in flight) and caches its outcome.
    pub(crate) async fn get_or_resolve<F, Fut>(&self, key: &str, resolve: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        if self.capacity == 0 {
            self.misses.inc();
            return resolve().await;
        }
        let slot = self.slot(key, Instant::now());
        let mut resolved = false;
        let outcome = slot
            .cell
            .get_or_init(|| {
                resolved = true;
                resolve()
            })
            .await
            .clone();
        if resolved {
            self.misses.inc();
        } else {
            self.hits.inc();
        }
        outcome
    }

    /// The usable slot for `key`, creating a fresh one if there is none or the old one
    /// expired.
    fn slot(&self, key: &str, now: Instant) -> Arc<Slot> {
        let mut slots = self.lock();
        if let Some(slot) = slots.get(key) {
            if slot.usable(now) {
                return Arc::clone(slot);
            }
        }
        if !slots.contains_key(key) && slots.len() >= self.capacity {
            Self::evict(&mut slots, self.capacity, now);
        }
        let slot = Arc::new(Slot::default());
        slots.insert(key.to_owned(), Arc::clone(&slot));
        slot
    }

    /// Makes room: drops expired outcomes, then (if still full) arbitrary finished
    /// ones until the map is at 90% of capacity, so the O(n) sweep runs rarely.
    /// In-flight slots are never dropped (their waiters would lose coalescing).
    fn evict(slots: &mut HashMap<String, Arc<Slot>>, capacity: usize, now: Instant) {
        slots.retain(|_, slot| slot.cell.get().is_none_or(|o| now < o.expires));
        if slots.len() >= capacity {
            let keep = (capacity - capacity / 10).min(capacity.saturating_sub(1));
            let mut excess = slots.len().saturating_sub(keep);
            slots.retain(|_, slot| {
                if excess > 0 && slot.cell.initialized() {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    /// Forgets every cached outcome (in-flight resolutions finish for their waiters).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// The number of domains held (fresh, expired or in flight).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn outcome(domain: &str, ttl: Duration) -> Outcome {
        Outcome {
            result: Err(MxError::NoSuchDomain {
                domain: domain.to_owned(),
            }),
            expires: Instant::now() + ttl,
        }
    }

    #[tokio::test]
    async fn fresh_outcomes_are_reused_and_expired_ones_are_not() {
        let cache = ResultCache::new(10);
        let calls = AtomicUsize::new(0);
        let resolve = |ttl| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { outcome("a.example", ttl) }
        };
        cache
            .get_or_resolve("a.example", || resolve(Duration::from_secs(60)))
            .await;
        cache
            .get_or_resolve("a.example", || resolve(Duration::from_secs(60)))
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        cache
            .get_or_resolve("b.example", || resolve(Duration::ZERO))
            .await;
        cache
            .get_or_resolve("b.example", || resolve(Duration::ZERO))
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn concurrent_lookups_are_coalesced() {
        let cache = Arc::new(ResultCache::new(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let cache = Arc::clone(&cache);
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_resolve("a.example", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        outcome("a.example", Duration::ZERO)
                    })
                    .await
            }));
        }
        for task in tasks {
            let got = task.await.unwrap();
            assert!(matches!(got.result, Err(MxError::NoSuchDomain { .. })));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn capacity_is_bounded() {
        let cache = ResultCache::new(10);
        for i in 0..100 {
            let key = format!("d{i}.example");
            cache
                .get_or_resolve(&key, || async { outcome("x", Duration::from_secs(60)) })
                .await;
            assert!(cache.len() <= 10, "{} entries", cache.len());
        }
        cache.clear();
        assert_eq!(cache.len(), 0);
    }

    #[tokio::test]
    async fn zero_capacity_disables_caching() {
        let cache = ResultCache::new(0);
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            cache
                .get_or_resolve("a.example", || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { outcome("a.example", Duration::from_secs(60)) }
                })
                .await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
