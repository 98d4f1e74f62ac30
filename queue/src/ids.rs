//! Campaign ids, the first field of a batch file's name: a campaign's are
//! milliseconds since the epoch; a received (relayed) message's are
//! [`INBOUND_ID_BASE`] plus microseconds, so the two never meet.

/// The lowest campaign id of a received message. Ids are this plus microseconds
/// since the epoch: above every campaign id (milliseconds since the epoch) for
/// the next 140,000 years, and below 2^53 (exact in JSON readers that use
/// doubles) until 2112.
pub const INBOUND_ID_BASE: u64 = 1 << 52;

/// Whether a campaign id is a received message's.
pub fn is_inbound_id(campaign_id: u64) -> bool {
    campaign_id >= INBOUND_ID_BASE
}

/// The queue id of a received message as told to the client and logged:
/// its campaign id in 16 lowercase hex digits, the prefix of its batch files'
/// names (`active/<queue id>-<batch>.vqb`) and the name of its inbound file.
pub fn queue_id(campaign_id: u64) -> String {
    format!("{campaign_id:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_ids_are_above_campaign_ids() {
        let campaign = 4_102_444_800_000; // 2100-01-01 in milliseconds
        assert!(!is_inbound_id(campaign));
        assert!(is_inbound_id(INBOUND_ID_BASE));
        assert_eq!(queue_id(INBOUND_ID_BASE + 1), "0010000000000001");
    }
}
