//! What a server offers in its EHLO reply (RFC 5321 §4.1.1.1 and the extension RFCs).

use super::reply::Reply;

/// The service extensions a server announced in its EHLO reply. After a HELO fallback
/// every field is empty: the server offers nothing beyond RFC 5321.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `PIPELINING` (RFC 2920): commands may be sent in groups without waiting.
    pub pipelining: bool,
    /// `CHUNKING` (RFC 3030): `BDAT` may replace `DATA`.
    pub chunking: bool,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// `SIZE` (RFC 1870): the largest message the server takes; `Some(0)` when it
    /// announced SIZE without a fixed limit.
    pub size: Option<u64>,
    /// `8BITMIME` (RFC 6152): `BODY=8BITMIME` is understood.
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` (RFC 6531): UTF-8 addresses are accepted.
    pub smtputf8: bool,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
    /// SASL mechanisms from `AUTH` (and the old `AUTH=` form), upper-cased.
    pub auth: Vec<String>,
    /// The extension lines as the server sent them (the reply's lines after the first,
    /// which is the server's name and greeting).
    pub extensions: Vec<String>,
}

impl Capabilities {
    /// Reads the capabilities from a positive EHLO reply. Unknown keywords are kept in
    /// [`Capabilities::extensions`] only; keywords are case-insensitive.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            caps.extensions.push(line.clone());
            let line = line.trim();
            let (keyword, params) = match line.find([' ', '=']) {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, ""),
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name);
            if is("PIPELINING") {
                caps.pipelining = true;
            } else if is("CHUNKING") {
                caps.chunking = true;
            } else if is("STARTTLS") {
                caps.starttls = true;
            } else if is("SIZE") {
                // A malformed limit is treated as "no fixed limit" rather than as no SIZE.
                let limit = params
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok());
                caps.size = Some(limit.unwrap_or(0));
            } else if is("8BITMIME") {
                caps.eight_bit_mime = true;
            } else if is("SMTPUTF8") {
                caps.smtputf8 = true;
            } else if is("ENHANCEDSTATUSCODES") {
                caps.enhanced_status_codes = true;
            } else if is("AUTH") {
                for mechanism in params.split_whitespace() {
                    let mechanism = mechanism.to_ascii_uppercase();
                    if !caps.auth.contains(&mechanism) {
                        caps.auth.push(mechanism);
                    }
                }
            }
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{parse_reply, Parse};

    fn caps(transcript: &str) -> Capabilities {
        match parse_reply(transcript.as_bytes()) {
            Ok(Parse::Complete(reply, _)) => Capabilities::from_ehlo(&reply),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gmail() {
        let caps = caps(
            "250-mx.google.com at your service, [203.0.113.5]\r\n\
             250-SIZE 157286400\r\n\
             250-8BITMIME\r\n\
             250-STARTTLS\r\n\
             250-ENHANCEDSTATUSCODES\r\n\
             250-PIPELINING\r\n\
             250-CHUNKING\r\n\
             250 SMTPUTF8\r\n",
        );
        assert!(caps.pipelining && caps.chunking && caps.starttls && caps.smtputf8);
        assert!(caps.eight_bit_mime && caps.enhanced_status_codes);
        assert_eq!(caps.size, Some(157_286_400));
        assert!(caps.auth.is_empty());
        assert_eq!(caps.extensions.len(), 7);
        assert_eq!(caps.extensions[0], "SIZE 157286400");
    }

    #[test]
    fn exchange_with_auth_and_old_style_auth() {
        let caps = caps(
            "250-EXCH01.corp.example.com Hello [203.0.113.5]\r\n\
             250-SIZE\r\n\
             250-pipelining\r\n\
             250-AUTH GSSAPI NTLM login\r\n\
             250-AUTH=LOGIN\r\n\
             250 CHUNKING\r\n",
        );
        assert!(caps.pipelining && caps.chunking && !caps.starttls);
        assert_eq!(caps.size, Some(0));
        assert_eq!(caps.auth, ["GSSAPI", "NTLM", "LOGIN"]);
    }

    #[test]
    fn bare_greeting_offers_nothing() {
        assert_eq!(caps("250 tiny.example\r\n"), Capabilities::default());
    }
}
