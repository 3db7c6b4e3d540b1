//! Conditions decided from index entry keys give the rows the documents give.
//!
//! With an index on `(a, b, c)` (and one on `(a, b, _id)` for ordered,
//! limited scans), the planner decides comparisons of indexed paths with
//! constants, `BETWEEN` and `IS [NOT] NULL | MISSING` from each entry's key
//! bytes and reads only the documents that pass (see `dql::plan`). These
//! tests run random conjunctions over documents whose indexed fields are
//! missing, null, booleans, integers (also near 2^53), floats (also equal to
//! integers, and -0.0), strings (also with NUL), arrays and objects, with
//! constants of every kind (null and arrays too, which are left to the
//! documents), some documents deleted or updated, and compare the result with
//! the same query on the same store before the indexes existed (every
//! document read and the whole filter evaluated on it).

use proptest::prelude::*;
use rhizome_engine::dql;
use rhizome_engine::hlc::PeerId;
use rhizome_engine::mem::MemKv;
use rhizome_engine::store::{Store, StoreConfig};
use rhizome_engine::value::Value;
use std::collections::BTreeMap;

fn run(store: &Store<MemKv>, text: &str, params: &BTreeMap<String, Value>, now: &mut u64) -> Vec<Value> {
    *now += 1_000;
    let stmt = dql::Prepared::new().get(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let params = dql::params_from_json(&Value::Object(params.clone())).expect("params");
    dql::execute(store, &stmt, &params, *now)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .0
        .values()
        .expect("rows decode")
}

/// Values an indexed field or a constant takes (`None`: missing).
fn value() -> impl Strategy<Value = Option<Value>> {
    let big = 9_007_199_254_740_992_i64; // 2^53
    prop_oneof![
        2 => Just(None),
        2 => Just(Some(Value::Null)),
        1 => any::<bool>().prop_map(|b| Some(Value::Bool(b))),
        4 => (-3i64..4).prop_map(|i| Some(Value::Int(i))),
        1 => prop::sample::select(vec![big - 1, big, big + 1, i64::MIN, i64::MAX]).prop_map(|i| Some(Value::Int(i))),
        2 => prop::sample::select(vec![-0.0, 0.0, 0.5, 1.0, 2.0, -1.5, 9_007_199_254_740_992.0])
            .prop_map(|f| Some(Value::Float(f))),
        3 => prop::sample::select(vec!["", "a", "a\u{0}", "a\u{0}b", "ab", "b", "\u{ff}"])
            .prop_map(|s| Some(Value::from(s))),
        1 => prop::sample::select(vec!["[]", "[1]", "[1,2]", "[\"a\"]", "[null]"])
            .prop_map(|t| Some(Value::parse(t).expect("json"))),
        1 => prop::sample::select(vec!["{}", "{\"k\":1}", "{\"k\":\"a\"}"])
            .prop_map(|t| Some(Value::parse(t).expect("json"))),
    ]
}

/// One `AND`ed condition, rendered with parameters `:p0`, `:p1`, ...
#[derive(Clone, Debug)]
enum Cond {
    Cmp(&'static str, &'static str, bool, Option<Value>),
    Between(&'static str, Option<Value>, Option<Value>),
    Is(&'static str, bool, bool),
    /// Not decidable from the key: on an unindexed field, or computed.
    Other(u8, &'static str, Option<Value>),
}

const PATHS: [&str; 3] = ["a", "b", "c"];
const OPS: [&str; 6] = ["=", "<>", "<", "<=", ">", ">="];

fn cond() -> impl Strategy<Value = Cond> {
    let path = prop::sample::select(PATHS.to_vec());
    prop_oneof![
        6 => (path.clone(), prop::sample::select(OPS.to_vec()), any::<bool>(), value())
            .prop_map(|(p, op, flipped, v)| Cond::Cmp(p, op, flipped, v)),
        2 => (path.clone(), value(), value()).prop_map(|(p, lo, hi)| Cond::Between(p, lo, hi)),
        2 => (path.clone(), any::<bool>(), any::<bool>()).prop_map(|(p, null, neg)| Cond::Is(p, null, neg)),
        1 => (0u8..3, path, value()).prop_map(|(kind, p, v)| Cond::Other(kind, p, v)),
    ]
}

impl Cond {
    fn render(&self, params: &mut BTreeMap<String, Value>) -> String {
        let mut param = |v: &Option<Value>| match v {
            // A missing constant: a field no document has.
            None => "nowhere".to_string(),
            Some(v) => {
                let name = format!("p{}", params.len());
                params.insert(name.clone(), v.clone());
                format!(":{name}")
            }
        };
        match self {
            Cond::Cmp(p, op, false, v) => format!("{p} {op} {}", param(v)),
            Cond::Cmp(p, op, true, v) => format!("{} {op} {p}", param(v)),
            Cond::Between(p, lo, hi) => format!("{p} BETWEEN {} AND {}", param(lo), param(hi)),
            Cond::Is(p, null, neg) => format!(
                "{p} IS {}{}",
                if *neg { "NOT " } else { "" },
                if *null { "NULL" } else { "MISSING" }
            ),
            Cond::Other(0, _, v) => format!("d = {}", param(v)),
            Cond::Other(1, p, v) => format!("{p} + 0 >= {}", param(v)),
            Cond::Other(_, p, v) => format!("({p} = {} OR d IS NULL)", param(v)),
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    docs: Vec<[Option<Value>; 4]>,
    /// Documents deleted, then documents given new values, after loading.
    deleted: Vec<usize>,
    updated: Vec<(usize, usize, Option<Value>)>,
    conds: Vec<Cond>,
    /// For the ordered run: `a = this`, `ORDER BY b, _id` this way, `LIMIT`.
    ordered: (Option<Value>, bool, usize),
}

fn case() -> impl Strategy<Value = Case> {
    let doc = [value(), value(), value(), value()];
    (
        prop::collection::vec(doc, 0..24),
        prop::collection::vec(0usize..24, 0..4),
        prop::collection::vec((0usize..24, 0usize..3, value()), 0..4),
        prop::collection::vec(cond(), 1..4),
        (value(), any::<bool>(), 1usize..6),
    )
        .prop_map(|(docs, deleted, updated, conds, ordered)| Case {
            docs,
            deleted,
            updated,
            conds,
            ordered,
        })
}

fn load(case: &Case, now: &mut u64) -> Store<MemKv> {
    let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).expect("store");
    let none = BTreeMap::new();
    for (i, fields) in case.docs.iter().enumerate() {
        let mut doc = BTreeMap::new();
        doc.insert("_id".to_string(), Value::Int(i as i64));
        for (name, v) in ["a", "b", "c", "d"].iter().zip(fields) {
            if let Some(v) = v {
                doc.insert(name.to_string(), v.clone());
            }
        }
        let mut p = BTreeMap::new();
        p.insert("doc".to_string(), Value::Object(doc));
        run(&store, "INSERT INTO t DOCUMENTS (:doc)", &p, now);
    }
    for i in &case.deleted {
        run(&store, &format!("DELETE FROM t WHERE _id = {i}"), &none, now);
    }
    for (i, field, v) in &case.updated {
        let name = PATHS[*field];
        match v {
            None => run(&store, &format!("UPDATE t UNSET {name} WHERE _id = {i}"), &none, now),
            Some(v) => {
                let mut p = BTreeMap::new();
                p.insert("v".to_string(), v.clone());
                run(&store, &format!("UPDATE t SET {name} = :v WHERE _id = {i}"), &p, now)
            }
        };
    }
    store
}

fn ids(rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .map(|r| r.as_object().and_then(|o| o.get("_id")).cloned().unwrap_or(Value::Null))
        .collect()
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let mut now = 1_000_000;
    let store = load(case, &mut now);
    let mut params = BTreeMap::new();
    let filter: Vec<String> = case.conds.iter().map(|c| c.render(&mut params)).collect();
    let filter = filter.join(" AND ");
    let unordered = format!("SELECT _id FROM t WHERE {filter} ORDER BY _id");

    let (first, desc, limit) = &case.ordered;
    let mut ordered_params = params.clone();
    let first = match first {
        Some(v) => {
            ordered_params.insert("first".to_string(), v.clone());
            ":first"
        }
        None => "nowhere",
    };
    let dir = if *desc { "DESC" } else { "ASC" };
    let ordered = format!("SELECT _id FROM t WHERE a = {first} AND {filter} ORDER BY b {dir}, _id {dir} LIMIT {limit}");

    let plain = run(&store, &unordered, &params, &mut now);
    let plain_ordered = run(&store, &ordered, &ordered_params, &mut now);
    let none = BTreeMap::new();
    run(&store, "CREATE INDEX abc ON t (a, b, c)", &none, &mut now);
    let indexed = run(&store, &unordered, &params, &mut now);
    prop_assert_eq!(ids(&plain), ids(&indexed), "{}", unordered);

    run(&store, "DROP INDEX abc", &none, &mut now);
    run(&store, "CREATE INDEX ab_id ON t (a, b, _id)", &none, &mut now);
    let indexed_ordered = run(&store, &ordered, &ordered_params, &mut now);
    prop_assert_eq!(ids(&plain_ordered), ids(&indexed_ordered), "{}", ordered);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Key-decided conditions select the rows the whole filter does.
    #[test]
    fn key_filter_matches_full_evaluation(case in case()) {
        check(&case)?;
    }
}

fn explain(store: &Store<MemKv>, text: &str, now: &mut u64) -> Value {
    let plan = run(store, &format!("EXPLAIN {text}"), &BTreeMap::new(), now);
    plan[0].as_object().expect("object")["plan"].clone()
}

/// `EXPLAIN` names the paths checked on the key, and leaves out conditions
/// the key cannot decide (null and array constants, computed ones).
#[test]
fn explain_lists_key_filtered_paths() {
    let mut now = 1_000_000;
    let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).expect("store");
    let none = BTreeMap::new();
    run(&store, "CREATE INDEX abc ON t (a, b, c)", &none, &mut now);
    let plan = explain(
        &store,
        "SELECT * FROM t WHERE a = 'x' AND c >= 3 AND b IS NOT NULL AND c + 0 > 1 AND b = [1] AND c <> null ORDER BY b DESC LIMIT 5",
        &mut now,
    );
    let key_filter = plan.as_object().expect("plan")["key_filter"].clone();
    assert_eq!(key_filter, Value::parse(r#"["c","b"]"#).expect("json"), "{plan:?}");
}

/// A `PROFILE` of an index scan with key tests counts the entries the
/// key filter saw and passed (a missing `p` fails `<>`); only passed ones
/// reach `visible`.
#[test]
fn profile_counts_key_filtered_entries() {
    let mut now = 1_000_000;
    let store = Store::open(MemKv::new(), StoreConfig::default(), PeerId(1), 1).expect("store");
    let none = BTreeMap::new();
    run(
        &store,
        "INSERT INTO t DOCUMENTS ({'_id':1,'s':'o','p':1}), ({'_id':2,'s':'o','p':5}), ({'_id':3,'s':'o'}), ({'_id':4,'s':'x','p':9})",
        &none,
        &mut now,
    );
    run(&store, "CREATE INDEX sp ON t (s, p)", &none, &mut now);
    let out = run(
        &store,
        "PROFILE SELECT _id FROM t WHERE s = 'o' AND p <> 1",
        &none,
        &mut now,
    );
    let ops = out[0].as_object().expect("object")["operators"].clone();
    let want = r#"[{"operator":"index scan","rows_in":0,"rows_out":1},{"operator":"key filter","rows_in":3,"rows_out":1},{"operator":"visible","rows_in":1,"rows_out":1},{"operator":"project","rows_in":1,"rows_out":1},{"operator":"limit","rows_in":1,"rows_out":1}]"#;
    assert_eq!(ops, Value::parse(want).expect("json"));
}
