//! The 8-byte state slot each recipient has in its batch file.
//!
//! A slot is one little-endian `u64`, written with a single atomic store so a reader
//! (or a process started after a crash) sees either the old or the new value, never a
//! mix. Bit layout (see FORMAT.md):
//!
//! | bits   | field          |
//! |--------|----------------|
//! | 0..8   | check: CRC-8 of bits 8..64 |
//! | 8..12  | state          |
//! | 12..20 | attempts       |
//! | 20..30 | last reply code (0 = none) |
//! | 30..64 | next attempt, unix seconds (34 bits, until year 2514) |
//!
//! The check byte makes corruption of the mutable region detectable: any change
//! confined to one byte of a slot fails it. An all-zero slot is valid: a fresh
//! pending recipient, so new files need no slot initialisation beyond zero fill.

use std::fmt;

/// Where a recipient stands in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum State {
    /// Not yet attempted, or due again after a deferral was cleared.
    Pending = 0,
    /// Handed to an SMTP transaction whose reply is not recorded yet. After a crash,
    /// these are the only recipients that may have been delivered twice.
    InFlight = 1,
    /// Accepted by the receiving server (2xx). Final.
    Delivered = 2,
    /// Temporarily refused (4xx or a connection failure); retried at `next_attempt`.
    Deferred = 3,
    /// Permanently refused (5xx, null MX, NXDOMAIN). Final.
    Bounced = 4,
    /// Deferred for longer than the retry limit allows. Final.
    Expired = 5,
}

impl State {
    /// Every state, in slot-code order (for tables and tests).
    pub const ALL: [State; 6] = [
        State::Pending,
        State::InFlight,
        State::Delivered,
        State::Deferred,
        State::Bounced,
        State::Expired,
    ];

    /// Whether no further delivery attempt will be made for this recipient.
    pub fn is_final(self) -> bool {
        matches!(self, State::Delivered | State::Bounced | State::Expired)
    }

    /// The lower-case name used in logs, tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::InFlight => "in_flight",
            State::Delivered => "delivered",
            State::Deferred => "deferred",
            State::Bounced => "bounced",
            State::Expired => "expired",
        }
    }

    fn from_code(code: u8) -> Option<State> {
        State::ALL.get(usize::from(code)).copied()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The largest reply code a slot can hold (10 bits).
pub const MAX_CODE: u16 = 1023;
/// The largest next-attempt time a slot can hold (34 bits of unix seconds).
pub const MAX_NEXT_ATTEMPT: u64 = (1 << 34) - 1;

/// Why a final slot is final when no reply made it so. A final recipient is never
/// attempted again, so its `next_attempt` field is free; these values in it say
/// what finalised it (0: a reply or the retry limit did).
pub mod mark {
    /// A relayed recipient whose outcome was reported to the sender.
    pub const REPORTED: u64 = 1;
    /// Finalised unsent (bounced, code 0) because it is on the suppression list.
    pub const SUPPRESSED: u64 = 2;
    /// Finalised unsent (expired) because its campaign was cancelled.
    pub const CANCELLED: u64 = 3;
    /// Finalised unsent (expired) because its campaign's `stop_at` passed.
    pub const STOPPED: u64 = 4;
    /// Finalised unsent (expired) by an operator (`volley queue purge`).
    pub const PURGED: u64 = 5;
}

/// What a final slot's outcome is called in reports and tables: the state's name,
/// or `suppressed`, `cancelled`, `purged`, `expired` for the recipients finalised
/// unsent.
pub fn final_status(slot: Slot) -> &'static str {
    match (slot.state, slot.next_attempt) {
        (State::Bounced, mark::SUPPRESSED) if slot.code == 0 => "suppressed",
        (State::Expired, mark::CANCELLED) => "cancelled",
        (State::Expired, mark::PURGED) => "purged",
        (state, _) => state.name(),
    }
}

/// One recipient's delivery state, as decoded from its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    /// Where the recipient stands.
    pub state: State,
    /// Delivery attempts made so far (saturates at 255).
    pub attempts: u8,
    /// The last SMTP reply code received, 0 if none (saturates at [`MAX_CODE`]).
    pub code: u16,
    /// Unix time (seconds) of the next attempt for a deferred recipient, else 0
    /// (saturates at [`MAX_NEXT_ATTEMPT`]).
    pub next_attempt: u64,
}

/// Why a slot value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The check byte does not match the other seven bytes.
    #[error("check byte mismatch (slot value {0:#018x})")]
    Check(u64),
    /// The state field holds a value no state has.
    #[error("unknown state code {0}")]
    UnknownState(u8),
}

impl Slot {
    /// A fresh recipient: pending, never attempted. Encodes to 0.
    pub const PENDING: Slot = Slot {
        state: State::Pending,
        attempts: 0,
        code: 0,
        next_attempt: 0,
    };

    /// Packs the slot into its on-disk `u64`, saturating fields that do not fit.
    pub fn encode(self) -> u64 {
        let data = (self.state as u64 & 0xf)
            | (u64::from(self.attempts) << 4)
            | (u64::from(self.code.min(MAX_CODE)) << 12)
            | (self.next_attempt.min(MAX_NEXT_ATTEMPT) << 22);
        (data << 8) | u64::from(crc8(data))
    }

    /// Unpacks an on-disk `u64`, checking its check byte and state.
    pub fn decode(raw: u64) -> Result<Slot, SlotError> {
        let data = raw >> 8;
        if crc8(data) != (raw & 0xff) as u8 {
            return Err(SlotError::Check(raw));
        }
        let state_code = (data & 0xf) as u8;
        let state = State::from_code(state_code).ok_or(SlotError::UnknownState(state_code))?;
        Ok(Slot {
            state,
            attempts: ((data >> 4) & 0xff) as u8,
            code: ((data >> 12) & 0x3ff) as u16,
            next_attempt: data >> 22,
        })
    }
}

/// CRC-8 (polynomial 0x07) of the low 56 bits of `data`, as 7 little-endian bytes.
/// Hand-written because it is 15 lines on the per-slot path; any CRC with a non-zero
/// constant term detects every error confined to one byte, which is what we need.
fn crc8(data: u64) -> u8 {
    let mut crc = 0u8;
    for byte in &data.to_le_bytes()[..7] {
        crc = CRC8_TABLE[usize::from(crc ^ byte)];
    }
    crc
}

const CRC8_TABLE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_state() -> impl Strategy<Value = State> {
        (0usize..State::ALL.len()).prop_map(|i| State::ALL[i])
    }

    proptest! {
        #[test]
        fn slots_round_trip(
            state in any_state(),
            attempts in any::<u8>(),
            code in 0u16..=MAX_CODE,
            next_attempt in 0u64..=MAX_NEXT_ATTEMPT,
        ) {
            let slot = Slot { state, attempts, code, next_attempt };
            prop_assert_eq!(Slot::decode(slot.encode()), Ok(slot));
        }

        #[test]
        fn any_single_byte_change_is_detected(
            state in any_state(),
            attempts in any::<u8>(),
            code in 0u16..=MAX_CODE,
            next_attempt in 0u64..=MAX_NEXT_ATTEMPT,
            byte in 0usize..8,
            flip in 1u8..=255,
        ) {
            let raw = Slot { state, attempts, code, next_attempt }.encode();
            let mut bytes = raw.to_le_bytes();
            bytes[byte] ^= flip;
            prop_assert!(Slot::decode(u64::from_le_bytes(bytes)).is_err());
        }
    }

    #[test]
    fn pending_is_zero() {
        assert_eq!(Slot::PENDING.encode(), 0);
        assert_eq!(Slot::decode(0), Ok(Slot::PENDING));
    }

    #[test]
    fn out_of_range_fields_saturate() {
        let slot = Slot {
            state: State::Deferred,
            attempts: 3,
            code: 60_000,
            next_attempt: u64::MAX,
        };
        let back = Slot::decode(slot.encode());
        assert_eq!(
            back,
            Ok(Slot {
                code: MAX_CODE,
                next_attempt: MAX_NEXT_ATTEMPT,
                ..slot
            })
        );
    }

    #[test]
    fn unknown_state_is_an_error_not_a_panic() {
        let data: u64 = 0xf; // state code 15
        let raw = (data << 8) | u64::from(crc8(data));
        assert_eq!(Slot::decode(raw), Err(SlotError::UnknownState(15)));
    }
}
