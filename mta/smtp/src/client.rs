//! The SMTP client session: a deterministic state machine with no I/O.
//!
//! Bytes read from the server go in with [`Session::feed`]; bytes to write come out of
//! [`Session::take_output`] (or, as one buffer, [`Session::output`]); what happened
//! comes out of [`Session::poll_event`]. The driver
//! owns the socket, the TLS handshake and every timeout: on a timeout or a dropped
//! connection it calls [`Session::connection_lost`], which still answers for every
//! transaction.
//!
//! ```
//! use bytes::Bytes;
//! use volley_smtp::{Event, Session, SessionConfig, TlsMode, Transaction};
//!
//! let mut config = SessionConfig::new("mta1.example.com");
//! config.tls = TlsMode::Disabled;
//! let mut session = Session::new(config);
//! session.feed(b"220 mx.example.net ESMTP\r\n");
//! assert_eq!(&session.output()[..], b"EHLO mta1.example.com\r\n");
//! session.output().clear(); // the driver wrote it
//! session.feed(b"250-mx.example.net\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
//! assert!(matches!(session.poll_event(), Some(Event::Ready(_))));
//! let tx = Transaction {
//!     id: 7,
//!     mail_from: "bounce@example.com".into(),
//!     rcpt_to: vec!["user@example.net".into()],
//!     body: Bytes::from_static(b"Subject: hi\r\n\r\nhello\r\n"),
//!     crlf_only: true,
//! };
//! session.enqueue(tx).unwrap();
//! assert!(session.output().starts_with(b"MAIL FROM:<bounce@example.com>\r\n"));
//! ```
//!
//! States are named for what they expect next (`ExpectGreeting`, `ExpectEhlo`, …).
//! Once ready, each command written pushes an `Expect` onto a FIFO and each reply is
//! matched to the front of it, which is what makes pipelining (RFC 2920) safe: replies
//! come back in command order.
//!
//! RSET policy: the server holds a transaction's envelope when MAIL was accepted and
//! the transaction did not end with an end-of-data reply or a positive `BDAT LAST`
//! reply (RFC 3030 §2: after a failed BDAT the state is indeterminate until RSET). A
//! next MAIL then fails with 503, and worse, its RCPTs would join the previous sender's
//! envelope. So RSET goes before a transaction when the previous one is known to have
//! left state, and, when pipelining BDAT, whenever the previous transaction's outcome
//! is not known yet: that RSET travels in the same write and costs no round trip. With
//! DATA the next MAIL only goes out after the 354, when the envelope's fate is known,
//! so no RSET is needed unless the previous transaction really failed.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use self::transaction::{connection_lost_reply, local_reply, Expect, Slot, TxState};
use super::data::{dot_stuff_into, sendable_as_is};
use super::ehlo::Capabilities;
use super::reply::{parse_reply_limited, Parse, Reply, ReplyError, MAX_LINE};

/// When to upgrade the connection with STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Use STARTTLS when offered; go on in plaintext when it is not offered or refused.
    #[default]
    Opportunistic,
    /// Use STARTTLS; give up (after QUIT) when it is not offered or refused.
    Required,
    /// Never use STARTTLS.
    Disabled,
}

/// How a [`Session`] behaves towards the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our name in EHLO/HELO. Control characters and spaces are dropped.
    pub helo_name: String,
    /// When to use STARTTLS.
    pub tls: TlsMode,
    /// Pipeline commands (RFC 2920) when the server offers PIPELINING.
    pub pipelining: bool,
    /// Send bodies with `BDAT` (RFC 3030) when the server offers CHUNKING.
    pub chunking: bool,
    /// Longest reply line accepted, line end included (at least 512 is used).
    pub max_line: usize,
}

impl SessionConfig {
    /// The defaults: opportunistic TLS, pipelining and chunking when offered, reply
    /// lines up to [`MAX_LINE`] bytes.
    pub fn new(helo_name: impl Into<String>) -> SessionConfig {
        SessionConfig {
            helo_name: helo_name.into(),
            tls: TlsMode::Opportunistic,
            pipelining: true,
            chunking: true,
            max_line: MAX_LINE,
        }
    }
}

impl Default for SessionConfig {
    /// [`SessionConfig::new`] with `localhost` as our name: set a real `helo_name`.
    fn default() -> SessionConfig {
        SessionConfig::new("localhost")
    }
}

/// One message to deliver to some recipients of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The caller's identifier, handed back in [`TransactionResult::id`].
    pub id: u64,
    /// The envelope sender, without angle brackets; empty for the null sender (bounces).
    pub mail_from: String,
    /// The envelope recipients, without angle brackets.
    pub rcpt_to: Vec<String>,
    /// The rendered RFC 5322 message; the session normalizes line ends to CRLF and
    /// dot-stuffs it for DATA.
    pub body: Bytes,
    /// The caller guarantees that every line end in `body` is CRLF (a rendered
    /// template): the session skips normalizing and sizes the body by its
    /// length. Dot-stuffing still scans, so a wrong claim cannot end DATA early.
    pub crlf_only: bool,
}

/// Which command a recipient's outcome came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The MAIL command failed (or was never answered): all recipients share its reply.
    Mail,
    /// The recipient's own RCPT command failed (or was never answered).
    Rcpt,
    /// The recipient was accepted; this is the reply to the message data.
    Data,
}

/// The outcome for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    /// The recipient, as given in [`Transaction::rcpt_to`].
    pub rcpt: String,
    /// The reply that decides this recipient's fate.
    pub reply: Reply,
    /// Which command `reply` answered.
    pub stage: Stage,
    /// True when this session made the reply up rather than the server sending it:
    /// connection lost, malformed server reply, or an address refused before sending.
    /// Logs use it to tell connection-level failures from recipient-level ones.
    pub local: bool,
}

/// The outcome of one [`Transaction`]; emitted once per accepted [`Session::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    /// [`Transaction::id`].
    pub id: u64,
    /// The server's reply to MAIL; `None` if MAIL was never sent or never answered.
    pub mail: Option<Reply>,
    /// One per [`Transaction::rcpt_to`], in the same order.
    pub rcpts: Vec<RcptResult>,
    /// The server's reply to the message data: the final reply after the DATA dot or
    /// to `BDAT LAST`, or the refusal of the DATA command itself; `None` if never sent
    /// or never answered.
    pub data: Option<Reply>,
    /// [`Transaction::body`], handed back: once the session has written it, the
    /// caller usually holds the only reference and can take the buffer back
    /// (`Bytes::try_into_mut`) for the next message, still warm in the cache.
    pub body: Bytes,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// We sent QUIT after [`Session::quit`] and the server answered or hung up.
    Quit,
    /// The session failed.
    Failed(SessionError),
}

/// What made a session fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The greeting was not 2xx (e.g. 554 "no SMTP service here", or 421).
    #[error("greeting refused: {0}")]
    Greeting(Reply),
    /// EHLO failed with 4xx, or the HELO fallback failed (this holds the last reply).
    #[error("EHLO/HELO refused: {0}")]
    Ehlo(Reply),
    /// TLS is required and the server does not offer STARTTLS.
    #[error("TLS required but the server does not offer STARTTLS")]
    TlsRequiredButNotOffered,
    /// TLS is required and the server refused STARTTLS.
    #[error("STARTTLS refused: {0}")]
    StartTls(Reply),
    /// The server sent 421: it is closing the connection.
    #[error("server closing the connection: {0}")]
    ServiceClosing(Reply),
    /// The server refused RSET, so its transaction state is unknown; the session
    /// finished what was in flight and quit.
    #[error("RSET refused: {0}")]
    Rset(Reply),
    /// The server sent bytes that are not a reply.
    #[error("malformed reply: {0}")]
    MalformedReply(#[from] ReplyError),
    /// The server broke the protocol (a reply when none was expected, data before the
    /// TLS handshake).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The driver reported that the connection dropped (or timed out).
    #[error("connection lost")]
    ConnectionLost,
}

/// What the driver must know or do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Greeting and EHLO (and STARTTLS with the second EHLO) are done: transactions
    /// may be enqueued. Emitted once.
    Ready(Capabilities),
    /// Do the TLS handshake on the socket now, then call [`Session::tls_established`].
    /// No bytes are produced or accepted until then.
    StartTls,
    /// A transaction finished; one per enqueued transaction, in enqueue order.
    TransactionDone(TransactionResult),
    /// The session is over; write any remaining output, then close the socket.
    Closed(CloseReason),
}

/// What the session is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ExpectGreeting,
    ExpectEhlo,
    ExpectHelo,
    ExpectStartTls,
    /// STARTTLS accepted; the driver is doing the handshake.
    AwaitTls,
    /// Transactions flow; replies are matched against `Session::expects`.
    Ready,
    /// QUIT sent; whatever comes next ends the session.
    ExpectQuit,
    Closed,
}

/// A client SMTP session on one connection: greeting, EHLO (HELO fallback), STARTTLS,
/// any number of transactions (pipelined when possible), QUIT.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    caps: Capabilities,
    ready: bool,
    tls_active: bool,
    input: BytesMut,
    /// What to write after `ahead`: commands, and bodies that had to be copied.
    output: BytesMut,
    /// What to write first, in order: earlier output and the message bodies sent
    /// as they are, shared with their transactions rather than copied.
    ahead: VecDeque<Bytes>,
    events: VecDeque<Event>,
    /// Replies owed by the server, oldest first.
    expects: VecDeque<Expect>,
    /// Enqueued transactions whose `TransactionDone` is not emitted yet, in order.
    txs: VecDeque<TxState>,
    next_seq: u64,
    /// The server may hold the envelope of the last transaction written.
    dirty: bool,
    /// The last transaction whose MAIL was written, if no RSET followed it.
    last_written: Option<u64>,
    quit_requested: bool,
    /// Set when the session must end after what is in flight; closes with it.
    failure: Option<SessionError>,
}

impl Session {
    /// A session on a freshly connected socket; it waits for the server's greeting.
    pub fn new(mut config: SessionConfig) -> Session {
        config.helo_name.retain(|c| !c.is_control() && c != ' ');
        Session {
            config,
            state: State::ExpectGreeting,
            caps: Capabilities::default(),
            ready: false,
            tls_active: false,
            input: BytesMut::new(),
            output: BytesMut::new(),
            ahead: VecDeque::new(),
            events: VecDeque::new(),
            expects: VecDeque::new(),
            txs: VecDeque::new(),
            next_seq: 0,
            dirty: false,
            last_written: None,
            quit_requested: false,
            failure: None,
        }
    }

    /// Takes bytes read from the server, in any chunking: half a reply, several
    /// replies at once. Ignored once the session is closed.
    pub fn feed(&mut self, input: &[u8]) {
        match self.state {
            State::Closed => return,
            State::AwaitTls => {
                if !input.is_empty() {
                    self.fail_protocol("server sent plaintext during the TLS handshake".into());
                }
                return;
            }
            _ => {}
        }
        self.input.extend_from_slice(input);
        let max_line = self.config.max_line.max(512);
        while !matches!(self.state, State::Closed | State::AwaitTls) && !self.input.is_empty() {
            match parse_reply_limited(&self.input, max_line) {
                Ok(Parse::Incomplete) => break,
                Ok(Parse::Complete(reply, used)) => {
                    self.input.advance(used);
                    self.handle_reply(reply);
                }
                Err(err) => self.fail(SessionError::MalformedReply(err)),
            }
        }
    }

    /// The next event, if any. Poll until `None` after each call that changes state.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the server, as one buffer. The driver writes all of them
    /// in one write (one pipelined group) and then clears or advances the buffer.
    /// Message bodies waiting to be written as they are get copied into it here;
    /// [`Session::take_output`] hands them over without copying.
    pub fn output(&mut self) -> &mut BytesMut {
        if !self.ahead.is_empty() {
            let len = self.ahead.iter().map(Bytes::len).sum::<usize>() + self.output.len();
            let mut all = BytesMut::with_capacity(len);
            for chunk in self.ahead.drain(..) {
                all.put_slice(&chunk);
            }
            all.put_slice(&self.output);
            self.output = all;
        }
        &mut self.output
    }

    /// Moves the bytes to write to the server into `out`, in order, as chunks to
    /// write with one vectored write: a message body that needs no dot-stuffing
    /// is the transaction's own buffer, not a copy.
    pub fn take_output(&mut self, out: &mut Vec<Bytes>) {
        out.extend(self.ahead.drain(..));
        if !self.output.is_empty() {
            out.push(self.output.split().freeze());
        }
    }

    /// Whether there is anything to write.
    pub fn has_output(&self) -> bool {
        !self.ahead.is_empty() || !self.output.is_empty()
    }

    /// Queues a transaction; its commands are written as soon as the protocol allows.
    /// Only after [`Event::Ready`]; refused (handed back) before that and once the
    /// session is quitting or closed.
    ///
    /// Pipelining has no depth limit here: the driver bounds it with
    /// [`Session::in_flight`].
    pub fn enqueue(&mut self, tx: Transaction) -> Result<(), Transaction> {
        if self.state != State::Ready || self.quit_requested || self.failure.is_some() {
            return Err(tx);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.txs
            .push_back(TxState::prepare(seq, tx, &self.caps, &self.config));
        self.emit_finished();
        self.pump();
        Ok(())
    }

    /// Transactions enqueued whose [`Event::TransactionDone`] has not been emitted.
    pub fn in_flight(&self) -> usize {
        self.txs.len()
    }

    /// The driver finished the TLS handshake after [`Event::StartTls`]: the session
    /// sends EHLO again and re-reads the capabilities. Ignored in any other state.
    pub fn tls_established(&mut self) {
        if self.state != State::AwaitTls {
            return;
        }
        // Nothing read before the handshake may be trusted after it (RFC 3207 §4.2).
        self.input.clear();
        self.tls_active = true;
        self.caps = Capabilities::default();
        self.send_hello(b"EHLO ", State::ExpectEhlo);
    }

    /// Ends the session politely: once nothing is in flight (and the handshake, if
    /// still under way, is done), QUIT is sent, and the reply (or the connection
    /// closing) gives [`CloseReason::Quit`]. Transactions can no longer be enqueued.
    /// To abandon a session at once, drop the connection and call
    /// [`Session::connection_lost`].
    pub fn quit(&mut self) {
        if matches!(self.state, State::Closed | State::ExpectQuit) {
            return;
        }
        self.quit_requested = true;
        self.pump();
    }

    /// The driver lost the connection (read error, EOF, timeout). Every transaction in
    /// flight gets a local `451 4.4.2 connection lost` result at the stage it reached,
    /// then the session closes.
    pub fn connection_lost(&mut self) {
        match self.state {
            State::Closed => {}
            State::ExpectQuit => {
                let reason = self.quit_reason();
                self.fail_all(&connection_lost_reply(), true, None);
                self.close(reason);
            }
            _ => {
                let err = self.failure.take().unwrap_or(SessionError::ConnectionLost);
                self.abort(err, &connection_lost_reply(), true, None);
            }
        }
    }

    /// The session has ended ([`Event::Closed`] was emitted).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The server's capabilities, once [`Event::Ready`] has been emitted.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.ready.then_some(&self.caps)
    }

    /// How many transactions are worth having in flight, given the driver's
    /// limit `max`. With BDAT (CHUNKING) every message can be sent without
    /// waiting, so `max`. With DATA each body waits for its `354`: one message is
    /// answered while the next one's envelope goes out behind the first one's
    /// body, so 2 keep the socket busy; more would only be rendered early and sit
    /// in memory, going cold in the cache before they are sent. Without
    /// PIPELINING, 1. Only meaningful after [`Event::Ready`].
    pub fn useful_depth(&self, max: usize) -> usize {
        let depth = if !self.pipelining() {
            1
        } else if self.config.chunking && self.caps.chunking {
            max
        } else {
            2
        };
        depth.min(max).max(1)
    }

    /// The connection went through STARTTLS.
    pub fn is_tls(&self) -> bool {
        self.tls_active
    }

    fn pipelining(&self) -> bool {
        self.config.pipelining && self.caps.pipelining
    }

    /// Where transaction `seq` is in `txs`: sequence numbers there are consecutive.
    fn tx_index(&self, seq: u64) -> Option<usize> {
        let front = self.txs.front()?.seq;
        let index = usize::try_from(seq.checked_sub(front)?).ok()?;
        (self.txs.get(index)?.seq == seq).then_some(index)
    }

    fn handle_reply(&mut self, reply: Reply) {
        match self.state {
            State::Closed | State::AwaitTls => {}
            State::ExpectQuit => {
                let reason = self.quit_reason();
                self.close(reason);
            }
            State::ExpectGreeting => self.on_greeting(reply),
            _ if reply.code == 421 => {
                let answered = self.expects.front().copied();
                self.abort(
                    SessionError::ServiceClosing(reply.clone()),
                    &reply,
                    false,
                    answered,
                );
            }
            State::ExpectEhlo => self.on_ehlo(reply),
            State::ExpectHelo => self.on_helo(reply),
            State::ExpectStartTls => self.on_starttls(reply),
            State::Ready => match self.expects.pop_front() {
                Some(expect) => {
                    self.on_transaction_reply(expect, reply);
                    self.pump();
                }
                None => self.fail_protocol(format!("reply when none was expected: {reply}")),
            },
        }
    }

    fn on_greeting(&mut self, reply: Reply) {
        if reply.is_positive_completion() {
            self.send_hello(b"EHLO ", State::ExpectEhlo);
        } else if reply.code == 421 {
            self.close(CloseReason::Failed(SessionError::Greeting(reply)));
        } else {
            // RFC 5321 §3.1: after a 554 greeting the client should still send QUIT.
            self.quit_with(SessionError::Greeting(reply));
        }
    }

    fn on_ehlo(&mut self, reply: Reply) {
        if reply.is_positive_completion() {
            self.caps = Capabilities::from_ehlo(&reply);
            self.after_hello();
        } else if reply.is_permanent() {
            // 500/502: an RFC 821 server. HELO, and no extensions.
            self.send_hello(b"HELO ", State::ExpectHelo);
        } else {
            self.quit_with(SessionError::Ehlo(reply));
        }
    }

    fn on_helo(&mut self, reply: Reply) {
        if reply.is_positive_completion() {
            self.caps = Capabilities::default();
            self.after_hello();
        } else {
            self.quit_with(SessionError::Ehlo(reply));
        }
    }

    fn after_hello(&mut self) {
        if !self.tls_active && self.config.tls != TlsMode::Disabled {
            if self.caps.starttls {
                self.output.put_slice(b"STARTTLS\r\n");
                self.state = State::ExpectStartTls;
                return;
            }
            if self.config.tls == TlsMode::Required {
                self.quit_with(SessionError::TlsRequiredButNotOffered);
                return;
            }
        }
        self.become_ready();
    }

    fn on_starttls(&mut self, reply: Reply) {
        if reply.is_positive_completion() {
            if !self.input.is_empty() {
                // Bytes after the 220 arrived in plaintext: an injection attempt.
                self.fail_protocol("server sent bytes after its STARTTLS reply".into());
                return;
            }
            self.state = State::AwaitTls;
            self.events.push_back(Event::StartTls);
        } else if self.config.tls == TlsMode::Required {
            self.quit_with(SessionError::StartTls(reply));
        } else {
            tracing::debug!(%reply, "STARTTLS refused; continuing in plaintext");
            self.become_ready();
        }
    }

    fn become_ready(&mut self) {
        self.state = State::Ready;
        self.ready = true;
        self.events.push_back(Event::Ready(self.caps.clone()));
        self.pump();
    }

    fn send_hello(&mut self, verb: &[u8], next: State) {
        self.output.put_slice(verb);
        self.output.put_slice(self.config.helo_name.as_bytes());
        self.output.put_slice(b"\r\n");
        self.state = next;
    }

    fn on_transaction_reply(&mut self, expect: Expect, reply: Reply) {
        let lockstep = !self.pipelining();
        let Some(seq) = expect.seq() else {
            if !reply.is_positive_completion() {
                self.drain_with(SessionError::Rset(reply));
            }
            return;
        };
        let Some(index) = self.tx_index(seq) else {
            return;
        };
        let tx = &mut self.txs[index];
        tx.outstanding = tx.outstanding.saturating_sub(1);
        match expect {
            Expect::Mail(_) => {
                let accepted = reply.is_positive_completion();
                if !accepted {
                    for slot in tx.slots.iter_mut().filter(|s| matches!(s, Slot::Pending)) {
                        *slot = Slot::Done {
                            reply: reply.clone(),
                            stage: Stage::Mail,
                            local: false,
                        };
                    }
                }
                tx.mail = Some(reply);
                if accepted && lockstep {
                    tx.put_next_lockstep(&mut self.output, &mut self.expects);
                }
            }
            Expect::Rcpt(_, i) => {
                if let Some(slot) = tx.slots.get_mut(i).filter(|s| matches!(s, Slot::Pending)) {
                    if reply.is_positive_completion() {
                        *slot = Slot::Accepted;
                        tx.accepted += 1;
                    } else {
                        *slot = Slot::Done {
                            reply,
                            stage: Stage::Rcpt,
                            local: false,
                        };
                    }
                }
                if lockstep && tx.mail_accepted() {
                    tx.put_next_lockstep(&mut self.output, &mut self.expects);
                }
            }
            Expect::Data(_) => {
                if reply.is_intermediate() {
                    if tx.accepted > 0 && tx.tx.crlf_only && sendable_as_is(&tx.tx.body) {
                        // Shared, not copied: what is queued moves ahead of it.
                        if !self.output.is_empty() {
                            self.ahead.push_back(self.output.split().freeze());
                        }
                        self.ahead.push_back(tx.tx.body.clone());
                        self.output.put_slice(b".\r\n");
                    } else if tx.accepted > 0 {
                        dot_stuff_into(&tx.tx.body, &mut self.output);
                    } else {
                        // 354 with no accepted recipient (RFC 2920 §3.1): end the
                        // data at once; the server will refuse it.
                        self.output.put_slice(b".\r\n");
                    }
                    tx.outstanding += 1;
                    self.expects.push_back(Expect::DataEnd(seq));
                } else {
                    tx.data = Some(reply);
                }
            }
            Expect::DataEnd(_) => {
                tx.cleared = true;
                tx.data = Some(reply);
            }
            Expect::Bdat(_) => {
                tx.cleared = reply.is_positive_completion();
                tx.data = Some(reply);
            }
            Expect::Rset => {}
        }
        self.finish_if_done(seq);
    }

    fn finish_if_done(&mut self, seq: u64) {
        let last_written = self.last_written;
        let Some(index) = self.tx_index(seq) else {
            return;
        };
        let tx = &mut self.txs[index];
        if tx.finished || tx.outstanding > 0 {
            return;
        }
        tx.finished = true;
        if tx.mail_accepted() && !tx.cleared && last_written == Some(seq) {
            self.dirty = true;
        }
        self.emit_finished();
    }

    /// Emits finished transactions from the front, keeping enqueue order.
    fn emit_finished(&mut self) {
        while self.txs.front().is_some_and(|t| t.finished) {
            if let Some(tx) = self.txs.pop_front() {
                self.events
                    .push_back(Event::TransactionDone(tx.into_result()));
            }
        }
    }

    /// Writes whatever the protocol allows now: the next transactions' commands,
    /// RSET where needed, QUIT when asked and idle.
    fn pump(&mut self) {
        if self.state != State::Ready {
            return;
        }
        let pipelining = self.pipelining();
        while let Some(index) = self.txs.iter().position(|t| !t.written && !t.finished) {
            let blocked = if pipelining {
                // RFC 2920: DATA ends a group; nothing follows it before the 354, so
                // a pending DATA is always the last reply expected.
                matches!(self.expects.back(), Some(Expect::Data(_)))
            } else {
                !self.expects.is_empty()
            };
            if blocked || self.failure.is_some() {
                break;
            }
            if self.needs_rset() {
                self.output.put_slice(b"RSET\r\n");
                self.expects.push_back(Expect::Rset);
                self.dirty = false;
                self.last_written = None;
                if !pipelining {
                    break;
                }
            }
            let tx = &mut self.txs[index];
            self.last_written = Some(tx.seq);
            tx.start(pipelining, &mut self.output, &mut self.expects);
        }
        let idle = self.txs.is_empty() && self.expects.is_empty();
        if idle && (self.quit_requested || self.failure.is_some()) {
            self.output.put_slice(b"QUIT\r\n");
            self.state = State::ExpectQuit;
        }
    }

    /// Whether the server may hold an envelope from the previous transaction: known
    /// (`dirty`), or possible because a pipelined BDAT transaction is still unanswered.
    fn needs_rset(&self) -> bool {
        if self.dirty {
            return true;
        }
        let Some(seq) = self.last_written else {
            return false;
        };
        self.tx_index(seq)
            .map(|i| &self.txs[i])
            .is_some_and(|t| !t.finished && t.use_bdat && !t.mail_refused())
    }

    /// Ends the session after what is in flight: nothing new is written, queued
    /// transactions get a local result, then QUIT.
    fn drain_with(&mut self, err: SessionError) {
        tracing::warn!(%err, "SMTP session unusable; finishing in-flight transactions");
        self.failure.get_or_insert(err);
        let reply = local_reply(451, (4, 3, 0), "not sent: the session became unusable");
        for tx in self.txs.iter_mut().filter(|t| !t.written && !t.finished) {
            for slot in tx.slots.iter_mut().filter(|s| matches!(s, Slot::Pending)) {
                *slot = Slot::Done {
                    reply: reply.clone(),
                    stage: Stage::Mail,
                    local: true,
                };
            }
            tx.finished = true;
        }
        self.emit_finished();
    }

    /// Gives every unfinished transaction `reply` at the stage it reached. `answered`
    /// is the command `reply` answers, if any, so its MAIL/data reply is recorded.
    fn fail_all(&mut self, reply: &Reply, local: bool, answered: Option<Expect>) {
        for tx in self.txs.iter_mut().filter(|t| !t.finished) {
            match answered {
                Some(Expect::Mail(s)) if s == tx.seq => tx.mail = Some(reply.clone()),
                Some(Expect::Data(s) | Expect::DataEnd(s) | Expect::Bdat(s)) if s == tx.seq => {
                    tx.data = Some(reply.clone());
                }
                _ => {}
            }
            let mail_accepted = tx.mail_accepted();
            for slot in tx.slots.iter_mut() {
                let stage = match slot {
                    Slot::Pending if mail_accepted => Stage::Rcpt,
                    Slot::Pending => Stage::Mail,
                    Slot::Accepted => Stage::Data,
                    Slot::Done { .. } => continue,
                };
                *slot = Slot::Done {
                    reply: reply.clone(),
                    stage,
                    local,
                };
            }
            tx.finished = true;
            tx.outstanding = 0;
        }
        self.expects.clear();
        self.emit_finished();
    }

    /// Fails everything in flight with `reply` and closes at once (no QUIT).
    fn abort(&mut self, err: SessionError, reply: &Reply, local: bool, answered: Option<Expect>) {
        tracing::debug!(%err, "SMTP session failed");
        self.fail_all(reply, local, answered);
        self.close(CloseReason::Failed(err));
    }

    /// The server broke the protocol: nothing it says can be matched to our commands
    /// any more, so close at once.
    fn fail(&mut self, err: SessionError) {
        if self.state == State::ExpectQuit {
            let reason = self.quit_reason();
            self.close(reason);
            return;
        }
        let reply = local_reply(451, (4, 5, 0), &format!("session failed: {err}"));
        self.abort(err, &reply, true, None);
    }

    fn fail_protocol(&mut self, message: String) {
        self.fail(SessionError::Protocol(message));
    }

    /// Before Ready: send QUIT and close with `err` when it is answered.
    fn quit_with(&mut self, err: SessionError) {
        self.failure = Some(err);
        self.output.put_slice(b"QUIT\r\n");
        self.state = State::ExpectQuit;
    }

    fn quit_reason(&mut self) -> CloseReason {
        self.failure
            .take()
            .map_or(CloseReason::Quit, CloseReason::Failed)
    }

    fn close(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.expects.clear();
        self.input.clear();
        self.events.push_back(Event::Closed(reason));
    }
}

mod transaction;

#[cfg(test)]
mod tests;
