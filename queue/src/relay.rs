//! Relay batches (format version 2, FORMAT.md): received messages appended to a
//! shared file in group commits, then sealed and delivered like a campaign's
//! batch.
//!
//! A relay batch is created in `SPOOL/open/` with room for `capacity`
//! recipients (their state slots, zero, right after the header), then grows by
//! records: each received message (envelope and content) is appended
//! ([`OpenBatch::append`]), and [`OpenBatch::commit`] makes everything appended
//! durable with one `fdatasync` and then appends a commit record: the messages
//! before a commit record are the ones whose sender was told `250`. When full
//! (or old enough, the caller decides), [`OpenBatch::seal`] appends the seal
//! record, syncs and moves the file to `active/`, where it is read and
//! delivered from as any batch.
//!
//! After a crash, [`recover_open`] finishes what `open/` holds: a file written
//! in this boot keeps its committed messages only (the others never got their
//! `250`: their senders try again), so a `kill -9` neither loses an
//! acknowledged message nor delivers an unacknowledged one; a file from an
//! earlier boot (a power loss may have lost the commit record written after
//! the last sync) keeps every complete message, so nothing acknowledged is lost
//! (an unacknowledged one may then arrive twice). The torn tail is cut off, the
//! file sealed and moved to `active/`. [`recover_taken`] does the same for a
//! file a power cut left under an older name in `reuse/` or `active/` (the
//! moves of a file between directories are not synced).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::QueueError;
use crate::format::{
    self, Header, BOOT_ID_AT, HEADER_LEN, RECORD_COMMIT, RECORD_FIELDS, RECORD_MESSAGE,
    RECORD_SEAL, SLOT_LEN, VERSION_RELAY,
};

/// A relay batch being appended to, in `open/` (see the [module docs](self)).
#[derive(Debug)]
pub struct OpenBatch {
    file: File,
    path: PathBuf,
    name: String,
    campaign_id: u64,
    capacity: u32,
    /// Bytes in the file (written), and the encoded records not yet written.
    written: u64,
    pending: Vec<u8>,
    messages: u32,
    recipients: u32,
    committed: u32,
    committed_recipients: u32,
    /// File length after the last commit record.
    committed_end: u64,
    /// What the record checksums are masked with ([`format::record_mask`]).
    mask: u64,
    created: Instant,
}

/// One recipient of a message to append: domain, local part, and one value per
/// field of the batch.
pub type RelayRecipient<'a, V> = (&'a str, &'a str, &'a [V]);

/// The current boot's id (`/proc/sys/kernel/random/boot_id`), zero if unknown.
pub fn boot_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let Ok(text) = fs::read_to_string("/proc/sys/kernel/random/boot_id") else {
        return id;
    };
    let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    if hex.len() != 32 {
        return id;
    }
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).unwrap_or("00");
        id[i] = u8::from_str_radix(s, 16).unwrap_or(0);
    }
    id
}

fn fsync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| QueueError::io("fsync", dir, e))
}

impl OpenBatch {
    /// Creates `open_dir/NAME` (NAME: [`crate::Spool::file_name`] of
    /// `campaign_id`, batch 0) with room for `capacity` recipients, each with one
    /// value per field of `field_names`, durable (file and directory) when it
    /// returns. Fails with [`QueueError::Exists`] when the name is taken.
    ///
    /// With `reuse` (the spool's [`crate::Spool::reuse_dir`]), a finished relay
    /// batch's file kept there is taken instead of a new one when one is free
    /// (no mapping of it left in this process): writing over blocks the file
    /// system has already allocated makes each group's `fdatasync` a flush of
    /// the data alone, where appending to a new file also commits the journal
    /// (its size and block map) every time — about 0.8 extra bytes written to
    /// the device per byte of mail at the relay path's group sizes. Its old
    /// records stay past the new ones, also after the seal (readers stop at
    /// the seal record); their checksums, masked with the old batch's id, do
    /// not pass for the new one's.
    pub fn create(
        open_dir: &Path,
        reuse: Option<&Path>,
        campaign_id: u64,
        capacity: u32,
        field_names: &[&str],
        created_at: u64,
    ) -> Result<OpenBatch, QueueError> {
        let name = crate::Spool::file_name(campaign_id, 0);
        let path = open_dir.join(&name);
        let mask = format::record_mask(campaign_id);
        let head = Self::head(campaign_id, capacity, field_names, created_at, mask);
        if let Some(dir) = reuse {
            if let Some(file) = take_reusable(dir, &path, &head)? {
                // Its move into `open/` is not synced (a journal commit per
                // batch): lost with a power cut, the file is found by its
                // header under an older name ([`recover_taken`]).
                return Ok(OpenBatch::of(
                    file,
                    path,
                    name,
                    campaign_id,
                    capacity,
                    head.len(),
                ));
            }
        }
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(QueueError::Exists { path })
            }
            Err(e) => return Err(QueueError::io("create", &path, e)),
        };
        let io = |action| {
            let path = path.clone();
            move |e| QueueError::io(action, &path, e)
        };
        let written = (|| {
            (&file).write_all(&head)?;
            file.sync_data()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(io("write")(e));
        }
        fsync_dir(open_dir)?;
        Ok(OpenBatch::of(
            file,
            path,
            name,
            campaign_id,
            capacity,
            head.len(),
        ))
    }

    fn of(
        file: File,
        path: PathBuf,
        name: String,
        campaign_id: u64,
        capacity: u32,
        head_len: usize,
    ) -> OpenBatch {
        OpenBatch {
            file,
            path,
            name,
            campaign_id,
            capacity,
            written: head_len as u64,
            pending: Vec::with_capacity(64 * 1024),
            messages: 0,
            recipients: 0,
            committed: 0,
            committed_recipients: 0,
            committed_end: head_len as u64,
            mask: format::record_mask(campaign_id),
            created: Instant::now(),
        }
    }

    /// The header, the zero slots and the field names record of a new batch.
    fn head(
        campaign_id: u64,
        capacity: u32,
        field_names: &[&str],
        created_at: u64,
        mask: u64,
    ) -> Vec<u8> {
        let fields_off = HEADER_LEN + capacity as usize * SLOT_LEN;
        let mut head = vec![0u8; fields_off];
        head[..8].copy_from_slice(&format::MAGIC);
        head[8..10].copy_from_slice(&VERSION_RELAY.to_le_bytes());
        head[10..12].copy_from_slice(&(field_names.len() as u16).to_le_bytes());
        head[12..16].copy_from_slice(&capacity.to_le_bytes());
        head[32..40].copy_from_slice(&campaign_id.to_le_bytes());
        head[40..48].copy_from_slice(&created_at.to_le_bytes());
        head[BOOT_ID_AT..BOOT_ID_AT + 16].copy_from_slice(&boot_id());
        head[80..84].copy_from_slice(&(fields_off as u32).to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&head[..120]);
        head[120..128].copy_from_slice(&sum.to_le_bytes());
        let mut names = Vec::new();
        for name in field_names {
            format::put_bytes(&mut names, name.as_bytes());
        }
        format::put_record(&mut head, RECORD_FIELDS, &names, mask);
        head
    }

    /// The campaign id in the file's name and header (the queue id of its
    /// messages, each with its `.N`).
    pub fn campaign_id(&self) -> u64 {
        self.campaign_id
    }

    /// Recipients it still has room for.
    pub fn room(&self) -> u32 {
        self.capacity - self.recipients
    }

    /// Messages appended so far.
    pub fn messages(&self) -> u32 {
        self.messages
    }

    /// Bytes of the file once what was appended is written.
    pub fn bytes(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// When it was created.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Appends a message for `recipients` (at most [`OpenBatch::room`], at
    /// least one; each with as many values as the batch has fields) in memory;
    /// durable at the next [`OpenBatch::commit`]. Returns its number in the
    /// batch.
    pub fn append<V: AsRef<[u8]>>(
        &mut self,
        mail_from: &str,
        recipients: &[RelayRecipient<'_, V>],
        content: &[u8],
    ) -> u32 {
        let record = MessageRecord::new(mail_from, recipients, content);
        self.append_record(&record, content, recipients.len() as u32)
    }

    /// Appends the message `record` of `content` (made by
    /// [`MessageRecord::new`], possibly on another thread) for `recipients`
    /// recipients (at most [`OpenBatch::room`]); returns its number in the
    /// batch, as [`OpenBatch::append`].
    pub fn append_record(
        &mut self,
        record: &MessageRecord,
        content: &[u8],
        recipients: u32,
    ) -> u32 {
        debug_assert_eq!(record.content_len, content.len());
        self.pending.reserve(record.len());
        self.pending.extend_from_slice(&record.head);
        self.pending.extend_from_slice(content);
        self.pending
            .extend_from_slice(&(record.checksum ^ self.mask).to_le_bytes());
        self.messages += 1;
        self.recipients += recipients;
        self.messages - 1
    }

    /// [`OpenBatch::append_record`] straight to the file, without copying
    /// `content` (a large message): written at once, durable at the next
    /// [`OpenBatch::commit`].
    pub fn write_record(
        &mut self,
        record: &MessageRecord,
        content: &[u8],
        recipients: u32,
    ) -> Result<u32, QueueError> {
        self.write_pending()
            .and_then(|()| {
                let mut at = self.written;
                let tail = (record.checksum ^ self.mask).to_le_bytes();
                for part in [&record.head[..], content, &tail[..]] {
                    self.file.write_all_at(part, at)?;
                    at += part.len() as u64;
                }
                self.written = at;
                Ok(())
            })
            .map_err(|e| QueueError::io("write", &self.path, e))?;
        self.messages += 1;
        self.recipients += recipients;
        Ok(self.messages - 1)
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file.write_all_at(&self.pending, self.written)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        // A group of large messages does not leave its buffer behind.
        if self.pending.capacity() > 8 << 20 {
            self.pending = Vec::new();
        }
        Ok(())
    }

    /// Makes every appended message durable (one write, one `fdatasync`), then
    /// appends the commit record that marks them acknowledged. Their senders may
    /// be told `250` when it returns. On an error nothing appended since the
    /// last commit counts: the batch must be [`OpenBatch::seal`]ed (which cuts
    /// them off) or left to [`recover_open`].
    pub fn commit(&mut self) -> Result<(), QueueError> {
        if self.messages == self.committed {
            return Ok(());
        }
        let path = self.path.clone();
        let io = |e| QueueError::io("write", &path, e);
        let start = self.written;
        let synced = self.write_pending().and_then(|()| self.file.sync_data());
        if let Err(e) = synced {
            self.pending.clear();
            self.written = start;
            self.messages = self.committed;
            self.recipients = self.committed_recipients;
            return Err(io(e));
        }
        let mut body = Vec::with_capacity(5);
        crate::varint::put(&mut body, self.messages);
        format::put_record(&mut self.pending, RECORD_COMMIT, &body, self.mask);
        // Not synced: durable with the next commit or the seal; until then a
        // kill leaves it in the page cache, and a power loss is handled by
        // recovery (a file from an earlier boot keeps every complete message).
        self.write_pending().map_err(io)?;
        self.committed = self.messages;
        self.committed_recipients = self.recipients;
        self.committed_end = self.written;
        Ok(())
    }

    /// Seals the batch: whatever was appended since the last commit is dropped
    /// (never acknowledged), the seal record written and synced, the file moved
    /// to `active_dir` (both directories synced). Returns its new path, or `None`
    /// when it held no committed message (the file is removed).
    pub fn seal(mut self, active_dir: &Path) -> Result<Option<PathBuf>, QueueError> {
        self.pending.clear();
        // Cut off what a failed commit may have left written.
        let end = self.committed_end;
        if self.written != end {
            self.file
                .set_len(end)
                .map_err(|e| QueueError::io("truncate", &self.path, e))?;
            self.written = end;
        }
        if self.committed == 0 {
            drop(self.file);
            let _ = fs::remove_file(&self.path);
            return Ok(None);
        }
        let mut body = Vec::with_capacity(10);
        crate::varint::put(&mut body, self.committed);
        crate::varint::put(&mut body, self.committed_recipients);
        format::put_record(&mut self.pending, RECORD_SEAL, &body, self.mask);
        let path = self.path.clone();
        let io = |action| {
            let path = path.clone();
            move |e| QueueError::io(action, &path, e)
        };
        self.write_pending().map_err(io("seal"))?;
        // A reused file longer than this batch is not cut: its older records
        // past the seal are not read, and cutting them would free blocks the
        // next batch written over the file must then allocate again, a journal
        // commit at each of its groups' syncs that writes past the cut.
        self.file.sync_data().map_err(io("seal"))?;
        let slots_end = (HEADER_LEN + self.capacity as usize * SLOT_LEN) as u64;
        crate::mapped::drop_cached_head(&self.file, slots_end);
        // The move is not synced (neither directory): each directory sync is a
        // journal commit of its own, and the seal runs on a committer thread,
        // between two groups. Lost with a power cut, the move leaves the
        // sealed file in `open/`, which recovery moves to `active/` with the
        // slots delivery wrote to it meanwhile (the file system's next journal
        // commit, at the latest its periodic one, carries the move).
        let dest = active_dir.join(&self.name);
        move_no_replace(&self.path, &dest)?;
        Ok(Some(dest))
    }
}

/// A message record without its content: what precedes the content (length,
/// kind, envelope, recipients, the content's length) and the checksum that
/// follows it. Made where the message is (the receiving session's thread),
/// without copying the content; appended where the batch is.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    head: Vec<u8>,
    /// The record's checksum, unmasked: the batch it goes into masks it.
    checksum: u64,
    content_len: usize,
}

impl MessageRecord {
    /// The record of a message of `content` for `recipients` (each with one
    /// value per field of the batch) from `mail_from`.
    pub fn new<V: AsRef<[u8]>>(
        mail_from: &str,
        recipients: &[RelayRecipient<'_, V>],
        content: &[u8],
    ) -> MessageRecord {
        let mut head = vec![0u8; 4];
        head.push(RECORD_MESSAGE);
        format::put_message_body(&mut head, mail_from, recipients, &[]);
        // put_message_body ended with the empty content's length (one zero
        // byte): the real length replaces it.
        head.pop();
        crate::varint::put(&mut head, content.len() as u32);
        let body_len = head.len() - 5 + content.len();
        head[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        let mut sum = xxhash_rust::xxh3::Xxh3::new();
        sum.update(&head[4..]);
        sum.update(content);
        MessageRecord {
            head,
            checksum: sum.digest(),
            content_len: content.len(),
        }
    }

    /// Bytes of the whole record.
    pub fn len(&self) -> usize {
        self.head.len() + self.content_len + 8
    }

    /// Whether the record is empty (never: it has a length, kind and checksum).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A file of `dir` (finished relay batches kept for reuse) that no mapping of
/// this process still refers to, with `head` written over its start and synced,
/// renamed to `to` (unless `to` exists). `None` when no file is
/// free. A file that cannot be written is removed and the next one tried.
///
/// The new header is durable before the file takes its new name, so `open/`
/// never holds the old batch under the new name (its seal record would pass).
fn take_reusable(dir: &Path, to: &Path, head: &[u8]) -> Result<Option<File>, QueueError> {
    // One taker at a time (the committer threads, a large message's writer):
    // two would write their headers over one file. One process writes a spool.
    static TAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _taking = TAKING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    for entry in entries.flatten() {
        let from = entry.path();
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&from) else {
            continue;
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        if !meta.is_file() || crate::mapped::is_mapped(&meta) {
            continue;
        }
        if write_changed(&file, head)
            .and_then(|()| file.sync_data())
            .is_err()
        {
            let _ = fs::remove_file(&from);
            continue;
        }
        if to.exists() {
            return Err(QueueError::Exists {
                path: to.to_owned(),
            });
        }
        fs::rename(&from, to).map_err(|e| QueueError::io("reuse", &from, e))?;
        return Ok(Some(file));
    }
    Ok(None)
}

/// Writes `head` over the start of `file`, skipping the pages that hold it
/// already: a reused file's slots are zero again but for the ones its last batch
/// used, so of the ~80 KB of header and slots of a batch of 100 only the first
/// and last pages are written.
fn write_changed(file: &File, head: &[u8]) -> std::io::Result<()> {
    const PAGE: usize = 4096;
    let mut old = vec![0u8; head.len()];
    let mut have = 0;
    while have < old.len() {
        match file.read_at(&mut old[have..], have as u64)? {
            0 => break,
            n => have += n,
        }
    }
    for (i, new) in head.chunks(PAGE).enumerate() {
        let at = i * PAGE;
        if at + new.len() > have || old[at..at + new.len()] != *new {
            file.write_all_at(new, at as u64)?;
        }
    }
    Ok(())
}

/// Moves `from` to `to` unless `to` exists: a relay batch never replaces
/// another. One `renameat2(RENAME_NOREPLACE)`, atomic: after a power cut the
/// file has one of its names. On a file system without it, a link and then
/// the old name removed; a `to` that is `from` already (a stop between the
/// two) only loses the old name.
fn move_no_replace(from: &Path, to: &Path) -> Result<(), QueueError> {
    use std::os::unix::fs::MetadataExt;
    match rename_no_replace(from, to) {
        Ok(()) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(QueueError::io("move to active", from, e)),
    }
    if let Err(e) = fs::hard_link(from, to) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(QueueError::io("move to active", from, e));
        }
        let file = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        if file(from).is_none() || file(from) != file(to) {
            return Err(QueueError::Exists {
                path: to.to_owned(),
            });
        }
    }
    fs::remove_file(from).map_err(|e| QueueError::io("remove", from, e))
}

/// Linux `renameat2(from, to, RENAME_NOREPLACE)`.
#[allow(unsafe_code)]
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both are NUL-terminated paths that live across the call, which
    // only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What [`recover_open`] did with one file of `open/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// Sealed and moved to `active/` (the new path) with this many messages;
    /// `dropped` complete messages were cut off as never acknowledged, and
    /// `unsure` of those kept may not have been (a file from an earlier boot).
    Sealed {
        /// Its path in `active/`.
        path: PathBuf,
        /// Messages kept.
        messages: u32,
        /// Messages dropped (appended, never committed, in this boot).
        dropped: u32,
        /// Kept messages whose commit record was not found.
        unsure: u32,
    },
    /// Held no acknowledged message: removed.
    Removed(PathBuf),
    /// Not a readable relay batch (header): left for the caller to quarantine,
    /// with the reason.
    Corrupt(PathBuf, String),
}

/// Finishes the relay batches a stopped process left in `open_dir` (see the
/// [module docs](self)), moving them to `active_dir`. Run before anything in
/// this process appends to `open_dir` (the spool does it when opened).
pub fn recover_open(open_dir: &Path, active_dir: &Path) -> Result<Vec<Recovered>, QueueError> {
    recover_in(open_dir, active_dir, |_| true)
}

/// Recovers ([`recover_one`]) the files of `dir` that `pick` takes, in name
/// order, then syncs `dir` and `active_dir` if there were any.
fn recover_in(
    dir: &Path,
    active_dir: &Path,
    mut pick: impl FnMut(&fs::DirEntry) -> bool,
) -> Result<Vec<Recovered>, QueueError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(QueueError::io("list", dir, e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| pick(e))
        .map(|e| e.path())
        .collect();
    paths.sort();
    let boot = boot_id();
    let mut out = Vec::new();
    for path in paths {
        out.push(recover_one(&path, active_dir, boot)?);
    }
    if !out.is_empty() {
        fsync_dir(dir)?;
        fsync_dir(active_dir)?;
    }
    Ok(out)
}

/// Finishes, as [`recover_open`] does, the relay batch files of `dir`
/// (`reuse/` or `active/`) that a new relay batch had taken: their header
/// names another batch than their file name. Only a power cut leaves one:
/// taking a finished batch's file (its header written over it, synced) and
/// moving it on (to `reuse/` at its completion, to `open/` when taken, to
/// `active/` at the seal) are not synced, so the file may be found under any
/// earlier name, holding the new batch's acknowledged messages. Files whose
/// header cannot be read are left (delivery quarantines those of `active/`;
/// one of `reuse/` is written over).
pub fn recover_taken(dir: &Path, active_dir: &Path) -> Result<Vec<Recovered>, QueueError> {
    recover_in(dir, active_dir, |entry| {
        use std::io::Read;
        let path = entry.path();
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('-').next())
            .and_then(|id| u64::from_str_radix(id, 16).ok());
        // Only relay batches are ever taken (campaign batches' files are
        // not read here: a spool may hold a great many).
        let Some(named) = named.filter(|&id| crate::ids::is_inbound_id(id)) else {
            return false;
        };
        let mut head = [0u8; HEADER_LEN];
        let len = entry.metadata().map_or(0, |m| m.len()) as usize;
        File::open(&path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok_and(|()| {
                Header::read(&head, len).is_ok_and(|h| h.is_relay() && h.campaign_id != named)
            })
    })
}

fn recover_one(path: &Path, active_dir: &Path, boot: [u8; 16]) -> Result<Recovered, QueueError> {
    let io = |action| move |e| QueueError::io(action, path, e);
    let bytes = fs::read(path).map_err(io("read"))?;
    let header = match Header::read(&bytes, bytes.len()) {
        Ok(h) if h.is_relay() => h,
        Ok(_) => {
            return Ok(Recovered::Corrupt(
                path.to_owned(),
                "not a relay batch".into(),
            ))
        }
        Err(e) => return Ok(Recovered::Corrupt(path.to_owned(), e.to_string())),
    };
    let base = header.fields_off as usize;
    let region = &bytes[base..];
    let mask = header.record_mask();
    let pos = match format::next_record(region, 0, mask) {
        Ok(Some(r)) if r.kind == RECORD_FIELDS => r.end,
        _ => {
            return Ok(Recovered::Corrupt(
                path.to_owned(),
                "no field names record".into(),
            ))
        }
    };
    let mut pos = pos;
    // The last complete records: message count and end after each.
    let (mut messages, mut recipients) = (0u32, 0u32);
    let (mut committed, mut committed_end, mut committed_rcpts) = (0u32, pos, 0u32);
    let (mut complete_end, mut sealed) = (pos, false);
    while let Ok(Some(record)) = format::next_record(region, pos, mask) {
        match record.kind {
            RECORD_MESSAGE => {
                let mut p = record.body;
                let n = format::get_varint(&region[..record.body_end], &mut p).unwrap_or(0);
                messages += 1;
                recipients += n;
                complete_end = record.end;
            }
            RECORD_COMMIT => {
                committed = messages;
                committed_rcpts = recipients;
                committed_end = record.end;
                complete_end = record.end;
            }
            RECORD_SEAL => {
                sealed = true;
                complete_end = record.end;
                break;
            }
            _ => break,
        }
        pos = record.end;
    }
    let same_boot = boot != [0; 16] && bytes[BOOT_ID_AT..BOOT_ID_AT + 16] == boot;
    // Named for the batch its header is (a file taken for a new batch may be
    // found under an older name: see `recover_taken`).
    let dest = active_dir.join(crate::Spool::file_name(header.campaign_id, 0));
    if sealed {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("open"))?;
        file.set_len((base + complete_end) as u64)
            .map_err(io("truncate"))?;
        file.sync_data().map_err(io("sync"))?;
        move_no_replace(path, &dest)?;
        return Ok(Recovered::Sealed {
            path: dest,
            messages,
            dropped: 0,
            unsure: 0,
        });
    }
    let (keep, keep_rcpts, keep_end) = if same_boot {
        (committed, committed_rcpts, committed_end)
    } else {
        (messages, recipients, complete_end)
    };
    if keep == 0 {
        fs::remove_file(path).map_err(io("remove"))?;
        return Ok(Recovered::Removed(path.to_owned()));
    }
    let mut tail = Vec::new();
    if keep != committed || keep_end != committed_end {
        let mut body = Vec::new();
        crate::varint::put(&mut body, keep);
        format::put_record(&mut tail, RECORD_COMMIT, &body, mask);
    }
    let mut body = Vec::new();
    crate::varint::put(&mut body, keep);
    crate::varint::put(&mut body, keep_rcpts);
    format::put_record(&mut tail, RECORD_SEAL, &body, mask);
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("open"))?;
    let end = (base + keep_end) as u64;
    file.set_len(end).map_err(io("truncate"))?;
    file.write_all_at(&tail, end).map_err(io("write"))?;
    file.sync_data().map_err(io("sync"))?;
    move_no_replace(path, &dest)?;
    Ok(Recovered::Sealed {
        path: dest,
        messages: keep,
        dropped: messages - keep,
        unsure: if same_boot { 0 } else { messages - committed },
    })
}

#[cfg(test)]
mod tests;
