//! The suppression list end to end: `volley suppress …`, and `volley send` and the
//! `volley run` daemon never sending to a suppressed address (real smtp-sink and
//! scripted receivers).

mod common;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{stderr, stdout, volley, volley_with};
use support::scripted::Scripted;
use support::smtp_sink::{SinkOptions, SmtpSink};

/// A directory with volley.toml (spool, log, every domain routed to `via`) and a
/// campaign template from news@volley.test.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(via: std::net::SocketAddr) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[control]\nlisten = \"\"\n[spool]\ndir = \"{spool}\"\n[delivery]\nhelo_name = \"volley.test\"\nlog = \"{log}\"\n\
             [retry]\nintervals = [\"1s\"]\n[[route]]\ndomain = \"*\"\nvia = \"{via}\"\n",
            spool = dir.path().join("spool").display(),
            log = dir.path().join("delivery.jsonl").display(),
        );
        std::fs::write(dir.path().join("volley.toml"), config).unwrap();
        std::fs::write(
            dir.path().join("campaign.toml"),
            "from = \"News <news@volley.test>\"\nsubject = \"Hello {{ name }}\"\ntext = \"Hi {{ name }}\"\n",
        )
        .unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Runs `volley -C volley.toml ARGS…`.
    fn volley(&self, args: &[&str]) -> Output {
        volley_with(&self.path("volley.toml"), args)
    }

    fn write_csv(&self, emails: &[&str]) {
        let mut text = String::from("email,name\n");
        for (i, e) in emails.iter().enumerate() {
            text.push_str(&format!("{e},N{i}\n"));
        }
        std::fs::write(self.path("list.csv"), text).unwrap();
    }

    fn send(&self, extra: &[&str]) -> Output {
        let (template, list) = (self.arg("campaign.toml"), self.arg("list.csv"));
        let mut args = vec!["send", "--template", &template, "--recipients", &list];
        args.extend_from_slice(extra);
        self.volley(&args)
    }

    fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("delivery.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn log_for(&self, recipient: &str, status: &str) -> usize {
        self.log()
            .iter()
            .filter(|e| e["recipient"] == recipient && e["status"] == status)
            .count()
    }
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// Polls `f` until it holds or `deadline` passes.
fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn send_drops_suppressed_recipients_and_reports_them() {
    let sink = SmtpSink::start(std::net::Ipv4Addr::new(127, 0, 0, 70), SinkOptions::plain());
    let s = Setup::new(sink.addr());
    // For all mail; for this campaign's sending domain; for another sending domain.
    ok(s.volley(&["suppress", "add", "Two@Site.TEST"]));
    ok(s.volley(&[
        "suppress",
        "add",
        "three@site.test",
        "--domain",
        "Volley.test",
        "--reason",
        "complaint",
    ]));
    ok(s.volley(&[
        "suppress",
        "add",
        "four@site.test",
        "--domain",
        "other.test",
    ]));
    s.write_csv(&[
        "one@site.test",
        "two@site.test",
        "three@site.test",
        "four@site.test",
        "five@site.test",
        "not-an-address",
    ]);
    let out = ok(s.send(&[
        "--report",
        &s.arg("report.json"),
        "--rejects",
        &s.arg("rejects.csv"),
    ]));
    assert!(out.contains(" 2 suppressed,"), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("report.json")).unwrap()).unwrap();
    for (key, want) in [
        ("recipients", 3),
        ("delivered", 3),
        ("deferred", 0),
        ("bounced", 0),
        ("suppressed", 2),
        ("rejected_rows", 1),
    ] {
        assert_eq!(report[key], want, "{key}: {report}");
    }
    assert_eq!(
        std::fs::read_to_string(s.path("rejects.csv")).unwrap(),
        "line,email,reason\n3,two@site.test,suppressed: manual\n\
         4,three@site.test,suppressed: complaint\n7,not-an-address,bad address: no @ in the address\n"
    );
    sink.wait_for_messages(3, Duration::from_secs(20)).unwrap();
    let mut got: Vec<String> = sink
        .parsed_messages()
        .iter()
        .flat_map(|m| {
            m.rcpt_tos()
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    got.sort();
    assert_eq!(got, ["five@site.test", "four@site.test", "one@site.test"]);
    // Dropped before queueing: no batch slot, no log line; the campaign keeps the list.
    assert_eq!(s.log().len(), 3);
    let campaigns: Vec<String> = std::fs::read_dir(s.path("spool/campaigns"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".suppressed"))
        .collect();
    assert_eq!(campaigns.len(), 1);
    let dropped = std::fs::read_to_string(s.path("spool/campaigns").join(&campaigns[0])).unwrap();
    assert_eq!(dropped, "two@site.test\nthree@site.test\n");
}

#[test]
fn the_daemon_stops_a_queued_recipient_suppressed_after_it_started() {
    // b is deferred for as long as the receiver runs; a is accepted.
    let server = Scripted::start(
        std::net::Ipv4Addr::new(127, 0, 0, 71),
        serde_json::json!({"rcpt_replies": {"b@x.test": "451 4.2.0 Mailbox busy"}}),
    );
    let s = Setup::new(server.addr());
    s.write_csv(&["a@x.test", "b@x.test"]);
    let out = ok(s.send(&[]));
    assert!(out.contains("1 delivered, 1 deferred"), "{out}");

    let log = std::fs::File::create(s.path("run.log")).unwrap();
    let mut daemon: Child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["-C", &s.arg("volley.toml"), "run"])
        .env_remove("VOLLEY_CONFIG")
        .env("VOLLEY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // The daemon has retried b at least once: it loaded the list before the add.
    let retried = wait_until(Duration::from_secs(30), || {
        s.log_for("b@x.test", "deferred") >= 2
    });
    // The CLI writes while the daemon holds the spool's lock.
    let added = s.volley(&["suppress", "add", "B@x.test", "--reason", "complaint"]);
    let stopped = wait_until(Duration::from_secs(30), || {
        s.log_for("b@x.test", "suppressed") == 1
    });
    let finished = wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(s.path("spool/active"))
            .map(|d| d.count() == 0)
            .unwrap_or(false)
    });
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let run_log = std::fs::read_to_string(s.path("run.log")).unwrap_or_default();
    assert!(retried, "the daemon never retried b: {run_log}");
    ok(added);
    assert!(stopped, "b was never suppressed: {:?}\n{run_log}", s.log());
    assert!(finished, "the batch is still active: {run_log}");
    assert!(run_log.contains("1 suppressed"), "{run_log}");

    let line = s
        .log()
        .into_iter()
        .find(|e| e["status"] == "suppressed")
        .unwrap();
    assert_eq!(line["code"], 0, "{line}");
    assert_eq!(line["level"], "recipient", "{line}");
    assert!(line["attempt"].as_u64().unwrap() >= 2, "{line}");
    // Nothing after the suppressed line for b, and b never accepted.
    let last_b = s
        .log()
        .into_iter()
        .rfind(|e| e["recipient"] == "b@x.test")
        .unwrap();
    assert_eq!(last_b["status"], "suppressed");
    let accepted: Vec<Vec<String>> = server
        .transactions()
        .into_iter()
        .filter(|t| t.accepted)
        .map(|t| t.rcpt_tos)
        .collect();
    assert_eq!(accepted, [vec!["a@x.test".to_string()]]);
    // The finished batch says bounced (code 0) for b.
    let done = std::fs::read_dir(s.path("spool/done"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let show = ok(s.volley(&["queue", "show", &done.display().to_string(), "--json"]));
    let show: serde_json::Value = serde_json::from_str(show.trim()).unwrap();
    let b = &show["recipients"][1];
    assert_eq!(
        (
            b["address"].as_str(),
            b["state"].as_str(),
            b["code"].as_u64()
        ),
        (Some("b@x.test"), Some("bounced"), Some(0))
    );
}

#[test]
fn suppressed_after_queueing_run_once_finalises_without_sending() {
    let server = Scripted::start(
        std::net::Ipv4Addr::new(127, 0, 0, 72),
        serde_json::json!({"defer_first_n": 1}),
    );
    let s = Setup::new(server.addr());
    s.write_csv(&["a@x.test", "b@x.test", "c@x.test"]);
    let out = ok(s.send(&[]));
    assert!(out.contains("0 delivered, 3 deferred"), "{out}");
    ok(s.volley(&["suppress", "add", "c@x.test", "--domain", "volley.test"]));
    let end = Instant::now() + Duration::from_secs(30);
    let mut rounds = String::new();
    loop {
        let text = ok(s.volley(&["run", "--once"]));
        rounds.push_str(&text);
        if text.contains(" 0 waiting for a retry") && text.starts_with("0 attempted") {
            break;
        }
        assert!(Instant::now() < end, "not finished: {rounds}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(rounds.contains("1 suppressed"), "{rounds}");
    assert_eq!(s.log_for("c@x.test", "suppressed"), 1);
    let mut accepted: Vec<String> = server
        .transactions()
        .into_iter()
        .filter(|t| t.accepted)
        .flat_map(|t| t.rcpt_tos)
        .collect();
    accepted.sort();
    assert_eq!(accepted, ["a@x.test", "b@x.test"]);
}

fn spool_args(spool: &Path) -> [String; 2] {
    ["--spool".into(), spool.display().to_string()]
}

#[test]
fn suppress_commands_add_list_remove_and_import_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let [flag, sp] = spool_args(&spool);
    let run = |args: &[&str]| {
        let mut all = vec!["suppress"];
        all.extend_from_slice(args);
        all.extend([flag.as_str(), sp.as_str()]);
        volley(&all)
    };

    // One bad address refuses the whole add, naming each bad one.
    let out = run(&["add", "a@x.test", "nobody", "b c@x.test"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "volley: error: nothing done: 2 invalid addresses: \"nobody\": no @ in the address; \"b c@x.test\": address contains ' '\n"
    );
    assert_eq!(stdout(&run(&["list", "--json"])), "");

    let out = ok(run(&[
        "add", "A@X.test", "b@x.test", "--detail", "ticket 9",
    ]));
    assert!(
        out.ends_with("2 added, 0 already present (sending domain *, reason manual)\n"),
        "{out}"
    );
    let out = ok(run(&[
        "add",
        "a@x.test",
        "--domain",
        "Acme.test",
        "--reason",
        "unsubscribe",
    ]));
    assert!(out.starts_with("added a@x.test\n"), "{out}");
    let out = ok(run(&["add", "a@X.TEST"]));
    assert!(out.starts_with("already present a@X.TEST\n"), "{out}");

    // Plain text, one per line; bad rows reported with their line numbers.
    std::fs::write(
        dir.path().join("bounced.txt"),
        "# from the old system\nc@x.test\nnot-an-address\n\nb@x.test\nd@x..test\nc@x.test\n",
    )
    .unwrap();
    let file = dir.path().join("bounced.txt").display().to_string();
    let out = ok(run(&["import", &file, "--reason", "hard_bounce"]));
    assert_eq!(
        out,
        format!(
            "{file}:3: skipped \"not-an-address\": bad address: no @ in the address\n\
             {file}:6: skipped \"d@x..test\": bad address: bad label in domain \"x..test\"\n\
             {file}:7: skipped \"c@x.test\": duplicate of line 2\n\
             imported {file}: 1 added, 1 already present, 3 rejected (sending domain *, reason hard_bounce)\n"
        )
    );
    // CSV with an email column.
    std::fs::write(dir.path().join("u.csv"), "name,email\nE,e@x.test\nF,f@\n").unwrap();
    let csv = dir.path().join("u.csv").display().to_string();
    let out = ok(run(&[
        "import",
        &csv,
        "--domain",
        "acme.test",
        "--reason",
        "unsubscribe",
    ]));
    assert!(
        out.starts_with(&format!(
            "{csv}:3: skipped \"f@\": bad address: empty domain\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(": 1 added, 0 already present, 1 rejected"),
        "{out}"
    );

    let lines: Vec<serde_json::Value> = stdout(&run(&["list", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|v| {
            (
                v["address"].as_str().unwrap(),
                v["domain"].as_str().unwrap(),
                v["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a@x.test", "*", "manual"),
            ("a@x.test", "acme.test", "unsubscribe"),
            ("b@x.test", "*", "manual"),
            ("c@x.test", "*", "hard_bounce"),
            ("e@x.test", "acme.test", "unsubscribe"),
        ]
    );
    assert_eq!(lines[2]["detail"], "ticket 9");
    assert!(lines[0]["since"].as_str().unwrap().ends_with('Z'));
    let table = ok(run(&["list", "--reason", "unsubscribe"]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[0].starts_with("address   domain     reason       since"),
        "{table}"
    );
    assert!(
        rows[1].starts_with("a@x.test  acme.test  unsubscribe  20"),
        "{table}"
    );
    assert_eq!(rows[3], "2 entries (of 5)");

    // Remove: every sending domain by default; reports what was not there.
    let out = ok(run(&["remove", "A@x.test", "zed@x.test"]));
    assert_eq!(
        out,
        "removed A@x.test (sending domain *, acme.test)\nnot present zed@x.test\n1 removed, 1 not present\n"
    );
    let out = ok(run(&["remove", "e@x.test", "--domain", "*"]));
    assert!(
        out.starts_with("not present e@x.test (sending domain *)\n"),
        "{out}"
    );
    assert_eq!(stdout(&run(&["list", "--json"])).lines().count(), 3);
}
