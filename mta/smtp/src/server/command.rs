//! Parsing one SMTP command line (without its line end) into a [`Command`].
//!
//! Pure syntax: whether a command is allowed now is the session's business. Every
//! error is the reply to send ([`Line`]); nothing the client sent is echoed back.

use super::reply::Line;
use crate::dsn::{xtext_decode, Notify, RcptDsn, Ret};

/// A parsed command. Borrowed pieces point into the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command<'a> {
    Ehlo(&'a str),
    Helo(&'a str),
    StartTls,
    Auth {
        mechanism: &'a str,
        /// The initial response (RFC 4954), `=` standing for an empty one.
        initial: Option<&'a str>,
    },
    Mail {
        /// The reverse path without angle brackets; empty for the null sender.
        address: &'a str,
        params: MailParams,
    },
    Rcpt {
        address: &'a str,
        /// `NOTIFY=` and `ORCPT=` (RFC 3461).
        dsn: RcptDsn,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
}

/// The MAIL parameters we understand (RFC 1870, 6152, 6531, 4954, 3461).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct MailParams {
    /// `SIZE=n`: the client's estimate of the message size.
    pub size: Option<u64>,
    /// `BODY=8BITMIME`.
    pub eight_bit_mime: bool,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `RET=FULL|HDRS`.
    pub ret: Option<Ret>,
    /// `ENVID=`, xtext decoded.
    pub envid: Option<String>,
}

/// Longest path we take: RFC 5321 §4.5.3.1.3 (256 octets with the brackets).
const MAX_PATH: usize = 254;

/// Parses a command line. `Err` is the reply to send.
pub(crate) fn parse(line: &[u8]) -> Result<Command<'_>, Line> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(Line::new(
            500,
            "5.5.2",
            "Syntax error: invalid UTF-8 in command",
        ));
    };
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Line::new(
            500,
            "5.5.2",
            "Syntax error: control character in command",
        ));
    }
    let (verb, arg) = match line.split_once(' ') {
        Some((verb, arg)) => (verb, arg.trim()),
        None => (line.trim_end(), ""),
    };
    let is = |name: &str| verb.eq_ignore_ascii_case(name);
    let no_arg = |command: Command<'static>, name: &str| {
        if arg.is_empty() {
            Ok(command)
        } else {
            Err(Line::new(501, "5.5.4", format!("Syntax: {name}")))
        }
    };
    if is("EHLO") || is("HELO") {
        let name = arg.split_whitespace().next().unwrap_or_default();
        if name.is_empty() {
            let syntax = if is("EHLO") {
                "Syntax: EHLO hostname"
            } else {
                "Syntax: HELO hostname"
            };
            return Err(Line::new(501, "5.5.4", syntax));
        }
        Ok(if is("EHLO") {
            Command::Ehlo(name)
        } else {
            Command::Helo(name)
        })
    } else if is("MAIL") {
        let rest = strip_keyword(arg, "FROM:")
            .ok_or_else(|| Line::new(501, "5.5.4", "Syntax: MAIL FROM:<address>"))?;
        let (address, params) = path(rest, true)
            .map_err(|why| Line::new(501, "5.1.7", format!("Bad sender address syntax: {why}")))?;
        let params = mail_params(params)?;
        Ok(Command::Mail { address, params })
    } else if is("RCPT") {
        let rest = strip_keyword(arg, "TO:")
            .ok_or_else(|| Line::new(501, "5.5.4", "Syntax: RCPT TO:<address>"))?;
        let (address, params) = path(rest, false).map_err(|why| {
            Line::new(501, "5.1.3", format!("Bad recipient address syntax: {why}"))
        })?;
        let dsn = rcpt_params(params)?;
        Ok(Command::Rcpt { address, dsn })
    } else if is("BDAT") {
        let mut words = arg.split_whitespace();
        let size = words
            .next()
            .filter(|n| n.len() <= 19 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok());
        let last = match words.next() {
            None => false,
            Some(word) if word.eq_ignore_ascii_case("LAST") => true,
            Some(_) => return Err(Line::new(501, "5.5.4", "Syntax: BDAT size [LAST]")),
        };
        match (size, words.next()) {
            (Some(size), None) => Ok(Command::Bdat { size, last }),
            _ => Err(Line::new(501, "5.5.4", "Syntax: BDAT size [LAST]")),
        }
    } else if is("AUTH") {
        let mut words = arg.split_whitespace();
        let mechanism = words
            .next()
            .ok_or_else(|| Line::new(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))?;
        let initial = words.next();
        if words.next().is_some() {
            return Err(Line::new(
                501,
                "5.5.4",
                "Syntax: AUTH mechanism [initial-response]",
            ));
        }
        Ok(Command::Auth { mechanism, initial })
    } else if is("STARTTLS") {
        no_arg(Command::StartTls, "STARTTLS")
    } else if is("DATA") {
        no_arg(Command::Data, "DATA")
    } else if is("RSET") {
        no_arg(Command::Rset, "RSET")
    } else if is("QUIT") {
        no_arg(Command::Quit, "QUIT")
    } else if is("NOOP") {
        Ok(Command::Noop)
    } else if is("VRFY") {
        Ok(Command::Vrfy)
    } else if is("HELP") {
        Ok(Command::Help)
    } else {
        Err(Line::new(500, "5.5.1", "Command unrecognized"))
    }
}

/// `arg` after a case-insensitive `keyword` (e.g. `FROM:`), leading spaces
/// removed: some clients write `MAIL FROM: <a@b>`.
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg[keyword.len()..].trim_start())
}

/// Splits `<path> params`: the address inside the brackets (source route
/// dropped) and the rest. `null_ok` allows `<>`.
fn path(text: &str, null_ok: bool) -> Result<(&str, &str), &'static str> {
    let inner = text.strip_prefix('<').ok_or("the address must be in <>")?;
    // Find the closing '>' outside a quoted local part.
    let mut quoted = false;
    let mut escaped = false;
    let mut end = None;
    for (i, c) in inner.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == '>' && !quoted {
            end = Some(i);
            break;
        }
    }
    let end = end.ok_or("no closing >")?;
    let (mut address, rest) = (&inner[..end], &inner[end + 1..]);
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err("text after the closing >");
    }
    // A source route (`@a,@b:user@c`, RFC 5321 §4.1.2) is obsolete; drop it.
    if address.starts_with('@') {
        address = address
            .split_once(':')
            .map(|(_, mailbox)| mailbox)
            .ok_or("bad source route")?;
    }
    if address.is_empty() {
        return if null_ok {
            Ok(("", rest))
        } else {
            Err("empty address")
        };
    }
    if address.len() > MAX_PATH {
        return Err("address too long");
    }
    if !null_ok && address.eq_ignore_ascii_case("postmaster") {
        return Ok((address, rest));
    }
    check_mailbox(address)?;
    Ok((address, rest))
}

/// `local@domain` with a dot-atom or quoted local part and a domain name or
/// address literal. Non-ASCII is allowed here; the session checks SMTPUTF8.
fn check_mailbox(address: &str) -> Result<(), &'static str> {
    let at = address.rfind('@').ok_or("no @domain")?;
    let (local, domain) = (&address[..at], &address[at + 1..]);
    if local.is_empty() {
        return Err("empty local part");
    }
    if local.starts_with('"') {
        if local.len() < 2 || !local.ends_with('"') {
            return Err("bad quoted local part");
        }
    } else if local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || local.chars().any(|c| {
            c.is_ascii() && !(c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        })
    {
        return Err("bad local part");
    }
    if domain.is_empty() {
        return Err("empty domain");
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let literal = literal.strip_suffix(']').ok_or("bad address literal")?;
        if literal.is_empty() || literal.chars().any(|c| c.is_whitespace() || c == '[') {
            return Err("bad address literal");
        }
        return Ok(());
    }
    let bad_label = |label: &str| {
        label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || label
                .chars()
                .any(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || c == '-'))
    };
    if domain.len() > 253 || domain.split('.').any(bad_label) {
        return Err("bad domain");
    }
    Ok(())
}

/// The MAIL parameters after the path.
fn mail_params(text: &str) -> Result<MailParams, Line> {
    let mut params = MailParams::default();
    let mut seen_body = false;
    for param in text.split_whitespace() {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (param, None),
        };
        let bad = |what: &str| Line::new(501, "5.5.4", format!("Bad {what} parameter"));
        if key.eq_ignore_ascii_case("SIZE") {
            let value = value
                .filter(|v| !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("SIZE"))?;
            if params.size.replace(value).is_some() {
                return Err(bad("SIZE"));
            }
        } else if key.eq_ignore_ascii_case("BODY") {
            if std::mem::replace(&mut seen_body, true) {
                return Err(bad("BODY"));
            }
            match value {
                Some(v) if v.eq_ignore_ascii_case("8BITMIME") => params.eight_bit_mime = true,
                Some(v) if v.eq_ignore_ascii_case("7BIT") => {}
                _ => return Err(Line::new(555, "5.5.4", "BODY must be 7BIT or 8BITMIME")),
            }
        } else if key.eq_ignore_ascii_case("SMTPUTF8") {
            if value.is_some() || std::mem::replace(&mut params.smtputf8, true) {
                return Err(bad("SMTPUTF8"));
            }
        } else if key.eq_ignore_ascii_case("AUTH") {
            // RFC 4954 §5: the original submitter; we trust only our own AUTH.
        } else if key.eq_ignore_ascii_case("RET") {
            let ret = value.and_then(Ret::parse).ok_or_else(|| bad("RET"))?;
            if params.ret.replace(ret).is_some() {
                return Err(bad("RET"));
            }
        } else if key.eq_ignore_ascii_case("ENVID") {
            // RFC 3461 §4.4: at most 100 characters of xtext.
            let envid = value
                .filter(|v| !v.is_empty() && v.len() <= 100)
                .and_then(xtext_decode)
                .ok_or_else(|| bad("ENVID"))?;
            if params.envid.replace(envid).is_some() {
                return Err(bad("ENVID"));
            }
        } else {
            return Err(Line::new(
                555,
                "5.5.4",
                "MAIL parameters not recognized or not implemented",
            ));
        }
    }
    Ok(params)
}

/// The RCPT parameters after the path: `NOTIFY=` and `ORCPT=` (RFC 3461).
fn rcpt_params(text: &str) -> Result<RcptDsn, Line> {
    let mut dsn = RcptDsn::default();
    for param in text.split_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let bad = |what: &str| Line::new(501, "5.5.4", format!("Bad {what} parameter"));
        if key.eq_ignore_ascii_case("NOTIFY") {
            let notify = Notify::parse(value).ok_or_else(|| bad("NOTIFY"))?;
            if dsn.notify.replace(notify).is_some() {
                return Err(bad("NOTIFY"));
            }
        } else if key.eq_ignore_ascii_case("ORCPT") {
            // addr-type ";" xtext, at most 500 characters (RFC 3461 §4.2).
            let orcpt = Some(value)
                .filter(|v| v.len() <= 500)
                .and_then(|v| v.split_once(';'))
                .filter(|(kind, _)| {
                    !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .and_then(|(kind, addr)| Some(format!("{kind};{}", xtext_decode(addr)?)))
                .filter(|o| !o.ends_with(';'))
                .ok_or_else(|| bad("ORCPT"))?;
            if dsn.orcpt.replace(orcpt).is_some() {
                return Err(bad("ORCPT"));
            }
        } else {
            return Err(Line::new(
                555,
                "5.5.4",
                "RCPT parameters not recognized or not implemented",
            ));
        }
    }
    Ok(dsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command<'_> {
        parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
    }

    fn err(line: &str) -> String {
        match parse(line.as_bytes()) {
            Ok(c) => panic!("{line:?} parsed as {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn verbs_any_case() {
        assert_eq!(ok("ehlo client.test"), Command::Ehlo("client.test"));
        assert_eq!(ok("HELO client.test extra"), Command::Helo("client.test"));
        assert_eq!(ok("StartTLS"), Command::StartTls);
        assert_eq!(ok("DATA"), Command::Data);
        assert_eq!(ok("rset"), Command::Rset);
        assert_eq!(ok("NOOP anything"), Command::Noop);
        assert_eq!(ok("QUIT"), Command::Quit);
        assert_eq!(ok("VRFY root"), Command::Vrfy);
        assert_eq!(ok("HELP"), Command::Help);
        assert_eq!(
            ok("BDAT 0 LAST"),
            Command::Bdat {
                size: 0,
                last: true
            }
        );
        assert_eq!(
            ok("bdat 1000"),
            Command::Bdat {
                size: 1000,
                last: false
            }
        );
        assert_eq!(
            ok("AUTH PLAIN AGEAYg=="),
            Command::Auth {
                mechanism: "PLAIN",
                initial: Some("AGEAYg==")
            }
        );
        assert_eq!(
            ok("AUTH login"),
            Command::Auth {
                mechanism: "login",
                initial: None
            }
        );
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err("EXPN staff"), "500 5.5.1 Command unrecognized");
        assert_eq!(err(""), "500 5.5.1 Command unrecognized");
        assert_eq!(err("EHLO"), "501 5.5.4 Syntax: EHLO hostname");
        assert_eq!(err("DATA now"), "501 5.5.4 Syntax: DATA");
        assert_eq!(err("BDAT x"), "501 5.5.4 Syntax: BDAT size [LAST]");
        assert_eq!(err("BDAT 1 LAST x"), "501 5.5.4 Syntax: BDAT size [LAST]");
        assert_eq!(err("BDAT 1 FIRST"), "501 5.5.4 Syntax: BDAT size [LAST]");
        assert_eq!(
            err("BDAT 99999999999999999999"),
            "501 5.5.4 Syntax: BDAT size [LAST]"
        );
        assert_eq!(err("BDAT -1"), "501 5.5.4 Syntax: BDAT size [LAST]");
        assert_eq!(
            err("MAIL TO:<a@b.test>"),
            "501 5.5.4 Syntax: MAIL FROM:<address>"
        );
        assert_eq!(
            err("NOOP \u{1}"),
            "500 5.5.2 Syntax error: control character in command"
        );
        assert!(parse(b"NOOP \xff").is_err());
    }

    #[test]
    fn mail_paths_and_params() {
        let mail = |line| match ok(line) {
            Command::Mail { address, params } => (address, params),
            other => panic!("{other:?}"),
        };
        assert_eq!(mail("MAIL FROM:<>").0, "");
        assert_eq!(mail("MAIL FROM:<a@b.test>").0, "a@b.test");
        assert_eq!(mail("mail from: <a@b.test>").0, "a@b.test");
        assert_eq!(mail("MAIL FROM:<@relay.test:a@b.test>").0, "a@b.test");
        assert_eq!(mail("MAIL FROM:<\"a b>c\"@b.test>").0, "\"a b>c\"@b.test");
        assert_eq!(mail("MAIL FROM:<a@[192.0.2.1]>").0, "a@[192.0.2.1]");
        assert_eq!(
            mail("MAIL FROM:<ü@bücher.test> SMTPUTF8").0,
            "ü@bücher.test"
        );
        let (_, params) = mail("MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME SMTPUTF8 AUTH=<>");
        assert_eq!(
            params,
            MailParams {
                size: Some(1000),
                eight_bit_mime: true,
                smtputf8: true,
                ..MailParams::default()
            }
        );
        let (_, params) = mail("MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ314159+2Bx");
        assert_eq!(
            (params.ret, params.envid.as_deref()),
            (Some(Ret::Hdrs), Some("QQ314159+x"))
        );
        for (line, expected) in [
            (
                "MAIL FROM:<a@b.test> RET=ALL",
                "501 5.5.4 Bad RET parameter",
            ),
            (
                "MAIL FROM:<a@b.test> RET=FULL RET=HDRS",
                "501 5.5.4 Bad RET parameter",
            ),
            (
                "MAIL FROM:<a@b.test> ENVID=a+zz",
                "501 5.5.4 Bad ENVID parameter",
            ),
            (
                "MAIL FROM:<a@b.test> ENVID=",
                "501 5.5.4 Bad ENVID parameter",
            ),
        ] {
            assert_eq!(err(line), expected, "{line}");
        }
        assert!(!mail("MAIL FROM:<a@b.test> body=7bit").1.eight_bit_mime);
        for (line, expected) in [
            (
                "MAIL FROM:a@b.test",
                "501 5.1.7 Bad sender address syntax: the address must be in <>",
            ),
            (
                "MAIL FROM:<a@b.test",
                "501 5.1.7 Bad sender address syntax: no closing >",
            ),
            (
                "MAIL FROM:<a@b.test>x",
                "501 5.1.7 Bad sender address syntax: text after the closing >",
            ),
            (
                "MAIL FROM:<a b@c.test>",
                "501 5.1.7 Bad sender address syntax: bad local part",
            ),
            (
                "MAIL FROM:<a@b..test>",
                "501 5.1.7 Bad sender address syntax: bad domain",
            ),
            (
                "MAIL FROM:<a@>",
                "501 5.1.7 Bad sender address syntax: empty domain",
            ),
            (
                "MAIL FROM:<ab.test>",
                "501 5.1.7 Bad sender address syntax: no @domain",
            ),
            (
                "MAIL FROM:<a@b.test> SIZE=x",
                "501 5.5.4 Bad SIZE parameter",
            ),
            (
                "MAIL FROM:<a@b.test> SIZE=1 SIZE=2",
                "501 5.5.4 Bad SIZE parameter",
            ),
            (
                "MAIL FROM:<a@b.test> BODY=BINARYMIME",
                "555 5.5.4 BODY must be 7BIT or 8BITMIME",
            ),
            (
                "MAIL FROM:<a@b.test> SMTPUTF8=yes",
                "501 5.5.4 Bad SMTPUTF8 parameter",
            ),
            (
                "MAIL FROM:<a@b.test> MT-PRIORITY=3",
                "555 5.5.4 MAIL parameters not recognized or not implemented",
            ),
        ] {
            assert_eq!(err(line), expected, "{line}");
        }
        let long = format!("MAIL FROM:<{}@b.test>", "a".repeat(300));
        assert_eq!(
            err(&long),
            "501 5.1.7 Bad sender address syntax: address too long"
        );
    }

    #[test]
    fn rcpt_paths() {
        assert_eq!(
            ok("RCPT TO:<u@d.test>"),
            Command::Rcpt {
                address: "u@d.test",
                dsn: RcptDsn::default(),
            }
        );
        assert_eq!(
            ok("RCPT TO:<Postmaster>"),
            Command::Rcpt {
                address: "Postmaster",
                dsn: RcptDsn::default(),
            }
        );
        assert_eq!(
            ok("RCPT TO:<u@d.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;U+2Bx@d.test"),
            Command::Rcpt {
                address: "u@d.test",
                dsn: RcptDsn {
                    notify: Notify::parse("FAILURE,DELAY"),
                    orcpt: Some("rfc822;U+x@d.test".into()),
                },
            }
        );
        for (line, expected) in [
            (
                "RCPT TO:<u@d.test> NOTIFY=NEVER,FAILURE",
                "501 5.5.4 Bad NOTIFY parameter",
            ),
            (
                "RCPT TO:<u@d.test> ORCPT=u@d.test",
                "501 5.5.4 Bad ORCPT parameter",
            ),
            (
                "RCPT TO:<u@d.test> ORCPT=rfc822;",
                "501 5.5.4 Bad ORCPT parameter",
            ),
            (
                "RCPT TO:<u@d.test> NOTIFY=NEVER NOTIFY=NEVER",
                "501 5.5.4 Bad NOTIFY parameter",
            ),
        ] {
            assert_eq!(err(line), expected, "{line}");
        }
        assert_eq!(
            err("RCPT TO:<>"),
            "501 5.1.3 Bad recipient address syntax: empty address"
        );
        assert_eq!(
            err("RCPT TO:<u@d.test> FOO=BAR"),
            "555 5.5.4 RCPT parameters not recognized or not implemented"
        );
    }
}
