use super::*;
use crate::format::BatchView;
use crate::slot::{Slot, State};
use crate::MappedBatch;

const FIELDS: [&str; 2] = ["dsn_notify", "dsn_orcpt"];

struct Dirs {
    _tmp: tempfile::TempDir,
    open: PathBuf,
    active: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    let active = tmp.path().join("active");
    fs::create_dir_all(&open).unwrap();
    fs::create_dir_all(&active).unwrap();
    Dirs {
        _tmp: tmp,
        open,
        active,
    }
}

fn append(batch: &mut OpenBatch, from: &str, rcpts: &[(&str, &str)], content: &[u8]) -> u32 {
    let values: [&[u8]; 2] = [b"", b""];
    let list: Vec<RelayRecipient<'_, &[u8]>> =
        rcpts.iter().map(|&(d, l)| (d, l, &values[..])).collect();
    batch.append(from, &list, content)
}

#[test]
fn messages_appended_in_groups_read_back_byte_for_byte() {
    let d = dirs();
    let mut batch = OpenBatch::create(&d.open, None, 77, 10, &FIELDS, 1_700_000_000).unwrap();
    assert_eq!(
        append(
            &mut batch,
            "a@src.test",
            &[("x.test", "one")],
            b"Subject: 1\r\n\r\n{{ x }}\r\n"
        ),
        0
    );
    batch.commit().unwrap();
    assert_eq!(
        append(
            &mut batch,
            "",
            &[("y.test", "two"), ("x.test", "three")],
            b"\r\n.\r\nbody\r\n"
        ),
        1
    );
    batch.commit().unwrap();
    assert_eq!(batch.room(), 7);
    let path = batch.seal(&d.active).unwrap().unwrap();
    assert_eq!(path, d.active.join("000000000000004d-0000000000000000.vqb"));
    assert_eq!(fs::read_dir(&d.open).unwrap().count(), 0);

    let bytes = fs::read(&path).unwrap();
    let view = BatchView::parse(&bytes).unwrap();
    assert!(view.header().is_relay());
    assert_eq!(view.header().campaign_id, 77);
    assert_eq!(view.len(), 3);
    assert_eq!(view.message_count(), 2);
    assert_eq!(view.field_names(), FIELDS);
    let addresses: Vec<String> = view.recipients().map(|r| r.address()).collect();
    assert_eq!(addresses, ["one@x.test", "two@y.test", "three@x.test"]);
    let m = view.message(2).unwrap();
    assert_eq!(
        (m.number, m.mail_from, m.content),
        (1, &b""[..], &b"\r\n.\r\nbody\r\n"[..])
    );
    assert_eq!(
        view.message(0).unwrap().content,
        b"Subject: 1\r\n\r\n{{ x }}\r\n"
    );
    assert_eq!(view.recipient(1).unwrap().domain_index, 1);
    assert_eq!(view.recipient(2).unwrap().domain_index, 0);

    // Delivered from like any batch: the slots sit right after the header.
    let map = MappedBatch::open(&path).unwrap();
    assert_eq!(map.len(), 3);
    map.set_slot(
        1,
        Slot {
            state: State::Delivered,
            attempts: 1,
            code: 250,
            next_attempt: 0,
        },
    )
    .unwrap();
    drop(map);
    let bytes = fs::read(&path).unwrap();
    let view = BatchView::parse(&bytes).unwrap();
    assert_eq!(view.slot(1).unwrap().state, State::Delivered);
    assert_eq!(view.slot(0).unwrap().state, State::Pending);
}

#[test]
fn an_unsealed_or_altered_file_is_refused() {
    let d = dirs();
    let mut batch = OpenBatch::create(&d.open, None, 5, 4, &FIELDS, 0).unwrap();
    append(&mut batch, "a@src.test", &[("x.test", "one")], b"hello\r\n");
    batch.commit().unwrap();
    let open = d.open.join("0000000000000005-0000000000000000.vqb");
    let bytes = fs::read(&open).unwrap();
    assert!(
        BatchView::parse(&bytes).is_err(),
        "an open file is not a batch yet"
    );
    let path = batch.seal(&d.active).unwrap().unwrap();
    let good = fs::read(&path).unwrap();
    // Every single-byte change outside the slots is caught.
    let slots = crate::format::Header::read(&good, good.len())
        .unwrap()
        .slots_range();
    for i in (0..good.len()).filter(|i| !slots.contains(i)) {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        assert!(
            BatchView::parse(&bad).is_err(),
            "byte {i} changed unnoticed"
        );
    }
    for cut in [good.len() - 1, good.len() - 13, 200] {
        assert!(
            BatchView::parse(&good[..cut]).is_err(),
            "cut at {cut} unnoticed"
        );
    }
}

#[test]
fn recovery_in_the_same_boot_keeps_exactly_the_acknowledged_messages() {
    let d = dirs();
    let mut batch = OpenBatch::create(&d.open, None, 9, 10, &FIELDS, 0).unwrap();
    append(&mut batch, "a@src.test", &[("x.test", "one")], b"first\r\n");
    append(
        &mut batch,
        "a@src.test",
        &[("x.test", "two")],
        b"second\r\n",
    );
    batch.commit().unwrap();
    // Written but not committed (the process died in the fsync): no 250 was
    // sent, so it must not be delivered.
    append(
        &mut batch,
        "a@src.test",
        &[("x.test", "three")],
        b"third\r\n",
    );
    batch.write_pending().unwrap();
    drop(batch);
    // And a torn record after it.
    let open = d.open.join("0000000000000009-0000000000000000.vqb");
    let mut f = OpenOptions::new().append(true).open(&open).unwrap();
    f.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(f);

    let done = recover_open(&d.open, &d.active).unwrap();
    let path = d.active.join("0000000000000009-0000000000000000.vqb");
    assert_eq!(done, [sealed(&path, 2, 1, 0)]);
    let bytes = fs::read(&path).unwrap();
    let view = BatchView::parse(&bytes).unwrap();
    let contents: Vec<&[u8]> = (0..view.len())
        .map(|i| view.message(i).unwrap().content)
        .collect();
    assert_eq!(contents, [&b"first\r\n"[..], b"second\r\n"]);
}

#[test]
fn recovery_after_a_reboot_keeps_every_complete_message() {
    let d = dirs();
    let mut batch = OpenBatch::create(&d.open, None, 10, 10, &FIELDS, 0).unwrap();
    append(&mut batch, "a@src.test", &[("x.test", "one")], b"first\r\n");
    batch.commit().unwrap();
    append(
        &mut batch,
        "a@src.test",
        &[("x.test", "two")],
        b"second\r\n",
    );
    batch.write_pending().unwrap();
    drop(batch);
    let open = d.open.join("000000000000000a-0000000000000000.vqb");
    // Another boot wrote it.
    as_if_from_another_boot(&open, &open);

    let done = recover_open(&d.open, &d.active).unwrap();
    let path = d.active.join("000000000000000a-0000000000000000.vqb");
    assert_eq!(done, [sealed(&path, 2, 0, 1)]);
    let bytes = fs::read(&path).unwrap();
    assert_eq!(BatchView::parse(&bytes).unwrap().len(), 2);
}

#[test]
fn recovery_removes_files_without_acknowledged_messages_and_reports_bad_headers() {
    let d = dirs();
    let mut batch = OpenBatch::create(&d.open, None, 11, 10, &FIELDS, 0).unwrap();
    append(
        &mut batch,
        "a@src.test",
        &[("x.test", "one")],
        b"never acknowledged\r\n",
    );
    batch.write_pending().unwrap();
    drop(batch);
    fs::write(d.open.join("junk.vqb"), b"VOLLEYQB\x02\x00garbage").unwrap();
    let done = recover_open(&d.open, &d.active).unwrap();
    assert_eq!(done.len(), 2);
    assert!(matches!(&done[0], Recovered::Removed(_)), "{done:?}");
    assert!(
        matches!(&done[1], Recovered::Corrupt(p, _) if p.ends_with("junk.vqb")),
        "{done:?}"
    );
    assert_eq!(fs::read_dir(&d.active).unwrap().count(), 0);
}

#[test]
fn a_failed_commit_is_cut_off_at_the_seal() {
    let d = dirs();
    let mut batch = OpenBatch::create(&d.open, None, 12, 10, &FIELDS, 0).unwrap();
    append(&mut batch, "a@src.test", &[("x.test", "one")], b"kept\r\n");
    batch.commit().unwrap();
    append(&mut batch, "a@src.test", &[("x.test", "two")], b"lost\r\n");
    // Written, then the sync "failed": the caller told the client 451.
    batch.write_pending().unwrap();
    batch.messages = batch.committed;
    batch.recipients = batch.committed_recipients;
    let path = batch.seal(&d.active).unwrap().unwrap();
    let bytes = fs::read(&path).unwrap();
    let view = BatchView::parse(&bytes).unwrap();
    assert_eq!(view.len(), 1);
    assert_eq!(view.message(0).unwrap().content, b"kept\r\n");
}

#[test]
fn boot_id_is_read() {
    assert_ne!(
        boot_id(),
        [0; 16],
        "this is Linux: /proc/sys/kernel/random/boot_id exists"
    );
}

/// A sealed batch of `n` equal messages in `d.active`, its path.
fn sealed_batch(d: &Dirs, id: u64, n: usize) -> PathBuf {
    let mut batch = OpenBatch::create(&d.open, None, id, 10, &FIELDS, 0).unwrap();
    for i in 0..n {
        append(
            &mut batch,
            "a@src.test",
            &[("x.test", "old")],
            format!("old {i}\r\n").as_bytes(),
        );
        batch.commit().unwrap();
    }
    batch.seal(&d.active).unwrap().unwrap()
}

/// The test directories and a `reuse/` beside them.
fn dirs_with_reuse() -> (Dirs, PathBuf) {
    let d = dirs();
    let reuse = d._tmp.path().join("reuse");
    fs::create_dir_all(&reuse).unwrap();
    (d, reuse)
}

/// Rewrites the file at `from` to `to` as if an earlier boot had written it.
fn as_if_from_another_boot(from: &Path, to: &Path) {
    let mut bytes = fs::read(from).unwrap();
    bytes[BOOT_ID_AT] ^= 1;
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..120]);
    bytes[120..128].copy_from_slice(&sum.to_le_bytes());
    fs::write(to, &bytes).unwrap();
}

/// What recovery reports of a batch file it sealed at `path`.
fn sealed(path: &Path, messages: u32, dropped: u32, unsure: u32) -> Recovered {
    Recovered::Sealed {
        path: path.to_path_buf(),
        messages,
        dropped,
        unsure,
    }
}

fn contents(path: &Path) -> Vec<Vec<u8>> {
    let bytes = fs::read(path).unwrap();
    let view = BatchView::parse(&bytes).unwrap();
    (0..view.len())
        .map(|i| view.message(i).unwrap().content.to_vec())
        .collect()
}

#[test]
fn a_reused_file_is_taken_only_once_unmapped_and_keeps_none_of_its_old_records() {
    use std::os::unix::fs::MetadataExt;
    let (d, reuse) = dirs_with_reuse();
    // A finished batch of three messages, still mapped (as delivery holds it
    // until its round ends), moved to reuse/ as a completion does.
    let old = sealed_batch(&d, 1, 3);
    let map = MappedBatch::open(&old).unwrap();
    let kept = reuse.join(old.file_name().unwrap());
    fs::rename(&old, &kept).unwrap();
    let inode = fs::metadata(&kept).unwrap().ino();

    // Mapped: not taken, a new file is made.
    let fresh = OpenBatch::create(&d.open, Some(&reuse), 2, 10, &FIELDS, 0).unwrap();
    assert!(kept.exists());
    assert_ne!(fs::metadata(&fresh.path).unwrap().ino(), inode);
    drop(fresh);
    fs::remove_file(d.open.join("0000000000000002-0000000000000000.vqb")).unwrap();

    // Unmapped: taken. The same size of message, so that the old records line
    // up with where new ones would be.
    drop(map);
    let mut batch = OpenBatch::create(&d.open, Some(&reuse), 3, 10, &FIELDS, 0).unwrap();
    assert!(!kept.exists());
    let open = d.open.join("0000000000000003-0000000000000000.vqb");
    assert_eq!(fs::metadata(&open).unwrap().ino(), inode);
    append(&mut batch, "a@src.test", &[("x.test", "new")], b"new 0\r\n");
    batch.commit().unwrap();
    append(&mut batch, "a@src.test", &[("x.test", "new")], b"new 1\r\n");
    batch.write_pending().unwrap();
    drop(batch);

    // Killed: the same boot keeps the one acknowledged message, not the old ones
    // lying past it (which would pass with an unmasked checksum).
    let keep = d._tmp.path().join("keep");
    fs::copy(&open, &keep).unwrap();
    let done = recover_open(&d.open, &d.active).unwrap();
    let path = d.active.join("0000000000000003-0000000000000000.vqb");
    assert_eq!(done, [sealed(&path, 1, 1, 0)]);
    assert_eq!(contents(&path), [b"new 0\r\n".to_vec()]);

    // After a reboot: every complete new message, still none of the old.
    fs::remove_file(&path).unwrap();
    as_if_from_another_boot(&keep, &open);
    let done = recover_open(&d.open, &d.active).unwrap();
    assert_eq!(done, [sealed(&path, 2, 0, 1)]);
    assert_eq!(
        contents(&path),
        [b"new 0\r\n".to_vec(), b"new 1\r\n".to_vec()]
    );
}

#[test]
fn a_reused_file_keeps_its_length_at_the_seal_and_reads_as_a_new_batch() {
    let (d, reuse) = dirs_with_reuse();
    let old = sealed_batch(&d, 1, 5);
    let old_len = fs::metadata(&old).unwrap().len();
    // Delivered: its slots are no longer zero.
    let map = MappedBatch::open(&old).unwrap();
    for i in 0..5 {
        let done = Slot {
            state: State::Delivered,
            attempts: 1,
            code: 250,
            next_attempt: 0,
        };
        map.set_slot(i, done).unwrap();
    }
    map.sync().unwrap();
    drop(map);
    fs::rename(&old, reuse.join("x")).unwrap();

    let mut batch = OpenBatch::create(&d.open, Some(&reuse), 4, 10, &FIELDS, 0).unwrap();
    append(&mut batch, "", &[("y.test", "new")], b"the new one\r\n");
    append(
        &mut batch,
        "",
        &[("z.test", "a"), ("z.test", "b")],
        b"two\r\n",
    );
    batch.commit().unwrap();
    let path = batch.seal(&d.active).unwrap().unwrap();
    // Not cut: its blocks stay allocated for the next batch written over it,
    // and the old batch's records past the seal are not read.
    assert_eq!(fs::metadata(&path).unwrap().len(), old_len);
    assert_eq!(
        contents(&path),
        [
            b"the new one\r\n".to_vec(),
            b"two\r\n".to_vec(),
            b"two\r\n".to_vec()
        ]
    );
    let map = MappedBatch::open(&path).unwrap();
    assert_eq!(map.len(), 3);
    assert_eq!(map.view().recipient(0).unwrap().address(), "new@y.test");
    for i in 0..3 {
        let slot = map.slot(i).unwrap();
        assert_eq!(
            (slot.state, slot.attempts, slot.code),
            (State::Pending, 0, 0),
            "slot {i}"
        );
    }
}

#[test]
fn a_record_from_another_batch_fails_its_checksum() {
    let mut a = Vec::new();
    format::put_record(&mut a, RECORD_COMMIT, &[3], format::record_mask(1));
    assert!(format::next_record(&a, 0, format::record_mask(1))
        .unwrap()
        .is_some());
    assert_eq!(
        format::next_record(&a, 0, format::record_mask(2)),
        Err("record fails its checksum")
    );
    // Version 2 files (unmasked) still read.
    let mut b = Vec::new();
    format::put_record(&mut b, RECORD_COMMIT, &[3], 0);
    assert!(format::next_record(&b, 0, 0).unwrap().is_some());
}

#[test]
fn writers_on_several_threads_never_take_one_reused_file_twice() {
    let (d, reuse) = dirs_with_reuse();
    for id in 1..=3 {
        let old = sealed_batch(&d, id, 3);
        fs::rename(&old, reuse.join(old.file_name().unwrap())).unwrap();
    }
    let ids = std::sync::atomic::AtomicU64::new(100);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut batch =
                        OpenBatch::create(&d.open, Some(&reuse), id, 10, &FIELDS, 0).unwrap();
                    let body = format!("batch {id}\r\n");
                    append(
                        &mut batch,
                        "a@src.test",
                        &[("x.test", "one")],
                        body.as_bytes(),
                    );
                    batch.commit().unwrap();
                    let path = batch.seal(&d.active).unwrap().unwrap();
                    assert_eq!(contents(&path), [body.into_bytes()], "{}", path.display());
                    // Finished: back for the next one.
                    fs::rename(&path, reuse.join(path.file_name().unwrap())).unwrap();
                }
            });
        }
    });
}

#[test]
fn recovery_after_a_stop_between_the_seals_link_and_unlink_keeps_the_one_file() {
    let d = dirs();
    let mut batch = OpenBatch::create(&d.open, None, 11, 10, &FIELDS, 0).unwrap();
    append(&mut batch, "a@src.test", &[("x.test", "one")], b"first\r\n");
    batch.commit().unwrap();
    let active = batch.seal(&d.active).unwrap().unwrap();
    // The process stopped after linking the sealed file into active/, before
    // removing its open/ name: both names are the one file.
    let open = d.open.join(active.file_name().unwrap());
    fs::hard_link(&active, &open).unwrap();
    let done = recover_open(&d.open, &d.active).unwrap();
    assert_eq!(done, [sealed(&active, 1, 0, 0)]);
    assert!(!open.exists(), "the open/ name is gone");
    let bytes = fs::read(&active).unwrap();
    assert_eq!(BatchView::parse(&bytes).unwrap().len(), 1);

    // Another file under that name in active/ is never replaced.
    let mut other = OpenBatch::create(&d.open, None, 11, 10, &FIELDS, 0).unwrap();
    append(
        &mut other,
        "b@src.test",
        &[("x.test", "two")],
        b"second\r\n",
    );
    other.commit().unwrap();
    drop(other);
    assert!(matches!(
        recover_open(&d.open, &d.active),
        Err(QueueError::Exists { .. })
    ));
}
