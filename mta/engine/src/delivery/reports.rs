//! Delivery status notifications for relayed mail (RFC 3464): at the end of a
//! round, every relayed message with recipients that bounced or expired in it
//! gets a report to its envelope sender, queued as a message of its own from
//! the null sender; so do recipients still deferred past `[bounce]
//! delay_warning` (once each) and, with `NOTIFY=SUCCESS`, delivered ones. One
//! report per batch and kind (failures, delays, deliveries). Never for campaign
//! mail (campaigns report through the log and VERP), never to the null sender,
//! never for what a recipient's `NOTIFY` leaves out; `ORCPT`, `ENVID` and `RET`
//! as received.
//!
//! Reported recipients are marked in their slots ([`REPORTED`]); the next round
//! reports the final ones left unmarked (a crash before the round's end, a
//! report that could not be queued), and a relayed batch is completed only once
//! all are marked. Delay warnings are not made again after a crash.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use volley_merge::report::{Action, Recipient, Report};
use volley_merge::source::MessageSource;
use volley_queue::ids::is_inbound_id;
use volley_queue::slot::mark;
use volley_queue::{BatchView, Slot, State};
use volley_smtp::dsn::{Notify, Ret};

use crate::delivery::feed::LiveBatch;
use crate::delivery::work::Item;

/// Where reports go: queued as new relayed messages (the binary passes its
/// spool deposit).
pub trait ReportSink: Send + Sync {
    /// Queues `message` from the null sender to `to`; `Err` says why not.
    fn queue(&self, to: &str, message: &[u8]) -> Result<(), String>;
}

/// The merge fields of a relayed message's batches: what its sender asked to be
/// told of each recipient (RFC 3461 `NOTIFY` and `ORCPT`, and the message's
/// `RET` and `ENVID`; the deposit writes them). A value is empty when it was
/// not given.
pub const DSN_FIELDS: [&str; 4] = [NOTIFY, ORCPT, RET, ENVID];
const NOTIFY: &str = "dsn_notify";
const ORCPT: &str = "dsn_orcpt";
const RET: &str = "dsn_ret";
const ENVID: &str = "dsn_envid";

/// What happened to a relayed message's recipient, as its report needs it.
#[derive(Debug)]
pub struct RelayedOutcome {
    /// Its batch.
    pub batch: Arc<LiveBatch>,
    /// Its index in the batch.
    pub index: u32,
    /// Bounced, expired, delayed or delivered.
    pub action: Action,
    /// The enhanced status code reported (`4.4.7` when it expired).
    pub status: String,
    /// The reply (`550 5.1.1 ...`) or the local reason.
    pub diagnostic: String,
    /// The host that answered ("" when none did).
    pub mx: String,
}

/// Whether a deferral at `now` of a recipient queued at `queued_at`, next tried
/// at `next_attempt`, is the one that warns of its delay: the one whose next
/// attempt falls at or past `queued_at + delay_warning` (or the first attempt,
/// when that is already past). Once per recipient, with nothing stored.
pub fn crosses_delay_warning(
    queued_at: u64,
    delay_warning: u64,
    attempts: u32,
    now: u64,
    next_attempt: u64,
) -> bool {
    let threshold = queued_at.saturating_add(delay_warning);
    delay_warning > 0 && next_attempt >= threshold && (now < threshold || attempts == 1)
}

/// The `NOTIFY` a relayed recipient was given (`None` when not given).
pub fn notify_of(item: &Item) -> Option<Notify> {
    Notify::parse(&dsn_value(&item.batch.map.view(), item.index, NOTIFY))
}

/// The DSN field `name` ([`DSN_FIELDS`]) of recipient `index` of `view`; ""
/// when the batch has no such field.
fn dsn_value(view: &BatchView<'_>, index: u32, name: &str) -> String {
    view.field_names_iter()
        .position(|n| n == name)
        .and_then(|field| view.recipient(index as usize)?.values().nth(field))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Makes and queues the reports of `outcomes` (those their recipients' `NOTIFY`
/// asks for); answers how many were queued.
/// `host` is the reporting host's name; `unique` distinguishes the reports of
/// one process.
pub fn send(
    outcomes: Vec<RelayedOutcome>,
    source: &dyn MessageSource,
    sink: &dyn ReportSink,
    host: &str,
    now: u64,
    unique: &mut u64,
) -> usize {
    // One report per batch and kind: failures, delays and deliveries apart.
    let mut by_batch: HashMap<(u64, u64, u8), Vec<RelayedOutcome>> = HashMap::new();
    for f in outcomes {
        let header = f.batch.map.header();
        let kind = match f.action {
            Action::Failed | Action::Expired => 0,
            Action::Delayed => 1,
            Action::Delivered => 2,
        };
        let key = (header.campaign_id, header.batch_id, kind);
        by_batch.entry(key).or_default().push(f);
    }
    let mut sent = 0;
    for (_, group) in by_batch {
        match report_batch(&group, source, sink, host, now, unique) {
            Ok(queued) => {
                sent += usize::from(queued);
                mark_reported(&group);
            }
            // Left unmarked: the next round's scan finds them again.
            Err(err) => tracing::error!(%err, "cannot queue a delivery status notification"),
        }
    }
    sent
}

/// Marks the final recipients of `group` as reported on (their slots'
/// `next_attempt`, unused once a recipient is final, becomes [`REPORTED`]), so
/// that a restart does not report them again and a batch is only completed
/// once they are.
fn mark_reported(group: &[RelayedOutcome]) {
    for f in group {
        let index = f.index as usize;
        if let Ok(slot) = f.batch.map.slot(index) {
            if slot.state.is_final() && slot.next_attempt != REPORTED {
                let _ = f.batch.map.set_slot(
                    index,
                    Slot {
                        next_attempt: REPORTED,
                        ..slot
                    },
                );
            }
        }
    }
}

/// The `next_attempt` of a final relayed recipient whose outcome was reported
/// on (or needed no report): final slots otherwise keep 0 there, or another
/// [`volley_queue::slot::mark`].
pub use volley_queue::slot::mark::REPORTED;

/// The final recipients of a relayed `batch` whose outcome was never reported
/// on (a crash came between the recording and the end of the round, or the
/// report could not be queued): failures, and deliveries that `NOTIFY=SUCCESS`
/// asked to hear of. The reply's text did not survive; the code did.
pub fn unreported(batch: &Arc<LiveBatch>) -> Vec<RelayedOutcome> {
    let map = &batch.map;
    if !is_inbound_id(map.header().campaign_id) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for index in 0..map.len() {
        let Ok(slot) = map.slot(index) else { continue };
        if slot.next_attempt == REPORTED {
            continue;
        }
        let item = Item {
            batch: Arc::clone(batch),
            index: index as u32,
        };
        let action = match slot.state {
            // Suppressed: never sent, nothing to report.
            State::Bounced if slot.next_attempt == mark::SUPPRESSED => continue,
            State::Bounced => Action::Failed,
            State::Expired => Action::Expired,
            State::Delivered if notify_of(&item).is_some_and(|n| n.success) => Action::Delivered,
            _ => continue,
        };
        let status = match action {
            Action::Expired => "4.4.7",
            Action::Delivered => "2.0.0",
            _ if slot.code >= 500 => "5.0.0",
            _ => "4.0.0",
        };
        out.push(RelayedOutcome {
            batch: Arc::clone(batch),
            index: index as u32,
            action,
            status: status.to_owned(),
            diagnostic: format!(
                "{} (the rest of the reply was lost in a restart)",
                slot.code
            ),
            mx: String::new(),
        });
    }
    out
}

/// Makes and queues the report of one batch's `group` of outcomes (of one
/// kind): `Ok(true)` queued, `Ok(false)` none needed (the null sender, or
/// nothing `NOTIFY` asks for).
fn report_batch(
    group: &[RelayedOutcome],
    source: &dyn MessageSource,
    sink: &dyn ReportSink,
    host: &str,
    now: u64,
    unique: &mut u64,
) -> Result<bool, String> {
    let failed = group;
    let Some(first) = failed.first() else {
        return Ok(false);
    };
    let batch = Arc::clone(&first.batch);
    let view = batch.map.view();
    let index = first.index as usize;
    let sender = source.envelope_from(&view, index).unwrap_or_default();
    if sender.is_empty() {
        return Ok(false);
    }
    let mut original = BytesMut::new();
    if let Err(err) = source.render(&view, index, &mut original) {
        tracing::warn!(%err, batch = %batch.map.path().display(), "cannot read a failed message back for its report");
    }
    let addresses: Vec<String> = failed
        .iter()
        .map(|f| {
            view.recipient(f.index as usize)
                .map(|r| r.address())
                .unwrap_or_default()
        })
        .collect();
    let originals: Vec<String> = failed
        .iter()
        .map(|f| dsn_value(&view, f.index, ORCPT))
        .collect();
    let wanted: Vec<bool> = failed
        .iter()
        .map(|f| wanted(f.action, Notify::parse(&dsn_value(&view, f.index, NOTIFY))))
        .collect();
    let entries: Vec<Recipient<'_>> = failed
        .iter()
        .enumerate()
        .filter(|(i, _)| wanted[*i])
        .map(|(i, f)| Recipient {
            recipient: &addresses[i],
            original: Some(originals[i].as_str()).filter(|o| !o.is_empty()),
            status: &f.status,
            diagnostic: &f.diagnostic,
            remote_mta: Some(f.mx.as_str()).filter(|m| !m.is_empty()),
            action: f.action,
        })
        .collect();
    if entries.is_empty() {
        return Ok(false);
    }
    let envid = dsn_value(&view, first.index, ENVID);
    let ret = Ret::parse(&dsn_value(&view, first.index, RET));
    *unique += 1;
    let report = Report {
        host,
        to: &sender,
        envid: Some(envid.as_str()).filter(|e| !e.is_empty()),
        arrival: view.header().created_at,
        now,
        unique: *unique ^ now.rotate_left(20),
        ret,
        recipients: &entries,
        original: &original,
    };
    sink.queue(&sender, &report.write())
        .map_err(|err| format!("to {sender}: {err}"))?;
    tracing::info!(to = %sender, recipients = entries.len(), "delivery status notification queued");
    Ok(true)
}

/// Whether a recipient given `notify` (`None`: not given) wants `action`
/// reported: failures unless `NOTIFY` leaves them out, delays likewise,
/// deliveries only when asked.
pub fn wanted(action: Action, notify: Option<Notify>) -> bool {
    match action {
        Action::Failed | Action::Expired => notify.is_none_or(|n| n.failure),
        Action::Delayed => notify.is_none_or(|n| n.delay),
        Action::Delivered => notify.is_some_and(|n| n.success),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_warned_of_once() {
        // Queued at 0, warning after 100; (attempts, now, next attempt).
        let table = [
            (1, 10, 40, false),
            (2, 40, 90, false),
            (3, 90, 150, true),
            (4, 150, 250, false),
            (1, 200, 260, true),
            (5, 99, 100, true),
        ];
        for (attempts, now, next, warn) in table {
            assert_eq!(
                crosses_delay_warning(0, 100, attempts, now, next),
                warn,
                "{attempts} {now} {next}"
            );
        }
        assert!(
            !crosses_delay_warning(0, 0, 1, 10, 1000),
            "0 turns warnings off"
        );
    }

    #[test]
    fn what_notify_asks_for() {
        let table = [
            (Action::Failed, None, true),
            (Action::Expired, Some("NEVER"), false),
            (Action::Failed, Some("DELAY"), false),
            (Action::Failed, Some("FAILURE"), true),
            (Action::Delayed, None, true),
            (Action::Delayed, Some("FAILURE"), false),
            (Action::Delayed, Some("DELAY,FAILURE"), true),
            (Action::Delivered, None, false),
            (Action::Delivered, Some("SUCCESS"), true),
        ];
        for (action, notify, expected) in table {
            let notify = notify.map(|n| Notify::parse(n).unwrap());
            assert_eq!(wanted(action, notify), expected, "{action:?} {notify:?}");
        }
    }
}
