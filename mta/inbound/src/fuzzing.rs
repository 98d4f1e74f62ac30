//! Entry point of the `dsn` fuzz target (`fuzz/fuzz_targets/`), kept here so that
//! `cargo test` runs the same code under proptest on stable Rust.

use crate::{classify, Envelope, InboundEvent, Verp};

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
            InboundEvent::Replied { target, .. } => Some(*target),
            InboundEvent::Ignored { .. } | InboundEvent::Forged { .. } => continue,
        };
        if with_verp && mode % 3 == 0 {
            assert_eq!(target, expected, "VERP target lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
}
