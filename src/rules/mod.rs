//! The rule engine: SpamAssassin-style rules in data files (`rules/*.cf`, compiled into
//! filterd, then site directories), compiled once into one `RegexSet` per kind (and per
//! header), so a message costs one pass per kind however many rules there are; `eval:`
//! tests for what patterns cannot see; meta rules combining rules and built-in hits.
//! See [`parse`] for the file format.
//!
//! Later files override earlier ones: a rule defined again replaces the first definition,
//! `score NAME 0` turns it off; `score` also sets a built-in hit's default score (the
//! config's `[scores]` still has the last word).

pub mod cli;
pub mod eval;
pub mod html;
pub mod live;
pub mod meta;
pub mod parse;
mod set;
mod shipped;
pub mod view;

pub use parse::{Origin, RuleError};
pub use set::{Fired, RuleSet};
pub use view::View;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where the rules come from (`[rules]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// Load the shipped set (compiled in).
    pub shipped: bool,
    /// Site directories, read after the shipped set, each file `*.cf` in name order.
    pub dirs: Vec<PathBuf>,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            shipped: true,
            dirs: vec![],
        }
    }
}

/// The text of every rule file of `sources`, in the order they apply, named for errors.
pub fn read_sources(sources: &Sources) -> Result<Vec<(String, String)>, Vec<RuleError>> {
    let mut files: Vec<(String, String)> = vec![];
    if sources.shipped {
        for (name, text) in shipped::FILES {
            files.push((format!("rules/{name}"), (*text).to_string()));
        }
    }
    let mut errors = vec![];
    for dir in &sources.dirs {
        match cf_files(dir) {
            Ok(paths) => {
                for p in paths {
                    match std::fs::read_to_string(&p) {
                        Ok(t) => files.push((p.display().to_string(), t)),
                        Err(e) => errors.push(io_error(&p, &e)),
                    }
                }
            }
            Err(e) => errors.push(io_error(dir, &e)),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// The `*.cf` files of `dir`, in name order.
fn cf_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cf") && p.is_file())
        .collect();
    v.sort();
    Ok(v)
}

fn io_error(p: &Path, e: &std::io::Error) -> RuleError {
    RuleError {
        at: Origin {
            file: p.display().to_string(),
            line: 0,
        },
        message: format!("cannot read: {e}"),
    }
}

/// Load and compile the rules of `sources`; `builtin` names the built-in hits (which meta
/// rules may read and `score` may set). Every problem is listed.
pub fn load(sources: &Sources, builtin: &[&'static str]) -> Result<RuleSet, Vec<RuleError>> {
    let files = read_sources(sources)?;
    RuleSet::compile(&files, builtin)
}

fn interned() -> &'static Mutex<HashSet<&'static str>> {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    NAMES.get_or_init(Mutex::default)
}

/// A rule name as the `&'static str` hits carry. Each distinct name is allocated once for
/// the life of the process (a reload reuses the names it already has).
pub fn intern(name: &str) -> &'static str {
    let mut set = interned().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = set.get(name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_string().into_boxed_str());
    set.insert(n);
    n
}

/// True when `name` is a rule's (not a built-in check's) hit.
pub fn is_rule_name(name: &str) -> bool {
    interned()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_rules_is_shipped() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let on_disk: Vec<String> = cf_files(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let shipped: Vec<String> = shipped::FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            on_disk, shipped,
            "src/rules/shipped.rs must list every rules/*.cf"
        );
    }

    #[test]
    fn the_shipped_set_compiles() {
        let builtin: Vec<&'static str> = crate::checks::Registry::default()
            .hit_defs()
            .map(|h| h.name)
            .collect();
        let set = load(&Sources::default(), &builtin).unwrap_or_else(|e| {
            panic!(
                "{}",
                e.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert!(set.len() >= 40, "{} rules", set.len());
    }
}
