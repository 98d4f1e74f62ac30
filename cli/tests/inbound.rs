//! Received mail end to end: `volley run` with a submission listener relays what
//! `swaks` and `volley sendmail` submit to a real smtp-sink; `volley sendmail`
//! queues straight into the spool when no daemon runs; a message acknowledged
//! with 250 survives `kill -9`.

mod common;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::volley_run;
use support::port::{free_port, poll, wait_bound};
use support::process::{run_bounded, ChildGuard};
use support::smtp_sink::{SinkMessage, SinkOptions, SmtpSink};

const VOLLEY: &str = env!("CARGO_BIN_EXE_volley");

/// A message as a client sends it: CRLF lines, a placeholder-like text that must
/// not be merged, lines starting with dots (stuffed on the wire both ways).
const MESSAGE: &[u8] = b"From: App <app@src.test>\r\nTo: r1@x.test, r2@y.test\r\nSubject: {{ not_a_placeholder }}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@src.test>\r\n\r\nHello {{ first_name }} and {{ email | default(\"x\") }}.\r\n.leading dot\r\n..two dots\r\n\xc3\xa9t\xc3\xa9\r\n";

struct Setup {
    dir: tempfile::TempDir,
    /// The submission listener's address.
    listen: SocketAddrV4,
}

impl Setup {
    /// A configuration with a submission listener on 127.0.0.`listen_ip` and
    /// every domain routed to `route`.
    fn new(listen_ip: u8, route: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ip = Ipv4Addr::new(127, 0, 0, listen_ip);
        let listen = SocketAddrV4::new(ip, free_port(ip));
        let s = Setup { dir, listen };
        s.write_config(route);
        s
    }

    fn write_config(&self, route: &str) {
        let config = format!(
            "[control]\nlisten = \"\"\n[spool]\ndir = \"{spool}\"\n[delivery]\nhelo_name = \"volley.test\"\nlog = \"{log}\"\n\
             [retry]\nintervals = [\"1s\"]\n[[route]]\ndomain = \"*\"\nvia = \"{route}\"\n\
             [server]\nhostname = \"mx.volley.test\"\n\
             [[listen]]\naddress = \"{listen}\"\nrole = \"submission\"\ntls = \"none\"\n",
            spool = self.path("spool").display(),
            log = self.path("delivery.jsonl").display(),
            listen = self.listen,
        );
        std::fs::write(self.path("volley.toml"), config).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> String {
        self.path("volley.toml").display().to_string()
    }

    /// `volley --config CONFIG args...`, stdin `input`, within 60 s.
    fn volley(&self, args: &[&str], input: &[u8]) -> Output {
        let mut cmd = Command::new(VOLLEY);
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("VOLLEY_CONFIG")
            .env("VOLLEY_LOG", "warn");
        run_bounded(&mut cmd, input, Duration::from_secs(60)).unwrap()
    }

    /// Starts `volley run` and waits until its listener is bound.
    fn daemon(&self) -> ChildGuard {
        let cmd = volley_run(&self.config());
        let child = ChildGuard::spawn("volley-run", cmd, self.dir.path()).unwrap();
        wait_bound(self.listen, Duration::from_secs(20), || child.check_alive())
            .unwrap_or_else(|e| panic!("volley run did not listen: {e}"));
        child
    }

    /// swaks submits MESSAGE to the listener; returns the queue id of the 250.
    fn swaks(&self, to: &str) -> String {
        // swaks sends CRLF . CRLF after the data: without its last line end, the
        // data file then arrives as MESSAGE exactly.
        let data = MESSAGE.strip_suffix(b"\r\n").unwrap();
        std::fs::write(self.path("message.eml"), data).unwrap();
        let data = format!("@{}", self.path("message.eml").display());
        let server = self.listen.to_string();
        let mut cmd = Command::new("swaks");
        cmd.args([
            "--server",
            &server,
            "--helo",
            "client.test",
            "--from",
            "bounces@src.test",
            "--to",
            to,
            "--data",
            &data,
        ]);
        let out = run_bounded(&mut cmd, b"", Duration::from_secs(30)).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "swaks failed:\n{text}");
        let id = text
            .lines()
            .find_map(|l| {
                l.split_once("<-  250 2.0.0 Ok: queued as ")
                    .map(|(_, id)| id)
            })
            .unwrap_or_else(|| panic!("no queue id in:\n{text}"));
        id.trim().to_owned()
    }

    fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("delivery.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn active_batches(&self) -> Vec<String> {
        self.batches_in("spool/active")
    }

    /// Batch files in `dir` of the spool (`open/` holds relay batches still
    /// being appended to, `active/` the sealed ones).
    fn batches_in(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(dir))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn sink(last: u8) -> SmtpSink {
    SmtpSink::start(Ipv4Addr::new(127, 0, 0, last), SinkOptions::plain())
}

/// The message as received, without the first field (the listener's Received).
fn after_received(m: &SinkMessage) -> Vec<u8> {
    let body = m.body_crlf();
    let mut pos = 0;
    loop {
        let end = body[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| pos + i + 2)
            .unwrap();
        pos = end;
        if !matches!(body.get(pos), Some(b' ' | b'\t')) {
            return body[pos..].to_vec();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_relays_what_swaks_submits_byte_for_byte() {
    let sink = sink(80);
    let s = Setup::new(81, &sink.addr().to_string());
    let _daemon = s.daemon();
    let id = s.swaks("r1@x.test,r2@y.test");
    let messages = sink
        .wait_for_recipients(2, Duration::from_secs(20))
        .unwrap();
    let mut rcpts: Vec<String> = messages
        .iter()
        .flat_map(|m| m.rcpt_tos().into_iter().map(str::to_owned))
        .collect();
    rcpts.sort();
    assert_eq!(rcpts, ["r1@x.test", "r2@y.test"]);
    // Both are behind the one smarthost: one transaction carries them.
    assert_eq!(messages.len(), 1, "one transaction for both recipients");
    for m in &messages {
        assert_eq!(m.mail_from(), "bounces@src.test");
        let body = m.body_crlf();
        assert!(
            body.starts_with(b"Received: from client.test ([127.0.0.1])\r\n\tby mx.volley.test (volley) with ESMTP"),
            "{}",
            text(&body)
        );
        assert_eq!(text(&after_received(m)), text(MESSAGE), "relayed unchanged");
    }
    // The delivery log names the queue id's relay batch (the id before its
    // ".N", the message's number in the batch); the spool is empty again.
    let (batch, number) = id.split_once('.').expect("queue id BATCH.N");
    assert!(number.parse::<u32>().is_ok(), "{id}");
    let campaign = u64::from_str_radix(batch, 16).unwrap();
    let done = poll(Duration::from_secs(10), || {
        let lines = s.log_lines();
        (lines.len() == 2).then_some(lines)
    })
    .expect("two log lines");
    for line in &done {
        assert_eq!(line["campaign"], campaign, "{line}");
        assert_eq!(line["status"], "delivered", "{line}");
    }
    poll(Duration::from_secs(10), || {
        s.active_batches().is_empty().then_some(())
    })
    .expect("the batch completed");
    let summary = s.volley(&["queue", "summary"], b"");
    assert!(
        text(&summary.stdout).contains("TOTAL       0"),
        "{}",
        text(&summary.stdout)
    );
}

#[test]
fn sendmail_t_goes_through_the_running_daemon() {
    let sink = sink(82);
    let s = Setup::new(83, &sink.addr().to_string());
    let daemon = s.daemon();
    let input = b"From: App <app@src.test>\nTo: Ann <ann@x.test>\nCc: cc@y.test\nBcc: hidden@z.test\nSubject: via sendmail {{ x }}\n\nline one\n.dot line\n";
    let out = s.volley(&["sendmail", "-t", "-i"], input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stderr.is_empty(),
        "quiet on success: {}",
        text(&out.stderr)
    );
    let messages = sink
        .wait_for_recipients(3, Duration::from_secs(20))
        .unwrap();
    let mut rcpts: Vec<String> = messages
        .iter()
        .flat_map(|m| m.rcpt_tos().into_iter().map(str::to_owned))
        .collect();
    rcpts.sort();
    assert_eq!(rcpts, ["ann@x.test", "cc@y.test", "hidden@z.test"]);
    assert_eq!(messages.len(), 1, "one transaction through the smarthost");
    for m in &messages {
        assert_eq!(m.mail_from(), "app@src.test");
        let body = text(&after_received(m));
        assert!(!body.contains("Bcc") && !body.contains("hidden"), "{body}");
        assert!(
            body.starts_with("From: App <app@src.test>\r\nTo: Ann <ann@x.test>\r\nCc: cc@y.test\r\nSubject: via sendmail {{ x }}\r\nDate: "),
            "{body}"
        );
        assert!(body.contains("\r\nMessage-ID: <"), "{body}");
        assert!(
            body.ends_with("\r\n\r\nline one\r\n.dot line\r\n"),
            "{body}"
        );
    }
    // It went through the listener, not the spool directly.
    assert!(
        daemon.stderr_text().contains("message accepted"),
        "{}",
        daemon.stderr_text()
    );
}

#[test]
fn sendmail_queues_into_the_spool_when_no_daemon_runs() {
    let sink = sink(84);
    let s = Setup::new(85, &sink.addr().to_string());
    // Relayed messages are DKIM-signed for their From domain, like campaigns.
    let key = s.path("dkim.pem");
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let mut config = std::fs::read_to_string(s.path("volley.toml")).unwrap();
    config.push_str(&format!(
        "[[dkim]]\ndomain = \"src.test\"\nselector = \"s1\"\nkey_file = \"{}\"\nalgorithm = \"ed25519\"\n",
        key.display()
    ));
    std::fs::write(s.path("volley.toml"), config).unwrap();
    // Called as `sendmail` (the /usr/sbin/sendmail symlink), with its own -C.
    let link = s.path("sendmail");
    std::os::unix::fs::symlink(VOLLEY, &link).unwrap();
    let mut cmd = Command::new(&link);
    cmd.args([
        "-C",
        &s.config(),
        "-f",
        "app@src.test",
        "-oi",
        "a@x.test, b@x.test",
    ])
    .env_remove("VOLLEY_CONFIG")
    .env("VOLLEY_LOG", "warn");
    let out = run_bounded(
        &mut cmd,
        b"Subject: queued\n\n{{ not_a_placeholder }}\n",
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let batches = s.active_batches();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(sink.counters().messages, 0);
    let once = s.volley(&["run", "--once"], b"");
    assert!(once.status.success(), "{}", text(&once.stderr));
    assert!(
        text(&once.stdout).starts_with("2 attempted: 2 delivered"),
        "{}",
        text(&once.stdout)
    );
    let messages = sink
        .wait_for_recipients(2, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        messages.iter().map(|m| m.rcpt_tos()).collect::<Vec<_>>(),
        [["a@x.test", "b@x.test"]],
        "one transaction for the message's two recipients at x.test"
    );
    for m in &messages {
        assert_eq!(m.mail_from(), "app@src.test");
        let body = text(&m.body_crlf());
        assert!(
            body.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;")
                && body.contains(" d=src.test;"),
            "{body}"
        );
        assert!(body.contains("(volley sendmail, uid "), "{body}");
        assert!(
            body.contains("\r\nSubject: queued\r\nFrom: app@src.test\r\n"),
            "{body}"
        );
        assert!(
            body.ends_with("\r\n\r\n{{ not_a_placeholder }}\r\n"),
            "{body}"
        );
    }
}

#[test]
fn a_message_acknowledged_with_250_survives_kill_9() {
    // Routed where nobody listens: the message stays deferred in the spool.
    let dead = Ipv4Addr::new(127, 0, 0, 88);
    let s = Setup::new(87, &format!("{dead}:{}", free_port(dead)));
    let daemon = s.daemon();
    let id = s.swaks("k1@x.test,k2@y.test");
    // SIGKILL (ChildGuard's drop) right after the 250.
    drop(daemon);
    // The message's relay batch is on disk: still open (appended to, its
    // commit done) or already sealed into active/.
    let (batch, _) = id.split_once('.').expect("queue id BATCH.N");
    let mut batches = s.batches_in("spool/open");
    batches.extend(s.active_batches());
    assert_eq!(batches, [format!("{batch}-0000000000000000.vqb")]);
    // The receiver comes up; the next run delivers (after the retry interval,
    // if the killed daemon had got as far as a first attempt).
    let sink = sink(86);
    s.write_config(&sink.addr().to_string());
    let delivered = poll(Duration::from_secs(30), || {
        let out = s.volley(&["run", "--once"], b"");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let rcpts: usize = sink
            .parsed_messages()
            .iter()
            .map(|m| m.rcpt_tos().len())
            .sum();
        (rcpts >= 2 && s.active_batches().is_empty()).then_some(())
    });
    assert!(
        delivered.is_some(),
        "not delivered: {:?}",
        s.active_batches()
    );
    let messages = sink
        .wait_for_recipients(2, Duration::from_secs(10))
        .unwrap();
    let mut rcpts: Vec<&str> = messages.iter().flat_map(|m| m.rcpt_tos()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["k1@x.test", "k2@y.test"], "each once");
    for m in &messages {
        assert_eq!(text(&after_received(m)), text(MESSAGE));
    }
}

#[test]
fn sendmail_exit_statuses() {
    let s = Setup::new(89, "127.0.0.1:9");
    let status = |args: &[&str], input: &[u8]| {
        let out = s.volley(args, input);
        (out.status.code(), text(&out.stderr))
    };
    let (code, err) = status(&["sendmail", "-t"], b"Subject: nobody\n\nx\n");
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("no recipients"), "{err}");
    let (code, err) = status(&["sendmail", "-k", "a@x.test"], b"x\n");
    assert_eq!(code, Some(64), "{err}");
    let (code, err) = status(&["sendmail", "bad address@x.test"], b"x\n");
    assert_eq!(code, Some(65), "{err}");
    let (code, err) = status(&["sendmail", "-C", "/nonexistent.toml", "a@x.test"], b"x\n");
    assert_eq!(code, Some(78), "{err}");
    let out = s.volley(&["sendmail", "--help"], b"");
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("usage: sendmail"));
    // Nothing was queued by any of these.
    assert!(s.active_batches().is_empty());
    let out = s.volley(&["hash-password"], b"s3cret\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("$argon2id$"),
        "{}",
        text(&out.stdout)
    );
}
