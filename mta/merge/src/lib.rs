//! volley-merge: mail merge at send time: a campaign's template is compiled once, and each
//! recipient's message is rendered from it straight into the send buffer when the
//! recipient's turn comes.
//!
//! A template is a TOML file (from, subject, text and/or HTML, extra headers,
//! attachments) or a raw `.eml` message, with `{{ field }}` and
//! `{{ field | default("text") }}` placeholders; `{{ email }}` is the recipient.
//! The rendered message has Date, Message-ID, From, To, Subject, Reply-To,
//! MIME-Version and the extra headers, then a text/plain, text/html,
//! multipart/alternative or multipart/mixed body.
//!
//! Merge values are data, whatever bytes they hold: in headers every control
//! character becomes a space and non-ASCII text becomes RFC 2047 encoded-words, so
//! a value cannot add a header; bodies are quoted-printable unless plain short
//! ASCII lines allow 7bit, so a value cannot end DATA, make an over-long line or
//! reach column 0 with a MIME boundary; HTML parts escape values; boundaries are
//! drawn per message from a per-template secret and re-drawn if the message already
//! contains one. Invalid UTF-8 is converted lossily.
//!
//! What it does not do: DKIM signing (the caller signs the rendered bytes), dot
//! stuffing and line-end checks on the wire (the SMTP layer), conditionals, loops
//! or any filter but `default` (a campaign template is not a program), and
//! re-encoding a raw message's body.
//!
//! What it may use: `volley-queue` (a batch's recipients and merge values),
//! `volley-smtp` (the RFC 5322 date and decimal writers the wire uses), serde and
//! toml (template files), `ring` (content hashes, boundary secrets). No I/O but
//! reading template and content files; nothing of the engine's: the engine asks a
//! [`MessageSource`](source::MessageSource) for each message.
//!
//! # Layout
//! Modules in the order they use each other (each uses only those above it):
//! - `error.rs`: [`TemplateError`]. `mime.rs`: quoted-printable, base64, RFC 2047
//!   and header folding, escaping. `address.rs`: the sender mailboxes.
//! - [`source`]: [`MessageSource`](source::MessageSource), what the delivery engine
//!   asks for each recipient's envelope sender and message at send time, with
//!   [`StaticMessage`](source::StaticMessage) (one message for all), and
//!   `RenderError`, why a message could not be made.
//! - `part.rs`: the placeholder parser: a part as literal and field pieces, the
//!   field names a template needs.
//! - `links.rs`: web links in campaign messages: [`WebLinks`] (signer and
//!   origin), [`WebContext`] (one recipient's), tracked `href`s and the open
//!   image as web slots of the HTML part.
//! - `values.rs`: what one message is rendered from besides the template
//!   ([`RenderContext`], the recipient's values by placeholder) and the header
//!   text writers shared by every kind of template.
//! - `prequoted.rs`: quoted-printable body parts encoded at compile time.
//! - `raw.rs`: raw RFC 5322 message templates (compile and render).
//! - `spec.rs`: [`TemplateSpec`], the template as written: loading TOML and `.eml`
//!   files, the stored JSON form, content hash and content store file.
//! - `compile.rs`: [`Template::compile`]; what is the same for every message
//!   (From, Reply-To, attachments) is encoded here, once.
//! - `render.rs`: [`Template::render`]: headers, MIME structure, boundaries, Date
//!   and Message-ID.
//! - `verbatim.rs`: [`Verbatim`], a received message in the content store, relayed
//!   byte for byte (no merge, no Date or Message-ID).
//! - `template_source.rs`: [`TemplateSource`], the `MessageSource` that finds a
//!   batch's template (or received message) by content hash.
//! - [`report`]: the delivery status notifications volley writes itself (a
//!   relayed message that bounced or expired), RFC 3464.
//! - [`fuzzing`]: the entry point of the `template` fuzz target.
//!
//! `FORMAT.md` beside this file documents the template files, the content store and
//! the messages sent.

mod address;
mod compile;
mod error;
pub mod fuzzing;
mod links;
pub(crate) mod mime;
mod part;
mod prequoted;
mod raw;
pub(crate) mod render;
pub mod report;
pub mod source;
mod spec;
mod template_source;
#[cfg(test)]
mod tests;
mod values;
mod verbatim;

pub use compile::Template;
pub use error::TemplateError;
pub use links::{WebContext, WebLinks, MAX_TRACKED_LINKS};
pub use mime::base64_into;
pub use render::RenderContext;
pub use spec::{hash_hex, sha256, stored_path, Attachment, TemplateSpec};
pub use template_source::TemplateSource;
pub use verbatim::{message_path, Verbatim};

/// The placeholder that is always the recipient's address.
pub(crate) const EMAIL: &str = "email";
