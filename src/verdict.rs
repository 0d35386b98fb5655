//! Hits times scores gives the verdict: the total score, the sorted hit list, the amavis
//! category under a policy's [`Levels`]; and its rendering as amavisd-new's exact
//! `X-Spam-*` headers.

use crate::checks::Hits;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// amavisd-new's levels (validated by the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    /// Headers at or above.
    pub tag: f64,
    /// Spam at or above.
    pub tag2: f64,
    /// Blocked at or above.
    pub kill: f64,
}

/// The verdict on one message under one policy's levels.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Sum of the hit scores, rounded to 3 decimals.
    pub score: f64,
    /// Hits with their scores, sorted by name.
    pub hits: Vec<(&'static str, f64)>,
    /// The levels it was judged against.
    pub levels: Levels,
}

/// The least score of block-listed mail (amavisd-new's blacklist score).
pub(crate) const BLOCKED_SCORE: f64 = 64.0;

/// amavisd-new's content category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Below tag2.
    Clean,
    /// At or above tag2, below kill.
    Spammy,
    /// At or above kill.
    Spam,
}

impl Category {
    /// As written in the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Clean => "CLEAN",
            Category::Spammy => "SPAMMY",
            Category::Spam => "SPAM",
        }
    }
}

impl Verdict {
    /// Score the hits.
    pub fn new(hits: &Hits, scores: &BTreeMap<&'static str, f64>, levels: Levels) -> Self {
        Self::without(hits, scores, levels, |_| false)
    }

    /// Score the hits, leaving out those `skip` says (the hits of checks a policy turns off).
    pub fn without(
        hits: &Hits,
        scores: &BTreeMap<&'static str, f64>,
        levels: Levels,
        skip: impl Fn(&str) -> bool,
    ) -> Self {
        let mut scored: Vec<(&'static str, f64)> = hits
            .scaled()
            .filter(|(n, _)| !skip(n))
            .map(|(n, f)| {
                let s = scores.get(n).copied().unwrap_or(0.0) * f;
                (n, (s * 1000.0).round() / 1000.0)
            })
            .collect();
        scored.sort_by(|a, b| a.0.cmp(b.0));
        let sum: f64 = scored.iter().map(|(_, s)| s).sum();
        Verdict {
            score: (sum * 1000.0).round() / 1000.0,
            hits: scored,
            levels,
        }
    }

    /// Apply allow- and block-list hits as amavisd-new does: a blocked message scores at
    /// least 64, an allowed one at most 0 (block wins). The first hit of the deciding list
    /// carries the difference, so the listed hits still add up to the score.
    pub(crate) fn apply_lists(&mut self, allow: &[&'static str], block: &[&'static str]) {
        if allow.is_empty() && block.is_empty() {
            return;
        }
        let sum = self.score;
        let (first, delta) = if let Some(b) = block.first() {
            (*b, (BLOCKED_SCORE - sum).max(0.0))
        } else {
            (allow[0], (-sum).min(0.0))
        };
        for name in allow.iter().chain(block) {
            let s = if *name == first { delta } else { 0.0 };
            self.hits.push((name, (s * 1000.0).round() / 1000.0));
        }
        self.hits.sort_by(|a, b| a.0.cmp(b.0));
        self.score = ((sum + delta) * 1000.0).round() / 1000.0;
    }

    /// At or above tag2: spam.
    pub(crate) fn is_spam(&self) -> bool {
        self.score >= self.levels.tag2
    }

    /// At or above the tag level: X-Spam-* headers are added.
    pub(crate) fn is_tagged(&self) -> bool {
        self.score >= self.levels.tag
    }

    /// The amavis category.
    pub(crate) fn category(&self) -> Category {
        if self.score >= self.levels.kill {
            Category::Spam
        } else if self.is_spam() {
            Category::Spammy
        } else {
            Category::Clean
        }
    }

    /// The `X-Spam-Flag`, `X-Spam-Score`, `X-Spam-Level` and `X-Spam-Status` header lines,
    /// CRLF-terminated, in amavisd-new's format.
    pub(crate) fn spam_headers(&self, autolearn: &str) -> String {
        let mut out = String::with_capacity(256 + 24 * self.hits.len());
        let yes = self.is_spam();
        out.push_str(if yes {
            "X-Spam-Flag: YES\r\nX-Spam-Score: "
        } else {
            "X-Spam-Flag: NO\r\nX-Spam-Score: "
        });
        push_score(&mut out, self.score);
        let stars = if self.score >= 1.0 {
            (self.score as usize).min(64)
        } else {
            0
        };
        out.push_str("\r\nX-Spam-Level:");
        if stars > 0 {
            out.push(' ');
            out.extend(std::iter::repeat_n('*', stars));
        }
        out.push_str("\r\n");
        let mut fold = Fold::new(&mut out, "X-Spam-Status:");
        let mut w = String::with_capacity(64);
        fold.word(if yes { "Yes," } else { "No," });
        for (label, x) in [
            ("score=", self.score),
            ("tagged_above=", self.levels.tag),
            ("required=", self.levels.tag2),
        ] {
            w.clear();
            w.push_str(label);
            push_score(&mut w, x);
            fold.word(&w);
        }
        let n = self.hits.len();
        if n == 0 {
            fold.word("tests=[none]");
        }
        for (i, (name, score)) in self.hits.iter().enumerate() {
            w.clear();
            if i == 0 {
                w.push_str("tests=[");
            }
            w.push_str(name);
            w.push('=');
            push_score(&mut w, *score);
            w.push(if i + 1 == n { ']' } else { ',' });
            fold.word(&w);
        }
        w.clear();
        w.push_str("autolearn=");
        w.push_str(autolearn);
        fold.word(&w);
        out.push_str("\r\n");
        out
    }
}

/// A score as amavisd-new prints it: 3 decimals, trailing zeros and dot trimmed.
///
/// ```
/// use filterd::verdict::format_score;
/// assert_eq!(format_score(3.1), "3.1");
/// assert_eq!(format_score(-0.01), "-0.01");
/// assert_eq!(format_score(12.3456), "12.346");
/// assert_eq!(format_score(0.0), "0");
/// ```
pub fn format_score(x: f64) -> String {
    let mut s = String::with_capacity(8);
    push_score(&mut s, x);
    s
}

/// [`format_score`] appended to `out`. Scores are printed in every header and log line, so
/// the common case is done in integers: thousandths, unless the value sits within a hair of
/// a rounding tie, where `{:.3}`'s exact decimal rounding decides.
pub(crate) fn push_score(out: &mut String, x: f64) {
    let m = x * 1000.0;
    let tie = ((m - m.trunc()).abs() - 0.5).abs() < 1e-6;
    if !m.is_finite() || m.abs() >= 1e15 || tie {
        let s = format!("{x:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        out.push_str(if s == "-0" { "0" } else { s });
        return;
    }
    let n = m.round() as i64;
    if n < 0 {
        out.push('-');
    }
    let a = n.unsigned_abs();
    let _ = write!(out, "{}", a / 1000);
    let mut frac = a % 1000;
    if frac != 0 {
        out.push('.');
        let mut digits = 3;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        let _ = write!(out, "{frac:0digits$}");
    }
}

/// Words folded after a header name at 78 columns (a TAB counts as 8), breaking only between
/// words, continuation lines starting with a TAB; the caller ends the last line.
struct Fold<'a> {
    out: &'a mut String,
    col: usize,
}

impl<'a> Fold<'a> {
    fn new(out: &'a mut String, name: &str) -> Self {
        out.push_str(name);
        Fold {
            out,
            col: name.len(),
        }
    }

    fn word(&mut self, w: &str) {
        if self.col + 1 + w.len() > 78 && self.col > 8 {
            self.out.push_str("\r\n\t");
            self.col = 8;
        } else {
            self.out.push(' ');
            self.col += 1;
        }
        self.out.push_str(w);
        self.col += w.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels() -> Levels {
        Levels {
            tag: 2.0,
            tag2: 6.2,
            kill: 6.9,
        }
    }

    #[test]
    fn scaled_hits_score_a_share_of_their_configured_score() {
        let mut scores = BTreeMap::new();
        scores.insert("ML_SCORE", 4.0);
        let mut hits = Hits::default();
        hits.add_scaled("ML_SCORE", -0.3712);
        hits.add_scaled("ML_SCORE", 1.0); // a second add is ignored
        let v = Verdict::new(&hits, &scores, levels());
        assert_eq!(v.hits, vec![("ML_SCORE", -1.485)]);
        assert_eq!(v.score, -1.485);
        let mut big = Hits::default();
        big.add_scaled("ML_SCORE", 7.0);
        assert_eq!(
            Verdict::new(&big, &scores, levels()).score,
            4.0,
            "factors are clipped to [-1, 1]"
        );
    }

    #[test]
    fn lists_force_the_score() {
        let mut scores = BTreeMap::new();
        scores.insert("MISSING_DATE", 1.4);
        scores.insert("BAYES_00", -1.9);
        let mut hits = Hits::default();
        hits.add("MISSING_DATE");
        let mut v = Verdict::new(&hits, &scores, levels());
        v.apply_lists(&["ALLOWLIST_SENDER", "ALLOWLIST_CLIENT"], &[]);
        assert_eq!(v.score, 0.0);
        assert_eq!(
            v.hits,
            vec![
                ("ALLOWLIST_CLIENT", 0.0),
                ("ALLOWLIST_SENDER", -1.4),
                ("MISSING_DATE", 1.4)
            ]
        );
        let mut v = Verdict::new(&hits, &scores, levels());
        v.apply_lists(&["ALLOWLIST_SENDER"], &["BLOCKLIST_CLIENT"]);
        assert_eq!(v.score, 64.0, "block wins");
        assert_eq!(v.category(), Category::Spam);
        let mut low = Hits::default();
        low.add("BAYES_00");
        let mut v = Verdict::new(&low, &scores, levels());
        v.apply_lists(&["ALLOWLIST_SENDER"], &[]);
        assert_eq!(v.score, -1.9, "an allowed score below 0 stays");
        let mut v = Verdict::without(&hits, &scores, levels(), |n| n == "MISSING_DATE");
        assert_eq!(v.score, 0.0);
        v.apply_lists(&[], &["BLOCKLIST_SENDER"]);
        assert_eq!(v.hits, vec![("BLOCKLIST_SENDER", 64.0)]);
    }

    #[test]
    fn scores_print_like_amavis() {
        for (x, s) in [
            (3.1, "3.1"),
            (-0.01, "-0.01"),
            (12.345, "12.345"),
            (0.0, "0"),
            (-0.0001, "0"),
            (-999.0, "-999"),
            (6.31, "6.31"),
        ] {
            assert_eq!(format_score(x), s);
        }
    }

    #[test]
    fn the_integer_score_path_prints_what_exact_rounding_prints() {
        let exact = |x: f64| {
            let s = format!("{x:.3}");
            let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
            if s == "-0" { "0".to_string() } else { s }
        };
        // Every thousandth and half-thousandth in [-100, 100], and a pseudo-random spread.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let spread = (0..20_000).map(move |_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 2_000_000_000) as f64 / 1e6 - 1000.0
        });
        for x in (-200_000..=200_000)
            .map(|i| f64::from(i) / 2000.0)
            .chain(spread)
            .chain([
                1.0005,
                2.0015,
                -0.0005,
                64.0,
                1e14,
                -1e16,
                f64::NAN,
                f64::INFINITY,
            ])
        {
            assert_eq!(format_score(x), exact(x), "{x:?}");
        }
    }

    #[test]
    fn reproduces_the_reference_folding() {
        // The example in compat.md, from amavisd-new's own output.
        let v = Verdict {
            score: -1.003,
            hits: vec![
                ("BAYES_00", -1.9),
                ("DKIM_SIGNED", 0.1),
                ("DKIM_VALID", -0.1),
                ("SPF_PASS", -0.001),
            ],
            levels: levels(),
        };
        let h = v.spam_headers("ham autolearn_force=no");
        assert_eq!(
            h,
            "X-Spam-Flag: NO\r\nX-Spam-Score: -1.003\r\nX-Spam-Level:\r\n\
X-Spam-Status: No, score=-1.003 tagged_above=2 required=6.2\r\n\
\ttests=[BAYES_00=-1.9, DKIM_SIGNED=0.1, DKIM_VALID=-0.1,\r\n\
\tSPF_PASS=-0.001] autolearn=ham autolearn_force=no\r\n"
        );
    }

    #[test]
    fn spam_flag_level_and_category() {
        let mut scores = BTreeMap::new();
        scores.insert("GTUBE", 1000.0);
        scores.insert("MISSING_DATE", 1.4);
        let mut hits = Hits::default();
        hits.add("MISSING_DATE");
        hits.add("GTUBE");
        let v = Verdict::new(&hits, &scores, levels());
        assert_eq!(v.score, 1001.4);
        assert_eq!(v.category(), Category::Spam);
        let h = v.spam_headers("disabled");
        assert!(h.starts_with("X-Spam-Flag: YES\r\nX-Spam-Score: 1001.4\r\n"));
        assert!(h.contains(&format!("X-Spam-Level: {}\r\n", "*".repeat(64))));
        assert!(h.contains("tests=[GTUBE=1000, MISSING_DATE=1.4]"));
        for line in h.split("\r\n") {
            assert!(line.replace('\t', "        ").len() <= 78, "{line}");
        }
        let v = Verdict::new(&Hits::default(), &scores, levels());
        assert!(v.spam_headers("disabled").contains("tests=[none]"));
        assert_eq!(v.category(), Category::Clean);
    }
}
