//! The drop directory (`SPOOL/maildrop/`, Postfix's `maildrop` and `postdrop`):
//! where `volley sendmail` leaves a message when a daemon holds the spool and
//! no submission listener takes it, whatever `[relay] networks` says. The file
//! is durable before sendmail exits 0; the daemon picks the files up (at start
//! and every second), queues each message in the spool as the listener would
//! and removes the file.
//!
//! A file is written to a hidden temporary name, fsynced, renamed into place
//! and the directory fsynced, so the daemon never sees half a file. A crash of
//! the daemon between queueing a message and removing its file queues it again
//! at the next start (the one duplicate window, as in Postfix's pickup).
//!
//! Format (version 1): text lines, then a blank line, then the message bytes
//! as they are (CRLF lines):
//!
//! ```text
//! volley-maildrop 1
//! from SENDER            (empty for <>)
//! ret FULL|HDRS          (optional)
//! envid XTEXT            (optional)
//! rcpt ADDRESS NOTIFY|- ORCPT-XTEXT|-   (one per recipient)
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use volley_smtp::dsn::{xtext_decode, xtext_encode, Notify, RcptDsn, Ret};

use crate::deposit::{Dsn, SpoolDeposit};

/// The first line of a drop file.
const MAGIC: &str = "volley-maildrop 1";

/// Why a drop file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// The file system failed.
    #[error("{action} {}: {io}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        io: std::io::Error,
    },
    /// A file is not a drop file of this version.
    #[error("{}: not a drop file: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A message as dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Envelope sender, empty for `<>`.
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// What the sender asked to be told.
    pub dsn: Dsn,
    /// The message, CRLF lines.
    pub message: Vec<u8>,
}

/// The drop directory of the spool at `spool_root`.
pub fn dir(spool_root: &Path) -> PathBuf {
    spool_root.join("maildrop")
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DropError + 'a {
    move |io| DropError::Io {
        action,
        path: path.to_owned(),
        io,
    }
}

/// A drop file's bytes.
pub fn encode(d: &Dropped) -> Vec<u8> {
    let mut out = format!("{MAGIC}\nfrom {}\n", d.sender);
    if let Some(ret) = d.dsn.ret {
        out.push_str(&format!("ret {}\n", ret.name()));
    }
    if let Some(envid) = &d.dsn.envid {
        out.push_str(&format!("envid {}\n", xtext_encode(envid)));
    }
    for (i, r) in d.recipients.iter().enumerate() {
        let rd = d.dsn.rcpts.get(i).cloned().unwrap_or_default();
        out.push_str(&format!(
            "rcpt {r} {} {}\n",
            rd.notify.map_or("-".to_owned(), Notify::text),
            rd.orcpt.as_deref().map_or("-".to_owned(), xtext_encode)
        ));
    }
    out.push('\n');
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&d.message);
    bytes
}

/// Reads a drop file's bytes (`path` names it in errors).
pub fn decode(bytes: &[u8], path: &Path) -> Result<Dropped, DropError> {
    let bad = |reason: &str| DropError::Malformed {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let end = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or_else(|| bad("no end of its envelope"))?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| bad("its envelope is not UTF-8"))?;
    let mut lines = head.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad("no volley-maildrop 1 line"));
    }
    let mut d = Dropped {
        sender: String::new(),
        recipients: Vec::new(),
        dsn: Dsn::default(),
        message: bytes[end + 2..].to_vec(),
    };
    let mut from = false;
    for line in lines {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "from" => {
                d.sender = value.to_owned();
                from = true;
            }
            "ret" => d.dsn.ret = Some(Ret::parse(value).ok_or_else(|| bad("bad ret"))?),
            "envid" => d.dsn.envid = Some(xtext_decode(value).ok_or_else(|| bad("bad envid"))?),
            "rcpt" => {
                let mut parts = value.split(' ');
                let (Some(addr), Some(notify), Some(orcpt), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad("a rcpt line needs an address, NOTIFY and ORCPT"));
                };
                let notify = match notify {
                    "-" => None,
                    n => Some(Notify::parse(n).ok_or_else(|| bad("bad NOTIFY"))?),
                };
                let orcpt = match orcpt {
                    "-" => None,
                    o => Some(xtext_decode(o).ok_or_else(|| bad("bad ORCPT"))?),
                };
                d.recipients.push(addr.to_owned());
                d.dsn.rcpts.push(RcptDsn { notify, orcpt });
            }
            _ => return Err(bad(&format!("unknown line {key:?}"))),
        }
    }
    if !from || d.recipients.is_empty() {
        return Err(bad("no sender line, or no recipient"));
    }
    Ok(d)
}

/// Writes `d` into the drop directory of `spool_root`, durably; answers the
/// file's name (its queue id until the daemon takes it).
pub fn write(spool_root: &Path, d: &Dropped, unique: u64) -> Result<String, DropError> {
    let dir = dir(spool_root);
    if !dir.exists() {
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    }
    let name = format!("{:x}-{unique:016x}", std::process::id());
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(&name);
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(&encode(d))
        .and_then(|()| file.sync_all())
        .map_err(io("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    File::open(&dir)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", &dir))?;
    Ok(name)
}

/// Makes the drop directory writable by every local user, as sendmail runs as
/// any of them, and listable by none but root (mode 1733, like Postfix's
/// maildrop): called by the daemon that picks it up.
pub fn prepare(spool_root: &Path) -> Result<(), DropError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir(spool_root);
    fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1733)).map_err(io("chmod", &dir))
}

/// Queues every complete drop file into the spool through `deposit` and
/// removes it; a malformed one is moved aside (`NAME.bad`) with a logged
/// reason. Answers how many messages were queued.
pub fn pickup(spool_root: &Path, deposit: &SpoolDeposit) -> Result<usize, DropError> {
    let dir = dir(spool_root);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("list", &dir)(e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.ends_with(".bad"))
        .collect();
    names.sort();
    let mut queued = 0;
    for name in names {
        let path = dir.join(&name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("read", &path)(e)),
        };
        let dropped = match decode(&bytes, &path) {
            Ok(d) => d,
            Err(err) => {
                tracing::error!(%err, "malformed drop file set aside");
                let _ = fs::rename(&path, dir.join(format!("{name}.bad")));
                continue;
            }
        };
        match deposit.store_dsn(
            &dropped.sender,
            &dropped.recipients,
            &dropped.message,
            &dropped.dsn,
        ) {
            Ok(done) => {
                tracing::info!(drop = %name, queue_id = %done.queue_id(), "picked up from the drop directory");
                fs::remove_file(&path).map_err(io("remove", &path))?;
                queued += 1;
            }
            Err(err) => {
                // Kept for the next pickup (a full disk passes); logged each time.
                tracing::warn!(drop = %name, %err, "cannot queue a dropped message yet");
            }
        }
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_files_round_trip_and_malformed_ones_are_refused() {
        let d = Dropped {
            sender: "ann@x.test".into(),
            recipients: vec!["bob@y.test".into(), "cy@z.test".into()],
            dsn: Dsn {
                ret: Some(Ret::Hdrs),
                envid: Some("id 1+2".into()),
                rcpts: vec![
                    RcptDsn {
                        notify: Notify::parse("SUCCESS,FAILURE"),
                        orcpt: Some("rfc822;bob@y.test".into()),
                    },
                    RcptDsn::default(),
                ],
            },
            message: b"Subject: x\r\n\r\nbody\n\nmore\r\n".to_vec(),
        };
        let p = Path::new("f");
        assert_eq!(decode(&encode(&d), p).unwrap(), d);
        let null_sender = Dropped {
            sender: String::new(),
            ..d.clone()
        };
        assert_eq!(decode(&encode(&null_sender), p).unwrap(), null_sender);
        for bad in [
            &b"garbage"[..],
            b"volley-maildrop 2\nfrom a\nrcpt b - -\n\nx",
            b"volley-maildrop 1\nfrom a\n\nx",
            b"volley-maildrop 1\nfrom a\nrcpt b\n\nx",
            b"volley-maildrop 1\nfrom a\nrcpt b BOGUS -\n\nx",
        ] {
            assert!(
                decode(bad, p).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
