//! Building the bytes of a new batch file in memory.

use crate::format::{self, Header, HEADER_LEN, SLOT_LEN};
use crate::varint;

/// Identity and provenance of a batch, written into its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMeta {
    /// Batch identifier, unique within the campaign.
    pub batch_id: u64,
    /// Campaign the batch belongs to.
    pub campaign_id: u64,
    /// Hash of the stored message template the recipients are merged into.
    pub content_hash: [u8; 32],
    /// Unix seconds of creation.
    pub created_at: u64,
}

/// Why a recipient or a batch cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The address has no `@`, or an empty local part or domain.
    #[error("address {0:?} is not local@domain")]
    BadAddress(String),
    /// A recipient has a different number of values than there are fields.
    #[error("recipient {address:?} has {got} merge values, the batch has {expected} fields")]
    FieldCount {
        /// The recipient's address.
        address: String,
        /// Values given.
        got: usize,
        /// Fields declared.
        expected: usize,
    },
    /// Too many fields (more than 65535), or a repeated field name.
    #[error("bad field names: {0}")]
    Fields(String),
    /// The file would exceed the format's 4 GiB limit.
    #[error("batch would exceed the 4 GiB file limit")]
    TooLarge,
}

/// Accumulates recipients and produces a sealed batch file.
///
/// Recipients are stored in the order pushed; partitioning sorts them by destination
/// first, so consecutive recipients usually share a domain-table entry.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    meta: BatchMeta,
    field_count: usize,
    fields: Vec<u8>,
    domains: Vec<Vec<u8>>,
    domain_bytes: Vec<u8>,
    records: Vec<u8>,
    count: u32,
}

impl BatchBuilder {
    /// Starts a batch whose recipients carry one value for each of `field_names`.
    pub fn new<S: AsRef<str>>(meta: BatchMeta, field_names: &[S]) -> Result<Self, BuildError> {
        if field_names.len() > usize::from(u16::MAX) {
            return Err(BuildError::Fields(format!(
                "{} fields, at most 65535",
                field_names.len()
            )));
        }
        let mut fields = Vec::new();
        for (i, name) in field_names.iter().enumerate() {
            let name = name.as_ref();
            if field_names[..i].iter().any(|n| n.as_ref() == name) {
                return Err(BuildError::Fields(format!("{name:?} appears twice")));
            }
            varint::put_bytes(&mut fields, name.as_bytes());
        }
        Ok(BatchBuilder {
            meta,
            field_count: field_names.len(),
            fields,
            domains: Vec::new(),
            domain_bytes: Vec::new(),
            records: Vec::new(),
            count: 0,
        })
    }

    /// Adds a recipient: its address (split at the last `@`) and one value per field,
    /// any bytes at all, stored exactly as given.
    pub fn push<V: AsRef<[u8]>>(&mut self, address: &str, values: &[V]) -> Result<(), BuildError> {
        let (local, domain) = address
            .rsplit_once('@')
            .filter(|(l, d)| !l.is_empty() && !d.is_empty())
            .ok_or_else(|| BuildError::BadAddress(address.to_owned()))?;
        if values.len() != self.field_count {
            return Err(BuildError::FieldCount {
                address: address.to_owned(),
                got: values.len(),
                expected: self.field_count,
            });
        }
        let too_large = |n: usize| n > u32::MAX as usize;
        if too_large(local.len()) || values.iter().any(|v| too_large(v.as_ref().len())) {
            return Err(BuildError::TooLarge);
        }
        // Sorted input makes the last domain the likely match; fall back to a scan
        // (batches hold few distinct domains).
        let domain = domain.as_bytes();
        let index = match self.domains.iter().rposition(|d| d == domain) {
            Some(i) => i,
            None => {
                varint::put_bytes(&mut self.domain_bytes, domain);
                self.domains.push(domain.to_vec());
                self.domains.len() - 1
            }
        };
        varint::put(&mut self.records, index as u32);
        varint::put_bytes(&mut self.records, local.as_bytes());
        for value in values {
            varint::put_bytes(&mut self.records, value.as_ref());
        }
        self.count = self.count.checked_add(1).ok_or(BuildError::TooLarge)?;
        Ok(())
    }

    /// Number of recipients pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no recipient was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The complete file: header, sections, zeroed (pending) slots, checksum sealed.
    pub fn finish(&self) -> Result<Vec<u8>, BuildError> {
        let fields_off = HEADER_LEN;
        let domains_off = fields_off + self.fields.len();
        let records_off = domains_off + self.domain_bytes.len();
        let slots_off = (records_off + self.records.len()).next_multiple_of(SLOT_LEN);
        let file_len = slots_off + self.count as usize * SLOT_LEN;
        let to_u32 = |n: usize| u32::try_from(n).map_err(|_| BuildError::TooLarge);
        let header = Header {
            batch_id: self.meta.batch_id,
            campaign_id: self.meta.campaign_id,
            created_at: self.meta.created_at,
            content_hash: self.meta.content_hash,
            field_count: self.field_count as u16,
            recipient_count: self.count,
            domain_count: self.domains.len() as u32,
            fields_off: to_u32(fields_off)?,
            domains_off: to_u32(domains_off)?,
            records_off: to_u32(records_off)?,
            slots_off: to_u32(slots_off)?,
            file_len: to_u32(file_len)?,
            checksum: 0,
        };
        let mut file = vec![0u8; file_len];
        header.write(&mut file);
        file[fields_off..domains_off].copy_from_slice(&self.fields);
        file[domains_off..records_off].copy_from_slice(&self.domain_bytes);
        file[records_off..records_off + self.records.len()].copy_from_slice(&self.records);
        format::seal(&mut file);
        Ok(file)
    }
}
