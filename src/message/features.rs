//! Features of one message, extracted once before the checks run: the byte-level header
//! block, mail-parser's parse (guarded: `None` when it gives up) and the derived facts most
//! checks want. Checks only read this.

use crate::message::headers::HeaderBlock;
use crate::message::tokenize::Tokens;
use mail_parser::{Address, Message, MessageParser, MimeHeaders, PartType};

/// An address from a header: display name and mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedAddr {
    /// The display name, decoded.
    pub name: Option<String>,
    /// The mailbox, lower-cased.
    pub address: Option<String>,
}

impl NamedAddr {
    /// The domain part of the mailbox.
    pub fn domain(&self) -> Option<&str> {
        self.address.as_deref()?.rsplit_once('@').map(|(_, d)| d)
    }
}

/// The state of a date header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateField {
    /// No such header.
    Missing,
    /// Present but not a valid RFC 5322 date.
    Invalid,
    /// A valid date, as Unix seconds.
    At(i64),
}

/// Structure of the MIME tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MimeFacts {
    /// text/plain bodies.
    pub text_parts: usize,
    /// text/html bodies.
    pub html_parts: usize,
    /// Top-level Content-Type is multipart/*.
    pub multipart: bool,
    /// A multipart part has no boundary parameter, or its boundary never occurs.
    pub missing_boundary: bool,
    /// A part's transfer encoding could not be decoded.
    pub bad_encoding: bool,
    /// There is a MIME-Version header.
    pub has_mime_version: bool,
    /// Parts of type image/*.
    pub image_parts: usize,
    /// File names of the parts that have one (at most 50).
    pub attachment_names: Vec<String>,
}

/// Everything checks may read about one message.
#[derive(Debug)]
pub struct Features<'m> {
    /// The message exactly as received.
    pub raw: &'m [u8],
    /// The header block at the byte level.
    pub headers: HeaderBlock,
    /// False when mail-parser could not make sense of the message at all.
    pub parsed: bool,
    /// Subject, decoded; `None` when there is no Subject header.
    pub subject: Option<String>,
    /// The first From address.
    pub from: Option<NamedAddr>,
    /// The first Reply-To address.
    pub reply_to: Option<NamedAddr>,
    /// Date header.
    pub date: DateField,
    /// Dates of the Received headers, newest (topmost) first; `None` for unparseable ones.
    pub received_dates: Vec<Option<i64>>,
    /// The Message-ID header's raw value, trimmed.
    pub message_id: Option<String>,
    /// Addresses in To and Cc together.
    pub to_cc_count: usize,
    /// There is a To or Cc header.
    pub has_to_or_cc: bool,
    /// MIME structure.
    pub mime: MimeFacts,
    /// Decoded text of the text and HTML bodies (for body rules such as GTUBE).
    pub body_text: String,
    /// Where the HTML bodies are in `body_text`.
    pub html_ranges: Vec<std::ops::Range<usize>>,
    /// Each HTML body converted to text (once, for the tokenizer and the body rules).
    pub html_texts: Vec<String>,
    /// The time of the scan, Unix seconds.
    pub now: i64,
    /// The tokens of the one tokenizer, when asked for (tokenizing costs more than all
    /// header checks): what Bayes classifies and the ONNX model's features start from.
    pub tokens: Option<Tokens>,
}

impl<'m> Features<'m> {
    /// Extract the features of `raw` at time `now`.
    pub fn extract(raw: &'m [u8], now: i64) -> Self {
        Self::extract_with(raw, now, false)
    }

    /// Extract the features, and the tokens when `tokens` is set.
    pub fn extract_with(raw: &'m [u8], now: i64, tokens: bool) -> Self {
        let mut f = Self::of_headers(raw, now);
        let Some(msg) = MessageParser::default().parse(raw) else {
            if tokens {
                f.tokens = Some(Tokens::of_raw(raw));
            }
            return f;
        };
        f.parsed = true;
        f.add_mime(&msg);
        if tokens {
            f.tokens = Some(Tokens::of_message_with(&msg, &f.html_texts));
        }
        f.subject = msg.subject().map(str::to_string);
        f.from = msg.from().and_then(first_addr);
        f.reply_to = msg.reply_to().and_then(first_addr);
        if let Some(d) = msg.date()
            && d.is_valid()
        {
            f.date = DateField::At(d.to_timestamp());
        }
        f.to_cc_count =
            msg.to().map_or(0, |a| a.iter().count()) + msg.cc().map_or(0, |a| a.iter().count());
        f
    }

    /// What the byte-level header block tells, before (or without) a parse.
    fn of_headers(raw: &'m [u8], now: i64) -> Self {
        let headers = HeaderBlock::parse(raw);
        let has = |name: &str| headers.named(raw, name).next().is_some();
        let received_dates = headers
            .named(raw, "Received")
            .map(|h| received_date(&raw[h.value.clone()]))
            .collect();
        let has_mime_version = has("MIME-Version");
        let has_to_or_cc = has("To") || has("Cc");
        let date = if has("Date") {
            DateField::Invalid
        } else {
            DateField::Missing
        };
        Features {
            raw,
            parsed: false,
            subject: None,
            from: None,
            reply_to: None,
            date,
            received_dates,
            message_id: headers
                .first(raw, "Message-ID")
                .map(|v| String::from_utf8_lossy(v).trim().to_string()),
            to_cc_count: 0,
            has_to_or_cc,
            mime: MimeFacts {
                has_mime_version,
                ..MimeFacts::default()
            },
            body_text: String::new(),
            html_ranges: vec![],
            html_texts: vec![],
            headers,
            now,
            tokens: None,
        }
    }

    /// The MIME structure and the decoded text of the parsed message.
    fn add_mime(&mut self, msg: &Message<'_>) {
        let raw = self.raw;
        let bodies = |list: &[u32], html: bool| {
            list.iter()
                .filter(|&&i| match msg.parts.get(i as usize).map(|p| &p.body) {
                    Some(PartType::Html(_)) => html,
                    Some(PartType::Text(_)) => !html,
                    _ => false,
                })
                .count()
        };
        self.mime.text_parts = bodies(&msg.text_body, false);
        self.mime.html_parts = bodies(&msg.html_body, true);
        self.mime.multipart = msg
            .root_part()
            .content_type()
            .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart"));
        for part in &msg.parts {
            self.mime.bad_encoding |= part.is_encoding_problem;
            if let Some(ct) = part.content_type()
                && ct.ctype().eq_ignore_ascii_case("multipart")
            {
                let found = ct.attribute("boundary").is_some_and(|b| {
                    let mut marker = b"--".to_vec();
                    marker.extend_from_slice(b.as_bytes());
                    let end = (part.offset_end as usize).min(raw.len());
                    let start = (part.offset_body as usize).min(end);
                    memchr::memmem::find(&raw[start..end], &marker).is_some()
                });
                self.mime.missing_boundary |= !found;
            }
            let image = part
                .content_type()
                .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("image"));
            self.mime.image_parts += usize::from(image);
            if let Some(n) = part.attachment_name()
                && self.mime.attachment_names.len() < 50
            {
                self.mime.attachment_names.push(n.to_string());
            }
            match &part.body {
                PartType::Text(t) | PartType::Html(t) if self.body_text.len() < 1 << 20 => {
                    let start = self.body_text.len();
                    self.body_text.push_str(t);
                    if let PartType::Html(h) = &part.body {
                        self.html_ranges.push(start..self.body_text.len());
                        self.html_texts
                            .push(mail_parser::decoders::html::html_to_text(h));
                    }
                    self.body_text.push('\n');
                }
                _ => {}
            }
        }
    }
}

/// What the scan reads of a message: all of it up to `limit` bytes, else the whole header
/// block and whole lines up to `limit` (the message itself is relayed whole).
pub fn scan_view(msg: &[u8], limit: usize) -> &[u8] {
    if msg.len() <= limit {
        return msg;
    }
    let cut = memchr::memrchr(b'\n', &msg[..limit]).map_or(limit, |i| i + 1);
    &msg[..cut.max(HeaderBlock::parse(msg).end)]
}

fn first_addr(a: &Address<'_>) -> Option<NamedAddr> {
    let a = a.first()?;
    Some(NamedAddr {
        name: a
            .name()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
        address: a.address().map(|s| s.trim().to_ascii_lowercase()),
    })
}

/// The date after the last `;` of a Received header.
fn received_date(value: &[u8]) -> Option<i64> {
    let i = memchr::memrchr(b';', value)?;
    let d = mail_parser::parsers::MessageStream::new(&value[i + 1..]).parse_date();
    match d {
        mail_parser::HeaderValue::DateTime(d) if d.is_valid() => Some(d.to_timestamp()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_basic_facts() {
        let m = b"Received: from a by b; Mon, 23 Nov 2026 14:59:15 +0000\r\n\
From: \"Pay Pal\" <x@Example.NET>\r\nTo: a@b, c@d\r\nCc: e@f\r\n\
Date: Mon, 23 Nov 2026 14:00:00 +0000\r\nSubject: =?utf-8?q?h=C3=A9llo?=\r\n\
Content-Type: text/html\r\n\r\n<p>hi</p>\r\n";
        let f = Features::extract(m, 0);
        assert!(f.parsed);
        assert_eq!(f.subject.as_deref(), Some("héllo"));
        assert_eq!(
            f.from.as_ref().and_then(|a| a.domain()),
            Some("example.net")
        );
        assert_eq!(
            f.from.as_ref().and_then(|a| a.name.as_deref()),
            Some("Pay Pal")
        );
        assert_eq!(f.to_cc_count, 3);
        assert_eq!(f.date, DateField::At(1_795_442_400));
        assert_eq!(f.received_dates, vec![Some(1_795_445_955)]);
        assert_eq!((f.mime.text_parts, f.mime.html_parts), (0, 1));
    }

    #[test]
    fn the_scan_reads_whole_lines_and_the_whole_header_block() {
        let m = b"Subject: x\r\nX-Long: aaaaaaaaaa\r\n\r\nline one\r\nline two\r\n";
        assert_eq!(scan_view(m, 1000), &m[..]);
        assert_eq!(
            scan_view(m, 45),
            &b"Subject: x\r\nX-Long: aaaaaaaaaa\r\n\r\nline one\r\n"[..]
        );
        assert_eq!(
            scan_view(m, 5),
            &b"Subject: x\r\nX-Long: aaaaaaaaaa\r\n"[..],
            "never inside the header block"
        );
    }

    #[test]
    fn invalid_and_missing_dates() {
        assert_eq!(
            Features::extract(b"Date: yesterday\r\n\r\nx", 0).date,
            DateField::Invalid
        );
        assert_eq!(
            Features::extract(b"Subject: x\r\n\r\nx", 0).date,
            DateField::Missing
        );
    }
}
