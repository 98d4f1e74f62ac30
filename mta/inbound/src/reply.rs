//! Plain replies that ask to be removed: a Subject or first body line of
//! `unsubscribe` or `delete`.
//!
//! The word must stand alone: case does not matter, white space around it and
//! trailing punctuation (`.`, `!`, `?`) are ignored, and so are reply and forward
//! markers in the Subject (`Re:`, `RE:`, `Fwd:`, `AW:`, `SV:`, `[External]`…).
//! The body line is the first non-empty line of the first text part (HTML turned
//! to text when there is no plain part) that is not quoted (`>`). "Please
//! unsubscribe me" is not recognised: a person's sentence is left to a person.
//!
//! Automatic mail is never a request: [`is_automatic`] tells vacation replies and
//! other machine-sent messages (RFC 3834 `Auto-Submitted`, `Precedence: bulk`,
//! `X-Autoreply`, …) apart.

use mail_parser::{HeaderValue, Message};

/// Where the keyword was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The Subject is the keyword (after reply markers).
    Subject,
    /// The first unquoted, non-empty line of the body is the keyword.
    Body,
}

/// Whether `text` is `unsubscribe` or `delete`, give or take case, white space
/// and trailing punctuation.
pub fn is_keyword(text: &str) -> bool {
    let word = text
        .trim()
        .trim_end_matches(['.', '!', '?', ' ', '\t'])
        .trim_start();
    word.eq_ignore_ascii_case("unsubscribe") || word.eq_ignore_ascii_case("delete")
}

/// The Subject without reply and forward markers (`Re:`, `Fwd:`, `[tag]`…).
pub fn strip_reply_markers(subject: &str) -> &str {
    const MARKERS: [&str; 9] = ["re", "fw", "fwd", "aw", "sv", "vs", "wg", "tr", "antw"];
    let mut rest = subject.trim();
    loop {
        if let Some(tag) = rest.strip_prefix('[') {
            match tag.find(']') {
                Some(end) => {
                    rest = tag[end + 1..].trim_start();
                    continue;
                }
                None => return rest,
            }
        }
        let Some((head, tail)) = rest.split_once(':') else {
            return rest;
        };
        // "Re[2]:" and "Re(2):" count too.
        let head = head.trim();
        let word = head.split(['[', '(']).next().unwrap_or_default();
        if MARKERS.iter().any(|m| m.eq_ignore_ascii_case(word)) {
            rest = tail.trim_start();
        } else {
            return rest;
        }
    }
}

/// Whether the message asks to unsubscribe, and where it says so. The caller
/// checks [`is_automatic`] first.
pub fn unsubscribe_keyword(message: &Message<'_>) -> Option<Trigger> {
    if message
        .subject()
        .is_some_and(|s| is_keyword(strip_reply_markers(s)))
    {
        return Some(Trigger::Subject);
    }
    let body = message.body_text(0)?;
    let first = body
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('>'))?;
    is_keyword(first).then_some(Trigger::Body)
}

/// Whether the message was sent by a program rather than a person: an
/// `Auto-Submitted` other than `no` (RFC 3834), `Precedence: bulk|junk|list|
/// auto_reply`, or one of the vendor auto-reply fields (`X-Autoreply`,
/// `X-Autorespond`, `X-Auto-Response-Suppress: All|OOF|AutoReply`).
pub fn is_automatic(message: &Message<'_>) -> bool {
    let text = |name: &str| {
        message.header(name).and_then(|v| match v {
            HeaderValue::Text(t) => Some(t.trim().to_ascii_lowercase()),
            HeaderValue::TextList(list) => list.first().map(|t| t.trim().to_ascii_lowercase()),
            _ => None,
        })
    };
    if text("Auto-Submitted").is_some_and(|v| !v.is_empty() && !v.starts_with("no")) {
        return true;
    }
    if text("Precedence")
        .is_some_and(|v| matches!(v.as_str(), "bulk" | "junk" | "list" | "auto_reply"))
    {
        return true;
    }
    if message.header("X-Autoreply").is_some() || message.header("X-Autorespond").is_some() {
        return true;
    }
    text("X-Auto-Response-Suppress").is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|w| matches!(w, "all" | "oof" | "autoreply"))
    })
}

/// The address of the first `From:` mailbox.
pub fn from_address(message: &Message<'_>) -> Option<String> {
    let from = message.from()?;
    let address = from.first()?.address()?.trim();
    address.contains('@').then(|| address.to_owned())
}

#[cfg(test)]
mod tests {
    use mail_parser::MessageParser;

    use super::*;
    use crate::testing::fixture;

    fn parse(raw: &[u8]) -> Message<'_> {
        MessageParser::default()
            .parse(raw)
            .unwrap_or_else(|| panic!("unparseable"))
    }

    #[test]
    fn keywords() {
        let cases = [
            ("unsubscribe", true),
            ("  UNSUBSCRIBE  ", true),
            ("Unsubscribe.", true),
            ("unsubscribe!!", true),
            ("unsubscribe ?", true),
            ("delete", true),
            ("Delete!", true),
            ("unsubscribe me", false),
            ("please unsubscribe", false),
            ("unsubscribed", false),
            ("", false),
            ("...", false),
        ];
        for (text, expected) in cases {
            assert_eq!(is_keyword(text), expected, "{text:?}");
        }
    }

    #[test]
    fn reply_markers() {
        let cases = [
            ("Re: unsubscribe", "unsubscribe"),
            ("RE: Re: Unsubscribe", "Unsubscribe"),
            ("Fwd: re: delete", "delete"),
            ("AW: unsubscribe", "unsubscribe"),
            ("Re[2]: unsubscribe", "unsubscribe"),
            ("[External] Re: unsubscribe", "unsubscribe"),
            ("[unclosed unsubscribe", "[unclosed unsubscribe"),
            ("Meeting: unsubscribe", "Meeting: unsubscribe"),
            ("unsubscribe", "unsubscribe"),
        ];
        for (subject, expected) in cases {
            assert_eq!(strip_reply_markers(subject), expected, "{subject:?}");
        }
    }

    #[test]
    fn subject_or_first_line() {
        let subject = parse(b"From: a@b.test\r\nSubject: Re: Unsubscribe!\r\n\r\nthanks\r\n");
        assert_eq!(unsubscribe_keyword(&subject), Some(Trigger::Subject));
        let body = fixture("reply-body-unsubscribe.eml");
        assert_eq!(unsubscribe_keyword(&parse(&body)), Some(Trigger::Body));
        let html = fixture("reply-html-delete.eml");
        assert_eq!(unsubscribe_keyword(&parse(&html)), Some(Trigger::Body));
        let quoted = parse(
            b"From: a@b.test\r\nSubject: Re: news\r\n\r\n> unsubscribe\r\n\r\nI liked it.\r\n",
        );
        assert_eq!(unsubscribe_keyword(&quoted), None);
        let sentence =
            parse(b"From: a@b.test\r\nSubject: Re: news\r\n\r\nPlease unsubscribe me\r\n");
        assert_eq!(unsubscribe_keyword(&sentence), None);
        let empty = parse(b"From: a@b.test\r\nSubject: Re: news\r\n\r\n");
        assert_eq!(unsubscribe_keyword(&empty), None);
    }

    #[test]
    fn automatic_messages() {
        let cases: [(&[u8], bool); 9] = [
            (b"Auto-Submitted: auto-replied\r\n", true),
            (b"Auto-Submitted: auto-generated; owner-email=x@y\r\n", true),
            (b"Auto-Submitted: no\r\n", false),
            (b"Precedence: bulk\r\n", true),
            (b"Precedence: first-class\r\n", false),
            (b"X-Autoreply: yes\r\n", true),
            (b"X-Autorespond: x\r\n", true),
            (b"X-Auto-Response-Suppress: DR, OOF\r\n", true),
            (b"X-Auto-Response-Suppress: DR\r\n", false),
        ];
        for (header, expected) in cases {
            let mut raw = b"From: a@b.test\r\nSubject: x\r\n".to_vec();
            raw.extend_from_slice(header);
            raw.extend_from_slice(b"\r\nbody\r\n");
            assert_eq!(
                is_automatic(&parse(&raw)),
                expected,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        let raw = fixture("vacation.eml");
        assert!(is_automatic(&parse(&raw)));
    }

    #[test]
    fn from_addresses() {
        let m = parse(b"From: \"Ann B\" <Ann@Example.test>\r\n\r\nx\r\n");
        assert_eq!(from_address(&m).as_deref(), Some("Ann@Example.test"));
        let m = parse(b"From: nobody\r\n\r\nx\r\n");
        assert_eq!(from_address(&m), None);
        let m = parse(b"Subject: x\r\n\r\nx\r\n");
        assert_eq!(from_address(&m), None);
    }
}
