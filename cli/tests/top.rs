//! `volley top` end to end: a real `volley run` delivering a campaign to a
//! real smtp-sink, `volley top` running in a real terminal (tmux on a
//! private socket): its screen is read with `capture-pane` while the
//! campaign runs (the queue by destination, a held domain, the site being
//! sent to, a clock that moves), and `q` sent with `send-keys` ends it.

mod common;
mod node;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use node::Node;
use serde_json::{json, Value};
use support::port::poll;

/// A tmux server of its own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn volley_top_shows_the_queue_live_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        support::skip(
            "volley_top_shows_the_queue_live_and_quits_on_q",
            "tmux is not installed",
        );
        return;
    }
    let node = Node::start(
        201,
        false,
        "[site]\nmax_connections = 2\nmax_messages_per_second = 100\n",
    );
    let config = node.config().display().to_string();
    let held = common::volley_with(&node.config(), &["queue", "hold", "--domain", "held.test"]);
    assert!(held.status.success(), "{}", common::stderr(&held));
    let mut recipients: Vec<Value> = (0..1500)
        .map(|i| json!({"email": format!("t{i}@top.test"), "fields": {"name": "T"}}))
        .collect();
    recipients.extend(
        (0..20).map(|i| json!({"email": format!("h{i}@held.test"), "fields": {"name": "H"}})),
    );
    node.submit(&node.admin, recipients);

    // One view, printed (a script's form).
    let once = common::volley_with(&node.config(), &["top", "--once"]);
    assert!(once.status.success(), "{}", common::stderr(&once));
    let text = common::stdout(&once);
    assert!(text.contains("DESTINATIONS BY QUEUE DEPTH"), "{text}");

    let tmux = Tmux {
        socket: format!("volley-top-{}", std::process::id()),
    };
    let command = format!("{} --config {config} top", env!("CARGO_BIN_EXE_volley"));
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "50",
        &command,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );

    // The view comes, shows the queue, the hold and the site being sent to.
    let shown = poll(Duration::from_secs(30), || {
        let screen = tmux.screen();
        let site_sending = screen.lines().any(|l| {
            l.starts_with("route:")
                && l.split_whitespace()
                    .nth(2)
                    .and_then(|r| r.parse::<f64>().ok())
                    .is_some_and(|r| r > 0.0)
        });
        (screen.contains("DESTINATIONS BY QUEUE DEPTH")
            && screen.contains("held: domain held.test")
            && screen
                .lines()
                .any(|l| l.starts_with("held.test") && l.split_whitespace().nth(1) == Some("20"))
            && site_sending)
            .then_some(screen)
    });
    let screen =
        shown.unwrap_or_else(|| panic!("volley top never showed the campaign:\n{}", tmux.screen()));
    assert!(screen.contains("q quits"), "{screen}");
    // It refreshes by itself: the clock in its first line moves.
    let first_line = |s: &str| s.lines().next().unwrap_or_default().to_owned();
    let before = first_line(&screen);
    let moved = poll(Duration::from_secs(10), || {
        let now = first_line(&tmux.screen());
        (now != before).then_some(now)
    });
    assert!(moved.is_some(), "the view did not refresh: {before}");

    // q quits (no Enter: the terminal is in non-canonical mode).
    let sent = tmux.run(&["send-keys", "-t", "top", "q"]);
    assert!(sent.status.success());
    let gone = poll(Duration::from_secs(10), || (!tmux.alive()).then_some(()));
    assert!(
        gone.is_some(),
        "volley top did not quit on q:\n{}",
        tmux.screen()
    );
}
