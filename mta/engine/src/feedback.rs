//! Acting on what comes back: each message received for volley's own domains
//! (`[relay] domains` and the `[bounce] domain`) is classified
//! ([`volley_inbound::classify()`]) and each event it yields becomes a line in the
//! delivery log and, when it calls for one, a suppression.
//!
//! # Who is meant
//! When the event names a VERP target (campaign, batch, index), the batch file
//! (in `active/`, else `done/`) says who the recipient was: that address is
//! logged and suppressed, whatever the DSN claims (forwarding, rewriting), and
//! the sending domain is the domain of the campaign content's envelope sender
//! (its template's return path, the one the engine checks suppressions
//! against). Without a target, or when the batch is gone, the address the
//! report gives is used (the DSN's `Final-Recipient`, the ARF
//! `Original-Rcpt-To`, the From of an unsubscribe reply), and the sending
//! domain is that of the first envelope recipient outside the VERP domain (the
//! address the DSN or reply came to is our sender's: `news@acme.test` →
//! `acme.test`); when there is none (mail to the VERP domain without a valid
//! token), `*`: every sending domain.
//!
//! Only an event whose recipient comes from its batch (a verified token)
//! suppresses by itself. One whose recipient only the report names is kept for
//! an operator ([`SuppressionWriter::pend`]; `volley suppress pending`): anyone
//! can send a DSN, an ARF report or a reply naming anyone. The log line says
//! which (`suppression`: `verified`, `pending`, or `fbl_source` for a
//! complaint received from one of `[bounce] fbl_sources`, a provider's
//! feedback loop, which applies without a token).
//!
//! # What suppresses ([`suppress_kind`])
//! - a `hard` bounce with a DSN status: counted towards `[bounce] hard_limit`;
//! - a `soft` bounce, and a `hard` one whose status only comes from the text of
//!   a bounce that is not a DSN ([`Evidence::BodyText`]): counted towards
//!   `[bounce] soft_limit` in `[bounce] window`;
//! - a `policy` bounce never suppresses (it is about us, not the address);
//! - a complaint or an unsubscribe request suppresses at once (reasons
//!   `complaint`, `unsubscribe`).
//!
//! The suppression list lives in the control plane; [`SuppressionWriter`] is
//! what this module asks of it (the binary implements it), so `mta` does not
//! depend on `control`.
//!
//! # Failures
//! The message is stored in `SPOOL/inbound/` before it is classified, and the
//! file is always kept. A log or suppression failure is logged (`error`) with
//! the file's name and does not refuse the message: the sender has done its
//! part, and the file lets an operator act on it by hand.
//!
//! What it does not do: receive mail (the listener does), refuse forged VERP
//! addresses (the SMTP session does at RCPT, [`crate::deposit::SpoolDeposit`]
//! again before storing), or count bounces (the suppression list does).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{error, info, warn};
use volley_queue::{BatchIndex, Header, Spool};

use crate::log::DeliveryLog;
use crate::mx::ResolverConfig;
use crate::suppress::sending_domain;
use signed_by::DkimDomains;
use volley_conf::FblSource;
use volley_inbound::{
    classify, BounceClass, Envelope, Evidence, InboundEvent, Verp, VerpError, VerpTarget,
};
use volley_merge::source::MessageSource;

/// What an event does to the suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressKind {
    /// Count a hard bounce (`[bounce] hard_limit` of them suppress).
    HardBounce,
    /// Count a soft bounce (`[bounce] soft_limit` of them in `[bounce] window`
    /// suppress).
    SoftBounce,
    /// Suppress at once, reason `complaint`.
    Complaint,
    /// Suppress at once, reason `unsubscribe`.
    Unsubscribe,
}

/// One change to the suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuppressAction<'a> {
    /// The recipient.
    pub address: &'a str,
    /// The sending domain the entry applies to, or `*` for all mail.
    pub sending_domain: &'a str,
    /// Count a bounce, or suppress at once.
    pub kind: SuppressKind,
    /// Unix seconds of the event.
    pub at: u64,
    /// Kept as the entry's detail: the bounce status and diagnostic, the
    /// feedback type, …
    pub detail: &'a str,
}

/// The suppression list as the inbound processing writes to it; implemented
/// by the binary over `volley_control::suppress::SuppressionStore`.
pub trait SuppressionWriter: Send + Sync {
    /// Applies `action` durably. Returns whether the address is suppressed by
    /// it (an entry added now), or why it could not be written.
    fn apply(&self, action: &SuppressAction<'_>) -> Result<bool, String>;

    /// Keeps `action` for an operator instead of applying it (its recipient
    /// was named by the report, not by a verified token), from `source` (who
    /// sent the report, to which local address); answers why it could not be
    /// kept.
    fn pend(&self, action: &SuppressAction<'_>, source: &str) -> Result<(), String>;
}

/// What an event does to the suppression list, if anything (see the [module
/// documentation](self)).
pub fn suppress_kind(event: &InboundEvent) -> Option<SuppressKind> {
    match event {
        InboundEvent::BouncedAsync {
            class: BounceClass::Policy,
            ..
        } => None,
        InboundEvent::BouncedAsync {
            class: BounceClass::Hard,
            evidence: Evidence::Dsn,
            ..
        } => Some(SuppressKind::HardBounce),
        InboundEvent::BouncedAsync { .. } => Some(SuppressKind::SoftBounce),
        InboundEvent::Complained { .. } => Some(SuppressKind::Complaint),
        InboundEvent::Unsubscribed { .. } => Some(SuppressKind::Unsubscribe),
        InboundEvent::Replied { .. }
        | InboundEvent::Ignored { .. }
        | InboundEvent::Forged { .. } => None,
    }
}

/// The sending domain when no batch names it: the domain of the first envelope
/// recipient that is not at the VERP domain (nor a bare `postmaster`), else `*`.
pub fn fallback_sending_domain(rcpt_to: &[String], verp_domain: Option<&str>) -> String {
    rcpt_to
        .iter()
        .filter_map(|r| r.rsplit_once('@').map(|(_, d)| d.trim_end_matches('.')))
        .find(|d| !d.is_empty() && verp_domain.is_none_or(|v| !d.eq_ignore_ascii_case(v)))
        .map_or_else(|| "*".to_owned(), str::to_ascii_lowercase)
}

/// The recipient and sending domain of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The recipient address ("" when nothing names one).
    pub recipient: String,
    /// A domain, or `*`.
    pub sending_domain: String,
    /// Whether both came from the batch file (else from the report and the
    /// envelope).
    pub from_batch: bool,
}

/// What one inbound message led to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Processed {
    /// The events of the classification (at least one).
    pub events: Vec<InboundEvent>,
    /// Lines written to the delivery log.
    pub logged: usize,
    /// Addresses suppressed by this message.
    pub suppressed: usize,
    /// Suppressions it asked for that wait for an operator.
    pub pending: usize,
    /// Log or suppression writes that failed (each logged as an error).
    pub failures: usize,
}

/// Classifies inbound messages and records their events: see the [module
/// documentation](self).
pub struct Feedback {
    spool_root: PathBuf,
    verp: Option<Arc<Verp>>,
    source: Arc<dyn MessageSource>,
    log: Arc<DeliveryLog>,
    writer: Arc<dyn SuppressionWriter>,
    /// `[bounce] fbl_sources`: clients and signing domains whose complaints
    /// suppress without a token.
    fbl_sources: Vec<FblSource>,
    /// Checks the DKIM signatures of complaints when a source is a domain.
    dkim: Option<DkimDomains>,
    /// Told of verified complaints and unsubscribe requests.
    events: Option<Arc<dyn FeedbackEvents>>,
}

/// What [`FeedbackEvents::verified`] hears of `event`: a complaint, an
/// unsubscribe request or a reply naming a VERP target.
fn verified_target(event: &InboundEvent) -> Option<(&'static str, VerpTarget)> {
    match event {
        InboundEvent::Complained {
            target: Some(target),
            ..
        } => Some(("complained", *target)),
        InboundEvent::Unsubscribed {
            target: Some(target),
            ..
        } => Some(("unsubscribed", *target)),
        InboundEvent::Replied { target, .. } => Some(("replied", *target)),
        _ => None,
    }
}

/// Told of each verified event about one campaign recipient (its VERP token
/// resolved through its batch): `complained`, `unsubscribed` or `replied`, so
/// the control plane can count them per campaign. Called on the inbound path: it must not
/// block (hand the work to a task).
pub trait FeedbackEvents: Send + Sync + 'static {
    /// `status` is the delivery log's: `complained`, `unsubscribed` or
    /// `replied`.
    fn verified(&self, status: &'static str, target: VerpTarget, recipient: &str);
}

impl std::fmt::Debug for Feedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feedback")
            .field("spool_root", &self.spool_root)
            .field("verp", &self.verp)
            .field("log", &self.log.path())
            .finish_non_exhaustive()
    }
}

impl Feedback {
    /// Processing for the spool at `spool_root`: batches are looked up there and
    /// their content's envelope sender asked of `source` (the engine's); events
    /// go to `log` (the engine's, see [`crate::delivery::Engine::delivery_log`])
    /// and `writer`.
    pub fn new(
        spool_root: &Path,
        verp: Option<Arc<Verp>>,
        source: Arc<dyn MessageSource>,
        log: Arc<DeliveryLog>,
        writer: Arc<dyn SuppressionWriter>,
    ) -> Feedback {
        Feedback {
            spool_root: spool_root.to_owned(),
            verp,
            source,
            log,
            writer,
            fbl_sources: Vec::new(),
            dkim: None,
            events: None,
        }
    }

    /// Tells `events` of every verified complaint and unsubscribe request.
    pub fn with_events(mut self, events: Arc<dyn FeedbackEvents>) -> Feedback {
        self.events = Some(events);
        self
    }

    /// Trusts the complaints (ARF reports) from `sources` (a provider's
    /// feedback loop: received from one of its networks, or DKIM-signed by
    /// its domain, keys looked up over `dns`): they suppress without a VERP
    /// token.
    pub fn with_fbl_sources(mut self, sources: Vec<FblSource>, dns: ResolverConfig) -> Feedback {
        if sources.iter().any(|s| matches!(s, FblSource::Domain(_))) {
            self.dkim = Some(DkimDomains::new(dns));
        }
        self.fbl_sources = sources;
        self
    }

    /// Whether a complaint received from `client` comes from a feedback loop
    /// of `[bounce] fbl_sources`, and which (for the log).
    fn fbl_source(&self, client: Option<std::net::IpAddr>, message: &[u8]) -> Option<String> {
        let by_network = client.and_then(|ip| {
            self.fbl_sources.iter().find_map(|s| match s {
                FblSource::Network(n) if n.contains(ip) => Some(ip.to_string()),
                _ => None,
            })
        });
        if by_network.is_some() {
            return by_network;
        }
        let dkim = self.dkim.as_ref()?;
        dkim.verified(message)
            .into_iter()
            .find(|d| self.fbl_sources.iter().any(|s| s.signed_by(d)))
    }

    /// The VERP maker, if a `[bounce] domain` is configured.
    pub fn verp(&self) -> Option<&Arc<Verp>> {
        self.verp.as_ref()
    }

    /// The first of `rcpt_to` at our VERP domain with our prefix whose token is
    /// malformed or forged, with the reason: such a message is refused.
    pub fn forged<'r>(&self, rcpt_to: &[&'r str]) -> Option<(&'r str, VerpError)> {
        let verp = self.verp.as_deref()?;
        rcpt_to.iter().find_map(|rcpt| match verp.decode(rcpt) {
            Err(error @ (VerpError::Malformed | VerpError::Forged)) => Some((*rcpt, error)),
            _ => None,
        })
    }

    /// Classifies one message for local recipients `rcpt_to`, stored as `file`,
    /// and records its events at `now`.
    pub fn process(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[u8],
        file: &Path,
        now: SystemTime,
    ) -> Processed {
        self.process_from(None, mail_from, rcpt_to, message, file, now)
    }

    /// [`Feedback::process`] for a message received from `client`: a
    /// complaint from one of the `fbl_sources` suppresses without a token.
    pub fn process_from(
        &self,
        client: Option<std::net::IpAddr>,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[u8],
        file: &Path,
        now: SystemTime,
    ) -> Processed {
        let envelope = Envelope { mail_from, rcpt_to };
        let events = classify(&envelope, message, self.verp.as_deref());
        // Asked only for a complaint (a DKIM check costs a DNS lookup).
        let from_fbl = events
            .iter()
            .any(|e| matches!(e, InboundEvent::Complained { .. }))
            .then(|| self.fbl_source(client, message))
            .flatten();
        if let Some(source) = &from_fbl {
            info!(file = %file.display(), source, "complaint from a feedback loop of fbl_sources");
        }
        let from_fbl = from_fbl.is_some();
        let at = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut done = Processed::default();
        for event in &events {
            let Some(line) = crate::log::InboundLogEvent::of(event, now) else {
                if let InboundEvent::Ignored { reason } = event {
                    info!(file = %file.display(), from = %mail_from, reason = reason.name(),
                        "inbound message: nothing to do");
                } else if let InboundEvent::Forged { rcpt, error } = event {
                    warn!(file = %file.display(), rcpt, %error, "inbound message to a forged VERP address");
                }
                continue;
            };
            let resolved = self.resolve(event, rcpt_to);
            // Only a recipient named by a verified token (the VERP return path,
            // resolved through its batch) suppresses by itself; one the report
            // names waits for an operator (anyone can send a report).
            let kind = suppress_kind(event);
            let trusted = resolved.from_batch
                || (from_fbl && matches!(event, InboundEvent::Complained { .. }));
            let path = match kind {
                None => None,
                Some(_) if resolved.from_batch => Some("verified"),
                Some(_) if trusted => Some("fbl_source"),
                Some(_) => Some("pending"),
            };
            let line = crate::log::InboundLogEvent {
                recipient: &resolved.recipient,
                suppression: path,
                ..line
            };
            match self
                .log
                .write_inbound(&line)
                .and_then(|()| self.log.flush())
            {
                Ok(()) => done.logged += 1,
                Err(err) => {
                    done.failures += 1;
                    error!(file = %file.display(), log = %self.log.path().display(), %err,
                        status = line.status, "cannot write the delivery log; the message is kept");
                }
            }
            info!(file = %file.display(), status = line.status, recipient = %resolved.recipient,
                campaign = ?line.campaign, batch = ?line.batch, index = ?line.index,
                class = line.class.unwrap_or_default(), from_batch = resolved.from_batch,
                "inbound event");
            if let (Some(events), Some((status, target)), true) = (
                &self.events,
                verified_target(event),
                resolved.from_batch && !resolved.recipient.is_empty(),
            ) {
                events.verified(status, target, &resolved.recipient);
            }
            let Some(kind) = kind else {
                continue;
            };
            if resolved.recipient.is_empty() {
                warn!(file = %file.display(), status = line.status,
                    "no recipient address to suppress");
                continue;
            }
            let detail = detail(event);
            let action = SuppressAction {
                address: &resolved.recipient,
                sending_domain: &resolved.sending_domain,
                kind,
                at,
                detail: &detail,
            };
            if !trusted {
                let source = format!("from <{mail_from}> to {}", rcpt_to.join(", "));
                match self.writer.pend(&action, &source) {
                    Ok(()) => {
                        done.pending += 1;
                        warn!(recipient = %resolved.recipient, domain = %resolved.sending_domain,
                            ?kind, %source, "suppression request without a verified token: kept for an operator (volley suppress pending)");
                    }
                    Err(err) => {
                        done.failures += 1;
                        error!(file = %file.display(), recipient = %resolved.recipient, ?kind, %err,
                            "cannot keep a pending suppression; the message is kept");
                    }
                }
                continue;
            }
            match self.writer.apply(&action) {
                Ok(true) => {
                    done.suppressed += 1;
                    info!(recipient = %resolved.recipient, domain = %resolved.sending_domain,
                        ?kind, "suppressed");
                }
                Ok(false) => {}
                Err(err) => {
                    done.failures += 1;
                    error!(file = %file.display(), recipient = %resolved.recipient, ?kind, %err,
                        "cannot write the suppression list; the message is kept");
                }
            }
        }
        done.events = events;
        done
    }

    /// Who an event is about: see the [module documentation](self).
    pub fn resolve(&self, event: &InboundEvent, rcpt_to: &[String]) -> Resolved {
        let (target, reported) = match event {
            InboundEvent::BouncedAsync {
                target, recipient, ..
            }
            | InboundEvent::Complained {
                target, recipient, ..
            } => (*target, recipient.as_deref()),
            InboundEvent::Unsubscribed { target, recipient } => (*target, Some(recipient.as_str())),
            InboundEvent::Replied { target, recipient } => {
                (Some(*target), Some(recipient.as_str()))
            }
            InboundEvent::Ignored { .. } | InboundEvent::Forged { .. } => (None, None),
        };
        if let Some(target) = target {
            match self.lookup(target) {
                Ok((recipient, from)) => {
                    let domain = sending_domain(&from);
                    return Resolved {
                        recipient,
                        sending_domain: if domain.is_empty() {
                            "*".to_owned()
                        } else {
                            domain
                        },
                        from_batch: true,
                    };
                }
                Err(err) => {
                    warn!(%target, %err, "VERP target not found in the spool; using the report's address");
                }
            }
        }
        Resolved {
            recipient: reported.unwrap_or_default().trim().to_owned(),
            sending_domain: fallback_sending_domain(
                rcpt_to,
                self.verp.as_deref().map(Verp::domain),
            ),
            from_batch: false,
        }
    }

    /// The recipient address and the content's envelope sender of a VERP
    /// target, from its batch file in `active/` or `done/` (a batch completing
    /// meanwhile moves from one to the other: `active/` is tried again).
    fn lookup(&self, target: VerpTarget) -> Result<(String, String), String> {
        let name = Spool::file_name(target.campaign, target.batch);
        for dir in ["active", "done", "active"] {
            let path = self.spool_root.join(dir).join(&name);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(format!("{}: {err}", path.display())),
            };
            // Only the immutable part: the slots may be changing under us.
            let header = Header::read(&bytes, bytes.len())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let immutable = bytes
                .get(header.immutable_range())
                .ok_or_else(|| format!("{}: truncated", path.display()))?;
            let index = BatchIndex::build(header, immutable)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let view = index.view(immutable);
            let recipient = view
                .recipient(target.index as usize)
                .ok_or_else(|| format!("{}: no recipient {}", path.display(), target.index))?
                .address();
            let from = self
                .source
                .envelope_from(&view, target.index as usize)
                .map_err(|e| e.reason)?;
            return Ok((recipient, from));
        }
        Err(format!("no batch {name} in active/ or done/"))
    }
}

/// The detail kept with a suppression: `5.1.1 diagnostic` for a bounce, the
/// feedback type for a complaint, `reply` for an unsubscribe request.
fn detail(event: &InboundEvent) -> String {
    match event {
        InboundEvent::BouncedAsync {
            status, diagnostic, ..
        } => match diagnostic {
            Some(d) => format!("{status} {d}"),
            None => status.to_string(),
        },
        InboundEvent::Complained { feedback_type, .. } => feedback_type.name().to_owned(),
        InboundEvent::Unsubscribed { .. } => "reply".to_owned(),
        InboundEvent::Replied { .. }
        | InboundEvent::Ignored { .. }
        | InboundEvent::Forged { .. } => String::new(),
    }
}

#[cfg(test)]
mod tests;

pub mod signed_by;
