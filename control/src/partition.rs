//! Cutting a recipient list into batch files: sorted by destination (domain, then
//! local part, both case-insensitive), `batch_size` recipients each, batch ids 0,
//! 1, 2, … in that order. Duplicates (the same address in any case) sort next to
//! each other; the first in the file is kept and the others are rejected.
//!
//! The sort runs in bounded memory, whatever the list's length: rows are read one
//! at a time into a chunk of at most [`CHUNK_BYTES`], each full chunk is sorted and
//! spilled to a run file in the spool's scratch directory, and the runs are merged
//! while the batches are written. A million recipients take two or three runs.
//! (Written by hand: it is the send path's first step and must not hold the list.)
//!
//! Suppressed addresses are dropped while the list is read ([`sort`] takes a
//! filter) and returned, before any batch is written, so that the caller can
//! record them with the campaign ([`crate::campaign::Campaign::save_suppressed`]):
//! a resumed partitioning drops exactly those, whatever the suppression list holds
//! by then, and the cut stays the same (the delivery engine checks the list again
//! before sending).
//!
//! The cut is deterministic: the same list and batch size always give the same
//! batches. So a partitioning interrupted by a crash is finished by running it
//! again with `resume`: batches already in the spool are kept as they are (their
//! recipients may be under way) and only the missing ones are written. No
//! recipient is lost or queued twice.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use volley_queue::{BatchBuilder, BatchMeta, QueueError, Spool};

use crate::recipients::{RecipientReader, Rejected, RowRef};
use crate::store::batches::BatchCut;

/// Batch files are committed in groups of about this many bytes (one syncfs each).
const GROUP_BYTES: usize = 32 << 20;

/// Rows are sorted in memory in chunks of about this many bytes of row data.
pub const CHUNK_BYTES: usize = 48 << 20;

/// What a partitioning wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partitioned {
    /// Batches of the campaign (written now or found from an earlier run).
    pub batches: u64,
    /// Batches written now.
    pub written: u64,
    /// Recipients in all batches.
    pub recipients: u64,
    /// Rows skipped (unreadable, wrong field count, bad address, duplicate), by line.
    pub rejected: Vec<Rejected>,
    /// Every batch (written now or found), with its recipients per destination
    /// domain: the batch rows of the control plane's store.
    pub cuts: Vec<BatchCut>,
}

/// Writes the batches of campaign `campaign_id` for the rows of `reader`, with
/// nothing suppressed. With `resume`, batches already in `active/` or `done/` are
/// left alone.
pub fn partition<R: Read>(
    spool: &Spool,
    reader: &mut RecipientReader<R>,
    campaign_id: u64,
    content_hash: [u8; 32],
    created_at: u64,
    batch_size: u32,
    resume: bool,
) -> Result<Partitioned, QueueError> {
    let meta = BatchMeta {
        batch_id: 0,
        campaign_id,
        content_hash,
        created_at,
    };
    sort(spool, reader, campaign_id, |_| None)?.write(spool, meta, batch_size, resume)
}

/// A recipient list read and sorted (in memory and in run files), ready to be
/// cut into batches by [`Sorted::write`].
pub struct Sorted {
    fields: Vec<String>,
    sources: Vec<Source>,
    runs: Runs,
    scratch: PathBuf,
    /// Rows skipped while reading (unreadable, wrong field count, bad address).
    pub rejected: Vec<Rejected>,
    /// Rows dropped by the suppression filter, in file order, with reason
    /// `suppressed: WHY`.
    pub suppressed: Vec<Rejected>,
}

impl std::fmt::Debug for Sorted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sorted")
            .field("runs", &self.runs.paths.len())
            .field("rejected", &self.rejected.len())
            .field("suppressed", &self.suppressed.len())
            .finish_non_exhaustive()
    }
}

/// Reads every row of `reader`, drops those `suppressed` gives a reason for (the
/// suppression's, e.g. `hard_bounce`) and sorts the rest by destination, spilling
/// sorted runs of [`CHUNK_BYTES`] to the spool's scratch directory.
pub fn sort<R: Read>(
    spool: &Spool,
    reader: &mut RecipientReader<R>,
    campaign_id: u64,
    suppressed: impl FnMut(&str) -> Option<String>,
) -> Result<Sorted, QueueError> {
    sort_in_chunks(spool, reader, campaign_id, suppressed, CHUNK_BYTES)
}

fn sort_in_chunks<R: Read>(
    spool: &Spool,
    reader: &mut RecipientReader<R>,
    campaign_id: u64,
    mut suppressed: impl FnMut(&str) -> Option<String>,
    chunk_bytes: usize,
) -> Result<Sorted, QueueError> {
    let scratch = spool.scratch_dir();
    let run_name = |n: usize| scratch.join(format!("partition-{campaign_id:016x}-{n}.run"));
    let mut sorted = Sorted {
        fields: reader.fields().to_vec(),
        sources: Vec::new(),
        runs: Runs { paths: Vec::new() },
        scratch: scratch.clone(),
        rejected: Vec::new(),
        suppressed: Vec::new(),
    };
    // Reserved at full size up front (untouched pages cost no memory): growing by
    // doubling would hold the old and the new buffer at once, 1.5 times the chunk
    // at the peak when the allocator cannot grow it in place.
    let mut chunk = Chunk {
        data: Vec::with_capacity(chunk_bytes + (chunk_bytes >> 6)),
        index: Vec::with_capacity(chunk_bytes / 48),
    };
    while let Some(row) = reader.next_row() {
        match row {
            Err(rejected) => sorted.rejected.push(rejected),
            Ok(row) => {
                if let Some(reason) = suppressed(row.email) {
                    sorted.suppressed.push(Rejected {
                        line: row.line,
                        email: row.email.to_owned(),
                        reason: format!("suppressed: {reason}"),
                    });
                    continue;
                }
                chunk.push(&row);
                if chunk.data.len() >= chunk_bytes {
                    let path = run_name(sorted.runs.paths.len());
                    sorted.runs.paths.push(path.clone());
                    chunk.spill(&path)?;
                }
            }
        }
    }
    for path in &sorted.runs.paths {
        let file = File::open(path).map_err(|e| QueueError::io("open", path, e))?;
        sorted.sources.push(Source::File {
            reader: BufReader::with_capacity(1 << 16, file),
            current: Vec::new(),
            path: path.clone(),
            live: false,
        });
    }
    if !chunk.index.is_empty() {
        chunk.sort();
        sorted.sources.push(Source::Memory { chunk, next: 0 });
    }
    for source in &mut sorted.sources {
        source.advance()?;
    }
    Ok(sorted)
}

impl Sorted {
    /// Cuts the sorted rows into batches of `batch_size` (ids from 0) and writes
    /// them in groups; duplicates found on the way are added to the rejects. With
    /// `resume`, batches already in `active/` or `done/` are left alone.
    pub fn write(
        mut self,
        spool: &Spool,
        meta: BatchMeta,
        batch_size: u32,
        resume: bool,
    ) -> Result<Partitioned, QueueError> {
        let mut result = Partitioned {
            rejected: std::mem::take(&mut self.rejected),
            ..Partitioned::default()
        };
        let existing: HashSet<String> = if resume {
            [spool.active_dir(), spool.done_dir()]
                .iter()
                .filter_map(|d| std::fs::read_dir(d).ok())
                .flat_map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                })
                .collect()
        } else {
            HashSet::new()
        };
        let fields = std::mem::take(&mut self.fields);
        let sources = &mut self.sources;
        let batch_size = batch_size.max(1) as usize;
        let mut writer = BatchWriter {
            spool,
            existing,
            meta,
            fields: &fields,
            builder: None,
            in_batch: 0,
            group: Vec::new(),
            group_bytes: 0,
        };
        let mut previous_key: Vec<u8> = Vec::new();
        let mut previous_line = 0;
        loop {
            // The smallest current record among the sources (a handful: a linear scan).
            let mut best: Option<usize> = None;
            for (i, source) in sources.iter().enumerate() {
                let Some(record) = source.current() else {
                    continue;
                };
                let better = best.is_none_or(|b| {
                    sources[b]
                        .current()
                        .is_none_or(|cur| compare(record, cur) == Ordering::Less)
                });
                if better {
                    best = Some(i);
                }
            }
            let Some(best) = best else { break };
            {
                let bytes = sources[best].current().unwrap_or_default();
                let record = Record::decode(bytes, fields.len())
                    .map_err(|e| QueueError::io("read", &self.scratch, e))?;
                if record.key == previous_key.as_slice() {
                    result.rejected.push(Rejected {
                        line: record.line,
                        email: record.email.to_owned(),
                        reason: format!("duplicate of line {previous_line}"),
                    });
                } else {
                    previous_key.clear();
                    previous_key.extend_from_slice(record.key);
                    previous_line = record.line;
                    let values: Vec<&[u8]> = record.values().collect();
                    result.recipients += 1;
                    writer.push(record.email, &values, batch_size, &mut result)?;
                }
            }
            sources[best].advance()?;
        }
        writer.finish(&mut result)?;
        self.sources.clear();
        self.runs.remove();
        result.rejected.sort_by_key(|r| r.line);
        Ok(result)
    }
}

/// The run files of one partitioning, removed when it ends (or fails).
struct Runs {
    paths: Vec<PathBuf>,
}

impl Runs {
    fn remove(&mut self) {
        for path in self.paths.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Cuts the merged rows into batches and writes them in groups.
struct BatchWriter<'a> {
    spool: &'a Spool,
    existing: HashSet<String>,
    meta: BatchMeta,
    fields: &'a [String],
    builder: Option<BatchBuilder>,
    in_batch: usize,
    group: Vec<Vec<u8>>,
    group_bytes: usize,
}

impl BatchWriter<'_> {
    fn push(
        &mut self,
        email: &str,
        values: &[&[u8]],
        batch_size: usize,
        result: &mut Partitioned,
    ) -> Result<(), QueueError> {
        if self.in_batch == 0 {
            result.batches += 1;
            result.cuts.push(BatchCut {
                batch: self.meta.batch_id as i64,
                domains: Vec::new(),
            });
            let name = Spool::file_name(self.meta.campaign_id, self.meta.batch_id);
            self.builder = if self.existing.contains(&name) {
                None
            } else {
                Some(BatchBuilder::new(self.meta.clone(), self.fields)?)
            };
        }
        if let Some(builder) = &mut self.builder {
            builder.push(email, values)?;
        }
        if let Some(cut) = result.cuts.last_mut() {
            let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
            match cut.domains.last_mut() {
                Some((d, n)) if d.eq_ignore_ascii_case(domain) => *n += 1,
                _ => cut.domains.push((domain.to_ascii_lowercase(), 1)),
            }
        }
        self.in_batch += 1;
        if self.in_batch == batch_size {
            self.close(result)?;
        }
        Ok(())
    }

    fn close(&mut self, result: &mut Partitioned) -> Result<(), QueueError> {
        if self.in_batch == 0 {
            return Ok(());
        }
        if let Some(builder) = self.builder.take() {
            let file = builder.finish()?;
            self.group_bytes += file.len();
            self.group.push(file);
            result.written += 1;
            if self.group_bytes >= GROUP_BYTES {
                self.flush()?;
            }
        }
        self.in_batch = 0;
        self.meta.batch_id += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), QueueError> {
        self.spool
            .write_batches(self.group.iter().map(Vec::as_slice))?;
        self.group.clear();
        self.group_bytes = 0;
        Ok(())
    }

    fn finish(mut self, result: &mut Partitioned) -> Result<(), QueueError> {
        self.close(result)?;
        self.flush()
    }
}

/// Rows in memory: encoded records back to back, and where each starts.
///
/// A record is `u32 key length, key, u64 line, u32 email length, email`, then for
/// each merge value `u32 length, bytes` (little-endian). The key is
/// `lowercase(domain) NUL lowercase(local)`, so sorting by key, then line, sorts by
/// destination and puts duplicates next to each other, first one first.
#[derive(Debug, Default)]
struct Chunk {
    data: Vec<u8>,
    index: Vec<(u32, u32)>,
}

impl Chunk {
    fn push(&mut self, row: &RowRef<'_>) {
        let start = self.data.len();
        let (local, domain) = row.email.rsplit_once('@').unwrap_or((row.email, ""));
        let key_at = start + 4;
        self.data.extend_from_slice(&[0; 4]);
        push_lowercase(&mut self.data, domain);
        self.data.push(0);
        push_lowercase(&mut self.data, local);
        let key_len = (self.data.len() - key_at) as u32;
        self.data[start..start + 4].copy_from_slice(&key_len.to_le_bytes());
        self.data.extend_from_slice(&row.line.to_le_bytes());
        push_bytes(&mut self.data, row.email.as_bytes());
        for value in row.values() {
            push_bytes(&mut self.data, value);
        }
        self.index
            .push((start as u32, (self.data.len() - start) as u32));
    }

    fn record(&self, (start, len): (u32, u32)) -> &[u8] {
        &self.data[start as usize..(start + len) as usize]
    }

    fn sort(&mut self) {
        let mut index = std::mem::take(&mut self.index);
        index.sort_unstable_by(|&a, &b| compare(self.record(a), self.record(b)));
        self.index = index;
    }

    /// Sorts and writes the chunk as a run file (`u32 length, record`...), then
    /// empties it.
    fn spill(&mut self, path: &Path) -> Result<(), QueueError> {
        self.sort();
        let file = File::create(path).map_err(|e| QueueError::io("create", path, e))?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        for &entry in &self.index {
            let record = self.record(entry);
            out.write_all(&(record.len() as u32).to_le_bytes())
                .and_then(|()| out.write_all(record))
                .map_err(|e| QueueError::io("write", path, e))?;
        }
        out.flush().map_err(|e| QueueError::io("write", path, e))?;
        self.data.clear();
        self.index.clear();
        Ok(())
    }
}

fn push_lowercase(out: &mut Vec<u8>, text: &str) {
    if text.is_ascii() {
        out.extend(text.bytes().map(|b| b.to_ascii_lowercase()));
    } else {
        out.extend_from_slice(text.to_lowercase().as_bytes());
    }
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Orders two encoded records by key, then line.
fn compare(a: &[u8], b: &[u8]) -> Ordering {
    fn split(r: &[u8]) -> (&[u8], u64) {
        let key_len = r
            .get(..4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let key = r.get(4..4 + key_len).unwrap_or_default();
        let line = r
            .get(4 + key_len..12 + key_len)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        (key, line)
    }
    split(a).cmp(&split(b))
}

/// A record decoded from its bytes (see [`Chunk`]).
struct Record<'a> {
    key: &'a [u8],
    line: u64,
    email: &'a str,
    rest: &'a [u8],
    fields: usize,
}

impl<'a> Record<'a> {
    fn decode(bytes: &'a [u8], fields: usize) -> std::io::Result<Record<'a>> {
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt run record");
        let mut rest = bytes;
        let mut take = |n: usize| -> std::io::Result<&'a [u8]> {
            let (head, tail) = rest.split_at_checked(n).ok_or_else(bad)?;
            rest = tail;
            Ok(head)
        };
        let len = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let key_len = len(take(4)?);
        let key = take(key_len)?;
        let line = u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad())?);
        let email_len = len(take(4)?);
        let email = std::str::from_utf8(take(email_len)?).map_err(|_| bad())?;
        Ok(Record {
            key,
            line,
            email,
            rest,
            fields,
        })
    }

    fn values(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = self.rest;
        (0..self.fields).map_while(move |_| {
            let len = rest
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
            let value = rest.get(4..4 + len)?;
            rest = &rest[4 + len..];
            Some(value)
        })
    }
}

/// Sorted records from memory or from a run file.
enum Source {
    Memory {
        chunk: Chunk,
        next: usize,
    },
    File {
        reader: BufReader<File>,
        current: Vec<u8>,
        path: PathBuf,
        live: bool,
    },
}

impl Source {
    fn current(&self) -> Option<&[u8]> {
        match self {
            Source::Memory { chunk, next } => {
                let entry = *chunk.index.get(next.checked_sub(1)?)?;
                Some(chunk.record(entry))
            }
            Source::File { current, live, .. } => live.then_some(current.as_slice()),
        }
    }

    fn advance(&mut self) -> Result<(), QueueError> {
        match self {
            Source::Memory { next, chunk } => {
                if *next <= chunk.index.len() {
                    *next += 1;
                }
            }
            Source::File {
                reader,
                current,
                path,
                live,
            } => {
                let mut len = [0u8; 4];
                match reader.read_exact(&mut len) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        *live = false;
                        return Ok(());
                    }
                    Err(e) => return Err(QueueError::io("read", path, e)),
                }
                current.resize(u32::from_le_bytes(len) as usize, 0);
                reader
                    .read_exact(current)
                    .map_err(|e| QueueError::io("read", path, e))?;
                *live = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use volley_queue::BatchView;

    fn csv(n: usize) -> String {
        let mut text = String::from("email,n\n");
        for i in 0..n {
            let domain = ["b.test", "A.test", "c.test"][i % 3];
            text.push_str(&format!("u{i:03}@{domain},{i}\n"));
        }
        text
    }

    fn list(n: usize) -> RecipientReader<std::io::Cursor<Vec<u8>>> {
        reader(csv(n))
    }

    fn reader(text: String) -> RecipientReader<std::io::Cursor<Vec<u8>>> {
        RecipientReader::new(std::io::Cursor::new(text.into_bytes()), Path::new("l.csv")).unwrap()
    }

    fn meta(campaign_id: u64) -> BatchMeta {
        BatchMeta {
            batch_id: 0,
            campaign_id,
            content_hash: [1; 32],
            created_at: 0,
        }
    }

    fn all_recipients(spool: &Spool) -> Vec<String> {
        let mut out = Vec::new();
        for path in spool.active_files().unwrap() {
            let bytes = std::fs::read(path).unwrap();
            let view = BatchView::parse(&bytes).unwrap();
            out.extend(view.recipients().map(|r| r.address()));
        }
        out
    }

    #[test]
    fn batches_are_sorted_by_destination_and_cut_at_batch_size() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let p = partition(&spool, &mut list(25), 7, [1; 32], 0, 10, false).unwrap();
        assert_eq!((p.batches, p.written, p.recipients), (3, 3, 25));
        let got = all_recipients(&spool);
        assert_eq!(got.len(), 25);
        assert!(got[..8].iter().all(|a| a.ends_with("@A.test")), "{got:?}");
        assert!(got[8..17].iter().all(|a| a.ends_with("@b.test")), "{got:?}");
        assert!(got[17..].iter().all(|a| a.ends_with("@c.test")), "{got:?}");
    }

    #[test]
    fn resuming_writes_only_the_missing_batches() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        partition(&spool, &mut list(25), 7, [1; 32], 0, 10, false).unwrap();
        // Lose the middle batch, as if the partitioning had died before writing it.
        let files = spool.active_files().unwrap();
        std::fs::remove_file(&files[1]).unwrap();
        let p = partition(&spool, &mut list(25), 7, [1; 32], 0, 10, true).unwrap();
        assert_eq!((p.batches, p.written), (3, 1));
        let mut got = all_recipients(&spool);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 25, "none lost, none doubled");
    }

    #[test]
    fn spilled_runs_give_the_same_batches_as_one_chunk() {
        let mut text = csv(700);
        text.push_str("U003@b.TEST,dup\nnot-an-address,x\n");
        let cut = |chunk_bytes: usize| {
            let dir = tempfile::tempdir().unwrap();
            let spool = Spool::open(dir.path()).unwrap();
            let p = sort_in_chunks(&spool, &mut reader(text.clone()), 9, |_| None, chunk_bytes)
                .unwrap()
                .write(&spool, meta(9), 64, false)
                .unwrap();
            let files: Vec<Vec<u8>> = spool
                .active_files()
                .unwrap()
                .iter()
                .map(|f| std::fs::read(f).unwrap())
                .collect();
            let leftovers = std::fs::read_dir(spool.scratch_dir()).unwrap().count();
            (p, files, leftovers)
        };
        let (one, one_files, _) = cut(CHUNK_BYTES);
        let (many, many_files, leftovers) = cut(1000);
        assert_eq!(one, many);
        assert_eq!(one_files, many_files, "byte-identical batches");
        assert_eq!(leftovers, 0, "run files removed");
        assert_eq!((one.recipients, one.batches), (700, 11));
        let rejected: Vec<(u64, &str)> = one
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [
                (702, "duplicate of line 5"),
                (703, "bad address: no @ in the address")
            ]
        );
    }

    #[test]
    fn suppressed_rows_are_dropped_and_returned_with_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let sorted = sort(&spool, &mut list(6), 3, |email| {
            (email.starts_with("u001") || email.starts_with("u004")).then(|| "manual".into())
        })
        .unwrap();
        let got: Vec<(u64, &str, &str)> = sorted
            .suppressed
            .iter()
            .map(|r| (r.line, r.email.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (3, "u001@A.test", "suppressed: manual"),
                (6, "u004@A.test", "suppressed: manual")
            ]
        );
        let p = sorted.write(&spool, meta(3), 10, false).unwrap();
        assert_eq!(p.recipients, 4);
        assert_eq!(all_recipients(&spool).len(), 4);
    }

    #[test]
    fn order_is_domain_then_local_part_ignoring_case() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let text = "email,n\nzed@B.test,1\nAmy@b.test,2\nbob@a.test,3\namy@a.test,4\n".to_owned();
        partition(&spool, &mut reader(text), 1, [1; 32], 0, 10, false).unwrap();
        assert_eq!(
            all_recipients(&spool),
            ["amy@a.test", "bob@a.test", "Amy@b.test", "zed@B.test"]
        );
    }
}
