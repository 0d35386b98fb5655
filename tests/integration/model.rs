//! The shipped ONNX model: golden cases through featuriser + tract, refusal of damaged or
//! mismatched models, the check's hits end to end, and reproducible training.

use crate::util::sink::{Behaviour, Sink};
use crate::util::{Client, Filterd, repo};
use filterd::message::tokenize::Tokens;
use filterd::model::onnx::{Manifest, ModelError, OnnxModel, featurise, sha256_hex};
use prost::Message as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn shipped() -> PathBuf {
    repo().join("models/spam-lr")
}

/// A copy of the shipped model folder whose model bytes are replaced (manifest sha updated
/// when `fix_sha`).
fn altered(bytes: Vec<u8>, fix_sha: bool) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(shipped().join("manifest.toml")).unwrap()).unwrap();
    if fix_sha {
        manifest.sha256 = sha256_hex(&bytes);
    }
    std::fs::write(tmp.path().join("model.onnx"), bytes).unwrap();
    std::fs::write(
        tmp.path().join("manifest.toml"),
        toml::to_string(&manifest).unwrap(),
    )
    .unwrap();
    tmp
}

fn check_config(cfg: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_filterd"))
        .arg("--check-config")
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap()
}

#[test]
fn golden_cases_through_featuriser_and_tract() {
    let model = OnnxModel::load(&shipped()).expect("shipped model loads");
    let golden: toml::Table =
        toml::from_str(&std::fs::read_to_string(shipped().join("golden.toml")).unwrap()).unwrap();
    assert!(golden.len() >= 4, "golden cases missing");
    for (name, want) in &golden {
        let raw = std::fs::read(shipped().join("golden").join(name)).unwrap();
        let p = model
            .predict(&featurise(&raw, &Tokens::of_raw(&raw)))
            .unwrap();
        let want = want.as_float().unwrap() as f32;
        assert!((p - want).abs() < 1e-5, "{name}: {p} != golden {want}");
        // And the cases say what they are.
        assert_eq!(p > 0.5, name.starts_with("spam"), "{name}: {p}");
    }
}

#[test]
fn damaged_and_mismatched_models_are_refused_with_the_path() {
    let bytes = std::fs::read(shipped().join("model.onnx")).unwrap();

    // Not an ONNX file at all, with a matching checksum.
    let dir = altered(b"definitely not protobuf \x00\x01\x02".to_vec(), true);
    let e = OnnxModel::load(dir.path()).unwrap_err();
    assert!(matches!(e, ModelError::Onnx { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&dir.path().join("model.onnx").display().to_string()),
        "{e}"
    );

    // One byte changed: the checksum no longer matches.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x55;
    let e = OnnxModel::load(altered(flipped, false).path()).unwrap_err();
    assert!(matches!(e, ModelError::Checksum { .. }), "{e}");

    // A valid ONNX model with the wrong input shape.
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) = graph.input[0]
        .r#type
        .as_mut()
        .and_then(|t| t.value.as_mut())
    {
        t.shape.as_mut().unwrap().dim[0].value =
            Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(100));
    }
    let e = OnnxModel::load(altered(proto.encode_to_vec(), true).path()).unwrap_err();
    assert!(
        matches!(e, ModelError::Contract { .. }) && e.to_string().contains("indices"),
        "{e}"
    );

    // A manifest from another featuriser.
    let dir = altered(bytes.clone(), true);
    let m = std::fs::read_to_string(dir.path().join("manifest.toml"))
        .unwrap()
        .replace(
            &format!(
                "featuriser_version = {}",
                filterd::model::onnx::FEATURISER_VERSION
            ),
            "featuriser_version = 7",
        );
    std::fs::write(dir.path().join("manifest.toml"), m).unwrap();
    let e = OnnxModel::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("featuriser version 7"), "{e}");

    // filterd refuses to start on it, at --check-config already.
    let cfg = dir.path().join("f.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = \"{}\"\n[bayes]\nenabled = false\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let o = check_config(&cfg);
    assert_eq!(o.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&o.stderr).contains("featuriser version 7"));
    let missing = Path::new("/nonexistent/model");
    std::fs::write(&cfg, format!("[model]\npath = \"{}\"\n", missing.display())).unwrap();
    let o = check_config(&cfg);
    assert_eq!(o.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/model/manifest.toml"));
}

#[tokio::test(flavor = "multi_thread")]
async fn model_hits_appear_end_to_end() {
    let sink = Sink::start(Behaviour::default()).await;
    // The shipped model is found without any [model] configuration.
    let f = Filterd::start(sink.addr, "[actions]\nspam_destiny = \"pass\"\n");
    for name in ["spam-lottery.eml", "ham-list.eml"] {
        let raw = std::fs::read(shipped().join("golden").join(name)).unwrap();
        let (mut c, _) = Client::connect(f.addr()).await;
        let r = c
            .send_message("a@example.org", &["b@example.net"], &raw)
            .await;
        assert!(r.starts_with("250 "), "{r}");
    }
    let got = sink.received();
    let spam = String::from_utf8_lossy(&got[0].data);
    let ham = String::from_utf8_lossy(&got[1].data);
    assert!(spam.contains("ML_SPAM_HIGH=5.5"), "{spam}");
    assert!(ham.contains("ML_HAM_HIGH=-4"), "{ham}");
}

#[test]
fn training_reproduces_the_shipped_model() {
    let Some(corpus) = crate::util::corpus() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let mut cmd = crate::util::corpus_tools("train-model", &corpus);
    cmd.arg("--out").arg(out.path());
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rebuilt = std::fs::read(out.path().join("model.onnx")).unwrap();
    let shipped_bytes = std::fs::read(shipped().join("model.onnx")).unwrap();
    assert!(
        rebuilt == shipped_bytes,
        "retraining gave sha256 {}, shipped {}",
        sha256_hex(&rebuilt),
        sha256_hex(&shipped_bytes)
    );
    let a = std::fs::read_to_string(out.path().join("manifest.toml")).unwrap();
    let b = std::fs::read_to_string(shipped().join("manifest.toml")).unwrap();
    assert_eq!(a, b, "manifest (metrics) drifted");
}
