//! A node for the API's end-to-end tests: a real `volley run` serving the
//! API, delivering to a real smtp-sink, on the embedded SQLite store or a
//! private PostgreSQL; and the helpers those tests share.
//!
//! Declared by the test binaries that need it (`mod node;`, beside `mod
//! common;` and `mod support;`), each using a subset, hence the allow.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common;
use crate::support;
use support::http::{request, Answer};
use support::port::{free_port, poll};
use support::postgres::Postgres;
use support::process::ChildGuard;
use support::smtp_sink::{SinkOptions, SmtpSink};

/// A node: `volley run` with its API, delivering to an smtp-sink.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub sink: SmtpSink,
    pub api: SocketAddr,
    pub daemon: Option<ChildGuard>,
    pub admin: String,
    pub _pg: Option<Postgres>,
}

/// The stores every case runs on: SQLite, then PostgreSQL when installed.
pub fn stores(test: &str) -> Vec<bool> {
    if Postgres::available() {
        vec![false, true]
    } else {
        support::skip(
            &format!("{test} (PostgreSQL)"),
            "PostgreSQL is not installed",
        );
        vec![false]
    }
}

impl Node {
    pub fn start(last: u8, postgres: bool, extra: &str) -> Node {
        Node::start_with(last, postgres, "", extra)
    }

    /// With `control` lines in the `[control]` section and `extra` sections.
    pub fn start_with(last: u8, postgres: bool, control: &str, extra: &str) -> Node {
        Node::start_routed(last, postgres, control, "", extra)
    }

    /// With `routes` (`[[route]]` entries) before the one to the sink.
    pub fn start_routed(
        last: u8,
        postgres: bool,
        control: &str,
        routes: &str,
        extra: &str,
    ) -> Node {
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let sink = SmtpSink::start(ip, SinkOptions::plain());
        let dir = tempfile::tempdir().unwrap();
        let pg = postgres.then(|| Postgres::start(last));
        let database = pg
            .as_ref()
            .map(|p| format!("database = \"{}\"\n", p.url()))
            .unwrap_or_default();
        let api = SocketAddr::from((ip, free_port(ip)));
        let config = format!(
            "[control]\nlisten = \"{api}\"\n{control}{database}[spool]\ndir = \"{spool}\"\n[delivery]\nhelo_name = \"volley.test\"\nlog = \"{log}\"\n\
             [retry]\nintervals = [\"1s\"]\n{routes}[[route]]\ndomain = \"*\"\nvia = \"{via}\"\n{extra}",
            spool = dir.path().join("spool").display(),
            log = dir.path().join("delivery.jsonl").display(),
            via = sink.addr(),
        );
        std::fs::write(dir.path().join("volley.toml"), config).unwrap();
        let mut node = Node {
            dir,
            sink,
            api,
            daemon: None,
            admin: String::new(),
            _pg: pg,
        };
        node.admin = node.token("ops", "admin");
        node.run();
        node
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("volley.toml")
    }

    /// `volley token create`: the token printed.
    pub fn token(&self, name: &str, role: &str) -> String {
        let out = common::volley_with(
            &self.config(),
            &["token", "create", "--name", name, "--role", role],
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
        common::stdout(&out).trim().to_owned()
    }

    pub fn run(&mut self) {
        let cmd = common::volley_run(&self.config().display().to_string());
        let daemon = ChildGuard::spawn("volley-run", cmd, self.dir.path()).unwrap();
        let api = self.api;
        let up = poll(Duration::from_secs(30), || {
            daemon.check_alive().ok()?;
            let a = support::http::try_request(api, "GET", "/healthz", &[], b"").ok()?;
            (a.status == 200).then_some(())
        });
        assert!(
            up.is_some(),
            "the API did not come up: {}",
            daemon.stderr_text()
        );
        self.daemon = Some(daemon);
    }

    pub fn kill(&mut self) {
        self.daemon = None;
    }

    pub fn call(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Answer {
        let auth = format!("Bearer {token}");
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut headers = vec![("Authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        request(self.api, method, path, &headers, &bytes)
    }

    /// `POST /v1/campaigns` of `recipients` with [`template`]: its id.
    pub fn submit(&self, token: &str, recipients: Vec<Value>) -> i64 {
        let made = self.call(
            "POST",
            "/v1/campaigns",
            token,
            Some(&json!({"template": template(), "recipients": recipients})),
        );
        assert_eq!(made.status, 201, "{}", made.text());
        id_of(&made)
    }

    /// GET a campaign until `done` holds (deadline 60 s).
    pub fn wait_for(
        &self,
        id: i64,
        token: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let found = poll(Duration::from_secs(60), || {
            last = self
                .call("GET", &format!("/v1/campaigns/{id}"), token, None)
                .json();
            done(&last).then(|| last.clone())
        });
        found.unwrap_or_else(|| {
            panic!(
                "campaign {id}: not {what} after 60 s: {last}\n{}",
                self.log()
            )
        })
    }

    pub fn log(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.stderr_text())
            .unwrap_or_default()
    }

    /// Recipients of the messages that arrived whose address starts with `prefix`.
    pub fn arrived(&self, prefix: &str) -> Vec<String> {
        self.sink
            .parsed_messages()
            .iter()
            .flat_map(|m| {
                m.rcpt_tos()
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|r| r.starts_with(prefix))
            .collect()
    }
}

pub fn template() -> Value {
    json!({
        "from": "News <news@volley.test>",
        "subject": "Hello {{ name }}",
        "text": "Hi {{ name }}, this is for {{ email }}.",
    })
}

pub fn rows(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"email": format!("{prefix}{i}@x{}.test", i % 3), "fields": {"name": format!("N{i}")}}))
        .collect()
}

pub fn id_of(answer: &Answer) -> i64 {
    answer.json()["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {} {}", answer.status, answer.text()))
}

pub fn is_problem(a: &Answer, status: u16, needle: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(
        a.header("content-type"),
        Some("application/problem+json"),
        "{}",
        a.text()
    );
    let detail = a.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        detail.contains(needle),
        "detail {detail:?} lacks {needle:?}"
    );
    assert_eq!(a.json()["status"], status);
}

/// Runs `cli/tests/browser/SCRIPT ARGS` (headless Chromium, bounded by
/// `deadline`); the JSON it prints.
pub fn browser(script: &str, args: &[&str], deadline: Duration) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(script);
    let mut cmd = std::process::Command::new("/usr/bin/python3");
    cmd.arg(&script).args(args);
    let out = support::process::run_bounded(&mut cmd, b"", deadline).unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `curl` as a mailbox provider or a reader's browser uses it: the status and
/// the redirect target (no redirect followed), and the body.
pub fn curl(args: &[&str]) -> (u16, String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{redirect_url}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (code, location) = tail.split_once(' ').unwrap_or((tail, ""));
    (code.parse().unwrap(), location.to_owned(), body.to_owned())
}

/// A header field of a message, unfolded.
pub fn header_of(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = &text[..text.find("\r\n\r\n")?];
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Quoted-printable decoded (soft breaks joined, `=XX` decoded).
pub fn unqp(text: &str) -> String {
    let joined = text.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
