//! Counting recipients by state, per batch and per destination domain.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::format::{BatchView, FormatError};
use crate::slot::State;

/// Recipients per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Not yet attempted.
    pub pending: u64,
    /// In an SMTP transaction whose reply is not recorded.
    pub in_flight: u64,
    /// Accepted by the destination.
    pub delivered: u64,
    /// Waiting for a retry.
    pub deferred: u64,
    /// Permanently refused.
    pub bounced: u64,
    /// Gave up after the retry limit.
    pub expired: u64,
}

impl StateCounts {
    /// Adds `n` recipients in `state`.
    pub fn add(&mut self, state: State, n: u64) {
        *self.get_mut(state) += n;
    }

    /// Recipients in `state`.
    pub fn get(&self, state: State) -> u64 {
        match state {
            State::Pending => self.pending,
            State::InFlight => self.in_flight,
            State::Delivered => self.delivered,
            State::Deferred => self.deferred,
            State::Bounced => self.bounced,
            State::Expired => self.expired,
        }
    }

    fn get_mut(&mut self, state: State) -> &mut u64 {
        match state {
            State::Pending => &mut self.pending,
            State::InFlight => &mut self.in_flight,
            State::Delivered => &mut self.delivered,
            State::Deferred => &mut self.deferred,
            State::Bounced => &mut self.bounced,
            State::Expired => &mut self.expired,
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &StateCounts) {
        for state in State::ALL {
            self.add(state, other.get(state));
        }
    }

    /// All recipients.
    pub fn total(&self) -> u64 {
        State::ALL.iter().map(|&s| self.get(s)).sum()
    }

    /// Recipients not in a final state (pending, in flight, deferred).
    pub fn unfinished(&self) -> u64 {
        self.pending + self.in_flight + self.deferred
    }
}

/// Recipients by state for each destination domain (lower-cased), like Postfix's
/// qshape: what `volley queue summary` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DomainSummary {
    /// Counts per domain, sorted by domain.
    pub domains: BTreeMap<String, StateCounts>,
    /// Sum over all domains.
    pub total: StateCounts,
    /// Batch files counted.
    pub batches: u64,
}

impl DomainSummary {
    /// Adds every recipient of a whole-file view (made by [`BatchView::parse`]).
    pub fn add_batch(&mut self, view: &BatchView<'_>) -> Result<(), FormatError> {
        // Count per domain-table entry first: one map lookup per domain, not per
        // recipient.
        let domains = view.domains();
        let mut per_domain = vec![StateCounts::default(); domains.len()];
        for (i, recipient) in view.recipients().enumerate() {
            let state = view.slot(i)?.state;
            if let Some(counts) = per_domain.get_mut(recipient.domain_index as usize) {
                counts.add(state, 1);
            }
        }
        for (domain, counts) in domains.iter().zip(&per_domain) {
            let name = String::from_utf8_lossy(domain).to_ascii_lowercase();
            self.domains.entry(name).or_default().merge(counts);
            self.total.merge(counts);
        }
        self.batches += 1;
        Ok(())
    }
}
