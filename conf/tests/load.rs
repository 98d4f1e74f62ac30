//! End to end: `Config::load` on real files.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use volley_conf::{Config, ConfigError};

/// Writes `text` to `volley.toml` in a fresh directory.
fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("tempdir: {err}"));
    let path = dir.path().join("volley.toml");
    std::fs::write(&path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    (dir, path)
}

/// Loads `text` from a file and returns the error message with the file name
/// replaced by `volley.toml`.
fn error(text: &str) -> String {
    let (_dir, path) = file(text);
    match Config::load(&path) {
        Ok(config) => panic!("expected an error, loaded {config:?}"),
        Err(err) => {
            let message = err.to_string();
            let prefix = format!("{}:", path.display());
            assert!(message.starts_with(&prefix), "{message}");
            message.replacen(&prefix, "volley.toml:", 1)
        }
    }
}

#[test]
fn loads_values() {
    let (_dir, path) = file(
        "[spool]\ndir = \"/srv/volley\"\n\n[queue]\nbatch_size = 500\nsync_interval = \"250ms\"\n",
    );
    let config = Config::load(&path).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.spool.dir, Path::new("/srv/volley"));
    assert_eq!(config.queue.batch_size, 500);
    assert_eq!(config.queue.sync_interval, Duration::from_millis(250));
}

#[test]
fn empty_file_is_default() {
    let (_dir, path) = file("");
    assert_eq!(Config::load(&path).ok(), Some(Config::default()));
}

#[test]
fn example_file_is_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("volley.example.toml");
    let config = Config::load(&path).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config, Config::default());
}

#[test]
fn unknown_key() {
    let (_dir, path) = file("[queue]\nbatch_size = 5\nbatchsize = 10\n");
    match Config::load(&path) {
        Err(ConfigError::Invalid {
            file,
            line,
            column,
            key,
            message,
        }) => {
            assert_eq!(file, path);
            assert_eq!((line, column), (3, 1));
            assert_eq!(key, "queue.batchsize");
            assert_eq!(
                message,
                "unknown key; did you mean `batch_size`? (known keys: batch_size, sync_interval, window, group_window, group_messages, group_bytes, seal_after)"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_section() {
    assert_eq!(
        error("[spool]\ndir = \"/q\"\n\n[spoool]\n"),
        "volley.toml:4:2: spoool: unknown section; did you mean `spool`?"
    );
}

#[test]
fn batch_size_out_of_range() {
    assert_eq!(
        error("[queue]\nbatch_size = 0\n"),
        "volley.toml:2:14: queue.batch_size: 0 is out of range: allowed 1..=100000"
    );
    assert_eq!(
        error("[queue]\nbatch_size = 100001\n"),
        "volley.toml:2:14: queue.batch_size: 100001 is out of range: allowed 1..=100000"
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        error("[queue]\nbatch_size = 5\nsync_interval = \"fast\"\n"),
        "volley.toml:3:17: queue.sync_interval: invalid duration \"fast\": \
         expected a time span like \"1s\" or \"250ms\" (expected number at 0)"
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        error("[queue]\nbatch_size = \"ten\"\n"),
        "volley.toml:2:14: queue.batch_size: invalid type: string \"ten\", \
         expected an integer in 1..=100000"
    );
}

#[test]
fn syntax_error() {
    assert_eq!(
        error("[spool]\ndir = \"/q\"\n[queue]\nbatch_size = = 3\n"),
        "volley.toml:4:14: extra `=`, expected nothing"
    );
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("tempdir: {err}"));
    let path = dir.path().join("missing.toml");
    let err = Config::load(&path).err();
    match &err {
        Some(ConfigError::Read { path: named, io }) => {
            assert_eq!(named, &path);
            assert_eq!(io.kind(), ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    #[cfg(target_os = "linux")]
    assert_eq!(
        err.map(|err| err.to_string()),
        Some(format!(
            "cannot read {}: No such file or directory (os error 2)",
            path.display()
        ))
    );
}

#[test]
fn relative_path_is_reported_as_given() {
    let path = Path::new("no/such/dir/volley.toml");
    let message = Config::load(path).err().map(|err| err.to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.starts_with("cannot read no/such/dir/volley.toml: ")),
        "{message:?}"
    );
}

#[test]
fn discover_with_explicit_path() {
    let (_dir, path) = file("[queue]\nbatch_size = 9\n");
    let config = Config::discover(Some(&path)).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.queue.batch_size, 9);
}
