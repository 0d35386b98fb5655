//! Built-in tests a rule names with `eval:NAME(args)`: facts a regular expression cannot
//! see (what a link's text claims against where it goes, a brand against its own domains,
//! hidden words, scripts mixed inside a word, a list's valid signature). The rule file
//! still gives the name, score and description.

use super::view::{View, host_of, registered};
use crate::auth::AuthResult;

/// A brand and the registered domains that are its own (`brand` lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brand {
    /// The brand as written in mail, lower case (matched on a confusable-folded skeleton).
    pub name: String,
    /// Its own registered domains.
    pub domains: Vec<String>,
}

type Test = fn(&View<'_>, &[f64], &[Brand]) -> bool;

/// A compiled `eval:` test.
#[derive(Clone)]
pub struct Eval {
    test: Test,
    args: Vec<f64>,
}

impl std::fmt::Debug for Eval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eval").field("args", &self.args).finish()
    }
}

/// The tests, with how many numeric arguments each takes and what they do.
const TESTS: &[(&str, usize, Test, &str)] = &[
    (
        "image_only",
        1,
        image_only,
        "an image, and at most N words of text",
    ),
    (
        "hidden_text",
        1,
        hidden_text,
        "at least N words in hidden HTML",
    ),
    (
        "link_text_mismatch",
        0,
        link_text_mismatch,
        "a link's text shows a domain its href does not go to",
    ),
    (
        "brand_in_from_name",
        0,
        brand_in_from_name,
        "From's display name names a brand; the address is not the brand's",
    ),
    (
        "brand_links_elsewhere",
        0,
        brand_links_elsewhere,
        "From's name or the Subject names a brand; sender and every link are elsewhere",
    ),
    (
        "mixed_script_words",
        1,
        mixed_script_words,
        "at least N words mix Latin letters with Cyrillic or Greek ones",
    ),
    (
        "password_form",
        0,
        password_form,
        "an HTML form with a password field",
    ),
    ("html_form", 0, html_form, "an HTML form"),
    (
        "html_attachment",
        0,
        html_attachment,
        "an attached web page or SVG image (.htm, .html, .shtml, .xhtml, .svg)",
    ),
    (
        "soft_hyphen_words",
        2,
        soft_hyphen_words,
        "at least N words split by soft hyphens, and at least P percent of the words",
    ),
    (
        "zero_width_words",
        1,
        zero_width_words,
        "at least N words with an invisible (zero-width) character between letters",
    ),
    (
        "dkim_list_valid",
        0,
        dkim_list_valid,
        "List-Id, and a valid DKIM signature of the From or list domain",
    ),
];

impl Eval {
    /// Compile `name(args)`.
    pub fn compile(name: &str, args: &[String]) -> Result<Eval, String> {
        let Some(&(_, n, test, _)) = TESTS.iter().find(|t| t.0 == name) else {
            let known: Vec<&str> = TESTS.iter().map(|t| t.0).collect();
            return Err(format!(
                "eval:{name}: no such test (known: {})",
                known.join(", ")
            ));
        };
        if args.len() != n {
            return Err(format!(
                "eval:{name}: takes {n} argument(s), not {}",
                args.len()
            ));
        }
        let args = args
            .iter()
            .map(|a| {
                a.parse::<f64>()
                    .map_err(|_| format!("eval:{name}: `{a}` is not a number"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Eval { test, args })
    }

    /// Run it.
    pub fn run(&self, view: &View<'_>, brands: &[Brand]) -> bool {
        (self.test)(view, &self.args, brands)
    }

    /// Every test with what it does (for `filterd rules lint`).
    pub fn catalogue() -> impl Iterator<Item = (&'static str, &'static str)> {
        TESTS.iter().map(|t| (t.0, t.3))
    }
}

fn image_only(v: &View<'_>, a: &[f64], _: &[Brand]) -> bool {
    let images = v.html.images + v.features.mime.image_parts;
    if images == 0 {
        return false;
    }
    let words = if v.features.html_ranges.is_empty() {
        v.features.body_text.split_whitespace().count()
    } else {
        v.html.visible_words
    };
    (words as f64) <= a[0]
}

fn hidden_text(v: &View<'_>, a: &[f64], _: &[Brand]) -> bool {
    v.html.hidden_words as f64 >= a[0]
}

fn password_form(v: &View<'_>, _: &[f64], _: &[Brand]) -> bool {
    v.html.forms > 0 && v.html.password_fields > 0
}

fn html_form(v: &View<'_>, _: &[f64], _: &[Brand]) -> bool {
    v.html.forms > 0
}

fn html_attachment(v: &View<'_>, _: &[f64], _: &[Brand]) -> bool {
    v.features.mime.attachment_names.iter().any(|n| {
        let n = n.trim().trim_end_matches(['.', ' ']).to_ascii_lowercase();
        [".htm", ".html", ".shtml", ".xhtml", ".svg"]
            .iter()
            .any(|e| n.ends_with(e))
    })
}

fn soft_hyphen_words(v: &View<'_>, a: &[f64], _: &[Brand]) -> bool {
    let w = v.words();
    w.soft_hyphen as f64 >= a[0] && 100.0 * w.soft_hyphen as f64 / w.words.max(1) as f64 >= a[1]
}

fn zero_width_words(v: &View<'_>, a: &[f64], _: &[Brand]) -> bool {
    v.words().zero_width as f64 >= a[0]
}

fn link_text_mismatch(v: &View<'_>, _: &[f64], _: &[Brand]) -> bool {
    v.html.links.iter().any(|l| {
        let Some(shown) = shown_domain(&l.text) else {
            return false;
        };
        let href = super::view::normalise(&l.href);
        let Some(host) = href.as_deref().and_then(host_of) else {
            return false;
        };
        registered(&shown) != registered(host)
    })
}

/// The domain a link's text shows, when it looks like a URL or a host name.
fn shown_domain(text: &str) -> Option<String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .unwrap_or(&t);
    let host = t.split(['/', '?', '#', ' ']).next()?;
    let labels: Vec<&str> = host.split('.').collect();
    let tld = labels.last()?;
    let ok = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && tld.len() >= 2
        && tld.bytes().all(|b| b.is_ascii_alphabetic());
    ok.then(|| host.to_string())
}

fn from_domain(v: &View<'_>) -> Option<String> {
    v.features
        .from
        .as_ref()
        .and_then(|f| f.domain())
        .map(registered)
}

fn own(brand: &Brand, domain: &str) -> bool {
    brand.domains.iter().any(|d| registered(d) == domain)
}

/// The brands `text` names (on its confusable-folded skeleton, as whole words).
fn named<'b>(text: &str, brands: &'b [Brand]) -> impl Iterator<Item = &'b Brand> {
    let s = skeleton(text);
    brands.iter().filter(move |b| contains_word(&s, &b.name))
}

/// Words a sender's name holds beside a brand when it speaks for the brand ("PayPal
/// Service", "Microsoft 365 Security Team"); any other word ("Chase Miller") makes it a
/// person's or another company's name.
const SERVICE_WORDS: &[&str] = &[
    "support",
    "service",
    "services",
    "team",
    "security",
    "account",
    "accounts",
    "billing",
    "notification",
    "notifications",
    "alert",
    "alerts",
    "customer",
    "customers",
    "care",
    "online",
    "id",
    "secure",
    "verification",
    "help",
    "helpdesk",
    "center",
    "centre",
    "desk",
    "express",
    "delivery",
    "parcel",
    "shipping",
    "logistics",
    "mail",
    "inc",
    "ltd",
    "llc",
    "com",
    "official",
    "authenticator",
    "admin",
    "administrator",
    "it",
    "office",
    "pay",
    "wallet",
    "bank",
    "banking",
    "card",
    "cards",
    "member",
    "members",
    "noreply",
    "no",
    "reply",
    "do",
    "not",
    "info",
    "update",
    "updates",
    "prime",
    "store",
    "tracking",
    "courier",
    "the",
    "your",
    "via",
    "and",
    "&",
    "-",
    "|",
    "365",
    "cloud",
    "storage",
    "drive",
    "teams",
    "protection",
    "fraud",
    "department",
    "dept",
    "payments",
    "payment",
    "rewards",
    "web",
    "portal",
    "system",
    "systems",
    "message",
    "messages",
    "center.",
    "worldwide",
    "global",
];

/// The brand `name` speaks for, when it only names a brand and service words.
fn speaks_for<'b>(name: &str, brands: &'b [Brand]) -> Option<&'b Brand> {
    let s = skeleton(name);
    let b = named(name, brands).max_by_key(|b| b.name.len())?;
    let rest = s.replacen(&b.name, " ", 1);
    let only_service = rest
        .split(|c: char| !(c.is_alphanumeric() || c == '&'))
        .filter(|w| !w.is_empty())
        .all(|w| SERVICE_WORDS.contains(&w));
    only_service.then_some(b)
}

fn brand_in_from_name(v: &View<'_>, _: &[f64], brands: &[Brand]) -> bool {
    let Some(name) = v.features.from.as_ref().and_then(|f| f.name.as_deref()) else {
        return false;
    };
    let domain = from_domain(v).unwrap_or_default();
    speaks_for(name, brands).is_some_and(|b| !own(b, &domain))
}

fn brand_links_elsewhere(v: &View<'_>, _: &[f64], brands: &[Brand]) -> bool {
    let name = v.features.from.as_ref().and_then(|f| f.name.as_deref());
    let text = format!(
        "{} {}",
        name.unwrap_or_default(),
        v.features.subject.as_deref().unwrap_or_default()
    );
    let domain = from_domain(v).unwrap_or_default();
    let hosts: Vec<String> = v
        .uris
        .iter()
        .filter_map(|u| host_of(u))
        .map(registered)
        .collect();
    !hosts.is_empty()
        && named(&text, brands).any(|b| !own(b, &domain) && !hosts.iter().any(|h| own(b, h)))
}

fn mixed_script_words(v: &View<'_>, a: &[f64], _: &[Brand]) -> bool {
    v.words().mixed_script as f64 >= a[0]
}

fn dkim_list_valid(v: &View<'_>, _: &[f64], _: &[Brand]) -> bool {
    let Some(auth) = v.auth else {
        return false;
    };
    let list = v.header_values("list-id", super::parse::HeaderPart::Decoded);
    let Some(list) = list.first() else {
        return false;
    };
    let list_host = list
        .rsplit_once('<')
        .map_or(list.as_str(), |(_, h)| h)
        .trim_end_matches(['>', ' ']);
    let list_domain = registered(list_host);
    auth.dkim.iter().any(|d| {
        d.result == AuthResult::Pass
            && (d.author || (!d.domain.is_empty() && registered(&d.domain) == list_domain))
    })
}

/// Lower case, with the Cyrillic and Greek letters that look like Latin ones folded to
/// them (a small part of Unicode's confusables, the part phishing uses), and zero-width
/// characters and soft hyphens dropped.
pub fn skeleton(s: &str) -> String {
    s.chars()
        .filter(|c| {
            !matches!(
                c,
                '\u{ad}' | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}'
            )
        })
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'а' | 'α' => 'a',
            'е' | 'ε' => 'e',
            'о' | 'ο' | '0' => 'o',
            '1' | 'ӏ' => 'l',
            'р' | 'ρ' => 'p',
            'с' | 'ϲ' => 'c',
            'х' | 'χ' => 'x',
            'у' | 'γ' => 'y',
            'і' | 'ι' => 'i',
            'ѕ' => 's',
            'ј' => 'j',
            'ԁ' => 'd',
            'һ' => 'h',
            'ν' => 'v',
            'κ' | 'к' => 'k',
            'т' | 'τ' => 't',
            'м' => 'm',
            'п' => 'n',
            'в' | 'β' => 'b',
            c => c,
        })
        .collect()
}

fn contains_word(haystack: &str, word: &str) -> bool {
    let b = haystack.as_bytes();
    let mut from = 0;
    while let Some(p) = haystack[from..].find(word) {
        let (s, e) = (from + p, from + p + word.len());
        let before = s == 0 || !b[s - 1].is_ascii_alphanumeric();
        let after = e == b.len() || !b[e].is_ascii_alphanumeric();
        if before && after {
            return true;
        }
        from = s + 1;
        while !haystack.is_char_boundary(from) {
            from += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeletons_fold_lookalikes() {
        assert_eq!(skeleton("Pаypal"), "paypal");
        assert!(contains_word(
            &skeleton("Your P\u{200b}ayPal account"),
            "paypal"
        ));
        assert!(!contains_word("paypals", "paypal"));
        assert!(contains_word("via paypal.", "paypal"));
    }

    #[test]
    fn shown_domains() {
        assert_eq!(
            shown_domain("https://www.PayPal.com/signin"),
            Some("www.paypal.com".into())
        );
        assert_eq!(shown_domain("Click here"), None);
        assert_eq!(shown_domain("v1.2"), None);
    }

    #[test]
    fn unknown_tests_and_bad_arguments_are_refused() {
        assert!(
            Eval::compile("nope", &[])
                .unwrap_err()
                .contains("no such test")
        );
        assert!(
            Eval::compile("image_only", &[])
                .unwrap_err()
                .contains("takes 1")
        );
        assert!(
            Eval::compile("image_only", &["x".into()])
                .unwrap_err()
                .contains("not a number")
        );
    }
}
