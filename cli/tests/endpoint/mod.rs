//! A webhook endpoint for the end-to-end tests: a Python HTTP server
//! (`cli/tests/webhooks/receiver.py`) that checks every request's signature
//! with the Standard Webhooks reference library (`standardwebhooks`, which
//! nobody here wrote) and records each request as it came.
//!
//! Declared by the test binaries that need it (`mod endpoint;`, beside `mod
//! support;`), each using a subset, hence the allow.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support;
use support::port::{free_port, wait_listening};
use support::process::ChildGuard;

/// Where `scripts/test.sh` installs the `standardwebhooks` package.
pub fn pylib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pylib")
}

/// Whether the endpoint can run; says why not (a skip) otherwise.
pub fn available(test: &str) -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import standardwebhooks"])
        .env("PYTHONPATH", pylib())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        support::skip(
            test,
            "Python's standardwebhooks is not installed (scripts/test.sh puts it in target/pylib)",
        );
    }
    ok
}

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqr";

/// The Python endpoint, answering `status` to verified requests.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub out: PathBuf,
    pub secret: String,
    pub status: u16,
    pub process: Option<ChildGuard>,
}

impl Endpoint {
    pub fn start(dir: &Path, ip: Ipv4Addr, secret: &str, status: u16) -> Endpoint {
        let mut e = Endpoint {
            addr: SocketAddr::from((ip, free_port(ip))),
            out: dir.join(format!("webhook-{status}.jsonl")),
            secret: secret.to_owned(),
            status,
            process: None,
        };
        e.up(dir);
        e
    }

    pub fn up(&mut self, dir: &Path) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/receiver.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script)
            .arg(self.addr.ip().to_string())
            .arg(self.addr.port().to_string())
            .arg(&self.secret)
            .arg(&self.out)
            .args(["--status", &self.status.to_string()])
            .env("PYTHONPATH", pylib());
        let process = ChildGuard::spawn("webhook-endpoint", cmd, dir).unwrap();
        wait_listening(self.addr, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("endpoint: {e}: {}", process.stderr_text()));
        self.process = Some(process);
    }

    /// kill -9.
    pub fn kill(&mut self) {
        self.process = None;
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The requests it got, in order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The events of the requests it got, once per `webhook-id` (as a
    /// receiver that deduplicates by it sees them), in order.
    pub fn events(&self) -> Vec<Value> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for r in self.requests() {
            let id = r["webhook_id"].as_str().unwrap_or_default().to_owned();
            if !seen.insert(id) {
                continue;
            }
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap_or("null")).unwrap();
            if body["type"] == "batch" {
                out.extend(body["data"].as_array().cloned().unwrap_or_default());
            } else {
                out.push(body);
            }
        }
        out
    }
}
