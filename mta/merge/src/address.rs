//! The sender addresses a template names (`from`, `reply_to`, `return_path`): parsed
//! once at compile time and written as header fields.

use bytes::BytesMut;

use super::mime::{Encode, Folder};

/// A mailbox: an optional display name and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mailbox {
    /// Display name, unquoted; empty when there is none.
    pub(crate) display: String,
    /// `local@domain`.
    pub(crate) address: String,
}

impl Mailbox {
    /// The part of the address after the last `@`.
    pub(crate) fn domain(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map_or("", |(_, domain)| domain)
    }
}

/// Parses `Name <local@domain>`, `"Quoted, Name" <local@domain>` or `local@domain`.
/// The address must be ASCII (no SMTPUTF8 senders), without spaces or controls.
pub(crate) fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    let text = text.trim();
    if text.chars().any(char::is_control) {
        return Err("holds a control character or line break".into());
    }
    let (display, address) = match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(inner)) => (text[..open].trim(), &inner[open + 1..]),
        (None, None) => ("", text),
        _ => {
            return Err(format!(
                "`{text}` is not `Name <local@domain>` or `local@domain`"
            ))
        }
    };
    check_address(address)?;
    let display = match display.strip_prefix('"').and_then(|d| d.strip_suffix('"')) {
        Some(quoted) => unquote(quoted),
        None => display.to_owned(),
    };
    Ok(Mailbox {
        display,
        address: address.to_owned(),
    })
}

/// Checks a bare `local@domain` address.
pub(crate) fn check_address(address: &str) -> Result<(), String> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(format!("`{address}` is not an address (no `@`)"));
    };
    if local.is_empty() || domain.is_empty() {
        return Err(format!(
            "`{address}` is not an address (empty local part or domain)"
        ));
    }
    if address.len() > 254 {
        return Err(format!("`{address}` is longer than 254 characters"));
    }
    if !address
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'(' | b')' | b',' | b'"'))
    {
        return Err(format!(
            "`{address}` must be plain ASCII without spaces, quotes, brackets or commas"
        ));
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'))
    {
        return Err(format!("`{domain}` is not a domain name"));
    }
    Ok(())
}

fn unquote(quoted: &str) -> String {
    let mut out = String::with_capacity(quoted.len());
    let mut escaped = false;
    for c in quoted.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// Characters of a display name that can stay an unquoted phrase (RFC 5322 atext
/// and spaces).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// Writes `name: Display <address>` CRLF: the display name as is when it is plain
/// words, quoted when it holds specials, RFC 2047 encoded as a whole when it holds
/// non-ASCII text.
pub(crate) fn write_mailbox(out: &mut BytesMut, name: &str, mailbox: &Mailbox) {
    let mut f = Folder::start(out, name);
    let display = mailbox.display.trim();
    if !display.is_empty() {
        if !display.is_ascii() || display.contains("=?") {
            f.words(display, 1);
        } else if display.chars().all(is_atext) {
            f.text(display, Encode::Never);
        } else {
            let mut quoted = String::with_capacity(display.len() + 2);
            quoted.push('"');
            for c in display.chars() {
                if c == '"' || c == '\\' {
                    quoted.push('\\');
                }
                quoted.push(c);
            }
            quoted.push('"');
            f.text(&quoted, Encode::Never);
        }
    }
    let mut angle = String::with_capacity(mailbox.address.len() + 2);
    angle.push('<');
    angle.push_str(&mailbox.address);
    angle.push('>');
    f.text(&angle, Encode::Never);
    f.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> String {
        let mailbox = parse_mailbox(text).unwrap();
        let mut out = BytesMut::new();
        write_mailbox(&mut out, "From", &mailbox);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn parses_and_writes() {
        assert_eq!(
            header("Acme News <news@acme.test>"),
            "From: Acme News <news@acme.test>\r\n"
        );
        assert_eq!(header("news@acme.test"), "From: <news@acme.test>\r\n");
        assert_eq!(
            header("\"Acme, Inc.\" <news@acme.test>"),
            "From: \"Acme, Inc.\" <news@acme.test>\r\n"
        );
        assert_eq!(
            header("Acme \"Q\" Co. <a@b.test>"),
            "From: \"Acme \\\"Q\\\" Co.\" <a@b.test>\r\n"
        );
        assert_eq!(
            header("Müller, Jörg <j@b.test>"),
            "From: =?UTF-8?Q?M=C3=BCller=2C_J=C3=B6rg?= <j@b.test>\r\n"
        );
        assert_eq!(parse_mailbox("x <a@b.test>").unwrap().domain(), "b.test");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "news",
            "@acme.test",
            "news@",
            "Name <news@acme.test",
            "a b@acme.test",
            "Name <news@acme.test>\r\nBcc: x@y",
            "jörg@acme.test",
            "x@acme_test!",
        ] {
            assert!(parse_mailbox(bad).is_err(), "{bad:?}");
        }
    }
}
