//! DQL conformance: statements with expected results, from data files run by
//! one `check()` helper.
//!
//! Each file under `tests/dql/` runs top to bottom against one fresh store.
//! A case starts with `> statement` (indented lines continue it) and may
//! give `args {json}`, then what it expects: `= [items as JSON]`,
//! `~ [mutated ids as JSON]`, or `! text the error must contain`. Lines
//! starting with `--` are comments. A case with no expectation must succeed.

use rhizome_engine::dql::{self, exec::Output, Prepared};
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Store, StoreConfig};
use rhizome_engine::value::Value;
use std::path::Path;

#[derive(Default)]
struct Case {
    line: usize,
    text: String,
    args: Option<String>,
    items: Option<String>,
    mutated: Option<String>,
    error: Option<String>,
}

fn cases(source: &str) -> Vec<Case> {
    let mut out: Vec<Case> = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let t = line.trim_end();
        if t.trim_start().starts_with("--") || t.trim().is_empty() {
            continue;
        }
        if let Some(stmt) = t.strip_prefix("> ") {
            out.push(Case {
                line: n + 1,
                text: stmt.to_string(),
                ..Case::default()
            });
            continue;
        }
        let case = out
            .last_mut()
            .unwrap_or_else(|| panic!("line {}: expectation before any statement", n + 1));
        if let Some(a) = t.strip_prefix("args ") {
            case.args = Some(a.to_string());
        } else if let Some(e) = t.strip_prefix("= ") {
            case.items = Some(e.to_string());
        } else if let Some(e) = t.strip_prefix("~ ") {
            case.mutated = Some(e.to_string());
        } else if let Some(e) = t.strip_prefix("! ") {
            case.error = Some(e.to_string());
        } else if line.starts_with(' ') || line.starts_with('\t') {
            case.text.push('\n');
            case.text.push_str(line);
        } else {
            panic!("line {}: cannot read {t:?}", n + 1);
        }
    }
    out
}

fn json(text: &str, what: &str, line: usize) -> Value {
    Value::parse(text).unwrap_or_else(|e| panic!("line {line}: bad {what} JSON: {e}"))
}

fn run(store: &Store<MemKv>, prepared: &Prepared, c: &Case, now_ms: u64) -> Result<Output, String> {
    let stmt = prepared.get(&c.text).map_err(|e| e.to_string())?;
    let args = c
        .args
        .as_deref()
        .map(|a| json(a, "args", c.line))
        .unwrap_or(Value::Null);
    let params = dql::params_from_json(&args).map_err(|e| e.to_string())?;
    dql::execute(store, &stmt, &params, now_ms)
        .map(|(out, _)| out)
        .map_err(|e| e.to_string())
}

/// Runs one conformance file; panics with every failing case listed.
fn check(path: &Path) {
    let source = std::fs::read_to_string(path).expect("read conformance file");
    let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).expect("store");
    let prepared = Prepared::new();
    let mut failures = Vec::new();
    for (i, c) in cases(&source).iter().enumerate() {
        let got = run(&store, &prepared, c, 1_000_000 + i as u64 * 1_000);
        let fail = |msg: String| {
            format!(
                "{}:{}: {}\n    {msg}",
                path.display(),
                c.line,
                c.text.replace('\n', " ")
            )
        };
        match (&got, &c.error) {
            (Err(e), Some(want)) if e.contains(want.as_str()) => continue,
            (Err(e), Some(want)) => failures.push(fail(format!("error {e:?} does not contain {want:?}"))),
            (Ok(out), Some(want)) => failures.push(fail(format!("expected error {want:?}, got {out:?}"))),
            (Err(e), None) => failures.push(fail(format!("unexpected error: {e}"))),
            (Ok(out), None) => {
                if let Some(want) = &c.items {
                    let want = json(want, "expected items", c.line);
                    let got = Value::Array(out.values().expect("rows decode"));
                    if got != want {
                        failures.push(fail(format!("items\n      got  {got}\n      want {want}")));
                    }
                }
                if let Some(want) = &c.mutated {
                    let want = json(want, "expected mutated", c.line);
                    let got = Value::Array(out.mutated.clone());
                    if got != want {
                        failures.push(fail(format!("mutated\n      got  {got}\n      want {want}")));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn conformance_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/dql")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "dql")) {
        check(f);
    }
}
