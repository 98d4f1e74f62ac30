//! Byte transcripts against the server session, with a scripted driver.

use std::net::IpAddr;
use std::sync::Arc;

use volley_conf::ListenRole;

use super::*;

const GREETING: &str = "220 mx.acme.test ESMTP volley\r\n";
const EHLO_PLAIN: &str = "250-mx.acme.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
    250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n";
const EHLO_STARTTLS: &str = "250-mx.acme.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
    250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n\
    250 STARTTLS\r\n";
const EHLO_AUTH: &str = "250-mx.acme.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
    250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n\
    250 AUTH PLAIN LOGIN\r\n";
/// `\0alice\0secret`
const PLAIN_OK: &str = "AGFsaWNlAHNlY3JldA==";
/// `\0alice\0wrong`
const PLAIN_BAD: &str = "AGFsaWNlAHdyb25n";

fn settings(role: ListenRole, networks: &[&str]) -> Settings {
    let networks = networks
        .iter()
        .map(|n| n.parse().unwrap_or_else(|e| panic!("{n}: {e}")))
        .collect();
    let mut s = Settings::new(
        "mx.acme.test",
        RelayPolicy::new(role, networks, ["acme.test".to_owned()]),
    );
    s.max_message_size = 1000;
    s.max_recipients = 3;
    s.max_errors = 5;
    s.max_junk_commands = 5;
    s.max_line_length = 512;
    s
}

/// Where the first `DATA` command line of `input` ends, if more follows it.
fn data_line_end(input: &[u8]) -> Option<usize> {
    let at = if input.starts_with(b"DATA\r\n") {
        0
    } else {
        input.windows(8).position(|w| w == b"\r\nDATA\r\n")? + 2
    };
    let end = at + 6;
    (end < input.len()).then_some(end)
}

/// A scripted driver: accepts alice/secret, queues messages as Q1, Q2... (or
/// fails them), completes TLS handshakes at once.
struct Driver {
    session: Session,
    out: String,
    messages: Vec<Message>,
    discarded: Vec<usize>,
    closed: Option<CloseReason>,
    deposit_ok: bool,
}

impl Driver {
    fn new(settings: Settings) -> Driver {
        Driver::from_ip(settings, "203.0.113.9")
    }

    fn from_ip(settings: Settings, ip: &str) -> Driver {
        let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
        let mut driver = Driver {
            session: Session::new(Arc::new(settings), ip, false),
            out: String::new(),
            messages: Vec::new(),
            discarded: Vec::new(),
            closed: None,
            deposit_ok: true,
        };
        driver.drain();
        driver
    }

    /// Feeds `input` in one piece; returns the replies it produced.
    fn send(&mut self, input: &str) -> String {
        self.send_bytes(input.as_bytes())
    }

    /// Feeds `input` as a client that waits for the 354 after each `DATA`
    /// line does: in pieces, each ending after a `DATA` line.
    fn send_bytes(&mut self, input: &[u8]) -> String {
        let before = self.out.len();
        let mut rest = input;
        while let Some(at) = data_line_end(rest) {
            self.session.feed(&rest[..at]);
            self.drain();
            rest = &rest[at..];
        }
        self.session.feed(rest);
        self.drain();
        self.out[before..].to_owned()
    }

    /// Feeds `input` in one piece, as a client that never waits.
    fn send_blind(&mut self, input: &[u8]) -> String {
        let before = self.out.len();
        self.session.feed(input);
        self.drain();
        self.out[before..].to_owned()
    }

    fn drain(&mut self) {
        loop {
            self.take_output();
            match self.session.poll_event() {
                None => break,
                Some(Event::Authenticate(c)) => {
                    let ok = c.user == "alice" && c.password == "secret";
                    self.session.auth_verdict(ok);
                }
                Some(Event::Message(m)) => {
                    self.messages.push(*m);
                    if self.deposit_ok {
                        let id = format!("Q{}", self.messages.len());
                        self.session.message_queued(&id);
                    } else {
                        self.session.message_failed();
                    }
                }
                Some(Event::StartTls { discarded }) => {
                    self.take_output();
                    self.discarded.push(discarded);
                    self.session.tls_established();
                }
                Some(Event::Closed(reason)) => self.closed = Some(reason),
            }
        }
    }

    fn take_output(&mut self) {
        let out = self.session.output().split();
        self.out.push_str(&String::from_utf8_lossy(&out));
    }

    /// EHLO and a STARTTLS handshake.
    fn tls(settings: Settings) -> Driver {
        let mut d = Driver::new(Settings {
            starttls: true,
            auth: true,
            ..settings
        });
        d.send("EHLO c.test\r\nSTARTTLS\r\n");
        assert!(d.session.tls());
        d.send("EHLO c.test\r\n");
        d
    }
}

#[test]
fn greeting_and_ehlo_capabilities() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    assert_eq!(d.out, GREETING);
    assert_eq!(d.send("EHLO client.test\r\n"), EHLO_PLAIN);
    assert_eq!(d.send("HELO client.test\r\n"), "250 mx.acme.test\r\n");

    // STARTTLS offered until TLS is on; AUTH only after it (submission).
    let s = Settings {
        starttls: true,
        auth: true,
        ..settings(ListenRole::Submission, &[])
    };
    let mut d = Driver::new(s);
    assert_eq!(d.send("EHLO client.test\r\n"), EHLO_STARTTLS);
    assert_eq!(d.send("STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(d.send("EHLO client.test\r\n"), EHLO_AUTH);
    assert_eq!(d.send("STARTTLS\r\n"), "503 5.5.1 TLS already active\r\n");
}

#[test]
fn a_message_with_helo_and_unstuffing() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    let replies =
        d.send("HELO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<U@Acme.Test>\r\nDATA\r\n");
    assert_eq!(
        replies,
        "250 mx.acme.test\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
         354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert_eq!(d.send("Subject: x\r\n\r\n..leading dot\r\n.."), "");
    assert_eq!(d.send("\r\n.\r"), "");
    assert_eq!(d.send("\n"), "250 2.0.0 Ok: queued as Q1\r\n");
    let m = &d.messages[0];
    assert_eq!(m.data, b"Subject: x\r\n\r\n.leading dot\r\n.\r\n");
    assert_eq!(
        m.envelope,
        Envelope {
            mail_from: "a@b.test".into(),
            rcpt_to: vec!["U@Acme.Test".into()],
            eight_bit_mime: false,
            smtputf8: false,
            client_ip: "203.0.113.9".parse().unwrap_or(m.envelope.client_ip),
            helo: "client.test".into(),
            esmtp: false,
            user: None,
            tls: false,
            ret: None,
            envid: None,
            rcpt_dsn: vec![Default::default()],
        }
    );
    assert_eq!(m.envelope.protocol(), "SMTP");
    // The next transaction starts clean.
    assert_eq!(
        d.send("RCPT TO:<u@acme.test>\r\nQUIT\r\nNOOP\r\n"),
        "503 5.5.1 Need MAIL before RCPT\r\n221 2.0.0 mx.acme.test closing connection\r\n"
    );
    assert_eq!(d.closed, Some(CloseReason::Quit));
    assert_eq!(d.send("NOOP\r\n"), "");
}

#[test]
fn pipelined_group_is_answered_in_order() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    let replies = d.send(
        "EHLO c.test\r\nMAIL FROM:<> BODY=8BITMIME SIZE=100\r\nRCPT TO:<x@acme.test>\r\n\
         RCPT TO:<y@other.test>\r\nRCPT TO:<z@acme.test>\r\nDATA\r\nhello\r\n.\r\n\
         MAIL FROM:<a@b.test>\r\nRCPT TO:<x@acme.test>\r\nBDAT 6\r\nhi\r\nyoBDAT 0 LAST\r\nNOOP\r\n",
    );
    assert_eq!(
        replies,
        format!(
            "{EHLO_PLAIN}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.7.1 Relaying denied\r\n\
             250 2.1.5 Ok\r\n354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n\
             250 2.0.0 Ok: queued as Q1\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
             250 2.0.0 6 octets received\r\n250 2.0.0 Ok: queued as Q2\r\n250 2.0.0 Ok\r\n"
        )
    );
    assert_eq!(d.messages.len(), 2);
    assert_eq!(
        d.messages[0].envelope.rcpt_to,
        ["x@acme.test", "z@acme.test"]
    );
    assert_eq!(d.messages[0].envelope.mail_from, "");
    assert!(d.messages[0].envelope.eight_bit_mime);
    assert_eq!(d.messages[0].data, b"hello\r\n");
    assert_eq!(d.messages[1].data, b"hi\r\nyo");
    assert_eq!(d.messages[1].envelope.protocol(), "ESMTP");
}

#[test]
fn sequence_and_syntax_errors() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    let cases = [
        ("MAIL FROM:<a@b.test>\r\n", "503 5.5.1 Send EHLO first\r\n"),
        ("FOO\r\n", "500 5.5.1 Command unrecognized\r\n"),
        ("EHLO c.test\r\n", EHLO_PLAIN),
        (
            "RCPT TO:<u@acme.test>\r\n",
            "503 5.5.1 Need MAIL before RCPT\r\n",
        ),
        ("DATA\r\n", "503 5.5.1 Need MAIL before DATA\r\n"),
    ];
    for (input, expected) in cases {
        assert_eq!(d.send(input), expected, "{input:?}");
    }
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    let cases = [
        ("EHLO c.test\r\n", EHLO_PLAIN),
        ("MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok\r\n"),
        (
            "MAIL FROM:<a@b.test>\r\n",
            "503 5.5.1 Nested MAIL command\r\n",
        ),
        ("DATA\r\n", "554 5.5.1 No valid recipients\r\n"),
        (
            "RCPT TO:<ü@acme.test>\r\n",
            "553 5.6.7 Non-ASCII address needs SMTPUTF8\r\n",
        ),
        ("RSET\r\n", "250 2.0.0 Ok\r\n"),
    ];
    for (input, expected) in cases {
        assert_eq!(d.send(input), expected, "{input:?}");
    }
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    let replies = d.send(
        "EHLO c.test\r\nMAIL FROM:<ü@b.test> SMTPUTF8\r\nRCPT TO:<ü@acme.test>\r\n\
         VRFY x\r\nHELP\r\nAUTH PLAIN\r\nSTARTTLS\r\n",
    );
    assert_eq!(
        replies,
        format!(
            "{EHLO_PLAIN}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
             252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n\
             214 2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT\r\n\
             502 5.5.1 AUTH not available\r\n502 5.5.1 STARTTLS not available\r\n"
        )
    );
}

#[test]
fn too_many_errors_closes() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    let replies = d.send("A\r\nB\r\nC\r\nD\r\nE\r\nEHLO c.test\r\n");
    assert_eq!(
        replies,
        "500 5.5.1 Command unrecognized\r\n".repeat(5)
            + "421 4.7.0 mx.acme.test Too many errors, closing connection\r\n"
    );
    assert_eq!(d.closed, Some(CloseReason::TooManyErrors));
    assert!(d.session.is_closed());
}

#[test]
fn too_many_commands_without_mail_closes() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    d.send("EHLO c.test\r\n");
    let replies = d.send(&"NOOP\r\n".repeat(7));
    assert_eq!(
        replies,
        "250 2.0.0 Ok\r\n".repeat(5)
            + "421 4.7.0 mx.acme.test Too many commands without mail, closing connection\r\n"
    );
    assert_eq!(d.closed, Some(CloseReason::TooManyJunkCommands));
}

#[test]
fn overlong_command_line_is_refused_and_skipped() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    let long = format!("NOOP {}\r\n", "x".repeat(600));
    // The line arrives in pieces; the reply comes as soon as the limit is passed.
    assert_eq!(d.send(&long[..300]), "");
    assert_eq!(d.send(&long[300..]), "500 5.5.2 Line too long\r\n");
    assert_eq!(d.send("NOOP\r\n"), "250 2.0.0 Ok\r\n");
    // A 512-byte line (CRLF included) is fine.
    let max = format!("NOOP {}\r\n", "x".repeat(505));
    assert_eq!(max.len(), 512);
    assert_eq!(d.send(&max), "250 2.0.0 Ok\r\n");
}

#[test]
fn message_size_limits() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    d.send("EHLO c.test\r\n");
    assert_eq!(
        d.send("MAIL FROM:<a@b.test> SIZE=1001\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    // Too big in DATA: read to the end, then refused; nothing stored.
    d.send("MAIL FROM:<a@b.test> SIZE=1000\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
    let line = format!("{}\r\n", "x".repeat(98));
    assert_eq!(d.send(&line.repeat(10)), "");
    assert_eq!(
        d.send("y\r\n.\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert!(d.messages.is_empty());
    // The transaction is over: a new one works.
    assert_eq!(
        d.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\nok\r\n.\r\n"),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n\
         250 2.0.0 Ok: queued as Q1\r\n"
    );
    // Exactly the limit is fine.
    d.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
    assert_eq!(
        d.send(&(line.repeat(10) + ".\r\n")),
        "250 2.0.0 Ok: queued as Q2\r\n"
    );
    assert_eq!(d.messages[1].data.len(), 1000);
}

#[test]
fn too_many_recipients() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    let replies = d.send(
        "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<1@acme.test>\r\nRCPT TO:<2@acme.test>\r\n\
         RCPT TO:<3@acme.test>\r\nRCPT TO:<4@acme.test>\r\nRCPT TO:<5@acme.test>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert!(
        replies.ends_with(
            "250 2.1.5 Ok\r\n452 4.5.3 Too many recipients\r\n452 4.5.3 Too many recipients\r\n\
             354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n"
        ),
        "{replies}"
    );
    assert_eq!(d.messages[0].envelope.rcpt_to.len(), 3);
}

#[test]
fn long_lines_in_data_are_refused() {
    let mut d = Driver::new(Settings {
        max_message_size: 10_000,
        ..settings(ListenRole::Inbound, &[])
    });
    d.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
    let replies = d.send(&format!("{}\r\n.\r\n", "x".repeat(999)));
    assert_eq!(
        replies,
        "550 5.6.0 Message refused: line longer than 998 characters\r\n"
    );
    assert!(d.messages.is_empty());
}

/// Every way of hiding a second transaction behind a non-CRLF "end of data".
const SMUGGLING: [&str; 8] = [
    "\n.\n", "\r.\r", "\r.\n", "\n.\r\n", "\r\n.\n", "\r\n.\r", "\r.\r\n", "\n.\r",
];

#[test]
fn smuggled_transactions_never_run() {
    for variant in SMUGGLING {
        for bdat in [false, true] {
            let mut d = Driver::from_ip(settings(ListenRole::Submission, &[]), "127.0.0.1");
            d.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\n");
            let smuggled = format!(
                "Subject: hi\r\n\r\nhello{variant}MAIL FROM:<evil@b.test>\r\n\
                 RCPT TO:<victim@acme.test>\r\nDATA\r\nforged\r\n.\r\n"
            );
            let replies = if bdat {
                d.send(&format!("BDAT {} LAST\r\n{smuggled}", smuggled.len()))
            } else {
                d.send(&format!("DATA\r\n{smuggled}"))
            };
            let refusal =
                "550 5.6.0 Message refused: bare CR or LF in message content (lines must end with CRLF)\r\n";
            let expected = if bdat {
                refusal.to_owned()
            } else {
                format!("354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n{refusal}")
            };
            assert_eq!(replies, expected, "{variant:?} bdat={bdat}");
            assert!(d.messages.is_empty(), "{variant:?}");
            // The session goes on; the smuggled sender was never seen as a command.
            assert_eq!(
                d.send("RCPT TO:<u@acme.test>\r\n"),
                "503 5.5.1 Need MAIL before RCPT\r\n"
            );
        }
    }
}

#[test]
fn bare_line_ends_are_refused_whole() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    d.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
    assert_eq!(d.send("a\nb\r\n"), "");
    assert_eq!(d.send("c\r\n.\r\n").get(..9), Some("550 5.6.0"));
    // BDAT: refused at the end of the chunk that has it; the transaction is over
    // and later chunks are read and refused (RFC 3030 §2).
    let replies = d.send(
        "MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nBDAT 3\r\na\rbBDAT 5 LAST\r\nc\r\n\r\nNOOP\r\n",
    );
    assert_eq!(
        replies,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.6.0 Message refused: bare CR or LF in message \
         content (lines must end with CRLF)\r\n503 5.5.1 Need MAIL and RCPT before BDAT\r\n\
         250 2.0.0 Ok\r\n"
    );
    // A CR at the end of a chunk pairs with an LF at the start of the next one.
    let replies =
        d.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nBDAT 2\r\na\rBDAT 1 LAST\r\n\n");
    assert!(
        replies.ends_with("250 2.0.0 Ok: queued as Q1\r\n"),
        "{replies}"
    );
    assert_eq!(d.messages[0].data, b"a\r\n");
    // A CR at the very end is bare.
    let replies = d.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nBDAT 2 LAST\r\na\r");
    assert!(
        replies.ends_with("(lines must end with CRLF)\r\n"),
        "{replies}"
    );
}

#[test]
fn bdat_chunks_are_binary_and_always_consumed() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    d.send("EHLO c.test\r\n");
    // No transaction: the chunk is still read (its content is not a command).
    assert_eq!(
        d.send("BDAT 12\r\nQUIT\r\nNOOP\r\n"),
        "503 5.5.1 Need MAIL and RCPT before BDAT\r\n"
    );
    assert!(!d.session.is_closed());
    assert_eq!(
        d.send("MAIL FROM:<a@b.test>\r\nBDAT 2 LAST\r\nhi"),
        "250 2.1.0 Ok\r\n554 5.5.1 No valid recipients\r\n"
    );
    // Chunk split across reads, with control and 8-bit bytes (NUL is refused:
    // nul_in_content_is_refused_whole).
    d.send("RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\n");
    assert_eq!(d.send_bytes(b"BDAT 5 LAST\r\n\x01\xff"), "");
    assert_eq!(d.send("\r\nx"), "250 2.0.0 Ok: queued as Q1\r\n");
    assert_eq!(d.messages[0].data, b"\x01\xff\r\nx");
    // Size limit across chunks.
    d.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\n");
    let chunk = format!("{}\r\n", "x".repeat(98)).repeat(6);
    let replies = d.send(&format!("BDAT 600\r\n{chunk}BDAT 600 LAST\r\n{chunk}"));
    assert_eq!(
        replies,
        "250 2.0.0 600 octets received\r\n\
         552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    // DATA after BDAT in one transaction.
    d.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nBDAT 1\r\nx");
    assert_eq!(
        d.send("DATA\r\n"),
        "503 5.5.1 DATA not allowed after BDAT\r\n"
    );
}

#[test]
fn relay_rules() {
    // Inbound: local domains only, whatever the network.
    let mut d = Driver::from_ip(settings(ListenRole::Inbound, &["0.0.0.0/0"]), "127.0.0.1");
    assert_eq!(
        d.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@gmail.test>\r\nRCPT TO:<x@ACME.test>\r\n"),
        format!("{EHLO_PLAIN}250 2.1.0 Ok\r\n550 5.7.1 Relaying denied\r\n250 2.1.5 Ok\r\n")
    );
    // Submission from a trusted network: anything.
    let mut d = Driver::from_ip(
        settings(ListenRole::Submission, &["127.0.0.0/8"]),
        "127.0.0.1",
    );
    d.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
    assert_eq!(d.send("RCPT TO:<x@gmail.test>\r\n"), "250 2.1.5 Ok\r\n");
    // Submission from elsewhere without AUTH: local only.
    let mut d = Driver::from_ip(
        settings(ListenRole::Submission, &["127.0.0.0/8"]),
        "10.0.0.1",
    );
    d.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
    assert_eq!(
        d.send("RCPT TO:<x@gmail.test>\r\n"),
        "550 5.7.1 Relaying denied\r\n"
    );
    assert_eq!(d.send("RCPT TO:<postmaster>\r\n"), "250 2.1.5 Ok\r\n");
}

#[test]
fn auth_needs_tls() {
    let mut d = Driver::new(Settings {
        starttls: true,
        auth: true,
        ..settings(ListenRole::Submission, &[])
    });
    d.send("EHLO c.test\r\n");
    assert_eq!(
        d.send(&format!("AUTH PLAIN {PLAIN_OK}\r\n")),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    assert_eq!(d.session.user(), None);
}

#[test]
fn auth_plain_allows_relaying() {
    let mut d = Driver::tls(settings(ListenRole::Submission, &[]));
    d.send("MAIL FROM:<a@b.test>\r\n");
    assert_eq!(
        d.send("RCPT TO:<x@gmail.test>\r\n"),
        "550 5.7.1 Relaying denied\r\n"
    );
    assert_eq!(
        d.send(&format!("AUTH PLAIN {PLAIN_OK}\r\n")),
        "503 5.5.1 AUTH not allowed during a mail transaction\r\n"
    );
    d.send("RSET\r\n");
    assert_eq!(
        d.send(&format!("AUTH PLAIN {PLAIN_BAD}\r\n")),
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert_eq!(
        d.send(&format!("AUTH PLAIN {PLAIN_OK}\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@gmail.test>\r\nDATA\r\nx\r\n.\r\n")),
        "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
         354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n"
    );
    let envelope = &d.messages[0].envelope;
    assert_eq!(envelope.user.as_deref(), Some("alice"));
    assert!(envelope.tls);
    assert_eq!(envelope.protocol(), "ESMTPSA");
    assert_eq!(
        d.send(&format!("AUTH PLAIN {PLAIN_OK}\r\n")),
        "503 5.5.1 Already authenticated\r\n"
    );
}

#[test]
fn auth_plain_and_login_dialogues() {
    let mut d = Driver::tls(settings(ListenRole::Submission, &[]));
    assert_eq!(d.send("AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(d.send("*\r\n"), "501 5.0.0 Authentication cancelled\r\n");
    assert_eq!(
        d.send("AUTH PLAIN =\r\n"),
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert_eq!(d.send("AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(
        d.send("!!!\r\n"),
        "501 5.5.2 Invalid base64 in AUTH response\r\n"
    );
    assert_eq!(
        d.send("AUTH CRAM-MD5\r\n"),
        "504 5.5.4 Unrecognized authentication type\r\n"
    );
    assert_eq!(d.send("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(d.send("YWxpY2U=\r\n"), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        d.send("c2VjcmV0\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(d.session.user(), Some("alice"));

    // LOGIN with the user name as initial response; PLAIN in a second line.
    let mut d = Driver::tls(settings(ListenRole::Submission, &[]));
    assert_eq!(
        d.send("AUTH LOGIN YWxpY2U=\r\nd3Jvbmc=\r\n"),
        "334 UGFzc3dvcmQ6\r\n535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert_eq!(
        d.send(&format!("AUTH PLAIN\r\n{PLAIN_OK}\r\n")),
        "334 \r\n235 2.7.0 Authentication successful\r\n"
    );
}

#[test]
fn failed_auth_counts_as_errors() {
    let mut d = Driver::tls(settings(ListenRole::Submission, &[]));
    let attempt = format!("AUTH PLAIN {PLAIN_BAD}\r\n");
    let replies = d.send(&attempt.repeat(6));
    assert_eq!(
        replies,
        "535 5.7.8 Authentication credentials invalid\r\n".repeat(5)
            + "421 4.7.0 mx.acme.test Too many errors, closing connection\r\n"
    );
}

#[test]
fn starttls_discards_pipelined_input_and_resets() {
    let mut d = Driver::new(Settings {
        starttls: true,
        auth: true,
        ..settings(ListenRole::Submission, &["127.0.0.0/8"])
    });
    let replies = d.send(
        "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<evil@b.test>\r\n",
    );
    assert_eq!(
        replies,
        format!("{EHLO_STARTTLS}250 2.1.0 Ok\r\n220 2.0.0 Ready to start TLS\r\n")
    );
    assert_eq!(d.discarded, [31]);
    // After the handshake: no HELO name, no transaction.
    assert_eq!(
        d.send("MAIL FROM:<a@b.test>\r\n"),
        "503 5.5.1 Send EHLO first\r\n"
    );
    assert_eq!(d.send("EHLO c.test\r\n"), EHLO_AUTH);
    assert_eq!(
        d.send("RCPT TO:<u@acme.test>\r\n"),
        "503 5.5.1 Need MAIL before RCPT\r\n"
    );
}

#[test]
fn input_during_the_handshake_is_dropped() {
    let mut s = Session::new(
        Arc::new(Settings {
            starttls: true,
            ..settings(ListenRole::Inbound, &[])
        }),
        IpAddr::from([192, 0, 2, 1]),
        false,
    );
    s.feed(b"STARTTLS\r\n");
    assert_eq!(s.poll_event(), Some(Event::StartTls { discarded: 0 }));
    assert!(!s.wants_input());
    s.feed(b"EHLO evil\r\n");
    s.output().clear();
    s.tls_established();
    assert_eq!(&s.output()[..], b"");
    s.feed(b"NOOP\r\n");
    assert_eq!(&s.output()[..], b"250 2.0.0 Ok\r\n");
}

#[test]
fn deposit_failure_is_a_temporary_error() {
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    d.deposit_ok = false;
    let replies =
        d.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n");
    assert!(
        replies.ends_with(
            "451 4.3.0 Temporary failure storing the message, try again later\r\n250 2.0.0 Ok\r\n"
        ),
        "{replies}"
    );
}

#[test]
fn decisions_hold_back_the_rest_of_the_input() {
    let mut s = Session::new(
        Arc::new(settings(ListenRole::Inbound, &[])),
        IpAddr::from([192, 0, 2, 1]),
        false,
    );
    s.feed(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
    s.feed(b"x\r\n.\r\nNOOP\r\n");
    assert!(matches!(s.poll_event(), Some(Event::Message(_))));
    assert!(!s.wants_input());
    assert!(!s.output().ends_with(b"250 2.0.0 Ok\r\n"));
    s.message_queued("Q\r\n9");
    assert!(s
        .output()
        .ends_with(b"250 2.0.0 Ok: queued as Q9\r\n250 2.0.0 Ok\r\n"));
    assert!(s.wants_input());
}

#[test]
fn timeouts_and_shutdown() {
    let mut s = Session::new(
        Arc::new(settings(ListenRole::Inbound, &[])),
        IpAddr::from([192, 0, 2, 1]),
        false,
    );
    s.output().clear();
    s.timeout();
    assert_eq!(
        &s.output()[..],
        b"421 4.4.2 mx.acme.test Timeout, closing connection\r\n"
    );
    assert_eq!(s.poll_event(), Some(Event::Closed(CloseReason::Timeout)));
    s.shutdown();
    assert_eq!(s.poll_event(), None);
    assert_eq!(
        Session::busy_greeting("mx"),
        b"421 4.7.0 mx Too many connections, try again later\r\n"
    );
}

/// Refuses addresses whose local part starts with `b-` and ends in `x`.
#[derive(Debug)]
struct RefuseBx;

impl VerpCheck for RefuseBx {
    fn verify(&self, address: &str) -> Result<(), String> {
        match address.split_once('@') {
            Some((local, _)) if local.starts_with("b-") && local.ends_with('x') => {
                Err("forged".into())
            }
            _ => Ok(()),
        }
    }
}

#[test]
fn forged_verp_recipients_are_refused_at_rcpt() {
    let mut s = settings(ListenRole::Inbound, &[]);
    s.relay.domains.insert("bounce.acme.test".to_owned());
    s.verp = Some(Arc::new(RefuseBx));
    let mut d = Driver::new(s);
    let replies = d.send(
        "EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<b-good@bounce.acme.test>\r\n\
         RCPT TO:<b-forgedx@bounce.acme.test>\r\nRCPT TO:<postmaster@bounce.acme.test>\r\nDATA\r\n",
    );
    assert_eq!(
        replies,
        format!(
            "{EHLO_PLAIN}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
             550 5.7.1 Invalid VERP token in the recipient address\r\n\
             250 2.1.5 Ok\r\n354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n"
        )
    );
    d.send("Subject: x\r\n\r\nx\r\n.\r\n");
    assert_eq!(
        d.messages[0].envelope.rcpt_to,
        ["b-good@bounce.acme.test", "postmaster@bounce.acme.test"]
    );
}

#[test]
fn a_refused_message_gets_the_drivers_5xx() {
    let mut session = Session::new(
        Arc::new(settings(ListenRole::Inbound, &[])),
        "203.0.113.9".parse().unwrap_or_else(|e| panic!("{e}")),
        false,
    );
    session.feed(b"HELO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
    session.feed(b"x\r\n.\r\nNOOP\r\n");
    assert!(matches!(session.poll_event(), Some(Event::Message(_))));
    session.output().clear();
    session.message_refused(550, "5.7.1", "Invalid VERP token".into());
    assert_eq!(
        String::from_utf8_lossy(&session.output().split()),
        "550 5.7.1 Invalid VERP token\r\n250 2.0.0 Ok\r\n"
    );
    // Not waiting for a deposit any more: a late verdict does nothing.
    session.message_refused(450, "4.0.0", "x".into());
    session.message_queued("Q1");
    assert!(session.output().is_empty());
}

#[test]
fn nul_in_content_is_refused_whole() {
    const NUL: &str = "550 5.6.0 Message refused: NUL in message content\r\n";
    for role in [ListenRole::Inbound, ListenRole::Submission] {
        let mut d = Driver::new(settings(role, &["10.0.0.0/8"]));
        d.send("EHLO c.test\r\n");
        // A NUL before the dot of what a NUL-dropping next hop would take for
        // the end of the data, then a smuggled transaction: one refused message.
        d.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
        let replies = d.send(
            "Subject: x\r\n\r\nfirst\r\n\x00.\r\nMAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\nsecond\r\n.\r\n",
        );
        assert_eq!(replies, NUL, "{role:?}");
        assert!(d.messages.is_empty(), "{role:?}");
        // Over BDAT too, and wherever it is.
        d.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\n");
        assert_eq!(d.send_bytes(b"BDAT 4 LAST\r\nab\x00c"), NUL, "{role:?}");
        assert!(d.messages.is_empty());
        // The session goes on.
        assert_eq!(d.send("NOOP\r\n"), "250 2.0.0 Ok\r\n");
    }
}

#[test]
fn only_crlf_ends_a_command_line() {
    const BAD: &str = "500 5.5.2 Syntax error: control character in command\r\n";
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    // One line holding a bare LF: one refusal, not two replies.
    assert_eq!(d.send("EHLO a.test\nNOOP\r\n"), BAD);
    d.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
    assert_eq!(
        d.send("RCPT TO:<u@acme.test>\nRCPT TO:<v@acme.test>\r\n"),
        BAD
    );
    // No recipient was taken from it.
    assert_eq!(d.send("DATA\r\n"), "554 5.5.1 No valid recipients\r\n");
    // A dialogue in bare LFs never reaches DATA: it is one unfinished line.
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    assert_eq!(
        d.send("EHLO a.test\nMAIL FROM:<a@b.test>\nRCPT TO:<u@acme.test>\nDATA\n"),
        ""
    );
    assert_eq!(d.send("\r\n"), BAD);
    assert!(d.messages.is_empty());
    // A CRLF split across reads still ends the line.
    assert_eq!(d.send("NOOP\r"), "");
    assert_eq!(d.send("\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn content_beyond_the_budget_waits_with_452() {
    let budget = crate::server::budget::ContentBudget::new(1000);
    let settings = Settings {
        content_budget: Some(Arc::clone(&budget)),
        max_message_size: 600,
        ..settings(ListenRole::Inbound, &[])
    };
    // Two sessions sharing one budget (Settings clones share it).
    let mut a = Driver::new(settings.clone());
    let mut b = Driver::new(settings);
    for d in [&mut a, &mut b] {
        d.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\n");
    }
    // The first reserves the size limit (no SIZE=); the second does not fit.
    assert_eq!(
        a.send("DATA\r\n"),
        "354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert_eq!(budget.used(), 600);
    assert!(b.send("DATA\r\n").starts_with("452 4.3.1 "));
    // Over BDAT the transaction ends with the refusal.
    assert!(b.send("BDAT 3 LAST\r\nabc").starts_with("452 4.3.1 "));
    assert_eq!(
        b.send("BDAT 3 LAST\r\nabc"),
        "503 5.5.1 Need MAIL and RCPT before BDAT\r\n"
    );
    // The first message ends: its share comes back, the other may go.
    assert_eq!(
        a.send("Subject: x\r\n\r\nhi\r\n.\r\n"),
        "250 2.0.0 Ok: queued as Q1\r\n"
    );
    assert_eq!(budget.used(), 0);
    // A declared SIZE reserves only that much, and binds the message to it.
    b.send("MAIL FROM:<a@b.test> SIZE=10\r\nRCPT TO:<u@acme.test>\r\n");
    assert_eq!(
        b.send("DATA\r\n"),
        "354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert_eq!(budget.used(), 10);
    assert!(b
        .send("Subject: too long for SIZE=10\r\n\r\nx\r\n.\r\n")
        .starts_with("552 5.3.4"));
    assert_eq!(budget.used(), 0);
}

#[test]
fn the_budget_stays_reserved_until_the_deposit_answers() {
    let budget = crate::server::budget::ContentBudget::new(1000);
    let settings = Settings {
        content_budget: Some(Arc::clone(&budget)),
        max_message_size: 600,
        ..settings(ListenRole::Inbound, &[])
    };
    let ip: IpAddr = "203.0.113.9".parse().unwrap();
    let mut session = Session::new(Arc::new(settings), ip, false);
    session.feed(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
    session.feed(b"hi\r\n.\r\n");
    let mut message = None;
    while let Some(event) = session.poll_event() {
        if let Event::Message(m) = event {
            message = Some(m);
        }
    }
    let message = message.expect("a message");
    // The bytes are still held (by the driver now) while they are stored.
    assert_eq!(budget.used(), 600);
    drop(message);
    assert_eq!(budget.used(), 600);
    session.message_queued("Q1");
    assert_eq!(budget.used(), 0);
}

#[test]
fn content_sent_before_the_354_ends_an_unauthenticated_session() {
    // hannob's smtpsmug "pipelining" test: a second transaction's DATA and
    // content sent blind behind the first message's end.
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    let replies = d.send_blind(
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n\
          Subject: 1\r\n\r\none\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\n",
    );
    assert!(
        replies.ends_with(
            "250 2.1.5 Ok\r\n554 5.5.0 mx.acme.test Improper pipelining: content sent before the 354 reply to DATA\r\n"
        ),
        "{replies}"
    );
    assert!(d.messages.is_empty());
    assert_eq!(d.closed, Some(CloseReason::ImproperPipelining));
    // Waiting for the 354, then pipelining the next transaction behind the
    // end of data (RFC 2920 allows that), is fine.
    let mut d = Driver::new(settings(ListenRole::Inbound, &[]));
    d.send_blind(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
    let replies =
        d.send_blind(b"one\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
    assert_eq!(
        replies,
        "250 2.0.0 Ok: queued as Q1\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
         354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n"
    );
    // An authenticated client is not cut off (Postfix's rule too).
    let mut d = Driver::tls(settings(ListenRole::Submission, &[]));
    d.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    let replies =
        d.send_blind(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\nhi\r\n.\r\n");
    assert!(replies.ends_with("queued as Q1\r\n"), "{replies}");
}
