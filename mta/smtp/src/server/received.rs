//! The `Received:` trace header (RFC 5321 §4.4) put in front of each accepted
//! message.

use bytes::{BufMut, BytesMut};

use super::Envelope;
use crate::date::write_date;

/// Writes the `Received:` header for `envelope` as accepted by `hostname` at
/// `now_secs` (Unix time), CRLF-terminated and folded:
///
/// ```text
/// Received: from client.test ([192.0.2.7])
///         by mx.acme.test (volley) with ESMTPSA
///         for <u@acme.test>; Mon, 02 Mar 2026 10:00:00 +0000
/// ```
///
/// The `with` keyword follows RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA, SMTP); the
/// `for` clause is only given for a single recipient, so that a message to many
/// does not tell each of them who else got it.
pub fn write_received(envelope: &Envelope, hostname: &str, now_secs: u64, out: &mut BytesMut) {
    out.put_slice(b"Received: from ");
    put_clean(out, &envelope.helo);
    out.put_slice(b" ([");
    let ip = envelope.client_ip.to_canonical();
    if ip.is_ipv6() {
        out.put_slice(b"IPv6:");
    }
    out.put_slice(ip.to_string().as_bytes());
    out.put_slice(b"])\r\n\tby ");
    put_clean(out, hostname);
    out.put_slice(b" (volley) with ");
    out.put_slice(envelope.protocol().as_bytes());
    if let [rcpt] = envelope.rcpt_to.as_slice() {
        out.put_slice(b"\r\n\tfor <");
        put_clean(out, rcpt);
        out.put_u8(b'>');
    }
    out.put_slice(b"; ");
    write_date(now_secs, out);
    out.put_slice(b"\r\n");
}

/// Copies `text` without control characters, spaces or `()<>;` (a HELO name is the
/// client's to choose; it must not be able to add header lines or comments).
fn put_clean(out: &mut BytesMut, text: &str) {
    for c in text.chars() {
        if !(c.is_control() || c.is_whitespace() || "()<>;".contains(c)) {
            let mut buf = [0u8; 4];
            out.put_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn header() {
        let mut envelope = Envelope {
            mail_from: "a@b.test".into(),
            rcpt_to: vec!["u@acme.test".into()],
            eight_bit_mime: false,
            smtputf8: false,
            client_ip: IpAddr::from([192, 0, 2, 7]),
            helo: "client.test\r\nX-Evil: 1".into(),
            esmtp: true,
            user: Some("app".into()),
            tls: true,
            ret: None,
            envid: None,
            rcpt_dsn: Vec::new(),
        };
        let mut out = BytesMut::new();
        write_received(&envelope, "mx.acme.test", 1_772_445_600, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).ok(),
            Some(
                "Received: from client.testX-Evil:1 ([192.0.2.7])\r\n\tby mx.acme.test (volley) \
                 with ESMTPSA\r\n\tfor <u@acme.test>; Mon, 02 Mar 2026 10:00:00 +0000\r\n"
            )
        );
        envelope.rcpt_to.push("v@acme.test".into());
        envelope.client_ip = "::1".parse().unwrap_or(envelope.client_ip);
        envelope.user = None;
        envelope.tls = false;
        envelope.helo = "c".into();
        out.clear();
        write_received(&envelope, "mx", 0, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).ok(),
            Some(
                "Received: from c ([IPv6:::1])\r\n\tby mx (volley) with ESMTP; \
                 Thu, 01 Jan 1970 00:00:00 +0000\r\n"
            )
        );
    }
}
