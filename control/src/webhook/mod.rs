//! Webhooks: every event of the outbox POSTed to the endpoints that asked for
//! its type, signed per the Standard Webhooks specification ([`sign`]), one
//! event or a batch per request ([`body`]), at least once and in outbox order
//! (so in order per recipient), with retries and backoff ([`policy`]).
//!
//! Each webhook is delivered by one task of one control-plane process at a
//! time (it holds the row, see [`crate::store::webhooks`]), one request at a
//! time: a slow or dead endpoint holds back only its own events, which wait in
//! the outbox; mail delivery never waits for a webhook.
//!
//! Layout: [`sign`] (signatures), [`policy`] (backoff and verdicts),
//! [`body`] (request bodies), [`kinds`] (which types some webhook wants), and
//! here the dispatcher.

pub mod body;
pub mod kinds;
pub mod policy;
pub mod sign;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::webhooks::{Pos, Tried, Webhook};
use crate::store::{now, Store, StoreError};
use kinds::{Kinds, SharedKinds, DELIVERY};
use policy::{verdict, Verdict};
use sign::Signer;

/// How long a process holds a webhook without renewing it.
const HOLD_SECS: i64 = 30;

/// How often the dispatcher looks for webhooks to take, refreshes the wanted
/// types and prunes the outbox.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// How long an idle webhook's task waits before looking at the outbox again
/// (unless woken by new events).
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// Delivery events older than this, passed by every webhook, are deleted.
const KEEP_DELIVERY_EVENTS_SECS: i64 = 600;

/// Events in one unbatched request.
const UNBATCHED: i64 = 1;

/// What the plane and the dispatcher share: the types some active webhook
/// wants (delivery writes those events only), and two wake-ups.
#[derive(Debug, Default)]
pub struct Outbox {
    /// The types some active webhook wants (refreshed every second and when
    /// the webhooks change).
    pub wanted: SharedKinds,
    /// Told when events were added: idle webhooks look at once.
    pub added: Notify,
    /// Told when a webhook was made or deleted: the dispatcher rescans.
    pub changed: Notify,
}

/// Delivers the outbox to the webhooks.
pub struct Dispatcher {
    store: Store,
    worker: String,
    client: reqwest::Client,
    outbox: Arc<Outbox>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

/// Why a webhook's task stopped working on it.
enum Stop {
    /// Another process holds it, or it was deleted or disabled.
    Gone,
    /// The store failed; the dispatcher takes it up again later.
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Store(e)
    }
}

impl Dispatcher {
    /// A dispatcher over `store`, named `worker` (unique among the processes
    /// sharing the store), keeping `outbox` up to date.
    pub fn new(store: Store, worker: String, outbox: Arc<Outbox>) -> Result<Dispatcher, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("volley-webhooks/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot make the webhook HTTP client: {e}"))?;
        Ok(Dispatcher {
            store,
            worker,
            client,
            outbox,
        })
    }

    /// Runs until aborted: takes the active webhooks no other process holds
    /// and delivers each in a task of its own.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut tasks: HashMap<i64, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut last_prune = 0;
        loop {
            tasks.retain(|_, t| !t.is_finished());
            match this.store.webhooks(None).await {
                Ok(hooks) => {
                    let wanted = hooks
                        .iter()
                        .filter(|h| h.state == "active")
                        .fold(Kinds::NONE, |k, h| k.union(Kinds::of(&h.events)));
                    this.outbox.wanted.set(wanted);
                    for hook in hooks.into_iter().filter(|h| h.state == "active") {
                        if tasks.contains_key(&hook.id) {
                            continue;
                        }
                        let until = now() + HOLD_SECS;
                        match this.store.claim_webhook(hook.id, &this.worker, until).await {
                            Ok(true) => {
                                let me = Arc::clone(&this);
                                let id = hook.id;
                                tasks.insert(id, tokio::spawn(async move { me.serve(id).await }));
                            }
                            Ok(false) => {}
                            Err(err) => {
                                tracing::warn!(%err, webhook = hook.id, "cannot take a webhook")
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(%err, "cannot read the webhooks"),
            }
            let at = now();
            if at - last_prune >= 60 {
                last_prune = at;
                match self_prune(&this.store, at).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(events = n, "delivered events pruned from the outbox"),
                    Err(err) => tracing::warn!(%err, "cannot prune the outbox"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SCAN_EVERY) => {}
                _ = this.outbox.changed.notified() => {}
            }
        }
    }

    /// Delivers webhook `id` while this process holds it.
    async fn serve(&self, id: i64) {
        match self.serve_until_stopped(id).await {
            Stop::Gone => {}
            Stop::Store(err) => {
                tracing::warn!(%err, webhook = id, "webhook delivery paused: the store failed");
                let _ = self.store.release_webhook(id, &self.worker).await;
            }
        }
    }

    async fn serve_until_stopped(&self, id: i64) -> Stop {
        // Claimed by the dispatcher just before.
        let mut held_until = now() + HOLD_SECS;
        loop {
            match self.step(id, &mut held_until).await {
                Ok(true) => {}
                Ok(false) => {
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_WAIT) => {}
                        _ = self.outbox.added.notified() => {}
                    }
                }
                Err(stop) => return stop,
            }
        }
    }

    /// One step of webhook `id`: a request tried, or nothing to do (false).
    async fn step(&self, id: i64, held_until: &mut i64) -> Result<bool, Stop> {
        let at = now();
        if *held_until - at < HOLD_SECS / 2 {
            // Renewed while half its time is left (one write, not one per
            // request).
            let until = at + HOLD_SECS;
            if !self.store.claim_webhook(id, &self.worker, until).await? {
                return Err(Stop::Gone);
            }
            *held_until = until;
        }
        let Some(hook) = self.store.webhook(id).await? else {
            return Err(Stop::Gone);
        };
        if hook.state != "active" {
            return Err(Stop::Gone);
        }
        if hook.next_attempt_at > at {
            let wait = Duration::from_secs(u64::try_from(hook.next_attempt_at - at).unwrap_or(0));
            tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
            return Ok(true);
        }
        let limit = if hook.batch > 0 {
            hook.batch
        } else {
            UNBATCHED
        };
        let from = hook.next;
        let (rows, end) = match hook.pend {
            Some(end) => {
                // A retry: the same events as the first try.
                let through = if end.part > 0 { end.row } else { end.row - 1 };
                let (rows, _) = self.store.webhook_rows(&hook, from, through, limit).await?;
                (rows, end)
            }
            None => {
                let last = self.store.last_event_id().await?;
                if last < from.row {
                    return Ok(false);
                }
                let (rows, exhausted) = self.store.webhook_rows(&hook, from, last, limit).await?;
                let exhausted = exhausted.then_some(last);
                let (items, end) = body::take(&rows, from, limit as usize, exhausted);
                if items.is_empty() {
                    // Nothing of its types (or campaigns) among them.
                    self.store.webhook_skip(id, &self.worker, end).await?;
                    return Ok(true);
                }
                if !self.store.webhook_pend(id, &self.worker, end).await? {
                    return Err(Stop::Gone);
                }
                (rows, end)
            }
        };
        let items = body::between(&rows, from, end);
        if items.is_empty() {
            // Its rows were pruned or edited away: nothing to send.
            self.store
                .webhook_tried(
                    id,
                    &self.worker,
                    end,
                    &Tried::Delivered { events: 0 },
                    hook.last_status,
                    None,
                    at,
                )
                .await?;
            return Ok(true);
        }
        self.send(&hook, end, &items).await?;
        Ok(true)
    }

    /// POSTs `items` (the request ending at `end`) and records the outcome.
    async fn send(&self, hook: &Webhook, end: Pos, items: &[body::Item<'_>]) -> Result<(), Stop> {
        let batched = hook.batch > 0;
        let at = now();
        let from = hook.next;
        let msg_id = match (batched, items.first()) {
            (false, Some(e)) => e.id(),
            _ => format!(
                "msg_{}_{}.{}_{}.{}",
                hook.id, from.row, from.part, end.row, end.part
            ),
        };
        let payload = body::body(items, batched);
        let signer = match Signer::new(&hook.secret) {
            Ok(s) => s,
            Err(why) => {
                // Only an edited database gets here: the API and the
                // configuration check secrets.
                let error = format!("the stored secret is not usable: {why}");
                tracing::error!(webhook = hook.id, "{error}");
                let next = now() + policy::backoff(hook.attempts + 1);
                self.store
                    .webhook_tried(
                        hook.id,
                        &self.worker,
                        end,
                        &Tried::Retry { next_at: next },
                        None,
                        Some(&error),
                        at,
                    )
                    .await?;
                return Ok(());
            }
        };
        let signature = signer.sign(&msg_id, at, payload.as_bytes());
        let n = items.len() as i64;
        let answer = self
            .client
            .post(&hook.url)
            .timeout(Duration::from_millis(
                u64::try_from(hook.timeout_ms).unwrap_or(10_000),
            ))
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", at.to_string())
            .header("webhook-signature", signature)
            .body(payload)
            .send()
            .await;
        let (status, error) = match answer {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    (Some(status.as_u16()), None)
                } else {
                    let text = response.text().await.unwrap_or_default();
                    let mut error = format!("answered {status}");
                    if status.is_redirection() {
                        error.push_str(": redirects are not followed; configure the final URL");
                    }
                    let text = text.trim();
                    if !text.is_empty() {
                        let cut: String = text.chars().take(200).collect();
                        error.push_str(&format!(": {cut}"));
                    }
                    (Some(status.as_u16()), Some(error))
                }
            }
            Err(e) => (None, Some(describe(&e))),
        };
        let done = now();
        let v = verdict(
            status,
            hook.attempts,
            hook.failing_since,
            done,
            hook.retry_for,
        );
        let tried = match v {
            Verdict::Delivered => Tried::Delivered { events: n },
            Verdict::Disable => Tried::Disabled,
            Verdict::Retry(next_at) => Tried::Retry { next_at },
            Verdict::GiveUp => Tried::GaveUp { events: n },
        };
        match &tried {
            Tried::Delivered { .. } => {
                tracing::debug!(webhook = hook.id, events = n, id = %msg_id, "webhook delivered")
            }
            Tried::Retry { next_at } => tracing::warn!(
                webhook = hook.id, url = %hook.url, events = n, error = error.as_deref().unwrap_or(""),
                retry_in_secs = next_at - done, "webhook request failed"
            ),
            Tried::GaveUp { .. } => tracing::error!(
                webhook = hook.id, url = %hook.url, events = n, error = error.as_deref().unwrap_or(""),
                "webhook request failed for its whole retry time: its events are given up"
            ),
            Tried::Disabled => tracing::warn!(
                webhook = hook.id, url = %hook.url,
                "webhook endpoint answered 410 Gone: the webhook is disabled"
            ),
        }
        self.store
            .webhook_tried(
                hook.id,
                &self.worker,
                end,
                &tried,
                status.map(i64::from),
                error.as_deref(),
                done,
            )
            .await?;
        Ok(())
    }
}

/// One line for a request that got no answer.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "no answer within the timeout".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Deletes the delivery events every active webhook has passed, once older
/// than [`KEEP_DELIVERY_EVENTS_SECS`].
async fn self_prune(store: &Store, at: i64) -> Result<u64, StoreError> {
    store
        .prune_events(&DELIVERY, at - KEEP_DELIVERY_EVENTS_SECS)
        .await
}
