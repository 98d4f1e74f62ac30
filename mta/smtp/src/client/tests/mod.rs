//! Whole sessions scripted from real server transcripts: bytes in, bytes out. This
//! module holds the transcripts and the harness; the tests are in its children.

use super::*;
use crate::reply::Enhanced;

mod handshake;
mod properties;
mod transactions;

const HELO: &str = "mta1.volley.example";

const GMAIL_GREETING: &str = "220 mx.google.com ESMTP a1-20020a170906.123 - gsmtp\r\n";
const GMAIL_EHLO: &str = "250-mx.google.com at your service, [203.0.113.5]\r\n\
    250-SIZE 157286400\r\n\
    250-8BITMIME\r\n\
    250-STARTTLS\r\n\
    250-ENHANCEDSTATUSCODES\r\n\
    250-PIPELINING\r\n\
    250-CHUNKING\r\n\
    250 SMTPUTF8\r\n";
const GMAIL_EHLO_TLS: &str = "250-mx.google.com at your service, [203.0.113.5]\r\n\
    250-SIZE 157286400\r\n\
    250-8BITMIME\r\n\
    250-ENHANCEDSTATUSCODES\r\n\
    250-PIPELINING\r\n\
    250-CHUNKING\r\n\
    250 SMTPUTF8\r\n";
const GMAIL_MAIL_OK: &str = "250 2.1.0 OK a1-20020a170906.123 - gsmtp\r\n";
const GMAIL_RCPT_OK: &str = "250 2.1.5 OK a1-20020a170906.123 - gsmtp\r\n";
const GMAIL_BDAT_OK: &str = "250 2.0.0 OK  1700000000 a1-20020a170906.123 - gsmtp\r\n";
const GMAIL_RSET_OK: &str = "250 2.1.5 Flushed a1-20020a170906.123 - gsmtp\r\n";
const GMAIL_NO_SUCH_USER: &str =
    "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n\
     550-5.1.1 double-checking the recipient's email address for typos or\r\n\
     550-5.1.1 unnecessary spaces. For more information, go to\r\n\
     550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1-20020a170906.123 - gsmtp\r\n";

const POSTFIX_GREETING: &str = "220 mail.example.org ESMTP Postfix (Debian/GNU)\r\n";
const POSTFIX_EHLO: &str = "250-mail.example.org\r\n\
    250-PIPELINING\r\n\
    250-SIZE 10240000\r\n\
    250-VRFY\r\n\
    250-ETRN\r\n\
    250-ENHANCEDSTATUSCODES\r\n\
    250-8BITMIME\r\n\
    250-DSN\r\n\
    250-SMTPUTF8\r\n\
    250 CHUNKING\r\n";
const POSTFIX_354: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";

const EXCHANGE_GREETING: &str = "220 EXCH01.corp.example.com Microsoft ESMTP MAIL Service ready at Mon, 1 Jan 2024 10:00:00 +0000\r\n";
const EXCHANGE_EHLO: &str = "250-EXCH01.corp.example.com Hello [203.0.113.5]\r\n\
    250-SIZE 37748736\r\n\
    250-PIPELINING\r\n\
    250-DSN\r\n\
    250-ENHANCEDSTATUSCODES\r\n\
    250-STARTTLS\r\n\
    250-X-ANONYMOUSTLS\r\n\
    250-AUTH NTLM\r\n\
    250-X-EXPS GSSAPI NTLM\r\n\
    250-8BITMIME\r\n\
    250-BINARYMIME\r\n\
    250-CHUNKING\r\n\
    250 XRDST\r\n";
const EXCHANGE_EHLO_TLS: &str = "250-EXCH01.corp.example.com Hello [203.0.113.5]\r\n\
    250-SIZE 37748736\r\n\
    250-PIPELINING\r\n\
    250-DSN\r\n\
    250-ENHANCEDSTATUSCODES\r\n\
    250-AUTH NTLM LOGIN\r\n\
    250-8BITMIME\r\n\
    250-BINARYMIME\r\n\
    250-CHUNKING\r\n\
    250 XRDST\r\n";

/// Sendmail without PIPELINING or CHUNKING.
const SENDMAIL_GREETING: &str =
    "220 legacy.example.net ESMTP Sendmail 8.14.7/8.14.7; Mon, 1 Jan 2024 10:00:00 GMT\r\n";
const SENDMAIL_EHLO: &str =
    "250-legacy.example.net Hello mta1.volley.example [203.0.113.5], pleased to meet you\r\n\
    250-ENHANCEDSTATUSCODES\r\n\
    250-8BITMIME\r\n\
    250-SIZE\r\n\
    250-DSN\r\n\
    250 HELP\r\n";

/// Three messages: LF line ends, a line starting with '.', no final line end.
const BODY1: &[u8] = b"Subject: one\n\nHello\n"; // 23 bytes normalized
const BODY2: &[u8] = b"Subject: two\r\n\r\n.dotted\r\n"; // 25
const BODY3: &[u8] = b"Subject: three\r\n\r\nBye"; // 21

fn tx(id: u64, from: &str, rcpts: &[&str], body: &[u8]) -> Transaction {
    Transaction {
        id,
        mail_from: from.into(),
        rcpt_to: rcpts.iter().map(|r| r.to_string()).collect(),
        body: Bytes::copy_from_slice(body),
        crlf_only: false,
    }
}

fn three(domain: &str) -> [Transaction; 3] {
    [
        tx(
            1,
            "bounce+1@news.example",
            &[&format!("alice@{domain}")],
            BODY1,
        ),
        tx(
            2,
            "bounce+2@news.example",
            &[&format!("bob@{domain}")],
            BODY2,
        ),
        tx(3, "", &[&format!("carol@{domain}")], BODY3),
    ]
}

fn config(tls: TlsMode) -> SessionConfig {
    let mut config = SessionConfig::new(HELO);
    config.tls = tls;
    config
}

/// Drives a session the way the tokio driver will: feed, poll, take output.
struct Harness {
    session: Session,
    events: Vec<Event>,
}

impl Harness {
    fn new(config: SessionConfig) -> Harness {
        Harness {
            session: Session::new(config),
            events: Vec::new(),
        }
    }

    /// Greeting, EHLO, and `Ready` with no STARTTLS.
    fn ready(config: SessionConfig, greeting: &str, ehlo: &str) -> Harness {
        let mut h = Harness::new(config);
        h.script(&[("", greeting), (&format!("EHLO {HELO}\r\n"), ehlo)]);
        assert!(
            matches!(h.take_events()[..], [Event::Ready(_)]),
            "not ready"
        );
        h
    }

    fn server(&mut self, bytes: &str) {
        self.session.feed(bytes.as_bytes());
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(event) = self.session.poll_event() {
            self.events.push(event);
        }
    }

    fn take_output(&mut self) -> String {
        let written = self.session.output().split();
        String::from_utf8(written.to_vec()).unwrap()
    }

    /// Asserts the client wrote exactly `client` since the last step, then feeds
    /// `server`.
    fn script(&mut self, steps: &[(&str, &str)]) {
        for (client, server) in steps {
            assert_eq!(self.take_output(), *client);
            self.server(server);
        }
    }

    fn enqueue(&mut self, tx: Transaction) {
        self.session.enqueue(tx).unwrap();
        self.collect();
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn take_results(&mut self) -> Vec<TransactionResult> {
        self.take_events()
            .into_iter()
            .map(|e| match e {
                Event::TransactionDone(r) => r,
                other => panic!("expected TransactionDone, got {other:?}"),
            })
            .collect()
    }
}

fn assert_rcpt(result: &RcptResult, rcpt: &str, code: u16, stage: Stage, local: bool) {
    assert_eq!(result.rcpt, rcpt);
    assert_eq!(
        (result.reply.code, result.stage, result.local),
        (code, stage, local),
        "{result:?}"
    );
}

fn closed_with(events: &[Event]) -> &CloseReason {
    match events.last() {
        Some(Event::Closed(reason)) => reason,
        other => panic!("expected Closed, got {other:?}"),
    }
}
