//! From a [`TemplateSpec`] to a [`Template`]: placeholder parsing, checking the
//! addresses and header names, and pre-rendering everything that is the same for
//! every recipient (From, Reply-To, attachments).
//!
//! Placeholders are `{{ name }}` and `{{ name | default("text") }}`. Why a
//! hand-written parser instead of a template engine (tera, minijinja, handlebars):
//! the language is two forms, and compiled it is a flat list of literal and field
//! pieces that the renderer walks with no lookups by name, no value boxing and no
//! output escaping callbacks; an engine would bring a parser for loops, filters and
//! expressions we must then forbid (a campaign template is not a program), an AST
//! walk per message, and tens of thousands of lines to build on every CI run.

use std::collections::BTreeSet;

use bytes::BytesMut;

use super::address::{check_address, parse_mailbox, write_mailbox};
use super::error::TemplateError;
use super::links::{add_open_image, track_links};
use super::mime::{self, base64_lines, valid_header_name, Encode, Folder};
use super::part::{parse_part, Names, Part};
use super::prequoted::Prequoted;
use super::raw::{compile_raw, RawTemplate};
use super::spec::{Attachment, TemplateSpec};

/// Source of [`Template::id`].
static NEXT_TEMPLATE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A compiled template: parsed once, rendered for every recipient with
/// [`Template::render`]. Immutable and `Send + Sync`; share it with an `Arc`.
pub struct Template {
    pub(crate) envelope_from: String,
    /// The From domain: the default right-hand side of Message-IDs.
    pub(crate) domain: String,
    /// Distinct placeholder names; [`Piece::Field`] indexes into this.
    pub(crate) names: Vec<Box<str>>,
    pub(crate) required: BTreeSet<String>,
    /// Per-template secret mixed into MIME boundaries.
    pub(crate) secret: [u64; 2],
    /// Distinct for every template compiled by this process: identifies it in the
    /// renderer's per-thread cache of where each placeholder's value comes from.
    pub(crate) id: u64,
    /// `From: ...` CRLF, the same for every message.
    pub(crate) from_header: Box<[u8]>,
    pub(crate) kind: Kind,
    pub(crate) web: WebParts,
}

/// What a template writes when its message is rendered with links
/// ([`RenderContext::web`](super::RenderContext)).
#[derive(Debug, Default)]
pub(crate) struct WebParts {
    /// Whether to write `List-Unsubscribe` (one-click) and
    /// `List-Unsubscribe-Post` with links.
    pub(crate) unsubscribe: bool,
    /// The template's own `List-Unsubscribe` value (a `mailto:` form): after
    /// ours with links, alone without. Taken out of the headers when
    /// `unsubscribe` is on.
    pub(crate) own_unsubscribe: Option<Part>,
    /// The template's own `List-Unsubscribe-Post`: written only without links.
    pub(crate) own_unsubscribe_post: Option<Part>,
    /// How the two are encoded (as the rest of the template's headers).
    pub(crate) own_encode: Option<Encode>,
    /// The tracked links' redirect targets, by index (entities decoded).
    pub(crate) links: Vec<String>,
    /// Whether the HTML part has the open image's web slot.
    pub(crate) open: bool,
}

/// What the template renders.
#[derive(Debug)]
pub(crate) enum Kind {
    /// Built from parts: headers, text and/or HTML, attachments.
    Parts(Parts),
    /// A raw RFC 5322 message with placeholders.
    Raw(RawTemplate),
}

/// A template built from parts.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) subject: Part,
    /// `Reply-To: ...` CRLF.
    pub(crate) reply_to_header: Option<Box<[u8]>>,
    pub(crate) headers: Vec<(Box<str>, Part)>,
    pub(crate) text: Option<Part>,
    pub(crate) html: Option<Part>,
    /// `text` with its literals quoted-printable encoded, when they need it.
    pub(crate) text_qp: Option<Prequoted>,
    /// `html` likewise.
    pub(crate) html_qp: Option<Prequoted>,
    /// Each attachment's MIME headers, blank line and base64 lines (no final CRLF).
    pub(crate) attachments: Vec<Box<[u8]>>,
}

/// Header names the [headers] table may not set: volley writes them per message,
/// or they would change where or how the message goes.
const RESERVED_HEADERS: [&str; 10] = [
    "date",
    "message-id",
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "reply-to",
    "mime-version",
    "return-path",
];

fn reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("content-")
}

/// Longest attachment file name, in bytes (the encoded parameter stays < 998).
const MAX_FILENAME: usize = 200;

impl Template {
    /// Compiles `spec` with a fresh random secret for MIME boundaries. Errors name
    /// the part and, for placeholder syntax, the line and column within it.
    pub fn compile(spec: &TemplateSpec) -> Result<Template, TemplateError> {
        Template::compile_with_secret(spec, random_secret())
    }

    /// Compiles `spec` with a given boundary secret, so that rendering with the same
    /// [`RenderContext`](super::RenderContext) gives the same bytes (previews,
    /// tests). Use [`Template::compile`] for sending.
    pub fn compile_with_secret(
        spec: &TemplateSpec,
        secret: [u8; 16],
    ) -> Result<Template, TemplateError> {
        if spec.from.contains("{{") {
            return Err(TemplateError::spec(
                "from",
                "placeholders are not allowed here",
            ));
        }
        let from = parse_mailbox(&spec.from).map_err(|m| TemplateError::spec("from", m))?;
        let envelope_from = match &spec.return_path {
            Some(path) => {
                check_address(path).map_err(|m| TemplateError::spec("return_path", m))?;
                path.clone()
            }
            None => from.address.clone(),
        };
        let mut from_header = BytesMut::new();
        write_mailbox(&mut from_header, "From", &from);
        let mut names = Names::default();
        let mut web = WebParts {
            unsubscribe: spec.unsubscribe,
            ..WebParts::default()
        };
        let kind = match &spec.raw {
            Some(raw) => {
                check_raw_alone(spec)?;
                if spec.track_clicks || spec.track_opens {
                    return Err(TemplateError::spec(
                        if spec.track_clicks { "track_clicks" } else { "track_opens" },
                        "a raw message template is sent as written: use a template with an html part to track clicks or opens",
                    ));
                }
                let mut raw = compile_raw(raw, &mut names)?;
                if web.unsubscribe {
                    web.own_unsubscribe = raw.take_header("List-Unsubscribe");
                    web.own_unsubscribe_post = raw.take_header("List-Unsubscribe-Post");
                    web.own_encode = Some(Encode::Raw);
                }
                Kind::Raw(raw)
            }
            None => Kind::Parts(compile_parts(spec, &mut names, &mut web)?),
        };
        let mut halves = [0u64; 2];
        for (half, bytes) in halves.iter_mut().zip(secret.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            *half = u64::from_le_bytes(word);
        }
        Ok(Template {
            envelope_from,
            domain: from.domain().to_owned(),
            names: names.names,
            required: names.required,
            secret: halves,
            id: NEXT_TEMPLATE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            from_header: from_header.to_vec().into_boxed_slice(),
            kind,
            web,
        })
    }

    /// The redirect targets of the HTML part's tracked links, by link index
    /// (`track_clicks`): what `BASE/c/TOKEN` answers with for each.
    pub fn tracked_links(&self) -> &[String] {
        &self.web.links
    }

    /// The merge fields recipients must provide: placeholders used without a
    /// default, other than `email` (always the recipient address).
    pub fn fields_needed(&self) -> BTreeSet<String> {
        self.required.clone()
    }

    /// Checks that the columns `available` provide every field in
    /// [`Template::fields_needed`]; the error lists every one missing.
    pub fn check_fields(&self, available: &[&str]) -> Result<(), TemplateError> {
        let missing: Vec<String> = self
            .required
            .iter()
            .filter(|name| !available.contains(&name.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TemplateError::MissingFields(missing))
        }
    }

    /// The envelope sender (MAIL FROM): `return_path` if set, else the From address.
    pub fn envelope_from(&self) -> &str {
        &self.envelope_from
    }
}

impl std::fmt::Debug for Template {
    // Not derived: attachments would print every byte, and the secret is nobody's
    // business.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("envelope_from", &self.envelope_from)
            .field("fields", &self.names)
            .field("raw", &matches!(self.kind, Kind::Raw(_)))
            .finish_non_exhaustive()
    }
}

fn check_raw_alone(spec: &TemplateSpec) -> Result<(), TemplateError> {
    let given = [
        ("subject", !spec.subject.is_empty()),
        ("reply_to", spec.reply_to.is_some()),
        ("text", spec.text.is_some()),
        ("html", spec.html.is_some()),
        ("headers", !spec.headers.is_empty()),
        ("attachments", !spec.attachments.is_empty()),
    ];
    match given.iter().find(|(_, set)| *set) {
        Some((name, _)) => Err(TemplateError::spec(
            *name,
            "a raw message template takes no other parts: put it in the message",
        )),
        None => Ok(()),
    }
}

fn compile_parts(
    spec: &TemplateSpec,
    names: &mut Names,
    web: &mut WebParts,
) -> Result<Parts, TemplateError> {
    let subject = parse_part(&spec.subject, "subject", names)?;
    let reply_to_header = match &spec.reply_to {
        Some(reply_to) => {
            if reply_to.contains("{{") {
                return Err(TemplateError::spec(
                    "reply_to",
                    "placeholders are not allowed here",
                ));
            }
            let mailbox =
                parse_mailbox(reply_to).map_err(|m| TemplateError::spec("reply_to", m))?;
            let mut out = BytesMut::new();
            write_mailbox(&mut out, "Reply-To", &mailbox);
            Some(out.to_vec().into_boxed_slice())
        }
        None => None,
    };
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (name, value) in &spec.headers {
        let part = format!("headers.{name}");
        if !valid_header_name(name) {
            return Err(TemplateError::spec(
                part,
                "not a header name (1 to 76 printable ASCII characters, no `:` or space)",
            ));
        }
        if reserved(name) {
            return Err(TemplateError::spec(
                part,
                "volley writes this header itself; it cannot be set in [headers]",
            ));
        }
        let compiled = parse_part(value, &format!("header {name}"), names)?;
        if web.unsubscribe && name.eq_ignore_ascii_case("list-unsubscribe") {
            web.own_unsubscribe = Some(compiled);
            web.own_encode = Some(Encode::Text);
        } else if web.unsubscribe && name.eq_ignore_ascii_case("list-unsubscribe-post") {
            web.own_unsubscribe_post = Some(compiled);
            web.own_encode = Some(Encode::Text);
        } else {
            headers.push((name.as_str().into(), compiled));
        }
    }
    let text = match &spec.text {
        Some(text) => Some(parse_part(text, "text", names)?),
        None => None,
    };
    let html = match &spec.html {
        Some(html) => {
            let mut part = parse_part(html, "html", names)?;
            if spec.track_clicks {
                track_links(&mut part, names, &mut web.links);
            }
            if spec.track_opens {
                add_open_image(&mut part, names);
                web.open = true;
            }
            Some(part)
        }
        None => None,
    };
    if (spec.track_clicks || spec.track_opens) && html.is_none() {
        return Err(TemplateError::spec(
            if spec.track_clicks {
                "track_clicks"
            } else {
                "track_opens"
            },
            "only an html part's links and images can be tracked: add html",
        ));
    }
    if text.is_none() && html.is_none() {
        return Err(TemplateError::spec(
            "text",
            "no body: set text, html or both",
        ));
    }
    let attachments = spec
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            attachment_entity(a).map_err(|m| TemplateError::spec(format!("attachments[{i}]"), m))
        })
        .collect::<Result<_, _>>()?;
    Ok(Parts {
        subject,
        reply_to_header,
        headers,
        text_qp: text.as_ref().and_then(Prequoted::build),
        html_qp: html.as_ref().and_then(Prequoted::build),
        text,
        html,
        attachments,
    })
}

/// The MIME entity of one attachment, minus the delimiter before it.
fn attachment_entity(a: &Attachment) -> Result<Box<[u8]>, String> {
    let content_type = a.content_type.trim();
    if content_type.is_empty()
        || content_type.len() > 200
        || !content_type.contains('/')
        || !content_type.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(format!(
            "content_type `{content_type}` is not a MIME type such as application/pdf"
        ));
    }
    let filename = a.filename.trim();
    if filename.is_empty() || filename.len() > MAX_FILENAME {
        return Err(format!(
            "filename must be 1 to {MAX_FILENAME} bytes, is {}",
            filename.len()
        ));
    }
    if filename
        .chars()
        .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err("filename holds a control character or a path separator".into());
    }
    let mut out = BytesMut::with_capacity(a.data.len() / 3 * 4 + a.data.len() / 28 + 256);
    let plain = filename
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"');
    let mut f = Folder::start(&mut out, "Content-Type");
    f.text(&format!("{content_type};"), Encode::Never);
    if plain {
        f.text(&format!("name=\"{filename}\""), Encode::Never);
    } else {
        // RFC 2047 words in a parameter are not standard but are what most readers
        // understand for `name`; `filename*` below is the standard form (RFC 2231).
        let mut encoded = Vec::new();
        mime::base64_into(filename.as_bytes(), &mut encoded);
        f.text(
            &format!("name=\"=?UTF-8?B?{}?=\"", String::from_utf8_lossy(&encoded)),
            Encode::Never,
        );
    }
    f.finish();
    let mut f = Folder::start(&mut out, "Content-Disposition");
    f.text("attachment;", Encode::Never);
    if plain {
        f.text(&format!("filename=\"{filename}\""), Encode::Never);
    } else {
        let mut param = String::from("filename*=utf-8''");
        for b in filename.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                param.push(b as char);
            } else {
                param.push_str(&format!("%{b:02X}"));
            }
        }
        f.text(&param, Encode::Never);
    }
    f.finish();
    out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
    let mut body = Vec::with_capacity(a.data.len() / 3 * 4 + a.data.len() / 28 + 8);
    base64_lines(&a.data, &mut body);
    out.extend_from_slice(&body);
    Ok(out.to_vec().into_boxed_slice())
}

/// 16 random bytes from the system generator; if that fails (it does not on the
/// platforms we run on), bytes derived from the clock and this process.
fn random_secret() -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut secret = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut secret).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!("{nanos}:{}:{:p}", std::process::id(), &secret);
        let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
        secret.copy_from_slice(&digest.as_ref()[..16]);
    }
    secret
}
