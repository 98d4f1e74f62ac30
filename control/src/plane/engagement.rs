//! What the web endpoints ask of the plane: whose link a token is (the
//! recipient's address, from the batch's outcomes, its file in the spool or
//! its published bytes), and recording an unsubscribe, a click or an open.

use volley_queue::{BatchView, Spool};

use super::{Plane, PlaneError};
use crate::store::campaigns::Campaign;
use crate::store::engagements::{Engagement, Who};
use crate::suppress::Reason;

/// Where what recipients do over the web links is logged besides the store
/// and the process log: `volley run` writes it to the delivery log, beside
/// the bounces and complaints.
pub trait EngagementLog: Send + Sync + 'static {
    /// `status` is `unsubscribed`, `clicked` or `opened`; `link` the tracked
    /// link of a click.
    fn engaged(&self, r: &LinkRecipient, status: &'static str, link: Option<i64>);
}

/// The recipient a link names.
#[derive(Debug, Clone)]
pub struct LinkRecipient {
    /// Its campaign.
    pub campaign: Campaign,
    /// Which recipient.
    pub who: Who,
    /// Its address.
    pub email: String,
}

impl Plane {
    /// Logs every engagement to `log` too (set once; later calls are ignored).
    pub fn set_engagement_log(&self, log: std::sync::Arc<dyn EngagementLog>) {
        let _ = self.engagement_log.set(log);
    }

    /// The recipient `who` names, if the campaign and recipient exist.
    pub async fn link_recipient(&self, who: Who) -> Result<Option<LinkRecipient>, PlaneError> {
        let Some(campaign) = self.store.campaign(who.campaign).await? else {
            return Ok(None);
        };
        let found = |email: String| {
            Ok(Some(LinkRecipient {
                campaign: campaign.clone(),
                who,
                email,
            }))
        };
        let done = self
            .store
            .final_recipients(who.campaign, who.batch, who.idx, None, 1)
            .await?;
        if let Some(r) = done.into_iter().next().filter(|r| r.idx == who.idx) {
            return found(r.email);
        }
        let name = Spool::file_name(who.campaign as u64, who.batch as u64);
        if let Some(path) = self.spool.find(&name) {
            if let Ok(bytes) = tokio::fs::read(path).await {
                if let Some(email) = address_in(&bytes, who.idx) {
                    return found(email);
                }
            }
        }
        if let Some(bytes) = self.store.batch_file(who.campaign, who.batch).await? {
            if let Some(email) = address_in(&bytes, who.idx) {
                return found(email);
            }
        }
        Ok(None)
    }

    /// Unsubscribes a link's recipient: suppressed for the campaign's sending
    /// domain, out of the campaign's list (if it had one), recorded once (with
    /// its `message.unsubscribed` event). Repeating it changes nothing. True
    /// the first time.
    pub async fn unsubscribe(&self, r: &LinkRecipient) -> Result<bool, PlaneError> {
        let at = crate::store::now() as u64;
        let domain = r.campaign.sender_domain.clone();
        let email = r.email.clone();
        let detail = format!("one-click, campaign {}", r.campaign.id);
        let list = std::sync::Arc::clone(self.suppressions());
        tokio::task::spawn_blocking(move || {
            list.write(|l| l.add(&email, &domain, &Reason::Unsubscribe, Some(&detail), at))
        })
        .await
        .map_err(|e| PlaneError::Internal(e.to_string()))?
        .map_err(|e| PlaneError::Internal(format!("cannot record the unsubscribe: {e}")))?;
        self.leave_list(r.campaign.id, &r.email).await?;
        self.record(r, Engagement::Unsubscribed, 0).await
    }

    /// Records a click on tracked link `link` (once per recipient and link)
    /// and answers the URL to redirect to; `None` when the campaign has no such
    /// link.
    pub async fn click(&self, r: &LinkRecipient, link: i64) -> Result<Option<String>, PlaneError> {
        let Some(url) = self.store.link_url(r.campaign.id, link).await? else {
            return Ok(None);
        };
        self.record(r, Engagement::Clicked, link).await?;
        Ok(Some(url))
    }

    /// Records what the inbound listener verified about a recipient (a
    /// complaint or an unsubscribe request by mail; its suppression is the
    /// listener's): counted once, with its event. Not logged again (the
    /// delivery log has it).
    pub async fn reported(
        &self,
        who: Who,
        email: &str,
        what: Engagement,
    ) -> Result<bool, PlaneError> {
        if matches!(what, Engagement::Unsubscribed | Engagement::Complained) {
            self.leave_list(who.campaign, email).await?;
        }
        let data = serde_json::json!({
            "campaign": who.campaign,
            "batch": who.batch,
            "index": who.idx,
            "recipient": email,
        });
        Ok(self
            .store
            .record_engagement(who, what, 0, email, &data)
            .await?)
    }

    /// Records an open (once per recipient).
    pub async fn open(&self, r: &LinkRecipient) -> Result<bool, PlaneError> {
        self.record(r, Engagement::Opened, 0).await
    }

    async fn record(
        &self,
        r: &LinkRecipient,
        what: Engagement,
        link: i64,
    ) -> Result<bool, PlaneError> {
        let mut data = serde_json::json!({
            "campaign": r.campaign.id,
            "batch": r.who.batch,
            "index": r.who.idx,
            "recipient": r.email,
        });
        match what {
            Engagement::Clicked => data["link"] = link.into(),
            Engagement::Opened => data["unreliable"] = true.into(),
            Engagement::Unsubscribed | Engagement::Complained | Engagement::Replied => {}
        }
        let new = self
            .store
            .record_engagement(r.who, what, link, &r.email, &data)
            .await?;
        if new {
            if let Some(log) = self.engagement_log.get() {
                log.engaged(
                    r,
                    what.name(),
                    (what == Engagement::Clicked).then_some(link),
                );
            }
            tracing::info!(
                campaign = r.campaign.id,
                batch = r.who.batch,
                recipient = %r.email,
                link = (what == Engagement::Clicked).then_some(link),
                "{}",
                what.name()
            );
        }
        Ok(new)
    }
}

/// The address of recipient `idx` in a batch file's bytes.
fn address_in(bytes: &[u8], idx: i64) -> Option<String> {
    let view = BatchView::parse(bytes).ok()?;
    view.recipient(usize::try_from(idx).ok()?)
        .map(|r| r.address())
}
