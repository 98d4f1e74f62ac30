//! Where the message for each recipient comes from at send time.

use bytes::{Bytes, BytesMut};
use volley_queue::BatchView;

/// Why a recipient's message could not be produced. The recipient bounces with
/// this reason (nothing is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// Produces, at send time, the envelope sender and the message for one recipient
/// of a batch. Called on the delivery hot path: render straight into `out`.
pub trait MessageSource: Send + Sync + 'static {
    /// The envelope sender (MAIL FROM) for recipient `index` of `batch`; "" for the
    /// null sender.
    fn envelope_from(&self, batch: &BatchView<'_>, index: usize) -> Result<String, RenderError>;

    /// Appends the RFC 5322 message for recipient `index` of `batch` to `out`.
    /// Line ends may be LF or CRLF; the SMTP layer normalizes and dot-stuffs
    /// (and skips normalizing when the source says its line ends are all CRLF).
    fn render(
        &self,
        batch: &BatchView<'_>,
        index: usize,
        out: &mut BytesMut,
    ) -> Result<Rendered, RenderError>;
}

/// What [`MessageSource::render`] tells the SMTP layer about the bytes it
/// appended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Every line end is CRLF already (true of a compiled template's output by
    /// construction): sent as `volley_smtp::client::Transaction::crlf_only`.
    pub crlf_only: bool,
}

/// The same message for every recipient (relayed mail, tests, benchmarks).
#[derive(Debug, Clone)]
pub struct StaticMessage {
    /// Envelope sender.
    pub from: String,
    /// The whole message, headers and body.
    pub message: Bytes,
}

impl MessageSource for StaticMessage {
    fn envelope_from(&self, _: &BatchView<'_>, _: usize) -> Result<String, RenderError> {
        Ok(self.from.clone())
    }

    fn render(
        &self,
        _: &BatchView<'_>,
        _: usize,
        out: &mut BytesMut,
    ) -> Result<Rendered, RenderError> {
        out.extend_from_slice(&self.message);
        Ok(Rendered::default())
    }
}
