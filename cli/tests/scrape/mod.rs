//! Scraping `/metrics` with Python `prometheus_client`'s text parser
//! (`scrape.py` beside this file), for the tests that check metrics.
//!
//! Declared by the test binaries that need it (`mod scrape;`), each using a
//! subset, hence the allow.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support;

/// Whether the parser is there; says why not (a skip) otherwise.
pub fn available(test: &str) -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        support::skip(
            test,
            "Python's prometheus_client is not installed (scripts/test.sh installs python3-prometheus-client)",
        );
    }
    ok
}

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub family_type: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Scrapes `addr`'s `/metrics` with the Python parser; panics with the
/// parser's words when it refuses the text.
pub fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scrape/scrape.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(format!("http://{addr}/metrics"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the scrape failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the scraper's JSON");
    parsed
        .iter()
        .map(|s| Sample {
            family_type: s["type"].as_str().unwrap_or_default().to_owned(),
            name: s["name"].as_str().unwrap_or_default().to_owned(),
            labels: s["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

pub fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}
