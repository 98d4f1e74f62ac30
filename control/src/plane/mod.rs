//! The control plane's operations, whatever asks for them (the HTTP API, a
//! local command): submitting a campaign and cutting it into batches,
//! suspending, resuming and cancelling it, the scheduler's tick (scheduled
//! starts, completions, the outbox), and what delivery may do with each
//! campaign's batches ([`Plane::admit`]).
//!
//! The store is the truth for every campaign; the plane keeps a snapshot of
//! the open campaigns' states (refreshed by every tick and by every change made
//! through it) so that delivery asks memory, not the database, at each round,
//! and a hold flag per campaign that the engine checks before each new
//! transaction (a suspend takes effect at once in this process; another
//! control-plane process's suspend within a tick).
//!
//! Layout: [`admission`] (the pure decision), [`progress`] (slots to counts and
//! rows), [`delivery_events`] (the outbox events of delivery outcomes), [`submit`] (submission and partitioning), [`lists`] (lists and their members), [`subscriptions`] (the subscribe
//! form's requests), [`view`] (what the API
//! shows of a campaign).

pub mod admission;
pub mod delivery_events;
pub mod engagement;
pub mod lists;
pub mod progress;
pub mod submit;
pub mod subscriptions;
pub mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use volley_queue::Spool;

use crate::store::batches::{DoneBatch, Progress};
use crate::store::campaigns::{Campaign, CampaignState};
use crate::store::events::BatchOutcomes;
use crate::store::{now, Store, StoreError};
use crate::suppress::SharedList;
use crate::webhook::kinds::Kinds;
use admission::{decide, Decision};

/// Stores and checks templates for the plane (the plane never links the
/// message code: the binary gives it this).
pub trait Templates: Send + Sync + 'static {
    /// Checks `template` (the template's keys as JSON: from, subject, text,
    /// html, reply_to, headers, attachments), checks that a list with merge
    /// fields `fields` (and `email`) fills every placeholder, and stores it in
    /// the content store. The error says what to change.
    fn store(
        &self,
        template: &serde_json::Value,
        fields: &[String],
    ) -> Result<StoredTemplate, String>;
}

/// A template as stored ([`Templates::store`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTemplate {
    /// Its content hash.
    pub content_hash: [u8; 32],
    /// The domain of its envelope sender (suppressions are per sending
    /// domain), lower case.
    pub sending_domain: String,
    /// Its tracked links' URLs, by link index (`track_clicks`).
    pub links: Vec<String>,
}

/// A failed operation, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaneError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// What was asked for does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// It exists, but not in a state that allows this (409).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but cannot be done as asked (422).
    #[error("{0}")]
    Unprocessable(String),
    /// Something on this side failed (500); logged with its cause.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for PlaneError {
    fn from(e: StoreError) -> PlaneError {
        tracing::error!(err = %e, "store failure");
        PlaneError::Internal(format!("the store failed: {e}"))
    }
}

/// What delivery may do with one batch of a campaign ([`Plane::admit`]).
#[derive(Debug, Clone)]
pub enum Admission {
    /// Deliver from it while `hold` is clear.
    Open(Arc<AtomicBool>),
    /// Not now; due at this unix second (`None`: when told).
    Wait(Option<u64>),
    /// Finalise its unsent recipients with this slot mark
    /// ([`volley_queue::slot::mark`]).
    Finalize(u64),
    /// Not a campaign of this store (relayed mail, a campaign of an older
    /// spool): deliver as it is.
    Unknown,
}

/// The settings the plane takes from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Default recipients per batch.
    pub batch_size: u32,
    /// Largest `recipients` array a submission may carry.
    pub max_json_recipients: usize,
    /// Batches go to gateways through leases (`volley control`): their
    /// files and content are copied into the store at partitioning.
    pub fleet: bool,
}

#[derive(Debug, Clone)]
struct Snapshot {
    state: CampaignState,
    partitioned: bool,
    start_at: Option<i64>,
    stop_at: Option<i64>,
}

/// The control plane.
pub struct Plane {
    store: Store,
    spool: Spool,
    templates: Arc<dyn Templates>,
    suppressions: Arc<SharedList>,
    settings: Settings,
    snapshot: Mutex<HashMap<i64, Snapshot>>,
    holds: Mutex<HashMap<i64, Arc<AtomicBool>>>,
    /// Where engagements are logged besides the store (`volley run`).
    engagement_log: std::sync::OnceLock<Arc<dyn engagement::EngagementLog>>,
    wake: Arc<Notify>,
    /// Completed campaigns whose summary is due, for the binary to queue.
    summaries: Mutex<Vec<i64>>,
    /// What webhooks want of the outbox, shared with their dispatcher.
    outbox: Arc<crate::webhook::Outbox>,
}

impl std::fmt::Debug for Plane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plane")
            .field("store", &self.store.url())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Plane {
    /// A plane over `store`, partitioning into `spool`.
    pub fn new(
        store: Store,
        spool: Spool,
        templates: Arc<dyn Templates>,
        suppressions: Arc<SharedList>,
        settings: Settings,
    ) -> Arc<Plane> {
        Arc::new(Plane {
            store,
            spool,
            templates,
            suppressions,
            settings,
            snapshot: Mutex::default(),
            holds: Mutex::default(),
            wake: Arc::new(Notify::new()),
            engagement_log: std::sync::OnceLock::new(),
            summaries: Mutex::default(),
            outbox: Arc::default(),
        })
    }

    /// What webhooks want of the outbox (for their dispatcher).
    pub fn outbox(&self) -> &Arc<crate::webhook::Outbox> {
        &self.outbox
    }

    /// The webhooks changed: the dispatcher looks again at once.
    pub fn webhooks_changed(&self) {
        self.outbox.changed.notify_one();
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The suppression list.
    pub fn suppressions(&self) -> &Arc<SharedList> {
        &self.suppressions
    }

    /// The spool it partitions into.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Notified when delivery should start a round now (a campaign became
    /// ready, was resumed, cancelled or reached its stop).
    pub fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Where uploads and recipient lists are kept: `SPOOL/uploads/`.
    pub fn uploads_dir(&self) -> PathBuf {
        self.spool.root().join("uploads")
    }

    fn hold_of(&self, id: i64) -> Arc<AtomicBool> {
        Arc::clone(lock(&self.holds).entry(id).or_default())
    }

    fn note(&self, c: &Campaign) {
        let snap = Snapshot {
            state: c.state,
            partitioned: c.partitioned,
            start_at: c.start_at,
            stop_at: c.stop_at,
        };
        let held = !matches!(
            decide(snap.state, true, None, snap.stop_at, now()),
            Decision::Open | Decision::WaitUntil(_)
        );
        self.hold_of(c.id).store(held, Ordering::Relaxed);
        lock(&self.snapshot).insert(c.id, snap);
    }

    /// What delivery may do with the batches of campaign `id` at unix second
    /// `now` (from memory: the last tick's snapshot and this process's changes).
    pub fn admit(&self, id: u64, now: u64) -> Admission {
        let Ok(id) = i64::try_from(id) else {
            return Admission::Unknown;
        };
        let snap = match lock(&self.snapshot).get(&id) {
            Some(s) => s.clone(),
            None => return Admission::Unknown,
        };
        match decide(
            snap.state,
            snap.partitioned,
            snap.start_at,
            snap.stop_at,
            now as i64,
        ) {
            Decision::Open => Admission::Open(self.hold_of(id)),
            Decision::WaitUntil(at) => Admission::Wait(Some(at)),
            Decision::Hold => Admission::Wait(None),
            Decision::Cancel => Admission::Finalize(volley_queue::slot::mark::CANCELLED),
            Decision::Stop => Admission::Finalize(volley_queue::slot::mark::STOPPED),
        }
    }

    /// Reloads the snapshot of open campaigns from the store (what another
    /// control-plane process changed); campaigns closed since are dropped from
    /// it (their batches are done).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let open = self.store.open_campaigns().await?;
        let ids: std::collections::HashSet<i64> = open.iter().map(|c| c.id).collect();
        for c in &open {
            self.note(c);
        }
        lock(&self.snapshot).retain(|id, _| ids.contains(id));
        Ok(())
    }

    async fn get(&self, id: i64) -> Result<Campaign, PlaneError> {
        self.store
            .campaign(id)
            .await?
            .ok_or_else(|| PlaneError::NotFound(format!("there is no campaign {id}")))
    }

    /// Suspends campaign `id`: no new transaction of it starts from now (those
    /// in flight finish and are recorded).
    pub async fn suspend(&self, id: i64) -> Result<Campaign, PlaneError> {
        use CampaignState::*;
        let c = self.get(id).await?;
        if c.state == Suspended {
            return Ok(c);
        }
        if !self
            .store
            .transition(id, &[Scheduled, Queued, Sending], Suspended)
            .await?
        {
            return Err(PlaneError::Conflict(format!(
                "campaign {id} is {}: only a scheduled, queued or sending campaign can be suspended",
                self.get(id).await?.state.name()
            )));
        }
        self.hold_of(id).store(true, Ordering::Relaxed);
        let c = self.get(id).await?;
        self.note(&c);
        tracing::info!(campaign = id, "campaign suspended");
        Ok(c)
    }

    /// Resumes a suspended campaign where it stopped (scheduled again if its
    /// `start_at` is still ahead).
    pub async fn resume(&self, id: i64) -> Result<Campaign, PlaneError> {
        use CampaignState::*;
        let c = self.get(id).await?;
        if matches!(c.state, Scheduled | Queued | Sending) {
            return Ok(c);
        }
        let to = match (c.start_at, c.started_at) {
            (Some(at), None) if at > now() => Scheduled,
            (_, None) => Queued,
            _ => Sending,
        };
        if !self.store.transition(id, &[Suspended], to).await? {
            return Err(PlaneError::Conflict(format!(
                "campaign {id} is {}: only a suspended campaign can be resumed",
                self.get(id).await?.state.name()
            )));
        }
        let c = self.get(id).await?;
        self.note(&c);
        self.wake.notify_one();
        tracing::info!(campaign = id, "campaign resumed");
        Ok(c)
    }

    /// Cancels campaign `id`: nothing more is sent, and its unsent recipients
    /// are finalised as `cancelled` at delivery's next round.
    pub async fn cancel(&self, id: i64) -> Result<Campaign, PlaneError> {
        use CampaignState::*;
        let c = self.get(id).await?;
        if c.state == Cancelled {
            return Ok(c);
        }
        if !self
            .store
            .transition(id, &[Scheduled, Queued, Sending, Suspended], Cancelled)
            .await?
        {
            return Err(PlaneError::Conflict(format!(
                "campaign {id} is {}: a completed campaign cannot be cancelled",
                self.get(id).await?.state.name()
            )));
        }
        self.hold_of(id).store(true, Ordering::Relaxed);
        let c = self.get(id).await?;
        self.note(&c);
        self.wake.notify_one();
        tracing::info!(campaign = id, "campaign cancelled");
        Ok(c)
    }

    /// The scheduler's step, about once a second: reloads the snapshot, starts
    /// the campaigns that are due (`sending`), holds those past their
    /// `stop_at`, and closes those whose batches are all done (completed, or
    /// cancelled), with a `campaign.completed` event in the outbox. Answers the
    /// campaigns closed now.
    pub async fn tick(&self) -> Result<Vec<Campaign>, StoreError> {
        use CampaignState::*;
        let at = now();
        let mut closed = Vec::new();
        let mut woke = false;
        for c in self.store.open_campaigns().await? {
            if !c.partitioned {
                self.note(&c);
                continue;
            }
            let due = c.start_at.is_none_or(|s| s <= at);
            if (c.state == Queued || (c.state == Scheduled && due))
                && self
                    .store
                    .transition(c.id, &[Queued, Scheduled], Sending)
                    .await?
            {
                tracing::info!(campaign = c.id, "campaign sending");
                woke = true;
            }
            if c.stop_at.is_some_and(|s| s <= at) && !c.state.is_final() {
                // Stopped: the next round finalises what is left.
                woke = true;
            }
            let c = self.store.campaign(c.id).await?.unwrap_or(c);
            if c.completed_at.is_none()
                && c.state != Suspended
                && c.state != Scheduled
                && self.store.live_batches(c.id).await? == 0
                && self.store.finish_campaign(c.id, at).await?
            {
                let c = self.store.campaign(c.id).await?.unwrap_or(c);
                let counts = self.store.campaign_counts(c.id).await?;
                let payload = serde_json::json!({
                    "id": c.id,
                    "state": c.state.name(),
                    "recipients": c.recipients,
                    "delivered": counts.delivered,
                    "bounced": counts.bounced,
                    "expired": counts.expired,
                    "suppressed": counts.suppressed + c.suppressed,
                    "cancelled": counts.cancelled,
                    "rejected_rows": c.rejected_rows,
                    "started_at": c.started_at,
                    "completed_at": c.completed_at,
                });
                self.store
                    .add_event("campaign.completed", Some(c.id), &payload)
                    .await?;
                tracing::info!(
                    campaign = c.id,
                    state = c.state.name(),
                    delivered = counts.delivered,
                    "campaign completed"
                );
                if !c.notify.is_empty() && !c.summary_queued {
                    lock(&self.summaries).push(c.id);
                }
                closed.push(c);
            } else if c.completed_at.is_some() && !c.summary_queued && !c.notify.is_empty() {
                // Closed before a crash, its summary not queued yet.
                let mut due = lock(&self.summaries);
                if !due.contains(&c.id) {
                    due.push(c.id);
                }
            }
        }
        self.refresh().await?;
        if woke {
            self.wake.notify_one();
        }
        Ok(closed)
    }

    /// Completed campaigns whose summary is due (see [`Plane::tick`]); the
    /// caller queues each and marks it with [`Store::summary_queued`].
    pub fn take_summaries(&self) -> Vec<i64> {
        std::mem::take(&mut *lock(&self.summaries))
    }

    /// Records live batches' progress (best effort: a failure is logged; the
    /// batches' completion writes their final counts).
    pub async fn record_progress(&self, progress: Vec<Progress>) {
        if let Err(e) = self.store.record_progress(&progress).await {
            tracing::warn!(err = %e, "cannot record delivery progress");
        }
    }

    /// Records batches as done (before their files leave `active/`), with
    /// `outcomes` (the live delivery events not written yet) and, of the
    /// types webhooks want, the final outcomes not in the outbox yet (made by
    /// `gateway`; `written`: a recipient's is known to be there, see
    /// [`delivery_events::final_events`]).
    pub async fn complete_batches(
        &self,
        done: &[DoneBatch],
        mut outcomes: Vec<BatchOutcomes>,
        gateway: &str,
        written: &(dyn Fn(&DoneBatch, u32) -> bool + Sync),
    ) -> Result<(), StoreError> {
        outcomes.extend(delivery_events::final_events(
            done,
            self.wanted_events(),
            gateway,
            written,
        ));
        self.store.complete_batches(done, &outcomes).await?;
        if !outcomes.is_empty() {
            self.outbox.added.notify_waiters();
        }
        Ok(())
    }

    /// The event types some active webhook wants.
    pub fn wanted_events(&self) -> Kinds {
        self.outbox.wanted.get()
    }

    /// Appends delivery events to the outbox (in order; a final outcome
    /// once).
    pub async fn add_outcomes(&self, outcomes: &[BatchOutcomes]) -> Result<(), StoreError> {
        if outcomes.iter().all(|b| b.events.is_empty()) {
            return Ok(());
        }
        self.store.add_outcomes(outcomes).await?;
        self.outbox.added.notify_waiters();
        Ok(())
    }
}

/// Suppression changes applied per step ([`Plane::sync_suppressions`]).
const SUPPRESSION_STEP: i64 = 10_000;

impl Plane {
    /// One step of the fleet's suppression sync, as process `origin`: this
    /// process's changes into the store's log, then the log's changes after
    /// `cursor` into this process's list (cursor moved on). Answers how many
    /// changes were applied.
    pub async fn sync_suppressions(
        &self,
        origin: &str,
        cursor: &mut i64,
    ) -> Result<usize, PlaneError> {
        let outgoing = self.suppressions.write(|s| s.take_changes());
        if let Err(e) = self.store.add_suppression_changes(&outgoing, origin).await {
            self.suppressions.write(|s| s.untake_changes(outgoing));
            return Err(e.into());
        }
        let changes = self
            .store
            .suppression_changes_after(*cursor, SUPPRESSION_STEP)
            .await?;
        let Some(last) = changes.last().map(|(id, _)| *id) else {
            return Ok(0);
        };
        let applied = self.apply_suppression_changes(changes).await?;
        *cursor = last;
        Ok(applied)
    }

    /// Applies changes from the fleet's log to this process's list.
    pub async fn apply_suppression_changes(
        &self,
        changes: Vec<(i64, crate::suppress::Change)>,
    ) -> Result<usize, PlaneError> {
        let list = Arc::clone(&self.suppressions);
        let changes: Vec<crate::suppress::Change> = changes.into_iter().map(|(_, c)| c).collect();
        tokio::task::spawn_blocking(move || list.write(|s| s.apply_changes(&changes)))
            .await
            .map_err(|e| PlaneError::Internal(e.to_string()))?
            .map_err(|e| PlaneError::Internal(format!("cannot apply suppression changes: {e}")))
    }
}
