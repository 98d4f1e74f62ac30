//! Cutting a recipient list into batch files: sorted by destination (domain, then
//! address), `batch_size` recipients each, batch ids 0, 1, 2, … in that order.
//!
//! The cut is deterministic: the same list and batch size always give the same
//! batches. So a partitioning interrupted by a crash is finished by running it
//! again with `resume`: batches already in the spool are kept as they are (their
//! recipients may be under way) and only the missing ones are written. No
//! recipient is lost or queued twice.
//!
//! Suppressed addresses are dropped before the cut ([`drop_suppressed`]). For the
//! cut to stay the same on resume, the addresses dropped are recorded with the
//! campaign ([`crate::campaign::Campaign::save_suppressed`]) and the resume drops
//! exactly those, whatever the suppression list holds by then (the delivery engine
//! checks the list again before sending).

use std::collections::HashSet;

use volley_queue::{BatchBuilder, BatchMeta, QueueError, Spool};

use crate::recipients::{RecipientList, Rejected};

/// Batch files are committed in groups of about this many bytes (one syncfs each).
const GROUP_BYTES: usize = 32 << 20;

/// What a partitioning wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Partitioned {
    /// Batches of the campaign (written now or found from an earlier run).
    pub batches: u64,
    /// Batches written now.
    pub written: u64,
    /// Recipients in all batches.
    pub recipients: u64,
}

/// The order recipients are queued in: destination domain (case-insensitive),
/// then address.
pub fn sort_by_destination(list: &mut RecipientList) {
    list.rows.sort_by(|a, b| {
        let key = |e: &str| {
            let (local, domain) = e.rsplit_once('@').unwrap_or((e, ""));
            (domain.to_ascii_lowercase(), local.to_owned())
        };
        key(&a.email).cmp(&key(&b.email))
    });
}

/// Removes from `list` the rows for which `suppressed` gives a reason (the
/// suppression's, e.g. `hard_bounce`) and returns them, in file order, as rejects
/// with reason `suppressed: REASON`.
pub fn drop_suppressed(
    list: &mut RecipientList,
    mut suppressed: impl FnMut(&str) -> Option<String>,
) -> Vec<Rejected> {
    let mut dropped = Vec::new();
    list.rows.retain(|row| match suppressed(&row.email) {
        Some(reason) => {
            dropped.push(Rejected {
                line: row.line,
                email: row.email.clone(),
                reason: format!("suppressed: {reason}"),
            });
            false
        }
        None => true,
    });
    dropped
}

/// Writes the batches of campaign `campaign_id` for `list` (sorted here).
/// With `resume`, batches already in `active/` or `done/` are left alone.
pub fn partition(
    spool: &Spool,
    list: &mut RecipientList,
    campaign_id: u64,
    content_hash: [u8; 32],
    created_at: u64,
    batch_size: u32,
    resume: bool,
) -> Result<Partitioned, QueueError> {
    sort_by_destination(list);
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
    let mut result = Partitioned::default();
    let mut group: Vec<Vec<u8>> = Vec::new();
    let mut group_bytes = 0;
    for (batch_id, chunk) in list.rows.chunks(batch_size.max(1) as usize).enumerate() {
        let batch_id = batch_id as u64;
        result.batches += 1;
        result.recipients += chunk.len() as u64;
        if existing.contains(&Spool::file_name(campaign_id, batch_id)) {
            continue;
        }
        let meta = BatchMeta {
            batch_id,
            campaign_id,
            content_hash,
            created_at,
        };
        let mut builder = BatchBuilder::new(meta, &list.fields)?;
        for row in chunk {
            builder.push(&row.email, &row.values)?;
        }
        let file = builder.finish()?;
        group_bytes += file.len();
        group.push(file);
        result.written += 1;
        if group_bytes >= GROUP_BYTES {
            spool.write_batches(group.iter().map(Vec::as_slice))?;
            group.clear();
            group_bytes = 0;
        }
    }
    spool.write_batches(group.iter().map(Vec::as_slice))?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use volley_queue::BatchView;

    fn list(n: usize) -> RecipientList {
        let mut text = String::from("email,n\n");
        for i in 0..n {
            let domain = ["b.test", "A.test", "c.test"][i % 3];
            text.push_str(&format!("u{i:03}@{domain},{i}\n"));
        }
        RecipientList::parse(text.as_bytes(), Path::new("l.csv")).unwrap()
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
        let mut l = list(25);
        let p = partition(&spool, &mut l, 7, [1; 32], 0, 10, false).unwrap();
        assert_eq!((p.batches, p.written, p.recipients), (3, 3, 25));
        let got = all_recipients(&spool);
        assert_eq!(got.len(), 25);
        assert!(got[..8].iter().all(|a| a.ends_with("@A.test")), "{got:?}");
        assert!(got[8..17].iter().all(|a| a.ends_with("@b.test")), "{got:?}");
        assert!(got[17..].iter().all(|a| a.ends_with("@c.test")), "{got:?}");
    }

    #[test]
    fn suppressed_rows_are_dropped_and_returned_with_their_lines() {
        let mut l = list(6);
        let dropped = drop_suppressed(&mut l, |email| {
            (email.starts_with("u001") || email.starts_with("u004")).then(|| "manual".into())
        });
        let got: Vec<(u64, &str, &str)> = dropped
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
        assert_eq!(l.rows.len(), 4);
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
}
