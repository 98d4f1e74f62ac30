//! Rendering one recipient's message from a compiled [`Template`] straight into the
//! send buffer.
//!
//! Per message the renderer allocates nothing once the thread's scratch buffers have
//! grown to the template's size: field names are matched to placeholders into a
//! reused slot table, header values and bodies are merged into reused buffers and
//! then encoded into `out`, and the Date, Message-ID and boundaries are written from
//! integers without `format!`.

use std::cell::RefCell;
use std::time::UNIX_EPOCH;

use bytes::{BufMut, BytesMut};

use volley_queue::link::{LinkKind, LinkTarget};

use super::compile::{Kind, Parts, Template};
use super::links::{web_slot, write_open_image};
use super::mime::{
    fits_7bit, push_html_escaped, push_lossy, write_7bit, write_header, write_qp, Encode,
    ValueFlags,
};
use super::part::{Part, Piece};
use super::raw::render_raw;
pub use super::values::RenderContext;
use super::values::{header_text, push_header_part, write_to, Slot, Values};
use super::EMAIL;
use crate::source::RenderError;

/// Buffers reused from message to message on one thread.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    slots: Vec<Slot>,
    /// The template ([`Template::id`]) and field names `slots` were worked out for.
    mapped_for: (Option<u64>, Vec<String>),
    /// Where the `text_only` field is among those field names.
    text_only_at: Option<usize>,
    /// [`ValueFlags`] of the current recipient's values.
    flags: Vec<ValueFlags>,
    header: String,
    text: Vec<u8>,
    html: Vec<u8>,
    /// One merge value at a time, for [`Prequoted::write`].
    value: Vec<u8>,
    /// The current message's web slot values and where each ends.
    web: Vec<u8>,
    web_ends: Vec<usize>,
    web_flags: Vec<ValueFlags>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Renders a body part: literal text as written, values lossily UTF-8 and, in
/// HTML, escaped.
fn body_text(part: &Part, values: &Values<'_>, html: bool, out: &mut Vec<u8>) {
    out.clear();
    for piece in &part.pieces {
        match piece {
            Piece::Lit(text) => out.extend_from_slice(text.as_bytes()),
            Piece::Field { name, default } => {
                let value = values.piece(*name, default.as_deref());
                if values.is_web(*name) {
                    // A signed URL, the open image or a link as written.
                    out.extend_from_slice(value);
                } else if html {
                    push_html_escaped(value, out);
                } else {
                    push_lossy(value, out);
                }
            }
        }
    }
}

/// How many times a boundary is re-drawn when the message already contains it.
const BOUNDARY_ATTEMPTS: u32 = 8;
/// Length of a MIME boundary: `=_`, a kind letter and 32 hex digits.
pub(crate) const BOUNDARY_LEN: usize = 35;
/// Longest recipient address written in To (a real one is at most 254).
const MAX_RECIPIENT: usize = 900;

impl Template {
    /// Appends the message for one recipient to `out`: the header fields (Date,
    /// Message-ID, From, To, Subject, Reply-To, MIME-Version, extra headers) and the
    /// MIME body. `fields[i]` names `values[i]`; `recipient` is the address (the To
    /// header and `{{ email }}`). On error `out` is left as it was.
    ///
    /// Errors: a placeholder without a default whose field is not in `fields` (see
    /// [`Template::check_fields`]), a recipient address over 900 bytes, or (never in
    /// practice) no boundary found that the message does not contain.
    pub fn render(
        &self,
        fields: &[&str],
        values: &[&[u8]],
        recipient: &str,
        ctx: &RenderContext,
        out: &mut BytesMut,
    ) -> Result<(), RenderError> {
        let start = out.len();
        let render = |scratch: &mut Scratch, out: &mut BytesMut| {
            self.render_with(scratch, fields, values, recipient, ctx, out)
        };
        // A fresh scratch only if the thread's is in use or being torn down.
        let result = SCRATCH
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => render(&mut scratch, out),
                Err(_) => render(&mut Scratch::default(), out),
            })
            .unwrap_or_else(|_| render(&mut Scratch::default(), out));
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn render_with(
        &self,
        scratch: &mut Scratch,
        fields: &[&str],
        values: &[&[u8]],
        recipient: &str,
        ctx: &RenderContext,
        out: &mut BytesMut,
    ) -> Result<(), RenderError> {
        let Scratch {
            slots,
            mapped_for,
            text_only_at,
            flags,
            header,
            text,
            html,
            value,
            web,
            web_ends,
            web_flags,
        } = scratch;
        let known = fields.len().min(values.len());
        // Where each placeholder's value comes from depends only on the template
        // and the field names, which are the same for a whole batch: worked out
        // again only when they change.
        let same = mapped_for.0 == Some(self.id)
            && mapped_for.1.len() == known
            && mapped_for
                .1
                .iter()
                .zip(&fields[..known])
                .all(|(a, b)| a == b);
        if !same {
            mapped_for.0 = None;
            slots.clear();
            let mut missing = false;
            for name in &self.names {
                let slot = if &**name == EMAIL {
                    Slot::Email
                } else if let Some(i) = web_slot(name, self.web.links.len()) {
                    Slot::Web(i)
                } else {
                    match fields[..known].iter().position(|f| *f == &**name) {
                        Some(i) => Slot::Value(i),
                        None => {
                            missing |= self.required.contains(&**name);
                            Slot::Missing
                        }
                    }
                };
                slots.push(slot);
            }
            if missing {
                let missing: Vec<String> = self
                    .required
                    .iter()
                    .filter(|name| !fields[..known].contains(&name.as_str()))
                    .map(|name| format!("`{name}`"))
                    .collect();
                return Err(RenderError::permanent(format!(
                    "no value for merge field{} {}",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", ")
                )));
            }
            *text_only_at = fields[..known].iter().position(|f| *f == "text_only");
            mapped_for.1.clear();
            mapped_for
                .1
                .extend(fields[..known].iter().map(|f| (*f).to_owned()));
            mapped_for.0 = Some(self.id);
        }
        if recipient.len() > MAX_RECIPIENT {
            return Err(RenderError::permanent(format!(
                "recipient address is {} bytes long",
                recipient.len()
            )));
        }
        flags.clear();
        flags.extend(values[..known].iter().map(|v| ValueFlags::of(v)));
        web.clear();
        web_ends.clear();
        web_flags.clear();
        if let Some(links) = &ctx.web {
            for link in 0..self.web.links.len() {
                let target = LinkTarget {
                    link: link as u16,
                    ..links.target
                };
                links.links.write_url(LinkKind::Click, target, web);
                web_ends.push(web.len());
                web_flags.push(links.links.click_flags());
            }
            if self.web.open {
                write_open_image(links, web);
                web_ends.push(web.len());
                web_flags.push(links.links.open_flags());
            }
        }
        let values = Values {
            slots,
            values: &values[..known],
            flags,
            recipient,
            recipient_flags: ValueFlags::of(recipient.as_bytes()),
            web,
            web_ends,
            web_flags,
        };
        let text_only = text_only_at.is_some_and(|i| truthy(values.values[i]));
        match &self.kind {
            Kind::Parts(parts) => {
                let bodies = Bodies { text, html, value };
                self.render_parts(parts, &values, text_only, ctx, header, bodies, out)
            }
            Kind::Raw(raw) => {
                self.write_origin(ctx, out);
                self.write_list_unsubscribe(ctx, &values, header, out);
                render_raw(raw, &values, header, out)
            }
        }
    }

    /// Writes `List-Unsubscribe` and `List-Unsubscribe-Post`: with links (and
    /// `unsubscribe` on) the one-click URL, then the template's own form; without,
    /// the template's own fields as written.
    fn write_list_unsubscribe(
        &self,
        ctx: &RenderContext<'_>,
        values: &Values<'_>,
        header: &mut String,
        out: &mut BytesMut,
    ) {
        let web = &self.web;
        let encode = web.own_encode.unwrap_or(Encode::Text);
        match (&ctx.web, web.unsubscribe) {
            (Some(links), true) => {
                header.clear();
                header.push('<');
                links
                    .links
                    .push_url(LinkKind::Unsubscribe, links.target, header);
                header.push('>');
                if let Some(own) = &web.own_unsubscribe {
                    let ours = header.len();
                    header.push_str(", ");
                    push_header_part(own, values, header);
                    // Written unencoded (an encoded-word would break the URL):
                    // the template's form stays only if that is safe, ASCII
                    // tokens short enough to fold.
                    let plain =
                        header.is_ascii() && header.split(' ').all(|t| t.len() <= MAX_RECIPIENT);
                    if !plain {
                        header.truncate(ours);
                    }
                }
                write_header(out, "List-Unsubscribe", header, Encode::Never);
                out.put_slice(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
            }
            _ => {
                if let Some(own) = &web.own_unsubscribe {
                    header_text(own, values, header);
                    write_header(out, "List-Unsubscribe", header, encode);
                }
                if let Some(own) = &web.own_unsubscribe_post {
                    header_text(own, values, header);
                    write_header(out, "List-Unsubscribe-Post", header, encode);
                }
            }
        }
    }

    /// Writes Date, Message-ID and From.
    pub(crate) fn write_origin(&self, ctx: &RenderContext, out: &mut BytesMut) {
        let secs = ctx
            .now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        out.put_slice(b"Date: ");
        volley_smtp::date::write_date(secs, out);
        out.put_slice(b"\r\nMessage-ID: <");
        write_hex(secs, 0, out);
        out.put_u8(b'.');
        write_hex(ctx.unique, 16, out);
        out.put_u8(b'@');
        let domain = &ctx.message_id_domain;
        if !domain.is_empty()
            && domain.len() <= 253
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            out.put_slice(domain.as_bytes());
        } else {
            out.put_slice(self.domain.as_bytes());
        }
        out.put_slice(b">\r\n");
        out.put_slice(&self.from_header);
    }

    #[allow(clippy::too_many_arguments)] // the scratch buffers, split to borrow apart
    fn render_parts(
        &self,
        parts: &Parts,
        values: &Values<'_>,
        text_only: bool,
        ctx: &RenderContext,
        header: &mut String,
        bodies: Bodies<'_>,
        out: &mut BytesMut,
    ) -> Result<(), RenderError> {
        let Bodies { text, html, value } = bodies;
        let has_text = parts.text.is_some();
        let has_html = parts.html.is_some() && !(text_only && has_text);
        // Parts compiled for quoted-printable are encoded straight into `out`.
        if let (Some(part), None) = (&parts.text, &parts.text_qp) {
            body_text(part, values, false, text);
        }
        if let (Some(part), None, true) = (&parts.html, &parts.html_qp, has_html) {
            body_text(part, values, true, html);
        }
        let mut leaf = |out: &mut BytesMut, html_part: bool| {
            let (subtype, pre, merged) = if html_part {
                ("html", &parts.html_qp, &*html)
            } else {
                ("plain", &parts.text_qp, &*text)
            };
            match pre {
                Some(pre) => {
                    write_leaf_head(out, subtype, "quoted-printable");
                    pre.write(values, html_part, value, out);
                }
                None => write_leaf(out, subtype, merged),
            }
        };
        let alternative = has_text && has_html;
        let mixed = !parts.attachments.is_empty();
        let start = out.len();
        for attempt in 0..BOUNDARY_ATTEMPTS {
            out.truncate(start);
            self.write_origin(ctx, out);
            write_to(values.recipient, header, out);
            header_text(&parts.subject, values, header);
            write_header(out, "Subject", header, Encode::Text);
            if let Some(reply_to) = &parts.reply_to_header {
                out.put_slice(reply_to);
            }
            out.put_slice(b"MIME-Version: 1.0\r\n");
            for (name, part) in &parts.headers {
                header_text(part, values, header);
                write_header(out, name, header, Encode::Text);
            }
            self.write_list_unsubscribe(ctx, values, header, out);
            let alt = boundary(self.secret, ctx.unique, b'a', attempt);
            let mix = boundary(self.secret, ctx.unique, b'm', attempt);
            if mixed {
                write_multipart_header(out, "mixed", &mix);
                delimiter(out, &mix, false);
            }
            if alternative {
                write_multipart_header(out, "alternative", &alt);
                delimiter(out, &alt, false);
                leaf(out, false);
                delimiter(out, &alt, false);
                leaf(out, true);
                delimiter(out, &alt, true);
            } else {
                leaf(out, !has_text);
            }
            // Attachments are base64 (no `_`) under headers we wrote at compile
            // time, so they cannot hold a boundary (which has `_`): not scanned.
            let clean = count_boundaries(&out[start..], &alt, &mix)
                == (if alternative { 4 } else { 0 }, if mixed { 2 } else { 0 });
            if mixed {
                delimiter(out, &mix, false);
                for attachment in &parts.attachments {
                    out.put_slice(attachment);
                    out.put_slice(b"\r\n");
                    delimiter(out, &mix, false);
                }
                // The last delimiter written closes: replace "--b\r\n" by "--b--\r\n".
                out.truncate(out.len() - 2);
                out.put_slice(b"--\r\n");
            }
            if clean {
                return Ok(());
            }
        }
        Err(RenderError::permanent(
            "every MIME boundary tried occurs in the message",
        ))
    }
}

/// Whether a `text_only` column value asks for the text part only.
fn truthy(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    value == b"1" || value.eq_ignore_ascii_case(b"true") || value.eq_ignore_ascii_case(b"yes")
}

/// How often boundaries `a` and `b` (each starting `=_`) occur in `haystack`.
/// Scans for the rare `_` with `memchr` rather than building two substring
/// searchers per message, which cost more than the rest of rendering.
fn count_boundaries(haystack: &[u8], a: &[u8], b: &[u8]) -> (usize, usize) {
    let (mut count_a, mut count_b) = (0, 0);
    for at in memchr::memchr_iter(b'_', haystack) {
        if at > 0 && haystack[at - 1] == b'=' {
            let candidate = &haystack[at - 1..];
            if candidate.starts_with(a) {
                count_a += 1;
            } else if candidate.starts_with(b) {
                count_b += 1;
            }
        }
    }
    (count_a, count_b)
}

fn write_multipart_header(out: &mut BytesMut, subtype: &str, boundary: &[u8]) {
    out.put_slice(b"Content-Type: multipart/");
    out.put_slice(subtype.as_bytes());
    out.put_slice(b";\r\n boundary=\"");
    out.put_slice(boundary);
    out.put_slice(b"\"\r\n\r\n");
}

/// Writes a delimiter line, `--b` or (closing) `--b--`. The preceding content
/// always ends with CRLF, which serves as the delimiter's leading CRLF.
fn delimiter(out: &mut BytesMut, boundary: &[u8], close: bool) {
    out.put_slice(b"--");
    out.put_slice(boundary);
    if close {
        out.put_slice(b"--");
    }
    out.put_slice(b"\r\n");
}

/// Writes a text/plain or text/html entity: headers, blank line, content in 7bit
/// when it allows, quoted-printable otherwise. Always ends with CRLF.
fn write_leaf(out: &mut BytesMut, subtype: &str, content: &[u8]) {
    if fits_7bit(content) {
        write_leaf_head(out, subtype, "7bit");
        write_7bit(content, out);
    } else {
        write_leaf_head(out, subtype, "quoted-printable");
        write_qp(content, out);
    }
    if content.is_empty() {
        out.put_slice(b"\r\n");
    }
}

/// Writes a text/plain or text/html entity's header fields and the blank line.
fn write_leaf_head(out: &mut BytesMut, subtype: &str, encoding: &str) {
    out.put_slice(b"Content-Type: text/");
    out.put_slice(subtype.as_bytes());
    out.put_slice(b"; charset=utf-8\r\nContent-Transfer-Encoding: ");
    out.put_slice(encoding.as_bytes());
    out.put_slice(b"\r\n\r\n");
}

/// The per-thread buffers of the body parts, borrowed apart from the header one.
struct Bodies<'a> {
    text: &'a mut Vec<u8>,
    html: &'a mut Vec<u8>,
    value: &'a mut Vec<u8>,
}

/// SplitMix64's finalizer: a bijective mix, enough to make boundaries look random
/// (their safety rests on the `=_` prefix and the containment check, not secrecy).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The MIME boundary of kind `kind` (`a`lternative, `m`ixed) for message `unique`,
/// try `attempt`: `=_`, the kind, and 32 hex digits. `=_` never occurs in
/// quoted-printable (`=` is always followed by hex digits or a line end) nor in
/// base64, so only a 7bit part could ever contain one.
pub(crate) fn boundary(
    secret: [u64; 2],
    unique: u64,
    kind: u8,
    attempt: u32,
) -> [u8; BOUNDARY_LEN] {
    let x = mix(unique ^ secret[0] ^ mix(u64::from(attempt) << 8 | u64::from(kind)));
    let y = mix(x ^ secret[1]);
    let mut out = [0u8; BOUNDARY_LEN];
    out[0] = b'=';
    out[1] = b'_';
    out[2] = kind;
    for (i, word) in [x, y].into_iter().enumerate() {
        for j in 0..16 {
            out[3 + i * 16 + j] = HEX_LOWER[(word >> (60 - 4 * j)) as usize & 15];
        }
    }
    out
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// Writes `n` in lowercase hex, at least `width` digits.
fn write_hex(n: u64, width: usize, out: &mut BytesMut) {
    let digits = (16 - n.leading_zeros() as usize / 4).max(width).max(1);
    for i in (0..digits).rev() {
        out.put_u8(HEX_LOWER[(n >> (4 * i)) as usize & 15]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_smtp::decimal::put_decimal;

    #[test]
    fn numbers() {
        let mut out = BytesMut::new();
        write_hex(0, 0, &mut out);
        out.put_u8(b' ');
        write_hex(0xabc, 16, &mut out);
        out.put_u8(b' ');
        put_decimal(&mut out, 7, 2);
        out.put_u8(b' ');
        put_decimal(&mut out, u64::MAX, 2);
        assert_eq!(&out[..], b"0 0000000000000abc 07 18446744073709551615");
    }

    #[test]
    fn boundaries_differ() {
        let a = boundary([1, 2], 7, b'a', 0);
        assert!(a.starts_with(b"=_a"));
        assert_ne!(a, boundary([1, 2], 8, b'a', 0));
        assert_ne!(a, boundary([1, 2], 7, b'a', 1));
        assert_ne!(a, boundary([3, 2], 7, b'a', 0));
        assert_ne!(a[3..], boundary([1, 2], 7, b'm', 0)[3..]);
    }

    #[test]
    fn counts_boundaries() {
        let a = boundary([1, 2], 7, b'a', 0);
        let m = boundary([1, 2], 7, b'm', 0);
        let mut hay = b"x_=_y".to_vec();
        for part in [&a[..], b" ", &m[..], &a[..], b"=", &a[..34]] {
            hay.extend_from_slice(part);
        }
        assert_eq!(count_boundaries(&hay, &a, &m), (2, 1));
        assert_eq!(count_boundaries(b"", &a, &m), (0, 0));
    }

    #[test]
    fn truthy_values() {
        for yes in ["1", "true", "TRUE", "Yes", " yes "] {
            assert!(truthy(yes.as_bytes()), "{yes}");
        }
        for no in ["", "0", "no", "false", "y", "2"] {
            assert!(!truthy(no.as_bytes()), "{no}");
        }
    }
}
