//! Group commit of received mail: [`GroupCommit`], one thread that appends the
//! messages of every session to the open relay batch and makes each group
//! durable with one `fdatasync` before any of its senders is told `250`.
//!
//! Sessions hand in a message record encoded on their own (blocking-pool)
//! thread ([`GroupCommit::submit`]) and wait for the commit that covers it.
//! The committer takes what arrived, waiting up to `[queue] group_window` after
//! the first message of a group (or until `group_messages` messages or
//! `group_bytes` bytes), appends it all, commits, answers every waiting
//! session, and seals the batch into `active/` (waking delivery) when it holds
//! `batch_size` messages (or as many recipients as it has room for) or is
//! `seal_after` old. Messages that arrive while a
//! group is being synced make up the next group.
//!
//! Hand-written rather than a queue crate's: it is the relay path's hot loop,
//! and what it coordinates (one file, one sync, many waiters) is the product.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{error, warn};
use volley_queue::relay::{MessageRecord, OpenBatch};
use volley_queue::QueueError;

use crate::delivery::reports::DSN_FIELDS;

/// Largest relay batch the committer appends to before sealing it (the format's
/// offsets are 32-bit; this keeps a file well below).
const MAX_BATCH_BYTES: u64 = 1 << 30;

/// How a [`GroupCommit`] groups and seals (the `[queue]` settings).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// `[queue] group_window`.
    pub window: Duration,
    /// `[queue] group_messages`.
    pub messages: usize,
    /// `[queue] group_bytes`.
    pub bytes: usize,
    /// `[queue] seal_after`.
    pub seal_after: Duration,
    /// Messages per relay batch (`[queue] batch_size`): the batch is sealed when
    /// it holds this many.
    pub batch_messages: u32,
    /// Recipients a relay batch has room for (its slots): `batch_size` times
    /// [`RECIPIENTS_PER_MESSAGE`], so that messages with many recipients share
    /// batches too; sealed when full.
    pub capacity: u32,
}

/// The recipients per message a relay batch makes room for, on average.
pub const RECIPIENTS_PER_MESSAGE: u32 = 100;

impl GroupSettings {
    /// The settings of `config`'s `[queue]` section.
    pub fn of(queue: &volley_conf::QueueConfig) -> GroupSettings {
        GroupSettings {
            window: queue.group_window,
            messages: queue.group_messages as usize,
            bytes: usize::try_from(queue.group_bytes).unwrap_or(usize::MAX),
            seal_after: queue.seal_after,
            batch_messages: queue.batch_size.max(1),
            capacity: queue
                .batch_size
                .max(1)
                .saturating_mul(RECIPIENTS_PER_MESSAGE),
        }
    }
}

/// Where a committed message went: its relay batch's campaign id and its
/// number in the batch.
pub type Placed = (u64, u32);

/// Where the outcome of a message's commit goes: a blocked thread or an
/// awaiting task.
pub type Reply = Box<dyn FnOnce(Result<Placed, String>) + Send>;

struct Pending {
    record: MessageRecord,
    content: Vec<u8>,
    recipients: u32,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    bytes: usize,
    first_at: Option<Instant>,
    stopping: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    arrived: Condvar,
    settings: GroupSettings,
    dirs: RelayDirs,
    ids: Arc<AtomicU64>,
    wake: Option<Arc<Notify>>,
}

/// The spool directories a relay batch passes through: written in `open`,
/// delivered from `active`, its file taken from `reuse` when one is free there
/// ([`OpenBatch::create`]).
#[derive(Debug, Clone)]
pub struct RelayDirs {
    /// [`volley_queue::Spool::open_dir`].
    pub open: PathBuf,
    /// [`volley_queue::Spool::active_dir`].
    pub active: PathBuf,
    /// [`volley_queue::Spool::reuse_dir`].
    pub reuse: PathBuf,
}

impl RelayDirs {
    /// The directories of `spool`.
    pub fn of(spool: &volley_queue::Spool) -> RelayDirs {
        RelayDirs {
            open: spool.open_dir(),
            active: spool.active_dir(),
            reuse: spool.reuse_dir(),
        }
    }
}

/// Committer threads, each with its open relay batch: while one waits for its
/// `fdatasync`, the next group goes to the other (the file system's journal
/// commits concurrent syncs together), so a message waits for about one sync,
/// not for the end of the one in progress and then its own.
const COMMITTERS: usize = 2;

/// The group committer (see the [module documentation](self)). Dropping it
/// commits and seals what it holds.
pub struct GroupCommit {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the committer threads over the spool directories `dirs`, taking
    /// batch ids from `ids` (shared with the deposit's own writes) and waking
    /// `wake` at each seal.
    pub fn start(
        dirs: RelayDirs,
        settings: GroupSettings,
        ids: Arc<AtomicU64>,
        wake: Option<Arc<Notify>>,
    ) -> std::io::Result<GroupCommit> {
        let inner = Arc::new(Inner {
            queue: Mutex::default(),
            arrived: Condvar::new(),
            settings,
            dirs,
            ids,
            wake,
        });
        let mut threads = Vec::new();
        for n in 0..COMMITTERS {
            let run = Arc::clone(&inner);
            let spawned = std::thread::Builder::new()
                .name(format!("volley-commit-{n}"))
                .spawn(move || run.run());
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    lock(&inner.queue).stopping = true;
                    inner.arrived.notify_all();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(GroupCommit {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// Whether a message of `bytes` bytes for `recipients` recipients goes
    /// through the group (else it is written on its own).
    pub fn takes(&self, bytes: usize, recipients: usize) -> bool {
        bytes <= self.inner.settings.bytes && recipients <= self.inner.settings.capacity as usize
    }

    /// Hands in the `record` of `content` (moved, not copied: the session's
    /// buffer) for `recipients` recipients and
    /// waits until a commit covers it. The error is what the sender's `451` is
    /// logged with.
    pub fn submit(
        &self,
        record: MessageRecord,
        content: Vec<u8>,
        recipients: u32,
    ) -> Result<Placed, String> {
        let (reply, answer): (SyncSender<_>, Receiver<_>) = sync_channel(1);
        self.submit_then(
            record,
            content,
            recipients,
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        );
        answer
            .recv()
            .unwrap_or_else(|_| Err("the group committer stopped".into()))
    }

    /// [`GroupCommit::submit`] without waiting: `reply` is called (on the
    /// committer's thread) with the outcome of the commit that covers the
    /// message, or at once if the committer is stopping.
    pub fn submit_then(
        &self,
        record: MessageRecord,
        content: Vec<u8>,
        recipients: u32,
        reply: Reply,
    ) {
        let wake = {
            let mut q = lock(&self.inner.queue);
            if q.stopping {
                drop(q);
                reply(Err("the listener is stopping".into()));
                return;
            }
            let first = q.first_at.is_none();
            q.bytes += record.len();
            q.first_at.get_or_insert_with(Instant::now);
            q.pending.push(Pending {
                record,
                content,
                recipients,
                reply,
            });
            // A committer needs waking only to start a group's window or to
            // end it early (full): between, it sleeps until the window ends
            // anyway, and a wake per message was a context switch per
            // message on the relay path.
            let s = &self.inner.settings;
            first || q.pending.len() >= s.messages || q.bytes >= s.bytes
        };
        if wake {
            self.inner.arrived.notify_one();
        }
    }

    /// Commits and seals what is held, then stops the thread (waits for it).
    pub fn stop(&self) {
        lock(&self.inner.queue).stopping = true;
        self.inner.arrived.notify_all();
        for thread in std::mem::take(&mut *lock(&self.threads)) {
            let _ = thread.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The open relay batch and the senders waiting on its next commit.
struct Current {
    batch: OpenBatch,
    waiting: Vec<(Reply, u32)>,
}

impl Inner {
    fn run(&self) {
        let mut current: Option<Current> = None;
        loop {
            let (group, stopping) = self.next_group(current.as_ref().map(|c| c.batch.created()));
            for p in group {
                current = self.place(current, p);
            }
            if let Some(c) = current.as_mut() {
                self.commit(c);
            }
            let due = current.as_ref().is_some_and(|c| {
                c.batch.room() == 0
                    || c.batch.messages() >= self.settings.batch_messages
                    || c.batch.created().elapsed() >= self.settings.seal_after
                    || c.batch.bytes() >= MAX_BATCH_BYTES
            });
            if due || stopping {
                if let Some(c) = current.take() {
                    self.seal(c);
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// Waits for the next group: the messages that arrived, once the window
    /// after the first has passed (or the group is full); returns early, with
    /// nothing, when the open batch (created at `open_since`) is due to be
    /// sealed. Also answers whether the committer is stopping.
    fn next_group(&self, open_since: Option<Instant>) -> (Vec<Pending>, bool) {
        let s = &self.settings;
        let mut q = lock(&self.queue);
        loop {
            if q.stopping {
                break;
            }
            let Some(first) = q.first_at else {
                match open_since {
                    Some(at) => {
                        let left = s.seal_after.saturating_sub(at.elapsed());
                        if left.is_zero() {
                            return (Vec::new(), false);
                        }
                        q = self
                            .arrived
                            .wait_timeout(q, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    None => {
                        q = self.arrived.wait(q).unwrap_or_else(PoisonError::into_inner);
                    }
                }
                continue;
            };
            let left = s.window.saturating_sub(first.elapsed());
            if left.is_zero() || q.pending.len() >= s.messages || q.bytes >= s.bytes {
                break;
            }
            q = self
                .arrived
                .wait_timeout(q, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let stopping = q.stopping;
        q.bytes = 0;
        q.first_at = None;
        (std::mem::take(&mut q.pending), stopping)
    }

    /// Appends `p` to the open batch, first committing and sealing the batch
    /// when `p` does not fit, and creating one when none is open.
    fn place(&self, current: Option<Current>, p: Pending) -> Option<Current> {
        let mut current = match current {
            Some(mut c)
                if c.batch.room() < p.recipients
                    || c.batch.bytes() + p.record.len() as u64 > MAX_BATCH_BYTES =>
            {
                self.commit(&mut c);
                self.seal(c);
                None
            }
            other => other,
        };
        if current.is_none() {
            let capacity = self.settings.capacity.max(p.recipients);
            match create(&self.dirs, &self.ids, capacity) {
                Ok(batch) => {
                    current = Some(Current {
                        batch,
                        waiting: Vec::new(),
                    })
                }
                Err(e) => {
                    error!(error = %e, dir = %self.dirs.open.display(), "cannot create a relay batch");
                    (p.reply)(Err(e.to_string()));
                    return None;
                }
            }
        }
        if let Some(c) = current.as_mut() {
            let number = c.batch.append_record(&p.record, &p.content, p.recipients);
            c.waiting.push((p.reply, number));
        }
        current
    }

    /// Commits the open batch and answers its waiting senders.
    fn commit(&self, c: &mut Current) {
        let result = c.batch.commit();
        let id = c.batch.campaign_id();
        if let Err(e) = &result {
            error!(error = %e, "group commit failed: the senders of its messages are told 451");
        }
        for (reply, number) in c.waiting.drain(..) {
            reply(match &result {
                Ok(()) => Ok((id, number)),
                Err(e) => Err(e.to_string()),
            });
        }
    }

    /// Seals the batch into `active/` and wakes delivery. A failure is logged:
    /// the file stays in `open/` and is finished when the spool is next opened.
    fn seal(&self, c: Current) {
        debug_assert!(c.waiting.is_empty());
        match c.batch.seal(&self.dirs.active) {
            Ok(Some(_)) => {
                if let Some(wake) = &self.wake {
                    wake.notify_one();
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "cannot seal a relay batch: it is finished at the next start")
            }
        }
    }
}

/// A new relay batch in `dirs.open` (a file of `dirs.reuse` if one is free)
/// with room for `capacity` recipients, its id the next of `ids`; an id whose
/// name is taken in `open` or `active` (another process, its clock ahead,
/// queued under it) is skipped.
pub(super) fn create(
    dirs: &RelayDirs,
    ids: &AtomicU64,
    capacity: u32,
) -> Result<OpenBatch, QueueError> {
    let mut tries = 0;
    loop {
        let id = super::next_id(ids);
        let name = volley_queue::Spool::file_name(id, 0);
        if dirs.active.join(&name).exists() && tries < 5 {
            tries += 1;
            ids.fetch_max(id + 1_000_000, std::sync::atomic::Ordering::AcqRel);
            continue;
        }
        let created_at = super::unix_micros() / 1_000_000;
        let reuse = Some(dirs.reuse.as_path());
        match OpenBatch::create(&dirs.open, reuse, id, capacity, &DSN_FIELDS, created_at) {
            Err(QueueError::Exists { .. }) if tries < 5 => tries += 1,
            other => return other,
        }
    }
}
