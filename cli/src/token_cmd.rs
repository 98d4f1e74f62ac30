//! `volley token create|list|revoke`: API tokens, straight in the store (works
//! while a daemon runs). A new token is printed once; only its hash is kept.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Subcommand;
use volley_conf::Config;
use volley_control::store::tokens::Role;

use crate::table;

/// `volley token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (once: only its hash is stored).
    ///
    /// Example: volley token create --name shop --role sender
    Create {
        /// A unique name for it (who or what uses it).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// What it may do: admin (everything), sender (submit and read its own
        /// campaigns), gateway (a delivery gateway of a fleet).
        #[arg(long, value_name = "ROLE", default_value = "sender")]
        role: String,
    },
    /// List tokens: name, role, made, last used, revoked.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: every call with it is refused from now on.
    ///
    /// Example: volley token revoke shop
    Revoke {
        /// Its name.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

fn when(at: Option<i64>) -> String {
    at.map_or_else(|| "-".to_owned(), volley_control::plane::view::rfc3339)
}

/// Runs `volley token …`.
pub fn run(cmd: TokenCommand, config_path: Option<&Path>) -> Result<String> {
    let config = Config::discover(config_path)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store = crate::control::open_store(&config).await?;
        match cmd {
            TokenCommand::Create { name, role } => {
                let Some(role) = Role::parse(&role) else {
                    bail!("--role {role:?}: use admin, sender or gateway");
                };
                let name = name.trim();
                if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                    bail!("--name must be 1 to 100 characters, without control characters");
                }
                match store.create_token(name, role).await {
                    Ok((_, secret)) => {
                        eprintln!("volley: token {name:?} ({}) made; it is shown only now:", role.name());
                        Ok(format!("{secret}\n"))
                    }
                    Err(e) if e.is_conflict() => {
                        bail!("a token named {name:?} exists already (volley token list): pick another name")
                    }
                    Err(e) => Err(e.into()),
                }
            }
            TokenCommand::List { json } => {
                let tokens = store.list_tokens().await?;
                if json {
                    return Ok(format!("{}\n", serde_json::to_string_pretty(&tokens)?));
                }
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.role.name().to_owned(),
                            when(Some(t.created_at)),
                            when(t.last_used_at),
                            when(t.revoked_at),
                        ]
                    })
                    .collect();
                Ok(table::render(&["name", "role", "created", "last used", "revoked"], &rows))
            }
            TokenCommand::Revoke { name } => {
                if store.revoke_token(&name).await? {
                    Ok(format!("token {name:?} revoked\n"))
                } else {
                    bail!("no live token named {name:?} (volley token list shows them)")
                }
            }
        }
    })
}
