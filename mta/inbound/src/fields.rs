//! Blocks of header-style fields, as in the body of a `message/delivery-status`
//! (RFC 3464 §2.1) or `message/feedback-report` (RFC 5965 §3) part, and in the
//! header of a returned message: `Name: value` lines, folded values continued on
//! lines that start with a space or tab, blocks separated by blank lines.
//!
//! Liberal in what it takes: LF or CRLF line ends, lines of only white space as
//! separators, lines without a colon skipped. Bounded: at most [`MAX_BLOCKS`]
//! blocks and [`MAX_FIELDS`] fields a block; values are cut at [`MAX_VALUE`] bytes.

/// Most blocks read from one part; the rest is ignored.
pub(crate) const MAX_BLOCKS: usize = 1000;
/// Most fields read from one block; the rest are ignored.
pub(crate) const MAX_FIELDS: usize = 100;
/// Longest value kept, in bytes (cut at a character boundary).
pub(crate) const MAX_VALUE: usize = 2000;

/// One field: its name as written and its unfolded value, trimmed, with each
/// line break and the white space around it turned into one space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: String,
}

/// The fields of one block, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Block<'a> {
    pub(crate) fields: Vec<Field<'a>>,
}

impl<'a> Block<'a> {
    /// The value of the first field named `name` (any case), if not empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name) && !f.value.is_empty())
            .map(|f| f.value.as_str())
    }

    /// The non-empty values of every field named `name` (any case).
    pub(crate) fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.fields
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Whether the block has a field named `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name))
    }
}

/// Splits `text` into blocks of fields; empty blocks are dropped.
pub(crate) fn blocks(text: &str) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    let mut block = Block::default();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if !block.fields.is_empty() {
                out.push(std::mem::take(&mut block));
                if out.len() == MAX_BLOCKS {
                    return out;
                }
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(field) = block.fields.last_mut() {
                append(&mut field.value, line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim_end();
        if name.is_empty() || name.contains(' ') || block.fields.len() == MAX_FIELDS {
            continue;
        }
        let mut field = Field {
            name,
            value: String::new(),
        };
        append(&mut field.value, value.trim());
        block.fields.push(field);
    }
    if !block.fields.is_empty() {
        out.push(block);
    }
    out
}

/// The fields of the first block of `text` (a message header, say).
pub(crate) fn first_block(text: &str) -> Block<'_> {
    // A header ends at the first blank line: cut there so the body is not read.
    let end = text
        .find("\n\n")
        .into_iter()
        .chain(text.find("\n\r\n"))
        .min()
        .unwrap_or(text.len());
    blocks(&text[..end]).into_iter().next().unwrap_or_default()
}

/// Appends `piece` to `value` with one space between, up to [`MAX_VALUE`] bytes.
fn append(value: &mut String, piece: &str) {
    if piece.is_empty() || value.len() >= MAX_VALUE {
        return;
    }
    if !value.is_empty() {
        value.push(' ');
    }
    let room = MAX_VALUE.saturating_sub(value.len());
    let mut cut = piece.len().min(room);
    while !piece.is_char_boundary(cut) {
        cut -= 1;
    }
    value.push_str(&piece[..cut]);
}

/// The address in a field value: the text inside the first `<...>`, else the
/// first comma-separated item; `None` when that holds no `@`.
pub(crate) fn address_in(value: &str) -> Option<&str> {
    let inner = match value.find('<') {
        Some(open) => {
            let rest = &value[open + 1..];
            &rest[..rest.find('>').unwrap_or(rest.len())]
        }
        None => value.split(',').next().unwrap_or_default(),
    };
    let inner = inner.trim();
    inner.contains('@').then_some(inner)
}

/// A typed address field value (`rfc822; user@example.com`): the address, with
/// the type, any `<>` and white space removed; `None` when no address remains.
pub(crate) fn typed_address(value: &str) -> Option<&str> {
    let address = match value.split_once(';') {
        Some((_, address)) => address,
        None => value,
    };
    let address = address.trim();
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address)
        .trim();
    (!address.is_empty()).then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_folding_and_line_ends() {
        let text = "Reporting-MTA: dns; mx.test\r\n\r\n\r\nFinal-Recipient: rfc822; a@b.test\r\n\
                    Diagnostic-Code: smtp; 550 5.1.1 <a@b.test>:\r\n    Recipient address\r\n\
                    \trejected\r\nno colon here\r\nStatus:5.1.1\n \n: nameless\nX-Y Z: bad name\n\
                    Action: failed";
        let blocks = blocks(text);
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].get("reporting-mta"), Some("dns; mx.test"));
        assert_eq!(
            blocks[1].get("Diagnostic-Code"),
            Some("smtp; 550 5.1.1 <a@b.test>: Recipient address rejected")
        );
        assert_eq!(blocks[1].get("STATUS"), Some("5.1.1"));
        assert_eq!(blocks[1].fields.len(), 3);
        assert_eq!(blocks[2].get("Action"), Some("failed"));
        assert!(!blocks[2].has("X-Y Z"));
    }

    #[test]
    fn values_are_bounded() {
        let long = format!("X: {}\n", "é".repeat(MAX_VALUE));
        let blocks = blocks(&long);
        let value = blocks[0].get("x").unwrap_or_default();
        assert_eq!(value.len(), MAX_VALUE);
        let many = "A: 1\n\n".repeat(MAX_BLOCKS + 5);
        assert_eq!(super::blocks(&many).len(), MAX_BLOCKS);
        let wide = "A: 1\n".repeat(MAX_FIELDS + 5);
        assert_eq!(super::blocks(&wide)[0].fields.len(), MAX_FIELDS);
    }

    #[test]
    fn first_block_stops_at_the_body() {
        let block = first_block("To: a@b.test\r\nSubject: x\r\n\r\nBody: not a field\r\n");
        assert_eq!(block.fields.len(), 2);
        assert!(!block.has("body"));
    }

    #[test]
    fn addresses() {
        let cases = [
            ("rfc822; a@b.test", Some("a@b.test")),
            ("RFC822;<a@b.test>", Some("a@b.test")),
            ("a@b.test", Some("a@b.test")),
            ("rfc822;", None),
            ("x400; /c=us/", Some("/c=us/")),
        ];
        for (value, expected) in cases {
            assert_eq!(typed_address(value), expected, "{value}");
        }
        let cases = [
            ("\"A, B\" <a@b.test>, c@d.test", Some("a@b.test")),
            ("a@b.test, c@d.test", Some("a@b.test")),
            ("<a@b.test", Some("a@b.test")),
            ("undisclosed-recipients:;", None),
        ];
        for (value, expected) in cases {
            assert_eq!(address_in(value), expected, "{value}");
        }
    }
}
