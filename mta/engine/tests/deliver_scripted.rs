//! The delivery engine against scripted receivers (aiosmtpd): deferrals, bounces,
//! 421, dropped connections, slow servers, servers without PIPELINING or EHLO,
//! and STARTTLS.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::dnsmasq::{DnsMasq, Record};
use support::engine::{addrs, expected_body, ip, Fixture};
use support::scripted::{self_signed_cert, Scripted};
use volley_conf::TlsPolicy;
use volley_engine::RunReport;

/// A receiver on 127.0.0.`last` serving `domain`'s MX (named `mx_name`).
fn setup(
    last: u8,
    domain: &str,
    mx_name: &str,
    scenario: serde_json::Value,
) -> (Scripted, DnsMasq, Fixture) {
    let server = Scripted::start(ip(last), scenario);
    let dns = DnsMasq::start(&[
        Record::mx(domain, mx_name, 10),
        Record::addr(mx_name, &format!("127.0.0.{last}")),
    ]);
    let f = Fixture::new(&dns, server.addr().port());
    (server, dns, f)
}

/// Runs rounds until nothing is left to do or the deadline passes; returns the sum.
fn run_until_final(f: &Fixture, deadline: Duration) -> RunReport {
    let end = Instant::now() + deadline;
    let mut total = RunReport::default();
    loop {
        let r = f.run_once();
        total.delivered += r.delivered;
        total.deferred += r.deferred;
        total.bounced += r.bounced;
        total.expired += r.expired;
        if r.attempted == 0 && r.not_due == 0 {
            return total;
        }
        assert!(Instant::now() < end, "not final by the deadline: {total:?}");
        // Deferred recipients come due after the 1 s retry interval.
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn defers_on_451_then_delivers() {
    let (server, _dns, f) = setup(
        20,
        "defer.test",
        "mx.defer.test",
        json!({"defer_first_n": 1}),
    );
    f.queue(&[addrs("defer.test", 3)]);
    let first = f.run_once();
    assert_eq!((first.deferred, first.delivered), (3, 0), "{first:?}");
    let e = &f.log_for("user1@defer.test")[0];
    assert_eq!(
        (
            e["status"].as_str(),
            e["code"].as_u64(),
            e["enhanced"].as_str()
        ),
        (Some("deferred"), Some(451), Some("4.7.1"))
    );
    assert_eq!(e["level"], "recipient");
    let total = run_until_final(&f, Duration::from_secs(20));
    assert_eq!(total.delivered, 3, "{total:?}");
    let log = f.log_for("user1@defer.test");
    assert_eq!(
        (
            log.len(),
            log[1]["status"].as_str(),
            log[1]["attempt"].as_u64()
        ),
        (2, Some("delivered"), Some(2))
    );
    let accepted: Vec<_> = server
        .transactions()
        .into_iter()
        .filter(|t| t.accepted)
        .collect();
    assert_eq!(accepted.len(), 3, "each recipient received exactly once");
}

#[test]
fn bounces_a_bad_mailbox_and_delivers_the_others() {
    let reply = "550 5.1.1 <nobody@bounce.test>: Recipient address rejected: User unknown";
    let (server, _dns, f) = setup(
        21,
        "bounce.test",
        "mx.bounce.test",
        json!({"rcpt_replies": {"nobody@bounce.test": reply}}),
    );
    let mut list = addrs("bounce.test", 3);
    list.insert(1, "nobody@bounce.test".into());
    f.queue(&[list]);
    let r = f.run_once();
    assert_eq!((r.delivered, r.bounced, r.deferred), (3, 1, 0), "{r:?}");
    let e = &f.log_for("nobody@bounce.test")[0];
    assert_eq!(
        (
            e["status"].as_str(),
            e["class"].as_str(),
            e["enhanced"].as_str()
        ),
        (Some("bounced"), Some("bad_mailbox"), Some("5.1.1"))
    );
    assert!(e["reply"].as_str().unwrap().contains("User unknown"), "{e}");
    assert_eq!(
        server.transactions().iter().filter(|t| t.accepted).count(),
        3
    );
}

#[test]
fn a_421_defers_what_was_in_flight_and_the_rest_follows() {
    let (server, _dns, mut f) = setup(
        22,
        "busy.test",
        "mx.busy.test",
        json!({"reply_421_after": 2}),
    );
    f.config.site.pause = Duration::from_millis(300);
    f.queue(&[addrs("busy.test", 6)]);
    let first = f.run_once();
    assert_eq!(first.delivered + first.deferred, 6, "{first:?}");
    assert!(first.delivered >= 2, "{first:?}");
    let deferred: Vec<_> = f
        .log()
        .into_iter()
        .filter(|e| e["status"] == "deferred")
        .collect();
    assert!(!deferred.is_empty());
    assert!(
        deferred
            .iter()
            .all(|e| e["code"] == 421 && e["level"] == "connection"),
        "{deferred:?}"
    );
    let total = run_until_final(&f, Duration::from_secs(30));
    assert_eq!(first.delivered + total.delivered, 6);
    assert_eq!(
        server.transactions().iter().filter(|t| t.accepted).count(),
        6,
        "no duplicates"
    );
}

#[test]
fn a_connection_dropped_mid_data_defers_as_a_connection_failure() {
    let (server, _dns, f) = setup(
        23,
        "drop.test",
        "mx.drop.test",
        json!({"drop_in_data_after": 1, "drop_in_data_times": 1}),
    );
    f.queue(&[addrs("drop.test", 3)]);
    let first = f.run_once();
    assert!(first.deferred >= 1, "{first:?}");
    let dropped: Vec<_> = f
        .log()
        .into_iter()
        .filter(|e| e["status"] == "deferred")
        .collect();
    assert!(
        dropped.iter().all(|e| e["level"] == "connection"),
        "{dropped:?}"
    );
    run_until_final(&f, Duration::from_secs(20));
    let accepted = server
        .transactions()
        .into_iter()
        .filter(|t| t.accepted)
        .count();
    assert_eq!(accepted, 3, "each recipient exactly once");
}

#[test]
fn a_server_too_slow_to_greet_is_a_connection_failure() {
    let (_server, _dns, mut f) = setup(
        24,
        "slow.test",
        "mx.slow.test",
        json!({"greeting_delay_ms": 3000}),
    );
    f.config.delivery.greeting_timeout = Duration::from_millis(300);
    f.config.delivery.command_timeout = Duration::from_millis(300);
    f.queue(&[addrs("slow.test", 2)]);
    let started = Instant::now();
    let r = f.run_once();
    assert_eq!(r.deferred, 2, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let e = &f.log_for("user0@slow.test")[0];
    assert_eq!(e["level"], "connection");
    assert!(e["reply"].as_str().unwrap().contains("timeout"), "{e}");
}

#[test]
fn works_without_pipelining_and_with_helo_only() {
    for (last, scenario) in [
        (25, json!({"ehlo_disable": ["PIPELINING"]})),
        (
            26,
            json!({"command_replies": {"EHLO": "502 5.5.2 Error: command not recognized"}}),
        ),
    ] {
        let (server, _dns, f) = setup(last, "plain.test", "mx.plain.test", scenario.clone());
        f.queue(&[addrs("plain.test", 4)]);
        let r = f.run_once();
        assert_eq!(r.delivered, 4, "{scenario}: {r:?}");
        let t = server.transactions();
        assert_eq!(t.len(), 4, "{scenario}");
        assert_eq!(t[0].data, expected_body(), "{scenario}: bytes that arrived");
    }
}

#[test]
fn uses_starttls_when_offered() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let scenario = json!({"starttls": {"cert": cert, "key": key}});
    let (server, _dns, f) = setup(27, "tls.test", "mx.tls.test", scenario);
    f.queue(&[addrs("tls.test", 2)]);
    assert_eq!(f.run_once().delivered, 2);
    assert!(server.transactions().iter().all(|t| t.tls), "sent over TLS");
    assert!(f.log().iter().all(|e| e["tls"] == true));
}

#[test]
fn opportunistic_tls_falls_back_to_plaintext_after_a_failed_handshake() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    // Offers STARTTLS, answers 220, then speaks only TLS 1.1, which rustls refuses.
    let old_tls = json!({"starttls": {"cert": cert, "key": key, "max_version": "TLSv1_1"}});
    let (server, _dns, mut f) = setup(31, "oldtls.test", "mx.oldtls.test", old_tls.clone());
    // One connection at a time, one message each: the second and third
    // connections show whether the host was remembered.
    f.config.site.max_connections = 1;
    f.config.site.max_messages_per_connection = 1;
    f.queue(&[addrs("oldtls.test", 3)]);
    let r = f.run_once();
    assert_eq!((r.delivered, r.deferred), (3, 0), "{r:?} {:?}", f.log());
    let txs = server.transactions();
    assert_eq!(txs.len(), 3);
    assert!(txs.iter().all(|t| !t.tls), "sent in plaintext");
    assert!(f.log().iter().all(|e| e["tls"] == false));
    let handshakes = server
        .transcript()
        .lines()
        .filter(|l| l.ends_with("C: STARTTLS"))
        .count();
    assert_eq!(handshakes, 1, "{}", server.transcript());

    // `required` never falls back: nothing is sent.
    let (server, _dns, mut f) = setup(32, "oldtls.test", "mx.oldtls.test", old_tls);
    f.config.delivery.tls = TlsPolicy::Required;
    f.config.delivery.tls_verify = false;
    f.queue(&[addrs("oldtls.test", 2)]);
    let r = f.run_once();
    assert_eq!((r.delivered, r.deferred), (0, 2), "{r:?}");
    assert!(server.transactions().is_empty());
}

#[test]
fn required_tls_verifies_the_certificate_against_the_configured_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let scenario = json!({"starttls": {"cert": cert, "key": key}});
    let (server, _dns, mut f) = setup(28, "tls.test", "mx.tls.test", scenario);
    f.config.delivery.tls = TlsPolicy::Required;
    f.config.delivery.tls_ca_file = Some(cert.clone());
    f.queue(&[addrs("tls.test", 2)]);
    let r = f.run_once();
    assert_eq!(r.delivered, 2, "{r:?} {:?}", f.log());
    assert!(server.transactions().iter().all(|t| t.tls));

    // Without the CA the self-signed certificate does not verify: nothing is sent.
    let (server, _dns, mut f) = setup(
        29,
        "tls.test",
        "mx.tls.test",
        json!({"starttls": {"cert": cert, "key": key}}),
    );
    f.config.delivery.tls = TlsPolicy::Required;
    f.queue(&[addrs("tls.test", 2)]);
    let r = f.run_once();
    assert_eq!((r.delivered, r.deferred), (0, 2), "{r:?}");
    assert!(server.transactions().is_empty());
    assert!(
        f.log()[0]["reply"].as_str().unwrap().contains("TLS"),
        "{:?}",
        f.log()[0]
    );
}

#[test]
fn required_tls_without_starttls_defers_and_sends_nothing() {
    let (server, _dns, mut f) = setup(30, "notls.test", "mx.notls.test", json!({}));
    f.config.delivery.tls = TlsPolicy::Required;
    f.queue(&[addrs("notls.test", 2)]);
    let r = f.run_once();
    assert_eq!((r.delivered, r.deferred), (0, 2), "{r:?}");
    assert!(server.transactions().is_empty());
    let e = &f.log()[0];
    assert_eq!(e["level"], "connection");
    assert!(
        e["reply"].as_str().unwrap().to_lowercase().contains("tls"),
        "{e}"
    );
}

/// The accepted transactions' recipients, each list sorted, the lists sorted.
fn recipient_groups(server: &Scripted) -> Vec<Vec<String>> {
    let mut groups: Vec<Vec<String>> = server
        .transactions()
        .into_iter()
        .filter(|t| t.accepted)
        .map(|t| {
            let mut r = t.rcpt_tos;
            r.sort();
            r
        })
        .collect();
    groups.sort();
    groups
}

#[test]
fn a_relayed_message_goes_to_its_recipients_in_shared_transactions() {
    let (server, _dns, mut f) = setup(33, "group.test", "mx.group.test", json!({}));
    f.config.site.max_recipients_per_transaction = 3;
    let at = |names: &[&str]| -> Vec<String> {
        names.iter().map(|n| format!("{n}@group.test")).collect()
    };
    // Three received messages (five recipients, two, one) and a campaign of three.
    f.queue_relayed(
        &[
            at(&["a1", "a2", "a3", "a4", "a5"]),
            at(&["b1", "b2"]),
            at(&["c1"]),
        ],
        b"Subject: relayed\r\n\r\nx\r\n",
    );
    f.queue(&[addrs("group.test", 3)]);
    let r = f.run_once();
    assert_eq!((r.delivered, r.deferred), (11, 0), "{r:?}");
    // At most three to a transaction, never two messages' recipients together;
    // each campaign recipient alone (its message is its own).
    let a = at(&["a1", "a2", "a3", "a4", "a5"]);
    let mut expected = vec![
        a[..3].to_vec(),
        a[3..].to_vec(),
        at(&["b1", "b2"]),
        at(&["c1"]),
    ];
    expected.extend(addrs("group.test", 3).into_iter().map(|a| vec![a]));
    expected.sort();
    assert_eq!(recipient_groups(&server), expected);
    // Every recipient has its own delivered line in the log.
    for rcpt in a {
        let log = f.log_for(&rcpt);
        assert_eq!(
            (log.len(), log[0]["status"].as_str()),
            (1, Some("delivered")),
            "{log:?}"
        );
    }
}

#[test]
fn recipients_over_the_servers_limit_go_in_the_next_transaction() {
    // The receiver takes two recipients per transaction and answers the third
    // "452 4.5.3 Too many recipients": those are sent again at once, not deferred.
    let (server, _dns, f) = setup(34, "limit.test", "mx.limit.test", json!({"rcpt_limit": 2}));
    let rcpts: Vec<String> = (1..=5).map(|i| format!("r{i}@limit.test")).collect();
    f.queue_relayed(std::slice::from_ref(&rcpts), b"Subject: five\r\n\r\nx\r\n");
    let r = f.run_once();
    assert_eq!((r.delivered, r.deferred), (5, 0), "{r:?} {:?}", f.log());
    let groups = recipient_groups(&server);
    assert_eq!(
        groups.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 1],
        "{groups:?}"
    );
    let mut received: Vec<String> = groups.into_iter().flatten().collect();
    received.sort();
    assert_eq!(received, rcpts, "each exactly once");
    assert!(
        f.log().iter().all(|e| e["status"] == "delivered"),
        "{:?}",
        f.log()
    );
}

#[test]
fn a_relayed_messages_recipients_at_two_domains_of_one_site_share_a_transaction() {
    // Two domains with the same MX host: one site, as behind a smarthost.
    let server = Scripted::start(ip(35), json!({}));
    let dns = DnsMasq::start(&[
        Record::mx("one.test", "mx.shared.test", 10),
        Record::mx("two.test", "mx.shared.test", 10),
        Record::addr("mx.shared.test", "127.0.0.35"),
    ]);
    let f = Fixture::new(&dns, server.addr().port());
    let list = |names: &[&str]| -> Vec<String> { names.iter().map(|n| n.to_string()).collect() };
    f.queue_relayed(
        &[
            list(&["a@one.test", "b@two.test"]),
            list(&["c@one.test", "d@two.test"]),
        ],
        b"Subject: two domains\r\n\r\nx\r\n",
    );
    let r = f.run_once();
    assert_eq!((r.delivered, r.deferred), (4, 0), "{r:?}");
    assert_eq!(
        recipient_groups(&server),
        [
            list(&["a@one.test", "b@two.test"]),
            list(&["c@one.test", "d@two.test"])
        ]
    );
}
