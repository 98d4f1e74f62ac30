//! Delivery status notifications for relayed mail, end to end: a message
//! submitted to `volley run`'s submission listener (with RFC 3461 parameters) for
//! recipients a real Postfix refuses, and the report volley then sends to the
//! message's sender, which that Postfix accepts into its Maildir.

mod common;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::volley_run;
use support::port::{free_port, poll, wait_bound};
use support::postfix::{Postfix, PostfixOptions};
use support::process::ChildGuard;

/// `volley run` with a submission listener on 127.0.0.`listen_ip` trusted from
/// loopback, every domain routed to `via`, and `extra` config; returns it
/// running, the listener's address and the temp dir.
fn daemon(
    via: std::net::SocketAddr,
    listen_ip: u8,
    extra: &str,
) -> (ChildGuard, SocketAddrV4, tempfile::TempDir) {
    let ip = Ipv4Addr::new(127, 0, 0, listen_ip);
    let listen = SocketAddrV4::new(ip, free_port(ip));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[control]\nlisten = \"\"\n[spool]\ndir = \"{spool}\"\n[delivery]\nhelo_name = \"mta.volley.test\"\nlog = \"{log}\"\n\
         [retry]\nintervals = [\"1s\"]\n[[route]]\ndomain = \"*\"\nvia = \"{via}\"\n\
         [relay]\nnetworks = [\"127.0.0.0/8\"]\n\
         [[listen]]\naddress = \"{listen}\"\nrole = \"submission\"\ntls = \"none\"\n{extra}",
        spool = dir.path().join("spool").display(),
        log = dir.path().join("delivery.jsonl").display(),
    );
    let config_path = dir.path().join("volley.toml");
    std::fs::write(&config_path, config).unwrap();
    let child = ChildGuard::spawn(
        "volley-run",
        volley_run(&config_path.display().to_string()),
        dir.path(),
    )
    .unwrap();
    wait_bound(listen, Duration::from_secs(20), || child.check_alive())
        .unwrap_or_else(|e| panic!("volley run did not listen: {e}"));
    (child, listen, dir)
}

/// Delivery-log lines of `recipient` with `status`.
fn logged(dir: &Path, recipient: &str, status: &str) -> usize {
    std::fs::read_to_string(dir.join("delivery.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["recipient"] == recipient && e["status"] == status)
        .count()
}

/// A plain SMTP client, one command at a time.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddrV4) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
        };
        assert!(client.reply().starts_with("220 "));
        client
    }

    /// The next reply, all its lines.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    fn send(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }
}

#[test]
fn a_relayed_message_that_bounces_gets_a_dsn_that_its_sender_receives() {
    const TEST: &str = "a_relayed_message_that_bounces_gets_a_dsn_that_its_sender_receives";
    if !Postfix::available() {
        return support::skip(TEST, "a private Postfix needs root");
    }
    // Postfix delivers app@pf.test to its Maildir and refuses the others.
    let postfix = Postfix::start(
        Ipv4Addr::new(127, 0, 0, 93),
        PostfixOptions {
            hostname: Some("mx.pf.test".into()),
            recipient_access: vec![
                ("nobody@pf.test".into(), "550 5.1.1 User unknown".into()),
                ("quiet@pf.test".into(), "550 5.1.1 User unknown".into()),
            ],
            main_cf: vec![
                "virtual_mailbox_domains = pf.test".into(),
                "virtual_mailbox_maps = inline:{ app@pf.test=inbox/ }".into(),
            ],
            ..PostfixOptions::default()
        },
    );
    let (_daemon, listen, _dir) = daemon(postfix.addr(), 94, "");

    let mut c = Client::connect(listen);
    let ehlo = c.send("EHLO app.pf.test");
    assert!(
        ehlo.contains("250-DSN\r\n") || ehlo.contains("250 DSN\r\n"),
        "{ehlo}"
    );
    assert!(c
        .send("MAIL FROM:<app@pf.test> RET=HDRS ENVID=QQ314159")
        .starts_with("250 "));
    assert!(c
        .send("RCPT TO:<nobody@pf.test> NOTIFY=FAILURE ORCPT=rfc822;Nobody+2Bdsn@pf.test")
        .starts_with("250 "));
    // A recipient whose sender wants no report.
    assert!(c
        .send("RCPT TO:<quiet@pf.test> NOTIFY=NEVER")
        .starts_with("250 "));
    assert!(c.send("DATA").starts_with("354 "));
    let queued = c.send(
        "From: App <app@pf.test>\r\nTo: nobody@pf.test\r\nSubject: monthly statement\r\n\
         Message-ID: <m1@app.pf.test>\r\n\r\nsecret body text\r\n.",
    );
    assert!(queued.starts_with("250 "), "{queued}");
    c.send("QUIT");

    // The report reaches the sender's mailbox at Postfix.
    let delivered = postfix
        .wait_for_delivered(1, Duration::from_secs(60))
        .unwrap();
    let report = delivered[0].text();
    assert_eq!(delivered[0].recipient, "app@pf.test");
    for needle in [
        "Return-Path: <>\n",
        "From: Mail Delivery System <MAILER-DAEMON@mta.volley.test>\n",
        "Content-Type: multipart/report; report-type=delivery-status;\n",
        "Reporting-MTA: dns; mta.volley.test\n",
        "Original-Envelope-Id: QQ314159\n",
        "Original-Recipient: rfc822;Nobody+dsn@pf.test\n",
        "Final-Recipient: rfc822; nobody@pf.test\nAction: failed\nStatus: 5.1.1\n",
        "Diagnostic-Code: smtp; 550 5.1.1",
        // RET=HDRS: the header comes back, the body does not.
        "Content-Type: text/rfc822-headers\n",
        "Subject: monthly statement\n",
    ] {
        assert!(report.contains(needle), "{needle:?} in:\n{report}");
    }
    assert!(!report.contains("secret body text"), "{report}");
    assert!(!report.contains("quiet@pf.test"), "NOTIFY=NEVER: {report}");
}

#[test]
fn delay_warnings_and_success_reports_follow_notify() {
    const TEST: &str = "delay_warnings_and_success_reports_follow_notify";
    if !Postfix::available() {
        return support::skip(TEST, "a private Postfix needs root");
    }
    // ok@pf.test is delivered, later@pf.test deferred at every attempt.
    let postfix = Postfix::start(
        Ipv4Addr::new(127, 0, 0, 95),
        PostfixOptions {
            hostname: Some("mx.pf.test".into()),
            recipient_access: vec![("later@pf.test".into(), "450 4.2.0 Try later".into())],
            main_cf: vec![
                "virtual_mailbox_domains = pf.test".into(),
                "virtual_mailbox_maps = inline:{ app@pf.test=inbox/, ok@pf.test=inbox/ }".into(),
            ],
            ..PostfixOptions::default()
        },
    );
    let (_daemon, listen, dir) = daemon(postfix.addr(), 96, "[bounce]\ndelay_warning = \"1s\"\n");
    let mut c = Client::connect(listen);
    c.send("EHLO app.pf.test");
    assert!(c.send("MAIL FROM:<app@pf.test>").starts_with("250 "));
    assert!(c
        .send("RCPT TO:<ok@pf.test> NOTIFY=SUCCESS")
        .starts_with("250 "));
    assert!(c.send("RCPT TO:<later@pf.test>").starts_with("250 "));
    assert!(c.send("DATA").starts_with("354 "));
    let queued = c.send("From: app@pf.test\r\nSubject: invoice\r\n\r\nbody\r\n.");
    assert!(queued.starts_with("250 "), "{queued}");
    c.send("QUIT");

    let reports = |postfix: &Postfix| -> Vec<String> {
        postfix
            .delivered()
            .iter()
            .filter(|d| d.recipient == "app@pf.test")
            .map(|d| d.text())
            .collect()
    };
    let got = poll(Duration::from_secs(60), || {
        let r = reports(&postfix);
        (r.len() >= 2).then_some(r)
    })
    .unwrap_or_else(|| panic!("reports: {:?}\n{}", reports(&postfix), postfix.log()));
    let success = got
        .iter()
        .find(|r| r.contains("Subject: Successful Mail Delivery Report"))
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(
        success.contains("Final-Recipient: rfc822; ok@pf.test\nAction: delivered\nStatus: 2.0.0\n"),
        "{success}"
    );
    let delayed = got
        .iter()
        .find(|r| r.contains("Subject: Delayed Mail (still being retried)"))
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(
        delayed
            .contains("Final-Recipient: rfc822; later@pf.test\nAction: delayed\nStatus: 4.2.0\n"),
        "{delayed}"
    );
    assert!(!delayed.contains("ok@pf.test"), "{delayed}");
    // Retried again and again, warned of once.
    poll(Duration::from_secs(60), || {
        (logged(dir.path(), "later@pf.test", "deferred") >= 4).then_some(())
    })
    .unwrap_or_else(|| panic!("later@pf.test was not retried"));
    let again = reports(&postfix);
    let delays = again
        .iter()
        .filter(|r| r.contains("Action: delayed"))
        .count();
    assert_eq!((again.len(), delays), (2, 1), "{again:?}");
}

/// `volley --config CONFIG sendmail ARGS` with `message` on standard input.
fn sendmail(config: &Path, args: &[&str], message: &str) -> std::process::Output {
    let mut all = vec!["sendmail"];
    all.extend_from_slice(args);
    common::volley_with_input(config, &all, message.as_bytes())
}

#[test]
fn sendmail_dsn_options_reach_the_report() {
    const TEST: &str = "sendmail_dsn_options_reach_the_report";
    if !Postfix::available() {
        return support::skip(TEST, "a private Postfix needs root");
    }
    let postfix = Postfix::start(
        Ipv4Addr::new(127, 0, 0, 97),
        PostfixOptions {
            hostname: Some("mx.pf.test".into()),
            recipient_access: vec![("nobody@pf.test".into(), "550 5.1.1 User unknown".into())],
            main_cf: vec![
                "virtual_mailbox_domains = pf.test".into(),
                "virtual_mailbox_maps = inline:{ app@pf.test=inbox/ }".into(),
            ],
            ..PostfixOptions::default()
        },
    );
    let (_daemon, _listen, dir) = daemon(postfix.addr(), 98, "");
    let config = dir.path().join("volley.toml");
    // -N never: the bounce is logged, and nobody is told.
    let out = sendmail(
        &config,
        &["-f", "app@pf.test", "-N", "never", "nobody@pf.test"],
        "Subject: first\n\nquiet\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    poll(Duration::from_secs(60), || {
        (logged(dir.path(), "nobody@pf.test", "bounced") >= 1).then_some(())
    })
    .expect("the first message bounced");
    // -R hdrs -V: the report carries the envelope id and the header only.
    let out = sendmail(
        &config,
        &[
            "-f",
            "app@pf.test",
            "-Rhdrs",
            "-V",
            "ENV42",
            "nobody@pf.test",
        ],
        "Subject: second\n\nbody of the second\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delivered = postfix
        .wait_for_delivered(1, Duration::from_secs(60))
        .unwrap();
    let report = delivered[0].text();
    for needle in [
        "Original-Envelope-Id: ENV42\n",
        "Final-Recipient: rfc822; nobody@pf.test\nAction: failed\nStatus: 5.1.1\n",
        "Content-Type: text/rfc822-headers\n",
        "Subject: second\n",
    ] {
        assert!(report.contains(needle), "{needle:?} in:\n{report}");
    }
    assert!(!report.contains("body of the second"), "{report}");
    // The -N never message got none, though it bounced a round earlier.
    let all = postfix.delivered();
    assert_eq!(
        all.len(),
        1,
        "{:?}",
        all.iter().map(|d| d.text()).collect::<Vec<_>>()
    );
}
