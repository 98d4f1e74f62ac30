//! What the partitioning keeps beside a campaign's batches in the spool: the
//! addresses it dropped as suppressed (so that a resumed cut drops the same
//! ones), and the hex form of content hashes. The campaign itself is a row of
//! the store ([`crate::store::campaigns`]).

use std::collections::HashSet;
use std::path::PathBuf;

use volley_queue::{QueueError, Spool};

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

/// Where the addresses dropped as suppressed are kept: `CAMPAIGN.suppressed`
/// in `SPOOL/campaigns/`, one normalised address per line.
pub fn suppressed_path(spool: &Spool, id: u64) -> PathBuf {
    spool.campaigns_dir().join(format!("{id:016x}.suppressed"))
}

/// Records (durably) the addresses dropped as suppressed, before any batch of
/// the campaign is written: a resumed partitioning drops exactly these, so its
/// cut is the same as the first one's. Written even when there are none.
pub fn save_suppressed<'a>(
    spool: &Spool,
    id: u64,
    addresses: impl IntoIterator<Item = &'a str>,
) -> Result<(), QueueError> {
    let mut text = String::new();
    for a in addresses {
        text.push_str(&crate::suppress::normalize(a));
        text.push('\n');
    }
    let dir = spool.campaigns_dir();
    std::fs::create_dir_all(&dir).map_err(|e| QueueError::io("create", &dir, e))?;
    spool.write_atomic(&suppressed_path(spool, id), text.as_bytes())
}

/// The addresses (normalised) recorded by [`save_suppressed`]; `None` when
/// nothing was recorded (the partitioning never got that far).
pub fn load_suppressed(spool: &Spool, id: u64) -> Result<Option<HashSet<String>>, QueueError> {
    let path = suppressed_path(spool, id);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.lines().map(str::to_owned).collect())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(QueueError::io("read", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressed_lists_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(load_suppressed(&spool, 7).unwrap(), None);
        save_suppressed(&spool, 7, []).unwrap();
        assert_eq!(load_suppressed(&spool, 7).unwrap(), Some(HashSet::new()));
        save_suppressed(&spool, 8, ["A@X.test"]).unwrap();
        let dropped = load_suppressed(&spool, 8).unwrap().unwrap();
        assert_eq!(dropped.into_iter().collect::<Vec<_>>(), ["a@x.test"]);
        assert_eq!(unhex(&hex(&[0xab; 32])), Some([0xab; 32]));
        assert_eq!(unhex("zz"), None);
    }
}
