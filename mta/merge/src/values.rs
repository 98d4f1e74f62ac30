//! What one message is rendered from besides the template: the clock and a unique
//! number ([`RenderContext`]), the recipient's values by placeholder, and the
//! writers that merge them into header text and the `To:` field (shared by
//! compiled and raw templates).

use std::time::SystemTime;

use bytes::BytesMut;
use memchr::memmem;

use super::links::WebContext;
use super::mime::{push_header_text, write_header, Encode, ValueFlags};
use super::part::{Part, Piece};

/// What varies per message besides the recipient: the clock, a unique number
/// and, with the web endpoints on, whose links to write.
#[derive(Debug, Clone)]
pub struct RenderContext<'a> {
    /// Written as the Date header.
    pub now: SystemTime,
    /// Right-hand side of the Message-ID; empty for the From domain (which costs
    /// no allocation per message).
    pub message_id_domain: String,
    /// Distinct for every message this process renders: goes into the Message-ID
    /// and, mixed with the template's secret, into the MIME boundaries.
    pub unique: u64,
    /// The recipient's signed links (unsubscribe headers, tracked clicks, the
    /// open image); `None`: no `[web]`, the message reads as written.
    pub web: Option<WebContext<'a>>,
}

impl RenderContext<'static> {
    /// A context at `now` with Message-IDs in the From domain and no links.
    pub fn new(now: SystemTime, unique: u64) -> RenderContext<'static> {
        RenderContext {
            now,
            message_id_domain: String::new(),
            unique,
            web: None,
        }
    }
}

/// Where each placeholder's value comes from for the current recipient.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    Missing,
    Email,
    Value(usize),
    /// A web slot (`links.rs`): a signed URL or the open image, written as it
    /// is (never HTML-escaped); empty without links.
    Web(usize),
}

/// The values of one recipient, by placeholder index.
pub(crate) struct Values<'a> {
    pub(crate) slots: &'a [Slot],
    pub(crate) values: &'a [&'a [u8]],
    /// `flags[i]` for `values[i]` (worked out on the spot where missing).
    pub(crate) flags: &'a [ValueFlags],
    pub(crate) recipient: &'a str,
    pub(crate) recipient_flags: ValueFlags,
    /// The web slots' values, one after another; slot `i` ends at `web_ends[i]`.
    pub(crate) web: &'a [u8],
    pub(crate) web_ends: &'a [usize],
    /// `web_flags[i]` for web slot `i` (known from the links' form).
    pub(crate) web_flags: &'a [ValueFlags],
}

impl<'a> Values<'a> {
    /// Values for a test: `slots[i]` says where placeholder `i` comes from.
    #[cfg(test)]
    pub(crate) fn for_tests(slots: &'a [Slot], values: &'a [&'a [u8]], recipient: &'a str) -> Self {
        Values {
            slots,
            values,
            flags: &[],
            recipient,
            recipient_flags: ValueFlags::of(recipient.as_bytes()),
            web: &[],
            web_ends: &[],
            web_flags: &[],
        }
    }

    /// Whether placeholder `name` is a web slot (its value and default are
    /// markup written as they are).
    pub(crate) fn is_web(&self, name: usize) -> bool {
        matches!(self.slots.get(name), Some(Slot::Web(_)))
    }

    /// The value of placeholder `name`, or its default when the value is empty.
    pub(crate) fn piece(&self, name: usize, default: Option<&'a str>) -> &'a [u8] {
        match (self.value(name).0, default) {
            (b"", Some(default)) => default.as_bytes(),
            (value, _) => value,
        }
    }

    /// [`Values::piece`] with what the value needs ([`ValueFlags`]).
    pub(crate) fn piece_flagged(
        &self,
        name: usize,
        default: Option<&'a str>,
    ) -> (&'a [u8], ValueFlags) {
        let (value, mut flags) = match (self.value(name), default) {
            ((b"", _), Some(default)) => (default.as_bytes(), ValueFlags::of(default.as_bytes())),
            ((value, flags), _) => (value, flags.unwrap_or_else(|| ValueFlags::of(value))),
        };
        if self.is_web(name) {
            flags.html_plain = true;
        }
        (value, flags)
    }

    /// The recipient's value for placeholder `name`, with its flags when known.
    fn value(&self, name: usize) -> (&'a [u8], Option<ValueFlags>) {
        match self.slots.get(name) {
            Some(Slot::Email) => (self.recipient.as_bytes(), Some(self.recipient_flags)),
            Some(&Slot::Value(i)) => (
                self.values.get(i).copied().unwrap_or_default(),
                self.flags.get(i).copied(),
            ),
            Some(&Slot::Web(i)) => {
                let start = match i {
                    0 => 0,
                    _ => self.web_ends.get(i - 1).copied().unwrap_or(0),
                };
                let end = self.web_ends.get(i).copied().unwrap_or(start);
                (
                    self.web.get(start..end).unwrap_or_default(),
                    self.web_flags.get(i).copied(),
                )
            }
            Some(Slot::Missing) | None => (b"", None),
        }
    }
}

/// Appends a part rendered as header text: every character that could end the
/// line replaced by a space.
pub(crate) fn header_text(part: &Part, values: &Values<'_>, out: &mut String) {
    out.clear();
    push_header_part(part, values, out);
}

/// [`header_text`] appended to what `out` holds.
pub(crate) fn push_header_part(part: &Part, values: &Values<'_>, out: &mut String) {
    for piece in &part.pieces {
        match piece {
            Piece::Lit(text) => push_header_text(text.as_bytes(), out),
            Piece::Field { name, default } => {
                push_header_text(values.piece(*name, default.as_deref()), out);
            }
        }
    }
}

/// Writes `To: recipient`: the address sanitized (no control characters) and not
/// encoded (RFC 2047 words are not allowed in addresses).
pub(crate) fn write_to(recipient: &str, buf: &mut String, out: &mut BytesMut) {
    buf.clear();
    push_header_text(recipient.as_bytes(), buf);
    write_header(out, "To", buf, Encode::Never);
}

/// Number of times `needle` occurs in `haystack`.
pub(crate) fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    memmem::find_iter(haystack, needle).count()
}
