//! [`TemplateError`]: why a template could not be loaded, stored or compiled.

use std::io;
use std::path::PathBuf;

/// Why a template could not be loaded, read back from the content store, compiled,
/// or used with a set of merge fields. Each variant displays as one line naming the
/// file, part and position at fault.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A file (the template or one it names) could not be read.
    #[error("cannot read {}: {io}", .path.display())]
    Read {
        /// The file, as named (relative names joined to the template's directory).
        path: PathBuf,
        /// What went wrong; part of the message rather than a `source()`.
        io: io::Error,
    },
    /// The TOML template is not valid TOML or has an unknown or mistyped key.
    #[error("{}:{line}:{column}: {}{message}", .file.display(), key_prefix(.key))]
    Toml {
        /// The template file.
        file: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// Dotted path of the offending key (`attachments[0].pth`), empty for syntax
        /// errors.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The template file parses but does not make a template (both `text` and
    /// `text_file`, no body, a raw message without a header section...).
    #[error("{}: {message}", .file.display())]
    Invalid {
        /// The template file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Bytes from the content store are not a stored template.
    #[error("stored template: {0}")]
    Stored(String),
    /// A placeholder is malformed: unclosed, unknown filter, bad name.
    #[error("{part}:{line}:{column}: {message}")]
    Syntax {
        /// The part holding it: `subject`, `text`, `html`, `header List-Unsubscribe`,
        /// `raw body`.
        part: String,
        /// 1-based line within the part.
        line: usize,
        /// 1-based column within the line, in characters.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A part of the template is not usable as written (an address that does not
    /// parse, a reserved header name, no body...).
    #[error("{part}: {message}")]
    Spec {
        /// The field at fault: `from`, `reply_to`, `headers.Date`, `attachments[1]`...
        part: String,
        /// What is wrong.
        message: String,
    },
    /// Placeholders without a default that no recipient column provides.
    #[error(
        "no column for merge field{} {}: add the column or give a default, \
         e.g. {{{{ name | default(\"...\") }}}}",
        if .0.len() == 1 { "" } else { "s" },
        .0.join(", ")
    )]
    MissingFields(Vec<String>),
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl TemplateError {
    pub(crate) fn spec(part: impl Into<String>, message: impl Into<String>) -> TemplateError {
        TemplateError::Spec {
            part: part.into(),
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1; // terminates: 0 is always a boundary
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            TemplateError::MissingFields(vec!["a".into(), "b".into()]).to_string(),
            "no column for merge fields a, b: add the column or give a default, \
             e.g. {{ name | default(\"...\") }}"
        );
        assert_eq!(
            TemplateError::Syntax {
                part: "subject".into(),
                line: 1,
                column: 7,
                message: "unclosed placeholder".into()
            }
            .to_string(),
            "subject:1:7: unclosed placeholder"
        );
        assert_eq!(line_column("ab\ncé\nd", 5), (2, 2));
        assert_eq!(line_column("", 3), (1, 1));
    }
}
