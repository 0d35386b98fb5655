//! What the rules want from HTML, in one pass over the markup: links with their visible
//! text, every URL in an attribute, forms and password fields, images, and how many words
//! are shown and how many are hidden (in an element styled `display:none`,
//! `visibility:hidden`, `font-size:0` or 1px, `opacity:0`). Not a browser: a tolerant
//! tag scanner for mail HTML, which is what a filter needs (an HTML5 tree builder would
//! cost more than every rule together); `mail_parser::decoders::html::html_to_text` still
//! gives the body text the body rules read.

/// A link: where it goes and the words a reader sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    /// The `href`, entities decoded, trimmed.
    pub href: String,
    /// The text inside `<a>...</a>`, entities decoded, whitespace collapsed (bounded).
    pub text: String,
}

/// The facts of one or more HTML bodies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HtmlFacts {
    /// `<a href>` links.
    pub links: Vec<Link>,
    /// URLs in `href`, `src`, `action`, `background` attributes of any tag.
    pub attr_urls: Vec<String>,
    /// `<form>` elements.
    pub forms: usize,
    /// `<input type=password>` fields.
    pub password_fields: usize,
    /// `<img>` elements.
    pub images: usize,
    /// Words shown.
    pub visible_words: usize,
    /// Words in hidden elements.
    pub hidden_words: usize,
}

/// Elements without an end tag (a hiding style on them hides nothing).
const VOID: &[&str] = &[
    "br", "img", "input", "meta", "link", "hr", "area", "base", "col", "wbr", "source",
];

/// Bound on a link's collected text.
const MAX_LINK_TEXT: usize = 200;
/// Bound on links and URLs kept per message.
const MAX_URLS: usize = 500;

impl HtmlFacts {
    /// Add what `html` holds.
    pub fn scan(&mut self, html: &str) {
        let b = html.as_bytes();
        let mut i = 0;
        let mut open_link: Option<Link> = None;
        let mut hidden: Vec<(String, usize)> = vec![];
        let mut depth_of: Vec<String> = vec![];
        let mut skip_until: Option<&'static str> = None;
        while i < b.len() {
            if b[i] != b'<' {
                let end = memchr::memchr(b'<', &b[i..]).map_or(b.len(), |p| i + p);
                if skip_until.is_none() {
                    let text = decode_entities(&html[i..end]);
                    let words = text
                        .split_whitespace()
                        .filter(|w| w.chars().any(char::is_alphanumeric))
                        .count();
                    if hidden.is_empty() {
                        self.visible_words += words;
                    } else {
                        self.hidden_words += words;
                    }
                    if let Some(l) = open_link.as_mut() {
                        push_text(&mut l.text, &text);
                    }
                }
                i = end;
                continue;
            }
            if b[i..].starts_with(b"<!--") {
                i = memchr::memmem::find(&b[i..], b"-->").map_or(b.len(), |p| i + p + 3);
                continue;
            }
            let end = tag_end(b, i);
            let tag = Tag::parse(&html[i + 1..end.saturating_sub(1).max(i + 1)]);
            i = end;
            if let Some(until) = skip_until {
                if tag.closing && tag.name == until {
                    skip_until = None;
                }
                continue;
            }
            self.tag(&tag, &mut open_link, &mut skip_until);
            if tag.closing {
                if let Some(pos) = depth_of.iter().rposition(|n| *n == tag.name) {
                    depth_of.truncate(pos);
                    hidden.retain(|(_, d)| *d < pos);
                }
            } else if !VOID.contains(&tag.name.as_str()) && !tag.self_closing {
                if tag.hides() {
                    hidden.push((tag.name.clone(), depth_of.len()));
                }
                depth_of.push(tag.name.clone());
                if depth_of.len() > 256 {
                    depth_of.remove(0);
                    hidden.retain(|(_, d)| *d > 0);
                    hidden.iter_mut().for_each(|(_, d)| *d -= 1);
                }
            }
        }
        if let Some(l) = open_link.take() {
            self.add_link(l);
        }
    }

    fn tag(&mut self, tag: &Tag, open_link: &mut Option<Link>, skip: &mut Option<&'static str>) {
        match (tag.name.as_str(), tag.closing) {
            ("a", false) => {
                if let Some(l) = open_link.take() {
                    self.add_link(l);
                }
                if let Some(href) = tag.attr("href") {
                    *open_link = Some(Link {
                        href: href.trim().to_string(),
                        text: String::new(),
                    });
                }
            }
            ("a", true) => {
                if let Some(l) = open_link.take() {
                    self.add_link(l);
                }
            }
            ("form", false) => self.forms += 1,
            ("input", false)
                if tag
                    .attr("type")
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("password")) =>
            {
                self.password_fields += 1;
            }
            ("img", false) => {
                // Tracking pixels are no picture.
                let tiny = |a: &str| {
                    tag.attr(a).is_some_and(|v| {
                        v.trim_end_matches("px")
                            .trim()
                            .parse::<u32>()
                            .is_ok_and(|n| n <= 2)
                    })
                };
                if !(tiny("width") || tiny("height")) {
                    self.images += 1;
                }
            }
            ("script", false) => *skip = Some("script"),
            ("style", false) => *skip = Some("style"),
            ("head", false) => *skip = Some("head"),
            ("title", false) => *skip = Some("title"),
            _ => {}
        }
        if !tag.closing && self.attr_urls.len() < MAX_URLS {
            for name in ["href", "src", "action", "background"] {
                if let Some(v) = tag.attr(name) {
                    let v = v.trim();
                    if !v.is_empty() && !v.starts_with('#') && !v.starts_with("cid:") {
                        self.attr_urls.push(v.to_string());
                    }
                }
            }
        }
    }

    fn add_link(&mut self, mut l: Link) {
        if self.links.len() < MAX_URLS {
            l.text = l.text.trim().to_string();
            self.links.push(l);
        }
    }
}

fn push_text(to: &mut String, text: &str) {
    for w in text.split_whitespace() {
        if to.len() >= MAX_LINK_TEXT {
            return;
        }
        if !to.is_empty() {
            to.push(' ');
        }
        to.push_str(w);
    }
}

/// The index after the `>` closing the tag at `start`, quotes respected.
fn tag_end(b: &[u8], start: usize) -> usize {
    let mut quote = None;
    for (k, &c) in b[start + 1..].iter().enumerate() {
        match (quote, c) {
            (None, b'"' | b'\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, b'>') => return start + 1 + k + 1,
            _ => {}
        }
    }
    b.len()
}

/// One tag: name, whether it closes, its attributes.
#[derive(Debug, Default)]
struct Tag {
    name: String,
    closing: bool,
    self_closing: bool,
    attrs: Vec<(String, String)>,
}

impl Tag {
    fn parse(inner: &str) -> Tag {
        let inner = inner.trim();
        let (closing, inner) = match inner.strip_prefix('/') {
            Some(r) => (true, r),
            None => (false, inner),
        };
        let self_closing = inner.ends_with('/');
        let inner = inner.trim_end_matches('/');
        let name_end = inner
            .find(|c: char| c.is_whitespace() || c == '/')
            .unwrap_or(inner.len());
        let mut tag = Tag {
            name: inner[..name_end].to_ascii_lowercase(),
            closing,
            self_closing,
            attrs: vec![],
        };
        let mut rest = &inner[name_end..];
        while tag.attrs.len() < 32 {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
            if rest.is_empty() {
                break;
            }
            let n_end = rest
                .find(|c: char| c.is_whitespace() || c == '=')
                .unwrap_or(rest.len());
            let name = rest[..n_end].to_ascii_lowercase();
            rest = rest[n_end..].trim_start();
            let Some(after) = rest.strip_prefix('=') else {
                tag.attrs.push((name, String::new()));
                continue;
            };
            let after = after.trim_start();
            let (value, next) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let body = &after[1..];
                    match body.find(q) {
                        Some(e) => (&body[..e], &body[e + 1..]),
                        None => (body, ""),
                    }
                }
                _ => {
                    let e = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..e], &after[e..])
                }
            };
            tag.attrs.push((name, decode_entities(value)));
            rest = next;
        }
        tag
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The element's style hides its content.
    fn hides(&self) -> bool {
        if self.attr("hidden").is_some() {
            return true;
        }
        let Some(style) = self.attr("style") else {
            return false;
        };
        let style: String = style
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        style.split(';').any(|decl| {
            matches!(
                decl.trim_end_matches("!important"),
                "display:none"
                    | "visibility:hidden"
                    | "font-size:0"
                    | "font-size:0px"
                    | "font-size:1px"
                    | "font-size:0pt"
                    | "opacity:0"
                    | "max-height:0"
                    | "max-height:0px"
            )
        })
    }
}

/// Decode the entities mail HTML uses (named ones for markup and spacing, numeric ones).
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        let end = rest[1..].find(';').map(|e| e + 1).filter(|&e| e <= 10);
        let decoded = end.and_then(|e| entity(&rest[1..e]));
        match (end, decoded) {
            (Some(e), Some(c)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let n = match num.strip_prefix(['x', 'X']) {
            Some(h) => u32::from_str_radix(h, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(n);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "shy" => '\u{ad}',
        "zwnj" => '\u{200c}',
        "zwj" => '\u{200d}',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(h: &str) -> HtmlFacts {
        let mut f = HtmlFacts::default();
        f.scan(h);
        f
    }

    #[test]
    fn links_keep_their_text_and_urls_are_collected() {
        let f = facts(
            "<p>Hi <a href=\"https://evil.top/x?a=1&amp;b=2\">https://www.paypal.com</a>\
             <img src='http://img.example/p.gif'> <a href=#top>top</a></p>",
        );
        assert_eq!(f.links[0].href, "https://evil.top/x?a=1&b=2");
        assert_eq!(f.links[0].text, "https://www.paypal.com");
        assert_eq!(
            f.attr_urls,
            ["https://evil.top/x?a=1&b=2", "http://img.example/p.gif"]
        );
        assert_eq!(f.images, 1);
    }

    #[test]
    fn hidden_words_are_counted_apart() {
        let f = facts(
            "<div style=\"display: none !important\">one two <b>three</b></div>\
             <p>four five</p><span style='font-size:0px'>six</span><br style='display:none'>seven",
        );
        assert_eq!((f.hidden_words, f.visible_words), (4, 3));
    }

    #[test]
    fn forms_scripts_and_comments() {
        let f = facts(
            "<!-- <a href=x>no</a> --><script>var a = '<a href=y>';</script>\
             <form action=\"http://203.0.113.9/p\"><input type=\"password\" name=p></form>",
        );
        assert_eq!((f.forms, f.password_fields), (1, 1));
        assert!(f.links.is_empty());
        assert_eq!(f.attr_urls, ["http://203.0.113.9/p"]);
    }

    #[test]
    fn entities() {
        assert_eq!(
            decode_entities("a&amp;b&#65;&#x42;&shy;&bogus;&"),
            "a&bAB\u{ad}&bogus;&"
        );
    }
}
