//! The rule file format, line by line (SpamAssassin's layout, our own rules):
//!
//! ```text
//! # a comment (whole lines only: `#` may occur inside a pattern)
//! header   NAME  Subject =~ /pattern/flags        # Name, Name:raw, Name:name, Name:addr, ALL
//! header   NAME  Subject !~ /pattern/flags        # fires when no instance matches
//! header   NAME  exists:List-Id
//! body     NAME  /pattern/flags                   # Subject and decoded text, HTML as text
//! rawbody  NAME  /pattern/flags                   # decoded text, HTML with its tags
//! uri      NAME  /pattern/flags                   # every URL found, normalised
//! full     NAME  /pattern/flags                   # the whole message, bytes as received
//! body     NAME  eval:image_only(20)              # a built-in test (see `eval.rs`)
//! meta     NAME  (__A && !__B) || (__C + __D + __E >= 2)
//! score    NAME  2.5
//! describe NAME  One line for humans
//! tflags   NAME  nice noautolearn
//! brand    paypal  paypal.com paypal.me           # a brand and the domains that are its own
//! brand    royal_mail royalmail.com               # `_` for a space in the brand's name
//! ```
//!
//! Patterns are `/.../flags` or `m` with any delimiter (`m{...}`, `m!...!`); flags `i m s x`.
//! They match bytes with ASCII classes, as SpamAssassin's do; write `(?u:...)` for Unicode
//! ones (`(?u:[\x{200B}\x{FEFF}])`, `(?u:\p{Cyrillic})`). Literal UTF-8 text matches as is.
//! Names are upper case letters, digits and `_`; names starting `__` are parts for meta
//! rules: never scored, never reported. Every problem is collected with file and line.

use std::fmt;

/// Where a line came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file (or `shipped:NAME` for the compiled-in set).
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Where.
    pub at: Origin,
    /// What.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A regular expression with its flags, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The pattern between the delimiters.
    pub source: String,
    /// The flags after the closing delimiter.
    pub flags: String,
}

impl Pattern {
    /// The pattern for the `regex` crate: bytes, ASCII classes (`\w`, `\d`, `\s`, `\b`,
    /// case-insensitivity), as SpamAssassin matches by default, with the flags as a group.
    /// Unicode classes are one `(?u:...)` away; ASCII ones keep the sets in the fast
    /// engine (Unicode word classes and boundaries make the DFA large or give up).
    pub fn compiled_source(&self) -> String {
        let mut out = String::with_capacity(self.source.len() + 16);
        out.push_str("(?");
        out.push_str(&self.flags);
        out.push_str("-u)");
        out.push_str(&self.source);
        out
    }
}

/// Which part of a header a header rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HeaderPart {
    /// Unfolded and RFC 2047-decoded.
    Decoded,
    /// As received, folding included.
    Raw,
    /// The display names of the addresses.
    Name,
    /// The addresses, lower-cased.
    Addr,
}

/// What a header rule tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTest {
    /// `Name =~ /re/` (or `!~` when `negated`); `Name` is `ALL` for the whole header block.
    Match {
        /// The header name, lower-cased (`all` for the block).
        name: String,
        /// Which part of it.
        part: HeaderPart,
        /// `!~`.
        negated: bool,
        /// The pattern.
        pattern: Pattern,
    },
    /// `exists:Name`.
    Exists(String),
}

/// The test of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// A header rule.
    Header(HeaderTest),
    /// A body rule.
    Body(Pattern),
    /// A rawbody rule.
    RawBody(Pattern),
    /// A uri rule.
    Uri(Pattern),
    /// A full rule.
    Full(Pattern),
    /// A meta rule's expression, as written.
    Meta(String),
    /// A built-in test: function name and its arguments, as written.
    Eval(String, Vec<String>),
}

/// One line of a rule file, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A rule's test.
    Rule(String, Test),
    /// `score NAME n`.
    Score(String, f64),
    /// `describe NAME text`.
    Describe(String, String),
    /// `tflags NAME flag...`.
    Tflags(String, Vec<String>),
    /// `brand NAME domain...`.
    Brand(String, Vec<String>),
}

/// The tflags filterd knows.
pub const TFLAGS: &[&str] = &["nice", "noautolearn", "net"];

/// Parse one file's text; `file` names it in errors. Returns the lines with their origin,
/// and every problem.
pub fn parse_file(file: &str, text: &str) -> (Vec<(Origin, Line)>, Vec<RuleError>) {
    let mut lines = vec![];
    let mut errors = vec![];
    for (n, raw) in text.lines().enumerate() {
        let at = Origin {
            file: file.to_string(),
            line: n + 1,
        };
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match parse_line(l) {
            Ok(line) => lines.push((at, line)),
            Err(message) => errors.push(RuleError { at, message }),
        }
    }
    (lines, errors)
}

/// A rule or brand name: `A-Z`, `0-9`, `_`, starting with a letter or `_`.
pub fn valid_name(n: &str) -> bool {
    n.len() <= 64
        && n.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && n.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn parse_line(l: &str) -> Result<Line, String> {
    let (directive, rest) = split_word(l);
    let (name, rest) = split_word(rest);
    if name.is_empty() {
        return Err(format!("`{directive}` needs a name"));
    }
    if directive == "brand" {
        let domains: Vec<String> = rest.split_whitespace().map(str::to_lowercase).collect();
        if domains.is_empty() {
            return Err(format!("brand {name}: name the brand's own domains"));
        }
        return Ok(Line::Brand(name.to_lowercase().replace('_', " "), domains));
    }
    if !valid_name(name) {
        return Err(format!(
            "`{name}` is not a rule name (upper case letters, digits and _)"
        ));
    }
    let name = name.to_string();
    let test = |t: Test| Ok(Line::Rule(name.clone(), t));
    match directive {
        "header" => test(Test::Header(header_test(rest)?)),
        "body" | "rawbody" | "uri" | "full" => {
            if let Some(call) = rest.strip_prefix("eval:") {
                let (f, args) = eval_call(call)?;
                return test(Test::Eval(f, args));
            }
            let p = pattern(rest)?;
            test(match directive {
                "body" => Test::Body(p),
                "rawbody" => Test::RawBody(p),
                "uri" => Test::Uri(p),
                _ => Test::Full(p),
            })
        }
        "meta" if rest.is_empty() => Err(format!("meta {name}: no expression")),
        "meta" => test(Test::Meta(rest.to_string())),
        "score" => {
            let first = rest.split_whitespace().next().unwrap_or_default();
            let s: f64 = first
                .parse()
                .map_err(|_| format!("score {name}: `{rest}` is not a number"))?;
            if !s.is_finite() {
                return Err(format!("score {name}: `{rest}` is not a finite number"));
            }
            Ok(Line::Score(name, s))
        }
        "describe" => Ok(Line::Describe(name, rest.to_string())),
        "tflags" => {
            let flags: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            if let Some(bad) = flags.iter().find(|f| !TFLAGS.contains(&f.as_str())) {
                return Err(format!(
                    "tflags {name}: unknown flag `{bad}` (known: {})",
                    TFLAGS.join(", ")
                ));
            }
            Ok(Line::Tflags(name, flags))
        }
        other => Err(format!(
            "unknown directive `{other}` (header, body, rawbody, uri, full, meta, score, describe, tflags, brand)"
        )),
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

/// `Name[:part] =~ /re/flags`, `Name !~ /re/`, `exists:Name`.
fn header_test(rest: &str) -> Result<HeaderTest, String> {
    if let Some(h) = rest.strip_prefix("exists:") {
        let h = h.trim();
        if h.is_empty() || h.contains(char::is_whitespace) {
            return Err(format!("exists: needs one header name, not `{h}`"));
        }
        return Ok(HeaderTest::Exists(h.to_ascii_lowercase()));
    }
    if rest.starts_with("eval:") {
        return Err("header eval: tests are written as `body NAME eval:...`".into());
    }
    let (spec, rest) = split_word(rest);
    let (op, rest) = split_word(rest);
    let negated = match op {
        "=~" => false,
        "!~" => true,
        _ => {
            return Err(format!(
                "header: expected `=~` or `!~` after `{spec}`, not `{op}`"
            ));
        }
    };
    let (name, part) = match spec.split_once(':') {
        None => (spec, HeaderPart::Decoded),
        Some((n, "raw")) => (n, HeaderPart::Raw),
        Some((n, "name")) => (n, HeaderPart::Name),
        Some((n, "addr")) => (n, HeaderPart::Addr),
        Some((_, p)) => return Err(format!("header: unknown part `:{p}` (raw, name, addr)")),
    };
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!("header: `{name}` is not a header name"));
    }
    Ok(HeaderTest::Match {
        name: name.to_ascii_lowercase(),
        part,
        negated,
        pattern: pattern(rest)?,
    })
}

/// `/re/flags` or `m<d>re<d>flags` (brackets pair up: `m{...}`).
fn pattern(s: &str) -> Result<Pattern, String> {
    let s = s.trim();
    let (open, body) = if let Some(b) = s.strip_prefix('/') {
        ('/', b)
    } else if let Some(b) = s.strip_prefix('m') {
        let mut cs = b.chars();
        match cs.next() {
            Some(d) if !d.is_alphanumeric() && !d.is_whitespace() => (d, cs.as_str()),
            _ => return Err(format!("`{s}` is not a pattern (/.../ or m{{...}})")),
        }
    } else {
        return Err(format!("`{s}` is not a pattern (/.../ or m{{...}})"));
    };
    let close = match open {
        '{' => '}',
        '(' => ')',
        '[' => ']',
        '<' => '>',
        d => d,
    };
    let end = body
        .rfind(close)
        .ok_or_else(|| format!("pattern `{s}` has no closing `{close}`"))?;
    let (source, flags) = (&body[..end], &body[end + close.len_utf8()..]);
    if source.is_empty() {
        return Err("empty pattern".into());
    }
    if let Some(bad) = flags.chars().find(|c| !"imsx".contains(*c)) {
        return Err(format!("unknown pattern flag `{bad}` (i, m, s, x)"));
    }
    Ok(Pattern {
        source: source.to_string(),
        flags: flags.to_string(),
    })
}

/// `name(arg, arg)`.
fn eval_call(s: &str) -> Result<(String, Vec<String>), String> {
    let s = s.trim();
    let (f, args) = s
        .strip_suffix(')')
        .and_then(|s| s.split_once('('))
        .ok_or_else(|| format!("eval:{s}: expected name(args)"))?;
    let args = args
        .split(',')
        .map(|a| a.trim().trim_matches(['"', '\'']).to_string())
        .filter(|a| !a.is_empty())
        .collect();
    Ok((f.trim().to_string(), args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(l: &str) -> Result<Line, String> {
        parse_line(l)
    }

    #[test]
    fn each_directive_parses() {
        assert_eq!(
            one("body X /bit\\s*coin/i").unwrap(),
            Line::Rule(
                "X".into(),
                Test::Body(Pattern {
                    source: "bit\\s*coin".into(),
                    flags: "i".into()
                })
            )
        );
        assert!(matches!(
            one("header X From:name =~ m{pay/pal}i").unwrap(),
            Line::Rule(_, Test::Header(HeaderTest::Match { part: HeaderPart::Name, ref name, .. })) if name == "from"
        ));
        assert!(matches!(
            one("header X Subject !~ /./").unwrap(),
            Line::Rule(_, Test::Header(HeaderTest::Match { negated: true, .. }))
        ));
        assert_eq!(
            one("header X exists:List-Id").unwrap(),
            Line::Rule(
                "X".into(),
                Test::Header(HeaderTest::Exists("list-id".into()))
            )
        );
        assert_eq!(
            one("body X eval:image_only(20, 'a')").unwrap(),
            Line::Rule(
                "X".into(),
                Test::Eval("image_only".into(), vec!["20".into(), "a".into()])
            )
        );
        assert_eq!(one("score X -1.5").unwrap(), Line::Score("X".into(), -1.5));
        assert_eq!(
            one("brand PayPal paypal.com PayPal.me").unwrap(),
            Line::Brand(
                "paypal".into(),
                vec!["paypal.com".into(), "paypal.me".into()]
            )
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (l, want) in [
            ("bodyy X /a/", "unknown directive"),
            ("body x /a/", "not a rule name"),
            ("body X /a", "no closing"),
            ("body X /a/q", "unknown pattern flag"),
            ("header X Subject == /a/", "expected `=~`"),
            ("header X Subject:foo =~ /a/", "unknown part"),
            ("score X many", "not a number"),
            ("tflags X nice learn", "unknown flag `learn`"),
            ("meta X", "no expression"),
            ("body", "needs a name"),
        ] {
            let e = one(l).unwrap_err();
            assert!(e.contains(want), "{l}: {e}");
        }
        let (lines, errors) = parse_file("f.cf", "# c\n\nbody A /x/\nbody b /y/\n");
        assert_eq!(lines.len(), 1);
        assert_eq!(errors[0].to_string().split(": ").next(), Some("f.cf:4"));
    }

    #[test]
    fn patterns_are_ascii_unless_asked() {
        let p = Pattern {
            source: r"\bcoin\b".into(),
            flags: "i".into(),
        };
        assert_eq!(p.compiled_source(), r"(?i-u)\bcoin\b");
        let re = regex::bytes::Regex::new(&p.compiled_source()).unwrap();
        assert!(re.is_match("Bit COIN".as_bytes()));
        let zw = Pattern {
            source: r"a(?u:[\x{200B}\x{AD}])b €".into(),
            flags: String::new(),
        };
        let re = regex::bytes::Regex::new(&zw.compiled_source()).unwrap();
        assert!(re.is_match("a\u{ad}b €".as_bytes()));
    }
}
