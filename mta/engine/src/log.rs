//! The delivery log: one JSON line per attempt per recipient.
//!
//! Fields: `ts` (RFC 3339, UTC, milliseconds), `campaign`, `batch`, `recipient`,
//! `status` (delivered | deferred | bounced | expired | suppressed), `code`, `enhanced`, `reply`,
//! `mx`, `ip`, `tls`, `attempt`, `latency_ms`; plus `class` for bounces, `level`
//! (`recipient`, `connection` or `local`: whether the failure was the recipient's
//! own, the connection's, or this host's), and `next_attempt` for deferrals.
//!
//! What comes back later ([`volley_inbound`]) is logged in the same file with the
//! same field names ([`InboundLogEvent`]): `status` is `bounced_async`,
//! `complained`, `unsubscribed` or `replied`; `campaign` and `batch` (and `index`, the
//! recipient's position in the batch) come from the VERP address and are `null`
//! when there was none; `code`, `enhanced`, `reply` and `class` (hard | soft |
//! policy) describe a bounce, `feedback_type` a complaint.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use volley_inbound::{InboundEvent, VerpTarget};
use volley_smtp::date::civil_from_days;

/// One line of the delivery log.
#[derive(Debug, Clone, Serialize)]
pub struct LogEvent<'a> {
    /// Time of the event, RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// Campaign id.
    pub campaign: u64,
    /// Batch id.
    pub batch: u64,
    /// Recipient address.
    pub recipient: &'a str,
    /// delivered | deferred | bounced | expired | suppressed (on the suppression
    /// list: not sent; code 0, `attempt` = attempts made before).
    pub status: &'a str,
    /// SMTP reply code (0 when there was none, e.g. a DNS failure).
    pub code: u16,
    /// Enhanced status code such as "5.1.1", or "" when none.
    pub enhanced: &'a str,
    /// Reply text (or the local reason, for connection and DNS failures).
    pub reply: &'a str,
    /// MX host name used ("" when none was reached).
    pub mx: &'a str,
    /// IP address connected to ("" when none).
    pub ip: &'a str,
    /// Whether the connection used TLS.
    pub tls: bool,
    /// Attempt number for this recipient (1 = first).
    pub attempt: u32,
    /// Milliseconds from the start of this recipient's transaction to its reply.
    pub latency_ms: u64,
    /// "recipient" when the reply was about this recipient, "connection" when the
    /// connection, the site or DNS failed, "local" when the message could not be
    /// made or signed here.
    pub level: &'a str,
    /// For bounces: bad_mailbox, mailbox, policy, content, no_such_domain, other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<&'a str>,
    /// For deferrals: unix seconds of the next attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<u64>,
}

/// One line of the delivery log for an event that came back after delivery: an
/// asynchronous bounce, a complaint, an unsubscribe request (by mail or over the
/// one-click link), a click on a tracked link or an open.
#[derive(Debug, Clone, Serialize)]
pub struct InboundLogEvent<'a> {
    /// Time the event was received, RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// Campaign id from the VERP address; `null` when unknown.
    pub campaign: Option<u64>,
    /// Batch id from the VERP address; `null` when unknown.
    pub batch: Option<u64>,
    /// The recipient's position in the batch, from the VERP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Recipient address the report names ("" when it names none).
    pub recipient: &'a str,
    /// bounced_async | complained | unsubscribed | clicked | opened.
    pub status: &'a str,
    /// Reply code of the remote server's diagnostic (0 when none).
    pub code: u16,
    /// Enhanced status code of a bounce such as "5.1.1", or "".
    pub enhanced: String,
    /// The bounce's diagnostic, or "".
    pub reply: &'a str,
    /// For bounces: hard, soft or policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<&'a str>,
    /// For complaints: abuse, fraud, virus, other, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_type: Option<&'a str>,
    /// For an event that asks for a suppression, the path it took:
    /// `verified` (its recipient named by a verified VERP token: applied) or
    /// `pending` (named by the report only: kept for an operator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppression: Option<&'a str>,
    /// For clicks: the tracked link's index in the template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<i64>,
}

impl<'a> InboundLogEvent<'a> {
    /// The delivery-log line of `event` at `now`; `None` for
    /// [`InboundEvent::Ignored`] and [`InboundEvent::Forged`].
    pub fn of(event: &'a InboundEvent, now: SystemTime) -> Option<InboundLogEvent<'a>> {
        match event {
            InboundEvent::BouncedAsync {
                target,
                recipient,
                class,
                status,
                code,
                diagnostic,
                ..
            } => Some(InboundLogEvent {
                code: code.unwrap_or_default(),
                enhanced: status.to_string(),
                reply: diagnostic.as_deref().unwrap_or_default(),
                class: Some(class.name()),
                ..InboundLogEvent::common(now, *target, recipient.as_deref(), "bounced_async")
            }),
            InboundEvent::Complained {
                target,
                recipient,
                feedback_type,
            } => Some(InboundLogEvent {
                feedback_type: Some(feedback_type.name()),
                suppression: None,
                ..InboundLogEvent::common(now, *target, recipient.as_deref(), "complained")
            }),
            InboundEvent::Unsubscribed { target, recipient } => Some(InboundLogEvent::common(
                now,
                *target,
                Some(recipient),
                "unsubscribed",
            )),
            InboundEvent::Replied { target, recipient } => Some(InboundLogEvent::common(
                now,
                Some(*target),
                Some(recipient),
                "replied",
            )),
            InboundEvent::Ignored { .. } | InboundEvent::Forged { .. } => None,
        }
    }

    /// A line with the fields every inbound event has.
    fn common(
        now: SystemTime,
        target: Option<VerpTarget>,
        recipient: Option<&'a str>,
        status: &'static str,
    ) -> InboundLogEvent<'a> {
        InboundLogEvent {
            ts: timestamp(now),
            campaign: target.map(|t| t.campaign),
            batch: target.map(|t| t.batch),
            index: target.map(|t| t.index),
            recipient: recipient.unwrap_or_default(),
            status,
            code: 0,
            enhanced: String::new(),
            reply: "",
            class: None,
            feedback_type: None,
            suppression: None,
            link: None,
        }
    }

    /// The line of something a recipient did over a web link (`unsubscribed`,
    /// `clicked`, `opened`) at `now`.
    pub fn web(
        now: SystemTime,
        target: VerpTarget,
        recipient: &'a str,
        status: &'static str,
        link: Option<i64>,
    ) -> InboundLogEvent<'a> {
        InboundLogEvent {
            link,
            suppression: (status == "unsubscribed").then_some("verified"),
            ..InboundLogEvent::common(now, Some(target), Some(recipient), status)
        }
    }
}

/// Formats a time as RFC 3339 UTC with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    // Digits pushed by hand: this runs once per logged attempt, and `format!`
    // with seven width-padded arguments cost more than the rest of the line.
    fn push(out: &mut String, n: u64, width: u32) {
        for i in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10u64.pow(i) % 10) as u8));
        }
    }
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    let mut out = String::with_capacity(24);
    push(&mut out, y.clamp(0, 9999) as u64, 4);
    out.push('-');
    push(&mut out, u64::from(m), 2);
    out.push('-');
    push(&mut out, u64::from(dd), 2);
    out.push('T');
    push(&mut out, rem / 3600, 2);
    out.push(':');
    push(&mut out, rem % 3600 / 60, 2);
    out.push(':');
    push(&mut out, rem % 60, 2);
    out.push('.');
    push(&mut out, u64::from(d.subsec_millis()), 3);
    out.push('Z');
    out
}

/// An append-only JSON-lines file shared by all delivery tasks. Lines are
/// buffered and written whole; [`DeliveryLog::flush`] runs at every group commit.
#[derive(Debug)]
pub struct DeliveryLog {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
}

impl DeliveryLog {
    /// Opens (creating, appending to) the log at `path`; creates its directory.
    pub fn open(path: &Path) -> std::io::Result<DeliveryLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(DeliveryLog {
            path: path.to_owned(),
            out: Mutex::new(BufWriter::with_capacity(256 * 1024, file)),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event.
    pub fn write(&self, event: &LogEvent<'_>) -> std::io::Result<()> {
        self.write_line(event)
    }

    /// Appends one inbound event (a bounce, complaint or unsubscribe request).
    pub fn write_inbound(&self, event: &InboundLogEvent<'_>) -> std::io::Result<()> {
        self.write_line(event)
    }

    fn write_line(&self, event: &impl Serialize) -> std::io::Result<()> {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Serialized straight into the buffer (no line allocated per event);
        // these structs only fail to serialize if the writer fails.
        serde_json::to_writer(&mut *out, event).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    }

    /// Writes buffered lines to the file.
    pub fn flush(&self) -> std::io::Result<()> {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        out.flush()
    }
}

impl Drop for DeliveryLog {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = |s: u64, ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(timestamp(t(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(t(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(timestamp(t(1_795_435_199, 999)), "2026-11-23T11:59:59.999Z");
    }

    #[test]
    fn writes_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/delivery.jsonl");
        let log = DeliveryLog::open(&path).unwrap();
        let event = LogEvent {
            ts: timestamp(SystemTime::UNIX_EPOCH),
            campaign: 1,
            batch: 2,
            recipient: "a@b.test",
            status: "bounced",
            code: 550,
            enhanced: "5.1.1",
            reply: "user \"unknown\"\r\n",
            mx: "mx.b.test",
            ip: "127.0.0.2",
            tls: false,
            attempt: 1,
            latency_ms: 3,
            level: "recipient",
            class: Some("bad_mailbox"),
            next_attempt: None,
        };
        log.write(&event).unwrap();
        log.write(&event).unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        for key in [
            "ts",
            "campaign",
            "batch",
            "recipient",
            "status",
            "code",
            "enhanced",
            "reply",
            "mx",
            "ip",
            "tls",
            "attempt",
            "latency_ms",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["reply"], "user \"unknown\"\r\n");
        assert!(v.get("next_attempt").is_none());
    }

    #[test]
    fn inbound_events_share_the_file_and_field_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivery.jsonl");
        let log = DeliveryLog::open(&path).unwrap();
        log.write_inbound(&InboundLogEvent {
            ts: timestamp(SystemTime::UNIX_EPOCH),
            campaign: Some(42),
            batch: Some(7),
            index: Some(3),
            recipient: "a@b.test",
            status: "bounced_async",
            code: 550,
            enhanced: "5.1.1".into(),
            reply: "550 5.1.1 unknown",
            class: Some("hard"),
            feedback_type: None,
            suppression: None,
            link: None,
        })
        .unwrap();
        log.write_inbound(&InboundLogEvent {
            ts: timestamp(SystemTime::UNIX_EPOCH),
            campaign: None,
            batch: None,
            index: None,
            recipient: "c@d.test",
            status: "complained",
            code: 0,
            enhanced: String::new(),
            reply: "",
            class: None,
            feedback_type: Some("abuse"),
            suppression: None,
            link: None,
        })
        .unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"ts":"1970-01-01T00:00:00.000Z","campaign":42,"batch":7,"index":3,"recipient":"a@b.test","status":"bounced_async","code":550,"enhanced":"5.1.1","reply":"550 5.1.1 unknown","class":"hard"}"#,
                r#"{"ts":"1970-01-01T00:00:00.000Z","campaign":null,"batch":null,"recipient":"c@d.test","status":"complained","code":0,"enhanced":"","reply":"","feedback_type":"abuse"}"#,
            ]
        );
    }

    fn classified(mail_from: &str, rcpt: &str, name: &str) -> Vec<InboundEvent> {
        let rcpt_to = [rcpt.to_owned()];
        let envelope = volley_inbound::Envelope {
            mail_from,
            rcpt_to: &rcpt_to,
        };
        let verp = volley_inbound::testing::verp();
        volley_inbound::classify(
            &envelope,
            &volley_inbound::testing::fixture(name),
            Some(&verp),
        )
    }

    #[test]
    fn inbound_events_log_lines() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let events = classified(
            "",
            "b-aaaaaaaaaaacuaaaaaaaaaaaa4aaaaadbbekhwvnatpxkr4o@bounce.acme.test",
            "postfix-unknown-user.eml",
        );
        let line = InboundLogEvent::of(&events[0], now)
            .map(|e| serde_json::to_string(&e).unwrap_or_default());
        assert_eq!(
            line.as_deref(),
            Some(
                r#"{"ts":"2023-11-14T22:13:20.000Z","campaign":42,"batch":7,"index":3,"recipient":"nobody@example.test","status":"bounced_async","code":550,"enhanced":"5.1.1","reply":"550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in virtual mailbox table","class":"hard"}"#
            )
        );
        let events = classified("abusedesk@example.test", "fbl@acme.test", "arf-abuse.eml");
        let line = InboundLogEvent::of(&events[0], now)
            .map(|e| serde_json::to_string(&e).unwrap_or_default());
        assert_eq!(
            line.as_deref(),
            Some(
                r#"{"ts":"2023-11-14T22:13:20.000Z","campaign":42,"batch":7,"index":5,"recipient":"user@example.test","status":"complained","code":0,"enhanced":"","reply":"","feedback_type":"abuse"}"#
            )
        );
        let events = classified(
            "ann@example.test",
            "news@acme.test",
            "reply-body-unsubscribe.eml",
        );
        let line = InboundLogEvent::of(&events[0], now)
            .map(|e| serde_json::to_string(&e).unwrap_or_default());
        assert_eq!(
            line.as_deref(),
            Some(
                r#"{"ts":"2023-11-14T22:13:20.000Z","campaign":null,"batch":null,"recipient":"ann@example.test","status":"unsubscribed","code":0,"enhanced":"","reply":""}"#
            )
        );
        let ignored = InboundEvent::Ignored {
            reason: volley_inbound::IgnoreReason::AutoReply,
        };
        assert!(InboundLogEvent::of(&ignored, now).is_none());
    }
}
