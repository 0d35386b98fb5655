//! The one tokenizer, shared by scoring (filterd), learning (filtertrain) and evaluation
//! (corpus-tools), so training and scoring can never drift.
//!
//! A message becomes a set of 64-bit token hashes (presence, not frequency: a token counts
//! once per message, which is what made Bayes filters work):
//! - header words, prefixed by the header name (`subject:cheap`, `from:example.com`), for
//!   the headers that carry signal (Subject, From, To, Cc, Reply-To, Return-Path,
//!   Content-Type, X-Mailer, User-Agent, Message-ID, List-Id, Precedence, X-Priority,
//!   Received: host names and addresses of the first hops);
//! - the decoded text of every text part, HTML converted to text with entities decoded;
//! - URL host names (and their parent domains) from text and HTML, prefixed `url:`;
//! - no word pairs: on the SpamAssassin corpus, adding OSB-style pairs of adjacent words
//!   made ranking worse (1-ROCA 0.26% -> 0.45% with all else equal), as correlated tokens
//!   make naive Bayes over-confident; see README "Bayes evaluation";
//! - normalisation: lower case; tokens of 2 to 24 characters; a longer one becomes
//!   `skip:<first 8 chars>:<length/8>`; runs of three or more single letters (`v i a g r a`)
//!   are joined into one word; digit-only tokens longer than 6 become `num:<length>`.
//!
//! `TOKENIZER_VERSION` is stored with the Bayes database: a store learned with another
//! version is refused rather than silently mis-scored.

use mail_parser::{HeaderValue, Message, MessageParser, PartType};

/// Bumped whenever the tokens of a message change.
pub(crate) const TOKENIZER_VERSION: u32 = 1;

/// How much decoded body text is tokenized (the rest adds cost, not signal).
const MAX_BODY_CHARS: usize = 64 * 1024;

/// Headers whose words are tokens, and the prefix they get.
const HEADERS: &[&str] = &[
    "subject",
    "from",
    "to",
    "cc",
    "reply-to",
    "return-path",
    "content-type",
    "x-mailer",
    "user-agent",
    "message-id",
    "list-id",
    "precedence",
    "x-priority",
    "x-msmail-priority",
    "organization",
];

/// The token set of one message: sorted, deduplicated hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens(pub Vec<u64>);

impl Tokens {
    /// Tokenize a raw message.
    pub fn of_raw(raw: &[u8]) -> Tokens {
        match MessageParser::default().parse(raw) {
            Some(m) => Tokens::of_message(&m),
            None => {
                // Unparseable: still learn from its bytes as text.
                let mut t = Tokenizer::default();
                t.text(
                    "",
                    &String::from_utf8_lossy(&raw[..raw.len().min(MAX_BODY_CHARS)]),
                );
                t.finish()
            }
        }
    }

    /// Tokenize a parsed message.
    pub(crate) fn of_message(m: &Message<'_>) -> Tokens {
        Self::of_message_with(m, &[])
    }

    /// Tokenize a parsed message whose HTML parts were already converted to text
    /// (`html_texts`, in the order of the HTML parts; missing ones are converted here).
    pub(crate) fn of_message_with(m: &Message<'_>, html_texts: &[String]) -> Tokens {
        let mut t = Tokenizer::default();
        t.headers(m);
        t.bodies(m, html_texts);
        t.finish()
    }

    /// Number of distinct tokens.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Stable 64-bit FNV-1a hash of a token's text (stable across versions and platforms; the
/// store keeps only these).
pub(crate) fn token_hash(prefix: &str, word: &str) -> u64 {
    crate::fnv::fnv1a(&[prefix.as_bytes(), word.as_bytes()])
}

/// The token texts of a message, for tests.
#[cfg(test)]
pub(crate) fn token_texts(raw: &[u8]) -> Vec<String> {
    let mut t = Tokenizer {
        keep_text: true,
        ..Tokenizer::default()
    };
    match MessageParser::default().parse(raw) {
        Some(m) => {
            t.headers(&m);
            t.bodies(&m, &[]);
        }
        None => t.text("", &String::from_utf8_lossy(raw)),
    }
    let mut texts = t.texts;
    texts.sort();
    texts.dedup();
    texts
}

#[derive(Default)]
struct Tokenizer {
    hashes: Vec<u64>,
    keep_text: bool,
    texts: Vec<String>,
    word: String,
    /// Single letters of a spelled-out word, and a scratch word (ASCII path).
    letters: Vec<u8>,
    scratch: Vec<u8>,
    formatted: Vec<u8>,
}

/// The bytes that make up words (ASCII): letters, digits and `' - $ ! . @ _`.
const fn word_bytes() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'\'' | b'-' | b'$' | b'!' | b'.' | b'@' | b'_');
        b += 1;
    }
    t
}
static WORD_BYTE: [bool; 256] = word_bytes();

/// The bytes trimmed off both ends of a word.
fn trimmed_byte(b: u8) -> bool {
    matches!(b, b'.' | b'-' | b'\'' | b'!' | b'_')
}

impl Tokenizer {
    fn push(&mut self, prefix: &str, word: &str) {
        self.hashes.push(token_hash(prefix, word));
        if self.keep_text {
            self.texts.push(format!("{prefix}{word}"));
        }
    }

    fn finish(mut self) -> Tokens {
        self.hashes.sort_unstable();
        self.hashes.dedup();
        Tokens(self.hashes)
    }

    fn headers(&mut self, m: &Message<'_>) {
        for h in m.headers() {
            let name = h.name().to_ascii_lowercase();
            if name == "received" {
                continue;
            }
            let Some(prefix) = HEADERS.iter().find(|n| **n == name) else {
                continue;
            };
            let prefix = format!("{prefix}:");
            let value = header_text(&h.value);
            let value = if value.is_empty() {
                m.header_raw(h.name()).unwrap_or("").to_string()
            } else {
                value
            };
            self.text(&prefix, &value);
        }
        // The first hops of the Received chain: names and addresses of relays.
        for r in m.received_all().take(3) {
            if let Some(from) = &r.from {
                let host = match from {
                    mail_parser::Host::Name(n) => n.to_ascii_lowercase(),
                    mail_parser::Host::IpAddr(ip) => ip.to_string(),
                };
                self.push("rcvd:", &host);
            }
            if let Some(ip) = r.from_ip {
                let s = ip.to_string();
                // The /24 says more than the address.
                if let Some((net, _)) = s.rsplit_once('.') {
                    self.push("rcvd-net:", net);
                }
                self.push("rcvd-ip:", &s);
            }
            if let Some(mail_parser::Host::Name(n)) = &r.helo {
                self.push("rcvd-helo:", &n.to_ascii_lowercase());
            }
        }
    }

    fn bodies(&mut self, m: &Message<'_>, html_texts: &[String]) {
        let mut budget = MAX_BODY_CHARS;
        let mut html_seen = 0;
        for part in &m.parts {
            if budget == 0 {
                break;
            }
            let text = match &part.body {
                PartType::Text(t) => std::borrow::Cow::Borrowed(t.as_ref()),
                PartType::Html(h) => {
                    self.urls(h);
                    html_seen += 1;
                    match html_texts.get(html_seen - 1) {
                        Some(t) => std::borrow::Cow::Borrowed(t.as_str()),
                        None => {
                            std::borrow::Cow::Owned(mail_parser::decoders::html::html_to_text(h))
                        }
                    }
                }
                _ => continue,
            };
            let end = floor_char_boundary(&text, budget);
            budget -= end;
            let text = &text[..end];
            self.urls(text);
            self.text("", text);
        }
    }

    /// `url:host` and `url:parent.domain` for every http(s):// or www. link.
    fn urls(&mut self, text: &str) {
        let lower_bytes = text.as_bytes();
        let mut i = 0;
        while let Some(off) = find_url_start(&lower_bytes[i..]) {
            let (start, skip) = off;
            let host_start = i + start + skip;
            let host_end = lower_bytes[host_start..]
                .iter()
                .position(|&b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
                .map_or(lower_bytes.len(), |p| host_start + p);
            let host = text[host_start..host_end]
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if host.contains('.') && host.len() <= 253 {
                let labels: Vec<&str> = host.split('.').collect();
                for k in 2..=labels.len().min(4) {
                    let d = labels[labels.len() - k..].join(".");
                    self.push("url:", &d);
                }
            }
            i = host_end.max(host_start + 1).min(lower_bytes.len());
        }
    }

    /// Words of ASCII `text`, with `prefix`: the same tokens as the general path below,
    /// byte by byte and without an allocation per word.
    fn text_ascii(&mut self, prefix: &str, text: &[u8]) {
        let mut letters = std::mem::take(&mut self.letters);
        let mut scratch = std::mem::take(&mut self.scratch);
        letters.clear();
        let mut i = 0;
        while i < text.len() {
            while i < text.len() && !WORD_BYTE[usize::from(text[i])] {
                i += 1;
            }
            let start = i;
            while i < text.len() && WORD_BYTE[usize::from(text[i])] {
                i += 1;
            }
            let mut w = &text[start..i];
            while let [first, rest @ ..] = w
                && trimmed_byte(*first)
            {
                w = rest;
            }
            while let [rest @ .., last] = w
                && trimmed_byte(*last)
            {
                w = rest;
            }
            match w {
                [] => continue,
                [c] => {
                    // Single letters: maybe a word spelled out ("v i a g r a").
                    if c.is_ascii_alphabetic() {
                        letters.push(c.to_ascii_lowercase());
                    }
                    continue;
                }
                _ => {}
            }
            self.flush_letters(prefix, &mut letters);
            scratch.clear();
            scratch.extend(w.iter().map(u8::to_ascii_lowercase));
            let n = scratch.len();
            if n > 6 && scratch.iter().all(u8::is_ascii_digit) {
                self.push_bytes(prefix, format_args!("num:{n}"));
            } else if n > 24 {
                let head = &scratch[..8];
                let head = std::str::from_utf8(head).unwrap_or_default();
                self.push_bytes(prefix, format_args!("skip:{head}:{}", n / 8));
            } else {
                let word = std::str::from_utf8(&scratch).unwrap_or_default();
                self.push(prefix, word);
            }
        }
        self.flush_letters(prefix, &mut letters);
        self.letters = letters;
        self.scratch = scratch;
    }

    /// Three or more single letters in a row are one word.
    fn flush_letters(&mut self, prefix: &str, letters: &mut Vec<u8>) {
        if letters.len() >= 3 {
            let w = std::str::from_utf8(letters).unwrap_or_default();
            self.push(prefix, w);
        }
        letters.clear();
    }

    /// A token made by formatting (the `num:` and `skip:` forms), without an allocation.
    fn push_bytes(&mut self, prefix: &str, word: std::fmt::Arguments<'_>) {
        use std::io::Write as _;
        let mut buf = std::mem::take(&mut self.formatted);
        buf.clear();
        let _ = buf.write_fmt(word);
        let w = std::str::from_utf8(&buf).unwrap_or_default();
        self.push(prefix, w);
        self.formatted = buf;
    }

    /// Words of `text`, with `prefix`.
    fn text(&mut self, prefix: &str, text: &str) {
        if text.is_ascii() {
            return self.text_ascii(prefix, text.as_bytes());
        }
        let mut letters = String::new();
        let flush_letters = |t: &mut Tokenizer, letters: &mut String| {
            if letters.chars().count() >= 3 {
                let w = std::mem::take(letters);
                t.push(prefix, &w);
            }
            letters.clear();
        };
        for raw in text.split(|c: char| {
            !(c.is_alphanumeric()
                || c == '\''
                || c == '-'
                || c == '$'
                || c == '!'
                || c == '.'
                || c == '@'
                || c == '_')
        }) {
            let w = raw
                .trim_matches(|c: char| c == '.' || c == '-' || c == '\'' || c == '!' || c == '_');
            if w.is_empty() {
                continue;
            }
            let mut chars = w.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                // Single letters: maybe a word spelled out ("v i a g r a").
                if c.is_alphabetic() {
                    letters.extend(c.to_lowercase());
                }
                continue;
            }
            flush_letters(self, &mut letters);
            let mut word = std::mem::take(&mut self.word);
            word.clear();
            if w.is_ascii() {
                word.extend(w.bytes().map(|b| b.to_ascii_lowercase() as char));
            } else {
                word.extend(w.chars().flat_map(char::to_lowercase));
            }
            if let Some(norm) = normalise(&word) {
                self.push(prefix, &norm);
            }
            self.word = word;
        }
        flush_letters(self, &mut letters);
    }
}

/// Normalise one lower-cased word; `None` drops it.
fn normalise(w: &str) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    let n = if w.is_ascii() {
        w.len()
    } else {
        w.chars().count()
    };
    if n < 2 {
        return None;
    }
    if n > 6 && w.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Cow::Owned(format!("num:{n}")));
    }
    if n > 24 {
        let head: String = w.chars().take(8).collect();
        return Some(Cow::Owned(format!("skip:{head}:{}", n / 8)));
    }
    Some(Cow::Borrowed(w))
}

fn header_text(v: &HeaderValue<'_>) -> String {
    match v {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(l) => l.join(" "),
        HeaderValue::Address(a) => a
            .iter()
            .map(|x| {
                let mut s = x.name().unwrap_or("").to_string();
                if let Some(addr) = x.address() {
                    s.push(' ');
                    s.push_str(addr);
                }
                s
            })
            .collect::<Vec<_>>()
            .join(" "),
        HeaderValue::ContentType(ct) => {
            let mut s = ct.ctype().to_string();
            if let Some(st) = ct.subtype() {
                s.push('/');
                s.push_str(st);
            }
            for (k, v) in ct
                .attributes()
                .unwrap_or(&[])
                .iter()
                .map(|a| (&a.name, &a.value))
            {
                if k.eq_ignore_ascii_case("charset") {
                    s.push_str(" charset=");
                    s.push_str(v);
                }
            }
            s
        }
        _ => String::new(),
    }
}

/// Find `http://`, `https://` or `www.`; returns (offset, length of the scheme part).
fn find_url_start(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 4 <= b.len() {
        // Every pattern starts with h or w (either case): skip other bytes at one compare.
        let c = b[i] | 0x20;
        if c != b'h' && c != b'w' {
            i += 1;
            continue;
        }
        let rest = &b[i..];
        if rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b"http://") {
            return Some((i, 7));
        }
        if rest.len() >= 8 && rest[..8].eq_ignore_ascii_case(b"https://") {
            return Some((i, 8));
        }
        if rest[..4].eq_ignore_ascii_case(b"www.")
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric() && b[i - 1] != b'/')
        {
            return Some((i, 0));
        }
        i += 1;
    }
    None
}

fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut i = at;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(texts: &[String], t: &str) -> bool {
        texts.iter().any(|x| x == t)
    }

    #[test]
    fn headers_are_prefixed() {
        let m = b"From: Alice <alice@Example.org>\r\nSubject: Cheap Meds NOW\r\nX-Mailer: Foo 1.0\r\n\r\nBuy cheap pills today\r\n";
        let t = token_texts(m);
        for want in [
            "subject:cheap",
            "subject:meds",
            "from:alice@example.org",
            "from:alice",
            "x-mailer:foo",
            "buy",
            "cheap",
            "pills",
        ] {
            assert!(has(&t, want), "{want} missing from {t:?}");
        }
        // Header words and body words are different tokens.
        assert!(!has(&t, "subject:buy") && !has(&t, "meds"), "{t:?}");
    }

    #[test]
    fn quoted_printable_soft_breaks_and_base64_are_decoded() {
        let qp = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nunbeliev=\r\nable off=3Dfer\r\n";
        let t = token_texts(qp);
        assert!(has(&t, "unbelievable"), "{t:?}");
        assert!(has(&t, "off"), "{t:?}");
        let b64 = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nR3LDvMOfZSBhdXMgQmVybGlu\r\n";
        let t = token_texts(b64);
        assert!(has(&t, "grüße"), "{t:?}");
        assert!(has(&t, "berlin"), "{t:?}");
    }

    #[test]
    fn charsets_are_decoded() {
        let m = b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nK\xf6ln\r\n";
        let t = token_texts(m);
        assert!(has(&t, "subject:grüße"), "{t:?}");
        assert!(has(&t, "köln"), "{t:?}");
    }

    #[test]
    fn spaced_words_and_split_words() {
        let t = token_texts(b"Subject: x\r\n\r\nbuy v i a g r a now, hac ker\r\n");
        assert!(has(&t, "viagra"), "{t:?}");
        // "hac ker" stays two words: only runs of single letters are joined.
        assert!(
            has(&t, "hac") && has(&t, "ker") && !has(&t, "hacker"),
            "{t:?}"
        );
    }

    #[test]
    fn html_only_is_converted_and_urls_give_hosts() {
        let m = b"Content-Type: text/html\r\n\r\n<html><body><p>Click&nbsp;<a href=\"http://Promo.Cheap-Pills.example.com/x?y\">here</a> &amp; win</p></body></html>\r\n";
        let t = token_texts(m);
        for want in [
            "click",
            "here",
            "win",
            "url:example.com",
            "url:cheap-pills.example.com",
            "url:promo.cheap-pills.example.com",
        ] {
            assert!(has(&t, want), "{want} missing from {t:?}");
        }
        assert!(
            !t.iter().any(|x| x.contains("href")),
            "markup leaked: {t:?}"
        );
    }

    #[test]
    fn long_tokens_and_numbers() {
        let t = token_texts(
            b"Subject: x\r\n\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 12345 123456789\r\n",
        );
        assert!(has(&t, "skip:aaaaaaaa:5"), "{t:?}");
        assert!(has(&t, "12345") && has(&t, "num:9"), "{t:?}");
    }

    #[test]
    fn hashes_are_stable() {
        // The store keeps only hashes: they must never change for a given tokenizer version.
        // FNV-1a 64 reference vectors.
        assert_eq!(token_hash("", ""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(token_hash("", "a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(token_hash("foo", "bar"), 0x8594_4171_f739_67e8);
        let t = Tokens::of_raw(b"Subject: hello world\r\n\r\nhello\r\n");
        assert!(t.0.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    }
}
