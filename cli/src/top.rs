//! `volley top`: a live terminal view of a running daemon or fleet (like
//! KumoMTA's `kcli top`): the queue by destination, the sites being sent to
//! with their rates and deferral percentages, the gateways; refreshed every
//! second from the API (`GET /v1/queue`, `/v1/gateways`) and `/metrics`;
//! `q` quits.
//!
//! The terminal is put in non-canonical mode without echo (rustix's termios,
//! restored on the way out) so that one key press is read without Enter;
//! the screen is redrawn with two ANSI sequences (home, clear). Nothing here
//! is on a hot path, but a TUI crate would be more than this needs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;
use volley_conf::Config;

use crate::api_client::{base_url, token_or_mint, ApiClient};
use crate::table;

/// `volley top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The API's base URL (default: http:// + `[control] listen`).
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// An admin API token (default: $VOLLEY_TOKEN, `[control] token_file`, or
    /// one made in the store for the session and revoked after).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Print one view and exit (no rates: they need two samples).
    #[arg(long)]
    once: bool,
}

/// One site's counters from `/metrics`.
#[derive(Debug, Clone, Default)]
struct SiteCounts {
    connections: f64,
    delivered: f64,
    deferred: f64,
    bounced: f64,
    /// The reply it is paused for, while it is.
    paused: Option<String>,
}

/// What one refresh read.
#[derive(Debug, Default)]
struct Sample {
    at: Option<Instant>,
    queue: Value,
    gateways: Option<Value>,
    sites: BTreeMap<String, SiteCounts>,
    error: Option<String>,
}

/// Runs `volley top`.
pub fn run(args: &TopArgs, config: &Config) -> Result<String> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let base = base_url(args.api.as_deref(), config)?;
    let (secret, minted) = token_or_mint(
        args.token.as_deref(),
        config,
        &runtime,
        "top",
        volley_control::store::tokens::Role::Admin,
    )?;
    let client = ApiClient::new(base.clone(), secret)?;
    let result = if args.once {
        let now = runtime.block_on(sample(&client));
        Ok(render(&base, &Sample::default(), &now))
    } else {
        live(&runtime, &client, &base).map(|()| String::new())
    };
    if let Some(minted) = minted {
        minted.revoke(&runtime);
    }
    result
}

/// Redraws every second until `q` (or Ctrl-C, or the end of input).
fn live(runtime: &tokio::runtime::Runtime, client: &ApiClient, base: &str) -> Result<()> {
    let _raw = RawMode::enter();
    let (keys, pressed) = mpsc::channel::<u8>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut byte = [0u8; 1];
        loop {
            match stdin.read(&mut byte) {
                Ok(1) => {
                    if keys.send(byte[0]).is_err() {
                        return;
                    }
                }
                // End of input: quit.
                _ => {
                    let _ = keys.send(b'q');
                    return;
                }
            }
        }
    });
    let mut out = std::io::stdout();
    let mut before = Sample::default();
    loop {
        let now = runtime.block_on(sample(client));
        let frame = render(base, &before, &now);
        // Home, clear, the frame (CR LF: the terminal is not translating).
        write!(out, "\x1b[H\x1b[2J{}", frame.replace('\n', "\r\n"))?;
        out.flush()?;
        before = now;
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match pressed.recv_timeout(left) {
                Ok(b'q' | b'Q' | 3 | 4) => {
                    write!(out, "\r\n")?;
                    return Ok(());
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }
}

/// The terminal in non-canonical mode without echo, restored when dropped.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawMode(None);
        }
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        raw.local_modes
            .remove(rustix::termios::LocalModes::ICANON | rustix::termios::LocalModes::ECHO);
        raw.special_codes[rustix::termios::SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[rustix::termios::SpecialCodeIndex::VTIME] = 0;
        if rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).is_err()
        {
            return RawMode(None);
        }
        // Hide the cursor while drawing.
        print!("\x1b[?25l");
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
            print!("\x1b[?25h");
            let _ = std::io::stdout().flush();
        }
    }
}

async fn sample(client: &ApiClient) -> Sample {
    let mut s = Sample {
        at: Some(Instant::now()),
        ..Sample::default()
    };
    match client.get("/v1/queue?limit=15").await {
        Ok(q) => s.queue = q,
        Err(e) => s.error = Some(format!("{e:#}")),
    }
    // A daemon without a fleet has no gateways: not an error here.
    s.gateways = client.get("/v1/gateways").await.ok();
    match client.get_text("/metrics").await {
        Ok(text) => s.sites = site_counts(&text),
        Err(e) => s.error = Some(format!("{e:#}")),
    }
    s
}

/// A sample's labels, in order.
type Labels = Vec<(String, String)>;

/// One sample line of the text format: its name, labels and value.
fn parse_line(line: &str) -> Option<(&str, Labels, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head, Vec::new(), value));
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some((name, labels, value))
}

/// Each site's counters in a `/metrics` text.
fn site_counts(text: &str) -> BTreeMap<String, SiteCounts> {
    let mut sites: BTreeMap<String, SiteCounts> = BTreeMap::new();
    for (name, labels, value) in text.lines().filter_map(parse_line) {
        let label = |k: &str| {
            labels
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let Some(site) = label("site") else { continue };
        if site == "none" {
            continue;
        }
        let entry = sites.entry(site.to_owned()).or_default();
        match (name, label("outcome")) {
            ("volley_site_paused", _) => entry.paused = label("reason").map(str::to_owned),
            ("volley_connections", _) => entry.connections = value,
            ("volley_messages_total", Some("delivered")) => entry.delivered = value,
            ("volley_messages_total", Some("deferred")) => entry.deferred = value,
            ("volley_messages_total", Some("bounced")) => entry.bounced = value,
            _ => {}
        }
    }
    sites
}

fn int(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// The view of `now`, with rates against `before` when it has a time.
fn render(base: &str, before: &Sample, now: &Sample) -> String {
    let mut out = String::new();
    let clock = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let _ = writeln!(out, "volley top  {base}  {clock}  (q quits)");
    if let Some(e) = &now.error {
        let _ = writeln!(out, "error: {e}");
    }
    let totals = &now.queue["totals"];
    let _ = writeln!(
        out,
        "queue: {} pending, {} in flight, {} deferred; {} leases held",
        int(&totals["pending"]),
        int(&totals["in_flight"]),
        int(&totals["deferred"]),
        int(&now.queue["leases"])
    );
    if let Some(holds) = now.queue["holds"].as_array().filter(|h| !h.is_empty()) {
        let list: Vec<String> = holds
            .iter()
            .filter_map(|h| {
                h.as_object()?.iter().next().map(|(k, v)| {
                    format!(
                        "{k} {}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    )
                })
            })
            .collect();
        let _ = writeln!(out, "held: {}", list.join(", "));
    }
    let _ = writeln!(out);
    let domains: Vec<Vec<String>> = now.queue["domains"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|d| {
                    vec![
                        d["domain"].as_str().unwrap_or_default().to_owned(),
                        int(&d["pending"]),
                        int(&d["in_flight"]),
                        int(&d["deferred"]),
                        int(&d["delivered"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(out, "DESTINATIONS BY QUEUE DEPTH");
    out.push_str(&table::render(
        &["domain", "pending", "in_flight", "deferred", "delivered"],
        &domains,
    ));
    let _ = writeln!(out);
    let seconds = match (before.at, now.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let mut sites: Vec<(&String, &SiteCounts, f64, String)> = now
        .sites
        .iter()
        .map(|(name, c)| {
            let was = before.sites.get(name).cloned().unwrap_or_default();
            let sent = c.delivered - was.delivered;
            let deferred = c.deferred - was.deferred;
            let tried = sent + deferred + (c.bounced - was.bounced);
            let rate = if seconds > 0.0 { sent / seconds } else { 0.0 };
            let deferral = if tried > 0.0 {
                format!("{:.1}", 100.0 * deferred / tried)
            } else {
                "-".to_owned()
            };
            (name, c, rate, deferral)
        })
        .collect();
    sites.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then(b.1.delivered.total_cmp(&a.1.delivered))
    });
    let rows: Vec<Vec<String>> = sites
        .iter()
        .take(15)
        .map(|(name, c, rate, deferral)| {
            vec![
                (*name).clone(),
                format!("{}", c.connections),
                format!("{rate:.0}"),
                deferral.clone(),
                format!("{}", c.delivered),
                c.paused
                    .as_deref()
                    .map_or_else(String::new, |r| format!("paused: {r}")),
            ]
        })
        .collect();
    let _ = writeln!(out, "SITES (this process's /metrics)");
    out.push_str(&table::render(
        &[
            "site",
            "connections",
            "msgs/s",
            "deferred%",
            "delivered",
            "",
        ],
        &rows,
    ));
    if let Some(list) = now.gateways.as_ref().and_then(|g| g["gateways"].as_array()) {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|g| {
                vec![
                    g["name"].as_str().unwrap_or_default().to_owned(),
                    g["state"].as_str().unwrap_or_default().to_owned(),
                    int(&g["leases"]),
                    int(&g["delivered"]),
                ]
            })
            .collect();
        let _ = writeln!(out);
        let _ = writeln!(out, "GATEWAYS");
        out.push_str(&table::render(
            &["gateway", "state", "leases", "delivered"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines_parse_with_commas_and_escapes_in_labels() {
        let (name, labels, value) = parse_line(
            r#"volley_messages_total{outcome="delivered",site="mx1.a.test,mx2.a.test"} 12"#,
        )
        .unwrap();
        assert_eq!(name, "volley_messages_total");
        assert_eq!(
            labels[1],
            ("site".to_owned(), "mx1.a.test,mx2.a.test".to_owned())
        );
        assert_eq!(value, 12.0);
        let (_, labels, _) = parse_line(r#"x{a="q\"uote",b="z"} 1"#).unwrap();
        assert_eq!(
            labels,
            vec![("a".into(), "q\"uote".into()), ("b".into(), "z".into())]
        );
        assert_eq!(
            parse_line("volley_transactions_in_flight 3").unwrap().2,
            3.0
        );
        assert!(parse_line("# HELP x y").is_none());
        assert!(parse_line(r#"x{a="unterminated} 1"#).is_none());
    }

    #[test]
    fn sites_get_rates_between_samples() {
        let text = |delivered: u32, deferred: u32| {
            format!(
                "volley_messages_total{{outcome=\"delivered\",site=\"mx.a.test\"}} {delivered}\n\
                 volley_messages_total{{outcome=\"deferred\",site=\"mx.a.test\"}} {deferred}\n\
                 volley_connections{{site=\"mx.a.test\"}} 2\n"
            )
        };
        let t0 = Instant::now();
        let before = Sample {
            at: Some(t0),
            sites: site_counts(&text(100, 0)),
            ..Sample::default()
        };
        let now = Sample {
            at: Some(t0 + Duration::from_secs(2)),
            sites: site_counts(&text(300, 50)),
            ..Sample::default()
        };
        let view = render("http://x", &before, &now);
        let line = view.lines().find(|l| l.starts_with("mx.a.test")).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells, ["mx.a.test", "2", "100", "20.0", "300"], "{view}");
    }
}
