//! Batch file formats: v1 (a campaign's batch, written once) and v2 (a relay
//! batch: received messages appended in group commits), the header, the layout
//! rules and a validated view.
//!
//! Pure functions over byte slices: no I/O, no `unsafe`. Every offset and length is
//! checked before use, so any byte string gives either a [`BatchView`] or a
//! [`FormatError`] that names the region at fault. FORMAT.md documents the bytes.

use std::borrow::Cow;
use std::fmt;

use xxhash_rust::xxh3::Xxh3;

use crate::slot::{Slot, SlotError};
use crate::varint;

/// First eight bytes of every batch file.
pub const MAGIC: [u8; 8] = *b"VOLLEYQB";
/// The format version of campaign batches (written once, whole).
pub const VERSION: u16 = 1;
/// The format version of relay batches: received messages with their envelope
/// and content, appended in group commits, each record's checksum masked with
/// the batch's id (FORMAT.md, "Version 3"), so that a reused file's old records
/// never pass for the new batch's.
pub const VERSION_RELAY: u16 = 3;
/// The first relay batch version (FORMAT.md, "Version 2"): the same with
/// unmasked record checksums. Read, no longer written.
pub const VERSION_RELAY_UNMASKED: u16 = 2;
/// Record kinds of a relay batch.
pub const RECORD_MESSAGE: u8 = 1;
/// A commit record: every message record before it was acknowledged (`250`).
pub const RECORD_COMMIT: u8 = 2;
/// The seal record: the file is complete; nothing follows it.
pub const RECORD_SEAL: u8 = 3;
/// The first record of a relay batch: its merge field names.
pub const RECORD_FIELDS: u8 = 4;
/// Bytes a record takes besides its body: length (4), kind (1), checksum (8).
pub const RECORD_OVERHEAD: usize = 13;
/// Where a relay batch keeps the boot it was written in (header bytes 48..64).
pub const BOOT_ID_AT: usize = 48;
/// Size of the fixed header; the field-name section starts right after it.
pub const HEADER_LEN: usize = 128;
/// Size of one state slot.
pub const SLOT_LEN: usize = 8;
/// Where the checksum sits in the header (the last 8 header bytes).
const CHECKSUM_AT: usize = 120;
/// Header bytes 100..120 are reserved and must be zero.
const RESERVED: std::ops::Range<usize> = 100..120;

/// The parts of a batch file, in file order; errors name the one at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The fixed 128-byte header.
    Header,
    /// Merge field names.
    FieldNames,
    /// Destination domains table.
    Domains,
    /// Recipient records (local part, domain index, merge values).
    Records,
    /// Zero bytes that align the slots to 8.
    Padding,
    /// The mutable 8-byte state slots.
    Slots,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Region::Header => "header",
            Region::FieldNames => "field names",
            Region::Domains => "domains",
            Region::Records => "recipient records",
            Region::Padding => "padding",
            Region::Slots => "state slots",
        })
    }
}

/// What is wrong with a batch file. The caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The file ends before the region that needs the missing bytes.
    #[error("truncated in the {region}: file is {len} bytes, needs {needed}")]
    Truncated {
        /// The region the file ends in.
        region: Region,
        /// Actual file length.
        len: u64,
        /// Length the header declares (or the header size).
        needed: u64,
    },
    /// Bytes after the last slot.
    #[error("{extra} unexpected bytes after the state slots (file is {len} bytes)")]
    Trailing {
        /// Number of extra bytes.
        extra: u64,
        /// Actual file length.
        len: u64,
    },
    /// The file does not start with [`MAGIC`].
    #[error("not a volley batch file: bad magic {0:02x?}")]
    BadMagic([u8; 8]),
    /// A version this build cannot read.
    #[error("batch format version {0} is not supported (this build reads versions {VERSION}, {VERSION_RELAY_UNMASKED} and {VERSION_RELAY})")]
    Version(u16),
    /// The header's offsets, counts or reserved bytes do not describe a valid file.
    #[error("bad header: {0}")]
    Layout(String),
    /// The immutable part does not match its checksum.
    #[error("checksum mismatch: header says {stored:016x}, contents hash to {computed:016x}")]
    Checksum {
        /// Checksum stored in the header.
        stored: u64,
        /// Checksum of the bytes as read.
        computed: u64,
    },
    /// A section's contents do not parse.
    #[error("{region} malformed at byte {offset}: {what}")]
    Malformed {
        /// The region at fault.
        region: Region,
        /// File offset where parsing failed.
        offset: usize,
        /// What was expected there.
        what: &'static str,
    },
    /// A state slot fails its check byte or holds an unknown state.
    #[error("state slot {index} is corrupt: {fault}")]
    Slot {
        /// Recipient index of the slot.
        index: usize,
        /// The decoding fault (in the message, so not also a `source()`).
        fault: SlotError,
    },
}

/// The decoded fixed header of a batch file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The format version: [`VERSION`] or [`VERSION_RELAY`].
    pub version: u16,
    /// Batch identifier, unique within its campaign.
    pub batch_id: u64,
    /// Campaign the batch belongs to.
    pub campaign_id: u64,
    /// Unix seconds when the file was written.
    pub created_at: u64,
    /// Hash of the stored message template the batch refers to.
    pub content_hash: [u8; 32],
    /// Number of merge fields per recipient.
    pub field_count: u16,
    /// Number of recipients (and slots).
    pub recipient_count: u32,
    /// Number of entries in the domains table.
    pub domain_count: u32,
    /// File offset of the field-name section (always [`HEADER_LEN`]).
    pub fields_off: u32,
    /// File offset of the domains table.
    pub domains_off: u32,
    /// File offset of the recipient records.
    pub records_off: u32,
    /// File offset of the first slot (a multiple of 8).
    pub slots_off: u32,
    /// Total file length.
    pub file_len: u32,
    /// xxh3-64 of the immutable part (see [`checksum`]).
    pub checksum: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Header {
    /// Decodes and checks the header of a file of `file_len` bytes whose first bytes
    /// are `start` (at least the header). Checks magic, version, reserved bytes, the
    /// order and alignment of the section offsets and the file length; does not
    /// check the checksum or section contents.
    pub fn read(start: &[u8], file_len: usize) -> Result<Header, FormatError> {
        let len = file_len as u64;
        if start.len() < HEADER_LEN || file_len < HEADER_LEN {
            return Err(FormatError::Truncated {
                region: Region::Header,
                len,
                needed: HEADER_LEN as u64,
            });
        }
        let b = &start[..HEADER_LEN];
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[..8]);
        if magic != MAGIC {
            return Err(FormatError::BadMagic(magic));
        }
        let version = u16_at(b, 8);
        if version == VERSION_RELAY || version == VERSION_RELAY_UNMASKED {
            return Header::read_relay(b, version, file_len);
        }
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        let mut content_hash = [0u8; 32];
        content_hash.copy_from_slice(&b[48..80]);
        let h = Header {
            version,
            field_count: u16_at(b, 10),
            recipient_count: u32_at(b, 12),
            domain_count: u32_at(b, 16),
            batch_id: u64_at(b, 24),
            campaign_id: u64_at(b, 32),
            created_at: u64_at(b, 40),
            content_hash,
            fields_off: u32_at(b, 80),
            domains_off: u32_at(b, 84),
            records_off: u32_at(b, 88),
            slots_off: u32_at(b, 92),
            file_len: u32_at(b, 96),
            checksum: u64_at(b, CHECKSUM_AT),
        };
        if u32_at(b, 20) != 0 || b[RESERVED].iter().any(|&x| x != 0) {
            return Err(FormatError::Layout(
                "reserved header bytes are not zero".into(),
            ));
        }
        if h.fields_off as usize != HEADER_LEN {
            return Err(FormatError::Layout(format!(
                "field names at {}, expected {HEADER_LEN}",
                h.fields_off
            )));
        }
        if !(h.fields_off <= h.domains_off
            && h.domains_off <= h.records_off
            && h.records_off <= h.slots_off)
        {
            return Err(FormatError::Layout(format!(
                "section offsets out of order: fields {}, domains {}, records {}, slots {}",
                h.fields_off, h.domains_off, h.records_off, h.slots_off
            )));
        }
        if !(h.slots_off as usize).is_multiple_of(SLOT_LEN) {
            return Err(FormatError::Layout(format!(
                "slots at {}, not a multiple of 8",
                h.slots_off
            )));
        }
        let expected_len = u64::from(h.slots_off) + u64::from(h.recipient_count) * SLOT_LEN as u64;
        if expected_len != u64::from(h.file_len) {
            return Err(FormatError::Layout(format!(
                "file length {} does not match {} slots at {}",
                h.file_len, h.recipient_count, h.slots_off
            )));
        }
        let needed = u64::from(h.file_len);
        if len < needed {
            let region = if len < u64::from(h.domains_off) {
                Region::FieldNames
            } else if len < u64::from(h.records_off) {
                Region::Domains
            } else if len < u64::from(h.slots_off) {
                Region::Records
            } else {
                Region::Slots
            };
            return Err(FormatError::Truncated {
                region,
                len,
                needed,
            });
        }
        if len > needed {
            return Err(FormatError::Trailing {
                extra: len - needed,
                len,
            });
        }
        Ok(h)
    }

    /// The header of a relay batch ([`VERSION_RELAY`]): `recipient_count` and
    /// `domain_count` are 0 until [`BatchIndex::build`] has read the records.
    fn read_relay(b: &[u8], version: u16, file_len: usize) -> Result<Header, FormatError> {
        let stored = u64_at(b, CHECKSUM_AT);
        let computed = xxhash_rust::xxh3::xxh3_64(&b[..CHECKSUM_AT]);
        if stored != computed {
            return Err(FormatError::Checksum { stored, computed });
        }
        let capacity = u32_at(b, 12);
        if u32_at(b, 16) != 0
            || u32_at(b, 20) != 0
            || b[64..80].iter().any(|&x| x != 0)
            || b[84..CHECKSUM_AT].iter().any(|&x| x != 0)
        {
            return Err(FormatError::Layout(
                "reserved header bytes are not zero".into(),
            ));
        }
        let fields_off = u32_at(b, 80);
        if u64::from(fields_off) != HEADER_LEN as u64 + u64::from(capacity) * SLOT_LEN as u64 {
            return Err(FormatError::Layout(format!(
                "records at {fields_off}, expected after {capacity} slots"
            )));
        }
        let len = file_len as u64;
        if len < u64::from(fields_off) {
            return Err(FormatError::Truncated {
                region: Region::Slots,
                len,
                needed: u64::from(fields_off),
            });
        }
        let file_len = u32::try_from(file_len).map_err(|_| {
            FormatError::Layout(format!(
                "file is {len} bytes, more than a batch file can be"
            ))
        })?;
        Ok(Header {
            version,
            batch_id: u64_at(b, 24),
            campaign_id: u64_at(b, 32),
            created_at: u64_at(b, 40),
            content_hash: [0; 32],
            field_count: u16_at(b, 10),
            recipient_count: 0,
            domain_count: 0,
            fields_off,
            domains_off: fields_off,
            records_off: fields_off,
            slots_off: HEADER_LEN as u32,
            file_len,
            checksum: stored,
        })
    }

    /// Slots a relay batch has room for (for a campaign batch, its recipients).
    pub fn capacity(&self) -> u32 {
        if self.is_relay() {
            (self.fields_off - self.slots_off) / SLOT_LEN as u32
        } else {
            self.recipient_count
        }
    }

    /// Whether this is a relay batch ([`VERSION_RELAY`] or
    /// [`VERSION_RELAY_UNMASKED`]).
    pub fn is_relay(&self) -> bool {
        self.version == VERSION_RELAY || self.version == VERSION_RELAY_UNMASKED
    }

    /// What a relay batch's record checksums are masked with (XOR): see
    /// [`record_mask`]; 0 for [`VERSION_RELAY_UNMASKED`].
    pub fn record_mask(&self) -> u64 {
        if self.version == VERSION_RELAY {
            record_mask(self.campaign_id)
        } else {
            0
        }
    }

    /// The byte range of the file that never changes once written, the one
    /// [`BatchIndex::build`] reads: a campaign batch's first `slots_off` bytes, a
    /// relay batch's records (the field names onwards).
    pub fn immutable_range(&self) -> std::ops::Range<usize> {
        if self.is_relay() {
            self.fields_off as usize..self.file_len as usize
        } else {
            0..self.slots_off as usize
        }
    }

    /// The byte range of the state slots (a relay batch's, all it has room for).
    pub fn slots_range(&self) -> std::ops::Range<usize> {
        if self.is_relay() {
            self.slots_off as usize..self.fields_off as usize
        } else {
            self.slots_off as usize..self.file_len as usize
        }
    }

    /// Encodes the header into the first [`HEADER_LEN`] bytes of `out` (checksum as
    /// stored in `self`; call [`seal`] afterwards to compute it).
    pub(crate) fn write(&self, out: &mut [u8]) {
        let b = &mut out[..HEADER_LEN];
        b.fill(0);
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&self.field_count.to_le_bytes());
        b[12..16].copy_from_slice(&self.recipient_count.to_le_bytes());
        b[16..20].copy_from_slice(&self.domain_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.batch_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.campaign_id.to_le_bytes());
        b[40..48].copy_from_slice(&self.created_at.to_le_bytes());
        b[48..80].copy_from_slice(&self.content_hash);
        b[80..84].copy_from_slice(&self.fields_off.to_le_bytes());
        b[84..88].copy_from_slice(&self.domains_off.to_le_bytes());
        b[88..92].copy_from_slice(&self.records_off.to_le_bytes());
        b[92..96].copy_from_slice(&self.slots_off.to_le_bytes());
        b[96..100].copy_from_slice(&self.file_len.to_le_bytes());
        b[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&self.checksum.to_le_bytes());
    }
}

/// xxh3-64 of a file's immutable part: header bytes `0..120` followed by bytes
/// `128..slots_off`. `immutable` is the file's first `slots_off` bytes.
pub fn checksum(immutable: &[u8]) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(&immutable[..CHECKSUM_AT.min(immutable.len())]);
    if immutable.len() > HEADER_LEN {
        hasher.update(&immutable[HEADER_LEN..]);
    }
    hasher.digest()
}

/// Recomputes and stores the checksum of a complete file whose header offsets are
/// already written. Does nothing if the header's `slots_off` lies outside `file`.
pub fn seal(file: &mut [u8]) {
    if file.len() < HEADER_LEN {
        return;
    }
    let slots_off = u32_at(file, 92) as usize;
    if slots_off < HEADER_LEN || slots_off > file.len() {
        return;
    }
    let sum = checksum(&file[..slots_off]);
    file[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
}

/// The checked layout of a batch file: offsets of every name, domain and record.
/// Owned (no borrow of the bytes) so a mapping can keep it next to the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchIndex {
    header: Header,
    /// (start, end) of each field name.
    field_names: Vec<(u32, u32)>,
    /// (start, end) of each domain.
    domains: Vec<(u32, u32)>,
    /// File offset of each recipient's record (a relay batch's: offset in its
    /// records region of the recipient's domain, local part and values).
    records: Vec<u32>,
    /// A relay batch's: each recipient's message (index into `messages`) and
    /// domain (index into `domains`). Empty for a campaign batch.
    relay: Vec<(u32, u32)>,
    /// A relay batch's messages.
    messages: Vec<MessageSpan>,
}

/// Where one message of a relay batch lies in its records region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MessageSpan {
    from: (u32, u32),
    content: (u32, u32),
}

/// A received message of a relay batch, as stored: relayed byte for byte.
#[derive(Debug, Clone, Copy)]
pub struct RelayedMessage<'a> {
    /// Its place among the batch's messages (the `.N` of its queue id).
    pub number: u32,
    /// The envelope sender, without angle brackets; empty for `<>`.
    pub mail_from: &'a [u8],
    /// The whole message as it will be sent (CRLF line ends).
    pub content: &'a [u8],
}

/// One record of a relay batch's records region: its kind and where its body
/// lies (offsets in the region), and where the next record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord {
    /// [`RECORD_MESSAGE`], [`RECORD_COMMIT`] or [`RECORD_SEAL`].
    pub kind: u8,
    /// The body's start.
    pub body: usize,
    /// The body's end.
    pub body_end: usize,
    /// The end of the record (its checksum included).
    pub end: usize,
}

/// The mask of the record checksums of the relay batch `campaign_id`
/// ([`VERSION_RELAY`]): xxh3-64 of the id's 8 little-endian bytes. A file is
/// reused for later batches without being cleared: bytes past the new batch's
/// records may be an older batch's records, complete and once valid, which the
/// different mask makes fail their checksum (the chance that one passes is that
/// of a random 64-bit match), so recovery stops where the new batch ends.
pub fn record_mask(campaign_id: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&campaign_id.to_le_bytes())
}

/// The next record of a relay batch at `pos` of its records region `buf`, its
/// checksum masked with `mask` ([`Header::record_mask`]): `Ok(None)` at the end
/// of `buf`, an error (what is wrong) for a record that is cut short or fails
/// its checksum.
pub fn next_record(buf: &[u8], pos: usize, mask: u64) -> Result<Option<RawRecord>, &'static str> {
    if pos >= buf.len() {
        return Ok(None);
    }
    if buf.len() - pos < RECORD_OVERHEAD {
        return Err("record cut short");
    }
    let len = u32_at(buf, pos) as usize;
    let body = pos + 5;
    let body_end = body.checked_add(len).ok_or("record length overflows")?;
    let end = body_end.checked_add(8).ok_or("record length overflows")?;
    if end > buf.len() {
        return Err("record cut short");
    }
    let stored = u64_at(buf, body_end);
    if xxhash_rust::xxh3::xxh3_64(&buf[pos + 4..body_end]) ^ mask != stored {
        return Err("record fails its checksum");
    }
    Ok(Some(RawRecord {
        kind: buf[pos + 4],
        body,
        body_end,
        end,
    }))
}

/// Appends a record of `kind` with `body` to `out` (length, kind, body, checksum
/// masked with `mask`).
pub fn put_record(out: &mut Vec<u8>, kind: u8, body: &[u8], mask: u64) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let from = out.len();
    out.push(kind);
    out.extend_from_slice(body);
    let sum = xxhash_rust::xxh3::xxh3_64(&out[from..]) ^ mask;
    out.extend_from_slice(&sum.to_le_bytes());
}

/// The body of a relay batch's message record: recipient count, envelope
/// sender, each recipient (domain, local part, one value per field), content.
pub fn put_message_body<V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    mail_from: &str,
    recipients: &[(&str, &str, &[V])],
    content: &[u8],
) {
    varint::put(out, recipients.len() as u32);
    put_bytes(out, mail_from.as_bytes());
    for (domain, local, values) in recipients {
        put_bytes(out, domain.as_bytes());
        put_bytes(out, local.as_bytes());
        for v in values.iter() {
            put_bytes(out, v.as_ref());
        }
    }
    put_bytes(out, content);
}

/// Appends a varint-prefixed string.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    varint::put_bytes(out, bytes);
}

/// Reads a varint at `*pos` of `buf` (for readers of record bodies).
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u32> {
    varint::get(buf, pos)
}

/// A validated batch file: every offset and length has been checked, so reading
/// recipients cannot fail. Borrows the bytes from a read buffer or a mapping.
#[derive(Debug, Clone)]
pub struct BatchView<'a> {
    index: Cow<'a, BatchIndex>,
    /// The file's first `slots_off` bytes.
    immutable: &'a [u8],
    /// The slot bytes when the view was made from a whole read-only file; empty for
    /// views over a live mapping (whose slots are read atomically instead).
    slots: &'a [u8],
}

/// One recipient as stored: address parts and merge values, borrowed from the file.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// Local part of the address (before the last `@`).
    pub local: &'a [u8],
    /// Domain of the address, as written.
    pub domain: &'a [u8],
    /// Index of `domain` in the batch's domains table.
    pub domain_index: u32,
    values: &'a [u8],
    field_count: u16,
}

impl<'a> Recipient<'a> {
    /// The merge values in field-name order, exactly as written.
    pub fn values(&self) -> Values<'a> {
        Values {
            buf: self.values,
            pos: 0,
            left: self.field_count,
        }
    }

    /// Writes `local@domain` into `out` (cleared first).
    pub fn address_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.local);
        out.push(b'@');
        out.extend_from_slice(self.domain);
    }

    /// The address as a string (lossy for bytes that are not UTF-8).
    pub fn address(&self) -> String {
        let mut out = Vec::with_capacity(self.local.len() + 1 + self.domain.len());
        self.address_into(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Iterator over a recipient's merge values.
#[derive(Debug, Clone)]
pub struct Values<'a> {
    buf: &'a [u8],
    pos: usize,
    left: u16,
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated when the index was built; `None` here cannot happen.
        varint::get_bytes(self.buf, &mut self.pos)
    }
}

fn span(start: usize, end: usize) -> (u32, u32) {
    // Offsets are below `slots_off`, a u32, so these never truncate.
    (start as u32, end as u32)
}

impl BatchIndex {
    /// Validates the immutable part (`immutable` = the file's first `slots_off`
    /// bytes) of a file whose header was already read, and records its layout.
    pub fn build(header: Header, immutable: &[u8]) -> Result<BatchIndex, FormatError> {
        if header.is_relay() {
            return BatchIndex::build_relay(header, immutable);
        }
        if immutable.len() != header.slots_off as usize {
            return Err(FormatError::Layout(format!(
                "immutable part is {} bytes, header says {}",
                immutable.len(),
                header.slots_off
            )));
        }
        let computed = checksum(immutable);
        if computed != header.checksum {
            return Err(FormatError::Checksum {
                stored: header.checksum,
                computed,
            });
        }
        let bad = |region, offset, what| FormatError::Malformed {
            region,
            offset,
            what,
        };

        let fields_end = header.domains_off as usize;
        let mut pos = header.fields_off as usize;
        let mut field_names = Vec::with_capacity(usize::from(header.field_count));
        for _ in 0..header.field_count {
            let at = pos;
            let name = varint::get_bytes(&immutable[..fields_end], &mut pos).ok_or(bad(
                Region::FieldNames,
                at,
                "field name runs past its section",
            ))?;
            if std::str::from_utf8(name).is_err() {
                return Err(bad(Region::FieldNames, at, "field name is not UTF-8"));
            }
            field_names.push(span(pos - name.len(), pos));
        }
        if pos != fields_end {
            return Err(bad(
                Region::FieldNames,
                pos,
                "bytes left after the last field name",
            ));
        }

        let domains_end = header.records_off as usize;
        // Each domain takes at least 2 bytes: bound the allocation by the section size.
        if header.domain_count as usize > (domains_end - pos) / 2 {
            return Err(bad(
                Region::Domains,
                pos,
                "more domains than the section can hold",
            ));
        }
        let mut domains = Vec::with_capacity(header.domain_count as usize);
        for _ in 0..header.domain_count {
            let at = pos;
            let domain = varint::get_bytes(&immutable[..domains_end], &mut pos).ok_or(bad(
                Region::Domains,
                at,
                "domain runs past its section",
            ))?;
            if domain.is_empty() {
                return Err(bad(Region::Domains, at, "empty domain"));
            }
            domains.push(span(pos - domain.len(), pos));
        }
        if pos != domains_end {
            return Err(bad(
                Region::Domains,
                pos,
                "bytes left after the last domain",
            ));
        }

        let slots_off = header.slots_off as usize;
        // Each record takes at least 3 + field_count bytes: bound the allocation.
        let min_record = 3 + usize::from(header.field_count);
        if header.recipient_count as usize > (slots_off - pos) / min_record {
            return Err(bad(
                Region::Records,
                pos,
                "more recipients than the section can hold",
            ));
        }
        let mut records = Vec::with_capacity(header.recipient_count as usize);
        for _ in 0..header.recipient_count {
            let at = pos;
            records.push(at as u32);
            let index = varint::get(immutable, &mut pos).ok_or(bad(
                Region::Records,
                at,
                "domain index runs past the records",
            ))?;
            if index >= header.domain_count {
                return Err(bad(Region::Records, at, "domain index out of range"));
            }
            let local = varint::get_bytes(immutable, &mut pos).ok_or(bad(
                Region::Records,
                at,
                "local part runs past the records",
            ))?;
            if local.is_empty() {
                return Err(bad(Region::Records, at, "empty local part"));
            }
            for _ in 0..header.field_count {
                varint::get_bytes(immutable, &mut pos).ok_or(bad(
                    Region::Records,
                    at,
                    "merge value runs past the records",
                ))?;
            }
        }
        if pos.next_multiple_of(SLOT_LEN) != slots_off {
            return Err(bad(
                Region::Padding,
                pos,
                "records do not end right before the slots",
            ));
        }
        if immutable[pos..slots_off].iter().any(|&b| b != 0) {
            return Err(bad(Region::Padding, pos, "padding is not zero"));
        }
        Ok(BatchIndex {
            header,
            field_names,
            domains,
            records,
            relay: Vec::new(),
            messages: Vec::new(),
        })
    }

    /// [`BatchIndex::build`] of a relay batch: `records` is its records region
    /// (field names, then records), which must end with a seal that counts every
    /// message and recipient before it, all committed.
    fn build_relay(mut header: Header, region: &[u8]) -> Result<BatchIndex, FormatError> {
        let base = header.fields_off as usize;
        if region.len() != header.file_len as usize - base {
            return Err(FormatError::Layout(format!(
                "records region is {} bytes, header says {}",
                region.len(),
                header.file_len as usize - base
            )));
        }
        let bad = |region, offset: usize, what| FormatError::Malformed {
            region,
            offset: base + offset,
            what,
        };
        let mask = header.record_mask();
        let fields = match next_record(region, 0, mask) {
            Ok(Some(r)) if r.kind == RECORD_FIELDS => r,
            Ok(_) => return Err(bad(Region::FieldNames, 0, "no field names record")),
            Err(what) => return Err(bad(Region::FieldNames, 0, what)),
        };
        let mut pos = fields.body;
        let mut field_names = Vec::with_capacity(usize::from(header.field_count));
        for _ in 0..header.field_count {
            let at = pos;
            let name = varint::get_bytes(&region[..fields.body_end], &mut pos).ok_or(bad(
                Region::FieldNames,
                at,
                "field name runs past its record",
            ))?;
            if std::str::from_utf8(name).is_err() {
                return Err(bad(Region::FieldNames, at, "field name is not UTF-8"));
            }
            field_names.push(span(pos - name.len(), pos));
        }
        if pos != fields.body_end {
            return Err(bad(
                Region::FieldNames,
                pos,
                "bytes left after the last field name",
            ));
        }
        pos = fields.end;
        let capacity = header.capacity() as usize;
        let mut domains: Vec<(u32, u32)> = Vec::new();
        let mut records = Vec::new();
        let mut relay = Vec::new();
        let mut messages = Vec::new();
        let (mut committed, mut sealed) = (0usize, false);
        loop {
            let at = pos;
            let record = match next_record(region, pos, mask) {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(what) => return Err(bad(Region::Records, at, what)),
            };
            let body = &region[..record.body_end];
            let mut p = record.body;
            match record.kind {
                RECORD_MESSAGE => {
                    let count = varint::get(body, &mut p).ok_or(bad(
                        Region::Records,
                        at,
                        "recipient count",
                    ))? as usize;
                    if count == 0 || count > capacity - records.len() {
                        return Err(bad(Region::Records, at, "recipient count out of range"));
                    }
                    let from = varint::get_bytes(body, &mut p).ok_or(bad(
                        Region::Records,
                        at,
                        "sender runs past the record",
                    ))?;
                    let from = span(p - from.len(), p);
                    for _ in 0..count {
                        let start = p;
                        let domain = varint::get_bytes(body, &mut p).ok_or(bad(
                            Region::Records,
                            at,
                            "domain runs past the record",
                        ))?;
                        let d = span(p - domain.len(), p);
                        let local = varint::get_bytes(body, &mut p).ok_or(bad(
                            Region::Records,
                            at,
                            "local part runs past the record",
                        ))?;
                        if domain.is_empty() || local.is_empty() {
                            return Err(bad(Region::Records, at, "empty domain or local part"));
                        }
                        let index = match domains
                            .iter()
                            .rposition(|&(s, e)| &region[s as usize..e as usize] == domain)
                        {
                            Some(i) => i,
                            None => {
                                domains.push(d);
                                domains.len() - 1
                            }
                        };
                        for _ in 0..header.field_count {
                            varint::get_bytes(body, &mut p).ok_or(bad(
                                Region::Records,
                                at,
                                "value runs past the record",
                            ))?;
                        }
                        records.push(start as u32);
                        relay.push((messages.len() as u32, index as u32));
                    }
                    let content = varint::get_bytes(body, &mut p).ok_or(bad(
                        Region::Records,
                        at,
                        "content runs past the record",
                    ))?;
                    if p != record.body_end {
                        return Err(bad(Region::Records, at, "bytes left after the content"));
                    }
                    messages.push(MessageSpan {
                        from,
                        content: span(p - content.len(), p),
                    });
                }
                RECORD_COMMIT => {
                    let n =
                        varint::get(body, &mut p).ok_or(bad(Region::Records, at, "commit count"))?
                            as usize;
                    if n != messages.len() || p != record.body_end {
                        return Err(bad(
                            Region::Records,
                            at,
                            "commit does not count the messages before it",
                        ));
                    }
                    committed = n;
                }
                RECORD_SEAL => {
                    let m = varint::get(body, &mut p).map(|m| m as usize);
                    let r = varint::get(body, &mut p).map(|r| r as usize);
                    if m != Some(messages.len()) || r != Some(records.len()) || p != record.body_end
                    {
                        return Err(bad(
                            Region::Records,
                            at,
                            "seal does not count the messages and recipients",
                        ));
                    }
                    // What follows is an older batch's (a reused file is not
                    // cut at the seal): not this batch's.
                    sealed = true;
                    break;
                }
                _ => return Err(bad(Region::Records, at, "unknown record kind")),
            }
            pos = record.end;
        }
        if !sealed {
            return Err(FormatError::Truncated {
                region: Region::Records,
                len: u64::from(header.file_len),
                needed: u64::from(header.file_len) + RECORD_OVERHEAD as u64,
            });
        }
        if committed != messages.len() {
            return Err(bad(Region::Records, pos, "messages after the last commit"));
        }
        header.recipient_count = records.len() as u32;
        header.domain_count = domains.len() as u32;
        Ok(BatchIndex {
            header,
            field_names,
            domains,
            records,
            relay,
            messages,
        })
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// A view of `immutable` (the file's first `slots_off` bytes, the ones this index
    /// was built from) without slot bytes.
    pub fn view<'a>(&'a self, immutable: &'a [u8]) -> BatchView<'a> {
        BatchView {
            index: Cow::Borrowed(self),
            immutable,
            slots: &[],
        }
    }
}

impl<'a> BatchView<'a> {
    /// Validates a whole file read into memory, slots included.
    pub fn parse(file: &'a [u8]) -> Result<BatchView<'a>, FormatError> {
        let header = Header::read(file, file.len())?;
        let (immutable, slots) = (header.immutable_range(), header.slots_range());
        let index = BatchIndex::build(header, &file[immutable.clone()])?;
        let view = BatchView {
            index: Cow::Owned(index),
            immutable: &file[immutable],
            slots: &file[slots],
        };
        for index in 0..view.len() {
            view.slot(index)?;
        }
        Ok(view)
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.index.header
    }

    fn str_at(&self, (start, end): (u32, u32)) -> &'a str {
        // UTF-8 was checked when the index was built.
        std::str::from_utf8(&self.immutable[start as usize..end as usize]).unwrap_or_default()
    }

    /// The merge field names, in the order values are stored.
    pub fn field_names(&self) -> Vec<&'a str> {
        self.field_names_iter().collect()
    }

    /// The merge field names, in order, without collecting them (the renderer
    /// reads them once per message).
    pub fn field_names_iter(&self) -> impl ExactSizeIterator<Item = &'a str> + '_ {
        self.index.field_names.iter().map(|&s| self.str_at(s))
    }

    /// The destination domains table.
    pub fn domains(&self) -> Vec<&'a [u8]> {
        self.index
            .domains
            .iter()
            .map(|&(s, e)| &self.immutable[s as usize..e as usize])
            .collect()
    }

    /// Number of recipients.
    pub fn len(&self) -> usize {
        self.index.records.len()
    }

    /// Whether the batch has no recipients.
    pub fn is_empty(&self) -> bool {
        self.index.records.is_empty()
    }

    /// Recipient `index`, or `None` past the end.
    pub fn recipient(&self, index: usize) -> Option<Recipient<'a>> {
        let mut pos = *self.index.records.get(index)? as usize;
        let buf = self.immutable;
        if let Some(&(_, domain_index)) = self.index.relay.get(index) {
            let domain = varint::get_bytes(buf, &mut pos)?;
            let local = varint::get_bytes(buf, &mut pos)?;
            return Some(Recipient {
                local,
                domain,
                domain_index,
                values: &buf[pos..],
                field_count: self.index.header.field_count,
            });
        }
        let domain_index = varint::get(buf, &mut pos)?;
        let local = varint::get_bytes(buf, &mut pos)?;
        let &(ds, de) = self.index.domains.get(domain_index as usize)?;
        Some(Recipient {
            local,
            domain: &buf[ds as usize..de as usize],
            domain_index,
            values: &buf[pos..],
            field_count: self.index.header.field_count,
        })
    }

    /// The received message recipient `index` of a relay batch gets; `None`
    /// for a campaign batch (its recipients' messages are merged from its
    /// template) or past the end.
    pub fn message(&self, index: usize) -> Option<RelayedMessage<'a>> {
        let &(number, _) = self.index.relay.get(index)?;
        let m = self.index.messages.get(number as usize)?;
        let at = |(s, e): (u32, u32)| &self.immutable[s as usize..e as usize];
        Some(RelayedMessage {
            number,
            mail_from: at(m.from),
            content: at(m.content),
        })
    }

    /// Number of received messages in a relay batch (0 for a campaign batch).
    pub fn message_count(&self) -> usize {
        self.index.messages.len()
    }

    /// All recipients in file order.
    pub fn recipients(&self) -> impl Iterator<Item = Recipient<'a>> + '_ {
        (0..self.len()).filter_map(|i| self.recipient(i))
    }

    /// The slot of recipient `index`, from a view made by [`BatchView::parse`]. For a
    /// view of a live mapping use [`crate::MappedBatch::slot`] instead.
    pub fn slot(&self, index: usize) -> Result<Slot, FormatError> {
        let at = index * SLOT_LEN;
        let bytes = self
            .slots
            .get(at..at + SLOT_LEN)
            .ok_or(FormatError::Malformed {
                region: Region::Slots,
                offset: self.index.header.slots_off as usize + at,
                what: "no slot bytes in this view",
            })?;
        let raw = u64_at(bytes, 0);
        Slot::decode(raw).map_err(|fault| FormatError::Slot { index, fault })
    }
}
