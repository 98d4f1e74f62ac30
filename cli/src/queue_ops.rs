//! Holds and purges of a spool, by whoever holds it: the daemon (behind its
//! API's `/v1/queue/…` calls, [`SpoolQueue`]) or `volley queue hold |
//! release | purge` on a stopped spool ([`local`]).

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::Notify;
use volley_conf::Config;
use volley_control::queue_ops::{OpFuture, PurgeCount, QueueOps};
use volley_engine::delivery::purge::{purge, Purged};
use volley_engine::delivery::Sites;
use volley_engine::log::DeliveryLog;
use volley_queue::holds::{Holds, Rule};
use volley_queue::Spool;

/// A daemon's spool, its holds (shared with its engine), and what a purge
/// needs; a release or a purge wakes the round loop.
pub struct SpoolQueue {
    /// The spool (a handle of the daemon's).
    pub spool: Spool,
    /// The holds its engine obeys.
    pub holds: Arc<Holds>,
    /// Names the sites of domains.
    pub sites: Sites,
    /// The delivery log purged recipients are logged in.
    pub log: Arc<DeliveryLog>,
    /// The round loop's wake-up.
    pub wake: Arc<Notify>,
}

fn count(p: Purged) -> PurgeCount {
    PurgeCount {
        recipients: p.recipients,
        batches: p.batches,
        ordered: false,
    }
}

impl QueueOps for SpoolQueue {
    fn holds(&self) -> OpFuture<'_, Vec<Rule>> {
        let rules = self.holds.snapshot().rules().cloned().collect();
        Box::pin(std::future::ready(Ok(rules)))
    }

    fn hold<'a>(&'a self, rule: &'a Rule, hold: bool) -> OpFuture<'a, bool> {
        let changed = self
            .holds
            .change(&self.spool, rule, hold)
            .map_err(|e| e.to_string());
        if changed == Ok(true) && !hold {
            // Released recipients are due now.
            self.wake.notify_one();
        }
        Box::pin(std::future::ready(changed))
    }

    fn purge<'a>(&'a self, rule: &'a Rule) -> Option<OpFuture<'a, PurgeCount>> {
        Some(Box::pin(async move {
            let done = purge(&self.spool, &self.holds, rule, &self.sites, &self.log)
                .await
                .map_err(|e| e.to_string())?;
            // Batches it finished are completed by the next round.
            self.wake.notify_one();
            Ok(count(done))
        }))
    }
}

/// On a stopped spool (its lock taken by this process): holds, releases
/// (`Some(hold)`) or purges (`None`) what `rule` covers; answers what to
/// print.
pub fn local(config: &Config, spool: Spool, rule: &Rule, hold: Option<bool>) -> Result<String> {
    let holds = Holds::open(spool.root())?;
    match hold {
        Some(hold) => {
            let changed = holds.change(&spool, rule, hold)?;
            Ok(describe_change(
                rule,
                hold,
                changed,
                &holds.snapshot().rules().cloned().collect::<Vec<_>>(),
            ))
        }
        None => {
            let sites = Sites::new(config)?;
            let log = DeliveryLog::open(&config.delivery.log).with_context(|| {
                format!(
                    "cannot open the delivery log {}",
                    config.delivery.log.display()
                )
            })?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let done = runtime.block_on(purge(&spool, &holds, rule, &sites, &log))?;
            Ok(describe_purge(rule, count(done)))
        }
    }
}

/// What `volley queue hold | release` prints.
pub fn describe_change(rule: &Rule, hold: bool, changed: bool, now: &[Rule]) -> String {
    let what = match (hold, changed) {
        (true, true) => format!("held: {rule}"),
        (true, false) => format!("already held: {rule}"),
        (false, true) => format!("released: {rule}"),
        (false, false) => format!("was not held: {rule}"),
    };
    let list = if now.is_empty() {
        "none".to_owned()
    } else {
        now.iter()
            .map(Rule::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{what}\nholds now: {list}\n")
}

/// What `volley queue purge` prints.
pub fn describe_purge(rule: &Rule, done: PurgeCount) -> String {
    if done.ordered {
        return format!(
            "purge ordered ({rule}): the gateways finalise its unfinished recipients as they hold or lease their batches, each logged as purged in their delivery logs; the campaigns count them as cancelled\n"
        );
    }
    format!(
        "purged {} recipients in {} batches ({rule}); each is logged as purged in the delivery log\n",
        done.recipients, done.batches
    )
}
