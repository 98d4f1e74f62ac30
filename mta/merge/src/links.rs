//! Web links in campaign messages: the one-click unsubscribe URL, tracked
//! clicks and the open image, each with a signed token naming the recipient
//! ([`volley_queue::link`]).
//!
//! At compile time a template with `track_clicks` has the `http(s)` URL of each
//! `<a href>` and `<area href>` in its HTML part turned into a placeholder of
//! its own (a *web slot*) whose default is the URL as written; `track_opens`
//! adds one before `</body>` for the image. At send time, with a
//! [`WebContext`], each web slot's value is the signed URL; without one (no
//! `[web]` section) the slots are empty and the message reads as written.
//! Web slot names start with a NUL, which no merge field can.

use volley_queue::link::{KeyTooShort, LinkKind, LinkSigner, LinkTarget};

use super::mime::ValueFlags;
use super::part::{Names, Part, Piece};

/// Most links tracked in one template; later ones are left as written.
pub const MAX_TRACKED_LINKS: usize = 1000;

/// Start of the name of the web slot of tracked link `i`: `"\0c" + i`.
const CLICK_SLOT: &str = "\0c";
/// Name of the open image's web slot.
pub(crate) const OPEN_SLOT: &str = "\0o";

/// What writes the links of every message: the signer and the public origin.
/// Built once at start; shared by every delivery thread.
#[derive(Debug)]
pub struct WebLinks {
    signer: LinkSigner,
    base_url: String,
    /// What every click URL needs when merged ([`ValueFlags`]): the same for
    /// all, the tokens being base64url; worked out once, not per message.
    click_flags: ValueFlags,
    /// The same for the open image element.
    open_flags: ValueFlags,
}

impl WebLinks {
    /// Links to `base_url` (no trailing slash: `volley_conf::check_base_url`)
    /// with tokens signed by `key` (at least 32 bytes).
    pub fn new(key: &[u8], base_url: &str) -> Result<WebLinks, KeyTooShort> {
        let mut links = WebLinks {
            signer: LinkSigner::new(key)?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            click_flags: ValueFlags::default(),
            open_flags: ValueFlags::default(),
        };
        let target = LinkTarget {
            campaign: 0,
            batch: 0,
            index: 0,
            link: 0,
        };
        let mut sample = Vec::new();
        links.write_url(LinkKind::Click, target, &mut sample);
        links.click_flags = ValueFlags::of(&sample);
        sample.clear();
        write_open_image(
            &WebContext {
                links: &links,
                target,
            },
            &mut sample,
        );
        links.open_flags = ValueFlags::of(&sample);
        Ok(links)
    }

    /// What a click URL needs when merged (the same for every token).
    pub(crate) fn click_flags(&self) -> ValueFlags {
        self.click_flags
    }

    /// What the open image element needs when merged.
    pub(crate) fn open_flags(&self) -> ValueFlags {
        self.open_flags
    }

    /// Appends `BASE/<kind>/TOKEN` for `target` to `out`.
    pub fn write_url(&self, kind: LinkKind, target: LinkTarget, out: &mut Vec<u8>) {
        out.extend_from_slice(self.base_url.as_bytes());
        out.push(b'/');
        out.extend_from_slice(kind.path().as_bytes());
        out.push(b'/');
        out.extend_from_slice(&self.signer.encode(kind, target));
    }

    /// Appends `BASE/<kind>/TOKEN` for `target` to a string.
    pub fn push_url(&self, kind: LinkKind, target: LinkTarget, out: &mut String) {
        out.push_str(&self.base_url);
        out.push('/');
        out.push_str(kind.path());
        out.push('/');
        let token = self.signer.encode(kind, target);
        // base64url: ASCII only.
        out.extend(token.iter().map(|&b| char::from(b)));
    }

    /// `BASE/<kind>/TOKEN` for `target`, as a string.
    pub fn url(&self, kind: LinkKind, target: LinkTarget) -> String {
        let mut out = String::new();
        self.push_url(kind, target, &mut out);
        out
    }
}

/// The links of one message: whose they are and what writes them.
#[derive(Debug, Clone, Copy)]
pub struct WebContext<'a> {
    /// The signer and origin.
    pub links: &'a WebLinks,
    /// The recipient (campaign, batch, index; `link` is set per link).
    pub target: LinkTarget,
}

/// The web slot a placeholder name stands for, given the template's number
/// of tracked links: link `i` is slot `i`, the open image slot `links`.
pub(crate) fn web_slot(name: &str, links: usize) -> Option<usize> {
    if name == OPEN_SLOT {
        return Some(links);
    }
    name.strip_prefix(CLICK_SLOT)?.parse().ok()
}

/// Rewrites the tracked links of an HTML part (see the module documentation);
/// appends each link's redirect target (entities decoded) to `links`.
pub(crate) fn track_links(part: &mut Part, names: &mut Names, links: &mut Vec<String>) {
    let mut out = Vec::with_capacity(part.pieces.len());
    for piece in part.pieces.drain(..) {
        let Piece::Lit(text) = piece else {
            out.push(piece);
            continue;
        };
        let lower = text.to_ascii_lowercase();
        let mut at = 0;
        while links.len() < MAX_TRACKED_LINKS {
            let Some((start, end)) = next_href(&lower, at) else {
                break;
            };
            let written = &text[start..end];
            let target = decode_entities(written);
            if !trackable(&target) {
                if end > at {
                    out.push(Piece::Lit(text[at..end].into()));
                }
                at = end;
                continue;
            }
            if start > at {
                out.push(Piece::Lit(text[at..start].into()));
            }
            let name = format!("{CLICK_SLOT}{}", links.len());
            out.push(Piece::Field {
                name: names.intern(&name, true),
                default: Some(written.into()),
            });
            links.push(target);
            at = end;
        }
        if at < text.len() {
            out.push(Piece::Lit(text[at..].into()));
        }
    }
    part.pieces = out;
}

/// Adds the open image's web slot before the last `</body>`, or at the end.
pub(crate) fn add_open_image(part: &mut Part, names: &mut Names) {
    let slot = Piece::Field {
        name: names.intern(OPEN_SLOT, true),
        default: None,
    };
    for i in (0..part.pieces.len()).rev() {
        let Piece::Lit(text) = &part.pieces[i] else {
            continue;
        };
        if let Some(at) = text.to_ascii_lowercase().rfind("</body") {
            let (before, after) = (text[..at].to_owned(), text[at..].to_owned());
            part.pieces.splice(
                i..=i,
                [Piece::Lit(before.into()), slot, Piece::Lit(after.into())],
            );
            part.pieces
                .retain(|p| !matches!(p, Piece::Lit(t) if t.is_empty()));
            return;
        }
    }
    part.pieces.push(slot);
}

/// Appends the open image element for `url` to `out`.
pub(crate) fn write_open_image(web: &WebContext<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<img src=\"");
    web.links.write_url(LinkKind::Open, web.target, out);
    out.extend_from_slice(b"\" width=\"1\" height=\"1\" alt=\"\" style=\"border:0\">");
}

/// A URL worth a redirect: `http(s)://`, a host, no whitespace or control
/// characters (it becomes a `Location` header).
fn trackable(url: &str) -> bool {
    let lower = url
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return false;
    };
    !rest.is_empty()
        && !rest.starts_with('/')
        && url.len() <= 2000
        && !url.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The byte range of the next `href` value of an `<a>` or `<area>` tag at or
/// after `from` in `lower` (a literal, ASCII letters lower-cased), quotes
/// excluded; the tag and the value must end within it.
fn next_href(lower: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = lower.as_bytes();
    let mut at = from;
    loop {
        let open = at + lower.get(at..)?.find('<')?;
        at = open + 1;
        let name_len = if lower[at..].starts_with("area") {
            4
        } else if lower[at..].starts_with('a') {
            1
        } else {
            continue;
        };
        if !bytes
            .get(at + name_len)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            continue;
        }
        let tag_end = at + lower[at..].find('>')?;
        let mut i = at + name_len;
        // Walks the attributes: name, optional `= value` (quoted or not).
        while i < tag_end {
            while i < tag_end && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let name_start = i;
            while i < tag_end && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' {
                i += 1;
            }
            let name = &lower[name_start..i];
            while i < tag_end && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= tag_end || bytes[i] != b'=' {
                continue;
            }
            i += 1;
            while i < tag_end && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let (value_start, value_end) = match bytes.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let close = i + 1 + lower[i + 1..].find(q as char)?;
                    (i + 1, close)
                }
                _ => {
                    let mut j = i;
                    while j < tag_end && !bytes[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    (i, j)
                }
            };
            if name == "href" {
                return Some((value_start, value_end));
            }
            i = value_end + 1;
        }
        at = tag_end;
    }
}

/// HTML character references in an attribute value: the named five and
/// numeric ones; anything else is kept as written.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // A reference is short: look for its `;` in the next 12 bytes (an
        // ASCII byte, so the index is a character boundary).
        let Some(semi) = rest.as_bytes()[..rest.len().min(12)]
            .iter()
            .position(|&b| b == b';')
        else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part::parse_part;

    fn tracked(html: &str) -> (Vec<Piece>, Vec<String>) {
        let mut names = Names::default();
        let mut part = parse_part(html, "html", &mut names).unwrap();
        let mut links = Vec::new();
        track_links(&mut part, &mut names, &mut links);
        (part.pieces, links)
    }

    #[test]
    fn the_flags_worked_out_once_are_those_of_every_url() {
        for base in [
            "https://t.example",
            "https://t.example/mail",
            "https://tëst.example",
        ] {
            let links = WebLinks::new(&[7; 32], base).unwrap();
            for (campaign, index, link) in [(1, 0, 0), (u64::MAX, u32::MAX, 999), (42, 7, 3)] {
                let target = LinkTarget {
                    campaign,
                    batch: campaign / 3,
                    index,
                    link,
                };
                let mut url = Vec::new();
                links.write_url(LinkKind::Click, target, &mut url);
                assert_eq!(links.click_flags(), ValueFlags::of(&url), "{base}");
                let mut img = Vec::new();
                write_open_image(
                    &WebContext {
                        links: &links,
                        target,
                    },
                    &mut img,
                );
                assert_eq!(links.open_flags(), ValueFlags::of(&img), "{base}");
            }
        }
    }

    #[test]
    fn http_links_of_a_and_area_tags_become_web_slots() {
        let (pieces, links) = tracked(
            "<p><a class=x href=\"https://acme.test/a?x=1&amp;y=2\">A</a> \
             <A HREF='http://acme.test/b'>B</A><area shape=rect href=https://acme.test/c>\
             <link href=\"https://acme.test/style.css\"><a href=\"mailto:x@acme.test\">m</a>\
             <a href=\"#top\">t</a><a href=\"https://acme.test/{{ id }}\">p</a></p>",
        );
        assert_eq!(
            links,
            [
                "https://acme.test/a?x=1&y=2",
                "http://acme.test/b",
                "https://acme.test/c"
            ]
        );
        let defaults: Vec<&str> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Field {
                    default: Some(d), ..
                } => Some(&**d),
                _ => None,
            })
            .collect();
        // Written as in the template (entities kept) when no links are made.
        assert_eq!(
            defaults,
            [
                "https://acme.test/a?x=1&amp;y=2",
                "http://acme.test/b",
                "https://acme.test/c"
            ]
        );
    }

    #[test]
    fn slot_names_and_entities() {
        assert_eq!(web_slot("\0c12", 20), Some(12));
        assert_eq!(web_slot(OPEN_SLOT, 20), Some(20));
        assert_eq!(web_slot("c12", 20), None);
        assert_eq!(
            decode_entities("a&amp;b&#38;c&#x26;d&bogus;e&"),
            "a&b&c&d&bogus;e&"
        );
        assert_eq!(decode_entities("x&ééééééé;"), "x&ééééééé;");
        assert!(!trackable("javascript:alert(1)"));
        assert!(!trackable("https:///x"));
        assert!(!trackable("https://a.test/x y"));
        assert!(trackable("HTTPS://a.test/x"));
    }

    #[test]
    fn the_open_image_goes_before_the_body_end() {
        let mut names = Names::default();
        let mut part = parse_part("<body><p>Hi</p></BODY></html>", "html", &mut names).unwrap();
        add_open_image(&mut part, &mut names);
        assert!(matches!(&part.pieces[0], Piece::Lit(t) if &**t == "<body><p>Hi</p>"));
        assert!(matches!(
            &part.pieces[1],
            Piece::Field { default: None, .. }
        ));
        assert!(matches!(&part.pieces[2], Piece::Lit(t) if &**t == "</BODY></html>"));
        let mut part = parse_part("<p>Hi</p>", "html", &mut names).unwrap();
        add_open_image(&mut part, &mut names);
        assert_eq!(part.pieces.len(), 2);
    }
}
