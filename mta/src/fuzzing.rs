//! Entry points the fuzz targets call (`fuzz/fuzz_targets/`), kept here so that
//! `cargo test` runs the same code under proptest on stable Rust.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;

use volley_conf::ListenRole;

use crate::inbound::{classify, Envelope, InboundEvent, Verp};
use crate::merge::{RenderContext, Template, TemplateSpec};
use crate::smtp::client::{Session, SessionConfig, Transaction};
use crate::smtp::reply::{parse_reply, Parse};
use crate::smtp::server::{self, RelayPolicy, Settings};

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

/// Arbitrary bytes as a template (TOML, raw message, or stored JSON by the first
/// byte's low bits), compiled and, if valid, rendered with values from the rest.
/// Must never panic; a rendered message has no bare CR or LF.
pub fn template(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (text, values) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let file = Path::new("fuzz.toml");
    let spec = match mode % 3 {
        0 => TemplateSpec::from_toml(&String::from_utf8_lossy(text), file),
        1 => TemplateSpec::from_message(&String::from_utf8_lossy(text), file),
        _ => TemplateSpec::from_stored(text),
    };
    let Ok(spec) = spec else { return };
    let Ok(template) = Template::compile(&spec) else {
        return;
    };
    let mut names: Vec<String> = template.fields_needed().into_iter().collect();
    names.push("text_only".into());
    let fields: Vec<&str> = names.iter().map(String::as_str).collect();
    let vals: Vec<&[u8]> = fields.iter().map(|_| values).collect();
    let ctx = RenderContext::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        1,
    );
    let mut out = BytesMut::new();
    if template
        .render(&fields, &vals, "rcpt@x.test", &ctx, &mut out)
        .is_ok()
    {
        let bytes = &out[..];
        for (i, &b) in bytes.iter().enumerate() {
            let bare_cr = b == b'\r' && bytes.get(i + 1) != Some(&b'\n');
            let bare_lf = b == b'\n' && (i == 0 || bytes[i - 1] != b'\r');
            assert!(!bare_cr && !bare_lf, "bare line end at {i}");
        }
    }
}

/// Arbitrary bytes as an inbound message (a DSN, a feedback report, a reply…)
/// to [`classify()`], with the envelope chosen by the first byte: null or named
/// sender, a valid VERP recipient, another recipient, or a forged VERP one. Also
/// decodes the first line as a VERP address. Must never panic and always answers
/// at least one event; a VERP recipient's events name its target.
pub fn dsn(data: &[u8]) {
    let Some((&mode, message)) = data.split_first() else {
        return;
    };
    let Ok(verp) = Verp::new(&[7u8; 32], "bounce.fuzz.test", "b-") else {
        return;
    };
    let first_line = message.split(|&b| b == b'\n').next().unwrap_or_default();
    let _ = verp.decode(&String::from_utf8_lossy(first_line));
    let valid = verp.return_path(1, 2, 3);
    let rcpt = match mode % 3 {
        0 => valid.clone(),
        1 => "bounces@fuzz.test".to_owned(),
        _ => format!("b-{}@bounce.fuzz.test", "a".repeat(48)),
    };
    let rcpt_to = [rcpt];
    let envelope = Envelope {
        mail_from: if mode & 4 == 0 { "" } else { "someone@x.test" },
        rcpt_to: &rcpt_to,
    };
    let with_verp = mode & 8 == 0;
    let events = classify(&envelope, message, with_verp.then_some(&verp));
    assert!(!events.is_empty(), "no event");
    let expected = verp.decode(&valid).ok();
    for event in &events {
        let target = match event {
            InboundEvent::BouncedAsync { target, .. }
            | InboundEvent::Complained { target, .. }
            | InboundEvent::Unsubscribed { target, .. } => *target,
            InboundEvent::Ignored { .. } | InboundEvent::Forged { .. } => continue,
        };
        if with_verp && mode % 3 == 0 {
            assert_eq!(target, expected, "VERP target lost");
        }
        let _ = event.log_event(SystemTime::UNIX_EPOCH);
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

        #[test]
        fn templates_never_panic(mode in 0u8..3, text in "[ -~\n]{0,200}", values in proptest::collection::vec(any::<u8>(), 0..60)) {
            let mut data = vec![mode];
            data.extend_from_slice(text.as_bytes());
            data.push(0);
            data.extend_from_slice(&values);
            template(&data);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn inbound_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            dsn(&data);
        }

        #[test]
        fn report_shaped_input_never_panics(
            mode in any::<u8>(),
            kind in prop::sample::select(vec!["delivery-status", "feedback-report", "rfc822", "global-delivery-status"]),
            body in "[ -~\r\n]{0,300}",
        ) {
            let message = format!(
                "From: MAILER-DAEMON@x.test\r\nContent-Type: multipart/report; boundary=b\r\n\r\n\
                 --b\r\nContent-Type: message/{kind}\r\n\r\n{body}\r\n--b--\r\n"
            );
            let mut data = vec![mode];
            data.extend_from_slice(message.as_bytes());
            dsn(&data);
        }
    }

    #[test]
    fn the_inbound_harness_reaches_a_bounce() {
        let message = b"From: MAILER-DAEMON@x.test\r\nContent-Type: multipart/report; boundary=b\r\n\r\n\
                        --b\r\nContent-Type: message/delivery-status\r\n\r\n\
                        Final-Recipient: rfc822; a@b.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n";
        let mut data = vec![0u8];
        data.extend_from_slice(message);
        dsn(&data);
        let rcpt_to = ["x@y.test".to_owned()];
        let events = classify(
            &Envelope {
                mail_from: "",
                rcpt_to: &rcpt_to,
            },
            message,
            None,
        );
        assert!(
            matches!(&events[..], [InboundEvent::BouncedAsync { .. }]),
            "{events:?}"
        );
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

    #[test]
    fn a_valid_template_renders_in_the_harness() {
        let toml = b"from = \"a@b.test\"\nsubject = \"Hi {{ name }}\"\ntext = \"x {{ name }}\"\n\0v\r\n.\r\nBcc: y";
        let mut data = vec![0u8];
        data.extend_from_slice(toml);
        template(&data);
    }
}
