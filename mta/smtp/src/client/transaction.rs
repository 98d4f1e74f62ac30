//! One transaction's progress inside a [`Session`](super::Session): which recipients
//! are decided, which replies are still owed, and the commands it writes.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};

use super::{RcptResult, SessionConfig, Stage, Transaction, TransactionResult};
use crate::data::{normalize_crlf_into, normalized_len};
use crate::decimal::put_decimal;
use crate::ehlo::Capabilities;
use crate::reply::{Enhanced, Reply};

/// The reply a pipelined command is waiting for, by transaction sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Mail(u64),
    Rcpt(u64, usize),
    /// DATA, waiting for 354.
    Data(u64),
    /// The reply after the final dot.
    DataEnd(u64),
    /// The reply to `BDAT <n> LAST`.
    Bdat(u64),
    Rset,
}

impl Expect {
    pub(super) fn seq(self) -> Option<u64> {
        match self {
            Expect::Mail(s)
            | Expect::Rcpt(s, _)
            | Expect::Data(s)
            | Expect::DataEnd(s)
            | Expect::Bdat(s) => Some(s),
            Expect::Rset => None,
        }
    }
}

/// Where one recipient stands.
#[derive(Debug)]
pub(super) enum Slot {
    /// Not answered yet (or not sent yet).
    Pending,
    /// RCPT accepted; the data reply decides.
    Accepted,
    /// Decided.
    Done {
        reply: Reply,
        stage: Stage,
        local: bool,
    },
}

/// One enqueued transaction and how far it got.
#[derive(Debug)]
pub(super) struct TxState {
    /// Session-local sequence number; `Expect`s refer to it.
    pub(super) seq: u64,
    pub(super) tx: Transaction,
    pub(super) slots: Vec<Slot>,
    /// The body's length after CRLF normalization.
    size: usize,
    size_param: bool,
    eight_bit: bool,
    smtputf8: bool,
    pub(super) use_bdat: bool,
    /// MAIL has been written.
    pub(super) written: bool,
    /// Every reply is in (or the session ended); waiting to be emitted in order.
    pub(super) finished: bool,
    /// Lockstep: the next recipient whose RCPT to send.
    next_rcpt: usize,
    pub(super) accepted: usize,
    /// DATA or BDAT has been written.
    data_sent: bool,
    /// The server's answer ended the transaction (any end-of-data reply, or a positive
    /// `BDAT LAST` reply): it holds no envelope for us any more.
    pub(super) cleared: bool,
    /// Replies still expected for this transaction.
    pub(super) outstanding: usize,
    pub(super) mail: Option<Reply>,
    pub(super) data: Option<Reply>,
}

pub(super) fn local_reply(code: u16, enhanced: (u8, u16, u16), text: &str) -> Reply {
    Reply::new(
        code,
        Some(Enhanced::new(enhanced.0, enhanced.1, enhanced.2)),
        text,
    )
}

pub(super) fn connection_lost_reply() -> Reply {
    local_reply(451, (4, 4, 2), "connection lost")
}

/// Characters that would let an address break out of `<…>` or inject a command.
fn forbidden_in_address(addr: &str) -> bool {
    addr.bytes()
        .any(|b| matches!(b, b'\r' | b'\n' | b'<' | b'>'))
}

impl TxState {
    /// Checks the envelope against what the server offers; recipients (or the whole
    /// transaction) that cannot be sent are decided here with a local reply.
    pub(super) fn prepare(
        seq: u64,
        tx: Transaction,
        caps: &Capabilities,
        config: &SessionConfig,
    ) -> TxState {
        let size = if tx.crlf_only {
            tx.body.len()
        } else {
            normalized_len(&tx.body)
        };
        let size_limit = caps.size.unwrap_or(0);
        let sender_refusal = if forbidden_in_address(&tx.mail_from) {
            Some(local_reply(
                501,
                (5, 1, 7),
                "sender address contains CR, LF, '<' or '>'",
            ))
        } else if !tx.mail_from.is_ascii() && !caps.smtputf8 {
            Some(local_reply(
                553,
                (5, 6, 7),
                "non-ASCII sender and the server does not offer SMTPUTF8",
            ))
        } else if size_limit > 0 && size as u64 > size_limit {
            Some(local_reply(
                552,
                (5, 3, 4),
                "message larger than the server's SIZE limit",
            ))
        } else {
            None
        };
        let slots: Vec<Slot> = tx
            .rcpt_to
            .iter()
            .map(|rcpt| {
                let (reply, stage) = if let Some(refusal) = &sender_refusal {
                    (refusal.clone(), Stage::Mail)
                } else if forbidden_in_address(rcpt) {
                    let text = "recipient address contains CR, LF, '<' or '>'";
                    (local_reply(501, (5, 1, 3), text), Stage::Rcpt)
                } else if !rcpt.is_ascii() && !caps.smtputf8 {
                    let text = "non-ASCII recipient and the server does not offer SMTPUTF8";
                    (local_reply(553, (5, 6, 7), text), Stage::Rcpt)
                } else {
                    return Slot::Pending;
                };
                Slot::Done {
                    reply,
                    stage,
                    local: true,
                }
            })
            .collect();
        let sendable = slots.iter().any(|s| matches!(s, Slot::Pending));
        let non_ascii_address =
            !tx.mail_from.is_ascii() || tx.rcpt_to.iter().any(|r| !r.is_ascii());
        TxState {
            seq,
            size,
            size_param: caps.size.is_some(),
            eight_bit: caps.eight_bit_mime && !tx.body.is_ascii(),
            smtputf8: caps.smtputf8 && non_ascii_address,
            use_bdat: config.chunking && caps.chunking,
            written: false,
            finished: !sendable,
            next_rcpt: 0,
            accepted: 0,
            data_sent: false,
            cleared: false,
            outstanding: 0,
            mail: None,
            data: None,
            slots,
            tx,
        }
    }

    pub(super) fn mail_accepted(&self) -> bool {
        self.mail
            .as_ref()
            .is_some_and(Reply::is_positive_completion)
    }

    pub(super) fn mail_refused(&self) -> bool {
        self.mail
            .as_ref()
            .is_some_and(|r| !r.is_positive_completion())
    }

    /// Writes MAIL and, when pipelining, every RCPT and DATA or BDAT with the body:
    /// one group (RFC 2920). In lockstep the rest follows reply by reply.
    pub(super) fn start(
        &mut self,
        pipelining: bool,
        out: &mut BytesMut,
        expects: &mut VecDeque<Expect>,
    ) {
        self.written = true;
        self.put_mail(out);
        self.outstanding += 1;
        expects.push_back(Expect::Mail(self.seq));
        if !pipelining {
            return;
        }
        for i in 0..self.slots.len() {
            if matches!(self.slots[i], Slot::Pending) {
                self.put_rcpt(i, out);
                self.outstanding += 1;
                expects.push_back(Expect::Rcpt(self.seq, i));
            }
        }
        self.next_rcpt = self.slots.len();
        let expect = self.put_data_command(out);
        expects.push_back(expect);
    }

    /// MAIL, with parameters.
    fn put_mail(&self, out: &mut BytesMut) {
        out.put_slice(b"MAIL FROM:<");
        out.put_slice(self.tx.mail_from.as_bytes());
        out.put_u8(b'>');
        if self.size_param {
            out.put_slice(b" SIZE=");
            put_decimal(out, self.size as u64, 0);
        }
        if self.eight_bit {
            out.put_slice(b" BODY=8BITMIME");
        }
        if self.smtputf8 {
            out.put_slice(b" SMTPUTF8");
        }
        out.put_slice(b"\r\n");
    }

    /// RCPT for recipient `i`.
    fn put_rcpt(&self, i: usize, out: &mut BytesMut) {
        out.put_slice(b"RCPT TO:<");
        out.put_slice(self.tx.rcpt_to[i].as_bytes());
        out.put_slice(b">\r\n");
    }

    /// `BDAT <n> LAST` with the whole body, or `DATA`; returns what to expect.
    fn put_data_command(&mut self, out: &mut BytesMut) -> Expect {
        self.data_sent = true;
        self.outstanding += 1;
        if self.use_bdat {
            out.put_slice(b"BDAT ");
            put_decimal(out, self.size as u64, 0);
            out.put_slice(b" LAST\r\n");
            if self.tx.crlf_only {
                out.put_slice(&self.tx.body);
            } else {
                normalize_crlf_into(&self.tx.body, out);
            }
            Expect::Bdat(self.seq)
        } else {
            out.put_slice(b"DATA\r\n");
            Expect::Data(self.seq)
        }
    }

    /// Lockstep: writes the next RCPT, or DATA/BDAT once every RCPT is answered and at
    /// least one was accepted. Writes nothing when the transaction is over.
    pub(super) fn put_next_lockstep(&mut self, out: &mut BytesMut, expects: &mut VecDeque<Expect>) {
        while self.next_rcpt < self.slots.len() {
            let i = self.next_rcpt;
            self.next_rcpt += 1;
            if matches!(self.slots[i], Slot::Pending) {
                self.put_rcpt(i, out);
                self.outstanding += 1;
                expects.push_back(Expect::Rcpt(self.seq, i));
                return;
            }
        }
        if !self.data_sent && self.accepted > 0 {
            let expect = self.put_data_command(out);
            expects.push_back(expect);
        }
    }

    pub(super) fn into_result(self) -> TransactionResult {
        let TxState {
            tx,
            slots,
            mail,
            data,
            ..
        } = self;
        let unanswered = || local_reply(451, (4, 3, 0), "no reply for this recipient");
        let rcpts = tx
            .rcpt_to
            .into_iter()
            .zip(slots)
            .map(|(rcpt, slot)| {
                let (reply, stage, local) = match slot {
                    Slot::Done {
                        reply,
                        stage,
                        local,
                    } => (reply, stage, local),
                    Slot::Accepted => match &data {
                        Some(reply) => (reply.clone(), Stage::Data, false),
                        None => (unanswered(), Stage::Data, true),
                    },
                    Slot::Pending => (unanswered(), Stage::Mail, true),
                };
                RcptResult {
                    rcpt,
                    reply,
                    stage,
                    local,
                }
            })
            .collect();
        TransactionResult {
            id: tx.id,
            mail,
            rcpts,
            data,
            body: tx.body,
        }
    }
}
