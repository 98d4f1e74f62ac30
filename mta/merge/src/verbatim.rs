//! Received messages in the content store: kept verbatim and relayed byte for
//! byte, never merged (a message may well contain `{{`).
//!
//! # Stored form
//!
//! Two files in the content directory, both named by the SHA-256 of their bytes:
//!
//! - `<message hash>.eml`: the message exactly as it will be sent (CRLF line
//!   ends, the receiving server's `Received:` field first), no envelope;
//! - `<hash>.json`: `{"verbatim":{"mail_from":"a@b.test","message":"<message hash>"}}`
//!   (compact, keys in this order), the envelope sender (`""` for the null
//!   sender `<>`) and the message file's hash. `hash` is the `content_hash` of
//!   the batches that deliver the message, as for templates.
//!
//! A template reader refuses the JSON (unknown key `verbatim`), so an older
//! volley does not mistake a relayed message for a template.
//!
//! What this does not do: decide whom the message goes to (the batches do) or
//! change it: no Date or Message-ID, no dot-stuffing (the SMTP layer does that).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::TemplateError;
use super::spec::{hash_hex, sha256, stored_path};

/// A received message to relay as it is, with its envelope sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verbatim {
    /// The envelope sender (MAIL FROM) without angle brackets; empty for `<>`.
    pub mail_from: String,
    /// The whole message, headers and body, CRLF line ends.
    pub message: Bytes,
}

/// The JSON of the stored form (see the module documentation).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    verbatim: StoredRef,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRef {
    mail_from: String,
    message: String,
}

/// Makes temporary names unique among the threads of this process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// The file holding the message bytes whose SHA-256 is `hash`.
pub fn message_path(content_dir: &Path, hash: &[u8; 32]) -> PathBuf {
    content_dir.join(format!("{}.eml", hash_hex(hash)))
}

impl Verbatim {
    /// Stores the message and its envelope sender in `content_dir` (created if
    /// needed) and returns the content hash batches refer to. Durable when it
    /// returns: each file is written under a temporary name, fsynced and renamed
    /// into place (files already there, being identical, are kept), then the
    /// directory is fsynced.
    pub fn store(
        content_dir: &Path,
        mail_from: &str,
        message: &[u8],
    ) -> Result<[u8; 32], TemplateError> {
        fs::create_dir_all(content_dir).map_err(|io| TemplateError::Read {
            path: content_dir.to_owned(),
            io,
        })?;
        let message_hash = sha256(message);
        write_new(
            content_dir,
            &message_path(content_dir, &message_hash),
            message,
        )?;
        let json = Verbatim::stored_bytes(mail_from, &message_hash);
        let hash = sha256(&json);
        write_new(content_dir, &stored_path(content_dir, &hash), &json)?;
        fs::File::open(content_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|io| TemplateError::Read {
                path: content_dir.to_owned(),
                io,
            })?;
        Ok(hash)
    }

    /// The bytes of `<hash>.json` for a message with hash `message_hash`.
    fn stored_bytes(mail_from: &str, message_hash: &[u8; 32]) -> Vec<u8> {
        let stored = Stored {
            verbatim: StoredRef {
                mail_from: mail_from.to_owned(),
                message: hash_hex(message_hash),
            },
        };
        // Two strings: serializing cannot fail.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Whether bytes of the content store are a verbatim reference rather than a
    /// template (a cheap check on the first key, before parsing).
    pub(crate) fn is_stored(bytes: &[u8]) -> bool {
        bytes.starts_with(b"{\"verbatim\":")
    }

    /// The message hash a verbatim reference (`<hash>.json`'s bytes) points
    /// to; `None` for a template or anything else.
    pub fn message_of(stored: &[u8]) -> Option<[u8; 32]> {
        if !Verbatim::is_stored(stored) {
            return None;
        }
        let stored: Stored = serde_json::from_slice(stored).ok()?;
        unhex(&stored.verbatim.message)
    }

    /// Reads the message a verbatim reference (`<hash>.json`'s bytes, already
    /// checked against their hash) points to, and checks it against its hash.
    pub(crate) fn load(content_dir: &Path, stored: &[u8]) -> Result<Verbatim, TemplateError> {
        let stored: Stored = serde_json::from_slice(stored)
            .map_err(|err| TemplateError::Stored(format!("verbatim message: {err}")))?;
        let hash = unhex(&stored.verbatim.message).ok_or_else(|| {
            TemplateError::Stored(format!(
                "verbatim message: bad hash {:?}",
                stored.verbatim.message
            ))
        })?;
        let path = message_path(content_dir, &hash);
        let message = fs::read(&path).map_err(|io| TemplateError::Read {
            path: path.clone(),
            io,
        })?;
        if sha256(&message) != hash {
            return Err(TemplateError::Stored(format!(
                "{}: contents do not match the name",
                path.display()
            )));
        }
        Ok(Verbatim {
            mail_from: stored.verbatim.mail_from,
            message: Bytes::from(message),
        })
    }
}

/// Writes `bytes` to `path` through a temporary name, fsynced, unless `path`
/// exists (content-addressed: it holds the same bytes); then its modification
/// time is set to now, so that the engine's sweep does not remove it before the
/// batches that refer to it are written (if that fails, it is written again).
/// The caller fsyncs `dir`.
fn write_new(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), TemplateError> {
    let touched = fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()));
    if touched.is_ok() {
        return Ok(());
    }
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|io| {
        let _ = fs::remove_file(&tmp);
        TemplateError::Read {
            path: path.to_owned(),
            io,
        }
    })
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TemplateSpec;

    #[test]
    fn stores_and_loads_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let message = b"Subject: {{ not_a_placeholder }}\r\n\r\n\xff8bit\r\n.\r\n";
        let hash = Verbatim::store(dir.path(), "", message).unwrap();
        let json = fs::read(stored_path(dir.path(), &hash)).unwrap();
        assert_eq!(sha256(&json), hash);
        let message_hash = hash_hex(&sha256(message));
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            format!("{{\"verbatim\":{{\"mail_from\":\"\",\"message\":\"{message_hash}\"}}}}")
        );
        assert!(Verbatim::is_stored(&json));
        let loaded = Verbatim::load(dir.path(), &json).unwrap();
        assert_eq!(loaded.mail_from, "");
        assert_eq!(&loaded.message[..], message);
        // Stored twice: same files, same hash.
        assert_eq!(Verbatim::store(dir.path(), "", message).unwrap(), hash);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
        // A template reader refuses it.
        assert!(TemplateSpec::from_stored(&json).is_err());
        assert!(!Verbatim::is_stored(&TemplateSpec::default().to_stored()));
    }

    #[test]
    fn a_tampered_or_missing_message_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hash = Verbatim::store(dir.path(), "a@b.test", b"Subject: x\r\n\r\nhi\r\n").unwrap();
        let json = fs::read(stored_path(dir.path(), &hash)).unwrap();
        let eml = message_path(dir.path(), &sha256(b"Subject: x\r\n\r\nhi\r\n"));
        fs::write(&eml, b"Subject: y\r\n\r\nhi\r\n").unwrap();
        let err = Verbatim::load(dir.path(), &json).unwrap_err().to_string();
        assert!(err.contains("do not match"), "{err}");
        fs::remove_file(&eml).unwrap();
        let err = Verbatim::load(dir.path(), &json).unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
        let err = Verbatim::load(
            dir.path(),
            b"{\"verbatim\":{\"mail_from\":\"\",\"message\":\"zz\"}}",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad hash"), "{err}");
    }
}
