//! The clamd client: the message streamed with `zINSTREAM` (4-byte big-endian chunk
//! lengths, a zero length to end) over a unix or TCP socket, straight from the bytes the
//! session holds (no copy); several addresses tried in order (failover); everything under
//! the caller's deadline. clamd decodes the MIME parts and archives itself (`ScanMail`,
//! `ScanArchive`).

use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Where a clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddr {
    /// A unix socket (`/run/clamav/clamd.ctl` on Debian).
    Unix(PathBuf),
    /// `host:port`.
    Tcp(std::net::SocketAddr),
}

impl ClamdAddr {
    /// A path (starting with `/`) or `IP:port`.
    pub fn parse(s: &str) -> Option<Self> {
        if s.starts_with('/') {
            Some(ClamdAddr::Unix(s.into()))
        } else {
            s.parse().ok().map(ClamdAddr::Tcp)
        }
    }
}

impl std::fmt::Display for ClamdAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClamdAddr::Unix(p) => write!(f, "{}", p.display()),
            ClamdAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// What clamd said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scanned {
    /// No virus.
    Clean,
    /// A signature matched (its name, clamd's `.UNOFFICIAL` suffix kept).
    Infected(String),
    /// No clamd answered (why, for each address).
    Failed(String),
}

/// The client settings.
#[derive(Debug, Clone)]
pub struct Clamd {
    /// Addresses, tried in order.
    pub addrs: Vec<ClamdAddr>,
    /// Longest wait for one clamd (also bounded by the caller's deadline).
    pub timeout: Duration,
}

const CHUNK: usize = 64 * 1024;

impl Clamd {
    /// Scan `msg`, trying each address until one answers, before `deadline`.
    pub async fn scan(&self, msg: &[u8], deadline: Instant) -> Scanned {
        let mut why = vec![];
        for addr in &self.addrs {
            let until = deadline.min(Instant::now() + self.timeout);
            let done = match addr {
                ClamdAddr::Unix(p) => {
                    match tokio::time::timeout_at(until, tokio::net::UnixStream::connect(p)).await {
                        Ok(Ok(s)) => tokio::time::timeout_at(until, instream(s, msg)).await,
                        Ok(Err(e)) => Ok(Err(e)),
                        Err(t) => Err(t),
                    }
                }
                ClamdAddr::Tcp(a) => {
                    match tokio::time::timeout_at(until, tokio::net::TcpStream::connect(a)).await {
                        Ok(Ok(s)) => tokio::time::timeout_at(until, instream(s, msg)).await,
                        Ok(Err(e)) => Ok(Err(e)),
                        Err(t) => Err(t),
                    }
                }
            };
            match done {
                Ok(Ok(reply)) => match parse_reply(&reply) {
                    Ok(s) => return s,
                    Err(e) => why.push(format!("{addr}: {e}")),
                },
                Ok(Err(e)) => why.push(format!("{addr}: {e}")),
                Err(_) => why.push(format!("{addr}: no answer in time")),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Scanned::Failed(why.join("; "))
    }
}

/// Stream `msg` and read the reply up to its NUL.
async fn instream<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    msg: &[u8],
) -> std::io::Result<String> {
    s.write_all(b"zINSTREAM\0").await?;
    for chunk in msg.chunks(CHUNK) {
        s.write_all(&(chunk.len() as u32).to_be_bytes()).await?;
        s.write_all(chunk).await?;
    }
    s.write_all(&0u32.to_be_bytes()).await?;
    s.flush().await?;
    let mut reply = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.contains(&0) || reply.len() > 4096 {
            break;
        }
    }
    let end = reply.iter().position(|&b| b == 0).unwrap_or(reply.len());
    Ok(String::from_utf8_lossy(&reply[..end]).trim().to_string())
}

/// `stream: OK`, `stream: NAME FOUND`, or an error.
fn parse_reply(reply: &str) -> Result<Scanned, String> {
    let body = reply
        .strip_prefix("stream:")
        .map(str::trim)
        .unwrap_or(reply);
    if body == "OK" {
        Ok(Scanned::Clean)
    } else if let Some(name) = body.strip_suffix("FOUND") {
        Ok(Scanned::Infected(name.trim().to_string()))
    } else if body.is_empty() {
        Err("closed without a reply".into())
    } else {
        Err(format!("clamd said {body:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply("stream: OK"), Ok(Scanned::Clean));
        assert_eq!(
            parse_reply("stream: Eicar-Test-Signature.UNOFFICIAL FOUND"),
            Ok(Scanned::Infected("Eicar-Test-Signature.UNOFFICIAL".into()))
        );
        assert!(parse_reply("INSTREAM size limit exceeded. ERROR").is_err());
        assert!(parse_reply("").is_err());
        assert_eq!(
            ClamdAddr::parse("/run/clamav/clamd.ctl"),
            Some(ClamdAddr::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert!(ClamdAddr::parse("127.0.0.1:3310").is_some());
        assert!(ClamdAddr::parse("nonsense").is_none());
    }

    #[tokio::test]
    async fn a_duplex_clamd_sees_the_chunks_and_the_end() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let msg = vec![b'x'; CHUNK + 10];
        let fake = async move {
            let mut got = vec![];
            let mut buf = [0u8; 8192];
            while !got.ends_with(&[0, 0, 0, 0]) {
                let n = server.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            server.write_all(b"stream: OK\0").await.unwrap();
            got
        };
        let (reply, got) = tokio::join!(instream(client, &msg), fake);
        assert_eq!(reply.unwrap(), "stream: OK");
        assert!(got.starts_with(b"zINSTREAM\0\0\x01\0\0"));
        assert_eq!(got.len(), 10 + 4 + CHUNK + 4 + 10 + 4);
    }
}
