//! Training the shipped ONNX model: logistic regression over filterd's own features,
//! learned with per-coordinate AdaGrad steps and L2 shrinkage, in a fixed, seeded order,
//! so the same corpus gives the same weights on every run.

use filterd::model::onnx::{DIM, Featurised, logistic};

/// Training settings (recorded in the manifest).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Passes over the training data.
    pub epochs: usize,
    /// AdaGrad base learning rate.
    pub rate: f32,
    /// L2 penalty per step.
    pub l2: f32,
    /// Seed of the shuffling.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            epochs: 10,
            rate: 1.0,
            l2: 1e-6,
            seed: 20261123,
        }
    }
}

impl std::fmt::Display for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "logistic regression, AdaGrad rate {} L2 {} epochs {} seed {}",
            self.rate, self.l2, self.epochs, self.seed
        )
    }
}

/// Learn weights and bias from (features, is spam) examples.
pub fn train(examples: &[(Featurised, bool)], s: Settings) -> (Vec<f32>, f32) {
    let mut w = vec![0f32; DIM];
    let mut g2 = vec![1e-6f32; DIM];
    let (mut b, mut gb2) = (0f32, 1e-6f32);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut x = s.seed | 1;
    for _ in 0..s.epochs {
        // Fisher-Yates with xorshift: deterministic across platforms.
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            let (f, spam) = &examples[i];
            let p = logistic(&w, b, f);
            let err = p - if *spam { 1.0 } else { 0.0 };
            let v = f.value();
            for &id in &f.ids {
                let k = id as usize;
                let g = err * v + s.l2 * w[k];
                g2[k] += g * g;
                w[k] -= s.rate * g / g2[k].sqrt();
            }
            gb2 += err * err;
            b -= s.rate * err / gb2.sqrt();
        }
    }
    (w, b)
}
