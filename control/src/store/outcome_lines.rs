//! The stored form of delivery outcome events: one outbox row holds events
//! of one type of one campaign, as tab-separated lines under a header line
//! that says what they share, and each event's JSON (the webhook body's
//! `data`) is written only when it is read ([`Outcome::write_json`]).
//!
//! ```text
//! payload = "v2" TAB campaign TAB gateway LF
//!           *( at TAB batch TAB index TAB attempt TAB code TAB next_attempt TAB
//!              enhanced TAB recipient TAB reply LF )
//! ```
//!
//! Numbers are decimal; `next_attempt` is a deferral's unix second (0:
//! none). In the text fields (`gateway`, `enhanced`, `recipient`, `reply`) a
//! backslash, TAB, LF or CR is written `\\`, `\t`, `\n` or `\r`.
//!
//! At campaign speed every delivery is an event: this form takes 84 bytes
//! for a benchmark's event where its JSON line took 191 (no keys, the shared
//! fields once a row), which is what the store writes, syncs and reads back per event; the
//! JSON is made once, as the request body is written.

use std::fmt::Write as _;

/// The first field of a payload in this form.
pub const MARK: &str = "v2";

/// Appends `text` to `out` with backslash, TAB, LF and CR escaped.
pub fn push_field(out: &mut String, text: &str) {
    if !text
        .bytes()
        .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// A field as it was before [`push_field`]: borrowed unless it had escapes.
fn unescape(field: &str) -> std::borrow::Cow<'_, str> {
    if !field.contains('\\') {
        return field.into();
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out.into()
}

/// The fields of one event, for [`event_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    /// The recipient's index in its batch.
    pub index: u32,
    /// The attempt's number (1: the first).
    pub attempt: u32,
    /// SMTP reply code (0: none).
    pub code: u16,
    /// A deferral's next attempt, unix second (0: none).
    pub next_attempt: u64,
    /// Enhanced status code, or "".
    pub enhanced: &'a str,
    /// The address.
    pub recipient: &'a str,
    /// Reply text or local reason.
    pub reply: &'a str,
}

/// An event's line without its time and line end (`index TAB … reply`).
pub fn event_line(f: &Fields<'_>) -> String {
    let mut out = String::with_capacity(24 + f.enhanced.len() + f.recipient.len() + f.reply.len());
    let _ = write!(
        out,
        "{}\t{}\t{}\t{}\t",
        f.index, f.attempt, f.code, f.next_attempt
    );
    push_field(&mut out, f.enhanced);
    out.push('\t');
    push_field(&mut out, f.recipient);
    out.push('\t');
    push_field(&mut out, f.reply);
    out
}

/// Appends a payload's header line.
pub fn push_header(out: &mut String, campaign: i64, gateway: &str) {
    let _ = write!(out, "{MARK}\t{campaign}\t");
    push_field(out, gateway);
    out.push('\n');
}

/// What a payload's events share (its header line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shared<'a> {
    campaign: i64,
    gateway: &'a str,
}

/// One event of a payload in this form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'a> {
    shared: Shared<'a>,
    /// The line's fields after its time and batch.
    line: &'a str,
    /// Its batch's digits.
    batch: &'a str,
}

/// The header of `payload` and the lines after it, if it has this form.
pub fn parse(payload: &str) -> Option<(Shared<'_>, &str)> {
    let (head, rest) = payload.split_once('\n')?;
    let mut f = head.split('\t');
    if f.next() != Some(MARK) {
        return None;
    }
    let campaign = f.next()?.parse().ok()?;
    let gateway = f.next()?;
    Some((Shared { campaign, gateway }, rest))
}

/// The events of the lines after a header: (time, event); a malformed line
/// is skipped.
pub fn events<'a>(
    shared: Shared<'a>,
    lines: &'a str,
) -> impl Iterator<Item = (i64, Outcome<'a>)> + 'a {
    lines.lines().filter_map(move |line| {
        let (at, line) = line.split_once('\t')?;
        let (batch, line) = line.split_once('\t')?;
        // Seven fields, the last (the reply) may be empty.
        (line.split('\t').count() == 7).then_some(())?;
        Some((
            at.parse().ok()?,
            Outcome {
                shared,
                line,
                batch,
            },
        ))
    })
}

/// Appends `text` as a JSON string.
fn push_json_string(out: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
    {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        // Serializing a string cannot fail.
        out.push_str(&serde_json::to_string(text).unwrap_or_default());
    }
}

/// Appends a number field's text, `0` when it is not a number (an edited
/// row), so that the JSON stays valid.
fn push_number(out: &mut String, text: &str) {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        out.push_str(text);
    } else {
        out.push('0');
    }
}

impl Outcome<'_> {
    /// Appends the event's JSON object (the webhook body's `data`):
    /// `campaign, batch, index, recipient, code, enhanced, reply, attempt,
    /// gateway`, and a deferral's `next_attempt` (RFC 3339).
    pub fn write_json(&self, out: &mut String) {
        let mut f = self.line.split('\t');
        let mut next = || f.next().unwrap_or("");
        let (index, attempt, code, next_attempt) = (next(), next(), next(), next());
        let (enhanced, recipient, reply) = (next(), next(), next());
        let _ = write!(out, "{{\"campaign\":{},\"batch\":", self.shared.campaign);
        push_number(out, self.batch);
        out.push_str(",\"index\":");
        push_number(out, index);
        out.push_str(",\"recipient\":");
        push_json_string(out, &unescape(recipient));
        out.push_str(",\"code\":");
        push_number(out, code);
        out.push_str(",\"enhanced\":");
        push_json_string(out, &unescape(enhanced));
        out.push_str(",\"reply\":");
        push_json_string(out, &unescape(reply));
        out.push_str(",\"attempt\":");
        push_number(out, attempt);
        out.push_str(",\"gateway\":");
        push_json_string(out, &unescape(self.shared.gateway));
        let next_attempt: i64 = next_attempt.parse().unwrap_or(0);
        if next_attempt > 0 {
            out.push_str(",\"next_attempt\":\"");
            out.push_str(&super::rfc3339(next_attempt));
            out.push('"');
        }
        out.push('}');
    }

    /// About how long its JSON is: the fields and the keys.
    pub fn json_len_hint(&self) -> usize {
        self.line.len() + self.shared.gateway.len() + 150
    }

    /// The event's JSON object as a string.
    pub fn json(&self) -> String {
        let mut out = String::with_capacity(self.json_len_hint());
        self.write_json(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_back_as_the_json_of_each_event() {
        let mut payload = String::new();
        push_header(&mut payload, 3, "gw\t1");
        let fields = Fields {
            index: 2,
            attempt: 1,
            code: 250,
            next_attempt: 0,
            enhanced: "2.0.0",
            recipient: "a\"b\\c@x.test",
            reply: "Ok:\tqueued\r\nas ABC \u{e9}",
        };
        payload.push_str("1796615000\t7\t");
        payload.push_str(&event_line(&fields));
        payload.push('\n');
        let deferred = Fields {
            index: 9,
            attempt: 2,
            code: 451,
            next_attempt: 1_796_616_000,
            enhanced: "4.7.1",
            recipient: "z@x.test",
            reply: "",
        };
        payload.push_str("1796615001\t8\t");
        payload.push_str(&event_line(&deferred));
        payload.push('\n');
        // A malformed line is skipped.
        payload.push_str("junk\n");

        let (shared, lines) = parse(&payload).unwrap();
        let got: Vec<(i64, serde_json::Value)> = events(shared, lines)
            .map(|(at, e)| (at, serde_json::from_str(&e.json()).unwrap()))
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 1_796_615_000);
        assert_eq!(
            got[0].1,
            serde_json::json!({
                "campaign": 3, "batch": 7, "index": 2, "recipient": "a\"b\\c@x.test",
                "code": 250, "enhanced": "2.0.0", "reply": "Ok:\tqueued\r\nas ABC \u{e9}",
                "attempt": 1, "gateway": "gw\t1",
            })
        );
        assert_eq!(got[1].1["next_attempt"], "2026-12-07T04:00:00Z");
        assert_eq!(got[1].1["batch"], 8);
        assert_eq!(got[1].1["reply"], "");
        // The key order is the one webhooks have always sent.
        assert!(events(shared, lines)
            .next()
            .unwrap()
            .1
            .json()
            .starts_with("{\"campaign\":3,\"batch\":7,\"index\":2,\"recipient\":"));
        // Not this form: JSON, or the older lines.
        assert!(parse("{\"a\":1}").is_none());
        assert!(parse("5\t{\"i\":0}\n").is_none());
    }

    #[test]
    fn fields_round_trip_through_escapes() {
        for text in [
            "",
            "plain",
            "a\\b",
            "\\t",
            "tab\there",
            "\r\n",
            "\\\\n",
            "é\t",
        ] {
            let mut out = String::new();
            push_field(&mut out, text);
            assert!(!out.contains(['\t', '\n', '\r']), "{out:?}");
            assert_eq!(unescape(&out), text);
        }
    }
}
