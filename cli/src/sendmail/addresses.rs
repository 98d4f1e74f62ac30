//! The addresses of an RFC 5322 address list (`To:`, `Cc:`, `Bcc:`, `From:`,
//! sendmail's arguments): `Name <a@b>`, `a@b (comment)`, `"quoted local"@b`,
//! groups (`team: a@b, c@d;`, `undisclosed-recipients:;`), folded lines.
//!
//! Lenient on purpose, as a mail client is: display names, comments and source
//! routes are dropped, obsolete spacing around `.` and `@` is removed. What comes
//! out is checked by [`check`] before it is used.

/// The addr-specs of `list`, in order (a bare name such as `root` is kept as
/// is, for the caller to qualify).
pub fn parse_list(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut angle: Option<String> = None;
    let mut chars = list.chars().peekable();
    let mut emit = |plain: &mut String, angle: &mut Option<String>| {
        let address = match angle.take() {
            Some(a) => strip_route(a.trim()).to_owned(),
            None => plain.trim().to_owned(),
        };
        plain.clear();
        if !address.is_empty() {
            out.push(address);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // A quoted string: part of a local part, or a display name.
                plain.push('"');
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            plain.push('\\');
                            if let Some(escaped) = chars.next() {
                                plain.push(escaped);
                            }
                        }
                        '"' => break,
                        '\r' | '\n' => {}
                        q => plain.push(q),
                    }
                }
                plain.push('"');
            }
            '(' => skip_comment(&mut chars),
            '<' => {
                let mut address = String::new();
                for a in chars.by_ref() {
                    if a == '>' {
                        break;
                    }
                    if !a.is_whitespace() {
                        address.push(a);
                    }
                }
                angle = Some(address);
            }
            // The display name of a group: what came before is not an address.
            ':' if angle.is_none() => plain.clear(),
            ',' | ';' => emit(&mut plain, &mut angle),
            c if c.is_whitespace() => {
                // Spaces inside a phrase are kept apart from an address by the
                // angle brackets; around `.` and `@` they are obsolete syntax.
                if !plain.is_empty() && !plain.ends_with(' ') {
                    plain.push(' ');
                }
            }
            c => {
                if angle.is_none() {
                    plain.push(c);
                }
            }
        }
    }
    emit(&mut plain, &mut angle);
    out.into_iter().map(|a| collapse_spaces(&a)).collect()
}

/// Drops a comment, nested comments and escapes included (the `(` is read).
fn skip_comment(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    let mut depth = 1;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// `@relay1,@relay2:user@host` -> `user@host` (an obsolete source route).
fn strip_route(address: &str) -> &str {
    match address.strip_prefix('@') {
        Some(_) => address.split_once(':').map_or(address, |(_, rest)| rest),
        None => address,
    }
}

/// Removes spaces outside quoted strings (`john . doe @ x` -> `john.doe@x`); an
/// address that still has a space in it (a phrase without angle brackets) keeps
/// it, and [`check`] refuses it.
fn collapse_spaces(address: &str) -> String {
    let mut out = String::with_capacity(address.len());
    let mut quoted = false;
    let mut pending_space = false;
    let mut prev = '\0';
    for c in address.chars() {
        if c == '"' && prev != '\\' {
            quoted = !quoted;
        }
        if c == ' ' && !quoted {
            pending_space = true;
        } else {
            let glue = matches!(c, '.' | '@') || out.ends_with(['.', '@']);
            if pending_space && !glue && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
        prev = c;
    }
    out
}

/// Checks that `address` can go into an SMTP envelope: `local@domain`, a
/// non-empty local part (quoted or not), a domain of labels (letters, digits,
/// `-`, UTF-8) or an address literal, no spaces (outside quotes) or control
/// characters, at most 254 bytes (RFC 5321 §4.5.3.1.3).
pub fn check(address: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("bad address {address:?}: {why}"));
    if address.len() > 254 {
        return bad("longer than 254 bytes");
    }
    if address.chars().any(char::is_control) {
        return bad("control character");
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return bad("no @domain");
    };
    if local.is_empty() || domain.is_empty() {
        return bad("empty local part or domain");
    }
    let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    if !quoted && local.contains([' ', '"', '<', '>', '(', ')', ',', ';', ':', '\\', '[', ']']) {
        return bad("special characters in the local part (quote it)");
    }
    if let Some(literal) = domain.strip_prefix('[') {
        if !literal.ends_with(']') {
            return bad("unclosed address literal");
        }
        return Ok(());
    }
    let labels_ok = domain.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
    });
    if !labels_ok {
        return bad("the domain is not a host name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists() {
        let table: &[(&str, &[&str])] = &[
            ("a@x.test", &["a@x.test"]),
            ("Ann <a@x.test>, b@y.test", &["a@x.test", "b@y.test"]),
            (
                "\"Doe, John\" <john@x.test>,\r\n\tbob@y.test (Bob, the builder)",
                &["john@x.test", "bob@y.test"],
            ),
            (
                "team: a@x.test, B <b@y.test>; c@z.test",
                &["a@x.test", "b@y.test", "c@z.test"],
            ),
            ("undisclosed-recipients:;", &[]),
            ("\"john doe\"@x.test", &["\"john doe\"@x.test"]),
            ("john . doe @ x.test", &["john.doe@x.test"]),
            ("<@relay.test:a@x.test>", &["a@x.test"]),
            ("root", &["root"]),
            (" , ,a@x.test,,", &["a@x.test"]),
            ("=?UTF-8?Q?J=C3=B6rg?= <jorg@x.test>", &["jorg@x.test"]),
            ("Jörg <jörg@bücher.test>", &["jörg@bücher.test"]),
            ("a@x.test (comment (nested) \\) still)", &["a@x.test"]),
            ("<unclosed@x.test", &["unclosed@x.test"]),
            ("Ann Smith a@x.test", &["Ann Smith a@x.test"]),
        ];
        for (list, want) in table {
            assert_eq!(parse_list(list), *want, "{list:?}");
        }
    }

    #[test]
    fn checks() {
        for ok in [
            "a@x.test",
            "a.b+c@sub.x.test",
            "\"john doe\"@x.test",
            "a@[127.0.0.1]",
            "jörg@bücher.test",
            "a@x.test.",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("root", "no @domain"),
            ("@x.test", "empty local part"),
            ("a@", "empty local part or domain"),
            ("Ann Smith a@x.test", "special characters"),
            ("a@x_y.test", "not a host name"),
            ("a@x..test", "not a host name"),
            ("a@-x.test", "not a host name"),
            ("a\r\n@x.test", "control character"),
            ("a@[1.2.3.4", "unclosed"),
        ] {
            let err = check(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(check(&format!("{}@x.test", "a".repeat(250))).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_and_checks_without_panic(list in "[ -~\\r\\n\\té\u{0}]{0,200}") {
            for address in parse_list(&list) {
                let _ = check(&address);
            }
        }
    }

    #[test]
    fn never_panics() {
        for s in [
            "\"", "\"\\", "(", "((\\", "<", ":", ";", "<@", "@:", "\u{0}",
        ] {
            let _ = parse_list(s);
        }
    }
}
