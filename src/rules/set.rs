//! The compiled rule set: definitions merged (later files win), patterns grouped into one
//! `RegexSet` per kind and per header, meta rules in dependency order.

use super::eval::{Brand, Eval};
use super::meta::{Expr, Ref};
use super::parse::{HeaderPart, HeaderTest, Line, Origin, Pattern, RuleError, Test, parse_file};
use super::view::View;
use crate::checks::Hits;
use regex::bytes::{RegexSet, RegexSetBuilder};
use std::collections::{BTreeMap, HashMap};

/// Bound on the compiled size of one set (the shipped one needs a fraction of it). The
/// lazy DFA's cache keeps the crate's default (a few MB per set and thread): a bigger one
/// is memory each worker thread keeps.
const SET_SIZE_LIMIT: usize = 64 << 20;
/// The lazy DFA's cache per set and concurrent scan: enough for mail text, small enough
/// that eight big messages scanned at once stay within the memory budget.
const DFA_CACHE: usize = 512 << 10;

/// One rule after merging.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name.
    pub name: &'static str,
    /// Its score (1 when no `score` line; 0 for `__` parts).
    pub score: f64,
    /// Its description.
    pub describe: String,
    /// Its tflags.
    pub tflags: Vec<String>,
    /// Where its test was defined.
    pub at: Origin,
    /// Its test, as written.
    pub test: Test,
}

impl Rule {
    /// Reported and scored (not a `__` part, score not 0).
    pub fn reported(&self) -> bool {
        !self.name.starts_with("__") && self.score != 0.0
    }
}

/// Patterns of one kind, matched together.
#[derive(Debug)]
struct PatternSet {
    set: RegexSet,
    ids: Vec<usize>,
}

impl PatternSet {
    fn mark(&self, hay: &[u8], fired: &mut [bool]) {
        for i in self.set.matches(hay).iter() {
            fired[self.ids[i]] = true;
        }
    }
}

/// The header rules reading one header part.
#[derive(Debug)]
struct HeaderGroup {
    name: String,
    part: HeaderPart,
    set: PatternSet,
    negated: Vec<bool>,
}

/// A header rule while the sets are built: its index, pattern and whether it is `!~`.
type HeaderItem<'a> = (usize, &'a Pattern, bool);

/// Which rules fired on a message.
#[derive(Debug, Clone, Default)]
pub struct Fired(pub Vec<bool>);

/// A compiled rule set.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    headers: Vec<HeaderGroup>,
    exists: Vec<(usize, String)>,
    body: Option<PatternSet>,
    rawbody: Option<PatternSet>,
    uri: Option<PatternSet>,
    full: Option<PatternSet>,
    evals: Vec<(usize, Eval)>,
    metas: Vec<(usize, Expr)>,
    brands: Vec<Brand>,
    builtin_scores: BTreeMap<&'static str, f64>,
}

/// A definition while files are merged.
#[derive(Default)]
struct Def {
    test: Option<(Origin, Test)>,
    score: Option<(Origin, f64)>,
    describe: String,
    tflags: Vec<String>,
}

impl RuleSet {
    /// Merge and compile `files` (name, text), in the order they apply.
    pub fn compile(
        files: &[(String, String)],
        builtin: &[&'static str],
    ) -> Result<RuleSet, Vec<RuleError>> {
        let mut errors = vec![];
        let mut defs: BTreeMap<String, Def> = BTreeMap::new();
        let mut order: Vec<String> = vec![];
        let mut brands: Vec<Brand> = vec![];
        let mut builtin_scores = BTreeMap::new();
        for (file, text) in files {
            let (lines, errs) = parse_file(file, text);
            errors.extend(errs);
            for (at, line) in lines {
                let name = match &line {
                    Line::Brand(b, domains) => {
                        brands.retain(|x| x.name != *b);
                        brands.push(Brand {
                            name: b.clone(),
                            domains: domains.clone(),
                        });
                        continue;
                    }
                    Line::Rule(n, _) | Line::Score(n, _) | Line::Describe(n, _) => n.clone(),
                    Line::Tflags(n, _) => n.clone(),
                };
                if let Some(b) = builtin.iter().find(|b| **b == name) {
                    match line {
                        Line::Score(_, s) => {
                            builtin_scores.insert(*b, s);
                        }
                        _ => errors.push(RuleError {
                            at,
                            message: format!(
                                "`{name}` is a built-in check's hit: only `score` may name it"
                            ),
                        }),
                    }
                    continue;
                }
                let def = defs.entry(name.clone()).or_insert_with(|| {
                    order.push(name.clone());
                    Def::default()
                });
                match line {
                    Line::Rule(_, t) => def.test = Some((at, t)),
                    Line::Score(_, s) => def.score = Some((at, s)),
                    Line::Describe(_, d) => def.describe = d,
                    Line::Tflags(_, f) => def.tflags = f,
                    Line::Brand(..) => {}
                }
            }
        }
        let mut rules = vec![];
        for name in &order {
            let def = &defs[name];
            match merged(name, def) {
                Ok(Some(r)) => rules.push(r),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        let mut set = RuleSet {
            rules,
            brands,
            builtin_scores,
            ..RuleSet::default()
        };
        set.build(builtin, &mut errors);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Group the tests into sets, compile evals and metas.
    fn build(&mut self, builtin: &[&'static str], errors: &mut Vec<RuleError>) {
        let mut kinds: [Vec<(usize, &Pattern)>; 4] = Default::default();
        let mut headers: BTreeMap<(String, HeaderPart), Vec<HeaderItem<'_>>> = BTreeMap::new();
        let index: HashMap<&str, usize> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name, i))
            .collect();
        let mut metas = vec![];
        for (i, r) in self.rules.iter().enumerate() {
            let enabled = r.name.starts_with("__") || r.score != 0.0;
            let err = |message: String| RuleError {
                at: r.at.clone(),
                message: format!("{}: {message}", r.name),
            };
            match &r.test {
                _ if !enabled => {}
                Test::Header(HeaderTest::Exists(h)) => self.exists.push((i, h.clone())),
                Test::Header(HeaderTest::Match {
                    name,
                    part,
                    negated,
                    pattern,
                }) => headers
                    .entry((name.clone(), *part))
                    .or_default()
                    .push((i, pattern, *negated)),
                Test::Body(p) => kinds[0].push((i, p)),
                Test::RawBody(p) => kinds[1].push((i, p)),
                Test::Uri(p) => kinds[2].push((i, p)),
                Test::Full(p) => kinds[3].push((i, p)),
                Test::Eval(f, args) => match Eval::compile(f, args) {
                    Ok(e) => self.evals.push((i, e)),
                    Err(e) => errors.push(err(e)),
                },
                Test::Meta(text) => {
                    let mut resolve = |n: &str| {
                        if let Some(&j) = index.get(n) {
                            return Ok(Ref::Rule(j));
                        }
                        match builtin.iter().find(|b| **b == n) {
                            Some(b) => Ok(Ref::Hit(b)),
                            None => Err(format!("no rule or hit called `{n}`")),
                        }
                    };
                    match Expr::parse(text, &mut resolve) {
                        Ok(e) => metas.push((i, e)),
                        Err(e) => errors.push(err(e)),
                    }
                }
            }
        }
        let rules = &self.rules;
        let mut compile = |items: Vec<(usize, &Pattern)>| -> Option<PatternSet> {
            let (set, bad) = pattern_set(&items);
            for (i, e) in bad {
                errors.push(RuleError {
                    at: rules[i].at.clone(),
                    message: format!("{}: {e}", rules[i].name),
                });
            }
            set
        };
        let [body, rawbody, uri, full] = kinds;
        self.body = compile(body);
        self.rawbody = compile(rawbody);
        self.uri = compile(uri);
        self.full = compile(full);
        for ((name, part), items) in headers {
            let negated = items.iter().map(|x| x.2).collect();
            let pats = items.iter().map(|x| (x.0, x.1)).collect();
            if let Some(set) = compile(pats) {
                self.headers.push(HeaderGroup {
                    name,
                    part,
                    set,
                    negated,
                });
            }
        }
        self.metas = order_metas(metas, &self.rules, errors);
    }

    /// Run every rule on `view`; fired rules that are reported go into `out`.
    pub fn run(&self, view: &View<'_>, out: &mut Hits) -> Fired {
        let mut fired = vec![false; self.rules.len()];
        for g in &self.headers {
            let mut matched = vec![false; self.rules.len()];
            let values = view.header_values(&g.name, g.part);
            if values.is_empty() {
                g.set.mark(b"", &mut matched);
            }
            for v in &values {
                g.set.mark(v.as_bytes(), &mut matched);
            }
            for (k, &id) in g.set.ids.iter().enumerate() {
                fired[id] = matched[id] != g.negated[k];
            }
        }
        for (id, h) in &self.exists {
            fired[*id] = view.has_header(h);
        }
        if let Some(s) = &self.body {
            s.mark(view.body.as_bytes(), &mut fired);
        }
        if let Some(s) = &self.rawbody {
            s.mark(view.rawbody().as_bytes(), &mut fired);
        }
        if let Some(s) = &self.uri {
            for u in &view.uris {
                s.mark(u.as_bytes(), &mut fired);
            }
        }
        if let Some(s) = &self.full {
            s.mark(view.features.raw, &mut fired);
        }
        for (id, e) in &self.evals {
            fired[*id] = e.run(view, &self.brands);
        }
        let mut values: Vec<f64> = fired.iter().map(|&f| f64::from(u8::from(f))).collect();
        for (id, e) in &self.metas {
            let v = e.eval(&|r| match r {
                Ref::Rule(j) => values[j],
                Ref::Hit(h) => f64::from(u8::from(view.hits.names().contains(&h))),
            });
            values[*id] = v;
            fired[*id] = v != 0.0;
        }
        for (r, _) in self.rules.iter().zip(&fired).filter(|(_, f)| **f) {
            if r.reported() {
                out.add(r.name);
            }
        }
        Fired(fired)
    }

    /// The rules, in definition order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The brands.
    pub fn brands(&self) -> &[Brand] {
        &self.brands
    }

    /// Scores of reported rules, and the built-in hits' scores the files set.
    pub fn scores(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.rules
            .iter()
            .filter(|r| r.reported())
            .map(|r| (r.name, r.score))
            .chain(self.builtin_scores.iter().map(|(n, s)| (*n, *s)))
    }
}

/// One definition merged into a rule; `None` for a name with only a description.
fn merged(name: &str, def: &Def) -> Result<Option<Rule>, RuleError> {
    let Some((at, test)) = &def.test else {
        return match &def.score {
            Some((at, _)) => Err(RuleError {
                at: at.clone(),
                message: format!("score for `{name}`, which no file defines"),
            }),
            None => Ok(None),
        };
    };
    let part = name.starts_with("__");
    let score = if part {
        0.0
    } else {
        def.score.as_ref().map_or(1.0, |s| s.1)
    };
    if def.tflags.iter().any(|f| f == "nice") && score > 0.0 {
        return Err(RuleError {
            at: at.clone(),
            message: format!("{name}: tflags nice, but the score {score} is positive"),
        });
    }
    Ok(Some(Rule {
        name: super::intern(name),
        score,
        describe: def.describe.clone(),
        tflags: def.tflags.clone(),
        at: at.clone(),
        test: test.clone(),
    }))
}

/// Compile patterns into one set; a pattern that does not compile is reported alone.
fn pattern_set(items: &[(usize, &Pattern)]) -> (Option<PatternSet>, Vec<(usize, String)>) {
    let mut bad = vec![];
    let mut good = vec![];
    for (i, p) in items {
        match regex::bytes::RegexBuilder::new(&p.compiled_source())
            .size_limit(SET_SIZE_LIMIT)
            .build()
        {
            Ok(_) => good.push((*i, p.compiled_source())),
            Err(e) => bad.push((*i, format!("pattern /{}/: {e}", p.source))),
        }
    }
    if good.is_empty() {
        return (None, bad);
    }
    let set = RegexSetBuilder::new(good.iter().map(|g| &g.1))
        .size_limit(SET_SIZE_LIMIT)
        .dfa_size_limit(DFA_CACHE)
        .build();
    match set {
        Ok(set) => (
            Some(PatternSet {
                set,
                ids: good.iter().map(|g| g.0).collect(),
            }),
            bad,
        ),
        Err(e) => {
            bad.push((good[0].0, format!("the patterns together are too big: {e}")));
            (None, bad)
        }
    }
}

/// Metas in an order where each comes after the metas it reads; a cycle is an error.
fn order_metas(
    metas: Vec<(usize, Expr)>,
    rules: &[Rule],
    errors: &mut Vec<RuleError>,
) -> Vec<(usize, Expr)> {
    let mut by_id: BTreeMap<usize, Expr> = metas.into_iter().collect();
    let mut done: Vec<(usize, Expr)> = vec![];
    let mut state: HashMap<usize, u8> = HashMap::new();
    let ids: Vec<usize> = by_id.keys().copied().collect();
    for id in ids {
        visit(id, &mut by_id, &mut state, &mut done, rules, errors);
    }
    done
}

fn visit(
    id: usize,
    by_id: &mut BTreeMap<usize, Expr>,
    state: &mut HashMap<usize, u8>,
    done: &mut Vec<(usize, Expr)>,
    rules: &[Rule],
    errors: &mut Vec<RuleError>,
) {
    match state.get(&id) {
        Some(2) => return,
        Some(_) => {
            errors.push(RuleError {
                at: rules[id].at.clone(),
                message: format!(
                    "{}: meta rules refer to each other in a cycle",
                    rules[id].name
                ),
            });
            return;
        }
        None => {}
    }
    let Some(expr) = by_id.get(&id).cloned() else {
        return;
    };
    state.insert(id, 1);
    let mut deps = vec![];
    expr.rules(&mut deps);
    for d in deps {
        if by_id.contains_key(&d) {
            visit(d, by_id, state, done, rules, errors);
        }
    }
    state.insert(id, 2);
    by_id.remove(&id);
    done.push((id, expr));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Features;

    fn set(text: &str) -> Result<RuleSet, Vec<RuleError>> {
        RuleSet::compile(&[("t.cf".into(), text.into())], &["GTUBE"])
    }

    fn fire(set: &RuleSet, msg: &str) -> Vec<&'static str> {
        let f = Features::extract(msg.as_bytes(), 0);
        let hits = Hits::default();
        let view = View::new(&f, &hits, None);
        let mut out = Hits::default();
        set.run(&view, &mut out);
        out.names().to_vec()
    }

    const MSG: &str = "From: \"Pay Pal\" <x@evil.top>\r\nSubject: Hello\r\nList-Id: <a.b.example>\r\n\r\nSend bit coin now http://203.0.113.7/x\r\n";

    #[test]
    fn each_kind_fires() {
        let s = set("header T_HDR Subject =~ /^hello$/i\n\
             header T_NAME From:name =~ /pay\\s*pal/i\n\
             header T_NEG X-Nope !~ /./\n\
             header T_EX exists:List-Id\n\
             body T_BODY /\\bbit\\s*coin\\b/i\n\
             uri T_URI m{^http://\\d+\\.\\d+\\.\\d+\\.\\d+/}\n\
             full T_FULL /^List-Id:/m\n\
             body __A /now/\nbody __B /never/\n\
             meta T_META __A && !__B\nmeta T_META2 (__A + __B + T_BODY) >= 3\n\
             score T_META2 2\n")
        .unwrap();
        let f = fire(&s, MSG);
        for n in [
            "T_HDR", "T_NAME", "T_NEG", "T_EX", "T_BODY", "T_URI", "T_FULL", "T_META",
        ] {
            assert!(f.contains(&n), "{n} in {f:?}");
        }
        assert!(!f.contains(&"T_META2"));
        assert!(!f.iter().any(|n| n.starts_with("__")));
    }

    #[test]
    fn later_definitions_win_and_zero_disables() {
        let files = [
            (
                "a.cf".to_string(),
                "body T_X /coin/\nbody T_Y /coin/\n".to_string(),
            ),
            (
                "b.cf".to_string(),
                "body T_X /never/\nscore T_Y 0\nscore GTUBE 900\n".to_string(),
            ),
        ];
        let s = RuleSet::compile(&files, &["GTUBE"]).unwrap();
        assert!(fire(&s, MSG).is_empty());
        assert!(s.scores().any(|(n, v)| n == "GTUBE" && v == 900.0));
    }

    #[test]
    fn errors_have_file_and_line() {
        let e = set("body T_A /(/\nmeta T_B T_A && T_C\nmeta T_C T_D\nmeta T_D T_C\nscore T_Z 1\nbody GTUBE /x/\nbody T_N /n/\ntflags T_N nice\n").unwrap_err();
        let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        let all = text.join("\n");
        assert!(all.contains("t.cf:1: T_A: pattern /(/"), "{all}");
        assert!(all.contains("cycle"), "{all}");
        assert!(all.contains("t.cf:5: score for `T_Z`"), "{all}");
        assert!(all.contains("t.cf:6: `GTUBE` is a built-in"), "{all}");
        assert!(
            all.contains("tflags nice, but the score 1 is positive"),
            "{all}"
        );
    }
}
