//! In-process sessions over duplex streams: the state machine without sockets on the client
//! side (the relay still talks to a loopback sink), including paused-time timeouts.

use crate::util::sink::{Behaviour, Sink};
use filterd::config::Config;
use filterd::pipeline::Pipeline;
use filterd::smtp::envelope::Envelope;
use filterd::smtp::filter::{Delivery, Disposition, MessageFilter, MessageRecord, Part};
use filterd::smtp::relay::RelayPool;
use filterd::smtp::rewrite::Rewrite;
use filterd::smtp::session::{Session, SessionConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::watch;

/// A session over an in-memory stream: the client's end, the session task, its stop switch.
fn spawn_session<F: MessageFilter>(
    next_hop: SocketAddr,
    tweak: impl FnOnce(&mut SessionConfig),
    filter: F,
) -> (
    DuplexStream,
    tokio::task::JoinHandle<std::io::Result<()>>,
    watch::Sender<bool>,
) {
    let mut cfg = config(next_hop);
    let mut session = (*cfg.session).clone();
    tweak(&mut session);
    cfg.session = Arc::new(session);
    let (client, server) = tokio::io::duplex(1 << 16);
    let (stop, stop_rx) = watch::channel(false);
    let s = Session::new(
        server,
        "127.0.0.1:40000".parse().unwrap(),
        cfg.session.clone(),
        Arc::new(RelayPool::new(
            cfg.next_hop.clone(),
            4,
            Duration::from_secs(10),
        )),
        Arc::new(filter),
        stop_rx,
        filterd::smtp::budget::Budget::new(1 << 30),
    );
    (client, tokio::spawn(s.run()), stop)
}

fn config(next_hop: SocketAddr) -> Config {
    Config::parse(&format!(
        "[next_hop]\naddress = \"{next_hop}\"\n[bayes]\nenabled = false\n"
    ))
    .unwrap()
}

struct Duplex {
    io: BufReader<DuplexStream>,
    _stop: watch::Sender<bool>,
}

impl Duplex {
    fn start(next_hop: SocketAddr, tweak: impl FnOnce(&mut SessionConfig)) -> Duplex {
        let pipeline = Pipeline::new(&config(next_hop));
        Self::start_with(next_hop, tweak, pipeline)
    }

    fn start_with<F: MessageFilter>(
        next_hop: SocketAddr,
        tweak: impl FnOnce(&mut SessionConfig),
        filter: F,
    ) -> Duplex {
        let (client, _task, stop) = spawn_session(next_hop, tweak, filter);
        Duplex {
            io: BufReader::new(client),
            _stop: stop,
        }
    }

    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.io.read_line(&mut line).await.unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send(&mut self, b: &[u8]) {
        self.io.get_mut().write_all(b).await.unwrap();
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

fn code(r: &str) -> &str {
    r.get(..3).unwrap_or("")
}

#[tokio::test]
async fn pipelined_batch_gets_replies_in_order() {
    let sink = Sink::start(Behaviour::default()).await;
    let mut d = Duplex::start(sink.addr, |_| {});
    assert_eq!(code(&d.reply().await), "220");
    d.send(b"EHLO a.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n").await;
    let replies = [
        d.reply().await,
        d.reply().await,
        d.reply().await,
        d.reply().await,
        d.reply().await,
    ];
    let codes: Vec<&str> = replies.iter().map(|r| code(r)).collect();
    assert_eq!(codes, ["250", "250", "250", "250", "354"], "{replies:?}");
    d.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n").await;
    assert_eq!(code(&d.reply().await), "250");
    assert_eq!(code(&d.reply().await), "221");
    assert_eq!(sink.received()[0].rcpts.len(), 2);
}

#[tokio::test]
async fn commands_out_of_order_and_bad_syntax() {
    let sink = Sink::start(Behaviour::default()).await;
    let mut d = Duplex::start(sink.addr, |s| s.max_recipients = 2);
    d.reply().await;
    let cases: &[(&str, &str)] = &[
        ("MAIL FROM:<a@x.test>", "503"),
        ("RCPT TO:<b@y.test>", "503"),
        ("FOO bar", "502"),
        ("STARTTLS", "502"),
        ("HELO", "501"),
        ("EHLO a.test", "250"),
        ("RCPT TO:<b@y.test>", "503"),
        ("DATA", "503"),
        ("MAIL FROM:<a@x.test> FROBNICATE", "555"),
        ("MAIL FROM:<a@x.test", "501"),
        ("MAIL FROM:<a@x.test> SMTPUTF8", "250"),
        ("MAIL FROM:<a@x.test>", "503"),
        ("XFORWARD ADDR=192.0.2.1", "503"),
        ("DATA", "503"),
        ("RCPT TO:<>", "501"),
        ("RCPT TO:<b@y.test> NOTIFY=BOGUS", "555"),
        ("RCPT TO:<b@y.test>", "250"),
        ("RCPT TO:<c@y.test>", "250"),
        ("RCPT TO:<d@y.test>", "452"),
        ("VRFY b", "252"),
        ("NOOP", "250"),
        ("RSET", "250"),
        ("DATA", "503"),
        ("XFORWARD ADDR=192.0.2.1", "250"),
        ("XFORWARD BOGUS=1", "555"),
        ("QUIT", "221"),
    ];
    for (line, want) in cases {
        let r = d.cmd(line).await;
        assert_eq!(code(&r), *want, "{line} -> {r}");
    }
}

#[tokio::test]
async fn over_long_command_line_is_refused_and_session_continues() {
    let sink = Sink::start(Behaviour::default()).await;
    let mut d = Duplex::start(sink.addr, |_| {});
    d.reply().await;
    let long = format!("NOOP {}", "x".repeat(5000));
    assert_eq!(code(&d.cmd(&long).await), "500");
    assert_eq!(code(&d.cmd("NOOP").await), "250");
}

#[tokio::test(start_paused = true)]
async fn idle_client_times_out_with_421() {
    // No next hop is needed before MAIL.
    let mut d = Duplex::start("127.0.0.1:9".parse().unwrap(), |s| {
        s.command_timeout = Duration::from_secs(300)
    });
    d.reply().await;
    d.cmd("EHLO a.test").await;
    // Paused time advances by itself while everything waits.
    let r = d.reply().await;
    assert!(r.starts_with("421 4.4.2 "), "{r}");
    assert_eq!(d.reply().await, "", "connection should be closed");
}

/// A filter that misbehaves on purpose: sleeps past the budget, panics, or fails.
struct BadFilter(&'static str);

impl MessageFilter for BadFilter {
    type Report = ();
    type Prepared = ();

    async fn prepare(&self, _: &Envelope, _: &[u8]) {}

    fn scan(&self, env: &Envelope, msg: &[u8], _: &str, _: &()) -> Result<Disposition<()>, String> {
        match self.0 {
            "slow" => std::thread::sleep(Duration::from_millis(1500)),
            "panic" => panic!("scan exploded"),
            _ => return Err("model store unreadable".into()),
        }
        Ok(Disposition {
            report: (),
            parts: vec![Part {
                recipients: (0..env.recipients.len()).collect(),
                delivery: Delivery::Relay(Rewrite {
                    prefix: vec![],
                    keep: std::iter::once(0..msg.len()).collect(),
                }),
                quarantine: false,
            }],
        })
    }

    fn log(&self, _: &MessageRecord<'_, ()>) {}
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_failures_tempfail_and_relay_nothing() {
    let sink = Sink::start(Behaviour::default()).await;
    for (kind, want) in [
        ("slow", "451 4.3.0 Scan time budget exceeded"),
        ("panic", "451 4.3.0 "),
        ("fail", "451 4.3.0 "),
    ] {
        let mut d = Duplex::start_with(
            sink.addr,
            |s| s.scan_budget = Duration::from_millis(200),
            BadFilter(kind),
        );
        d.reply().await;
        d.send(b"EHLO a.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
            .await;
        for _ in 0..4 {
            d.reply().await;
        }
        d.send(b"Subject: x\r\n\r\nbody\r\n.\r\n").await;
        let r = d.reply().await;
        assert!(r.starts_with(want), "{kind}: {r}");
        // The session goes on and the next hop got nothing.
        assert_eq!(code(&d.cmd("NOOP").await), "250");
    }
    assert_eq!(sink.data_seen.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn random_command_streams_never_panic_the_session() {
    let sink = Sink::start(Behaviour::default()).await;
    let words: &[&[u8]] = &[
        b"EHLO x",
        b"HELO",
        b"LHLO y",
        b"MAIL FROM:<a@b>",
        b"MAIL FROM:<",
        b"RCPT TO:<c@d>",
        b"RCPT TO:",
        b"DATA",
        b"RSET",
        b"NOOP",
        b"XFORWARD ADDR=1.2.3.4",
        b"XFORWARD NAME",
        b" SIZE=99999999999999999999",
        b" NOTIFY=NEVER",
        b" ORCPT=rfc822;x",
        b".",
        b"\r\n",
        b"\n",
        b"\r",
        b"\x00\xff",
        b"BDAT 10",
    ];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut total_replies = 0;
    for _ in 0..60 {
        let (client, task, _stop) =
            spawn_session(sink.addr, |_| {}, Pipeline::new(&config(sink.addr)));
        let (mut r, mut w) = tokio::io::split(client);
        let mut input = Vec::new();
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            input.extend_from_slice(words[(x % words.len() as u64) as usize]);
        }
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink).await;
            sink
        });
        let _ = w.write_all(&input).await;
        drop(w);
        let done = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(matches!(done, Ok(Ok(_))), "session panicked or hung");
        let replies = reader.await.unwrap();
        // Every reply is a well-formed SMTP reply line.
        for line in String::from_utf8_lossy(&replies).lines() {
            assert!(
                line.len() >= 4 && line[..3].bytes().all(|b| b.is_ascii_digit()),
                "{line}"
            );
        }
        total_replies += replies.len();
    }
    assert!(
        total_replies > 60 * 200,
        "sessions answered too little: {total_replies} bytes"
    );
}

/// A client that trickles a command line a byte a second is cut off `command_timeout` after
/// the line began, although every byte came well within the idle limit.
#[tokio::test(start_paused = true)]
async fn a_command_line_trickling_in_is_cut_off_at_its_deadline() {
    let mut d = Duplex::start("127.0.0.1:9".parse().unwrap(), |s| {
        s.command_timeout = Duration::from_secs(30)
    });
    d.reply().await;
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    let line = "NOOP ".to_string() + &"x".repeat(1000);
    let mut reply = String::new();
    for b in line.bytes() {
        d.send(&[b]).await;
        sent += 1;
        // A byte a second; the session answers (421) once the line is past its deadline.
        let r = tokio::time::timeout(Duration::from_secs(1), d.reply()).await;
        if let Ok(r) = r {
            reply = r;
            break;
        }
    }
    assert!(
        reply.starts_with("421 4.4.2"),
        "{reply:?} after {sent} bytes"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(29) && took <= Duration::from_secs(32),
        "cut off after {took:?}"
    );
}

/// Message content trickling in slower than `min_data_rate` is cut off once `data_timeout`
/// has passed since 354; content at a good rate is not.
#[tokio::test(start_paused = true)]
async fn message_content_below_the_minimum_rate_is_cut_off() {
    let sink = Sink::start(Behaviour::default()).await;
    let mut d = Duplex::start(sink.addr, |s| {
        s.data_timeout = Duration::from_secs(20);
        s.min_data_rate = 100;
    });
    d.reply().await;
    for c in ["EHLO a.test", "MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>"] {
        assert_eq!(code(&d.cmd(c).await), "250", "{c}");
    }
    assert_eq!(code(&d.cmd("DATA").await), "354");
    let started = tokio::time::Instant::now();
    let mut reply = String::new();
    // Ten bytes a second: the deadline grows by 0.1 s each second, so it is reached at
    // about 20 / 0.9 = 22 s.
    for _ in 0..600 {
        d.send(b"0123456789").await;
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), d.reply()).await {
            reply = r;
            break;
        }
    }
    assert!(reply.starts_with("421 4.4.2"), "{reply:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(21) && took <= Duration::from_secs(24),
        "cut off after {took:?}"
    );
    assert_eq!(sink.data_seen.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Unknown and malformed commands past `hard_error_limit` end the session with 421.
#[tokio::test]
async fn too_many_errors_end_the_session() {
    let mut d = Duplex::start("127.0.0.1:9".parse().unwrap(), |s| s.hard_error_limit = 20);
    d.reply().await;
    for i in 1..20 {
        let r = d.cmd("FROB").await;
        assert_eq!(code(&r), "502", "error {i}: {r}");
    }
    assert_eq!(
        code(&d.cmd("NOOP").await),
        "250",
        "good commands do not count"
    );
    let r = d.cmd("RCPT TO:<b@y.test>").await;
    assert!(r.starts_with("503"), "{r}");
    let r = d.reply().await;
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert_eq!(d.reply().await, "", "closed");
}
