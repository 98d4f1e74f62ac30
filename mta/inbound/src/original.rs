//! The returned original inside a report: the third part of a DSN or ARF report,
//! either the whole message (`message/rfc822`, `message/global`) or its header
//! alone (`text/rfc822-headers`, `message/global-headers`). We keep the fields that
//! help find the recipient the report is about.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::fields::{address_in, first_block};

/// Header fields of the returned original message that identify its recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginalHeaders {
    /// The first address of `To:`.
    pub to: Option<String>,
    /// `Message-ID:`, without `<>`.
    pub message_id: Option<String>,
    /// The address of `Return-Path:` (added by the receiver that delivered the
    /// original): our VERP address, when the original was a campaign message.
    pub return_path: Option<String>,
    /// Every `X-Volley-*` field, name as written and value unfolded. Informative
    /// only: unsigned, so never trusted to name a recipient.
    pub volley: Vec<(String, String)>,
}

impl OriginalHeaders {
    /// The fields of interest in a header block's text.
    pub fn from_header_text(text: &str) -> OriginalHeaders {
        let block = first_block(text);
        let id = |v: &str| {
            let v = v.trim();
            let v = v
                .strip_prefix('<')
                .and_then(|v| v.split('>').next())
                .unwrap_or(v);
            (!v.is_empty()).then(|| v.to_owned())
        };
        OriginalHeaders {
            to: block.get("to").and_then(address_in).map(str::to_owned),
            message_id: block.get("message-id").and_then(id),
            return_path: block
                .get("return-path")
                .and_then(address_in)
                .map(str::to_owned),
            volley: block
                .fields
                .iter()
                .filter(|f| {
                    f.name
                        .get(..9)
                        .is_some_and(|p| p.eq_ignore_ascii_case("x-volley-"))
                })
                .map(|f| (f.name.to_owned(), f.value.clone()))
                .collect(),
        }
    }
}

/// Whether `part` is a returned original (message or header).
fn is_original(part: &MessagePart<'_>) -> bool {
    let Some(ct) = part.content_type() else {
        return false;
    };
    let sub = ct.subtype().unwrap_or_default();
    match ct.ctype() {
        t if t.eq_ignore_ascii_case("message") => ["rfc822", "global", "global-headers"]
            .iter()
            .any(|s| s.eq_ignore_ascii_case(sub)),
        t if t.eq_ignore_ascii_case("text") => sub.eq_ignore_ascii_case("rfc822-headers"),
        _ => false,
    }
}

/// The first returned original among the parts of `message` (not the top part).
pub(crate) fn find(message: &Message<'_>) -> Option<OriginalHeaders> {
    let part = message.parts.iter().skip(1).find(|p| is_original(p))?;
    let text = String::from_utf8_lossy(part_bytes(part));
    Some(OriginalHeaders::from_header_text(&text))
}

/// The decoded bytes of a part. Unlike `MessagePart::contents`, never panics on
/// a nested message without parts (mail-parser indexes `parts[0]` there:
/// stalwartlabs/mail-parser#120).
pub(crate) fn part_bytes<'a>(part: &'a MessagePart<'_>) -> &'a [u8] {
    match &part.body {
        PartType::Message(nested) => nested
            .parts
            .first()
            .and_then(|root| {
                nested
                    .raw_message
                    .get(root.offset_header as usize..root.offset_end as usize)
            })
            .unwrap_or_default(),
        _ => part.contents(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_interest() {
        let text = "Return-Path: <b-xyz@bounce.acme.test>\r\nReceived: from x\r\n\
                    To: \"Ann\" <ann@example.test>\r\nMessage-ID:\r\n <1.abc@acme.test>\r\n\
                    X-Volley-Campaign: 42\r\nx-volley-batch: 7\r\nX-Volleyball: no\r\n\r\n\
                    To: body@not.header\r\n";
        let headers = OriginalHeaders::from_header_text(text);
        assert_eq!(
            headers,
            OriginalHeaders {
                to: Some("ann@example.test".into()),
                message_id: Some("1.abc@acme.test".into()),
                return_path: Some("b-xyz@bounce.acme.test".into()),
                volley: vec![
                    ("X-Volley-Campaign".into(), "42".into()),
                    ("x-volley-batch".into(), "7".into()),
                ],
            }
        );
        assert_eq!(
            OriginalHeaders::from_header_text(""),
            OriginalHeaders::default()
        );
    }
}
