//! What comes back, end to end: `volley send` sends a campaign with VERP return
//! paths to a real receiver; `volley run` with an inbound listener takes what
//! comes back — real DSNs from a private Postfix for its unknown users, an ARF
//! report and an `unsubscribe` reply sent with swaks — into the delivery log and
//! the suppression list; a forged VERP token is refused at RCPT.
//!
//! Skipped (with a message) when swaks, smtp-sink or Postfix (root) is missing:
//! `scripts/test.sh` installs them.

mod common;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{stderr, stdout, volley_run, volley_with};
use support::port::{free_port, poll, wait_bound};
use support::postfix::{Postfix, PostfixOptions, POSTFIX};
use support::process::{run_bounded, ChildGuard};
use support::smtp_sink::{SinkOptions, SmtpSink, SMTP_SINK};
use volley_queue::{BatchView, Spool};

const BOUNCE_DOMAIN: &str = "bounce.volley.test";

/// A directory with volley.toml (spool, log, every domain routed to `via`,
/// `[bounce] domain`, an inbound listener on 127.0.0.`listen_ip`, `acme.test`
/// local) and a campaign from news@acme.test.
struct Setup {
    dir: tempfile::TempDir,
    listen: SocketAddrV4,
}

impl Setup {
    fn new(via: SocketAddr, listen_ip: u8) -> Setup {
        let ip = Ipv4Addr::new(127, 0, 0, listen_ip);
        Setup::listening_on(via, SocketAddrV4::new(ip, free_port(ip)))
    }

    fn listening_on(via: SocketAddr, listen: SocketAddrV4) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[control]\nlisten = \"\"\n[spool]\ndir = \"{spool}\"\n[delivery]\nhelo_name = \"volley.test\"\nlog = \"{log}\"\n\
             [retry]\nintervals = [\"1s\"]\n[[route]]\ndomain = \"*\"\nvia = \"{via}\"\n\
             [server]\nhostname = \"mx.volley.test\"\n[relay]\ndomains = [\"acme.test\"]\n\
             [bounce]\ndomain = \"{BOUNCE_DOMAIN}\"\n\
             [[listen]]\naddress = \"{listen}\"\nrole = \"inbound\"\ntls = \"none\"\n",
            spool = dir.path().join("spool").display(),
            log = dir.path().join("delivery.jsonl").display(),
        );
        std::fs::write(dir.path().join("volley.toml"), config).unwrap();
        std::fs::write(
            dir.path().join("campaign.toml"),
            "from = \"Acme News <news@acme.test>\"\nsubject = \"Hello {{ name }}\"\ntext = \"Hi {{ name }}\"\n",
        )
        .unwrap();
        Setup { dir, listen }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn volley(&self, args: &[&str]) -> Output {
        volley_with(&self.path("volley.toml"), args)
    }

    /// `volley send --wait` of `emails`; returns the report.
    fn send(&self, emails: &[&str], report: &str) -> serde_json::Value {
        let mut csv = String::from("email,name\n");
        for (i, e) in emails.iter().enumerate() {
            csv.push_str(&format!("{e},N{i}\n"));
        }
        std::fs::write(self.path("list.csv"), csv).unwrap();
        let (template, list, report) = (
            self.arg("campaign.toml"),
            self.arg("list.csv"),
            self.arg(report),
        );
        let out = self.volley(&[
            "send",
            "--template",
            &template,
            "--recipients",
            &list,
            "--report",
            &report,
            "--wait",
        ]);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
    }

    /// Starts `volley run` and waits until its listener is bound.
    fn daemon(&self) -> ChildGuard {
        let cmd = volley_run(&self.arg("volley.toml"));
        let child = ChildGuard::spawn("volley-run", cmd, self.dir.path()).unwrap();
        wait_bound(self.listen, Duration::from_secs(20), || child.check_alive())
            .unwrap_or_else(|e| panic!("volley run did not listen: {e}"));
        child
    }

    /// swaks sends the file `data` from `from` to `to` through the inbound
    /// listener; returns its exit success and transcript.
    fn swaks(&self, from: &str, to: &str, data: &Path) -> (bool, String) {
        let server = self.listen.to_string();
        let data = format!("@{}", data.display());
        let mut cmd = Command::new("swaks");
        cmd.args([
            "--server",
            &server,
            "--helo",
            "mx.example.test",
            "--from",
            from,
            "--to",
            to,
            "--data",
            &data,
        ]);
        let out = run_bounded(&mut cmd, b"", Duration::from_secs(30)).unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("delivery.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Polls the delivery log until it has `n` lines of `status`.
    fn wait_for_status(
        &self,
        status: &str,
        n: usize,
        why: &dyn Fn() -> String,
    ) -> Vec<serde_json::Value> {
        poll(Duration::from_secs(60), || {
            let lines: Vec<_> = self
                .log()
                .into_iter()
                .filter(|l| l["status"] == status)
                .collect();
            (lines.len() >= n).then_some(lines)
        })
        .unwrap_or_else(|| {
            panic!(
                "fewer than {n} {status} lines in the delivery log:\n{:#?}\n{}",
                self.log(),
                why()
            )
        })
    }

    /// `volley suppress list --json`: (address, domain, reason) sorted.
    fn suppressions(&self) -> Vec<(String, String, String)> {
        let out = self.volley(&["suppress", "list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let mut rows: Vec<(String, String, String)> = stdout(&out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                (s("address"), s("domain"), s("reason"))
            })
            .collect();
        rows.sort();
        rows
    }

    /// The address at (campaign, batch, index) in the spool's batch files.
    fn batch_recipient(&self, line: &serde_json::Value) -> String {
        let (campaign, batch, index) = (
            line["campaign"].as_u64().unwrap(),
            line["batch"].as_u64().unwrap(),
            line["index"].as_u64().unwrap() as usize,
        );
        let name = Spool::file_name(campaign, batch);
        let bytes = ["active", "done"]
            .iter()
            .find_map(|d| std::fs::read(self.path("spool").join(d).join(&name)).ok())
            .unwrap_or_else(|| panic!("no batch {name}"));
        let view = BatchView::parse(&bytes).unwrap();
        view.recipient(index).unwrap().address()
    }
}

fn have(binary: &str) -> bool {
    if binary.starts_with('/') {
        return Path::new(binary).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

/// Whether the peers of `test` are here; says why it is skipped when not.
fn peers(test: &str, needed: &[&str], postfix: bool) -> bool {
    for binary in needed {
        if !have(binary) {
            support::skip(
                test,
                &format!("{binary} is not installed (scripts/test.sh installs it)"),
            );
            return false;
        }
    }
    if postfix && !Postfix::available() {
        support::skip(test, &format!("a private Postfix needs root and {POSTFIX}"));
        return false;
    }
    true
}

/// A VERP return path of ours: `b-` and 48 base32 characters at the bounce domain.
fn is_verp(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let token = local.strip_prefix("b-").unwrap_or_default();
    domain == BOUNCE_DOMAIN
        && token.len() == 48
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

/// A campaign to `emails` through a real smtp-sink; returns the setup, the sink
/// and each recipient's VERP return path as the sink received it.
fn sent_through_sink(sink_ip: u8, emails: &[&str]) -> (Setup, SmtpSink, Vec<(String, String)>) {
    let sink = SmtpSink::start(Ipv4Addr::new(127, 0, 0, sink_ip), SinkOptions::plain());
    let s = Setup::new(sink.addr(), sink_ip + 1);
    let report = s.send(emails, "report.json");
    assert_eq!(report["delivered"], emails.len(), "{report}");
    let messages = sink
        .wait_for_messages(emails.len(), Duration::from_secs(20))
        .unwrap();
    let mut paths: Vec<(String, String)> = messages
        .iter()
        .map(|m| (m.rcpt_tos()[0].to_owned(), m.mail_from().to_owned()))
        .collect();
    paths.sort();
    for (rcpt, from) in &paths {
        assert!(is_verp(from), "MAIL FROM of {rcpt}: {from}");
    }
    let mut distinct: Vec<&String> = paths.iter().map(|p| &p.1).collect();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        emails.len(),
        "one return path per recipient"
    );
    (s, sink, paths)
}

fn verp_of<'a>(paths: &'a [(String, String)], rcpt: &str) -> &'a str {
    &paths.iter().find(|p| p.0 == rcpt).unwrap().1
}

#[test]
fn postfix_bounces_for_unknown_users_are_logged_and_suppressed() {
    if !peers(
        "postfix_bounces_for_unknown_users_are_logged_and_suppressed",
        &["swaks"],
        true,
    ) {
        return;
    }
    let ip = Ipv4Addr::new(127, 0, 0, 91);
    let listen_port = free_port(ip);
    // Postfix takes every recipient of pf.test at RCPT, delivers alice and bob,
    // bounces the others ("unknown user", 5.1.1) to the VERP return path, and
    // relays those DSNs to volley's inbound listener, retrying every second.
    let postfix = Postfix::start(
        Ipv4Addr::new(127, 0, 0, 90),
        PostfixOptions {
            hostname: Some("mx.pf.test".into()),
            main_cf: vec![
                "virtual_mailbox_domains = pf.test".into(),
                "virtual_mailbox_maps = inline:{ alice@pf.test=inbox/, bob@pf.test=inbox/ }".into(),
                "smtpd_reject_unlisted_recipient = no".into(),
                format!("transport_maps = inline:{{ {BOUNCE_DOMAIN}=smtp:[{ip}]:{listen_port} }}"),
                "queue_run_delay = 1s".into(),
                "minimal_backoff_time = 1s".into(),
                "maximal_backoff_time = 1s".into(),
            ],
            ..PostfixOptions::default()
        },
    );
    let s = Setup::listening_on(postfix.addr(), SocketAddrV4::new(ip, listen_port));

    let emails = [
        "alice@pf.test",
        "ghost1@pf.test",
        "bob@pf.test",
        "ghost2@pf.test",
    ];
    let report = s.send(&emails, "first.json");
    assert_eq!(report["delivered"], 4, "{report}");
    let campaign = report["campaign"].as_u64().unwrap();
    // What Postfix received: the VERP return path as MAIL FROM.
    let delivered = postfix
        .wait_for_delivered(2, Duration::from_secs(30))
        .unwrap();
    for d in &delivered {
        let text = d.text();
        let return_path = text
            .lines()
            .find_map(|l| l.strip_prefix("Return-Path: <"))
            .and_then(|l| l.strip_suffix('>'))
            .unwrap_or_default();
        assert!(is_verp(return_path), "{text}");
    }

    let daemon = s.daemon();
    // Hurry Postfix's deferred DSNs (volley was not listening yet).
    let etc = postfix.dir().join("etc");
    let _ = run_bounded(
        Command::new(POSTFIX).arg("-c").arg(&etc).arg("flush"),
        b"",
        Duration::from_secs(30),
    );
    let why = || {
        format!(
            "postfix log:\n{}\nvolley run:\n{}",
            postfix.log(),
            daemon.stderr_text()
        )
    };
    let lines = s.wait_for_status("bounced_async", 2, &why);
    let mut bounced: Vec<String> = Vec::new();
    for line in &lines {
        assert_eq!(line["class"], "hard", "{line}");
        assert_eq!(line["enhanced"], "5.1.1", "{line}");
        assert_eq!(line["campaign"], campaign, "{line}");
        let recipient = line["recipient"].as_str().unwrap().to_owned();
        assert_eq!(s.batch_recipient(line), recipient, "{line}");
        bounced.push(recipient);
    }
    bounced.sort();
    assert_eq!(bounced, ["ghost1@pf.test", "ghost2@pf.test"], "{}", why());
    // The DSNs themselves are kept in inbound/.
    let kept = std::fs::read_dir(s.path("spool/inbound")).unwrap().count();
    assert_eq!(kept, 2);
    assert_eq!(
        s.suppressions(),
        [
            (
                "ghost1@pf.test".into(),
                "acme.test".into(),
                "hard_bounce".into()
            ),
            (
                "ghost2@pf.test".into(),
                "acme.test".into(),
                "hard_bounce".into()
            ),
        ]
    );
    drop(daemon);

    // The same list again: the two are not sent to.
    let again = s.send(&emails, "second.json");
    assert_eq!(
        (
            &again["recipients"],
            &again["delivered"],
            &again["suppressed"]
        ),
        (&2.into(), &2.into(), &2.into()),
        "{again}"
    );
}

#[test]
fn a_complaint_to_a_verp_address_suppresses_its_recipient() {
    if !peers(
        "a_complaint_to_a_verp_address_suppresses_its_recipient",
        &["swaks", SMTP_SINK],
        false,
    ) {
        return;
    }
    let (s, _sink, paths) = sent_through_sink(94, &["carol@sink.test", "dave@sink.test"]);
    // The daemon serves the API too: the campaign counts the complaint.
    let ip = Ipv4Addr::new(127, 0, 0, 94);
    let api = SocketAddr::from((ip, free_port(ip)));
    let config = std::fs::read_to_string(s.path("volley.toml")).unwrap();
    let config = config.replacen(
        "[control]\nlisten = \"\"",
        &format!("[control]\nlisten = \"{api}\""),
        1,
    );
    std::fs::write(s.path("volley.toml"), config).unwrap();
    let out = s.volley(&["token", "create", "--name", "ops", "--role", "admin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let admin = format!("Bearer {}", stdout(&out).trim());
    let _daemon = s.daemon();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../mta/inbound/src/fixtures/arf-abuse.eml");
    let (ok, transcript) = s.swaks(
        "abusedesk@example.test",
        verp_of(&paths, "dave@sink.test"),
        &fixture,
    );
    assert!(ok, "{transcript}");
    let lines = s.wait_for_status("complained", 1, &String::new);
    let line = &lines[0];
    // The batch's recipient, not the report's Original-Rcpt-To.
    assert_eq!(line["recipient"], "dave@sink.test", "{line}");
    assert_eq!(line["feedback_type"], "abuse", "{line}");
    assert_eq!(s.batch_recipient(line), "dave@sink.test");
    assert_eq!(
        s.suppressions(),
        [(
            "dave@sink.test".into(),
            "acme.test".into(),
            "complaint".into()
        )]
    );
    let path = format!("/v1/campaigns/{}", line["campaign"]);
    let mut last = serde_json::Value::Null;
    let counted = poll(Duration::from_secs(30), || {
        let a = support::http::try_request(api, "GET", &path, &[("Authorization", &admin)], b"")
            .ok()?;
        last = a.json();
        (last["complained"] == 1).then_some(())
    });
    assert!(
        counted.is_some(),
        "the campaign does not count the complaint: {last}"
    );
    assert_eq!(last["unsubscribed"], 0, "{last}");

    // Carol replies to her message (its reply address is its return path):
    // she acknowledged it; nothing is suppressed.
    std::fs::write(
        s.path("carol-reply.eml"),
        "From: Carol <carol@sink.test>\r\nTo: Acme News <news@acme.test>\r\n\
         Subject: Re: your news\r\nMessage-ID: <c1@sink.test>\r\n\r\nThanks, very useful.",
    )
    .unwrap();
    let (ok, transcript) = s.swaks(
        "carol@sink.test",
        verp_of(&paths, "carol@sink.test"),
        &s.path("carol-reply.eml"),
    );
    assert!(ok, "{transcript}");
    let lines = s.wait_for_status("replied", 1, &String::new);
    assert_eq!(lines[0]["recipient"], "carol@sink.test", "{}", lines[0]);
    let acknowledged = poll(Duration::from_secs(30), || {
        let a = support::http::try_request(api, "GET", &path, &[("Authorization", &admin)], b"")
            .ok()?;
        last = a.json();
        (last["replied"] == 1).then_some(())
    });
    assert!(
        acknowledged.is_some(),
        "the campaign does not count the reply: {last}"
    );
    assert_eq!(last["acknowledged"], 1, "{last}");
    assert_eq!(s.suppressions().len(), 1, "a reply suppresses nothing");
}

#[test]
fn reports_without_a_verified_token_wait_for_an_operator() {
    if !peers(
        "reports_without_a_verified_token_wait_for_an_operator",
        &["swaks", SMTP_SINK],
        false,
    ) {
        return;
    }
    let (s, _sink, _paths) = sent_through_sink(96, &["erin@sink.test"]);
    let _daemon = s.daemon();
    // An "unsubscribe" reply: anyone can send one naming anyone.
    std::fs::write(
        s.path("reply.eml"),
        "From: Erin <erin@sink.test>\r\nTo: Acme News <news@acme.test>\r\n\
         Subject: unsubscribe\r\nMessage-ID: <r1@sink.test>\r\n\r\nPlease stop.",
    )
    .unwrap();
    let (ok, transcript) = s.swaks("erin@sink.test", "news@acme.test", &s.path("reply.eml"));
    assert!(ok, "{transcript}");
    let lines = s.wait_for_status("unsubscribed", 1, &String::new);
    assert_eq!(lines[0]["recipient"], "erin@sink.test", "{}", lines[0]);
    assert_eq!(lines[0]["suppression"], "pending", "{}", lines[0]);
    // A forged DSN to postmaster@ the bounce domain, naming someone else.
    let dsn = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mta/inbound/src/fixtures/postfix-unknown-user.eml");
    let (ok, transcript) = s.swaks("", &format!("postmaster@{BOUNCE_DOMAIN}"), &dsn);
    assert!(ok, "{transcript}");
    s.wait_for_status("bounced_async", 1, &String::new);
    // Neither is applied on its own.
    assert_eq!(s.suppressions(), []);
    let out = s.volley(&["suppress", "pending", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pending: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pending.len(), 2, "{pending:?}");
    let erin = pending
        .iter()
        .find(|p| p["address"] == "erin@sink.test")
        .unwrap();
    let forged = pending
        .iter()
        .find(|p| p["address"] != "erin@sink.test")
        .unwrap();
    assert_eq!(
        (erin["kind"].as_str(), erin["domain"].as_str()),
        (Some("unsubscribe"), Some("acme.test"))
    );
    // The operator accepts the reply and rejects the forged report.
    let out = s.volley(&["suppress", "accept", &erin["id"].to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.volley(&["suppress", "reject", &forged["id"].to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.suppressions(),
        [(
            "erin@sink.test".into(),
            "acme.test".into(),
            "unsubscribe".into()
        )]
    );
    let out = s.volley(&["suppress", "pending", "--json"]);
    assert_eq!(stdout(&out), "");
    let out = s.volley(&["suppress", "accept", "99"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no pending request 99"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_forged_verp_token_is_refused_at_rcpt_and_logged() {
    if !peers(
        "a_forged_verp_token_is_refused_at_rcpt_and_logged",
        &["swaks", SMTP_SINK],
        false,
    ) {
        return;
    }
    let (s, _sink, paths) = sent_through_sink(98, &["frank@sink.test"]);
    let daemon = s.daemon();
    // A real token with its last tag character changed.
    let real = verp_of(&paths, "frank@sink.test");
    let (local, domain) = real.split_once('@').unwrap();
    let last = if local.ends_with('a') { 'b' } else { 'a' };
    let forged = format!("{}{last}@{domain}", &local[..local.len() - 1]);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mta/inbound/src/fixtures/postfix-unknown-user.eml");
    let (ok, transcript) = s.swaks("", &forged, &fixture);
    assert!(!ok, "{transcript}");
    assert!(
        transcript.contains(&format!(
            " -> RCPT TO:<{forged}>\n<** 550 5.7.1 Invalid VERP token in the recipient address\n"
        )),
        "{transcript}"
    );
    let logged = poll(Duration::from_secs(10), || {
        let text = daemon.stderr_text();
        (text.contains("forged VERP address refused") && text.contains(&forged)).then_some(())
    });
    assert!(logged.is_some(), "{}", daemon.stderr_text());
    assert!(s.suppressions().is_empty());
    assert!(
        s.log().iter().all(|l| l["status"] == "delivered"),
        "{:#?}",
        s.log()
    );
}

/// dkimpy (Debian python3-dkim) signs stdin's message for `d=` argv[1],
/// selector s1, with the key file argv[2]; the signed message on stdout.
const DKIM_SIGN: &str = r#"
import sys, dkim
message = sys.stdin.buffer.read()
key = open(sys.argv[2], "rb").read()
sig = dkim.sign(message, b"s1", sys.argv[1].encode(), key,
                include_headers=[b"from", b"to", b"subject", b"content-type"])
sys.stdout.buffer.write(sig + message)
"#;

/// An RSA key made by openssl in `dir`: its file and its DKIM TXT record.
fn dkim_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let made = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let public = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl rsa -in '{}' -pubout -outform DER 2>/dev/null | openssl base64 -A",
            key.display()
        ))
        .output()
        .unwrap();
    assert!(public.status.success());
    let text = format!(
        "v=DKIM1; k=rsa; p={}",
        String::from_utf8_lossy(&public.stdout).trim()
    );
    (key, text)
}

#[test]
fn complaints_dkim_signed_by_a_feedback_loop_domain_suppress() {
    if !peers(
        "complaints_dkim_signed_by_a_feedback_loop_domain_suppress",
        &["swaks", "dnsmasq", "/usr/bin/python3", "openssl"],
        false,
    ) {
        return;
    }
    let s = Setup::new("127.0.0.1:9".parse().unwrap(), 102);
    let (provider_key, provider_txt) = dkim_key(s.dir.path(), "provider.pem");
    let (other_key, other_txt) = dkim_key(s.dir.path(), "other.pem");
    let dns = support::dnsmasq::DnsMasq::start(&[
        support::dnsmasq::Record::txt("s1._domainkey.fbl.provider.test", &provider_txt),
        support::dnsmasq::Record::txt("s1._domainkey.other.test", &other_txt),
    ]);
    let config = std::fs::read_to_string(s.path("volley.toml")).unwrap();
    let config = config.replace(
        "[bounce]\n",
        "[bounce]\nfbl_sources = [\"fbl.provider.test\", \"192.0.2.0/24\"]\n",
    ) + &format!("[dns]\nnameservers = [\"{}\"]\n", dns.addr);
    std::fs::write(s.path("volley.toml"), config).unwrap();
    let _daemon = s.daemon();
    // A provider's report on a message sent without a VERP return path, so
    // only the report names its recipient.
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../mta/inbound/src/fixtures/arf-abuse.eml");
    let report = |rcpt: &str| -> Vec<u8> {
        std::fs::read_to_string(&fixture)
            .unwrap()
            .replace(
                "b-aaaaaaaaaaacuaaaaaaaaaaaa4aaaaaf6cyw7t26wgkl37go@bounce.acme.test",
                "news@acme.test",
            )
            .replace("user@example.test", rcpt)
            .replace('\n', "\r\n")
            .into_bytes()
    };
    let sign = |message: &[u8], domain: &str, key: &Path| -> Vec<u8> {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args(["-c", DKIM_SIGN, domain]).arg(key);
        let out = run_bounded(&mut cmd, message, Duration::from_secs(30)).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let cases = [
        // Signed by the loop's domain, key published: trusted.
        (
            "signed@example.test",
            sign(
                &report("signed@example.test"),
                "fbl.provider.test",
                &provider_key,
            ),
        ),
        // Signed, but by a domain that is not a feedback loop.
        (
            "other@example.test",
            sign(&report("other@example.test"), "other.test", &other_key),
        ),
        // The loop's signature, but the report altered after signing.
        (
            "altered@example.test",
            String::from_utf8(sign(
                &report("altered@example.test"),
                "fbl.provider.test",
                &provider_key,
            ))
            .unwrap()
            .replace("Spam Spam Spam", "Ham Ham Ham")
            .into_bytes(),
        ),
        // No signature at all.
        ("unsigned@example.test", report("unsigned@example.test")),
    ];
    for (rcpt, message) in &cases {
        let file = s.path(&format!("{rcpt}.eml"));
        std::fs::write(&file, message).unwrap();
        let (ok, transcript) = s.swaks("abusedesk@example.test", "fbl@acme.test", &file);
        assert!(ok, "{rcpt}: {transcript}");
    }
    let lines = s.wait_for_status("complained", cases.len(), &String::new);
    let path = |rcpt: &str| {
        lines
            .iter()
            .find(|l| l["recipient"] == rcpt)
            .map(|l| l["suppression"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("no line for {rcpt}: {lines:#?}"))
    };
    assert_eq!(path("signed@example.test"), "fbl_source");
    for rcpt in [
        "other@example.test",
        "altered@example.test",
        "unsigned@example.test",
    ] {
        assert_eq!(path(rcpt), "pending", "{rcpt}");
    }
    assert_eq!(
        s.suppressions(),
        [(
            "signed@example.test".into(),
            "acme.test".into(),
            "complaint".into()
        )]
    );
    // The key was asked of the configured name server.
    assert!(
        dns.queries("TXT", "s1._domainkey.fbl.provider.test") >= 1,
        "{}",
        dns.log()
    );
}
