//! Fitting the default scores (issue 15's calibration), in the spirit of SpamAssassin's score
//! optimiser. Every message of a fold's train part is scanned through filterd's pipeline
//! with a Bayes store and a model that never saw it (nested cross-validation inside the
//! train part); a logistic regression without intercept is fitted on the hits of those
//! scans (each hit's value: 1, or its scale for the scaled ones such as `ML_SCORE`); its
//! weights, scaled so that the ham of the train part score at or above `tag2_level` no more
//! often than a given share, are the scores. The fit is deterministic: the same corpus gives
//! the same scores on every run.

use std::collections::BTreeMap;

/// Fewest messages of the train part a hit must fire on to get a fitted score.
pub const MIN_SUPPORT: usize = 5;

/// One scanned message: its label and its hits, each with its value (1, or the factor of
/// a scaled hit) and what it scored with the scores it was scanned with.
#[derive(Debug, Clone)]
pub struct Row {
    pub spam: bool,
    pub hits: Vec<(&'static str, f64, f64)>,
}

/// The fitted scores, and what the fit found.
#[derive(Debug)]
pub struct Fitted {
    /// Score per fitted hit.
    pub scores: BTreeMap<&'static str, f64>,
    /// The log-odds at which `tag2_level` was put.
    pub threshold: f64,
    /// Score points per unit of log-odds.
    pub scale: f64,
    /// With the anchor: the factor every default score was multiplied by.
    pub defaults_times: f64,
}

impl Fitted {
    /// A row's score: fitted hits by their fitted score, the others as they were scored.
    /// (With the anchor every hit seen in the fit has a score here.)
    pub fn score(&self, row: &Row) -> f64 {
        row.hits
            .iter()
            .map(|(h, v, scored)| self.scores.get(h).map_or(*scored, |s| s * v))
            .sum()
    }
}

/// The scale of the anchor feature: the default score over this, so its weight is of the
/// same order as the hits'.
const ANCHOR_UNIT: f64 = 10.0;
/// The anchor's penalty: next to none, it carries the defaults' ordering.
const ANCHOR_L2: f64 = 1e-3;

/// How to fit.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// L2 penalty of the hits' weights.
    pub l2: f64,
    /// The level spam starts at.
    pub tag2: f64,
    /// Share of the rows' ham allowed at or above `tag2`.
    pub train_fp: f64,
    /// Put `tag2` at this log-odds instead (a calibrated probability, not the top ham).
    pub at_log_odds: Option<f64>,
    /// Fit around the default scores: their sum is one more feature (hardly penalised), so
    /// the fitted weights are corrections of a scaled default, shrunk towards 0 by `l2`.
    pub anchor: bool,
}

/// Fit scores on `rows`. Hits in `fixed` keep their scores and are left out of the fit
/// (GTUBE, lists, virus).
pub fn fit(rows: &[Row], s: Settings, fixed: &dyn Fn(&str) -> bool) -> Fitted {
    let mut support: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Each hit's score at factor 1 with the scores the rows were scanned with.
    let mut base: BTreeMap<&'static str, f64> = BTreeMap::new();
    for r in rows {
        for (h, v, scored) in &r.hits {
            *support.entry(h).or_default() += 1;
            if *v != 0.0 {
                base.insert(h, scored / v);
            }
        }
    }
    let names: Vec<&'static str> = support
        .into_iter()
        .filter(|(h, n)| *n >= MIN_SUPPORT && !fixed(h))
        .map(|(h, _)| h)
        .collect();
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    let anchor = names.len();
    let x: Vec<Vec<(usize, f64)>> = rows
        .iter()
        .map(|r| {
            let mut xi: Vec<(usize, f64)> = r
                .hits
                .iter()
                .filter_map(|(h, v, _)| index.get(h).map(|&i| (i, *v)))
                .collect();
            if s.anchor {
                let total: f64 = r.hits.iter().map(|h| h.2).sum();
                xi.push((anchor, total / ANCHOR_UNIT));
            }
            xi
        })
        .collect();
    let mut penalty = vec![s.l2; names.len()];
    if s.anchor {
        penalty.push(ANCHOR_L2);
    }
    let w = newton(&x, rows, &penalty);
    let z = |xi: &[(usize, f64)]| xi.iter().map(|(i, v)| w[*i] * v).sum::<f64>();
    let mut ham: Vec<f64> = x
        .iter()
        .zip(rows)
        .filter(|(_, r)| !r.spam)
        .map(|(xi, _)| z(xi))
        .collect();
    ham.sort_by(|a, b| b.total_cmp(a));
    let allowed = (s.train_fp * ham.len() as f64).floor() as usize;
    // Just above the highest ham score that must stay below tag2 (and never below 1 log-odd:
    // a scale for a threshold near 0 would blow the scores up).
    let threshold = s
        .at_log_odds
        .unwrap_or_else(|| ham.get(allowed).map_or(1.0, |h| h + 1e-3))
        .max(1.0);
    let scale = s.tag2 / threshold;
    // With the anchor, every hit's default is scaled by its weight, the fitted ones corrected.
    let k = if s.anchor {
        scale * w[anchor] / ANCHOR_UNIT
    } else {
        0.0
    };
    let mut scores: BTreeMap<&'static str, f64> = BTreeMap::new();
    if s.anchor {
        for (h, b) in &base {
            if !fixed(h) {
                scores.insert(h, b * k);
            }
        }
    }
    for (h, wi) in names.iter().zip(&w) {
        *scores.entry(h).or_default() += wi * scale;
    }
    for v in scores.values_mut() {
        *v = (*v * 1000.0).round() / 1000.0;
    }
    Fitted {
        scores,
        threshold,
        scale,
        defaults_times: k,
    }
}

/// Minimise the L2-penalised log-loss by Newton's method (a few dozen features, so the
/// dense Hessian is small); `penalty` per feature.
fn newton(x: &[Vec<(usize, f64)>], rows: &[Row], penalty: &[f64]) -> Vec<f64> {
    let dim = penalty.len();
    let mut w = vec![0.0; dim];
    for _ in 0..50 {
        let mut grad: Vec<f64> = w.iter().zip(penalty).map(|(wi, l)| l * wi).collect();
        let mut hess = vec![vec![0.0; dim]; dim];
        for (i, h) in hess.iter_mut().enumerate() {
            h[i] = penalty[i];
        }
        for (xi, r) in x.iter().zip(rows) {
            let z: f64 = xi.iter().map(|(i, v)| w[*i] * v).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let err = p - if r.spam { 1.0 } else { 0.0 };
            let curv = (p * (1.0 - p)).max(1e-12);
            for &(i, vi) in xi {
                grad[i] += err * vi;
                for &(j, vj) in xi {
                    hess[i][j] += curv * vi * vj;
                }
            }
        }
        let Some(step) = solve(hess, grad) else {
            break;
        };
        let size: f64 = step.iter().map(|s| s.abs()).fold(0.0, f64::max);
        for (wi, s) in w.iter_mut().zip(&step) {
            *wi -= s;
        }
        if size < 1e-9 {
            break;
        }
    }
    w
}

/// Solve `a x = b` for a symmetric positive definite `a` (Cholesky).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for j in 0..n {
        let d = a[j][j] - (0..j).map(|k| a[j][k] * a[j][k]).sum::<f64>();
        if d <= 0.0 {
            return None;
        }
        a[j][j] = d.sqrt();
        for i in j + 1..n {
            let s = a[i][j] - (0..j).map(|k| a[i][k] * a[j][k]).sum::<f64>();
            a[i][j] = s / a[j][j];
        }
    }
    for i in 0..n {
        b[i] = (b[i] - (0..i).map(|k| a[i][k] * b[k]).sum::<f64>()) / a[i][i];
    }
    for i in (0..n).rev() {
        b[i] = (b[i] - (i + 1..n).map(|k| a[k][i] * b[k]).sum::<f64>()) / a[i][i];
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves() {
        let a = vec![vec![4.0, 2.0], vec![2.0, 3.0]];
        let x = solve(a, vec![2.0, 1.0]).expect("spd");
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
    }

    #[test]
    fn anchored_fit_scales_the_defaults() {
        // The defaults already separate: spam hits GOOD (scored 8), ham hits nothing.
        let rows: Vec<Row> = (0..100)
            .map(|i| {
                let spam = i % 2 == 0;
                let hits = if spam && i % 10 != 0 {
                    vec![("GOOD", 1.0, 8.0)]
                } else {
                    vec![]
                };
                Row { spam, hits }
            })
            .collect();
        let s = Settings {
            l2: 100.0,
            tag2: 6.2,
            train_fp: 0.0,
            at_log_odds: Some(2.0),
            anchor: true,
        };
        let f = fit(&rows, s, &|_| false);
        assert!(f.defaults_times > 0.0, "{f:?}");
        assert!(f.scores["GOOD"] > 6.2, "{f:?}");
    }

    #[test]
    fn a_telling_hit_gets_a_high_score_and_a_neutral_one_none() {
        let mut rows = vec![];
        for i in 0..200 {
            let spam = i % 2 == 0;
            let mut hits = vec![("EVERY", 1.0, 0.0)];
            if spam && i % 10 != 0 {
                hits.push(("SPAMMY", 1.0, 0.0));
            }
            if !spam && i % 20 == 1 {
                hits.push(("SPAMMY", 1.0, 0.0));
            }
            rows.push(Row { spam, hits });
        }
        let s = Settings {
            l2: 1.0,
            tag2: 6.2,
            train_fp: 0.0,
            at_log_odds: None,
            anchor: false,
        };
        let f = fit(&rows, s, &|_| false);
        assert!(f.scores["SPAMMY"] > 3.0, "{f:?}");
        assert!(f.scores["SPAMMY"] > f.scores["EVERY"] + 3.0, "{f:?}");
    }
}
