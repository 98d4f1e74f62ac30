//! [`TemplateSpec`]: a campaign's message as the author wrote it, read from a TOML
//! template or a raw `.eml` file, and its stored form in the content store.
//!
//! # Stored form
//!
//! The content store holds each template once, as `<content dir>/<hash>.json`:
//! `hash` is 64 lowercase hex digits, the SHA-256 of the file's bytes, which are
//! [`TemplateSpec::to_stored`]: compact JSON, keys in this order, optional keys left
//! out when empty, no trailing newline:
//!
//! ```json
//! {"from":"Acme News <news@acme.test>","return_path":"bounces@acme.test",
//!  "subject":"Hello {{ first_name }}","reply_to":"support@acme.test",
//!  "text":"Hi ...","html":"<p>Hi ...</p>",
//!  "headers":{"List-Unsubscribe":"<mailto:unsub@acme.test?subject={{ email }}>"},
//!  "attachments":[{"filename":"terms.pdf","content_type":"application/pdf",
//!                  "data":"JVBERi0x..."}],
//!  "raw":"Subject: ...\r\n\r\nbody",
//!  "unsubscribe":false,"track_clicks":true,"track_opens":true}
//! ```
//!
//! `data` is standard base64 with padding and no line breaks. `headers` is an
//! object whose keys serialize sorted. `raw` (a raw message template, header fields
//! one per line, CRLF line ends, From moved to `from`) excludes `subject`,
//! `reply_to`, `text`, `html`, `headers` and `attachments`. `unsubscribe` is
//! written only when false, `track_clicks` and `track_opens` only when true, so
//! that a template without them keeps the hash it had before they existed.
//! Unknown keys are an
//! error when reading, so a newer writer's template is refused rather than sent
//! incomplete.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{line_column, TemplateError};
use super::mime::{base64_decode, base64_into};
use super::raw::{join_message, split_message};

/// A campaign's message before compilation: sender, subject, bodies, extra headers
/// and attachments, with `{{ field }}` placeholders, every file's content inline.
/// [`Template::compile`](super::Template::compile) turns it into something to
/// render; [`TemplateSpec::to_stored`] into the bytes the content store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// The From mailbox, `Name <local@domain>` or `local@domain`; no placeholders.
    /// Its address is the envelope sender unless `return_path` is set.
    pub from: String,
    /// The envelope sender (MAIL FROM), where bounces go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_path: Option<String>,
    /// The Subject, with placeholders.
    #[serde(default)]
    pub subject: String,
    /// The Reply-To mailbox; no placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The text/plain body, with placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The text/html body, with placeholders (values are HTML-escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Extra header fields, name to value with placeholders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Files attached to every message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// A whole RFC 5322 message with placeholders, instead of the parts above
    /// (which must then be empty); its From field is in `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Whether messages carry the one-click unsubscribe headers
    /// (`List-Unsubscribe` to `[web] base_url`, `List-Unsubscribe-Post`) when
    /// the web endpoints are on. Default true; false for transactional mail.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub unsubscribe: bool,
    /// Whether each `http(s)` link of the HTML part (`<a href>`, `<area
    /// href>` written without placeholders) is rewritten at send time to a
    /// signed `[web] base_url/c/TOKEN` that records the click and redirects to
    /// it. Default false. The text part keeps the plain URLs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub track_clicks: bool,
    /// Whether the HTML part gets a 1×1 image at `[web] base_url/o/TOKEN` that
    /// records an open (unreliable: some readers fetch every image). Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub track_opens: bool,
}

impl Default for TemplateSpec {
    fn default() -> Self {
        TemplateSpec {
            from: String::new(),
            return_path: None,
            subject: String::new(),
            reply_to: None,
            text: None,
            html: None,
            headers: BTreeMap::new(),
            attachments: Vec::new(),
            raw: None,
            unsubscribe: true,
            track_clicks: false,
            track_opens: false,
        }
    }
}

fn yes() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if signature
fn is_true(b: &bool) -> bool {
    *b
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if signature
fn is_false(b: &bool) -> bool {
    !*b
}

/// A file attached to every message of a campaign.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The name the recipient sees.
    pub filename: String,
    /// The MIME type, e.g. `application/pdf`.
    pub content_type: String,
    /// The file's bytes (base64 in the stored JSON).
    #[serde(with = "base64_string")]
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Attachment {
    // Not derived: the data would print every byte.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("data", &format_args!("{} bytes", self.data.len()))
            .finish()
    }
}

mod base64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut text = Vec::new();
        super::base64_into(data, &mut text);
        s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::base64_decode(text.as_bytes())
            .ok_or_else(|| serde::de::Error::custom("attachment data is not valid base64"))
    }
}

/// The TOML template file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    from: String,
    #[serde(default)]
    return_path: Option<String>,
    subject: String,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    text_file: Option<PathBuf>,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    html_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    attachments: Vec<AttachmentFile>,
    #[serde(default = "yes")]
    unsubscribe: bool,
    #[serde(default)]
    track_clicks: bool,
    #[serde(default)]
    track_opens: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentFile {
    path: PathBuf,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    filename: Option<String>,
}

impl TemplateSpec {
    /// Reads a template file: TOML (`.toml`, or any file that does not start like a
    /// message header) or a raw message (`.eml`, `.txt`, or a file whose first line
    /// is a header field). Files it names (`text_file`, `html_file`, attachment
    /// `path`s) are relative to its directory and read now. Errors name the file,
    /// and for TOML the line, column and key.
    pub fn load(path: &Path) -> Result<TemplateSpec, TemplateError> {
        let text = read_text(path)?;
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let raw = match extension.as_deref() {
            Some("toml") => false,
            Some("eml" | "txt") => true,
            _ => looks_like_message(&text),
        };
        if raw {
            TemplateSpec::from_message(&text, path)
        } else {
            TemplateSpec::from_toml(&text, path)
        }
    }

    /// Parses a TOML template; `file` names it in errors and anchors relative paths.
    pub fn from_toml(text: &str, file: &Path) -> Result<TemplateSpec, TemplateError> {
        let document = toml::de::Deserializer::parse(text)
            .map_err(|err| toml_error(file, text, err.span(), String::new(), err.message()))?;
        let spec: SpecFile = serde_path_to_error::deserialize(document).map_err(|err| {
            let key = err.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let inner = err.into_inner();
            toml_error(file, text, inner.span(), key, inner.message())
        })?;
        let dir = file.parent().unwrap_or(Path::new(""));
        let invalid = |message: String| TemplateError::Invalid {
            file: file.to_path_buf(),
            message,
        };
        let text =
            inline_or_file(spec.text, spec.text_file, "text", dir).map_err(|e| e.into(file))?;
        let html =
            inline_or_file(spec.html, spec.html_file, "html", dir).map_err(|e| e.into(file))?;
        if text.is_none() && html.is_none() {
            return Err(invalid(
                "no body: set text, text_file, html or html_file".into(),
            ));
        }
        let mut attachments = Vec::with_capacity(spec.attachments.len());
        for file_entry in spec.attachments {
            let full = dir.join(&file_entry.path);
            let data = fs::read(&full).map_err(|io| TemplateError::Read {
                path: full.clone(),
                io,
            })?;
            let filename = match file_entry.filename {
                Some(name) => name,
                None => file_entry
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let content_type = file_entry
                .content_type
                .unwrap_or_else(|| guess_content_type(&filename).to_owned());
            attachments.push(Attachment {
                filename,
                content_type,
                data,
            });
        }
        Ok(TemplateSpec {
            from: spec.from,
            return_path: spec.return_path,
            subject: spec.subject,
            reply_to: spec.reply_to,
            text,
            html,
            headers: spec.headers,
            attachments,
            raw: None,
            unsubscribe: spec.unsubscribe,
            track_clicks: spec.track_clicks,
            track_opens: spec.track_opens,
        })
    }

    /// Parses a raw message template: its From field becomes `from`, the rest
    /// `raw`. `file` names it in errors.
    pub fn from_message(text: &str, file: &Path) -> Result<TemplateSpec, TemplateError> {
        let invalid = |message: String| TemplateError::Invalid {
            file: file.to_path_buf(),
            message,
        };
        let (mut fields, body) = split_message(text).map_err(invalid)?;
        let mut from = None;
        let mut kept = Vec::with_capacity(fields.len());
        for field in fields.drain(..) {
            if field.name.eq_ignore_ascii_case("from") {
                if from.is_some() {
                    return Err(invalid("more than one From field".into()));
                }
                from = Some(field.value);
            } else {
                kept.push(field);
            }
        }
        let Some(from) = from else {
            return Err(invalid("the message has no From field".into()));
        };
        Ok(TemplateSpec {
            from: from.trim().to_owned(),
            raw: Some(join_message(&kept, &body)),
            ..TemplateSpec::default()
        })
    }

    /// The canonical bytes stored in the content store (compact JSON, see the
    /// module documentation); equal specs give equal bytes.
    pub fn to_stored(&self) -> Vec<u8> {
        // Strings, a string-keyed map and a list: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads bytes written by [`TemplateSpec::to_stored`].
    pub fn from_stored(bytes: &[u8]) -> Result<TemplateSpec, TemplateError> {
        serde_json::from_slice(bytes).map_err(|err| TemplateError::Stored(err.to_string()))
    }

    /// SHA-256 of [`TemplateSpec::to_stored`]: the key of the template in the
    /// content store and the `content_hash` of batches that use it.
    pub fn content_hash(&self) -> [u8; 32] {
        sha256(&self.to_stored())
    }

    /// Writes the stored form to `content_dir/<hash>.json` (creating the directory)
    /// unless a file of that name is already there, durably: temporary file, fsync,
    /// rename, directory fsync. Returns the content hash.
    pub fn store(&self, content_dir: &Path) -> Result<[u8; 32], TemplateError> {
        let bytes = self.to_stored();
        let hash = sha256(&bytes);
        let path = stored_path(content_dir, &hash);
        if path.exists() {
            return Ok(hash);
        }
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |io| TemplateError::Read { path, io }
        };
        fs::create_dir_all(content_dir).map_err(io_error(content_dir))?;
        let tmp = content_dir.join(format!(".{}.{}.tmp", hash_hex(&hash), std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(content_dir)?.sync_all()
        };
        write().map_err(|io| {
            let _ = fs::remove_file(&tmp);
            TemplateError::Read {
                path: path.clone(),
                io,
            }
        })?;
        Ok(hash)
    }
}

/// The file a template with content hash `hash` is stored in.
pub fn stored_path(content_dir: &Path, hash: &[u8; 32]) -> PathBuf {
    content_dir.join(format!("{}.json", hash_hex(hash)))
}

/// `hash` as 64 lowercase hex digits.
pub fn hash_hex(hash: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for &b in hash {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// The SHA-256 of `bytes`: content hashes of templates and stored messages.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn read_text(path: &Path) -> Result<String, TemplateError> {
    let bytes = fs::read(path).map_err(|io| TemplateError::Read {
        path: path.to_path_buf(),
        io,
    })?;
    String::from_utf8(bytes).map_err(|err| TemplateError::Invalid {
        file: path.to_path_buf(),
        message: format!(
            "not UTF-8 (invalid byte at offset {})",
            err.utf8_error().valid_up_to()
        ),
    })
}

/// Whether `text` starts like a message (a `Name: value` line) rather than TOML.
fn looks_like_message(text: &str) -> bool {
    let first = text.lines().next().unwrap_or_default();
    match first.split_once(':') {
        Some((name, _)) => {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }
        None => false,
    }
}

/// An error while reading a body file, before the template file name is known.
enum BodyError {
    Both(&'static str),
    Read(TemplateError),
    NotUtf8(PathBuf),
}

impl BodyError {
    fn into(self, file: &Path) -> TemplateError {
        match self {
            BodyError::Both(key) => TemplateError::Invalid {
                file: file.to_path_buf(),
                message: format!("both `{key}` and `{key}_file` are set; use one"),
            },
            BodyError::Read(err) => err,
            BodyError::NotUtf8(path) => TemplateError::Invalid {
                file: path,
                message: "not UTF-8".into(),
            },
        }
    }
}

fn inline_or_file(
    inline: Option<String>,
    file: Option<PathBuf>,
    key: &'static str,
    dir: &Path,
) -> Result<Option<String>, BodyError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(BodyError::Both(key)),
        (Some(text), None) => Ok(Some(text)),
        (None, Some(file)) => {
            let full = dir.join(file);
            let bytes = fs::read(&full).map_err(|io| {
                BodyError::Read(TemplateError::Read {
                    path: full.clone(),
                    io,
                })
            })?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| BodyError::NotUtf8(full))
        }
        (None, None) => Ok(None),
    }
}

fn toml_error(
    file: &Path,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    key: String,
    message: &str,
) -> TemplateError {
    let (line, column) = line_column(text, span.map_or(0, |s| s.start));
    TemplateError::Toml {
        file: file.to_path_buf(),
        line,
        column,
        key,
        message: message.trim().lines().collect::<Vec<_>>().join("; "),
    }
}

/// The MIME type for a file name's extension; `application/octet-stream` when
/// unknown.
pub(crate) fn guess_content_type(filename: &str) -> &'static str {
    let extension = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "htm" | "html" => "text/html",
        "ics" => "text/calendar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "json" => "application/json",
        "xml" => "application/xml",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn loads_toml_with_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "body.html", b"<p>Hi {{ first_name }}</p>");
        write(dir.path(), "terms.pdf", b"%PDF-1.4 fake");
        let path = write(
            dir.path(),
            "campaign.toml",
            br#"from = "Acme News <news@acme.test>"
return_path = "bounces@acme.test"
subject = "Hello {{ first_name | default(\"friend\") }}"
text = "Hi {{ first_name }}"
html_file = "body.html"
[headers]
"List-Unsubscribe" = "<mailto:unsub@acme.test?subject={{ email }}>"
[[attachments]]
path = "terms.pdf"
[[attachments]]
path = "terms.pdf"
filename = "T&C.bin"
content_type = "application/x-terms"
"#,
        );
        let spec = TemplateSpec::load(&path).unwrap();
        assert_eq!(spec.html.as_deref(), Some("<p>Hi {{ first_name }}</p>"));
        assert_eq!(spec.attachments[0].filename, "terms.pdf");
        assert_eq!(spec.attachments[0].content_type, "application/pdf");
        assert_eq!(spec.attachments[0].data, b"%PDF-1.4 fake");
        assert_eq!(spec.attachments[1].filename, "T&C.bin");
        assert_eq!(spec.attachments[1].content_type, "application/x-terms");
        assert_eq!(spec.return_path.as_deref(), Some("bounces@acme.test"));

        let stored = spec.to_stored();
        assert_eq!(TemplateSpec::from_stored(&stored).unwrap(), spec);
        assert_eq!(spec.content_hash(), sha256(&stored));
        let json = String::from_utf8(stored).unwrap();
        assert!(json.starts_with("{\"from\":\"Acme News <news@acme.test>\",\"return_path\""));
        assert!(json.contains("\"data\":\"JVBERi0xLjQgZmFrZQ==\""), "{json}");

        let content = dir.path().join("content");
        let hash = spec.store(&content).unwrap();
        assert_eq!(hash, spec.content_hash());
        let file = stored_path(&content, &hash);
        assert_eq!(fs::read(&file).unwrap(), spec.to_stored());
        assert_eq!(spec.store(&content).unwrap(), hash); // already there: no rewrite
        assert_eq!(file.file_name().unwrap().len(), 64 + 5);
    }

    #[test]
    fn toml_errors_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, &str)] = &[
            (
                "from = \"a@b.test\"\nsubject = \"x\"\ntext = \"t\"\nsubjet = \"y\"\n",
                "t.toml:4:1: subjet: unknown field `subjet`, expected one of",
            ),
            (
                "from = \"a@b.test\"\nsubject = \"x\"\ntext = \"t\"\n[[attachments]]\npth = \"x\"\n",
                "t.toml:5:1: attachments[0].pth: unknown field `pth`, expected one of",
            ),
            ("from = \"a@b.test\"\ntext = \"t\"\n", "t.toml:1:1: missing field `subject`"),
            ("from = \"a@b.test\nsubject = 1", "t.toml:1:"),
            (
                "from = \"a@b.test\"\nsubject = 5\ntext = \"t\"\n",
                "t.toml:2:11: subject: invalid type: integer `5`, expected a string",
            ),
            (
                "from = \"a@b.test\"\nsubject = \"x\"\n",
                "t.toml: no body: set text, text_file, html or html_file",
            ),
            (
                "from = \"a@b.test\"\nsubject = \"x\"\ntext = \"a\"\ntext_file = \"b\"\n",
                "t.toml: both `text` and `text_file` are set; use one",
            ),
        ];
        for (text, want) in cases {
            let path = write(dir.path(), "t.toml", text.as_bytes());
            let err = TemplateSpec::load(&path).unwrap_err().to_string();
            let err = err.replace(&format!("{}/", dir.path().display()), "");
            assert!(err.starts_with(want), "{text:?}\n got: {err}\nwant: {want}");
        }
        let path = write(
            dir.path(),
            "t.toml",
            b"from = \"a@b.test\"\nsubject = \"x\"\ntext_file = \"missing.txt\"\n",
        );
        let err = TemplateSpec::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read ") && err.contains("missing.txt"),
            "{err}"
        );
    }

    #[test]
    fn loads_raw_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "m.eml",
            b"From: Acme <news@acme.test>\nSubject: Hi {{ name }}\n\nBody {{ name }}\n",
        );
        let spec = TemplateSpec::load(&path).unwrap();
        assert_eq!(spec.from, "Acme <news@acme.test>");
        assert_eq!(
            spec.raw.as_deref(),
            Some("Subject: Hi {{ name }}\r\n\r\nBody {{ name }}\r\n")
        );
        // Sniffed without an extension.
        let path = write(dir.path(), "m", b"From: a@b.test\r\n\r\nx");
        assert!(TemplateSpec::load(&path).unwrap().raw.is_some());
        let path = write(dir.path(), "m.eml", b"Subject: x\n\nbody");
        assert_eq!(
            TemplateSpec::load(&path)
                .unwrap_err()
                .to_string()
                .rsplit(": ")
                .next(),
            Some("the message has no From field")
        );
        let path = write(dir.path(), "bad.eml", b"From: a@b.test\n\xff\n");
        assert!(TemplateSpec::load(&path)
            .unwrap_err()
            .to_string()
            .ends_with("not UTF-8 (invalid byte at offset 15)"));
    }

    #[test]
    fn stored_errors() {
        assert!(TemplateSpec::from_stored(b"{").is_err());
        assert!(TemplateSpec::from_stored(b"{\"from\":\"a@b\",\"extra\":1}")
            .unwrap_err()
            .to_string()
            .contains("unknown field `extra`"));
        let bad =
            br#"{"from":"a@b","attachments":[{"filename":"x","content_type":"a/b","data":"!!"}]}"#;
        assert!(TemplateSpec::from_stored(bad)
            .unwrap_err()
            .to_string()
            .contains("not valid base64"));
    }

    #[test]
    fn content_types() {
        assert_eq!(guess_content_type("Terms.PDF"), "application/pdf");
        assert_eq!(guess_content_type("noext"), "application/octet-stream");
        assert_eq!(guess_content_type("a.tar.gz"), "application/gzip");
    }
}
