//! Inbound events applied: the fixtures of `inbound/` against a real spool
//! directory, a delivery log file and a recording suppression writer.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use volley_queue::{BatchBuilder, BatchMeta};

use super::*;
use volley_inbound::testing::{fixture, verp};
use volley_inbound::{FeedbackType, IgnoreReason};
use volley_merge::source::StaticMessage;
use volley_smtp::reply::Enhanced;

/// One applied action, owned.
type Applied = (String, String, SuppressKind, u64, String);

/// Records what it is asked; fails every call while `fail` is set.
#[derive(Default)]
struct Recording {
    applied: Mutex<Vec<Applied>>,
    pending: Mutex<Vec<Applied>>,
    fail: bool,
}

impl SuppressionWriter for Recording {
    fn apply(&self, a: &SuppressAction<'_>) -> Result<bool, String> {
        if self.fail {
            return Err("disk full (test)".into());
        }
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.push((
            a.address.to_owned(),
            a.sending_domain.to_owned(),
            a.kind,
            a.at,
            a.detail.to_owned(),
        ));
        Ok(a.kind != SuppressKind::SoftBounce)
    }

    fn pend(&self, a: &SuppressAction<'_>, _source: &str) -> Result<(), String> {
        if self.fail {
            return Err("disk full (test)".into());
        }
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((
                a.address.to_owned(),
                a.sending_domain.to_owned(),
                a.kind,
                a.at,
                a.detail.to_owned(),
            ));
        Ok(())
    }
}

struct Setup {
    dir: tempfile::TempDir,
    writer: Arc<Recording>,
    feedback: Feedback,
}

/// 1,700,000,000 s: the time every test processes at.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A spool with batch 7 of campaign 42 (`r0@dest.test` … `r5@dest.test`,
/// content sent from `news@acme.test`), in `done/` when `done` is set.
fn setup(fail: bool, done: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spool = Spool::open(&dir.path().join("spool")).unwrap_or_else(|e| panic!("{e}"));
    let meta = BatchMeta {
        batch_id: 7,
        campaign_id: 42,
        content_hash: [1; 32],
        created_at: 1,
    };
    let mut builder = BatchBuilder::new::<&str>(meta, &[]).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..6 {
        builder
            .push(&format!("r{i}@dest.test"), &[] as &[&[u8]])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let file = builder.finish().unwrap_or_else(|e| panic!("{e}"));
    let path = spool.write_batch(&file).unwrap_or_else(|e| panic!("{e}"));
    if done {
        let to = spool.done_dir().join(path.file_name().unwrap_or_default());
        fs::rename(&path, to).unwrap_or_else(|e| panic!("{e}"));
    }
    let source = Arc::new(StaticMessage {
        from: "news@Acme.test".into(),
        message: Bytes::from_static(b"Subject: x\r\n\r\nx\r\n"),
    });
    let log =
        DeliveryLog::open(&dir.path().join("delivery.jsonl")).unwrap_or_else(|e| panic!("{e}"));
    let writer = Arc::new(Recording {
        fail,
        ..Recording::default()
    });
    let feedback = Feedback::new(
        spool.root(),
        Some(Arc::new(verp())),
        source,
        Arc::new(log),
        Arc::clone(&writer) as Arc<dyn SuppressionWriter>,
    );
    Setup {
        dir,
        writer,
        feedback,
    }
}

impl Setup {
    fn process(&self, mail_from: &str, rcpt: &str, message: &[u8]) -> Processed {
        let file = self.dir.path().join("spool/inbound/x.eml");
        self.feedback
            .process(mail_from, &[rcpt.to_owned()], message, &file, now())
    }

    fn log_lines(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.path().join("delivery.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    fn pending(&self) -> Vec<Applied> {
        self.writer
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn applied(&self) -> Vec<Applied> {
        self.writer
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[test]
fn what_suppresses() {
    let bounce = |class, evidence| InboundEvent::BouncedAsync {
        target: None,
        recipient: None,
        class,
        status: Enhanced::new(5, 1, 1),
        code: None,
        diagnostic: None,
        action: volley_inbound::Action::Failed,
        evidence,
    };
    let cases = [
        (
            bounce(BounceClass::Hard, Evidence::Dsn),
            Some(SuppressKind::HardBounce),
        ),
        (
            bounce(BounceClass::Hard, Evidence::BodyText),
            Some(SuppressKind::SoftBounce),
        ),
        (
            bounce(BounceClass::Soft, Evidence::Dsn),
            Some(SuppressKind::SoftBounce),
        ),
        (
            bounce(BounceClass::Soft, Evidence::BodyText),
            Some(SuppressKind::SoftBounce),
        ),
        (bounce(BounceClass::Policy, Evidence::Dsn), None),
        (bounce(BounceClass::Policy, Evidence::BodyText), None),
        (
            InboundEvent::Complained {
                target: None,
                recipient: None,
                feedback_type: FeedbackType::Abuse,
            },
            Some(SuppressKind::Complaint),
        ),
        (
            InboundEvent::Unsubscribed {
                target: None,
                recipient: "a@b.test".into(),
            },
            Some(SuppressKind::Unsubscribe),
        ),
        (
            InboundEvent::Ignored {
                reason: IgnoreReason::AutoReply,
            },
            None,
        ),
        (
            InboundEvent::Forged {
                rcpt: "b-x@b.test".into(),
                error: VerpError::Forged,
            },
            None,
        ),
    ];
    for (event, expected) in cases {
        assert_eq!(suppress_kind(&event), expected, "{event:?}");
    }
}

#[test]
fn fallback_sending_domains() {
    let v = Some("bounce.acme.test");
    let cases: [(&[&str], Option<&str>, &str); 6] = [
        (&["news@Acme.Test."], v, "acme.test"),
        (&["b-x@BOUNCE.acme.test", "fbl@acme.test"], v, "acme.test"),
        (&["b-x@bounce.acme.test"], v, "*"),
        (&["b-x@bounce.acme.test"], None, "bounce.acme.test"),
        (&["postmaster"], v, "*"),
        (&[], v, "*"),
    ];
    for (rcpts, verp_domain, expected) in cases {
        let rcpts: Vec<String> = rcpts.iter().map(|r| (*r).to_owned()).collect();
        assert_eq!(
            fallback_sending_domain(&rcpts, verp_domain),
            expected,
            "{rcpts:?}"
        );
    }
}

#[test]
fn a_bounce_to_a_verp_address_names_the_batch_recipient() {
    for done in [false, true] {
        let s = setup(false, done);
        let rcpt = verp().return_path(42, 7, 3);
        let processed = s.process("", &rcpt, &fixture("postfix-unknown-user.eml"));
        assert_eq!(
            (processed.logged, processed.suppressed, processed.failures),
            (1, 1, 0)
        );
        let lines = s.log_lines();
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["ts"], "2023-11-14T22:13:20.000Z");
        assert_eq!(line["status"], "bounced_async");
        // The batch's recipient 3, not the DSN's nobody@example.test.
        assert_eq!(line["recipient"], "r3@dest.test");
        assert_eq!(
            (&line["campaign"], &line["batch"], &line["index"]),
            (&42.into(), &7.into(), &3.into())
        );
        assert_eq!(
            (&line["class"], &line["enhanced"], &line["code"]),
            (&"hard".into(), &"5.1.1".into(), &550.into())
        );
        let applied = s.applied();
        assert_eq!(applied.len(), 1);
        let (address, domain, kind, at, detail) = &applied[0];
        assert_eq!(
            (address.as_str(), domain.as_str(), *kind, *at),
            (
                "r3@dest.test",
                "acme.test",
                SuppressKind::HardBounce,
                1_700_000_000
            )
        );
        assert!(
            detail.starts_with("5.1.1 550 5.1.1 <nobody@example.test>"),
            "{detail}"
        );
    }
}

#[test]
fn without_the_batch_the_report_names_the_recipient() {
    let s = setup(false, false);
    // A target whose batch is not in the spool.
    let rcpt = verp().return_path(42, 8, 3);
    let processed = s.process("", &rcpt, &fixture("postfix-unknown-user.eml"));
    assert_eq!((processed.logged, processed.failures), (1, 0));
    let lines = s.log_lines();
    assert_eq!(lines[0]["recipient"], "nobody@example.test");
    assert_eq!(lines[0]["batch"], 8);
    // Named by the report, not through the batch: kept for an operator, not
    // applied (mail to the VERP domain only: no sending domain is known).
    assert!(s.applied().is_empty());
    assert_eq!(
        s.pending()
            .iter()
            .map(|a| (a.0.as_str(), a.1.as_str(), a.2))
            .collect::<Vec<_>>(),
        [("nobody@example.test", "*", SuppressKind::HardBounce)]
    );
    assert_eq!(lines[0]["suppression"], "pending");
}

#[test]
fn complaints_and_unsubscribes_suppress_for_the_sending_domain() {
    let s = setup(false, true);
    // The complaint names its target in the returned original's Return-Path.
    let complaint = s.process(
        "abusedesk@example.test",
        "fbl@acme.test",
        &fixture("arf-abuse.eml"),
    );
    assert_eq!((complaint.logged, complaint.suppressed), (1, 1));
    let unsubscribe = s.process(
        "ann@example.test",
        "news@Acme.test",
        &fixture("reply-body-unsubscribe.eml"),
    );
    // A reply names no token: anyone could send it, so it waits.
    assert_eq!(
        (
            unsubscribe.logged,
            unsubscribe.suppressed,
            unsubscribe.pending
        ),
        (1, 0, 1)
    );
    let lines = s.log_lines();
    assert_eq!(
        lines
            .iter()
            .map(|l| (
                l["status"].as_str().unwrap_or_default(),
                l["recipient"].as_str().unwrap_or_default(),
                l["index"].as_u64()
            ))
            .collect::<Vec<_>>(),
        [
            ("complained", "r5@dest.test", Some(5)),
            ("unsubscribed", "ann@example.test", None),
        ]
    );
    assert_eq!(lines[0]["feedback_type"], "abuse");
    assert_eq!(
        s.applied()
            .iter()
            .map(|a| (a.0.as_str(), a.1.as_str(), a.2, a.4.as_str()))
            .collect::<Vec<_>>(),
        [(
            "r5@dest.test",
            "acme.test",
            SuppressKind::Complaint,
            "abuse"
        ),]
    );
    assert_eq!(lines[0]["suppression"], "verified");
    assert_eq!(lines[1]["suppression"], "pending");
    assert_eq!(
        s.pending()
            .iter()
            .map(|a| (a.0.as_str(), a.1.as_str(), a.2, a.4.as_str()))
            .collect::<Vec<_>>(),
        [(
            "ann@example.test",
            "acme.test",
            SuppressKind::Unsubscribe,
            "reply"
        )]
    );
}

#[test]
fn ignored_messages_write_nothing() {
    let s = setup(false, false);
    let rcpt = verp().return_path(42, 7, 1);
    let processed = s.process("", &rcpt, &fixture("vacation.eml"));
    assert_eq!(
        processed.events,
        [InboundEvent::Ignored {
            reason: IgnoreReason::AutoReply
        }]
    );
    assert_eq!((processed.logged, processed.suppressed), (0, 0));
    assert!(s.log_lines().is_empty());
    assert!(s.applied().is_empty());
}

#[test]
fn a_failing_store_still_logs_and_counts_the_failure() {
    let s = setup(true, false);
    let rcpt = verp().return_path(42, 7, 3);
    let processed = s.process("", &rcpt, &fixture("postfix-unknown-user.eml"));
    assert_eq!(
        (processed.logged, processed.suppressed, processed.failures),
        (1, 0, 1)
    );
    assert_eq!(s.log_lines().len(), 1);
}

#[test]
fn forged_recipients_are_found() {
    let s = setup(false, false);
    let good = verp().return_path(42, 7, 3);
    let (local, domain) = good.split_once('@').unwrap_or_default();
    let last = if local.ends_with('a') { 'b' } else { 'a' };
    let forged = format!("{}{last}@{domain}", &local[..local.len() - 1]);
    let malformed = "b-short@bounce.acme.test";
    assert_eq!(s.feedback.forged(&[&good, "x@acme.test"]), None);
    assert_eq!(
        s.feedback.forged(&[&good, &forged]),
        Some((forged.as_str(), VerpError::Forged))
    );
    assert_eq!(
        s.feedback.forged(&[malformed]),
        Some((malformed, VerpError::Malformed))
    );
}

#[test]
fn complaints_without_a_token_apply_only_from_feedback_loop_sources() {
    let s = setup(false, false);
    let s = Setup {
        feedback: s.feedback.with_fbl_sources(
            vec![volley_conf::FblSource::Network(
                "192.0.2.0/24".parse().unwrap_or_else(|e| panic!("{e}")),
            )],
            crate::mx::ResolverConfig::default(),
        ),
        ..s
    };
    // The report's original went out without a VERP return path.
    let arf = String::from_utf8_lossy(&fixture("arf-abuse.eml")).replace(
        "b-aaaaaaaaaaacuaaaaaaaaaaaa4aaaaaf6cyw7t26wgkl37go@bounce.acme.test",
        "news@acme.test",
    );
    let file = s.dir.path().join("spool/inbound/x.eml");
    let rcpt = ["fbl@acme.test".to_owned()];
    let from_loop = s.feedback.process_from(
        Some("192.0.2.7".parse().unwrap_or_else(|e| panic!("{e}"))),
        "abusedesk@example.test",
        &rcpt,
        arf.as_bytes(),
        &file,
        now(),
    );
    assert_eq!((from_loop.suppressed, from_loop.pending), (1, 0));
    let elsewhere = s.feedback.process_from(
        Some("198.51.100.7".parse().unwrap_or_else(|e| panic!("{e}"))),
        "abusedesk@example.test",
        &rcpt,
        arf.as_bytes(),
        &file,
        now(),
    );
    assert_eq!((elsewhere.suppressed, elsewhere.pending), (0, 1));
    let lines = s.log_lines();
    assert_eq!(lines[0]["suppression"], "fbl_source", "{}", lines[0]);
    assert_eq!(lines[1]["suppression"], "pending", "{}", lines[1]);
    assert_eq!(s.applied()[0].0, "user@example.test");
}
