//! Helpers shared by the queue's end-to-end tests.
#![allow(dead_code)]

use volley_queue::{BatchBuilder, BatchMeta};

/// A batch of `n` recipients over two domains with three merge fields.
pub fn batch_bytes(campaign_id: u64, batch_id: u64, n: usize) -> Vec<u8> {
    let meta = BatchMeta {
        batch_id,
        campaign_id,
        content_hash: [1; 32],
        created_at: 1_700_000_000,
    };
    let mut builder = BatchBuilder::new(meta, &["first_name", "city", "note"]).unwrap();
    for i in 0..n {
        let domain = if i % 3 == 0 { "b.test" } else { "a.test" };
        let note = format!("note {i}\r\nwith a line break");
        builder
            .push(
                &format!("user{i}@{domain}"),
                &["Zoë", "Zürich", note.as_str()],
            )
            .unwrap();
    }
    builder.finish().unwrap()
}
