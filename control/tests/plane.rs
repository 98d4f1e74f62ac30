//! The plane's partitioning against a real store (SQLite) and spool: a cut a
//! crash interrupted is finished with the same batches, dropping exactly what
//! the first cut dropped as suppressed.

use std::sync::Arc;

use volley_control::plane::submit::{Recipients, Submission};
use volley_control::plane::{Plane, Settings, StoredTemplate, Templates};
use volley_control::store::Store;
use volley_control::suppress::{Reason, SharedList, SuppressionStore};
use volley_queue::{BatchView, Spool};

/// Templates as the binary stores them are the merge crate's business; this
/// one only names a fixed content hash and sending domain.
struct FixedTemplate;

impl Templates for FixedTemplate {
    fn store(&self, _: &serde_json::Value, _: &[String]) -> Result<StoredTemplate, String> {
        Ok(StoredTemplate {
            content_hash: [7; 32],
            sending_domain: "acme.test".into(),
            links: Vec::new(),
        })
    }
}

fn queued(spool: &Spool) -> Vec<String> {
    let mut out = Vec::new();
    for path in spool.active_files().unwrap() {
        let bytes = std::fs::read(path).unwrap();
        out.extend(
            BatchView::parse(&bytes)
                .unwrap()
                .recipients()
                .map(|r| r.address()),
        );
    }
    out
}

#[test]
fn a_resumed_partitioning_drops_exactly_what_the_first_one_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let spool = Spool::open(&root).unwrap();
    let csv = dir.path().join("list.csv");
    let rows: String = (0..10).map(|i| format!("u{i}@x.test\n")).collect();
    std::fs::write(&csv, format!("email\n{rows}")).unwrap();
    let mut list = SuppressionStore::open(&root).unwrap();
    list.add("U3@x.test", "*", &Reason::Manual, None, 1)
        .unwrap();
    list.add("u8@x.test", "acme.test", &Reason::Manual, None, 1)
        .unwrap();
    let list = Arc::new(SharedList::new(list));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime
        .block_on(Store::open(&volley_control::store::sqlite_url(&root)))
        .unwrap();
    let plane = Plane::new(
        store.clone(),
        spool.try_clone().unwrap(),
        Arc::new(FixedTemplate),
        Arc::clone(&list),
        Settings {
            batch_size: 3,
            max_json_recipients: 10,
            fleet: false,
        },
    );
    let sub = Submission {
        template: serde_json::json!({}),
        recipients: Recipients::File(csv.clone()),
        start_at: None,
        stop_at: None,
        batch_size: None,
        notify: Vec::new(),
        tags: Vec::new(),
        idempotency: None,
        wait: true,
    };
    let c = runtime.block_on(plane.submit(None, sub)).unwrap().campaign;
    assert_eq!(
        (c.partitioned, c.recipients, c.suppressed, c.batches),
        (true, 8, 2, 3)
    );
    let first = queued(&spool);
    assert!(!first.iter().any(|a| a == "u3@x.test" || a == "u8@x.test"));

    // A crash after the first batch, before the store's transaction: the
    // other files missing, the campaign unpartitioned. Meanwhile the list
    // changed: u3 lifted, u5 added.
    for path in &spool.active_files().unwrap()[1..] {
        std::fs::remove_file(path).unwrap();
    }
    runtime
        .block_on(store.debug_execute(&format!(
            "UPDATE campaigns SET partitioned = 0 WHERE id = {}",
            c.id
        )))
        .unwrap();
    list.write(|l| l.remove("u3@x.test", None, 2)).unwrap();
    list.write(|l| l.add("u5@x.test", "*", &Reason::Manual, None, 2))
        .unwrap();
    assert_eq!(runtime.block_on(plane.resume_partitioning()).unwrap(), 1);
    assert_eq!(
        queued(&spool),
        first,
        "the same cut: nothing lost or doubled"
    );
    let c = runtime.block_on(store.campaign(c.id)).unwrap().unwrap();
    assert_eq!((c.partitioned, c.recipients, c.suppressed), (true, 8, 2));
    let counts = runtime.block_on(store.campaign_counts(c.id)).unwrap();
    assert_eq!((counts.recipients, counts.pending), (8, 8));
}
