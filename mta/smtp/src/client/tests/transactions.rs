//! Transactions: pipelined with BDAT or DATA, lockstep, partial failures, 421,
//! connection loss, local refusals, QUIT.

use super::*;

#[test]
fn gmail_starttls_then_three_bdat_transactions_in_one_write() {
    let mut h = Harness::new(config(TlsMode::Required));
    h.script(&[
        ("", GMAIL_GREETING),
        ("EHLO mta1.volley.example\r\n", GMAIL_EHLO),
        ("STARTTLS\r\n", "220 2.0.0 Ready to start TLS\r\n"),
    ]);
    assert_eq!(h.take_events(), [Event::StartTls]);
    assert_eq!(h.take_output(), "");
    h.session.tls_established();
    h.script(&[("EHLO mta1.volley.example\r\n", GMAIL_EHLO_TLS)]);
    let [Event::Ready(caps)] = &h.take_events()[..] else {
        panic!()
    };
    assert!(caps.pipelining && caps.chunking && !caps.starttls);
    assert!(h.session.is_tls());

    for t in three("gmail.com") {
        h.enqueue(t);
    }
    assert_eq!(h.session.in_flight(), 3);
    assert_eq!(
        h.take_output(),
        "MAIL FROM:<bounce+1@news.example> SIZE=23\r\n\
         RCPT TO:<alice@gmail.com>\r\n\
         BDAT 23 LAST\r\n\
         Subject: one\r\n\r\nHello\r\n\
         RSET\r\n\
         MAIL FROM:<bounce+2@news.example> SIZE=25\r\n\
         RCPT TO:<bob@gmail.com>\r\n\
         BDAT 25 LAST\r\n\
         Subject: two\r\n\r\n.dotted\r\n\
         RSET\r\n\
         MAIL FROM:<> SIZE=21\r\n\
         RCPT TO:<carol@gmail.com>\r\n\
         BDAT 21 LAST\r\n\
         Subject: three\r\n\r\nBye"
    );
    let one = [GMAIL_MAIL_OK, GMAIL_RCPT_OK, GMAIL_BDAT_OK].concat();
    h.server(&[&one, GMAIL_RSET_OK, &one, GMAIL_RSET_OK, &one].concat());
    let results = h.take_results();
    assert_eq!(results.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3]);
    for (result, rcpt) in results.iter().zip(["alice", "bob", "carol"]) {
        assert_rcpt(
            &result.rcpts[0],
            &format!("{rcpt}@gmail.com"),
            250,
            Stage::Data,
            false,
        );
        assert_eq!(result.rcpts[0].reply.enhanced, Some(Enhanced::new(2, 0, 0)));
        assert_eq!(result.mail.as_ref().map(|r| r.code), Some(250));
    }
    assert_eq!(h.session.in_flight(), 0);

    h.session.quit();
    h.script(&[(
        "QUIT\r\n",
        "221 2.0.0 closing connection a1-20020a170906.123 - gsmtp\r\n",
    )]);
    assert_eq!(h.take_events(), [Event::Closed(CloseReason::Quit)]);
    assert!(h.session.is_closed());
}

#[test]
fn postfix_pipelined_data_waits_for_354_before_the_body_and_next_mail() {
    let mut cfg = config(TlsMode::Opportunistic);
    cfg.chunking = false;
    let mut h = Harness::ready(cfg, POSTFIX_GREETING, POSTFIX_EHLO);
    for t in three("example.org") {
        h.enqueue(t);
    }
    h.script(&[
        (
            "MAIL FROM:<bounce+1@news.example> SIZE=23\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n",
            &["250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", POSTFIX_354].concat(),
        ),
        (
            "Subject: one\r\n\r\nHello\r\n.\r\n\
             MAIL FROM:<bounce+2@news.example> SIZE=25\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n",
            &[
                "250 2.0.0 Ok: queued as 4XyZ1A\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n",
                POSTFIX_354,
            ]
            .concat(),
        ),
        (
            "Subject: two\r\n\r\n..dotted\r\n.\r\n\
             MAIL FROM:<> SIZE=21\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n",
            &[
                "250 2.0.0 Ok: queued as 4XyZ1B\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n",
                POSTFIX_354,
            ]
            .concat(),
        ),
        (
            "Subject: three\r\n\r\nBye\r\n.\r\n",
            "250 2.0.0 Ok: queued as 4XyZ1C\r\n",
        ),
    ]);
    let results = h.take_results();
    let texts: Vec<String> = results
        .iter()
        .map(|r| r.data.as_ref().unwrap().text().into_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "Ok: queued as 4XyZ1A",
            "Ok: queued as 4XyZ1B",
            "Ok: queued as 4XyZ1C"
        ]
    );
    assert!(results
        .iter()
        .all(|r| r.rcpts[0].stage == Stage::Data && r.rcpts[0].reply.code == 250));
}

/// A rendered body (CRLF only) that needs no dot-stuffing is written as the
/// transaction's own buffer, not a copy; one with a line-start dot is stuffed.
#[test]
fn clean_crlf_bodies_are_handed_over_without_a_copy() {
    let mut cfg = config(TlsMode::Opportunistic);
    cfg.chunking = false;
    let mut h = Harness::ready(cfg, POSTFIX_GREETING, POSTFIX_EHLO);
    let clean = Bytes::from_static(b"Subject: one\r\n\r\nHello. Bye.\r\n");
    let dotted = Bytes::from_static(b"Subject: two\r\n\r\n.dotted\r\n");
    for (id, body) in [(1, clean.clone()), (2, dotted.clone())] {
        let mut t = tx(id, "b@news.example", &["alice@example.org"], &[]);
        t.body = body;
        t.crlf_only = true;
        h.enqueue(t);
    }
    let mut chunks = Vec::new();
    h.session.take_output(&mut chunks);
    chunks.clear();
    h.server(&["250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", POSTFIX_354].concat());
    h.session.take_output(&mut chunks);
    assert!(
        chunks
            .iter()
            .any(|c| c.as_ptr() == clean.as_ptr() && c.len() == clean.len()),
        "the clean body is not among the chunks as itself"
    );
    let written: Vec<u8> = chunks.concat();
    assert_eq!(
        String::from_utf8(written).unwrap(),
        "Subject: one\r\n\r\nHello. Bye.\r\n.\r\n\
         MAIL FROM:<b@news.example> SIZE=25\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
    );
    assert!(!h.session.has_output());
    chunks.clear();
    h.server(
        &[
            "250 2.0.0 Ok: queued as A\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n",
            POSTFIX_354,
        ]
        .concat(),
    );
    h.session.take_output(&mut chunks);
    assert!(chunks.iter().all(|c| c.as_ptr() != dotted.as_ptr()));
    assert_eq!(chunks.concat(), b"Subject: two\r\n\r\n..dotted\r\n.\r\n");
    h.server("250 2.0.0 Ok: queued as B\r\n");
    let results = h.take_results();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r.rcpts[0].reply.code == 250));
    // The bodies come back with the results, for the caller to reuse.
    assert_eq!(results[0].body.as_ptr(), clean.as_ptr());
    assert_eq!(results[1].body.as_ptr(), dotted.as_ptr());
}

/// Once the session has written a body and the driver dropped its chunks, the
/// result holds the only reference: the buffer can be taken back without a copy.
#[test]
fn a_finished_body_can_be_taken_back_for_the_next_message() {
    let mut cfg = config(TlsMode::Opportunistic);
    cfg.chunking = false;
    let mut h = Harness::ready(cfg, POSTFIX_GREETING, POSTFIX_EHLO);
    let mut buffer = bytes::BytesMut::with_capacity(4096);
    buffer.extend_from_slice(b"Subject: one\r\n\r\nHello.\r\n");
    let address = buffer.as_ptr();
    let mut t = tx(1, "b@news.example", &["alice@example.org"], &[]);
    t.body = buffer.freeze();
    t.crlf_only = true;
    h.enqueue(t);
    let mut chunks = Vec::new();
    h.session.take_output(&mut chunks);
    h.server(&["250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", POSTFIX_354].concat());
    h.session.take_output(&mut chunks);
    chunks.clear(); // written
    h.server("250 2.0.0 Ok: queued as A\r\n");
    let mut results = h.take_results();
    let back = results
        .remove(0)
        .body
        .try_into_mut()
        .expect("the only reference");
    assert_eq!(back.as_ptr(), address);
    assert!(back.capacity() >= 4096);
}

#[test]
fn sendmail_without_pipelining_goes_in_lockstep() {
    let mut h = Harness::ready(
        config(TlsMode::Opportunistic),
        SENDMAIL_GREETING,
        SENDMAIL_EHLO,
    );
    h.enqueue(tx(
        1,
        "bounce+1@news.example",
        &["alice@example.net", "bob@example.net"],
        BODY1,
    ));
    h.enqueue(tx(
        2,
        "bounce+2@news.example",
        &["carol@example.net"],
        BODY2,
    ));
    h.script(&[
        (
            "MAIL FROM:<bounce+1@news.example> SIZE=23\r\n",
            "250 2.1.0 <bounce+1@news.example>... Sender ok\r\n",
        ),
        (
            "RCPT TO:<alice@example.net>\r\n",
            "250 2.1.5 <alice@example.net>... Recipient ok\r\n",
        ),
        (
            "RCPT TO:<bob@example.net>\r\n",
            "250 2.1.5 <bob@example.net>... Recipient ok\r\n",
        ),
        (
            "DATA\r\n",
            "354 Enter mail, end with \".\" on a line by itself\r\n",
        ),
        (
            "Subject: one\r\n\r\nHello\r\n.\r\n",
            "250 2.0.0 40A1B2C3 Message accepted for delivery\r\n",
        ),
        (
            "MAIL FROM:<bounce+2@news.example> SIZE=25\r\n",
            "250 2.1.0 <bounce+2@news.example>... Sender ok\r\n",
        ),
        (
            "RCPT TO:<carol@example.net>\r\n",
            "250 2.1.5 <carol@example.net>... Recipient ok\r\n",
        ),
        (
            "DATA\r\n",
            "354 Enter mail, end with \".\" on a line by itself\r\n",
        ),
        (
            "Subject: two\r\n\r\n..dotted\r\n.\r\n",
            "250 2.0.0 40A1B2C4 Message accepted for delivery\r\n",
        ),
    ]);
    let results = h.take_results();
    assert_eq!(results.len(), 2);
    assert_rcpt(
        &results[0].rcpts[1],
        "bob@example.net",
        250,
        Stage::Data,
        false,
    );
    assert_eq!(
        results[1].data.as_ref().unwrap().text(),
        "40A1B2C4 Message accepted for delivery"
    );
}

#[test]
fn gmail_rejects_one_of_two_recipients() {
    let mut h = Harness::ready(config(TlsMode::Disabled), GMAIL_GREETING, GMAIL_EHLO);
    h.enqueue(tx(
        9,
        "bounce@news.example",
        &["alice@gmail.com", "nobody@gmail.com"],
        BODY1,
    ));
    assert_eq!(
        h.take_output(),
        "MAIL FROM:<bounce@news.example> SIZE=23\r\nRCPT TO:<alice@gmail.com>\r\n\
         RCPT TO:<nobody@gmail.com>\r\nBDAT 23 LAST\r\nSubject: one\r\n\r\nHello\r\n"
    );
    h.server(
        &[
            GMAIL_MAIL_OK,
            GMAIL_RCPT_OK,
            GMAIL_NO_SUCH_USER,
            GMAIL_BDAT_OK,
        ]
        .concat(),
    );
    let [result] = &h.take_results()[..] else {
        panic!()
    };
    assert_rcpt(&result.rcpts[0], "alice@gmail.com", 250, Stage::Data, false);
    assert_rcpt(
        &result.rcpts[1],
        "nobody@gmail.com",
        550,
        Stage::Rcpt,
        false,
    );
    assert_eq!(result.rcpts[1].reply.enhanced, Some(Enhanced::new(5, 1, 1)));
    assert_eq!(result.rcpts[1].reply.lines.len(), 4);
}

#[test]
fn mail_451_leaves_the_next_transaction_unaffected() {
    let mut h = Harness::ready(
        config(TlsMode::Opportunistic),
        POSTFIX_GREETING,
        POSTFIX_EHLO,
    );
    let [t1, t2, t3] = three("example.org");
    h.enqueue(t1);
    h.enqueue(t2);
    assert_eq!(
        h.take_output(),
        "MAIL FROM:<bounce+1@news.example> SIZE=23\r\nRCPT TO:<alice@example.org>\r\n\
         BDAT 23 LAST\r\nSubject: one\r\n\r\nHello\r\n\
         RSET\r\n\
         MAIL FROM:<bounce+2@news.example> SIZE=25\r\nRCPT TO:<bob@example.org>\r\n\
         BDAT 25 LAST\r\nSubject: two\r\n\r\n.dotted\r\n"
    );
    h.server(
        "451 4.3.0 <bounce+1@news.example>: Temporary lookup failure\r\n\
         503 5.5.1 Error: need MAIL command\r\n\
         503 5.5.1 Error: need MAIL command\r\n\
         250 2.0.0 Ok\r\n\
         250 2.1.0 Ok\r\n\
         250 2.1.5 Ok\r\n\
         250 2.0.0 Ok: queued as 4XyZ2B\r\n",
    );
    let results = h.take_results();
    assert_eq!(results[0].mail.as_ref().unwrap().code, 451);
    assert_rcpt(
        &results[0].rcpts[0],
        "alice@example.org",
        451,
        Stage::Mail,
        false,
    );
    assert_eq!(results[0].data.as_ref().unwrap().code, 503);
    assert_rcpt(
        &results[1].rcpts[0],
        "bob@example.org",
        250,
        Stage::Data,
        false,
    );
    // The last transaction completed: no RSET before the next one.
    h.enqueue(t3);
    assert!(h.take_output().starts_with("MAIL FROM:<> SIZE=21\r\n"));
}

#[test]
fn lockstep_mail_451_sends_no_rcpt_and_no_rset() {
    let mut h = Harness::ready(
        config(TlsMode::Opportunistic),
        SENDMAIL_GREETING,
        SENDMAIL_EHLO,
    );
    let [t1, t2, _] = three("example.net");
    h.enqueue(t1);
    h.enqueue(t2);
    h.script(&[
        (
            "MAIL FROM:<bounce+1@news.example> SIZE=23\r\n",
            "451 4.3.0 Temporary system failure\r\n",
        ),
        (
            "MAIL FROM:<bounce+2@news.example> SIZE=25\r\n",
            "250 2.1.0 Sender ok\r\n",
        ),
        (
            "RCPT TO:<bob@example.net>\r\n",
            "250 2.1.5 Recipient ok\r\n",
        ),
        ("DATA\r\n", "354 go ahead\r\n"),
        (
            "Subject: two\r\n\r\n..dotted\r\n.\r\n",
            "250 2.0.0 accepted\r\n",
        ),
    ]);
    let results = h.take_results();
    assert_rcpt(
        &results[0].rcpts[0],
        "alice@example.net",
        451,
        Stage::Mail,
        false,
    );
    assert_eq!(results[0].data, None);
    assert_rcpt(
        &results[1].rcpts[0],
        "bob@example.net",
        250,
        Stage::Data,
        false,
    );
}

#[test]
fn data_refused_for_no_valid_recipients_sends_no_body_then_rset() {
    let mut cfg = config(TlsMode::Opportunistic);
    cfg.chunking = false;
    let mut h = Harness::ready(cfg, POSTFIX_GREETING, POSTFIX_EHLO);
    h.enqueue(tx(
        1,
        "bounce+1@news.example",
        &["nobody@example.org"],
        BODY1,
    ));
    h.enqueue(tx(
        2,
        "bounce+2@news.example",
        &["alice@example.org"],
        BODY2,
    ));
    h.script(&[
        (
            "MAIL FROM:<bounce+1@news.example> SIZE=23\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n",
            "250 2.1.0 Ok\r\n\
             550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual mailbox table\r\n\
             554 5.5.1 Error: no valid recipients\r\n",
        ),
        (
            "RSET\r\nMAIL FROM:<bounce+2@news.example> SIZE=25\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n",
            &["250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", POSTFIX_354].concat(),
        ),
        ("Subject: two\r\n\r\n..dotted\r\n.\r\n", "250 2.0.0 Ok: queued as 4XyZ3\r\n"),
    ]);
    let results = h.take_results();
    assert_rcpt(
        &results[0].rcpts[0],
        "nobody@example.org",
        550,
        Stage::Rcpt,
        false,
    );
    assert_eq!(results[0].data.as_ref().unwrap().code, 554);
    assert_rcpt(
        &results[1].rcpts[0],
        "alice@example.org",
        250,
        Stage::Data,
        false,
    );
}

#[test]
fn bdat_after_all_recipients_rejected_resets_before_the_next_transaction() {
    let mut h = Harness::ready(config(TlsMode::Disabled), GMAIL_GREETING, GMAIL_EHLO);
    h.enqueue(tx(1, "b@news.example", &["nobody@gmail.com"], BODY3));
    h.take_output();
    h.server(
        &[
            GMAIL_MAIL_OK,
            GMAIL_NO_SUCH_USER,
            "554 5.5.1 Error: no valid recipients\r\n",
        ]
        .concat(),
    );
    let [result] = &h.take_results()[..] else {
        panic!()
    };
    assert_rcpt(
        &result.rcpts[0],
        "nobody@gmail.com",
        550,
        Stage::Rcpt,
        false,
    );
    h.enqueue(tx(2, "b@news.example", &["alice@gmail.com"], BODY3));
    assert!(h
        .take_output()
        .starts_with("RSET\r\nMAIL FROM:<b@news.example>"));
}

#[test]
fn service_closing_421_mid_session_answers_every_transaction() {
    let mut h = Harness::ready(config(TlsMode::Disabled), GMAIL_GREETING, GMAIL_EHLO);
    h.enqueue(tx(1, "b@news.example", &["alice@gmail.com"], BODY1));
    h.enqueue(tx(2, "b@news.example", &["bob@gmail.com"], BODY2));
    h.take_output();
    h.server(
        &[
            GMAIL_MAIL_OK,
            GMAIL_RCPT_OK,
            "421 4.7.0 Try again later, closing connection. a1-20020a170906.123 - gsmtp\r\n",
        ]
        .concat(),
    );
    let events = h.take_events();
    let [Event::TransactionDone(r1), Event::TransactionDone(r2), Event::Closed(reason)] =
        &events[..]
    else {
        panic!("{events:?}")
    };
    assert_rcpt(&r1.rcpts[0], "alice@gmail.com", 421, Stage::Data, false);
    assert_eq!(r1.data.as_ref().unwrap().code, 421);
    assert_rcpt(&r2.rcpts[0], "bob@gmail.com", 421, Stage::Mail, false);
    assert_eq!(r2.mail, None);
    assert!(
        matches!(reason, CloseReason::Failed(SessionError::ServiceClosing(r)) if r.code == 421)
    );
    assert_eq!(h.take_output(), "");
    assert!(h
        .session
        .enqueue(tx(3, "b@news.example", &["c@gmail.com"], BODY1))
        .is_err());
}

#[test]
fn connection_lost_gives_local_results_at_each_stage() {
    let mut h = Harness::ready(config(TlsMode::Disabled), GMAIL_GREETING, GMAIL_EHLO);
    h.enqueue(tx(
        1,
        "b@news.example",
        &["alice@gmail.com", "bob@gmail.com"],
        BODY1,
    ));
    h.enqueue(tx(2, "b@news.example", &["carol@gmail.com"], BODY2));
    h.server(&[GMAIL_MAIL_OK, GMAIL_RCPT_OK].concat());
    h.session.connection_lost();
    h.collect();
    let events = h.take_events();
    let [Event::TransactionDone(r1), Event::TransactionDone(r2), Event::Closed(reason)] =
        &events[..]
    else {
        panic!("{events:?}")
    };
    assert_rcpt(&r1.rcpts[0], "alice@gmail.com", 451, Stage::Data, true);
    assert_rcpt(&r1.rcpts[1], "bob@gmail.com", 451, Stage::Rcpt, true);
    assert_eq!(r1.rcpts[0].reply.enhanced, Some(Enhanced::new(4, 4, 2)));
    assert_eq!(r1.mail.as_ref().unwrap().code, 250);
    assert_rcpt(&r2.rcpts[0], "carol@gmail.com", 451, Stage::Mail, true);
    assert_eq!(reason, &CloseReason::Failed(SessionError::ConnectionLost));
}

#[test]
fn unsafe_addresses_are_refused_locally() {
    let mut h = Harness::ready(config(TlsMode::Disabled), GMAIL_GREETING, GMAIL_EHLO);
    h.enqueue(tx(
        1,
        "b@news.example",
        &["ok@gmail.com", "evil@x>\r\nRCPT TO:<victim@y"],
        BODY3,
    ));
    h.enqueue(tx(2, "a\r\nRSET", &["ok@gmail.com"], BODY3));
    h.enqueue(tx(3, "b@news.example", &[], BODY3));
    let out = h.take_output();
    assert_eq!(out.matches("RCPT TO").count(), 1);
    assert!(!out.contains("victim") && !out.contains("RSET"));
    assert!(h.events.is_empty(), "results stay in enqueue order");
    h.server(&[GMAIL_MAIL_OK, GMAIL_RCPT_OK, GMAIL_BDAT_OK].concat());
    let results = h.take_results();
    assert_rcpt(
        &results[0].rcpts[0],
        "ok@gmail.com",
        250,
        Stage::Data,
        false,
    );
    assert_rcpt(
        &results[0].rcpts[1],
        "evil@x>\r\nRCPT TO:<victim@y",
        501,
        Stage::Rcpt,
        true,
    );
    assert_rcpt(&results[1].rcpts[0], "ok@gmail.com", 501, Stage::Mail, true);
    assert_eq!(results[1].mail, None);
    assert_eq!((results[2].id, results[2].rcpts.len()), (3, 0));
}

#[test]
fn mail_parameters_follow_body_and_addresses() {
    let body = "Subject: Gr\u{fc}\u{df}e\r\n\r\nhi\r\n".as_bytes(); // 24 bytes
    let mut h = Harness::ready(config(TlsMode::Disabled), GMAIL_GREETING, GMAIL_EHLO);
    h.enqueue(tx(
        1,
        "j\u{f6}rg@example.de",
        &["\u{f1}and\u{fa}@example.com"],
        body,
    ));
    assert_eq!(
        h.take_output(),
        "MAIL FROM:<j\u{f6}rg@example.de> SIZE=24 BODY=8BITMIME SMTPUTF8\r\n\
         RCPT TO:<\u{f1}and\u{fa}@example.com>\r\nBDAT 24 LAST\r\nSubject: Gr\u{fc}\u{df}e\r\n\r\nhi\r\n"
    );

    // Sendmail offers 8BITMIME and SIZE without a limit, but not SMTPUTF8.
    let mut h = Harness::ready(config(TlsMode::Disabled), SENDMAIL_GREETING, SENDMAIL_EHLO);
    h.enqueue(tx(1, "j\u{f6}rg@example.de", &["a@example.net"], body));
    h.enqueue(tx(
        2,
        "b@example.de",
        &["\u{f1}and\u{fa}@example.com", "a@example.net"],
        body,
    ));
    let results = h.take_results();
    assert_rcpt(
        &results[0].rcpts[0],
        "a@example.net",
        553,
        Stage::Mail,
        true,
    );
    assert_eq!(
        results[0].rcpts[0].reply.enhanced,
        Some(Enhanced::new(5, 6, 7))
    );
    assert_eq!(
        h.take_output(),
        "MAIL FROM:<b@example.de> SIZE=24 BODY=8BITMIME\r\n"
    );
}

#[test]
fn message_over_the_size_limit_is_refused_locally() {
    let ehlo = "250-small.example\r\n250-PIPELINING\r\n250 SIZE 20\r\n";
    let mut h = Harness::ready(
        config(TlsMode::Disabled),
        "220 small.example ESMTP\r\n",
        ehlo,
    );
    h.enqueue(tx(1, "b@x.example", &["u@small.example"], BODY1));
    let [result] = &h.take_results()[..] else {
        panic!()
    };
    assert_rcpt(&result.rcpts[0], "u@small.example", 552, Stage::Mail, true);
    assert_eq!(h.take_output(), "");
}

#[test]
fn quit_waits_for_transactions_in_flight() {
    let mut h = Harness::ready(config(TlsMode::Disabled), GMAIL_GREETING, GMAIL_EHLO);
    h.enqueue(tx(1, "b@news.example", &["alice@gmail.com"], BODY3));
    h.session.quit();
    assert!(!h.take_output().contains("QUIT"));
    assert!(h
        .session
        .enqueue(tx(2, "b@news.example", &["bob@gmail.com"], BODY3))
        .is_err());
    h.server(&[GMAIL_MAIL_OK, GMAIL_RCPT_OK, GMAIL_BDAT_OK].concat());
    assert_eq!(h.take_results().len(), 1);
    assert_eq!(h.take_output(), "QUIT\r\n");
    // The server hangs up without answering QUIT: still a clean quit.
    h.session.connection_lost();
    h.collect();
    assert_eq!(h.take_events(), [Event::Closed(CloseReason::Quit)]);
}

#[test]
fn rset_refused_finishes_in_flight_then_quits() {
    let mut h = Harness::ready(config(TlsMode::Disabled), GMAIL_GREETING, GMAIL_EHLO);
    h.enqueue(tx(1, "b@news.example", &["alice@gmail.com"], BODY3));
    h.enqueue(tx(2, "b@news.example", &["bob@gmail.com"], BODY3));
    h.take_output();
    let ok = [GMAIL_MAIL_OK, GMAIL_RCPT_OK, GMAIL_BDAT_OK].concat();
    h.server(&[&ok, "502 5.5.1 Unrecognized command\r\n", &ok].concat());
    let events = h.take_events();
    assert_eq!(events.len(), 2);
    assert_eq!(h.take_output(), "QUIT\r\n");
    h.server("221 2.0.0 bye\r\n");
    let events = h.take_events();
    assert!(
        matches!(closed_with(&events), CloseReason::Failed(SessionError::Rset(r)) if r.code == 502)
    );
}
