//! One client connection: the SMTP/LMTP state machine, generic over any byte stream.
//!
//! The envelope is relayed as it arrives: MAIL and each RCPT are forwarded to the next hop
//! and its answer is mirrored, so a recipient the next hop refuses is refused to Postfix with
//! the next hop's own code (no recipient is ever dropped silently, none is held back). After
//! DATA the filter scans the message and says what to do with each group of recipients
//! (a [`Disposition`]): quarantine copies are written first (durably, on a blocking thread),
//! then each group is relayed, discarded or rejected, and the client hears 250 only after the
//! next hop said 250 for what was relayed. Groups with different outcomes get separate
//! next-hop transactions; in SMTP mode one reply covers them all (see `deliver`), in LMTP
//! mode each recipient gets its own.

use crate::smtp::codec::{Command, CommandError, DataError, Decoder, Event, Limits};
use crate::smtp::envelope::{Envelope, MailParams, Recipient, Xforward};
use crate::smtp::relay::{RelayConn, RelayError, RelayPool};
use crate::smtp::reply::Reply;
use crate::smtp::rewrite::Rewrite;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

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
}

/// What happened to (a part of) a message after DATA, for the log line.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The next hop accepted it.
    Relayed {
        /// The queue id from the next hop's reply, when it said one.
        queued_as: Option<String>,
    },
    /// Accepted and deliberately not delivered (policy).
    Discarded,
    /// Refused permanently, by the next hop (its reply is mirrored) or by policy.
    Rejected(Reply),
    /// Not delivered; the client was told to try again.
    TempFailed(String),
}

/// What the filter wants done with one group of recipients.
#[derive(Debug, Clone)]
pub enum Action {
    /// Relay the message, rewritten.
    Relay(Rewrite),
    /// Accept and do not deliver.
    Discard,
    /// Refuse with this reply (in SMTP mode only when every recipient is refused; see
    /// [`Session`]).
    Reject(Reply),
}

/// One group of recipients with one action.
#[derive(Debug, Clone)]
pub struct Part {
    /// Indices into the envelope's recipients.
    pub recipients: Vec<usize>,
    /// What to do.
    pub action: Action,
    /// Keep a durable quarantine copy before answering.
    pub quarantine: bool,
}

/// The filter's answer for one message: a verdict for the log and the parts. Parts with
/// different actions are carried out as separate next-hop transactions.
#[derive(Debug, Clone)]
pub struct Disposition<V> {
    /// What the filter found, kept for the log lines.
    pub verdict: V,
    /// The recipient groups; every accepted recipient is in exactly one.
    pub parts: Vec<Part>,
}

/// The filter a session calls after DATA. Implemented by the pipeline; the session knows
/// nothing of checks or verdicts.
pub trait MessageFilter: Send + Sync + 'static {
    /// What the filter found, kept for the log line.
    type Verdict: Send + Sync + 'static;
    /// What the network-bound step before the scan found (sender authentication).
    type Prepared: Send + Sync + 'static;

    /// Network-bound work before the scan (DNS for SPF, DKIM, DMARC, ARC). Runs on the
    /// session's task and must bound its own time.
    fn prepare(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> impl std::future::Future<Output = Self::Prepared> + Send;

    /// Scan one message and say what to do with it. Runs on a blocking thread.
    fn scan(
        &self,
        envelope: &Envelope,
        message: &[u8],
        mail_id: &str,
        prepared: &Self::Prepared,
    ) -> Result<Disposition<Self::Verdict>, String>;

    /// True when scanning a message of `size` bytes is cheap enough (tens of microseconds)
    /// to run right on the session's task; handing it to a blocking thread costs more than
    /// the scan then. Heavy work (big messages, models) goes to the blocking pool.
    fn scan_inline(&self, size: usize, prepared: &Self::Prepared) -> bool {
        let _ = (size, prepared);
        false
    }

    /// Store a durable copy of the message for `recipients` (indices into the envelope)
    /// and return its quarantine id. Runs on a blocking thread before the client hears
    /// anything; an error makes the whole message 451.
    fn quarantine(
        &self,
        envelope: &Envelope,
        message: &[u8],
        mail_id: &str,
        verdict: &Self::Verdict,
        recipients: &[usize],
    ) -> Result<String, String> {
        let _ = (envelope, message, mail_id, verdict, recipients);
        Err("no quarantine is configured".into())
    }

    /// Remove a quarantine copy again: the client was told to retry, and will bring the
    /// message back.
    fn unquarantine(&self, id: &str) {
        let _ = id;
    }

    /// Log the final outcome of one part of a message (one line per part).
    fn log(&self, record: &MessageRecord<'_, Self::Verdict>);
}

/// Everything the log line of one part of a message needs.
#[derive(Debug)]
pub struct MessageRecord<'a, V> {
    /// The envelope as accepted.
    pub envelope: &'a Envelope,
    /// The id filterd gave the message.
    pub mail_id: &'a str,
    /// The message size in bytes, as received.
    pub size: usize,
    /// The verdict, when the scan finished.
    pub verdict: Option<&'a V>,
    /// Which part of the disposition this line is about (none when the scan failed).
    pub part: Option<usize>,
    /// The recipients of this part (indices into the envelope).
    pub recipients: &'a [usize],
    /// What happened downstream.
    pub outcome: &'a Outcome,
    /// The quarantine id, when a copy was kept.
    pub quarantine: Option<&'a str>,
    /// From end of DATA to the reply.
    pub elapsed: Duration,
}

struct Transaction {
    sender: String,
    params: MailParams,
    recipients: Vec<Recipient>,
    attempted: usize,
    /// Set when the next hop failed mid-envelope: everything after tempfails.
    broken: Option<String>,
}

/// One connection's state.
pub struct Session<S, F: MessageFilter> {
    stream: S,
    cfg: Arc<SessionConfig>,
    pool: Arc<RelayPool>,
    filter: Arc<F>,
    shutdown: watch::Receiver<bool>,
    decoder: Decoder,
    out: Vec<u8>,
    peer: SocketAddr,
    helo: Option<String>,
    xforward: Xforward,
    txn: Option<Transaction>,
    relay: Option<RelayConn>,
    /// An event read ahead while gathering pipelined RCPTs.
    pending: Option<Event>,
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
    ) -> Self {
        Session {
            stream,
            decoder: Decoder::new(cfg.limits),
            cfg,
            pool,
            filter,
            shutdown,
            out: Vec::with_capacity(1024),
            peer,
            helo: None,
            xforward: Xforward::default(),
            txn: None,
            relay: None,
            pending: None,
        }
    }

    /// Run the conversation to its end. I/O errors end the session; nothing is relayed
    /// for a transaction that did not finish.
    pub async fn run(mut self) -> std::io::Result<()> {
        self.reply(Reply::greeting(&self.cfg.hostname, self.cfg.lmtp));
        self.flush().await?;
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            while let Some(event) = self.pending.take().or_else(|| self.decoder.next_event()) {
                if let Flow::Close = self.handle(event).await {
                    self.flush().await?;
                    self.close_relay().await;
                    return Ok(());
                }
            }
            self.flush().await?;
            let in_data = self.decoder.in_data();
            let limit = if in_data {
                self.cfg.data_timeout
            } else {
                self.cfg.command_timeout
            };
            let draining = *self.shutdown.borrow();
            let read = tokio::select! {
                r = tokio::time::timeout(limit, self.stream.read(&mut chunk)) => r,
                _ = self.shutdown.changed(), if !in_data && !draining => {
                    self.reply(Reply::shutting_down(&self.cfg.hostname));
                    self.flush().await?;
                    self.close_relay().await;
                    return Ok(());
                }
            };
            match read {
                Err(_) => {
                    self.reply(Reply::timeout(&self.cfg.hostname));
                    let _ = self.flush().await;
                    self.close_relay().await;
                    return Ok(());
                }
                Ok(Ok(0)) => {
                    // Client gone; an unfinished transaction is simply dropped (the next
                    // hop never received its content).
                    self.close_relay().await;
                    return Ok(());
                }
                Ok(Ok(n)) => self.decoder.extend(&chunk[..n]),
                Ok(Err(e)) => {
                    self.close_relay().await;
                    return Err(e);
                }
            }
        }
    }

    fn reply(&mut self, r: Reply) {
        self.out.extend_from_slice(&r.to_wire());
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn close_relay(&mut self) {
        if let Some(relay) = self.relay.take() {
            if self.txn.is_some() {
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
                self.reply(match e {
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
            Command::Helo(name) | Command::Ehlo(name) if lmtp => {
                let _ = name;
                self.reply(Reply::bad_sequence("use LHLO (this is LMTP)"));
            }
            Command::Lhlo(_) if !lmtp => self.reply(Reply::unknown_command()),
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
                    self.reply(Reply::bad_sequence("MAIL transaction in progress"));
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
            Command::Data => match &self.txn {
                None => self.reply(Reply::bad_sequence("need MAIL command")),
                Some(t) if t.broken.is_some() => {
                    let why = t.broken.clone().unwrap_or_default();
                    self.reply(Reply::next_hop_unavailable(self.pool.label(), &why));
                }
                Some(t) if t.recipients.is_empty() && t.attempted == 0 => {
                    self.reply(Reply::bad_sequence("need RCPT command"))
                }
                Some(t) if t.recipients.is_empty() => self.reply(Reply::no_valid_recipients()),
                Some(_) => {
                    self.reply(Reply::start_data());
                    self.decoder.begin_data();
                }
            },
            Command::Rset => {
                self.reset().await;
                self.reply(Reply::ok());
            }
            Command::Noop => self.reply(Reply::ok()),
            Command::Vrfy => self.reply(Reply::vrfy()),
            Command::Help => self.reply(Reply::help()),
            Command::NotImplemented(_) => self.reply(Reply::not_implemented()),
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
        if self.txn.take().is_some()
            && let Some(relay) = &mut self.relay
            && relay.rset().await.is_err()
        {
            self.relay = None;
        }
    }

    /// RCPT commands the client already pipelined after the current one, so they can go to
    /// the next hop in one write. The first other event is kept for the main loop.
    fn buffered_rcpts(&mut self) -> Vec<Recipient> {
        let mut rcpts = vec![];
        while self.pending.is_none() {
            match self.decoder.next_event() {
                Some(Event::Command(Ok(Command::Rcpt { to, params }))) => rcpts.push(Recipient {
                    address: to,
                    params,
                }),
                Some(other) => self.pending = Some(other),
                None => break,
            }
        }
        rcpts
    }

    async fn mail(&mut self, from: String, params: MailParams, rcpts: Vec<Recipient>) {
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
            self.reply(r);
            return self.rcpts(rcpts).await;
        }
        let (sendable, overflow) = split_at_limit(rcpts, self.cfg.max_recipients);
        match self.open_transaction(&from, &params, &sendable).await {
            Ok((r, replies)) if r.is_positive() => {
                self.txn = Some(Transaction {
                    sender: from,
                    params,
                    recipients: vec![],
                    attempted: 0,
                    broken: None,
                });
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
    /// hop while idle: then the next one is tried, and a fresh connection last.
    async fn open_transaction(
        &mut self,
        from: &str,
        params: &MailParams,
        rcpts: &[Recipient],
    ) -> Result<(Reply, Vec<Reply>), RelayError> {
        loop {
            let (mut conn, reused) = match self.relay.take().or_else(|| self.pool.checkout()) {
                Some(c) => (c, true),
                None => (self.pool.connect().await?, false),
            };
            match conn.mail(&self.xforward, from, params, rcpts).await {
                Ok(r) => {
                    self.relay = Some(conn);
                    return Ok(r);
                }
                Err(e) if !reused => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "reused next-hop connection was dead; trying another")
                }
            }
        }
    }

    /// RCPT commands inside (or outside) a transaction.
    async fn rcpts(&mut self, rcpts: Vec<Recipient>) {
        if rcpts.is_empty() {
            return;
        }
        let Some(txn) = self.txn.as_ref() else {
            for _ in rcpts {
                self.reply(Reply::bad_sequence("need MAIL command"));
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
        let replies = match self.relay.as_mut() {
            Some(relay) if !sendable.is_empty() => relay.rcpts(&sendable).await,
            Some(_) => Ok(vec![]),
            None => Err(RelayError::Protocol("connection lost".into())),
        };
        self.record_rcpts(sendable, replies, overflow);
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
                    if r.is_positive() {
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

    async fn message(&mut self, message: Result<Vec<u8>, DataError>) {
        let Some(txn) = self.txn.take() else {
            return;
        };
        let n_replies = if self.cfg.lmtp {
            txn.recipients.len()
        } else {
            1
        };
        let envelope = Envelope {
            peer: self.peer,
            helo: self.helo.clone().unwrap_or_default(),
            xforward: std::mem::take(&mut self.xforward),
            sender: txn.sender,
            mail_params: txn.params,
            recipients: txn.recipients,
        };
        let replies = match message {
            Ok(message) => self.deliver(envelope, message).await,
            Err(e) => {
                self.abort_relay().await;
                vec![match e {
                    DataError::TooBig => Reply::message_too_big(),
                    DataError::LineTooLong => {
                        Reply::data_line_too_long(self.cfg.limits.max_data_line)
                    }
                }]
            }
        };
        for i in 0..n_replies {
            let r = replies.get(i).or(replies.last()).cloned();
            self.reply(r.unwrap_or_else(|| Reply::scan_failed("no reply")));
        }
    }

    /// Scan, keep quarantine copies, carry out each part, and return the reply for the
    /// client (one per recipient in LMTP).
    ///
    /// The common case (one part, relayed to every recipient) sends the content on the
    /// transaction opened while the envelope arrived. Otherwise that transaction is reset
    /// and each relayed part gets its own transaction with its own recipients.
    async fn deliver(&mut self, envelope: Envelope, message: Vec<u8>) -> Vec<Reply> {
        let started = Instant::now();
        let mail_id = new_mail_id();
        let message: Arc<[u8]> = message.into();
        let size = message.len();
        let all = || (0..envelope.recipients.len()).collect::<Vec<usize>>();
        let prepared = Arc::new(self.filter.prepare(&envelope, &message).await);
        let guarded = |filter: &F, env: &Envelope, msg: &[u8], id: &str, pre: &F::Prepared| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                filter.scan(env, msg, id, pre)
            }))
        };
        let scan = if self.filter.scan_inline(size, &prepared) {
            Ok(Ok(guarded(
                &self.filter,
                &envelope,
                &message,
                &mail_id,
                &prepared,
            )))
        } else {
            let filter = self.filter.clone();
            let env = envelope.clone();
            let msg = message.clone();
            let id = mail_id.clone();
            let pre = prepared.clone();
            tokio::time::timeout(
                self.cfg.scan_budget,
                tokio::task::spawn_blocking(move || guarded(&filter, &env, &msg, &id, &pre)),
            )
            .await
        };
        let Disposition { verdict, mut parts } = match scan {
            Ok(Ok(Ok(Ok(done)))) => done,
            failed => {
                let (reply, why) = match failed {
                    Err(_) => (
                        Reply::scan_timeout(),
                        "scan time budget exceeded".to_string(),
                    ),
                    Ok(Ok(Ok(Err(e)))) => (Reply::scan_failed(&e), e),
                    _ => (
                        Reply::scan_failed("internal error"),
                        "scan panicked".to_string(),
                    ),
                };
                self.abort_relay().await;
                self.log_part(
                    &envelope,
                    &mail_id,
                    size,
                    (None, None, &all()),
                    &Outcome::TempFailed(why),
                    None,
                    started,
                );
                return vec![reply];
            }
        };
        // SMTP has one reply for all recipients: a policy reject can only be that reply
        // when every part is rejected; otherwise the rejected parts are discarded (and
        // quarantined as configured), never bounced in the name of other recipients.
        if !self.cfg.lmtp && parts.iter().any(|p| !matches!(p.action, Action::Reject(_))) {
            for p in &mut parts {
                if matches!(p.action, Action::Reject(_)) {
                    p.action = Action::Discard;
                }
            }
        }
        let verdict = Arc::new(verdict);

        // 1. Quarantine copies, durable before anything else happens.
        let held: Vec<usize> = parts
            .iter()
            .filter(|p| p.quarantine)
            .flat_map(|p| p.recipients.iter().copied())
            .collect();
        let mut quarantine_id = None;
        if !held.is_empty() {
            let filter = self.filter.clone();
            let (env, msg, id, v) = (
                envelope.clone(),
                message.clone(),
                mail_id.clone(),
                verdict.clone(),
            );
            let stored =
                tokio::task::spawn_blocking(move || filter.quarantine(&env, &msg, &id, &v, &held))
                    .await
                    .unwrap_or_else(|_| Err("quarantine write panicked".into()));
            match stored {
                Ok(q) => quarantine_id = Some(q),
                Err(e) => {
                    tracing::error!(mail_id, error = %e, "quarantine write failed; answering 451");
                    self.abort_relay().await;
                    self.log_part(
                        &envelope,
                        &mail_id,
                        size,
                        (Some(&verdict), None, &all()),
                        &Outcome::TempFailed(format!("quarantine: {e}")),
                        None,
                        started,
                    );
                    return vec![Reply::quarantine_failed(&e)];
                }
            }
        }

        // 2. Each part.
        let hop = self.pool.label().to_string();
        let relays = parts
            .iter()
            .filter(|p| matches!(p.action, Action::Relay(_)))
            .count();
        let single = relays == 1 && parts.len() == 1;
        if !single {
            self.abort_relay().await;
        }
        let mut results: Vec<(Outcome, Option<Reply>)> = Vec::with_capacity(parts.len());
        for part in &parts {
            results.push(match &part.action {
                Action::Discard => (Outcome::Discarded, None),
                Action::Reject(r) => (Outcome::Rejected(r.clone()), Some(r.clone())),
                Action::Relay(_)
                    if !self.cfg.lmtp
                        && results
                            .iter()
                            .any(|(o, _)| matches!(o, Outcome::TempFailed(_))) =>
                {
                    // The reply will be 451 anyway: relaying more parts would only add
                    // copies that Postfix's retry delivers again.
                    (
                        Outcome::TempFailed("not attempted after an earlier part failed".into()),
                        None,
                    )
                }
                Action::Relay(rewrite) => {
                    let data = rewrite.parts(&message);
                    let result = if single {
                        self.send_data(&data).await
                    } else {
                        self.relay_part(&envelope, &part.recipients, &data).await
                    };
                    relay_outcome(&hop, result)
                }
            });
        }

        // 3. The reply, truthful about what happened.
        let delivered = results
            .iter()
            .any(|(o, _)| matches!(o, Outcome::Relayed { .. }));
        let temp = results
            .iter()
            .position(|(o, _)| matches!(o, Outcome::TempFailed(_)));
        let replies: Vec<Reply> = if self.cfg.lmtp {
            let mut per = vec![Reply::ok(); envelope.recipients.len()];
            for (part, (outcome, reply)) in parts.iter().zip(&results) {
                let r = part_reply(&mail_id, outcome, reply, quarantine_id.as_deref());
                for &i in &part.recipients {
                    if let Some(slot) = per.get_mut(i) {
                        *slot = r.clone();
                    }
                }
            }
            per
        } else if let Some(t) = temp {
            if delivered {
                tracing::warn!(
                    mail_id,
                    "some recipients were delivered and others must be retried: 451 makes Postfix retry all, so the delivered ones get the message again"
                );
            }
            if let Some(q) = quarantine_id.take() {
                self.filter.unquarantine(&q);
            }
            let (o, r) = &results[t];
            vec![part_reply(&mail_id, o, r, None)]
        } else if let Some((o, r)) = results
            .iter()
            .find(|(o, _)| matches!(o, Outcome::Rejected(_)))
        {
            // Every part rejected, or the next hop refused one part for good: the
            // refusal is the reply, so the sender hears of it.
            vec![part_reply(&mail_id, o, r, None)]
        } else if single {
            let (o, r) = &results[0];
            vec![part_reply(&mail_id, o, r, None)]
        } else if !delivered {
            vec![Reply::discarded(&mail_id, quarantine_id.as_deref())]
        } else {
            vec![Reply::delivered_in_parts(&mail_id, parts.len())]
        };
        for (i, (part, (outcome, _))) in parts.iter().zip(&results).enumerate() {
            self.log_part(
                &envelope,
                &mail_id,
                size,
                (Some(&verdict), Some(i), &part.recipients),
                outcome,
                quarantine_id.as_deref().filter(|_| part.quarantine),
                started,
            );
        }
        replies
    }

    /// The content on the transaction opened during the envelope.
    async fn send_data(&mut self, data: &[&[u8]]) -> Result<Reply, RelayError> {
        let result = match self.relay.as_mut() {
            Some(relay) => relay.data(data).await,
            None => Err(RelayError::Protocol("connection lost".into())),
        };
        if result.is_err() || self.relay.as_ref().is_some_and(|r| !r.is_usable()) {
            self.relay = None;
        }
        result
    }

    /// A transaction of its own for one part: MAIL, the part's RCPTs, the content.
    async fn relay_part(
        &mut self,
        env: &Envelope,
        recipients: &[usize],
        data: &[&[u8]],
    ) -> Result<Reply, RelayError> {
        let rcpts: Vec<Recipient> = recipients
            .iter()
            .filter_map(|&i| env.recipients.get(i).cloned())
            .collect();
        let saved = std::mem::replace(&mut self.xforward, env.xforward.clone());
        let opened = self
            .open_transaction(&env.sender, &env.mail_params, &rcpts)
            .await;
        self.xforward = saved;
        let (mail, replies) = opened?;
        let refused = std::iter::once(&mail)
            .chain(&replies)
            .find(|r| !r.is_positive())
            .cloned();
        if let Some(r) = refused.or_else(|| {
            (replies.len() != rcpts.len())
                .then(|| Reply::new(451, None, "recipient replies missing"))
        }) {
            self.abort_relay().await;
            return Ok(r);
        }
        self.send_data(data).await
    }

    async fn abort_relay(&mut self) {
        if let Some(relay) = &mut self.relay
            && relay.rset().await.is_err()
        {
            self.relay = None;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn log_part(
        &self,
        envelope: &Envelope,
        mail_id: &str,
        size: usize,
        (verdict, part, recipients): (Option<&F::Verdict>, Option<usize>, &[usize]),
        outcome: &Outcome,
        quarantine: Option<&str>,
        started: Instant,
    ) {
        self.filter.log(&MessageRecord {
            envelope,
            mail_id,
            size,
            verdict,
            part,
            recipients,
            outcome,
            quarantine,
            elapsed: started.elapsed(),
        });
    }
}

/// The log outcome and the client reply of a next-hop answer to the content. A next hop's
/// transient or nonsensical (< 400 but not 2xx) reply becomes 451 here.
fn relay_outcome(hop: &str, result: Result<Reply, RelayError>) -> (Outcome, Option<Reply>) {
    match result {
        Ok(r) if r.is_positive() => (
            Outcome::Relayed {
                queued_as: queued_as(&r),
            },
            Some(Reply::from_next_hop(hop, &r)),
        ),
        Ok(r) if r.is_transient() || r.code < 400 => {
            let mut mirrored = Reply::from_next_hop(hop, &r);
            mirrored.code = 451;
            (Outcome::TempFailed(r.one_line()), Some(mirrored))
        }
        Ok(r) => (
            Outcome::Rejected(r.clone()),
            Some(Reply::from_next_hop(hop, &r)),
        ),
        Err(e) => (
            Outcome::TempFailed(e.to_string()),
            Some(Reply::next_hop_unavailable(hop, &e.to_string())),
        ),
    }
}

/// The client's reply for one part's outcome.
fn part_reply(
    mail_id: &str,
    outcome: &Outcome,
    reply: &Option<Reply>,
    quarantine: Option<&str>,
) -> Reply {
    match (outcome, reply) {
        (_, Some(r)) => r.clone(),
        (Outcome::Discarded, None) => Reply::discarded(mail_id, quarantine),
        (Outcome::TempFailed(why), None) => Reply::scan_failed(why),
        _ => Reply::ok(),
    }
}

/// The first `limit` recipients, and the rest.
fn split_at_limit(mut rcpts: Vec<Recipient>, limit: usize) -> (Vec<Recipient>, Vec<Recipient>) {
    let rest = rcpts.split_off(limit.min(rcpts.len()));
    (rcpts, rest)
}

/// The queue id in a `250 2.0.0 Ok: queued as XYZ` reply.
fn queued_as(r: &Reply) -> Option<String> {
    let text = r.lines.first()?;
    let i = text.find("queued as ")?;
    let id: String = text[i + 10..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some(id)
}

/// A new amavis-style mail id: 12 characters of `[A-Za-z0-9+-]`, 72 random bits.
pub fn new_mail_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-";
    let mut bytes = [0u8; 9];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS RNG failing is not a reason to lose mail; fall back to time and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ COUNTER
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .rotate_left(40);
        bytes[..8].copy_from_slice(&t.to_le_bytes());
    }
    let mut id = String::with_capacity(12);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            id.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_ids() {
        let a = new_mail_id();
        assert_eq!(a.len(), 12);
        assert_ne!(a, new_mail_id());
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
        );
    }

    #[test]
    fn queue_id_from_reply() {
        let r = Reply::new(250, None, "2.0.0 Ok: queued as 4Xyz9");
        assert_eq!(queued_as(&r).as_deref(), Some("4Xyz9"));
        assert_eq!(queued_as(&Reply::new(250, None, "Ok")), None);
    }
}
