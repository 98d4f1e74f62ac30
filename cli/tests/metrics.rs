//! `/metrics` end to end: a real `volley run` delivering a campaign to real
//! smtp-sinks (one accepting, one refusing every recipient), scraped while
//! it runs by Python `prometheus_client`'s text parser
//! (`cli/tests/scrape/scrape.py`). Assertions are what an operator's
//! dashboard relies on: every scrape parses, counters never go down, and at
//! the end the counters add up to the campaign's own counts and to what the
//! receivers got, the queue gauges are back to zero, and no label names a
//! campaign or a recipient.

mod common;
mod node;
mod scrape;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use node::{id_of, stores, template, Node};
use scrape::{available, has, scrape, sum};
use serde_json::{json, Value};
use support::port::poll;
use support::smtp_sink::{SinkOptions, SmtpSink};

#[test]
fn metrics_add_up_to_the_campaign_and_parse_while_it_runs() {
    if !available("metrics_add_up") {
        return;
    }
    for (n, pg) in stores("metrics_add_up").into_iter().enumerate() {
        let last = 195 + n as u8;
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let mut refusing = SinkOptions::plain();
        refusing.hard_reject = vec!["RCPT".into()];
        let bouncer = SmtpSink::start(ip, refusing);
        let mut limiting = SinkOptions::plain();
        limiting.soft_reject = vec!["RCPT".into()];
        limiting.soft_reply = Some("450 4.7.28 Rate limited, try later".into());
        let limiter = SmtpSink::start(ip, limiting);
        let node = Node::start_routed(
            last,
            pg,
            "",
            &format!(
                "[[route]]\ndomain = \"bounce.test\"\nvia = \"{}\"\n\
                 [[route]]\ndomain = \"pause.test\"\nvia = \"{}\"\n",
                bouncer.addr(),
                limiter.addr()
            ),
            // Slow enough to be scraped while it runs (about 5 s); a reply
            // naming 4.7.28 pauses a site.
            "[site]\nmax_connections = 2\nmax_messages_per_second = 200\n\
             pause_patterns = [\"4.7.28\"]\npause = \"5m\"\n",
        );
        let token = node.token("shop", "sender");

        // /metrics needs no token and is in the text format's content type.
        let plain = support::http::request(node.api, "GET", "/metrics", &[], b"");
        assert_eq!(plain.status, 200, "{}", plain.text());
        assert!(
            plain
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
            "{:?}",
            plain.header("content-type")
        );

        let (good, bad) = (900usize, 40usize);
        let mut recipients: Vec<Value> = (0..good)
            .map(|i| json!({"email": format!("m{i}@metrics.test"), "fields": {"name": "M"}}))
            .collect();
        recipients.extend(
            (0..bad)
                .map(|i| json!({"email": format!("b{i}@bounce.test"), "fields": {"name": "B"}})),
        );
        let made = node.call(
            "POST",
            "/v1/campaigns",
            &token,
            Some(&json!({"template": template(), "recipients": recipients})),
        );
        assert_eq!(made.status, 201, "{}", made.text());
        let id = id_of(&made);

        // Scrape while it runs: every scrape parses, counters only grow.
        let mut last_delivered = 0.0;
        let mut scrapes = 0;
        let mut saw_queue = false;
        let done = poll(Duration::from_secs(90), || {
            let samples = scrape(node.api);
            scrapes += 1;
            let delivered = sum(
                &samples,
                "volley_messages_total",
                &[("outcome", "delivered")],
            );
            assert!(
                delivered >= last_delivered,
                "volley_messages_total went down: {last_delivered} then {delivered}"
            );
            last_delivered = delivered;
            if sum(&samples, "volley_queue_recipients", &[]) > 0.0 {
                saw_queue = true;
            }
            let c = node
                .call("GET", &format!("/v1/campaigns/{id}"), &token, None)
                .json();
            (c["state"] == "completed").then_some(c)
        });
        let campaign = done.unwrap_or_else(|| panic!("not completed in 90 s\n{}", node.log()));
        assert!(scrapes >= 2, "the campaign ended before a second scrape");
        assert!(
            saw_queue,
            "no scrape saw the campaign's queue ({scrapes} scrapes)"
        );

        let samples = scrape(node.api);
        let arrived = node.arrived("m").len();
        assert_eq!(arrived, good, "the sink got {arrived} of {good}");
        assert_eq!(campaign["delivered"], good as i64, "{campaign}");
        assert_eq!(campaign["bounced"], bad as i64, "{campaign}");
        let count = |outcome: &str| sum(&samples, "volley_messages_total", &[("outcome", outcome)]);
        assert_eq!(count("delivered"), good as f64, "delivered");
        assert_eq!(count("bounced"), bad as f64, "bounced");
        assert_eq!(count("expired"), 0.0, "expired");
        assert_eq!(
            sum(&samples, "volley_reply_seconds_count", &[]),
            (good + bad) as f64,
            "one reply-latency observation per transaction"
        );
        assert_eq!(sum(&samples, "volley_transactions_in_flight", &[]), 0.0);
        for state in ["pending", "in_flight", "deferred"] {
            assert_eq!(
                sum(&samples, "volley_queue_recipients", &[("state", state)]),
                0.0,
                "queue {state} after completion"
            );
        }
        assert_eq!(
            sum(&samples, "volley_campaigns", &[("state", "completed")]),
            1.0
        );
        assert!(has(&samples, "volley_dns_cache_hits_total"));
        assert!(has(&samples, "volley_webhook_outbox_pending"));

        // Conventions: counters end in _total, histograms have buckets;
        // labels are bounded (no campaign id or recipient anywhere).
        for s in &samples {
            assert!(s.name.starts_with("volley_"), "{s:?}");
            if s.family_type == "counter" {
                assert!(
                    s.name.ends_with("_total") || s.name.ends_with("_created"),
                    "{s:?}"
                );
            }
            for (k, v) in &s.labels {
                assert!(
                    ["outcome", "site", "state", "le", "reason"].contains(&k.as_str()),
                    "unexpected label {k} in {s:?}"
                );
                assert!(!v.contains('@'), "an address in a label: {s:?}");
                assert_ne!(v, &id.to_string(), "a campaign id in a label: {s:?}");
            }
        }
        assert!(has(&samples, "volley_reply_seconds_bucket"));
        // The two sites are named apart.
        let sites: std::collections::BTreeSet<&str> = samples
            .iter()
            .filter(|s| s.name == "volley_messages_total" && s.value > 0.0)
            .filter_map(|s| s.labels.get("site").map(String::as_str))
            .collect();
        assert_eq!(sites.len(), 2, "{sites:?}");
        assert!(!has(&samples, "volley_site_paused"), "nothing paused yet");

        // A site paused by a reply is shown with that reply while paused.
        let paused = node.call(
            "POST",
            "/v1/campaigns",
            &token,
            Some(&json!({"template": template(), "recipients": [
                {"email": "p1@pause.test", "fields": {"name": "P"}},
                {"email": "p2@pause.test", "fields": {"name": "P"}},
            ]})),
        );
        assert_eq!(paused.status, 201, "{}", paused.text());
        let site = format!("route:{}", limiter.addr());
        let shown = poll(Duration::from_secs(30), || {
            scrape(node.api)
                .into_iter()
                .find(|s| s.name == "volley_site_paused" && s.labels.get("site") == Some(&site))
        })
        .unwrap_or_else(|| panic!("{site} never shown paused\n{}", node.log()));
        assert_eq!(shown.value, 1.0);
        let reason = shown.labels.get("reason").cloned().unwrap_or_default();
        assert!(reason.contains("450 4.7.28 Rate limited"), "{reason}");
    }
}
