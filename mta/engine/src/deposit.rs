//! Accepted messages into the spool: [`SpoolDeposit`], the [`Deposit`] of
//! `volley run`'s SMTP listener, also used by `volley sendmail` when no daemon
//! runs.
//!
//! A message for outside recipients is stored verbatim in the content store
//! ([`Verbatim`]: relayed byte for byte, never merged) and gets batches of its
//! own: its recipients deduplicated, sorted by domain and cut at `[queue]
//! batch_size` (so one batch, and one fsync, for nearly every message). They
//! carry a new campaign id, which is also the queue id the client is told
//! ([`queue_id`]): [`INBOUND_ID_BASE`] plus microseconds since the epoch, never
//! a campaign's id (milliseconds since the epoch, see `Campaign::next_id`).
//! Recipients in volley's own domains (`[relay] domains`) get the message in
//! `SPOOL/inbound/<queue id>.eml` instead ([`deliver_local`]). Content, batches
//! and inbound file are fsynced before [`SpoolDeposit::store`] returns, so the
//! `250` is sent only for a message a crash cannot lose.
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
use volley_queue::{BatchBuilder, BatchMeta, BuildError, QueueError, Spool};

use crate::feedback::Feedback;
use crate::listen::{Deposit, DepositError};
use volley_inbound::VerpError;
use volley_merge::{TemplateError, Verbatim};
use volley_queue::ids::{queue_id, INBOUND_ID_BASE};
use volley_smtp::dsn::{RcptDsn, Ret};

use crate::delivery::reports::DSN_FIELDS;
use volley_smtp::server::Envelope;

/// Why a message could not be stored (the client gets a 4xx and tries again).
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The spool failed (a batch could not be written).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The message could not be written to the content store.
    #[error(transparent)]
    Content(#[from] TemplateError),
    /// A recipient does not fit a batch (no `@`, too long).
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
    /// Its campaign id (see [`queue_id`] for the text form).
    pub id: u64,
    /// Batches written for the outside recipients (0 if none).
    pub batches: usize,
    /// Outside recipients queued (after removing duplicates).
    pub remote: usize,
    /// The inbound file, if some recipients were in a local domain.
    pub local_file: Option<PathBuf>,
}

/// Stores accepted messages in a spool: see the [module documentation](self).
#[derive(Debug)]
pub struct SpoolDeposit {
    spool: Spool,
    local_domains: HashSet<String>,
    batch_size: usize,
    last_id: AtomicU64,
    wake: Option<Arc<Notify>>,
    feedback: Option<Arc<Feedback>>,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl SpoolDeposit {
    /// Deposits into `spool` (open for writing: its own handle, or a
    /// [`Spool::try_clone`] of the engine's), `batch_size` recipients per batch
    /// at most. Recipients whose domain is in `local_domains` (any case) go to
    /// [`deliver_local`].
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
            last_id: AtomicU64::new(0),
            wake: None,
            feedback: None,
        }
    }

    /// Calls `notify_one` on `wake` after each message stored for outside
    /// recipients, so that the delivery loop starts a round at once.
    pub fn wake(mut self, wake: Arc<Notify>) -> SpoolDeposit {
        self.wake = Some(wake);
        self
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

    /// A new campaign id, increasing within the process.
    fn next_id(&self) -> u64 {
        let now = INBOUND_ID_BASE + unix_micros();
        let previous = self
            .last_id
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        now.max(previous + 1)
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
        let mut id = self.next_id();
        let mut batches = 0;
        if !remote.is_empty() {
            let hash = Verbatim::store(&self.spool.content_dir(), mail_from, message)?;
            // An id taken already (a clock set back since another process queued
            // under it) is never overwritten: take the next.
            let mut tries = 0;
            loop {
                match self.write_batches(id, hash, &remote, rcpt_to, dsn) {
                    Ok(n) => {
                        batches = n;
                        break;
                    }
                    Err(InboundError::Queue(QueueError::Exists { .. })) if tries < 5 => {
                        tries += 1;
                        id = self.next_id().max(id + 1_000_000);
                        self.last_id.fetch_max(id, Ordering::AcqRel);
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        let local_file = if local.is_empty() {
            None
        } else {
            Some(deliver_local(
                self.spool.root(),
                id,
                mail_from,
                &local,
                message,
            )?)
        };
        info!(queue_id = %queue_id(id), campaign = id, from = %mail_from, remote = remote.len(),
            local = local.len(), batches, size = message.len(), "message queued");
        if let (Some(feedback), Some(file)) = (&self.feedback, &local_file) {
            let local: Vec<String> = local.iter().map(|r| (*r).to_owned()).collect();
            feedback.process_from(client, mail_from, &local, message, file, SystemTime::now());
        }
        if batches > 0 {
            if let Some(wake) = &self.wake {
                wake.notify_one();
            }
        }
        Ok(Deposited {
            id,
            batches,
            remote: remote.len(),
            local_file,
        })
    }

    /// Writes the batches of one message (durable when it returns): the
    /// `recipients`, each with the DSN parameters it was given (found by its
    /// place in `rcpt_to`, parallel to `dsn.rcpts`).
    fn write_batches(
        &self,
        id: u64,
        content_hash: [u8; 32],
        recipients: &[String],
        rcpt_to: &[String],
        dsn: &Dsn,
    ) -> Result<usize, InboundError> {
        let created_at = unix_micros() / 1_000_000;
        let ret = dsn.ret.map_or("", Ret::name);
        let envid = dsn.envid.as_deref().unwrap_or_default();
        let mut files = Vec::new();
        for (batch_id, chunk) in recipients.chunks(self.batch_size).enumerate() {
            let meta = BatchMeta {
                batch_id: batch_id as u64,
                campaign_id: id,
                content_hash,
                created_at,
            };
            let mut builder = BatchBuilder::new(meta, &DSN_FIELDS)?;
            for rcpt in chunk {
                let given = rcpt_to
                    .iter()
                    .position(|r| r == rcpt)
                    .and_then(|i| dsn.rcpts.get(i));
                let notify = given
                    .and_then(|d| d.notify)
                    .map(volley_smtp::dsn::Notify::text);
                let orcpt = given.and_then(|d| d.orcpt.as_deref()).unwrap_or_default();
                let values: [&[u8]; 4] = [
                    notify.as_deref().unwrap_or_default().as_bytes(),
                    orcpt.as_bytes(),
                    ret.as_bytes(),
                    envid.as_bytes(),
                ];
                builder.push(rcpt, &values)?;
            }
            files.push(builder.finish()?);
        }
        self.spool
            .write_batches(files.iter().map(Vec::as_slice))
            .map(|paths| paths.len())
            .map_err(InboundError::from)
    }
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
        .map(|d| queue_id(d.id))
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
/// `<spool>/inbound/<queue id>.eml` (fsynced, with the directory), preceded by
/// `Return-Path: <mail_from>` and one `Delivered-To: <recipient>` per local
/// recipient, and a line is logged. Returns the file. The file is kept: it is
/// the mailbox of the local domains, and the evidence behind each event the
/// classification ([`crate::feedback`]) records.
pub fn deliver_local(
    spool_root: &Path,
    id: u64,
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
            0 => format!("{}.eml", queue_id(id)),
            n => format!("{}.{n}.eml", queue_id(id)),
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
    use volley_merge::{stored_path, TemplateSource};
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
    fn queues_outside_recipients_in_batches_sorted_by_domain() {
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
        assert_eq!((done.batches, done.remote, done.local_file), (2, 3, None));
        let files = batches(dir.path());
        assert_eq!(
            files.iter().map(|f| f.0.clone()).collect::<Vec<_>>(),
            [
                format!("{}-0000000000000000.vqb", queue_id(done.id)),
                format!("{}-0000000000000001.vqb", queue_id(done.id)),
            ]
        );
        let source = TemplateSource::new(dir.path().join("spool/content"));
        let mut all = Vec::new();
        for (_, bytes) in &files {
            let view = BatchView::parse(bytes).unwrap();
            assert_eq!(view.header().campaign_id, done.id);
            assert!(stored_path(
                &dir.path().join("spool/content"),
                &view.header().content_hash
            )
            .exists());
            assert_eq!(source.envelope_from(&view, 0).unwrap(), "app@acme.test");
            let mut out = bytes::BytesMut::new();
            source.render(&view, 0, &mut out).unwrap();
            assert_eq!(&out[..], message);
            all.extend(view.recipients().map(|r| r.address()));
        }
        assert_eq!(all, ["a@x.test", "b@Y.test", "c@y.test"]);
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
        let path = done.local_file.unwrap();
        assert_eq!(
            path,
            dir.path()
                .join(format!("spool/inbound/{}.eml", queue_id(done.id)))
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            b"Return-Path: <>\r\nDelivered-To: bounce+x@bounces.acme.test\r\nDelivered-To: postmaster\r\nSubject: DSN\r\n\r\nfailed\r\n"
        );
        // Only local recipients: no batch, no content.
        let only = d
            .store("a@b.test", &rcpts(&["x@BOUNCES.acme.test."]), b"x\r\n")
            .unwrap();
        assert_eq!(only.batches, 0);
        assert!(only.local_file.is_some());
        assert_eq!(batches(dir.path()).len(), 1);
        assert!(matches!(
            d.store("a@b.test", &[], b"x\r\n"),
            Err(InboundError::NoRecipients)
        ));
    }

    #[test]
    fn a_taken_id_is_never_overwritten() {
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
