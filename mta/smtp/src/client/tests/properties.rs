//! Properties: reply chunking never changes a session; no input makes it panic.

use super::*;
use proptest::prelude::*;

/// One whole pipelined session: server bytes in three phases, each fed in chunks of
/// the given sizes (cycled; empty = all at once). Returns every event and every byte
/// written.
fn chunked_session(chunking: bool, sizes: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let mut cfg = config(TlsMode::Disabled);
    cfg.chunking = chunking;
    let mut session = Session::new(cfg);
    let mut events = Vec::new();
    let mut written = Vec::new();
    let mut step = 0;
    let mut feed = |session: &mut Session, bytes: &str, events: &mut Vec<Event>| {
        let mut rest = bytes.as_bytes();
        while !rest.is_empty() {
            let n = if sizes.is_empty() {
                rest.len()
            } else {
                sizes[step % sizes.len()].clamp(1, rest.len())
            };
            step += 1;
            session.feed(&rest[..n]);
            rest = &rest[n..];
            events.extend(std::iter::from_fn(|| session.poll_event()));
        }
    };
    feed(
        &mut session,
        &[POSTFIX_GREETING, POSTFIX_EHLO].concat(),
        &mut events,
    );
    for t in three("example.org") {
        session.enqueue(t).unwrap();
    }
    let replies = if chunking {
        let one = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued as 4XyZ\r\n";
        [one, "250 2.0.0 Ok\r\n", one, "250 2.0.0 Ok\r\n", one].concat()
    } else {
        let envelope = ["250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", POSTFIX_354].concat();
        let queued = "250 2.0.0 Ok: queued as 4XyZ\r\n";
        [&envelope, queued, &envelope, queued, &envelope, queued].concat()
    };
    feed(&mut session, &replies, &mut events);
    session.quit();
    feed(&mut session, "221 2.0.0 Bye\r\n", &mut events);
    written.extend_from_slice(session.output());
    (events, written)
}

#[test]
fn one_byte_at_a_time_gives_the_same_session() {
    for chunking in [true, false] {
        let (events, written) = chunked_session(chunking, &[]);
        assert_eq!(events.len(), 5, "{events:?}"); // Ready, 3 done, Closed
        assert_eq!(events.last(), Some(&Event::Closed(CloseReason::Quit)));
        assert!(written.ends_with(b"QUIT\r\n"));
        assert_eq!(chunked_session(chunking, &[1]), (events, written));
    }
}

proptest! {
    #[test]
    fn any_split_of_the_replies_gives_the_same_session(
        chunking in any::<bool>(),
        sizes in proptest::collection::vec(1usize..40, 1..20),
    ) {
        prop_assert_eq!(chunked_session(chunking, &sizes), chunked_session(chunking, &[]));
    }

    #[test]
    fn any_bytes_never_panic(
        greeting in prop_oneof![Just(Vec::new()), proptest::collection::vec(any::<u8>(), 0..64)],
        later in proptest::collection::vec(
            prop_oneof![
                Just(b"250 ok\r\n".to_vec()),
                Just(b"354 go\r\n".to_vec()),
                Just(b"421 bye\r\n".to_vec()),
                Just(b"550-x\r\n".to_vec()),
                Just(b"220 tls\r\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..32),
            ],
            0..24,
        ),
        tls in prop_oneof![Just(TlsMode::Opportunistic), Just(TlsMode::Required), Just(TlsMode::Disabled)],
        pipelining in any::<bool>(),
    ) {
        let mut cfg = config(tls);
        cfg.pipelining = pipelining;
        let mut session = Session::new(cfg);
        let (mut done, mut closed) = (0, 0);
        let mut drain = |session: &mut Session| {
            while let Some(event) = session.poll_event() {
                match event {
                    Event::TransactionDone(_) => done += 1,
                    Event::Closed(_) => closed += 1,
                    _ => {}
                }
            }
        };
        session.feed(&greeting);
        session.feed(GMAIL_GREETING.as_bytes());
        session.feed(GMAIL_EHLO.as_bytes());
        let mut enqueued = 0;
        for (i, bytes) in later.iter().enumerate() {
            let t = tx(i as u64, "b@x.example", &["u@y.example", "v@y.example"], BODY2);
            if session.enqueue(t).is_ok() {
                enqueued += 1;
            }
            if i % 7 == 6 {
                session.tls_established();
            }
            session.feed(bytes);
            drain(&mut session);
        }
        session.quit();
        session.connection_lost();
        drain(&mut session);
        prop_assert!(session.is_closed());
        prop_assert_eq!(closed, 1);
        prop_assert_eq!(session.in_flight(), 0);
        prop_assert_eq!(done, enqueued);
    }
}
