//! A batch file mapped read-write, whose state slots are updated in place.
//!
//! This is the only module of volley that uses `unsafe`: the slots are 8-byte
//! atomics living in a shared file mapping. A killed process loses no completed
//! store (the kernel's page cache holds it); [`MappedBatch::sync`] (msync) bounds
//! what a power loss can lose.
//!
//! Soundness rests on one rule, kept by [`crate::Spool`]'s exclusive lock: while a
//! spool is open for delivery, only this process writes its batch files, and only
//! through these atomics. Nothing truncates a mapped file (that would fault on access):
//! a finished relay batch's file is reused (rewritten, cut) only once no
//! mapping of it is left in the process ([`is_mapped`]).
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use memmap2::{Advice, MmapRaw};

use crate::error::QueueError;
use crate::format::{BatchIndex, BatchView, FormatError, Header, Region, HEADER_LEN, SLOT_LEN};
use crate::slot::{Slot, State};
use crate::summary::StateCounts;

/// A live batch: its validated layout plus a writable mapping of its slots.
#[derive(Debug)]
pub struct MappedBatch {
    path: PathBuf,
    map: MmapRaw,
    index: BatchIndex,
    dirty: AtomicBool,
    /// Declared after `map`: dropped (unregistered) once it is unmapped.
    _mapped: Mapped,
}

/// The files this process has mapped (device, inode), with their mappings'
/// count. A finished relay batch's file is reused for a later batch, rewritten
/// and cut shorter: only once no mapping of it is left ([`is_mapped`]), since a
/// mapping's immutable bytes must not change and reading past a cut end faults.
static MAPPED: Mutex<BTreeMap<(u64, u64), u32>> = Mutex::new(BTreeMap::new());

/// One registered mapping of a file (see [`MAPPED`]).
#[derive(Debug)]
struct Mapped((u64, u64));

impl Mapped {
    fn register(meta: &std::fs::Metadata) -> Mapped {
        let key = (meta.dev(), meta.ino());
        *MAPPED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(0) += 1;
        Mapped(key)
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let mut mapped = MAPPED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = mapped.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                mapped.remove(&self.0);
            }
        }
    }
}

/// Keeps the pages of a relay batch's slots (right after its header) out of
/// large page-cache folios, and lets the rest of any batch be read ahead.
///
/// The kernel caches a file in folios of up to hundreds of KB, and writes a
/// dirty folio back whole: one slot changed through the mapping would make the
/// next msync write its whole folio (64 KB measured, where the slots of a
/// relay batch of 100 messages take 800 bytes). Relay batches are synced
/// every `sync_interval` while delivered, so that was ~17% of the bytes the
/// relay path wrote to disk. Slot pages faulted in one at a time
/// (`MADV_RANDOM`), after [`drop_cached_head`] dropped them at the seal, stay
/// single pages. A campaign batch's slots share the pages of its records,
/// written with them in one go; it keeps the default.
fn keep_slot_pages_small(map: &MmapRaw, header: &Header, len: usize) {
    const PAGE: usize = 4096;
    let normal_from = if header.is_relay() {
        (header.fields_off as usize).div_ceil(PAGE) * PAGE
    } else {
        0
    };
    if normal_from < len {
        let _ = map.advise_range(Advice::Normal, normal_from, len - normal_from);
    }
}

/// Drops the page cache's copy of the first `len` bytes of `file` (its header
/// and slots), which a sync has just written: a relay batch's slot pages are
/// then faulted in singly when delivery maps it (see [`keep_slot_pages_small`]).
/// Advice only: a failure changes nothing but the bytes later syncs write.
pub(crate) fn drop_cached_head(file: &std::fs::File, len: u64) {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).unwrap_or(libc::off_t::MAX);
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is
    // open for as long as `file` is borrowed.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, len, libc::POSIX_FADV_DONTNEED) };
}

/// Whether the file of `meta` is mapped by a [`MappedBatch`] of this process.
pub(crate) fn is_mapped(meta: &std::fs::Metadata) -> bool {
    MAPPED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains_key(&(meta.dev(), meta.ino()))
}

impl MappedBatch {
    /// Maps the batch file at `path` and validates it, slots included.
    pub fn open(path: &Path) -> Result<MappedBatch, QueueError> {
        let io = |action| move |source| QueueError::io(action, path, source);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("open"))?;
        let meta = file.metadata().map_err(io("stat"))?;
        let len = meta.len();
        let corrupt = |fault| QueueError::Corrupt {
            path: path.to_owned(),
            fault,
        };
        if len < HEADER_LEN as u64 {
            return Err(corrupt(FormatError::Truncated {
                region: Region::Header,
                len,
                needed: HEADER_LEN as u64,
            }));
        }
        if len > u64::from(u32::MAX) {
            return Err(corrupt(FormatError::Layout(format!(
                "file is {len} bytes, more than a batch file can be"
            ))));
        }
        let mapped = Mapped::register(&meta);
        let map = MmapRaw::map_raw(&file).map_err(io("map"))?;
        let len = len as usize;
        // Pages not cached yet are read one by one until the header says
        // where the slots are (see `keep_slot_pages_small`).
        let _ = map.advise(Advice::Random);
        // SAFETY: the mapping is `len` bytes long and stays alive while the slice is
        // used; only the slots (after the header) are ever written through atomics.
        let start = unsafe { std::slice::from_raw_parts(map.as_ptr(), HEADER_LEN) };
        let header = Header::read(start, len).map_err(corrupt)?;
        keep_slot_pages_small(&map, &header, len);
        // SAFETY: Header::read checked that the immutable range lies within
        // file_len == len; those bytes are never written while mapped (see the
        // module doc: only the slots are).
        let range = header.immutable_range();
        let immutable =
            unsafe { std::slice::from_raw_parts(map.as_ptr().add(range.start), range.len()) };
        let index = BatchIndex::build(header, immutable).map_err(corrupt)?;
        let batch = MappedBatch {
            path: path.to_owned(),
            map,
            index,
            dirty: AtomicBool::new(false),
            _mapped: mapped,
        };
        for i in 0..batch.len() {
            batch.slot(i).map_err(corrupt)?;
        }
        Ok(batch)
    }

    /// The file this batch was mapped from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        self.index.header()
    }

    /// Number of recipients.
    pub fn len(&self) -> usize {
        self.header().recipient_count as usize
    }

    /// Whether the batch has no recipients.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Recipients, field names and domains (the immutable part).
    pub fn view(&self) -> BatchView<'_> {
        // SAFETY: as in `open`: the immutable range lies within the mapping, and
        // its bytes are never written while mapped.
        let range = self.header().immutable_range();
        let immutable =
            unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(range.start), range.len()) };
        self.index.view(immutable)
    }

    fn atomic(&self, index: usize) -> Option<&AtomicU64> {
        if index >= self.len() {
            return None;
        }
        let offset = self.header().slots_off as usize + index * SLOT_LEN;
        // SAFETY: index < len <= the slots the header has room for, so offset + 8
        // lies within the slots range, within the mapping (checked by Header::read);
        // the mapping base is page-aligned and slots_off is a multiple of 8, so the
        // pointer is aligned for AtomicU64; the slot bytes are only ever accessed
        // through atomics while mapped, and the reference lives no longer than `self`.
        Some(unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u64>()) })
    }

    /// Reads recipient `index`'s slot.
    pub fn slot(&self, index: usize) -> Result<Slot, FormatError> {
        let atomic = self.atomic(index).ok_or(FormatError::Malformed {
            region: Region::Slots,
            offset: index,
            what: "recipient index out of range",
        })?;
        let raw = u64::from_le(atomic.load(Ordering::Acquire));
        Slot::decode(raw).map_err(|fault| FormatError::Slot { index, fault })
    }

    /// Records recipient `index`'s new state with one atomic 8-byte store. Durable
    /// against a process kill at once; against power loss after the next [`sync`].
    ///
    /// [`sync`]: MappedBatch::sync
    pub fn set_slot(&self, index: usize, slot: Slot) -> Result<(), QueueError> {
        let atomic = self.atomic(index).ok_or(QueueError::NoSuchRecipient {
            path: self.path.clone(),
            index,
            len: self.len(),
        })?;
        atomic.store(slot.encode().to_le(), Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Counts recipients by state.
    pub fn counts(&self) -> Result<StateCounts, QueueError> {
        let mut counts = StateCounts::default();
        for i in 0..self.len() {
            let slot = self.slot(i).map_err(|fault| QueueError::Corrupt {
                path: self.path.clone(),
                fault,
            })?;
            counts.add(slot.state, 1);
        }
        Ok(counts)
    }

    /// Whether every recipient is in a final state.
    pub fn is_finished(&self) -> Result<bool, QueueError> {
        Ok(self.counts()?.unfinished() == 0)
    }

    /// Resets every in-flight recipient to pending (after a crash their outcome is
    /// unknown, so they are sent again); returns how many there were.
    pub fn reset_in_flight(&self) -> Result<usize, QueueError> {
        let mut reset = 0;
        for i in 0..self.len() {
            let slot = self.slot(i).map_err(|fault| QueueError::Corrupt {
                path: self.path.clone(),
                fault,
            })?;
            if slot.state == State::InFlight {
                self.set_slot(
                    i,
                    Slot {
                        state: State::Pending,
                        ..slot
                    },
                )?;
                reset += 1;
            }
        }
        Ok(reset)
    }

    /// Flushes the slots to disk (msync) if any changed since the last flush.
    pub fn sync(&self) -> Result<(), QueueError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let start = self.header().slots_off as usize;
        let len = self.len() * SLOT_LEN;
        self.map.flush_range(start, len).map_err(|source| {
            self.dirty.store(true, Ordering::Release);
            QueueError::io("msync", &self.path, source)
        })
    }
}
