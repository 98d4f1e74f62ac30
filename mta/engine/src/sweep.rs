//! Removing what the spool no longer needs: [`sweep`], run by the daemon
//! between delivery rounds (at start, then hourly).
//!
//! - `done/` batches are kept for `keep_done` (`[bounce] window`: a bounce,
//!   complaint or reply to a VERP address is resolved through its batch for that
//!   long), counted from the file's last change (its last recorded reply), then
//!   deleted.
//! - Received messages relayed verbatim (`content/<hash>.json` with its
//!   `<message hash>.eml`, see [`volley_merge::Verbatim`]) are deleted once no
//!   batch in `active/` refers to them and they are older than `grace`.
//!   [`Verbatim::store`](volley_merge::Verbatim::store) refreshes the time of
//!   a file it finds already there, so a message being deposited again (same
//!   bytes) is not swept between its content and its batches.
//!
//! What it does not do: remove campaign templates (`volley send`'s content is
//! small and a campaign may be resumed), `inbound/` files (the local mailbox:
//! the operator's), or anything in `active/`. Run it where no round is running
//! (the engine moves batches to `done/` at the end of a round).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use volley_queue::{Header, QueueError};

use volley_merge::{message_path, Verbatim};

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Batch files deleted from `done/`.
    pub done_batches: usize,
    /// Received messages deleted from `content/` (each a `.json` and, unless
    /// another reference shares it, its `.eml`).
    pub messages: usize,
}

/// Removes old `done/` batches and unreferenced received messages from the
/// spool at `root` (see the [module documentation](self)), as of `now`.
pub fn sweep(
    root: &Path,
    now: SystemTime,
    keep_done: Duration,
    grace: Duration,
) -> Result<Swept, QueueError> {
    let mut swept = Swept::default();
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |e: io::Error| QueueError::io(action, &path, e)
    };
    let older_than = |path: &Path, age: Duration| -> bool {
        fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d >= age))
    };

    let done = root.join("done");
    for path in batch_files(&done).map_err(io("list", &done))? {
        if older_than(&path, keep_done) {
            match fs::remove_file(&path) {
                Ok(()) => swept.done_batches += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &path)(e)),
            }
        }
    }

    let active = root.join("active");
    let mut in_use: HashSet<String> = HashSet::new();
    for path in batch_files(&active).map_err(io("list", &active))? {
        match content_hash(&path) {
            Ok(Some(hash)) => {
                in_use.insert(volley_merge::hash_hex(&hash));
            }
            Ok(None) => {}
            // Completed meanwhile: not active any more.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read", &path)(e)),
        }
    }

    let content = root.join("content");
    let entries = match fs::read_dir(&content) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(swept),
        Err(e) => return Err(io("list", &content)(e)),
    };
    let mut kept_messages: HashSet<[u8; 32]> = HashSet::new();
    let mut removed_messages: Vec<[u8; 32]> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(hash) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let Ok(bytes) = fs::read(&path) else {
            continue;
        };
        let Some(message) = Verbatim::message_of(&bytes) else {
            continue; // a template
        };
        if in_use.contains(hash) || !older_than(&path, grace) {
            kept_messages.insert(message);
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                swept.messages += 1;
                removed_messages.push(message);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &path)(e)),
        }
    }
    for message in removed_messages {
        let path = message_path(&content, &message);
        if kept_messages.contains(&message) || !older_than(&path, grace) {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &path)(e)),
        }
    }
    if swept != Swept::default() {
        tracing::info!(
            done_batches = swept.done_batches,
            messages = swept.messages,
            "swept the spool"
        );
    }
    Ok(swept)
}

/// The `*.vqb` files of `dir` (none if it does not exist).
fn batch_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "vqb"))
        .collect())
}

/// The content hash in a batch file's header; `None` for a file too short or
/// with a bad header (the recovery scan quarantines those).
fn content_hash(path: &Path) -> io::Result<Option<[u8; 32]>> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    let mut start = [0u8; volley_queue::format::HEADER_LEN];
    match file.read_exact(&mut start) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(Header::read(&start, len).ok().map(|h| h.content_hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_queue::{BatchBuilder, BatchMeta, Spool};

    const HOUR: Duration = Duration::from_secs(3600);

    fn batch(spool: &Spool, campaign_id: u64, content_hash: [u8; 32]) -> PathBuf {
        let meta = BatchMeta {
            batch_id: 0,
            campaign_id,
            content_hash,
            created_at: 0,
        };
        let mut builder = BatchBuilder::new::<&str>(meta, &[]).unwrap();
        builder.push("a@x.test", &[] as &[&[u8]]).unwrap();
        spool.write_batch(&builder.finish().unwrap()).unwrap()
    }

    #[test]
    fn old_done_batches_and_unreferenced_messages_go() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let content = spool.content_dir();
        let live = Verbatim::store(&content, "a@src.test", b"live\r\n").unwrap();
        let sent = Verbatim::store(&content, "a@src.test", b"sent\r\n").unwrap();
        // Another sender, the same bytes as the live one: its .eml is shared.
        let twin = Verbatim::store(&content, "b@src.test", b"live\r\n").unwrap();
        batch(&spool, 1 << 52, live);
        let finished = batch(&spool, (1 << 52) + 1, sent);
        let to = spool.done_dir().join(finished.file_name().unwrap());
        fs::rename(&finished, &to).unwrap();

        // Everything is new: nothing goes.
        let now = SystemTime::now();
        assert_eq!(
            sweep(spool.root(), now, 7 * 24 * HOUR, HOUR).unwrap(),
            Swept::default()
        );
        // Two hours later: the unreferenced messages go, the done batch stays.
        let later = now + 2 * HOUR;
        assert_eq!(
            sweep(spool.root(), later, 7 * 24 * HOUR, HOUR).unwrap(),
            Swept {
                done_batches: 0,
                messages: 2
            }
        );
        let stored = |h: &[u8; 32]| volley_merge::stored_path(&content, h).exists();
        assert!(stored(&live) && !stored(&sent) && !stored(&twin));
        let eml = |m: &[u8]| message_path(&content, &volley_merge::sha256(m)).exists();
        assert!(eml(b"live\r\n"), "shared with the live reference");
        assert!(!eml(b"sent\r\n"));
        assert!(to.exists());
        // After the window: the done batch goes too.
        let much_later = now + 8 * 24 * HOUR;
        assert_eq!(
            sweep(spool.root(), much_later, 7 * 24 * HOUR, HOUR)
                .unwrap()
                .done_batches,
            1
        );
        assert!(!to.exists());
        assert!(stored(&live), "its batch is still active");
    }
}
