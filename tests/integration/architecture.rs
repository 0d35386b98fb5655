//! The house rules that a compiler does not check: no import cycle between modules. Every
//! `crate::`, `super::`, `self::` and child-module path in the library's non-test code is
//! resolved to the file (module) it names, re-exports followed to the file that defines the
//! item; a module using its own parent or child is containment, not a dependency. The test
//! fails on any cycle among the files and among the top-level modules, naming it.

use crate::util::repo;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One module (file) of the library: its path, its source without tests and comments, its
/// declared child modules, and what it re-exports from them.
struct Module {
    source: String,
    children: BTreeSet<String>,
    /// `pub use child::Name` -> child, and `pub use child::*` children.
    reexports: BTreeMap<String, String>,
    globs: Vec<String>,
}

fn module_path(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code: up to the first `#[cfg(test)]` (test modules sit at the end of a file), without
/// comments.
fn code_of(text: &str) -> String {
    let code = text.split("\n#[cfg(test)]").next().unwrap_or(text);
    code.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn load() -> BTreeMap<String, Module> {
    let src = repo().join("src");
    let mut files = vec![];
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("src").flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "bin") {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut modules = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let source = code_of(&std::fs::read_to_string(&f).expect("read"));
        let mut children = BTreeSet::new();
        let mut reexports = BTreeMap::new();
        let mut globs = vec![];
        for line in source.lines().map(str::trim) {
            let decl = line.strip_prefix("pub ").unwrap_or(line);
            let decl = decl.strip_prefix("pub(crate) ").unwrap_or(decl);
            if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                children.insert(name.trim().to_string());
            }
        }
        for line in source.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("pub use ") else {
                continue;
            };
            let rest = rest.trim_end_matches(';');
            let Some((child, items)) = rest.split_once("::") else {
                continue;
            };
            if !children.contains(child) {
                continue;
            }
            if items == "*" {
                globs.push(child.to_string());
            }
            for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
                let name = item.split(" as ").last().unwrap_or(item).trim();
                let name = name.rsplit("::").next().unwrap_or(name);
                if !name.is_empty() && name != "*" && name != "self" {
                    reexports.insert(name.to_string(), child.to_string());
                }
            }
        }
        modules.insert(
            module_path(rel),
            Module {
                source,
                children,
                reexports,
                globs,
            },
        );
    }
    modules
}

/// Every path a module's code names: `prefix::a::b` chains, `{...}` groups expanded.
fn paths_in(source: &str, prefixes: &[String]) -> Vec<Vec<String>> {
    let mut out = vec![];
    let bytes = source.as_bytes();
    for prefix in prefixes {
        let pat = format!("{prefix}::");
        let mut from = 0;
        while let Some(i) = source[from..].find(&pat) {
            let at = from + i;
            from = at + pat.len();
            let before = at.checked_sub(1).map(|b| bytes[b]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            expand(&source[from..], vec![prefix.clone()], &mut out);
        }
    }
    out
}

/// Read `a::b::{c, d::e}` at the start of `rest` into full paths.
fn expand(rest: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) {
    let ident: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let mut path = base;
    path.extend(
        ident
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from),
    );
    let after = &rest[ident.len()..];
    if !ident.ends_with("::") || !after.starts_with('{') {
        out.push(path);
        return;
    }
    // A group: split at depth-1 commas.
    let mut depth = 0;
    let mut start = 1;
    for (i, c) in after.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    expand(after[start..i].trim(), path.clone(), out);
                    return;
                }
            }
            ',' if depth == 1 => {
                expand(after[start..i].trim(), path.clone(), out);
                start = i + 1;
            }
            _ => {}
        }
    }
}

fn parent(m: &str) -> String {
    m.rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_string())
}

fn nested(a: &str, b: &str) -> bool {
    let within = |x: &str, y: &str| y.is_empty() || x == y || x.starts_with(&format!("{y}::"));
    within(a, b) || within(b, a)
}

/// The module a path in module `from` names, following re-exports to the defining child.
fn resolve(modules: &BTreeMap<String, Module>, from: &str, path: &[String]) -> Option<String> {
    let mut segs: Vec<String> = vec![];
    let mut rest = path;
    let mut base = from.to_string();
    while let Some(first) = rest.first() {
        match first.as_str() {
            "crate" => base = String::new(),
            "super" => base = parent(&base),
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    segs.extend(base.split("::").filter(|s| !s.is_empty()).map(String::from));
    let mut at = segs.join("::");
    for seg in rest {
        let m = modules.get(&at)?;
        let child = if m.children.contains(seg) {
            Some(seg.clone())
        } else if let Some(c) = m.reexports.get(seg) {
            Some(c.clone())
        } else if let [glob] = m.globs.as_slice() {
            Some(glob.clone())
        } else {
            None
        };
        match child {
            Some(c) => {
                at = if at.is_empty() {
                    c
                } else {
                    format!("{at}::{c}")
                };
                if !m.children.contains(seg) {
                    // A re-exported item: resolve it in the child that defines it.
                    continue;
                }
            }
            None => break,
        }
    }
    Some(at)
}

/// Edges between modules that are not nested in one another.
fn edges(modules: &BTreeMap<String, Module>) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, m) in modules {
        let mut prefixes = vec!["crate".to_string(), "super".to_string(), "self".to_string()];
        prefixes.extend(m.children.iter().cloned());
        for path in paths_in(&m.source, &prefixes) {
            let path = match path.first().map(String::as_str) {
                Some("crate" | "super" | "self") => path,
                // A child named bare (`use child::Item`): relative to this module.
                _ => std::iter::once("self".to_string()).chain(path).collect(),
            };
            if let Some(to) = resolve(modules, name, &path)
                && !nested(name, &to)
            {
                g.entry(name.clone()).or_default().insert(to);
            }
        }
    }
    g
}

/// Strongly connected components with more than one member.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = g.keys().chain(g.values().flatten()).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in g.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<Vec<String>> = vec![];
    for n in &nodes {
        if !reachable[n].contains(*n) || out.iter().any(|c| c.contains(n)) {
            continue;
        }
        let scc: Vec<String> = nodes
            .iter()
            .filter(|m| reachable[n].contains(**m) && reachable[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        out.push(scc);
    }
    out
}

#[test]
fn no_import_cycle_between_modules() {
    let modules = load();
    assert!(modules.contains_key("pipeline") && modules.contains_key("smtp::session"));
    let files = edges(&modules);
    // The resolver must see real dependencies, or the test proves nothing.
    for (from, to) in [
        ("pipeline", "policy::decision"),
        ("smtp::session::delivery", "smtp::filter"),
        ("config::build", "config::policy"),
        ("report::logline", "smtp::filter"),
        ("smtp::codec", "smtp::params"),
    ] {
        assert!(
            files.get(from).is_some_and(|t| t.contains(to)),
            "{from} -> {to} not seen: {:?}",
            files.get(from)
        );
    }
    let found = cycles(&files);
    assert!(found.is_empty(), "import cycles between files: {found:?}");
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &files {
        let a = from.split("::").next().unwrap_or(from).to_string();
        for to in tos {
            let b = to.split("::").next().unwrap_or(to).to_string();
            if a != b && !b.is_empty() {
                top.entry(a.clone()).or_default().insert(b);
            }
        }
    }
    let found = cycles(&top);
    assert!(
        found.is_empty(),
        "import cycles between top-level modules: {found:?}"
    );
}
