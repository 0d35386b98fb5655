//! One client connection: the SMTP/LMTP state machine, generic over any byte stream, split
//! by phase:
//!
//! - this file: the run loop (reads, idle timeouts, shutdown) and the commands outside a
//!   transaction (HELO/EHLO/LHLO, XFORWARD, RSET, NOOP, QUIT ...);
//! - [`transaction`]: MAIL and RCPT, relayed to the next hop as they arrive, its answers
//!   mirrored, so a recipient the next hop refuses is refused to Postfix with the next hop's
//!   own code (no recipient is ever dropped silently, none is held back);
//! - [`delivery`]: after DATA, the filter's scan, the quarantine copies (durable, on a
//!   blocking thread), each part relayed, discarded or rejected, and the log lines;
//! - [`answer`]: the final reply to the client, a pure function of what happened: 250 only
//!   after the next hop said 250 for what was relayed.

mod answer;
mod delivery;
mod transaction;

use crate::smtp::budget::{Budget, Held};
use crate::smtp::codec::{Command, CommandError, Event, Limits};
use crate::smtp::connection::Connection;
use crate::smtp::envelope::{Recipient, Xforward};
use crate::smtp::filter::MessageFilter;
use crate::smtp::relay::{RelayConn, RelayPool};
use crate::smtp::reply::Reply;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use transaction::Transaction;

/// Session settings derived from the configuration.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name in the greeting and replies.
    pub hostname: String,
    /// Speak LMTP (LHLO, one reply per recipient after DATA).
    pub lmtp: bool,
    /// Codec limits.
    pub limits: Limits,
    /// Most recipients per transaction.
    pub max_recipients: usize,
    /// Idle limit while waiting for a command.
    pub command_timeout: Duration,
    /// Idle limit while receiving message content.
    pub data_timeout: Duration,
    /// Time budget for scanning one message.
    pub scan_budget: Duration,
    /// Message content must arrive at this many bytes per second at least, on average, once
    /// `data_timeout` has passed since 354 (Postfix's `smtpd_min_data_rate`); 0 = no floor.
    pub min_data_rate: u64,
    /// Errors (unknown, malformed or out-of-sequence commands) before the session is ended
    /// with 421 (Postfix's `smtpd_hard_error_limit`).
    pub hard_error_limit: usize,
}

/// One connection's state.
pub struct Session<S, F: MessageFilter> {
    conn: Connection<S>,
    cfg: Arc<SessionConfig>,
    pool: Arc<RelayPool>,
    filter: Arc<F>,
    shutdown: watch::Receiver<bool>,
    peer: SocketAddr,
    helo: Option<String>,
    xforward: Xforward,
    txn: Option<Transaction>,
    relay: Option<RelayConn>,
    /// Commands refused as the client's error so far.
    errors: usize,
    /// When the unfinished command line now in the buffer began to arrive.
    line_started: Option<Instant>,
    /// When 354 was sent, for the message's deadline.
    data_started: Option<Instant>,
    /// The memory budget for messages in flight, shared by all sessions.
    budget: Budget,
    /// What the message being received (or delivered) holds of it.
    held: Option<Held>,
}

enum Flow {
    Continue,
    Close,
}

impl<S, F> Session<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: MessageFilter,
{
    /// A session for an accepted connection from `peer`.
    pub fn new(
        stream: S,
        peer: SocketAddr,
        cfg: Arc<SessionConfig>,
        pool: Arc<RelayPool>,
        filter: Arc<F>,
        shutdown: watch::Receiver<bool>,
        budget: Budget,
    ) -> Self {
        Session {
            conn: Connection::new(stream, cfg.limits),
            cfg,
            pool,
            filter,
            shutdown,
            peer,
            helo: None,
            xforward: Xforward::default(),
            txn: None,
            relay: None,
            errors: 0,
            line_started: None,
            data_started: None,
            budget,
            held: None,
        }
    }

    /// Run the conversation to its end. I/O errors end the session; nothing is relayed
    /// for a transaction that did not finish.
    pub async fn run(mut self) -> std::io::Result<()> {
        self.reply(Reply::greeting(&self.cfg.hostname, self.cfg.lmtp));
        self.conn.flush().await?;
        loop {
            while let Some(event) = self.conn.next_event() {
                let flow = self.handle(event).await;
                if self.errors >= self.cfg.hard_error_limit {
                    self.reply(Reply::too_many_errors(&self.cfg.hostname));
                    self.conn.flush().await?;
                    self.close_relay().await;
                    return Ok(());
                }
                if let Flow::Close = flow {
                    self.conn.flush().await?;
                    self.close_relay().await;
                    return Ok(());
                }
            }
            self.conn.flush().await?;
            let in_data = self.conn.in_data();
            let until = self.read_deadline();
            let draining = *self.shutdown.borrow();
            let read = tokio::select! {
                r = tokio::time::timeout_at(until, self.conn.read()) => r,
                _ = self.shutdown.changed(), if !in_data && !draining => {
                    self.reply(Reply::shutting_down(&self.cfg.hostname));
                    self.conn.flush().await?;
                    self.close_relay().await;
                    return Ok(());
                }
            };
            match read {
                Err(_) => {
                    self.reply(Reply::timeout(&self.cfg.hostname));
                    let _ = self.conn.flush().await;
                    self.close_relay().await;
                    return Ok(());
                }
                Ok(Ok(0)) => {
                    // Client gone; an unfinished transaction is simply dropped (the next
                    // hop never received its content).
                    self.close_relay().await;
                    return Ok(());
                }
                Ok(Ok(_)) => self.hold_content(),
                Ok(Err(e)) => {
                    self.close_relay().await;
                    return Err(e);
                }
            }
        }
    }

    fn reply(&mut self, r: Reply) {
        self.conn.reply(r);
    }

    /// Keep the message being received within what it holds of the budget, growing the
    /// hold as content arrives; when the budget has no more, the message is abandoned (its
    /// end gets 451).
    fn hold_content(&mut self) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        let have = self.conn.data_bytes();
        if self.conn.in_data()
            && have > held.bytes()
            && !held.grow_to(have + transaction::FIRST_HOLD)
        {
            self.conn.abandon_data();
        }
    }

    /// Until when the next read may wait. Between commands: the idle limit. A command line
    /// that has begun must be complete within `command_timeout` of its first byte, however
    /// slowly it trickles. Message content: the idle limit per read, and the whole message
    /// within `data_timeout` plus one second per `min_data_rate` bytes received.
    fn read_deadline(&mut self) -> Instant {
        let now = Instant::now();
        if self.conn.in_data() {
            let idle = now + self.cfg.data_timeout;
            let started = *self.data_started.get_or_insert(now);
            self.line_started = None;
            if self.cfg.min_data_rate == 0 {
                return idle;
            }
            let allowance = self.conn.data_bytes() as f64 / self.cfg.min_data_rate as f64;
            let total = started + self.cfg.data_timeout + Duration::from_secs_f64(allowance);
            return idle.min(total);
        }
        self.data_started = None;
        let idle = now + self.cfg.command_timeout;
        if self.conn.has_partial_line() {
            let started = *self.line_started.get_or_insert(now);
            idle.min(started + self.cfg.command_timeout)
        } else {
            self.line_started = None;
            idle
        }
    }

    /// Refuse a command the client got wrong (unknown, malformed, out of sequence): one of
    /// the errors that, past `hard_error_limit`, end the session as Postfix's smtpd does.
    fn refuse(&mut self, r: Reply) {
        self.errors += 1;
        self.conn.reply(r);
    }

    async fn close_relay(&mut self) {
        if let Some(relay) = self.relay.take() {
            if self.txn.as_ref().is_some_and(|t| t.opened) {
                // Dropping the connection aborts the next hop's transaction.
                drop(relay);
            } else {
                self.pool.checkin(relay).await;
            }
        }
    }

    async fn handle(&mut self, event: Event) -> Flow {
        match event {
            Event::Command(Ok(cmd)) => self.command(cmd).await,
            Event::Command(Err(e)) => {
                self.refuse(match e {
                    CommandError::Unknown => Reply::unknown_command(),
                    CommandError::TooLong => Reply::command_too_long(),
                    CommandError::Syntax(s) => Reply::syntax(s),
                    CommandError::BadAddress(a) => Reply::bad_address(&a),
                    CommandError::BadParameter(p) => Reply::bad_parameter(&p),
                });
                Flow::Continue
            }
            Event::Message(m) => {
                self.message(m).await;
                Flow::Continue
            }
        }
    }

    async fn command(&mut self, cmd: Command) -> Flow {
        if *self.shutdown.borrow() {
            self.reply(Reply::shutting_down(&self.cfg.hostname));
            return Flow::Close;
        }
        let lmtp = self.cfg.lmtp;
        match cmd {
            Command::Helo(_) | Command::Ehlo(_) if lmtp => {
                self.refuse(Reply::bad_sequence("use LHLO (this is LMTP)"));
            }
            Command::Lhlo(_) if !lmtp => self.refuse(Reply::unknown_command()),
            Command::Helo(name) => {
                self.reset().await;
                self.helo = Some(name);
                self.reply(Reply::helo(&self.cfg.hostname));
            }
            Command::Ehlo(name) | Command::Lhlo(name) => {
                self.reset().await;
                self.helo = Some(name);
                self.reply(Reply::ehlo(
                    &self.cfg.hostname,
                    self.cfg.limits.max_message_size,
                ));
            }
            Command::Xforward(attrs) => {
                if self.txn.is_some() {
                    self.refuse(Reply::bad_sequence("MAIL transaction in progress"));
                } else {
                    for (k, v) in attrs {
                        self.xforward.set(k, v);
                    }
                    self.reply(Reply::ok());
                }
            }
            Command::Mail { from, params } => {
                let rcpts = self.buffered_rcpts();
                self.mail(from, params, rcpts).await
            }
            Command::Rcpt { to, params } => {
                let mut rcpts = vec![Recipient {
                    address: to,
                    params,
                }];
                rcpts.extend(self.buffered_rcpts());
                self.rcpts(rcpts).await
            }
            Command::Data => self.data(),
            Command::Rset => {
                self.reset().await;
                self.reply(Reply::ok());
            }
            Command::Noop => self.reply(Reply::ok()),
            Command::Vrfy => self.reply(Reply::vrfy()),
            Command::Help => self.reply(Reply::help()),
            Command::NotImplemented(_) => self.refuse(Reply::not_implemented()),
            Command::Quit => {
                self.reply(Reply::bye());
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    /// Abort any transaction, here and at the next hop.
    async fn reset(&mut self) {
        self.xforward = Xforward::default();
        if self.txn.take().is_some_and(|t| t.opened) {
            self.abort_relay().await;
        }
    }
}
