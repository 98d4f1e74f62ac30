//! Classification of the fixtures, end to end: envelope and bytes in, events out.

use proptest::prelude::*;

use super::*;
use crate::testing::{fixture, verp};
use volley_smtp::reply::Enhanced;

/// Every fixture file.
const FIXTURES: [&str; 16] = [
    "arf-abuse.eml",
    "arf-not-spam.eml",
    "arf-redacted.eml",
    "exchange-ndr.eml",
    "exim-unknown-user.eml",
    "multi-recipient.eml",
    "postfix-delayed.eml",
    "postfix-expired-mailbox-full.eml",
    "postfix-mailbox-full.eml",
    "postfix-unknown-user.eml",
    "qmail-bounce.eml",
    "reply-body-unsubscribe.eml",
    "reply-html-delete.eml",
    "rfc3464-multiple.eml",
    "rfc3464-simple.eml",
    "vacation.eml",
];

/// (42, 7, 3): the Postfix unknown-user bounce.
const VERP_A: &str = "b-aaaaaaaaaaacuaaaaaaaaaaaa4aaaaadbbekhwvnatpxkr4o@bounce.acme.test";
/// (42, 7, 5): the complaints.
const VERP_B: &str = "b-aaaaaaaaaaacuaaaaaaaaaaaa4aaaaaf6cyw7t26wgkl37go@bounce.acme.test";
/// (43, 1, 0): the other bounces.
const VERP_C: &str = "b-aaaaaaaaaaacwaaaaaaaaaaaaeaaaaaafske4xujpz7hjeg4@bounce.acme.test";

fn target(campaign: u64, batch: u64, index: u32) -> Option<VerpTarget> {
    Some(VerpTarget {
        campaign,
        batch,
        index,
    })
}

fn run(mail_from: &str, rcpt: &str, name: &str) -> Vec<InboundEvent> {
    let rcpt_to = [rcpt.to_owned()];
    let envelope = Envelope {
        mail_from,
        rcpt_to: &rcpt_to,
    };
    classify(&envelope, &fixture(name), Some(&verp()))
}

fn bounce(
    target: Option<VerpTarget>,
    recipient: Option<&str>,
    class: BounceClass,
    status: (u8, u16, u16),
    code: Option<u16>,
    diagnostic: &str,
) -> InboundEvent {
    InboundEvent::BouncedAsync {
        target,
        recipient: recipient.map(str::to_owned),
        class,
        status: Enhanced::new(status.0, status.1, status.2),
        code,
        diagnostic: Some(diagnostic.to_owned()),
        action: Action::Failed,
        evidence: Evidence::Dsn,
    }
}

fn ignored(reason: IgnoreReason) -> InboundEvent {
    InboundEvent::Ignored { reason }
}

#[test]
fn fixture_addresses_are_the_test_key_s() {
    let v = verp();
    assert_eq!(v.return_path(42, 7, 3), VERP_A);
    assert_eq!(v.return_path(42, 7, 5), VERP_B);
    assert_eq!(v.return_path(43, 1, 0), VERP_C);
}

#[test]
fn postfix_unknown_user_is_hard() {
    assert_eq!(
        run("", VERP_A, "postfix-unknown-user.eml"),
        [bounce(
            target(42, 7, 3),
            Some("nobody@example.test"),
            BounceClass::Hard,
            (5, 1, 1),
            Some(550),
            "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in \
             virtual mailbox table",
        )]
    );
}

#[test]
fn case_folded_verp_rcpt_still_names_the_target() {
    let events = run(
        "<>",
        &VERP_A.to_ascii_uppercase(),
        "postfix-unknown-user.eml",
    );
    assert!(
        matches!(&events[..], [InboundEvent::BouncedAsync { target: t, .. }] if *t == target(42, 7, 3)),
        "{events:?}"
    );
}

#[test]
fn mailbox_full_is_soft_whether_permanent_or_expired() {
    assert_eq!(
        run("", VERP_C, "postfix-mailbox-full.eml"),
        [bounce(
            target(43, 1, 0),
            Some("full@example.test"),
            BounceClass::Soft,
            (5, 2, 2),
            Some(552),
            "552 5.2.2 <full@example.test>: Mailbox full",
        )]
    );
    assert_eq!(
        run("", VERP_C, "postfix-expired-mailbox-full.eml"),
        [bounce(
            target(43, 1, 0),
            Some("quota@example.test"),
            BounceClass::Soft,
            (4, 2, 2),
            Some(452),
            "452 4.2.2 <quota@example.test>: Mailbox over quota, try again later",
        )]
    );
}

#[test]
fn delayed_dsn_is_ignored() {
    assert_eq!(
        run("", VERP_C, "postfix-delayed.eml"),
        [ignored(IgnoreReason::DelayedDsn)]
    );
}

#[test]
fn one_event_per_recipient_block_without_verp() {
    let events = run("", "bounces@acme.test", "multi-recipient.eml");
    assert_eq!(
        events,
        [
            bounce(
                None,
                Some("one@example.test"),
                BounceClass::Hard,
                (5, 1, 1),
                Some(550),
                "550 5.1.1 <one@example.test>... User unknown",
            ),
            ignored(IgnoreReason::DelayedDsn),
            ignored(IgnoreReason::SuccessDsn),
            bounce(
                None,
                Some("four@example.test"),
                BounceClass::Policy,
                (5, 7, 1),
                Some(554),
                "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using \
                 zen.spamhaus.test; see https://www.spamhaus.test/query/ip/192.0.2.1",
            ),
        ]
    );
}

#[test]
fn rfc3464_examples() {
    // A.1: "failed" with a 4.0.0 status (gave up after 5 days): soft.
    assert_eq!(
        run("", "owner-info-mime@cs.utk.test", "rfc3464-simple.eml"),
        [bounce(
            None,
            Some("louisl@larry.slip.umd.test"),
            BounceClass::Soft,
            (4, 0, 0),
            Some(426),
            "426 connection timed out",
        )]
    );
    // A.3: 5.0.0 is soft unless the diagnostic says the user is unknown.
    assert_eq!(
        run("", "owner-ietf-822@cs.utk.test", "rfc3464-multiple.eml"),
        [
            bounce(
                None,
                Some("arathib@vnet.ibm.test"),
                BounceClass::Soft,
                (5, 0, 0),
                Some(550),
                "550 'arathib@vnet.IBM.test' is not a registered gateway user",
            ),
            ignored(IgnoreReason::DelayedDsn),
            bounce(
                None,
                Some("wsnell@sdcc13.ucsd.test"),
                BounceClass::Hard,
                (5, 0, 0),
                Some(550),
                "550 user unknown",
            ),
        ]
    );
}

#[test]
fn exim_and_exchange() {
    assert_eq!(
        run("", VERP_C, "exim-unknown-user.eml"),
        [bounce(
            target(43, 1, 0),
            Some("gone@example.test"),
            BounceClass::Hard,
            (5, 0, 0),
            Some(550),
            "550 Unrouteable address",
        )]
    );
    assert_eq!(
        run("", VERP_C, "exchange-ndr.eml"),
        [bounce(
            target(43, 1, 0),
            Some("missing@contoso.test"),
            BounceClass::Hard,
            (5, 1, 10),
            Some(550),
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient missing@contoso.test not \
             found by SMTP address lookup",
        )]
    );
    // Without the VERP envelope, Exchange's returned header still carries the
    // Return-Path: the target comes from there.
    let events = run("", "bounces@acme.test", "exchange-ndr.eml");
    assert!(
        matches!(&events[..], [InboundEvent::BouncedAsync { target: t, .. }] if *t == target(43, 1, 0)),
        "{events:?}"
    );
}

#[test]
fn crlf_and_lf_fixtures_classify_alike() {
    for name in FIXTURES {
        let lf = fixture(name);
        let mut crlf = Vec::with_capacity(lf.len() + lf.len() / 20);
        for &b in &lf {
            if b == b'\n' && crlf.last() != Some(&b'\r') {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        let rcpt_to = [VERP_C.to_owned()];
        let envelope = Envelope {
            mail_from: "",
            rcpt_to: &rcpt_to,
        };
        let v = verp();
        assert_eq!(
            classify(&envelope, &lf, Some(&v)),
            classify(&envelope, &crlf, Some(&v)),
            "{name}"
        );
    }
}

#[test]
fn complaints() {
    // Sent to the feedback-loop address: the target comes from the original.
    assert_eq!(
        run("abusedesk@example.test", "fbl@acme.test", "arf-abuse.eml"),
        [InboundEvent::Complained {
            target: target(42, 7, 5),
            recipient: Some("user@example.test".into()),
            feedback_type: FeedbackType::Abuse,
        }]
    );
    // Redacted: no Original-Rcpt-To, no Original-Mail-From; the returned
    // header's To is the redacted one and the Return-Path names the target.
    assert_eq!(
        run(
            "feedbackloop@fbl.mailbox.test",
            "fbl@acme.test",
            "arf-redacted.eml"
        ),
        [InboundEvent::Complained {
            target: target(42, 7, 5),
            recipient: Some("redacted@mailbox.test".into()),
            feedback_type: FeedbackType::Abuse,
        }]
    );
    assert_eq!(
        run(
            "abusedesk@example.test",
            "fbl@acme.test",
            "arf-not-spam.eml"
        ),
        [ignored(IgnoreReason::NotSpamReport)]
    );
    // No VERP configured: the recipient alone.
    let rcpt_to = ["fbl@acme.test".to_owned()];
    let envelope = Envelope {
        mail_from: "abusedesk@example.test",
        rcpt_to: &rcpt_to,
    };
    assert_eq!(
        classify(&envelope, &fixture("arf-abuse.eml"), None),
        [InboundEvent::Complained {
            target: None,
            recipient: Some("user@example.test".into()),
            feedback_type: FeedbackType::Abuse,
        }]
    );
}

#[test]
fn unsubscribe_replies() {
    assert_eq!(
        run(
            "ann@example.test",
            "news@acme.test",
            "reply-body-unsubscribe.eml"
        ),
        [InboundEvent::Unsubscribed {
            target: None,
            recipient: "ann@example.test".into(),
        }]
    );
    assert_eq!(
        run("bob@example.test", VERP_C, "reply-html-delete.eml"),
        [InboundEvent::Unsubscribed {
            target: target(43, 1, 0),
            recipient: "bob@example.test".into(),
        }]
    );
    let rcpt_to = ["news@acme.test".to_owned()];
    let envelope = Envelope {
        mail_from: "dan@example.test",
        rcpt_to: &rcpt_to,
    };
    let events = classify(
        &envelope,
        b"From: nobody\r\nSubject: unsubscribe\r\n\r\n\r\n",
        Some(&verp()),
    );
    assert_eq!(
        events,
        [InboundEvent::Unsubscribed {
            target: None,
            recipient: "dan@example.test".into(),
        }]
    );
    let events = classify(
        &envelope,
        b"From: dan@example.test\r\nSubject: Re: news\r\n\r\nGreat issue!\r\n",
        Some(&verp()),
    );
    assert_eq!(events, [ignored(IgnoreReason::NotActionable)]);
    // The same reply to a campaign message's VERP address: an acknowledgement.
    let to_verp = [VERP_C.to_owned()];
    let envelope = Envelope {
        mail_from: "dan@example.test",
        rcpt_to: &to_verp,
    };
    let events = classify(
        &envelope,
        b"From: Dan <dan@example.test>\r\nSubject: Re: news\r\n\r\nGreat issue!\r\n",
        Some(&verp()),
    );
    assert_eq!(
        events,
        [InboundEvent::Replied {
            target: target(43, 1, 0).unwrap(),
            recipient: "dan@example.test".into(),
        }]
    );
}

#[test]
fn auto_replies_are_ignored_even_when_they_say_unsubscribe() {
    assert_eq!(
        run("", VERP_C, "vacation.eml"),
        [ignored(IgnoreReason::AutoReply)]
    );
    // A non-null sender does not make it a person's reply.
    assert_eq!(
        run("carol@example.test", VERP_C, "vacation.eml"),
        [ignored(IgnoreReason::AutoReply)]
    );
}

#[test]
fn non_dsn_bounce_is_a_best_effort() {
    assert_eq!(
        run("", VERP_C, "qmail-bounce.eml"),
        [InboundEvent::BouncedAsync {
            target: target(43, 1, 0),
            recipient: None,
            class: BounceClass::Hard,
            status: Enhanced::new(5, 1, 1),
            code: None,
            diagnostic: Some("Sorry, no mailbox here by that name. (#5.1.1)".into()),
            action: Action::Unknown,
            evidence: Evidence::BodyText,
        }]
    );
    // Without a VERP target there is no recipient to name: ignored.
    assert_eq!(
        run("", "bounces@acme.test", "qmail-bounce.eml"),
        [ignored(IgnoreReason::AutoReply)]
    );
}

#[test]
fn forged_and_malformed_verp_rcpts_are_refused() {
    let mut forged = VERP_C.to_owned();
    forged.replace_range(2..3, "b");
    let events = run("", &forged, "postfix-unknown-user.eml");
    assert_eq!(
        events,
        [InboundEvent::Forged {
            rcpt: forged.clone(),
            error: VerpError::Forged,
        }]
    );
    let malformed = "b-short@bounce.acme.test";
    assert_eq!(
        run("", malformed, "postfix-unknown-user.eml"),
        [InboundEvent::Forged {
            rcpt: malformed.into(),
            error: VerpError::Malformed,
        }]
    );
    // A forged address among valid ones still refuses the message.
    let rcpt_to = [VERP_A.to_owned(), forged.clone()];
    let envelope = Envelope {
        mail_from: "",
        rcpt_to: &rcpt_to,
    };
    assert!(matches!(
        &classify(
            &envelope,
            &fixture("postfix-unknown-user.eml"),
            Some(&verp())
        )[..],
        [InboundEvent::Forged { .. }]
    ));
    // Signed with another key: forged.
    let other = Verp::new(&[9u8; 32], "bounce.acme.test", "b-").unwrap_or_else(|e| panic!("{e}"));
    let events = classify(
        &Envelope {
            mail_from: "",
            rcpt_to: &[VERP_A.to_owned()],
        },
        &fixture("postfix-unknown-user.eml"),
        Some(&other),
    );
    assert!(
        matches!(
            &events[..],
            [InboundEvent::Forged {
                error: VerpError::Forged,
                ..
            }]
        ),
        "{events:?}"
    );
}

#[test]
fn unparseable_and_empty_messages() {
    let rcpt_to = [VERP_C.to_owned()];
    let envelope = Envelope {
        mail_from: "",
        rcpt_to: &rcpt_to,
    };
    assert_eq!(
        classify(&envelope, b"", Some(&verp())),
        [ignored(IgnoreReason::Unparseable)]
    );
    let empty_dsn = b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
                      --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n--b--\r\n";
    assert_eq!(
        classify(&envelope, empty_dsn, Some(&verp())),
        [ignored(IgnoreReason::EmptyDsn)]
    );
}

/// Found by the `dsn` fuzz target: mail-parser 0.11.9 reaches a
/// `debug_assert!(false)` on an empty part in a digest (its release code
/// recovers). The workspace turns mail-parser's debug assertions off.
#[test]
fn mail_parser_debug_assertion_is_off() {
    let raw = b"Content-Type:multipart/digest\n boundary=b\n\n--b\n\n\
                Content-Type:message/rfc822\n\n\n--b--";
    let rcpt_to = [VERP_C.to_owned()];
    let envelope = Envelope {
        mail_from: "",
        rcpt_to: &rcpt_to,
    };
    assert_eq!(
        classify(&envelope, raw, Some(&verp())),
        [ignored(IgnoreReason::AutoReply)]
    );
}

/// stalwartlabs/mail-parser#120: a returned original that is not a message.
#[test]
fn corrupt_returned_original() {
    let raw = b"From: MAILER-DAEMON@x.test\r\nContent-Type: multipart/report; boundary=b\r\n\r\n\
                --b\r\nContent-Type: message/delivery-status\r\n\r\n\
                Final-Recipient: rfc822; a@b.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
                --b\r\nContent-Type: message/rfc822\r\n\r\nthis is not a message, sorry!\r\n\
                --b--\r\n";
    let rcpt_to = [VERP_C.to_owned()];
    let envelope = Envelope {
        mail_from: "",
        rcpt_to: &rcpt_to,
    };
    let events = classify(&envelope, raw, Some(&verp()));
    assert!(
        matches!(&events[..], [InboundEvent::BouncedAsync { recipient: Some(r), class: BounceClass::Hard, .. }] if r == "a@b.test"),
        "{events:?}"
    );
}

/// A DSN around arbitrary field text, to reach the field parser under proptest.
fn dsn_around(fields: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@x.test\r\nContent-Type: multipart/report; \
         report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x.test\r\n\r\n\
         {fields}\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nTo: a@b.test\r\n\r\n--b--\r\n"
    )
    .into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn any_bytes_classify_without_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let rcpt_to = [VERP_C.to_owned()];
        let envelope = Envelope { mail_from: "", rcpt_to: &rcpt_to };
        let events = classify(&envelope, &data, Some(&verp()));
        prop_assert!(!events.is_empty());
    }

    #[test]
    fn dsn_shaped_input_never_panics(
        lines in proptest::collection::vec(
            "(Final-Recipient|Action|Status|Diagnostic-Code|Remote-MTA|Original-Recipient|[ \t])?:? ?[ -~]{0,40}",
            0..20,
        )
    ) {
        let rcpt_to = [VERP_C.to_owned()];
        let envelope = Envelope { mail_from: "", rcpt_to: &rcpt_to };
        let events = classify(&envelope, &dsn_around(&lines.join("\r\n")), Some(&verp()));
        prop_assert!(!events.is_empty());
        for event in &events {
            if let InboundEvent::BouncedAsync { status, .. } = event {
                prop_assert!(status.class == 4 || status.class == 5);
            }
        }
    }

    #[test]
    fn every_failed_block_is_one_event(
        blocks in proptest::collection::vec((0u8..3, "[a-z]{1,8}", 1u16..8, 0u16..20), 1..10)
    ) {
        let mut text = String::new();
        for (action, local, subject, detail) in &blocks {
            let action = ["failed", "delayed", "delivered"][usize::from(*action)];
            let class = if action == "delayed" { 4 } else if action == "delivered" { 2 } else { 5 };
            text.push_str(&format!(
                "Final-Recipient: rfc822; {local}@example.test\r\nAction: {action}\r\n\
                 Status: {class}.{subject}.{detail}\r\n\r\n"
            ));
        }
        let rcpt_to = [VERP_C.to_owned()];
        let envelope = Envelope { mail_from: "", rcpt_to: &rcpt_to };
        let events = classify(&envelope, &dsn_around(&text), Some(&verp()));
        prop_assert_eq!(events.len(), blocks.len());
        for (event, (action, local, subject, detail)) in events.iter().zip(&blocks) {
            match (event, action) {
                (InboundEvent::BouncedAsync { recipient, status, target: t, .. }, 0) => {
                    prop_assert_eq!(recipient.clone(), Some(format!("{local}@example.test")));
                    prop_assert_eq!(*status, Enhanced::new(5, *subject, *detail));
                    prop_assert_eq!(*t, target(43, 1, 0));
                }
                (InboundEvent::Ignored { reason: IgnoreReason::DelayedDsn }, 1) => {}
                (InboundEvent::Ignored { reason: IgnoreReason::SuccessDsn }, 2) => {}
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
