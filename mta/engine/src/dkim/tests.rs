//! Unit tests: fixed keys, signatures checked with `mail-auth`'s own verifier (the
//! TXT records injected into its resolver cache), key errors, the body-hash cache,
//! and an ignored timing test. The independent verifier (dkimpy, real DNS) is in
//! `mta/engine/tests/dkim_verify.rs`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use tempfile::TempDir;

use super::*;

/// `openssl genpkey -algorithm ed25519`
const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIIqIVjbDRTCFrbz1PUMZRbuOvxORc5CiDviZ0Npa2P+F\n\
-----END PRIVATE KEY-----\n\
";
/// Its public key, as `openssl pkey -pubout -outform DER | tail -c 32 | base64`.
const ED25519_P: &str = "hYOTrOa3eoaLdYUws+Rxc+S1yhAkN5ku+aulmIT1D6g=";

/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` (PKCS#8).
const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCug8lPMD3KR3nB\n\
FqZO+PpfNiYEo6Z3COqha64uPjjj0qnDbbn0PGEnrS+NswCigyro/MFqpBOZj87G\n\
EoD1eE3oJUCr9YFXGKtMv+Q2TfaPzZpEZKVOE+3sDkcFcheXDXSnveAIFy9pOPR5\n\
fo09b0gwryITH+ymfGrcmzK+OZnXXzpwBz+2qEMbzWE0GJl1Xc6zAoh/VtoOwBMe\n\
3dO6kuOAkpaCn6EdPXmCQyfe5oQDAa8W3GexR73JIcPY0XvAlJeraOOx7cRTDpgH\n\
fPq2rhwLt9VBn+ZcOXf+jlOFqt8QmAInGSAPsRYq9zpzmy6cGYVIdh7/ESGei/Uh\n\
ep5e4j2/AgMBAAECggEAE5XQsuVsGdZ5sJTVJ0nD94mBLMYc+YDzrBgEnUX4ZoEO\n\
8lLPKrzX/nbuPk3XhWWJHEq5fjlZxcMg5pPPCz1sKOB9aI8N6/NlziA/AWUwhaUC\n\
aiiNcLzF19cmW1MZmKc271hc2yuW840jyrrMKRfjFyugfFr52RlfeNCmGjkmrcff\n\
t66dMxWhTiSFG5PKkwUSGK6vJQtIkg/SHGAVURQWCqX/xOjEdBoJu9JApWEwXbsV\n\
EI2hHAJ1Pw8IuAOypJHnGyhgWEtKsvwuIqk4QDKtuvtlhu/jknW86iu6/lBldPmQ\n\
dHEuqnywZZJW6UKO4WIQ/qnZc33TeSw2CzhemodrSQKBgQDYK9SluST7ltlrSqZ+\n\
VntxwGUQ4AaRbY4+Oh/nxuTZOccIS/LmbEyj1E8XEqW0/WEmGOor3WXUJXpgZ5rO\n\
2QfjhaftUgpJLiyUqA/H1U2ruBADSzrP5yMcve3wut228RNS5x8n2qZgGWi4abPJ\n\
SaxsBiEeM/o9uq2i+DZjKCnx6wKBgQDOqySdEFBp811PdwqEaofT9XoTSQx+miZx\n\
p3D5zJQSDC4T1oVrna0AxkiPFndBJ4wuOt4piDqOJoP/i+4mrqg/KVtYb2zB03C/\n\
2qnDw6eV0y5l8nKBVdINtRDW1a6jvfSkLmlzQkGAEzOllv3669qe7K3k77sSkLov\n\
PEqJkO/afQKBgGvSyPl0dObs4juq+4rOtjoR3hdhtsT5IVcWhO2F/oX/VLBluZ2H\n\
bV7WOjDnAzJYpAltqfgBMZZ0ryrA4q3EATRSaWVtY2YHGwN3JI/nbBt37rzF3Grw\n\
/kmKztEhVA+5BYt3bsnhPNV4Nwys5JlFHzSuhfxbrrj1kUBVkEM7OFjLAoGAQ+Gm\n\
1wgCwaoz3eQFylSLZK1eeXMm7XaIZhBPZV0yzXK+t7lgfWZ+6qA2OPlyFi59NroT\n\
OqUKRqKT/J3jjUUU8hoNbNC8cjWW9Q1HcYuUQfvpY4bs4Vpk8iek7kulXxcHgd3U\n\
uQzsIrsr3ZnotkA9wLGQtH+hfImY/ebZvLGkdqkCgYEAs3znZ8Qo1Qt4SlbQWeaT\n\
5MGLXt5WDwtkwqMNuzimeLeeTf9ySkT9Ypc4pJRyFplhFLGYCam0/UFJk7aKjgpD\n\
tj4VgVAOjyC2wB6bSGswVYz/dqYHLWO6kxehd6/yWgInwHAWcHdAnRxjAqlSwXk0\n\
eDBzghVJMufh8T4TsrdUzEo=\n\
-----END PRIVATE KEY-----\n\
";
/// The same key as PKCS#1 (`openssl pkey -traditional`).
const RSA_PKCS1_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEAroPJTzA9ykd5wRamTvj6XzYmBKOmdwjqoWuuLj4449Kpw225\n\
9DxhJ60vjbMAooMq6PzBaqQTmY/OxhKA9XhN6CVAq/WBVxirTL/kNk32j82aRGSl\n\
ThPt7A5HBXIXlw10p73gCBcvaTj0eX6NPW9IMK8iEx/spnxq3JsyvjmZ1186cAc/\n\
tqhDG81hNBiZdV3OswKIf1baDsATHt3TupLjgJKWgp+hHT15gkMn3uaEAwGvFtxn\n\
sUe9ySHD2NF7wJSXq2jjse3EUw6YB3z6tq4cC7fVQZ/mXDl3/o5TharfEJgCJxkg\n\
D7EWKvc6c5sunBmFSHYe/xEhnov1IXqeXuI9vwIDAQABAoIBABOV0LLlbBnWebCU\n\
1SdJw/eJgSzGHPmA86wYBJ1F+GaBDvJSzyq81/527j5N14VliRxKuX45WcXDIOaT\n\
zws9bCjgfWiPDevzZc4gPwFlMIWlAmoojXC8xdfXJltTGZinNu9YXNsrlvONI8q6\n\
zCkX4xcroHxa+dkZX3jQpho5Jq3H37eunTMVoU4khRuTypMFEhiuryULSJIP0hxg\n\
FVEUFgql/8ToxHQaCbvSQKVhMF27FRCNoRwCdT8PCLgDsqSR5xsoYFhLSrL8LiKp\n\
OEAyrbr7ZYbv45J1vOoruv5QZXT5kHRxLqp8sGWSVulCjuFiEP6p2XN903ksNgs4\n\
XpqHa0kCgYEA2CvUpbkk+5bZa0qmflZ7ccBlEOAGkW2OPjof58bk2TnHCEvy5mxM\n\
o9RPFxKltP1hJhjqK91l1CV6YGeaztkH44Wn7VIKSS4slKgPx9VNq7gQA0s6z+cj\n\
HL3t8LrdtvETUucfJ9qmYBlouGmzyUmsbAYhHjP6Pbqtovg2Yygp8esCgYEAzqsk\n\
nRBQafNdT3cKhGqH0/V6E0kMfpomcadw+cyUEgwuE9aFa52tAMZIjxZ3QSeMLjre\n\
KYg6jiaD/4vuJq6oPylbWG9swdNwv9qpw8OnldMuZfJygVXSDbUQ1tWuo730pC5p\n\
c0JBgBMzpZb9+uvanuyt5O+7EpC6LzxKiZDv2n0CgYBr0sj5dHTm7OI7qvuKzrY6\n\
Ed4XYbbE+SFXFoTthf6F/1SwZbmdh21e1jow5wMyWKQJban4ATGWdK8qwOKtxAE0\n\
UmllbWNmBxsDdySP52wbd+68xdxq8P5Jis7RIVQPuQWLd27J4TzVeDcMrOSZRR80\n\
roX8W6649ZFAVZBDOzhYywKBgEPhptcIAsGqM93kBcpUi2StXnlzJu12iGYQT2Vd\n\
Ms1yvre5YH1mfuqgNjj5chYufTa6EzqlCkaik/yd441FFPIaDWzQvHI1lvUNR3GL\n\
lEH76WOG7OFaZPInpO5LpV8XB4Hd1LkM7CK7K92Z6LZAPcCxkLR/oXyJmP3m2byx\n\
pHapAoGBALN852fEKNULeEpW0Fnmk+TBi17eVg8LZMKjDbs4pni3nk3/ckpE/WKX\n\
OKSUchaZYRSxmAmptP1BSZO2io4KQ7Y+FYFQDo8gtsAem0hrMFWM/3amBy1jupMX\n\
oXev8loCJ8BwFnB3QJ0cYwKpUsF5NHgwc4IVSTLn4fE+E7K3VMxK\n\
-----END RSA PRIVATE KEY-----\n\
";
/// Its public key, as `openssl pkey -pubout -outform DER | base64`.
const RSA_P: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAroPJTzA9ykd5wRamTvj6XzYmBKOmdwjqoWuuLj4449Kpw2259DxhJ60vjbMAooMq6PzBaqQTmY/OxhKA9XhN6CVAq/WBVxirTL/kNk32j82aRGSlThPt7A5HBXIXlw10p73gCBcvaTj0eX6NPW9IMK8iEx/spnxq3JsyvjmZ1186cAc/tqhDG81hNBiZdV3OswKIf1baDsATHt3TupLjgJKWgp+hHT15gkMn3uaEAwGvFtxnsUe9ySHD2NF7wJSXq2jjse3EUw6YB3z6tq4cC7fVQZ/mXDl3/o5TharfEJgCJxkgD7EWKvc6c5sunBmFSHYe/xEhnov1IXqeXuI9vwIDAQAB";

/// A P-256 key (`openssl ec`): not usable for DKIM.
const EC_PEM: &str = "-----BEGIN EC PRIVATE KEY-----\n\
MHcCAQEEIBqGy1amjUyNC39THXN6vJfeRRRjFYMtgcbatPERMagjoAoGCCqGSM49\n\
AwEHoUQDQgAEdJvOpccuwAkHDgCSFyZtuUkXO45v2wYmb1cCRlCl1vKbkmcxfjbw\n\
gM/c/6jLR2S5jC8ERXWn6iRqzyWRrczY3w==\n\
-----END EC PRIVATE KEY-----\n\
";

const MESSAGE: &str = "From: \"Acme News\" <news@acme.test>\r\n\
To: Jane Doe <jane@example.test>\r\n\
Subject: Our   spring\r\n\tcatalogue\r\n\
Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\
Message-ID: <1@acme.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
X-Not-Signed: yes\r\n\
\r\n\
Hello Jane,  \r\n\
\r\n\
the new catalogue is out.\r\n\
\r\n\
\r\n";

/// Key files in a temporary directory.
struct Keys {
    dir: TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, pem) in [
            ("ed.pem", ED25519_PEM),
            ("rsa.pem", RSA_PEM),
            ("rsa1.pem", RSA_PKCS1_PEM),
            ("ec.pem", EC_PEM),
            ("junk.pem", "this is not a key\n"),
        ] {
            std::fs::write(dir.path().join(name), pem).expect("write key");
        }
        Keys { dir }
    }

    fn entry(
        &self,
        domain: &str,
        selector: &str,
        file: &str,
        algorithm: DkimAlgorithm,
    ) -> DkimConfig {
        DkimConfig {
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            key_file: self.dir.path().join(file),
            algorithm,
            headers: DkimConfig::DEFAULT_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        }
    }

    fn ed(&self, domain: &str, selector: &str) -> DkimConfig {
        self.entry(domain, selector, "ed.pem", DkimAlgorithm::Ed25519Sha256)
    }

    fn rsa(&self, domain: &str, selector: &str) -> DkimConfig {
        self.entry(domain, selector, "rsa.pem", DkimAlgorithm::RsaSha256)
    }
}

fn signer(entries: &[DkimConfig]) -> DkimSigner {
    DkimSigner::from_config(entries).unwrap_or_else(|e| panic!("{e}"))
}

fn signed(signer: &DkimSigner, message: &[u8]) -> Vec<u8> {
    let fields = signer
        .sign(message)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a key applies");
    [fields.as_slice(), message].concat()
}

/// A TXT cache for mail-auth's resolver, filled by the test.
#[derive(Default)]
struct TxtCache(Mutex<HashMap<Box<str>, Txt>>);

impl TxtCache {
    fn with(records: &[DkimDnsRecord]) -> TxtCache {
        let cache = TxtCache::default();
        for record in records {
            let key = DomainKey::parse(record.text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            cache.insert(
                format!("{}.", record.name).into(),
                Txt::from(key),
                Instant::now(),
            );
        }
        cache
    }
}

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().ok()?.get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().ok()?.remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _: Instant) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key, value);
        }
    }
}

/// Verifies every DKIM-Signature of `message` with mail-auth, the keys coming from
/// `records` only (the resolver points at a closed port and is never asked).
async fn verify(message: &[u8], records: &[DkimDnsRecord]) -> Vec<DkimResult> {
    let server = NameServerConfig::udp_and_tcp(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
    let authenticator = MessageAuthenticator::new(
        ResolverConfig::from_name_servers(vec![server]),
        ResolverOpts::default(),
    )
    .expect("resolver");
    let parsed = AuthenticatedMessage::parse(message).expect("message parses");
    let cache = TxtCache::with(records);
    authenticator
        .verify_dkim(Parameters::new(&parsed).with_txt_cache(&cache))
        .await
        .iter()
        .map(|output| output.result().clone())
        .collect()
}

/// The value of tag `name` in the (first) DKIM-Signature field of `fields`, with
/// folding whitespace removed.
fn tag(fields: &str, name: &str) -> Option<String> {
    let value = fields.strip_prefix("DKIM-Signature:")?;
    let value = value
        .split("\r\n")
        .take_while(|l| !l.is_empty())
        .collect::<String>();
    value.split(';').find_map(|spec| {
        let (tag, value) = spec.split_once('=')?;
        (tag.trim() == name).then(|| value.split_whitespace().collect())
    })
}

#[test]
fn signer_is_send_and_sync() {
    fn assert<T: Send + Sync>() {}
    assert::<DkimSigner>();
}

#[test]
fn ed25519_signature_is_fixed() {
    // Ed25519 signatures are deterministic: with a fixed t= the whole field is.
    let keys = Keys::new();
    let signer = signer(&[keys.ed("acme.test", "s2026")]);
    let fields = signer
        .sign_at(MESSAGE.as_bytes(), 1_772_445_600)
        .expect("signs")
        .expect("a key applies");
    let text = String::from_utf8(fields).expect("ASCII");
    // bh= checked independently: base64(SHA-256("Hello Jane,\r\n\r\nthe new catalogue
    // is out.\r\n")), the relaxed body. The signature is checked by the verifiers.
    assert_eq!(
        text,
        concat!(
            "DKIM-Signature: v=1; a=ed25519-sha256; s=s2026; d=acme.test; c=relaxed/relaxed;\r\n",
            "\th=Content-Type:MIME-Version:Message-ID:Date:Subject:To:From:Reply-To\r\n",
            "\t:List-Unsubscribe:List-Unsubscribe-Post:From:To:Subject:Date:Message-ID\r\n",
            "\t:Content-Type; t=1772445600; bh=LJ7zav2cOBSPKH0rdWBjL0hX9cQ9nyEqBvxT2UzIyuw\r\n",
            "\t=; b=J9uVzoABFppN4U9a/YnvD8Drqn5SFP4CQSvz8ISKsKC9qRvP3y2P859DAFa0owh5FF5Xk4\r\n",
            "\tTpg/HFKDT3sJFGAA==;\r\n",
        )
    );
}

#[tokio::test]
async fn ed25519_and_rsa_verify_with_mail_auth() {
    let keys = Keys::new();
    for entry in [keys.ed("acme.test", "ed"), keys.rsa("acme.test", "rsa")] {
        let signer = signer(&[entry]);
        let message = signed(&signer, MESSAGE.as_bytes());
        let results = verify(&message, &signer.dns_records()).await;
        assert_eq!(
            results,
            [DkimResult::Pass],
            "{}",
            String::from_utf8_lossy(&message)
        );

        // Changing the body after signing breaks it ...
        let mut tampered = message.clone();
        let at = tampered.len() - 10;
        tampered[at] = b'X';
        let results = verify(&tampered, &signer.dns_records()).await;
        assert!(
            matches!(results[..], [DkimResult::Neutral(_) | DkimResult::Fail(_)]),
            "{results:?}"
        );
        // ... and so does changing a signed header field.
        let tampered = String::from_utf8(message.clone())
            .expect("ASCII")
            .replace("Subject: Our", "Subject: Your");
        let results = verify(tampered.as_bytes(), &signer.dns_records()).await;
        assert!(matches!(results[..], [DkimResult::Fail(_)]), "{results:?}");
        // ... and so does adding a second copy of a present signed field
        // (a replayed message with another Subject or From on top).
        for added in ["Subject: Win a prize\r\n", "From: someone@else.test\r\n"] {
            let text = String::from_utf8(message.clone()).expect("ASCII");
            let at = text.find("\r\nSubject:").expect("a Subject") + 2;
            let replayed = format!("{}{added}{}", &text[..at], &text[at..]);
            let results = verify(replayed.as_bytes(), &signer.dns_records()).await;
            assert!(
                matches!(results[..], [DkimResult::Fail(_)]),
                "{added}: {results:?}"
            );
        }
        // Unsigned fields may change.
        let changed = String::from_utf8(message)
            .expect("ASCII")
            .replace("X-Not-Signed: yes", "X-Not-Signed: changed");
        let results = verify(changed.as_bytes(), &signer.dns_records()).await;
        assert_eq!(results, [DkimResult::Pass]);
    }
}

#[test]
fn signature_fields() {
    let keys = Keys::new();
    let signer = signer(&[keys.rsa("Acme.Test", "s1")]);
    let fields = signer
        .sign(MESSAGE.as_bytes())
        .expect("signs")
        .expect("applies");
    let text = String::from_utf8(fields).expect("ASCII");
    assert!(
        text.starts_with(
            "DKIM-Signature: v=1; a=rsa-sha256; s=s1; d=acme.test; c=relaxed/relaxed;"
        ),
        "{text}"
    );
    assert!(text.ends_with(";\r\n"), "{text}");
    // Folded: no line longer than 78 characters, continuation lines start with a tab.
    for (i, line) in text.trim_end().split("\r\n").enumerate() {
        assert!(line.len() <= 78, "{line}");
        assert_eq!(i > 0, line.starts_with('\t'), "{line}");
    }
    // h= lists the present fields bottom-up, then the absent ones, then the
    // present ones a second copy of must break (over-signing).
    let h = tag(&text, "h").expect("h=");
    assert_eq!(
        h,
        "Content-Type:MIME-Version:Message-ID:Date:Subject:To:From:\
         Reply-To:List-Unsubscribe:List-Unsubscribe-Post:\
         From:To:Subject:Date:Message-ID:Content-Type"
    );
    assert!(tag(&text, "t").is_some());
    assert!(tag(&text, "l").is_none() && tag(&text, "x").is_none());
}

#[tokio::test]
async fn pkcs1_rsa_key_is_the_same_key() {
    let keys = Keys::new();
    let pkcs8 = signer(&[keys.rsa("acme.test", "a")]);
    let pkcs1 = signer(&[keys.entry("acme.test", "a", "rsa1.pem", DkimAlgorithm::RsaSha256)]);
    assert_eq!(pkcs8.dns_records(), pkcs1.dns_records());
    let message = signed(&pkcs1, MESSAGE.as_bytes());
    assert_eq!(
        verify(&message, &pkcs8.dns_records()).await,
        [DkimResult::Pass]
    );
}

#[test]
fn dns_records_match_openssl() {
    let keys = Keys::new();
    let signer = signer(&[keys.ed("acme.test", "ed"), keys.rsa("acme.test", "rsa")]);
    assert_eq!(
        signer.dns_records(),
        [
            DkimDnsRecord {
                name: "ed._domainkey.acme.test".into(),
                text: format!("v=DKIM1; k=ed25519; p={ED25519_P}"),
            },
            DkimDnsRecord {
                name: "rsa._domainkey.acme.test".into(),
                text: format!("v=DKIM1; k=rsa; p={RSA_P}"),
            },
        ]
    );
}

#[test]
fn keys_by_from_domain() {
    let keys = Keys::new();
    let signer = signer(&[
        keys.ed("acme.test", "parent"),
        keys.ed("news.acme.test", "child"),
        keys.rsa("other.test", "o"),
    ]);
    let selector_for = |from: &str| {
        let message = MESSAGE.replace(
            "From: \"Acme News\" <news@acme.test>",
            &format!("From: {from}"),
        );
        signer
            .sign(message.as_bytes())
            .expect("signs")
            .map(|f| tag(&String::from_utf8(f).expect("ASCII"), "s"))
    };
    let s = |s: &str| Some(Some(s.to_owned()));
    assert_eq!(selector_for("a@acme.test"), s("parent"));
    assert_eq!(selector_for("A@ACME.TEST."), s("parent"));
    assert_eq!(selector_for("a@mail.acme.test"), s("parent"));
    assert_eq!(selector_for("a@news.acme.test"), s("child"));
    assert_eq!(selector_for("<a@x.y.news.acme.test>"), s("child"));
    assert_eq!(selector_for("a@other.test"), s("o"));
    // Not a subdomain: a suffix without the dot, a longer domain, another domain.
    assert_eq!(selector_for("a@notacme.test"), None);
    assert_eq!(selector_for("a@acme.test.example"), None);
    assert_eq!(selector_for("a@example.test"), None);
    // The address, not the display name, decides.
    assert_eq!(selector_for("\"a@acme.test\" <b@example.test>"), None);
    assert_eq!(selector_for("a@acme.test (b@example.test)"), s("parent"));
    assert_eq!(selector_for("undisclosed"), None);
    assert_eq!(selector_for("a@[192.0.2.1]"), None);
}

#[test]
fn no_from_no_signature() {
    let keys = Keys::new();
    let signer = signer(&[keys.ed("acme.test", "s")]);
    let message = MESSAGE.replace("From: ", "Sender: ");
    assert_eq!(signer.sign(message.as_bytes()).expect("ok"), None);
    assert_eq!(signer.sign(b"").expect("ok"), None);
    assert_eq!(signer.sign(b"\r\n\r\nbody only").expect("ok"), None);
    let empty = DkimSigner::from_config(&[]).expect("empty");
    assert!(empty.is_empty() && !signer.is_empty());
    assert_eq!(empty.sign(MESSAGE.as_bytes()).expect("ok"), None);
    let mut out = BytesMut::from(MESSAGE);
    assert!(!empty.sign_in_place(&mut out, false).expect("ok"));
    assert_eq!(out, MESSAGE.as_bytes());
}

#[tokio::test]
async fn dual_signing() {
    let keys = Keys::new();
    let signer = signer(&[keys.rsa("acme.test", "rsa"), keys.ed("acme.test", "ed")]);
    let message = signed(&signer, MESSAGE.as_bytes());
    let text = String::from_utf8_lossy(&message).into_owned();
    assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
    assert!(text.find("a=rsa-sha256") < text.find("a=ed25519-sha256"));
    assert_eq!(
        verify(&message, &signer.dns_records()).await,
        [DkimResult::Pass, DkimResult::Pass]
    );
    // One body hash for both keys.
    assert_eq!(signer.body_hash_stats(), (0, 1));
}

#[tokio::test]
async fn body_hash_is_cached_per_body() {
    let keys = Keys::new();
    let signer = signer(&[keys.ed("acme.test", "s")]);
    let records = signer.dns_records();
    for (i, to) in ["a@example.test", "b@example.test", "c@example.test"]
        .iter()
        .enumerate()
    {
        let message = MESSAGE.replace("jane@example.test", to);
        let message = signed(&signer, message.as_bytes());
        assert_eq!(verify(&message, &records).await, [DkimResult::Pass]);
        assert_eq!(signer.body_hash_stats(), (i as u64, 1));
    }
    let other = MESSAGE.replace("Hello Jane", "Hello John");
    let message = signed(&signer, other.as_bytes());
    assert_eq!(verify(&message, &records).await, [DkimResult::Pass]);
    assert_eq!(signer.body_hash_stats(), (2, 2));
    // Many other bodies push the first one out of the cache.
    for i in 0..BODY_HASH_CACHE_SLOTS {
        let body = format!("{MESSAGE}{i}\r\n");
        signed(&signer, body.as_bytes());
    }
    let (hits, misses) = signer.body_hash_stats();
    signed(&signer, MESSAGE.as_bytes());
    assert_eq!(signer.body_hash_stats(), (hits, misses + 1));
}

#[tokio::test]
async fn bare_line_ends_are_signed_as_crlf() {
    let keys = Keys::new();
    let signer = signer(&[keys.ed("acme.test", "s")]);
    let lf = MESSAGE.replace("\r\n", "\n").replace("out.", "out.\rX");
    let fields = signer.sign(lf.as_bytes()).expect("signs").expect("applies");
    let mut wire = BytesMut::new();
    normalize_crlf_into(lf.as_bytes(), &mut wire);
    let message = [fields.as_slice(), &wire].concat();
    assert_eq!(
        verify(&message, &signer.dns_records()).await,
        [DkimResult::Pass]
    );

    let mut out = BytesMut::from(lf.as_str());
    assert!(signer.sign_in_place(&mut out, false).expect("signs"));
    assert!(out.ends_with(&wire));
    assert_eq!(
        verify(&out, &signer.dns_records()).await,
        [DkimResult::Pass]
    );
}

#[tokio::test]
async fn sign_in_place_prepends() {
    let keys = Keys::new();
    let signer = signer(&[keys.rsa("acme.test", "s")]);
    let mut out = BytesMut::with_capacity(64 * 1024);
    out.extend_from_slice(MESSAGE.as_bytes());
    assert!(signer.sign_in_place(&mut out, false).expect("signs"));
    assert!(out.starts_with(b"DKIM-Signature: "));
    assert!(out.ends_with(MESSAGE.as_bytes()));
    assert_eq!(
        verify(&out, &signer.dns_records()).await,
        [DkimResult::Pass]
    );
    let other = MESSAGE.replace("news@acme.test", "news@example.test");
    let mut out = BytesMut::from(other.as_str());
    assert!(!signer.sign_in_place(&mut out, false).expect("ok"));
    assert_eq!(out, other.as_bytes());
}

#[tokio::test]
async fn odd_messages_still_verify() {
    let keys = Keys::new();
    let signer = signer(&[keys.ed("acme.test", "s")]);
    let records = signer.dns_records();
    for message in [
        // No body at all, and an empty body.
        "From: a@acme.test\r\nSubject: x\r\n".to_owned(),
        "From: a@acme.test\r\nSubject: x\r\n\r\n".to_owned(),
        // Body without a final line end; trailing empty lines; whitespace runs.
        "From: a@acme.test\r\n\r\nno end".to_owned(),
        "From: a@acme.test\r\n\r\n a \t b \r\n\r\n\r\n".to_owned(),
        // Folded and repeated fields, odd spacing around the colon.
        "From:a@acme.test\r\nTo: x,\r\n  y\r\nTo :  z\r\nSUBJECT:\tS\r\n\r\nb\r\n".to_owned(),
        // 8-bit header and body.
        "From: Zoë <a@acme.test>\r\nSubject: café\r\n\r\nÄ\r\n".to_owned(),
    ] {
        let signed = signed(&signer, message.as_bytes());
        assert_eq!(
            verify(&signed, &records).await,
            [DkimResult::Pass],
            "{message:?}"
        );
    }
}

#[tokio::test]
async fn no_fold_before_the_final_semicolon() {
    // A padding header name of every length moves the b= value across every
    // column; some end exactly at the end of a line (see Entry::sign).
    let keys = Keys::new();
    let mut folded_at_end = 0;
    for algorithm in [DkimAlgorithm::Ed25519Sha256, DkimAlgorithm::RsaSha256] {
        for pad in 0..80 {
            let mut entry = keys.entry("acme.test", "s", "ed.pem", algorithm);
            if algorithm == DkimAlgorithm::RsaSha256 {
                entry.key_file = keys.dir.path().join("rsa.pem");
            }
            entry.headers = vec!["From".into(), format!("X-{}", "p".repeat(pad))];
            let signer = signer(&[entry]);
            let message = signed(&signer, MESSAGE.as_bytes());
            let text = String::from_utf8_lossy(&message).into_owned();
            let field_end = text.find(";\r\nFrom:").expect("field end") + 3;
            let last_line = text[..field_end].rsplit("\r\n").nth(1).unwrap_or_default();
            assert!(!last_line.trim().starts_with(';'), "{text}");
            assert!(last_line.len() <= 78, "{last_line}");
            folded_at_end += usize::from(last_line.len() == 77);
            assert_eq!(
                verify(&message, &signer.dns_records()).await,
                [DkimResult::Pass]
            );
        }
    }
    // The offsets only depend on the header names (t= has 10 digits, bh= 44
    // characters), so this is deterministic: one of the 160 hits it.
    assert!(folded_at_end >= 1, "the sweep never hit the case");
}

#[test]
fn parsed_splits_fields_and_body() {
    let parsed = Parsed::new(b"A: 1\r\nB:  2\r\n 3\r\nno colon\r\nC:\r\n\r\nbody\r\n");
    assert_eq!(
        parsed.headers,
        [
            (&b"A"[..], &b" 1\r\n"[..]),
            (b"B", b"  2\r\n 3\r\n"),
            (b"C", b"\r\n"),
        ]
    );
    assert_eq!(parsed.body, b"body\r\n");
    let parsed = Parsed::new(b"A: 1\r\nB: 2");
    assert_eq!(parsed.headers, [(&b"A"[..], &b" 1\r\n"[..]), (b"B", b" 2")]);
    assert_eq!(parsed.body, b"");
}

#[test]
fn from_address_domain() {
    let cases: [(&str, Option<&str>); 12] = [
        (" a@acme.test\r\n", Some("acme.test")),
        (" Name <a@Acme.Test>\r\n", Some("acme.test")),
        (" \"Doe, Jane\" <jane@acme.test>\r\n", Some("acme.test")),
        (" \"x <y@z.test>\" <a@acme.test>", Some("acme.test")),
        (" =?utf-8?Q?a@b?= <a@acme.test>", Some("acme.test")),
        (" (comment @x.test) a@acme.test", Some("acme.test")),
        (" \"a@b\"@acme.test", Some("acme.test")),
        (" a@acme.test, b@other.test", Some("acme.test")),
        (" Name\r\n <a@acme.test>\r\n", Some("acme.test")),
        (" <>", None),
        (" a@", None),
        (" \"unterminated <a@acme.test>", None),
    ];
    for (value, expected) in cases {
        assert_eq!(
            address_domain(value.as_bytes()).as_deref(),
            expected,
            "{value:?}"
        );
    }
}

#[test]
fn key_errors_name_the_file() {
    let keys = Keys::new();
    let error = |entry: DkimConfig| match DkimSigner::from_config(&[entry]) {
        Ok(signer) => panic!("loaded {signer:?}"),
        Err(e) => e.to_string(),
    };
    let path = |name: &str| keys.dir.path().join(name).display().to_string();

    let message = error(keys.entry("acme.test", "s", "junk.pem", DkimAlgorithm::RsaSha256));
    assert_eq!(
        message,
        format!(
            "DKIM key file {}: no PEM private key in it: expected \"-----BEGIN PRIVATE KEY-----\" \
             (PKCS#8) or \"-----BEGIN RSA PRIVATE KEY-----\" (PKCS#1)",
            path("junk.pem")
        )
    );
    let message = error(keys.entry("acme.test", "s", "missing.pem", DkimAlgorithm::RsaSha256));
    assert!(
        message.starts_with(&format!(
            "cannot read DKIM key file {}: ",
            path("missing.pem")
        )),
        "{message}"
    );
    let message = error(keys.entry("acme.test", "s", "ed.pem", DkimAlgorithm::RsaSha256));
    assert!(
        message.starts_with(&format!("DKIM key file {}: ", path("ed.pem"))),
        "{message}"
    );
    assert!(
        message.contains("holds an Ed25519 key but the entry says algorithm = \"rsa-sha256\""),
        "{message}"
    );
    let message = error(keys.entry("acme.test", "s", "rsa.pem", DkimAlgorithm::Ed25519Sha256));
    assert!(
        message.contains("holds an RSA key but the entry says algorithm = \"ed25519\""),
        "{message}"
    );
    let message = error(keys.entry("acme.test", "s", "rsa1.pem", DkimAlgorithm::Ed25519Sha256));
    assert!(message.contains("holds an RSA key (PKCS#1)"), "{message}");
    let message = error(keys.entry("acme.test", "s", "ec.pem", DkimAlgorithm::Ed25519Sha256));
    assert!(message.contains("EC (SEC1) key"), "{message}");

    let duplicate =
        DkimSigner::from_config(&[keys.ed("acme.test", "s"), keys.rsa("acme.test", "s")]);
    assert_eq!(
        duplicate.map(|_| ()).map_err(|e| e.to_string()),
        Err("[[dkim]] domain \"acme.test\" with selector \"s\" is configured twice".into())
    );
}

#[test]
fn debug_shows_no_key_material() {
    let keys = Keys::new();
    let signer = signer(&[keys.ed("acme.test", "s")]);
    let debug = format!("{signer:?}");
    assert!(
        debug.starts_with("[s._domainkey.acme.test ed25519-sha256 "),
        "{debug}"
    );
}

/// A ~5 KB marketing message.
fn five_kb_message() -> Vec<u8> {
    let mut message = MESSAGE
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned();
    message.push_str("\r\n\r\n");
    let line = "Our spring catalogue is out: 120 new products, free shipping over 50 EUR.\r\n";
    while message.len() < 5 * 1024 {
        message.push_str(line);
    }
    message.into_bytes()
}

/// Per-message signing cost. Run with
/// `cargo test --release -p volley-engine --lib dkim::tests::timing -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release with --nocapture"]
fn timing() {
    let keys = Keys::new();
    let message = five_kb_message();
    let per = |n: u32, f: &mut dyn FnMut(u32)| {
        let start = Instant::now();
        for i in 0..n {
            f(i);
        }
        start.elapsed() / n
    };
    println!("message: {} bytes", message.len());
    let hash = per(20_000, &mut |_| {
        std::hint::black_box(body_hash(std::hint::black_box(&message)));
    });
    let xxh = per(20_000, &mut |_| {
        std::hint::black_box(xxhash_rust::xxh3::xxh3_128(std::hint::black_box(&message)));
    });
    println!("relaxed body hash (SHA-256): {hash:?}; XXH3-128 cache key: {xxh:?}");
    for (name, entry, n) in [
        ("ed25519", keys.ed("acme.test", "s"), 5_000),
        ("rsa-2048", keys.rsa("acme.test", "s"), 500),
    ] {
        let signer = signer(&[entry]);
        // Same body every time: the body hash comes from the cache.
        let cached = per(n, &mut |_| {
            std::hint::black_box(signer.sign(&message).ok());
        });
        // A different body every time: every message hashes its body.
        let mut varied = message.clone();
        let at = varied.len() - 4;
        let uncached = per(n, &mut |i| {
            varied[at..at + 2].copy_from_slice(&(i as u16).to_le_bytes().map(|b| b'a' + b % 26));
            std::hint::black_box(signer.sign(&varied).ok());
        });
        let mut buffer = BytesMut::with_capacity(64 * 1024);
        let in_place = per(n, &mut |_| {
            buffer.clear();
            buffer.extend_from_slice(&message);
            std::hint::black_box(signer.sign_in_place(&mut buffer, true).ok());
        });
        println!(
            "{name}: sign {cached:?} (body hash cached), {uncached:?} (body hashed), \
             sign_in_place {in_place:?}; cache {:?}",
            signer.body_hash_stats()
        );
    }
    let fields = vec![b'x'; 600];
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let rotate = per(100_000, &mut |_| {
        buffer.clear();
        buffer.extend_from_slice(&message);
        buffer.extend_from_slice(&fields);
        buffer.rotate_right(fields.len());
        std::hint::black_box(&buffer);
    });
    let memmove = per(100_000, &mut |_| {
        buffer.clear();
        buffer.extend_from_slice(&message);
        let len = buffer.len();
        buffer.resize(len + fields.len(), 0);
        buffer.copy_within(..len, fields.len());
        buffer[..fields.len()].copy_from_slice(&fields);
        std::hint::black_box(&buffer);
    });
    let copy = per(100_000, &mut |_| {
        buffer.clear();
        buffer.extend_from_slice(&message);
        std::hint::black_box(&buffer);
    });
    let fresh = per(100_000, &mut |_| {
        let mut fresh = BytesMut::with_capacity(message.len() + fields.len());
        fresh.extend_from_slice(&fields);
        fresh.extend_from_slice(&message);
        std::hint::black_box(&fresh);
    });
    println!(
        "prepend 600 B to 5 KB, each incl. a refill of {copy:?}: rotate_right {rotate:?}, \
         memmove (what sign_in_place does) {memmove:?}; copy into a new buffer {fresh:?}"
    );
    // Where an Ed25519 signature's time goes.
    let ed = signer(&[keys.ed("acme.test", "s")]);
    let entry = &ed.entries[0];
    let raw = per(5_000, &mut |_| {
        std::hint::black_box(entry.key.sign(&b"x"[..]).ok());
    });
    let parse = per(20_000, &mut |_| {
        let parsed = Parsed::new(std::hint::black_box(&message));
        std::hint::black_box(parsed.author_domain());
        std::hint::black_box(entry.template.canonicalize(parsed.replay()).2);
    });
    let scan = per(20_000, &mut |_| {
        std::hint::black_box(normalized_len(std::hint::black_box(&message)));
    });
    println!("ed25519 key alone {raw:?}; parse + From + select headers {parse:?}; line-end scan {scan:?}");
}

proptest::proptest! {
    /// The shortcut for bodies already in relaxed canonical form gives the same
    /// `bh=` as the general canonicalizer, whatever the body.
    #[test]
    fn body_hash_shortcut_matches_the_canonicalizer(
        lines in proptest::collection::vec("[ab. \t=]{0,12}", 0..8),
        end in 0usize..3,
    ) {
        let mut body = lines.join("\r\n").into_bytes();
        body.extend(std::iter::repeat_n(b"\r\n".as_slice(), end).flatten());
        let want = HashAlgorithm::Sha256.hash(Canonicalization::Relaxed.canonical_body(&body, 0));
        proptest::prop_assert_eq!(&body_hash(&body)[..], want.as_ref());
    }
}

#[test]
fn quoted_printable_bodies_take_the_shortcut() {
    let body = b"--=_a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Zo=C3=AB,=\r\n we have=20\r\nnews.\r\n--=_a--\r\n";
    assert!(is_relaxed_canonical(body));
    for not in [
        &b"a  b\r\n"[..],
        b"a \r\n",
        b"a\tb\r\n",
        b"a\r\n\r\n",
        b"\r\n",
        b"a",
        b"",
    ] {
        assert!(
            !is_relaxed_canonical(not),
            "{:?}",
            String::from_utf8_lossy(not)
        );
    }
}
