//! DKIM signatures made by [`DkimSigner`] checked by an independent verifier:
//! dkimpy (Debian `python3-dkim`, run with `/usr/bin/python3`), with keys made by
//! the `openssl` CLI and the public keys derived by openssl too.
//!
//! The TXT records reach dkimpy two ways: through its `dnsfunc` callback, and over
//! real DNS from a throw-away dnsmasq (dkimpy's own lookup, dnspython pointed at
//! the dnsmasq port). The RSA-2048 record is ~400 bytes: dnsmasq splits a long
//! `txt-record` into 255-byte character-strings by itself (checked below), and
//! verifiers join them. `mail-auth`'s verifier is also run over the same DNS.

#[path = "support/dnsmasq.rs"]
mod dnsmasq;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dnsmasq::{DnsMasq, Record};
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters};
use tempfile::TempDir;
use volley_conf::{DkimAlgorithm, DkimConfig};
use volley_engine::dkim::{DkimError, DkimSigner};

const PYTHON: &str = "/usr/bin/python3";

/// The verifier. `callback MSG... -- NAME TXTFILE...`: dkimpy with a dnsfunc that
/// answers from the given files. `dns PORT MSG...`: dkimpy's own DNS lookup via
/// dnspython, pointed at 127.0.0.1:PORT. `txt PORT NAME`: the lengths of the
/// character-strings of NAME's TXT record. For each message, one line with one
/// word per DKIM-Signature field ("pass" or "fail"), or "none". A verification
/// that raises (body hash mismatch, bad record) is a "fail", as in `dkim.verify`.
const VERIFIER: &str = r#"
import logging, sys
import dkim, dkim.dnsplug, dns.resolver

logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)
mode, args = sys.argv[1], sys.argv[2:]

def resolver(port):
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = int(port)
    r.lifetime = 5
    return r

if mode == "txt":
    answer = resolver(args[0]).resolve(args[1], "TXT")
    print(" ".join(str(len(s)) for rdata in answer for s in rdata.strings))
    sys.exit(0)

if mode == "callback":
    split = args.index("--")
    messages, pairs = args[:split], args[split + 1:]
    records = {}
    for name, path in zip(pairs[0::2], pairs[1::2]):
        with open(path, "rb") as f:
            records[name.encode()] = f.read()
    def dnsfunc(name, timeout=5):
        return records.get(name.rstrip(b"."))
else:
    dns.resolver.default_resolver = resolver(args[0])
    messages = args[1:]
    dnsfunc = dkim.dnsplug.get_txt

for path in messages:
    with open(path, "rb") as f:
        message = f.read()
    d = dkim.DKIM(message, logger=logging.getLogger("dkim"), minkey=1024)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    words = []
    for i in range(count):
        try:
            words.append("pass" if d.verify(idx=i, dnsfunc=dnsfunc) else "fail")
        except dkim.DKIMException as e:  # e.g. "body hash mismatch", as dkim.verify does
            logging.getLogger("dkim").error("signature %d: %s", i, e)
            words.append("fail")
    print(" ".join(words) or "none")
"#;

/// Keys, messages and the verifier script in a temporary directory.
struct Lab {
    dir: TempDir,
    messages: usize,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("verify.py"), VERIFIER).expect("write verifier");
        Lab { dir, messages: 0 }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Generates a key with openssl; returns its file and the TXT record text
    /// derived by openssl.
    fn key(&self, name: &str, algorithm: DkimAlgorithm) -> (PathBuf, String) {
        let file = self.path(name);
        let file_arg = file.to_str().expect("UTF-8 temp path");
        match algorithm {
            DkimAlgorithm::Ed25519Sha256 => run(
                "openssl",
                &["genpkey", "-algorithm", "ed25519", "-out", file_arg],
            ),
            DkimAlgorithm::RsaSha256 => run(
                "openssl",
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    file_arg,
                ],
            ),
        };
        let spki = run(
            "openssl",
            &["pkey", "-in", file_arg, "-pubout", "-outform", "DER"],
        );
        let text = match algorithm {
            // The SubjectPublicKeyInfo ends with the raw 32-byte key (RFC 8410).
            DkimAlgorithm::Ed25519Sha256 => {
                format!("v=DKIM1; k=ed25519; p={}", base64(&spki[spki.len() - 32..]))
            }
            DkimAlgorithm::RsaSha256 => format!("v=DKIM1; k=rsa; p={}", base64(&spki)),
        };
        (file, text)
    }

    /// Writes a message file for the verifier.
    fn message(&mut self, bytes: &[u8]) -> String {
        self.messages += 1;
        let path = self.path(&format!("message-{}.eml", self.messages));
        std::fs::write(&path, bytes).expect("write message");
        path.to_str().expect("UTF-8 temp path").to_owned()
    }

    /// dkimpy's verdicts, keys from `records` (name, text) through its dnsfunc.
    fn verify_callback(&mut self, messages: &[&[u8]], records: &[(&str, &str)]) -> Vec<String> {
        let mut args = vec!["callback".to_owned()];
        for message in messages {
            args.push(self.message(message));
        }
        args.push("--".to_owned());
        for (i, (name, text)) in records.iter().enumerate() {
            let path = self.path(&format!("record-{i}.txt"));
            std::fs::write(&path, text).expect("write record");
            args.push((*name).to_owned());
            args.push(path.to_str().expect("UTF-8 temp path").to_owned());
        }
        self.python(&args)
    }

    /// dkimpy's verdicts, keys looked up over DNS at 127.0.0.1:`port`.
    fn verify_dns(&mut self, messages: &[&[u8]], port: u16) -> Vec<String> {
        let mut args = vec!["dns".to_owned(), port.to_string()];
        for message in messages {
            args.push(self.message(message));
        }
        self.python(&args)
    }

    fn python(&self, args: &[String]) -> Vec<String> {
        let script = self.path("verify.py");
        let mut all = vec![script.to_str().expect("UTF-8 temp path")];
        all.extend(args.iter().map(String::as_str));
        let output = Command::new(PYTHON)
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {PYTHON}: {e} (scripts/test.sh installs python3-dkim)")
            });
        // dkimpy's debug log: shown by the test harness when the test fails.
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success(),
            "verifier failed: {}",
            output.status
        );
        String::from_utf8(output.stdout)
            .expect("UTF-8 output")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Runs a program, failing the test with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (scripts/test.sh installs openssl and python3-dkim)")
        });
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn base64(bytes: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["base64", "-A"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl base64");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let output = child.wait_with_output().expect("openssl base64");
    String::from_utf8(output.stdout)
        .expect("base64")
        .trim()
        .to_owned()
}

fn entry(domain: &str, selector: &str, key_file: &Path, algorithm: DkimAlgorithm) -> DkimConfig {
    DkimConfig {
        domain: domain.to_owned(),
        selector: selector.to_owned(),
        key_file: key_file.to_path_buf(),
        algorithm,
        headers: DkimConfig::DEFAULT_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .collect(),
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

/// A campaign message, rendered for one recipient, ~5 KB.
fn campaign_message(from: &str, to: &str) -> Vec<u8> {
    let mut message = format!(
        "From: \"Acme News\" <{from}>\r\n\
         To: <{to}>\r\n\
         Subject: Our spring\r\n\t catalogue  is out\r\n\
         Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\
         Message-ID: <c1.{to}@acme.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         List-Unsubscribe: <https://acme.test/u?r={to}>\r\n\
         List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
         \r\n\
         Hello,  \r\n\r\n"
    );
    while message.len() < 5000 {
        message.push_str("Spring catalogue:\t120 new products,  free shipping over 50 EUR. \r\n");
    }
    message.push_str("\r\n\r\n");
    message.into_bytes()
}

/// Messages that stress relaxed canonicalization, all From acme.test.
fn odd_messages() -> Vec<Vec<u8>> {
    [
        "From: a@acme.test\r\nSubject: no body\r\n",
        "From: a@acme.test\r\nSubject: empty body\r\n\r\n",
        "From: a@acme.test\r\n\r\nno final line end",
        "From:a@acme.test\r\nTo: x@example.test,\r\n  y@example.test\r\nTo:   z@example.test\r\n\
         SUBJECT:\tMixed   case\t\r\n\r\n a \t b \r\n\r\n\r\n",
        "From: =?utf-8?q?Zo=C3=AB?= <a@news.acme.test>\r\nSubject: caf\u{e9}\r\n\r\n\u{c4}rger \r\n",
    ]
    .iter()
    .map(|m| m.as_bytes().to_vec())
    .collect()
}

#[test]
fn ed25519_and_rsa_verify_with_dkimpy() {
    let mut lab = Lab::new();
    for (algorithm, selector) in [
        (DkimAlgorithm::Ed25519Sha256, "ed"),
        (DkimAlgorithm::RsaSha256, "rsa"),
    ] {
        let (file, text) = lab.key(&format!("{selector}.pem"), algorithm);
        let signer = signer(&[entry("acme.test", selector, &file, algorithm)]);
        // The signer derives the same record as openssl.
        let records = signer.dns_records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].text, text);
        let name = format!("{selector}._domainkey.acme.test");
        assert_eq!(records[0].name, name);

        let message = signed(
            &signer,
            &campaign_message("news@acme.test", "jane@example.test"),
        );
        // The body altered after signing.
        let mut altered = message.clone();
        let at = altered.len() - 30;
        altered[at] ^= 0x01;
        // A signed header field altered.
        let retitled = String::from_utf8(message.clone())
            .expect("ASCII")
            .replace("Subject: Our", "Subject: Your")
            .into_bytes();
        let odd: Vec<Vec<u8>> = odd_messages().iter().map(|m| signed(&signer, m)).collect();
        let mut all: Vec<&[u8]> = vec![&message, &altered, &retitled];
        all.extend(odd.iter().map(Vec::as_slice));
        let verdicts = lab.verify_callback(&all, &[(&name, &text)]);
        let mut expected = vec!["pass", "fail", "fail"];
        expected.extend(odd.iter().map(|_| "pass"));
        assert_eq!(verdicts, expected, "{algorithm:?}");
    }
}

/// The b= value ends at every column in turn (a padding header name of every
/// length shifts it): dkimpy verifies each. mail-auth 0.13 alone would put a fold
/// between a b= value that fills its line and the final ";", which dkimpy
/// rejects; `DkimSigner` removes that fold.
#[test]
fn every_fold_position_verifies_with_dkimpy() {
    let mut lab = Lab::new();
    let (ed_file, ed_text) = lab.key("ed.pem", DkimAlgorithm::Ed25519Sha256);
    let (rsa_file, rsa_text) = lab.key("rsa.pem", DkimAlgorithm::RsaSha256);
    let mut messages = Vec::new();
    for (file, algorithm, selector) in [
        (&ed_file, DkimAlgorithm::Ed25519Sha256, "ed"),
        (&rsa_file, DkimAlgorithm::RsaSha256, "rsa"),
    ] {
        for pad in 0..80 {
            let mut entry = entry("acme.test", selector, file, algorithm);
            entry.headers = vec!["From".into(), "To".into(), format!("X-{}", "p".repeat(pad))];
            let signer = signer(&[entry]);
            messages.push(signed(
                &signer,
                b"From: a@acme.test\r\nTo: b@example.test\r\n\r\nHi\r\n",
            ));
        }
    }
    let all: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let verdicts = lab.verify_callback(
        &all,
        &[
            ("ed._domainkey.acme.test", &ed_text),
            ("rsa._domainkey.acme.test", &rsa_text),
        ],
    );
    assert_eq!(verdicts, vec!["pass"; all.len()]);
}

#[test]
fn dual_signing_verifies_with_dkimpy() {
    let mut lab = Lab::new();
    let (ed_file, ed_text) = lab.key("ed.pem", DkimAlgorithm::Ed25519Sha256);
    let (rsa_file, rsa_text) = lab.key("rsa.pem", DkimAlgorithm::RsaSha256);
    let signer = signer(&[
        entry("acme.test", "rsa", &rsa_file, DkimAlgorithm::RsaSha256),
        entry("acme.test", "ed", &ed_file, DkimAlgorithm::Ed25519Sha256),
    ]);
    // Same body for three recipients: the body is hashed once.
    let messages: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .map(|r| {
            signed(
                &signer,
                &campaign_message("news@acme.test", &format!("{r}@example.test")),
            )
        })
        .collect();
    assert_eq!(signer.body_hash_stats(), (2, 1));
    let all: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let verdicts = lab.verify_callback(
        &all,
        &[
            ("rsa._domainkey.acme.test", &rsa_text),
            ("ed._domainkey.acme.test", &ed_text),
        ],
    );
    assert_eq!(verdicts, ["pass pass"; 3]);
}

#[tokio::test]
async fn verified_over_dns_from_dnsmasq() {
    let mut lab = Lab::new();
    let (ed_file, ed_text) = lab.key("ed.pem", DkimAlgorithm::Ed25519Sha256);
    let (rsa_file, rsa_text) = lab.key("rsa.pem", DkimAlgorithm::RsaSha256);
    let dns = DnsMasq::start(&[
        Record::txt("ed._domainkey.acme.test", &ed_text),
        Record::txt("rsa._domainkey.acme.test", &rsa_text),
    ]);
    let port = dns.addr.port();

    // dnsmasq splits the ~400-byte RSA record into 255-byte strings.
    let lengths = lab.python(&[
        "txt".into(),
        port.to_string(),
        "rsa._domainkey.acme.test".into(),
    ]);
    assert_eq!(
        lengths,
        [format!("255 {}", rsa_text.len() - 255)],
        "{rsa_text}"
    );

    let ed = signer(&[entry(
        "acme.test",
        "ed",
        &ed_file,
        DkimAlgorithm::Ed25519Sha256,
    )]);
    let rsa = signer(&[entry(
        "acme.test",
        "rsa",
        &rsa_file,
        DkimAlgorithm::RsaSha256,
    )]);
    let message = campaign_message("news@mail.acme.test", "jane@example.test");
    let by_ed = signed(&ed, &message);
    let by_rsa = signed(&rsa, &message);
    let mut altered = by_rsa.clone();
    let at = altered.len() - 30;
    altered[at] ^= 0x01;
    let verdicts = lab.verify_dns(&[&by_ed, &by_rsa, &altered], port);
    assert_eq!(verdicts, ["pass", "pass", "fail"]);
    assert!(
        dns.queries("TXT", "rsa._domainkey.acme.test") >= 2,
        "{}",
        dns.log()
    );

    // mail-auth's verifier, over the same DNS.
    let results = [
        verify_with_mail_auth(&by_ed, dns.addr).await,
        verify_with_mail_auth(&by_rsa, dns.addr).await,
    ];
    assert_eq!(results, [[DkimResult::Pass], [DkimResult::Pass]]);
}

async fn verify_with_mail_auth(message: &[u8], server: SocketAddr) -> Vec<DkimResult> {
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        server.ip(),
        true,
        vec![udp, tcp],
    )]);
    let authenticator =
        MessageAuthenticator::new(config, ResolverOpts::default()).expect("resolver");
    let parsed = AuthenticatedMessage::parse(message).expect("message parses");
    authenticator
        .verify_dkim(Parameters::new(&parsed))
        .await
        .iter()
        .map(|output| output.result().clone())
        .collect()
}

#[test]
fn message_from_a_domain_without_key_is_not_signed() {
    let lab = Lab::new();
    let (file, _) = lab.key("ed.pem", DkimAlgorithm::Ed25519Sha256);
    let signer = signer(&[entry(
        "acme.test",
        "ed",
        &file,
        DkimAlgorithm::Ed25519Sha256,
    )]);
    for from in [
        "news@example.test",
        "news@notacme.test",
        "news@acme.test.example",
    ] {
        let message = campaign_message(from, "jane@example.test");
        assert_eq!(signer.sign(&message).expect("no error"), None, "{from}");
        let mut buffer = bytes::BytesMut::from(&message[..]);
        assert!(!signer.sign_in_place(&mut buffer, true).expect("no error"));
        assert_eq!(buffer, message);
    }
}

#[test]
fn bad_key_files_are_named() {
    let lab = Lab::new();
    let not_pem = lab.path("not-a-key.pem");
    std::fs::write(&not_pem, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI acme\n").expect("write");
    let error = |file: &Path, algorithm| match DkimSigner::from_config(&[entry(
        "acme.test",
        "s",
        file,
        algorithm,
    )]) {
        Ok(signer) => panic!("loaded {signer:?}"),
        Err(e) => e,
    };
    let err = error(&not_pem, DkimAlgorithm::RsaSha256);
    assert!(matches!(err, DkimError::Key { ref path, .. } if path == &not_pem));
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("DKIM key file {}: ", not_pem.display())),
        "{message}"
    );
    assert!(message.contains("no PEM private key"), "{message}");

    // An RSA key that is too small for ring (and for receivers).
    let small = lab.path("rsa1024.pem");
    let small_arg = small.to_str().expect("UTF-8 temp path");
    run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            small_arg,
        ],
    );
    let message = error(&small, DkimAlgorithm::RsaSha256).to_string();
    assert!(
        message.starts_with(&format!("DKIM key file {}: ", small.display())),
        "{message}"
    );
    assert!(message.contains("2048 to 8192 bits"), "{message}");

    let missing = lab.path("missing.pem");
    let message = error(&missing, DkimAlgorithm::Ed25519Sha256).to_string();
    assert!(
        message.starts_with(&format!(
            "cannot read DKIM key file {}: ",
            missing.display()
        )),
        "{message}"
    );
}
