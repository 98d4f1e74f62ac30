//! Delivery status notifications (RFC 3464): what a remote MTA says about the
//! recipients of a message it could not (or could) deliver.
//!
//! A DSN is a `multipart/report; report-type=delivery-status` with a
//! human-readable part, a `message/delivery-status` part and, usually, the
//! returned original (`message/rfc822` or `text/rfc822-headers`). mail-parser
//! splits the MIME structure; the delivery-status part is read here: one block
//! of per-message fields (`Reporting-MTA`, …), a blank line, then one block per
//! recipient (`Final-Recipient`, `Action`, `Status`, `Diagnostic-Code`,
//! `Remote-MTA`, …). Postfix, Exim, Sendmail, Exchange and Gmail all write this
//! format; `message/global-delivery-status` (RFC 6533) is read the same way.
//!
//! What it does not do: guess. A message without a delivery-status part is not a
//! DSN here ([`parse`] answers `None`); whether such a message is a bounce at all
//! is [`classify()`](super::classify())'s business. Blocks are recognised by their
//! fields rather than their position, so a missing per-message block or an extra
//! blank line does not shift recipients.

use mail_parser::{Message, MessageParser, MimeHeaders};

use volley_smtp::reply::Enhanced;

use super::fields::{blocks, typed_address, Block};
use super::original::{self, OriginalHeaders};

/// Most recipient blocks read from one DSN.
pub const MAX_RECIPIENTS: usize = 1000;

/// What the reporting MTA did with a recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Could not be delivered, and will not be: a bounce.
    Failed,
    /// Not delivered yet; still being retried.
    Delayed,
    /// Delivered to the recipient's mailbox.
    Delivered,
    /// Handed to a system that sends no DSNs.
    Relayed,
    /// Delivered and forwarded to several addresses (a list or alias).
    Expanded,
    /// Missing or not one of the above.
    Unknown,
}

impl Action {
    /// Reads an `Action:` value (any case; a trailing comment is ignored).
    pub fn parse(value: &str) -> Action {
        let word = value
            .split(|c: char| c.is_whitespace() || c == '(')
            .next()
            .unwrap_or_default();
        match word.to_ascii_lowercase().as_str() {
            "failed" => Action::Failed,
            "delayed" => Action::Delayed,
            "delivered" => Action::Delivered,
            "relayed" => Action::Relayed,
            "expanded" => Action::Expanded,
            _ => Action::Unknown,
        }
    }

    /// The RFC 3464 name (`unknown` for [`Action::Unknown`]).
    pub fn name(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
            Action::Unknown => "unknown",
        }
    }
}

/// The per-recipient fields of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// `Final-Recipient:`, the address type removed: the address that failed.
    pub final_recipient: Option<String>,
    /// `Original-Recipient:`, the address type removed: the address as the
    /// sender gave it (before aliasing or forwarding).
    pub original_recipient: Option<String>,
    /// `Action:`.
    pub action: Action,
    /// `Status:`, an enhanced status code; `None` if missing or unreadable.
    pub status: Option<Enhanced>,
    /// `Diagnostic-Code:` after its type: for `smtp;`, the remote server's reply
    /// such as `550 5.1.1 <a@b.test>: Recipient address rejected: User unknown`.
    pub diagnostic: Option<String>,
    /// The reply code at the start of an `smtp` diagnostic (e.g. 550).
    pub reply_code: Option<u16>,
    /// `Remote-MTA:` without its type: the server that gave the diagnostic.
    pub remote_mta: Option<String>,
}

impl RecipientStatus {
    /// The address the report is about: the final recipient, else the original.
    pub fn recipient(&self) -> Option<&str> {
        self.final_recipient
            .as_deref()
            .or(self.original_recipient.as_deref())
    }
}

/// A parsed DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// `Reporting-MTA:` without its type: who wrote the report.
    pub reporting_mta: Option<String>,
    /// One entry per recipient block, in order (at most [`MAX_RECIPIENTS`]).
    pub recipients: Vec<RecipientStatus>,
    /// The returned original's identifying fields, if a copy came back.
    pub original: Option<OriginalHeaders>,
}

/// Parses the DSN in a raw message; `None` when it is not one.
pub fn parse_bytes(raw: &[u8]) -> Option<Dsn> {
    parse(&MessageParser::default().parse(raw)?)
}

/// Reads the DSN in a parsed message: its first `message/delivery-status` (or
/// `message/global-delivery-status`) part, outside any returned original.
/// `None` when there is no such part.
pub fn parse(message: &Message<'_>) -> Option<Dsn> {
    let part = message.parts.iter().find(|p| {
        p.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("delivery-status")
                        || s.eq_ignore_ascii_case("global-delivery-status")
                })
        })
    })?;
    let text = String::from_utf8_lossy(original::part_bytes(part));
    Some(parse_status_fields(&text, original::find(message)))
}

/// Reads the body of a delivery-status part.
pub fn parse_status_fields(text: &str, original: Option<OriginalHeaders>) -> Dsn {
    let mut dsn = Dsn {
        reporting_mta: None,
        recipients: Vec::new(),
        original,
    };
    for block in blocks(text) {
        if is_recipient_block(&block) {
            if dsn.recipients.len() < MAX_RECIPIENTS {
                dsn.recipients.push(recipient(&block));
            }
        } else if dsn.reporting_mta.is_none() {
            dsn.reporting_mta = block
                .get("reporting-mta")
                .and_then(typed_address)
                .map(str::to_owned);
        }
    }
    dsn
}

fn is_recipient_block(block: &Block<'_>) -> bool {
    ["final-recipient", "original-recipient", "action", "status"]
        .iter()
        .any(|name| block.has(name))
}

fn recipient(block: &Block<'_>) -> RecipientStatus {
    let address = |name| block.get(name).and_then(typed_address).map(str::to_owned);
    let diagnostic = block
        .get("diagnostic-code")
        .map(|value| match value.split_once(';') {
            Some((_, text)) => text.trim(),
            None => value,
        });
    let smtp_diagnostic = block.get("diagnostic-code").is_some_and(|v| {
        v.trim_start()
            .get(..4)
            .is_some_and(|t| t.eq_ignore_ascii_case("smtp"))
    });
    RecipientStatus {
        final_recipient: address("final-recipient"),
        original_recipient: address("original-recipient"),
        action: block.get("action").map_or(Action::Unknown, Action::parse),
        status: block.get("status").and_then(parse_status),
        diagnostic: diagnostic.filter(|d| !d.is_empty()).map(str::to_owned),
        reply_code: diagnostic.filter(|_| smtp_diagnostic).and_then(reply_code),
        remote_mta: address("remote-mta"),
    }
}

/// An enhanced status code `class.subject.detail` at the start of `text` (white
/// space and a trailing comment allowed): class 2, 4 or 5, subject and detail of
/// one to three digits.
pub fn parse_status(text: &str) -> Option<Enhanced> {
    let code = text
        .trim()
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()?;
    status_at(code.as_bytes())
        .filter(|(_, used)| *used == code.len())
        .map(|(e, _)| e)
}

/// An enhanced status code at the start of `bytes` and the bytes it takes.
pub(crate) fn status_at(bytes: &[u8]) -> Option<(Enhanced, usize)> {
    if !matches!(bytes.first(), Some(b'2' | b'4' | b'5')) {
        return None;
    }
    Enhanced::parse_at(bytes)
}

/// The reply code at the start of an SMTP reply text: three digits, the first 2
/// to 5, followed by a space, a dash or nothing.
fn reply_code(text: &str) -> Option<u16> {
    match text.as_bytes() {
        [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', rest @ ..]
            if matches!(rest.first(), None | Some(b' ' | b'-')) =>
        {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Dsn {
        let raw = crate::testing::fixture(name);
        parse_bytes(&raw).unwrap_or_else(|| panic!("{name}: not a DSN"))
    }

    fn status(s: &str) -> Option<Enhanced> {
        parse_status(s)
    }

    #[test]
    fn postfix_unknown_user() {
        let dsn = fixture("postfix-unknown-user.eml");
        assert_eq!(dsn.reporting_mta.as_deref(), Some("mail.acme.test"));
        assert_eq!(
            dsn.recipients,
            vec![RecipientStatus {
                final_recipient: Some("nobody@example.test".into()),
                original_recipient: Some("nobody@example.test".into()),
                action: Action::Failed,
                status: status("5.1.1"),
                diagnostic: Some(
                    "550 5.1.1 <nobody@example.test>: Recipient address rejected: \
                     User unknown in virtual mailbox table"
                        .into()
                ),
                reply_code: Some(550),
                remote_mta: Some("mx.example.test".into()),
            }]
        );
        let original = dsn.original.unwrap_or_default();
        assert_eq!(original.to.as_deref(), Some("nobody@example.test"));
        assert_eq!(
            original.message_id.as_deref(),
            Some("6553f100.00000000000000a1@acme.test")
        );
        assert_eq!(
            original.volley,
            vec![("X-Volley-Campaign".to_owned(), "42".to_owned())]
        );
    }

    #[test]
    fn postfix_mailbox_full_with_headers_only() {
        let dsn = fixture("postfix-mailbox-full.eml");
        assert_eq!(dsn.recipients.len(), 1);
        let r = &dsn.recipients[0];
        assert_eq!(r.final_recipient.as_deref(), Some("full@example.test"));
        assert_eq!(r.original_recipient, None);
        assert_eq!(r.action, Action::Failed);
        assert_eq!(r.status, status("5.2.2"));
        assert_eq!(r.reply_code, Some(552));
        assert_eq!(
            dsn.original.and_then(|o| o.to).as_deref(),
            Some("full@example.test")
        );
    }

    #[test]
    fn postfix_delayed() {
        let dsn = fixture("postfix-delayed.eml");
        let r = &dsn.recipients[0];
        assert_eq!(r.action, Action::Delayed);
        assert_eq!(r.status, status("4.4.1"));
        assert_eq!(r.reply_code, None);
        assert_eq!(
            r.diagnostic.as_deref(),
            Some("connect to mx.slow.test[192.0.2.7]:25: Connection timed out")
        );
    }

    #[test]
    fn several_recipients_and_folded_fields() {
        let dsn = fixture("multi-recipient.eml");
        let got: Vec<_> = dsn
            .recipients
            .iter()
            .map(|r| (r.recipient().unwrap_or_default(), r.action, r.status))
            .collect();
        assert_eq!(
            got,
            vec![
                ("one@example.test", Action::Failed, status("5.1.1")),
                ("two@example.test", Action::Delayed, status("4.2.2")),
                ("three@example.test", Action::Delivered, status("2.0.0")),
                ("four@example.test", Action::Failed, status("5.7.1")),
            ]
        );
        assert_eq!(
            dsn.recipients[3].diagnostic.as_deref(),
            Some("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.test; see https://www.spamhaus.test/query/ip/192.0.2.1")
        );
    }

    #[test]
    fn rfc3464_appendix_examples() {
        // Appendix A.1-style: a simple failure, with a comment after Status.
        let dsn = fixture("rfc3464-simple.eml");
        assert_eq!(dsn.reporting_mta.as_deref(), Some("cs.utk.test"));
        let r = &dsn.recipients[0];
        assert_eq!(
            r.final_recipient.as_deref(),
            Some("louisl@larry.slip.umd.test")
        );
        assert_eq!(
            r.original_recipient.as_deref(),
            Some("louisl@larry.slip.umd.test")
        );
        assert_eq!(r.status, status("4.0.0"));
        assert_eq!(r.action, Action::Failed);
        assert_eq!(r.diagnostic.as_deref(), Some("426 connection timed out"));
        // Appendix A.3-style: several recipients, multiple types of failure.
        let dsn = fixture("rfc3464-multiple.eml");
        let got: Vec<_> = dsn
            .recipients
            .iter()
            .map(|r| (r.recipient().unwrap_or_default(), r.action, r.status))
            .collect();
        assert_eq!(
            got,
            vec![
                ("arathib@vnet.ibm.test", Action::Failed, status("5.0.0")),
                ("johnh@hpnjld.njd.hp.test", Action::Delayed, status("4.0.0")),
                ("wsnell@sdcc13.ucsd.test", Action::Failed, status("5.0.0")),
            ]
        );
        assert_eq!(
            dsn.recipients[0].diagnostic.as_deref(),
            Some("550 'arathib@vnet.IBM.test' is not a registered gateway user")
        );
        assert_eq!(
            dsn.recipients[0].remote_mta.as_deref(),
            Some("vnet.ibm.test")
        );
    }

    #[test]
    fn exim_and_exchange_styles() {
        let dsn = fixture("exim-unknown-user.eml");
        let r = &dsn.recipients[0];
        assert_eq!(r.final_recipient.as_deref(), Some("gone@example.test"));
        assert_eq!(r.status, status("5.0.0"));
        assert_eq!(r.reply_code, Some(550));
        assert_eq!(r.diagnostic.as_deref(), Some("550 Unrouteable address"));
        // Exchange: the text in a multipart/alternative, a base64 delivery-status
        // part with CRLF inside, a three-digit detail.
        let dsn = fixture("exchange-ndr.eml");
        let r = &dsn.recipients[0];
        assert_eq!(r.final_recipient.as_deref(), Some("missing@contoso.test"));
        assert_eq!(r.action, Action::Failed);
        assert_eq!(r.status, status("5.1.10"));
        assert_eq!(r.reply_code, Some(550));
        assert_eq!(
            r.remote_mta.as_deref(),
            Some("AM0PR01MB1234.eurprd01.prod.exchangelabs.test")
        );
    }

    #[test]
    fn not_a_dsn() {
        assert_eq!(parse_bytes(b"Subject: hi\r\n\r\nhello\r\n"), None);
        assert_eq!(parse_bytes(b""), None);
    }

    #[test]
    fn status_codes() {
        let cases = [
            ("5.1.1", Some(Enhanced::new(5, 1, 1))),
            (" 4.2.2 (mailbox full)", Some(Enhanced::new(4, 2, 2))),
            ("5.1.10", Some(Enhanced::new(5, 1, 10))),
            ("2.0.0", Some(Enhanced::new(2, 0, 0))),
            ("5.999.999", Some(Enhanced::new(5, 999, 999))),
            ("5.1.1000", None),
            ("3.1.1", None),
            ("5.1", None),
            ("5..1", None),
            ("5.1.1x", None),
            ("", None),
            ("550", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_status(text), expected, "{text:?}");
        }
        assert_eq!(reply_code("550 5.1.1 x"), Some(550));
        assert_eq!(reply_code("550-5.1.1 x"), Some(550));
        assert_eq!(reply_code("421"), Some(421));
        assert_eq!(reply_code("5500"), None);
        assert_eq!(reply_code("650 x"), None);
        for (text, action) in [
            ("failed", Action::Failed),
            ("FAILED (bad address)", Action::Failed),
            ("delayed", Action::Delayed),
            ("Delivered", Action::Delivered),
            ("relayed", Action::Relayed),
            ("expanded", Action::Expanded),
            ("bounced", Action::Unknown),
        ] {
            assert_eq!(Action::parse(text), action, "{text}");
        }
    }
}
