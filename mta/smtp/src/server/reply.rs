//! Server reply lines: a code, an enhanced status code (RFC 2034, RFC 3463) and a
//! text, rendered as `250 2.1.0 Ok\r\n`.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, BytesMut};

/// One reply line the server sends. The text never holds CR or LF (constructors
/// drop control characters), so a rendered line is always exactly one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The basic reply code.
    pub code: u16,
    /// The enhanced status code, e.g. `"5.7.1"`.
    pub enhanced: &'static str,
    /// The human-readable text.
    pub text: Cow<'static, str>,
}

impl Line {
    /// A reply line; control characters in `text` are dropped.
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<Cow<'static, str>>) -> Line {
        let mut text = text.into();
        if text.chars().any(char::is_control) {
            text = Cow::Owned(text.chars().filter(|c| !c.is_control()).collect());
        }
        Line {
            code,
            enhanced,
            text,
        }
    }

    /// Appends the rendered line, CRLF included, to `out`.
    pub(crate) fn write(&self, out: &mut BytesMut) {
        write_line(out, self.code, ' ', self.enhanced, &self.text);
    }

    /// 4xx or 5xx.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// Writes `code`, `sep` (`' '` or `'-'`), the enhanced code (if not empty) and
/// `text`, then CRLF.
pub(crate) fn write_line(out: &mut BytesMut, code: u16, sep: char, enhanced: &str, text: &str) {
    out.reserve(8 + enhanced.len() + text.len());
    // Three digits: every code we send is 200..=599.
    let code = code.clamp(200, 599);
    out.put_u8(b'0' + (code / 100) as u8);
    out.put_u8(b'0' + (code / 10 % 10) as u8);
    out.put_u8(b'0' + (code % 10) as u8);
    out.put_u8(sep as u8);
    if !enhanced.is_empty() {
        out.put_slice(enhanced.as_bytes());
        out.put_u8(b' ');
    }
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line() {
        let mut out = BytesMut::new();
        Line::new(550, "5.7.1", "Relaying denied\r\nInjected: yes").write(&mut out);
        assert_eq!(&out[..], b"550 5.7.1 Relaying deniedInjected: yes\r\n");
        out.clear();
        write_line(&mut out, 250, '-', "", "mx.test");
        assert_eq!(&out[..], b"250-mx.test\r\n");
    }
}
