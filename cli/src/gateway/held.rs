//! The leases a gateway holds: for each leased batch its epoch, how long the
//! lease lasts as far as this gateway knows (it stops sending from a batch
//! whose lease it could not renew in time, by itself), the hold flag the
//! engine checks before each new transaction, the replies kept for the
//! batch's final rows and the attempts to report (webhooks' delivery events). Shared by the lease loop, the reporter and the feed.
//!
//! Fencing on this side: a batch is sent from only while its lease is
//! renewed and its campaign's order is `send`; a stale answer (`409`) drops
//! it at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use volley_control::fleet::wire::{Action, AttemptReport, CampaignOrder};
use volley_control::plane::progress::LastReply;
use volley_engine::delivery::feed::Keep;
use volley_queue::State;

/// Renewals must land this long before the lease's end as the control plane
/// counts it (clocks and the request's own time).
pub const MARGIN: Duration = Duration::from_secs(3);

/// (campaign, batch).
pub type Key = (i64, i64);

/// One leased batch.
#[derive(Debug)]
pub struct Held {
    /// The lease's epoch.
    pub epoch: i64,
    /// Its site.
    pub site: String,
    /// Its file in the gateway's spool.
    pub path: PathBuf,
    /// When the lease ends unless renewed (this gateway's clock, less
    /// [`MARGIN`]).
    pub until: Instant,
    /// Set while the engine must not start transactions of it.
    pub hold: Arc<AtomicBool>,
    /// The last reply of each recipient that got one that did not deliver it.
    pub replies: HashMap<u32, LastReply>,
    /// Attempts of the types the control plane asked for, not yet in an
    /// accepted report (its webhooks' delivery events), in order.
    pub attempts: Vec<AttemptReport>,
    /// Delivered recipients and attempts at the last report (for the figures).
    pub reported: (u64, u64),
    /// A report on it was accepted: the control plane knows it is being
    /// sent from (until then it is held, so that what a lost gateway may have
    /// sent is always among what the control plane counts as resent).
    pub started: bool,
    /// When the control plane asked for it back (another gateway delivers
    /// to its site much faster): held since, released once drained.
    pub giving_back: Option<Instant>,
    /// The slots of its last accepted report: a report while they are the
    /// same only renews the lease.
    pub accepted_slots: Option<Vec<u8>>,
}

/// Every lease held, and the campaigns' orders.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<Key, Held>>,
    orders: Mutex<HashMap<i64, CampaignOrder>>,
    /// The delivery event types the control plane wants attempts of.
    events: Mutex<Vec<String>>,
    /// Files of dropped batches, removed between rounds.
    dropped: Mutex<Vec<PathBuf>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Leases {
    /// How many batches are held.
    pub fn len(&self) -> usize {
        lock(&self.held).len()
    }

    /// Records a new lease (replacing an older one of the same batch).
    pub fn insert(&self, key: Key, held: Held) {
        // Its file is current again if it was dropped before.
        lock(&self.dropped).retain(|p| *p != held.path);
        lock(&self.held).insert(key, held);
        self.refresh_holds();
    }

    /// Runs `f` on the held batches.
    pub fn with<T>(&self, f: impl FnOnce(&mut HashMap<Key, Held>) -> T) -> T {
        f(&mut lock(&self.held))
    }

    /// Extends the leases of `keys` (a report on them was accepted at `sent`).
    pub fn renew(&self, keys: &[Key], sent: Instant, ttl: Duration) {
        let until = sent + ttl.saturating_sub(MARGIN);
        let mut held = lock(&self.held);
        for key in keys {
            if let Some(h) = held.get_mut(key) {
                h.until = h.until.max(until);
                h.started = true;
            }
        }
        drop(held);
        self.refresh_holds();
    }

    /// Drops a batch (stale, or given back): the engine sends nothing more
    /// of it; its file goes at the next round.
    pub fn drop_batch(&self, key: Key) {
        if let Some(h) = lock(&self.held).remove(&key) {
            h.hold.store(true, Ordering::Relaxed);
            lock(&self.dropped).push(h.path);
        }
    }

    /// Starts giving back `keys` (held from now on; see [`Held::giving_back`]).
    pub fn give_back(&self, keys: &[Key]) {
        let now = Instant::now();
        let mut held = lock(&self.held);
        for key in keys {
            if let Some(h) = held.get_mut(key) {
                h.giving_back.get_or_insert(now);
            }
        }
        drop(held);
        self.refresh_holds();
    }

    /// Forgets a batch that is done (its final report is queued).
    pub fn finish(&self, key: Key) -> Option<Held> {
        lock(&self.held).remove(&key)
    }

    /// Takes `path` off the files to remove (a batch leased again is about
    /// to be written there).
    pub fn undrop(&self, path: &std::path::Path) {
        lock(&self.dropped).retain(|p| p != path);
    }

    /// The files of dropped batches, to remove now: not one a batch leased
    /// again since (given back, then leased back) has at the same path.
    pub fn take_dropped(&self) -> Vec<PathBuf> {
        let held = lock(&self.held);
        let mut dropped = std::mem::take(&mut *lock(&self.dropped));
        dropped.retain(|p| !held.values().any(|h| &h.path == p));
        dropped
    }

    /// Notes the control plane's orders.
    pub fn set_orders(&self, orders: &[CampaignOrder]) {
        let mut all = lock(&self.orders);
        for o in orders {
            all.insert(o.campaign, *o);
        }
        drop(all);
        self.refresh_holds();
    }

    /// Notes the delivery event types the control plane wants attempts of.
    pub fn set_events(&self, events: &[String]) {
        let mut mine = lock(&self.events);
        if *mine != events {
            *mine = events.to_vec();
        }
    }

    /// Whether attempts that leave a recipient `state` are reported.
    pub fn reports(&self, state: State) -> bool {
        let name = match state {
            State::Delivered => "message.delivered",
            State::Deferred => "message.deferred",
            State::Bounced => "message.bounced",
            State::Expired => "message.expired",
            State::Pending | State::InFlight => return false,
        };
        lock(&self.events).iter().any(|e| e == name)
    }

    /// Which replies the engine keeps on leased batches: deliveries' too
    /// when they are reported.
    pub fn keep(&self) -> Keep {
        if self.reports(State::Delivered) {
            Keep::Everything
        } else {
            Keep::Failures
        }
    }

    /// The order for campaign `id` (hold until told).
    pub fn order(&self, id: i64) -> CampaignOrder {
        lock(&self.orders)
            .get(&id)
            .copied()
            .unwrap_or(CampaignOrder {
                campaign: id,
                action: Action::Hold,
                mark: 0,
            })
    }

    /// Sets each batch's hold flag: held unless its lease is current, a report
    /// on it was accepted, its campaign's order is `send` and it is not being
    /// given back. Answers the batches whose lease ran out.
    pub fn refresh_holds(&self) -> usize {
        let now = Instant::now();
        let orders = lock(&self.orders).clone();
        let mut expired = 0;
        for ((campaign, _), h) in lock(&self.held).iter() {
            let current = h.until > now;
            if !current {
                expired += 1;
            }
            let send = orders
                .get(campaign)
                .is_some_and(|o| o.action == Action::Send);
            let sending = current && send && h.started && h.giving_back.is_none();
            h.hold.store(!sending, Ordering::Relaxed);
        }
        expired
    }
}
