//! Spam-filter evaluation figures, as the TREC spam track reports them: FP% and FN% at a
//! threshold, 1-ROCA% (100 x (1 - area under the ROC curve)) and spam recall at a bounded
//! false-positive rate.

/// Scores of the ham and the spam of a test set (higher = spammier).
#[derive(Debug, Clone, Default)]
pub struct Scored {
    /// Ham scores.
    pub ham: Vec<f64>,
    /// Spam scores.
    pub spam: Vec<f64>,
}

impl Scored {
    /// 100 x (1 - AUC), ties counted half (Mann-Whitney).
    pub fn one_minus_roca_pct(&self) -> f64 {
        if self.ham.is_empty() || self.spam.is_empty() {
            return f64::NAN;
        }
        let mut ham = self.ham.clone();
        ham.sort_by(f64::total_cmp);
        let mut wins = 0.0;
        for s in &self.spam {
            let below = ham.partition_point(|h| h < s) as f64;
            let not_above = ham.partition_point(|h| h <= s) as f64;
            wins += below + (not_above - below) / 2.0;
        }
        100.0 * (1.0 - wins / (ham.len() as f64 * self.spam.len() as f64))
    }

    /// Share of spam (%) scored strictly above every ham but the allowed false positives:
    /// at most `fp_pct`% of ham may score at or above the threshold.
    pub fn recall_at_fp_pct(&self, fp_pct: f64) -> f64 {
        let mut ham = self.ham.clone();
        ham.sort_by(|a, b| b.total_cmp(a));
        let allowed = ((fp_pct / 100.0) * ham.len() as f64).floor() as usize;
        let Some(&threshold) = ham.get(allowed) else {
            return 100.0;
        };
        100.0 * self.spam.iter().filter(|s| **s > threshold).count() as f64
            / self.spam.len().max(1) as f64
    }

    /// (FP%, FN%) with spam meaning score >= `threshold`.
    pub fn fp_fn_pct(&self, threshold: f64) -> (f64, f64) {
        let fp = self.ham.iter().filter(|h| **h >= threshold).count() as f64;
        let fneg = self.spam.iter().filter(|s| **s < threshold).count() as f64;
        (
            100.0 * fp / self.ham.len().max(1) as f64,
            100.0 * fneg / self.spam.len().max(1) as f64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        let perfect = Scored {
            ham: vec![0.0, 0.1],
            spam: vec![0.9, 1.0],
        };
        assert_eq!(perfect.one_minus_roca_pct(), 0.0);
        assert_eq!(perfect.recall_at_fp_pct(0.1), 100.0);
        let tie = Scored {
            ham: vec![0.5],
            spam: vec![0.5],
        };
        assert_eq!(tie.one_minus_roca_pct(), 50.0);
        let one_bad = Scored {
            ham: vec![0.0, 0.0, 0.0, 0.95],
            spam: vec![0.9, 1.0],
        };
        assert_eq!(one_bad.one_minus_roca_pct(), 100.0 * (1.0 - 7.0 / 8.0));
        assert_eq!(one_bad.recall_at_fp_pct(0.1), 50.0);
        assert_eq!(one_bad.recall_at_fp_pct(25.0), 100.0);
        assert_eq!(one_bad.fp_fn_pct(0.92), (25.0, 50.0));
    }
}
