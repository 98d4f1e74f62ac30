//! `[spool]`: where the queue lives on disk.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// The `[spool]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct SpoolConfig {
    /// Directory holding the queue (`active/`, `done/`, `quarantine/`, `tmp/`).
    /// Default `/var/spool/volley`; must not be empty.
    #[serde(deserialize_with = "non_empty_path")]
    pub dir: PathBuf,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("/var/spool/volley"),
        }
    }
}

fn non_empty_path<'de, D: Deserializer<'de>>(de: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(de)?;
    if path.as_os_str().is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    Ok(path)
}
