//! The Bayes classifier: per-token probabilities from the store's counts, smoothed toward
//! neutral (Robinson's f(w)), the strongest tokens combined with Fisher's inverse chi-square,
//! as bogofilter and SpamAssassin do. A textbook naive Bayes over every token is wildly
//! over-confident on mail (see `../shared/reference/classifiers.md`); this is what works.
//!
//! The per-token class-conditional probability is Bernoulli naive Bayes' own,
//! P(w|c) = (n_c(w) + a) / (N_c + 2a): presence counts per class over messages per class.
//! A test checks it equals linfa-bayes' `BernoulliNb` on the same data.

use crate::message::tokenize::Tokens;
use crate::model::bayes_store::{Store, TokenCounts};

/// Tuning of the classifier. The defaults (SpamAssassin's minimum strength 0.346, a light
/// prior s = 0.1) were chosen on tuning folds 1-3 of the corpus split
/// (`corpus-tools evaluate --fold N`), never on the reported fold 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BayesParams {
    /// Robinson's strength of the prior (s).
    pub strength: f64,
    /// Robinson's prior for an unknown token (x).
    pub neutral: f64,
    /// Laplace smoothing of P(w|c) (a).
    pub alpha: f64,
    /// Tokens with |f(w) - 0.5| below this are ignored.
    pub min_strength: f64,
    /// At most this many of the strongest tokens are combined.
    pub max_tokens: usize,
    /// Bayes does not vote until this many spam were learned.
    pub min_spam: u64,
    /// ... and this many ham.
    pub min_ham: u64,
}

impl Default for BayesParams {
    fn default() -> Self {
        BayesParams {
            strength: 0.1,
            neutral: 0.5,
            alpha: 0.0,
            min_strength: 0.346,
            max_tokens: 150,
            min_spam: 200,
            min_ham: 200,
        }
    }
}

/// The verdict of the classifier on one message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BayesScore {
    /// Spam probability in [0, 1].
    pub prob: f64,
    /// Tokens that took part.
    pub used: usize,
}

/// P(w|spam) and P(w|ham) under Bernoulli naive Bayes with Laplace smoothing `alpha`.
pub(crate) fn class_probs(c: TokenCounts, nspam: u64, nham: u64, alpha: f64) -> (f64, f64) {
    let ps = (f64::from(c.spam) + alpha) / (nspam as f64 + 2.0 * alpha).max(1.0);
    let ph = (f64::from(c.ham) + alpha) / (nham as f64 + 2.0 * alpha).max(1.0);
    (ps, ph)
}

/// Robinson's f(w) for one token.
pub fn token_prob(c: TokenCounts, nspam: u64, nham: u64, p: &BayesParams) -> f64 {
    let (ps, ph) = class_probs(c, nspam, nham, p.alpha);
    let n = f64::from(c.spam) + f64::from(c.ham);
    let pw = if ps + ph > 0.0 {
        ps / (ps + ph)
    } else {
        p.neutral
    };
    let f = (p.strength * p.neutral + n * pw) / (p.strength + n);
    f.clamp(1e-6, 1.0 - 1e-6)
}

/// True when enough of both classes were learned for Bayes to vote.
pub fn ready(store: &Store, p: &BayesParams) -> bool {
    store.nspam >= p.min_spam && store.nham >= p.min_ham
}

/// Classify a token set; `None` until enough of both classes were learned.
pub fn classify(store: &Store, tokens: &Tokens, p: &BayesParams) -> Option<BayesScore> {
    if !ready(store, p) {
        return None;
    }
    Some(classify_unchecked(store, tokens, p))
}

/// Classify without the minimum-learned check (evaluation of small stores).
pub(crate) fn classify_unchecked(store: &Store, tokens: &Tokens, p: &BayesParams) -> BayesScore {
    let mut probs: Vec<f64> = tokens
        .0
        .iter()
        .filter_map(|t| store.get(*t))
        .map(|c| token_prob(c, store.nspam, store.nham, p))
        .filter(|f| (f - 0.5).abs() >= p.min_strength)
        .collect();
    if probs.len() > p.max_tokens {
        probs.sort_unstable_by(|a, b| (b - 0.5).abs().total_cmp(&(a - 0.5).abs()));
        probs.truncate(p.max_tokens);
    }
    if probs.is_empty() {
        return BayesScore { prob: 0.5, used: 0 };
    }
    let n = probs.len();
    let ln_spam: f64 = probs.iter().map(|f| f.ln()).sum();
    let ln_ham: f64 = probs.iter().map(|f| (1.0 - f).ln()).sum();
    // H: how unlikely the spam-ward evidence is under randomness; S likewise for ham-ward.
    let h = chi2q(-2.0 * ln_spam, 2 * n);
    let s = chi2q(-2.0 * ln_ham, 2 * n);
    BayesScore {
        prob: ((1.0 + h - s) / 2.0).clamp(0.0, 1.0),
        used: n,
    }
}

/// The chi-square survival function for an even number of degrees of freedom, summed in log
/// space so large arguments neither overflow nor lose the small terms.
fn chi2q(x2: f64, v: usize) -> f64 {
    let m = x2 / 2.0;
    // sum_{i < v/2} m^i / i!  times e^-m, in log space.
    let mut ln_term = 0.0f64;
    let mut ln_sum = 0.0f64;
    for i in 1..v / 2 {
        ln_term += m.ln() - (i as f64).ln();
        ln_sum = log_add(ln_sum, ln_term);
    }
    (ln_sum - m).min(0.0).exp()
}

fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// SpamAssassin's Bayes hit for a probability (`BAYES_999` comes on top of `BAYES_99`).
pub(crate) fn hits_for(prob: f64) -> &'static [&'static str] {
    match prob {
        p if p >= 0.999 => &["BAYES_99", "BAYES_999"],
        p if p >= 0.99 => &["BAYES_99"],
        p if p >= 0.95 => &["BAYES_95"],
        p if p >= 0.80 => &["BAYES_80"],
        p if p >= 0.60 => &["BAYES_60"],
        p if p >= 0.40 => &["BAYES_50"],
        p if p >= 0.20 => &["BAYES_40"],
        p if p >= 0.05 => &["BAYES_20"],
        p if p >= 0.01 => &["BAYES_05"],
        _ => &["BAYES_00"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bayes_store::Class;

    #[test]
    fn token_probabilities_are_linfa_bernoulli_nb() {
        use linfa::prelude::*;
        use linfa_bayes::{BernoulliNb, NaiveBayes};
        // Six messages over four tokens (presence), three spam (1) and three ham (0).
        let x = ndarray::array![
            [1., 1., 0., 0.],
            [1., 0., 1., 0.],
            [1., 1., 1., 0.],
            [0., 0., 1., 1.],
            [0., 1., 0., 1.],
            [0., 0., 0., 1.]
        ];
        let y = ndarray::array![1usize, 1, 1, 0, 0, 0];
        let model = BernoulliNb::params()
            .alpha(1.0)
            .fit(&DatasetView::new(x.view(), y.view()))
            .unwrap();
        // Bernoulli NB's log-likelihood of one-hot row i minus that of the empty row is
        // ln p_i - ln(1 - p_i): recover p_i = P(token i | class) from linfa.
        let empty = ndarray::Array2::<f64>::zeros((1, 4));
        let base = model.joint_log_likelihood(empty.view());
        let mut store = Store::default();
        for (row, label) in x.rows().into_iter().zip(y.iter()) {
            let tokens: Vec<u64> = row
                .iter()
                .enumerate()
                .filter(|(_, v)| **v > 0.0)
                .map(|(i, _)| i as u64)
                .collect();
            let class = if *label == 1 { Class::Spam } else { Class::Ham };
            let id = tokens.iter().fold(u128::from(*label as u8) << 64, |a, t| {
                a * 31 + u128::from(*t) + 1
            });
            store.learn(id, &Tokens(tokens), class, 0);
        }
        for i in 0..4 {
            let mut one = ndarray::Array2::<f64>::zeros((1, 4));
            one[[0, i]] = 1.0;
            let jll = model.joint_log_likelihood(one.view());
            let linfa_p = |label: usize| {
                let d = jll[&label][0] - base[&label][0];
                1.0 / (1.0 + (-d).exp())
            };
            let c = store.get(i as u64).unwrap_or_default();
            let (ps, ph) = class_probs(c, store.nspam, store.nham, 1.0);
            assert!(
                (ps - linfa_p(1)).abs() < 1e-12,
                "token {i}: spam {ps} vs linfa {}",
                linfa_p(1)
            );
            assert!(
                (ph - linfa_p(0)).abs() < 1e-12,
                "token {i}: ham {ph} vs linfa {}",
                linfa_p(0)
            );
        }
    }

    #[test]
    fn chi2q_matches_known_values() {
        // Q(x2 = 2, v = 2) = e^-1.
        assert!((chi2q(2.0, 2) - (-1.0f64).exp()).abs() < 1e-12);
        // Q(x2 = 4, v = 4) = e^-2 (1 + 2).
        assert!((chi2q(4.0, 4) - 3.0 * (-2.0f64).exp()).abs() < 1e-12);
        // Far tail and many degrees of freedom: finite, in [0, 1].
        assert_eq!(chi2q(4000.0, 10), 0.0);
        assert!((chi2q(300.0, 300) - 0.5).abs() < 0.05);
    }

    #[test]
    fn separates_learned_classes_and_waits_for_enough_data() {
        let mut s = Store::default();
        let p = BayesParams {
            min_spam: 3,
            min_ham: 3,
            ..BayesParams::default()
        };
        let spam = Tokens(vec![1, 2, 3, 100]);
        let ham = Tokens(vec![4, 5, 6, 100]);
        for i in 0..3u128 {
            s.learn(i, &spam, Class::Spam, 0);
            assert!(classify(&s, &spam, &p).is_none());
        }
        for i in 10..13u128 {
            s.learn(i, &ham, Class::Ham, 0);
        }
        let sp = classify(&s, &Tokens(vec![1, 2, 3, 100, 999]), &p).unwrap();
        let hm = classify(&s, &Tokens(vec![4, 5, 6, 100]), &p).unwrap();
        assert!(sp.prob > 0.99 && hm.prob < 0.01, "{sp:?} {hm:?}");
        let unknown = classify(&s, &Tokens(vec![999]), &p).unwrap();
        assert_eq!((unknown.prob, unknown.used), (0.5, 0));
        assert_eq!(hits_for(0.9995), &["BAYES_99", "BAYES_999"]);
        assert_eq!(hits_for(0.5), &["BAYES_50"]);
        assert_eq!(hits_for(0.0), &["BAYES_00"]);
    }
}
