//! Complaint reports in the Abuse Reporting Format (RFC 5965): what a mailbox
//! provider sends through its feedback loop when a user marks a message as spam.
//!
//! A report is a `multipart/report; report-type=feedback-report` whose second
//! part, `message/feedback-report`, is one block of fields (`Feedback-Type`,
//! `User-Agent`, `Version`, `Original-Mail-From`, `Original-Rcpt-To`,
//! `Arrival-Date`, `Reported-Domain`, `Source-IP`, …), and whose third part is
//! the original message or its header. Providers often redact the recipient
//! (`To:` and `Original-Rcpt-To`); the original's `Return-Path` (or
//! `Original-Mail-From`), our VERP address, then names the recipient instead.

use mail_parser::{Message, MessageParser, MimeHeaders};

use super::fields::{address_in, blocks};
use super::original::{self, OriginalHeaders};

/// Most `Original-Rcpt-To` / `Reported-Domain` values kept.
const MAX_VALUES: usize = 100;

/// The kind of feedback (RFC 5965 §7.3 registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackType {
    /// Unsolicited mail: the user pressed "this is spam".
    Abuse,
    /// A failed authentication check (RFC 6591): a report about the sender's
    /// setup, not a user's complaint.
    AuthFailure,
    /// Fraud or phishing.
    Fraud,
    /// The user says the message is *not* spam.
    NotSpam,
    /// A virus was found in the message.
    Virus,
    /// Any other feedback (`other`).
    Other,
    /// A type not in the registry, or a missing field (empty): kept as written.
    Unknown(String),
}

impl FeedbackType {
    /// Reads a `Feedback-Type:` value (any case).
    pub fn parse(value: &str) -> FeedbackType {
        let word = value.split_whitespace().next().unwrap_or_default();
        match word.to_ascii_lowercase().as_str() {
            "abuse" => FeedbackType::Abuse,
            "auth-failure" => FeedbackType::AuthFailure,
            "fraud" => FeedbackType::Fraud,
            "not-spam" => FeedbackType::NotSpam,
            "virus" => FeedbackType::Virus,
            "other" => FeedbackType::Other,
            _ => FeedbackType::Unknown(word.chars().take(64).collect()),
        }
    }

    /// The registered name, or the unknown type as written.
    pub fn name(&self) -> &str {
        match self {
            FeedbackType::Abuse => "abuse",
            FeedbackType::AuthFailure => "auth-failure",
            FeedbackType::Fraud => "fraud",
            FeedbackType::NotSpam => "not-spam",
            FeedbackType::Virus => "virus",
            FeedbackType::Other => "other",
            FeedbackType::Unknown(name) => name,
        }
    }
}

/// A parsed feedback report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackReport {
    /// `Feedback-Type:`.
    pub feedback_type: FeedbackType,
    /// `User-Agent:`: the software that wrote the report.
    pub user_agent: Option<String>,
    /// `Version:` (1 for RFC 5965).
    pub version: Option<String>,
    /// `Original-Mail-From:` as an address: the envelope sender of the reported
    /// message (our VERP address for a campaign message).
    pub original_mail_from: Option<String>,
    /// Every `Original-Rcpt-To:` address: the envelope recipients.
    pub original_rcpt_to: Vec<String>,
    /// `Arrival-Date:` as written.
    pub arrival_date: Option<String>,
    /// Every `Reported-Domain:`.
    pub reported_domain: Vec<String>,
    /// `Source-IP:`: the address the reported message came from.
    pub source_ip: Option<String>,
    /// The reported message's identifying fields, if it came back.
    pub original: Option<OriginalHeaders>,
}

/// Parses the feedback report in a raw message; `None` when it is not one.
pub fn parse_bytes(raw: &[u8]) -> Option<FeedbackReport> {
    parse(&MessageParser::default().parse(raw)?)
}

/// Reads the feedback report in a parsed message: its first
/// `message/feedback-report` part. `None` when there is no such part.
pub fn parse(message: &Message<'_>) -> Option<FeedbackReport> {
    let part = message.parts.iter().find(|p| {
        p.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("feedback-report"))
        })
    })?;
    let text = String::from_utf8_lossy(original::part_bytes(part));
    let fields = blocks(&text).into_iter().next().unwrap_or_default();
    let text_of = |name| fields.get(name).map(str::to_owned);
    let address = |value: &str| {
        address_in(value)
            .or_else(|| Some(value.trim()).filter(|v| !v.is_empty()))
            .map(str::to_owned)
    };
    Some(FeedbackReport {
        feedback_type: FeedbackType::parse(fields.get("feedback-type").unwrap_or_default()),
        user_agent: text_of("user-agent"),
        version: text_of("version"),
        original_mail_from: fields.get("original-mail-from").and_then(address),
        original_rcpt_to: fields
            .all("original-rcpt-to")
            .filter_map(address)
            .take(MAX_VALUES)
            .collect(),
        arrival_date: text_of("arrival-date"),
        reported_domain: fields
            .all("reported-domain")
            .map(str::to_owned)
            .take(MAX_VALUES)
            .collect(),
        source_ip: text_of("source-ip"),
        original: original::find(message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fixture;

    #[test]
    fn rfc5965_style_report() {
        let report = parse_bytes(&fixture("arf-abuse.eml")).unwrap_or_else(|| panic!("not ARF"));
        let original = report.original.clone().unwrap_or_default();
        assert_eq!(report.feedback_type, FeedbackType::Abuse);
        assert_eq!(report.user_agent.as_deref(), Some("SomeGenerator/1.0"));
        assert_eq!(report.version.as_deref(), Some("1"));
        assert_eq!(
            report.original_mail_from.as_deref(),
            Some("b-aaaaaaaaaaacuaaaaaaaaaaaa4aaaaaf6cyw7t26wgkl37go@bounce.acme.test")
        );
        assert_eq!(report.original_rcpt_to, ["user@example.test"]);
        assert_eq!(
            report.arrival_date.as_deref(),
            Some("Thu, 8 Mar 2005 14:00:00 EDT")
        );
        assert_eq!(report.reported_domain, ["acme.test"]);
        assert_eq!(report.source_ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(
            original.return_path.as_deref(),
            report.original_mail_from.as_deref()
        );
        assert_eq!(original.to.as_deref(), Some("user@example.test"));
        assert_eq!(
            original.message_id.as_deref(),
            Some("8787KJKJ3K4J3K4J3K4J3.mail@acme.test")
        );
    }

    #[test]
    fn redacted_report_keeps_the_return_path() {
        let report = parse_bytes(&fixture("arf-redacted.eml")).unwrap_or_else(|| panic!("not ARF"));
        assert_eq!(report.feedback_type, FeedbackType::Abuse);
        assert!(report.original_rcpt_to.is_empty());
        assert_eq!(report.original_mail_from, None);
        let original = report.original.unwrap_or_default();
        assert_eq!(original.to.as_deref(), Some("redacted@mailbox.test"));
        assert!(original
            .return_path
            .is_some_and(|p| p.ends_with("@bounce.acme.test")));
    }

    #[test]
    fn feedback_types() {
        for (text, expected) in [
            ("abuse", FeedbackType::Abuse),
            ("Abuse", FeedbackType::Abuse),
            ("auth-failure", FeedbackType::AuthFailure),
            ("fraud", FeedbackType::Fraud),
            ("not-spam", FeedbackType::NotSpam),
            ("virus", FeedbackType::Virus),
            ("other", FeedbackType::Other),
            ("opt-out", FeedbackType::Unknown("opt-out".into())),
            ("", FeedbackType::Unknown(String::new())),
        ] {
            assert_eq!(FeedbackType::parse(text), expected, "{text}");
            assert_eq!(expected.name(), text.to_ascii_lowercase());
        }
    }

    #[test]
    fn not_arf() {
        assert_eq!(parse_bytes(&fixture("postfix-unknown-user.eml")), None);
        assert_eq!(
            parse_bytes(b"Subject: x\r\n\r\nFeedback-Type: abuse\r\n"),
            None
        );
    }
}
