//! Entry points of the fuzz targets for the SMTP parsers (`fuzz/fuzz_targets/`),
//! kept here so that `cargo test` runs the same code under proptest on stable Rust.

use volley_conf::ListenRole;

use crate::client::{Session, SessionConfig, Transaction};
use crate::reply::{parse_reply, Parse};
use crate::server::{self, RelayPolicy, Settings};

/// Arbitrary bytes as server replies: to the reply parser, then to a client
/// session (greeting, EHLO, a pipelined transaction). Must never panic.
pub fn smtp_replies(data: &[u8]) {
    let mut rest = data;
    while let Ok(Parse::Complete(_, used)) = parse_reply(rest) {
        if used == 0 || used > rest.len() {
            break;
        }
        rest = &rest[used..];
    }
    let mut session = Session::new(SessionConfig::new("fuzz.test"));
    let _ = session.enqueue(Transaction {
        id: 1,
        mail_from: "a@b.test".into(),
        rcpt_to: vec!["c@d.test".into()],
        body: bytes::Bytes::from_static(b"Subject: x\r\n\r\nbody\r\n"),
        crlf_only: false,
    });
    for chunk in data.chunks(7) {
        session.feed(chunk);
        while session.poll_event().is_some() {}
        session.output().clear();
    }
    session.connection_lost();
    while session.poll_event().is_some() {}
}

/// Arbitrary bytes as SMTP client input to a server session (STARTTLS and AUTH
/// offered, every decision answered; the first byte picks the read size, the
/// verdicts and the listener role). Must never panic, and every reply line must be
/// well formed: `NNN` and a space or hyphen, CRLF-terminated with no other CR or
/// LF, at most 512 bytes, with an enhanced status code of the same class (2 for
/// 354) except
/// for the greeting, EHLO/HELO lines and 334 challenges.
pub fn smtp_commands(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let role = if mode & 1 == 0 {
        ListenRole::Submission
    } else {
        ListenRole::Inbound
    };
    let mut settings = Settings::new(
        "mx.fuzz.test",
        RelayPolicy::new(role, vec![], ["fuzz.test".to_owned()]),
    );
    settings.starttls = true;
    settings.auth = true;
    settings.max_message_size = 4096;
    settings.max_recipients = 4;
    settings.max_line_length = 512;
    settings.max_errors = 50;
    let ip = std::net::IpAddr::from([192, 0, 2, 1]);
    let mut session = server::Session::new(std::sync::Arc::new(settings), ip, false);
    let mut out = Vec::new();
    let step = usize::from(mode >> 1).max(1);
    let mut verdict = mode & 0x40 != 0;
    for chunk in input.chunks(step) {
        session.feed(chunk);
        loop {
            out.extend_from_slice(&session.output().split());
            match session.poll_event() {
                None => break,
                Some(server::Event::Authenticate(_)) => session.auth_verdict(verdict),
                Some(server::Event::Message(_)) => {
                    if verdict {
                        session.message_queued("F1");
                    } else {
                        session.message_failed();
                    }
                }
                Some(server::Event::StartTls { .. }) => session.tls_established(),
                Some(server::Event::Closed(_)) => {}
            }
            verdict = !verdict;
        }
    }
    session.timeout();
    out.extend_from_slice(&session.output().split());
    check_server_replies(&out);
}

/// Panics unless `out` is a sequence of well-formed server reply lines (see
/// [`smtp_commands`]).
fn check_server_replies(out: &[u8]) {
    let mut rest = out;
    let mut in_ehlo = false;
    let mut first = true;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("unterminated reply {:?}", String::from_utf8_lossy(rest)));
        let line = &rest[..end];
        rest = &rest[end + 2..];
        let text = String::from_utf8_lossy(line);
        assert!(line.len() + 2 <= 512, "reply too long: {text}");
        assert!(
            !line.contains(&b'\r') && !line.contains(&b'\n'),
            "bare line end: {text:?}"
        );
        assert!(
            line.len() >= 4
                && line[..3].iter().all(u8::is_ascii_digit)
                && matches!(line[3], b' ' | b'-'),
            "malformed reply: {text:?}"
        );
        let code = &text[..3];
        let continued = line[3] == b'-';
        // EHLO: the first 250 line is the host name; keywords follow.
        let exempt = first || in_ehlo || code == "334" || (code == "250" && continued);
        let helo_reply = code == "250" && text.ends_with("mx.fuzz.test");
        if !(exempt || helo_reply) {
            let enhanced = text[4..].split(' ').next().unwrap_or_default();
            let parts: Vec<&str> = enhanced.split('.').collect();
            // RFC 3463 has classes 2, 4 and 5; a 3xx (354) goes on with 2.
            let class = if code.starts_with('3') {
                "2"
            } else {
                &code[..1]
            };
            assert!(
                parts.len() == 3
                    && parts[0] == class
                    && parts
                        .iter()
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
                "no enhanced status code: {text:?}"
            );
        }
        in_ehlo = code == "250" && continued;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn replies_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            smtp_replies(&data);
        }

        #[test]
        fn reply_shaped_input_never_panics(lines in proptest::collection::vec("[0-9]{3}[ -][ -~]{0,20}\r\n", 0..12)) {
            smtp_replies(lines.concat().as_bytes());
        }

        #[test]
        fn smtp_commands_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            smtp_commands(&data);
        }

        #[test]
        fn command_shaped_input_never_panics(
            mode in any::<u8>(),
            lines in proptest::collection::vec(prop_oneof![
                Just("EHLO c.test".to_owned()),
                Just("HELO c.test".to_owned()),
                Just("STARTTLS".to_owned()),
                Just("AUTH PLAIN AGFsaWNlAHNlY3JldA==".to_owned()),
                Just("AUTH LOGIN".to_owned()),
                Just("YWxpY2U=".to_owned()),
                Just("MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME".to_owned()),
                Just("MAIL FROM:<>".to_owned()),
                Just("RCPT TO:<u@fuzz.test>".to_owned()),
                Just("RCPT TO:<u@else.test>".to_owned()),
                Just("DATA".to_owned()),
                Just(".".to_owned()),
                Just("RSET".to_owned()),
                Just("QUIT".to_owned()),
                "BDAT [0-9]{1,2}( LAST)?",
                "[ -~]{0,30}",
            ], 0..30),
            ends in proptest::collection::vec(prop_oneof![Just("\r\n"), Just("\n"), Just("\r")], 30),
        ) {
            let mut data = vec![mode];
            for (line, end) in lines.iter().zip(ends.iter()) {
                data.extend_from_slice(line.as_bytes());
                data.extend_from_slice(end.as_bytes());
            }
            smtp_commands(&data);
        }
    }

    #[test]
    fn a_whole_session_passes_the_reply_check() {
        let mut data = vec![0x40 | (64 << 1) as u8];
        data.extend_from_slice(
            b"EHLO c\r\nSTARTTLS\r\nEHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n\
              MAIL FROM:<a@b.test>\r\nRCPT TO:<u@x.test>\r\nDATA\r\nhi\r\n.\r\nBOGUS\r\nQUIT\r\n",
        );
        smtp_commands(&data);
    }

    #[test]
    #[should_panic(expected = "no enhanced status code")]
    fn the_reply_check_can_fail() {
        check_server_replies(b"220 greeting\r\n550 Relaying denied\r\n");
    }
}
