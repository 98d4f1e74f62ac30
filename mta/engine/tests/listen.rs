//! End-to-end tests of the SMTP listener against real clients: `swaks` (plain,
//! PIPELINING, STARTTLS with AUTH, implicit TLS) and raw sockets for what no polite
//! client does (connection floods, silence, smuggling, pipelining past STARTTLS).
//!
//! Each test starts the listener in-process on 127.0.0.1 (port 0: the kernel
//! picks a free port, so no race) with a recording [`Deposit`], and a self-signed
//! certificate made with `openssl`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use volley_conf::Config;
use volley_engine::listen::{Deposit, DepositError, Server};
use volley_smtp::server::Envelope;

use support::process::run_bounded;
use support::scripted::self_signed_cert;

/// Records deposited messages; fails every deposit while `fail` is set.
#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<(Envelope, Vec<u8>)>>,
    fail: AtomicBool,
}

impl Deposit for Recorder {
    fn deposit(&self, envelope: &Envelope, message: &[u8]) -> Result<String, DepositError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(DepositError::Failed("disk full (test)".into()));
        }
        let mut messages = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        messages.push((envelope.clone(), message.to_vec()));
        Ok(format!("T{}", messages.len()))
    }
}

impl Recorder {
    fn messages(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running listener; shut down (gracefully) on drop.
struct Harness {
    rt: tokio::runtime::Runtime,
    addrs: Vec<SocketAddr>,
    recorder: Arc<Recorder>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// A cheap argon2id hash (8 KiB, 1 pass): the real cost is not under test.
fn cheap_hash(password: &str) -> String {
    let params = Params::new(8, 1, 1, None).expect("argon2 params");
    let salt = SaltString::encode_b64(b"listen-test-salt").expect("salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

/// Starts a listener. `listen` is `[[listen]]` entries with `ADDR` for the
/// address; `server` and `relay` are extra keys of those sections.
fn start(listen: &str, server: &str, relay: &str) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed_cert(dir.path());
    let text = format!(
        "[server]\nhostname = \"mx.listen.test\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\
         {server}\n[relay]\ndomains = [\"acme.test\"]\n{relay}\n\
         [[user]]\nname = \"alice\"\npassword_hash = \"{}\"\n{}",
        cert.display(),
        key.display(),
        cheap_hash("secret"),
        listen.replace("ADDR", "127.0.0.1:0"),
    );
    let config = Config::parse(&text, Path::new("listen-test.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let recorder = Arc::new(Recorder::default());
    let server = rt
        .block_on(Server::bind(
            &config,
            &["bounces.volley.test".to_owned()],
            recorder.clone(),
        ))
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addrs = server.local_addrs();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = rt.spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Harness {
        rt,
        addrs,
        recorder,
        stop: Some(stop),
        done: Some(done),
        _dir: dir,
    }
}

const SUBMISSION: &str = "[[listen]]\naddress = \"ADDR\"\nrole = \"submission\"\n";
const INBOUND: &str = "[[listen]]\naddress = \"ADDR\"\nrole = \"inbound\"\n";

impl Harness {
    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Stops the server and waits (bounded) until `run` returned.
    fn shutdown(&mut self) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.done.take() {
            Some(done) => self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), done).await })
                .is_ok(),
            None => true,
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs swaks against `addr`; returns (exit success, transcript).
fn swaks(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        &addr.ip().to_string(),
        "--port",
        &addr.port().to_string(),
    ])
    .args(["--helo", "client.test", "--from", "sender@example.test"])
    .args(["--timeout", "20"])
    .args(args);
    let out = run_bounded(&mut cmd, b"", Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A raw client with a deadline on every read.
struct Raw {
    stream: TcpStream,
    seen: Vec<u8>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Raw {
            stream,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads until `pattern` has been seen (returns everything seen so far) or
    /// `deadline` passes (panics), or the server closes (returns what was seen).
    fn expect(&mut self, pattern: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            if text.contains(pattern) {
                return text;
            }
            assert!(
                Instant::now() < end,
                "no {pattern:?} within {deadline:?}; got {text:?}"
            );
            match self.stream.read(&mut buf) {
                Ok(0) => return text,
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return text,
            }
        }
    }

    /// Reads until the server closes the connection (bounded); returns all seen.
    fn until_closed(&mut self, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            match self.stream.read(&mut buf) {
                Ok(0) => return String::from_utf8_lossy(&self.seen).into_owned(),
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return String::from_utf8_lossy(&self.seen).into_owned(),
            }
        }
        panic!(
            "still open after {deadline:?}: {:?}",
            String::from_utf8_lossy(&self.seen)
        );
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// Splits a deposited message into its Received: header and the rest.
fn split_received(message: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(message);
    let end = text.find(" +0000\r\n").expect("Received: date") + 8;
    (text[..end].to_owned(), message[end..].to_vec())
}

#[test]
fn plain_message_is_deposited_byte_for_byte() {
    let h = start(SUBMISSION, "", "");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data.eml");
    // Already dot-stuffed and terminated: swaks sends it as is (--no-data-fixup).
    std::fs::write(
        &data,
        b"Subject: t\r\nFrom: <sender@example.test>\r\n\r\n..dot line\r\nbody\r\n.\r\n",
    )
    .expect("write data");
    let (ok, out) = swaks(
        h.addr(),
        &[
            "--to",
            "u@acme.test",
            "--data",
            &format!("@{}", data.display()),
            "--no-data-fixup",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("250 2.0.0 Ok: queued as T1"), "{out}");
    let messages = h.recorder.messages();
    assert_eq!(messages.len(), 1, "{out}");
    let (envelope, message) = &messages[0];
    assert_eq!(envelope.mail_from, "sender@example.test");
    assert_eq!(envelope.rcpt_to, ["u@acme.test"]);
    assert_eq!(envelope.helo, "client.test");
    assert!(!envelope.tls);
    assert_eq!(envelope.user, None);
    let (received, rest) = split_received(message);
    assert!(
        received.starts_with(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.listen.test (volley) with ESMTP\r\n\
             \tfor <u@acme.test>; "
        ),
        "{received}"
    );
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "Subject: t\r\nFrom: <sender@example.test>\r\n\r\n.dot line\r\nbody\r\n"
    );
}

#[test]
fn pipelined_transaction_with_two_recipients() {
    let h = start(SUBMISSION, "", "");
    let (ok, out) = swaks(
        h.addr(),
        &[
            "--pipeline",
            "--to",
            "a@acme.test,b@remote.test",
            "--body",
            "hello",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("PIPELINING"), "{out}");
    let messages = h.recorder.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0.rcpt_to, ["a@acme.test", "b@remote.test"]);
    assert!(String::from_utf8_lossy(&messages[0].1).contains("\r\n\r\nhello\r\n"));
}

#[test]
fn relay_denied_from_an_untrusted_network() {
    // networks = [] trusts nobody, not even loopback.
    let h = start(SUBMISSION, "", "networks = []");
    let (ok, out) = swaks(h.addr(), &["--to", "someone@remote.test"]);
    assert!(!ok, "{out}");
    assert!(out.contains("550 5.7.1 Relaying denied"), "{out}");
    assert!(h.recorder.messages().is_empty());
    // Local domains (configured and the caller's own) are still accepted.
    let (ok, out) = swaks(h.addr(), &["--to", "u@ACME.test"]);
    assert!(ok, "{out}");
    let (ok, out) = swaks(h.addr(), &["--to", "b+123@bounces.volley.test"]);
    assert!(ok, "{out}");
    assert_eq!(h.recorder.messages().len(), 2);
}

#[test]
fn inbound_listener_never_relays() {
    let h = start(
        "[[listen]]\naddress = \"ADDR\"\nrole = \"inbound\"\n",
        "",
        "networks = [\"127.0.0.0/8\"]",
    );
    let (ok, out) = swaks(h.addr(), &["--to", "someone@remote.test"]);
    assert!(!ok, "{out}");
    assert!(out.contains("550 5.7.1"), "{out}");
    // No AUTH offered on an inbound listener, even over TLS.
    let (ok, out) = swaks(h.addr(), &["-tls", "--to", "u@acme.test"]);
    assert!(ok, "{out}");
    assert!(!out.contains("AUTH PLAIN"), "{out}");
}

#[test]
fn auth_plain_over_starttls_allows_relaying() {
    let h = start(SUBMISSION, "", "networks = []");
    let (ok, out) = swaks(
        h.addr(),
        &[
            "-tls",
            "-a",
            "PLAIN",
            "-au",
            "alice",
            "-ap",
            "secret",
            "--to",
            "x@remote.test",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("235 2.7.0"), "{out}");
    let messages = h.recorder.messages();
    assert_eq!(messages.len(), 1);
    let envelope = &messages[0].0;
    assert_eq!(envelope.user.as_deref(), Some("alice"));
    assert!(envelope.tls);
    assert!(
        String::from_utf8_lossy(&messages[0].1).contains("with ESMTPSA"),
        "{:?}",
        split_received(&messages[0].1).0
    );
    // AUTH LOGIN too.
    let (ok, out) = swaks(
        h.addr(),
        &[
            "-tls",
            "-a",
            "LOGIN",
            "-au",
            "alice",
            "-ap",
            "secret",
            "--to",
            "x@remote.test",
        ],
    );
    assert!(ok, "{out}");
}

#[test]
fn wrong_password_is_535() {
    let h = start(SUBMISSION, "", "networks = []");
    let (ok, out) = swaks(
        h.addr(),
        &[
            "-tls",
            "-a",
            "PLAIN",
            "-au",
            "alice",
            "-ap",
            "wrong",
            "--to",
            "x@remote.test",
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("535 5.7.8"), "{out}");
    assert!(h.recorder.messages().is_empty());
}

#[test]
fn auth_before_tls_is_refused() {
    let h = start(SUBMISSION, "", "networks = []");
    let mut raw = Raw::connect(h.addr());
    raw.expect("220 mx.listen.test ESMTP volley\r\n", WAIT);
    raw.send(b"EHLO c.test\r\n");
    let ehlo = raw.expect("250 STARTTLS\r\n", WAIT);
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    // "\0alice\0secret"
    raw.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    raw.expect(
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n",
        WAIT,
    );
}

#[test]
fn starttls_drops_commands_pipelined_behind_it() {
    let h = start(SUBMISSION, "", "");
    let mut raw = Raw::connect(h.addr());
    raw.expect("220 mx.listen.test", WAIT);
    raw.send(b"EHLO c.test\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\n");
    raw.expect("220 2.0.0 Ready to start TLS\r\n", WAIT);
    // More plaintext: not a TLS ClientHello, so the handshake fails.
    raw.send(b"NOOP\r\n");
    let text = raw.until_closed(WAIT);
    assert!(text.contains("220 2.0.0 Ready to start TLS\r\n"), "{text}");
    // The injected MAIL was never answered (then our plaintext is no TLS
    // handshake, and the server hangs up).
    assert!(!text.contains("2.1.0"), "{text}");
}

#[test]
fn message_too_big_is_552() {
    let h = start(SUBMISSION, "max_message_size = 1024", "");
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "0123456789\n".repeat(200)).expect("write body");
    let body = format!("@{}", body.display());
    let (ok, out) = swaks(h.addr(), &["--to", "u@acme.test", "--body", &body]);
    assert!(!ok, "{out}");
    assert!(out.contains("552 5.3.4"), "{out}");
    assert!(h.recorder.messages().is_empty());
}

#[test]
fn too_many_recipients_is_452() {
    let h = start(SUBMISSION, "max_recipients = 2", "");
    let (_, out) = swaks(
        h.addr(),
        &["--to", "a@acme.test,b@acme.test,c@acme.test", "--body", "x"],
    );
    assert!(out.contains("452 4.5.3 Too many recipients"), "{out}");
    // swaks goes on with the accepted ones: one message, two recipients.
    let messages = h.recorder.messages();
    assert_eq!(messages.len(), 1, "{out}");
    assert_eq!(messages[0].0.rcpt_to, ["a@acme.test", "b@acme.test"]);
}

#[test]
fn per_ip_connection_limit_is_421_at_greeting() {
    let h = start(SUBMISSION, "max_connections_per_ip = 2", "");
    let mut first = Raw::connect(h.addr());
    first.expect("220 ", WAIT);
    let mut second = Raw::connect(h.addr());
    second.expect("220 ", WAIT);
    let mut third = Raw::connect(h.addr());
    let text = third.until_closed(WAIT);
    assert_eq!(
        text,
        "421 4.7.0 mx.listen.test Too many connections, try again later\r\n"
    );
    // A slot frees when a connection ends.
    first.send(b"QUIT\r\n");
    first.until_closed(WAIT);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = Raw::connect(h.addr());
        let text = again.expect("\r\n", WAIT);
        if text.starts_with("220 ") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_client_gets_421_timeout() {
    let h = start(SUBMISSION, "idle_timeout = \"300ms\"", "");
    let mut raw = Raw::connect(h.addr());
    raw.expect("220 ", WAIT);
    let started = Instant::now();
    raw.send(b"EHLO c.test\r\n");
    raw.expect("250 STARTTLS\r\n", WAIT);
    let text = raw.until_closed(WAIT);
    assert!(
        text.ends_with("421 4.4.2 mx.listen.test Timeout, closing connection\r\n"),
        "{text}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn smuggled_second_transaction_never_runs() {
    for variant in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n"] {
        let h = start(SUBMISSION, "", "");
        let mut raw = Raw::connect(h.addr());
        raw.expect("220 ", WAIT);
        raw.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
        raw.expect("354 ", WAIT);
        let smuggled = format!(
            "Subject: hi\r\n\r\nhello{variant}MAIL FROM:<evil@x.test>\r\n\
             RCPT TO:<victim@acme.test>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n"
        );
        raw.send(smuggled.as_bytes());
        let text = raw.until_closed(WAIT);
        assert!(
            text.contains("550 5.6.0 Message refused: bare CR or LF"),
            "{variant:?}: {text}"
        );
        assert_eq!(text.matches("250 2.1.0").count(), 1, "{variant:?}: {text}");
        assert_eq!(text.matches("354 ").count(), 1, "{variant:?}: {text}");
        assert!(
            text.ends_with("221 2.0.0 mx.listen.test closing connection\r\n"),
            "{text}"
        );
        assert!(h.recorder.messages().is_empty(), "{variant:?}");
    }
}

#[test]
fn implicit_tls_listener() {
    let h = start(
        "[[listen]]\naddress = \"ADDR\"\nrole = \"submission\"\ntls = \"implicit\"\n",
        "",
        "networks = []",
    );
    let (ok, out) = swaks(
        h.addr(),
        &[
            "--tlsc",
            "-a",
            "PLAIN",
            "-au",
            "alice",
            "-ap",
            "secret",
            "--to",
            "x@remote.test",
        ],
    );
    assert!(ok, "{out}");
    let messages = h.recorder.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].0.tls);
    assert_eq!(messages[0].0.user.as_deref(), Some("alice"));
}

#[test]
fn deposit_failure_is_451() {
    let h = start(SUBMISSION, "", "");
    h.recorder.fail.store(true, Ordering::SeqCst);
    let (ok, out) = swaks(h.addr(), &["--to", "u@acme.test"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("451 4.3.0 Temporary failure storing the message, try again later"),
        "{out}"
    );
}

#[test]
fn shutdown_tells_open_sessions_and_returns() {
    // An address of its own: on the shared 127.0.0.1 another test running in
    // parallel may bind the port this listener freed, and the probe below
    // would reach that listener instead.
    let mut h = start(&SUBMISSION.replace("ADDR", "127.0.0.36:0"), "", "");
    let mut raw = Raw::connect(h.addr());
    raw.expect("220 ", WAIT);
    raw.send(b"EHLO c.test\r\n");
    raw.expect("250 STARTTLS\r\n", WAIT);
    assert!(h.shutdown(), "run did not return");
    let text = raw.until_closed(WAIT);
    assert!(
        text.ends_with("421 4.3.2 mx.listen.test Service shutting down\r\n"),
        "{text}"
    );
    assert!(TcpStream::connect_timeout(&h.addr(), Duration::from_secs(1)).is_err());
}

#[test]
fn nul_before_the_end_of_data_refuses_the_message_over_data_and_bdat() {
    for listen in [SUBMISSION, INBOUND] {
        let h = start(listen, "", "");
        let mut raw = Raw::connect(h.addr());
        raw.expect("220 ", WAIT);
        raw.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
        raw.expect("354 ", WAIT);
        raw.send(
            b"Subject: hi\r\n\r\nfirst\r\n\x00.\r\nMAIL FROM:<smuggled@x.test>\r\n\
              RCPT TO:<victim@acme.test>\r\nDATA\r\nsecond\r\n.\r\n",
        );
        raw.expect(
            "550 5.6.0 Message refused: NUL in message content\r\n",
            WAIT,
        );
        raw.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nBDAT 8 LAST\r\nab\x00.\r\ncd");
        let text = raw.expect("Message refused: NUL in message content\r\n250", WAIT);
        assert_eq!(text.matches("NUL in message content").count(), 2, "{text}");
        raw.send(b"QUIT\r\n");
        raw.until_closed(WAIT);
        assert!(h.recorder.messages().is_empty(), "{listen}");
    }
}

#[test]
fn a_bare_lf_never_ends_a_command_line() {
    for listen in [SUBMISSION, INBOUND] {
        let h = start(listen, "", "");
        let mut raw = Raw::connect(h.addr());
        raw.expect("220 ", WAIT);
        raw.send(b"EHLO a.test\nNOOP\r\n");
        raw.expect(
            "500 5.5.2 Syntax error: control character in command\r\n",
            WAIT,
        );
        raw.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\nRCPT TO:<v@acme.test>\r\nDATA\r\n");
        let text = raw.expect("554 5.5.1", WAIT);
        assert_eq!(text.matches("250 2.1.5").count(), 0, "{text}");
        // A whole dialogue in bare LFs never gets a 354.
        let mut lf = Raw::connect(h.addr());
        lf.expect("220 ", WAIT);
        lf.send(b"EHLO a.test\nMAIL FROM:<a@b.test>\nRCPT TO:<u@acme.test>\nDATA\nhi\n.\nQUIT\n");
        lf.send(b"\r\nQUIT\r\n");
        let text = lf.until_closed(WAIT);
        assert!(!text.contains("354"), "{text}");
        assert!(h.recorder.messages().is_empty(), "{listen}");
    }
}

#[test]
fn failed_auth_across_connections_locks_the_address_and_the_name() {
    let h = start(SUBMISSION, "max_auth_failures = 3\n", "networks = []");
    let auth = |user: &str, password: &str| {
        swaks(
            h.addr(),
            &[
                "-tls",
                "-a",
                "PLAIN",
                "-au",
                user,
                "-ap",
                password,
                "--to",
                "x@remote.test",
            ],
        )
    };
    for _ in 0..3 {
        let (ok, out) = auth("alice", "wrong");
        assert!(!ok && out.contains("535 5.7.8"), "{out}");
    }
    // Locked now: even the right password gets a temporary refusal, unchecked.
    let (ok, out) = auth("alice", "secret");
    assert!(!ok, "{out}");
    assert!(
        out.contains("454 4.7.0 Too many failed authentications"),
        "{out}"
    );
    // So does another name from the same address.
    let (_, out) = auth("bob", "whatever");
    assert!(out.contains("454 4.7.0"), "{out}");
    assert!(h.recorder.messages().is_empty());
}

#[test]
fn messages_in_transit_share_one_memory_budget() {
    let h = start(
        SUBMISSION,
        "max_message_size = 1048576\nmax_buffered_bytes = 1048576\n",
        "networks = [\"127.0.0.0/8\"]",
    );
    let mut a = Raw::connect(h.addr());
    let mut b = Raw::connect(h.addr());
    for raw in [&mut a, &mut b] {
        raw.expect("220 ", WAIT);
        raw.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\n");
        raw.expect("250 2.1.5", WAIT);
    }
    a.send(b"DATA\r\n");
    a.expect("354 ", WAIT);
    // The budget is held by a's message: b waits with a temporary refusal.
    b.send(b"DATA\r\n");
    b.expect("452 4.3.1 Insufficient system storage", WAIT);
    a.send(b"Subject: x\r\n\r\nhello\r\n.\r\n");
    a.expect("250 2.0.0 Ok: queued", WAIT);
    // Given back: b's retry goes through.
    b.send(b"DATA\r\n");
    b.expect("354 ", WAIT);
    b.send(b"Subject: y\r\n\r\nagain\r\n.\r\n");
    b.expect("250 2.0.0 Ok: queued", WAIT);
    assert_eq!(h.recorder.messages().len(), 2);
}
