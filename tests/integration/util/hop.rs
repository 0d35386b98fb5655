//! A scripted next hop: each connection is served by the test's own async code, with helpers
//! for the ordinary parts (greeting, EHLO, a well-behaved default), so a test can make the
//! next hop answer out of step, send replies nobody asked for, or close at a chosen moment.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The EHLO reply of a Postfix-like next hop.
pub const CAPS: &str = "250-hop.test\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n";

/// A running scripted next hop.
#[derive(Clone)]
pub struct Hop {
    pub addr: SocketAddr,
    /// Every line the next hop read, `N: line` with N its connection number.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Messages whose content was read and answered 250.
    pub delivered: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// One connection to the scripted next hop.
pub struct HopConn {
    /// Its number, from 0.
    pub n: usize,
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    hop: Hop,
}

impl Hop {
    /// A next hop that greets and serves every connection by the rules.
    pub async fn well_behaved() -> Hop {
        Hop::start(|mut c| async move {
            if c.greet().await.is_some() {
                c.serve().await;
            }
        })
        .await
    }

    /// Serve every connection with `script`.
    pub async fn start<F, Fut>(script: F) -> Hop
    where
        F: Fn(HopConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind hop");
        let hop = Hop {
            addr: listener.local_addr().expect("addr"),
            log: Arc::default(),
            connections: Arc::default(),
            delivered: Arc::default(),
        };
        let h = hop.clone();
        let script = Arc::new(script);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).ok();
                let n = h.connections.fetch_add(1, Ordering::SeqCst);
                let (r, w) = stream.into_split();
                let conn = HopConn {
                    n,
                    r: BufReader::new(r),
                    w,
                    hop: h.clone(),
                };
                tokio::spawn(script(conn));
            }
        });
        hop
    }

    /// The lines the next hop read on connection `n`.
    pub fn lines_of(&self, n: usize) -> Vec<String> {
        let prefix = format!("{n}: ");
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// Every line the next hop read.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// How many messages were delivered.
    pub fn delivered_count(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }
}

impl HopConn {
    /// Write raw text.
    pub async fn send(&mut self, s: &str) {
        let _ = self.w.write_all(s.as_bytes()).await;
    }

    /// The next command line (logged), without its CRLF; `None` at EOF.
    pub async fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        if self.r.read_until(b'\n', &mut buf).await.ok()? == 0 {
            return None;
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        self.hop
            .log
            .lock()
            .unwrap()
            .push(format!("{}: {line}", self.n));
        Some(line)
    }

    /// The message content after 354, dot-unstuffed; `None` at EOF.
    pub async fn content(&mut self) -> Option<Vec<u8>> {
        let mut data = Vec::new();
        loop {
            let mut buf = Vec::new();
            if self.r.read_until(b'\n', &mut buf).await.ok()? == 0 {
                return None;
            }
            if buf == b".\r\n" {
                return Some(data);
            }
            let content = buf.strip_prefix(b".").unwrap_or(&buf);
            data.extend_from_slice(content);
        }
    }

    /// The greeting, and the reply to EHLO.
    pub async fn greet(&mut self) -> Option<()> {
        self.send("220 hop.test ESMTP scripted\r\n").await;
        let ehlo = self.line().await?;
        assert!(ehlo.to_ascii_uppercase().starts_with("EHLO"), "{ehlo}");
        self.send(CAPS).await;
        Some(())
    }

    /// Answer one command as a well-behaved next hop would; returns the command (upper-case
    /// verb) it answered, or `None` at EOF or after QUIT.
    pub async fn answer_one(&mut self) -> Option<String> {
        let line = self.line().await?;
        let verb = line
            .split_ascii_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        self.answer(&verb).await?;
        Some(verb)
    }

    /// The well-behaved answer to `verb` (for DATA: 354, the content, 250).
    pub async fn answer(&mut self, verb: &str) -> Option<()> {
        match verb {
            "DATA" => {
                self.send("354 go ahead\r\n").await;
                let data = self.content().await?;
                let n = {
                    let mut d = self.hop.delivered.lock().unwrap();
                    d.push(data);
                    d.len()
                };
                self.send(&format!("250 2.0.0 Ok: queued as HOP{n:05}\r\n"))
                    .await;
            }
            "QUIT" => {
                self.send("221 2.0.0 Bye\r\n").await;
                return None;
            }
            "MAIL" | "RCPT" | "RSET" | "XFORWARD" | "NOOP" => self.send("250 2.0.0 Ok\r\n").await,
            _ => {
                self.send("502 5.5.2 Error: command not recognized\r\n")
                    .await
            }
        }
        Some(())
    }

    /// Count a message as delivered (for scripts that read the content themselves).
    pub fn hop_delivered(&self) {
        self.hop.delivered.lock().unwrap().push(vec![]);
    }

    /// Behave well until the client leaves.
    pub async fn serve(&mut self) {
        while self.answer_one().await.is_some() {}
    }
}
