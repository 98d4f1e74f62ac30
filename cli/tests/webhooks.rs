//! Webhooks end to end: a real `volley run` delivering a campaign to a real
//! smtp-sink, and a webhook endpoint in Python that checks every request's
//! signature with the Standard Webhooks reference library
//! (`standardwebhooks`, which nobody here wrote). Assertions are on what the
//! endpoint got: verified requests, every delivery event once, the same body
//! under the same `webhook-id` whenever a request is retried.

mod common;
mod endpoint;
mod node;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use endpoint::{available, Endpoint, SECRET};
use node::{id_of, is_problem, rows, stores, template, Node};
use serde_json::json;
use support::port::poll;

fn write_secret(node: &Node) -> PathBuf {
    let path = node.dir.path().join("webhook.secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path
}

#[test]
fn every_delivery_event_reaches_a_webhook_through_an_outage_verified_by_standardwebhooks() {
    let test = "every_delivery_event_reaches_a_webhook";
    if !available(test) {
        return;
    }
    for (n, pg) in stores(test).into_iter().enumerate() {
        let last = 180 + n as u8;
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let work = tempfile::tempdir().unwrap();
        let mut endpoint = Endpoint::start(work.path(), ip, SECRET, 204);
        let secret = work.path().join("webhook.secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        // 40 messages a second: the campaign lasts ~15 s, long enough to take
        // the endpoint down in the middle of it.
        let node = Node::start(
            last,
            pg,
            &format!(
                "[site]\nmax_messages_per_second = 40\n[[webhook]]\nurl = \"{}\"\nsecret_file = \"{}\"\nbatch = 25\n",
                endpoint.url(),
                secret.display()
            ),
        );
        let sender = node.token("shop", "sender");
        let total = 600;
        let c = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": template(), "recipients": rows("h", total)})),
        );
        assert_eq!(c.status, 201, "{}", c.text());
        let id = id_of(&c);

        // Down once the first events arrived, for 10 s, while mail goes on.
        let first = poll(Duration::from_secs(30), || {
            (!endpoint.events().is_empty()).then_some(())
        });
        assert!(first.is_some(), "no event arrived: {}", node.log());
        endpoint.kill();
        let during = node.sink.counters().messages;
        std::thread::sleep(Duration::from_secs(10));
        assert!(
            node.sink.counters().messages > during,
            "mail stopped while the webhook was down"
        );
        endpoint.up(work.path());

        node.wait_for(id, &sender, "completed", |c| c["state"] == "completed");
        assert!(
            node.log().contains("webhook request failed"),
            "the outage was not seen: {}",
            node.log()
        );
        let everything = poll(Duration::from_secs(90), || {
            let events = endpoint.events();
            let delivered = events
                .iter()
                .filter(|e| e["type"] == "message.delivered")
                .count();
            let completed = events.iter().any(|e| e["type"] == "campaign.completed");
            (delivered >= total && completed).then_some(events)
        });
        let events = everything.unwrap_or_else(|| {
            panic!(
                "not every event arrived: {} events\n{}",
                endpoint.events().len(),
                node.log()
            )
        });

        // Every request verified; a retried request is the same bytes under
        // the same id.
        let mut bodies: HashMap<String, String> = HashMap::new();
        for r in endpoint.requests() {
            assert_eq!(r["verified"], true, "{r}");
            let id = r["webhook_id"].as_str().unwrap().to_owned();
            let body = r["body"].as_str().unwrap().to_owned();
            if let Some(before) = bodies.insert(id.clone(), body.clone()) {
                assert_eq!(before, body, "{id} was sent twice with different bodies");
            }
        }
        // Each recipient's delivery once, with what the receiver got.
        let mut recipients: Vec<String> = events
            .iter()
            .filter(|e| e["type"] == "message.delivered")
            .map(|e| {
                let d = &e["data"];
                assert_eq!(d["campaign"], id, "{e}");
                assert_eq!(d["code"], 250, "{e}");
                assert!(d["gateway"].as_str().is_some_and(|g| !g.is_empty()), "{e}");
                assert!(
                    e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
                    "{e}"
                );
                d["recipient"].as_str().unwrap().to_owned()
            })
            .collect();
        recipients.sort();
        let unique: HashSet<&String> = recipients.iter().collect();
        assert_eq!(
            unique.len(),
            recipients.len(),
            "a delivery event came twice"
        );
        let mut arrived = node.arrived("h");
        arrived.sort();
        assert_eq!(recipients, arrived);
        let ids: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
        assert_eq!(ids.len(), events.len(), "an event id came twice");
        let done = events
            .iter()
            .find(|e| e["type"] == "campaign.completed")
            .unwrap();
        assert_eq!(done["data"]["delivered"], total, "{done}");

        // The API agrees: nothing pending, nothing failed.
        let hooks = node.call("GET", "/v1/webhooks", &node.admin, None).json();
        let hook = &hooks["webhooks"][0];
        assert_eq!(hook["source"], "config", "{hooks}");
        assert_eq!(hook["url"], endpoint.url(), "{hooks}");
        let shown = poll(Duration::from_secs(10), || {
            let h = node
                .call(
                    "GET",
                    &format!("/v1/webhooks/{}", hook["id"]),
                    &node.admin,
                    None,
                )
                .json();
            (h["pending"] == 0).then_some(h)
        })
        .expect("events still pending");
        assert_eq!(shown["failed"], 0, "{shown}");
        assert_eq!(shown["state"], "active", "{shown}");
        assert!(shown.get("secret").is_none(), "{shown}");
    }
}

#[test]
fn webhooks_over_the_api_are_checked_scoped_and_disabled_by_410() {
    let test = "webhooks_over_the_api";
    if !available(test) {
        return;
    }
    let last = 182;
    let ip = Ipv4Addr::new(127, 0, 0, last);
    let work = tempfile::tempdir().unwrap();
    let gone = Endpoint::start(work.path(), ip, SECRET, 410);
    let node = Node::start(last, false, "");
    let shop = node.token("shop", "sender");
    let blog = node.token("blog", "sender");

    // Bad requests say what to change, and make nothing.
    let bad = [
        (
            json!({"url": "ftp://x.test/"}),
            "url: \"ftp://x.test/\" is not a webhook URL",
        ),
        (
            json!({"url": "https://x.test/", "events": ["message.sent"]}),
            "events: \"message.sent\" is not an event type",
        ),
        (
            json!({"url": "https://x.test/", "batch": 0}),
            "batch: 0 is out of range",
        ),
        (
            json!({"url": "https://x.test/", "secret": "hunter2"}),
            "secret: a webhook secret starts with \"whsec_\"",
        ),
        (
            json!({"url": "https://x.test/", "retry_for": "5s"}),
            "retry_for: 5s is out of range",
        ),
        (json!({"url": "https://x.test/", "secrett": "x"}), "secrett"),
    ];
    for (body, detail) in bad {
        is_problem(
            &node.call("POST", "/v1/webhooks", &shop, Some(&body)),
            400,
            detail,
        );
    }
    assert_eq!(
        node.call("GET", "/v1/webhooks", &shop, None).json()["webhooks"],
        json!([])
    );

    // Made with its secret shown once; a secret is made when none is given.
    let made = node.call(
        "POST",
        "/v1/webhooks",
        &shop,
        Some(&json!({"url": gone.url(), "secret": SECRET, "events": ["message.delivered", "campaign.completed"]})),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(made.json()["secret"], SECRET);
    let hook = made.json()["id"].as_i64().unwrap();
    let other = node.call(
        "POST",
        "/v1/webhooks",
        &blog,
        Some(&json!({"url": "http://127.0.0.1:9/none"})),
    );
    assert_eq!(other.status, 201, "{}", other.text());
    let made_secret = other.json()["secret"].as_str().unwrap().to_owned();
    assert!(made_secret.starts_with("whsec_"), "{made_secret}");
    let other_id = other.json()["id"].as_i64().unwrap();

    // Each sender sees its own; the admin sees all.
    is_problem(
        &node.call("GET", &format!("/v1/webhooks/{other_id}"), &shop, None),
        404,
        &format!("no webhook {other_id}"),
    );
    let listed = node.call("GET", "/v1/webhooks", &node.admin, None).json();
    assert_eq!(
        listed["webhooks"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert!(node
        .call("GET", &format!("/v1/webhooks/{hook}"), &shop, None)
        .json()
        .get("secret")
        .is_none());

    // The blog's campaign is not the shop's webhook's business; the shop's
    // is, and its endpoint answers 410 Gone: the webhook is disabled.
    let theirs = id_of(&node.call(
        "POST",
        "/v1/campaigns",
        &blog,
        Some(&json!({"template": template(), "recipients": rows("b", 3)})),
    ));
    node.wait_for(theirs, &blog, "completed", |c| c["state"] == "completed");
    let ours = id_of(&node.call(
        "POST",
        "/v1/campaigns",
        &shop,
        Some(&json!({"template": template(), "recipients": rows("s", 3)})),
    ));
    node.wait_for(ours, &shop, "completed", |c| c["state"] == "completed");
    let disabled = poll(Duration::from_secs(30), || {
        let h = node
            .call("GET", &format!("/v1/webhooks/{hook}"), &shop, None)
            .json();
        (h["state"] == "disabled").then_some(h)
    })
    .unwrap_or_else(|| panic!("not disabled: {}", node.log()));
    assert_eq!(disabled["last_status"], 410, "{disabled}");
    let got = gone.events();
    assert_eq!(got.len(), 1, "one request, then nothing: {got:?}");
    assert_eq!(got[0]["data"]["campaign"], ours, "{got:?}");
    assert!(node.log().contains("answered 410 Gone"), "{}", node.log());

    // Deleted: gone from the list.
    let deleted = node.call("DELETE", &format!("/v1/webhooks/{hook}"), &shop, None);
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    is_problem(
        &node.call("GET", &format!("/v1/webhooks/{hook}"), &shop, None),
        404,
        "no webhook",
    );
}

#[test]
fn configured_webhooks_are_checked_at_start_and_kept_by_the_api() {
    let test = "configured_webhooks_are_checked_at_start";
    if !available(test) {
        return;
    }
    let last = 183;
    let ip = Ipv4Addr::new(127, 0, 0, last);
    let node = Node::start(last, false, "");
    let secret = write_secret(&node);
    let url = format!("http://{ip}:9/hook");
    // A secret file that is not a secret: volley run says which and why,
    // and does not start.
    let mut node = node;
    node.kill();
    let bad = node.dir.path().join("bad.secret");
    std::fs::write(&bad, "hunter2\n").unwrap();
    let config = std::fs::read_to_string(node.config()).unwrap();
    let broken = node.dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        format!(
            "{config}[[webhook]]\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
            bad.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.args(["--config", &broken.display().to_string(), "run"]);
    let out = support::process::run_bounded(&mut cmd, b"", Duration::from_secs(30)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "webhook[0] ({url}): secret_file {}",
            bad.display()
        )) && err.contains("starts with \"whsec_\""),
        "{err}"
    );

    // A configured one cannot be deleted over the API.
    std::fs::write(
        node.config(),
        format!(
            "{config}[[webhook]]\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    node.run();
    let hooks = node.call("GET", "/v1/webhooks", &node.admin, None).json();
    let id = hooks["webhooks"][0]["id"].as_i64().unwrap();
    is_problem(
        &node.call("DELETE", &format!("/v1/webhooks/{id}"), &node.admin, None),
        409,
        "[[webhook]] entry of the configuration file",
    );
}
