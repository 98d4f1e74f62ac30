//! Where `sendmail` hands the message over: the local daemon's submission
//! listener (plain SMTP on loopback, trusted by `[relay] networks`), else the
//! spool directly ([`SpoolDeposit`], the listener's own deposit) when no daemon
//! holds it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use volley_conf::{Config, ListenRole, ListenTls};
use volley_engine::deposit::{Dsn, InboundError, SpoolDeposit};
use volley_engine::maildrop::{self, Dropped};
use volley_queue::{QueueError, Spool};
use volley_smtp::data::dot_stuff_into;
use volley_smtp::dsn::xtext_encode;
use volley_smtp::{parse_reply, Capabilities, Parse, Reply};

use super::{Exit, Failure};

/// Time to connect to the listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for a reply to a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for the reply to the end of the data (the server fsyncs the message).
const DATA_TIMEOUT: Duration = Duration::from_secs(600);

/// The listener to submit to: the first `[[listen]]` entry with role
/// submission, without implicit TLS, on a loopback or wildcard address (then
/// reached on loopback), whose loopback client address `[relay] networks`
/// trusts.
pub fn local_listener(config: &Config) -> Option<SocketAddr> {
    config.listen.iter().find_map(|entry| {
        if entry.role != ListenRole::Submission || entry.tls == ListenTls::Implicit {
            return None;
        }
        let ip = match entry.address.ip() {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            _ => return None,
        };
        let client = if ip.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
        let trusted = config
            .relay
            .networks
            .iter()
            .any(|n| n.contains(client) && n.contains(ip));
        trusted.then_some(SocketAddr::new(ip, entry.address.port()))
    })
}

/// What became of a submission to the listener.
#[derive(Debug)]
pub enum Submitted {
    /// Queued; the server's reply text.
    Queued(String),
    /// Nothing reached the server's queue and nothing will: unreachable, or
    /// refused before the transaction began. Try the spool.
    NotThere(String),
}

/// One SMTP conversation with the listener (blocking; no pipelining needed for
/// one message).
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn reply(&mut self, timeout: Duration) -> Result<Reply, String> {
        let _ = self.stream.set_read_timeout(Some(timeout));
        let mut chunk = [0u8; 4096];
        loop {
            match parse_reply(&self.buf) {
                Ok(Parse::Complete(reply, used)) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(Parse::Incomplete) => {}
                Err(e) => return Err(format!("bad reply: {e}")),
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("reading the reply: {e}")),
            }
        }
    }

    fn command(&mut self, line: &str, timeout: Duration) -> Result<Reply, String> {
        let _ = self.stream.set_write_timeout(Some(timeout));
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| format!("sending {line:?}: {e}"))?;
        self.reply(timeout)
    }

    fn quit(mut self) {
        let _ = self.command("QUIT", Duration::from_secs(5));
    }
}

/// The exit status for a failure reply: 4xx try again later; 5xx about an
/// address (x.1.x, 501, 553) or the content (x.6.x, 552, 554 after DATA) is the
/// data's fault; any other 5xx is a refusal.
pub fn exit_for(reply: &Reply, after_data: bool) -> Exit {
    if reply.is_transient() {
        return Exit::TempFail;
    }
    let subject = reply.enhanced.map(|e| e.subject);
    match (reply.code, subject) {
        (_, Some(1 | 6)) | (501 | 552 | 553, _) => Exit::DataErr,
        (554, None) if after_data => Exit::DataErr,
        _ => Exit::Unavailable,
    }
}

fn refused(stage: &str, reply: &Reply, after_data: bool) -> Failure {
    Failure::new(
        exit_for(reply, after_data),
        format!("the volley listener refused {stage}: {reply}"),
    )
}

/// Submits the message to the listener at `addr`.
pub fn via_listener(
    addr: SocketAddr,
    sender: &str,
    recipients: &[String],
    message: &[u8],
    dsn: &Dsn,
) -> Result<Submitted, Failure> {
    let stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return Ok(Submitted::NotThere(format!("{addr}: {e}"))),
    };
    let _ = stream.set_nodelay(true);
    let mut client = Client {
        stream,
        buf: Vec::new(),
    };
    // Up to MAIL FROM nothing is queued: a failure there means "use the spool".
    let before = |what: String| Ok(Submitted::NotThere(format!("{addr}: {what}")));
    let greeting = match client.reply(COMMAND_TIMEOUT) {
        Ok(r) if r.code == 220 => r,
        Ok(r) => return before(format!("greeting {r}")),
        Err(e) => return before(e),
    };
    drop(greeting);
    let caps = match client.command("EHLO localhost", COMMAND_TIMEOUT) {
        Ok(r) if r.is_positive_completion() => Capabilities::from_ehlo(&r),
        Ok(r) => return before(format!("EHLO: {r}")),
        Err(e) => return before(e),
    };
    let mut mail = format!("MAIL FROM:<{sender}>");
    if caps.eight_bit_mime && !message.is_ascii() {
        mail.push_str(" BODY=8BITMIME");
    }
    let utf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
    if utf8 && caps.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    if caps.size.is_some_and(|s| s > 0) {
        mail.push_str(&format!(" SIZE={}", message.len()));
    }
    // The DSN parameters go along when the daemon offers DSN (it does).
    let dsn_offered = caps
        .extensions
        .iter()
        .any(|e| e.trim().eq_ignore_ascii_case("DSN"));
    if dsn_offered {
        if let Some(ret) = dsn.ret {
            mail.push_str(&format!(" RET={}", ret.name()));
        }
        if let Some(envid) = &dsn.envid {
            mail.push_str(&format!(" ENVID={}", xtext_encode(envid)));
        }
    }
    match client.command(&mail, COMMAND_TIMEOUT) {
        Ok(r) if r.is_positive_completion() => {}
        Ok(r) if r.code == 421 => return before(format!("MAIL: {r}")),
        Ok(r) => {
            client.quit();
            return Err(refused("the sender", &r, false));
        }
        Err(e) => return before(e),
    }
    let lost = |e: String| Failure::new(Exit::TempFail, format!("{addr}: {e}"));
    for (i, rcpt) in recipients.iter().enumerate() {
        let mut command = format!("RCPT TO:<{rcpt}>");
        if let Some(notify) = dsn
            .rcpts
            .get(i)
            .and_then(|d| d.notify)
            .filter(|_| dsn_offered)
        {
            command.push_str(&format!(" NOTIFY={}", notify.text()));
        }
        let r = client.command(&command, COMMAND_TIMEOUT).map_err(lost)?;
        if !r.is_positive_completion() {
            client.quit();
            return Err(refused(&format!("recipient {rcpt}"), &r, false));
        }
    }
    let r = client.command("DATA", COMMAND_TIMEOUT).map_err(lost)?;
    if r.code != 354 {
        client.quit();
        return Err(refused("DATA", &r, false));
    }
    let mut data = BytesMut::with_capacity(message.len() + message.len() / 32 + 8);
    dot_stuff_into(message, &mut data);
    let _ = client.stream.set_write_timeout(Some(DATA_TIMEOUT));
    client
        .stream
        .write_all(&data)
        .map_err(|e| lost(format!("sending the message: {e}")))?;
    let r = client.reply(DATA_TIMEOUT).map_err(|e| {
        lost(format!(
            "{e} after the message was sent: it may or may not be queued"
        ))
    })?;
    if !r.is_positive_completion() {
        client.quit();
        return Err(refused("the message", &r, true));
    }
    client.quit();
    Ok(Submitted::Queued(r.text().into_owned()))
}

/// Stores the message straight into the spool when no daemon holds it, else
/// into its drop directory for the daemon to pick up. Returns the queue id.
pub fn into_spool(
    config: &Config,
    sender: &str,
    recipients: &[String],
    message: &[u8],
    dsn: &Dsn,
) -> Result<String, Failure> {
    let dir = &config.spool.dir;
    let spool = match Spool::open(dir) {
        Ok(spool) => spool,
        // A daemon (or a send) holds the spool: the message goes to the drop
        // directory, durably, and the daemon picks it up.
        Err(QueueError::Locked { .. }) => {
            let dropped = Dropped {
                sender: sender.to_owned(),
                recipients: recipients.to_vec(),
                dsn: dsn.clone(),
                message: message.to_vec(),
            };
            return maildrop::write(dir, &dropped, super::random_u64())
                .map(|name| format!("drop-{name}"))
                .map_err(|e| Failure::new(Exit::CantCreat, e.to_string()));
        }
        Err(e) => return Err(Failure::new(Exit::CantCreat, e.to_string())),
    };
    let deposit = SpoolDeposit::new(spool, config.queue.batch_size, config.relay.domains.clone());
    match deposit.store_dsn(sender, recipients, message, dsn) {
        Ok(done) => Ok(done.queue_id()),
        Err(InboundError::NoRecipients) => {
            Err(Failure::new(Exit::DataErr, "no recipients".to_owned()))
        }
        Err(InboundError::Build(e)) => Err(Failure::new(Exit::DataErr, e.to_string())),
        Err(e) => Err(Failure::new(Exit::CantCreat, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_smtp::Enhanced;

    #[test]
    fn exit_status_of_a_failure_reply() {
        let r = |code, enhanced: Option<(u8, u16, u16)>| {
            Reply::new(code, enhanced.map(|(c, s, d)| Enhanced::new(c, s, d)), "x")
        };
        let table = [
            (r(451, Some((4, 3, 0))), false, Exit::TempFail),
            (r(421, None), false, Exit::TempFail),
            (r(550, Some((5, 1, 1))), false, Exit::DataErr),
            (r(553, None), false, Exit::DataErr),
            (r(501, Some((5, 5, 4))), false, Exit::DataErr),
            (r(552, Some((5, 3, 4))), true, Exit::DataErr),
            (r(554, Some((5, 6, 0))), true, Exit::DataErr),
            (r(554, None), true, Exit::DataErr),
            (r(554, None), false, Exit::Unavailable),
            (r(550, Some((5, 7, 1))), false, Exit::Unavailable),
        ];
        for (reply, after_data, want) in table {
            assert_eq!(exit_for(&reply, after_data), want, "{reply}");
        }
    }

    fn config(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("volley.toml")).unwrap()
    }

    #[test]
    fn the_listener_used_is_a_trusted_loopback_submission_one() {
        let listen = |address: &str, role: &str, tls: &str| {
            format!("[[listen]]\naddress = \"{address}\"\nrole = \"{role}\"\ntls = \"{tls}\"\n")
        };
        let table = [
            (
                listen("127.0.0.1:2525", "submission", "none"),
                Some("127.0.0.1:2525"),
            ),
            (
                listen("127.0.0.8:2525", "submission", "starttls"),
                Some("127.0.0.8:2525"),
            ),
            (
                listen("0.0.0.0:587", "submission", "starttls"),
                Some("127.0.0.1:587"),
            ),
            (listen("[::]:587", "submission", "none"), Some("[::1]:587")),
            (listen("127.0.0.1:25", "inbound", "none"), None),
            (listen("127.0.0.1:465", "submission", "implicit"), None),
            (listen("192.0.2.1:587", "submission", "none"), None),
            (
                listen("127.0.0.1:25", "inbound", "none")
                    + &listen("127.0.0.1:26", "submission", "none"),
                Some("127.0.0.1:26"),
            ),
            (
                listen("127.0.0.1:2525", "submission", "none")
                    + "[relay]\nnetworks = [\"10.0.0.0/8\"]\n",
                None,
            ),
            (String::new(), None),
        ];
        for (text, want) in table {
            assert_eq!(
                local_listener(&config(&text)).map(|a| a.to_string()),
                want.map(str::to_owned),
                "{text}"
            );
        }
    }
}
