//! What one message is rendered from besides the template: the clock and a unique
//! number ([`RenderContext`]), the recipient's values by placeholder, and the
//! writers that merge them into header text and the `To:` field (shared by
//! compiled and raw templates).

use std::time::SystemTime;

use bytes::BytesMut;
use memchr::memmem;

use super::mime::{push_header_text, write_header, Encode, ValueFlags};
use super::part::{Part, Piece};

/// What varies per message besides the recipient: the clock and a unique number.
#[derive(Debug, Clone)]
pub struct RenderContext {
    /// Written as the Date header.
    pub now: SystemTime,
    /// Right-hand side of the Message-ID; empty for the From domain (which costs
    /// no allocation per message).
    pub message_id_domain: String,
    /// Distinct for every message this process renders: goes into the Message-ID
    /// and, mixed with the template's secret, into the MIME boundaries.
    pub unique: u64,
}

impl RenderContext {
    /// A context at `now` with Message-IDs in the From domain.
    pub fn new(now: SystemTime, unique: u64) -> RenderContext {
        RenderContext {
            now,
            message_id_domain: String::new(),
            unique,
        }
    }
}

/// Where each placeholder's value comes from for the current recipient.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    Missing,
    Email,
    Value(usize),
}

/// The values of one recipient, by placeholder index.
pub(crate) struct Values<'a> {
    pub(crate) slots: &'a [Slot],
    pub(crate) values: &'a [&'a [u8]],
    /// `flags[i]` for `values[i]` (worked out on the spot where missing).
    pub(crate) flags: &'a [ValueFlags],
    pub(crate) recipient: &'a str,
    pub(crate) recipient_flags: ValueFlags,
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
        }
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
        match (self.value(name), default) {
            ((b"", _), Some(default)) => (default.as_bytes(), ValueFlags::of(default.as_bytes())),
            ((value, flags), _) => (value, flags.unwrap_or_else(|| ValueFlags::of(value))),
        }
    }

    /// The recipient's value for placeholder `name`, with its flags when known.
    fn value(&self, name: usize) -> (&'a [u8], Option<ValueFlags>) {
        match self.slots.get(name) {
            Some(Slot::Email) => (self.recipient.as_bytes(), Some(self.recipient_flags)),
            Some(&Slot::Value(i)) => (
                self.values.get(i).copied().unwrap_or_default(),
                self.flags.get(i).copied(),
            ),
            Some(Slot::Missing) | None => (b"", None),
        }
    }
}

/// Appends a part rendered as header text: every character that could end the
/// line replaced by a space.
pub(crate) fn header_text(part: &Part, values: &Values<'_>, out: &mut String) {
    out.clear();
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
