//! Where the message for each recipient comes from at send time.

use bytes::{Bytes, BytesMut};
use volley_queue::BatchView;

/// Why a recipient's message could not be produced (nothing is sent). A
/// permanent one bounces the recipient with this reason; a transient one (a local
/// failure that passes: a file that could not be read for lack of descriptors or
/// an I/O error, a signing failure) defers it like a 4xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct RenderError {
    /// What went wrong, as logged.
    pub reason: String,
    /// Whether trying again later may succeed.
    pub transient: bool,
}

impl RenderError {
    /// A failure that trying again cannot mend: the template cannot render for
    /// this recipient.
    pub fn permanent(reason: impl Into<String>) -> RenderError {
        RenderError {
            reason: reason.into(),
            transient: false,
        }
    }

    /// A local failure that may pass.
    pub fn transient(reason: impl Into<String>) -> RenderError {
        RenderError {
            reason: reason.into(),
            transient: true,
        }
    }

    /// A file that could not be read: permanent when it is not there (the
    /// content is gone), transient for every other error (EMFILE, EIO, ...).
    pub fn io(reason: impl Into<String>, err: &std::io::Error) -> RenderError {
        if err.kind() == std::io::ErrorKind::NotFound {
            RenderError::permanent(reason)
        } else {
            RenderError::transient(reason)
        }
    }
}

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
