//! Postfix `smtp-sink` (Postfix 3.7, `/usr/sbin/smtp-sink`) as a fast, dumb SMTP/LMTP
//! receiver on 127.0.0.x, capturing each message to a file.
//!
//! # Command line
//!
//! `smtp-sink -c -d <dir>/dump/%Y%m%d%H%M%S. [-u nobody] [options] 127.0.0.x:<port> 256`
//!
//! * `-c` prints running counters (`sess=N quit=N mesg=N`, each record ended by `\r`)
//!   to stdout, which goes to a file: [`SmtpSink::counters`]. smtp-sink writes them
//!   unbuffered, after closing the message's dump file and before sending the
//!   `250` for the final dot.
//! * `-d template` writes one file per mail transaction, named by strftime(3) plus
//!   `.` and a random hex suffix. The file is created at the first RCPT, filled and
//!   closed when the final `.` arrives, and unlinked if the transaction is aborted
//!   (RSET, lost connection), so an existing file that smtp-sink no longer holds
//!   open (checked in `/proc/<pid>/fd`) is a complete message.
//! * `-u nobody` only when running as root: smtp-sink refuses to run as root without
//!   it ("fatal: -u option is required if running as root") and switches to that
//!   user after binding; the dump directory is then made world-writable.
//! * The backlog argument is 256; `-m` (concurrent sessions) stays at its default 256.
//!
//! # Dump file format
//!
//! Text lines ended by `\n` (smtp-sink turns every CRLF, and any bare LF, of the
//! message into `\n`, and removes dot-stuffing):
//!
//! ```text
//! X-Client-Addr: 127.0.0.1
//! X-Client-Proto: ESMTP            (SMTP, ESMTP or LMTP)
//! X-Helo-Args: client.example      (only if HELO/EHLO was sent)
//! X-Mail-Args: <from@x.test> SIZE=123 BODY=8BITMIME
//! X-Rcpt-Args: <to@y.test> NOTIFY=NEVER      (one per accepted RCPT, in order)
//! Received: from client.example ([127.0.0.1])
//! \tby smtp-sink (smtp-sink) with ESMTP id 59ae0de5;
//! \tMon, 23 Nov 2026 11:27:58 +0000 (UTC)
//! <the message as received, LF line ends>
//! <one empty line>
//! ```
//!
//! [`SinkMessage`] parses this; [`SmtpSink::message_bodies`] gives just the message.
//!
//! # What smtp-sink cannot do
//!
//! It never announces CHUNKING (no BDAT), SMTPUTF8, SIZE or STARTTLS, and it cannot
//! answer per recipient (`-f RCPT` rejects every RCPT): use the scripted receiver or
//! Postfix for those. Its delays are whole seconds. Its EHLO reply always ends with
//! an empty `250 ` line (a quirk clients must tolerate).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use super::port::{on_free_port, poll, wait_bound, Attempt};
use super::process::{is_root, ChildGuard};

/// Path of the Postfix smtp-sink binary.
pub const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// smtp-sink options. `Default` is smtp-sink's own default: ESMTP with PIPELINING,
/// 8BITMIME, AUTH PLAIN LOGIN, XCLIENT, XFORWARD, ENHANCEDSTATUSCODES and DSN; every
/// command accepted; messages dumped to files. Command names in the lists are
/// smtp-sink's: CONNECT, HELO, EHLO, LHLO, MAIL, RCPT, VRFY, DATA, `.`, RSET, NOOP,
/// QUIT (case-insensitive).
#[derive(Clone, Debug, Default)]
pub struct SinkOptions {
    /// `-h`: host name in the greeting, HELO and EHLO replies (default "smtp-sink").
    pub hostname: Option<String>,
    /// `-e`: do not announce ESMTP (the greeting lacks "ESMTP"; EHLO still works).
    pub no_esmtp: bool,
    /// `-p`: do not announce PIPELINING.
    pub no_pipelining: bool,
    /// `-8`: do not announce 8BITMIME.
    pub no_8bitmime: bool,
    /// `-E`: do not announce ENHANCEDSTATUSCODES.
    pub no_enhanced_status_codes: bool,
    /// `-N`: do not announce DSN.
    pub no_dsn: bool,
    /// `-a`: do not announce AUTH.
    pub no_auth: bool,
    /// `-C`: do not announce XCLIENT.
    pub no_xclient: bool,
    /// `-F`: do not announce XFORWARD.
    pub no_xforward: bool,
    /// `-P`: a greeting that looks like a Cisco PIX in the path (implies `-e`).
    pub pix_greeting: bool,
    /// `-L`: speak LMTP instead of SMTP (LHLO, one reply per recipient after DATA).
    pub lmtp: bool,
    /// `-f`: reject these commands with [`hard_reply`](Self::hard_reply) (5xx).
    /// Implies no PIPELINING.
    pub hard_reject: Vec<String>,
    /// `-r`: reject these commands with [`soft_reply`](Self::soft_reply) (4xx).
    /// Implies no PIPELINING.
    pub soft_reject: Vec<String>,
    /// `-B`: the hard reject reply (default "500 5.3.0 Error: command failed").
    pub hard_reply: Option<String>,
    /// `-b`: the soft reject reply (default "450 4.3.0 Error: command failed").
    pub soft_reply: Option<String>,
    /// `-q`: after receiving one of these commands, disconnect without replying.
    /// (`.` here drops the connection after the whole message, before the reply.)
    pub disconnect_on: Vec<String>,
    /// `-Q`: after receiving one of these commands, reply 421 and disconnect.
    pub reply_421_on: Vec<String>,
    /// `-A secs`: answer DATA with 354, wait, then send 550 and stop reading
    /// (abort before the client sends the final dot).
    pub abort_in_data_after: Option<u32>,
    /// `-w secs`: wait before answering DATA.
    pub data_delay: Option<u32>,
    /// `-W cmd:secs`: wait before answering `cmd`.
    pub command_delays: Vec<(String, u32)>,
    /// `-t secs`: command read / reply write timeout (smtp-sink default 100).
    pub timeout: Option<u32>,
    /// `-M count`: exit after receiving this many messages.
    pub exit_after_messages: Option<u32>,
    /// `-v`: log the SMTP conversations to stderr ([`SmtpSink::log`]).
    pub verbose: bool,
    /// Do not dump messages to files (no `-d`): only [`SmtpSink::counters`] work, at
    /// full speed, for throughput tests.
    pub count_only: bool,
}

impl SinkOptions {
    /// A plain MX: smtp-sink's defaults without AUTH, XCLIENT and XFORWARD (leaves
    /// PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES and DSN).
    pub fn plain() -> SinkOptions {
        SinkOptions {
            no_auth: true,
            no_xclient: true,
            no_xforward: true,
            ..SinkOptions::default()
        }
    }

    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let flags = [
            (self.no_esmtp, "-e"),
            (self.no_pipelining, "-p"),
            (self.no_8bitmime, "-8"),
            (self.no_enhanced_status_codes, "-E"),
            (self.no_dsn, "-N"),
            (self.no_auth, "-a"),
            (self.no_xclient, "-C"),
            (self.no_xforward, "-F"),
            (self.pix_greeting, "-P"),
            (self.lmtp, "-L"),
            (self.verbose, "-v"),
        ];
        a.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| f.to_string()),
        );
        let mut opt = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                a.push(flag.to_string());
                a.push(v);
            }
        };
        let list = |cmds: &[String]| (!cmds.is_empty()).then(|| cmds.join(","));
        opt("-h", self.hostname.clone());
        opt("-f", list(&self.hard_reject));
        opt("-r", list(&self.soft_reject));
        opt("-B", self.hard_reply.clone());
        opt("-b", self.soft_reply.clone());
        opt("-q", list(&self.disconnect_on));
        opt("-Q", list(&self.reply_421_on));
        opt("-A", self.abort_in_data_after.map(|s| s.to_string()));
        opt("-w", self.data_delay.map(|s| s.to_string()));
        opt("-t", self.timeout.map(|s| s.to_string()));
        opt("-M", self.exit_after_messages.map(|s| s.to_string()));
        for (cmd, secs) in &self.command_delays {
            opt("-W", Some(format!("{cmd}:{secs}")));
        }
        a
    }
}

/// smtp-sink's `-c` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Sessions ended.
    pub sessions: u64,
    /// QUIT commands received.
    pub quits: u64,
    /// Messages received (final dot seen, dump file closed).
    pub messages: u64,
}

/// One dump file, parsed (format in the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkMessage {
    /// `X-Client-Addr`: the client's IP address.
    pub client_addr: String,
    /// `X-Client-Proto`: SMTP, ESMTP or LMTP.
    pub proto: String,
    /// `X-Helo-Args`: the last HELO/EHLO argument, if any.
    pub helo: Option<String>,
    /// `X-Mail-Args`: the MAIL FROM arguments, e.g. `<a@x.test> SIZE=12 BODY=8BITMIME`.
    pub mail_args: String,
    /// `X-Rcpt-Args`: the arguments of each RCPT, in order.
    pub rcpt_args: Vec<String>,
    /// The message as received: dot-stuffing removed, every line ended by `\n`.
    pub body: Vec<u8>,
    /// The whole dump file.
    pub raw: Vec<u8>,
}

impl SinkMessage {
    /// Parses a dump file's bytes; `None` if the smtp-sink header block is malformed.
    pub fn parse(raw: &[u8]) -> Option<SinkMessage> {
        let mut msg = SinkMessage {
            client_addr: String::new(),
            proto: String::new(),
            helo: None,
            mail_args: String::new(),
            rcpt_args: Vec::new(),
            body: Vec::new(),
            raw: raw.to_vec(),
        };
        let mut pos = 0;
        let next_line = |pos: &mut usize| -> Option<String> {
            let rest = raw.get(*pos..)?;
            let end = rest.iter().position(|&b| b == b'\n')?;
            *pos += end + 1;
            Some(String::from_utf8_lossy(&rest[..end]).into_owned())
        };
        loop {
            let line = next_line(&mut pos)?;
            let (name, value) = line.split_once(": ")?;
            match name {
                "X-Client-Addr" => msg.client_addr = value.to_string(),
                "X-Client-Proto" => msg.proto = value.to_string(),
                "X-Helo-Args" => msg.helo = Some(value.to_string()),
                "X-Mail-Args" => msg.mail_args = value.to_string(),
                "X-Rcpt-Args" => msg.rcpt_args.push(value.to_string()),
                "Received" => break,
                _ => return None,
            }
        }
        // The Received header's two continuation lines ("\tby …;" and "\t<date>").
        for _ in 0..2 {
            if !next_line(&mut pos)?.starts_with('\t') {
                return None;
            }
        }
        let rest = &raw[pos..];
        // smtp-sink ends every dump with one empty line.
        msg.body = rest.strip_suffix(b"\n").unwrap_or(rest).to_vec();
        Some(msg)
    }

    /// The MAIL FROM address without angle brackets or parameters.
    pub fn mail_from(&self) -> &str {
        unbracket(&self.mail_args)
    }

    /// The RCPT TO addresses without angle brackets or parameters.
    pub fn rcpt_tos(&self) -> Vec<&str> {
        self.rcpt_args.iter().map(|a| unbracket(a)).collect()
    }

    /// [`body`](Self::body) with `\r\n` line ends, as the client sent it (before
    /// dot-stuffing), assuming the client sent only CRLF line ends.
    pub fn body_crlf(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + self.body.len() / 40);
        for &b in &self.body {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }
}

fn unbracket(args: &str) -> &str {
    let first = args.split_whitespace().next().unwrap_or("");
    first
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(first)
}

/// A running smtp-sink on 127.0.0.x; killed on Drop (its temp dir removed).
pub struct SmtpSink {
    addr: SocketAddrV4,
    dump_dir: PathBuf,
    // Field order: the process dies before its directory is removed.
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts smtp-sink on `ip` (127.0.0.0/8) at a free port and waits until it
    /// listens (up to 10 s). Panics with smtp-sink's stderr if it cannot start.
    pub fn start(ip: Ipv4Addr, opts: SinkOptions) -> SmtpSink {
        Self::try_start(ip, opts).unwrap_or_else(|e| panic!("smtp-sink: {e}"))
    }

    /// [`start`](Self::start), returning the error instead of panicking.
    pub fn try_start(ip: Ipv4Addr, opts: SinkOptions) -> Result<SmtpSink, String> {
        assert!(
            ip.is_loopback(),
            "test peers bind to 127.0.0.0/8 only, not {ip}"
        );
        let root = is_root();
        // As root smtp-sink runs as nobody, which must reach the dump directory:
        // /tmp rather than $TMPDIR, which could sit under a private home.
        let base = if root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("volley-smtp-sink-")
            .tempdir_in(&base)
            .map_err(|e| format!("temp dir in {}: {e}", base.display()))?;
        let dump_dir = dir.path().join("dump");
        std::fs::create_dir(&dump_dir).map_err(|e| format!("mkdir {}: {e}", dump_dir.display()))?;
        // Canonical, to compare with the links in /proc/<pid>/fd.
        let dump_dir =
            std::fs::canonicalize(&dump_dir).map_err(|e| format!("canonicalize: {e}"))?;
        if root {
            let world =
                |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
            world(dir.path(), 0o755).map_err(|e| format!("chmod: {e}"))?;
            world(&dump_dir, 0o777).map_err(|e| format!("chmod: {e}"))?;
        }
        let (addr, child) = on_free_port(ip, |addr| {
            let mut cmd = Command::new(SMTP_SINK);
            cmd.arg("-c");
            if !opts.count_only {
                cmd.arg("-d")
                    .arg(format!("{}/%Y%m%d%H%M%S.", dump_dir.display()));
            }
            if root {
                cmd.args(["-u", "nobody"]);
            }
            cmd.args(opts.args()).arg(format!("inet:{addr}")).arg("256");
            cmd.stdin(Stdio::null());
            let child = match ChildGuard::spawn("smtp-sink", cmd, dir.path()) {
                Ok(child) => child,
                Err(e) => return Attempt::Failed(e),
            };
            match wait_bound(addr, Duration::from_secs(10), || child.check_alive()) {
                Ok(()) => Attempt::Started((addr, child)),
                Err(e) if child.stderr_text().contains("in use") => Attempt::PortTaken(e),
                Err(e) => Attempt::Failed(e),
            }
        })?;
        Ok(SmtpSink {
            addr,
            dump_dir,
            child,
            _dir: dir,
        })
    }

    /// The address smtp-sink listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(self.addr)
    }

    /// The directory the dump files are written to.
    pub fn dump_dir(&self) -> &Path {
        &self.dump_dir
    }

    /// smtp-sink's stderr (fatal errors; the conversations with `verbose`).
    pub fn log(&self) -> String {
        self.child.stderr_text()
    }

    /// The latest `-c` counters (zero before the first session ends).
    pub fn counters(&self) -> SinkCounters {
        let out = self.child.stdout_text();
        let Some(last) = out.split('\r').rev().find(|r| !r.trim().is_empty()) else {
            return SinkCounters::default();
        };
        let mut c = SinkCounters::default();
        for field in last.split_whitespace() {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            let v = v.parse().unwrap_or(0);
            match k {
                "sess" => c.sessions = v,
                "quit" => c.quits = v,
                "mesg" => c.messages = v,
                _ => {}
            }
        }
        c
    }

    /// The raw bytes of every complete dump file (format in the [module docs](self)).
    /// Transactions still in progress are left out.
    ///
    /// Order: by file modification time (when the final dot arrived), then by file
    /// name. File times have the kernel's coarse clock resolution (a few ms), so
    /// messages completed within the same tick, e.g. back to back in one session,
    /// come in arbitrary order: find a message by its content, not its position
    /// (the scripted receiver records exact arrival order).
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(&self.dump_dir) else {
            return Vec::new();
        };
        let listed: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        // Read the open files after listing: a listed file not open now is complete.
        let open = self.open_files();
        let mut files: Vec<(SystemTime, PathBuf, Vec<u8>)> = listed
            .into_iter()
            .filter(|p| !open.contains(p))
            .filter_map(|p| {
                let modified = std::fs::metadata(&p).ok()?.modified().ok()?;
                let bytes = std::fs::read(&p).ok()?;
                // Empty: a transaction dropped before its data (a client killed
                // mid-session), closed and about to be removed by smtp-sink.
                if bytes.is_empty() {
                    return None;
                }
                Some((modified, p, bytes))
            })
            .collect();
        files.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        files.into_iter().map(|(_, _, bytes)| bytes).collect()
    }

    /// [`messages`](Self::messages), parsed. Panics on a malformed dump file.
    pub fn parsed_messages(&self) -> Vec<SinkMessage> {
        self.messages()
            .iter()
            .map(|raw| {
                SinkMessage::parse(raw).unwrap_or_else(|| {
                    panic!(
                        "malformed smtp-sink dump:\n{}",
                        String::from_utf8_lossy(raw)
                    )
                })
            })
            .collect()
    }

    /// Just the messages as received (the smtp-sink header block and the trailing
    /// empty line stripped; `\n` line ends, dot-stuffing removed).
    pub fn message_bodies(&self) -> Vec<Vec<u8>> {
        self.parsed_messages().into_iter().map(|m| m.body).collect()
    }

    /// Polls until at least `n` complete messages were dumped, or `deadline` passes.
    pub fn wait_for_messages(
        &self,
        n: usize,
        deadline: Duration,
    ) -> Result<Vec<SinkMessage>, String> {
        self.wait_for_dumps(|msgs| msgs.len() >= n, &format!("{n} messages"), deadline)
    }

    /// Polls until the complete messages dumped name at least `n` recipients in
    /// all (a relayed message's recipients at one site may share a
    /// transaction), or `deadline` passes.
    #[allow(dead_code)] // used by some of the test binaries sharing this module
    pub fn wait_for_recipients(
        &self,
        n: usize,
        deadline: Duration,
    ) -> Result<Vec<SinkMessage>, String> {
        let rcpts = |msgs: &[SinkMessage]| msgs.iter().map(|m| m.rcpt_tos().len()).sum::<usize>();
        self.wait_for_dumps(
            |msgs| rcpts(msgs) >= n,
            &format!("{n} recipients"),
            deadline,
        )
    }

    /// Polls until the messages dumped satisfy `done` (`wanted` says what for the
    /// error), or `deadline` passes.
    fn wait_for_dumps(
        &self,
        done: impl Fn(&[SinkMessage]) -> bool,
        wanted: &str,
        deadline: Duration,
    ) -> Result<Vec<SinkMessage>, String> {
        poll(deadline, || {
            let msgs = self.parsed_messages();
            done(&msgs).then_some(msgs)
        })
        .ok_or_else(|| {
            format!(
                "smtp-sink on {}: not {wanted} after {deadline:?} ({} messages, {:?}); stderr:\n{}",
                self.addr,
                self.messages().len(),
                self.counters(),
                self.log()
            )
        })
    }

    /// Polls until the `-c` message counter reaches `n` (works with
    /// [`SinkOptions::count_only`]), or `deadline` passes.
    pub fn wait_for_count(&self, n: u64, deadline: Duration) -> Result<SinkCounters, String> {
        self.wait_for_counters(|c| c.messages >= n, deadline)
    }

    /// Polls until the `-c` counters satisfy `pred` (e.g. `|c| c.sessions >= 2`), or
    /// `deadline` passes. smtp-sink updates them when a session ends, on QUIT, and
    /// on each final dot: the counters after a QUIT may trail the `221` reply.
    pub fn wait_for_counters(
        &self,
        mut pred: impl FnMut(&SinkCounters) -> bool,
        deadline: Duration,
    ) -> Result<SinkCounters, String> {
        poll(deadline, || {
            let c = self.counters();
            pred(&c).then_some(c)
        })
        .ok_or_else(|| {
            format!(
                "smtp-sink on {}: counters still {:?} after {deadline:?}; stderr:\n{}",
                self.addr,
                self.counters(),
                self.log()
            )
        })
    }

    /// `Some(status)` if smtp-sink has exited (e.g. after `exit_after_messages`).
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.exited()
    }

    /// Files smtp-sink holds open (empty once it exited).
    fn open_files(&self) -> HashSet<PathBuf> {
        let fd_dir = format!("/proc/{}/fd", self.child.id());
        let Ok(fds) = std::fs::read_dir(fd_dir) else {
            return HashSet::new();
        };
        fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .collect()
    }
}
