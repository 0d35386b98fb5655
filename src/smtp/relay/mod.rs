//! The SMTP client to the next hop (Postfix's reinjection listener): connect, EHLO,
//! XFORWARD, MAIL, RCPT, DATA with dot-stuffing, under per-step timeouts. Replies come back
//! as [`Reply`] values so the session can mirror them to its own client.
//!
//! Replies and commands stay in step, or the connection is given up: a reply that does not
//! fit the command it answers (anything but 354 lets content go after DATA; a 3xx to MAIL,
//! RCPT or the content), a byte from the next hop when none is due (an extra reply, an idle
//! 421), or any error makes the connection unusable; it is closed and never pooled, and the
//! caller answers 451. A reused connection is checked for unread bytes and EOF first.

use crate::smtp::codec::DotStuffer;
use crate::smtp::envelope::{Body, MailParams, Recipient, Xforward, XforwardAttr};
use crate::smtp::reply::Reply;
use reply::Step;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod pool;
mod reply;

pub use pool::RelayPool;
pub use reply::read_reply;

/// The content goes to the next hop in writes of about this size.
const CONTENT_CHUNK: usize = 64 * 1024;

/// Where and how to relay.
#[derive(Debug, Clone)]
pub struct NextHop {
    /// The next hop's address; filterd relays nowhere else.
    pub addr: SocketAddr,
    /// Our EHLO name.
    pub helo_name: String,
    /// Limit for connecting.
    pub connect_timeout: Duration,
    /// Limit for each command reply (greeting, EHLO, MAIL, RCPT, DATA's 354).
    pub command_timeout: Duration,
    /// Limit for the reply after the message content.
    pub data_done_timeout: Duration,
    /// Send XFORWARD when the next hop offers it.
    pub xforward: bool,
    /// RSETs one connection may send before it is closed and a fresh one opened: Postfix
    /// counts RSET as a junk command (`smtpd_junk_command_limit`, 100) and slows down, then
    /// drops, a client past it.
    pub rset_limit: u32,
}

impl NextHop {
    /// The next hop as written in replies and logs: `[127.0.0.1]:10025`.
    pub fn label(&self) -> String {
        format!("[{}]:{}", self.addr.ip(), self.addr.port())
    }
}

/// Why a relay attempt failed before the next hop gave a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// TCP connect failed.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// A step took longer than its limit.
    #[error("timeout waiting for {0}")]
    Timeout(&'static str),
    /// The connection broke.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// The next hop said something that is not SMTP, or refused the session itself.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// What the next hop offered in its EHLO reply.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capabilities {
    pipelining: bool,
    size: bool,
    eightbitmime: bool,
    smtputf8: bool,
    dsn: bool,
    xforward: Vec<XforwardAttr>,
}

impl Capabilities {
    fn parse(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = true,
                "8BITMIME" => caps.eightbitmime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "XFORWARD" => caps.xforward = words.filter_map(XforwardAttr::from_name).collect(),
                _ => {}
            }
        }
        caps
    }
}

/// The two ends (ours, the next hop's) of this process' open next-hop connections: an
/// accepted connection whose ends are one of these, the other way round, is this filterd
/// talking to itself (a next hop that leads back here). Both ends, because the same local
/// port is used for connections to different places.
type Ends = (SocketAddr, SocketAddr);
static OWN: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<Ends>>> =
    std::sync::LazyLock::new(Default::default);

/// True when a connection accepted on `local` from `peer` is one of this process' own
/// next-hop connections.
pub fn is_own_connection(peer: SocketAddr, local: SocketAddr) -> bool {
    OWN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&(peer, local))
}

/// One open connection to the next hop, between transactions or inside one.
#[derive(Debug)]
pub struct RelayConn {
    /// Both ends, registered in [`OWN`] while the connection lives.
    ends: Option<Ends>,
    io: BufReader<TcpStream>,
    caps: Capabilities,
    hop: std::sync::Arc<NextHop>,
    line: Vec<u8>,
    out: Vec<u8>,
    usable: bool,
    rsets: u32,
}

impl Drop for RelayConn {
    fn drop(&mut self) {
        if let Some(e) = self.ends {
            OWN.lock().unwrap_or_else(|e| e.into_inner()).remove(&e);
        }
    }
}

impl RelayConn {
    /// Connect, read the greeting and say EHLO.
    pub async fn connect(hop: std::sync::Arc<NextHop>) -> Result<Self, RelayError> {
        let stream = tokio::time::timeout(hop.connect_timeout, TcpStream::connect(hop.addr))
            .await
            .map_err(|_| RelayError::Timeout("connect"))?
            .map_err(RelayError::Connect)?;
        stream.set_nodelay(true).ok();
        let ends = stream.local_addr().ok().zip(stream.peer_addr().ok());
        if let Some(e) = ends {
            OWN.lock().unwrap_or_else(|e| e.into_inner()).insert(e);
        }
        let mut conn = RelayConn {
            ends,
            io: BufReader::with_capacity(4096, stream),
            caps: Capabilities::default(),
            hop,
            line: Vec::with_capacity(512),
            out: Vec::with_capacity(CONTENT_CHUNK + 4096),
            usable: true,
            rsets: 0,
        };
        let greeting = conn.read_reply("greeting").await?;
        if greeting.code != 220 {
            return Err(RelayError::Protocol(format!(
                "greeting: {}",
                greeting.one_line()
            )));
        }
        let ehlo = format!("EHLO {}\r\n", conn.hop.helo_name);
        conn.io.get_mut().write_all(ehlo.as_bytes()).await?;
        let reply = conn.read_reply("EHLO reply").await?;
        if reply.code != 250 {
            return Err(RelayError::Protocol(format!("EHLO: {}", reply.one_line())));
        }
        conn.caps = Capabilities::parse(&reply);
        conn.settled()?;
        Ok(conn)
    }

    /// Start a transaction: XFORWARD (when offered), MAIL FROM and the RCPTs already known,
    /// in one write when the next hop offers PIPELINING. Returns the MAIL reply and one reply
    /// per recipient (none when MAIL was refused and the next hop does not pipeline).
    pub async fn mail(
        &mut self,
        xforward: &Xforward,
        from: &str,
        params: &MailParams,
        rcpts: &[Recipient],
    ) -> Result<(Reply, Vec<Reply>), RelayError> {
        let mut batch = String::new();
        let mut xforward_lines = 0;
        if self.hop.xforward && !self.caps.xforward.is_empty() && !xforward.is_empty() {
            for line in xforward.commands(|a| self.caps.xforward.contains(&a)) {
                batch.push_str(&line);
                batch.push_str("\r\n");
                xforward_lines += 1;
                if !self.caps.pipelining {
                    self.send_first(&batch).await?;
                    batch.clear();
                    self.expect_xforward_ok().await?;
                    xforward_lines -= 1;
                }
            }
        }
        batch.push_str(&format!("MAIL FROM:<{from}>"));
        if let (Some(size), true) = (params.size, self.caps.size) {
            batch.push_str(&format!(" SIZE={size}"));
        }
        if self.caps.eightbitmime {
            match params.body {
                Some(Body::EightBitMime) => batch.push_str(" BODY=8BITMIME"),
                Some(Body::SevenBit) => batch.push_str(" BODY=7BIT"),
                None => {}
            }
        }
        if params.smtputf8 && self.caps.smtputf8 {
            batch.push_str(" SMTPUTF8");
        }
        if self.caps.dsn {
            if let Some(ret) = &params.ret {
                batch.push_str(&format!(" RET={ret}"));
            }
            if let Some(envid) = &params.envid {
                batch.push_str(&format!(" ENVID={envid}"));
            }
        }
        batch.push_str("\r\n");
        if !self.caps.pipelining {
            self.send_first(&batch).await?;
            let mail = self.answer(Step::Mail).await?;
            if !mail.is_positive() {
                self.settled()?;
                return Ok((mail, vec![]));
            }
            let replies = self.rcpts(rcpts).await?;
            return Ok((mail, replies));
        }
        for r in rcpts {
            self.push_rcpt(&mut batch, r);
        }
        self.send_first(&batch).await?;
        for _ in 0..xforward_lines {
            self.expect_xforward_ok().await?;
        }
        let mail = self.answer(Step::Mail).await?;
        let mut replies = Vec::with_capacity(rcpts.len());
        for _ in rcpts {
            replies.push(self.answer(Step::Rcpt).await?);
        }
        self.settled()?;
        Ok((mail, replies))
    }

    /// The reply to `step`, which must fit it.
    async fn answer(&mut self, step: Step) -> Result<Reply, RelayError> {
        let what = match step {
            Step::Mail => "MAIL reply",
            Step::Rcpt => "RCPT reply",
            Step::Data => "DATA reply",
            Step::Content => "reply to end of DATA",
        };
        let limit = if step == Step::Content {
            self.hop.data_done_timeout
        } else {
            self.hop.command_timeout
        };
        let r = self.read_reply_within(what, limit).await?;
        if !step.fits(r.code) {
            return Err(self.desync(format!(
                "{} answered {} (out of step)",
                step.name(),
                r.one_line()
            )));
        }
        Ok(r)
    }

    /// Every reply due was read: anything more already here is a reply nobody asked for.
    fn settled(&mut self) -> Result<(), RelayError> {
        if self.io.buffer().is_empty() {
            return Ok(());
        }
        let extra = String::from_utf8_lossy(self.io.buffer())
            .trim_end()
            .to_string();
        Err(self.desync(format!("unexpected reply from the next hop: {extra}")))
    }

    /// The connection is out of step with the next hop: it is given up.
    fn desync(&mut self, why: String) -> RelayError {
        self.usable = false;
        RelayError::Protocol(why)
    }

    /// Nothing unread from the next hop: no byte buffered or waiting, and not closed.
    pub(crate) fn is_quiet(&mut self) -> bool {
        if !self.io.buffer().is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(
            self.io.get_ref().try_read(&mut byte),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    async fn expect_xforward_ok(&mut self) -> Result<(), RelayError> {
        let r = self.read_reply("XFORWARD reply").await?;
        if r.code != 250 {
            return Err(RelayError::Protocol(format!("XFORWARD: {}", r.one_line())));
        }
        Ok(())
    }

    fn push_rcpt(&self, out: &mut String, r: &Recipient) {
        out.push_str(&format!("RCPT TO:<{}>", r.address));
        if self.caps.dsn {
            if let Some(n) = &r.params.notify {
                out.push_str(&format!(" NOTIFY={n}"));
            }
            if let Some(o) = &r.params.orcpt {
                out.push_str(&format!(" ORCPT={o}"));
            }
        }
        out.push_str("\r\n");
    }

    /// RCPT TO for each recipient (pipelined when offered); one reply each, in order.
    pub async fn rcpts(&mut self, rcpts: &[Recipient]) -> Result<Vec<Reply>, RelayError> {
        let mut replies = Vec::with_capacity(rcpts.len());
        if self.caps.pipelining {
            let mut batch = String::new();
            for r in rcpts {
                self.push_rcpt(&mut batch, r);
            }
            self.send(&batch).await?;
            for _ in rcpts {
                replies.push(self.answer(Step::Rcpt).await?);
            }
        } else {
            for r in rcpts {
                let mut line = String::new();
                self.push_rcpt(&mut line, r);
                self.send(&line).await?;
                replies.push(self.answer(Step::Rcpt).await?);
            }
        }
        self.settled()?;
        Ok(replies)
    }

    /// DATA, then the message (the `parts` in order), dot-stuffed. Returns the reply to DATA
    /// if it was not 354, else the reply after the content.
    pub async fn data(&mut self, parts: &[&[u8]]) -> Result<Reply, RelayError> {
        self.send("DATA\r\n").await?;
        let go = self.answer(Step::Data).await?;
        self.settled()?;
        if go.code != 354 {
            // The next hop still holds the envelope: clear it before the connection is reused.
            if self.rset().await.is_err() {
                self.usable = false;
            }
            return Ok(go);
        }
        let mut out = std::mem::take(&mut self.out);
        let written = self.write_content(parts, &mut out).await;
        self.out = out;
        if let Err(e) = written {
            self.usable = false;
            return Err(e.into());
        }
        let done = self.answer(Step::Content).await?;
        // Something more after the answer to the content: the content was answered (the
        // reply stands, or mail would be lost or doubled), but the connection is out of
        // step and is not used again.
        if self.settled().is_err() {
            tracing::warn!(next_hop = %self.hop.label(), "unexpected data from the next hop after the reply to the content; closing that connection");
        }
        Ok(done)
    }

    /// The content, dot-stuffed, in chunks of [`CONTENT_CHUNK`]: a big message never has a
    /// second, stuffed copy in memory. The last byte stays in `out` until the end (see
    /// [`DotStuffer::finish`]).
    async fn write_content(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) -> std::io::Result<()> {
        out.clear();
        let mut stuffer = DotStuffer::default();
        for part in parts {
            for piece in part.chunks(CONTENT_CHUNK) {
                stuffer.push(piece, out);
                if out.len() >= CONTENT_CHUNK {
                    let last = out.pop();
                    self.io.get_mut().write_all(out).await?;
                    out.clear();
                    out.extend(last);
                }
            }
        }
        stuffer.finish(out);
        self.io.get_mut().write_all(out).await?;
        out.clear();
        Ok(())
    }

    /// False once the connection is in an unknown state, or has sent as many RSETs as the
    /// next hop tolerates: it must not be reused.
    pub(crate) fn is_usable(&self) -> bool {
        self.usable && self.rsets < self.hop.rset_limit
    }

    /// Abort the current transaction.
    pub async fn rset(&mut self) -> Result<(), RelayError> {
        self.rsets += 1;
        self.send_first("RSET\r\n").await?;
        let r = self.read_reply("RSET reply").await?;
        if r.code != 250 {
            return Err(self.desync(format!("RSET: {}", r.one_line())));
        }
        self.settled()
    }

    /// Say goodbye; errors do not matter any more.
    pub async fn quit(mut self) {
        if self.send("QUIT\r\n").await.is_ok() {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.read_reply("QUIT reply")).await;
        }
    }

    /// Send the first commands of a transaction (or RSET), on a connection that may have
    /// been idle: nothing may be waiting from the next hop, not even unread on the socket (an
    /// idle 421, a leftover reply would be read as the answer to these).
    async fn send_first(&mut self, s: &str) -> Result<(), RelayError> {
        if !self.is_quiet() {
            let what = s.split_ascii_whitespace().next().unwrap_or("a command");
            return Err(self.desync(format!(
                "the next hop sent something unasked before {what} (or closed the connection)"
            )));
        }
        self.write(s).await
    }

    /// Send commands within a transaction: nothing may be left over from the replies read
    /// so far (a late extra reply is caught by the rule that each reply fits its command).
    async fn send(&mut self, s: &str) -> Result<(), RelayError> {
        self.settled()?;
        self.write(s).await
    }

    async fn write(&mut self, s: &str) -> Result<(), RelayError> {
        if let Err(e) = self.io.get_mut().write_all(s.as_bytes()).await {
            self.usable = false;
            return Err(e.into());
        }
        Ok(())
    }

    async fn read_reply(&mut self, what: &'static str) -> Result<Reply, RelayError> {
        let t = self.hop.command_timeout;
        self.read_reply_within(what, t).await
    }

    async fn read_reply_within(
        &mut self,
        what: &'static str,
        limit: Duration,
    ) -> Result<Reply, RelayError> {
        let r = tokio::time::timeout(limit, read_reply(&mut self.io, &mut self.line))
            .await
            .map_err(|_| RelayError::Timeout(what))
            .and_then(|r| r);
        if r.is_err() {
            self.usable = false;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::Enhanced;

    async fn parse(wire: &[u8]) -> Result<Reply, RelayError> {
        let mut r = BufReader::new(wire);
        read_reply(&mut r, &mut vec![]).await
    }

    #[tokio::test]
    async fn replies() {
        let r = parse(b"250 2.0.0 Ok: queued as 4Xyz9\r\n").await.unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.enhanced, Some(Enhanced(2, 0, 0)));
        assert_eq!(r.lines, vec!["Ok: queued as 4Xyz9"]);
        let r = parse(b"250-mx\r\n250-PIPELINING\r\n250 XFORWARD NAME ADDR\r\n")
            .await
            .unwrap();
        let caps = Capabilities::parse(&r);
        assert!(caps.pipelining);
        assert_eq!(caps.xforward, vec![XforwardAttr::Name, XforwardAttr::Addr]);
        let r = parse(b"550\r\n").await.unwrap();
        assert_eq!((r.code, r.enhanced), (550, None));
        assert!(parse(b"hello\r\n").await.is_err());
        assert!(parse(b"250-a\r\n").await.is_err());
        assert!(parse(b"250-a\r\n251 b\r\n").await.is_err());
    }

    /// Random streams of reply pieces (codes, separators, enhanced codes, line ends, junk,
    /// over-long lines): the parser never panics, every reply it returns is well-formed, and
    /// one well-formed reply always parses to itself.
    #[tokio::test]
    async fn the_reply_parser_survives_random_input() {
        let pieces: &[&[u8]] = &[
            b"250",
            b"354",
            b"421",
            b"550",
            b"199",
            b"600",
            b"25",
            b"2500",
            b"-",
            b" ",
            b"\r\n",
            b"\n",
            b"\r",
            b"2.0.0",
            b"5.7.1",
            b"9.9.9",
            b"4.",
            b"Ok",
            b"queued as X",
            b"\xff\x00",
            b"\t",
            b"...",
        ];
        let mut x: u64 = 0x243F6A8885A308D3;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut wire = vec![];
            for _ in 0..(next() % 12 + 1) {
                wire.extend_from_slice(pieces[(next() as usize) % pieces.len()]);
            }
            if round % 97 == 0 {
                wire.extend(std::iter::repeat_n(b'x', 5000));
            }
            let mut r = BufReader::new(&wire[..]);
            let mut line = vec![];
            // Read replies until the input is used up or one fails.
            for _ in 0..16 {
                match read_reply(&mut r, &mut line).await {
                    Ok(reply) => {
                        assert!((200..600).contains(&reply.code), "{reply:?} from {wire:?}");
                        assert!(!reply.lines.is_empty() && reply.lines.len() <= 101);
                        if let Some(e) = reply.enhanced {
                            assert_eq!(u16::from(e.0), reply.code / 100);
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        let good = Reply::new(451, Some(Enhanced(4, 3, 0)), "try later");
        assert_eq!(parse(&good.to_wire()).await.unwrap(), good);
    }

    #[test]
    fn only_a_connection_with_both_ends_of_ours_is_our_own() {
        let ours: SocketAddr = "127.0.0.1:40014".parse().unwrap();
        let hop: SocketAddr = "127.0.0.1:10024".parse().unwrap();
        OWN.lock().unwrap().insert((ours, hop));
        assert!(
            is_own_connection(ours, hop),
            "our relay client at our listener"
        );
        // The same local port, used by another client towards another listener: not ours
        // (Linux reuses ephemeral ports for different destinations).
        let other: SocketAddr = "127.0.0.1:10026".parse().unwrap();
        assert!(!is_own_connection(ours, other));
        OWN.lock().unwrap().remove(&(ours, hop));
        assert!(!is_own_connection(ours, hop));
    }

    #[test]
    fn only_fitting_replies_answer_a_step() {
        for (step, fits, misfits) in [
            (Step::Mail, &[250, 451, 550][..], &[354, 334][..]),
            (Step::Rcpt, &[250, 251, 452, 550], &[354]),
            (Step::Data, &[354, 451, 554], &[250, 220, 334]),
            (Step::Content, &[250, 451, 552], &[354, 334]),
        ] {
            for c in fits {
                assert!(step.fits(*c), "{step:?} {c}");
            }
            for c in misfits {
                assert!(!step.fits(*c), "{step:?} {c}");
            }
        }
    }
}
