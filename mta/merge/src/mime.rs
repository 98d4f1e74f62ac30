//! The MIME encoders the renderer needs: quoted-printable and 7bit bodies (RFC 2045),
//! base64 (RFC 4648, 76-character lines for bodies), header fields folded at 78
//! characters with RFC 2047 encoded-words for non-ASCII text, HTML escaping, and the
//! sanitizing of merge values.
//!
//! Why hand-written rather than a MIME crate: each function here runs per message on
//! the send path and writes straight into the caller's buffer, with one table lookup
//! per byte and no intermediate `String`s; the crates we looked at (`mail-builder`,
//! `lettre`'s message builder) build a tree of owned parts per message and allocate
//! per header. The rules are short and pinned by the tests below.

use bytes::{BufMut, BytesMut};

/// The line length RFC 5322 §2.1.1 asks header lines to stay within.
const FOLD_AT: usize = 78;
/// Longest plain token written as is in a header; longer ones become encoded-words
/// (which can be split anywhere), so a header line never nears 998 octets.
const LONG_TOKEN: usize = 900;
/// Longest header field name accepted (so that name + long token < 998).
pub(crate) const MAX_HEADER_NAME: usize = 76;
/// Longest quoted-printable line before the soft line break `=` (RFC 2045: 76 with it).
pub(crate) const QP_LINE: usize = 75;
/// Longest line a body may have to be sent as 7bit instead of quoted-printable.
const SHORT_LINE: usize = 76;
/// Encoded-word overhead: `=?UTF-8?Q?` + `?=`.
const WORD_OVERHEAD: usize = 12;
/// Longest encoded-word (RFC 2047 §2).
const WORD_MAX: usize = 75;

pub(crate) const HEX: &[u8; 16] = b"0123456789ABCDEF";
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// ---------------------------------------------------------------------------------
// Merge values

/// Appends `value` (any bytes) to `out` as UTF-8, each invalid sequence replaced by
/// U+FFFD, without allocating.
pub(crate) fn push_lossy(value: &[u8], out: &mut Vec<u8>) {
    if std::str::from_utf8(value).is_ok() {
        out.extend_from_slice(value);
        return;
    }
    for chunk in value.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
}

/// What one merge value needs, worked out once per message rather than at each
/// of its places in the template (a company name may appear thirty times).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ValueFlags {
    /// Valid UTF-8: goes into a text part as it is.
    pub(crate) utf8: bool,
    /// Valid UTF-8 without `&<>"'`: goes into an HTML part as it is.
    pub(crate) html_plain: bool,
    /// Every octet may stay literal in quoted-printable (printable ASCII but
    /// `=`, space, TAB; no line end).
    pub(crate) qp_literal: bool,
}

impl ValueFlags {
    /// The flags of `value`.
    pub(crate) fn of(value: &[u8]) -> ValueFlags {
        let qp_literal = is_qp_literal(value);
        // All-literal octets are ASCII, so valid UTF-8 without a second scan.
        let utf8 = qp_literal || std::str::from_utf8(value).is_ok();
        ValueFlags {
            utf8,
            html_plain: utf8 && !value.iter().any(|&b| is_html_special(b)),
            qp_literal,
        }
    }
}

/// Whether every octet of `value` may stay literal in quoted-printable.
pub(crate) fn is_qp_literal(value: &[u8]) -> bool {
    value.iter().all(|&b| QP_LITERAL[usize::from(b)])
}

/// `value` made valid UTF-8: itself when it already is (the usual case, no
/// copy), else its lossy conversion written into `scratch`.
pub(crate) fn lossy<'a>(value: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    if std::str::from_utf8(value).is_ok() {
        return value;
    }
    scratch.clear();
    push_lossy(value, scratch);
    scratch
}

/// `value` HTML-escaped and made valid UTF-8: itself when it needs neither
/// (names, cities, numbers: the usual case, no copy), else the escaped form
/// written into `scratch`.
pub(crate) fn html_escaped<'a>(value: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    if needs_no_html_escape(value) {
        return value;
    }
    scratch.clear();
    push_html_escaped(value, scratch);
    scratch
}

/// Appends `value` (any bytes) to `out` HTML-escaped, lossily converted to UTF-8.
pub(crate) fn push_html_escaped(value: &[u8], out: &mut Vec<u8>) {
    if needs_no_html_escape(value) {
        out.extend_from_slice(value);
        return;
    }
    for chunk in value.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut from = 0;
        for (i, &b) in valid.iter().enumerate() {
            let entity: &[u8] = match b {
                b'&' => b"&amp;",
                b'<' => b"&lt;",
                b'>' => b"&gt;",
                b'"' => b"&quot;",
                b'\'' => b"&#39;",
                _ => continue,
            };
            out.extend_from_slice(&valid[from..i]);
            out.extend_from_slice(entity);
            from = i + 1;
        }
        out.extend_from_slice(&valid[from..]);
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
}

/// Whether `value` is valid UTF-8 without an octet [`push_html_escaped`]
/// replaces by an entity, so it goes into HTML as it is.
fn needs_no_html_escape(value: &[u8]) -> bool {
    !value.iter().any(|&b| is_html_special(b)) && std::str::from_utf8(value).is_ok()
}

/// The octets HTML escaping replaces by an entity.
fn is_html_special(b: u8) -> bool {
    matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'')
}

/// Appends `value` (any bytes) to `out` for use in a header: lossily converted to
/// UTF-8, and every control character (CR, LF, NUL, TAB, DEL, C1) and Unicode line
/// or paragraph separator replaced by a space, so it can never end the header line.
pub(crate) fn push_header_text(value: &[u8], out: &mut String) {
    for chunk in value.utf8_chunks() {
        let valid = chunk.valid();
        if valid.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            out.push_str(valid);
        } else {
            out.extend(valid.chars().map(|c| {
                if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                    ' '
                } else {
                    c
                }
            }));
        }
        if !chunk.invalid().is_empty() {
            out.push('\u{FFFD}');
        }
    }
}

// ---------------------------------------------------------------------------------
// Bodies

/// Splits `input` into lines at CRLF, lone CR or lone LF and calls `line` for each
/// (without its line end). A trailing line end gives no empty last line.
fn for_each_line(input: &[u8], mut line: impl FnMut(&[u8], bool) -> bool) -> bool {
    let mut start = 0;
    while start < input.len() {
        match memchr::memchr2(b'\r', b'\n', &input[start..]) {
            Some(k) => {
                let end = start + k;
                if !line(&input[start..end], true) {
                    return false;
                }
                start = if input[end] == b'\r' && input.get(end + 1) == Some(&b'\n') {
                    end + 2
                } else {
                    end + 1
                };
            }
            None => return line(&input[start..], false),
        }
    }
    true
}

/// Whether `input` can go out as 7bit: every line printable ASCII (or TAB), at most
/// 76 octets, none a lone `.` (which would end DATA if the SMTP layer ever failed to
/// dot-stuff) and none starting like a volley boundary line (`--=_`; in
/// quoted-printable that becomes `--=3D_`, which no boundary matches).
pub(crate) fn fits_7bit(input: &[u8]) -> bool {
    for_each_line(input, |line, _| {
        line.len() <= SHORT_LINE
            && line != b"."
            && !line.starts_with(b"--=_")
            && line
                .iter()
                .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t')
    })
}

/// Appends `input` with every line end (CRLF, CR or LF) written as CRLF and a CRLF
/// after the last line.
pub(crate) fn write_7bit(input: &[u8], out: &mut BytesMut) {
    out.reserve(input.len() + 2);
    for_each_line(input, |line, _| {
        out.put_slice(line);
        out.put_slice(b"\r\n");
        true
    });
}

/// Octets quoted-printable may leave as they are (RFC 2045 §6.7 rules 2 and 3):
/// printable ASCII but `=`, and space and TAB (except before a line end).
const QP_LITERAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b >= 33 && b <= 126 && b != b'=' as usize) || b == 32 || b == 9;
        b += 1;
    }
    table
};

/// Appends `input` quoted-printable encoded (RFC 2045 §6.7): every line end (CRLF,
/// CR or LF) is a hard line break written as CRLF; `=`, controls and non-ASCII octets
/// become `=XX`; a space or TAB before a line end is encoded; lines are broken with a
/// soft `=` so none exceeds 76 characters; and a `.` at the start of an encoded line
/// is written `=2E`, so no line can be a lone `.`. Ends with CRLF.
///
/// Runs of literal octets are copied whole, so plain text costs a table lookup
/// and a bulk copy, not a branchy step, per octet.
pub(crate) fn write_qp(input: &[u8], out: &mut BytesMut) {
    out.reserve(input.len() + input.len() / 8 + 8);
    for_each_line(input, |line, _| {
        write_qp_row(line, &mut 0, true, out);
        out.put_slice(b"\r\n");
        true
    });
}

/// Appends one line (without its line end) quoted-printable encoded from column
/// `*col` of the current encoded line, with soft line breaks so that no encoded
/// line exceeds 76 characters, and leaves `*col` at the column after it.
/// `line_end`: a line end (or the end of the body) follows, so a final space or
/// TAB is encoded; otherwise more text follows on the line and it stays literal.
pub(crate) fn write_qp_row(line: &[u8], col: &mut usize, line_end: bool, out: &mut BytesMut) {
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        let last = i + 1 == line.len() && line_end;
        let literal = QP_LITERAL[usize::from(b)]
            && !(last && (b == b' ' || b == b'\t'))
            && !(*col == 0 && b == b'.');
        let width = if literal { 1 } else { 3 };
        if *col + width > QP_LINE {
            out.put_slice(b"=\r\n");
            *col = 0;
            continue; // re-decide: a `.` now starts the line
        }
        if literal {
            let end = line.len().min(i + (QP_LINE - *col));
            let mut j = i + 1;
            while j < end && QP_LITERAL[usize::from(line[j])] {
                j += 1;
            }
            if line_end && j == line.len() && j - 1 > i && matches!(line[j - 1], b' ' | b'\t') {
                j -= 1; // trailing whitespace is encoded on the next round
            }
            out.put_slice(&line[i..j]);
            *col += j - i;
            i = j;
        } else {
            out.put_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            *col += 3;
            i += 1;
        }
    }
}

/// Appends `value` quoted-printable encoded from column `*col` (see
/// [`write_qp_row`]): its line ends become hard breaks (CRLF), and `line_end`
/// says whether a line end follows the value. Leaves `*col` after it.
/// `literal`: the value's [`is_qp_literal`], known by the caller.
pub(crate) fn write_qp_value(
    value: &[u8],
    literal: bool,
    col: &mut usize,
    line_end: bool,
    out: &mut BytesMut,
) {
    // Most values are short plain words that fit on the current line as they
    // are: no line end, nothing to encode, no `.` starting the line and no
    // blank before a line end. Copy them whole.
    let fits = literal
        && *col + value.len() <= QP_LINE
        && !(*col == 0 && value.first() == Some(&b'.'))
        && !(line_end && matches!(value.last(), Some(b' ' | b'\t')));
    if fits {
        out.put_slice(value);
        *col += value.len();
        return;
    }
    if literal {
        write_qp_literal_value(value, col, line_end, out);
        return;
    }
    write_qp_value_lines(value, col, line_end, out);
}

/// [`write_qp_value`] of a value that needs no encoding (no line end either)
/// but does not fit on the line, as a tracked link's URL: whole pieces of the
/// line's room at a time with soft line breaks between, the bytes written as
/// [`write_qp_row`] writes them (a `.` starting a line or a last blank before
/// a line end hands the rest to it).
fn write_qp_literal_value(value: &[u8], col: &mut usize, line_end: bool, out: &mut BytesMut) {
    let mut rest = value;
    while !rest.is_empty() {
        let room = QP_LINE - (*col).min(QP_LINE);
        if room == 0 {
            out.put_slice(b"=\r\n");
            *col = 0;
            continue;
        }
        let last = rest.len() <= room;
        if (*col == 0 && rest[0] == b'.')
            || (last && line_end && matches!(rest.last(), Some(b' ' | b'\t')))
        {
            write_qp_row(rest, col, line_end, out);
            return;
        }
        let take = rest.len().min(room);
        out.put_slice(&rest[..take]);
        *col += take;
        rest = &rest[take..];
        if !rest.is_empty() {
            out.put_slice(b"=\r\n");
            *col = 0;
        }
    }
}

/// [`write_qp_value`] without its shortcut: line by line.
fn write_qp_value_lines(value: &[u8], col: &mut usize, line_end: bool, out: &mut BytesMut) {
    for_each_line(value, |line, terminated| {
        write_qp_row(line, col, terminated || line_end, out);
        if terminated {
            out.put_slice(b"\r\n");
            *col = 0;
        }
        true
    });
}

/// Appends `text` quoted-printable encoded as if it started a line, for a
/// template's literal text: like [`write_qp`], but a last line without a line
/// end gets no CRLF and keeps a final space or TAB literal (more text may
/// follow on it; if a line end follows instead, the caller encodes it).
pub(crate) fn write_qp_literal(text: &[u8], out: &mut BytesMut) {
    for_each_line(text, |line, terminated| {
        write_qp_row(line, &mut 0, terminated, out);
        if terminated {
            out.put_slice(b"\r\n");
        }
        true
    });
}

// ---------------------------------------------------------------------------------
// base64

/// The base64 encoding of 1 to 3 bytes, padded.
fn base64_quad(chunk: &[u8]) -> [u8; 4] {
    let byte = |i: usize| chunk.get(i).map_or(0, |&b| u32::from(b));
    let n = byte(0) << 16 | byte(1) << 8 | byte(2);
    let sym = |shift: u32| B64[(n >> shift) as usize & 63];
    match chunk.len() {
        1 => [sym(18), sym(12), b'=', b'='],
        2 => [sym(18), sym(12), sym(6), b'='],
        _ => [sym(18), sym(12), sym(6), sym(0)],
    }
}

/// Appends the base64 encoding of `data` (with padding, no line breaks).
pub fn base64_into(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        out.extend_from_slice(&base64_quad(chunk));
    }
}

/// Appends `data` base64 encoded in lines of 76 characters separated by CRLF, with
/// no line end after the last line (the caller's next delimiter supplies it).
pub(crate) fn base64_lines(data: &[u8], out: &mut Vec<u8>) {
    for (i, chunk) in data.chunks(57).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        base64_into(chunk, out);
    }
}

/// Decodes standard base64 with padding (line breaks and other whitespace are not
/// accepted); `None` for anything else.
pub(crate) fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let quads = text.len() / 4;
    for (q, c) in text.chunks_exact(4).enumerate() {
        let pad = if q + 1 == quads {
            c.iter().rev().take_while(|&&b| b == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &b in &c[..4 - pad] {
            n = n << 6 | value(b)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------
// Header fields

/// Which tokens of a header value become RFC 2047 encoded-words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encode {
    /// Unstructured text (Subject, extra headers): non-ASCII tokens, tokens that
    /// look like encoded-words (`=?`), and tokens too long to fit a line.
    Text,
    /// Text of a raw message's header: as [`Encode::Text`] but `=?` tokens are kept
    /// (the author may have written encoded-words already).
    Raw,
    /// Nothing (addresses): the caller guarantees tokens are at most 900 octets.
    Never,
}

/// Whether `name` may be a header field name we write: printable ASCII without `:`,
/// 1 to 76 characters.
pub(crate) fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HEADER_NAME
        && name.bytes().all(|b| (33..127).contains(&b) && b != b':')
}

/// Writes one header field, `name: value` CRLF, folded at spaces to stay within 78
/// characters where the tokens allow, never over 998. `value` must hold no control
/// characters (see [`push_header_text`]); leading and trailing spaces are dropped.
pub(crate) fn write_header(out: &mut BytesMut, name: &str, value: &str, encode: Encode) {
    let mut f = Folder::start(out, name);
    f.text(value, encode);
    f.finish();
}

/// Writes a header line by line: the field name, then plain tokens and encoded-word
/// runs, folding before any that would pass 78 characters.
pub(crate) struct Folder<'a> {
    out: &'a mut BytesMut,
    /// Characters on the current line.
    col: usize,
    /// Whether the current line holds a token (folding before the first token of the
    /// field would leave an empty first line).
    has_token: bool,
    /// Whether the last thing written was an encoded-word.
    after_word: bool,
}

impl<'a> Folder<'a> {
    /// Writes `name:`.
    pub(crate) fn start(out: &'a mut BytesMut, name: &str) -> Folder<'a> {
        out.put_slice(name.as_bytes());
        out.put_u8(b':');
        Folder {
            out,
            col: name.len() + 1,
            has_token: false,
            after_word: false,
        }
    }

    /// Ends the field with CRLF.
    pub(crate) fn finish(self) {
        self.out.put_slice(b"\r\n");
    }

    /// Writes `spaces` spaces then `token`, folding first if the line would pass 78.
    fn put(&mut self, spaces: usize, token: &[u8]) {
        let spaces = spaces.max(1);
        if self.has_token && self.col + spaces + token.len() > FOLD_AT {
            self.out.put_slice(b"\r\n");
            self.col = 0;
        }
        for _ in 0..spaces {
            self.out.put_u8(b' ');
        }
        self.out.put_slice(token);
        self.col += spaces + token.len();
        self.has_token = true;
    }

    /// Writes text whose tokens are separated by spaces, encoding tokens as `encode`
    /// says.
    pub(crate) fn text(&mut self, value: &str, encode: Encode) {
        let value = value.trim_matches(' ');
        let bytes = value.as_bytes();
        let mut pos = 0;
        // Where the previous token ended, to carry the spaces between two encoded
        // tokens inside the encoding (decoders drop whitespace between encoded-words).
        let mut prev_end = 0;
        while pos < bytes.len() {
            let start = pos + bytes[pos..].iter().take_while(|&&b| b == b' ').count();
            let end = memchr::memchr(b' ', &bytes[start..]).map_or(bytes.len(), |k| start + k);
            let token = &value[start..end];
            let gap = start - prev_end;
            let needs_encoding = match encode {
                Encode::Never => false,
                Encode::Text => {
                    !token.is_ascii() || token.len() > LONG_TOKEN || token.contains("=?")
                }
                Encode::Raw => !token.is_ascii() || token.len() > LONG_TOKEN,
            };
            if needs_encoding {
                if self.after_word && start > 0 {
                    self.words(&value[prev_end..end], 1);
                } else {
                    self.words(token, gap);
                }
            } else {
                self.put(gap, token.as_bytes());
                self.after_word = false;
            }
            prev_end = end;
            pos = end;
        }
    }

    /// Writes `text` as one or more RFC 2047 encoded-words (UTF-8, Q or B, whichever
    /// is shorter), each at most 75 characters and holding whole characters.
    pub(crate) fn words(&mut self, text: &str, spaces: usize) {
        // Q stays readable for mostly-Latin text; B is shorter for the rest.
        let q_len: usize = text.bytes().map(q_width).sum();
        let use_b = 2 * q_len > 3 * text.len().div_ceil(3) * 4;
        let mut spaces = spaces;
        let mut budget = self.word_budget(spaces);
        let mut start = 0;
        let mut width = 0; // Q width of text[start..i]
        for (i, c) in text.char_indices() {
            let next = if use_b {
                (i + c.len_utf8() - start).div_ceil(3) * 4
            } else {
                width + q_char_width(c)
            };
            if next > budget && i > start {
                self.word(&text[start..i], use_b, spaces);
                spaces = 1;
                budget = self.word_budget(spaces);
                start = i;
                width = q_char_width(c);
            } else {
                width = next;
            }
        }
        if start < text.len() {
            self.word(&text[start..], use_b, spaces);
        }
        self.after_word = true;
    }

    /// How many encoded characters the next encoded-word may hold: as many as fit
    /// on the current line, or a full word (63) on a new line when few fit.
    fn word_budget(&self, spaces: usize) -> usize {
        let full = WORD_MAX - WORD_OVERHEAD;
        let room = FOLD_AT.saturating_sub(self.col + spaces.max(1) + WORD_OVERHEAD);
        if room >= 16 {
            room.min(full)
        } else if self.has_token {
            full
        } else {
            // Right after a long field name: a short word (one character at worst).
            room.max(12)
        }
    }

    /// Writes one encoded-word for `text` (at most 63 encoded characters).
    fn word(&mut self, text: &str, use_b: bool, spaces: usize) {
        let mut word = [0u8; WORD_MAX];
        let mut n = 0;
        let mut put = |bytes: &[u8]| {
            let end = (n + bytes.len()).min(WORD_MAX);
            word[n..end].copy_from_slice(&bytes[..end - n]);
            n = end;
        };
        if use_b {
            put(b"=?UTF-8?B?");
            for chunk in text.as_bytes().chunks(3) {
                put(&base64_quad(chunk));
            }
        } else {
            put(b"=?UTF-8?Q?");
            for b in text.bytes() {
                if q_literal(b) {
                    put(&[b]);
                } else if b == b' ' {
                    put(b"_");
                } else {
                    put(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                }
            }
        }
        put(b"?=");
        self.put(spaces, &word[..n]);
    }
}

/// Q-encoded width of one character.
fn q_char_width(c: char) -> usize {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf).bytes().map(q_width).sum()
}

/// Whether `b` may appear literally in a Q encoded-word. The most restrictive set
/// (RFC 2047 §5 (3), for words in a phrase), so one encoding fits every header.
fn q_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'!' | b'*' | b'+' | b'-' | b'/')
}

fn q_width(b: u8) -> usize {
    if q_literal(b) || b == b' ' {
        1
    } else {
        3
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Decodes a header field body the way a mail reader would: unfold, then
    /// replace encoded-words, dropping whitespace between adjacent ones.
    pub(crate) fn decode_header_value(field: &str) -> String {
        let unfolded = field.replace("\r\n", "");
        let mut out = String::new();
        let mut pending_space = String::new();
        let mut prev_word = false;
        for (i, token) in unfolded.split(' ').enumerate() {
            if i > 0 {
                pending_space.push(' ');
            }
            if token.is_empty() {
                continue;
            }
            if let Some(decoded) = decode_word(token) {
                if !prev_word {
                    out.push_str(&pending_space);
                }
                out.push_str(&decoded);
                prev_word = true;
            } else {
                out.push_str(&pending_space);
                out.push_str(token);
                prev_word = false;
            }
            pending_space.clear();
        }
        out
    }

    fn decode_word(token: &str) -> Option<String> {
        let inner = token.strip_prefix("=?UTF-8?")?.strip_suffix("?=")?;
        let bytes = if let Some(b) = inner.strip_prefix("B?") {
            base64_decode(b.as_bytes())?
        } else {
            let q = inner.strip_prefix("Q?")?.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < q.len() {
                match q[i] {
                    b'_' => out.push(b' '),
                    b'=' => {
                        let hex = std::str::from_utf8(q.get(i + 1..i + 3)?).ok()?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    b => out.push(b),
                }
                i += 1;
            }
            out
        };
        String::from_utf8(bytes).ok()
    }

    fn header(name: &str, value: &str, encode: Encode) -> String {
        let mut out = BytesMut::new();
        write_header(&mut out, name, value, encode);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn qp(input: &[u8]) -> String {
        let mut out = BytesMut::new();
        write_qp(input, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn rfc2047_known_outputs() {
        let cases: &[(&str, &str)] = &[
            ("Hello", "Subject: Hello\r\n"),
            ("Grüße", "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n"),
            (
                "Hello Jörg Müller!",
                "Subject: Hello =?UTF-8?Q?J=C3=B6rg?= =?UTF-8?Q?_M=C3=BCller!?=\r\n",
            ),
            (
                "こんにちは",
                "Subject: =?UTF-8?B?44GT44KT44Gr44Gh44Gv?=\r\n",
            ),
            ("a =?x?= b", "Subject: a =?UTF-8?B?PT94Pz0=?= b\r\n"),
            ("  padded  ", "Subject: padded\r\n"),
            ("", "Subject:\r\n"),
        ];
        for (value, want) in cases {
            assert_eq!(header("Subject", value, Encode::Text), *want, "{value:?}");
        }
        // Raw mode keeps encoded-words the author wrote.
        assert_eq!(
            header("Subject", "=?UTF-8?Q?x?=", Encode::Raw),
            "Subject: =?UTF-8?Q?x?=\r\n"
        );
    }

    #[test]
    fn rfc2047_round_trips_and_limits() {
        let long_ascii = "x".repeat(2000);
        let values = [
            "Grüße aus Köln, Ihre Bestellung Nr. 4711 ist unterwegs und kommt bald an!",
            "日本語のテキストはとても長いのでいくつかの encoded-word に分割されます。日本語のテキスト",
            "mixed Ünïcödé and ascii words that go on and on past the seventy eight limit",
            "emoji 😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀 done",
            long_ascii.as_str(),
            "ä  ö   ü", // runs of spaces between encoded words survive
        ];
        for value in values {
            let field = header("Subject", value, Encode::Text);
            let body = field
                .strip_prefix("Subject:")
                .and_then(|b| b.strip_suffix("\r\n"))
                .unwrap();
            assert_eq!(decode_header_value(body).trim_start(), value, "{field}");
            for line in field.split("\r\n") {
                assert!(line.len() <= 78, "{} > 78: {line}", line.len());
            }
            for word in field.split([' ', '\r', '\n']) {
                assert!(word.len() <= 75 || !word.starts_with("=?"), "{word}");
            }
        }
    }

    #[test]
    fn folding_keeps_tokens_whole() {
        let value = "word ".repeat(30);
        let field = header("X-Long", &value, Encode::Text);
        assert!(field.lines().all(|l| l.len() <= 78));
        assert_eq!(
            field.replace("\r\n", "").trim_end(),
            format!("X-Long: {}", value.trim())
        );
        // A long plain token cannot be folded; it stays whole on its own line.
        let url = format!("<https://acme.test/u?t={}>", "a".repeat(120));
        let field = header(
            "List-Unsubscribe",
            &format!("{url}, <mailto:x@y>"),
            Encode::Text,
        );
        assert_eq!(
            field,
            format!("List-Unsubscribe: {url},\r\n <mailto:x@y>\r\n")
        );
    }

    #[test]
    fn qp_rules() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain", "plain\r\n"),
            (b"a=b", "a=3Db\r\n"),
            (
                b"trailing \nspace\t\r\nx",
                "trailing=20\r\nspace=09\r\nx\r\n",
            ),
            (b"inner space ok", "inner space ok\r\n"),
            (b"caf\xc3\xa9", "caf=C3=A9\r\n"),
            (b"a\rb\nc\r\nd", "a\r\nb\r\nc\r\nd\r\n"),
            (b".\r\n", "=2E\r\n"),
            (b"x\r\n.\r\ny", "x\r\n=2E\r\ny\r\n"),
            (b".hidden", "=2Ehidden\r\n"),
            (b"nul\0", "nul=00\r\n"),
            (b"", ""),
        ];
        for (input, want) in cases {
            assert_eq!(qp(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
        // Soft line breaks: at most 76 characters with the `=`, never splitting =XX.
        let long = qp(&[b'a'; 200]);
        let lines: Vec<&str> = long.split("\r\n").collect();
        assert_eq!(lines[0], format!("{}=", "a".repeat(75)));
        assert_eq!(lines[1], format!("{}=", "a".repeat(75)));
        assert_eq!(lines[2], "a".repeat(50));
        let long = qp("é".repeat(40).as_bytes());
        for line in long.split("\r\n") {
            assert!(line.len() <= 76, "{line}");
            let body = line.strip_suffix('=').unwrap_or(line);
            assert_eq!(body.len() % 3, 0, "split escape in {line}");
        }
        // A dot that lands at the start of a continuation line is escaped too.
        let mut input = vec![b'a'; 75];
        input.push(b'.');
        assert_eq!(qp(&input), format!("{}=\r\n=2E\r\n", "a".repeat(75)));
    }

    /// Decodes quoted-printable with CRLF line ends (RFC 2045 §6.7).
    pub(crate) fn qp_decode(encoded: &str) -> Vec<u8> {
        let mut out = Vec::new();
        if encoded.is_empty() {
            return out;
        }
        let body = encoded.strip_suffix("\r\n").unwrap_or(encoded);
        for line in body.split("\r\n") {
            let (line, soft) = match line.strip_suffix('=') {
                Some(line) => (line, true),
                None => (line, false),
            };
            let bytes = line.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'=' {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            if !soft {
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn qp_round_trips(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
                          text in "[ .a=\t\r\n-]{0,200}") {
            for input in [input, text.into_bytes()] {
                let encoded = qp(&input);
                for line in encoded.split("\r\n") {
                    proptest::prop_assert!(line.len() <= 76, "{}", line);
                    proptest::prop_assert!(!line.ends_with(' ') && !line.ends_with('\t'));
                    proptest::prop_assert!(line != ".");
                    proptest::prop_assert!(line.bytes().all(|b| (32..127).contains(&b) || b == b'\t'));
                }
                let mut normalized = BytesMut::new();
                write_7bit(&input, &mut normalized);
                proptest::prop_assert_eq!(qp_decode(&encoded), normalized.to_vec());
            }
        }
    }

    proptest::proptest! {
        /// The shortcuts for plain values (fitting the line, or in pieces of
        /// lines as long URLs) write what the line-by-line path writes.
        #[test]
        fn qp_value_shortcut_matches_the_general_path(
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            word in "[ .a-zA-Z0-9=\t]{0,240}",
            url in "[ .a-zA-Z0-9/:_-]{0,240}",
            col in 0usize..=QP_LINE,
            line_end in proptest::prelude::any::<bool>(),
        ) {
            for value in [value, word.into_bytes(), url.into_bytes()] {
                let (mut fast, mut general) = (BytesMut::new(), BytesMut::new());
                let (mut fast_col, mut general_col) = (col, col);
                write_qp_value(&value, is_qp_literal(&value), &mut fast_col, line_end, &mut fast);
                write_qp_value_lines(&value, &mut general_col, line_end, &mut general);
                proptest::prop_assert_eq!(&fast[..], &general[..]);
                proptest::prop_assert_eq!(fast_col, general_col);
            }
        }

        /// The no-copy forms give the same text as the appending ones, which give
        /// the lossy UTF-8 conversion (escaped for HTML).
        #[test]
        fn value_conversions_agree(
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            text in "[a-zé<>&\"' ]{0,20}",
        ) {
            for value in [value, text.into_bytes()] {
                let lossy_text = String::from_utf8_lossy(&value).into_owned();
                let mut scratch = Vec::new();
                proptest::prop_assert_eq!(lossy(&value, &mut scratch), lossy_text.as_bytes());
                let mut pushed = Vec::new();
                push_lossy(&value, &mut pushed);
                proptest::prop_assert_eq!(&pushed[..], lossy_text.as_bytes());
                let escaped = lossy_text
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;")
                    .replace('\'', "&#39;");
                let mut scratch = Vec::new();
                proptest::prop_assert_eq!(html_escaped(&value, &mut scratch), escaped.as_bytes());
                let mut pushed = Vec::new();
                push_html_escaped(&value, &mut pushed);
                proptest::prop_assert_eq!(&pushed[..], escaped.as_bytes());
            }
        }
    }

    #[test]
    fn seven_bit_choice() {
        assert!(fits_7bit(b"Hello\r\nthere\n"));
        assert!(!fits_7bit("café".as_bytes()));
        assert!(!fits_7bit(b"a\r\n.\r\nb"));
        assert!(!fits_7bit(&[b'a'; 77]));
        assert!(!fits_7bit(b"bell\x07"));
        assert!(!fits_7bit(b"x\n--=_a0123\n"));
        assert!(fits_7bit(b"-- \nsignature"));
        let mut out = BytesMut::new();
        write_7bit(b"a\nb\rc\r\nd", &mut out);
        assert_eq!(&out[..], b"a\r\nb\r\nc\r\nd\r\n");
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            base64_into(plain.as_bytes(), &mut out);
            assert_eq!(out, encoded.as_bytes());
            assert_eq!(base64_decode(encoded.as_bytes()).unwrap(), plain.as_bytes());
        }
        for bad in ["Zg=", "Z===", "Zm9v!A==", "=AAA", "Zg==Zg=="] {
            assert_eq!(base64_decode(bad.as_bytes()), None, "{bad}");
        }
        let data: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let mut lines = Vec::new();
        base64_lines(&data, &mut lines);
        let text = String::from_utf8(lines).unwrap();
        assert!(text.split("\r\n").all(|l| l.len() <= 76));
        assert_eq!(text.split("\r\n").next().unwrap().len(), 76);
        assert_eq!(
            base64_decode(text.replace("\r\n", "").as_bytes()).unwrap(),
            data
        );
    }

    #[test]
    fn value_sanitizing() {
        let mut s = String::new();
        push_header_text(b"a\r\nBcc: x\0\x7f\xc2\x85\xe2\x80\xa8\xff!", &mut s);
        assert_eq!(s, "a  Bcc: x    \u{FFFD}!");
        let mut v = Vec::new();
        push_html_escaped(b"<a href=\"x\">'&'</a>\xff", &mut v);
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;\u{FFFD}"
        );
        let mut v = Vec::new();
        push_lossy(b"ok\xffok", &mut v);
        assert_eq!(v, "ok\u{FFFD}ok".as_bytes());
    }
}
