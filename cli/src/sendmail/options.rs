//! The command line of `sendmail`, as programs call it: getopt-style letters
//! (`-ti`, `-f sender`, `-fsender`), most of them accepted and ignored.

use std::ffi::OsString;
use std::path::PathBuf;

use volley_smtp::dsn::{Notify, Ret};

/// What the command line asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `-t`: recipients from the To, Cc and Bcc fields (added to the command
    /// line's).
    pub extract: bool,
    /// `-i` or `-oi`: a line holding only `.` does not end the message.
    pub ignore_dots: bool,
    /// `-f ADDR` (or `-r ADDR`): the envelope sender.
    pub sender: Option<String>,
    /// `-F NAME`: the full name for a From field added by sendmail.
    pub full_name: Option<String>,
    /// `-C FILE`: the configuration file.
    pub config: Option<PathBuf>,
    /// The recipient arguments, as given (each may be a comma-separated list).
    pub recipients: Vec<String>,
    /// `--help`.
    pub help: bool,
    /// `-bi` (rebuild the aliases database): nothing to do, exit at once.
    pub no_op: bool,
    /// `-N never` or `-N failure,delay,success`: which outcomes the sender is
    /// told of (RFC 3461 NOTIFY), for every recipient.
    pub notify: Option<Notify>,
    /// `-R full` or `-R hdrs`: what a failure report returns (RET).
    pub ret: Option<Ret>,
    /// `-V envid`: the envelope id reports carry (ENVID).
    pub envid: Option<String>,
}

/// Letters taking a value (the rest of the argument, else the next argument), as
/// in Postfix's sendmail.
const WITH_VALUE: &str = "ABCFLNORVXbefhopqr";
/// Letters taking none.
const FLAGS: &str = "GIUcimntvx";

/// Parses the arguments after the program (or subcommand) name. `Err` is the
/// usage error to print (exit 64).
pub fn parse(args: &[OsString]) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut args = args.iter();
    let text = |arg: &OsString| {
        arg.to_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("argument {arg:?} is not UTF-8"))
    };
    while let Some(arg) = args.next() {
        let arg = text(arg)?;
        if arg == "--" {
            for rest in args.by_ref() {
                opts.recipients.push(text(rest)?);
            }
            break;
        }
        if arg == "--help" || arg == "-help" {
            opts.help = true;
            continue;
        }
        let Some(letters) = arg.strip_prefix('-').filter(|l| !l.is_empty()) else {
            opts.recipients.push(arg);
            continue;
        };
        if letters.starts_with('-') {
            return Err(format!("unknown option {arg}"));
        }
        for (i, letter) in letters.char_indices() {
            if FLAGS.contains(letter) {
                if letter == 't' {
                    opts.extract = true;
                } else if letter == 'i' {
                    opts.ignore_dots = true;
                }
                // G, I, U, c, m, n, v, x: no meaning here.
                continue;
            }
            if !WITH_VALUE.contains(letter) {
                return Err(format!("unknown option -{letter}"));
            }
            let attached = &letters[i + letter.len_utf8()..];
            let value = if attached.is_empty() {
                match args.next() {
                    Some(next) => text(next)?,
                    None => return Err(format!("option -{letter} needs a value")),
                }
            } else {
                attached.to_owned()
            };
            apply(&mut opts, letter, value)?;
            break;
        }
    }
    Ok(opts)
}

/// Applies one option that takes a value.
fn apply(opts: &mut Options, letter: char, value: String) -> Result<(), String> {
    match letter {
        'f' | 'r' => opts.sender = Some(value),
        'F' => opts.full_name = Some(value),
        'C' => opts.config = Some(PathBuf::from(value)),
        'o' if value == "i" => opts.ignore_dots = true,
        'b' => match value.as_str() {
            "m" => {}
            "i" => opts.no_op = true,
            other => {
                return Err(format!(
                    "-b{other} is not supported (only -bm, deliver mail, and -bi, a no-op)"
                ))
            }
        },
        'q' => return Err("-q: volley runs its queue itself (`volley run`)".into()),
        'N' => {
            let notify = Notify::parse(&value).ok_or_else(|| {
                format!("-N {value}: expected never, or a comma-separated list of failure, delay and success")
            })?;
            opts.notify = Some(notify);
        }
        'R' => {
            let ret =
                Ret::parse(&value).ok_or_else(|| format!("-R {value}: expected full or hdrs"))?;
            opts.ret = Some(ret);
        }
        'V' => {
            if value.is_empty()
                || value.len() > 100
                || !value.bytes().all(|b| (b' '..=b'~').contains(&b))
            {
                return Err(
                    "-V: the envelope id must be 1 to 100 printable ASCII characters".into(),
                );
            }
            opts.envid = Some(value);
        }
        // -o<anything else> (-odi, -oem, -oQ/dir...), -O option=value, -B type,
        // -X log, -L label, -A, -e, -h, -p: accepted and ignored, as callers pass
        // them out of habit.
        _ => {}
    }
    Ok(())
}

/// The `--help` text.
pub const USAGE: &str = "\
usage: sendmail [-t] [-i | -oi] [-f SENDER] [-F FULL_NAME] [-C FILE]
                [-N never|failure,delay,success] [-R full|hdrs] [-V ENVID] [RECIPIENT...]
       volley sendmail [same options]

Queues the message read from standard input, like /usr/sbin/sendmail: through the
local volley daemon's submission listener when one is configured and running,
else straight into the spool (delivered by the next `volley run`).

  -t         recipients also from the To, Cc and Bcc fields (Resent-To, Resent-Cc
             and Resent-Bcc instead, when present); Bcc fields are always removed
  -i, -oi    a line holding only \".\" does not end the message
  -f SENDER  envelope sender (\"<>\" for none); default: the From field's address,
             else LOGIN@[server] hostname
  -F NAME    full name for the From field added when the message has none
  -C FILE    configuration file (else $VOLLEY_CONFIG, else /etc/volley/volley.toml)
  -bm        deliver mail (the default); -bi does nothing
  -N DSN     which outcomes to be told of (RFC 3461 NOTIFY): never, or any of
             failure, delay, success (default: failures, and delays when
             [bounce] delay_warning is set)
  -R RET     what a failure report returns: full (default) or hdrs
  -V ENVID   envelope id carried by the reports

Accepted and ignored: -o<option> (-odi, -oem, -oQ...), -O, -B, -X, -L,
-A, -e, -h, -p, -G, -I, -U, -c, -m, -n, -v, -x.
Missing Date, Message-ID and From fields are added; bare LF line ends become CRLF;
lines over 998 bytes are broken.

Exit status (sysexits.h): 0 queued, 64 usage, 65 bad message or address (or no
recipients), 69 refused by the server, 73 cannot write the spool, 75 try again
later (daemon unreachable and spool busy, or a 4xx), 78 configuration error.

Example: printf 'Subject: hi\\n\\nhello\\n' | sendmail -i ann@example.com
";

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&args)
    }

    #[test]
    fn common_command_lines() {
        let o = p(&["-t", "-i"]).unwrap();
        assert!(o.extract && o.ignore_dots && o.recipients.is_empty());
        let o = p(&["-oi", "-f", "app@x.test", "a@y.test", "b@y.test"]).unwrap();
        assert!(!o.extract && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("app@x.test"));
        assert_eq!(o.recipients, ["a@y.test", "b@y.test"]);
        let o = p(&[
            "-ti",
            "-fapp@x.test",
            "-FApp Name",
            "-odi",
            "-oem",
            "-oQ/var/q",
        ])
        .unwrap();
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("app@x.test"));
        assert_eq!(o.full_name.as_deref(), Some("App Name"));
        let o = p(&[
            "-C",
            "/etc/v.toml",
            "-v",
            "-Am",
            "-N",
            "never",
            "-bm",
            "--",
            "-x@y",
        ])
        .unwrap();
        assert_eq!(o.config, Some(PathBuf::from("/etc/v.toml")));
        assert_eq!(o.recipients, ["-x@y"]);
        let o = p(&["-r", "<>", "a@b.test", "-oi"]).unwrap();
        assert_eq!(o.sender.as_deref(), Some("<>"));
        assert!(o.ignore_dots);
        assert!(p(&["-bi"]).unwrap().no_op);
        assert!(p(&["--help"]).unwrap().help);
    }

    #[test]
    fn dsn_options() {
        let opts = p(&[
            "-N",
            "failure,delay",
            "-Rhdrs",
            "-V",
            "QQ314159",
            "a@x.test",
        ])
        .unwrap();
        assert_eq!(opts.notify, Notify::parse("FAILURE,DELAY"));
        assert_eq!(opts.ret, Some(Ret::Hdrs));
        assert_eq!(opts.envid.as_deref(), Some("QQ314159"));
        assert_eq!(p(&["-Nnever"]).unwrap().notify, Some(Notify::default()));
    }

    #[test]
    fn usage_errors() {
        for (args, want) in [
            (&["-k"][..], "unknown option -k"),
            (&["-tk"], "unknown option -k"),
            (&["-f"], "option -f needs a value"),
            (&["--sender=x"], "unknown option --sender=x"),
            (&["-bp"], "-bp is not supported"),
            (&["-bs"], "-bs is not supported"),
            (&["-q"], "option -q needs a value"),
            (&["-q1h"], "volley runs its queue itself"),
            (&["-N", "sometimes"], "-N sometimes: expected never"),
            (&["-Rall"], "-R all: expected full or hdrs"),
            (&["-V", "a\tb"], "-V: the envelope id must be"),
        ] {
            let err = p(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
