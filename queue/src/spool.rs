//! The spool directory: where batch files are written, found after a restart,
//! finished and quarantined.
//!
//! ```text
//! SPOOL/
//!   lock          exclusive flock of the process that delivers from this spool
//!   tmp/          files being written; anything here at startup never committed
//!   active/       live batches: CAMPAIGN-BATCH.vqb (16 hex digits each)
//!   done/         batches whose recipients are all final
//!   quarantine/   corrupt files, each with a NAME.reason beside it
//!   content/      message templates and received messages, content-addressed:
//!                 HASH.json (and HASH.eml for a received message)
//!   campaigns/    one record per campaign: CAMPAIGN.json
//!   inbound/      received messages for volley's own domains (volley-engine)
//! ```

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::QueueError;
use crate::format::{BatchView, Header};
use crate::mapped::MappedBatch;
use crate::slot::State;
use crate::summary::{DomainSummary, StateCounts};

/// Finished relay batches' files kept in `reuse/` for new relay batches
/// ([`Spool::reuse_dir`]): about as many as are being written and delivered at
/// once at full speed; more are removed.
pub const REUSE_KEEP: usize = 8;

/// A finished relay batch's file larger than this is removed, not kept in
/// `reuse/`: a batch written over it does not cut it (its old records past
/// the seal are not read), so a file kept once stays that large on disk.
pub const REUSE_MAX_BYTES: u64 = 8 << 20;

/// File name extension of batch files.
pub const EXTENSION: &str = "vqb";

/// An open spool directory.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    /// The exclusive lock, held while open for writing; `None` when read-only.
    lock: Option<File>,
    /// Whether `tmp/` was emptied of uncommitted files (done once, at the first
    /// recovery scan: later ones may meet files other threads are writing).
    tmp_cleaned: AtomicBool,
}

/// What the recovery scan found for one live batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStatus {
    /// The batch file.
    pub path: PathBuf,
    /// Campaign id from the header.
    pub campaign_id: u64,
    /// Batch id from the header.
    pub batch_id: u64,
    /// Recipients by state.
    pub counts: StateCounts,
    /// Earliest unix second at which an unfinished recipient is due (0 = now), or
    /// `None` when every recipient is final.
    pub next_due: Option<u64>,
    /// File size.
    pub bytes: u64,
}

/// A file moved to quarantine, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Where the file was.
    pub from: PathBuf,
    /// Where it is now (`None` when the spool is read-only and it was left in place).
    pub to: Option<PathBuf>,
    /// The fault, naming the file.
    pub reason: String,
}

/// The result of the startup scan: the pending work, rebuilt from the slots.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Every valid live batch, in file-name order.
    pub batches: Vec<BatchStatus>,
    /// Corrupt files set aside.
    pub quarantined: Vec<Quarantined>,
    /// Uncommitted temporary files removed from `tmp/`.
    pub removed_temp: usize,
}

impl Recovery {
    /// Recipients by state over all live batches.
    pub fn totals(&self) -> StateCounts {
        let mut total = StateCounts::default();
        for batch in &self.batches {
            total.merge(&batch.counts);
        }
        total
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fsync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| QueueError::io("fsync directory", dir, e))
}

impl Spool {
    /// Opens (creating if needed) the spool at `root` for delivery, taking its
    /// exclusive lock: one volley process writes a spool at a time.
    pub fn open(root: &Path) -> Result<Spool, QueueError> {
        for dir in [
            "tmp",
            "open",
            "reuse",
            "active",
            "done",
            "quarantine",
            "content",
            "campaigns",
        ] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|e| QueueError::io("create", &path, e))?;
        }
        let lock_path = root.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| QueueError::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(QueueError::Locked {
                    root: root.to_owned(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(QueueError::io("lock", &lock_path, e)),
        }
        let spool = Spool {
            root: root.to_owned(),
            lock: Some(lock),
            tmp_cleaned: AtomicBool::new(false),
        };
        spool.recover_open()?;
        Ok(spool)
    }

    /// Seals the relay batches a stopped process left in `open/` and moves them
    /// to `active/` ([`crate::relay::recover_open`]), and those a power cut
    /// left under an older name in `reuse/` or `active/`
    /// ([`crate::relay::recover_taken`]), logging what each kept and dropped;
    /// unreadable ones of `open/` are quarantined. Run once, when the spool is
    /// opened for writing (before any appender of this process starts).
    fn recover_open(&self) -> Result<(), QueueError> {
        use crate::relay::Recovered;
        let active = self.active_dir();
        let mut found = crate::relay::recover_open(&self.open_dir(), &active)?;
        // Only a power cut leaves a taken file under an older name, so the
        // relay files of reuse/ and active/ are read only at the first open
        // after a boot (`SPOOL/boot` holds the boot id of the last one): not
        // at every `volley sendmail` that stores into a spool no daemon holds.
        let boot = crate::relay::boot_id();
        let boot_hex: String = boot.iter().map(|b| format!("{b:02x}")).collect();
        let marker = self.root.join("boot");
        let seen = fs::read_to_string(&marker).unwrap_or_default();
        if boot == [0; 16] || seen.trim() != boot_hex {
            found.extend(crate::relay::recover_taken(&self.reuse_dir(), &active)?);
            found.extend(crate::relay::recover_taken(&active, &active)?);
            // Not synced: lost, the next open reads them again.
            let tmp = self.root.join("boot.new");
            if fs::write(&tmp, format!("{boot_hex}\n")).is_ok() {
                let _ = fs::rename(&tmp, &marker);
            }
        }
        for done in found {
            match done {
                Recovered::Sealed {
                    path,
                    messages,
                    dropped,
                    unsure,
                } => tracing::warn!(file = %path.display(), messages, dropped, unsure,
                    "relay batch left open by a stop: sealed with its acknowledged messages \
                     (dropped: appended but never acknowledged with 250; unsure: kept although \
                     their acknowledgement was not recorded, after a reboot)"),
                Recovered::Removed(path) => tracing::info!(file = %path.display(),
                    "relay batch left open by a stop held no acknowledged message: removed"),
                Recovered::Corrupt(path, reason) => {
                    self.quarantine(&path, &reason)?;
                }
            }
        }
        Ok(())
    }

    /// `open/`: relay batches being appended to ([`crate::relay::OpenBatch`]).
    pub fn open_dir(&self) -> PathBuf {
        self.root.join("open")
    }

    /// `reuse/`: files of finished relay batches, kept (at most
    /// [`REUSE_KEEP`]) for new relay batches to write over (see
    /// [`crate::relay::OpenBatch::create`]). Nothing in them is live.
    pub fn reuse_dir(&self) -> PathBuf {
        self.root.join("reuse")
    }

    /// A second handle on the same open spool, sharing its lock (a duplicate of
    /// the locked descriptor: the lock lasts until every handle is dropped). For
    /// writers in the same process as the delivering one, e.g. the SMTP
    /// listener's deposits while the engine runs. The clone never empties
    /// `tmp/` (see [`Spool::remove_uncommitted`]).
    pub fn try_clone(&self) -> Result<Spool, QueueError> {
        let lock = match &self.lock {
            Some(file) => Some(
                file.try_clone()
                    .map_err(|e| QueueError::io("duplicate lock of", &self.root, e))?,
            ),
            None => None,
        };
        Ok(Spool {
            root: self.root.clone(),
            lock,
            tmp_cleaned: AtomicBool::new(true),
        })
    }

    /// Opens an existing spool for reading only (no lock, nothing moved or written):
    /// for `volley queue summary` and `show` while a daemon runs.
    pub fn open_read_only(root: &Path) -> Result<Spool, QueueError> {
        let active = root.join("active");
        fs::metadata(&active).map_err(|e| QueueError::io("open spool directory", &active, e))?;
        Ok(Spool {
            root: root.to_owned(),
            lock: None,
            tmp_cleaned: AtomicBool::new(true),
        })
    }

    /// The spool directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of live batches.
    pub fn active_dir(&self) -> PathBuf {
        self.root.join("active")
    }

    /// Directory of finished batches.
    pub fn done_dir(&self) -> PathBuf {
        self.root.join("done")
    }

    /// Directory of quarantined files.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Directory for a command's scratch files (e.g. the sort runs of a
    /// partitioning): `tmp/`, emptied by the next recovery scan.
    pub fn scratch_dir(&self) -> PathBuf {
        self.tmp_dir()
    }

    /// Directory of stored message templates (`HASH.json`, 64 hex digits).
    pub fn content_dir(&self) -> PathBuf {
        self.root.join("content")
    }

    /// Directory of campaign records.
    pub fn campaigns_dir(&self) -> PathBuf {
        self.root.join("campaigns")
    }

    /// Writes `bytes` to `path` durably and atomically: a temporary name in the same
    /// directory, fsync, rename over `path`, directory fsync. For small records
    /// (campaigns, templates); batch files use [`Spool::write_batches`].
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), QueueError> {
        self.writable()?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let mut file = File::create(&tmp).map_err(|e| QueueError::io("create", &tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| QueueError::io("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| QueueError::io("rename", path, e))?;
        fsync_dir(dir)
    }

    fn writable(&self) -> Result<(), QueueError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(QueueError::io(
                "write to read-only spool",
                &self.root,
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            )),
        }
    }

    /// The file name of a batch: `CAMPAIGN-BATCH.vqb`, ids in 16 hex digits.
    pub fn file_name(campaign_id: u64, batch_id: u64) -> String {
        format!("{campaign_id:016x}-{batch_id:016x}.{EXTENSION}")
    }

    /// Commits one batch file (as made by [`crate::BatchBuilder::finish`]) to
    /// `active/`: temporary name, fsync, link into place, directory fsync.
    pub fn write_batch(&self, file: &[u8]) -> Result<PathBuf, QueueError> {
        let mut paths = self.write_batches(std::iter::once(file))?;
        paths.pop().ok_or_else(|| {
            QueueError::io(
                "write",
                &self.active_dir(),
                std::io::ErrorKind::Other.into(),
            )
        })
    }

    /// Commits many batch files as one group: each is written under `tmp/`, then one
    /// `syncfs` makes them all durable (per-file fsync costs ~0.3 ms each here, and a
    /// campaign writes thousands), then each is linked into `active/` (never
    /// replacing an existing batch) and `active/` is fsynced once. A crash before
    /// the link leaves only temporary files, which recovery removes.
    pub fn write_batches<'f>(
        &self,
        files: impl IntoIterator<Item = &'f [u8]>,
    ) -> Result<Vec<PathBuf>, QueueError> {
        self.writable()?;
        let tmp_dir = self.tmp_dir();
        let active = self.active_dir();
        let mut staged = Vec::new();
        let mut last: Option<File> = None;
        for bytes in files {
            let header = Header::read(bytes, bytes.len()).map_err(|fault| QueueError::Corrupt {
                path: tmp_dir.clone(),
                fault,
            })?;
            let name = Spool::file_name(header.campaign_id, header.batch_id);
            let tmp = tmp_dir.join(format!("{name}.tmp"));
            let mut file = File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| QueueError::io("create", &tmp, e))?;
            file.write_all(bytes)
                .map_err(|e| QueueError::io("write", &tmp, e))?;
            staged.push((tmp, active.join(name)));
            last = Some(file);
        }
        match (staged.len(), last) {
            (0, _) => return Ok(Vec::new()),
            (1, Some(file)) => file
                .sync_all()
                .map_err(|e| QueueError::io("fsync", &staged[0].0, e))?,
            (_, Some(file)) => syncfs(&file).map_err(|e| QueueError::io("syncfs", &tmp_dir, e))?,
            (_, None) => {}
        }
        let mut paths = Vec::with_capacity(staged.len());
        for (tmp, dest) in staged {
            // A hard link fails if the destination exists: an id collision can never
            // overwrite a live batch.
            match fs::hard_link(&tmp, &dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = fs::remove_file(&tmp);
                    return Err(QueueError::Exists { path: dest });
                }
                Err(e) => return Err(QueueError::io("link", &dest, e)),
            }
            fs::remove_file(&tmp).map_err(|e| QueueError::io("remove", &tmp, e))?;
            paths.push(dest);
        }
        fsync_dir(&active)?;
        Ok(paths)
    }

    /// The live batch files, sorted by name.
    pub fn active_files(&self) -> Result<Vec<PathBuf>, QueueError> {
        list_batches(&self.active_dir())
    }

    /// Looks a batch up by path, file name, or file name without extension, in
    /// `active/`, then `done/`, then `quarantine/`.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        let direct = Path::new(name);
        if direct.is_file() {
            return Some(direct.to_owned());
        }
        let with_ext = format!("{name}.{EXTENSION}");
        for dir in [self.active_dir(), self.done_dir(), self.quarantine_dir()] {
            for candidate in [dir.join(name), dir.join(&with_ext)] {
                if candidate.is_file() {
                    return Some(candidate);
                }
            }
        }
        None
    }

    /// Removes the files a crash left uncommitted in `tmp/`, the first time it is
    /// called on this handle (the first [`recover`](Self::recover) does it too);
    /// returns how many. Later calls do nothing: by then `tmp/` may hold files
    /// being written by this process (e.g. the SMTP listener's deposits while the
    /// engine runs its rounds). Nothing on read-only spools and clones.
    pub fn remove_uncommitted(&self) -> Result<usize, QueueError> {
        if self.lock.is_none() || self.tmp_cleaned.swap(true, Ordering::AcqRel) {
            return Ok(0);
        }
        let tmp_dir = self.tmp_dir();
        let entries = fs::read_dir(&tmp_dir).map_err(|e| QueueError::io("list", &tmp_dir, e))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The startup scan: removes uncommitted temporary files (the first time, see
    /// [`remove_uncommitted`](Self::remove_uncommitted)), validates every live
    /// batch (checksum and slots), quarantines the corrupt ones with a logged
    /// reason, and returns the pending work. Scans on all cores. Read-only spools
    /// report corrupt files without moving them.
    pub fn recover(&self) -> Result<Recovery, QueueError> {
        let mut recovery = Recovery {
            removed_temp: self.remove_uncommitted()?,
            ..Recovery::default()
        };
        let files = self.active_files()?;
        let results = scan_parallel(&files, |path, bytes| {
            let view = BatchView::parse(bytes).map_err(|fault| QueueError::Corrupt {
                path: path.to_owned(),
                fault,
            })?;
            let mut counts = StateCounts::default();
            let mut next_due: Option<u64> = None;
            for i in 0..view.len() {
                // parse() checked every slot.
                let Ok(slot) = view.slot(i) else { continue };
                counts.add(slot.state, 1);
                if !slot.state.is_final() {
                    let due = if slot.state == State::Deferred {
                        slot.next_attempt
                    } else {
                        0
                    };
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                }
            }
            let header = view.header();
            Ok(BatchStatus {
                path: path.to_owned(),
                campaign_id: header.campaign_id,
                batch_id: header.batch_id,
                counts,
                next_due,
                bytes: bytes.len() as u64,
            })
        });
        for (path, result) in results {
            match result {
                Ok(status) => recovery.batches.push(status),
                Err(err) => recovery.quarantined.push(self.set_aside(&path, &err)?),
            }
        }
        Ok(recovery)
    }

    fn set_aside(&self, path: &Path, err: &QueueError) -> Result<Quarantined, QueueError> {
        let reason = err.to_string();
        let to = if self.lock.is_some() {
            Some(self.quarantine(path, &reason)?)
        } else {
            tracing::warn!(file = %path.display(), %reason, "corrupt batch file (read-only: left in place)");
            None
        };
        Ok(Quarantined {
            from: path.to_owned(),
            to,
            reason,
        })
    }

    /// Moves a corrupt file to `quarantine/` and writes the reason beside it
    /// (`NAME.reason`); logs a warning. Returns the new path.
    pub fn quarantine(&self, path: &Path, reason: &str) -> Result<PathBuf, QueueError> {
        self.writable()?;
        let dir = self.quarantine_dir();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unnamed".to_owned());
        let mut dest = dir.join(&name);
        let mut n = 1;
        while dest.exists() {
            dest = dir.join(format!("{name}.{n}"));
            n += 1;
        }
        fs::rename(path, &dest).map_err(|e| QueueError::io("quarantine", path, e))?;
        let reason_path = dest.with_file_name(format!(
            "{}.reason",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let text = format!("{reason}\nquarantined at unix time {}\n", now_unix());
        fs::write(&reason_path, text).map_err(|e| QueueError::io("write", &reason_path, e))?;
        fsync_dir(&dir)?;
        if let Some(parent) = path.parent() {
            fsync_dir(parent)?;
        }
        tracing::warn!(file = %path.display(), quarantined = %dest.display(), %reason, "quarantined corrupt batch file");
        Ok(dest)
    }

    /// Declares a batch done: checks every recipient is final, flushes its slots
    /// (msync) and moves it to `done/`. Returns the new path.
    /// The mapping stays usable (it refers to the file, now under `done/`).
    pub fn complete(&self, batch: &MappedBatch) -> Result<PathBuf, QueueError> {
        let mut done = self.complete_all([batch])?;
        done.pop().ok_or_else(|| QueueError::NotFinished {
            path: batch.path().to_owned(),
            unfinished: 0,
        })
    }

    /// [`complete`](Self::complete) for several batches, with one fsync of each
    /// directory for all of them (a round ends with thousands). Stops at the first
    /// batch that cannot be completed; the ones moved before it stay moved.
    pub fn complete_all<'b>(
        &self,
        batches: impl IntoIterator<Item = &'b MappedBatch>,
    ) -> Result<Vec<PathBuf>, QueueError> {
        self.writable()?;
        let mut moved = Vec::new();
        // Whether a campaign batch moved to `done/`: only that move is synced.
        // A relay batch's move out of `active/` (to `reuse/`, or its removal)
        // is made durable by the next metadata sync of the file system (the
        // journal commits in order), and a power loss before that only leaves
        // it in `active/` with every recipient final: completed again at the
        // next start. Not syncing saves a journal commit per relay batch.
        let mut to_done = false;
        let mut result = Ok(());
        for batch in batches {
            let step = (|| {
                let counts = batch.counts()?;
                if counts.unfinished() > 0 {
                    return Err(QueueError::NotFinished {
                        path: batch.path().to_owned(),
                        unfinished: counts.unfinished() as u32,
                    });
                }
                batch.sync()?;
                let from = batch.path().to_owned();
                if batch.header().is_relay() {
                    // Relayed mail has no VERP token to resolve later: nothing to
                    // keep it for once every recipient is final. Its file is
                    // kept for a later relay batch to write over
                    // (`OpenBatch::create`), up to REUSE_KEEP files of at
                    // most REUSE_MAX_BYTES.
                    let reuse = self.reuse_dir();
                    let kept = fs::read_dir(&reuse).map_or(usize::MAX, |e| e.count());
                    let small = fs::metadata(&from).is_ok_and(|m| m.len() <= REUSE_MAX_BYTES);
                    if kept < REUSE_KEEP && small {
                        let dest = reuse.join(from.file_name().unwrap_or_default());
                        if fs::rename(&from, &dest).is_ok() {
                            return Ok(from);
                        }
                    }
                    fs::remove_file(&from).map_err(|e| QueueError::io("remove", &from, e))?;
                    return Ok(from);
                }
                let dest = self.done_dir().join(from.file_name().unwrap_or_default());
                fs::rename(&from, &dest).map_err(|e| QueueError::io("move to done", &from, e))?;
                to_done = true;
                Ok(dest)
            })();
            match step {
                Ok(dest) => moved.push(dest),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if to_done {
            fsync_dir(&self.done_dir())?;
            fsync_dir(&self.active_dir())?;
        }
        result.map(|()| moved)
    }

    /// Recipients by state per destination domain over the live batches, and the
    /// corrupt files met on the way (reported, not moved).
    pub fn summary(&self) -> Result<(DomainSummary, Vec<Quarantined>), QueueError> {
        let files = self.active_files()?;
        let results = scan_parallel(&files, |path, bytes| {
            let corrupt = |fault| QueueError::Corrupt {
                path: path.to_owned(),
                fault,
            };
            let view = BatchView::parse(bytes).map_err(corrupt)?;
            let mut part = DomainSummary::default();
            part.add_batch(&view).map_err(corrupt)?;
            Ok(part)
        });
        let mut summary = DomainSummary::default();
        let mut corrupt = Vec::new();
        for (path, result) in results {
            match result {
                Ok(part) => {
                    for (domain, counts) in part.domains {
                        summary.domains.entry(domain).or_default().merge(&counts);
                    }
                    summary.total.merge(&part.total);
                    summary.batches += part.batches;
                }
                Err(err) => corrupt.push(Quarantined {
                    from: path,
                    to: None,
                    reason: err.to_string(),
                }),
            }
        }
        Ok((summary, corrupt))
    }
}

fn list_batches(dir: &Path) -> Result<Vec<PathBuf>, QueueError> {
    let entries = fs::read_dir(dir).map_err(|e| QueueError::io("list", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| QueueError::io("list", dir, e))?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == EXTENSION) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads each file and applies `f` to its bytes, on all cores, keeping the input
/// order. Each thread reuses one read buffer.
fn scan_parallel<T: Send>(
    files: &[PathBuf],
    f: impl Fn(&Path, &[u8]) -> Result<T, QueueError> + Sync,
) -> Vec<(PathBuf, Result<T, QueueError>)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len().max(1));
    let chunk = files.len().div_ceil(threads).max(1);
    let run = |part: &[PathBuf]| {
        let mut buf = Vec::with_capacity(64 * 1024);
        part.iter()
            .map(|path| {
                buf.clear();
                let read = File::open(path)
                    .and_then(|mut file| file.read_to_end(&mut buf))
                    .map_err(|e| QueueError::io("read", path, e));
                let result = read.and_then(|_| f(path, &buf));
                (path.clone(), result)
            })
            .collect::<Vec<_>>()
    };
    if threads <= 1 {
        return run(files);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || run(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Flushes the whole file system holding `file` (Linux `syncfs`): one call makes a
/// group of freshly written batch files durable.
#[allow(unsafe_code)]
fn syncfs(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor number, which `file` keeps open for
    // the duration of the call.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
