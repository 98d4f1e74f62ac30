//! Campaign records: what a campaign is made of and how far its partitioning got.
//!
//! A record is written (durably) before any batch, naming the template's content
//! hash and the recipient list; it is marked partitioned once every batch is in the
//! spool. A record left unpartitioned by a crash tells `volley run` to finish the
//! partitioning from the same list (see [`crate::partition`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use volley_queue::{QueueError, Spool};

/// A campaign as recorded in `SPOOL/campaigns/ID.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    /// Campaign id (also in every batch header).
    pub id: u64,
    /// Content hash of the stored template, 64 hex digits.
    pub content_hash: String,
    /// The recipient list (absolute path).
    pub recipients: PathBuf,
    /// Recipients per batch.
    pub batch_size: u32,
    /// Unix seconds of submission (the queue time of every recipient).
    pub created_at: u64,
    /// Whether every batch has been written.
    pub partitioned: bool,
    /// Accepted recipients (known once partitioned).
    pub recipient_count: u64,
    /// Rows skipped as bad.
    pub rejected_rows: u64,
    /// Recipients dropped because they were on the suppression list (their
    /// addresses are in `CAMPAIGN.suppressed`, see [`Campaign::save_suppressed`]).
    #[serde(default)]
    pub suppressed: u64,
}

/// Why a campaign record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The spool failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A record is not valid JSON.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
}

/// Hex of a content hash.
pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits.
pub fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Campaign {
    /// A new campaign id: milliseconds since the epoch, bumped past any id
    /// already recorded in the spool.
    pub fn next_id(spool: &Spool) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let highest = Campaign::list(spool)
            .ok()
            .and_then(|l| l.iter().map(|c| c.id).max())
            .unwrap_or(0);
        now.max(highest + 1)
    }

    /// Where the record lives.
    pub fn path(spool: &Spool, id: u64) -> PathBuf {
        spool.campaigns_dir().join(format!("{id:016x}.json"))
    }

    /// Writes (or rewrites) the record durably.
    pub fn save(&self, spool: &Spool) -> Result<(), CampaignError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| CampaignError::Corrupt {
            path: Campaign::path(spool, self.id),
            reason: e.to_string(),
        })?;
        spool.write_atomic(&Campaign::path(spool, self.id), &bytes)?;
        Ok(())
    }

    /// Where the addresses dropped as suppressed are kept: `CAMPAIGN.suppressed`
    /// beside the record, one normalised address per line.
    pub fn suppressed_path(spool: &Spool, id: u64) -> PathBuf {
        spool.campaigns_dir().join(format!("{id:016x}.suppressed"))
    }

    /// Records (durably) the addresses dropped as suppressed, before the campaign
    /// record is first saved: a resumed partitioning drops exactly these, so its
    /// cut is the same as the first one's. Nothing is written for none.
    pub fn save_suppressed<'a>(
        &self,
        spool: &Spool,
        addresses: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), CampaignError> {
        let mut text = String::new();
        for a in addresses {
            text.push_str(&crate::suppress::normalize(a));
            text.push('\n');
        }
        if text.is_empty() {
            return Ok(());
        }
        spool.write_atomic(&Campaign::suppressed_path(spool, self.id), text.as_bytes())?;
        Ok(())
    }

    /// The addresses (normalised) recorded by [`Campaign::save_suppressed`];
    /// empty when there is no file.
    pub fn load_suppressed(spool: &Spool, id: u64) -> Result<HashSet<String>, CampaignError> {
        let path = Campaign::suppressed_path(spool, id);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(QueueError::io("read", &path, e).into()),
        }
    }

    /// Reads one record.
    pub fn load(path: &Path) -> Result<Campaign, CampaignError> {
        let bytes = std::fs::read(path).map_err(|e| QueueError::io("read", path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| CampaignError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Every record in the spool, by id.
    pub fn list(spool: &Spool) -> Result<Vec<Campaign>, CampaignError> {
        let dir = spool.campaigns_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(QueueError::io("list", &dir, e).into()),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(Campaign::load(&path)?);
            }
        }
        out.sort_by_key(|c| c.id);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_ids_increase() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let c = Campaign {
            id: Campaign::next_id(&spool),
            content_hash: hex(&[0xab; 32]),
            recipients: "/tmp/list.csv".into(),
            batch_size: 100,
            created_at: 1,
            partitioned: false,
            recipient_count: 0,
            rejected_rows: 0,
            suppressed: 1,
        };
        c.save(&spool).unwrap();
        assert_eq!(Campaign::list(&spool).unwrap(), vec![c.clone()]);
        c.save_suppressed(&spool, ["A@X.test"]).unwrap();
        let dropped = Campaign::load_suppressed(&spool, c.id).unwrap();
        assert_eq!(dropped.into_iter().collect::<Vec<_>>(), ["a@x.test"]);
        assert!(Campaign::load_suppressed(&spool, c.id + 1)
            .unwrap()
            .is_empty());
        assert!(Campaign::next_id(&spool) > c.id);
        assert_eq!(unhex(&c.content_hash), Some([0xab; 32]));
        assert_eq!(unhex("zz"), None);
    }
}
