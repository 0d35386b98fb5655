//! Sans-IO SMTP/LMTP server codec: bytes in, commands and message contents out.
//!
//! The session pushes whatever it read with [`Decoder::extend`] and pulls [`Event`]s with
//! [`Decoder::next_event`]; after it accepted DATA it calls [`Decoder::begin_data`]. The codec
//! never touches a socket, so every edge (pipelining, dot-stuffing, smuggling vectors,
//! over-long lines) is unit-tested here on plain byte slices.
//!
//! DATA ends only on `<CRLF>.<CRLF>`: a dot line introduced or terminated by a bare LF or a
//! bare CR is content, never the end (those are SMTP-smuggling vectors). Lines are kept
//! byte-exact; only the dot-stuffing dot after a CRLF is removed.

use crate::smtp::envelope::{MailParams, RcptParams, XforwardAttr};
use crate::smtp::params::{mail_params, rcpt_params};
use crate::smtp::xtext;

/// Size limits the decoder enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest command line, without CRLF.
    pub max_command_line: usize,
    /// Longest data line, without CRLF: a safety limit, far above RFC 5321's 1000 octets.
    pub max_data_line: usize,
    /// Largest message (after dot-unstuffing).
    pub max_message_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_command_line: 2048,
            max_data_line: 1 << 20,
            max_message_size: 50 << 20,
        }
    }
}

/// One parsed SMTP/LMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO name`
    Helo(String),
    /// `EHLO name`
    Ehlo(String),
    /// `LHLO name` (LMTP)
    Lhlo(String),
    /// `MAIL FROM:<path> params`; the empty string is the null sender.
    Mail {
        /// Reverse path without brackets.
        from: String,
        /// Parsed ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> params`
    Rcpt {
        /// Forward path without brackets.
        to: String,
        /// Parsed ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`
    Data,
    /// `RSET`
    Rset,
    /// `NOOP`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY`
    Vrfy,
    /// `HELP`
    Help,
    /// `XFORWARD attr=value ...` (Postfix's client attribute forwarding)
    Xforward(Vec<(XforwardAttr, String)>),
    /// A real SMTP command that filterd does not offer (STARTTLS, AUTH, BDAT, EXPN, ETRN ...).
    NotImplemented(String),
}

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Not an SMTP verb.
    Unknown,
    /// Line over the command limit.
    TooLong,
    /// Wrong syntax; the text says what was expected.
    Syntax(&'static str),
    /// Unparseable mailbox.
    BadAddress(String),
    /// Unknown or malformed ESMTP parameter.
    BadParameter(String),
}

/// Why a message was refused at the end of DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    /// Over `max_message_size`.
    TooBig,
    /// A line over `max_data_line`.
    LineTooLong,
    /// The message would have taken more than the memory budget had left.
    OverBudget,
}

/// What the decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A command line.
    Command(Result<Command, CommandError>),
    /// The end of DATA: the unstuffed message, or why it is refused.
    Message(Result<Vec<u8>, DataError>),
}

#[derive(Debug)]
enum Mode {
    Command { discarding: bool },
    Data(DataState),
}

#[derive(Debug)]
struct DataState {
    out: Vec<u8>,
    /// The next line starts right after a CRLF (or at the start of DATA).
    after_crlf: bool,
    /// We are inside a line that already exceeded the limit and was dropped.
    in_long_line: bool,
    too_big: bool,
    line_too_long: bool,
    over_budget: bool,
}

/// The incremental decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
    scan: usize,
    mode: Mode,
    limits: Limits,
}

impl Decoder {
    /// A decoder in command mode.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            buf: Vec::with_capacity(8192),
            pos: 0,
            scan: 0,
            mode: Mode::Command { discarding: false },
            limits,
        }
    }

    /// Append bytes read from the client.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into directly (append at its end, at least `room` bytes free), so
    /// what the socket gives is not copied once more.
    pub fn read_target(&mut self, room: usize) -> &mut Vec<u8> {
        self.compact();
        self.buf.reserve(room);
        &mut self.buf
    }

    /// Drop what was consumed before more is appended.
    fn compact(&mut self) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            self.scan = 0;
            // Give back what one long line made us grow to.
            if self.buf.capacity() > 256 * 1024 {
                self.buf.shrink_to(8192);
            }
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.scan -= self.pos;
            self.pos = 0;
        }
    }

    /// True when part of a command line was read and not its end (also one too long to
    /// keep, which is being skipped).
    pub fn in_command_line(&self) -> bool {
        match self.mode {
            Mode::Command { discarding } => discarding || self.buf.len() > self.pos,
            Mode::Data(_) => false,
        }
    }

    /// True while message content is being received.
    pub(crate) fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data(_))
    }

    /// Switch to message content, after the session answered 354. The message buffer is
    /// made the declared size (`SIZE=`) at once, within the size limit, so a big message is
    /// one allocation and not a chain of doublings (with two copies alive at each).
    pub fn begin_data(&mut self, declared_size: Option<u64>) {
        let size = declared_size
            .map_or(16 * 1024, |s| s.saturating_add(1024) as usize)
            .min(self.limits.max_message_size + 1024);
        self.mode = Mode::Data(DataState {
            out: Vec::with_capacity(size),
            after_crlf: true,
            in_long_line: false,
            too_big: false,
            line_too_long: false,
            over_budget: false,
        });
    }

    /// Stop keeping the message being received (it went over the memory budget): the rest
    /// of it is read and dropped, and its end is [`DataError::OverBudget`].
    pub fn abandon_data(&mut self) {
        if let Mode::Data(st) = &mut self.mode {
            st.over_budget = true;
            st.out = Vec::new();
        }
    }

    /// The next complete event in the buffer, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        match self.mode {
            Mode::Command { .. } => self.next_command().map(Event::Command),
            Mode::Data(_) => self.next_data().map(Event::Message),
        }
    }

    fn next_command(&mut self) -> Option<Result<Command, CommandError>> {
        let max = self.limits.max_command_line;
        let Mode::Command { discarding } = &mut self.mode else {
            return None;
        };
        match memchr::memchr(b'\n', &self.buf[self.scan..]) {
            Some(off) => {
                let end = self.scan + off;
                let mut line = &self.buf[self.pos..end];
                if let [rest @ .., b'\r'] = line {
                    line = rest;
                }
                let result = if std::mem::take(discarding) || line.len() > max {
                    Err(CommandError::TooLong)
                } else {
                    parse_command(line)
                };
                self.pos = end + 1;
                self.scan = self.pos;
                Some(result)
            }
            None => {
                if self.buf.len() - self.pos > max {
                    *discarding = true;
                    self.pos = self.buf.len();
                }
                self.scan = self.buf.len();
                None
            }
        }
    }

    fn next_data(&mut self) -> Option<Result<Vec<u8>, DataError>> {
        let limits = self.limits;
        loop {
            let Mode::Data(st) = &mut self.mode else {
                return None;
            };
            let Some(off) = memchr::memchr(b'\n', &self.buf[self.scan..]) else {
                let partial = self.buf.len() - self.pos;
                if partial > limits.max_data_line + 1 {
                    // Drop the over-long line but its last byte, which may be the CR of its CRLF.
                    st.line_too_long = true;
                    st.in_long_line = true;
                    self.pos = self.buf.len() - 1;
                }
                self.scan = self.buf.len();
                return None;
            };
            let end = self.scan + off + 1;
            let line = &self.buf[self.pos..end];
            self.pos = end;
            self.scan = end;
            let crlf = line.len() >= 2 && line[line.len() - 2] == b'\r';
            let line_start = st.after_crlf && !st.in_long_line;
            st.after_crlf = crlf;
            if std::mem::take(&mut st.in_long_line) {
                continue;
            }
            if line_start && line == b".\r\n" {
                let Mode::Data(st) =
                    std::mem::replace(&mut self.mode, Mode::Command { discarding: false })
                else {
                    return None;
                };
                return Some(if st.over_budget {
                    Err(DataError::OverBudget)
                } else if st.too_big {
                    Err(DataError::TooBig)
                } else if st.line_too_long {
                    Err(DataError::LineTooLong)
                } else {
                    Ok(st.out)
                });
            }
            let content = if line_start && line.first() == Some(&b'.') {
                &line[1..]
            } else {
                line
            };
            let body_len = content.len() - if crlf { 2 } else { 1 };
            if body_len > limits.max_data_line {
                st.line_too_long = true;
            }
            if st.over_budget {
                continue;
            }
            if st.too_big || st.out.len() + content.len() > limits.max_message_size {
                st.too_big = true;
                st.out = Vec::new();
            } else {
                st.out.extend_from_slice(content);
            }
        }
    }
}

/// Dot-stuff a message for sending after DATA, appending the terminating `.CRLF`.
///
/// A dot is doubled at the start of every line, where a line starts after any LF: a next hop
/// that treats a bare LF as a line end (as many do) must never see an end-of-data line or a
/// command hidden in the content. A message that does not end in CRLF gets one, so that the
/// terminator stands on its own line.
pub fn dot_stuff(parts: &[&[u8]], out: &mut Vec<u8>) {
    let mut s = DotStuffer::default();
    for part in parts {
        s.push(part, out);
    }
    s.finish(out);
}

/// [`dot_stuff`] in pieces, so a big message goes out in bounded chunks instead of one
/// whole dot-stuffed copy: push the content in any slices, then finish.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last two bytes pushed (`\r`, `\n`, or 0 for anything else / nothing).
    tail: [u8; 2],
    empty: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            tail: [0, 0],
            empty: true,
        }
    }
}

impl DotStuffer {
    /// Append `bytes`, dot-stuffed, to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    out.extend_from_slice(&rest[..=i]);
                    rest = &rest[i + 1..];
                    self.at_line_start = true;
                }
                None => {
                    out.extend_from_slice(rest);
                    rest = &[];
                    self.at_line_start = false;
                }
            }
        }
        match bytes {
            [] => {}
            [b] => self.tail = [self.tail[1], *b],
            [.., a, b] => self.tail = [*a, *b],
        }
        self.empty &= bytes.is_empty();
    }

    /// Append the end: a CRLF when the content does not end with one (a bare LF at the end
    /// becomes CRLF), then the terminating `.CRLF`. A caller writing `out` in chunks keeps
    /// the last byte pushed in it until then, so that bare LF can still be replaced.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.empty {
            match self.tail {
                [b'\r', b'\n'] => {}
                [_, b'\n'] => {
                    // A bare LF ends the content: finish the line properly.
                    debug_assert_eq!(out.last(), Some(&b'\n'));
                    out.pop();
                    out.extend_from_slice(b"\r\n");
                }
                _ => out.extend_from_slice(b"\r\n"),
            }
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// ESMTP parameters as `(KEY, value)`, keys upper-cased.
pub type Params = Vec<(String, Option<String>)>;

fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let split = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (verb, rest) = line.split_at(split);
    let rest = trim(rest);
    let verb = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax("no arguments allowed"))
        }
    };
    match verb.as_slice() {
        b"HELO" | b"EHLO" | b"LHLO" => {
            let name = std::str::from_utf8(rest)
                .ok()
                .filter(|s| !s.is_empty() && !s.bytes().any(|b| b.is_ascii_control()))
                .ok_or(CommandError::Syntax("EHLO hostname"))?
                .to_string();
            Ok(match verb.as_slice() {
                b"HELO" => Command::Helo(name),
                b"EHLO" => Command::Ehlo(name),
                _ => Command::Lhlo(name),
            })
        }
        b"MAIL" => {
            let rest = strip_prefix_ci(rest, b"FROM:")
                .ok_or(CommandError::Syntax("MAIL FROM:<address>"))?;
            let (from, params) = parse_path(rest, true)?;
            Ok(Command::Mail {
                from,
                params: mail_params(&params).map_err(|e| CommandError::BadParameter(e.0))?,
            })
        }
        b"RCPT" => {
            let rest =
                strip_prefix_ci(rest, b"TO:").ok_or(CommandError::Syntax("RCPT TO:<address>"))?;
            let (to, params) = parse_path(rest, false)?;
            Ok(Command::Rcpt {
                to,
                params: rcpt_params(&params).map_err(|e| CommandError::BadParameter(e.0))?,
            })
        }
        b"DATA" => no_args(Command::Data),
        b"RSET" => no_args(Command::Rset),
        b"QUIT" => no_args(Command::Quit),
        b"NOOP" => Ok(Command::Noop),
        b"VRFY" => Ok(Command::Vrfy),
        b"HELP" => Ok(Command::Help),
        b"XFORWARD" => {
            let params = split_params(rest)?;
            if params.is_empty() {
                return Err(CommandError::Syntax("XFORWARD attribute=value..."));
            }
            let mut attrs = Vec::with_capacity(params.len());
            for (k, v) in params {
                let attr = XforwardAttr::from_name(&k).ok_or(CommandError::BadParameter(k))?;
                let v = v.ok_or(CommandError::Syntax("XFORWARD attribute=value..."))?;
                attrs.push((attr, xtext::decode(&v)));
            }
            Ok(Command::Xforward(attrs))
        }
        b"STARTTLS" | b"AUTH" | b"BDAT" | b"EXPN" | b"ETRN" | b"TURN" | b"ATRN" => Ok(
            Command::NotImplemented(String::from_utf8_lossy(&verb).into_owned()),
        ),
        _ => Err(CommandError::Unknown),
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| trim(&s[prefix.len()..]))
}

/// Parse `<path> params` (brackets optional, as Postfix allows); returns the mailbox without
/// brackets or source route, and the raw parameters.
fn parse_path(s: &[u8], allow_null: bool) -> Result<(String, Params), CommandError> {
    let bad = || CommandError::BadAddress(String::from_utf8_lossy(s).into_owned());
    let (addr, rest) = if s.first() == Some(&b'<') {
        let mut quoted = false;
        let mut escaped = false;
        let mut end = None;
        for (i, &b) in s.iter().enumerate().skip(1) {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b'>' && !quoted {
                end = Some(i);
                break;
            }
        }
        let end = end.ok_or_else(bad)?;
        (&s[1..end], &s[end + 1..])
    } else {
        let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
        (&s[..end], &s[end..])
    };
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(bad());
    }
    // Drop an RFC 5321 source route (@a,@b:user@c).
    let addr = if addr.first() == Some(&b'@') {
        match addr.iter().position(|&b| b == b':') {
            Some(i) => &addr[i + 1..],
            None => return Err(bad()),
        }
    } else {
        addr
    };
    let addr = std::str::from_utf8(addr).map_err(|_| bad())?;
    if addr.is_empty() && !allow_null {
        return Err(bad());
    }
    if addr.len() > 512 || addr.chars().any(|c| c.is_control()) {
        return Err(bad());
    }
    Ok((addr.to_string(), split_params(rest)?))
}

/// Split `KEY=VALUE KEY` parameters; keys upper-cased.
pub(crate) fn split_params(s: &[u8]) -> Result<Params, CommandError> {
    let s = std::str::from_utf8(s).map_err(|_| CommandError::Syntax("parameters must be UTF-8"))?;
    Ok(s.split([' ', '\t'])
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v.to_string())),
            None => (p.to_ascii_uppercase(), None),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<Event> {
        let mut d = Decoder::new(Limits::default());
        d.extend(input);
        let mut out = vec![];
        while let Some(ev) = d.next_event() {
            let is_data = matches!(ev, Event::Command(Ok(Command::Data)));
            out.push(ev);
            if is_data {
                d.begin_data(None);
            }
        }
        out
    }

    fn message_of(input: &[u8]) -> Option<Result<Vec<u8>, DataError>> {
        let mut d = Decoder::new(Limits {
            max_data_line: 100,
            max_message_size: 1000,
            ..Limits::default()
        });
        d.begin_data(None);
        d.extend(input);
        match d.next_event() {
            Some(Event::Message(m)) => Some(m),
            _ => None,
        }
    }

    #[test]
    fn pipelined_commands_come_out_in_order() {
        let evs = decode_all(
            b"EHLO a\r\nMAIL FROM:<a@b> SIZE=10 BODY=8BITMIME\r\nRCPT TO:<c@d> NOTIFY=NEVER\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n",
        );
        assert_eq!(evs.len(), 6);
        assert_eq!(evs[0], Event::Command(Ok(Command::Ehlo("a".into()))));
        let Event::Command(Ok(Command::Mail { from, params })) = &evs[1] else {
            panic!("{:?}", evs[1])
        };
        assert_eq!(from, "a@b");
        assert_eq!(params.size, Some(10));
        assert_eq!(evs[4], Event::Message(Ok(b"hello\r\n".to_vec())));
        assert_eq!(evs[5], Event::Command(Ok(Command::Quit)));
    }

    #[test]
    fn byte_at_a_time_is_the_same_as_all_at_once() {
        let input = b"HELO x\r\nDATA\r\n..dot\r\nline\nbare\r\n.\r\nNOOP\r\n";
        let all = decode_all(input);
        let mut d = Decoder::new(Limits::default());
        let mut one = vec![];
        for b in input.iter() {
            d.extend(std::slice::from_ref(b));
            while let Some(ev) = d.next_event() {
                let is_data = matches!(ev, Event::Command(Ok(Command::Data)));
                one.push(ev);
                if is_data {
                    d.begin_data(None);
                }
            }
        }
        assert_eq!(all, one);
        assert_eq!(
            all[2],
            Event::Message(Ok(b".dot\r\nline\nbare\r\n".to_vec()))
        );
    }

    #[test]
    fn dot_unstuffing() {
        assert_eq!(message_of(b".\r\n"), Some(Ok(vec![])));
        assert_eq!(message_of(b"..\r\n.\r\n"), Some(Ok(b".\r\n".to_vec())));
        assert_eq!(
            message_of(b"a\r\n...b\r\n.\r\n"),
            Some(Ok(b"a\r\n..b\r\n".to_vec()))
        );
        // A dot in the middle of a line is content.
        assert_eq!(message_of(b"a.b\r\n.\r\n"), Some(Ok(b"a.b\r\n".to_vec())));
    }

    #[test]
    fn smuggling_vectors_do_not_end_data() {
        // (vector, content): only a dot right after a CRLF is a stuffing dot.
        let cases: &[(&[u8], &[u8])] = &[
            (b"a\n.\nMAIL FROM:<x@y>\r\n", b"a\n.\nMAIL FROM:<x@y>\r\n"),
            (
                b"a\r\n.\nMAIL FROM:<x@y>\r\n",
                b"a\r\n\nMAIL FROM:<x@y>\r\n",
            ),
            (
                b"a\n.\r\nMAIL FROM:<x@y>\r\n",
                b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            ),
            (
                b"a\r.\r\nMAIL FROM:<x@y>\r\n",
                b"a\r.\r\nMAIL FROM:<x@y>\r\n",
            ),
            (
                b"a\r\n.\rMAIL FROM:<x@y>\r\n",
                b"a\r\n\rMAIL FROM:<x@y>\r\n",
            ),
            (b"a\r.\rMAIL FROM:<x@y>\r\n", b"a\r.\rMAIL FROM:<x@y>\r\n"),
        ];
        for (vector, content) in cases {
            assert_eq!(message_of(vector), None, "{vector:?} ended DATA");
            let mut full = vector.to_vec();
            full.extend_from_slice(b".\r\n");
            assert_eq!(message_of(&full), Some(Ok(content.to_vec())), "{vector:?}");
        }
    }

    #[test]
    fn relayed_smuggling_vectors_stay_content() {
        // After dot-stuffing, no line starting after any LF is a lone dot.
        let mut out = vec![];
        dot_stuff(&[b"a\n.\nMAIL FROM:<x@y>\r\n"], &mut out);
        assert_eq!(out, b"a\n..\nMAIL FROM:<x@y>\r\n.\r\n");
        let mut out = vec![];
        dot_stuff(&[b"x\r\n", b".y"], &mut out);
        assert_eq!(out, b"x\r\n..y\r\n.\r\n");
        let mut out = vec![];
        dot_stuff(&[b""], &mut out);
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn dot_stuff_round_trips_through_the_decoder() {
        let msg = b"Subject: x\r\n\r\n.\r\n..\r\n.x\r\nend\r\n";
        let mut wire = vec![];
        dot_stuff(&[msg], &mut wire);
        assert_eq!(message_of(&wire), Some(Ok(msg.to_vec())));
    }

    #[test]
    fn long_lines_and_size() {
        let long = [b'x'; 100];
        let mut ok = long.to_vec();
        ok.extend_from_slice(b"\r\n.\r\n");
        assert!(matches!(message_of(&ok), Some(Ok(_))));
        let mut too_long = [b'x'; 101].to_vec();
        too_long.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(message_of(&too_long), Some(Err(DataError::LineTooLong)));
        // A line far over the limit, split across reads, still finds the end.
        let mut d = Decoder::new(Limits {
            max_data_line: 10,
            ..Limits::default()
        });
        d.begin_data(None);
        for _ in 0..100 {
            d.extend(&[b'y'; 7]);
            assert_eq!(d.next_event(), None);
        }
        d.extend(b"\r");
        assert_eq!(d.next_event(), None);
        d.extend(b"\n.\r\nNOOP\r\n");
        assert_eq!(
            d.next_event(),
            Some(Event::Message(Err(DataError::LineTooLong)))
        );
        assert_eq!(d.next_event(), Some(Event::Command(Ok(Command::Noop))));

        let mut big = vec![];
        for _ in 0..20 {
            big.extend_from_slice(&[b'z'; 98]);
            big.extend_from_slice(b"\r\n");
        }
        big.extend_from_slice(b".\r\n");
        assert_eq!(message_of(&big), Some(Err(DataError::TooBig)));
    }

    #[test]
    fn over_long_command_line() {
        let mut d = Decoder::new(Limits {
            max_command_line: 20,
            ..Limits::default()
        });
        d.extend(&[b'A'; 50]);
        assert_eq!(d.next_event(), None);
        d.extend(&[b'A'; 50]);
        assert_eq!(d.next_event(), None);
        d.extend(b"\r\nNOOP\r\n");
        assert_eq!(
            d.next_event(),
            Some(Event::Command(Err(CommandError::TooLong)))
        );
        assert_eq!(d.next_event(), Some(Event::Command(Ok(Command::Noop))));
    }

    #[test]
    fn command_table() {
        use CommandError::*;
        let cases: &[(&[u8], Result<Command, CommandError>)] = &[
            (b"noop", Ok(Command::Noop)),
            (b"RSET", Ok(Command::Rset)),
            (b"RSET x", Err(Syntax("no arguments allowed"))),
            (b"HELO", Err(Syntax("EHLO hostname"))),
            (b"lhlo mx", Ok(Command::Lhlo("mx".into()))),
            (b"FOO", Err(Unknown)),
            (b"", Err(Unknown)),
            (b"STARTTLS", Ok(Command::NotImplemented("STARTTLS".into()))),
            (b"MAIL TO:<a@b>", Err(Syntax("MAIL FROM:<address>"))),
            (b"RCPT TO:<>", Err(BadAddress("<>".into()))),
            (b"RCPT TO:<a@b", Err(BadAddress("<a@b".into()))),
            (b"MAIL FROM:<a@b>x", Err(BadAddress("<a@b>x".into()))),
            (b"MAIL FROM:<a@b> FOO=1", Err(BadParameter("FOO=1".into()))),
            (
                b"MAIL FROM:<a@b> SIZE=x",
                Err(BadParameter("SIZE=x".into())),
            ),
            (
                b"MAIL FROM:<a@b> BODY=BINARYMIME",
                Err(BadParameter("BODY=BINARYMIME".into())),
            ),
            (
                b"RCPT TO:<a@b> NOTIFY=SOMETIMES",
                Err(BadParameter("NOTIFY=SOMETIMES".into())),
            ),
            (b"XFORWARD FOO=bar", Err(BadParameter("FOO".into()))),
        ];
        for (line, want) in cases {
            assert_eq!(
                &parse_command(line),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn paths() {
        let Ok(Command::Mail { from, .. }) = parse_command(b"MAIL FROM:<>") else {
            panic!()
        };
        assert_eq!(from, "");
        let Ok(Command::Mail { from, .. }) = parse_command(b"mail from: <@relay,@r2:u@d>") else {
            panic!()
        };
        assert_eq!(from, "u@d");
        let Ok(Command::Rcpt { to, params }) =
            parse_command(b"RCPT TO:<\"a >b\"@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40d")
        else {
            panic!()
        };
        assert_eq!(to, "\"a >b\"@d");
        assert_eq!(params.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(params.orcpt.as_deref(), Some("rfc822;a+40d"));
        let Ok(Command::Rcpt { to, .. }) = parse_command("RCPT TO:<jösé@exämple.org>".as_bytes())
        else {
            panic!()
        };
        assert_eq!(to, "jösé@exämple.org");
        let Ok(Command::Mail { from, .. }) = parse_command(b"MAIL FROM:bare@x.org") else {
            panic!()
        };
        assert_eq!(from, "bare@x.org");
    }

    #[test]
    fn xforward_and_xtext() {
        let Ok(Command::Xforward(attrs)) =
            parse_command(b"XFORWARD NAME=mx.example ADDR=192.0.2.1 HELO=a+20b")
        else {
            panic!()
        };
        assert_eq!(attrs[2], (XforwardAttr::Helo, "a b".into()));
        assert_eq!(xtext::decode("x+2By+"), "x+y+");
        assert_eq!(xtext::encode("a b=c+"), "a+20b+3Dc+2B");
        assert_eq!(
            xtext::decode(&xtext::encode("[UNAVAILABLE] é")),
            "[UNAVAILABLE] é"
        );
    }

    #[test]
    fn fuzz_style_never_panics() {
        // Deterministic pseudo-random input in all modes; the decoder must never panic and
        // never buffer more than the limits allow.
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let alphabet = b"\r\n.MAILFROM:<>@ RCPTDATA=+\x00\xff";
        for round in 0..300 {
            let mut d = Decoder::new(Limits {
                max_command_line: 64,
                max_data_line: 32,
                max_message_size: 512,
            });
            if round % 2 == 0 {
                d.begin_data(None);
            }
            for _ in 0..200 {
                let mut chunk = vec![];
                for _ in 0..(x % 37) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.push(alphabet[(x % alphabet.len() as u64) as usize]);
                }
                x = x.wrapping_add(1);
                d.extend(&chunk);
                while let Some(ev) = d.next_event() {
                    if matches!(ev, Event::Command(Ok(Command::Data))) {
                        d.begin_data(None);
                    }
                }
                assert!(d.buf.len() - d.pos <= 64 + 37 + 2, "unbounded buffer");
            }
        }
    }
}
