//! Receiving message content: DATA (dot-stuffed, ended by `CRLF . CRLF`) and BDAT
//! chunks (exact lengths, RFC 3030), checked as they stream in.
//!
//! Only CRLF ends a line. A bare CR or bare LF anywhere, a NUL byte, a line
//! longer than 998 characters (RFC 5322 §2.1.1) or more bytes than the size
//! limit is a [`Flaw`]:
//! the reader stops storing, keeps reading to the end of the data, and the session
//! refuses the whole message. In particular `\n.\n`, `\r.\n`, `\n.\r\n` and
//! `\r.\r` never end DATA: after a bare line end the reader is not at a line start,
//! so what looks like a terminator is content of a refused message, and a second
//! transaction smuggled behind it is never read as commands ("SMTP smuggling").
//!
//! Why hand-written: the content of every message passes through here. `memchr2`
//! jumps to the next CR or LF and the bytes before it are copied in one run; the
//! per-byte state machine only runs at line ends.

use memchr::memchr2;

/// Longest line of message content, line end excluded (RFC 5322 §2.1.1, RFC 5321
/// §4.5.3.1.6).
pub(crate) const MAX_CONTENT_LINE: usize = 998;

/// Room left in a message's buffer for the `Received:` header the listener
/// puts in front of it, so adding it moves the bytes rather than copying them.
pub const HEADER_ROOM: usize = 2048;

/// Why a message's content is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// More bytes than the size limit.
    TooBig,
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnd,
    /// A line longer than 998 characters.
    LineTooLong,
    /// A NUL byte: a next hop that drops NULs before looking for the end of
    /// the data could see a second message behind `\0.`.
    Nul,
}

/// Where the reader is within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// After CRLF (or at the start of the content).
    LineStart,
    /// DATA only: a `.` at a line start, not stored yet.
    Dot,
    /// DATA only: `.` CR at a line start: LF now ends the data.
    DotCr,
    /// Inside a line.
    Middle,
    /// After a CR inside a line: LF now ends the line.
    Cr,
}

/// Streams message content into a buffer, undoing dot-stuffing for DATA.
#[derive(Debug)]
pub(crate) struct BodyReader {
    at: At,
    /// DATA (dot-stuffed, ends at `CRLF . CRLF`) rather than BDAT chunks.
    dots: bool,
    line_len: usize,
    size: u64,
    max_size: u64,
    flaw: Option<Flaw>,
    body: Vec<u8>,
}

impl BodyReader {
    /// A reader for DATA content (`dots`) or BDAT chunks, refusing more than
    /// `max_size` bytes.
    pub(crate) fn new(dots: bool, max_size: u64) -> BodyReader {
        BodyReader {
            at: At::LineStart,
            dots,
            line_len: 0,
            size: 0,
            max_size,
            flaw: None,
            body: Vec::new(),
        }
    }

    /// The first flaw found so far.
    pub(crate) fn flaw(&self) -> Option<Flaw> {
        self.flaw
    }

    /// Bytes of content so far (counted even after a flaw).
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Reads DATA content from `input`: returns how many bytes belong to the
    /// content (terminator included) and whether the terminator was reached.
    pub(crate) fn feed_data(&mut self, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            match self.at {
                At::Middle => match memchr2(b'\r', b'\n', &input[i..]) {
                    None => {
                        self.content(&input[i..]);
                        i = input.len();
                    }
                    Some(off) => {
                        self.content(&input[i..i + off]);
                        i += off + 1;
                        if input[i - 1] == b'\r' {
                            self.at = At::Cr;
                        } else {
                            self.bare();
                            self.content(b"\n");
                        }
                    }
                },
                At::LineStart => {
                    if self.dots && input[i] == b'.' {
                        self.at = At::Dot;
                        i += 1;
                    } else {
                        self.at = At::Middle;
                    }
                }
                At::Dot => {
                    if input[i] == b'\r' {
                        self.at = At::DotCr;
                        i += 1;
                    } else {
                        // A stuffed dot: dropped; the line goes on.
                        self.at = At::Middle;
                    }
                }
                At::DotCr => {
                    if input[i] == b'\n' {
                        self.at = At::LineStart;
                        return (i + 1, true);
                    }
                    self.bare();
                    self.content(b"\r");
                    self.at = At::Middle;
                }
                At::Cr => {
                    if input[i] == b'\n' {
                        self.newline();
                        i += 1;
                    } else {
                        self.bare();
                        self.content(b"\r");
                        self.at = At::Middle;
                    }
                }
            }
        }
        (input.len(), false)
    }

    /// Reads all of `input` as part of a BDAT chunk.
    pub(crate) fn feed_chunk(&mut self, input: &[u8]) {
        debug_assert!(!self.dots);
        self.feed_data(input);
    }

    /// Ends BDAT content (after `BDAT n LAST`): a CR left at the end is bare.
    pub(crate) fn finish_chunks(&mut self) {
        if self.at == At::Cr {
            self.bare();
        }
    }

    /// The content, if it has no flaw.
    pub(crate) fn into_body(self) -> Result<Vec<u8>, Flaw> {
        match self.flaw {
            Some(flaw) => Err(flaw),
            None => Ok(self.body),
        }
    }

    fn content(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if memchr::memchr(0, bytes).is_some() {
            self.set_flaw(Flaw::Nul);
        }
        self.line_len += bytes.len();
        self.size += bytes.len() as u64;
        if self.line_len > MAX_CONTENT_LINE {
            self.set_flaw(Flaw::LineTooLong);
        }
        if self.size > self.max_size {
            self.set_flaw(Flaw::TooBig);
        }
        if self.flaw.is_none() {
            self.push(bytes);
        }
    }

    /// Appends content, growing the buffer by doubling but never past the
    /// message's size limit plus [`HEADER_ROOM`]: the content budget reserves
    /// that limit, so the buffer's capacity (what the memory holds) stays
    /// within the reservation, with room for the trace header added in place.
    fn push(&mut self, bytes: &[u8]) {
        let need = self.body.len() + bytes.len();
        if need > self.body.capacity() {
            let cap = usize::try_from(self.max_size)
                .unwrap_or(usize::MAX)
                .saturating_add(HEADER_ROOM);
            let target = (self.body.capacity() * 2).max(4096).min(cap).max(need);
            self.body.reserve_exact(target - self.body.len());
        }
        self.body.extend_from_slice(bytes);
    }

    fn newline(&mut self) {
        self.size += 2;
        if self.size > self.max_size {
            self.set_flaw(Flaw::TooBig);
        }
        if self.flaw.is_none() {
            self.push(b"\r\n");
        }
        self.line_len = 0;
        self.at = At::LineStart;
    }

    fn bare(&mut self) {
        self.set_flaw(Flaw::BareLineEnd);
    }

    fn set_flaw(&mut self, flaw: Flaw) {
        if self.flaw.is_none() {
            self.flaw = Some(flaw);
            // Nothing of a refused message is kept.
            self.body = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` to a DATA reader in pieces of `step` bytes.
    fn data(input: &[u8], step: usize) -> (Result<Vec<u8>, Flaw>, Option<usize>) {
        let mut reader = BodyReader::new(true, 10_000);
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            let (n, done) = reader.feed_data(piece);
            used += n;
            if done {
                return (reader.into_body(), Some(used));
            }
        }
        (reader.into_body(), None)
    }

    #[test]
    fn terminator_and_unstuffing() {
        for step in [1, 2, 3, 1000] {
            assert_eq!(data(b".\r\n", step), (Ok(vec![]), Some(3)));
            assert_eq!(
                data(b"a\r\n..b\r\n.\r\nMAIL", step),
                (Ok(b"a\r\n.b\r\n".to_vec()), Some(11))
            );
            assert_eq!(
                data(b"..\r\n.x\r\n.\r\n", step),
                (Ok(b".\r\nx\r\n".to_vec()), Some(11))
            );
            // Not the end yet.
            assert_eq!(data(b"a\r\n.", step).1, None);
            assert_eq!(data(b"a\r\n.\r", step).1, None);
        }
    }

    #[test]
    fn only_crlf_dot_crlf_ends_data() {
        let smuggled: [&[u8]; 8] = [
            b"a\n.\nMAIL FROM:<x@y.test>\r\n",
            b"a\r.\rMAIL FROM:<x@y.test>\r\n",
            b"a\r.\nMAIL FROM:<x@y.test>\r\n",
            b"a\n.\r\nMAIL FROM:<x@y.test>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y.test>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y.test>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y.test>\r\n",
            b"\n.\r\n",
        ];
        for input in smuggled {
            for step in [1, 4, 1000] {
                let (body, end) = data(input, step);
                assert_eq!(end, None, "{input:?} ended DATA");
                assert_eq!(body, Err(Flaw::BareLineEnd), "{input:?}");
            }
            // Only the real terminator after it ends the (refused) message.
            let mut full = input.to_vec();
            full.extend_from_slice(b"\r\n.\r\n");
            assert_eq!(
                data(&full, 3),
                (Err(Flaw::BareLineEnd), Some(full.len())),
                "{input:?}"
            );
        }
    }

    #[test]
    fn limits() {
        let mut line = vec![b'x'; MAX_CONTENT_LINE];
        line.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(data(&line, 7).0.map(|b| b.len()), Ok(1000));
        let mut line = vec![b'x'; MAX_CONTENT_LINE + 1];
        line.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(data(&line, 7).0, Err(Flaw::LineTooLong));
        // A stuffed dot does not count.
        let mut line = vec![b'.'; MAX_CONTENT_LINE + 1];
        line.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(data(&line, 7).0.map(|b| b.len()), Ok(1000));

        let mut reader = BodyReader::new(true, 10);
        assert_eq!(reader.feed_data(b"0123456\r\n"), (9, false));
        assert_eq!(reader.feed_data(b"9\r\n.\r\n"), (6, true));
        assert_eq!(reader.size(), 12);
        assert_eq!(reader.into_body(), Err(Flaw::TooBig));
    }

    #[test]
    fn chunks() {
        let mut reader = BodyReader::new(false, 100);
        reader.feed_chunk(b"a\r");
        reader.feed_chunk(b"\n.\r\n");
        reader.finish_chunks();
        assert_eq!(reader.into_body(), Ok(b"a\r\n.\r\n".to_vec()));
        let mut reader = BodyReader::new(false, 100);
        reader.feed_chunk(b"a\r");
        reader.finish_chunks();
        assert_eq!(reader.into_body(), Err(Flaw::BareLineEnd));
        let mut reader = BodyReader::new(false, 100);
        reader.feed_chunk(b"a\nb\r\n");
        reader.finish_chunks();
        assert_eq!(reader.into_body(), Err(Flaw::BareLineEnd));
    }

    proptest! {
        /// Splitting the input anywhere never changes the outcome.
        #[test]
        fn chunking_does_not_matter(input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..60), step in 1usize..8) {
            prop_assert_eq!(data(&input, step), data(&input, input.len().max(1)));
        }

        /// Clean CRLF content, dot-stuffed the way our client does, comes back intact.
        #[test]
        fn stuffed_content_round_trips(lines in proptest::collection::vec("[.a-z ]{0,20}", 0..10)) {
            let body: Vec<u8> = lines.iter().flat_map(|l| [l.as_bytes(), b"\r\n"].concat()).collect();
            let mut wire = bytes::BytesMut::new();
            crate::data::dot_stuff_into(&body, &mut wire);
            prop_assert_eq!(data(&wire, 5), (Ok(body), Some(wire.len())));
        }
    }
}
