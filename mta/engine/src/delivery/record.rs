//! Recording attempts: the state slot, the delivery log and the run's counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use volley_conf::RetryConfig;
use volley_queue::{QueueError, Slot, State};

use crate::delivery::feed::Reply;
use crate::delivery::reports::{crosses_delay_warning, notify_of, RelayedOutcome};
use crate::delivery::work::Item;
use crate::host::unix_now;
use crate::log::{timestamp, DeliveryLog, LogEvent};
use crate::outcome::{decide, Outcome, Verdict};
use volley_merge::report::Action;
use volley_queue::ids::is_inbound_id;

/// Where an attempt went: for the log.
#[derive(Debug, Clone, Default)]
pub struct Via {
    /// MX (or smarthost) name.
    pub mx: String,
    /// Address connected to, as logged ("" when none): made once per
    /// connection, not per logged attempt.
    pub ip: String,
    /// Whether TLS was in use.
    pub tls: bool,
}

/// What answered an attempt.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    /// SMTP reply code, 0 when there was no reply (DNS, render failure).
    pub code: u16,
    /// Enhanced status code ("5.1.1") or "".
    pub enhanced: &'a str,
    /// Enhanced status subject (the "1" of 5.1.1), for bounce classes.
    pub subject: Option<u16>,
    /// Reply text or local reason.
    pub text: &'a str,
    /// Whose failure it was (the log's `level`).
    pub level: Level,
}

/// Whose answer an attempt got, logged as `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The recipient's own (a reply to its RCPT or its message).
    Recipient,
    /// The connection's, the site's or DNS's.
    Connection,
    /// This host's: the message could not be made or signed here (a file that
    /// could not be read, a signing failure).
    Local,
}

impl Level {
    /// The name logged.
    pub fn name(self) -> &'static str {
        match self {
            Level::Recipient => "recipient",
            Level::Connection => "connection",
            Level::Local => "local",
        }
    }
}

/// Counts of outcomes over a run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Recipients delivered.
    pub delivered: AtomicU64,
    /// Recipients deferred.
    pub deferred: AtomicU64,
    /// Recipients bounced.
    pub bounced: AtomicU64,
    /// Recipients expired.
    pub expired: AtomicU64,
    /// Recipients finalised unsent because they are on the suppression list.
    pub suppressed: AtomicU64,
}

/// Applies outcomes: one slot store and one log line per attempt.
#[derive(Debug)]
pub struct Recorder {
    /// The delivery log (shared with the inbound processing, which appends its
    /// events to the same file).
    pub log: Arc<DeliveryLog>,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Outcome counts.
    pub counters: Counters,
    /// `[queue] sync_interval = "0s"`: each slot update is msynced at once.
    pub sync_each: bool,
    /// Whether the last flush of state slots to disk succeeded. While it has
    /// not, no new transaction starts ([`Recorder::durable`]).
    pub flushed: AtomicBool,
    /// `[bounce] delay_warning` in seconds (0: no delay warnings).
    pub delay_warning: u64,
    /// Outcomes of relayed messages' recipients to report to their senders,
    /// since the last [`Recorder::take_relayed_reports`].
    pub relayed_reports: Mutex<Vec<RelayedOutcome>>,
}

impl Recorder {
    /// Adds outcomes found unreported (left by an earlier run) to those to
    /// report at the end of the round.
    pub fn note_unreported(&self, outcomes: Vec<RelayedOutcome>) {
        self.relayed_reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(outcomes);
    }

    /// The relayed recipients' outcomes to report, since the last call.
    pub fn take_relayed_reports(&self) -> Vec<RelayedOutcome> {
        std::mem::take(
            &mut *self
                .relayed_reports
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Whether recorded state reaches the disk: false after a failed msync,
    /// until one succeeds. New work waits meanwhile.
    pub fn durable(&self) -> bool {
        self.flushed.load(Ordering::Relaxed)
    }

    /// Notes the result of flushing state slots to disk; a failure is logged as
    /// an error (each time it starts failing) and holds new work back.
    pub fn flush_result(&self, result: &Result<(), QueueError>) {
        match result {
            Ok(()) => {
                if !self.flushed.swap(true, Ordering::Relaxed) {
                    tracing::info!("state slots are reaching the disk again: delivery resumes");
                }
            }
            Err(err) => {
                if self.flushed.swap(false, Ordering::Relaxed) {
                    tracing::error!(%err, "cannot flush state slots to disk: no new transactions until it works again");
                }
            }
        }
    }

    /// Keeps what the report of a relayed recipient's outcome needs.
    fn note_relayed(&self, item: &Item, action: Action, answer: &Answer<'_>, via: &Via) {
        let status = match (action, answer.enhanced) {
            (Action::Expired, _) => "4.4.7".to_owned(),
            (Action::Delivered, "") => "2.0.0".to_owned(),
            (Action::Delayed, "") => "4.0.0".to_owned(),
            (_, "") if answer.code >= 500 => format!("5.{}.0", answer.subject.unwrap_or(0)),
            (_, "") => "5.0.0".to_owned(),
            (_, enhanced) => enhanced.to_owned(),
        };
        let diagnostic = match (answer.code, answer.enhanced) {
            (0, _) => answer.text.to_owned(),
            (code, "") => format!("{code} {}", answer.text),
            (code, enhanced) => format!("{code} {enhanced} {}", answer.text),
        };
        self.relayed_reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(RelayedOutcome {
                batch: Arc::clone(&item.batch),
                index: item.index,
                action,
                status,
                diagnostic,
                mx: via.mx.clone(),
            });
    }

    /// Marks a recipient as handed to a transaction: if volley dies before the
    /// reply is recorded, this recipient is the one that may be sent twice.
    pub fn mark_in_flight(&self, item: &Item) {
        Self::restate(item, State::InFlight);
    }

    /// Undoes [`Recorder::mark_in_flight`] for a recipient the server did not
    /// take in this transaction but that is to be sent again at once (one
    /// recipient too many): pending again, its attempts and other fields
    /// unchanged.
    pub fn not_sent(&self, item: &Item) {
        Self::restate(item, State::Pending);
    }

    /// Sets a recipient's state, its other slot fields unchanged.
    fn restate(item: &Item, state: State) {
        let index = item.index as usize;
        if let Ok(slot) = item.batch.map.slot(index) {
            let _ = item.batch.map.set_slot(index, Slot { state, ..slot });
        }
    }

    /// Finalises a recipient found on the suppression list without sending to it:
    /// its slot becomes bounced with code 0, marked [`volley_queue::slot::mark::SUPPRESSED`],
    /// its attempts unchanged, and the log
    /// gets a `suppressed` line (`attempt` is the attempts made before, 0 if none).
    pub fn suppressed(&self, item: &Item, recipient: &str) {
        let map = &item.batch.map;
        let index = item.index as usize;
        let header = map.header();
        let slot = map.slot(index).unwrap_or(Slot::PENDING);
        let stored = map.set_slot(
            index,
            Slot {
                state: State::Bounced,
                attempts: slot.attempts,
                code: 0,
                next_attempt: volley_queue::slot::mark::SUPPRESSED,
            },
        );
        if let Err(err) = stored {
            tracing::error!(%err, "cannot record a suppressed recipient");
        }
        self.counters.suppressed.fetch_add(1, Ordering::Relaxed);

        let event = LogEvent {
            ts: timestamp(SystemTime::now()),
            campaign: header.campaign_id,
            batch: header.batch_id,
            recipient,
            status: "suppressed",
            code: 0,
            enhanced: "",
            reply: "on the suppression list: not sent",
            mx: "",
            ip: "",
            tls: false,
            attempt: u32::from(slot.attempts),
            latency_ms: 0,
            level: "recipient",
            class: None,
            next_attempt: None,
        };
        if let Err(err) = self.log.write(&event) {
            tracing::error!(%err, log = %self.log.path().display(), "cannot write the delivery log");
        }
    }

    /// Records the attempt's outcome for one recipient (whose address is
    /// `recipient`) and returns it.
    pub fn record(
        &self,
        item: &Item,
        recipient: &str,
        verdict: Verdict,
        answer: &Answer<'_>,
        via: &Via,
        started: Instant,
    ) -> Outcome {
        let map = &item.batch.map;
        let index = item.index as usize;
        let header = map.header();
        let slot = map.slot(index).unwrap_or(Slot::PENDING);
        let attempts = u32::from(slot.attempts) + 1;
        let now = unix_now();
        let outcome = decide(verdict, attempts, header.created_at, now, &self.retry);
        let (state, next_attempt) = match outcome {
            Outcome::Delivered => (State::Delivered, 0),
            Outcome::Deferred { next_attempt } => (State::Deferred, next_attempt),
            Outcome::Bounced(_) => (State::Bounced, 0),
            Outcome::Expired => (State::Expired, 0),
        };
        let stored = map.set_slot(
            index,
            Slot {
                state,
                attempts: attempts.min(255) as u8,
                code: answer.code,
                next_attempt,
            },
        );
        match stored {
            Err(err) => tracing::error!(%err, "cannot record a delivery outcome"),
            Ok(()) if self.sync_each => self.flush_result(&map.sync()),
            Ok(()) => {}
        }
        let counter = match outcome {
            Outcome::Delivered => &self.counters.delivered,
            Outcome::Deferred { .. } => &self.counters.deferred,
            Outcome::Bounced(_) => &self.counters.bounced,
            Outcome::Expired => &self.counters.expired,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        // Relayed mail is reported to its sender (campaigns report through the
        // log and VERP): failures always (NOTIFY is checked when reporting),
        // delays past `delay_warning` and deliveries when NOTIFY asks.
        if is_inbound_id(header.campaign_id) {
            let action = match outcome {
                Outcome::Bounced(_) => Some(Action::Failed),
                Outcome::Expired => Some(Action::Expired),
                Outcome::Deferred { next_attempt }
                    if crosses_delay_warning(
                        header.created_at,
                        self.delay_warning,
                        attempts,
                        now,
                        next_attempt,
                    ) =>
                {
                    Some(Action::Delayed)
                }
                Outcome::Delivered if notify_of(item).is_some_and(|n| n.success) => {
                    Some(Action::Delivered)
                }
                _ => None,
            };
            if let Some(action) = action {
                self.note_relayed(item, action, answer, via);
            }
        }
        // A delivery's reply is kept only when a webhook wants it (it is in
        // the log, and keeping it costs an allocation per message).
        item.batch.keep_reply(state, || Reply {
            index: item.index,
            at: now,
            state,
            code: answer.code,
            attempt: attempts,
            next_attempt,
            enhanced: answer.enhanced.to_owned(),
            text: answer.text.to_owned(),
        });
        let event = LogEvent {
            ts: timestamp(SystemTime::now()),
            campaign: header.campaign_id,
            batch: header.batch_id,
            recipient,
            status: outcome.status(),
            code: answer.code,
            enhanced: answer.enhanced,
            reply: answer.text,
            mx: &via.mx,
            ip: &via.ip,
            tls: via.tls,
            attempt: attempts,
            latency_ms: started.elapsed().as_millis() as u64,
            level: answer.level.name(),
            class: match outcome {
                Outcome::Bounced(class) => Some(class.name()),
                _ => None,
            },
            next_attempt: match outcome {
                Outcome::Deferred { next_attempt } => Some(next_attempt),
                _ => None,
            },
        };
        if let Err(err) = self.log.write(&event) {
            tracing::error!(%err, log = %self.log.path().display(), "cannot write the delivery log");
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_flush_holds_new_work_until_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder {
            log: Arc::new(DeliveryLog::open(&dir.path().join("log.jsonl")).unwrap()),
            retry: RetryConfig::default(),
            counters: Counters::default(),
            sync_each: false,
            flushed: AtomicBool::new(true),
            delay_warning: 0,
            relayed_reports: Mutex::default(),
        };
        assert!(recorder.durable());
        let failed = Err(QueueError::Io {
            action: "msync",
            path: dir.path().join("batch.vqb"),
            io: std::io::Error::from_raw_os_error(5),
        });
        recorder.flush_result(&failed);
        assert!(!recorder.durable());
        recorder.flush_result(&failed);
        assert!(!recorder.durable());
        recorder.flush_result(&Ok(()));
        assert!(recorder.durable());
    }
}
