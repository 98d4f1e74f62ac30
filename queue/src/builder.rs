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
            version: format::VERSION,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BatchView;
    use crate::slot::Slot;
    use proptest::prelude::*;

    pub(crate) fn meta() -> BatchMeta {
        BatchMeta {
            batch_id: 7,
            campaign_id: 42,
            content_hash: [9; 32],
            created_at: 1_700_000_000,
        }
    }

    /// A recipient: local part (any text, `@` included), domain (no `@`), values.
    fn recipient(fields: usize) -> impl Strategy<Value = (String, String, Vec<Vec<u8>>)> {
        (
            "\\PC{1,20}",
            "[^@]{1,20}",
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), fields),
        )
    }

    proptest! {
        #[test]
        fn any_recipients_and_values_round_trip(
            fields in proptest::collection::hash_set("\\PC{0,12}", 0..6),
            seed in proptest::collection::vec(recipient(6), 0..40),
        ) {
            let fields: Vec<String> = fields.into_iter().collect();
            let mut builder = BatchBuilder::new(meta(), &fields).unwrap();
            let mut expected = Vec::new();
            for (local, domain, mut values) in seed {
                values.truncate(fields.len());
                let address = format!("{local}@{domain}");
                builder.push(&address, &values).unwrap();
                expected.push((local, domain, values));
            }
            let file = builder.finish().unwrap();
            let view = BatchView::parse(&file).unwrap();
            prop_assert_eq!(view.field_names(), fields.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert_eq!(view.len(), expected.len());
            for (i, (local, domain, values)) in expected.iter().enumerate() {
                let r = view.recipient(i).unwrap();
                prop_assert_eq!(r.local, local.as_bytes());
                prop_assert_eq!(r.domain, domain.as_bytes());
                prop_assert_eq!(r.values().collect::<Vec<_>>(), values.iter().map(Vec::as_slice).collect::<Vec<_>>());
                prop_assert_eq!(view.slot(i).unwrap(), Slot::PENDING);
            }
            prop_assert_eq!(view.header().batch_id, 7);
            prop_assert_eq!(view.header().campaign_id, 42);
            prop_assert_eq!(view.header().content_hash, [9; 32]);
        }
    }

    #[test]
    fn csv_shaped_values_come_back_exactly() {
        let fields = ["first_name", "note", "empty"];
        let mut builder = BatchBuilder::new(meta(), &fields).unwrap();
        let values: [&[u8]; 3] = [
            "Zoë 🚀 \"quoted\", comma".as_bytes(),
            b"line one\r\nline two\rbare cr\nbare lf\r\n.\r\n",
            b"",
        ];
        builder.push("o'brien+tag@Example.COM", &values).unwrap();
        let file = builder.finish().unwrap();
        let view = BatchView::parse(&file).unwrap();
        let r = view.recipient(0).unwrap();
        assert_eq!(r.address(), "o'brien+tag@Example.COM");
        assert_eq!(r.values().collect::<Vec<_>>(), values.to_vec());
    }

    #[test]
    fn shares_one_domain_entry_per_domain() {
        let mut builder = BatchBuilder::new(meta(), &["a"]).unwrap();
        for (i, d) in ["x.test", "x.test", "y.test", "x.test"].iter().enumerate() {
            builder.push(&format!("u{i}@{d}"), &["v"]).unwrap();
        }
        let file = builder.finish().unwrap();
        let view = BatchView::parse(&file).unwrap();
        assert_eq!(view.domains(), vec![&b"x.test"[..], b"y.test"]);
        assert_eq!(view.recipient(3).unwrap().domain_index, 0);
    }

    #[test]
    fn refuses_bad_input_with_a_clear_error() {
        let mut builder = BatchBuilder::new(meta(), &["a", "b"]).unwrap();
        assert_eq!(
            builder
                .push("no-at-sign", &["1", "2"])
                .unwrap_err()
                .to_string(),
            "address \"no-at-sign\" is not local@domain"
        );
        assert!(builder.push("@example.com", &["1", "2"]).is_err());
        assert!(builder.push("user@", &["1", "2"]).is_err());
        assert_eq!(
            builder
                .push("u@example.com", &["1"])
                .unwrap_err()
                .to_string(),
            "recipient \"u@example.com\" has 1 merge values, the batch has 2 fields"
        );
        assert_eq!(
            BatchBuilder::new(meta(), &["a", "a"])
                .unwrap_err()
                .to_string(),
            "bad field names: \"a\" appears twice"
        );
    }
}
