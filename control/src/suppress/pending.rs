//! Suppressions waiting for an operator: what an inbound report asked for when
//! it named its recipient without a verified token (a DSN or ARF report to a
//! plain address, an "unsubscribe" reply). Anyone can send those, so they are
//! never applied on their own: `volley suppress pending` lists them, `accept`
//! applies them, `reject` drops them.
//!
//! Kept in `SPOOL/suppress/pending.jsonl`, one JSON object a line, appended
//! and fsynced; accepting or rejecting rewrites the file (it stays short: it
//! only holds what an operator has not looked at). A lock file serialises the
//! writers (the daemon's inbound listener, the command).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SuppressError;

/// One suppression waiting for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Its number, increasing.
    pub id: u64,
    /// The address the report names.
    pub address: String,
    /// The sending domain it would apply to, or `*`.
    pub domain: String,
    /// `hard_bounce`, `soft_bounce`, `complaint` or `unsubscribe`.
    pub kind: String,
    /// The report's detail (status and diagnostic, feedback type, `reply`).
    pub detail: String,
    /// Unix seconds it arrived.
    pub at: u64,
    /// Where it came from: the envelope sender and the local recipient.
    pub source: String,
}

/// The pending list of one spool.
#[derive(Debug, Clone)]
pub struct PendingList {
    dir: PathBuf,
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SuppressError + 'a {
    move |e| SuppressError::Io {
        op: action,
        path: path.to_owned(),
        io: e,
    }
}

/// Holds the writers' lock; released on drop.
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl PendingList {
    /// The pending list in the suppression directory `dir` (`SPOOL/suppress`).
    pub fn new(dir: &Path) -> PendingList {
        PendingList {
            dir: dir.to_owned(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("pending.jsonl")
    }

    fn lock(&self) -> Result<Locked, SuppressError> {
        fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let path = self.dir.join("pending.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        file.lock().map_err(io("lock", &path))?;
        Ok(Locked(file))
    }

    /// Every entry, oldest first (a line that cannot be read is skipped).
    pub fn list(&self) -> Result<Vec<Pending>, SuppressError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &path)(e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Appends an entry (its `id` is given here), durably; answers its id. An
    /// entry for the same address, domain and kind already waiting is kept
    /// instead (answered as it is).
    pub fn add(&self, mut entry: Pending) -> Result<u64, SuppressError> {
        let _lock = self.lock()?;
        let existing = self.list()?;
        if let Some(e) = existing.iter().find(|e| {
            e.address == entry.address && e.domain == entry.domain && e.kind == entry.kind
        }) {
            return Ok(e.id);
        }
        entry.id = existing.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        let path = self.path();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        let mut line = serde_json::to_string(&entry).unwrap_or_default();
        line.push('\n');
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("write", &path))?;
        Ok(entry.id)
    }

    /// Removes the entries `ids` says (all of them with `None`) and answers
    /// them, for the caller to apply or drop.
    pub fn take(&self, ids: Option<&[u64]>) -> Result<Vec<Pending>, SuppressError> {
        let _lock = self.lock()?;
        let (taken, kept): (Vec<Pending>, Vec<Pending>) = self
            .list()?
            .into_iter()
            .partition(|e| ids.is_none_or(|ids| ids.contains(&e.id)));
        let path = self.path();
        let tmp = self.dir.join(".pending.jsonl.tmp");
        let mut text = String::new();
        for e in &kept {
            text.push_str(&serde_json::to_string(e).unwrap_or_default());
            text.push('\n');
        }
        let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(address: &str, kind: &str) -> Pending {
        Pending {
            id: 0,
            address: address.into(),
            domain: "acme.test".into(),
            kind: kind.into(),
            detail: "reply".into(),
            at: 1,
            source: "from ann@x.test to news@acme.test".into(),
        }
    }

    #[test]
    fn entries_wait_once_and_are_taken_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let list = PendingList::new(dir.path());
        assert_eq!(list.add(entry("a@x.test", "unsubscribe")).unwrap(), 1);
        assert_eq!(list.add(entry("b@x.test", "complaint")).unwrap(), 2);
        assert_eq!(
            list.add(entry("a@x.test", "unsubscribe")).unwrap(),
            1,
            "the same request waits once"
        );
        assert_eq!(list.list().unwrap().len(), 2);
        let taken = list.take(Some(&[2])).unwrap();
        assert_eq!(taken.iter().map(|e| e.id).collect::<Vec<_>>(), [2]);
        assert_eq!(
            list.list()
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(list.add(entry("c@x.test", "hard_bounce")).unwrap(), 2);
        assert_eq!(list.take(None).unwrap().len(), 2);
        assert!(list.list().unwrap().is_empty());
    }
}
