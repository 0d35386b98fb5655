//! Reading a configuration file: TOML syntax first, then each section on its own, so that
//! problems in several sections are all reported; then the build step.

use super::build::Config;
use super::check::ConfigError;
use super::raw::RawConfig;
use std::path::Path;

impl Config {
    /// Read and validate a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read(path)?;
        Self::parse(&text).map_err(|e| in_file(path, e.problems))
    }

    /// Parse and validate TOML text. Each section is read on its own so that problems in
    /// several sections are all reported.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let (raw, mut problems) = read_sections(text)?;
        match Self::from_raw(raw) {
            Ok(c) if problems.is_empty() => Ok(c),
            Ok(_) => Err(ConfigError { problems }),
            Err(e) => {
                problems.extend(e.problems);
                Err(ConfigError { problems })
            }
        }
    }
}

/// Read a TOML file into plain data only, for tools that need a part of it (`filterq`
/// needs the quarantine directory and the next hop, not the models).
pub fn load_raw(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = read(path)?;
    match read_sections(&text) {
        Ok((raw, problems)) if problems.is_empty() => Ok(raw),
        Ok((_, problems)) | Err(ConfigError { problems }) => Err(in_file(path, problems)),
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![format!("{}: cannot read: {e}", path.display())],
    })
}

/// The problems, each prefixed with the file's path.
fn in_file(path: &Path, problems: Vec<String>) -> ConfigError {
    ConfigError {
        problems: problems
            .into_iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect(),
    }
}

/// The plain data of a TOML text, section by section, with the problems of each section.
fn read_sections(text: &str) -> Result<(RawConfig, Vec<String>), ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
        problems: vec![format!("TOML syntax: {}", e.to_string().trim())],
    })?;
    let mut problems = vec![];
    let mut raw = RawConfig::default();
    for (key, value) in table {
        let text = value.clone();
        macro_rules! section {
            ($field:ident) => {
                match text.try_into() {
                    Ok(v) => raw.$field = v,
                    Err(e) => problems.push(format!("[{key}]: {}", e.to_string().trim())),
                }
            };
        }
        match key.as_str() {
                "server" => section!(server),
                "next_hop" => section!(next_hop),
                "scan" => section!(scan),
                "levels" => section!(levels),
                "scores" => section!(scores),
                "log" => section!(log),
                "metrics" => section!(metrics),
                "bayes" => section!(bayes),
                "model" => section!(model),
                "auth" => section!(auth),
                "origin" => section!(origin),
                "dkim" => section!(dkim),
                "actions" => section!(actions),
                "lists" => section!(lists),
                "ratelimit" => section!(ratelimit),
                "quarantine" => section!(quarantine),
                "policy" => section!(policy),
                "local_domains" => section!(local_domains),
                "policy_service" => section!(policy_service),
                "content" => section!(content),
                "clamd" => section!(clamd),
                "rules" => section!(rules),
                "dnsbl" => section!(dnsbl),
                "shared" => section!(shared),
                _ => problems.push(format!(
                    "unknown section or key `{key}` (known: server, next_hop, scan, levels, scores, log, metrics, bayes, model, auth, origin, dkim, actions, lists, ratelimit, quarantine, policy, local_domains, policy_service, content, clamd, rules, dnsbl, shared)"
                )),
            }
    }
    Ok((raw, problems))
}
