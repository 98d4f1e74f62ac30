//! One decision per inbound message: bounce, complaint, unsubscribe request, or
//! nothing to do — [`classify`], a pure function of the envelope, the bytes and
//! the [`Verp`] key, plus [`class_of`], the table that sorts bounces into hard,
//! soft and policy.
//!
//! # Order of the checks
//! 1. An envelope recipient at our VERP domain with our prefix whose token does
//!    not decode or verify: [`InboundEvent::Forged`], and nothing else (the
//!    caller refuses and logs it). A valid one is the event's `target`.
//! 2. A feedback report (ARF) → one [`InboundEvent::Complained`]; `not-spam` and
//!    `auth-failure` reports are ignored (they are not a user's complaint).
//! 3. A DSN → one event per recipient block: `failed` → [`InboundEvent::BouncedAsync`];
//!    `delayed` → ignored (the MTA is still trying; its final `failed` DSN, if
//!    any, is the bounce); `delivered`, `relayed`, `expanded` → ignored.
//! 4. Machine-sent mail (null sender, `Auto-Submitted`, …) that is not a DSN:
//!    when it comes to a valid VERP address from a mailer daemon and its text
//!    holds an enhanced status code such as `5.1.1` (qmail and other pre-RFC 3464
//!    bounces), a bounce flagged [`Evidence::BodyText`] — the recipient is
//!    certain (the token), the status a best effort. Otherwise ignored: vacation
//!    replies and other auto-replies never count.
//! 5. A person's reply whose Subject or first line is `unsubscribe` or `delete`
//!    → [`InboundEvent::Unsubscribed`] for the From address.
//! 6. Any other message from a person to a valid VERP address (a reply to a
//!    campaign message whose reply address is its return path) →
//!    [`InboundEvent::Replied`]: the post office design's acknowledgement.
//! 7. Anything else is ignored.
//!
//! Every event names the VERP target when there is one, and the recipient
//! address the report gives (or the From address, for a reply); one of the two
//! is always there. The target of a complaint also comes from the returned
//! original's `Return-Path` or the report's `Original-Mail-From` (reports come
//! to the feedback-loop address, not to VERP); `X-Volley-*` fields are never
//! trusted (anyone can write them).

use mail_parser::{Message, MessageParser};

use volley_smtp::reply::Enhanced;

use super::arf::{self, FeedbackType};
use super::dsn::{self, status_at, Action};
use super::fields::MAX_VALUE;
use super::reply;
use super::verp::{Verp, VerpError, VerpTarget};

/// The SMTP envelope of an inbound message.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// MAIL FROM, without `<>`; empty for the null sender of bounces and
    /// auto-replies.
    pub mail_from: &'a str,
    /// Every RCPT TO, without `<>`.
    pub rcpt_to: &'a [String],
}

/// How bad an asynchronous bounce is, for the suppression list's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BounceClass {
    /// The address does not work (5.1.x, or 5.0.0 saying "user unknown"): one is
    /// enough to suppress (`[bounce] hard_limit`, default 1).
    Hard,
    /// The address may work later: mailbox full, 4.x.x, 5.2.x to 5.6.x, and any
    /// code that says nothing more (`[bounce] soft_limit`, default 5).
    Soft,
    /// Refused because of us, not the address: spam filters, block lists,
    /// authentication (x.7.x), or our sender address (5.1.7, 5.1.8). Never
    /// suppresses the recipient.
    Policy,
}

impl BounceClass {
    /// The name used in logs: `hard`, `soft`, `policy`.
    pub fn name(self) -> &'static str {
        match self {
            BounceClass::Hard => "hard",
            BounceClass::Soft => "soft",
            BounceClass::Policy => "policy",
        }
    }
}

/// What a bounce's status is based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A DSN's `Status:` field (RFC 3464): reliable.
    Dsn,
    /// A status code found in the text of a bounce that is not a DSN: a best
    /// effort, which a caller may choose to count only as soft.
    BodyText,
}

/// Why a message led to no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// Not a message mail-parser could read (no header at all).
    Unparseable,
    /// A DSN for a delivery still being retried (`Action: delayed`).
    DelayedDsn,
    /// A DSN for a success (`delivered`, `relayed`, `expanded`).
    SuccessDsn,
    /// A DSN without recipient blocks, or whose block has neither an Action
    /// nor a Status.
    EmptyDsn,
    /// A report that names neither a VERP target nor a recipient address.
    NoRecipient,
    /// A `not-spam` feedback report.
    NotSpamReport,
    /// An `auth-failure` feedback report (RFC 6591).
    AuthFailureReport,
    /// An auto-reply or other machine-sent message that is not a bounce.
    AutoReply,
    /// Mail from a person that asks for nothing we act on.
    NotActionable,
}

impl IgnoreReason {
    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            IgnoreReason::Unparseable => "unparseable",
            IgnoreReason::DelayedDsn => "delayed_dsn",
            IgnoreReason::SuccessDsn => "success_dsn",
            IgnoreReason::EmptyDsn => "empty_dsn",
            IgnoreReason::NoRecipient => "no_recipient",
            IgnoreReason::NotSpamReport => "not_spam_report",
            IgnoreReason::AuthFailureReport => "auth_failure_report",
            IgnoreReason::AutoReply => "auto_reply",
            IgnoreReason::NotActionable => "not_actionable",
        }
    }
}

/// What an inbound message means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundEvent {
    /// A recipient's message bounced after it was accepted.
    BouncedAsync {
        /// The recipient named by the VERP address the bounce came to.
        target: Option<VerpTarget>,
        /// The address the DSN reports on (`Final-Recipient`, else
        /// `Original-Recipient`, else the returned original's `To`).
        recipient: Option<String>,
        /// Hard, soft or policy, by [`class_of`].
        class: BounceClass,
        /// The enhanced status code (the more specific of `Status:` and the
        /// code in the diagnostic).
        status: Enhanced,
        /// The reply code of an `smtp` diagnostic, e.g. 550.
        code: Option<u16>,
        /// The diagnostic: the remote server's reply, or the reporting MTA's reason.
        diagnostic: Option<String>,
        /// `Action:` (always `failed` for [`Evidence::Dsn`]; `unknown` for text).
        action: Action,
        /// Where the status comes from.
        evidence: Evidence,
    },
    /// A recipient complained (a feedback report).
    Complained {
        /// The recipient named by a VERP address (envelope, or the original's
        /// Return-Path / Original-Mail-From).
        target: Option<VerpTarget>,
        /// `Original-Rcpt-To`, else the original's `To` (often redacted).
        recipient: Option<String>,
        /// The kind of feedback.
        feedback_type: FeedbackType,
    },
    /// A person asked to be removed by replying `unsubscribe` or `delete`.
    Unsubscribed {
        /// The recipient named by the VERP address the reply came to, if any.
        target: Option<VerpTarget>,
        /// The From address of the reply (else the envelope sender).
        recipient: String,
    },
    /// A person replied to a campaign message (to its VERP address).
    Replied {
        /// The recipient named by the VERP address the reply came to.
        target: VerpTarget,
        /// The From address of the reply (else the envelope sender).
        recipient: String,
    },
    /// Nothing to do.
    Ignored {
        /// Why.
        reason: IgnoreReason,
    },
    /// An envelope recipient at our VERP domain and prefix whose token is
    /// malformed or forged: refuse the message and log it.
    Forged {
        /// The recipient address.
        rcpt: String,
        /// [`VerpError::Malformed`] or [`VerpError::Forged`].
        error: VerpError,
    },
}

impl InboundEvent {
    fn ignored(reason: IgnoreReason) -> InboundEvent {
        InboundEvent::Ignored { reason }
    }
}

/// Classifies one inbound message. Never empty: at least one event, an
/// [`InboundEvent::Ignored`] when there is nothing to do. `verp` is `None` when
/// no VERP domain is configured.
pub fn classify(envelope: &Envelope<'_>, message: &[u8], verp: Option<&Verp>) -> Vec<InboundEvent> {
    let target = match envelope_target(envelope.rcpt_to, verp) {
        Ok(target) => target,
        Err(forged) => return vec![forged],
    };
    let Some(parsed) = MessageParser::default().parse(message) else {
        return vec![InboundEvent::ignored(IgnoreReason::Unparseable)];
    };
    if let Some(report) = arf::parse(&parsed) {
        return vec![complaint(report, target, verp)];
    }
    if let Some(dsn) = dsn::parse(&parsed) {
        return bounces(dsn, target, verp);
    }
    let null_sender = envelope
        .mail_from
        .trim()
        .trim_matches(['<', '>'])
        .is_empty();
    if null_sender || reply::is_automatic(&parsed) {
        return vec![text_bounce(&parsed, target, null_sender)
            .unwrap_or(InboundEvent::ignored(IgnoreReason::AutoReply))];
    }
    let from = reply::from_address(&parsed).or_else(|| {
        let sender = envelope.mail_from.trim().trim_matches(['<', '>']);
        sender.contains('@').then(|| sender.to_owned())
    });
    if reply::unsubscribe_keyword(&parsed).is_some() {
        if let Some(recipient) = from {
            return vec![InboundEvent::Unsubscribed { target, recipient }];
        }
    } else if let (Some(target), Some(recipient)) = (target, from) {
        return vec![InboundEvent::Replied { target, recipient }];
    }
    vec![InboundEvent::ignored(IgnoreReason::NotActionable)]
}

/// The VERP target among the envelope recipients: the first valid one; an error
/// event for the first malformed or forged one.
fn envelope_target(
    rcpt_to: &[String],
    verp: Option<&Verp>,
) -> Result<Option<VerpTarget>, InboundEvent> {
    let Some(verp) = verp else {
        return Ok(None);
    };
    let mut found = None;
    for rcpt in rcpt_to {
        match verp.decode(rcpt) {
            Ok(target) => {
                found.get_or_insert(target);
            }
            Err(VerpError::NotVerp) => {}
            Err(error) => {
                return Err(InboundEvent::Forged {
                    rcpt: rcpt.clone(),
                    error,
                })
            }
        }
    }
    Ok(found)
}

/// A VERP target from an address found inside a report: only a valid one counts.
fn verp_in(verp: Option<&Verp>, address: Option<&str>) -> Option<VerpTarget> {
    verp?.decode(address?).ok()
}

fn complaint(
    report: arf::FeedbackReport,
    target: Option<VerpTarget>,
    verp: Option<&Verp>,
) -> InboundEvent {
    match report.feedback_type {
        FeedbackType::NotSpam => return InboundEvent::ignored(IgnoreReason::NotSpamReport),
        FeedbackType::AuthFailure => return InboundEvent::ignored(IgnoreReason::AuthFailureReport),
        _ => {}
    }
    let original = report.original.as_ref();
    let target = target
        .or_else(|| verp_in(verp, original.and_then(|o| o.return_path.as_deref())))
        .or_else(|| verp_in(verp, report.original_mail_from.as_deref()));
    let recipient = report
        .original_rcpt_to
        .first()
        .cloned()
        .or_else(|| original.and_then(|o| o.to.clone()));
    if target.is_none() && recipient.is_none() {
        return InboundEvent::ignored(IgnoreReason::NoRecipient);
    }
    InboundEvent::Complained {
        target,
        recipient,
        feedback_type: report.feedback_type,
    }
}

fn bounces(dsn: dsn::Dsn, target: Option<VerpTarget>, verp: Option<&Verp>) -> Vec<InboundEvent> {
    if dsn.recipients.is_empty() {
        return vec![InboundEvent::ignored(IgnoreReason::EmptyDsn)];
    }
    let original = dsn.original.as_ref();
    let target = target.or_else(|| verp_in(verp, original.and_then(|o| o.return_path.as_deref())));
    let fallback_recipient = original.and_then(|o| o.to.as_deref());
    dsn.recipients
        .iter()
        .map(|r| match r.action {
            Action::Delayed => InboundEvent::ignored(IgnoreReason::DelayedDsn),
            Action::Delivered | Action::Relayed | Action::Expanded => {
                InboundEvent::ignored(IgnoreReason::SuccessDsn)
            }
            // A block without Action but with a failure status is a failure;
            // without either it says nothing.
            Action::Failed | Action::Unknown => {
                let status = best_status(r.status, r.diagnostic.as_deref());
                // A block without Action but with a permanent status is a failure.
                let failed = r.action == Action::Failed || status.is_some_and(|s| s.class == 5);
                if !failed {
                    return InboundEvent::ignored(match status {
                        Some(s) if s.class == 4 => IgnoreReason::DelayedDsn,
                        Some(_) => IgnoreReason::SuccessDsn,
                        None => IgnoreReason::EmptyDsn,
                    });
                }
                // RFC 3464 makes Status required; an MTA that left it out (or
                // wrote 2.x.x) still says "failed".
                let status = status
                    .filter(|s| s.class != 2)
                    .unwrap_or(Enhanced::new(5, 0, 0));
                let recipient = r.recipient().or(fallback_recipient).map(str::to_owned);
                if target.is_none() && recipient.is_none() {
                    return InboundEvent::ignored(IgnoreReason::NoRecipient);
                }
                InboundEvent::BouncedAsync {
                    target,
                    recipient,
                    class: class_of(status, r.diagnostic.as_deref()),
                    status,
                    code: r.reply_code,
                    diagnostic: r.diagnostic.clone(),
                    action: Action::Failed,
                    evidence: Evidence::Dsn,
                }
            }
        })
        .collect()
}

/// The `Status:` code, or the code in the diagnostic when `Status:` is missing
/// or generic (`x.0.0`) and the diagnostic has one of the same class.
fn best_status(status: Option<Enhanced>, diagnostic: Option<&str>) -> Option<Enhanced> {
    let in_text = diagnostic.and_then(find_status);
    match (status, in_text) {
        (None, found) => found,
        (Some(s), Some(t)) if s.subject == 0 && s.detail == 0 && t.class == s.class => Some(t),
        (s, _) => s,
    }
}

/// The first enhanced status code of class 4 or 5 standing alone in `text`
/// (not inside a longer run of digits and dots, e.g. a version or an address).
pub fn find_status(text: &str) -> Option<Enhanced> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(offset) = bytes
        .get(from..)?
        .iter()
        .position(|b| matches!(b, b'4' | b'5'))
    {
        let at = from + offset;
        let before_ok =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'.');
        if before_ok {
            if let Some((status, end)) = status_at(&bytes[at..]) {
                let after = bytes.get(at + end);
                let after_ok = match after {
                    None => true,
                    Some(b'.') => !bytes.get(at + end + 1).is_some_and(u8::is_ascii_digit),
                    Some(b) => !b.is_ascii_alphanumeric(),
                };
                if after_ok {
                    return Some(status);
                }
            }
        }
        from = at + 1;
    }
    None
}

/// Diagnostics that say the address does not exist, for generic codes (5.0.0,
/// 5.5.x): lower-case substrings.
const UNKNOWN_USER: [&str; 16] = [
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "no such recipient",
    "user not found",
    "mailbox not found",
    "recipient not found",
    "recipientnotfound",
    "unknown recipient",
    "invalid recipient",
    "does not exist",
    "doesn't exist",
    "no mailbox here",
    "unrouteable address",
    "address rejected: user",
];

/// Diagnostics that say we were refused for policy, for generic codes.
const POLICY: [&str; 10] = [
    "spam",
    "blocked",
    "blocklist",
    "blacklist",
    "block list",
    "black list",
    "reputation",
    "policy",
    "dmarc",
    "not authorized",
];

/// Hard, soft or policy, from the enhanced status code (RFC 3463) and, for codes
/// that say nothing more than "failed" (`x.0.0`, 5.5.x), the diagnostic text.
///
/// | code | class |
/// |---|---|
/// | 4.7.x, 5.7.x (security, policy) | policy |
/// | 5.1.7, 5.1.8 (our sender address) | policy |
/// | 5.1.x (bad address: 5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10) | hard |
/// | other 4.x.x (transient) | soft (policy if the text says spam, blocked…) |
/// | 5.2.x (mailbox full, disabled), 5.3.x, 5.4.x, 5.6.x | soft |
/// | 5.0.0 and 5.5.x: "user unknown" in the text | hard |
/// | 5.0.0 and 5.5.x: "spam", "blocked"… in the text | policy |
/// | 5.0.0 and 5.5.x otherwise, anything else | soft |
pub fn class_of(status: Enhanced, diagnostic: Option<&str>) -> BounceClass {
    let text = diagnostic.map(str::to_ascii_lowercase).unwrap_or_default();
    let says = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let generic = status.subject == 0 && status.detail == 0 || status.subject == 5;
    match (status.class, status.subject, status.detail) {
        (_, 7, _) => BounceClass::Policy,
        (5, 1, 7 | 8) => BounceClass::Policy,
        (5, 1, _) => BounceClass::Hard,
        (4, _, _) if generic && says(&POLICY) => BounceClass::Policy,
        (4, _, _) => BounceClass::Soft,
        (5, _, _) if generic && says(&UNKNOWN_USER) => BounceClass::Hard,
        (5, _, _) if generic && says(&POLICY) => BounceClass::Policy,
        _ => BounceClass::Soft,
    }
}

/// Words in a Subject that mark a bounce that is not a DSN.
const BOUNCE_SUBJECT: [&str; 8] = [
    "undeliver",
    "delivery status",
    "delivery failure",
    "delivery failed",
    "failure notice",
    "returned mail",
    "mail delivery",
    "could not be delivered",
];

/// A bounce that is not a DSN: to a valid VERP target, from a mailer daemon
/// (From `MAILER-DAEMON@` or `postmaster@`, or a null sender with a bounce
/// Subject), with a 4.x.x or 5.x.x code standing alone in its text.
fn text_bounce(
    message: &Message<'_>,
    target: Option<VerpTarget>,
    null_sender: bool,
) -> Option<InboundEvent> {
    let target = target?;
    let from = reply::from_address(message)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let daemon = from.starts_with("mailer-daemon@") || from.starts_with("postmaster@");
    let subject = message.subject().unwrap_or_default().to_ascii_lowercase();
    let bounce_subject = BOUNCE_SUBJECT.iter().any(|w| subject.contains(w));
    if !(daemon || null_sender && bounce_subject) {
        return None;
    }
    let body = message.body_text(0)?;
    let (status, line) = body
        .lines()
        .find_map(|line| Some((find_status(line)?, line)))?;
    let mut diagnostic = line.trim().to_owned();
    if diagnostic.len() > MAX_VALUE {
        let mut cut = MAX_VALUE;
        while !diagnostic.is_char_boundary(cut) {
            cut -= 1;
        }
        diagnostic.truncate(cut);
    }
    Some(InboundEvent::BouncedAsync {
        target: Some(target),
        recipient: None,
        class: class_of(status, Some(&diagnostic)),
        status,
        code: None,
        diagnostic: Some(diagnostic),
        action: Action::Unknown,
        evidence: Evidence::BodyText,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_table() {
        use BounceClass::{Hard, Policy, Soft};
        type Case = ((u8, u16, u16), Option<&'static str>, BounceClass);
        let cases: [Case; 30] = [
            ((5, 1, 1), None, Hard),
            ((5, 1, 2), None, Hard),
            ((5, 1, 3), None, Hard),
            ((5, 1, 6), None, Hard),
            ((5, 1, 10), None, Hard),
            ((5, 1, 0), Some("address rejected"), Hard),
            ((5, 1, 7), None, Policy),
            ((5, 1, 8), Some("sender domain does not exist"), Policy),
            ((5, 0, 0), Some("550 User unknown"), Hard),
            ((5, 0, 0), Some("550 No such user here"), Hard),
            (
                (5, 0, 0),
                Some("550 The email account that you tried to reach does not exist"),
                Hard,
            ),
            ((5, 0, 0), Some("550 Unrouteable address"), Hard),
            (
                (5, 5, 0),
                Some("550 5.5.0 Requested action not taken: mailbox unavailable, unknown user"),
                Hard,
            ),
            ((5, 0, 0), Some("550 message rejected as spam"), Policy),
            ((5, 0, 0), Some("554 Your IP is on our blocklist"), Policy),
            ((5, 0, 0), Some("550 not a registered gateway user"), Soft),
            ((5, 0, 0), None, Soft),
            ((5, 2, 2), Some("552 Mailbox full"), Soft),
            (
                (5, 2, 1),
                Some("550 5.2.1 account disabled, user unknown"),
                Soft,
            ),
            ((5, 2, 0), None, Soft),
            ((5, 3, 4), Some("552 message too big"), Soft),
            ((5, 4, 4), Some("Host or domain name not found"), Soft),
            ((5, 6, 0), None, Soft),
            ((4, 2, 2), Some("452 mailbox full"), Soft),
            ((4, 4, 1), None, Soft),
            ((4, 0, 0), Some("421 try later, you are blocked"), Policy),
            ((4, 7, 0), Some("450 4.7.0 greylisted"), Policy),
            ((4, 7, 28), None, Policy),
            ((5, 7, 1), Some("554 5.7.1 user unknown"), Policy),
            (
                (5, 7, 26),
                Some("unauthenticated email is not accepted (DMARC)"),
                Policy,
            ),
        ];
        for ((class, subject, detail), diagnostic, expected) in cases {
            let status = Enhanced::new(class, subject, detail);
            assert_eq!(
                class_of(status, diagnostic),
                expected,
                "{status} {diagnostic:?}"
            );
        }
        assert_eq!(Hard.name(), "hard");
        assert_eq!(Soft.name(), "soft");
        assert_eq!(Policy.name(), "policy");
    }

    #[test]
    fn status_in_text() {
        let cases = [
            (
                "550 5.1.1 <a@b.test>: unknown",
                Some(Enhanced::new(5, 1, 1)),
            ),
            ("550-5.2.2 full", Some(Enhanced::new(5, 2, 2))),
            (
                "no mailbox here by that name. (#5.1.1)",
                Some(Enhanced::new(5, 1, 1)),
            ),
            ("Status: 4.4.7.", Some(Enhanced::new(4, 4, 7))),
            ("version 1.5.2.4 released", None),
            ("away until 4.12.2023", None),
            ("ip 10.5.1.1 is local", None),
            ("x5.1.1", None),
            ("5.1.1a", None),
            ("2.0.0 ok", None),
            ("", None),
            ("5.", None),
            ("see 5.1.1", Some(Enhanced::new(5, 1, 1))),
        ];
        for (text, expected) in cases {
            assert_eq!(find_status(text), expected, "{text:?}");
        }
    }

    #[test]
    fn generic_status_takes_the_diagnostic_code() {
        let s = |c, su, d| Some(Enhanced::new(c, su, d));
        let cases = [
            (s(5, 0, 0), Some("550 5.1.1 unknown"), s(5, 1, 1)),
            (s(5, 0, 0), Some("550 4.1.1 odd"), s(5, 0, 0)),
            (s(5, 2, 2), Some("550 5.1.1 unknown"), s(5, 2, 2)),
            (None, Some("550 5.7.1 blocked"), s(5, 7, 1)),
            (None, Some("550 blocked"), None),
            (s(4, 0, 0), None, s(4, 0, 0)),
        ];
        for (status, diagnostic, expected) in cases {
            assert_eq!(
                best_status(status, diagnostic),
                expected,
                "{status:?} {diagnostic:?}"
            );
        }
    }
}
