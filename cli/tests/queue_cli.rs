//! The `volley` binary end to end: bench, summary, show, recover, config errors.

mod common;

use common::{stderr, stdout, volley};
use std::path::Path;
use std::process::Output;

fn json_last_line(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?}: {e}\n{text}"))
}

/// Fills a spool with `n` synthetic recipients through `volley bench queue`.
fn bench_into(dir: &Path, n: u64, batch: u32) -> serde_json::Value {
    let out = volley(&[
        "bench",
        "queue",
        "--recipients",
        &n.to_string(),
        "--batch-size",
        &batch.to_string(),
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    json_last_line(&out)
}

#[test]
fn bench_queue_prints_a_table_then_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let json = bench_into(&spool, 2_345, 100);
    assert_eq!(json["recipients"], 2_345);
    assert_eq!(json["batch_size"], 100);
    assert_eq!(json["files"], 24);
    for key in ["bytes_on_disk", "write_s", "scan_s"] {
        assert!(json[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {json}");
    }
    let files = std::fs::read_dir(spool.join("active")).unwrap().count();
    assert_eq!(files, 24, "kept in --dir");
    // Refuses to mix with an existing spool's batches.
    let again = volley(&[
        "bench",
        "queue",
        "--recipients",
        "10",
        "--dir",
        spool.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already holds batches"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn bench_queue_batch_size_comes_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("volley.toml");
    std::fs::write(&conf, "[queue]\nbatch_size = 7\n").unwrap();
    let out = volley(&[
        "-C",
        conf.to_str().unwrap(),
        "bench",
        "queue",
        "--recipients",
        "50",
        "--dir",
        dir.path().join("s").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = json_last_line(&out);
    assert_eq!(
        (json["batch_size"].as_u64(), json["files"].as_u64()),
        (Some(7), Some(8))
    );
}

#[test]
fn summary_counts_every_recipient_by_domain() {
    let dir = tempfile::tempdir().unwrap();
    bench_into(dir.path(), 1_000, 100);
    let spool = dir.path().to_str().unwrap();
    let out = volley(&["queue", "summary", "--spool", spool, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = json_last_line(&out);
    assert_eq!(json["total"]["pending"], 1_000);
    assert_eq!(json["batches"], 10);
    let domains = json["domains"].as_object().unwrap();
    let sum: u64 = domains
        .values()
        .map(|c| c["pending"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 1_000);
    assert!(domains.contains_key("gmail.com"));

    let table = volley(&["queue", "summary", "--spool", spool]);
    let text = stdout(&table);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("domain") && first.contains("pending") && first.contains("bounced"),
        "{text}"
    );
    assert!(
        text.lines().nth(1).unwrap().starts_with("gmail.com"),
        "largest domain first: {text}"
    );
    assert!(
        text.contains("TOTAL") && text.contains("10 batches"),
        "{text}"
    );
}

#[test]
fn show_prints_header_and_each_recipient() {
    let dir = tempfile::tempdir().unwrap();
    bench_into(dir.path(), 30, 10);
    let spool = dir.path().to_str().unwrap();
    let out = volley(&[
        "queue",
        "show",
        "0000000000000001-0000000000000002",
        "--spool",
        spool,
        "--values",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("batch:        2"), "{text}");
    assert!(
        text.contains("fields:       first_name, last_name, city, company, customer_id"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(" pending ")).count(),
        10,
        "{text}"
    );

    let out = volley(&[
        "queue",
        "show",
        "0000000000000001-0000000000000000.vqb",
        "--spool",
        spool,
        "--json",
    ]);
    let json = json_last_line(&out);
    assert_eq!(json["recipients"].as_array().unwrap().len(), 10);
    assert_eq!(json["recipients"][0]["state"], "pending");

    let missing = volley(&["queue", "show", "nope", "--spool", spool]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no batch \"nope\""),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn recover_quarantines_a_corrupt_batch_and_serves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    bench_into(dir.path(), 300, 100);
    let victim = dir
        .path()
        .join("active/0000000000000001-0000000000000001.vqb");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[200] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let spool = dir.path().to_str().unwrap();

    let summary = volley(&["queue", "summary", "--spool", spool, "--json"]);
    assert!(summary.status.success());
    assert!(
        stderr(&summary).contains("checksum mismatch"),
        "{}",
        stderr(&summary)
    );
    assert_eq!(json_last_line(&summary)["total"]["pending"], 200);

    let out = volley(&["queue", "recover", "--spool", spool]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("2 batches, 200 recipients"), "{text}");
    assert!(
        text.contains("quarantined") && text.contains("checksum mismatch"),
        "{text}"
    );
    assert!(dir
        .path()
        .join("quarantine/0000000000000001-0000000000000001.vqb.reason")
        .exists());
    assert!(!victim.exists());
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("volley.toml");
    std::fs::write(
        &conf,
        "[spool]\ndir = \"/tmp/x\"\n[queue]\nbatch_size = 0\n",
    )
    .unwrap();
    let out = volley(&["-C", conf.to_str().unwrap(), "config", "check"]);
    assert!(!out.status.success());
    let expected = format!(
        "{}:4:14: queue.batch_size: 0 is out of range: allowed 1..=100000",
        conf.display()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));

    std::fs::write(&conf, "[queue]\nsync_intervall = \"1s\"\n").unwrap();
    let out = volley(&["-C", conf.to_str().unwrap(), "queue", "summary"]);
    assert!(
        stderr(&out)
            .contains(":2:1: queue.sync_intervall: unknown key; did you mean `sync_interval`?"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn io_errors_say_what_failed_once() {
    let out = volley(&["queue", "summary", "--spool", "/nonexistent/spool"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("/nonexistent/spool/active"), "{err}");
}
