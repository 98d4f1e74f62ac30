//! The delivery engine fed by the control plane on one node: batches come from
//! the local spool as with `SpoolFeed`, but each campaign's are admitted as the
//! plane says (scheduled ones wait, suspended ones are held, cancelled or
//! stopped ones have their unsent recipients finalised), progress goes to the
//! store about once a second, and a batch is recorded as done in the store
//! before its file leaves `active/`.
//!
//! In-process, no copy of batch files: the engine maps the spool's files and
//! records every reply in their slots; this feed reads the slots.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use volley_control::plane::delivery_events::{attempt_event, Attempt};
use volley_control::plane::progress::{domain_counts, final_row, LastReply};
use volley_control::plane::{Admission, Plane};
use volley_control::store::batches::{Counts, DoneBatch, Progress};
use volley_control::store::events::{has_bit, set_bit, BatchOutcomes};
use volley_control::store::now;
use volley_engine::delivery::feed::{
    open_spool_round, Admit, Feed, Keep, LiveBatch, Opened, Reply,
};
use volley_queue::{MappedBatch, QueueError, Slot, Spool, State};

/// How often live batches' progress goes to the store while a round runs (and
/// at its end): the API's counts of a live campaign lag by at most this much.
/// Every second cost ~5% of the delivery CPU in the end-to-end benchmark (an
/// UPDATE per batch and domain each time).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Batches recorded as done per store transaction: bounds the outcomes held in
/// memory at the end of a round that finished many.
const COMPLETE_CHUNK: usize = 200;

type BatchKey = (i64, i64);

/// What the feed remembers of a live batch across progress reports and
/// rounds, until it is done.
#[derive(Default)]
struct Sent {
    /// Counts per domain last sent.
    counts: Vec<(String, Counts)>,
    /// The last reply of each recipient that got one that did not deliver it
    /// (bounces, deferrals, expiries): written with the batch's outcomes.
    replies: HashMap<u32, LastReply>,
    /// A bit per recipient whose final event was handed to the outbox writer:
    /// not made again when the batch completes.
    finals: Vec<u8>,
}

/// The engine's feed on a node whose control plane runs in the same process.
pub struct ControlFeed {
    spool: Spool,
    plane: Arc<Plane>,
    runtime: tokio::runtime::Handle,
    free: Arc<AtomicBool>,
    last_progress: Mutex<Option<Instant>>,
    sent: Mutex<HashMap<BatchKey, Sent>>,
    /// This node's name in delivery events (`[gateway] name`, else the host's).
    gateway: String,
    /// Held while replies are turned into events and handed to the outbox
    /// writer, so that the outbox gets them in the order they came.
    outbox_order: Mutex<()>,
    /// The outbox writer ([`outbox_writer`]): delivery never waits for the
    /// store's write of its events, only a batch's completion does.
    outbox: tokio::sync::mpsc::UnboundedSender<OutboxJob>,
    /// Set for good once a write of the outbox writer failed: from then on a
    /// completing batch's final events are all made again (the store skips
    /// those it has), not only those never handed over.
    outbox_failed: Arc<AtomicBool>,
}

/// What the outbox writer is handed, in order.
enum OutboxJob {
    /// Delivery events to append.
    Write(Vec<BatchOutcomes>),
    /// Answer once everything handed before is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Appends delivery events to the outbox in the order they were handed over,
/// several handovers in one transaction when they queue up; a failure is
/// logged and sets `failed` (the final outcomes are written again when their
/// batches complete).
async fn outbox_writer(
    plane: Arc<Plane>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<OutboxJob>,
    failed: Arc<AtomicBool>,
) {
    while let Some(job) = jobs.recv().await {
        let mut flushes = Vec::new();
        let mut events = Vec::new();
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                OutboxJob::Write(more) => events.extend(more),
                OutboxJob::Flush(done) => flushes.push(done),
            }
            // Whatever else queued meanwhile goes in the same write (a flush
            // is answered after it).
            next = jobs.try_recv().ok();
        }
        if !events.is_empty() {
            if let Err(err) = plane.add_outcomes(&events).await {
                failed.store(true, Ordering::SeqCst);
                tracing::warn!(%err, "cannot write delivery events to the outbox");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(batch: &LiveBatch) -> BatchKey {
    let h = batch.map.header();
    (h.campaign_id as i64, h.batch_id as i64)
}

fn last_reply(r: Reply) -> LastReply {
    LastReply {
        at: r.at as i64,
        enhanced: r.enhanced,
        text: r.text,
    }
}

/// Sets every unsent recipient of the batch at `path` final: expired, marked
/// with `mark` (cancelled, or stopped at `stop_at`).
pub(crate) fn finalize(path: &std::path::Path, mark: u64) -> Result<u64, QueueError> {
    let map = MappedBatch::open(path)?;
    let mut done = 0;
    for i in 0..map.len() {
        let Ok(slot) = map.slot(i) else { continue };
        if slot.state.is_final() {
            continue;
        }
        map.set_slot(
            i,
            Slot {
                state: State::Expired,
                next_attempt: mark,
                ..slot
            },
        )?;
        done += 1;
    }
    map.sync()?;
    Ok(done)
}

impl ControlFeed {
    /// Feeds the engine from `spool` as `plane` admits; store writes run on
    /// `runtime`; delivery events name `gateway`.
    pub fn new(
        spool: Spool,
        plane: Arc<Plane>,
        runtime: tokio::runtime::Handle,
        gateway: String,
    ) -> ControlFeed {
        let (outbox, jobs) = tokio::sync::mpsc::unbounded_channel();
        let outbox_failed = Arc::new(AtomicBool::new(false));
        runtime.spawn(outbox_writer(
            Arc::clone(&plane),
            jobs,
            Arc::clone(&outbox_failed),
        ));
        ControlFeed {
            spool,
            plane,
            runtime,
            free: Arc::new(AtomicBool::new(false)),
            last_progress: Mutex::new(None),
            sent: Mutex::default(),
            gateway,
            outbox_order: Mutex::new(()),
            outbox,
            outbox_failed,
        }
    }

    /// Takes the replies the engine kept on `batches`: each recipient's last
    /// failure is remembered for its final row, and every reply of a type
    /// some webhook wants becomes an outbox event (returned, per batch, in
    /// order).
    fn take_replies<'a>(&self, batches: impl Iterator<Item = &'a LiveBatch>) -> Vec<BatchOutcomes> {
        let wanted = self.plane.wanted_events();
        let mut out = Vec::new();
        let mut sent = lock(&self.sent);
        for batch in batches {
            if batch.replies.is_none() {
                continue;
            }
            let replies = batch.take_replies();
            if replies.is_empty() {
                continue;
            }
            let (campaign, id) = key(batch);
            let entry = sent.entry((campaign, id)).or_default();
            let view = batch.map.view();
            let mut events = Vec::new();
            for reply in replies {
                if wanted.any_delivery() {
                    let recipient = view
                        .recipient(reply.index as usize)
                        .map(|r| r.address())
                        .unwrap_or_default();
                    let attempt = Attempt {
                        index: reply.index,
                        recipient: &recipient,
                        state: reply.state,
                        code: reply.code,
                        enhanced: &reply.enhanced,
                        reply: &reply.text,
                        attempt: reply.attempt,
                        next_attempt: reply.next_attempt,
                        at: reply.at as i64,
                    };
                    if let Some(event) = attempt_event(&attempt, wanted) {
                        if event.is_final {
                            set_bit(&mut entry.finals, event.index);
                        }
                        events.push(event);
                    }
                }
                if reply.state != State::Delivered {
                    entry.replies.insert(reply.index, last_reply(reply));
                }
            }
            if !events.is_empty() {
                out.push(BatchOutcomes {
                    campaign,
                    batch: id,
                    gateway: self.gateway.clone(),
                    events,
                });
            }
        }
        out
    }

    /// Writes the events of the replies kept on `batches` to the outbox (a
    /// failure is logged: the final outcomes are written again when their
    /// batches complete).
    fn write_events(&self, batches: &[Arc<LiveBatch>]) {
        let _order = lock(&self.outbox_order);
        let events = self.take_replies(batches.iter().map(|b| b.as_ref()));
        if !events.is_empty() {
            let _ = self.outbox.send(OutboxJob::Write(events));
        }
    }

    /// Waits until every event handed to the outbox writer is written.
    fn flush_events(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.outbox.send(OutboxJob::Flush(done)).is_ok() {
            let _ = tokio::task::block_in_place(|| written.blocking_recv());
        }
    }

    /// Waits for `f` on the runtime from the engine's (synchronous) feed calls.
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.runtime.block_on(f))
    }

    /// The progress of `batches` changed since the last report (and their
    /// replies, kept until each is done).
    fn progress(&self, batches: &[Arc<LiveBatch>]) -> Vec<Progress> {
        let mut progress = Vec::new();
        let mut sent = lock(&self.sent);
        for batch in batches {
            if batch.replies.is_none() {
                continue;
            }
            let (campaign, id) = key(batch);
            let view = batch.map.view();
            let counts = domain_counts(&view, |i| batch.map.slot(i).ok());
            let entry = sent.entry((campaign, id)).or_default();
            for (domain, c) in &counts {
                let before = entry
                    .counts
                    .iter()
                    .find(|(d, _)| d == domain)
                    .map(|(_, c)| *c);
                if before != Some(*c) {
                    progress.push(Progress {
                        campaign,
                        batch: id,
                        domain: domain.clone(),
                        counts: *c,
                    });
                }
            }
            entry.counts = counts;
        }
        progress
    }
}

impl ControlFeed {
    /// Sends the progress of `batches` to the store (in the background).
    fn report(&self, batches: &[Arc<LiveBatch>]) {
        let progress = self.progress(batches);
        if !progress.is_empty() {
            let plane = Arc::clone(&self.plane);
            self.runtime
                .spawn(async move { plane.record_progress(progress).await });
        }
    }
}

impl Feed for ControlFeed {
    fn open_round(&self, now: u64, window: u64) -> Result<Opened, QueueError> {
        let plane = &self.plane;
        // Deliveries' replies are kept only when a webhook wants them.
        let keep = if plane.wanted_events().has("message.delivered") {
            Keep::Everything
        } else {
            Keep::Failures
        };
        let mut finalized = 0u64;
        let mut failure = None;
        let opened = open_spool_round(&self.spool, now, window, |status| {
            match plane.admit(status.campaign_id, now) {
                Admission::Open(hold) => Admit::Open { hold, keep },
                Admission::Wait(until) => Admit::Wait(until),
                Admission::Finalize(mark) => {
                    if status.counts.unfinished() > 0 {
                        match finalize(&status.path, mark) {
                            Ok(n) => finalized += n,
                            Err(e) => failure = Some(e),
                        }
                    }
                    // Held: nothing of it is sent; it is completed at the
                    // round's end.
                    Admit::Open {
                        hold: Arc::new(AtomicBool::new(true)),
                        keep: Keep::Failures,
                    }
                }
                Admission::Unknown => Admit::Open {
                    hold: Arc::clone(&self.free),
                    keep: Keep::Nothing,
                },
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        if finalized > 0 {
            tracing::info!(
                recipients = finalized,
                "unsent recipients of cancelled or stopped campaigns finalised"
            );
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
        self.write_events(batches);
        let due = {
            let mut last = lock(&self.last_progress);
            let due = last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.report(batches);
        }
        result
    }

    fn end_round(&self, batches: &[Arc<LiveBatch>]) {
        // Batches completed this round were written whole by `complete`
        // (their entries are gone): only the live ones are reported.
        let live: Vec<Arc<LiveBatch>> = {
            let sent = lock(&self.sent);
            batches
                .iter()
                .filter(|b| sent.contains_key(&key(b)) || !b.map.is_finished().unwrap_or(true))
                .cloned()
                .collect()
        };
        self.report(&live);
    }

    fn complete(&self, finished: &[&LiveBatch]) -> Result<u64, QueueError> {
        let at = now();
        let _order = lock(&self.outbox_order);
        // The events handed over before are in the outbox before these
        // batches' final outcomes are filled in.
        if !finished.is_empty() {
            self.flush_events();
        }
        // After the flush: whether every event handed over is in the outbox.
        let trust_handed = !self.outbox_failed.load(Ordering::SeqCst);
        for chunk in finished.chunks(COMPLETE_CHUNK) {
            let mut done = Vec::new();
            let events = self.take_replies(chunk.iter().copied());
            let mut handed: HashMap<BatchKey, Vec<u8>> = HashMap::new();
            {
                let mut sent = lock(&self.sent);
                for batch in chunk {
                    if batch.replies.is_none() {
                        continue;
                    }
                    let (campaign, id) = key(batch);
                    let view = batch.map.view();
                    let mut entry = sent.remove(&(campaign, id)).unwrap_or_default();
                    let recipients = (0..view.len())
                        .map(|i| {
                            let slot = batch.map.slot(i).unwrap_or(Slot::PENDING);
                            final_row(&view, i, slot, entry.replies.get(&(i as u32)), at)
                        })
                        .collect();
                    if trust_handed {
                        handed.insert((campaign, id), std::mem::take(&mut entry.finals));
                    }
                    done.push(DoneBatch {
                        campaign,
                        batch: id,
                        domains: domain_counts(&view, |i| batch.map.slot(i).ok()),
                        recipients,
                    });
                }
            }
            if done.is_empty() && events.is_empty() {
                continue;
            }
            // The store first: a crash before the move leaves the batch in
            // active/, completed again (idempotently) at the next round.
            let plane = Arc::clone(&self.plane);
            let gateway = &self.gateway;
            let written = |b: &DoneBatch, index: u32| {
                handed
                    .get(&(b.campaign, b.batch))
                    .is_some_and(|finals| has_bit(finals, index))
            };
            self.block_on(async move {
                plane
                    .complete_batches(&done, events, gateway, &written)
                    .await
            })
            .map_err(|e| QueueError::Io {
                action: "record completed batches in",
                path: self.spool.root().join("control store"),
                io: std::io::Error::other(e.to_string()),
            })?;
        }
        let moved = self.spool.complete_all(finished.iter().map(|b| &b.map))?;
        Ok(moved.len() as u64)
    }
}
