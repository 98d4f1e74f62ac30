//! Delivery status notifications for relayed mail (RFC 3464): at the end of a
//! round, every relayed message with recipients that bounced or expired in it
//! gets one report per batch, to its envelope sender, queued as a message of
//! its own from the null sender. Never for campaign mail (campaigns report
//! through the log and VERP), never to the null sender, never for a recipient
//! whose `NOTIFY` leaves failures out; `ORCPT`, `ENVID` and `RET` as received.
//!
//! Not yet: delay warnings (`NOTIFY=DELAY`) and success reports
//! (`NOTIFY=SUCCESS`). A report lost to a crash between the recording of the
//! failure and the end of the round is not made again.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use volley_merge::report::{Failed, Report};
use volley_merge::source::MessageSource;
use volley_smtp::dsn::{Notify, Ret};

use crate::delivery::record::FailedRelayed;

/// Where reports go: queued as new relayed messages (the binary passes its
/// spool deposit).
pub trait ReportSink: Send + Sync {
    /// Queues `message` from the null sender to `to`; `Err` says why not.
    fn queue(&self, to: &str, message: &[u8]) -> Result<(), String>;
}

/// The merge fields of a relayed batch that hold its DSN parameters
/// (`volley_engine::deposit::DSN_FIELDS`).
const NOTIFY: &str = "dsn_notify";
const ORCPT: &str = "dsn_orcpt";
const RET: &str = "dsn_ret";
const ENVID: &str = "dsn_envid";

/// Makes and queues the reports of `failed`; answers how many were queued.
/// `host` is the reporting host's name; `unique` distinguishes the reports of
/// one process.
pub fn send(
    failed: Vec<FailedRelayed>,
    source: &dyn MessageSource,
    sink: &dyn ReportSink,
    host: &str,
    now: u64,
    unique: &mut u64,
) -> usize {
    let mut by_batch: HashMap<(u64, u64), Vec<FailedRelayed>> = HashMap::new();
    for f in failed {
        let header = f.batch.map.header();
        let key = (header.campaign_id, header.batch_id);
        by_batch.entry(key).or_default().push(f);
    }
    let mut sent = 0;
    for (_, failed) in by_batch {
        let Some(first) = failed.first() else {
            continue;
        };
        let batch = Arc::clone(&first.batch);
        let view = batch.map.view();
        let names = view.field_names();
        let at = |name: &str| names.iter().position(|n| *n == name);
        let value = |index: u32, field: Option<usize>| -> String {
            let Some(field) = field else {
                return String::new();
            };
            view.recipient(index as usize)
                .and_then(|r| r.values().nth(field))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let (notify_at, orcpt_at) = (at(NOTIFY), at(ORCPT));
        let index = first.index as usize;
        let sender = source.envelope_from(&view, index).unwrap_or_default();
        if sender.is_empty() {
            continue;
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
        let originals: Vec<String> = failed.iter().map(|f| value(f.index, orcpt_at)).collect();
        let wanted: Vec<bool> = failed
            .iter()
            .map(|f| {
                let notify = value(f.index, notify_at);
                notify.is_empty() || Notify::parse(&notify).is_some_and(|n| n.failure)
            })
            .collect();
        let entries: Vec<Failed<'_>> = failed
            .iter()
            .enumerate()
            .filter(|(i, _)| wanted[*i])
            .map(|(i, f)| Failed {
                recipient: &addresses[i],
                original: Some(originals[i].as_str()).filter(|o| !o.is_empty()),
                status: &f.status,
                diagnostic: &f.diagnostic,
                remote_mta: Some(f.mx.as_str()).filter(|m| !m.is_empty()),
                expired: f.expired,
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        let envid = value(first.index, at(ENVID));
        let ret = Ret::parse(&value(first.index, at(RET)));
        *unique += 1;
        let report = Report {
            host,
            to: &sender,
            envid: Some(envid.as_str()).filter(|e| !e.is_empty()),
            arrival: view.header().created_at,
            now,
            unique: *unique ^ now.rotate_left(20),
            ret,
            failed: &entries,
            original: &original,
        };
        match sink.queue(&sender, &report.write()) {
            Ok(()) => {
                sent += 1;
                tracing::info!(to = %sender, recipients = entries.len(), "delivery status notification queued");
            }
            Err(err) => {
                tracing::error!(to = %sender, %err, "cannot queue a delivery status notification")
            }
        }
    }
    sent
}
