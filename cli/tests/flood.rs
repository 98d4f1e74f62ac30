//! The listener under bounded floods, as an outsider would send them: the
//! daemon's peak resident memory (`VmHWM`) stays under what its limits allow.
//!
//! - AUTH: 100 TLS sessions at once, from 100 loopback addresses and 100 user
//!   names (so the cross-connection throttle does not slow them down), each with
//!   a wrong password, sent by swaks. Every check is a real argon2id (~19 MiB);
//!   `[server] max_auth_checks = 2` holds them to two at once.
//! - DATA: 40 sessions at once, each sending a 20 MiB message without `SIZE=`,
//!   against `[server] max_buffered_bytes = 128 MiB`: those that do not fit get
//!   `452 4.3.1`, the others `250`, and each of those is in the queue.
//!
//! Skipped (with a message) when swaks is missing: `scripts/test.sh` installs it.

mod common;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{stdout, volley_run, volley_with, volley_with_input};
use support::port::{free_port, wait_bound};
use support::process::{run_bounded, ChildGuard};
use support::scripted::self_signed_cert;

const MIB: u64 = 1 << 20;

/// The peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kib * 1024
}

/// A running `volley run` with one submission listener (STARTTLS offered, a
/// user `alice`), everything else routed to a closed port.
struct Daemon {
    dir: tempfile::TempDir,
    listen: SocketAddrV4,
    child: ChildGuard,
}

impl Daemon {
    fn start(server: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed_cert(dir.path());
        let config = dir.path().join("volley.toml");
        std::fs::write(&config, "").unwrap();
        let hashed = volley_with_input(&config, &["hash-password"], b"secret\n");
        assert!(hashed.status.success());
        let hashed = stdout(&hashed).trim().to_owned();
        let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST));
        std::fs::write(
            &config,
            format!(
                "[control]\nlisten = \"\"\n[spool]\ndir = \"{spool}\"\n[delivery]\nlog = \"{log}\"\n\
                 [retry]\nintervals = [\"1h\"]\n\
                 [server]\nhostname = \"flood.test\"\ntls_cert_file = \"{cert}\"\ntls_key_file = \"{key}\"\n\
                 max_connections = 1000\nmax_connections_per_ip = 200\n{server}\n\
                 [relay]\nnetworks = [\"127.0.0.1/32\"]\n\
                 [[route]]\ndomain = \"*\"\nvia = \"127.0.0.1:9\"\n\
                 [[listen]]\naddress = \"{listen}\"\nrole = \"submission\"\n\
                 [[user]]\nname = \"alice\"\npassword_hash = \"{hashed}\"\n",
                spool = dir.path().join("spool").display(),
                log = dir.path().join("delivery.jsonl").display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .unwrap();
        let child =
            ChildGuard::spawn("volley", volley_run(config.to_str().unwrap()), dir.path()).unwrap();
        wait_bound(listen, Duration::from_secs(30), || child.check_alive())
            .unwrap_or_else(|e| panic!("{e}\n{}", child.stderr_text()));
        Daemon { dir, listen, child }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("volley.toml")
    }
}

fn have_swaks() -> bool {
    let found = Command::new("swaks")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIP: swaks not installed (scripts/test.sh installs it)");
    }
    found
}

#[test]
fn an_auth_flood_holds_memory_to_the_concurrent_checks() {
    if !have_swaks() {
        return;
    }
    let checks = 2u64;
    let daemon = Daemon::start(&format!(
        "max_auth_checks = {checks}\nmax_auth_failures = 1000"
    ));
    let idle = peak_rss(daemon.child.id());
    let port = daemon.listen.port().to_string();
    let sessions: Vec<_> = (0..100u32)
        .map(|i| {
            let source = format!("127.0.{}.{}", 1 + i / 200, 10 + i % 200);
            let user = format!("user{i}");
            let port = port.clone();
            std::thread::spawn(move || {
                let mut cmd = Command::new("swaks");
                cmd.args(["--server", "127.0.0.1", "--port", &port])
                    .args(["--local-interface", &source])
                    .args(["--helo", "flood.test", "--tls", "--quit-after", "AUTH"])
                    .args(["--auth", "PLAIN", "--auth-user", &user])
                    .args(["--auth-password", "wrong-password", "--timeout", "120"]);
                let out = run_bounded(&mut cmd, b"", Duration::from_secs(180))
                    .unwrap_or_else(|e| panic!("{e}"));
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        })
        .collect();
    let mut refused = 0;
    for s in sessions {
        let transcript = s.join().unwrap();
        if transcript.contains("<~* 535 5.7.8") || transcript.contains("<~  535 5.7.8") {
            refused += 1;
        } else {
            panic!("expected 535 5.7.8:\n{transcript}");
        }
    }
    assert_eq!(refused, 100);
    let peak = peak_rss(daemon.child.id());
    // Two argon2id checks of 19 MiB at once, plus 100 TLS sessions' buffers:
    // unbounded, the 100 checks would take ~1.9 GB.
    let ceiling = idle + checks * 20 * MIB + 64 * MIB;
    eprintln!(
        "idle {} MiB, peak {} MiB, ceiling {} MiB",
        idle / MIB,
        peak / MIB,
        ceiling / MIB
    );
    assert!(
        peak <= ceiling,
        "peak RSS {} MiB over {} MiB",
        peak / MIB,
        ceiling / MIB
    );
}

/// Sends one message of `mib` MiB (no `SIZE=`); answers the final reply code.
fn send_big(addr: SocketAddr, mib: usize) -> u16 {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = || -> u16 {
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
        }
    };
    assert_eq!(reply(), 220);
    writer.write_all(b"EHLO flood.test\r\n").unwrap();
    assert_eq!(reply(), 250);
    writer
        .write_all(b"MAIL FROM:<a@flood.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\n")
        .unwrap();
    assert_eq!(reply(), 250);
    assert_eq!(reply(), 250);
    let code = reply();
    if code != 354 {
        return code;
    }
    let line = [b'x'; 78];
    let mut chunk = Vec::with_capacity(1 << 16);
    writer.write_all(b"Subject: flood\r\n\r\n").unwrap();
    for _ in 0..(mib << 20) / 80 {
        chunk.extend_from_slice(&line);
        chunk.extend_from_slice(b"\r\n");
        if chunk.len() >= 1 << 16 {
            writer.write_all(&chunk).unwrap();
            chunk.clear();
        }
    }
    chunk.extend_from_slice(b".\r\n");
    writer.write_all(&chunk).unwrap();
    let code = reply();
    let _ = writer.write_all(b"QUIT\r\n");
    code
}

#[test]
fn a_data_flood_holds_memory_to_the_content_budget() {
    let budget = 128 * MIB;
    let daemon = Daemon::start(&format!(
        "max_message_size = {}\nmax_buffered_bytes = {budget}",
        24 * MIB
    ));
    let idle = peak_rss(daemon.child.id());
    let addr = SocketAddr::V4(daemon.listen);
    let sessions: Vec<_> = (0..40)
        .map(|_| std::thread::spawn(move || send_big(addr, 20)))
        .collect();
    let codes: Vec<u16> = sessions.into_iter().map(|s| s.join().unwrap()).collect();
    let peak = peak_rss(daemon.child.id());
    let accepted = codes.iter().filter(|&&c| c == 250).count();
    assert!(
        codes.iter().all(|&c| c == 250 || c == 452),
        "only 250 or 452: {codes:?}"
    );
    assert!(accepted >= 5, "five fit the budget at once: {codes:?}");
    // What got 250 is queued, whole.
    let summary = volley_with(&daemon.config(), &["queue", "summary", "--json"]);
    let text = stdout(&summary);
    let last = text.lines().last().unwrap_or_default();
    let json: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {text}"));
    let queued: u64 = json["total"]
        .as_object()
        .unwrap_or_else(|| panic!("no total: {text}"))
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(queued, accepted as u64, "{text}");
    // Unbounded, 40 × 20 MiB would be ~800 MiB held at once.
    let ceiling = idle + budget + 64 * MIB;
    eprintln!(
        "{accepted} accepted; idle {} MiB, peak {} MiB, ceiling {} MiB",
        idle / MIB,
        peak / MIB,
        ceiling / MIB
    );
    assert!(
        peak <= ceiling,
        "peak RSS {} MiB over {} MiB",
        peak / MIB,
        ceiling / MIB
    );
}
