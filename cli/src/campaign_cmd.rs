//! `volley campaign list|show|suspend|resume|cancel|recipients`: a thin client
//! of the control plane's API, with tables (or `--json`).

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use volley_conf::Config;

use crate::api_client::{base_url, token, ApiClient};
use crate::table;

/// Where the API is and how to call it.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The API's base URL (default: http:// + `[control] listen`).
    #[arg(long, value_name = "URL", global = true)]
    pub api: Option<String>,
    /// API token (default: `$VOLLEY_TOKEN`, else `[control] token_file`).
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<String>,
    /// JSON as the API answers it, instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `volley campaign …`
#[derive(Debug, Args)]
pub struct CampaignArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: CampaignCommand,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Campaigns, newest first.
    List {
        /// Only those in this state (scheduled, queued, sending, suspended,
        /// completed, cancelled).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Only those with this tag.
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
    },
    /// Submit a campaign: the list is uploaded (streamed), then the campaign
    /// made from the template; prints its id.
    ///
    /// Example: volley campaign submit --template news.toml --recipients list.csv --tag news
    Submit {
        /// Campaign template (TOML, as for `volley send`).
        #[arg(long, value_name = "FILE")]
        template: std::path::PathBuf,
        /// Recipients: CSV with a header row and an `email` column.
        #[arg(long, value_name = "FILE.csv")]
        recipients: std::path::PathBuf,
        /// Start at this RFC 3339 time (default: now).
        #[arg(long, value_name = "TIME")]
        start_at: Option<String>,
        /// Unsent recipients expire at this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        stop_at: Option<String>,
        /// Where the summary goes when it completes (repeat for more).
        #[arg(long, value_name = "ADDR")]
        notify: Vec<String>,
        /// Tags (repeat for more).
        #[arg(long, value_name = "TAG")]
        tag: Vec<String>,
    },
    /// One campaign: its counts and per-domain table.
    Show {
        /// Campaign id.
        id: String,
        /// Print a progress line every second until the campaign completes
        /// (or is cancelled), then the table.
        #[arg(long)]
        follow: bool,
    },
    /// Stop new transactions of a campaign (those in flight finish).
    Suspend {
        /// Campaign id.
        id: String,
    },
    /// Continue a suspended campaign where it stopped.
    Resume {
        /// Campaign id.
        id: String,
    },
    /// Finalise every unsent recipient of a campaign as cancelled.
    Cancel {
        /// Campaign id.
        id: String,
    },
    /// The per-recipient table: address, status, attempts, last reply.
    Recipients {
        /// Campaign id.
        id: String,
        /// Only recipients in this status (pending, in_flight, deferred,
        /// delivered, bounced, expired, suppressed, cancelled).
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
    },
}

fn count(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

const COUNTS: [&str; 8] = [
    "recipients",
    "pending",
    "delivered",
    "deferred",
    "bounced",
    "expired",
    "suppressed",
    "cancelled",
];

fn campaign_rows(campaigns: &[Value]) -> String {
    let mut header = vec!["id", "state"];
    header.extend(COUNTS);
    header.push("msgs/s");
    let rows: Vec<Vec<String>> = campaigns
        .iter()
        .map(|c| {
            let mut row = vec![text(c, "id"), text(c, "state")];
            row.extend(COUNTS.iter().map(|k| text(c, k)));
            row.push(text(c, "msgs_per_s"));
            row
        })
        .collect();
    table::render(&header, &rows)
}

fn show(c: &Value) -> String {
    let mut out = campaign_rows(std::slice::from_ref(c));
    for key in [
        "created_at",
        "start_at",
        "started_at",
        "completed_at",
        "stop_at",
        "eta_s",
        "rejected_rows",
        "unsubscribed",
        "complained",
        "clicked",
        "opened",
        "replied",
        "acknowledged",
    ] {
        out.push_str(&format!("{key}: {}\n", text(c, key)));
    }
    let domains = c
        .get("domains")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !domains.is_empty() {
        out.push('\n');
        let mut header = vec!["domain"];
        header.extend(COUNTS);
        let rows: Vec<Vec<String>> = domains
            .iter()
            .map(|d| {
                let mut row = vec![text(d, "domain")];
                row.extend(COUNTS.iter().map(|k| text(d, k)));
                row
            })
            .collect();
        out.push_str(&table::render(&header, &rows));
    }
    out
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", percent(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every page of a list answer: the items under `key`, following `next_cursor`.
async fn all_pages(
    client: &ApiClient,
    path: &str,
    pairs: &[(&str, Option<&str>)],
    key: &str,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut all: Vec<(&str, Option<&str>)> = pairs.to_vec();
        all.push(("cursor", cursor.as_deref()));
        all.push(("limit", Some("1000")));
        let page = client.get(&format!("{path}{}", query(&all))).await?;
        out.extend(
            page.get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(out),
        }
    }
}

/// Runs `volley campaign …`.
pub fn run(args: CampaignArgs, config_path: Option<&Path>) -> Result<String> {
    let config = Config::discover(config_path)?;
    let client = ApiClient::new(
        base_url(args.api.api.as_deref(), &config)?,
        token(args.api.token.as_deref(), &config)?,
    )?;
    let json = args.api.json;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let pretty =
            |v: &Value| -> Result<String> { Ok(format!("{}\n", serde_json::to_string_pretty(v)?)) };
        match args.command {
            CampaignCommand::List { state, tag } => {
                let list = all_pages(
                    &client,
                    "/v1/campaigns",
                    &[("state", state.as_deref()), ("tag", tag.as_deref())],
                    "campaigns",
                )
                .await?;
                if json {
                    return pretty(&Value::Array(list));
                }
                Ok(campaign_rows(&list))
            }
            CampaignCommand::Submit { template, recipients, start_at, stop_at, notify, tag } => {
                let spec = volley_merge::TemplateSpec::load(&template)
                    .with_context(|| format!("template {}", template.display()))?;
                let up = client.post_file("/v1/uploads", &recipients).await?;
                let body = serde_json::json!({
                    "template": serde_json::to_value(&spec)?,
                    "upload": up["id"],
                    "start_at": start_at,
                    "stop_at": stop_at,
                    "notify": notify,
                    "tags": tag,
                });
                let c = client.post("/v1/campaigns", &body).await?;
                if json {
                    return pretty(&c);
                }
                eprintln!("volley: campaign {} {} (volley campaign show {} --follow)", text(&c, "id"), text(&c, "state"), text(&c, "id"));
                Ok(format!("{}\n", text(&c, "id")))
            }
            CampaignCommand::Show { id, follow } => {
                let path = format!("/v1/campaigns/{}", percent(&id));
                let mut c = client.get(&path).await?;
                while follow && c["completed_at"].is_null() {
                    let done = count(&c, "delivered") + count(&c, "bounced") + count(&c, "expired") + count(&c, "suppressed") + count(&c, "cancelled");
                    eprintln!(
                        "campaign {}: {} {done}/{} final, {} delivered, {} deferred, {} bounced, {} msgs/s, ETA {} s",
                        text(&c, "id"), text(&c, "state"), count(&c, "recipients"), count(&c, "delivered"),
                        count(&c, "deferred"), count(&c, "bounced"), text(&c, "msgs_per_s"), text(&c, "eta_s")
                    );
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    c = client.get(&path).await?;
                }
                if json { pretty(&c) } else { Ok(show(&c)) }
            }
            CampaignCommand::Suspend { id } => act(&client, &id, "suspend", json).await,
            CampaignCommand::Resume { id } => act(&client, &id, "resume", json).await,
            CampaignCommand::Cancel { id } => act(&client, &id, "cancel", json).await,
            CampaignCommand::Recipients { id, status } => {
                let rows = all_pages(
                    &client,
                    &format!("/v1/campaigns/{}/recipients", percent(&id)),
                    &[("status", status.as_deref())],
                    "recipients",
                )
                .await?;
                if json {
                    return pretty(&Value::Array(rows));
                }
                let keys = [
                    "email", "status", "attempts", "code", "enhanced", "reply", "at",
                ];
                let table_rows: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        keys.iter()
                            .map(|k| text(r, k).escape_debug().to_string())
                            .collect()
                    })
                    .collect();
                Ok(table::render(&keys, &table_rows))
            }
        }
    })
}

async fn act(client: &ApiClient, id: &str, action: &str, json: bool) -> Result<String> {
    let c = client
        .post(
            &format!("/v1/campaigns/{}/{action}", percent(id)),
            &Value::Null,
        )
        .await?;
    if json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&c)?));
    }
    Ok(format!(
        "campaign {}: {}\n",
        text(&c, "id"),
        text(&c, "state")
    ))
}
