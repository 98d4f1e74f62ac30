//! Subscribe requests from the public form (the design's D role): buffered in
//! the store, mailed a confirmation link in bulk (one small campaign per list
//! and step, through the same delivery as any campaign: on one node or a
//! fleet), and applied to their list in bulk once confirmed (double opt-in).
//! A burst of signups is a burst of rows, never of work on the delivery path.
//!
//! Bounds: a client address makes at most [`PER_CLIENT`] requests an hour (then
//! `429`), and an address gets at most [`PER_ADDRESS`] confirmation messages an
//! hour per list (more requests are answered alike and dropped: the form
//! cannot be used to mail-bomb someone, nor to learn who is subscribed).

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use volley_queue::link::{LinkKind, LinkSigner, LinkTarget};

use super::submit::{JsonRecipient, Recipients, Submission};
use super::{Plane, PlaneError};
use crate::store::lists::List;
use crate::store::now;
use crate::suppress::{normalize, Reason};

/// Requests a client address may make in an hour.
pub const PER_CLIENT: i64 = 10;

/// Confirmation messages an address gets per list in an hour.
pub const PER_ADDRESS: i64 = 2;

/// Longest form value kept.
const MAX_VALUE: usize = 500;

/// Requests handled per step.
const STEP: i64 = 5_000;

/// How long a claim on requests lasts before another process may take them.
const CLAIM_SECS: i64 = 120;

/// What became of a form's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Recorded: a confirmation message follows.
    Queued,
    /// Dropped (this address had its confirmations this hour); answered as
    /// if queued.
    Dropped,
    /// This client made too many requests (`429`).
    TooMany,
}

/// Makes the confirmation links: `BASE/s/confirm/TOKEN`, the token naming
/// the list and the request.
#[derive(Debug, Clone)]
pub struct ConfirmLinks {
    /// The signer of every web link.
    pub signer: Arc<LinkSigner>,
    /// `[web] base_url`.
    pub base: String,
}

impl ConfirmLinks {
    /// The confirmation link of request `id` on `list`.
    pub fn url(&self, list: i64, id: i64) -> String {
        let target = LinkTarget {
            campaign: list as u64,
            batch: id as u64,
            index: 0,
            link: 0,
        };
        format!(
            "{}/{}/{}",
            self.base,
            LinkKind::Confirm.path(),
            self.signer.token(LinkKind::Confirm, target)
        )
    }
}

/// The confirmation message's template (sent from `from`).
fn confirmation(from: &str) -> Value {
    json!({
        "from": from,
        "subject": "Confirm your subscription to {{ list_name }}",
        "text": "Someone, hopefully you, asked to subscribe {{ email }} to {{ list_name }}.\n\n\
                 To confirm, open this link:\n\n{{ confirm_url }}\n\n\
                 If you did not ask for it, ignore this message: nothing more will be sent.\n",
        // A transactional message: no List-Unsubscribe, nothing tracked.
        "unsubscribe": false,
        "headers": {"Auto-Submitted": "auto-generated"},
    })
}

impl Plane {
    /// Records a subscribe request for list `id` from the form (`email` and
    /// the list's form fields), sent by `client`, within the bounds.
    pub async fn subscribe_request(
        &self,
        id: i64,
        email: &str,
        form: &Map<String, Value>,
        client: IpAddr,
    ) -> Result<Requested, PlaneError> {
        let list = self.list_for(id, None).await?;
        if list.from.is_none() {
            return Err(PlaneError::NotFound(format!(
                "list {id} has no subscribe form"
            )));
        }
        let email = email.trim();
        crate::address::check(email).map_err(|why| {
            PlaneError::BadRequest(format!("{email:?} is not an e-mail address: {why}"))
        })?;
        let email = normalize(email);
        let fields: Map<String, Value> = list
            .form_fields
            .iter()
            .filter_map(|name| {
                let v = form.get(name)?.as_str()?.trim();
                let v: String = v
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_VALUE)
                    .collect();
                (!v.is_empty()).then(|| (name.clone(), Value::String(v)))
            })
            .collect();
        let client = client.to_string();
        let (by_client, by_address) = self
            .store
            .recent_subscribe_requests(now() - 3600, &client, id, &email)
            .await?;
        if by_client >= PER_CLIENT {
            tracing::warn!(%client, list = id, "subscribe requests refused: too many from this client");
            return Ok(Requested::TooMany);
        }
        let dropped = by_address >= PER_ADDRESS;
        let request = self
            .store
            .add_subscribe_request(id, &email, &fields, &client, dropped)
            .await?;
        if dropped {
            tracing::info!(list = id, request, %client, "subscribe request dropped: the address had its confirmations this hour");
            return Ok(Requested::Dropped);
        }
        tracing::info!(list = id, request, %client, "subscribe request");
        Ok(Requested::Queued)
    }

    /// The request confirmation link `token` names, confirmed: its list and
    /// address (applied to the list with the next step). `None`: no such
    /// request.
    pub async fn confirm(&self, list: i64, id: i64) -> Result<Option<(List, String)>, PlaneError> {
        let Some(request) = self.store.subscribe_request(id).await? else {
            return Ok(None);
        };
        if request.list != list {
            return Ok(None);
        }
        let Some(found) = self.store.list(list).await? else {
            return Ok(None);
        };
        if self.store.confirm_subscribe_request(id).await? {
            tracing::info!(list, request = id, "subscription confirmed");
        }
        Ok(Some((found, request.email)))
    }

    /// One step of the subscription work, as `worker`: new requests get their
    /// confirmation messages (one campaign per list), confirmed ones join
    /// their list. Answers (requests mailed, members added).
    pub async fn subscriptions_step(
        self: &Arc<Self>,
        links: &ConfirmLinks,
        worker: &str,
    ) -> Result<(usize, usize), PlaneError> {
        let mut mailed = 0;
        let claimed = self
            .store
            .claim_subscribe_requests(worker, now() - CLAIM_SECS, STEP)
            .await?;
        let mut lists: Vec<i64> = claimed.iter().map(|r| r.list).collect();
        lists.sort_unstable();
        lists.dedup();
        for id in lists {
            let requests: Vec<_> = claimed.iter().filter(|r| r.list == id).collect();
            let ids: Vec<i64> = requests.iter().map(|r| r.id).collect();
            let Some(list) = self.store.list(id).await? else {
                continue;
            };
            let Some(from) = list.from.clone() else {
                continue;
            };
            let rows = requests
                .iter()
                .map(|r| {
                    let mut fields = Map::new();
                    fields.insert("confirm_url".into(), links.url(id, r.id).into());
                    fields.insert("list_name".into(), list.name.clone().into());
                    JsonRecipient {
                        email: r.email.clone(),
                        fields,
                    }
                })
                .collect();
            let (first, last) = (ids[0], ids[ids.len() - 1]);
            // A retry after a crash finds the same campaign.
            let key = format!("subscribe-confirmations-{id}-{first}-{last}");
            let sub = Submission {
                template: confirmation(&from),
                recipients: Recipients::Rows(rows),
                start_at: None,
                stop_at: None,
                batch_size: None,
                notify: Vec::new(),
                tags: vec!["subscribe-confirmations".into()],
                idempotency: Some((key.clone(), crate::store::tokens::hash(&key))),
                wait: false,
            };
            let submitted = self.submit(list.owner, sub).await?;
            self.store
                .subscribe_requests_sent(&ids, submitted.campaign.id)
                .await?;
            tracing::info!(
                list = id,
                requests = ids.len(),
                campaign = submitted.campaign.id,
                "subscribe confirmations queued"
            );
            mailed += ids.len();
        }
        let added = self.apply_confirmed().await?;
        Ok((mailed, added))
    }

    /// Confirmed requests into their lists, in bulk: subscribed again even if
    /// they had left (a confirmed opt-in wins), and an unsubscribe
    /// suppression for the list's sending domain lifted.
    async fn apply_confirmed(&self) -> Result<usize, PlaneError> {
        let confirmed = self.store.confirmed_subscribe_requests(STEP).await?;
        if confirmed.is_empty() {
            return Ok(0);
        }
        let mut lists: Vec<i64> = confirmed.iter().map(|r| r.list).collect();
        lists.sort_unstable();
        lists.dedup();
        for id in lists {
            let members: Vec<(String, Map<String, Value>)> = confirmed
                .iter()
                .filter(|r| r.list == id)
                .map(|r| (r.email.clone(), r.fields.clone()))
                .collect();
            if let Some(list) = self.store.list(id).await? {
                self.store.add_members(id, &members, true).await?;
                if let Some(domain) = list
                    .from
                    .as_deref()
                    .and_then(|f| f.rsplit_once('@'))
                    .map(|(_, d)| d.to_ascii_lowercase())
                {
                    let at = now() as u64;
                    let emails: Vec<String> = members.iter().map(|(e, _)| e.clone()).collect();
                    let shared = Arc::clone(self.suppressions());
                    tokio::task::spawn_blocking(move || {
                        shared.write(|store| {
                            for email in &emails {
                                let lift = store.is_suppressed(email, &domain).is_some_and(|e| {
                                    e.domain == domain && *e.reason == Reason::Unsubscribe
                                });
                                if lift {
                                    let _ = store.remove(email, Some(&domain), at);
                                }
                            }
                        })
                    })
                    .await
                    .map_err(|e| PlaneError::Internal(e.to_string()))?;
                }
                tracing::info!(
                    list = id,
                    members = members.len(),
                    "confirmed subscriptions applied"
                );
            }
        }
        let ids: Vec<i64> = confirmed.iter().map(|r| r.id).collect();
        self.store.subscribe_requests_applied(&ids).await?;
        Ok(confirmed.len())
    }
}
