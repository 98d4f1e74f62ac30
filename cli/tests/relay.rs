//! The relay path under load, end to end: `volley run`'s submission listener
//! takes mail from 20 concurrent sessions into shared relay batches committed
//! in groups, and relays it to a real smtp-sink.
//!
//! - `kill -9` while 20 sessions inject: after a restart, every message that got
//!   a `250` arrives, none arrives that did not get one (beyond the messages
//!   whose commit was done when the kill came: at most one per session), and
//!   none twice beyond the recipients in flight that the restart reports.
//! - A 30 MB message, a message over the group's byte budget, and a session
//!   stalled in the middle of its data do not hold back smtp-source's 2,000
//!   messages: those are all acknowledged and delivered while the stalled
//!   session still waits, and the large ones are committed in batches of
//!   their own.
//!
//! The injecting client of the first test is the test itself (20 threads, plain
//! SMTP over TCP), because the assertion needs to know which message got a
//! `250`; the second uses Postfix's smtp-source.

mod common;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::volley_run;
use support::port::{free_port, poll, wait_bound};
use support::process::{run_bounded, ChildGuard};
use support::smtp_sink::{SinkOptions, SmtpSink};

struct Setup {
    dir: tempfile::TempDir,
    listen: SocketAddrV4,
}

impl Setup {
    fn new(listen_ip: u8, route: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ip = Ipv4Addr::new(127, 0, 0, listen_ip);
        let listen = SocketAddrV4::new(ip, free_port(ip));
        let config = format!(
            "[control]\nlisten = \"\"\n[spool]\ndir = \"{spool}\"\n\
             [queue]\ngroup_window = \"2ms\"\n{extra}\
             [delivery]\nhelo_name = \"volley.test\"\nlog = \"{log}\"\n\
             [retry]\nintervals = [\"1s\"]\n[[route]]\ndomain = \"*\"\nvia = \"{route}\"\n\
             [server]\nhostname = \"mx.volley.test\"\nmax_connections_per_ip = 100\n\
             max_message_size = 41943040\n\
             [[listen]]\naddress = \"{listen}\"\nrole = \"submission\"\ntls = \"none\"\n",
            spool = dir.path().join("spool").display(),
            log = dir.path().join("delivery.jsonl").display(),
        );
        std::fs::write(dir.path().join("volley.toml"), config).unwrap();
        Setup { dir, listen }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn daemon(&self, name: &str) -> ChildGuard {
        let cmd = volley_run(&self.path("volley.toml").display().to_string());
        let child = ChildGuard::spawn(name, cmd, self.dir.path()).unwrap();
        wait_bound(self.listen, Duration::from_secs(20), || child.check_alive())
            .unwrap_or_else(|e| panic!("volley run did not listen: {e}"));
        child
    }

    /// Files in the spool's `open/` and `active/`.
    fn queued_files(&self) -> usize {
        ["open", "active"]
            .iter()
            .map(|d| {
                std::fs::read_dir(self.path("spool").join(d))
                    .map(|r| r.count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// The Subject of each message the sink got, with how often.
fn subjects(sink: &SmtpSink) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for body in sink.message_bodies() {
        let text = String::from_utf8_lossy(&body).into_owned();
        if let Some(s) = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .map(str::to_owned)
        {
            *out.entry(s).or_insert(0) += 1;
        }
    }
    out
}

fn reply(reader: &mut BufReader<TcpStream>) -> Option<u16> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.len() < 4 {
            return None;
        }
        if line.as_bytes()[3] == b' ' {
            return line[..3].parse().ok();
        }
    }
}

/// What one injecting session did: the subjects it finished sending (the
/// final dot written) and those acknowledged with 250.
#[derive(Default)]
struct Injected {
    sent: Vec<String>,
    acked: Vec<String>,
}

/// One SMTP session sending up to `max` messages "m-T-I" until the connection
/// fails or `stop` is set.
fn inject(addr: SocketAddrV4, t: usize, max: usize, stop: &AtomicBool, out: &Mutex<Injected>) {
    let Ok(stream) = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(stream);
    if reply(&mut r) != Some(220) || w.write_all(b"EHLO client.test\r\n").is_err() {
        return;
    }
    if reply(&mut r) != Some(250) {
        return;
    }
    for i in 0..max {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let subject = format!("m-{t}-{i}");
        let steps = [
            (b"MAIL FROM:<app@src.test>\r\n".to_vec(), 250),
            (format!("RCPT TO:<r{t}@x.test>\r\n").into_bytes(), 250),
            (b"DATA\r\n".to_vec(), 354),
        ];
        for (cmd, want) in steps {
            if w.write_all(&cmd).is_err() || reply(&mut r) != Some(want) {
                return;
            }
        }
        let body = format!(
            "From: app@src.test\r\nTo: r{t}@x.test\r\nSubject: {subject}\r\n\r\n{}\r\n.\r\n",
            "line of body text\r\n".repeat(40)
        );
        if w.write_all(body.as_bytes()).is_err() {
            return;
        }
        out.lock().unwrap().sent.push(subject.clone());
        match reply(&mut r) {
            Some(250) => out.lock().unwrap().acked.push(subject),
            _ => return,
        }
    }
}

fn resent_after_crash(stderr: &str) -> usize {
    stderr
        .lines()
        .filter_map(|l| {
            let at = l.find(" resent after a crash")?;
            let head = &l[..at];
            head.rsplit(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<usize>().ok())
        })
        .sum()
}

#[test]
fn kill_9_while_20_sessions_inject_loses_no_acknowledged_message() {
    let sink = SmtpSink::start(Ipv4Addr::new(127, 0, 0, 121), SinkOptions::plain());
    let s = Setup::new(122, &sink.addr().to_string(), "");
    let daemon = s.daemon("volley-run");
    let stop = AtomicBool::new(false);
    let injected = Mutex::new(Injected::default());
    std::thread::scope(|scope| {
        for t in 0..20 {
            let (stop, injected, addr) = (&stop, &injected, s.listen);
            scope.spawn(move || inject(addr, t, 400, stop, injected));
        }
        // Kill -9 once a good number of messages were acknowledged, with the
        // sessions still sending.
        let enough = poll(Duration::from_secs(120), || {
            (injected.lock().unwrap().acked.len() >= 600).then_some(())
        });
        drop(daemon);
        stop.store(true, Ordering::Relaxed);
        assert!(
            enough.is_some(),
            "600 messages were not acknowledged within 120 s"
        );
    });
    let Injected { sent, acked } = std::mem::take(&mut *injected.lock().unwrap());
    assert!(acked.len() < 20 * 400, "the kill came after the end");
    let sent: HashSet<String> = sent.into_iter().collect();
    let acked: HashSet<String> = acked.into_iter().collect();

    // A restart finishes what the kill left (open batches sealed with their
    // acknowledged messages) and delivers it.
    let again = s.daemon("volley-run-2");
    let done = poll(Duration::from_secs(120), || {
        let got = subjects(&sink);
        (acked.iter().all(|a| got.contains_key(a)) && s.queued_files() == 0).then_some(got)
    });
    let got = done.unwrap_or_else(|| {
        let got = subjects(&sink);
        let missing: Vec<&String> = acked.iter().filter(|a| !got.contains_key(*a)).take(10).collect();
        panic!(
            "acknowledged messages not delivered (first: {missing:?}) or spool not empty ({} files); stderr:\n{}",
            s.queued_files(),
            again.stderr_text()
        )
    });
    drop(again);
    let stderr = std::fs::read_to_string(s.path("volley-run-2.stderr")).unwrap_or_default();
    // Nothing arrives that was not sent whole; of what was sent but not
    // acknowledged, only messages whose commit was done when the kill came
    // (one per session at most) may arrive.
    for subject in got.keys() {
        assert!(
            sent.contains(subject),
            "{subject} arrived but was never sent whole"
        );
    }
    let unacked_delivered = got.keys().filter(|k| !acked.contains(*k)).count();
    assert!(
        unacked_delivered <= 20,
        "{unacked_delivered} messages arrived that got no 250"
    );
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    let resent = resent_after_crash(&stderr);
    assert!(
        duplicates <= resent,
        "{duplicates} duplicates, but only {resent} recipients were in flight at the kill"
    );
    eprintln!(
        "acknowledged {}, sent {}, delivered {} distinct, {unacked_delivered} unacknowledged delivered, {duplicates} duplicates ({resent} in flight at the kill)",
        acked.len(),
        sent.len(),
        got.len()
    );
}

/// A session from `NAME@src.test` to `NAME@x.test` up to the `354` of its
/// DATA (each reply checked); returns the connection's two halves.
fn begin_data(addr: SocketAddrV4, name: &str) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    assert_eq!(reply(&mut r), Some(220));
    for (cmd, want) in [
        (format!("EHLO {name}.test\r\n"), 250),
        (format!("MAIL FROM:<{name}@src.test>\r\n"), 250),
        (format!("RCPT TO:<{name}@x.test>\r\n"), 250),
        ("DATA\r\n".to_owned(), 354),
    ] {
        w.write_all(cmd.as_bytes()).unwrap();
        assert_eq!(reply(&mut r), Some(want), "{cmd}");
    }
    (w, r)
}

/// Sends `DATA` and a few lines of content, then nothing: a session stalled
/// in the middle of its message. Returns the open connection.
fn stalled_session(addr: SocketAddrV4) -> (TcpStream, BufReader<TcpStream>) {
    let (mut w, r) = begin_data(addr, "stall");
    w.write_all(b"Subject: stalled\r\n\r\nhalf a message\r\n")
        .unwrap();
    (w, r)
}

/// Sends one message of `size` bytes of body in a session of its own; returns
/// the reply to its final dot and the queue id in it.
fn send_large(addr: SocketAddrV4, subject: &str, size: usize) -> (Option<u16>, String) {
    let (mut w, mut r) = begin_data(addr, "large");
    let line = format!("{}\r\n", "y".repeat(98));
    let mut body = format!("Subject: {subject}\r\n\r\n").into_bytes();
    while body.len() < size {
        body.extend_from_slice(line.as_bytes());
    }
    body.extend_from_slice(b".\r\n");
    w.write_all(&body).unwrap();
    let mut last = String::new();
    let code = loop {
        last.clear();
        if r.read_line(&mut last).unwrap_or(0) == 0 {
            break None;
        }
        if last.as_bytes().get(3) == Some(&b' ') {
            break last[..3].parse().ok();
        }
    };
    let id = last
        .split("queued as ")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    let _ = w.write_all(b"QUIT\r\n");
    (code, id)
}

fn batch_of(queue_id: &str) -> &str {
    queue_id.split('.').next().unwrap_or_default()
}

/// The queue ids of the `message accepted` log lines in `stderr`.
fn accepted_ids(stderr: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(stderr).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("message accepted"))
        .filter_map(|l| {
            let clean: String = strip_ansi(l);
            let at = clean.find(" id=")? + 4;
            Some(
                clean[at..]
                    .split_whitespace()
                    .next()?
                    .trim_matches('"')
                    .to_owned(),
            )
        })
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn large_messages_and_a_stalled_session_do_not_hold_back_other_commits() {
    let sink = SmtpSink::start(Ipv4Addr::new(127, 0, 0, 123), SinkOptions::plain());
    let s = Setup::new(124, &sink.addr().to_string(), "group_bytes = 1048576\n");
    let daemon = s.daemon("volley-run");
    let (_stalled_w, mut stalled_r) = stalled_session(s.listen);

    let (large, over_budget, source) = std::thread::scope(|scope| {
        let addr = s.listen;
        let large = scope.spawn(move || send_large(addr, "large-30mb", 30 << 20));
        let over = scope.spawn(move || send_large(addr, "over-budget", 2 << 20));
        // smtp-source: 2,000 small messages over 10 reused sessions.
        let mut cmd = std::process::Command::new("/usr/sbin/smtp-source");
        cmd.args([
            "-d",
            "-s",
            "10",
            "-m",
            "2000",
            "-l",
            "2000",
            "-M",
            "source.test",
        ])
        .args(["-f", "app@src.test", "-t", "small@x.test"])
        .arg(s.listen.to_string());
        let started = Instant::now();
        let out = run_bounded(&mut cmd, b"", Duration::from_secs(120)).unwrap();
        (
            large.join().unwrap(),
            over.join().unwrap(),
            (out, started.elapsed()),
        )
    });
    let (out, took) = source;
    assert!(
        out.status.success(),
        "smtp-source failed after {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(large.0, Some(250), "the 30 MB message");
    assert_eq!(
        over_budget.0,
        Some(250),
        "the message over the group budget"
    );
    // The stalled session still waits for its data to end: nobody was held
    // back by it. It gets nothing until it goes on.
    assert!(daemon.check_alive().is_ok());
    let counters = sink
        .wait_for_count(2002, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("not delivered: {e}"));
    assert!(counters.messages >= 2002, "{counters:?}");

    // The large messages were committed in relay batches of their own, the
    // small ones shared theirs.
    let ids = accepted_ids(&s.path("volley-run.stderr"));
    assert_eq!(ids.len(), 2002, "accepted lines: {}", ids.len());
    for big in [&large.1, &over_budget.1] {
        let shared = ids
            .iter()
            .filter(|id| batch_of(id) == batch_of(big))
            .count();
        assert_eq!(shared, 1, "{big} shares its batch");
    }
    let mut per_batch: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *per_batch.entry(batch_of(id)).or_insert(0) += 1;
    }
    assert!(
        per_batch.len() <= 2002 / 5,
        "{} batches for 2,002 messages: not shared",
        per_batch.len()
    );
    // The stalled session ends its message now and gets its 250 like anyone.
    let mut w = _stalled_w;
    w.write_all(b".\r\n").unwrap();
    assert_eq!(reply(&mut stalled_r), Some(250));
}
