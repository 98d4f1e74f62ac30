//! The delivery engine end to end: batches in a spool, MX records from a real
//! dnsmasq, real receivers (Postfix smtp-sink, scripted aiosmtpd) on 127.0.0.x.

mod support;

use std::time::Duration;

use support::dnsmasq::{DnsMasq, Record};
use support::engine::{addrs, expected_body, ip, now, runtime, states, Fixture};
use support::smtp_sink::{SinkOptions, SmtpSink};
use volley_queue::State;

#[test]
fn delivers_every_recipient_through_mx_to_smtp_sink() {
    let sink = SmtpSink::start(ip(2), SinkOptions::plain());
    let port = sink.addr().port();
    let dns = DnsMasq::start(&[
        Record::mx("a.test", "mx.shared.test", 10),
        Record::mx("b.test", "mx.shared.test", 10),
        Record::addr("mx.shared.test", "127.0.0.2"),
    ]);
    let f = Fixture::new(&dns, port);
    let paths = f.queue(&[
        addrs("a.test", 100),
        addrs("b.test", 100),
        addrs("a.test", 50)[..].to_vec(),
    ]);

    let report = f.run_once();
    assert_eq!(
        (
            report.attempted,
            report.delivered,
            report.deferred,
            report.bounced
        ),
        (250, 250, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.batches_completed, 3);

    let messages = sink
        .wait_for_messages(250, Duration::from_secs(20))
        .unwrap();
    assert_eq!(messages.len(), 250);
    let parsed = sink.parsed_messages();
    let mut rcpts: Vec<String> = parsed
        .iter()
        .flat_map(|m| m.rcpt_tos().into_iter().map(str::to_owned))
        .collect();
    rcpts.sort();
    rcpts.dedup();
    assert_eq!(rcpts.len(), 200, "every distinct recipient arrived");
    for m in &parsed {
        assert_eq!(m.mail_from(), "bounces@volley.test");
        assert_eq!(m.body_crlf(), expected_body(), "bytes that arrived");
    }
    // Batches are finished and moved; their slots say delivered.
    for p in &paths {
        assert!(!p.exists());
        let done = f.spool_dir().join("done").join(p.file_name().unwrap());
        assert!(states(&done).iter().all(|&s| s == State::Delivered));
    }
    // One log line per recipient attempt, with every field.
    let log = f.log();
    assert_eq!(log.len(), 250);
    let e = &f.log_for("user7@b.test")[0];
    assert_eq!(e["status"], "delivered");
    assert_eq!(e["code"], 250);
    assert_eq!(e["mx"], "mx.shared.test");
    assert_eq!(e["ip"], "127.0.0.2");
    assert_eq!(e["attempt"], 1);
    assert_eq!(e["campaign"], 1);
    assert_eq!(e["batch"], 1);
    for key in ["ts", "enhanced", "reply", "tls", "latency_ms"] {
        assert!(e.get(key).is_some(), "log lacks {key}: {e}");
    }
    // Nothing left to do.
    let again = f.run_once();
    assert_eq!(again.attempted, 0);
}

#[test]
fn falls_back_to_the_next_mx_when_the_primary_is_down() {
    let sink = SmtpSink::start(ip(3), SinkOptions::plain());
    let dns = DnsMasq::start(&[
        Record::mx("fallback.test", "mx1.fallback.test", 10),
        Record::mx("fallback.test", "mx2.fallback.test", 20),
        // Nothing listens on 127.0.0.4 at the sink's port: connection refused.
        Record::addr("mx1.fallback.test", "127.0.0.4"),
        Record::addr("mx2.fallback.test", "127.0.0.3"),
    ]);
    let f = Fixture::new(&dns, sink.addr().port());
    f.queue(&[addrs("fallback.test", 5)]);
    let report = f.run_once();
    assert_eq!(report.delivered, 5, "{report:?}");
    sink.wait_for_messages(5, Duration::from_secs(10)).unwrap();
    assert!(f
        .log()
        .iter()
        .all(|e| e["mx"] == "mx2.fallback.test" && e["ip"] == "127.0.0.3"));
}

#[test]
fn implicit_mx_delivers_to_the_domains_own_address() {
    let sink = SmtpSink::start(ip(5), SinkOptions::plain());
    let dns = DnsMasq::start(&[Record::addr("implicit.test", "127.0.0.5")]);
    let f = Fixture::new(&dns, sink.addr().port());
    f.queue(&[addrs("implicit.test", 2)]);
    assert_eq!(f.run_once().delivered, 2);
    assert_eq!(f.log()[0]["mx"], "implicit.test");
}

#[test]
fn null_mx_and_nxdomain_bounce_without_a_connection() {
    let dns = DnsMasq::start(&[Record::null_mx("nullmx.test")]);
    let f = Fixture::new(&dns, 9);
    let paths = f.queue(&[vec!["a@nullmx.test".into(), "b@nxdomain.test".into()]]);
    let report = f.run_once();
    assert_eq!((report.bounced, report.deferred), (2, 0), "{report:?}");
    for r in ["a@nullmx.test", "b@nxdomain.test"] {
        let e = &f.log_for(r)[0];
        assert_eq!(e["status"], "bounced", "{e}");
        assert_eq!(e["class"], "no_such_domain", "{e}");
        assert_eq!(e["level"], "connection", "{e}");
    }
    assert!(f.log_for("a@nullmx.test")[0]["reply"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("null mx"));
    let done = f
        .spool_dir()
        .join("done")
        .join(paths[0].file_name().unwrap());
    assert_eq!(states(&done), vec![State::Bounced, State::Bounced]);
}

#[test]
fn an_unreachable_site_defers_its_recipients_as_connection_failures() {
    let dns = DnsMasq::start(&[
        Record::mx("down.test", "mx.down.test", 10),
        Record::addr("mx.down.test", "127.0.0.6"),
    ]);
    // Nothing listens on 127.0.0.6:<this port>.
    let port = support::port::free_port(ip(6));
    let f = Fixture::new(&dns, port);
    let paths = f.queue(&[addrs("down.test", 3)]);
    let report = f.run_once();
    assert_eq!(report.deferred, 3, "{report:?}");
    let e = &f.log_for("user0@down.test")[0];
    assert_eq!(
        (e["status"].as_str(), e["level"].as_str()),
        (Some("deferred"), Some("connection"))
    );
    assert!(e["next_attempt"].as_u64().unwrap() >= now());
    assert!(paths[0].exists(), "the batch stays live");
    assert!(states(&paths[0]).iter().all(|&s| s == State::Deferred));
}

#[test]
fn a_deferred_destination_does_not_hold_back_what_is_due_behind_it() {
    let sink = SmtpSink::start(ip(2), SinkOptions::plain());
    let port = sink.addr().port();
    let dns = DnsMasq::start(&[
        Record::mx("a.test", "mx.down.test", 10),
        Record::addr("mx.down.test", "127.0.0.6"),
        Record::mx("b.test", "mx.up.test", 10),
        Record::addr("mx.up.test", "127.0.0.2"),
    ]);
    let mut f = Fixture::new(&dns, port);
    f.config.queue.window = 1000;
    f.config.retry.intervals = vec![Duration::from_secs(3600)];
    // Ten batches for a.test (nothing listens on 127.0.0.6), then ten for b.test:
    // a.test's fill the first round's window.
    let mut batches = vec![addrs("a.test", 100); 10];
    batches.extend(vec![addrs("b.test", 100); 10]);
    f.queue(&batches);

    let engine = f.engine();
    let rt = runtime();
    let deadline = Duration::from_secs(60);
    let report = rt
        .block_on(async { tokio::time::timeout(deadline, engine.run_due()).await })
        .expect("run_due returned")
        .unwrap();
    assert_eq!(
        (
            report.attempted,
            report.delivered,
            report.deferred,
            report.waiting
        ),
        (2000, 1000, 1000, 0),
        "{report:?}"
    );
    let messages = sink
        .wait_for_messages(1000, Duration::from_secs(20))
        .unwrap();
    assert_eq!(messages.len(), 1000);

    // Only not-due work left: a round attempts nothing, scans once and says
    // when to look again instead of spinning.
    let started = std::time::Instant::now();
    let report = rt.block_on(engine.run_due()).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((report.attempted, report.not_due), (0, 1000), "{report:?}");
    let next_due = report.next_due.expect("a next due time");
    assert!(next_due >= now() + 3500, "{next_due}");
    assert_eq!(report.pause(now()), Duration::from_secs(60));
}

/// Fails every recipient's message: `user0` transiently (a local failure that
/// may pass), the others for good.
struct Failing;

impl volley_merge::source::MessageSource for Failing {
    fn envelope_from(
        &self,
        _: &volley_queue::BatchView<'_>,
        _: usize,
    ) -> Result<String, volley_merge::source::RenderError> {
        Ok("bounces@volley.test".into())
    }

    fn render(
        &self,
        batch: &volley_queue::BatchView<'_>,
        index: usize,
        _: &mut bytes::BytesMut,
    ) -> Result<volley_merge::source::Rendered, volley_merge::source::RenderError> {
        use volley_merge::source::RenderError;
        match batch.recipient(index).map(|r| r.address()).as_deref() {
            Some("user0@fail.test") => Err(RenderError::transient("template: Too many open files")),
            _ => Err(RenderError::permanent("no value for merge field `name`")),
        }
    }
}

#[test]
fn local_failures_defer_and_only_unrenderable_messages_bounce() {
    let sink = SmtpSink::start(ip(2), SinkOptions::plain());
    let dns = DnsMasq::start(&[
        Record::mx("fail.test", "mx.fail.test", 10),
        Record::addr("mx.fail.test", "127.0.0.2"),
    ]);
    let f = Fixture::new(&dns, sink.addr().port());
    f.queue(&[addrs("fail.test", 2)]);
    let engine = f.engine_with(std::sync::Arc::new(Failing));
    let report = runtime().block_on(engine.run_once()).unwrap();
    assert_eq!((report.deferred, report.bounced), (1, 1), "{report:?}");
    let transient = &f.log_for("user0@fail.test")[0];
    assert_eq!(
        (
            transient["status"].as_str(),
            transient["level"].as_str(),
            transient["reply"].as_str()
        ),
        (
            Some("deferred"),
            Some("local"),
            Some("template: Too many open files")
        )
    );
    let permanent = &f.log_for("user1@fail.test")[0];
    assert_eq!(
        (permanent["status"].as_str(), permanent["level"].as_str()),
        (Some("bounced"), Some("local"))
    );
    assert!(sink.parsed_messages().is_empty(), "nothing was sent");
}

/// Collects the reports the engine queues.
#[derive(Default)]
struct Reports(std::sync::Mutex<Vec<(String, String)>>);

impl volley_engine::delivery::reports::ReportSink for Reports {
    fn queue(&self, to: &str, message: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(message).into_owned();
        self.0.lock().unwrap().push((to.to_owned(), text));
        Ok(())
    }
}

#[test]
fn a_failure_recorded_just_before_a_crash_is_still_reported_once() {
    use volley_engine::delivery::reports::DSN_FIELDS;
    use volley_queue::ids::INBOUND_ID_BASE;
    use volley_queue::{BatchBuilder, BatchMeta, MappedBatch, Slot, Spool};

    let sink = SmtpSink::start(ip(2), SinkOptions::plain());
    let dns = DnsMasq::start(&[]);
    let f = Fixture::new(&dns, sink.addr().port());
    // A relayed message's batch whose recipient bounced: the slot says so, but
    // the process died before the round's end made the report.
    let meta = BatchMeta {
        batch_id: 0,
        campaign_id: INBOUND_ID_BASE + 1,
        content_hash: [0; 32],
        created_at: now(),
    };
    let mut b = BatchBuilder::new(meta, &DSN_FIELDS).unwrap();
    b.push("gone@x.test", &[b"" as &[u8], b"", b"", b"ENV7"])
        .unwrap();
    let spool = Spool::open(&f.spool_dir()).unwrap();
    let path = spool.write_batch(&b.finish().unwrap()).unwrap();
    drop(spool);
    let map = MappedBatch::open(&path).unwrap();
    map.set_slot(
        0,
        Slot {
            state: State::Bounced,
            attempts: 1,
            code: 550,
            next_attempt: 0,
        },
    )
    .unwrap();
    drop(map);

    let reports = std::sync::Arc::new(Reports::default());
    let engine = f.engine().with_reports(reports.clone());
    let rt = runtime();
    let r = rt.block_on(engine.run_once()).unwrap();
    assert_eq!(r.batches_completed, 1, "{r:?}");
    let got = reports.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (to, text) = &got[0];
    assert_eq!(to, "bounces@volley.test", "the message's envelope sender");
    for needle in [
        "Original-Envelope-Id: ENV7\r\n",
        "Final-Recipient: rfc822; gone@x.test\r\nAction: failed\r\nStatus: 5.0.0\r\n",
        "550 (the rest of the reply was lost in a restart)",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
    // Reported once: the next rounds find nothing to report.
    rt.block_on(engine.run_once()).unwrap();
    assert_eq!(reports.0.lock().unwrap().len(), 1);
}
