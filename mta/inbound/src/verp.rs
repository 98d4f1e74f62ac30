//! VERP return paths: the envelope sender of each campaign message names its
//! campaign, batch and recipient, signed, so a bounce identifies its recipient
//! even when the DSN does not (or lies).
//!
//! # Format
//!
//! ```text
//! <prefix><token>@<domain>
//!   e.g. b-aaaaaaaaaaacuaaaaaaaaaaaa4aaaaadbbekhwvnatpxkr4o@bounce.acme.test
//!        (campaign 42, batch 7, index 3)
//! token = base32(payload), lower case, no padding: 48 characters
//! payload (30 bytes) = campaign (u64, big endian) | batch (u64, BE) | index (u32, BE) | tag (10 bytes)
//! tag = HMAC-SHA256(key, "volley-verp-1" | campaign | batch | index), first 10 bytes
//! ```
//!
//! `index` is the recipient's position in its batch file. The prefix (at most 16
//! characters, default `b-`) and the token make a local part of at most 64 octets
//! (RFC 5321 §4.5.3.1.1). Base32 keeps it to letters and digits, which every
//! receiver passes through unchanged except for case: some fold local parts to
//! upper or lower case, so decoding ignores case (the prefix's too). An 80-bit tag
//! makes a forged token a 2^-80 guess; it is compared in constant time. A future
//! format would change the label `volley-verp-1` and the prefix.
//!
//! This module is pure: the key comes in as bytes (see
//! `volley_engine::verp_key` for the key file).

use std::fmt;
use std::sync::OnceLock;

use data_encoding::{Encoding, Specification};
use ring::hmac;

/// Characters of a token: 30 bytes in base32.
pub const TOKEN_LEN: usize = 48;

/// Longest prefix: prefix and token must fit the 64-octet local part.
pub const MAX_PREFIX: usize = 64 - TOKEN_LEN;

/// Shortest key accepted, in bytes (the HMAC-SHA256 output size).
pub const MIN_KEY_LEN: usize = 32;

const IDS_LEN: usize = 8 + 8 + 4;
const TAG_LEN: usize = 10;
const PAYLOAD_LEN: usize = IDS_LEN + TAG_LEN;
const LABEL: &[u8] = b"volley-verp-1";
/// Domain separation for the second HMAC of the constant-time tag comparison.
const COMPARE_LABEL: &[u8] = b"volley-verp-compare";

/// What a VERP address names: one recipient of one batch of one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerpTarget {
    /// Campaign id.
    pub campaign: u64,
    /// Batch id within the campaign.
    pub batch: u64,
    /// The recipient's position in the batch file (0-based).
    pub index: u32,
}

impl fmt::Display for VerpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.campaign, self.batch, self.index)
    }
}

/// Why an address is not a VERP target of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    /// Another domain, or a local part without our prefix: not a VERP address.
    #[error("not a VERP address")]
    NotVerp,
    /// Our domain and prefix, but the token has the wrong length or characters.
    #[error("malformed VERP token")]
    Malformed,
    /// A well-formed token whose tag does not verify: not made with our key.
    #[error("forged VERP token (bad tag)")]
    Forged,
}

/// Why a [`Verp`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerpSetupError {
    /// The key is shorter than [`MIN_KEY_LEN`] bytes.
    #[error("the VERP key has {len} bytes; at least {MIN_KEY_LEN} are needed")]
    KeyTooShort {
        /// Its length.
        len: usize,
    },
    /// The prefix is empty, longer than [`MAX_PREFIX`], or holds a character
    /// other than letters, digits, `-`, `_`, `+`, `.`.
    #[error("bad VERP prefix {prefix:?}: 1 to {MAX_PREFIX} letters, digits, '-', '_', '+', '.'")]
    BadPrefix {
        /// The prefix given.
        prefix: String,
    },
    /// The domain is empty or holds characters a domain name cannot.
    #[error("bad VERP domain {domain:?}")]
    BadDomain {
        /// The domain given.
        domain: String,
    },
}

/// Makes and checks VERP return paths with one key, domain and prefix.
///
/// Built once at start; [`Verp::write_return_path`] runs per message and
/// allocates nothing beyond the growth of the caller's string.
pub struct Verp {
    key: hmac::Key,
    domain: String,
    prefix: String,
}

impl fmt::Debug for Verp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Verp")
            .field("domain", &self.domain)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Lower-case base32 (RFC 4648 alphabet) without padding; upper case decodes too.
fn base32() -> &'static Encoding {
    static BASE32: OnceLock<Encoding> = OnceLock::new();
    BASE32.get_or_init(|| {
        let mut spec = Specification::new();
        spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
        spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
        match spec.encoding() {
            Ok(encoding) => encoding,
            // The specification is a constant that data-encoding accepts (a unit
            // test builds it); its upper-case twin is the fallback all the same.
            Err(_) => data_encoding::BASE32_NOPAD,
        }
    })
}

impl Verp {
    /// A VERP maker for return paths `<prefix><token>@<domain>` signed with `key`
    /// (at least 32 bytes). Domain and prefix are lower-cased.
    pub fn new(key: &[u8], domain: &str, prefix: &str) -> Result<Verp, VerpSetupError> {
        if key.len() < MIN_KEY_LEN {
            return Err(VerpSetupError::KeyTooShort { len: key.len() });
        }
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'.'));
        if !prefix_ok {
            return Err(VerpSetupError::BadPrefix {
                prefix: prefix.to_owned(),
            });
        }
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        let domain_ok = !domain.is_empty()
            && domain.len() <= 253
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        if !domain_ok {
            return Err(VerpSetupError::BadDomain {
                domain: domain.to_owned(),
            });
        }
        Ok(Verp {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            domain: domain.to_ascii_lowercase(),
            prefix: prefix.to_ascii_lowercase(),
        })
    }

    /// The domain of the return paths.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The prefix of the local parts.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The return path for one recipient, as a new string.
    pub fn return_path(&self, campaign: u64, batch: u64, index: u32) -> String {
        let mut out = String::with_capacity(self.prefix.len() + TOKEN_LEN + 1 + self.domain.len());
        self.write_return_path(&mut out, campaign, batch, index);
        out
    }

    /// Appends the return path for one recipient to `out` (no `<>`).
    pub fn write_return_path(&self, out: &mut String, campaign: u64, batch: u64, index: u32) {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..IDS_LEN].copy_from_slice(&ids(campaign, batch, index));
        let tag = self.tag(&payload[..IDS_LEN]);
        payload[IDS_LEN..].copy_from_slice(&tag.as_ref()[..TAG_LEN]);
        out.reserve(self.prefix.len() + TOKEN_LEN + 1 + self.domain.len());
        out.push_str(&self.prefix);
        base32().encode_append(&payload, out);
        out.push('@');
        out.push_str(&self.domain);
    }

    /// Decodes a VERP address (`local@domain`, with or without `<>`) or a bare local
    /// part. The domain, the prefix and the token are compared without regard to case.
    pub fn decode(&self, address_or_local: &str) -> Result<VerpTarget, VerpError> {
        let text = address_or_local.trim();
        let text = text
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(text);
        let local = match text.rsplit_once('@') {
            Some((local, domain)) => {
                let domain = domain.strip_suffix('.').unwrap_or(domain);
                if !domain.eq_ignore_ascii_case(&self.domain) {
                    return Err(VerpError::NotVerp);
                }
                local
            }
            None => text,
        };
        let prefix = self.prefix.len();
        let has_prefix = local
            .get(..prefix)
            .is_some_and(|p| p.eq_ignore_ascii_case(&self.prefix));
        if !has_prefix {
            return Err(VerpError::NotVerp);
        }
        let token = &local.as_bytes()[prefix..];
        if token.len() != TOKEN_LEN {
            return Err(VerpError::Malformed);
        }
        let mut payload = [0u8; PAYLOAD_LEN];
        match base32().decode_mut(token, &mut payload) {
            Ok(PAYLOAD_LEN) => {}
            _ => return Err(VerpError::Malformed),
        }
        let (id_bytes, tag) = payload.split_at(IDS_LEN);
        // ring compares whole HMAC outputs in constant time, and our tag is
        // truncated: compare HMACs of the two truncated tags instead (the "double
        // HMAC" comparison), which leaks nothing about the expected tag.
        let expected = self.tag(id_bytes);
        let expected = &expected.as_ref()[..TAG_LEN];
        let mut msg = [0u8; COMPARE_LABEL.len() + TAG_LEN];
        msg[..COMPARE_LABEL.len()].copy_from_slice(COMPARE_LABEL);
        msg[COMPARE_LABEL.len()..].copy_from_slice(expected);
        let expected_mac = hmac::sign(&self.key, &msg);
        msg[COMPARE_LABEL.len()..].copy_from_slice(tag);
        hmac::verify(&self.key, &msg, expected_mac.as_ref()).map_err(|_| VerpError::Forged)?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&id_bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut index = [0u8; 4];
        index.copy_from_slice(&id_bytes[16..20]);
        Ok(VerpTarget {
            campaign: u64_at(0),
            batch: u64_at(8),
            index: u32::from_be_bytes(index),
        })
    }

    /// HMAC-SHA256 over the label and the 20 id bytes.
    fn tag(&self, id_bytes: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(LABEL);
        ctx.update(id_bytes);
        ctx.sign()
    }
}

fn ids(campaign: u64, batch: u64, index: u32) -> [u8; IDS_LEN] {
    let mut out = [0u8; IDS_LEN];
    out[..8].copy_from_slice(&campaign.to_be_bytes());
    out[8..16].copy_from_slice(&batch.to_be_bytes());
    out[16..].copy_from_slice(&index.to_be_bytes());
    out
}

/// The inbound listener's RCPT check: a recipient at the VERP domain with its
/// prefix whose token is malformed or forged is refused.
impl volley_smtp::server::VerpCheck for Verp {
    fn verify(&self, address: &str) -> Result<(), String> {
        match self.decode(address) {
            Err(error @ (VerpError::Malformed | VerpError::Forged)) => Err(error.to_string()),
            Ok(_) | Err(VerpError::NotVerp) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";

    fn verp() -> Verp {
        Verp::new(&KEY, "Bounce.Acme.Test.", "b-").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_alphabet_builds() {
        let mut spec = Specification::new();
        spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
        spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
        assert!(spec.encoding().is_ok());
        assert_eq!(base32().encode(b"\xff"), "74");
    }

    #[test]
    fn return_path_shape() {
        let v = verp();
        let path = v.return_path(1, 2, 3);
        let (local, domain) = path.split_once('@').unwrap_or_default();
        assert_eq!(domain, "bounce.acme.test");
        assert_eq!(local.len(), 2 + TOKEN_LEN);
        assert!(local.starts_with("b-"));
        assert!(local[2..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        // The ids are in the clear (base32 of big-endian bytes: campaign 1 is 63
        // zero bits then a one); the tag is not.
        assert!(local.starts_with("b-aaaaaaaaaaaac"), "{local}");
        assert_eq!(
            v.decode(&path),
            Ok(VerpTarget {
                campaign: 1,
                batch: 2,
                index: 3
            })
        );
        // Deterministic: the same ids give the same address.
        assert_eq!(v.return_path(1, 2, 3), path);
        let mut out = String::from("x");
        v.write_return_path(&mut out, 1, 2, 3);
        assert_eq!(out, format!("x{path}"));
    }

    #[test]
    fn longest_prefix_fits_64_octets() {
        let v = Verp::new(&KEY, "b.test", "abcdefghijklmnop").unwrap_or_else(|e| panic!("{e}"));
        let path = v.return_path(u64::MAX, u64::MAX, u32::MAX);
        assert_eq!(path.split_once('@').map(|(l, _)| l.len()), Some(64));
        assert_eq!(
            Verp::new(&KEY, "b.test", "abcdefghijklmnopq").err(),
            Some(VerpSetupError::BadPrefix {
                prefix: "abcdefghijklmnopq".into()
            })
        );
    }

    #[test]
    fn setup_errors() {
        assert_eq!(
            Verp::new(&KEY[..31], "b.test", "b-").err(),
            Some(VerpSetupError::KeyTooShort { len: 31 })
        );
        assert!(matches!(
            Verp::new(&KEY, "b.test", "").err(),
            Some(VerpSetupError::BadPrefix { .. })
        ));
        assert!(matches!(
            Verp::new(&KEY, "b.test", "b@").err(),
            Some(VerpSetupError::BadPrefix { .. })
        ));
        assert!(matches!(
            Verp::new(&KEY, "b test", "b-").err(),
            Some(VerpSetupError::BadDomain { .. })
        ));
        assert!(matches!(
            Verp::new(&KEY, "", "b-").err(),
            Some(VerpSetupError::BadDomain { .. })
        ));
        let debug = format!("{:?}", verp());
        assert_eq!(
            debug,
            "Verp { domain: \"bounce.acme.test\", prefix: \"b-\", .. }"
        );
    }

    #[test]
    fn case_folded_addresses_decode() {
        let v = verp();
        let path = v.return_path(42, 7, 99);
        let target = VerpTarget {
            campaign: 42,
            batch: 7,
            index: 99,
        };
        assert_eq!(v.decode(&path.to_ascii_uppercase()), Ok(target));
        assert_eq!(v.decode(&format!("<{path}>")), Ok(target));
        assert_eq!(v.decode(&format!("  {path}.")), Ok(target));
        let local = path.split('@').next().unwrap_or_default();
        assert_eq!(v.decode(local), Ok(target));
        assert_eq!(v.decode(&local.to_ascii_uppercase()), Ok(target));
    }

    #[test]
    fn decode_errors() {
        let v = verp();
        let path = v.return_path(42, 7, 99);
        let (local, _) = path.split_once('@').unwrap_or_default();
        let token = &local[2..];
        let cases: Vec<(String, VerpError)> = vec![
            (format!("{local}@other.test"), VerpError::NotVerp),
            (format!("{local}@acme.test"), VerpError::NotVerp),
            (format!("x-{token}@bounce.acme.test"), VerpError::NotVerp),
            ("postmaster@bounce.acme.test".into(), VerpError::NotVerp),
            ("".into(), VerpError::NotVerp),
            ("b-@bounce.acme.test".into(), VerpError::Malformed),
            (
                format!("b-{}@bounce.acme.test", &token[1..]),
                VerpError::Malformed,
            ),
            (format!("{local}a@bounce.acme.test"), VerpError::Malformed),
            // '1' and '0' are not in the base32 alphabet.
            (
                format!("b-1{}@bounce.acme.test", &token[1..]),
                VerpError::Malformed,
            ),
            (
                format!("b-é{}@bounce.acme.test", &token[2..]),
                VerpError::Malformed,
            ),
        ];
        for (address, expected) in cases {
            assert_eq!(v.decode(&address), Err(expected), "{address}");
        }
    }

    #[test]
    fn forged_tokens_are_refused() {
        let v = verp();
        let path = v.return_path(42, 7, 99);
        // Another campaign id with the tag of this one: the first id character
        // changed (campaign 42 → a high bit set).
        let forged_id = format!("b-b{}", &path[3..]);
        assert_eq!(v.decode(&forged_id), Err(VerpError::Forged));
        // The last tag character changed.
        let (local, domain) = path.split_once('@').unwrap_or_default();
        let last = local.as_bytes()[local.len() - 1];
        let other = if last == b'a' { 'b' } else { 'a' };
        let forged_tag = format!("{}{other}@{domain}", &local[..local.len() - 1]);
        assert_eq!(v.decode(&forged_tag), Err(VerpError::Forged));
        // Another key.
        let other_key =
            Verp::new(&[7u8; 32], "bounce.acme.test", "b-").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(other_key.decode(&path), Err(VerpError::Forged));
    }

    proptest! {
        #[test]
        fn round_trip(campaign in any::<u64>(), batch in any::<u64>(), index in any::<u32>(), upper in any::<bool>()) {
            let v = verp();
            let mut path = v.return_path(campaign, batch, index);
            if upper {
                path = path.to_ascii_uppercase();
            }
            prop_assert_eq!(v.decode(&path), Ok(VerpTarget { campaign, batch, index }));
        }

        #[test]
        fn any_text_decodes_without_panic(text in "\\PC{0,80}") {
            let _ = verp().decode(&text);
            let _ = verp().decode(&format!("b-{text}@bounce.acme.test"));
        }
    }

    #[test]
    fn the_rcpt_check_refuses_only_bad_tokens_at_the_verp_domain() {
        use volley_smtp::server::VerpCheck;
        let verp = crate::testing::verp();
        let good = verp.return_path(42, 7, 3);
        let (local, domain) = good.split_once('@').unwrap_or_default();
        let last = if local.ends_with('a') { 'b' } else { 'a' };
        let forged = format!("{}{last}@{domain}", &local[..local.len() - 1]);
        assert_eq!(verp.verify(&good.to_ascii_uppercase()), Ok(()));
        assert!(verp.verify(&forged).is_err(), "{forged}");
        assert!(verp.verify("b-short@bounce.acme.test").is_err());
        assert_eq!(verp.verify("postmaster@bounce.acme.test"), Ok(()));
        assert_eq!(verp.verify("b-short@other.test"), Ok(()));
    }
}
