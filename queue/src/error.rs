//! Errors of the queue: every one names the file it is about.

use std::io;
use std::path::{Path, PathBuf};

use crate::builder::BuildError;
use crate::format::FormatError;

/// Anything that can go wrong in the spool or with a batch file.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A batch file fails validation.
    #[error("{}: {fault}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (in the message, so not also a `source()`).
        fault: FormatError,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {}: {io}", path.display())]
    Io {
        /// What was being done ("open", "rename", "msync", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error (in the message, so not also a `source()`).
        io: io::Error,
    },
    /// Another process holds the spool's lock.
    #[error("spool {} is in use by another volley process (lock held on {})", root.display(), root.join("lock").display())]
    Locked {
        /// The spool directory.
        root: PathBuf,
    },
    /// A slot index past the end of the batch.
    #[error("{}: no recipient {index} (batch has {len})", path.display())]
    NoSuchRecipient {
        /// The batch file.
        path: PathBuf,
        /// The index asked for.
        index: usize,
        /// Recipients in the batch.
        len: usize,
    },
    /// A batch was declared done while some recipients are not final.
    #[error("{}: {unfinished} recipients are not final yet", path.display())]
    NotFinished {
        /// The batch file.
        path: PathBuf,
        /// How many are pending, in flight or deferred.
        unfinished: u32,
    },
    /// A batch with the same campaign and batch id is already in the spool.
    #[error("{} already exists: batch ids must be unique within a campaign", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The batch could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl QueueError {
    /// An I/O error while doing `action` on `path`.
    pub fn io(action: &'static str, path: &Path, io: io::Error) -> QueueError {
        QueueError::Io {
            action,
            path: path.to_owned(),
            io,
        }
    }
}
