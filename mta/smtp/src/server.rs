//! The SMTP server session: a deterministic state machine with no I/O.
//!
//! Bytes read from the client go in with [`Session::feed`]; replies come out of
//! [`Session::output`]; what the driver must do or decide comes out of
//! [`Session::poll_event`]. The driver owns the socket, the TLS handshake, the
//! clock (idle and session timeouts: [`Session::timeout`]), password checks
//! ([`Event::Authenticate`]) and storing messages ([`Event::Message`]).
//!
//! ```
//! use std::sync::Arc;
//! use volley_conf::ListenRole;
//! use volley_smtp::server::{Event, RelayPolicy, Session, Settings};
//!
//! let policy = RelayPolicy::new(ListenRole::Inbound, vec![], ["acme.test".to_owned()]);
//! let settings = Arc::new(Settings::new("mx.acme.test", policy));
//! let mut session = Session::new(settings, "192.0.2.7".parse().unwrap(), false);
//! assert_eq!(&session.output()[..], b"220 mx.acme.test ESMTP volley\r\n");
//! session.output().clear(); // the driver wrote it
//! session.feed(b"HELO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@acme.test>\r\nDATA\r\n");
//! session.feed(b"Subject: hi\r\n\r\n..dot\r\n.\r\n");
//! let Some(Event::Message(message)) = session.poll_event() else { panic!() };
//! assert_eq!(message.envelope.rcpt_to, ["u@acme.test"]);
//! assert_eq!(message.data, b"Subject: hi\r\n\r\n.dot\r\n");
//! session.message_queued("Q1"); // the driver stored it durably
//! assert!(session.output().ends_with(b"354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n"));
//! ```
//!
//! States are named for what they expect next. Several commands in one input
//! (PIPELINING, RFC 2920) are answered in order into the one output buffer; the
//! driver writes it when the input is used up. While a decision is pending
//! ([`Session::wants_input`] is false) the rest of the input waits.
//!
//! STARTTLS (RFC 3207): after the `220` the session discards every byte already
//! received (a client, or an attacker in the path, may have pipelined commands
//! behind STARTTLS to have them run as if they came over TLS: CVE-2011-0411) and
//! reports how many in [`Event::StartTls`]; after [`Session::tls_established`] it
//! forgets the HELO name, the transaction and any AUTH.
//!
//! Message content: see the `body` module (only `CRLF . CRLF` ends DATA; bare CR or LF,
//! lines over 998 characters and oversize messages are refused after their end).
//!
//! Layout: this file (the session, commands outside a transaction, STARTTLS,
//! AUTH); `transaction.rs` (MAIL, RCPT, DATA, BDAT, end of message); `command.rs`
//! (command syntax); `body.rs` (message content); `sasl.rs` (AUTH PLAIN/LOGIN,
//! base64); `policy.rs` ([`RelayPolicy`]); `received.rs` ([`write_received`]);
//! `reply.rs` ([`Line`]); `tests.rs` (byte transcripts).

mod body;
pub mod budget;
mod command;
mod policy;
mod received;
mod reply;
mod sasl;
#[cfg(test)]
mod tests;
mod transaction;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tracing::{info, warn};

use self::body::BodyReader;
use self::command::{Command, MailParams};
pub use self::policy::RelayPolicy;
pub use self::received::write_received;
use self::reply::write_line;
pub use self::reply::Line;
pub use self::sasl::Credentials;

/// Commands without a transaction (NOOP, RSET, VRFY, HELP, repeated EHLO) allowed
/// between two accepted messages, by default.
pub const DEFAULT_MAX_JUNK_COMMANDS: u32 = 100;

/// What one listener's sessions allow; shared by its sessions.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our name in the greeting and the EHLO reply (spaces and control
    /// characters dropped).
    pub hostname: String,
    /// Largest message in bytes (EHLO `SIZE`).
    pub max_message_size: u64,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Longest command line, line end included (at least 512 is used).
    pub max_line_length: usize,
    /// Errors before the session is closed with `421 4.7.0`.
    pub max_errors: u32,
    /// Commands that move no mail (NOOP, RSET, VRFY, HELP, EHLO again) allowed
    /// between accepted messages before `421 4.7.0`.
    pub max_junk_commands: u32,
    /// Offer STARTTLS (the driver has a certificate and the listener starts in
    /// plaintext).
    pub starttls: bool,
    /// Offer AUTH PLAIN LOGIN once TLS is active (submission listeners with users).
    pub auth: bool,
    /// Who may send to which recipients.
    pub relay: RelayPolicy,
    /// The bytes of content all sessions may hold at once (see
    /// [`budget`]); `None`: no bound but the size limit.
    pub content_budget: Option<Arc<budget::ContentBudget>>,
    /// The VERP return paths of our campaign mail: a recipient at its domain
    /// with its prefix whose token does not verify is refused at RCPT with
    /// `550 5.7.1` (and logged). `None`: no check.
    pub verp: Option<Arc<dyn VerpCheck>>,
}

/// Verifies the VERP token of a recipient address at RCPT (implemented by
/// `volley_inbound::Verp`; a trait here so that the protocol core does not depend
/// on the classification of what comes back).
pub trait VerpCheck: Send + Sync + std::fmt::Debug {
    /// `Err(reason)` when `address` is at the VERP domain with its prefix but its
    /// token is malformed or forged (the reason is logged); `Ok` for a valid token
    /// and for every other address.
    fn verify(&self, address: &str) -> Result<(), String>;
}

impl Settings {
    /// The defaults of `[server]` (25 MiB, 1000 recipients, 4096-byte lines, 10
    /// errors), no STARTTLS, no AUTH.
    pub fn new(hostname: &str, relay: RelayPolicy) -> Settings {
        Settings {
            hostname: hostname
                .chars()
                .filter(|c| !c.is_control() && !c.is_whitespace())
                .collect(),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 4096,
            max_errors: 10,
            max_junk_commands: DEFAULT_MAX_JUNK_COMMANDS,
            starttls: false,
            auth: false,
            relay,
            content_budget: None,
            verp: None,
        }
    }
}

/// Who sent a message, to whom, and how: the envelope of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path without angle brackets; empty for the null sender.
    pub mail_from: String,
    /// The accepted recipients, in order, without angle brackets.
    pub rcpt_to: Vec<String>,
    /// `BODY=8BITMIME` was given.
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The name the client gave in EHLO or HELO.
    pub helo: String,
    /// EHLO (not HELO) was used.
    pub esmtp: bool,
    /// The AUTH user, if the session authenticated.
    pub user: Option<String>,
    /// The session was encrypted (STARTTLS or implicit TLS).
    pub tls: bool,
    /// `RET=` (RFC 3461): what a failure report returns of the message.
    pub ret: Option<crate::dsn::Ret>,
    /// `ENVID=` (RFC 3461), decoded.
    pub envid: Option<String>,
    /// `NOTIFY=` and `ORCPT=` of each recipient, in the order of `rcpt_to`.
    pub rcpt_dsn: Vec<crate::dsn::RcptDsn>,
}

impl Envelope {
    /// The `with` protocol name of RFC 3848: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA.
    pub fn protocol(&self) -> &'static str {
        match (self.esmtp, self.tls, self.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }
}

/// An accepted message, handed to the driver to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sender, recipients and how the session went.
    pub envelope: Envelope,
    /// The message as received: CRLF line ends, dot-stuffing undone, no trace
    /// header added (see [`write_received`]).
    pub data: Vec<u8>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent QUIT.
    Quit,
    /// Too many errors (`421 4.7.0`).
    TooManyErrors,
    /// Too many commands that move no mail (`421 4.7.0`).
    TooManyJunkCommands,
    /// The driver's idle or session timer fired (`421 4.4.2`).
    Timeout,
    /// The server is shutting down (`421 4.3.2`).
    Shutdown,
    /// An unauthenticated client sent content before the `354` reply to DATA
    /// (`554 5.5.0`): RFC 2920 §3.1 makes DATA the last command of a group,
    /// and what a client sends blind may be meant for another parser.
    ImproperPipelining,
}

/// What the driver must do or decide next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Check these credentials, then call [`Session::auth_verdict`]. The session
    /// reads no input until then.
    Authenticate(Credentials),
    /// Store this message durably, then call [`Session::message_queued`] (or
    /// [`Session::message_failed`], [`Session::message_refused`]). The session reads no input until then.
    Message(Box<Message>),
    /// Write the output (the `220` to STARTTLS), do the TLS handshake, then call
    /// [`Session::tls_established`]. `discarded` bytes the client had sent after
    /// STARTTLS were dropped unread.
    StartTls {
        /// Bytes dropped unread.
        discarded: usize,
    },
    /// Write the remaining output and close the connection.
    Closed(CloseReason),
}

/// What the session expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A command line.
    ExpectCommand,
    /// DATA content up to `CRLF . CRLF`.
    ExpectData,
    /// `left` more bytes of a BDAT chunk; `refusal` is its reply when the chunk
    /// is read only to be thrown away.
    ExpectChunk {
        left: u64,
        last: bool,
        refused: Option<Refusal>,
    },
    /// A SASL response line.
    ExpectAuthResponse(AuthStep),
    /// The driver is checking credentials.
    AwaitAuth,
    /// The driver is storing a message.
    AwaitDeposit,
    /// The driver is doing the TLS handshake.
    AwaitTls,
    /// Over.
    Closed,
}

/// Why a BDAT chunk is read and thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No MAIL (or the transaction failed earlier).
    Transaction,
    /// MAIL but no accepted recipient.
    Recipients,
    /// The content budget is used up.
    Storage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword,
}

/// The transaction in progress (after MAIL).
#[derive(Debug)]
struct Transaction {
    mail_from: String,
    params: MailParams,
    rcpt_to: Vec<String>,
    /// The DSN parameters of each of `rcpt_to`.
    rcpt_dsn: Vec<crate::dsn::RcptDsn>,
    /// Content being received (DATA or BDAT chunks so far).
    body: Option<BodyReader>,
    /// Its share of the content budget, while it is received.
    reservation: Option<budget::Reservation>,
}

/// A server SMTP session on one connection. See the module documentation.
#[derive(Debug)]
pub struct Session {
    settings: Arc<Settings>,
    client_ip: IpAddr,
    state: State,
    input: BytesMut,
    output: BytesMut,
    events: VecDeque<Event>,
    /// The EHLO/HELO name, and whether it was EHLO.
    helo: Option<(String, bool)>,
    tls: bool,
    user: Option<String>,
    /// The user name while waiting for the LOGIN password or the verdict.
    login_user: Option<String>,
    tx: Option<Transaction>,
    errors: u32,
    junk: u32,
    /// Dropping the rest of an overlong command line.
    skipping_line: bool,
    /// The content budget of the message being deposited: its bytes stay
    /// counted until the driver says how the deposit went.
    depositing: Option<budget::Reservation>,
}

impl Session {
    /// A session on a freshly accepted connection from `client_ip`; `tls` when the
    /// connection is already encrypted (implicit TLS). Writes the greeting.
    pub fn new(settings: Arc<Settings>, client_ip: IpAddr, tls: bool) -> Session {
        let mut session = Session {
            settings,
            client_ip,
            state: State::ExpectCommand,
            input: BytesMut::new(),
            output: BytesMut::new(),
            events: VecDeque::new(),
            helo: None,
            tls,
            user: None,
            login_user: None,
            tx: None,
            errors: 0,
            junk: 0,
            skipping_line: false,
            depositing: None,
        };
        let greeting = format!("{} ESMTP volley", session.settings.hostname);
        write_line(&mut session.output, 220, ' ', "", &greeting);
        session
    }

    /// The greeting for a connection refused before a session starts (connection
    /// limits): `421 4.7.0 <hostname> Too many connections, try again later`.
    pub fn busy_greeting(hostname: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        let text = format!("{hostname} Too many connections, try again later");
        Line::new(421, "4.7.0", text).write(&mut out);
        out.to_vec()
    }

    /// Bytes to write to the client. The driver writes them and clears the buffer.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }

    /// The next thing the driver must do or decide.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the session can use more input: false while a decision or the TLS
    /// handshake is pending, and once closed. The driver stops reading then.
    pub fn wants_input(&self) -> bool {
        matches!(
            self.state,
            State::ExpectCommand
                | State::ExpectData
                | State::ExpectChunk { .. }
                | State::ExpectAuthResponse(_)
        )
    }

    /// Whether the session is over (after QUIT, 421...).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the connection is encrypted.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Takes bytes read from the client, in any chunking. Processes as much as it
    /// can; the rest waits while a decision is pending. Ignored once closed;
    /// discarded (and counted in the log) while waiting for the TLS handshake.
    pub fn feed(&mut self, input: &[u8]) {
        match self.state {
            State::Closed => return,
            State::AwaitTls => {
                if !input.is_empty() {
                    warn!(client = %self.client_ip, bytes = input.len(),
                        "plaintext after STARTTLS discarded");
                }
                return;
            }
            _ => {}
        }
        self.input.extend_from_slice(input);
        self.process();
    }

    /// The driver's verdict on [`Event::Authenticate`]: whether the password is
    /// right.
    pub fn auth_verdict(&mut self, ok: bool) {
        if self.state != State::AwaitAuth {
            return;
        }
        self.state = State::ExpectCommand;
        let user = self.login_user.take().unwrap_or_default();
        if ok {
            info!(client = %self.client_ip, user, "authenticated");
            self.user = Some(user);
            self.reply(235, "2.7.0", "Authentication successful");
        } else {
            warn!(client = %self.client_ip, user, "authentication failed");
            self.error(535, "5.7.8", "Authentication credentials invalid");
        }
        self.process();
    }

    /// The [`Event::Authenticate`] is refused without a check: too many
    /// failures from this client or for this name lately. Replies `454 4.7.0`
    /// (temporary: try later), counted as an error.
    pub fn auth_throttled(&mut self) {
        if self.state != State::AwaitAuth {
            return;
        }
        self.state = State::ExpectCommand;
        let user = self.login_user.take().unwrap_or_default();
        warn!(client = %self.client_ip, user, "authentication refused: too many failures");
        self.error(
            454,
            "4.7.0",
            "Too many failed authentications, try again later",
        );
        self.process();
    }

    /// The message of [`Event::Message`] is stored durably under `queue_id`:
    /// replies `250 2.0.0 Ok: queued as <queue_id>`.
    pub fn message_queued(&mut self, queue_id: &str) {
        if self.state != State::AwaitDeposit {
            return;
        }
        self.depositing = None;
        self.state = State::ExpectCommand;
        self.junk = 0;
        let text = format!("Ok: queued as {queue_id}");
        self.reply(250, "2.0.0", text);
        self.process();
    }

    /// The message of [`Event::Message`] could not be stored: replies `451 4.3.0`
    /// so the client tries again later.
    pub fn message_failed(&mut self) {
        if self.state != State::AwaitDeposit {
            return;
        }
        self.depositing = None;
        self.state = State::ExpectCommand;
        self.reply(
            451,
            "4.3.0",
            "Temporary failure storing the message, try again later",
        );
        self.process();
    }

    /// The message of [`Event::Message`] is refused for good (e.g. it is
    /// addressed to a forged VERP address): replies `code enhanced text`, a 5xx
    /// the client must not retry. `code` outside 500..=599 is taken as 554.
    pub fn message_refused(&mut self, code: u16, enhanced: &'static str, text: String) {
        if self.state != State::AwaitDeposit {
            return;
        }
        self.depositing = None;
        self.state = State::ExpectCommand;
        let code = if (500..600).contains(&code) {
            code
        } else {
            554
        };
        self.error(code, enhanced, text);
        self.process();
    }

    /// The TLS handshake after [`Event::StartTls`] succeeded: the session starts
    /// over (RFC 3207 §4.2): the client must EHLO again.
    pub fn tls_established(&mut self) {
        if self.state != State::AwaitTls {
            return;
        }
        self.state = State::ExpectCommand;
        self.tls = true;
        self.helo = None;
        self.tx = None;
        self.user = None;
        self.input.clear();
        self.process();
    }

    /// The driver's idle or session timer fired: `421 4.4.2`, closed.
    pub fn timeout(&mut self) {
        self.close_with(
            421,
            "4.4.2",
            "Timeout, closing connection",
            CloseReason::Timeout,
        );
    }

    /// The server is shutting down: `421 4.3.2`, closed.
    pub fn shutdown(&mut self) {
        self.close_with(421, "4.3.2", "Service shutting down", CloseReason::Shutdown);
    }

    fn close_with(&mut self, code: u16, enhanced: &'static str, why: &str, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        let text = format!("{} {why}", self.settings.hostname);
        self.reply(code, enhanced, text);
        self.close(reason);
    }

    fn close(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.input.clear();
        self.events.push_back(Event::Closed(reason));
    }

    fn reply(
        &mut self,
        code: u16,
        enhanced: &'static str,
        text: impl Into<std::borrow::Cow<'static, str>>,
    ) {
        Line::new(code, enhanced, text).write(&mut self.output);
    }

    fn send(&mut self, line: &Line) {
        line.write(&mut self.output);
        if line.is_error() {
            self.count_error();
        }
    }

    /// Replies with an error and counts it.
    fn error(
        &mut self,
        code: u16,
        enhanced: &'static str,
        text: impl Into<std::borrow::Cow<'static, str>>,
    ) {
        self.reply(code, enhanced, text);
        self.count_error();
    }

    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.settings.max_errors && self.state != State::Closed {
            warn!(client = %self.client_ip, errors = self.errors,
                limit = self.settings.max_errors, "too many errors, closing");
            self.close_with(
                421,
                "4.7.0",
                "Too many errors, closing connection",
                CloseReason::TooManyErrors,
            );
        }
    }

    fn count_junk(&mut self) -> bool {
        self.junk += 1;
        if self.junk > self.settings.max_junk_commands {
            warn!(client = %self.client_ip, commands = self.junk,
                limit = self.settings.max_junk_commands, "too many commands without mail, closing");
            self.close_with(
                421,
                "4.7.0",
                "Too many commands without mail, closing connection",
                CloseReason::TooManyJunkCommands,
            );
            return false;
        }
        true
    }

    /// Runs the state machine over the buffered input.
    fn process(&mut self) {
        loop {
            match self.state {
                State::ExpectCommand | State::ExpectAuthResponse(_) => {
                    let Some(line) = self.take_line() else { return };
                    let line = line.strip_suffix(b"\n").unwrap_or(&line);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if let State::ExpectAuthResponse(step) = self.state {
                        self.auth_response(step, line);
                    } else {
                        self.command(line);
                    }
                }
                State::ExpectData => {
                    if self.input.is_empty() {
                        return;
                    }
                    let Some(reader) = self.tx.as_mut().and_then(|tx| tx.body.as_mut()) else {
                        self.state = State::ExpectCommand;
                        continue;
                    };
                    let (used, done) = reader.feed_data(&self.input);
                    self.input.advance(used);
                    if done {
                        self.end_of_message();
                    }
                }
                State::ExpectChunk {
                    left,
                    last,
                    refused,
                } => {
                    if left > 0 {
                        if self.input.is_empty() {
                            return;
                        }
                        let n = usize::try_from(left)
                            .unwrap_or(usize::MAX)
                            .min(self.input.len());
                        if refused.is_none() {
                            if let Some(reader) = self.tx.as_mut().and_then(|tx| tx.body.as_mut()) {
                                reader.feed_chunk(&self.input[..n]);
                            }
                        }
                        self.input.advance(n);
                        self.state = State::ExpectChunk {
                            left: left - n as u64,
                            last,
                            refused,
                        };
                        continue;
                    }
                    self.state = State::ExpectCommand;
                    self.end_of_chunk(last, refused);
                }
                State::AwaitAuth | State::AwaitDeposit | State::AwaitTls | State::Closed => return,
            }
        }
    }

    /// The next line (with its CRLF) from the input, or `None` if it is not
    /// complete. Only CRLF ends a line (RFC 5321 §2.3.8): a bare LF is part of
    /// the line, which is then refused whole as holding a control character, so
    /// `RCPT TO:<a@x>\nRCPT TO:<b@y>\r\n` is one refused line, not two
    /// commands. An overlong line is answered with `500 5.5.2` and dropped up to
    /// its CRLF.
    fn take_line(&mut self) -> Option<BytesMut> {
        let max = self.settings.max_line_length.max(512);
        loop {
            if self.skipping_line {
                match crlf(&self.input) {
                    Some(end) => {
                        self.input.advance(end + 1);
                        self.skipping_line = false;
                    }
                    None => {
                        // Keep a final CR: its LF may come in the next read.
                        let keep = usize::from(self.input.last() == Some(&b'\r'));
                        let drop = self.input.len() - keep;
                        self.input.advance(drop);
                        return None;
                    }
                }
            }
            let window = &self.input[..self.input.len().min(max)];
            if let Some(end) = crlf(window) {
                return Some(self.input.split_to(end + 1));
            }
            if self.input.len() < max {
                return None;
            }
            warn!(client = %self.client_ip, limit = max, "command line too long");
            self.skipping_line = true;
            if let State::ExpectAuthResponse(_) = self.state {
                self.state = State::ExpectCommand;
            }
            self.error(500, "5.5.2", "Line too long");
            if self.state == State::Closed {
                return None;
            }
        }
    }

    fn command(&mut self, line: &[u8]) {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(reply) => return self.send(&reply),
        };
        match command {
            Command::Ehlo(name) | Command::Helo(name) => {
                let esmtp = matches!(command, Command::Ehlo(_));
                if self.helo.is_some() && !self.count_junk() {
                    return;
                }
                self.helo = Some((name.to_owned(), esmtp));
                self.tx = None;
                if esmtp {
                    self.ehlo_reply();
                } else {
                    let text = self.settings.hostname.clone();
                    write_line(&mut self.output, 250, ' ', "", &text);
                }
            }
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            Command::Mail { address, params } => self.mail(address, params),
            Command::Rcpt { address, dsn } => self.rcpt(address, dsn),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                if self.count_junk() {
                    self.tx = None;
                    self.reply(250, "2.0.0", "Ok");
                }
            }
            Command::Noop => {
                if self.count_junk() {
                    self.reply(250, "2.0.0", "Ok");
                }
            }
            Command::Vrfy => {
                if self.count_junk() {
                    self.reply(
                        252,
                        "2.5.0",
                        "Cannot VRFY user, but will accept message and attempt delivery",
                    );
                }
            }
            Command::Help => {
                if self.count_junk() {
                    self.reply(
                        214,
                        "2.0.0",
                        "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
                    );
                }
            }
            Command::Quit => {
                let text = format!("{} closing connection", self.settings.hostname);
                self.reply(221, "2.0.0", text);
                self.close(CloseReason::Quit);
            }
        }
    }

    fn ehlo_reply(&mut self) {
        let s = Arc::clone(&self.settings);
        let mut lines: Vec<String> = vec![
            s.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", s.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "CHUNKING".into(),
            "ENHANCEDSTATUSCODES".into(),
            "DSN".into(),
        ];
        if s.starttls && !self.tls {
            lines.push("STARTTLS".into());
        }
        if s.auth && self.tls && self.user.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            write_line(&mut self.output, 250, sep, "", line);
        }
    }

    fn starttls(&mut self) {
        if self.tls {
            return self.error(503, "5.5.1", "TLS already active");
        }
        if !self.settings.starttls {
            return self.error(502, "5.5.1", "STARTTLS not available");
        }
        self.reply(220, "2.0.0", "Ready to start TLS");
        let discarded = self.input.len();
        if discarded > 0 {
            warn!(client = %self.client_ip, bytes = discarded,
                "input pipelined after STARTTLS discarded");
        }
        self.input.clear();
        self.state = State::AwaitTls;
        self.events.push_back(Event::StartTls { discarded });
    }

    fn auth(&mut self, mechanism: &str, initial: Option<&str>) {
        if !self.settings.auth {
            return self.error(502, "5.5.1", "AUTH not available");
        }
        if !self.tls {
            return self.error(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            );
        }
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Send EHLO first");
        }
        if self.user.is_some() {
            return self.error(503, "5.5.1", "Already authenticated");
        }
        if self.tx.is_some() {
            return self.error(503, "5.5.1", "AUTH not allowed during a mail transaction");
        }
        if mechanism.eq_ignore_ascii_case("PLAIN") {
            match initial {
                Some(response) => self.auth_response(AuthStep::Plain, response.as_bytes()),
                None => {
                    self.state = State::ExpectAuthResponse(AuthStep::Plain);
                    write_line(&mut self.output, 334, ' ', "", "");
                }
            }
        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
            match initial {
                Some(response) => self.auth_response(AuthStep::LoginUser, response.as_bytes()),
                None => {
                    self.state = State::ExpectAuthResponse(AuthStep::LoginUser);
                    write_line(&mut self.output, 334, ' ', "", sasl::LOGIN_USER_PROMPT);
                }
            }
        } else {
            self.error(504, "5.5.4", "Unrecognized authentication type");
        }
    }

    fn auth_response(&mut self, step: AuthStep, line: &[u8]) {
        self.state = State::ExpectCommand;
        let Ok(response) = std::str::from_utf8(line) else {
            return self.error(501, "5.5.2", "Invalid base64 in AUTH response");
        };
        let response = response.trim();
        if response == "*" {
            self.login_user = None;
            return self.error(501, "5.0.0", "Authentication cancelled");
        }
        let credentials = match step {
            AuthStep::Plain => sasl::decode_plain(response),
            AuthStep::LoginUser => match sasl::decode_login(response) {
                Ok(user) => {
                    self.login_user = Some(user);
                    self.state = State::ExpectAuthResponse(AuthStep::LoginPassword);
                    write_line(&mut self.output, 334, ' ', "", sasl::LOGIN_PASSWORD_PROMPT);
                    return;
                }
                Err(e) => Err(e),
            },
            AuthStep::LoginPassword => sasl::decode_login(response).map(|password| Credentials {
                user: self.login_user.take().unwrap_or_default(),
                password,
            }),
        };
        match credentials {
            Ok(credentials) => {
                self.state = State::AwaitAuth;
                self.login_user = Some(credentials.user.clone());
                self.events.push_back(Event::Authenticate(credentials));
            }
            Err(sasl::SaslError::Base64) => {
                self.login_user = None;
                self.error(501, "5.5.2", "Invalid base64 in AUTH response");
            }
            Err(sasl::SaslError::Malformed) => {
                self.login_user = None;
                self.error(535, "5.7.8", "Authentication credentials invalid");
            }
        }
    }
}

/// Where the LF of the first CRLF in `input` is.
fn crlf(input: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', input).find(|&i| i > 0 && input[i - 1] == b'\r')
}
