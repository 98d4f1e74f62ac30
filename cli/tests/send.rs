//! `volley send` and `volley run` end to end: a real smtp-sink receives, the
//! binary is the one users run.

mod common;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{stderr, volley};
use support::smtp_sink::{SinkOptions, SmtpSink};

struct Setup {
    dir: tempfile::TempDir,
    sink: SmtpSink,
}

impl Setup {
    fn new(last: u8, extra_config: &str) -> Setup {
        let sink = SmtpSink::start(
            std::net::Ipv4Addr::new(127, 0, 0, last),
            SinkOptions::plain(),
        );
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[control]\nlisten = \"\"\n[spool]\ndir = \"{spool}\"\n[delivery]\nhelo_name = \"volley.test\"\nlog = \"{log}\"\n\
             [retry]\nintervals = [\"1s\"]\n[[route]]\ndomain = \"*\"\nvia = \"{via}\"\n{extra_config}",
            spool = dir.path().join("spool").display(),
            log = dir.path().join("delivery.jsonl").display(),
            via = sink.addr(),
        );
        std::fs::write(dir.path().join("volley.toml"), config).unwrap();
        std::fs::write(
            dir.path().join("campaign.toml"),
            "from = \"News <news@volley.test>\"\nsubject = \"Hello {{ first_name | default(\\\"friend\\\") }}\"\n\
             text = \"Hi {{ first_name }} from {{ city }}\"\nhtml = \"<p>Hi {{ first_name }}</p>\"\n",
        )
        .unwrap();
        Setup { dir, sink }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn write_csv(&self, rows: &[String]) {
        let mut text = String::from("email,first_name,city\n");
        for r in rows {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(self.path("list.csv"), text).unwrap();
    }

    fn send_args(&self) -> Vec<String> {
        [
            "--config",
            &self.arg("volley.toml"),
            "send",
            "--template",
            &self.arg("campaign.toml"),
            "--recipients",
            &self.arg("list.csv"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn sends_a_personalized_campaign_and_reports_it() {
    let s = Setup::new(60, "");
    let mut rows: Vec<String> = (0..50)
        .map(|i| format!("user{i}@site{}.test,Name{i},City{i}", i % 3))
        .collect();
    rows.insert(10, "not-an-address,X,Y".into());
    rows.insert(20, "short@x.test,only-two".into());
    s.write_csv(&rows);
    let mut args = s.send_args();
    args.extend(["--report".into(), s.arg("report.json")]);
    let out = volley(&strs(&args));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("report.json")).unwrap()).unwrap();
    for (key, want) in [
        ("recipients", 50),
        ("delivered", 50),
        ("deferred", 0),
        ("bounced", 0),
        ("expired", 0),
        ("rejected_rows", 2),
    ] {
        assert_eq!(report[key], want, "{key}: {report}");
    }
    assert!(
        report["elapsed_s"].as_f64().unwrap() > 0.0 && report["msgs_per_s"].as_f64().unwrap() > 0.0
    );
    // Rejected rows, with their line numbers (the header is line 1).
    let rejects = std::fs::read_to_string(s.path("list.rejects.csv")).unwrap();
    assert!(
        rejects.contains("12,not-an-address,bad address"),
        "{rejects}"
    );
    assert!(
        rejects.contains("22,short@x.test,\"expected 3 fields, found 2\""),
        "{rejects}"
    );
    // Every message arrived, personalized.
    let messages = s
        .sink
        .wait_for_messages(50, Duration::from_secs(20))
        .unwrap();
    let m = messages
        .iter()
        .find(|m| m.rcpt_tos() == ["user7@site1.test"])
        .expect("user7's message");
    let body = String::from_utf8_lossy(&m.body_crlf()).into_owned();
    assert!(body.contains("Subject: Hello Name7"), "{body}");
    assert!(body.contains("Hi Name7 from City7"), "{body}");
    assert!(body.contains("multipart/alternative"), "{body}");
    // The summary table and the log.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TOTAL") && text.contains("site1.test"),
        "{text}"
    );
    let log = std::fs::read_to_string(s.path("delivery.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 50);
}

#[test]
fn placeholders_no_column_provides_stop_the_send_before_anything_is_queued() {
    let s = Setup::new(61, "");
    std::fs::write(s.path("campaign.toml"), "from = \"a@volley.test\"\nsubject = \"{{ company }}\"\ntext = \"{{ plan }} {{ first_name }}\"\n").unwrap();
    s.write_csv(&["a@x.test,A,B".to_string()]);
    let out = volley(&strs(&s.send_args()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("company") && err.contains("plan"), "{err}");
    assert!(!err.contains("first_name"), "{err}");
    let active = s.path("spool/active");
    assert!(!active.exists() || std::fs::read_dir(active).unwrap().count() == 0);
    assert_eq!(s.sink.counters().messages, 0);
}

/// Counts the messages each recipient received at the sink.
fn received(sink: &SmtpSink) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for m in sink.parsed_messages() {
        for r in m.rcpt_tos() {
            *counts.entry(r.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// The N of "N resent after a crash" in a line (0 if absent).
fn resent_in(text: &str) -> u64 {
    text.find(" resent after a crash")
        .and_then(|i| text[..i].split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Starts volley in the background, its log (info level) going to `log`.
fn spawn(args: &[String], log: &Path) -> std::process::Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(args)
        .env_remove("VOLLEY_CONFIG")
        .env("VOLLEY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap()
}

/// The in-flight recipients a daemon reported resending, summed over its log.
fn resent_in_log(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(resent_in)
        .sum()
}

/// `volley run --once` until nothing is left to do (bounded by `deadline`);
/// answers how many recipients the runs reported resending after a crash.
fn run_once_until_done(s: &Setup, deadline: Duration) -> u64 {
    let end = Instant::now() + deadline;
    let mut resent = 0;
    loop {
        let out = volley(&["--config", &s.arg("volley.toml"), "run", "--once"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        resent += resent_in(&text);
        if text.starts_with("0 attempted") && text.contains(" 0 waiting for a retry") {
            return resent;
        }
        assert!(Instant::now() < end, "not finished: {text}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until the sink has counted at least `n` messages (or the process ended).
fn wait_messages(sink: &SmtpSink, n: u64, child: &mut std::process::Child, deadline: Duration) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if sink.counters().messages >= n || child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_during_send_and_run_neither_loses_nor_doubles_recipients() {
    const N: usize = 100_000;
    let s = Setup::new(62, "[site]\nmax_connections = 4\nmax_messages_per_connection = 1000\n[queue]\nsync_interval = \"100ms\"\n");
    let rows: Vec<String> = (0..N)
        .map(|i| format!("r{i}@d{}.test,N{i},C", i % 50))
        .collect();
    s.write_csv(&rows);

    // 1. Killed while partitioning: as soon as the campaign is recorded.
    let mut child = spawn(&s.send_args(), &s.path("send.log"));
    let campaigns = s.path("spool/campaigns");
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let recorded = std::fs::read_dir(&campaigns)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .unwrap_or(false);
        if recorded || child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // 2. The daemon resumes (finishing the partitioning) and is killed twice,
    //    mid-delivery.
    let run_args: Vec<String> = ["--config", &s.arg("volley.toml"), "run"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    let mut resent = 0;
    for (round, share) in [3, 6].into_iter().enumerate() {
        let log = s.path(&format!("run{round}.log"));
        let mut child = spawn(&run_args, &log);
        wait_messages(
            &s.sink,
            (N * share / 10) as u64,
            &mut child,
            Duration::from_secs(180),
        );
        child.kill().unwrap();
        child.wait().unwrap();
        resent += resent_in_log(&log);
    }

    // 3. Rounds until nothing is left; each start reports what it resent.
    resent += run_once_until_done(&s, Duration::from_secs(300));
    s.sink
        .wait_for_count(N as u64, Duration::from_secs(60))
        .unwrap();
    let counts = received(&s.sink);
    let missing: Vec<_> = (0..N)
        .map(|i| format!("r{i}@d{}.test", i % 50))
        .filter(|r| !counts.contains_key(r))
        .collect();
    assert!(
        missing.is_empty(),
        "{} recipients never received, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let doubled: u64 = counts
        .values()
        .map(|&c| u64::from(c.saturating_sub(1)))
        .sum();
    assert!(
        doubled <= resent,
        "{doubled} duplicates, but only {resent} recipients were reported in flight at a kill"
    );
    eprintln!("crash test: {doubled} duplicates, {resent} in flight at the kills");
}

#[test]
fn messages_are_dkim_signed_and_an_independent_verifier_accepts_them() {
    let s = Setup::new(63, "");
    let key = s.path("dkim.pem");
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    // The public key for the TXT record: the last 32 bytes of the DER SubjectPublicKeyInfo.
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    let raw = &der.stdout[der.stdout.len() - 32..];
    let b64 = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    b64.stdin.as_ref().unwrap().write_all(raw).unwrap();
    let public = String::from_utf8(b64.wait_with_output().unwrap().stdout).unwrap();
    let mut config = std::fs::read_to_string(s.path("volley.toml")).unwrap();
    config.push_str(&format!(
        "[[dkim]]\ndomain = \"volley.test\"\nselector = \"s1\"\nkey_file = \"{}\"\nalgorithm = \"ed25519\"\n",
        key.display()
    ));
    std::fs::write(s.path("volley.toml"), config).unwrap();
    s.write_csv(&["a@x.test,Ann,Oslo".into(), "b@y.test,Bo,Rome".into()]);
    let out = volley(&strs(&s.send_args()));
    assert!(out.status.success(), "{}", stderr(&out));
    let messages = s
        .sink
        .wait_for_messages(2, Duration::from_secs(10))
        .unwrap();
    let script = format!(
        "import dkim,sys\nrec=b'v=DKIM1; k=ed25519; p={public}'\n\
         ok=dkim.verify(sys.stdin.buffer.read(), dnsfunc=lambda name, timeout=5: rec if name==b's1._domainkey.volley.test.' else None)\n\
         sys.exit(0 if ok else 1)"
    );
    for m in &messages {
        let body = m.body_crlf();
        assert!(
            String::from_utf8_lossy(&body).starts_with("DKIM-Signature:"),
            "signed first"
        );
        let mut verify = Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        verify.stdin.as_mut().unwrap().write_all(&body).unwrap();
        drop(verify.stdin.take());
        assert!(
            verify.wait().unwrap().success(),
            "dkimpy rejects:\n{}",
            String::from_utf8_lossy(&body)
        );
        // Altered after signing: refused.
        let mut forged = body.clone();
        let at = forged.len() - 5;
        forged[at] ^= 1;
        let mut verify = Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        verify.stdin.as_mut().unwrap().write_all(&forged).unwrap();
        drop(verify.stdin.take());
        assert!(
            !verify.wait().unwrap().success(),
            "an altered body must fail"
        );
    }
}

#[test]
fn wait_retries_deferred_recipients_until_every_one_is_final() {
    use support::scripted::Scripted;
    let server = Scripted::start(
        std::net::Ipv4Addr::new(127, 0, 0, 64),
        serde_json::json!({"defer_first_n": 1}),
    );
    let s = Setup::new(65, "");
    // Route to the scripted receiver (first attempt 451, then accepted) instead of the sink.
    let config = std::fs::read_to_string(s.path("volley.toml"))
        .unwrap()
        .replace(&s.sink.addr().to_string(), &server.addr().to_string());
    std::fs::write(s.path("volley.toml"), config).unwrap();
    s.write_csv(&["a@x.test,A,B".into(), "b@x.test,C,D".into()]);
    let mut args = s.send_args();
    args.extend(["--wait".into(), "--report".into(), s.arg("report.json")]);
    let out = volley(&strs(&args));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("report.json")).unwrap()).unwrap();
    assert_eq!(
        (report["delivered"].as_u64(), report["deferred"].as_u64()),
        (Some(2), Some(0)),
        "{report}"
    );
    let log = std::fs::read_to_string(s.path("delivery.jsonl")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("\"deferred\"")).count(),
        2,
        "{log}"
    );
    assert_eq!(
        server.transactions().iter().filter(|t| t.accepted).count(),
        2
    );

    // Without --wait, send returns after one pass: the deferred stay in the spool.
    let s2 = Setup::new(66, "");
    let config = std::fs::read_to_string(s2.path("volley.toml"))
        .unwrap()
        .replace(&s2.sink.addr().to_string(), &server.addr().to_string());
    std::fs::write(s2.path("volley.toml"), config).unwrap();
    s2.write_csv(&["c@x.test,A,B".into()]);
    let mut args = s2.send_args();
    args.extend(["--report".into(), s2.arg("report.json")]);
    assert!(volley(&strs(&args)).status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s2.path("report.json")).unwrap()).unwrap();
    assert_eq!(
        (report["delivered"].as_u64(), report["deferred"].as_u64()),
        (Some(0), Some(1)),
        "{report}"
    );
}

#[test]
fn connection_limits_beyond_the_open_files_limit_are_refused_before_sending() {
    let s = Setup::new(64, "");
    let config = std::fs::read_to_string(s.path("volley.toml")).unwrap();
    let config = config.replace("[delivery]\n", "[delivery]\nmax_connections = 2000\n");
    std::fs::write(s.path("volley.toml"), config).unwrap();
    s.write_csv(&["a@x.test,A,B".to_string()]);
    // A hard limit of 1024 open files cannot hold 2,000 connections.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$@\"")
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_volley"))
        .args(s.send_args())
        .env_remove("VOLLEY_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("need 2256 open files") && err.contains("at most 1024"),
        "{err}"
    );
    assert!(
        !s.path("spool/active").exists()
            || std::fs::read_dir(s.path("spool/active")).unwrap().count() == 0
    );
    assert_eq!(s.sink.counters().messages, 0);
}

/// Sends SIGTERM to `child` and waits (bounded) for it to exit.
fn terminate(child: &mut std::process::Child, deadline: Duration) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > end {
            child.kill().unwrap();
            panic!("volley did not exit within {deadline:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_mid_campaign_finishes_what_is_in_flight_and_sends_nothing_twice() {
    const N: usize = 30_000;
    let s = Setup::new(
        68,
        "[site]\nmax_connections = 4\nmax_messages_per_connection = 1000\n",
    );
    let rows: Vec<String> = (0..N)
        .map(|i| format!("r{i}@d{}.test,N{i},C", i % 20))
        .collect();
    s.write_csv(&rows);

    // 1. `volley send`, stopped a third of the way.
    let mut child = spawn(&s.send_args(), &s.path("send.log"));
    wait_messages(
        &s.sink,
        (N / 3) as u64,
        &mut child,
        Duration::from_secs(120),
    );
    let status = terminate(&mut child, Duration::from_secs(30));
    let send_log = std::fs::read_to_string(s.path("send.log")).unwrap();
    assert!(status.success(), "{status:?}: {send_log}");
    let first = s.sink.counters().messages;
    assert!(first < N as u64, "stopped before the end: {first}");

    // 2. `volley run`, stopped two thirds of the way.
    let run_args: Vec<String> = ["--config", &s.arg("volley.toml"), "run"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    let mut child = spawn(&run_args, &s.path("run.log"));
    wait_messages(
        &s.sink,
        (2 * N / 3) as u64,
        &mut child,
        Duration::from_secs(120),
    );
    let status = terminate(&mut child, Duration::from_secs(30));
    let run_log = std::fs::read_to_string(s.path("run.log")).unwrap();
    assert!(status.success(), "{status:?}: {run_log}");
    assert!(run_log.contains("volley run: stopped"), "{run_log}");
    let mut resent = resent_in_log(&s.path("run.log"));

    // 3. Rounds until nothing is left.
    resent += run_once_until_done(&s, Duration::from_secs(120));
    s.sink
        .wait_for_count(N as u64, Duration::from_secs(60))
        .unwrap();
    let counts = received(&s.sink);
    assert_eq!(counts.len(), N, "every recipient received");
    let doubled: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} sent twice, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(3)]
    );
    assert_eq!(resent, 0, "nothing was left in flight by the stops");
}

#[test]
fn an_unreachable_destination_holds_back_nothing_queued_behind_it() {
    // The reported stall: [queue] window = 1000, 1,000 recipients at a.test
    // (nothing listens at its MX) ahead of 1,000 at b.test; default backoffs.
    let s = Setup::new(67, "[queue]\nwindow = 1000\n");
    let down = std::net::Ipv4Addr::new(127, 0, 0, 69);
    let down = format!("{down}:{}", support::port::free_port(down));
    let config = std::fs::read_to_string(s.path("volley.toml")).unwrap();
    let config = config.replacen(
        "[[route]]\n",
        &format!("[[route]]\ndomain = \"a.test\"\nvia = \"{down}\"\n[[route]]\n"),
        1,
    );
    std::fs::write(s.path("volley.toml"), config).unwrap();
    let mut rows: Vec<String> = (0..1000).map(|i| format!("u{i}@a.test,A,C")).collect();
    rows.extend((0..1000).map(|i| format!("u{i}@b.test,B,C")));
    s.write_csv(&rows);
    let started = Instant::now();
    let out = volley(&strs(&s.send_args()));
    assert!(out.status.success(), "{}", stderr(&out));
    // Without --wait it returns once nothing is due, and the unreachable site
    // did not hold the round through its connect backoffs (10 s, then 20 s).
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let counters = s
        .sink
        .wait_for_count(1000, Duration::from_secs(20))
        .unwrap();
    assert_eq!(counters.messages, 1000);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("1000 delivered, 1000 deferred"), "{text}");
}

#[test]
fn send_notify_mails_the_summary_when_the_campaign_completes() {
    let s = Setup::new(68, "");
    let rows: Vec<String> = (0..5).map(|i| format!("n{i}@sum.test,N{i},C{i}")).collect();
    s.write_csv(&rows);
    let mut args = s.send_args();
    args.extend(["--notify".into(), "owner@requester.test".into()]);
    let out = volley(&strs(&args));
    assert!(out.status.success(), "{}", stderr(&out));
    let msgs = s
        .sink
        .wait_for_messages(6, Duration::from_secs(30))
        .unwrap();
    let summary = msgs
        .iter()
        .find(|m| m.rcpt_tos().contains(&"owner@requester.test"))
        .expect("a summary to the requester");
    let body = String::from_utf8_lossy(&summary.body);
    assert!(body.contains("5 recipients: 5 delivered"), "{body}");
    assert!(body.contains("sum.test"), "{body}");
}
