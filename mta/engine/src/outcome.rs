//! What a reply (or a failure to get one) means for a recipient: one pure function,
//! [`decide`], tested by a table.

use std::time::Duration;

use volley_conf::RetryConfig;

/// Why a recipient was refused for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceClass {
    /// 5.1.x: bad destination mailbox or address (unknown user, bad syntax).
    BadMailbox,
    /// 5.2.x: mailbox full, disabled or over quota, refused permanently.
    Mailbox,
    /// 5.7.x: policy or security (spam, authentication, blocklist).
    Policy,
    /// 5.6.x / 5.3.x: message content or size.
    Content,
    /// The domain does not exist (NXDOMAIN) or accepts no mail (null MX).
    NoSuchDomain,
    /// Any other permanent failure (5xx without an enhanced code that tells more).
    Other,
}

impl BounceClass {
    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            BounceClass::BadMailbox => "bad_mailbox",
            BounceClass::Mailbox => "mailbox",
            BounceClass::Policy => "policy",
            BounceClass::Content => "content",
            BounceClass::NoSuchDomain => "no_such_domain",
            BounceClass::Other => "other",
        }
    }

    /// Classifies by the enhanced status code's subject (RFC 3463), if any.
    pub fn from_enhanced(subject: Option<u16>) -> BounceClass {
        match subject {
            Some(1) => BounceClass::BadMailbox,
            Some(2) => BounceClass::Mailbox,
            Some(7) => BounceClass::Policy,
            Some(3) | Some(6) => BounceClass::Content,
            _ => BounceClass::Other,
        }
    }
}

/// The result of one attempt for one recipient, before retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server accepted the message for this recipient (2xx).
    Accepted,
    /// Try again later: a 4xx reply, or a connection-level or DNS failure.
    Temporary,
    /// Refused for good.
    Permanent(BounceClass),
}

impl Verdict {
    /// The verdict for an SMTP reply code and the subject of its enhanced code.
    pub fn from_reply(code: u16, enhanced_subject: Option<u16>) -> Verdict {
        match code {
            200..=299 => Verdict::Accepted,
            500..=599 => Verdict::Permanent(BounceClass::from_enhanced(enhanced_subject)),
            // 4xx, and anything unexpected (1xx, 3xx at the wrong time): retry.
            _ => Verdict::Temporary,
        }
    }
}

/// What happens to the recipient now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Final: delivered.
    Delivered,
    /// Retried at this unix second.
    Deferred {
        /// Unix seconds of the next attempt.
        next_attempt: u64,
    },
    /// Final: refused for good.
    Bounced(BounceClass),
    /// Final: still failing temporarily when the retry period ran out.
    Expired,
}

impl Outcome {
    /// The `status` field of the delivery log.
    pub fn status(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Bounced(_) => "bounced",
            Outcome::Expired => "expired",
        }
    }

    /// Its place in [`crate::metrics::OUTCOMES`].
    pub fn metric(self) -> usize {
        match self {
            Outcome::Delivered => 0,
            Outcome::Deferred { .. } => 1,
            Outcome::Bounced(_) => 2,
            Outcome::Expired => 3,
        }
    }
}

/// Decides a recipient's outcome. `attempts` counts this attempt (1 for the
/// first); `queued_at` is when the recipient entered the queue (its batch's
/// creation time); times are unix seconds. A temporary failure whose next attempt
/// would fall after `queued_at + expire` expires now rather than waiting for it.
pub fn decide(
    verdict: Verdict,
    attempts: u32,
    queued_at: u64,
    now: u64,
    retry: &RetryConfig,
) -> Outcome {
    match verdict {
        Verdict::Accepted => Outcome::Delivered,
        Verdict::Permanent(class) => Outcome::Bounced(class),
        Verdict::Temporary => {
            let next = now.saturating_add(secs(retry.interval_after(attempts)));
            let deadline = queued_at.saturating_add(secs(retry.expire));
            if next > deadline {
                Outcome::Expired
            } else {
                Outcome::Deferred { next_attempt: next }
            }
        }
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_classify_by_code_and_enhanced_subject() {
        let table = [
            (250, None, Verdict::Accepted),
            (251, Some(1), Verdict::Accepted),
            (450, Some(2), Verdict::Temporary),
            (451, Some(7), Verdict::Temporary),
            (421, None, Verdict::Temporary),
            (354, None, Verdict::Temporary),
            (550, Some(1), Verdict::Permanent(BounceClass::BadMailbox)),
            (553, Some(1), Verdict::Permanent(BounceClass::BadMailbox)),
            (552, Some(2), Verdict::Permanent(BounceClass::Mailbox)),
            (550, Some(7), Verdict::Permanent(BounceClass::Policy)),
            (554, Some(6), Verdict::Permanent(BounceClass::Content)),
            (552, Some(3), Verdict::Permanent(BounceClass::Content)),
            (550, None, Verdict::Permanent(BounceClass::Other)),
            (554, Some(0), Verdict::Permanent(BounceClass::Other)),
        ];
        for (code, subject, expected) in table {
            assert_eq!(
                Verdict::from_reply(code, subject),
                expected,
                "{code} x.{subject:?}"
            );
        }
    }

    #[test]
    fn temporary_failures_defer_until_expiry() {
        let retry = RetryConfig {
            intervals: vec![Duration::from_secs(60), Duration::from_secs(600)],
            expire: Duration::from_secs(3600),
        };
        let t0 = 1_000_000;
        let table = [
            // (attempts, now, expected)
            (
                1,
                t0,
                Outcome::Deferred {
                    next_attempt: t0 + 60,
                },
            ),
            (
                2,
                t0 + 60,
                Outcome::Deferred {
                    next_attempt: t0 + 660,
                },
            ),
            (
                3,
                t0 + 660,
                Outcome::Deferred {
                    next_attempt: t0 + 1260,
                },
            ),
            (
                6,
                t0 + 3000,
                Outcome::Deferred {
                    next_attempt: t0 + 3600,
                },
            ),
            (7, t0 + 3001, Outcome::Expired),
        ];
        for (attempts, now, expected) in table {
            assert_eq!(
                decide(Verdict::Temporary, attempts, t0, now, &retry),
                expected,
                "attempt {attempts}"
            );
        }
        assert_eq!(
            decide(Verdict::Accepted, 9, t0, t0 + 9999, &retry),
            Outcome::Delivered
        );
        assert_eq!(
            decide(Verdict::Permanent(BounceClass::Policy), 1, t0, t0, &retry),
            Outcome::Bounced(BounceClass::Policy)
        );
    }
}
