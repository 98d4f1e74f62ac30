//! Greeting, EHLO/HELO, STARTTLS, and replies that end the session early.

use super::*;

#[test]
fn starttls_required_but_not_offered_quits() {
    let mut h = Harness::new(config(TlsMode::Required));
    h.script(&[
        ("", SENDMAIL_GREETING),
        ("EHLO mta1.volley.example\r\n", SENDMAIL_EHLO),
        (
            "QUIT\r\n",
            "221 2.0.0 legacy.example.net closing connection\r\n",
        ),
    ]);
    assert_eq!(
        h.take_events(),
        [Event::Closed(CloseReason::Failed(
            SessionError::TlsRequiredButNotOffered
        ))]
    );
}

#[test]
fn exchange_starttls_flow_then_delivery() {
    let mut h = Harness::new(config(TlsMode::Opportunistic));
    h.script(&[
        ("", EXCHANGE_GREETING),
        ("EHLO mta1.volley.example\r\n", EXCHANGE_EHLO),
        ("STARTTLS\r\n", "220 2.0.0 SMTP server ready\r\n"),
    ]);
    assert_eq!(h.take_events(), [Event::StartTls]);
    assert!(h
        .session
        .enqueue(tx(1, "b@x.example", &["u@corp.example.com"], BODY1))
        .is_err());
    h.session.tls_established();
    h.script(&[("EHLO mta1.volley.example\r\n", EXCHANGE_EHLO_TLS)]);
    let [Event::Ready(caps)] = &h.take_events()[..] else {
        panic!()
    };
    assert_eq!(caps.auth, ["NTLM", "LOGIN"]);
    assert_eq!(caps.size, Some(37_748_736));
    h.enqueue(tx(1, "b@x.example", &["u@corp.example.com"], BODY3));
    h.script(&[(
        "MAIL FROM:<b@x.example> SIZE=21\r\nRCPT TO:<u@corp.example.com>\r\n\
         BDAT 21 LAST\r\nSubject: three\r\n\r\nBye",
        "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n\
         250 2.6.0 <id@EXCH01.corp.example.com> [InternalId=1234, Hostname=EXCH01] Queued mail for delivery\r\n",
    )]);
    let [result] = &h.take_results()[..] else {
        panic!()
    };
    assert_eq!(result.rcpts[0].reply.enhanced, Some(Enhanced::new(2, 6, 0)));
    h.session.quit();
    h.script(&[(
        "QUIT\r\n",
        "221 2.0.0 Service closing transmission channel\r\n",
    )]);
    assert_eq!(h.take_events(), [Event::Closed(CloseReason::Quit)]);
}

#[test]
fn starttls_refused() {
    let refusal = "454 4.7.0 TLS not available due to temporary reason\r\n";
    let mut h = Harness::new(config(TlsMode::Opportunistic));
    h.script(&[
        ("", EXCHANGE_GREETING),
        ("EHLO mta1.volley.example\r\n", EXCHANGE_EHLO),
        ("STARTTLS\r\n", refusal),
    ]);
    let [Event::Ready(caps)] = &h.take_events()[..] else {
        panic!()
    };
    assert!(caps.starttls);
    assert!(!h.session.is_tls());

    let mut h = Harness::new(config(TlsMode::Required));
    h.script(&[
        ("", EXCHANGE_GREETING),
        ("EHLO mta1.volley.example\r\n", EXCHANGE_EHLO),
        ("STARTTLS\r\n", refusal),
        (
            "QUIT\r\n",
            "221 2.0.0 Service closing transmission channel\r\n",
        ),
    ]);
    let events = h.take_events();
    assert!(
        matches!(closed_with(&events), CloseReason::Failed(SessionError::StartTls(r)) if r.code == 454)
    );
}

#[test]
fn plaintext_after_the_starttls_reply_is_refused() {
    let mut h = Harness::new(config(TlsMode::Required));
    h.script(&[
        ("", EXCHANGE_GREETING),
        ("EHLO mta1.volley.example\r\n", EXCHANGE_EHLO),
        (
            "STARTTLS\r\n",
            "220 2.0.0 SMTP server ready\r\n250-injected\r\n",
        ),
    ]);
    let events = h.take_events();
    assert!(matches!(
        closed_with(&events),
        CloseReason::Failed(SessionError::Protocol(_))
    ));

    let mut h = Harness::new(config(TlsMode::Required));
    h.script(&[
        ("", EXCHANGE_GREETING),
        ("EHLO mta1.volley.example\r\n", EXCHANGE_EHLO),
        ("STARTTLS\r\n", "220 2.0.0 SMTP server ready\r\n"),
        ("", "250 late\r\n"),
    ]);
    let events = h.take_events();
    assert_eq!(events[0], Event::StartTls);
    assert!(matches!(
        closed_with(&events),
        CloseReason::Failed(SessionError::Protocol(_))
    ));
}

#[test]
fn ehlo_502_falls_back_to_helo() {
    let mut h = Harness::new(config(TlsMode::Opportunistic));
    h.script(&[
        ("", "220 tiny.example ESMTP\r\n"),
        (
            "EHLO mta1.volley.example\r\n",
            "502 5.5.2 Error: command not recognized\r\n",
        ),
        ("HELO mta1.volley.example\r\n", "250 tiny.example\r\n"),
    ]);
    assert_eq!(h.take_events(), [Event::Ready(Capabilities::default())]);
    h.enqueue(tx(1, "b@x.example", &["u@tiny.example"], BODY3));
    h.script(&[
        ("MAIL FROM:<b@x.example>\r\n", "250 ok\r\n"),
        ("RCPT TO:<u@tiny.example>\r\n", "250 ok\r\n"),
        ("DATA\r\n", "354 go\r\n"),
        ("Subject: three\r\n\r\nBye\r\n.\r\n", "250 queued\r\n"),
    ]);
    assert_eq!(h.take_results()[0].rcpts[0].reply.code, 250);

    let mut h = Harness::new(config(TlsMode::Required));
    h.script(&[
        ("", "220 tiny.example ESMTP\r\n"),
        (
            "EHLO mta1.volley.example\r\n",
            "500 unrecognized command\r\n",
        ),
        ("HELO mta1.volley.example\r\n", "250 tiny.example\r\n"),
        ("QUIT\r\n", "221 bye\r\n"),
    ]);
    let events = h.take_events();
    assert_eq!(
        closed_with(&events),
        &CloseReason::Failed(SessionError::TlsRequiredButNotOffered)
    );
}

#[test]
fn refused_greetings() {
    let mut h = Harness::new(config(TlsMode::Opportunistic));
    h.script(&[
        ("", "554 5.7.1 No SMTP service here\r\n"),
        ("QUIT\r\n", "221 2.0.0 Bye\r\n"),
    ]);
    let events = h.take_events();
    assert!(
        matches!(closed_with(&events), CloseReason::Failed(SessionError::Greeting(r)) if r.code == 554)
    );

    let mut h = Harness::new(config(TlsMode::Opportunistic));
    h.server("421 4.3.2 Service not available, closing transmission channel\r\n");
    let events = h.take_events();
    assert!(
        matches!(closed_with(&events), CloseReason::Failed(SessionError::Greeting(r)) if r.code == 421)
    );
    assert_eq!(h.take_output(), "");
}

#[test]
fn replies_out_of_turn_or_malformed_end_the_session() {
    let mut h = Harness::ready(config(TlsMode::Disabled), GMAIL_GREETING, GMAIL_EHLO);
    h.server("250 nobody asked\r\n");
    let events = h.take_events();
    assert!(matches!(
        closed_with(&events),
        CloseReason::Failed(SessionError::Protocol(_))
    ));

    let mut h = Harness::ready(config(TlsMode::Disabled), GMAIL_GREETING, GMAIL_EHLO);
    h.enqueue(tx(1, "b@news.example", &["alice@gmail.com"], BODY3));
    h.server("HTTP/1.1 400 Bad Request\r\n");
    let events = h.take_events();
    let [Event::TransactionDone(r), Event::Closed(reason)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_rcpt(&r.rcpts[0], "alice@gmail.com", 451, Stage::Mail, true);
    assert!(matches!(
        reason,
        CloseReason::Failed(SessionError::MalformedReply(_))
    ));
}
