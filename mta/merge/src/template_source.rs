//! [`TemplateSource`]: the [`MessageSource`] that merges each recipient of a batch
//! into the batch's template at send time, or, for a batch of a received
//! message, hands out that message as it is ([`Verbatim`]).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use bytes::BytesMut;
use volley_queue::link::LinkTarget;
use volley_queue::BatchView;

use super::compile::Template;
use super::error::TemplateError;
use super::links::{WebContext, WebLinks};
use super::render::RenderContext;
use super::spec::{hash_hex, sha256, stored_path, TemplateSpec};
use super::verbatim::Verbatim;
use crate::source::{MessageSource, RenderError, Rendered};

/// Merge values kept on the stack per message; batches with more fields use a
/// `Vec` (one allocation per message).
const INLINE_FIELDS: usize = 32;

/// Received messages kept in memory at most (the most recent one is always
/// kept): a message is read once per batch rather than once per recipient,
/// without holding every relayed message for the life of the process.
const VERBATIM_CACHE_BYTES: usize = 32 << 20;
/// ... and at most this many of them.
const VERBATIM_CACHE_ENTRIES: usize = 16;

/// What a content hash stands for.
enum Content {
    Template(Arc<Template>),
    Verbatim(Arc<Verbatim>),
}

/// Templates by content hash, loaded from the content store on first use and
/// cached for the life of the process, and rendered per recipient. Batches of
/// received messages ([`Verbatim`]) get their message as stored, unchanged, and
/// its envelope sender; the last few are cached.
#[derive(Debug)]
pub struct TemplateSource {
    content_dir: PathBuf,
    templates: RwLock<HashMap<[u8; 32], Arc<Template>>>,
    /// Recently used received messages, most recent last.
    verbatim: Mutex<VecDeque<([u8; 32], Arc<Verbatim>)>>,
    /// Next [`RenderContext::unique`]; starts at a random value so that two
    /// processes (or restarts) do not hand out the same Message-IDs.
    next_unique: AtomicU64,
    /// Right-hand side of Message-IDs; empty for each template's From domain.
    message_id_domain: String,
    /// With the web endpoints on: what writes each message's links.
    web: Option<Arc<WebLinks>>,
}

impl TemplateSource {
    /// A source reading templates from `content_dir` (`<spool>/content`), where
    /// each is stored as `<64 hex digits>.json` (see [`TemplateSpec::store`]).
    pub fn new(content_dir: PathBuf) -> TemplateSource {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 8];
        if ring::rand::SystemRandom::new().fill(&mut seed).is_err() {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            seed = (nanos ^ u64::from(std::process::id()) << 40).to_le_bytes();
        }
        TemplateSource {
            content_dir,
            templates: RwLock::new(HashMap::new()),
            verbatim: Mutex::new(VecDeque::new()),
            next_unique: AtomicU64::new(u64::from_le_bytes(seed)),
            message_id_domain: String::new(),
            web: None,
        }
    }

    /// Writes each campaign message's web links (one-click unsubscribe, tracked
    /// clicks, the open image) with `links`.
    pub fn with_web_links(mut self, links: Arc<WebLinks>) -> TemplateSource {
        self.web = Some(links);
        self
    }

    /// Uses `domain` as the right-hand side of every Message-ID instead of each
    /// template's From domain.
    pub fn with_message_id_domain(mut self, domain: String) -> TemplateSource {
        self.message_id_domain = domain;
        self
    }

    /// Registers a compiled template under `hash` (the content hash batches refer
    /// to), replacing any cached one.
    pub fn insert(&self, hash: [u8; 32], template: Arc<Template>) {
        self.templates
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash, template);
    }

    /// The template with content hash `hash`: cached, or read from the content
    /// store, checked against its hash, compiled and cached. An error for a
    /// received message's hash.
    pub fn template(&self, hash: &[u8; 32]) -> Result<Arc<Template>, RenderError> {
        match self.content(hash)? {
            Content::Template(template) => Ok(template),
            Content::Verbatim(_) => Err(RenderError::permanent(format!(
                "content {} is a received message, not a template",
                hash_hex(hash)
            ))),
        }
    }

    /// The template or received message with content hash `hash`. Templates
    /// are looked up first: the campaign path pays one map lookup, as before.
    fn content(&self, hash: &[u8; 32]) -> Result<Content, RenderError> {
        if let Some(template) = self
            .templates
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
        {
            return Ok(Content::Template(Arc::clone(template)));
        }
        if let Some(message) = self.cached_verbatim(hash) {
            return Ok(Content::Verbatim(message));
        }
        let path = stored_path(&self.content_dir, hash);
        let bytes = std::fs::read(&path)
            .map_err(|err| RenderError::io(format!("template {}: {err}", path.display()), &err))?;
        if sha256(&bytes) != *hash {
            return Err(RenderError::permanent(format!(
                "template {}: contents do not match hash {}",
                path.display(),
                hash_hex(hash)
            )));
        }
        if Verbatim::is_stored(&bytes) {
            let message = Verbatim::load(&self.content_dir, &bytes).map_err(|err| {
                let reason = format!("{}: {err}", path.display());
                match &err {
                    TemplateError::Read { io, .. } => RenderError::io(reason, io),
                    _ => RenderError::permanent(reason),
                }
            })?;
            let message = Arc::new(message);
            self.cache_verbatim(*hash, Arc::clone(&message));
            return Ok(Content::Verbatim(message));
        }
        let template = TemplateSpec::from_stored(&bytes)
            .and_then(|spec| Template::compile(&spec))
            .map_err(|err| RenderError::permanent(format!("template {}: {err}", path.display())))?;
        let mut templates = self
            .templates
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have loaded it meanwhile: keep the first.
        Ok(Content::Template(Arc::clone(
            templates.entry(*hash).or_insert_with(|| Arc::new(template)),
        )))
    }

    fn cached_verbatim(&self, hash: &[u8; 32]) -> Option<Arc<Verbatim>> {
        let cache = self.verbatim.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .iter()
            .rev()
            .find(|(h, _)| h == hash)
            .map(|(_, m)| Arc::clone(m))
    }

    fn cache_verbatim(&self, hash: [u8; 32], message: Arc<Verbatim>) {
        let mut cache = self.verbatim.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.iter().any(|(h, _)| *h == hash) {
            return;
        }
        cache.push_back((hash, message));
        let mut bytes: usize = cache.iter().map(|(_, m)| m.message.len()).sum();
        while cache.len() > 1
            && (cache.len() > VERBATIM_CACHE_ENTRIES || bytes > VERBATIM_CACHE_BYTES)
        {
            if let Some((_, old)) = cache.pop_front() {
                bytes -= old.message.len();
            }
        }
    }
}

impl MessageSource for TemplateSource {
    fn envelope_from(&self, batch: &BatchView<'_>, index: usize) -> Result<String, RenderError> {
        // A relay batch carries each message with its envelope.
        if let Some(message) = batch.message(index) {
            return Ok(String::from_utf8_lossy(message.mail_from).into_owned());
        }
        Ok(match self.content(&batch.header().content_hash)? {
            Content::Template(template) => template.envelope_from().to_owned(),
            Content::Verbatim(message) => message.mail_from.clone(),
        })
    }

    fn render(
        &self,
        batch: &BatchView<'_>,
        index: usize,
        out: &mut BytesMut,
    ) -> Result<Rendered, RenderError> {
        if let Some(message) = batch.message(index) {
            out.extend_from_slice(message.content);
            return Ok(Rendered::default());
        }
        let template = match self.content(&batch.header().content_hash)? {
            Content::Template(template) => template,
            Content::Verbatim(message) => {
                out.extend_from_slice(&message.message);
                return Ok(Rendered::default());
            }
        };
        // A compiled template writes CRLF line ends only (see `Template::render`).
        let rendered = Rendered { crlf_only: true };
        let recipient = batch
            .recipient(index)
            .ok_or_else(|| RenderError::permanent(format!("no recipient {index} in the batch")))?;
        // Names and values on the stack for the usual few fields.
        let mut inline_names: [&str; INLINE_FIELDS] = [""; INLINE_FIELDS];
        let many_names: Vec<&str>;
        let fields: &[&str] = if batch.field_names_iter().len() <= INLINE_FIELDS {
            let mut count = 0;
            for (slot, name) in inline_names.iter_mut().zip(batch.field_names_iter()) {
                *slot = name;
                count += 1;
            }
            &inline_names[..count]
        } else {
            many_names = batch.field_names();
            &many_names
        };
        let ctx = RenderContext {
            now: SystemTime::now(),
            message_id_domain: self.message_id_domain.clone(),
            unique: self.next_unique.fetch_add(1, Ordering::Relaxed),
            web: self.web.as_deref().map(|links| WebContext {
                links,
                target: LinkTarget {
                    campaign: batch.header().campaign_id,
                    batch: batch.header().batch_id,
                    index: index as u32,
                    link: 0,
                },
            }),
        };
        let render = |address: &[u8], out: &mut BytesMut| {
            let address = String::from_utf8_lossy(address);
            if fields.len() <= INLINE_FIELDS {
                let mut values: [&[u8]; INLINE_FIELDS] = [&[]; INLINE_FIELDS];
                let mut count = 0;
                for (slot, value) in values.iter_mut().zip(recipient.values()) {
                    *slot = value;
                    count += 1;
                }
                template.render(fields, &values[..count], &address, &ctx, out)
            } else {
                let values: Vec<&[u8]> = recipient.values().collect();
                template.render(fields, &values, &address, &ctx, out)
            }
        };
        // The address is assembled in a reused buffer; a fresh one only if the
        // thread's is in use or being torn down.
        let mut render = Some(render);
        let reused = ADDRESS.try_with(|cell| {
            let mut buf = cell.try_borrow_mut().ok()?;
            recipient.address_into(&mut buf);
            render.take().map(|render| render(&buf, &mut *out))
        });
        match (reused, render) {
            (Ok(Some(result)), _) => result,
            (_, Some(render)) => {
                let mut buf = Vec::new();
                recipient.address_into(&mut buf);
                render(&buf, out)
            }
            (_, None) => Err(RenderError::permanent("internal: address buffer")),
        }
        .map(|()| rendered)
    }
}

thread_local! {
    static ADDRESS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_queue::{BatchBuilder, BatchMeta};

    fn batch(content_hash: [u8; 32]) -> Vec<u8> {
        let meta = BatchMeta {
            batch_id: 1,
            campaign_id: 2,
            created_at: 3,
            content_hash,
        };
        let mut builder = BatchBuilder::new(meta, &["first_name", "text_only"]).unwrap();
        builder.push("ann@example.test", &["Ann", ""]).unwrap();
        builder
            .push("bob@example.test", &["Bob\r\nBcc: x", "yes"])
            .unwrap();
        builder.finish().unwrap()
    }

    fn spec() -> TemplateSpec {
        TemplateSpec {
            from: "Acme <news@acme.test>".into(),
            return_path: Some("bounces@acme.test".into()),
            subject: "Hi {{ first_name }}".into(),
            text: Some("Hello {{ first_name }}".into()),
            html: Some("<p>Hello {{ first_name }}</p>".into()),
            ..TemplateSpec::default()
        }
    }

    #[test]
    fn renders_from_the_content_store() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec();
        let hash = spec.store(dir.path()).unwrap();
        let file = batch(hash);
        let view = BatchView::parse(&file).unwrap();
        let source = TemplateSource::new(dir.path().to_path_buf());
        assert_eq!(source.envelope_from(&view, 0).unwrap(), "bounces@acme.test");
        let mut out = BytesMut::new();
        source.render(&view, 0, &mut out).unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.contains("\r\nTo: <ann@example.test>\r\n")
                || text.contains("\r\nTo: ann@example.test\r\n"),
            "{text}"
        );
        assert!(text.contains("Subject: Hi Ann\r\n"));
        assert!(text.contains("multipart/alternative"));
        let mut out = BytesMut::new();
        source.render(&view, 1, &mut out).unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains("Subject: Hi Bob  Bcc: x\r\n"), "{text}");
        let header = &text[..text.find("\r\n\r\n").unwrap()];
        assert!(!header.contains("\r\nBcc:"), "{header}");
        assert!(!text.contains("multipart"), "text_only: {text}");
        assert!(source.render(&view, 2, &mut out).is_err());
    }

    #[test]
    fn received_messages_are_sent_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let message = b"From: a@b.test\r\nSubject: {{ first_name }}\r\n\r\n{{ x }}\r\n";
        let hash = Verbatim::store(dir.path(), "", message).unwrap();
        let file = batch(hash);
        let view = BatchView::parse(&file).unwrap();
        let source = TemplateSource::new(dir.path().to_path_buf());
        assert_eq!(source.envelope_from(&view, 0).unwrap(), "");
        for index in 0..2 {
            let mut out = BytesMut::new();
            source.render(&view, index, &mut out).unwrap();
            assert_eq!(&out[..], message);
        }
        assert!(source.template(&hash).is_err());
        // Cached: rendered again once the files are gone.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let mut out = BytesMut::new();
        source.render(&view, 1, &mut out).unwrap();
        assert_eq!(&out[..], message);
        // The cache keeps the most recent messages within its bounds.
        for i in 0..VERBATIM_CACHE_ENTRIES + 2 {
            let hash =
                Verbatim::store(dir.path(), "x@y.test", format!("{i}\r\n").as_bytes()).unwrap();
            let file = batch(hash);
            let view = BatchView::parse(&file).unwrap();
            assert_eq!(source.envelope_from(&view, 0).unwrap(), "x@y.test");
        }
        assert_eq!(
            source.verbatim.lock().unwrap().len(),
            VERBATIM_CACHE_ENTRIES
        );
    }

    #[test]
    fn refuses_missing_or_tampered_templates() {
        let dir = tempfile::tempdir().unwrap();
        let source = TemplateSource::new(dir.path().to_path_buf());
        let spec = spec();
        let hash = spec.content_hash();
        let file = batch(hash);
        let view = BatchView::parse(&file).unwrap();
        let mut out = BytesMut::new();
        let err = source.render(&view, 0, &mut out).unwrap_err();
        assert!(err.reason.contains(&hash_hex(&hash)), "{err}");
        assert!(!err.transient, "a missing template cannot render: {err}");
        // A read that fails otherwise (EISDIR here; EMFILE, EIO) may pass.
        std::fs::create_dir_all(stored_path(dir.path(), &hash)).unwrap();
        let err = source.render(&view, 0, &mut out).unwrap_err();
        assert!(err.transient, "{err}");
        std::fs::remove_dir(stored_path(dir.path(), &hash)).unwrap();
        std::fs::write(stored_path(dir.path(), &hash), b"{\"from\":\"x@y.test\"}").unwrap();
        let err = source.render(&view, 0, &mut out).unwrap_err();
        assert!(err.reason.contains("do not match"), "{err}");
        assert!(out.is_empty());
        // Registered directly, no file needed.
        source.insert(hash, Arc::new(Template::compile(&spec).unwrap()));
        source.render(&view, 0, &mut out).unwrap();
        assert!(!out.is_empty());
    }
}
