//! The dashboard end to end: a real `volley run` delivering a campaign to a
//! real smtp-sink, the dashboard driven in headless Chromium by Python
//! selenium (`cli/tests/browser/dashboard.py`): sign in, watch the progress
//! bar advance, suspend the campaign with its button and see the receiver
//! stop getting its messages, resume it, find a suppressed address. Also,
//! with curl, what a browser cannot be made to do: the session cookie's
//! flags, a dashboard call without its CSRF token, a sign-in from another
//! origin. Screenshots go to `target/screenshots/`.

mod common;
mod node;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use node::{curl, Node};
use serde_json::{json, Value};

#[test]
fn the_dashboard_suspends_and_resumes_a_campaign_in_a_real_browser() {
    if !Path::new("/usr/bin/chromedriver").exists() {
        support::skip(
            "the_dashboard_suspends_and_resumes_a_campaign_in_a_real_browser",
            "chromium-driver is not installed",
        );
        return;
    }
    // ~40 s of sending: 2,000 recipients at 50 a second.
    let mut node = Node::start(
        200,
        false,
        "[site]\nmax_connections = 2\nmax_messages_per_second = 50\n",
    );
    let base = format!("http://{}", node.api);
    let added = node.call(
        "POST",
        "/v1/suppressions",
        &node.admin,
        Some(&json!({"address": "gone@dash.test", "reason": "manual"})),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    let recipients: Vec<Value> = (0..2000)
        .map(|i| json!({"email": format!("d{i}@dash.test"), "fields": {"name": "D"}}))
        .collect();
    let id = node.submit(&node.admin, recipients);

    // What the browser cannot show: the cookie's flags, CSRF, origins.
    let dash = node.token("dash", "admin");
    let (status, _, headers) = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--data-urlencode",
        &format!("token={dash}"),
        &format!("{base}/login"),
    ]);
    assert_eq!(status, 303, "{headers}");
    let cookie_line = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {headers}"));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie_line.contains(flag), "{cookie_line}");
    }
    let session = cookie_line
        .split_once(':')
        .map(|(_, v)| v.trim())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let (status, _, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Cookie: {session}"),
        &format!("{base}/v1/campaigns/{id}/suspend"),
    ]);
    assert_eq!(status, 403, "a call without the CSRF token: {body}");
    assert!(body.contains("X-CSRF-Token"), "{body}");
    let (status, _, _) = curl(&[
        "-H",
        &format!("Cookie: {session}"),
        &format!("{base}/v1/campaigns/{id}"),
    ]);
    assert_eq!(status, 200, "a GET with the session cookie");
    let (status, _, _) = curl(&[
        "-H",
        "Origin: http://evil.test",
        "--data-urlencode",
        &format!("token={}", node.admin),
        &format!("{base}/login"),
    ]);
    assert_eq!(status, 403, "a sign-in posted from another origin");

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    let seen = node::browser(
        "dashboard.py",
        &[
            base.as_str(),
            node.admin.as_str(),
            &id.to_string(),
            &node.sink.dump_dir().display().to_string(),
            &shots.display().to_string(),
            "gone@dash.test",
        ],
        Duration::from_secs(180),
    );
    assert!(seen.get("error").is_none(), "{seen:#}\n{}", node.log());

    assert!(
        seen["bad_token_error"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid"),
        "{seen}"
    );
    assert_eq!(
        seen["script_cookie"], "",
        "the page's script sees no cookie"
    );
    let cookie = &seen["cookies"][0];
    assert_eq!(cookie["name"], "volley_session");
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["sameSite"], "Strict");
    let progress = seen["progress"].as_array().unwrap();
    assert!(
        progress[1].as_f64() > progress[0].as_f64(),
        "the progress bar advanced: {progress:?}"
    );
    // Suspended: nothing more arrives (in flight at the click: at most a
    // connection's pipeline, already counted 2 s after it).
    let held = seen["suspended_arrivals"].as_array().unwrap();
    assert_eq!(
        held[0], held[1],
        "messages arrived while suspended: {held:?}"
    );
    assert!(held[0].as_u64().unwrap() < 2000, "{held:?}");
    let resumed = seen["resumed_arrivals"].as_array().unwrap();
    assert!(
        resumed[1].as_u64() > resumed[0].as_u64(),
        "nothing arrived after resume: {resumed:?}"
    );
    assert!(
        seen["held"].as_str().unwrap_or_default().contains("held"),
        "{seen}"
    );
    let activity = seen["activity"].as_str().unwrap_or_default();
    assert!(
        activity.contains("dash.test") && activity.contains("delivered"),
        "{activity}"
    );
    assert!(
        seen["suppression_row"]
            .as_str()
            .unwrap_or_default()
            .contains("gone@dash.test"),
        "{seen}"
    );
    assert!(
        seen["sites"]
            .as_str()
            .unwrap_or_default()
            .contains("route:"),
        "{seen}"
    );
    assert_eq!(seen["signed_out"], true);
    for shot in [
        "dashboard-campaigns.png",
        "dashboard-campaign-suspended.png",
        "dashboard-suppressions.png",
    ] {
        assert!(shots.join(shot).is_file(), "{shot}");
    }
    // The campaign goes on to the end.
    let done = node.wait_for(id, &node.admin, "completed", |c| c["state"] == "completed");
    assert_eq!(done["delivered"], 2000, "{done}");
    assert_eq!(node.arrived("d").len(), 2000);

    // Sessions are in the store: a restart keeps them (once the campaign is
    // done: a kill mid-campaign may send what was in flight twice); revoking
    // the token ends them.
    node.kill();
    node.run();
    let (status, _, _) = curl(&[
        "-H",
        &format!("Cookie: {session}"),
        &format!("{base}/v1/campaigns/{id}"),
    ]);
    assert_eq!(status, 200, "the session after a restart");
    let revoked = common::volley_with(&node.config(), &["token", "revoke", "dash"]);
    assert!(revoked.status.success(), "{}", common::stderr(&revoked));
    let (status, _, _) = curl(&[
        "-H",
        &format!("Cookie: {session}"),
        &format!("{base}/v1/campaigns/{id}"),
    ]);
    assert_eq!(status, 401, "the session of a revoked token");
}
