//! A loopback SMTP sink for tests and the load bench: records every message it accepts and
//! can be told to misbehave (tempfail, reject, stall, refuse recipients). Like many real
//! servers it treats a bare LF as a line end, so anything smuggled past filterd would show
//! up here as an extra command.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the sink answers.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Reply to the end of DATA instead of 250 (e.g. "451 4.3.0 busy").
    pub data_reply: Option<String>,
    /// Wait this long before replying to the end of DATA.
    pub data_delay: Option<Duration>,
    /// Refuse recipients containing this string with "550 5.1.1 no such user".
    pub refuse_rcpt: Option<String>,
    /// Do not record messages (load bench).
    pub discard: bool,
    /// Reply to the DATA command itself instead of 354 (e.g. "554 5.5.1 no").
    pub data_command_reply: Option<String>,
    /// Answer the end of DATA with "451 4.3.0 try again later" when the content holds this.
    pub tempfail_marker: Option<String>,
}

/// One message as the sink received it.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// XFORWARD lines, as sent.
    pub xforward: Vec<String>,
    /// MAIL FROM line.
    pub mail: String,
    /// Accepted RCPT TO lines.
    pub rcpts: Vec<String>,
    /// The message, dot-unstuffed.
    pub data: Vec<u8>,
}

/// A running sink.
#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    pub messages: Arc<Mutex<Vec<Received>>>,
    /// Every command line seen (to spot smuggled commands).
    pub commands: Arc<Mutex<Vec<String>>>,
    /// Messages whose content arrived (before the reply is sent).
    pub data_seen: Arc<std::sync::atomic::AtomicUsize>,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Sink {
    /// Start a sink on an ephemeral loopback port.
    pub async fn start(behaviour: Behaviour) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let sink = Sink {
            addr: listener.local_addr().expect("sink addr"),
            messages: Arc::default(),
            commands: Arc::default(),
            data_seen: Arc::default(),
            count: Arc::default(),
        };
        let s = sink.clone();
        let behaviour = Arc::new(behaviour);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).ok();
                let s = s.clone();
                let b = behaviour.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, s, b).await;
                });
            }
        });
        sink
    }

    /// Messages accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// How many messages were accepted (also in discard mode).
    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait until `n` messages were accepted or `limit` passed; returns the count.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        while self.count() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.count()
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    sink: Sink,
    b: Arc<Behaviour>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut out = Vec::with_capacity(512);
    w.write_all(b"220 sink.test ESMTP test sink\r\n").await?;
    let mut cur = Received::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if !b.discard {
            sink.commands.lock().unwrap().push(text.clone());
        }
        let upper = text.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("LHLO") {
            b"250-sink.test\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n"
        } else if upper.starts_with("XFORWARD") {
            cur.xforward.push(text.clone());
            b"250 2.0.0 Ok\r\n"
        } else if upper.starts_with("MAIL") {
            if !cur.mail.is_empty() {
                b"503 5.5.1 Error: nested MAIL command\r\n"
            } else {
                cur.mail = text.clone();
                b"250 2.1.0 Ok\r\n"
            }
        } else if upper.starts_with("RCPT") {
            if b.refuse_rcpt
                .as_ref()
                .is_some_and(|r| text.contains(r.as_str()))
            {
                b"550 5.1.1 no such user\r\n"
            } else {
                cur.rcpts.push(text.clone());
                b"250 2.1.5 Ok\r\n"
            }
        } else if upper == "DATA" && b.data_command_reply.is_some() {
            let r = b.data_command_reply.clone().unwrap_or_default();
            w.write_all(format!("{r}\r\n").as_bytes()).await?;
            continue;
        } else if upper == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = Vec::new();
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(());
                }
                // Lenient like many servers: a bare LF ends a line too.
                if line == b".\r\n" || line == b".\n" {
                    break;
                }
                let content = if line.first() == Some(&b'.') {
                    &line[1..]
                } else {
                    &line[..]
                };
                data.extend_from_slice(content);
            }
            sink.data_seen
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(d) = b.data_delay {
                tokio::time::sleep(d).await;
            }
            out.clear();
            let marked = b
                .tempfail_marker
                .as_ref()
                .is_some_and(|m| data.windows(m.len()).any(|w| w == m.as_bytes()));
            let reply = if marked {
                Some("451 4.3.0 try again later".to_string())
            } else {
                b.data_reply.clone()
            };
            match &reply {
                Some(r) => {
                    out.extend_from_slice(r.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                None => {
                    let n = sink.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    cur.data = data;
                    if !b.discard {
                        sink.messages.lock().unwrap().push(std::mem::take(&mut cur));
                    }
                    out.extend_from_slice(
                        format!("250 2.0.0 Ok: queued as SINK{n:05}\r\n").as_bytes(),
                    );
                }
            }
            cur = Received::default();
            w.write_all(&out).await?;
            continue;
        } else if upper == "RSET" {
            cur = Received::default();
            b"250 2.0.0 Ok\r\n"
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else if upper == "NOOP" {
            b"250 2.0.0 Ok\r\n"
        } else {
            b"502 5.5.2 Error: command not recognized\r\n"
        };
        w.write_all(reply).await?;
    }
}
