//! `volley queue purge` (Postfix's `postsuper -d`): the unfinished recipients
//! a [`Rule`] covers are finalised unsent — expired, marked
//! [`mark::PURGED`] — and each is logged as `purged` in the delivery log.
//!
//! Safe beside a running engine: while it works, the rule is held (so no new
//! transaction takes those recipients, [`Holds`]); only pending and deferred
//! slots are changed, so a transaction already in flight ends as its reply
//! says; a site that saw the holds change re-reads each slot before sending
//! (a purged one is final and dropped).

use std::collections::HashMap;
use std::time::SystemTime;

use volley_queue::holds::{Holds, Rule};
use volley_queue::slot::mark;
use volley_queue::{MappedBatch, QueueError, Slot, Spool, State};

use super::Sites;
use crate::log::{timestamp, DeliveryLog, LogEvent};

/// What a purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Recipients finalised.
    pub recipients: u64,
    /// Batch files they were in.
    pub batches: u64,
}

/// Purges what `rule` covers from `spool`'s active batches, holding it
/// meanwhile in `holds`; `sites` names a domain's site (for a site rule);
/// each recipient is logged in `log`.
pub async fn purge(
    spool: &Spool,
    holds: &Holds,
    rule: &Rule,
    sites: &Sites,
    log: &DeliveryLog,
) -> Result<Purged, QueueError> {
    let held_before = holds.snapshot().rules().any(|r| r == rule);
    if !held_before {
        holds.change(spool, rule, true)?;
    }
    let result = async {
        let mut cache = SiteCache::default();
        let mut purged = Purged::default();
        for path in spool.active_files()? {
            let map = match MappedBatch::open(&path) {
                Ok(map) => map,
                // Corrupt files are the recovery scan's; a batch completed
                // meanwhile is gone.
                Err(QueueError::Corrupt { .. }) => continue,
                Err(QueueError::Io { io, .. }) if io.kind() == std::io::ErrorKind::NotFound => {
                    continue
                }
                Err(err) => return Err(err),
            };
            let changed = purge_batch(&map, rule, None, sites, &mut cache, log).await?;
            if changed > 0 {
                purged.recipients += changed;
                purged.batches += 1;
            }
        }
        if let Err(err) = log.flush() {
            tracing::warn!(%err, "cannot write the delivery log");
        }
        Ok(purged)
    }
    .await;
    if !held_before {
        holds.change(spool, rule, false)?;
    }
    result
}

/// Domains' sites as a purge found them (each resolved once).
pub type SiteCache = HashMap<String, bool>;

/// Purges what `rule` covers in one batch (of a campaign up to `upto`,
/// when given: a fleet's purge covers the campaigns that existed when it was
/// ordered), logging each recipient; answers how many were finalised (the
/// batch synced when any was). `cache` remembers which domains' sites the
/// rule covers.
pub async fn purge_batch(
    map: &MappedBatch,
    rule: &Rule,
    upto: Option<u64>,
    sites: &Sites,
    cache: &mut SiteCache,
    log: &DeliveryLog,
) -> Result<u64, QueueError> {
    let (campaign, batch) = (map.header().campaign_id, map.header().batch_id);
    if upto.is_some_and(|upto| campaign > upto) {
        return Ok(0);
    }
    if let Rule::Campaign(id) = rule {
        if campaign != *id {
            return Ok(0);
        }
    }
    let reply = format!("purged from the queue by an operator (volley queue purge {rule})");
    let view = map.view();
    let mut changed = 0u64;
    for index in 0..map.len() {
        let Ok(slot) = map.slot(index) else { continue };
        if !matches!(slot.state, State::Pending | State::Deferred) {
            continue;
        }
        let Some(recipient) = view.recipient(index) else {
            continue;
        };
        let address = recipient.address();
        let domain = address
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        let covered = match rule {
            Rule::Campaign(_) => true,
            Rule::Domain(d) => *d == domain,
            Rule::Site(name) => match cache.get(&domain) {
                Some(&held) => held,
                None => {
                    let key = sites.site_of(&domain).await;
                    let held = key.is_some_and(|k| volley_queue::holds::site_matches(name, &k));
                    cache.insert(domain.clone(), held);
                    held
                }
            },
        };
        if !covered {
            continue;
        }
        map.set_slot(
            index,
            Slot {
                state: State::Expired,
                attempts: slot.attempts,
                code: 0,
                next_attempt: mark::PURGED,
            },
        )?;
        changed += 1;
        let line = LogEvent {
            ts: timestamp(SystemTime::now()),
            campaign,
            batch,
            recipient: &address,
            status: "purged",
            code: 0,
            enhanced: "",
            reply: &reply,
            mx: "",
            ip: "",
            tls: false,
            attempt: u32::from(slot.attempts),
            latency_ms: 0,
            level: "local",
            class: None,
            next_attempt: None,
        };
        if let Err(err) = log.write(&line) {
            tracing::warn!(%err, "cannot write the delivery log");
        }
    }
    if changed > 0 {
        map.sync()?;
    }
    Ok(changed)
}
