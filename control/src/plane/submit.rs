//! Submitting a campaign: the recipient list made durable in the spool, the
//! template checked and stored, the campaign row, then the partitioning (in
//! the background: a list of any length), whose result is one transaction in
//! the store.
//!
//! What a crash leaves, step by step: before the campaign row, an upload file
//! nobody refers to (swept with the uploads); after it and before the
//! partitioning's transaction, a campaign row marked unpartitioned and maybe
//! some of its batch files, which [`Plane::resume_partitioning`] completes at the
//! next start from the same list (the cut is deterministic; the batches already
//! written are kept); after it, the campaign as if nothing happened.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use volley_queue::{BatchMeta, Spool};

use super::{Plane, PlaneError};
use crate::campaign::{load_suppressed, save_suppressed, unhex};
use crate::partition::sort;
use crate::recipients::{RecipientReader, Rejected};
use crate::store::campaigns::{Campaign, NewCampaign};
use crate::store::now;
use crate::suppress::normalize;

/// One recipient of a submission's `recipients` array.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonRecipient {
    /// The address.
    pub email: String,
    /// Merge fields: strings, numbers or booleans.
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Where a submission's recipients come from.
#[derive(Debug, Clone)]
pub enum Recipients {
    /// Given inline (at most [`super::Settings::max_json_recipients`]).
    Rows(Vec<JsonRecipient>),
    /// An upload's id ([`Plane::upload`]).
    Upload(String),
    /// A CSV file on this host (a local command).
    File(PathBuf),
    /// A list's subscribed members matching a targeting query, at most
    /// `limit` of them.
    List {
        /// The list.
        id: i64,
        /// The targeting query (`where`).
        filter: crate::targeting::Filter,
        /// The most recipients.
        limit: Option<u64>,
    },
}

/// A campaign to submit.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The template, as JSON.
    pub template: serde_json::Value,
    /// Its recipients.
    pub recipients: Recipients,
    /// Unix second to start at.
    pub start_at: Option<i64>,
    /// Unix second at which unsent recipients expire.
    pub stop_at: Option<i64>,
    /// Recipients per batch (default: the configured one).
    pub batch_size: Option<u32>,
    /// Where the summary goes.
    pub notify: Vec<String>,
    /// Tags to filter campaigns by.
    pub tags: Vec<String>,
    /// Idempotency-Key and the hash of the request.
    pub idempotency: Option<(String, String)>,
    /// Wait for the whole partitioning before answering (a local command);
    /// else at most a moment (the API: a long list goes on in the background).
    pub wait: bool,
}

/// What a submission gave.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The campaign (as of the answer: partitioned if that took under the
    /// wait).
    pub campaign: Campaign,
    /// Whether it was made by an earlier request with the same Idempotency-Key.
    pub replayed: bool,
}

/// How long a submission waits for its partitioning before answering.
const PARTITION_WAIT: Duration = Duration::from_secs(2);

/// Largest batch size accepted.
pub const MAX_BATCH_SIZE: u32 = 10_000;

fn merge_value(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Null => Some(String::new()),
        _ => None,
    }
}

/// Writes `rows` as a CSV recipient list at `path` (durably): an `email`
/// column, then every field any row has, in first-seen order.
fn write_rows(rows: &[JsonRecipient], path: &Path) -> Result<(), PlaneError> {
    let mut fields: Vec<&str> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        for (name, value) in &row.fields {
            if name == "email" {
                return Err(PlaneError::BadRequest(format!(
                    "recipients[{i}].fields.email: the address goes in recipients[{i}].email, not in its fields"
                )));
            }
            if merge_value(value).is_none() {
                return Err(PlaneError::BadRequest(format!(
                    "recipients[{i}].fields.{name}: a merge field must be a string, a number or a boolean"
                )));
            }
            if !fields.contains(&name.as_str()) {
                fields.push(name);
            }
        }
    }
    let internal = |e: &dyn std::fmt::Display| {
        PlaneError::Internal(format!("cannot write {}: {e}", path.display()))
    };
    let file = std::fs::File::create(path).map_err(|e| internal(&e))?;
    let mut out = csv::Writer::from_writer(std::io::BufWriter::new(file));
    let mut header = vec!["email"];
    header.extend(&fields);
    out.write_record(&header).map_err(|e| internal(&e))?;
    for row in rows {
        let mut record = vec![row.email.clone()];
        for f in &fields {
            record.push(row.fields.get(*f).and_then(merge_value).unwrap_or_default());
        }
        out.write_record(&record).map_err(|e| internal(&e))?;
    }
    finish_csv(out, path)
}

/// Flushes a recipient list written with `out` to `path` and syncs it.
pub(crate) fn finish_csv(
    out: csv::Writer<std::io::BufWriter<std::fs::File>>,
    path: &Path,
) -> Result<(), PlaneError> {
    let internal = |e: &dyn std::fmt::Display| {
        PlaneError::Internal(format!("cannot write {}: {e}", path.display()))
    };
    let file = out
        .into_inner()
        .map_err(|e| internal(&e))?
        .into_inner()
        .map_err(|e| internal(&e.error()))?;
    file.sync_all().map_err(|e| internal(&e))
}

/// A new random id (uploads, list files): 16 bytes, hex.
pub(crate) fn random_id() -> Result<String, PlaneError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PlaneError::Internal("the system's random source failed".into()))?;
    Ok(data_encoding::HEXLOWER.encode(&bytes))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Plane {
    /// Stores an upload's bytes as they come (`chunks` of a CSV body of any
    /// length, never held whole) under a new id, durably before answering; a
    /// body over `max_bytes` is refused and nothing is kept.
    pub async fn upload<S, E>(
        &self,
        owner: Option<i64>,
        mut chunks: S,
        max_bytes: u64,
    ) -> Result<(String, u64), PlaneError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let dir = self.uploads_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| PlaneError::Internal(format!("cannot make {}: {e}", dir.display())))?;
        let id = random_id()?;
        let path = dir.join(format!("{id}.csv"));
        let partial = dir.join(format!("{id}.partial"));
        let internal = |e: std::io::Error| {
            PlaneError::Internal(format!("cannot write {}: {e}", partial.display()))
        };
        let mut file = tokio::io::BufWriter::with_capacity(
            1 << 20,
            tokio::fs::File::create(&partial).await.map_err(internal)?,
        );
        let mut bytes = 0u64;
        let result: Result<(), PlaneError> = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| PlaneError::BadRequest(format!("the upload was cut short: {e}")))?;
                bytes += chunk.len() as u64;
                if bytes > max_bytes {
                    return Err(PlaneError::Unprocessable(format!(
                        "the upload is larger than the limit of {max_bytes} bytes ([control] max_upload_bytes)"
                    )));
                }
                file.write_all(&chunk).await.map_err(internal)?;
            }
            file.flush().await.map_err(internal)?;
            file.get_ref().sync_all().await.map_err(internal)?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, &path).await.map_err(internal)?;
        let d = dir.clone();
        let _ = tokio::task::spawn_blocking(move || sync_dir(&d)).await;
        self.store
            .insert_upload(&id, owner, &path.display().to_string(), bytes as i64)
            .await?;
        Ok((id, bytes))
    }

    /// Submits a campaign for `owner` (`None`: a local command); answers once
    /// it is recorded, and partitioned if that took under a moment (else the
    /// partitioning goes on in the background).
    pub async fn submit(
        self: &Arc<Self>,
        owner: Option<i64>,
        sub: Submission,
    ) -> Result<Submitted, PlaneError> {
        if let Some((key, hash)) = &sub.idempotency {
            if let Some(found) = self.store.idempotent(owner, key).await? {
                if found.request_hash.as_deref() != Some(hash.as_str()) {
                    return Err(PlaneError::Unprocessable(format!(
                        "Idempotency-Key {key:?} was used for campaign {} with a different request body: send the same body to get that campaign, or use a new key",
                        found.id
                    )));
                }
                return Ok(Submitted {
                    campaign: found,
                    replayed: true,
                });
            }
        }
        let at = now();
        if let (Some(start), Some(stop)) = (sub.start_at, sub.stop_at) {
            if stop <= start {
                return Err(PlaneError::Unprocessable(
                    "stop_at must be later than start_at".into(),
                ));
            }
        }
        if sub.stop_at.is_some_and(|s| s <= at) {
            return Err(PlaneError::Unprocessable(
                "stop_at is in the past: nothing would be sent".into(),
            ));
        }
        let batch_size = sub.batch_size.unwrap_or(self.settings.batch_size);
        if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
            return Err(PlaneError::Unprocessable(format!(
                "batch_size must be from 1 to {MAX_BATCH_SIZE}, not {batch_size}"
            )));
        }
        for (i, a) in sub.notify.iter().enumerate() {
            crate::address::check(a)
                .map_err(|why| PlaneError::Unprocessable(format!("notify[{i}]: {a:?}: {why}")))?;
        }
        let list = match &sub.recipients {
            Recipients::Rows(rows) => {
                if rows.len() > self.settings.max_json_recipients {
                    return Err(PlaneError::Unprocessable(format!(
                        "{} recipients inline, more than {}: upload the list as CSV (POST /v1/uploads) and pass its id as upload",
                        rows.len(),
                        self.settings.max_json_recipients
                    )));
                }
                let dir = self.uploads_dir();
                std::fs::create_dir_all(&dir).map_err(|e| {
                    PlaneError::Internal(format!("cannot make {}: {e}", dir.display()))
                })?;
                let path = dir.join(format!("{}.csv", random_id()?));
                let (rows, p) = (rows.clone(), path.clone());
                tokio::task::spawn_blocking(move || write_rows(&rows, &p))
                    .await
                    .map_err(|e| PlaneError::Internal(e.to_string()))??;
                path
            }
            Recipients::Upload(id) => {
                let path = self.store.upload_path(id, owner).await?.ok_or_else(|| {
                    PlaneError::Unprocessable(format!(
                        "there is no upload {id:?} of yours: POST /v1/uploads first"
                    ))
                })?;
                PathBuf::from(path)
            }
            Recipients::File(path) => path.clone(),
            Recipients::List { id, filter, limit } => {
                let list = self.list_for(*id, owner).await?;
                let (path, n) = self.list_recipients(&list, filter, *limit).await?;
                tracing::info!(
                    list = list.id,
                    recipients = n,
                    "campaign recipients taken from the list"
                );
                path
            }
        };
        // A list written for this request goes with it when it fails.
        let failed = |e: PlaneError| {
            if matches!(
                sub.recipients,
                Recipients::Rows(_) | Recipients::List { .. }
            ) {
                let _ = std::fs::remove_file(&list);
            }
            e
        };
        let fields = match RecipientReader::open(&list) {
            Ok(reader) => reader.fields().to_vec(),
            Err(e) => {
                return Err(failed(PlaneError::Unprocessable(format!(
                    "the recipient list: {e}"
                ))))
            }
        };
        let stored = match self.templates.store(&sub.template, &fields) {
            Ok(s) => s,
            Err(why) => {
                return Err(failed(PlaneError::Unprocessable(format!(
                    "template: {why}"
                ))))
            }
        };
        let new = NewCampaign {
            owner,
            content_hash: crate::campaign::hex(&stored.content_hash),
            sender_domain: stored.sending_domain,
            list_path: list.display().to_string(),
            batch_size: i64::from(batch_size),
            start_at: sub.start_at,
            stop_at: sub.stop_at,
            notify: sub.notify.clone(),
            tags: sub.tags.clone(),
            idempotency: sub.idempotency.clone(),
            links: stored.links.clone(),
            list: match &sub.recipients {
                Recipients::List { id, .. } => Some(*id),
                _ => None,
            },
        };
        let campaign = self
            .store
            .insert_campaign(&new, 0)
            .await
            .map_err(|e| failed(e.into()))?;
        if campaign.list_path != new.list_path {
            // An idempotent race lost: the other request's campaign.
            let _ = std::fs::remove_file(&list);
            return Ok(Submitted {
                campaign,
                replayed: true,
            });
        }
        if let Recipients::Upload(id) = &sub.recipients {
            self.store.use_upload(id, campaign.id).await?;
        }
        self.note(&campaign);
        tracing::info!(campaign = campaign.id, owner, "campaign submitted");
        let plane = Arc::clone(self);
        let id = campaign.id;
        let task = tokio::spawn(async move { plane.partition(id).await });
        let finished = if sub.wait {
            Ok(task.await)
        } else {
            tokio::time::timeout(PARTITION_WAIT, task).await
        };
        let campaign = match finished {
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => {
                return Err(PlaneError::Internal(format!(
                    "the partitioning failed: {e}"
                )))
            }
            _ => self.store.campaign(id).await?.unwrap_or(campaign),
        };
        Ok(Submitted {
            campaign,
            replayed: false,
        })
    }

    /// Cuts campaign `id` into batches (or finishes a cut a crash interrupted:
    /// batches already written are kept) and records the result.
    pub async fn partition(self: Arc<Self>, id: i64) -> Result<(), PlaneError> {
        let Some(c) = self.store.campaign(id).await? else {
            return Err(PlaneError::NotFound(format!("there is no campaign {id}")));
        };
        if c.partitioned {
            return Ok(());
        }
        let plane = Arc::clone(&self);
        let cut = tokio::task::spawn_blocking(move || plane.cut(&c))
            .await
            .map_err(|e| PlaneError::Internal(e.to_string()))?;
        let (parts, suppressed, list) = match cut {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(campaign = id, err = %e, "cannot partition the campaign");
                return Err(e);
            }
        };
        if self.settings.fleet {
            self.publish(id, &parts.cuts).await?;
        }
        self.store
            .set_partitioned(id, &parts.cuts, &parts.rejected, &suppressed)
            .await?;
        if self.settings.fleet {
            // Gateways lease them from the store now.
            for cut in &parts.cuts {
                let name = Spool::file_name(id as u64, cut.batch as u64);
                let _ = std::fs::remove_file(self.spool.active_dir().join(name));
            }
        }
        tracing::info!(
            campaign = id,
            recipients = parts.recipients,
            batches = parts.batches,
            rejected = parts.rejected.len(),
            suppressed = suppressed.len(),
            "campaign partitioned"
        );
        // A list copied into the spool for this campaign is not needed any more.
        if list.starts_with(self.uploads_dir()) {
            let _ = std::fs::remove_file(&list);
        }
        if let Some(c) = self.store.campaign(id).await? {
            self.note(&c);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Copies a campaign's batch files and its content into the store, for
    /// gateways to lease from any control-plane process (before the campaign
    /// is marked partitioned: a batch without its bytes is never leased).
    async fn publish(
        &self,
        id: i64,
        cuts: &[crate::store::batches::BatchCut],
    ) -> Result<(), PlaneError> {
        let Some(c) = self.store.campaign(id).await? else {
            return Err(PlaneError::NotFound(format!("there is no campaign {id}")));
        };
        let content = self
            .spool
            .content_dir()
            .join(format!("{}.json", c.content_hash));
        let bytes = std::fs::read(&content).map_err(|e| {
            PlaneError::Internal(format!(
                "campaign {id}: cannot read {}: {e}",
                content.display()
            ))
        })?;
        self.store.put_content(&c.content_hash, &bytes).await?;
        for chunk in cuts.chunks(200) {
            let mut files = Vec::with_capacity(chunk.len());
            for cut in chunk {
                let path = self
                    .spool
                    .active_dir()
                    .join(Spool::file_name(id as u64, cut.batch as u64));
                match std::fs::read(&path) {
                    Ok(bytes) => files.push((cut.batch, bytes)),
                    // Published before a crash, then removed.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(PlaneError::Internal(format!(
                            "campaign {id}: cannot read {}: {e}",
                            path.display()
                        )))
                    }
                }
            }
            self.store.put_batch_files(id, &files).await?;
        }
        Ok(())
    }

    /// The blocking part of [`Plane::partition`].
    fn cut(
        &self,
        c: &Campaign,
    ) -> Result<(crate::partition::Partitioned, Vec<Rejected>, PathBuf), PlaneError> {
        let internal =
            |e: &dyn std::fmt::Display| PlaneError::Internal(format!("campaign {}: {e}", c.id));
        let spool: &Spool = &self.spool;
        let list = PathBuf::from(&c.list_path);
        let mut reader = RecipientReader::open(&list).map_err(|e| internal(&e))?;
        let hash = unhex(&c.content_hash).ok_or_else(|| internal(&"bad content hash"))?;
        let id = c.id as u64;
        // A resumed cut drops exactly what the first one dropped (recorded
        // before any batch), so that it is the same cut.
        let recorded = load_suppressed(spool, id).map_err(|e| internal(&e))?;
        let resume = recorded.is_some();
        let sorted = match &recorded {
            Some(dropped) => sort(spool, &mut reader, id, |email| {
                dropped
                    .contains(&normalize(email))
                    .then(|| "recorded".to_owned())
            }),
            None => self.suppressions.read(|list| {
                sort(spool, &mut reader, id, |email| {
                    list.is_suppressed(email, &c.sender_domain)
                        .map(|e| e.reason.to_string())
                })
            }),
        };
        let mut sorted = sorted.map_err(|e| internal(&e))?;
        let mut suppressed = std::mem::take(&mut sorted.suppressed);
        if !resume {
            save_suppressed(spool, id, suppressed.iter().map(|r| r.email.as_str()))
                .map_err(|e| internal(&e))?;
        } else {
            for r in &mut suppressed {
                r.reason = "suppressed".into();
            }
        }
        let meta = BatchMeta {
            batch_id: 0,
            campaign_id: id,
            content_hash: hash,
            created_at: c.created_at as u64,
        };
        // With resume, batch files already written are kept as they are.
        let parts = sorted
            .write(spool, meta, c.batch_size as u32, true)
            .map_err(|e| internal(&e))?;
        Ok((parts, suppressed, list))
    }

    /// Removes what a crash left in the uploads directory: bodies cut short
    /// (`*.partial`, their client never got an answer), and uploads no
    /// campaign took within `keep` seconds (at start, and then now and then).
    pub async fn sweep_uploads(&self, keep: i64) -> Result<u64, PlaneError> {
        let dir = self.uploads_dir();
        let mut removed = 0;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "partial")
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        for path in self.store.expire_uploads(now() - keep).await? {
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// [`Plane::resume_partitioning`] on a task of its own, so that the API
    /// serves meanwhile (a campaign of millions takes a while to cut, as when
    /// it was submitted); a failure is logged, and the campaign stays
    /// `partitioning` until the next start resumes it again.
    pub fn resume_partitioning_later(self: &Arc<Self>) {
        let plane = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(err) = plane.resume_partitioning().await {
                tracing::error!(err = %err, "cannot resume an interrupted partitioning");
            }
        });
    }

    /// Finishes the partitionings a crash interrupted (at start).
    pub async fn resume_partitioning(self: &Arc<Self>) -> Result<u64, PlaneError> {
        let mut resumed = 0;
        for c in self.store.open_campaigns().await? {
            if c.partitioned {
                continue;
            }
            tracing::info!(campaign = c.id, "resuming an interrupted partitioning");
            Arc::clone(self).partition(c.id).await?;
            resumed += 1;
        }
        Ok(resumed)
    }
}
