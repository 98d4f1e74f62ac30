//! Delivery status notifications volley writes itself (RFC 3464, RFC 3461): the
//! report sent to the envelope sender of a relayed message whose recipients
//! bounced or expired (or, when asked, were delayed or delivered). A
//! `multipart/report; report-type=delivery-status` with a line for people, the
//! `message/delivery-status` part, and the returned message (whole, as
//! `message/rfc822`, or its header only, as `text/rfc822-headers`).
//!
//! Pure: the caller says what happened to whom and why, and stores the bytes as a message
//! of its own from the null sender.

use std::fmt::Write as _;

use bytes::BytesMut;
use volley_smtp::date::write_date;
use volley_smtp::dsn::Ret;

/// Messages longer than this are returned as their header only (Postfix's
/// `bounce_size_limit`), whatever `RET` asked.
pub const RETURN_LIMIT: usize = 50_000;

/// What happened to a recipient a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Bounced: `Action: failed`.
    Failed,
    /// Given up after `[retry] expire`: `Action: failed`.
    Expired,
    /// Still being retried after `[bounce] delay_warning`: `Action: delayed`.
    Delayed,
    /// Delivered (`NOTIFY=SUCCESS`): `Action: delivered`.
    Delivered,
}

impl Action {
    /// The `Action:` field's value.
    pub fn field(self) -> &'static str {
        match self {
            Action::Failed | Action::Expired => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
        }
    }

    /// Whether it is a failure (the message is returned per `RET`).
    pub fn failed(self) -> bool {
        matches!(self, Action::Failed | Action::Expired)
    }
}

/// One recipient a report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient<'a> {
    /// The recipient as queued.
    pub recipient: &'a str,
    /// `ORCPT` as received (`rfc822;user@example.test`), if any.
    pub original: Option<&'a str>,
    /// The enhanced status code (`5.1.1`; `4.4.7` for an expired one).
    pub status: &'a str,
    /// The remote server's reply (`550 5.1.1 <u@x>: unknown user`), or the
    /// local reason when there was no reply.
    pub diagnostic: &'a str,
    /// The host that answered, if one did.
    pub remote_mta: Option<&'a str>,
    /// What happened to it.
    pub action: Action,
}

/// The report of one message.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// This host's name: `Reporting-MTA` and the `From` domain.
    pub host: &'a str,
    /// Who gets the report (the relayed message's envelope sender).
    pub to: &'a str,
    /// `ENVID` of the message, if it had one.
    pub envid: Option<&'a str>,
    /// When the message was queued (unix seconds).
    pub arrival: u64,
    /// Now (unix seconds): the `Date`.
    pub now: u64,
    /// Distinct per report: in the boundary and the Message-ID.
    pub unique: u64,
    /// `RET` of the message, if given.
    pub ret: Option<Ret>,
    /// The recipients it is about.
    pub recipients: &'a [Recipient<'a>],
    /// The message as it was queued.
    pub original: &'a [u8],
}

/// Sanitizes a value for a header or a delivery-status field: one line of
/// printable ASCII (anything else becomes a space).
fn field(text: &str) -> String {
    text.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { ' ' })
        .collect()
}

/// The header of `message`: everything before the first empty line (all of
/// it when there is none), with CRLF line ends.
fn header_of(message: &[u8]) -> &[u8] {
    match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(end) => &message[..end + 2],
        None => message,
    }
}

impl Report<'_> {
    /// The whole report as a message, CRLF line ends.
    pub fn write(&self) -> Vec<u8> {
        let boundary = format!("=_volley_report_{:016x}", self.unique);
        let host = field(self.host);
        let mut date = BytesMut::new();
        write_date(self.now, &mut date);
        let date = String::from_utf8_lossy(&date).into_owned();
        let mut arrival = BytesMut::new();
        write_date(self.arrival, &mut arrival);
        let arrival = String::from_utf8_lossy(&arrival).into_owned();
        let any = |action: Action| self.recipients.iter().any(|f| f.action == action);
        let failed = self.recipients.iter().any(|f| f.action.failed());
        let (subject, why) = if failed && !any(Action::Failed) {
            (
                "Undelivered Mail Returned to Sender (expired)",
                "Your message could not be delivered in the time allowed, and was given up.",
            )
        } else if failed {
            (
                "Undelivered Mail Returned to Sender",
                "Your message could not be delivered to one or more recipients.",
            )
        } else if any(Action::Delayed) {
            (
                "Delayed Mail (still being retried)",
                "Your message has not been delivered yet. It is still being retried; \
                 there is nothing to do.",
            )
        } else {
            (
                "Successful Mail Delivery Report",
                "Your message was delivered to the recipients below, as you asked to be told.",
            )
        };
        let mut out = String::with_capacity(2048);
        let _ = write!(
            out,
            "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
             To: <{to}>\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: <report.{unique:016x}@{host}>\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"{boundary}\"\r\n\
             \r\n\
             This is a MIME-encapsulated message.\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             \r\n\
             This is the mail system at host {host}.\r\n\
             \r\n\
             {why}\r\n\
             \r\n",
            to = field(self.to),
            unique = self.unique,
        );
        for f in self.recipients {
            let _ = write!(out, "<{}>: {}\r\n", field(f.recipient), field(f.diagnostic));
        }
        let _ = write!(
            out,
            "\r\n--{boundary}\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             Reporting-MTA: dns; {host}\r\n"
        );
        if let Some(envid) = self.envid {
            let _ = write!(out, "Original-Envelope-Id: {}\r\n", field(envid));
        }
        let _ = write!(out, "Arrival-Date: {arrival}\r\n");
        for f in self.recipients {
            out.push_str("\r\n");
            if let Some(original) = f.original {
                let _ = write!(out, "Original-Recipient: {}\r\n", field(original));
            }
            let _ = write!(
                out,
                "Final-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\n",
                field(f.recipient),
                f.action.field(),
                field(f.status)
            );
            if let Some(mta) = f.remote_mta {
                let _ = write!(out, "Remote-MTA: dns; {}\r\n", field(mta));
            }
            let kind = if f.remote_mta.is_some() {
                "smtp"
            } else {
                "x-volley"
            };
            let _ = write!(
                out,
                "Diagnostic-Code: {kind}; {}\r\nLast-Attempt-Date: {date}\r\n",
                field(f.diagnostic)
            );
        }
        // Only a failure returns the message (RFC 3461 §4.3); delays and
        // deliveries return its header.
        let whole = failed && self.ret != Some(Ret::Hdrs) && self.original.len() <= RETURN_LIMIT;
        let _ = write!(
            out,
            "\r\n--{boundary}\r\nContent-Type: {}\r\n\r\n",
            if whole {
                "message/rfc822"
            } else {
                "text/rfc822-headers"
            }
        );
        let mut bytes = out.into_bytes();
        let returned = if whole {
            self.original
        } else {
            header_of(self.original)
        };
        // CRLF line ends whatever the original had, and an end of line before
        // the closing boundary.
        let mut previous = 0u8;
        for &b in returned {
            if b == b'\n' && previous != b'\r' {
                bytes.push(b'\r');
            }
            if previous == b'\r' && b != b'\n' {
                bytes.push(b'\n');
            }
            bytes.push(b);
            previous = b;
        }
        if previous == b'\r' {
            bytes.push(b'\n');
        } else if !bytes.ends_with(b"\r\n") {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &[u8] =
        b"From: app@example.test\r\nTo: u@x.test\r\nSubject: hi\r\n\r\nbody line\r\n";

    fn failed(expired: bool) -> Recipient<'static> {
        Recipient {
            recipient: "u@x.test",
            original: Some("rfc822;U@x.test"),
            status: if expired { "4.4.7" } else { "5.1.1" },
            diagnostic: "550 5.1.1 <u@x.test>: Recipient address rejected",
            remote_mta: Some("mx.x.test"),
            action: if expired {
                Action::Expired
            } else {
                Action::Failed
            },
        }
    }

    fn report<'a>(recipients: &'a [Recipient<'a>], ret: Option<Ret>, original: &'a [u8]) -> String {
        let r = Report {
            host: "mta.volley.test",
            to: "app@example.test",
            envid: Some("QQ314159"),
            arrival: 1_772_445_000,
            now: 1_772_445_600,
            unique: 7,
            ret,
            recipients,
            original,
        };
        String::from_utf8(r.write()).unwrap()
    }

    #[test]
    fn a_bounce_report_names_the_recipient_status_and_returns_the_message() {
        let f = [failed(false)];
        let text = report(&f, None, ORIGINAL);
        for needle in [
            "From: Mail Delivery System <MAILER-DAEMON@mta.volley.test>\r\n",
            "To: <app@example.test>\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "Content-Type: multipart/report; report-type=delivery-status;\r\n",
            "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mta.volley.test\r\n\
             Original-Envelope-Id: QQ314159\r\nArrival-Date: Mon, 02 Mar 2026 09:50:00 +0000\r\n",
            "\r\nOriginal-Recipient: rfc822;U@x.test\r\nFinal-Recipient: rfc822; u@x.test\r\n\
             Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.x.test\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 <u@x.test>: Recipient address rejected\r\n",
            "Content-Type: message/rfc822\r\n\r\nFrom: app@example.test\r\n",
            "body line\r\n\r\n--=_volley_report_0000000000000007--\r\n",
        ] {
            assert!(text.contains(needle), "{needle:?} in\n{text}");
        }
        assert!(!text.contains("(expired)"));
        for (i, b) in text.bytes().enumerate() {
            let bare = (b == b'\n' && !text[..i].ends_with('\r'))
                || (b == b'\r' && text.as_bytes().get(i + 1) != Some(&b'\n'));
            assert!(!bare, "bare line end at {i}");
        }
    }

    #[test]
    fn ret_hdrs_and_large_messages_return_the_header_only() {
        let f = [failed(true)];
        let text = report(&f, Some(Ret::Hdrs), ORIGINAL);
        assert!(text.contains("Content-Type: text/rfc822-headers\r\n\r\nFrom: app@example.test\r\nTo: u@x.test\r\nSubject: hi\r\n\r\n--"), "{text}");
        assert!(!text.contains("body line"));
        assert!(text.contains("Subject: Undelivered Mail Returned to Sender (expired)"));
        assert!(text.contains("Status: 4.4.7"));
        let mut big = ORIGINAL.to_vec();
        big.extend(std::iter::repeat_n(b'x', RETURN_LIMIT));
        let text = report(&f, Some(Ret::Full), &big);
        assert!(text.contains("text/rfc822-headers") && !text.contains("xxxx"));
    }

    #[test]
    fn delay_and_success_reports_say_so_and_return_the_header_only() {
        for (action, subject, field) in [
            (
                Action::Delayed,
                "Subject: Delayed Mail (still being retried)",
                "Action: delayed",
            ),
            (
                Action::Delivered,
                "Subject: Successful Mail Delivery Report",
                "Action: delivered",
            ),
        ] {
            let f = [Recipient {
                action,
                ..failed(false)
            }];
            let text = report(&f, Some(Ret::Full), ORIGINAL);
            assert!(text.contains(subject) && text.contains(field), "{text}");
            assert!(
                text.contains("text/rfc822-headers") && !text.contains("body line"),
                "{text}"
            );
        }
    }

    #[test]
    fn outside_text_cannot_add_fields() {
        let f = [Recipient {
            recipient: "u@x.test\r\nBcc: evil@x.test",
            diagnostic: "550 no\r\nX-Evil: 1",
            ..failed(false)
        }];
        let text = report(&f, None, b"Subject: bare\nLF only\n\nbody\n");
        assert!(
            !text.contains("\r\nBcc:") && !text.contains("\r\nX-Evil:"),
            "{text}"
        );
        assert!(text.contains("Subject: bare\r\nLF only\r\n"), "{text}");
    }
}
