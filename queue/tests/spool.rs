//! The spool: durable writes, the recovery scan, completion, the lock.

mod common;

use std::fs;

use volley_queue::{MappedBatch, QueueError, Slot, Spool, State};

#[test]
fn recovery_rebuilds_pending_work_from_the_slots() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let files: Vec<Vec<u8>> = (0..4).map(|b| common::batch_bytes(9, b, 6)).collect();
    let paths = spool
        .write_batches(files.iter().map(Vec::as_slice))
        .unwrap();
    let batch = MappedBatch::open(&paths[1]).unwrap();
    let deferred = Slot {
        state: State::Deferred,
        attempts: 1,
        code: 451,
        next_attempt: 1_900_000_000,
    };
    batch
        .set_slot(
            0,
            Slot {
                state: State::Delivered,
                attempts: 1,
                code: 250,
                next_attempt: 0,
            },
        )
        .unwrap();
    batch.set_slot(1, deferred).unwrap();
    batch
        .set_slot(
            2,
            Slot {
                state: State::InFlight,
                ..Slot::PENDING
            },
        )
        .unwrap();
    batch.sync().unwrap();
    drop(batch);
    // A write that never committed.
    fs::write(dir.path().join("tmp/0000-0000.vqb.tmp"), b"half").unwrap();
    drop(spool);

    let spool = Spool::open(dir.path()).unwrap();
    let recovery = spool.recover().unwrap();
    assert_eq!(recovery.removed_temp, 1);
    assert!(recovery.quarantined.is_empty());
    assert_eq!(recovery.batches.len(), 4);
    let b1 = &recovery.batches[1];
    assert_eq!((b1.campaign_id, b1.batch_id), (9, 1));
    assert_eq!(
        (
            b1.counts.delivered,
            b1.counts.deferred,
            b1.counts.in_flight,
            b1.counts.pending
        ),
        (1, 1, 1, 3)
    );
    assert_eq!(b1.next_due, Some(0), "pending recipients are due now");
    let totals = recovery.totals();
    assert_eq!(totals.total(), 24);
    assert_eq!(totals.unfinished(), 23);

    let batch = MappedBatch::open(&paths[1]).unwrap();
    assert_eq!(batch.slot(1).unwrap(), deferred);
    assert_eq!(batch.reset_in_flight().unwrap(), 1);
    assert_eq!(batch.slot(2).unwrap().state, State::Pending);
}

#[test]
fn a_batch_is_completed_only_when_every_recipient_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let path = spool.write_batch(&common::batch_bytes(1, 1, 3)).unwrap();
    let batch = MappedBatch::open(&path).unwrap();
    batch
        .set_slot(
            0,
            Slot {
                state: State::Delivered,
                ..Slot::PENDING
            },
        )
        .unwrap();
    batch
        .set_slot(
            1,
            Slot {
                state: State::Bounced,
                code: 550,
                ..Slot::PENDING
            },
        )
        .unwrap();
    let err = spool.complete(&batch).unwrap_err();
    assert!(
        matches!(err, QueueError::NotFinished { unfinished: 1, .. }),
        "{err}"
    );
    let batch = MappedBatch::open(&path).unwrap();
    batch
        .set_slot(
            2,
            Slot {
                state: State::Expired,
                ..Slot::PENDING
            },
        )
        .unwrap();
    let done = spool.complete(&batch).unwrap();
    assert!(done.starts_with(spool.done_dir()));
    assert!(!path.exists());
    let recovery = spool.recover().unwrap();
    assert!(recovery.batches.is_empty());
    assert_eq!(spool.find("0000000000000001-0000000000000001"), Some(done));
}

#[test]
fn one_process_at_a_time_writes_a_spool() {
    let dir = tempfile::tempdir().unwrap();
    let _spool = Spool::open(dir.path()).unwrap();
    let err = Spool::open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("in use by another volley process"),
        "{err}"
    );
    // Readers are not locked out.
    let reader = Spool::open_read_only(dir.path()).unwrap();
    assert!(reader.write_batch(&common::batch_bytes(1, 1, 1)).is_err());
}

#[test]
fn a_clone_shares_the_lock_and_tmp_is_emptied_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let clone = spool.try_clone().unwrap();
    // Left by a crash: removed by the first scan.
    fs::write(dir.path().join("tmp/old.vqb.tmp"), b"half").unwrap();
    assert_eq!(spool.recover().unwrap().removed_temp, 1);
    // Being written by another thread of this process: left alone by later scans.
    fs::write(dir.path().join("tmp/new.vqb.tmp"), b"half").unwrap();
    assert_eq!(spool.recover().unwrap().removed_temp, 0);
    assert_eq!(clone.remove_uncommitted().unwrap(), 0);
    assert!(dir.path().join("tmp/new.vqb.tmp").exists());
    // The clone writes; the lock lasts until both handles are gone.
    clone.write_batch(&common::batch_bytes(3, 1, 2)).unwrap();
    drop(spool);
    assert!(matches!(
        Spool::open(dir.path()),
        Err(QueueError::Locked { .. })
    ));
    drop(clone);
    assert!(Spool::open(dir.path()).is_ok());
}

#[test]
fn an_id_collision_never_replaces_a_live_batch() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let first = common::batch_bytes(5, 5, 2);
    let path = spool.write_batch(&first).unwrap();
    let err = spool
        .write_batch(&common::batch_bytes(5, 5, 4))
        .unwrap_err();
    assert!(matches!(err, QueueError::Exists { .. }), "{err}");
    assert_eq!(fs::read(&path).unwrap(), first);
}

#[test]
fn summary_counts_by_domain_case_insensitively() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let path = spool.write_batch(&common::batch_bytes(1, 1, 6)).unwrap();
    let batch = MappedBatch::open(&path).unwrap();
    batch
        .set_slot(
            0,
            Slot {
                state: State::Bounced,
                ..Slot::PENDING
            },
        )
        .unwrap();
    let (summary, corrupt) = spool.summary().unwrap();
    assert!(corrupt.is_empty());
    let b = &summary.domains["b.test"];
    assert_eq!((b.bounced, b.pending), (1, 1));
    assert_eq!(summary.domains["a.test"].pending, 4);
    assert_eq!(summary.total.total(), 6);
}

#[test]
fn missing_spool_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Spool::open_read_only(&dir.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope/active"), "{err}");
}

#[test]
fn finished_relay_batches_are_kept_for_reuse_up_to_a_bound() {
    use volley_queue::relay::{OpenBatch, RelayRecipient};
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let delivered = Slot {
        state: State::Delivered,
        attempts: 1,
        code: 250,
        next_attempt: 0,
    };
    let values: [&[u8]; 1] = [b""];
    let rcpts: [RelayRecipient<'_, &[u8]>; 1] = [("x.test", "one", &values[..])];
    // The first batch is larger than a kept file may be: removed.
    let large = vec![b'x'; volley_queue::spool::REUSE_MAX_BYTES as usize];
    for id in 1..=volley_queue::spool::REUSE_KEEP as u64 + 3 {
        let mut batch =
            OpenBatch::create(&spool.open_dir(), None, id, 10, &["dsn_notify"], 0).unwrap();
        let content: &[u8] = if id == 1 { &large } else { b"hi\r\n" };
        batch.append("a@src.test", &rcpts, content);
        batch.commit().unwrap();
        let path = batch.seal(&spool.active_dir()).unwrap().unwrap();
        let map = MappedBatch::open(&path).unwrap();
        map.set_slot(0, delivered).unwrap();
        spool.complete(&map).unwrap();
        assert!(!path.exists());
    }
    let kept: Vec<u64> = fs::read_dir(spool.reuse_dir())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(kept.len(), volley_queue::spool::REUSE_KEEP);
    assert!(kept.iter().all(|&len| len < 4096), "{kept:?}");
    assert_eq!(fs::read_dir(spool.active_dir()).unwrap().count(), 0);
    assert_eq!(fs::read_dir(spool.done_dir()).unwrap().count(), 0);
}

#[test]
fn a_relay_file_taken_for_a_new_batch_is_found_by_its_header_after_a_power_cut() {
    use volley_queue::relay::{OpenBatch, RelayRecipient};
    let values: [&[u8]; 1] = [b""];
    let rcpts: [RelayRecipient<'_, &[u8]>; 1] = [("x.test", "one", &values[..])];
    let base = volley_queue::ids::INBOUND_ID_BASE;
    let delivered = Slot {
        state: State::Delivered,
        attempts: 1,
        code: 250,
        next_attempt: 0,
    };
    // Where a power cut may leave the file of batch A, finished and taken by
    // batch B, when some of its moves since A's creation did not reach the
    // disk: under A's name in open/ (A's seal lost too), active/ or reuse/;
    // and B with or without acknowledged messages.
    let cases = [
        ("open", 2),
        ("active", 2),
        ("reuse", 2),
        ("open", 0),
        ("active", 0),
        ("reuse", 0),
    ];
    for (left_in, messages) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        let open = spool.open_dir();
        let mut a = OpenBatch::create(&open, None, base + 1, 10, &["dsn_notify"], 0).unwrap();
        a.append("a@src.test", &rcpts, b"old\r\n");
        a.commit().unwrap();
        let a_path = a.seal(&spool.active_dir()).unwrap().unwrap();
        let map = MappedBatch::open(&a_path).unwrap();
        map.set_slot(0, delivered).unwrap();
        spool.complete(&map).unwrap();
        drop(map);
        let reuse = spool.reuse_dir();
        let mut b =
            OpenBatch::create(&open, Some(&reuse), base + 2, 10, &["dsn_notify"], 0).unwrap();
        for _ in 0..messages {
            b.append("a@src.test", &rcpts, b"new\r\n");
        }
        b.commit().unwrap();
        drop(b);
        drop(spool);
        let b_open = open.join(Spool::file_name(base + 2, 0));
        let old_name = tmp.path().join(left_in).join(Spool::file_name(base + 1, 0));
        fs::rename(&b_open, &old_name).unwrap();
        // Within the boot that wrote them (no power cut can have happened),
        // the relay files of reuse/ and active/ are not read at open (those
        // of open/ always are).
        drop(Spool::open(tmp.path()).unwrap());
        assert_eq!(old_name.exists(), left_in != "open", "{left_in} {messages}");
        // The next open is the first after a reboot.
        fs::write(tmp.path().join("boot"), "an earlier boot\n").unwrap();

        let spool = Spool::open(tmp.path()).unwrap();
        assert!(!old_name.exists(), "{left_in} {messages}");
        let b_active = spool.active_dir().join(Spool::file_name(base + 2, 0));
        assert_eq!(b_active.exists(), messages > 0, "{left_in} {messages}");
        let (summary, corrupt) = spool.summary().unwrap();
        assert!(corrupt.is_empty(), "{corrupt:?}");
        assert_eq!(summary.total.total(), messages, "{left_in}");
        assert_eq!(summary.total.pending, messages, "{left_in}");
        assert_eq!(fs::read_dir(spool.quarantine_dir()).unwrap().count(), 0);
    }
}

#[test]
fn relay_batches_under_their_own_names_are_left_as_they_are_at_open() {
    use volley_queue::relay::{OpenBatch, RelayRecipient};
    let values: [&[u8]; 1] = [b""];
    let rcpts: [RelayRecipient<'_, &[u8]>; 1] = [("x.test", "one", &values[..])];
    let base = volley_queue::ids::INBOUND_ID_BASE;
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let mut c =
        OpenBatch::create(&spool.open_dir(), None, base + 3, 10, &["dsn_notify"], 0).unwrap();
    c.append("a@src.test", &rcpts, b"hi\r\n");
    c.commit().unwrap();
    let c_path = c.seal(&spool.active_dir()).unwrap().unwrap();
    let before = fs::read(&c_path).unwrap();
    drop(spool);
    let spool = Spool::open(tmp.path()).unwrap();
    assert_eq!(fs::read(&c_path).unwrap(), before);
    assert_eq!(spool.summary().unwrap().0.total.total(), 1);
}
