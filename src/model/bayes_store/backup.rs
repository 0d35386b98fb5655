//! The store as text: `filtertrain --dump` (sa-learn's `--dump magic` line format, and one
//! line per token) and `--backup` / `--restore` (sa-learn's `v`/`t`/`s` layout), which
//! move a store between machines and versions losslessly.

use super::{Class, FORMAT_VERSION, Store, StoreError, TokenCounts};
use crate::message::tokenize::TOKENIZER_VERSION;

impl Store {
    /// `sa-learn --dump magic`, in its exact line format.
    pub fn dump_magic(&self) -> String {
        let (oldest, newest) = self.atime_range();
        let rows: [(u64, &str); 10] = [
            (u64::from(FORMAT_VERSION), "bayes db version"),
            (self.nspam, "nspam"),
            (self.nham, "nham"),
            (self.tokens.len() as u64, "ntokens"),
            (u64::from(oldest), "oldest atime"),
            (u64::from(newest), "newest atime"),
            (0, "last journal sync atime"),
            (self.last_expire, "last expiry atime"),
            (self.last_expire_delta, "last expire atime delta"),
            (self.last_expire_reduction, "last expire reduction count"),
        ];
        rows.iter()
            .map(|(v, label)| {
                format!(
                    "{:3.3} {:10} {:10} {:10}  non-token data: {label}\n",
                    0.0, 0, v, 0
                )
            })
            .collect()
    }

    /// `--dump data`: one line per token, `prob spam ham atime hash`, sorted by hash.
    pub fn dump_data(&self, prob: impl Fn(TokenCounts) -> f64) -> String {
        let mut tokens: Vec<_> = self.tokens.iter().collect();
        tokens.sort_unstable_by_key(|(h, _)| **h);
        let mut out = String::with_capacity(tokens.len() * 48);
        for (h, c) in tokens {
            out.push_str(&format!(
                "{:.3} {:10} {:10} {:10}  {h:016x}\n",
                prob(*c),
                c.spam,
                c.ham,
                c.atime
            ));
        }
        out
    }

    /// A text backup (sa-learn's layout): `v` lines for the counts, `t` lines for tokens,
    /// `s` lines for learned messages.
    pub fn backup(&self) -> String {
        let mut out = format!(
            "v\t{FORMAT_VERSION}\tdb_version # this must be the first line!!!\nv\t{TOKENIZER_VERSION}\ttokenizer_version\nv\t{}\tnum_spam\nv\t{}\tnum_nonspam\nv\t{}\tlast_expire\nv\t{}\tlast_expire_reduction\nv\t{}\tlast_expire_delta\n",
            self.nspam,
            self.nham,
            self.last_expire,
            self.last_expire_reduction,
            self.last_expire_delta
        );
        let mut tokens: Vec<_> = self.tokens.iter().collect();
        tokens.sort_unstable_by_key(|(h, _)| **h);
        for (h, c) in tokens {
            out.push_str(&format!(
                "t\t{}\t{}\t{}\t{h:016x}\n",
                c.spam, c.ham, c.atime
            ));
        }
        let mut seen: Vec<_> = self.seen.iter().collect();
        seen.sort_unstable_by_key(|(id, _)| **id);
        for (id, class) in seen {
            let c = if *class == Class::Spam { 's' } else { 'h' };
            out.push_str(&format!("s\t{c}\t{id:032x}\n"));
        }
        out
    }

    /// Parse a backup written by [`Store::backup`].
    pub fn restore(text: &str) -> Result<Store, StoreError> {
        let mut s = Store::default();
        for (n, line) in text.lines().enumerate() {
            let bad = |reason: &str| StoreError::Backup {
                line: n + 1,
                reason: reason.to_string(),
            };
            let f: Vec<&str> = line.split('\t').collect();
            let num = |i: usize| -> Result<u64, StoreError> {
                f.get(i)
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| bad("bad number"))
            };
            match f.first().copied() {
                Some("v") => {
                    let label = f
                        .get(2)
                        .map(|l| l.split_whitespace().next().unwrap_or(""))
                        .unwrap_or("");
                    let v = num(1)?;
                    match label {
                        "db_version" if v != u64::from(FORMAT_VERSION) => {
                            return Err(bad(&format!("db_version {v} is not {FORMAT_VERSION}")));
                        }
                        "tokenizer_version" if v != u64::from(TOKENIZER_VERSION) => {
                            return Err(bad(&format!(
                                "tokenizer_version {v} is not {TOKENIZER_VERSION}"
                            )));
                        }
                        "num_spam" => s.nspam = v,
                        "num_nonspam" => s.nham = v,
                        "last_expire" => s.last_expire = v,
                        "last_expire_reduction" => s.last_expire_reduction = v,
                        "last_expire_delta" => s.last_expire_delta = v,
                        _ => {}
                    }
                }
                Some("t") => {
                    let h = f
                        .get(4)
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .ok_or_else(|| bad("bad token"))?;
                    let c = TokenCounts {
                        spam: u32::try_from(num(1)?).map_err(|_| bad("count too large"))?,
                        ham: u32::try_from(num(2)?).map_err(|_| bad("count too large"))?,
                        atime: u32::try_from(num(3)?).map_err(|_| bad("atime too large"))?,
                    };
                    s.tokens.insert(h, c);
                }
                Some("s") => {
                    let class = match f.get(1).copied() {
                        Some("s") => Class::Spam,
                        Some("h") => Class::Ham,
                        _ => return Err(bad("bad class")),
                    };
                    let id = f
                        .get(2)
                        .and_then(|h| u128::from_str_radix(h, 16).ok())
                        .ok_or_else(|| bad("bad message id"))?;
                    s.seen.insert(id, class);
                }
                Some("") | None => {}
                Some(_) => return Err(bad("unknown line type")),
            }
        }
        Ok(s)
    }
}
