//! The envelope phase: MAIL, RCPT and DATA. The transaction is opened at the next hop with
//! its first recipients, in one write (XFORWARD, MAIL and the RCPTs): at MAIL when the
//! client pipelined RCPTs behind it, else at the first RCPT, so a client that waits for each
//! reply costs the next hop one round trip fewer. Each of the next hop's answers is mirrored
//! to the client, so the recipients that reach DATA are exactly those the next hop accepted;
//! a MAIL the next hop refuses after a MAIL answered here is that RCPT's answer (as Postfix's
//! `smtpd_delay_reject` does), and the next RCPT tries MAIL again.

use super::Session;
use crate::smtp::codec::{Command, Event};
use crate::smtp::envelope::{MailParams, Recipient};
use crate::smtp::filter::MessageFilter;
use crate::smtp::relay::{RelayConn, RelayError};
use crate::smtp::reply::Reply;
use tokio::io::{AsyncRead, AsyncWrite};

/// One transaction, from MAIL to the end of DATA.
pub(super) struct Transaction {
    pub(super) sender: String,
    pub(super) params: MailParams,
    /// Recipients the next hop accepted.
    pub(super) recipients: Vec<Recipient>,
    /// RCPT commands sent to the next hop so far (accepted or not).
    pub(super) attempted: usize,
    /// Set when the next hop failed mid-envelope: everything after tempfails.
    pub(super) broken: Option<String>,
    /// Whether the next hop has this transaction's MAIL (it waits for the first RCPT).
    pub(super) opened: bool,
}

impl<S, F> Session<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: MessageFilter,
{
    /// RCPT commands the client already pipelined after the current one, so they can go to
    /// the next hop in one write. The first other event is kept for the main loop.
    pub(super) fn buffered_rcpts(&mut self) -> Vec<Recipient> {
        let mut rcpts = vec![];
        while !self.conn.has_pushed_back() {
            match self.conn.next_event() {
                Some(Event::Command(Ok(Command::Rcpt { to, params }))) => rcpts.push(Recipient {
                    address: to,
                    params,
                }),
                Some(other) => self.conn.push_back(other),
                None => break,
            }
        }
        rcpts
    }

    pub(super) async fn mail(&mut self, from: String, params: MailParams, rcpts: Vec<Recipient>) {
        let refusal = if self.helo.is_none() {
            Some(Reply::bad_sequence("send HELO/EHLO first"))
        } else if self.txn.is_some() {
            Some(Reply::bad_sequence("nested MAIL command"))
        } else if params
            .size
            .is_some_and(|s| s > self.cfg.limits.max_message_size as u64)
        {
            Some(Reply::size_exceeded_declared())
        } else {
            None
        };
        if let Some(r) = refusal {
            self.refuse(r);
            return self.rcpts(rcpts).await;
        }
        if rcpts.is_empty() {
            // Nothing to send with it yet: MAIL goes to the next hop with the first RCPT.
            self.txn = Some(Transaction::new(from, params, false));
            return self.reply(Reply::sender_ok());
        }
        let (sendable, overflow) = split_at_limit(rcpts, self.cfg.max_recipients);
        let opened = self.open_transaction(&from, &params, &sendable).await;
        super::delivery::count_next_hop(opened.as_ref().map(|(r, _)| r));
        match opened {
            Ok((r, _)) if r.code == 421 => {
                // The next hop is closing the connection: nothing more goes there.
                self.relay = None;
                self.reply(Reply::next_hop_unavailable(
                    self.pool.label(),
                    &r.one_line(),
                ));
                self.rcpts(sendable).await;
                self.rcpts(overflow).await;
            }
            Ok((r, replies)) if r.is_positive() => {
                self.txn = Some(Transaction::new(from, params, true));
                self.reply(Reply::sender_ok());
                self.record_rcpts(sendable, Ok(replies), overflow);
            }
            Ok((r, _)) => {
                self.reply(Reply::from_next_hop(self.pool.label(), &r));
                // The next hop refused the transaction: the recipients get what they would
                // get without one.
                self.rcpts(sendable).await;
                self.rcpts(overflow).await;
            }
            Err(e) => {
                tracing::warn!(next_hop = %self.pool.label(), error = %e, "next hop unavailable at MAIL");
                self.reply(Reply::next_hop_unavailable(
                    self.pool.label(),
                    &e.to_string(),
                ));
                self.rcpts(sendable).await;
                self.rcpts(overflow).await;
            }
        }
    }

    /// XFORWARD, MAIL and the known RCPTs at the next hop, on this session's connection, else
    /// a pooled one, else a fresh one. A reused connection may have been closed by the next
    /// hop while idle, or be in a state it refuses: a MAIL that fails or tempfails on it is
    /// tried once more on a fresh connection, whose answer stands.
    pub(super) async fn open_transaction(
        &mut self,
        from: &str,
        params: &MailParams,
        rcpts: &[Recipient],
    ) -> Result<(Reply, Vec<Reply>), RelayError> {
        let reused = self
            .relay
            .take()
            .filter(RelayConn::is_usable)
            .or_else(|| self.pool.checkout());
        if let Some(mut conn) = reused {
            match conn.mail(&self.xforward, from, params, rcpts).await {
                Ok((r, replies)) if !r.is_transient() => {
                    self.relay = Some(conn);
                    return Ok((r, replies));
                }
                Ok((r, _)) => tracing::debug!(
                    reply = %r.one_line(),
                    "MAIL tempfailed on a reused next-hop connection; trying a fresh one"
                ),
                Err(e) => tracing::debug!(
                    error = %e,
                    "reused next-hop connection failed at MAIL; trying a fresh one"
                ),
            }
        }
        let mut conn = self.pool.connect().await?;
        let opened = conn.mail(&self.xforward, from, params, rcpts).await?;
        self.relay = Some(conn);
        Ok(opened)
    }

    /// RCPT commands inside (or outside) a transaction.
    pub(super) async fn rcpts(&mut self, rcpts: Vec<Recipient>) {
        if rcpts.is_empty() {
            return;
        }
        let Some(txn) = self.txn.as_ref() else {
            for _ in rcpts {
                self.refuse(Reply::bad_sequence("need MAIL command"));
            }
            return;
        };
        if let Some(why) = &txn.broken {
            let r = Reply::next_hop_unavailable(self.pool.label(), why);
            for _ in rcpts {
                self.reply(r.clone());
            }
            return;
        }
        let room = self.cfg.max_recipients.saturating_sub(txn.attempted);
        let (sendable, overflow) = split_at_limit(rcpts, room);
        if !txn.opened && !sendable.is_empty() {
            return self.open_at_rcpt(sendable, overflow).await;
        }
        let replies = match self.relay.as_mut() {
            Some(relay) if !sendable.is_empty() => relay.rcpts(&sendable).await,
            Some(_) => Ok(vec![]),
            None => Err(RelayError::Protocol("connection lost".into())),
        };
        self.record_rcpts(sendable, replies, overflow);
    }

    /// The first RCPTs of a transaction whose MAIL was answered here: XFORWARD, MAIL and
    /// these RCPTs at the next hop in one write. A refused MAIL is each RCPT's answer.
    async fn open_at_rcpt(&mut self, sendable: Vec<Recipient>, overflow: Vec<Recipient>) {
        let Some(txn) = self.txn.as_ref() else {
            return;
        };
        let (from, params) = (txn.sender.clone(), txn.params.clone());
        let opened = self.open_transaction(&from, &params, &sendable).await;
        super::delivery::count_next_hop(opened.as_ref().map(|(r, _)| r));
        let hop = self.pool.label().to_string();
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let answer = match opened {
            Ok((r, replies)) if r.is_positive() => {
                txn.opened = true;
                return self.record_rcpts(sendable, Ok(replies), overflow);
            }
            Ok((r, _)) if r.code == 421 => {
                self.relay = None;
                txn.broken = Some(r.one_line());
                Reply::next_hop_unavailable(&hop, &r.one_line())
            }
            Ok((r, _)) => Reply::from_next_hop(&hop, &r),
            Err(e) => {
                tracing::warn!(next_hop = %hop, error = %e, "next hop unavailable at MAIL");
                self.relay = None;
                txn.broken = Some(e.to_string());
                Reply::next_hop_unavailable(&hop, &e.to_string())
            }
        };
        txn.attempted += sendable.len();
        for _ in &sendable {
            self.reply(answer.clone());
        }
        for _ in &overflow {
            self.reply(Reply::too_many_recipients());
        }
    }

    /// Mirror the next hop's answers to RCPT; accepted recipients join the transaction.
    fn record_rcpts(
        &mut self,
        sent: Vec<Recipient>,
        replies: Result<Vec<Reply>, RelayError>,
        overflow: Vec<Recipient>,
    ) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let hop = self.pool.label().to_string();
        txn.attempted += sent.len();
        let mut out = Vec::with_capacity(sent.len() + overflow.len());
        match replies {
            Ok(replies) => {
                for (rcpt, r) in sent.into_iter().zip(replies) {
                    if let Some(why) = &txn.broken {
                        out.push(Reply::next_hop_unavailable(&hop, why));
                    } else if r.code == 421 {
                        // The next hop is closing the connection: this recipient and
                        // everything after it in the transaction tempfail.
                        tracing::warn!(next_hop = %hop, reply = %r.one_line(), "next hop closing at RCPT");
                        self.relay = None;
                        txn.broken = Some(r.one_line());
                        out.push(Reply::next_hop_unavailable(&hop, &r.one_line()));
                    } else if r.is_positive() {
                        txn.recipients.push(rcpt);
                        out.push(Reply::recipient_ok());
                    } else {
                        out.push(Reply::from_next_hop(&hop, &r));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(next_hop = %hop, error = %e, "next hop failed at RCPT");
                self.relay = None;
                txn.broken = Some(e.to_string());
                let r = Reply::next_hop_unavailable(&hop, &e.to_string());
                out.extend(sent.iter().map(|_| r.clone()));
            }
        }
        out.extend(overflow.iter().map(|_| Reply::too_many_recipients()));
        for r in out {
            self.reply(r);
        }
    }

    /// DATA: 354 when the transaction has a recipient the next hop accepted.
    pub(super) fn data(&mut self) {
        let reply = match &self.txn {
            None => return self.refuse(Reply::bad_sequence("need MAIL command")),
            Some(t) if t.broken.is_some() => {
                let why = t.broken.clone().unwrap_or_default();
                Reply::next_hop_unavailable(self.pool.label(), &why)
            }
            Some(t) if t.recipients.is_empty() && t.attempted == 0 => {
                return self.refuse(Reply::bad_sequence("need RCPT command"));
            }
            Some(t) if t.recipients.is_empty() => Reply::no_valid_recipients(),
            Some(t) => {
                let size = t.params.size;
                // The declared size, or a first slice that grows as content arrives.
                let Some(held) = self.budget.try_hold(size.unwrap_or(FIRST_HOLD)) else {
                    tracing::warn!(
                        declared = size,
                        free = self.budget.available(),
                        "memory budget for messages in flight used up; DATA answered 452"
                    );
                    return self.reply(Reply::insufficient_storage(452));
                };
                self.held = Some(held);
                self.conn.begin_data(size);
                Reply::start_data()
            }
        };
        self.reply(reply);
    }
}

impl Transaction {
    fn new(sender: String, params: MailParams, opened: bool) -> Transaction {
        Transaction {
            sender,
            params,
            recipients: vec![],
            attempted: 0,
            broken: None,
            opened,
        }
    }
}

/// What a message without a declared size holds of the budget at DATA; more is taken as
/// its content arrives.
pub(super) const FIRST_HOLD: u64 = 1024 * 1024;

/// The first `limit` recipients, and the rest.
fn split_at_limit(mut rcpts: Vec<Recipient>, limit: usize) -> (Vec<Recipient>, Vec<Recipient>) {
    let rest = rcpts.split_off(limit.min(rcpts.len()));
    (rcpts, rest)
}
