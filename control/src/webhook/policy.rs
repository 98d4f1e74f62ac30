//! What a webhook does after a try: pure functions of the answer and the
//! retry state, tested by tables.

/// Seconds before the next try after the n-th failure in a row (n = 1 is the
/// first): quick at first, so that an endpoint down for a minute gets its
/// events within seconds of coming back, then every ten minutes.
const BACKOFF: &[i64] = &[1, 2, 5, 10, 20, 30, 60, 120, 300, 600];

/// Seconds to wait after `failures` failed tries in a row (≥ 1).
pub fn backoff(failures: i64) -> i64 {
    let i = usize::try_from(failures.max(1) - 1).unwrap_or(usize::MAX);
    BACKOFF.get(i).copied().unwrap_or(600)
}

/// What to do after a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered (2xx): move on.
    Delivered,
    /// 410 Gone: the endpoint asks to be forgotten; disable the webhook.
    Disable,
    /// Failed: try again at this unix second.
    Retry(i64),
    /// Failed for longer than the webhook retries: count its events as
    /// failed and move on.
    GiveUp,
}

/// The verdict on a try at unix second `now` that got HTTP `status` (`None`:
/// no answer: refused, reset, timed out), the request having failed
/// `failures` times before and first at `failing_since`, for a webhook that
/// retries for `retry_for` seconds.
pub fn verdict(
    status: Option<u16>,
    failures: i64,
    failing_since: Option<i64>,
    now: i64,
    retry_for: i64,
) -> Verdict {
    match status {
        Some(200..=299) => return Verdict::Delivered,
        Some(410) => return Verdict::Disable,
        _ => {}
    }
    let since = failing_since.unwrap_or(now);
    let next = now + backoff(failures + 1);
    if next - since > retry_for {
        Verdict::GiveUp
    } else {
        Verdict::Retry(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_ten_minutes() {
        let got: Vec<i64> = (1..=12).map(backoff).collect();
        assert_eq!(got, [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 600, 600]);
        assert_eq!(backoff(0), 1);
        assert_eq!(backoff(i64::MAX), 600);
    }

    #[test]
    fn verdicts() {
        const DAY: i64 = 86_400;
        let table = [
            (Some(200), 0, None, 100, Verdict::Delivered),
            (Some(204), 5, Some(0), 100, Verdict::Delivered),
            (Some(410), 0, None, 100, Verdict::Disable),
            (Some(500), 0, None, 100, Verdict::Retry(101)),
            (None, 0, None, 100, Verdict::Retry(101)),
            (Some(301), 1, Some(99), 100, Verdict::Retry(102)),
            (Some(404), 9, Some(0), 100, Verdict::Retry(700)),
            // Three days of failures: given up.
            (Some(503), 400, Some(0), 3 * DAY - 100, Verdict::GiveUp),
            (
                Some(503),
                400,
                Some(0),
                3 * DAY - 600,
                Verdict::Retry(3 * DAY),
            ),
        ];
        for (status, failures, since, now, want) in table {
            assert_eq!(
                verdict(status, failures, since, now, 3 * DAY),
                want,
                "{status:?} {failures} {since:?} {now}"
            );
        }
    }
}
