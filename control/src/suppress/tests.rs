use std::io::Write as _;

use super::*;

fn open(dir: &Path) -> SuppressionStore {
    SuppressionStore::open(dir).unwrap()
}

fn journal(dir: &Path, generation: u64) -> PathBuf {
    dir.join("suppress").join(format!("journal.{generation}"))
}

fn sorted(store: &SuppressionStore) -> Vec<String> {
    let mut all: Vec<String> = store
        .iter()
        .map(|e| format!("{} {} {} {}", e.address, e.domain, e.reason, e.since))
        .collect();
    all.sort();
    all
}

#[test]
fn adds_removes_and_lists_and_keeps_them_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    assert!(s.is_empty());
    assert!(s
        .add("Bob@Example.TEST", "*", &Reason::Manual, None, 100)
        .unwrap());
    assert!(!s
        .add("bob@example.test", "*", &Reason::Complaint, None, 200)
        .unwrap());
    assert!(s
        .add(
            "bob@example.test",
            "Acme.test",
            &Reason::Unsubscribe,
            Some("link"),
            300
        )
        .unwrap());
    let r = s
        .add_many(
            ["c@x.test", "d@x.test", "C@X.TEST"],
            "acme.test",
            &Reason::Import,
            None,
            400,
        )
        .unwrap();
    assert_eq!(
        r,
        Added {
            added: 2,
            present: 1
        }
    );
    assert_eq!(s.len(), 4);

    let s = open(dir.path());
    assert_eq!(
        sorted(&s),
        [
            "bob@example.test * manual 100",
            "bob@example.test acme.test unsubscribe 300",
            "c@x.test acme.test import 400",
            "d@x.test acme.test import 400",
        ]
    );
    let e = s.is_suppressed("BOB@example.test", "ACME.test").unwrap();
    assert_eq!((e.domain, e.detail), ("acme.test", Some("link")));
    assert!(s.is_suppressed("c@x.test", "other.test").is_none());
    assert_eq!(s.load_report().records, 4);

    let mut s = s;
    assert_eq!(s.remove("d@x.test", None, 500).unwrap(), ["acme.test"]);
    assert!(s.remove("d@x.test", None, 500).unwrap().is_empty());
    assert_eq!(s.remove("BOB@example.test", Some("*"), 500).unwrap(), ["*"]);
    assert!(s.is_suppressed("bob@example.test", "other.test").is_none());
    assert!(s.is_suppressed("bob@example.test", "acme.test").is_some());
    let s = open(dir.path());
    assert_eq!(s.len(), 2);
}

#[test]
fn invalid_input_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let err = s
        .add_many(
            ["a@x.test", "nobody", "b@x.test"],
            "*",
            &Reason::Manual,
            None,
            1,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"nobody\" is not a valid address: no @ in the address"
    );
    let err = s
        .add("a@x.test", "localhost", &Reason::Manual, None, 1)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("\"localhost\" is not a valid sending domain"),
        "{err}"
    );
    assert!(s.is_empty());
    assert!(!journal(dir.path(), 0).exists());
}

#[test]
fn free_text_cannot_break_a_journal_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let reason = Reason::Other("x\ty".into());
    s.add("a@x.test", "*", &reason, Some("line\nbreak\r\tx"), 1)
        .unwrap();
    let s = open(dir.path());
    let e = s.is_suppressed("a@x.test", "any.test").unwrap();
    assert_eq!(e.reason.as_str(), "x y");
    assert_eq!(e.detail, Some("line break  x"));
    assert_eq!(s.load_report().bad_lines, 0);
}

#[test]
fn a_handle_sees_what_another_appended_after_it_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = open(dir.path());
    assert!(!daemon.refresh().unwrap(), "nothing yet");
    let mut cli = open(dir.path());
    cli.add("a@x.test", "*", &Reason::Manual, None, 1).unwrap();
    assert!(daemon.is_suppressed("a@x.test", "s.test").is_none());
    assert!(daemon.refresh().unwrap());
    assert!(daemon.is_suppressed("a@x.test", "s.test").is_some());
    assert!(!daemon.refresh().unwrap(), "no change, no work");
    cli.remove("a@x.test", None, 2).unwrap();
    cli.add("b@x.test", "*", &Reason::Manual, None, 2).unwrap();
    assert!(daemon.refresh().unwrap());
    assert!(daemon.is_suppressed("a@x.test", "s.test").is_none());
    assert!(daemon.is_suppressed("b@x.test", "s.test").is_some());
    // A writer catches up before deciding: the daemon's own add of b is a no-op.
    let mut other = open(dir.path());
    cli.add("c@x.test", "*", &Reason::Manual, None, 3).unwrap();
    assert!(!other
        .add("c@x.test", "*", &Reason::Manual, None, 3)
        .unwrap());
    assert_eq!(other.len(), 2);
}

#[test]
fn compaction_keeps_everything_and_other_handles_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = open(dir.path());
    let mut b = open(dir.path());
    for i in 0..50 {
        a.add(&format!("u{i}@x.test"), "*", &Reason::Manual, None, i)
            .unwrap();
    }
    a.remove("u7@x.test", None, 60).unwrap();
    let limits = BounceLimits {
        hard_limit: 2,
        soft_limit: 5,
        window: Duration::from_secs(1000),
    };
    let bounce = Bounce {
        address: "h@x.test",
        sending_domain: "acme.test",
        kind: BounceKind::Hard,
        at: 70,
        detail: None,
    };
    assert_eq!(a.record_bounce(&bounce, &limits).unwrap(), None);
    a.compact().unwrap();
    assert_eq!(a.generation, 1);
    assert!(!journal(dir.path(), 0).exists(), "the old journal is gone");
    let text = std::fs::read_to_string(dir.path().join("suppress/snapshot")).unwrap();
    assert!(text.starts_with("volley-suppress 1 1\n"), "{text}");
    assert_eq!(text.lines().count(), 1 + 49 + 1, "{text}");

    // b loaded before the compaction: it reloads, then writes to the new journal.
    assert!(b.refresh().unwrap());
    assert_eq!(b.len(), 49);
    b.add("late@x.test", "*", &Reason::Manual, None, 80)
        .unwrap();
    assert!(journal(dir.path(), 1).exists());
    // The bounce history survived: a second hard bounce suppresses.
    let second = b
        .record_bounce(&Bounce { at: 90, ..bounce }, &limits)
        .unwrap()
        .unwrap();
    assert_eq!((second.reason, second.since), (Reason::HardBounce, 90));

    let c = open(dir.path());
    assert_eq!(c.len(), 51);
    assert_eq!(sorted(&c), sorted(&b));
    assert!(a.refresh().unwrap());
    assert_eq!(sorted(&a), sorted(&c));
}

#[test]
fn a_crash_between_snapshot_and_journal_removal_replays_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let limits = BounceLimits {
        hard_limit: 2,
        soft_limit: 0,
        window: Duration::from_secs(10),
    };
    let bounce = Bounce {
        address: "h@x.test",
        sending_domain: "acme.test",
        kind: BounceKind::Hard,
        at: 1,
        detail: None,
    };
    s.record_bounce(&bounce, &limits).unwrap();
    let old = std::fs::read(journal(dir.path(), 0)).unwrap();
    s.compact().unwrap();
    // As if the old journal had not been removed yet.
    std::fs::write(journal(dir.path(), 0), old).unwrap();
    let s = open(dir.path());
    assert_eq!(s.history("h@x.test", "acme.test").unwrap().hard, [1]);
}

#[test]
fn bounces_suppress_at_their_limits_per_sending_domain() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let limits = BounceLimits {
        hard_limit: 1,
        soft_limit: 3,
        window: Duration::from_secs(100),
    };
    let soft = |at| Bounce {
        address: "Soft@X.test",
        sending_domain: "acme.test",
        kind: BounceKind::Soft,
        at,
        detail: Some("4.2.2"),
    };
    // Soft bounces at 0 and 50; at 120 the one at 0 has left the window.
    for at in [0, 50, 120] {
        assert_eq!(s.record_bounce(&soft(at), &limits).unwrap(), None, "{at}");
    }
    assert_eq!(
        s.history("soft@x.test", "ACME.test").unwrap().soft,
        [50, 120]
    );
    let e = s.record_bounce(&soft(130), &limits).unwrap().unwrap();
    assert_eq!(
        (e.domain.as_str(), &e.reason, e.since, e.detail.as_deref()),
        ("acme.test", &Reason::SoftBounce, 130, Some("4.2.2"))
    );
    assert!(s.history("soft@x.test", "acme.test").is_none(), "cleared");
    assert!(s.is_suppressed("soft@x.test", "acme.test").is_some());
    assert!(s.is_suppressed("soft@x.test", "beta.test").is_none());
    // Already suppressed: not even recorded.
    let before = std::fs::metadata(journal(dir.path(), 0)).unwrap().len();
    assert_eq!(s.record_bounce(&soft(140), &limits).unwrap(), None);
    assert_eq!(
        std::fs::metadata(journal(dir.path(), 0)).unwrap().len(),
        before
    );

    // One hard bounce is enough with hard_limit 1; only for its sending domain.
    let hard = Bounce {
        address: "hard@x.test",
        sending_domain: "beta.test",
        kind: BounceKind::Hard,
        at: 7,
        detail: Some("5.1.1"),
    };
    let e = s.record_bounce(&hard, &limits).unwrap().unwrap();
    assert_eq!(
        (e.domain.as_str(), &e.reason),
        ("beta.test", &Reason::HardBounce)
    );
    assert!(s.is_suppressed("hard@x.test", "acme.test").is_none());

    // Soft bounces never suppress with soft_limit 0; counts survive a reopen.
    let never = BounceLimits {
        soft_limit: 0,
        ..limits
    };
    for at in 0..5 {
        let b = Bounce {
            address: "n@x.test",
            ..soft(at)
        };
        assert_eq!(s.record_bounce(&b, &never).unwrap(), None);
    }
    let s = open(dir.path());
    assert_eq!(s.history("n@x.test", "acme.test").unwrap().soft.len(), 5);
    assert_eq!(s.len(), 2);
}

#[test]
fn a_torn_last_record_is_ignored_reported_and_cut_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.add_many(["a@x.test", "b@x.test"], "*", &Reason::Manual, None, 1)
        .unwrap();
    drop(s);
    // A writer killed in the middle of its append; and a line damaged on disk.
    let path = journal(dir.path(), 0);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"garbage\nA\t2\t*\tc@x.test\tmanual\t\nA\t3\t*\td@x.t")
        .unwrap();
    drop(f);

    let mut s = open(dir.path());
    assert_eq!(
        s.load_report(),
        &LoadReport {
            records: 3,
            bad_lines: 1,
            torn_bytes: 11,
        }
    );
    assert_eq!(s.len(), 3, "a, b and c, not the torn d");
    assert!(s.is_suppressed("d@x.t", "s.test").is_none());
    // A reader that refreshes does not take the fragment either.
    assert!(!s.refresh().unwrap());
    s.add("e@x.test", "*", &Reason::Manual, None, 4).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.ends_with("c@x.test\tmanual\t\nA\t4\t*\te@x.test\tmanual\t\n"),
        "{text:?}"
    );
    let s = open(dir.path());
    assert_eq!(s.load_report().torn_bytes, 0);
    assert_eq!(s.len(), 4);
}

#[test]
fn concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut s = open(&root);
                for i in 0..100 {
                    s.add(&format!("t{t}-{i}@x.test"), "*", &Reason::Manual, None, i)
                        .unwrap();
                    if i == 50 && t == 0 {
                        s.compact().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.len(), 400);
    assert_eq!(s.load_report().bad_lines, 0);
}

#[test]
fn an_unknown_snapshot_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("suppress")).unwrap();
    std::fs::write(
        dir.path().join("suppress/snapshot"),
        "volley-suppress 9 3\n",
    )
    .unwrap();
    let err = SuppressionStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("format version \"9\""), "{err}");
}

#[test]
fn lookups_allocate_nothing_for_long_and_short_ascii_addresses() {
    // Not a measurement: exercises the stack path at its bounds.
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let long = format!("{}@{}.test", "a".repeat(64), "b".repeat(63));
    s.add(&long, "*", &Reason::Manual, None, 1).unwrap();
    assert!(s.is_suppressed(&long.to_uppercase(), "x.test").is_some());
    let too_long = format!("A{}", "b".repeat(400));
    assert!(s.is_suppressed(&too_long, "x.test").is_none());
}

mod arbitrary_files {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever bytes the journal holds, opening skips what it cannot read and
        /// keeps every valid record before and after; a snapshot is read or refused.
        #[test]
        fn any_journal_or_snapshot_bytes_load_without_panicking(
            junk in proptest::collection::vec(any::<u8>(), 0..300),
            lines in proptest::collection::vec("[ABR\t0-9a-z@.*\n]{0,40}", 0..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let sdir = dir.path().join("suppress");
            std::fs::create_dir_all(&sdir).unwrap();
            let mut bytes = b"A\t1\t*\tfirst@x.test\tmanual\t\n".to_vec();
            bytes.extend_from_slice(&junk);
            bytes.extend_from_slice(lines.concat().as_bytes());
            bytes.extend_from_slice(b"\nA\t2\t*\tlast@x.test\tmanual\t\n");
            std::fs::write(sdir.join("journal.0"), &bytes).unwrap();
            let s = SuppressionStore::open(dir.path()).unwrap();
            prop_assert!(s.is_suppressed("first@x.test", "a.test").is_some());
            prop_assert!(s.is_suppressed("last@x.test", "a.test").is_some());

            let mut snapshot = b"volley-suppress 1 0\n".to_vec();
            snapshot.extend_from_slice(&junk);
            std::fs::write(sdir.join("snapshot"), &snapshot).unwrap();
            let _ = SuppressionStore::open(dir.path());
            std::fs::write(sdir.join("snapshot"), &junk).unwrap();
            let _ = SuppressionStore::open(dir.path());
        }
    }
}

#[test]
fn changes_travel_between_lists_once() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = SuppressionStore::open(a_dir.path()).unwrap();
    let mut b = SuppressionStore::open(b_dir.path()).unwrap();
    a.add(
        "Ann@X.test",
        "acme.test",
        &Reason::Unsubscribe,
        Some("one-click"),
        10,
    )
    .unwrap();
    a.add("bob@x.test", "*", &Reason::Manual, None, 11).unwrap();
    a.remove("bob@x.test", Some("*"), 12).unwrap();
    let changes = a.take_changes();
    let ops: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c.op.as_str(), c.address.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            ("add", "ann@x.test"),
            ("add", "bob@x.test"),
            ("remove", "bob@x.test")
        ]
    );
    assert!(a.take_changes().is_empty());
    // Applied elsewhere: the same entries, not queued to travel again; a
    // second time changes nothing.
    assert_eq!(b.apply_changes(&changes).unwrap(), 3);
    assert!(b.take_changes().is_empty());
    let ann = b.is_suppressed("ann@x.test", "acme.test").unwrap();
    assert_eq!(
        (ann.reason, ann.since, ann.detail),
        (&Reason::Unsubscribe, 10, Some("one-click"))
    );
    assert!(b.is_suppressed("bob@x.test", "acme.test").is_none());
    assert_eq!(
        b.apply_changes(&changes).unwrap(),
        2,
        "bob is added and lifted again"
    );
    // A bad change is skipped; the others apply.
    let mut bad = changes[0].clone();
    bad.address = "not an address".into();
    let mut good = changes[0].clone();
    good.address = "cy@x.test".into();
    assert_eq!(b.apply_changes(&[bad, good]).unwrap(), 1);
    // Survives a reopen (written to the journal).
    let b = SuppressionStore::open(b_dir.path()).unwrap();
    assert!(b.is_suppressed("cy@x.test", "acme.test").is_some());
}
