//! Signed link tokens: what the web links in a campaign message name (one
//! recipient of one batch, and for a click the link), so the public web
//! endpoints (`/u/TOKEN`, `/c/TOKEN`, `/o/TOKEN`) know whom a request is about
//! without storing anything per message.
//!
//! # Format
//!
//! ```text
//! token   = base64url(payload), no padding: 43 characters
//! payload (32 bytes) = campaign (u64, big endian) | batch (u64, BE) | index (u32, BE)
//!                      | link (u16, BE) | tag (10 bytes)
//! tag     = HMAC-SHA256(key, "volley-link-1" | kind | campaign | batch | index | link),
//!           first 10 bytes
//! kind    = one byte: 'u' unsubscribe, 'c' click, 'o' open, 's' confirm a
//!           subscribe request (campaign = the list, batch = the request)
//! ```
//!
//! The kind is signed but not written: the path says it, and a token made for
//! one path is refused on another. `link` is the link's position among the
//! template's tracked links (0 for the other kinds). An 80-bit tag makes a forged
//! token a 2^-80 guess; it is compared in constant time (the double-HMAC
//! comparison, as in VERP tokens). Base64url keeps the token to characters that
//! need no escaping in a URL, a header or an HTML attribute (data-encoding's
//! `BASE64URL_NOPAD`, which refuses non-zero trailing bits).
//!
//! This module is pure: the key comes in as bytes; the binary reads or creates
//! the key file (`[web] secret_file`, default `SPOOL/web.key`), which every
//! process of a fleet must share.

use std::fmt;

use ring::hmac;

/// Characters of a token: 32 bytes in base64url without padding.
pub const TOKEN_LEN: usize = 43;

/// Shortest key accepted, in bytes (the HMAC-SHA256 output size).
pub const MIN_KEY_LEN: usize = 32;

const IDS_LEN: usize = 8 + 8 + 4 + 2;
const TAG_LEN: usize = 10;
const PAYLOAD_LEN: usize = IDS_LEN + TAG_LEN;
const LABEL: &[u8] = b"volley-link-1";
const COMPARE_LABEL: &[u8] = b"volley-link-compare";

/// Which endpoint a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// `/u/TOKEN`: the one-click unsubscribe (RFC 8058) and its page.
    Unsubscribe,
    /// `/c/TOKEN`: a tracked link; answers a redirect to the template's URL.
    Click,
    /// `/o/TOKEN`: the open-tracking image.
    Open,
    /// `/s/confirm/TOKEN`: a subscribe request's confirmation (the target's
    /// campaign is the list, its batch the request).
    Confirm,
}

impl LinkKind {
    fn byte(self) -> u8 {
        match self {
            LinkKind::Unsubscribe => b'u',
            LinkKind::Click => b'c',
            LinkKind::Open => b'o',
            LinkKind::Confirm => b's',
        }
    }

    /// The path of its endpoint (`u`, `c`, `o` or `s/confirm`).
    pub fn path(self) -> &'static str {
        match self {
            LinkKind::Unsubscribe => "u",
            LinkKind::Click => "c",
            LinkKind::Open => "o",
            LinkKind::Confirm => "s/confirm",
        }
    }
}

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkTarget {
    /// Campaign id.
    pub campaign: u64,
    /// Batch id within the campaign.
    pub batch: u64,
    /// The recipient's position in the batch file (0-based).
    pub index: u32,
    /// The tracked link's position in the template (clicks), else 0.
    pub link: u16,
}

impl fmt::Display for LinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "campaign {} batch {} recipient {} link {}",
            self.campaign, self.batch, self.index, self.link
        )
    }
}

/// Why a token was refused. Every case answers the same `404`; the kinds are for
/// the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not 43 base64url characters.
    #[error("not a link token")]
    Malformed,
    /// Well formed, but the tag does not match: forged or altered.
    #[error("the link token's signature does not match")]
    Forged,
}

/// The key is shorter than [`MIN_KEY_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link key has {len} bytes; it must have at least {MIN_KEY_LEN}")]
pub struct KeyTooShort {
    /// Its length.
    pub len: usize,
}

/// SHA-256's initial state.
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The longest message [`ShortHmac`] signs: one block with its padding.
const SHORT_MAX: usize = 55;

const _: () = assert!(LABEL.len() + 1 + IDS_LEN <= SHORT_MAX);

/// HMAC-SHA256 (RFC 2104) of messages of at most [`SHORT_MAX`] bytes, from
/// the key's inner and outer states worked out once: two SHA-256 compressions
/// a tag. Written by hand on SHA-256's compression function because this is
/// the delivery path's hot spot of link tracking: a message carries five or
/// more tokens (List-Unsubscribe, each tracked link, the open image), and
/// ring's general HMAC cost ~240 ns a tag here against ~125 ns (and ~0.5 µs
/// a token in the e2e profile, where it was the links' largest cost). Checked
/// against ring's HMAC in the tests.
#[derive(Clone)]
struct ShortHmac {
    inner: [u32; 8],
    outer: [u32; 8],
}

/// One SHA-256 compression of `block` from `state`.
fn compress(mut state: [u32; 8], block: &[u8; 64]) -> [u32; 8] {
    sha2::compress256(&mut state, &[(*block).into()]);
    state
}

impl ShortHmac {
    fn new(key: &[u8]) -> ShortHmac {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(ring::digest::digest(&ring::digest::SHA256, key).as_ref());
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| {
            let mut block = [0u8; 64];
            for (b, k) in block.iter_mut().zip(k) {
                *b = k ^ byte;
            }
            compress(SHA256_IV, &block)
        };
        ShortHmac {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }

    /// The tag of the concatenation of `parts` (at most [`SHORT_MAX`] bytes
    /// in all; the callers' are constant sizes, checked at compile time).
    fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut block = [0u8; 64];
        let mut len = 0;
        for part in parts {
            let end = (len + part.len()).min(SHORT_MAX);
            block[len..end].copy_from_slice(&part[..end - len]);
            len = end;
        }
        // The padding: 0x80, zeros, the bit length after the key block.
        block[len] = 0x80;
        block[56..].copy_from_slice(&(((64 + len) * 8) as u64).to_be_bytes());
        let inner = compress(self.inner, &block);
        let mut block = [0u8; 64];
        for (out, word) in block.chunks_exact_mut(4).zip(inner) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&(((64 + 32) * 8) as u64).to_be_bytes());
        let mut tag = [0u8; 32];
        for (out, word) in tag.chunks_exact_mut(4).zip(compress(self.outer, &block)) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        tag
    }
}

/// Makes and checks link tokens with one key. Cheap to share (`Arc`); making a
/// token costs one HMAC and allocates nothing beyond the caller's buffer.
pub struct LinkSigner {
    /// For the tags.
    short: ShortHmac,
    /// For the constant-time comparison of tags.
    key: hmac::Key,
}

impl fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("LinkSigner").finish_non_exhaustive()
    }
}

/// Base64url without padding; trailing bits must be zero, so each payload has
/// exactly one token.
static BASE64URL: data_encoding::Encoding = data_encoding::BASE64URL_NOPAD;

fn decode(token: &[u8]) -> Option<[u8; PAYLOAD_LEN]> {
    if token.len() != TOKEN_LEN {
        return None;
    }
    let mut out = [0u8; PAYLOAD_LEN];
    match BASE64URL.decode_mut(token, &mut out) {
        Ok(PAYLOAD_LEN) => Some(out),
        _ => None,
    }
}

impl LinkSigner {
    /// A signer with `key` (at least 32 bytes).
    pub fn new(key: &[u8]) -> Result<LinkSigner, KeyTooShort> {
        if key.len() < MIN_KEY_LEN {
            return Err(KeyTooShort { len: key.len() });
        }
        Ok(LinkSigner {
            short: ShortHmac::new(key),
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        })
    }

    /// HMAC-SHA256(key, LABEL | kind | ids).
    fn tag(&self, kind: LinkKind, ids: &[u8]) -> [u8; 32] {
        self.short.sign(&[LABEL, &[kind.byte()], ids])
    }

    /// The token for `target` on `kind`'s endpoint, as ASCII bytes.
    pub fn encode(&self, kind: LinkKind, target: LinkTarget) -> [u8; TOKEN_LEN] {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..8].copy_from_slice(&target.campaign.to_be_bytes());
        payload[8..16].copy_from_slice(&target.batch.to_be_bytes());
        payload[16..20].copy_from_slice(&target.index.to_be_bytes());
        payload[20..22].copy_from_slice(&target.link.to_be_bytes());
        let tag = self.tag(kind, &payload[..IDS_LEN]);
        payload[IDS_LEN..].copy_from_slice(&tag.as_ref()[..TAG_LEN]);
        let mut out = [0u8; TOKEN_LEN];
        BASE64URL.encode_mut(&payload, &mut out);
        out
    }

    /// The token for `target`, as a string.
    pub fn token(&self, kind: LinkKind, target: LinkTarget) -> String {
        // Base64url: ASCII only.
        String::from_utf8_lossy(&self.encode(kind, target)).into_owned()
    }

    /// Checks a token taken from `kind`'s endpoint and says what it names.
    pub fn verify(&self, kind: LinkKind, token: &str) -> Result<LinkTarget, LinkError> {
        let payload = decode(token.as_bytes()).ok_or(LinkError::Malformed)?;
        let (ids, tag) = payload.split_at(IDS_LEN);
        let expected = self.tag(kind, ids);
        let mut msg = [0u8; COMPARE_LABEL.len() + TAG_LEN];
        msg[..COMPARE_LABEL.len()].copy_from_slice(COMPARE_LABEL);
        msg[COMPARE_LABEL.len()..].copy_from_slice(&expected.as_ref()[..TAG_LEN]);
        let expected_mac = hmac::sign(&self.key, &msg);
        msg[COMPARE_LABEL.len()..].copy_from_slice(tag);
        hmac::verify(&self.key, &msg, expected_mac.as_ref()).map_err(|_| LinkError::Forged)?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&ids[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(LinkTarget {
            campaign: u64_at(0),
            batch: u64_at(8),
            index: u32::from_be_bytes([ids[16], ids[17], ids[18], ids[19]]),
            link: u16::from_be_bytes([ids[20], ids[21]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    fn signer() -> LinkSigner {
        LinkSigner::new(&[7u8; 32]).unwrap()
    }

    const T: LinkTarget = LinkTarget {
        campaign: 0x0102_0304_0506_0708,
        batch: 42,
        index: 99,
        link: 3,
    };

    #[test]
    fn a_token_names_its_target_on_its_own_endpoint_only() {
        let s = signer();
        for kind in [LinkKind::Unsubscribe, LinkKind::Click, LinkKind::Open] {
            let token = s.token(kind, T);
            assert_eq!(token.len(), TOKEN_LEN);
            assert!(token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(s.verify(kind, &token), Ok(T));
        }
        let click = s.token(LinkKind::Click, T);
        assert_eq!(
            s.verify(LinkKind::Unsubscribe, &click),
            Err(LinkError::Forged)
        );
        let other = LinkSigner::new(&[8u8; 32]).unwrap();
        assert_eq!(
            other.verify(LinkKind::Click, &click),
            Err(LinkError::Forged)
        );
        assert!(LinkSigner::new(&[0u8; 31]).is_err());
    }

    #[test]
    fn every_altered_truncated_or_extended_token_is_refused() {
        let s = signer();
        let token = s.token(LinkKind::Unsubscribe, T);
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            for c in ALPHABET.iter().chain(b"=+/.%") {
                if *c == bytes[i] {
                    continue;
                }
                let mut altered = bytes.to_vec();
                altered[i] = *c;
                let altered = String::from_utf8(altered).unwrap();
                assert!(
                    s.verify(LinkKind::Unsubscribe, &altered).is_err(),
                    "{altered}"
                );
            }
        }
        for n in 0..bytes.len() {
            assert_eq!(
                s.verify(LinkKind::Unsubscribe, &token[..n]),
                Err(LinkError::Malformed)
            );
        }
        assert_eq!(
            s.verify(LinkKind::Unsubscribe, &format!("{token}A")),
            Err(LinkError::Malformed)
        );
        assert_eq!(
            s.verify(LinkKind::Unsubscribe, "é".repeat(22).as_str()),
            Err(LinkError::Malformed)
        );
    }

    #[test]
    fn short_hmac_is_hmac_sha256() {
        // Keys shorter than, as long as and longer than a block; messages
        // of every length it takes.
        for key_len in [32, 33, 63, 64, 65, 100] {
            let key: Vec<u8> = (0..key_len).map(|i| (i * 7 + key_len) as u8).collect();
            let short = ShortHmac::new(&key);
            let ring_key = hmac::Key::new(hmac::HMAC_SHA256, &key);
            for len in 0..=SHORT_MAX {
                let msg: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
                let (a, b) = msg.split_at(len / 3);
                assert_eq!(
                    short.sign(&[a, b]),
                    hmac::sign(&ring_key, &msg).as_ref(),
                    "key {key_len}, message {len}"
                );
            }
        }
    }

    #[test]
    fn encoding_round_trips_every_byte_value() {
        for b in 0..=255u8 {
            let payload = [b; PAYLOAD_LEN];
            let out = BASE64URL.encode(&payload);
            assert_eq!(out.len(), TOKEN_LEN);
            assert_eq!(decode(out.as_bytes()), Some(payload));
        }
    }
}
