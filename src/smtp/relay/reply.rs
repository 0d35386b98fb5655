//! Reading the next hop's replies, and the rule that each must fit the command it answers.

use super::RelayError;
use crate::smtp::reply::{Enhanced, Reply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _};

/// What a reply answers, for the rule that it must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Mail,
    Rcpt,
    Data,
    Content,
}

impl Step {
    /// True when `code` is an answer this step can get: 2xx, 4xx or 5xx, and after DATA
    /// 354 instead of 2xx.
    pub(super) fn fits(self, code: u16) -> bool {
        match self {
            Step::Data => code == 354 || (400..600).contains(&code),
            _ => (200..300).contains(&code) || (400..600).contains(&code),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Step::Mail => "MAIL",
            Step::Rcpt => "RCPT",
            Step::Data => "DATA",
            Step::Content => "the message content",
        }
    }
}

/// Read one (possibly multi-line) reply; enhanced codes are split off the first line.
pub async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(
    io: &mut R,
    line: &mut Vec<u8>,
) -> Result<Reply, RelayError> {
    let mut lines = vec![];
    let mut code = 0u16;
    loop {
        line.clear();
        let n = (&mut *io).take(4096).read_until(b'\n', line).await?;
        if n == 0 {
            return Err(RelayError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (c, rest) = text
            .split_at_checked(3)
            .ok_or_else(|| RelayError::Protocol(text.into()))?;
        let this: u16 = c
            .parse()
            .ok()
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| RelayError::Protocol(format!("not a reply: {text}")))?;
        if code != 0 && this != code {
            return Err(RelayError::Protocol(format!("reply code changed: {text}")));
        }
        code = this;
        let (last, body) = match rest.as_bytes().first() {
            None => (true, ""),
            Some(b' ') => (true, &rest[1..]),
            Some(b'-') => (false, &rest[1..]),
            _ => return Err(RelayError::Protocol(format!("not a reply: {text}"))),
        };
        lines.push(body.to_string());
        if last {
            break;
        }
        if lines.len() > 100 {
            return Err(RelayError::Protocol("reply too long".into()));
        }
    }
    let mut enhanced = None;
    if let Some(first) = lines.first_mut()
        && let Some((e, rest)) = split_enhanced(first, code)
    {
        enhanced = Some(e);
        *first = rest;
    }
    Ok(Reply {
        code,
        enhanced,
        lines,
    })
}

fn split_enhanced(text: &str, code: u16) -> Option<(Enhanced, String)> {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut it = word.split('.');
    let class: u8 = it.next()?.parse().ok()?;
    let subject: u16 = it.next()?.parse().ok()?;
    let detail: u16 = it.next()?.parse().ok()?;
    if it.next().is_some() || u16::from(class) != code / 100 {
        return None;
    }
    Some((Enhanced(class, subject, detail), rest.to_string()))
}
