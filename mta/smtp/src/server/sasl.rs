//! SASL for SMTP AUTH (RFC 4954): base64 and the PLAIN (RFC 4616) and LOGIN
//! mechanisms. Decoding only: verifying the password is the driver's business.
//!
//! Base64 is hand-written (a few lines) rather than a new dependency: it only
//! decodes short AUTH responses.

use std::fmt;

/// A user name and password received with AUTH. `Debug` does not show the
/// password, so credentials never end up in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication identity.
    pub user: String,
    /// The password, as sent.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The base64 of `Username:` and `Password:`, the LOGIN mechanism's prompts.
pub(crate) const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
/// See [`LOGIN_USER_PROMPT`].
pub(crate) const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Decodes standard base64 (RFC 4648 §4) with or without padding; `=` alone is
/// the empty response of RFC 4954 §4. `None` for anything else.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    if text == "=" {
        return Some(Vec::new());
    }
    let bytes = text.as_bytes();
    let unpadded = match bytes {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => bytes,
    };
    if bytes.len() != unpadded.len() && !bytes.len().is_multiple_of(4) {
        return None;
    }
    if unpadded.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &b in unpadded {
        let value = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero (canonical encoding).
    if acc != 0 {
        return None;
    }
    Some(out)
}

/// Why an AUTH response could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaslError {
    /// Not base64.
    Base64,
    /// Decoded, but not what the mechanism expects.
    Malformed,
}

/// Decodes a PLAIN response: `authzid NUL authcid NUL passwd`. An authorization
/// identity other than the user itself is refused (no proxy authorization).
pub(crate) fn decode_plain(response: &str) -> Result<Credentials, SaslError> {
    let bytes = decode_base64(response).ok_or(SaslError::Base64)?;
    let mut parts = bytes.split(|&b| b == 0);
    let (Some(authz), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if user.is_empty() || (!authz.is_empty() && authz != user) {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials {
        user: text(user)?,
        password: text(password)?,
    })
}

/// Decodes one LOGIN response (the user name or the password).
pub(crate) fn decode_login(response: &str) -> Result<String, SaslError> {
    let bytes = decode_base64(response).ok_or(SaslError::Base64)?;
    text(&bytes)
}

fn text(bytes: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        let table: [(&str, Option<&[u8]>); 12] = [
            ("", Some(b"")),
            ("=", Some(b"")),
            ("Zg==", Some(b"f")),
            ("Zg", Some(b"f")),
            ("Zm8=", Some(b"fo")),
            ("Zm9v", Some(b"foo")),
            ("Zm9vYg==", Some(b"foob")),
            ("VXNlcm5hbWU6", Some(b"Username:")),
            ("Zh==", None), // non-zero leftover bits
            ("Z", None),
            ("Zm9v!", None),
            ("Zg=", None),
        ];
        for (text, expected) in table {
            assert_eq!(decode_base64(text).as_deref(), expected, "{text:?}");
        }
        assert_eq!(
            decode_base64(LOGIN_PASSWORD_PROMPT).as_deref(),
            Some(&b"Password:"[..])
        );
    }

    #[test]
    fn plain() {
        // "\0alice\0secret" and "alice\0alice\0secret"
        assert_eq!(
            decode_plain("AGFsaWNlAHNlY3JldA=="),
            Ok(Credentials {
                user: "alice".into(),
                password: "secret".into()
            })
        );
        assert!(decode_plain("YWxpY2UAYWxpY2UAc2VjcmV0").is_ok());
        // "bob\0alice\0secret": acting as someone else.
        assert_eq!(
            decode_plain("Ym9iAGFsaWNlAHNlY3JldA=="),
            Err(SaslError::Malformed)
        );
        assert_eq!(decode_plain("="), Err(SaslError::Malformed));
        assert_eq!(decode_plain("***"), Err(SaslError::Base64));
        let debug = format!(
            "{:?}",
            Credentials {
                user: "u".into(),
                password: "hunter2".into()
            }
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
