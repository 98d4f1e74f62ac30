//! A delivery fixture: a temporary spool and config pointed at a test dnsmasq,
//! batches written with the queue API, and the engine run in-process.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use volley_conf::Config;
use volley_engine::delivery::feed::SpoolFeed;
use volley_engine::{Engine, RunReport};
use volley_merge::source::{MessageSource, StaticMessage};
use volley_queue::{BatchBuilder, BatchMeta, MappedBatch, Spool, State};

use super::dnsmasq::DnsMasq;

/// A message with the lines SMTP must treat with care: leading dots, a lone dot,
/// bare LF line ends.
pub const MESSAGE: &[u8] =
    b"From: sender@volley.test\nSubject: hello\n\n.leading dot\n.\nbare LF line\r\nlast line";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl Fixture {
    pub fn new(dns: &DnsMasq, smtp_port: u16) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.spool.dir = dir.path().join("spool");
        config.dns.nameservers = vec![dns.addr];
        config.dns.timeout = Duration::from_secs(2);
        config.delivery.smtp_port = smtp_port;
        config.delivery.helo_name = "volley.test".into();
        config.delivery.log = dir.path().join("delivery.jsonl");
        config.delivery.connect_timeout = Duration::from_secs(2);
        config.retry.intervals = vec![Duration::from_secs(1)];
        config.site.connect_backoff = Duration::from_millis(50);
        config.site.connect_backoff_max = Duration::from_millis(200);
        Fixture { dir, config }
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.config.spool.dir.clone()
    }

    /// Writes one batch per list of addresses (campaign 1, batch ids from 0).
    pub fn queue(&self, batches: &[Vec<String>]) -> Vec<PathBuf> {
        let spool = open_spool(&self.spool_dir());
        let files: Vec<Vec<u8>> = batches
            .iter()
            .enumerate()
            .map(|(i, addrs)| {
                let meta = BatchMeta {
                    batch_id: i as u64,
                    campaign_id: 1,
                    content_hash: [0; 32],
                    created_at: now(),
                };
                let mut b = BatchBuilder::new(meta, &["name"]).unwrap();
                for a in addrs {
                    b.push(a, &["x"]).unwrap();
                }
                b.finish().unwrap()
            })
            .collect();
        spool
            .write_batches(files.iter().map(Vec::as_slice))
            .unwrap()
    }

    /// Writes one sealed relay batch holding one received message per list of
    /// addresses (`content` for each), as the listener does.
    #[allow(dead_code)] // used by some of the test binaries sharing this module
    pub fn queue_relayed(&self, messages: &[Vec<String>], content: &[u8]) -> PathBuf {
        let spool = open_spool(&self.spool_dir());
        let id = volley_queue::ids::INBOUND_ID_BASE + 1;
        let mut batch =
            volley_queue::relay::OpenBatch::create(&spool.open_dir(), None, id, 1000, &[], now())
                .unwrap();
        for rcpts in messages {
            let split: Vec<(&str, &str)> = rcpts
                .iter()
                .map(|a| a.rsplit_once('@').map(|(l, d)| (d, l)).unwrap())
                .collect();
            let list: Vec<volley_queue::relay::RelayRecipient<'_, &[u8]>> =
                split.iter().map(|&(d, l)| (d, l, &[][..])).collect();
            batch.append("app@src.test", &list, content);
        }
        batch.commit().unwrap();
        batch.seal(&spool.active_dir()).unwrap().unwrap()
    }

    pub fn engine(&self) -> Engine {
        self.engine_with(Arc::new(StaticMessage {
            from: "bounces@volley.test".into(),
            message: Bytes::from_static(MESSAGE),
        }))
    }

    /// An engine whose messages come from `source`.
    pub fn engine_with(&self, source: Arc<dyn MessageSource>) -> Engine {
        let spool = open_spool(&self.spool_dir());
        let feed = Arc::new(SpoolFeed::new(spool));
        Engine::new(self.config.clone(), feed, source, None).unwrap()
    }

    pub fn run_once(&self) -> RunReport {
        let engine = self.engine();
        runtime().block_on(engine.run_once()).unwrap()
    }

    pub fn log(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("delivery.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn log_for(&self, recipient: &str) -> Vec<serde_json::Value> {
        self.log()
            .into_iter()
            .filter(|e| e["recipient"] == recipient)
            .collect()
    }
}

/// Opens the spool for writing. Its lock is an flock, and a child process that
/// another test forks holds a copy of every descriptor until it execs: a lock
/// just released can look held for that moment, so a busy lock is tried again
/// for a few seconds.
pub fn open_spool(dir: &Path) -> Spool {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Spool::open(dir) {
            Err(volley_queue::QueueError::Locked { .. }) if std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

pub fn addrs(domain: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i}@{domain}")).collect()
}

pub fn states(path: &Path) -> Vec<State> {
    let b = MappedBatch::open(path).unwrap();
    (0..b.len()).map(|i| b.slot(i).unwrap().state).collect()
}

/// The body as the sink received it must be the message with CRLF line ends and
/// dots intact (the sink removes the transparency dots).
pub fn expected_body() -> Vec<u8> {
    let text = String::from_utf8_lossy(MESSAGE)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    format!("{text}\r\n").into_bytes()
}
