//! Message bytes for the DATA and BDAT phases: line ends normalized to CRLF and, for
//! DATA, dot-stuffing plus the `.` terminator (RFC 5321 §4.5.2).
//!
//! Normalizing every bare CR and bare LF to CRLF is what keeps us out of "SMTP
//! smuggling": a receiver that ends DATA on `\n.\n` or `\r.\r` would otherwise see a
//! second message hidden in ours. After [`dot_stuff_into`] the only `CRLF . CRLF` in
//! the stream is the terminator we add.
//!
//! Why hand-written: this runs once per message on the delivery hot path. A
//! line-by-line `split`/`lines()` loop costs a bounds-checked byte scan per line and an
//! `extend` per line; instead `memchr2` jumps straight to the next CR or LF (SIMD), and
//! bytes are copied in runs that are only broken where something must be inserted (a
//! missing CR or LF, a stuffed dot). A body that already uses CRLF and has no line
//! starting with `.` (the usual rendered message) is copied with a single
//! `extend_from_slice`. No allocation beyond growing `out` once.

use bytes::{BufMut, BytesMut};
use memchr::memchr2;

/// Writes `body` as DATA content: line ends normalized to CRLF, a `.` added before
/// each line that starts with `.`, a CRLF added after an unterminated last line, then
/// the terminator `.` CRLF.
///
/// The bytes are meant to follow a 354 reply, i.e. a line start. An empty body gives
/// just the terminator.
pub fn dot_stuff_into(body: &[u8], out: &mut BytesMut) {
    out.reserve(body.len() + body.len() / 32 + 5);
    copy_normalized::<true>(body, out);
    if !body.is_empty() && !matches!(body.last(), Some(b'\r' | b'\n')) {
        out.put_slice(b"\r\n");
    }
    out.put_slice(b".\r\n");
}

/// Whether `body` can follow DATA byte for byte, with only `.` CRLF after it:
/// it ends with CRLF and no line starts with `.`. The client session then sends
/// a rendered template's buffer (`Rendered::crlf_only` of `volley-merge`) as it
/// is, without copying it. Two vectorized searches, for `.` after LF and after
/// CR, so a body with a bare CR or LF that would start a line with `.` is never
/// taken as clean, whatever its source claimed (it takes the general path).
pub fn sendable_as_is(body: &[u8]) -> bool {
    body.ends_with(b"\r\n")
        && body.first() != Some(&b'.')
        && memchr::memmem::find(body, b"\n.").is_none()
        && memchr::memmem::find(body, b"\r.").is_none()
}

/// Writes `body` with line ends normalized to CRLF and nothing else changed: the
/// content of a BDAT chunk. Produces exactly [`normalized_len`] bytes.
pub fn normalize_crlf_into(body: &[u8], out: &mut BytesMut) {
    out.reserve(normalized_len(body));
    copy_normalized::<false>(body, out);
}

/// How many bytes [`normalize_crlf_into`] writes for `body` (for `BDAT <n>` and
/// `SIZE=<n>`): the body's length plus one per bare CR or bare LF.
pub fn normalized_len(body: &[u8]) -> usize {
    let mut extra = 0;
    let mut pos = 0;
    while let Some(off) = memchr2(b'\r', b'\n', &body[pos..]) {
        let i = pos + off;
        if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
            pos = i + 2;
        } else {
            extra += 1;
            pos = i + 1;
        }
    }
    body.len() + extra
}

/// The shared loop. `start` is where the pending run of bytes to copy verbatim begins;
/// the run is flushed only when a byte has to be inserted.
fn copy_normalized<const STUFF: bool>(body: &[u8], out: &mut BytesMut) {
    let mut start = 0;
    let mut pos = 0;
    if STUFF && body.first() == Some(&b'.') {
        out.put_u8(b'.');
    }
    while let Some(off) = memchr2(b'\r', b'\n', &body[pos..]) {
        let i = pos + off;
        let next = if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
            i + 2
        } else {
            // A bare CR or bare LF: write the run before it, then a real CRLF.
            out.put_slice(&body[start..i]);
            out.put_slice(b"\r\n");
            start = i + 1;
            i + 1
        };
        if STUFF && body.get(next) == Some(&b'.') {
            out.put_slice(&body[start..next]);
            out.put_u8(b'.');
            start = next;
        }
        pos = next;
    }
    out.put_slice(&body[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stuffed(body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        dot_stuff_into(body, &mut out);
        out.to_vec()
    }

    fn normalized(body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        normalize_crlf_into(body, &mut out);
        out.to_vec()
    }

    /// What a receiver does: read lines up to the lone `.`, drop one leading dot.
    fn unstuff(data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for line in data.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").expect("every line ends in CRLF");
            if line == b"." {
                return body;
            }
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            body.extend_from_slice(b"\r\n");
        }
        panic!("no terminator in {:?}", String::from_utf8_lossy(data));
    }

    fn has_bare_cr_or_lf(data: &[u8]) -> bool {
        data.iter().enumerate().any(|(i, &b)| {
            (b == b'\r' && data.get(i + 1) != Some(&b'\n'))
                || (b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
        })
    }

    #[test]
    fn dot_stuffing_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
            (b"a\rb", b"a\r\nb\r\n.\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b"..x\r\n.y", b"...x\r\n..y\r\n.\r\n"),
            (b"x.\r\n.", b"x.\r\n..\r\n.\r\n"),
            // SMTP smuggling: each of these must not end the data early
            (
                b"a\n.\nMAIL FROM:<x>\n",
                b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n",
            ),
            (b"a\r.\rMAIL", b"a\r\n..\r\nMAIL\r\n.\r\n"),
            (b"a\r\n.\nMAIL", b"a\r\n..\r\nMAIL\r\n.\r\n"),
            (b"a\n.\r\nMAIL", b"a\r\n..\r\nMAIL\r\n.\r\n"),
            (b"a\r\n.\r\nMAIL", b"a\r\n..\r\nMAIL\r\n.\r\n"),
            (b".\r\nMAIL", b"..\r\nMAIL\r\n.\r\n"),
            (b"\n", b"\r\n.\r\n"),
            (b"\r", b"\r\n.\r\n"),
        ];
        for (body, expected) in cases {
            assert_eq!(
                stuffed(body),
                *expected,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn normalize_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a", b"a"),
            (b"a\nb", b"a\r\nb"),
            (b"a\rb\r", b"a\r\nb\r\n"),
            (b"a\r\nb\r\n", b"a\r\nb\r\n"),
            (b".\n.", b".\r\n."),
            (b"\r\r\n\n", b"\r\n\r\n\r\n"),
        ];
        for (body, expected) in cases {
            assert_eq!(normalized(body), *expected);
            assert_eq!(normalized_len(body), expected.len());
        }
    }

    #[test]
    fn appends_to_what_is_already_in_the_buffer() {
        let mut out = BytesMut::from(&b"BDAT 3 LAST\r\n"[..]);
        normalize_crlf_into(b"a\nb", &mut out);
        assert_eq!(&out[..], b"BDAT 3 LAST\r\na\r\nb");
    }

    fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                3 => Just(b'\r'),
                3 => Just(b'\n'),
                3 => Just(b'.'),
                2 => any::<u8>(),
            ],
            0..200,
        )
    }

    proptest! {
        #[test]
        fn stuffed_data_has_one_terminator_and_round_trips(body in body_strategy()) {
            let out = stuffed(&body);
            // The CRLF that ended the DATA command line comes first on the wire.
            let mut wire = b"\r\n".to_vec();
            wire.extend_from_slice(&out);
            let terminators = wire.windows(5).filter(|w| *w == b"\r\n.\r\n").count();
            prop_assert_eq!(terminators, 1);
            prop_assert!(wire.ends_with(b"\r\n.\r\n"));
            prop_assert!(!has_bare_cr_or_lf(&out));

            let mut expected = normalized(&body);
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(unstuff(&out), expected);
        }

        #[test]
        fn normalized_has_no_bare_line_ends_and_predicted_length(body in body_strategy()) {
            let out = normalized(&body);
            prop_assert!(!has_bare_cr_or_lf(&out));
            prop_assert_eq!(out.len(), normalized_len(&body));
            let without_cr: Vec<u8> = out.iter().copied().filter(|&b| b != b'\r').collect();
            let original: Vec<u8> = body
                .iter()
                .enumerate()
                .filter_map(|(i, &b)| match b {
                    b'\r' if body.get(i + 1) == Some(&b'\n') => None,
                    b'\r' => Some(b'\n'),
                    _ => Some(b),
                })
                .collect();
            prop_assert_eq!(without_cr, original);
        }
    }
}
