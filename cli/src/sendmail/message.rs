//! The message a `sendmail` caller writes, made fit to queue: the input read up
//! to a lone `.` line (unless `-i`), every line end made CRLF, the header section
//! split into fields (to read To/Cc/Bcc, remove Bcc, add what is missing), lines
//! over 998 bytes broken. Bytes in, bytes out: no I/O here.

/// Longest line SMTP allows, CRLF excluded (RFC 5321 §4.5.3.1.6).
pub const MAX_LINE: usize = 998;

/// The input up to its end or (unless `ignore_dots`) to a line holding only
/// `.`; each line ended by CRLF, whether it ended in LF, CR LF, a lone CR or
/// nothing.
pub fn normalize_input(input: &[u8], ignore_dots: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32 + 2);
    let mut start = 0;
    let mut i = 0;
    while start < input.len() {
        let (line, next) = match memchr_line_end(&input[i..]) {
            Some(off) => {
                let end = i + off;
                let next = if input[end] == b'\r' && input.get(end + 1) == Some(&b'\n') {
                    end + 2
                } else {
                    end + 1
                };
                (&input[start..end], next)
            }
            None => (&input[start..], input.len()),
        };
        if !ignore_dots && line == b"." {
            break;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        start = next;
        i = next;
    }
    out
}

fn memchr_line_end(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\r' || b == b'\n')
}

/// One header field: its name and its bytes, continuation lines and final CRLF
/// included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name as written.
    pub name: String,
    /// `Name: value\r\n` (with any folded lines).
    pub raw: Vec<u8>,
}

impl Field {
    /// The value, unfolded (CRLF before white space removed), without the name.
    pub fn value(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        let after = text.split_once(':').map_or("", |(_, v)| v);
        after.replace("\r\n", "").trim().to_owned()
    }

    /// A field from its name and (unfolded) value.
    pub fn new(name: &str, value: &str) -> Field {
        Field {
            name: name.to_owned(),
            raw: format!("{name}: {value}\r\n").into_bytes(),
        }
    }
}

/// A message split into its header fields and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header fields, in order.
    pub fields: Vec<Field>,
    /// Everything after the empty line ending the header section (CRLF lines).
    pub body: Vec<u8>,
}

/// Whether `line` starts a header field: a name of printable ASCII but `:`
/// and space, then `:`.
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let ok = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':');
    ok.then(|| std::str::from_utf8(name).ok()).flatten()
}

impl Message {
    /// Splits CRLF text (from [`normalize_input`]). An mbox `From ` line at the
    /// top is dropped. The header section ends at the first empty line, or at
    /// the first line that is neither a field nor a continuation (which then
    /// starts the body, as for input with no header at all).
    pub fn parse(text: &[u8]) -> Message {
        let mut fields: Vec<Field> = Vec::new();
        let mut pos = 0;
        if text.starts_with(b"From ") {
            pos = line_end(text, 0);
        }
        while pos < text.len() {
            let end = line_end(text, pos);
            let line = text[pos..end]
                .strip_suffix(b"\r\n")
                .unwrap_or(&text[pos..end]);
            if line.is_empty() {
                pos = end;
                break;
            }
            if matches!(line[0], b' ' | b'\t') {
                if let Some(last) = fields.last_mut() {
                    last.raw.extend_from_slice(&text[pos..end]);
                    pos = end;
                    continue;
                }
            }
            match field_name(line) {
                Some(name) => fields.push(Field {
                    name: name.to_owned(),
                    raw: text[pos..end].to_vec(),
                }),
                None => break,
            }
            pos = end;
        }
        Message {
            fields,
            body: text[pos..].to_vec(),
        }
    }

    /// Whether a field named `name` (any case) is present.
    pub fn has(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The values of every field named `name` (any case), unfolded.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .map(Field::value)
            .collect()
    }

    /// Removes every field named like one of `names` (any case).
    pub fn remove(&mut self, names: &[&str]) {
        self.fields
            .retain(|f| !names.iter().any(|n| f.name.eq_ignore_ascii_case(n)));
    }

    /// The message: fields, empty line, body, lines over [`MAX_LINE`] bytes
    /// broken (a header line before a space, else with a space added; a body
    /// line before a space, else at a UTF-8 character boundary).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 80 * self.fields.len() + 2);
        for field in &self.fields {
            for line in lines(&field.raw) {
                put_line(line, true, &mut out);
            }
        }
        out.extend_from_slice(b"\r\n");
        for line in lines(&self.body) {
            put_line(line, false, &mut out);
        }
        out
    }
}

/// The index after the CRLF ending the line at `pos` (CRLF text).
fn line_end(text: &[u8], pos: usize) -> usize {
    let mut i = pos;
    while i + 1 < text.len() {
        if text[i] == b'\r' && text[i + 1] == b'\n' {
            return i + 2;
        }
        i += 1;
    }
    text.len().max(pos)
}

/// The lines of CRLF text, without their CRLF.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= text.len() {
            return None;
        }
        let end = line_end(text, pos);
        let line = text[pos..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&text[pos..end]);
        pos = end;
        Some(line)
    })
}

/// Writes one line and CRLF, broken into pieces of at most [`MAX_LINE`] bytes.
fn put_line(mut line: &[u8], header: bool, out: &mut Vec<u8>) {
    while line.len() > MAX_LINE {
        // Leave room for the space a header continuation may need.
        let limit = if header { MAX_LINE - 1 } else { MAX_LINE };
        let at_space = line[1..=limit]
            .iter()
            .rposition(|&b| b == b' ' || b == b'\t')
            .map(|i| i + 1)
            .filter(|&i| i > limit / 2);
        let cut = at_space.unwrap_or_else(|| {
            // Not inside a UTF-8 sequence.
            let mut cut = limit;
            while cut > limit / 2 && line[cut] & 0xc0 == 0x80 {
                cut -= 1;
            }
            cut
        });
        out.extend_from_slice(&line[..cut]);
        out.extend_from_slice(b"\r\n");
        line = &line[cut..];
        if header && at_space.is_none() {
            out.push(b' ');
        }
    }
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_input_gives_crlf_lines_of_at_most_998_bytes(
            input in proptest::collection::vec(
                proptest::sample::select(b"\r\n\r\n :.xF\t\xc3\xa9\x00".to_vec()),
                0..1500,
            ),
            ignore_dots: bool,
            long in 0usize..2500,
        ) {
            let mut input = input;
            input.extend(std::iter::repeat_n(b'x', long));
            let text = normalize_input(&input, ignore_dots);
            let mut message = Message::parse(&text);
            message.remove(&["bcc"]);
            let _ = message.values("to");
            let out = message.to_bytes();
            prop_assert!(out.ends_with(b"\r\n"));
            for line in out.split(|&b| b == b'\n') {
                prop_assert!(!line.contains(&b'\r') || line.ends_with(b"\r"));
                prop_assert!(line.len() <= MAX_LINE + 1);
            }
            for (i, &b) in out.iter().enumerate() {
                if b == b'\n' {
                    prop_assert!(i > 0 && out[i - 1] == b'\r');
                }
            }
            // Raw bytes straight to the parser never panic either.
            let _ = Message::parse(&input).to_bytes();
        }
    }

    #[test]
    fn input_lines_become_crlf_and_a_dot_ends_them() {
        let table: &[(&[u8], bool, &[u8])] = &[
            (b"a\nb\n", false, b"a\r\nb\r\n"),
            (b"a\r\nb", false, b"a\r\nb\r\n"),
            (b"a\rb\r\n\n", false, b"a\r\nb\r\n\r\n"),
            (b"a\n.\nafter\n", false, b"a\r\n"),
            (b"a\r\n.\r\n", false, b"a\r\n"),
            (b"a\n.", false, b"a\r\n"),
            (b"a\n.\nafter\n", true, b"a\r\n.\r\nafter\r\n"),
            (b"a\n..\n", false, b"a\r\n..\r\n"),
            (b"", false, b""),
            (b"\n", false, b"\r\n"),
        ];
        for (input, ignore, want) in table {
            assert_eq!(
                normalize_input(input, *ignore),
                want.to_vec(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn fields_and_body() {
        let text = normalize_input(
            b"From sender Mon Nov 23 2026\nTo: a@x.test,\n\tb@y.test\nBcc: c@z.test\nSubject: hi\n\nbody\nTo: not a field\n",
            true,
        );
        let mut m = Message::parse(&text);
        assert_eq!(
            m.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["To", "Bcc", "Subject"]
        );
        assert_eq!(m.values("to"), ["a@x.test,\tb@y.test"]);
        assert!(m.has("BCC"));
        m.remove(&["bcc"]);
        m.fields
            .push(Field::new("Date", "Mon, 23 Nov 2026 10:00:00 +0000"));
        assert_eq!(
            m.to_bytes(),
            b"To: a@x.test,\r\n\tb@y.test\r\nSubject: hi\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\nTo: not a field\r\n"
        );
        // No header at all: everything is body.
        let m = Message::parse(b"hello there\r\nsecond: line\r\n");
        assert!(m.fields.is_empty());
        assert_eq!(m.to_bytes(), b"\r\nhello there\r\nsecond: line\r\n");
        // Header only.
        let m = Message::parse(b"Subject: x\r\n");
        assert_eq!(m.to_bytes(), b"Subject: x\r\n\r\n");
    }

    #[test]
    fn long_lines_are_broken() {
        let word = "w".repeat(600);
        let body = format!(
            "Subject: {word} {word}\r\n\r\n{word} {word}\r\n{}\r\n",
            "é".repeat(700)
        );
        let out = Message::parse(body.as_bytes()).to_bytes();
        let text = String::from_utf8(out.clone()).expect("still UTF-8");
        for line in text.split("\r\n") {
            assert!(line.len() <= MAX_LINE, "{} bytes", line.len());
        }
        assert!(text.starts_with(&format!(
            "Subject: {word}\r\n {word}\r\n\r\n{word}\r\n {word}\r\n"
        )));
        assert_eq!(text.matches('é').count(), 700);
        // No space to break at in a header: a continuation space is added.
        let long = format!("X-Long: {}\r\n\r\n", "x".repeat(2100));
        let out = Message::parse(long.as_bytes()).to_bytes();
        let text = String::from_utf8(out).unwrap();
        let header: Vec<&str> = text.split("\r\n").take_while(|l| !l.is_empty()).collect();
        assert_eq!(header.len(), 3);
        assert!(header[1..].iter().all(|l| l.starts_with(' ')));
        assert_eq!(text.matches('x').count(), 2100);
    }
}
