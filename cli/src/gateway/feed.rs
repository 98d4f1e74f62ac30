//! The engine's feed on a gateway: the batches leased into the gateway's own
//! spool, each under its lease's hold flag ([`super::held`]); relayed mail
//! and reports the gateway's listener took in are delivered as on one node.
//! A finished leased batch's final rows are written to
//! `SPOOL/fleet/done/` (durably) before its file leaves `active/`; the
//! reporter hands them to a control plane, whenever one answers.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use volley_control::fleet::wire::{Action, AttemptReport, DoneReport};
use volley_control::plane::progress::{domain_counts, final_row, LastReply};
use volley_control::store::now;
use volley_engine::delivery::feed::{open_spool_round, Admit, Feed, Keep, LiveBatch, Opened};
use volley_queue::ids::is_inbound_id;
use volley_queue::{QueueError, Slot, Spool, State};

use super::held::Leases;
use crate::control_feed::finalize;

/// A finished batch's final report as it waits in `SPOOL/fleet/done/`, with
/// what the gateway's figures need of it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingDone {
    /// The report.
    pub report: DoneReport,
    /// The batch's site.
    pub site: String,
    /// Delivered recipients and attempts already counted in a report.
    pub reported: (u64, u64),
}

/// The feed.
pub struct LeaseFeed {
    spool: Spool,
    leases: Arc<Leases>,
    free: Arc<AtomicBool>,
    /// Told at each group commit: the reporter reports soon.
    progress: Arc<tokio::sync::Notify>,
}

/// Where final reports wait for a control plane: `SPOOL/fleet/done/`.
pub fn done_dir(spool: &Spool) -> PathBuf {
    spool.root().join("fleet").join("done")
}

fn key(batch: &LiveBatch) -> (i64, i64) {
    let h = batch.map.header();
    (h.campaign_id as i64, h.batch_id as i64)
}

impl LeaseFeed {
    /// The feed of `spool`'s leased batches, telling `progress` when the
    /// engine recorded outcomes.
    pub fn new(spool: Spool, leases: Arc<Leases>, progress: Arc<tokio::sync::Notify>) -> LeaseFeed {
        LeaseFeed {
            spool,
            leases,
            free: Arc::new(AtomicBool::new(false)),
            progress,
        }
    }

    /// Keeps the replies the engine collected on leased batches: each
    /// recipient's last failure for its final row, and the attempts the
    /// control plane asked for, to report.
    fn keep_replies<'a>(&self, batches: impl Iterator<Item = &'a LiveBatch>) {
        for batch in batches {
            let replies = batch.take_replies();
            if replies.is_empty() {
                continue;
            }
            let view = batch.map.view();
            let attempts: Vec<AttemptReport> = replies
                .iter()
                .filter(|r| self.leases.reports(r.state))
                .map(|r| AttemptReport {
                    index: r.index,
                    recipient: view
                        .recipient(r.index as usize)
                        .map(|x| x.address())
                        .unwrap_or_default(),
                    state: r.state.name().to_owned(),
                    code: r.code,
                    attempt: r.attempt,
                    next_attempt: r.next_attempt,
                    at: r.at as i64,
                    enhanced: r.enhanced.clone(),
                    reply: r.text.clone(),
                })
                .collect();
            self.leases.with(|held| {
                let Some(h) = held.get_mut(&key(batch)) else {
                    return;
                };
                h.attempts.extend(attempts);
                for r in replies {
                    if r.state != State::Delivered {
                        h.replies.insert(
                            r.index,
                            LastReply {
                                at: r.at as i64,
                                enhanced: r.enhanced,
                                text: r.text,
                            },
                        );
                    }
                }
            });
        }
    }
}

impl Feed for LeaseFeed {
    fn open_round(&self, now: u64, window: u64) -> Result<Opened, QueueError> {
        for path in self.leases.take_dropped() {
            let _ = std::fs::remove_file(&path);
        }
        self.leases.refresh_holds();
        let leases = &self.leases;
        let mut failure = None;
        let opened = open_spool_round(&self.spool, now, window, |status| {
            let k = (status.campaign_id as i64, status.batch_id as i64);
            let hold = leases.with(|held| held.get(&k).map(|h| Arc::clone(&h.hold)));
            match hold {
                Some(hold) => {
                    let order = leases.order(k.0);
                    if order.action == Action::Finalize && status.counts.unfinished() > 0 {
                        if let Err(e) = finalize(&status.path, order.mark) {
                            failure = Some(e);
                        }
                    }
                    Admit::Open {
                        hold,
                        keep: leases.keep(),
                    }
                }
                // Relayed mail and reports taken in by this gateway.
                None if is_inbound_id(status.campaign_id) => Admit::Open {
                    hold: Arc::clone(&self.free),
                    keep: Keep::Nothing,
                },
                // A campaign batch this gateway holds no lease on (left by
                // a crash, or dropped): never sent from.
                None => Admit::Wait(None),
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(opened)
    }

    fn commit(&self, batches: &[Arc<LiveBatch>]) -> Result<(), QueueError> {
        let mut result = Ok(());
        for batch in batches {
            if let (Err(err), Ok(())) = (batch.map.sync(), &result) {
                result = Err(err);
            }
        }
        self.keep_replies(batches.iter().map(|b| b.as_ref()));
        self.progress.notify_one();
        result
    }

    fn end_round(&self, batches: &[Arc<LiveBatch>]) {
        self.keep_replies(batches.iter().map(|b| b.as_ref()));
    }

    fn complete(&self, finished: &[&LiveBatch]) -> Result<u64, QueueError> {
        let dir = done_dir(&self.spool);
        std::fs::create_dir_all(&dir).map_err(|e| QueueError::io("create", &dir, e))?;
        let at = now();
        let mut leased = Vec::new();
        for batch in finished {
            let k = key(batch);
            if is_inbound_id(k.0 as u64) {
                continue;
            }
            // Its final outcomes' events are written from the final report;
            // attempts not reported yet go with it.
            self.keep_replies(std::iter::once(*batch));
            let Some(held) = self.leases.finish(k) else {
                continue;
            };
            let view = batch.map.view();
            let recipients = (0..view.len())
                .map(|i| {
                    let slot = batch.map.slot(i).unwrap_or(Slot::PENDING);
                    final_row(&view, i, slot, held.replies.get(&(i as u32)), at)
                })
                .collect();
            let report = DoneReport {
                campaign: k.0,
                batch: k.1,
                epoch: held.epoch,
                domains: domain_counts(&view, |i| batch.map.slot(i).ok()),
                recipients,
            };
            let pending = PendingDone {
                report,
                site: held.site.clone(),
                reported: held.reported,
            };
            let bytes = serde_json::to_vec(&pending).map_err(|e| {
                QueueError::io("encode a final report for", &dir, std::io::Error::other(e))
            })?;
            let path = dir.join(format!("{:016x}-{:016x}.json", k.0, k.1));
            self.spool.write_atomic(&path, &bytes)?;
            leased.push(batch.map.header().batch_id);
        }
        let moved = self.spool.complete_all(finished.iter().map(|b| &b.map))?;
        if !leased.is_empty() {
            tracing::debug!(batches = leased.len(), "leased batches finished");
        }
        Ok(moved.len() as u64)
    }
}
