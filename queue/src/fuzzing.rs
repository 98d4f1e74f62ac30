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
