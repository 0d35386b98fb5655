//! DKIM signing of outbound mail, and `filterd dkim-keygen`.
//!
//! Keys are PEM files, one per domain and selector: RSA (PKCS#1 `RSA PRIVATE KEY` or
//! PKCS#8 `PRIVATE KEY`) signing rsa-sha256, or Ed25519 (PKCS#8) signing ed25519-sha256
//! (RFC 8463). A message is signed with the key of its From domain, or of the nearest
//! parent domain we hold a key for (relaxed DMARC alignment), after every other header
//! change, so the signature covers exactly what leaves.

use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};

/// The two DKIM signing algorithms in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// rsa-sha256.
    Rsa,
    /// ed25519-sha256 (RFC 8463).
    Ed25519,
}

impl KeyAlgorithm {
    /// Parse `rsa` or `ed25519`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" | "rsa-sha256" => Some(KeyAlgorithm::Rsa),
            "ed25519" | "ed25519-sha256" => Some(KeyAlgorithm::Ed25519),
            _ => None,
        }
    }

    /// The `k=` tag of the DNS record.
    pub fn dns_name(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa => "rsa",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// One configured key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    /// The `d=` domain.
    pub domain: String,
    /// The `s=` selector.
    pub selector: String,
    /// What the key file must hold.
    pub algorithm: KeyAlgorithm,
    /// The PEM file.
    pub key_file: PathBuf,
}

struct LoadedKey {
    domain: String,
    signer: DkimSigner<DkimKey, Done>,
}

/// Every signing key, ready to sign.
pub struct Signer {
    keys: Vec<LoadedKey>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.domain, &k.signer.template.s)))
            .finish()
    }
}

impl Signer {
    /// Load every key; each problem (unreadable file, not a key, wrong algorithm) is one
    /// line naming the file.
    pub fn load(specs: &[KeySpec], headers: &[String]) -> Result<Self, Vec<String>> {
        let mut keys = vec![];
        let mut problems = vec![];
        for spec in specs {
            match load_key(&spec.key_file, spec.algorithm) {
                Ok(key) => keys.push(LoadedKey {
                    domain: spec.domain.to_ascii_lowercase(),
                    signer: DkimSigner::from_key(key)
                        .domain(spec.domain.to_ascii_lowercase())
                        .selector(spec.selector.clone())
                        .headers(headers.iter().cloned())
                        .header_canonicalization(Canonicalization::Relaxed)
                        .body_canonicalization(Canonicalization::Relaxed),
                }),
                Err(e) => problems.push(format!(
                    "dkim key {} (domain {}, selector {}): {e}",
                    spec.key_file.display(),
                    spec.domain,
                    spec.selector
                )),
            }
        }
        if problems.is_empty() {
            Ok(Signer { keys })
        } else {
            Err(problems)
        }
    }

    fn key_for(&self, domain: &str) -> Option<&LoadedKey> {
        self.keys
            .iter()
            .filter(|k| crate::domain::is_within(domain, &k.domain))
            .max_by_key(|k| k.domain.len())
    }

    /// The `DKIM-Signature:` header (CRLF-terminated) for the message made of `parts`,
    /// signed for `from_domain`; `None` when no key fits that domain.
    pub fn sign(&self, from_domain: &str, parts: &[&[u8]]) -> Option<Result<String, String>> {
        let key = self.key_for(from_domain)?;
        Some(
            key.signer
                .sign_chained(parts.iter().copied())
                .map(|s| s.to_header())
                .map_err(|e| format!("DKIM signing for {} failed: {e}", key.domain)),
        )
    }
}

/// Read a PEM key and check it is what the configuration says it is.
fn load_key(path: &Path, algorithm: KeyAlgorithm) -> Result<DkimKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let der =
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("not a PEM private key ({e})"))?;
    match (algorithm, der) {
        (KeyAlgorithm::Rsa, der @ (PrivateKeyDer::Pkcs1(_) | PrivateKeyDer::Pkcs8(_))) => {
            RsaKey::<Sha256>::from_key_der(der)
                .map(DkimKey::Rsa)
                .map_err(|e| format!("not an RSA private key ({e})"))
        }
        (KeyAlgorithm::Ed25519, PrivateKeyDer::Pkcs8(der)) => {
            Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der())
                .map(DkimKey::Ed25519)
                .map_err(|e| format!("not an Ed25519 private key ({e})"))
        }
        (KeyAlgorithm::Ed25519, _) => {
            Err("not an Ed25519 private key (expected PKCS#8 `PRIVATE KEY`)".into())
        }
        (KeyAlgorithm::Rsa, _) => Err("not an RSA private key (SEC1 EC key?)".into()),
    }
}

/// A new key pair: the private key as PEM and the public key as a DKIM TXT record.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The private key, PEM (PKCS#8 for Ed25519, PKCS#1 for RSA).
    pub private_pem: String,
    /// `p=` of the DNS record (base64).
    pub public_b64: String,
    /// The algorithm.
    pub algorithm: KeyAlgorithm,
}

impl GeneratedKey {
    /// Generate a key: RSA of `bits` bits, or Ed25519.
    pub fn generate(algorithm: KeyAlgorithm, bits: usize) -> Result<Self, String> {
        use mail_auth::dkim::generate::DkimKeyPair;
        use pem_rfc7468::LineEnding;
        let (label, pair) = match algorithm {
            KeyAlgorithm::Rsa => ("RSA PRIVATE KEY", DkimKeyPair::generate_rsa(bits)),
            KeyAlgorithm::Ed25519 => ("PRIVATE KEY", DkimKeyPair::generate_ed25519()),
        };
        let pair = pair.map_err(|e| format!("key generation failed: {e}"))?;
        let private_pem = pem_rfc7468::encode_string(label, LineEnding::LF, pair.private_key())
            .map_err(|e| format!("PEM encoding failed: {e}"))?;
        let public = match algorithm {
            // Publish SubjectPublicKeyInfo, as opendkim-genkey does and every verifier reads.
            KeyAlgorithm::Rsa => rsa_spki(pair.public_key()),
            KeyAlgorithm::Ed25519 => pair.public_key().to_vec(),
        };
        Ok(GeneratedKey {
            private_pem,
            public_b64: <base64ct::Base64 as base64ct::Encoding>::encode_string(&public),
            algorithm,
        })
    }

    /// The TXT record value, e.g. `v=DKIM1; k=rsa; p=MIIB...`.
    pub fn txt_value(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.dns_name(),
            self.public_b64
        )
    }

    /// The zone-file line to publish, with the value split into 255-byte strings.
    pub fn zone_line(&self, domain: &str, selector: &str) -> String {
        let value = self.txt_value();
        let chunks: Vec<String> = value
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        format!(
            "{selector}._domainkey.{domain}. IN TXT ( {} )",
            chunks.join("\n\t")
        )
    }
}

/// Wrap a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (rsaEncryption, NULL parameters).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    fn der_len(n: usize, out: &mut Vec<u8>) {
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .iter()
                .copied()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
    }
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x03];
    der_len(pkcs1.len() + 1, &mut bit_string);
    bit_string.push(0);
    bit_string.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(ALGORITHM.len() + bit_string.len(), &mut out);
    out.extend_from_slice(ALGORITHM);
    out.extend_from_slice(&bit_string);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn keys_are_checked_against_their_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let ed = GeneratedKey::generate(KeyAlgorithm::Ed25519, 0).unwrap();
        let ed_path = write(dir.path(), "ed.pem", &ed.private_pem);
        let junk = write(dir.path(), "junk.pem", "not a key\n");
        let specs = [
            KeySpec {
                domain: "example.com".into(),
                selector: "ed".into(),
                algorithm: KeyAlgorithm::Ed25519,
                key_file: ed_path.clone(),
            },
            KeySpec {
                domain: "example.com".into(),
                selector: "wrong".into(),
                algorithm: KeyAlgorithm::Rsa,
                key_file: ed_path,
            },
            KeySpec {
                domain: "example.com".into(),
                selector: "junk".into(),
                algorithm: KeyAlgorithm::Rsa,
                key_file: junk,
            },
            KeySpec {
                domain: "example.com".into(),
                selector: "gone".into(),
                algorithm: KeyAlgorithm::Rsa,
                key_file: dir.path().join("missing.pem"),
            },
        ];
        let problems = Signer::load(&specs, &["From".into()]).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("wrong") && problems[0].contains("not an RSA"));
        assert!(problems[1].contains("junk.pem") && problems[1].contains("PEM"));
        assert!(problems[2].contains("missing.pem") && problems[2].contains("cannot read"));
        let ok = Signer::load(&specs[..1], &["From".into()]).unwrap();
        assert!(ok.key_for("example.com").is_some());
        assert!(ok.key_for("Mail.Example.COM.").is_some());
        assert!(ok.key_for("badexample.com").is_none());
        assert!(ok.key_for("com").is_none());
        let sig = ok
            .sign(
                "news.example.com",
                &[b"From: a@news.example.com\r\n\r\nhi\r\n"],
            )
            .unwrap()
            .unwrap();
        assert!(sig.starts_with("DKIM-Signature:") && sig.contains("d=example.com"));
        assert!(sig.contains("a=ed25519-sha256"));
    }

    #[test]
    fn rsa_records_are_spki() {
        let k = GeneratedKey::generate(KeyAlgorithm::Rsa, 1024).unwrap();
        assert!(k.private_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        // SPKI of a 1024-bit key starts with these bytes in base64.
        assert!(
            k.public_b64
                .starts_with("MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ")
        );
        let line = k.zone_line("example.com", "s1");
        assert!(line.starts_with("s1._domainkey.example.com. IN TXT ( \"v=DKIM1; k=rsa; p="));
    }
}
