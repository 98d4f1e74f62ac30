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

use std::sync::Arc;

use volley_queue::{MappedBatch, QueueError, Spool};

/// A batch being delivered from: its mapping, whose slots record every outcome.
#[derive(Debug)]
pub struct LiveBatch {
    /// The mapping.
    pub map: MappedBatch,
}

/// The batches of one round, as a feed hands them over.
#[derive(Debug, Default)]
pub struct Opened {
    /// Batches with unfinished recipients, in the order they are served.
    pub batches: Vec<Arc<LiveBatch>>,
    /// Corrupt batch files set aside (quarantined) while opening.
    pub quarantined: u64,
    /// Unfinished recipients left for a later round because the round's window
    /// (`[queue] window`) was full.
    pub waiting: u64,
}

/// What feeds the delivery engine. Errors are the queue's: a feed works on
/// mapped batch files, whether they are the spool's or local copies of leased
/// batches.
pub trait Feed: Send + Sync + 'static {
    /// The batches of the next round: every batch with unfinished recipients,
    /// until they hold `window` recipients (the unfinished recipients of the rest
    /// are counted in [`Opened::waiting`]). Batches found finished are completed
    /// here; corrupt ones are set aside and counted.
    fn open_round(&self, window: u64) -> Result<Opened, QueueError>;

    /// Group commit, called every `[queue] sync_interval` while a round runs and
    /// once at its end: the slots of `batches` to stable storage (and, for a
    /// leased batch, its progress to the control plane).
    fn commit(&self, batches: &[Arc<LiveBatch>]) -> Result<(), QueueError>;

    /// Called at the end of a round with the batches whose recipients are all
    /// final (after [`Feed::commit`]); answers how many were completed.
    fn complete(&self, finished: &[&LiveBatch]) -> Result<u64, QueueError>;
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

impl Feed for SpoolFeed {
    /// Runs the recovery scan (quarantining corrupt files), then maps batches in
    /// spool order.
    fn open_round(&self, window: u64) -> Result<Opened, QueueError> {
        let recovery = self.spool.recover()?;
        let mut opened = Opened {
            quarantined: recovery.quarantined.len() as u64,
            ..Opened::default()
        };
        let mut mapped = 0u64;
        let mut finished = Vec::new();
        for status in recovery.batches {
            let unfinished = status.counts.unfinished();
            if unfinished > 0 && mapped >= window {
                opened.waiting += unfinished;
                continue;
            }
            let map = match MappedBatch::open(&status.path) {
                Ok(map) => map,
                Err(err @ QueueError::Corrupt { .. }) => {
                    self.spool.quarantine(&status.path, &err.to_string())?;
                    opened.quarantined += 1;
                    continue;
                }
                Err(err) => return Err(err),
            };
            if unfinished == 0 {
                finished.push(map);
                continue;
            }
            mapped += map.view().header().recipient_count as u64;
            opened.batches.push(Arc::new(LiveBatch { map }));
        }
        self.spool.complete_all(&finished)?;
        Ok(opened)
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
