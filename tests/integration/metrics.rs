//! Issue 16: `/metrics` after a known mix of mail, checked line by line and by `promtool
//! check metrics`; `/healthz` when the next hop answers and when it does not.

use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd, gtube, ham};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MARKER: &str = "TEMPFAIL-THIS-ONE";

/// One HTTP GET; (status code, body).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path).await
}

/// One HTTP request; (status code, body).
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect to metrics");
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut out = vec![];
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("response");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

fn start(next_hop: SocketAddr) -> Filterd {
    Filterd::start(
        next_hop,
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[model]\nenabled = false\n",
    )
}

/// `promtool check metrics` on `text`: None when promtool is not installed (and not required).
fn promtool(text: &str) -> Option<(bool, String)> {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("FILTERD_REQUIRE_PROMTOOL").is_none(),
                "promtool required (FILTERD_REQUIRE_PROMTOOL) but not runnable: {e}"
            );
            eprintln!("SKIP promtool check: promtool not installed (Debian package prometheus)");
            return None;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_known_mix_exactly_and_pass_promtool() {
    let sink = Sink::start(Behaviour {
        tempfail_marker: Some(MARKER.into()),
        ..Behaviour::default()
    })
    .await;
    let f = start(sink.addr);
    let metrics = f
        .metrics_addr()
        .expect("metrics listener in the ready line");
    let addr = f.addr();
    let send = |msg: Vec<u8>| async move {
        let (mut c, _) = Client::connect(addr).await;
        c.send_message("alice@example.org", &["bob@example.net"], &msg)
            .await
    };
    for _ in 0..7 {
        let r = send(ham()).await;
        assert!(r.starts_with("250"), "{r}");
    }
    for _ in 0..2 {
        let r = send(gtube()).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let mut marked = ham();
    marked.extend_from_slice(format!("{MARKER}\r\n").as_bytes());
    let r = send(marked).await;
    assert!(r.starts_with("451"), "{r}");

    // The clients hung up without QUIT: filterd sees each close a moment later, and the
    // open-connections gauge must come back to 0.
    let mut text = String::new();
    for _ in 0..100 {
        let (status, t) = get(metrics, "/metrics").await;
        assert_eq!(status, 200, "{t}");
        text = t;
        if text.lines().any(|l| l == "filterd_connections_open 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let value = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    };
    for (series, want) in [
        (
            "filterd_messages_total{action=\"Relayed\",category=\"CLEAN\",direction=\"Inbound\"}",
            7.0,
        ),
        (
            "filterd_messages_total{action=\"Discarded\",category=\"SPAM\",direction=\"Inbound\"}",
            2.0,
        ),
        (
            "filterd_messages_total{action=\"TempFailed\",category=\"CLEAN\",direction=\"Inbound\"}",
            1.0,
        ),
        ("filterd_hits_total{name=\"GTUBE\"}", 2.0),
        ("filterd_next_hop_errors_total{kind=\"tempfail\"}", 1.0),
        ("filterd_quarantined_messages_total", 2.0),
        ("filterd_message_seconds_count", 10.0),
        ("filterd_scan_seconds_count", 10.0),
        // The content went to the next hop for the 7 clean and the tempfailed one.
        ("filterd_next_hop_seconds_count", 8.0),
        ("filterd_model_loaded", 0.0),
        ("filterd_connections_open", 0.0),
    ] {
        assert_eq!(value(series), Some(want), "{series} in\n{text}");
    }
    let messages: f64 = text
        .lines()
        .filter(|l| l.starts_with("filterd_messages_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(messages, 10.0, "no other message series:\n{text}");
    assert!(
        value("filterd_quarantined_bytes_total").is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert!(text.contains("filterd_build_info{version=\""), "{text}");
    if let Some((ok, said)) = promtool(&text) {
        assert!(ok, "promtool check metrics: {said}\n{text}");
    }

    let (status, body) = get(metrics, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("listeners: serving"), "{body}");
    assert!(body.contains("next_hop: [127.0.0.1]"), "{body}");
    let (status, _) = get(metrics, "/nothing").await;
    assert_eq!(status, 404);
    let (status, body) = request(metrics, "HEAD", "/metrics").await;
    assert_eq!((status, body.as_str()), (200, ""), "HEAD has no body");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_is_503_while_the_next_hop_does_not_answer() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let f = start(dead);
    let metrics = f.metrics_addr().expect("metrics listener");
    let (status, body) = get(metrics, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unreachable"), "{body}");
    // Mail still gets a clear 451 meanwhile, and the failure is counted.
    let (mut c, _) = Client::connect(f.addr()).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert!(
        c.cmd("MAIL FROM:<alice@example.org>")
            .await
            .starts_with("250")
    );
    let r = c.cmd("RCPT TO:<bob@example.net>").await;
    assert!(r.starts_with("451"), "{r}");
    let (_, text) = get(metrics, "/metrics").await;
    assert!(
        text.contains("filterd_next_hop_errors_total{kind=\"connect\"} 1"),
        "{text}"
    );
}
