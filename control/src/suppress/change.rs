//! Changes to a suppression list as they travel between the processes of a
//! fleet: every entry this process adds or lifts is queued as a [`Change`]
//! for the others ([`SuppressionStore::take_changes`]); theirs come back and
//! are applied without being queued again ([`SuppressionStore::apply_changes`]).
//! Bounce counts stay local: the entry a count leads to travels.

use serde::{Deserialize, Serialize};

use super::record::{self, Record};
use super::{check_address, check_domain, clean_text, SuppressError, SuppressionStore};

/// One change to a suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `add` or `remove`.
    pub op: String,
    /// Unix second it was made (kept as it travels: the same change is the
    /// same row everywhere).
    pub at: u64,
    /// The sending domain, or `*`.
    pub domain: String,
    /// The address, normalized.
    pub address: String,
    /// Why (adds).
    #[serde(default)]
    pub reason: String,
    /// More about it (adds).
    #[serde(default)]
    pub detail: String,
}

/// The entry changes among journal `lines` (bounce counts left out).
pub(super) fn changes_of(lines: &str) -> Vec<Change> {
    lines
        .lines()
        .filter_map(|line| match record::parse(line).ok()? {
            Record::Add {
                since,
                domain,
                address,
                reason,
                detail,
            } => Some(Change {
                op: "add".to_owned(),
                at: since,
                domain: domain.to_owned(),
                address: address.to_owned(),
                reason: reason.to_owned(),
                detail: detail.to_owned(),
            }),
            Record::Remove {
                at,
                domain,
                address,
            } => Some(Change {
                op: "remove".to_owned(),
                at,
                domain: domain.to_owned(),
                address: address.to_owned(),
                reason: String::new(),
                detail: String::new(),
            }),
            Record::Bounce { .. } => None,
        })
        .collect()
}

impl SuppressionStore {
    /// The entry changes made through this store since the last call, for
    /// the other processes of the fleet.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.outgoing)
    }

    /// Puts back changes [`SuppressionStore::take_changes`] gave that could
    /// not be handed on (they go with the next).
    pub fn untake_changes(&mut self, mut changes: Vec<Change>) {
        changes.append(&mut self.outgoing);
        self.outgoing = changes;
    }

    /// Applies other processes' changes (not queued for them again), in one
    /// append and one sync; a change with a bad address or domain is
    /// skipped. Answers how many changed this list.
    pub fn apply_changes(&mut self, changes: &[Change]) -> Result<usize, SuppressError> {
        struct Checked {
            add: bool,
            at: u64,
            domain: String,
            address: String,
            reason: String,
            detail: String,
        }
        let checked: Vec<Checked> = changes
            .iter()
            .filter(|c| c.op == "add" || c.op == "remove")
            .filter_map(|c| {
                Some(Checked {
                    add: c.op == "add",
                    at: c.at,
                    domain: check_domain(&c.domain).ok()?,
                    address: check_address(&c.address).ok()?,
                    reason: clean_text(&c.reason),
                    detail: clean_text(&c.detail),
                })
            })
            .collect();
        self.remote = true;
        let result = self.write(|list, lines| {
            let mut applied = 0;
            for c in &checked {
                let record = if c.add {
                    Record::Add {
                        since: c.at,
                        domain: &c.domain,
                        address: &c.address,
                        reason: &c.reason,
                        detail: &c.detail,
                    }
                } else {
                    Record::Remove {
                        at: c.at,
                        domain: &c.domain,
                        address: &c.address,
                    }
                };
                if list.apply(&record) {
                    record.write(lines);
                    applied += 1;
                }
            }
            applied
        });
        self.remote = false;
        result
    }
}

/// Where a process keeps its place in the fleet's log: `SPOOL/suppress/fleet.cursor`.
pub fn cursor_path(spool_root: &std::path::Path) -> std::path::PathBuf {
    SuppressionStore::dir(spool_root).join("fleet.cursor")
}

/// The place kept at `path` (0, the log's start, when none: applying the
/// log again changes nothing that is already there).
pub fn read_cursor(path: &std::path::Path) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Keeps `cursor` at `path` (written whole, renamed into place; not synced:
/// a cursor lost to a power cut only means applying some changes again).
pub fn write_cursor(path: &std::path::Path, cursor: i64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{cursor}\n"))?;
    std::fs::rename(&tmp, path)
}
