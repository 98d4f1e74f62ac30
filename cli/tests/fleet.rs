//! The fleet end to end, on loopback: a private PostgreSQL, `volley control`,
//! three `volley gateway`s sending from distinct source addresses, and a
//! Postfix smtp-sink that keeps every message. A campaign is submitted over
//! the API the way a sender would (`volley campaign submit`), then:
//!
//! - one gateway is killed (`kill -9`) at about 30%: the campaign completes,
//!   every recipient arrives at least once, and the duplicates are no more
//!   than the campaign's `resent_after_failure`; `GET /v1/gateways` shows the
//!   killed one `lost`;
//! - one gateway is stopped (`SIGSTOP`) past its lease and continued: its late
//!   report is refused (`409`), it drops those batches, and the campaign's
//!   duplicates are again bounded by `resent_after_failure`;
//! - one of two control planes is killed, and a gateway restarted, with a
//!   webhook getting every delivery event once;
//! - a suppression added mid-campaign stops every gateway within seconds;
//! - a site's limits hold for the three gateways together;
//! - PostgreSQL is stopped for 20 s mid-campaign: nothing is lost, the
//!   counts add up.
//!
//! Skipped (with a message) without PostgreSQL or smtp-sink.

mod common;
mod endpoint;
mod scrape;
#[path = "../../mta/engine/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use endpoint::{Endpoint, SECRET};
use serde_json::Value;
use support::http::request;
use support::port::{free_port, poll};
use support::postgres::Postgres;
use support::process::ChildGuard;
use support::scripted::Scripted;
use support::smtp_sink::{SinkOptions, SmtpSink, SMTP_SINK};

/// What a test changes of the fleet's configuration.
#[derive(Default)]
struct Options<'a> {
    /// Lines added to each control plane's `[control]` section.
    control_extra: &'a str,
    /// Lines added to each gateway's configuration.
    gateway_extra: &'a str,
    /// Where the gateways' mail goes (default: the fleet's sink).
    via: Option<SocketAddr>,
    /// Each gateway serves `/metrics` (`[gateway] metrics_listen`).
    metrics: bool,
    /// Gateway (1-based) run in this network namespace (`ip netns exec`).
    netns: Option<(usize, &'a str)>,
}

struct Fleet {
    dir: tempfile::TempDir,
    sink: SmtpSink,
    /// The API the test talks to (one of `apis`).
    api: SocketAddr,
    /// Every control plane's API.
    apis: Vec<SocketAddr>,
    admin: String,
    controls: Vec<Option<ChildGuard>>,
    gateways: Vec<Option<ChildGuard>>,
    /// Each gateway's `/metrics`, with [`Options::metrics`].
    metrics: Vec<SocketAddr>,
    /// [`Options::netns`].
    netns: Option<(usize, String)>,
    _pg: Postgres,
}

fn available(test: &str) -> bool {
    if !Postgres::available() {
        support::skip(
            test,
            "PostgreSQL is not installed (scripts/test.sh installs it)",
        );
        return false;
    }
    if !Path::new(SMTP_SINK).exists() {
        support::skip(
            test,
            "smtp-sink is not installed (scripts/test.sh installs it)",
        );
        return false;
    }
    true
}

impl Fleet {
    /// PostgreSQL on 127.0.0.`last`, the control planes and the sink beside
    /// it, gateways on 127.0.0.`last`+1…
    fn start(last: u8, gateways: u8) -> Fleet {
        Fleet::start_with(last, gateways, 1)
    }

    /// [`Fleet::start`] with `controls` control-plane processes on the one
    /// PostgreSQL (each with its own spool), every gateway told of all.
    fn start_with(last: u8, gateways: u8, controls: usize) -> Fleet {
        Fleet::start_custom(last, gateways, controls, Options::default())
    }

    /// [`Fleet::start_with`] with [`Options`].
    fn start_custom(last: u8, gateways: u8, controls: usize, options: Options<'_>) -> Fleet {
        let Options {
            control_extra,
            gateway_extra,
            via,
            metrics,
            netns,
        } = options;
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let pg = Postgres::start(last);
        let sink = SmtpSink::start(ip, SinkOptions::plain());
        let dir = tempfile::tempdir().unwrap();
        let apis: Vec<SocketAddr> = (0..controls)
            .map(|_| SocketAddr::from((ip, free_port(ip))))
            .collect();
        for (k, api) in apis.iter().enumerate() {
            let control = format!(
                "[control]\nlisten = \"{api}\"\ndatabase = \"{db}\"\nlease_ttl = \"5s\"\n{control_extra}\
                 [spool]\ndir = \"{spool}\"\n[queue]\nbatch_size = 100\n",
                db = pg.url(),
                spool = dir.path().join(format!("control{k}")).display(),
            );
            std::fs::write(dir.path().join(control_file(k)), control).unwrap();
        }
        let mut fleet = Fleet {
            sink,
            api: apis[0],
            apis: apis.clone(),
            admin: String::new(),
            controls: (0..controls).map(|_| None).collect(),
            gateways: Vec::new(),
            metrics: Vec::new(),
            netns: netns.map(|(g, ns)| (g, ns.to_owned())),
            _pg: pg,
            dir,
        };
        fleet.admin = fleet.token("ops", "admin");
        let gw_token = fleet.token("gateways", "gateway");
        std::fs::write(fleet.path("gateway.token"), &gw_token).unwrap();
        for k in 0..controls {
            fleet.start_control(k);
        }
        let urls = apis
            .iter()
            .map(|a| format!("\"http://{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        for g in 1..=gateways {
            let source = Ipv4Addr::new(127, 0, 0, last + g);
            let metrics_line = if metrics {
                let addr = SocketAddr::from((source, free_port(source)));
                fleet.metrics.push(addr);
                format!("metrics_listen = \"{addr}\"\n")
            } else {
                String::new()
            };
            let config = format!(
                "[control]\nlisten = \"\"\nlease_ttl = \"5s\"\n[spool]\ndir = \"{spool}\"\n\
                 [delivery]\nhelo_name = \"gw{g}.test\"\nlog = \"{log}\"\nsource_addresses = [\"{source}\"]\n\
                 [retry]\nintervals = [\"1s\"]\n\
                 [gateway]\nname = \"gw{g}\"\ncontrol = [{urls}]\ntoken_file = \"{token}\"\nmax_batches = 8\n{metrics_line}\
                 [[route]]\ndomain = \"*\"\nvia = \"{via}\"\n{gateway_extra}",
                spool = fleet.path(&format!("gw{g}")).display(),
                log = fleet.path(&format!("gw{g}.jsonl")).display(),
                token = fleet.path("gateway.token").display(),
                via = via.unwrap_or_else(|| fleet.sink.addr()),
            );
            std::fs::write(fleet.path(&format!("gw{g}.toml")), config).unwrap();
            fleet.gateways.push(None);
            fleet.start_gateway(g as usize);
        }
        fleet
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn token(&self, name: &str, role: &str) -> String {
        let out = common::volley_with(
            &self.path("control.toml"),
            &["token", "create", "--name", name, "--role", role],
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
        common::stdout(&out).trim().to_owned()
    }

    /// Starts control plane `k` (0-based).
    fn start_control(&mut self, k: usize) {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_volley"));
        cmd.args([
            "--config",
            &self.path(&control_file(k)).display().to_string(),
            "control",
        ])
        .env_remove("VOLLEY_CONFIG")
        .env("VOLLEY_LOG", "info")
        .stdin(std::process::Stdio::null());
        let child = ChildGuard::spawn(&format!("volley-control{k}"), cmd, self.dir.path()).unwrap();
        let api = self.apis[k];
        let up = poll(Duration::from_secs(30), || {
            child.check_alive().ok()?;
            let a = support::http::try_request(api, "GET", "/healthz", &[], b"").ok()?;
            (a.status == 200).then_some(())
        });
        assert!(
            up.is_some(),
            "volley control did not come up: {}",
            child.stderr_text()
        );
        self.controls[k] = Some(child);
    }

    /// Starts gateway `g` (1-based).
    fn start_gateway(&mut self, g: usize) {
        let mut cmd = match &self.netns {
            Some((n, ns)) if *n == g => {
                let mut cmd = std::process::Command::new("ip");
                cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_volley")]);
                cmd
            }
            _ => std::process::Command::new(env!("CARGO_BIN_EXE_volley")),
        };
        cmd.args([
            "--config",
            &self.path(&format!("gw{g}.toml")).display().to_string(),
            "gateway",
        ])
        .env_remove("VOLLEY_CONFIG")
        .env("VOLLEY_LOG", "info")
        .stdin(std::process::Stdio::null());
        let child = ChildGuard::spawn(&format!("volley-gw{g}"), cmd, self.dir.path()).unwrap();
        self.gateways[g - 1] = Some(child);
    }

    fn gateway_pid(&self, g: usize) -> i32 {
        self.gateways[g - 1].as_ref().unwrap().id() as i32
    }

    fn get(&self, path: &str) -> Value {
        let auth = format!("Bearer {}", self.admin);
        let a = request(self.api, "GET", path, &[("Authorization", &auth)], b"");
        assert_eq!(
            a.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&a.body)
        );
        serde_json::from_slice(&a.body).unwrap()
    }

    /// Submits a campaign of `n` recipients with `volley campaign submit`.
    fn submit(&self, n: usize) -> i64 {
        let mut csv = String::from("email,name\n");
        for i in 0..n {
            csv.push_str(&format!("u{i}@d{}.test,N{i}\n", i % 7));
        }
        std::fs::write(self.path("list.csv"), csv).unwrap();
        std::fs::write(
            self.path("t.toml"),
            "from = \"news@acme.test\"\nsubject = \"Hi {{ name }}\"\ntext = \"Hello {{ name }}\"\n",
        )
        .unwrap();
        let out = common::volley_with(
            &self.path("control.toml"),
            &[
                "campaign",
                "submit",
                "--api",
                &format!("http://{}", self.api),
                "--token",
                &self.admin,
                "--template",
                &self.path("t.toml").display().to_string(),
                "--recipients",
                &self.path("list.csv").display().to_string(),
                "--json",
            ],
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
        let v: Value = serde_json::from_str(common::stdout(&out).trim()).unwrap();
        v["id"].as_i64().unwrap()
    }

    /// Waits until the campaign is completed; answers its view.
    fn completed(&self, id: i64, deadline: Duration) -> Value {
        poll(deadline, || {
            let v = self.get(&format!("/v1/campaigns/{id}"));
            (v["state"] == "completed").then_some(v)
        })
        .unwrap_or_else(|| {
            let logs = |procs: &[Option<ChildGuard>]| {
                procs
                    .iter()
                    .flatten()
                    .map(ChildGuard::stderr_text)
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            };
            panic!(
                "campaign {id} did not complete: {}\ncontrol: {}\ngateways: {}",
                self.get(&format!("/v1/campaigns/{id}")),
                logs(&self.controls),
                logs(&self.gateways)
            )
        })
    }

    /// How many times each recipient arrived at the sink.
    fn arrivals(&self) -> HashMap<String, u32> {
        let mut seen = HashMap::new();
        for m in self.sink.parsed_messages() {
            for r in m.rcpt_tos() {
                *seen.entry(r.to_owned()).or_insert(0) += 1;
            }
        }
        seen
    }

    fn delivered_lines(&self) -> usize {
        (1..=self.gateways.len())
            .map(|g| {
                std::fs::read_to_string(self.path(&format!("gw{g}.jsonl")))
                    .map(|t| t.matches("\"status\":\"delivered\"").count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// The configuration file of control plane `k`.
fn control_file(k: usize) -> String {
    if k == 0 {
        "control.toml".to_owned()
    } else {
        format!("control{k}.toml")
    }
}

/// Sends `SIG<name>` to `pid` with kill(1).
fn signal(pid: i32, name: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid}");
}

fn check_arrivals(fleet: &Fleet, n: usize, view: &Value) {
    let arrivals = fleet.arrivals();
    let missing: Vec<String> = (0..n)
        .map(|i| format!("u{i}@d{}.test", i % 7))
        .filter(|a| !arrivals.contains_key(a))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "never arrived: {missing:?} ({} arrived)",
        arrivals.len()
    );
    let duplicates: u32 = arrivals.values().map(|c| c - 1).sum();
    let resent = view["resent_after_failure"].as_i64().unwrap();
    assert!(
        i64::from(duplicates) <= resent,
        "{duplicates} duplicates, resent_after_failure {resent}"
    );
    assert_eq!(view["delivered"], n, "{view}");
    eprintln!("{n} recipients: {duplicates} duplicates, resent_after_failure {resent}");
}

#[test]
fn a_killed_gateway_costs_only_what_it_had_in_flight() {
    if !available("a_killed_gateway_costs_only_what_it_had_in_flight") {
        return;
    }
    let mut fleet = Fleet::start(150, 3);
    let n = 50_000;
    let id = fleet.submit(n);
    let at = poll(Duration::from_secs(120), || {
        (fleet.delivered_lines() >= n * 3 / 10).then_some(())
    });
    assert!(at.is_some(), "30% not reached");
    signal(fleet.gateway_pid(1), "KILL");
    let view = fleet.completed(id, Duration::from_secs(240));
    check_arrivals(&fleet, n, &view);
    let gateways = fleet.get("/v1/gateways");
    let state = |name: &str| {
        gateways["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .map(|g| g["state"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(state("gw1").as_deref(), Some("lost"), "{gateways}");
    assert_eq!(state("gw2").as_deref(), Some("live"), "{gateways}");
    let _ = fleet.gateways[0].take();
}

#[test]
fn a_paused_gateway_past_its_lease_is_fenced_off() {
    if !available("a_paused_gateway_past_its_lease_is_fenced_off") {
        return;
    }
    let fleet = Fleet::start(160, 2);
    let n = 20_000;
    let id = fleet.submit(n);
    let at = poll(Duration::from_secs(120), || {
        (fleet.delivered_lines() >= n / 5).then_some(())
    });
    assert!(at.is_some(), "20% not reached");
    let pid = fleet.gateway_pid(1);
    signal(pid, "STOP");
    // Past the lease (5 s) and the other gateway's takeover.
    std::thread::sleep(Duration::from_secs(9));
    signal(pid, "CONT");
    let view = fleet.completed(id, Duration::from_secs(240));
    check_arrivals(&fleet, n, &view);
    let gw1 = fleet.gateways[0].as_ref().unwrap();
    let refused = poll(Duration::from_secs(20), || {
        gw1.stderr_text().contains("lease lost").then_some(())
    });
    assert!(
        refused.is_some() || view["resent_after_failure"] == 0,
        "gw1 was not told its leases were lost:\n{}",
        gw1.stderr_text()
    );
}

#[test]
fn the_fleet_outlives_a_control_plane_and_a_gateway_restart() {
    if !available("the_fleet_outlives_a_control_plane_and_a_gateway_restart") {
        return;
    }
    let mut fleet = Fleet::start_with(170, 2, 2);
    // A suppression added on one control plane is the other's within seconds.
    let auth = format!("Bearer {}", fleet.admin);
    let added = request(
        fleet.apis[0],
        "POST",
        "/v1/suppressions",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"address": "someone@elsewhere.test", "domain": "*", "reason": "manual"}"#,
    );
    assert!(
        added.status < 300,
        "{}",
        String::from_utf8_lossy(&added.body)
    );
    let seen = poll(Duration::from_secs(5), || {
        let a = request(
            fleet.apis[1],
            "GET",
            "/v1/suppressions?address=someone@elsewhere.test",
            &[("Authorization", &auth)],
            b"",
        );
        let v: Value = serde_json::from_slice(&a.body).ok()?;
        (v["suppressions"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
    assert!(
        seen.is_some(),
        "the other control plane does not have the suppression within 5 s"
    );
    // A webhook getting every delivery, made through the API: whichever
    // control plane survives delivers its events, and the gateways report
    // their attempts.
    let endpoint = endpoint::available("the_fleet_outlives_a_control_plane (webhook)").then(|| {
        let e = Endpoint::start(fleet.dir.path(), Ipv4Addr::new(127, 0, 0, 173), SECRET, 204);
        let body = serde_json::json!({"url": e.url(), "secret": SECRET, "batch": 500,
                                      "events": ["message.delivered"]});
        let auth = format!("Bearer {}", fleet.admin);
        let made = request(
            fleet.api,
            "POST",
            "/v1/webhooks",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        );
        assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
        e
    });
    let n = 20_000;
    let id = fleet.submit(n);
    let at = poll(Duration::from_secs(120), || {
        (fleet.delivered_lines() >= n / 5).then_some(())
    });
    assert!(at.is_some(), "20% not reached");
    // The control plane that took the submission dies; the other serves.
    signal(fleet.controls[0].as_ref().unwrap().id() as i32, "KILL");
    fleet.api = fleet.apis[1];
    // A gateway crashes and comes back: its old leases are abandoned and
    // handed out again.
    signal(fleet.gateway_pid(2), "KILL");
    fleet.start_gateway(2);
    let view = fleet.completed(id, Duration::from_secs(240));
    check_arrivals(&fleet, n, &view);
    if let Some(endpoint) = endpoint {
        // Every recipient's delivery once (a resent one's too), from a
        // gateway, verified; the killed control plane's webhook taken over.
        let events = poll(Duration::from_secs(120), || {
            let events = endpoint.events();
            (events.len() >= n).then_some(events)
        })
        .unwrap_or_else(|| panic!("{} of {n} delivery events", endpoint.events().len()));
        assert!(endpoint.requests().iter().all(|r| r["verified"] == true));
        let mut seen = std::collections::HashSet::new();
        for e in &events {
            let d = &e["data"];
            assert_eq!(e["type"], "message.delivered", "{e}");
            assert_eq!(d["campaign"], id, "{e}");
            assert!(d["gateway"] == "gw1" || d["gateway"] == "gw2", "{e}");
            assert!(
                seen.insert(d["recipient"].as_str().unwrap().to_owned()),
                "twice: {e}"
            );
        }
        assert_eq!(seen.len(), n);
    }
    let _ = fleet.controls[0].take();
}

#[test]
fn a_suppression_added_mid_campaign_stops_the_gateways_within_seconds() {
    if !available("a_suppression_added_mid_campaign_stops_the_gateways_within_seconds") {
        return;
    }
    // One site at 40 messages a second: the campaign lasts ~12 s.
    let fleet = Fleet::start_custom(
        175,
        2,
        1,
        Options {
            gateway_extra: "[site]\nmax_messages_per_second = 20\n",
            ..Options::default()
        },
    );
    let n = 480;
    let id = fleet.submit(n);
    let started = poll(Duration::from_secs(60), || {
        (fleet.arrivals().len() >= 40).then_some(())
    });
    assert!(started.is_some(), "the campaign did not start");
    // Suppress 60 recipients that have not arrived yet.
    let arrived = fleet.arrivals();
    let chosen: Vec<String> = (0..n)
        .map(|i| format!("u{i}@d{}.test", i % 7))
        .filter(|a| !arrived.contains_key(a))
        .take(60)
        .collect();
    let auth = format!("Bearer {}", fleet.admin);
    for address in &chosen {
        let body = serde_json::json!({"address": address, "domain": "*", "reason": "manual"});
        let a = request(
            fleet.api,
            "POST",
            "/v1/suppressions",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        );
        assert!(a.status < 300, "{}", String::from_utf8_lossy(&a.body));
    }
    // Within 5 s every gateway has them: nothing suppressed arrives after.
    std::thread::sleep(Duration::from_secs(5));
    let by_then: std::collections::HashSet<String> = fleet
        .arrivals()
        .into_keys()
        .filter(|a| chosen.contains(a))
        .collect();
    let view = fleet.completed(id, Duration::from_secs(120));
    let after: Vec<String> = fleet
        .arrivals()
        .into_keys()
        .filter(|a| chosen.contains(a) && !by_then.contains(a))
        .collect();
    assert!(
        after.is_empty(),
        "suppressed and still sent later: {after:?}"
    );
    assert!(
        view["suppressed"].as_i64().unwrap_or(0) >= (chosen.len() - by_then.len()) as i64,
        "{view}"
    );
}

#[test]
fn a_sites_limits_hold_for_the_fleet_as_a_whole() {
    if !available("a_sites_limits_hold_for_the_fleet_as_a_whole") {
        return;
    }
    // Three gateways, one receiver limited to 4 connections and 200
    // messages a second: each gateway sends within a third of it.
    let receiver = Scripted::start(Ipv4Addr::new(127, 0, 0, 194), serde_json::json!({}));
    let fleet = Fleet::start_custom(
        190,
        3,
        1,
        Options {
            gateway_extra: "[site]\nmax_connections = 4\nmax_messages_per_second = 200\n",
            via: Some(receiver.addr()),
            ..Options::default()
        },
    );
    let n = 2400;
    let id = fleet.submit(n);
    let view = fleet.completed(id, Duration::from_secs(180));
    assert_eq!(view["delivered"], n as i64, "{view}");
    let times = receiver.accepted_times();
    assert_eq!(times.len(), n);
    let most = receiver.max_concurrent_connections();
    assert!(most <= 4, "{most} connections at once");
    // At most 200 a second on average; each gateway's bucket may start full
    // (a second's worth of its share: 200 in all).
    let in_window = |secs: f64| {
        let mut most = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= secs {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    };
    // The times are the receiver's: a message whose token was taken just
    // before a window may be accepted inside it, so the senders' window is
    // up to the transactions' latency longer (50 ms allowed: 10 messages at
    // the limit; one over the exact bound was seen on a loaded machine).
    for secs in [1.0, 5.0] {
        let most = in_window(secs);
        assert!(
            most as f64 <= 200.0 * (secs + 0.05) + 200.0,
            "{most} messages within {secs} s"
        );
    }
    let logs: String = fleet
        .gateways
        .iter()
        .flatten()
        .map(ChildGuard::stderr_text)
        .collect();
    assert!(
        logs.contains("site limits shared by this many gateways"),
        "{logs}"
    );
}

#[test]
fn the_fleet_rides_out_a_postgresql_outage() {
    if !available("the_fleet_rides_out_a_postgresql_outage") {
        return;
    }
    // 200 messages a second in all: the campaign lasts ~20 s, and the store
    // is gone for 20 s of it.
    let fleet = Fleet::start_custom(
        182,
        2,
        1,
        Options {
            gateway_extra: "[site]\nmax_messages_per_second = 200\n",
            ..Options::default()
        },
    );
    let n = 4000;
    let id = fleet.submit(n);
    let at = poll(Duration::from_secs(120), || {
        (fleet.delivered_lines() >= n / 5).then_some(())
    });
    assert!(at.is_some(), "20% not reached");
    fleet._pg.stop().unwrap();
    std::thread::sleep(Duration::from_secs(20));
    fleet._pg.start_again().unwrap();
    let view = fleet.completed(id, Duration::from_secs(240));
    check_arrivals(&fleet, n, &view);
    // Everything kept through the outage reached the store: the counts add up.
    assert_eq!(view["delivered"], n as i64, "{view}");
}

#[test]
fn the_fleet_serves_metrics_that_add_up() {
    if !available("the_fleet_serves_metrics_that_add_up")
        || !scrape::available("the_fleet_serves_metrics_that_add_up")
    {
        return;
    }
    // Two gateways at 100 messages a second each: ~10 s to scrape during.
    let fleet = Fleet::start_custom(
        155,
        2,
        1,
        Options {
            gateway_extra: "[site]\nmax_messages_per_second = 100\n",
            metrics: true,
            ..Options::default()
        },
    );
    let n = 2_000;
    let id = fleet.submit(n);
    // While it runs: every scrape of the control plane and the gateways
    // parses; the control plane sees leases held.
    let mut saw_leases = false;
    let view = poll(Duration::from_secs(120), || {
        let control = scrape::scrape(fleet.api);
        if scrape::sum(&control, "volley_leases_held", &[]) > 0.0 {
            saw_leases = true;
        }
        for &gw in &fleet.metrics {
            scrape::scrape(gw);
        }
        let v = fleet.get(&format!("/v1/campaigns/{id}"));
        (v["state"] == "completed").then_some(v)
    })
    .expect("the campaign did not complete");
    assert!(saw_leases, "no scrape saw a lease held");
    check_arrivals(&fleet, n, &view);
    // The gateways' counters add up to the campaign's count.
    let delivered: f64 = fleet
        .metrics
        .iter()
        .map(|&gw| {
            let samples = scrape::scrape(gw);
            assert!(scrape::has(&samples, "volley_gateway_leases_held"));
            assert!(scrape::has(&samples, "volley_reply_seconds_bucket"));
            scrape::sum(
                &samples,
                "volley_messages_total",
                &[("outcome", "delivered")],
            )
        })
        .sum();
    assert_eq!(delivered, n as f64, "delivered over the gateways' /metrics");
    let control = scrape::scrape(fleet.api);
    assert_eq!(
        scrape::sum(&control, "volley_gateways", &[("state", "live")]),
        2.0
    );
    assert_eq!(
        scrape::sum(&control, "volley_campaigns", &[("state", "completed")]),
        1.0
    );
    assert!(scrape::sum(&control, "volley_lease_seconds_count", &[]) >= 1.0);
    for state in ["pending", "in_flight", "deferred"] {
        assert_eq!(
            scrape::sum(&control, "volley_queue_recipients", &[("state", state)]),
            0.0,
            "{state}"
        );
    }
}

#[test]
fn holds_and_purges_on_the_control_plane_reach_every_gateway() {
    if !available("holds_and_purges_on_the_control_plane_reach_every_gateway") {
        return;
    }
    let fleet = Fleet::start_custom(
        163,
        2,
        1,
        Options {
            gateway_extra: "[site]\nmax_messages_per_second = 200\n",
            ..Options::default()
        },
    );
    let api = format!("http://{}", fleet.api);
    let queue = |args: &[&str]| {
        let mut all = vec!["queue"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--api", &api, "--token", &fleet.admin]);
        common::volley_with(&fleet.path("control.toml"), &all)
    };
    let held = queue(&["hold", "--domain", "d3.test"]);
    assert!(held.status.success(), "{}", common::stderr(&held));
    assert!(common::stdout(&held).contains("held: domain d3.test"));
    assert_eq!(
        fleet.get("/v1/queue/holds")["holds"],
        serde_json::json!([{"domain": "d3.test"}])
    );
    // 1,400 recipients over d0..d6.test: d3.test's 200 wait.
    let n = 1400;
    let id = fleet.submit(n);
    let at_d3 = |fleet: &Fleet| {
        fleet
            .arrivals()
            .keys()
            .filter(|r| r.ends_with("@d3.test"))
            .count()
    };
    let others = poll(Duration::from_secs(120), || {
        (fleet.arrivals().len() >= n - 200).then_some(())
    });
    assert!(
        others.is_some(),
        "the others did not arrive: {}",
        fleet.arrivals().len()
    );
    for _ in 0..15 {
        assert_eq!(at_d3(&fleet), 0, "a held domain got mail");
        std::thread::sleep(Duration::from_millis(200));
    }
    let view = fleet.get(&format!("/v1/campaigns/{id}"));
    assert_ne!(view["state"], "completed", "{view}");

    let released = queue(&["release", "--domain", "d3.test"]);
    assert!(released.status.success(), "{}", common::stderr(&released));
    let view = fleet.completed(id, Duration::from_secs(120));
    check_arrivals(&fleet, n, &view);
    assert_eq!(at_d3(&fleet), 200);

    // Mid-campaign: the gateways hold what they already leased, from their
    // next answer on.
    let messages = |fleet: &Fleet| fleet.sink.parsed_messages().len();
    let second = fleet.submit(n);
    let going = poll(Duration::from_secs(60), || {
        (messages(&fleet) >= n + 200).then_some(())
    });
    assert!(going.is_some(), "the second campaign did not start");
    let held = queue(&["hold", "--campaign", &second.to_string()]);
    assert!(held.status.success(), "{}", common::stderr(&held));
    // Within a report's interval every gateway knows; then nothing more.
    std::thread::sleep(Duration::from_secs(4));
    let at_hold = messages(&fleet);
    assert!(at_hold < 2 * n, "the second campaign ended before the hold");
    for _ in 0..15 {
        assert_eq!(messages(&fleet), at_hold, "a held campaign got mail");
        std::thread::sleep(Duration::from_millis(200));
    }
    let released = queue(&["release", "--campaign", &second.to_string()]);
    assert!(released.status.success(), "{}", common::stderr(&released));
    let view = fleet.completed(second, Duration::from_secs(120));
    assert_eq!(view["delivered"], n, "{view}");
    assert_eq!(messages(&fleet), 2 * n);

    // A purge mid-campaign: the gateways finalise what they hold and what
    // they lease afterwards (30 batches: more than the 16 they may hold);
    // each recipient is logged as purged.
    let n3 = 3000;
    let third = fleet.submit(n3);
    let going = poll(Duration::from_secs(60), || {
        (messages(&fleet) >= 2 * n + 200).then_some(())
    });
    assert!(going.is_some(), "the third campaign did not start");
    let purged = queue(&["purge", "--campaign", &third.to_string(), "--yes"]);
    assert!(purged.status.success(), "{}", common::stderr(&purged));
    assert!(
        common::stdout(&purged).contains("purge ordered"),
        "{}",
        common::stdout(&purged)
    );
    let view = fleet.completed(third, Duration::from_secs(120));
    let (delivered, cancelled) = (
        view["delivered"].as_u64().unwrap(),
        view["cancelled"].as_u64().unwrap(),
    );
    assert!(cancelled > 0, "nothing purged: {view}");
    assert_eq!(delivered + cancelled, n3 as u64, "{view}");
    assert_eq!(messages(&fleet) as u64, 2 * n as u64 + delivered, "{view}");
    let logged: usize = (1..=2)
        .map(|g| {
            std::fs::read_to_string(fleet.path(&format!("gw{g}.jsonl")))
                .map(|t| t.matches("\"status\":\"purged\"").count())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(
        logged as u64, cancelled,
        "purged lines in the gateways' logs"
    );
    // Both ways were taken: batches held when the purge came, and batches
    // leased after it.
    let gateway_logs: String = fleet
        .gateways
        .iter()
        .flatten()
        .map(ChildGuard::stderr_text)
        .collect();
    assert!(
        gateway_logs.contains("purge carried out on the batches held"),
        "{gateway_logs}"
    );
    assert!(gateway_logs.contains("purged as leased"), "{gateway_logs}");
}

#[test]
fn the_gateway_that_delivers_a_site_fastest_gets_its_batches() {
    if !available("the_gateway_that_delivers_a_site_fastest_gets_its_batches") {
        return;
    }
    // One receiver, slow for gw2 only (every reply 100 ms late for its source
    // address): learned, gw1 gets nearly all; round robin, gw2 keeps taking
    // batches and the campaign waits for them.
    let slow = "127.0.0.212";
    let receiver = Scripted::start(
        Ipv4Addr::new(127, 0, 0, 213),
        serde_json::json!({ "delay_ms_by_peer": { slow: 100 } }),
    );
    let mut fleet = Fleet::start_custom(
        210,
        2,
        1,
        Options {
            via: Some(receiver.addr()),
            ..Options::default()
        },
    );
    let n = 5_000;
    let run = |fleet: &Fleet| {
        let before = receiver.transactions().len();
        let started = std::time::Instant::now();
        let id = fleet.submit(n);
        let view = fleet.completed(id, Duration::from_secs(300));
        let took = started.elapsed();
        assert_eq!(view["delivered"], n as i64, "{view}");
        let arrived = receiver.transactions();
        let from_slow = arrived[before..]
            .iter()
            .filter(|t| t.peer.split(':').next() == Some(slow))
            .count();
        assert_eq!(arrived.len() - before, n, "arrivals");
        (took, from_slow)
    };
    let (learned, slow_learned) = run(&fleet);
    let gateways = fleet.get("/v1/gateways");
    // Round robin, on a control plane restarted to say so.
    fleet.controls[0] = None;
    let path = fleet.path(&control_file(0));
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "[control]\n",
        "[control]\nassignment = \"round_robin\"\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    fleet.start_control(0);
    let (round_robin, slow_round_robin) = run(&fleet);
    eprintln!(
        "learned: {learned:?}, {slow_learned} of {n} from the slow gateway; \
         round robin: {round_robin:?}, {slow_round_robin}"
    );
    // Its first leases aside (two batches, explored before anything is
    // known), the slow gateway gets little: at least 80% go to the fast one.
    assert!(
        slow_learned <= n / 5,
        "learned: {slow_learned} of {n} from the slow gateway\n{gateways}"
    );
    assert!(
        learned < round_robin,
        "learned {learned:?} not sooner than round robin {round_robin:?}"
    );
    // What was learned is shown: the slow pair's transactions take longer.
    let seconds = |name: &str| {
        gateways["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .and_then(|g| g["sites"].as_array()?.first()?["transaction_seconds"].as_f64())
            .unwrap_or_else(|| panic!("{name} learned nothing: {gateways}"))
    };
    assert!(seconds("gw2") > seconds("gw1"), "{gateways}");
}

/// A network namespace with a veth pair to the host, made for one test: the
/// process inside has loopback address `addr` (on its veth) and reaches the
/// host's 127.0.0.0/8 through the pair, nothing else. [`Partition::cut`]
/// drops what it sends to one host address (blackhole route inside), so it
/// still reaches the others. Removed when dropped.
struct Partition {
    ns: String,
    host_if: String,
}

impl Partition {
    /// `None` (the test skipped) where namespaces cannot be made (not root).
    fn new(test: &str, tag: &str, addr: Ipv4Addr) -> Option<Partition> {
        let p = Partition {
            ns: format!("volley-{tag}"),
            host_if: format!("vh-{tag}"),
        };
        let ns_if = format!("vn-{tag}");
        // What an earlier, killed run may have left.
        let _ = p.ip(&["netns", "del", &p.ns]);
        let _ = p.ip(&["link", "del", &p.host_if]);
        if let Err(err) = p.ip(&["netns", "add", &p.ns]) {
            support::skip(test, &format!("cannot make a network namespace: {err}"));
            return None;
        }
        let a = addr.to_string();
        let host = format!("{a}/32");
        let steps: Vec<Vec<&str>> = vec![
            vec![
                "link", "add", &p.host_if, "type", "veth", "peer", "name", &ns_if,
            ],
            vec!["link", "set", &ns_if, "netns", &p.ns],
            vec!["link", "set", &p.host_if, "up"],
            // Replies to `addr` leave the host through the pair (a /32
            // before the local 127.0.0.0/8).
            vec!["route", "add", &host, "dev", &p.host_if, "table", "local"],
        ];
        for step in steps {
            p.ip(&step)
                .unwrap_or_else(|e| panic!("ip {}: {e}", step.join(" ")));
        }
        sysctl(&format!("net.ipv4.conf.{}.route_localnet=1", p.host_if));
        let inside: Vec<Vec<&str>> = vec![
            vec!["link", "set", "lo", "up"],
            // Its own loopback is 127.0.0.1 only: the rest of 127/8 is the host's.
            vec!["addr", "del", "127.0.0.1/8", "dev", "lo"],
            vec!["addr", "add", "127.0.0.1/32", "dev", "lo"],
            vec!["addr", "add", &host, "dev", &ns_if],
            vec!["link", "set", &ns_if, "up"],
        ];
        for step in inside {
            p.inside(&step)
                .unwrap_or_else(|e| panic!("ip {}: {e}", step.join(" ")));
        }
        for key in ["all", ns_if.as_str()] {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &p.ns, "sysctl", "-qw"])
                .arg(format!("net.ipv4.conf.{key}.route_localnet=1"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        p.inside(&["route", "add", "127.0.0.0/8", "dev", &ns_if, "src", &a])
            .unwrap();
        Some(p)
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    fn inside(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        self.ip(&all)
    }

    /// Drops everything sent from inside to `to`.
    fn cut(&self, to: Ipv4Addr) {
        self.inside(&["route", "add", "blackhole", &format!("{to}/32")])
            .unwrap();
    }

    /// Undoes [`Partition::cut`].
    fn heal(&self, to: Ipv4Addr) {
        self.inside(&["route", "del", "blackhole", &format!("{to}/32")])
            .unwrap();
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = self.ip(&["netns", "del", &self.ns]);
        let _ = self.ip(&["link", "del", &self.host_if]);
    }
}

fn sysctl(setting: &str) {
    let out = std::process::Command::new("sysctl")
        .args(["-qw", setting])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sysctl {setting}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_partitioned_gateway_stops_by_itself_and_rejoins_without_resending() {
    let test = "a_partitioned_gateway_stops_by_itself_and_rejoins_without_resending";
    if !available(test) {
        return;
    }
    // gw2 in a namespace of its own: it reaches the receiver (.218) and,
    // until cut, the control plane (.215).
    let control = Ipv4Addr::new(127, 0, 0, 215);
    let cut_off = "127.0.0.217";
    let Some(partition) = Partition::new(test, "part", Ipv4Addr::new(127, 0, 0, 217)) else {
        return;
    };
    let receiver = Scripted::start(Ipv4Addr::new(127, 0, 0, 218), serde_json::json!({}));
    let fleet = Fleet::start_custom(
        215,
        2,
        1,
        Options {
            gateway_extra: "[site]\nmax_messages_per_second = 100\n",
            via: Some(receiver.addr()),
            netns: Some((2, partition.ns.as_str())),
            ..Options::default()
        },
    );
    let n = 4_000;
    let id = fleet.submit(n);
    // Both gateways sending, then gw2 is cut off from the control plane for
    // three lease times.
    let from = |peer: &str| peer.split(':').next() == Some(cut_off);
    let sending = poll(Duration::from_secs(120), || {
        let t = receiver.transactions();
        (t.iter().filter(|t| from(&t.peer)).count() >= 100 && t.len() >= n / 5).then_some(())
    });
    assert!(sending.is_some(), "gw2 did not start sending");
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let cut_at = unix();
    partition.cut(control);
    std::thread::sleep(Duration::from_secs(15));
    let healed_at = unix();
    partition.heal(control);
    let view = fleet.completed(id, Duration::from_secs(240));
    // gw2 stopped by itself before its lease (5 s) could have run out at
    // the control plane: nothing from it after that, until the link came back.
    let mut arrivals: Vec<(f64, bool, Vec<String>)> = receiver
        .accepted_at()
        .into_iter()
        .map(|(t, at)| (at, from(&t.peer), t.rcpt_tos))
        .collect();
    arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let late: Vec<f64> = arrivals
        .iter()
        .filter(|(at, gw2, _)| *gw2 && *at > cut_at + 5.0 && *at < healed_at)
        .map(|(at, _, _)| at - cut_at)
        .collect();
    assert!(
        late.is_empty(),
        "gw2 sent {} s after the cut",
        late.first().unwrap_or(&0.0)
    );
    // The campaign finished on gw1; every recipient arrived, duplicates
    // within what was counted resent (gw2's in-flight at the cut).
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for (_, _, rcpts) in &arrivals {
        for r in rcpts {
            *seen.entry(r.as_str()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), n, "distinct recipients arrived");
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    let resent = view["resent_after_failure"].as_i64().unwrap();
    assert!(
        i64::from(duplicates) <= resent,
        "{duplicates} duplicates, resent_after_failure {resent}"
    );
    assert_eq!(view["delivered"], n as i64, "{view}");
    // Back, gw2 sent none of what had arrived before: its old batches were
    // dropped when its late report was refused.
    let before: std::collections::HashSet<&str> = arrivals
        .iter()
        .filter(|(at, _, _)| *at < healed_at)
        .flat_map(|(_, _, r)| r.iter().map(String::as_str))
        .collect();
    let again: Vec<&str> = arrivals
        .iter()
        .filter(|(at, gw2, _)| *gw2 && *at >= healed_at)
        .flat_map(|(_, _, r)| r.iter().map(String::as_str))
        .filter(|r| before.contains(r))
        .collect();
    assert!(
        again.is_empty(),
        "gw2 sent again after rejoining: {:?}",
        &again[..again.len().min(5)]
    );
    // It rejoined: live again, its refused report logged.
    let rejoined = poll(Duration::from_secs(30), || {
        let g = fleet.get("/v1/gateways");
        g["gateways"]
            .as_array()?
            .iter()
            .any(|g| g["name"] == "gw2" && g["state"] == "live")
            .then_some(())
    });
    assert!(rejoined.is_some(), "{}", fleet.get("/v1/gateways"));
    let log = fleet.gateways[1].as_ref().unwrap().stderr_text();
    assert!(
        log.contains("lease lost") || log.contains("leases not renewed in time"),
        "{log}"
    );
    eprintln!(
        "partition: {duplicates} duplicates, resent_after_failure {resent}, gw2 sent {} before the cut",
        arrivals.iter().filter(|(at, gw2, _)| *gw2 && *at < cut_at).count()
    );
}
