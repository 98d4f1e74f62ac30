//! A corrupt batch file is quarantined with a reason; the other batches are served.

mod common;

use std::fs;
use std::path::Path;

use volley_queue::format::Header;
use volley_queue::{Region, Spool};

const VICTIM: u64 = 2;

/// A spool with three batches of campaign 1; returns the victim's path.
fn spool_with_three(root: &Path) -> (Spool, std::path::PathBuf) {
    let spool = Spool::open(root).unwrap();
    let files: Vec<Vec<u8>> = (1..=3).map(|b| common::batch_bytes(1, b, 10)).collect();
    let paths = spool
        .write_batches(files.iter().map(Vec::as_slice))
        .unwrap();
    (spool, paths[(VICTIM - 1) as usize].clone())
}

/// Region boundaries of the victim: (name, offset).
fn boundaries(bytes: &[u8]) -> Vec<(Region, usize)> {
    let h = Header::read(bytes, bytes.len()).unwrap();
    vec![
        (Region::Header, 0),
        (Region::Header, 64),
        (Region::FieldNames, h.fields_off as usize),
        (Region::Domains, h.domains_off as usize),
        (Region::Records, h.records_off as usize),
        (Region::Slots, h.slots_off as usize),
        (Region::Slots, h.file_len as usize - 8),
        (Region::Slots, h.file_len as usize - 1),
    ]
}

/// Runs recovery and checks: the victim alone is quarantined, with a reason file
/// naming it and containing `expect`, and the other two batches are served.
fn assert_quarantined(spool: &Spool, victim: &Path, expect: &str, case: &str) {
    let recovery = spool.recover().unwrap();
    assert_eq!(
        recovery.quarantined.len(),
        1,
        "{case}: one file quarantined"
    );
    let q = &recovery.quarantined[0];
    assert_eq!(q.from, victim, "{case}");
    assert!(
        q.reason.contains(&victim.display().to_string()),
        "{case}: {}",
        q.reason
    );
    assert!(
        q.reason.contains(expect),
        "{case}: reason {:?} lacks {expect:?}",
        q.reason
    );
    let to = q.to.as_ref().unwrap();
    assert!(to.starts_with(spool.quarantine_dir()), "{case}");
    assert!(!victim.exists(), "{case}: victim left in active/");
    let reason_file = fs::read_to_string(format!("{}.reason", to.display())).unwrap();
    assert!(reason_file.contains(expect), "{case}: {reason_file}");
    let ids: Vec<u64> = recovery.batches.iter().map(|b| b.batch_id).collect();
    assert_eq!(ids, vec![1, 3], "{case}: the others are still served");
    assert_eq!(recovery.totals().pending, 20, "{case}");
}

#[test]
fn truncation_at_every_region_boundary_is_quarantined() {
    let probe = tempfile::tempdir().unwrap();
    let (_, victim) = spool_with_three(probe.path());
    let original = fs::read(&victim).unwrap();
    for (region, at) in boundaries(&original) {
        let dir = tempfile::tempdir().unwrap();
        let (spool, victim) = spool_with_three(dir.path());
        fs::write(&victim, &original[..at]).unwrap();
        let case = format!("truncated at {at} ({region})");
        let expect = if at < 128 {
            "truncated in the header".to_owned()
        } else {
            format!("truncated in the {region}")
        };
        assert_quarantined(&spool, &victim, &expect, &case);
    }
}

#[test]
fn flipped_bytes_in_every_region_are_quarantined() {
    let probe = tempfile::tempdir().unwrap();
    let (_, victim) = spool_with_three(probe.path());
    let original = fs::read(&victim).unwrap();
    let h = Header::read(&original, original.len()).unwrap();
    let cases: Vec<(&str, usize, &str)> = vec![
        ("magic", 0, "bad magic"),
        ("version", 8, "version"),
        ("recipient count", 12, "bad header"),
        ("batch id", 24, "checksum mismatch"),
        ("content hash", 50, "checksum mismatch"),
        ("slots offset", 92, "bad header"),
        ("reserved", 110, "reserved header bytes"),
        ("checksum", 121, "checksum mismatch"),
        (
            "field names",
            h.fields_off as usize + 2,
            "checksum mismatch",
        ),
        ("domains", h.domains_off as usize + 1, "checksum mismatch"),
        ("records", h.records_off as usize + 5, "checksum mismatch"),
        (
            "first slot",
            h.slots_off as usize,
            "state slot 0 is corrupt",
        ),
        (
            "middle slot",
            h.slots_off as usize + 8 * 4 + 3,
            "state slot 4 is corrupt",
        ),
        (
            "last slot",
            h.file_len as usize - 1,
            "state slot 9 is corrupt",
        ),
    ];
    for (name, at, expect) in cases {
        for flip in [0x01u8, 0x80, 0xff] {
            let dir = tempfile::tempdir().unwrap();
            let (spool, victim) = spool_with_three(dir.path());
            let mut bytes = original.clone();
            bytes[at] ^= flip;
            fs::write(&victim, &bytes).unwrap();
            let case = format!("{name} byte {at} ^ {flip:#x}");
            assert_quarantined(&spool, &victim, expect, &case);
        }
    }
}

#[test]
fn trailing_bytes_and_empty_files_are_quarantined() {
    for (case, mutate) in [
        (
            "trailing",
            Box::new(|b: &mut Vec<u8>| b.extend_from_slice(b"junk")) as Box<dyn Fn(&mut Vec<u8>)>,
        ),
        ("empty", Box::new(|b: &mut Vec<u8>| b.clear())),
        (
            "not a batch",
            Box::new(|b: &mut Vec<u8>| *b = b"From: someone\r\n\r\nhello".repeat(20)),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (spool, victim) = spool_with_three(dir.path());
        let mut bytes = fs::read(&victim).unwrap();
        mutate(&mut bytes);
        fs::write(&victim, &bytes).unwrap();
        let expect = match case {
            "trailing" => "unexpected bytes after the state slots",
            "empty" => "truncated in the header",
            _ => "not a volley batch file",
        };
        assert_quarantined(&spool, &victim, expect, case);
    }
}

#[test]
fn read_only_scan_reports_corruption_without_moving_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, victim) = spool_with_three(dir.path());
    drop(spool);
    let mut bytes = fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    fs::write(&victim, &bytes).unwrap();
    let reader = Spool::open_read_only(dir.path()).unwrap();
    let (summary, corrupt) = reader.summary().unwrap();
    assert_eq!(corrupt.len(), 1);
    assert!(
        corrupt[0].reason.contains("state slot 9 is corrupt"),
        "{}",
        corrupt[0].reason
    );
    assert!(victim.exists());
    assert_eq!(summary.batches, 2);
    assert_eq!(summary.total.pending, 20);
}
