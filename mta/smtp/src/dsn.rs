//! The DSN extension's parameters (RFC 3461) as a client gives them: `RET` and
//! `ENVID` on MAIL, `NOTIFY` and `ORCPT` on RCPT. The server session parses
//! them; whoever later reports on the message (a delivery status notification)
//! honours them.

/// `RET=`: what of the message a failure report returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: its header only.
    Hdrs,
}

impl Ret {
    /// Parses a `RET=` value (any case).
    pub fn parse(value: &str) -> Option<Ret> {
        if value.eq_ignore_ascii_case("FULL") {
            Some(Ret::Full)
        } else if value.eq_ignore_ascii_case("HDRS") {
            Some(Ret::Hdrs)
        } else {
            None
        }
    }

    /// The keyword, as stored and sent.
    pub fn name(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// `NOTIFY=`: which outcomes of a recipient its sender wants reported. Absent,
/// failures (and, at the MTA's choice, delays) are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

impl Notify {
    /// Parses a `NOTIFY=` value: `NEVER` alone, or a comma-separated list of
    /// `SUCCESS`, `FAILURE` and `DELAY` (any case, none twice).
    pub fn parse(value: &str) -> Option<Notify> {
        if value.eq_ignore_ascii_case("NEVER") {
            return Some(Notify::default());
        }
        let mut notify = Notify::default();
        for word in value.split(',') {
            let flag = if word.eq_ignore_ascii_case("SUCCESS") {
                &mut notify.success
            } else if word.eq_ignore_ascii_case("FAILURE") {
                &mut notify.failure
            } else if word.eq_ignore_ascii_case("DELAY") {
                &mut notify.delay
            } else {
                return None;
            };
            if std::mem::replace(flag, true) {
                return None;
            }
        }
        Some(notify)
    }

    /// The value as given (`NEVER` when no flag is set), as stored.
    pub fn text(self) -> String {
        let words: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, word)| *word)
        .collect();
        if words.is_empty() {
            "NEVER".to_owned()
        } else {
            words.join(",")
        }
    }
}

/// The DSN parameters of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptDsn {
    /// `NOTIFY=`, `None` when not given.
    pub notify: Option<Notify>,
    /// `ORCPT=`: the address type and the original recipient, xtext decoded
    /// (`rfc822;user@example.test`).
    pub orcpt: Option<String>,
}

impl RcptDsn {
    /// Whether a failure of this recipient is to be reported (the default
    /// when `NOTIFY` was not given).
    pub fn wants_failure(&self) -> bool {
        self.notify.is_none_or(|n| n.failure)
    }
}

/// Encodes `text` as RFC 3461 xtext: `+`, `=` and bytes outside `!`..`~` as
/// `+XX`.
pub fn xtext_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Decodes RFC 3461 xtext (`+XX` hex escapes); `None` when malformed or not
/// printable ASCII.
pub fn xtext_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = text.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'!'..=b'~' if bytes[i] != b'=' => {
                out.push(bytes[i]);
                i += 1;
            }
            _ => return None,
        }
    }
    let text = String::from_utf8(out).ok()?;
    text.bytes()
        .all(|b| (b' '..=b'~').contains(&b))
        .then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_values() {
        let n = |s, f, d| {
            Some(Notify {
                success: s,
                failure: f,
                delay: d,
            })
        };
        let table = [
            ("NEVER", n(false, false, false)),
            ("never", n(false, false, false)),
            ("FAILURE", n(false, true, false)),
            ("success,Delay", n(true, false, true)),
            ("SUCCESS,FAILURE,DELAY", n(true, true, true)),
            ("NEVER,FAILURE", None),
            ("FAILURE,FAILURE", None),
            ("", None),
            ("SOMETIMES", None),
        ];
        for (text, expected) in table {
            assert_eq!(Notify::parse(text), expected, "{text}");
        }
        assert_eq!(Notify::default().text(), "NEVER");
        assert_eq!(n(true, false, true).unwrap().text(), "SUCCESS,DELAY");
        assert!(
            RcptDsn::default().wants_failure(),
            "the default reports failures"
        );
        let never = RcptDsn {
            notify: Notify::parse("NEVER"),
            orcpt: None,
        };
        assert!(!never.wants_failure());
    }

    #[test]
    fn xtext() {
        let table = [
            ("rfc822;a@b.test", Some("rfc822;a@b.test")),
            ("rfc822;a+2Bb@c.test", Some("rfc822;a+b@c.test")),
            ("QQ+3D", Some("QQ=")),
            ("a+2b", None),
            ("a+2", None),
            ("a=b", None),
            ("a b", None),
            ("+0D+0A", None),
            ("", Some("")),
        ];
        for (text, expected) in table {
            assert_eq!(xtext_decode(text).as_deref(), expected, "{text}");
        }
        for text in ["QQ314159", "a+b=c", "x y"] {
            assert_eq!(xtext_decode(&xtext_encode(text)).as_deref(), Some(text));
        }
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(Ret::parse("hdrs"), Some(Ret::Hdrs));
        assert_eq!(Ret::parse("FULL").map(Ret::name), Some("FULL"));
        assert_eq!(Ret::parse("ALL"), None);
    }
}
