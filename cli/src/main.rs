//! The `volley` binary: subcommands that wire the crates together.
//!
//! Thin by design: parsing arguments, loading the configuration and printing
//! results. The work lives in `volley-queue`, the `mta/` crates (`volley-smtp`, `volley-merge`,
//! `volley-inbound`, `volley-engine`) and `volley-control`.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod api_client;
mod bench;
mod campaign_cmd;
mod config_cmd;
mod control;
mod control_daemon;
mod control_feed;
mod gateway;
mod hash_password;
mod queue_cmd;
mod queue_ops;
mod run;
mod send;
mod sendmail;
mod stop;
mod summary;
mod suppress_cmd;
mod suppressions;
mod synth;
mod table;
mod templates;
mod token_cmd;
mod top;
mod web;
mod webhooks;

/// mimalloc rather than the system allocator: each message allocates a few dozen
/// small buffers (envelope, replies, log line) on the delivery threads, and glibc's
/// malloc and free were ~3.5% of volley's CPU in the end-to-end profile
/// (benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// volley: a mail transfer agent for high-volume, personalized sending.
#[derive(Debug, Parser)]
#[command(name = "volley", version, about, long_about = None)]
struct Cli {
    /// Configuration file (else $VOLLEY_CONFIG, else /etc/volley/volley.toml if it
    /// exists, else built-in defaults).
    #[arg(short = 'C', long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the queue: summary by domain, one batch, recovery scan; hold,
    /// release and purge.
    #[command(subcommand)]
    Queue(queue_cmd::QueueCommand),
    /// A live view of a running daemon or fleet: the queue by destination,
    /// sites with their rates and deferrals, gateways; q quits.
    ///
    /// Example: volley top --api http://127.0.0.1:8025
    Top(top::TopArgs),
    /// Check the configuration file and print the effective settings.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Send a personalized campaign: template + CSV recipients, merged at send time.
    ///
    /// Example: volley send --config volley.toml --template news.toml --recipients list.csv --report report.json
    Send(send::SendArgs),
    /// The delivery daemon: delivers what is in the spool and retries deferred
    /// recipients; resumes whatever a killed `volley send` left.
    ///
    /// Example: volley run --config /etc/volley/volley.toml
    Run(run::RunArgs),
    /// The control plane of a fleet: the API, the scheduler and the lease
    /// service delivery gateways (`volley gateway`) ask for batches, over the
    /// `[control] database` (PostgreSQL for several processes).
    Control(control_daemon::ControlArgs),
    /// A delivery gateway of a fleet: leases batches from the `[gateway]
    /// control` planes, delivers them, reports progress; runs the `[[listen]]`
    /// listeners too.
    Gateway(gateway::GatewayArgs),
    /// Make a password hash for a `[[user]]` entry (or the users file): reads
    /// the password, one line, from standard input and prints its argon2id PHC
    /// string.
    ///
    /// Example: printf '%s\n' 's3cret' | volley hash-password
    HashPassword,
    /// Queue a message read from standard input, like /usr/sbin/sendmail (also
    /// what the binary does when called as `sendmail`): [-t] [-i] [-f SENDER]
    /// [-F NAME] [-C FILE] [RECIPIENT...]; `volley sendmail --help` has the rest.
    ///
    /// Example: printf 'Subject: hi\n\nhello\n' | volley sendmail -i ann@example.com
    Sendmail(sendmail::SendmailArgs),
    /// The suppression list: addresses never sent to, per sending domain.
    #[command(subcommand)]
    Suppress(suppress_cmd::SuppressCommand),
    /// API tokens: create (printed once, stored as a hash), list, revoke.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Campaigns through the control plane's API: list, show, suspend, resume,
    /// cancel, the per-recipient table.
    ///
    /// Example: volley campaign show 1796205600000 --token $TOKEN
    Campaign(campaign_cmd::CampaignArgs),
    /// Benchmarks that print tables and a JSON line.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Logs go to stderr, at `$VOLLEY_LOG` or else `default` level.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOLLEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // Installed as /usr/sbin/sendmail (a symlink to volley): sendmail's command line.
    let called_as_sendmail = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name == "sendmail");
    if called_as_sendmail {
        init_logging("warn");
        return sendmail::main(argv.get(1..).unwrap_or_default(), None);
    }
    let cli = Cli::parse_from(argv);
    // sendmail's callers (cron, scripts) expect silence on success.
    let quiet = matches!(cli.command, Command::Sendmail(_));
    init_logging(if quiet { "warn" } else { "info" });
    let result = match cli.command {
        Command::Queue(cmd) => queue_cmd::run(cmd, cli.config.as_deref()),
        Command::Top(args) => volley_conf::Config::discover(cli.config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|config| top::run(&args, &config)),
        Command::Config(cmd) => config_cmd::run(cmd, cli.config.as_deref()),
        Command::Bench(cmd) => bench::run(cmd, cli.config.as_deref()),
        Command::Send(args) => send::run(args, cli.config.as_deref()),
        Command::Run(args) => run::run(args, cli.config.as_deref()),
        Command::Control(args) => control_daemon::run(args, cli.config.as_deref()),
        Command::Gateway(args) => gateway::run(args, cli.config.as_deref()),
        Command::Suppress(cmd) => suppress_cmd::run(cmd, cli.config.as_deref()),
        Command::HashPassword => hash_password::run(),
        Command::Token(cmd) => token_cmd::run(cmd, cli.config.as_deref()),
        Command::Campaign(args) => campaign_cmd::run(args, cli.config.as_deref()),
        Command::Sendmail(args) => return sendmail::main(&args.args, cli.config.as_deref()),
    };
    match result {
        Ok(text) => {
            // A closed pipe (`volley queue summary | head`) is a normal end, not an error.
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("volley: error: cannot write to standard output: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(err) => {
            eprintln!("volley: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
