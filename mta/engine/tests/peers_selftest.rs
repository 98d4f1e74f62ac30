//! Self-test of the test-peer harness in `tests/support/`: each peer is started and
//! talked to with a plain `std::net::TcpStream` SMTP client (or swaks / openssl),
//! proving it behaves as the end-to-end tests will rely on.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::port::{free_port, is_bound_listening, wait_listening};
use support::postfix::{Postfix, PostfixOptions};
use support::process::run_bounded;
use support::scripted::{self_signed_cert, Scripted};
use support::smtp_sink::{SinkMessage, SinkOptions, SmtpSink};

const WAIT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One SMTP reply: its code and the text of each line.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("{} {l}", self.code))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn has_keyword(&self, kw: &str) -> bool {
        self.lines.iter().skip(1).any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(kw))
        })
    }
}

/// A minimal blocking SMTP client with timeouts.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> (Client, Reply) {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut c = Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        };
        let greeting = c.reply().expect("greeting");
        (c, greeting)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Reads one (possibly multi-line) reply; an error on EOF or reset.
    fn reply(&mut self) -> std::io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .expect("reply code");
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, lines });
            }
        }
    }

    fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
            .unwrap_or_else(|e| panic!("reply to {line:?}: {e}"))
    }

    /// Sends MAIL, RCPTs, DATA and the message (dot-stuffed, CRLF), one command at a
    /// time; returns the reply to the final dot. Panics on any other non-2xx/3xx.
    fn send_message(&mut self, from: &str, tos: &[&str], body: &str) -> Reply {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).code, 250);
        for to in tos {
            assert_eq!(self.cmd(&format!("RCPT TO:<{to}>")).code, 250);
        }
        assert_eq!(self.cmd("DATA").code, 354);
        self.send(&dot_stuff(body));
        self.reply().expect("reply to the final dot")
    }

    /// True once the server has closed the connection (EOF or reset), within the
    /// read timeout.
    fn sees_close(&mut self) -> bool {
        let mut buf = [0u8; 512];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// `body` (with `\n` line ends) as DATA content: CRLF, dot-stuffed, final dot.
fn dot_stuff(body: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in body.lines() {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

// ---------------------------------------------------------------------------- port

#[test]
fn free_port_is_bindable_and_wait_listening_sees_a_listener() {
    let port = free_port(ip(40));
    assert_ne!(port, 0);
    let addr = SocketAddr::from((ip(40), port));
    assert!(wait_listening(addr, Duration::from_millis(50)).is_err());
    let listener = std::net::TcpListener::bind(addr).expect("free port is bindable");
    assert!(is_bound_listening(std::net::SocketAddrV4::new(
        ip(40),
        port
    )));
    wait_listening(addr, WAIT).expect("listening");
    drop(listener);
}

// ----------------------------------------------------------------------- smtp-sink

#[test]
fn smtp_sink_dumps_a_message_sent_by_swaks_with_pipelining() {
    let sink = SmtpSink::start(ip(41), SinkOptions::default());
    let addr = sink.addr().to_string();
    let out = run_bounded(
        Command::new("swaks").args([
            "--server",
            &addr,
            "--from",
            "sender@y.test",
            "--to",
            "rcpt@x.test",
            "--helo",
            "client.test",
            "--body",
            "swaks body line",
            "--pipeline",
        ]),
        b"",
        WAIT,
    )
    .expect("swaks");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks failed:\n{transcript}");
    assert!(transcript.contains("250-PIPELINING"), "{transcript}");

    let msgs = sink.wait_for_messages(1, WAIT).unwrap();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.client_addr, "127.0.0.1");
    assert_eq!(m.proto, "ESMTP");
    assert_eq!(m.helo.as_deref(), Some("client.test"));
    assert_eq!(m.mail_from(), "sender@y.test");
    assert_eq!(m.rcpt_tos(), vec!["rcpt@x.test"]);
    let body = String::from_utf8_lossy(&m.body);
    assert!(body.contains("\n\nswaks body line\n"), "{body}");
    assert!(String::from_utf8_lossy(&sink.messages()[0]).starts_with("X-Client-Addr: 127.0.0.1\n"));
    let c = sink.wait_for_count(1, WAIT).unwrap();
    assert_eq!(c.messages, 1);
}

#[test]
fn smtp_sink_keeps_every_message_of_a_session_with_exact_bodies() {
    let sink = SmtpSink::start(ip(42), SinkOptions::plain());
    let (mut c, greeting) = Client::connect(sink.addr());
    assert_eq!(greeting.code, 220);
    let ehlo = c.cmd("EHLO client.test");
    assert!(
        ehlo.has_keyword("PIPELINING") && !ehlo.has_keyword("AUTH"),
        "{}",
        ehlo.text()
    );
    let first = "Subject: one\n\n.leading dot\nbody one\n";
    let second = "Subject: two\n\nbody two\n";
    let tos = ["b@x.test", "c@x.test"];
    assert_eq!(c.send_message("a@y.test", &tos, first).code, 250);
    assert_eq!(c.send_message("", &["d@x.test"], second).code, 250);
    assert_eq!(c.cmd("QUIT").code, 221);

    let msgs = sink.wait_for_messages(2, WAIT).unwrap();
    assert_eq!(msgs.len(), 2);
    // Back-to-back messages may share a file time: find them by content.
    let find = |subject: &str| {
        msgs.iter()
            .find(|m| m.body.starts_with(subject.as_bytes()))
            .unwrap_or_else(|| panic!("no message with {subject:?}: {msgs:?}"))
    };
    let one = find("Subject: one");
    assert_eq!(one.body, first.as_bytes(), "dot-stuffing removed, LF ends");
    assert_eq!(one.body_crlf(), first.replace('\n', "\r\n").as_bytes());
    assert_eq!(one.rcpt_tos(), tos);
    let two = find("Subject: two");
    assert_eq!(two.body, second.as_bytes());
    assert_eq!(two.mail_from(), "");
    assert_eq!(sink.message_bodies().len(), 2);
    let c = sink
        .wait_for_counters(|c| c.quits >= 1 && c.sessions >= 1, WAIT)
        .unwrap();
    assert_eq!((c.messages, c.quits, c.sessions), (2, 1, 1));
}

#[test]
fn smtp_sink_leaves_out_aborted_transactions() {
    let sink = SmtpSink::start(ip(43), SinkOptions::plain());
    {
        let (mut c, _) = Client::connect(sink.addr());
        c.cmd("EHLO client.test");
        c.cmd("MAIL FROM:<a@y.test>");
        c.cmd("RCPT TO:<b@x.test>");
        assert_eq!(c.cmd("DATA").code, 354);
        c.send(b"Subject: cut off\r\n\r\npartial");
        // Dropped here, mid-message.
    }
    let (mut c, _) = Client::connect(sink.addr());
    c.cmd("EHLO client.test");
    assert_eq!(
        c.send_message("a@y.test", &["b@x.test"], "Subject: whole\n\nok\n")
            .code,
        250
    );
    let msgs = sink.wait_for_messages(1, WAIT).unwrap();
    // Once the second message is in, the aborted one is certainly gone.
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(String::from_utf8_lossy(&msgs[0].body).contains("Subject: whole"));
}

#[test]
fn smtp_sink_options_hide_pipelining_and_reject_rcpt_with_a_fixed_reply() {
    let sink = SmtpSink::start(
        ip(44),
        SinkOptions {
            no_pipelining: true,
            no_enhanced_status_codes: true,
            hard_reject: vec!["RCPT".into()],
            hard_reply: Some("550 5.1.1 User unknown".into()),
            hostname: Some("mx.sink.test".into()),
            ..SinkOptions::plain()
        },
    );
    let (mut c, greeting) = Client::connect(sink.addr());
    assert_eq!(greeting.lines[0], "mx.sink.test ESMTP");
    let ehlo = c.cmd("EHLO client.test");
    assert!(!ehlo.has_keyword("PIPELINING"), "{}", ehlo.text());
    assert!(!ehlo.has_keyword("ENHANCEDSTATUSCODES"), "{}", ehlo.text());
    assert!(ehlo.has_keyword("8BITMIME"), "{}", ehlo.text());
    assert_eq!(c.cmd("MAIL FROM:<a@y.test>").code, 250);
    let rcpt = c.cmd("RCPT TO:<b@x.test>");
    assert_eq!(
        (rcpt.code, rcpt.lines[0].as_str()),
        (550, "5.1.1 User unknown")
    );
}

#[test]
fn smtp_sink_replies_421_and_disconnects_on_a_listed_command() {
    let sink = SmtpSink::start(
        ip(45),
        SinkOptions {
            reply_421_on: vec!["MAIL".into()],
            ..SinkOptions::plain()
        },
    );
    let (mut c, _) = Client::connect(sink.addr());
    c.cmd("EHLO client.test");
    assert_eq!(c.cmd("MAIL FROM:<a@y.test>").code, 421);
    assert!(c.sees_close());
}

#[test]
fn smtp_sink_dump_parser_handles_the_documented_format() {
    let raw = b"X-Client-Addr: 127.0.0.1\nX-Client-Proto: SMTP\nX-Mail-Args: <a@b> SIZE=10\n\
X-Rcpt-Args: <c@d> NOTIFY=NEVER\nReceived: from [127.0.0.1] ([127.0.0.1])\n\
\tby smtp-sink (smtp-sink) with SMTP id 1;\n\tMon, 23 Nov 2026 11:30:20 +0000 (UTC)\n\
Subject: x\n\nbody\n\n";
    let m = SinkMessage::parse(raw).unwrap();
    assert_eq!(m.helo, None);
    assert_eq!(m.mail_from(), "a@b");
    assert_eq!(m.rcpt_tos(), vec!["c@d"]);
    assert_eq!(m.body, b"Subject: x\n\nbody\n");
    assert!(SinkMessage::parse(b"garbage\n").is_none());
}

// ------------------------------------------------------------------------ scripted

#[test]
fn scripted_accepts_and_records_the_exact_bytes_of_a_transaction() {
    let peer = Scripted::start(ip(50), json!({}));
    let (mut c, greeting) = Client::connect(peer.addr());
    assert_eq!(greeting.code, 220);
    let ehlo = c.cmd("EHLO client.test");
    for kw in ["PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8"] {
        assert!(ehlo.has_keyword(kw), "{kw} missing:\n{}", ehlo.text());
    }
    let body = "Subject: hi\n\n.dotted\nline two\n";
    assert_eq!(
        c.send_message("a@y.test", &["b@x.test", "c@x.test"], body)
            .code,
        250
    );
    assert_eq!(c.cmd("QUIT").code, 221);

    let t = peer.wait_for_transactions(1, WAIT).unwrap();
    assert_eq!(t[0].mail_from, "a@y.test");
    assert_eq!(t[0].rcpt_tos, vec!["b@x.test", "c@x.test"]);
    assert_eq!(t[0].data, body.replace('\n', "\r\n").as_bytes());
    assert_eq!(
        (t[0].session, t[0].helo.as_deref(), t[0].tls),
        (1, Some("client.test"), false)
    );
    assert!(t[0].reply.starts_with("250"));
    let transcript = peer.wait_for_transcript("S: 221 Bye", WAIT).unwrap();
    assert!(
        transcript.contains("[s1] C: RCPT TO:<c@x.test>"),
        "{transcript}"
    );
}

#[test]
fn scripted_rejects_a_listed_recipient_with_the_given_reply() {
    let reject = "550 5.1.1 <nobody@x.test>: Recipient address rejected: User unknown";
    let peer = Scripted::start(
        ip(51),
        json!({ "rcpt_replies": { "nobody@x.test": reject } }),
    );
    let (mut c, _) = Client::connect(peer.addr());
    c.cmd("EHLO client.test");
    // Pipelined, as the engine will send them.
    c.send(b"MAIL FROM:<a@y.test>\r\nRCPT TO:<Nobody@X.test>\r\nRCPT TO:<ok@x.test>\r\nDATA\r\n");
    assert_eq!(c.reply().unwrap().code, 250);
    let rejected = c.reply().unwrap();
    assert_eq!(format!("{} {}", rejected.code, rejected.lines[0]), reject);
    assert_eq!(c.reply().unwrap().code, 250);
    assert_eq!(c.reply().unwrap().code, 354);
    c.send(&dot_stuff("Subject: x\n\nbody\n"));
    assert_eq!(c.reply().unwrap().code, 250);
    let t = peer.wait_for_transactions(1, WAIT).unwrap();
    assert_eq!(t[0].rcpt_tos, vec!["ok@x.test"]);
}

#[test]
fn scripted_defers_the_first_attempts_then_accepts() {
    let peer = Scripted::start(ip(52), json!({ "defer_first_n": 2 }));
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (mut c, _) = Client::connect(peer.addr());
        c.cmd("EHLO client.test");
        c.cmd("MAIL FROM:<a@y.test>");
        let rcpt = c.cmd("RCPT TO:<b@x.test>");
        codes.push(rcpt.code);
        if rcpt.code == 451 {
            assert_eq!(rcpt.lines[0], "4.7.1 Try again later");
        } else {
            assert_eq!(c.cmd("DATA").code, 354);
            c.send(&dot_stuff("Subject: retry\n\nthird time\n"));
            assert_eq!(c.reply().unwrap().code, 250);
        }
        c.cmd("QUIT");
    }
    assert_eq!(codes, vec![451, 451, 250]);
    let t = peer.wait_for_transactions(1, WAIT).unwrap();
    assert_eq!(t[0].session, 3);
}

#[test]
fn scripted_defers_at_data_then_accepts() {
    let peer = Scripted::start(ip(53), json!({ "defer_first_n": 1, "defer_at": "data" }));
    let (mut c, _) = Client::connect(peer.addr());
    c.cmd("EHLO client.test");
    let body = "Subject: x\n\nbody\n";
    let first = c.send_message("a@y.test", &["b@x.test"], body);
    assert_eq!(
        (first.code, first.lines[0].as_str()),
        (451, "4.7.1 Try again later")
    );
    assert_eq!(c.send_message("a@y.test", &["b@x.test"], body).code, 250);
    assert_eq!(peer.wait_for_transactions(1, WAIT).unwrap().len(), 1);
    let all = peer.all_transactions();
    assert_eq!(all.len(), 2);
    assert!(!all[0].accepted && all[0].reply.starts_with("451"));
}

#[test]
fn scripted_sends_421_after_n_messages_and_closes() {
    let peer = Scripted::start(ip(54), json!({ "reply_421_after": 2 }));
    let (mut c, _) = Client::connect(peer.addr());
    c.cmd("EHLO client.test");
    for i in 0..2 {
        let r = c.send_message(
            "a@y.test",
            &["b@x.test"],
            &format!("Subject: {i}\n\nbody\n"),
        );
        assert_eq!(r.code, 250);
    }
    let r = c.cmd("MAIL FROM:<a@y.test>");
    assert_eq!(
        (r.code, r.lines[0].as_str()),
        (421, "4.7.0 Too many messages, closing")
    );
    assert!(c.sees_close());
    // A new session starts counting again.
    let (mut c, _) = Client::connect(peer.addr());
    c.cmd("EHLO client.test");
    assert_eq!(
        c.send_message("a@y.test", &["b@x.test"], "Subject: 3\n\nbody\n")
            .code,
        250
    );
    assert_eq!(peer.wait_for_transactions(3, WAIT).unwrap().len(), 3);
}

#[test]
fn scripted_drops_the_connection_in_the_middle_of_data() {
    let peer = Scripted::start(
        ip(55),
        json!({ "drop_in_data_after": 1, "drop_in_data_times": 1 }),
    );
    let (mut c, _) = Client::connect(peer.addr());
    c.cmd("EHLO client.test");
    assert_eq!(
        c.send_message("a@y.test", &["b@x.test"], "Subject: 1\n\nbody\n")
            .code,
        250
    );
    c.cmd("MAIL FROM:<a@y.test>");
    c.cmd("RCPT TO:<b@x.test>");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: 2\r\n");
    assert!(c.sees_close(), "the client sees EOF, no reply");
    peer.wait_for_transcript("dropping the connection in the middle", WAIT)
        .unwrap();
    // Only once (drop_in_data_times): the next session's second message goes through.
    let (mut c, _) = Client::connect(peer.addr());
    c.cmd("EHLO client.test");
    for i in 0..2 {
        assert_eq!(
            c.send_message("a@y.test", &["b@x.test"], &format!("Subject: {i}\n\nx\n"))
                .code,
            250
        );
    }
    assert_eq!(peer.wait_for_transactions(3, WAIT).unwrap().len(), 3);
}

#[test]
fn scripted_can_drop_after_the_final_dot_before_replying() {
    let peer = Scripted::start(
        ip(56),
        json!({ "drop_in_data_after": 0, "drop_in_data_mode": "after_dot" }),
    );
    let (mut c, _) = Client::connect(peer.addr());
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@y.test>");
    c.cmd("RCPT TO:<b@x.test>");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&dot_stuff("Subject: lost reply\n\nbody\n"));
    assert!(c.sees_close());
    let all = support::port::poll(WAIT, || {
        let all = peer.all_transactions();
        (!all.is_empty()).then_some(all)
    })
    .expect("the dropped transaction is recorded");
    assert!(!all[0].accepted && all[0].reply.is_empty());
    assert!(peer.transactions().is_empty());
}

#[test]
fn scripted_hides_ehlo_keywords_and_delays_replies() {
    let peer = Scripted::start(
        ip(57),
        json!({ "ehlo_disable": ["PIPELINING", "SMTPUTF8"], "delay_ms": 150, "greeting_delay_ms": 100 }),
    );
    let start = std::time::Instant::now();
    let (mut c, _) = Client::connect(peer.addr());
    let ehlo = c.cmd("EHLO client.test");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    assert!(
        !ehlo.has_keyword("PIPELINING") && !ehlo.has_keyword("SMTPUTF8"),
        "{}",
        ehlo.text()
    );
    assert!(ehlo.has_keyword("8BITMIME"), "{}", ehlo.text());
}

#[test]
fn scripted_fixed_command_reply_and_custom_greeting() {
    let peer = Scripted::start(
        ip(58),
        json!({
            "greeting": "220 mx.old.test SMTP ready",
            "command_replies": { "EHLO": "502 5.5.2 Error: command not recognized" },
        }),
    );
    let (mut c, greeting) = Client::connect(peer.addr());
    assert_eq!(greeting.lines[0], "mx.old.test SMTP ready");
    assert_eq!(c.cmd("EHLO client.test").code, 502);
    assert_eq!(c.cmd("HELO client.test").code, 250);
    assert_eq!(
        c.send_message("a@y.test", &["b@x.test"], "Subject: x\n\nbody\n")
            .code,
        250
    );
    assert_eq!(
        peer.wait_for_transactions(1, WAIT).unwrap()[0]
            .helo
            .as_deref(),
        Some("client.test")
    );
}

#[test]
fn scripted_refuses_an_unknown_scenario_key() {
    let err = Scripted::try_start(ip(59), json!({ "rcpt_reply": {} }))
        .err()
        .expect("a typo in the scenario must not be ignored");
    assert!(err.contains("unknown scenario keys"), "{err}");
}

#[test]
fn scripted_offers_starttls_with_a_generated_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let peer = Scripted::start(
        ip(60),
        json!({ "starttls": { "cert": cert, "key": key, "require": true } }),
    );
    let (mut c, _) = Client::connect(peer.addr());
    assert!(c.cmd("EHLO client.test").has_keyword("STARTTLS"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@y.test>").code,
        530,
        "TLS required first"
    );
    drop(c);

    // openssl s_client does the STARTTLS dance and verifies the certificate; swaks
    // cannot (no Net::SSLeay on this machine).
    let input = b"EHLO client.test\nMAIL FROM:<a@y.test>\nRCPT TO:<b@x.test>\nDATA\n\
Subject: over tls\n\nsecret body\n.\nQUIT\n";
    let out = run_bounded(
        Command::new("openssl")
            .args([
                "s_client",
                "-starttls",
                "smtp",
                "-crlf",
                "-ign_eof",
                "-verify_return_error",
            ])
            .arg("-connect")
            .arg(peer.addr().to_string())
            .args([
                "-servername",
                "mx.tls.test",
                "-verify_hostname",
                "mx.tls.test",
            ])
            .arg("-CAfile")
            .arg(&cert),
        input,
        WAIT,
    )
    .expect("openssl s_client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "s_client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("Verify return code: 0 (ok)"), "{stdout}");
    let t = peer.wait_for_transactions(1, WAIT).unwrap();
    assert!(t[0].tls);
    assert!(t[0].text().contains("secret body"));
    assert!(peer.transcript().contains("TLS established"));
}

// ------------------------------------------------------------------------- postfix

/// Postfix needs root: elsewhere its tests are skipped, and counted so.
fn postfix_or_skip(test: &str) -> bool {
    let ok = Postfix::available();
    if !ok {
        support::skip(test, "a private Postfix needs root and /usr/sbin/postfix");
    }
    ok
}

#[test]
fn postfix_accepts_bdat_chunks_and_delivers_the_exact_message() {
    if !postfix_or_skip("postfix_accepts_bdat_chunks_and_delivers_the_exact_message") {
        return;
    }
    let pf = Postfix::start(ip(70), PostfixOptions::default());
    let (mut c, greeting) = Client::connect(pf.addr());
    assert_eq!(greeting.lines[0], "mx.postfix.test ESMTP Postfix");
    let ehlo = c.cmd("EHLO client.test");
    for kw in ["CHUNKING", "PIPELINING", "SMTPUTF8", "8BITMIME", "DSN"] {
        assert!(ehlo.has_keyword(kw), "{kw} missing:\n{}", ehlo.text());
    }
    assert_eq!(c.cmd("MAIL FROM:<a@y.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@x.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<c@x.test>").code, 250);
    let part1 = "Subject: chunked\r\n\r\n.no dot-stuffing in BDAT\r\n";
    let part2 = "second chunk\r\n";
    c.send(format!("BDAT {}\r\n{part1}", part1.len()).as_bytes());
    assert_eq!(c.reply().unwrap().code, 250);
    c.send(format!("BDAT {} LAST\r\n{part2}", part2.len()).as_bytes());
    let last = c.reply().unwrap();
    assert_eq!(last.code, 250, "{}", last.text());
    assert_eq!(c.cmd("QUIT").code, 221);

    let delivered = pf.wait_for_delivered(2, WAIT).unwrap();
    let to_b = pf.delivered_to("b@x.test");
    assert_eq!(to_b.len(), 1, "{delivered:?}");
    let want = format!("{part1}{part2}").replace("\r\n", "\n");
    assert_eq!(String::from_utf8_lossy(&to_b[0].body()), want);
    assert!(to_b[0].text().starts_with("Return-Path: <a@y.test>\n"));
    assert_eq!(pf.delivered_to("C@x.test").len(), 1);
}

#[test]
fn postfix_rejects_listed_recipients_and_offers_starttls() {
    if !postfix_or_skip("postfix_rejects_listed_recipients_and_offers_starttls") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let pf = Postfix::start(
        ip(71),
        PostfixOptions {
            tls: Some((cert.clone(), key)),
            recipient_access: vec![("nobody@x.test".into(), "550 5.1.1 User unknown".into())],
            discard_ehlo_keywords: vec!["chunking".into()],
            ..PostfixOptions::default()
        },
    );
    let (mut c, _) = Client::connect(pf.addr());
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.has_keyword("STARTTLS"), "{}", ehlo.text());
    assert!(!ehlo.has_keyword("CHUNKING"), "{}", ehlo.text());
    assert_eq!(c.cmd("MAIL FROM:<a@y.test>").code, 250);
    let r = c.cmd("RCPT TO:<nobody@x.test>");
    assert_eq!(r.code, 550, "{}", r.text());
    assert!(r.lines[0].starts_with("5.1.1 "), "{}", r.text());
    assert!(r.lines[0].ends_with("User unknown"), "{}", r.text());
    c.cmd("QUIT");

    let input = b"EHLO client.test\nMAIL FROM:<a@y.test>\nRCPT TO:<b@x.test>\nDATA\n\
Subject: over tls\n\nsecret body\n.\nQUIT\n";
    let out = run_bounded(
        Command::new("openssl")
            .args(["s_client", "-starttls", "smtp", "-crlf", "-ign_eof"])
            .args(["-verify_return_error", "-verify_hostname", "mx.tls.test"])
            .arg("-connect")
            .arg(pf.addr().to_string())
            .arg("-CAfile")
            .arg(&cert),
        input,
        WAIT,
    )
    .expect("openssl s_client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = pf.wait_for_delivered(1, WAIT).unwrap();
    let text = d[0].text();
    assert!(text.contains("secret body"), "{text}");
    assert!(
        text.contains("(using TLS"),
        "TLS noted in Received:\n{text}"
    );
}
