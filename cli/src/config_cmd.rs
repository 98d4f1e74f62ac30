//! `volley config check`: load the configuration and print what is in effect.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use clap::Subcommand;
use volley_conf::Config;

/// `volley config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration; print the file used and the effective values.
    ///
    /// Example: volley config check -C /etc/volley/volley.toml
    Check,
}

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand, explicit: Option<&Path>) -> Result<String> {
    match cmd {
        ConfigCommand::Check => {
            let mut out = String::new();
            let source = Config::locate(explicit);
            let config = Config::discover(explicit)?;
            match source {
                Some(path) => writeln!(out, "{}: ok", path.display())?,
                None => writeln!(out, "no configuration file: built-in defaults")?,
            }
            writeln!(out, "spool.dir = {}", config.spool.dir.display())?;
            writeln!(out, "queue.batch_size = {}", config.queue.batch_size)?;
            writeln!(
                out,
                "queue.sync_interval = {}",
                humantime::format_duration(config.queue.sync_interval)
            )?;
            Ok(out)
        }
    }
}
