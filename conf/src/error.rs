//! [`ConfigError`], and the translation of toml and serde errors into it.

use std::io;
use std::path::{Path, PathBuf};

use crate::suggest;

/// Why a configuration could not be loaded.
///
/// Displays as one line: `cannot read <path>: <io error>` or
/// `<file>:<line>:<column>: <key>: <message>` (the `<key>: ` part is left out
/// when the error is not about a particular key, e.g. TOML syntax errors).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8...).
    ///
    /// The I/O error is part of the message rather than a `source()`, so that
    /// error reporters that walk the chain do not print it twice.
    #[error("cannot read {}: {io}", .path.display())]
    Read {
        /// The file, as the caller named it.
        path: PathBuf,
        /// What went wrong.
        io: io::Error,
    },
    /// The file was read but is not valid TOML or not a valid configuration.
    #[error("{}:{line}:{column}: {}{message}", .file.display(), key_prefix(.key))]
    Invalid {
        /// The file, as the caller named it.
        file: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column, in characters, of the offending key or value.
        column: usize,
        /// Dotted path of the offending key, e.g. `queue.batch_size`;
        /// empty when the error is not about one key (TOML syntax errors).
        key: String,
        /// What is wrong, e.g. `0 is out of range: allowed 1..=100000`.
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl ConfigError {
    /// A TOML syntax error, found before any key was looked at.
    pub(crate) fn from_syntax(err: &toml::de::Error, text: &str, file: &Path) -> ConfigError {
        invalid(file, text, err.span(), String::new(), err.message())
    }

    /// An error raised while turning the parsed document into a `Config`.
    pub(crate) fn from_deserialize(
        err: serde_path_to_error::Error<toml::de::Error>,
        text: &str,
        file: &Path,
    ) -> ConfigError {
        let depth = err.path().iter().count();
        let name = err.path().iter().next_back().map(ToString::to_string);
        let key = if depth == 0 {
            String::new()
        } else {
            err.path().to_string()
        };
        let inner = err.into_inner();
        let known = name
            .as_deref()
            .and_then(|name| Some((name, known_fields(inner.message(), name)?)));
        let message = match known {
            // Directly below the root, every key is a section.
            Some((name, known)) => unknown_key(name, &known, depth == 1),
            None => inner.message().to_owned(),
        };
        invalid(file, text, inner.span(), key, &message)
    }
}

fn invalid(
    file: &Path,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    key: String,
    message: &str,
) -> ConfigError {
    // Without a span (never seen in practice) point at the start of the file.
    let (line, column) = line_column(text, span.map_or(0, |span| span.start));
    ConfigError::Invalid {
        file: file.to_path_buf(),
        line,
        column,
        key,
        // The format promises one line per error.
        message: message.trim().lines().collect::<Vec<_>>().join("; "),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1; // terminates: 0 is always a boundary
    }
    let before = text.get(..offset).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, column)
}

/// The known field names from serde's message for an unknown field `name`:
/// "unknown field `name`, expected `a`", "... expected `a` or `b`",
/// "... expected one of `a`, `b`, `c`" or "... there are no fields".
/// `None` if `message` is not about unknown field `name`.
pub(crate) fn known_fields(message: &str, name: &str) -> Option<Vec<String>> {
    let rest = message.strip_prefix(&format!("unknown field `{name}`, "))?;
    // Field names hold no backticks, so every other piece is a name.
    Some(
        rest.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

fn unknown_key(name: &str, known: &[String], is_section: bool) -> String {
    let what = if is_section { "section" } else { "key" };
    let known_refs: Vec<&str> = known.iter().map(String::as_str).collect();
    match (suggest::closest(name, &known_refs), is_section) {
        (Some(hint), true) => format!("unknown {what}; did you mean `{hint}`?"),
        (Some(hint), false) => format!(
            "unknown {what}; did you mean `{hint}`? (known {what}s: {})",
            known_refs.join(", ")
        ),
        (None, _) if known.is_empty() => format!("unknown {what} (this section takes no keys)"),
        (None, _) => format!("unknown {what} (known {what}s: {})", known_refs.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_of_offsets() {
        let text = "ab\ncé\nd";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 4), (2, 2));
        assert_eq!(line_column(text, 5), (2, 2)); // inside "é": its start
        assert_eq!(line_column(text, 7), (3, 1));
        assert_eq!(line_column(text, 8), (3, 2)); // end of input
        assert_eq!(line_column(text, 99), (3, 2));
        assert_eq!(line_column("", 3), (1, 1));
    }

    #[test]
    fn serde_unknown_field_messages() {
        // Pins serde's wording: if it changes, suggestions would silently vanish.
        let known = |message: &str| known_fields(message, "x");
        assert_eq!(
            known("unknown field `x`, expected one of `a`, `b`, `c`"),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            known("unknown field `x`, expected `a` or `b`"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            known("unknown field `x`, expected `a`"),
            Some(vec!["a".into()])
        );
        assert_eq!(
            known("unknown field `x`, there are no fields"),
            Some(vec![])
        );
        assert_eq!(known("unknown field `y`, expected `a`"), None);
        assert_eq!(known("invalid type: integer `5`, expected `a`"), None);

        use serde::de::Error as _;
        let err = toml::de::Error::unknown_field("x", &["a", "b", "c"]);
        assert_eq!(
            known(err.message()),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        let err = toml::de::Error::unknown_field("x", &["a", "b"]);
        assert_eq!(known(err.message()), Some(vec!["a".into(), "b".into()]));
        let err = toml::de::Error::unknown_field("x", &[]);
        assert_eq!(known(err.message()), Some(vec![]));
    }

    #[test]
    fn unknown_key_messages() {
        let known = ["dir".to_owned()];
        assert_eq!(
            unknown_key("dri", &known, false),
            "unknown key; did you mean `dir`? (known keys: dir)"
        );
        assert_eq!(
            unknown_key("zzzzzz", &known, false),
            "unknown key (known keys: dir)"
        );
        assert_eq!(
            unknown_key("a", &[], false),
            "unknown key (this section takes no keys)"
        );
        assert_eq!(
            unknown_key("dirr", &known, true),
            "unknown section; did you mean `dir`?"
        );
    }

    #[test]
    fn display() {
        let err = ConfigError::Invalid {
            file: PathBuf::from("volley.toml"),
            line: 1,
            column: 2,
            key: String::new(),
            message: "boom".into(),
        };
        assert_eq!(err.to_string(), "volley.toml:1:2: boom");
        let err = ConfigError::Read {
            path: PathBuf::from("etc/v.toml"),
            io: io::Error::new(io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(err.to_string(), "cannot read etc/v.toml: gone");
    }
}
