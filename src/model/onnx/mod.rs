//! The ONNX model check's model: the featuriser (the same Rust function at training and at
//! scoring), the writer of the standard `.onnx` file (through tract's protobuf types), and the
//! loader that validates a model against its manifest before filterd accepts any mail.
//!
//! # Contract (featuriser version 2; also in `models/README.md`)
//!
//! - Input `indices`: int64, shape `[N]` (N symbolic, 1 to `MAX_FEATURES`): the sorted,
//!   distinct hashed feature ids in `[0, DIM)` of the message.
//! - Input `values`: float32, shape `[N]`: `1/sqrt(N)` for each (binary features,
//!   L2-normalised). A message without features is passed as the single pair (0, 0.0).
//! - Output `probability`: float32, shape `[1]`: the spam probability.
//! - Features: lower-cased byte 4-grams of the first 3000 bytes of the message (salt `c4:`) and
//!   the shared Bayes tokens (salt `tk:`), FNV-1a 64 hashed, modulo `DIM` = 2^18.
//!
//! The shipped graph is logistic regression written as Gather -> Mul -> ReduceSum -> Add ->
//! Sigmoid, so any ONNX runtime runs it and any model honouring the contract can replace it.

mod write;

pub use write::write_onnx;

use crate::message::tokenize::Tokens;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bumped whenever the features of a message or their encoding change (2: inputs of the
/// message's own length instead of padded to `MAX_FEATURES`; 3: 4-grams over LF line ends,
/// so mail received with CRLF gets the grams the model learned from corpus files).
pub const FEATURISER_VERSION: u32 = 3;
/// Hashed feature space.
pub const DIM: usize = 1 << 18;
/// Most features passed for one message (beyond it, the highest ids are dropped).
pub(crate) const MAX_FEATURES: usize = 8192;
/// How much of the raw message the byte 4-grams cover.
pub(crate) const NGRAM_BYTES: usize = 3000;
/// Input and output names.
pub(crate) const INPUT_INDICES: &str = "indices";
/// Input and output names.
pub(crate) const INPUT_VALUES: &str = "values";
/// Input and output names.
pub(crate) const OUTPUT: &str = "probability";

/// The model's input for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Featurised {
    /// Sorted, distinct feature ids (not padded).
    pub ids: Vec<u32>,
}

impl Featurised {
    /// The value of each present feature.
    pub fn value(&self) -> f32 {
        if self.ids.is_empty() {
            0.0
        } else {
            1.0 / (self.ids.len() as f32).sqrt()
        }
    }

    /// The `indices` and `values` inputs (at least one pair).
    pub fn inputs(&self) -> (Vec<i64>, Vec<f32>) {
        if self.ids.is_empty() {
            return (vec![0], vec![0.0]);
        }
        let v = self.value();
        (
            self.ids.iter().map(|&i| i64::from(i)).collect(),
            vec![v; self.ids.len()],
        )
    }
}

/// FNV-1a states after the salts of the two feature kinds.
const NGRAM_SALT: u64 = crate::fnv::fnv1a_from(crate::fnv::BASIS, b"c4:");
const TOKEN_SALT: u64 = crate::fnv::fnv1a_from(crate::fnv::BASIS, b"tk:");

thread_local! {
    /// A bitmap over the feature space, all zero between uses (each use clears the words it
    /// set), so featurising neither allocates nor zeroes 32 KB per message.
    static BITS: std::cell::RefCell<Vec<u64>> = std::cell::RefCell::new(vec![0; DIM / 64]);
}

/// Features of a message: its byte 4-grams (lower case, line ends as LF: mail arrives over
/// SMTP with CRLF, corpora are stored with LF, and the model must see the same grams in
/// both) and its Bayes tokens.
pub fn featurise(raw: &[u8], tokens: &Tokens) -> Featurised {
    let head = &raw[..raw.len().min(NGRAM_BYTES)];
    let mut lower: Vec<u8> = Vec::with_capacity(head.len());
    for (i, &b) in head.iter().enumerate() {
        if b == b'\r' && head.get(i + 1) == Some(&b'\n') {
            continue;
        }
        lower.push(b.to_ascii_lowercase());
    }
    BITS.with(|bits| {
        let mut bits = bits.borrow_mut();
        // A bitmap over the feature space gives the sorted, distinct ids without sorting.
        let mut set = |id: u64| {
            let id = (id % DIM as u64) as usize;
            bits[id >> 6] |= 1u64 << (id & 63);
        };
        for w in lower.windows(4) {
            set(crate::fnv::fnv1a_from(NGRAM_SALT, w));
        }
        for t in &tokens.0 {
            set(crate::fnv::fnv1a_from(TOKEN_SALT, &t.to_le_bytes()));
        }
        let mut ids = Vec::with_capacity(lower.len() + tokens.0.len());
        for (i, word) in bits.iter_mut().enumerate() {
            // Read and clear: the bitmap is all zero again afterwards.
            let mut x = std::mem::take(word);
            while x != 0 && ids.len() < MAX_FEATURES {
                ids.push((i * 64) as u32 + x.trailing_zeros());
                x &= x - 1;
            }
        }
        Featurised { ids }
    })
}

/// The model's own score for a feature vector, without ONNX: what training optimises and
/// what the exported graph computes.
pub fn logistic(weights: &[f32], bias: f32, f: &Featurised) -> f32 {
    let v = f.value();
    let z: f32 = f.ids.iter().map(|&i| weights[i as usize] * v).sum::<f32>() + bias;
    1.0 / (1.0 + (-z).exp())
}

/// What `models/<name>/manifest.toml` says about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format (1).
    pub format_version: u32,
    /// The featuriser the model was trained with.
    pub featuriser_version: u32,
    /// sha256 of `model.onnx`, lower-case hex.
    pub sha256: String,
    /// The input contract.
    pub inputs: Vec<TensorSpec>,
    /// The output contract.
    pub outputs: Vec<TensorSpec>,
    /// Hashed feature space.
    pub dim: usize,
    /// How it was made.
    pub training: Training,
    /// How well it did on the evaluation split.
    pub metrics: Metrics,
}

/// Name, type and shape of one input or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// `int64` or `float32`.
    pub dtype: String,
    /// Shape; `N` is the symbolic number of features.
    pub shape: Vec<String>,
}

/// Provenance of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// The command that rebuilds it.
    pub command: String,
    /// The data it learned from.
    pub data: String,
    /// Training settings.
    pub settings: String,
}

/// Figures on the evaluation split (fold 0 test part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Test ham.
    pub test_ham: usize,
    /// Test spam.
    pub test_spam: usize,
    /// 100 x (1 - AUC).
    pub one_minus_roca_pct: f64,
    /// Spam recall (%) at <= 0.1% FP.
    pub recall_at_0_1_fp_pct: f64,
}

impl Manifest {
    /// The contract this build expects (sha256, provenance and metrics left to the caller).
    pub fn expected_inputs() -> Vec<TensorSpec> {
        vec![
            TensorSpec {
                name: INPUT_INDICES.into(),
                dtype: "int64".into(),
                shape: vec!["N".into()],
            },
            TensorSpec {
                name: INPUT_VALUES.into(),
                dtype: "float32".into(),
                shape: vec!["N".into()],
            },
        ]
    }

    /// The output this build expects.
    pub fn expected_outputs() -> Vec<TensorSpec> {
        vec![TensorSpec {
            name: OUTPUT.into(),
            dtype: "float32".into(),
            shape: vec!["1".into()],
        }]
    }
}

/// Why a model was refused. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The manifest is not valid TOML for a manifest.
    #[error("{path}: bad manifest: {reason}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model file does not match the manifest's sha256.
    #[error("{path}: sha256 {found} does not match the manifest's {expected}")]
    Checksum {
        /// The model file.
        path: PathBuf,
        /// In the manifest.
        expected: String,
        /// Of the file.
        found: String,
    },
    /// The model does not honour the contract this filterd feeds.
    #[error("{path}: {reason}")]
    Contract {
        /// The model or manifest file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// tract could not load, optimise or run it.
    #[error("{path}: not a usable ONNX model: {reason}")]
    Onnx {
        /// The model file.
        path: PathBuf,
        /// tract's error chain.
        reason: String,
    },
}

/// A validated, optimised model ready to score.
pub struct OnnxModel {
    path: PathBuf,
    plan: Arc<tract_onnx::prelude::TypedRunnableModel>,
    /// Run states kept between inferences (one per concurrent scan), so a message does not
    /// pay for setting one up.
    states: std::sync::Mutex<Vec<tract_onnx::prelude::TypedSimpleState>>,
    /// The manifest it was validated against.
    pub manifest: Manifest,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Lower-case hex sha256 of some bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl OnnxModel {
    /// Load `model.onnx` and `manifest.toml` from `dir`, check the checksum, the versions and
    /// the input/output contract, optimise the graph, and run it once.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        use tract_onnx::prelude::*;
        let model_path = dir.join("model.onnx");
        let manifest = read_manifest(&dir.join("manifest.toml"))?;
        let bytes = read(&model_path)?;
        let found = sha256_hex(&bytes);
        if found != manifest.sha256 {
            return Err(ModelError::Checksum {
                path: model_path,
                expected: manifest.sha256.clone(),
                found,
            });
        }
        let onnx_err = |e: anyhow::Error| ModelError::Onnx {
            path: model_path.clone(),
            reason: format!("{e:#}"),
        };
        let model = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(onnx_err)?;
        check_graph(&model, &model_path)?;
        let typed = model.into_optimized().map_err(onnx_err)?;
        check_constants(&typed, &model_path)?;
        let plan = typed.into_runnable().map_err(onnx_err)?;
        let loaded = OnnxModel {
            path: model_path,
            plan,
            states: std::sync::Mutex::new(Vec::new()),
            manifest,
        };
        // One inference now, over the ends of the feature space, so a model that cannot run
        // (or knows fewer features than its manifest says) is refused at start, not at the
        // first message.
        loaded.predict(&Featurised {
            ids: vec![0, 1, 2, DIM as u32 - 1],
        })?;
        Ok(loaded)
    }

    /// The `model.onnx` it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The spam probability of one message; an error when the model cannot compute one (a
    /// runtime failure, or an output that is not a probability).
    pub fn predict(&self, f: &Featurised) -> Result<f32, ModelError> {
        use tract_onnx::prelude::*;
        let (idx, val) = f.inputs();
        let err = |e: anyhow::Error| ModelError::Onnx {
            path: self.path.clone(),
            reason: format!("{e:#}"),
        };
        let idx = Tensor::from_shape(&[idx.len()], &idx).map_err(err)?;
        let val = Tensor::from_shape(&[val.len()], &val).map_err(err)?;
        let pooled = self.states.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut state = match pooled {
            Some(s) => s,
            None => self.plan.spawn().map_err(err)?,
        };
        // tract panics on some bad graphs (an index past a weights table) instead of
        // returning an error: that is this model failing on this message, not a crash.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            state.run(tvec![idx.into_tvalue(), val.into_tvalue()])
        }));
        if matches!(run, Ok(Ok(_))) {
            // Only a state that finished a run cleanly is used again.
            self.states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(state);
        }
        let out = run
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("no message");
                Err(anyhow::anyhow!("inference panicked: {what}"))
            })
            .map_err(err)?;
        let p = out
            .first()
            .and_then(|t| t.try_as_plain_ram().ok())
            .and_then(|v| v.as_slice::<f32>().ok().and_then(|s| s.first().copied()))
            .ok_or_else(|| ModelError::Contract {
                path: self.path.clone(),
                reason: "no float output".into(),
            })?;
        // A NaN or out-of-range output (a poisoned weight) must not reach the score.
        if !(0.0..=1.0).contains(&p) {
            return Err(ModelError::Contract {
                path: self.path.clone(),
                reason: format!("output {p} is not a probability"),
            });
        }
        Ok(p)
    }
}

fn read(p: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(p).map_err(|source| ModelError::Io {
        path: p.to_path_buf(),
        source,
    })
}

/// The manifest, checked against the versions and the contract this filterd computes.
fn read_manifest(path: &Path) -> Result<Manifest, ModelError> {
    let text = String::from_utf8(read(path)?).map_err(|_| ModelError::Manifest {
        path: path.to_path_buf(),
        reason: "not UTF-8".into(),
    })?;
    let manifest: Manifest = toml::from_str(&text).map_err(|e| ModelError::Manifest {
        path: path.to_path_buf(),
        reason: e.to_string().trim().to_string(),
    })?;
    let contract = |reason: String| ModelError::Contract {
        path: path.to_path_buf(),
        reason,
    };
    if manifest.format_version != 1 {
        return Err(contract(format!(
            "manifest format_version {} is not 1",
            manifest.format_version
        )));
    }
    if manifest.featuriser_version != FEATURISER_VERSION {
        return Err(contract(format!(
            "trained with featuriser version {}, this filterd computes version {FEATURISER_VERSION}",
            manifest.featuriser_version
        )));
    }
    if manifest.inputs != Manifest::expected_inputs()
        || manifest.outputs != Manifest::expected_outputs()
        || manifest.dim != DIM
    {
        return Err(contract(format!(
            "input/output contract differs from this filterd's (inputs {INPUT_INDICES}: int64[N], {INPUT_VALUES}: float32[N]; output {OUTPUT}: float32[1]; dim {DIM})"
        )));
    }
    Ok(manifest)
}

/// Every float constant of the graph (weights, bias) is a number. A NaN weight does not
/// make the output NaN: tract's sigmoid clamps its input, and a NaN clamps to the low end, so
/// a poisoned table would score every message as a confident ham.
fn check_constants(model: &tract_onnx::prelude::TypedModel, path: &Path) -> Result<(), ModelError> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::konst::Const;
    for node in model.nodes() {
        let Some(k) = node.op_as::<Const>() else {
            continue;
        };
        let t = k.val();
        if t.datum_type() != DatumType::F32 {
            continue;
        }
        let Some(values) = t
            .try_as_plain_ram()
            .ok()
            .and_then(|v| v.as_slice::<f32>().ok())
        else {
            continue;
        };
        let bad = values.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            return Err(ModelError::Contract {
                path: path.to_path_buf(),
                reason: format!(
                    "{bad} of the {} values of constant `{}` are not finite numbers",
                    values.len(),
                    node.name
                ),
            });
        }
    }
    Ok(())
}

/// The graph itself must declare the contract, not just the manifest: inputs named
/// `indices` (int64) and `values` (float32), each of one symbolic dimension.
fn check_graph(model: &tract_onnx::prelude::InferenceModel, path: &Path) -> Result<(), ModelError> {
    use tract_onnx::prelude::*;
    let onnx_err = |e: anyhow::Error| ModelError::Onnx {
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    };
    let outlets = model.input_outlets().map_err(onnx_err)?.to_vec();
    let names: Vec<String> = outlets
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    if names != [INPUT_INDICES, INPUT_VALUES] {
        return Err(ModelError::Contract {
            path: path.to_path_buf(),
            reason: format!(
                "graph inputs are {names:?}, expected [\"{INPUT_INDICES}\", \"{INPUT_VALUES}\"]"
            ),
        });
    }
    for (i, dt) in [(0, DatumType::I64), (1, DatumType::F32)] {
        let fact = model.input_fact(i).map_err(onnx_err)?;
        // One dimension, left symbolic: the number of features of the message.
        let dims: Vec<String> = fact.shape.dims().map(|d| format!("{d:?}")).collect();
        let symbolic = fact.shape.as_concrete_finite().ok().flatten().is_none();
        if tract_onnx::tract_hir::infer::Factoid::concretize(&fact.datum_type) != Some(dt)
            || dims.len() != 1
            || !symbolic
        {
            return Err(ModelError::Contract {
                path: path.to_path_buf(),
                reason: format!("graph input {} is {fact:?}, expected {dt:?}[N]", names[i]),
            });
        }
    }
    Ok(())
}

/// Where the shipped default model is looked for when the config names none: next to the
/// repository the binary was built in (`target/<profile>/filterd` -> `models/`), the installed
/// location beside the binary (`/usr/bin/filterd` -> `/usr/share/filterd/models`, also for
/// `/usr/local`), the Debian package's, and last the source tree the binary was built from
/// (so an installed binary never prefers a build directory over its package's model).
pub(crate) fn default_model_dir() -> Option<PathBuf> {
    let name = "spam-lr";
    let mut candidates = vec![];
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            candidates.push(up.join("models").join(name));
        }
        if let Some(prefix) = exe.parent().and_then(Path::parent) {
            candidates.push(prefix.join("share/filterd/models").join(name));
        }
    }
    candidates.push(PathBuf::from("/usr/share/filterd/models").join(name));
    candidates.push(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(name),
    );
    candidates
        .into_iter()
        .find(|d| d.join("model.onnx").exists())
}
