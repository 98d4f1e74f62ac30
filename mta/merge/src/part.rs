//! The placeholder model: a template part parsed into literal and field pieces
//! (`{{ name }}` and `{{ name | default("text") }}`), and the field names a
//! template needs. The parser is hand-written: see `compile.rs` for why.

use std::collections::BTreeSet;

use memchr::memmem;

use super::error::{line_column, TemplateError};
use super::EMAIL;

/// One piece of a compiled part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Text copied as is (HTML parts: not escaped).
    Lit(Box<str>),
    /// A merge field: index into [`Template::names`], and the text used when the
    /// value is empty.
    Field {
        name: usize,
        default: Option<Box<str>>,
    },
}

/// A compiled part (subject, a header value, a body): literal and field pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) pieces: Vec<Piece>,
}

/// The distinct placeholder names of a template, as the parts are compiled.
#[derive(Debug, Default)]
pub(crate) struct Names {
    pub(crate) names: Vec<Box<str>>,
    /// Names used at least once without a default (never `email`).
    pub(crate) required: BTreeSet<String>,
}

impl Names {
    pub(crate) fn intern(&mut self, name: &str, has_default: bool) -> usize {
        if !has_default && name != EMAIL {
            self.required.insert(name.to_owned());
        }
        match self.names.iter().position(|n| &**n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.into());
                self.names.len() - 1
            }
        }
    }
}

/// Parses the placeholders of `src`, the part called `part` in error messages.
pub(crate) fn parse_part(src: &str, part: &str, names: &mut Names) -> Result<Part, TemplateError> {
    let bytes = src.as_bytes();
    let mut pieces = Vec::new();
    let mut at = 0;
    while let Some(k) = memmem::find(&bytes[at..], b"{{") {
        let open = at + k;
        if open > at {
            pieces.push(Piece::Lit(src[at..open].into()));
        }
        let placeholder = parse_placeholder(src, open).map_err(|(offset, message)| {
            let (line, column) = line_column(src, offset);
            TemplateError::Syntax {
                part: part.to_owned(),
                line,
                column,
                message,
            }
        })?;
        pieces.push(Piece::Field {
            name: names.intern(placeholder.name, placeholder.default.is_some()),
            default: placeholder.default.map(String::into_boxed_str),
        });
        at = placeholder.end;
    }
    if at < src.len() {
        pieces.push(Piece::Lit(src[at..].into()));
    }
    Ok(Part { pieces })
}

struct Placeholder<'a> {
    name: &'a str,
    default: Option<String>,
    /// Offset just past the closing `}}`.
    end: usize,
}

/// Characters of a field name: CSV column names as people write them.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Parses the placeholder whose `{{` is at `open`; errors are (offset, message).
fn parse_placeholder(src: &str, open: usize) -> Result<Placeholder<'_>, (usize, String)> {
    let b = src.as_bytes();
    let unclosed = || (open, "unclosed placeholder: no `}}` after `{{`".to_owned());
    let found = |at: usize| match src[at..].chars().next() {
        Some(c) => format!("`{c}`"),
        None => "the end".to_owned(),
    };
    let skip_ws = |at: &mut usize| {
        while b.get(*at).is_some_and(u8::is_ascii_whitespace) {
            *at += 1;
        }
    };
    let mut at = open + 2;
    skip_ws(&mut at);
    let name_start = at;
    while b.get(at).copied().is_some_and(is_name_byte) {
        at += 1;
    }
    let name = &src[name_start..at];
    if name.is_empty() {
        return Err(match b.get(at) {
            None => unclosed(),
            Some(b'}') => (at, "empty placeholder: expected a field name".into()),
            Some(_) => (
                at,
                format!(
                    "expected a field name (letters, digits, `_`, `-`, `.`), found {}",
                    found(at)
                ),
            ),
        });
    }
    skip_ws(&mut at);
    if src[at..].starts_with("}}") {
        return Ok(Placeholder {
            name,
            default: None,
            end: at + 2,
        });
    }
    match b.get(at) {
        None => return Err(unclosed()),
        Some(b'|') => at += 1,
        Some(_) => {
            return Err((
                at,
                format!(
                    "expected `}}}}` or `| default(\"...\")` after `{name}`, found {}",
                    found(at)
                ),
            ))
        }
    }
    skip_ws(&mut at);
    let filter_start = at;
    while b
        .get(at)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    {
        at += 1;
    }
    match &src[filter_start..at] {
        "default" => {}
        "" if at == src.len() => return Err(unclosed()),
        "" => {
            return Err((
                at,
                format!("expected a filter after `|`, found {}", found(at)),
            ))
        }
        other => {
            return Err((
                filter_start,
                format!("unknown filter `{other}`: only `default(\"...\")` is supported"),
            ))
        }
    }
    skip_ws(&mut at);
    let expect = |at: &mut usize, what: u8, context: &str| match b.get(*at) {
        Some(&c) if c == what => {
            *at += 1;
            Ok(())
        }
        None => Err(unclosed()),
        Some(_) => Err((
            *at,
            format!(
                "expected `{}` {context}, found {}",
                what as char,
                found(*at)
            ),
        )),
    };
    expect(&mut at, b'(', "after `default`")?;
    skip_ws(&mut at);
    let quote = match b.get(at) {
        Some(&q @ (b'"' | b'\'')) => q,
        None => return Err(unclosed()),
        Some(_) => {
            return Err((
                at,
                format!(
                    "expected a quoted string in `default(...)`, found {}",
                    found(at)
                ),
            ))
        }
    };
    let string_start = at;
    at += 1;
    let mut default = String::new();
    loop {
        let Some(c) = src[at..].chars().next() else {
            return Err((string_start, "unterminated string in `default(...)`".into()));
        };
        at += c.len_utf8();
        if c as u32 == u32::from(quote) {
            break;
        }
        if c != '\\' {
            default.push(c);
            continue;
        }
        let escape_at = at - 1;
        let Some(e) = src[at..].chars().next() else {
            return Err((string_start, "unterminated string in `default(...)`".into()));
        };
        at += e.len_utf8();
        default.push(match e {
            '\\' | '"' | '\'' => e,
            'n' => '\n',
            't' => '\t',
            _ => {
                return Err((
                    escape_at,
                    format!("unknown escape `\\{e}`: use \\\\, \\\", \\', \\n or \\t"),
                ))
            }
        });
    }
    skip_ws(&mut at);
    expect(&mut at, b')', "to close `default(`")?;
    skip_ws(&mut at);
    if !src[at..].starts_with("}}") {
        return Err(match b.get(at) {
            None => unclosed(),
            Some(_) => (at, format!("expected `}}}}`, found {}", found(at))),
        });
    }
    Ok(Placeholder {
        name,
        default: Some(default),
        end: at + 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Vec<Piece>, String> {
        let mut names = Names::default();
        parse_part(src, "text", &mut names)
            .map(|p| p.pieces)
            .map_err(|e| e.to_string())
    }

    fn lit(s: &str) -> Piece {
        Piece::Lit(s.into())
    }

    fn field(name: usize, default: Option<&str>) -> Piece {
        Piece::Field {
            name,
            default: default.map(Into::into),
        }
    }

    #[test]
    fn placeholders_that_parse() {
        let cases: Vec<(&str, Vec<Piece>)> = vec![
            ("", vec![]),
            ("plain { text } }}", vec![lit("plain { text } }}")]),
            ("{{a}}", vec![field(0, None)]),
            ("{{ a }}", vec![field(0, None)]),
            ("{{\n\ta\n}}", vec![field(0, None)]),
            (
                "Hi {{ first_name }}!",
                vec![lit("Hi "), field(0, None), lit("!")],
            ),
            (
                "{{a}}{{b}}{{a}}",
                vec![field(0, None), field(1, None), field(0, None)],
            ),
            (
                "{{ name | default(\"friend\") }}",
                vec![field(0, Some("friend"))],
            ),
            ("{{name|default('x')}}", vec![field(0, Some("x"))]),
            (
                r#"{{ n | default("a \"q\" \\ \n }} 'x'") }}"#,
                vec![field(0, Some("a \"q\" \\ \n }} 'x'"))],
            ),
            ("{{ n | default(\"\") }}", vec![field(0, Some(""))]),
            ("{{ first-name.x_1 }}", vec![field(0, None)]),
            (
                "{{ n | default(\"Grüße\") }}",
                vec![field(0, Some("Grüße"))],
            ),
        ];
        for (src, want) in cases {
            assert_eq!(parse(src), Ok(want), "{src:?}");
        }
    }

    #[test]
    fn placeholders_that_do_not_parse() {
        let cases = [
            ("{{", "text:1:1: unclosed placeholder: no `}}` after `{{`"),
            (
                "ab\ncd {{ x",
                "text:2:4: unclosed placeholder: no `}}` after `{{`",
            ),
            (
                "{{ x }",
                "text:1:6: expected `}}` or `| default(\"...\")` after `x`, found `}`",
            ),
            ("{{}}", "text:1:3: empty placeholder: expected a field name"),
            (
                "é {{ $x }}",
                "text:1:6: expected a field name (letters, digits, `_`, `-`, `.`), found `$`",
            ),
            (
                "{{ first name }}",
                "text:1:10: expected `}}` or `| default(\"...\")` after `first`, found `n`",
            ),
            (
                "{{ x | upper }}",
                "text:1:8: unknown filter `upper`: only `default(\"...\")` is supported",
            ),
            (
                "{{ x | }}",
                "text:1:8: expected a filter after `|`, found `}`",
            ),
            (
                "{{ x | default }}",
                "text:1:16: expected `(` after `default`, found `}`",
            ),
            (
                "{{ x | default(friend) }}",
                "text:1:16: expected a quoted string in `default(...)`, found `f`",
            ),
            (
                "{{ x | default(\"friend) }}",
                "text:1:16: unterminated string in `default(...)`",
            ),
            (
                "{{ x | default(\"a\\qb\") }}",
                "text:1:18: unknown escape `\\q`: use \\\\, \\\", \\', \\n or \\t",
            ),
            (
                "{{ x | default(\"a\" }}",
                "text:1:20: expected `)` to close `default(`, found `}`",
            ),
            (
                "{{ x | default(\"a\") }",
                "text:1:21: expected `}}`, found `}`",
            ),
            (
                "{{ x | default(\"a\") x }}",
                "text:1:21: expected `}}`, found `x`",
            ),
            (
                "{{{ x }}}",
                "text:1:3: expected a field name (letters, digits, `_`, `-`, `.`), found `{`",
            ),
        ];
        for (src, want) in cases {
            assert_eq!(parse(src), Err(want.to_owned()), "{src:?}");
        }
    }

    #[test]
    fn required_names() {
        let mut names = Names::default();
        for src in [
            "{{ a }} {{ b | default(\"x\") }} {{ email }}",
            "{{ c | default(\"\") }} {{ c }} {{ b | default(\"y\") }}",
        ] {
            parse_part(src, "text", &mut names).unwrap();
        }
        assert_eq!(names.names.len(), 4);
        assert_eq!(names.required.iter().collect::<Vec<_>>(), vec!["a", "c"]);
    }

    #[test]
    fn fuzzish_inputs_never_panic() {
        let alphabet = [
            "{", "}", "{{", "}}", "|", "default", "(", ")", "\"", "'", "\\", " ", "a", "é", "\n",
        ];
        // Every string of up to 4 tokens from the alphabet.
        let mut stack = vec![(String::new(), 0)];
        while let Some((s, depth)) = stack.pop() {
            let _ = parse(&s);
            if depth < 4 {
                for t in alphabet {
                    stack.push((format!("{s}{t}"), depth + 1));
                }
            }
        }
    }
}
