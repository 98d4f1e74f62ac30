//! A throw-away dnsmasq serving a fixed set of records on 127.0.0.1, for DNS tests.
//!
//! [`DnsMasq::start`] picks a free loopback port (UDP and TCP), writes a config file
//! into a temporary directory, starts `/usr/sbin/dnsmasq` in the foreground, waits
//! until it answers a query and kills it on drop. Names under `test.` that have no
//! record are NXDOMAIN; names elsewhere are REFUSED (there is no upstream). Every
//! query is logged to `dnsmasq.log` in the temporary directory ([`DnsMasq::log`]).
//!
//! Include it with `#[path = "support/dnsmasq.rs"] mod dnsmasq;`.

#![allow(dead_code)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The dnsmasq binary (Debian package dnsmasq-base).
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// How long to wait for dnsmasq to answer its first query.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// How many ports to try before giving up (another process may grab the free port).
const START_ATTEMPTS: usize = 5;

/// One DNS record for dnsmasq to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `mx-host=domain,host,preference`
    Mx {
        /// Owner name.
        domain: String,
        /// Exchange.
        host: String,
        /// Preference.
        preference: u16,
    },
    /// `host-record=name,addr`: an A or AAAA record (and its PTR). Several records for
    /// one name add up.
    Addr {
        /// Owner name.
        name: String,
        /// The address.
        addr: IpAddr,
    },
    /// `txt-record=name,"text"`
    Txt {
        /// Owner name.
        name: String,
        /// The text (no double quotes).
        text: String,
    },
    /// `cname=alias,target` (dnsmasq only serves CNAMEs to locally known targets).
    Cname {
        /// Owner name.
        alias: String,
        /// Target.
        target: String,
    },
    /// `dns-rr=name,type,hex`: any record type, RDATA given as hex.
    Raw {
        /// Owner name.
        name: String,
        /// The RR type number.
        rtype: u16,
        /// The RDATA in hex.
        hex: String,
    },
}

impl Record {
    /// An MX record.
    pub fn mx(domain: &str, host: &str, preference: u16) -> Record {
        Record::Mx {
            domain: domain.to_owned(),
            host: host.to_owned(),
            preference,
        }
    }

    /// An A or AAAA record; `addr` must be a valid IP address.
    pub fn addr(name: &str, addr: &str) -> Record {
        let addr = match addr.parse() {
            Ok(addr) => addr,
            Err(e) => panic!("bad address {addr:?} in test record: {e}"),
        };
        Record::Addr {
            name: name.to_owned(),
            addr,
        }
    }

    /// A TXT record.
    pub fn txt(name: &str, text: &str) -> Record {
        assert!(!text.contains('"'), "TXT text must not contain '\"'");
        Record::Txt {
            name: name.to_owned(),
            text: text.to_owned(),
        }
    }

    /// A CNAME record.
    pub fn cname(alias: &str, target: &str) -> Record {
        Record::Cname {
            alias: alias.to_owned(),
            target: target.to_owned(),
        }
    }

    /// A record of any type with hex RDATA.
    pub fn raw(name: &str, rtype: u16, hex: &str) -> Record {
        Record::Raw {
            name: name.to_owned(),
            rtype,
            hex: hex.to_owned(),
        }
    }

    /// An RFC 7505 null MX: `0 .` (type 15, preference 0x0000, root name 0x00).
    pub fn null_mx(domain: &str) -> Record {
        Record::raw(domain, 15, "000000")
    }

    /// The dnsmasq config file line.
    fn config_line(&self) -> String {
        match self {
            Record::Mx {
                domain,
                host,
                preference,
            } => format!("mx-host={domain},{host},{preference}"),
            Record::Addr { name, addr } => format!("host-record={name},{addr}"),
            Record::Txt { name, text } => format!("txt-record={name},\"{text}\""),
            Record::Cname { alias, target } => format!("cname={alias},{target}"),
            Record::Raw { name, rtype, hex } => format!("dns-rr={name},{rtype},{hex}"),
        }
    }
}

/// Tuning of the served answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `local-ttl`: TTL of the configured records (dnsmasq's default is 0: "do not
    /// cache"). Locally generated negative answers carry no SOA in this mode.
    pub local_ttl: Option<u32>,
    /// `neg-ttl`: negative TTL dnsmasq applies to upstream answers without SOA (there
    /// is no upstream here, so it does not change local NXDOMAIN/NoData answers).
    pub neg_ttl: Option<u32>,
    /// Serve the `test` zone authoritatively (`auth-zone=test`, `auth-ttl=N`): every
    /// answer then has TTL `N` and negative answers (NXDOMAIN, NoData) carry an SOA
    /// whose TTL and MINIMUM are `N`, i.e. a negative TTL of `N`. Overrides
    /// `local_ttl` for names in `test`.
    pub authoritative_ttl: Option<u32>,
}

/// A running dnsmasq on `127.0.0.1:<addr.port()>`, UDP and TCP. Killed on drop.
pub struct DnsMasq {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    child: Option<Child>,
    conf_dir: TempDir,
}

impl DnsMasq {
    /// Starts dnsmasq serving `records` with default [`Options`]. Panics (failing the
    /// test) if it cannot be started.
    pub fn start(records: &[Record]) -> DnsMasq {
        DnsMasq::start_with(records, &Options::default())
    }

    /// Starts dnsmasq serving `records` with `options`.
    pub fn start_with(records: &[Record], options: &Options) -> DnsMasq {
        let conf_dir = match tempfile::Builder::new().prefix("volley-dnsmasq").tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("cannot create temp dir: {e}"),
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match launch(conf_dir.path(), addr, records, options) {
                Ok(child) => {
                    return DnsMasq {
                        addr,
                        child: Some(child),
                        conf_dir,
                    };
                }
                Err(failure) => failures.push(format!("port {port}: {failure}")),
            }
        }
        panic!("dnsmasq did not start:\n{}", failures.join("\n"));
    }

    /// Kills dnsmasq now (the port stops answering); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The query log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// How many queries of type `rtype` (e.g. "MX", "A") for `name` dnsmasq logged.
    pub fn queries(&self, rtype: &str, name: &str) -> usize {
        let query = format!("query[{rtype}] {name} from ");
        let auth = format!("auth[{rtype}] {name} from ");
        self.log()
            .lines()
            .filter(|line| line.contains(&query) || line.contains(&auth))
            .count()
    }

    /// The directory holding the config and the log.
    pub fn dir(&self) -> &Path {
        self.conf_dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.conf_dir.path().join("dnsmasq.log")
    }
}

impl Drop for DnsMasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now (the sockets are closed
/// again, so someone may take it before dnsmasq does: the caller retries).
fn free_port() -> u16 {
    loop {
        let udp = match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(socket) => socket,
            Err(e) => panic!("cannot bind a UDP socket on 127.0.0.1: {e}"),
        };
        let port = match udp.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => panic!("no local address: {e}"),
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// Writes the config for `addr`, starts dnsmasq and waits until it answers.
fn launch(
    dir: &Path,
    addr: SocketAddr,
    records: &[Record],
    options: &Options,
) -> Result<Child, String> {
    let conf = dir.join("dnsmasq.conf");
    let log = dir.join("dnsmasq.log");
    let stderr = dir.join("stderr.log");
    let mut lines = vec![
        "no-resolv".to_owned(),
        "no-hosts".to_owned(),
        "no-poll".to_owned(),
        format!("listen-address={}", addr.ip()),
        "bind-interfaces".to_owned(),
        format!("port={}", addr.port()),
        "local=/test/".to_owned(),
        "log-queries".to_owned(),
        format!("log-facility={}", log.display()),
    ];
    if let Some(ttl) = options.local_ttl {
        lines.push(format!("local-ttl={ttl}"));
    }
    if let Some(ttl) = options.neg_ttl {
        lines.push(format!("neg-ttl={ttl}"));
    }
    if let Some(ttl) = options.authoritative_ttl {
        lines.push(format!("auth-server=ns.test,{}", addr.ip()));
        lines.push("auth-zone=test".to_owned());
        lines.push(format!("auth-ttl={ttl}"));
    }
    lines.extend(records.iter().map(Record::config_line));
    lines.push(String::new());
    fs::write(&conf, lines.join("\n")).map_err(|e| format!("writing config: {e}"))?;
    let stderr_file = fs::File::create(&stderr).map_err(|e| format!("stderr file: {e}"))?;

    let mut child = Command::new(DNSMASQ)
        .arg("--keep-in-foreground")
        .arg(format!("--conf-file={}", conf.display()))
        // No pid file: --keep-in-foreground would otherwise still write one in /run.
        .arg("--pid-file=")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file)
        .spawn()
        .map_err(|e| format!("cannot run {DNSMASQ}: {e}"))?;

    let deadline = Instant::now() + START_DEADLINE;
    let mut id: u16 = 0x5151;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = fs::read_to_string(&stderr).unwrap_or_default();
            return Err(format!("dnsmasq exited ({status}): {}", stderr.trim()));
        }
        if answers(addr, id) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("dnsmasq did not answer in time".to_owned());
        }
        id = id.wrapping_add(1);
    }
}

/// Whether a DNS server at `addr` answers an A query for `ready.probe.test` within
/// 100 ms.
fn answers(addr: SocketAddr, id: u16) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    if socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .is_err()
        || socket.connect(addr).is_err()
    {
        return false;
    }
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    // RD, one question.
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["ready", "probe", "test"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    // Root, QTYPE A, QCLASS IN.
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    if socket.send(&query).is_err() {
        // Nothing listening yet (ICMP port unreachable): avoid a busy loop.
        std::thread::sleep(Duration::from_millis(10));
        return false;
    }
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        Ok(n) => n >= 12 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0,
        Err(_) => {
            std::thread::sleep(Duration::from_millis(10));
            false
        }
    }
}
