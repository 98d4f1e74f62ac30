//! Signing keys on disk (the VERP key, the web links' key): read one, or create it on first use.
//!
//! The file holds the key's raw bytes, 32 to 1024 of them, read as they are (a text
//! file of 32+ characters works too). A missing file is created with 32 bytes from
//! the system's secure random source, mode 0600, written to a temporary name and
//! linked into place so that two processes starting at once end up with the same
//! key. Every gateway of a fleet must share the key: copy the file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use volley_conf::BounceConfig;

use volley_inbound::verp::{Verp, VerpSetupError, MIN_KEY_LEN};

/// Longest key file accepted: anything longer is probably the wrong file.
pub const MAX_KEY_LEN: usize = 1024;

/// Why the VERP key could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file exists but could not be read.
    #[error("cannot read key file {path}: {io}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The error.
        io: io::Error,
    },
    /// The file holds fewer than 32 or more than 1024 bytes.
    #[error("key file {path} has {len} bytes; it must hold {MIN_KEY_LEN} to {MAX_KEY_LEN}")]
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The file was missing and could not be created.
    #[error("cannot create key file {path}: {io}")]
    Create {
        /// The key file.
        path: PathBuf,
        /// The error.
        io: io::Error,
    },
    /// The system's random source failed.
    #[error("cannot create key file {path}: no random bytes from the system")]
    Random {
        /// The key file.
        path: PathBuf,
    },
    /// The configured domain or prefix was refused by [`Verp::new`].
    #[error("VERP setup: {0}")]
    Setup(#[from] VerpSetupError),
}

/// Reads the key at `path`, creating it (32 random bytes, mode 0600) if it does
/// not exist. The parent directory must exist.
pub fn load_or_create_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    match read_key(path) {
        Err(KeyError::Read { io, .. }) if io.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut key = [0u8; MIN_KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| KeyError::Random {
            path: path.to_owned(),
        })?;
    let create = |io| KeyError::Create {
        path: path.to_owned(),
        io,
    };
    let tmp = temp_name(path);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()
    })();
    if let Err(io) = written {
        let _ = fs::remove_file(&tmp);
        return Err(create(io));
    }
    // A hard link never replaces an existing file: if another process created the
    // key meanwhile, keep its key and read it.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(create)?;
            }
            Ok(key.to_vec())
        }
        Err(io) if io.kind() == io::ErrorKind::AlreadyExists => read_key(path),
        Err(io) => Err(create(io)),
    }
}

/// The [`Verp`] of a `[bounce]` section: `None` when no domain is configured,
/// else one signed with the key from [`BounceConfig::secret_path`] (created if
/// missing).
pub fn verp_from_config(config: &BounceConfig, spool_dir: &Path) -> Result<Option<Verp>, KeyError> {
    let Some(domain) = &config.domain else {
        return Ok(None);
    };
    let key = load_or_create_key(&config.secret_path(spool_dir))?;
    Ok(Some(Verp::new(&key, domain, &config.prefix)?))
}

fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let read = |io| KeyError::Read {
        path: path.to_owned(),
        io,
    };
    let len = fs::metadata(path).map_err(read)?.len();
    if !(MIN_KEY_LEN as u64..=MAX_KEY_LEN as u64).contains(&len) {
        return Err(KeyError::BadLength {
            path: path.to_owned(),
            len,
        });
    }
    let key = fs::read(path).map_err(read)?;
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
        return Err(KeyError::BadLength {
            path: path.to_owned(),
            len: key.len() as u64,
        });
    }
    Ok(key)
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_once_then_reads() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("bounce.key");
        let key = load_or_create_key(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.len(), 32);
        let mode = fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        assert_eq!(load_or_create_key(&path).ok(), Some(key.clone()));
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, ["bounce.key"]);
        // Another file gets another key.
        let other = load_or_create_key(&dir.path().join("other.key")).ok();
        assert!(other.is_some_and(|o| o != key));
    }

    #[test]
    fn short_or_huge_key_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("bounce.key");
        fs::write(&path, [1u8; 31]).unwrap_or_else(|e| panic!("{e}"));
        let err = load_or_create_key(&path).err().map(|e| e.to_string());
        assert_eq!(
            err,
            Some(format!(
                "key file {} has 31 bytes; it must hold 32 to 1024",
                path.display()
            ))
        );
        // The short file is left alone.
        assert_eq!(fs::read(&path).ok(), Some(vec![1u8; 31]));
        fs::write(&path, vec![1u8; 1025]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            load_or_create_key(&path),
            Err(KeyError::BadLength { len: 1025, .. })
        ));
        fs::write(&path, [2u8; 40]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load_or_create_key(&path).ok(), Some(vec![2u8; 40]));
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("nope/bounce.key");
        let err = load_or_create_key(&path).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(
                |e| e.starts_with(&format!("cannot create key file {}: ", path.display()))
            ),
            "{err:?}"
        );
    }

    #[test]
    fn from_config() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut config = BounceConfig::default();
        assert!(matches!(verp_from_config(&config, dir.path()), Ok(None)));
        assert!(!dir.path().join("bounce.key").exists());
        config.domain = Some("bounce.acme.test".into());
        let verp = verp_from_config(&config, dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no verp"));
        assert!(dir.path().join("bounce.key").exists());
        let path = verp.return_path(1, 2, 3);
        assert!(path.starts_with("b-") && path.ends_with("@bounce.acme.test"));
        // The same key next time: the address still decodes.
        let again = verp_from_config(&config, dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no verp"));
        assert!(again.decode(&path).is_ok());
    }
}
