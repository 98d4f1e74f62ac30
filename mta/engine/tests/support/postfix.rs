//! A private, real Postfix 3.7 instance as an SMTP receiver on 127.0.0.x: the peer
//! with CHUNKING (BDAT), SMTPUTF8, DSN, a real STARTTLS and Postfix's own replies.
//!
//! Each instance lives in its own temp dir under /tmp (config, queue, data, mail,
//! log) and is started with `postfix -c <dir>/etc start-fg`; its only listener is
//! the smtpd service `127.0.0.x:<port>` in its master.cf. Every recipient is
//! accepted and delivered by virtual(8), one copy per recipient, into the single
//! Maildir `<dir>/mail/inbox/` as uid/gid 65534 (nobody), unless
//! [`PostfixOptions::recipient_access`] says otherwise. (virtual(8) refuses regexp
//! substitutions in mailbox paths, so the recipient is read back from the
//! `Delivered-To:` header Postfix adds.)
//!
//! Postfix must start as root: [`Postfix::available`] tells whether it can run
//! here, so a test can skip instead of failing. Its log is `<dir>/maillog`
//! ([`Postfix::log`]): look there when something fails.
//!
//! Shutdown (Drop): SIGTERM to the master (which stops its children), up to 5 s of
//! waiting, then SIGKILL to the master's process group, like `postfix stop`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::port::{on_free_port, poll, wait_bound, Attempt};
use super::process::{is_root, run_bounded, ChildGuard};

/// The `postfix` command.
pub const POSTFIX: &str = "/usr/sbin/postfix";

/// Options for a Postfix receiver. `Default`: accept everything, STARTTLS off,
/// every EHLO keyword on (PIPELINING, SIZE, VRFY, ETRN, ENHANCEDSTATUSCODES,
/// 8BITMIME, DSN, SMTPUTF8, CHUNKING).
#[derive(Clone, Debug, Default)]
pub struct PostfixOptions {
    /// `myhostname` (greeting, EHLO reply): default "mx.postfix.test".
    pub hostname: Option<String>,
    /// `(cert.pem, key.pem)`: offer STARTTLS (`smtpd_tls_security_level = may`),
    /// e.g. from [`super::scripted::self_signed_cert`].
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require STARTTLS before MAIL (`smtpd_tls_security_level = encrypt`).
    pub require_tls: bool,
    /// `smtpd_discard_ehlo_keywords`, e.g. `["chunking", "pipelining"]` (Postfix
    /// then also refuses the hidden feature, e.g. BDAT, with a 502).
    pub discard_ehlo_keywords: Vec<String>,
    /// `message_size_limit` in bytes (Postfix default 10240000).
    pub message_size_limit: Option<u64>,
    /// Recipient address (lowercase) → access(5) action, e.g.
    /// `("nobody@x.test", "550 5.1.1 User unknown")`, `("later@x.test", "450 4.2.0
    /// Try later")`, or "DISCARD" / "HOLD" (accepted but not delivered).
    pub recipient_access: Vec<(String, String)>,
    /// Extra `main.cf` lines, appended last (they override the above).
    pub main_cf: Vec<String>,
}

/// One delivered message (one per recipient: Postfix delivers a copy to each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The recipient it was delivered to (its `Delivered-To:` header, lowercase).
    pub recipient: String,
    /// The Maildir file: Postfix's `Return-Path`, `X-Original-To`, `Delivered-To`
    /// and `Received` headers, then the message; `\n` line ends.
    pub raw: Vec<u8>,
}

impl Delivered {
    /// The message as the client sent it (`\n` line ends), without the four
    /// headers Postfix prepends (Return-Path, X-Original-To, Delivered-To and the
    /// first Received with its continuation lines).
    pub fn body(&self) -> Vec<u8> {
        let mut rest: &[u8] = &self.raw;
        let mut received_seen = false;
        loop {
            let line_end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            let line = &rest[..line_end];
            let added = line.starts_with(b"Return-Path:")
                || line.starts_with(b"X-Original-To:")
                || line.starts_with(b"Delivered-To:");
            if added {
                rest = &rest[line_end..];
            } else if line.starts_with(b"Received:") && !received_seen {
                received_seen = true;
                rest = &rest[line_end..];
                while rest.first().is_some_and(|&b| b == b'\t' || b == b' ') {
                    let end = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |i| i + 1);
                    rest = &rest[end..];
                }
            } else {
                return rest.to_vec();
            }
        }
    }

    /// [`raw`](Self::raw) as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// A running private Postfix; stopped on Drop (its temp dir removed).
pub struct Postfix {
    addr: SocketAddrV4,
    dir: PathBuf,
    // Field order: stop the processes before the directory is removed.
    child: Option<ChildGuard>,
    _tmp: Option<tempfile::TempDir>,
}

impl Postfix {
    /// Whether a private Postfix can start here: running as root with
    /// `/usr/sbin/postfix` installed.
    pub fn available() -> bool {
        is_root() && Path::new(POSTFIX).exists()
    }

    /// Starts Postfix with its smtpd on `ip` (127.0.0.0/8) at a free port and waits
    /// until it listens (up to 30 s). Panics with the Postfix log on failure.
    pub fn start(ip: Ipv4Addr, opts: PostfixOptions) -> Postfix {
        Self::try_start(ip, opts).unwrap_or_else(|e| panic!("postfix: {e}"))
    }

    /// [`start`](Self::start), returning the error instead of panicking.
    pub fn try_start(ip: Ipv4Addr, opts: PostfixOptions) -> Result<Postfix, String> {
        assert!(
            ip.is_loopback(),
            "test peers bind to 127.0.0.0/8 only, not {ip}"
        );
        if !Self::available() {
            return Err("a private Postfix needs root and /usr/sbin/postfix".into());
        }
        let tmp = tempfile::Builder::new()
            .prefix("volley-postfix-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("temp dir: {e}"))?;
        let dir = tmp.path().to_path_buf();
        let mkdir = |name: &str, mode: u32| -> Result<PathBuf, String> {
            let p = dir.join(name);
            std::fs::create_dir_all(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", p.display()))?;
            Ok(p)
        };
        // The queue directory must belong to root; Postfix creates its subdirs
        // and the data directory. virtual(8) delivers as nobody into mail/.
        mkdir(".", 0o755)?;
        mkdir("etc", 0o755)?;
        mkdir("queue", 0o755)?;
        mkdir("mail", 0o777)?;
        let mut peer = on_free_port(ip, |addr| {
            if let Err(e) = write_config(&dir, addr, &opts) {
                return Attempt::Failed(e);
            }
            let mut cmd = Command::new(POSTFIX);
            cmd.arg("-c")
                .arg(dir.join("etc"))
                .arg("start-fg")
                .stdin(Stdio::null());
            let child = match ChildGuard::spawn("postfix", cmd, &dir) {
                Ok(child) => child,
                Err(e) => return Attempt::Failed(e),
            };
            let mut peer = Postfix {
                addr,
                dir: dir.clone(),
                child: Some(child),
                _tmp: None,
            };
            let waited = wait_bound(addr, Duration::from_secs(30), || {
                peer.child.as_ref().map_or(Ok(()), |c| c.check_alive())
            });
            match waited {
                Ok(()) => Attempt::Started(peer),
                Err(e) => {
                    let log = peer.log();
                    peer.stop();
                    if log.contains("in use") {
                        Attempt::PortTaken(e)
                    } else {
                        Attempt::Failed(format!("{e}\nmaillog:\n{log}"))
                    }
                }
            }
        })?;
        peer._tmp = Some(tmp);
        Ok(peer)
    }

    /// The address Postfix's smtpd listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(self.addr)
    }

    /// The instance's directory (`etc/`, `queue/`, `mail/`, `maillog`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Postfix's log so far (`maillog_file`).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("maillog")).unwrap_or_default())
            .into_owned()
    }

    /// Every message delivered so far (one per recipient), oldest first by file
    /// time (coarse: same-tick deliveries come in arbitrary order).
    pub fn delivered(&self) -> Vec<Delivered> {
        // One Maildir for all; complete messages are renamed from tmp/ into new/.
        let Ok(files) = std::fs::read_dir(self.dir.join("mail/inbox/new")) else {
            return Vec::new();
        };
        let mut found: Vec<(std::time::SystemTime, PathBuf, Delivered)> = Vec::new();
        for file in files.filter_map(Result::ok) {
            let path = file.path();
            let (Ok(meta), Ok(raw)) = (std::fs::metadata(&path), std::fs::read(&path)) else {
                continue;
            };
            let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            let recipient = header(&raw, "Delivered-To").unwrap_or_default();
            found.push((when, path, Delivered { recipient, raw }));
        }
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        found.into_iter().map(|(_, _, d)| d).collect()
    }

    /// The messages delivered to `recipient` (compared case-insensitively).
    pub fn delivered_to(&self, recipient: &str) -> Vec<Delivered> {
        self.delivered()
            .into_iter()
            .filter(|d| d.recipient.eq_ignore_ascii_case(recipient))
            .collect()
    }

    /// Polls until at least `n` messages were delivered, or `deadline` passes.
    pub fn wait_for_delivered(
        &self,
        n: usize,
        deadline: Duration,
    ) -> Result<Vec<Delivered>, String> {
        poll(deadline, || {
            let d = self.delivered();
            (d.len() >= n).then_some(d)
        })
        .ok_or_else(|| {
            format!(
                "postfix on {}: {} of {n} deliveries after {deadline:?}; maillog:\n{}",
                self.addr,
                self.delivered().len(),
                self.log()
            )
        })
    }

    /// Polls until the log contains `needle` (e.g. a queue id and "status=sent"),
    /// or `deadline` passes; returns the log.
    pub fn wait_for_log(&self, needle: &str, deadline: Duration) -> Result<String, String> {
        poll(deadline, || {
            let log = self.log();
            log.contains(needle).then_some(log)
        })
        .ok_or_else(|| {
            format!(
                "postfix on {}: {needle:?} not logged after {deadline:?}:\n{}",
                self.addr,
                self.log()
            )
        })
    }

    /// Stops the instance like `postfix stop`: SIGTERM to the master, up to 5 s,
    /// then SIGKILL to its process group; then reaps `postfix start-fg`.
    fn stop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let pid_file = self.dir.join("queue/pid/master.pid");
        let master = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = master {
            let _ = signal("-TERM", &pid.to_string());
            let gone = poll(Duration::from_secs(5), || {
                (!process_running(pid)).then_some(())
            });
            if gone.is_none() {
                // The master leads its own process group (it calls setsid).
                let _ = signal("-KILL", &format!("-{pid}"));
            }
        }
        drop(child);
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of the first header field `name` in the header block of `raw`.
fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Sends `sig` to `target` (a pid, or `-pgid`) with kill(1).
fn signal(sig: &str, target: &str) -> Result<(), String> {
    let out = run_bounded(
        Command::new("kill").args([sig, "--", target]),
        b"",
        Duration::from_secs(5),
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether `pid` exists and is not a zombie.
fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn write_config(dir: &Path, addr: SocketAddrV4, opts: &PostfixOptions) -> Result<(), String> {
    let d = dir.display();
    let hostname = opts.hostname.as_deref().unwrap_or("mx.postfix.test");
    let mut main = vec![
        "compatibility_level = 3.6".to_string(),
        format!("queue_directory = {d}/queue"),
        format!("data_directory = {d}/data"),
        "mail_owner = postfix".into(),
        "setgid_group = postdrop".into(),
        // inet_interfaces must name configured addresses, and 127.0.0.x (x > 1) is
        // not one; the smtpd service binds its own address from master.cf.
        "inet_interfaces = loopback-only".into(),
        "inet_protocols = ipv4".into(),
        format!("myhostname = {hostname}"),
        "mydestination =".into(),
        "mynetworks = 127.0.0.0/8".into(),
        "relay_domains =".into(),
        "alias_maps =".into(),
        "alias_database =".into(),
        "local_recipient_maps =".into(),
        // No header rewriting for 127.0.0.1 clients: deliver what was sent.
        "local_header_rewrite_clients =".into(),
        format!("maillog_file = {d}/maillog"),
        format!("maillog_file_prefixes = {d}"),
        "biff = no".into(),
        "smtputf8_enable = yes".into(),
        "smtpd_banner = $myhostname ESMTP Postfix".into(),
        "virtual_mailbox_domains = static:all".into(),
        format!("virtual_mailbox_base = {d}/mail"),
        "virtual_mailbox_maps = static:inbox/".into(),
        "virtual_uid_maps = static:65534".into(),
        "virtual_gid_maps = static:65534".into(),
        "virtual_minimum_uid = 1".into(),
    ];
    if let Some((cert, key)) = &opts.tls {
        main.push(format!("smtpd_tls_cert_file = {}", cert.display()));
        main.push(format!("smtpd_tls_key_file = {}", key.display()));
        let level = if opts.require_tls { "encrypt" } else { "may" };
        main.push(format!("smtpd_tls_security_level = {level}"));
        main.push("smtpd_tls_received_header = yes".into());
    }
    if !opts.discard_ehlo_keywords.is_empty() {
        main.push(format!(
            "smtpd_discard_ehlo_keywords = {}",
            opts.discard_ehlo_keywords.join(", ")
        ));
    }
    if let Some(limit) = opts.message_size_limit {
        main.push(format!("message_size_limit = {limit}"));
    }
    if !opts.recipient_access.is_empty() {
        main.push(format!(
            "smtpd_recipient_restrictions = check_recipient_access texthash:{d}/etc/recipient_access, permit_mynetworks, reject_unauth_destination"
        ));
        let table: String = opts
            .recipient_access
            .iter()
            .map(|(rcpt, action)| format!("{rcpt} {action}\n"))
            .collect();
        write(&dir.join("etc/recipient_access"), &table)?;
    }
    main.extend(opts.main_cf.iter().cloned());
    write(&dir.join("etc/main.cf"), &(main.join("\n") + "\n"))?;

    let smtpd = format!("{addr} inet n - n - - smtpd\n");
    let services = "\
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
";
    write(&dir.join("etc/master.cf"), &(smtpd + services))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}
