//! SMTP replies (RFC 5321 §4.2) and enhanced status codes (RFC 3463), parsed once.
//!
//! [`parse_reply`] looks at the front of a read buffer and answers
//! [`Parse::Incomplete`] until a whole (possibly multi-line) reply is there, then hands
//! back the [`Reply`] and how many bytes it used. It enforces a line limit without
//! waiting for a line end, so a server that never sends one cannot grow the buffer
//! without bound. It never panics, whatever the bytes.

use std::borrow::Cow;
use std::fmt;

use bytes::BufMut;
use memchr::memchr;

use crate::decimal::put_decimal;

/// Longest reply line accepted by [`parse_reply`], line end included.
///
/// RFC 5321 §4.5.3.1.5 sets 512; real servers (long `250-` EHLO lines, Exchange's
/// diagnostics) exceed it, so we are liberal up to this bound.
pub const MAX_LINE: usize = 2048;

/// Most lines one reply may have; a longer reply is an error, not a memory sink.
pub const MAX_LINES: usize = 256;

/// An enhanced mail system status code (RFC 3463), such as `5.1.1` or `2.0.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Enhanced {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// What the status is about: 1 addressing, 2 mailbox, 3 mail system, 4 network,
    /// 5 protocol, 6 content, 7 security.
    pub subject: u16,
    /// The detail within the subject, e.g. the `1` of `5.1.1` (bad destination mailbox).
    pub detail: u16,
}

impl Enhanced {
    /// An enhanced status code from its three parts.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Enhanced {
        Enhanced {
            class,
            subject,
            detail,
        }
    }

    /// Reads `class.subject.detail` at the start of `text` (class any one digit,
    /// subject and detail one to three): the code and the bytes it takes.
    pub fn parse_at(text: &[u8]) -> Option<(Enhanced, usize)> {
        let class = text.first().filter(|c| c.is_ascii_digit())? - b'0';
        if text.get(1) != Some(&b'.') {
            return None;
        }
        let (subject, after_subject) = parse_number(text, 2)?;
        if text.get(after_subject) != Some(&b'.') {
            return None;
        }
        let (detail, end) = parse_number(text, after_subject + 1)?;
        Some((Enhanced::new(class, subject, detail), end))
    }

    /// Reads `class.subject.detail` at the start of `text` when `class` is the ASCII
    /// digit `class_digit` and the code ends the text or is followed by a space.
    /// Returns the code and the bytes to skip (the code and one space).
    fn parse_prefix(text: &[u8], class_digit: u8) -> Option<(Enhanced, usize)> {
        if text.first() != Some(&class_digit) {
            return None;
        }
        let (code, end) = Enhanced::parse_at(text)?;
        let used = match text.get(end) {
            None => end,
            Some(b' ') => end + 1,
            Some(_) => return None,
        };
        Some((code, used))
    }
}

/// One to three ASCII digits at `text[start..]` (RFC 3463 limits subject and detail to
/// three): the value and the index after them.
fn parse_number(text: &[u8], start: usize) -> Option<(u16, usize)> {
    let digits = text
        .get(start..)?
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let value = text[start..start + digits]
        .iter()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    Some((value, start + digits))
}

/// Room for the longest dotted form [`Enhanced::text_in`] writes ("255.65535.65535").
pub const ENHANCED_TEXT_MAX: usize = 15;

impl Enhanced {
    /// The dotted form ("5.1.1"), written into `buf`: the same text as
    /// `to_string()` without allocating, for the per-message log line.
    pub fn text_in<'b>(&self, buf: &'b mut [u8; ENHANCED_TEXT_MAX]) -> &'b str {
        let mut rest = &mut buf[..];
        put_decimal(&mut rest, u64::from(self.class), 0);
        rest.put_u8(b'.');
        put_decimal(&mut rest, u64::from(self.subject), 0);
        rest.put_u8(b'.');
        put_decimal(&mut rest, u64::from(self.detail), 0);
        let len = ENHANCED_TEXT_MAX - rest.len();
        std::str::from_utf8(&buf[..len]).unwrap_or_default()
    }
}

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A complete SMTP reply: the three-digit code, the enhanced status code when the
/// server gave one, and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The basic reply code, 200 to 599.
    pub code: u16,
    /// The enhanced status code from the first line that carries one whose class
    /// matches the basic code's first digit.
    pub enhanced: Option<Enhanced>,
    /// Each line's text after `250-`/`250 `, with a leading enhanced code (of the
    /// matching class) stripped; non-UTF-8 bytes are replaced by U+FFFD.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply, for replies the client makes up itself (connection lost,
    /// refused locally) and for tests.
    pub fn new(code: u16, enhanced: Option<Enhanced>, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    /// 2xx: the command succeeded.
    pub fn is_positive_completion(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx: go on (354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: failed for now; trying again later may work.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: failed; do not try again as is.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// All lines joined by single spaces, for logs and bounce messages.
    pub fn text(&self) -> Cow<'_, str> {
        match self.lines.as_slice() {
            [] => Cow::Borrowed(""),
            [line] => Cow::Borrowed(line),
            lines => Cow::Owned(lines.join(" ")),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = self.enhanced {
            write!(f, " {enhanced}")?;
        }
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == 0 { " " } else { " / " };
            write!(f, "{sep}{line}")?;
        }
        Ok(())
    }
}

/// What [`parse_reply`] found at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// No complete reply yet: read more and call again with the longer buffer.
    Incomplete,
    /// A complete reply, and how many bytes of the buffer it used.
    Complete(Reply, usize),
}

/// Why the bytes at the front of the buffer are not a reply. Each one means the
/// session cannot go on: the client no longer knows which command a reply answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line is longer than the limit (or the buffer holds that many bytes and no
    /// line end yet).
    #[error("reply line longer than {limit} bytes")]
    LineTooLong {
        /// The limit, line end included.
        limit: usize,
    },
    /// The reply has more lines than [`MAX_LINES`].
    #[error("reply has more than {limit} lines")]
    TooManyLines {
        /// The limit.
        limit: usize,
    },
    /// A line does not start with a three-digit code from 200 to 599.
    #[error("reply line does not start with a code from 200 to 599: {line:?}")]
    BadCode {
        /// The start of the offending line.
        line: String,
    },
    /// The character after the code is neither `-`, a space nor the line end.
    #[error("reply line has no '-' or ' ' after its code: {line:?}")]
    BadSeparator {
        /// The start of the offending line.
        line: String,
    },
    /// A continuation line carries a different code from the first line.
    #[error("reply line with code {found} inside a {expected} reply")]
    CodeMismatch {
        /// The first line's code.
        expected: u16,
        /// The code on the later line.
        found: u16,
    },
}

/// Parses one reply from the front of `buf` with the default [`MAX_LINE`] limit.
pub fn parse_reply(buf: &[u8]) -> Result<Parse, ReplyError> {
    parse_reply_limited(buf, MAX_LINE)
}

/// Parses one reply from the front of `buf`; lines (line end included) may be at most
/// `max_line` bytes.
///
/// Line ends are CRLF or, leniently, a bare LF. A reply is complete at its first line
/// whose code is followed by a space or by the line end.
pub fn parse_reply_limited(buf: &[u8], max_line: usize) -> Result<Parse, ReplyError> {
    // First pass: find the end and validate, without allocating, so that a reply fed a
    // few bytes at a time costs no allocation per attempt.
    let mut pos = 0;
    let mut code = None;
    let mut count = 0;
    let end = loop {
        let Some((line, next)) = next_line(buf, pos, max_line)? else {
            return Ok(Parse::Incomplete);
        };
        count += 1;
        if count > MAX_LINES {
            return Err(ReplyError::TooManyLines { limit: MAX_LINES });
        }
        let (this, last) = split_code(line)?;
        match code {
            None => code = Some(this),
            Some(expected) if expected != this => {
                return Err(ReplyError::CodeMismatch {
                    expected,
                    found: this,
                })
            }
            Some(_) => {}
        }
        pos = next;
        if last {
            break pos;
        }
    };
    let code = code.unwrap_or_default();

    // Second pass: the reply is all there and valid; build it.
    let class_digit = b'0' + (code / 100) as u8;
    let mut enhanced = None;
    let mut lines = Vec::with_capacity(count);
    let mut pos = 0;
    while pos < end {
        let Ok(Some((line, next))) = next_line(buf, pos, max_line) else {
            break;
        };
        let mut text = line.get(4..).unwrap_or_default();
        if let Some((found, used)) = Enhanced::parse_prefix(text, class_digit) {
            enhanced.get_or_insert(found);
            text = &text[used..];
        }
        lines.push(String::from_utf8_lossy(text).into_owned());
        pos = next;
    }
    Ok(Parse::Complete(
        Reply {
            code,
            enhanced,
            lines,
        },
        end,
    ))
}

/// The line starting at `buf[pos..]` without its line end, and the index after the
/// line end; `None` if the line end has not arrived yet.
fn next_line(
    buf: &[u8],
    pos: usize,
    max_line: usize,
) -> Result<Option<(&[u8], usize)>, ReplyError> {
    let rest = buf.get(pos..).unwrap_or_default();
    let Some(lf) = memchr(b'\n', rest) else {
        // Without a line end, any line this becomes is at least rest.len() + 1 long.
        if rest.len() >= max_line {
            return Err(ReplyError::LineTooLong { limit: max_line });
        }
        return Ok(None);
    };
    if lf + 1 > max_line {
        return Err(ReplyError::LineTooLong { limit: max_line });
    }
    let line = &rest[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Some((line, pos + lf + 1)))
}

/// The code of one line and whether it is the last line of the reply.
fn split_code(line: &[u8]) -> Result<(u16, bool), ReplyError> {
    let code = match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => {
            return Err(ReplyError::BadCode {
                line: excerpt(line),
            })
        }
    };
    match line.get(3) {
        None | Some(b' ') => Ok((code, true)),
        Some(b'-') => Ok((code, false)),
        Some(_) => Err(ReplyError::BadSeparator {
            line: excerpt(line),
        }),
    }
}

/// The start of a bad line, for an error message of bounded size.
fn excerpt(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_text_without_allocating_matches_display() {
        let mut buf = [0u8; ENHANCED_TEXT_MAX];
        for e in [
            Enhanced::new(2, 0, 0),
            Enhanced::new(5, 1, 1),
            Enhanced::new(4, 7, 28),
            Enhanced::new(5, 7, 650),
            Enhanced::new(255, u16::MAX, u16::MAX),
        ] {
            assert_eq!(e.text_in(&mut buf), e.to_string());
        }
    }

    #[test]
    fn text_borrows_a_single_line_and_joins_several() {
        let one = Reply::new(250, None, "ok");
        assert!(matches!(one.text(), Cow::Borrowed("ok")));
        let two = Reply {
            code: 250,
            enhanced: None,
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(two.text(), "a b");
    }
    use proptest::prelude::*;

    fn complete(input: &str) -> (Reply, usize) {
        match parse_reply(input.as_bytes()) {
            Ok(Parse::Complete(reply, used)) => (reply, used),
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn single_line_with_enhanced_code() {
        let (reply, used) = complete("250 2.1.5 Ok\r\n");
        assert_eq!(used, 14);
        assert_eq!(reply.code, 250);
        assert_eq!(reply.enhanced, Some(Enhanced::new(2, 1, 5)));
        assert_eq!(reply.lines, ["Ok"]);
        assert!(reply.is_positive_completion());
        assert_eq!(reply.to_string(), "250 2.1.5 Ok");
    }

    #[test]
    fn gmail_multiline_550_strips_code_from_every_line() {
        let input = "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n\
                     550-5.1.1 double-checking the recipient's email address for typos or\r\n\
                     550-5.1.1 unnecessary spaces. For more information, go to\r\n\
                     550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1-v6si.123 - gsmtp\r\n";
        let (reply, used) = complete(input);
        assert_eq!(used, input.len());
        assert_eq!(reply.code, 550);
        assert_eq!(
            reply.enhanced.map(|e| e.to_string()).as_deref(),
            Some("5.1.1")
        );
        assert_eq!(reply.lines.len(), 4);
        assert!(reply.lines[1].starts_with("double-checking"));
        assert!(reply.is_permanent());
        assert!(reply.text().contains("typos or unnecessary"));
    }

    /// Input, code, enhanced code, lines, bytes used.
    type Case<'a> = (&'a str, u16, Option<&'a str>, &'a [&'a str], usize);

    #[test]
    fn table() {
        let cases: &[Case] = &[
            (
                "220 mx.example ESMTP\r\n",
                220,
                None,
                &["mx.example ESMTP"],
                22,
            ),
            ("250\r\n", 250, None, &[""], 5),
            ("250 \r\n", 250, None, &[""], 6),
            (
                "354 End data with <CR><LF>.<CR><LF>\n",
                354,
                None,
                &["End data with <CR><LF>.<CR><LF>"],
                36,
            ),
            // the enhanced class must match the code's class
            ("451 5.7.1 odd\r\n", 451, None, &["5.7.1 odd"], 15),
            ("421 4.7.0 bye\r\n", 421, Some("4.7.0"), &["bye"], 15),
            ("550 5.1.1\r\n", 550, Some("5.1.1"), &[""], 11),
            ("550 5.1.1x\r\n", 550, None, &["5.1.1x"], 12),
            ("550 5.1234.1 no\r\n", 550, None, &["5.1234.1 no"], 17),
            ("250-a\r\n250 b\r\n220 next\r\n", 250, None, &["a", "b"], 14),
            ("250-a\n250-b\r\n250 c\n", 250, None, &["a", "b", "c"], 19),
            ("250 caf\u{e9}\r\n", 250, None, &["caf\u{e9}"], 11),
        ];
        for (input, code, enhanced, lines, used) in cases {
            let (reply, n) = complete(input);
            assert_eq!(reply.code, *code, "{input:?}");
            assert_eq!(
                reply.enhanced.map(|e| e.to_string()).as_deref(),
                *enhanced,
                "{input:?}"
            );
            assert_eq!(reply.lines, *lines, "{input:?}");
            assert_eq!(n, *used, "{input:?}");
        }
    }

    #[test]
    fn non_utf8_text_is_replaced() {
        let parsed = parse_reply(b"550 5.7.1 caf\xe9 \xff\r\n");
        let Ok(Parse::Complete(reply, 18)) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(reply.lines, ["caf\u{fffd} \u{fffd}"]);
    }

    #[test]
    fn incomplete_until_the_last_line_ends() {
        for input in [
            "",
            "2",
            "250",
            "250 Ok",
            "250 Ok\r",
            "250-a\r\n",
            "250-a\r\n250 b",
        ] {
            assert_eq!(
                parse_reply(input.as_bytes()),
                Ok(Parse::Incomplete),
                "{input:?}"
            );
        }
    }

    #[test]
    fn errors() {
        let bad_code =
            |s: &str| matches!(parse_reply(s.as_bytes()), Err(ReplyError::BadCode { .. }));
        assert!(bad_code("\r\n"));
        assert!(bad_code("abc\r\n"));
        assert!(bad_code("199 x\r\n"));
        assert!(bad_code("600 x\r\n"));
        assert!(bad_code("25\r\n"));
        assert!(bad_code("250-a\r\nxyz\r\n"));
        assert!(matches!(
            parse_reply(b"250xOk\r\n"),
            Err(ReplyError::BadSeparator { .. })
        ));
        assert_eq!(
            parse_reply(b"250-a\r\n550 b\r\n"),
            Err(ReplyError::CodeMismatch {
                expected: 250,
                found: 550
            })
        );
    }

    #[test]
    fn line_limit_is_enforced_before_the_line_ends() {
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(
            parse_reply(&long),
            Err(ReplyError::LineTooLong { limit: MAX_LINE })
        );
        let mut exact = b"250 ".to_vec();
        exact.resize(MAX_LINE - 2, b'a');
        exact.extend_from_slice(b"\r\n");
        assert!(matches!(parse_reply(&exact), Ok(Parse::Complete(_, n)) if n == MAX_LINE));
        exact.insert(5, b'a');
        assert_eq!(
            parse_reply(&exact),
            Err(ReplyError::LineTooLong { limit: MAX_LINE })
        );
        assert_eq!(
            parse_reply_limited(b"250 0123456789", 10),
            Err(ReplyError::LineTooLong { limit: 10 })
        );
    }

    #[test]
    fn line_count_limit() {
        let mut many = "250-x\r\n".repeat(MAX_LINES - 1);
        many.push_str("250 x\r\n");
        assert!(
            matches!(parse_reply(many.as_bytes()), Ok(Parse::Complete(r, _)) if r.lines.len() == MAX_LINES)
        );
        let too_many = "250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(
            parse_reply(too_many.as_bytes()),
            Err(ReplyError::TooManyLines { limit: MAX_LINES })
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_reply(&bytes);
            let _ = parse_reply_limited(&bytes, 16);
        }

        #[test]
        fn never_panics_on_reply_like_input(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("250"), Just("550"), Just("-"), Just(" "), Just("\r\n"), Just("\n"),
                    Just("\r"), Just("5.1.1"), Just("2."), Just("x"), Just("\u{e9}"),
                ],
                0..40,
            )
        ) {
            let input: String = parts.concat();
            if let Ok(Parse::Complete(reply, used)) = parse_reply(input.as_bytes()) {
                prop_assert!(used <= input.len());
                prop_assert!((200..600).contains(&reply.code));
                prop_assert!(!reply.lines.is_empty());
            }
        }
    }
}
