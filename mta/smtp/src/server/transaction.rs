//! The mail transaction half of [`Session`]: MAIL, RCPT, DATA, BDAT and the end of
//! a message (refused for a content flaw, or handed to the driver).

use tracing::warn;

use super::body::{BodyReader, Flaw};
use super::command::MailParams;
use super::{CloseReason, Envelope, Event, Message, Refusal, Session, State, Transaction};
use crate::dsn::RcptDsn;

impl Session {
    pub(super) fn mail(&mut self, address: &str, params: MailParams) {
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Send EHLO first");
        }
        if self.tx.is_some() {
            return self.error(503, "5.5.1", "Nested MAIL command");
        }
        if !address.is_ascii() && !params.smtputf8 {
            return self.error(553, "5.6.7", "Non-ASCII address needs SMTPUTF8");
        }
        if let Some(size) = params.size.filter(|&s| s > self.settings.max_message_size) {
            warn!(client = %self.client_ip, from = address, size,
                limit = self.settings.max_message_size, "message too big (MAIL SIZE=)");
            return self.error(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
        }
        self.tx = Some(Transaction {
            mail_from: address.to_owned(),
            params,
            rcpt_to: Vec::new(),
            rcpt_dsn: Vec::new(),
            body: None,
            reservation: None,
        });
        self.reply(250, "2.1.0", "Ok");
    }

    pub(super) fn rcpt(&mut self, address: &str, dsn: RcptDsn) {
        let Some(tx) = self.tx.as_ref() else {
            return self.error(503, "5.5.1", "Need MAIL before RCPT");
        };
        if tx.body.is_some() {
            return self.error(503, "5.5.1", "RCPT not allowed after BDAT");
        }
        if !address.is_ascii() && !tx.params.smtputf8 {
            return self.error(553, "5.6.7", "Non-ASCII address needs SMTPUTF8");
        }
        if tx.rcpt_to.len() >= self.settings.max_recipients {
            warn!(client = %self.client_ip, from = %tx.mail_from, rcpt = address,
                limit = self.settings.max_recipients, "too many recipients");
            // Not counted as an error: a client sending a long list in one
            // pipelined group sees this many times.
            return self.reply(452, "4.5.3", "Too many recipients");
        }
        if !self
            .settings
            .relay
            .allows(self.client_ip, self.user.is_some(), address)
        {
            warn!(client = %self.client_ip, from = %tx.mail_from, rcpt = address,
                user = self.user.as_deref().unwrap_or(""), "relaying denied");
            return self.error(550, "5.7.1", "Relaying denied");
        }
        if let Some(verp) = &self.settings.verp {
            if let Err(error) = verp.verify(address) {
                warn!(client = %self.client_ip, from = %tx.mail_from, rcpt = address,
                    reason = %error, "forged VERP address refused");
                return self.error(550, "5.7.1", "Invalid VERP token in the recipient address");
            }
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.rcpt_to.push(address.to_owned());
            tx.rcpt_dsn.push(dsn);
        }
        self.reply(250, "2.1.5", "Ok");
    }

    pub(super) fn data(&mut self) {
        let Some(tx) = self.tx.as_mut() else {
            return self.error(503, "5.5.1", "Need MAIL before DATA");
        };
        if tx.body.is_some() {
            return self.error(503, "5.5.1", "DATA not allowed after BDAT");
        }
        if tx.rcpt_to.is_empty() {
            return self.error(554, "5.5.1", "No valid recipients");
        }
        let Some(limit) = self.reserve() else {
            return self.no_storage();
        };
        // Bytes after DATA in the same read were sent before our 354 could
        // arrive. Like Postfix's smtpd_forbid_unauth_pipelining, an
        // unauthenticated session ends here: nothing sent blind is taken as
        // content (the transaction and its reservation go with it).
        if !self.input.is_empty() && self.user.is_none() {
            warn!(client = %self.client_ip, "content sent before the 354 reply: session closed");
            self.tx = None;
            return self.close_with(
                554,
                "5.5.0",
                "Improper pipelining: content sent before the 354 reply to DATA",
                CloseReason::ImproperPipelining,
            );
        }
        let Some(tx) = self.tx.as_mut() else { return };
        tx.body = Some(BodyReader::new(true, limit));
        self.state = State::ExpectData;
        self.reply(354, "2.0.0", "End data with <CR><LF>.<CR><LF>");
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool) {
        let refused = match self.tx.as_mut() {
            None => Some(Refusal::Transaction),
            Some(tx) if tx.rcpt_to.is_empty() => Some(Refusal::Recipients),
            Some(tx) if tx.body.is_some() => None,
            Some(_) => match self.reserve() {
                Some(limit) => {
                    if let Some(tx) = self.tx.as_mut() {
                        tx.body = Some(BodyReader::new(false, limit));
                    }
                    None
                }
                None => Some(Refusal::Storage),
            },
        };
        self.state = State::ExpectChunk {
            left: size,
            last,
            refused,
        };
    }

    /// Reserves the content budget for the transaction's message: its
    /// declared `SIZE` if any, else the size limit. Answers the size the
    /// message may have, or `None` when the budget is used up.
    fn reserve(&mut self) -> Option<u64> {
        let max = self.settings.max_message_size;
        let tx = self.tx.as_mut()?;
        let limit = tx.params.size.map_or(max, |s| s.min(max));
        if let Some(budget) = &self.settings.content_budget {
            tx.reservation = Some(budget.try_reserve(limit)?);
        }
        Some(limit)
    }

    /// `452 4.3.1`: too much content held by all sessions; the transaction is
    /// kept, so the client may try DATA again or come back later.
    fn no_storage(&mut self) {
        warn!(client = %self.client_ip, "content budget used up: DATA refused for now");
        self.reply(
            452,
            "4.3.1",
            "Insufficient system storage: too many messages in transit, try again later",
        );
    }

    pub(super) fn end_of_chunk(&mut self, last: bool, refused: Option<Refusal>) {
        match refused {
            Some(Refusal::Transaction) => {
                return self.error(503, "5.5.1", "Need MAIL and RCPT before BDAT");
            }
            Some(Refusal::Recipients) => return self.error(554, "5.5.1", "No valid recipients"),
            Some(Refusal::Storage) => {
                // RFC 3030 §2: after a failed chunk the transaction is over (a
                // later chunk must not start a message missing this one).
                self.tx = None;
                return self.no_storage();
            }
            None => {}
        }
        let Some(reader) = self.tx.as_mut().and_then(|tx| tx.body.as_mut()) else {
            return self.error(503, "5.5.1", "Bad sequence of commands");
        };
        if last {
            reader.finish_chunks();
            return self.end_of_message();
        }
        let (flaw, size) = (reader.flaw(), reader.size());
        match flaw {
            // RFC 3030 §2: after a failed chunk the transaction is over; the
            // client sends RSET (or a new MAIL) and starts again.
            Some(flaw) => self.refuse_message(flaw, size),
            None => {
                let text = format!("{size} octets received");
                self.reply(250, "2.0.0", text);
            }
        }
    }

    /// The end of DATA or the last BDAT chunk: refuse a flawed message, hand a
    /// good one to the driver.
    pub(super) fn end_of_message(&mut self) {
        self.state = State::ExpectCommand;
        let Some(mut tx) = self.tx.take() else { return };
        let Some(reader) = tx.body.take() else { return };
        let size = reader.size();
        match reader.into_body() {
            Err(flaw) => {
                self.tx = Some(tx);
                self.refuse_message(flaw, size);
            }
            Ok(data) => {
                let (helo, esmtp) = self.helo.clone().unwrap_or_default();
                let envelope = Envelope {
                    mail_from: tx.mail_from,
                    rcpt_to: tx.rcpt_to,
                    eight_bit_mime: tx.params.eight_bit_mime,
                    smtputf8: tx.params.smtputf8,
                    client_ip: self.client_ip,
                    helo,
                    esmtp,
                    user: self.user.clone(),
                    tls: self.tls,
                    ret: tx.params.ret,
                    envid: tx.params.envid,
                    rcpt_dsn: tx.rcpt_dsn,
                };
                self.state = State::AwaitDeposit;
                self.depositing = tx.reservation.take();
                self.events
                    .push_back(Event::Message(Box::new(Message { envelope, data })));
            }
        }
    }

    /// Replies to a message whose content is refused and ends its transaction.
    fn refuse_message(&mut self, flaw: Flaw, size: u64) {
        let tx = self.tx.take();
        let from = tx.as_ref().map(|tx| tx.mail_from.as_str()).unwrap_or("");
        let rcpts = tx.as_ref().map_or(0, |tx| tx.rcpt_to.len());
        let (code, enhanced, text, reason) = match flaw {
            Flaw::TooBig => (
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
                "message too big",
            ),
            Flaw::BareLineEnd => (
                550,
                "5.6.0",
                "Message refused: bare CR or LF in message content (lines must end with CRLF)",
                "bare CR or LF",
            ),
            Flaw::Nul => (
                550,
                "5.6.0",
                "Message refused: NUL in message content",
                "NUL in content",
            ),
            Flaw::LineTooLong => (
                550,
                "5.6.0",
                "Message refused: line longer than 998 characters",
                "line too long",
            ),
        };
        warn!(client = %self.client_ip, from, rcpts, size,
            limit = self.settings.max_message_size, reason, "message refused");
        // Not counted as an error: the client kept to the protocol.
        self.reply(code, enhanced, text);
    }
}
