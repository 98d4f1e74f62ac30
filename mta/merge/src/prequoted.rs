//! Body parts whose literal text is quoted-printable encoded once, when the
//! template is compiled, so that per message only the merge values are encoded.
//!
//! A part takes this path when its literal text alone already needs
//! quoted-printable (non-ASCII text, or lines over 76 octets, as in most HTML):
//! then every message of the campaign is quoted-printable whatever the values,
//! and encoding the same few kilobytes of template text again for each recipient
//! was the largest single cost of rendering (`write_qp` in the e2e profile,
//! benches/README.md). A part whose literals could go as 7bit keeps the general
//! path (merge, then choose 7bit or quoted-printable for the result).
//!
//! Each literal is encoded as if it started a line. At send time a literal is
//! appended at the current column when its first encoded line still fits there
//! (so short texts read exactly as the general path writes them), else after a
//! soft line break; either way every later line of the literal is the
//! precomputed one. Values are encoded from the current column. The output obeys
//! the same rules as [`super::mime::write_qp`]: lines of at most 76 characters,
//! CRLF line ends only, a space or TAB before a line end encoded, and no line
//! starting with `.`.

use bytes::{BufMut, BytesMut};

use super::mime::{
    fits_7bit, html_escaped, is_qp_literal, lossy, write_qp_literal, write_qp_value, ValueFlags,
    HEX, QP_LINE,
};
use super::part::{Part, Piece};
use super::values::Values;

/// A body part compiled for quoted-printable: see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prequoted {
    items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// Literal text, encoded from column 0.
    Lit {
        encoded: Box<[u8]>,
        /// Characters of the first encoded line (without its `=` or line end);
        /// 0 when the text starts with a line end.
        first_row: usize,
        /// Characters of the last encoded line, if the text has more than one.
        last_row: Option<usize>,
    },
    /// A merge value.
    Field {
        name: usize,
        default: Option<Box<str>>,
    },
}

impl Prequoted {
    /// The part compiled for quoted-printable, or `None` when its literal text
    /// alone could go as 7bit (the general path decides per message then).
    pub(crate) fn build(part: &Part) -> Option<Prequoted> {
        let literals: Vec<u8> = part
            .pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Lit(text) => Some(text.as_bytes()),
                Piece::Field { .. } => None,
            })
            .flatten()
            .copied()
            .collect();
        // Values only add text: if the literals need quoted-printable, so does
        // every message.
        if fits_7bit(&literals) {
            return None;
        }
        let mut items = Vec::with_capacity(part.pieces.len());
        for piece in &part.pieces {
            match piece {
                Piece::Lit(text) if text.is_empty() => {}
                Piece::Lit(text) => {
                    let mut encoded = BytesMut::with_capacity(text.len() + text.len() / 8 + 8);
                    write_qp_literal(text.as_bytes(), &mut encoded);
                    let first = memchr::memmem::find(&encoded, b"\r\n");
                    let first_row = match first {
                        Some(at) if at > 0 && encoded[at - 1] == b'=' => at - 1,
                        Some(at) => at,
                        None => encoded.len(),
                    };
                    let last_row =
                        memchr::memmem::rfind(&encoded, b"\r\n").map(|at| encoded.len() - (at + 2));
                    items.push(Item::Lit {
                        encoded: encoded.to_vec().into_boxed_slice(),
                        first_row,
                        last_row,
                    });
                }
                Piece::Field { name, default } => items.push(Item::Field {
                    name: *name,
                    default: default.clone(),
                }),
            }
        }
        Some(Prequoted { items })
    }

    /// Appends the part's quoted-printable content for one recipient, ending with
    /// CRLF. `html`: values are HTML-escaped; otherwise made valid UTF-8.
    /// `scratch` holds one value at a time.
    pub(crate) fn write(
        &self,
        values: &Values<'_>,
        html: bool,
        scratch: &mut Vec<u8>,
        out: &mut BytesMut,
    ) {
        let start = out.len();
        let mut col = 0;
        // The last octet written is a space or TAB left literal: it must be
        // encoded if a line end comes next.
        let mut blank = false;
        for item in &self.items {
            match item {
                Item::Lit {
                    encoded,
                    first_row,
                    last_row,
                } => {
                    if blank && *first_row == 0 {
                        encode_last_blank(out, &mut col);
                    }
                    if col > 0 && col + first_row > QP_LINE {
                        out.put_slice(b"=\r\n");
                        col = 0;
                    }
                    out.put_slice(encoded);
                    col = last_row.unwrap_or(col + first_row);
                    // A final space or TAB of the text was left literal.
                    blank = matches!(encoded.last(), Some(b' ' | b'\t'));
                }
                Item::Field { name, default } => {
                    let (value, flags) = values.piece_flagged(*name, default.as_deref());
                    if value.is_empty() {
                        continue;
                    }
                    let (value, literal) = match (html, flags) {
                        (
                            true,
                            ValueFlags {
                                html_plain: true, ..
                            },
                        )
                        | (false, ValueFlags { utf8: true, .. }) => (value, flags.qp_literal),
                        (true, _) => {
                            let escaped = html_escaped(value, scratch);
                            (escaped, is_qp_literal(escaped))
                        }
                        (false, _) => {
                            let valid = lossy(value, scratch);
                            (valid, is_qp_literal(valid))
                        }
                    };
                    if blank && matches!(value.first(), Some(b'\r' | b'\n')) {
                        encode_last_blank(out, &mut col);
                    }
                    write_qp_value(value, literal, &mut col, false, out);
                    blank = col > 0 && matches!(out.last(), Some(b' ' | b'\t'));
                }
            }
        }
        if blank {
            encode_last_blank(out, &mut col);
        }
        // Like `write_qp`: the last line ends with CRLF, and empty content is one
        // empty line.
        if col > 0 || out.len() == start {
            out.put_slice(b"\r\n");
        }
    }
}

/// Replaces the space or TAB that `out` ends with by its `=XX` form, after a
/// soft line break if the line has no room for it.
fn encode_last_blank(out: &mut BytesMut, col: &mut usize) {
    let Some(&b) = out.last() else {
        return;
    };
    out.truncate(out.len() - 1);
    *col = col.saturating_sub(1);
    if *col + 3 > QP_LINE {
        out.put_slice(b"=\r\n");
        *col = 0;
    }
    out.put_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    *col += 3;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::{push_html_escaped, push_lossy, write_qp};
    use crate::part::{Part, Piece};
    use proptest::prelude::*;

    fn lit(text: &str) -> Piece {
        Piece::Lit(text.into())
    }

    fn field(name: usize) -> Piece {
        Piece::Field {
            name,
            default: None,
        }
    }

    /// Decodes quoted-printable (soft breaks removed, `=XX` decoded), checking
    /// the encoding rules on the way.
    fn decode_checked(encoded: &[u8]) -> Vec<u8> {
        assert!(
            encoded.ends_with(b"\r\n"),
            "{:?}",
            String::from_utf8_lossy(encoded)
        );
        let text = &encoded[..encoded.len() - 1];
        let mut out = Vec::new();
        for line in text.split(|&b| b == b'\n') {
            let line = line
                .strip_suffix(b"\r")
                .unwrap_or_else(|| panic!("bare LF in {encoded:?}"));
            assert!(!line.contains(&b'\r'), "bare CR");
            assert!(line.len() <= 76, "line of {} characters", line.len());
            assert!(!line.starts_with(b"."), "line starts with a dot");
            let (line, soft) = match line.strip_suffix(b"=") {
                Some(l) => (l, true),
                None => (line, false),
            };
            if !soft {
                assert!(
                    !line.ends_with(b" ") && !line.ends_with(b"\t"),
                    "trailing space"
                );
            }
            let mut i = 0;
            while i < line.len() {
                let b = line[i];
                assert!(
                    b == b' ' || b == b'\t' || (33..=126).contains(&b),
                    "raw byte {b}"
                );
                if b == b'=' {
                    let hex = std::str::from_utf8(&line[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(b);
                    i += 1;
                }
            }
            if !soft {
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    fn render(pieces: Vec<Piece>, values: &[&[u8]], html: bool) -> Option<Vec<u8>> {
        let part = Part { pieces };
        let pre = Prequoted::build(&part)?;
        let slots: Vec<_> = (0..values.len())
            .map(super::super::values::Slot::Value)
            .collect();
        let values = Values::for_tests(&slots, values, "r@example.test");
        let mut out = BytesMut::new();
        pre.write(&values, html, &mut Vec::new(), &mut out);
        Some(out.to_vec())
    }

    #[test]
    fn short_literals_take_the_general_path() {
        assert!(render(vec![lit("Hello "), field(0), lit("!\n")], &[b"x"], false).is_none());
    }

    #[test]
    fn long_text_reads_like_the_general_path_where_it_fits() {
        let long = "a".repeat(100);
        let out = render(
            vec![lit("Hi "), field(0), lit(&format!(",\n{long}\n"))],
            &[b"Zo\xc3\xab"],
            false,
        )
        .unwrap();
        let mut general = BytesMut::new();
        write_qp(format!("Hi Zo\u{eb},\n{long}\n").as_bytes(), &mut general);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(general.to_vec()).unwrap()
        );
    }

    #[test]
    fn soft_break_before_a_literal_that_does_not_fit() {
        let long = "b".repeat(80);
        let out = render(vec![lit(&long), field(0), lit(&long)], &[b"X"], false).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            decode_checked(&out),
            format!("{long}X{long}\r\n").into_bytes(),
            "{text}"
        );
    }

    #[test]
    fn html_values_are_escaped_and_whitespace_before_line_ends_encoded() {
        let long = "<p>".repeat(30);
        let out = render(
            vec![lit(&long), field(0), lit("\n"), field(1)],
            &[b"<b> ", b"end "],
            true,
        )
        .unwrap();
        assert_eq!(
            decode_checked(&out),
            format!("{long}&lt;b&gt; \r\nend \r\n").into_bytes()
        );
    }

    proptest! {
        #[test]
        fn decodes_to_the_merged_text(
            lits in proptest::collection::vec("[ a-z.=\\n\u{e9}\t]{0,120}", 1..5),
            vals in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..90), 4),
            html in any::<bool>(),
        ) {
            let mut pieces = Vec::new();
            let mut want = Vec::new();
            // A value ending in CR before a literal starting with LF is two line
            // ends here, one in the general path: not compared.
            let vals: Vec<Vec<u8>> = vals
                .into_iter()
                .map(|mut v| {
                    while v.last() == Some(&b'\r') {
                        v.pop();
                    }
                    v
                })
                .collect();
            let vals: Vec<&[u8]> = vals.iter().map(|v| v.as_slice()).collect();
            for (i, l) in lits.iter().enumerate() {
                pieces.push(lit(&format!("{l}{}", "\u{e9}".repeat(usize::from(i == 0)))));
                want.extend_from_slice(l.as_bytes());
                if i == 0 {
                    want.extend_from_slice("\u{e9}".as_bytes());
                }
                pieces.push(field(i));
                if html {
                    push_html_escaped(vals[i], &mut want);
                } else {
                    push_lossy(vals[i], &mut want);
                }
            }
            let out = render(pieces, &vals, html).unwrap();
            // The general path's reading: every line end CRLF, one after the end.
            let mut general = BytesMut::new();
            write_qp(&want, &mut general);
            prop_assert_eq!(decode_checked(&out), decode_checked(&general));
        }
    }
}
