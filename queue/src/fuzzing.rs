//! Entry points the fuzz targets call, kept here so `cargo test` exercises them too.

use crate::format::{self, BatchView};

/// Feeds arbitrary bytes to the batch reader. If the first byte is odd, the rest is
/// first sealed with a correct checksum so the fuzzer gets past the checksum and
/// reaches the section parsers. Must never panic; a view it accepts must read back
/// every recipient and value without panicking either.
pub fn batch_reader(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = rest.to_vec();
    if mode & 1 == 1 {
        format::seal(&mut file);
    }
    if let Ok(view) = BatchView::parse(&file) {
        let _ = view.field_names();
        for recipient in view.recipients() {
            let _ = recipient.address();
            for value in recipient.values() {
                std::hint::black_box(value);
            }
        }
        for i in 0..view.len() {
            let _ = view.slot(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{BatchBuilder, BatchMeta};
    use proptest::prelude::*;

    fn valid_file() -> Vec<u8> {
        let meta = BatchMeta {
            batch_id: 1,
            campaign_id: 1,
            content_hash: [0; 32],
            created_at: 0,
        };
        let mut b = BatchBuilder::new(meta, &["a", "b"]).unwrap();
        for i in 0..5 {
            b.push(&format!("u{i}@d{}.test", i % 2), &["x", "yy"])
                .unwrap();
        }
        b.finish().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The stable-Rust gate for the fuzz target: random bytes.
        #[test]
        fn reader_survives_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            batch_reader(&data);
        }

        /// Valid files with bytes changed, resealed so the section parsers are reached.
        #[test]
        fn reader_survives_mutated_files(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut file = valid_file();
            for (at, byte) in edits {
                let i = at.index(file.len());
                file[i] = byte;
            }
            if truncate {
                file.truncate(cut.index(file.len()));
            }
            let mut input = vec![1u8];
            input.extend_from_slice(&file);
            batch_reader(&input);
        }
    }
}
