//! The suppression list: addresses that must not be sent to, per sending domain,
//! with a reason and a time; and the bounce counting that adds to it.
//!
//! It lives in the spool, `SPOOL/suppress/` (format in `FORMAT.md` beside this
//! file): a snapshot, replaced atomically when compacted, and an append-only
//! journal of add / remove / bounce records since that snapshot. Opening loads both
//! into memory (~100 bytes per entry; layout in `list.rs`);
//! [`SuppressionStore::refresh`] reads only what other processes appended since
//! (two `stat` calls when nothing changed), so a daemon sees what
//! `volley suppress add` wrote after it started. Writers take an exclusive `flock`
//! on `SPOOL/suppress/lock`, catch up, append whole lines in one `write` and
//! `fdatasync` before returning: a CLI and a daemon can write concurrently.
//!
//! Addresses are compared case-insensitively (see [`normalize`]). An entry's
//! sending domain is a domain (mail whose envelope sender is in that domain) or
//! `*` (all mail).
//!
//! Bounces are counted per address and sending domain: `hard_limit` hard bounces,
//! or `soft_limit` soft bounces within `window`, add an entry. A delivery does not
//! reset the counts (soft bounces age out of the window; hard ones count until the
//! address is suppressed or removed, either of which clears its history).
//!
//! It does not decide what a bounce is (DSN parsing does) nor read the
//! configuration (callers pass [`BounceLimits`]).

mod change;
mod list;
mod record;

pub mod import;
pub mod pending;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use change::{cursor_path, read_cursor, write_cursor, Change};
pub use list::{clean_text, normalize, Entry, History, Reason, Suppression, HISTORY_CAP, TEXT_MAX};
pub use record::BounceKind;

use list::List;
use record::Record;

/// A journal longer than this and than the snapshot is compacted by the next
/// writer.
const COMPACT_MIN_BYTES: u64 = 8 << 20;

/// When bounces suppress an address (from `[bounce]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BounceLimits {
    /// Hard bounces that suppress (0: hard bounces never do).
    pub hard_limit: u32,
    /// Soft bounces within `window` that suppress (0: soft bounces never do).
    pub soft_limit: u32,
    /// How far back soft bounces count.
    pub window: Duration,
}

/// One bounce to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounce<'a> {
    /// The recipient that bounced.
    pub address: &'a str,
    /// The domain of the envelope sender of the bounced mail.
    pub sending_domain: &'a str,
    /// Hard or soft.
    pub kind: BounceKind,
    /// Unix seconds of the bounce.
    pub at: u64,
    /// Kept as the entry's detail if this bounce suppresses: e.g. `5.1.1`.
    pub detail: Option<&'a str>,
}

/// What [`SuppressionStore::add_many`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Added {
    /// Entries added.
    pub added: u64,
    /// Addresses already suppressed for that sending domain (left as they were).
    pub present: u64,
}

/// What the last full load of the files met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Records read (snapshot and journal).
    pub records: u64,
    /// Complete lines that are not valid records, skipped (each logged).
    pub bad_lines: u64,
    /// Bytes after the journal's last line end: a record cut short by a crash
    /// (or being written right now); not applied. The next writer removes it.
    pub torn_bytes: u64,
}

/// Why the suppression list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SuppressError {
    /// A file operation failed.
    #[error("cannot {op} {}: {io}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        io: std::io::Error,
    },
    /// The snapshot is not one this version can read.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The snapshot.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An address to add, remove or count is not a valid address.
    #[error("{address:?} is not a valid address: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// Why.
        reason: String,
    },
    /// A sending domain is neither `*` nor a valid domain.
    #[error("{domain:?} is not a valid sending domain: {reason}")]
    Domain {
        /// The domain as given.
        domain: String,
        /// Why.
        reason: String,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SuppressError + 'a {
    move |io| SuppressError::Io {
        op,
        path: path.to_owned(),
        io,
    }
}

/// What identifies one version of the snapshot file (it is only ever replaced by
/// a rename, so a new one has a new inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// The suppression list of one spool, loaded in memory, kept in step with its
/// files.
#[derive(Debug)]
pub struct SuppressionStore {
    dir: PathBuf,
    list: List,
    lock: File,
    /// Generation of the loaded snapshot (0 when there is none): the journal is
    /// `journal.GENERATION`.
    generation: u64,
    /// The snapshot loaded, `None` when there was none.
    snapshot: Option<FileId>,
    /// Bytes of the journal applied: always the end of a complete line.
    offset: u64,
    load: LoadReport,
    /// Entry changes made through this store, for the fleet ([`change`]).
    outgoing: Vec<Change>,
    /// Set while applying the fleet's changes (they are not queued again).
    remote: bool,
}

/// Holds the writers' lock (on a duplicate of the lock file's descriptor, which
/// shares its `flock`); released on drop.
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Checks a sending domain and returns it lower-cased.
fn check_domain(domain: &str) -> Result<String, SuppressError> {
    let domain = domain.trim();
    if domain == "*" {
        return Ok("*".to_owned());
    }
    crate::address::check_domain(domain).map_err(|reason| SuppressError::Domain {
        domain: domain.to_owned(),
        reason,
    })?;
    Ok(domain.to_lowercase())
}

/// Checks an address and returns it normalised.
fn check_address(address: &str) -> Result<String, SuppressError> {
    crate::address::check(address)
        .map(normalize)
        .map_err(|reason| SuppressError::Address {
            address: address.to_owned(),
            reason,
        })
}

impl SuppressionStore {
    /// The directory of the list in the spool at `spool_root`.
    pub fn dir(spool_root: &Path) -> PathBuf {
        spool_root.join("suppress")
    }

    /// Opens (creating the directory if needed) and loads the list of the spool at
    /// `spool_root`. Needs no spool lock: a daemon may be running.
    pub fn open(spool_root: &Path) -> Result<SuppressionStore, SuppressError> {
        let dir = SuppressionStore::dir(spool_root);
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        let mut store = SuppressionStore {
            dir,
            list: List::default(),
            lock,
            generation: 0,
            snapshot: None,
            offset: 0,
            load: LoadReport::default(),
            outgoing: Vec::new(),
            remote: false,
        };
        store.load()?;
        Ok(store)
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join("snapshot")
    }

    fn journal_path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("journal.{generation}"))
    }

    /// What the last full load met (bad lines, a torn last record).
    pub fn load_report(&self) -> &LoadReport {
        &self.load
    }

    /// Entries, over all addresses.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.list.len() == 0
    }

    /// The entry that stops mail from `sending_domain` to `address` (any case):
    /// one for that domain if there is one, else one for `*`. Allocates nothing for
    /// ASCII addresses up to 320 bytes.
    pub fn is_suppressed(&self, address: &str, sending_domain: &str) -> Option<Entry<'_>> {
        self.list.find(address, sending_domain)
    }

    /// The entries of `address` (any case), for every sending domain.
    pub fn entries_of(&self, address: &str) -> Vec<Entry<'_>> {
        self.list.entries_of(address)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = Entry<'_>> {
        self.list.iter()
    }

    /// The bounces counted for `address` and `sending_domain` (none once the
    /// address is suppressed for that domain).
    pub fn history(&self, address: &str, sending_domain: &str) -> Option<&History> {
        self.list
            .history(&normalize(address), &sending_domain.trim().to_lowercase())
    }

    /// Reads the snapshot and the journal from scratch.
    fn load(&mut self) -> Result<(), SuppressError> {
        let mut list = List::default();
        let mut report = LoadReport::default();
        let snapshot_path = self.snapshot_path();
        let (generation, snapshot) = match File::open(&snapshot_path) {
            Ok(mut file) => {
                let meta = file.metadata().map_err(io("stat", &snapshot_path))?;
                let mut bytes = Vec::with_capacity(meta.len() as usize);
                file.read_to_end(&mut bytes)
                    .map_err(io("read", &snapshot_path))?;
                let first_end = bytes
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(bytes.len());
                let generation = std::str::from_utf8(&bytes[..first_end])
                    .map_err(|_| "first line is not UTF-8".to_owned())
                    .and_then(record::parse_header)
                    .map_err(|reason| SuppressError::Format {
                        path: snapshot_path.clone(),
                        reason,
                    })?;
                let rest = bytes.get(first_end + 1..).unwrap_or_default();
                let used = apply_lines(&mut list, rest, &snapshot_path, 2, &mut report);
                // The snapshot is written whole before it is renamed into place:
                // anything after its last line end is damage, reported like a bad line.
                if used < rest.len() as u64 {
                    report.bad_lines += 1;
                    tracing::warn!(file = %snapshot_path.display(), "snapshot ends without a line end; its last line is skipped");
                }
                (generation, Some(FileId::of(&meta)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, None),
            Err(e) => return Err(io("open", &snapshot_path)(e)),
        };
        self.list = list;
        self.generation = generation;
        self.snapshot = snapshot;
        self.offset = 0;
        self.read_journal(&mut report)?;
        self.list.shrink();
        if report.torn_bytes > 0 {
            tracing::warn!(
                file = %self.journal_path(self.generation).display(),
                bytes = report.torn_bytes,
                "the journal ends in an incomplete record (cut short by a crash, or being written): not applied"
            );
        }
        self.load = report;
        Ok(())
    }

    /// Applies the journal's complete lines after `offset`. Returns whether any
    /// record changed the list.
    fn read_journal(&mut self, report: &mut LoadReport) -> Result<bool, SuppressError> {
        let path = self.journal_path(self.generation);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io("open", &path)(e)),
        };
        file.seek(SeekFrom::Start(self.offset))
            .map_err(io("read", &path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read", &path))?;
        let before = report.records;
        let used = apply_lines(&mut self.list, &bytes, &path, 0, report);
        report.torn_bytes = bytes.len() as u64 - used;
        self.offset += used;
        Ok(report.records > before)
    }

    /// Catches up with what other processes wrote: reloads everything if the
    /// snapshot was replaced (a compaction), else applies the journal's new
    /// records. Costs two `stat` calls when nothing changed. Returns whether the
    /// list may have changed.
    pub fn refresh(&mut self) -> Result<bool, SuppressError> {
        let snapshot_path = self.snapshot_path();
        let snapshot = match fs::metadata(&snapshot_path) {
            Ok(meta) => Some(FileId::of(&meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("stat", &snapshot_path)(e)),
        };
        if snapshot != self.snapshot {
            self.load()?;
            return Ok(true);
        }
        let journal = self.journal_path(self.generation);
        let len = match fs::metadata(&journal) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io("stat", &journal)(e)),
        };
        if len == self.offset {
            return Ok(false);
        }
        if len < self.offset {
            // Removed by a compaction between the two stats: start over.
            self.load()?;
            return Ok(true);
        }
        let mut report = LoadReport::default();
        let changed = self.read_journal(&mut report)?;
        self.load.records += report.records;
        self.load.bad_lines += report.bad_lines;
        self.load.torn_bytes = report.torn_bytes;
        Ok(changed)
    }

    /// Takes the writers' lock, waiting for another writer to finish.
    fn lock(&self) -> Result<Locked, SuppressError> {
        let path = self.dir.join("lock");
        let file = self.lock.try_clone().map_err(io("lock", &path))?;
        file.lock().map_err(io("lock", &path))?;
        Ok(Locked(file))
    }

    /// Runs `f` under the writers' lock, after catching up: `f` applies records to
    /// the list and writes their lines to the buffer, which is then appended and
    /// synced in one go. If that fails the list is reloaded from the files, so
    /// memory never holds what the disk does not.
    fn write<R>(
        &mut self,
        f: impl FnOnce(&mut List, &mut String) -> R,
    ) -> Result<R, SuppressError> {
        let _locked = self.lock()?;
        self.refresh()?;
        self.cut_torn_tail()?;
        let mut lines = String::new();
        let result = f(&mut self.list, &mut lines);
        if !lines.is_empty() {
            if let Err(err) = self.append(lines.as_bytes()) {
                self.load()?;
                return Err(err);
            }
            if !self.remote {
                self.outgoing.extend(change::changes_of(&lines));
            }
        }
        let snapshot_len = self.snapshot.map_or(0, |s| s.len);
        if self.offset > COMPACT_MIN_BYTES && self.offset > snapshot_len {
            self.compact_locked()?;
        }
        Ok(result)
    }

    /// Under the lock, after a refresh, bytes past `offset` are a record a crashed
    /// writer left incomplete: cut them, so the next line starts clean.
    fn cut_torn_tail(&mut self) -> Result<(), SuppressError> {
        let path = self.journal_path(self.generation);
        let len = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("stat", &path)(e)),
        };
        if len > self.offset {
            let file = File::options()
                .write(true)
                .open(&path)
                .map_err(io("open", &path))?;
            file.set_len(self.offset)
                .and_then(|()| file.sync_data())
                .map_err(io("truncate", &path))?;
            tracing::warn!(file = %path.display(), bytes = len - self.offset, "removed an incomplete record left by a crashed writer");
            self.load.torn_bytes = 0;
        }
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), SuppressError> {
        let path = self.journal_path(self.generation);
        let created = !path.exists();
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_data())
            .map_err(io("append to", &path))?;
        if created {
            fsync_dir(&self.dir)?;
        }
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Suppresses `address` for `sending_domain` (`*`: all mail). Returns false if
    /// it already was for that domain (the entry is left as it was).
    pub fn add(
        &mut self,
        address: &str,
        sending_domain: &str,
        reason: &Reason,
        detail: Option<&str>,
        at: u64,
    ) -> Result<bool, SuppressError> {
        let added = self.add_many([address], sending_domain, reason, detail, at)?;
        Ok(added.added == 1)
    }

    /// Suppresses every address for `sending_domain`, in one append and one sync.
    /// Every address is checked first: if one is invalid, nothing is added and the
    /// error names it.
    pub fn add_many<'a>(
        &mut self,
        addresses: impl IntoIterator<Item = &'a str>,
        sending_domain: &str,
        reason: &Reason,
        detail: Option<&str>,
        at: u64,
    ) -> Result<Added, SuppressError> {
        let domain = check_domain(sending_domain)?;
        let addresses = addresses
            .into_iter()
            .map(check_address)
            .collect::<Result<Vec<_>, _>>()?;
        let reason = clean_text(reason.as_str());
        let detail = detail.map(clean_text).unwrap_or_default();
        self.write(|list, lines| {
            let mut added = Added::default();
            for address in &addresses {
                let record = Record::Add {
                    since: at,
                    domain: &domain,
                    address,
                    reason: &reason,
                    detail: &detail,
                };
                if list.apply(&record) {
                    record.write(lines);
                    added.added += 1;
                } else {
                    added.present += 1;
                }
            }
            added
        })
    }

    /// Lifts the suppression of `address`: for `sending_domain` only (which may be
    /// `*`), or with `None` for every sending domain. Returns the domains of the
    /// entries removed, sorted (empty: it was not suppressed).
    pub fn remove(
        &mut self,
        address: &str,
        sending_domain: Option<&str>,
        at: u64,
    ) -> Result<Vec<String>, SuppressError> {
        let address = check_address(address)?;
        let domain = sending_domain.map(check_domain).transpose()?;
        self.write(|list, lines| {
            let mut domains: Vec<String> = list
                .entries_of(&address)
                .iter()
                .map(|e| e.domain.to_string())
                .filter(|d| domain.as_ref().is_none_or(|want| want == d))
                .collect();
            domains.sort();
            for d in &domains {
                let record = Record::Remove {
                    at,
                    domain: d,
                    address: &address,
                };
                list.apply(&record);
                record.write(lines);
            }
            domains
        })
    }

    /// Counts a bounce and, when it reaches `limits`, suppresses the address for
    /// the bounce's sending domain (reason `hard_bounce` or `soft_bounce`, the
    /// bounce's detail). Returns the entry added, if any. A bounce of an address
    /// already suppressed for that domain (or `*`) is not recorded.
    pub fn record_bounce(
        &mut self,
        bounce: &Bounce<'_>,
        limits: &BounceLimits,
    ) -> Result<Option<Suppression>, SuppressError> {
        let address = check_address(bounce.address)?;
        let domain = check_domain(bounce.sending_domain)?;
        let detail = bounce.detail.map(clean_text).unwrap_or_default();
        let at = bounce.at;
        self.write(|list, lines| {
            if list.find(&address, &domain).is_some() {
                return None;
            }
            let record = Record::Bounce {
                at,
                domain: &domain,
                address: &address,
                kind: bounce.kind,
            };
            list.apply(&record);
            record.write(lines);
            let cutoff = at.saturating_sub(limits.window.as_secs());
            list.prune_soft(&address, &domain, cutoff);
            let (count, limit, reason) = {
                let history = list.history(&address, &domain)?;
                match bounce.kind {
                    BounceKind::Hard => (history.hard.len(), limits.hard_limit, Reason::HardBounce),
                    BounceKind::Soft => (history.soft.len(), limits.soft_limit, Reason::SoftBounce),
                }
            };
            if limit == 0 || count < (limit as usize).min(HISTORY_CAP) {
                return None;
            }
            let record = Record::Add {
                since: at,
                domain: &domain,
                address: &address,
                reason: reason.as_str(),
                detail: &detail,
            };
            list.apply(&record);
            record.write(lines);
            list.find(&address, &domain).map(|e| e.to_owned())
        })
    }

    /// Rewrites the snapshot with the whole list and starts an empty journal
    /// (writers do it on their own when the journal outgrows the snapshot).
    pub fn compact(&mut self) -> Result<(), SuppressError> {
        let _locked = self.lock()?;
        self.refresh()?;
        self.compact_locked()
    }

    /// The snapshot of generation N+1 holds everything the snapshot and journal of
    /// generation N hold. It is renamed into place before journal N is removed: a
    /// crash in between leaves journal N unused (readers of N+1 read journal N+1)
    /// and the next compaction removes it. Bounce records are not idempotent, so a
    /// journal is never replayed over a snapshot that already holds it.
    fn compact_locked(&mut self) -> Result<(), SuppressError> {
        let generation = self.generation + 1;
        let mut text = record::header(generation);
        for e in self.list.iter() {
            Record::Add {
                since: e.since,
                domain: e.domain,
                address: e.address,
                reason: e.reason.as_str(),
                detail: e.detail.unwrap_or_default(),
            }
            .write(&mut text);
        }
        for (address, domain, h) in self.list.histories() {
            for (kind, times) in [(BounceKind::Hard, &h.hard), (BounceKind::Soft, &h.soft)] {
                for &at in times {
                    Record::Bounce {
                        at,
                        domain,
                        address,
                        kind,
                    }
                    .write(&mut text);
                }
            }
        }
        let path = self.snapshot_path();
        let tmp = self.dir.join(".snapshot.tmp");
        let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        fsync_dir(&self.dir)?;
        let meta = fs::metadata(&path).map_err(io("stat", &path))?;
        self.generation = generation;
        self.snapshot = Some(FileId::of(&meta));
        self.offset = 0;
        let entries = fs::read_dir(&self.dir).map_err(io("list", &self.dir))?;
        let current = format!("journal.{generation}");
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("journal.") && name != current {
                let _ = fs::remove_file(entry.path());
            }
        }
        fsync_dir(&self.dir)?;
        if self.list.dead() > 0 {
            self.list = self.list.rebuild();
        }
        Ok(())
    }
}

/// Applies the complete lines of `bytes` (numbered from `first_line` in messages;
/// 0: give byte offsets instead) and returns the bytes used: up to and including
/// the last `\n`.
fn apply_lines(
    list: &mut List,
    bytes: &[u8],
    path: &Path,
    first_line: u64,
    report: &mut LoadReport,
) -> u64 {
    let mut used = 0usize;
    for (line_no, line) in (first_line..).zip(bytes.split_inclusive(|&b| b == b'\n')) {
        let Some(body) = line.strip_suffix(b"\n") else {
            break;
        };
        let at = used;
        used += line.len();
        let parsed = std::str::from_utf8(body)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(record::parse);
        match parsed {
            Ok(record) => {
                list.apply(&record);
                report.records += 1;
            }
            Err(reason) => {
                report.bad_lines += 1;
                if first_line > 0 {
                    tracing::warn!(file = %path.display(), line = line_no, %reason, "skipped a bad suppression record");
                } else {
                    tracing::warn!(file = %path.display(), offset = at, %reason, "skipped a bad suppression record");
                }
            }
        }
    }
    used as u64
}

fn fsync_dir(dir: &Path) -> Result<(), SuppressError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

#[cfg(test)]
mod tests;

/// The list shared by everything in one process that reads or writes it (the
/// engine before each recipient, the inbound listener, the partitioning, the
/// API): one copy in memory behind a lock, so a write is seen by all at once.
#[derive(Debug)]
pub struct SharedList(
    std::sync::RwLock<SuppressionStore>,
    std::sync::atomic::AtomicU64,
);

impl SharedList {
    /// Shares `store`.
    pub fn new(store: SuppressionStore) -> SharedList {
        SharedList(
            std::sync::RwLock::new(store),
            std::sync::atomic::AtomicU64::new(0),
        )
    }

    /// How many times a write changed the list (its files moved on: a record
    /// appended here or by another process, a compaction): a change of it
    /// says the list may have changed.
    pub fn version(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Runs `f` with the list.
    pub fn read<R>(&self, f: impl FnOnce(&SuppressionStore) -> R) -> R {
        f(&self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Runs `f` with the list, for a change.
    pub fn write<R>(&self, f: impl FnOnce(&mut SuppressionStore) -> R) -> R {
        let mut store = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = (store.generation, store.offset);
        let result = f(&mut store);
        if (store.generation, store.offset) != before {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        result
    }
}
