//! Where the engine's batches come from and where their progress goes: the one
//! seam between the delivery engine and what feeds it. [`SpoolFeed`] feeds it
//! from the local spool (`volley send`, `volley run`); a gateway of a fleet feeds
//! it from a control plane's leases through the same trait.
//!
//! The engine records every reply in the recipient's state slot through the
//! batch's mapping (the hot path never calls the feed); the feed sees progress
//! at each group commit ([`Feed::commit`]) and at the end of a round, when the
//! engine hands it the batches whose recipients are all final
//! ([`Feed::complete`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use volley_queue::ids::is_inbound_id;
use volley_queue::{BatchStatus, MappedBatch, QueueError, Spool, State};

use crate::delivery::work::is_due;

/// A batch being delivered from: its mapping, whose slots record every outcome.
#[derive(Debug)]
pub struct LiveBatch {
    /// The mapping.
    pub map: MappedBatch,
    /// Set while the batch must not be sent from (its campaign suspended or
    /// cancelled): no new transaction takes its recipients; those in flight
    /// finish and are recorded. Shared by every batch of a campaign.
    pub hold: Arc<AtomicBool>,
    /// The replies of attempts, in the order they came, kept for a feed that
    /// wants them (the control plane's per-recipient table, its webhooks);
    /// `None`: not kept.
    pub replies: Option<Mutex<Vec<Reply>>>,
    /// Which replies are kept in `replies`.
    pub keep: Keep,
    /// The domain of its envelope sender, once asked (what suppressions
    /// are per).
    pub sender_domain: std::sync::OnceLock<String>,
}

/// Which replies a [`LiveBatch`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// None.
    Nothing,
    /// Those of attempts that did not deliver (deferred, bounced, expired).
    Failures,
    /// Every attempt's, deliveries too (webhooks want `message.delivered`).
    Everything,
}

/// The answer one attempt for a recipient of a [`LiveBatch`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Recipient index in the batch.
    pub index: u32,
    /// Unix second of the answer.
    pub at: u64,
    /// The state the attempt left the recipient in (delivered, deferred,
    /// bounced, expired).
    pub state: State,
    /// The SMTP reply code (0: none).
    pub code: u16,
    /// The attempt's number (1: the first).
    pub attempt: u32,
    /// For a deferral: the unix second of the next attempt.
    pub next_attempt: u64,
    /// Enhanced status code ("5.1.1"), or "".
    pub enhanced: String,
    /// Reply text or local reason.
    pub text: String,
}

impl LiveBatch {
    /// A batch sent from freely, its replies not kept.
    pub fn new(map: MappedBatch) -> LiveBatch {
        LiveBatch::keeping(map, Arc::new(AtomicBool::new(false)), Keep::Nothing)
    }

    /// A batch sent from under `hold`, keeping the replies `keep` says.
    pub fn keeping(map: MappedBatch, hold: Arc<AtomicBool>, keep: Keep) -> LiveBatch {
        LiveBatch {
            map,
            hold,
            replies: (keep != Keep::Nothing).then(Mutex::default),
            keep,
            sender_domain: std::sync::OnceLock::new(),
        }
    }

    /// Whether a reply that left the recipient `state` is kept.
    pub fn keeps(&self, state: State) -> bool {
        match self.keep {
            Keep::Nothing => false,
            Keep::Failures => state != State::Delivered,
            Keep::Everything => true,
        }
    }

    /// Whether the batch is held ([`LiveBatch::hold`]).
    pub fn held(&self) -> bool {
        self.hold.load(Ordering::Relaxed)
    }

    /// Keeps the reply of an attempt that left its recipient `state`, when
    /// the batch keeps such replies.
    pub fn keep_reply(&self, state: State, reply: impl FnOnce() -> Reply) {
        if let (Some(replies), true) = (&self.replies, self.keeps(state)) {
            replies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(reply());
        }
    }

    /// The replies kept since the last call, in the order they came.
    pub fn take_replies(&self) -> Vec<Reply> {
        let Some(replies) = &self.replies else {
            return Vec::new();
        };
        std::mem::take(&mut *replies.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What a feed does with one batch of a round ([`open_spool_round`]).
#[derive(Debug)]
pub enum Admit {
    /// Deliver from it, under `hold`, keeping the replies `keep` says.
    Open {
        /// The batch's hold flag (its campaign's).
        hold: Arc<AtomicBool>,
        /// Which of its recipients' replies to keep.
        keep: Keep,
    },
    /// Not now: its campaign starts at this unix second (`None`: when told).
    Wait(Option<u64>),
}

/// The batches of one round, as a feed hands them over.
#[derive(Debug, Default)]
pub struct Opened {
    /// Batches with recipients due now, in the order they are served.
    pub batches: Vec<Arc<LiveBatch>>,
    /// Unfinished recipients of the batches left out because none of their
    /// recipients is due yet.
    pub not_due: u64,
    /// The earliest unix second at which a recipient of a batch left out becomes
    /// due; `None` when every batch left out is finished.
    pub next_due: Option<u64>,
    /// Corrupt batch files set aside (quarantined) while opening.
    pub quarantined: u64,
    /// Unfinished recipients of batches with due recipients left for the next
    /// round because the round's window (`[queue] window`) was full.
    pub waiting: u64,
    /// Batches found with every recipient final, for the engine to complete
    /// (after reporting on any relayed recipient not reported on yet).
    pub finished: Vec<Arc<LiveBatch>>,
}

/// What feeds the delivery engine. Errors are the queue's: a feed works on
/// mapped batch files, whether they are the spool's or local copies of leased
/// batches.
pub trait Feed: Send + Sync + 'static {
    /// The batches of the next round at `now` (unix seconds): those with
    /// recipients due, until they hold `window` due recipients (the unfinished
    /// recipients of the rest are counted in [`Opened::waiting`]). Batches with
    /// nothing due take no room: they are counted in [`Opened::not_due`], with
    /// the time the first of them becomes due. Batches found finished are
    /// handed over in [`Opened::finished`]; corrupt ones are set aside and
    /// counted.
    fn open_round(&self, now: u64, window: u64) -> Result<Opened, QueueError>;

    /// Group commit, called every `[queue] sync_interval` while a round runs and
    /// once at its end: the slots of `batches` to stable storage (and, for a
    /// leased batch, its progress to the control plane).
    fn commit(&self, batches: &[Arc<LiveBatch>]) -> Result<(), QueueError>;

    /// Called at the end of a round with the batches whose recipients are all
    /// final (after [`Feed::commit`]); answers how many were completed.
    fn complete(&self, finished: &[&LiveBatch]) -> Result<u64, QueueError>;

    /// Called last in a round with every batch it delivered from (the
    /// completed ones included): a feed that reports progress reports the
    /// round's last state here. Does nothing by default.
    fn end_round(&self, _batches: &[Arc<LiveBatch>]) {}
}

/// The local spool as a feed: `active/` in spool order; finished batches move
/// to `done/`, corrupt ones to `quarantine/`.
#[derive(Debug)]
pub struct SpoolFeed {
    spool: Spool,
}

impl SpoolFeed {
    /// Feeds the engine from `spool`.
    pub fn new(spool: Spool) -> SpoolFeed {
        SpoolFeed { spool }
    }

    /// The spool fed from.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }
}

/// A round from `spool`: runs the recovery scan (quarantining corrupt files),
/// then maps the batches with due recipients in [`round_order`], each as `admit`
/// says (batches it makes wait count as not due).
pub fn open_spool_round(
    spool: &Spool,
    now: u64,
    window: u64,
    mut admit: impl FnMut(&BatchStatus) -> Admit,
) -> Result<Opened, QueueError> {
    let recovery = spool.recover()?;
    let mut opened = Opened {
        quarantined: recovery.quarantined.len() as u64,
        ..Opened::default()
    };
    let mut due = 0u64;
    for status in round_order(recovery.batches) {
        let unfinished = status.counts.unfinished();
        let (hold, keep) = match admit(&status) {
            Admit::Open { hold, keep } => (hold, keep),
            Admit::Wait(until) => {
                if unfinished > 0 {
                    opened.not_due += unfinished;
                    if let Some(at) = until {
                        opened.next_due = Some(opened.next_due.map_or(at, |t| t.min(at)));
                    }
                }
                continue;
            }
        };
        match status.next_due {
            Some(at) if at > now => {
                opened.not_due += unfinished;
                opened.next_due = Some(opened.next_due.map_or(at, |t| t.min(at)));
                continue;
            }
            Some(_) if due >= window => {
                opened.waiting += unfinished;
                continue;
            }
            _ => {}
        }
        let map = match MappedBatch::open(&status.path) {
            Ok(map) => map,
            Err(err @ QueueError::Corrupt { .. }) => {
                spool.quarantine(&status.path, &err.to_string())?;
                opened.quarantined += 1;
                continue;
            }
            Err(err) => return Err(err),
        };
        let batch = Arc::new(LiveBatch::keeping(map, hold, keep));
        if unfinished == 0 {
            opened.finished.push(batch);
            continue;
        }
        let map = &batch.map;
        due += (0..map.len())
            .filter(|&i| map.slot(i).is_ok_and(|slot| is_due(slot, now)))
            .count() as u64;
        opened.batches.push(batch);
    }
    Ok(opened)
}

impl Feed for SpoolFeed {
    /// Every batch of the spool, in [`round_order`] ([`open_spool_round`]).
    fn open_round(&self, now: u64, window: u64) -> Result<Opened, QueueError> {
        let free = Arc::new(AtomicBool::new(false));
        open_spool_round(&self.spool, now, window, |_| Admit::Open {
            hold: Arc::clone(&free),
            keep: Keep::Nothing,
        })
    }

    /// msync of every batch, even past one that fails (the first error is
    /// returned).
    fn commit(&self, batches: &[Arc<LiveBatch>]) -> Result<(), QueueError> {
        let mut result = Ok(());
        for batch in batches {
            if let (Err(err), Ok(())) = (batch.map.sync(), &result) {
                result = Err(err);
            }
        }
        result
    }

    /// Moves the batches to `done/`, one fsync per directory for all of them.
    fn complete(&self, finished: &[&LiveBatch]) -> Result<u64, QueueError> {
        let done = self.spool.complete_all(finished.iter().map(|b| &b.map))?;
        Ok(done.len() as u64)
    }
}

/// The order a round serves batches in, so that no sender waits behind
/// another's backlog: relayed messages first (each is small, and a program or
/// person waits for it), then the campaigns' batches taken in turn, one batch of
/// each campaign (oldest campaign first) before a second of any, each campaign's
/// in batch order.
pub fn round_order(mut batches: Vec<BatchStatus>) -> Vec<BatchStatus> {
    batches.sort_by_key(|b| (b.campaign_id, b.batch_id));
    let mut keyed = Vec::with_capacity(batches.len());
    // A batch's turn: its position within its campaign.
    let (mut turn, mut last) = (0u64, None);
    for b in batches {
        turn = if last == Some(b.campaign_id) {
            turn + 1
        } else {
            0
        };
        last = Some(b.campaign_id);
        keyed.push(((!is_inbound_id(b.campaign_id), turn, b.campaign_id), b));
    }
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, b)| b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_queue::ids::INBOUND_ID_BASE;
    use volley_queue::StateCounts;

    fn status(campaign_id: u64, batch_id: u64) -> BatchStatus {
        BatchStatus {
            path: format!("{campaign_id}-{batch_id}").into(),
            campaign_id,
            batch_id,
            counts: StateCounts::default(),
            next_due: Some(0),
            bytes: 0,
        }
    }

    #[test]
    fn rounds_take_relayed_mail_first_then_campaigns_in_turn() {
        let relayed = INBOUND_ID_BASE + 7;
        // (batches in spool order, the order served), each batch (campaign, batch).
        type Ids<'a> = &'a [(u64, u64)];
        let table: [(Ids, Ids); 5] = [
            (&[], &[]),
            (&[(1, 0), (1, 1), (1, 2)], &[(1, 0), (1, 1), (1, 2)]),
            // Two campaigns: one batch of each in turn, the older first.
            (
                &[(2, 1), (1, 0), (2, 0), (1, 1), (1, 2)],
                &[(1, 0), (2, 0), (1, 1), (2, 1), (1, 2)],
            ),
            // Relayed messages before every campaign, however large.
            (
                &[(1, 0), (1, 1), (relayed, 0), (relayed + 1, 0)],
                &[(relayed, 0), (relayed + 1, 0), (1, 0), (1, 1)],
            ),
            (
                &[(3, 0), (relayed, 1), (5, 0), (relayed, 0), (3, 1)],
                &[(relayed, 0), (relayed, 1), (3, 0), (5, 0), (3, 1)],
            ),
        ];
        for (input, expected) in table {
            let batches = round_order(input.iter().map(|&(c, b)| status(c, b)).collect());
            let got: Vec<(u64, u64)> = batches
                .iter()
                .map(|b| (b.campaign_id, b.batch_id))
                .collect();
            assert_eq!(got, expected, "{input:?}");
        }
    }
}
