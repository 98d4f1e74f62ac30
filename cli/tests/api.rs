//! The control plane's HTTP API end to end: a real `volley run` serving it,
//! a real smtp-sink receiving, and each case run against both stores (the
//! embedded SQLite file and a private PostgreSQL started for the test).
//! Assertions are on what a user checks: status codes and problem details,
//! the messages that arrived, and the API's counts against them.

mod common;
mod node;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use node::{curl, header_of, id_of, is_problem, rows, stores, template, unqp, Node};
use serde_json::{json, Value};
use support::http::request;
use support::port::{free_port, poll};

#[test]
fn campaigns_over_the_api_are_delivered_counted_and_paginated() {
    for (n, pg) in stores("campaigns_over_the_api").into_iter().enumerate() {
        let node = Node::start(70 + n as u8, pg, "");
        // Health needs no token; everything else does.
        assert_eq!(request(node.api, "GET", "/healthz", &[], b"").status, 200);
        is_problem(
            &request(node.api, "GET", "/v1/campaigns", &[], b""),
            401,
            "Authorization",
        );
        is_problem(
            &node.call("GET", "/v1/campaigns", "vly_forged", None),
            401,
            "not valid",
        );
        let sender = node.token("shop", "sender");
        let other = node.token("blog", "sender");
        let gateway = node.token("gw1", "gateway");
        is_problem(
            &node.call("GET", "/v1/campaigns", &gateway, None),
            403,
            "gateway token",
        );
        is_problem(
            &node.call("GET", "/v1/suppressions", &sender, None),
            403,
            "admin token",
        );

        // Malformed bodies: what is wrong and where.
        let bad = request(
            node.api,
            "POST",
            "/v1/campaigns",
            &[("Authorization", &format!("Bearer {sender}"))],
            b"{\"template\": {\"from\": ",
        );
        is_problem(&bad, 400, "line 1 column");
        let wrong = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": template(), "recipients": [{"email": 5}]})),
        );
        is_problem(&wrong, 400, "recipients[0].email");
        let typo = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": template(), "recipents": []})),
        );
        is_problem(&typo, 400, "recipents");
        let none = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": template()})),
        );
        is_problem(&none, 400, "no recipients");
        let missing = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": {"from": "a@volley.test", "subject": "{{ nope }}", "text": "x"}, "recipients": rows("m", 1)})),
        );
        is_problem(&missing, 422, "nope");
        // Nothing half-made by the failed requests.
        assert_eq!(
            node.call("GET", "/v1/campaigns", &sender, None).json()["campaigns"],
            json!([])
        );

        let mut recipients = rows("a", 28);
        recipients.insert(5, json!({"email": "not-an-address"}));
        recipients.insert(9, json!({"email": "A0@X0.test", "fields": {"name": "dup"}}));
        let body = json!({"template": template(), "recipients": recipients, "tags": ["news"]});
        let created = request(
            node.api,
            "POST",
            "/v1/campaigns",
            &[
                ("Authorization", &format!("Bearer {sender}")),
                ("Idempotency-Key", "k-1"),
            ],
            body.to_string().as_bytes(),
        );
        assert_eq!(created.status, 201, "{}", created.text());
        let id = id_of(&created);
        assert_eq!(created.json()["url"], format!("/v1/campaigns/{id}"));
        // The same key and body: the same campaign; another body: refused.
        let again = request(
            node.api,
            "POST",
            "/v1/campaigns",
            &[
                ("Authorization", &format!("Bearer {sender}")),
                ("Idempotency-Key", "k-1"),
            ],
            body.to_string().as_bytes(),
        );
        assert_eq!((again.status, id_of(&again)), (200, id), "{}", again.text());
        let changed = json!({"template": template(), "recipients": rows("z", 1)});
        let conflict = request(
            node.api,
            "POST",
            "/v1/campaigns",
            &[
                ("Authorization", &format!("Bearer {sender}")),
                ("Idempotency-Key", "k-1"),
            ],
            changed.to_string().as_bytes(),
        );
        is_problem(&conflict, 422, "different request body");

        let done = node.wait_for(id, &sender, "completed", |c| c["state"] == "completed");
        for (key, want) in [
            ("recipients", 28),
            ("delivered", 28),
            ("pending", 0),
            ("deferred", 0),
            ("bounced", 0),
            ("rejected_rows", 2),
        ] {
            assert_eq!(done[key], want, "{key}: {done}");
        }
        assert_eq!(done["domains"].as_array().map(Vec::len), Some(3), "{done}");
        // What arrived is what the API counts: 28, each once, personalized.
        let arrived = node.arrived("a");
        assert_eq!(arrived.len(), 28, "{arrived:?}");
        assert_eq!(arrived.iter().collect::<HashSet<_>>().len(), 28);
        let bodies: Vec<String> = node
            .sink
            .message_bodies()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert!(
            bodies
                .iter()
                .any(|b| b.contains("Hi N7, this is for a7@x1.test.")),
            "{bodies:?}"
        );

        // Rejected rows with their CSV line numbers (the header is line 1).
        let rejects = node
            .call("GET", &format!("/v1/campaigns/{id}/rejects"), &sender, None)
            .json();
        let lines: Vec<(i64, String)> = rejects["rejects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["line"].as_i64().unwrap(),
                    r["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(lines.len(), 2, "{rejects}");
        assert_eq!(lines[0].0, 7, "{rejects}");
        assert!(lines[1].1.contains("duplicate"), "{rejects}");

        // The per-recipient table, page by page to the end.
        let mut seen = Vec::new();
        let mut cursor = String::new();
        let mut pages = 0;
        loop {
            let path = format!("/v1/campaigns/{id}/recipients?limit=10{cursor}");
            let page = node.call("GET", &path, &sender, None).json();
            for r in page["recipients"].as_array().unwrap() {
                assert_eq!(
                    (r["status"].as_str(), r["code"].as_i64()),
                    (Some("delivered"), Some(250)),
                    "{r}"
                );
                seen.push(r["email"].as_str().unwrap().to_owned());
            }
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
            assert!(pages < 10, "pagination does not end");
        }
        assert_eq!(pages, 3);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 28);
        let bounced = node
            .call(
                "GET",
                &format!("/v1/campaigns/{id}/recipients?status=bounced"),
                &sender,
                None,
            )
            .json();
        assert_eq!(bounced["recipients"], json!([]));

        // Another sender cannot read it; the admin can; lists filter.
        is_problem(
            &node.call("GET", &format!("/v1/campaigns/{id}"), &other, None),
            403,
            "another token",
        );
        assert_eq!(
            node.call("GET", &format!("/v1/campaigns/{id}"), &node.admin, None)
                .status,
            200
        );
        assert_eq!(
            node.call("GET", "/v1/campaigns", &other, None).json()["campaigns"],
            json!([])
        );
        let tagged = node
            .call(
                "GET",
                "/v1/campaigns?tag=news&state=completed",
                &sender,
                None,
            )
            .json();
        assert_eq!(tagged["campaigns"][0]["id"], id, "{tagged}");
        is_problem(
            &node.call("GET", "/v1/campaigns?state=finished", &sender, None),
            400,
            "not one of",
        );
        is_problem(
            &node.call("GET", "/v1/campaigns/999", &sender, None),
            404,
            "no campaign 999",
        );
        // The outbox has the completion.
        let events = node.call("GET", "/v1/events", &node.admin, None).json();
        let completed: Vec<&Value> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "campaign.completed" && e["campaign"] == id)
            .collect();
        assert_eq!(completed.len(), 1, "{events}");
        assert_eq!(completed[0]["data"]["delivered"], 28);
        // And the command-line client shows the same.
        let out = common::volley_with(
            &node.config(),
            &["campaign", "--token", &sender, "show", &id.to_string()],
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
        assert!(
            common::stdout(&out).contains("completed"),
            "{}",
            common::stdout(&out)
        );
    }
}

#[test]
fn uploads_are_streamed_and_campaigns_list_page_by_page() {
    for (n, pg) in stores("uploads").into_iter().enumerate() {
        let node = Node::start(72 + n as u8, pg, "");
        let sender = node.token("shop", "sender");
        let mut csv = String::from("email,name\n");
        for i in 0..500 {
            csv.push_str(&format!("u{i}@up{}.test,U{i}\n", i % 7));
        }
        csv.push_str("broken-row\n");
        let auth = format!("Bearer {sender}");
        let up = request(
            node.api,
            "POST",
            "/v1/uploads",
            &[("Authorization", &auth)],
            csv.as_bytes(),
        );
        assert_eq!(up.status, 201, "{}", up.text());
        let upload = up.json()["id"].as_str().unwrap().to_owned();
        let c = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": template(), "upload": upload, "batch_size": 50})),
        );
        assert_eq!(c.status, 201, "{}", c.text());
        let id = id_of(&c);
        let done = node.wait_for(id, &sender, "completed", |c| c["state"] == "completed");
        assert_eq!(
            (
                done["delivered"].as_i64(),
                done["rejected_rows"].as_i64(),
                done["batches"].as_i64()
            ),
            (Some(500), Some(1), Some(10)),
            "{done}"
        );
        assert_eq!(node.arrived("u").len(), 500);
        // An upload is used once.
        let reuse = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": template(), "upload": upload})),
        );
        is_problem(&reuse, 422, "no upload");
        // Three more campaigns; listing two a page reaches every one once.
        let mut ids = vec![id];
        for i in 0..3 {
            let c = node.call(
                "POST",
                "/v1/campaigns",
                &sender,
                Some(&json!({"template": template(), "recipients": rows(&format!("p{i}x"), 2)})),
            );
            ids.push(id_of(&c));
        }
        let mut listed = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = node
                .call(
                    "GET",
                    &format!("/v1/campaigns?limit=2{cursor}"),
                    &sender,
                    None,
                )
                .json();
            listed.extend(
                page["campaigns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_i64().unwrap()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        ids.reverse();
        assert_eq!(listed, ids);
    }
}

/// A site slow enough to act while a campaign is under way: 20 messages a
/// second, one connection.
const SLOW: &str = "[site]\nmax_connections = 1\nmax_messages_per_second = 20\n";

#[test]
fn scheduled_suspended_resumed_and_cancelled_campaigns_as_the_receiver_sees_them() {
    for (n, pg) in stores("scheduled_suspended").into_iter().enumerate() {
        let node = Node::start(74 + n as u8, pg, SLOW);
        let sender = node.token("shop", "sender");
        // Scheduled: nothing before start_at, everything after.
        let start = std::time::SystemTime::now() + Duration::from_secs(4);
        let start_at = humantime::format_rfc3339_seconds(start).to_string();
        let c = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(
                &json!({"template": template(), "recipients": rows("s", 5), "start_at": start_at}),
            ),
        );
        assert_eq!(c.status, 201, "{}", c.text());
        let scheduled = id_of(&c);
        assert_eq!(c.json()["state"], "scheduled");
        let done = node.wait_for(scheduled, &sender, "completed", |c| {
            c["state"] == "completed"
        });
        let started = done["started_at"].as_str().unwrap();
        assert!(
            started >= start_at.as_str(),
            "started {started} before {start_at}"
        );
        assert_eq!(node.arrived("s").len(), 5);

        // Suspended: no message of it arrives until resumed; then the rest, once each.
        let c = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": template(), "recipients": rows("h", 100)})),
        );
        let held = id_of(&c);
        assert!(
            poll(Duration::from_secs(30), || (node.arrived("h").len() >= 10)
                .then_some(()))
            .is_some()
        );
        let s = node.call(
            "POST",
            &format!("/v1/campaigns/{held}/suspend"),
            &sender,
            None,
        );
        assert_eq!(
            (s.status, s.json()["state"].as_str()),
            (200, Some("suspended")),
            "{}",
            s.text()
        );
        // In-flight transactions finish: wait for the count to settle, then
        // watch it stay put for three seconds.
        let mut settled = node.arrived("h").len();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            let now = node.arrived("h").len();
            if now == settled {
                break;
            }
            settled = now;
        }
        let watch_until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < watch_until {
            assert_eq!(
                node.arrived("h").len(),
                settled,
                "a message of a suspended campaign arrived"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            settled < 100,
            "the campaign finished before it was suspended"
        );
        let shown = node
            .call("GET", &format!("/v1/campaigns/{held}"), &sender, None)
            .json();
        assert_eq!(shown["delivered"], settled as i64, "{shown}");
        let r = node.call(
            "POST",
            &format!("/v1/campaigns/{held}/resume"),
            &sender,
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let done = node.wait_for(held, &sender, "completed", |c| c["state"] == "completed");
        assert_eq!(done["delivered"], 100, "{done}");
        let arrived = node.arrived("h");
        assert_eq!(
            (arrived.len(), arrived.iter().collect::<HashSet<_>>().len()),
            (100, 100)
        );

        // Cancelled: the unsent are finalised as cancelled, and counted so.
        let c = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": template(), "recipients": rows("c", 100)})),
        );
        let cancelled = id_of(&c);
        assert!(
            poll(Duration::from_secs(30), || (!node.arrived("c").is_empty())
                .then_some(()))
            .is_some()
        );
        let x = node.call(
            "POST",
            &format!("/v1/campaigns/{cancelled}/cancel"),
            &sender,
            None,
        );
        assert_eq!(
            (x.status, x.json()["state"].as_str()),
            (200, Some("cancelled")),
            "{}",
            x.text()
        );
        let done = node.wait_for(cancelled, &sender, "closed", |c| {
            !c["completed_at"].is_null()
        });
        assert_eq!(done["state"], "cancelled");
        let delivered = done["delivered"].as_i64().unwrap();
        assert_eq!(
            delivered + done["cancelled"].as_i64().unwrap(),
            100,
            "{done}"
        );
        assert!(done["cancelled"].as_i64().unwrap() > 0, "{done}");
        assert_eq!(node.arrived("c").len() as i64, delivered);
        let table = node
            .call(
                "GET",
                &format!("/v1/campaigns/{cancelled}/recipients?status=cancelled&limit=1000"),
                &sender,
                None,
            )
            .json();
        assert_eq!(
            table["recipients"].as_array().unwrap().len() as i64,
            100 - delivered
        );
        // A final campaign is not resumed or cancelled again.
        is_problem(
            &node.call(
                "POST",
                &format!("/v1/campaigns/{held}/suspend"),
                &sender,
                None,
            ),
            409,
            "completed",
        );
    }
}

#[test]
fn a_daemon_killed_mid_campaign_delivers_the_rest_once_after_restart() {
    for (n, pg) in stores("killed_mid_campaign").into_iter().enumerate() {
        let mut node = Node::start(76 + n as u8, pg, SLOW);
        let sender = node.token("shop", "sender");
        let c = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": template(), "recipients": rows("k", 60)})),
        );
        let id = id_of(&c);
        assert!(
            poll(Duration::from_secs(30), || (node.arrived("k").len() >= 10)
                .then_some(()))
            .is_some()
        );
        node.kill();
        node.run();
        let done = node.wait_for(id, &sender, "completed", |c| c["state"] == "completed");
        assert_eq!(done["delivered"], 60, "{done}");
        let arrived = node.arrived("k");
        let unique = arrived.iter().collect::<HashSet<_>>().len();
        assert_eq!(unique, 60, "every recipient arrived");
        // Only a transaction in flight at the kill may arrive twice (one
        // connection: at most one).
        assert!(
            arrived.len() - unique <= 1,
            "{} duplicates",
            arrived.len() - unique
        );
    }
}

#[test]
fn send_hands_its_campaign_to_a_running_daemon_and_follows_it() {
    let node = Node::start(78, false, "");
    let dir = node.dir.path();
    std::fs::write(
        dir.join("campaign.toml"),
        "from = \"News <news@volley.test>\"\nsubject = \"Hi {{ name }}\"\ntext = \"Hello {{ name }}\"\n",
    )
    .unwrap();
    let mut csv = String::from("email,name\n");
    for i in 0..40 {
        csv.push_str(&format!("d{i}@hand{}.test,D{i}\n", i % 2));
    }
    csv.push_str("nobody,X\n");
    std::fs::write(dir.join("list.csv"), csv).unwrap();
    let report = dir.join("report.json");
    let out = common::volley_with(
        &node.config(),
        &[
            "send",
            "--template",
            &dir.join("campaign.toml").display().to_string(),
            "--recipients",
            &dir.join("list.csv").display().to_string(),
            "--report",
            &report.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("handing the campaign to it"),
        "{}",
        common::stderr(&out)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(
        (
            report["delivered"].as_i64(),
            report["rejected_rows"].as_i64()
        ),
        (Some(40), Some(1)),
        "{report}"
    );
    let rejects = std::fs::read_to_string(dir.join("list.rejects.csv")).unwrap();
    assert!(rejects.contains("42,nobody,"), "{rejects}");
    assert_eq!(node.arrived("d").len(), 40);
    // The token made for it is revoked.
    let out = common::volley_with(&node.config(), &["token", "list", "--json"]);
    let tokens: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    let minted: Vec<&Value> = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"].as_str().unwrap().starts_with("volley-send-"))
        .collect();
    assert_eq!(minted.len(), 1);
    assert!(!minted[0]["revoked_at"].is_null());
}

#[test]
fn sendmail_queues_through_the_drop_directory_while_the_daemon_runs() {
    // No trusted network and no listener: sendmail cannot submit over SMTP.
    let node = Node::start(79, false, "[relay]\nnetworks = []\n");
    for i in 0..3 {
        let rcpt = format!("drop{i}@dropped.test");
        let out = common::volley_with_input(
            &node.config(),
            &["sendmail", "-i", "-f", "app@volley.test", &rcpt],
            format!("Subject: drop {i}\n\nline one\n.\nline three\n").as_bytes(),
        );
        assert!(
            out.status.success(),
            "exit {:?}: {}",
            out.status.code(),
            common::stderr(&out)
        );
    }
    let arrived = poll(Duration::from_secs(30), || {
        let got = node.arrived("drop");
        (got.len() == 3).then_some(got)
    });
    assert!(
        arrived.is_some(),
        "{:?}\n{}",
        node.arrived("drop"),
        node.log()
    );
    let bodies: Vec<String> = node
        .sink
        .message_bodies()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("Subject: drop 1") && b.contains("line one\n.\nline three")),
        "{bodies:?}"
    );
    // Nothing is left in the drop directory.
    let left: Vec<_> = std::fs::read_dir(node.dir.path().join("spool/maildrop"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_requester_gets_a_summary_when_a_campaign_completes() {
    let node = Node::start(80, false, "");
    let sender = node.token("shop", "sender");
    let mut recipients = rows("n", 6);
    recipients.push(json!({"email": "bad address"}));
    let c = node.call(
        "POST",
        "/v1/campaigns",
        &sender,
        Some(&json!({"template": template(), "recipients": recipients, "notify": ["boss@requester.test"]})),
    );
    assert_eq!(c.status, 201, "{}", c.text());
    let id = id_of(&c);
    node.wait_for(id, &sender, "completed", |c| c["state"] == "completed");
    let summary = poll(Duration::from_secs(30), || {
        node.sink
            .parsed_messages()
            .into_iter()
            .find(|m| m.rcpt_tos().contains(&"boss@requester.test"))
    })
    .unwrap_or_else(|| panic!("no summary arrived\n{}", node.log()));
    assert_eq!(summary.mail_from(), "");
    let body = String::from_utf8_lossy(&summary.body).into_owned();
    for needle in [
        format!("Subject: Campaign {id} completed: 6 delivered of 6"),
        "6 recipients: 6 delivered".to_owned(),
        "1 rows of the list were rejected".to_owned(),
        "x0.test".to_owned(),
    ] {
        assert!(body.contains(&needle), "{needle:?} not in:\n{body}");
    }
    // Once only.
    std::thread::sleep(Duration::from_secs(2));
    let count = node
        .sink
        .parsed_messages()
        .iter()
        .filter(|m| m.rcpt_tos().contains(&"boss@requester.test"))
        .count();
    assert_eq!(count, 1);
}

/// Files in a spool directory.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kill_9_during_an_upload_and_during_partitioning_loses_and_doubles_nothing() {
    for (n, pg) in stores("kill_9_during_partitioning").into_iter().enumerate() {
        let mut node = Node::start(81 + n as u8, pg, "");
        let sender = node.token("shop", "sender");
        let spool = node.dir.path().join("spool");

        // 1. Killed while an upload is streaming in: the client never got an
        // answer; after the restart nothing of it is left.
        let mut stream = std::net::TcpStream::connect(node.api).unwrap();
        use std::io::Write;
        write!(
            stream,
            "POST /v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {sender}\r\nContent-Length: 10000000\r\n\r\nemail\r\n"
        )
        .unwrap();
        for i in 0..20_000 {
            write!(stream, "half{i}@up.test\r\n").unwrap();
        }
        stream.flush().unwrap();
        let partial = poll(Duration::from_secs(10), || {
            files_in(&spool.join("uploads"))
                .iter()
                .any(|f| f.ends_with(".partial"))
                .then_some(())
        });
        assert!(partial.is_some(), "the upload is not being written");
        node.kill();
        drop(stream);
        node.run();
        assert!(
            files_in(&spool.join("uploads")).is_empty(),
            "{:?}",
            files_in(&spool.join("uploads"))
        );
        assert_eq!(
            node.call("GET", "/v1/campaigns", &sender, None).json()["campaigns"],
            json!([])
        );

        // 2. Killed while the campaign is being cut into batches (one
        // recipient a batch, so that the cut takes a while).
        let total = 20_000;
        let mut csv = String::from("email,name\n");
        for i in 0..total {
            csv.push_str(&format!("p{i}@part{}.test,P{i}\n", i % 11));
        }
        let auth = format!("Bearer {sender}");
        let up = request(
            node.api,
            "POST",
            "/v1/uploads",
            &[("Authorization", &auth)],
            csv.as_bytes(),
        );
        let upload = up.json()["id"].as_str().unwrap().to_owned();
        // The request is sent and not waited for: the kill comes as soon as
        // the first batch file is in the spool.
        let body = json!({"template": template(), "upload": upload, "batch_size": 1}).to_string();
        let mut post = std::net::TcpStream::connect(node.api).unwrap();
        write!(
            post,
            "POST /v1/campaigns HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {sender}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mid = poll(Duration::from_secs(30), || {
            (!files_in(&spool.join("active")).is_empty()).then_some(())
        });
        assert!(mid.is_some(), "no batch was written");
        node.kill();
        let batches_at_kill =
            files_in(&spool.join("active")).len() + files_in(&spool.join("done")).len();
        drop(post);
        node.run();
        let listed = node.call("GET", "/v1/campaigns", &sender, None).json();
        let id = listed["campaigns"][0]["id"]
            .as_i64()
            .expect("the campaign survived the kill");
        let done = node.wait_for(id, &sender, "completed", |c| c["state"] == "completed");
        assert_eq!(
            (done["recipients"].as_i64(), done["delivered"].as_i64()),
            (Some(total), Some(total)),
            "{done}"
        );
        let arrived = node.arrived("p");
        let unique = arrived.iter().collect::<HashSet<_>>().len();
        assert_eq!(unique as i64, total);
        // Messages in flight at the kill may arrive twice, nothing else.
        assert!(
            arrived.len() - unique <= 64,
            "{} duplicates",
            arrived.len() - unique
        );
        eprintln!(
            "killed during the partitioning ({batches_at_kill} of {total} batches written); {} duplicates",
            arrived.len() - unique
        );
        assert!(
            node.log().contains("resuming an interrupted partitioning"),
            "the partitioning ended before the kill: the test did not test it\n{}",
            node.log()
        );
    }
}

#[test]
fn at_stop_at_the_unsent_recipients_expire() {
    let node = Node::start(83, false, SLOW);
    let sender = node.token("shop", "sender");
    // 400 recipients at 20 a second take 20 s; stopping 8 s from now (RFC 3339
    // seconds truncate, so 7-8 s) leaves a loaded host several seconds to admit
    // the campaign and still cuts it well before its end.
    let stop = std::time::SystemTime::now() + Duration::from_secs(8);
    let stop_at = humantime::format_rfc3339_seconds(stop).to_string();
    let c = node.call(
        "POST",
        "/v1/campaigns",
        &sender,
        Some(&json!({"template": template(), "recipients": rows("e", 400), "stop_at": stop_at})),
    );
    assert_eq!(c.status, 201, "{}", c.text());
    let id = id_of(&c);
    let done = node.wait_for(id, &sender, "completed", |c| c["state"] == "completed");
    let delivered = done["delivered"].as_i64().unwrap();
    let expired = done["expired"].as_i64().unwrap();
    assert!(delivered > 0 && expired > 0, "{done}");
    assert_eq!(delivered + expired, 400, "{done}");
    assert_eq!(node.arrived("e").len() as i64, delivered);
    assert!(
        done["completed_at"].as_str().unwrap() >= stop_at.as_str(),
        "{done}"
    );
    // A stop_at in the past is refused.
    let past = node.call("POST", "/v1/campaigns", &sender, Some(&json!({"template": template(), "recipients": rows("q", 1), "stop_at": "2020-01-01T00:00:00Z"})));
    is_problem(&past, 422, "stop_at is in the past");
    let garbled = node.call("POST", "/v1/campaigns", &sender, Some(&json!({"template": template(), "recipients": rows("q", 1), "start_at": "next tuesday"})));
    is_problem(&garbled, 400, "RFC 3339");
}

#[test]
fn suppressions_over_the_api_bounds_and_tokens_at_rest() {
    let node = Node::start_with(84, false, "max_body_bytes = 4096\n", "");
    let admin = node.admin.clone();
    let sender = node.token("shop", "sender");
    // Add, find, refuse a bad address, remove.
    let added = node.call(
        "POST",
        "/v1/suppressions",
        &admin,
        Some(
            &json!({"address": "Ann@Blocked.test", "domain": "volley.test", "reason": "complaint"}),
        ),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(added.json()["address"], "ann@blocked.test");
    let again = node.call(
        "POST",
        "/v1/suppressions",
        &admin,
        Some(&json!({"address": "ann@blocked.test", "domain": "volley.test"})),
    );
    assert_eq!(again.status, 200);
    is_problem(
        &node.call(
            "POST",
            "/v1/suppressions",
            &admin,
            Some(&json!({"address": "not an address"})),
        ),
        422,
        "not an address",
    );
    let found = node
        .call(
            "GET",
            "/v1/suppressions?address=ann@blocked.test",
            &admin,
            None,
        )
        .json();
    assert_eq!(found["suppressions"][0]["reason"], "complaint", "{found}");
    // A campaign to it drops it as suppressed.
    let c = node.call(
        "POST",
        "/v1/campaigns",
        &sender,
        Some(&json!({"template": template(), "recipients": [{"email": "ann@blocked.test", "fields": {"name": "A"}}, {"email": "bo@open.test", "fields": {"name": "B"}}]})),
    );
    let id = id_of(&c);
    let done = node.wait_for(id, &sender, "completed", |c| c["state"] == "completed");
    assert_eq!(
        (done["delivered"].as_i64(), done["suppressed"].as_i64()),
        (Some(1), Some(1)),
        "{done}"
    );
    let rejects = node
        .call("GET", &format!("/v1/campaigns/{id}/rejects"), &sender, None)
        .json();
    assert!(
        rejects["rejects"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("suppressed"),
        "{rejects}"
    );
    let removed = node.call(
        "DELETE",
        "/v1/suppressions?address=ann@blocked.test",
        &admin,
        None,
    );
    assert_eq!(removed.status, 200, "{}", removed.text());
    is_problem(
        &node.call(
            "DELETE",
            "/v1/suppressions?address=ann@blocked.test",
            &admin,
            None,
        ),
        404,
        "not suppressed",
    );
    // Bodies are bounded: past max_body_bytes, 413 with what to do.
    let big = json!({"template": template(), "recipients": rows("b", 200)});
    is_problem(
        &node.call("POST", "/v1/campaigns", &sender, Some(&big)),
        413,
        "max_body_bytes",
    );
    // Only hashes of tokens are at rest.
    let db = std::fs::read(node.dir.path().join("spool/control.db")).unwrap();
    let wal = std::fs::read(node.dir.path().join("spool/control.db-wal")).unwrap_or_default();
    for secret in [&admin, &sender] {
        let needle = secret.as_bytes();
        assert!(
            !db.windows(needle.len()).any(|w| w == needle),
            "a token is stored in clear"
        );
        assert!(
            !wal.windows(needle.len()).any(|w| w == needle),
            "a token is stored in clear"
        );
    }
    // A revoked token is refused from then on.
    let out = common::volley_with(&node.config(), &["token", "revoke", "shop"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    is_problem(
        &node.call("GET", "/v1/campaigns", &sender, None),
        401,
        "revoked",
    );
}

#[test]
fn one_click_unsubscribe_from_the_header_tracked_clicks_and_opens() {
    for (n, pg) in stores("one_click_unsubscribe").into_iter().enumerate() {
        let ip = Ipv4Addr::new(127, 0, 0, 85 + n as u8);
        let web = SocketAddr::from((ip, free_port(ip)));
        let node = Node::start(
            85 + n as u8,
            pg,
            &format!("[web]\nlisten = \"{web}\"\nbase_url = \"http://{web}/\"\n"),
        );
        let sender = node.token("shop", "sender");
        let admin = node.admin.clone();
        let tracked = json!({
            "from": "News <news@volley.test>",
            "subject": "Sale for {{ name }}",
            "text": "Hi {{ name }}: https://shop.volley.test/sale",
            "html": "<html><body><p>Hi {{ name }}: <a href=\"https://shop.volley.test/sale?a=1&amp;b=2\">sale</a></p></body></html>",
            "headers": {"List-Unsubscribe": "<mailto:unsub@volley.test?subject={{ email }}>"},
            "track_clicks": true,
            "track_opens": true,
        });
        let c = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": tracked, "recipients": rows("w", 3)})),
        );
        assert_eq!(c.status, 201, "{}", c.text());
        let id = id_of(&c);
        node.wait_for(id, &sender, "completed", |c| c["state"] == "completed");
        let message_to = |rcpt: &str| {
            node.sink
                .parsed_messages()
                .into_iter()
                .find(|m| m.rcpt_tos().contains(&rcpt))
                .map(|m| m.body_crlf())
                .unwrap_or_else(|| panic!("no message to {rcpt}"))
        };
        let first = message_to("w0@x0.test");
        let list = header_of(&first, "List-Unsubscribe").unwrap();
        assert_eq!(
            header_of(&first, "List-Unsubscribe-Post").as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        let prefix = format!("<http://{web}/u/");
        assert!(list.starts_with(&prefix), "{list}");
        assert!(
            list.ends_with(", <mailto:unsub@volley.test?subject=w0@x0.test>"),
            "{list}"
        );
        let url = list[1..list.find('>').unwrap()].to_owned();
        // A GET never unsubscribes: it shows the button.
        let (code, _, page) = curl(&[&url]);
        assert_eq!(code, 200);
        assert!(page.contains("<form method=\"post\">"), "{page}");
        let suppressed = |address: &str| {
            node.call(
                "GET",
                &format!("/v1/suppressions?address={address}"),
                &admin,
                None,
            )
            .json()["suppressions"]
                .as_array()
                .map_or(0, Vec::len)
        };
        assert_eq!(suppressed("w0@x0.test"), 0);
        // The RFC 8058 POST, as a mailbox provider sends it: 200, no redirect.
        for _ in 0..2 {
            let (code, location, _) =
                curl(&["-X", "POST", "-d", "List-Unsubscribe=One-Click", &url]);
            assert_eq!((code, location.as_str()), (200, ""));
        }
        let found = node
            .call("GET", "/v1/suppressions?address=w0@x0.test", &admin, None)
            .json();
        assert_eq!(found["suppressions"][0]["reason"], "unsubscribe", "{found}");
        assert_eq!(found["suppressions"][0]["domain"], "volley.test", "{found}");
        let log = std::fs::read_to_string(node.dir.path().join("delivery.jsonl")).unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains("\"status\":\"unsubscribed\"")
                    && l.contains("\"recipient\":\"w0@x0.test\"")),
            "{log}"
        );
        // Forged, altered, truncated or for another endpoint: 404, nothing changes.
        let token = &url[prefix.len() - 1..];
        let mut altered = token.to_owned().into_bytes();
        altered[5] = if altered[5] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        let post = ["-X", "POST", "-d", "List-Unsubscribe=One-Click"];
        for (args, bad) in [
            (&post[..], format!("http://{web}/u/{altered}")),
            (
                &post[..],
                format!("http://{web}/u/{}", &token[..token.len() - 1]),
            ),
            (&[][..], format!("http://{web}/c/{token}")),
            (&post[..], format!("http://{web}/u/../v1/campaigns")),
        ] {
            let (code, location, _) = curl(&[args, &[bad.as_str()]].concat());
            assert_eq!((code, location.as_str()), (404, ""), "{bad}");
        }
        assert_eq!(suppressed("w1@x1.test"), 0);
        assert!(node
            .log()
            .contains("refused a forged or altered link token"));
        // A click: 302 to the template's own URL, counted once.
        let second = message_to("w1@x1.test");
        let text = String::from_utf8_lossy(&second).into_owned();
        let html = unqp(&text[text.find("Content-Type: text/html").unwrap()..]);
        let at = html.find(&format!("href=\"http://{web}/c/")).unwrap() + 6;
        let click = &html[at..at + html[at..].find('"').unwrap()];
        for _ in 0..2 {
            let (code, location, _) = curl(&[click]);
            assert_eq!(
                (code, location.as_str()),
                (302, "https://shop.volley.test/sale?a=1&b=2")
            );
        }
        let plain = unqp(&text[text.find("Content-Type: text/plain").unwrap()..]);
        assert!(plain.contains("https://shop.volley.test/sale"), "{plain}");
        // The open image of the third.
        let third = String::from_utf8_lossy(&message_to("w2@x2.test")).into_owned();
        let html = unqp(&third[third.find("Content-Type: text/html").unwrap()..]);
        let at = html.find(&format!("<img src=\"http://{web}/o/")).unwrap() + 10;
        let open = &html[at..at + html[at..].find('"').unwrap()];
        let (code, _, _) = curl(&[open]);
        assert_eq!(code, 200);
        let view = node
            .call("GET", &format!("/v1/campaigns/{id}"), &sender, None)
            .json();
        assert_eq!(
            (
                &view["unsubscribed"],
                &view["clicked"],
                &view["acknowledged"],
                &view["opened"]
            ),
            (&json!(1), &json!(1), &json!(1), &json!(1)),
            "{view}"
        );
        let table = node
            .call(
                "GET",
                &format!("/v1/campaigns/{id}/recipients"),
                &sender,
                None,
            )
            .json();
        let acknowledged: Vec<&str> = table["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["acknowledged"] == true)
            .map(|r| r["email"].as_str().unwrap())
            .collect();
        assert_eq!(acknowledged, ["w1@x1.test"], "{table}");
        // The next campaign skips the unsubscribed address; a transactional
        // template carries no one-click header.
        let mut quiet = template();
        quiet["unsubscribe"] = json!(false);
        let next = node.call(
            "POST",
            "/v1/campaigns",
            &sender,
            Some(&json!({"template": quiet, "recipients": rows("w", 2)})),
        );
        let next_id = id_of(&next);
        let done = node.wait_for(next_id, &sender, "completed", |c| c["state"] == "completed");
        assert_eq!(
            (&done["suppressed"], &done["delivered"]),
            (&json!(1), &json!(1)),
            "{done}"
        );
        assert_eq!(node.arrived("w0@").len(), 1);
        let again: Vec<Vec<u8>> = node
            .sink
            .parsed_messages()
            .into_iter()
            .filter(|m| m.rcpt_tos().contains(&"w1@x1.test"))
            .map(|m| m.body_crlf())
            .collect();
        assert_eq!(again.len(), 2);
        assert!(again
            .iter()
            .any(|m| header_of(m, "List-Unsubscribe-Post").is_none()));
    }
}

#[test]
fn the_unsubscribe_page_works_in_a_real_browser() {
    if !std::path::Path::new("/usr/bin/chromedriver").exists() {
        support::skip(
            "the_unsubscribe_page_works_in_a_real_browser",
            "chromium-driver is not installed",
        );
        return;
    }
    let ip = Ipv4Addr::new(127, 0, 0, 87);
    let web = SocketAddr::from((ip, free_port(ip)));
    let node = Node::start(87, false, &format!("[web]\nlisten = \"{web}\"\n"));
    let sender = node.token("shop", "sender");
    let c = node.call(
        "POST",
        "/v1/campaigns",
        &sender,
        Some(&json!({"template": template(), "recipients": rows("b", 1)})),
    );
    let id = id_of(&c);
    node.wait_for(id, &sender, "completed", |c| c["state"] == "completed");
    let message = node.sink.parsed_messages()[0].body_crlf();
    let list = header_of(&message, "List-Unsubscribe").unwrap();
    let url = &list[1..list.find('>').unwrap()];
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    let shots_dir = shots.display().to_string();
    let seen = node::browser(
        "unsubscribe.py",
        &[url, shots_dir.as_str()],
        Duration::from_secs(90),
    );
    assert_eq!(seen["before"]["title"], "Unsubscribe", "{seen}");
    assert!(
        seen["before"]["text"]
            .as_str()
            .unwrap()
            .contains("volley.test"),
        "{seen}"
    );
    assert_eq!(seen["after"]["title"], "Unsubscribed", "{seen}");
    // The button posts to the same URL; no redirect.
    assert_eq!(seen["after"]["url"], url, "{seen}");
    let found = node
        .call(
            "GET",
            "/v1/suppressions?address=b0@x0.test",
            &node.admin,
            None,
        )
        .json();
    assert_eq!(found["suppressions"][0]["reason"], "unsubscribe", "{found}");
    let view = node
        .call("GET", &format!("/v1/campaigns/{id}"), &sender, None)
        .json();
    assert_eq!(view["unsubscribed"], 1, "{view}");
    assert!(shots.join("unsubscribed.png").exists());
}
