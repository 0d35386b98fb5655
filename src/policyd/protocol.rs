//! The Postfix policy delegation protocol (`SMTPD_POLICY_README`), without I/O: a request
//! is `name=value` lines ended by an empty line; the answer is `action=...` and an empty
//! line. Connections carry many requests, possibly pipelined, arriving in any pieces.
//! Unknown attributes are kept and ignored; a malformed request is an error, after which
//! the connection is closed without a reply, as the protocol says.

/// A request larger than this is malformed (Postfix's own are well under 2 KiB).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Why a connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A line is not `name=value`.
    #[error("malformed attribute line {0:?}")]
    NotAnAttribute(String),
    /// The request is larger than [`MAX_REQUEST`].
    #[error("request larger than {MAX_REQUEST} bytes")]
    TooLarge,
    /// Not `request=smtpd_access_policy`.
    #[error("request={0:?} is not smtpd_access_policy")]
    WrongRequest(String),
}

/// One request's attributes, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    attrs: Vec<(String, String)>,
}

impl Request {
    /// From `(name, value)` pairs (tests, benches).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Request {
            attrs: pairs
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The value of `name` (the last one, as Postfix's own lookups do), `""` when absent.
    pub fn get(&self, name: &str) -> &str {
        self.attrs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The request in protocol form.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (n, v) in &self.attrs {
            out.push_str(n);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        }
        out.push('\n');
        out
    }

    /// Refuse anything but an access policy request.
    pub fn check_kind(&self) -> Result<(), ProtocolError> {
        match self.get("request") {
            "smtpd_access_policy" => Ok(()),
            other => Err(ProtocolError::WrongRequest(
                other.chars().take(64).collect(),
            )),
        }
    }
}

/// Bytes in, requests out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    scanned: usize,
}

impl Decoder {
    /// Append bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True when bytes of an unfinished request are buffered.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete request, if one is buffered.
    pub fn next_request(&mut self) -> Result<Option<Request>, ProtocolError> {
        let from = self.scanned;
        let end = memchr::memchr_iter(b'\n', &self.buf[from..])
            .map(|i| i + from)
            .find(|&i| ends_request(&self.buf, i));
        let Some(end) = end else {
            if self.buf.len() > MAX_REQUEST {
                return Err(ProtocolError::TooLarge);
            }
            self.scanned = self.buf.len();
            return Ok(None);
        };
        if end > MAX_REQUEST {
            return Err(ProtocolError::TooLarge);
        }
        let parsed = parse(&self.buf[..=end]);
        // Usually the whole buffer was one request: clearing moves nothing.
        if end + 1 == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..=end);
        }
        self.scanned = 0;
        parsed.map(Some)
    }
}

/// The attributes of one request block.
fn parse(block: &[u8]) -> Result<Request, ProtocolError> {
    let text = String::from_utf8_lossy(block);
    let mut attrs = Vec::with_capacity(32);
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((n, v)) if !n.is_empty() => attrs.push((n.to_string(), v.to_string())),
            _ => {
                return Err(ProtocolError::NotAnAttribute(
                    line.chars().take(80).collect(),
                ));
            }
        }
    }
    Ok(Request { attrs })
}

/// True when an empty line (LF, or CR LF) ends at `i`.
fn ends_request(buf: &[u8], i: usize) -> bool {
    if buf[i] != b'\n' {
        return false;
    }
    let line_start = |j: usize| j == 0 || buf[j - 1] == b'\n';
    line_start(i) || (buf[i - 1] == b'\r' && line_start(i - 1))
}

/// The answer line for `action` (line breaks in it become spaces).
pub fn encode_action(action: &str) -> String {
    let mut out = String::with_capacity(action.len() + 9);
    out.push_str("action=");
    out.push_str(action);
    out.push_str("\n\n");
    if action.contains(['\n', '\r']) {
        let clean = action.replace(['\n', '\r'], " ");
        out = format!("action={clean}\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(sender: &str) -> String {
        format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nsender={sender}\nrecipient=b@x.test\nunknown_future_attr=1\n\n"
        )
    }

    #[test]
    fn pipelined_requests_in_any_pieces() {
        let two = format!("{}{}", req("a@x.test"), req("c=d@x.test"));
        for step in [1, 2, 3, 7, two.len()] {
            let mut d = Decoder::default();
            let mut got = vec![];
            for chunk in two.as_bytes().chunks(step) {
                d.feed(chunk);
                while let Some(r) = d.next_request().unwrap() {
                    got.push(r);
                }
            }
            assert_eq!(got.len(), 2, "chunks of {step}");
            assert_eq!(got[0].get("sender"), "a@x.test");
            assert_eq!(got[1].get("sender"), "c=d@x.test", "a value may hold `=`");
            assert_eq!(got[1].get("absent"), "");
            assert!(got[0].check_kind().is_ok());
            assert!(!d.pending());
        }
    }

    #[test]
    fn crlf_lines_are_accepted() {
        let mut d = Decoder::default();
        d.feed(b"request=smtpd_access_policy\r\nsender=a@x.test\r\n\r\n");
        assert_eq!(d.next_request().unwrap().unwrap().get("sender"), "a@x.test");
    }

    #[test]
    fn malformed_lines_and_huge_requests_are_errors() {
        let mut d = Decoder::default();
        d.feed(b"request=smtpd_access_policy\nno equals sign\n\n");
        assert!(matches!(
            d.next_request(),
            Err(ProtocolError::NotAnAttribute(_))
        ));
        let mut d = Decoder::default();
        d.feed(b"=value\n\n");
        assert!(d.next_request().is_err());
        let mut d = Decoder::default();
        d.feed(format!("sender={}", "x".repeat(MAX_REQUEST)).as_bytes());
        assert_eq!(d.next_request(), Err(ProtocolError::TooLarge));
        let mut d = Decoder::default();
        d.feed(format!("sender={}\n\n", "x".repeat(MAX_REQUEST)).as_bytes());
        assert_eq!(d.next_request(), Err(ProtocolError::TooLarge));
        let wrong = Request::from_pairs([("request", "junk")]);
        assert!(matches!(
            wrong.check_kind(),
            Err(ProtocolError::WrongRequest(_))
        ));
        assert!(Request::default().check_kind().is_err());
    }

    #[test]
    fn an_action_is_one_line() {
        assert_eq!(encode_action("DUNNO"), "action=DUNNO\n\n");
        assert_eq!(encode_action("REJECT a\nb"), "action=REJECT a b\n\n");
    }
}
