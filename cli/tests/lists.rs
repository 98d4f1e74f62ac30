//! Lists and subscribe requests end to end (the design's D role): a real
//! `volley run` with its API and web endpoints, a real smtp-sink receiving,
//! `curl` as the HTTP client, on both stores. Assertions are on what a user
//! checks: who a campaign to a list reached (the messages that arrived),
//! the members the API shows after an unsubscribe or a confirmation, the
//! bounds of the subscribe form.

mod common;
mod node;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use node::{curl, header_of, id_of, is_problem, stores, template, unqp, Node};
use serde_json::{json, Value};
use support::http::request;
use support::port::{free_port, poll};

fn web_node(last: u8, pg: bool) -> (Node, SocketAddr) {
    let ip = Ipv4Addr::new(127, 0, 0, last);
    let web = SocketAddr::from((ip, free_port(ip)));
    let node = Node::start(
        last,
        pg,
        &format!("[web]\nlisten = \"{web}\"\nbase_url = \"http://{web}\"\n"),
    );
    (node, web)
}

/// POSTs a CSV body.
fn post_csv(node: &Node, path: &str, token: &str, csv: &str) -> support::http::Answer {
    let auth = format!("Bearer {token}");
    request(
        node.api,
        "POST",
        path,
        &[("Authorization", &auth), ("Content-Type", "text/csv")],
        csv.as_bytes(),
    )
}

/// The recipients of the messages that arrived since `before` messages.
fn arrived_since(node: &Node, before: usize) -> BTreeSet<String> {
    node.sink.parsed_messages()[before..]
        .iter()
        .flat_map(|m| {
            m.rcpt_tos()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn send_to_list(node: &Node, token: &str, body: Value) -> i64 {
    let c = node.call("POST", "/v1/campaigns", token, Some(&body));
    assert_eq!(c.status, 201, "{}", c.text());
    let id = id_of(&c);
    node.wait_for(id, token, "completed", |c| c["state"] == "completed");
    id
}

#[test]
fn campaigns_to_a_list_reach_its_targeted_subscribed_members() {
    for (n, pg) in stores("campaigns_to_a_list").into_iter().enumerate() {
        let (node, web) = web_node(184 + n as u8, pg);
        let shop = node.token("shop", "sender");
        let blog = node.token("blog", "sender");
        let made = node.call(
            "POST",
            "/v1/lists",
            &shop,
            Some(&json!({"name": "Newsletter"})),
        );
        assert_eq!(made.status, 201, "{}", made.text());
        let list = id_of(&made);
        is_problem(
            &node.call("POST", "/v1/lists", &shop, Some(&json!({"name": ""}))),
            400,
            "name: 1 to 200 characters",
        );

        // Members from JSON: a bad address and a bad field refused by
        // position, a repeated address counted once (the last wins).
        let added = node.call(
            "POST",
            &format!("/v1/lists/{list}/members"),
            &shop,
            Some(&json!([
                {"email": "Ann@DE.test", "fields": {"name": "Ann", "country": "DE", "age": 34}},
                {"email": "not an address"},
                {"email": "bob@at.test", "fields": {"name": "Bob", "country": "AT", "age": 17}},
                {"email": "cy@de.test", "fields": {"name": "Cy", "nested": {"a": 1}}},
                {"email": "bob@at.test", "fields": {"name": "Bob", "country": "AT", "age": 19}},
            ])),
        );
        assert_eq!(added.status, 200, "{}", added.text());
        let a = added.json();
        assert_eq!(
            (a["added"].as_i64(), a["updated"].as_i64()),
            (Some(2), Some(0)),
            "{a}"
        );
        let refused: Vec<u64> = a["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["at"].as_u64().unwrap())
            .collect();
        assert_eq!(refused, [1, 3], "{a}");
        // Members from CSV: line numbers for the bad rows; `format` text.
        let csv = "email,name,country,age,format\n\
                   dora@de.test,Dora,DE,52,text\n\
                   eve@de.test,Eve,DE,15,html\n\
                   @bad,Bad,DE,40,\n\
                   fay@fr.test,Fay,FR,40,\n";
        let added = post_csv(&node, &format!("/v1/lists/{list}/members"), &shop, csv);
        assert_eq!(added.status, 200, "{}", added.text());
        let a = added.json();
        assert_eq!(a["added"], 3, "{a}");
        assert_eq!(a["rejected"][0]["at"], 4, "{a}");
        // Another sender does not see the list.
        is_problem(
            &node.call("GET", &format!("/v1/lists/{list}"), &blog, None),
            404,
            "no list",
        );
        let shown = node
            .call("GET", &format!("/v1/lists/{list}"), &shop, None)
            .json();
        assert_eq!(shown["subscribed"], 5, "{shown}");

        // Paged by address.
        let page = node
            .call(
                "GET",
                &format!("/v1/lists/{list}/members?limit=2"),
                &shop,
                None,
            )
            .json();
        let first: Vec<&str> = page["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["email"].as_str().unwrap())
            .collect();
        assert_eq!(first, ["ann@de.test", "bob@at.test"], "{page}");
        let next = page["next_cursor"].as_str().unwrap().to_owned();
        let page = node
            .call(
                "GET",
                &format!("/v1/lists/{list}/members?limit=10&cursor={next}"),
                &shop,
                None,
            )
            .json();
        assert_eq!(page["members"].as_array().map(Vec::len), Some(3), "{page}");
        assert_eq!(page["next_cursor"], Value::Null);
        // Removed, then not there.
        let gone = node.call(
            "DELETE",
            &format!("/v1/lists/{list}/members/fay@fr.test"),
            &shop,
            None,
        );
        assert_eq!(gone.status, 204, "{}", gone.text());
        is_problem(
            &node.call(
                "DELETE",
                &format!("/v1/lists/{list}/members/fay@fr.test"),
                &shop,
                None,
            ),
            404,
            "not a member",
        );

        // Bad targeting says where; a list with recipients is refused.
        is_problem(
            &node.call("POST", "/v1/campaigns", &shop, Some(&json!({"template": template(), "list": list, "where": {"age": {"between": [1, 2]}}}))),
            400,
            "where.age: unknown operator \"between\"",
        );
        is_problem(
            &node.call(
                "POST",
                "/v1/campaigns",
                &shop,
                Some(&json!({"template": template(), "list": list, "recipients": []})),
            ),
            400,
            "one of recipients, upload or list",
        );
        is_problem(
            &node.call(
                "POST",
                "/v1/campaigns",
                &blog,
                Some(&json!({"template": template(), "list": list})),
            ),
            404,
            "no list",
        );

        // Adults in DE, at most 10; the member who asked for text gets the
        // text part only.
        let mut html = template();
        html["html"] = json!("<p>Hello {{ name }}</p>");
        let before = node.sink.parsed_messages().len();
        send_to_list(
            &node,
            &shop,
            json!({"template": html, "list": list, "where": {"country": "DE", "age": {"gte": 18}}, "limit": 10}),
        );
        let got = arrived_since(&node, before);
        assert_eq!(
            got,
            BTreeSet::from(["ann@de.test".to_owned(), "dora@de.test".to_owned()])
        );
        let message_to = |rcpt: &str| {
            node.sink
                .parsed_messages()
                .into_iter()
                .rev()
                .find(|m| m.rcpt_tos().contains(&rcpt))
                .map(|m| String::from_utf8_lossy(&m.body_crlf()).into_owned())
                .unwrap_or_default()
        };
        assert!(message_to("ann@de.test").contains("text/html"));
        let dora = message_to("dora@de.test");
        assert!(
            !dora.contains("text/html") && dora.contains("Hello Dora"),
            "{dora}"
        );
        // `limit`: the post office's client count.
        let before = node.sink.parsed_messages().len();
        send_to_list(
            &node,
            &shop,
            json!({"template": template(), "list": list, "limit": 2}),
        );
        assert_eq!(arrived_since(&node, before).len(), 2);

        // Ann unsubscribes with the one-click POST of her message: she
        // leaves the list (kept as unsubscribed: a re-import does not add her
        // back), and the next campaign to the list skips her.
        let message = node
            .sink
            .parsed_messages()
            .into_iter()
            .rev()
            .find(|m| m.rcpt_tos().contains(&"ann@de.test"))
            .unwrap()
            .body_crlf();
        let header = header_of(&message, "List-Unsubscribe").unwrap();
        let url = &header[1..header.find('>').unwrap()];
        assert!(url.starts_with(&format!("http://{web}/u/")), "{url}");
        let (code, _, _) = curl(&["-X", "POST", "-d", "List-Unsubscribe=One-Click", url]);
        assert_eq!(code, 200);
        let ann = poll(Duration::from_secs(10), || {
            let m = node
                .call(
                    "GET",
                    &format!("/v1/lists/{list}/members/ann@de.test"),
                    &shop,
                    None,
                )
                .json();
            (m["status"] == "unsubscribed").then_some(m)
        });
        assert!(ann.is_some(), "ann is still subscribed");
        let again = post_csv(
            &node,
            &format!("/v1/lists/{list}/members"),
            &shop,
            "email,name\nann@de.test,Ann\n",
        );
        assert_eq!(again.json()["kept_unsubscribed"], 1, "{}", again.text());
        let before = node.sink.parsed_messages().len();
        send_to_list(&node, &shop, json!({"template": template(), "list": list}));
        let got = arrived_since(&node, before);
        assert!(!got.contains("ann@de.test") && got.len() == 3, "{got:?}");
    }
}

/// The confirmation link of the confirmation message to `rcpt`, once it
/// arrived: a transactional message, without List-Unsubscribe.
fn confirm_link(node: &Node, web: SocketAddr, rcpt: &str) -> String {
    let message = poll(Duration::from_secs(30), || {
        node.sink
            .parsed_messages()
            .into_iter()
            .find(|m| m.rcpt_tos().contains(&rcpt))
    })
    .unwrap_or_else(|| panic!("no confirmation arrived: {}", node.log()));
    assert!(header_of(&message.body_crlf(), "List-Unsubscribe").is_none());
    // The text part is quoted-printable: long lines are folded.
    let body = unqp(&String::from_utf8_lossy(&message.body_crlf()));
    let prefix = format!("http://{web}/s/confirm/");
    let at = body.find(&prefix).expect("a confirmation link");
    body[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}

#[test]
fn the_subscribe_form_mails_a_confirmation_whose_link_subscribes() {
    let (node, web) = web_node(186, false);
    let shop = node.token("shop", "sender");
    let made = node.call(
        "POST",
        "/v1/lists",
        &shop,
        Some(&json!({"name": "Deals & <News>", "from": "lists@volley.test", "form_fields": ["first_name"]})),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let list = id_of(&made);
    // A list without `from` has no form.
    let quiet = id_of(&node.call("POST", "/v1/lists", &shop, Some(&json!({"name": "Quiet"}))));
    let (code, _, _) = curl(&[&format!("http://{web}/s/{quiet}")]);
    assert_eq!(code, 404);

    // The form names the list (escaped) and asks for its fields.
    let form = format!("http://{web}/s/{list}");
    let (code, _, page) = curl(&[&form]);
    assert_eq!(code, 200);
    assert!(
        page.contains("Deals &amp; &lt;News&gt;") && page.contains("name=\"first_name\""),
        "{page}"
    );
    // A bad address is said so on the form.
    let (code, _, page) = curl(&["-d", "email=nobody", &form]);
    assert_eq!(code, 400);
    assert!(page.contains("not an e-mail address"), "{page}");

    let (code, _, page) = curl(&["-d", "email=New@Sub.test&first_name=Ann&admin=1", &form]);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Check your inbox"), "{page}");
    let link = confirm_link(&node, web, "new@sub.test");
    // Not a member until confirmed.
    is_problem(
        &node.call(
            "GET",
            &format!("/v1/lists/{list}/members/new@sub.test"),
            &shop,
            None,
        ),
        404,
        "not a member",
    );
    // A forged link changes nothing.
    let mut forged = link.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (code, _, _) = curl(&[&forged]);
    assert_eq!(code, 404);

    let (code, _, page) = curl(&[&link]);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("is subscribed"), "{page}");
    let member = poll(Duration::from_secs(20), || {
        let m = node.call(
            "GET",
            &format!("/v1/lists/{list}/members/new@sub.test"),
            &shop,
            None,
        );
        (m.status == 200).then(|| m.json())
    })
    .unwrap_or_else(|| panic!("not applied: {}", node.log()));
    assert_eq!(member["status"], "subscribed");
    // Only the list's form fields are kept.
    assert_eq!(member["fields"], json!({"first_name": "Ann"}));
    let (code, _, _) = curl(&[&link]);
    assert_eq!(code, 200, "a second visit is harmless");

    // Bounds: an address gets at most two confirmations an hour per list,
    // whatever is asked; a client makes at most ten requests an hour.
    let to_target = || {
        node.sink
            .parsed_messages()
            .iter()
            .filter(|m| m.rcpt_tos().contains(&"target@sub.test"))
            .count()
    };
    for i in 1..=3 {
        let (code, _, _) = curl(&["-d", "email=target@sub.test", &form]);
        assert_eq!(code, 200);
        if i < 3 {
            // Each in a step of its own (requests of one step share a message).
            let arrived = poll(Duration::from_secs(30), || (to_target() == i).then_some(()));
            assert!(
                arrived.is_some(),
                "confirmation {i} did not arrive: {}",
                node.log()
            );
        }
    }
    let mut codes = Vec::new();
    for i in 0..6 {
        let (code, _, _) = curl(&["-d", &format!("email=other{i}@sub.test"), &form]);
        codes.push(code);
    }
    // 1 + 3 + 6 = 10 requests so far from this client: the eleventh is refused.
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    let (code, _, page) = curl(&["-d", "email=late@sub.test", &form]);
    assert_eq!(code, 429, "{page}");
    let targets = poll(Duration::from_secs(30), || {
        let n = node
            .sink
            .parsed_messages()
            .iter()
            .filter(|m| m.rcpt_tos().contains(&"other5@sub.test"))
            .count();
        (n == 1).then(to_target)
    })
    .unwrap_or_else(|| panic!("the confirmations did not arrive: {}", node.log()));
    assert_eq!(targets, 2, "an address gets two confirmations an hour");
    assert!(!node
        .sink
        .parsed_messages()
        .iter()
        .any(|m| m.rcpt_tos().contains(&"late@sub.test")));
}

#[test]
fn the_subscribe_form_works_in_a_real_browser() {
    if !std::path::Path::new("/usr/bin/chromedriver").exists() {
        support::skip(
            "the_subscribe_form_works_in_a_real_browser",
            "chromium-driver is not installed",
        );
        return;
    }
    let (node, web) = web_node(187, false);
    let shop = node.token("shop", "sender");
    let list = id_of(&node.call(
        "POST",
        "/v1/lists",
        &shop,
        Some(&json!({"name": "Garden club", "from": "club@volley.test", "form_fields": ["first_name"]})),
    ));
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    let shots = shots.display().to_string();
    let form = format!("http://{web}/s/{list}");
    let seen = node::browser(
        "subscribe.py",
        &["form", &form, "rose@garden.test", "Rose", &shots],
        Duration::from_secs(90),
    );
    assert_eq!(
        seen["before"]["title"], "Subscribe to Garden club",
        "{seen}"
    );
    assert!(
        seen["after"]["text"]
            .as_str()
            .unwrap()
            .contains("rose@garden.test"),
        "{seen}"
    );
    let link = confirm_link(&node, web, "rose@garden.test");
    let seen = node::browser(
        "subscribe.py",
        &["confirm", &link, &shots],
        Duration::from_secs(90),
    );
    assert_eq!(seen["after"]["title"], "Subscribed", "{seen}");
    let member = poll(Duration::from_secs(20), || {
        let m = node.call(
            "GET",
            &format!("/v1/lists/{list}/members/rose@garden.test"),
            &shop,
            None,
        );
        (m.status == 200).then(|| m.json())
    })
    .unwrap_or_else(|| panic!("not applied: {}", node.log()));
    assert_eq!(
        (member["status"].as_str(), &member["fields"]["first_name"]),
        (Some("subscribed"), &json!("Rose"))
    );
}
