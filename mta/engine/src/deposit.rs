//! Accepted messages into the spool: [`SpoolDeposit`], the [`Deposit`] of
//! `volley run`'s SMTP listener, also used by `volley sendmail` when no daemon
//! runs.
//!
//! A message for outside recipients (deduplicated, sorted by domain) becomes
//! one record of a *relay batch* ([`volley_queue::relay`], format v2): the
//! envelope, each recipient's DSN parameters and the content, relayed byte for
//! byte (never merged). With [`SpoolDeposit::group_commit`] (the listener of
//! `volley run`) the messages of all sessions are appended to one shared open
//! batch and made durable in groups, one `fdatasync` for each ([`GroupCommit`]);
//! otherwise (`volley sendmail` without a daemon, reports, the drop directory)
//! each is written and synced as a batch of its own. Either way
//! [`SpoolDeposit::store`] returns only once the message is durable, so the
//! `250` is sent only for a message a crash cannot lose. A relay batch's id is
//! [`INBOUND_ID_BASE`] plus microseconds since the epoch, never a campaign's id
//! (milliseconds since the epoch, see `Campaign::next_id`); the queue id the
//! client is told is that id and the message's number in the batch
//! ([`Deposited::queue_id`]). Recipients in volley's own domains (`[relay]
//! domains`) get the message in `SPOOL/inbound/<queue id>.eml` instead
//! ([`deliver_local`]), fsynced too.
//!
//! With a [`Feedback`] ([`SpoolDeposit::feedback`]), the VERP domain is local
//! too, a message to a forged VERP address is refused before anything is
//! stored ([`InboundError::Forged`], a `550 5.7.1` to the client), and what is
//! stored in `inbound/` is then classified (bounces, complaints, unsubscribe
//! requests: see [`crate::feedback`]) before [`SpoolDeposit::store`] returns,
//! hence before the `250`.
//!
//! What it does not do: deliver (the engine does, in its next round: pass a
//! [`Notify`] to wake it), check suppressions (the engine does before sending).

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tracing::info;
use volley_queue::relay::{MessageRecord, RelayRecipient};
use volley_queue::{BuildError, QueueError, Spool};

use crate::feedback::Feedback;
use crate::listen::{Deposit, DepositError};
use volley_inbound::VerpError;
use volley_queue::ids::{queue_id, INBOUND_ID_BASE};
use volley_smtp::dsn::{RcptDsn, Ret};

use volley_smtp::server::Envelope;

mod group;
pub use group::{GroupCommit, GroupSettings};

/// Why a message could not be stored (the client gets a 4xx and tries again).
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The spool failed (a batch could not be written).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The group commit covering the message failed.
    #[error("group commit: {0}")]
    Commit(String),
    /// A recipient is not local@domain.
    #[error("recipient {0}")]
    Build(#[from] BuildError),
    /// The inbound file could not be written.
    #[error("cannot write {}: {io}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        io: std::io::Error,
    },
    /// The envelope names nobody.
    #[error("no recipients")]
    NoRecipients,
    /// A recipient is at our VERP domain with our prefix, but its token is
    /// malformed or was not made with our key: refused for good.
    #[error("recipient {rcpt}: {error}")]
    Forged {
        /// The recipient.
        rcpt: String,
        /// Malformed or forged.
        error: VerpError,
    },
}

/// Where one message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deposited {
    /// The campaign id of its relay batch (or, for a message with local
    /// recipients only, the id its inbound file is named by).
    pub id: u64,
    /// Its number in the relay batch.
    pub number: u32,
    /// Relay batches written for the outside recipients: 1, or 0 if none.
    pub batches: usize,
    /// Outside recipients queued (after removing duplicates).
    pub remote: usize,
    /// The inbound file, if some recipients were in a local domain.
    pub local_file: Option<PathBuf>,
}

impl Deposited {
    /// The queue id the sender is told and the log names: the relay batch's id
    /// and the message's number in it (`<16 hex digits>.<n>`); for a message
    /// with local recipients only, the id alone.
    pub fn queue_id(&self) -> String {
        if self.batches == 0 {
            queue_id(self.id)
        } else {
            format!("{}.{}", queue_id(self.id), self.number)
        }
    }
}

/// Stores accepted messages in a spool: see the [module documentation](self).
#[derive(Debug)]
pub struct SpoolDeposit {
    spool: Spool,
    local_domains: HashSet<String>,
    batch_size: usize,
    last_id: Arc<AtomicU64>,
    wake: Option<Arc<Notify>>,
    feedback: Option<Arc<Feedback>>,
    group: Option<GroupCommit>,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A new relay id from `last`, increasing within the process.
fn next_id(last: &AtomicU64) -> u64 {
    let now = INBOUND_ID_BASE + unix_micros();
    let previous = last
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    now.max(previous + 1)
}

impl SpoolDeposit {
    /// Deposits into `spool` (open for writing: its own handle, or a
    /// [`Spool::try_clone`] of the engine's), with `batch_size` messages per
    /// relay batch ([`GroupSettings`]). Recipients whose domain is in
    /// `local_domains` (any case) go to
    /// [`deliver_local`]. Each message is written and synced on its own until
    /// [`SpoolDeposit::group_commit`] is called.
    pub fn new(
        spool: Spool,
        batch_size: u32,
        local_domains: impl IntoIterator<Item = String>,
    ) -> SpoolDeposit {
        SpoolDeposit {
            spool,
            local_domains: local_domains
                .into_iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            batch_size: batch_size.max(1) as usize,
            last_id: Arc::new(AtomicU64::new(0)),
            wake: None,
            feedback: None,
            group: None,
        }
    }

    /// Calls `notify_one` on `wake` after each message stored for outside
    /// recipients, so that the delivery loop starts a round at once. Call
    /// before [`SpoolDeposit::group_commit`].
    pub fn wake(mut self, wake: Arc<Notify>) -> SpoolDeposit {
        self.wake = Some(wake);
        self
    }

    /// Commits messages in groups ([`GroupCommit`], its thread started here):
    /// for a listener with many sessions. Messages larger than the group's byte
    /// budget are still written on their own.
    pub fn group_commit(mut self, settings: GroupSettings) -> Result<SpoolDeposit, InboundError> {
        let group = GroupCommit::start(
            group::RelayDirs::of(&self.spool),
            settings,
            Arc::clone(&self.last_id),
            self.wake.clone(),
        )
        .map_err(|io| InboundError::Io {
            path: self.spool.open_dir(),
            io,
        })?;
        self.group = Some(group);
        Ok(self)
    }

    /// Classifies what is stored for local recipients with `feedback` (and
    /// treats its VERP domain as local); see the [module documentation](self).
    pub fn feedback(mut self, feedback: Arc<Feedback>) -> SpoolDeposit {
        if let Some(verp) = feedback.verp() {
            self.local_domains.insert(verp.domain().to_owned());
        }
        self.feedback = Some(feedback);
        self
    }

    /// Whether `address` is in one of the local domains (an address without a
    /// domain, such as `postmaster`, is local too).
    pub fn is_local(&self, address: &str) -> bool {
        match address.rsplit_once('@') {
            Some((_, domain)) => {
                let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                self.local_domains.contains(&domain)
            }
            None => true,
        }
    }

    /// [`SpoolDeposit::store_dsn`] without DSN parameters.
    pub fn store(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[u8],
    ) -> Result<Deposited, InboundError> {
        self.store_dsn(mail_from, rcpt_to, message, &Dsn::default())
    }

    /// Stores `message` (sent as it is: CRLF line ends expected) from
    /// `mail_from` (without angle brackets, empty for `<>`) for `rcpt_to`,
    /// durably, with what its sender asked to be told (`dsn`: kept in the
    /// batches' [`DSN_FIELDS`]); see the [module documentation](self).
    pub fn store_dsn(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[u8],
        dsn: &Dsn,
    ) -> Result<Deposited, InboundError> {
        self.store_from(None, mail_from, rcpt_to, message, dsn)
    }

    /// [`SpoolDeposit::store_dsn`] for a message received from `client` (the
    /// feedback processing trusts complaints from `[bounce] fbl_sources`).
    pub fn store_from(
        &self,
        client: Option<std::net::IpAddr>,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[u8],
        dsn: &Dsn,
    ) -> Result<Deposited, InboundError> {
        let (local, remote): (Vec<&str>, Vec<&str>) = rcpt_to
            .iter()
            .map(String::as_str)
            .partition(|r| self.is_local(r));
        let remote = sorted_unique(&remote);
        if remote.is_empty() && local.is_empty() {
            return Err(InboundError::NoRecipients);
        }
        if let Some((rcpt, error)) = self.feedback.as_ref().and_then(|f| f.forged(&local)) {
            return Err(InboundError::Forged {
                rcpt: rcpt.to_owned(),
                error,
            });
        }
        let mut placed = None;
        if !remote.is_empty() {
            let record = relay_record(mail_from, &remote, rcpt_to, message, dsn)?;
            let n = remote.len();
            placed = Some(match &self.group {
                Some(group) if group.takes(message.len(), n) => group
                    .submit(record, message.to_vec(), n as u32)
                    .map_err(InboundError::Commit)?,
                _ => self.write_alone(&record, message, n as u32)?,
            });
        }
        let (id, number) = placed.unwrap_or_else(|| (next_id(&self.last_id), 0));
        let deposited = Deposited {
            id,
            number,
            batches: usize::from(placed.is_some()),
            remote: remote.len(),
            local_file: None,
        };
        let local_file = if local.is_empty() {
            None
        } else {
            Some(deliver_local(
                self.spool.root(),
                &deposited.queue_id(),
                mail_from,
                &local,
                message,
            )?)
        };
        info!(queue_id = %deposited.queue_id(), from = %mail_from, remote = remote.len(),
            local = local.len(), size = message.len(), "message queued");
        if let (Some(feedback), Some(file)) = (&self.feedback, &local_file) {
            let local: Vec<String> = local.iter().map(|r| (*r).to_owned()).collect();
            feedback.process_from(client, mail_from, &local, message, file, SystemTime::now());
        }
        if placed.is_some() && self.group.is_none() {
            if let Some(wake) = &self.wake {
                wake.notify_one();
            }
        }
        Ok(Deposited {
            local_file,
            ..deposited
        })
    }

    /// Writes one message as a relay batch of its own, synced and sealed into
    /// `active/` when it returns.
    fn write_alone(
        &self,
        record: &MessageRecord,
        content: &[u8],
        recipients: u32,
    ) -> Result<group::Placed, InboundError> {
        let capacity = (self.batch_size as u32).max(recipients);
        let mut batch = group::create(&group::RelayDirs::of(&self.spool), &self.last_id, capacity)?;
        let id = batch.campaign_id();
        // Straight from the caller's buffer: a large message is not copied.
        let number = batch.write_record(record, content, recipients)?;
        batch.commit()?;
        batch.seal(&self.spool.active_dir())?;
        Ok((id, number))
    }
}

/// The relay batch record of one message: its sender, the `recipients` (sorted,
/// unique), each with the DSN parameters it was given (found by its place in
/// `rcpt_to`, parallel to `dsn.rcpts`), and the content.
fn relay_record(
    mail_from: &str,
    recipients: &[String],
    rcpt_to: &[String],
    message: &[u8],
    dsn: &Dsn,
) -> Result<MessageRecord, InboundError> {
    let ret = dsn.ret.map_or("", Ret::name);
    let envid = dsn.envid.as_deref().unwrap_or_default();
    // Each recipient's address parts, NOTIFY text and ORCPT; the values below
    // borrow them (no copy per value).
    let mut each: Vec<(&str, &str, String, &str)> = Vec::with_capacity(recipients.len());
    // Each address's first `RCPT TO` and its parameters, looked up once per
    // recipient (a message may have a thousand): only when some were given.
    let mut given_of: std::collections::HashMap<&str, &RcptDsn> = Default::default();
    if dsn
        .rcpts
        .iter()
        .any(|d| d.notify.is_some() || d.orcpt.is_some())
    {
        for (r, d) in rcpt_to.iter().zip(&dsn.rcpts) {
            given_of.entry(r.as_str()).or_insert(d);
        }
    }
    for rcpt in recipients {
        let (local, domain) = rcpt
            .rsplit_once('@')
            .filter(|(l, d)| !l.is_empty() && !d.is_empty())
            .ok_or_else(|| BuildError::BadAddress(rcpt.clone()))?;
        let given = given_of.get(rcpt.as_str()).copied();
        let notify = given
            .and_then(|d| d.notify)
            .map(volley_smtp::dsn::Notify::text)
            .unwrap_or_default();
        let orcpt = given.and_then(|d| d.orcpt.as_deref()).unwrap_or_default();
        each.push((domain, local, notify, orcpt));
    }
    let values: Vec<[&[u8]; 4]> = each
        .iter()
        .map(|(_, _, notify, orcpt)| {
            [
                notify.as_bytes(),
                orcpt.as_bytes(),
                ret.as_bytes(),
                envid.as_bytes(),
            ]
        })
        .collect();
    let list: Vec<RelayRecipient<'_, &[u8]>> = each
        .iter()
        .zip(&values)
        .map(|(&(domain, local, _, _), v)| (domain, local, &v[..]))
        .collect();
    Ok(MessageRecord::new(mail_from, &list, message))
}

/// The recipients once each (the domain compared without case), sorted by
/// domain then local part, as batches want them.
fn sorted_unique(recipients: &[&str]) -> Vec<String> {
    let mut keyed: Vec<((String, &str), &str)> = recipients
        .iter()
        .map(|r| {
            let (local, domain) = r.rsplit_once('@').unwrap_or((r, ""));
            ((domain.to_ascii_lowercase(), local), *r)
        })
        .collect();
    keyed.sort();
    keyed.dedup_by(|a, b| a.0 == b.0);
    keyed.into_iter().map(|(_, r)| r.to_owned()).collect()
}

/// A relayed message's DSN parameters, as the SMTP server received them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dsn {
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=`.
    pub envid: Option<String>,
    /// `NOTIFY=` and `ORCPT=` of each recipient, in the order of `rcpt_to`.
    pub rcpts: Vec<RcptDsn>,
}

impl Deposit for SpoolDeposit {
    /// With a group commit, a message for outside recipients only that fits the
    /// group goes to it from the session's task, no blocking thread involved.
    fn deposit_queued(
        &self,
        envelope: &Envelope,
        message: Vec<u8>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<String, DepositError>>, Vec<u8>> {
        let Some(group) = self.group.as_ref() else {
            return Err(message);
        };
        if envelope.rcpt_to.iter().any(|r| self.is_local(r)) {
            return Err(message);
        }
        let rcpts: Vec<&str> = envelope.rcpt_to.iter().map(String::as_str).collect();
        let remote = sorted_unique(&rcpts);
        if remote.is_empty() || !group.takes(message.len(), remote.len()) {
            return Err(message);
        }
        let dsn = Dsn {
            ret: envelope.ret,
            envid: envelope.envid.clone(),
            rcpts: envelope.rcpt_dsn.clone(),
        };
        // A recipient that is not local@domain: the blocking path says why.
        let Ok(record) = relay_record(
            &envelope.mail_from,
            &remote,
            &envelope.rcpt_to,
            &message,
            &dsn,
        ) else {
            return Err(message);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        group.submit_then(
            record,
            message,
            remote.len() as u32,
            Box::new(move |result| {
                let _ = tx.send(
                    result
                        .map(|(id, number)| format!("{}.{number}", queue_id(id)))
                        .map_err(DepositError::Failed),
                );
            }),
        );
        Ok(rx)
    }

    fn deposit(&self, envelope: &Envelope, message: &[u8]) -> Result<String, DepositError> {
        let dsn = Dsn {
            ret: envelope.ret,
            envid: envelope.envid.clone(),
            rcpts: envelope.rcpt_dsn.clone(),
        };
        self.store_from(
            Some(envelope.client_ip),
            &envelope.mail_from,
            &envelope.rcpt_to,
            message,
            &dsn,
        )
        .map(|d| d.queue_id())
        .map_err(|err| match err {
            InboundError::Forged { .. } => DepositError::Refused {
                code: 550,
                enhanced: "5.7.1",
                text: "Invalid VERP token in the recipient address".to_owned(),
            },
            err => DepositError::Failed(err.to_string()),
        })
    }
}

/// Reports of failed relayed mail are queued as relayed messages of their own
/// from the null sender.
impl crate::delivery::reports::ReportSink for SpoolDeposit {
    fn queue(&self, to: &str, message: &[u8]) -> Result<(), String> {
        self.store("", &[to.to_owned()], message)
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}

/// Delivers a message for volley's own domains: it is written to
/// `<spool>/inbound/<name>.eml` (`name`: the message's queue id; fsynced, with the directory), preceded by
/// `Return-Path: <mail_from>` and one `Delivered-To: <recipient>` per local
/// recipient, and a line is logged. Returns the file. The file is kept: it is
/// the mailbox of the local domains, and the evidence behind each event the
/// classification ([`crate::feedback`]) records.
pub fn deliver_local(
    spool_root: &Path,
    name: &str,
    mail_from: &str,
    recipients: &[&str],
    message: &[u8],
) -> Result<PathBuf, InboundError> {
    let dir = spool_root.join("inbound");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |io| InboundError::Io { path, io }
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut head = Vec::with_capacity(64 + 48 * recipients.len());
    head.extend_from_slice(b"Return-Path: <");
    head.extend(mail_from.bytes().filter(|b| !b.is_ascii_control()));
    head.extend_from_slice(b">\r\n");
    for rcpt in recipients {
        head.extend_from_slice(b"Delivered-To: ");
        head.extend(rcpt.bytes().filter(|b| !b.is_ascii_control()));
        head.extend_from_slice(b"\r\n");
    }
    // create_new: a file of another message is never replaced.
    let mut n = 0;
    let (path, mut file) = loop {
        let name = match n {
            0 => format!("{name}.eml"),
            n => format!("{name}.{n}.eml"),
        };
        let path = dir.join(name);
        match fs::File::options().write(true).create_new(true).open(&path) {
            Ok(file) => break (path, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(io(&path)(e)),
        }
    };
    let written = file
        .write_all(&head)
        .and_then(|()| file.write_all(message))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&path);
        return Err(io(&path)(e));
    }
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    info!(file = %path.display(), from = %mail_from, rcpts = recipients.len(),
        "message for a local domain stored in inbound/");
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_merge::source::MessageSource;
    use volley_merge::TemplateSource;
    use volley_queue::BatchView;

    fn deposit(dir: &Path, batch_size: u32) -> SpoolDeposit {
        let spool = Spool::open(&dir.join("spool")).unwrap();
        SpoolDeposit::new(spool, batch_size, ["Bounces.Acme.Test".to_owned()])
    }

    fn rcpts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn batches(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir.join("spool/active"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn queues_outside_recipients_in_a_relay_batch_sorted_by_domain() {
        let dir = tempfile::tempdir().unwrap();
        let notify = Arc::new(Notify::new());
        let d = deposit(dir.path(), 2).wake(Arc::clone(&notify));
        let message = b"Subject: {{ x }}\r\n\r\nbody\r\n";
        let done = d
            .store(
                "app@acme.test",
                &rcpts(&["b@Y.test", "a@x.test", "c@y.test", "b@y.test", "a@x.test"]),
                message,
            )
            .unwrap();
        assert!(volley_queue::ids::is_inbound_id(done.id));
        assert_eq!(
            (done.batches, done.remote, done.local_file.clone()),
            (1, 3, None)
        );
        assert_eq!(done.queue_id(), format!("{}.0", queue_id(done.id)));
        let files = batches(dir.path());
        assert_eq!(
            files.iter().map(|f| f.0.clone()).collect::<Vec<_>>(),
            [format!("{}-0000000000000000.vqb", queue_id(done.id))]
        );
        let source = TemplateSource::new(dir.path().join("spool/content"));
        let view = BatchView::parse(&files[0].1).unwrap();
        assert!(view.header().is_relay());
        assert_eq!(view.header().campaign_id, done.id);
        let all: Vec<String> = view.recipients().map(|r| r.address()).collect();
        assert_eq!(all, ["a@x.test", "b@Y.test", "c@y.test"]);
        for i in 0..view.len() {
            assert_eq!(source.envelope_from(&view, i).unwrap(), "app@acme.test");
            let mut out = bytes::BytesMut::new();
            source.render(&view, i, &mut out).unwrap();
            assert_eq!(&out[..], message);
        }
        // Nothing in the content store, nothing left open.
        assert_eq!(
            fs::read_dir(dir.path().join("spool/content"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            fs::read_dir(dir.path().join("spool/open")).unwrap().count(),
            0
        );
        // The delivery loop was woken.
        let woken = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(1), notify.notified())
                    .await
                    .is_ok()
            });
        assert!(woken);
        // Ids increase, also within one microsecond.
        let next = d.store("", &rcpts(&["a@x.test"]), message).unwrap();
        assert!(next.id > done.id);
    }

    #[test]
    fn each_recipient_keeps_the_dsn_parameters_of_its_first_rcpt() {
        let dir = tempfile::tempdir().unwrap();
        let d = deposit(dir.path(), 10);
        let notify = |text| volley_smtp::dsn::Notify::parse(text);
        let dsn = Dsn {
            ret: Some(Ret::Hdrs),
            envid: Some("E1".into()),
            rcpts: vec![
                RcptDsn {
                    notify: notify("SUCCESS"),
                    orcpt: None,
                },
                RcptDsn {
                    notify: None,
                    orcpt: Some("rfc822;a@x.test".into()),
                },
                // The same address again: its first RCPT's parameters count.
                RcptDsn {
                    notify: notify("NEVER"),
                    orcpt: None,
                },
            ],
        };
        let to = rcpts(&["b@x.test", "a@x.test", "b@x.test", "c@x.test"]);
        d.store_dsn("app@acme.test", &to, b"\r\nhi\r\n", &dsn)
            .unwrap();
        let files = batches(dir.path());
        let view = BatchView::parse(&files[0].1).unwrap();
        let got: Vec<(String, Vec<String>)> = view
            .recipients()
            .map(|r| {
                let values = r
                    .values()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect();
                (r.address(), values)
            })
            .collect();
        let row = |a: &str, n: &str, o: &str| {
            (
                a.to_owned(),
                vec![
                    n.to_owned(),
                    o.to_owned(),
                    "HDRS".to_owned(),
                    "E1".to_owned(),
                ],
            )
        };
        assert_eq!(
            got,
            [
                row("a@x.test", "", "rfc822;a@x.test"),
                row("b@x.test", "SUCCESS", ""),
                // No parameters given for it (past the list).
                row("c@x.test", "", ""),
            ]
        );
    }

    #[test]
    fn sessions_share_relay_batches_committed_in_groups() {
        let dir = tempfile::tempdir().unwrap();
        let settings = GroupSettings {
            window: std::time::Duration::from_millis(2),
            messages: 64,
            bytes: 64 * 1024,
            seal_after: std::time::Duration::from_secs(5),
            batch_messages: 100,
            capacity: 10_000,
        };
        let notify = Arc::new(Notify::new());
        let d = Arc::new(
            deposit(dir.path(), 100)
                .wake(notify)
                .group_commit(settings)
                .unwrap(),
        );
        // 20 sessions, 25 messages each, one recipient each; and one message
        // over the group's byte budget, written on its own.
        let big = vec![b'x'; 100 * 1024];
        let placed: Vec<(String, Vec<u8>)> = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for t in 0..20 {
                let d = Arc::clone(&d);
                handles.push(scope.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let body = format!("Subject: {t}-{i}\r\n\r\nbody\r\n").into_bytes();
                            let to = rcpts(&[&format!("u{t}-{i}@d{}.test", i % 3)]);
                            (
                                d.store("app@acme.test", &to, &body).unwrap().queue_id(),
                                body,
                            )
                        })
                        .collect::<Vec<_>>()
                }));
            }
            let alone = d
                .store("app@acme.test", &rcpts(&["big@x.test"]), &big)
                .unwrap();
            let mut all: Vec<(String, Vec<u8>)> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            all.push((alone.queue_id(), big.clone()));
            all
        });
        assert_eq!(placed.len(), 501);
        let mut ids: Vec<&String> = placed.iter().map(|p| &p.0).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 501, "every message has its own queue id");
        // Stopping commits and seals what is open.
        drop(d);
        assert_eq!(
            fs::read_dir(dir.path().join("spool/open")).unwrap().count(),
            0
        );
        let files = batches(dir.path());
        // 500 one-recipient messages, 100 recipients per batch: 5 batches at
        // least (more when a batch was sealed early), plus the big one's.
        assert!((6..=20).contains(&files.len()), "{} batches", files.len());
        let mut found = std::collections::HashMap::new();
        for (_, bytes) in &files {
            let view = BatchView::parse(bytes).unwrap();
            for i in 0..view.len() {
                let m = view.message(i).unwrap();
                let id = format!("{}.{}", queue_id(view.header().campaign_id), m.number);
                found.insert(id, m.content.to_vec());
            }
        }
        for (id, body) in &placed {
            assert_eq!(found.get(id), Some(body), "{id}");
        }
        assert_eq!(found.len(), 501);
    }

    #[test]
    fn local_recipients_go_to_the_inbound_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = deposit(dir.path(), 100);
        let done = d
            .store(
                "",
                &rcpts(&["bounce+x@bounces.acme.test", "out@x.test", "postmaster"]),
                b"Subject: DSN\r\n\r\nfailed\r\n",
            )
            .unwrap();
        assert_eq!((done.batches, done.remote), (1, 1));
        let path = done.local_file.clone().unwrap();
        assert_eq!(
            path,
            dir.path()
                .join(format!("spool/inbound/{}.eml", done.queue_id()))
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            b"Return-Path: <>\r\nDelivered-To: bounce+x@bounces.acme.test\r\nDelivered-To: postmaster\r\nSubject: DSN\r\n\r\nfailed\r\n"
        );
        // Only local recipients: no batch.
        let only = d
            .store("a@b.test", &rcpts(&["x@BOUNCES.acme.test."]), b"x\r\n")
            .unwrap();
        assert_eq!(only.batches, 0);
        assert_eq!(only.queue_id(), queue_id(only.id));
        assert!(only.local_file.is_some());
        assert_eq!(batches(dir.path()).len(), 1);
        assert!(matches!(
            d.store("a@b.test", &[], b"x\r\n"),
            Err(InboundError::NoRecipients)
        ));
    }

    #[test]
    fn a_taken_id_is_never_overwritten() {
        use volley_queue::{BatchBuilder, BatchMeta};
        let dir = tempfile::tempdir().unwrap();
        let d = deposit(dir.path(), 100);
        // Another process, its clock ahead, queued under the id this one is
        // about to take.
        let taken = INBOUND_ID_BASE + unix_micros() + 60_000_000;
        let meta = BatchMeta {
            batch_id: 0,
            campaign_id: taken,
            content_hash: [0; 32],
            created_at: 0,
        };
        let mut builder = BatchBuilder::new::<&str>(meta, &[]).unwrap();
        builder.push("old@x.test", &[] as &[&[u8]]).unwrap();
        let old = builder.finish().unwrap();
        d.spool.write_batch(&old).unwrap();
        d.last_id.store(taken - 1, Ordering::SeqCst);
        let done = d.store("", &rcpts(&["a@x.test"]), b"2\r\n").unwrap();
        assert!(done.id > taken);
        let files = batches(dir.path());
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].1, old);
    }

    /// Counts what it is asked to apply.
    #[derive(Default)]
    struct Counting(std::sync::Mutex<Vec<String>>);

    impl crate::feedback::SuppressionWriter for Counting {
        fn apply(&self, a: &crate::feedback::SuppressAction<'_>) -> Result<bool, String> {
            let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
            seen.push(format!("{} {} {:?}", a.address, a.sending_domain, a.kind));
            Ok(true)
        }

        fn pend(&self, a: &crate::feedback::SuppressAction<'_>, _: &str) -> Result<(), String> {
            let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
            seen.push(format!(
                "pending {} {} {:?}",
                a.address, a.sending_domain, a.kind
            ));
            Ok(())
        }
    }

    #[test]
    fn with_feedback_bounces_are_classified_and_forged_tokens_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let verp = Arc::new(volley_inbound::testing::verp());
        let log = Arc::new(crate::log::DeliveryLog::open(&dir.path().join("log.jsonl")).unwrap());
        let writer = Arc::new(Counting::default());
        let source = Arc::new(volley_merge::source::StaticMessage {
            from: "news@acme.test".into(),
            message: bytes::Bytes::new(),
        });
        let feedback = Arc::new(Feedback::new(
            spool.root(),
            Some(Arc::clone(&verp)),
            source,
            log,
            Arc::clone(&writer) as Arc<dyn crate::feedback::SuppressionWriter>,
        ));
        // No [relay] domains: the VERP domain is local all the same.
        let d = SpoolDeposit::new(spool, 100, Vec::<String>::new()).feedback(feedback);
        assert!(d.is_local("b-x@Bounce.Acme.Test"));
        let dsn = volley_inbound::testing::fixture("postfix-unknown-user.eml");
        let envelope = |rcpt: String| Envelope {
            mail_from: String::new(),
            rcpt_to: vec![rcpt],
            eight_bit_mime: false,
            smtputf8: false,
            client_ip: "192.0.2.1".parse().unwrap(),
            helo: "mx.example.test".into(),
            esmtp: true,
            user: None,
            tls: false,
            ret: None,
            envid: None,
            rcpt_dsn: vec![Default::default()],
        };
        // A valid token: stored, classified (batch 7 of campaign 42 is not in
        // this spool: the DSN's recipient, for every sending domain, kept for
        // an operator since no batch confirms it).
        let good = verp.return_path(42, 7, 3);
        let id = d.deposit(&envelope(good), &dsn).unwrap();
        assert!(dir.path().join(format!("spool/inbound/{id}.eml")).exists());
        assert_eq!(
            *writer.0.lock().unwrap(),
            ["pending nobody@example.test * HardBounce"]
        );
        let logged = fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
        assert_eq!(logged.lines().count(), 1);
        assert!(logged.contains(r#""status":"bounced_async""#), "{logged}");
        // A forged one: refused for good, nothing stored.
        let forged = format!("b-b{}", &verp.return_path(42, 7, 3)[3..]);
        assert_eq!(
            d.deposit(&envelope(forged), &dsn),
            Err(DepositError::Refused {
                code: 550,
                enhanced: "5.7.1",
                text: "Invalid VERP token in the recipient address".into()
            })
        );
        assert_eq!(
            fs::read_dir(dir.path().join("spool/inbound"))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(writer.0.lock().unwrap().len(), 1);
    }
}
