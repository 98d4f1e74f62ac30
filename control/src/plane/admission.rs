//! What delivery may do with a campaign's batches now: a pure decision from the
//! campaign's state and schedule.

use crate::store::campaigns::CampaignState;

/// What to do with a campaign's live batches at a round's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver from them.
    Open,
    /// Not yet: its `start_at` is this unix second.
    WaitUntil(u64),
    /// Not until resumed (suspended, or still being partitioned).
    Hold,
    /// Finalise every unsent recipient as cancelled.
    Cancel,
    /// Finalise every unsent recipient as expired: `stop_at` has passed.
    Stop,
}

/// The decision for a campaign in `state`, partitioned or not, with its
/// `start_at` and `stop_at`, at unix second `now`.
pub fn decide(
    state: CampaignState,
    partitioned: bool,
    start_at: Option<i64>,
    stop_at: Option<i64>,
    now: i64,
) -> Decision {
    if state == CampaignState::Cancelled {
        return Decision::Cancel;
    }
    if stop_at.is_some_and(|at| at <= now) {
        return Decision::Stop;
    }
    match state {
        CampaignState::Suspended => Decision::Hold,
        // A partitioning finishes before anything is sent: its batches are the
        // same after a crash, but the campaign's counts are only known then.
        _ if !partitioned => Decision::Hold,
        CampaignState::Scheduled => match start_at {
            Some(at) if at > now => Decision::WaitUntil(at as u64),
            _ => Decision::Open,
        },
        _ => Decision::Open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CampaignState::*;

    #[test]
    fn decisions() {
        let table = [
            // (state, partitioned, start_at, stop_at, decision) at now = 100
            (Queued, true, None, None, Decision::Open),
            (Sending, true, None, None, Decision::Open),
            (Sending, true, None, Some(101), Decision::Open),
            (Sending, true, None, Some(100), Decision::Stop),
            (Suspended, true, None, Some(50), Decision::Stop),
            (Suspended, true, None, None, Decision::Hold),
            (Queued, false, None, None, Decision::Hold),
            (Scheduled, true, Some(150), None, Decision::WaitUntil(150)),
            (Scheduled, true, Some(100), None, Decision::Open),
            (Scheduled, false, Some(150), None, Decision::Hold),
            (Cancelled, true, None, Some(50), Decision::Cancel),
            (Cancelled, false, None, None, Decision::Cancel),
            (Completed, true, None, None, Decision::Open),
        ];
        for (state, partitioned, start, stop, want) in table {
            assert_eq!(
                decide(state, partitioned, start, stop, 100),
                want,
                "{state:?} partitioned={partitioned} start={start:?} stop={stop:?}"
            );
        }
    }
}
