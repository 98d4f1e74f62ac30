//! Raw RFC 5322 message templates: an `.eml` file with placeholders, sent as
//! written apart from the merge.
//!
//! volley does not re-encode a raw message (it does not know how its body is
//! encoded), so merge values go in as single-line text: in headers as everywhere
//! (control characters become spaces, non-ASCII words RFC 2047 encoded), and in the
//! body as UTF-8 with CR, LF and other control characters replaced by spaces. Lines
//! are broken at 998 octets. A recipient whose values would put one of the message's
//! own MIME boundaries in the body is refused rather than sent.
//!
//! Date and Message-ID are always generated, To is the recipient unless the
//! message's To holds a placeholder, and Return-Path, Received, Delivered-To,
//! DKIM-Signature and Bcc are dropped.

use bytes::{BufMut, BytesMut};
use memchr::memmem;

use super::error::TemplateError;
use super::mime::{push_header_text, valid_header_name, write_header, Encode};
use super::part::{parse_part, Names, Part, Piece};
use super::values::{header_text, occurrences, write_to, Values};
use crate::source::RenderError;

/// Longest line of a message, without its CRLF (RFC 5322 §2.1.1).
const MAX_LINE: usize = 998;

/// Header fields of a raw message that are not sent: volley writes its own (Date,
/// Message-ID), they describe an earlier trip (Return-Path, Received,
/// Delivered-To), would be wrong after merging (DKIM-Signature) or must never be
/// sent (Bcc).
const DROPPED: [&str; 7] = [
    "date",
    "message-id",
    "return-path",
    "received",
    "delivered-to",
    "dkim-signature",
    "bcc",
];

/// A compiled raw message.
#[derive(Debug)]
pub(crate) struct RawTemplate {
    /// The header fields sent, in message order.
    headers: Vec<(Box<str>, Part)>,
    /// Whether to write `To: <recipient>` (the message's To had no placeholder).
    generate_to: bool,
    /// The body; literal line ends are CRLF.
    body: Part,
    /// A searcher for each MIME boundary the message declares, with how often it
    /// occurs in the body's literal text.
    boundaries: Vec<(memmem::Finder<'static>, usize)>,
}

impl RawTemplate {
    /// Removes the first header field called `name` (any case) and gives its
    /// value.
    pub(crate) fn take_header(&mut self, name: &str) -> Option<Part> {
        let at = self
            .headers
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))?;
        Some(self.headers.remove(at).1)
    }
}

/// One header field of a raw message, unfolded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawField {
    pub(crate) name: String,
    pub(crate) value: String,
}

/// Splits a message into its unfolded header fields and its body (line ends made
/// CRLF). Line ends in `text` may be CRLF, CR or LF. Errors name the line.
pub(crate) fn split_message(text: &str) -> Result<(Vec<RawField>, String), String> {
    let mut fields: Vec<RawField> = Vec::new();
    let mut pos = 0;
    let mut number = 0;
    while pos < text.len() {
        number += 1;
        let end =
            memchr::memchr2(b'\r', b'\n', &text.as_bytes()[pos..]).map_or(text.len(), |k| pos + k);
        let line = &text[pos..end];
        pos = if text[end..].starts_with("\r\n") {
            end + 2
        } else {
            (end + 1).min(text.len())
        };
        if line.is_empty() {
            return Ok((fields, crlf(&text[pos..])));
        }
        if line.starts_with([' ', '\t']) {
            match fields.last_mut() {
                Some(field) => field.value.push_str(line),
                None => {
                    return Err(format!(
                        "line {number}: continuation line before any header field"
                    ))
                }
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if valid_header_name(name) => fields.push(RawField {
                name: name.to_owned(),
                value: value.trim_start_matches([' ', '\t']).to_owned(),
            }),
            _ => {
                let shown: String = line.chars().take(40).collect();
                return Err(format!(
                    "line {number}: `{shown}` is not a header field (`Name: value`); \
                     a blank line must separate the header from the body"
                ));
            }
        }
    }
    Ok((fields, String::new()))
}

/// `text` with every line end (CRLF, CR, LF) written as CRLF.
fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut rest = text;
    while let Some(k) = rest.find(['\r', '\n']) {
        out.push_str(&rest[..k]);
        out.push_str("\r\n");
        rest = if rest[k..].starts_with("\r\n") {
            &rest[k + 2..]
        } else {
            &rest[k + 1..]
        };
    }
    out.push_str(rest);
    out
}

/// The message text for header `fields` and `body`, in the canonical form stored:
/// one line per field, CRLF line ends.
pub(crate) fn join_message(fields: &[RawField], body: &str) -> String {
    let mut out = String::with_capacity(body.len() + fields.len() * 40 + 2);
    for field in fields {
        out.push_str(&field.name);
        out.push_str(": ");
        out.push_str(&field.value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// Compiles the text of a raw message (without its From header, which comes from
/// the template's `from`).
pub(crate) fn compile_raw(raw: &str, names: &mut Names) -> Result<RawTemplate, TemplateError> {
    let (fields, body) = split_message(raw).map_err(|m| TemplateError::spec("raw", m))?;
    let mut headers: Vec<(Box<str>, Part)> = Vec::with_capacity(fields.len());
    for field in &fields {
        let lower = field.name.to_ascii_lowercase();
        if lower == "from" {
            return Err(TemplateError::spec(
                "raw",
                "the message has a From field; the template's `from` is used instead, remove it",
            ));
        }
        if DROPPED.contains(&lower.as_str()) || (lower == "to" && !field.value.contains("{{")) {
            continue;
        }
        let part = parse_part(&field.value, &format!("header {}", field.name), names)?;
        headers.push((field.name.as_str().into(), part));
    }
    let generate_to = !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("to"));
    let body = parse_part(&body, "raw body", names)?;
    let boundaries = declared_boundaries(raw)
        .into_iter()
        .map(|b| {
            let count = body
                .pieces
                .iter()
                .map(|piece| match piece {
                    Piece::Lit(text) => occurrences(text.as_bytes(), &b),
                    Piece::Field { .. } => 0,
                })
                .sum();
            (memmem::Finder::new(&b).into_owned(), count)
        })
        .collect();
    Ok(RawTemplate {
        headers,
        generate_to,
        body,
        boundaries,
    })
}

/// Every `boundary=` parameter value in `text` (quoted or not), once each.
fn declared_boundaries(text: &str) -> Vec<Box<[u8]>> {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut found: Vec<Box<[u8]>> = Vec::new();
    for at in memmem::find_iter(lower.as_bytes(), b"boundary=") {
        let rest = &bytes[at + 9..];
        let value = match rest.strip_prefix(b"\"") {
            Some(quoted) => &quoted[..memchr::memchr(b'"', quoted).unwrap_or(quoted.len())],
            None => {
                let end = rest
                    .iter()
                    .position(|&b| b == b';' || b.is_ascii_whitespace())
                    .unwrap_or(rest.len());
                &rest[..end]
            }
        };
        if !value.is_empty() && !found.iter().any(|f| **f == *value) {
            found.push(value.into());
        }
    }
    found
}

/// Renders a raw message after its origin fields (Date, Message-ID, From, which
/// the caller writes): To, the message's own header fields merged, then the body.
pub(crate) fn render_raw(
    raw: &RawTemplate,
    values: &Values<'_>,
    buf: &mut String,
    out: &mut BytesMut,
) -> Result<(), RenderError> {
    if raw.generate_to {
        write_to(values.recipient, buf, out);
    }
    for (name, part) in &raw.headers {
        header_text(part, values, buf);
        write_header(out, name, buf, Encode::Raw);
    }
    out.put_slice(b"\r\n");
    let body_start = out.len();
    let mut body = BodyWriter {
        line_start: out.len(),
        out,
        value_on_line: false,
    };
    for piece in &raw.body.pieces {
        match piece {
            Piece::Lit(text) => body.literal(text),
            Piece::Field { name, default } => {
                buf.clear();
                push_header_text(values.piece(*name, default.as_deref()), buf);
                body.value(buf);
            }
        }
    }
    body.finish();
    for (boundary, literal) in &raw.boundaries {
        if boundary.find_iter(&out[body_start..]).count() > *literal {
            return Err(RenderError::permanent(
                "a merge value holds one of the message's MIME boundaries",
            ));
        }
    }
    Ok(())
}

/// Writes body text, breaking lines at 998 octets.
struct BodyWriter<'a> {
    out: &'a mut BytesMut,
    line_start: usize,
    /// Whether a merge value wrote on the current line.
    value_on_line: bool,
}

impl BodyWriter<'_> {
    /// Template text; its line ends are CRLF.
    fn literal(&mut self, text: &str) {
        let mut rest = text;
        while let Some(k) = rest.find("\r\n") {
            self.segment(&rest[..k], false);
            self.end_line();
            rest = &rest[k + 2..];
        }
        self.segment(rest, false);
    }

    /// A sanitized merge value (no line ends).
    fn value(&mut self, text: &str) {
        self.segment(text, true);
    }

    /// Text without line ends.
    fn segment(&mut self, mut text: &str, value: bool) {
        while !text.is_empty() {
            let room = MAX_LINE - (self.out.len() - self.line_start).min(MAX_LINE);
            if text.len() <= room {
                self.out.put_slice(text.as_bytes());
                self.value_on_line |= value;
                return;
            }
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.out.put_slice(&text.as_bytes()[..cut]);
            self.value_on_line |= value && cut > 0;
            self.end_line();
            text = &text[cut..];
        }
    }

    fn end_line(&mut self) {
        // A value must not make a line that is a lone "." (the end of DATA, should
        // the SMTP layer ever skip dot-stuffing).
        if self.value_on_line && self.out[self.line_start..] == *b"." {
            self.out.put_u8(b' ');
        }
        self.out.put_slice(b"\r\n");
        self.line_start = self.out.len();
        self.value_on_line = false;
    }

    fn finish(mut self) {
        if self.out.len() > self.line_start {
            self.end_line();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_unfolds() {
        let (fields, body) = split_message("Subject: a\n b\r\nX-Y:z\r\rline1\nline2\r\n").unwrap();
        assert_eq!(
            fields,
            vec![
                RawField {
                    name: "Subject".into(),
                    value: "a b".into()
                },
                RawField {
                    name: "X-Y".into(),
                    value: "z".into()
                },
            ]
        );
        assert_eq!(body, "line1\r\nline2\r\n");
        assert_eq!(split_message("A: b").unwrap().1, "");
        assert_eq!(
            split_message("A: b\nnot a header\n\nbody").unwrap_err(),
            "line 2: `not a header` is not a header field (`Name: value`); \
             a blank line must separate the header from the body"
        );
        assert!(split_message(" x\nA: b\n").is_err());
        assert_eq!(
            join_message(&split_message("A: 1\nB: 2\n\nx\ny").unwrap().0, "x\r\ny"),
            "A: 1\r\nB: 2\r\n\r\nx\r\ny"
        );
    }

    #[test]
    fn finds_boundaries() {
        let text = "Content-Type: multipart/mixed; BOUNDARY=\"abc def\"\r\n\r\n--abc def\r\n\
                    Content-Type: multipart/alternative; boundary=xyz;\r\n";
        assert_eq!(
            declared_boundaries(text),
            vec![
                b"abc def".to_vec().into_boxed_slice(),
                b"xyz".to_vec().into_boxed_slice()
            ]
        );
    }

    #[test]
    fn long_lines_break_and_lone_dots_do_not_appear() {
        let mut out = BytesMut::new();
        let mut w = BodyWriter {
            out: &mut out,
            line_start: 0,
            value_on_line: false,
        };
        w.literal("a\r\n");
        w.value(".");
        w.literal("\r\n");
        w.value(&"é".repeat(600));
        w.finish();
        let text = String::from_utf8(out.to_vec()).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "a");
        assert_eq!(lines[1], ". ");
        assert_eq!(lines[2].len(), 998);
        assert_eq!(lines[3].len(), 1200 - 998);
        assert_eq!(lines[4], "");
    }
}
