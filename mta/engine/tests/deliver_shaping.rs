//! Per-site limits, overrides, routes to a smarthost, egress addresses, and a real
//! Postfix delivering into a Maildir (with CHUNKING).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::dnsmasq::{DnsMasq, Record};
use support::engine::{addrs, ip, Fixture, MESSAGE};
use support::postfix::{Postfix, PostfixOptions};
use support::scripted::Scripted;
use support::smtp_sink::{SinkOptions, SmtpSink};
use volley_conf::{Glob, Route, SiteOverride};

fn sink_site(last: u8, domain: &str) -> (SmtpSink, DnsMasq, Fixture) {
    let sink = SmtpSink::start(ip(last), SinkOptions::plain());
    let mx = format!("mx.{domain}");
    let dns = DnsMasq::start(&[
        Record::mx(domain, &mx, 10),
        Record::addr(&mx, &format!("127.0.0.{last}")),
    ]);
    let f = Fixture::new(&dns, sink.addr().port());
    (sink, dns, f)
}

#[test]
fn messages_per_connection_and_connections_are_bounded_per_site() {
    let server = Scripted::start(ip(40), json!({"delay_ms": 5}));
    let dns = DnsMasq::start(&[
        Record::mx("limits.test", "mx.limits.test", 10),
        Record::addr("mx.limits.test", "127.0.0.40"),
    ]);
    let mut f = Fixture::new(&dns, server.addr().port());
    f.config.site.max_messages_per_connection = 10;
    f.config.site.max_connections = 2;
    f.queue(&[addrs("limits.test", 50)]);
    assert_eq!(f.run_once().delivered, 50);
    let mut per_session = std::collections::BTreeMap::<u64, usize>::new();
    for t in server.transactions() {
        *per_session.entry(t.session).or_default() += 1;
    }
    assert!(per_session.values().all(|&n| n <= 10), "{per_session:?}");
    assert!(per_session.len() >= 5, "{per_session:?}");
    // Never more than two sessions open at once, from the receiver's transcript.
    let (mut open, mut most) = (0i32, 0i32);
    for line in server.transcript().lines() {
        if line.contains("-- connect from") {
            open += 1;
            most = most.max(open);
        } else if line.contains("-- connection closed") {
            open -= 1;
        }
    }
    assert_eq!(most, 2, "two connections, used together");
}

#[test]
fn an_override_matched_by_mx_glob_replaces_the_defaults() {
    let (sink, _dns, mut f) = sink_site(41, "override.test");
    f.config.site.max_messages_per_connection = 100;
    f.config.site_override = vec![SiteOverride {
        domain: None,
        mx: Glob::new("*.override.test").ok(),
        max_connections: Some(1),
        max_messages_per_connection: Some(3),
        max_recipients_per_transaction: None,
        max_messages_per_second: None,
        connect_backoff: None,
        connect_backoff_max: None,
        pause: None,
        pause_patterns: None,
    }];
    f.queue(&[addrs("override.test", 9)]);
    assert_eq!(f.run_once().delivered, 9);
    // smtp-sink counts a session when it ends, which may trail the last
    // message: wait for all nine to have ended their sessions, then count.
    let counters = sink
        .wait_for_counters(|c| c.messages >= 9 && c.quits >= 3, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counters.sessions, 3, "{counters:?}");
}

#[test]
fn the_message_rate_per_site_is_limited() {
    let (_sink, _dns, mut f) = sink_site(42, "rate.test");
    f.config.site.max_messages_per_second = 20.0;
    f.queue(&[addrs("rate.test", 41)]);
    let started = Instant::now();
    assert_eq!(f.run_once().delivered, 41);
    // A burst of 20, then 21 more at 20/s: at least a second.
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_configured_reply_pattern_pauses_the_site() {
    let server = Scripted::start(
        ip(43),
        json!({
            "defer_first_n": 1,
            "defer_reply": "451 4.7.28 Our system has detected an unusual rate of unsolicited mail"
        }),
    );
    let dns = DnsMasq::start(&[
        Record::mx("pause.test", "mx.pause.test", 10),
        Record::addr("mx.pause.test", "127.0.0.43"),
    ]);
    let mut f = Fixture::new(&dns, server.addr().port());
    f.config.site.pause = Duration::from_millis(1500);
    f.config.site.pause_patterns = vec!["unusual rate".into()];
    f.config.delivery.pipeline_depth = 1;
    f.queue(&[addrs("pause.test", 3)]);
    let started = Instant::now();
    let r = f.run_once();
    // The first reply paused the site: the others waited out the pause before
    // their own (deferred) attempt.
    assert_eq!(r.deferred, 3, "{r:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_route_sends_a_domain_to_its_smarthost_instead_of_mx() {
    let relay = SmtpSink::start(ip(44), SinkOptions::plain());
    // The domain has no DNS at all: only the route can deliver it.
    let dns = DnsMasq::start(&[]);
    let mut f = Fixture::new(&dns, 9);
    f.config.route = vec![Route {
        domain: Glob::new("*.routed.test").unwrap(),
        via: relay.addr().to_string(),
        tls: None,
    }];
    f.queue(&[addrs("corp.routed.test", 3)]);
    assert_eq!(f.run_once().delivered, 3);
    relay.wait_for_messages(3, Duration::from_secs(10)).unwrap();
    assert_eq!(f.log()[0]["ip"], "127.0.0.44");
}

#[test]
fn connections_leave_from_the_configured_source_addresses() {
    let server = Scripted::start(ip(45), json!({}));
    let dns = DnsMasq::start(&[
        Record::mx("egress.test", "mx.egress.test", 10),
        Record::addr("mx.egress.test", "127.0.0.45"),
    ]);
    let mut f = Fixture::new(&dns, server.addr().port());
    f.config.delivery.source_addresses = vec!["127.0.0.46".parse().unwrap()];
    f.queue(&[addrs("egress.test", 2)]);
    assert_eq!(f.run_once().delivered, 2);
    let t = server.transactions();
    assert!(
        t.iter().all(|t| t.peer.starts_with("127.0.0.46")),
        "{:?}",
        t.iter().map(|t| &t.peer).collect::<Vec<_>>()
    );
}

#[test]
fn postfix_receives_the_exact_bytes_into_its_maildir() {
    if !Postfix::available() {
        return support::skip(
            "postfix_receives_the_exact_bytes_into_its_maildir",
            "a private Postfix needs root",
        );
    }
    let postfix = Postfix::start(ip(47), PostfixOptions::default());
    let dns = DnsMasq::start(&[
        Record::mx("maildir.test", "mx.maildir.test", 10),
        Record::addr("mx.maildir.test", "127.0.0.47"),
    ]);
    let f = Fixture::new(&dns, postfix.addr().port());
    f.queue(&[addrs("maildir.test", 3)]);
    let r = f.run_once();
    assert_eq!(r.delivered, 3, "{r:?}\n{}", postfix.log());
    // Postfix offers CHUNKING: the messages went as BDAT (its disconnect line
    // counts the commands, "bdat=N"; it is written when the session ends,
    // after the replies volley recorded).
    if let Err(log) = postfix.wait_for_log(" bdat=", Duration::from_secs(30)) {
        panic!("no BDAT in Postfix's log:\n{log}");
    }
    let delivered = postfix
        .wait_for_delivered(3, Duration::from_secs(30))
        .unwrap();
    let expected = String::from_utf8_lossy(MESSAGE).replace("\r\n", "\n") + "\n";
    for d in &delivered {
        assert_eq!(
            String::from_utf8_lossy(&d.body()),
            expected,
            "bytes in the Maildir"
        );
    }
}
