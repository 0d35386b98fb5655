//! What the rules read of one message, built once from the [`Features`]: the body text
//! (Subject, text parts, HTML as text), the raw body text, every URL (normalised), the
//! HTML facts, and header values on demand (decoded, raw, names, addresses).

use super::html::HtmlFacts;
use super::parse::HeaderPart;
use crate::auth::AuthVerdict;
use crate::checks::Hits;
use crate::message::Features;
use mail_parser::HeaderValue;
use mail_parser::parsers::MessageStream;
use std::sync::OnceLock;

/// Bound on URLs per message.
const MAX_URIS: usize = 500;
/// Bytes of text the body and rawbody rules read (SpamAssassin reads 50 KB of each body
/// part): time and memory stay bounded on huge messages, and spam says what it wants early.
const MAX_BODY: usize = 256 * 1024;

/// One message as the rules see it.
pub struct View<'a> {
    /// The features.
    pub features: &'a Features<'a>,
    /// Subject, then the decoded text parts and the HTML parts as text; line ends become
    /// spaces.
    pub body: String,
    /// Every URL: from the text (`http(s)://`, `www.`) and from HTML attributes; scheme and
    /// host lower-cased, `www.` given `http://`, trailing punctuation cut.
    pub uris: Vec<String>,
    /// What the HTML parts hold.
    pub html: HtmlFacts,
    /// The built-in checks' hits (meta rules may read them).
    pub hits: &'a Hits,
    /// Sender authentication, when it ran.
    pub auth: Option<&'a AuthVerdict>,
    words: std::cell::OnceCell<WordStats>,
}

/// Counts over the words of the body, computed once in one pass when a test asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WordStats {
    /// Words (letters and digits, with the invisible characters inside them).
    pub words: usize,
    /// Words mixing Latin letters with Cyrillic or Greek ones.
    pub mixed_script: usize,
    /// Words with a zero-width character between two letters.
    pub zero_width: usize,
    /// Words with a soft hyphen between two letters.
    pub soft_hyphen: usize,
}

impl WordStats {
    /// The counts of `text`.
    pub fn of(text: &str) -> WordStats {
        let mut s = WordStats::default();
        if text.is_ascii() {
            // No invisible character, no other script: nothing the tests count (the word
            // total only matters beside soft hyphens).
            return s;
        }
        let zw = |c: char| matches!(c, '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}');
        // Per word: Latin seen, other script seen, the invisible kind after a letter, found.
        let (mut latin, mut other, mut pending, mut in_word) = (false, false, 0u8, false);
        let (mut has_zw, mut has_shy, mut prev_alpha) = (false, false, false);
        let end_word = |s: &mut WordStats, latin: bool, other: bool, zw: bool, shy: bool| {
            s.words += 1;
            s.mixed_script += usize::from(latin && other);
            s.zero_width += usize::from(zw);
            s.soft_hyphen += usize::from(shy);
        };
        for c in text.chars() {
            let inner = if zw(c) {
                1
            } else if c == '\u{ad}' {
                2
            } else {
                0
            };
            if c.is_alphanumeric() || inner > 0 {
                in_word = true;
                if inner > 0 {
                    pending = if prev_alpha { inner } else { 0 };
                    prev_alpha = false;
                    continue;
                }
                let alpha = c.is_alphabetic();
                if alpha {
                    has_zw |= pending == 1;
                    has_shy |= pending == 2;
                }
                latin |= c.is_ascii_alphabetic();
                other |= matches!(c, '\u{370}'..='\u{3ff}' | '\u{400}'..='\u{4ff}');
                pending = 0;
                prev_alpha = alpha;
            } else if in_word {
                end_word(&mut s, latin, other, has_zw, has_shy);
                (latin, other, pending, in_word) = (false, false, 0, false);
                (has_zw, has_shy, prev_alpha) = (false, false, false);
            }
        }
        if in_word {
            end_word(&mut s, latin, other, has_zw, has_shy);
        }
        s
    }
}

impl<'a> View<'a> {
    /// Build the view of one message.
    pub fn new(features: &'a Features<'a>, hits: &'a Hits, auth: Option<&'a AuthVerdict>) -> Self {
        let mut body = String::with_capacity(features.body_text.len() + 128);
        if let Some(s) = &features.subject {
            body.push_str(s);
            body.push('\n');
        }
        let mut html = HtmlFacts::default();
        let mut last = 0;
        let text = &features.body_text;
        for (r, as_text) in features.html_ranges.iter().zip(&features.html_texts) {
            let (start, end) = (r.start.min(text.len()), r.end.min(text.len()));
            let (Some(before), Some(h)) = (text.get(last..start), text.get(start..end)) else {
                continue;
            };
            if body.len() >= MAX_BODY {
                break;
            }
            body.push_str(before);
            html.scan(h);
            body.push_str(as_text);
            last = end;
        }
        if body.len() < MAX_BODY {
            body.push_str(text.get(last..).unwrap_or_default());
        }
        body.truncate(floor_boundary(&body, MAX_BODY));
        // Lines joined into one text, as SpamAssassin's body rules see paragraphs: a phrase
        // wrapped over two lines still matches.
        // SAFETY: only the ASCII bytes CR and LF are replaced, by the ASCII space, so the
        // text stays valid UTF-8 (a UTF-8 sequence never contains an ASCII byte).
        for b in unsafe { body.as_bytes_mut() } {
            if matches!(*b, b'\r' | b'\n') {
                *b = b' ';
            }
        }
        let mut uris = vec![];
        text_urls(&body, &mut uris);
        for u in &html.attr_urls {
            if uris.len() >= MAX_URIS {
                break;
            }
            if let Some(n) = normalise(u) {
                uris.push(n);
            }
        }
        uris.sort_unstable();
        uris.dedup();
        View {
            features,
            body,
            uris,
            html,
            hits,
            auth,
            words: std::cell::OnceCell::new(),
        }
    }

    /// The word counts of the body.
    pub fn words(&self) -> WordStats {
        *self.words.get_or_init(|| WordStats::of(&self.body))
    }

    /// The raw body text: decoded parts, HTML with its tags (at most `MAX_BODY` bytes).
    pub fn rawbody(&self) -> &str {
        let t = &self.features.body_text;
        &t[..floor_boundary(t, MAX_BODY)]
    }

    /// The values of header `name` (lower case; `all` = the whole header block) in `part`.
    pub fn header_values(&self, name: &str, part: HeaderPart) -> Vec<String> {
        let f = self.features;
        if name == "all" {
            let block = &f.raw[..f.headers.end.min(f.raw.len())];
            return vec![String::from_utf8_lossy(block).into_owned()];
        }
        let mut out = vec![];
        for h in f.headers.named(f.raw, name) {
            let raw = &f.raw[h.value.clone()];
            match part {
                HeaderPart::Raw => out.push(String::from_utf8_lossy(raw).into_owned()),
                HeaderPart::Decoded => out.push(decode_unstructured(raw)),
                HeaderPart::Name | HeaderPart::Addr => addresses(raw, part, &mut out),
            }
        }
        out
    }

    /// Whether header `name` is present.
    pub fn has_header(&self, name: &str) -> bool {
        let f = self.features;
        f.headers.named(f.raw, name).next().is_some()
    }
}

/// The registered domains the message's links go to (not IP literals), in order of first
/// appearance, at most `limit`: what domain block lists are asked about before the scan.
pub fn link_domains(raw: &[u8], limit: usize) -> Vec<String> {
    let Some(msg) = mail_parser::MessageParser::default().parse(raw) else {
        return vec![];
    };
    let mut urls = vec![];
    for part in &msg.parts {
        match &part.body {
            mail_parser::PartType::Text(t) => text_urls(t, &mut urls),
            mail_parser::PartType::Html(h) => {
                let mut facts = HtmlFacts::default();
                facts.scan(h);
                urls.extend(facts.attr_urls.iter().filter_map(|u| normalise(u)));
                text_urls(&mail_parser::decoders::html::html_to_text(h), &mut urls);
            }
            _ => {}
        }
    }
    let mut out: Vec<String> = vec![];
    for host in urls.iter().filter_map(|u| host_of(u)) {
        if host.parse::<std::net::IpAddr>().is_ok() || !host.contains('.') {
            continue;
        }
        let d = registered(host);
        if !out.contains(&d) {
            out.push(d);
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

/// The largest char boundary of `s` at or below `at`.
fn floor_boundary(s: &str, at: usize) -> usize {
    let mut i = at.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A header value unfolded and RFC 2047-decoded.
pub fn decode_unstructured(raw: &[u8]) -> String {
    let mut v = raw.to_vec();
    v.extend_from_slice(b"\r\n");
    match MessageStream::new(&v).parse_unstructured() {
        HeaderValue::Text(t) => t.into_owned(),
        HeaderValue::TextList(l) => l.join(" "),
        _ => String::new(),
    }
}

fn addresses(raw: &[u8], part: HeaderPart, out: &mut Vec<String>) {
    let mut v = raw.to_vec();
    v.extend_from_slice(b"\r\n");
    if let HeaderValue::Address(a) = MessageStream::new(&v).parse_address() {
        for addr in a.iter() {
            let s = match part {
                HeaderPart::Name => addr.name().map(|n| n.trim().to_string()),
                _ => addr.address().map(|a| a.trim().to_ascii_lowercase()),
            };
            out.extend(s.filter(|s| !s.is_empty()));
        }
    }
}

fn text_urls(text: &str, out: &mut Vec<String>) {
    static URL: OnceLock<regex::Regex> = OnceLock::new();
    let re = URL.get_or_init(|| {
        regex::Regex::new(r#"(?i)(?:https?://|(?-u:\b)www\.)[^\s<>"'()\[\]{}]+"#)
            .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
    });
    for m in re.find_iter(text) {
        if out.len() >= MAX_URIS {
            return;
        }
        if let Some(n) = normalise(m.as_str()) {
            out.push(n);
        }
    }
}

/// A URL as uri rules see it, or `None` for anchors and relative links.
pub fn normalise(u: &str) -> Option<String> {
    let u = u.trim().trim_matches(['<', '>', '"', '\'']);
    let u = u.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '*']);
    if u.is_empty() {
        return None;
    }
    let (scheme, rest) = match u.find(':') {
        Some(i)
            if u[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            (u[..i].to_ascii_lowercase(), &u[i + 1..])
        }
        _ if u.len() > 4 && u[..4].eq_ignore_ascii_case("www.") => ("http".to_string(), u),
        _ => return None,
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if !matches!(scheme.as_str(), "http" | "https" | "ftp") {
        return Some(format!("{scheme}:{rest}"));
    }
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(host_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(format!(
        "{scheme}://{}{path}",
        host.to_ascii_lowercase().trim_end_matches('.')
    ))
}

/// The host of a normalised http(s) URL (no port, no brackets).
pub fn host_of(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .or_else(|| uri.strip_prefix("ftp://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let hostport = &rest[..end];
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        hostport.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then_some(host)
}

/// The registered domain of a host name (public suffix list), or the host itself for an IP
/// address or a name the list does not know.
pub fn registered(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host;
    }
    match psl::domain_str(&host) {
        Some(d) => d.to_string(),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised() {
        assert_eq!(
            normalise("HTTPS://User:pw@WWW.Example.COM./a/B?x=1)."),
            Some("https://www.example.com/a/B?x=1".into())
        );
        assert_eq!(
            normalise("www.Shop.example/x"),
            Some("http://www.shop.example/x".into())
        );
        assert_eq!(
            normalise("data:text/html;base64,AAA"),
            Some("data:text/html;base64,AAA".into())
        );
        assert_eq!(normalise("/relative"), None);
        assert_eq!(host_of("http://203.0.113.4:8080/x"), Some("203.0.113.4"));
        assert_eq!(host_of("http://[2001:db8::1]/x"), Some("2001:db8::1"));
    }

    #[test]
    fn registered_domains() {
        assert_eq!(registered("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(registered("click.email.shop.com"), "shop.com");
        assert_eq!(registered("203.0.113.4"), "203.0.113.4");
    }

    #[test]
    fn link_domains_are_registered_domains() {
        let m = b"Content-Type: text/html\r\n\r\n<a href=\"https://a.b.evil.co.uk/x\">x</a> https://www.evil.co.uk/y http://203.0.113.1/ http://click.shop.example/\r\n";
        assert_eq!(link_domains(m, 20), ["evil.co.uk", "shop.example"]);
    }

    #[test]
    fn word_counts() {
        let s =
            WordStats::of("Pаypal Ap\u{200b}ple I\u{200b}D Mit\u{ad}glie\u{ad}der plain \u{200d}x");
        assert_eq!(
            s,
            WordStats {
                words: 6,
                mixed_script: 1,
                zero_width: 2,
                soft_hyphen: 1
            }
        );
        assert_eq!(WordStats::of("two words"), WordStats::default());
    }

    #[test]
    fn headers_are_decoded() {
        assert_eq!(
            decode_unstructured(b" =?UTF-8?B?R3LDvMOfZQ==?=\r\n x"),
            "Grüße x"
        );
    }
}
