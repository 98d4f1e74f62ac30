//! Where the configuration file comes from.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::ConfigError;

/// Environment variable naming the configuration file when no explicit path
/// is given. Set but empty counts as unset.
pub const CONFIG_ENV: &str = "VOLLEY_CONFIG";

/// The configuration file used when neither an explicit path nor
/// [`CONFIG_ENV`] names one, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/volley/volley.toml";

impl Config {
    /// Where the config comes from: the explicit path if given, else
    /// `$VOLLEY_CONFIG`, else `/etc/volley/volley.toml` if it exists, else
    /// `None` (built-in defaults).
    ///
    /// An explicit or `$VOLLEY_CONFIG` path is returned even if it does not
    /// exist, so that loading it reports the problem. If the existence of the
    /// default path cannot be checked (e.g. permission denied on
    /// `/etc/volley`), it is returned too, for the same reason.
    pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
        locate_with(
            explicit,
            std::env::var_os(CONFIG_ENV),
            Path::new(DEFAULT_CONFIG_PATH),
        )
    }

    /// [`Config::locate`] then [`Config::load`], or `Config::default()` when
    /// nothing is found.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        match Config::locate(explicit) {
            Some(path) => Config::load(&path),
            None => Ok(Config::default()),
        }
    }
}

/// [`Config::locate`] with the environment and the default path passed in.
fn locate_with(explicit: Option<&Path>, env: Option<OsString>, default: &Path) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    if let Some(path) = env.filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path));
    }
    match default.try_exists() {
        Ok(false) => None,
        Ok(true) | Err(_) => Some(default.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let present = dir.path().join("volley.toml");
        std::fs::write(&present, "").unwrap_or_else(|err| panic!("{err}"));
        let absent = dir.path().join("absent.toml");
        let explicit = Path::new("explicit.toml");
        let env = || Some(OsString::from("env.toml"));

        // Explicit beats everything, even if it does not exist.
        assert_eq!(
            locate_with(Some(explicit), env(), &present),
            Some(explicit.to_path_buf())
        );
        // Then the environment, even if it does not exist.
        assert_eq!(
            locate_with(None, env(), &present),
            Some(PathBuf::from("env.toml"))
        );
        // An empty variable counts as unset.
        assert_eq!(
            locate_with(None, Some(OsString::new()), &present),
            Some(present.clone())
        );
        // Then the default path, only if it exists.
        assert_eq!(locate_with(None, None, &present), Some(present.clone()));
        assert_eq!(locate_with(None, None, &absent), None);
    }

    /// The only test that touches the process environment: env vars are
    /// process-global and tests run in parallel threads.
    #[test]
    fn environment() {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let from_env = dir.path().join("from-env.toml");
        std::fs::write(&from_env, "[queue]\nbatch_size = 7\n")
            .unwrap_or_else(|err| panic!("{err}"));
        let explicit = dir.path().join("explicit.toml");
        std::fs::write(&explicit, "[queue]\nbatch_size = 8\n")
            .unwrap_or_else(|err| panic!("{err}"));

        let saved = std::env::var_os(CONFIG_ENV);
        std::env::set_var(CONFIG_ENV, &from_env);
        assert_eq!(Config::locate(None), Some(from_env.clone()));
        assert_eq!(Config::locate(Some(&explicit)), Some(explicit.clone()));
        let batch = |config: Result<Config, ConfigError>| {
            config
                .map(|c| c.queue.batch_size)
                .map_err(|e| e.to_string())
        };
        assert_eq!(batch(Config::discover(None)), Ok(7));
        assert_eq!(batch(Config::discover(Some(&explicit))), Ok(8));

        let missing = dir.path().join("missing.toml");
        std::env::set_var(CONFIG_ENV, &missing);
        let err = batch(Config::discover(None)).err().unwrap_or_default();
        assert!(
            err.starts_with(&format!("cannot read {}: ", missing.display())),
            "{err}"
        );

        std::env::remove_var(CONFIG_ENV);
        // Falls back to /etc/volley/volley.toml or the defaults: which one
        // depends on the machine, so only check that it is consistent.
        match Config::locate(None) {
            Some(path) => assert_eq!(path, Path::new(DEFAULT_CONFIG_PATH)),
            None => assert_eq!(Config::discover(None).ok(), Some(Config::default())),
        }

        match saved {
            Some(value) => std::env::set_var(CONFIG_ENV, value),
            None => std::env::remove_var(CONFIG_ENV),
        }
    }
}
