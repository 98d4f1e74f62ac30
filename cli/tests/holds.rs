//! `volley queue hold | release | purge` end to end: a real `volley run`
//! delivering to a real smtp-sink, the commands run as an operator would
//! (through the daemon's API while it runs, on the spool when it is stopped).
//! Assertions are on what arrived at the receiver, what the API counts, the
//! delivery log's lines and `queue summary`.

mod common;
mod node;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use node::Node;
use serde_json::{json, Value};
use support::port::poll;

/// `volley queue ARGS` against the node's config: (success, stdout, stderr).
fn queue(node: &Node, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    let out = common::volley_with(&node.config(), &all);
    (
        out.status.success(),
        common::stdout(&out),
        common::stderr(&out),
    )
}

fn ok(node: &Node, args: &[&str]) -> String {
    let (success, out, err) = queue(node, args);
    assert!(success, "volley queue {args:?}: {err}\n{out}");
    out
}

/// `n` recipients at `domain`, addresses `PREFIX{i}@domain`.
fn at(prefix: &str, domain: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"email": format!("{prefix}{i}@{domain}"), "fields": {"name": "N"}}))
        .collect()
}

fn count(node: &Node, prefix: &str) -> usize {
    node.arrived(prefix).len()
}

/// Waits until `prefix`'s arrivals reach `n` (deadline 60 s).
fn wait_arrived(node: &Node, prefix: &str, n: usize) {
    let got = poll(Duration::from_secs(60), || {
        (count(node, prefix) >= n).then_some(())
    });
    assert!(
        got.is_some(),
        "{prefix}: {} of {n} arrived in 60 s\n{}",
        count(node, prefix),
        node.log()
    );
}

/// Stays at `n` arrivals for `for_` (nothing held gets out).
fn stays(node: &Node, prefix: &str, n: usize, for_: Duration) {
    let end = Instant::now() + for_;
    while Instant::now() < end {
        assert_eq!(count(node, prefix), n, "{prefix}: held recipients arrived");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_held_domain_gets_nothing_until_released_across_a_restart() {
    let mut node = Node::start(198, false, "");
    let token = node.token("shop", "sender");

    // Refusals name what is wrong.
    let (success, _, err) = queue(&node, &["hold"]);
    assert!(!success);
    assert!(
        err.contains("--campaign") && err.contains("--domain"),
        "{err}"
    );
    let (success, _, err) = queue(&node, &["hold", "--domain", "a b"]);
    assert!(!success);
    assert!(err.contains("not a domain name"), "{err}");

    let out = ok(&node, &["hold", "--domain", "held.test"]);
    assert!(out.contains("held: domain held.test"), "{out}");
    let again = ok(&node, &["hold", "--domain", "HELD.test."]);
    assert!(again.contains("already held"), "{again}");
    let listed = node.call("GET", "/v1/queue/holds", &node.admin, None);
    assert_eq!(
        listed.json()["holds"],
        json!([{"domain": "held.test"}]),
        "{}",
        listed.text()
    );
    // A sender token may not.
    assert_eq!(
        node.call("GET", "/v1/queue/holds", &token, None).status,
        403
    );

    let mut recipients = at("h", "held.test", 30);
    recipients.extend(at("f", "free.test", 30));
    let id = node.submit(&token, recipients);
    wait_arrived(&node, "f", 30);
    stays(&node, "h", 0, Duration::from_secs(3));
    let summary = ok(&node, &["summary"]);
    assert!(summary.contains("held: domain held.test"), "{summary}");
    let shown = node
        .call("GET", &format!("/v1/campaigns/{id}"), &token, None)
        .json();
    assert_eq!(shown["delivered"], 30, "{shown}");
    assert_ne!(shown["state"], "completed", "{shown}");

    // The hold survives a restart.
    node.kill();
    node.run();
    stays(&node, "h", 0, Duration::from_secs(3));

    let out = ok(&node, &["release", "--domain", "held.test"]);
    assert!(
        out.contains("released: domain held.test") && out.contains("holds now: none"),
        "{out}"
    );
    wait_arrived(&node, "h", 30);
    node.wait_for(id, &token, "completed", |c| c["state"] == "completed");

    // On a stopped spool the same command works on the spool itself.
    node.kill();
    let out = ok(&node, &["hold", "--site", "route:127.0.0.198:1"]);
    assert!(out.contains("held: site route:127.0.0.198:1"), "{out}");
    let out = ok(&node, &["release", "--site", "route:127.0.0.198:1"]);
    assert!(out.contains("released"), "{out}");
}

#[test]
fn a_hold_placed_mid_campaign_stops_new_transactions() {
    let node = Node::start(
        199,
        false,
        "[site]\nmax_connections = 1\nmax_messages_per_second = 20\n",
    );
    let token = node.token("shop", "sender");
    let id = node.submit(&token, at("m", "mid.test", 200));
    wait_arrived(&node, "m", 10);
    let out = ok(&node, &["hold", "--campaign", &id.to_string()]);
    assert!(out.contains(&format!("held: campaign {id}")), "{out}");
    // What was in flight when the hold came may still arrive; nothing more.
    std::thread::sleep(Duration::from_secs(1));
    let at_hold = count(&node, "m");
    assert!(at_hold < 200, "the campaign finished before the hold");
    stays(&node, "m", at_hold, Duration::from_secs(3));

    // Purge asks for --yes, then finalises the rest unsent, each logged.
    let (success, _, err) = queue(&node, &["purge", "--campaign", &id.to_string()]);
    assert!(!success && err.contains("--yes"), "{err}");
    let out = ok(&node, &["purge", "--campaign", &id.to_string(), "--yes"]);
    let purged = 200 - at_hold;
    assert!(
        out.contains(&format!("purged {purged} recipients")),
        "{out} (arrived {at_hold})"
    );
    let done = node.wait_for(id, &token, "completed", |c| c["state"] == "completed");
    assert_eq!(done["delivered"], at_hold as i64, "{done}");
    assert_eq!(done["cancelled"], purged as i64, "{done}");
    let log = std::fs::read_to_string(node.dir.path().join("delivery.jsonl")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l["status"] == "purged")
        .collect();
    assert_eq!(lines.len(), purged, "purged lines in the delivery log");
    assert!(
        lines.iter().all(|l| l["campaign"] == id),
        "{:?}",
        lines.first()
    );
    stays(&node, "m", at_hold, Duration::from_secs(1));
    // The hold is still there until released.
    let out = ok(&node, &["release", "--campaign", &id.to_string()]);
    assert!(out.contains("released"), "{out}");
}
