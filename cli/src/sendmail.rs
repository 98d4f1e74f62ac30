//! `volley sendmail`, also what the binary does when called as `sendmail` (a
//! symlink `/usr/sbin/sendmail -> volley`): queue the message on standard input
//! the way programs expect of `/usr/sbin/sendmail`.
//!
//! The message is read (to its end, or to a lone `.` line unless `-i`), its
//! lines made CRLF, its recipients taken from the arguments and, with `-t`, from
//! To/Cc/Bcc; Bcc fields are removed and missing From, Date and Message-ID
//! fields added. The envelope sender is `-f`, else the From field's address,
//! else `LOGIN@[server] hostname`. It is then submitted to the local daemon's
//! submission listener if one is configured on loopback and answers (plain
//! SMTP, trusted by `[relay] networks`), else stored straight into the spool
//! when no daemon holds it, for the next `volley run`, else into its drop
//! directory (`volley_engine::maildrop`) for the daemon to pick up. Exit status per
//! sysexits.h ([`Exit`]).
//!
//! Layout: `sendmail/options.rs` (the command line), `sendmail/message.rs` (the
//! message's lines and fields), `sendmail/addresses.rs` (address lists),
//! `sendmail/submit.rs` (listener or spool).

mod addresses;
mod message;
mod options;
mod submit;

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use clap::Args;
use volley_conf::Config;
use volley_engine::deposit::Dsn;
use volley_engine::host::unix_now;
use volley_smtp::dsn::RcptDsn;

use self::addresses::{check, parse_list};
use self::message::{normalize_input, Field, Message};
use self::options::{Options, USAGE};
use self::submit::{into_spool, local_listener, via_listener, Submitted};

/// Arguments of `volley sendmail`: sendmail's own, parsed by
/// [`options::parse`] (clap would refuse `-oi`, `-odi`, `-fsender`...).
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct SendmailArgs {
    /// sendmail options and recipients; `volley sendmail --help` lists them.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

/// Exit statuses of sysexits.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// EX_USAGE: bad command line.
    Usage = 64,
    /// EX_DATAERR: bad message or address, no recipients.
    DataErr = 65,
    /// EX_UNAVAILABLE: the server refused the message.
    Unavailable = 69,
    /// EX_CANTCREAT: the spool cannot be written.
    CantCreat = 73,
    /// EX_TEMPFAIL: try again later.
    TempFail = 75,
    /// EX_CONFIG: the configuration is bad.
    Config = 78,
}

/// Why the message was not queued: the exit status and one line for stderr.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub exit: Exit,
    /// What happened.
    pub message: String,
}

impl Failure {
    fn new(exit: Exit, message: String) -> Failure {
        Failure { exit, message }
    }
}

/// Runs sendmail with `args` (after the program or subcommand name); the
/// configuration is sendmail's `-C`, else `global_config` (volley's `-C`),
/// else the usual lookup.
pub fn main(args: &[OsString], global_config: Option<&Path>) -> ExitCode {
    let mut stdin = std::io::stdin().lock();
    match run(args, global_config, &mut stdin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("sendmail: {}", failure.message);
            ExitCode::from(failure.exit as u8)
        }
    }
}

fn run(
    args: &[OsString],
    global_config: Option<&Path>,
    input: &mut dyn Read,
) -> Result<(), Failure> {
    let opts = options::parse(args)
        .map_err(|e| Failure::new(Exit::Usage, format!("{e} (see `volley sendmail --help`)")))?;
    if opts.help {
        print!("{USAGE}");
        return Ok(());
    }
    if opts.no_op {
        return Ok(());
    }
    let config = Config::discover(opts.config.as_deref().or(global_config))
        .map_err(|e| Failure::new(Exit::Config, e.to_string()))?;
    let hostname = if config.server.hostname.is_empty() {
        system_host_name()
    } else {
        config.server.hostname.clone()
    };
    let limit = config.server.max_message_size;
    let mut raw = Vec::new();
    input
        .take(limit.saturating_add(1))
        .read_to_end(&mut raw)
        .map_err(|e| Failure::new(Exit::DataErr, format!("cannot read the message: {e}")))?;
    let prepared = prepare(&opts, &raw, &hostname, &login_name(), unix_now())?;
    if prepared.message.len() as u64 > limit {
        return Err(Failure::new(
            Exit::DataErr,
            format!("the message is larger than [server] max_message_size ({limit} bytes)"),
        ));
    }
    let dsn = Dsn {
        ret: opts.ret,
        envid: opts.envid.clone(),
        rcpts: vec![
            RcptDsn {
                notify: opts.notify,
                orcpt: None,
            };
            prepared.recipients.len()
        ],
    };
    let mut why_not_listener = None;
    if let Some(addr) = local_listener(&config) {
        match via_listener(
            addr,
            &prepared.sender,
            &prepared.recipients,
            &prepared.message,
            &dsn,
        )? {
            Submitted::Queued(reply) => {
                tracing::info!(listener = %addr, %reply, "queued");
                return Ok(());
            }
            Submitted::NotThere(why) => why_not_listener = Some(why),
        }
    }
    let mut message = received(&hostname, unix_now());
    message.extend_from_slice(&prepared.message);
    into_spool(
        &config,
        &prepared.sender,
        &prepared.recipients,
        &message,
        &dsn,
    )
    .map(|id| tracing::info!(spool = %config.spool.dir.display(), queue_id = %id, "queued"))
    .map_err(|mut f| {
        if let Some(why) = why_not_listener {
            f.message.push_str(&format!(" (listener: {why})"));
        }
        f
    })
}

/// A message ready to submit.
#[derive(Debug, PartialEq, Eq)]
struct Prepared {
    /// The envelope sender, empty for `<>`.
    sender: String,
    /// The envelope recipients, each once.
    recipients: Vec<String>,
    /// The message, CRLF lines.
    message: Vec<u8>,
}

/// Everything between the raw input and the submission; no I/O.
fn prepare(
    opts: &Options,
    raw: &[u8],
    hostname: &str,
    login: &str,
    now: u64,
) -> Result<Prepared, Failure> {
    // As the listener refuses it (a next hop that drops NULs could find a
    // second message behind one).
    if raw.contains(&0) {
        return Err(Failure::new(
            Exit::DataErr,
            "the message holds a NUL byte: refused".to_owned(),
        ));
    }
    let text = normalize_input(raw, opts.ignore_dots);
    let mut message = Message::parse(&text);
    let qualify = |address: String| {
        if address.contains('@') {
            address
        } else {
            format!("{address}@{hostname}")
        }
    };
    let mut candidates: Vec<String> = opts.recipients.iter().flat_map(|a| parse_list(a)).collect();
    if opts.extract {
        let resent = ["Resent-To", "Resent-Cc", "Resent-Bcc"]
            .iter()
            .any(|n| message.has(n));
        let names = if resent {
            ["Resent-To", "Resent-Cc", "Resent-Bcc"]
        } else {
            ["To", "Cc", "Bcc"]
        };
        for name in names {
            for value in message.values(name) {
                candidates.extend(parse_list(&value));
            }
        }
    }
    message.remove(&["Bcc", "Resent-Bcc"]);
    let mut recipients: Vec<String> = Vec::new();
    for address in candidates.into_iter().map(qualify) {
        check(&address).map_err(|e| Failure::new(Exit::DataErr, e))?;
        if !recipients.iter().any(|r| same_address(r, &address)) {
            recipients.push(address);
        }
    }
    if recipients.is_empty() {
        let hint = if opts.extract {
            "no recipients in the arguments or the To, Cc and Bcc fields"
        } else {
            "no recipients (give them as arguments, or use -t)"
        };
        return Err(Failure::new(Exit::DataErr, hint.to_owned()));
    }
    let default_sender = || format!("{login}@{hostname}");
    let from_field = message
        .values("From")
        .first()
        .and_then(|v| parse_list(v).into_iter().next())
        .filter(|a| check(a).is_ok());
    let sender = match &opts.sender {
        Some(given) => {
            let given = given.trim();
            let bare = given
                .strip_prefix('<')
                .and_then(|g| g.strip_suffix('>'))
                .unwrap_or(given)
                .trim();
            if bare.is_empty() {
                String::new()
            } else {
                let sender = qualify(bare.to_owned());
                check(&sender).map_err(|e| Failure::new(Exit::DataErr, format!("-f: {e}")))?;
                sender
            }
        }
        None => from_field.clone().unwrap_or_else(default_sender),
    };
    if !message.has("From") {
        let address = if sender.is_empty() {
            default_sender()
        } else {
            sender.clone()
        };
        let value = match &opts.full_name {
            Some(name) if !name.trim().is_empty() => {
                format!("{} <{address}>", display_name(name.trim()))
            }
            _ => address,
        };
        message.fields.push(Field::new("From", &value));
    }
    if !message.has("Date") {
        let mut date = BytesMut::new();
        volley_smtp::date::write_date(now, &mut date);
        message
            .fields
            .push(Field::new("Date", &String::from_utf8_lossy(&date)));
    }
    if !message.has("Message-ID") {
        message.fields.push(Field::new(
            "Message-ID",
            &format!("<{now:x}.{:016x}@{hostname}>", random_u64()),
        ));
    }
    Ok(Prepared {
        sender,
        recipients,
        message: message.to_bytes(),
    })
}

/// Equal addresses: same local part, same domain in any case.
fn same_address(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
        _ => a == b,
    }
}

/// A display name as a phrase: as is when it is atoms and spaces, else quoted.
fn display_name(name: &str) -> String {
    let atext = |c: char| c.is_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c);
    if name.chars().all(atext) {
        return name.to_owned();
    }
    let mut out = String::from("\"");
    for c in name.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The trace field of a message put straight into the spool.
fn received(hostname: &str, now: u64) -> Vec<u8> {
    let mut date = BytesMut::new();
    volley_smtp::date::write_date(now, &mut date);
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into());
    format!(
        "Received: by {hostname} (volley sendmail, uid {uid});\r\n\t{}\r\n",
        String::from_utf8_lossy(&date)
    )
    .into_bytes()
}

fn system_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The user's login name: `$LOGNAME`, `$USER`, else the passwd entry of the
/// real uid, else `nobody`.
fn login_name() -> String {
    for var in ["LOGNAME", "USER"] {
        if let Ok(name) = std::env::var(var) {
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != '@') {
                return name;
            }
        }
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        });
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    uid.and_then(|uid| {
        passwd.lines().find_map(|line| {
            let mut parts = line.split(':');
            let name = parts.next()?;
            (parts.nth(1)? == uid).then(|| name.to_owned())
        })
    })
    .unwrap_or_else(|| "nobody".to_owned())
}

/// 64 random bits for a Message-ID (`/dev/urandom`; the time and pid if that
/// cannot be read).
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    match read {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 40)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Options {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        options::parse(&args).unwrap()
    }

    fn prep(args: &[&str], input: &str) -> Result<Prepared, Failure> {
        prepare(&opts(args), input.as_bytes(), "host.test", "ann", 0)
    }

    fn text(p: &Prepared) -> String {
        String::from_utf8(p.message.clone()).unwrap()
    }

    #[test]
    fn dash_t_takes_to_cc_bcc_and_removes_bcc() {
        let p = prep(
            &["-t", "extra@z.test"],
            "From: App <app@acme.test>\nTo: Ann <a@x.test>, b@y.test\nCc: c@y.test\nBcc: hidden@w.test,\n  b@Y.TEST\nSubject: hi\nDate: x\nMessage-ID: <1@acme.test>\n\nbody {{ x }}\n.\nnot read\n",
        )
        .unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(p.sender, "app@acme.test");
        assert_eq!(
            p.recipients,
            [
                "extra@z.test",
                "a@x.test",
                "b@y.test",
                "c@y.test",
                "hidden@w.test"
            ]
        );
        assert_eq!(
            text(&p),
            "From: App <app@acme.test>\r\nTo: Ann <a@x.test>, b@y.test\r\nCc: c@y.test\r\nSubject: hi\r\nDate: x\r\nMessage-ID: <1@acme.test>\r\n\r\nbody {{ x }}\r\n"
        );
    }

    #[test]
    fn resent_fields_win_with_dash_t() {
        let p = prep(
            &["-t"],
            "To: old@x.test\nResent-To: new@x.test\nResent-Bcc: hid@x.test\n\nb\n",
        )
        .unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(p.recipients, ["new@x.test", "hid@x.test"]);
        assert!(!text(&p).contains("hid@"));
    }

    #[test]
    fn missing_fields_are_added_and_the_sender_defaults() {
        let p = prep(&["-F", "Ann Smith", "root"], "Subject: cron\n\noutput\n")
            .unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(p.sender, "ann@host.test");
        assert_eq!(p.recipients, ["root@host.test"]);
        let t = text(&p);
        assert!(
            t.starts_with(
                "Subject: cron\r\nFrom: Ann Smith <ann@host.test>\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-ID: <0."
            ),
            "{t}"
        );
        assert!(t.ends_with("@host.test>\r\n\r\noutput\r\n"), "{t}");
        // -f wins; <> is the null sender (the From field then names the user).
        let p = prep(&["-f", "<>", "-F", "Dr. \"X\"", "a@x.test"], "\n")
            .unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(p.sender, "");
        assert!(text(&p).starts_with("From: \"Dr. \\\"X\\\"\" <ann@host.test>\r\n"));
        let p = prep(
            &["-fbounce@acme.test", "a@x.test"],
            "From: app@acme.test\n\n",
        )
        .unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(p.sender, "bounce@acme.test");
    }

    #[test]
    fn data_errors() {
        for (args, input, want) in [
            (
                &["-t"][..],
                "Subject: x\n\n",
                "no recipients in the arguments",
            ),
            (&[], "To: a@x.test\n\n", "no recipients (give them"),
            (&["-t"], "To: undisclosed-recipients:;\n\n", "no recipients"),
            (&["a@x_y.test"], "\n", "bad address \"a@x_y.test\""),
            (&["-t"], "To: Ann Smith a@x.test\n\n", "bad address"),
            (&["-f", "a b@x.test", "c@x.test"], "\n", "-f: bad address"),
            (
                &["a@x.test"],
                "Subject: x\n\nfirst\n\0.\nsecond\n",
                "NUL byte",
            ),
        ] {
            let err = prep(args, input).unwrap_err();
            assert_eq!(err.exit, Exit::DataErr, "{args:?}");
            assert!(err.message.contains(want), "{args:?}: {}", err.message);
        }
    }

    #[test]
    fn usage_and_config_errors_have_their_exit_status() {
        let run_with = |args: &[&str]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            run(&args, None, &mut &b""[..]).unwrap_err()
        };
        assert_eq!(run_with(&["-k"]).exit, Exit::Usage);
        let err = run_with(&["-C", "/nonexistent/volley.toml", "a@x.test"]);
        assert_eq!(err.exit, Exit::Config, "{}", err.message);
    }
}
