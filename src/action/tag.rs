//! Tagging at the byte level: the copy that is relayed gets our Authentication-Results, the
//! `X-Spam-*` headers, the subject tag, `X-Quarantine-ID` when a copy is kept, and our own
//! `Received:` line, all prepended; incoming `X-Spam-*` headers (forgeries or leftovers from
//! elsewhere) and Authentication-Results claiming our authserv-id are dropped. Nothing else
//! of the message changes, so bodies and DKIM signatures survive; outbound mail is then
//! DKIM-signed over exactly the bytes that leave.

use crate::action::quarantine::id_header;
use crate::auth::claims_authserv_id;
use crate::auth::sign::Signer;
use crate::message::HeaderBlock;
use crate::smtp::envelope::Envelope;
use crate::smtp::rewrite::Rewrite;
use crate::verdict::Verdict;

/// What the relayed copy for one decision carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tags<'a> {
    /// Our Authentication-Results header (CRLF-terminated), when authentication ran.
    pub auth_results: Option<&'a str>,
    /// Incoming Authentication-Results headers claiming this authserv-id are dropped.
    pub authserv_id: Option<&'a str>,
    /// The verdict under the deciding policy.
    pub verdict: &'a Verdict,
    /// X-Spam-Status' `autolearn=` value.
    pub autolearn: &'a str,
    /// The policy's subject tag for spam (empty: none).
    pub subject_tag: &'a str,
    /// The quarantine id, when a copy of this delivered mail is kept.
    pub quarantine_id: Option<&'a str>,
    /// Our Received header (see [`received_header`]).
    pub received: &'a str,
    /// amavisd-new's `X-Amavis-Alert:` value, for infected or banned mail passed anyway.
    pub alert: Option<&'a str>,
}

/// The copy to relay: the headers of `tags` on top, the message below them unchanged but
/// for the headers dropped.
pub(crate) fn relayed_copy(msg: &[u8], headers: &HeaderBlock, tags: &Tags<'_>) -> Rewrite {
    let mut prefix: Vec<u8> = Vec::with_capacity(512);
    if let Some(a) = tags.auth_results {
        prefix.extend_from_slice(a.as_bytes());
    }
    if tags.verdict.is_tagged() {
        prefix.extend_from_slice(tags.verdict.spam_headers(tags.autolearn).as_bytes());
    }
    let subject = headers.first(msg, "Subject");
    let retag = tags.verdict.is_spam() && !tags.subject_tag.is_empty();
    if retag {
        prefix.extend_from_slice(&tagged_subject(subject, tags.subject_tag));
    }
    if let Some(id) = tags.quarantine_id {
        prefix.extend_from_slice(id_header(id).as_bytes());
    }
    if let Some(alert) = tags.alert {
        prefix.extend_from_slice(format!("X-Amavis-Alert: {}\r\n", sanitize(alert)).as_bytes());
    }
    prefix.extend_from_slice(tags.received.as_bytes());
    rewrite(msg, headers, prefix, |name, value| {
        (retag
            && subject.is_some_and(|s| std::ptr::eq(s.as_ptr(), value.as_ptr()))
            && name.eq_ignore_ascii_case(b"Subject"))
            || tags.authserv_id.is_some_and(|id| {
                name.eq_ignore_ascii_case(b"Authentication-Results")
                    && claims_authserv_id(value, id)
            })
    })
}

/// DKIM-sign the copy for `from_domain` with the key that covers it (the domain or its
/// nearest parent), the signature on top of everything else. Without a key, or when
/// signing fails, the copy goes unsigned (logged).
pub fn sign(rewrite: &mut Rewrite, msg: &[u8], signer: &Signer, from_domain: &str, mail_id: &str) {
    match signer.sign(from_domain, &rewrite.parts(msg)) {
        Some(Ok(header)) => {
            let mut signed = header.into_bytes();
            signed.extend_from_slice(&rewrite.prefix);
            rewrite.prefix = signed;
        }
        Some(Err(e)) => tracing::error!(mail_id, error = %e, "relaying unsigned"),
        None => tracing::debug!(mail_id, from_domain, "no DKIM key for the From domain"),
    }
}

/// Our own trace header, as every SMTP relay adds one (RFC 5321 section 4.4), as of `now`
/// (Unix seconds).
pub(crate) fn received_header(hostname: &str, env: &Envelope, mail_id: &str, now: i64) -> String {
    let proto = if env.mail_params.smtputf8 {
        "UTF8SMTP"
    } else {
        "ESMTP"
    };
    let for_ = match env.recipients.as_slice() {
        [one] => format!(" for <{}>", one.address),
        _ => String::new(),
    };
    let date = mail_parser::DateTime::from_timestamp(now).to_rfc822();
    format!(
        "Received: from {} ([{}])\r\n\tby {hostname} (filterd) with {proto}\r\n\tid {mail_id}{for_}; {date}\r\n",
        sanitize(&env.helo),
        env.peer.ip(),
    )
}

/// True when a Received header's value is one [`received_header`] wrote for `hostname`
/// (`... by HOST (filterd) ...`, folding aside): how a looping message is recognised.
pub fn is_our_received(value: &[u8], hostname: &str) -> bool {
    let mark = b" (filterd)";
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&value[at..], mark) {
        let end = at + i;
        let before = value[..end].trim_ascii_end();
        let host_start = before
            .iter()
            .rposition(|b| b.is_ascii_whitespace())
            .map_or(0, |p| p + 1);
        let by = before[..host_start].trim_ascii_end();
        if before[host_start..].eq_ignore_ascii_case(hostname.as_bytes()) && by.ends_with(b"by") {
            return true;
        }
        at = end + mark.len();
    }
    false
}

/// Keep a client-supplied name from breaking our header.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '_'
            } else {
                c
            }
        })
        .take(255)
        .collect()
}

/// Build the rewrite: `prefix` goes on top; every original header line except `X-Spam-*`
/// ones and those `also_drop(name, value)` picks is kept, and the body is kept whole.
pub fn rewrite(
    msg: &[u8],
    headers: &HeaderBlock,
    prefix: Vec<u8>,
    also_drop: impl Fn(&[u8], &[u8]) -> bool,
) -> Rewrite {
    let mut keep = Vec::with_capacity(4);
    let mut start = 0;
    for f in &headers.fields {
        let name = &msg[f.name.clone()];
        if (name.len() >= 7 && name[..7].eq_ignore_ascii_case(b"X-Spam-"))
            || also_drop(name, &msg[f.value.clone()])
        {
            if f.whole.start > start {
                keep.push(start..f.whole.start);
            }
            start = f.whole.end;
        }
    }
    if start < msg.len() {
        keep.push(start..msg.len());
    }
    Rewrite { prefix, keep }
}

/// The `Subject:` line of spam: `tag` before the original value (its raw bytes, encoded
/// words and folding kept), a copy of the tag already there removed first; a message
/// without a Subject gets one.
pub(crate) fn tagged_subject(original: Option<&[u8]>, tag: &str) -> Vec<u8> {
    let mut line = b"Subject: ".to_vec();
    line.extend_from_slice(tag.as_bytes());
    let value = original.unwrap_or_default();
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let mut rest = &value[start..];
    let bare = tag.trim_end().as_bytes();
    while !bare.is_empty() && rest.starts_with(bare) {
        rest = &rest[bare.len()..];
        let skip = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[skip..];
    }
    let mut end = rest.len();
    while end > 0 && matches!(rest[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    line.extend_from_slice(&rest[..end]);
    line.extend_from_slice(b"\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_received_lines_are_recognised() {
        let ours = b" from mx.example.net ([127.0.0.1])\r\n\tby filter.example.net (filterd) with ESMTP\r\n\tid AbCdEf123456; Mon, 23 Nov 2026 14:00:00 +0000";
        assert!(is_our_received(ours, "filter.example.net"));
        assert!(is_our_received(ours, "FILTER.example.NET"));
        assert!(!is_our_received(ours, "other.example.net"));
        assert!(!is_our_received(
            b" from x by filter.example.net (Postfix) with ESMTP",
            "filter.example.net"
        ));
        assert!(!is_our_received(
            b" from filter.example.net (filterd) by mx",
            "filter.example.net"
        ));
    }

    #[test]
    fn drops_only_x_spam_headers() {
        let m = b"X-Spam-Flag: NO\r\nDrop-Me: x\r\nSubject: hi\r\nx-spam-status: Yes,\r\n\tscore=99\r\nX-Spamish: keep\r\n\r\nX-Spam-Flag: body\r\n";
        let h = HeaderBlock::parse(m);
        let r = rewrite(m, &h, b"X-New: 1\r\n".to_vec(), |n, _| n == b"Drop-Me");
        let out: Vec<u8> = r.parts(m).concat();
        assert_eq!(
            out,
            b"X-New: 1\r\nSubject: hi\r\nX-Spamish: keep\r\n\r\nX-Spam-Flag: body\r\n"
        );
        assert_eq!(r.len(), out.len());
    }

    #[test]
    fn subject_tags() {
        let t = "***SPAM*** ";
        let cases: [(Option<&[u8]>, &[u8]); 5] = [
            (Some(b" hello\r\n"), b"Subject: ***SPAM*** hello\r\n"),
            (
                Some(b" ***SPAM*** hello\r\n"),
                b"Subject: ***SPAM*** hello\r\n",
            ),
            (
                Some(b" =?utf-8?b?w6k=?=\r\n\tmore\r\n"),
                b"Subject: ***SPAM*** =?utf-8?b?w6k=?=\r\n\tmore\r\n",
            ),
            (Some(b"\r\n"), b"Subject: ***SPAM*** \r\n"),
            (None, b"Subject: ***SPAM*** \r\n"),
        ];
        for (orig, want) in cases {
            assert_eq!(
                String::from_utf8_lossy(&tagged_subject(orig, t)),
                String::from_utf8_lossy(want)
            );
        }
    }
}
