//! Scripted SMTP receivers: `scripted_smtpd.py` (aiosmtpd 1.4.3 under Debian's
//! `/usr/bin/python3`) on 127.0.0.x, answering as a JSON scenario says and recording
//! every transaction and every command/reply line.
//!
//! The scenario keys are documented at the top of `scripted_smtpd.py`; in short:
//! `rcpt_replies`, `mail_replies`, `data_replies`, `command_replies` (fixed replies,
//! a list means "k-th attempt gets item k"), `defer_first_n` + `defer_at`
//! ("rcpt"/"data") + `defer_reply`, `reply_421_after` + `reply_421`,
//! `drop_in_data_after` + `drop_in_data_mode` ("mid"/"after_dot") +
//! `drop_in_data_times`, `delay_ms`, `greeting_delay_ms`, `greeting`, `starttls`
//! (`{"cert", "key", "require"}`), `ehlo_disable`, `ehlo_add`, `size_limit`,
//! `smtputf8`, `hostname`, `timeout_s`. Unknown keys make the server refuse to start.
//!
//! aiosmtpd advertises PIPELINING (added by the script), SIZE, 8BITMIME, SMTPUTF8
//! and STARTTLS (when configured); it has no CHUNKING/BDAT, DSN or
//! ENHANCEDSTATUSCODES (its own replies carry no enhanced codes).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::Duration;

use super::port::{on_free_port, poll, wait_bound, Attempt};
use super::process::{run_bounded, ChildGuard};

/// Debian's Python, which has `python3-aiosmtpd` (the `python3` on PATH may not).
pub const PYTHON: &str = "/usr/bin/python3";

/// Path of the receiver script: beside this file, whichever crate's tests include
/// it (`file!()` is relative to the workspace root, an ancestor of every crate).
pub fn script() -> std::path::PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .ancestors()
        .find(|dir| dir.join(file!()).exists())
        .unwrap_or(manifest);
    root.join(file!()).with_file_name("scripted_smtpd.py")
}

/// One DATA transaction as the scripted receiver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The connection it arrived on: 1 for the first connection to this receiver.
    pub session: u64,
    /// The client's `ip:port`.
    pub peer: String,
    /// The HELO/EHLO argument, if any.
    pub helo: Option<String>,
    /// Whether the session was using TLS (after STARTTLS).
    pub tls: bool,
    /// MAIL FROM address, without angle brackets ("" for the null sender).
    pub mail_from: String,
    /// MAIL FROM parameters, upper-cased by aiosmtpd (e.g. `SIZE=123`, `BODY=8BITMIME`).
    pub mail_options: Vec<String>,
    /// The accepted recipients, in order, without angle brackets.
    pub rcpt_tos: Vec<String>,
    /// RCPT parameters of the accepted recipients, upper-cased.
    pub rcpt_options: Vec<String>,
    /// The message as received: CRLF line ends kept, dot-stuffing removed.
    pub data: Vec<u8>,
    /// The reply sent after the final dot ("" if the connection was dropped there).
    pub reply: String,
    /// Whether the reply was 2xx.
    pub accepted: bool,
}

impl Transaction {
    /// [`data`](Self::data) as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    fn from_json(line: &str) -> Result<Transaction, String> {
        Transaction::with_time(line).map(|(t, _)| t)
    }

    /// A record and the unix time (seconds, fractional) its DATA was answered.
    fn with_time(line: &str) -> Result<(Transaction, f64), String> {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Transaction {
            session: v["session"].as_u64().unwrap_or(0),
            peer: s("peer"),
            helo: v["helo"].as_str().map(String::from),
            tls: v["tls"].as_bool().unwrap_or(false),
            mail_from: s("mail_from"),
            mail_options: list("mail_options"),
            rcpt_tos: list("rcpt_tos"),
            rcpt_options: list("rcpt_options"),
            data: from_hex(v["data"].as_str().unwrap_or_default())?,
            reply: s("reply"),
            accepted: v["accepted"].as_bool().unwrap_or(false),
        })
        .map(|t| (t, v["at"].as_f64().unwrap_or(0.0)))
    }
}

fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digit = |c: u8| -> Result<u8, String> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("bad hex digit {:?}", c as char))
    };
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err("odd-length hex".into());
    }
    bytes
        .chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// A running scripted receiver; killed on Drop (its temp dir removed). The script
/// also exits by itself if this test process dies (its stdin pipe closes).
pub struct Scripted {
    addr: SocketAddrV4,
    // Field order: the process dies before its directory is removed.
    child: ChildGuard,
    _stdin: ChildStdin,
    dir: tempfile::TempDir,
}

impl Scripted {
    /// Starts a receiver on `ip` (127.0.0.0/8) at a free port with `scenario` (a JSON
    /// object, `{}` for "accept everything") and waits until it listens (up to 10 s).
    /// Panics with the script's stderr if it cannot start (e.g. an unknown key).
    pub fn start(ip: Ipv4Addr, scenario: serde_json::Value) -> Scripted {
        Self::try_start(ip, scenario).unwrap_or_else(|e| panic!("scripted receiver: {e}"))
    }

    /// [`start`](Self::start), returning the error instead of panicking.
    pub fn try_start(ip: Ipv4Addr, scenario: serde_json::Value) -> Result<Scripted, String> {
        assert!(
            ip.is_loopback(),
            "test peers bind to 127.0.0.0/8 only, not {ip}"
        );
        if !scenario.is_object() {
            return Err(format!("scenario must be a JSON object, not {scenario}"));
        }
        let dir = tempfile::Builder::new()
            .prefix("volley-scripted-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let scenario_path = dir.path().join("scenario.json");
        std::fs::write(&scenario_path, scenario.to_string())
            .map_err(|e| format!("write scenario: {e}"))?;
        let (addr, child, stdin) = on_free_port(ip, |addr| {
            let mut cmd = Command::new(PYTHON);
            cmd.arg(script())
                .arg("--host")
                .arg(ip.to_string())
                .arg("--port")
                .arg(addr.port().to_string())
                .arg("--scenario")
                .arg(&scenario_path)
                .arg("--out-dir")
                .arg(dir.path())
                .stdin(Stdio::piped());
            let mut child = match ChildGuard::spawn("scripted_smtpd", cmd, dir.path()) {
                Ok(child) => child,
                Err(e) => return Attempt::Failed(e),
            };
            let Some(stdin) = child.take_stdin() else {
                return Attempt::Failed("no stdin pipe".into());
            };
            match wait_bound(addr, Duration::from_secs(10), || child.check_alive()) {
                Ok(()) => Attempt::Started((addr, child, stdin)),
                Err(e) if child.stderr_text().contains("in use") => Attempt::PortTaken(e),
                Err(e) => Attempt::Failed(e),
            }
        })?;
        Ok(Scripted {
            addr,
            child,
            _stdin: stdin,
            dir,
        })
    }

    /// The address the receiver listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(self.addr)
    }

    /// The accepted (2xx) transactions so far, in arrival order.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.all_transactions()
            .into_iter()
            .filter(|t| t.accepted)
            .collect()
    }

    /// Every transaction that reached the final dot, accepted or not (rejected or
    /// deferred DATA, or dropped with `drop_in_data_mode: "after_dot"`).
    pub fn all_transactions(&self) -> Vec<Transaction> {
        self.transaction_lines()
            .lines()
            .map(|line| {
                Transaction::from_json(line).unwrap_or_else(|e| panic!("transactions.jsonl: {e}"))
            })
            .collect()
    }

    /// The unix times (fractional seconds) the accepted transactions were
    /// answered at, in order.
    pub fn accepted_times(&self) -> Vec<f64> {
        self.accepted_at().into_iter().map(|(_, at)| at).collect()
    }

    /// The accepted transactions, each with the unix time it was answered at.
    pub fn accepted_at(&self) -> Vec<(Transaction, f64)> {
        self.transaction_lines()
            .lines()
            .filter_map(|line| Transaction::with_time(line).ok())
            .filter(|(t, _)| t.accepted)
            .collect()
    }

    /// The whole lines of `transactions.jsonl` (the last one may still be
    /// being written).
    fn transaction_lines(&self) -> String {
        let mut text =
            std::fs::read_to_string(self.dir.path().join("transactions.jsonl")).unwrap_or_default();
        text.truncate(text.rfind('\n').unwrap_or(0));
        text
    }

    /// The most connections that were open at once (from the transcript's
    /// connect and close lines, in the order they happened).
    pub fn max_concurrent_connections(&self) -> usize {
        let (mut open, mut most) = (0usize, 0usize);
        for line in self.transcript().lines() {
            if line.contains(" -- connect from ") {
                open += 1;
                most = most.max(open);
            } else if line.contains(" -- connection closed") {
                open = open.saturating_sub(1);
            }
        }
        most
    }

    /// Polls until at least `n` transactions were accepted, or `deadline` passes.
    pub fn wait_for_transactions(
        &self,
        n: usize,
        deadline: Duration,
    ) -> Result<Vec<Transaction>, String> {
        poll(deadline, || {
            let t = self.transactions();
            (t.len() >= n).then_some(t)
        })
        .ok_or_else(|| {
            format!(
                "scripted receiver on {}: {} of {n} transactions after {deadline:?}{}\ntranscript:\n{}",
                self.addr,
                self.transactions().len(),
                self.status_note(),
                self.transcript()
            )
        })
    }

    /// The command/reply transcript so far: lines `[s<session>] C: <command>`,
    /// `[s<session>] S: <reply line>` and `[s<session>] -- <event>` (connect, TLS,
    /// drop, close). Message content appears as `C: <N bytes of message data>`.
    pub fn transcript(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("transcript.log")).unwrap_or_default()
    }

    /// Polls until the transcript contains `needle`, or `deadline` passes; returns
    /// the transcript.
    pub fn wait_for_transcript(&self, needle: &str, deadline: Duration) -> Result<String, String> {
        poll(deadline, || {
            let t = self.transcript();
            t.contains(needle).then_some(t)
        })
        .ok_or_else(|| {
            format!(
                "scripted receiver on {}: {needle:?} not in the transcript after {deadline:?}{}:\n{}",
                self.addr,
                self.status_note(),
                self.transcript()
            )
        })
    }

    /// The script's stderr (Python tracebacks, aiosmtpd warnings).
    pub fn log(&self) -> String {
        self.child.stderr_text()
    }

    fn status_note(&self) -> String {
        match self.child.check_alive() {
            Ok(()) => String::new(),
            Err(e) => format!(" (the receiver died: {e})"),
        }
    }
}

/// Writes a self-signed certificate for `mx.tls.test` (SAN DNS:mx.tls.test,
/// IP:127.0.0.1, valid 2 days, RSA 2048, a server certificate with CA:FALSE) and
/// its unencrypted key to `dir` with the `openssl` CLI; returns `(cert.pem,
/// key.pem)`. Clients trust it by adding `cert.pem` as a root.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    self_signed_cert_for(dir, "mx.tls.test", &["mx.tls.test"], &[Ipv4Addr::LOCALHOST])
}

/// Like [`self_signed_cert`] with a chosen subject CN and SAN DNS names / IPs. Files
/// are named `<cn>.crt.pem` and `<cn>.key.pem`. Panics if openssl fails.
pub fn self_signed_cert_for(
    dir: &Path,
    cn: &str,
    dns: &[&str],
    ips: &[Ipv4Addr],
) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{cn}.crt.pem"));
    let key = dir.join(format!("{cn}.key.pem"));
    let san: Vec<String> = dns
        .iter()
        .map(|d| format!("DNS:{d}"))
        .chain(ips.iter().map(|ip| format!("IP:{ip}")))
        .collect();
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-sha256",
    ])
    .arg("-subj")
    .arg(format!("/CN={cn}"))
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    if !san.is_empty() {
        cmd.arg("-addext")
            .arg(format!("subjectAltName={}", san.join(",")));
    }
    // A server certificate, not a CA: verifiers (webpki) refuse a CA certificate
    // as the end entity, and clients still trust it when it is given as a root.
    cmd.args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args([
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment",
        ])
        .args(["-addext", "extendedKeyUsage=serverAuth"]);
    let out = run_bounded(&mut cmd, b"", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("openssl req: {e}"));
    assert!(
        out.status.success(),
        "openssl req failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
