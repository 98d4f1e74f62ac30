//! `volley bench queue`: how batch size trades files, bytes and scan time.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use volley_conf::Config;
use volley_queue::{BatchBuilder, BatchMeta, Spool};

use crate::synth::{Synth, FIELDS};
use crate::table;

/// `volley bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Write N synthetic recipients (5 merge fields) at batch size B into a spool,
    /// then run the startup recovery scan over it. Prints a table, then one JSON
    /// line: recipients, batch_size, files, bytes_on_disk, write_s, scan_s.
    ///
    /// Example: volley bench queue --recipients 1000000 --batch-size 100
    Queue {
        /// Recipients to write.
        #[arg(long, default_value_t = 1_000_000)]
        recipients: u64,
        /// Recipients per batch file (default: `[queue] batch_size` from the
        /// configuration, itself 100 by default).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: Option<u32>,
        /// Spool directory to write into (must hold no batches; kept afterwards).
        /// Default: a temporary directory, removed afterwards.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Drop the kernel's page cache before the scan (needs root), so the scan
        /// reads from disk as after a reboot.
        #[arg(long)]
        cold: bool,
    },
}

/// Runs a `bench` subcommand.
pub fn run(cmd: BenchCommand, config: Option<&Path>) -> Result<String> {
    match cmd {
        BenchCommand::Queue {
            recipients,
            batch_size,
            dir,
            cold,
        } => {
            let batch_size = match batch_size {
                Some(b) => b,
                None => Config::discover(config)?.queue.batch_size,
            };
            queue(recipients, batch_size, dir, cold)
        }
    }
}

/// Batch files are committed in groups of about this many bytes (one syncfs each).
const GROUP_BYTES: usize = 64 << 20;

fn queue(n: u64, batch_size: u32, dir: Option<PathBuf>, cold: bool) -> Result<String> {
    let mut out = String::new();
    let (root, temporary) = match dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("volley-bench-queue-{}", std::process::id())),
            true,
        ),
    };
    let spool = Spool::open(&root)?;
    if !spool.active_files()?.is_empty() {
        bail!(
            "{} already holds batches: give --dir an empty or new directory",
            spool.active_dir().display()
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let campaign_id = 1;
    let meta = |batch_id| BatchMeta {
        batch_id,
        campaign_id,
        content_hash: [0; 32],
        created_at: now,
    };

    let started = Instant::now();
    let mut synth = Synth::new(0x5eed);
    let domains = synth.domain_counts(n);
    let mut group: Vec<Vec<u8>> = Vec::new();
    let mut group_bytes = 0;
    let mut batch_id = 0;
    let mut builder = BatchBuilder::new(meta(batch_id), &FIELDS)?;
    let mut i = 0u64;
    let flush = |group: &mut Vec<Vec<u8>>, bytes: &mut usize| -> Result<()> {
        spool.write_batches(group.iter().map(Vec::as_slice))?;
        group.clear();
        *bytes = 0;
        Ok(())
    };
    for (domain, count) in &domains {
        for _ in 0..*count {
            let (address, values) = synth.recipient(i, domain);
            builder.push(&address, &values)?;
            i += 1;
            if builder.len() == batch_size as usize {
                let file = builder.finish()?;
                group_bytes += file.len();
                group.push(file);
                batch_id += 1;
                builder = BatchBuilder::new(meta(batch_id), &FIELDS)?;
                if group_bytes >= GROUP_BYTES {
                    flush(&mut group, &mut group_bytes)?;
                }
            }
        }
    }
    if !builder.is_empty() {
        group.push(builder.finish()?);
    }
    flush(&mut group, &mut group_bytes)?;
    let write_s = started.elapsed().as_secs_f64();
    drop(spool);

    let mut cache = "warm";
    if cold {
        std::fs::write("/proc/sys/vm/drop_caches", "3")
            .context("--cold: cannot drop the page cache (needs root)")?;
        cache = "cold";
    }
    let started = Instant::now();
    let spool = Spool::open(&root)?;
    let recovery = spool.recover()?;
    let scan_s = started.elapsed().as_secs_f64();

    let totals = recovery.totals();
    if totals.pending != n || !recovery.quarantined.is_empty() {
        bail!(
            "scan found {} pending recipients and {} corrupt files, expected {n} and 0",
            totals.pending,
            recovery.quarantined.len()
        );
    }
    let files = recovery.batches.len() as u64;
    let bytes: u64 = recovery.batches.iter().map(|b| b.bytes).sum();
    let mut bytes_on_disk = 0u64;
    for b in &recovery.batches {
        let meta =
            std::fs::metadata(&b.path).with_context(|| format!("stat {}", b.path.display()))?;
        bytes_on_disk += meta.blocks() * 512;
    }
    if temporary {
        drop(spool);
        std::fs::remove_dir_all(&root).with_context(|| format!("remove {}", root.display()))?;
    }

    let mb = |b: u64| format!("{:.1}", b as f64 / 1e6);
    let rows = vec![vec![
        n.to_string(),
        batch_size.to_string(),
        files.to_string(),
        mb(bytes_on_disk),
        mb(bytes),
        format!("{:.1}", bytes as f64 / n.max(1) as f64),
        format!("{write_s:.2}"),
        format!("{scan_s:.3}"),
        format!("{:.0}", n as f64 / scan_s),
    ]];
    let header = [
        "recipients",
        "batch_size",
        "files",
        "MB on disk",
        "MB (apparent)",
        "B/recipient",
        "write_s",
        &format!("scan_s ({cache})"),
        "scanned/s",
    ];
    write!(out, "{}", table::render(&header, &rows))?;
    let json = serde_json::json!({
        "recipients": n,
        "batch_size": batch_size,
        "files": files,
        "bytes_on_disk": bytes_on_disk,
        "bytes": bytes,
        "write_s": write_s,
        "scan_s": scan_s,
        "scan_cache": cache,
    });
    writeln!(out, "{json}")?;
    Ok(out)
}
